#!/usr/bin/python3
# tests/integration/test_muc.py: XEP-0045 Multi-User Chat (mod_muc) with raw stanzas: the service found
# in the host's disco#items, room creation (locked until configured, instant rooms, 201), the
# muc#roomconfig form, presence and its status codes, nick conflicts and changes, one nick on several
# devices, groupchat with XEP-0359 stanza-id and XEP-0421 occupant-id, private messages, subject,
# history on join, roles and affiliations (kick, ban, voice, member lists), room disco, invitations
# (XEP-0045 mediated, XEP-0249 direct), XEP-0410 self-ping, ghosts removed when a session ends,
# destroy with an alternate venue, persistence across a restart, limits, and an occupant from a
# second civitas server over federation.
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Tap, Server, Certs, connect_login, q, el_str, error_condition, free_port,  # noqa: E402
                     NS_CLIENT)

PW = "pw-for-muc"
SVC = "conference.localhost"
NS_MUC = "http://jabber.org/protocol/muc"
NS_USER = NS_MUC + "#user"
NS_ADMIN = NS_MUC + "#admin"
NS_OWNER = NS_MUC + "#owner"
NS_X = "jabber:x:data"
NS_INFO = "http://jabber.org/protocol/disco#info"
NS_ITEMS = "http://jabber.org/protocol/disco#items"
NS_SID = "urn:xmpp:sid:0"
NS_OID = "urn:xmpp:occupant-id:0"
NS_DELAY = "urn:xmpp:delay"
NS_PING = "urn:xmpp:ping"
YAML = "muc:\n  max_rooms_per_user: 8\n  max_history: 5\n"


def is_presence(el, frm=None, type_=None):
    return (el.tag == q(NS_CLIENT, "presence") and (frm is None or el.get("from") == frm)
            and (type_ is None or el.get("type") == type_))


def codes(p):
    x = p.find(q(NS_USER, "x")) if p is not None else None
    return sorted(int(s.get("code")) for s in x.findall(q(NS_USER, "status"))) if x is not None else []


def item(p):
    x = p.find(q(NS_USER, "x")) if p is not None else None
    return x.find(q(NS_USER, "item")) if x is not None else None


def join(c, room, nick, x=True, extra="", expect_ok=True, timeout=15):
    """Enter room as nick. Returns (self presence or error presence, [others' presence], subject message)."""
    to = "%s/%s" % (room, nick)
    body = "<x xmlns='%s'>%s</x>" % (NS_MUC, extra) if x else extra
    c.send("<presence to='%s'>%s</presence>" % (to, body))
    others = []
    while True:
        p = c.expect(lambda el: el.tag == q(NS_CLIENT, "presence") and el.get("from", "").startswith(room + "/"),
                     timeout=timeout)
        if p is None or p.get("type") == "error":
            return p, others, None
        if 110 in codes(p):
            break
        others.append(p)
    subj = c.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.find(q(NS_CLIENT, "subject")) is not None
                    and el.get("from", "").startswith(room), timeout=timeout)
    return p, others, subj


def submit(c, room, fields=None):
    f = "".join("<field var='%s'><value>%s</value></field>" % (k, v) for k, v in (fields or {}).items())
    form = ("<x xmlns='%s' type='submit'><field var='FORM_TYPE'><value>%s#roomconfig</value></field>%s</x>"
            % (NS_X, NS_MUC, f)) if fields is not None else "<x xmlns='%s' type='submit'/>" % NS_X
    return c.iq("set", "<query xmlns='%s'>%s</query>" % (NS_OWNER, form), to=room)


def create(c, room, nick, fields=None):
    p, _, _ = join(c, room, nick)
    r = submit(c, room, fields)
    return p, r


def groupchat(c, room, body, extra=""):
    c.send("<message to='%s' type='groupchat'><body>%s</body>%s</message>" % (room, body, extra))


def gc_from(c, frm, body, timeout=15):
    return c.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("from") == frm
                    and el.findtext(q(NS_CLIENT, "body")) == body, timeout=timeout)


def features(r):
    qq = r.find(q(NS_INFO, "query")) if r is not None else None
    return [f.get("var") for f in qq.findall(q(NS_INFO, "feature"))] if qq is not None else []


def form_values(r, ns, tag="query"):
    qq = r.find(q(ns, tag)) if r is not None else None
    x = qq.find(q(NS_X, "x")) if qq is not None else None
    return {f.get("var"): f.findtext(q(NS_X, "value")) for f in x.findall(q(NS_X, "field"))} if x is not None else {}


def admin(c, room, items):
    return c.iq("set", "<query xmlns='%s'>%s</query>" % (NS_ADMIN, items), to=room)


def leave(c, room, nick):
    c.send("<presence to='%s/%s' type='unavailable'/>" % (room, nick))
    return c.expect(lambda el: is_presence(el, "%s/%s" % (room, nick), "unavailable"), timeout=15)


def creation(t, srv, alice, bob):
    r = alice.iq("get", "<query xmlns='%s'/>" % NS_ITEMS, to="localhost")
    jids = [i.get("jid") for i in r.iter(q(NS_ITEMS, "item"))] if r is not None else []
    t.ok(SVC in jids, "the host's disco#items lists the MUC service", lambda: el_str(r))
    r = alice.iq("get", "<query xmlns='%s'/>" % NS_INFO, to=SVC)
    ids = [(i.get("category"), i.get("type")) for i in r.iter(q(NS_INFO, "identity"))] if r is not None else []
    t.ok(("conference", "text") in ids and NS_MUC in features(r), "the service: identity conference/text, muc feature",
         lambda: el_str(r))

    room = "lobby@" + SVC
    p, others, subj = join(alice, room, "Alice")
    t.ok(p is not None and p.get("type") is None and codes(p) == [110, 170, 201],
         "creating a room: self-presence with 110 and 201 (170: the room is archived, MUC-MAM)", lambda: el_str(p))
    it = item(p)
    t.ok(it is not None and it.get("affiliation") == "owner" and it.get("role") == "moderator",
         "the creator is owner and moderator", lambda: el_str(p))
    t.ok(p.find(q(NS_OID, "occupant-id")) is not None, "presence carries an XEP-0421 occupant-id", lambda: el_str(p))
    t.ok(subj is not None, "the join ends with the subject message", lambda: alice.dump())
    # locked (reserved) room: nobody else may enter until it is configured
    e, _, _ = join(bob, room, "Bob")
    t.ok(e is not None and e.get("type") == "error" and error_condition(e) == "item-not-found",
         "a locked room refuses others with item-not-found", lambda: el_str(e))
    r = alice.iq("get", "<query xmlns='%s'/>" % NS_OWNER, to=room)
    vals = form_values(r, NS_OWNER)
    for var in ("muc#roomconfig_persistentroom", "muc#roomconfig_membersonly", "muc#roomconfig_moderatedroom",
                "muc#roomconfig_passwordprotectedroom", "muc#roomconfig_roomsecret", "muc#roomconfig_whois",
                "muc#roomconfig_maxusers", "muc#maxhistoryfetch", "muc#roomconfig_publicroom",
                "muc#roomconfig_allowinvites", "muc#roomconfig_changesubject", "muc#roomconfig_roomname"):
        t.ok(var in vals, "the config form has %s" % var, lambda: el_str(r))
    r = bob.iq("get", "<query xmlns='%s'/>" % NS_OWNER, to=room)
    t.is_(error_condition(r), "forbidden", "the config form is the owner's only")
    r = submit(alice, room)
    t.ok(r is not None and r.get("type") == "result", "an empty submitted form makes an instant room", lambda: el_str(r))
    p, others, subj = join(bob, room, "Bob")
    t.ok(p is not None and codes(p) == [110, 170] and [o.get("from") for o in others] == [room + "/Alice"],
         "after configuration others enter; they first get the occupants' presence", lambda: el_str(p))
    t.ok(item(others[0]) is not None and item(others[0]).get("jid") is None if others else False,
         "semi-anonymous: a participant does not see real JIDs", lambda: el_str(others[0]) if others else "")
    np = alice.expect(lambda el: is_presence(el, room + "/Bob"), timeout=10)
    t.ok(np is not None and item(np) is not None and item(np).get("jid") == bob.jid,
         "the moderator sees the newcomer's real JID", lambda: el_str(np))
    # nickname conflict
    carol = connect_login(srv, "carol", PW, resource="c")
    carol.presence()
    e, _, _ = join(carol, room, "Bob")
    t.ok(e is not None and e.get("type") == "error" and error_condition(e) == "conflict",
         "a nick taken by another user: conflict (409)", lambda: el_str(e))
    # no nick at all
    carol.send("<presence to='%s'><x xmlns='%s'/></presence>" % (room, NS_MUC))
    e = carol.expect(lambda el: is_presence(el, type_="error"), timeout=10)
    t.is_(error_condition(e), "jid-malformed", "presence to the bare room JID: jid-malformed")
    # instant room without <x/>: no lock (old clients)
    p, _, _ = join(carol, "noxroom@" + SVC, "Carol", x=False)
    t.ok(p is not None and 201 in codes(p), "a room created without <x/> is created (201)", lambda: el_str(p))
    p2, _, _ = join(bob, "noxroom@" + SVC, "Bob")
    t.ok(p2 is not None and p2.get("type") is None, "... and is not locked", lambda: el_str(p2))
    leave(bob, "noxroom@" + SVC, "Bob")
    leave(carol, "noxroom@" + SVC, "Carol")
    # cancelling the initial configuration destroys a locked room
    join(carol, "cancelled@" + SVC, "Carol")
    r = carol.iq("set", "<query xmlns='%s'><x xmlns='%s' type='cancel'/></query>" % (NS_OWNER, NS_X),
                 to="cancelled@" + SVC)
    gone = carol.expect(lambda el: is_presence(el, "cancelled@%s/Carol" % SVC, "unavailable"), timeout=10)
    r = carol.iq("get", "<query xmlns='%s'/>" % NS_INFO, to="cancelled@" + SVC)
    t.ok(gone is not None and error_condition(r) == "item-not-found", "cancelling the initial form destroys the room",
         lambda: el_str(r))
    carol.end()


def presence_flow(t, srv, alice, bob):
    room = "lobby@" + SVC
    # multi-session: bob's second device under the same nick
    bob2 = connect_login(srv, "bob", PW, resource="phone")
    bob2.presence()
    p, others, _ = join(bob2, room, "Bob")
    t.ok(p is not None and p.get("type") is None and 110 in codes(p),
         "a second session of the same user enters under the same nick", lambda: el_str(p))
    t.ok(sorted(o.get("from") for o in others) == [room + "/Alice"], "... and gets the other occupants' presence",
         lambda: repr([el_str(o) for o in others]))
    groupchat(alice, room, "to both devices")
    m1, m2 = gc_from(bob, room + "/Alice", "to both devices"), gc_from(bob2, room + "/Alice", "to both devices")
    t.ok(m1 is not None and m2 is not None, "a groupchat message reaches both sessions of the nick")
    u = leave(bob2, room, "Bob")
    t.ok(u is not None and 110 in codes(u), "the second session leaves (self 110)", lambda: el_str(u))
    groupchat(alice, room, "still here?")
    t.ok(gc_from(bob, room + "/Alice", "still here?") is not None, "the first session stays in the room")
    t.ok(not [el for el in alice.inbox if is_presence(el, room + "/Bob", "unavailable")],
         "the others see no one leave while a session of the nick remains")
    bob2.end()
    # status change is broadcast
    bob.send("<presence to='%s/Bob'><show>away</show></presence>" % room)
    p = alice.expect(lambda el: is_presence(el, room + "/Bob") and el.findtext(q(NS_CLIENT, "show")) == "away", timeout=10)
    t.ok(p is not None, "a status change reaches the others", lambda: alice.dump())
    # nick change (303 / 110)
    bob.send("<presence to='%s/Robert'/>" % room)
    u = alice.expect(lambda el: is_presence(el, room + "/Bob", "unavailable"), timeout=10)
    t.ok(u is not None and codes(u) == [303] and item(u).get("nick") == "Robert",
         "nick change: unavailable from the old nick with 303 and the new nick", lambda: el_str(u))
    a = alice.expect(lambda el: is_presence(el, room + "/Robert"), timeout=10)
    t.ok(a is not None and a.get("type") is None, "nick change: available from the new nick", lambda: el_str(a))
    su = bob.expect(lambda el: is_presence(el, room + "/Bob", "unavailable"), timeout=10)
    t.ok(su is not None and codes(su) == [110, 303], "nick change: the user's own copy has 110 and 303", lambda: el_str(su))
    bob.send("<presence to='%s/Alice'/>" % room)
    e = bob.expect(lambda el: is_presence(el, type_="error"), timeout=10)
    t.is_(error_condition(e), "conflict", "changing to a nick in use: conflict")
    bob.send("<presence to='%s/Bob'/>" % room)
    bob.expect(lambda el: is_presence(el, room + "/Bob") and el.get("type") is None, timeout=10)
    alice.expect(lambda el: is_presence(el, room + "/Bob") and el.get("type") is None, timeout=10)


def messages(t, srv, alice, bob):
    room = "lobby@" + SVC
    groupchat(alice, room, "hello room", "<stanza-id xmlns='%s' id='forged' by='%s'/>" % (NS_SID, room))
    mb = gc_from(bob, room + "/Alice", "hello room")
    ma = gc_from(alice, room + "/Alice", "hello room")
    t.ok(mb is not None and ma is not None, "groupchat reaches every occupant, the sender included")
    sids = [s for s in mb.findall(q(NS_SID, "stanza-id"))] if mb is not None else []
    t.ok(len(sids) == 1 and sids[0].get("by") == room and sids[0].get("id") != "forged",
         "XEP-0359: one stanza-id by the room (a forged one is removed)", lambda: el_str(mb))
    oid = mb.find(q(NS_OID, "occupant-id")) if mb is not None else None
    t.ok(oid is not None and oid.get("id"), "XEP-0421: the message carries the sender's occupant-id", lambda: el_str(mb))
    # the occupant id is stable: same as in presence
    carol = connect_login(srv, "carol", PW, resource="c")
    carol.presence()
    p, others, _ = join(carol, room, "Carol")
    ap = [o for o in others if o.get("from") == room + "/Alice"]
    t.ok(ap and ap[0].find(q(NS_OID, "occupant-id")).get("id") == oid.get("id"),
         "occupant-id in presence equals the one in messages", lambda: el_str(ap[0]) if ap else "")
    hist = [el for el in carol.inbox if el.tag == q(NS_CLIENT, "message") and el.find(q(NS_DELAY, "delay")) is not None]
    t.ok(any(h.findtext(q(NS_CLIENT, "body")) == "hello room" for h in hist),
         "history on join: earlier messages with <delay/>", lambda: carol.dump())
    t.ok(all(h.find(q(NS_DELAY, "delay")).get("from") == room for h in hist), "history <delay/> from the room")
    leave(carol, room, "Carol")
    for i in range(7):
        groupchat(alice, room, "m%d" % i)
        gc_from(alice, room + "/Alice", "m%d" % i)
    carol.inbox.clear()
    p, _, _ = join(carol, room, "Carol", extra="<history maxstanzas='2'/>")
    hist = [el.findtext(q(NS_CLIENT, "body")) for el in carol.inbox
            if el.tag == q(NS_CLIENT, "message") and el.find(q(NS_DELAY, "delay")) is not None]
    t.is_(hist, ["m5", "m6"], "history maxstanzas='2': the last two messages, oldest first")
    leave(carol, room, "Carol")
    carol.inbox.clear()
    p, _, _ = join(carol, room, "Carol", extra="<history maxstanzas='0'/>")
    hist = [el for el in carol.inbox if el.tag == q(NS_CLIENT, "message") and el.find(q(NS_DELAY, "delay")) is not None]
    t.is_(len(hist), 0, "history maxstanzas='0': none")
    leave(carol, room, "Carol")
    carol.inbox.clear()
    p, _, _ = join(carol, room, "Carol", extra="<history since='2000-01-01T00:00:00Z'/>")
    hist = [el for el in carol.inbox if el.tag == q(NS_CLIENT, "message") and el.find(q(NS_DELAY, "delay")) is not None]
    t.is_(len(hist), 5, "history since long ago: capped by muc.max_history (5)")
    leave(carol, room, "Carol")
    carol.inbox.clear()
    p, _, _ = join(carol, room, "Carol", extra="<history since='2999-01-01T00:00:00Z'/>")
    hist = [el for el in carol.inbox if el.tag == q(NS_CLIENT, "message") and el.find(q(NS_DELAY, "delay")) is not None]
    t.is_(len(hist), 0, "history since a future time: none")
    # MUC-MAM (XEP-0313 on the room JID) over the same archive
    def mam(c, rsm="", form="", qid="q1"):
        x = ("<x xmlns='%s' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>%s</x>"
             % (NS_X, form)) if form else ""
        iid = c.next_id("mam")
        c.send("<iq type='set' id='%s' to='%s'><query xmlns='urn:xmpp:mam:2' queryid='%s'>%s%s</query></iq>"
               % (iid, room, qid, x, rsm))
        fin = c.expect(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("id") == iid, timeout=10)
        res = []
        while True:
            m = c.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.find(q("urn:xmpp:mam:2", "result")) is not None,
                         timeout=0.1)
            if m is None:
                break
            r_ = m.find(q("urn:xmpp:mam:2", "result"))
            fm = r_.find(q("urn:xmpp:forward:0", "forwarded")).find(q(NS_CLIENT, "message"))
            res.append((r_.get("id"), fm.findtext(q(NS_CLIENT, "body")), r_.get("queryid"), m.get("from")))
        return fin, res
    t.ok("urn:xmpp:mam:2" in features(carol.iq("get", "<query xmlns='%s'/>" % NS_INFO, to=room)),
         "the room advertises urn:xmpp:mam:2")
    fin, res = mam(carol, "<set xmlns='http://jabber.org/protocol/rsm'><max>2</max></set>")
    f = fin.find(q("urn:xmpp:mam:2", "fin")) if fin is not None else None
    t.ok(fin is not None and fin.get("type") == "result" and [b for _, b, _, _ in res] == ["m2", "m3"]
         and all(qi == "q1" and fr == room for _, _, qi, fr in res) and f.get("complete") is None
         and f.findtext("{http://jabber.org/protocol/rsm}set/{http://jabber.org/protocol/rsm}count") == "5",
         "MUC-MAM: the first page, oldest first, from the room with the queryid; count 5; not complete",
         lambda: el_str(fin) + repr(res))
    fin2, res2 = mam(carol, "<set xmlns='http://jabber.org/protocol/rsm'><max>10</max><after>%s</after></set>"
                     % (res[-1][0] if res else "x"))
    f2 = fin2.find(q("urn:xmpp:mam:2", "fin")) if fin2 is not None else None
    t.ok([b for _, b, _, _ in res2] == ["m4", "m5", "m6"] and f2 is not None and f2.get("complete") == "true",
         "MUC-MAM: RSM after the last id gives the rest; complete", lambda: el_str(fin2) + repr(res2))
    fin3, res3 = mam(carol, "<set xmlns='http://jabber.org/protocol/rsm'><max>2</max><before/></set>")
    t.is_([b for _, b, _, _ in res3], ["m5", "m6"], "MUC-MAM: RSM <before/>: the last page, in chronological order")
    t.ok(res and mb is not None and all(len(i) > 8 for i, _, _, _ in res), "MUC-MAM result ids are the stanza-ids")
    fin4, res4 = mam(carol, "<set xmlns='http://jabber.org/protocol/rsm'><after>nonexistent</after></set>")
    t.is_(error_condition(fin4), "item-not-found", "MUC-MAM: an unknown RSM id: item-not-found")
    fin5, res5 = mam(carol, form="<field var='start'><value>2999-01-01T00:00:00Z</value></field>")
    t.ok(fin5 is not None and fin5.get("type") == "result" and res5 == [], "MUC-MAM: start in the future: nothing",
         lambda: el_str(fin5))
    # private messages
    carol.send("<message to='%s/Alice' type='chat'><body>psst</body></message>" % room)
    pm = alice.expect_message("psst", timeout=10)
    t.ok(pm is not None and pm.get("from") == room + "/Carol" and pm.find(q(NS_USER, "x")) is not None,
         "a private message arrives from the sender's occupant JID with muc#user <x/>", lambda: el_str(pm))
    carol.send("<message to='%s/Nobody' type='chat'><body>lost</body></message>" % room)
    e = carol.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("type") == "error", timeout=10)
    t.is_(error_condition(e), "item-not-found", "a private message to an absent nick: item-not-found")
    carol.send("<message to='%s/Alice' type='groupchat'><body>wrong</body></message>" % room)
    e = carol.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("type") == "error", timeout=10)
    t.is_(error_condition(e), "bad-request", "groupchat to an occupant JID: bad-request")
    # IQs between occupants are relayed (vcard-temp to the bare JID, where the server answers)
    r = carol.iq("get", "<vCard xmlns='vcard-temp'/>", to=room + "/Alice", id="vc1")
    t.ok(r is not None and r.get("from") == room + "/Alice" and r.get("id") == "vc1",
         "a vCard request to an occupant JID is answered through the room, from that occupant JID", lambda: el_str(r))
    carol.send("<iq type='get' id='ver1' to='%s/Alice'><query xmlns='jabber:iq:version'/></iq>" % room)
    fw = alice.expect(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("type") == "get"
                      and el.find(q("jabber:iq:version", "query")) is not None, timeout=10)
    t.ok(fw is not None and fw.get("from") == room + "/Carol" and fw.get("id") != "ver1",
         "an IQ to an occupant JID reaches the occupant from the asker's occupant JID", lambda: el_str(fw))
    if fw is not None:
        alice.send("<iq type='result' id='%s' to='%s'><query xmlns='jabber:iq:version'><name>a</name></query></iq>"
                   % (fw.get("id"), fw.get("from")))
    r = carol.expect(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("id") == "ver1", timeout=10)
    t.ok(r is not None and r.get("type") == "result" and r.get("from") == room + "/Alice"
         and r.find(q("jabber:iq:version", "query")) is not None, "... and its answer comes back with the asker's id",
         lambda: el_str(r))
    # subject: participants may not change it by default, moderators may
    carol.send("<message to='%s' type='groupchat'><subject>mine</subject></message>" % room)
    e = carol.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("type") == "error", timeout=10)
    t.is_(error_condition(e), "forbidden", "a participant may not change the subject by default")
    alice.send("<message to='%s' type='groupchat'><subject>Agenda</subject></message>" % room)
    s = carol.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.findtext(q(NS_CLIENT, "subject")) == "Agenda",
                     timeout=10)
    t.ok(s is not None and s.get("from") == room + "/Alice", "the moderator's subject reaches the occupants",
         lambda: carol.dump())
    leave(carol, room, "Carol")
    # only occupants may send
    groupchat(carol, room, "outsider")
    e = carol.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("type") == "error", timeout=10)
    t.is_(error_condition(e), "not-acceptable", "groupchat from a non-occupant: not-acceptable")
    carol.inbox.clear()
    p, _, subj = join(carol, room, "Carol", extra="<history maxstanzas='0'/>")
    t.ok(subj is not None and subj.findtext(q(NS_CLIENT, "subject")) == "Agenda", "the subject is sent on join",
         lambda: el_str(subj))
    leave(carol, room, "Carol")
    carol.end()


def roles(t, srv, alice, bob):
    room = "staff@" + SVC
    create(alice, room, "Alice", {"muc#roomconfig_whois": "anyone", "muc#roomconfig_moderatedroom": "1"})
    carol = connect_login(srv, "carol", PW, resource="c")
    carol.presence()
    p, _, _ = join(bob, room, "Bob")
    t.ok(p is not None and codes(p) == [100, 110, 170] and item(p).get("role") == "visitor",
         "non-anonymous room: 100 on join; moderated: a newcomer without affiliation is a visitor", lambda: el_str(p))
    groupchat(bob, room, "may I?")
    e = bob.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("type") == "error", timeout=10)
    t.is_(error_condition(e), "forbidden", "a visitor may not speak in a moderated room")
    r = admin(alice, room, "<item nick='Bob' role='participant'/>")
    v = bob.expect(lambda el: is_presence(el, room + "/Bob") and item(el) is not None
                   and item(el).get("role") == "participant", timeout=10)
    t.ok(r is not None and r.get("type") == "result" and v is not None, "granting voice: the new role is broadcast",
         lambda: el_str(r))
    groupchat(bob, room, "thanks")
    t.ok(gc_from(alice, room + "/Bob", "thanks") is not None, "with voice the participant speaks")
    r = admin(bob, room, "<item nick='Alice' role='none'/>")
    t.is_(error_condition(r), "forbidden", "a participant may not kick")
    join(carol, room, "Carol")
    r = admin(alice, room, "<item nick='Carol' role='none'><reason>spam</reason></item>")
    k = carol.expect(lambda el: is_presence(el, room + "/Carol", "unavailable"), timeout=10)
    kb = bob.expect(lambda el: is_presence(el, room + "/Carol", "unavailable"), timeout=10)
    t.ok(k is not None and codes(k) == [110, 307] and item(k).findtext(q(NS_USER, "reason")) == "spam",
         "kick: the victim gets 307 and 110 with the reason", lambda: el_str(k))
    t.ok(kb is not None and codes(kb) == [307], "kick: the others get 307", lambda: el_str(kb))
    # ban
    r = admin(alice, room, "<item jid='carol@localhost' affiliation='outcast'/>")
    t.ok(r is not None and r.get("type") == "result", "banning a user", lambda: el_str(r))
    e, _, _ = join(carol, room, "Carol")
    t.ok(e is not None and error_condition(e) == "forbidden", "a banned user cannot enter (forbidden)", lambda: el_str(e))
    admin(alice, room, "<item jid='carol@localhost' affiliation='none'/>")
    join(carol, room, "Carol")
    r = admin(alice, room, "<item jid='carol@localhost' affiliation='outcast'/>")
    b = carol.expect(lambda el: is_presence(el, room + "/Carol", "unavailable"), timeout=10)
    t.ok(b is not None and 301 in codes(b), "banning an occupant removes it with 301", lambda: el_str(b))
    admin(alice, room, "<item jid='carol@localhost' affiliation='none'/>")
    # members-only, member list, 321/322
    r = admin(alice, room, "<item jid='bob@localhost' affiliation='member'/>")
    t.ok(r is not None and r.get("type") == "result", "making bob a member", lambda: el_str(r))
    join(carol, room, "Carol")
    r = submit(alice, room, {"muc#roomconfig_membersonly": "1", "muc#roomconfig_whois": "anyone",
                             "muc#roomconfig_moderatedroom": "1"})
    k = carol.expect(lambda el: is_presence(el, room + "/Carol", "unavailable"), timeout=10)
    t.ok(k is not None and 322 in codes(k), "a room becoming members-only removes non-members with 322", lambda: el_str(k))
    st = bob.expect(lambda el: el.tag == q(NS_CLIENT, "message") and 104 in codes(el), timeout=10)
    t.ok(st is not None, "a configuration change is announced with 104", lambda: bob.dump())
    e, _, _ = join(carol, room, "Carol")
    t.ok(e is not None and error_condition(e) == "registration-required", "a non-member cannot enter (407)",
         lambda: el_str(e))
    r = bob.iq("get", "<query xmlns='%s'><item affiliation='member'/></query>" % NS_ADMIN, to=room)
    mem = [i.get("jid") for i in r.iter(q(NS_ADMIN, "item"))] if r is not None else []
    t.ok(r is not None and r.get("type") == "result" and mem == ["bob@localhost"],
         "members-only non-anonymous room: a member reads the member list (OMEMO)", lambda: el_str(r))
    r = bob.iq("get", "<query xmlns='%s'><item affiliation='owner'/></query>" % NS_ADMIN, to=room)
    t.ok(r is not None and [i.get("jid") for i in r.iter(q(NS_ADMIN, "item"))] == ["alice@localhost"],
         "... and the owner list", lambda: el_str(r))
    r = bob.iq("get", "<query xmlns='%s'><item affiliation='outcast'/></query>" % NS_ADMIN, to=room)
    t.is_(error_condition(r), "forbidden", "... but not the ban list")
    r = carol.iq("get", "<query xmlns='%s'><item affiliation='member'/></query>" % NS_ADMIN, to=room)
    t.is_(error_condition(r), "forbidden", "a non-member does not read the member list")
    r = alice.iq("get", "<query xmlns='%s'/>" % NS_INFO, to=room)
    f = features(r)
    t.ok(all(x in f for x in ("muc_nonanonymous", "muc_membersonly", "muc_moderated", "muc_temporary", NS_MUC,
                               NS_OID, NS_SID)),
         "room disco#info: muc_nonanonymous, muc_membersonly, ... and the muc feature", lambda: repr(f))
    info = form_values(r, NS_INFO)
    t.ok(info.get("FORM_TYPE") == NS_MUC + "#roominfo" and info.get("muc#roominfo_occupants") == "2",
         "room disco#info: the muc#roominfo form", lambda: el_str(r))
    r = admin(alice, room, "<item jid='bob@localhost' affiliation='none'/>")
    k = bob.expect(lambda el: is_presence(el, room + "/Bob", "unavailable"), timeout=10)
    t.ok(k is not None and 321 in codes(k), "losing membership in a members-only room: 321", lambda: el_str(k))
    # the last owner stays
    r = admin(alice, room, "<item jid='alice@localhost' affiliation='admin'/>")
    t.is_(error_condition(r), "conflict", "the last owner cannot give up ownership")
    # service disco#items: public rooms only
    r = carol.iq("get", "<query xmlns='%s'/>" % NS_ITEMS, to=SVC)
    rooms = [i.get("jid") for i in r.iter(q(NS_ITEMS, "item"))] if r is not None else []
    t.ok("lobby@" + SVC in rooms and room in rooms, "the service's disco#items lists public rooms", lambda: el_str(r))
    submit(alice, room, {"muc#roomconfig_publicroom": "0"})
    r = carol.iq("get", "<query xmlns='%s'/>" % NS_ITEMS, to=SVC)
    rooms = [i.get("jid") for i in r.iter(q(NS_ITEMS, "item"))] if r is not None else []
    t.ok(room not in rooms, "a hidden room is not listed", lambda: el_str(r))
    # destroy with an alternate venue
    join(bob, "lobby@" + SVC, "Bob")  # not in staff anymore; destroy hits alice only
    r = alice.iq("set", "<query xmlns='%s'><destroy jid='lobby@%s'><reason>moved</reason></destroy></query>"
                 % (NS_OWNER, SVC), to=room)
    d = alice.expect(lambda el: is_presence(el, room + "/Alice", "unavailable"), timeout=10)
    dx = d.find(q(NS_USER, "x")) if d is not None else None
    de = dx.find(q(NS_USER, "destroy")) if dx is not None else None
    t.ok(r is not None and r.get("type") == "result" and de is not None and de.get("jid") == "lobby@" + SVC
         and de.findtext(q(NS_USER, "reason")) == "moved", "destroy: occupants get <destroy/> with the alternate venue",
         lambda: el_str(d))
    r = alice.iq("get", "<query xmlns='%s'/>" % NS_INFO, to=room)
    t.is_(error_condition(r), "item-not-found", "a destroyed room is gone")
    carol.end()


def invites_and_ghosts(t, srv, alice, bob):
    room = "lobby@" + SVC
    dave = connect_login(srv, "dave", PW, resource="d")
    dave.presence()
    # mediated invitation
    alice.send("<message to='%s'><x xmlns='%s'><invite to='dave@localhost'><reason>join us</reason></invite></x></message>"
               % (room, NS_USER))
    m = dave.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.find(q(NS_USER, "x")) is not None, timeout=10)
    inv = m.find(q(NS_USER, "x")).find(q(NS_USER, "invite")) if m is not None else None
    t.ok(m is not None and m.get("from") == room and inv is not None and inv.get("from") == "alice@localhost"
         and inv.findtext(q(NS_USER, "reason")) == "join us", "mediated invitation from the room, naming the inviter",
         lambda: el_str(m))
    # direct invitation (XEP-0249): passes the server user to user
    alice.send("<message to='dave@localhost'><x xmlns='jabber:x:conference' jid='%s' reason='come'/></message>" % room)
    m = dave.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.find(q("jabber:x:conference", "x")) is not None,
                    timeout=10)
    t.ok(m is not None and m.find(q("jabber:x:conference", "x")).get("jid") == room, "XEP-0249 direct invitation delivered",
         lambda: el_str(m))
    p, _, _ = join(dave, room, "Dave")
    t.ok(p is not None and p.get("type") is None, "the invitee enters", lambda: el_str(p))
    # self-ping
    r = dave.iq("get", "<ping xmlns='%s'/>" % NS_PING, to=room + "/Dave")
    t.ok(r is not None and r.get("type") == "result", "XEP-0410: a self-ping of a joined occupant is answered",
         lambda: el_str(r))
    # ghost: dave's session ends without unavailable presence
    dave.close()
    g = alice.expect(lambda el: is_presence(el, room + "/Dave", "unavailable"), timeout=15)
    t.ok(g is not None, "a session that ends leaves its rooms (no ghost occupant)", lambda: alice.dump())
    dave = connect_login(srv, "dave", PW, resource="d")
    dave.presence()
    r = dave.iq("get", "<ping xmlns='%s'/>" % NS_PING, to=room + "/Dave")
    t.is_(error_condition(r), "not-acceptable", "XEP-0410: a self-ping of a session that is not joined: not-acceptable")
    dave.end()


def persistence(t, srv, alice, bob):
    room = "council@" + SVC
    create(alice, room, "Alice", {"muc#roomconfig_persistentroom": "1", "muc#roomconfig_roomname": "City council",
                                  "muc#roomconfig_membersonly": "1", "muc#roomconfig_whois": "anyone"})
    admin(alice, room, "<item jid='bob@localhost' affiliation='member'/>")
    alice.send("<message to='%s' type='groupchat'><subject>Budget</subject></message>" % room)
    groupchat(alice, room, "kept")
    gc_from(alice, room + "/Alice", "kept")
    join(bob, room, "Bob")
    alice.end()
    srv.stop()
    st = bob.expect(lambda el: is_presence(el, room + "/Bob", "unavailable"), timeout=10)
    t.ok(st is not None and 332 in codes(st), "a server shutting down tells the occupants (332)", lambda: bob.dump())
    bob.close()
    srv.start()
    alice = connect_login(srv, "alice", PW, resource="a")
    alice.presence()
    bob = connect_login(srv, "bob", PW, resource="b")
    bob.presence()
    r = bob.iq("get", "<query xmlns='%s'/>" % NS_INFO, to=room)
    f = features(r)
    ids = [i.get("name") for i in r.iter(q(NS_INFO, "identity"))] if r is not None else []
    t.ok("muc_persistent" in f and "muc_membersonly" in f and "muc_nonanonymous" in f and ids == ["City council"],
         "after a restart the persistent room exists with its configuration", lambda: el_str(r))
    p, _, subj = join(bob, room, "Bob")
    t.ok(p is not None and p.get("type") is None and item(p).get("affiliation") == "member",
         "... and its affiliations (the member enters)", lambda: el_str(p))
    t.ok(subj is not None and subj.findtext(q(NS_CLIENT, "subject")) == "Budget", "... and its subject", lambda: el_str(subj))
    hist = [el.findtext(q(NS_CLIENT, "body")) for el in bob.inbox
            if el.tag == q(NS_CLIENT, "message") and el.find(q(NS_DELAY, "delay")) is not None]
    t.ok("kept" in hist, "... and its history", lambda: bob.dump())
    r = alice.iq("get", "<query xmlns='%s'/>" % NS_INFO, to="lobby@" + SVC)
    t.is_(error_condition(r), "item-not-found", "a temporary room does not survive a restart")
    # civitasctl muc list / create / destroy while the server runs
    r = srv.ctl("muc", "list")
    t.ok(r.returncode == 0 and r.stdout.split() == [room], "civitasctl muc list prints the persistent rooms",
         lambda: r.stdout + r.stderr)
    r = srv.ctl("muc", "create", "townhall@" + SVC, "carol@localhost")
    t.is_(r.returncode, 0, "civitasctl muc create")
    r = srv.ctl("muc", "create", "townhall@elsewhere.example", "carol@localhost")
    t.is_(r.returncode, 1, "civitasctl muc create: a room at a domain that is no MUC service is refused")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        r = alice.iq("get", "<query xmlns='%s'/>" % NS_INFO, to="townhall@" + SVC)
        if r is not None and r.get("type") == "result":
            break
    t.ok(r is not None and r.get("type") == "result" and "muc_persistent" in features(r),
         "the running server picks up a room civitasctl created", lambda: el_str(r))
    r = alice.iq("get", "<query xmlns='%s'><item affiliation='owner'/></query>" % NS_ADMIN, to="townhall@" + SVC)
    t.is_(error_condition(r), "forbidden", "... owned by the account named (not alice)")
    r = srv.ctl("muc", "destroy", room)
    t.is_(r.returncode, 0, "civitasctl muc destroy")
    d = bob.expect(lambda el: is_presence(el, room + "/Bob", "unavailable"), timeout=15)
    dx = d.find(q(NS_USER, "x")) if d is not None else None
    t.ok(dx is not None and dx.find(q(NS_USER, "destroy")) is not None,
         "... the running server destroys the room and tells its occupants", lambda: el_str(d))
    r = srv.ctl("muc", "destroy", room)
    t.is_(r.returncode, 1, "civitasctl muc destroy of a room that does not exist: 1")
    # deleting an account drops its affiliations (also from rooms in memory)
    rec = "records@" + SVC
    create(alice, rec, "Alice", {"muc#roomconfig_persistentroom": "1"})
    admin(alice, rec, "<item jid='dave@localhost' affiliation='member'/>")
    r = srv.ctl("user", "del", "dave@localhost")
    t.is_(r.returncode, 0, "civitasctl user del dave")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        r = alice.iq("get", "<query xmlns='%s'><item affiliation='member'/></query>" % NS_ADMIN, to=rec)
        if r is not None and not list(r.iter(q(NS_ADMIN, "item"))):
            break
    t.ok(r is not None and r.get("type") == "result" and not list(r.iter(q(NS_ADMIN, "item"))),
         "a deleted account loses its affiliations", lambda: el_str(r))
    # rooms per user (alice owns one room now)
    for i in range(10):
        p, _, _ = join(alice, "cap%d@%s" % (i, SVC), "Alice")
        if p is None or p.get("type") == "error":
            break
    t.ok(p is not None and error_condition(p) == "resource-constraint" and i == 7,
         "muc.max_rooms_per_user (8): the ninth room is refused with resource-constraint",
         lambda: "%d %s" % (i, el_str(p)))
    return alice, bob


def federation(t):
    certs = Certs()
    pa, pb = free_port(), free_port()
    lst = lambda p: {"client": ["127.0.0.1:0"], "client_tls": ["127.0.0.1:0"], "server": ["127.0.0.1:%d" % p]}  # noqa
    part = lambda d, p: "    - domain: %s\n      route: \"127.0.0.1:%d\"\n      ca: \"%s\"\n" % (d, p, certs.ca)  # noqa
    a = Server(t, hosts=["a.example"], certs=certs, listen=lst(pa), start=False, extra_yaml=(
        "federation:\n  mode: allowlist\n  dialback: true\n  partners:\n" + part("b.example", pb)))
    b = Server(t, hosts=["b.example"], certs=certs, listen=lst(pb), start=False, extra_yaml=(
        "federation:\n  mode: allowlist\n  dialback: true\n  partners:\n" + part("a.example", pa)
        + part("conference.a.example", pa)))
    with a, b:
        a.start()
        b.start()
        a.adduser("alice@a.example", PW)
        b.adduser("bob@b.example", PW)
        alice = connect_login(a, "alice", PW, resource="r", domain="a.example")
        alice.presence()
        bob = connect_login(b, "bob", PW, resource="r", domain="b.example")
        bob.presence()
        room = "crisis@conference.a.example"
        create(alice, room, "Alice")
        p, others, subj = join(bob, room, "Bob", timeout=30)
        t.ok(p is not None and p.get("type") is None and [o.get("from") for o in others] == [room + "/Alice"]
             and subj is not None, "s2s: a user of another civitas enters a room", lambda: el_str(p) + bob.dump())
        e, _, _ = join(bob, "bobs@conference.a.example", "Bob", timeout=30)
        t.ok(e is not None and error_condition(e) == "not-allowed",
             "s2s: a remote user may not create rooms (muc.remote_create false)", lambda: el_str(e))
        groupchat(bob, room, "from b")
        t.ok(gc_from(alice, room + "/Bob", "from b", timeout=20) is not None, "s2s: the remote occupant's message reaches the room")
        groupchat(alice, room, "from a")
        t.ok(gc_from(bob, room + "/Alice", "from a", timeout=20) is not None, "s2s: the room's messages reach the remote occupant")
        bob.end()
        g = alice.expect(lambda el: is_presence(el, room + "/Bob", "unavailable"), timeout=20)
        t.ok(g is not None, "s2s: the remote occupant leaves when its session ends", lambda: alice.dump())
        alice.end()


def configured_host(t):
    """CONTRACT.md: muc: {host: ...} names the service."""
    with Server(t, extra_yaml="muc:\n  host: chat.localhost\n") as srv:
        srv.adduser("alice@localhost", PW)
        c = connect_login(srv, "alice", PW, resource="a")
        c.presence()
        r = c.iq("get", "<query xmlns='%s'/>" % NS_ITEMS, to="localhost")
        jids = [i.get("jid") for i in r.iter(q(NS_ITEMS, "item"))] if r is not None else []
        t.ok("chat.localhost" in jids and SVC not in jids, "muc.host: the service is chat.localhost", lambda: el_str(r))
        p, _, _ = join(c, "room@chat.localhost", "Alice", x=False)
        t.ok(p is not None and p.get("type") is None and 201 in codes(p), "muc.host: rooms live there", lambda: el_str(p))
        c.end()


def main(t):
    with Server(t, extra_yaml=YAML) as srv:
        for u in ("alice", "bob", "carol", "dave"):
            srv.adduser(u + "@localhost", PW)
        alice = connect_login(srv, "alice", PW, resource="a")
        alice.presence()
        bob = connect_login(srv, "bob", PW, resource="b")
        bob.presence()
        t.run(creation, t, srv, alice, bob)
        t.run(presence_flow, t, srv, alice, bob)
        t.run(messages, t, srv, alice, bob)
        t.run(roles, t, srv, alice, bob)
        t.run(invites_and_ghosts, t, srv, alice, bob)
        t.run(persistence, t, srv, alice, bob)
    t.run(federation, t)
    t.run(configured_host, t)


if __name__ == "__main__":
    Tap().main(main)
