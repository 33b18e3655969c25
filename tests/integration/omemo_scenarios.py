# tests/integration/omemo_scenarios.py: the OMEMO scenarios (legacy OMEMO, XEP-0384 v0.3) that any server under
# test must carry: tests/clients/omemo_client against the server described by a server_info dict.
"""
server_info, what run_omemo_scenarios needs to know of the server under test:
    name         "Prosody", "civitas" ...: appears in the test descriptions
    domain       the XMPP domain the accounts live on
    port         its c2s port on 127.0.0.1 (STARTTLS; the client trusts any certificate)
    password     the password of every account
    adduser      callable(user): creates user@domain with that password
    raw_login    callable(user, resource): a logged-in harness RawClient (for looking at the wire)
    refuses_broken_bundle  True when the server itself checks a published bundle's signature and refuses
                 a broken one (XEP-0384 lets clients do it; civitas may do both); False: clients refuse it
"""
import base64
import itertools
import os
import shutil
import subprocess
import tempfile

from harness import q, el_str, omemo_client, StropheProc, PeerClient, NS_CLIENT, DEFAULT_TIMEOUT

NS_OMEMO = "eu.siacs.conversations.axolotl"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_PUBSUB_OWNER = "http://jabber.org/protocol/pubsub#owner"
NS_HINTS = "urn:xmpp:hints"
NODE_DEVICES = NS_OMEMO + ".devicelist"
NODE_BUNDLES = NS_OMEMO + ".bundles:"
RUN_TIMEOUT = 60
PROSODY_PASSWORD = "pw-for-omemo"
# what OMEMO needs of Prosody: PEP for device lists and bundles, offline storage, carbons (add "dialback" for s2s)
PROSODY_MODULES = ("roster", "saslauth", "tls", "disco", "ping", "posix", "pep", "carbons", "offline")


def prosody_info(pros, domain, name=None):
    """server_info for a harness.Prosody started with PROSODY_MODULES; accounts get PROSODY_PASSWORD."""
    def raw_login(user, resource):
        c = PeerClient(pros.c2s_port, server_hostname=domain)
        c.login(user, PROSODY_PASSWORD, resource=resource, mech="PLAIN", domain=domain)
        c.presence()
        return c
    return {"name": name or "Prosody", "domain": domain, "port": pros.c2s_port, "password": PROSODY_PASSWORD,
            "adduser": lambda user: pros.register(user, domain, PROSODY_PASSWORD), "raw_login": raw_login,
            "refuses_broken_bundle": False}


class OmemoDevice:
    """One OMEMO device: an account, a resource and a state directory (the Signal store) of omemo_client."""

    def __init__(self, info, tmp, user, resource, state=None):
        self.info = info
        self.user = user
        self.jid = "%s@%s" % (user, info["domain"])
        self.full = "%s/%s" % (self.jid, resource)
        self.state = os.path.join(tmp, state or "%s-%s" % (user, resource))
        self.device_id = None

    def args(self, *cmd, timeout=20):
        return ["--jid", self.full, "--password", self.info["password"], "--host", "127.0.0.1",
                "--port", str(self.info["port"]), "--tls-trust", "--state", self.state,
                "--timeout", str(timeout)] + list(cmd)

    def run(self, *cmd):
        """Runs one command to its end: (exit code, stdout lines, stderr)."""
        r = subprocess.run([omemo_client()] + self.args(*cmd), capture_output=True, text=True,
                           timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)
        return r.returncode, r.stdout.splitlines(), r.stderr

    def publish(self, *extra):
        rc, lines, err = self.run("publish", *extra)
        for line in lines:
            if line.startswith("device "):
                self.device_id = int(line.split()[1])
        return rc, lines, err

    def send(self, to, body):
        return self.run("send", "--to", to, "--body", body)

    def receive(self, count, timeout=30):
        """Starts 'receive' in the background and waits until it is online ('ready'); the StropheProc."""
        p = StropheProc(self.args("receive", "--count", str(count), timeout=timeout), program=omemo_client())
        p.ready = p.wait_line("ready ", timeout=timeout)
        return p


def received(proc, timeout=60):
    """(exit code, ["FROM\\tBODY", ...], stderr) of a finished receive."""
    rc, lines, err = proc.finish(timeout)
    return rc, [line for line in lines if "\t" in line], err


def b64(el):
    return base64.b64decode("".join((el.text or "").split())) if el is not None else b""


def pubsub_items(client, jid, node, timeout=DEFAULT_TIMEOUT):
    """The payload element of the first item of node at jid, fetched by a raw client; (reply, payload)."""
    r = client.iq("get", "<pubsub xmlns='%s'><items node='%s'/></pubsub>" % (NS_PUBSUB, node), to=jid,
                  timeout=timeout)
    item = r.find("%s/%s/%s" % (q(NS_PUBSUB, "pubsub"), q(NS_PUBSUB, "items"), q(NS_PUBSUB, "item"))) \
        if r is not None else None
    return r, (list(item)[0] if item is not None and len(item) else None)


def omemo_message(client, sender, timeout=DEFAULT_TIMEOUT):
    return client.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("from", "").startswith(sender)
                         and el.find(q(NS_OMEMO, "encrypted")) is not None, timeout)


# --------------------------------------------------------------------------------------------
# Scenarios

def two_users(t, info, tmp):
    """Two users of one server who are not each other's contacts: publish, fetch, build, encrypt, decrypt,
    both ways; the wire format as the server relays it."""
    name = info["name"]
    for u in ("alice", "bob"):
        info["adduser"](u)
    alice = OmemoDevice(info, tmp, "alice", "a1")
    bob = OmemoDevice(info, tmp, "bob", "b1")
    rc, lines, err = alice.publish()
    t.ok(rc == 0 and "published" in lines and alice.device_id,
         "%s: alice publishes her device list and bundle (PEP with publish-options access_model=open)" % name,
         lambda: "%r\n%s" % (lines, err))
    rc, lines, err = bob.publish()
    t.ok(rc == 0 and "published" in lines, "%s: bob publishes his" % name, lambda: "%r\n%s" % (lines, err))

    # what a client fetches, as another user who is not a contact (access model open)
    watcher = info["raw_login"]("bob", "watch")
    r, lst = pubsub_items(watcher, alice.jid, NODE_DEVICES)
    ids = [d.get("id") for d in lst.findall(q(NS_OMEMO, "device"))] if lst is not None else []
    t.ok(lst is not None and lst.tag == q(NS_OMEMO, "list") and ids == [str(alice.device_id)],
         "XEP-0384 v0.3 §4.2: the device list node holds <list xmlns='%s'><device id/></list> with alice's device,"
         " readable by a non-contact" % NS_OMEMO, lambda: el_str(r))
    item = r.find(".//" + q(NS_PUBSUB, "item")) if r is not None else None
    t.is_(item.get("id") if item is not None else None, "current", "the device list is item 'current'")
    r, bundle = pubsub_items(watcher, alice.jid, NODE_BUNDLES + str(alice.device_id))
    ok = bundle is not None and bundle.tag == q(NS_OMEMO, "bundle")
    spk = bundle.find(q(NS_OMEMO, "signedPreKeyPublic")) if ok else None
    ik = bundle.find(q(NS_OMEMO, "identityKey")) if ok else None
    sig = bundle.find(q(NS_OMEMO, "signedPreKeySignature")) if ok else None
    pks = bundle.findall("%s/%s" % (q(NS_OMEMO, "prekeys"), q(NS_OMEMO, "preKeyPublic"))) if ok else []
    t.ok(ok and spk is not None and spk.get("signedPreKeyId") and len(b64(spk)) == 33 and b64(spk)[0] == 5
         and len(b64(ik)) == 33 and b64(ik)[0] == 5 and len(b64(sig)) == 64 and len(pks) == 100
         and all(p.get("preKeyId") and len(b64(p)) == 33 for p in pks),
         "XEP-0384 v0.3 §4.3: the bundle has signedPreKeyPublic (with its id), signedPreKeySignature, identityKey "
         "and 100 preKeyPublic, keys serialized with the 0x05 type byte", lambda: el_str(r)[:3000])

    # alice -> bob, first contact: a PreKeySignalMessage
    p = bob.receive(1)
    t.ok(p.ready, "%s: bob's device is online" % name, lambda: p.finish(5))
    rc, lines, err = alice.send(bob.jid, "hello bob")
    t.ok(rc == 0 and ("session %s %d new" % (bob.jid, bob.device_id)) in lines and "sent 1" in lines,
         "alice fetches bob's device list and bundle and builds a session from it", lambda: "%r\n%s" % (lines, err))
    rc, msgs, err = received(p)
    t.is_((rc, msgs), (0, ["%s\thello bob" % alice.jid]), "%s: bob decrypts alice's first message" % name)
    t.ok("(PreKeySignalMessage)" in err, "the first message is a PreKeySignalMessage", err)
    m = omemo_message(watcher, alice.jid)
    enc = m.find(q(NS_OMEMO, "encrypted")) if m is not None else None
    header = enc.find(q(NS_OMEMO, "header")) if enc is not None else None
    keys = header.findall(q(NS_OMEMO, "key")) if header is not None else []
    body = m.find(q(NS_CLIENT, "body")) if m is not None else None
    t.ok(header is not None and header.get("sid") == str(alice.device_id) and len(keys) == 1
         and keys[0].get("rid") == str(bob.device_id) and keys[0].get("prekey") in ("true", "1")
         and len(b64(header.find(q(NS_OMEMO, "iv")))) == 12
         and len(b64(enc.find(q(NS_OMEMO, "payload")))) == len("hello bob"),
         "XEP-0384 v0.3 §4.5: <header sid><key rid prekey='true'/><iv> (12 bytes) and a <payload> as long as the "
         "plaintext (the GCM tag travels with the key) reach bob's other resource unchanged",
         lambda: el_str(m))
    t.ok(m is not None and m.find(q(NS_HINTS, "store")) is not None and body is not None
         and "hello bob" not in (body.text or ""),
         "the message carries <store xmlns='urn:xmpp:hints'/> and a fallback body without the plaintext",
         lambda: el_str(m))

    # bob -> alice over the session alice started
    p = alice.receive(1)
    rc, lines, err = bob.send(alice.jid, "hello alice")
    t.ok(rc == 0 and ("session %s %d existing" % (alice.jid, alice.device_id)) in lines,
         "bob answers over the session alice's prekey message created (no bundle fetched)",
         lambda: "%r\n%s" % (lines, err))
    rc, msgs, err = received(p)
    t.is_((rc, msgs), (0, ["%s\thello alice" % bob.jid]), "%s: alice decrypts bob's answer" % name)
    t.ok("(PreKeySignalMessage)" not in err, "the answer is a SignalMessage", err)

    # and again: the ratchet goes on across runs (state directories)
    p = bob.receive(1)
    rc, lines, err = alice.send(bob.jid, "once more")
    rc2, msgs, err2 = received(p)
    t.is_((rc, rc2, msgs), (0, 0, ["%s\tonce more" % alice.jid]),
          "%s: a third message in the same session is decrypted" % name)
    watcher.end()


def offline(t, info, tmp):
    """The recipient is offline: the prekey message waits in offline storage and is decrypted at login."""
    name = info["name"]
    for u in ("carol", "dave"):
        info["adduser"](u)
    carol = OmemoDevice(info, tmp, "carol", "c1")
    dave = OmemoDevice(info, tmp, "dave", "d1")
    t.ok(carol.publish()[0] == 0 and dave.publish()[0] == 0, "%s: carol and dave publish" % name)
    rc, lines, err = carol.send(dave.jid, "while you were away")
    t.ok(rc == 0 and "sent 1" in lines, "carol encrypts for dave, who is offline", lambda: "%r\n%s" % (lines, err))
    p = dave.receive(1)
    rc, msgs, err = received(p)
    t.is_((rc, msgs), (0, ["%s\twhile you were away" % carol.jid]),
          "%s: dave logs in later and decrypts the message from offline storage" % name)
    t.ok("(PreKeySignalMessage)" in err and "bundle republished" in err,
         "it was a PreKeySignalMessage; dave replaced the used prekey and republished his bundle", err)


def second_device(t, info, tmp):
    """The recipient has two devices (two state directories for one account): both decrypt, also when the
    message is addressed to one resource and reaches the other as a carbon copy (XEP-0280)."""
    name = info["name"]
    for u in ("erin", "frank"):
        info["adduser"](u)
    erin = OmemoDevice(info, tmp, "erin", "e1")
    f1 = OmemoDevice(info, tmp, "frank", "f1")
    f2 = OmemoDevice(info, tmp, "frank", "f2")
    t.ok(erin.publish()[0] == 0 and f1.publish()[0] == 0 and f2.publish()[0] == 0,
         "%s: erin and both of frank's devices publish" % name)
    watcher = info["raw_login"]("erin", "watch")
    r, lst = pubsub_items(watcher, f1.jid, NODE_DEVICES)
    ids = sorted(int(d.get("id")) for d in lst.findall(q(NS_OMEMO, "device"))) if lst is not None else []
    t.is_(ids, sorted([f1.device_id, f2.device_id]), "frank's device list names both devices (the second device "
          "added itself to the list the first published)")
    watcher.end()
    p1, p2 = f1.receive(2), f2.receive(2)
    t.ok(p1.ready and p2.ready, "%s: both of frank's devices are online" % name)
    rc, lines, err = erin.send(f1.jid, "to both")
    t.ok(rc == 0 and "sent 2" in lines, "erin encrypts the key for both of frank's devices",
         lambda: "%r\n%s" % (lines, err))
    rc, lines, err = erin.send(f1.full, "to f1, carbon to f2")
    t.ok(rc == 0, "erin sends a second message to frank's resource f1 only", lambda: "%r\n%s" % (lines, err))
    want = ["%s\tto both" % erin.jid, "%s\tto f1, carbon to f2" % erin.jid]
    rc1, m1, e1 = received(p1)
    rc2, m2, e2 = received(p2)
    t.is_((rc1, m1), (0, want), "%s: frank's first device decrypts both" % name)
    t.is_((rc2, m2), (0, want), "%s: frank's second device decrypts both" % name)
    t.ok("carbon (received)" in e2, "XEP-0280: the message to f1 reached f2 as a received carbon and was "
         "decrypted with f2's own key", e2)


def broken_bundle(t, info, tmp):
    """A bundle whose signedPreKeySignature does not verify with the identity key is refused: by the server
    when it checks bundles (refuses_broken_bundle), otherwise by every client that fetches it."""
    name = info["name"]
    for u in ("gina", "hank"):
        info["adduser"](u)
    gina = OmemoDevice(info, tmp, "gina", "g1")
    hank = OmemoDevice(info, tmp, "hank", "h1")
    rc, lines, err = gina.publish("--publish-broken-bundle")
    if info.get("refuses_broken_bundle"):
        t.ok(rc != 0 and any(line.startswith("publish-error %s%d " % (NODE_BUNDLES, gina.device_id))
                             for line in lines),
             "%s refuses to publish a bundle whose signedPreKeySignature does not verify" % name,
             lambda: "%r\n%s" % (lines, err))
        return
    t.ok(rc == 0, "%s stores a broken bundle (it does not look into bundles)" % name, lambda: "%r\n%s" % (lines, err))
    t.ok(hank.publish()[0] == 0, "hank publishes")
    rc, lines, err = hank.send(gina.jid, "never")
    t.ok(rc != 0 and ("refused %s %d invalid-signature" % (gina.jid, gina.device_id)) in lines
         and not any(line.startswith("sent") for line in lines),
         "XEP-0384 v0.3 §4.4 (building a session): hank refuses gina's bundle (bad signature), builds no session and sends nothing",
         lambda: "%r\n%s" % (lines, err))


def selftest(t):
    """omemo_client selftest: the Signal and AES-GCM round trip between two local stores, no server."""
    r = subprocess.run([omemo_client(), "selftest"], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    lines = r.stdout.splitlines()
    for line in lines:
        if line.startswith("ok ") or line.startswith("not ok "):
            t.ok(line.startswith("ok "), "omemo_client selftest: " + line.split(" - ", 1)[-1])
    t.ok(r.returncode == 0 and any(line.startswith("1..") for line in lines),
         "omemo_client selftest completes", r.stdout + r.stderr)


def run_omemo_scenarios(t, info):
    """Every OMEMO scenario against the server described by info (see the top of this file)."""
    tmp = tempfile.mkdtemp(prefix="civitas-omemo-")
    try:
        for fn in (two_users, offline, second_device, broken_bundle):
            t.run(fn, t, info, tmp)
    finally:
        if t.failed:
            t.diag("omemo_client state kept in %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


_federated_runs = itertools.count(1)


def federated(t, home, away, tmp):
    """Users of two federated servers: device list and bundle come from the other server's PEP over s2s."""
    n = next(_federated_runs)     # a server may take part in several pairs: new accounts each time
    home["adduser"]("ivan%d" % n)
    away["adduser"]("judy%d" % n)
    ivan = OmemoDevice(home, tmp, "ivan%d" % n, "i1")
    judy = OmemoDevice(away, tmp, "judy%d" % n, "j1")
    t.ok(ivan.publish()[0] == 0 and judy.publish()[0] == 0,
         "ivan (%s) and judy (%s) publish on their own servers" % (home["domain"], away["domain"]))
    p = judy.receive(1, timeout=40)
    rc, lines, err = ivan.send(judy.jid, "across servers")
    t.ok(rc == 0 and ("session %s %d new" % (judy.jid, judy.device_id)) in lines,
         "%s -> %s: ivan fetches judy's device list and bundle from her server over s2s" % (home["name"], away["name"]),
         lambda: "%r\n%s" % (lines, err))
    rc, msgs, err = received(p)
    t.is_((rc, msgs), (0, ["%s\tacross servers" % ivan.jid]), "judy decrypts ivan's prekey message")
    p = ivan.receive(1, timeout=40)
    rc, lines, err = judy.send(ivan.jid, "and back")
    rc2, msgs, err2 = received(p)
    t.is_((rc, rc2, msgs), (0, 0, ["%s\tand back" % judy.jid]),
          "%s -> %s: ivan decrypts judy's answer" % (away["name"], home["name"]))


def run_omemo_federated(t, home, away):
    """The federated scenario between the servers described by home and away (server_info dicts)."""
    tmp = tempfile.mkdtemp(prefix="civitas-omemo-s2s-")
    try:
        t.run(federated, t, home, away, tmp)
    finally:
        if t.failed:
            t.diag("omemo_client state kept in %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
