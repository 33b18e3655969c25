#!/usr/bin/python3
# tests/integration/test_slixmpp.py: interoperability with a real client library: two slixmpp
# clients log in over STARTTLS (certificate checked against the test CA) and exchange messages.
import asyncio
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, Server  # noqa: E402
from harness import run_async  # noqa: E402

import slixmpp  # noqa: E402  (Debian: python3-slixmpp)

PW_A, PW_B = "slix-alice-pw", "slix-bob-pw"


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, ca):
        super().__init__(jid, password)
        self.ca_certs = ca                   # verify the server certificate against the test CA
        self.register_plugin("xep_0199")
        self.session_ready = asyncio.get_event_loop().create_future()
        self.failed = None
        self.inbox = asyncio.Queue()
        self.add_event_handler("session_start", self._start)
        self.add_event_handler("message", self._message)
        self.mech_failures = 0
        # failed_auth fires per mechanism (slixmpp then tries the next one); failed_all_auth is final.
        self.add_event_handler("failed_auth", self._mech_failed)
        self.add_event_handler("failed_all_auth", lambda _e: self._fail("failed_all_auth"))
        self.add_event_handler("connection_failed", lambda e: self._fail("connection_failed: %s" % e))
        self.add_event_handler("ssl_invalid_chain", lambda e: self._fail("ssl_invalid_chain: %s" % e))

    def _mech_failed(self, _event):
        self.mech_failures += 1

    def _fail(self, why):
        self.failed = why
        if not self.session_ready.done():
            self.session_ready.set_result(False)

    async def _start(self, _event):
        self.send_presence()
        if not self.session_ready.done():
            self.session_ready.set_result(True)

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
    port = srv.port("client")
    a = Client("alice@localhost/slix-a", PW_A, srv.ca)
    b = Client("bob@localhost/slix-b", PW_B, srv.ca)
    for c in (a, b):
        c.connect(address=("127.0.0.1", port), force_starttls=True, use_ssl=False)
    try:
        ok_a = await asyncio.wait_for(a.session_ready, 20)
        ok_b = await asyncio.wait_for(b.session_ready, 20)
    except asyncio.TimeoutError:
        ok_a = a.session_ready.done() and a.session_ready.result()
        ok_b = b.session_ready.done() and b.session_ready.result()
    t.ok(ok_a and ok_b, "slixmpp: two clients log in over STARTTLS with a verified certificate",
         "alice: %r bob: %r" % (a.failed, b.failed))
    if not (ok_a and ok_b):
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
    for c in (a, b):
        c.disconnect()
    await asyncio.gather(a.disconnected, b.disconnected, return_exceptions=True)


def main(t):
    if os.environ.get("CIVITAS_TEST_VERBOSE"):
        logging.basicConfig(level=logging.DEBUG)
    with Server(t) as srv:
        srv.adduser("alice@localhost", PW_A)
        srv.adduser("bob@localhost", PW_B)
        run_async(scenario(t, srv), 60)


if __name__ == "__main__":
    Tap().main(main)
