#!/usr/bin/python3
# tests/integration/test_muc_prosody.py: a user of Debian's Prosody is an occupant of a civitas room
# (mod_muc at conference.civ.example): Prosody finds the component's domain by SRV in our DNS responder,
# dialback authenticates it both ways (Prosody's certificate is self-signed, the component's domain is not
# in civitas' certificate), then the remote occupant enters, chats both ways and leaves.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Tap, Server, Certs, PeerClient, connect_login, q, el_str,  # noqa: E402
                     NS_CLIENT)
from harness import free_port, DnsResponder, Prosody, prosody_missing  # noqa: E402
from test_muc import join, create, groupchat, gc_from, is_presence  # noqa: E402

PW = "pw-for-muc-prosody"
ROOM = "crisis@conference.civ.example"


def scenario(t, civ, pros):
    alice = connect_login(civ, "alice", PW, resource="c", domain="civ.example")
    alice.presence()
    pat = PeerClient(pros.c2s_port, server_hostname="pros.example")
    pat.login("pat", PW, resource="p", mech="PLAIN", domain="pros.example")
    pat.presence()
    p, r = create(alice, ROOM, "Alice")
    t.ok(p is not None and r is not None and r.get("type") == "result", "a civitas user creates a room",
         lambda: el_str(p) + el_str(r))
    p, others, subj = join(pat, ROOM, "Pat", timeout=40)
    t.ok(p is not None and p.get("type") is None and [o.get("from") for o in others] == [ROOM + "/Alice"]
         and subj is not None, "a Prosody user enters the civitas room (occupants, self-presence, subject)",
         lambda: el_str(p) + "\n" + pat.dump() + "\n" + civ.log_tail(20) + "\n" + pros.log_text()[-3000:])
    n = alice.expect(lambda el: is_presence(el, ROOM + "/Pat"), timeout=10)
    t.ok(n is not None and n.get("type") is None, "the civitas occupant sees the Prosody user enter", lambda: alice.dump())
    groupchat(pat, ROOM, "hello from prosody")
    t.ok(gc_from(alice, ROOM + "/Pat", "hello from prosody", timeout=20) is not None,
         "the Prosody occupant's groupchat reaches the room")
    groupchat(alice, ROOM, "hello from civitas")
    t.ok(gc_from(pat, ROOM + "/Alice", "hello from civitas", timeout=20) is not None,
         "the room's groupchat reaches the Prosody occupant")
    pat.send("<presence to='%s/Pat' type='unavailable'/>" % ROOM)
    u = alice.expect(lambda el: is_presence(el, ROOM + "/Pat", "unavailable"), timeout=20)
    t.ok(u is not None, "the Prosody occupant leaves", lambda: alice.dump())
    alice.end()
    pat.end()


def main(t):
    missing = prosody_missing()
    if missing:
        t.ok(False, "Prosody is installed with every part this test needs: %s (scripts/install-deps --tests "
             "installs them)" % "; ".join(missing))
        return
    dns = DnsResponder()
    pros = None
    try:
        port = free_port()
        pros = Prosody(t, ["pros.example"], dns.port)
        for d in ("civ.example", "conference.civ.example"):
            dns.add_srv("_xmpp-server._tcp." + d, "civ.example", port)
        dns.add_a("civ.example")
        extra = ("federation:\n  mode: open\n  dialback: true\n  partners:\n"
                 "    - domain: pros.example\n      route: \"127.0.0.1:%d\"\n" % pros.s2s_port)
        civ = Server(t, hosts=["civ.example"], certs=Certs(), extra_yaml=extra,
                     listen={"client": ["127.0.0.1:0"], "client_tls": ["127.0.0.1:0"], "server": ["127.0.0.1:%d" % port]})
        civ.adduser("alice@civ.example", PW)
        pros.register("pat", "pros.example", PW)
        pros.start()
        t.run(scenario, t, civ, pros)
        rc = civ.stop()
        t.ok(rc == 0, "civitasd exits 0 after SIGTERM", lambda: civ.log_tail(30))
    finally:
        if t.failed and pros is not None:
            t.diag("--- tail of prosody log ---", pros.log_text()[-6000:])
        if pros is not None:
            pros.cleanup(t.failed > 0)
        dns.stop()


if __name__ == "__main__":
    Tap(timeout=120).main(main)
