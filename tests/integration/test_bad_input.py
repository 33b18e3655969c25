#!/usr/bin/python3
# tests/integration/test_bad_input.py: hostile and broken input thrown at a running civitasd over real
# sockets (RFC 6120 §4.9, §11; XEP-0205): each gets its stream error and a closed stream, while a normal
# user keeps exchanging messages; plus the output cap for a client that never reads, and the rate limits.
import os
import socket
import ssl
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Tap, Server, Certs, RawClient, connect_login, q, NS_CLIENT, NS_SASL, NS_STREAM,  # noqa: E402
                     NS_STANZAS)

PW = "bad-input-pw"
HDR = "<?xml version='1.0'?>"
GOOD = ("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
        "to='localhost' version='1.0'>")
# limits of the main server (see main()): small enough to reach quickly
LIMITS = ("limits:\n"
          "  max_stanza_size: 10000\n"
          "  max_stanza_size_preauth: 4096\n"
          "  max_depth: 16\n"
          "  max_attributes: 16\n"
          "  stream_header_timeout: 2\n"
          "  max_connections_per_ip: 1000\n"
          "  sasl_failures_per_ip: 1000\n")


def expect_error(t, c, cond, what, timeout=None):
    """RFC 6120 §4.9.1.1: the stream error, then </stream:stream>, then the TCP connection closes."""
    r = c.read_stream_error(timeout=timeout)
    t.ok(r.condition == cond, "%s -> <%s/>" % (what, cond), lambda: "got %r\n%s" % (r, c.dump()))
    t.ok(r.stream_closed and r.socket_closed, "%s: </stream:stream> follows and the connection is closed" % what,
         lambda: "%r\n%s" % (r, c.dump()))
    c.close()
    return r


def plain(srv):
    """A stream on the STARTTLS port, header exchanged (the state before <starttls/>)."""
    c = RawClient(srv.port("client"))
    c.open_stream()
    return c


def direct_tls(srv):
    """A stream on the direct TLS port, header exchanged, not authenticated."""
    c = RawClient(srv.port("client_tls"), tls=True, cafile=srv.ca)
    c.open_stream()
    return c


def exchange(t, a, b, what):
    """a sends b a message and b gets it (RFC 6121 §8.5.3.1 delivery to a full JID)."""
    body = "still here: %s %f" % (what, time.monotonic())
    a.message(b.jid, body)
    t.ok(b.expect_message(body) is not None, "a normal user still exchanges messages %s" % what, b.dump)


# ------------------------------------------------------------------------------------------------
# RFC 6120 §11.1 restricted XML, §4.9.3.13 not-well-formed, §11.6 UTF-8

def restricted_xml(t, srv):
    cases = [
        ("an XML comment", "<!-- hello -->"),
        ("a comment inside a stanza", "<message><!-- x --></message>"),
        ("a processing instruction", "<?civitas pi?>"),
        ("a processing instruction inside a stanza", "<message><?x y?></message>"),
    ]
    for what, data in cases:
        c = plain(srv)
        c.send(data)
        expect_error(t, c, "restricted-xml", "RFC 6120 §11.1: %s" % what)
    pre = [
        ("a DOCTYPE", "<!DOCTYPE stream:stream>"),
        ("an internal subset with an element declaration", "<!DOCTYPE s [<!ELEMENT s ANY>]>"),
        ("an attribute list declaration", "<!DOCTYPE s [<!ATTLIST s a CDATA 'x'>]>"),
        ("a notation declaration", "<!DOCTYPE s [<!NOTATION n SYSTEM 'x'>]>"),
        ("an external entity declaration (XXE)", "<!DOCTYPE s [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>"),
    ]
    for what, dtd in pre:
        c = RawClient(srv.port("client"))
        c.send(HDR + dtd + GOOD + "<message>&x;</message>")
        expect_error(t, c, "restricted-xml", "RFC 6120 §11.1: %s before the stream header" % what)


def billion_laughs(t, srv):
    lol = "<!ENTITY lol 'lol'>" + "".join(
        "<!ENTITY lol%d '%s'>" % (i, ("&lol%d;" % (i - 1) if i > 1 else "&lol;") * 10) for i in range(1, 10))
    c = RawClient(srv.port("client"))
    t0 = time.monotonic()
    c.send(HDR + "<!DOCTYPE lolz [" + lol + "]>" + GOOD + "<message><body>&lol9;</body></message>")
    expect_error(t, c, "restricted-xml", "RFC 6120 §11.1: a billion-laughs DTD")
    t.ok(time.monotonic() - t0 < 5, "the billion-laughs payload is refused at once (no expansion)")
    # the same references without a DTD: undefined entities (XML 1.0 WFC: Entity Declared)
    c = plain(srv)
    c.send("<message><body>&lol9;&lol9;&lol9;</body></message>")
    expect_error(t, c, "not-well-formed", "RFC 6120 §4.9.3.13: references to undeclared entities")


def malformed(t, srv):
    cases = [
        ("a mismatched end tag", "<message><body>x</bdy></message>"),
        ("an unquoted attribute value", "<message to=bob@localhost/>"),
        ("'<' inside an attribute value", "<message to='a<b'/>"),
        ("a duplicated attribute", "<message id='1' id='2'/>"),
        ("an unbound namespace prefix", "<foo:message/>"),
        ("a bare '&'", "<message><body>fish & chips</body></message>"),
        ("a character reference to NUL", "<message><body>&#0;</body></message>"),
        ("a character reference to a surrogate", "<message><body>&#xD800;</body></message>"),
        ("text between stanzas", "hello<message/>"),
        ("an end tag without a start tag", "</message>"),
        ("a truncated stanza ended by the stream's end tag", "<message><body>trunc</stream:stream>"),
        ("a CDATA section at stream level", "<![CDATA[x]]>"),
        ("an XML declaration inside the stream (XML 1.0 §2.8: only at the start)", "<?xml version='1.0'?>"),
    ]
    for what, data in cases:
        c = plain(srv)
        c.send(data)
        expect_error(t, c, "not-well-formed", "RFC 6120 §4.9.3.13: %s" % what)
    # an attribute value that is never closed: the tag is held back until the size limit cuts it
    c = plain(srv)
    c.send("<message to='bob@localhost><body>" + "x" * 5000)
    expect_error(t, c, "policy-violation", "RFC 6120 §4.9.3.16: an attribute value never closed, 5000 bytes long "
                 "before authentication (limit 4096)")


def truncated(t, srv):
    # a stanza cut off by the end of the TCP stream: nothing can be answered, the server just closes
    c = plain(srv)
    c.send("<message to='bob@localhost'><body>cut o")
    c.sock.shutdown(socket.SHUT_WR)
    t.ok(c.wait_closed(5), "RFC 6120 §4.4: a stream that ends mid-stanza (TCP FIN) is closed by the server", c.dump)
    c.close()
    # a stream header cut off and then garbage
    c = RawClient(srv.port("client"))
    c.send(HDR + "<stream:stream xmlns='jabber:client' to='localhost' <<<>")
    expect_error(t, c, "not-well-formed", "RFC 6120 §4.9.3.13: a truncated stream header followed by garbage")


def bad_utf8(t, srv):
    cases = [
        ("a lone continuation byte", b"\x80"),
        ("a truncated two-byte sequence", b"\xc3("),
        ("a five-byte sequence", b"\xf8\x88\x80\x80\x80"),
        ("a code point above U+10FFFF", b"\xf4\x90\x80\x80"),
        ("an overlong NUL", b"\xc0\x80"),
        ("U+FFFE (not an XML character)", b"\xef\xbf\xbe"),
        ("a raw NUL byte", b"\x00"),
        ("a C0 control character", b"\x01"),
    ]
    for what, bad in cases:
        c = plain(srv)
        c.send(b"<message><body>" + bad + b"</body></message>")
        expect_error(t, c, "not-well-formed", "RFC 6120 §11.6: invalid UTF-8 / XML character: %s" % what)
    c = plain(srv)
    c.send(b"<message to='\xff\xfe'/>")
    expect_error(t, c, "not-well-formed", "RFC 6120 §11.6: invalid UTF-8 in an attribute value")
    c = plain(srv)
    c.send(b"<mess\xe9age/>")
    expect_error(t, c, "not-well-formed", "RFC 6120 §11.6: invalid UTF-8 in an element name")
    # a UTF-16 byte-order mark instead of UTF-8 (RFC 6120 §11.6: UTF-8 only)
    c = RawClient(srv.port("client"))
    c.send(b"\xff\xfe<\x00s\x00")
    expect_error(t, c, "unsupported-encoding", "RFC 6120 §4.9.3.22: a UTF-16 stream")
    c = RawClient(srv.port("client"))
    c.send("<?xml version='1.0' encoding='ISO-8859-1'?>" + GOOD)
    expect_error(t, c, "unsupported-encoding", "RFC 6120 §4.9.3.22: an XML declaration naming ISO-8859-1")


# ------------------------------------------------------------------------------------------------
# Limits: RFC 6120 §4.9.3.16 policy-violation, §13.12 (XEP-0205 §4.5)

def oversized(t, srv, alice):
    c = plain(srv)
    c.send("<message><body>" + "x" * 6000 + "</body></message>")
    expect_error(t, c, "policy-violation", "RFC 6120 §13.12: a stanza over limits.max_stanza_size_preauth (4096)")
    c = plain(srv)
    c.send("<message to='" + "a" * 6000 + "'/>")
    expect_error(t, c, "policy-violation", "RFC 6120 §13.12: a 6000-byte attribute before authentication")
    c = RawClient(srv.port("client"))
    c.send(HDR + "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
           "to='localhost' version='1.0' x='" + "y" * 8000 + "'>")
    expect_error(t, c, "policy-violation", "RFC 6120 §13.12: an 8000-byte stream header")
    c = plain(srv)
    c.send("<message " + " ".join("a%d='x'" % i for i in range(40)) + "/>")
    expect_error(t, c, "policy-violation", "XEP-0205: 40 attributes on one element before authentication")

    c = connect_login(srv, "carol", PW, resource="big")
    c.send("<message to='%s'><body>%s</body></message>" % (alice.jid, "z" * 12000))
    expect_error(t, c, "policy-violation", "RFC 6120 §13.12: a stanza over limits.max_stanza_size (10000)")
    c = connect_login(srv, "carol", PW, resource="bigattr")
    c.send("<message to='%s' id='%s'/>" % (alice.jid, "i" * 12000))
    expect_error(t, c, "policy-violation", "RFC 6120 §13.12: a 12000-byte attribute after authentication")
    c = connect_login(srv, "carol", PW, resource="attrs")
    c.send("<message to='%s' " % alice.jid + " ".join("a%d='x'" % i for i in range(20)) + "/>")
    expect_error(t, c, "policy-violation", "XEP-0205: more than limits.max_attributes (16) attributes")


def too_deep(t, srv):
    c = plain(srv)
    c.send("<message>" + "<a>" * 40 + "</a>" * 40 + "</message>")
    expect_error(t, c, "policy-violation", "RFC 6120 §4.9.3.16: nesting 40 deep before authentication")
    c = connect_login(srv, "carol", PW, resource="deep")
    c.send("<message><x xmlns='urn:deep'>" + "<a>" * 30 + "</a>" * 30 + "</x></message>")
    expect_error(t, c, "policy-violation", "RFC 6120 §4.9.3.16: nesting deeper than limits.max_depth (16)")
    c = plain(srv)
    c.send("<a>" * 100000)
    expect_error(t, c, "policy-violation", "RFC 6120 §4.9.3.16: 100000 unclosed start tags")


# ------------------------------------------------------------------------------------------------
# Protocol order: RFC 6120 §4.9.3.12 not-authorized, §6 SASL

def before_auth(t, srv):
    for what, st in (("a message", "<message to='bob@localhost'><body>x</body></message>"),
                     ("a presence", "<presence/>"),
                     ("an IQ", "<iq type='get' id='1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")):
        c = plain(srv)
        c.send(st)
        expect_error(t, c, "not-authorized", "RFC 6120 §4.9.3.12: %s before STARTTLS" % what)
        c = direct_tls(srv)
        c.send(st)
        expect_error(t, c, "not-authorized", "RFC 6120 §4.9.3.12: %s inside TLS before SASL" % what)
    c = plain(srv)
    c.send("<foo xmlns='urn:unknown'/>")
    expect_error(t, c, "unsupported-stanza-type", "RFC 6120 §4.9.3.24: an unknown element before authentication")


def sasl(t, srv, alice):
    c = direct_tls(srv)
    c.send("<auth xmlns='%s' mechanism='X-UNKNOWN-MECH'>=</auth>" % NS_SASL)
    r = c.expect(lambda el: el.tag in (q(NS_SASL, "failure"), q(NS_STREAM, "error")))
    t.ok(r is not None and r.find(q(NS_SASL, "invalid-mechanism")) is not None,
         "RFC 6120 §6.5.6: an unknown SASL mechanism -> <failure><invalid-mechanism/>", c.dump)
    c.send("<auth xmlns='%s'>=</auth>" % NS_SASL)
    r = c.expect(lambda el: el.tag in (q(NS_SASL, "failure"), q(NS_STREAM, "error")))
    t.ok(r is not None and r.find(q(NS_SASL, "invalid-mechanism")) is not None,
         "RFC 6120 §6.5.6: <auth/> without a mechanism -> <failure><invalid-mechanism/>", c.dump)
    ok, cond = c.auth_scram("carol", PW)
    t.ok(ok, "RFC 6120 §6.4.5: after failures the client may retry on the same stream (%s)" % cond)
    c.end()

    # SASL abort: RFC 6120 §6.4.4 / §6.5.1
    c = direct_tls(srv)
    c.send("<auth xmlns='%s' mechanism='SCRAM-SHA-256'>biwsbj1jYXJvbCxyPWFiY2RlZmdo</auth>" % NS_SASL)
    ch = c.expect(lambda el: el.tag in (q(NS_SASL, "challenge"), q(NS_SASL, "failure")))
    t.ok(ch is not None and ch.tag == q(NS_SASL, "challenge"), "SCRAM starts with a challenge", c.dump)
    c.send("<abort xmlns='%s'/>" % NS_SASL)
    r = c.expect(lambda el: el.tag in (q(NS_SASL, "failure"), q(NS_STREAM, "error")))
    t.ok(r is not None and r.tag == q(NS_SASL, "failure") and r.find(q(NS_SASL, "aborted")) is not None,
         "RFC 6120 §6.4.4: <abort/> -> <failure><aborted/>", c.dump)
    c.send("<response xmlns='%s'>Yz1iaXdz</response>" % NS_SASL)
    r = c.expect(lambda el: el.tag in (q(NS_SASL, "failure"), q(NS_SASL, "success"), q(NS_STREAM, "error")))
    t.ok(r is not None and r.tag == q(NS_SASL, "failure"),
         "RFC 6120 §6.4.4: a <response/> after the abort does not continue the exchange", c.dump)
    ok, cond = c.auth_scram("carol", PW)
    t.ok(ok, "after an abort a new exchange on the same stream succeeds (%s)" % cond)
    c.end()

    # more failed attempts than RFC 6120 §6.4.5 allows: the stream is closed
    c = direct_tls(srv)
    for i in range(6):
        c.send("<auth xmlns='%s' mechanism='NOPE'>=</auth>" % NS_SASL)
    expect_error(t, c, "policy-violation", "RFC 6120 §6.4.5: the sixth failed SASL attempt on one stream")

    c = direct_tls(srv)
    c.send("<auth xmlns='%s' mechanism='PLAIN'>!!!not base64!!!</auth>" % NS_SASL)
    r = c.expect(lambda el: el.tag in (q(NS_SASL, "failure"), q(NS_STREAM, "error")))
    t.ok(r is not None and r.find(q(NS_SASL, "incorrect-encoding")) is not None,
         "RFC 6120 §6.5.2: bad base64 -> <failure><incorrect-encoding/>", c.dump)
    c.close()


# ------------------------------------------------------------------------------------------------
# Transport: TLS

def client_hello_bytes():
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def tls_garbage(t, srv):
    hello = client_hello_bytes()
    t.ok(len(hello) > 50 and hello[0] == 0x16, "a real TLS ClientHello was made (%d bytes)" % len(hello))
    c = RawClient(srv.port("client"))
    c.send(hello)
    expect_error(t, c, "not-well-formed", "RFC 6120 §4.9.3.13: a TLS ClientHello on the STARTTLS port")

    # after STARTTLS: garbage inside the TLS channel instead of a stream header
    c = RawClient(srv.port("client"), cafile=srv.ca)
    c.open_stream()
    t.ok(c.starttls(), "STARTTLS succeeds", c.dump)
    c.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    expect_error(t, c, "not-well-formed", "RFC 6120 §4.9.3.13: HTTP inside TLS instead of a stream header")

    c = direct_tls(srv)
    c.send(b"<message>\x00\x01\x02garbage")
    expect_error(t, c, "not-well-formed", "RFC 6120 §4.9.3.13: binary garbage inside a direct TLS stream")

    # garbage below TLS: corrupt TLS records; the handshake or the record layer fails and the
    # server closes the connection (no stream error can be sent without TLS)
    s = socket.create_connection(("127.0.0.1", srv.port("client_tls")), timeout=5)
    s.sendall(b"\x17\x03\x03\x00\x10" + os.urandom(16) + os.urandom(200))
    t.ok(wait_eof(s, 5), "garbage TLS records on the direct TLS port: the server closes the connection")
    s.close()
    raw = RawClient(srv.port("client_tls"), tls=True, cafile=srv.ca)
    raw.open_stream()
    under = socket.fromfd(raw.sock.fileno(), socket.AF_INET, socket.SOCK_STREAM)   # the TCP socket below TLS
    under.sendall(b"\x17\x03\x03\x00\x20" + os.urandom(32))   # a record that fails authentication
    t.ok(raw.wait_closed(5), "a forged TLS record inside an established session: the server closes the connection")
    under.close()
    raw.close()


def wait_eof(s, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            d = s.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return True
        if not d:
            return True
    return False


# ------------------------------------------------------------------------------------------------
# Stream structure

def stream_structure(t, srv, alice):
    c = connect_login(srv, "carol", PW, resource="smuggle")
    c.send("<message to='%s'><body>x</body><stream:error xmlns:stream='%s'/></message>" % (alice.jid, NS_STREAM))
    expect_error(t, c, "bad-format", "a <stream:error/> inside a stanza (stream-level element smuggled into content)")
    t.ok(not any(m.find(q(NS_CLIENT, "body")) is not None and m.find(q(NS_CLIENT, "body")).text == "x"
                 for m in alice.messages()), "the smuggling message was not delivered")
    c = connect_login(srv, "carol", PW, resource="smuggle2")
    c.send("<message xmlns:s='%s'><s:features/></message>" % NS_STREAM)
    expect_error(t, c, "bad-format", "a <stream:features/> inside a stanza")
    c = connect_login(srv, "carol", PW, resource="second-header")
    c.send(GOOD)
    expect_error(t, c, "bad-format", "a second stream header inside an open stream (no restart due)")
    c = plain(srv)
    c.send(GOOD)
    expect_error(t, c, "bad-format", "a second stream header before STARTTLS")


def slowloris(t, srv):
    # limits.stream_header_timeout: 2 — a header dribbled a byte at a time never finishes in time
    c = RawClient(srv.port("client"))
    t0 = time.monotonic()
    data = HDR + "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='local"
    i = 0
    while time.monotonic() - t0 < 6 and not c.eof and i < len(data):
        if not c.send(data[i]):
            break
        i += 1
        c._recv_some(0.25)
        if c.inbox:
            break
    expect_error(t, c, "connection-timeout", "RFC 6120 §4.9.3.4: a stream header dribbled byte by byte "
                 "(slowloris) is cut at limits.stream_header_timeout", timeout=8)
    took = time.monotonic() - t0
    t.ok(1.5 <= took <= 6, "the slowloris stream is closed after about 2 s (took %.1f s)" % took)


def connect_storm(t, srv, alice, bob):
    n, errors = 2000, 0
    t0 = time.monotonic()
    for i in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", srv.port("client")), timeout=5)
            if i % 3 == 1:
                s.sendall(HDR.encode())
            elif i % 3 == 2:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
            s.close()
        except OSError:
            errors += 1
    took = time.monotonic() - t0
    t.ok(errors == 0, "%d quick connect/close cycles on loopback were all accepted (%d errors, %.1f s)"
         % (n, errors, took))
    # the server may still be reaping the storm (XEP-0205 §4.1: over max_connections_per_ip new
    # connections are refused meanwhile): a new stream must open within a few seconds
    deadline, c = time.monotonic() + 20, None
    while time.monotonic() < deadline:
        c = RawClient(srv.port("client"))
        if c.open_stream(timeout=2) is not None:
            break
        c.close()
    t.ok(c is not None and c.features is not None, "after the connection storm a new stream opens", c.dump)
    c.close()
    exchange(t, alice, bob, "after the connection storm")


# ------------------------------------------------------------------------------------------------
# A client that never reads (Openfire GHSA-x337-43mr-gg3h): limits.max_output_buffer

def never_reads(t, srv, direct):
    how = "direct TLS" if direct else "STARTTLS"
    v = connect_login(srv, "victim", PW, resource="deaf-%d" % direct, direct_tls=direct)
    s = connect_login(srv, "sender", PW, resource="loud-%d" % direct)
    o = connect_login(srv, "bob", PW, resource="other-%d" % direct)
    mark = srv.log_mark()
    body = "m" * 9000
    dropped = None
    t0 = time.monotonic()
    sent = 0
    # the kernel holds ~4 MB (server send buffer) + 128 KB (our receive buffer): 3000 messages (27 MB)
    # are far more than that, and bound what a broken cap lets the server buffer
    while time.monotonic() - t0 < 60 and dropped is None and sent < 3000:
        for _ in range(20):
            s.send("<message to='%s' type='chat'><body>%s</body></message>" % (v.jid, body))
            sent += 1
        s._recv_some(0)                  # the sender itself keeps reading
        s.inbox.clear()
        dropped = srv.wait_log(r"output queue over", 0.01, start=mark)
    t.ok(dropped is not None, "%s: the server drops a stream whose output queue passes limits.max_output_buffer "
         "(after %d messages of 9000 bytes)" % (how, sent), lambda: "\n".join(srv.log_tail(10)))
    # read what the kernel still holds (megabytes) as fast as possible, without parsing it
    t.ok(wait_eof(v.sock, 30), "%s: the connection of the client that never reads is closed" % how)
    v.close()
    t.ok(s.ping_server(timeout=20), "%s: the sender is unaffected (ping round trip)" % how, s.dump)
    exchange(t, s, o, "(%s) while a non-reading client was dropped" % how)
    s.end()
    o.end()


# ------------------------------------------------------------------------------------------------
# XEP-0205 rate limits (own server: small limits)

def rate_limits(t, certs):
    extra = ("limits:\n  max_bytes_per_second: 4096\n  max_bytes_per_second_preauth: 4096\n"
             "  max_stanzas_per_second: 5\n  sasl_failures_per_ip: 1000\n")
    with Server(t, certs=certs, extra_yaml=extra) as srv:
        srv.adduser("alice@localhost", PW)
        srv.adduser("bob@localhost", PW)
        a = connect_login(srv, "alice", PW, resource="rate")
        b = connect_login(srv, "bob", PW, resource="rate")
        n = 20
        t0 = time.monotonic()
        a.send("".join("<iq type='get' id='r%d' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>" % i
                       for i in range(n)))
        got, stamps = set(), []
        while len(got) < n and time.monotonic() - t0 < 20:
            r = a.expect(lambda el: el.tag == q(NS_CLIENT, "iq") and (el.get("id") or "").startswith("r"), 20)
            if r is None:
                break
            got.add(r.get("id"))
            stamps.append(time.monotonic() - t0)
        t.ok(len(got) == n,
             "XEP-0205: 20 pings sent at once under max_stanzas_per_second 5 are all answered (none dropped)",
             a.dump)
        took = stamps[-1] if stamps else 0
        t.ok(2.0 <= took <= 8, "XEP-0205: the excess waits: the 20th answer comes after about 3 s (took %.1f s)"
             % took)
        t.ok(len([x for x in stamps if x < 0.5]) <= 6,
             "at most one second's worth (5, plus one refilled) is answered in the first half second (%s)"
             % ", ".join("%.2f" % x for x in stamps[:8]))
        t.ok(a.ping_server(), "the rate-limited stream is still open afterwards", a.dump)

        d = connect_login(srv, "alice", PW, resource="rate-direct", direct_tls=True)
        for sender, how in ((a, "STARTTLS"), (d, "direct TLS")):
            body = "b" * 7000 + how
            t0 = time.monotonic()
            for i in range(3):
                sender.message(b.jid, body + str(i))
            ok = all(b.expect_message(body + str(i), 20) is not None for i in range(3))
            took = time.monotonic() - t0
            t.ok(ok, "XEP-0205 §4.7 (%s): 21 KB under max_bytes_per_second 4096 all arrive (reading pauses, "
                 "nothing is dropped)" % how, b.dump)
            t.ok(3.0 <= took <= 12, "XEP-0205 §4.7 (%s): they take about 4 s at 4096 bytes/s (took %.1f s)"
                 % (how, took))
        d.end()

        # before authentication: max_bytes_per_second_preauth; <proceed/> comes once the 12 KB of
        # whitespace before <starttls/> have been read
        c = RawClient(srv.port("client"))
        t.ok(c.open_stream() is not None, "a stream opens on the rate-limited server", c.dump)
        t0 = time.monotonic()
        c.send(" " * 12000 + "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        r = c.expect(q("urn:ietf:params:xml:ns:xmpp-tls", "proceed"), 20)
        took = time.monotonic() - t0
        t.ok(r is not None and 1.5 <= took <= 10,
             "XEP-0205 §4.7: 12 KB before authentication are read at about 4096 bytes/s, nothing dropped "
             "(<proceed/> after %.1f s)" % took, c.dump)
        c.close()
        a.end()
        b.end()


def main(t):
    certs = Certs()
    with Server(t, certs=certs, extra_yaml=LIMITS) as srv:
        for u in ("alice", "bob", "carol", "victim", "sender"):
            srv.adduser(u + "@localhost", PW)
        alice = connect_login(srv, "alice", PW, resource="normal")
        bob = connect_login(srv, "bob", PW, resource="normal")
        exchange(t, alice, bob, "before the run")
        t.run(restricted_xml, t, srv)
        t.run(billion_laughs, t, srv)
        t.run(malformed, t, srv)
        t.run(truncated, t, srv)
        t.run(bad_utf8, t, srv)
        exchange(t, bob, alice, "during the run")
        t.run(oversized, t, srv, alice)
        t.run(too_deep, t, srv)
        t.run(before_auth, t, srv)
        t.run(sasl, t, srv, alice)
        t.run(tls_garbage, t, srv)
        t.run(stream_structure, t, srv, alice)
        t.run(slowloris, t, srv)
        exchange(t, alice, bob, "during the run, after the slowloris")
        t.run(connect_storm, t, srv, alice, bob)
        alice.end()
        bob.end()
    # the output cap needs high rate limits so that the sender can fill a socket buffer quickly
    extra = ("limits:\n  max_output_buffer: 65536\n  max_bytes_per_second: 100000000\n"
             "  max_stanzas_per_second: 100000\n")
    with Server(t, certs=certs, extra_yaml=extra) as srv:
        for u in ("bob", "victim", "sender"):
            srv.adduser(u + "@localhost", PW)
        t.run(never_reads, t, srv, False)
        t.run(never_reads, t, srv, True)
        a = connect_login(srv, "bob", PW, resource="after")
        t.ok(a.ping_server(), "after the run a new login works and the server answers")
        a.end()
    t.run(rate_limits, t, certs)


if __name__ == "__main__":
    Tap().main(main)
