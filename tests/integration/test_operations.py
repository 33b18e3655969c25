#!/usr/bin/python3
# tests/integration/test_operations.py: operating safely (issue 5): root is dropped after binding
# (user:), and no log level ever records message content; JIDs only when log.jids is on.
import os
import pwd
import shutil
import tempfile
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, Server, HarnessError, build_dir, connect_login  # noqa: E402

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
    srv.start()
    got = {name: os.stat(path).st_uid for name, path in outside.items()}
    t.is_(got, {"hard": 0, "sym": 0},
          "user: files linked into the data_dir keep their owner (a hard link with an unknown name, a "
          "symbolic link)")
    wal = os.path.join(srv.data_dir, "civitas.db-wal")
    t.is_(os.stat(wal).st_uid, nobody.pw_uid, "user: the database's -wal file is given to the user at start")

    srv.stop()
    db = os.path.join(srv.data_dir, "civitas.db")
    second = os.path.join(srv.dir, "root-owned-db")                         # our file, with a second link
    os.link(db, second)
    os.lchown(db, 0, 0)
    mark = srv.log_mark()
    try:
        srv.start()
        started = True
    except HarnessError:
        started = False
    t.is_(os.stat(second).st_uid, 0, "user: the database file with a second link keeps its owner")
    t.ok(srv.wait_log(r"civitas\.db.* links", 5, start=mark) is not None,
         "the database file with more than one link is reported in the log", lambda: "\n".join(srv.log_tail(10)))
    t.ok(not started and srv.wait_log(r"storage: cannot open", 1, start=mark) is not None,
         "... and the server, which opens its storage only as the user, refuses to start and says why",
         lambda: "\n".join(srv.log_tail(10)))
    os.unlink(second)
    os.chown(db, nobody.pw_uid, nobody.pw_gid)


def sqlite_files_as_user(t, srv):
    """The storage is opened only after the switch to user:, so SQLite never writes, as root, through
    a hard link that the user put in place of its -shm or -wal file (SQLite refuses symbolic links
    there itself, but writes its WAL and index through a hard link into whatever file it is)."""
    srv.stop()
    victims = {}
    for suffix in ("-shm", "-wal"):
        path = os.path.join(srv.dir, "root-owned" + suffix)
        with open(path, "w") as f:
            f.write("root's file, not a database\n")
        os.chmod(path, 0o644)
        link = os.path.join(srv.data_dir, "civitas.db" + suffix)
        if os.path.lexists(link):
            os.unlink(link)
        os.link(path, link)
        victims[suffix] = (path, open(path, "rb").read())
    mark = srv.log_mark()
    try:
        srv.start()
        started = True
    except HarnessError:
        started = False
    changed = [s for s, (path, data) in victims.items() if open(path, "rb").read() != data]
    t.ok(not changed, "user: hard links in place of SQLite's -shm/-wal files are not written through as root",
         "changed: %r; log:\n%s" % (changed, "\n".join(srv.log_tail(10))))
    if not started:
        t.ok(srv.wait_log(r"storage: ", 1, start=mark) is not None,
             "... and when the storage cannot open without privileges, the log says so")
    for suffix in victims:
        os.unlink(os.path.join(srv.data_dir, "civitas.db" + suffix))


def modules_only_root_can_read(t, nobody):
    """The module files are opened before civitasd becomes user:, so a module directory that user
    cannot enter (a build tree under /root, say) still works."""
    src = os.path.join(build_dir(), "modules", ".libs")
    with tempfile.TemporaryDirectory(prefix="civitas-mods-") as d:
        os.chmod(d, 0o700)
        for f in os.listdir(src):
            if f.startswith("mod_") and f.endswith(".so"):
                shutil.copy(os.path.join(src, f), d)
        old = os.environ.get("CIVITAS_MODULE_DIR")
        os.environ["CIVITAS_MODULE_DIR"] = d
        try:
            with Server(t, start=False, extra_yaml="user: nobody\n") as srv:
                os.chmod(srv.dir, 0o755)
                try:
                    srv.start()
                    started = True
                except HarnessError:
                    started = False
                t.ok(started and uid_of(srv.proc.pid) == [nobody.pw_uid] * 4,
                     "user: modules in a directory only root can read are loaded before root is dropped",
                     lambda: "\n".join(srv.log_tail(10)))
                if started:
                    srv.adduser("alice@localhost", PW)
                    srv.adduser("bob@localhost", PW)
                    t.ok(exchange(srv), "... and the server serves with them")
        finally:
            if old is None:
                del os.environ["CIVITAS_MODULE_DIR"]
            else:
                os.environ["CIVITAS_MODULE_DIR"] = old


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
            t.run(sqlite_files_as_user, t, srv)
        t.run(modules_only_root_can_read, t, nobody)
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
