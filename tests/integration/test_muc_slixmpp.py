#!/usr/bin/python3
# tests/integration/test_muc_slixmpp.py: XEP-0045 (mod_muc) driven by a real client library, slixmpp's
# xep_0045 plugin: join (a reserved room configured with the muc#roomconfig form slixmpp reads and
# submits), groupchat both ways, subject, affiliation and role lists, logging (170), nick registration
# (XEP-0045 §7.10 / §7.11 read with xep_0030), a voice request (request_voice) approved by the
# moderator, a mediated invitation, destroy.
import asyncio
import contextlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap  # noqa: E402
import slixmpp_helpers as sh  # noqa: E402

import slixmpp  # noqa: E402  (Debian: python3-slixmpp)
from slixmpp.exceptions import PresenceError  # noqa: E402
from slixmpp.xmlstream import ET  # noqa: E402

PW = "slix-muc-pw"
ROOM = "team@conference.localhost"


class Client(sh.Client):
    def __init__(self, jid, ca):
        super().__init__(jid, PW, ca, plugins=("xep_0030", "xep_0045", "xep_0004", "xep_0199"))
        self.groupchat = asyncio.Queue()
        self.invites = asyncio.Queue()
        self.forms = asyncio.Queue()
        self.add_event_handler("message_xform", lambda m: self.forms.put_nowait(m))
        self.add_event_handler("groupchat_message", lambda m: self.groupchat.put_nowait(m))
        self.add_event_handler("groupchat_invite", lambda m: self.invites.put_nowait(m))

    @property
    def muc(self):
        return self.plugin["xep_0045"]


async def next_body(q, body, timeout=10):
    try:
        while True:
            m = await asyncio.wait_for(q.get(), timeout)
            if m["body"] == body:
                return m
    except asyncio.TimeoutError:
        return None


async def join(c, nick, **kw):
    # slixmpp 1.8.3's join_muc_wait prints each message's delay to stdout: keep TAP output clean
    with contextlib.redirect_stdout(sys.stderr):
        return await c.muc.join_muc_wait(ROOM, nick, timeout=15, **kw)


async def scenario(t, srv):
    a, b, c = (Client("%s@localhost/slix" % u, srv.ca) for u in ("alice", "bob", "carol"))
    ok = await sh.login(srv, a, b, c)
    t.ok(ok, "slixmpp: three clients log in", repr([x.failed for x in (a, b, c)]))
    if not ok:
        return
    pres, subject, occupants, history = await join(a, "Alice")
    t.ok(pres["type"] != "error" and "201" in [str(s) for s in pres["muc"]["status_codes"]],
         "slixmpp: joining a new room creates it (201)", str(pres))
    form = await a.muc.get_room_config(ROOM)
    fields = form.get_fields() if form is not None else {}
    t.ok("muc#roomconfig_membersonly" in fields and "muc#roomconfig_whois" in fields,
         "slixmpp: get_room_config returns the muc#roomconfig form", str(form))
    new = a.plugin["xep_0004"].make_form(ftype="submit")
    new.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/muc#roomconfig")
    new.add_field(var="muc#roomconfig_roomname", value="Team")
    new.add_field(var="muc#roomconfig_whois", value="anyone")
    new.add_field(var="muc#roomconfig_persistentroom", ftype="boolean", value=True)
    await a.muc.set_room_config(ROOM, new)
    info = await b["xep_0030"].get_info(jid=ROOM)
    feats = info["disco_info"]["features"]
    t.ok("muc_nonanonymous" in feats and "muc_persistent" in feats,
         "slixmpp: the submitted configuration shows in the room's disco#info", repr(feats))
    try:
        pres, subject, occupants, history = await join(b, "Bob")
        t.ok(pres["type"] != "error" and sorted(b.muc.get_roster(ROOM)) == ["Alice", "Bob"],
             "slixmpp: a second user joins and sees the first", "%s %r" % (pres, b.muc.get_roster(ROOM)))
        t.ok("170" in [str(s) for s in pres["muc"]["status_codes"]],
             "slixmpp: the self-presence says 170 (the room is archived, MUC-MAM)", str(pres))
    except PresenceError as e:
        t.ok(False, "slixmpp: a second user joins and sees the first", str(e))
    a.send_message(mto=ROOM, mbody="hi team", mtype="groupchat")
    m = await next_body(b.groupchat, "hi team")
    t.ok(m is not None and str(m["from"]) == ROOM + "/Alice", "slixmpp: groupchat reaches the other occupant")
    b.send_message(mto=ROOM, mbody="hi alice", mtype="groupchat")
    m = await next_body(a.groupchat, "hi alice")
    t.ok(m is not None and str(m["from"]) == ROOM + "/Bob", "slixmpp: and back")
    await a.muc.set_affiliation(ROOM, "member", jid=slixmpp.JID("bob@localhost"))
    members = await a.muc.get_affiliation_list(ROOM, "member")
    t.is_([str(j) for j in members], ["bob@localhost"], "slixmpp: set_affiliation / get_affiliation_list (member)")
    # XEP-0045 §7.10: register a nick (jabber:iq:register to the room), §7.11: read it with xep_0030
    iq = b.make_iq_get(ito=ROOM)
    iq.append(ET.Element("{jabber:iq:register}query"))
    resp = await iq.send(timeout=10)
    t.ok(resp.xml.find("{jabber:iq:register}query/{jabber:x:data}x") is not None,
         "slixmpp: the room answers jabber:iq:register with the muc#register form", str(resp))
    iq = b.make_iq_set(ito=ROOM)
    iq.append(ET.fromstring("<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'>"
                            "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#register</value></field>"
                            "<field var='muc#register_roomnick'><value>Bobby</value></field></x></query>"))
    await iq.send(timeout=10)
    info = await b["xep_0030"].get_info(jid=ROOM, node="x-roomuser-item")
    names = [i[3] for i in info["disco_info"]["identities"] if i[0] == "conference" and i[1] == "text"]
    t.is_(names, ["Bobby"], "slixmpp: get_info node x-roomuser-item names the registered nick")
    await a.muc.set_role(ROOM, "Bob", "visitor")
    visitors = await a.muc.get_roles_list(ROOM, "visitor")
    t.is_(list(visitors), ["Bob"], "slixmpp: set_role / get_roles_list (visitor)")
    # XEP-0045 §7.13 / §8.6: bob asks for voice, alice approves the form she gets
    b.muc.request_voice(ROOM, "participant")
    try:
        req = await asyncio.wait_for(a.forms.get(), 10)
    except asyncio.TimeoutError:
        req = None
    xf = req.xml.find("{jabber:x:data}x") if req is not None else None
    vals = {f.get("var"): f.findtext("{jabber:x:data}value") for f in xf.findall("{jabber:x:data}field")} \
        if xf is not None else {}
    t.ok(req is not None and str(req["from"]) == ROOM and vals.get("FORM_TYPE") == "http://jabber.org/protocol/muc#request"
         and vals.get("muc#roomnick") == "Bob", "slixmpp: request_voice reaches the moderator as the approval form",
         str(req))
    if req is not None:
        ans = a.make_message(mto=ROOM)
        form = ans["form"]
        form["type"] = "submit"
        for var in ("FORM_TYPE", "muc#role", "muc#jid", "muc#roomnick"):
            form.add_field(var=var, value=vals.get(var))
        form.add_field(var="muc#request_allow", ftype="boolean", value=True)
        ans.send()
    roles = []
    for _ in range(50):
        roles = list(await a.muc.get_roles_list(ROOM, "participant"))
        if "Bob" in roles:
            break
        await asyncio.sleep(0.1)
    t.ok("Bob" in roles, "slixmpp: the approved request gives bob voice (participant)", repr(roles))
    a.muc.invite(ROOM, slixmpp.JID("carol@localhost"), reason="come in")
    try:
        inv = await asyncio.wait_for(c.invites.get(), 10)
    except asyncio.TimeoutError:
        inv = None
    t.ok(inv is not None and str(inv["from"]) == ROOM, "slixmpp: carol gets the mediated invitation (groupchat_invite)",
         str(inv))
    await a.muc.destroy(ROOM, reason="done")
    info_err = None
    try:
        await b["xep_0030"].get_info(jid=ROOM)
    except slixmpp.exceptions.IqError as e:
        info_err = e.iq["error"]["condition"]
    t.is_(info_err, "item-not-found", "slixmpp: destroy removes the room")
    for x in (a, b, c):
        x.disconnect()
    await asyncio.gather(a.disconnected, b.disconnected, c.disconnected, return_exceptions=True)


def main(t):
    sh.main(t, {u + "@localhost": PW for u in ("alice", "bob", "carol")}, scenario)


if __name__ == "__main__":
    Tap().main(main)
