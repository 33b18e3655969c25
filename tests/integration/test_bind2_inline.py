#!/usr/bin/python3
# tests/integration/test_bind2_inline.py: what a phone negotiates in SASL2's one round trip besides
# carbons (test_sasl2.py): XEP-0198 stream management enabled inside Bind2 (<enabled/> in <bound/>),
# XEP-0352 <inactive/> inside Bind2, and a XEP-0198 session resumed inside SASL2 (<resume/> in
# <authenticate/>, <resumed/> in <success/>, Bind2 skipped; a failed resumption falls back to Bind2).
# XEP-0198 1.6.3 (its SASL2 and Bind2 use), XEP-0386 1.1.0 §3, XEP-0388 1.0.4 §2.6. Raw stanzas over direct TLS.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, Server, connect_login, q, el_str, NS_CLIENT, NS_STANZAS  # noqa: E402
from test_sasl2 import Sasl2Client, authz, NS_SASL2, NS_BIND2  # noqa: E402

NS_SM = "urn:xmpp:sm:3"
NS_CSI = "urn:xmpp:csi:0"
NS_CS = "http://jabber.org/protocol/chatstates"
PW = "pw-bind2-inline"


def label(el):
    if el.tag == q(NS_CLIENT, "message"):
        b = el.find(q(NS_CLIENT, "body"))
        if b is not None:
            return "m:" + (b.text or "")
        for ch in el:
            if ch.tag.startswith("{%s}" % NS_CS):
                return "c:" + ch.tag.split("}")[1]
    return None


def messages_until(c, last, timeout=15):
    """Labels of the messages c gets, in order, up to and including the one labelled last."""
    got = []

    def pred():
        while c.inbox:
            lb = label(c.inbox.pop(0))
            if lb:
                got.append(lb)
                if lb == last:
                    return True
        return None
    c.read_until(pred, timeout)
    return got


def features(t, srv):
    c = Sasl2Client(srv)
    f = c.start()
    a = f.find(q(NS_SASL2, "authentication")) if f is not None else None
    inl = a.find(q(NS_SASL2, "inline")) if a is not None else None
    t.ok(inl is not None and inl.find(q(NS_SM, "sm")) is not None,
         "XEP-0198 / XEP-0388 §2.1: <sm xmlns='urn:xmpp:sm:3'/> in SASL2's <inline/> (resumption inside SASL2)",
         lambda: el_str(f))
    b = inl.find(q(NS_BIND2, "bind")) if inl is not None else None
    feats = [x.get("var") for x in b.iter(q(NS_BIND2, "feature"))] if b is not None else []
    t.ok(NS_SM in feats, "XEP-0386 §3.1: urn:xmpp:sm:3 is an inline Bind2 feature", lambda: el_str(f))
    t.ok(NS_CSI in feats, "XEP-0386 §3.1: urn:xmpp:csi:0 is an inline Bind2 feature", lambda: el_str(f))
    c.end()


def inline(t, srv):
    bob = connect_login(srv, "bob", PW, resource="b")
    a = Sasl2Client(srv)
    a.start()
    ok, cond, _ = a.scram("alice", PW, extra="<bind xmlns='%s'><tag>Phone</tag><enable xmlns='%s' resume='true'/>"
                          "<inactive xmlns='%s'/></bind>" % (NS_BIND2, NS_SM, NS_CSI))
    bound = ok.find(q(NS_BIND2, "bound")) if ok is not None else None
    en = bound.find(q(NS_SM, "enabled")) if bound is not None else None
    t.ok(en is not None and en.get("id") and en.get("resume") in ("true", "1"),
         "XEP-0198 / XEP-0386 §3.2: <enable resume='true'/> in <bind/> is answered by <enabled id resume/> "
         "inside <bound/>", lambda: el_str(ok) if ok is not None else cond)
    jid = authz(ok)
    pf = a.post_features()
    t.ok(pf is not None, "the features follow <success/>", a.dump)
    a.send("<r xmlns='%s'/>" % NS_SM)
    ans = a.expect(q(NS_SM, "a"))
    t.is_(ans.get("h") if ans is not None else None, "0",
          "XEP-0198 §4: stream management is on from <enabled/>: <r/> is answered <a h='0'/>")
    a.ping_server()
    a.send("<r xmlns='%s'/>" % NS_SM)
    ans = a.expect(q(NS_SM, "a"))
    t.is_(ans.get("h") if ans is not None else None, "1", "one stanza (the ping) handled: <a h='1'/>")

    # XEP-0352 inline: the session is inactive: of two chat states only the latest waits, and a
    # message with a body flushes it
    for st in ("composing", "paused"):
        bob.send("<message to='%s' type='chat'><%s xmlns='%s'/></message>" % (jid, st, NS_CS))
    bob.message(jid, "hello")
    t.is_(messages_until(a, "m:hello"), ["c:paused", "m:hello"],
          "XEP-0386 §3.2 + XEP-0352: <inactive/> in <bind/>: only the latest chat state waited, the body flushed it")

    # the connection is lost; the session hibernates and is resumed inside SASL2
    mark = srv.log_mark()
    a.close()
    t.ok(srv.wait_log("hibernating", start=mark), "alice's connection is lost; the session hibernates")
    bob.message(jid, "while away")
    bob.ping_server()
    r = Sasl2Client(srv)
    r.start()
    ok, cond, _ = r.scram("alice", PW, extra="<resume xmlns='%s' previd='%s' h='0'/><bind xmlns='%s'><tag>Phone</tag>"
                          "</bind>" % (NS_SM, en.get("id") if en is not None else "x", NS_BIND2))
    res = ok.find(q(NS_SM, "resumed")) if ok is not None else None
    t.ok(res is not None and res.get("previd") == (en.get("id") if en is not None else None) and res.get("h") is not None,
         "XEP-0198 / XEP-0388: <resume/> in <authenticate/> is answered by <resumed previd h/> in <success/>",
         lambda: el_str(ok) if ok is not None else cond)
    t.ok(ok is not None and ok.find(q(NS_BIND2, "bound")) is None,
         "XEP-0386 §3.2: a resumed session skips Bind2 (no <bound/>)", lambda: el_str(ok))
    t.is_(authz(ok), jid, "XEP-0388 §2.6: the authorization identifier is the resumed session's full JID")
    r.post_features()
    got = messages_until(r, "m:while away")
    t.ok(got and got[-1] == "m:while away" and "m:hello" in got,
         "XEP-0198 §5: what was not acknowledged (h=0: all) is sent again after <success/>, the message queued "
         "while hibernated last", lambda: repr(got))
    bob.message(jid, "now")
    t.is_(messages_until(r, "m:now"), ["m:now"], "the resumed session gets new messages")
    r.send("<r xmlns='%s'/>" % NS_SM)
    t.ok(r.expect(q(NS_SM, "a")) is not None, "stream management goes on in the resumed session")
    r.end()

    # an unknown previd: <failed/> in <success/>, and Bind2 binds a new session
    f = Sasl2Client(srv)
    f.start()
    ok, cond, _ = f.scram("alice", PW, extra="<resume xmlns='%s' previd='no-such-id' h='0'/><bind xmlns='%s'>"
                          "<tag>Phone</tag></bind>" % (NS_SM, NS_BIND2))
    fl = ok.find(q(NS_SM, "failed")) if ok is not None else None
    t.ok(fl is not None and fl.find(q(NS_STANZAS, "item-not-found")) is not None,
         "XEP-0198: a resumption that fails inside SASL2 is <failed><item-not-found/></failed> in <success/>",
         lambda: el_str(ok) if ok is not None else cond)
    t.ok(ok is not None and ok.find(q(NS_BIND2, "bound")) is not None and authz(ok) and authz(ok) != jid,
         "XEP-0386: after a failed resumption Bind2 binds a new resource", lambda: el_str(ok))
    f.post_features()
    t.ok(f.ping_server(), "the new session works")
    f.end()
    bob.end()


def main(t):
    with Server(t) as srv:
        srv.adduser("alice@localhost", PW)
        srv.adduser("bob@localhost", PW)
        t.run(features, t, srv)
        t.run(inline, t, srv)


if __name__ == "__main__":
    Tap().main(main)
