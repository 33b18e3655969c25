#!/usr/bin/python3
# tests/integration/test_message_flow.py: the message flow hooks of module.h ("Message flow": message/
# deliver/pre, message/deliver/post, message/undelivered) on every route, driven through the test module
# tests/modules/mod_test_flow.c (built by make check, found via CIVITAS_MODULE_DIR), which stamps a
# XEP-0359 <stanza-id/> in pre and records every call; and the lifecycle events (user-created,
# password-changed, host-started, host-stopping), whoever acts: civitasctl or XEP-0077 in-band.
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Tap, Server, Certs, RawClient, connect_login, q, el_str, free_port,  # noqa: E402
                     NS_CLIENT)
from test_module_runtime import standard_modules, module_dir, partner  # noqa: E402

NS_T = "urn:civitas:test-flow"
NS_SID = "urn:xmpp:sid:0"
PW = "pw-message-flow"
# mam stamps stanza-ids of its own (and strips those by our host): this test's module stands in for it
MODULES = [m for m in standard_modules() if m != "mam"] + ["test_flow"]


def events(c, domain="localhost"):
    """(name, replay, to, body, sid) of every hook call the module recorded since the last call."""
    r = c.iq("set", "<cmd xmlns='%s'><events/></cmd>" % NS_T, to=domain)
    ev = r.find(q(NS_T, "events")) if r is not None else None
    return [(e.get("name"), e.get("replay"), e.get("to"), e.get("body"), e.get("sid"))
            for e in (ev if ev is not None else [])]


def of_body(ev, body):
    return [e for e in ev if e[3] == body]


def sid_of(m):
    s = m.find(q(NS_SID, "stanza-id")) if m is not None else None
    return (s.get("by"), s.get("id")) if s is not None else None


def login(srv, user, resource="r", domain="localhost", priority=None):
    c = connect_login(srv, user, PW, resource=resource, domain=domain)
    c.presence(priority=priority)
    c.ping_server(domain=domain)
    return c


def local_routes(t, srv):
    alice = login(srv, "alice")
    bob1 = login(srv, "bob", "one")
    bob2 = login(srv, "bob", "two")
    events(alice)
    # to the bare JID: both resources have priority 0 (RFC 6121 §8.5.2.1.1: both get it), post once
    alice.message("bob@localhost", "to-bare")
    m1, m2 = bob1.expect_message("to-bare"), bob2.expect_message("to-bare")
    t.ok(sid_of(m1) is not None and sid_of(m1) == sid_of(m2) and sid_of(m1)[0] == "localhost",
         "bare JID: pre stamped one <stanza-id/> that every resource got", lambda: el_str(m1))
    ev = of_body(events(alice), "to-bare")
    t.is_([(e[0], e[1]) for e in ev], [("pre", "0"), ("post", "0")],
          "bare JID: pre, then post once for two resources, no undelivered")
    # to a full JID
    alice.message("bob@localhost/two", "to-full")
    m = bob2.expect_message("to-full")
    t.ok(sid_of(m) is not None, "full JID: the stanza carries the stamp", lambda: el_str(m))
    ev = of_body(events(alice), "to-full")
    t.is_([(e[0], e[1], e[2]) for e in ev], [("pre", "0", "bob@localhost/two"), ("post", "0", "bob@localhost/two")],
          "full JID: pre and post once")
    # a message a module routes itself (route_stanza)
    r = alice.iq("set", "<cmd xmlns='%s'><send to='bob@localhost/one' body='from-module'/></cmd>" % NS_T,
                 to="localhost")
    t.ok(r is not None and r.get("type") == "result", "the module sent its message")
    m = bob1.expect_message("from-module")
    t.ok(sid_of(m) is not None and m.get("from") == "localhost", "module-originated: stamped too",
         lambda: el_str(m))
    ev = of_body(events(alice), "from-module")
    t.is_([(e[0], e[1]) for e in ev], [("pre", "0"), ("post", "0")], "module-originated: pre and post once")
    for c in (alice, bob1, bob2):
        c.end()


def offline_replay(t, srv):
    alice = login(srv, "alice")
    events(alice)
    alice.message("carol@localhost", "stored")
    alice.ping_server()
    ev = of_body(events(alice), "stored")
    t.is_([(e[0], e[1]) for e in ev], [("pre", "0"), ("undelivered", "0")],
          "offline: pre, then undelivered once (mod_offline keeps it), no post")
    sid = ev[0][4] if ev else None
    # RFC 6121 §8.5.2.1.1 with a negative priority: not a receiver, undelivered as well
    neg = login(srv, "carol", "neg", priority=-1)
    alice.message("carol@localhost", "stored-2")
    alice.ping_server()
    ev = of_body(events(alice), "stored-2")
    t.is_([e[0] for e in ev], ["pre", "undelivered"], "offline: a negative-priority resource takes nothing")
    neg.end()
    carol = login(srv, "carol")
    m = carol.expect_message("stored")
    m2 = carol.expect_message("stored-2")
    t.ok(m is not None and m2 is not None, "offline: both messages replayed")
    t.ok(sid_of(m) == ("localhost", sid), "offline: the replayed message keeps the stamp of its arrival",
         lambda: "%s vs %s" % (el_str(m), sid))
    ev = of_body(events(alice), "stored")
    t.is_([(e[0], e[1]) for e in ev], [("pre", "1"), ("post", "1")],
          "offline replay: pre and post once each, with the replay flag")
    # a message to a user who does not exist: undelivered, then the core bounces it
    alice.message("nobody@localhost", "to-nobody")
    err = alice.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("type") == "error")
    t.ok(err is not None, "no such account: bounced", lambda: alice.dump())
    ev = of_body(events(alice), "to-nobody")
    t.ok([e[0] for e in ev][:2] == ["pre", "undelivered"], "no such account: pre, undelivered", lambda: repr(ev))
    alice.end()
    carol.end()


NS_REG = "jabber:iq:register"
POLL_S = 1.0      # server/account.c POLL_MS: how often the server looks for another process's writes


def lifecycle_seen(c, name, who, settle=POLL_S * 2.5, timeout=10):
    """How often event name for who was recorded: waits until it was (or timeout), then another
    `settle` seconds, so that a second firing within the poll interval would be counted too."""
    n, deadline, until = 0, time.monotonic() + timeout, None
    while time.monotonic() < (until or deadline):
        n += len([e for e in events(c) if e[0] == name and e[2] == who])
        if n and until is None:
            until = time.monotonic() + settle
        c.ping_server(timeout=0.2)
    return n


def lifecycle(t, srv):
    t.ok(srv.wait_log(r"test_flow: event host-started localhost") is not None,
         "host-started fired for the host at start")
    alice = login(srv, "alice")
    events(alice)
    r = srv.ctl("user", "add", "dave@localhost", input="pw-dave\n")
    t.is_(r.returncode, 0, "civitasctl user add while the server runs")
    t.is_(lifecycle_seen(alice, "user-created", "dave@localhost"), 1,
          "civitasctl user add: user-created fired once, within the poll interval")
    r = srv.ctl("user", "passwd", "dave@localhost", input="pw-dave-2\n")
    t.is_(r.returncode, 0, "civitasctl user passwd while the server runs")
    t.is_(lifecycle_seen(alice, "password-changed", "dave@localhost"), 1,
          "civitasctl user passwd: password-changed fired once")
    # XEP-0077 in-band: registration before authentication, then a password change (§3.3)
    c = RawClient(srv.port("client"), cafile=srv.ca)
    c.open_stream()
    c.starttls()
    c.open_stream()
    r = c.iq("set", "<query xmlns='%s'><username>erin</username><password>pw-erin</password></query>" % NS_REG)
    t.ok(r is not None and r.get("type") == "result", "XEP-0077: in-band registration", lambda: el_str(r))
    c.close()
    t.is_(lifecycle_seen(alice, "user-created", "erin@localhost"), 1, "in-band registration: user-created once")
    r = alice.iq("set", "<query xmlns='%s'><username>alice</username><password>%s</password></query>"
                 % (NS_REG, PW))
    t.ok(r is not None and r.get("type") == "result", "XEP-0077 §3.3: in-band password change", lambda: el_str(r))
    t.is_(lifecycle_seen(alice, "password-changed", "alice@localhost"), 1, "in-band password change: once")
    alice.end()


def host_stopping(t):
    srv = Server(t, modules=MODULES, extra_yaml="register:\n  allow_registration: true\n")
    with srv:
        srv.adduser("alice@localhost", PW)
        t.run(lifecycle, t, srv)
        srv.stop()
        t.ok(re.search(r"test_flow: event host-stopping localhost", srv.log()) is not None,
             "host-stopping fired for the host at SIGTERM", lambda: srv.log_tail())


def federation(t):
    certs = Certs()
    pa, pb = free_port(), free_port()
    lst = lambda p: {"client": ["127.0.0.1:0"], "client_tls": ["127.0.0.1:0"], "server": ["127.0.0.1:%d" % p]}  # noqa
    a = Server(t, hosts=["a.example"], certs=certs, listen=lst(pa), start=False, modules=MODULES, extra_yaml=(
        "federation:\n  mode: allowlist\n  dialback: false\n  partners:\n" + partner("b.example", pb, certs.ca)))
    b = Server(t, hosts=["b.example"], certs=certs, listen=lst(pb), start=False, modules=MODULES, extra_yaml=(
        "federation:\n  mode: allowlist\n  dialback: false\n  partners:\n" + partner("a.example", pa, certs.ca)))
    with a, b:
        a.start()
        b.start()
        a.adduser("alice@a.example", PW)
        b.adduser("bob@b.example", PW)
        alice = login(a, "alice", domain="a.example")
        bob = login(b, "bob", domain="b.example")
        events(alice, "a.example")
        events(bob, "b.example")
        alice.message("bob@b.example/r", "to-remote")
        m = bob.expect_message("to-remote", timeout=20)
        t.ok(m is not None, "s2s: the message arrives", lambda: bob.dump())
        stamps = [(s.get("by"), s.get("id")) for s in (m.findall(q(NS_SID, "stanza-id")) if m is not None else [])]
        t.ok(("a.example", "1") in stamps, "s2s: stamped by the sending server's pre", lambda: repr(stamps))
        ev = of_body(events(alice, "a.example"), "to-remote")
        t.is_([(e[0], e[1], e[2]) for e in ev], [("pre", "0", "bob@b.example/r"), ("post", "0", "bob@b.example/r")],
              "s2s out: pre and post once on the sending server")
        ev = of_body(events(bob, "b.example"), "to-remote")
        t.is_([e[0] for e in ev], ["pre", "post"], "s2s in: pre and post once on the receiving server")
        alice.end()
        bob.end()


def main(t):
    d = module_dir("mod_test_flow")
    if d is None:
        t.ok(False, "tests/modules/mod_test_flow.c is built (make check builds it)")
        return
    os.environ["CIVITAS_MODULE_DIR"] = d
    with Server(t, modules=MODULES) as srv:
        for u in ("alice", "bob", "carol"):
            srv.adduser("%s@localhost" % u, PW)
        t.run(local_routes, t, srv)
        t.run(offline_replay, t, srv)
    t.run(federation, t)
    t.run(host_stopping, t)


if __name__ == "__main__":
    Tap().main(main)
