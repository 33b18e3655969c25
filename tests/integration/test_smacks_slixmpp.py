#!/usr/bin/python3
# tests/integration/test_smacks_slixmpp.py: XEP-0198 with a real client library: slixmpp's
# xep_0198 enables stream management with resumption, both sides acknowledge, and after its TCP
# connection is aborted (no </stream:stream>) it resumes on a new connection and gets the messages
# sent meanwhile, each once.
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap  # noqa: E402
import slixmpp_helpers as sh  # noqa: E402
from slixmpp_helpers import until  # noqa: E402

PW = "slix-smacks-pw"


class Client(sh.Client):
    def __init__(self, jid, ca, sm=False):
        super().__init__(jid, PW, ca, plugins=("xep_0198",) if sm else ())
        self.bodies = []
        self.sm_enabled = asyncio.Event()
        self.resumed = asyncio.Event()
        self.add_event_handler("sm_enabled", lambda _e: self.sm_enabled.set())
        self.add_event_handler("session_resumed", lambda _e: self.resumed.set())
        self.add_event_handler("message", self._message)

    def _message(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            self.bodies.append(msg["body"])


async def scenario(t, srv):
    a = Client("alice@localhost/phone", srv.ca, sm=True)
    b = Client("bob@localhost/desk", srv.ca)
    t.ok(await sh.login(srv, a, b), "slixmpp: both clients are logged in",
         "alice: %r bob: %r" % (a.failed, b.failed))
    try:
        await asyncio.wait_for(a.sm_enabled.wait(), 10)
        enabled = True
    except asyncio.TimeoutError:
        enabled = False
    sm = a.plugin["xep_0198"]
    t.ok(enabled and sm.sm_id, "slixmpp xep_0198: stream management enabled with a resumption id")
    for i in range(3):
        b.send_message(mto="alice@localhost/phone", mbody="x-%d" % i, mtype="chat")
    t.ok(await until(lambda: len(a.bodies) == 3), "alice gets three messages", repr(a.bodies))
    sm.request_ack()
    t.ok(await until(lambda: sm.last_ack == sm.seq),
         "XEP-0198 §4: the server acknowledges every stanza alice sent (its <a h/> equals her count)",
         "last_ack %r seq %r" % (sm.last_ack, sm.seq))
    t.ok(sm.handled >= 3, "slixmpp counted the stanzas it handled (%d)" % sm.handled)
    # the connection goes away without a closing tag; bob writes meanwhile
    mark = srv.log_mark()
    a.transport.abort()
    t.ok(await until(lambda: srv.wait_log(r"hibernating", timeout=0, start=mark)),
         "the server keeps alice's session (hibernating)")
    for i in range(3, 6):
        b.send_message(mto="alice@localhost/phone", mbody="x-%d" % i, mtype="chat")
    await asyncio.sleep(0)
    a.connect_to(srv)
    try:
        await asyncio.wait_for(a.resumed.wait(), 20)
        resumed = True
    except asyncio.TimeoutError:
        resumed = False
    t.ok(resumed, "slixmpp xep_0198: the session is resumed on a new connection")
    t.ok(await until(lambda: len(a.bodies) >= 6), "the messages sent while alice was away arrive")
    b.send_message(mto="alice@localhost", mbody="x-6", mtype="chat")
    await until(lambda: len(a.bodies) >= 7)
    t.is_(a.bodies, ["x-%d" % i for i in range(7)], "every message arrived exactly once, in order")
    await sh.disconnect(a, b)


def main(t):
    sh.main(t, {"alice@localhost": PW, "bob@localhost": PW}, scenario)


if __name__ == "__main__":
    Tap().main(main)
