#!/usr/bin/python3
# tests/integration/test_delivery_rules.py: RFC 6121 §8.5, the server's delivery rules for messages,
# IQs and presence to bare and full JIDs of existing and non-existing local accounts.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, Server, connect_login, q, el_str, xml_escape, NS_CLIENT  # noqa: E402
from harness import error_condition  # noqa: E402

PW = "pw-rules"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def send_msg(c, to, type_, body, id_):
    """Send, then wait for a ping round trip: the server has routed the message when it returns."""
    c.send("<message to='%s' type='%s' id='%s'><body>%s</body></message>" % (to, type_, id_, xml_escape(body)))
    c.ping_server()


def error_for(c, id_):
    """The error reply with this id that arrived before a ping round trip, or None."""
    c.ping_server()
    for el in list(c.inbox):
        if el.get("id") == id_ and el.get("type") == "error":
            return el
    return None


def got_body(c, body):
    """Whether c received a message with this body (after a round trip of its own)."""
    c.ping_server()
    return any(el.tag == q(NS_CLIENT, "message") and el.findtext(q(NS_CLIENT, "body")) == body
               for el in list(c.inbox))


def nonexistent(t, srv, s):
    send_msg(s, "nobody@localhost", "chat", "to nobody", "n1")
    t.is_(error_condition(error_for(s, "n1")), "service-unavailable",
          "RFC 6121 §8.5.1: a chat message to a nonexistent account -> <service-unavailable/>")
    send_msg(s, "nobody@localhost", "headline", "headline to nobody", "n2")
    t.ok(error_for(s, "n2") is None, "RFC 6121 §8.5.1: a headline to a nonexistent account is silently ignored")
    r = s.iq("get", "<query xmlns='urn:example:unknown'/>", to="nobody@localhost")
    t.is_(error_condition(r), "service-unavailable", "RFC 6121 §8.5.1: an IQ to a nonexistent account -> <service-unavailable/>")
    r = s.iq("get", "<query xmlns='urn:example:unknown'/>", to="nobody@localhost/res")
    t.is_(error_condition(r), "service-unavailable",
          "RFC 6121 §8.5.1: an IQ to a full JID of a nonexistent account -> <service-unavailable/>")


def bare_available(t, srv, s):
    hi = connect_login(srv, "rcpt", PW, resource="hi")
    lo = connect_login(srv, "rcpt", PW, resource="lo")
    neg = connect_login(srv, "rcpt", PW, resource="neg")
    for c, p in ((hi, 5), (lo, 1), (neg, -1)):
        c.presence(priority=p)
        c.ping_server()
    s.ping_server()
    send_msg(s, "rcpt@localhost", "headline", "headline-all", "b1")
    t.ok(got_body(hi, "headline-all") and got_body(lo, "headline-all"),
         "RFC 6121 §8.5.2.1.1: a headline to the bare JID reaches every resource with non-negative priority")
    t.ok(not got_body(neg, "headline-all"), "RFC 6121 §8.5.2.1.1: ... but not a negative-priority resource")
    send_msg(s, "rcpt@localhost", "normal", "normal-best", "b2")
    t.ok(got_body(hi, "normal-best") and not got_body(lo, "normal-best"),
         "RFC 6121 §8.5.2.1.1: a normal message to the bare JID reaches the highest-priority resource")
    send_msg(s, "rcpt@localhost", "groupchat", "gc-bare", "b3")
    t.is_(error_condition(error_for(s, "b3")), "service-unavailable",
          "RFC 6121 §8.5.2.1.1: a groupchat message to a bare JID -> <service-unavailable/>")
    t.ok(not got_body(hi, "gc-bare") and not got_body(lo, "gc-bare"),
         "RFC 6121 §8.5.2.1.1: ... and it is delivered to no resource")
    s.send("<message to='rcpt@localhost' type='error' id='b4'><body>err-bare</body>"
           "<error type='cancel'><item-not-found xmlns='%s'/></error></message>" % NS_STANZAS)
    s.ping_server()
    t.ok(not got_body(hi, "err-bare") and error_for(s, "b4") is None,
         "RFC 6121 §8.5.2.1.1: a message of type error to a bare JID is silently ignored")
    r = s.iq("get", "<query xmlns='urn:example:unknown'/>", to="rcpt@localhost")
    t.ok(error_condition(r) == "service-unavailable" and r.get("from") == "rcpt@localhost",
         "RFC 6121 §8.5.2.1.3: an IQ to the bare JID is answered by the server for the account", el_str(r))
    # full JIDs of the online account
    send_msg(s, "rcpt@localhost/lo", "groupchat", "gc-full", "f1")
    t.ok(got_body(lo, "gc-full"), "RFC 6121 §8.5.3.1: a groupchat message to an available full JID is delivered")
    send_msg(s, "rcpt@localhost/gone", "headline", "headline-gone", "f2")
    t.ok(error_for(s, "f2") is None and not got_body(hi, "headline-gone"),
         "RFC 6121 §8.5.3.2.1: a headline to an unavailable full JID is silently ignored")
    send_msg(s, "rcpt@localhost/gone", "groupchat", "gc-gone", "f3")
    t.is_(error_condition(error_for(s, "f3")), "service-unavailable",
          "RFC 6121 §8.5.3.2.1: a groupchat message to an unavailable full JID -> <service-unavailable/>")
    send_msg(s, "rcpt@localhost/gone", "chat", "chat-gone", "f4")
    t.ok(got_body(hi, "chat-gone") and error_for(s, "f4") is None,
         "RFC 6121 §8.5.3.2.1: a chat message to an unavailable full JID goes to the bare JID's best resource")
    r = s.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to="rcpt@localhost/gone")
    t.is_(error_condition(r), "service-unavailable",
          "RFC 6121 §8.5.3.2.2: an IQ to an unavailable full JID -> <service-unavailable/>")
    s.send("<iq type='get' id='f6' to='rcpt@localhost/lo'><query xmlns='urn:example:unknown'/></iq>")
    got = lo.expect(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("id") == "f6")
    t.ok(got is not None and got.get("from", "").startswith("sender@localhost/"),
         "RFC 6121 §8.5.3.1: an IQ to an available full JID is delivered to that resource", el_str(got))
    for c in (hi, lo, neg):
        c.end()


def bare_unavailable(t, srv, s):
    send_msg(s, "offl@localhost", "headline", "headline-offline", "u1")
    t.ok(error_for(s, "u1") is None,
         "RFC 6121 §8.5.2.2.1: a headline to an account without available resources is silently ignored")
    c = connect_login(srv, "offl", PW, resource="later")
    c.presence(priority=1)
    t.ok(not got_body(c, "headline-offline"), "RFC 6121 §8.5.2.2.1: ... and it is not stored for later")
    c.end()


def main(t):
    with Server(t) as srv:
        for u in ("sender", "rcpt", "offl"):
            srv.adduser(u + "@localhost", PW)
        s = connect_login(srv, "sender", PW, resource="s")
        t.run(nonexistent, t, srv, s)
        t.run(bare_available, t, srv, s)
        t.run(bare_unavailable, t, srv, s)
        s.end()


if __name__ == "__main__":
    Tap().main(main)
