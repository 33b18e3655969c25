#!/usr/bin/python3
# tests/integration/test_reload.py: CONTRACT.md's SIGHUP: the config and every certificate are read
# again without dropping sessions; a broken config on reload is refused and the old one kept.
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, Server, RawClient, connect_login  # noqa: E402

PW = "pw-reload"


def peer_cert(srv):
    c = RawClient(srv.port("client_tls"), tls=True, cafile=srv.ca)
    der = c.peer_cert_der()
    c.close()
    return der


def offered_mechs(srv):
    c = RawClient(srv.port("client"), cafile=srv.ca)
    c.open_stream()
    c.starttls()
    f = c.open_stream()
    m = c.mechanisms(f)
    c.close()
    return m


def reload(srv):
    mark = srv.log_mark()
    srv.proc.send_signal(signal.SIGHUP)
    return srv.wait_log(r"reloaded|reload failed", 10, start=mark)


def main(t):
    with Server(t) as srv:
        srv.adduser("alice@localhost", PW)
        a = connect_login(srv, "alice", PW, resource="before")
        old_der = peer_cert(srv)
        t.ok("SCRAM-SHA-1" in offered_mechs(srv), "before the reload every mechanism is offered")

        # new certificate files and a changed setting
        srv.leaves["localhost"] = srv.certs.leaf(["localhost"], name="localhost-renewed")
        srv.extra_yaml = "sasl:\n  mechanisms: [SCRAM-SHA-256]\n"
        srv.write_config()
        line = reload(srv)
        t.ok(line is not None and "reloaded" in line, "SIGHUP: the server logs that it reloaded", line)
        new_der = peer_cert(srv)
        t.ok(new_der is not None and new_der != old_der,
             "SIGHUP: new TLS connections get the renewed certificate")
        t.ok(offered_mechs(srv) == ["SCRAM-SHA-256"], "SIGHUP: the new config applies to new streams")
        t.ok(a.ping_server(), "SIGHUP: a session from before the reload is not dropped")

        # a broken config is refused, the running one kept
        with open(srv.config, "a") as f:
            f.write("no_such_key: 1\n")
        line = reload(srv)
        t.ok(line is not None and "reload failed" in line, "a broken config on SIGHUP is refused", line)
        t.ok(offered_mechs(srv) == ["SCRAM-SHA-256"] and peer_cert(srv) == new_der,
             "after a refused reload the running config and certificates stay")
        t.ok(a.ping_server(), "after a refused reload the old session still works")
        a.end()


if __name__ == "__main__":
    Tap().main(main)
