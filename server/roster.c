/* server/roster.c: the roster service: rosters stored per account in the "roster" key/value store
 * (one record per contact, serialised as XML), versions and tombstones (XEP-0237), roster pushes. */
#include "roster.h"
#include "server.h"
#include "stanza.h"
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define STORE STORAGE_CONTACTS_STORE  /* "roster"; key: the contact's JID; value: the record as XML */
#define META_STORE "roster_meta"    /* key "floor": roster_oldest_version() */
#define NS_RECORD "urn:civitas:roster:0"
/* Tombstones kept per roster before the oldest are pruned (clients older than the pruned ones then
 * get the full roster). */
#define MAX_TOMBSTONES 1000

struct roster {
    int refs;                       /* holders: callers of roster_load, and the cache */
    int cached;                     /* 1 while the cache holds it */
    char *user, *domain;            /* the owner, as storage keys */
    jid_t *owner;
    roster_item_t **v;
    size_t n, cap;
    int64_t floor;                  /* versions at or below it may have lost tombstones */
};

const char *roster_sub_name(int sub)
{
    static const char *const names[] = {"none", "to", "from", "both"};
    return names[sub & 3];
}

static void item_free(roster_item_t *it)
{
    if (!it) return;
    free(it->jid);
    free(it->name);
    strlist_free(&it->groups);
    xnode_free(it->pending_in);
    free(it);
}

void roster_free(roster_t *r)
{
    if (!r || --r->refs > 0) return;
    for (size_t i = 0; i < r->n; i++) item_free(r->v[i]);
    free(r->v);
    free(r->user);
    free(r->domain);
    jid_free(r->owner);
    free(r);
}

static roster_item_t *append(roster_t *r, const char *jid)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 16;
        r->v = xrealloc(r->v, r->cap * sizeof *r->v);
    }
    roster_item_t *it = xcalloc(1, sizeof *it);
    it->jid = xstrdup(jid);
    r->v[r->n++] = it;
    return it;
}

static int64_t attr_int(const xnode_t *n, const char *name)
{
    const char *v = xnode_attr(n, name);
    return v ? strtoll(v, NULL, 10) : 0;
}

/* A stored record back into an item; NULL when it does not parse. */
static roster_item_t *record_parse(roster_t *r, const char *jid, const void *val, size_t len)
{
    xnode_t *n = xnode_parse_one(val, len, NULL);
    if (!n || strcmp(n->name, "r") != 0 || strcmp(n->ns, NS_RECORD) != 0) {
        xnode_free(n);
        return NULL;
    }
    roster_item_t *it = append(r, jid);
    it->ver = attr_int(n, "ver");
    it->sub = (int)attr_int(n, "sub") & 3;
    it->ask = attr_int(n, "ask") != 0;
    it->approved = attr_int(n, "approved") != 0;
    it->listed = attr_int(n, "listed") != 0;
    it->name = xstrdup(xnode_attr(n, "name"));
    for (xnode_t *c = xnode_first_elem(n); c; c = xnode_next_elem(c)) {
        if (strcmp(c->name, "g") == 0) {
            char *g = xnode_text(c);
            strlist_add(&it->groups, g);
            free(g);
        } else if (strcmp(c->name, "pending") == 0 && xnode_first_elem(c)) {
            xnode_free(it->pending_in);
            it->pending_in = xnode_first_elem(c);
            xnode_unlink(it->pending_in);
        }
    }
    xnode_free(n);
    return it;
}

typedef struct raw_record { char *key; char *val; size_t len; struct raw_record *next; } raw_record_t;

static int collect(void *ud, const char *key, const void *val, size_t len)
{
    raw_record_t **head = ud, *rec = xcalloc(1, sizeof *rec);
    rec->key = xstrdup(key);
    rec->val = xmalloc(len + 1);
    memcpy(rec->val, val, len);
    rec->len = len;
    rec->next = *head;
    *head = rec;
    return 0;
}

/* The cache of parsed rosters (bare JID -> roster_t). Presence makes a server look at rosters all
 * the time (every broadcast, probe and subscription stanza), and reading and parsing one from
 * storage each time cost a login with 100 contacts 58 ms of CPU (tests/bench). Rosters change
 * only through roster_save, which writes through; a change by another process (civitasctl) is
 * seen through storage_changed and empties the cache. Bounded: past ROSTER_CACHE_MAX
 * entries the cache is emptied and fills again with what is in use. */
#define ROSTER_CACHE_MAX 20000
static strmap_t *cache;
static storage_watch_t cache_watch;     /* what the cache has seen of other processes' writes */

static void cache_clear(void)
{
    size_t pos = 0;
    void *v;
    while (cache && strmap_next(cache, &pos, NULL, &v)) {
        roster_t *r = v;
        r->cached = 0;
        roster_free(r);
    }
    strmap_free(cache);
    cache = NULL;
}

void roster_forget(const jid_t *owner)
{
    roster_t *r = cache && owner ? strmap_del(cache, owner->bare) : NULL;
    if (r) {
        r->cached = 0;
        roster_free(r);
    }
}

void roster_cache_shutdown(void) { cache_clear(); }

static roster_t *roster_read(const jid_t *owner, int64_t event);

roster_t *roster_load_deleted(const jid_t *owner, int64_t event)
{
    return owner && owner->node ? roster_read(owner, event) : NULL;
}

roster_t *roster_load(const jid_t *owner)
{
    if (!owner || !owner->node) return NULL;
    int changed = storage_changed(srv->store, &cache_watch);
    if (changed != 0) cache_clear();     /* another process wrote (or error): what we hold may be stale */
    jid_t *bare = jid_bare_of(owner);
    roster_t *r = cache ? strmap_get(cache, bare->bare) : NULL;
    if (r) {
        r->refs++;
        jid_free(bare);
        return r;
    }
    r = roster_read(bare, -1);
    if (r && changed >= 0) {
        if (!cache || strmap_count(cache) >= ROSTER_CACHE_MAX) {
            cache_clear();
            cache = strmap_new();
        }
        strmap_put(cache, bare->bare, r);
        r->cached = 1;
        r->refs++;
    }
    jid_free(bare);
    return r;
}

/* Read and parse a roster from storage (one reference, not cached): the account's, or with
 * event >= 0 the copy kept with that account event. */
static roster_t *roster_read(const jid_t *owner, int64_t event)
{
    roster_t *r = xcalloc(1, sizeof *r);
    r->refs = 1;
    r->owner = jid_bare_of(owner);
    r->user = xstrdup(owner->node);
    r->domain = xstrdup(owner->domain);
    raw_record_t *recs = NULL;
    int n, fr = 1;             /* 1: no floor (a deleted account's copy has none) */
    void *floor = NULL;
    size_t flen = 0;
    if (event >= 0) {
        n = storage_user_event_rows(srv->store, event, collect, &recs);
    } else {
        n = storage_kv_each(srv->store, STORE, r->user, r->domain, collect, &recs);
        fr = n < 0 ? -1 : storage_kv_get(srv->store, META_STORE, r->user, r->domain, "floor", &floor, &flen);
    }
    if (fr == 0) r->floor = strtoll(floor, NULL, 10);
    free(floor);
    if (n < 0 || fr < 0) {
        log_error("roster", "cannot load the roster of %s: %s", log_jid(r->owner->bare),
                  storage_last_error(srv->store));
        while (recs) {
            raw_record_t *next = recs->next;
            free(recs->key);
            free(recs->val);
            free(recs);
            recs = next;
        }
        roster_free(r);
        return NULL;
    }
    while (recs) {
        raw_record_t *next = recs->next;
        if (!record_parse(r, recs->key, recs->val, recs->len))
            log_warn("roster", "skipping an unreadable roster record of %s", log_jid(r->owner->bare));
        free(recs->key);
        free(recs->val);
        free(recs);
        recs = next;
    }
    return r;
}

roster_item_t *roster_find(roster_t *r, const char *jid)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->v[i]->jid, jid) == 0) return r->v[i];
    return NULL;
}

int roster_is_subscribed(const jid_t *owner, const jid_t *contact, int direction)
{
    if (!owner || !contact || !owner->node || !(direction & (ROSTER_SUB_TO | ROSTER_SUB_FROM))) return 0;
    roster_t *r = roster_load(owner);
    if (!r) return 0;
    jid_t *cb = jid_bare_of(contact);
    roster_item_t *it = roster_find(r, cb->bare);
    int ok = it && it->listed && (it->sub & direction) == direction;
    jid_free(cb);
    roster_free(r);
    return ok;
}

roster_item_t *roster_add(roster_t *r, const char *jid)
{
    roster_item_t *it = roster_find(r, jid);
    return it ? it : append(r, jid);
}

size_t roster_count(const roster_t *r) { return r->n; }
roster_item_t *roster_at(const roster_t *r, size_t i) { return i < r->n ? r->v[i] : NULL; }

size_t roster_listed_count(const roster_t *r)
{
    size_t c = 0;
    for (size_t i = 0; i < r->n; i++) c += r->v[i]->listed != 0;
    return c;
}

size_t roster_pending_count(const roster_t *r)
{
    size_t c = 0;
    for (size_t i = 0; i < r->n; i++) c += !r->v[i]->listed && r->v[i]->pending_in;
    return c;
}

int64_t roster_version(const roster_t *r)
{
    int64_t v = r->floor;
    for (size_t i = 0; i < r->n; i++)
        if (r->v[i]->ver > v) v = r->v[i]->ver;
    return v;
}

int64_t roster_oldest_version(const roster_t *r) { return r->floor; }

static char *record_serialize(const roster_item_t *it, size_t *len)
{
    xnode_t *n = xnode_new("r", NS_RECORD);
    char num[32];
    snprintf(num, sizeof num, "%" PRId64, it->ver);
    xnode_set_attr(n, "ver", num);
    snprintf(num, sizeof num, "%d", it->sub & 3);
    xnode_set_attr(n, "sub", num);
    if (it->ask) xnode_set_attr(n, "ask", "1");
    if (it->approved) xnode_set_attr(n, "approved", "1");
    if (it->listed) xnode_set_attr(n, "listed", "1");
    if (it->name) xnode_set_attr(n, "name", it->name);
    for (size_t i = 0; i < it->groups.n; i++) xnode_add_text(xnode_add_elem(n, "g", NULL), it->groups.v[i]);
    if (it->pending_in) xnode_add_child(xnode_add_elem(n, "pending", NULL), xnode_copy(it->pending_in));
    char *s = xnode_serialize(n, NULL, len);
    xnode_free(n);
    return s;
}

static void remove_at(roster_t *r, size_t i)
{
    item_free(r->v[i]);
    r->v[i] = r->v[--r->n];
}

/* Keep at most MAX_TOMBSTONES tombstones: drop the oldest and raise the floor past them. */
static int prune_tombstones(roster_t *r)
{
    size_t dead = 0;
    for (size_t i = 0; i < r->n; i++) dead += !r->v[i]->listed && !r->v[i]->pending_in;
    if (dead <= MAX_TOMBSTONES) return 0;
    int rc = 0;
    while (dead > MAX_TOMBSTONES / 2) {     /* prune in batches, not at every removal */
        size_t oldest = r->n;
        for (size_t i = 0; i < r->n; i++)
            if (!r->v[i]->listed && !r->v[i]->pending_in && (oldest == r->n || r->v[i]->ver < r->v[oldest]->ver))
                oldest = i;
        if (r->v[oldest]->ver > r->floor) r->floor = r->v[oldest]->ver;
        if (storage_kv_del(srv->store, STORE, r->user, r->domain, r->v[oldest]->jid) < 0) rc = -1;
        remove_at(r, oldest);
        dead--;
    }
    char num[32];
    snprintf(num, sizeof num, "%" PRId64, r->floor);
    if (storage_kv_set(srv->store, META_STORE, r->user, r->domain, "floor", num, strlen(num)) < 0) rc = -1;
    return rc;
}

int roster_save(roster_t *r, roster_item_t *it, int visible)
{
    if (visible) it->ver = roster_version(r) + 1;
    int rc;
    if (!it->listed && !it->pending_in && it->ver == 0) {
        rc = storage_kv_del(srv->store, STORE, r->user, r->domain, it->jid);
    } else {
        size_t len;
        char *val = record_serialize(it, &len);
        rc = val ? storage_kv_set(srv->store, STORE, r->user, r->domain, it->jid, val, len) : -1;
        free(val);
    }
    if (rc < 0) {
        log_error("roster", "cannot store a roster item of %s: %s", log_jid(r->owner->bare),
                  storage_last_error(srv->store));
        roster_forget(r->owner);     /* memory must not stay ahead of storage */
    }
    if (visible) roster_push(r->owner, it);
    if (rc == 0 && !it->listed && !it->pending_in) {
        if (it->ver == 0) {                  /* nothing left of it: forget the record */
            for (size_t i = 0; i < r->n; i++)
                if (r->v[i] == it) {
                    remove_at(r, i);
                    break;
                }
        } else if (prune_tombstones(r) < 0) {
            log_error("roster", "cannot prune the roster tombstones of %s: %s", log_jid(r->owner->bare),
                      storage_last_error(srv->store));
        }
    }
    return rc;
}

xnode_t *roster_item_xml(const roster_item_t *it)
{
    xnode_t *n = xnode_new("item", NS_ROSTER);
    xnode_set_attr(n, "jid", it->jid);
    if (!it->listed) {
        xnode_set_attr(n, "subscription", "remove");
        return n;
    }
    if (it->name) xnode_set_attr(n, "name", it->name);
    xnode_set_attr(n, "subscription", roster_sub_name(it->sub));
    if (it->ask) xnode_set_attr(n, "ask", "subscribe");
    if (it->approved) xnode_set_attr(n, "approved", "true");
    for (size_t i = 0; i < it->groups.n; i++) xnode_add_text(xnode_add_elem(n, "group", NULL), it->groups.v[i]);
    return n;
}

#define INTEREST_KEY "roster.requested"

void roster_set_interested(session_t *s, int versioning)
{
    session_set_data(s, INTEREST_KEY, (void *)(intptr_t)(versioning ? 2 : 1), NULL);
}

int roster_interested(const session_t *s) { return (int)(intptr_t)session_get_data(s, INTEREST_KEY); }

void roster_push_to(session_t *s, const jid_t *owner, const roster_item_t *it)
{
    const jid_t *to = session_jid(s);
    if (!to) return;
    xnode_t *q = xnode_new("query", NS_ROSTER);
    xnode_t *iq = stanza_push_iq(owner->bare, to->full, q);
    if (roster_interested(s) == 2) {
        char ver[32];
        snprintf(ver, sizeof ver, "%" PRId64, it->ver);
        xnode_set_attr(q, "ver", ver);
    }
    xnode_add_child(q, roster_item_xml(it));
    session_send(s, iq);
    xnode_free(iq);
}

void roster_push(const jid_t *owner, const roster_item_t *it)
{
    for (session_t *s = user_sessions(owner); s; s = session_next_in_user(s))
        if (roster_interested(s)) roster_push_to(s, owner, it);
}
