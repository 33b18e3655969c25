#!/usr/bin/python3
# tests/integration/test_account_deletion.py: CONTRACT.md's `civitasctl user del` removes every piece
# of data stored for an account (roster, offline messages, vCard, private XML, block list), also
# while civitasd runs and holds some of it in memory: an account created again under the same name
# starts empty. Issue 9: deletion (civitasctl while civitasd runs, or XEP-0077 <remove/>) ends the
# account's sessions and cancels its subscriptions with unsubscribe and unsubscribed, for local
# and remote contacts, so that whoever registers the name next gets none of the old contacts'
# presence.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, Server, RawClient, connect_login, q, el_str, NS_CLIENT  # noqa: E402
from harness import federated_pair  # noqa: E402

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


def login(srv, user, domain="localhost", pw=PW, resource="r"):
    c = connect_login(srv, user, pw, resource=resource, domain=domain)
    c.iq("get", "<query xmlns='%s'/>" % NS_ROSTER)     # interested: gets roster pushes
    c.presence()
    return c


def roster_push_for(c, jid, subscription, timeout=15):
    """The next roster push about jid with that subscription (answered), or None."""
    def match(el):
        it = el.find("%s/%s" % (q(NS_ROSTER, "query"), q(NS_ROSTER, "item")))
        return el.tag == q(NS_CLIENT, "iq") and el.get("type") == "set" and it is not None \
            and it.get("jid") == jid and it.get("subscription") == subscription
    el = c.expect(match, timeout)
    if el is not None:
        c.send("<iq type='result' id='%s'/>" % el.get("id"))
    return el


def presence_from(c, bare, type_, timeout=15):
    return c.expect(lambda el: el.tag == q(NS_CLIENT, "presence") and el.get("from", "").split("/")[0] == bare
                    and el.get("type") == type_, timeout)


def subscribe_both(t, x, xjid, y, yjid):
    """x and y subscribe to each other's presence (RFC 6121 §3.1), both see subscription 'both'."""
    x.send("<presence to='%s' type='subscribe'/>" % yjid)
    t.ok(presence_from(y, xjid, "subscribe") is not None, "%s asks %s for its presence" % (xjid, yjid))
    y.send("<presence to='%s' type='subscribed'/>" % xjid)
    y.send("<presence to='%s' type='subscribe'/>" % xjid)
    t.ok(presence_from(x, yjid, "subscribe") is not None, "%s asks back" % yjid)
    x.send("<presence to='%s' type='subscribed'/>" % yjid)
    t.ok(roster_push_for(x, yjid, "both") is not None and roster_push_for(y, xjid, "both") is not None,
         "%s and %s are subscribed both ways" % (xjid, yjid))


def deletion_cancels_subscriptions(t, srv, contact_srv, delete, user, contact, how):
    """user (on srv) and contact (on contact_srv, maybe the same server) have subscriptions both
    ways; delete() removes user's account while both are online."""
    ud, cd = user.split("@")[1], contact.split("@")[1]
    u = login(srv, user.split("@")[0], ud)
    c = login(contact_srv, contact.split("@")[0], cd)
    subscribe_both(t, u, user, c, contact)
    presence_from(c, user, None)
    c.inbox = []
    delete(u)
    err = u.read_stream_error(timeout=15)
    t.is_(err.condition, "not-authorized", "%s: the deleted account's session ends with <not-authorized/>" % how)
    p = presence_from(c, user, "unavailable")
    t.ok(p is not None, "%s: the contact sees the deleted account's resource go offline" % how, c.dump)
    p = presence_from(c, user, "unsubscribe")
    t.ok(p is not None and p.get("from") == user,
         "%s: the contact receives <presence type='unsubscribe'/> from the deleted account (RFC 6121 §3.3)" % how,
         c.dump)
    p = presence_from(c, user, "unsubscribed")
    t.ok(p is not None and p.get("from") == user,
         "%s: the contact receives <presence type='unsubscribed'/> from the deleted account (RFC 6121 §3.2)" % how,
         c.dump)
    it = roster_push_for(c, user, "none")
    t.ok(it is not None, "%s: the contact's roster shows subscription 'none' for the deleted account" % how,
         c.dump)
    # whoever registers the name next is a stranger to the old contacts
    srv.adduser(user, PW + "new")
    n = login(srv, user.split("@")[0], ud, pw=PW + "new", resource="new")
    n.ping_server(ud)
    c.presence(extra="<status>hello old friends</status>")
    c.ping_server(ud, timeout=15)          # the broadcast crossed first, if it went anywhere
    n.ping_server(ud)
    got = [el for el in n.inbox if el.tag == q(NS_CLIENT, "presence") and el.get("from", "").startswith(contact)]
    t.ok(not got, "%s: the account registered again under the name gets none of the old contact's presence" % how,
         lambda: repr([el_str(x) for x in got]))
    n.end()
    c.end()


def remove_in_band(c):
    r = c.iq("set", "<query xmlns='jabber:iq:register'><remove/></query>")
    assert r is not None and r.get("type") == "result", el_str(r)


def nothing_written_after_deletion(t, srv):
    """What the account's own streams send after its deletion and before they are closed (stanzas
    read together with the <remove/>, or sent before the server noticed a civitasctl deletion) is
    not stored for whoever registers the name next; a stream that authenticated but has not bound
    a resource is closed too."""
    NS_PRIVATE, NS_REG = "jabber:iq:private", "jabber:iq:register"
    writes = ("<iq type='set' id='p1'><query xmlns='%s'><note xmlns='urn:x'>LEFTOVER</note></query></iq>"
              "<iq type='set' id='r1'><query xmlns='jabber:iq:roster'><item jid='eve@evil.example'/></query></iq>"
              % NS_PRIVATE)
    for how in ("XEP-0077, stanzas in the same write as <remove/>", "civitasctl, stanzas sent right after"):
        srv.adduser("gina@localhost", PW)
        c = login(srv, "gina")
        if how.startswith("XEP-0077"):
            c.send("<iq type='set' id='rm'><query xmlns='%s'><remove/></query></iq>" % NS_REG + writes)
        else:
            r = srv.ctl("user", "del", "gina@localhost")
            t.ok(r.returncode == 0, "civitasctl user del gina@localhost", r.stderr)
            c.send(writes)
        t.ok(c.wait_closed(10), "%s: the stream ends" % how)
        srv.adduser("gina@localhost", PW + "2")
        n = login(srv, "gina", pw=PW + "2", resource="new")
        p = n.iq("get", "<query xmlns='%s'><note xmlns='urn:x'/></query>" % NS_PRIVATE)
        r = n.iq("get", "<query xmlns='jabber:iq:roster'/>")
        t.ok("LEFTOVER" not in el_str(p) and "eve@evil.example" not in el_str(r),
             "%s: the account registered again under the name inherits nothing written after the deletion" % how,
             lambda: el_str(p) + "\n" + el_str(r))
        n.end()
        r = srv.ctl("user", "del", "gina@localhost")
    srv.adduser("hank@localhost", PW)
    c = RawClient(srv.port("client"), cafile=srv.ca, server_hostname="localhost")
    c.login("hank", PW, bind=False)
    r = srv.ctl("user", "del", "hank@localhost")
    t.ok(r.returncode == 0 and c.wait_closed(10),
         "civitasctl: a stream authenticated as the deleted account but not bound yet is closed too")


def federated(t):
    a, b = federated_pair(t)
    with a, b:
        a.start()
        b.start()
        for u in ("alice", "dave"):
            a.adduser("%s@a.example" % u, PW)
        b.adduser("bob@b.example", PW)

        def ctl_del(c):
            r = a.ctl("user", "del", "alice@a.example")
            t.ok(r.returncode == 0, "civitasctl user del alice@a.example while civitasd runs", r.stderr)
        deletion_cancels_subscriptions(t, a, b, ctl_del, "alice@a.example", "bob@b.example",
                                       "civitasctl, remote contact")
        deletion_cancels_subscriptions(t, a, b, remove_in_band, "dave@a.example", "bob@b.example",
                                       "XEP-0077, remote contact")


def main(t):
    with Server(t) as srv:
        srv.adduser("alice@localhost", PW)
        srv.adduser("bob@localhost", PW)
        fill(t, srv)
        r = srv.ctl("user", "del", "alice@localhost")
        t.ok(r.returncode == 0, "CONTRACT: civitasctl user del succeeds while civitasd runs", r.stderr)
        srv.adduser("alice@localhost", PW + "2")
        check_empty(t, srv)
        for u in ("carol", "erin", "frank"):
            srv.adduser("%s@localhost" % u, PW)

        def ctl_del(c):
            r = srv.ctl("user", "del", "carol@localhost")
            t.ok(r.returncode == 0, "civitasctl user del carol@localhost while civitasd runs", r.stderr)
        t.run(deletion_cancels_subscriptions, t, srv, srv, ctl_del, "carol@localhost", "frank@localhost",
              "civitasctl, local contact")
        t.run(deletion_cancels_subscriptions, t, srv, srv, remove_in_band, "erin@localhost", "frank@localhost",
              "XEP-0077, local contact")
        t.run(nothing_written_after_deletion, t, srv)
    t.run(federated, t)


if __name__ == "__main__":
    Tap().main(main)
