#!/usr/bin/python3
# tests/integration/test_csi.py: XEP-0352 Client State Indication (modules/mod_csi.c): the stream
# feature; while a session is <inactive/>, presence updates and chat states wait (only the latest
# per contact); a message with a body, an OMEMO payload (both namespaces), a XEP-0353 call and
# anything else important flush what waits, in order, and go at once; <active/> flushes the rest.
# Last, the bytes an inactive session is sent while 100 contacts change presence 5 times each,
# with and without CSI (printed as diagnostics; README "Client state indication"). XEP-0352 §5.2:
# a session resumed with XEP-0198 is active, what was held follows what is sent again.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, Server, connect_login, q, el_str, NS_CLIENT, NS_STREAM, NS_STREAMS_ERR  # noqa: E402
from test_smacks import SmClient, NS_SM  # noqa: E402

PW = "pw-csi"
NS_CSI = "urn:xmpp:csi:0"
NS_CS = "http://jabber.org/protocol/chatstates"
NS_OMEMO_LEGACY = "eu.siacs.conversations.axolotl"
NS_OMEMO2 = "urn:xmpp:omemo:2"
NS_JMI = "urn:xmpp:jingle-message:0"
ALICE = "alice@localhost/phone"
CONTACTS = 100
CHANGES = ("away", "xa", "dnd", "chat", None)


def inactive(c):
    c.send("<inactive xmlns='%s'/>" % NS_CSI)


def active(c):
    c.send("<active xmlns='%s'/>" % NS_CSI)


def pres(c, show, status):
    sh = "<show>%s</show>" % show if show else ""
    c.send("<presence>%s<status>%s</status></presence>" % (sh, status))


def chat_state(c, to, state):
    c.send("<message to='%s' type='chat'><%s xmlns='%s'/></message>" % (to, state, NS_CS))


def label(el):
    """A short name of a received stanza: 'p:<status>', 'c:<state>:<from>', 'm:<body>' or the tag."""
    if el.tag == q(NS_CLIENT, "presence"):
        return "p:%s" % (el.findtext(q(NS_CLIENT, "status")) or el.get("type") or "")
    if el.tag == q(NS_CLIENT, "message"):
        body = el.findtext(q(NS_CLIENT, "body"))
        if body is not None:
            return "m:" + body
        for ch in el:
            if ch.tag.startswith("{%s}" % NS_CS):
                return "c:%s:%s" % (ch.tag.split("}")[1], el.get("from", "").split("@")[0])
            if ch.tag in (q(NS_OMEMO_LEGACY, "encrypted"), q(NS_OMEMO2, "encrypted")):
                return "omemo:" + ch.tag.split("}")[0][1:]
            if ch.tag == q(NS_JMI, "propose"):
                return "call"
    return el.tag


def until(c, last, timeout=10):
    """Labels of everything c receives, in order, up to and including the stanza labelled last."""
    got = []

    def pred():
        while c.inbox:
            got.append(label(c.inbox.pop(0)))
            if got[-1] == last:
                return True
        return None
    c.read_until(pred, timeout)
    return got


def quiet(c, timeout=1.0):
    """Labels of what arrives at c within timeout (for an inactive session: what it must not get)."""
    c.read_until(lambda: None, timeout)
    got = [label(el) for el in c.inbox]
    c.inbox.clear()
    return got


def after_ping(c):
    """Labels of everything c got before the answer to a ping it sends now (all that the server had
    written or flushed to it before it read the ping)."""
    c.ping_server(timeout=60)
    got = [label(el) for el in c.inbox]
    c.inbox.clear()
    return got


def befriend(alice, contacts, owner="alice@localhost"):
    """alice subscribes to each contact's presence (pre-approved by the contact, RFC 6121 §3.4), then
    each contact sends its initial presence and alice sees it."""
    for c in contacts:
        c.send("<presence type='subscribed' to='%s'/>" % owner)
    for c in contacts:
        c.ping_server()
    for c in contacts:
        alice.send("<presence type='subscribe' to='%s'/>" % c.jid.split("/")[0])
    alice.ping_server(timeout=30)
    for c in contacts:
        pres(c, None, "hello")
    for c in contacts:
        c.ping_server()
    want = {c.jid for c in contacts}
    alice.read_until(lambda: want <= {el.get("from") for el in alice.inbox if el.tag == q(NS_CLIENT, "presence")
                                      and el.get("type") is None} or None, 60)
    seen = {el.get("from") for el in alice.inbox if el.tag == q(NS_CLIENT, "presence") and el.get("type") is None}
    alice.inbox.clear()
    return want <= seen


def semantics(t, srv):
    alice = connect_login(srv, "alice", PW, resource="phone")
    f = alice.features
    t.ok(f is not None and f.find(q(NS_CSI, "csi")) is not None,
         "XEP-0352 §4.1: <csi xmlns='urn:xmpp:csi:0'/> is a stream feature after authentication", lambda: el_str(f))
    bob = connect_login(srv, "bob", PW, resource="b")
    carol = connect_login(srv, "carol", PW, resource="c")
    alice.presence()
    t.ok(befriend(alice, [bob, carol]), "alice is subscribed to bob's and carol's presence")

    pres(bob, "away", "bob-0")
    t.is_(until(alice, "p:bob-0"), ["p:bob-0"], "active: a contact's presence update arrives at once")

    inactive(alice)
    alice.ping_server()     # an IQ is important: it goes at once, nothing waits before it
    # each sender's round trip orders its stanzas before the next sender's at the server
    pres(bob, "away", "bob-1")
    pres(bob, "dnd", "bob-2")
    bob.ping_server()
    pres(carol, "away", "carol-1")
    carol.ping_server()
    chat_state(bob, ALICE, "composing")
    chat_state(bob, ALICE, "paused")
    bob.ping_server()
    t.is_(quiet(alice), [], "XEP-0352 §3.2: while inactive, presence updates and chat states are held back")
    bob.message(ALICE, "hello")
    t.is_(until(alice, "m:hello"), ["p:bob-2", "p:carol-1", "c:paused:bob", "m:hello"],
          "a message with a body flushes what waits, in order, only the latest per contact, and goes at once")

    for ns in (NS_OMEMO_LEGACY, NS_OMEMO2):
        pres(carol, "xa", "carol-" + ns)
        carol.ping_server()
        t.is_(quiet(alice, 0.5), [], "held: carol's presence (before an OMEMO %s message)" % ns)
        bob.send("<message to='%s' type='chat'><encrypted xmlns='%s'><header sid='1'/></encrypted>"
                 "<store xmlns='urn:xmpp:hints'/></message>" % (ALICE, ns))
        t.is_(until(alice, "omemo:" + ns), ["p:carol-" + ns, "omemo:" + ns],
              "an OMEMO payload without a body (%s) flushes and goes at once" % ns)

    chat_state(carol, ALICE, "composing")
    carol.ping_server()
    bob.send("<message to='%s' type='chat'><propose xmlns='%s' id='call1'>"
             "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose></message>" % (ALICE, NS_JMI))
    t.is_(until(alice, "call"), ["c:composing:carol", "call"], "a XEP-0353 call proposal flushes and goes at once")

    # a subscription request is important too (it asks the user for a decision)
    pres(bob, "away", "bob-3")
    bob.ping_server()
    dave = connect_login(srv, "dave", PW, resource="d")
    dave.send("<presence type='subscribe' to='alice@localhost'/>")
    t.is_(until(alice, "p:subscribe"), ["p:bob-3", "p:subscribe"], "a subscription request flushes and goes at once")

    pres(carol, "dnd", "carol-2")
    carol.ping_server()
    pres(bob, None, "bob-4")
    bob.ping_server()
    chat_state(carol, ALICE, "active")
    pres(carol, "away", "carol-3")
    carol.ping_server()
    t.is_(quiet(alice), [], "held again after the flush")
    active(alice)
    t.is_(until(alice, "p:carol-3"), ["p:bob-4", "c:active:carol", "p:carol-3"],
          "XEP-0352 §3.2: <active/> flushes the rest in order (latest per contact)")
    pres(bob, "xa", "bob-5")
    t.is_(until(alice, "p:bob-5"), ["p:bob-5"], "active again: presence updates arrive at once")

    # what waits is bounded like the output queue it stands in for: past half of
    # limits.max_output_buffer (64 KiB here) the held stanzas go out
    inactive(alice)
    bulk = "<x xmlns='urn:example:bulk'>%s</x>" % ("x" * 10000)
    rs = [connect_login(srv, "bob", PW, resource="r%d" % i) for i in range(4)]
    for i, c in enumerate(rs):
        c.send("<presence to='%s'><status>big-%d</status>%s</presence>" % (ALICE, i, bulk))
        c.ping_server()
    t.is_(until(alice, "p:big-2") + quiet(alice), ["p:big-0", "p:big-1", "p:big-2"],
          "a presence that would take the held bytes past half of limits.max_output_buffer flushes the others")
    active(alice)
    t.is_(until(alice, "p:big-3"), ["p:big-3"], "... and waits itself until <active/>")
    for c in rs:
        c.end()

    # a session that goes inactive and ends: nothing breaks (what waited is dropped with it)
    inactive(alice)
    pres(bob, "away", "bob-6")
    bob.ping_server()
    alice.end()
    r = bob.ping_server()
    t.ok(r, "the server carries on after an inactive session with held stanzas ended")
    for c in (bob, carol, dave):
        c.end()

    # XEP-0352 defines only <active/> and <inactive/>: anything else in its namespace is not understood
    eve = connect_login(srv, "eve", PW, resource="e")
    eve.send("<unknown xmlns='%s'/>" % NS_CSI)
    res = eve.read_stream_error()
    t.is_(res.condition, "unsupported-stanza-type", "RFC 6120 §4.9.3.24: an unknown element in the CSI namespace "
          "closes the stream with <unsupported-stanza-type/>")


def measure(t, srv):
    """Bytes alice's session gets while CONTACTS contacts change presence len(CHANGES) times each:
    active (what a server without CSI sends an idle phone) and inactive until <active/>."""
    alice = connect_login(srv, "alice", PW, resource="phone")
    alice.presence()
    contacts = [connect_login(srv, "c%d" % i, PW, resource="r") for i in range(CONTACTS)]
    t.ok(befriend(alice, contacts), "alice is subscribed to %d contacts" % CONTACTS)

    def round_(tag):
        for show in CHANGES:
            for i, c in enumerate(contacts):
                pres(c, show, "%s-%s-%d" % (tag, show, i))
        for c in contacts:
            c.ping_server()

    start = len(alice.received)
    round_("a")
    got = after_ping(alice)
    plain = len(alice.received) - start
    t.is_(len([g for g in got if g.startswith("p:a-")]), CONTACTS * len(CHANGES),
          "active: every presence update is delivered (%d)" % (CONTACTS * len(CHANGES)))

    inactive(alice)
    alice.ping_server()
    start = len(alice.received)
    round_("i")
    held = quiet(alice)
    while_inactive = len(alice.received) - start
    t.is_(held, [], "inactive: no presence update is written while the session is inactive")
    active(alice)
    got = [g for g in after_ping(alice) if g.startswith("p:")]
    with_csi = len(alice.received) - start
    t.is_(sorted(got), sorted("p:i-None-%d" % i for i in range(CONTACTS)),
          "<active/>: only the latest presence of each of the %d contacts is delivered" % CONTACTS)
    t.diag("CSI bytes: %d contacts x %d presence changes: %d bytes to an active session (no CSI); "
           "inactive: %d bytes while inactive, %d bytes in all after <active/> (%.1f%%)"
           % (CONTACTS, len(CHANGES), plain, while_inactive, with_csi, 100.0 * with_csi / plain))
    t.ok(with_csi < plain, "inactive until <active/>: fewer bytes than without CSI")
    for c in contacts + [alice]:
        c.end()


def resumed(t, srv):
    """XEP-0352 §5.2 with XEP-0198 (mod_smacks): a resumed session is active again. What CSI held
    goes out after what stream management sends again, in the order it arrived."""
    phone = "frank@localhost/phone"
    frank = SmClient(srv.port("client"), cafile=srv.ca)
    frank.login("frank", PW, resource="phone")
    frank.presence()
    gina = connect_login(srv, "gina", PW, resource="g")
    t.ok(befriend(frank, [gina], "frank@localhost"), "frank is subscribed to gina's presence")
    en = frank.enable(resume=True)
    t.ok(en is not None and en.tag == q(NS_SM, "enabled") and en.get("id"), "frank enables stream management with resumption",
         lambda: el_str(en))
    frank.drain()
    inactive(frank)
    frank.ping_server()
    pres(gina, "away", "gina-1")
    gina.ping_server()
    mark = srv.log_mark()
    frank.close()
    t.ok(srv.wait_log("hibernating", start=mark), "frank's connection is lost; the session hibernates, inactive")
    gina.message(phone, "m-1")          # important: gina-1 goes first into the queue, then m-1
    gina.ping_server()
    pres(gina, "dnd", "gina-2")         # still inactive: held
    gina.ping_server()
    c = SmClient(srv.port("client"), cafile=srv.ca)
    c.login("frank", PW, bind=False)
    c.start_counting(frank.h)
    c.send("<resume xmlns='%s' previd='%s' h='%d'/>" % (NS_SM, en.get("id"), frank.h))
    ans = c.expect(lambda el: el.tag in (q(NS_SM, "resumed"), q(NS_SM, "failed")))
    t.ok(ans is not None and ans.tag == q(NS_SM, "resumed"), "XEP-0198: the session is resumed", lambda: el_str(ans))
    got = [x for x in until(c, "p:gina-2") if x[:2] in ("p:", "m:")]
    t.is_(got, ["p:gina-1", "m:m-1", "p:gina-2"],
          "XEP-0352 §5.2: resumed, what was held comes after what is sent again (XEP-0198), in order")
    pres(gina, "chat", "gina-3")
    t.is_([x for x in until(c, "p:gina-3") if x[:2] in ("p:", "m:")], ["p:gina-3"],
          "XEP-0352 §5.2: the resumed session is active: a presence update arrives at once")
    c.drain()
    c.ack()
    c.ping_server()
    c.end()
    gina.end()


def main(t):
    with Server(t, extra_yaml="limits: {max_output_buffer: 65536}\n") as srv:
        for u in ("alice", "bob", "carol", "dave", "eve", "frank", "gina"):
            srv.adduser("%s@localhost" % u, PW)
        semantics(t, srv)
        resumed(t, srv)
    with Server(t) as srv:
        srv.adduser("alice@localhost", PW)
        for i in range(CONTACTS):
            srv.adduser("c%d@localhost" % i, PW)
        measure(t, srv)


if __name__ == "__main__":
    Tap(timeout=600).main(main)
