#!/usr/bin/python3
# tests/integration/test_operations.py: operating safely (issue 5): root is dropped after binding
# (user:), and no log level ever records message content; JIDs only when log.jids is on.
import os
import pwd
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, Server, connect_login  # noqa: E402

PW = "pw-ops"
SECRET = "the-secret-body-7f3a"


def uid_of(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return [int(x) for x in line.split()[1:]]
    return None


def exchange(srv):
    a = connect_login(srv, "alice", PW, resource="a")
    b = connect_login(srv, "bob", PW, resource="b")
    a.message("bob@localhost/b", SECRET)
    got = b.expect_message(SECRET) is not None
    a.message("nobody@localhost", SECRET + "-bounced")      # errors and bounces are logged paths too
    a.ping_server()
    a.end()
    b.end()
    return got


def links_in_data_dir(t, srv, nobody):
    """The unprivileged user controls the data_dir's contents: the ownership fix at start (as root)
    follows no link, changes only the database files, and leaves a file with several links alone (a
    hard link can point at any file of the file system, /etc/shadow included)."""
    srv.stop()
    outside = {}
    for name in ("hard", "sym"):
        path = os.path.join(srv.dir, "root-owned-" + name)
        with open(path, "w") as f:
            f.write("root's\n")
        os.chmod(path, 0o644)
        outside[name] = path
    os.link(outside["hard"], os.path.join(srv.data_dir, "stray"))            # not a file of ours
    os.symlink(outside["sym"], os.path.join(srv.data_dir, "stray-symlink"))
    db = os.path.join(srv.data_dir, "civitas.db")
    outside["db"] = os.path.join(srv.dir, "root-owned-db")                  # our file, with a second link
    os.link(db, outside["db"])
    os.lchown(db, 0, 0)
    mark = srv.log_mark()
    srv.start()
    got = {name: os.stat(path).st_uid for name, path in outside.items()}
    t.is_(got, {"hard": 0, "sym": 0, "db": 0},
          "user: files linked into the data_dir keep their owner (a hard link with an unknown name, a "
          "symbolic link, the database file with a second link)")
    t.ok(srv.wait_log(r"civitas\.db.* links", 5, start=mark) is not None,
         "the database file with more than one link is reported in the log", lambda: "\n".join(srv.log_tail(10)))
    wal = os.path.join(srv.data_dir, "civitas.db-wal")
    t.is_(os.stat(wal).st_uid, nobody.pw_uid, "user: the database's -wal file is given to the user at start")


def main(t):
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        with Server(t, start=False, extra_yaml="user: nobody\n") as srv:
            os.chmod(srv.dir, 0o755)
            srv.start()
            t.ok(uid_of(srv.proc.pid) == [nobody.pw_uid] * 4,
                 "user: after binding its ports civitasd runs as the configured user (all four uids)",
                 repr(uid_of(srv.proc.pid)))
            srv.adduser("alice@localhost", PW)
            srv.adduser("bob@localhost", PW)
            t.ok(exchange(srv), "after dropping root the server still stores and delivers")
            owners = {os.stat(os.path.join(srv.data_dir, f)).st_uid for f in os.listdir(srv.data_dir)}
            owners.add(os.stat(srv.data_dir).st_uid)
            t.ok(owners == {nobody.pw_uid}, "user: the data_dir and the database files belong to that user",
                 repr(owners))
            t.run(links_in_data_dir, t, srv, nobody)
    else:
        t.skip("dropping root", "the test does not run as root")

    with Server(t, extra_yaml="log:\n  level: debug\n") as srv:
        srv.adduser("alice@localhost", PW)
        srv.adduser("bob@localhost", PW)
        t.ok(exchange(srv), "a message is delivered with logging at debug level")
        log = srv.log()
        t.ok(SECRET not in log, "no message body in the log, even at debug level")
        t.ok("alice@localhost" not in log and "bob@localhost" not in log,
             "by default the log holds no JIDs of users (pseudonyms instead)")

    with Server(t, extra_yaml="log:\n  level: debug\n  jids: true\n") as srv:
        srv.adduser("alice@localhost", PW)
        srv.adduser("bob@localhost", PW)
        exchange(srv)
        log = srv.log()
        t.ok("alice@localhost" in log, "log.jids: true shows JIDs in the log")
        t.ok(SECRET not in log, "... but still no message body")


if __name__ == "__main__":
    Tap().main(main)
