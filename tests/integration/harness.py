# tests/integration/harness.py: the shared machinery of the integration tests: TAP output, a test CA,
# a civitasd on port 0 per test file, and a raw-socket XMPP client for protocol-level checks.
"""Integration-test harness for civitas.

Runs with Debian's /usr/bin/python3 and the standard library only (slixmpp is used by its own test).

  t = Tap()
  with Server(t) as srv:
      srv.adduser("alice@localhost", "secret")
      c = RawClient(srv.port("client"))
      feats = c.open_stream()
      ...
  t.done()

Nothing here sleeps for a fixed time: every wait is for an event (a log line, a stanza, a closed
socket) with a deadline, so a slow machine is slower but not flaky, and a missing event fails.
"""
import base64
import collections
import hashlib
import hmac
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET
import xml.parsers.expat
import atexit

NS_STREAM = "http://etherx.jabber.org/streams"
NS_STREAMS_ERR = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_CLIENT = "jabber:client"
NS_PING = "urn:xmpp:ping"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_VERSION = "jabber:iq:version"
NS_TIME = "urn:xmpp:time"
NS_ROSTER = "jabber:iq:roster"
NS_DELAY = "urn:xmpp:delay"

DEFAULT_TIMEOUT = float(os.environ.get("CIVITAS_TEST_IO_TIMEOUT", "10"))
# The mechanism login()/connect_login() use unless a test names one.
DEFAULT_MECH = os.environ.get("CIVITAS_TEST_MECH", "SCRAM-SHA-256")


class HarnessError(Exception):
    """A step the test depends on could not be done (server did not start, login failed, ...)."""


def q(ns, local):
    """ElementTree's qualified name: q(NS_CLIENT, 'message') == '{jabber:client}message'."""
    return "{%s}%s" % (ns, local)


def local_name(tag):
    return tag.rsplit("}", 1)[-1]


def xml_escape(s):
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("'", "&apos;").replace('"', "&quot;"))


def el_str(el):
    """One-line serialisation for diagnostics and test output."""
    if el is None:
        return "(none)"
    try:
        return ET.tostring(el, encoding="unicode")
    except Exception as e:  # pragma: no cover - diagnostics only
        return "<unserialisable %r: %s>" % (el.tag, e)


# --------------------------------------------------------------------------------------------
# TAP

class Tap:
    """TAP producer. ok() prints one result line; failures add '# ' diagnostics including the tail
    of every running server's log. done() prints the plan and exits 1 if anything failed."""

    def __init__(self, timeout=None):
        self.n = 0
        self.failed = 0
        self.servers = []          # Server objects whose log tail is shown on failure
        sys.stdout.reconfigure(line_buffering=True)
        total = timeout if timeout is not None else float(os.environ.get("CIVITAS_TEST_TIMEOUT", "300"))
        if total > 0:
            signal.signal(signal.SIGALRM, self._alarm)
            signal.alarm(int(total))

    @staticmethod
    def _alarm(signum, frame):
        raise HarnessError("test file exceeded its overall time limit (CIVITAS_TEST_TIMEOUT)")

    def diag(self, *lines):
        for block in lines:
            for line in str(block).splitlines() or [""]:
                print("# " + line)

    def ok(self, cond, desc, diag=None):
        """Record one check. diag: extra text (or a callable giving it) shown only on failure."""
        self.n += 1
        cond = bool(cond)
        desc = desc.replace("\n", " ")
        print("%sok %d - %s" % ("" if cond else "not ", self.n, desc))
        if not cond:
            self.failed += 1
            if diag is not None:
                self.diag(diag() if callable(diag) else diag)
            for s in self.servers:
                if s.proc is not None:
                    self.diag("--- tail of civitasd log (%s) ---" % s.dir, *s.log_tail(25))
        return cond

    def skip(self, desc, reason):
        self.n += 1
        print("ok %d - %s # SKIP %s" % (self.n, desc.replace("\n", " "), reason))

    def is_(self, got, want, desc):
        return self.ok(got == want, desc, lambda: "got:  %r\nwant: %r" % (got, want))

    def done(self):
        signal.alarm(0)
        for s in list(self.servers):
            s.stop()
        print("1..%d" % self.n)
        if self.failed:
            self.diag("%d of %d checks failed" % (self.failed, self.n))
        sys.exit(1 if self.failed else 0)

    def run(self, fn, *args, **kw):
        """Run one group of checks; an exception there is one failed check and the file goes on."""
        try:
            return fn(*args, **kw)
        except Exception as e:
            self.ok(False, "%s: completed without exception (%s: %s)" % (fn.__name__, type(e).__name__, e),
                    traceback.format_exc())
            return None

    def main(self, fn):
        """Run a test file's body, then done(). Uncaught exceptions count as a failure."""
        try:
            fn(self)
        except Exception as e:
            self.ok(False, "test body completed without exception (%s: %s)" % (type(e).__name__, e),
                    traceback.format_exc())
        self.done()


# --------------------------------------------------------------------------------------------
# Certificates

class Leaf:
    def __init__(self, cert, key, domains):
        self.cert, self.key, self.domains = cert, key, list(domains)


class Certs:
    """A throw-away CA and leaf certificates (EC P-256, SHA-256 signatures) made with openssl(1)."""

    def __init__(self, tmpdir=None):
        if tmpdir is None:      # a directory of its own, removed when the test process ends
            tmpdir = tempfile.mkdtemp(prefix="civitas-certs-")
            atexit.register(shutil.rmtree, tmpdir, True)
        self.dir = os.path.join(tmpdir, "certs")
        os.makedirs(self.dir, exist_ok=True)
        self.ca = os.path.join(self.dir, "ca.crt")
        self.ca_key = os.path.join(self.dir, "ca.key")
        self._n = 0
        self._openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", self.ca_key)
        self._openssl("req", "-x509", "-new", "-key", self.ca_key, "-sha256", "-days", "30",
                      "-subj", "/CN=civitas test CA",
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                      "-out", self.ca)

    def _openssl(self, *args):
        r = subprocess.run(["openssl"] + list(args), capture_output=True, text=True)
        if r.returncode != 0:
            raise HarnessError("openssl %s failed: %s" % (" ".join(args), r.stderr))

    def leaf(self, domains, name=None):
        """A certificate with subjectAltName DNS:<d> for each domain, signed by the CA."""
        if isinstance(domains, str):
            domains = [domains]
        self._n += 1
        base = os.path.join(self.dir, name or "%s-%d" % (domains[0], self._n))
        key, csr, crt, ext = base + ".key", base + ".csr", base + ".crt", base + ".ext"
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyAgreement\n"
                    "extendedKeyUsage=serverAuth,clientAuth\n"
                    "subjectAltName=%s\n" % ",".join("DNS:" + d for d in domains))
        self._openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
        self._openssl("req", "-new", "-key", key, "-subj", "/CN=" + domains[0], "-out", csr)
        self._openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key, "-sha256",
                      "-set_serial", str(secrets.randbits(63)), "-days", "30", "-extfile", ext, "-out", crt)
        return Leaf(crt, key, domains)


# --------------------------------------------------------------------------------------------
# The server under test

def build_dir():
    d = os.environ.get("CIVITAS_BUILDDIR")
    if d:
        return os.path.abspath(d)
    return os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def find_program(name):
    """The freshly built program: $CIVITAS_BUILDDIR/<name> (or .../server/<name>)."""
    env = os.environ.get(name.upper())
    if env:
        return env
    b = build_dir()
    for cand in (os.path.join(b, name), os.path.join(b, "server", name)):
        if os.access(cand, os.X_OK):
            return cand
    raise HarnessError("%s not found in %s (set CIVITAS_BUILDDIR)" % (name, b))


LISTEN_RE = re.compile(r"listening (client_tls|client|server_tls|server|https|http) (\[[0-9A-Fa-f:.]+\]|[0-9A-Za-z.-]+):(\d+)\b")
READY_RE = re.compile(r"\bready\b")
SANITIZER_RE = re.compile(r"(ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|ThreadSanitizer)")

_live_servers = []


def _kill_leftovers():
    for s in _live_servers:
        if s.proc is not None and s.proc.poll() is None:
            s.proc.kill()


atexit.register(_kill_leftovers)


class Server:
    """One civitasd with a temporary config, data_dir and certificates, on ports chosen by the kernel.

    Server(t, hosts=["localhost"], extra_yaml="", modules=None, start=True, listen=None)
      extra_yaml is appended verbatim to the config; modules=None leaves the default set.
      listen: dict kind -> list of addresses, default client/client_tls/server on 127.0.0.1:0.
    """

    def __init__(self, t, hosts=("localhost",), extra_yaml="", modules=None, start=True, listen=None,
                 certs=None, ready_timeout=20.0):
        self.t = t
        self.hosts = list(hosts)
        self.dir = tempfile.mkdtemp(prefix="civitas-it-")
        self.certs = certs or Certs(self.dir)
        self.ca = self.certs.ca
        self.leaves = {h: self.certs.leaf([h]) for h in self.hosts}
        self.data_dir = os.path.join(self.dir, "data")
        self.config = os.path.join(self.dir, "civitas.yml")
        self.listen = listen or {"client": ["127.0.0.1:0"], "client_tls": ["127.0.0.1:0"],
                                 "server": ["127.0.0.1:0"]}
        self.modules = modules
        self.extra_yaml = extra_yaml
        self.ready_timeout = ready_timeout
        self.proc = None
        self.exit_code = None
        self.ports = {}            # kind -> [port, ...] in log order
        self._lines = []
        self._cond = threading.Condition()
        self._reader = None
        self.write_config()
        if start:
            self.start()

    # configuration -------------------------------------------------------------------------
    def config_text(self):
        out = ["# written by tests/integration/harness.py", "hosts:"]
        for h in self.hosts:
            lf = self.leaves[h]
            out += ["  - name: %s" % json.dumps(h), "    tls:",
                    "      certificate: %s" % json.dumps(lf.cert),
                    "      key: %s" % json.dumps(lf.key)]
        out.append("listen:")
        for kind, addrs in self.listen.items():
            out.append("  %s: [%s]" % (kind, ", ".join(json.dumps(a) for a in addrs)))
        out.append("data_dir: %s" % json.dumps(self.data_dir))
        if self.modules is not None:
            out.append("modules:" + ("" if self.modules else " []"))
            out += ["  - %s" % m for m in self.modules]
        text = "\n".join(out) + "\n"
        if self.extra_yaml:
            text += self.extra_yaml if self.extra_yaml.endswith("\n") else self.extra_yaml + "\n"
        return text

    def write_config(self):
        with open(self.config, "w") as f:
            f.write(self.config_text())

    # process -------------------------------------------------------------------------------
    def start(self):
        exe = find_program("civitasd")
        self.t.servers.append(self)
        _live_servers.append(self)
        self.exit_code = None
        # a restart must not match the previous run's "ready" and "listening" lines
        start_mark = self.log_mark()
        self.ports = {}
        self.proc = subprocess.Popen([exe, "--config", self.config], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.dir)
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        if not self.wait_log(READY_RE, self.ready_timeout, start=start_mark):
            rc = self.proc.poll()
            msg = ("civitasd did not log 'ready' within %.0f s (%s)\nconfig:\n%s\nlog:\n%s"
                   % (self.ready_timeout, "exited %s" % rc if rc is not None else "still running",
                      self.config_text(), self.log()))
            self.stop()
            raise HarnessError(msg)
        # c2s listeners must be there; others (s2s, http) are looked up by port() when a test needs them.
        for kind in ("client", "client_tls"):
            if kind in self.listen and kind not in self.ports:
                raise HarnessError("civitasd is ready but logged no 'listening %s <addr>:<port>' line:\n%s"
                                   % (kind, self.log()))

    def _read_log(self):
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                m = LISTEN_RE.search(line)
                if m:
                    self.ports.setdefault(m.group(1), []).append(int(m.group(3)))
                self._lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._lines.append("")  # wake waiters; an empty line never matches a useful pattern
            self._cond.notify_all()

    def wait_log(self, pattern, timeout=DEFAULT_TIMEOUT, start=0):
        """Wait for a log line (from index start) matching pattern (str or regex); the line or None."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        i = start
        with self._cond:
            while True:
                while i < len(self._lines):
                    if self._lines[i] and rx.search(self._lines[i]):
                        return self._lines[i]
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    return None
                self._cond.wait(min(left, 0.5))

    def log_mark(self):
        """Index to pass as wait_log(start=...) to look only at lines logged from now on."""
        with self._cond:
            return len(self._lines)

    def log(self):
        with self._cond:
            return "\n".join(self._lines)

    def log_tail(self, n=25):
        with self._cond:
            return [l for l in self._lines if l][-n:]

    def port(self, kind="client"):
        p = self.ports.get(kind)
        if not p:
            raise HarnessError("no '%s' listener was logged" % kind)
        return p[0]

    def terminate(self):
        """Send SIGTERM without waiting (wait() collects the exit code)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout=10.0):
        """Exit code after SIGTERM; SIGKILL after timeout (then the code is None and it is reported)."""
        if self.proc is None:
            return self.exit_code
        try:
            self.exit_code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.t.diag("civitasd (pid %d) did not exit within %.0f s of SIGTERM: SIGKILL" % (self.proc.pid, timeout))
            self.proc.kill()
            self.proc.wait()
            self.exit_code = None
        if self._reader:
            self._reader.join(5)
        self.proc = None
        if self in self.t.servers:
            self.t.servers.remove(self)
        return self.exit_code

    def stop(self, timeout=10.0):
        """SIGTERM, wait at most timeout, then SIGKILL. Returns the exit code (None when killed)."""
        if self.proc is None:
            return self.exit_code
        self.terminate()
        return self.wait(timeout)

    def sanitizer_reports(self):
        return [l for l in self.log().splitlines() if SANITIZER_RE.search(l)]

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        running = self.proc is not None
        rc = self.stop()
        if running:
            self.t.ok(rc == 0, "civitasd exits 0 after SIGTERM", lambda: "exit code %r\n%s" % (rc, self.log()))
        reports = self.sanitizer_reports()
        self.t.ok(not reports, "no sanitizer report in the civitasd log", lambda: "\n".join(reports))
        if et is None and self.t.failed == 0 and not os.environ.get("CIVITAS_KEEP_TMP"):
            shutil.rmtree(self.dir, ignore_errors=True)
        elif et is not None or self.t.failed:
            self.t.diag("server files kept in %s" % self.dir)
        return False

    # civitasctl ----------------------------------------------------------------------------
    def ctl(self, *args, input=None, timeout=30):
        """Run civitasctl --config <this config> ARGS; returns subprocess.CompletedProcess (text)."""
        return subprocess.run([find_program("civitasctl"), "--config", self.config] + list(args),
                              input=input, capture_output=True, text=True, timeout=timeout)

    def adduser(self, jid, password):
        r = self.ctl("user", "add", jid, input=password + "\n")
        if r.returncode != 0:
            raise HarnessError("civitasctl user add %s failed (%d): %s%s" % (jid, r.returncode, r.stdout, r.stderr))
        return r


# --------------------------------------------------------------------------------------------
# Raw XMPP client

StreamErrorResult = collections.namedtuple(
    "StreamErrorResult", "condition text stream_closed socket_closed had_header")


class StreamParser:
    """Incremental, namespace-aware parse of one XML stream: the root's attributes, then one
    ElementTree element per depth-1 child, then the root's end. Tolerates arbitrary chunking."""

    def __init__(self):
        self.p = xml.parsers.expat.ParserCreate(namespace_separator=" ")
        self.p.buffer_text = True
        self.p.StartElementHandler = self._start
        self.p.EndElementHandler = self._end
        self.p.CharacterDataHandler = self._chars
        self.depth = 0
        self.root_tag = None
        self.root_attrs = None
        self.stack = []
        self.stanzas = collections.deque()
        self.closed = False
        self.error = None

    @staticmethod
    def _name(n):
        if " " in n:
            ns, l = n.split(" ", 1)
            return "{%s}%s" % (ns, l)
        return n

    def _start(self, name, attrs):
        tag = self._name(name)
        attrs = {self._name(k): v for k, v in attrs.items()}
        if self.depth == 0:
            self.root_tag, self.root_attrs = tag, attrs
            # A server that sends a bare <stream:error/> without a header still gets it recorded.
            if tag != q(NS_STREAM, "stream"):
                self.stack.append(ET.Element(tag, attrs))
        else:
            el = ET.Element(tag, attrs) if not self.stack else ET.SubElement(self.stack[-1], tag, attrs)
            self.stack.append(el)
        self.depth += 1

    def _end(self, name):
        self.depth -= 1
        if self.depth == 0:
            if self.stack:
                self.stanzas.append(self.stack.pop())
            self.closed = True
            return
        el = self.stack.pop()
        if self.depth == 1:
            self.stanzas.append(el)

    def _chars(self, data):
        if not self.stack:
            return
        cur = self.stack[-1]
        if len(cur):
            cur[-1].tail = (cur[-1].tail or "") + data
        else:
            cur.text = (cur.text or "") + data

    def feed(self, data):
        if self.error is not None:
            return
        try:
            self.p.Parse(data, False)
        except xml.parsers.expat.ExpatError as e:
            self.error = str(e)


class RawClient:
    """A byte-level XMPP client. Read methods return None on timeout instead of raising, so a test
    asserts on the result; the convenience methods login()/bind() raise HarnessError when a step fails."""

    def __init__(self, port, tls=False, cafile=None, host="127.0.0.1", server_hostname="localhost",
                 context=None, timeout=DEFAULT_TIMEOUT, sock=None):
        """sock: an accepted connection to use instead of connecting to port (a test that plays
        a server, e.g. S2SPeer)."""
        self.timeout = timeout
        self.cafile = cafile
        self.server_hostname = server_hostname
        self.sock = sock if sock is not None else socket.create_connection((host, port), timeout=timeout)
        self.received = b""        # everything read, decrypted, for diagnostics
        self.eof = False
        self.reset = False
        self.tls = False
        self.parser = StreamParser()
        self.inbox = []            # depth-1 elements not yet consumed by expect()
        self.features = None
        self.jid = None
        self._id = 0
        if tls:
            self._wrap_tls(context)

    # transport -----------------------------------------------------------------------------
    def tls_context(self, cafile=None):
        ctx = ssl.create_default_context(cafile=cafile or self.cafile)
        return ctx

    def _wrap_tls(self, context=None):
        ctx = context or self.tls_context()
        self.sock.settimeout(self.timeout)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=self.server_hostname)
        self.tls = True

    def accept_tls(self, context):
        """The server side of a TLS handshake (after we sent <proceed/>)."""
        self.sock.settimeout(self.timeout)
        self.sock = context.wrap_socket(self.sock, server_side=True)
        self.tls = True

    def peer_cert_der(self):
        return self.sock.getpeercert(binary_form=True)

    def send(self, data):
        """Send bytes (str is UTF-8 encoded). Returns False when the peer has gone."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        try:
            self.sock.sendall(data)
            return True
        except (OSError, ssl.SSLError):
            return False

    def _read_transport(self, timeout):
        """Read what the socket has within timeout: bytes; b"" when the socket is alive but nothing
        complete came (a TLS record in part, a non-application record); None on timeout or EOF (eof
        is set at EOF, and reset too when the peer reset the connection)."""
        if self.eof:
            return None
        pending = getattr(self.sock, "pending", None)    # TLS: decrypted bytes select() cannot see
        if not (pending and pending()):
            try:
                r, _, _ = select.select([self.sock], [], [], max(timeout, 0))
            except (OSError, ValueError):
                self.eof = True
                return None
            if not r:
                return None
        try:
            self.sock.settimeout(max(timeout, 0.05))
            data = self.sock.recv(65536)
        except (ssl.SSLWantReadError, socket.timeout):
            return b""
        except ssl.SSLZeroReturnError:
            data = b""
        except OSError:         # ConnectionResetError, BrokenPipeError, ssl.SSLEOFError, other TLS errors
            self.reset = True
            data = b""
        if not data:
            self.eof = True
            return None
        self.received += data
        return data

    def _feed(self, data):
        """Parse bytes read from the transport into inbox (a subclass adds its framing here)."""
        self.parser.feed(data)
        while self.parser.stanzas:
            self.inbox.append(self.parser.stanzas.popleft())

    def _recv_some(self, timeout):
        """Read what is available within timeout into the parser. False on EOF/timeout."""
        data = self._read_transport(timeout)
        if data:
            self._feed(data)
        return data is not None

    def read_until(self, pred, timeout=None):
        """Read until pred() returns something other than None/False; returns that value (None or
        False on timeout or EOF)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            v = pred()
            # An Element without children is falsy: only None and False mean "not yet".
            if v is not None and v is not False:
                return v
            left = deadline - time.monotonic()
            if left <= 0 or self.eof:
                return pred()
            self._recv_some(left)

    def expect(self, match, timeout=None):
        """The first stanza in arrival order for which match(el) is true (a tag string matches the
        element's qualified tag); it is removed from the inbox. None on timeout/EOF."""
        if isinstance(match, str):
            tag = match
            match = lambda el: el.tag == tag  # noqa: E731

        def find():
            for i, el in enumerate(self.inbox):
                if match(el):
                    return self.inbox.pop(i)
            return None
        return self.read_until(find, timeout)

    def next_stanza(self, timeout=None):
        return self.expect(lambda el: True, timeout)

    def wait_closed(self, timeout=None):
        """Wait for the TCP connection to be closed by the peer. True when it was."""
        return bool(self.read_until(lambda: self.eof, timeout))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def next_id(self, prefix="t"):
        self._id += 1
        return "%s%d" % (prefix, self._id)

    # stream --------------------------------------------------------------------------------
    def stream_header(self, to="localhost", version="1.0", ns=NS_CLIENT, stream_ns=NS_STREAM, extra=""):
        attrs = " xmlns='%s' xmlns:stream='%s'" % (ns, stream_ns)
        if to is not None:
            attrs += " to='%s'" % to
        if version is not None:
            attrs += " version='%s'" % version
        return "<?xml version='1.0'?><stream:stream%s%s>" % (attrs, extra)

    def open_stream(self, to="localhost", version="1.0", ns=NS_CLIENT, header=None, timeout=None):
        """Send a stream header (a fresh parser for the server's new stream) and return the
        <stream:features/> element, or None (then see stream_error())."""
        self.parser = StreamParser()
        self.inbox = []
        self.send(header if header is not None else self.stream_header(to=to, version=version, ns=ns))
        self.features = self.expect(lambda el: el.tag in (q(NS_STREAM, "features"), q(NS_STREAM, "error")),
                                    timeout)
        if self.features is not None and self.features.tag != q(NS_STREAM, "features"):
            self.inbox.insert(0, self.features)
            self.features = None
        return self.features

    @property
    def stream_attrs(self):
        return self.parser.root_attrs or {}

    def mechanisms(self, features=None):
        f = features if features is not None else self.features
        if f is None:
            return []
        m = f.find(q(NS_SASL, "mechanisms"))
        return [x.text.strip() for x in m.findall(q(NS_SASL, "mechanism"))] if m is not None else []

    def starttls(self, cafile=None, context=None):
        """<starttls/>, <proceed/>, TLS handshake. True on success. The caller opens the new stream.
        Handshake errors propagate as ssl.SSLError for tests that expect them."""
        self.send("<starttls xmlns='%s'/>" % NS_TLS)
        r = self.expect(lambda el: el.tag in (q(NS_TLS, "proceed"), q(NS_TLS, "failure"),
                                              q(NS_STREAM, "error")))
        if r is None or r.tag != q(NS_TLS, "proceed"):
            return False
        self._wrap_tls(context or self.tls_context(cafile))
        return True

    def stream_error(self, timeout=None):
        """The <stream:error/> element, once it arrived (None on timeout)."""
        return self.expect(q(NS_STREAM, "error"), timeout)

    def read_stream_error(self, timeout=None, reply_close=True):
        """Wait for a stream error and what RFC 6120 §4.9.1.1 requires after it: the closing
        </stream:stream> and the closed TCP connection. Returns StreamErrorResult(condition, text,
        stream_closed, socket_closed, had_header). With reply_close we answer the server's
        </stream:stream> with ours (§4.4) before waiting for the TCP close."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        left = lambda: max(0.0, deadline - time.monotonic())  # noqa: E731  one budget for all steps
        err = self.stream_error(left())
        cond = text = None
        if err is not None:
            for ch in err:
                if ch.tag == q(NS_STREAMS_ERR, "text"):
                    text = ch.text
                elif ch.tag.startswith("{%s}" % NS_STREAMS_ERR):
                    cond = local_name(ch.tag)
        had_header = self.parser.root_tag == q(NS_STREAM, "stream")
        stream_closed = bool(self.read_until(lambda: self.parser.closed, left()))
        if stream_closed and reply_close and not self.eof:
            self.send("</stream:stream>")
        socket_closed = self.wait_closed(left())
        return StreamErrorResult(cond, text, stream_closed, socket_closed, had_header)

    def dump(self, limit=3000):
        """Recent received bytes for diagnostics."""
        return "received: %r" % self.received[-limit:]

    # SASL ----------------------------------------------------------------------------------
    def _sasl_result(self):
        return self.expect(lambda el: el.tag in (q(NS_SASL, "success"), q(NS_SASL, "failure"),
                                                 q(NS_SASL, "challenge"), q(NS_STREAM, "error")))

    @staticmethod
    def _failure_condition(el):
        if el is None:
            return "timeout"
        if el.tag == q(NS_STREAM, "error"):
            return "stream-error"
        for ch in el:
            if ch.tag != q(NS_SASL, "text"):
                return local_name(ch.tag)
        return "(no condition)"

    def auth_plain(self, user, password, authzid=""):
        """SASL PLAIN (RFC 4616). Returns (True, None) or (False, condition)."""
        msg = ("%s\0%s\0%s" % (authzid, user, password)).encode("utf-8")
        self.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (NS_SASL, base64.b64encode(msg).decode()))
        r = self._sasl_result()
        if r is not None and r.tag == q(NS_SASL, "success"):
            return True, None
        return False, self._failure_condition(r)

    def channel_binding_data(self):
        """tls-server-end-point (RFC 5929 §4.1): the hash of the server's DER certificate, with the
        certificate's signature hash, SHA-256 for MD5/SHA-1. The test CA signs with SHA-256."""
        return hashlib.sha256(self.peer_cert_der()).digest()

    def auth_scram(self, user, password, mech="SCRAM-SHA-256", gs2_flag=None, cb_data=None,
                   tamper_proof=False):
        """SCRAM (RFC 5802/7677) with optional channel binding. mech ending in -PLUS uses
        tls-server-end-point. gs2_flag overrides the GS2 header flag ('n', 'y'). Returns
        (True, None) when the server accepted us AND proved it knows our keys (v=), else
        (False, condition)."""
        plus = mech.endswith("-PLUS")
        hname = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}[mech[:-5] if plus else mech]
        hfn = getattr(hashlib, hname)
        if plus:
            gs2 = "p=tls-server-end-point,,"
            cb = cb_data if cb_data is not None else self.channel_binding_data()
        else:
            gs2 = "%s,," % (gs2_flag or "n")
            cb = b""
        saslname = user.replace("=", "=3D").replace(",", "=2C")
        cnonce = base64.b64encode(secrets.token_bytes(18)).decode()
        first_bare = "n=%s,r=%s" % (saslname, cnonce)
        self.send("<auth xmlns='%s' mechanism='%s'>%s</auth>"
                  % (NS_SASL, mech, base64.b64encode((gs2 + first_bare).encode()).decode()))
        ch = self._sasl_result()
        if ch is None or ch.tag != q(NS_SASL, "challenge"):
            return False, self._failure_condition(ch)
        server_first = base64.b64decode(ch.text or "").decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(",") if "=" in kv)
        if not attrs.get("r", "").startswith(cnonce) or "s" not in attrs or "i" not in attrs:
            return False, "bad server-first-message %r" % server_first
        salt = base64.b64decode(attrs["s"])
        iters = int(attrs["i"])
        salted = hashlib.pbkdf2_hmac(hname, password.encode("utf-8"), salt, iters)
        client_key = hmac.new(salted, b"Client Key", hfn).digest()
        stored_key = hfn(client_key).digest()
        final_wo_proof = "c=%s,r=%s" % (base64.b64encode(gs2.encode() + cb).decode(), attrs["r"])
        auth_msg = ",".join((first_bare, server_first, final_wo_proof)).encode()
        client_sig = hmac.new(stored_key, auth_msg, hfn).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, client_sig))
        if tamper_proof:
            proof = bytes([proof[0] ^ 1]) + proof[1:]
        server_key = hmac.new(salted, b"Server Key", hfn).digest()
        server_sig = base64.b64encode(hmac.new(server_key, auth_msg, hfn).digest()).decode()
        final = "%s,p=%s" % (final_wo_proof, base64.b64encode(proof).decode())
        self.send("<response xmlns='%s'>%s</response>" % (NS_SASL, base64.b64encode(final.encode()).decode()))
        r = self._sasl_result()
        if r is not None and r.tag == q(NS_SASL, "challenge"):
            # RFC 6120 §6.3.10 allows the server's final data in a challenge answered by an empty response.
            extra = base64.b64decode(r.text or "").decode()
            self.send("<response xmlns='%s'/>" % NS_SASL)
            r2 = self._sasl_result()
            if r2 is None or r2.tag != q(NS_SASL, "success"):
                return False, self._failure_condition(r2)
        elif r is not None and r.tag == q(NS_SASL, "success"):
            extra = base64.b64decode(r.text or "").decode() if (r.text or "").strip() not in ("", "=") else ""
        else:
            return False, self._failure_condition(r)
        if extra != "v=" + server_sig:
            return False, "server signature mismatch (%r)" % extra
        return True, None

    def auth(self, user, password, mech="SCRAM-SHA-256"):
        if mech == "PLAIN":
            return self.auth_plain(user, password)
        return self.auth_scram(user, password, mech)

    # session -------------------------------------------------------------------------------
    def iq(self, type_, payload="", to=None, id=None, timeout=None):
        """Send an IQ and return the reply with the same id (result or error), or None."""
        id = id or self.next_id("iq")
        to_attr = " to='%s'" % xml_escape(to) if to else ""
        self.send("<iq type='%s' id='%s'%s>%s</iq>" % (type_, xml_escape(id), to_attr, payload))
        return self.expect(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("id") == id
                           and el.get("type") in ("result", "error"), timeout)

    def bind(self, resource=None):
        """Resource binding (RFC 6120 §7). Returns the full JID or None; self.bind_reply keeps the IQ."""
        res = "<resource>%s</resource>" % xml_escape(resource) if resource is not None else ""
        r = self.iq("set", "<bind xmlns='%s'>%s</bind>" % (NS_BIND, res))
        self.bind_reply = r
        if r is None or r.get("type") != "result":
            return None
        j = r.find("%s/%s" % (q(NS_BIND, "bind"), q(NS_BIND, "jid")))
        self.jid = j.text.strip() if j is not None and j.text else None
        return self.jid

    def login(self, user, password, resource=None, mech=None, domain="localhost", bind=True):
        """Full client negotiation: header, STARTTLS unless already TLS, SASL, restart, bind.
        Returns the bound full JID (or True with bind=False). Raises HarnessError on any failure."""
        mech = mech or DEFAULT_MECH
        f = self.open_stream(to=domain)
        if f is None:
            raise HarnessError("no stream features; %s" % self.dump())
        if not self.tls:
            if f.find(q(NS_TLS, "starttls")) is None:
                raise HarnessError("STARTTLS not offered: %s" % el_str(f))
            if not self.starttls():
                raise HarnessError("STARTTLS refused; %s" % self.dump())
            f = self.open_stream(to=domain)
            if f is None:
                raise HarnessError("no features after TLS; %s" % self.dump())
        ok, cond = self.auth(user, password, mech)
        if not ok:
            raise HarnessError("%s authentication as %s failed: %s" % (mech, user, cond))
        f = self.open_stream(to=domain)
        if f is None:
            raise HarnessError("no features after SASL; %s" % self.dump())
        if not bind:
            return True
        jid = self.bind(resource)
        if jid is None:
            raise HarnessError("bind failed: %s" % el_str(getattr(self, "bind_reply", None)))
        return jid

    def presence(self, priority=None, extra=""):
        pr = "<priority>%d</priority>" % priority if priority is not None else ""
        self.send("<presence>%s%s</presence>" % (pr, extra))

    def ping_server(self, domain="localhost", timeout=None):
        """A round trip through the server: when it returns, everything sent before was processed."""
        r = self.iq("get", "<ping xmlns='%s'/>" % NS_PING, to=domain, timeout=timeout)
        return r is not None and r.get("type") == "result"

    def message(self, to, body, type_="chat", id=None, from_=None):
        f = " from='%s'" % xml_escape(from_) if from_ else ""
        i = " id='%s'" % xml_escape(id) if id else ""
        self.send("<message to='%s' type='%s'%s%s><body>%s</body></message>"
                  % (xml_escape(to), type_, f, i, xml_escape(body)))

    def expect_message(self, body, timeout=None):
        def m(el):
            if el.tag != q(NS_CLIENT, "message"):
                return False
            b = el.find(q(NS_CLIENT, "body"))
            return b is not None and b.text == body
        return self.expect(m, timeout)

    def messages(self):
        """Messages received and not yet consumed (reads what is already buffered first)."""
        self._recv_some(0)
        return [el for el in self.inbox if el.tag == q(NS_CLIENT, "message")]

    def end(self):
        """Close our stream politely and the socket."""
        if not self.eof:
            self.send("</stream:stream>")
            self.wait_closed(2)
        self.close()


def connect_login(srv, user, password, resource=None, mech=None, direct_tls=False, domain="localhost",
                  timeout=DEFAULT_TIMEOUT):
    """A logged-in RawClient (STARTTLS on 'client' or direct TLS on 'client_tls'); timeout: for each
    read (a test that stalls the server on purpose gives more)."""
    c = RawClient(srv.port("client_tls" if direct_tls else "client"), tls=direct_tls, cafile=srv.ca,
                  server_hostname=domain, timeout=timeout)
    c.login(user, password, resource=resource, mech=mech, domain=domain)
    return c


# --------------------------------------------------------------------------------------------
# A scripted remote server for federation tests

NS_SERVER = "jabber:server"
NS_DB = "jabber:server:dialback"
NS_DB_FEATURE = "urn:xmpp:features:dialback"


def s2s_header(from_, to, id_=None):
    """An s2s stream header (jabber:server, the dialback prefix declared)."""
    f = " from='%s'" % from_ if from_ else ""
    i = " id='%s'" % id_ if id_ else ""
    return ("<?xml version='1.0'?><stream:stream xmlns='%s' xmlns:stream='%s' xmlns:db='%s'%s to='%s'%s "
            "version='1.0'>" % (NS_SERVER, NS_STREAM, NS_DB, f, to, i))


class S2SPeer:
    """A hand-made XMPP server for `domain` that authenticates with Server Dialback (XEP-0220) and a
    certificate of its own CA that civitas does not trust. It listens on 127.0.0.1 for civitas's
    connections (name `route` in the partner entry of civitas's config) and opens streams to it:

      peer = S2SPeer("peer.example")
      ... Server(..., extra_yaml="federation:\n  dialback: true\n  partners:\n" + peer.partner_yaml())
      c = peer.connect(srv.port("server"), "localhost")    # TLS, features; then dialback:
      peer.request_dialback(c, "localhost")                # db:result (civitas asks us back)
      out = peer.accept()                                  # civitas's stream to us, up to features
      peer.answer_dialback(out)                            # db:verify valid, db:result valid
      peer.dialback_result(c)                              # civitas's verdict on our stream

    rcvbuf: SO_RCVBUF of the connections civitas makes to us (a small one lets a test that stops
    reading fill civitas's buffers quickly)."""

    def __init__(self, domain, certs=None, rcvbuf=None):
        self.domain = domain
        self.certs = certs or Certs()
        self.leaf = self.certs.leaf([domain])
        self.listener = socket.socket()
        if rcvbuf:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]

    def partner_yaml(self):
        return "    - domain: %s\n      route: \"127.0.0.1:%d\"\n" % (self.domain, self.port)

    def client_context(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE          # dialback: certificates are not what we rely on
        ctx.load_cert_chain(self.leaf.cert, self.leaf.key)
        return ctx

    def server_context(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.leaf.cert, self.leaf.key)
        return ctx

    def connect(self, port, to):
        """A stream from us to civitas (`to` one of its domains) over STARTTLS; returns the
        RawClient with .features set to the features after TLS (None when a step failed)."""
        c = RawClient(port, server_hostname=to)
        f = c.open_stream(header=s2s_header(self.domain, to))
        if f is None or f.find(q(NS_TLS, "starttls")) is None or not c.starttls(context=self.client_context()):
            c.features = None
            return c
        c.open_stream(header=s2s_header(self.domain, to))
        return c

    def request_dialback(self, c, to, key="00" * 32):
        c.send("<db:result from='%s' to='%s'>%s</db:result>" % (self.domain, to, key))

    @staticmethod
    def dialback_result(c, timeout=None):
        """civitas's answer to our db:result (the element), or None."""
        return c.expect(lambda el: el.tag == q(NS_DB, "result"), timeout)

    def accept(self, timeout=DEFAULT_TIMEOUT):
        """Take civitas's next connection to us and negotiate as a receiving server up to the
        features after TLS (dialback offered). The RawClient, or None."""
        self.listener.settimeout(timeout)
        try:
            sock, _ = self.listener.accept()
        except socket.timeout:
            return None
        c = RawClient(None, sock=sock, timeout=timeout)
        if c.read_until(lambda: c.parser.root_attrs is not None) is None:
            return None
        to = c.parser.root_attrs.get("from", "")
        c.send(s2s_header(self.domain, to, secrets.token_hex(8)) +
               "<stream:features><starttls xmlns='%s'><required/></starttls></stream:features>" % NS_TLS)
        if c.expect(q(NS_TLS, "starttls")) is None:
            return None
        c.send("<proceed xmlns='%s'/>" % NS_TLS)
        c.accept_tls(self.server_context())
        c.parser = StreamParser()
        c.inbox = []
        if c.read_until(lambda: c.parser.root_attrs is not None) is None:
            return None
        c.send(s2s_header(self.domain, to, secrets.token_hex(8)) +
               "<stream:features><dialback xmlns='%s'><errors/></dialback></stream:features>" % NS_DB_FEATURE)
        return c

    def answer_dialback(self, out, verify="valid", result="valid", timeout=None):
        """On civitas's stream to us: answer its db:verify (the key we gave it is whatever we say)
        and, unless result is None, its own db:result. True when both arrived."""
        v = out.expect(lambda el: el.tag == q(NS_DB, "verify"), timeout)
        if v is None:
            return False
        out.send("<db:verify from='%s' to='%s' id='%s' type='%s'/>" % (v.get("to"), v.get("from"), v.get("id"), verify))
        r = out.expect(lambda el: el.tag == q(NS_DB, "result"), timeout)
        if r is None:
            return False
        if result is not None:
            out.send("<db:result from='%s' to='%s' type='%s'/>" % (r.get("to"), r.get("from"), result))
        return True

    def authenticated_stream(self, srv, to, result="valid"):
        """Both directions up by dialback: (our stream to civitas, civitas's stream to us), either
        None on failure. result=None leaves civitas's own dialback request unanswered, so its stream
        to us stays in negotiation (stanzas for us wait in its queue)."""
        c = self.connect(srv.port("server"), to)
        if c.features is None:
            return None, None
        self.request_dialback(c, to)
        out = self.accept()
        if out is None or not self.answer_dialback(out, result=result):
            return None, out
        r = self.dialback_result(c)
        if r is None or r.get("type") != "valid":
            return None, out
        return c, out

    def close(self):
        self.listener.close()


# --------------------------------------------------------------------------------------------
# The libstrophe test client

class PeerClient(RawClient):
    """A RawClient for a peer server's c2s port (Prosody, ejabberd): its certificate is self-signed,
    so no verification."""

    def tls_context(self, cafile=None):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx


def roster_push_for(c, jid, subscription=None, timeout=15):
    """The next roster push about jid (with that subscription, when given): its <item/>, answered
    with a result as RFC 6121 §2.1.6 asks."""
    def match(el):
        if el.tag != q(NS_CLIENT, "iq") or el.get("type") != "set":
            return False
        it = el.find("%s/%s" % (q(NS_ROSTER, "query"), q(NS_ROSTER, "item")))
        return it is not None and it.get("jid") == jid and subscription in (None, it.get("subscription"))
    el = c.expect(match, timeout)
    if el is None:
        return None
    c.send("<iq type='result' id='%s'/>" % el.get("id"))
    return el.find("%s/%s" % (q(NS_ROSTER, "query"), q(NS_ROSTER, "item")))


def presence_from(c, bare, type_=None, timeout=15):
    """The next presence from bare JID bare (any resource) with that type (None: available)."""
    return c.expect(lambda el: el.tag == q(NS_CLIENT, "presence") and el.get("from", "").split("/")[0] == bare
                    and el.get("type") == type_, timeout)


def strophe_client():
    """Path of tests/clients/xmpp_client (built by make check, or built here into a temp dir)."""
    return test_client("xmpp_client", "CIVITAS_XMPP_CLIENT", ["libstrophe"])


def omemo_client():
    """Path of tests/clients/omemo_client, the legacy OMEMO client (built by make check, or built here)."""
    return test_client("omemo_client", "CIVITAS_OMEMO_CLIENT", ["libstrophe", "libsignal-protocol-c", "libcrypto"],
                       common=["signal_crypto.c"])


def test_client(name, env_var, pkgs, common=()):
    """Path of the client program tests/clients/NAME: $ENV_VAR, the build tree's, or compiled here from
    tests/clients/NAME.c (and the files `common` of tests/common/) with the pkg-config packages pkgs into a
    temp dir (rebuilt when a source is newer)."""
    env = os.environ.get(env_var)
    if env:
        return env
    cand = os.path.join(build_dir(), "tests", "clients", name)
    if os.access(cand, os.X_OK):
        return cand
    tests = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    src = os.path.join(tests, "clients", name + ".c")
    srcs = [src] + [os.path.join(tests, "common", c) for c in common]
    out = os.path.join(tempfile.gettempdir(), "civitas-%s-%d" % (name, os.getuid()))
    if not os.access(out, os.X_OK) or any(os.path.getmtime(out) < os.path.getmtime(p) for p in srcs):
        flags = subprocess.run(["pkg-config", "--cflags", "--libs"] + pkgs, capture_output=True,
                               text=True, check=True).stdout.split()
        tmp = out + ".%d" % os.getpid()
        r = subprocess.run(["gcc", "-std=gnu11", "-Wall", "-Wextra", "-O1", "-g", "-I", os.path.join(tests, "common")]
                           + srcs + ["-o", tmp] + flags,
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise HarnessError("building %s failed:\n%s" % (name, r.stderr))
        os.replace(tmp, out)
    return out


def run_strophe(args, timeout=30):
    """Run the libstrophe client; returns (exit code, stdout lines, stderr)."""
    r = subprocess.run([strophe_client()] + list(args), capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    return r.returncode, r.stdout.splitlines(), r.stderr


class StropheProc:
    """The libstrophe client (or another client program, e.g. omemo_client()) running in the background; its stdout lines are collected as they come
    so a test can wait for "bound ..." before talking to it."""

    def __init__(self, args, program=None):
        self.proc = subprocess.Popen([program or strophe_client()] + list(args), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = []
        self._cond = threading.Condition()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append(None)     # EOF marker
            self._cond.notify_all()

    def wait_line(self, prefix, timeout=DEFAULT_TIMEOUT):
        """The first output line starting with prefix, or None on timeout / exit."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for l in self.lines:
                    if l is not None and l.startswith(prefix):
                        return l
                if None in self.lines or time.monotonic() >= deadline:
                    return None
                self._cond.wait(deadline - time.monotonic())

    def finish(self, timeout=30):
        """(exit code, stdout lines, stderr); the process is killed after timeout (code None)."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        self._t.join(5)
        err = self.proc.stderr.read()
        return rc, [l for l in self.lines if l is not None], err


# --------------------------------------------------------------------------------------------
# Small helpers shared by the test files

# --------------------------------------------------------------------------------------------
# A DNS responder for a test's names only (RFC 1035 wire format, UDP), so that civitas and a peer
# server (Prosody, ejabberd) find each other without touching the machine's resolver configuration.

T_A, T_AAAA, T_SRV = 1, 28, 33


class DnsResponder:
    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.records = {}          # (name, type) -> [rdata bytes]
        self.queries = []          # (name, type) asked, for diagnostics
        self.lock = threading.Lock()
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @staticmethod
    def _name(name):
        if name.rstrip(".") == "":
            return b"\0"                       # the root: SRV target "." means "no service"
        out = b""
        for label in name.rstrip(".").split("."):
            out += bytes([len(label)]) + label.encode("ascii")
        return out + b"\0"

    def add_a(self, name, ip="127.0.0.1"):
        with self.lock:
            self.records.setdefault((name.lower(), T_A), []).append(socket.inet_aton(ip))

    def add_srv(self, name, target, port, prio=0, weight=5):
        with self.lock:
            self.records.setdefault((name.lower(), T_SRV), []).append(
                struct.pack("!HHH", prio, weight, port) + self._name(target))

    def known(self, name):
        return any(n == name for n, _ in self.records)

    def _answer(self, data):
        if len(data) < 12:
            return None
        qid, flags, qd = struct.unpack("!HHH", data[:6])
        if qd != 1:
            return None
        i, labels = 12, []
        while i < len(data) and data[i]:
            ln = data[i]
            labels.append(data[i + 1:i + 1 + ln].decode("ascii", "replace"))
            i += 1 + ln
        qend = i + 5
        if qend > len(data):
            return None
        qtype, qclass = struct.unpack("!HH", data[i + 1:qend])
        name = ".".join(labels).lower()
        with self.lock:
            self.queries.append((name, qtype))
            rrs = list(self.records.get((name, qtype), []))
            exists = any(n == name for n, _ in self.records)
        rcode = 0 if (rrs or exists) else 3          # NOERROR (maybe no data) or NXDOMAIN
        hdr = struct.pack("!HHHHHH", qid, 0x8400 | (flags & 0x0100) | 0x0080 | rcode, 1, len(rrs), 0, 0)
        out = hdr + data[12:qend]
        for rd in rrs:
            out += struct.pack("!HHHIH", 0xC00C, qtype, 1, 30, len(rd)) + rd
        return out

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            ans = self._answer(data)
            if ans:
                self.sock.sendto(ans, addr)

    def stop(self):
        self._stop = True
        self.thread.join(2)
        self.sock.close()


def self_signed(dirpath, domains):
    """A self-signed certificate (SAN DNS:...) and key made with openssl(1)."""
    base = os.path.join(dirpath, domains[0])
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", base + ".key", "-out", base + ".crt", "-days", "30",
                        "-subj", "/CN=" + domains[0],
                        "-addext", "subjectAltName=" + ",".join("DNS:" + d for d in domains)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise HarnessError("openssl: " + r.stderr)
    return base + ".crt", base + ".key"


# --------------------------------------------------------------------------------------------
# Prosody as a peer server or as the reference server for client tests

PROSODY = shutil.which("prosody") or "/usr/bin/prosody"
PROSODYCTL = shutil.which("prosodyctl") or "/usr/bin/prosodyctl"


# --------------------------------------------------------------------------------------------
# Prosody

def prosody_missing(need_unbound=True):
    """What a test needs of Prosody's installation and does not find, as sentences ([] when complete).
    Without lua-unbound Prosody silently ignores its unbound = {...} settings, asks the machine's resolver
    instead of our DNS responder and never finds a test domain: federation tests need it (need_unbound)."""
    if not os.access(PROSODY, os.X_OK):
        return ["prosody is not installed"]
    if not need_unbound:
        return []
    with open(PROSODY, errors="replace") as f:
        shebang = f.readline()
    lua = shebang[2:].split()[-1] if shebang.startswith("#!") else "lua5.4"
    try:
        r = subprocess.run([lua, "-e", 'require "lunbound"'], capture_output=True, text=True, timeout=30)
    except OSError as e:
        return ["Prosody's Lua interpreter %s cannot run (%s)" % (lua, e)]
    if r.returncode != 0:
        return ["Prosody's Lua (%s) cannot load the module lunbound (package lua-unbound), so Prosody would "
                "ignore its unbound = {...} settings and never ask our DNS responder" % lua]
    return []


PROSODY_MODULES = ("roster", "saslauth", "tls", "dialback", "disco", "ping", "posix")


class Prosody:
    """Debian's Prosody with its own config, data, log and ports in a temp dir (see /work/shared/PEERS.md).
    dns_port: our DnsResponder, Prosody's only name server (None: no unbound settings, c2s-only tests).
    modules: modules_enabled (default: what federation needs); register() users before or after start()."""

    def __init__(self, t, hosts, dns_port=None, cafile=None, modules=PROSODY_MODULES):
        self.t = t
        self.hosts = hosts
        self.dir = tempfile.mkdtemp(prefix="civitas-prosody-")
        self.c2s_port, self.s2s_port, self.s2s_tls_port = free_port(), free_port(), free_port()
        self.cert, self.key = self_signed(self.dir, hosts)
        self.log = os.path.join(self.dir, "prosody.log")
        self.config = os.path.join(self.dir, "prosody.cfg.lua")
        root = os.getuid() == 0
        ssl_extra = ' cafile = "%s";' % cafile if cafile else ""
        lines = [
            'pidfile = "%s/prosody.pid"' % self.dir,
            'data_path = "%s/data"' % self.dir,
            "daemonize = false",
            "run_as_root = %s" % ("true" if root else "false"),
            'interfaces = { "127.0.0.1" }',
            "c2s_ports = { %d }" % self.c2s_port,
            "c2s_direct_tls_ports = { }",
            "s2s_ports = { %d }" % self.s2s_port,
            "s2s_direct_tls_ports = { %d }" % self.s2s_tls_port,
            'log = { debug = "%s" }' % self.log,
            "modules_enabled = { %s }" % "; ".join('"%s"' % m for m in modules),
            'modules_disabled = { "s2s_bidi" }',
            "s2s_secure_auth = false",
            "s2s_require_encryption = true",
            "c2s_require_encryption = true",
            'authentication = "internal_hashed"',
            'ssl = { certificate = "%s"; key = "%s";%s }' % (self.cert, self.key, ssl_extra),
        ]
        if dns_port is not None:
            # our DNS responder only: no /etc/resolv.conf, no /etc/hosts, no root hints
            lines.append('unbound = { resolvconf = false; hoststxt = false; forward = "127.0.0.1@%d" }' % dns_port)
        for h in hosts:
            lines.append('VirtualHost "%s"' % h)
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.makedirs(os.path.join(self.dir, "data"), exist_ok=True)
        if root:
            subprocess.run(["chown", "-R", "prosody:prosody", self.dir], check=False)
        self.proc = None

    def register(self, user, host, pw):
        r = subprocess.run([PROSODYCTL, "--config", self.config, "register", user, host, pw],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise HarnessError("prosodyctl register failed: %s %s" % (r.stdout, r.stderr))

    def start(self, timeout=20):
        self.proc = subprocess.Popen([PROSODY, "--config", self.config, "-F"], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HarnessError("prosody exited with %s:\n%s" % (self.proc.returncode, self.log_text()[-3000:]))
            try:
                for p in (self.c2s_port, self.s2s_port, self.s2s_tls_port):
                    socket.create_connection(("127.0.0.1", p), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise HarnessError("prosody did not listen within %d s:\n%s" % (timeout, self.log_text()[-3000:]))

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self, keep):
        self.stop()
        if keep:
            self.t.diag("prosody files kept in %s" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------------------------

def error_condition(el):
    """The defined condition of a stanza error (RFC 6120 §8.3.3), e.g. 'service-unavailable', or None."""
    e = el.find(q(NS_CLIENT, "error")) if el is not None else None
    if e is None:
        return None
    for ch in e:
        if ch.tag.startswith("{%s}" % NS_STANZAS) and local_name(ch.tag) != "text":
            return local_name(ch.tag)
    return None


def free_port(kind=socket.SOCK_STREAM):
    """A port on 127.0.0.1 that was free a moment ago (for configs that must name the port).
    Chosen at random below the kernel's ephemeral range (32768 and up), where every port-0 bind
    of the tests running in parallel lands, so that one of those cannot take it meanwhile."""
    import random
    for _ in range(200):
        p = random.randint(20000, 32000)
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("127.0.0.1", p))
            return p
        except OSError:
            continue
        finally:
            s.close()
    raise HarnessError("no free port found between 20000 and 32000")


def partner(domain, port, ca=None):
    """One entry of federation.partners (YAML, under "partners:"): domain reached at
    127.0.0.1:port, its certificate checked against ca when given."""
    s = "    - domain: %s\n      route: \"127.0.0.1:%d\"\n" % (domain, port)
    if ca:
        s += "      ca: \"%s\"\n" % ca
    return s


def federated_pair(t, certs=None):
    """Two servers, a.example and b.example, each with the other as its one federation partner
    (s2s on a fixed port, the test CA), not started: `with a, b: a.start(); b.start()`."""
    certs = certs or Certs()
    pa, pb = free_port(), free_port()

    def listen(p):
        return {"client": ["127.0.0.1:0"], "client_tls": ["127.0.0.1:0"], "server": ["127.0.0.1:%d" % p]}
    fed = "federation:\n  partners:\n"
    a = Server(t, hosts=["a.example"], certs=certs, listen=listen(pa), start=False,
               extra_yaml=fed + partner("b.example", pb, certs.ca))
    b = Server(t, hosts=["b.example"], certs=certs, listen=listen(pb), start=False,
               extra_yaml=fed + partner("a.example", pa, certs.ca))
    return a, b


def module_dir(test_module):
    """A directory to give as CIVITAS_MODULE_DIR: every built standard module and the test module
    tests/modules/<test_module>.so (links, removed at exit); None when the test module is not built."""
    import glob
    b = build_dir()
    test = os.path.join(b, "tests", "modules", ".libs", test_module + ".so")
    if not os.path.exists(test):
        return None
    d = tempfile.mkdtemp(prefix="civitas-mods-")
    atexit.register(shutil.rmtree, d, True)
    for p in glob.glob(os.path.join(b, "modules", ".libs", "mod_*.so")) + [test]:
        os.symlink(p, os.path.join(d, os.path.basename(p)))
    return d


def run_async(coro, timeout):
    """Run an asyncio test scenario (slixmpp) to completion on a fresh loop, at most timeout
    seconds, then cancel whatever it left running."""
    import asyncio
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(asyncio.wait_for(coro, timeout))
    finally:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()


def error_type_condition(el):
    """(type attribute of the stanza's <error/>, its defined condition), or (None, None)."""
    e = el.find(q(NS_CLIENT, "error")) if el is not None else None
    if e is None:
        return None, None
    return e.get("type"), error_condition(el)


def canon(el):
    """A comparable form of an ElementTree element: equal for equal XML infosets."""
    return (el.tag, tuple(sorted(el.attrib.items())), el.text or "", tuple(canon(c) for c in el), el.tail or "")
