#!/usr/bin/python3
# tests/integration/test_mam.py: XEP-0313 Message Archive Management with XEP-0359 stanza IDs and
# XEP-0059 paging: what is archived (both directions, every route), stamping and anti-spoofing,
# queries, preferences, retention, offline storage together with MAM, federation, slixmpp.
import os
import sqlite3
import sys
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Tap, Server, Certs, connect_login, q, el_str, canon, free_port,  # noqa: E402
                     xml_escape, NS_CLIENT, NS_DISCO_INFO)
from harness import error_condition, run_async  # noqa: E402

PW = "pw-for-mam"
NS_MAM = "urn:xmpp:mam:2"
NS_MAM1 = "urn:xmpp:mam:1"
NS_SID = "urn:xmpp:sid:0"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_FWD = "urn:xmpp:forward:0"
NS_DELAY = "urn:xmpp:delay"
NS_DATA = "jabber:x:data"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"

OMEMO = ("<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='27183'>"
         "<key rid='31415' prekey='true'>MwohBe+3qX0Hu0Z4Cj3Jt8Y6a3C3Bp8=\n  AAECAw==</key>"
         "<key rid='12321'>MwohBW7D4jQx/+9sL2K9a0b1c2d3e4f5g6h7i8j9k0=</key>"
         "<iv>9Ky3g1+Lr2SrTYhx</iv></header><payload>QjVyDUmBVdDCzzH5Iw==</payload></encrypted>"
         "<store xmlns='urn:xmpp:hints'/>")
OMEMO2 = ("<encrypted xmlns='urn:xmpp:omemo:2'><header sid='9'><keys jid='bob@localhost'>"
          "<key rid='7' kex='true'>a2V5IG1hdGVyaWFs</key></keys></header>"
          "<payload>ZW5jcnlwdGVk &amp; &lt;escaped&gt;</payload></encrypted>")


def login(srv, user, resource="r", domain="localhost", presence=True):
    c = connect_login(srv, user, PW, resource=resource, domain=domain)
    if presence:
        c.presence()
    return c


def form(fields):
    """A MAM query form: fields is a list of (var, value or [values])."""
    out = "<x xmlns='%s' type='submit'><field var='FORM_TYPE' type='hidden'><value>%s</value></field>" % (
        NS_DATA, NS_MAM)
    for var, val in fields:
        vals = val if isinstance(val, list) else [val]
        out += "<field var='%s'>%s</field>" % (var, "".join("<value>%s</value>" % xml_escape(v) for v in vals))
    return out + "</x>"


def rsm(max_=None, after=None, before=None):
    s = ""
    if max_ is not None:
        s += "<max>%d</max>" % max_
    if after is not None:
        s += "<after>%s</after>" % after
    if before is not None:
        s += "<before>%s</before>" % before if before else "<before/>"
    return "<set xmlns='%s'>%s</set>" % (NS_RSM, s) if s else ""


class Page:
    def __init__(self, iq, results):
        self.iq = iq
        self.results = results          # [(id, stamp, inner message element, result element)]
        fin = iq.find(q(NS_MAM, "fin")) if iq is not None else None
        self.fin = fin
        self.complete = fin is not None and fin.get("complete") == "true"
        s = fin.find(q(NS_RSM, "set")) if fin is not None else None
        get = lambda n: s.find(q(NS_RSM, n)).text if s is not None and s.find(q(NS_RSM, n)) is not None else None  # noqa
        self.first, self.last = get("first"), get("last")
        fe = s.find(q(NS_RSM, "first")) if s is not None else None
        self.index = int(fe.get("index")) if fe is not None and fe.get("index") is not None else None
        self.count = int(get("count")) if get("count") is not None else None
        self.error = error_condition(iq) if iq is not None and iq.get("type") == "error" else None

    def ids(self):
        return [r[0] for r in self.results]

    def bodies(self):
        out = []
        for r in self.results:
            b = r[2].find(q(NS_CLIENT, "body"))
            out.append(b.text if b is not None else None)
        return out


def query(c, fields=(), set_="", queryid="qid", ns=NS_MAM, raw_form=None):
    """Run a MAM query; the result messages before the IQ result, as a Page."""
    qid = c.next_id("mam")
    f = raw_form if raw_form is not None else (form(fields) if fields else "")
    c.send("<iq type='set' id='%s'><query xmlns='%s' queryid='%s'>%s%s</query></iq>" % (qid, ns, queryid, f, set_))
    results = []

    def mine(el):
        if el.tag == q(NS_CLIENT, "message"):
            r = el.find(q(ns, "result"))
            return r is not None and r.get("queryid") == queryid
        return el.tag == q(NS_CLIENT, "iq") and el.get("id") == qid

    while True:
        el = c.expect(mine)
        if el is None or el.tag == q(NS_CLIENT, "iq"):
            iq = el
            break
        r = el.find(q(ns, "result"))
        fw = r.find(q(NS_FWD, "forwarded"))
        d = fw.find(q(NS_DELAY, "delay")) if fw is not None else None
        m = fw.find(q(NS_CLIENT, "message")) if fw is not None else None
        results.append((r.get("id"), d.get("stamp") if d is not None else None, m, r))
    return Page(iq, results)


def sids(el):
    return [(s.get("by"), s.get("id")) for s in el.findall(q(NS_SID, "stanza-id"))]


def send_and_sync(c, xml):
    c.send(xml)
    return c.ping_server()


# ---- what is archived, both directions, stanza-ids ---------------------------------------------

def archive_both_directions(t, srv):
    alice, bob = login(srv, "alice"), login(srv, "bob")
    alice.message("bob@localhost", "hello bob", id="m1")
    got = bob.expect_message("hello bob")
    t.ok(got is not None, "bob receives alice's message")
    s = sids(got) if got is not None else []
    t.is_(len(s), 1, "XEP-0359: the delivered message carries one stanza-id")
    t.is_(s[0][0] if s else None, "bob@localhost", "XEP-0359 §4: the stanza-id is by the recipient's bare JID")
    pb = query(bob, [("with", "alice@localhost")])
    t.is_(pb.bodies(), ["hello bob"], "the recipient's archive holds the received message")
    t.is_(pb.ids(), [s[0][1]] if s else None, "XEP-0359: the archive id is the stamped stanza-id")
    pa = query(alice, [("with", "bob@localhost")])
    t.is_(pa.bodies(), ["hello bob"], "the sender's archive holds its own outgoing message")
    t.ok(pa.ids() and pa.ids() != pb.ids(), "each archive has its own id for the message")
    r = pb.results[0] if pb.results else None
    t.ok(r is not None and r[1] and r[1].endswith("Z"), "XEP-0313 §4.2: a result has a <delay/> with the archive time")
    t.ok(r is not None and r[2].get("from", "").startswith("alice@localhost"), "the archived message keeps its from",
         el_str(r[2]) if r else None)
    t.ok(r is not None and not r[2].findall(q(NS_SID, "stanza-id")),
         "the archived copy does not repeat the stanza-id (the result's id carries it)")
    t.is_(pb.iq.find(q(NS_MAM, "fin")) is not None and pb.complete, True, "<fin complete='true'/> for a single page")

    # bob answers: both archives again, in the other direction
    bob.message("alice@localhost", "hi alice")
    t.ok(alice.expect_message("hi alice") is not None, "alice receives bob's answer")
    t.is_(query(alice, [("with", "bob@localhost")]).bodies(), ["hello bob", "hi alice"],
          "alice's archive: both directions in order")
    t.is_(query(bob, [("with", "alice@localhost")]).bodies(), ["hello bob", "hi alice"],
          "bob's archive: both directions in order")

    # what is worth keeping, and what never is
    kinds = [
        ("chat state alone", "<active xmlns='%s'/>" % NS_CHATSTATES, False),
        ("no-store", "<body>secret1</body><no-store xmlns='urn:xmpp:hints'/>", False),
        ("no-permanent-store", "<body>secret2</body><no-permanent-store xmlns='urn:xmpp:hints'/>", False),
        ("store hint", "<store xmlns='urn:xmpp:hints'/><active xmlns='%s'/>" % NS_CHATSTATES, True),
        ("XEP-0353 propose", "<propose xmlns='urn:xmpp:jingle-message:0' id='call1'>"
         "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose>", True),
        ("OMEMO (axolotl)", OMEMO, True),
        ("OMEMO 2", OMEMO2, True),
    ]
    for i, (name, payload, kept) in enumerate(kinds):
        before = query(bob, [("with", "alice@localhost")], rsm(max_=0)).count
        alice.send("<message to='bob@localhost' type='chat' id='k%d'>%s</message>" % (i, payload))
        alice.ping_server()
        bob.ping_server()
        after = query(bob, [("with", "alice@localhost")], rsm(max_=0)).count
        t.is_(after - before, 1 if kept else 0, "%s: %s" % (name, "archived" if kept else "never archived"))
    # an error message is never archived
    before = query(alice, [], rsm(max_=0)).count
    alice.send("<message to='bob@localhost' type='error'><body>e</body><error type='cancel'>"
               "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>")
    alice.ping_server()
    t.is_(query(alice, [], rsm(max_=0)).count, before, "an error message is never archived")

    # byte-exact OMEMO in both archives
    for who in (alice, bob):
        p = query(who, [("with", "alice@localhost" if who is bob else "bob@localhost")], rsm(before="", max_=3))
        enc = [r[2].find(q("eu.siacs.conversations.axolotl", "encrypted")) for r in p.results]
        enc2 = [r[2].find(q("urn:xmpp:omemo:2", "encrypted")) for r in p.results]
        want = ET.fromstring("<m>%s</m>" % OMEMO)[0]
        want2 = ET.fromstring("<m>%s</m>" % OMEMO2)[0]
        t.ok(any(e is not None and canon(e) == canon(want) for e in enc),
             "OMEMO (axolotl) kept intact (payload, keys, whitespace) in %s's archive" % ("bob" if who is bob else "alice"))
        t.ok(any(e is not None and canon(e) == canon(want2) for e in enc2),
             "OMEMO 2 kept intact (escaped text) in %s's archive" % ("bob" if who is bob else "alice"))

    # a message to one's own bare JID is archived once
    before = query(alice, [], rsm(max_=0)).count
    alice.message("alice@localhost", "note to self")
    alice.ping_server()
    t.is_(query(alice, [], rsm(max_=0)).count - before, 1, "a message to oneself is archived once")
    for c in (alice, bob):
        c.end()


def spoofing_and_disco(t, srv):
    alice, bob = login(srv, "alice", "s"), login(srv, "bob", "s")
    alice.send("<message to='bob@localhost' type='chat'><body>spoof</body>"
               "<stanza-id xmlns='%s' by='bob@localhost' id='forged-1'/>"
               "<stanza-id xmlns='%s' by='localhost' id='forged-2'/>"
               "<stanza-id xmlns='%s' by='room@conference.example.org' id='other'/></message>" % (NS_SID, NS_SID, NS_SID))
    got = bob.expect_message("spoof")
    s = sids(got) if got is not None else []
    t.ok(("bob@localhost", "forged-1") not in s and ("localhost", "forged-2") not in s,
         "XEP-0359 §5: stanza-ids by our account or host from outside are stripped", s)
    t.ok(("room@conference.example.org", "other") in s, "a stanza-id by a foreign entity is left alone", s)
    t.is_(len([x for x in s if x[0] == "bob@localhost"]), 1, "exactly one stanza-id by the recipient (ours)")
    r = bob.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to="bob@localhost")
    feats = [f.get("var") for f in r.iter(q(NS_DISCO_INFO, "feature"))] if r is not None else []
    for f in (NS_MAM, NS_SID, NS_MAM1, "urn:xmpp:mam:2#extended"):
        t.ok(f in feats, "disco#info on the account advertises %s" % f, feats)
    # another account's archive is not ours to read
    qid = bob.next_id("x")
    r = bob.iq("set", "<query xmlns='%s'/>" % NS_MAM, to="alice@localhost", id=qid)
    t.is_(error_condition(r) if r is not None else None, "forbidden", "querying another account's archive: <forbidden/>")
    # the query form
    r = bob.iq("get", "<query xmlns='%s'/>" % NS_MAM)
    vars_ = [f.get("var") for f in r.iter(q(NS_DATA, "field"))] if r is not None else []
    t.ok(all(v in vars_ for v in ("FORM_TYPE", "with", "start", "end", "before-id", "after-id", "ids")),
         "XEP-0313 §5.1: the query form lists its fields", vars_)
    alice.end()
    bob.end()


# ---- carbons carry the archive's stanza-ids (XEP-0313 §3.5, XEP-0280) ----------------------------

NS_CARBONS = "urn:xmpp:carbons:2"


def carbon_of(c, kind, body):
    """The next <kind/> carbon (sent or received) whose forwarded message has this body: (outer, inner)."""
    def match(el):
        k = el.find(q(NS_CARBONS, kind)) if el.tag == q(NS_CLIENT, "message") else None
        inner = k.find("%s/%s" % (q(NS_FWD, "forwarded"), q(NS_CLIENT, "message"))) if k is not None else None
        return inner is not None and inner.findtext(q(NS_CLIENT, "body")) == body
    el = c.expect(match)
    if el is None:
        return None, None
    return el, el.find("%s/%s/%s" % (q(NS_CARBONS, kind), q(NS_FWD, "forwarded"), q(NS_CLIENT, "message")))


def carbons_stanza_ids(t, srv):
    lena1, lena2 = login(srv, "lena", "l1"), login(srv, "lena", "l2")
    mike1, mike2 = login(srv, "mike", "m1"), login(srv, "mike", "m2")
    mike1.presence(priority=5)
    for c in (lena2, mike2):
        c.iq("set", "<enable xmlns='%s'/>" % NS_CARBONS)
    for c in (lena1, lena2, mike1, mike2):
        c.ping_server()

    # received carbons: to the bare JID and to a full JID
    for to, body in (("mike@localhost", "carbon to bare"), ("mike@localhost/m1", "carbon to full")):
        lena1.message(to, body)
        live = mike1.expect_message(body)
        _, inner = carbon_of(mike2, "received", body)
        t.ok(inner is not None, "%s: mike's other resource gets a <received/> carbon" % body)
        live_sid = dict(sids(live)).get("mike@localhost") if live is not None else None
        copy_sid = [s for s in sids(inner) if s[0] == "mike@localhost"] if inner is not None else []
        t.is_(copy_sid, [("mike@localhost", live_sid)],
              "%s: XEP-0313 §3.5: the received carbon's forwarded message carries the same stanza-id "
              "by='mike@localhost' as the live delivery" % body)
        p = query(mike1, [("with", "lena@localhost")], rsm(max_=1, before=""))
        t.is_(p.ids(), [live_sid], "%s: ... and that id is the archive's" % body)

    # sent carbons: the forwarded message carries the id of the sender's own archive
    lena1.send("<message to='mike@localhost' type='chat' id='sc1'><body>sent carbon</body>"
               "<stanza-id xmlns='%s' by='lena@localhost' id='forged-by-client'/></message>" % NS_SID)
    live = mike1.expect_message("sent carbon")
    _, inner = carbon_of(lena2, "sent", "sent carbon")
    t.ok(inner is not None, "lena's other resource gets a <sent/> carbon")
    lena_sid = [s for s in sids(inner) if s[0] == "lena@localhost"] if inner is not None else []
    pl = query(lena1, [("with", "mike@localhost")], rsm(max_=1, before=""))
    t.is_(pl.bodies(), ["sent carbon"], "the sender's archive holds the sent message")
    t.is_(lena_sid, [("lena@localhost", pl.ids()[0] if pl.ids() else None)],
          "XEP-0313 §3.5: the sent carbon's forwarded message carries stanza-id by='lena@localhost' with the "
          "id of the sender's archive (the client's forged one replaced)")
    t.is_([s for s in sids(live) if s[0] == "lena@localhost"] if live is not None else None, [],
          "XEP-0313 §3.5: the message to the contact carries no stanza-id of the sender's archive")
    t.ok(pl.results and not pl.results[0][2].findall(q(NS_SID, "stanza-id")),
         "the sender's archived copy keeps no stanza-id (the result's id carries it)",
         el_str(pl.results[0][2]) if pl.results else None)
    # a message that is not archived gets no id in its carbon
    lena1.send("<message to='mike@localhost' type='chat'><body>unarchived</body>"
               "<no-store xmlns='urn:xmpp:hints'/></message>")
    mike1.expect_message("unarchived")
    _, inner = carbon_of(lena2, "sent", "unarchived")
    t.is_(sids(inner) if inner is not None else None, [], "a <no-store/> message's sent carbon carries no stanza-id")
    for c in (lena1, lena2, mike1, mike2):
        c.end()


# ---- queries and paging --------------------------------------------------------------------------

def paging(t, srv):
    carol, erin = login(srv, "carol", "p1"), login(srv, "erin", "p")
    carol2 = login(srv, "carol", "p2")
    for i in range(10):
        carol.message("erin@localhost", "page %d" % i)
        erin.expect_message("page %d" % i)
    erin.message("carol@localhost/p2", "to p2 only")
    erin.ping_server()
    allp = query(erin, [("with", "carol@localhost")])
    t.is_(allp.bodies(), ["page %d" % i for i in range(10)] + ["to p2 only"], "the whole conversation, oldest first")
    t.is_(allp.count, 11, "RSM <count/>")
    ids = allp.ids()
    t.ok(all(r[3].get("queryid") == "qid" for r in allp.results), "XEP-0313 §4.2: results carry the queryid")

    # forward paging with max=4: complete only on the last page
    pages, after = [], None
    for _ in range(5):
        p = query(erin, [("with", "carol@localhost")], rsm(max_=4, after=after))
        pages.append(p)
        if p.complete or not p.results:
            break
        after = p.last
    t.is_([p.bodies() for p in pages][0], ["page 0", "page 1", "page 2", "page 3"], "the first page")
    t.is_(sum((p.ids() for p in pages), []), ids, "forward pages join to the whole archive")
    t.is_([p.complete for p in pages], [False, False, True], "<fin complete='true'/> exactly on the last page")
    t.is_((pages[0].first, pages[0].last), (ids[0], ids[3]), "RSM <first/> and <last/> name the page's ends")
    t.is_([p.index for p in pages], [0, 4, 8], "XEP-0059 §2.4: <first index=''/> is the page's position in the result set")
    t.is_(pages[0].count, 11, "<count/> is the whole result set's size on every page")

    # backward: <before/> empty is the last page, then before=first
    p = query(erin, [("with", "carol@localhost")], rsm(max_=4, before=""))
    t.is_(p.ids(), ids[-4:], "XEP-0059 §2.5: empty <before/> gives the last page, in chronological order")
    t.ok(not p.complete, "the last page paged backwards is not complete (older ones remain)")
    got = list(p.ids())
    while not p.complete and p.first:
        p = query(erin, [("with", "carol@localhost")], rsm(max_=4, before=p.first))
        got = p.ids() + got
    t.is_(got, ids, "backward pages join to the whole archive, complete on the oldest")
    t.is_(p.index, 0, "XEP-0059: the oldest page paged backwards has index 0")
    p = query(erin, [("with", "carol@localhost")], rsm(max_=4, before=""))
    t.is_(p.index, 7, "XEP-0059: the last page of 11 (max 4) has <first index='7'/>")

    # with: full JID
    p = query(erin, [("with", "carol@localhost/p2")])
    t.is_(p.bodies(), ["to p2 only"], "with a full JID: only that resource's messages")
    p = query(carol, [("with", "erin@localhost/p")])
    t.is_(p.bodies(), ["to p2 only"], "with a full JID in the other archive: what that resource sent, not what "
          "went to the bare JID")

    # start / end from the archive's own stamps
    p = query(erin, [("with", "carol@localhost"), ("start", allp.results[5][1])])
    t.ok(p.ids() and p.ids()[0] in ids[:6] and p.ids()[-1] == ids[-1], "start: from that time on")
    p = query(erin, [("with", "carol@localhost"), ("end", "2000-01-01T00:00:00Z")])
    t.is_((p.ids(), p.complete, p.count), ([], True, 0), "end before everything: empty and complete")
    p = query(erin, [("with", "carol@localhost"), ("start", "2000-01-01T00:00:00+02:00"), ("end", "2999-01-01T00:00:00.5Z")])
    t.is_(p.ids(), ids, "start and end around everything (offsets and fractions parsed)")
    p = query(erin, [("start", "yesterday")])
    t.is_(p.error, "bad-request", "a malformed start: <bad-request/>")
    p = query(erin, [("frobnicate", "x")])
    t.is_(p.error, "feature-not-implemented",
          "XEP-0313 §4.1.1: a form field the server does not recognise: <feature-not-implemented/>")

    # after-id / before-id / ids (#extended)
    p = query(erin, [("with", "carol@localhost"), ("after-id", ids[2]), ("before-id", ids[6])])
    t.is_(p.ids(), ids[3:6], "after-id and before-id: strictly between")
    t.is_(p.count, 3, "the count covers the form's bounds")
    t.is_(p.index, 0, "the index counts within the form's bounds")
    p = query(erin, [("ids", [ids[7], ids[1]])])
    t.is_(sorted(p.ids()), sorted([ids[7], ids[1]]), "ids: exactly those messages")
    t.ok(p.complete, "ids: complete")
    for name, fields, set_ in (("after-id", [("after-id", "nope")], ""), ("before-id", [("before-id", "nope")], ""),
                               ("ids", [("ids", ["nope"])], ""), ("RSM after", [], rsm(after="nope")),
                               ("RSM before", [], rsm(before="nope"))):
        t.is_(query(erin, fields, set_).error, "item-not-found", "XEP-0313 §5.4: unknown id in %s: <item-not-found/>" % name)
    # another account's id is unknown here
    t.is_(query(carol, [("after-id", ids[0])]).error, "item-not-found", "erin's archive ids are unknown in carol's")

    # flip-page and mam:1
    p = query(erin, [("with", "carol@localhost")], rsm(max_=3) + "<flip-page/>")
    t.is_(p.ids(), list(reversed(ids[:3])), "#extended flip-page: the page in reverse order")
    qid = erin.next_id("m1")
    erin.send("<iq type='set' id='%s'><query xmlns='%s' queryid='old'><set xmlns='%s'><max>2</max></set></query></iq>"
              % (qid, NS_MAM1, NS_RSM))
    res = [erin.expect(lambda el: el.find(q(NS_MAM1, "result")) is not None) for _ in range(2)]
    iq = erin.expect(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("id") == qid)
    t.ok(iq is not None and iq.find(q(NS_MAM1, "fin")) is not None and None not in res,
         "urn:xmpp:mam:1 queries work too", el_str(iq))

    # metadata
    r = erin.iq("get", "<metadata xmlns='%s'/>" % NS_MAM)
    md = r.find(q(NS_MAM, "metadata")) if r is not None else None
    st = md.find(q(NS_MAM, "start")) if md is not None else None
    en = md.find(q(NS_MAM, "end")) if md is not None else None
    t.ok(st is not None and en is not None and st.get("timestamp") and en.get("id") == ids[-1],
         "XEP-0313 §6: metadata names the archive's first and last message", el_str(r))
    for c in (carol, carol2, erin):
        c.end()


def with_full_jid(t, srv):
    """XEP-0313 §4.1.1: a message matches a full-JID 'with' when its to or from is that JID."""
    nora, otto = login(srv, "nora", "n1"), login(srv, "otto", "o1")
    otto.message("nora@localhost", "from o1 to the bare JID")
    nora.expect_message("from o1 to the bare JID")
    nora.message("otto@localhost", "from nora to the bare JID")
    otto.expect_message("from nora to the bare JID")
    nora.message("otto@localhost/gone", "to a resource that is not there")
    otto.expect_message("to a resource that is not there")
    nora.message("otto@localhost/o1", "to o1")
    otto.expect_message("to o1")
    nora.ping_server()
    otto.ping_server()
    t.is_(query(nora, [("with", "otto@localhost/o1")]).bodies(), ["from o1 to the bare JID", "to o1"],
          "with a full JID: what that resource sent to our bare JID and what we sent to it, not what went "
          "to the bare JID or another resource")
    t.is_(query(nora, [("with", "otto@localhost/gone")]).bodies(), ["to a resource that is not there"],
          "with a full JID: a message to that full JID delivered as to the bare JID (RFC 6121 §8.5.3.2.1) "
          "still matches its 'to'")
    t.is_(len(query(nora, [("with", "otto@localhost")]).results), 4, "with the bare JID: all four")
    t.is_(query(otto, [("with", "nora@localhost/n1")]).bodies(),
          ["from nora to the bare JID", "to a resource that is not there", "to o1"],
          "the recipient's archive: everything nora/n1 sent, whatever it was addressed to")
    nora.end()
    otto.end()


# ---- preferences ---------------------------------------------------------------------------------

def preferences(t, srv):
    frank, gina, hugo = login(srv, "frank", "f"), login(srv, "gina", "g"), login(srv, "hugo", "h")

    def count(c, with_):
        return query(c, [("with", with_)], rsm(max_=0)).count

    r = frank.iq("get", "<prefs xmlns='%s'/>" % NS_MAM)
    p = r.find(q(NS_MAM, "prefs")) if r is not None else None
    t.is_(p.get("default") if p is not None else None, "always", "XEP-0313 §7: default preference is always")
    r = frank.iq("set", "<prefs xmlns='%s' default='never'><always><jid>gina@localhost</jid></always>"
                 "<never/></prefs>" % NS_MAM)
    p = r.find(q(NS_MAM, "prefs")) if r is not None else None
    t.ok(p is not None and p.get("default") == "never" and
         [j.text for j in p.iter(q(NS_MAM, "jid"))] == ["gina@localhost"], "prefs set: the stored prefs come back", el_str(r))
    gina.message("frank@localhost", "from gina")
    hugo.message("frank@localhost", "from hugo")
    frank.expect_message("from gina")
    frank.expect_message("from hugo")
    t.is_(count(frank, "gina@localhost"), 1, "default never, gina in always: archived")
    t.is_(count(frank, "hugo@localhost"), 0, "default never: hugo's message not archived")
    t.is_(count(hugo, "frank@localhost"), 1, "the sender's prefs (always) still archive its copy")
    # roster default: gina in frank's roster, hugo not
    frank.iq("set", "<query xmlns='jabber:iq:roster'><item jid='gina@localhost'/></query>")
    frank.iq("set", "<prefs xmlns='%s' default='roster'><always/><never/></prefs>" % NS_MAM)
    gina.message("frank@localhost", "gina again")
    hugo.message("frank@localhost", "hugo again")
    frank.expect_message("gina again")
    frank.expect_message("hugo again")
    t.is_(count(frank, "gina@localhost"), 2, "default roster: a roster contact's message archived")
    t.is_(count(frank, "hugo@localhost"), 0, "default roster: a stranger's not")
    frank.iq("set", "<prefs xmlns='%s' default='always'><always/><never><jid>gina@localhost</jid></never></prefs>" % NS_MAM)
    gina.message("frank@localhost", "gina never")
    frank.expect_message("gina never")
    frank.ping_server()
    t.is_(count(frank, "gina@localhost"), 2, "never list: not archived")
    r = frank.iq("set", "<prefs xmlns='%s' default='sometimes'/>" % NS_MAM)
    t.is_(error_condition(r), "bad-request", "an unknown default: <bad-request/>")
    for c in (frank, gina, hugo):
        c.end()


# ---- a user clears their own archive: XEP-0050 ad-hoc command -----------------------------------

NS_CMD = "http://jabber.org/protocol/commands"
NS_ITEMS = "http://jabber.org/protocol/disco#items"
PURGE_NODE = "urn:civitas:mam:purge"


def command(c, to, node, action=None, sessionid=None, payload=""):
    attrs = "node='%s'" % node
    if action:
        attrs += " action='%s'" % action
    if sessionid:
        attrs += " sessionid='%s'" % sessionid
    r = c.iq("set", "<command xmlns='%s' %s>%s</command>" % (NS_CMD, attrs, payload), to=to)
    return r, (r.find(q(NS_CMD, "command")) if r is not None else None)


def confirm_form(value):
    return ("<x xmlns='%s' type='submit'><field var='FORM_TYPE' type='hidden'><value>%s</value></field>"
            "<field var='confirm'><value>%s</value></field></x>" % (NS_DATA, PURGE_NODE, value))


def adhoc_purge(t, srv):
    pia, quin = login(srv, "pia", "p"), login(srv, "quin", "q")
    for i in range(3):
        quin.message("pia@localhost", "keep or purge %d" % i)
        pia.expect_message("keep or purge %d" % i)
    pia.ping_server()

    def count(c):
        return query(c, [], rsm(max_=0)).count

    t.is_((count(pia), count(quin)), (3, 3), "both archives hold the conversation")
    r = pia.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to="localhost")
    feats = [f.get("var") for f in r.iter(q(NS_DISCO_INFO, "feature"))] if r is not None else []
    t.ok(NS_CMD in feats, "XEP-0050 §2.1: the server advertises %s" % NS_CMD, feats)
    for where in ("localhost", "pia@localhost"):
        r = pia.iq("get", "<query xmlns='%s' node='%s'/>" % (NS_ITEMS, NS_CMD), to=where)
        items = [(i.get("jid"), i.get("node")) for i in r.iter(q(NS_ITEMS, "item"))] if r is not None else []
        t.is_(items, [(where, PURGE_NODE)], "XEP-0050 §2.2: disco#items of the commands node on %s lists the "
              "archive purge" % where)
    r = quin.iq("get", "<query xmlns='%s' node='%s'/>" % (NS_ITEMS, NS_CMD), to="pia@localhost")
    t.is_([i.get("node") for i in r.iter(q(NS_ITEMS, "item"))] if r is not None else None, [],
          "another account sees no commands on pia's JID")
    r = pia.iq("get", "<query xmlns='%s' node='%s'/>" % (NS_DISCO_INFO, PURGE_NODE), to="localhost")
    ids = [(i.get("category"), i.get("type")) for i in r.iter(q(NS_DISCO_INFO, "identity"))] if r is not None else []
    feats = [f.get("var") for f in r.iter(q(NS_DISCO_INFO, "feature"))] if r is not None else []
    t.ok(("automation", "command-node") in ids and NS_CMD in feats and NS_DATA in feats,
         "XEP-0050 §2.2: disco#info of the command node: automation/command-node, commands, jabber:x:data", el_str(r))

    # execute: a form with a confirm boolean; cancel
    r, cmd = command(pia, "localhost", PURGE_NODE)
    sid = cmd.get("sessionid") if cmd is not None else None
    x = cmd.find(q(NS_DATA, "x")) if cmd is not None else None
    fields = {f.get("var"): f.get("type") for f in x.iter(q(NS_DATA, "field"))} if x is not None else {}
    acts = cmd.find(q(NS_CMD, "actions")) if cmd is not None else None
    t.ok(cmd is not None and cmd.get("status") == "executing" and sid and x is not None and x.get("type") == "form"
         and fields.get("confirm") == "boolean", "XEP-0050 §3.4: execute answers status executing, a sessionid "
         "and a form with a boolean 'confirm'", el_str(r))
    t.ok(acts is not None and acts.find(q(NS_CMD, "complete")) is not None and acts.get("execute") == "complete",
         "XEP-0050 §3.4: the actions offer complete (the default)", el_str(r))
    r, cmd = command(pia, "localhost", PURGE_NODE, "cancel", sid)
    t.is_(cmd.get("status") if cmd is not None else None, "canceled", "XEP-0050 §3.5: cancel: status canceled")
    r, cmd = command(pia, "localhost", PURGE_NODE, "complete", sid, confirm_form("true"))
    t.ok(error_condition(r) == "bad-request" and r.find(".//" + q(NS_CMD, "bad-sessionid")) is not None,
         "XEP-0050 §4.6: a canceled session's id is <bad-request/> with <bad-sessionid/>", el_str(r))
    t.is_(count(pia), 3, "cancel deletes nothing")

    # complete without confirming
    r, cmd = command(pia, "localhost", PURGE_NODE)
    sid = cmd.get("sessionid") if cmd is not None else None
    r, cmd = command(pia, "localhost", PURGE_NODE, "complete", sid, confirm_form("false"))
    t.is_(cmd.get("status") if cmd is not None else None, "completed", "completed without confirming")
    t.is_(count(pia), 3, "confirm false deletes nothing")

    # another account: not on pia's JID, not with pia's session
    r, cmd = command(quin, "pia@localhost", PURGE_NODE)
    t.is_(error_condition(r), "forbidden", "executing the purge on another account's JID: <forbidden/>")
    r, cmd = command(pia, "localhost", PURGE_NODE)
    sid = cmd.get("sessionid") if cmd is not None else None
    r, cmd = command(quin, "localhost", PURGE_NODE, "complete", sid, confirm_form("1"))
    t.ok(error_condition(r) == "bad-request" and r.find(".//" + q(NS_CMD, "bad-sessionid")) is not None,
         "another account cannot complete pia's session: <bad-sessionid/>", el_str(r))
    t.is_((count(pia), count(quin)), (3, 3), "nothing was deleted by quin")
    r, cmd = command(pia, "localhost", PURGE_NODE, "next", sid)
    t.ok(error_condition(r) == "bad-request" and r.find(".//" + q(NS_CMD, "bad-action")) is not None,
         "XEP-0050 §4.6: an action the stage does not offer (next): <bad-action/>", el_str(r))
    # one account's executes do not push out another account's open session
    r, cmd = command(pia, "localhost", PURGE_NODE)
    sid = cmd.get("sessionid") if cmd is not None else None
    for _ in range(40):
        command(quin, "localhost", PURGE_NODE)
    r, cmd = command(pia, "localhost", PURGE_NODE, "complete", sid, confirm_form("false"))
    t.is_(cmd.get("status") if cmd is not None else el_str(r), "completed",
          "40 executes by quin leave pia's open session alone (one session per account)")
    r, cmd = command(pia, "localhost", "urn:civitas:no-such-command")
    t.is_(error_condition(r), "item-not-found", "an unknown command node: <item-not-found/>")

    # confirmed, on the own bare JID; 4,500 more rows (written into the server's database while it
    # runs) make the purge take several loop turns (2,000 rows each)
    db = sqlite3.connect(os.path.join(srv.data_dir, [f for f in os.listdir(srv.data_dir) if f.endswith(".db")][0]),
                         timeout=30)
    ts0 = int(time.time() * 1000000) - 3600 * 1000000
    (oid,) = db.execute("SELECT oid FROM mam_owners WHERE owner = 'pia@localhost'").fetchone()
    db.executemany("INSERT INTO mam_archive (id, oid, peer, peer_res, rnd, dir, xml) "
                   "VALUES (?, ?, 'quin@localhost', 'q', ?, 0, ?)",
                   [((ts0 + i) << 4, oid, i << 4, b"<message xmlns='jabber:client' type='chat'><body>b</body></message>")
                    for i in range(4500)])
    db.commit()
    db.close()
    t.is_(count(pia), 4503, "pia's archive holds 4,503 messages before the purge")
    r, cmd = command(pia, "pia@localhost", PURGE_NODE)
    sid = cmd.get("sessionid") if cmd is not None else None
    r, cmd = command(pia, "pia@localhost", PURGE_NODE, "complete", sid, confirm_form("1"))
    note = cmd.find(q(NS_CMD, "note")) if cmd is not None else None
    t.ok(cmd is not None and cmd.get("status") == "completed" and note is not None and
         (note.text or "").startswith("4503 "),
         "confirmed: status completed once all 4,503 are gone (three batches), a note with the number", el_str(r))
    t.is_((count(pia), count(quin)), (0, 3), "pia's archive is empty; quin's is untouched")
    quin.message("pia@localhost", "after the purge")
    pia.expect_message("after the purge")
    t.is_(query(pia, []).bodies(), ["after the purge"], "the archive goes on after a purge")
    pia.end()
    quin.end()


# ---- offline + MAM: a second device gets the whole conversation ----------------------------------

def offline_and_second_device(t, srv):
    alice = login(srv, "alice", "o")
    sent = ["<message to='ivan@localhost' type='chat' id='off%d'>%s</message>" % (i, p)
            for i, p in enumerate(["<body>while you were away</body>", OMEMO, OMEMO2])]
    for s in sent:
        alice.send(s)
    alice.ping_server()
    phone = login(srv, "ivan", "phone")
    got = []
    for i in range(3):
        m = phone.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("id") == "off%d" % i)
        got.append(m)
    t.ok(all(m is not None for m in got), "offline: the phone gets the three messages once it comes online")
    phone.ping_server()
    dup = [m for m in phone.messages() if m.get("id", "").startswith("off")]
    t.is_(dup, [], "delivered once: no second copy from the archive")
    sid_phone = [dict(sids(m)).get("ivan@localhost") for m in got if m is not None]
    p = query(phone, [("with", "alice@localhost")])
    t.is_(p.ids(), sid_phone, "the offline copies carry the same stanza-ids as the archive")
    # the desktop logs in later: the whole conversation through MAM, OMEMO byte-exact
    desktop = login(srv, "ivan", "desktop")
    desktop.ping_server()
    t.is_([m for m in desktop.messages() if m.get("id", "").startswith("off")], [],
          "the second device gets no offline copy (they were delivered)")
    p = query(desktop, [("with", "alice@localhost")])
    t.is_(len(p.results), 3, "the second device gets the whole conversation through MAM")
    for i, (r, s) in enumerate(zip(p.results, sent)):
        want = ET.fromstring(s.replace("<message ", "<message xmlns='jabber:client' "))
        gotm = r[2]
        same = all(canon(a) == canon(b) for a, b in zip(list(want), list(gotm))) and len(list(want)) == len(list(gotm))
        t.ok(same, "message %d arrives byte-exact through MAM (payload, keys, whitespace)" % i, el_str(gotm))
    for c in (alice, phone, desktop):
        c.end()


# ---- retention, caps, deletion, purge --------------------------------------------------------------

def retention(t):
    yaml = ("mam:\n  max_age_days: 14\n  hosts:\n    nomam.localhost: {max_age_days: 0}\n"
            "    small.localhost: {max_messages: 5}\n")
    with Server(t, hosts=["localhost", "nomam.localhost", "small.localhost"], extra_yaml=yaml) as srv:
        for u in ("alice@localhost", "bob@localhost", "nina@nomam.localhost", "sam@small.localhost"):
            srv.adduser(u, PW)
        alice, bob = login(srv, "alice"), login(srv, "bob")
        nina = login(srv, "nina", domain="nomam.localhost")
        sam = login(srv, "sam", domain="small.localhost")
        alice.message("nina@nomam.localhost", "to nina")
        got = nina.expect_message("to nina")
        t.is_(sids(got) if got is not None else None, [], "max_age_days 0: no stanza-id stamped")
        t.is_(query(nina, []).count, 0, "max_age_days 0: nothing archived for that host")
        t.is_(query(alice, [("with", "nina@nomam.localhost")]).count, 1, "the other host's sender still archives")
        for i in range(8):
            alice.message("sam@small.localhost", "cap %d" % i)
            sam.expect_message("cap %d" % i)
        p = query(sam, [])
        t.ok(p.count <= 5 and p.bodies()[-1] == "cap 7", "max_messages 5: the oldest go, the newest stay", p.bodies())
        # age: back-date bob's archive, restart: the sweep at start deletes them
        for i in range(3):
            alice.message("bob@localhost", "old %d" % i)
            bob.expect_message("old %d" % i)
        alice.message("bob@localhost", "new")
        bob.expect_message("new")
        bob.ping_server()
        for c in (alice, bob, nina, sam):
            c.end()
        srv.stop()
        # CONTRACT.md: an older data_dir is upgraded in place at the start. The archive is written
        # back in mam schema 1's layout (the JID, host, time and stanza-id in every row; indexes
        # by_full and by_sid on (owner, sid)), bob's "old" rows back-dated by 15 days, and one row
        # with a stanza-id of the first release (32 random hex digits)
        db = sqlite3.connect(os.path.join(srv.data_dir, [f for f in os.listdir(srv.data_dir) if f.endswith(".db")][0]))
        rows = db.execute("SELECT a.id, o.owner, a.peer, a.peer_res, a.rnd, a.dir, a.xml FROM mam_archive a "
                          "JOIN mam_owners o USING (oid) ORDER BY a.id").fetchall()
        db.executescript("""
            DROP TABLE mam_archive; DROP TABLE mam_owners;
            CREATE TABLE mam_archive (id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL, host TEXT NOT NULL,
                ts INTEGER NOT NULL, peer TEXT NOT NULL, peer_res TEXT NOT NULL, sid TEXT NOT NULL, dir INTEGER NOT NULL,
                xml BLOB NOT NULL);
            CREATE INDEX mam_archive__by_time ON mam_archive (owner, ts, id);
            CREATE INDEX mam_archive__by_peer ON mam_archive (owner, peer, ts, id);
            CREATE INDEX mam_archive__by_sid ON mam_archive (owner, sid, id);
            CREATE INDEX mam_archive__by_full ON mam_archive (owner, peer, peer_res, ts, id);
            CREATE INDEX mam_archive__by_age ON mam_archive (host, ts, id);
            DELETE FROM user_tables WHERE tbl = 'mam_owners';
            INSERT INTO user_tables (tbl, user_col, domain_col) VALUES ('mam_archive', 'owner', '');
            UPDATE module_schema SET version = 1 WHERE module = 'mam';""")
        old_sids = {}
        day = 86400 * 1000000
        for rid, owner, peer, res, rnd, d, xml in rows:
            ts = rid >> 4
            if owner == "bob@localhost" and b"old " in xml:
                ts -= 15 * day          # an old row's stanza-id is as old (its time part)
            sid = "%013x%016x" % (ts, rnd & (2 ** 64 - 1))
            old_sids[(owner, bytes(xml))] = sid
            db.execute("INSERT INTO mam_archive (owner, host, ts, peer, peer_res, sid, dir, xml) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (owner, owner.split("@")[1], ts, peer, res, sid, d, xml))
        newest_ts = max(r[0] for r in rows) >> 4
        db.execute("INSERT INTO mam_archive (owner, host, ts, peer, peer_res, sid, dir, xml) VALUES "
                   "('bob@localhost', 'localhost', ?, 'alice@localhost', '', ?, 0, ?)",
                   (newest_ts - 1000000, "0123456789abcdef0123456789abcdef",
                    b"<message xmlns='jabber:client' type='chat'><body>first release</body></message>"))
        db.commit()
        db.close()
        srv.start()
        db = sqlite3.connect(os.path.join(srv.data_dir, [f for f in os.listdir(srv.data_dir) if f.endswith(".db")][0]))
        ver = db.execute("SELECT version FROM module_schema WHERE module = 'mam'").fetchone()
        idx = sorted(r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' "
                                              "AND tbl_name IN ('mam_archive', 'mam_owners')"))
        tables = sorted(r[0] for r in db.execute("SELECT tbl FROM user_tables WHERE tbl LIKE 'mam%'"))
        db.close()
        t.is_((ver, idx, tables), ((3,), ["mam_archive__by_peer", "mam_archive__by_time", "mam_owners__by_owner"],
                                   ["mam_owners", "mam_prefs"]),
              "a mam schema 1 database is upgraded to 3 at the start (owners table, two indexes; the archive's "
              "rows go with the owners row)")
        bob = login(srv, "bob")
        got = query(bob, [])
        t.is_(got.bodies(), ["first release", "new"], "max_age_days 14: messages older than 14 days are deleted")
        new_row = [sid for (owner, xml), sid in old_sids.items() if owner == "bob@localhost" and b">new<" in xml]
        t.ok(len(new_row) == 1 and got.ids()[-1:] == new_row and len(got.ids()[0]) == 29
             and got.ids()[0] != "0123456789abcdef0123456789abcdef",
             "the upgrade keeps stanza-ids; a row of the first release gets a new one", (got.ids(), new_row))
        bob = login(srv, "bob")
        newest = query(bob, []).ids()[-1:]
        r = query(bob, [("after-id", newest[0] if newest else "none")])
        t.is_((r.error, r.ids()), (None, []),
              "after the upgrade a stanza-id is found again (after-id of the newest: no error, nothing after it)")
        # civitasctl user purge-archive
        r = srv.ctl("user", "purge-archive", "bob@localhost")
        t.ok(r.returncode == 0, "civitasctl user purge-archive exits 0", r.stderr)
        t.is_(query(bob, []).count, 0, "purge-archive: bob's archive is empty")
        alice = login(srv, "alice")
        t.ok(query(alice, []).count > 0, "purge-archive leaves other accounts' archives")
        # account deletion removes the archive
        r = srv.ctl("user", "del", "alice@localhost")
        t.is_(r.returncode, 0, "civitasctl user del alice")
        alice.wait_closed()
        srv.adduser("alice@localhost", PW)
        alice = login(srv, "alice")
        t.is_(query(alice, []).count, 0, "a deleted account's archive is gone (a new account of that name sees none)")
        db = sqlite3.connect(os.path.join(srv.data_dir, [f for f in os.listdir(srv.data_dir) if f.endswith(".db")][0]))
        orphans = db.execute("SELECT COUNT(*) FROM mam_archive WHERE oid NOT IN (SELECT oid FROM mam_owners)").fetchone()
        db.close()
        t.is_(orphans, (0,), "no archive row is left without its account (the owners row's cascade)")
        alice.end()
        bob.end()


# ---- federation ----------------------------------------------------------------------------------

def federation(t):
    ca = Certs()
    pa, pb = free_port(), free_port()
    lst = lambda p: {"client": ["127.0.0.1:0"], "client_tls": ["127.0.0.1:0"], "server": ["127.0.0.1:%d" % p]}  # noqa
    part = lambda d, p: "    - domain: %s\n      route: \"127.0.0.1:%d\"\n      ca: \"%s\"\n" % (d, p, ca.ca)  # noqa
    a = Server(t, hosts=["a.example"], certs=ca, listen=lst(pa), start=False,
               extra_yaml="federation:\n  mode: allowlist\n  dialback: false\n  partners:\n" + part("b.example", pb))
    b = Server(t, hosts=["b.example"], certs=ca, listen=lst(pb), start=False,
               extra_yaml="federation:\n  mode: allowlist\n  dialback: false\n  partners:\n" + part("a.example", pa))
    with a, b:
        a.start()
        b.start()
        a.adduser("alice@a.example", PW)
        b.adduser("bob@b.example", PW)
        b.adduser("olga@b.example", PW)
        alice = login(a, "alice", domain="a.example")
        bob = login(b, "bob", domain="b.example")
        alice.send("<message to='bob@b.example' type='chat'><body>over s2s</body>"
                   "<stanza-id xmlns='%s' by='bob@b.example' id='forged'/></message>" % NS_SID)
        got = bob.expect_message("over s2s", timeout=30)
        t.ok(got is not None, "s2s: bob@b gets alice@a's message")
        s = sids(got) if got is not None else []
        t.ok(len(s) == 1 and s[0][0] == "bob@b.example" and s[0][1] != "forged",
             "s2s in: the forged stanza-id is stripped, ours stamped", s)
        t.is_(query(bob, [("with", "alice@a.example")]).bodies(), ["over s2s"], "s2s in: archived for the recipient")
        t.is_(query(alice, [("with", "bob@b.example")]).bodies(), ["over s2s"], "s2s out: archived for the sender")
        alice.send("<message to='olga@b.example' type='chat'>%s</message>" % OMEMO2)
        alice.ping_server()
        bob.message("alice@a.example", "reply over s2s")
        t.ok(alice.expect_message("reply over s2s", timeout=30) is not None, "s2s: the reply arrives")
        olga = login(b, "olga", domain="b.example")
        m = olga.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.find(q("urn:xmpp:omemo:2", "encrypted")) is not None)
        t.ok(m is not None, "s2s + offline: olga gets the OMEMO message when she logs in")
        p = query(olga, [("with", "alice@a.example")])
        e = p.results[0][2].find(q("urn:xmpp:omemo:2", "encrypted")) if p.results else None
        t.ok(e is not None and canon(e) == canon(ET.fromstring(OMEMO2)), "s2s + offline: archived byte-exact for olga")
        t.is_(p.ids(), [dict(sids(m)).get("olga@b.example")] if m is not None else None,
              "s2s + offline: the offline copy's stanza-id is the archive id")
        t.is_(query(alice, [("with", "bob@b.example")]).bodies(), ["over s2s", "reply over s2s"],
              "the sender's archive has both directions of the federated chat")
        for c in (alice, bob, olga):
            c.end()


# ---- slixmpp (xep_0313 + xep_0059) ----------------------------------------------------------------

def slixmpp_history(t, srv):
    import slixmpp
    import slixmpp_helpers as sh

    async def scenario():
        sender = login(srv, "judy", "raw")
        for i in range(7):
            sender.message("kate@localhost", "slix %d" % i)
        sender.ping_server()
        c = sh.Client("kate@localhost/slix", PW, srv.ca, plugins=("xep_0030", "xep_0059", "xep_0313", "xep_0359"),
                      presence=False)
        ok = await sh.login(srv, c)
        t.ok(ok, "slixmpp: kate logs in", repr(c.failed))
        info = await c.plugin["xep_0030"].get_info(jid="kate@localhost", local=False, timeout=10)
        feats = info["disco_info"]["features"]
        t.ok(NS_MAM in feats and NS_SID in feats, "slixmpp disco: the account advertises mam:2 and sid:0")
        bodies = []
        async for msg in c.plugin["xep_0313"].iterate(with_jid=slixmpp.JID("judy@localhost"), rsm={"max": 3}):
            bodies.append(msg["mam_result"]["forwarded"]["stanza"]["body"])
        t.is_(bodies, ["slix %d" % i for i in range(7)], "slixmpp xep_0313 iterate (xep_0059 pages of 3): whole history")
        c.disconnect()
        sender.end()

    run_async(scenario(), 90)


def crash_and_restart(t):
    """Archive batches are committed lazily (synchronous = NORMAL, README "Durability"): a committed
    batch survives SIGKILL of the process; a clean stop writes what is still queued."""
    with Server(t) as srv:
        for u in ("alice", "bob"):
            srv.adduser("%s@localhost" % u, PW)
        alice, bob = login(srv, "alice"), login(srv, "bob")
        for i in range(20):
            alice.message("bob@localhost", "crash %02d" % i)
        got = [bob.expect_message("crash %02d" % i) for i in range(20)]
        t.ok(all(g is not None for g in got), "bob receives 20 messages")
        pb = query(bob, [("with", "alice@localhost")])      # a query writes the queued rows first
        pa = query(alice, [("with", "bob@localhost")])
        want = ["crash %02d" % i for i in range(20)]
        t.is_((pb.bodies(), pa.bodies()), (want, want), "a query right after delivery sees every message")
        t.is_(pb.ids(), [sids(g)[0][1] if g is not None and sids(g) else None for g in got],
              "the archive's ids are the stanza-ids delivered")
        srv.proc.kill()                                      # SIGKILL: no clean shutdown
        srv.proc.wait(10)
        srv.exit_code = None
        alice.close()
        bob.close()
        srv.start()
        alice, bob = login(srv, "alice"), login(srv, "bob")
        pb2, pa2 = query(bob, [("with", "alice@localhost")]), query(alice, [("with", "bob@localhost")])
        t.is_((pb2.bodies(), pb2.ids()), (want, pb.ids()),
              "after SIGKILL the recipient's archive keeps every committed row, same ids")
        t.is_((pa2.bodies(), pa2.ids()), (want, pa.ids()), "after SIGKILL the sender's archive keeps every row")
        # a clean stop right after the messages (no query wrote the queue): nothing is lost
        for i in range(10):
            bob.message("alice@localhost", "stop %02d" % i)
        t.ok(all(alice.expect_message("stop %02d" % i) is not None for i in range(10)), "alice receives 10 more")
        alice.close()
        bob.close()
        t.is_(srv.stop(), 0, "civitasd exits 0 on SIGTERM")
        srv.start()
        alice = login(srv, "alice")
        pa3 = query(alice, [("with", "bob@localhost")])
        t.is_(pa3.bodies(), want + ["stop %02d" % i for i in range(10)],
              "a restart keeps every row, also those still queued at the stop")
        alice.close()


def data_db(srv):
    return sqlite3.connect(os.path.join(srv.data_dir, [f for f in os.listdir(srv.data_dir) if f.endswith(".db")][0]))


def upgrade_shared_microsecond(t):
    """CONTRACT.md: an older data_dir is upgraded in place at the start. Schema 2's stanza-ids took
    the clock as it was (a leap second or an NTP step repeats microseconds): two rows of two
    accounts whose stanza-ids share their time part, their row ids 16 apart."""
    with Server(t) as srv:
        for u in ("alice", "bob"):
            srv.adduser("%s@localhost" % u, PW)
        srv.stop()
        db = data_db(srv)
        db.executescript("""
            DROP TABLE IF EXISTS mam_archive; DROP TABLE IF EXISTS mam_owners;
            CREATE TABLE mam_archive (id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL, host TEXT NOT NULL,
                ts INTEGER NOT NULL, peer TEXT NOT NULL, peer_res TEXT NOT NULL, sid TEXT NOT NULL, dir INTEGER NOT NULL,
                xml BLOB NOT NULL);
            CREATE INDEX mam_archive__by_time ON mam_archive (owner, ts, id);
            CREATE INDEX mam_archive__by_peer ON mam_archive (owner, peer, ts, id);
            CREATE INDEX mam_archive__by_sid ON mam_archive (sid, id);
            CREATE INDEX mam_archive__by_age ON mam_archive (host, ts, id);
            DELETE FROM user_tables WHERE tbl LIKE 'mam_%';
            INSERT INTO user_tables (tbl, user_col, domain_col) VALUES ('mam_archive', 'owner', '');
            INSERT INTO user_tables (tbl, user_col, domain_col) VALUES ('mam_prefs', 'owner', '');
            DELETE FROM module_schema WHERE module = 'mam';
            INSERT INTO module_schema (module, version) VALUES ('mam', 2);""")
        now = int(time.time() * 1000000) - 60 * 1000000
        sid_a, sid_b = "%013x%016x" % (now, 0x1111), "%013x%016x" % (now, 0x2222)
        xml = b"<message xmlns='jabber:client' type='chat'><body>%s</body></message>"
        db.execute("INSERT INTO mam_archive VALUES (1, 'bob@localhost', 'localhost', ?, 'alice@localhost', '', ?, 0, ?)",
                   (now, sid_b, xml % b"to bob"))
        db.execute("INSERT INTO mam_archive VALUES (17, 'alice@localhost', 'localhost', ?, 'bob@localhost', '', ?, 1, ?)",
                   (now, sid_a, xml % b"from alice"))
        db.commit()
        db.close()
        try:
            srv.start()
            started = True
        except Exception as e:          # the harness raises when civitasd does not get ready
            started = False
            t.diag(str(e)[-600:])
        t.ok(started, "a schema-2 archive whose stanza-ids share a microsecond (row ids 16 apart) is upgraded")
        if not started:
            return
        alice, bob = login(srv, "alice"), login(srv, "bob")
        t.is_((query(alice, []).ids(), query(bob, []).ids()), ([sid_a], [sid_b]),
              "both rows keep their stanza-ids after the upgrade")
        alice.end()
        bob.end()


def stamps_after_a_wrong_clock(t):
    """A row stamped while the clock was wrong (years ahead, then corrected) must not pin every later
    stanza-id and delay stamp to that time (XEP-0313 §5.1.1 / XEP-0203: the stamp is when the
    server archived the message), nor keep the rows of a purge 'up to now'."""
    with Server(t) as srv:
        for u in ("alice", "bob"):
            srv.adduser("%s@localhost" % u, PW)
        alice, bob = login(srv, "alice"), login(srv, "bob")
        alice.message("bob@localhost", "before")
        bob.expect_message("before")
        query(bob, [])                  # writes the queue: the tables exist
        alice.end()
        bob.end()
        srv.stop()
        db = data_db(srv)
        (oid,) = db.execute("SELECT oid FROM mam_owners WHERE owner = 'bob@localhost'").fetchone()
        future = int(time.time() * 1000000) + 5 * 365 * 86400 * 1000000
        db.execute("INSERT INTO mam_archive (id, oid, peer, peer_res, rnd, dir, xml) VALUES (?, ?, 'carol@localhost',"
                   " '', 7, 0, ?)", (future << 4 | 7, oid,
                                     b"<message xmlns='jabber:client' type='chat'><body>wrong clock</body></message>"))
        db.commit()
        db.close()
        srv.start()
        alice, bob = login(srv, "alice"), login(srv, "bob")
        alice.message("bob@localhost", "after")
        bob.expect_message("after")
        p = query(bob, [("with", "alice@localhost")])
        stamps = [s for (i, s, m, r) in p.results]
        year = time.gmtime().tm_year
        t.ok(len(stamps) == 2 and all(s and int(s[:4]) in (year - 1, year, year + 1) for s in stamps),
             "a message archived now has a delay stamp of now, not of the wrong clock's newest row", stamps)
        alice.end()
        bob.end()


def after_2041(t):
    """A stanza-id's time part has 13 hex digits (52 bits of microseconds, to 2112): a row stamped
    after 2^51 us (2041-05-10) is found by its id and by a start filter like any other."""
    with Server(t) as srv:
        srv.adduser("alice@localhost", PW)
        srv.adduser("bob@localhost", PW)
        alice, bob = login(srv, "alice"), login(srv, "bob")
        alice.message("bob@localhost", "now")
        bob.expect_message("now")
        query(bob, [])                  # writes the queue: the owners row exists
        db = data_db(srv)
        (oid,) = db.execute("SELECT oid FROM mam_owners WHERE owner = 'bob@localhost'").fetchone()
        later = 2 ** 51 + 86400 * 1000000          # 2041-05-11
        db.execute("INSERT INTO mam_archive (id, oid, peer, peer_res, rnd, dir, xml) VALUES (?, ?, 'alice@localhost',"
                   " '', 5, 0, ?)", (later << 4 | 5, oid,
                                     b"<message xmlns='jabber:client' type='chat'><body>2041</body></message>"))
        db.commit()
        db.close()
        sid = "%013x%016x" % (later, 5)
        p = query(bob, [("start", "2041-05-11T00:00:00Z")])
        t.is_(p.bodies(), ["2041"], "a start filter after 2041-05-10 finds the rows stamped after it")
        first = query(bob, []).ids()[0]
        r = query(bob, [("after-id", first)])
        t.is_((r.error, r.ids()), (None, [sid]), "after-id lists the 2041 row")
        r = query(bob, [("before-id", sid)])
        t.is_((r.error, r.ids()), (None, [first]), "a stanza-id stamped after 2041-05-10 is found (before-id)")
        alice.end()
        bob.end()


def main(t):
    with Server(t) as srv:
        for u in ("alice", "bob", "carol", "erin", "frank", "gina", "hugo", "ivan", "judy", "kate", "lena", "mike", "nora", "otto", "pia", "quin"):
            srv.adduser("%s@localhost" % u, PW)
        t.run(archive_both_directions, t, srv)
        t.run(spoofing_and_disco, t, srv)
        t.run(carbons_stanza_ids, t, srv)
        t.run(paging, t, srv)
        t.run(with_full_jid, t, srv)
        t.run(preferences, t, srv)
        t.run(adhoc_purge, t, srv)
        t.run(offline_and_second_device, t, srv)
        t.run(slixmpp_history, t, srv)
    t.run(retention, t)
    t.run(federation, t)
    t.run(crash_and_restart, t)
    t.run(upgrade_shared_microsecond, t)
    t.run(stamps_after_a_wrong_clock, t)
    t.run(after_2041, t)


if __name__ == "__main__":     # tests/bench/mam_latency.py imports the query helpers
    Tap().main(main)
