#!/usr/bin/python3
# tests/integration/test_muc_more.py: the rest of XEP-0045 in mod_muc, with raw stanzas: nickname
# registration (§7.10 jabber:iq:register with the muc#register form, §7.11 the reserved nick on the
# disco node x-roomuser-item, <remove/>), voice requests (§7.13 the muc#request form to the
# moderators, §8.6 approval), room logging (status codes 170/171, muc#roomconfig_enablelogging),
# MUC-MAM's 'with' and 'ids' fields (XEP-0313), retention by age (muc.max_age_days) with the schema
# upgrade of an older data_dir (and per host), error stanzas from occupants (which remove them: 333),
# temporary rooms left behind by a crash (kill -9) cleaned at start, civitasctl muc destroy's rows.
import os
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, Server, connect_login, q, el_str, error_condition, NS_CLIENT  # noqa: E402
from test_muc import (join, submit, create, groupchat, gc_from, features, form_values, admin, leave,  # noqa: E402
                      codes, item, is_presence, NS_MUC, NS_USER, NS_ADMIN, NS_OWNER, NS_X, NS_INFO, NS_ITEMS)

PW = "pw-for-muc-more"
SVC = "conference.localhost"
NS_REG = "jabber:iq:register"
NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_FWD = "urn:xmpp:forward:0"
NS_SID = "urn:xmpp:sid:0"
YAML = "muc:\n  max_history: 50\n"


def login(srv, user, res="r"):
    c = connect_login(srv, user, PW, resource=res)
    c.presence()
    return c


def reg_form(nick=None, form_type=NS_MUC + "#register"):
    f = "<field var='FORM_TYPE'><value>%s</value></field>" % form_type
    if nick is not None:
        f += "<field var='muc#register_roomnick'><value>%s</value></field>" % nick
    return "<query xmlns='%s'><x xmlns='%s' type='submit'>%s</x></query>" % (NS_REG, NS_X, f)


def reserved_nick(c, room):
    r = c.iq("get", "<query xmlns='%s' node='x-roomuser-item'/>" % NS_INFO, to=room)
    qq = r.find(q(NS_INFO, "query")) if r is not None else None
    ids = [(i.get("category"), i.get("type"), i.get("name")) for i in qq.findall(q(NS_INFO, "identity"))] \
        if qq is not None else None
    return r, qq, ids


def members(c, room):
    r = c.iq("get", "<query xmlns='%s'><item affiliation='member'/></query>" % NS_ADMIN, to=room)
    return sorted(i.get("jid") for i in r.iter(q(NS_ADMIN, "item"))) if r is not None else None


def registration(t, srv, alice, bob):
    room = "reg@" + SVC
    create(alice, room, "Alice", {"muc#roomconfig_persistentroom": "1"})
    carol = login(srv, "carol")
    f = features(alice.iq("get", "<query xmlns='%s'/>" % NS_INFO, to=room))
    t.ok(NS_REG in f and NS_MUC + "#register" in f, "§7.10: the room advertises jabber:iq:register and muc#register",
         lambda: repr(f))
    r = bob.iq("get", "<query xmlns='%s'/>" % NS_REG, to=room)
    rq = r.find(q(NS_REG, "query")) if r is not None else None
    x = rq.find(q(NS_X, "x")) if rq is not None else None
    fields = {fl.get("var"): fl for fl in x.findall(q(NS_X, "field"))} if x is not None else {}
    t.ok(r is not None and r.get("type") == "result" and x is not None and x.get("type") == "form"
         and fields.get("FORM_TYPE") is not None
         and fields["FORM_TYPE"].findtext(q(NS_X, "value")) == NS_MUC + "#register"
         and fields.get("muc#register_roomnick") is not None
         and fields["muc#register_roomnick"].find(q(NS_X, "required")) is not None
         and rq.find(q(NS_REG, "registered")) is None,
         "§7.10: an unregistered user gets the muc#register form with a required muc#register_roomnick",
         lambda: el_str(r))
    r = bob.iq("get", "<query xmlns='%s'/>" % NS_REG, to="nosuchroom@" + SVC)
    t.is_(error_condition(r), "item-not-found", "§7.10: registering with a room that does not exist: item-not-found")
    r, qq, ids = reserved_nick(bob, room)
    t.ok(r is not None and r.get("type") == "result" and qq is not None and qq.get("node") == "x-roomuser-item"
         and ids == [], "§7.11: no reserved nick: an empty disco#info result for node x-roomuser-item",
         lambda: el_str(r))
    r = bob.iq("set", "<query xmlns='%s'/>" % NS_REG, to=room)
    t.is_(error_condition(r), "bad-request", "§7.10: a submission without a data form: bad-request")
    r = bob.iq("set", reg_form(None), to=room)
    t.is_(error_condition(r), "bad-request", "§7.10: a form without muc#register_roomnick: bad-request")
    r = bob.iq("set", reg_form("Bobby", form_type="urn:example:other"), to=room)
    t.is_(error_condition(r), "bad-request", "§7.10: a form of another FORM_TYPE: bad-request")
    r = bob.iq("set", reg_form("Bobby"), to=room)
    t.ok(r is not None and r.get("type") == "result", "§7.10: submitting the form registers (result)", lambda: el_str(r))
    t.is_(members(alice, room), ["bob@localhost"], "§7.10: registration makes the user a member")
    r = bob.iq("get", "<query xmlns='%s'/>" % NS_REG, to=room)
    rq = r.find(q(NS_REG, "query")) if r is not None else None
    t.ok(rq is not None and rq.find(q(NS_REG, "registered")) is not None and rq.findtext(q(NS_REG, "username")) == "Bobby",
         "§7.10: a registered user gets <registered/> and <username/> with the nick", lambda: el_str(r))
    r, qq, ids = reserved_nick(bob, room)
    t.is_(ids, [("conference", "text", "Bobby")], "§7.11: the reserved nick as the name of a conference/text identity")
    r = carol.iq("set", reg_form("Bobby"), to=room)
    t.is_(error_condition(r), "conflict", "§7.10: a nick reserved by another user: conflict")
    e, _, _ = join(carol, room, "Bobby")
    t.ok(e is not None and e.get("type") == "error" and error_condition(e) == "conflict",
         "§7.11: another user entering with a reserved nick: conflict", lambda: el_str(e))
    p, _, _ = join(bob, room, "Bobby")
    t.ok(p is not None and p.get("type") is None and item(p).get("affiliation") == "member",
         "the user who reserved the nick enters with it, as a member", lambda: el_str(p))
    alice.expect(lambda el: is_presence(el, room + "/Bobby"), timeout=10)
    # registering while in the room: the new affiliation is broadcast (§7.10)
    p, _, _ = join(carol, room, "Carol")
    alice.expect(lambda el: is_presence(el, room + "/Carol"), timeout=10)
    carol.send("<presence to='%s/Bobby'/>" % room)
    e = carol.expect(lambda el: is_presence(el, type_="error"), timeout=10)
    t.is_(error_condition(e), "conflict", "changing one's nick to a reserved nick: conflict")
    r = carol.iq("set", reg_form("Carol"), to=room)
    up = alice.expect(lambda el: is_presence(el, room + "/Carol") and item(el) is not None
                      and item(el).get("affiliation") == "member", timeout=10)
    t.ok(r is not None and r.get("type") == "result" and up is not None,
         "§7.10: an occupant who registers: presence with affiliation member to all occupants", lambda: el_str(r))
    # a banned user may not register
    dave = login(srv, "dave")
    admin(alice, room, "<item jid='dave@localhost' affiliation='outcast'/>")
    r = dave.iq("get", "<query xmlns='%s'/>" % NS_REG, to=room)
    t.is_(error_condition(r), "not-allowed", "§7.10: a banned user may not register: not-allowed")
    r = dave.iq("set", reg_form("Dave"), to=room)
    t.is_(error_condition(r), "not-allowed", "... nor submit the form")
    # members-only: registration does not let outsiders in
    mo = "closed@" + SVC
    create(alice, mo, "Alice", {"muc#roomconfig_membersonly": "1"})
    r = dave.iq("get", "<query xmlns='%s'/>" % NS_REG, to=mo)
    t.is_(error_condition(r), "not-allowed", "members-only room: a non-member may not register (not-allowed)")
    admin(alice, mo, "<item jid='dave@localhost' affiliation='member'/>")
    r = dave.iq("set", reg_form("Dave"), to=mo)
    t.ok(r is not None and r.get("type") == "result", "members-only room: a member reserves a nick", lambda: el_str(r))
    r, qq, ids = reserved_nick(dave, mo)
    t.is_(ids, [("conference", "text", "Dave")], "members-only room: the member's reserved nick")
    admin(alice, mo, "<item jid='dave@localhost' affiliation='none'/>")
    r, qq, ids = reserved_nick(dave, mo)
    t.is_(ids, [], "a registered member whom an admin makes 'none' loses the reserved nick with the membership")
    # unregistering (XEP-0077 <remove/>)
    r = bob.iq("set", "<query xmlns='%s'><remove/></query>" % NS_REG, to=room)
    lost = alice.expect(lambda el: is_presence(el, room + "/Bobby") and item(el) is not None
                        and item(el).get("affiliation") == "none", timeout=10)
    t.ok(r is not None and r.get("type") == "result" and lost is not None,
         "<remove/>: the registration ends, the membership with it (broadcast)", lambda: el_str(r))
    r, qq, ids = reserved_nick(bob, room)
    t.is_(ids, [], "<remove/>: no reserved nick any more")
    t.is_(members(alice, room), ["carol@localhost"], "<remove/>: no longer a member")
    leave(bob, room, "Bobby")
    r = dave.iq("set", "<query xmlns='%s'><remove/></query>" % NS_REG, to=room)
    t.is_(error_condition(r), "not-allowed", "<remove/> by a banned user: not-allowed")
    admin(alice, room, "<item jid='dave@localhost' affiliation='none'/>")
    r = dave.iq("set", "<query xmlns='%s'><remove/></query>" % NS_REG, to=room)
    t.is_(error_condition(r), "registration-required",
          "XEP-0077 §3.2: <remove/> without a registration: registration-required")
    leave(carol, room, "Carol")
    carol.end()
    dave.end()


def voice(t, srv, alice, bob):
    room = "hearing@" + SVC
    create(alice, room, "Alice", {"muc#roomconfig_moderatedroom": "1"})
    p, _, _ = join(bob, room, "Bob")
    t.ok(p is not None and item(p).get("role") == "visitor", "moderated room: bob enters as a visitor", lambda: el_str(p))
    alice.expect(lambda el: is_presence(el, room + "/Bob"), timeout=10)
    t.ok(NS_MUC + "#request" in features(alice.iq("get", "<query xmlns='%s'/>" % NS_INFO, to=room)),
         "the room advertises muc#request")
    req = ("<message to='%s'><x xmlns='%s' type='submit'><field var='FORM_TYPE'><value>%s#request</value></field>"
           "<field var='muc#role' type='list-single'><value>participant</value></field></x></message>"
           % (room, NS_X, NS_MUC))
    bob.send(req)
    m = alice.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.find(q(NS_X, "x")) is not None, timeout=10)
    x = m.find(q(NS_X, "x")) if m is not None else None
    vals = {f.get("var"): f.findtext(q(NS_X, "value")) for f in x.findall(q(NS_X, "field"))} if x is not None else {}
    t.ok(m is not None and m.get("from") == room and x.get("type") == "form"
         and vals.get("FORM_TYPE") == NS_MUC + "#request" and vals.get("muc#role") == "participant"
         and vals.get("muc#roomnick") == "Bob" and vals.get("muc#jid") == bob.jid
         and vals.get("muc#request_allow") in ("0", "false"),
         "§8.6: a visitor's voice request reaches the moderators as the muc#request approval form",
         lambda: el_str(m))
    bob.send(req)
    e = bob.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("type") == "error", timeout=10)
    t.ok(e is not None and error_condition(e) == "resource-constraint" and e.find(q(NS_CLIENT, "error")).get("type") == "wait",
         "a second voice request within a minute: resource-constraint (wait), the moderators are not asked again",
         lambda: el_str(e))
    alice.ping_server()
    t.ok(not [el for el in alice.inbox if el.tag == q(NS_CLIENT, "message") and el.find(q(NS_X, "x")) is not None],
         "... no second approval form reached the moderator", lambda: alice.dump())
    leave(bob, room, "Bob")
    join(bob, room, "Bob")
    bob.send(req)
    e = bob.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("type") == "error", timeout=10)
    t.is_(error_condition(e), "resource-constraint",
          "leaving and joining again does not reset the limit (it is per real user)")
    alice.ping_server()
    alice.inbox.clear()
    # a participant may not approve; a non-occupant may not ask
    carol = login(srv, "carol")
    admin(alice, room, "<item jid='carol@localhost' affiliation='member'/>")
    join(carol, room, "Carol")
    carol.send(req)
    e = carol.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("type") == "error", timeout=10)
    t.is_(error_condition(e), "not-allowed", "a voice request from an occupant who already has voice: not-allowed")
    approve = ("<message to='%s'><x xmlns='%s' type='submit'><field var='FORM_TYPE'><value>%s#request</value></field>"
               "<field var='muc#role'><value>participant</value></field><field var='muc#jid'><value>%s</value></field>"
               "<field var='muc#roomnick'><value>%s</value></field><field var='muc#request_allow'><value>%s</value>"
               "</field></x></message>")
    carol.send(approve % (room, NS_X, NS_MUC, bob.jid, "Bob", "true"))
    e = carol.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("type") == "error", timeout=10)
    t.is_(error_condition(e), "forbidden", "§8.6: a non-moderator submitting the approval form: forbidden")
    leave(carol, room, "Carol")
    carol.send(req)
    e = carol.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("type") == "error", timeout=10)
    t.is_(error_condition(e), "not-acceptable", "§7.13: a voice request from a non-occupant: not-acceptable")
    carol.end()
    # denied: nothing changes
    alice.send(approve % (room, NS_X, NS_MUC, bob.jid, "Bob", "false"))
    r = alice.iq("get", "<query xmlns='%s'><item role='visitor'/></query>" % NS_ADMIN, to=room)
    t.ok(r is not None and [i.get("nick") for i in r.iter(q(NS_ADMIN, "item"))] == ["Bob"],
         "§8.6: a request left unapproved (request_allow false) changes nothing", lambda: el_str(r))
    alice.send(approve % (room, NS_X, NS_MUC, bob.jid, "Nobody", "true"))
    e = alice.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("type") == "error", timeout=10)
    t.is_(error_condition(e), "item-not-found", "§8.6: approving voice for a nick not in the room: item-not-found")
    alice.send(approve % (room, NS_X, NS_MUC, bob.jid, "Bob", "true"))
    v = bob.expect(lambda el: is_presence(el, room + "/Bob") and item(el) is not None
                   and item(el).get("role") == "participant", timeout=10)
    t.ok(v is not None and 110 in codes(v), "§8.6: an approved request grants voice (role participant, broadcast)",
         lambda: bob.dump())
    groupchat(bob, room, "I may speak")
    t.ok(gc_from(alice, room + "/Bob", "I may speak") is not None, "... and the visitor now speaks")
    leave(bob, room, "Bob")


def logging(t, srv, alice, bob):
    room = "logged@" + SVC
    p, _, _ = join(alice, room, "Alice")
    t.ok(p is not None and codes(p) == [110, 170, 201],
         "XEP-0045 §7.2.12: a room archived by MUC-MAM says 170 in the initial self-presence", lambda: el_str(p))
    vals = form_values(alice.iq("get", "<query xmlns='%s'/>" % NS_OWNER, to=room), NS_OWNER)
    t.is_(vals.get("muc#roomconfig_enablelogging"), "1", "the config form has muc#roomconfig_enablelogging, on")
    submit(alice, room)
    r = bob.iq("get", "<query xmlns='%s'/>" % NS_INFO, to=room)
    info = form_values(r, NS_INFO)
    t.ok(info.get("muc#roomconfig_enablelogging") == "1" and NS_MAM in features(r),
         "room disco#info: logging shown before entering (muc#roominfo), MAM advertised", lambda: el_str(r))
    p, _, _ = join(bob, room, "Bob")
    t.ok(p is not None and codes(p) == [110, 170], "a later occupant's self-presence has 170 too", lambda: el_str(p))
    groupchat(alice, room, "logged 1")
    gc_from(bob, room + "/Alice", "logged 1")
    submit(alice, room, {"muc#roomconfig_enablelogging": "0"})
    m = bob.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("from") == room and codes(el), timeout=10)
    t.ok(m is not None and 171 in codes(m), "§10.2.1: logging turned off: a status message with 171", lambda: el_str(m))
    r = bob.iq("get", "<query xmlns='%s'/>" % NS_INFO, to=room)
    t.ok(NS_MAM not in features(r) and form_values(r, NS_INFO).get("muc#roomconfig_enablelogging") == "0",
         "logging off: the room advertises no MAM, muc#roominfo says so", lambda: el_str(r))
    r = bob.iq("set", "<query xmlns='%s'/>" % NS_MAM, to=room)
    t.is_(error_condition(r), "service-unavailable", "logging off: a MUC-MAM query is refused (service-unavailable)")
    leave(bob, room, "Bob")
    p, _, _ = join(bob, room, "Bob")
    t.ok(p is not None and codes(p) == [110], "logging off: no 170 on entering", lambda: el_str(p))
    hist = [el for el in bob.inbox if el.tag == q(NS_CLIENT, "message") and el.findtext(q(NS_CLIENT, "body")) == "logged 1"]
    t.ok(hist, "logging off: the discussion history on entering stays", lambda: bob.dump())
    submit(alice, room, {"muc#roomconfig_enablelogging": "1"})
    m = bob.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("from") == room and 170 in codes(el),
                   timeout=10)
    t.ok(m is not None, "§10.2.1: logging turned on: a status message with 170", lambda: bob.dump())
    leave(bob, room, "Bob")
    leave(alice, room, "Alice")


def mam(c, room, form="", rsm="", qid="q"):
    x = ("<x xmlns='%s' type='submit'><field var='FORM_TYPE' type='hidden'><value>%s</value></field>%s</x>"
         % (NS_X, NS_MAM, form)) if form else ""
    iid = c.next_id("mam")
    c.send("<iq type='set' id='%s' to='%s'><query xmlns='%s' queryid='%s'>%s%s</query></iq>"
           % (iid, room, NS_MAM, qid, x, rsm))
    fin = c.expect(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("id") == iid, timeout=10)
    res = []
    for m in [el for el in c.inbox if el.tag == q(NS_CLIENT, "message")]:
        r_ = m.find(q(NS_MAM, "result"))
        if r_ is None or r_.get("queryid") != qid:
            continue
        c.inbox.remove(m)
        fm = r_.find(q(NS_FWD, "forwarded")).find(q(NS_CLIENT, "message"))
        res.append((r_.get("id"), fm.findtext(q(NS_CLIENT, "body")), fm.get("from")))
    return fin, res


def mam_fields(t, srv, alice, bob):
    room = "archive@" + SVC
    create(alice, room, "Alice", {"muc#roomconfig_persistentroom": "1"})
    join(bob, room, "Bob")
    sids = {}
    for who, c, body in ((alice, "Alice", "a1"), (bob, "Bob", "b1"), (alice, "Alice", "a2"), (bob, "Bob", "b2"),
                         (alice, "Alice", "old a3")):
        groupchat(who, room, body)
        m = gc_from(who, "%s/%s" % (room, c), body)
        s = m.find(q(NS_SID, "stanza-id")) if m is not None else None
        sids[body] = s.get("id") if s is not None else None
    r = alice.iq("get", "<query xmlns='%s'/>" % NS_MAM, to=room)
    x = r.find(q(NS_MAM, "query")).find(q(NS_X, "x")) if r is not None and r.find(q(NS_MAM, "query")) is not None else None
    fl = {f.get("var"): f for f in x.findall(q(NS_X, "field"))} if x is not None else {}
    t.ok("with" in fl and fl["with"].get("type") == "jid-single" and "ids" in fl
         and fl["ids"].get("type") == "list-multi"
         and fl["ids"].find("{http://jabber.org/protocol/xdata-validate}validate/"
                            "{http://jabber.org/protocol/xdata-validate}open") is not None,
         "XEP-0313 §5.1: the room's query form has with (jid-single) and ids (list-multi, open validate)",
         lambda: el_str(r))
    fin, res = mam(alice, room, "<field var='with'><value>%s/Bob</value></field>" % room, qid="w1")
    t.ok(fin is not None and fin.get("type") == "result" and [b for _, b, _ in res] == ["b1", "b2"]
         and all(f == room + "/Bob" for _, _, f in res),
         "MUC-MAM with=room/nick: only that occupant's messages", lambda: el_str(fin) + repr(res))
    cnt = fin.findtext("{%s}fin/{%s}set/{%s}count" % (NS_MAM, NS_RSM, NS_RSM)) if fin is not None else None
    t.is_(cnt, "2", "MUC-MAM with: the count is that of the filtered set")
    fin, res = mam(alice, room, "<field var='with'><value>%s</value></field>" % room, qid="w2")
    t.is_([b for _, b, _ in res], ["a1", "b1", "a2", "b2", "old a3"], "MUC-MAM with=the room's bare JID: everything")
    fin, res = mam(alice, room, "<field var='with'><value>%s/Nobody</value></field>" % room, qid="w3")
    t.ok(fin is not None and fin.get("type") == "result" and res == [], "MUC-MAM with an absent nick: nothing",
         lambda: el_str(fin))
    fin, res = mam(alice, room, "<field var='with'><value>@@bad</value></field>", qid="w4")
    t.is_(error_condition(fin), "bad-request", "MUC-MAM with a malformed JID: bad-request")
    fin, res = mam(alice, room, "<field var='ids'><value>%s</value><value>%s</value></field>"
                   % (sids["b2"], sids["a1"]), qid="i1")
    f = fin.find(q(NS_MAM, "fin")) if fin is not None else None
    t.ok(fin is not None and fin.get("type") == "result" and [(i, b) for i, b, _ in res]
         == [(sids["a1"], "a1"), (sids["b2"], "b2")] and f is not None and f.get("complete") == "true",
         "XEP-0313 #extended ids: exactly those messages, in archive order, complete", lambda: el_str(fin) + repr(res))
    fin, res = mam(alice, room, "<field var='ids'><value>%s</value><value>nonexistent</value></field>" % sids["a1"],
                   qid="i2")
    t.ok(error_condition(fin) == "item-not-found" and res == [], "XEP-0313 ids: an unknown id: item-not-found",
         lambda: el_str(fin))
    fin, res = mam(alice, room, "<field var='bogus'><value>x</value></field>", qid="u1")
    t.is_(error_condition(fin), "feature-not-implemented",
          "XEP-0313 §4.1.1: a field the room does not recognise: feature-not-implemented")
    # XEP-0313 MUC archives: a forged muc#user <x/> is stripped; the real JID goes to those who may see it
    groupchat(bob, room, "forged", "<x xmlns='%s'><item jid='mallory@localhost'/></x>" % NS_USER)
    gc_from(bob, room + "/Bob", "forged")
    fm = gc_from(alice, room + "/Bob", "forged")
    t.ok(fm is not None and fm.find(q(NS_USER, "x")) is None,
         "a groupchat message reaches the occupants without the sender's muc#user <x/> (no forged real JID)",
         lambda: el_str(fm))
    bob.send("<message to='%s/Alice' type='chat'><body>pm forged</body><x xmlns='%s'><item jid='mallory@localhost'/>"
             "</x></message>" % (room, NS_USER))
    pm = alice.expect_message("pm forged", timeout=10)
    t.ok(pm is not None and pm.find(q(NS_USER, "x")) is not None and not list(pm.iter(q(NS_USER, "item"))),
         "a private message arrives with an empty muc#user <x/> (a forged <item/> removed)", lambda: el_str(pm))

    def jids_seen(c, qid):
        iid = c.next_id("mam")
        c.send("<iq type='set' id='%s' to='%s'><query xmlns='%s' queryid='%s'/></iq>" % (iid, room, NS_MAM, qid))
        c.expect(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("id") == iid, timeout=10)
        out = {}
        for m in [el for el in c.inbox if el.tag == q(NS_CLIENT, "message")]:
            r_ = m.find(q(NS_MAM, "result"))
            if r_ is None or r_.get("queryid") != qid:
                continue
            c.inbox.remove(m)
            fm = r_.find(q(NS_FWD, "forwarded")).find(q(NS_CLIENT, "message"))
            out[fm.findtext(q(NS_CLIENT, "body"))] = [i.get("jid") for i in fm.iter(q(NS_USER, "item"))]
        return out
    seen = jids_seen(alice, "j1")
    t.ok(seen.get("b1") == ["bob@localhost"] and seen.get("a1") == ["alice@localhost"]
         and seen.get("forged") == ["bob@localhost"],
         "XEP-0313: a moderator's MUC-MAM results carry the sender's real JID (a forged <x/> is stripped)",
         lambda: repr(seen))
    seen = jids_seen(bob, "j2")
    t.ok(seen.get("b1") == [] and seen.get("forged") == [],
         "XEP-0313: in a semi-anonymous room a participant's results carry no real JID", lambda: repr(seen))
    return room, sids


def retention_and_upgrade(t, srv, room, sids):
    srv.stop()
    dbf = os.path.join(srv.data_dir, [f for f in os.listdir(srv.data_dir) if f.endswith(".db")][0])
    db = sqlite3.connect(dbf)
    back = "UPDATE muc_messages SET ts = ts - ? * 86400 WHERE room = ? AND CAST(xml AS TEXT) LIKE ?"
    n = (db.execute(back, (15, room, "%<body>old a3</body>%")).rowcount
         + db.execute(back, (13, room, "%<body>a1</body>%")).rowcount)
    t.is_(n, 2, "two archived messages back-dated (15 and 13 days)")
    # CONTRACT.md: a data_dir of muc schema 1 (no muc_nicks, no by_age) is upgraded in place at the start
    db.execute("DROP TABLE muc_nicks")
    db.execute("DROP INDEX muc_messages__by_age")
    db.execute("DELETE FROM user_tables WHERE tbl = 'muc_nicks'")
    db.execute("UPDATE module_schema SET version = 1 WHERE module = 'muc'")
    db.commit()
    db.close()
    r = srv.ctl("muc", "create", "oldschema@" + SVC, "alice@localhost")
    r2 = srv.ctl("muc", "destroy", "oldschema@" + SVC)
    t.ok(r.returncode == 0 and r2.returncode == 0,
         "civitasctl muc create and destroy work on a muc schema 1 database (no muc_nicks yet)",
         lambda: r.stderr + r2.stderr)
    srv.start()
    db = sqlite3.connect(dbf)
    ver = db.execute("SELECT version FROM module_schema WHERE module = 'muc'").fetchone()
    tabs = sorted(r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'muc_%'"))
    left = sorted(r[0] for r in db.execute("SELECT CAST(xml AS TEXT) FROM muc_messages WHERE room = ?", (room,)))
    db.close()
    t.is_((ver, tabs), ((2,), ["muc_affiliations", "muc_ids", "muc_messages", "muc_nicks", "muc_rooms"]),
          "a muc schema 1 database is upgraded to 2 at the start (muc_nicks, by_age)")
    t.ok(len(left) == 5 and not any("old a3" in x for x in left),
         "muc.max_age_days 14: a message 15 days old is deleted, one 13 days old stays", lambda: repr(left))
    alice = login(srv, "alice")
    fin, res = mam(alice, room, qid="r1")
    t.is_([b for _, b, _ in res], ["a1", "b1", "a2", "b2", "forged"], "... and MUC-MAM no longer returns it")
    fin, res = mam(alice, room, "<field var='ids'><value>%s</value></field>" % sids["old a3"], qid="r2")
    t.is_(error_condition(fin), "item-not-found", "... nor fetches it by id")
    alice.end()


def crash(t, srv):
    alice, bob = login(srv, "alice"), login(srv, "bob")
    tmp, keep = "scratch@" + SVC, "keep@" + SVC
    create(alice, tmp, "Alice")
    join(bob, tmp, "Bob")
    create(alice, keep, "Alice", {"muc#roomconfig_persistentroom": "1"})
    for room in (tmp, keep):
        groupchat(alice, room, "before the crash")
        gc_from(bob if room == tmp else alice, room + "/Alice", "before the crash")
    r = alice.iq("get", "<query xmlns='%s'/>" % NS_ITEMS, to=SVC)
    t.ok(tmp in [i.get("jid") for i in r.iter(q(NS_ITEMS, "item"))], "the temporary room is listed while it runs",
         lambda: el_str(r))
    srv.proc.kill()          # kill -9: no shutdown, the temporary room's rows stay in the database
    srv.wait()
    dbf = os.path.join(srv.data_dir, [f for f in os.listdir(srv.data_dir) if f.endswith(".db")][0])
    db = sqlite3.connect(dbf)
    before = db.execute("SELECT count(*) FROM muc_messages WHERE room = ?", (tmp,)).fetchone()[0]
    db.close()
    t.ok(before > 0, "after kill -9 the temporary room's messages are still in the database", lambda: repr(before))
    alice.close()
    bob.close()
    srv.start()
    alice = login(srv, "alice")
    r = alice.iq("get", "<query xmlns='%s'/>" % NS_ITEMS, to=SVC)
    jids = [i.get("jid") for i in r.iter(q(NS_ITEMS, "item"))] if r is not None else []
    t.ok(tmp not in jids and keep in jids, "after the restart the temporary room is gone from disco#items, the "
         "persistent one stays", lambda: el_str(r))
    r = alice.iq("get", "<query xmlns='%s'/>" % NS_INFO, to=tmp)
    t.is_(error_condition(r), "item-not-found", "... and its disco#info is item-not-found")
    r = srv.ctl("muc", "list")
    t.ok(r.returncode == 0 and tmp not in r.stdout.split() and keep in r.stdout.split(),
         "... and civitasctl muc list does not name it", lambda: r.stdout + r.stderr)
    db = sqlite3.connect(dbf)
    left = [db.execute("SELECT count(*) FROM %s WHERE room = ?" % tbl, (tmp,)).fetchone()[0]
            for tbl in ("muc_messages", "muc_ids", "muc_affiliations", "muc_nicks")]
    kept = db.execute("SELECT count(*) FROM muc_messages WHERE room = ?", (keep,)).fetchone()[0]
    db.close()
    t.ok(left == [0, 0, 0, 0] and kept == 1, "at the start the rows a crashed temporary room left are deleted "
         "(archive, occupant ids); the persistent room's archive stays", lambda: repr((left, kept)))
    alice.end()


def persistence_of_registration(t, srv):
    alice = login(srv, "alice")
    r, qq, ids = reserved_nick(alice, "reg@" + SVC)
    carol = login(srv, "carol")
    r, qq, ids = reserved_nick(carol, "reg@" + SVC)
    t.is_(ids, [("conference", "text", "Carol")], "a registered nick survives a restart")
    bob = login(srv, "bob")
    e, _, _ = join(bob, "reg@" + SVC, "Carol")
    t.ok(e is not None and error_condition(e) == "conflict", "... and stays reserved", lambda: el_str(e))
    for c in (alice, bob, carol):
        c.end()


def ctl_destroy_all_rows(t, srv):
    # civitasctl muc destroy with the server stopped: every row of the room in every mod_muc table goes
    room = "reg@" + SVC
    srv.stop()
    dbf = os.path.join(srv.data_dir, [f for f in os.listdir(srv.data_dir) if f.endswith(".db")][0])
    db = sqlite3.connect(dbf)
    cols = {"muc_rooms": "jid", "muc_affiliations": "room", "muc_ids": "room", "muc_messages": "room",
            "muc_nicks": "room"}

    def rows():
        tabs = sorted(r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                               "AND name LIKE 'muc\\_%' ESCAPE '\\'"))
        return {tbl: db.execute("SELECT count(*) FROM %s WHERE %s = ?" % (tbl, cols.get(tbl, "room")),
                                (room,)).fetchone()[0] for tbl in tabs}
    before = rows()
    t.ok(sorted(before) == sorted(cols) and before["muc_nicks"] > 0 and before["muc_ids"] > 0,
         "before civitasctl muc destroy the room has registered nicks and occupant ids", lambda: repr(before))
    r = srv.ctl("muc", "destroy", room)
    t.is_(r.returncode, 0, "civitasctl muc destroy with the server stopped")
    after = rows()
    db.close()
    t.ok(sorted(after) == sorted(cols) and not any(after.values()),
         "civitasctl muc destroy deletes the room's rows in every muc table (nicks and occupant ids too)",
         lambda: repr(after))
    srv.start()
    alice = login(srv, "alice")
    create(alice, room, "Alice", {"muc#roomconfig_persistentroom": "1"})
    carol = login(srv, "carol")
    r, qq, ids = reserved_nick(carol, room)
    t.ok(r is not None and r.get("type") == "result" and ids == [],
         "a new room of the same name starts without the old registered nick", lambda: el_str(r))
    alice.end()
    carol.end()


def per_host_retention(t):
    # muc.max_age_days per host: a room's archive expires by the value of the host its service belongs to
    hosts = ["localhost", "short.localhost", "forever.localhost"]
    yaml = ("muc:\n  max_age_days: 14\n  hosts:\n    short.localhost: {max_age_days: 2}\n"
            "    forever.localhost: {max_age_days: 0}\n")
    with Server(t, hosts=hosts, extra_yaml=yaml) as srv:
        rooms = {}
        for h in hosts:
            srv.adduser("alice@" + h, PW)
            c = connect_login(srv, "alice", PW, resource="r", domain=h)
            c.presence()
            room = rooms[h] = "keep@conference." + h
            create(c, room, "Alice", {"muc#roomconfig_persistentroom": "1"})
            for body in ("twenty", "five", "now"):
                groupchat(c, room, body)
                gc_from(c, room + "/Alice", body)
            c.end()
        srv.stop()
        dbf = os.path.join(srv.data_dir, [f for f in os.listdir(srv.data_dir) if f.endswith(".db")][0])
        db = sqlite3.connect(dbf)
        back = "UPDATE muc_messages SET ts = ts - ? * 86400 WHERE CAST(xml AS TEXT) LIKE ?"
        n = db.execute(back, (20, "%<body>twenty</body>%")).rowcount + db.execute(back, (5, "%<body>five</body>%")).rowcount
        db.commit()
        db.close()
        t.is_(n, 6, "in each host's room one message back-dated by 20 days, one by 5")
        srv.start()
        db = sqlite3.connect(dbf)
        left = {h: sorted(r[0].split("<body>")[1].split("</body>")[0] for r in db.execute(
            "SELECT CAST(xml AS TEXT) FROM muc_messages WHERE room = ?", (rooms[h],))) for h in hosts}
        db.close()
        t.is_(left, {"localhost": ["five", "now"], "short.localhost": ["now"],
                     "forever.localhost": ["five", "now", "twenty"]},
              "muc.max_age_days per host: 14 days (the section's value) on localhost, 2 on short.localhost, "
              "0 (no limit) on forever.localhost")


NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_PING = "urn:xmpp:ping"


def error_from_occupant(t, srv):
    # an error stanza from an occupant removes it (333) only when its condition says the session is gone
    # (the list kickable_error has, as Prosody's is_kickable_error); an IQ error never does
    room = "errors@" + SVC
    alice, bob, carol = login(srv, "alice"), login(srv, "bob"), login(srv, "carol")
    create(alice, room, "Alice")
    join(bob, room, "Bob")
    join(carol, room, "Carol")

    def joined(what):
        r = bob.iq("get", "<ping xmlns='%s'/>" % NS_PING, to=room + "/Bob")
        t.ok(r is not None and r.get("type") == "result", what + ": Bob is still an occupant (XEP-0410 self-ping)",
             lambda: el_str(r))

    def err(cond, etype="cancel"):
        return "<error type='%s'><%s xmlns='%s'/></error>" % (etype, cond, NS_STANZAS)
    carol.send("<iq type='get' id='v1' to='%s/Bob'><query xmlns='jabber:iq:version'/></iq>" % room)
    fw = bob.expect(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("type") == "get"
                    and el.find(q("jabber:iq:version", "query")) is not None, timeout=10)
    reply = ("<iq type='error' id='%s' to='%s'><query xmlns='jabber:iq:version'/>%s</iq>"
             % (fw.get("id"), fw.get("from"), err("feature-not-implemented"))) if fw is not None else ""
    bob.send(reply)
    r = carol.expect(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("id") == "v1", timeout=10)
    t.is_(error_condition(r), "feature-not-implemented", "a relayed IQ's error answer reaches the asker")
    joined("an IQ error answering a relayed IQ")
    bob.send(reply)      # late: the relay is answered already
    joined("a late IQ error to an occupant JID")
    bob.send("<iq type='error' id='stray' to='%s'>%s</iq>" % (room, err("service-unavailable")))
    joined("an IQ error <service-unavailable/> (how a live client declines an IQ) to the room")
    bob.send("<presence type='error' to='%s/Bob'>%s</presence>" % (room, err("not-acceptable", "modify")))
    joined("a presence error <not-acceptable/> (not a condition that means gone)")
    bob.send("<presence type='error' to='%s/Bob'>%s</presence>" % (room, err("remote-server-not-found")))
    g = alice.expect(lambda el: is_presence(el, room + "/Bob", "unavailable"), timeout=10)
    t.ok(g is not None and 333 in codes(g), "a presence error <remote-server-not-found/> removes the occupant with 333",
         lambda: alice.dump())
    r = bob.iq("get", "<ping xmlns='%s'/>" % NS_PING, to=room + "/Bob")
    t.is_(error_condition(r), "not-acceptable", "... and Bob is no longer an occupant")
    for c in (alice, bob, carol):
        c.end()


def main(t):
    with Server(t, extra_yaml=YAML) as srv:
        for u in ("alice", "bob", "carol", "dave"):
            srv.adduser(u + "@localhost", PW)
        alice, bob = login(srv, "alice", "a"), login(srv, "bob", "b")
        t.run(registration, t, srv, alice, bob)
        t.run(voice, t, srv, alice, bob)
        t.run(logging, t, srv, alice, bob)
        room, sids = mam_fields(t, srv, alice, bob)
        alice.end()
        bob.end()
        t.run(error_from_occupant, t, srv)
        t.run(crash, t, srv)
        t.run(persistence_of_registration, t, srv)
        t.run(ctl_destroy_all_rows, t, srv)
        t.run(retention_and_upgrade, t, srv, room, sids)
    t.run(per_host_retention, t)


if __name__ == "__main__":
    Tap().main(main)
