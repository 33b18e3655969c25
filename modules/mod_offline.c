/* modules/mod_offline.c: XEP-0160 offline message storage (RFC 6121 §8.5.2.2): normal and chat
 * messages for an account without a non-negative available resource are stored and delivered later. */
#include "module.h"
#include <stddef.h>
#include "util.h"
#include "log.h"
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LIST "offline"
#define NS_DELAY "urn:xmpp:delay"
#define NS_HINTS "urn:xmpp:hints"
#define NS_OMEMO_LEGACY "eu.siacs.conversations.axolotl"
#define NS_OMEMO2 "urn:xmpp:omemo:2"
#define EXPIRE_EVERY_MS 60000       /* the sweep of old messages runs at most this often */

static struct offline_conf {
    long max_messages;
    long max_age_days;
} conf;

static storage_t *store;
static int64_t last_expire_ms = -EXPIRE_EVERY_MS;

/* Delete messages older than conf.max_age_days, of every user. There is no timer API, so this runs
 * at load and then, at most once a minute, when a message is stored or delivered. */
static void expire_old(int force)
{
    if (conf.max_age_days <= 0) return;
    int64_t t = now_ms();
    if (!force && t - last_expire_ms < EXPIRE_EVERY_MS) return;
    last_expire_ms = t;
    int n = storage_list_expire(store, LIST, now_unix() - (int64_t)conf.max_age_days * 86400);
    if (n < 0) log_warn("offline", "expiring old messages failed: %s", storage_last_error(store));
    else if (n > 0) log_info("offline", "expired %d offline message(s) older than %ld days", n, conf.max_age_days);
}

/* What to do with a message nobody can receive now. */
typedef enum { KEEP_STORE, KEEP_BOUNCE, KEEP_DROP } keep_t;

/* XEP-0160 §3 and XEP-0334: only normal and chat messages are stored (never error, groupchat,
 * headline); they need content worth keeping: a body, an OMEMO payload (which has no body) or an
 * explicit <store/> hint. <no-store/> always wins. Contentless messages (chat states, receipts,
 * markers) are dropped silently: an error for each typing notification helps nobody, and RFC 6121
 * §8.5.2.2.1 allows ignoring them. A message with a body that may not be stored bounces, so that
 * its sender learns it was not delivered. */
static keep_t classify(const xnode_t *st)
{
    const char *type = xnode_attr(st, "type");
    if (type && strcmp(type, "normal") != 0 && strcmp(type, "chat") != 0) return KEEP_BOUNCE;
    int body = xnode_child(st, "body", NS_CLIENT) != NULL;
    int content = body || xnode_child(st, "encrypted", NS_OMEMO_LEGACY) ||
                  xnode_child(st, "encrypted", NS_OMEMO2);
    if (xnode_child(st, "no-store", NS_HINTS)) return content ? KEEP_BOUNCE : KEEP_DROP;
    if (content || xnode_child(st, "store", NS_HINTS)) return KEEP_STORE;
    return KEEP_DROP;
}

/* 1 when one of the account's resources is available with a non-negative priority (the core
 * then delivers: RFC 6121 §8.5.2.1). */
static int has_receiver(const jid_t *bare)
{
    for (session_t *s = user_sessions(bare); s; s = session_next_in_user(s))
        if (session_priority(s) >= 0) return 1;
    return 0;
}

/* "message/bare": also reached for a full JID without that resource (the core re-routes normal
 * and chat messages to the bare JID, RFC 6121 §8.5.3.2.1). */
static int on_message(hook_event_t *ev, void *ud)
{
    (void)ud;
    const jid_t *to = ev->to;
    if (!to || !to->node || has_receiver(to)) return HOOK_PASS;
    const char *type = xnode_attr(ev->stanza, "type");
    if (type && (strcmp(type, "error") == 0 || strcmp(type, "headline") == 0 || strcmp(type, "groupchat") == 0))
        return HOOK_PASS;   /* the core's rules: errors and headlines dropped, groupchat bounced */
    int exists = storage_account_exists(store, to->node, to->domain);
    if (exists <= 0) {
        if (exists < 0) log_warn("offline", "account lookup failed: %s", storage_last_error(store));
        return HOOK_PASS;   /* no such account: the core bounces <service-unavailable/> (§8.5.1) */
    }
    keep_t k = classify(ev->stanza);
    if (k == KEEP_DROP) return HOOK_HANDLED;
    if (k == KEEP_BOUNCE) return HOOK_PASS;
    expire_old(0);
    int n = storage_list_count(store, LIST, to->node, to->domain);
    if (n < 0) {
        log_warn("offline", "counting offline messages failed: %s", storage_last_error(store));
        return hook_error(ev, "wait", "internal-server-error");
    }
    if (n >= conf.max_messages) {
        log_info("offline", "offline storage of %s is full (%d messages)", log_jid(to->bare), n);
        return hook_error(ev, "cancel", "service-unavailable");
    }
    size_t len;
    char *xml = xnode_serialize(ev->stanza, NS_CLIENT, &len);
    if (!xml) return HOOK_PASS;
    int64_t id = storage_list_append(store, LIST, to->node, to->domain, now_unix(), xml, len);
    free(xml);
    if (id < 0) {
        /* disk full, read-only database: not kept, and the sender is told to try later (issue 5);
         * the storage recovers by itself when the condition ends */
        log_warn("offline", "storing an offline message failed: %s", storage_last_error(store));
        return hook_error(ev, "wait", "resource-constraint");
    }
    log_debug("offline", "stored message %lld for %s", (long long)id, log_jid(to->bare));
    return HOOK_HANDLED;
}

typedef struct stored {
    int64_t id, when;
    char *xml;
    size_t len;
} stored_t;

typedef struct collect {
    stored_t *v;
    size_t n;
} collect_t;

static int collect_cb(void *ud, int64_t id, int64_t when, const void *val, size_t len)
{
    collect_t *c = ud;
    c->v = xrealloc(c->v, (c->n + 1) * sizeof *c->v);
    c->v[c->n++] = (stored_t){id, when, xstrndup(val, len), len};
    return 0;
}

/* Send every stored message to s, oldest first, each with a XEP-0203 <delay/> saying when the
 * server received it; then delete them (only now: a failure before leaves them stored). */
static void deliver(session_t *s, const jid_t *bare)
{
    collect_t c = {0};
    if (storage_list_each(store, LIST, bare->node, bare->domain, 0, 0, collect_cb, &c) < 0) {
        log_warn("offline", "reading offline messages failed: %s", storage_last_error(store));
        goto out;
    }
    if (c.n == 0) goto out;
    int64_t cutoff = conf.max_age_days > 0 ? now_unix() - (int64_t)conf.max_age_days * 86400 : INT64_MIN;
    for (size_t i = 0; i < c.n; i++) {
        if (c.v[i].when < cutoff) continue;     /* expired: deleted below, never delivered */
        xnode_t *st = xnode_parse_one(c.v[i].xml, c.v[i].len, NS_CLIENT);
        if (!st) {
            log_warn("offline", "dropping unreadable offline message %lld", (long long)c.v[i].id);
            continue;
        }
        char stamp[32];
        time_t t = (time_t)c.v[i].when;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
        xnode_t *d = xnode_add_elem(st, "delay", NS_DELAY);
        xnode_set_attr(d, "from", bare->domain);
        xnode_set_attr(d, "stamp", stamp);
        session_send(s, st);
        xnode_free(st);
    }
    if (storage_list_delete_upto(store, LIST, bare->node, bare->domain, c.v[c.n - 1].id) < 0)
        log_warn("offline", "deleting delivered offline messages failed: %s", storage_last_error(store));
    else log_debug("offline", "delivered %zu offline message(s) to %s", c.n, log_jid(bare->bare));
out:
    for (size_t i = 0; i < c.n; i++) free(c.v[i].xml);
    free(c.v);
}

/* "presence/initial" (a session's first available presence) and "presence/self" (a later one,
 * e.g. a priority raised from negative): a resource that now has a non-negative priority gets
 * what was stored meanwhile (XEP-0160 §3, RFC 6121 §8.5.2.1). */
static int on_presence(hook_event_t *ev, void *ud)
{
    (void)ud;
    session_t *s = ev->origin;
    const jid_t *j = s ? session_jid(s) : NULL;
    if (!j || !j->node || session_priority(s) < 0) return HOOK_PASS;
    jid_t *bare = jid_bare_of(j);
    expire_old(0);
    deliver(s, bare);
    jid_free(bare);
    return HOOK_PASS;
}

static int load(module_ctx_t *m)
{
    store = module_storage(m);
    last_expire_ms = -EXPIRE_EVERY_MS;
    expire_old(1);
    module_add_feature(m, "msgoffline");
    module_hook(m, "message/bare", 0, on_message, NULL);
    /* before a presence module's handlers, which may end the event */
    module_hook(m, "presence/initial", 10, on_presence, NULL);
    module_hook(m, "presence/self", 10, on_presence, NULL);
    return 0;
}

static const module_option_t options[] = {
    {"max_messages", MOPT_INT, offsetof(struct offline_conf, max_messages), 1000, 1, 1000000},
    {"max_age_days", MOPT_INT, offsetof(struct offline_conf, max_age_days), 30, 0, 36500},
    {0}};

const module_t civitas_module = { .abi = CIVITAS_MODULE_ABI, .name = "offline", .load = load,
                                    .options = options, .conf = &conf };
