#!/usr/bin/python3
# tests/integration/test_c2s_stanzas.py: stanza handling between local sessions and by the server
# itself: delivery rules, 'from' stamping, IQ semantics, ping/disco/version/time, clean shutdown.
import datetime
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Tap, Server, connect_login, q, el_str,  # noqa: E402
                     NS_CLIENT, NS_STANZAS, NS_DISCO_INFO, NS_VERSION, NS_TIME)
from harness import error_type_condition  # noqa: E402

PW = "pw-for-stanzas"


def full_jid_delivery(t, srv):
    a = connect_login(srv, "alice", PW, resource="desk")
    b = connect_login(srv, "bob", PW, resource="phone")
    a.message("bob@localhost/phone", "hello bob")
    m = b.expect_message("hello bob")
    t.ok(m is not None, "RFC 6121 §8.5.3.1: a message to an online full JID is delivered to that resource",
         b.dump)
    t.is_(m.get("from") if m is not None else None, "alice@localhost/desk",
          "RFC 6120 §8.1.2.1: the server stamps 'from' with the sender's full JID")
    t.is_(m.get("to") if m is not None else None, "bob@localhost/phone", "the delivered message keeps its 'to'")
    b.message("alice@localhost/desk", "hello alice", id="m-1")
    m = a.expect_message("hello alice")
    t.ok(m is not None and m.get("from") == "bob@localhost/phone" and m.get("id") == "m-1",
         "delivery in the other direction keeps the id and stamps 'from'", el_str(m))
    # A client may put its own bare JID in 'from' (RFC 6120 §8.1.2.1); the server makes it the full JID.
    a.message("bob@localhost/phone", "bare from", from_="alice@localhost")
    m = b.expect_message("bare from")
    t.is_(m.get("from") if m is not None else None, "alice@localhost/desk",
          "RFC 6120 §8.1.2.1: a 'from' with the sender's bare JID is replaced by the full JID")
    a.end()
    b.end()


def bare_jid_priority(t, srv):
    hi = connect_login(srv, "carol", PW, resource="high")
    lo = connect_login(srv, "carol", PW, resource="low")
    neg = connect_login(srv, "carol", PW, resource="negative")
    for c, prio in ((hi, 5), (lo, 1), (neg, -1)):
        c.presence(priority=prio)
        t.ok(c.ping_server(), "presence with priority %d processed (ping round trip)" % prio)
    s = connect_login(srv, "bob", PW, resource="sender")
    s.message("carol@localhost", "to the bare jid", type_="chat")
    m = hi.expect_message("to the bare jid")
    t.ok(m is not None,
         "RFC 6121 §8.5.2.1.1: a chat message to the bare JID reaches the highest-priority resource (5)", hi.dump)
    # Barrier: a message sent afterwards to each other resource arrives after anything sent before it.
    for c in (lo, neg):
        s.message(c.jid, "barrier")
        t.ok(c.expect_message("barrier") is not None, "barrier message reaches %s" % c.jid)
    t.ok(not any(x.find(q(NS_CLIENT, "body")) is not None and x.find(q(NS_CLIENT, "body")).text ==
                 "to the bare jid" for x in neg.messages()),
         "RFC 6121 §8.5.2.1.1: a resource with negative priority does not get bare-JID messages",
         lambda: repr([el_str(x) for x in neg.messages()]))
    t.ok(not any(x.find(q(NS_CLIENT, "body")) is not None and x.find(q(NS_CLIENT, "body")).text ==
                 "to the bare jid" for x in lo.messages()),
         "RFC 6121 §8.5.2.1.1: civitas delivers to the most available resource only, not to priority 1",
         lambda: repr([el_str(x) for x in lo.messages()]))
    for c in (hi, lo, neg, s):
        c.end()


def spoofed_from(t, srv):
    a = connect_login(srv, "alice", PW, resource="spoofer")
    a.send("<message to='bob@localhost' from='mallory@localhost/x' type='chat'><body>spoof</body></message>")
    r = a.read_stream_error()
    t.ok(r.condition == "invalid-from" and r.stream_closed and r.socket_closed,
         "RFC 6120 §4.9.3.9: a 'from' that is not the sender's JID -> <invalid-from/>, stream closed", repr(r))


def iq_semantics(t, srv):
    a = connect_login(srv, "alice", PW, resource="iq")
    r = a.iq("get", "<query xmlns='urn:example:unknown-namespace'/>", to="localhost", id="unk-1")
    et, cond = error_type_condition(r)
    t.ok(r is not None and r.get("type") == "error" and r.get("id") == "unk-1" and cond == "service-unavailable",
         "RFC 6120 §8.4: an IQ get with an unknown namespace -> type='error' <service-unavailable/>, same id",
         el_str(r))
    t.ok(r is not None and r.get("from") == "localhost" and r.get("to") == a.jid,
         "RFC 6120 §8.1.1/§8.1.2: the error comes from the server to the requesting full JID", el_str(r))

    a.send("<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    r = a.expect(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("type") == "error" and el.get("id") is None)
    t.is_(error_type_condition(r)[1], "bad-request", "RFC 6120 §8.2.3: an IQ without 'id' -> <bad-request/>")

    r = a.iq("get", "<ping xmlns='urn:xmpp:ping'/><query xmlns='jabber:iq:version'/>", to="localhost",
             id="two-children")
    t.is_(error_type_condition(r)[1], "bad-request", "RFC 6120 §8.2.3: an IQ get with two children -> <bad-request/>")

    r = a.iq("get", "", to="localhost", id="no-child")
    t.is_(error_type_condition(r)[1], "bad-request", "RFC 6120 §8.2.3: an IQ get without a child -> <bad-request/>")

    # Errors and results addressed to the server are never answered (RFC 6120 §8.2.3 / §8.3.1).
    a.send("<iq type='error' id='e-1' to='localhost'><error type='cancel'>"
           "<service-unavailable xmlns='%s'/></error></iq>" % NS_STANZAS)
    a.send("<iq type='result' id='r-unsolicited' to='localhost'/>")
    t.ok(a.ping_server(), "ping after an IQ error and an unsolicited result")
    stray = [el for el in a.inbox if el.tag == q(NS_CLIENT, "iq") and el.get("id") in ("e-1", "r-unsolicited")]
    t.ok(not stray, "RFC 6120 §8.3.1: an IQ of type error or result is never answered",
         lambda: repr([el_str(x) for x in stray]))
    r = a.iq("fetch", "<ping xmlns='urn:xmpp:ping'/>", to="localhost", id="bad-type")
    t.is_(error_type_condition(r)[1], "bad-request", "RFC 6120 §8.2.3: an IQ with type='fetch' -> <bad-request/>")

    a.end()


def server_services(t, srv):
    a = connect_login(srv, "alice", PW, resource="svc")
    r = a.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to="localhost", id="ping-1")
    t.ok(r is not None and r.get("type") == "result" and r.get("from") == "localhost",
         "XEP-0199 §4.2: a ping to the server is answered with a result", el_str(r))

    r = a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to="localhost", id="disco-1")
    qq = r.find(q(NS_DISCO_INFO, "query")) if r is not None else None
    ids = [(i.get("category"), i.get("type")) for i in qq.findall(q(NS_DISCO_INFO, "identity"))] \
        if qq is not None else []
    feats = [f.get("var") for f in qq.findall(q(NS_DISCO_INFO, "feature"))] if qq is not None else []
    t.ok(("server", "im") in ids, "XEP-0030 §3.1: disco#info lists identity category='server' type='im'",
         el_str(r))
    for f in (NS_DISCO_INFO, "urn:xmpp:ping", "jabber:iq:version", "urn:xmpp:time"):
        t.ok(f in feats, "XEP-0030: the server's disco#info lists feature %s" % f, el_str(r))

    r = a.iq("get", "<query xmlns='%s'/>" % NS_VERSION, to="localhost", id="ver-1")
    name = r.find("%s/%s" % (q(NS_VERSION, "query"), q(NS_VERSION, "name"))) if r is not None else None
    ver = r.find("%s/%s" % (q(NS_VERSION, "query"), q(NS_VERSION, "version"))) if r is not None else None
    t.ok(name is not None and name.text == "civitas", "XEP-0092: software version name is 'civitas'", el_str(r))
    t.ok(ver is not None and (ver.text or "").strip(), "XEP-0092: a version string is given", el_str(r))

    r = a.iq("get", "<time xmlns='%s'/>" % NS_TIME, to="localhost", id="time-1")
    tzo = r.find("%s/%s" % (q(NS_TIME, "time"), q(NS_TIME, "tzo"))) if r is not None else None
    utc = r.find("%s/%s" % (q(NS_TIME, "time"), q(NS_TIME, "utc"))) if r is not None else None
    t.ok(tzo is not None and re.fullmatch(r"(Z|[+-]\d\d:\d\d)", (tzo.text or "").strip()),
         "XEP-0202: <tzo/> is a XEP-0082 offset", el_str(r))
    ok = False
    if utc is not None:
        m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z", (utc.text or "").strip())
        if m:
            then = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
            ok = abs((datetime.datetime.now(datetime.timezone.utc) - then).total_seconds()) < 120
    t.ok(ok, "XEP-0202: <utc/> is a XEP-0082 UTC date-time close to now", el_str(r))
    a.end()


def client_close(t, srv):
    for direct in (False, True):
        how = "direct TLS" if direct else "STARTTLS"
        c = connect_login(srv, "alice", PW, resource="closer-%d" % direct, direct_tls=direct)
        c.send("</stream:stream>")
        t.ok(c.read_until(lambda: c.parser.closed, 5), "RFC 6120 §4.4 (%s): the server answers the client's "
             "</stream:stream> with its own" % how, c.dump)
        t0 = time.monotonic()
        closed = c.wait_closed(5)
        took = time.monotonic() - t0
        t.ok(closed and took < 2.0, "RFC 6120 §4.4 (%s): then it closes the TCP connection at once (took %.1f s)"
             % (how, took))
        c.close()


def shutdown(t, srv):
    a = connect_login(srv, "alice", PW, resource="shutdown")
    srv.terminate()
    closed = a.read_until(lambda: a.parser.closed, 10)
    t.ok(closed, "RFC 6120 §4.4: on SIGTERM a connected client receives </stream:stream>", a.dump)
    a.send("</stream:stream>")
    t.ok(a.wait_closed(10), "after the closing handshake the server closes the connection")
    rc = srv.wait()
    t.is_(rc, 0, "civitasd exits 0 after SIGTERM with a client connected")


def main(t):
    with Server(t) as srv:
        for u in ("alice", "bob", "carol"):
            srv.adduser(u + "@localhost", PW)
        t.run(full_jid_delivery, t, srv)
        t.run(bare_jid_priority, t, srv)
        t.run(spoofed_from, t, srv)
        t.run(iq_semantics, t, srv)
        t.run(server_services, t, srv)
        t.run(client_close, t, srv)
        t.run(shutdown, t, srv)


if __name__ == "__main__":
    Tap().main(main)
