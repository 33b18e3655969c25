#!/usr/bin/python3
# tests/integration/test_e2e_policy.py: the e2e_policy module (issue 11): chat and normal messages with
# a <body> but no OMEMO, OpenPGP or OTR payload are refused with <policy-violation/> (require) or
# delivered with one notice per conversation per day to the sender (warn), per host and per partner.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Tap, Server, Certs, connect_login, q, el_str, error_condition, free_port,  # noqa: E402
                     NS_CLIENT, NS_STANZAS)

PW = "pw-e2e"
NS_AXOLOTL = "eu.siacs.conversations.axolotl"
NS_OMEMO2 = "urn:xmpp:omemo:2"
NS_OX = "urn:xmpp:openpgp:0"
NS_PGP = "jabber:x:encrypted"
NS_EME = "urn:xmpp:eme:0"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
NS_RECEIPTS = "urn:xmpp:receipts"
NS_MARKERS = "urn:xmpp:chat-markers:0"

# fake but well-formed payloads: the server looks only at the elements
OMEMO_LEGACY = ("<encrypted xmlns='%s'><header sid='1'><key rid='2'>a2V5</key><iv>aXY=</iv></header>"
                "<payload>cGF5bG9hZA==</payload></encrypted>" % NS_AXOLOTL)
OMEMO_2 = ("<encrypted xmlns='%s'><header sid='1'><keys jid='x@y'><key rid='2'>a2V5</key></keys></header>"
           "<payload>cGF5bG9hZA==</payload></encrypted>" % NS_OMEMO2)
OPENPGP = "<openpgp xmlns='%s'>QkFTRTY0</openpgp>" % NS_OX
LEGACY_PGP = "<x xmlns='%s'>hQEMA0000</x>" % NS_PGP


def raw_message(c, to, id_, body=None, payload="", type_="chat"):
    b = "<body>%s</body>" % body if body is not None else ""
    t = " type='%s'" % type_ if type_ else ""
    c.send("<message to='%s' id='%s'%s>%s%s</message>" % (to, id_, t, b, payload))


def by_id(c, id_, timeout=5):
    return c.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("id") == id_, timeout=timeout)


def error_text(el):
    e = el.find(q(NS_CLIENT, "error")) if el is not None else None
    return e.findtext(q(NS_STANZAS, "text")) if e is not None else None


def notices(c, from_):
    """Messages from the server (from = the host) with a body, already received."""
    c._recv_some(0)
    return [el for el in c.inbox if el.tag == q(NS_CLIENT, "message") and el.get("from") == from_
            and el.find(q(NS_CLIENT, "body")) is not None]


def refused(t, sender, to, id_, what, policy_host):
    e = by_id(sender, id_)
    t.ok(e is not None and e.get("type") == "error" and error_condition(e) == "policy-violation",
         "%s: refused with <policy-violation/>" % what, el_str(e))
    txt = error_text(e) or ""
    t.ok("e2e" in txt and "require" in txt and policy_host in txt,
         "%s: the error's <text/> names the policy (e2e: require, of %s)" % (what, policy_host), txt)


def delivered(t, rcpt, id_, what, timeout=5):
    m = by_id(rcpt, id_, timeout)
    t.ok(m is not None and m.get("type") != "error", "%s: delivered" % what, rcpt.dump)
    return m


def one_host_policies(t):
    hosts = ["req.example", "open.example", "warn.example"]
    yaml = ("e2e_policy:\n  mode: off\n  hosts:\n    req.example: {mode: require}\n"
            "    warn.example: {mode: warn}\n")
    with Server(t, hosts=hosts, extra_yaml=yaml) as srv:
        for u in ("alice@req.example", "bob@req.example", "carol@open.example", "dave@open.example",
                  "wanda@warn.example", "walt@warn.example", "wilma@warn.example"):
            srv.adduser(u, PW)
        login = lambda u, d: connect_login(srv, u, PW, resource="r", domain=d)  # noqa: E731
        alice, bob = login("alice", "req.example"), login("bob", "req.example")
        carol, dave = login("carol", "open.example"), login("dave", "open.example")
        wanda, walt, wilma = (login("wanda", "warn.example"), login("walt", "warn.example"),
                              login("wilma", "warn.example"))
        for c in (alice, bob, carol, dave, wanda, walt, wilma):
            c.presence()
        for c, d in ((alice, "req.example"), (bob, "req.example"), (carol, "open.example"),
                     (dave, "open.example"), (wanda, "warn.example"), (walt, "warn.example"),
                     (wilma, "warn.example")):
            c.ping_server(d)

        # --- require -------------------------------------------------------------------------
        raw_message(alice, "bob@req.example/r", "p1", body="plain hello")
        refused(t, alice, "bob@req.example", "p1", "require: a plaintext chat message", "req.example")
        raw_message(alice, "bob@req.example", "p2", body="plain normal", type_=None)
        refused(t, alice, "bob@req.example", "p2", "require: a plaintext normal message (no type) to the bare JID",
                "req.example")
        raw_message(alice, "bob@req.example", "p3", body="claims rot13",
                    payload="<encryption xmlns='%s' namespace='urn:example:rot13'/>" % NS_EME)
        refused(t, alice, "bob@req.example", "p3", "require: XEP-0380 naming an unknown method does not count",
                "req.example")
        bob.ping_server("req.example")
        t.ok(not any(m.get("id") in ("p1", "p2", "p3") for m in bob.messages()),
             "require: the refused messages never reach the recipient", bob.dump)

        fine = [("legacy OMEMO (eu.siacs.conversations.axolotl)", "This message is OMEMO encrypted.", OMEMO_LEGACY),
                ("OMEMO 2 (urn:xmpp:omemo:2)", None, OMEMO_2),
                ("OMEMO with a fallback body and XEP-0380", "This message is OMEMO encrypted.",
                 OMEMO_2 + "<encryption xmlns='%s' namespace='%s'/>" % (NS_EME, NS_OMEMO2)),
                ("XEP-0373 OpenPGP", "This message is encrypted.", OPENPGP),
                ("XEP-0027 legacy OpenPGP", "This message is encrypted.", LEGACY_PGP),
                ("OTR (body starts with ?OTR)", "?OTR:AAMDJ+MVmSfjFZcAAAAAAQAAAAIAAADA.", ""),
                ("OTR query message", "?OTRv23? alice would like an OTR conversation", ""),
                ("XEP-0380 naming OMEMO", "This message is encrypted with OMEMO, which your client "
                 "does not support.", "<encryption xmlns='%s' namespace='%s' name='OMEMO'/>" % (NS_EME, NS_AXOLOTL)),
                ("XEP-0380 naming OTR", "?OTR fallback", "<encryption xmlns='%s' namespace='urn:xmpp:otr:0'/>" % NS_EME),
                ("a chat state without body", None, "<composing xmlns='%s'/>" % NS_CHATSTATES),
                ("a delivery receipt without body", None, "<received xmlns='%s' id='x1'/>" % NS_RECEIPTS),
                ("a chat marker without body", None, "<displayed xmlns='%s' id='x1'/>" % NS_MARKERS)]
        for i, (what, body, payload) in enumerate(fine):
            raw_message(alice, "bob@req.example/r", "ok%d" % i, body=body, payload=payload)
            delivered(t, bob, "ok%d" % i, "require: " + what)
        raw_message(alice, "bob@req.example/r", "gc1", body="groupchat text", type_="groupchat")
        delivered(t, bob, "gc1", "require: type groupchat is exempt (group chat is a later issue)")
        raw_message(alice, "bob@req.example/r", "hl1", body="headline text", type_="headline")
        delivered(t, bob, "hl1", "require: type headline is exempt (the policy covers chat and normal)")
        alice.send("<message to='bob@req.example/r' id='er1' type='error'><body>plain</body>"
                   "<error type='cancel'><item-not-found xmlns='%s'/></error></message>" % NS_STANZAS)
        delivered_err = by_id(bob, "er1")
        t.ok(delivered_err is not None and delivered_err.get("type") == "error",
             "require: an error message with a body is exempt (RFC 6120 §8.3.1: errors are never refused)",
             bob.dump)
        raw_message(alice, "req.example", "srv1", body="hello server")
        alice.ping_server("req.example")
        t.ok(by_id(alice, "srv1", timeout=0.5) is None,
             "require: a message to the server itself is exempt (no <policy-violation/>)", alice.dump)

        # across two hosts of one server: the stricter host's mode applies
        raw_message(carol, "alice@req.example/r", "x1", body="from an open host")
        refused(t, carol, "alice@req.example", "x1", "open host -> require host: plaintext", "req.example")
        raw_message(alice, "carol@open.example/r", "x2", body="to an open host")
        refused(t, alice, "carol@open.example", "x2", "require host -> open host: plaintext", "req.example")

        # --- off (per host) ------------------------------------------------------------------
        raw_message(carol, "dave@open.example/r", "o1", body="plain on the open host")
        delivered(t, dave, "o1", "off: plaintext between users of a host with mode off")
        carol.ping_server("open.example")
        t.ok(not notices(carol, "open.example"), "off: no notice", carol.dump)

        # --- warn ----------------------------------------------------------------------------
        raw_message(wanda, "walt@warn.example/r", "w1", body="plain warned")
        delivered(t, walt, "w1", "warn: a plaintext message")
        wanda.ping_server("warn.example")
        n = notices(wanda, "warn.example")
        t.is_(len(n), 1, "warn: the sender gets one notice from the server")
        if n:
            txt = n[0].findtext(q(NS_CLIENT, "body")) or ""
            t.ok(n[0].get("to") == "wanda@warn.example/r" and n[0].get("type") == "chat",
                 "warn: the notice goes to the sender's full JID, type chat like the message", el_str(n[0]))
            t.ok("e2e" in txt and "warn" in txt and "walt@warn.example" in txt,
                 "warn: the notice names the policy and the recipient", txt)
            wanda.inbox.remove(n[0])
        raw_message(wanda, "walt@warn.example", "w2", body="plain again")
        delivered(t, walt, "w2", "warn: the second plaintext message in the conversation")
        wanda.ping_server("warn.example")
        t.is_(len(notices(wanda, "warn.example")), 0,
              "warn: no second notice in the same conversation within a day")
        raw_message(walt, "wanda@warn.example/r", "w3", body="plain reply")
        delivered(t, wanda, "w3", "warn: the reply")
        walt.ping_server("warn.example")
        t.is_(len(notices(walt, "warn.example")), 1, "warn: the other side's sender gets a notice of their own")
        raw_message(wanda, "wilma@warn.example/r", "w4", body="plain to someone else", type_="normal")
        delivered(t, wilma, "w4", "warn: plaintext in another conversation")
        wanda.ping_server("warn.example")
        n = notices(wanda, "warn.example")
        t.ok(len(n) == 1 and n[0].get("type") == "normal" and "wilma@warn.example" in el_str(n[0]),
             "warn: another conversation gets its own notice (type normal like the message)",
             [el_str(x) for x in n])
        for x in n:
            wanda.inbox.remove(x)
        raw_message(wanda, "wilma@warn.example/r", "w5", body=None, payload=OMEMO_2)
        raw_message(wanda, "walt@warn.example/r", "w6", body="x", payload=OMEMO_LEGACY)
        delivered(t, wilma, "w5", "warn: an encrypted message")
        delivered(t, walt, "w6", "warn: an encrypted message with a fallback body")
        for c in (alice, bob, carol, dave, wanda, walt, wilma):
            c.end()


def partner_yaml(domain, port, ca, e2e=None):
    s = "    - domain: %s\n      route: \"127.0.0.1:%d\"\n      ca: \"%s\"\n" % (domain, port, ca)
    if e2e:
        s += "      e2e: %s\n" % e2e
    return s


def per_partner(t):
    """a.example: host mode off (the default), partner b.example e2e: require.
    b.example: host mode require, partner a.example e2e: warn (the partner's value wins)."""
    certs = Certs()
    pa, pb = free_port(), free_port()
    lst = lambda p: {"client": ["127.0.0.1:0"], "server": ["127.0.0.1:%d" % p]}  # noqa: E731
    a = Server(t, hosts=["a.example"], certs=certs, listen=lst(pa), extra_yaml=(
        "federation:\n  partners:\n" + partner_yaml("b.example", pb, certs.ca, "require")))
    b = Server(t, hosts=["b.example"], certs=certs, listen=lst(pb), extra_yaml=(
        "federation:\n  partners:\n" + partner_yaml("a.example", pa, certs.ca, "warn") +
        "e2e_policy: {mode: require}\n"))
    with a, b:
        a.adduser("alice@a.example", PW)
        a.adduser("ann@a.example", PW)
        b.adduser("bob@b.example", PW)
        b.adduser("bert@b.example", PW)
        alice = connect_login(a, "alice", PW, resource="r", domain="a.example")
        ann = connect_login(a, "ann", PW, resource="r", domain="a.example")
        bob = connect_login(b, "bob", PW, resource="r", domain="b.example")
        bert = connect_login(b, "bert", PW, resource="r", domain="b.example")
        for c in (alice, ann, bob, bert):
            c.presence()

        raw_message(alice, "ann@a.example/r", "l1", body="plain local")
        delivered(t, ann, "l1", "host mode off: plaintext between local users flows")
        raw_message(bob, "bert@b.example/r", "l2", body="plain local on b")
        refused(t, bob, "bert@b.example", "l2", "host mode require: local plaintext refused", "b.example")

        # encrypted first: it also sets up both s2s streams
        raw_message(alice, "bob@b.example/r", "e1", body=None, payload=OMEMO_2)
        delivered(t, bob, "e1", "partner require: OMEMO to the partner", timeout=20)
        raw_message(bob, "alice@a.example/r", "e2", body="OMEMO fallback", payload=OMEMO_LEGACY)
        delivered(t, alice, "e2", "partner require: OMEMO from the partner", timeout=20)

        raw_message(alice, "bob@b.example/r", "r1", body="plain to the partner")
        refused(t, alice, "bob@b.example", "r1", "partner require: plaintext to the partner", "a.example")
        raw_message(bob, "alice@a.example/r", "r2", body="plain from the partner")
        e = by_id(bob, "r2", timeout=20)
        t.ok(e is not None and error_condition(e) == "policy-violation" and e.get("from") == "alice@a.example/r",
             "partner require: plaintext from the partner is bounced over s2s with <policy-violation/>", el_str(e))
        txt = error_text(e) or ""
        t.ok("e2e" in txt and "require" in txt and "a.example" in txt,
             "partner require: the bounce's <text/> names a.example's policy", txt)
        alice.ping_server("a.example")
        t.ok(not any(m.get("id") in ("r1", "r2") for m in alice.messages() + bob.messages()
                     if m.get("type") != "error"),
             "partner require: no plaintext crossed in either direction")
        bob.ping_server("b.example")
        n = notices(bob, "b.example")
        t.ok(len(n) == 1 and "alice@a.example" in el_str(n[0]),
             "partner e2e: warn overrides b.example's host mode require: bob's plaintext left b.example "
             "with a notice", [el_str(x) for x in n])
        for c in (alice, ann, bob, bert):
            c.end()


def main(t):
    t.run(one_host_policies, t)
    t.run(per_partner, t)


if __name__ == "__main__":
    Tap(timeout=240).main(main)
