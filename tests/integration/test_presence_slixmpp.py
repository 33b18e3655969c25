#!/usr/bin/python3
# tests/integration/test_presence_slixmpp.py: presence subscriptions with a real client library: two
# slixmpp clients subscribe to each other (RFC 6121 §3) and see each other's presence come and go (§4).
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap  # noqa: E402
import slixmpp_helpers as sh  # noqa: E402

PW = "slix-presence-pw"
A, B = "amy@localhost", "ben@localhost"
TIMEOUT = 10


class Client(sh.Client):
    """A client that answers subscription requests itself (no automatic approval) and records
    the presence events it sees in a queue."""

    def __init__(self, jid, ca):
        super().__init__(jid, PW, ca)
        self.roster.auto_authorize = None     # None: the test answers requests (False would deny them)
        self.roster.auto_subscribe = False
        self.events = asyncio.Queue()
        for name in ("presence_subscribe", "presence_subscribed", "got_online", "got_offline"):
            self.add_event_handler(name, self._recorder(name))

    def _recorder(self, name):
        def record(pres):
            self.events.put_nowait((name, str(pres["from"])))
        return record

    async def on_session(self):
        await self.get_roster()

    async def wait_event(self, name, from_):
        """The first recorded event `name` whose sender (full or bare) starts with from_, or None."""
        try:
            while True:
                n, f = await asyncio.wait_for(self.events.get(), TIMEOUT)
                if n == name and f.startswith(from_):
                    return f
        except asyncio.TimeoutError:
            return None

    def subscription(self, jid):
        return self.client_roster[jid]["subscription"] if jid in self.client_roster else None


async def connect(srv, jid):
    c = Client(jid, srv.ca)
    return c, await sh.login(srv, c)


async def until(pred):
    """Wait (at most TIMEOUT) for pred() to hold: roster pushes arrive asynchronously."""
    return await sh.until(pred, TIMEOUT)


async def scenario(t, srv):
    a, ok_a = await connect(srv, A + "/slix-a")
    b, ok_b = await connect(srv, B + "/slix-b")
    t.ok(ok_a and ok_b, "slixmpp: both clients log in, fetch their rosters and send initial presence")
    if not (ok_a and ok_b):
        return
    # amy asks, ben approves and asks back, amy approves
    a.send_presence(pto=B, ptype="subscribe")
    t.is_(await b.wait_event("presence_subscribe", A), A,
          "RFC 6121 §3.1.3 with slixmpp: ben receives amy's subscription request from her bare JID")
    t.ok(await until(lambda: a.client_roster[B]["pending_out"]),
         "RFC 6121 §3.1.2 with slixmpp: amy's roster shows the request as pending (ask='subscribe')")
    b.send_presence(pto=A, ptype="subscribed")
    t.ok(await a.wait_event("presence_subscribed", B) is not None,
         "RFC 6121 §3.1.6 with slixmpp: amy receives ben's approval")
    t.ok(await a.wait_event("got_online", B + "/slix-b") is not None,
         "RFC 6121 §3.1.5 with slixmpp: amy sees ben online once he approved")
    b.send_presence(pto=A, ptype="subscribe")
    t.ok(await a.wait_event("presence_subscribe", B) is not None,
         "RFC 6121 §3.1.3 with slixmpp: amy receives ben's request")
    a.send_presence(pto=B, ptype="subscribed")
    t.ok(await b.wait_event("got_online", A + "/slix-a") is not None,
         "RFC 6121 §3.1.5 with slixmpp: ben sees amy online once she approved")
    t.ok(await until(lambda: a.subscription(B) == "both" and b.subscription(A) == "both"),
         "RFC 6121 §2.1.6 with slixmpp: the roster pushes leave both items in subscription 'both'",
         "amy: %r ben: %r" % (a.subscription(B), b.subscription(A)))
    # ben goes away and comes back
    b.disconnect()
    await b.disconnected
    t.ok(await a.wait_event("got_offline", B + "/slix-b") is not None,
         "RFC 6121 §4.5.2 with slixmpp: amy sees ben go offline when he disconnects")
    b, ok_b = await connect(srv, B + "/slix-b2")
    t.ok(ok_b and await a.wait_event("got_online", B + "/slix-b2") is not None,
         "RFC 6121 §4.2.2 with slixmpp: ben's initial presence reaches amy when he comes back")
    t.ok(await b.wait_event("got_online", A + "/slix-a") is not None,
         "RFC 6121 §4.3.2 with slixmpp: ben's server probes amy and ben sees her online")
    t.is_(b.subscription(A), "both", "RFC 6121 §2.2 with slixmpp: ben's roster after logging in again says 'both'")
    # amy goes away
    a.disconnect()
    await a.disconnected
    t.ok(await b.wait_event("got_offline", A + "/slix-a") is not None,
         "RFC 6121 §4.5.2 with slixmpp: ben sees amy go offline")
    b.disconnect()
    await b.disconnected


def main(t):
    sh.main(t, {A: PW, B: PW}, scenario)


if __name__ == "__main__":
    Tap().main(main)
