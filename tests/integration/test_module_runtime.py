#!/usr/bin/python3
# tests/integration/test_module_runtime.py: the module API of issue 10 at run time, driven through the
# test module tests/modules/mod_test_api.c (built by make check, found via CIVITAS_MODULE_DIR): timers, IQ requests with a result
# callback (local, to the server itself, over federation; RFC 6120 §8.1.2.1 sender rule, time-out),
# XEP-0115 caps verification and caching, and the presence events.
import base64
import hashlib
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Tap, Server, Certs, connect_login, q, el_str,  # noqa: E402
                     free_port, partner, NS_CLIENT, NS_PING, NS_DISCO_INFO)
from harness import module_dir as harness_module_dir  # noqa: E402

NS_T = "urn:civitas:test-api"
NS_CAPS = "http://jabber.org/protocol/caps"
PW = "pw-module-api"
SRC = os.environ.get("CIVITAS_SRCDIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def standard_modules():
    with open(os.path.join(SRC, "modules", "standard.list")) as f:
        return [l.strip() for l in f if l.strip() and not l.startswith("#")]


MODULES = standard_modules() + ["test_api"]


def module_dir(test_module="mod_test_api"):
    """A CIVITAS_MODULE_DIR with the standard modules and the test module (harness.module_dir)."""
    return harness_module_dir(test_module)


def cmd(c, inner, domain="localhost"):
    return c.iq("set", "<cmd xmlns='%s'>%s</cmd>" % (NS_T, inner), to=domain)


def sent_id(r):
    s = r.find(q(NS_T, "sent")) if r is not None else None
    return s.get("id") if s is not None else None


def headline(c, tag, pred=lambda el: True, timeout=None):
    """The test module's headline message carrying <tag xmlns=NS_T/> for which pred holds."""
    def m(el):
        if el.tag != q(NS_CLIENT, "message"):
            return False
        x = el.find(q(NS_T, tag))
        return x is not None and pred(x)
    el = c.expect(m, timeout)
    return el.find(q(NS_T, tag)) if el is not None else None


def outcome(c, rid, timeout=None):
    return headline(c, "outcome", lambda x: x.get("id") == rid, timeout)


def incoming_iq(c, ns, timeout=None):
    """An IQ get with a child in ns that the server sent to client c."""
    return c.expect(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("type") == "get"
                    and el.find(q(ns, "query" if ns == NS_DISCO_INFO else "ping")) is not None, timeout)


def answer(c, iq, payload="", to=None):
    c.send("<iq type='result' id='%s' to='%s'>%s</iq>" % (iq.get("id"), to or iq.get("from"), payload))


def events(c, domain="localhost"):
    r = cmd(c, "<events/>", domain)
    ev = r.find(q(NS_T, "events")) if r is not None else None
    return [(e.get("name"), e.get("from"), e.get("to"), e.get("type")) for e in ev] if ev is not None else []


# ---- timers ---------------------------------------------------------------------------------

def timers(t, srv):
    a = connect_login(srv, "alice", PW, resource="t")
    start = time.monotonic()
    t.ok(cmd(a, "<timer ms='150'/>").get("type") == "result", "timer: a one-shot timer is added")
    x = headline(a, "tick", lambda x: x.get("ms") == "150")
    took = time.monotonic() - start
    t.ok(x is not None and x.get("n") == "1", "timer: the one-shot timer fires", lambda: a.dump())
    t.ok(took >= 0.14, "timer: not before its time (%.3f s)" % took)
    # a repeating timer ticks count times, then cancels itself from its own callback
    cmd(a, "<timer ms='40' count='3'/>")
    got = [headline(a, "tick", lambda x: x.get("ms") == "40") for _ in range(3)]
    t.is_([x.get("n") if x is not None else None for x in got], ["1", "2", "3"],
          "timer: a repeating timer ticks 1, 2, 3 in order")
    # a cancelled timer never fires: a later one-shot timer is the marker
    cmd(a, "<timer ms='30' cancel='1'/>")
    cmd(a, "<timer ms='400'/>")
    marker = headline(a, "tick", lambda x: x.get("ms") == "400")
    t.ok(marker is not None, "timer: the marker timer fires")
    stray = [el for el in a.inbox if el.find(q(NS_T, "tick")) is not None]
    t.ok(not stray, "timer: no tick of the cancelled timer, none after the repeating one's last",
         lambda: "\n".join(el_str(e) for e in stray))
    a.end()


# ---- IQ requests to local entities ----------------------------------------------------------

def iq_local(t, srv):
    alice = connect_login(srv, "alice", PW, resource="a")
    bob = connect_login(srv, "bob", PW, resource="b")
    carol = connect_login(srv, "carol", PW, resource="c")
    bob_jid = "bob@localhost/b"

    # ping to a client that answers
    rid = sent_id(cmd(alice, "<send to='%s' kind='ping'/>" % bob_jid))
    t.ok(rid is not None, "iq: module_send_iq accepted the request")
    iq = incoming_iq(bob, NS_PING)
    t.ok(iq is not None and iq.get("from") == "localhost" and iq.get("id") == rid,
         "iq: the client gets the ping from the server's domain with the request's id", lambda: bob.dump())
    t.ok(rid is not None and re.fullmatch(r"[0-9a-f]{32}", rid) is not None,
         "iq: the id is 128 random bits in hex (%s)" % rid)
    answer(bob, iq)
    o = outcome(alice, rid)
    t.ok(o is not None and o.get("result") == "result" and o.get("from") == bob_jid,
         "iq: the callback gets the result from the client", lambda: alice.dump())

    # ids are unique and not sequential
    r1 = sent_id(cmd(alice, "<send to='%s' kind='ping'/>" % bob_jid))
    r2 = sent_id(cmd(alice, "<send to='%s' kind='ping'/>" % bob_jid))
    t.ok(r1 and r2 and r1 != r2 and abs(int(r1, 16) - int(r2, 16)) > 1000, "iq: two requests get unrelated ids")
    for _ in range(2):
        iq = incoming_iq(bob, NS_PING)
        if iq is not None:
            answer(bob, iq)
    t.ok(outcome(alice, r1) is not None and outcome(alice, r2) is not None, "iq: both callbacks run")

    # disco#info with a payload in the answer
    rid = sent_id(cmd(alice, "<send to='%s' kind='disco'/>" % bob_jid))
    iq = incoming_iq(bob, NS_DISCO_INFO)
    answer(bob, iq, "<query xmlns='%s'><feature var='urn:example:bob'/></query>" % NS_DISCO_INFO)
    o = outcome(alice, rid)
    f = o.find("%s/%s" % (q(NS_DISCO_INFO, "query"), q(NS_DISCO_INFO, "feature"))) if o is not None else None
    t.ok(f is not None and f.get("var") == "urn:example:bob", "iq: the callback sees the disco#info answer",
         lambda: el_str(o))

    # an answer from the wrong JID is not consumed; the right one still is
    rid = sent_id(cmd(alice, "<send to='%s' kind='ping'/>" % bob_jid))
    iq = incoming_iq(bob, NS_PING)
    carol.send("<iq type='result' id='%s' to='localhost'/>" % rid)
    carol.ping_server()
    alice.ping_server()
    early = outcome(alice, rid, timeout=0.3)
    t.ok(early is None, "iq: an answer with the right id from another JID is not taken", lambda: el_str(early))
    answer(bob, iq)
    o = outcome(alice, rid)
    t.ok(o is not None and o.get("result") == "result" and o.get("from") == bob_jid,
         "iq: the expected sender's answer after it is", lambda: alice.dump())

    # an error answer
    rid = sent_id(cmd(alice, "<send to='%s' kind='ping'/>" % bob_jid))
    iq = incoming_iq(bob, NS_PING)
    bob.send("<iq type='error' id='%s' to='localhost'><error type='cancel'>"
             "<feature-not-implemented xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>" % rid)
    o = outcome(alice, rid)
    t.ok(o is not None and o.get("result") == "error" and o.get("condition") == "feature-not-implemented",
         "iq: an error answer reaches the callback as an error", lambda: el_str(o))

    # no answer: the time-out, with a synthesized <remote-server-timeout/>; a late answer is not taken
    start = time.monotonic()
    rid = sent_id(cmd(alice, "<send to='%s' kind='ping' timeout='400'/>" % bob_jid))
    iq = incoming_iq(bob, NS_PING)
    o = outcome(alice, rid, timeout=5)
    took = time.monotonic() - start
    t.ok(o is not None and o.get("result") == "timeout" and o.get("condition") == "remote-server-timeout"
         and o.get("from") == bob_jid, "iq: no answer: the callback gets a remote-server-timeout error",
         lambda: el_str(o))
    t.ok(took >= 0.39, "iq: not before the time-out (%.3f s)" % took)
    answer(bob, iq)
    bob.ping_server()
    alice.ping_server()
    t.ok(outcome(alice, rid, timeout=0.3) is None, "iq: a late answer does not run the callback again")

    # a full JID that is not online: the router's bounce is the answer (service-unavailable)
    rid = sent_id(cmd(alice, "<send to='bob@localhost/nowhere' kind='ping'/>"))
    o = outcome(alice, rid)
    t.ok(o is not None and o.get("result") == "error" and o.get("condition") == "service-unavailable",
         "iq: to an offline resource: the bounce is the answer (RFC 6120 §8.5.3.2.2)", lambda: el_str(o))

    # the server itself and an account's bare JID answer (mod_ping), inside the routing of the request
    rid = sent_id(cmd(alice, "<send to='localhost' kind='ping'/>"))
    o = outcome(alice, rid)
    t.ok(o is not None and o.get("result") == "result" and o.get("from") == "localhost",
         "iq: a request to the server's own domain is answered", lambda: el_str(o))
    rid = sent_id(cmd(alice, "<send to='bob@localhost' kind='ping'/>"))
    o = outcome(alice, rid)
    t.ok(o is not None and o.get("result") == "result" and o.get("from") == "bob@localhost",
         "iq: a request to an account's bare JID is answered by its server for it (§8.1.2.1)", lambda: el_str(o))

    # expected_from: the answer must come from whom the module expects, not whom it asked
    rid = sent_id(cmd(alice, "<send to='%s' expect='carol@localhost/c' kind='ping' timeout='500'/>" % bob_jid))
    iq = incoming_iq(bob, NS_PING)
    answer(bob, iq)
    o = outcome(alice, rid, timeout=5)
    t.ok(o is not None and o.get("result") == "timeout", "iq: an answer from another JID than expected_from times out",
         lambda: el_str(o))
    for c in (alice, bob, carol):
        c.end()


# ---- unload: pending timers and requests ------------------------------------------------------

def unload(t, srv):
    alice = connect_login(srv, "alice", PW, resource="u")
    bob = connect_login(srv, "bob", PW, resource="u")
    cmd(alice, "<timer ms='60000'/>")
    rid = sent_id(cmd(alice, "<send to='bob@localhost/u' kind='ping' timeout='60000'/>"))
    t.ok(incoming_iq(bob, NS_PING) is not None, "unload: the request is out and unanswered")
    mark = srv.log_mark()
    rc = srv.stop()
    t.ok(rc == 0, "unload: the server stops with a request and a timer pending (exit %r)" % rc)
    log = "\n".join(srv.log().splitlines()[mark:])
    t.ok(("test_api: cancelled %s" % rid) in log or re.search(r"cancelled %s" % rid, log) is not None,
         "unload: the pending request's callback ran with IQ_CANCELLED", lambda: log)
    t.ok(re.search(r"unloaded with 1 timers", log) is not None, "unload: the timer was still pending at unload",
         lambda: log)
    t.ok(not srv.sanitizer_reports(), "unload: no sanitizer report", lambda: "\n".join(srv.sanitizer_reports()))


# ---- caps -------------------------------------------------------------------------------------

DISCO_FEATURES = ["http://jabber.org/protocol/caps", NS_DISCO_INFO, "urn:xmpp:avatar:metadata+notify"]


def caps_ver(features, identity=("client", "pc", "", "civitas-test")):
    s = "%s/%s/%s/%s<" % identity + "".join(f + "<" for f in sorted(features))
    return base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()


def disco_payload(features, identity=("client", "pc", "", "civitas-test"), node=None):
    n = " node='%s'" % node if node else ""
    return ("<query xmlns='%s'%s><identity category='%s' type='%s' name='%s'/>%s</query>"
            % (NS_DISCO_INFO, n, identity[0], identity[1], identity[3],
               "".join("<feature var='%s'/>" % f for f in features)))


def caps_el(ver, node="https://civitas.example/test"):
    return "<c xmlns='%s' hash='sha-1' node='%s' ver='%s'/>" % (NS_CAPS, node, ver)


def caps_of(c, jid, feature="urn:xmpp:avatar:metadata+notify", domain="localhost"):
    r = cmd(c, "<caps jid='%s' feature='%s'/>" % (jid, feature), domain)
    x = r.find(q(NS_T, "caps")) if r is not None else None
    return (x.get("known"), x.get("has")) if x is not None else (None, None)


def caps(t, srv):
    ver = caps_ver(DISCO_FEATURES)
    node = "https://civitas.example/test"
    a = connect_login(srv, "alice", PW, resource="caps1")
    events(a)
    a.presence(extra=caps_el(ver, node))
    iq = incoming_iq(a, NS_DISCO_INFO)
    qn = iq.find(q(NS_DISCO_INFO, "query")) if iq is not None else None
    t.ok(qn is not None and qn.get("node") == "%s#%s" % (node, ver) and iq.get("from") == "localhost",
         "caps: unknown ver: the server asks disco#info with node='node#ver' (XEP-0115 §6.2)", lambda: a.dump())
    answer(a, iq, disco_payload(DISCO_FEATURES, node="%s#%s" % (node, ver)))
    a.ping_server()
    t.is_(caps_of(a, "alice@localhost/caps1"), ("1", "1"), "caps: a verified answer is cached; +notify is seen")
    ev = events(a)
    t.ok(("caps-known", "alice@localhost/caps1", None, "") in [(n, f, to, ty) for n, f, to, ty in ev],
         "caps: caps-known fired for the full JID", lambda: repr(ev))

    # a second resource with the same ver: no query, known at once
    b = connect_login(srv, "alice", PW, resource="caps2")
    b.presence(extra=caps_el(ver, node))
    b.ping_server()
    t.is_(caps_of(b, "alice@localhost/caps2"), ("1", "1"), "caps: the same ver from another JID is known from the cache")
    t.ok(incoming_iq(b, NS_DISCO_INFO, timeout=0.3) is None, "caps: and not asked again")

    # poisoning: an answer that does not hash to the advertised ver is never cached
    bad_ver = caps_ver(DISCO_FEATURES + ["urn:example:claimed"])
    c = connect_login(srv, "carol", PW, resource="bad")
    events(c)
    c.presence(extra=caps_el(bad_ver, node))
    iq = incoming_iq(c, NS_DISCO_INFO)
    t.ok(iq is not None, "caps: a new ver is asked for")
    answer(c, iq, disco_payload(DISCO_FEATURES + ["urn:example:poison"]))
    c.ping_server()
    t.is_(caps_of(c, "carol@localhost/bad"), ("0", "0"), "caps: a wrong hash is not cached (XEP-0115 §5.4)")
    ev = events(c)
    t.ok(not [e for e in ev if e[0] == "caps-known"], "caps: no caps-known for a wrong hash", lambda: repr(ev))
    d = connect_login(srv, "carol", PW, resource="bad2")
    d.presence(extra=caps_el(bad_ver, node))
    iq2 = incoming_iq(d, NS_DISCO_INFO)
    t.ok(iq2 is not None, "caps: the same bad ver is asked for again next time (nothing was cached)")
    for x in (a, b, c, d):
        x.end()
    return ver, node


def caps_after_restart(t, srv, ver, node):
    srv.stop()
    srv.start()
    a = connect_login(srv, "alice", PW, resource="caps3")
    a.presence(extra=caps_el(ver, node))
    a.ping_server()
    t.is_(caps_of(a, "alice@localhost/caps3"), ("1", "1"), "caps: the verified ver survives a restart (storage)")
    t.ok(incoming_iq(a, NS_DISCO_INFO, timeout=0.3) is None, "caps: no query after the restart")
    a.end()


# ---- presence events ----------------------------------------------------------------------------

def presence_events(t, srv):
    a = connect_login(srv, "alice", PW, resource="p")
    b = connect_login(srv, "bob", PW, resource="p")
    events(a)
    a.presence(priority=5)
    a.ping_server()
    a.presence(priority=7)                  # a change, not a transition
    a.ping_server()
    ev = [e for e in events(a) if e[0].startswith("resource-")]
    t.is_(ev, [("resource-available", "alice@localhost/p", "alice@localhost", "")],
          "presence: resource-available once for the first available presence")
    r = cmd(a, "<presence jid='alice@localhost/p'/>")
    po = r.find(q(NS_T, "presence-of")) if r is not None else None
    pr = po.find("%s/%s" % (q(NS_CLIENT, "presence"), q(NS_CLIENT, "priority"))) if po is not None else None
    t.ok(po is not None and po.get("priority") == "7" and pr is not None and pr.text == "7",
         "presence: session_presence is the last available presence, session_priority its priority", lambda: el_str(r))
    # directed presence from bob: contact-presence for alice
    b.send("<presence to='alice@localhost'/>")
    b.ping_server()
    ev = [e for e in events(a) if e[0] == "contact-presence"]
    t.ok(("contact-presence", "bob@localhost/p", "alice@localhost", "") in ev,
         "presence: contact-presence for presence from a local contact", lambda: repr(ev))
    a.send("<presence type='unavailable'/>")
    a.ping_server()
    r = cmd(a, "<presence jid='alice@localhost/p'/>")
    t.ok(r is not None and r.find("%s/%s" % (q(NS_T, "presence-of"), q(NS_T, "none"))) is not None,
         "presence: no current presence after unavailable", lambda: el_str(r))
    a.presence()
    a.ping_server()
    a.end()
    b.ping_server()
    time.sleep(0)  # (no sleep: the next command is a round trip through the server)
    for _ in range(50):
        ev = [e for e in events(b) if e[0].startswith("resource-") and e[1] == "alice@localhost/p"]
        if len(ev) >= 3:
            break
        b.ping_server(timeout=0.1)
    t.is_([e[0] for e in ev], ["resource-unavailable", "resource-available", "resource-unavailable"],
          "presence: unavailable, available again, and the disconnect: one event per transition")
    b.end()


# ---- federation -----------------------------------------------------------------------------------

def federation(t):
    certs = Certs()
    pa, pb = free_port(), free_port()
    lst = lambda p: {"client": ["127.0.0.1:0"], "client_tls": ["127.0.0.1:0"], "server": ["127.0.0.1:%d" % p]}  # noqa
    a = Server(t, hosts=["a.example"], certs=certs, listen=lst(pa), start=False, modules=MODULES, extra_yaml=(
        "federation:\n  mode: allowlist\n  dialback: false\n  partners:\n" + partner("b.example", pb, certs.ca)))
    b = Server(t, hosts=["b.example"], certs=certs, listen=lst(pb), start=False, extra_yaml=(
        "federation:\n  mode: allowlist\n  dialback: false\n  partners:\n" + partner("a.example", pa, certs.ca)))
    with a, b:
        a.start()
        b.start()
        a.adduser("alice@a.example", PW)
        b.adduser("bob@b.example", PW)
        alice = connect_login(a, "alice", PW, resource="r", domain="a.example")
        bob = connect_login(b, "bob", PW, resource="r", domain="b.example")
        rid = sent_id(cmd(alice, "<send to='bob@b.example/r' kind='ping'/>", "a.example"))
        iq = incoming_iq(bob, NS_PING, timeout=20)
        t.ok(iq is not None and iq.get("from") == "a.example", "s2s: the request reaches a remote client",
             lambda: bob.dump())
        if iq is not None:
            answer(bob, iq)
        o = outcome(alice, rid, timeout=20)
        t.ok(o is not None and o.get("result") == "result" and o.get("from") == "bob@b.example/r",
             "s2s: the remote answer runs the callback", lambda: el_str(o))
        rid = sent_id(cmd(alice, "<send to='b.example' kind='ping'/>", "a.example"))
        o = outcome(alice, rid, timeout=20)
        t.ok(o is not None and o.get("result") == "result" and o.get("from") == "b.example",
             "s2s: a remote server answers a request to its domain", lambda: el_str(o))
        rid = sent_id(cmd(alice, "<send to='bob@b.example/r' kind='ping' timeout='500'/>", "a.example"))
        t.ok(incoming_iq(bob, NS_PING, timeout=20) is not None, "s2s: an unanswered request arrives")
        o = outcome(alice, rid, timeout=20)
        t.ok(o is not None and o.get("result") == "timeout", "s2s: and times out", lambda: el_str(o))
        # a remote contact's caps, learnt from its directed presence to a local account
        ver = caps_ver(DISCO_FEATURES)
        events(alice, "a.example")
        bob.send("<presence to='alice@a.example'>%s</presence>" % caps_el(ver))
        iq = incoming_iq(bob, NS_DISCO_INFO, timeout=20)
        t.ok(iq is not None and iq.get("from") == "a.example", "s2s caps: a.example asks the remote JID's disco#info",
             lambda: bob.dump())
        if iq is not None:
            answer(bob, iq, disco_payload(DISCO_FEATURES))
        known = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            known = caps_of(alice, "bob@b.example/r", domain="a.example")
            if known == ("1", "1"):
                break
            alice.ping_server(domain="a.example", timeout=0.2)
        t.is_(known, ("1", "1"), "s2s caps: a remote contact's verified caps are known")
        ev = events(alice, "a.example")
        names = [(e[0], e[1]) for e in ev]
        t.ok(("contact-presence", "bob@b.example/r") in names and ("caps-known", "bob@b.example/r") in names,
             "s2s: contact-presence and caps-known for the remote contact", lambda: repr(ev))
        alice.end()
        bob.end()


def pep_and_account_disco(t, srv):
    """Issue 10: a module's account disco feature; mod_pep's "pep/publish" hook (the contract mod_omemo uses)."""
    a = connect_login(srv, "alice", PW, resource="pep")
    r = a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to="alice@localhost")
    feats = [f.get("var") for f in r.iter(q(NS_DISCO_INFO, "feature"))] if r is not None else []
    t.ok(NS_T in feats, "module_add_account_feature: the feature is in the account's disco#info", el_str(r))
    ps = "http://jabber.org/protocol/pubsub"
    r = a.iq("set", "<pubsub xmlns='%s'><publish node='%s:refuse'><item id='1'><x xmlns='urn:x'/></item></publish>"
             "</pubsub>" % (ps, NS_T))
    text = r.find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}text") if r is not None else None
    t.ok(r is not None and r.get("type") == "error" and text is not None
         and text.text == "from=alice@localhost/pep to=alice@localhost origin=alice@localhost/pep",
         "pep/publish: the handler saw publisher, owner and session, and its error answered the publish", el_str(r))
    r = a.iq("get", "<pubsub xmlns='%s'><items node='%s:refuse'/></pubsub>" % (ps, NS_T))
    t.ok(r is not None and r.find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}item-not-found") is not None,
         "pep/publish: nothing was stored (not even the node)", el_str(r))
    r = a.iq("set", "<pubsub xmlns='%s'><publish node='%s:other'><item id='1'><x xmlns='urn:x'/></item></publish>"
             "</pubsub>" % (ps, NS_T))
    t.ok(r is not None and r.get("type") == "result", "pep/publish: a handler that passes lets the publish through",
         el_str(r))
    a.end()


def main(t):
    d = module_dir()
    if d is None:
        t.ok(False, "tests/modules/mod_test_api.c is built (make check builds it)")
        return
    os.environ["CIVITAS_MODULE_DIR"] = d
    with Server(t, modules=MODULES) as srv:
        for u in ("alice", "bob", "carol"):
            srv.adduser("%s@localhost" % u, PW)
        t.run(timers, t, srv)
        t.run(iq_local, t, srv)
        t.run(presence_events, t, srv)
        t.run(pep_and_account_disco, t, srv)
        r = t.run(caps, t, srv)
        if r:
            t.run(caps_after_restart, t, srv, *r)
        t.run(unload, t, srv)
    t.run(federation, t)


if __name__ == "__main__":
    Tap().main(main)
