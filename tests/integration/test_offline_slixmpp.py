#!/usr/bin/python3
# tests/integration/test_offline_slixmpp.py: XEP-0160 offline delivery seen by a real client library:
# slixmpp alice writes to offline bob; bob logs in with slixmpp and gets the messages with a XEP-0203 delay.
import asyncio
import datetime
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap  # noqa: E402
import slixmpp_helpers as sh  # noqa: E402

PW_A, PW_B = "slix-off-alice", "slix-off-bob"


class Client(sh.Client):
    """Initial presence at session start: the server flushes offline storage then."""

    def __init__(self, jid, password, ca):
        super().__init__(jid, password, ca, plugins=("xep_0199", "xep_0203"))
        self.inbox = asyncio.Queue()
        self.add_event_handler("message", self._message)

    def _message(self, msg):
        if msg["type"] in ("chat", "normal"):
            delay = msg["delay"]
            stamp = delay["stamp"] if delay.xml is not None and delay.xml.get("stamp") else None
            self.inbox.put_nowait((str(msg["from"]), msg["body"], stamp, delay["from"] if stamp else None))


async def scenario(t, srv):
    a = Client("alice@localhost/slix-a", PW_A, srv.ca)
    ok = await sh.login(srv, a)
    t.ok(ok, "slixmpp: alice logs in", repr(a.failed))
    if not ok:
        return
    before = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=2)
    for body in ("offline one", "offline two", "offline three"):
        a.send_message(mto="bob@localhost", mbody=body, mtype="chat")
    # a round trip: the server has stored the three messages when the pong arrives
    try:
        await a.plugin["xep_0199"].send_ping("localhost", timeout=10)
        t.ok(True, "slixmpp: alice's messages to offline bob were processed (ping round trip)")
    except Exception as e:
        t.ok(False, "slixmpp: alice's messages to offline bob were processed (ping round trip)", repr(e))

    b = Client("bob@localhost/slix-b", PW_B, srv.ca)
    ok = await sh.login(srv, b)
    t.ok(ok, "slixmpp: bob logs in and sends available presence", repr(b.failed))
    if ok:
        got = []
        try:
            while len(got) < 3:
                got.append(await asyncio.wait_for(b.inbox.get(), 10))
        except asyncio.TimeoutError:
            pass
        t.is_([g[1] for g in got], ["offline one", "offline two", "offline three"],
              "XEP-0160: bob receives the messages sent while he was offline, in order")
        t.ok(all(g[0] == "alice@localhost/slix-a" for g in got),
             "XEP-0160: the stored messages keep alice's full JID as 'from'", repr(got))
        t.ok(len(got) == 3 and all(g[2] is not None for g in got),
             "XEP-0203: slixmpp sees a <delay/> on every offline message", repr(got))
        now = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)
        t.ok(len(got) == 3 and all(g[2] is not None and before <= g[2] <= now for g in got),
             "XEP-0203: the delay stamp parses (XEP-0082, UTC) and is the time the server stored it", repr(got))
        t.ok(len(got) == 3 and all(str(g[3]) == "localhost" for g in got),
             "XEP-0203: the delay's 'from' is the server's domain", repr(got))
        b.send_message(mto="alice@localhost/slix-a", mbody="got them", mtype="chat")
        try:
            f, body, stamp, _ = await asyncio.wait_for(a.inbox.get(), 10)
        except asyncio.TimeoutError:
            f = body = stamp = None
        t.ok(body == "got them" and stamp is None,
             "a message between two online clients is delivered at once, without a delay", repr((f, body, stamp)))
    await sh.disconnect(a, b)


def main(t):
    sh.main(t, {"alice@localhost": PW_A, "bob@localhost": PW_B}, scenario)


if __name__ == "__main__":
    Tap().main(main)
