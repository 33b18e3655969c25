#!/usr/bin/python3
# tests/integration/test_disk_full.py: storage failures (issue 5): with the data_dir's file system
# full, a message that must be stored is refused with <resource-constraint/>, the server keeps
# serving everyone, and once space returns, storing works again without a restart.
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, Server, connect_login, q, NS_CLIENT  # noqa: E402
from harness import error_condition  # noqa: E402

PW = "pw-full"


def send_and_wait(c, to, body, id_):
    c.message(to, body, id=id_)
    c.ping_server()
    for el in c.messages() + [x for x in c.inbox if x.get("id") == id_]:
        if el.get("id") == id_ and el.get("type") == "error":
            return el
    return None


def fill(path):
    """Fill the file system of path to the last byte; returns the filler's name."""
    name = os.path.join(path, "filler")
    subprocess.run(["dd", "if=/dev/zero", "of=" + name, "bs=4096"], stderr=subprocess.DEVNULL)
    return name


def main(t):
    mnt = tempfile.mkdtemp(prefix="civitas-full-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", mnt], capture_output=True, text=True)
    if r.returncode != 0:       # the test needs root (CI runs as root); it must not pass silently
        t.ok(False, "mounting a small tmpfs for the data_dir (needs root): " + r.stderr.strip())
        t.done()
    try:
        data = os.path.join(mnt, "data")
        with Server(t, start=False) as srv:
            srv.data_dir = data
            srv.write_config()
            srv.start()
            srv.adduser("alice@localhost", PW)
            srv.adduser("bob@localhost", PW)
            a = connect_login(srv, "alice", PW, resource="a")
            err = send_and_wait(a, "bob@localhost", "before", "ok-1")
            t.ok(err is None, "with free space a message to offline bob is stored")
            filler = fill(mnt)
            big = "x" * 20000
            conds, refused = [], None
            for i in range(40):
                e = send_and_wait(a, "bob@localhost", big + str(i), "full-%d" % i)
                if e is not None:
                    conds.append(error_condition(e))
                    refused = big + str(i)
                    break
            t.ok(conds == ["resource-constraint"],
                 "issue 5: with the disk full the sender gets <resource-constraint/> for a message that must be stored",
                 repr(conds))
            t.ok(a.ping_server(), "the server keeps serving the sender")
            c = connect_login(srv, "alice", PW, resource="other")
            t.ok(c.ping_server(), "the server keeps accepting logins with the disk full")
            os.unlink(filler)
            err = send_and_wait(a, "bob@localhost", "after space returned", "ok-2")
            t.ok(err is None, "once space returns, storing works again without a restart", repr(error_condition(err)))
            b = connect_login(srv, "bob", PW, resource="b")
            b.presence()
            b.ping_server()
            got = [el.findtext(q(NS_CLIENT, "body")) for el in b.messages()]
            t.ok("before" in got and "after space returned" in got,
                 "the messages stored before and after the full disk are delivered", repr([g[:12] for g in got]))
            t.ok(refused is not None and refused not in got, "the refused message was not stored")
            for x in (a, b, c):
                x.end()
    finally:
        subprocess.run(["umount", "-l", mnt])
        os.rmdir(mnt)


if __name__ == "__main__":
    Tap().main(main)
