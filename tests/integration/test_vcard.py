#!/usr/bin/python3
# tests/integration/test_vcard.py: XEP-0054 vcard-temp: one's own vCard (get, set, replace), other
# users' vCards, errors (none, no such account, someone else's card), the size limit.
import base64
import hashlib
import os
import sys
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Tap, Server, connect_login, q, el_str,  # noqa: E402
                     NS_CLIENT, NS_DISCO_INFO)
from harness import error_type_condition, canon  # noqa: E402

PW = "pw-for-vcard"
NS_V = "vcard-temp"
MAX_SIZE = 2048
CARD = ("<vCard xmlns='vcard-temp'><FN>Alice Liddell</FN><N><FAMILY>Liddell</FAMILY><GIVEN>Alice</GIVEN>"
        "<MIDDLE/></N><NICKNAME>al &amp; ice &lt;3 — Ünïcødé</NICKNAME>"
        "<TEL><HOME/><VOICE/><NUMBER>+44 1865 000000</NUMBER></TEL>"
        "<DESC>  line one\nline two  </DESC><PHOTO><TYPE>image/png</TYPE><BINVAL>iVBORw0KGgo=</BINVAL></PHOTO>"
        "</vCard>")


def card_of(r):
    return r.find(q(NS_V, "vCard")) if r is not None and r.get("type") == "result" else None


def scenario(t, srv):
    a = connect_login(srv, "alice", PW, resource="v")
    b = connect_login(srv, "bob", PW, resource="v")

    r = a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to="localhost")
    feats = [f.get("var") for f in r.iter(q(NS_DISCO_INFO, "feature"))] if r is not None else []
    t.ok(NS_V in feats, "XEP-0054 §4: the server advertises the vcard-temp feature", el_str(r))

    r = a.iq("get", "<vCard xmlns='vcard-temp'/>")
    c = card_of(r)
    t.ok(c is not None and len(c) == 0 and not (c.text or "").strip(),
         "XEP-0054 §3.1: no vCard yet -> an IQ result with an empty <vCard/>", el_str(r))

    r = a.iq("set", CARD)
    t.ok(r is not None and r.get("type") == "result", "XEP-0054 §3.2: setting one's vCard (no 'to') -> result",
         el_str(r))
    want = canon(ET.fromstring(CARD))
    r = a.iq("get", "<vCard xmlns='vcard-temp'/>")
    t.ok(card_of(r) is not None and canon(card_of(r)) == want,
         "XEP-0054 §3.1: the owner gets back exactly the vCard stored (escapes, Unicode, whitespace)", el_str(r))

    r = b.iq("get", "<vCard xmlns='vcard-temp'/>", to="alice@localhost")
    t.ok(card_of(r) is not None and canon(card_of(r)) == want and r.get("from") == "alice@localhost",
         "XEP-0054 §3.3: another user reads alice's vCard at her bare JID; the server answers for her", el_str(r))

    r = a.iq("get", "<vCard xmlns='vcard-temp'/>", to="bob@localhost")
    t.is_(error_type_condition(r), ("cancel", "service-unavailable"),
          "XEP-0054 §3.3: a user without a vCard -> <service-unavailable/>")
    r = a.iq("get", "<vCard xmlns='vcard-temp'/>", to="nobody@localhost")
    t.is_(error_type_condition(r), ("cancel", "service-unavailable"),
          "XEP-0054 §3.3: an account that does not exist -> <service-unavailable/> (same answer as no vCard)")

    r = b.iq("set", "<vCard xmlns='vcard-temp'><FN>Mallory</FN></vCard>", to="alice@localhost")
    t.is_(error_type_condition(r), ("auth", "forbidden"), "XEP-0054 §3.2: setting another user's vCard -> <forbidden/>")

    new = "<vCard xmlns='vcard-temp'><FN>Alice L.</FN></vCard>"
    r = a.iq("set", new, to="alice@localhost")
    t.ok(r is not None and r.get("type") == "result", "XEP-0054 §3.2: a set to one's own bare JID is accepted",
         el_str(r))
    r = b.iq("get", "<vCard xmlns='vcard-temp'/>", to="alice@localhost")
    t.ok(card_of(r) is not None and canon(card_of(r)) == canon(ET.fromstring(new)),
         "XEP-0054 §3.2: a set replaces the whole vCard (the earlier one is gone)", el_str(r))

    big = "<vCard xmlns='vcard-temp'><DESC>%s</DESC></vCard>" % ("x" * (MAX_SIZE + 1))
    r = a.iq("set", big)
    t.is_(error_type_condition(r), ("modify", "not-acceptable"),
          "XEP-0054 / vcard.max_size (%d bytes): a larger vCard -> <not-acceptable/>" % MAX_SIZE)
    r = a.iq("get", "<vCard xmlns='vcard-temp'/>")
    t.ok(card_of(r) is not None and canon(card_of(r)) == canon(ET.fromstring(new)),
         "the refused vCard did not replace the stored one", el_str(r))
    fits = "<vCard xmlns='vcard-temp'><DESC>%s</DESC></vCard>" % ("y" * (MAX_SIZE - 100))
    r = a.iq("set", fits)
    t.ok(r is not None and r.get("type") == "result", "a vCard under the limit is accepted", el_str(r))
    a.end()
    b.end()
    a = connect_login(srv, "alice", PW, resource="again")
    r = a.iq("get", "<vCard xmlns='vcard-temp'/>")
    d = card_of(r).find(q(NS_V, "DESC")) if card_of(r) is not None else None
    t.ok(d is not None and d.text == "y" * (MAX_SIZE - 100), "XEP-0054: the vCard is kept across sessions",
         el_str(r))
    a.end()


def avatar_hash(t, srv):
    image = b"\x89PNG not really, but bytes of an avatar"
    b64 = base64.b64encode(image).decode()
    want = hashlib.sha1(image).hexdigest()
    a1 = connect_login(srv, "alice", PW, resource="one")
    a2 = connect_login(srv, "alice", PW, resource="two")
    a2.presence()
    a2.ping_server()
    folded = b64[:10] + "\n " + b64[10:]          # vCard base64 is often folded
    r = a1.iq("set", "<vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE><BINVAL>%s</BINVAL></PHOTO>"
              "</vCard>" % folded)
    t.ok(r is not None and r.get("type") == "result", "a vCard with a photo is stored", el_str(r))
    a1.presence()

    def photo_of(el):
        x = el.find(q("vcard-temp:x:update", "x"))
        return x.findtext(q("vcard-temp:x:update", "photo")) if x is not None else None
    p = a2.expect(lambda el: el.tag == q(NS_CLIENT, "presence") and el.get("from") == a1.jid and el.get("type") is None)
    t.is_(photo_of(p) if p is not None else None, want,
          "XEP-0153 §3.2: the server adds the SHA-1 of the vCard photo to the owner's presence")
    a1.presence(extra="<x xmlns='vcard-temp:x:update'><photo>0123</photo></x>")
    p = a2.expect(lambda el: el.tag == q(NS_CLIENT, "presence") and el.get("from") == a1.jid and photo_of(el) == "0123")
    t.ok(p is not None, "XEP-0153: a hash the client sent itself is left as it is")
    r = a1.iq("set", "<vCard xmlns='vcard-temp'><FN>No photo</FN></vCard>")
    a1.presence(extra="<status>plain</status>")
    p = a2.expect(lambda el: el.tag == q(NS_CLIENT, "presence") and el.findtext(q(NS_CLIENT, "status")) == "plain")
    t.ok(p is not None and photo_of(p) is None, "without a photo in the vCard no hash is added", el_str(p))
    a1.end()
    a2.end()


def main(t):
    with Server(t, extra_yaml="vcard:\n  max_size: %d\n" % MAX_SIZE) as srv:
        for u in ("alice", "bob"):
            srv.adduser("%s@localhost" % u, PW)
        t.run(scenario, t, srv)
        t.run(avatar_hash, t, srv)


Tap().main(main)
