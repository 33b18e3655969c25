# tests/integration/http_helpers.py: a raw HTTP/1.1 client over real sockets for the HTTP tests
# (test_http.py, test_upload.py): exact bytes out, responses parsed by hand so that malformed
# requests, pipelining, 100-continue and closed connections can be checked. Waits have deadlines.
import socket
import ssl
import time

from harness import DEFAULT_TIMEOUT


class Response:
    def __init__(self, status, reason, headers, body, version):
        self.status, self.reason, self.headers, self.body, self.version = status, reason, headers, body, version

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def __repr__(self):
        return "<Response %s %s %r %r>" % (self.status, self.reason, self.headers, self.body[:200])


class RawHTTP:
    """One connection: send(bytes), response() reads one response (None when the connection
    closed before a whole one arrived), closed() waits until the server closes."""

    def __init__(self, port, tls=False, server_hostname=None, cafile=None, source=None, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=DEFAULT_TIMEOUT,
                                             source_address=(source, 0) if source else None)
        if tls:
            ctx = ssl.create_default_context(cafile=cafile)
            if cafile is None:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname)
        self.buf = b""
        self.eof = False

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0 or self.eof:
            return False
        self.sock.settimeout(left)
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            return False
        except (ConnectionResetError, ssl.SSLError, OSError):
            d = b""
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def response(self, timeout=DEFAULT_TIMEOUT, head=False):
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                return None
        head_bytes, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head_bytes.decode("latin-1").split("\r\n")
        version, status, reason = (lines[0].split(" ", 2) + [""])[:3]
        headers = []
        for l in lines[1:]:
            k, _, v = l.partition(":")
            headers.append((k.strip(), v.strip()))
        r = Response(int(status), reason, headers, b"", version)
        if head or r.status < 200 or r.status in (204, 304):
            return r
        cl = r.header("Content-Length")
        if cl is not None:
            n = int(cl)
            while len(self.buf) < n:
                if not self._fill(deadline):
                    return None
            r.body, self.buf = self.buf[:n], self.buf[n:]
        else:
            while self._fill(deadline):
                pass
            r.body, self.buf = self.buf, b""
        return r

    def request(self, method, path, headers=None, body=b"", host="localhost", timeout=DEFAULT_TIMEOUT):
        hs = {"Host": host}
        if body:
            hs["Content-Length"] = str(len(body))
        hs.update(headers or {})
        text = "%s %s HTTP/1.1\r\n%s\r\n" % (method, path, "".join("%s: %s\r\n" % kv for kv in hs.items()))
        self.send(text.encode() + (body if isinstance(body, bytes) else body.encode()))
        return self.response(timeout, head=(method == "HEAD"))

    def closed(self, timeout=DEFAULT_TIMEOUT):
        """True when the server closes the connection within timeout (data before it is kept)."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            if not self._fill(deadline) and not self.eof:
                return False
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
