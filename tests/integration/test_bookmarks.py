#!/usr/bin/python3
# tests/integration/test_bookmarks.py: XEP-0402 PEP native bookmarks (urn:xmpp:bookmarks:1) in mod_pep and
# XEP-0411 compatibility: XEP-0049 private storage and the XEP-0048 PEP node storage:bookmarks kept in sync
# with the 0402 node both ways, #compat and #compat-pep advertised; raw stanzas and slixmpp (xep_0048 over
# xep_0049 and xep_0223, xep_0060 for the 0402 node).
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, Server, connect_login, q, el_str, error_condition, NS_CLIENT, run_async  # noqa: E402

import slixmpp_helpers as sh  # noqa: E402

PW = "pw-for-bookmarks"
NS_PS = "http://jabber.org/protocol/pubsub"
NS_PSO = NS_PS + "#owner"
NS_PSE = NS_PS + "#event"
NS_PSERR = NS_PS + "#errors"
NS_INFO = "http://jabber.org/protocol/disco#info"
NS_X = "jabber:x:data"
NS_PRIV = "jabber:iq:private"
BM2 = "urn:xmpp:bookmarks:1"
BM1 = "storage:bookmarks"
ROOM1, ROOM2, ROOM3 = "tea@conference.localhost", "crisis@conference.localhost", "slix@conference.localhost"


def ok(r):
    return r is not None and r.get("type") == "result"


def options(**fields):
    return ("<publish-options><x xmlns='%s' type='submit'><field var='FORM_TYPE' type='hidden'><value>%s#publish-options"
            "</value></field>%s</x></publish-options>"
            % (NS_X, NS_PS, "".join("<field var='pubsub#%s'><value>%s</value></field>" % kv for kv in fields.items())))


BM2_OPTIONS = options(persist_items="true", max_items="max", send_last_published_item="never", access_model="whitelist")


def publish2(c, room, inner, opts=BM2_OPTIONS):
    return c.iq("set", "<pubsub xmlns='%s'><publish node='%s'><item id='%s'>%s</item></publish>%s</pubsub>"
                % (NS_PS, BM2, room, inner, opts))


def items(c, node, to=None):
    """{id: payload element} of a node, or None with the reply."""
    r = c.iq("get", "<pubsub xmlns='%s'><items node='%s'/></pubsub>" % (NS_PS, node), to=to)
    if not ok(r):
        return r, None
    return r, {it.get("id"): (list(it)[0] if len(it) else None) for it in r.iter(q(NS_PS, "item"))}


def private_get(c):
    r = c.iq("get", "<query xmlns='%s'><storage xmlns='%s'/></query>" % (NS_PRIV, BM1))
    st = r.find(".//" + q(BM1, "storage")) if ok(r) else None
    return r, st


def legacy_confs(st):
    """{jid: (name, autojoin, nick, password)} of a legacy <storage/>."""
    if st is None:
        return None
    out = {}
    for c in st.findall(q(BM1, "conference")):
        n, p = c.find(q(BM1, "nick")), c.find(q(BM1, "password"))
        out[c.get("jid")] = (c.get("name"), c.get("autojoin") in ("true", "1"), n.text if n is not None else None,
                             p.text if p is not None else None)
    return out


def conf2(el):
    """(name, autojoin, nick, password) of a 0402 <conference/>."""
    n, p = el.find(q(BM2, "nick")), el.find(q(BM2, "password"))
    return (el.get("name"), el.get("autojoin") in ("true", "1"), n.text if n is not None else None,
            p.text if p is not None else None)


def event(c, node, timeout=3):
    def m(el):
        ev = el.find(q(NS_PSE, "event")) if el.tag == q(NS_CLIENT, "message") else None
        return ev is not None and any(ch.get("node") == node for ch in ev)
    return c.expect(m, timeout)


def drain(c, node):
    while event(c, node, timeout=0.5) is not None:
        pass


def raw(t, srv):
    a = connect_login(srv, "ann", PW, resource="one")
    a.presence()
    r = a.iq("get", "<query xmlns='%s'/>" % NS_INFO, to="ann@localhost")
    feats = [f.get("var") for f in r.iter(q(NS_INFO, "feature"))] if ok(r) else []
    t.ok(BM2 + "#compat" in feats and BM2 + "#compat-pep" in feats,
         "XEP-0402 §5.3 / XEP-0411: the account advertises urn:xmpp:bookmarks:1#compat and #compat-pep "
         "(Monal uses 0402 only then)", lambda: repr(feats))
    t.ok("urn:xmpp:bookmarks-conversion:0" in feats, "XEP-0411 §2: and urn:xmpp:bookmarks-conversion:0",
         lambda: repr(feats))

    # 0402 -> legacy
    r = publish2(a, ROOM1, "<conference xmlns='%s' name='Tea &amp; Cake' autojoin='true'><nick>Ann</nick>"
                 "<extensions><state xmlns='urn:test:ext'/></extensions></conference>" % BM2)
    t.ok(ok(r), "XEP-0402 §3.2: publish a bookmark with the publish-options the XEP gives", el_str(r))
    ev = event(a, BM2)
    it = ev.find(".//" + q(NS_PSE, "item")) if ev is not None else None
    t.ok(it is not None and it.get("id") == ROOM1, "XEP-0402 §3.2: the owner's resource is notified", lambda: el_str(ev))
    r, st = private_get(a)
    t.is_(legacy_confs(st), {ROOM1: ("Tea & Cake", True, "Ann", None)},
          "XEP-0411 #compat: private storage (XEP-0049) shows the 0402 bookmark as storage:bookmarks")
    r, got = items(a, BM1)
    t.ok(got is not None and list(got) == ["current"]
         and legacy_confs(got["current"]) == {ROOM1: ("Tea & Cake", True, "Ann", None)},
         "XEP-0411 #compat-pep: the PEP node storage:bookmarks holds it in item 'current'", el_str(r))
    drain(a, BM1)

    # legacy private storage -> 0402
    r = a.iq("set", "<query xmlns='%s'><storage xmlns='%s'>"
             "<conference jid='%s' name='Tea' autojoin='true'><nick>Ann</nick></conference>"
             "<conference jid='%s' name='Crisis team' autojoin='false'><nick>Ann K.</nick><password>s3cret</password>"
             "</conference><url name='Wiki' url='https://wiki.example/'/></storage></query>" % (NS_PRIV, BM1, ROOM1, ROOM2))
    t.ok(ok(r), "XEP-0049: a client stores bookmarks in private storage", el_str(r))
    seen = {}
    for _ in range(2):
        ev = event(a, BM2)
        it = ev.find(".//" + q(NS_PSE, "item")) if ev is not None else None
        if it is not None:
            seen[it.get("id")] = conf2(list(it)[0])
    t.is_(seen, {ROOM1: ("Tea", True, "Ann", None), ROOM2: ("Crisis team", False, "Ann K.", "s3cret")},
          "XEP-0411 §4: the changed and the new room are published to the 0402 node and notified")
    r, got = items(a, BM2)
    t.is_({k: conf2(v) for k, v in got.items()} if got is not None else None,
          {ROOM1: ("Tea", True, "Ann", None), ROOM2: ("Crisis team", False, "Ann K.", "s3cret")},
          "XEP-0402: the 0402 node has one item per room, id = the room's JID")
    ext = got[ROOM1].find(".//" + q("urn:test:ext", "state")) if got else None
    t.ok(ext is not None, "the 0402 <extensions/> of a room the legacy client kept are preserved", lambda: el_str(r))
    r, st = private_get(a)
    urls = [(u.get("name"), u.get("url")) for u in st.findall(q(BM1, "url"))] if st is not None else None
    t.ok(legacy_confs(st) == {ROOM1: ("Tea", True, "Ann", None), ROOM2: ("Crisis team", False, "Ann K.", "s3cret")}
         and urls == [("Wiki", "https://wiki.example/")],
         "XEP-0049: reading private storage gives the rooms back, and the <url/> bookmark (no 0402 form)", el_str(r))
    r, got = items(a, BM1)
    t.ok(got is not None and len(legacy_confs(got.get("current"))) == 2,
         "XEP-0411 #compat-pep: the legacy PEP node follows", el_str(r))
    drain(a, BM2)
    drain(a, BM1)

    # legacy PEP -> 0402
    r = a.iq("set", "<pubsub xmlns='%s'><publish node='%s'><item id='current'><storage xmlns='%s'>"
             "<conference jid='%s' name='Crisis team' autojoin='true'><nick>Ann K.</nick><password>s3cret</password>"
             "</conference></storage></item></publish>%s</pubsub>"
             % (NS_PS, BM1, BM1, ROOM2, options(persist_items="true", access_model="whitelist")))
    t.ok(ok(r), "XEP-0048 §3.3: a client publishes bookmarks to the PEP node storage:bookmarks", el_str(r))
    kinds = {}
    for _ in range(2):
        ev = event(a, BM2)
        for ch in (ev.find(q(NS_PSE, "event")).find(q(NS_PSE, "items")) if ev is not None else []):
            kinds[ch.get("id")] = ch.tag.split("}")[1]
    t.is_(kinds, {ROOM1: "retract", ROOM2: "item"},
          "XEP-0411: the room it dropped is retracted from the 0402 node, the changed one republished (both notified)")
    r, got = items(a, BM2)
    t.is_({k: conf2(v) for k, v in got.items()} if got is not None else None,
          {ROOM2: ("Crisis team", True, "Ann K.", "s3cret")}, "the 0402 node now holds what the legacy PEP node says")
    r, st = private_get(a)
    t.is_(legacy_confs(st), {ROOM2: ("Crisis team", True, "Ann K.", "s3cret")}, "and so does private storage")

    # 0402 retract -> legacy
    r = a.iq("set", "<pubsub xmlns='%s'><retract node='%s' notify='true'><item id='%s'/></retract></pubsub>"
             % (NS_PS, BM2, ROOM2))
    t.ok(ok(r), "XEP-0402 §3.3: removing a bookmark is a retract", el_str(r))
    r, st = private_get(a)
    t.is_(legacy_confs(st), {}, "XEP-0411: the retracted room is gone from private storage")
    r, got = items(a, BM1)
    t.is_(legacy_confs(got.get("current")) if got else None, {}, "and from the legacy PEP node")

    # access: only the owner, whatever options the client forgot
    b = connect_login(srv, "ben", PW, resource="one")
    b.send("<presence to='ann@localhost' type='subscribe'/>")
    a.expect(lambda el: el.tag == q(NS_CLIENT, "presence") and el.get("type") == "subscribe", 5)
    a.send("<presence to='ben@localhost' type='subscribed'/>")
    b.expect(lambda el: el.tag == q(NS_CLIENT, "presence") and el.get("type") == "subscribed", 5)
    publish2(a, ROOM1, "<conference xmlns='%s' name='Tea'/>" % BM2)
    for node in (BM2, BM1):
        r, got = items(b, node, to="ann@localhost")
        t.ok(error_condition(r) == "not-allowed" and r.find(".//" + q(NS_PSERR, "closed-node")) is not None,
             "XEP-0402 §3 whitelist: a subscribed contact cannot read %s" % node, el_str(r))
    c = connect_login(srv, "cid", PW, resource="one")
    r = c.iq("set", "<pubsub xmlns='%s'><publish node='%s'><item id='%s'><conference xmlns='%s' name='x'/></item>"
             "</publish></pubsub>" % (NS_PS, BM2, ROOM1, BM2))
    t.ok(ok(r), "a 0402 publish without publish-options", el_str(r))
    r = c.iq("get", "<pubsub xmlns='%s'><configure node='%s'/></pubsub>" % (NS_PSO, BM2))
    fields = {f.get("var"): [v.text for v in f.findall(q(NS_X, "value"))] for f in r.iter(q(NS_X, "field"))} if ok(r) else {}
    t.ok(fields.get("pubsub#access_model") == ["whitelist"] and fields.get("pubsub#max_items") == ["max"],
         "creates the node as XEP-0402 §3 says (whitelist, max_items max), never readable by contacts", el_str(r))
    r = c.iq("get", "<query xmlns='%s'><storage xmlns='%s'/></query>" % (NS_PRIV, "storage:other"))
    t.ok(ok(r), "other private storage is still mod_private's", el_str(r))
    for x in (a, b, c):
        x.end()


SLIX_PLUGINS = ("xep_0030", "xep_0004", "xep_0049", "xep_0060", "xep_0163", "xep_0223", "xep_0045", "xep_0048")


async def slix(t, srv):
    from slixmpp.plugins.xep_0048 import Bookmarks
    c = sh.Client("dee@localhost/slix", PW, srv.ca, plugins=SLIX_PLUGINS)
    ready = await sh.login(srv, c)
    t.ok(ready, "slixmpp: dee logs in", repr(c.failed))
    if not ready:
        return
    bm = Bookmarks()
    bm.add_conference(ROOM3, "Dee", name="Slix room", autojoin=True)
    try:
        await c.plugin["xep_0048"].set_bookmarks(bm, method="xep_0049", timeout=10)
        t.ok(True, "slixmpp xep_0048 stores bookmarks in private storage (xep_0049)")
    except Exception as e:
        t.ok(False, "slixmpp xep_0048 stores bookmarks in private storage (xep_0049)", repr(e))
    try:
        res = await c.plugin["xep_0060"].get_items("dee@localhost", BM2, timeout=10)
        got = {i["id"]: i.xml[0] for i in res["pubsub"]["items"]["substanzas"]}
    except Exception as e:
        got = repr(e)
    t.ok(isinstance(got, dict) and list(got) == [ROOM3] and conf2(got[ROOM3]) == ("Slix room", True, "Dee", None),
         "slixmpp xep_0060: the 0402 node holds the bookmark stored through private storage", repr(got))
    bm = Bookmarks()
    bm.add_conference(ROOM1, "Dee")
    try:
        await c.plugin["xep_0048"].set_bookmarks(bm, method="xep_0223", timeout=10)
        t.ok(True, "slixmpp xep_0048 publishes bookmarks to the legacy PEP node (xep_0223 publish-options)")
    except Exception as e:
        t.ok(False, "slixmpp xep_0048 publishes bookmarks to the legacy PEP node (xep_0223 publish-options)", repr(e))
    try:
        res = await c.plugin["xep_0048"].get_bookmarks(method="xep_0049", timeout=10)
        confs = [str(x["jid"]) for x in res["private"]["bookmarks"]["conferences"]]
    except Exception as e:
        confs = repr(e)
    t.is_(confs, [ROOM1], "slixmpp xep_0048: private storage now shows what was published to the legacy PEP node")
    c.disconnect()
    await asyncio.gather(c.disconnected, return_exceptions=True)


def main(t):
    with Server(t) as srv:
        for u in ("ann", "ben", "cid", "dee"):
            srv.adduser("%s@localhost" % u, PW)
        t.run(raw, t, srv)
        run_async(slix(t, srv), 90)
        t.ok(not srv.sanitizer_reports(), "no sanitizer report in the civitasd log",
             lambda: "\n".join(srv.sanitizer_reports()))


if __name__ == "__main__":
    Tap(timeout=180).main(main)
