/* modules/mod_last.c: XEP-0012 Last Activity: the server's uptime, and for an account the time
 * since its last logout with the status it left with (stored), or 0 while it is online. */
#include "module.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_LAST "jabber:iq:last"
#define KV_STORE "last"
#define KV_KEY "logout"

static storage_t *store;
static int64_t started_ms;

static int reply_seconds(hook_event_t *ev, long long seconds, const char *text)
{
    xnode_t *r = stanza_reply(ev->stanza);
    xnode_t *q = xnode_add_elem(r, "query", NS_LAST);
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", seconds < 0 ? 0 : seconds);
    xnode_set_attr(q, "seconds", buf);
    if (text && *text) xnode_add_text(q, text);
    return hook_reply(ev, r);
}

/* §5: to the server's domain: its uptime, without text. */
static int on_host(hook_event_t *ev, void *ud)
{
    (void)ud;
    return reply_seconds(ev, (now_ms() - started_ms) / 1000, NULL);
}

/* §3 and §7: only the user and entities allowed to see the user's presence (a subscription
 * 'from' or 'both' in the user's roster) may learn its last activity. */
static int authorized(const jid_t *requester, const jid_t *user)
{
    if (!requester) return 0;
    if (jid_bare_equal(requester, user)) return 1;
    return roster_is_subscribed(user, requester, ROSTER_SUB_FROM);
}

/* §3: to a bare JID: seconds since the last logout and its status text; 0 while a resource is
 * available. Unauthorised requester: <forbidden/>, and so for an account that does not exist (it
 * allows nobody), so that the answer does not tell whether it exists (as Prosody answers);
 * nothing recorded: <service-unavailable/>. */
static int on_bare(hook_event_t *ev, void *ud)
{
    (void)ud;
    const jid_t *to = ev->to;
    if (!authorized(ev->from, to)) return hook_error_cond(ev, STANZA_ERR_FORBIDDEN);
    int ex = storage_account_exists(store, to->node, to->domain);
    if (ex < 0) return hook_error(ev, "wait", "internal-server-error");
    if (ex == 0) return hook_error_cond(ev, STANZA_ERR_SERVICE_UNAVAILABLE);
    for (session_t *s = user_sessions(to); s; s = session_next_in_user(s))
        if (session_available(s)) return reply_seconds(ev, 0, NULL);
    void *val;
    size_t len;
    int r = storage_kv_get(store, KV_STORE, to->node, to->domain, KV_KEY, &val, &len);
    if (r < 0) {
        log_warn("last", "reading last activity failed: %s", storage_last_error(store));
        return hook_error(ev, "wait", "internal-server-error");
    }
    if (r == 1) return hook_error_cond(ev, STANZA_ERR_SERVICE_UNAVAILABLE);
    /* stored as "<unix seconds>\n<status text>" */
    char *nl = memchr(val, '\n', len);
    long long when = strtoll(val, NULL, 10);
    reply_seconds(ev, (long long)now_unix() - when, nl ? nl + 1 : NULL);
    free(val);
    return HOOK_HANDLED;
}

static void record(const jid_t *j, const char *status)
{
    char *v = xasprintf("%lld\n%s", (long long)now_unix(), status ? status : "");
    if (storage_kv_set(store, KV_STORE, j->node, j->domain, KV_KEY, v, strlen(v)) < 0)
        log_warn("last", "storing last activity failed: %s", storage_last_error(store));
    free(v);
}

/* Unavailable presence without 'to' (a logout as far as presence goes): its time and status. */
static int on_presence(hook_event_t *ev, void *ud)
{
    (void)ud;
    const char *type = xnode_attr(ev->stanza, "type");
    const jid_t *j = ev->origin ? session_jid(ev->origin) : NULL;
    if (!j || !j->node || !type || strcmp(type, "unavailable") != 0) return HOOK_PASS;
    xnode_t *st = xnode_child(ev->stanza, "status", NS_CLIENT);
    char *status = st ? xnode_text(st) : NULL;
    record(j, status);
    free(status);
    return HOOK_PASS;
}

/* A stream that ends while available logs out without a status. */
static int on_closed(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (ev->origin && ev->from && ev->from->node && session_available(ev->origin)) record(ev->from, NULL);
    return HOOK_PASS;
}

static int load(module_ctx_t *m)
{
    store = module_storage(m);
    started_ms = now_ms();
    module_add_feature(m, NS_LAST);
    module_hook(m, "iq-get/host/" NS_LAST, 0, on_host, NULL);
    module_hook(m, "iq-get/bare/" NS_LAST, 0, on_bare, NULL);
    /* before a presence module, which may end the event */
    module_hook(m, "presence/self", 50, on_presence, NULL);
    module_hook(m, "session-closed", 0, on_closed, NULL);
    return 0;
}

const module_t civitas_module = { .abi = CIVITAS_MODULE_ABI, .name = "last", .load = load };
