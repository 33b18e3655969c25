#!/usr/bin/python3
# tests/integration/test_roster.py: roster management (RFC 6121 §2) and roster versioning (XEP-0237):
# get, set, update, remove, pushes to interested resources, every error case, limits, restarts.
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Tap, Server, connect_login, q, el_str, find_program,  # noqa: E402
                     NS_CLIENT)
from harness import error_type_condition  # noqa: E402

PW = "pw-for-roster"
NS_ROSTER = "jabber:iq:roster"
NS_ROSTERVER = "urn:xmpp:features:rosterver"
MAX_ITEMS = 6
MAX_NAME = 40
D = "@localhost"


def get(c, ver=None, to=None):
    v = "" if ver is None else " ver='%s'" % ver
    return c.iq("get", "<query xmlns='%s'%s/>" % (NS_ROSTER, v), to=to)


def items_of(r):
    """{jid: (name, subscription, ask, sorted groups)} of a roster result, or None without <query/>."""
    qq = r.find(q(NS_ROSTER, "query")) if r is not None else None
    if qq is None:
        return None
    return {i.get("jid"): (i.get("name"), i.get("subscription"), i.get("ask"),
                           tuple(sorted(g.text or "" for g in i.findall(q(NS_ROSTER, "group")))))
            for i in qq.findall(q(NS_ROSTER, "item"))}


def set_item(c, jid, name=None, groups=(), extra="", to=None):
    n = " name='%s'" % name if name is not None else ""
    g = "".join("<group>%s</group>" % x for x in groups)
    return c.iq("set", "<query xmlns='%s'><item jid='%s'%s%s>%s</item></query>" % (NS_ROSTER, jid, n, extra, g),
                to=to)


def remove(c, jid):
    return c.iq("set", "<query xmlns='%s'><item jid='%s' subscription='remove'/></query>" % (NS_ROSTER, jid))


def is_push(el, jid=None):
    if el.tag != q(NS_CLIENT, "iq") or el.get("type") != "set":
        return False
    item = el.find("%s/%s" % (q(NS_ROSTER, "query"), q(NS_ROSTER, "item")))
    return item is not None and (jid is None or item.get("jid") == jid)


def expect_push(c, jid, timeout=None):
    """(the push iq, its item) or (None, None); the push is acknowledged (RFC 6121 §2.1.6)."""
    el = c.expect(lambda e: is_push(e, jid), timeout)
    if el is None:
        return None, None
    c.send("<iq type='result' id='%s'/>" % el.get("id"))
    return el, el.find("%s/%s" % (q(NS_ROSTER, "query"), q(NS_ROSTER, "item")))


def pushes_after_barrier(c):
    c.ping_server()
    got = [e for e in c.inbox if is_push(e)]
    c.inbox = [e for e in c.inbox if not is_push(e)]
    return got


def ok_result(r):
    return r is not None and r.get("type") == "result"


# ---- scenarios -------------------------------------------------------------------------------

def basics(t, srv):
    a1 = connect_login(srv, "alice", PW, resource="one")
    t.ok(a1.features is not None and a1.features.find(q(NS_ROSTERVER, "ver")) is not None,
         "XEP-0237 §2.1: the server advertises roster versioning as a stream feature", el_str(a1.features))
    r = get(a1)
    t.ok(ok_result(r) and items_of(r) == {}, "RFC 6121 §2.2: a new account's roster get returns an empty <query/>",
         el_str(r))
    a2 = connect_login(srv, "alice", PW, resource="two")
    get(a2)
    a3 = connect_login(srv, "alice", PW, resource="three")    # never asks for the roster
    # add
    r = set_item(a1, "bob" + D, name="Bob", groups=("Friends",))
    t.ok(ok_result(r), "RFC 6121 §2.3.2: a roster set adding an item is answered with a result", el_str(r))
    for c, who in ((a1, "the resource that sent the set"), (a2, "another interested resource")):
        push, item = expect_push(c, "bob" + D)
        t.ok(item is not None and item.get("name") == "Bob" and item.get("subscription") == "none" and
             [g.text for g in item.findall(q(NS_ROSTER, "group"))] == ["Friends"],
             "RFC 6121 §2.3.2: the roster push with the new item goes to %s" % who, el_str(push))
        t.ok(push is not None and push.get("from") in (None, "alice" + D) and push.get("to") == c.jid,
             "RFC 6121 §2.1.6: the push comes from the user's bare JID (or none) to the full JID", el_str(push))
    t.ok(not pushes_after_barrier(a3), "RFC 6121 §2.1.6: no push to a resource that did not request the roster")
    t.is_(items_of(get(a1)), {"bob" + D: ("Bob", "none", None, ("Friends",))},
          "RFC 6121 §2.2: the roster get returns the added item")
    # update
    r = set_item(a2, "bob" + D, name="Robert", groups=("Work", "Friends"))
    push, item = expect_push(a1, "bob" + D)
    t.ok(ok_result(r) and item is not None and item.get("name") == "Robert",
         "RFC 6121 §2.4: updating the name pushes the new state", el_str(push))
    expect_push(a2, "bob" + D)
    t.is_(items_of(get(a1)), {"bob" + D: ("Robert", "none", None, ("Friends", "Work"))},
          "RFC 6121 §2.4: the update replaces name and groups")
    r = set_item(a1, "bob" + D, name="Robert")
    expect_push(a1, "bob" + D)
    expect_push(a2, "bob" + D)
    t.is_(items_of(get(a1)), {"bob" + D: ("Robert", "none", None, ())},
          "RFC 6121 §2.4.2: a set without <group/> removes the item from every group")
    r = set_item(a1, "carol" + D, extra=" subscription='both' ask='subscribe'")
    expect_push(a1, "carol" + D)
    expect_push(a2, "carol" + D)
    t.is_((items_of(get(a1)) or {}).get("carol" + D), (None, "none", None, ()),
          "RFC 6121 §2.1.2.5: in a roster set, subscription values other than 'remove' (and 'ask') are ignored")
    # remove
    r = remove(a2, "carol" + D)
    t.ok(ok_result(r), "RFC 6121 §2.5.2: removing an item is answered with a result", el_str(r))
    for c in (a1, a2):
        push, item = expect_push(c, "carol" + D)
        t.ok(item is not None and item.get("subscription") == "remove",
             "RFC 6121 §2.5.2: the removal is pushed with subscription='remove' to %s" % c.jid, el_str(push))
    t.ok("carol" + D not in (items_of(get(a1)) or {"carol" + D: 1}), "RFC 6121 §2.5.2: the removed item is gone")
    t.is_(error_type_condition(remove(a1, "nobody" + D)), ("cancel", "item-not-found"),
          "RFC 6121 §2.5.3: removing an item that is not in the roster gives <item-not-found/>")
    for c in (a1, a2, a3):
        c.end()


def errors(t, srv):
    a = connect_login(srv, "alice", PW, resource="err")
    get(a)
    two = ("<query xmlns='%s'><item jid='x%s'/><item jid='y%s'/></query>" % (NS_ROSTER, D, D))
    t.is_(error_type_condition(a.iq("set", two)), ("modify", "bad-request"),
          "RFC 6121 §2.3.3: a roster set with more than one item gives <bad-request/>")
    t.is_(error_type_condition(a.iq("set", "<query xmlns='%s'/>" % NS_ROSTER)), ("modify", "bad-request"),
          "RFC 6121 §2.1.5: a roster set without an item gives <bad-request/>")
    t.is_(error_type_condition(set_item(a, "dup" + D, groups=("G", "G"))), ("modify", "bad-request"),
          "RFC 6121 §2.3.3: duplicate groups give <bad-request/>")
    t.is_(error_type_condition(set_item(a, "empty" + D, groups=("",))), ("modify", "not-acceptable"),
          "RFC 6121 §2.3.3: an empty <group/> gives <not-acceptable/>")
    t.is_(error_type_condition(set_item(a, "long" + D, name="n" * (MAX_NAME + 1))), ("modify", "not-acceptable"),
          "RFC 6121 §2.3.3: a name over the configured limit (roster.max_name_length) gives <not-acceptable/>")
    t.ok(ok_result(set_item(a, "long" + D, name="n" * MAX_NAME)), "a name of exactly the limit is accepted")
    t.is_(error_type_condition(set_item(a, "longgroup" + D, groups=("g" * (MAX_NAME + 1),))), ("modify", "not-acceptable"),
          "RFC 6121 §2.3.3: a group name over the configured limit gives <not-acceptable/>")
    t.is_(error_type_condition(set_item(a, "bad@@jid" + D)), ("modify", "not-acceptable"),
          "RFC 6121 §2.3.3: an item whose JID is invalid gives <not-acceptable/>")
    t.is_(error_type_condition(a.iq("set", "<query xmlns='%s'><item name='x'/></query>" % NS_ROSTER)), ("modify", "bad-request"),
          "RFC 6121 §2.1.2.1: an item without the required 'jid' gives <bad-request/>")
    t.is_(error_type_condition(get(a, to="bob" + D)), ("auth", "forbidden"),
          "RFC 6121 §2.3.3: a roster get addressed to another account is refused with <forbidden/>")
    t.is_(error_type_condition(set_item(a, "x" + D, to="bob" + D)), ("auth", "forbidden"),
          "RFC 6121 §2.3.3: a roster set by another account is refused with <forbidden/>")
    t.ok(ok_result(get(a, to="alice" + D)), "RFC 6121 §2.1.3: a roster get to the user's own bare JID is fine")
    remove(a, "long" + D)
    a.end()


def limits(t, srv):
    d = connect_login(srv, "dora", PW, resource="lim")
    get(d)
    for i in range(MAX_ITEMS):
        set_item(d, "c%d%s" % (i, D))
    t.is_(len(items_of(get(d)) or {}), MAX_ITEMS, "roster.max_items items can be added")
    t.is_(error_type_condition(set_item(d, "one-more" + D)), ("wait", "resource-constraint"),
          "RFC 6120 §8.3.3.18: an item beyond roster.max_items gives <resource-constraint/>")
    t.ok(ok_result(set_item(d, "c0" + D, name="renamed")), "an existing item can still be updated at the limit")
    remove(d, "c1" + D)
    t.ok(ok_result(set_item(d, "one-more" + D)), "after a removal there is room for a new item")
    d.end()


def versioning(t, srv):
    e = connect_login(srv, "erin", PW, resource="v")
    r = get(e, ver="")
    qq = r.find(q(NS_ROSTER, "query")) if r is not None else None
    t.ok(qq is not None and qq.get("ver") is not None and items_of(r) == {},
         "XEP-0237 §2.3: ver='' gets the full roster with its version", el_str(r))
    v0 = qq.get("ver") if qq is not None else ""
    for j, n in (("a" + D, "A"), ("b" + D, "B"), ("c" + D, "C")):
        set_item(e, j, name=n)
        push, _ = expect_push(e, j)
        t.ok(push is not None and push.find(q(NS_ROSTER, "query")).get("ver") not in (None, v0),
             "XEP-0237 §2.5: a push to a versioning client carries the new version", el_str(push))
    r = get(e, ver="")
    full = r.find(q(NS_ROSTER, "query"))
    v1 = full.get("ver")
    r = get(e, ver=v1)
    t.ok(ok_result(r) and r.find(q(NS_ROSTER, "query")) is None,
         "XEP-0237 §2.4: with the current version the result is empty (no <query/>)", el_str(r))
    t.ok(not pushes_after_barrier(e), "XEP-0237 §2.4: and no pushes follow when the client is up to date")
    # changes since v1: b renamed, c removed, d added
    set_item(e, "b" + D, name="B2")
    remove(e, "c" + D)
    set_item(e, "d" + D, name="D")
    pushes_after_barrier(e)
    r = get(e, ver=v1)
    t.ok(ok_result(r) and r.find(q(NS_ROSTER, "query")) is None,
         "XEP-0237 §2.4: with an older known version the result is empty", el_str(r))
    got = pushes_after_barrier(e)
    seen = [(p.find(q(NS_ROSTER, "query"))[0].get("jid"), p.find(q(NS_ROSTER, "query"))[0].get("subscription"))
            for p in got]
    t.is_(sorted(seen), sorted([("b" + D, "none"), ("c" + D, "remove"), ("d" + D, "none")]),
          "XEP-0237 §2.4: only the changes since that version follow as pushes, removals included")
    vers = [int(p.find(q(NS_ROSTER, "query")).get("ver")) for p in got]
    current = get(e, ver="").find(q(NS_ROSTER, "query")).get("ver")
    t.ok(vers == sorted(vers) and vers and str(vers[-1]) == current,
         "XEP-0237 §2.4: the pushes come in order and the last one carries the current version", repr(vers))
    r = get(e, ver="not-a-version-of-ours")
    t.is_(sorted(items_of(r) or {}), ["a" + D, "b" + D, "d" + D],
          "XEP-0237 §2.4: an unknown version gets the full roster")
    r = get(e, ver=str(int(current) + 100))
    t.ok(items_of(r) is not None and r.find(q(NS_ROSTER, "query")).get("ver") == current,
         "XEP-0237 §2.4: a version from the future gets the full roster with the current version", el_str(r))
    plain = connect_login(srv, "erin", PW, resource="plain")
    r = get(plain)
    t.ok(r.find(q(NS_ROSTER, "query")).get("ver") is None,
         "XEP-0237 §2.2: a client that sent no 'ver' gets no 'ver' in the result", el_str(r))
    set_item(e, "a" + D, name="A2")
    push, _ = expect_push(plain, "a" + D)
    t.ok(push is not None and push.find(q(NS_ROSTER, "query")).get("ver") is None,
         "XEP-0237: pushes to a client that does not version carry no 'ver'", el_str(push))
    e.end()
    plain.end()
    return current


def remove_with_subscriptions(t, srv):
    """RFC 6121 §2.5.2: removing an item cancels the subscriptions in both directions."""
    g = connect_login(srv, "gina", PW, resource="r")
    h = connect_login(srv, "hugo", PW, resource="r")
    for c in (g, h):
        get(c)
        c.presence()
    for x, yj, y, xj in ((g, "hugo" + D, h, "gina" + D), (h, "gina" + D, g, "hugo" + D)):
        x.send("<presence type='subscribe' to='%s'/>" % yj)
        y.expect(lambda e: e.tag == q(NS_CLIENT, "presence") and e.get("type") == "subscribe")
        y.send("<presence type='subscribed' to='%s'/>" % xj)
    g.ping_server()
    h.ping_server()
    g.inbox, h.inbox = [], []
    r = remove(g, "hugo" + D)
    t.ok(ok_result(r), "RFC 6121 §2.5.2: removing a contact with a mutual subscription succeeds", el_str(r))
    _, item = expect_push(g, "hugo" + D)
    t.ok(item is not None and item.get("subscription") == "remove", "RFC 6121 §2.5.2: the removal is pushed")
    for typ in ("unsubscribe", "unsubscribed"):
        p = h.expect(lambda e: e.tag == q(NS_CLIENT, "presence") and e.get("type") == typ)
        t.ok(p is not None and p.get("from") == "gina" + D,
             "RFC 6121 §2.5.2: the contact receives presence type '%s' from the user's bare JID" % typ, el_str(p))
    g.ping_server()
    subs = [p.find(q(NS_ROSTER, "query"))[0].get("subscription") for p in pushes_after_barrier(h)]
    t.ok(subs and subs[-1] == "none", "RFC 6121 §3.2.3/§3.3.3: the contact's item ends in subscription 'none'",
         repr(subs))
    p = h.expect(lambda e: e.tag == q(NS_CLIENT, "presence") and e.get("type") == "unavailable"
                 and e.get("from") == "gina" + D + "/r")
    t.ok(p is not None, "RFC 6121 §3.2.2: the former subscriber gets the user's unavailable presence")
    g.end()
    h.end()


def restart(t, srv, version):
    srv.stop()
    srv.start()
    e = connect_login(srv, "erin", PW, resource="after")
    r = get(e, ver="")
    t.is_(sorted(items_of(r) or {}), ["a" + D, "b" + D, "d" + D], "RFC 6121 §2: the roster survives a restart")
    t.ok(r is not None and int(r.find(q(NS_ROSTER, "query")).get("ver")) > int(version),
         "XEP-0237: the version survives a restart and keeps growing", el_str(r))
    e.end()


def main(t):
    extra = "roster:\n  max_items: %d\n  max_name_length: %d\n" % (MAX_ITEMS, MAX_NAME)
    with Server(t, extra_yaml=extra) as srv:
        for u in ("alice", "bob", "dora", "erin", "gina", "hugo"):
            srv.adduser(u + D, PW)
        t.run(basics, t, srv)
        t.run(errors, t, srv)
        t.run(limits, t, srv)
        v = t.run(versioning, t, srv)
        t.run(remove_with_subscriptions, t, srv)
        if v is not None:
            t.run(restart, t, srv, v)
    # a bad roster section stops the server at start-up, naming the key
    bad = Server(t, extra_yaml="roster:\n  max_items: 0\n  bogus: 1\n", start=False)
    try:
        out = subprocess.run([find_program("civitasd"), "--config", bad.config], capture_output=True, text=True,
                             timeout=30, cwd=bad.dir, stdin=subprocess.DEVNULL)
        text = out.stdout + out.stderr
        t.ok(out.returncode != 0 and "max_items" in text and "bogus" in text,
             "roster config: an out-of-range max_items and an unknown key are reported and refused", text)
    finally:
        shutil.rmtree(bad.dir, ignore_errors=True)


if __name__ == "__main__":
    Tap().main(main)
