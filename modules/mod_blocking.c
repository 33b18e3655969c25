/* modules/mod_blocking.c: XEP-0191 Blocking Command: each user's blocklist (stored, pushed to the
 * resources that asked for it) and the filtering of stanzas to and from blocked entities. */
#include "module.h"
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define NS_BLOCKING "urn:xmpp:blocking"
#define NS_BLOCKING_ERRORS "urn:xmpp:blocking:errors"
#define KV_STORE "blocking"
#define DATA_INTERESTED "blocking:interested"    /* session data: this resource asked for the list */

static struct blocking_conf {
    long max_items;
} conf;

static storage_t *store;
/* Blocklists of users that have a bound session: bare JID -> set (strmap_t) of blocked JIDs. Users
 * without a session read their list from storage for each stanza, so the cache holds no more than
 * the online users and is dropped with their last session. */
static strmap_t *cache;
/* > 0 while this module routes a stanza of its own (an error to a blocked sender, the unavailable
 * presence of §3.3): those must pass its own filters. Routing is synchronous, so a counter works. */
static int emitting;

static void route_own(xnode_t *st)
{
    emitting++;
    route_stanza(st);
    emitting--;
}

static int load_cb(void *ud, const char *key, const void *val, size_t len)
{
    (void)val; (void)len;
    strmap_put(ud, key, (void *)1);
    return 0;
}

static void set_free(void *set) { strmap_free(set); }

/* The blocklist of a local account as a set, or NULL on a storage error. *temp is 1 when the
 * caller must free it with set_free (the user is offline, so it is not cached). */
static strmap_t *blocklist(const jid_t *bare, int *temp)
{
    *temp = 0;
    strmap_t *set = strmap_get(cache, bare->bare);
    if (set) return set;
    set = strmap_new();
    if (storage_kv_each(store, KV_STORE, bare->node, bare->domain, load_cb, set) < 0) {
        log_warn("blocking", "reading a blocklist failed: %s", storage_last_error(store));
        strmap_free(set);
        return NULL;
    }
    if (user_sessions(bare)) strmap_put(cache, bare->bare, set);
    else *temp = 1;
    return set;
}

static void cache_drop(const char *bare)
{
    strmap_t *set = strmap_del(cache, bare);
    if (set) set_free(set);
}

/* XEP-0191 §6 / XEP-0016 §2.1: an item matches the full JID, the bare JID (any resource), the
 * domain/resource, or the domain (anything from it). */
static int set_matches(const strmap_t *set, const jid_t *j)
{
    if (strmap_get(set, j->full) || strmap_get(set, j->bare) || strmap_get(set, j->domain)) return 1;
    if (j->node && j->resource) {
        char *dr = xasprintf("%s/%s", j->domain, j->resource);
        int r = strmap_get(set, dr) != NULL;
        free(dr);
        return r;
    }
    return 0;
}

/* 1 when the local account `owner` (bare) blocks j, 0 when not, -1 on a storage error. */
static int is_blocked(const jid_t *owner, const jid_t *j)
{
    int temp;
    strmap_t *set = blocklist(owner, &temp);
    if (!set) return -1;
    int r = set_matches(set, j);
    if (temp) set_free(set);
    return r;
}

static const char *type_of(const xnode_t *st)
{
    const char *t = xnode_attr(st, "type");
    return t ? t : "";
}

/* Never filter what a user's own account or own server sends to it (replies of the server come
 * from the bare domain; blocking it must not cut the user off from the server). */
static int exempt(const jid_t *from, const jid_t *to)
{
    if (jid_bare_equal(from, to)) return 1;
    return !from->node && !from->resource && strcmp(from->domain, to->domain) == 0;
}

/* §3.3: a blocked entity's stanza to the user: presence dropped; message answered with
 * <service-unavailable/>; IQ get/set answered with <service-unavailable/>, other IQs dropped. */
static int refuse_inbound(hook_event_t *ev)
{
    const xnode_t *st = ev->stanza;
    const char *type = type_of(st);
    int answer = (strcmp(st->name, "message") == 0 && strcmp(type, "error") != 0) ||
                 (strcmp(st->name, "iq") == 0 && (strcmp(type, "get") == 0 || strcmp(type, "set") == 0));
    if (answer) {
        xnode_t *e = stanza_error(st, "cancel", "service-unavailable", NULL);
        if (e) route_own(e);
    }
    return HOOK_HANDLED;
}

/* message/bare, message/full, presence/bare, presence/full, iq/bare, iq/full: stanzas to a local
 * account. */
static int on_inbound(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (emitting || !ev->from || !ev->to || !ev->to->node || exempt(ev->from, ev->to)) return HOOK_PASS;
    jid_t *owner = jid_bare_of(ev->to);
    int r = is_blocked(owner, ev->from);
    jid_free(owner);
    if (r > 0) return refuse_inbound(ev);
    if (r < 0) return HOOK_PASS;
    /* The other direction, for stanzas a module sends on a local user's behalf (presence
     * broadcasts, notifications) that never passed pre-stanza/out: a user who blocked the
     * recipient sends it nothing. */
    if (ev->from->node && host_find(ev->from->domain)) {
        jid_t *sender = jid_bare_of(ev->from);
        r = is_blocked(sender, ev->to);
        jid_free(sender);
        if (r > 0) return HOOK_HANDLED;
    }
    return HOOK_PASS;
}

/* route/remote: a stanza leaving for another server. What a local user's client sent passed
 * pre-stanza/out already; this catches what modules send on the user's behalf (presence broadcasts,
 * probes, answers), so that a blocked remote JID gets nothing, as a local one (on_inbound). */
static int on_remote(hook_event_t *ev, void *ud)
{
    (void)ud;
    const jid_t *from = ev->from;
    if (emitting || !from || !from->node || !ev->to || !host_find(from->domain)) return HOOK_PASS;
    jid_t *owner = jid_bare_of(from);
    int r = is_blocked(owner, ev->to);
    jid_free(owner);
    return r > 0 ? HOOK_HANDLED : HOOK_PASS;
}

/* pre-stanza/out: §3.3, the user's own stanza to a blocked entity is not routed but answered
 * with <not-acceptable/> and <blocked xmlns='urn:xmpp:blocking:errors'/>. Errors and IQ results
 * (answers to stanzas that could not have arrived) are dropped instead. The error goes straight
 * to the session: routed, it would come from the blocked JID and be filtered. */
static int on_outbound(hook_event_t *ev, void *ud)
{
    (void)ud;
    const char *to_s = xnode_attr(ev->stanza, "to");
    const jid_t *from = ev->from;
    if (!to_s || !from || !from->node || !ev->origin) return HOOK_PASS;
    jid_t *to = jid_new(to_s);
    if (!to) return HOOK_PASS;                  /* the core answers <jid-malformed/> */
    int r = 0;
    if (!exempt(to, from)) {
        jid_t *owner = jid_bare_of(from);
        r = is_blocked(owner, to);
        jid_free(owner);
    }
    jid_free(to);
    if (r <= 0) return HOOK_PASS;
    const xnode_t *st = ev->stanza;
    const char *type = type_of(st);
    if (strcmp(type, "error") == 0 || (strcmp(st->name, "iq") == 0 && strcmp(type, "result") == 0))
        return HOOK_HANDLED;
    xnode_t *e = stanza_error(st, "cancel", "not-acceptable", NULL);
    if (e) {
        xnode_add_elem(e->last_child, "blocked", NS_BLOCKING_ERRORS);
        session_send(ev->origin, e);
        xnode_free(e);
    }
    return HOOK_HANDLED;
}

static int item_cb(void *ud, const char *key, const void *val, size_t len)
{
    (void)val; (void)len;
    xnode_set_attr(xnode_add_elem(ud, "item", NS_BLOCKING), "jid", key);
    return 0;
}

/* §3.2: the blocklist; the resource becomes "interested" and gets the pushes from now on. */
static int on_get(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!hook_own_account(ev)) return hook_error(ev, "cancel", "service-unavailable");
    xnode_t *child = xnode_first_elem(ev->stanza);
    if (strcmp(child->name, "blocklist") != 0) return hook_error(ev, "modify", "bad-request");
    xnode_t *r = stanza_reply(ev->stanza);
    xnode_t *list = xnode_add_elem(r, "blocklist", NS_BLOCKING);
    if (storage_kv_each(store, KV_STORE, ev->to->node, ev->to->domain, item_cb, list) < 0) {
        xnode_free(r);
        log_warn("blocking", "reading a blocklist failed: %s", storage_last_error(store));
        return hook_error(ev, "wait", "internal-server-error");
    }
    session_set_data(ev->origin, DATA_INTERESTED, (void *)1, NULL);
    return hook_reply(ev, r);
}

/* Send the change (a copy of the <block/> or <unblock/> element) to every interested resource. */
static void push(const jid_t *bare, const xnode_t *change)
{
    for (session_t *s = user_sessions(bare); s; s = session_next_in_user(s)) {
        if (!session_get_data(s, DATA_INTERESTED)) continue;
        xnode_t *iq = stanza_push_iq(NULL, session_jid(s)->full, xnode_copy(change));
        session_send(s, iq);
        xnode_free(iq);
    }
}

/* 1 when contact may receive owner's presence (subscription 'from' or 'both' in owner's roster). */
static int presence_allowed(const jid_t *owner, const jid_t *contact)
{
    return roster_is_subscribed(owner, contact, ROSTER_SUB_FROM);
}

/* §3.3: the newly blocked entity sees the user go offline: unavailable presence from each of
 * the user's available resources, delivered straight to the entity's sessions (its available
 * ones, or the one a full-JID item names), since routed presence from the user to a JID it blocks
 * is filtered. Only when the entity may see the user's presence (RFC 3921 rules). A remote
 * entity gets it routed over federation (its server delivers it). */
static void send_unavailable(const jid_t *owner, const jid_t *blocked)
{
    if (!blocked->node || !presence_allowed(owner, blocked)) return;
    if (!host_find(blocked->domain)) {
        for (session_t *s = user_sessions(owner); s; s = session_next_in_user(s)) {
            if (!session_available(s)) continue;
            route_own(stanza_presence("unavailable", session_jid(s)->full, blocked->full));
        }
        return;
    }
    jid_t *bare = jid_bare_of(blocked);
    for (session_t *c = user_sessions(bare); c; c = session_next_in_user(c)) {
        const jid_t *cj = session_jid(c);
        if (blocked->resource ? !jid_equal(cj, blocked) : !session_available(c)) continue;
        for (session_t *s = user_sessions(owner); s; s = session_next_in_user(s)) {
            if (!session_available(s)) continue;
            xnode_t *p = stanza_presence("unavailable", session_jid(s)->full, cj->full);
            session_send(c, p);
            xnode_free(p);
        }
    }
    jid_free(bare);
}

/* Parse the items of a <block/> or <unblock/>: each must carry a valid JID. Returns the number
 * of items (the prepared JIDs in *out), or -1 with *cond set. The caller frees *out. */
static int parse_items(const xnode_t *el, jid_t ***out, const char **cond)
{
    int n = 0;
    *out = NULL;
    for (xnode_t *c = xnode_first_elem(el); c; c = xnode_next_elem(c)) {
        if (strcmp(c->name, "item") != 0 || strcmp(c->ns, NS_BLOCKING) != 0) continue;
        jid_t *j = jid_new(xnode_attr(c, "jid"));
        if (!j) {
            *cond = "jid-malformed";
            goto fail;
        }
        *out = xrealloc(*out, (size_t)(n + 1) * sizeof **out);
        (*out)[n++] = j;
    }
    return n;
fail:
    for (int i = 0; i < n; i++) jid_free((*out)[i]);
    FREE_AND_NULL(*out);
    return -1;
}

static int count_cb(void *ud, const char *key, const void *val, size_t len)
{
    (void)key; (void)val; (void)len;
    (*(long *)ud)++;
    return 0;
}

static int del_all_cb(void *ud, const char *key, const void *val, size_t len)
{
    (void)val; (void)len;
    strlist_add(ud, key);
    return 0;
}

/* The writes of apply(), inside its transaction. */
static const char *apply_items(const jid_t *owner, jid_t **items, int n, int add)
{
    const char *u = owner->node, *d = owner->domain;
    if (add) {
        long have = 0;
        if (storage_kv_each(store, KV_STORE, u, d, count_cb, &have) < 0) return "internal-server-error";
        if (have + n > conf.max_items) return "policy-violation";
        for (int i = 0; i < n; i++)
            if (storage_kv_set(store, KV_STORE, u, d, items[i]->full, NULL, 0) < 0) return "internal-server-error";
        return NULL;
    }
    if (n > 0) {
        for (int i = 0; i < n; i++)
            if (storage_kv_del(store, KV_STORE, u, d, items[i]->full) < 0) return "internal-server-error";
        return NULL;
    }
    strlist_t all = {0};
    const char *cond = NULL;
    if (storage_kv_each(store, KV_STORE, u, d, del_all_cb, &all) < 0) cond = "internal-server-error";
    for (size_t i = 0; !cond && i < all.n; i++)
        if (storage_kv_del(store, KV_STORE, u, d, all.v[i]) < 0) cond = "internal-server-error";
    strlist_free(&all);
    return cond;
}

/* Apply a block (add 1) or unblock (add 0) of items; n == 0 with unblock: everything. One
 * transaction: a command whose items cannot all be written (disk full, I/O error) changes
 * nothing, so the blocklist never holds part of a command the client was told failed.
 * Returns NULL on success or the error condition. */
static const char *apply(const jid_t *owner, jid_t **items, int n, int add)
{
    if (storage_begin(store) < 0) return "internal-server-error";
    const char *cond = apply_items(owner, items, n, add);
    if (cond) {
        storage_rollback(store);
        return cond;
    }
    return storage_commit(store) < 0 ? "internal-server-error" : NULL;
}

/* §3.3-§3.5: block, unblock, unblock all. */
static int on_set(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!hook_own_account(ev)) return hook_error(ev, "cancel", "service-unavailable");
    xnode_t *child = xnode_first_elem(ev->stanza);
    int add = strcmp(child->name, "block") == 0;
    if (!add && strcmp(child->name, "unblock") != 0) return hook_error(ev, "modify", "bad-request");
    jid_t **items;
    const char *cond = NULL;
    int n = parse_items(child, &items, &cond);
    if (n < 0) return hook_error(ev, "modify", cond);
    if (add && n == 0) {                       /* §3.3: <block/> needs at least one item */
        free(items);
        return hook_error(ev, "modify", "bad-request");
    }
    jid_t *owner = jid_bare_of(ev->to);
    cond = apply(owner, items, n, add);
    cache_drop(owner->bare);
    if (cond) {
        if (strcmp(cond, "internal-server-error") == 0)
            log_warn("blocking", "updating a blocklist failed: %s", storage_last_error(store));
        hook_error(ev, strcmp(cond, "policy-violation") == 0 ? "modify" : "wait", cond);
    } else {
        hook_reply(ev, stanza_reply(ev->stanza));
        /* the push carries the prepared JIDs, as the blocklist will show them */
        xnode_t *change = xnode_new(child->name, NS_BLOCKING);
        for (int i = 0; i < n; i++)
            xnode_set_attr(xnode_add_elem(change, "item", NULL), "jid", items[i]->full);
        push(owner, change);
        xnode_free(change);
        for (int i = 0; add && i < n; i++) send_unavailable(owner, items[i]);
        /* §3.4: an unblocked contact that is subscribed learns the user's current presence */
        for (int i = 0; !add && i < n; i++) {
            hook_event_t re = {.name = "presence/resend", .host = ev->host, .from = owner, .to = items[i]};
            hook_fire(&re);
        }
    }
    for (int i = 0; i < n; i++) jid_free(items[i]);
    free(items);
    jid_free(owner);
    return HOOK_HANDLED;
}

static int on_session_closed(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!ev->from) return HOOK_PASS;
    jid_t *bare = jid_bare_of(ev->from);
    if (!user_sessions(bare)) cache_drop(bare->bare);
    jid_free(bare);
    return HOOK_PASS;
}

static int on_user_deleted(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (ev->to) cache_drop(ev->to->bare);
    return HOOK_PASS;
}

static int load(module_ctx_t *m)
{
    store = module_storage(m);
    cache = strmap_new();
    module_add_feature(m, NS_BLOCKING);
    module_hook(m, "iq-get/bare/" NS_BLOCKING, 0, on_get, NULL);
    module_hook(m, "iq-set/bare/" NS_BLOCKING, 0, on_set, NULL);
    /* before delivery, offline storage and presence handling */
    static const char *const inbound[] = {"message/bare", "message/full", "presence/bare", "presence/full",
                                          "iq/bare", "iq/full", NULL};
    for (size_t i = 0; inbound[i]; i++) module_hook(m, inbound[i], 100, on_inbound, NULL);
    module_hook(m, "route/remote", 100, on_remote, NULL);
    module_hook(m, "pre-stanza/out", 100, on_outbound, NULL);
    module_hook(m, "session-closed", 0, on_session_closed, NULL);
    module_hook(m, "user-deleted", 0, on_user_deleted, NULL);
    return 0;
}

static void unload(module_ctx_t *m)
{
    (void)m;
    strmap_free_all(cache, set_free);
    cache = NULL;
}

static const module_option_t options[] = {
    {.name = "max_items", .type = MOPT_INT, .offset = offsetof(struct blocking_conf, max_items),
     .def = 1000, .min = 1, .max = 1000000},
    {0}};

const module_t civitas_module = { .abi = CIVITAS_MODULE_ABI, .name = "blocking", .load = load,
                                    .options = options, .conf = &conf, .unload = unload };
