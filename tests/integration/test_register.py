#!/usr/bin/python3
# tests/integration/test_register.py: XEP-0077 In-Band Registration: password change and account
# removal for logged-in users, and account creation before authentication when the admin allows it
# (through mod_register only, at most register.max_per_address_per_hour accounts per address).
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, Server, RawClient, HarnessError, connect_login, q, el_str  # noqa: E402
from harness import error_condition, error_type_condition  # noqa: E402

NS_REG = "jabber:iq:register"


def can_login(srv, user, pw):
    try:
        connect_login(srv, user, pw).end()
        return True
    except HarnessError:
        return False


def logged_in(t, srv):
    c = connect_login(srv, "alice", "old-pw")
    r = c.iq("get", "<query xmlns='%s'/>" % NS_REG, to="localhost")
    t.ok(r is not None and r.get("type") == "result" and r.find("%s/%s" % (q(NS_REG, "query"), q(NS_REG, "registered")))
         is not None, "XEP-0077 §3.2: a registered user's get is answered with <registered/>", el_str(r))
    r = c.iq("set", "<query xmlns='%s'><username>bob</username><password>x</password></query>" % NS_REG,
             to="localhost")
    t.is_(error_condition(r), "not-authorized", "XEP-0077 §3.3: changing another user's password -> <not-authorized/>")
    r = c.iq("set", "<query xmlns='%s'><password>x</password></query>" % NS_REG, to="localhost")
    t.is_(error_condition(r), "bad-request", "XEP-0077 §3.3: a change without <username/> -> <bad-request/>")
    r = c.iq("set", "<query xmlns='%s'><username>alice</username><password>new-pw</password></query>" % NS_REG,
             to="localhost")
    t.ok(r is not None and r.get("type") == "result", "XEP-0077 §3.3: the user changes the password", el_str(r))
    c.end()
    t.ok(not can_login(srv, "alice", "old-pw"), "after the change the old password is refused")
    t.ok(can_login(srv, "alice", "new-pw"), "after the change the new password works")

    a1 = connect_login(srv, "alice", "new-pw", resource="one")
    a2 = connect_login(srv, "alice", "new-pw", resource="two")
    r = a1.iq("set", "<query xmlns='%s'><remove/></query>" % NS_REG)
    t.ok(r is not None and r.get("type") == "result", "XEP-0077 §3.2: account removal is answered with a result",
         el_str(r))
    cond = a2.read_stream_error()
    t.is_(cond[0] if cond else None, "not-authorized",
          "XEP-0077 §3.2: the removed account's other sessions end with <not-authorized/>")
    t.ok(not can_login(srv, "alice", "new-pw"), "a removed account cannot log in")
    out = srv.ctl("user", "list", "localhost").stdout
    t.ok("alice@localhost" not in out and "bob@localhost" in out, "civitasctl no longer lists the removed account",
         out)


def preauth_refused(t, srv):
    c = RawClient(srv.port("client"), cafile=srv.ca)
    c.open_stream()
    c.starttls()
    f = c.open_stream()
    t.ok(f is not None and f.find(q("http://jabber.org/features/iq-register", "register")) is None,
         "registration is off by default: no register stream feature", el_str(f))
    r = c.iq("get", "<query xmlns='%s'/>" % NS_REG)
    t.is_(error_condition(r), "service-unavailable", "XEP-0077 §3.1: registration off -> <service-unavailable/>")
    c.close()


def preauth_allowed(t):
    with Server(t, extra_yaml="register:\n  allow_registration: true\n") as srv:
        srv.adduser("taken@localhost", "pw")
        c = RawClient(srv.port("client"), cafile=srv.ca)
        c.open_stream()
        c.starttls()
        f = c.open_stream()
        t.ok(f is not None and f.find(q("http://jabber.org/features/iq-register", "register")) is not None,
             "XEP-0077 §8: the register stream feature is offered when allowed", el_str(f))
        r = c.iq("get", "<query xmlns='%s'/>" % NS_REG)
        qq = r.find(q(NS_REG, "query")) if r is not None else None
        t.ok(qq is not None and qq.find(q(NS_REG, "username")) is not None and qq.find(q(NS_REG, "password"))
             is not None, "XEP-0077 §3.1: the form asks for username and password", el_str(r))
        r = c.iq("set", "<query xmlns='%s'><username>taken</username><password>x</password></query>" % NS_REG)
        t.is_(error_condition(r), "conflict", "XEP-0077 §3.1: a taken username -> <conflict/>")
        r = c.iq("set", "<query xmlns='%s'><username>new</username></query>" % NS_REG)
        t.is_(error_condition(r), "bad-request", "XEP-0077 §3.1: a missing password -> <bad-request/>")
        r = c.iq("set", "<query xmlns='%s'><username>bad@name</username><password>x</password></query>" % NS_REG)
        t.is_(error_condition(r), "not-acceptable", "XEP-0077 §3.1: an invalid username -> <not-acceptable/>")
        r = c.iq("set", "<query xmlns='%s'><username>newbie</username><password>fresh</password></query>" % NS_REG)
        t.ok(r is not None and r.get("type") == "result", "XEP-0077 §3.1: registration succeeds", el_str(r))
        ok, cond = c.auth("newbie", "fresh")
        t.ok(ok, "the new account logs in on the same stream", cond)
        c.close()


def preauth_stream(srv):
    """A client on a TLS stream, before authentication; returns (client, features)."""
    c = RawClient(srv.port("client"), cafile=srv.ca)
    c.open_stream()
    c.starttls()
    return c, c.open_stream()


def register(c, user, pw, timeout=None):
    return c.iq("set", "<query xmlns='%s'><username>%s</username><password>%s</password></query>"
                % (NS_REG, user, pw), timeout=timeout)


def preauth_throttled(t):
    """register.max_per_address_per_hour (issue 9 item 9): at most that many accounts are created from
    one address in any hour; past it, <policy-violation/> of type wait (as Prosody's
    mod_register_limits answers), and no account is created."""
    with Server(t, extra_yaml="register:\n  allow_registration: true\n  max_per_address_per_hour: 2\n") as srv:
        srv.adduser("taken@localhost", "pw")
        c, _ = preauth_stream(srv)
        r = register(c, "taken", "x")
        t.is_(error_condition(r), "conflict", "a refused registration (taken name)...")
        got = [register(c, "first", "pw1"), register(c, "second", "pw2")]
        t.ok(all(r is not None and r.get("type") == "result" for r in got),
             "...does not count: two registrations from the address succeed", " ".join(el_str(r) for r in got))
        c.close()
        c, _ = preauth_stream(srv)      # a new stream from the same address does not start afresh
        r = register(c, "third", "pw3")
        t.is_(error_type_condition(r), ("wait", "policy-violation"),
              "register.max_per_address_per_hour: 2: the third in the hour -> <policy-violation/> (type wait)")
        c.close()
        t.ok(can_login(srv, "second", "pw2") and not can_login(srv, "third", "pw3"),
             "the accounts within the limit exist, the refused one does not")


def preauth_needs_module(t):
    """Account creation before authentication is mod_register's (issue 9 item 9): with the module not
    loaded, its section has no effect: no stream feature, <service-unavailable/>, no account."""
    mods = ["disco", "ping", "roster", "presence", "offline"]
    with Server(t, modules=mods, extra_yaml="register:\n  allow_registration: true\n") as srv:
        c, f = preauth_stream(srv)
        t.ok(f is not None and f.find(q("http://jabber.org/features/iq-register", "register")) is None,
             "register not loaded: no register stream feature", el_str(f))
        r = c.iq("get", "<query xmlns='%s'/>" % NS_REG)
        t.is_(error_condition(r), "service-unavailable", "register not loaded: the form -> <service-unavailable/>")
        r = register(c, "sneaky", "pw")
        t.is_(error_condition(r), "service-unavailable", "register not loaded: creation -> <service-unavailable/>")
        c.close()
        t.ok("sneaky@localhost" not in srv.ctl("user", "list", "localhost").stdout, "and no account was created")


def preauth_one_address_key(t):
    """The per-address limit counts one client address as every other limit does (ip_limit_key:
    an IPv6 /64 as one address, an IPv4-mapped IPv6 address as its IPv4 address). Loopback offers
    no two IPv6 source addresses in one /64, so this uses the mapped form: 127.0.0.1 reaching an
    IPv6 listener is ::ffff:127.0.0.1 there, the same address as on the IPv4 listener."""
    listen = {"client": ["127.0.0.1:0", "[::ffff:127.0.0.1]:0"], "client_tls": ["127.0.0.1:0"]}
    with Server(t, listen=listen,
                extra_yaml="register:\n  allow_registration: true\n  max_per_address_per_hour: 2\n") as srv:
        mapped = [int(p) for p in re.findall(r"listening client \[::ffff:127\.0\.0\.1\]:(\d+)", srv.log())]
        t.ok(len(mapped) == 1, "the IPv6 listener for IPv4-mapped addresses is up", repr(mapped))
        c, _ = preauth_stream(srv)
        got = [register(c, "v4one", "pw1"), register(c, "v4two", "pw2")]
        t.ok(all(r is not None and r.get("type") == "result" for r in got), "two registrations over IPv4",
             " ".join(el_str(r) for r in got))
        c.close()
        mark = srv.log_mark()
        c = RawClient(mapped[0], cafile=srv.ca)
        c.open_stream()
        c.starttls()
        c.open_stream()
        r = register(c, "mapped", "pw3")
        t.is_(error_type_condition(r), ("wait", "policy-violation"),
              "the same client as ::ffff:127.0.0.1 does not start afresh: <policy-violation/>")
        c.close()
        # the log reaches the harness through a pipe its reader thread drains: wait for the line
        # (a check of its own: a late line is not reported as a wrong account count)
        t.ok(srv.wait_log(r"::ffff:127\.0\.0\.1: registration refused, 2 accounts", start=mark, timeout=30),
             "mod_register logs the refusal for the mapped address, counting the 2 IPv4 accounts")
        out = srv.ctl("user", "list", "localhost").stdout
        t.ok("v4two@localhost" in out and "mapped@localhost" not in out, "and no account was created", out)


def preauth_attempts(t):
    """Registration attempts are bounded, not only successes: each attempt that could create an
    account costs key derivations, so an unauthenticated client may not repeat them without end
    (register.max_attempts_per_address_per_hour). A taken name is refused before any derivation."""
    yaml = ("register:\n  allow_registration: true\n  max_per_address_per_hour: 10\n"
            "  max_attempts_per_address_per_hour: 3\nsasl:\n  iterations: 1000000\n")
    with Server(t, extra_yaml=yaml) as srv:
        srv.adduser("taken@localhost", "pw")
        c, _ = preauth_stream(srv)
        t0 = time.monotonic()
        r = register(c, "slow", "pw1", timeout=120)   # 2 x 1,000,000 iterations: slow under ASan
        t_create = time.monotonic() - t0
        t.ok(r is not None and r.get("type") == "result", "a registration succeeds", el_str(r))
        t0 = time.monotonic()
        r = register(c, "taken", "x")
        t_conflict = time.monotonic() - t0
        t.is_(error_condition(r), "conflict", "a taken name -> <conflict/>")
        t.ok(t_conflict < t_create / 4,
             "the taken name is found before the password's keys are derived (%.3fs vs %.3fs to create)"
             % (t_conflict, t_create))
        r = register(c, "bad@name", "x")
        t.is_(error_condition(r), "not-acceptable", "an invalid name -> <not-acceptable/>")
        c.close()
        c, _ = preauth_stream(srv)
        r = register(c, "fourth", "pw4")
        t.is_(error_type_condition(r), ("wait", "policy-violation"),
              "max_attempts_per_address_per_hour: 3: the fourth attempt in the hour -> <policy-violation/>, "
              "though only one account was created")
        c.close()
        t.ok(not can_login(srv, "fourth", "pw4"), "and no account was created")


def main(t):
    with Server(t) as srv:
        srv.adduser("alice@localhost", "old-pw")
        srv.adduser("bob@localhost", "pw")
        t.run(logged_in, t, srv)
        t.run(preauth_refused, t, srv)
    t.run(preauth_allowed, t)
    t.run(preauth_throttled, t)
    t.run(preauth_needs_module, t)
    t.run(preauth_one_address_key, t)
    t.run(preauth_attempts, t)


if __name__ == "__main__":
    Tap().main(main)
