# tests/integration/slixmpp_helpers.py: what the tests that drive slixmpp (a real client library)
# share: a client that verifies the server against the test CA and says when its session started or
# its login failed, logging in over STARTTLS, waiting for a condition, disconnecting, and a main()
# that runs a scenario against a server with accounts.
import asyncio
import logging
import os

import slixmpp  # Debian: python3-slixmpp

from harness import Server, run_async


class Client(slixmpp.ClientXMPP):
    """A slixmpp client of the test server. ready: a future, True once the session started (and
    initial presence went out, unless presence=False), False when the login failed (failed says
    why). plugins are registered in order. A subclass does more at session start in on_session()."""

    def __init__(self, jid, password, ca, plugins=(), presence=True):
        super().__init__(jid, password)
        self.ca_certs = ca                   # verify the server certificate against the test CA
        for p in plugins:
            self.register_plugin(p)
        self.ready = asyncio.get_event_loop().create_future()
        self.failed = None
        self.mech_failures = 0
        self._presence = presence
        self.add_event_handler("session_start", self._session_start)
        # failed_auth fires per mechanism (slixmpp then tries the next one); failed_all_auth is final.
        self.add_event_handler("failed_auth", self._mech_failed)
        self.add_event_handler("failed_all_auth", lambda _e: self._fail("failed_all_auth"))
        self.add_event_handler("connection_failed", lambda e: self._fail("connection_failed: %s" % e))
        self.add_event_handler("ssl_invalid_chain", lambda e: self._fail("ssl_invalid_chain: %s" % e))

    def _mech_failed(self, _event):
        self.mech_failures += 1

    def _fail(self, why):
        self.failed = why
        if not self.ready.done():
            self.ready.set_result(False)

    async def on_session(self):
        """Called at session start, before initial presence."""

    async def _session_start(self, _event):
        await self.on_session()
        if self._presence:
            self.send_presence()
        if not self.ready.done():
            self.ready.set_result(True)

    def connect_to(self, srv):
        """Connect to srv's client port, STARTTLS required."""
        self.connect(address=("127.0.0.1", srv.port("client")), force_starttls=True, use_ssl=False)


async def login(srv, *clients, timeout=20):
    """Connect the clients to srv at once and wait for their sessions: True when every one started
    within timeout (see each one's failed otherwise)."""
    for c in clients:
        c.connect_to(srv)
    await asyncio.wait([c.ready for c in clients], timeout=timeout)
    return all(c.ready.done() and c.ready.result() for c in clients)


async def until(pred, timeout=10):
    """Wait at most timeout seconds for pred() to hold (stanzas arrive asynchronously); its last value."""
    loop = asyncio.get_event_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            return pred()
        await asyncio.sleep(0.05)
    return True


async def disconnect(*clients):
    for c in clients:
        c.disconnect()
    await asyncio.gather(*(c.disconnected for c in clients), return_exceptions=True)


def main(t, accounts, scenario, timeout=90):
    """Run scenario(t, srv) on a server with these accounts ({jid: password}), at most timeout
    seconds. CIVITAS_TEST_VERBOSE=1 shows slixmpp's debug log."""
    if os.environ.get("CIVITAS_TEST_VERBOSE"):
        logging.basicConfig(level=logging.DEBUG)
    with Server(t) as srv:
        for jid, pw in accounts.items():
            srv.adduser(jid, pw)
        run_async(scenario(t, srv), timeout)
