# tests/integration/ws_client.py: a WebSocket client (RFC 6455) speaking XMPP's subprotocol (RFC
# 7395), written on the standard library for the tests: the handshake, masked client frames,
# fragments, ping/pong and close frames, every message parsed as one XML element. WSClient keeps
# RawClient's API (login, auth_scram, iq, expect, message) so the stream is driven as over TCP.
import base64
import hashlib
import os
import socket
import ssl
import struct
import time
import xml.etree.ElementTree as ET

from harness import RawClient, q, NS_STREAM

NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def frame(opcode, payload, fin=True, mask=True):
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    mbit = 0x80 if mask else 0
    if n < 126:
        hdr = bytes([b0, mbit | n])
    elif n < 65536:
        hdr = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        hdr = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if not mask:
        return hdr + payload
    key = os.urandom(4)
    return hdr + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def accept_of(key):
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


class Handshake:
    def __init__(self, status, headers, rest):
        self.status, self.headers, self.rest = status, headers, rest

    def header(self, name):
        return self.headers.get(name.lower())


def handshake(sock, host="localhost", path="/xmpp-websocket", protocol="xmpp", origin=None, key=None,
              version="13", extra=None, timeout=10):
    """Send the opening handshake, read the response head. Returns Handshake (status 0: none)."""
    key = key or base64.b64encode(os.urandom(16)).decode()
    lines = ["GET %s HTTP/1.1" % path, "Host: %s" % host, "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: %s" % key, "Sec-WebSocket-Version: %s" % version]
    if protocol is not None:
        lines.append("Sec-WebSocket-Protocol: %s" % protocol)
    if origin is not None:
        lines.append("Origin: %s" % origin)
    lines += extra or []
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in buf and time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            d = sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            continue
        if not d:
            break
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    if not head:
        return Handshake(0, {}, b"")
    hl = head.decode("latin-1").split("\r\n")
    parts = hl[0].split(" ", 2)
    headers = {}
    for line in hl[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    h = Handshake(int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0, headers, rest)
    h.key = key
    return h


class WSClient(RawClient):
    """An XMPP client over WebSocket. ws_error: set when the handshake did not give 101."""

    def __init__(self, port, tls=False, cafile=None, server_hostname="localhost", protocol="xmpp",
                 origin=None, host_header=None, answer_pings=True, **kw):
        super().__init__(port, tls=tls, cafile=cafile, server_hostname=server_hostname, **kw)
        self.hs = handshake(self.sock, host=host_header or server_hostname, protocol=protocol, origin=origin)
        self.wsbuf = self.hs.rest
        self.frag = b""
        self.frag_op = None
        self.close_code = None      # status of the server's close frame, once it arrived
        self.pongs = []
        self.pings = []             # the server's ping frames' data
        self.answer_pings = answer_pings
        self.texts = []             # every text message, as received
        self.open_el = None         # the server's last <open/>
        self.tls = True             # XMPP-level: no STARTTLS over WebSocket (TLS or a proxy below)
        self._parse()               # frames that came with the handshake's response

    @property
    def upgraded(self):
        return self.hs.status == 101

    def send_frame(self, opcode, payload, fin=True, mask=True):
        try:
            self.sock.sendall(frame(opcode, payload, fin, mask))
            return True
        except (OSError, ssl.SSLError):
            return False

    def send(self, data):
        """One text message."""
        return self.send_frame(OP_TEXT, data)

    def _message(self, op, payload):
        if op == OP_TEXT:
            text = payload.decode("utf-8")
            self.texts.append(text)
            el = ET.fromstring(text)
            if el.tag == q(NS_FRAMING, "open"):
                self.open_el = el
            self.inbox.append(el)
        elif op == OP_CLOSE:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        elif op == OP_PING:
            self.pings.append(payload)
            if self.answer_pings:
                self.send_frame(OP_PONG, payload)
        elif op == OP_PONG:
            self.pongs.append(payload)

    def _parse(self):
        while True:
            b = self.wsbuf
            if len(b) < 2:
                return
            fin, op, masked, n = b[0] & 0x80, b[0] & 0x0F, b[1] & 0x80, b[1] & 0x7F
            i = 2
            if n == 126:
                if len(b) < 4:
                    return
                n, i = struct.unpack("!H", b[2:4])[0], 4
            elif n == 127:
                if len(b) < 10:
                    return
                n, i = struct.unpack("!Q", b[2:10])[0], 10
            if masked:
                raise AssertionError("the server masked a frame (RFC 6455 §5.1 forbids it)")
            if len(b) < i + n:
                return
            payload, self.wsbuf = b[i:i + n], b[i + n:]
            if op >= 8:
                self._message(op, payload)
            elif op == OP_CONT:
                self.frag += payload
                if fin:
                    self._message(self.frag_op, self.frag)
                    self.frag, self.frag_op = b"", None
            elif not fin:
                self.frag, self.frag_op = payload, op
            else:
                self._message(op, payload)

    def _feed(self, data):
        """RawClient reads the socket; this adds the WebSocket framing."""
        self.wsbuf += data
        self._parse()

    def open_stream(self, to="localhost", version="1.0", ns=None, header=None, timeout=None):
        """<open/> (RFC 7395 §3.3.2); returns <stream:features/> or None (see stream_error())."""
        self.inbox = []
        attrs = " to='%s'" % to if to is not None else ""
        if version is not None:
            attrs += " version='%s'" % version
        self.send(header if header is not None else "<open xmlns='%s'%s/>" % (NS_FRAMING, attrs))
        self.features = self.expect(lambda el: el.tag in (q(NS_STREAM, "features"), q(NS_STREAM, "error")), timeout)
        if self.features is not None and self.features.tag != q(NS_STREAM, "features"):
            self.inbox.insert(0, self.features)
            self.features = None
        return self.features

    def wait_close_frame(self, timeout=None):
        return self.read_until(lambda: self.close_code, timeout)

    def end(self):
        if not self.eof:
            self.send("<close xmlns='%s'/>" % NS_FRAMING)
            self.wait_closed(2)
        self.close()
