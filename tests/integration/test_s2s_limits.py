#!/usr/bin/python3
# tests/integration/test_s2s_limits.py: limits on server-to-server streams against a scripted peer
# (harness.S2SPeer, dialback): a peer that never reads, the queue of a stream being set up, XEP-0205
# input rates per stream, and log lines that network values cannot forge.
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Tap, Server, Certs, S2SPeer, connect_login, q, error_type_condition,  # noqa: E402
                     NS_CLIENT, NS_DB)

# Memory is measured as civitasd's peak RSS. AddressSanitizer (scripts/test --sanitize) keeps freed
# blocks in a quarantine of 256 MB by default, which would count as growth: keep it small here.
os.environ["ASAN_OPTIONS"] = ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"), "quarantine_size_mb=1"]))

PW = "pw-for-limits"
DOMAIN = "civ.example"


def reset_peak(srv):
    """Start VmHWM (peak RSS) afresh at the current RSS (proc(5): clear_refs 5)."""
    with open("/proc/%d/clear_refs" % srv.proc.pid, "w") as f:
        f.write("5")


def rss_kb(srv, field="VmRSS"):
    with open("/proc/%d/status" % srv.proc.pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def config(peers, limits):
    return ("federation:\n  mode: open\n  dialback: true\n  partners:\n" + "".join(p.partner_yaml() for p in peers) +
            "limits:\n" + "".join("  %s: %s\n" % kv for kv in limits.items()))


def big_message(peer, i, size):
    return ("<message xmlns='jabber:server' from='x@%s/r' to='nobody@%s' type='chat' id='big%d'><body>%s</body>"
            "</message>" % (peer.domain, DOMAIN, i, "z" * size))


def sync(t, c, peer, alice, tag):
    """Everything the peer sent before has been processed once this reaches alice (one stream, in order)."""
    c.send("<message xmlns='jabber:server' from='x@%s/r' to='alice@%s/a' type='chat'><body>%s</body></message>"
           % (peer.domain, DOMAIN, tag))
    return alice.expect_message(tag, timeout=60) is not None


def never_reads(t, srv, peer, alice):
    """The peer authenticates, stops reading civitas's stream to it, and sends large messages to a
    nonexistent user: every bounce (RFC 6121 §8.5.2.2.1, carrying the payload) goes to the peer."""
    c, out = peer.authenticated_stream(srv, DOMAIN)
    t.ok(c is not None, "the scripted peer is authenticated by dialback in both directions",
         lambda: "\n".join(srv.log_tail(15)))
    if c is None:
        return
    mark = srv.log_mark()
    reset_peak(srv)
    base = rss_kb(srv)
    n, size = 240, 200000          # 48 MB of bounces for a peer that reads nothing
    for i in range(n):
        if not c.send(big_message(peer, i, size)):
            break
    t.ok(sync(t, c, peer, alice, "after the flood"), "all %d messages were read and bounced" % n, alice.dump)
    grown = (rss_kb(srv, "VmHWM") - base) // 1024
    t.ok(grown < 16, "civitasd's peak memory grew by %d MB while bouncing %d MB to a peer that does not read "
         "(bounded by limits.max_output_buffer)" % (grown, n * size // 1000000))
    line = srv.wait_log(r"s2s: .*output queue over \d+ bytes", timeout=5, start=mark)
    t.ok(line is not None and "does not read" in line,
         "the log says why the stream to the peer was closed", lambda: "\n".join(srv.log_tail(15)))
    t.ok(alice.ping_server(domain=DOMAIN), "local users are served meanwhile", alice.dump)
    c.close()
    if out is not None:
        out.close()


def queue_while_connecting(t, srv, peer, alice):
    """civitas's stream to the peer never finishes dialback: stanzas for the peer wait in its queue,
    which limits.max_s2s_queue_bytes bounds."""
    c, out = peer.authenticated_stream(srv, DOMAIN, result=None)
    t.ok(c is not None, "the peer is authenticated, civitas's own stream to it stays in negotiation",
         lambda: "\n".join(srv.log_tail(15)))
    if c is None:
        return
    mark = srv.log_mark()
    reset_peak(srv)
    base = rss_kb(srv)
    n, size = 150, 200000          # 30 MB of bounces that can only wait in the queue
    for i in range(n):
        if not c.send(big_message(peer, i, size)):
            break
    t.ok(sync(t, c, peer, alice, "after the queue flood"), "all %d messages were read" % n, alice.dump)
    grown = (rss_kb(srv, "VmHWM") - base) // 1024
    t.ok(grown < 12, "civitasd's peak memory grew by %d MB while %d MB of bounces waited for a stream "
         "(bounded by limits.max_s2s_queue_bytes)" % (grown, n * size // 1000000))
    t.ok(srv.wait_log(r"s2s: outgoing %s -> %s: queue over .* \d+ bytes" % (re.escape(DOMAIN), re.escape(peer.domain)),
                      timeout=5, start=mark),
         "the full queue is logged", lambda: "\n".join(srv.log_tail(15)))
    # a local user's message now finds the queue full: RFC 6120 §8.3.3.18, type wait
    alice.send("<message to='y@%s' type='chat' id='full'><body>%s</body></message>" % (peer.domain, "w" * 100000))
    e = alice.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("id") == "full", timeout=10)
    t.is_(error_type_condition(e), ("wait", "resource-constraint"),
          "RFC 6120 §8.3.3.18: a stanza that does not fit into the full queue is bounced with <resource-constraint/>")
    c.close()
    if out is not None:
        out.close()


def forged_log_line(t, srv, peer):
    """XEP-0220 db:result whose 'to' holds a newline: it must not start a log line of its own."""
    c = peer.connect(srv.port("server"), DOMAIN)
    t.ok(c.features is not None, "a stream with TLS for the log test", c.dump)
    mark = srv.log_mark()
    forged = "FORGED civitasd[1]: info: s2s: incoming evil.example -> %s authenticated (dialback)" % DOMAIN
    c.send("<db:result xmlns:db='%s' from='%s' to='nothere&#10;%s'>%s</db:result>"
           % (NS_DB, peer.domain, forged, "00" * 32))
    line = srv.wait_log(r"refused: not a domain of ours", timeout=10, start=mark)
    t.ok(line is not None and "nothere\\nFORGED" in line,
         "the newline in the logged 'to' is written as \\n, inside the one line", line)
    c.send("</stream:stream>")
    c.wait_closed(5)
    lines = srv.log().splitlines()[mark:]
    t.ok(not any(l.startswith("FORGED") for l in lines),
         "no log line starts with the text after the newline", lambda: "\n".join(lines[-10:]))
    c.close()


def rate_limits(t, certs):
    """XEP-0205 limits (limits.*) apply to every s2s stream as to client sessions: excess waits."""
    peer = S2SPeer("rate.example")
    with Server(t, hosts=[DOMAIN], certs=certs, extra_yaml=config([peer], {
            "max_bytes_per_second": 4096, "max_bytes_per_second_preauth": 4096,
            "max_stanzas_per_second": 5})) as srv:
        srv.adduser("alice@%s" % DOMAIN, PW)
        alice = connect_login(srv, "alice", PW, resource="a", domain=DOMAIN)
        c, out = peer.authenticated_stream(srv, DOMAIN)
        t.ok(c is not None, "the peer authenticates on the rate-limited server", lambda: "\n".join(srv.log_tail(15)))
        if c is None:
            return
        n = 20
        t0 = time.monotonic()
        c.send("".join("<message xmlns='jabber:server' from='x@%s/r' to='alice@%s/a' type='chat'><body>s%d</body>"
                       "</message>" % (peer.domain, DOMAIN, i) for i in range(n)))
        stamps = []
        for i in range(n):
            if alice.expect_message("s%d" % i, timeout=20) is None:
                break
            stamps.append(time.monotonic() - t0)
        t.ok(len(stamps) == n, "XEP-0205: 20 stanzas sent at once over s2s under max_stanzas_per_second 5 all "
             "arrive (none dropped)", alice.dump)
        took = stamps[-1] if stamps else 0
        t.ok(2.0 <= took <= 10, "XEP-0205: the excess waits: the 20th arrives after about 3 s (took %.1f s)" % took)
        body = "b" * 7000
        t0 = time.monotonic()
        for i in range(3):
            c.send("<message xmlns='jabber:server' from='x@%s/r' to='alice@%s/a' type='chat'><body>%s%d</body>"
                   "</message>" % (peer.domain, DOMAIN, body, i))
        ok = all(alice.expect_message(body + str(i), 20) is not None for i in range(3))
        took = time.monotonic() - t0
        t.ok(ok, "XEP-0205 §4.7: 21 KB over s2s under max_bytes_per_second 4096 all arrive", alice.dump)
        t.ok(3.0 <= took <= 12, "XEP-0205 §4.7: they take about 4 s at 4096 bytes/s (took %.1f s)" % took)
        alice.end()
        c.close()
        if out is not None:
            out.close()
    peer.close()


def main(t):
    certs = Certs()
    deaf = S2SPeer("deaf.example", rcvbuf=16384)
    slow = S2SPeer("slow.example")
    with Server(t, hosts=[DOMAIN], certs=certs, extra_yaml=config([deaf, slow], {
            "max_s2s_queue_bytes": 262144,
            "max_bytes_per_second": 100000000, "max_stanzas_per_second": 100000})) as srv:
        srv.adduser("alice@%s" % DOMAIN, PW)
        alice = connect_login(srv, "alice", PW, resource="a", domain=DOMAIN)
        t.run(never_reads, t, srv, deaf, alice)
        t.run(queue_while_connecting, t, srv, slow, alice)
        t.run(forged_log_line, t, srv, slow)
        alice.end()
    deaf.close()
    slow.close()
    t.run(rate_limits, t, certs)


Tap(timeout=300).main(main)
