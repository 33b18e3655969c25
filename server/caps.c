/* server/caps.c: the core's XEP-0115 capabilities cache: which full JID advertises which 'ver',
 * the verified disco#info of each ver (memory, and storage so it survives restarts), the
 * disco#info queries that fill it, and the "caps-known" event (module.h). */
#include "caps.h"
#include "caps_ver.h"
#include "server.h"
#include "hook.h"
#include "host.h"
#include "stanza.h"
#include "iq_request.h"
#include <stdlib.h>
#include <string.h>

#define CAPS_STORE "caps"               /* storage_kv store; user and domain "" (server-wide) */
#define CAPS_MAX_KNOWN 4096             /* verified vers kept in memory (storage keeps them all) */
#define CAPS_MAX_JIDS 65536             /* full JIDs whose caps are tracked */
#define CAPS_MAX_INFLIGHT 256           /* disco#info queries under way */
#define CAPS_MAX_TRIES 3                /* JIDs asked for one ver before giving up until next presence */
#define CAPS_QUERY_TIMEOUT_MS 30000

typedef struct caps_entry {
    xnode_t *query;                     /* the verified disco#info <query/> */
    strlist_t features;                 /* its feature vars */
} caps_entry_t;

typedef struct inflight {
    char *key;                          /* "hash ver" */
    char *node;                         /* node#ver asked for */
    strlist_t tried;                    /* full JIDs asked so far */
    host_t *host;                       /* the local host that asks */
    iq_request_t *req;
} inflight_t;

static strmap_t *known;                 /* "hash ver" -> caps_entry_t */
static strmap_t *jids;                  /* full JID -> "hash ver" (malloc'd) it advertised last */
static strmap_t *inflight;              /* "hash ver" -> inflight_t */

static void entry_free(void *p)
{
    caps_entry_t *e = p;
    if (!e) return;
    xnode_free(e->query);
    strlist_free(&e->features);
    free(e);
}

static caps_entry_t *entry_new(const xnode_t *query)
{
    caps_entry_t *e = xcalloc(1, sizeof *e);
    e->query = xnode_copy(query);
    for (xnode_t *c = xnode_first_elem(query); c; c = xnode_next_elem(c))
        if (strcmp(c->name, "feature") == 0 && strcmp(c->ns, NS_DISCO_INFO) == 0 && xnode_attr(c, "var"))
            strlist_add(&e->features, xnode_attr(c, "var"));
    return e;
}

static void known_put(const char *key, caps_entry_t *e)
{
    if (strmap_count(known) >= CAPS_MAX_KNOWN) {    /* simple bound: start over (storage has them) */
        strmap_free_all(known, entry_free);
        known = strmap_new();
    }
    entry_free(strmap_del(known, key));
    strmap_put(known, key, e);
}

/* The verified entry of key: memory, else storage (checked again: a stored row is trusted no more
 * than the network). NULL when unknown. */
static caps_entry_t *lookup(const char *key)
{
    caps_entry_t *e = strmap_get(known, key);
    if (e) return e;
    void *val = NULL;
    size_t len = 0;
    if (storage_kv_get(srv->store, CAPS_STORE, "", "", key, &val, &len) != 0) return NULL;
    xnode_t *q = xnode_parse_one(val, len, NULL);
    free(val);
    const char *sp = strchr(key, ' ');
    char *algo = sp ? xstrndup(key, (size_t)(sp - key)) : NULL;
    if (q && algo && caps_ver_check(q, algo, sp + 1)) {
        e = entry_new(q);
        known_put(key, e);
    }
    free(algo);
    xnode_free(q);
    return e;
}

/* caps-known for one full JID. */
static void fire_known(const char *full, caps_entry_t *e, host_t *host)
{
    jid_t *j = jid_new(full);
    if (!j) return;
    session_t *s = session_find_full(j);
    hook_event_t ev = {.name = "caps-known", .stanza = e->query, .origin = s, .host = s ? session_host(s) : host,
                       .from = j};
    hook_fire(&ev);
    jid_free(j);
}

static void ask(inflight_t *f, const char *full);

static void inflight_free(inflight_t *f)
{
    strmap_del(inflight, f->key);
    free(f->key);
    free(f->node);
    strlist_free(&f->tried);
    free(f);
}

/* Another JID that advertised f->key and was not asked yet, or NULL. */
static const char *next_candidate(const inflight_t *f)
{
    size_t pos = 0;
    const char *full;
    void *v;
    while (strmap_next(jids, &pos, &full, &v)) {
        if (strcmp(v, f->key) != 0) continue;
        int asked = 0;
        for (size_t i = 0; i < f->tried.n && !asked; i++) asked = strcmp(f->tried.v[i], full) == 0;
        if (!asked) return full;
    }
    return NULL;
}

static void on_info(iq_outcome_t outcome, const xnode_t *reply, void *ud)
{
    inflight_t *f = ud;
    f->req = NULL;
    if (outcome == IQ_CANCELLED) {
        inflight_free(f);
        return;
    }
    const char *asked = f->tried.v[f->tried.n - 1];
    const xnode_t *q = outcome == IQ_RESULT ? xnode_child(reply, "query", NS_DISCO_INFO) : NULL;
    const char *sp = strchr(f->key, ' ');
    char *algo = xstrndup(f->key, (size_t)(sp - f->key));
    int ok = q && caps_ver_check(q, algo, sp + 1);
    free(algo);
    if (ok) {
        caps_entry_t *e = entry_new(q);
        char *xml = xnode_serialize(e->query, NULL, NULL);
        if (!xml || storage_kv_set(srv->store, CAPS_STORE, "", "", f->key, xml, strlen(xml)) < 0)
            log_warn("caps", "cannot store the capabilities %s", f->key);
        free(xml);
        known_put(f->key, e);
        /* every JID that advertised this ver learns it now */
        strlist_t who = {0};
        size_t pos = 0;
        const char *full;
        void *v;
        while (strmap_next(jids, &pos, &full, &v))
            if (strcmp(v, f->key) == 0) strlist_add(&who, full);
        host_t *host = f->host;
        char *key = xstrdup(f->key);
        inflight_free(f);
        for (size_t i = 0; i < who.n; i++) {
            caps_entry_t *cur = strmap_get(known, key);     /* a handler may have changed the cache */
            if (cur) fire_known(who.v[i], cur, host);
        }
        free(key);
        strlist_free(&who);
        return;
    }
    if (q) log_info("caps", "disco#info of %s does not hash to %s: not cached", log_jid(asked), f->key);
    else log_debug("caps", "no disco#info from %s for %s", log_jid(asked), f->key);
    const char *other = f->tried.n < CAPS_MAX_TRIES ? next_candidate(f) : NULL;
    if (other) {
        char *o = xstrdup(other);
        ask(f, o);
        free(o);
    } else inflight_free(f);
}

/* Send disco#info node='node#ver' to full for f. */
static void ask(inflight_t *f, const char *full)
{
    strlist_add(&f->tried, full);
    xnode_t *iq = xnode_new("iq", NS_CLIENT);
    xnode_set_attr(iq, "type", "get");
    xnode_set_attr(iq, "from", host_name(f->host));
    xnode_set_attr(iq, "to", full);
    xnode_t *q = xnode_add_elem(iq, "query", NS_DISCO_INFO);
    xnode_set_attr(q, "node", f->node);
    f->req = module_send_iq(NULL, iq, full, CAPS_QUERY_TIMEOUT_MS, on_info, f);
    if (!f->req) inflight_free(f);
}

void caps_forget(const jid_t *full)
{
    if (jids && full) free(strmap_del(jids, full->full));
}

void caps_presence(host_t *host, const jid_t *from, const xnode_t *st, session_t *origin)
{
    (void)origin;
    if (!jids || !from || !from->resource || !host) return;
    const char *type = xnode_attr(st, "type");
    const xnode_t *c = xnode_child(st, "c", NS_CAPS);
    if (type || !c) {                       /* unavailable, or it no longer advertises caps */
        caps_forget(from);
        return;
    }
    const char *hash = xnode_attr(c, "hash"), *node = xnode_attr(c, "node"), *ver = xnode_attr(c, "ver");
    /* the legacy format (no 'hash') and unknown algorithms cannot be verified: ignored */
    if (!hash || !node || !ver || !*ver || !caps_hash_supported(hash) || strlen(ver) > 256 || strlen(node) > 1024) {
        caps_forget(from);
        return;
    }
    char *key = xasprintf("%s %s", hash, ver);
    const char *old = strmap_get(jids, from->full);
    if (old && strcmp(old, key) == 0) {     /* the same caps again: nothing new */
        free(key);
        return;
    }
    if (!old && strmap_count(jids) >= CAPS_MAX_JIDS) {
        free(key);
        return;
    }
    free(strmap_del(jids, from->full));
    strmap_put(jids, from->full, xstrdup(key));
    caps_entry_t *e = lookup(key);
    if (e) fire_known(from->full, e, host);
    else if (!strmap_get(inflight, key) && strmap_count(inflight) < CAPS_MAX_INFLIGHT) {
        inflight_t *f = xcalloc(1, sizeof *f);
        f->key = xstrdup(key);
        f->node = xasprintf("%s#%s", node, ver);
        f->host = host;
        strmap_put(inflight, f->key, f);
        ask(f, from->full);
    }
    free(key);
}

const xnode_t *caps_info(const jid_t *full)
{
    const char *key = full && jids ? strmap_get(jids, full->full) : NULL;
    caps_entry_t *e = key ? strmap_get(known, key) : NULL;
    return e ? e->query : NULL;
}

const strlist_t *caps_features(const jid_t *full)
{
    const char *key = full && jids ? strmap_get(jids, full->full) : NULL;
    caps_entry_t *e = key ? strmap_get(known, key) : NULL;
    return e ? &e->features : NULL;
}

int caps_has_feature(const jid_t *full, const char *var)
{
    const strlist_t *l = caps_features(full);
    for (size_t i = 0; l && i < l->n; i++)
        if (strcmp(l->v[i], var) == 0) return 1;
    return 0;
}

int session_has_feature(const session_t *s, const char *var) { return caps_has_feature(session_jid(s), var); }

int caps_start(void)
{
    session_on_unbind(caps_forget);     /* a resource that ends is forgotten, after its events */
    known = strmap_new();
    jids = strmap_new();
    inflight = strmap_new();
    return 0;
}

void caps_stop(void)
{
    size_t pos = 0;
    void *v;
    /* cancel the queries (on_info frees each); restart after each, the table changes */
    for (;;) {
        pos = 0;
        inflight_t *f = NULL;
        while (inflight && strmap_next(inflight, &pos, NULL, &v)) {
            f = v;
            break;
        }
        if (!f) break;
        if (f->req) iq_request_cancel(f->req);
        else inflight_free(f);
    }
    strmap_free(inflight);
    inflight = NULL;
    strmap_free_all(known, entry_free);
    known = NULL;
    strmap_free_all(jids, free);
    jids = NULL;
}
