#!/usr/bin/python3
# tests/integration/test_s2s_im.py: instant messaging across federation between two civitas
# servers (issue 3's remote contacts, issue 4's civitas <-> civitas tests): presence subscriptions
# in both directions, presence coming and going, and offline storage of a remote message.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, connect_login, q, el_str, NS_CLIENT  # noqa: E402
from harness import federated_pair, error_condition, roster_push_for, presence_from, NS_DELAY, NS_ROSTER  # noqa: E402

PW = "pw-s2s-im"


def login(srv, user, domain, resource="r"):
    c = connect_login(srv, user, PW, resource=resource, domain=domain)
    c.iq("get", "<query xmlns='%s'/>" % NS_ROSTER)     # an interested resource gets roster pushes
    c.presence()
    return c


def subscriptions(t, a, b):
    alice = login(a, "alice", "a.example")
    bob = login(b, "bob", "b.example")
    alice.send("<presence to='bob@b.example' type='subscribe'/>")
    it = roster_push_for(alice, "bob@b.example")
    t.ok(it is not None and it.get("ask") == "subscribe" and it.get("subscription") == "none",
         "RFC 6121 §3.1.2: the user's server pushes the remote contact with ask='subscribe'", el_str(it))
    req = presence_from(bob, "alice@a.example", "subscribe")
    t.ok(req is not None and req.get("from") == "alice@a.example",
         "RFC 6121 §3.1.3: the remote contact receives the request over s2s, from the bare JID", bob.dump)
    bob.send("<presence to='alice@a.example' type='subscribed'/>")
    it = roster_push_for(bob, "alice@a.example")
    t.ok(it is not None and it.get("subscription") == "from",
         "RFC 6121 §3.1.5: the contact's server pushes subscription='from'", el_str(it))
    it = roster_push_for(alice, "bob@b.example")
    t.ok(it is not None and it.get("subscription") == "to" and it.get("ask") is None,
         "RFC 6121 §3.1.6: the approval crosses federation and the user's roster shows subscription='to'",
         el_str(it))
    p = presence_from(alice, "bob@b.example")
    t.ok(p is not None and p.get("from") == "bob@b.example/r",
         "RFC 6121 §3.1.5: the contact's server sends its available presence to the new subscriber", alice.dump)
    # the other direction
    bob.send("<presence to='alice@a.example' type='subscribe'/>")
    req = presence_from(alice, "bob@b.example", "subscribe")
    t.ok(req is not None, "RFC 6121 §3.1.3: a subscription request from the remote side arrives", alice.dump)
    alice.send("<presence to='bob@b.example' type='subscribed'/>")
    it = roster_push_for(bob, "alice@a.example", "both")
    t.ok(it is not None and it.get("subscription") == "both",
         "RFC 6121 §3.1.6: both directions approved across servers: subscription='both'", el_str(it))
    p = presence_from(bob, "alice@a.example")
    t.ok(p is not None, "the remote user's presence reaches the contact once subscribed", bob.dump)

    # presence comes and goes across federation (RFC 6121 §4.5.2, §4.6)
    bob.end()
    p = presence_from(alice, "bob@b.example", "unavailable")
    t.ok(p is not None, "RFC 6121 §4.5.2: a remote contact's disconnect reaches the user as unavailable", alice.dump)
    bob = login(b, "bob", "b.example", resource="again")
    p = presence_from(alice, "bob@b.example")
    t.ok(p is not None and p.get("from") == "bob@b.example/again",
         "RFC 6121 §4.2.2: the remote contact's initial presence is broadcast to the user", alice.dump)
    p = presence_from(bob, "alice@a.example")
    t.ok(p is not None, "RFC 6121 §4.3: the probe to the remote server is answered with the user's presence",
         bob.dump)
    r = alice.iq("set", "<block xmlns='urn:xmpp:blocking'><item jid='bob@b.example'/></block>")
    t.ok(r is not None and r.get("type") == "result", "alice blocks her remote contact", el_str(r))
    p = presence_from(bob, "alice@a.example", "unavailable")
    t.ok(p is not None, "XEP-0191 §3.3: a blocked remote contact with a subscription gets unavailable presence "
         "over federation", bob.dump)
    # §3.3: later broadcasts leave for the remote domain through the s2s path; none may reach bob
    alice.presence(extra="<status>after the block</status>")
    alice.ping_server("b.example", timeout=15)     # the presence went first on the same stream
    bob.ping_server("b.example")
    got = [el for el in bob.inbox if el.tag == q(NS_CLIENT, "presence")
           and el.get("from", "").startswith("alice@a.example")]
    t.ok(not got, "XEP-0191 §3.3: a blocked remote contact gets none of the user's later presence broadcasts",
         lambda: repr([el_str(x) for x in got]))
    r = bob.iq("get", "<query xmlns='jabber:iq:last'/>", to="alice@a.example", timeout=15)
    t.is_(error_condition(r), "service-unavailable",
          "XEP-0191 §3.3: an IQ from a blocked remote contact to the user's bare JID (jabber:iq:last) "
          "-> <service-unavailable/> over federation")
    alice.end()
    bob.end()


def offline_remote(t, a, b):
    alice = login(a, "alice", "a.example", resource="o")
    alice.message("carol@b.example", "kept for carol", id="off-1")
    alice.ping_server()
    t.ok(b.wait_log(r"s2s: incoming a\.example -> b\.example", timeout=15) is not None,
         "the message travels over the s2s stream")
    alice.ping_server("b.example", timeout=15)   # ordered after the message on the same stream
    carol = connect_login(b, "carol", PW, resource="c", domain="b.example")
    carol.presence()
    m = carol.expect_message("kept for carol", timeout=15)
    t.ok(m is not None and m.get("from") == "alice@a.example/o",
         "XEP-0160: a message from a remote user to an offline local user is stored and delivered", carol.dump)
    d = m.find(q(NS_DELAY, "delay")) if m is not None else None
    t.ok(d is not None and d.get("from") == "b.example" and d.get("stamp"),
         "XEP-0203: the stored remote message carries a delay stamp", el_str(m))
    alice.end()
    carol.end()


def main(t):
    a, b = federated_pair(t)
    with a, b:
        a.start()
        b.start()
        a.adduser("alice@a.example", PW)
        b.adduser("bob@b.example", PW)
        b.adduser("carol@b.example", PW)
        t.run(subscriptions, t, a, b)
        t.run(offline_remote, t, a, b)


if __name__ == "__main__":
    Tap().main(main)
