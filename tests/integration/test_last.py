#!/usr/bin/python3
# tests/integration/test_last.py: XEP-0012 Last Activity: server uptime, time since an account's last
# logout with its status text, 0 while online, authorisation (forbidden, also for unknown accounts).
import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Tap, Server, connect_login, q, el_str,  # noqa: E402
                     NS_CLIENT, NS_DISCO_INFO)
from harness import error_type_condition  # noqa: E402

PW = "pw-for-last"
NS_L = "jabber:iq:last"
NS_ROSTER = "jabber:iq:roster"


def last(c, to=None):
    """(reply, seconds as int or None, text) of a jabber:iq:last get."""
    r = c.iq("get", "<query xmlns='%s'/>" % NS_L, to=to)
    qq = r.find(q(NS_L, "query")) if r is not None and r.get("type") == "result" else None
    secs = None
    if qq is not None and (qq.get("seconds") or "").isdigit():
        secs = int(qq.get("seconds"))
    return r, secs, (qq.text or "") if qq is not None else None


def server_uptime(t, srv, started):
    a = connect_login(srv, "alice", PW, resource="up")
    r = a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to="localhost")
    feats = [f.get("var") for f in r.iter(q(NS_DISCO_INFO, "feature"))] if r is not None else []
    t.ok(NS_L in feats, "XEP-0012 §6: the server advertises jabber:iq:last", el_str(r))
    r, secs, text = last(a, "localhost")
    t.ok(secs is not None and 0 <= secs <= time.monotonic() - started + 1 and not text.strip(),
         "XEP-0012 §5: to the server's domain: its uptime in seconds, without text", el_str(r))
    a.end()


def user_activity(t, srv):
    a1 = connect_login(srv, "alice", PW, resource="one")
    a1.presence()
    r, secs, text = last(a1)
    t.ok(secs == 0, "XEP-0012 §3: while the user has an available resource, seconds='0'", el_str(r))
    r, secs, text = last(a1, "alice@localhost")
    t.ok(secs == 0, "XEP-0012 §3: the same with 'to' set to the bare JID", el_str(r))

    a1.send("<presence type='unavailable'><status>Heading Home</status></presence>")
    t.ok(a1.ping_server(), "unavailable presence processed")
    a1.end()
    a2 = connect_login(srv, "alice", PW, resource="two")      # bound, but not available
    r, secs, text = last(a2)
    t.ok(secs is not None and secs <= 5 and text == "Heading Home",
         "XEP-0012 §3: after logout: seconds since then and the status of the last unavailable presence",
         el_str(r))

    # the seconds count from the stored logout time
    db = sqlite3.connect(os.path.join(srv.data_dir, "civitas.db"), timeout=10)
    n = db.execute("UPDATE kv SET val=? WHERE store='last' AND user='alice' AND key='logout'",
                   (("%d\nHeading Home" % (int(time.time()) - 903)).encode(),)).rowcount
    db.commit()
    db.close()
    t.is_(n, 1, "the logout time is stored (kv store 'last')")
    r, secs, text = last(a2)
    t.ok(secs is not None and 903 <= secs <= 910 and text == "Heading Home",
         "XEP-0012 §3: seconds='903' fifteen minutes and three seconds after the logout", el_str(r))

    # a stream that ends while available is a logout without status
    a2.presence()
    t.ok(a2.ping_server(), "a2 available")
    a2.end()
    a3 = connect_login(srv, "alice", PW, resource="three")
    r, secs, text = last(a3)
    t.ok(secs is not None and secs <= 5 and text == "",
         "XEP-0012 §3: a session closed while available counts as a logout, without status text", el_str(r))

    # full JID: the client answers, not the server (§4)
    b = connect_login(srv, "bob", PW, resource="b")
    b.send("<iq type='get' id='full-1' to='%s'><query xmlns='%s'/></iq>" % (a3.jid, NS_L))
    got = a3.expect(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("id") == "full-1")
    t.ok(got is not None and got.get("from") == b.jid,
         "XEP-0012 §4: a query to a full JID is delivered to that resource", el_str(got))
    a3.send("<iq type='result' id='full-1' to='%s'><query xmlns='%s' seconds='7'/></iq>" % (b.jid, NS_L))
    ans = b.expect(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("id") == "full-1")
    t.ok(ans is not None and ans.get("type") == "result", "XEP-0012 §4: and its own answer comes back", el_str(ans))

    # authorisation (§3, §7)
    r, secs, text = last(b, "alice@localhost")
    t.is_(error_type_condition(r), ("auth", "forbidden"),
          "XEP-0012 §3: a requester without a presence subscription gets <forbidden/>")
    r, secs, text = last(b, "nobody@localhost")
    t.is_(error_type_condition(r), ("auth", "forbidden"),
          "XEP-0012 §3: an account that does not exist allows nobody either -> <forbidden/> (existence is not revealed)")
    r, secs, text = last(b)
    t.is_(error_type_condition(r)[1], "service-unavailable",
          "XEP-0012: an account that never logged out has nothing recorded -> <service-unavailable/>")

    # bob subscribes to alice's presence (RFC 6121 §3.1); alice approves: bob has 'to', alice 'from'
    b.send("<presence to='alice@localhost' type='subscribe'/>")
    t.ok(b.ping_server(), "bob's subscription request processed")
    a3.send("<presence to='bob@localhost' type='subscribed'/>")
    t.ok(a3.ping_server(), "alice's approval processed")
    rr = b.iq("get", "<query xmlns='%s'/>" % NS_ROSTER)
    item = rr.find("%s/%s" % (q(NS_ROSTER, "query"), q(NS_ROSTER, "item"))) if rr is not None else None
    t.ok(item is not None and item.get("jid") == "alice@localhost" and item.get("subscription") in ("to", "both"),
         "RFC 6121 §3.1.6: bob's roster shows his subscription to alice", el_str(rr))
    r, secs, text = last(b, "alice@localhost")
    t.ok(secs is not None and secs <= 5 and text == "",
         "XEP-0012 §3: a contact allowed to see the user's presence gets the last activity", el_str(r))
    a3.end()
    b.end()


def main(t):
    started = time.monotonic()
    with Server(t) as srv:
        for u in ("alice", "bob"):
            srv.adduser("%s@localhost" % u, PW)
        t.run(server_uptime, t, srv, started)
        t.run(user_activity, t, srv)


Tap().main(main)
