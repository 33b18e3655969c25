#!/usr/bin/python3
# tests/integration/test_account_deletion.py: CONTRACT.md's `civitasctl user del` removes every piece
# of data stored for an account (roster, offline messages, vCard, private XML, block list), also
# while civitasd runs and holds some of it in memory: an account created again under the same name
# starts empty.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, Server, connect_login, q, el_str, NS_CLIENT  # noqa: E402

PW = "pw-del"
NS_ROSTER = "jabber:iq:roster"


def fill(t, srv):
    a = connect_login(srv, "alice", PW, resource="a")
    r = a.iq("set", "<query xmlns='%s'><item jid='bob@localhost' name='Bob'/></query>" % NS_ROSTER)
    t.ok(r is not None and r.get("type") == "result", "alice has a roster item", el_str(r))
    r = a.iq("set", "<vCard xmlns='vcard-temp'><FN>Alice A.</FN></vCard>")
    t.ok(r is not None and r.get("type") == "result", "alice has a vCard", el_str(r))
    r = a.iq("set", "<query xmlns='jabber:iq:private'><note xmlns='urn:example:notes'>secret note</note></query>")
    t.ok(r is not None and r.get("type") == "result", "alice has private XML", el_str(r))
    r = a.iq("set", "<block xmlns='urn:xmpp:blocking'><item jid='mallory@localhost'/></block>")
    t.ok(r is not None and r.get("type") == "result", "alice has a block list", el_str(r))
    a.iq("get", "<query xmlns='%s'/>" % NS_ROSTER)         # the server now holds her roster in memory
    a.end()
    b = connect_login(srv, "bob", PW, resource="b")
    b.message("alice@localhost", "stored for alice")
    b.ping_server()
    b.end()


def check_empty(t, srv):
    a = connect_login(srv, "alice", PW + "2", resource="new")
    r = a.iq("get", "<query xmlns='%s'/>" % NS_ROSTER)
    items = r.findall("%s/%s" % (q(NS_ROSTER, "query"), q(NS_ROSTER, "item"))) if r is not None else None
    t.ok(items == [], "the re-created account's roster is empty", el_str(r))
    r = a.iq("get", "<vCard xmlns='vcard-temp'/>", to="alice@localhost")
    t.ok(r is not None and "Alice A." not in el_str(r), "the vCard is gone", el_str(r))
    r = a.iq("get", "<query xmlns='jabber:iq:private'><note xmlns='urn:example:notes'/></query>")
    t.ok(r is not None and "secret note" not in el_str(r), "the private XML is gone", el_str(r))
    r = a.iq("get", "<blocklist xmlns='urn:xmpp:blocking'/>")
    t.ok(r is not None and "mallory" not in el_str(r), "the block list is gone", el_str(r))
    a.presence()
    a.ping_server()
    got = [el.findtext(q(NS_CLIENT, "body")) for el in a.messages()]
    t.ok("stored for alice" not in got, "the offline messages are gone", repr(got))
    a.end()


def main(t):
    with Server(t) as srv:
        srv.adduser("alice@localhost", PW)
        srv.adduser("bob@localhost", PW)
        fill(t, srv)
        r = srv.ctl("user", "del", "alice@localhost")
        t.ok(r.returncode == 0, "CONTRACT: civitasctl user del succeeds while civitasd runs", r.stderr)
        srv.adduser("alice@localhost", PW + "2")
        check_empty(t, srv)


if __name__ == "__main__":
    Tap().main(main)
