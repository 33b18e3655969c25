#!/usr/bin/python3
# tests/integration/test_e2e_policy.py: the e2e_policy module (issue 11): chat and normal messages with
# a <body> but no OMEMO, OpenPGP or OTR payload are refused with <policy-violation/> (require) or
# delivered with one notice per conversation per day to the sender (warn), per host and per partner.
# Group chat (issue 15): groupchat messages are judged where they enter a room (a local client's on the
# way out, a remote occupant's at our room's door) and where a remote room's message reaches a local
# occupant; subject changes, invitations and the rooms' own broadcasts pass.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Tap, Server, Certs, connect_login, q, el_str, error_condition, free_port,  # noqa: E402
                     NS_CLIENT, NS_STANZAS)
from test_muc import join, submit  # noqa: E402

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


NS_MUC_USER = "http://jabber.org/protocol/muc#user"


def reflected_or_error(c, id_, timeout=10):
    """The room's reflection of our groupchat message id_ (or the error for it)."""
    return c.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("id") == id_, timeout=timeout)


def gc_refused(t, c, id_, what, policy_host):
    e = reflected_or_error(c, id_)
    t.ok(e is not None and e.get("type") == "error" and error_condition(e) == "policy-violation",
         "%s: refused with <policy-violation/>" % what, el_str(e))
    txt = error_text(e) or ""
    t.ok("e2e" in txt and "require" in txt and policy_host in txt,
         "%s: the error's <text/> names the policy (e2e: require, of %s)" % (what, policy_host), txt)


def gc_passes(t, c, id_, what):
    m = reflected_or_error(c, id_)
    t.ok(m is not None and m.get("type") == "groupchat", "%s: the room takes it and reflects it" % what, el_str(m))
    return m


def groupchat_policies(t):
    """Rooms on the MUC services of three hosts with modes require, warn and off."""
    hosts = ["req.example", "open.example", "warn.example"]
    yaml = ("e2e_policy:\n  mode: off\n  hosts:\n    req.example: {mode: require}\n"
            "    warn.example: {mode: warn}\n")
    with Server(t, hosts=hosts, extra_yaml=yaml) as srv:
        for u in ("alice@req.example", "bob@req.example", "carol@open.example", "wanda@warn.example"):
            srv.adduser(u, PW)
        login = lambda u, d: connect_login(srv, u, PW, resource="r", domain=d)  # noqa: E731
        alice, bob = login("alice", "req.example"), login("bob", "req.example")
        carol, wanda = login("carol", "open.example"), login("wanda", "warn.example")
        for c in (alice, bob, carol, wanda):
            c.presence()
        room = "team@conference.req.example"
        join(alice, room, "Alice")
        submit(alice, room)
        for c, nick in ((bob, "Bob"), (carol, "Carol")):
            p = join(c, room, nick)[0]
            t.ok(p is not None and p.get("type") is None, "%s enters the room on req.example's MUC" % nick,
                 lambda: el_str(p))

        # --- require -------------------------------------------------------------------------
        raw_message(alice, room, "g1", body="plain to the room", type_="groupchat")
        gc_refused(t, alice, "g1", "require: a plaintext groupchat message", "req.example")
        raw_message(alice, room, "g2", body="This message is OMEMO encrypted.", payload=OMEMO_LEGACY,
                    type_="groupchat")
        gc_passes(t, alice, "g2", "require: an OMEMO groupchat message (legacy OMEMO with a fallback body)")
        m = by_id(bob, "g2")
        t.ok(m is not None and m.get("from") == room + "/Alice", "require: the other occupants get the OMEMO "
             "message (the room's broadcast is not judged again)", bob.dump)
        raw_message(alice, room, "g3", body=None, payload=OMEMO_2, type_="groupchat")
        gc_passes(t, alice, "g3", "require: an OMEMO 2 groupchat message without body")
        raw_message(alice, room, "g4", body=None, payload="<composing xmlns='%s'/>" % NS_CHATSTATES,
                    type_="groupchat")
        gc_passes(t, alice, "g4", "require: a chat state to the room (no body)")
        alice.send("<message to='%s' type='groupchat' id='s1'><subject>Agenda</subject></message>" % room)
        s1 = reflected_or_error(alice, "s1")
        t.ok(s1 is not None and s1.get("type") == "groupchat" and s1.findtext(q(NS_CLIENT, "subject")) == "Agenda",
             "require: a subject change (<subject/> without <body/>) passes", el_str(s1))
        raw_message(carol, room, "g5", body="plain from an open host", type_="groupchat")
        gc_refused(t, carol, "g5", "require: a plaintext groupchat message from a user of an open host to a "
                   "room of the require host (the stricter mode)", "req.example")
        bob.ping_server("req.example")
        t.ok(not any(x.get("id") in ("g1", "g5") for x in bob.messages()),
             "require: the refused groupchat messages never reach the occupants", bob.dump)
        # invitations pass, with a body too
        alice.send("<message to='%s' id='i1'><x xmlns='%s'><invite to='wanda@warn.example'/></x>"
                   "<body>come in</body></message>" % (room, NS_MUC_USER))
        inv = wanda.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.find(q(NS_MUC_USER, "x")) is not None,
                           timeout=10)
        t.ok(inv is not None and inv.get("from") == room, "require: a mediated invitation (XEP-0045) with a body "
             "passes and the room forwards it", wanda.dump)
        alice.send("<message to='bob@req.example/r' id='i2'><x xmlns='jabber:x:conference' jid='%s'/>"
                   "<body>join %s</body></message>" % (room, room))
        delivered(t, bob, "i2", "require: a direct invitation (XEP-0249) with a body")
        # an invitation element does not exempt a chat or groupchat body, nor one without its addressee
        raw = ("<message to='%s' id='%s' type='%s'><body>plain</body>%s</message>")
        alice.send(raw % (room, "x1", "groupchat", "<x xmlns='jabber:x:conference'/>"))
        gc_refused(t, alice, "x1", "require: a plaintext groupchat body with an empty jabber:x:conference <x/> "
                   "is refused", "req.example")
        alice.send(raw % ("bob@req.example/r", "x2", "chat", "<x xmlns='jabber:x:conference' jid='%s'/>" % room))
        refused(t, alice, "bob@req.example/r", "x2", "require: a plaintext chat body with a direct invitation "
                "element is refused (invitations are type normal)", "req.example")
        alice.send(raw % ("bob@req.example/r", "x3", "normal", "<x xmlns='%s'><invite/></x>" % NS_MUC_USER))
        refused(t, alice, "bob@req.example/r", "x3", "require: a plaintext body with an <invite/> naming nobody "
                "is refused", "req.example")
        # a private message through the room is judged on the way in only
        raw_message(alice, room + "/Bob", "pm1", body="plain private")
        refused(t, alice, room + "/Bob", "pm1", "require: a plaintext private message to an occupant", "req.example")
        raw_message(alice, room + "/Bob", "pm2", body="x", payload=OMEMO_LEGACY)
        m = by_id(bob, "pm2")
        t.ok(m is not None and m.get("from") == room + "/Alice" and m.get("type") == "chat",
             "require: an OMEMO private message through the room arrives", bob.dump)

        # --- warn ----------------------------------------------------------------------------
        wroom = "plaza@conference.warn.example"
        join(wanda, wroom, "Wanda")
        submit(wanda, wroom)
        wanda.inbox.clear()
        raw_message(wanda, wroom, "w1", body="plain warned", type_="groupchat")
        gc_passes(t, wanda, "w1", "warn: a plaintext groupchat message")
        wanda.ping_server("warn.example")
        n = notices(wanda, "warn.example")
        t.ok(len(n) == 1 and wroom in (n[0].findtext(q(NS_CLIENT, "body")) or "") and n[0].get("type") == "normal",
             "warn: the sender gets one notice naming the room", [el_str(x) for x in n])
        for x in n:
            wanda.inbox.remove(x)
        raw_message(wanda, wroom, "w2", body="plain again", type_="groupchat")
        gc_passes(t, wanda, "w2", "warn: a second plaintext groupchat message")
        wanda.ping_server("warn.example")
        t.is_(len(notices(wanda, "warn.example")), 0, "warn: no second notice for the same room within a day")

        # --- off -----------------------------------------------------------------------------
        oroom = "square@conference.open.example"
        join(carol, oroom, "Carol")
        submit(carol, oroom)
        carol.inbox.clear()
        raw_message(carol, oroom, "o1", body="plain open", type_="groupchat")
        gc_passes(t, carol, "o1", "off: a plaintext groupchat message")
        carol.ping_server("open.example")
        t.ok(not notices(carol, "open.example"), "off: no notice", carol.dump)
        for c in (alice, bob, carol, wanda):
            c.end()


def groupchat_federated(t):
    """A room on a.example's MUC with occupants from b.example (host mode off) and c.example (require),
    both hosts of a second server. a.example: host mode off, partner b.example e2e: require."""
    certs = Certs()
    pa, pb = free_port(), free_port()
    lst = lambda p: {"client": ["127.0.0.1:0"], "server": ["127.0.0.1:%d" % p]}  # noqa: E731
    fed = "federation:\n  mode: allowlist\n  dialback: true\n  partners:\n"
    a = Server(t, hosts=["a.example"], certs=certs, listen=lst(pa), extra_yaml=(
        fed + partner_yaml("b.example", pb, certs.ca, "require") + partner_yaml("c.example", pb, certs.ca)))
    b = Server(t, hosts=["b.example", "c.example"], certs=certs, listen=lst(pb), extra_yaml=(
        fed + partner_yaml("a.example", pa, certs.ca) + partner_yaml("conference.a.example", pa, certs.ca)
        + "e2e_policy:\n  mode: off\n  hosts:\n    c.example: {mode: require}\n"))
    room = "crisis@conference.a.example"
    with a, b:
        a.adduser("alice@a.example", PW)
        b.adduser("bob@b.example", PW)
        b.adduser("carl@c.example", PW)
        alice = connect_login(a, "alice", PW, resource="r", domain="a.example")
        bob = connect_login(b, "bob", PW, resource="r", domain="b.example")
        carl = connect_login(b, "carl", PW, resource="r", domain="c.example")
        for c in (alice, bob, carl):
            c.presence()
        join(alice, room, "Alice")
        submit(alice, room)
        for c, nick in ((bob, "Bob"), (carl, "Carl")):
            p = join(c, room, nick, timeout=30)[0]
            t.ok(p is not None and p.get("type") is None, "s2s: %s enters the room on a.example" % nick,
                 lambda: el_str(p) + c.dump())
        raw_message(bob, room, "f1", body="x", payload=OMEMO_LEGACY, type_="groupchat")
        m = by_id(alice, "f1", timeout=20)
        t.ok(m is not None and m.get("from") == room + "/Bob", "s2s: a remote occupant's OMEMO groupchat message "
             "enters the room", alice.dump)
        raw_message(bob, room, "f2", body="plain from b", type_="groupchat")
        e = reflected_or_error(bob, "f2", timeout=20)
        t.ok(e is not None and e.get("type") == "error" and error_condition(e) == "policy-violation"
             and "a.example" in (error_text(e) or "") and "require" in (error_text(e) or ""),
             "s2s: partner b.example e2e require: a remote occupant's plaintext is refused at the room's door "
             "(the error names a.example's policy)", el_str(e))
        alice.ping_server("a.example")
        t.ok(not any(x.get("id") == "f2" for x in alice.messages()), "s2s: the room never broadcast it", alice.dump)
        raw_message(carl, room, "f3", body="plain from c", type_="groupchat")
        gc_refused(t, carl, "f3", "s2s: a plaintext groupchat message from a require host to a remote room",
                   "c.example")
        # a remote room's broadcast to local occupants: judged by the recipient's host mode
        raw_message(alice, room, "f4", body="plain from the room's host", type_="groupchat")
        m = by_id(bob, "f4", timeout=20)
        t.ok(m is not None and m.get("type") == "groupchat", "s2s: host mode off: bob gets a remote room's "
             "plaintext", bob.dump)
        raw_message(alice, room, "f5", body="x", payload=OMEMO_2, type_="groupchat")
        m = by_id(carl, "f5", timeout=20)
        t.ok(m is not None and m.get("type") == "groupchat", "s2s: host mode require: carl gets a remote room's "
             "OMEMO message", carl.dump)
        carl.ping_server("c.example")
        t.ok(not any(x.get("id") == "f4" for x in carl.messages()),
             "s2s: host mode require: carl never got the remote room's plaintext (f4, sent before f5)", carl.dump)
        t.ok(not [x for x in carl.inbox if x.tag == q(NS_CLIENT, "presence") and x.get("type") == "unavailable"
                  and x.get("from") == room + "/Carl"],
             "s2s: the room keeps carl: its server's <policy-violation/> bounce is no reason to kick (no 333)",
             carl.dump)
        for c in (alice, bob, carl):
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
    t.run(groupchat_policies, t)
    t.run(groupchat_federated, t)


if __name__ == "__main__":
    Tap(timeout=240).main(main)
