#!/usr/bin/python3
# tests/integration/test_blocking.py: XEP-0191 Blocking Command: the blocklist (get, block, unblock,
# unblock all, pushes), filtering of stanzas from and to blocked JIDs, JID matching, persistence.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Tap, Server, connect_login, q, el_str,  # noqa: E402
                     NS_CLIENT, NS_STANZAS, NS_DISCO_INFO)
from harness import error_condition  # noqa: E402

PW = "pw-for-blocking"
NS_B = "urn:xmpp:blocking"
NS_BE = "urn:xmpp:blocking:errors"


def blocklist(c):
    r = c.iq("get", "<blocklist xmlns='%s'/>" % NS_B)
    bl = r.find(q(NS_B, "blocklist")) if r is not None else None
    return r, (sorted(i.get("jid") for i in bl.findall(q(NS_B, "item"))) if bl is not None else None)


def items(*jids):
    return "".join("<item jid='%s'/>" % j for j in jids)


def block(c, *jids):
    return c.iq("set", "<block xmlns='%s'>%s</block>" % (NS_B, items(*jids)))


def unblock(c, *jids):
    return c.iq("set", "<unblock xmlns='%s'>%s</unblock>" % (NS_B, items(*jids)))


def push_of(c, kind, timeout=None):
    """The next blocklist push (<iq type='set'> with <block/> or <unblock/>), answered as a client must."""
    el = c.expect(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("type") == "set"
                  and el.find(q(NS_B, kind)) is not None, timeout)
    if el is not None:
        c.send("<iq type='result' id='%s'/>" % el.get("id"))
    return el


def stray(c, pred):
    """Stanzas already received (after a ping barrier) matching pred."""
    c.ping_server()
    return [el for el in c.inbox if pred(el)]


def is_msg(body):
    return lambda el: el.tag == q(NS_CLIENT, "message") and el.find(q(NS_CLIENT, "body")) is not None \
        and el.find(q(NS_CLIENT, "body")).text == body


def blocklist_management(t, srv):
    a1 = connect_login(srv, "alice", PW, resource="one")
    a2 = connect_login(srv, "alice", PW, resource="two")
    a3 = connect_login(srv, "alice", PW, resource="three")
    r = a1.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to="localhost")
    feats = [f.get("var") for f in r.iter(q(NS_DISCO_INFO, "feature"))] if r is not None else []
    t.ok(NS_B in feats, "XEP-0191 §3.1: the server advertises urn:xmpp:blocking", el_str(r))

    r, lst = blocklist(a1)
    t.ok(r is not None and r.get("type") == "result" and lst == [],
         "XEP-0191 §3.2: an empty blocklist is an empty <blocklist/>", el_str(r))
    blocklist(a3)           # a3 is interested too; a2 never asks

    r = block(a1, "mallory@localhost", "Trent@LOCALHOST/spam")
    t.ok(r is not None and r.get("type") == "result", "XEP-0191 §3.3: block command -> IQ result", el_str(r))
    for c, name in ((a1, "the requesting resource"), (a3, "another resource that asked for the list")):
        p = push_of(c, "block")
        got = sorted(i.get("jid") for i in p.iter(q(NS_B, "item"))) if p is not None else None
        t.ok(p is not None and got == ["mallory@localhost", "trent@localhost/spam"] and p.get("to") == c.jid,
             "XEP-0191 §3.3: the block push (prepared JIDs) reaches %s" % name, el_str(p))
    leaks = stray(a2, lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("type") == "set")
    t.ok(not leaks, "XEP-0191 §3.3: a resource that never requested the blocklist gets no push",
         lambda: repr([el_str(x) for x in leaks]))
    r, lst = blocklist(a2)
    t.is_(lst, ["mallory@localhost", "trent@localhost/spam"], "XEP-0191 §3.2: the blocklist lists the blocked JIDs")

    r = a1.iq("set", "<block xmlns='%s'/>" % NS_B)
    t.is_(error_condition(r), "bad-request", "XEP-0191 §3.3: <block/> without <item/> -> <bad-request/>")
    r = block(a1, "@bad@")
    t.is_(error_condition(r), "jid-malformed", "XEP-0191 / XEP-0086: an item with an invalid JID -> <jid-malformed/>")
    b = connect_login(srv, "bob", PW, resource="x")
    r = b.iq("get", "<blocklist xmlns='%s'/>" % NS_B, to="alice@localhost")
    t.ok(r is not None and r.get("type") == "error",
         "XEP-0191: another user cannot read alice's blocklist", el_str(r))
    r = b.iq("set", "<block xmlns='%s'>%s</block>" % (NS_B, items("bob@localhost")), to="alice@localhost")
    t.ok(r is not None and r.get("type") == "error", "XEP-0191: another user cannot change alice's blocklist",
         el_str(r))
    b.end()
    for c in (a1, a2, a3):
        c.end()


def filtering(t, srv):
    a = connect_login(srv, "alice", PW, resource="f")
    a.presence()
    m = connect_login(srv, "mallory", PW, resource="m")
    m.presence()
    a.ping_server()

    # inbound (§3.3): from a blocked JID
    m.message("alice@localhost", "to bare", id="in-1")
    r = m.expect(lambda el: el.get("id") == "in-1")
    t.ok(r is not None and r.get("type") == "error" and error_condition(r) == "service-unavailable",
         "XEP-0191 §3.3: a message from a blocked JID to the bare JID -> <service-unavailable/>", el_str(r))
    m.message(a.jid, "to full", id="in-2")
    r = m.expect(lambda el: el.get("id") == "in-2")
    t.is_(error_condition(r), "service-unavailable",
          "XEP-0191 §3.3: a message from a blocked JID to a full JID -> <service-unavailable/>")
    r = m.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=a.jid, id="in-3")
    t.is_(error_condition(r), "service-unavailable",
          "XEP-0191 §3.3: an IQ get from a blocked JID -> <service-unavailable/>")
    m.send("<presence to='%s'/>" % a.jid)
    m.send("<presence to='alice@localhost' type='subscribe'/>")
    m.send("<iq type='result' id='in-4' to='%s'/>" % a.jid)
    m.send("<message to='%s' type='error' id='in-5'><error type='cancel'>"
           "<item-not-found xmlns='%s'/></error></message>" % (a.jid, NS_STANZAS))
    errs = stray(m, lambda el: el.get("type") == "error" and el.get("id") in (None, "in-4", "in-5"))
    t.ok(not errs, "XEP-0191 §3.3: presence, IQ results and errors from a blocked JID are dropped without an error",
         lambda: repr([el_str(x) for x in errs]))
    got = stray(a, lambda el: el.get("from", "").startswith("mallory@"))
    t.ok(not got, "XEP-0191 §3.3: nothing from the blocked JID reaches alice",
         lambda: repr([el_str(x) for x in got]))

    # outbound (§3.3): to a blocked JID
    a.message("mallory@localhost", "to blocked", id="out-1")
    r = a.expect(lambda el: el.get("id") == "out-1")
    err = r.find(q(NS_CLIENT, "error")) if r is not None else None
    t.ok(r is not None and r.get("type") == "error" and error_condition(r) == "not-acceptable"
         and err.find(q(NS_BE, "blocked")) is not None and r.get("from") == "mallory@localhost",
         "XEP-0191 §3.3: a message to a blocked JID -> <not-acceptable/> with <blocked xmlns='%s'/>" % NS_BE,
         el_str(r))
    r = a.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=m.jid, id="out-2")
    t.ok(error_condition(r) == "not-acceptable" and r.find("%s/%s" % (q(NS_CLIENT, "error"), q(NS_BE, "blocked")))
         is not None, "XEP-0191 §3.3: an IQ to a blocked full JID -> <not-acceptable/><blocked/>", el_str(r))
    got = stray(m, lambda el: el.get("id") in ("out-1", "out-2"))
    t.ok(not got, "XEP-0191 §3.3: the stanzas to the blocked JID are not routed",
         lambda: repr([el_str(x) for x in got]))

    # JID matching (XEP-0191 §6 / XEP-0016 §2.1): a blocked full JID only blocks that resource
    ts = connect_login(srv, "trent", PW, resource="spam")
    to = connect_login(srv, "trent", PW, resource="ok")
    ts.message(a.jid, "from spam", id="tr-1")
    r = ts.expect(lambda el: el.get("id") == "tr-1")
    t.is_(error_condition(r), "service-unavailable", "XEP-0191 §6: a blocked full JID is blocked")
    to.message(a.jid, "from ok")
    t.ok(a.expect(is_msg("from ok")) is not None,
         "XEP-0191 §6: another resource of the same account is not blocked by a full-JID item")
    ts.end()
    to.end()

    # blocked sender, recipient offline: nothing is stored for later (blocking runs before storage)
    a.end()
    m.message("alice@localhost", "while alice is offline", id="off-1")
    r = m.expect(lambda el: el.get("id") == "off-1")
    t.is_(error_condition(r), "service-unavailable",
          "XEP-0191 §3.3: a blocked JID's message for an offline user is refused, not stored")
    a = connect_login(srv, "alice", PW, resource="back")
    a.presence()
    got = stray(a, is_msg("while alice is offline"))
    t.ok(not got, "XEP-0191: the refused message is not delivered later", lambda: repr([el_str(x) for x in got]))
    r, lst = blocklist(a)
    t.is_(lst, ["mallory@localhost", "trent@localhost/spam"], "XEP-0191 §3.3: the block persists across sessions")

    # §3.3: blocking a contact that may see alice's presence sends it unavailable presence;
    # one without a subscription gets nothing
    b = connect_login(srv, "bob", PW, resource="b")
    b.presence()
    cz = connect_login(srv, "carol", PW, resource="c")
    cz.presence()
    b.send("<presence to='alice@localhost' type='subscribe'/>")
    t.ok(b.ping_server(), "bob asks for alice's presence")
    a.send("<presence to='bob@localhost' type='subscribed'/>")
    t.ok(a.ping_server(), "alice approves: bob may see her presence (RFC 6121 §3.1)")
    b.ping_server()
    b.inbox = []
    block(a, "bob@localhost", "carol@localhost")
    p = b.expect(lambda el: el.tag == q(NS_CLIENT, "presence") and el.get("type") == "unavailable"
                 and el.get("from") == a.jid)
    t.ok(p is not None, "XEP-0191 §3.3: the newly blocked contact with a subscription receives unavailable presence",
         b.dump)
    got = stray(cz, lambda el: el.tag == q(NS_CLIENT, "presence") and el.get("from", "").startswith("alice@"))
    t.ok(not got, "XEP-0191 §3.3: a blocked entity not allowed to see alice's presence gets none",
         lambda: repr([el_str(x) for x in got]))
    a.presence(extra="<status>still here</status>")
    t.ok(a.ping_server(), "alice broadcasts a presence update")
    got = stray(b, lambda el: el.tag == q(NS_CLIENT, "presence") and el.get("from", "").startswith("alice@"))
    t.ok(not got, "XEP-0191 §3.3: the blocked contact gets none of alice's later presence broadcasts",
         lambda: repr([el_str(x) for x in got]))
    # an IQ to the blocker's bare JID is a stanza from a blocked entity like any other; answered,
    # jabber:iq:last would tell a subscribed contact whether alice is online
    r = b.iq("get", "<query xmlns='jabber:iq:last'/>", to="alice@localhost")
    t.is_(error_condition(r), "service-unavailable",
          "XEP-0191 §3.3: an IQ get from a blocked contact to the user's bare JID (jabber:iq:last) "
          "-> <service-unavailable/>, no last activity")
    r = b.iq("set", "<query xmlns='jabber:iq:private'/>", to="alice@localhost")
    t.is_(error_condition(r), "service-unavailable",
          "XEP-0191 §3.3: an IQ set from a blocked contact to the user's bare JID -> <service-unavailable/>")
    cz.end()
    b.inbox = []
    r = unblock(a, "bob@localhost")
    p = b.expect(lambda el: el.tag == q(NS_CLIENT, "presence") and el.get("type") is None
                 and el.get("from") == a.jid)
    t.ok(p is not None and p.findtext(q(NS_CLIENT, "status")) == "still here",
         "XEP-0191 §3.4: an unblocked contact with a subscription receives the user's current presence", b.dump)
    b.end()

    # unblock (§3.4)
    a2 = connect_login(srv, "alice", PW, resource="watcher")
    blocklist(a2)
    r = unblock(a, "mallory@localhost")
    t.ok(r is not None and r.get("type") == "result", "XEP-0191 §3.4: unblock -> IQ result", el_str(r))
    p = push_of(a2, "unblock")
    got = [i.get("jid") for i in p.iter(q(NS_B, "item"))] if p is not None else None
    t.ok(got == ["mallory@localhost"], "XEP-0191 §3.4: the unblock push names the unblocked JID", el_str(p))
    m.message("alice@localhost", "after unblock", id="ub-1")
    t.ok(a.expect(is_msg("after unblock")) is not None,
         "XEP-0191 §3.4: after unblocking, the contact's messages are delivered again")
    a.message("mallory@localhost", "hi again")
    t.ok(m.expect(is_msg("hi again")) is not None, "XEP-0191 §3.4: and the user's messages reach the contact")

    # unblock all (§3.5)
    r = a.iq("set", "<unblock xmlns='%s'/>" % NS_B)
    t.ok(r is not None and r.get("type") == "result", "XEP-0191 §3.5: unblock all -> IQ result", el_str(r))
    p = push_of(a2, "unblock")
    u = p.find(q(NS_B, "unblock")) if p is not None else None
    t.ok(u is not None and len(list(u)) == 0, "XEP-0191 §3.5: the unblock-all push is an empty <unblock/>",
         el_str(p))
    r, lst = blocklist(a)
    t.is_(lst, [], "XEP-0191 §3.5: the blocklist is empty after unblock all")
    ts = connect_login(srv, "trent", PW, resource="spam")
    ts.message(a.jid, "spam is welcome now")
    t.ok(a.expect(is_msg("spam is welcome now")) is not None,
         "XEP-0191 §3.5: formerly blocked JIDs get through after unblock all")
    for c in (a, a2, b, m, ts):
        c.end()


def main(t):
    with Server(t) as srv:
        for u in ("alice", "bob", "carol", "mallory", "trent"):
            srv.adduser("%s@localhost" % u, PW)
        t.run(blocklist_management, t, srv)
        t.run(filtering, t, srv)


Tap().main(main)
