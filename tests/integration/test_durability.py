#!/usr/bin/python3
# tests/integration/test_durability.py: what the server accepted survives a crash (issue 5):
# a burst of messages to an offline user, civitasd killed with SIGKILL in the middle of it,
# restarted; every message sent before an answered ping is delivered, exactly once, in order.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, Server, connect_login, q, NS_CLIENT  # noqa: E402

PW = "pw-durable"
ACKED = 300          # sent, then confirmed by an answered ping
UNACKED = 300        # sent right before the kill; any of them may or may not have been stored


def bodies(c, timeout=5):
    """Bodies of every message c receives until a ping round trip shows nothing more is queued."""
    c.ping_server(timeout=30)
    return [el.findtext(q(NS_CLIENT, "body")) for el in c.messages()]


def main(t):
    with Server(t) as srv:
        srv.adduser("alice@localhost", PW)
        srv.adduser("bob@localhost", PW)
        a = connect_login(srv, "alice", PW, resource="burst")
        for i in range(ACKED):
            a.message("bob@localhost", "m%04d" % i, id="d%d" % i)
        t.ok(a.ping_server(timeout=30), "the server answered a ping after %d messages to offline bob" % ACKED)
        burst = "".join("<message to='bob@localhost' type='chat' id='u%d'><body>m%04d</body></message>"
                        % (i, ACKED + i) for i in range(UNACKED))
        a.send(burst)
        srv.proc.kill()                      # SIGKILL: no flushing, no clean shutdown
        srv.proc.wait(10)
        srv.exit_code = None
        a.close()
        srv.start()                          # same config and data_dir
        b = connect_login(srv, "bob", PW, resource="after")
        b.presence()
        got = bodies(b)
        acked = ["m%04d" % i for i in range(ACKED)]
        t.ok(got[:ACKED] == acked,
             "every message accepted before the answered ping is delivered after SIGKILL, in order",
             lambda: "got %d messages, first missing: %s" % (len(got), next((m for m in acked if m not in got), None)))
        t.ok(len(got) == len(set(got)), "no message is delivered twice", lambda: repr(len(got)))
        rest = got[ACKED:]
        t.ok(rest == ["m%04d" % (ACKED + i) for i in range(len(rest))],
             "of the burst cut by the kill, what was stored is a prefix in order (%d of %d)" % (len(rest), UNACKED),
             lambda: repr(rest[:10]))
        b.end()
        b2 = connect_login(srv, "bob", PW, resource="again")
        b2.presence()
        t.ok(bodies(b2) == [], "delivered offline messages are gone: a new session gets none of them again")
        b2.end()
        # and once more across a crash after delivery
        srv.proc.kill()
        srv.proc.wait(10)
        srv.exit_code = None
        srv.start()
        b3 = connect_login(srv, "bob", PW, resource="third")
        b3.presence()
        t.ok(bodies(b3) == [], "after another SIGKILL, delivered messages are still not delivered again")
        b3.end()


if __name__ == "__main__":
    Tap().main(main)
