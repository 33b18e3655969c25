#!/usr/bin/python3
# tests/integration/test_s2s_ejabberd.py: federation with Debian's ejabberd, started here as a node of its own
# (own config, spool, logs, Erlang node name and distribution port, no epmd) that finds civitas through our DNS
# responder: dialback both ways with self-signed certificates (after ejabberd refuses SASL EXTERNAL), messages,
# presence subscriptions and presence, offline delivery in both directions.
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Tap, Server, Certs, PeerClient, HarnessError, connect_login, q, el_str,  # noqa: E402
                     NS_CLIENT, NS_PING, NS_ROSTER, NS_DELAY)
from harness import (error_condition, free_port, DnsResponder, self_signed, roster_push_for,  # noqa: E402
                     presence_from)

PW = "pw-for-ejabberd"
EJABBERDCTL = shutil.which("ejabberdctl") or "/usr/sbin/ejabberdctl"
EJ_USER = "ejabberd"       # ejabberdctl runs the node as this user (Debian's package creates it)
EJ = "ej.example"
CIV = "civ.example"


def ejabberd_missing():
    """What this test needs of ejabberd's installation and does not find, as sentences ([] when complete)."""
    if not os.access(EJABBERDCTL, os.X_OK):
        return ["ejabberd is not installed (no ejabberdctl)"]
    try:
        pwd.getpwnam(EJ_USER)
    except KeyError:
        return ["there is no user %s, which Debian's ejabberd package creates and ejabberdctl switches to" % EJ_USER]
    if os.getuid() != 0 and pwd.getpwuid(os.getuid()).pw_name != EJ_USER:
        return ["ejabberdctl only runs as root or as the user %s; this test runs as %s"
                % (EJ_USER, pwd.getpwuid(os.getuid()).pw_name)]
    return []


class Ejabberd:
    """One ejabberd node of our own: config, spool and logs in a temporary directory owned by the user
    ejabberd, a node name and a fixed distribution port of its own (no epmd), and an inetrc that sends every
    DNS question to our responder (Erlang's resolver, so the machine's resolver files are never read)."""

    def __init__(self, t, host, dns_port):
        self.t = t
        self.host = host
        self.dir = tempfile.mkdtemp(prefix="civitas-ejabberd-")
        os.chmod(self.dir, 0o755)
        self.conf, self.logs, self.spool = (os.path.join(self.dir, d) for d in ("conf", "logs", "spool"))
        for d in (self.conf, self.logs, self.spool):
            os.mkdir(d)
        self.c2s_port, self.s2s_port, self.dist_port = free_port(), free_port(), free_port()
        self.node = "civitas-test-%s@localhost" % secrets.token_hex(4)
        self.cert, self.key = self_signed(self.conf, [host])
        self.log = os.path.join(self.logs, "ejabberd.log")
        self.proc = None
        with open(os.path.join(self.conf, "ejabberdctl.cfg"), "w") as f:
            f.write('ERLANG_NODE=%s\nERL_DIST_PORT=%d\nINET_DIST_INTERFACE=127.0.0.1\n'
                    'ERL_OPTIONS="-setcookie %s"\nEJABBERD_BYPASS_WARNINGS=true\n'
                    % (self.node, self.dist_port, secrets.token_hex(16)))
        with open(os.path.join(self.conf, "inetrc"), "w") as f:
            # no /etc/hosts, no /etc/resolv.conf: localhost for the node's own distribution, the rest from us
            f.write('{lookup, [file, dns]}.\n{hosts_file, ""}.\n{resolv_conf, ""}.\n'
                    '{host, {127,0,0,1}, ["localhost"]}.\n{nameserver, {127,0,0,1}, %d}.\n' % dns_port)
        with open(os.path.join(self.conf, "ejabberd.yml"), "w") as f:
            f.write("\n".join([
                "hosts: [%s]" % host,
                "loglevel: info",
                "certfiles: [%s, %s]" % (self.cert, self.key),
                "listen:",
                "  - {port: %d, ip: \"127.0.0.1\", module: ejabberd_c2s, starttls_required: true}" % self.c2s_port,
                "  - {port: %d, ip: \"127.0.0.1\", module: ejabberd_s2s_in}" % self.s2s_port,
                # a self-signed certificate on either side: dialback after TLS (PEERS.md)
                "s2s_use_starttls: optional",
                "s2s_dns_timeout: 5",
                "auth_method: internal",
                "modules:",
                "  mod_roster: {}",
                "  mod_offline: {}",
                "  mod_s2s_dialback: {}",
                "  mod_disco: {}",
                "  mod_ping: {}",
            ]) + "\n")
        if os.getuid() == 0:
            subprocess.run(["chown", "-R", "%s:%s" % (EJ_USER, EJ_USER), self.dir], check=True)

    def _ctl_args(self):
        return [EJABBERDCTL, "--config-dir", self.conf, "--logs", self.logs, "--spool", self.spool]

    def ctl(self, *args, timeout=60):
        return subprocess.run(self._ctl_args() + list(args), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def register(self, user, pw):
        r = self.ctl("register", user, self.host, pw)
        if r.returncode != 0:
            raise HarnessError("ejabberdctl register %s failed: %s %s" % (user, r.stdout, r.stderr))

    def start(self, timeout=60):
        """Start the node in the foreground (its own process group, so that stop() reaches every process
        of it) and wait until its log says it started and both listeners accept connections."""
        self.proc = subprocess.Popen(self._ctl_args() + ["foreground"], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HarnessError("ejabberd exited with %s:\n%s" % (self.proc.returncode, self.log_text()[-3000:]))
            if "is started in the node" in self.log_text():
                try:
                    for p in (self.c2s_port, self.s2s_port):
                        socket.create_connection(("127.0.0.1", p), timeout=1).close()
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        raise HarnessError("ejabberd did not start within %d s:\n%s" % (timeout, self.log_text()[-3000:]))

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def _node_pids(self):
        """Processes still running for our node (its name is unique and on the command line of each)."""
        pids = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % d, "rb") as f:
                    if self.node.encode() in f.read():
                        pids.append(int(d))
            except OSError:
                continue
        return pids

    def stop(self):
        """SIGTERM (the Erlang VM stops cleanly on it), SIGKILL after 20 s, to ejabberdctl's process group and
        to every process that carries our node name: su starts the node in a session of its own."""
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
            for kill, pid in [(os.killpg, self.proc.pid)] + [(os.kill, p) for p in self._node_pids()]:
                try:
                    kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and (self.proc.poll() is None or self._node_pids()):
                time.sleep(0.05)
            if self.proc.poll() is not None and not self._node_pids():
                break
        self.proc = None

    def cleanup(self, keep):
        self.stop()
        if keep:
            self.t.diag("ejabberd files kept in %s" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def ej_login(ej, user, resource="e", roster=True):
    c = PeerClient(ej.c2s_port, server_hostname=EJ)
    c.login(user, PW, resource=resource, mech="PLAIN", domain=EJ)
    if roster:
        c.iq("get", "<query xmlns='%s'/>" % NS_ROSTER)     # an interested resource gets roster pushes
    c.presence()
    return c


def civ_login(civ, user, resource="c", roster=True):
    c = connect_login(civ, user, PW, resource=resource, domain=CIV)
    if roster:
        c.iq("get", "<query xmlns='%s'/>" % NS_ROSTER)
    c.presence()
    return c


def msg_with_id(client, mid, timeout=20):
    return client.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("id") == mid, timeout)


# --------------------------------------------------------------------------------------------

def messages_both_ways(t, env):
    civ, ej = env["civ"], env["ej"]
    alice = civ_login(civ, "alice")
    eve = ej_login(ej, "eve")
    mark = civ.log_mark()
    # stanzas queue while the stream is set up (DNS, TLS, SASL EXTERNAL refused, dialback and ejabberd's
    # dial-back to us)
    for i in range(3):
        alice.message("eve@%s/e" % EJ, "to ejabberd %d" % i, id="te%d" % i)
    got = [eve.expect_message("to ejabberd %d" % i, timeout=20) for i in range(3)]
    t.ok(all(g is not None for g in got), "stanzas queued while the stream to ejabberd is set up are all delivered",
         lambda: eve.dump() + "\n" + ej.log_text()[-4000:])
    t.ok(all(g is not None and g.get("from") == "alice@%s/c" % CIV for g in got),
         "ejabberd delivers them with the civitas sender's full JID", lambda: [el_str(g) for g in got])
    t.is_([g.get("id") for g in got if g is not None], ["te0", "te1", "te2"], "RFC 6120 §10.1: in order")
    t.ok(civ.wait_log(r"outgoing civ\.example -> ej\.example: SASL EXTERNAL refused, trying dialback", start=mark),
         "XEP-0178: ejabberd offered SASL EXTERNAL and refused it for civitas' certificate (its CA is unknown there)")
    t.ok(civ.wait_log(r"outgoing civ\.example -> ej\.example established \(dialback; peer certificate not "
                      r"verified", start=mark),
         "XEP-0220: civitas then authenticated with dialback on the same stream (ejabberd's certificate is "
         "self-signed)")
    connects = [ln for ln in civ.log().splitlines()[mark:] if "outgoing civ.example -> ej.example: connecting to" in ln]
    t.is_(len(connects), 1,
          "the fallback from SASL EXTERNAL to dialback needed no second connection")
    t.ok(civ.wait_log(r"dialback verification from ej\.example for our civ\.example answered valid", start=mark),
         "XEP-0220 §2.1.3: ejabberd found civitas by SRV in our DNS and civitas confirmed its own key")
    eve.message("alice@%s/c" % CIV, "from ejabberd", id="fe")
    m = alice.expect_message("from ejabberd", timeout=20)
    t.ok(m is not None and m.get("from") == "eve@%s/e" % EJ, "a message from ejabberd reaches the civitas client",
         lambda: alice.dump() + "\n" + ej.log_text()[-4000:])
    t.ok(civ.wait_log(r"incoming ej\.example -> civ\.example authenticated \(dialback\)", start=mark),
         "XEP-0220: civitas verified ejabberd's dialback key with ejabberd (authoritative server)")
    r = alice.iq("get", "<ping xmlns='%s'/>" % NS_PING, to=EJ, timeout=20)
    t.ok(r is not None and r.get("type") == "result" and r.get("from") == EJ,
         "XEP-0199: a ping to ejabberd's domain is answered", el_str(r))
    r = eve.iq("get", "<ping xmlns='%s'/>" % NS_PING, to=CIV, timeout=20)
    t.ok(r is not None and r.get("type") == "result" and r.get("from") == CIV,
         "XEP-0199: ejabberd's user pings civ.example and gets civitas' answer", el_str(r))
    eve.message("nobody@%s" % CIV, "to nobody", id="nb")
    e = msg_with_id(eve, "nb")
    t.is_(error_condition(e), "service-unavailable",
          "RFC 6121 §8.5.2.2.1: civitas bounces a message for a nonexistent account back to ejabberd's user")
    alice.end()
    eve.end()
    return all(g is not None for g in got) and m is not None


def subscriptions_and_presence(t, env):
    civ, ej = env["civ"], env["ej"]
    alice = civ_login(civ, "alice", resource="s")
    eve = ej_login(ej, "eve", resource="s")
    # civitas user -> ejabberd contact
    alice.send("<presence to='eve@%s' type='subscribe'/>" % EJ)
    it = roster_push_for(alice, "eve@" + EJ)
    t.ok(it is not None and it.get("ask") == "subscribe" and it.get("subscription") == "none",
         "RFC 6121 §3.1.2: civitas pushes the ejabberd contact with ask='subscribe'", el_str(it))
    req = presence_from(eve, "alice@" + CIV, "subscribe", timeout=20)
    t.ok(req is not None and req.get("from") == "alice@" + CIV,
         "RFC 6121 §3.1.3: ejabberd's user receives the request from civitas, from the bare JID", eve.dump)
    eve.send("<presence to='alice@%s' type='subscribed'/>" % CIV)
    it = roster_push_for(alice, "eve@" + EJ, "to", timeout=20)
    t.ok(it is not None and it.get("ask") is None,
         "RFC 6121 §3.1.6: ejabberd's approval reaches civitas: subscription='to'", el_str(it))
    p = presence_from(alice, "eve@" + EJ, timeout=20)
    t.ok(p is not None and p.get("from") == "eve@%s/s" % EJ,
         "RFC 6121 §3.1.5: ejabberd sends its user's available presence to the new civitas subscriber", alice.dump)
    # ejabberd user -> civitas contact
    eve.send("<presence to='alice@%s' type='subscribe'/>" % CIV)
    req = presence_from(alice, "eve@" + EJ, "subscribe", timeout=20)
    t.ok(req is not None and req.get("from") == "eve@" + EJ,
         "RFC 6121 §3.1.3: a subscription request from ejabberd's user reaches civitas", alice.dump)
    alice.send("<presence to='eve@%s' type='subscribed'/>" % EJ)
    it = roster_push_for(eve, "alice@" + CIV, "both", timeout=20)
    t.ok(it is not None, "RFC 6121 §3.1.6: civitas' approval reaches ejabberd: subscription='both' there", eve.dump)
    it = roster_push_for(alice, "eve@" + EJ, "both", timeout=20)
    t.ok(it is not None, "and subscription='both' in the civitas roster", alice.dump)
    p = presence_from(eve, "alice@" + CIV, timeout=20)
    t.ok(p is not None and p.get("from") == "alice@%s/s" % CIV,
         "RFC 6121 §3.1.5: civitas sends its user's available presence to ejabberd's new subscriber", eve.dump)
    # presence comes and goes, both ways (RFC 6121 §4.2, §4.5)
    eve.end()
    p = presence_from(alice, "eve@" + EJ, "unavailable", timeout=20)
    t.ok(p is not None, "RFC 6121 §4.5.2: ejabberd's user going offline reaches civitas as unavailable", alice.dump)
    eve = ej_login(ej, "eve", resource="again")
    p = presence_from(alice, "eve@" + EJ, timeout=20)
    t.ok(p is not None and p.get("from") == "eve@%s/again" % EJ,
         "RFC 6121 §4.2.2: ejabberd broadcasts its user's initial presence to the civitas contact", alice.dump)
    p = presence_from(eve, "alice@" + CIV, timeout=20)
    t.ok(p is not None and p.get("from") == "alice@%s/s" % CIV,
         "RFC 6121 §4.3.2: civitas answers ejabberd's presence probe with its user's presence", eve.dump)
    alice.end()
    p = presence_from(eve, "alice@" + CIV, "unavailable", timeout=20)
    t.ok(p is not None, "RFC 6121 §4.5.2: the civitas user going offline reaches ejabberd as unavailable", eve.dump)
    alice = civ_login(civ, "alice", resource="back")
    p = presence_from(eve, "alice@" + CIV, timeout=20)
    t.ok(p is not None and p.get("from") == "alice@%s/back" % CIV,
         "RFC 6121 §4.2.2: civitas broadcasts its user's initial presence to the ejabberd contact", eve.dump)
    alice.end()
    eve.end()


def offline_both_ways(t, env):
    civ, ej = env["civ"], env["ej"]
    alice = civ_login(civ, "alice", resource="o", roster=False)
    eve = ej_login(ej, "eve", resource="o", roster=False)
    # to an offline ejabberd user: ejabberd stores it (XEP-0160)
    alice.message("erin@" + EJ, "kept by ejabberd", id="off-e")
    r = alice.iq("get", "<ping xmlns='%s'/>" % NS_PING, to=EJ, timeout=20)   # after the message on the stream
    t.ok(r is not None and r.get("type") == "result", "the stream to ejabberd carried the message", el_str(r))
    eve.message("carl@" + CIV, "kept by civitas", id="off-c")
    r = eve.iq("get", "<ping xmlns='%s'/>" % NS_PING, to=CIV, timeout=20)
    t.ok(r is not None and r.get("type") == "result", "the stream to civitas carried the message", el_str(r))
    erin = ej_login(ej, "erin", roster=False)
    m = erin.expect_message("kept by ejabberd", timeout=20)
    t.ok(m is not None and m.get("from") == "alice@%s/o" % CIV,
         "XEP-0160: ejabberd stores a message from civitas for its offline user and delivers it at login", erin.dump)
    d = m.find(q(NS_DELAY, "delay")) if m is not None else None
    t.ok(d is not None and d.get("stamp"), "XEP-0203: with a delay stamp", el_str(m))
    carl = civ_login(civ, "carl", roster=False)
    m = carl.expect_message("kept by civitas", timeout=20)
    t.ok(m is not None and m.get("from") == "eve@%s/o" % EJ,
         "XEP-0160: civitas stores a message from ejabberd for its offline user and delivers it at login", carl.dump)
    d = m.find(q(NS_DELAY, "delay")) if m is not None else None
    t.ok(d is not None and d.get("from") == CIV and d.get("stamp"), "XEP-0203: with civitas' delay stamp", el_str(m))
    for c in (alice, eve, erin, carl):
        c.end()


def main(t):
    missing = ejabberd_missing()
    if missing:
        # one clear failure instead of one per scenario; not a skip: CI must install the peer completely
        t.ok(False, "ejabberd is installed with every part this test needs: %s (scripts/install-deps --tests "
             "installs it)" % "; ".join(missing))
        return
    env = {}
    dns = DnsResponder()
    ej = None
    keep = False
    try:
        civ_port = free_port()
        ej = env["ej"] = Ejabberd(t, EJ, dns.port)
        # ejabberd finds civitas by SRV in our DNS; civitas reaches ejabberd by a static route. ejabberd asks
        # for SRV records with Erlang's resolver (inetrc: our responder) but resolves the SRV target with the
        # C library's getaddrinfo (/etc/hosts, /etc/resolv.conf: the machine's files, which a test must not
        # touch), so the target is an address literal, which getaddrinfo takes without asking anyone.
        dns.add_srv("_xmpp-server._tcp." + CIV, "127.0.0.1", civ_port)
        extra = ("federation:\n  mode: open\n  dialback: true\n  partners:\n"
                 "    - domain: %s\n      route: \"127.0.0.1:%d\"\n"
                 "log: {level: debug}\n" % (EJ, ej.s2s_port))
        civ = env["civ"] = Server(t, hosts=[CIV], certs=Certs(), extra_yaml=extra, listen={
            "client": ["127.0.0.1:0"], "client_tls": ["127.0.0.1:0"], "server": ["127.0.0.1:%d" % civ_port]})
        for u in ("alice", "carl"):
            civ.adduser("%s@%s" % (u, CIV), PW)
        ej.start()
        for u in ("eve", "erin"):
            ej.register(u, PW)
        if t.run(messages_both_ways, t, env):
            t.run(subscriptions_and_presence, t, env)
            t.run(offline_both_ways, t, env)
        else:
            # each of them would wait for its own timeouts and fail the same way
            t.ok(False, "federation with ejabberd works both ways, as the subscription, presence and offline "
                 "scenarios need (not run)")
        rc = civ.stop()
        t.ok(rc == 0, "civitasd exits 0 after SIGTERM with streams to ejabberd open", lambda: civ.log_tail(30))
        reports = civ.sanitizer_reports()
        t.ok(not reports, "no sanitizer report", lambda: "\n".join(reports))
        ej.stop()
        t.ok(not ej._node_pids(), "the ejabberd node is gone after the test", lambda: ej._node_pids())
        keep = t.failed > 0
    finally:
        if t.failed and ej is not None:
            t.diag("--- tail of ejabberd log ---", ej.log_text()[-6000:], "DNS queries: %r" % dns.queries)
        if ej is not None:
            ej.cleanup(keep or t.failed > 0)
        dns.stop()


Tap(timeout=150).main(main)
