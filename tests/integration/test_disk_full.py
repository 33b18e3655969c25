#!/usr/bin/python3
# tests/integration/test_disk_full.py: storage failures (issue 5): with the data_dir's file system
# full, a message that must be stored is refused with <resource-constraint/>, the server keeps
# serving everyone, and once space returns, storing works again without a restart. A block command
# of many items that the disk cannot hold is written all or nothing (issue 9).
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
        t.run(messages, t, mnt)
        t.run(block_all_or_nothing, t, mnt)
    finally:
        subprocess.run(["umount", "-l", mnt])
        os.rmdir(mnt)


def block_all_or_nothing(t, mnt):
    """XEP-0191 §3.3 with the disk filling up in the middle of a block command: the command fails
    and the blocklist is as before (one transaction), not cut off after the items that fitted."""
    NS_B = "urn:xmpp:blocking"
    data = os.path.join(mnt, "data-blocking")      # a fresh database: its WAL file is still small
    with Server(t, start=False) as srv:
        srv.data_dir = data
        srv.write_config()
        srv.start()
        srv.adduser("alice@localhost", PW)
        a = connect_login(srv, "alice", PW, resource="a")
        r = a.iq("set", "<block xmlns='%s'><item jid='first@localhost'/></block>" % NS_B)
        t.ok(r is not None and r.get("type") == "result", "alice blocks one JID while there is space")
        jids = ["u%03d%s@localhost" % (i, "x" * 1000) for i in range(150)]
        items = "".join("<item jid='%s'/>" % j for j in jids)
        filler = fill(mnt)
        os.truncate(filler, max(0, os.path.getsize(filler) - 96 * 1024))   # room for a few items only
        r = a.iq("set", "<block xmlns='%s'>%s</block>" % (NS_B, items), timeout=30)
        t.ok(r is not None and r.get("type") == "error",
             "a block command the disk cannot hold is answered with an error", repr(error_condition(r)))
        r = a.iq("get", "<blocklist xmlns='%s'/>" % NS_B)
        got = sorted(i.get("jid") for i in r.iter(q(NS_B, "item"))) if r is not None else None
        t.ok(got == ["first@localhost"],
             "issue 9: the failed block command left the blocklist as it was (nothing of it written)",
             repr(None if got is None else [g[:8] for g in got]))
        os.unlink(filler)
        r = a.iq("set", "<block xmlns='%s'>%s</block>" % (NS_B, items), timeout=30)
        t.ok(r is not None and r.get("type") == "result", "with space again the same block command succeeds")
        r = a.iq("get", "<blocklist xmlns='%s'/>" % NS_B)
        got = sorted(i.get("jid") for i in r.iter(q(NS_B, "item"))) if r is not None else []
        t.is_(len(got), 151, "and the blocklist holds every item")
        a.end()


def messages(t, mnt):
    if True:
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


if __name__ == "__main__":
    Tap().main(main)
