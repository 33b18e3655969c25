#!/usr/bin/python3
# tests/integration/test_slixmpp.py: interoperability with a real client library: two slixmpp
# clients log in over STARTTLS (certificate checked against the test CA) and exchange messages.
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap  # noqa: E402
import slixmpp_helpers as sh  # noqa: E402

PW_A, PW_B = "slix-alice-pw", "slix-bob-pw"


class Client(sh.Client):
    def __init__(self, jid, password, ca):
        super().__init__(jid, password, ca, plugins=("xep_0199",))
        self.inbox = asyncio.Queue()
        self.add_event_handler("message", self._message)

    def _message(self, msg):
        if msg["type"] in ("chat", "normal"):
            self.inbox.put_nowait((str(msg["from"]), msg["body"]))


async def expect(client, from_, body, timeout=10):
    """The next message with this body; (from, body) or None on timeout."""
    try:
        while True:
            f, b = await asyncio.wait_for(client.inbox.get(), timeout)
            if b == body:
                return f, b
    except asyncio.TimeoutError:
        return None


async def scenario(t, srv):
    a = Client("alice@localhost/slix-a", PW_A, srv.ca)
    b = Client("bob@localhost/slix-b", PW_B, srv.ca)
    ok = await sh.login(srv, a, b)
    t.ok(ok, "slixmpp: two clients log in over STARTTLS with a verified certificate",
         "alice: %r bob: %r" % (a.failed, b.failed))
    if not ok:
        return
    t.is_(str(a.boundjid), "alice@localhost/slix-a", "slixmpp: alice is bound to the requested resource")
    a.send_message(mto="bob@localhost/slix-b", mbody="hello from alice", mtype="chat")
    got = await expect(b, "alice@localhost/slix-a", "hello from alice")
    t.ok(got is not None and got[0] == "alice@localhost/slix-a",
         "slixmpp: bob receives alice's message, 'from' is her full JID", repr(got))
    b.send_message(mto="alice@localhost/slix-a", mbody="hello from bob", mtype="chat")
    got = await expect(a, "bob@localhost/slix-b", "hello from bob")
    t.ok(got is not None and got[0] == "bob@localhost/slix-b", "slixmpp: alice receives bob's reply", repr(got))
    try:
        pong = await a.plugin["xep_0199"].send_ping("localhost", timeout=10)
        t.ok(pong is not None, "slixmpp: XEP-0199 ping to the server succeeds")
    except Exception as e:
        t.ok(False, "slixmpp: XEP-0199 ping to the server succeeds", repr(e))
    await sh.disconnect(a, b)


def main(t):
    sh.main(t, {"alice@localhost": PW_A, "bob@localhost": PW_B}, scenario, 60)


if __name__ == "__main__":
    Tap().main(main)
