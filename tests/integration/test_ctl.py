#!/usr/bin/python3
# tests/integration/test_ctl.py: the administrator's command line (CONTRACT.md): civitasctl user
# add/list/passwd/del with their exit codes, --help/--version, and civitasd --check.
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, Server, RawClient, find_program  # noqa: E402


def run(args, input=None):
    return subprocess.run(args, input=input, capture_output=True, text=True, timeout=30)


def can_login(srv, user, pw, mech="SCRAM-SHA-256"):
    c = RawClient(srv.port("client_tls"), tls=True, cafile=srv.ca)
    c.open_stream()
    ok, cond = c.auth(user, pw, mech)
    if ok:
        c.open_stream()     # after <success/> only a new stream header is well-formed (RFC 6120 §6.4.6)
    c.end()
    return ok, cond


def program_options(t):
    for prog in ("civitasctl", "civitasd"):
        exe = find_program(prog)
        r = run([exe, "--help"])
        t.ok(r.returncode == 0 and (r.stdout + r.stderr).strip(), "CONTRACT: %s --help exits 0 with text" % prog,
             repr(r))
        r = run([exe, "--version"])
        t.ok(r.returncode == 0 and "civitas" in (r.stdout + r.stderr).lower(),
             "CONTRACT: %s --version exits 0 and names civitas" % prog, repr(r))
        r = run([exe, "--no-such-option"])
        t.is_(r.returncode, 2, "CONTRACT: %s with an unknown option exits 2 (usage error)" % prog)
    ctl = find_program("civitasctl")
    r = run([ctl])
    t.is_(r.returncode, 2, "CONTRACT: civitasctl without a command exits 2")


def users(t, srv):
    r = srv.ctl("user", "add", "alice@localhost", input="alice-pw-1\n")
    t.is_(r.returncode, 0, "civitasctl user add alice@localhost exits 0")
    r = srv.ctl("user", "add", "bob@localhost", input="bob-pw\n")
    t.is_(r.returncode, 0, "civitasctl user add bob@localhost exits 0")
    r = srv.ctl("user", "add", "alice@localhost", input="other\n")
    t.ok(r.returncode == 1 and r.stderr.strip(), "CONTRACT: user add of an existing account exits 1 with a message",
         repr(r))
    for bad in ("alice@", "al ice@localhost", "@localhost", "a@b@localhost"):
        r = srv.ctl("user", "add", bad, input="pw\n")
        t.ok(r.returncode == 1 and r.stderr.strip(), "CONTRACT: user add of the invalid JID %r exits 1 with a message"
             % bad, repr(r))
    r = srv.ctl("user", "frobnicate", "alice@localhost")
    t.is_(r.returncode, 2, "CONTRACT: an unknown subcommand exits 2")
    r = srv.ctl("user", "add")
    t.is_(r.returncode, 2, "CONTRACT: user add without a JID exits 2")

    r = srv.ctl("user", "list", "localhost")
    listed = sorted(l.strip() for l in r.stdout.splitlines() if l.strip())
    t.ok(r.returncode == 0 and listed == ["alice@localhost", "bob@localhost"],
         "CONTRACT: user list localhost prints one bare JID a line", repr(r))

    t.is_(can_login(srv, "alice", "alice-pw-1"), (True, None), "the added account logs in (SCRAM-SHA-256)")
    t.is_(can_login(srv, "alice", "alice-pw-1", "SCRAM-SHA-1"), (True, None),
          "the added account logs in (SCRAM-SHA-1)")
    t.is_(can_login(srv, "alice", "alice-pw-1", "PLAIN"), (True, None), "the added account logs in (PLAIN)")

    r = srv.ctl("user", "passwd", "alice@localhost", input="alice-pw-2\n")
    t.is_(r.returncode, 0, "civitasctl user passwd exits 0")
    t.is_(can_login(srv, "alice", "alice-pw-1"), (False, "not-authorized"),
          "after user passwd the old password fails")
    t.is_(can_login(srv, "alice", "alice-pw-2"), (True, None), "after user passwd the new password works")
    t.is_(can_login(srv, "alice", "alice-pw-2", "SCRAM-SHA-1"), (True, None),
          "after user passwd the new password works with SCRAM-SHA-1 too")
    r = srv.ctl("user", "passwd", "nobody@localhost", input="x\n")
    t.is_(r.returncode, 1, "user passwd of a missing account exits 1")

    t.is_(can_login(srv, "bob", "bob-pw"), (True, None), "bob logs in before user del")
    r = srv.ctl("user", "del", "bob@localhost")
    t.is_(r.returncode, 0, "civitasctl user del exits 0")
    t.is_(can_login(srv, "bob", "bob-pw"), (False, "not-authorized"), "after user del the account cannot log in")
    r = srv.ctl("user", "list", "localhost")
    t.is_(sorted(l.strip() for l in r.stdout.splitlines() if l.strip()), ["alice@localhost"],
          "after user del the account is no longer listed")
    r = srv.ctl("user", "del", "bob@localhost")
    t.is_(r.returncode, 1, "user del of a missing account exits 1")


def check_config(t, srv):
    exe = find_program("civitasd")
    r = run([exe, "--config", srv.config, "--check"])
    t.is_(r.returncode, 0, "CONTRACT: civitasd --check on a good config exits 0")
    good = srv.config_text()

    def write(name, text):
        p = os.path.join(srv.dir, name)
        with open(p, "w") as f:
            f.write(text)
        return p

    text = good + "frobnicate: 1\n"
    line = text.count("\n")
    p = write("unknown-key.yml", text)
    r = run([exe, "--config", p, "--check"])
    out = r.stdout + r.stderr
    t.ok(r.returncode == 1 and ("%s:%d:" % (p, line)) in out and "frobnicate" in out,
         "CONTRACT: an unknown top-level key -> exit 1 with FILE:LINE: naming the key", repr(r))

    text = good + "limits:\n  max_stanza_sise: 5000\n"
    line = text.count("\n")
    p = write("unknown-nested.yml", text)
    r = run([exe, "--config", p, "--check"])
    out = r.stdout + r.stderr
    t.ok(r.returncode == 1 and ("%s:%d:" % (p, line)) in out and "max_stanza_sise" in out,
         "CONTRACT: an unknown nested key -> exit 1 with FILE:LINE: naming the key", repr(r))

    text = good + "offline:\n  max_mesages: 5\n"
    line = text.count("\n")
    p = write("unknown-module-key.yml", text)
    r = run([exe, "--config", p, "--check"])
    out = r.stdout + r.stderr
    t.ok(r.returncode == 1 and ("%s:%d:" % (p, line)) in out and "max_mesages" in out,
         "CONTRACT: an unknown key in a module's section -> --check exits 1 with FILE:LINE:", repr(r))

    text = good + "offline:\n  max_messages: 0\n"
    line = text.count("\n")
    p = write("bad-module-value.yml", text)
    r = run([exe, "--config", p, "--check"])
    out = r.stdout + r.stderr
    t.ok(r.returncode == 1 and ("%s:%d:" % (p, line)) in out and "max_messages" in out,
         "a module option out of its bounds -> --check exits 1 with FILE:LINE:", repr(r))

    text = good + "offline:\n  max_messages: 7\nversion:\n  show_os: true\n"
    p = write("good-module-values.yml", text)
    r = run([exe, "--config", p, "--check"])
    t.ok(r.returncode == 0, "valid module options pass --check", repr(r))

    lf = srv.leaves["localhost"]
    text = good.replace(lf.cert, lf.cert + ".missing")
    line = next(i for i, l in enumerate(text.splitlines(), 1) if ".missing" in l)
    p = write("missing-cert.yml", text)
    r = run([exe, "--config", p, "--check"])
    out = r.stdout + r.stderr
    t.ok(r.returncode == 1 and ("%s:%d:" % (p, line)) in out,
         "CONTRACT: a certificate that cannot be loaded -> exit 1 with FILE:LINE:", repr(r))

    p = write("not-yaml.yml", "hosts: [\n")
    r = run([exe, "--config", p, "--check"])
    t.ok(r.returncode == 1 and p + ":" in (r.stdout + r.stderr), "a YAML syntax error -> exit 1 naming the file",
         repr(r))

    r = run([exe, "--config", os.path.join(srv.dir, "does-not-exist.yml"), "--check"])
    t.is_(r.returncode, 1, "a missing config file -> exit 1")


def main(t):
    t.run(program_options, t)
    with Server(t) as srv:
        t.run(users, t, srv)
        t.run(check_config, t, srv)


if __name__ == "__main__":
    Tap().main(main)
