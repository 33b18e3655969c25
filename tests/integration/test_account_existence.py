#!/usr/bin/python3
# tests/integration/test_account_existence.py: whether an account exists must not be observable by
# someone who is not entitled to know (issue 9 item 8): XEP-0012 queries, RFC 6121 presence probes,
# SASL PLAIN timing and SCRAM's server-first message answer the same for a missing account as for
# an existing one the asker may not see.
import base64
import os
import sqlite3
import secrets
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Tap, Server, RawClient, connect_login, q, el_str,  # noqa: E402
                     NS_CLIENT, NS_SASL)
from harness import error_type_condition  # noqa: E402

PW = "pw-for-existence"
NS_LAST = "jabber:iq:last"
NS_ROSTER = "jabber:iq:roster"
ITERATIONS = 1000000        # sasl.iterations: the largest allowed, so one PBKDF2 run is clearly measurable


def last_activity(t, srv):
    """XEP-0012 §3: a requester not allowed to see the user's presence gets <forbidden/>; an account
    that does not exist cannot allow anybody, so it gets the same answer (as Prosody gives)."""
    b = connect_login(srv, "bob", PW, resource="last")
    existing = b.iq("get", "<query xmlns='%s'/>" % NS_LAST, to="alice@localhost")
    missing = b.iq("get", "<query xmlns='%s'/>" % NS_LAST, to="nobody@localhost")
    t.is_(error_type_condition(existing), ("auth", "forbidden"),
          "XEP-0012 §3: an existing account without a subscription -> <forbidden/> (type auth)")
    t.is_(error_type_condition(missing), error_type_condition(existing),
          "XEP-0012: an account that does not exist gets the same error as one the requester may not see")
    b.end()


def subscribed_to(srv, user, contact):
    """user gets a subscription to contact's presence (RFC 6121 §3.1): 'to' in user's roster."""
    u = connect_login(srv, user, PW, resource="setup")
    c = connect_login(srv, contact, PW, resource="setup")
    u.send("<presence to='%s@localhost' type='subscribe'/>" % contact)
    u.ping_server()
    c.send("<presence to='%s@localhost' type='subscribed'/>" % user)
    c.ping_server()
    r = u.iq("get", "<query xmlns='%s'/>" % NS_ROSTER)
    item = r.find("%s/%s" % (q(NS_ROSTER, "query"), q(NS_ROSTER, "item"))) if r is not None else None
    u.end()
    c.end()
    return item is not None and item.get("subscription") in ("to", "both")


def probe_answer(srv, user, contact):
    """user logs in (roster requested, initial presence): the server probes contact (RFC 6121 §4.3.1).
    An unsubscribed answer ends user's subscription, which user sees as a roster push (§3.3.3):
    returns the pushed subscription state, or None when no push came."""
    c = connect_login(srv, user, PW, resource="probe")
    c.iq("get", "<query xmlns='%s'/>" % NS_ROSTER)
    c.presence()
    push = c.expect(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("type") == "set" and
                    el.find("%s/%s" % (q(NS_ROSTER, "query"), q(NS_ROSTER, "item"))) is not None, timeout=5)
    c.end()
    item = push.find("%s/%s" % (q(NS_ROSTER, "query"), q(NS_ROSTER, "item"))) if push is not None else None
    return (item.get("jid"), item.get("subscription")) if item is not None else None


def probes(t):
    """RFC 6121 §4.3.2 ¶1: "If the contact account does not exist or the user's bare JID is in the
    contact's roster with a subscription state other than From, From + Pending Out, or Both, then
    the contact's server SHOULD return a presence stanza of type unsubscribed". Both cases get that
    answer, so a probe cannot tell them apart. The stale subscriptions are made in the database while
    the server is down (civitasctl would tell the contacts, see test_account_deletion.py): alice's
    roster loses bob, dave's account disappears."""
    with Server(t) as srv:
        for u in ("alice", "bob", "carol", "dave"):
            srv.adduser("%s@localhost" % u, PW)
        t.ok(subscribed_to(srv, "bob", "alice") and subscribed_to(srv, "carol", "dave"),
             "setup: bob is subscribed to alice, carol to dave")
        srv.stop()
        db = sqlite3.connect(os.path.join(srv.data_dir, "civitas.db"))
        with db:
            db.execute("DELETE FROM kv WHERE store = 'roster' AND user = 'alice' AND domain = 'localhost'")
            db.execute("DELETE FROM kv WHERE user = 'dave' AND domain = 'localhost'")
            db.execute("DELETE FROM accounts WHERE user = 'dave' AND domain = 'localhost'")
        db.close()
        srv.start()
        existing = probe_answer(srv, "bob", "alice")
        t.is_(existing, ("alice@localhost", "none"),
              "RFC 6121 §4.3.2: a probe to an existing account that has no subscription for the prober is "
              "answered unsubscribed (the prober's server ends the subscription)")
        missing = probe_answer(srv, "carol", "dave")
        t.is_(missing, ("dave@localhost", "none"),
              "RFC 6121 §4.3.2: a probe to an account that does not exist gets the same answer")


def plain_seconds(srv, user):
    c = RawClient(srv.port("client_tls"), tls=True, cafile=srv.ca, timeout=30)
    c.open_stream()
    msg = ("\0%s\0%s" % (user, "wrong password")).encode()
    t0 = time.monotonic()
    c.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (NS_SASL, base64.b64encode(msg).decode()))
    r = c.expect(q(NS_SASL, "failure"))
    took = time.monotonic() - t0
    c.close()
    return took if r is not None else None


def plain_timing(t, srv):
    """PLAIN for an unknown user runs the same PBKDF2 as for a wrong password, so the answer takes as
    long. With sasl.iterations at 1000000 one run is a few hundred milliseconds; without the
    decoy run the unknown user is answered in about a millisecond. Medians of alternating tries,
    compared with a generous factor (2), so other load on the machine does not decide it."""
    known, unknown = [], []
    for _ in range(3):
        known.append(plain_seconds(srv, "alice"))
        unknown.append(plain_seconds(srv, "nobody"))
    if None in known or None in unknown:
        t.ok(False, "PLAIN failures answered", repr((known, unknown)))
        return
    mk, mu = statistics.median(known), statistics.median(unknown)
    t.ok(mk >= 0.05, "control: a wrong password for an existing account takes measurable PBKDF2 time",
         repr(known))
    t.ok(mu >= mk / 2, "PLAIN: an unknown user takes as long as a wrong password (median %.3f s vs %.3f s)"
         % (mu, mk), repr((known, unknown)))


def server_first(srv, user, mech):
    """The decoded SCRAM server-first message for `user` (the exchange is then aborted)."""
    c = RawClient(srv.port("client_tls"), tls=True, cafile=srv.ca)
    c.open_stream()
    first = "n,,n=%s,r=%s" % (user, base64.b64encode(secrets.token_bytes(18)).decode())
    c.send("<auth xmlns='%s' mechanism='%s'>%s</auth>" % (NS_SASL, mech, base64.b64encode(first.encode()).decode()))
    ch = c.expect(lambda el: el.tag in (q(NS_SASL, "challenge"), q(NS_SASL, "failure")))
    c.close()
    if ch is None or ch.tag != q(NS_SASL, "challenge"):
        return None
    return dict(kv.split("=", 1) for kv in base64.b64decode(ch.text or "").decode().split(","))


def scram_first(t, srv):
    """RFC 5802 §5: server-first carries the salt and iteration count of the user's keys; for an
    unknown user it must look the same: the configured sasl.iterations and a salt of the same length
    that does not change between tries."""
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1"):
        real = server_first(srv, "alice", mech)
        fake1 = server_first(srv, "nobody", mech)
        fake2 = server_first(srv, "nobody", mech)
        if real is None or fake1 is None or fake2 is None:
            t.ok(False, "%s: server-first for both users" % mech, repr((real, fake1, fake2)))
            continue
        t.is_(real.get("i"), str(ITERATIONS), "%s: an existing account's keys use sasl.iterations" % mech)
        t.is_(fake1.get("i"), real.get("i"),
              "%s: an unknown user's server-first shows the same iteration count (sasl.iterations)" % mech)
        t.ok(len(base64.b64decode(fake1["s"])) == len(base64.b64decode(real["s"])),
             "%s: an unknown user's salt has the length of a real one" % mech, repr((real, fake1)))
        t.ok(fake1["s"] == fake2["s"], "%s: an unknown user's salt is the same on a second try" % mech,
             repr((fake1, fake2)))


def main(t):
    with Server(t, extra_yaml="sasl:\n  iterations: %d\nlimits:\n  sasl_failures_per_ip: 1000\n" % ITERATIONS) as srv:
        for u in ("alice", "bob"):
            srv.adduser("%s@localhost" % u, PW)
        t.run(last_activity, t, srv)
        t.run(plain_timing, t, srv)
        t.run(scram_first, t, srv)
    t.run(probes, t)


if __name__ == "__main__":
    Tap().main(main)
