/* tests/modules/mod_test_flow.c: records the message flow hooks and the account and host lifecycle
 * events of module.h for tests/integration/test_message_flow.py. Built by `make check` only.
 *
 * "message/deliver/pre" stamps a XEP-0359 <stanza-id xmlns='urn:xmpp:sid:0' by='B' id='N'/> on
 * every message that is not a replay (B: the local host involved, or the sender's domain for a
 * message leaving to another server; N counts from 1); a replayed message keeps its stamp.
 * Every pre, post and undelivered call and every lifecycle event is recorded; lifecycle events are
 * also logged as "test_flow: event NAME JID" (host-stopping can only be seen in the log).
 * A client drives it with <iq type='set' to='DOMAIN'><cmd xmlns='urn:civitas:test-flow'>…:
 *   <events/>   what was recorded since the last <events/>: <event name='pre|post|undelivered|
 *               user-created|…' replay='0|1' to='…' body='…' sid='…'/>, then forgotten.
 *   <send to='JID' body='TEXT'/>   a chat message from the domain, routed with route_stanza. */
#include "module.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_TEST "urn:civitas:test-flow"
#define NS_SID "urn:xmpp:sid:0"

static xnode_t *events;
static long next_id;

static void record(const hook_event_t *ev, const char *what)
{
    xnode_t *e = xnode_add_elem(events, "event", NS_TEST);
    xnode_set_attr(e, "name", what);
    xnode_set_attr(e, "replay", ev->replay ? "1" : "0");
    if (ev->to) xnode_set_attr(e, "to", ev->to->full);
    if (ev->from) xnode_set_attr(e, "from", ev->from->full);
    xnode_t *body = ev->stanza ? xnode_child(ev->stanza, "body", NS_CLIENT) : NULL;
    if (body) {
        char *t = xnode_text(body);
        xnode_set_attr(e, "body", t);
        free(t);
    }
    xnode_t *sid = ev->stanza ? xnode_child(ev->stanza, "stanza-id", NS_SID) : NULL;
    if (sid) xnode_set_attr(e, "sid", xnode_attr(sid, "id"));
}

static int on_pre(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!ev->replay) {
        const char *by = ev->host ? host_name(ev->host) : ev->from ? ev->from->domain : "";
        char id[32];
        snprintf(id, sizeof id, "%ld", ++next_id);
        xnode_t *s = xnode_add_elem(ev->stanza, "stanza-id", NS_SID);
        xnode_set_attr(s, "by", by);
        xnode_set_attr(s, "id", id);
    }
    record(ev, "pre");
    return HOOK_PASS;
}

static int on_event(hook_event_t *ev, void *ud)
{
    const char *what = ud;
    record(ev, what);
    if (!ev->stanza)    /* the lifecycle events */
        log_info("test_flow", "event %s %s", what, ev->to ? ev->to->full : ev->host ? host_name(ev->host) : "");
    return HOOK_PASS;
}

static int on_cmd(hook_event_t *ev, void *ud)
{
    (void)ud;
    xnode_t *c = xnode_first_elem(ev->stanza);
    xnode_t *op = c ? xnode_first_elem(c) : NULL;
    if (!op) return hook_error(ev, "modify", "bad-request");
    if (strcmp(op->name, "events") == 0) {
        xnode_t *reply = stanza_reply(ev->stanza);
        xnode_add_child(reply, events);
        events = xnode_new("events", NS_TEST);
        return hook_reply(ev, reply);
    }
    if (strcmp(op->name, "send") == 0 && xnode_attr(op, "to") && ev->to) {
        xnode_t *m = xnode_new("message", NS_CLIENT);
        xnode_set_attr(m, "type", "chat");
        xnode_set_attr(m, "from", ev->to->domain);
        xnode_set_attr(m, "to", xnode_attr(op, "to"));
        xnode_add_text(xnode_add_elem(m, "body", NS_CLIENT), xnode_attr(op, "body") ? xnode_attr(op, "body") : "");
        route_stanza(m);
        return hook_reply(ev, stanza_reply(ev->stanza));
    }
    return hook_error(ev, "modify", "bad-request");
}

static int load(module_ctx_t *m)
{
    events = xnode_new("events", NS_TEST);
    next_id = 0;
    module_hook(m, HOOK_MESSAGE_DELIVER_PRE, 0, on_pre, NULL);
    module_hook(m, HOOK_MESSAGE_DELIVER_POST, 0, on_event, "post");
    /* before mod_offline (0), which stores and stops it: every call is seen */
    module_hook(m, HOOK_MESSAGE_UNDELIVERED, 10, on_event, "undelivered");
    static const char *const lifecycle[] = {HOOK_USER_CREATED, HOOK_PASSWORD_CHANGED, HOOK_USER_DELETED,
                                            HOOK_HOST_STARTED, HOOK_HOST_STOPPING};
    for (size_t i = 0; i < sizeof lifecycle / sizeof lifecycle[0]; i++)
        module_hook(m, lifecycle[i], 0, on_event, (void *)lifecycle[i]);
    module_hook(m, "iq-set/host/" NS_TEST, 0, on_cmd, NULL);
    return 0;
}

static void unload(module_ctx_t *m)
{
    (void)m;
    xnode_free(events);
    events = NULL;
}

const module_t civitas_module = {.abi = CIVITAS_MODULE_ABI, .name = "test_flow", .load = load, .unload = unload};
