#!/usr/bin/python3
# tests/integration/test_limits.py: the per-address connection limits (issue 9 item 10): a flood of
# unauthenticated connections from one address is held back, while many authenticated sessions
# behind one address (a city hall, a carrier's NAT) work; IPv6 counts per /64.
import os
import resource
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Tap, Server, Certs, RawClient, HarnessError, connect_login)  # noqa: E402

PW = "correct horse battery staple"
SESSIONS = 300


def raise_fd_limit(t, need):
    """civitasd inherits our RLIMIT_NOFILE: raise the soft limit to what the test needs."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    t.diag("RLIMIT_NOFILE %s (hard %s)" % (soft, hard))
    return soft == resource.RLIM_INFINITY or soft >= need


def answered(c, timeout=10):
    """Send a stream header on a raw connection; True when the server answers with features,
    False when it closed the connection without one."""
    return c.open_stream(timeout=timeout) is not None


def flood(port, n, host="127.0.0.1"):
    """n unauthenticated connections that each sent a stream header: (held open, closed by the server)."""
    conns = []
    for _ in range(n):
        try:
            conns.append(RawClient(port, host=host, timeout=10))
        except OSError:
            pass
    held, closed = [], []
    for c in conns:
        (held if answered(c) else closed).append(c)
    for c in closed:
        c.close()
    return held, closed


def many_sessions_one_address(t, certs):
    """300 authenticated sessions from 127.0.0.1 with the default limits: the per-address limit
    (limits.max_connections_per_ip, 64) counts only connections that have not authenticated."""
    if not raise_fd_limit(t, 4 * SESSIONS + 1024):
        t.skip("300 sessions from one address", "RLIMIT_NOFILE too low")
        return
    with Server(t, certs=certs) as srv:
        srv.adduser("alice@localhost", PW)
        srv.adduser("bob@localhost", PW)
        sessions, err = [], None
        t0 = time.monotonic()
        try:
            for i in range(SESSIONS):
                sessions.append(connect_login(srv, "alice", PW, resource="desk-%d" % i))
        except (HarnessError, OSError) as e:
            err = e
        t.ok(len(sessions) == SESSIONS, "%d authenticated sessions from one address (%.1f s)"
             % (len(sessions), time.monotonic() - t0), lambda: "%s\n%s" % (err, "\n".join(srv.log_tail(10))))

        # a flood of unauthenticated connections from the same address is held back at 64
        held, closed = flood(srv.port("client"), 200)
        t.ok(len(held) == 64, "limits.max_connections_per_ip (default 64): 64 of 200 unauthenticated "
             "connections from one address are served (%d)" % len(held))
        t.ok(len(closed) == 200 - 64, "the other %d are closed by the server (%d)" % (200 - 64, len(closed)))
        # ... while every authenticated session keeps working
        bob = sessions[-1] if sessions else None
        alive = sum(1 for c in sessions[::30] if c.ping_server(timeout=10))
        t.ok(sessions and alive == len(sessions[::30]), "during the flood the authenticated sessions answer "
             "(%d of %d pinged)" % (alive, len(sessions[::30])))
        try:
            bob = connect_login(srv, "bob", PW, resource="during")
        except (HarnessError, OSError):
            bob = None
        t.ok(bob is None, "during the flood a new connection from the flooding address is refused")
        for c in held:
            c.close()
        # the flood has gone (its sockets are closed, whether or not the server has read the EOFs yet)
        try:
            bob = connect_login(srv, "bob", PW, resource="after")
        except HarnessError as e:
            bob, err = None, e
        t.ok(bob is not None, "after the flood a normal login from the address works at once", lambda: str(err))
        if bob and sessions:
            sessions[0].message(bob.jid, "still here")
            t.ok(bob.expect_message("still here", timeout=10) is not None,
                 "a message from the first of the 300 sessions arrives", bob.dump)
            bob.end()
        for c in sessions:
            c.close()


def burst_then_login(t, certs):
    """The issue's report: after a burst of 500 connect/close cycles a normal login was refused. The
    server, busy for a moment, accepts the whole backlog at once; connections whose peer has already
    gone must not hold the address's slots."""
    if not raise_fd_limit(t, 2048):
        t.skip("burst of 500 connect/close cycles", "RLIMIT_NOFILE too low")
        return
    with Server(t, certs=certs) as srv:
        srv.adduser("alice@localhost", PW)
        port = srv.port("client")
        os.kill(srv.proc.pid, signal.SIGSTOP)      # the server is busy (a slow disk, a long query)
        try:
            for _ in range(500):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)   # the kernel completes it
                s.close()
            c = RawClient(port, cafile=srv.ca)
        finally:
            os.kill(srv.proc.pid, signal.SIGCONT)
        try:
            ok = c.login("alice", PW, resource="after-burst")
        except HarnessError as e:
            ok = False
            t.diag(str(e))
        t.ok(ok, "a login queued behind 500 closed connections from the same address is served",
             lambda: "\n".join(srv.log_tail(5)))
        c.close()


def sessions_limit(t, certs):
    """limits.max_sessions_per_ip: authenticated sessions from one address, beyond it the stream is
    closed with <policy-violation/> (RFC 6120 §4.9.3.18: a local service policy)."""
    with Server(t, certs=certs, extra_yaml="limits:\n  max_sessions_per_ip: 3\n") as srv:
        srv.adduser("alice@localhost", PW)
        cs = [connect_login(srv, "alice", PW, resource="r%d" % i) for i in range(3)]
        c = RawClient(srv.port("client"), cafile=srv.ca)
        c.open_stream()
        c.starttls()
        c.open_stream()
        ok, cond = c.auth("alice", PW)
        t.ok(not ok and cond == "stream-error" and b"<policy-violation" in c.received and c.wait_closed(10),
             "limits.max_sessions_per_ip: 3: a fourth session from the address is not authenticated: "
             "<policy-violation/> and the stream is closed", c.dump)
        c.close()
        cs.pop().end()
        try:
            c = connect_login(srv, "alice", PW, resource="r4")
            ok = True
        except HarnessError:
            ok = False
        t.ok(ok, "once a session has ended, a new one from the address is accepted")
        c.close()
        for x in cs:
            x.close()


def ipv6_prefix(t, certs):
    """IPv6 addresses count per /64 (one subscriber's prefix); an IPv4-mapped address counts as the
    IPv4 address it is, not as part of ::/64."""
    with Server(t, certs=certs, listen={"client": ["[::]:0"], "client_tls": ["127.0.0.1:0"]},
                extra_yaml="limits:\n  max_connections_per_ip: 2\n") as srv:
        port = srv.port("client")
        v6, v6_closed = flood(port, 3, host="::1")
        v4, v4_closed = flood(port, 3, host="127.0.0.1")
        t.ok(len(v6) == 2 and len(v6_closed) == 1, "limits.max_connections_per_ip: 2: from ::1 two of three "
             "connections are served (%d)" % len(v6))
        t.ok(len(v4) == 2 and len(v4_closed) == 1, "over a dual-stack listener, 127.0.0.1 (::ffff:127.0.0.1) "
             "is not counted with ::1 in ::/64 (%d of 3 served)" % len(v4))
        for c in v4 + v6:
            c.close()


def main(t):
    certs = Certs()
    t.run(many_sessions_one_address, t, certs)
    t.run(burst_then_login, t, certs)
    t.run(sessions_limit, t, certs)
    t.run(ipv6_prefix, t, certs)


if __name__ == "__main__":
    Tap().main(main)
