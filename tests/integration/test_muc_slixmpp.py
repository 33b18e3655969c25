#!/usr/bin/python3
# tests/integration/test_muc_slixmpp.py: XEP-0045 (mod_muc) driven by a real client library, slixmpp's
# xep_0045 plugin: join (a reserved room configured with the muc#roomconfig form slixmpp reads and
# submits), groupchat both ways, subject, affiliation and role lists, a mediated invitation, destroy.
import asyncio
import contextlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap  # noqa: E402
import slixmpp_helpers as sh  # noqa: E402

import slixmpp  # noqa: E402  (Debian: python3-slixmpp)
from slixmpp.exceptions import PresenceError  # noqa: E402

PW = "slix-muc-pw"
ROOM = "team@conference.localhost"


class Client(sh.Client):
    def __init__(self, jid, ca):
        super().__init__(jid, PW, ca, plugins=("xep_0030", "xep_0045", "xep_0004", "xep_0199"))
        self.groupchat = asyncio.Queue()
        self.invites = asyncio.Queue()
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
    await a.muc.set_role(ROOM, "Bob", "visitor")
    visitors = await a.muc.get_roles_list(ROOM, "visitor")
    t.is_(list(visitors), ["Bob"], "slixmpp: set_role / get_roles_list (visitor)")
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
