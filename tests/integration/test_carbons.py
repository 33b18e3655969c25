#!/usr/bin/python3
# tests/integration/test_carbons.py: XEP-0280 Message Carbons: the user's other resources that
# enabled carbons get <sent/> copies of what the user sends and <received/> copies of what the
# user receives; <private/> messages and resources without carbons get none.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, Server, connect_login, q, el_str, NS_CLIENT  # noqa: E402

PW = "pw-carbons"
NS_C = "urn:xmpp:carbons:2"
NS_F = "urn:xmpp:forward:0"


def carbon(c, kind, body):
    """The next <message> with a <kind xmlns=carbons><forwarded><message><body>body</body>... copy."""
    def match(el):
        if el.tag != q(NS_CLIENT, "message"):
            return False
        k = el.find(q(NS_C, kind))
        inner = k.find("%s/%s" % (q(NS_F, "forwarded"), q(NS_CLIENT, "message"))) if k is not None else None
        return inner is not None and inner.findtext(q(NS_CLIENT, "body")) == body
    return c.expect(match, timeout=3)


def none_of(c, body):
    c.ping_server()
    return not any(body in el_str(el) for el in c.messages())


def main(t):
    with Server(t) as srv:
        srv.adduser("alice@localhost", PW)
        srv.adduser("bob@localhost", PW)
        a1 = connect_login(srv, "alice", PW, resource="phone")
        a2 = connect_login(srv, "alice", PW, resource="desk")
        a3 = connect_login(srv, "alice", PW, resource="old")
        b = connect_login(srv, "bob", PW, resource="b")
        for c, prio in ((a1, 5), (a2, 1), (a3, 1), (b, 0)):
            c.presence(priority=prio)
        r = a2.iq("set", "<enable xmlns='%s'/>" % NS_C)
        t.ok(r is not None and r.get("type") == "result", "XEP-0280 §4: enabling carbons is answered with a result",
             el_str(r))
        a1.iq("set", "<enable xmlns='%s'/>" % NS_C)
        for c in (a1, a2, a3, b):
            c.ping_server()

        a1.message("bob@localhost/b", "sent from the phone")
        t.ok(b.expect_message("sent from the phone") is not None, "the message itself reaches bob")
        m = carbon(a2, "sent", "sent from the phone")
        t.ok(m is not None and m.get("from") == "alice@localhost" and m.get("to") == "alice@localhost/desk",
             "XEP-0280 §7: the user's other enabled resource gets a <sent/> copy from the bare JID", el_str(m))
        t.ok(none_of(a3, "sent from the phone"), "XEP-0280 §4: a resource that did not enable carbons gets no copy")

        b.message("alice@localhost/phone", "to the phone")
        t.ok(a1.expect_message("to the phone") is not None, "a message to a full JID reaches that resource")
        t.ok(carbon(a2, "received", "to the phone") is not None,
             "XEP-0280 §6: the other enabled resource gets a <received/> copy")

        b.message("alice@localhost", "to the bare JID")
        t.ok(a1.expect_message("to the bare JID") is not None, "a message to the bare JID reaches the best resource")
        t.ok(carbon(a2, "received", "to the bare JID") is not None,
             "XEP-0280 §6: ... and the other enabled resources get a <received/> copy")

        b.send("<message to='alice@localhost/phone' type='chat'><body>private one</body>"
               "<private xmlns='%s'/></message>" % NS_C)
        t.ok(a1.expect_message("private one") is not None, "a <private/> message is delivered")
        t.ok(none_of(a2, "private one"), "XEP-0280 §7: a message marked <private/> is not copied")

        b.send("<message to='alice@localhost/phone' type='groupchat'><body>gc</body></message>")
        a1.expect_message("gc")
        t.ok(none_of(a2, ">gc<"), "XEP-0280 §6: groupchat messages are not copied")

        r = a2.iq("set", "<disable xmlns='%s'/>" % NS_C)
        t.ok(r is not None and r.get("type") == "result", "XEP-0280 §5: disabling carbons is answered with a result")
        b.message("alice@localhost/phone", "after disable")
        a1.expect_message("after disable")
        t.ok(none_of(a2, "after disable"), "XEP-0280 §5: after disabling, no more copies")
        for c in (a1, a2, a3, b):
            c.end()


if __name__ == "__main__":
    Tap().main(main)
