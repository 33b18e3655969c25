#!/usr/bin/python3
# tests/integration/test_omemo.py: issue 11, "OMEMO works": the legacy OMEMO scenarios of omemo_scenarios.py
# against civitas. They need PEP; until civitas has it (every PEP publish answers <service-unavailable/>) the
# file says so as a skip, and turns itself on as soon as a publish succeeds.
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, Server, connect_login, free_port, DnsResponder, Prosody, prosody_missing  # noqa: E402
from omemo_scenarios import (OmemoDevice, run_omemo_scenarios, run_omemo_federated, prosody_info,  # noqa: E402
                             PROSODY_MODULES)

PW = "pw-for-omemo"
DOMAIN = "localhost"


def civitas_server_info(srv, refuses_broken_bundle=True, domain=DOMAIN, name="civitas"):
    """server_info (see omemo_scenarios.py) for a running civitas Server. omemo is a standard module:
    civitas checks the signature of a published bundle (refuses_broken_bundle; False for a server
    with omemo.check_bundles: false, where the clients refuse it, as on Prosody)."""
    def raw_login(user, resource):
        c = connect_login(srv, user, PW, resource=resource, domain=domain)
        c.presence()
        return c
    return {"name": name, "domain": domain, "port": srv.port("client"), "password": PW,
            "adduser": lambda user: srv.adduser("%s@%s" % (user, domain), PW), "raw_login": raw_login,
            "refuses_broken_bundle": refuses_broken_bundle}


def federated_scenarios(t):
    """OMEMO across two federated civitas servers, and between civitas and Prosody both ways (dialback,
    names from our DNS responder, as in test_s2s_prosody.py)."""
    dns = DnsResponder()
    os.environ["CIVITAS_DNS_SERVER"] = "127.0.0.1@%d" % dns.port
    pros = None
    try:
        civ = {}
        for d in ("civ-a.example", "civ-b.example"):
            port = free_port()
            dns.add_srv("_xmpp-server._tcp." + d, d, port)
            dns.add_a(d)
            civ[d] = Server(t, hosts=[d], extra_yaml="federation:\n  mode: open\n  dialback: true\n",
                            listen={"client": ["127.0.0.1:0"], "server": ["127.0.0.1:%d" % port]})
        a = civitas_server_info(civ["civ-a.example"], domain="civ-a.example", name="civitas civ-a.example")
        b = civitas_server_info(civ["civ-b.example"], domain="civ-b.example", name="civitas civ-b.example")
        run_omemo_federated(t, a, b)
        missing = prosody_missing(need_unbound=True)
        if missing:
            t.skip("OMEMO between civitas and Prosody", "; ".join(missing))
            return
        pros = Prosody(t, ["pros.example"], dns_port=dns.port, modules=PROSODY_MODULES + ("dialback",))
        dns.add_srv("_xmpp-server._tcp.pros.example", "pros.example", pros.s2s_port)
        dns.add_a("pros.example")
        pros.start()
        p = prosody_info(pros, "pros.example", "Prosody pros.example")
        run_omemo_federated(t, a, p)
        run_omemo_federated(t, p, b)
    finally:
        if pros is not None:
            pros.cleanup(t.failed > 0)
        dns.stop()


def civitas_has_pep(t, info, tmp):
    """Whether a PEP publish (an OMEMO device list with publish-options) succeeds; the reason when not."""
    info["adduser"]("probe")
    rc, lines, err = OmemoDevice(info, tmp, "probe", "p").publish()
    if rc == 0:
        return True, None
    errors = [line for line in lines if line.startswith("publish-error")]
    return False, "; ".join(errors) or err.strip()[-300:]


def main(t):
    srv = Server(t, hosts=[DOMAIN])
    info = civitas_server_info(srv)
    tmp = tempfile.mkdtemp(prefix="civitas-omemo-probe-")
    try:
        has_pep, why = civitas_has_pep(t, info, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not has_pep:
        t.skip("OMEMO scenarios against civitas", "civitas has no PEP yet (%s); they run once a publish succeeds" % why)
    else:
        run_omemo_scenarios(t, info)
        t.run(federated_scenarios, t)
    rc = srv.stop()
    t.ok(rc == 0, "civitasd exits 0 after SIGTERM", lambda: srv.log_tail(30))


Tap(timeout=240).main(main)
