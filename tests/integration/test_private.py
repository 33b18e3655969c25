#!/usr/bin/python3
# tests/integration/test_private.py: XEP-0049 Private XML Storage: store and retrieve fragments by
# (element, namespace), reserved namespaces, other users' data, malformed requests, limits.
import os
import sqlite3
import sys
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, Server, connect_login, q, el_str, error_type_condition, canon  # noqa: E402

PW = "pw-for-private"
NS_P = "jabber:iq:private"
MAX_ITEMS = 4
BOOKMARKS = ("<storage xmlns='storage:bookmarks'><conference jid='tea@conference.localhost' autojoin='true' "
             "name='Mad &amp; Tea'><nick>Alice</nick></conference><url name='x' url='https://example.org/?a=1&amp;b=2'/>"
             "</storage>")
PREFS = "<exodus xmlns='exodus:prefs'><defaultnick>Hamlet</defaultnick></exodus>"


def query(*frags):
    return "<query xmlns='%s'>%s</query>" % (NS_P, "".join(frags))


def fragments(r):
    qq = r.find(q(NS_P, "query")) if r is not None and r.get("type") == "result" else None
    return list(qq) if qq is not None else None


def scenario(t, srv):
    a = connect_login(srv, "alice", PW, resource="p")
    r = a.iq("get", query("<storage xmlns='storage:bookmarks'/>"))
    f = fragments(r)
    t.ok(f is not None and len(f) == 1 and f[0].tag == q("storage:bookmarks", "storage") and len(f[0]) == 0,
         "XEP-0049 §2.3: nothing stored -> the result holds the empty element asked for", el_str(r))

    r = a.iq("set", query(BOOKMARKS))
    t.ok(r is not None and r.get("type") == "result", "XEP-0049 §2.3: storing a fragment -> IQ result", el_str(r))
    r = a.iq("set", query(PREFS), to="alice@localhost")
    t.ok(r is not None and r.get("type") == "result", "XEP-0049: a set to one's own bare JID is accepted", el_str(r))
    r = a.iq("get", query("<storage xmlns='storage:bookmarks'/>"))
    f = fragments(r)
    t.ok(f is not None and len(f) == 1 and canon(f[0]) == canon(ET.fromstring(BOOKMARKS)),
         "XEP-0049 §2.3: the fragment comes back exactly as stored", el_str(r))
    r = a.iq("get", query("<exodus xmlns='exodus:prefs'/>"))
    f = fragments(r)
    t.ok(f is not None and len(f) == 1 and canon(f[0]) == canon(ET.fromstring(PREFS)),
         "XEP-0049: fragments of different namespaces are kept apart", el_str(r))
    r = a.iq("get", query("<other xmlns='storage:bookmarks'/>"))
    f = fragments(r)
    t.ok(f is not None and len(f) == 1 and f[0].tag == q("storage:bookmarks", "other") and len(f[0]) == 0,
         "XEP-0049: fragments are keyed by element name and namespace together", el_str(r))

    new = "<storage xmlns='storage:bookmarks'/>"
    r = a.iq("set", query(new))
    r = a.iq("get", query("<storage xmlns='storage:bookmarks'/>"))
    f = fragments(r)
    t.ok(f is not None and len(f) == 1 and len(f[0]) == 0, "XEP-0049: a set replaces the stored fragment",
         el_str(r))

    # errors
    for ns in ("jabber:iq:roster", "http://jabber.org/protocol/disco#info", "vcard-temp"):
        r = a.iq("set", query("<x xmlns='%s'/>" % ns))
        t.is_(error_type_condition(r)[1], "not-acceptable", "XEP-0049 §2.3: set in the reserved namespace %s -> <not-acceptable/>"
              % ns)
    r = a.iq("get", query("<vCard xmlns='vcard-temp'/>"))
    t.is_(error_type_condition(r)[1], "not-acceptable", "XEP-0049 §2.3: get in a reserved namespace -> <not-acceptable/>")
    r = a.iq("set", query("<inherits/>"))
    t.is_(error_type_condition(r)[1], "not-acceptable",
          "XEP-0049 §2.3: a fragment without a namespace of its own (jabber:iq:private) -> <not-acceptable/>")
    r = a.iq("set", query())
    t.is_(error_type_condition(r)[1], "not-acceptable", "XEP-0049 §2.3: a set without a child element -> <not-acceptable/>")
    r = a.iq("get", query())
    t.is_(error_type_condition(r)[1], "bad-request", "XEP-0049 §3: a get without a child element -> 'Bad Format' (<bad-request/>)")
    r = a.iq("get", query("<a xmlns='urn:one'/>", "<b xmlns='urn:two'/>"))
    t.is_(error_type_condition(r)[1], "bad-request", "XEP-0049 §2.3: a get for more than one namespace -> <bad-request/>")

    b = connect_login(srv, "bob", PW, resource="p")
    r = b.iq("get", query("<exodus xmlns='exodus:prefs'/>"), to="alice@localhost")
    t.is_(error_type_condition(r), ("auth", "forbidden"), "XEP-0049 §2.3: getting another user's private data -> <forbidden/>")
    r = b.iq("set", query("<exodus xmlns='exodus:prefs'><defaultnick>Macbeth</defaultnick></exodus>"),
             to="alice@localhost")
    t.is_(error_type_condition(r), ("auth", "forbidden"), "XEP-0049 §2.3: setting another user's private data -> <forbidden/>")
    r = a.iq("get", query("<exodus xmlns='exodus:prefs'/>"))
    f = fragments(r)
    t.ok(f is not None and canon(f[0]) == canon(ET.fromstring(PREFS)), "XEP-0049 §5: the refused set changed nothing",
         el_str(r))
    r = b.iq("get", query("<exodus xmlns='exodus:prefs'/>"))
    f = fragments(r)
    t.ok(f is not None and len(f[0]) == 0, "XEP-0049: each user has their own private storage", el_str(r))

    # private.max_items: alice has 1 fragment (her bookmarks live in PEP since XEP-0411, mod_pep); 3 more
    # fit, a fifth does not
    r = a.iq("set", query("<a xmlns='urn:x:1'/>", "<b xmlns='urn:x:1'/>", "<c xmlns='urn:x:1'/>"))
    t.ok(r is not None and r.get("type") == "result",
         "XEP-0049 §2.3: a set may hold several elements of one namespace", el_str(r))
    r = a.iq("set", query("<d xmlns='urn:x:1'/>"))
    t.is_(error_type_condition(r)[1], "resource-constraint",
          "private.max_items (%d): one fragment more -> <resource-constraint/>" % MAX_ITEMS)
    r = a.iq("set", query("<a xmlns='urn:x:1'>replaced</a>"))
    t.ok(r is not None and r.get("type") == "result", "replacing an existing fragment at the limit still works",
         el_str(r))
    a.end()
    b.end()
    a = connect_login(srv, "alice", PW, resource="later")
    r = a.iq("get", query("<a xmlns='urn:x:1'/>"))
    f = fragments(r)
    t.ok(f is not None and f[0].text == "replaced", "XEP-0049: private data is kept across sessions", el_str(r))
    a.end()


def old_layout(t, srv):
    """CONTRACT.md: an existing data_dir is upgraded in place. Releases before the module had its own
    table kept fragments in the core's kv table; they are moved into private_xml at the first start."""
    db = sqlite3.connect(os.path.join(srv.data_dir, "civitas.db"))
    with db:
        db.execute("INSERT INTO kv (store, user, domain, key, val) VALUES ('private', 'carol', 'localhost',"
                   " '{storage:bookmarks}storage', ?)", (BOOKMARKS.encode(),))
        db.execute("INSERT INTO kv (store, user, domain, key, val) VALUES ('private', 'carol', 'localhost',"
                   " '{exodus:prefs}exodus', ?)", (PREFS.encode(),))
    db.close()
    srv.start()
    c = connect_login(srv, "carol", PW, resource="p")
    r = c.iq("get", query("<storage xmlns='storage:bookmarks'/>"))
    f = fragments(r)
    t.ok(f is not None and len(f) == 1 and canon(f[0]) == canon(ET.fromstring(BOOKMARKS)),
         "an existing data_dir: fragments stored by an earlier release are still returned", el_str(r))
    db = sqlite3.connect(os.path.join(srv.data_dir, "civitas.db"))
    moved = db.execute("SELECT COUNT(*) FROM private_xml WHERE jid = 'carol@localhost'").fetchone()[0]
    left = db.execute("SELECT COUNT(*) FROM kv WHERE store = 'private'").fetchone()[0]
    db.close()
    t.ok(moved == 2 and left == 0, "the old rows were moved into the module's table (%d moved, %d left)" % (moved, left))
    r = c.iq("set", query("<a xmlns='urn:x:1'/>", "<b xmlns='urn:x:1'/>", "<c xmlns='urn:x:1'/>"))
    t.is_(error_type_condition(r)[1], "resource-constraint",
          "the migrated fragments count towards private.max_items (2 + 3 > %d)" % MAX_ITEMS)
    c.end()


def main(t):
    with Server(t, extra_yaml="private:\n  max_items: %d\n" % MAX_ITEMS) as srv:
        for u in ("alice", "bob"):
            srv.adduser("%s@localhost" % u, PW)
        t.run(scenario, t, srv)
    # civitasctl creates the core schema only, as an older release's database has it
    with Server(t, extra_yaml="private:\n  max_items: %d\n" % MAX_ITEMS, start=False) as srv:
        srv.adduser("carol@localhost", PW)
        t.run(old_layout, t, srv)


Tap().main(main)
