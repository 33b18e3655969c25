#!/usr/bin/python3
# tests/integration/test_presence.py: presence subscriptions and presence (RFC 6121 §3, §4, Appendix A):
# every state transition seen through roster pushes, pending requests, pre-approval, probes, unavailable.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Tap, Server, connect_login, q, el_str, local_name, run_strophe,  # noqa: E402
                     NS_CLIENT, NS_STANZAS)

PW = "pw-for-presence"
NS_ROSTER = "jabber:iq:roster"
NS_DELAY = "urn:xmpp:delay"
NS_PREAPPROVAL = "urn:xmpp:features:pre-approval"
D = "@localhost"


# ---- helpers ---------------------------------------------------------------------------------

def login(srv, user, resource, roster=True, available=True, priority=None):
    """A logged-in client that requested its roster (an interested resource, RFC 6121 §2.1.6) and
    sent initial presence."""
    c = connect_login(srv, user, PW, resource=resource)
    if roster:
        r = c.iq("get", "<query xmlns='%s'/>" % NS_ROSTER)
        if r is None or r.get("type") != "result":
            raise AssertionError("roster get failed: %s" % el_str(r))
    if available:
        c.presence(priority=priority)
    return c


def is_push(el, jid=None):
    if el.tag != q(NS_CLIENT, "iq") or el.get("type") != "set":
        return False
    item = el.find("%s/%s" % (q(NS_ROSTER, "query"), q(NS_ROSTER, "item")))
    return item is not None and (jid is None or item.get("jid") == jid)


def expect_push(c, jid, timeout=None):
    """The next roster push about jid (answered with a result, as RFC 6121 §2.1.6 asks), as
    (subscription, ask, approved), or None."""
    el = c.expect(lambda e: is_push(e, jid), timeout)
    if el is None:
        return None
    c.send("<iq type='result' id='%s'/>" % el.get("id"))
    item = el.find("%s/%s" % (q(NS_ROSTER, "query"), q(NS_ROSTER, "item")))
    return (item.get("subscription"), item.get("ask"), item.get("approved"))


def is_pres(el, from_=None, type_=None, bare_from=False):
    if el.tag != q(NS_CLIENT, "presence") or el.get("type") != type_:
        return False
    f = el.get("from") or ""
    if bare_from:
        f = f.split("/", 1)[0]
    return from_ is None or f == from_


def expect_pres(c, from_, type_=None, bare_from=False, timeout=None):
    return c.expect(lambda e: is_pres(e, from_, type_, bare_from), timeout)


def settle(*clients):
    """A ping round trip on every client: whatever the server sent because of stanzas sent before
    has reached each client's inbox (the server handles stanzas one at a time, in order)."""
    for c in clients:
        c.ping_server()


def none_of(c, pred):
    return not any(pred(e) for e in c.inbox)


def drain(*clients):
    settle(*clients)
    for c in clients:
        c.inbox = []


def send_sub(c, type_, to, extra=""):
    c.send("<presence type='%s' to='%s'%s/>" % (type_, to, extra))


def roster_items(c):
    r = c.iq("get", "<query xmlns='%s'/>" % NS_ROSTER)
    qq = r.find(q(NS_ROSTER, "query")) if r is not None else None
    if qq is None:
        return None
    return {i.get("jid"): (i.get("subscription"), i.get("ask"), i.get("approved"))
            for i in qq.findall(q(NS_ROSTER, "item"))}


def mutual(a, b, a_jid, b_jid):
    """Make a and b subscribed to each other (both online, interested and available)."""
    for x, y, yj, xj in ((a, b, b_jid, a_jid), (b, a, a_jid, b_jid)):
        send_sub(x, "subscribe", yj)
        y.expect(lambda e: is_pres(e, xj, "subscribe"))
        send_sub(y, "subscribed", xj)
    drain(a, b)


# ---- scenarios -------------------------------------------------------------------------------

def features(t, srv):
    c = connect_login(srv, "alice", PW, resource="f")
    t.ok(c.features is not None and c.features.find(q(NS_PREAPPROVAL, "sub")) is not None,
         "RFC 6121 §3.4: the server advertises pre-approval with <sub xmlns='%s'/>" % NS_PREAPPROVAL,
         el_str(c.features))
    c.end()


def subscription_flow(t, srv):
    a = login(srv, "alice", "home")
    b = login(srv, "bob", "desk")
    drain(a, b)
    # alice -> bob: subscribe
    send_sub(a, "subscribe", "bob" + D, extra=" id='sub1'")
    t.is_(expect_push(a, "bob" + D), ("none", "subscribe", None),
          "RFC 6121 §3.1.2: the user's roster push shows subscription 'none' with ask='subscribe' (None + Pending Out)")
    p = expect_pres(b, "alice" + D, "subscribe")
    t.ok(p is not None, "RFC 6121 §3.1.3: the contact's available resource receives the subscription request",
         b.dump if hasattr(b, "dump") else None)
    t.is_(p.get("from") if p is not None else None, "alice" + D,
          "RFC 6121 §3.1.2: the request is stamped with the user's bare JID as 'from'")
    settle(a, b)
    t.ok(none_of(b, lambda e: is_push(e, "alice" + D)),
         "RFC 6121 Appendix A.3.1: no roster push for the contact in state None + Pending In")
    items = roster_items(b)
    t.ok(items is not None and "alice" + D not in items,
         "RFC 6121 Appendix A: an item that is only None + Pending In is not in the contact's roster")
    # bob approves
    send_sub(b, "subscribed", "alice" + D)
    t.is_(expect_push(b, "alice" + D), ("from", None, None),
          "RFC 6121 §3.1.5: the approving contact's roster push shows subscription 'from'")
    p = expect_pres(a, "bob" + D, "subscribed")
    t.ok(p is not None, "RFC 6121 §3.1.6: the user receives the approval (presence type='subscribed')")
    t.is_(expect_push(a, "bob" + D), ("to", None, None),
          "RFC 6121 §3.1.6: the user's roster push shows subscription 'to' without ask")
    p = expect_pres(a, "bob" + D + "/desk")
    t.ok(p is not None, "RFC 6121 §3.1.5: after approving, the contact's available resource sends its presence to the user")
    # bob -> alice
    send_sub(b, "subscribe", "alice" + D)
    t.is_(expect_push(b, "alice" + D), ("from", "subscribe", None),
          "RFC 6121 Appendix A.2.1: From -> From + Pending Out (push with ask='subscribe')")
    t.ok(expect_pres(a, "bob" + D, "subscribe") is not None,
         "RFC 6121 Appendix A.3.1: a request in state To is delivered (To -> To + Pending In)")
    send_sub(a, "subscribed", "bob" + D)
    t.is_(expect_push(a, "bob" + D), ("both", None, None),
          "RFC 6121 Appendix A.2.2: To + Pending In -> Both (push)")
    t.is_(expect_push(b, "alice" + D), ("both", None, None),
          "RFC 6121 Appendix A.3.2: From + Pending Out -> Both on the approval (push)")
    t.ok(expect_pres(b, "alice" + D + "/home") is not None,
         "RFC 6121 §3.1.5: bob receives alice's presence once she approved")
    # presence broadcast of a subsequent presence
    a.send("<presence><show>away</show><status>lunch</status></presence>")
    p = expect_pres(b, "alice" + D + "/home")
    t.ok(p is not None and p.findtext(q(NS_CLIENT, "status")) == "lunch",
         "RFC 6121 §4.4.2: a subsequent presence is broadcast in full to a subscribed contact", el_str(p))
    p = expect_pres(a, "alice" + D + "/home")
    t.ok(p is not None and p.findtext(q(NS_CLIENT, "status")) == "lunch",
         "RFC 6121 §4.4.2: the presence also goes to the user's own available resource, the sender included")
    # alice unsubscribes from bob
    drain(a, b)
    send_sub(a, "unsubscribe", "bob" + D)
    t.is_(expect_push(a, "bob" + D), ("from", None, None),
          "RFC 6121 §3.3.2 / A.2.3: Both -> From for the user who unsubscribes (push)")
    t.ok(expect_pres(b, "alice" + D, "unsubscribe") is not None,
         "RFC 6121 §3.3.3: the contact receives the unsubscribe")
    t.is_(expect_push(b, "alice" + D), ("to", None, None),
          "RFC 6121 §3.3.3 / A.3.3: Both -> To for the contact (push)")
    p = expect_pres(a, "bob" + D + "/desk", "unavailable")
    t.ok(p is not None, "RFC 6121 §3.3.3: the contact's server sends unavailable presence from each available resource")
    # alice cancels bob's subscription
    send_sub(a, "unsubscribed", "bob" + D)
    t.is_(expect_push(a, "bob" + D), ("none", None, None),
          "RFC 6121 §3.2.2 / A.2.4: From -> None for the user who cancels (push)")
    t.ok(expect_pres(b, "alice" + D, "unsubscribed") is not None,
         "RFC 6121 §3.2.3: the former subscriber receives the unsubscribed")
    t.is_(expect_push(b, "alice" + D), ("none", None, None), "RFC 6121 §3.2.3 / A.3.4: To -> None (push)")
    t.ok(expect_pres(b, "alice" + D + "/home", "unavailable") is not None,
         "RFC 6121 §3.2.2: the user's server sends unavailable presence from each resource to the former subscriber")
    # a request to a full JID is handled as to the bare JID
    send_sub(a, "subscribe", "bob" + D + "/desk")
    t.is_(expect_push(a, "bob" + D), ("none", "subscribe", None), "RFC 6121 Appendix A.2.1: None -> None + Pending Out")
    p = expect_pres(b, "alice" + D, "subscribe")
    t.ok(p is not None and p.get("to") == "bob" + D,
         "RFC 6121 §3.1.2: a subscription request to a full JID is treated as sent to the bare JID", el_str(p))
    # the contact denies it
    send_sub(b, "unsubscribed", "alice" + D)
    t.ok(expect_pres(a, "bob" + D, "unsubscribed") is not None,
         "RFC 6121 §3.1.4: a denial reaches the requesting user")
    t.is_(expect_push(a, "bob" + D), ("none", None, None),
          "RFC 6121 Appendix A.3.4: None + Pending Out -> None on a denial (push without ask)")
    a.end()
    b.end()


def pending_request(t, srv):
    d = login(srv, "dave", "r1")
    send_sub(d, "subscribe", "carol" + D)
    expect_push(d, "carol" + D)
    settle(d)
    c = login(srv, "carol", "r1")
    p = expect_pres(c, "dave" + D, "subscribe")
    t.ok(p is not None, "RFC 6121 §3.1.3: a request to an offline contact is delivered when it becomes available")
    c.end()
    c = login(srv, "carol", "r2", available=False)
    settle(c)
    t.ok(none_of(c, lambda e: is_pres(e, "dave" + D, "subscribe")),
         "RFC 6121 §3.1.3: nothing is delivered before the resource sends initial presence")
    c.presence()
    t.ok(expect_pres(c, "dave" + D, "subscribe") is not None,
         "RFC 6121 §3.1.3: the request is delivered again at each new available resource until answered")
    send_sub(d, "subscribe", "carol" + D)
    settle(d, c)
    t.ok(none_of(c, lambda e: is_pres(e, "dave" + D, "subscribe")),
         "RFC 6121 Appendix A.3.1: a second request in None + Pending In is not delivered")
    send_sub(c, "unsubscribed", "dave" + D)
    t.ok(expect_pres(d, "carol" + D, "unsubscribed") is not None,
         "RFC 6121 §3.1.4: a denial of a stored request is routed to the requester")
    t.is_(expect_push(d, "carol" + D), ("none", None, None), "RFC 6121 Appendix A.3.4: None + Pending Out -> None")
    c.end()
    c = login(srv, "carol", "r3")
    settle(c)
    t.ok(none_of(c, lambda e: is_pres(e, "dave" + D, "subscribe")),
         "RFC 6121 §3.1.3: a denied request is not delivered any more")
    c.end()
    d.end()


def preapproval(t, srv):
    e = login(srv, "erin", "r")
    f = login(srv, "frank", "r")
    drain(e, f)
    send_sub(e, "subscribed", "frank" + D)
    t.is_(expect_push(e, "frank" + D), ("none", None, "true"),
          "RFC 6121 §3.4.2: a pre-approval adds the contact with approved='true' (push)")
    settle(e, f)
    t.ok(none_of(f, lambda x: is_pres(x, "erin" + D, "subscribed")),
         "RFC 6121 §3.4.2: the pre-approval itself is not routed to the contact")
    t.is_((roster_items(e) or {}).get("frank" + D), ("none", None, "true"),
          "RFC 6121 §3.4: the roster result carries approved='true'")
    send_sub(f, "subscribe", "erin" + D)
    t.is_(expect_push(f, "erin" + D), ("none", "subscribe", None), "RFC 6121 §3.1.2: the requester's push (pending out)")
    t.ok(expect_pres(f, "erin" + D, "subscribed") is not None,
         "RFC 6121 §3.4.2: a pre-approved request is approved by the contact's server at once")
    t.is_(expect_push(f, "erin" + D), ("to", None, None), "RFC 6121 §3.4.2: the requester's subscription becomes 'to'")
    t.is_(expect_push(e, "frank" + D), ("from", None, None),
          "RFC 6121 §3.4.2: the pre-approving user's item becomes 'from' and loses approved")
    settle(f, e)
    t.ok(none_of(e, lambda x: is_pres(x, "frank" + D, "subscribe")),
         "RFC 6121 §3.4.2: the pre-approved request is not delivered to the user")
    # cancelling a pre-approval
    send_sub(f, "subscribed", "erin" + D)
    t.is_(expect_push(f, "erin" + D), ("to", None, "true"), "RFC 6121 §3.4: pre-approval in state To (push)")
    send_sub(f, "unsubscribed", "erin" + D)
    t.is_(expect_push(f, "erin" + D), ("to", None, None),
          "RFC 6121 §3.4.2: an unsubscribed cancels the pre-approval (push without approved)")
    settle(f, e)
    t.ok(none_of(e, lambda x: is_pres(x, "frank" + D, "unsubscribed")),
         "RFC 6121 Appendix A.2.4: unsubscribed in state To changes nothing for the contact and is not routed")
    e.end()
    f.end()


def ignored(t, srv):
    g = login(srv, "gus", "r")
    h = login(srv, "hank", "r")
    drain(g, h)
    send_sub(g, "unsubscribe", "hank" + D)
    settle(g, h)
    t.ok(none_of(h, lambda e: e.tag == q(NS_CLIENT, "presence") or is_push(e)),
         "RFC 6121 Appendix A.3.3: an unsubscribe in state None is neither delivered nor pushed")
    t.ok(none_of(g, lambda e: is_push(e)), "RFC 6121 Appendix A.2.3: unsubscribe in state None changes nothing (no push)")
    send_sub(g, "unsubscribed", "hank" + D)
    settle(g, h)
    t.ok(none_of(h, lambda e: e.tag == q(NS_CLIENT, "presence") or is_push(e)),
         "RFC 6121 Appendix A.2.4: unsubscribed in state None is not routed")
    mutual(g, h, "gus" + D, "hank" + D)
    send_sub(g, "subscribed", "hank" + D)
    settle(g, h)
    t.ok(none_of(h, lambda e: is_pres(e, "gus" + D, "subscribed")) and none_of(g, lambda e: is_push(e)),
         "RFC 6121 Appendix A.2.2: subscribed in state Both is not routed and changes nothing")
    send_sub(g, "subscribe", "hank" + D)
    settle(g, h)
    t.ok(none_of(g, lambda e: is_pres(e, "hank" + D, "subscribed")),
         "RFC 6121 Appendix A.3.2: the server's automatic 'subscribed' (§3.1.3) reaching a user in state Both "
         "is not delivered")
    t.ok(none_of(h, lambda e: is_pres(e, "gus" + D, "subscribe")) and none_of(h, lambda e: is_push(e)),
         "RFC 6121 Appendix A.3.1: a request in state Both is not delivered to the contact")
    t.ok(none_of(g, lambda e: is_push(e)), "RFC 6121 Appendix A.2.1: subscribe in state Both changes nothing (no push)")
    send_sub(g, "subscribe", "nobody" + D)
    t.is_(expect_push(g, "nobody" + D), ("none", "subscribe", None),
          "RFC 6121 §3.1.2: a request to an account that does not exist still shows as pending out")
    settle(g)
    t.ok(none_of(g, lambda e: e.tag == q(NS_CLIENT, "presence") and e.get("from", "").startswith("nobody")),
         "RFC 6121 §8.5.1: a subscription request to an account that does not exist is silently ignored")
    g.end()
    h.end()


def probes_and_unavailable(t, srv):
    k = login(srv, "kim", "a")
    l1 = login(srv, "lee", "one")
    mutual(k, l1, "kim" + D, "lee" + D)
    k.end()
    settle(l1)
    l1.inbox = []
    k = login(srv, "kim", "b", available=False)
    k.send("<presence><status>back</status></presence>")
    p = expect_pres(l1, "kim" + D + "/b")
    t.ok(p is not None and p.findtext(q(NS_CLIENT, "status")) == "back",
         "RFC 6121 §4.2.2: initial presence is broadcast to the contacts subscribed to the user", el_str(p))
    p = expect_pres(k, "lee" + D + "/one")
    t.ok(p is not None, "RFC 6121 §4.3.2: the probe is answered with the presence of the contact's available resource")
    # a second resource of kim
    k2 = login(srv, "kim", "c", available=False)
    k2.presence(priority=3)
    t.ok(expect_pres(k2, "kim" + D + "/b") is not None,
         "RFC 6121 §4.2.2: a new resource receives the presence of the user's other available resources")
    p = expect_pres(k, "kim" + D + "/c")
    t.ok(p is not None and p.findtext(q(NS_CLIENT, "priority")) == "3",
         "RFC 6121 §4.2.2: the other resources of the user receive the new resource's initial presence")
    # explicit unavailable
    drain(k, k2, l1)
    k2.send("<presence type='unavailable'><status>gone</status></presence>")
    p = expect_pres(l1, "kim" + D + "/c", "unavailable")
    t.ok(p is not None and p.findtext(q(NS_CLIENT, "status")) == "gone",
         "RFC 6121 §4.5.2: unavailable presence is broadcast in full to subscribed contacts")
    t.ok(expect_pres(k, "kim" + D + "/c", "unavailable") is not None,
         "RFC 6121 §4.5.2: and to the user's other available resources")
    # clean disconnect
    k2.end()
    l1.end()
    p = expect_pres(k, "lee" + D + "/one", "unavailable")
    t.ok(p is not None, "RFC 6121 §4.5.2: a clean stream close makes the server broadcast unavailable presence")
    # probe while the contact is offline: the last unavailable presence, with a delay
    k.end()
    k = login(srv, "kim", "d")
    p = expect_pres(k, "lee" + D + "/one", "unavailable")
    t.ok(p is not None and p.find(q(NS_DELAY, "delay")) is not None,
         "RFC 6121 §4.3.2: a probe to a contact without available resources is answered with its last "
         "unavailable presence (XEP-0203 delay)", el_str(p))
    # unclean disconnect
    l2 = login(srv, "lee", "two")
    t.ok(expect_pres(k, "lee" + D + "/two") is not None, "lee's new resource is seen by kim")
    l2.sock.close()             # no </stream:stream>: the connection just drops
    t.ok(expect_pres(k, "lee" + D + "/two", "unavailable") is not None,
         "RFC 6121 §4.5.2: a dropped connection also makes the server broadcast unavailable presence")
    # an unsubscribed user's probe-like request is not answered with presence
    k.end()


def directed(t, srv):
    m = login(srv, "mo", "r")
    n = login(srv, "nina", "r")
    drain(m, n)
    m.send("<presence to='nina%s/r'><status>hi</status></presence>" % D)
    p = expect_pres(n, "mo" + D + "/r")
    t.ok(p is not None and p.findtext(q(NS_CLIENT, "status")) == "hi",
         "RFC 6121 §4.6.2: directed presence is delivered to an entity outside the roster")
    m.send("<presence><status>broadcast</status></presence>")
    settle(m, n)
    t.ok(none_of(n, lambda e: is_pres(e, "mo" + D + "/r")),
         "RFC 6121 §4.6.2: a later presence broadcast does not go to the directed-presence recipient")
    m.sock.close()
    t.ok(expect_pres(n, "mo" + D + "/r", "unavailable") is not None,
         "RFC 6121 §4.6.2: when the resource goes away, the directed-presence recipient gets unavailable presence")
    m = login(srv, "mo", "s")
    m.send("<presence to='nina%s/r'/>" % D)
    t.ok(expect_pres(n, "mo" + D + "/s") is not None, "directed presence again")
    m.send("<presence type='unavailable' to='nina%s/r'/>" % D)
    t.ok(expect_pres(n, "mo" + D + "/s", "unavailable") is not None,
         "RFC 6121 §4.6.2: directed unavailable presence is delivered")
    m.send("<presence type='unavailable'/>")
    settle(m, n)
    t.ok(none_of(n, lambda e: is_pres(e, "mo" + D + "/s", "unavailable")),
         "RFC 6121 §4.6.2: after directed unavailable, the unavailable broadcast does not go there again")
    m.end()
    n.end()


def priority(t, srv):
    hi = login(srv, "olga", "zero", priority=0)
    neg = login(srv, "olga", "neg", priority=-1)
    s = login(srv, "pete", "r")
    settle(hi, neg)
    s.message("olga" + D, "to the bare jid")
    t.ok(hi.expect_message("to the bare jid") is not None,
         "RFC 6121 §8.5.2.1.1: a bare-JID message reaches the resource with non-negative priority")
    s.message(neg.jid, "barrier")
    t.ok(neg.expect_message("barrier") is not None, "barrier message to the negative-priority resource")
    t.ok(not any(x.findtext(q(NS_CLIENT, "body")) == "to the bare jid" for x in neg.messages()),
         "RFC 6121 §4.7.2.3: a resource with negative priority never receives messages sent to the bare JID")
    for c in (hi, neg, s):
        c.end()


def presence_error(t, srv):
    o = login(srv, "oscar", "r")
    p = login(srv, "paula", "r")
    mutual(o, p, "oscar" + D, "paula" + D)
    p.send("<presence type='error' to='oscar%s/r'><error type='cancel'>"
           "<service-unavailable xmlns='%s'/></error></presence>" % (D, NS_STANZAS))
    e = expect_pres(o, "paula" + D + "/r", "error")
    t.ok(e is not None, "RFC 6121 §4.7.2: a presence error addressed to a full JID is delivered to that resource")
    o.send("<presence><status>after error</status></presence>")
    settle(o, p)
    t.ok(none_of(p, lambda x: is_pres(x, "oscar" + D + "/r")),
         "RFC 6121 §4.4.2/§4.5.2: no further presence goes to a contact that answered with a presence error")
    o2 = login(srv, "oscar", "other")
    t.ok(expect_pres(p, "oscar" + D + "/other") is not None,
         "the error suppresses broadcasts of that session only: another resource's presence still arrives")
    for c in (o, o2, p):
        c.end()


def strophe(t, srv):
    rc, lines, err = run_strophe(["--jid", "quinn@localhost/st", "--password", PW, "--port", str(srv.port("client")),
                                  "--cafile", srv.ca, "--presence", "--iq", "get", "quinn@localhost", NS_ROSTER])
    t.ok(rc == 0 and any(l.startswith("iq-result") and NS_ROSTER in l for l in lines),
         "RFC 6121 §2.2: a libstrophe client sends initial presence and gets its roster", "\n".join(lines) + err)


def main(t):
    with Server(t) as srv:
        for u in ("alice", "bob", "carol", "dave", "erin", "frank", "gus", "hank", "kim", "lee", "mo", "nina",
                  "olga", "pete", "oscar", "paula", "quinn"):
            srv.adduser(u + D, PW)
        for fn in (features, subscription_flow, pending_request, preapproval, ignored, probes_and_unavailable,
                   directed, priority, presence_error, strophe):
            t.run(fn, t, srv)


if __name__ == "__main__":
    Tap().main(main)
