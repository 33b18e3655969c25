#!/usr/bin/python3
# tests/integration/test_components.py: components (server/component.h), with the test module
# tests/modules/mod_test_component.c (built by make check, found via CIVITAS_MODULE_DIR), which serves
# svc.<first host>: the host's disco#items lists it (XEP-0030 §4), its own disco#info (§3) has the
# identity and features it registered; IQs and messages to the domain and to JIDs at it reach the
# module and its answers come back from the component's address; unknown JIDs at it get its error; a
# user of another server reaches it over federation (the component's domain is not in the host's
# certificate: dialback authenticates it).
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Tap, Server, Certs, connect_login, q, el_str, free_port, error_condition,  # noqa: E402
                     NS_CLIENT)
from test_module_runtime import standard_modules, module_dir, partner  # noqa: E402

NS_INFO = "http://jabber.org/protocol/disco#info"
NS_ITEMS = "http://jabber.org/protocol/disco#items"
NS_PING = "urn:xmpp:ping"
PW = "pw-components"
MODULES = standard_modules() + ["test_component"]


def items(r):
    qq = r.find(q(NS_ITEMS, "query")) if r is not None else None
    return [(i.get("jid"), i.get("node"), i.get("name")) for i in (qq if qq is not None else [])]


def ping(c, to):
    return c.iq("get", "<ping xmlns='%s'/>" % NS_PING, to=to, timeout=20)


def echo(t, c, to, body, what):
    c.message(to, body)
    m = c.expect_message("echo: " + body, timeout=20)
    t.ok(m is not None and m.get("from") == to and m.get("type") == "chat",
         "%s: the message is echoed from %s" % (what, to), lambda: el_str(m) if m is not None else c.dump())


def local(t, srv):
    c = connect_login(srv, "alice", PW, resource="r")
    c.presence()
    r = c.iq("get", "<query xmlns='%s'/>" % NS_ITEMS, to="localhost")
    it = items(r)
    t.ok(("svc.localhost", None, "Test service") in it, "host disco#items lists the component with its name",
         lambda: el_str(r))
    t.ok(("localhost", "test-node", "A plain item") in it, "host disco#items lists a module's plain item",
         lambda: el_str(r))
    r = c.iq("get", "<query xmlns='%s'/>" % NS_INFO, to="svc.localhost")
    qq = r.find(q(NS_INFO, "query")) if r is not None else None
    t.ok(r is not None and r.get("type") == "result" and r.get("from") == "svc.localhost" and qq is not None,
         "component disco#info is answered from the component", lambda: el_str(r))
    ids = [(i.get("category"), i.get("type"), i.get("name")) for i in qq.findall(q(NS_INFO, "identity"))] if qq is not None else []
    feats = [f.get("var") for f in qq.findall(q(NS_INFO, "feature"))] if qq is not None else []
    t.is_(ids, [("store", "file", "Test service")], "component disco#info: its own identity only")
    t.ok(NS_PING in feats and "urn:civitas:test-component" in feats and NS_INFO in feats,
         "component disco#info: its features and disco#info", lambda: repr(feats))
    t.ok("jabber:iq:roster" not in feats and "urn:xmpp:blocking" not in feats, "component disco#info: not the host's features",
         lambda: repr(feats))
    # IQ and message to the domain and to a JID at it
    for to in ("svc.localhost", "echo@svc.localhost", "echo@svc.localhost/res"):
        r = ping(c, to)
        t.ok(r is not None and r.get("type") == "result" and r.get("from") == to,
             "ping to %s: result from it" % to, lambda: el_str(r) if r is not None else c.dump())
    echo(t, c, "svc.localhost", "one", "domain")
    echo(t, c, "echo@svc.localhost/res", "two", "full JID")
    # the component's own IQ requests (module_send_iq from its domain): the answer reaches it
    c.message("echo@svc.localhost/res", "ping-me")
    iq = c.expect(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("type") == "get"
                  and el.find(q(NS_PING, "ping")) is not None, timeout=10)
    t.ok(iq is not None and iq.get("from") == "echo@svc.localhost/res", "the component's IQ request reaches the client",
         lambda: el_str(iq) if iq is not None else c.dump())
    if iq is not None:
        c.send("<iq type='result' id='%s' to='%s'/>" % (iq.get("id"), iq.get("from")))
    m = c.expect(lambda el: el.tag == q(NS_CLIENT, "message") and (el.findtext(q(NS_CLIENT, "body")) or "").startswith("pinged:"),
                 timeout=10)
    t.is_(m.findtext(q(NS_CLIENT, "body")) if m is not None else None, "pinged: result",
          "the answer to the component's IQ request reaches its callback")
    # unknown JIDs at the component: its own error
    r = ping(c, "nobody@svc.localhost/x")
    t.ok(r is not None and r.get("type") == "error" and error_condition(r) == "item-not-found"
         and r.get("from") == "nobody@svc.localhost/x", "IQ to an unknown JID at the component: its item-not-found",
         lambda: el_str(r))
    c.message("nobody@svc.localhost", "lost")
    m = c.expect(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("type") == "error", timeout=10)
    t.ok(m is not None and error_condition(m) == "item-not-found" and m.get("from") == "nobody@svc.localhost",
         "message to an unknown JID at the component: its item-not-found", lambda: el_str(m) if m is not None else "")
    # what the module leaves to the core: an IQ nobody handles
    r = c.iq("get", "<query xmlns='jabber:iq:version'/>", to="svc.localhost")
    t.ok(r is not None and error_condition(r) == "service-unavailable" and r.get("from") == "svc.localhost",
         "an IQ the component does not handle: service-unavailable from the component", lambda: el_str(r))
    # a domain nobody serves still goes to federation, not to the component
    r = ping(c, "other.localhost")
    t.ok(r is not None and r.get("type") == "error", "a domain that is no component is not answered by it",
         lambda: el_str(r) if r is not None else c.dump())
    c.end()


def federation(t):
    certs = Certs()
    pa, pb = free_port(), free_port()
    lst = lambda p: {"client": ["127.0.0.1:0"], "client_tls": ["127.0.0.1:0"], "server": ["127.0.0.1:%d" % p]}  # noqa
    a = Server(t, hosts=["a.example"], certs=certs, listen=lst(pa), start=False, modules=MODULES, extra_yaml=(
        "federation:\n  mode: allowlist\n  dialback: true\n  partners:\n" + partner("b.example", pb, certs.ca)))
    b = Server(t, hosts=["b.example"], certs=certs, listen=lst(pb), start=False, modules=standard_modules(),
               extra_yaml=("federation:\n  mode: allowlist\n  dialback: true\n  partners:\n"
                           + partner("a.example", pa, certs.ca) + partner("svc.a.example", pa, certs.ca)))
    with a, b:
        a.start()
        b.start()
        b.adduser("bob@b.example", PW)
        bob = connect_login(b, "bob", PW, resource="r", domain="b.example")
        bob.presence()
        r = ping(bob, "svc.a.example")
        t.ok(r is not None and r.get("type") == "result" and r.get("from") == "svc.a.example",
             "s2s: a remote user's ping to the component is answered", lambda: el_str(r) if r is not None else bob.dump())
        r = bob.iq("get", "<query xmlns='%s'/>" % NS_INFO, to="svc.a.example", timeout=20)
        ids = [(i.get("category"), i.get("type")) for i in r.iter(q(NS_INFO, "identity"))] if r is not None else []
        t.is_(ids, [("store", "file")], "s2s: the component's disco#info reaches the remote user")
        echo(t, bob, "echo@svc.a.example/res", "remote", "s2s")
        bob.end()


def main(t):
    d = module_dir("mod_test_component")
    if d is None:
        t.ok(False, "tests/modules/mod_test_component.c is built (make check builds it)")
        return
    os.environ["CIVITAS_MODULE_DIR"] = d
    with Server(t, modules=MODULES) as srv:
        srv.adduser("alice@localhost", PW)
        t.run(local, t, srv)
    t.run(federation, t)


if __name__ == "__main__":
    Tap().main(main)
