#!/usr/bin/python3
# tests/integration/test_http.py: the HTTP server of listen.http / listen.https (server/http.c), with
# the handlers of tests/modules/mod_test_http.c: responses and their security headers, keep-alive,
# HTTP/1.0, pipelining, streamed request bodies (Content-Length, chunked, 100-continue), early
# answers, asynchronous answers, files and HEAD, upgrade, a clear 4xx/5xx for each malformed
# request, header limits, timeouts, the access log without query strings, TLS with the certificate
# chosen by SNI, X-Forwarded-For from trusted proxies only, connection limits, config checks.
import http.client
import os
import shutil
import socket
import time
import ssl
import subprocess
import sys
import tempfile
import atexit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, Server, Certs, find_program, module_dir  # noqa: E402
from http_helpers import RawHTTP  # noqa: E402


def fnv(data):
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xffffffff
    return "%08x" % h


LISTEN = {"client": ["127.0.0.1:0"], "client_tls": ["127.0.0.1:0"], "http": ["127.0.0.1:0"],
          "https": ["127.0.0.1:0"]}


def basics(t, srv):
    port = srv.port("http")
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/test/echo?token=s3cr3t", headers={"Host": "Localhost.:5280"})
    r = c.getresponse()
    body = r.read().decode()
    t.is_(r.status, 200, "GET to a handler's prefix: 200")
    t.ok("path=/test/echo\n" in body and "query=token=s3cr3t\n" in body, "the handler sees path and query", body)
    t.ok("host=localhost\n" in body, "Host is given without port, lowercased, without the trailing dot", body)
    t.ok("ip=127.0.0.1\n" in body and "scheme=http\n" in body, "peer address and scheme", body)
    t.is_(r.getheader("X-Content-Type-Options"), "nosniff", "X-Content-Type-Options: nosniff")
    t.ok("default-src 'none'" in (r.getheader("Content-Security-Policy") or ""), "a Content-Security-Policy")
    t.ok(r.getheader("Date") is not None, "a Date header (RFC 9110 §6.6.1)")
    t.is_(r.getheader("Content-Length"), str(len(body)), "Content-Length")
    sock = c.sock
    c.request("GET", "/nothing/here")
    r = c.getresponse()
    r.read()
    t.is_(r.status, 404, "a path without a handler: 404")
    t.ok(c.sock is sock, "keep-alive: the second request used the same connection")
    c.request("GET", "/test/header", headers={"X-Set": "v1"})
    r = c.getresponse()
    r.read()
    t.ok(r.status == 204 and r.getheader("X-Test") == "v1" and r.getheader("Content-Length") is None,
         "204 with the handler's header and no Content-Length", str(r.getheaders()))
    t.is_(r.getheader("Content-Security-Policy"), "default-src 'self'", "a handler's own CSP replaces the default")
    c.close()
    line = srv.wait_log(r"http: 127\.0\.0\.1 GET /test/echo 200 \d+")
    t.ok(line is not None, "access log: client, method, path, status, bytes", srv.log_tail())
    t.ok("s3cr3t" not in srv.log(), "the query string is never logged")
    t.ok(srv.wait_log(r"http: 127\.0\.0\.1 GET - 404") is not None, "a path without handler is not logged")

    h = RawHTTP(port)
    r = h.request("GET", "/test/header", headers={"X-Set": "a\x01b"})
    t.ok(r is not None and r.status == 400, "a control character in a header value: 400", repr(r))
    h.close()


def keepalive_and_pipelining(t, srv):
    port = srv.port("http")
    h = RawHTTP(port)
    h.send("GET /test/echo HTTP/1.1\r\nHost: localhost\r\n\r\nGET /test/later HTTP/1.1\r\nHost: localhost\r\n\r\n"
           "GET /test/echo?x=2 HTTP/1.1\r\nHost: localhost\r\n\r\n")
    r1, r2, r3 = h.response(), h.response(), h.response()
    t.ok(r1 is not None and r1.status == 200 and b"path=/test/echo" in r1.body, "pipelined request 1", repr(r1))
    t.ok(r2 is not None and r2.body == b"later\n", "pipelined request 2, answered later by a timer", repr(r2))
    t.ok(r3 is not None and b"query=x=2" in r3.body, "pipelined request 3 after the asynchronous one", repr(r3))
    h.close()

    h = RawHTTP(port)
    h.send("GET /test/echo HTTP/1.0\r\n\r\n")
    r = h.response()
    t.ok(r is not None and r.status == 200 and r.version == "HTTP/1.1", "HTTP/1.0 without Host: answered", repr(r))
    t.ok(h.closed(), "HTTP/1.0 without keep-alive: closed after the response")
    h.close()
    h = RawHTTP(port)
    h.send("GET /test/echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    r = h.response()
    t.ok(r is not None and (r.header("Connection") or "").lower() == "keep-alive", "HTTP/1.0 keep-alive", repr(r))
    r = h.request("GET", "/test/echo", headers={"Connection": "close"})
    t.ok(r is not None and r.header("Connection") == "close" and h.closed(), "Connection: close is honoured")
    h.close()


def bodies(t, srv):
    port = srv.port("http")
    data = os.urandom(3 * 1024 * 1024 + 17)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("PUT", "/test/echo", body=data, headers={"Content-Type": "application/octet-stream"})
    r = c.getresponse()
    body = r.read().decode()
    t.ok(r.status == 200 and ("len=%d sum=%s" % (len(data), fnv(data))) in body,
         "a 3 MiB body arrives whole, streamed to the handler", body)
    chunks = int(body.split("chunks=")[1]) if "chunks=" in body else 0
    t.ok(chunks > 1, "the body reached the handler in several chunks (%d), never buffered whole" % chunks)

    def gen():
        for i in range(0, len(data), 100000):
            yield data[i:i + 100000]
    c.request("POST", "/test/echo", body=gen(), encode_chunked=True)
    r = c.getresponse()
    body = r.read().decode()
    t.ok(r.status == 200 and ("len=%d sum=%s" % (len(data), fnv(data))) in body, "a chunked body is decoded", body)
    c.close()

    h = RawHTTP(port)
    h.send("PUT /test/echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    r = h.response()
    t.ok(r is not None and r.status == 100, "Expect: 100-continue gets 100 Continue before the body", repr(r))
    h.send("hello")
    r = h.response()
    t.ok(r is not None and r.status == 200 and ("len=5 sum=%s" % fnv(b"hello")).encode() in r.body,
         "then the final response", repr(r))
    h.close()

    h = RawHTTP(port)
    h.send("PUT /test/reject HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n")
    r = h.response()
    t.ok(r is not None and r.status == 413 and r.header("Connection") == "close",
         "a handler's early answer: no 100 Continue, its status, Connection: close", repr(r))
    t.ok(h.closed(), "and the connection closes (the unread body is never parsed as a request)")
    h.close()

    h = RawHTTP(port)
    h.send(b"PUT /test/abort HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000)
    r = h.response()
    t.ok(r is not None and r.status == 507 and h.closed(), "a handler stopping the body mid-way: its answer, closed",
         repr(r))
    h.close()

    h = RawHTTP(port)
    h.send(b"POST /nothing HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc"
           b"GET /test/echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
    r = h.response()
    t.ok(r is not None and r.status == 404 and r.header("Connection") == "close", "404 before a body: closes",
         repr(r))
    h.close()


def files_and_head(t, srv):
    port = srv.port("http")
    want = bytes(i % 251 for i in range(100000))
    h = RawHTTP(port)
    r = h.request("GET", "/test/file")
    t.ok(r is not None and r.status == 200 and r.body == want, "a file body (http_respond_file)",
         repr(r)[:300])
    r = h.request("HEAD", "/test/file")
    t.ok(r is not None and r.status == 200 and r.header("Content-Length") == "100000",
         "HEAD: the same headers", repr(r))
    r = h.request("GET", "/test/echo")
    t.ok(r is not None and r.status == 200 and r.body.startswith(b"method=GET"),
         "HEAD sent no body: the next response on the connection is intact", repr(r))
    h.close()


def upgrade(t, srv):
    port = srv.port("http")
    h = RawHTTP(port)
    r = h.request("GET", "/test/upgrade")
    t.ok(r is not None and r.status == 426, "no Upgrade header: the handler's 426", repr(r))
    h.close()
    h = RawHTTP(port)
    h.send("GET /test/upgrade HTTP/1.1\r\nHost: localhost\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\nearly")
    r = h.response()
    t.ok(r is not None and r.status == 101 and r.header("Upgrade") == "test", "101 Switching Protocols", repr(r))
    while len(h.buf) < 5 and h._fill(__import__("time").monotonic() + 10):
        pass
    t.is_(h.buf[:5], b"early", "bytes sent with the request reach the new protocol")
    h.buf = b""
    h.send("ping-after")
    while len(h.buf) < 10 and h._fill(__import__("time").monotonic() + 10):
        pass
    t.is_(h.buf, b"ping-after", "the connection belongs to the new protocol's owner")
    h.close()
    t.ok(srv.wait_log("upgraded connection from 127.0.0.1 for host localhost") is not None, "upgrade callback ran")


def malformed(t, srv):
    port = srv.port("http")
    cases = [
        (b"GARBAGE\r\n\r\n", 400, "a request line of one word"),
        (b"GET /test/echo HTXP/1.1\r\nHost: localhost\r\n\r\n", 400, "a request line without HTTP version"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, "a TLS ClientHello on the plain port"),
        (b"GET /test/echo HTTP/1.1\r\n\r\n", 400, "HTTP/1.1 without Host"),
        (b"GET /test/echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "two Host headers"),
        (b"GET /test/echo HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "a Host with a space"),
        (b"GET /test/echo HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nX-A: 2\r\nHost: b\r\n\r\n", 400,
         "a second Host after a repeated header (found by fuzz_http: a double free)"),
        (b"GET /test/echo HTTP/2.0\r\nHost: localhost\r\n\r\n", 505, "HTTP/2.0 in an HTTP/1 request line"),
        (b"BREW /test/echo HTTP/1.1\r\nHost: localhost\r\n\r\n", 501, "an unknown method"),
        (b"CONNECT localhost:443 HTTP/1.1\r\nHost: localhost\r\n\r\n", 501, "CONNECT"),
        (b"GET /test/echo/%zz HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "a bad percent escape"),
        (b"GET /test/echo/%00 HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "an encoded NUL"),
        (b"GET /test/echo/../../etc/passwd HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "a dot-dot segment"),
        (b"GET /test/%2e%2e/x HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "an encoded dot-dot segment"),
        (b"GET test/echo HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "a path without a leading slash"),
        (b"POST /test/echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"3\r\nabc\r\n0\r\n\r\n", 400, "Content-Length and Transfer-Encoding together (smuggling)"),
        (b"POST /test/echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
         400, "two Content-Length headers"),
        (b"POST /test/echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: -1\r\n\r\n", 400, "a negative Content-Length"),
        (b"POST /test/echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400,
         "a bad chunk size"),
        (b"GET /test/echo HTTP/1.1\r\nHost: localhost\r\nBad Header: x\r\n\r\n", 400, "a space in a header name"),
        (b"GET /test/echo HTTP/1.1\r\nHost: localhost\r\n" + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n", 431,
         "headers over http.max_header_size"),
        (b"GET /test/echo HTTP/1.1\r\nHost: localhost\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(70)) + b"\r\n",
         431, "more headers than http.max_headers"),
        (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 414, "a request target over the limit"),
    ]
    for raw, status, desc in cases:
        h = RawHTTP(port)
        h.send(raw)
        r = h.response()
        t.ok(r is not None and r.status == status, "%s: %d" % (desc, status), repr(r))
        t.ok(h.closed(), "%s: the connection is closed" % desc)
        h.close()
    t.ok(srv.proc.poll() is None, "the server runs on after every malformed request")


def timeouts(t, srv):
    port = srv.port("http")
    h = RawHTTP(port)
    h.send("GET /test/echo HTTP/1.1\r\nHost: loc")
    r = h.response(timeout=15)
    t.ok(r is not None and r.status == 408, "headers not complete within http.request_timeout: 408", repr(r))
    t.ok(h.closed(), "and closed")
    h.close()
    h = RawHTTP(port)
    r = h.request("GET", "/test/echo")
    t.ok(r is not None and r.status == 200, "a request")
    t.ok(h.closed(timeout=15) and not h.buf, "an idle keep-alive connection closes after http.idle_timeout, silently")
    h.close()
    h = RawHTTP(port)
    h.send("PUT /test/echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nabc")
    t.ok(h.closed(timeout=15), "a body that stops arriving: the connection closes after http.request_timeout")
    h.close()
    # a body trickled a byte a second (each pause under request_timeout): http.min_body_rate (1000 bytes/s
    # here) allows request_timeout plus a millisecond a byte, not forever
    h = RawHTTP(port)
    h.send("PUT /test/echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n")
    deadline = time.monotonic() + 20
    r = None
    while time.monotonic() < deadline and r is None and not h.eof:
        try:
            h.send(b"x")
        except OSError:
            break
        r = h.response(timeout=1)
    t.ok(r is not None and r.status == 408, "a body trickled under http.min_body_rate: 408 before 20 s", repr(r))
    t.ok(h.closed(), "and closed")
    h.close()


def tls_sni(t, srv):
    port = srv.port("https")
    for name in ("localhost", "b.example"):
        ctx = ssl.create_default_context(cafile=srv.ca)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            with ctx.wrap_socket(s, server_hostname=name) as ts:
                ts.sendall(("GET /test/echo HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % name).encode())
                data = b""
                while True:
                    d = ts.recv(65536)
                    if not d:
                        break
                    data += d
        t.ok(data.startswith(b"HTTP/1.1 200") and b"scheme=https" in data and ("host=%s" % name).encode() in data,
             "https with SNI %s: the certificate of %s verifies, the request is answered" % (name, name),
             data[:300])


def proxies(t, srv):
    port = srv.port("http")
    h = RawHTTP(port)
    r = h.request("GET", "/test/echo", headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"})
    t.ok(r is not None and b"ip=127.0.0.1\n" in r.body and b"scheme=http\n" in r.body,
         "X-Forwarded-For from a peer that is no trusted proxy is ignored", repr(r))
    h.close()
    h = RawHTTP(port, source="127.0.0.2")
    r = h.request("GET", "/test/echo", headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.7, 127.0.0.3",
                                                "X-Forwarded-Proto": "https"})
    t.ok(r is not None and b"ip=203.0.113.7\n" in r.body and b"scheme=https\n" in r.body,
         "from a trusted proxy: the right-most untrusted X-Forwarded-For address, X-Forwarded-Proto", repr(r))
    h.close()
    t.ok(srv.wait_log(r"http: 203\.0\.113\.7 GET /test/echo 200") is not None, "the access log names the client")


def limits(t, srv):
    port = srv.port("http")
    conns = [RawHTTP(port) for _ in range(3)]
    for c in conns:
        c.send("GET /test/echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
        c.response()
    extra = RawHTTP(port)
    t.ok(extra.closed(), "a connection over http.max_connections_per_ip is closed at once")
    extra.close()
    t.ok(srv.wait_log("connection refused \\(limits\\)") is not None, "and logged")
    for c in conns:
        c.close()
    # the next tests need the slots back: the server frees them when it has read the closes
    r = answered(port)
    t.ok(getattr(r, "status", None) == 200, "once the connections are closed, a new one is served again", repr(r))


def answered(port, tls=False, timeout=30):
    """A GET /test/echo on a new connection, retried until answered or timeout (a connection over
    the per-address limit is closed while the server has not yet read an earlier client's close)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            h = RawHTTP(port, tls=tls)
            r = h.request("GET", "/test/echo")
            h.close()
        except (OSError, ssl.SSLError) as e:
            r = e
        if getattr(r, "status", None) == 200 or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def pipelining_without_reading(t, srv, tls=False):
    """Requests pipelined by a client that never reads the answers: no more are parsed once about
    1 MB of answers wait for it (each answer to /test/file held an open file, 100 kB of it), so the
    server stops reading instead of queueing answers (and descriptors) without bound."""
    port = srv.port("https" if tls else "http")
    h = RawHTTP(port, tls=tls)
    h.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    req = ("GET /test/file HTTP/1.1\r\nHost: localhost\r\nX-Pad: %s\r\n\r\n" % ("p" * 4000)).encode()
    batch = req * 16
    sent, stopped = 0, False
    h.sock.settimeout(5)
    while sent < 16384 * len(req):      # 16384 answers: 1.6 GB of file bodies, 16384 open files
        try:
            h.sock.sendall(batch)
        except (OSError, socket.timeout):
            stopped = True
            break
        sent += len(batch)
    t.ok(stopped, "%s: a client pipelining requests and reading no answer is not read from any more "
         "(%d requests sent)" % ("https" if tls else "http", sent // len(req)))
    h.close()
    r = answered(port, tls)
    t.ok(getattr(r, "status", None) == 200, "and the server answers other clients", repr(r))
    # a client that reads gets every answer: parsing resumes as the answers drain
    answered(port, tls)     # the slot of the closed client is free again
    h = RawHTTP(port, tls=tls)
    h.send(b"GET /test/file HTTP/1.1\r\nHost: localhost\r\n\r\n" * 40)
    want = bytes(i % 251 for i in range(100000))
    got = [h.response() for _ in range(40)]
    t.ok(all(r is not None and r.status == 200 and r.body == want for r in got),
         "%s: 40 pipelined requests for 4 MB of answers, read as they come: all answered" % ("https" if tls else "http"))
    h.close()


def per_address_key(t):
    """http.max_connections_per_ip counts a client address as every other limit does
    (ip_limit_key: an IPv6 /64 is one address, an IPv4-mapped IPv6 address is its IPv4 address).
    Loopback has no two IPv6 addresses in one /64: the mapped form shows the same key at work,
    127.0.0.1 reaching an IPv6 listener is ::ffff:127.0.0.1 there."""
    import re
    listen = {"client": ["127.0.0.1:0"], "http": ["127.0.0.1:0", "[::ffff:127.0.0.1]:0"]}
    with Server(t, listen=listen, modules=["disco", "test_http"],
                extra_yaml="http:\n  max_connections_per_ip: 2\n") as srv:
        mapped = [int(p) for p in re.findall(r"listening http \[::ffff:127\.0\.0\.1\]:(\d+)", srv.log())]
        plain = [int(p) for p in re.findall(r"listening http 127\.0\.0\.1:(\d+)", srv.log())]
        t.ok(len(mapped) == 1 and len(plain) == 1, "an IPv4 listener and one for IPv4-mapped addresses",
             srv.log_tail())
        if len(mapped) != 1 or len(plain) != 1:
            return
        conns = [RawHTTP(plain[0]) for _ in range(2)]
        for c in conns:
            r = c.request("GET", "/test/echo")
            t.ok(r is not None and r.status == 200, "a connection within the limit", repr(r))
        extra = RawHTTP(mapped[0], host="::ffff:127.0.0.1")
        t.ok(extra.closed(), "the same client as ::ffff:127.0.0.1 over the limit: closed at once")
        extra.close()
        for c in conns:
            c.close()


def config_checks(t):
    d = tempfile.mkdtemp(prefix="civitas-http-conf-")
    atexit.register(shutil.rmtree, d, True)
    certs = Certs(d)
    leaf = certs.leaf(["localhost"])
    path = os.path.join(d, "c.yml")
    for bad, key in (("http: {trusted_proxies: [\"10.0.0.0/33\"]}", "trusted_proxies"),
                     ("http: {trusted_proxies: [\"proxy.example\"]}", "trusted_proxies"),
                     ("http: {public_url: \"ftp://x\"}", "public_url"),
                     ("http: {max_headers: 2}", "max_headers"),
                     ("http: {bogus: 1}", "bogus"),
                     ("listen: {https: [\"nowhere\"]}", "https")):
        with open(path, "w") as f:
            f.write("hosts:\n  - name: localhost\n    tls: {certificate: %s, key: %s}\n%s\n" % (leaf.cert, leaf.key, bad))
        r = subprocess.run([find_program("civitasd"), "--config", path, "--check"], capture_output=True, text=True)
        t.ok(r.returncode == 1 and ("c.yml:4" in r.stderr) and key in r.stderr, "--check refuses %s" % bad, r.stderr)


def main(t):
    d = module_dir("mod_test_http")
    if d is None:
        t.ok(False, "tests/modules/mod_test_http.c is built (make check builds it)")
        return
    os.environ["CIVITAS_MODULE_DIR"] = d
    certs = Certs()
    extra = ("http:\n  trusted_proxies: [\"127.0.0.2\", \"127.0.0.3/32\"]\n  request_timeout: 2\n  idle_timeout: 2\n"
             "  min_body_rate: 1000\n"
             "  max_connections_per_ip: 3\n")
    with Server(t, hosts=["localhost", "b.example"], certs=certs, listen=LISTEN, modules=["disco", "test_http"],
                extra_yaml=extra) as srv:
        t.run(basics, t, srv)
        t.run(keepalive_and_pipelining, t, srv)
        t.run(bodies, t, srv)
        t.run(files_and_head, t, srv)
        t.run(upgrade, t, srv)
        t.run(malformed, t, srv)
        t.run(tls_sni, t, srv)
        t.run(proxies, t, srv)
        t.run(timeouts, t, srv)
        t.run(limits, t, srv)
        t.run(pipelining_without_reading, t, srv)
        t.run(pipelining_without_reading, t, srv, True)
    t.run(config_checks, t)
    t.run(per_address_key, t)


Tap().main(main)
