#!/usr/bin/python3
# tests/integration/test_smacks.py: XEP-0198 Stream Management (urn:xmpp:sm:3): enabling,
# acknowledgements both ways, the unacked cap, resumption after a lost connection (also one cut
# without FIN by a proxy that goes silent), <failed/> with the last h, and the unacknowledged
# messages of a session that is never resumed going to offline storage, delivered exactly once.
import collections
import os
import select
import socket
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Tap, Server, RawClient, q, el_str, presence_from,  # noqa: E402
                     NS_CLIENT, NS_STANZAS, NS_STREAMS_ERR)

PW = "pw-for-smacks"
NS_SM = "urn:xmpp:sm:3"
NS_CARBONS = "urn:xmpp:carbons:2"
STANZAS = {q(NS_CLIENT, n) for n in ("message", "presence", "iq")}


class Counting(collections.deque):
    """The parser's queue of depth-1 elements: counts the stanzas the client handles once stream
    management is on (XEP-0198 §4 h) and answers the server's <r/> when auto_ack is set."""

    def __init__(self, owner, items):
        super().__init__(items)
        self.owner = owner

    def popleft(self):
        el = super().popleft()
        o = self.owner
        if el.tag in (q(NS_SM, "enabled"), q(NS_SM, "resumed")):
            o.counting = True
        elif el.tag in STANZAS and o.counting:
            o.h = (o.h + 1) % 2**32
        elif el.tag == q(NS_SM, "r"):
            o.requests += 1
            if o.auto_ack:
                o.send("<a xmlns='%s' h='%d'/>" % (NS_SM, o.h))
        return el


class SmClient(RawClient):
    def __init__(self, port, **kw):
        super().__init__(port, **kw)
        self.h = 0
        self.counting = False
        self.auto_ack = False
        self.requests = 0

    def start_counting(self, h=0):
        self.h = h
        self.parser.stanzas = Counting(self, self.parser.stanzas)

    def enable(self, resume=False):
        self.start_counting()
        self.send("<enable xmlns='%s'%s/>" % (NS_SM, " resume='true'" if resume else ""))
        return self.expect(lambda el: el.tag in (q(NS_SM, "enabled"), q(NS_SM, "failed")))

    def ack(self):
        self.send("<a xmlns='%s' h='%d'/>" % (NS_SM, self.h))

    def server_h(self):
        """Ask the server for its h (<r/>): the <a/>'s h as an int, or None."""
        self.send("<r xmlns='%s'/>" % NS_SM)
        a = self.expect(q(NS_SM, "a"))
        return int(a.get("h")) if a is not None else None

    def drain(self):
        """Read everything the server has sent so far (a ping round trip), handling it in order."""
        self.ping_server()
        while self.inbox:
            self.inbox.pop(0)


def sm_login(srv, user, resource, port=None, bind=True):
    c = SmClient(port or srv.port("client"), cafile=srv.ca)
    c.login(user, PW, resource=resource, bind=bind)
    if bind:
        c.start_counting()
    return c


def resume_login(srv, user, previd, h, port=None):
    """A new connection that authenticates and resumes previd; returns (client, answer)."""
    c = SmClient(port or srv.port("client"), cafile=srv.ca)
    c.login(user, PW, bind=False)
    c.start_counting(h)
    c.send("<resume xmlns='%s' previd='%s' h='%d'/>" % (NS_SM, previd, h))
    ans = c.expect(lambda el: el.tag in (q(NS_SM, "resumed"), q(NS_SM, "failed")))
    return c, ans


def failed_condition(el):
    for ch in el if el is not None else []:
        if ch.tag.startswith("{%s}" % NS_STANZAS):
            return ch.tag.split("}")[1]
    return None


def bodies(els):
    out = []
    for el in els:
        b = el.find(q(NS_CLIENT, "body")) if el.tag == q(NS_CLIENT, "message") else None
        if b is not None:
            out.append(b.text)
    return out


def take_messages(c, sender=None):
    """The bodies of the messages read so far (consumed, counted); sender's stanzas are all
    routed first (a ping round trip on its stream)."""
    if sender is not None:
        sender.ping_server()
    c.ping_server()
    got = []
    while c.inbox:
        got += bodies([c.inbox.pop(0)])
    return got


def offline_bodies(srv, user, resource):
    """Log in afresh, become available and collect what offline storage replays, then leave."""
    c = sm_login(srv, user, resource)
    c.presence()
    got = take_messages(c)
    c.end()
    return got


def subscribe(t, watcher, wjid, owner, ojid):
    """watcher subscribes to owner's presence (RFC 6121 §3.1)."""
    watcher.send("<presence to='%s' type='subscribe'/>" % ojid)
    t.ok(presence_from(owner, wjid, "subscribe") is not None, "%s asks %s for its presence" % (wjid, ojid))
    owner.send("<presence to='%s' type='subscribed'/>" % wjid)
    t.ok(presence_from(watcher, ojid, "subscribed") is not None, "%s is subscribed to %s" % (wjid, ojid))


class SilentProxy:
    """A TCP proxy between one client and the server. cut() stops forwarding in both directions and
    keeps both sockets open: the server sees no FIN and no RST, as when a phone leaves a network."""

    def __init__(self, port):
        self.target = port
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(1)
        self.port = self.ls.getsockname()[1]
        self.cut_ev = threading.Event()
        self.socks = []
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self):
        a, _ = self.ls.accept()
        b = socket.create_connection(("127.0.0.1", self.target))
        self.socks = [a, b]
        peer = {a: b, b: a}
        while not self.cut_ev.is_set():
            r, _, _ = select.select([a, b], [], [], 0.1)
            if self.cut_ev.is_set():
                break
            for s in r:
                data = s.recv(65536)
                if not data:
                    return
                peer[s].sendall(data)

    def cut(self):
        self.cut_ev.set()
        self.th.join(5)

    def close(self):
        for s in self.socks + [self.ls]:
            s.close()


def setup_users(srv, *users):
    for u in users:
        srv.adduser("%s@localhost" % u, PW)


def basics(t, srv):
    setup_users(srv, "alice", "bob")
    a = SmClient(srv.port("client"), cafile=srv.ca)
    a.login("alice", PW, bind=False)
    t.ok(a.features is not None and a.features.find(q(NS_SM, "sm")) is not None,
         "XEP-0198 §2: <sm xmlns='urn:xmpp:sm:3'/> is offered after authentication")
    a.start_counting()
    a.send("<enable xmlns='%s'/>" % NS_SM)
    f = a.expect(lambda el: el.tag in (q(NS_SM, "enabled"), q(NS_SM, "failed")))
    t.ok(f is not None and f.tag == q(NS_SM, "failed") and failed_condition(f) == "unexpected-request",
         "XEP-0198 §3: <enable/> before binding a resource fails with <unexpected-request/>", el_str(f))
    t.ok(a.bind("phone") is not None, "the stream goes on after the <failed/>: bind")
    e = a.enable()
    t.ok(e is not None and e.tag == q(NS_SM, "enabled") and e.get("id") is None and e.get("resume") is None,
         "XEP-0198 §3: <enable/> without resume: <enabled/> without id and resume", el_str(e))
    e2 = a.enable()
    t.ok(e2 is not None and e2.tag == q(NS_SM, "failed") and failed_condition(e2) == "unexpected-request",
         "XEP-0198 §3: a second <enable/> fails with <unexpected-request/>", el_str(e2))
    t.is_(a.server_h(), 0, "XEP-0198 §4: the server has handled no stanza right after enabling: <a h='0'/>")
    a.ping_server()
    a.presence()
    a.ping_server()
    t.is_(a.server_h(), 3, "XEP-0198 §4: <r/> is answered with the count of stanzas the server handled (3)")

    b = sm_login(srv, "bob", "desk")
    b.message("alice@localhost/phone", "one")
    m = a.expect_message("one")
    t.ok(m is not None, "a message reaches the stream-managed session")
    r = a.expect(q(NS_SM, "r"))
    t.ok(r is not None, "XEP-0198 §4: the server asks for an acknowledgement (<r/>) after sending a stanza")
    a.drain()
    a.ack()
    t.is_(a.server_h(), 4, "acks and requests are not counted as stanzas (3 stanzas and the drain's ping: 4)")
    # an <a/> acknowledging more than was sent: XEP-0198 §4 undefined-condition stream error
    sent = a.h
    a.send("<a xmlns='%s' h='%d'/>" % (NS_SM, sent + 5))
    el = a.stream_error()
    t.ok(el is not None and el.find(q(NS_STREAMS_ERR, "undefined-condition")) is not None,
         "XEP-0198 §4: an h above what was sent closes the stream with <undefined-condition/>", el_str(el))
    hc = el.find(q(NS_SM, "handled-count-too-high")) if el is not None else None
    t.ok(hc is not None and hc.get("h") == str(sent + 5) and hc.get("send-count") == str(sent),
         "XEP-0198 §4: with <handled-count-too-high h='%d' send-count='%d'/>" % (sent + 5, sent), el_str(el))
    a.close()
    b.end()


def max_unacked(t, srv):
    setup_users(srv, "carol", "dave")
    c = sm_login(srv, "carol", "phone")
    c.presence()
    c.drain()
    e = c.enable()
    t.ok(e is not None and e.tag == q(NS_SM, "enabled"), "carol enables stream management (no resumption)")
    d = sm_login(srv, "dave", "desk")
    for i in range(7):
        d.message("carol@localhost/phone", "cap-%d" % i)
    err = c.read_stream_error()
    t.ok(err is not None and err[0] == "policy-violation",
         "issue 13: more than smacks.max_unacked (5) unacknowledged stanzas close the stream with "
         "<policy-violation/>", str(err))
    c.close()
    d.ping_server()
    got = offline_bodies(srv, "carol", "again")
    t.is_(sorted(got), ["cap-%d" % i for i in range(7)],
          "XEP-0198 §5: the unacknowledged messages of the closed session go to offline storage, each once")
    t.is_(offline_bodies(srv, "carol", "third"), [], "... and are not delivered a second time")
    d.end()


def resumption(t, srv):
    setup_users(srv, "erin", "frank")
    f = sm_login(srv, "frank", "desk")
    f.presence()
    e = sm_login(srv, "erin", "phone")
    e.presence()
    subscribe(t, f, "frank@localhost", e, "erin@localhost")
    e.presence()
    t.ok(presence_from(f, "erin@localhost", None) is not None, "frank sees erin available")
    e.drain()
    en = e.enable(resume=True)
    t.ok(en is not None and en.tag == q(NS_SM, "enabled") and en.get("resume") in ("true", "1")
         and en.get("id") and en.get("max") == "300",
         "XEP-0198 §5: <enable resume='true'/> is answered with an id and max='300' (smacks.hibernation)",
         el_str(en))
    previd = en.get("id")
    f.message("erin@localhost/phone", "r-1")
    t.ok(e.expect_message("r-1") is not None, "erin gets r-1 (and does not acknowledge it)")
    h_before = e.h
    mark = srv.log_mark()
    e.close()       # the connection ends without </stream:stream>: the session hibernates
    t.ok(srv.wait_log(r"hibernating", start=mark), "the server notices the lost connection and keeps the session")
    f.message("erin@localhost/phone", "r-2")
    f.message("erin@localhost", "r-3")
    f.ping_server()
    t.ok(presence_from(f, "erin@localhost", "unavailable", timeout=0.5) is None,
         "issue 13: while erin's session hibernates, frank does not see her unavailable")

    # someone else cannot take the session over
    setup_users(srv, "mallory")
    m, ans = resume_login(srv, "mallory", previd, 0)
    t.ok(ans is not None and ans.tag == q(NS_SM, "failed") and failed_condition(ans) == "item-not-found"
         and ans.get("h") is None,
         "XEP-0198 §5: another account's previd is <item-not-found/> (and no h is given away)", el_str(ans))
    m.end()

    e2, ans = resume_login(srv, "erin", previd, h_before - 1)
    t.ok(ans is not None and ans.tag == q(NS_SM, "resumed") and ans.get("previd") == previd,
         "XEP-0198 §5: <resume previd h/> is answered with <resumed previd/>", el_str(ans))
    t.ok(ans is not None and ans.get("h") is not None,
         "XEP-0198 §5: <resumed/> carries the server's h", el_str(ans))
    got = take_messages(e2, f)
    t.is_(got, ["r-1", "r-2", "r-3"],
          "XEP-0198 §5: what the client did not acknowledge is sent again, in order (r-1 was not acked)")
    e2.ack()
    t.ok(e2.ping_server(), "the resumed session works (ping)")
    f.message("erin@localhost/phone", "r-4")
    t.ok(e2.expect_message("r-4") is not None, "new messages reach the resumed session")
    e2.drain()
    e2.ack()
    e2.ping_server()
    e2.end()        # a clean close: nothing unacknowledged, nothing stored
    t.ok(presence_from(f, "erin@localhost", "unavailable") is not None,
         "after the resumed session closes, frank sees erin unavailable")
    # the session is gone: resuming it fails, with the h the server had
    e3, ans = resume_login(srv, "erin", previd, 0)
    t.ok(ans is not None and ans.tag == q(NS_SM, "failed") and failed_condition(ans) == "item-not-found"
         and ans.get("h") is not None,
         "XEP-0198 §5: resuming a session that ended gives <failed h/> with <item-not-found/>", el_str(ans))
    e3.send("<resume xmlns='%s' previd='no-such-id' h='0'/>" % NS_SM)
    ans = e3.expect(q(NS_SM, "failed"))
    t.ok(ans is not None and failed_condition(ans) == "item-not-found" and ans.get("h") is None,
         "XEP-0198 §5: an unknown previd: <failed/> with <item-not-found/>, no h", el_str(ans))
    e3.end()
    t.is_(offline_bodies(srv, "erin", "later"), [], "nothing acknowledged was stored offline")
    f.end()


def hibernate_unacked(t, srv, sender, user, body):
    """user@localhost/phone enables resumption, gets body from sender (desk) without acknowledging it,
    and loses the connection: its session hibernates. Returns (sender's client, the resumption id)."""
    p = sm_login(srv, sender, "desk")
    o = sm_login(srv, user, "phone")
    o.presence()
    o.drain()
    en = o.enable(resume=True)
    previd = en.get("id") if en is not None else None
    p.message(user + "@localhost/phone", body)
    t.ok(o.expect_message(body) is not None, "%s gets %s and does not acknowledge it" % (user, body))
    mark = srv.log_mark()
    o.close()
    t.ok(srv.wait_log(r"hibernating", start=mark), "%s's session hibernates" % user)
    return p, previd


def replaced_while_hibernating(t, srv):
    """A new session that binds the resource of a hibernating one replaces it (RFC 6120 §7.7.2.2):
    the old session's unacknowledged messages go to offline storage and reach the new one once."""
    setup_users(srv, "olga", "pete")
    p, previd = hibernate_unacked(t, srv, "pete", "olga", "c-1")
    p.message("olga@localhost/phone", "c-2")
    p.ping_server()
    o2 = sm_login(srv, "olga", "phone")
    o2.presence()
    t.is_(take_messages(o2), ["c-1", "c-2"],
          "binding the hibernating session's resource again: its unacknowledged messages arrive, once")
    o2.end()
    o3, ans = resume_login(srv, "olga", previd, 0)
    t.ok(ans is not None and ans.tag == q(NS_SM, "failed") and failed_condition(ans) == "item-not-found",
         "the replaced session cannot be resumed", el_str(ans))
    o3.end()
    t.is_(offline_bodies(srv, "olga", "later"), [], "nothing is left stored")
    p.end()


def restart(t, srv):
    """Resumption does not survive a restart: at SIGTERM every session ends, a hibernating one too,
    and its unacknowledged messages go to offline storage; <resume/> afterwards fails."""
    setup_users(srv, "quinn", "rita")
    r, previd = hibernate_unacked(t, srv, "rita", "quinn", "q-1")
    r.message("quinn@localhost/phone", "q-2")
    r.ping_server()
    r.close()
    t.is_(srv.stop(), 0, "civitasd stops cleanly (SIGTERM) with a hibernating session")
    srv.start()
    q2, ans = resume_login(srv, "quinn", previd, 0)
    t.ok(ans is not None and ans.tag == q(NS_SM, "failed") and failed_condition(ans) == "item-not-found"
         and ans.get("h") is None,
         "after a restart <resume/> gets <failed><item-not-found/></failed> without h", el_str(ans))
    q2.end()
    t.is_(offline_bodies(srv, "quinn", "again"), ["q-1", "q-2"],
          "the hibernating session's unacknowledged messages were stored at the stop, delivered once")
    t.is_(offline_bodies(srv, "quinn", "third"), [], "... and only once")


def silent_cut(t, srv):
    """issue 13's key test: the TCP connection dies without FIN mid-conversation; the client resumes
    on a new connection and every message arrives exactly once."""
    setup_users(srv, "gina", "hank")
    hk = sm_login(srv, "hank", "desk")
    proxy = SilentProxy(srv.port("client"))
    g = sm_login(srv, "gina", "phone", port=proxy.port)
    g.presence()
    g.drain()
    en = g.enable(resume=True)
    previd = en.get("id") if en is not None else None
    t.ok(previd, "gina enables resumption through the proxy")
    g.auto_ack = True
    received = []
    for i in range(5):
        hk.message("gina@localhost/phone", "s-%d" % i)
    received += take_messages(g, hk)
    t.is_(received, ["s-%d" % i for i in range(5)], "the first messages arrive through the proxy")
    g.server_h()
    # one more reaches gina but she does not get to acknowledge it before the cut
    g.auto_ack = False
    hk.message("gina@localhost/phone", "s-5")
    received += bodies([g.expect_message("s-5")])
    proxy.cut()
    for i in range(6, 12):
        hk.message("gina@localhost/phone", "s-%d" % i)
    hk.ping_server()
    g2, ans = resume_login(srv, "gina", previd, g.h)
    t.ok(ans is not None and ans.tag == q(NS_SM, "resumed"),
         "gina resumes on a new connection while the old one is silently dead", el_str(ans))
    received += take_messages(g2)
    t.is_(received, ["s-%d" % i for i in range(12)],
          "issue 13: after a cut without FIN and resumption every message arrived exactly once, in order")
    g2.ack()
    hk.message("gina@localhost/phone", "s-12")
    t.ok(g2.expect_message("s-12") is not None, "the resumed session receives new messages")
    g2.drain()
    g2.ack()
    g2.ping_server()
    g2.end()
    t.is_(offline_bodies(srv, "gina", "later"), [], "nothing was left for offline storage")
    proxy.close()
    hk.end()


def silent_cut_no_resume(t, srv):
    """The same cut, never resumed: no answer to <r/> within ack_timeout counts the connection as
    lost; after the hibernation the unacknowledged messages are in offline storage, delivered once."""
    setup_users(srv, "ivy", "jack")
    jk = sm_login(srv, "jack", "desk")
    jk.presence()
    proxy = SilentProxy(srv.port("client"))
    i = sm_login(srv, "ivy", "phone", port=proxy.port)
    i.presence()
    subscribe(t, jk, "jack@localhost", i, "ivy@localhost")
    i.presence()
    t.ok(presence_from(jk, "ivy@localhost", None) is not None, "jack sees ivy available")
    i.drain()
    en = i.enable(resume=True)
    t.ok(en is not None and en.get("id"), "ivy enables resumption")
    i.auto_ack = True
    jk.message("ivy@localhost/phone", "n-0")
    jk.message("ivy@localhost/phone", "n-1")
    got = take_messages(i, jk)
    i.ack()
    i.server_h()        # the ack was handled before the cut
    i.auto_ack = False
    mark = srv.log_mark()
    proxy.cut()
    jk.message("ivy@localhost/phone", "n-2")
    jk.message("ivy@localhost", "n-3")
    t.ok(srv.wait_log(r"no acknowledgement within", start=mark),
         "no <a/> within smacks.ack_timeout: the connection counts as lost")
    t.ok(srv.wait_log(r"not resumed within", start=mark), "the hibernation ends without resumption")
    t.ok(presence_from(jk, "ivy@localhost", "unavailable") is not None,
         "when the hibernation ends, jack sees ivy unavailable")
    stored = offline_bodies(srv, "ivy", "again")
    t.is_(got, ["n-0", "n-1"], "the first messages arrived (and were acknowledged) before the cut")
    t.is_(stored, ["n-2", "n-3"],
          "issue 13: the unacknowledged messages come from offline storage at the next login")
    t.is_(offline_bodies(srv, "ivy", "third"), [], "... once")
    proxy.close()
    jk.end()


def not_restored_twice(t, srv):
    """Carbon copies and messages another resource also got are not stored again."""
    setup_users(srv, "kim", "lou")
    lo = sm_login(srv, "lou", "desk")
    desk = sm_login(srv, "kim", "desk")
    desk.presence()
    r = desk.iq("set", "<enable xmlns='%s'/>" % NS_CARBONS)
    t.ok(r is not None and r.get("type") == "result", "kim's desk enables carbons")
    ph = sm_login(srv, "kim", "phone")
    ph.presence()
    r = ph.iq("set", "<enable xmlns='%s'/>" % NS_CARBONS)
    ph.drain()
    en = ph.enable(resume=True)
    t.ok(en is not None and en.get("id"), "kim's phone enables resumption and carbons")
    lo.message("kim@localhost/phone", "to-phone")          # the desk gets a carbon copy
    lo.message("kim@localhost/desk", "to-desk")            # the phone gets a carbon copy
    lo.message("kim@localhost", "to-bare")                 # both get it (equal priority)
    lo.send("<message to='kim@localhost/phone' type='chat'><body>private</body>"
            "<private xmlns='%s'/></message>" % NS_CARBONS)   # XEP-0280 §7: only the phone has it
    t.ok(ph.expect_message("to-phone") is not None and ph.expect_message("private") is not None,
         "the phone got its messages")
    desk.ping_server()
    lo.ping_server()
    ph.ping_server()
    mark = srv.log_mark()
    ph.close()
    t.ok(srv.wait_log(r"not resumed within", start=mark), "the phone's hibernation ends")
    lo.ping_server()
    desk.end()
    t.is_(offline_bodies(srv, "kim", "third"), ["private"],
          "a carbon copy, a message the desk had as a carbon and a message the desk also got are not stored; "
          "the <private/> message only the phone had is")
    lo.end()


def offline_replay(t, srv):
    """Offline messages replayed to a stream-managed session leave storage only once acknowledged:
    a replay the client never acknowledged survives even a killed server, and comes once."""
    setup_users(srv, "max", "ned")
    nd = sm_login(srv, "ned", "desk")
    nd.message("max@localhost", "o-1")
    nd.message("max@localhost", "o-2")
    nd.ping_server()
    m = sm_login(srv, "max", "phone")
    en = m.enable(resume=True)
    t.ok(en is not None and en.get("id"), "max enables resumption before his first presence")
    m.presence()
    t.is_(take_messages(m), ["o-1", "o-2"], "the offline messages are replayed (and not acknowledged)")
    srv.proc.kill()                     # SIGKILL: nothing of the session's memory survives
    srv.proc.wait(10)
    srv.exit_code = None
    m.close()
    nd.close()
    srv.start()
    t.is_(offline_bodies(srv, "max", "again"), ["o-1", "o-2"],
          "issue 13: replayed offline messages that were never acknowledged are still stored after a kill")
    t.is_(offline_bodies(srv, "max", "third"), [], "... and once delivered without stream management, gone")
    # acknowledged: deleted, and a lost connection afterwards stores nothing again
    nd = sm_login(srv, "ned", "desk")
    nd.message("max@localhost", "o-3")
    nd.ping_server()
    m = sm_login(srv, "max", "phone")
    m.enable(resume=True)
    m.auto_ack = True
    m.presence()
    t.is_(take_messages(m), ["o-3"], "o-3 is replayed")
    # fewer than ack_request_after stanzas: the server asks after ack_request_delay
    t.ok(m.read_until(lambda: m.requests > 0), "XEP-0198 §4: the server asks for an acknowledgement")
    m.server_h()        # max's answer was handled
    mark = srv.log_mark()
    m.close()
    t.ok(srv.wait_log(r"not resumed within", start=mark), "max's hibernation ends")
    t.is_(offline_bodies(srv, "max", "later"), [], "an acknowledged replayed message is neither kept nor stored again")
    nd.end()


def two_managed(t, srv):
    """A message to the bare JID reaches two stream-managed resources; neither acknowledges it and
    both sessions end: it is stored once (not lost because the other had it, not stored twice)."""
    setup_users(srv, "sam", "tom")
    tm = sm_login(srv, "tom", "desk")
    clients = []
    for res in ("phone", "tablet"):
        c = sm_login(srv, "sam", res)
        c.presence()
        c.drain()
        en = c.enable(resume=True)
        t.ok(en is not None and en.get("id"), "sam's %s enables resumption" % res)
        clients.append(c)
    tm.message("sam@localhost", "both-1")
    for c in clients:
        t.ok(c.expect_message("both-1") is not None, "each of sam's resources gets the bare-JID message")
    mark = srv.log_mark()
    for c in clients:
        c.close()
    first = srv.wait_log(r"not resumed within", start=mark)
    second = first and srv.wait_log(r"not resumed within", start=srv._lines.index(first, mark) + 1)
    t.ok(second, "both hibernations end")
    t.is_(offline_bodies(srv, "sam", "later"), ["both-1"], "the message is stored once")
    tm.end()


def batched_requests(t, srv):
    """The server asks for an acknowledgement after smacks.ack_request_after unacknowledged stanzas
    (5 here; ack_request_delay is 60 s, so no timer asks within this test), not after each one;
    what is acknowledged leaves the queue: a resumption after the acks sends nothing again."""
    setup_users(srv, "uma", "yan")
    y = sm_login(srv, "yan", "desk")
    z = sm_login(srv, "uma", "phone")
    en = z.enable(resume=True)
    t.ok(en is not None and en.get("id"), "uma enables stream management with resumption", el_str(en))
    z.auto_ack = True
    start = len(z.received)
    k = 20
    got = 0
    for i in range(k):
        y.message("uma@localhost/phone", "b-%d" % i)
        got += z.expect_message("b-%d" % i) is not None
        # two round trips on uma's stream: an <r/> written after the message has been read and
        # answered, and the server has handled that <a/> before the next message is written
        z.server_h()
        z.server_h()
    t.is_(got, k, "uma gets the %d messages, one at a time" % k)
    t.diag("bytes received per message, <r/> included: %.1f" % ((len(z.received) - start) / k))
    t.ok(1 <= z.requests < k, "XEP-0198 §4: the server asked for acknowledgements, fewer times (%d) than it "
         "sent messages (%d)" % (z.requests, k))
    t.is_(z.requests, k // 5, "an <r/> after every 5 unacknowledged stanzas (smacks.ack_request_after)")
    h = z.h
    mark = srv.log_mark()
    z.close()
    t.ok(srv.wait_log(r"hibernating", start=mark), "the connection is lost: the session hibernates")
    z2, ans = resume_login(srv, "uma", en.get("id"), h)
    t.ok(ans is not None and ans.tag == q(NS_SM, "resumed"), "uma resumes", el_str(ans))
    t.ok(srv.wait_log(r"session resumed, 0 stanza\(s\) sent again", start=mark),
         "the acknowledged stanzas left the queue: nothing is sent again on resumption")
    t.is_(take_messages(z2), [], "no message arrives twice")
    z2.end()
    y.end()
def max_unacked_bytes(t, srv):
    """The queue of unacknowledged stanzas is bounded in bytes as well as in number: a client that
    never acknowledges (or a hibernating session) held up to max_unacked stanzas of up to
    limits.max_stanza_size each. Past smacks.max_unacked_bytes (64K here) the stream closes as past
    max_unacked, the messages go to offline storage."""
    setup_users(srv, "ursa", "vic")
    c = sm_login(srv, "ursa", "phone")
    c.presence()
    c.drain()
    e = c.enable()
    t.ok(e is not None and e.tag == q(NS_SM, "enabled"), "ursa enables stream management")
    d = sm_login(srv, "vic", "desk")
    bodies = ["big-%d-%s" % (i, "x" * 20000) for i in range(5)]
    for b in bodies:
        d.message("ursa@localhost/phone", b)
    err = c.read_stream_error()
    t.ok(err is not None and err[0] == "policy-violation",
         "5 unacknowledged messages of 20 kB (under max_unacked 100, over max_unacked_bytes 64K): "
         "<policy-violation/>", str(err))
    c.close()
    d.ping_server()
    got = offline_bodies(srv, "ursa", "again")
    t.is_(sorted(got), sorted(bodies), "the unacknowledged messages go to offline storage, each once")
    d.end()


def hibernating_cap(t, srv):
    """smacks.max_hibernating_per_account (2 here): a third hibernating session of one account ends
    the oldest, whose unacknowledged messages go to offline storage as when its hibernation ends."""
    setup_users(srv, "uma", "vic")
    v = sm_login(srv, "vic", "desk")
    ids = []
    for i in range(3):
        c = sm_login(srv, "uma", "r%d" % i)
        c.presence()
        c.drain()
        en = c.enable(resume=True)
        ids.append(en.get("id") if en is not None else None)
        v.message("uma@localhost/r%d" % i, "cap-%d" % i)
        t.ok(c.expect_message("cap-%d" % i) is not None, "uma/r%d gets cap-%d and does not acknowledge it" % (i, i))
        mark = srv.log_mark()
        c.close()
        t.ok(srv.wait_log(r"hibernating", start=mark), "uma/r%d hibernates" % i)
    v.ping_server()
    c0, ans = resume_login(srv, "uma", ids[0], 0)
    t.ok(ans is not None and ans.tag == q(NS_SM, "failed") and failed_condition(ans) == "item-not-found",
         "the third hibernating session ended the oldest: it cannot be resumed", el_str(ans))
    c0.end()
    t.is_(offline_bodies(srv, "uma", "later"), ["cap-0"], "its unacknowledged message went to offline storage")
    for i in (1, 2):
        c, ans = resume_login(srv, "uma", ids[i], 0)
        t.ok(ans is not None and ans.tag == q(NS_SM, "resumed"), "the newer uma/r%d is still resumable" % i,
             el_str(ans))
        t.is_(take_messages(c), ["cap-%d" % i], "and gets cap-%d again" % i)
        c.ack()
        c.ping_server()
        c.end()
    v.end()


def main(t):
    conf = "smacks: {hibernation: 300, max_unacked: 5, ack_timeout: 60}\n"
    with Server(t, extra_yaml=conf) as srv:
        t.run(basics, t, srv)
        t.run(max_unacked, t, srv)
    with Server(t, extra_yaml="smacks: {hibernation: 300, max_unacked: 100, ack_timeout: 60}\n") as srv:
        t.run(resumption, t, srv)
        t.run(silent_cut, t, srv)
        t.run(replaced_while_hibernating, t, srv)
        t.run(restart, t, srv)
    with Server(t, extra_yaml="smacks: {hibernation: 2, max_unacked: 100, ack_timeout: 2}\n") as srv:
        t.run(silent_cut_no_resume, t, srv)
        t.run(not_restored_twice, t, srv)
        t.run(two_managed, t, srv)
        t.run(offline_replay, t, srv)
    with Server(t, extra_yaml="smacks: {hibernation: 300, max_hibernating_per_account: 2}\n") as srv:
        t.run(hibernating_cap, t, srv)
    with Server(t, extra_yaml="smacks: {ack_request_after: 5, ack_request_delay: 60}\n") as srv:
        t.run(batched_requests, t, srv)
    with Server(t, extra_yaml="smacks: {max_unacked: 100, max_unacked_bytes: 64K}\n") as srv:
        t.run(max_unacked_bytes, t, srv)


if __name__ == "__main__":
    Tap().main(main)
