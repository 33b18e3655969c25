/* tests/modules/mod_test_api.c: a module in the style of mod_ping.c that exercises the module API
 * of issue 10 (timers, IQ requests with a callback, presence and caps events) for the integration
 * test tests/integration/test_module_api.py. Built by `make check` only, never installed.
 *
 * A client drives it with <iq type='set' to='DOMAIN'><cmd xmlns='urn:civitas:test-api' .../></iq>:
 *   <send to='JID' [expect='JID'] [timeout='ms'] [kind='ping|disco'] [node='N']/>
 *        module_send_iq from the domain; the IQ result carries <sent id='…'/>; when the callback
 *        runs, the requester gets a headline message <outcome id='…' result='result|error|timeout|
 *        cancelled' [condition='…']/> with a copy of the answer's payload.
 *   <timer ms='N' [count='K'] [cancel='1']/>
 *        a timer (repeating when K > 1, cancelled by its callback after K ticks; cancel='1': cancelled
 *        at once, so it never ticks); each tick sends <tick n='i' of='K' ms='N'/> to the requester.
 *   <events/>   the presence/caps events seen since the last <events/>, as <event name from [to]/>.
 *   <caps jid='FULL' [feature='VAR']/>   caps_features of a full JID: <caps known has/>.
 *   <presence jid='FULL'/>   session_presence of a local session (a copy), or <none/>.
 * At unload it logs "test_api: cancelled <id>" for each request the core cancels, and
 * "test_api: unloaded with N timers": a pending timer's callback never runs after that. */
#include "module.h"
#include <stdlib.h>
#include <string.h>

#define NS_TEST "urn:civitas:test-api"

static module_ctx_t *self;
static xnode_t *events;             /* <events/> holding what the hooks saw */
static int live_timers;             /* timers added and not yet finished or cancelled */

typedef struct pending {
    char *requester;                /* full JID that asked */
    char *domain;                   /* our address: the host */
    char *id;                       /* the request's id */
} pending_t;

typedef struct tick {
    char *requester, *domain;
    long ms;
    int n, count;
    struct tick *next, **pprev;     /* ticks: what unload frees */
} tick_t;
static tick_t *ticks;

static void tick_free(tick_t *k)
{
    *k->pprev = k->next;
    if (k->next) k->next->pprev = k->pprev;
    free(k->requester);
    free(k->domain);
    free(k);
    live_timers--;
}

static void send_to(const char *domain, const char *to, xnode_t *payload)
{
    xnode_t *m = xnode_new("message", NS_CLIENT);
    xnode_set_attr(m, "type", "headline");
    xnode_set_attr(m, "from", domain);
    xnode_set_attr(m, "to", to);
    xnode_add_child(m, payload);
    route_stanza(m);
}

/* ---- IQ requests ---- */

static void on_answer(iq_outcome_t outcome, const xnode_t *reply, void *ud)
{
    pending_t *p = ud;
    static const char *const names[] = {"result", "error", "timeout", "cancelled"};
    const char *id = reply ? xnode_attr(reply, "id") : NULL;
    if (outcome == IQ_CANCELLED) {
        /* the module unloads (or the server stops): nothing may be routed any more, only freed */
        log_info("test_api", "cancelled %s", p->id);
    } else {
        xnode_t *o = xnode_new("outcome", NS_TEST);
        xnode_set_attr(o, "id", id);
        xnode_set_attr(o, "result", names[outcome]);
        xnode_set_attr(o, "from", xnode_attr(reply, "from"));
        xnode_t *err = xnode_child(reply, "error", NULL);
        xnode_t *cond = err ? xnode_first_elem(err) : NULL;
        if (cond) xnode_set_attr(o, "condition", cond->name);
        xnode_t *payload = xnode_first_elem(reply);
        if (payload && payload != err) xnode_add_child(o, xnode_copy(payload));
        send_to(p->domain, p->requester, o);
    }
    free(p->requester);
    free(p->domain);
    free(p->id);
    free(p);
}

static int cmd_send(hook_event_t *ev, const xnode_t *c)
{
    const char *to = xnode_attr(c, "to"), *kind = xnode_attr(c, "kind"), *t = xnode_attr(c, "timeout");
    if (!to) return hook_error(ev, "modify", "bad-request");
    xnode_t *iq = xnode_new("iq", NS_CLIENT);
    xnode_set_attr(iq, "type", "get");
    xnode_set_attr(iq, "to", to);
    xnode_set_attr(iq, "from", host_name(ev->host));
    if (kind && strcmp(kind, "disco") == 0) {
        xnode_t *q = xnode_add_elem(iq, "query", NS_DISCO_INFO);
        if (xnode_attr(c, "node")) xnode_set_attr(q, "node", xnode_attr(c, "node"));
    } else xnode_add_elem(iq, "ping", "urn:xmpp:ping");
    pending_t *p = xcalloc(1, sizeof *p);
    p->requester = xstrdup(ev->from->full);
    p->domain = xstrdup(host_name(ev->host));
    iq_request_t *r = module_send_iq(self, iq, xnode_attr(c, "expect"), t ? atol(t) : 0, on_answer, p);
    if (!r) {
        free(p->requester);
        free(p->domain);
        free(p);
        return hook_error(ev, "modify", "bad-request");
    }
    p->id = xstrdup(iq_request_id(r));
    xnode_t *reply = stanza_reply(ev->stanza);
    xnode_set_attr(xnode_add_elem(reply, "sent", NS_TEST), "id", p->id);
    return hook_reply(ev, reply);
}

/* ---- timers ---- */

static void on_tick(module_timer_t *t, void *ud)
{
    tick_t *k = ud;
    k->n++;
    xnode_t *x = xnode_new("tick", NS_TEST);
    char buf[64];
    snprintf(buf, sizeof buf, "%d", k->n);
    xnode_set_attr(x, "n", buf);
    snprintf(buf, sizeof buf, "%d", k->count);
    xnode_set_attr(x, "of", buf);
    snprintf(buf, sizeof buf, "%ld", k->ms);
    xnode_set_attr(x, "ms", buf);
    send_to(k->domain, k->requester, x);
    if (k->n < k->count) return;
    if (k->count > 1) module_timer_cancel(t);   /* a repeating timer ends itself */
    tick_free(k);
}

static int cmd_timer(hook_event_t *ev, const xnode_t *c)
{
    const char *ms_s = xnode_attr(c, "ms"), *count_s = xnode_attr(c, "count"), *cancel = xnode_attr(c, "cancel");
    tick_t *k = xcalloc(1, sizeof *k);
    k->ms = ms_s ? atol(ms_s) : 0;
    k->count = count_s ? atoi(count_s) : 1;
    if (k->count < 1) k->count = 1;
    k->requester = xstrdup(ev->from->full);
    k->domain = xstrdup(host_name(ev->host));
    k->next = ticks;
    if (ticks) ticks->pprev = &k->next;
    k->pprev = &ticks;
    ticks = k;
    live_timers++;
    module_timer_t *t = module_add_timer(self, k->ms, k->count > 1, on_tick, k);
    if (cancel && strcmp(cancel, "1") == 0) {
        module_timer_cancel(t);
        tick_free(k);
    }
    return hook_reply(ev, stanza_reply(ev->stanza));
}

/* ---- presence and caps ---- */

static int on_event(hook_event_t *ev, void *ud)
{
    (void)ud;
    xnode_t *e = xnode_add_elem(events, "event", NS_TEST);
    xnode_set_attr(e, "name", ev->name);
    if (ev->from) xnode_set_attr(e, "from", ev->from->full);
    if (ev->to) xnode_set_attr(e, "to", ev->to->full);
    if (ev->stanza) xnode_set_attr(e, "type", xnode_attr(ev->stanza, "type") ? xnode_attr(ev->stanza, "type") : "");
    if (ev->origin) xnode_set_attr(e, "local", "1");
    return HOOK_PASS;
}

static int cmd_events(hook_event_t *ev)
{
    xnode_t *reply = stanza_reply(ev->stanza);
    xnode_add_child(reply, events);
    events = xnode_new("events", NS_TEST);
    return hook_reply(ev, reply);
}

static int cmd_caps(hook_event_t *ev, const xnode_t *c)
{
    jid_t *j = xnode_attr(c, "jid") ? jid_new(xnode_attr(c, "jid")) : NULL;
    if (!j) return hook_error(ev, "modify", "jid-malformed");
    const strlist_t *f = caps_features(j);
    const char *var = xnode_attr(c, "feature");
    xnode_t *reply = stanza_reply(ev->stanza);
    xnode_t *x = xnode_add_elem(reply, "caps", NS_TEST);
    xnode_set_attr(x, "known", f ? "1" : "0");
    xnode_set_attr(x, "has", var && caps_has_feature(j, var) ? "1" : "0");
    for (size_t i = 0; f && i < f->n; i++) xnode_set_attr(xnode_add_elem(x, "feature", NS_TEST), "var", f->v[i]);
    jid_free(j);
    return hook_reply(ev, reply);
}

static int cmd_presence(hook_event_t *ev, const xnode_t *c)
{
    jid_t *j = xnode_attr(c, "jid") ? jid_new(xnode_attr(c, "jid")) : NULL;
    if (!j || !j->resource) {
        jid_free(j);
        return hook_error(ev, "modify", "jid-malformed");
    }
    jid_t *bare = jid_bare_of(j);
    for (session_t *s = user_sessions(bare); s; s = session_next_in_user(s))
        if (strcmp(session_jid(s)->full, j->full) == 0) {
            const xnode_t *p = session_presence(s);
            xnode_t *reply = stanza_reply(ev->stanza);
            xnode_t *x = xnode_add_elem(reply, "presence-of", NS_TEST);
            char buf[16];
            snprintf(buf, sizeof buf, "%d", session_priority(s));
            xnode_set_attr(x, "priority", buf);
            if (p) xnode_add_child(x, xnode_copy(p));
            else xnode_add_elem(x, "none", NS_TEST);
            jid_free(bare);
            jid_free(j);
            return hook_reply(ev, reply);
        }
    jid_free(bare);
    jid_free(j);
    return hook_error(ev, "cancel", "item-not-found");
}

static int on_cmd(hook_event_t *ev, void *ud)
{
    (void)ud;
    const xnode_t *cmd = xnode_first_elem(ev->stanza);
    const xnode_t *c = xnode_first_elem(cmd);
    if (!ev->from || !c) return hook_error(ev, "modify", "bad-request");
    if (strcmp(c->name, "send") == 0) return cmd_send(ev, c);
    if (strcmp(c->name, "timer") == 0) return cmd_timer(ev, c);
    if (strcmp(c->name, "events") == 0) return cmd_events(ev);
    if (strcmp(c->name, "caps") == 0) return cmd_caps(ev, c);
    if (strcmp(c->name, "presence") == 0) return cmd_presence(ev, c);
    return hook_error(ev, "cancel", "feature-not-implemented");
}

/* "pep/publish" (mod_pep): a publish to the node NS_TEST ":refuse" is refused with
 * <not-acceptable/> and a text naming what the event carried; nothing is stored then. */
static int on_pep_publish(hook_event_t *ev, void *ud)
{
    (void)ud;
    const xnode_t *ps = xnode_first_elem(ev->stanza);
    const xnode_t *pub = ps ? xnode_child(ps, "publish", "http://jabber.org/protocol/pubsub") : NULL;
    const char *node = pub ? xnode_attr(pub, "node") : NULL;
    if (!node || strcmp(node, NS_TEST ":refuse") != 0) return HOOK_PASS;
    char *text = xasprintf("from=%s to=%s origin=%s", ev->from ? ev->from->full : "-", ev->to ? ev->to->full : "-",
                           ev->origin && session_jid(ev->origin) ? session_jid(ev->origin)->full : "-");
    hook_reply(ev, stanza_error(ev->stanza, "modify", "not-acceptable", text));
    free(text);
    return HOOK_HANDLED;
}

static int load(module_ctx_t *m)
{
    self = m;
    module_add_account_feature(m, NS_TEST);
    module_hook(m, HOOK_PEP_PUBLISH, 0, on_pep_publish, NULL);
    events = xnode_new("events", NS_TEST);
    module_add_feature(m, NS_TEST);
    module_hook(m, "iq-set/host/" NS_TEST, 0, on_cmd, NULL);
    module_hook(m, HOOK_RESOURCE_AVAILABLE, 0, on_event, NULL);
    module_hook(m, HOOK_RESOURCE_UNAVAILABLE, 0, on_event, NULL);
    module_hook(m, HOOK_CONTACT_PRESENCE, 0, on_event, NULL);
    module_hook(m, HOOK_CAPS_KNOWN, 0, on_event, NULL);
    return 0;
}

static void unload(module_ctx_t *m)
{
    (void)m;
    /* the core cancelled our requests before this (on_answer freed them); our timers are
     * cancelled right after this returns, so their data can go now */
    log_info("test_api", "unloaded with %d timers", live_timers);
    while (ticks) tick_free(ticks);
    xnode_free(events);
    events = NULL;
}

const module_t civitas_module = { .abi = CIVITAS_MODULE_ABI, .name = "test_api", .load = load, .unload = unload };
