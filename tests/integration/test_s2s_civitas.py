#!/usr/bin/python3
# tests/integration/test_s2s_civitas.py: federation between civitas instances on 127.0.0.1 with static
# partner routes: SASL EXTERNAL with a test CA, dialback, queueing, bounces, policy, stream rules.
import os
import socket
import ssl
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Tap, Server, Certs, RawClient, connect_login, q, el_str,  # noqa: E402
                     NS_CLIENT, NS_STANZAS, NS_STREAM, NS_TLS, NS_SASL, NS_PING)
from harness import error_condition, free_port, partner  # noqa: E402

PW = "pw-for-s2s"
NS_SERVER = "jabber:server"
NS_DB = "jabber:server:dialback"
NS_DB_FEATURE = "urn:xmpp:features:dialback"


def s2s_header(from_, to):
    f = " from='%s'" % from_ if from_ else ""
    return ("<?xml version='1.0'?><stream:stream xmlns='%s' xmlns:stream='%s' xmlns:db='%s'%s to='%s' "
            "version='1.0'>" % (NS_SERVER, NS_STREAM, NS_DB, f, to))


class Net:
    """Three civitas servers: a.example and b.example trust each other's CA (SASL EXTERNAL);
    e.example has a CA of its own that nobody trusts (dialback). a.example runs allowlist mode
    with dialback off; c.example is a partner of a.example whose route leads nowhere."""

    def __init__(self, t):
        self.ca1 = Certs()
        self.ca2 = Certs()
        self.pa, self.pb, self.pe, self.pc = free_port(), free_port(), free_port(), free_port()
        # slow.example: accepts TCP connections (the kernel's backlog) and never says a word
        self.silent = socket.socket()
        self.silent.bind(("127.0.0.1", 0))
        self.silent.listen(8)
        lst = lambda p: {"client": ["127.0.0.1:0"], "client_tls": ["127.0.0.1:0"],  # noqa: E731
                         "server": ["127.0.0.1:%d" % p]}
        self.a = Server(t, hosts=["a.example"], certs=self.ca1, listen=lst(self.pa), start=False, extra_yaml=(
            "federation:\n  mode: allowlist\n  dialback: false\n  partners:\n" +
            partner("b.example", self.pb, self.ca1.ca) + partner("c.example", self.pc) +
            partner("e.example", self.pe) + partner("slow.example", self.silent.getsockname()[1])))
        self.b = Server(t, hosts=["b.example"], certs=self.ca1, listen=lst(self.pb), start=False, extra_yaml=(
            "federation:\n  mode: open\n  dialback: true\n  partners:\n" +
            partner("a.example", self.pa, self.ca1.ca) + partner("e.example", self.pe)))
        self.e = Server(t, hosts=["e.example"], certs=self.ca2, listen=lst(self.pe), start=False, extra_yaml=(
            "federation:\n  mode: open\n  dialback: true\n  partners:\n" +
            partner("a.example", self.pa) + partner("b.example", self.pb)))
        for s in (self.a, self.b, self.e):
            s.start()
        self.a.adduser("alice@a.example", PW)
        self.b.adduser("bob@b.example", PW)
        self.e.adduser("eve@e.example", PW)

    def servers(self):
        return (self.a, self.b, self.e)


def login(srv, user, domain, resource="r"):
    c = connect_login(srv, user, PW, resource=resource, domain=domain)
    c.presence()
    return c


def messages_both_ways(t, net):
    alice = login(net.a, "alice", "a.example")
    bob = login(net.b, "bob", "b.example")
    mark_a, mark_b = net.a.log_mark(), net.b.log_mark()
    # Three stanzas before any stream exists: they wait in the queue while A resolves, connects,
    # negotiates TLS and authenticates, and then leave in order (RFC 6120 §10.4: delivered or bounced).
    for i in range(3):
        alice.message("bob@b.example/r", "queued %d" % i, id="q%d" % i)
    got = [bob.expect_message("queued %d" % i, timeout=15) for i in range(3)]
    t.ok(all(g is not None for g in got), "stanzas sent while the s2s stream was being set up are all delivered",
         bob.dump)
    t.ok(all(g is not None and g.get("from") == "alice@a.example/r" for g in got),
         "RFC 6120 §8.1.2: the remote sender's full JID arrives as 'from'", lambda: [el_str(g) for g in got])
    ids = [el.get("id") for el in got if el is not None]
    t.is_(ids, ["q0", "q1", "q2"], "RFC 6120 §10.1: stanzas over one s2s stream keep their order")
    line = net.a.wait_log(r"s2s: outgoing a\.example -> b\.example established \(SASL EXTERNAL; peer certificate "
                          r"verified\)", start=mark_a)
    t.ok(line, "XEP-0178: a.example authenticated to b.example with SASL EXTERNAL after verifying its certificate "
               "against the partner's ca:")
    line = net.b.wait_log(r"s2s: incoming a\.example -> b\.example authenticated \(SASL EXTERNAL\)", start=mark_b)
    t.ok(line, "XEP-0178: b.example accepted a.example by SASL EXTERNAL (client certificate checked)")
    bob.message("alice@a.example/r", "hello back")
    m = alice.expect_message("hello back", timeout=15)
    t.ok(m is not None and m.get("from") == "bob@b.example/r",
         "a message from b.example reaches a.example over the reverse stream", alice.dump)
    t.ok(net.a.wait_log(r"incoming b\.example -> a\.example authenticated \(SASL EXTERNAL\)", start=mark_a),
         "the reverse direction also uses SASL EXTERNAL (RFC 6120: streams are unidirectional)")
    # IQ ping to the remote server and its answer back over the other stream (XEP-0199)
    r = alice.iq("get", "<ping xmlns='%s'/>" % NS_PING, to="b.example", timeout=15)
    t.ok(r is not None and r.get("type") == "result" and r.get("from") == "b.example",
         "XEP-0199: an IQ ping to the remote domain is answered by it", el_str(r))
    bob.send("<iq type='get' id='p1' to='alice@a.example/r'><ping xmlns='%s'/></iq>" % NS_PING)
    # alice's RawClient does not answer pings; a result or an error from alice both prove the path
    ping = alice.expect(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("type") == "get", timeout=15)
    t.ok(ping is not None and ping.get("from") == "bob@b.example/r",
         "an IQ to a remote full JID reaches that client with the remote sender's JID", alice.dump)
    if ping is not None:
        alice.send("<iq type='result' id='%s' to='%s'/>" % (ping.get("id"), ping.get("from")))
    r = bob.expect(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("type") == "result", timeout=15)
    t.ok(r is not None and r.get("from") == "alice@a.example/r",
         "the IQ result from the remote client comes back to the requester", bob.dump)
    # a message to an unknown user on the remote side comes back as the remote server's error
    alice.message("nobody@b.example", "to nobody", id="nb")
    e = alice.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("id") == "nb", timeout=15)
    t.is_(error_condition(e), "service-unavailable",
          "RFC 6121 §8.5.2.2.1: the remote server bounces a message to a nonexistent account back over s2s")
    alice.end()
    bob.end()


def dialback_between_civitas(t, net):
    eve = login(net.e, "eve", "e.example")
    bob = login(net.b, "bob", "b.example", resource="d")
    mark_b, mark_e = net.b.log_mark(), net.e.log_mark()
    eve.message("bob@b.example/d", "via dialback")
    m = bob.expect_message("via dialback", timeout=20)
    t.ok(m is not None and m.get("from") == "eve@e.example/r",
         "XEP-0220: with certificates nobody can verify, dialback carries the message", bob.dump)
    t.ok(net.b.wait_log(r"incoming e\.example -> b\.example authenticated \(dialback\)", start=mark_b),
         "XEP-0220 §2.1: b.example verified e.example's key with e.example (authoritative server)")
    t.ok(net.e.wait_log(r"outgoing e\.example -> b\.example established \(dialback; peer certificate not verified",
                        start=mark_e),
         "e.example logs the dialback stream and that it could not verify b.example's certificate")
    t.ok(net.e.wait_log(r"dialback verification from b\.example for our e\.example answered valid", start=mark_e),
         "XEP-0185: e.example recognised its own key for the stream id b.example gave")
    eve.end()
    bob.end()


def refused_without_dialback(t, net):
    eve = login(net.e, "eve", "e.example", resource="x")
    mark_a, mark_e = net.a.log_mark(), net.e.log_mark()
    eve.message("alice@a.example", "should not pass", id="nd")
    e = eve.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("id") == "nd", timeout=20)
    t.is_(error_condition(e), "remote-server-not-found",
          "federation.dialback false + unverifiable certificate: the sender gets <remote-server-not-found/>")
    t.ok(net.a.wait_log(r"incoming e\.example -> a\.example refused: certificate not verified .* "
                        r"federation\.dialback is false", start=mark_a),
         "a.example logs why it refused e.example (no verified certificate, dialback disabled)")
    t.ok(net.e.wait_log(r"outgoing e\.example -> a\.example failed", start=mark_e),
         "e.example logs the failed outgoing stream")
    eve.end()


def bounces(t, net):
    alice = login(net.a, "alice", "a.example", resource="b")
    mark = net.a.log_mark()
    alice.message("carol@c.example", "nobody listens", id="down1")
    e = alice.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("id") == "down1", timeout=20)
    t.is_(error_condition(e), "remote-server-not-found",
          "RFC 6120 §8.3.3.15: a stanza to a server that cannot be reached is bounced with <remote-server-not-found/>")
    t.ok(e is not None and e.get("from") == "carol@c.example" and e.get("type") == "error",
         "the bounce comes from the addressee's JID, type='error'", el_str(e))
    t.ok(net.a.wait_log(r"s2s: outgoing a\.example -> c\.example failed: no connection", start=mark),
         "the failed connection is logged in one line")
    # errors are never answered with errors (RFC 6120 §8.3.1)
    alice.send("<message to='carol@c.example' type='error' id='err1'><error type='cancel'>"
               "<item-not-found xmlns='%s'/></error></message>" % NS_STANZAS)
    alice.message("carol@c.example", "second", id="down2")
    e2 = alice.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("id") == "down2", timeout=20)
    t.is_(error_condition(e2), "remote-server-not-found", "the next stanza is bounced as well (back-off or retry)")
    t.ok(not any(el.get("id") == "err1" for el in alice.inbox),
         "RFC 6120 §8.3.1: an error stanza that cannot be delivered is not bounced", lambda: alice.inbox)
    # allowlist: d.example is no partner of a.example: refused without any connection attempt
    mark = net.a.log_mark()
    alice.message("dave@d.example", "not a partner", id="pol")
    e = alice.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("id") == "pol", timeout=10)
    t.is_(error_condition(e), "policy-violation",
          "federation.mode allowlist: a stanza to a non-partner is bounced with <policy-violation/>")
    t.ok(net.a.wait_log(r"outgoing a\.example -> d\.example refused: not a partner", start=mark),
         "the refusal is logged")
    alice.end()


def timeout_bounce(t, net):
    alice = login(net.a, "alice", "a.example", resource="t")
    mark = net.a.log_mark()
    alice.message("sid@slow.example", "into the void", id="slow")
    e = alice.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("id") == "slow", timeout=40)
    t.is_(error_condition(e), "remote-server-timeout",
          "RFC 6120 §8.3.3.16: a peer that accepts the connection but never answers: <remote-server-timeout/>")
    t.ok(net.a.wait_log(r"outgoing a\.example -> slow\.example failed: .*timed out", start=mark),
         "the time-out is logged")
    alice.end()


def peer_restarts(t, net):
    """b.example goes down: a.example bounces; b.example comes back: a new stream delivers."""
    alice = login(net.a, "alice", "a.example", resource="p")
    net.b.stop()
    alice.message("bob@b.example", "while down", id="wd")
    e = alice.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("id") == "wd", timeout=20)
    t.is_(error_condition(e), "remote-server-not-found",
          "after the peer went away, a stanza to it is bounced with <remote-server-not-found/>")
    net.b.start()
    bob = login(net.b, "bob", "b.example", resource="back")
    # a.example is in back-off for at most a few seconds: the message waits and then goes out
    alice.message("bob@b.example/back", "after restart")
    m = bob.expect_message("after restart", timeout=25)
    t.ok(m is not None, "after the back-off a new stream is opened and the queued stanza delivered", bob.dump)
    alice.end()
    bob.end()


def raw_peer_context(certs, leaf):
    ctx = ssl.create_default_context(cafile=certs.ca)
    ctx.load_cert_chain(leaf.cert, leaf.key)
    return ctx


def raw_s2s(net, from_="a.example", auth=True):
    """A hand-made s2s stream to b.example claiming from_, with a.example's certificate."""
    c = RawClient(net.pb, server_hostname="b.example", cafile=net.ca1.ca)
    f = c.open_stream(header=s2s_header(from_, "b.example"))
    if f is None or f.find(q(NS_TLS, "starttls")) is None:
        return c, None
    c.starttls(context=raw_peer_context(net.ca1, net.a.leaves["a.example"]))
    f = c.open_stream(header=s2s_header(from_, "b.example"))
    if auth and f is not None:
        c.send("<auth xmlns='%s' mechanism='EXTERNAL'>=</auth>" % NS_SASL)
        r = c.expect(lambda el: el.tag in (q(NS_SASL, "success"), q(NS_SASL, "failure")))
        if r is None or r.tag != q(NS_SASL, "success"):
            return c, None
        f = c.open_stream(header=s2s_header(from_, "b.example"))
    return c, f


def stream_rules(t, net):
    bob = login(net.b, "bob", "b.example", resource="raw")
    # the incoming stream demands TLS first (RFC 6120 §5.3.1)
    c = RawClient(net.pb, server_hostname="b.example")
    f = c.open_stream(header=s2s_header("a.example", "b.example"))
    st = f.find(q(NS_TLS, "starttls")) if f is not None else None
    t.ok(st is not None and st.find(q(NS_TLS, "required")) is not None,
         "RFC 6120 §5.3.1: an incoming s2s stream offers STARTTLS as required", el_str(f))
    t.ok(f is not None and f.find(q(NS_SASL, "mechanisms")) is None and f.find(q(NS_DB_FEATURE, "dialback")) is None,
         "no authentication is offered before TLS", el_str(f))
    c.send("<message from='alice@a.example' to='bob@b.example'><body>x</body></message>")
    r = c.read_stream_error()
    t.is_(r.condition, "not-authorized", "RFC 6120 §4.9.3.12: a stanza before TLS and authentication: <not-authorized/>")
    c.close()

    c, f = raw_s2s(net, auth=False)
    mechs = c.mechanisms(f) if f is not None else []
    t.ok("EXTERNAL" in mechs, "XEP-0178 §3: SASL EXTERNAL is offered when the client certificate verifies", el_str(f))
    # an unsolicited dialback answer must not authenticate anything (jabberd2 CVE-2012-3525)
    c.send("<db:result xmlns:db='%s' from='a.example' to='b.example' type='valid'/>" % NS_DB)
    c.send("<db:verify xmlns:db='%s' from='a.example' to='b.example' id='x' type='valid'/>" % NS_DB)
    c.send("<message xmlns='jabber:server' from='alice@a.example/r' to='bob@b.example/raw'><body>spoof</body></message>")
    r = c.read_stream_error()
    t.is_(r.condition, "invalid-from",
          "XEP-0220 / CVE-2012-3525: a db:result type='valid' we never asked for authenticates nothing")
    c.close()

    c, f = raw_s2s(net)
    t.ok(f is not None, "a hand-made peer with a.example's certificate authenticates with SASL EXTERNAL")
    c.send("<message xmlns='jabber:server' from='alice@a.example/raw' to='bob@b.example/raw'><body>raw s2s</body>"
           "</message>")
    m = bob.expect_message("raw s2s", timeout=10)
    t.ok(m is not None and m.get("from") == "alice@a.example/raw",
         "a stanza from the authenticated domain is routed to the local client", bob.dump)
    # a db:verify with a key b.example never made is answered invalid (XEP-0220 §2.1.3, XEP-0185)
    c.send("<db:verify xmlns:db='%s' from='a.example' to='b.example' id='someid'>%s</db:verify>" % (NS_DB, "0" * 64))
    v = c.expect(lambda el: el.tag == q(NS_DB, "verify"), timeout=10)
    t.ok(v is not None and v.get("type") == "invalid" and v.get("id") == "someid" and v.get("from") == "b.example",
         "XEP-0220 §2.1.3: a db:verify with a wrong key is answered type='invalid'", el_str(v))
    c.send("<message xmlns='jabber:server' from='mallory@evil.example' to='bob@b.example/raw'><body>x</body>"
           "</message>")
    r = c.read_stream_error()
    t.is_(r.condition, "invalid-from",
          "RFC 6120 §4.9.3.9: a 'from' domain not authenticated on the stream gives <invalid-from/>")
    t.ok(r.stream_closed and r.socket_closed, "RFC 6120 §4.9.1.1: the stream and the connection are closed after it")
    c.close()

    c, f = raw_s2s(net)
    c.send("<message xmlns='jabber:server' from='alice@a.example/raw' to='someone@elsewhere.example'><body>x</body>"
           "</message>")
    r = c.read_stream_error()
    t.is_(r.condition, "host-unknown", "RFC 6120 §4.9.3.6: a stanza to a domain b.example does not serve: <host-unknown/>")
    c.close()

    c, f = raw_s2s(net)
    c.send("<message xmlns='jabber:server' to='bob@b.example/raw'><body>x</body></message>")
    r = c.read_stream_error()
    t.is_(r.condition, "improper-addressing",
          "RFC 6120 §4.9.3.11: a stanza without 'from' on an s2s stream: <improper-addressing/>")
    c.close()

    # a stream claiming the wrong domain for the certificate gets no EXTERNAL
    c, f = raw_s2s(net, from_="e.example", auth=False)
    t.ok(f is not None and "EXTERNAL" not in c.mechanisms(f),
         "RFC 6125: a certificate for a.example does not authenticate e.example (no EXTERNAL offered)", el_str(f))
    c.send("<auth xmlns='%s' mechanism='EXTERNAL'>=</auth>" % NS_SASL)
    r = c.expect(lambda el: el.tag in (q(NS_SASL, "success"), q(NS_SASL, "failure")))
    t.ok(r is not None and r.tag == q(NS_SASL, "failure"), "XEP-0178: EXTERNAL for a domain the certificate does not "
         "name fails", el_str(r))
    c.close()
    bob.end()


def wire_forms(t, net):
    """What civitas writes on s2s streams is the prefixed form ejabberd insists on; what it reads may be
    either form (the same XML: a prefix is only a name for the namespace)."""
    bob = login(net.b, "bob", "b.example", resource="wire")
    c, f = raw_s2s(net, auth=False)
    t.ok(f is not None and c.received.count(b"<stream:features>") == 2 and b"<features" not in c.received,
         "RFC 6120 §4.3.2: the stream features are written <stream:features>, before and after TLS (ejabberd "
         "ignores <features xmlns='http://etherx.jabber.org/streams'>)", c.dump)
    mark = len(c.received)
    c.send("<result xmlns='%s' from='a.example' to='nothere.example'>%s</result>" % (NS_DB, "1" * 64))
    r = c.expect(lambda el: el.tag == q(NS_DB, "result"), timeout=10)
    err = r.find(q(NS_SERVER, "error")) if r is not None else None
    t.ok(r is not None and r.get("type") == "error" and err is not None and err.get("type") == "cancel"
         and err.find(q(NS_STANZAS, "item-not-found")) is not None,
         "XEP-0220: an unprefixed dialback request for a domain we do not serve is answered type='error' with "
         "<item-not-found/> in a jabber:server <error/>", el_str(r))
    t.ok(b"<db:result " in c.received[mark:] and b"<result" not in c.received[mark:],
         "XEP-0220: the answer is written <db:result> (ejabberd ignores <result xmlns='jabber:server:dialback'>)",
         lambda: c.received[mark:])
    c.send("<result xmlns='%s' from='a.example' to='b.example'>%s</result>" % (NS_DB, "1" * 64))
    r = c.expect(lambda el: el.tag == q(NS_DB, "result"), timeout=10)
    t.ok(r is not None and r.get("type") == "valid" and r.get("from") == "b.example" and r.get("to") == "a.example",
         "an unprefixed <result xmlns='jabber:server:dialback'/> is read like <db:result/> (here granted on "
         "a.example's certificate)", el_str(r))
    c.send("<message xmlns='jabber:server' from='alice@a.example/wire' to='bob@b.example/wire'><body>after an "
           "unprefixed result</body></message>")
    m = bob.expect_message("after an unprefixed result", timeout=10)
    t.ok(m is not None, "and the stream it authenticated carries stanzas", bob.dump)
    mark = len(c.received)
    c.send("<verify xmlns='%s' from='a.example' to='b.example' id='unprefixed'>%s</verify>" % (NS_DB, "0" * 64))
    v = c.expect(lambda el: el.tag == q(NS_DB, "verify"), timeout=10)
    t.ok(v is not None and v.get("type") == "invalid" and v.get("id") == "unprefixed",
         "XEP-0220 §2.1.3: an unprefixed <verify xmlns='jabber:server:dialback'/> is answered like <db:verify/>",
         el_str(v))
    t.ok(b"<db:verify " in c.received[mark:] and b"<verify" not in c.received[mark:],
         "XEP-0220: the answer is written <db:verify>", lambda: c.received[mark:])
    c.close()
    bob.end()


def allowlist_incoming(t, net):
    # d.example is no partner of a.example: its stream is refused at the header
    c = RawClient(net.pa, server_hostname="a.example")
    c.open_stream(header=s2s_header("d.example", "a.example"))
    r = c.read_stream_error()
    t.is_(r.condition, "policy-violation",
          "federation.mode allowlist: a stream from a non-partner gets <policy-violation/>")
    c.close()
    c = RawClient(net.pb, server_hostname="b.example")
    c.open_stream(header=s2s_header("a.example", "nothere.example"))
    r = c.read_stream_error()
    t.is_(r.condition, "host-unknown", "RFC 6120 §4.9.3.6: a stream to a domain we do not serve: <host-unknown/>")
    c.close()


def main(t):
    net = Net(t)
    t.run(messages_both_ways, t, net)
    t.run(dialback_between_civitas, t, net)
    t.run(refused_without_dialback, t, net)
    t.run(bounces, t, net)
    t.run(stream_rules, t, net)
    t.run(wire_forms, t, net)
    t.run(allowlist_incoming, t, net)
    t.run(peer_restarts, t, net)
    t.run(timeout_bounce, t, net)
    for s in net.servers():
        rc = s.stop()
        t.ok(rc == 0, "civitasd (%s) exits 0 after SIGTERM with s2s streams open" % s.hosts[0],
             lambda: s.log_tail(30))
        reports = s.sanitizer_reports()
        t.ok(not reports, "no sanitizer report (%s)" % s.hosts[0], lambda: "\n".join(reports))


Tap(timeout=120).main(main)
