#!/usr/bin/python3
# tests/integration/test_push.py: XEP-0357 Push Notifications (modules/mod_push.c). The app server is
# played by a raw client logged in as appsrv@localhost/push (any XMPP entity can be one: the server
# publishes to the JID the client names): it records each publish it is sent and answers with a
# result or an error. Checked: the account feature; <enable/> errors; a message for an account
# without a session becomes one publish to the registered node with a urn:xmpp:push:summary form
# (message-count; a fixed last-message-body for important messages; never the sender or the body by
# default) and the publish-options echoed; chat states push nothing, a message to an online user
# neither; registrations survive a restart; include_sender/include_body per host; <disable/>; a
# registration goes after max_errors failed publishes; account deletion removes registrations; a
# message queued for a XEP-0198 hibernated session (mod_smacks) pushes that resource's registration,
# and such a session is kept for smacks.push_hibernation.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, Server, connect_login, q, el_str, NS_CLIENT, NS_STANZAS  # noqa: E402
from test_smacks import SmClient, NS_SM  # noqa: E402

PW = "pw-push"
NS_PUSH = "urn:xmpp:push:0"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_X = "jabber:x:data"
NS_INFO = "http://jabber.org/protocol/disco#info"
APP = "appsrv@localhost/push"
OPTIONS = ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
           "<value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
           "<field var='secret'><value>%s</value></field></x>")
SECRET_BODY = "meet me at the town hall"


def enable(c, node, secret=None, jid=APP):
    form = OPTIONS % secret if secret else ""
    return c.iq("set", "<enable xmlns='%s' jid='%s' node='%s'>%s</enable>" % (NS_PUSH, jid, node, form))


def form_fields(x):
    return {f.get("var"): f.findtext(q(NS_X, "value")) for f in x.findall(q(NS_X, "field"))} if x is not None else {}


class AppServer:
    """The fake app server: records publishes, answers each with a result or an error."""

    def __init__(self, srv):
        self.c = connect_login(srv, "appsrv", PW, resource="push")
        self.fail = set()        # nodes answered with an error

    def next(self, timeout=10):
        """The next publish as (node, summary fields, publish-options fields, the IQ), answered."""
        iq = self.c.expect(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("type") == "set"
                           and el.find(q(NS_PUBSUB, "pubsub")) is not None, timeout)
        if iq is None:
            return None
        ps = iq.find(q(NS_PUBSUB, "pubsub"))
        pub = ps.find(q(NS_PUBSUB, "publish"))
        node = pub.get("node") if pub is not None else None
        x = pub.find("%s/%s/%s" % (q(NS_PUBSUB, "item"), q(NS_PUSH, "notification"), q(NS_X, "x"))) if pub is not None else None
        po = ps.find("%s/%s" % (q(NS_PUBSUB, "publish-options"), q(NS_X, "x")))
        if node in self.fail:
            self.c.send("<iq type='error' id='%s' to='%s'><error type='cancel'><item-not-found xmlns='%s'/></error></iq>"
                        % (iq.get("id"), iq.get("from"), NS_STANZAS))
        else:
            self.c.send("<iq type='result' id='%s' to='%s'/>" % (iq.get("id"), iq.get("from")))
        return node, form_fields(x), form_fields(po), iq

    def none(self):
        """True when no publish is waiting: everything the server had written before it answered
        our ping was read."""
        self.c.ping_server()
        return not any(el.tag == q(NS_CLIENT, "iq") and el.find(q(NS_PUBSUB, "pubsub")) is not None
                       for el in self.c.inbox)


def basics(t, srv, app):
    alice = connect_login(srv, "alice", PW, resource="phone")
    r = alice.iq("get", "<query xmlns='%s'/>" % NS_INFO, to="alice@localhost")
    feats = [f.get("var") for f in r.iter(q(NS_INFO, "feature"))] if r is not None else []
    t.ok(NS_PUSH in feats, "XEP-0357 §4: the account's disco#info lists urn:xmpp:push:0", lambda: el_str(r))

    r = alice.iq("set", "<enable xmlns='%s' node='n'/>" % NS_PUSH)
    t.is_(r.get("type") if r is not None else None, "error", "XEP-0357 §5: <enable/> without jid is an error")
    r = alice.iq("set", "<enable xmlns='%s' jid='%s' node='n'><x xmlns='jabber:x:data' type='submit'>"
                 "<field var='FORM_TYPE'><value>urn:example:other</value></field></x></enable>" % (NS_PUSH, APP))
    t.ok(r is not None and r.get("type") == "error" and r.find(".//" + q(NS_STANZAS, "bad-request")) is not None,
         "a form that is not pubsub#publish-options is <bad-request/>", lambda: el_str(r))
    r = alice.iq("set", "<enable xmlns='%s' jid='%s' node='n'/>" % (NS_PUSH, APP), to="bob@localhost")
    t.is_(r.get("type") if r is not None else None, "error", "nobody enables push for another account")

    r = enable(alice, "phone-node", "s3cret-phone")
    t.is_(r.get("type") if r is not None else None, "result", "XEP-0357 §5: <enable jid node> with publish-options: result")
    bob = connect_login(srv, "bob", PW, resource="b")
    alice.presence()
    alice.ping_server()
    bob.message("alice@localhost", "while online")
    t.ok(alice.expect_message("while online") is not None and app.none(),
         "a message delivered to a session pushes nothing")
    alice.end()
    bob.message("alice@localhost", SECRET_BODY)
    p = app.next()
    t.ok(p is not None, "XEP-0357 §7: a message for an account without a session is published to the app server")
    if p is None:
        return bob
    node, summary, po, iq = p
    t.is_(node, "phone-node", "the publish goes to the registered node")
    t.is_(iq.get("from"), "alice@localhost", "the publish comes from the account's bare JID")
    t.is_(summary.get("FORM_TYPE"), "urn:xmpp:push:summary", "the notification holds a urn:xmpp:push:summary form")
    t.is_(summary.get("message-count"), "1", "message-count: 1")
    t.is_(summary.get("last-message-body"), "New message", "an important message: the fixed last-message-body")
    t.ok("last-message-sender" not in summary, "privacy default: no last-message-sender", lambda: repr(summary))
    raw = el_str(iq)
    t.ok(SECRET_BODY not in raw and "bob@" not in raw, "privacy default: neither the body nor the sender anywhere",
         lambda: raw)
    t.is_(po, {"FORM_TYPE": "http://jabber.org/protocol/pubsub#publish-options", "secret": "s3cret-phone"},
          "XEP-0357 §5: the publish-options are echoed in the publish")

    # chat states push nothing; an OMEMO payload without a body is important
    bob.send("<message to='alice@localhost' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
    bob.send("<message to='alice@localhost' type='chat'><encrypted xmlns='eu.siacs.conversations.axolotl'>"
             "<header sid='1'/></encrypted><store xmlns='urn:xmpp:hints'/></message>")
    p = app.next()
    t.ok(p is not None and p[1].get("message-count") == "2" and p[1].get("last-message-body") == "New message",
         "a chat state pushes nothing; the OMEMO message that follows is #2 with the fixed text",
         lambda: repr(p and p[1]))
    # a call (XEP-0353) too
    bob.send("<message to='alice@localhost' type='chat'><propose xmlns='urn:xmpp:jingle-message:0' id='c1'>"
             "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose><store xmlns='urn:xmpp:hints'/></message>")
    p = app.next()
    t.ok(p is not None and p[1].get("message-count") == "3" and p[1].get("last-message-body") == "New message",
         "a XEP-0353 call proposal is pushed as important", lambda: repr(p and p[1]))
    # a stored message without body (key transport): a push without last-message-body
    bob.send("<message to='alice@localhost' type='chat'><store xmlns='urn:xmpp:hints'/>"
             "<encryption xmlns='urn:xmpp:eme:0' namespace='x'/></message>")
    p = app.next()
    t.ok(p is not None and p[1].get("message-count") == "4" and "last-message-body" not in p[1],
         "a stored message without body or payload: pushed, without last-message-body", lambda: repr(p and p[1]))
    return bob


def errors_and_disable(t, srv, app, bob):
    alice = connect_login(srv, "alice", PW, resource="phone")
    r = alice.iq("set", "<disable xmlns='%s' jid='%s'/>" % (NS_PUSH, APP))
    t.is_(r.get("type") if r is not None else None, "result", "XEP-0357 §6: <disable jid/> without node: result")
    for node in ("a-bad", "b-good", "c-other"):
        r = enable(alice, node, "s-" + node)
        t.is_(r.get("type") if r is not None else None, "result", "enable %s" % node)
    alice.end()
    app.fail.add("a-bad")
    for i in range(2):
        bob.message("alice@localhost", "m%d" % i)
        got = sorted(p[0] for p in (app.next(), app.next(), app.next()) if p)
        t.ok(got == ["a-bad", "b-good", "c-other"] and app.none(),
             "message %d: one publish per registration (phone-node went with <disable jid/>)" % i,
             lambda: repr(got))
    bob.message("alice@localhost", "m2")
    got = [p[0] for p in (app.next(), app.next()) if p]
    t.ok(sorted(got) == ["b-good", "c-other"] and app.none(),
         "push.max_errors (2): after two errors in a row the registration is dropped", lambda: repr(got))

    alice = connect_login(srv, "alice", PW, resource="phone")
    r = alice.iq("set", "<disable xmlns='%s' jid='%s' node='b-good'/>" % (NS_PUSH, APP))
    t.is_(r.get("type") if r is not None else None, "result", "XEP-0357 §6: <disable jid node/>: result")
    alice.end()
    bob.message("alice@localhost", "m3")
    p = app.next()
    t.ok(p is not None and p[0] == "c-other" and app.none(), "after <disable/> only the other registration is pushed",
         lambda: repr(p))


def main(t):
    extra = "push: {max_errors: 2}\n"
    with Server(t, extra_yaml=extra) as srv:
        for u in ("alice", "bob", "appsrv"):
            srv.adduser("%s@localhost" % u, PW)
        app = AppServer(srv)
        bob = basics(t, srv, app)
        bob.end()
        app.c.end()

        # registrations are stored: after a restart they are still there (count starts again)
        srv.stop()
        srv.start()
        app = AppServer(srv)
        bob = connect_login(srv, "bob", PW, resource="b")
        bob.message("alice@localhost", "after restart")
        p = app.next()
        t.ok(p is not None and p[0] == "phone-node" and p[2].get("secret") == "s3cret-phone"
             and p[1].get("message-count") == "1",
             "the registration and its publish-options survive a restart", lambda: repr(p and p[:3]))
        bob.end()
        app.c.end()

        # the admin may include sender and body, per host
        srv.stop()
        srv.extra_yaml = ("push: {max_errors: 2, hosts: {localhost: {include_sender: true, include_body: true}}}\n")
        srv.write_config()
        srv.start()
        app = AppServer(srv)
        bob = connect_login(srv, "bob", PW, resource="b")
        bob.message("alice@localhost", SECRET_BODY)
        p = app.next()
        t.ok(p is not None and p[1].get("last-message-sender") == "bob@localhost/b"
             and p[1].get("last-message-body") == SECRET_BODY,
             "push.include_sender and push.include_body (per host): the sender and the body", lambda: repr(p and p[1]))
        srv.stop()
        srv.extra_yaml = extra
        srv.write_config()
        srv.start()
        app = AppServer(srv)
        bob = connect_login(srv, "bob", PW, resource="b")

        errors_and_disable(t, srv, app, bob)

        # account deletion removes its registrations (civitasctl deletes the module's rows with the
        # account; a message to the address that is left is bounced and pushes nothing)
        r = srv.ctl("user", "del", "alice@localhost")
        t.is_(r.returncode, 0, "civitasctl user del alice")
        bob.message("alice@localhost", "to nobody", id="gone")
        err = bob.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("id") == "gone"
                         and el.get("type") == "error")
        t.ok(err is not None and app.none(), "after the account was deleted, nothing is pushed for it",
             lambda: bob.dump())
    t.run(hibernated_and_timeouts, t)


def sm_phone(t, srv, res, node=None):
    """alice's phone on resource res: push enabled for node (unless None), available, XEP-0198 with
    resumption; then its connection is lost (no </stream:stream>) and the session hibernates.
    Returns the resumption id."""
    a = SmClient(srv.port("client"), cafile=srv.ca)
    a.login("alice", PW, resource=res)
    if node:
        r = enable(a, node, "s-" + node)
        t.is_(r.get("type") if r is not None else None, "result", "enable %s from resource %s" % (node, res))
    a.presence()
    en = a.enable(resume=True)
    t.ok(en is not None and en.tag == q(NS_SM, "enabled") and en.get("id"), "%s: stream management with resumption" % res,
         lambda: el_str(en))
    a.drain()
    mark = srv.log_mark()
    a.close()
    t.ok(srv.wait_log("hibernating", start=mark), "%s: the connection is lost, the session hibernates" % res)
    return en.get("id") if en is not None else None


def hibernated_and_timeouts(t):
    """Real XEP-0198 hibernation (mod_smacks): a message queued for a hibernated session is pushed
    to the registrations enabled from that resource only ("smacks/hibernated-stanza"); such a
    session waits smacks.push_hibernation, one without push smacks.hibernation. And an app server
    that never answers: push.timeout counts as an error."""
    with Server(t, extra_yaml="push: {max_errors: 2, timeout: 1s}\nsmacks: {hibernation: 1s, push_hibernation: 1h}\n") as srv:
        for u in ("alice", "bob", "appsrv"):
            srv.adduser("%s@localhost" % u, PW)
        app = AppServer(srv)
        sm_phone(t, srv, "hib1", "n-hib1")
        previd = sm_phone(t, srv, "hib2", "n-hib2")
        bob = connect_login(srv, "bob", PW, resource="b")
        bob.message("alice@localhost/hib2", "to the sleeping phone")
        p = app.next()
        t.ok(p is not None and p[0] == "n-hib2" and p[1].get("last-message-body") == "New message" and app.none(),
             "smacks/hibernated-stanza: only the registration enabled from that resource is pushed", lambda: repr(p))

        # smacks.push_hibernation: a session without push ends after smacks.hibernation (1 s); hib2,
        # which lost its connection before, is still there and gets what was queued
        mark = srv.log_mark()
        sm_phone(t, srv, "nopush")
        t.ok(srv.wait_log("not resumed within 1s", 20, start=mark),
             "smacks.hibernation: a session without push is not kept after it")
        bob.message("alice@localhost/hib2", "once more")
        p = app.next()
        t.ok(p is not None and p[0] == "n-hib2", "hib2 is still hibernated: pushed again", lambda: repr(p))
        c, ans = resume_login(srv, previd)
        t.ok(ans is not None and ans.tag == q(NS_SM, "resumed"),
             "smacks.push_hibernation: the session that enabled push can still be resumed", lambda: el_str(ans))
        t.ok(c.expect_message("to the sleeping phone") is not None, "the resumed phone gets the message it was woken for")
        c.drain()
        c.ack()         # nothing left unacknowledged to store (and push) when it closes
        c.ping_server()
        c.end()

        # the app server does not answer n-hib1: each time-out counts; the second removes it
        silent = []

        def next_silent():
            iq = app.c.expect(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("type") == "set"
                              and el.find(".//" + q(NS_PUBSUB, "publish")) is not None, 20)
            if iq is not None:
                silent.append(iq.find(".//" + q(NS_PUBSUB, "publish")).get("node"))
                x = iq.find(".//" + q(NS_X, "x"))
                counts.append(form_fields(x).get("message-count"))
            return iq
        counts = []
        mark = srv.log_mark()
        bob.message("alice@localhost/hib1", "one")
        next_silent()
        bob.message("alice@localhost/hib1", "two")
        next_silent()
        t.is_(silent, ["n-hib1", "n-hib1"], "two publishes to an app server that never answers")
        t.is_(counts, ["1", "2"], "message-count starts again after the user's session was resumed (XEP-0198)")
        t.ok(srv.wait_log("dropping a push registration", 20, start=mark),
             "push.timeout: no answer counts as a failure; push.max_errors of them remove the registration")
        bob.message("alice@localhost/hib1", "three")
        bob.ping_server()
        t.ok(app.none(), "the removed registration gets nothing more")


def resume_login(srv, previd):
    c = SmClient(srv.port("client"), cafile=srv.ca)
    c.login("alice", PW, bind=False)
    c.start_counting()
    c.send("<resume xmlns='%s' previd='%s' h='0'/>" % (NS_SM, previd))
    return c, c.expect(lambda el: el.tag in (q(NS_SM, "resumed"), q(NS_SM, "failed")))


if __name__ == "__main__":
    Tap(timeout=300).main(main)
