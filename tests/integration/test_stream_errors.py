#!/usr/bin/python3
# tests/integration/test_stream_errors.py: every RFC 6120 §4.9.3 stream error a client can provoke:
# the condition, the closing </stream:stream>, the closed connection; then the server still works.
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, Server, Certs, RawClient, connect_login, NS_CLIENT  # noqa: E402

PW = "s3cret-pw"
HDR = "<?xml version='1.0'?>"
GOOD = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' " \
       "to='localhost' version='1.0'>"


def expect_error(t, c, cond, what, header_triggered=False, timeout=None):
    r = c.read_stream_error(timeout=timeout)
    t.ok(r.condition == cond, "%s -> <%s/>" % (what, cond), lambda: "got %r\n%s" % (r, c.dump()))
    t.ok(r.stream_closed and r.socket_closed,
         "%s: RFC 6120 §4.9.1.1: </stream:stream> follows and the TCP connection is closed" % what, repr(r))
    if header_triggered:
        t.ok(r.had_header, "%s: RFC 6120 §4.9.1.2: the server sends its stream header before the error" % what,
             c.dump)
    return r


def header_errors(t, srv):
    port = srv.port("client")
    c = RawClient(port)
    c.send(HDR + "<stream:stream xmlns='jabber:client' xmlns:stream='http://wrong.example/streams' "
           "to='localhost' version='1.0'>")
    expect_error(t, c, "invalid-namespace", "RFC 6120 §4.9.3.10: wrong stream namespace", True)

    c = RawClient(port)
    c.send(HDR + "<stream:stream xmlns='jabber:wrong' xmlns:stream='http://etherx.jabber.org/streams' "
           "to='localhost' version='1.0'>")
    expect_error(t, c, "invalid-namespace", "RFC 6120 §4.9.3.10: wrong content namespace", True)

    c = RawClient(port)
    c.send(c.stream_header(to="unknown.example"))
    expect_error(t, c, "host-unknown", "RFC 6120 §4.9.3.6: 'to' names a domain the server does not serve", True)

    c = RawClient(port)
    c.send(c.stream_header(version="2.0"))
    expect_error(t, c, "unsupported-version", "RFC 6120 §4.9.3.25: version='2.0'", True)

    c = RawClient(port)
    c.send(HDR + "<!DOCTYPE stream:stream>" + GOOD)
    expect_error(t, c, "restricted-xml", "RFC 6120 §4.9.3.18 / §11.1: a DOCTYPE declaration", True)

    c = RawClient(port)
    c.send(HDR + "<!DOCTYPE stream:stream [<!ENTITY lol 'lol'>]>" + GOOD)
    expect_error(t, c, "restricted-xml", "RFC 6120 §4.9.3.18 / §11.1: an internal entity declaration", True)


def content_errors(t, srv):
    port = srv.port("client")

    def opened():
        c = RawClient(port)
        f = c.open_stream()
        t.ok(f is not None, "a stream opens before the bad input is sent", c.dump)
        return c

    c = opened()
    c.send("<!-- a comment -->")
    expect_error(t, c, "restricted-xml", "RFC 6120 §4.9.3.18 / §11.1: an XML comment")

    c = opened()
    c.send("<?civitas processing-instruction?>")
    expect_error(t, c, "restricted-xml", "RFC 6120 §4.9.3.18 / §11.1: a processing instruction")

    c = opened()
    c.send("<message to='alice@localhost'><body>x</mesage>")
    expect_error(t, c, "not-well-formed", "RFC 6120 §4.9.3.13: mismatched end tag")

    c = opened()
    c.send("<message to='alice@localhost' to='bob@localhost'/>")
    expect_error(t, c, "not-well-formed", "RFC 6120 §4.9.3.13: a duplicated attribute")

    for name, bad in (("0xFF 0xFE", b"\xff\xfe"), ("overlong '/' 0xC0 0xAF", b"\xc0\xaf"),
                      ("UTF-16 surrogate 0xED 0xA0 0x80", b"\xed\xa0\x80")):
        c = opened()
        c.send(b"<message to='alice@localhost'><body>" + bad + b"</body></message>")
        expect_error(t, c, "not-well-formed", "RFC 6120 §11.6 / §4.9.3.13: invalid UTF-8 (%s)" % name)


def before_auth(t, srv):
    c = RawClient(srv.port("client_tls"), tls=True, cafile=srv.ca)
    t.ok(c.open_stream() is not None, "direct TLS stream opens")
    c.send("<message to='alice@localhost' type='chat'><body>hi</body></message>")
    expect_error(t, c, "not-authorized", "RFC 6120 §4.9.3.12: a message before authentication (direct TLS)")

    c = RawClient(srv.port("client"), cafile=srv.ca)
    c.open_stream()
    t.ok(c.starttls() and c.open_stream() is not None, "STARTTLS stream opens")
    c.send("<iq type='get' id='x1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    expect_error(t, c, "not-authorized", "RFC 6120 §4.9.3.12: an IQ after STARTTLS but before authentication")


def after_auth(t, srv):
    c = connect_login(srv, "alice", PW, resource="small")
    body = "y" * 5000
    c.message(c.jid, body)
    m = c.expect_message(body)
    t.ok(m is not None, "a 5000-byte message below limits.max_stanza_size (10000) is delivered", c.dump)
    c.message(c.jid, "z" * 20000)
    expect_error(t, c, "policy-violation", "RFC 6120 §4.9.3.16: a stanza bigger than limits.max_stanza_size")

    c = connect_login(srv, "alice", PW, resource="unknown-element")
    c.send("<foo xmlns='%s'/>" % NS_CLIENT)
    expect_error(t, c, "unsupported-stanza-type", "RFC 6120 §4.9.3.24: an unknown first-level element <foo/>")


def header_timeout(t, srv):
    c = RawClient(srv.port("client"))
    c.send(HDR + "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'")
    t0 = time.monotonic()
    expect_error(t, c, "connection-timeout",
                 "RFC 6120 §4.9.3.4: a stream header never finished (limits.stream_header_timeout: 1)", True,
                 timeout=15)
    took = time.monotonic() - t0
    t.ok(0.5 <= took <= 10, "the header timeout fires after about 1 s (took %.1f s)" % took)

    c = RawClient(srv.port("client"))
    t.ok(c.open_stream() is not None, "a complete header on the same server is not timed out", c.dump)
    c.end()


def still_works(t, srv):
    for direct in (False, True):
        c = connect_login(srv, "bob", PW, resource="after", direct_tls=direct)
        t.ok(c.ping_server(), "after all the broken streams another client (%s) logs in and gets a ping reply"
             % ("direct TLS" if direct else "STARTTLS"))
        c.end()


def main(t):
    certs = Certs()
    with Server(t, certs=certs, extra_yaml="limits:\n  max_stanza_size: 10000\n") as srv:
        srv.adduser("alice@localhost", PW)
        srv.adduser("bob@localhost", PW)
        t.run(header_errors, t, srv)
        t.run(content_errors, t, srv)
        t.run(before_auth, t, srv)
        t.run(after_auth, t, srv)
        t.run(still_works, t, srv)
    with Server(t, certs=certs, extra_yaml="limits:\n  stream_header_timeout: 1\n") as srv:
        t.run(header_timeout, t, srv)


if __name__ == "__main__":
    Tap().main(main)
