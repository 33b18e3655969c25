#!/usr/bin/python3
# tests/integration/test_pep.py: XEP-0163 PEP on the XEP-0060 subset (mod_pep) and the account's disco
# (mod_disco), with raw stanzas: publish-options preconditions (the Conversations flow), access models,
# +notify filtering by XEP-0115 caps, the last item at coming online, retract, purge, delete,
# max_items, limits, persistence across a restart, account deletion; the roster access model, 'authorize'
# refused, XEP-0059 paging, the last item at subscription approval, XEP-0084 avatars.
import base64
import hashlib
import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, Server, Certs, connect_login, free_port, partner, q, el_str, error_condition, NS_CLIENT  # noqa: E402

PW = "pw-for-pep"
NS_PS = "http://jabber.org/protocol/pubsub"
NS_PSO = "http://jabber.org/protocol/pubsub#owner"
NS_PSE = "http://jabber.org/protocol/pubsub#event"
NS_PSERR = "http://jabber.org/protocol/pubsub#errors"
NS_INFO = "http://jabber.org/protocol/disco#info"
NS_ITEMS = "http://jabber.org/protocol/disco#items"
NS_CAPS = "http://jabber.org/protocol/caps"
NS_X = "jabber:x:data"
TUNE = "http://jabber.org/protocol/tune"
MOOD = "http://jabber.org/protocol/mood"
CAPS_NODE = "https://civitas.example/pep-test"
YAML = "pep:\n  max_item_size: 1K\n  max_items: 50\n  max_nodes: 6\n"


def form(form_type, **fields):
    return ("<x xmlns='%s' type='submit'><field var='FORM_TYPE' type='hidden'><value>%s</value></field>%s</x>"
            % (NS_X, form_type, "".join("<field var='pubsub#%s'><value>%s</value></field>" % (k, v)
                                       for k, v in fields.items())))


def publish(c, node, payload, item_id=None, options=None, to=None):
    i = " id='%s'" % item_id if item_id else ""
    po = ("<publish-options>%s</publish-options>" % form(NS_PS + "#publish-options", **options)) if options else ""
    return c.iq("set", "<pubsub xmlns='%s'><publish node='%s'><item%s>%s</item></publish>%s</pubsub>"
                % (NS_PS, node, i, payload, po), to=to)


def items(c, jid, node, extra="", inner=""):
    r = c.iq("get", "<pubsub xmlns='%s'><items node='%s'%s>%s</items></pubsub>" % (NS_PS, node, extra, inner), to=jid)
    its = r.findall(".//" + q(NS_PS, "item")) if r is not None and r.get("type") == "result" else None
    return r, ([it.get("id") for it in its] if its is not None else None)


def owner(c, type_, inner):
    return c.iq(type_, "<pubsub xmlns='%s'>%s</pubsub>" % (NS_PSO, inner))


def app_error(r):
    e = r.find(q(NS_CLIENT, "error")) if r is not None else None
    return [ch.tag.split("}")[1] for ch in e if ch.tag.startswith("{%s}" % NS_PSERR)] if e is not None else []


def ok(r):
    return r is not None and r.get("type") == "result"


def caps_ver(features, identity=("client", "pc", "", "pep-test")):
    s = "%s/%s/%s/%s<" % identity + "".join(f + "<" for f in sorted(features))
    return base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()


def online_with_caps(srv, user, resource, features):
    """A resource that sends presence with XEP-0115 caps and answers the server's disco#info query."""
    c = connect_login(srv, user, PW, resource=resource)
    feats = [NS_CAPS, NS_INFO] + features
    ver = caps_ver(feats)
    c.presence(extra="<c xmlns='%s' hash='sha-1' node='%s' ver='%s'/>" % (NS_CAPS, CAPS_NODE, ver))
    iq = c.expect(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("type") == "get"
                  and el.find(q(NS_INFO, "query")) is not None, 3)
    if iq is not None:
        c.send("<iq type='result' id='%s' to='%s'><query xmlns='%s' node='%s#%s'>"
               "<identity category='client' type='pc' name='pep-test'/>%s</query></iq>"
               % (iq.get("id"), iq.get("from"), NS_INFO, CAPS_NODE, ver,
                  "".join("<feature var='%s'/>" % f for f in feats)))
    c.ping_server()
    return c


def event_of(c, node, timeout=3):
    """The next pubsub#event message about node, or None."""
    def m(el):
        ev = el.find(q(NS_PSE, "event")) if el.tag == q(NS_CLIENT, "message") else None
        return ev is not None and any(ch.get("node") == node for ch in ev)
    return c.expect(m, timeout)


def subscribe(srv, watcher, owner_user):
    """watcher becomes subscribed to owner's presence (owner's roster: subscription from)."""
    w = connect_login(srv, watcher, PW, resource="sub")
    o = connect_login(srv, owner_user, PW, resource="sub")
    w.send("<presence to='%s@localhost' type='subscribe'/>" % owner_user)
    o.expect(lambda el: el.tag == q(NS_CLIENT, "presence") and el.get("type") == "subscribe", 5)
    o.send("<presence to='%s@localhost' type='subscribed'/>" % watcher)
    w.expect(lambda el: el.tag == q(NS_CLIENT, "presence") and el.get("type") == "subscribed", 5)
    w.ping_server()
    o.ping_server()
    w.end()
    o.end()


def disco(t, srv):
    a = connect_login(srv, "alice", PW, resource="d")
    r = a.iq("get", "<query xmlns='%s'/>" % NS_INFO, to="alice@localhost")
    ids = [(i.get("category"), i.get("type")) for i in r.iter(q(NS_INFO, "identity"))] if ok(r) else []
    feats = [f.get("var") for f in r.iter(q(NS_INFO, "feature"))] if ok(r) else []
    t.ok(("account", "registered") in ids and ("pubsub", "pep") in ids,
         "XEP-0163 §6.1: disco#info to one's own bare JID: identities account/registered and pubsub/pep", el_str(r))
    t.ok(all(NS_PS + "#" + f in feats for f in ("publish", "publish-options", "auto-create", "retrieve-items",
                                                "access-presence", "access-open", "config-node", "delete-nodes",
                                                "purge-nodes", "retract-items", "filtered-notifications")),
         "the account's features include pubsub#publish, #publish-options, #auto-create, ... (XEP-0163 §6.1)",
         lambda: repr(feats))
    t.ok(NS_PS + "#subscribe" in feats and NS_PS + "#retrieve-subscriptions" in feats,
         "and #subscribe, #retrieve-subscriptions (Monal looks for subscribe)", lambda: repr(feats))
    b = connect_login(srv, "bob", PW, resource="d")
    r = b.iq("get", "<query xmlns='%s'/>" % NS_INFO, to="alice@localhost")
    ids = [(i.get("category"), i.get("type")) for i in r.iter(q(NS_INFO, "identity"))] if ok(r) else []
    t.ok(("pubsub", "pep") in ids and ("account", "registered") not in ids,
         "a non-contact sees the pubsub/pep identity (open nodes are readable by anyone), not account/registered",
         el_str(r))
    r = b.iq("get", "<query xmlns='%s'/>" % NS_INFO, to="nobody@localhost")
    t.is_(error_condition(r), "service-unavailable", "RFC 6121 §8.5.1: disco#info to a non-existent account")
    r = b.iq("get", "<query xmlns='%s' node='x'/>" % NS_INFO, to="alice@localhost")
    t.is_(error_condition(r), "item-not-found", "XEP-0030 §3.1: an unknown node -> <item-not-found/>")
    r = a.iq("get", "<query xmlns='%s'/>" % NS_ITEMS, to="alice@localhost")
    t.ok(ok(r) and r.find(q(NS_ITEMS, "query")) is not None, "disco#items to one's own bare JID", el_str(r))
    a.end()
    b.end()


def publish_options(t, srv):
    a = connect_login(srv, "carol", PW, resource="p")
    b = connect_login(srv, "dave", PW, resource="p")
    r, ids = items(a, None, TUNE)
    t.is_(error_condition(r), "item-not-found", "XEP-0060 §6.5.9.11: items of a node that does not exist")
    req = r.find("%s/%s" % (q(NS_PS, "pubsub"), q(NS_PS, "items"))) if r is not None else None
    t.ok(req is not None and req.get("node") == TUNE,
         "RFC 6120 §8.3.1: the error carries the request's <pubsub><items/> (Profanity 0.13.1 reads it as an "
         "empty device list and then publishes its own)", lambda: el_str(r))
    r = publish(a, TUNE, "<tune xmlns='%s'><artist>A</artist></tune>" % TUNE, "t1")
    pub = r.find(".//" + q(NS_PS, "publish")) if ok(r) else None
    t.ok(pub is not None and pub.get("node") == TUNE and pub.find(q(NS_PS, "item")).get("id") == "t1",
         "XEP-0163 §4.3 / XEP-0060 §7.1.2: publish auto-creates the node; the result names the item", el_str(r))
    r, ids = items(b, "nobody@localhost", TUNE)
    t.is_(error_condition(r), "service-unavailable", "RFC 6121 §8.5.1: items of an account that does not exist")
    r, ids = items(b, "carol@localhost", TUNE)
    t.ok(error_condition(r) == "not-authorized" and app_error(r) == ["presence-subscription-required"],
         "XEP-0060 §6.5.9.5: the default access model is presence: a non-contact gets <not-authorized/> with "
         "<presence-subscription-required/>", el_str(r))
    r, ids = items(a, None, TUNE)
    t.is_(ids, ["t1"], "the owner reads its node")
    # Conversations: publish with options that differ -> precondition-not-met, reconfigure, publish again
    r = publish(a, TUNE, "<tune xmlns='%s'/>" % TUNE, "t2", options={"access_model": "open"})
    t.ok(error_condition(r) == "conflict" and app_error(r) == ["precondition-not-met"],
         "XEP-0223 §5: publish-options that do not match the node -> <conflict/> + <precondition-not-met/>",
         el_str(r))
    r, ids = items(a, None, TUNE)
    t.is_(ids, ["t1"], "and nothing was stored")
    r = owner(a, "get", "<configure node='%s'/>" % TUNE)
    fields = {f.get("var"): [v.text for v in f.findall(q(NS_X, "value"))] for f in r.iter(q(NS_X, "field"))} if ok(r) else {}
    t.ok(fields.get("pubsub#access_model") == ["presence"] and "pubsub#max_items" in fields,
         "XEP-0060 §8.2: the owner gets the node configuration form", el_str(r))
    r = owner(a, "set", "<configure node='%s'>%s</configure>" % (TUNE, form(NS_PS + "#node_config", access_model="open")))
    t.ok(ok(r), "XEP-0060 §8.2.4: the owner reconfigures access_model to open", el_str(r))
    r = publish(a, TUNE, "<tune xmlns='%s'><artist>B</artist></tune>" % TUNE, "t2", options={"access_model": "open"})
    t.ok(ok(r), "then the publish with the same options succeeds", el_str(r))
    r, ids = items(b, "carol@localhost", TUNE)
    t.is_(ids, ["t2"], "open: a non-contact reads the node; max_items defaults to 1 (only the last item)")
    # a node created by publish-options gets those values
    node = "urn:test:created"
    r = publish(a, node, "<x xmlns='urn:test'/>", "1",
                options={"access_model": "whitelist", "max_items": "3", "send_last_published_item": "never"})
    t.ok(ok(r), "a new node is created with the publish-options", el_str(r))
    r = owner(a, "get", "<configure node='%s'/>" % node)
    fields = {f.get("var"): [v.text for v in f.findall(q(NS_X, "value"))] for f in r.iter(q(NS_X, "field"))} if ok(r) else {}
    t.ok(fields.get("pubsub#access_model") == ["whitelist"] and fields.get("pubsub#max_items") == ["3"]
         and fields.get("pubsub#send_last_published_item") == ["never"],
         "XEP-0223 §3: the node has the values of publish-options", el_str(r))
    r, ids = items(b, "carol@localhost", node)
    t.ok(error_condition(r) == "not-allowed" and app_error(r) == ["closed-node"],
         "XEP-0060 §6.5.9.6: whitelist: anyone else gets <not-allowed/> + <closed-node/>", el_str(r))
    r = publish(a, "urn:test:max", "<x xmlns='urn:test'/>", "1", options={"max_items": "max"})
    t.ok(ok(r), "pubsub#max_items 'max' is accepted", el_str(r))
    r = publish(a, "urn:test:max", "<x xmlns='urn:test'/>", "2", options={"max_items": "max"})
    t.ok(ok(r), "and matches the node it created", el_str(r))
    r = publish(a, "urn:test:bad", "<x xmlns='urn:test'/>", "1", options={"access_model": "nonsense"})
    t.ok(error_condition(r) == "conflict" and app_error(r) == ["precondition-not-met"],
         "an access model the service does not know cannot be met", el_str(r))
    r = b.iq("set", "<pubsub xmlns='%s'><publish node='%s'><item><x xmlns='urn:test'/></item></publish></pubsub>"
             % (NS_PS, TUNE), to="carol@localhost")
    t.is_(error_condition(r), "forbidden", "only the owner publishes to its PEP service")
    a.end()
    b.end()


def max_items_retract_purge_delete(t, srv):
    a = connect_login(srv, "erin", PW, resource="p")
    a.presence()
    node = "urn:test:many"
    for i in range(4):
        r = publish(a, node, "<n xmlns='urn:test'>%d</n>" % i, "i%d" % i, options={"max_items": "3"})
    while event_of(a, node, timeout=0.5) is not None:
        pass
    r, ids = items(a, None, node)
    t.is_(ids, ["i3", "i2", "i1"], "max_items 3: the oldest item was dropped; items come newest first")
    r, ids = items(a, None, node, extra=" max_items='2'")
    t.is_(ids, ["i3", "i2"], "XEP-0060 §6.5.7: max_items='2' returns the two most recent")
    r, ids = items(a, None, node, inner="<item id='i1'/><item id='nope'/>")
    t.is_(ids, ["i1"], "XEP-0060 §6.5.8: items by id")
    r = publish(a, node, "<n xmlns='urn:test'>again</n>", "i1", options={"max_items": "3"})
    ev = event_of(a, node)
    it = ev.find(".//" + q(NS_PSE, "item")) if ev is not None else None
    t.ok(ev is not None and ev.get("type") == "headline" and ev.get("from") == "erin@localhost" and it is not None
         and it.get("id") == "i1" and it.find(q("urn:test", "n")).text == "again",
         "XEP-0163 §4.3.2: the owner's available resource gets the notification (headline from the bare JID)",
         lambda: el_str(ev))
    r, ids = items(a, None, node)
    t.is_(ids, ["i1", "i3", "i2"], "publishing an existing id replaces the item and makes it the newest")
    r = a.iq("set", "<pubsub xmlns='%s'><retract node='%s' notify='true'><item id='i3'/></retract></pubsub>" % (NS_PS, node))
    t.ok(ok(r), "XEP-0060 §7.2: retract", el_str(r))
    ev = event_of(a, node)
    rt = ev.find(".//" + q(NS_PSE, "retract")) if ev is not None else None
    t.ok(rt is not None and rt.get("id") == "i3", "XEP-0060 §7.2.2.1: the retraction is notified", lambda: el_str(ev))
    r, ids = items(a, None, node)
    t.is_(ids, ["i1", "i2"], "the retracted item is gone")
    r = a.iq("set", "<pubsub xmlns='%s'><retract node='%s'><item id='i3'/></retract></pubsub>" % (NS_PS, node))
    t.is_(error_condition(r), "item-not-found", "retracting an item that does not exist")
    r = owner(a, "set", "<purge node='%s'/>" % node)
    t.ok(ok(r), "XEP-0060 §8.5: purge", el_str(r))
    ev = event_of(a, node)
    t.ok(ev is not None and ev.find(".//" + q(NS_PSE, "purge")) is not None, "the purge is notified", lambda: el_str(ev))
    r, ids = items(a, None, node)
    t.is_(ids, [], "no items after the purge, the node remains")
    r = owner(a, "set", "<delete node='%s'/>" % node)
    t.ok(ok(r), "XEP-0060 §8.4: delete", el_str(r))
    ev = event_of(a, node)
    t.ok(ev is not None and ev.find(".//" + q(NS_PSE, "delete")) is not None, "the deletion is notified", lambda: el_str(ev))
    r, ids = items(a, None, node)
    t.is_(error_condition(r), "item-not-found", "the deleted node is gone")
    r = a.iq("set", "<pubsub xmlns='%s'><create node='urn:test:made'/></pubsub>" % NS_PS)
    t.ok(ok(r), "XEP-0060 §8.1: create", el_str(r))
    r = a.iq("set", "<pubsub xmlns='%s'><create node='urn:test:made'/></pubsub>" % NS_PS)
    t.is_(error_condition(r), "conflict", "XEP-0060 §8.1.3: creating an existing node -> <conflict/>")
    a.end()


def notifications(t, srv):
    subscribe(srv, "gary", "fay")          # gary receives fay's presence
    f = connect_login(srv, "fay", PW, resource="p")
    f.presence()
    g1 = online_with_caps(srv, "gary", "notify", [MOOD + "+notify"])
    g2 = online_with_caps(srv, "gary", "plain", [])
    h = online_with_caps(srv, "hal", "notify", [MOOD + "+notify"])     # not a contact
    r = publish(f, MOOD, "<mood xmlns='%s'><happy/></mood>" % MOOD, "m1")
    t.ok(ok(r), "fay publishes her mood", el_str(r))
    ev = event_of(g1, MOOD)
    it = ev.find(".//" + q(NS_PSE, "item")) if ev is not None else None
    t.ok(it is not None and it.get("id") == "m1" and it.find(q(MOOD, "mood")) is not None
         and ev.get("to") == "gary@localhost/notify",
         "XEP-0163 §4.3.1: a contact's resource whose caps include mood+notify gets the event at its full JID",
         lambda: el_str(ev))
    t.ok(event_of(g2, MOOD, timeout=0.5) is None, "XEP-0163 §4.2: a resource without mood+notify gets none")
    t.ok(event_of(h, MOOD, timeout=0.5) is None, "a non-contact gets none, even with +notify")
    t.ok(event_of(f, MOOD) is not None, "the owner's own resource gets it")
    g3 = online_with_caps(srv, "gary", "later", [MOOD + "+notify"])
    ev = event_of(g3, MOOD)
    it = ev.find(".//" + q(NS_PSE, "item")) if ev is not None else None
    t.ok(it is not None and it.get("id") == "m1",
         "XEP-0163 §4.3.3: a contact's resource coming online with +notify gets the last item", lambda: g3.dump())
    g4 = online_with_caps(srv, "gary", "later2", [])
    t.ok(event_of(g4, MOOD, timeout=0.5) is None, "... and one without +notify does not")
    for c in (f, g1, g2, g3, g4, h):
        c.end()


def subscriptions(t, srv):
    k = connect_login(srv, "kim", PW, resource="p")
    h = connect_login(srv, "hal", PW, resource="s")
    h.presence()
    node = "urn:test:open"
    publish(k, node, "<x xmlns='urn:test'>first</x>", "o1", options={"access_model": "open"})
    publish(k, "urn:test:closed", "<x xmlns='urn:test'/>", "c1")
    sub = "<pubsub xmlns='%s'><subscribe node='%s' jid='%s'/></pubsub>"
    r = h.iq("set", sub % (NS_PS, node, "kim@localhost"), to="kim@localhost")
    t.ok(error_condition(r) == "bad-request" and app_error(r) == ["invalid-jid"],
         "XEP-0060 §6.1.3.1: subscribing another JID -> <bad-request/> + <invalid-jid/>", el_str(r))
    r = h.iq("set", sub % (NS_PS, "urn:test:closed", "hal@localhost"), to="kim@localhost")
    t.is_(error_condition(r), "not-authorized", "XEP-0060 §6.1.3.2: presence access model, not a contact")
    r = h.iq("set", sub % (NS_PS, node, "hal@localhost"), to="kim@localhost")
    se = r.find(".//" + q(NS_PS, "subscription")) if ok(r) else None
    t.ok(se is not None and se.get("subscription") == "subscribed" and se.get("jid") == "hal@localhost",
         "XEP-0060 §6.1: a non-contact subscribes to an open node", el_str(r))
    ev = event_of(h, node)
    it = ev.find(".//" + q(NS_PSE, "item")) if ev is not None else None
    t.ok(it is not None and it.get("id") == "o1", "XEP-0060 §6.1.7: the last item is sent at subscription",
         lambda: el_str(ev))
    r = h.iq("get", "<pubsub xmlns='%s'><subscriptions/></pubsub>" % NS_PS, to="kim@localhost")
    t.is_([(x.get("node"), x.get("jid")) for x in r.iter(q(NS_PS, "subscription"))] if ok(r) else None,
          [(node, "hal@localhost")], "XEP-0060 §5.6: the requester's subscriptions")
    publish(k, node, "<x xmlns='urn:test'>second</x>", "o2", options={"access_model": "open"})
    ev = event_of(h, node)
    it = ev.find(".//" + q(NS_PSE, "item")) if ev is not None else None
    t.ok(it is not None and it.get("id") == "o2", "the subscriber gets the notification of a publish",
         lambda: el_str(ev))
    r = h.iq("set", "<pubsub xmlns='%s'><unsubscribe node='%s' jid='hal@localhost'/></pubsub>" % (NS_PS, node),
             to="kim@localhost")
    t.ok(ok(r), "XEP-0060 §6.2: unsubscribe", el_str(r))
    publish(k, node, "<x xmlns='urn:test'>third</x>", "o3", options={"access_model": "open"})
    t.ok(event_of(h, node, timeout=0.5) is None, "no notification after unsubscribing")
    r = h.iq("set", "<pubsub xmlns='%s'><unsubscribe node='%s' jid='hal@localhost'/></pubsub>" % (NS_PS, node),
             to="kim@localhost")
    t.ok(error_condition(r) == "unexpected-request" and app_error(r) == ["not-subscribed"],
         "XEP-0060 §6.2.3.2: unsubscribing without a subscription", el_str(r))
    # at most 1000 subscriptions per node (a subscriber may name any of its full JIDs)
    for i in range(1000):
        h.send("<iq type='set' id='many%d' to='kim@localhost'><pubsub xmlns='%s'><subscribe node='%s' "
               "jid='hal@localhost/r%d'/></pubsub></iq>" % (i, NS_PS, node, i))
    last = h.expect(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("id") == "many999", 30)
    t.ok(ok(last), "1000 subscriptions to one node are accepted", el_str(last))
    r = h.iq("set", sub % (NS_PS, node, "hal@localhost/one-more"), to="kim@localhost")
    t.is_(error_condition(r), "resource-constraint", "the 1001st subscription to a node is refused")
    r = h.iq("set", sub % (NS_PS, node, "hal@localhost/r5"), to="kim@localhost")
    t.ok(ok(r), "renewing an existing subscription still works", el_str(r))
    h.end()
    # the subscriber's account is deleted: its subscriptions go (a new account of that name has none)
    srv.ctl("user", "del", "hal@localhost")
    srv.adduser("hal@localhost", PW)
    subs = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            h = connect_login(srv, "hal", PW, resource="again")
        except Exception:
            time.sleep(0.1)
            continue
        r = h.iq("get", "<pubsub xmlns='%s'><subscriptions/></pubsub>" % NS_PS, to="kim@localhost")
        h.end()
        subs = [x.get("jid") for x in r.iter(q(NS_PS, "subscription"))] if ok(r) else None
        if subs == []:
            break
        time.sleep(0.1)
    t.is_(subs, [], "deleting the subscriber's account removes its subscriptions to other accounts' nodes")
    k.end()


def limits(t, srv):
    a = connect_login(srv, "ivy", PW, resource="p")
    r = publish(a, "urn:test:big", "<big xmlns='urn:test'>%s</big>" % ("x" * 1100))
    t.ok(error_condition(r) == "not-acceptable" and app_error(r) == ["payload-too-big"],
         "pep.max_item_size (1K): a larger item -> <not-acceptable/> + <payload-too-big/>", el_str(r))
    r = publish(a, "urn:test:m", "<x xmlns='urn:test'/>", options={"max_items": "51"})
    t.ok(error_condition(r) == "conflict" and app_error(r) == ["precondition-not-met"],
         "pubsub#max_items above pep.max_items cannot be met", el_str(r))
    r = publish(a, "urn:test:" + "n" * 1100, "<x xmlns='urn:test'/>")
    t.is_(error_condition(r), "not-acceptable", "a node name longer than 1024 bytes is refused")
    r = publish(a, "urn:test:id", "<x xmlns='urn:test'/>", "i" * 1100)
    t.is_(error_condition(r), "not-acceptable", "an item id longer than 1024 bytes is refused")
    r = a.iq("set", "<pubsub xmlns='%s'><create node='urn:test:%s'/></pubsub>" % (NS_PS, "c" * 1100))
    t.is_(error_condition(r), "not-acceptable", "create: a node name longer than 1024 bytes is refused")
    codes = []
    for i in range(7):
        codes.append(error_condition(publish(a, "urn:test:n%d" % i, "<x xmlns='urn:test'/>")))
    t.is_(codes, [None] * 6 + ["resource-constraint"], "pep.max_nodes (6): the seventh node is refused")
    r = a.iq("set", "<pubsub xmlns='%s'><publish node='urn:test:n0'><item/></publish></pubsub>" % NS_PS)
    t.ok(error_condition(r) == "bad-request" and app_error(r) == ["payload-required"],
         "XEP-0060 §7.1.3.6: an item without payload -> <bad-request/> + <payload-required/>", el_str(r))
    r = a.iq("set", "<pubsub xmlns='%s'><publish node='urn:test:n0'><item><a xmlns='x'/><b xmlns='x'/></item>"
             "</publish></pubsub>" % NS_PS)
    t.ok(error_condition(r) == "bad-request" and app_error(r) == ["invalid-payload"],
         "XEP-0060 §7.1.3.5: two payload elements -> <bad-request/> + <invalid-payload/>", el_str(r))
    a.end()


def restart_and_delete(t, srv):
    a = connect_login(srv, "jack", PW, resource="p")
    payload = "<v xmlns='urn:test' a='1'>text &amp; more<w/></v>"
    publish(a, "urn:test:keep", payload, "k", options={"access_model": "open"})
    a.end()
    srv.stop()
    # CONTRACT.md: a data_dir of the release before pubsub#roster_groups_allowed (pep schema 1, no
    # roster_groups column) is upgraded in place at the start
    db = sqlite3.connect(os.path.join(srv.data_dir, "civitas.db"))
    with db:
        db.execute("ALTER TABLE pep_nodes DROP COLUMN roster_groups")
        db.execute("UPDATE module_schema SET version = 1 WHERE module = 'pep'")
    db.close()
    srv.start()
    db = sqlite3.connect(os.path.join(srv.data_dir, "civitas.db"))
    ver = db.execute("SELECT version FROM module_schema WHERE module = 'pep'").fetchone()
    db.close()
    t.is_(ver, (2,), "a pep schema 1 database is upgraded to 2 at the start")
    b = connect_login(srv, "bob", PW, resource="r")
    r, ids = items(b, "jack@localhost", "urn:test:keep")
    t.is_(ids, ["k"], "items and node configuration survive a restart (and the upgrade)")
    r = srv.ctl("user", "del", "jack@localhost")
    srv.adduser("jack@localhost", PW)
    r, ids = items(b, "jack@localhost", "urn:test:keep")
    t.is_(error_condition(r), "item-not-found", "deleting the account removes its nodes and items")
    b.end()


def federated(t):
    """A remote contact: items of an open node over s2s, +notify by the caps of its full JID learnt from
    presence that came over s2s, the last item when those caps become known."""
    certs = Certs()
    pa, pb = free_port(), free_port()
    lst = lambda p: {"client": ["127.0.0.1:0"], "server": ["127.0.0.1:%d" % p]}  # noqa: E731
    fed = "federation:\n  mode: allowlist\n  dialback: false\n  partners:\n"
    a = Server(t, hosts=["a.example"], certs=certs, listen=lst(pa), start=False,
               extra_yaml=fed + partner("b.example", pb, certs.ca))
    b = Server(t, hosts=["b.example"], certs=certs, listen=lst(pb), start=False,
               extra_yaml=fed + partner("a.example", pa, certs.ca))
    with a, b:
        a.start()
        b.start()
        a.adduser("alice@a.example", PW)
        b.adduser("bob@b.example", PW)
        alice = connect_login(a, "alice", PW, resource="r", domain="a.example")
        alice.presence()
        bob = connect_login(b, "bob", PW, resource="r", domain="b.example")
        r = publish(alice, MOOD, "<mood xmlns='%s'><sad/></mood>" % MOOD, "m1")
        r = publish(alice, TUNE, "<tune xmlns='%s'/>" % TUNE, "t1", options={"access_model": "open"})
        r, ids = items(bob, "alice@a.example", TUNE)
        t.is_(ids, ["t1"], "s2s: a remote user reads an open node")
        r, ids = items(bob, "alice@a.example", MOOD)
        t.is_(error_condition(r), "not-authorized", "s2s: and not a presence node while not subscribed")
        bob.send("<presence to='alice@a.example' type='subscribe'/>")
        alice.expect(lambda el: el.tag == q(NS_CLIENT, "presence") and el.get("type") == "subscribe", 20)
        alice.send("<presence to='bob@b.example' type='subscribed'/>")
        bob.expect(lambda el: el.tag == q(NS_CLIENT, "presence") and el.get("type") == "subscribed", 20)
        r, ids = items(bob, "alice@a.example", MOOD)
        t.is_(ids, ["m1"], "s2s: a subscribed remote contact reads the presence node")
        feats = [NS_CAPS, NS_INFO, MOOD + "+notify"]
        ver = caps_ver(feats)
        bob.send("<presence to='alice@a.example'><c xmlns='%s' hash='sha-1' node='%s' ver='%s'/></presence>"
                 % (NS_CAPS, CAPS_NODE, ver))
        iq = bob.expect(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("type") == "get"
                        and el.find(q(NS_INFO, "query")) is not None, 20)
        if iq is not None:
            bob.send("<iq type='result' id='%s' to='%s'><query xmlns='%s' node='%s#%s'>"
                     "<identity category='client' type='pc' name='pep-test'/>%s</query></iq>"
                     % (iq.get("id"), iq.get("from"), NS_INFO, CAPS_NODE, ver,
                        "".join("<feature var='%s'/>" % f for f in feats)))
        ev = event_of(bob, MOOD, timeout=20)
        it = ev.find(".//" + q(NS_PSE, "item")) if ev is not None else None
        t.ok(it is not None and it.get("id") == "m1" and ev.get("from") == "alice@a.example",
             "XEP-0163 §4.3.3 over s2s: when the remote resource's caps (mood+notify) are known it gets the last item",
             lambda: bob.dump())
        publish(alice, MOOD, "<mood xmlns='%s'><happy/></mood>" % MOOD, "m2")
        ev = event_of(bob, MOOD, timeout=20)
        it = ev.find(".//" + q(NS_PSE, "item")) if ev is not None else None
        t.ok(it is not None and it.get("id") == "m2", "s2s: a new item is notified to the remote contact's full JID",
             lambda: bob.dump())
        publish(alice, TUNE, "<tune xmlns='%s'/>" % TUNE, "t2", options={"access_model": "open"})
        alice.ping_server(domain="a.example")
        t.ok(event_of(bob, TUNE, timeout=1) is None, "s2s: no notification for a node without +notify")
        alice.end()
        bob.end()


NS_RSM = "http://jabber.org/protocol/rsm"
NS_ROSTER = "jabber:iq:roster"
AV_DATA = "urn:xmpp:avatar:data"
AV_META = "urn:xmpp:avatar:metadata"


def roster_set(c, jid, groups):
    return c.iq("set", "<query xmlns='%s'><item jid='%s'>%s</item></query>"
                % (NS_ROSTER, jid, "".join("<group>%s</group>" % g for g in groups)))


def access_roster_authorize(t, srv):
    """XEP-0060 §4.5 roster access model (pubsub#roster_groups_allowed) and 'authorize' refused precisely;
    notifications and last items only to those the access model lets read."""
    subscribe(srv, "mia", "lea")           # mia receives lea's presence (and may read presence nodes)
    lea = connect_login(srv, "lea", PW, resource="p")
    lea.presence()
    t.ok(ok(roster_set(lea, "mia@localhost", ["Team"])) and ok(roster_set(lea, "ned@localhost", ["Other"])),
         "lea puts mia in roster group Team, ned in Other")
    node = "urn:test:team"
    r = publish(lea, node, "<x xmlns='urn:test'>plan</x>", "p1",
                options={"access_model": "roster", "roster_groups_allowed": "Team"})
    t.ok(ok(r), "XEP-0223: publish-options access_model=roster with roster_groups_allowed creates the node", el_str(r))
    r = owner(lea, "get", "<configure node='%s'/>" % node)
    fields = {f.get("var"): [v.text for v in f.findall(q(NS_X, "value"))] for f in r.iter(q(NS_X, "field"))} if ok(r) else {}
    t.ok(fields.get("pubsub#access_model") == ["roster"] and fields.get("pubsub#roster_groups_allowed") == ["Team"],
         "XEP-0060 §8.2: the configuration form shows access_model roster and the allowed groups", el_str(r))
    mia = connect_login(srv, "mia", PW, resource="r")
    ned = connect_login(srv, "ned", PW, resource="r")
    oli = connect_login(srv, "oli", PW, resource="r")
    r, ids = items(mia, "lea@localhost", node)
    t.is_(ids, ["p1"], "roster: a contact in an allowed group reads the node")
    r, ids = items(ned, "lea@localhost", node)
    t.ok(error_condition(r) == "not-authorized" and app_error(r) == ["not-in-roster-group"],
         "XEP-0060 §6.5.9.6: a contact in another group -> <not-authorized/> + <not-in-roster-group/>", el_str(r))
    r, ids = items(oli, "lea@localhost", node)
    t.ok(error_condition(r) == "not-authorized" and app_error(r) == ["not-in-roster-group"],
         "XEP-0060 §6.5.9.6: someone not in the roster -> <not-authorized/> + <not-in-roster-group/>", el_str(r))
    for c in (mia, ned, oli):
        c.end()
    m1 = online_with_caps(srv, "mia", "n", [node + "+notify", "urn:test:wl+notify"])
    n1 = online_with_caps(srv, "ned", "n", [node + "+notify"])
    ev = event_of(m1, node)
    it = ev.find(".//" + q(NS_PSE, "item")) if ev is not None else None
    t.ok(it is not None and it.get("id") == "p1",
         "roster: the allowed contact's resource gets the last item when its caps (+notify) are known", lambda: el_str(ev))
    t.ok(event_of(n1, node, timeout=0.5) is None, "... a contact outside the groups does not")
    publish(lea, node, "<x xmlns='urn:test'>plan B</x>", "p2",
            options={"access_model": "roster", "roster_groups_allowed": "Team"})
    ev = event_of(m1, node)
    it = ev.find(".//" + q(NS_PSE, "item")) if ev is not None else None
    t.ok(it is not None and it.get("id") == "p2", "roster: the allowed contact's +notify resource gets the event",
         lambda: el_str(ev))
    t.ok(event_of(n1, node, timeout=0.5) is None, "roster: a contact outside the groups gets none, even with +notify")
    # a whitelist node is not notified to subscribed contacts, +notify or not (only the owner reads it)
    publish(lea, "urn:test:wl", "<x xmlns='urn:test'>secret</x>", "w1", options={"access_model": "whitelist"})
    lea.ping_server()
    t.ok(event_of(m1, "urn:test:wl", timeout=0.5) is None,
         "whitelist: a contact subscribed to the owner's presence with +notify gets no notification")
    m2 = online_with_caps(srv, "mia", "n2", ["urn:test:wl+notify"])
    t.ok(event_of(m2, "urn:test:wl", timeout=0.5) is None, "whitelist: nor the last item when its caps become known")
    # authorize: not offered (XEP-0060 §8.1.3.4 unsupported access model)
    cf = "<configure>%s</configure>" % form(NS_PS + "#node_config", access_model="authorize")
    r = lea.iq("set", "<pubsub xmlns='%s'><create node='urn:test:auth'/>%s</pubsub>" % (NS_PS, cf))
    t.ok(error_condition(r) == "not-acceptable" and app_error(r) == ["unsupported-access-model"],
         "XEP-0060 §8.1.3.4: create with access_model=authorize -> <not-acceptable/> + <unsupported-access-model/>",
         el_str(r))
    r = owner(lea, "set", "<configure node='%s'>%s</configure>" % (node, form(NS_PS + "#node_config", access_model="authorize")))
    t.ok(error_condition(r) == "not-acceptable" and app_error(r) == ["unsupported-access-model"],
         "XEP-0060 §8.2.5: configure access_model=authorize -> <not-acceptable/> + <unsupported-access-model/>", el_str(r))
    r = publish(lea, "urn:test:auth", "<x xmlns='urn:test'/>", "a", options={"access_model": "authorize"})
    t.ok(error_condition(r) == "conflict" and app_error(r) == ["precondition-not-met"],
         "XEP-0223 §4: publish-options access_model=authorize cannot be met", el_str(r))
    r = lea.iq("get", "<query xmlns='%s'/>" % NS_INFO, to="lea@localhost")
    feats = [f.get("var") for f in r.iter(q(NS_INFO, "feature"))] if ok(r) else []
    t.ok(NS_PS + "#access-roster" in feats and NS_PS + "#access-authorize" not in feats,
         "the account advertises pubsub#access-roster, not #access-authorize", lambda: repr(feats))
    for c in (lea, m1, n1, m2):
        c.end()


def rsm_paging(t, srv):
    """XEP-0060 §6.5.4/§6.5.7 with XEP-0059: pages of a node's items (newest first, ids as UIDs)."""
    a = connect_login(srv, "pam", PW, resource="p")
    node = "urn:test:paged"
    for i in range(5):
        publish(a, node, "<n xmlns='urn:test'>%d</n>" % i, "i%d" % i, options={"max_items": "10"})

    def page(rsm):
        r = a.iq("get", "<pubsub xmlns='%s'><items node='%s'/><set xmlns='%s'>%s</set></pubsub>" % (NS_PS, node, NS_RSM, rsm))
        its = [it.get("id") for it in r.iter(q(NS_PS, "item"))] if ok(r) else None
        st = r.find(".//" + q(NS_RSM, "set")) if ok(r) else None
        info = None
        if st is not None:
            f, la, c = st.find(q(NS_RSM, "first")), st.find(q(NS_RSM, "last")), st.find(q(NS_RSM, "count"))
            info = (f.text if f is not None else None, f.get("index") if f is not None else None,
                    la.text if la is not None else None, c.text if c is not None else None)
        return r, its, info
    r, its, info = page("<max>2</max>")
    t.is_((its, info), (["i4", "i3"], ("i4", "0", "i3", "5")),
          "XEP-0059 §2.1: <max>2</max>: the two newest, <set> with first (index 0), last and count")
    r, its, info = page("<max>2</max><after>i3</after>")
    t.is_((its, info), (["i2", "i1"], ("i2", "2", "i1", "5")), "XEP-0059 §2.2: the next page after the last UID")
    r, its, info = page("<max>2</max><after>i1</after>")
    t.is_(its, ["i0"], "the last page holds the rest")
    r, its, info = page("<max>2</max><before/>")
    t.is_((its, info), (["i1", "i0"], ("i1", "3", "i0", "5")), "XEP-0059 §2.5: <before/> empty: the last page")
    r, its, info = page("<max>2</max><before>i1</before>")
    t.is_(its, ["i3", "i2"], "XEP-0059 §2.3: the page before a UID")
    r, its, info = page("<max>0</max>")
    t.is_((its, info), ([], (None, None, None, "5")), "XEP-0059 §2.6: <max>0</max>: only the count")
    r, its, info = page("<max>2</max><after>nope</after>")
    t.is_(error_condition(r), "item-not-found", "XEP-0059 §2.5: an unknown UID -> <item-not-found/>")
    r, its, info = page("<max>x</max>")
    t.is_(error_condition(r), "bad-request", "a <max/> that is not a number -> <bad-request/>")
    r = a.iq("get", "<query xmlns='%s'/>" % NS_INFO, to="pam@localhost")
    feats = [f.get("var") for f in r.iter(q(NS_INFO, "feature"))] if ok(r) else []
    t.ok(NS_PS + "#rsm" in feats, "XEP-0060 §6.5.4: the account advertises pubsub#rsm", lambda: repr(feats))
    a.end()


def approval_sends_last(t, srv):
    """XEP-0163 §4.3.4 / send_last_published_item on_sub_and_presence: when the owner approves a contact's
    subscription, the contact's +notify resources get the last item."""
    p = connect_login(srv, "pia", PW, resource="p")
    p.presence()
    publish(p, MOOD, "<mood xmlns='%s'><calm/></mood>" % MOOD, "c1")
    qn = online_with_caps(srv, "quinn", "n", [MOOD + "+notify"])
    t.ok(event_of(qn, MOOD, timeout=0.5) is None, "before any subscription the contact gets nothing")
    qn.send("<presence to='pia@localhost' type='subscribe'/>")
    p.expect(lambda el: el.tag == q(NS_CLIENT, "presence") and el.get("type") == "subscribe", 5)
    p.send("<presence to='quinn@localhost' type='subscribed'/>")
    ev = event_of(qn, MOOD)
    it = ev.find(".//" + q(NS_PSE, "item")) if ev is not None else None
    t.ok(it is not None and it.get("id") == "c1" and ev.get("to") == "quinn@localhost/n",
         "XEP-0163 §4.3.4: the approved contact's +notify resource gets the last item", lambda: qn.dump())
    p.end()
    qn.end()


def server_features(t, srv):
    """Profanity sends publish-options only if the server (its domain) advertises the feature."""
    a = connect_login(srv, "alice", PW, resource="sf")
    r = a.iq("get", "<query xmlns='%s'/>" % NS_INFO, to="localhost")
    feats = [f.get("var") for f in r.iter(q(NS_INFO, "feature"))] if ok(r) else []
    t.ok(NS_PS + "#publish-options" in feats,
         "disco#info of the domain includes pubsub#publish-options (Profanity's connection_supports)", lambda: repr(feats))
    a.end()


def avatars(t, srv):
    """XEP-0084 user avatars through PEP: data and metadata nodes, metadata notifications, retrieval by id."""
    subscribe(srv, "sam", "rita")
    rita = connect_login(srv, "rita", PW, resource="p")
    png = bytes(range(200))
    b64 = base64.b64encode(png).decode()
    sha = hashlib.sha1(png).hexdigest()
    s1 = online_with_caps(srv, "sam", "n", [AV_META + "+notify"])
    r = publish(rita, AV_DATA, "<data xmlns='%s'>%s</data>" % (AV_DATA, b64), sha, options={"access_model": "open"})
    t.ok(ok(r), "XEP-0084 §4.1: publish the image data, item id = its SHA-1", el_str(r))
    t.ok(event_of(s1, AV_DATA, timeout=0.5) is None, "XEP-0084 §4.1: no notification of the data node without data+notify")
    meta = ("<metadata xmlns='%s'><info bytes='%d' id='%s' height='32' width='32' type='image/png'/></metadata>"
            % (AV_META, len(png), sha))
    r = publish(rita, AV_META, meta, sha, options={"access_model": "open"})
    t.ok(ok(r), "XEP-0084 §4.2: publish the metadata with the same id", el_str(r))
    ev = event_of(s1, AV_META)
    info = ev.find(".//" + q(AV_META, "info")) if ev is not None else None
    t.ok(info is not None and info.get("id") == sha and info.get("bytes") == str(len(png)),
         "XEP-0084 §4.3: the contact with metadata+notify gets the metadata notification", lambda: el_str(ev))
    r, ids = items(s1, "rita@localhost", AV_DATA, inner="<item id='%s'/>" % sha)
    d = r.find(".//" + q(AV_DATA, "data")) if ok(r) else None
    t.ok(d is not None and base64.b64decode(d.text) == png, "XEP-0084 §5.1: the contact retrieves the data by id", el_str(r))
    o = connect_login(srv, "oli", PW, resource="av")
    r, ids = items(o, "rita@localhost", AV_META)
    t.is_(ids, [sha], "an open avatar's metadata is readable by anyone")
    s2 = online_with_caps(srv, "sam", "n2", [AV_META + "+notify"])
    ev = event_of(s2, AV_META)
    t.ok(ev is not None, "XEP-0084 §4.3 / XEP-0163 §4.3.3: a resource coming online gets the current metadata",
         lambda: s2.dump())
    r = publish(rita, AV_META, "<metadata xmlns='%s'/>" % AV_META, "current", options={"access_model": "open"})
    ev = event_of(s1, AV_META)
    m = ev.find(".//" + q(AV_META, "metadata")) if ev is not None else None
    t.ok(m is not None and len(m) == 0, "XEP-0084 §4.5: disabling the avatar (empty metadata) is notified",
         lambda: el_str(ev))
    for c in (rita, s1, s2, o):
        c.end()


def main(t):
    srv = Server(t, extra_yaml=YAML)
    for u in ("alice", "bob", "carol", "dave", "erin", "fay", "gary", "hal", "ivy", "jack", "kim", "lea", "mia", "ned",
              "oli", "pam", "pia", "quinn", "rita", "sam"):
        srv.adduser("%s@localhost" % u, PW)
    for fn in (disco, publish_options, max_items_retract_purge_delete, notifications, access_roster_authorize, rsm_paging,
               approval_sends_last, server_features, avatars, subscriptions, limits, restart_and_delete):
        t.run(fn, t, srv)
    t.ok(srv.stop() == 0, "civitasd exits 0 after SIGTERM", lambda: srv.log_tail(30))
    t.ok(not srv.sanitizer_reports(), "no sanitizer report in the civitasd log", lambda: "\n".join(srv.sanitizer_reports()))
    t.run(federated, t)


Tap(timeout=180).main(main)
