#!/usr/bin/python3
# tests/integration/test_omemo_muc.py: issue 15, "an OMEMO group message (the C test client) among three
# members": tests/clients/omemo_client (legacy OMEMO, XEP-0384 v0.3) in a members-only, non-anonymous room
# of civitas's MUC. alice, bob and carol publish their devices; alice creates and configures the room
# (members-only, whois anyone) with bob and carol as members; alice's client learns the members' real
# JIDs (occupants' presences and the member lists), fetches every device list and bundle by PEP and
# sends one groupchat message with a key per device; bob, carol and alice's second device decrypt it,
# mapping alice's occupant JID to her real JID. The message is archived byte-exact (MUC-MAM); a
# non-member cannot join; a device added later cannot decrypt the old message, only new ones.
# The host runs e2e_policy mode require: the OMEMO message passes, a plaintext one does not.
# Across cities: the same with a member on a second, federated civitas server (device lists and bundles
# over s2s, the room's member list read by the remote member), both ways.
import os
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Tap, Server, connect_login, q, el_str, error_condition, omemo_client, StropheProc,  # noqa: E402
                     NS_CLIENT, DnsResponder, free_port)
from omemo_scenarios import OmemoDevice, NS_OMEMO  # noqa: E402
from test_muc import join, submit, admin, features, codes  # noqa: E402

PW = "pw-for-omemo-muc"
DOMAIN = "localhost"
SVC = "conference." + DOMAIN
ROOM = "crisis@" + SVC
NS_MAM = "urn:xmpp:mam:2"
NS_FORWARD = "urn:xmpp:forward:0"
YAML = "e2e_policy:\n  mode: require\n"


def muc_send(dev, nick, body, room=ROOM):
    """omemo_client muc-send: (exit code, stdout lines, stderr)."""
    return dev.run("muc-send", "--room", room, "--nick", nick, "--body", body)


def muc_receive(dev, nick, count, history=0, timeout=40, room=ROOM):
    """omemo_client muc-receive in the background; returns the StropheProc once it is in the room (p.ready)."""
    p = StropheProc(dev.args("muc-receive", "--room", room, "--nick", nick, "--count", str(count),
                             "--history", str(history), timeout=timeout), program=omemo_client())
    p.ready = p.wait_line("ready ", timeout=timeout)
    return p


def decrypted(proc, timeout=60):
    rc, lines, err = proc.finish(timeout)
    return rc, [line for line in lines if "\t" in line], lines, err


def same_tree(a, b):
    """Element trees equal in tags, attributes, text and tails (nothing normalised)."""
    if a is None or b is None:
        return False
    return (a.tag == b.tag and a.attrib == b.attrib and (a.text or "") == (b.text or "")
            and (a.tail or "") == (b.tail or "") and len(a) == len(b)
            and all(same_tree(x, y) for x, y in zip(a, b)))


def mam_messages(c, room):
    """Every archived message of room (MUC-MAM), oldest first: the forwarded <message/> elements."""
    iid = c.next_id("mam")
    c.send("<iq type='set' id='%s' to='%s'><query xmlns='%s' queryid='omemo'/></iq>" % (iid, room, NS_MAM))
    fin = c.expect(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("id") == iid, timeout=15)
    out = []
    for m in list(c.inbox):
        r = m.find(q(NS_MAM, "result")) if m.tag == q(NS_CLIENT, "message") else None
        if r is not None and r.get("queryid") == "omemo":
            fw = r.find(q(NS_FORWARD, "forwarded"))
            out.append(fw.find(q(NS_CLIENT, "message")) if fw is not None else None)
            c.inbox.remove(m)
    return fin, out


def group(t, srv, tmp):
    info = {"domain": DOMAIN, "port": srv.port("client"), "password": PW}
    for u in ("alice", "bob", "carol", "dave"):
        srv.adduser("%s@%s" % (u, DOMAIN), PW)
    a1 = OmemoDevice(info, tmp, "alice", "a1")
    a2 = OmemoDevice(info, tmp, "alice", "a2")
    bob = OmemoDevice(info, tmp, "bob", "b1")
    carol = OmemoDevice(info, tmp, "carol", "c1")
    dave = OmemoDevice(info, tmp, "dave", "d1")
    for d in (a1, a2, bob, carol, dave):
        rc, lines, err = d.publish()
        t.ok(rc == 0 and "published" in lines, "%s (%s) publishes its OMEMO device and bundle" % (d.jid, d.full),
             lambda: "%r\n%s" % (lines, err))

    # the room: alice creates it members-only and non-anonymous, bob and carol become members
    alice = connect_login(srv, "alice", PW, resource="raw")
    alice.presence()
    p = join(alice, ROOM, "Alice")[0]
    r = submit(alice, ROOM, {"muc#roomconfig_membersonly": "1", "muc#roomconfig_whois": "anyone",
                             "muc#roomconfig_persistentroom": "1", "muc#roomconfig_roomname": "Crisis team"})
    t.ok(p is not None and 201 in codes(p) and r is not None and r.get("type") == "result",
         "alice creates the room and configures it members-only and non-anonymous (whois anyone)",
         lambda: el_str(p) + el_str(r))
    for u in ("bob", "carol"):
        r = admin(alice, ROOM, "<item jid='%s@%s' affiliation='member'/>" % (u, DOMAIN))
        t.ok(r is not None and r.get("type") == "result", "alice makes %s a member" % u, lambda: el_str(r))
    r = alice.iq("get", "<query xmlns='http://jabber.org/protocol/disco#info'/>", to=ROOM)
    f = features(r)
    t.ok("muc_nonanonymous" in f and "muc_membersonly" in f,
         "the room's disco#info has muc_nonanonymous and muc_membersonly (what OMEMO clients look for)",
         lambda: repr(f))

    # a non-member cannot join (407): the client checks the room, then is refused
    rc, lines, err = dave.run("muc-receive", "--room", ROOM, "--nick", "Dave", "--count", "1")
    t.ok(rc != 0 and "room-ok" in lines and "error registration-required" in lines
         and not any(line.startswith("ready") for line in lines),
         "dave, no member, cannot join the members-only room (registration-required)",
         lambda: "%r\n%s" % (lines, err))

    pb, pc = muc_receive(bob, "Bob", 1), muc_receive(carol, "Carol", 1)
    pa2 = muc_receive(a2, "Alice", 1)
    t.ok(pb.ready and pc.ready and pa2.ready, "bob, carol and alice's second device are in the room",
         lambda: repr([pb.lines, pc.lines, pa2.lines]))

    body = "Road closed at the bridge; meet at the fire station (OMEMO)"
    rc, lines, err = muc_send(a1, "Alice", body)
    t.ok("room-ok" in lines, "alice's client sees a room fit for OMEMO", lambda: "%r\n%s" % (lines, err))
    t.ok("members bob@localhost carol@localhost" in lines,
         "alice's client learns the members' real JIDs (occupant presences, member list)",
         lambda: "%r\n%s" % (lines, err))
    want = ["session %s %d new" % (bob.jid, bob.device_id), "session %s %d new" % (carol.jid, carol.device_id),
            "session %s %d new" % (a2.jid, a2.device_id)]
    t.ok(all(w in lines for w in want),
         "alice's client fetches the device lists and bundles of bob, carol and her own second device and builds "
         "sessions", lambda: "%r\n%s" % (lines, err))
    t.ok(rc == 0 and "sent 3" in lines and "reflected" in lines,
         "one groupchat message with three keys; the room reflects it (e2e require lets OMEMO through)",
         lambda: "%r\n%s" % (lines, err))
    sent_xml = [line[len("encrypted "):] for line in lines if line.startswith("encrypted ")]
    for who, proc in (("bob", pb), ("carol", pc), ("alice's second device", pa2)):
        rc2, msgs, all_lines, err2 = decrypted(proc)
        t.is_((rc2, msgs), (0, ["alice@localhost\t" + body]),
              "%s decrypts alice's group message (occupant JID %s/Alice mapped to alice@localhost)" % (who, ROOM))
        t.ok("(PreKeySignalMessage)" in err2, "%s: it was a PreKeySignalMessage" % who, err2)

    # the live copy and the archive hold the <encrypted/> element exactly as alice's client wrote it
    sent = ET.fromstring(sent_xml[0]) if sent_xml else None
    live = alice.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("type") == "groupchat"
                        and el.find(q(NS_OMEMO, "encrypted")) is not None, timeout=15)
    t.ok(same_tree(sent, live.find(q(NS_OMEMO, "encrypted")) if live is not None else None),
         "the occupants get the <encrypted/> element unchanged", lambda: el_str(live))
    fin, archived = mam_messages(alice, ROOM)
    enc = [m for m in archived if m is not None and m.find(q(NS_OMEMO, "encrypted")) is not None]
    t.ok(fin is not None and fin.get("type") == "result" and len(enc) == 1
         and enc[0].get("from") == ROOM + "/Alice" and same_tree(sent, enc[0].find(q(NS_OMEMO, "encrypted"))),
         "MUC-MAM: the room's archive holds the message from %s/Alice with the <encrypted/> element byte-exact"
         % ROOM, lambda: el_str(fin) + repr([el_str(m) for m in archived]))

    # a device added later: bob's new phone gets the old message from the history but has no key for it;
    # the next message names it
    b2 = OmemoDevice(info, tmp, "bob", "b2")
    rc, lines, err = b2.publish()
    t.ok(rc == 0, "bob adds a second device later", lambda: "%r\n%s" % (lines, err))
    pb2 = muc_receive(b2, "Bob", 1, history=10)
    t.ok(pb2.ready, "bob's new device joins with history", lambda: repr(pb2.lines))
    rc, lines, err = muc_send(a1, "Alice", "second message")
    t.ok(rc == 0 and ("session %s %d new" % (b2.jid, b2.device_id)) in lines
         and ("session %s %d existing" % (bob.jid, bob.device_id)) in lines and "sent 4" in lines,
         "alice's next message also has a key for bob's new device (4 keys)", lambda: "%r\n%s" % (lines, err))
    rc2, msgs, all_lines, err2 = decrypted(pb2)
    t.ok("undecryptable %s/Alice no-key-for-device" % ROOM in all_lines,
         "bob's new device cannot decrypt the old message from the history (no key for it)",
         lambda: "%r\n%s" % (all_lines, err2))
    t.is_((rc2, msgs), (0, ["alice@localhost\tsecond message"]), "bob's new device decrypts the new message")

    # e2e_policy require: a plaintext groupchat message is refused, the room never sees it
    alice.send("<message to='%s' type='groupchat' id='plain1'><body>plain text</body></message>" % ROOM)
    e = alice.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("id") == "plain1", timeout=15)
    t.ok(e is not None and e.get("type") == "error" and error_condition(e) == "policy-violation",
         "e2e require: a plaintext groupchat message to the room is refused with <policy-violation/>",
         lambda: el_str(e))
    alice.end()


def federated(t, tmp):
    """A room on civ-a.example with alice and carol (civ-a) and bob (civ-b, a second civitas)."""
    dns = DnsResponder()
    os.environ["CIVITAS_DNS_SERVER"] = "127.0.0.1@%d" % dns.port
    try:
        srv = {}
        for d in ("civ-a.example", "civ-b.example"):
            port = free_port()
            for name in (d, "conference." + d):
                dns.add_srv("_xmpp-server._tcp." + name, d, port)
            dns.add_a(d)
            srv[d] = Server(t, hosts=[d], extra_yaml="federation:\n  mode: open\n  dialback: true\n",
                            listen={"client": ["127.0.0.1:0"], "server": ["127.0.0.1:%d" % port]})
        a, b = srv["civ-a.example"], srv["civ-b.example"]
        room = "crisis@conference.civ-a.example"
        a.adduser("alice@civ-a.example", PW)
        a.adduser("carol@civ-a.example", PW)
        b.adduser("bob@civ-b.example", PW)
        info_a = {"domain": "civ-a.example", "port": a.port("client"), "password": PW}
        info_b = {"domain": "civ-b.example", "port": b.port("client"), "password": PW}
        alice = OmemoDevice(info_a, tmp, "alice", "fa1")
        carol = OmemoDevice(info_a, tmp, "carol", "fc1")
        bob = OmemoDevice(info_b, tmp, "bob", "fb1")
        t.ok(all(d.publish()[0] == 0 for d in (alice, carol, bob)), "s2s: alice, carol (civ-a) and bob (civ-b) publish")
        raw = connect_login(a, "alice", PW, resource="raw", domain="civ-a.example")
        raw.presence()
        join(raw, room, "Alice")
        r = submit(raw, room, {"muc#roomconfig_membersonly": "1", "muc#roomconfig_whois": "anyone"})
        for u in ("bob@civ-b.example", "carol@civ-a.example"):
            admin(raw, room, "<item jid='%s' affiliation='member'/>" % u)
        t.ok(r is not None and r.get("type") == "result", "s2s: alice's room on civ-a is members-only and "
             "non-anonymous, bob of civ-b and carol members", lambda: el_str(r))
        pb = muc_receive(bob, "Bob", 1, room=room, timeout=60)
        pc = muc_receive(carol, "Carol", 1, room=room)
        t.ok(pb.ready and pc.ready, "s2s: bob enters the room from civ-b, carol from civ-a",
             lambda: repr([pb.lines, pc.lines]))
        rc, lines, err = muc_send(alice, "Alice", "across cities", room=room)
        t.ok(rc == 0 and "members bob@civ-b.example carol@civ-a.example" in lines
             and ("session %s %d new" % (bob.jid, bob.device_id)) in lines and "sent 2" in lines,
             "s2s: alice's client fetches bob's device list and bundle from civ-b and sends one message",
             lambda: "%r\n%s" % (lines, err))
        for who, proc in (("bob (civ-b)", pb), ("carol (civ-a)", pc)):
            rc2, msgs, _, err2 = decrypted(proc)
            t.is_((rc2, msgs), (0, ["alice@civ-a.example\tacross cities"]), "s2s: %s decrypts it" % who)
        pa = muc_receive(alice, "Alice", 1, room=room)
        pc = muc_receive(carol, "Carol", 1, room=room)
        rc, lines, err = muc_send(bob, "Bob", "answer from civ-b", room=room)
        t.ok(rc == 0 and "room-ok" in lines and "members alice@civ-a.example carol@civ-a.example" in lines
             and "sent 2" in lines,
             "s2s: bob's client on civ-b reads the remote room's disco and member list and sends back",
             lambda: "%r\n%s" % (lines, err))
        for who, proc in (("alice", pa), ("carol", pc)):
            rc2, msgs, _, err2 = decrypted(proc)
            t.is_((rc2, msgs), (0, ["bob@civ-b.example\tanswer from civ-b"]), "s2s: %s decrypts bob's answer" % who)
        raw.end()
        for s_ in (a, b):
            s_.stop()
    finally:
        dns.stop()


def main(t):
    tmp = tempfile.mkdtemp(prefix="civitas-omemo-muc-")
    try:
        with Server(t, hosts=[DOMAIN], extra_yaml=YAML) as srv:
            t.run(group, t, srv, tmp)
        t.run(federated, t, tmp)
    finally:
        if t.failed:
            t.diag("omemo_client state kept in %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    Tap(timeout=300).main(main)
