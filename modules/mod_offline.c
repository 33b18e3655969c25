/* modules/mod_offline.c: XEP-0160 offline message storage (RFC 6121 §8.5.2.2): normal and chat
 * messages for an account without a non-negative available resource are stored and delivered later. */
#include "module.h"
#include <stddef.h>
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

/* ---- replay state: one per session that became a receiver (session data, freed with free()) ----
 * A replay writes the stored messages in batches of at most REPLAY_BYTES, each only once the
 * previous one was accepted by the TCP layer ("session-drained"), and deletes a batch then: a
 * client that reads slowly never pushes the session past limits.max_output_buffer, and a
 * connection lost in the middle keeps what was not written for the next login. One session of a
 * user replays at a time; while it does, it counts as no receiver, so that messages arriving
 * meanwhile are stored behind the others and delivered in order. */

#define REPLAY_KEY "offline.replay"
#define REPLAY_BYTES 65536          /* a batch: at most this much (or one message) queued at once */
#define REPLAY_MAX_MSGS 256         /* and at most this many messages */

typedef struct replay {
    int64_t sent;           /* the last id written to the session: nothing up to it is sent again */
    int64_t drained;        /* the last id accepted by the TCP layer (at the last session-drained) */
    int64_t deleted;        /* the last id deleted from storage */
    unsigned receiver : 1;  /* the session's priority is non-negative */
    unsigned active : 1;    /* this session holds the user's replay (in `replaying`) */
    char bare[];            /* the user's bare JID */
} replay_t;

static strmap_t *replaying;     /* bare JID -> the replay_t of the session replaying to it */

static replay_t *replay_of(const session_t *s) { return s ? session_get_data(s, REPLAY_KEY) : NULL; }

/* "message/undelivered": no receiver took it (RFC 6121 §8.5.2.2; a session replaying is on hold
 * and no receiver: what arrives meanwhile is stored behind the rest and delivered in order). Also
 * reached for a full JID without that resource (the core re-routes normal and chat messages to the
 * bare JID, §8.5.3.2.1). "message/deliver/pre" ran already: what is stored is the stamped stanza. */
static int on_message(hook_event_t *ev, void *ud)
{
    (void)ud;
    const jid_t *to = ev->to;
    if (!to || !to->node) return HOOK_PASS;
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
        return hook_error_cond(ev, STANZA_ERR_SERVICE_UNAVAILABLE);
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
        return hook_error_cond(ev, STANZA_ERR_RESOURCE_CONSTRAINT);
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
    size_t n, bytes, budget;
} collect_t;

/* Collects up to c->budget bytes: a message that would push the batch past it is left for the
 * next batch, unless it is the first (one message may exceed the budget, never the output cap:
 * send_stored drops what does). */
static int collect_cb(void *ud, int64_t id, int64_t when, const void *val, size_t len)
{
    collect_t *c = ud;
    if (c->n && c->bytes + len > c->budget) return 1;
    c->v = xrealloc(c->v, (c->n + 1) * sizeof *c->v);
    c->v[c->n++] = (stored_t){id, when, xstrndup(val, len), len};
    c->bytes += len;
    return c->bytes >= c->budget;
}

/* Delete what the TCP layer accepted. A failure (database busy or full) is logged and tried
 * again at the next drain or when the session ends; nothing is sent twice to this session meanwhile. */
static void replay_delete(const jid_t *bare, replay_t *r)
{
    if (r->drained <= r->deleted) return;
    if (storage_list_delete_upto(store, LIST, bare->node, bare->domain, r->drained) < 0) {
        log_warn("offline", "deleting delivered offline messages failed: %s", storage_last_error(store));
        return;
    }
    r->deleted = r->drained;
}

static void replay_start(session_t *s, replay_t *r);

/* End r's replay; when it stopped early (session closed, priority gone negative) another receiver
 * of the user, which did not start its own replay meanwhile, takes over the rest. */
static void replay_finish(session_t *s, replay_t *r, int hand_over)
{
    if (!r->active) return;
    r->active = 0;
    session_hold_bare(s, 0);
    if (strmap_get(replaying, r->bare) == r) strmap_del(replaying, r->bare);
    jid_t *bare = hand_over ? jid_new(r->bare) : NULL;
    for (session_t *o = bare ? user_sessions(bare) : NULL; o; o = session_next_in_user(o)) {
        replay_t *ro = replay_of(o);
        if (o != s && ro && ro->receiver && session_priority(o) >= 0) {
            replay_start(o, ro);
            break;
        }
    }
    jid_free(bare);
}

/* Room for the <delay/> and the TLS records' overhead of one message. */
#define SEND_SLACK 512

typedef enum { SEND_WRITTEN, SEND_SKIPPED, SEND_NO_ROOM } send_result_t;

/* Write one stored message with a XEP-0203 <delay/> saying when the server received it.
 * SEND_SKIPPED: it never will be (expired, too large, unreadable): deleted with its batch.
 * SEND_NO_ROOM: the output queue has no room for it now (nothing written): try after the drain. */
static send_result_t send_stored(session_t *s, const jid_t *bare, const stored_t *m, int64_t cutoff)
{
    if (m->when < cutoff) return SEND_SKIPPED;     /* expired: never delivered */
    size_t cap = session_output_limit();
    if (m->len + SEND_SLACK > cap) {    /* would close the session at every login */
        log_warn("offline", "dropping offline message %lld: larger than limits.max_output_buffer", (long long)m->id);
        return SEND_SKIPPED;
    }
    if (session_output_queued(s) + m->len + SEND_SLACK > cap) return SEND_NO_ROOM;
    xnode_t *st = xnode_parse_one(m->xml, m->len, NS_CLIENT);
    if (!st) {
        log_warn("offline", "dropping unreadable offline message %lld", (long long)m->id);
        return SEND_SKIPPED;
    }
    char stamp[XEP0082_SIZE];
    xep0082_timestamp(stamp, sizeof stamp, m->when);
    xnode_t *d = xnode_add_elem(st, "delay", NS_DELAY);
    xnode_set_attr(d, "from", bare->domain);
    xnode_set_attr(d, "stamp", stamp);
    /* the same hooks as live delivery, with ev->replay = 1 (module.h, "Message flow") */
    return route_replay(s, st) ? SEND_WRITTEN : SEND_SKIPPED;
}

/* One step of a replay: everything written so far was accepted by the TCP layer (at the start,
 * nothing was written), so delete it; then write the next batch and wait for it to drain, or end. */
static void replay_step(session_t *s, replay_t *r)
{
    jid_t *bare = jid_bare_of(session_jid(s));
    r->drained = r->sent;
    replay_delete(bare, r);
    if (!r->receiver) {                 /* priority went negative: not for this one (§8.5.2.1) */
        replay_finish(s, r, 1);
        jid_free(bare);
        return;
    }
    size_t budget = session_output_limit() / 2;
    collect_t c = {.budget = budget < REPLAY_BYTES ? budget : REPLAY_BYTES};
    if (storage_list_each(store, LIST, bare->node, bare->domain, r->sent, REPLAY_MAX_MSGS, collect_cb, &c) < 0)
        log_warn("offline", "reading offline messages failed: %s", storage_last_error(store));
    int64_t cutoff = conf.max_age_days > 0 ? now_unix() - (int64_t)conf.max_age_days * 86400 : INT64_MIN;
    size_t i = 0;
    for (; i < c.n && send_stored(s, bare, &c.v[i], cutoff) != SEND_NO_ROOM; i++)
        r->sent = c.v[i].id;    /* written (or skipped): nothing up to it is written again */
    if (c.n) {
        /* a message without room now (other output queued, as at the first presence) comes with
         * the next batch, once the queue is empty */
        log_debug("offline", "replaying %zu offline message(s) to %s", i, log_jid(bare->bare));
        session_want_drained(s);
    } else {
        replay_finish(s, r, 0);
    }
    for (i = 0; i < c.n; i++) free(c.v[i].xml);
    free(c.v);
    jid_free(bare);
}

static void replay_start(session_t *s, replay_t *r)
{
    if (r->active || strmap_get(replaying, r->bare)) return;   /* running here, or in another session */
    r->active = 1;
    session_hold_bare(s, 1);
    strmap_put(replaying, r->bare, r);
    expire_old(0);
    replay_step(s, r);
}

/* "presence/self" (after "presence/initial" for a first presence; the session's priority is
 * already updated): a resource that becomes a receiver (non-negative priority, RFC 6121
 * §8.5.2.1) gets what was stored meanwhile (XEP-0160 §3). Only that transition reads the store,
 * so a first presence reads it once and status changes not at all. */
static int on_presence(hook_event_t *ev, void *ud)
{
    (void)ud;
    session_t *s = ev->origin;
    const jid_t *j = s ? session_jid(s) : NULL;
    if (!j || !j->node) return HOOK_PASS;
    replay_t *r = replay_of(s);
    int receiver = session_priority(s) >= 0;
    if (!r) {
        if (!receiver) return HOOK_PASS;
        jid_t *bare = jid_bare_of(j);
        size_t n = strlen(bare->bare) + 1;
        r = xcalloc(1, sizeof *r + n);
        memcpy(r->bare, bare->bare, n);
        jid_free(bare);
        session_set_data(s, REPLAY_KEY, r, free);
    }
    int was = r->receiver;
    r->receiver = receiver;
    if (receiver && !was) replay_start(s, r);
    return HOOK_PASS;
}

static int on_drained(hook_event_t *ev, void *ud)
{
    (void)ud;
    replay_t *r = replay_of(ev->origin);
    if (r && r->active) replay_step(ev->origin, r);
    return HOOK_PASS;
}

/* A session that ends: delete what the TCP layer accepted by the last "session-drained"; another
 * receiver of the user (if any) takes over the rest (replay_finish). The batch written after that
 * drain stays stored even if it reached the client: "session-closed" fires after the closing
 * </stream:stream> was queued, so the output queue cannot tell whether the batch got out. Such a
 * batch is delivered again (at least once, README "Deviations"), never lost. */
static int on_closed(hook_event_t *ev, void *ud)
{
    (void)ud;
    replay_t *r = replay_of(ev->origin);
    if (!r || !ev->from) return HOOK_PASS;
    jid_t *bare = jid_bare_of(ev->from);
    replay_delete(bare, r);
    jid_free(bare);
    r->receiver = 0;
    replay_finish(ev->origin, r, 1);
    return HOOK_PASS;
}

static int load(module_ctx_t *m)
{
    store = module_storage(m);
    last_expire_ms = -EXPIRE_EVERY_MS;
    expire_old(1);
    module_add_feature(m, "msgoffline");
    replaying = strmap_new();
    module_hook(m, HOOK_MESSAGE_UNDELIVERED, 0, on_message, NULL);
    /* before a presence module's handlers, which may end the event */
    module_hook(m, "presence/self", 10, on_presence, NULL);
    module_hook(m, "session-drained", 0, on_drained, NULL);
    module_hook(m, "session-closed", 0, on_closed, NULL);
    return 0;
}

static void unload(module_ctx_t *m)
{
    (void)m;
    strmap_free(replaying);     /* the replay_t values belong to their sessions */
    replaying = NULL;
}

static const module_option_t options[] = {
    {.name = "max_messages", .type = MOPT_INT, .offset = offsetof(struct offline_conf, max_messages),
     .def = 1000, .min = 1, .max = 1000000},
    {.name = "max_age_days", .type = MOPT_INT, .offset = offsetof(struct offline_conf, max_age_days),
     .def = 30, .min = 0, .max = 36500},
    {0}};

const module_t civitas_module = { .abi = CIVITAS_MODULE_ABI, .name = "offline", .load = load, .unload = unload,
                                    .options = options, .conf = &conf };
