#!/usr/bin/python3
# tests/integration/test_websocket.py: XMPP over WebSocket (RFC 7395, server/websocket.c and
# mod_websocket) with a stdlib WebSocket client (ws_client.py): the handshake and its refusals
# (subprotocol, version, Origin policy), <open/>/<close/> framing, SASL PLAIN and SCRAM, the
# restart, bind, messages to and from a TCP client, RFC 7395's errors (binary frame, text that is
# not one element), ping/pong, wss:// on listen.https with SCRAM-SHA-256-PLUS (tls-server-end-point),
# and XEP-0156 host-meta (XRD and JSON, CORS) with the URL for each listener and websocket.url.
import json
import os
import socket
import ssl
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Tap, Server, connect_login, q, el_str,  # noqa: E402
                     NS_CLIENT, NS_STREAM, NS_STREAMS_ERR, NS_SASL, NS_BIND)
from ws_client import WSClient, handshake, accept_of, frame, NS_FRAMING, OP_BINARY, OP_PING, OP_TEXT  # noqa: E402

PW = "pw-websocket"
LISTEN = {"client": ["127.0.0.1:0"], "client_tls": ["127.0.0.1:0"], "http": ["127.0.0.1:0"],
          "https": ["127.0.0.1:0"]}
XRD = "http://docs.oasis-open.org/ns/xri/xrd-1.0"
REL = "urn:xmpp:alt-connections:websocket"


def stream_error_of(c, timeout=None):
    """(condition, <close/> seen after it, close frame code) of the stream error that ends c."""
    err = c.expect(q(NS_STREAM, "error"), timeout)
    cond = None
    if err is not None:
        for ch in err:
            if ch.tag.startswith("{%s}" % NS_STREAMS_ERR) and ch.tag != q(NS_STREAMS_ERR, "text"):
                cond = ch.tag.split("}")[1]
    closed = c.expect(q(NS_FRAMING, "close"), timeout) is not None
    return cond, closed, c.wait_close_frame(timeout)


def ws(srv, tls=False, **kw):
    return WSClient(srv.port("https" if tls else "http"), tls=tls, cafile=srv.ca, **kw)


def handshake_and_open(t, srv):
    c = ws(srv)
    t.is_(c.hs.status, 101, "GET /xmpp-websocket with the xmpp subprotocol: 101 Switching Protocols")
    t.is_(c.hs.header("Sec-WebSocket-Accept"), accept_of(c.hs.key), "Sec-WebSocket-Accept from the key (RFC 6455)")
    t.is_(c.hs.header("Sec-WebSocket-Protocol"), "xmpp", "the subprotocol chosen is xmpp (RFC 7395 §3.1)")
    f = c.open_stream()
    o = c.open_el
    t.ok(o is not None and o.get("from") == "localhost" and o.get("version") == "1.0" and o.get("id"),
         "the server answers <open/> with its own <open from version id/> (RFC 7395 §3.3.2)",
         el_str(o) if o is not None else c.dump())
    t.ok(f is not None, "then <stream:features/> in its own message", c.dump())
    mechs = c.mechanisms()
    t.ok("PLAIN" in mechs and "SCRAM-SHA-256" in mechs, "PLAIN and SCRAM offered over ws:// from loopback", mechs)
    t.ok(not any(m.endswith("-PLUS") for m in mechs), "no -PLUS mechanism without TLS below the WebSocket", mechs)
    t.ok(f is not None and f.find(q("urn:ietf:params:xml:ns:xmpp-tls", "starttls")) is None,
         "no STARTTLS over WebSocket")
    t.ok(all(x.lstrip().startswith("<") for x in c.texts), "every message is one element")
    feats = [x for x in c.texts if "features" in x]
    t.ok(feats and "xmlns:stream='http://etherx.jabber.org/streams'" in feats[0],
         "stream:features declares its prefix (RFC 7395 §3.4)", feats)
    c.send_frame(OP_PING, b"are you there")
    t.ok(c.read_until(lambda: b"are you there" in c.pongs, 5), "a ping frame is answered by a pong with its data")
    c.end()


def login_and_chat(t, srv, mech):
    tcp = connect_login(srv, "bob", PW, resource="tcp")
    tcp.presence()
    c = ws(srv)
    jid = c.login("alice", PW, resource="web", mech=mech)
    t.is_(jid, "alice@localhost/web", "%s, the restart with a new <open/> and bind over WebSocket" % mech)
    t.ok(c.open_el is not None and c.open_el.get("from") == "localhost", "the restart is answered with <open/>")
    c.presence()
    c.message("bob@localhost/tcp", "hello from the browser %s" % mech)
    m = tcp.expect_message("hello from the browser %s" % mech)
    t.ok(m is not None and m.get("from") == "alice@localhost/web", "the TCP client gets the message, 'from' stamped",
         tcp.dump())
    tcp.message("alice@localhost/web", "hello from TCP %s" % mech)
    m = c.expect_message("hello from TCP %s" % mech)
    t.ok(m is not None, "the WebSocket client gets the answer", c.dump())
    raw = [x for x in c.texts if "hello from TCP" in x]
    t.ok(raw and raw[0].startswith("<message") and "xmlns='jabber:client'" in raw[0].split(">")[0],
         "stanzas carry xmlns='jabber:client' (RFC 7395 §3.3.3: each message stands alone)", raw)
    # RFC 7395 §3.6: <close/> is answered with <close/>, then the server closes the WebSocket
    c.send("<close xmlns='%s'/>" % NS_FRAMING)
    t.ok(c.expect(q(NS_FRAMING, "close")) is not None, "<close/> is answered with <close/>", c.dump())
    t.is_(c.wait_close_frame(), 1000, "then a close frame with 1000 (normal closure)")
    t.ok(c.wait_closed(), "and the connection closes")
    tcp.end()


def framing_errors(t, srv):
    c = ws(srv)
    c.open_stream()
    c.send_frame(OP_BINARY, b"<presence/>")
    t.is_(c.wait_close_frame(), 1003, "a binary frame closes the WebSocket with 1003 (RFC 7395 §3.2)")
    t.ok(c.wait_closed(), "and the connection")

    c = ws(srv)
    c.open_stream()
    c.send_frame(OP_TEXT, "<presence/>", mask=False)
    t.is_(c.wait_close_frame(), 1002, "an unmasked client frame closes with 1002 (RFC 6455 §5.1)")
    t.ok(c.wait_closed(), "and the connection")

    c = ws(srv)
    c.open_stream()
    c.send("<message to='bob@localhost'><body>%s</body></message>" % ("x" * 80000))
    t.is_(c.wait_close_frame(), 1009, "before authentication a message over limits.max_stanza_size_preauth "
          "closes with 1009 (Message Too Big)")
    c.close()
    c = ws(srv)
    c.login("alice", PW, resource="big")
    c.send("<message to='bob@localhost'><body>%s</body></message>" % ("x" * 80000))
    t.ok(c.ping_server(), "after it a larger stanza (80 kB, under limits.max_stanza_size) is taken")
    c.send("<message to='bob@localhost'><body>%s</body></message>" % ("x" * 300000))
    t.is_(c.wait_close_frame(), 1009, "a message over limits.max_stanza_size closes with 1009")
    c.close()

    for what, text in (("text that is no element", "hello"),
                       ("two elements in one message", "<presence/><presence/>"),
                       ("half an element", "<message to='bob@localhost'><body>x</body>")):
        c = ws(srv)
        c.login("alice", PW, resource="e")
        c.send(text)
        cond, closed, code = stream_error_of(c)
        t.is_(cond, "not-well-formed", "%s: <not-well-formed/>" % what)
        t.ok(closed and code == 1000, "%s: then <close/> and the close frame" % what, (closed, code, c.dump()))
        c.close()

    c = ws(srv)
    c.send("<stream:stream xmlns='jabber:client' xmlns:stream='%s' to='localhost' version='1.0'>" % NS_STREAM)
    cond, closed, code = stream_error_of(c)
    t.ok(cond in ("not-well-formed", "invalid-namespace"), "a TCP stream header instead of <open/>: a stream error",
         cond)
    t.ok(closed, "then <close/>")
    c.close()

    c = ws(srv)
    c.send("<open xmlns='%s' to='nowhere.example' version='1.0'/>" % NS_FRAMING)
    cond, closed, code = stream_error_of(c)
    t.is_(cond, "host-unknown", "<open/> to a host not served: <host-unknown/>")
    t.ok(c.open_el is not None, "after an <open/> of the server's (RFC 6120 §4.9.1.2)")
    c.close()

    c = ws(srv)
    c.open_stream()
    c.send("<message to='bob@localhost'><body>before auth</body></message>")
    cond, closed, code = stream_error_of(c)
    t.is_(cond, "not-authorized", "a stanza before SASL: <not-authorized/>, as over TCP")
    c.close()

    c = ws(srv)
    c.login("alice", PW, resource="o")
    c.send("<open xmlns='%s' to='localhost' version='1.0'/>" % NS_FRAMING)
    err = c.expect(q(NS_STREAM, "error"))
    txt = err.find(q(NS_STREAMS_ERR, "text")) if err is not None else None
    t.ok(err is not None and err.find(q(NS_STREAMS_ERR, "bad-format")) is not None,
         "<open/> inside an open stream: <bad-format/>", c.dump())
    t.ok(txt is not None and txt.text == "<open/> inside an open stream" and len(txt) == 0,
         "the error's <text/> arrives escaped (character data, no element inside)", c.dump())
    c.close()

    c = ws(srv)
    c.open_stream()
    c.send_frame(OP_TEXT, "<auth xmlns='%s' mechanism='PLAIN'>" % NS_SASL, fin=False)
    c.send_frame(0, "AGFsaWNlAHB3LXdlYnNvY2tldA==</auth>")
    r = c.expect(lambda el: el.tag in (q(NS_SASL, "success"), q(NS_SASL, "failure")))
    t.ok(r is not None and r.tag == q(NS_SASL, "success"), "a message in two fragments is one element", c.dump())
    c.close()


def handshake_refusals(t, srv):
    port = srv.port("http")
    for proto, desc in (("chat, superchat", "a subprotocol list without xmpp"), (None, "no subprotocol")):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        h = handshake(s, protocol=proto)
        t.is_(h.status, 400, "%s: 400, no upgrade (RFC 7395 §3.1)" % desc)
        s.close()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    h = handshake(s, version="8")
    t.ok(h.status == 426 and h.header("Sec-WebSocket-Version") == "13",
         "an old WebSocket version: 426 with Sec-WebSocket-Version: 13 (RFC 6455 §4.4)", h.status)
    s.close()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    h = handshake(s, key="short")
    t.is_(h.status, 400, "a bad Sec-WebSocket-Key: 400")
    s.close()
    c = ws(srv, origin="https://anything.example")
    t.is_(c.hs.status, 101, "any Origin is accepted by default (CONTRACT.md)")
    c.close()


def origins(t):
    extra = "websocket:\n  allowed_origins: [\"https://chat.example\"]\n"
    with Server(t, listen={"client": ["127.0.0.1:0"], "http": ["127.0.0.1:0"]}, extra_yaml=extra) as srv:
        srv.adduser("alice@localhost", PW)
        c = ws(srv, origin="https://evil.example")
        t.is_(c.hs.status, 403, "an Origin not in websocket.allowed_origins: 403")
        c.close()
        c = ws(srv, origin="https://chat.example")
        t.is_(c.hs.status, 101, "an Origin in the list: 101")
        t.is_(c.login("alice", PW, resource="o"), "alice@localhost/o", "and the stream works")
        c.end()
        c = ws(srv)
        t.is_(c.hs.status, 101, "no Origin (not a browser): 101")
        c.close()


def fetch(url, cafile=None, origin=None):
    ctx = ssl.create_default_context(cafile=cafile) if url.startswith("https") else None
    req = urllib.request.Request(url, headers={"Origin": origin} if origin else {})
    with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read().decode()


def host_meta(t, srv):
    http_port, https_port = srv.port("http"), srv.port("https")
    st, h, body = fetch("http://localhost:%d/.well-known/host-meta" % http_port, origin="https://web.example")
    t.is_(st, 200, "GET /.well-known/host-meta: 200")
    t.ok(h.get("content-type", "").startswith("application/xrd+xml"), "as application/xrd+xml", h)
    t.is_(h.get("access-control-allow-origin"), "*", "with Access-Control-Allow-Origin: * (XEP-0156 §3)")
    x = ET.fromstring(body)
    links = [(ln.get("rel"), ln.get("href")) for ln in x.findall("{%s}Link" % XRD)]
    t.ok(x.tag == "{%s}XRD" % XRD and (REL, "ws://localhost:%d/xmpp-websocket" % http_port) in links,
         "the XRD links the ws:// URL of the plain listener", body)
    st, h, body = fetch("https://localhost:%d/.well-known/host-meta.json" % https_port, cafile=srv.ca)
    j = json.loads(body)
    t.ok(st == 200 and h.get("content-type", "").startswith("application/json"), "host-meta.json: 200 JSON", h)
    t.ok({"rel": REL, "href": "wss://localhost:%d/xmpp-websocket" % https_port} in j.get("links", []),
         "the JSON links the wss:// URL of the https listener", body)
    t.is_(h.get("access-control-allow-origin"), "*", "host-meta.json with CORS too")
    # the advertised URL works
    c = ws(srv, tls=True)
    t.is_(c.hs.status, 101, "wss:// on listen.https: 101")
    c.close()


def configured_url(t):
    extra = "websocket:\n  url: \"wss://chat.example/xmpp-websocket\"\n"
    with Server(t, listen={"client": ["127.0.0.1:0"], "http": ["127.0.0.1:0"]}, extra_yaml=extra) as srv:
        st, h, body = fetch("http://127.0.0.1:%d/.well-known/host-meta.json" % srv.port("http"))
        t.ok({"rel": REL, "href": "wss://chat.example/xmpp-websocket"} in json.loads(body).get("links", []),
             "websocket.url (behind a reverse proxy) is the URL announced", body)


def over_tls(t, srv):
    tcp = connect_login(srv, "bob", PW, resource="tls")
    c = ws(srv, tls=True)
    t.is_(c.hs.status, 101, "wss:// handshake over TLS")
    f = c.open_stream()
    t.ok("SCRAM-SHA-256-PLUS" in c.mechanisms(), "over wss:// SCRAM-SHA-256-PLUS is offered", c.mechanisms())
    ok, cond = c.auth_scram("alice", PW, mech="SCRAM-SHA-256-PLUS")
    t.ok(ok, "SCRAM-SHA-256-PLUS with tls-server-end-point of the https listener's certificate", cond)
    f = c.open_stream()
    t.ok(f is not None and f.find(q(NS_BIND, "bind")) is not None, "restart: bind offered")
    t.is_(c.bind("tls"), "alice@localhost/tls", "bound over wss://")
    c.message("bob@localhost/tls", "over wss")
    t.ok(tcp.expect_message("over wss") is not None, "message from wss:// to a TCP client")
    c.end()
    tcp.end()
    # a wrong channel binding fails, as over TCP
    c = ws(srv, tls=True)
    c.open_stream()
    ok, cond = c.auth_scram("alice", PW, mech="SCRAM-SHA-256-PLUS", cb_data=b"\0" * 32)
    t.ok(not ok, "SCRAM-PLUS with wrong channel-binding data fails", cond)
    c.close()


def ping_flood(t):
    """A client that sends pings and never reads: the pongs are output like any other and count
    towards limits.max_output_buffer; past it the connection is dropped (no unbounded buffering)."""
    extra = "limits:\n  max_output_buffer: 65536\n  max_bytes_per_second_preauth: 100000000\n"
    with Server(t, listen={"client": ["127.0.0.1:0"], "http": ["127.0.0.1:0"]}, extra_yaml=extra) as srv:
        c = ws(srv)
        t.is_(c.hs.status, 101, "a WebSocket")
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.sock.settimeout(30)
        ping = frame(OP_PING, b"p" * 125)
        batch = ping * 512                  # 512 pings, 64 kB of pongs
        sent, dropped = 0, False
        while sent < 64 * 1024 * 1024:      # far beyond what the kernel buffers on loopback
            try:
                c.sock.sendall(batch)
            except (OSError, socket.timeout):
                dropped = True
                break
            sent += len(batch)
        t.ok(dropped, "pings from a client that never reads its pongs: dropped past limits.max_output_buffer "
             "(%d bytes of pings sent)" % sent)
        c.close()


def keepalive(t):
    """websocket.ping_interval / ping_timeout: an idle WebSocket gets a Ping frame (RFC 6455 §5.5.2);
    one that answers neither it nor sends anything else is closed, one that answers stays."""
    extra = "websocket:\n  ping_interval: 1\n  ping_timeout: 2\n"
    with Server(t, listen={"client": ["127.0.0.1:0"], "http": ["127.0.0.1:0"]}, extra_yaml=extra) as srv:
        srv.adduser("alice@localhost", PW)
        a = ws(srv)
        a.login("alice", PW, resource="answers")
        b = ws(srv, answer_pings=False)
        b.login("alice", PW, resource="silent")
        # (a answers only while it reads: it goes first, b meanwhile answers nothing anyway)
        t.ok(a.read_until(lambda: len(a.pings) >= 3, 20) and not a.eof,
             "a client that answers each ping with a pong stays connected (%d pings)" % len(a.pings))
        t.ok(a.ping_server(), "and its stream still works")
        a.end()
        t.ok(b.read_until(lambda: len(b.pings) > 0, 15), "an idle WebSocket client gets a Ping frame after "
             "websocket.ping_interval (RFC 6455 §5.5.2)")
        t.ok(b.wait_closed(20), "a client that answers no ping and sends nothing is disconnected after "
             "websocket.ping_timeout")
        log = srv.log()
        t.ok("no answer to a WebSocket ping" in log, "the disconnection is logged", lambda: srv.log_tail(10))


def main(t):
    with Server(t, listen=LISTEN) as srv:
        srv.adduser("alice@localhost", PW)
        srv.adduser("bob@localhost", PW)
        t.run(handshake_and_open, t, srv)
        t.run(login_and_chat, t, srv, "PLAIN")
        t.run(login_and_chat, t, srv, "SCRAM-SHA-256")
        t.run(framing_errors, t, srv)
        t.run(handshake_refusals, t, srv)
        t.run(host_meta, t, srv)
        t.run(over_tls, t, srv)
        log = srv.log()
        t.ok("hello from" not in log, "no message content in the log")
    t.run(origins, t)
    t.run(configured_url, t)
    t.run(ping_flood, t)
    t.run(keepalive, t)


Tap().main(main)
