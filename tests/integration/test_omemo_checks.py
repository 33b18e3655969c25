#!/usr/bin/python3
# tests/integration/test_omemo_checks.py: mod_omemo (issue 11) refuses broken OMEMO items with <not-acceptable/>
# before PEP stores them: a bundle whose signed prekey signature fails (made by omemo_client with libsignal), a
# device list over omemo.max_devices; check_bundles switched off for one host. Runs with the real mod_pep when
# it is built, else with tests/modules/mod_test_pep.c (a stand-in named "pep" that fires pep/publish).
import glob
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Tap, Server, connect_login, build_dir, find_program, el_str, error_type_condition, q,  # noqa: E402
                     NS_CLIENT, NS_STANZAS)
from omemo_scenarios import OmemoDevice  # noqa: E402

PW = "pw-for-omemo-checks"
HOSTS = ("localhost", "meerbusch.example")
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_OMEMO = "eu.siacs.conversations.axolotl"
MAX_DEVICES = 3
SRC = os.environ.get("CIVITAS_SRCDIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def module_dir():
    """Every built module, with mod_pep.so the real one if built, else the stand-in; None when not built."""
    b = build_dir()
    mods = glob.glob(os.path.join(b, "modules", ".libs", "mod_*.so"))
    names = {os.path.basename(p) for p in mods}
    stand_in = os.path.join(b, "tests", "modules", ".libs", "mod_test_pep.so")
    if "mod_omemo.so" not in names or ("mod_pep.so" not in names and not os.path.exists(stand_in)):
        return None
    d = tempfile.mkdtemp(prefix="civitas-omemo-mods-")
    for p in mods:
        os.symlink(p, os.path.join(d, os.path.basename(p)))
    if "mod_pep.so" not in names:
        os.symlink(stand_in, os.path.join(d, "mod_pep.so"))
    return d


def standard_modules():
    with open(os.path.join(SRC, "modules", "standard.list")) as f:
        names = [line.split("#")[0].strip() for line in f]
    return [n for n in names if n]


def publish(c, node, payload, item_id="current"):
    return c.iq("set", "<pubsub xmlns='%s'><publish node='%s'><item id='%s'>%s</item></publish></pubsub>"
                % (NS_PUBSUB, node, item_id, payload))


def error_text(r):
    e = r.find(q(NS_CLIENT, "error")) if r is not None else None
    t = e.find(q(NS_STANZAS, "text")) if e is not None else None
    return t.text if t is not None and t.text else ""


def device_list(n):
    return "<list xmlns='%s'>%s</list>" % (NS_OMEMO, "".join("<device id='%d'/>" % (100 + i) for i in range(n)))


def bundles(t, srv):
    tmp = tempfile.mkdtemp(prefix="civitas-omemo-checks-")
    for host in HOSTS:
        srv.adduser("alice@%s" % host, PW)
    info = {"domain": "localhost", "port": srv.port("client"), "password": PW}
    rc, lines, err = OmemoDevice(info, tmp, "alice", "good").publish()
    t.ok(rc == 0 and "published" in lines, "a bundle and device list made by libsignal are accepted",
         "\n".join(lines) + err[-500:])
    dev = OmemoDevice(info, tmp, "alice", "broken")
    rc, lines, err = dev.publish("--publish-broken-bundle")
    want = "publish-error %s.bundles:%s not-acceptable" % (NS_OMEMO, dev.device_id)
    t.ok(rc == 1 and want in lines, "XEP-0384: a bundle whose signedPreKeySignature does not verify -> "
         "<not-acceptable/>", "\n".join(lines) + err[-500:])
    t.ok(srv.wait_log(r"omemo.*refused a publish to %s\.bundles:\d+: .*does not verify" % NS_OMEMO, timeout=5),
         "the refusal is logged with its reason")

    other = {"domain": HOSTS[1], "port": srv.port("client"), "password": PW}
    rc, lines, err = OmemoDevice(other, tmp, "alice", "broken2").publish("--publish-broken-bundle")
    t.ok(rc == 0 and "published" in lines, "omemo.hosts.%s.check_bundles false: the broken bundle is stored there"
         % HOSTS[1], "\n".join(lines) + err[-500:])


def device_lists(t, srv):
    a = connect_login(srv, "alice", PW, resource="raw")
    r = publish(a, NS_OMEMO + ".devicelist", device_list(MAX_DEVICES))
    t.ok(r is not None and r.get("type") == "result", "a device list of max_devices devices is accepted", el_str(r))
    r = publish(a, NS_OMEMO + ".devicelist", device_list(MAX_DEVICES + 1))
    t.is_(error_type_condition(r), ("modify", "not-acceptable"), "a device list over max_devices -> "
          "<not-acceptable/> of type modify")
    t.ok("more devices" in error_text(r), "with a text saying why", el_str(r))
    r = publish(a, "urn:xmpp:omemo:2:devices", "<devices xmlns='urn:xmpp:omemo:2'>%s</devices>"
                % "".join("<device id='%d'/>" % (7 + i) for i in range(MAX_DEVICES + 1)))
    t.is_(error_type_condition(r), ("modify", "not-acceptable"), "OMEMO:2 device list over max_devices -> "
          "<not-acceptable/>")
    r = publish(a, NS_OMEMO + ".bundles:0", "<bundle xmlns='%s'/>" % NS_OMEMO)
    t.is_(error_type_condition(r), ("modify", "not-acceptable"), "a bundle node with device id 0 -> <not-acceptable/>")
    r = publish(a, "urn:xmpp:omemo:2:bundles", "<bundle xmlns='urn:xmpp:omemo:2'><ik>AAAA</ik></bundle>", item_id="5")
    t.is_(error_type_condition(r), ("modify", "not-acceptable"), "an incomplete OMEMO:2 bundle -> <not-acceptable/>")
    r = publish(a, "urn:xmpp:avatar:metadata", "<metadata xmlns='urn:xmpp:avatar:metadata'/>")
    t.ok(r is not None and r.get("type") == "result", "other nodes are not looked at", el_str(r))
    b = connect_login(srv, "alice", PW, resource="raw", domain=HOSTS[1])
    r = publish(b, NS_OMEMO + ".devicelist", device_list(MAX_DEVICES + 1))
    t.is_(error_type_condition(r), ("modify", "not-acceptable"), "max_devices holds where check_bundles is off")
    a.close()
    b.close()


def check_config(t, srv):
    base = srv.config_text()
    p = os.path.join(srv.dir, "no-pep.yml")
    with open(p, "w") as f:
        f.write(base.replace("  - pep\n", ""))
    r = subprocess.run([find_program("civitasd"), "--config", p, "--check"], capture_output=True, text=True,
                       timeout=30)
    msg = "module 'omemo' depends on module 'pep', which is not loaded (add 'pep' to modules:)"
    t.ok(r.returncode == 1 and msg in (r.stdout + r.stderr).splitlines(), "--check: omemo without pep -> exit 1",
         r.stdout + r.stderr)
    p = os.path.join(srv.dir, "bad.yml")
    with open(p, "w") as f:
        f.write(base.replace("max_devices: %d" % MAX_DEVICES, "max_devices: 0"))
    r = subprocess.run([find_program("civitasd"), "--config", p, "--check"], capture_output=True, text=True,
                       timeout=30)
    t.ok(r.returncode == 1 and "omemo.max_devices" in r.stdout + r.stderr, "--check: omemo.max_devices 0 -> exit 1",
         r.stdout + r.stderr)


def main(t):
    d = module_dir()
    if d is None:
        t.skip("mod_omemo checks", "mod_omemo or a pep module not built (run through make check)")
        return
    os.environ["CIVITAS_MODULE_DIR"] = d
    extra = "omemo:\n  max_devices: %d\n  hosts:\n    %s:\n      check_bundles: false\n" % (MAX_DEVICES, HOSTS[1])
    srv = Server(t, hosts=HOSTS, modules=[m for m in standard_modules() if m not in ("pep", "omemo")] + ["pep", "omemo"], extra_yaml=extra, start=False)
    t.run(check_config, t, srv)
    with srv:
        srv.start()
        t.run(bundles, t, srv)
        t.run(device_lists, t, srv)


if __name__ == "__main__":
    Tap().main(main)
