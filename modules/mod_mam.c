/* modules/mod_mam.c: XEP-0313 Message Archive Management (urn:xmpp:mam:2, and :1 for older clients)
 * with XEP-0359 stanza IDs and XEP-0059 paging. Every message worth keeping is archived per account,
 * in both directions and on every route (local, federation, offline), byte for byte; archived
 * copies are stamped with <stanza-id/> before delivery. Retention per host (max_age_days), a cap per
 * account (max_messages), user preferences (XEP-0313 §7). */
#include "module.h"
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_MAM2 "urn:xmpp:mam:2"
#define NS_MAM1 "urn:xmpp:mam:1"
#define NS_MAM_EXT "urn:xmpp:mam:2#extended"
#define NS_SID "urn:xmpp:sid:0"
#define NS_RSM "http://jabber.org/protocol/rsm"
#define NS_DATA "jabber:x:data"
#define NS_FORWARD "urn:xmpp:forward:0"
#define NS_DELAY "urn:xmpp:delay"
#define NS_HINTS "urn:xmpp:hints"
#define NS_OMEMO_LEGACY "eu.siacs.conversations.axolotl"
#define NS_OMEMO2 "urn:xmpp:omemo:2"
#define NS_JMI "urn:xmpp:jingle-message:0"

#define PAGE_DEFAULT 50             /* RSM max when the client gives none */
#define PAGE_MAX 250                /* and the most one page holds */
#define COUNT_MAX 10000             /* RSM <count/> only below this: counting walks the index */
#define EXPIRE_EVERY_MS 60000       /* the retention sweep runs this often (and at load) */
#define EXPIRE_BATCH 500            /* rows one step deletes; a full batch schedules the next turn */

static struct mam_conf {
    long max_age_days;
    long max_messages;
} conf;

static module_ctx_t *ctx;

/* ---- storage ---- */

/* Schema 3. An archived message is one row per local party in `archive`, keyed by its id: the time
 * it was stamped in microseconds, shifted left 4 bits, and in those 4 bits the low bits of its
 * 64-bit random part (`rnd`). The stanza-id is 13 hex digits of the time and 16 of rnd
 * (time-ordered, like a UUIDv7; XEP-0359 §6: nothing the delay stamp does not tell), so the id
 * follows from the stanza-id and the table needs no index for it: a stanza-id is found by its time's
 * 16 keys and rnd. The owning account is a small integer (`oid`, a row of `owners`), not its JID:
 * the two indexes every row costs, (oid, id) for the account's archive in order and (oid, peer, id)
 * for the 'with' filter, hold short entries; with the JID in them (schema 2, which also had indexes
 * by stanza-id and by host and time) the archive cost about twice the server CPU per message in the
 * chat bench. Deleting the account deletes its owners row and, by the foreign key's cascade, its
 * rows (store.h .parent). Retention walks the ids (time-ordered) of the whole table for the
 * longest max_age_days of all hosts, and an account's ids for a host that keeps less. */
static const store_column_t owner_cols[] = {{"oid", STORE_ID}, {"owner", STORE_TEXT}, {NULL, 0}};
static const store_index_t owner_idx[] = {{"by_owner", "owner"}, {NULL, NULL}};
static const store_column_t archive_cols[] = {
    {"id", STORE_INT},        {"oid", STORE_INT}, {"peer", STORE_TEXT}, {"peer_res", STORE_TEXT},
    {"rnd", STORE_INT},       {"dir", STORE_INT}, {"xml", STORE_BLOB},  {NULL, 0}};
enum { C_ID, C_OID, C_PEER, C_RES, C_RND, C_DIR, C_XML, C_N };
static const store_index_t archive_idx[] = {{"by_time", "oid"}, {"by_peer", "oid, peer"}, {NULL, NULL}};
static const store_column_t prefs_cols[] = {
    {"owner", STORE_TEXT}, {"dflt", STORE_INT}, {"always", STORE_TEXT}, {"never", STORE_TEXT}, {NULL, 0}};
static const store_table_t tables[] = {
    {.name = "prefs", .columns = prefs_cols, .key = "owner", .account = "owner"},
    {.name = "owners", .columns = owner_cols, .key = "oid", .account = "owner", .indexes = owner_idx},
    {.name = "archive", .columns = archive_cols, .key = "id", .parent = "owners", .parent_column = "oid",
     .indexes = archive_idx},
    {.name = NULL}};
/* One hex digit of the column sid, at a position (1-based), shifted into place (SQLite 3.40 has no
 * unhex(); << and | share one precedence level there, hence the parentheses). */
#define HEXDIGIT(pos, shift) "((instr('0123456789abcdef', substr(sid, " #pos ", 1)) - 1) << " #shift ")"
#define SID_TIME                                                                                      \
    HEXDIGIT(1, 48) "|" HEXDIGIT(2, 44) "|" HEXDIGIT(3, 40) "|" HEXDIGIT(4, 36) "|" HEXDIGIT(5, 32)   \
    "|" HEXDIGIT(6, 28) "|" HEXDIGIT(7, 24) "|" HEXDIGIT(8, 20) "|" HEXDIGIT(9, 16) "|"               \
    HEXDIGIT(10, 12) "|" HEXDIGIT(11, 8) "|" HEXDIGIT(12, 4) "|" HEXDIGIT(13, 0)
#define SID_RND                                                                                       \
    HEXDIGIT(14, 60) "|" HEXDIGIT(15, 56) "|" HEXDIGIT(16, 52) "|" HEXDIGIT(17, 48) "|"               \
    HEXDIGIT(18, 44) "|" HEXDIGIT(19, 40) "|" HEXDIGIT(20, 36) "|" HEXDIGIT(21, 32) "|"               \
    HEXDIGIT(22, 28) "|" HEXDIGIT(23, 24) "|" HEXDIGIT(24, 20) "|" HEXDIGIT(25, 16) "|"               \
    HEXDIGIT(26, 12) "|" HEXDIGIT(27, 8) "|" HEXDIGIT(28, 4) "|" HEXDIGIT(29, 0)
#define SID_OK "(length(sid) = 29 AND sid NOT GLOB '*[^0-9a-f]*')"
/* 1 -> 2: by_full dropped, by_sid on (sid) instead of (owner, sid).
 * 2 -> 3: the archive above. A row keeps its stanza-id: the id is its time part shifted, with the
 * row's number among those of the same time part in the low 4 bits, and rnd its random part.
 * Stanza-ids of the first release (32 random hex digits, before 2026-12-02 15:51) have no time:
 * those rows get their archive time and a new random part, so their stanza-id changes. */
static const char *const upgrade[] = {
    "DROP INDEX mam_archive__by_full; DROP INDEX mam_archive__by_sid;"
    " CREATE INDEX mam_archive__by_sid ON mam_archive (sid, id)",
    "CREATE TABLE mam_owners (oid INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL);"
    " CREATE INDEX mam_owners__by_owner ON mam_owners (owner, oid);"
    " INSERT INTO mam_owners (owner) SELECT DISTINCT owner FROM mam_archive ORDER BY owner;"
    " DROP INDEX mam_archive__by_time; DROP INDEX mam_archive__by_peer; DROP INDEX mam_archive__by_sid;"
    " DROP INDEX mam_archive__by_age;"
    " ALTER TABLE mam_archive RENAME TO mam_archive_v2;"
    " CREATE TABLE mam_archive (id INTEGER NOT NULL, oid INTEGER NOT NULL, peer TEXT NOT NULL,"
    " peer_res TEXT NOT NULL, rnd INTEGER NOT NULL, dir INTEGER NOT NULL, xml BLOB NOT NULL, PRIMARY KEY (id),"
    " FOREIGN KEY (oid) REFERENCES mam_owners (oid) ON DELETE CASCADE);"
    /* k numbers the rows of one time part: the old stanza-ids' times were not unique (two calls
     * of the clock in one microsecond, an NTP step); 16 fit beside each other, a 17th (never
     * seen) gets a place after the newest row and a new stanza-id */
    " CREATE TEMP TABLE mam_v3 AS SELECT t, row_number() OVER (PARTITION BY t ORDER BY id) AS k, oid, peer,"
    " peer_res, rnd, dir, xml FROM (SELECT a.id AS id, CASE WHEN " SID_OK " THEN (" SID_TIME ") ELSE a.ts END AS t,"
    " o.oid AS oid, a.peer AS peer, a.peer_res AS peer_res, CASE WHEN " SID_OK " THEN (" SID_RND ") ELSE random() END"
    " AS rnd, a.dir AS dir, a.xml AS xml FROM mam_archive_v2 a JOIN mam_owners o ON o.owner = a.owner) v;"
    " INSERT INTO mam_archive (id, oid, peer, peer_res, rnd, dir, xml)"
    " SELECT (t << 4) | (k - 1), oid, peer, peer_res, rnd, dir, xml FROM mam_v3 WHERE k <= 16;"
    " INSERT INTO mam_archive (id, oid, peer, peer_res, rnd, dir, xml)"
    " SELECT (SELECT MAX(id) FROM mam_archive) + row_number() OVER (ORDER BY t, k), oid, peer, peer_res, random(),"
    " dir, xml FROM mam_v3 WHERE k > 16;"
    " DROP TABLE mam_v3;"
    " CREATE INDEX mam_archive__by_time ON mam_archive (oid, id);"
    " CREATE INDEX mam_archive__by_peer ON mam_archive (oid, peer, id);"
    " DROP TABLE mam_archive_v2",
    NULL};
static const store_schema_t schema = {.version = 3, .tables = tables, .upgrade = upgrade};

static store_t *archive, *prefs, *owners;
static strmap_t *counts;            /* bare JID -> rows it has (+1, as a pointer), an upper bound */

enum { PREF_ALWAYS, PREF_ROSTER, PREF_NEVER };
static const char *const pref_names[] = {"always", "roster", "never"};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* XEP-0082 DateTime with milliseconds, UTC. */
static void stamp_us(char *buf, size_t size, int64_t us)
{
    time_t s = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(us % 1000000 / 1000));
}

/* Parse an XEP-0082 DateTime ("2026-12-02T14:00:00Z", fraction and ±hh:mm allowed) into
 * microseconds. Hand-written: the few lines below need no library (glibc's strptime ignores
 * fractions and offsets). 0, or -1 when malformed. */
static int parse_stamp(const char *s, int64_t *us)
{
    int y, mo, d, h, mi, sec, n = 0;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || n != 19) return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) return -1;
    const char *p = s + n;
    int64_t frac = 0;
    if (*p == '.') {
        int digits = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 6) frac = frac * 10 + (*p - '0');
        if (!digits) return -1;
        for (; digits < 6; digits++) frac *= 10;
    }
    long off = 0;
    if (*p == 'Z') p++;
    else if (*p == '+' || *p == '-') {
        int oh, om, k = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &k) != 2 || k != 5 || oh > 23 || om > 59) return -1;
        off = (oh * 3600L + om * 60L) * (*p == '-' ? -1 : 1);
        p += 6;
    } else return -1;
    if (*p) return -1;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi, .tm_sec = sec};
    time_t t = timegm(&tm);
    *us = ((int64_t)t - off) * 1000000 + frac;
    return 0;
}

/* ---- what is archived ---- */

/* XEP-0313 §4.1.1 with XEP-0334: chat and normal messages with content: a body, an OMEMO payload,
 * a <store/> hint or a XEP-0353 call proposal; never chat states alone, errors, or messages marked
 * <no-store/> / <no-permanent-store/>. */
static int worth_keeping(const xnode_t *st)
{
    const char *type = xnode_attr(st, "type");
    if (type && strcmp(type, "chat") != 0 && strcmp(type, "normal") != 0) return 0;
    if (xnode_child(st, "no-store", NS_HINTS) || xnode_child(st, "no-permanent-store", NS_HINTS)) return 0;
    return xnode_child(st, "body", NS_CLIENT) || xnode_child(st, "encrypted", NS_OMEMO_LEGACY) ||
           xnode_child(st, "encrypted", NS_OMEMO2) || xnode_child(st, "store", NS_HINTS) ||
           xnode_child(st, "propose", NS_JMI);
}

static const struct mam_conf *host_conf(const char *domain)
{
    host_t *h = host_find(domain);
    return h ? module_host_conf(ctx, h) : &conf;
}

/* An account of ours (a local bare JID with a node)? */
static int local_account(const jid_t *j)
{
    return j && j->node && host_find(j->domain) != NULL;
}

/* ---- preferences (XEP-0313 §7) ---- */

typedef struct prefs {
    int dflt;
    char *always, *never;           /* "\n"-separated bare JIDs, each line ending in "\n" ("" none) */
} prefs_t;

static void prefs_free(prefs_t *p)
{
    free(p->always);
    free(p->never);
}

static void prefs_load(const char *owner, prefs_t *p)
{
    store_row_t *row = NULL;
    *p = (prefs_t){PREF_ALWAYS, xstrdup(""), xstrdup("")};
    if (store_get(prefs, (storage_value_t[]){STORE_VAL_TEXT(owner)}, &row) != 0) return;
    prefs_free(p);
    p->dflt = (int)row->col[1].i;
    if (p->dflt < PREF_ALWAYS || p->dflt > PREF_NEVER) p->dflt = PREF_ALWAYS;
    p->always = xstrdup(row->col[2].p);
    p->never = xstrdup(row->col[3].p);
    store_row_free(row);
}

static int list_has(const char *list, const char *jid)
{
    size_t n = strlen(jid);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, '\n');
        if (!e) break;
        if ((size_t)(e - p) == n && strncmp(p, jid, n) == 0) return 1;
        p = e + 1;
    }
    return 0;
}

/* Preferences are read for every archived row: kept in memory per account once read (at most
 * PREFS_CACHE_MAX accounts), dropped when changed here or when another process wrote the database. */
#define PREFS_CACHE_MAX 10000
static strmap_t *prefs_cache;       /* bare JID -> prefs_t */
static storage_watch_t prefs_watch;

static void prefs_cache_drop(const char *owner)
{
    prefs_t *p = owner ? strmap_del(prefs_cache, owner) : NULL;
    if (p) {
        prefs_free(p);
        free(p);
    }
    if (owner) return;
    size_t pos = 0;
    const char *k;
    void *v;
    while (strmap_next(prefs_cache, &pos, &k, &v)) {
        prefs_free(v);
        free(v);
    }
    strmap_free(prefs_cache);
    prefs_cache = strmap_new();
}

static int prefs_fresh;              /* 1: checked against other processes' writes in this batch */

static const prefs_t *prefs_cached(const char *owner)
{
    /* asking SQLite costs a read transaction (file locks); once per batch of archived rows (one
     * loop turn) is as good as once per row */
    if ((!prefs_fresh && store_changed(prefs, &prefs_watch) != 0) || strmap_count(prefs_cache) >= PREFS_CACHE_MAX)
        prefs_cache_drop(NULL);
    prefs_fresh = 1;
    prefs_t *p = strmap_get(prefs_cache, owner);
    if (!p) {
        p = xmalloc(sizeof *p);
        prefs_load(owner, p);
        strmap_put(prefs_cache, owner, p);
    }
    return p;
}

/* Does owner's archive take a message with peer (bare JID)? */
static int prefs_allow(const jid_t *owner, const char *peer)
{
    const prefs_t *p = prefs_cached(owner->bare);
    if (list_has(p->never, peer)) return 0;
    if (list_has(p->always, peer)) return 1;
    if (p->dflt != PREF_ROSTER) return p->dflt == PREF_ALWAYS;
    roster_t *r = roster_load(owner);
    int ok = r && roster_find(r, peer) != NULL;
    roster_free(r);
    return ok;
}

/* ---- archiving ---- */

/* A new stanza-id (see "storage"): 13 hex digits of the time in microseconds, strictly increasing
 * in this process (a second id in the same microsecond takes the next one), and 64 random bits.
 * The row's id follows from it (sid_parse). */
#define SID_SIZE 32
static int64_t last_time;           /* the time part of the last id handed out, or of the archive's newest */
static void new_sid(char *buf)
{
    /* the random part comes from a pool filled 64 bytes at a time: OpenSSL's RAND_bytes calls
     * getpid() (fork detection) on every call, which cost 3% of the server's CPU in the chat bench */
    static char pool[129];
    static size_t used = sizeof pool - 1;
    if (used + 16 > sizeof pool - 1) {
        random_hex(pool, 64);
        used = 0;
    }
    int64_t now = now_us();
    last_time = now > last_time ? now : last_time + 1;
    /* by hand rather than snprintf("%013llx%.16s"): the formatting was 2% of the server's CPU in
     * the chat bench with mam (two ids per message) */
    static const char hex[] = "0123456789abcdef";
    unsigned long long t = (unsigned long long)last_time & 0xfffffffffffffULL;
    for (int i = 12; i >= 0; i--, t >>= 4) buf[i] = hex[t & 15];
    memcpy(buf + 13, pool + used, 16);
    buf[29] = '\0';
    memset(pool + used, '0', 16);   /* never handed out twice */
    used += 16;
}

/* A stanza-id of ours: its time part and random part; the row id it gets when archived is
 * (time << 4) | (rnd & 15). 0, or -1 when sid is not one of ours. */
static int sid_parse(const char *sid, int64_t *time, int64_t *rnd)
{
    uint64_t v[2] = {0, 0};
    for (int i = 0; i < 29; i++) {
        int c = (unsigned char)sid[i], d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v[i >= 13] = v[i >= 13] << 4 | (uint64_t)d;
    }
    if (sid[29]) return -1;
    *time = (int64_t)v[0];
    *rnd = (int64_t)v[1];
    return 0;
}

static void sid_format(char *buf, const store_row_t *row)
{
    snprintf(buf, SID_SIZE, "%013llx%016llx", (unsigned long long)(row->col[C_ID].i >> 4),
             (unsigned long long)row->col[C_RND].i);
}

/* The <stanza-id/> this server stamped for `by` (a bare JID), or NULL. */
static xnode_t *our_sid(const xnode_t *st, const char *by)
{
    for (xnode_t *c = xnode_first_elem(st); c; c = xnode_next_elem(c))
        if (strcmp(c->name, "stanza-id") == 0 && strcmp(c->ns, NS_SID) == 0) {
            const char *b = xnode_attr(c, "by");
            if (b && strcmp(b, by) == 0) return c;
        }
    return NULL;
}

/* The owners row of an account (bare JID): its oid, cached; with create, made when missing. >0,
 * 0 none, -1 error. The cache is dropped when another process committed (civitasctl deleting an
 * account deletes its owners row), checked once per batch and per query (oids_check). */
static strmap_t *oids;              /* bare JID -> oid (as a pointer) */
static storage_watch_t owners_watch;

static void oids_check(void)
{
    if (store_changed(owners, &owners_watch) != 0) {
        strmap_free(oids);
        oids = strmap_new();
    }
}

static int64_t owner_oid(const char *owner, int create)
{
    intptr_t v = (intptr_t)strmap_get(oids, owner);
    if (v) return v;
    storage_value_t o = STORE_VAL_TEXT(owner);
    store_page_t page = {0};
    if (store_range(owners, &(store_range_t){.index = "by_owner", .prefix = &o, .nprefix = 1, .limit = 1}, &page) < 0)
        return -1;
    int64_t oid = page.n ? page.rows[0]->col[0].i : 0;
    store_page_free(&page);
    if (!oid && create) {
        /* not for an account deleted since its rows were queued (civitasctl user del): its archive
         * must not come back under a new owners row (-1: the row is dropped) */
        jid_t *j = jid_new(owner);
        int exists = j && j->node ? storage_account_exists(module_storage(ctx), j->node, j->domain) : -1;
        jid_free(j);
        if (exists <= 0) return exists;
        storage_value_t row[2] = {STORE_VAL_NULL, STORE_VAL_TEXT(owner)};
        if (store_put(owners, row, &oid) < 0) return -1;
    }
    if (oid > 0 && (intptr_t)oid == oid) strmap_put(oids, owner, (void *)(intptr_t)oid);
    return oid;
}

/* Keep owner's archive within max_messages: a cached row count (an upper bound: only this process
 * adds rows; expiry, purges and the cap itself only remove some) is recounted when it passes the
 * cap, and then the oldest rows go, with 1% slack so that the next recount is not at the next row. */
static void enforce_cap(const char *owner, int64_t oid, long cap)
{
    intptr_t c = (intptr_t)strmap_get(counts, owner);
    storage_value_t o = STORE_VAL_INT(oid);
    if (!c) {
        int n = store_count(archive, &(store_range_t){.index = "by_time", .prefix = &o, .nprefix = 1});
        if (n < 0) return;
        c = n + 1;
    } else {
        c++;
    }
    if (c - 1 > cap) {
        int n = store_count(archive, &(store_range_t){.index = "by_time", .prefix = &o, .nprefix = 1});
        if (n < 0) return;
        long slack = cap / 100;
        long excess = n > cap ? n - cap + slack : 0;
        while (excess > 0) {
            int lim = excess > STORE_MAX_LIMIT ? STORE_MAX_LIMIT : (int)excess;
            int d = store_delete_range(archive, &(store_range_t){.index = "by_time", .prefix = &o, .nprefix = 1,
                                                                 .limit = lim});
            if (d <= 0) break;
            n -= d;
            excess -= d;
        }
        c = n + 1;
    }
    strmap_put(counts, owner, (void *)c);
}

/* Writes are batched: archive_one queues a row, and the rows queued are written in one transaction
 * FLUSH_MS after the first of them (flush_pending), so that a burst of messages costs one commit
 * instead of one each. A commit writes every page it dirtied once, and each row dirties a page of
 * its account in both indexes, so the more rows a commit holds the fewer pages per row. Until the
 * core's writer thread exists, this is the module's own batching; a crash of the process loses at
 * most FLUSH_MS of rows (the messages were delivered or stored offline all the same). The batch
 * commits lazily (store_begin_lazy: synchronous = NORMAL for that transaction only): the loop does
 * not wait for an fdatasync of the WAL every FLUSH_MS; a committed batch survives a crash of the
 * process, an OS crash or power loss may drop the batches committed since the last ordinary commit
 * or checkpoint.
 * Queries, purges and account deletions flush (or drop) the queue first, so reads see every write. */
typedef struct pending {
    char *owner, *peer, *res, *xml;
    size_t len;
    int64_t id, rnd;
    int outgoing;
} pending_t;

#define PENDING_MAX 4096            /* a queue this long is written at once */
#define FLUSH_MS 50                 /* otherwise this long after the first row queued */

static pending_t *pending;
static size_t npending, cappending;
static module_timer_t *flush_timer;  /* the one-shot timer of the next flush, or NULL */

static void pending_free(pending_t *p)
{
    free(p->owner);
    free(p->peer);
    free(p->res);
    free(p->xml);
}

static void flush_pending(void)
{
    if (flush_timer) {
        module_timer_cancel(flush_timer);
        flush_timer = NULL;
    }
    prefs_fresh = 0;
    if (!npending) return;
    int tx = store_begin_lazy(archive) == 0;
    size_t failed = 0;
    oids_check();
    for (size_t i = 0; i < npending; i++) {
        pending_t *p = &pending[i];
        int64_t oid = owner_oid(p->owner, 1);
        storage_value_t row[C_N] = {STORE_VAL_INT(p->id), STORE_VAL_INT(oid), STORE_VAL_TEXT(p->peer),
                                    STORE_VAL_TEXT(p->res), STORE_VAL_INT(p->rnd), STORE_VAL_INT(p->outgoing),
                                    STORE_VAL_BLOB(p->xml, p->len)};
        if (oid == 0) continue;         /* the account was deleted meanwhile */
        if (oid < 0 || store_insert(archive, row, NULL) < 0) failed++;
        else enforce_cap(p->owner, oid, host_conf(strchr(p->owner, '@') + 1)->max_messages);
    }
    if (tx && store_commit(archive) < 0) {
        store_rollback(archive);
        failed = npending;
        strmap_free(oids);              /* owners rows made in this batch are gone with it */
        oids = strmap_new();
        strmap_free(counts);            /* and the cap's deletions: the counts are recounted */
        counts = strmap_new();
    }
    if (failed) log_warn("mam", "archiving %zu message(s) failed: %s", failed, store_error(archive));
    for (size_t i = 0; i < npending; i++) pending_free(&pending[i]);
    npending = 0;
}

static void flush_cb(module_timer_t *t, void *ud)
{
    (void)ud;
    if (t == flush_timer) flush_timer = NULL;   /* a one-shot timer is freed after it ran */
    flush_pending();
}

/* Queue st for owner's archive under sid (one of new_sid's); peer is the other party (full JID as
 * written). */
static void archive_one(const jid_t *owner, const jid_t *peer, const char *sid, int outgoing, const char *xml,
                        size_t len)
{
    const struct mam_conf *hc = host_conf(owner->domain);
    int64_t time, rnd;
    if (!npending) prefs_fresh = 0;     /* a new batch (no flush may follow a row not kept) */
    if (hc->max_age_days <= 0 || sid_parse(sid, &time, &rnd) < 0 || !prefs_allow(owner, peer->bare)) return;
    if (npending == cappending) {
        cappending = cappending ? cappending * 2 : 64;
        pending = xrealloc(pending, cappending * sizeof *pending);
    }
    pending[npending++] = (pending_t){xstrdup(owner->bare), xstrdup(peer->bare),
                                      xstrdup(peer->resource ? peer->resource : ""), xstrndup(xml, len), len,
                                      time << 4 | (rnd & 15), rnd, outgoing};
    if (npending >= PENDING_MAX) flush_pending();
    else if (!flush_timer) flush_timer = module_add_timer(ctx, FLUSH_MS, 0, flush_cb, NULL);
}

/* ---- the sender's stanza-id, for sent carbons (XEP-0313 §3.5) ----
 * A message from a local client is stamped at "pre-stanza/out" (on_out_stamp, before mod_carbons
 * copies it) with the id it will have in the sender's archive, so that the <sent/> carbon carries
 * it. The message must not reach the contact with it: "message/deliver/pre" takes it off
 * (on_pre_strip) and keeps the id here, by the stanza's address, until "post" or "undelivered"
 * archives the message under it. Every message passes "pre" before those, and "pre" first drops an
 * entry left for its address (a message stopped after "pre" leaves one behind). */
#define SENT_IDS 8
static struct sent_id {
    const xnode_t *st;
    char id[SID_SIZE];
} sent_ids[SENT_IDS];
static unsigned sent_next;

static void sent_id_drop(const xnode_t *st)
{
    for (size_t i = 0; i < SENT_IDS; i++)
        if (sent_ids[i].st == st) sent_ids[i].st = NULL;
}

static void sent_id_keep(const xnode_t *st, const char *id)
{
    struct sent_id *e = &sent_ids[sent_next++ % SENT_IDS];
    e->st = st;
    snprintf(e->id, sizeof e->id, "%s", id);
}

/* 1 and the id in buf (SID_SIZE) when st was stamped for its sender; the entry is used up. */
static int sent_id_take(const xnode_t *st, char *buf)
{
    for (size_t i = 0; i < SENT_IDS; i++)
        if (sent_ids[i].st == st) {
            sent_ids[i].st = NULL;
            memcpy(buf, sent_ids[i].id, SID_SIZE);
            return 1;
        }
    return 0;
}

/* Archive a message that was delivered (post) or stored for later (undelivered): into the
 * recipient's archive under the stanza-id stamped at "pre", and into the sender's under the one
 * stamped at "pre-stanza/out" for its sent carbons (sent_id_take), or a new one. */
static int archive_message(hook_event_t *ev)
{
    if (ev->replay || !ev->stanza || !ev->from || !ev->to || !worth_keeping(ev->stanza)) return 0;
    int to_local = local_account(ev->to), from_local = local_account(ev->from);
    if (!to_local && !from_local) return 0;
    jid_t *to_bare = jid_bare_of(ev->to), *from_bare = jid_bare_of(ev->from);
    xnode_t *mine = to_local ? our_sid(ev->stanza, to_bare->bare) : NULL;
    xnode_t *parent = mine ? mine->parent : NULL;
    if (mine) xnode_unlink(mine);       /* kept without our stamp: results carry the id themselves */
    size_t len;
    char *xml = xnode_serialize(ev->stanza, NS_CLIENT, &len);
    const char *sid = mine ? xnode_attr(mine, "id") : NULL;
    int done = 0;
    if (xml && to_local && sid) {
        archive_one(to_bare, ev->from, sid, 0, xml, len);
        done = 1;
    }
    if (xml && from_local && !(to_local && jid_bare_equal(to_bare, from_bare))) {
        char id[SID_SIZE];
        if (!sent_id_take(ev->stanza, id)) new_sid(id);
        /* the remote party is the 'to' the sender wrote (XEP-0313 §3, §4.1.1: a full-JID 'with'
         * matches it): a message to a full JID without that resource travels as to the bare JID */
        const char *to_attr = xnode_attr(ev->stanza, "to");
        jid_t *peer = to_attr ? jid_new(to_attr) : NULL;
        if (peer && !jid_bare_equal(peer, ev->to)) {
            jid_free(peer);
            peer = NULL;
        }
        archive_one(from_bare, peer ? peer : ev->to, id, 1, xml, len);
        jid_free(peer);
    }
    if (mine) xnode_add_child(parent, mine);
    free(xml);
    jid_free(to_bare);
    jid_free(from_bare);
    return done;
}

/* Remove the stanza-ids in st that claim to be ours (by one of our hosts, an account on one, or
 * `to`'s bare JID): XEP-0359 §5 and XEP-0313 §5.3. When `keep_by` is given, the id of the one
 * stamped by that bare JID is copied to keep (SID_SIZE) and 1 returned. */
static int strip_ours(xnode_t *st, const jid_t *to, const char *keep_by, char *keep)
{
    int kept = 0;
    for (xnode_t *c = xnode_first_elem(st), *next; c; c = next) {
        next = xnode_next_elem(c);
        if (strcmp(c->name, "stanza-id") != 0 || strcmp(c->ns, NS_SID) != 0) continue;
        const char *b = xnode_attr(c, "by"), *id = xnode_attr(c, "id");
        jid_t *by = jid_new(b ? b : "");
        if (!by || host_find(by->domain) || (to && jid_bare_equal(by, to))) {
            if (keep_by && by && id && strlen(id) < SID_SIZE && strcmp(by->full, keep_by) == 0) {
                memcpy(keep, id, strlen(id) + 1);
                kept = 1;
            }
            xnode_unlink(c);
            xnode_free(c);
        }
        jid_free(by);
    }
    return kept;
}

/* "message/deliver/pre", first of all: strip stanza-ids that claim to be ours but were not stamped
 * here (by one of our accounts or hosts, XEP-0359 §5 and XEP-0313 §5.3), before any module stamps.
 * The sender's own id that on_out_stamp put on a local client's message is taken off too (the
 * contact must not see it) and kept for archive_message. */
static int on_pre_strip(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (ev->replay || !ev->stanza) return HOOK_PASS;
    sent_id_drop(ev->stanza);
    char id[SID_SIZE];
    jid_t *sender = ev->origin && local_account(ev->from) ? jid_bare_of(ev->from) : NULL;
    if (strip_ours(ev->stanza, ev->to, sender ? sender->bare : NULL, id)) sent_id_keep(ev->stanza, id);
    jid_free(sender);
    return HOOK_PASS;
}

/* "pre-stanza/out" 10 (after blocking and the e2e policy, before mod_carbons at 5): a local client's
 * message that its sender's archive will keep gets <stanza-id by='sender@host'/> with the id it
 * will have there, for the sent carbons (XEP-0313 §3.5); any such id the client put there itself is
 * removed first. Not for a message to the own account (the recipient's stamp covers it), to the
 * server or to a component (never archived). */
static int on_out_stamp(hook_event_t *ev, void *ud)
{
    (void)ud;
    xnode_t *st = ev->stanza;
    if (strcmp(st->name, "message") != 0 || !ev->origin || !local_account(ev->from)) return HOOK_PASS;
    const char *to_s = xnode_attr(st, "to");
    jid_t *to = to_s ? jid_new(to_s) : NULL;
    strip_ours(st, to, NULL, NULL);
    int archived = to && worth_keeping(st) && !jid_bare_equal(to, ev->from) &&
                   (local_account(to) || (!host_find(to->domain) && !component_find(to->domain)));
    if (archived) {
        jid_t *owner = jid_bare_of(ev->from);
        if (host_conf(owner->domain)->max_age_days > 0 && prefs_allow(owner, to->bare)) {
            char id[SID_SIZE];
            new_sid(id);
            xnode_t *s = xnode_add_elem(st, "stanza-id", NS_SID);
            xnode_set_attr(s, "by", owner->bare);
            xnode_set_attr(s, "id", id);
        }
        jid_free(owner);
    }
    jid_free(to);
    return HOOK_PASS;
}

/* "message/deliver/pre", last: stamp the recipient's stanza-id, which archive_message uses. */
static int on_pre(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (ev->replay || !ev->stanza || !local_account(ev->to) || !worth_keeping(ev->stanza)) return HOOK_PASS;
    const struct mam_conf *hc = host_conf(ev->to->domain);
    if (hc->max_age_days <= 0) return HOOK_PASS;
    jid_t *bare = jid_bare_of(ev->to);
    char id[SID_SIZE];
    new_sid(id);
    xnode_t *s = xnode_add_elem(ev->stanza, "stanza-id", NS_SID);
    xnode_set_attr(s, "by", bare->bare);
    xnode_set_attr(s, "id", id);
    jid_free(bare);
    return HOOK_PASS;
}

static int on_post(hook_event_t *ev, void *ud)
{
    (void)ud;
    archive_message(ev);
    return HOOK_PASS;
}

/* The last message archive_message took at "undelivered": when no other module (offline storage)
 * keeps it, the archive does, and the sender gets no error (on_undelivered_last). */
static const xnode_t *undelivered_archived;

static int on_undelivered(hook_event_t *ev, void *ud)
{
    (void)ud;
    undelivered_archived = NULL;
    if (!local_account(ev->to)) return HOOK_PASS;
    int exists = storage_account_exists(module_storage(ctx), ev->to->node, ev->to->domain);
    if (exists <= 0) return HOOK_PASS;
    if (archive_message(ev)) undelivered_archived = ev->stanza;
    return HOOK_PASS;
}

static int on_undelivered_last(hook_event_t *ev, void *ud)
{
    (void)ud;
    int mine = ev->stanza && ev->stanza == undelivered_archived;
    undelivered_archived = NULL;
    return mine ? HOOK_HANDLED : HOOK_PASS;
}

/* ---- queries (XEP-0313 §4, XEP-0059) ---- */

typedef struct query {
    char *with;                     /* malloc'd strings, or NULL (query_free) */
    int64_t start, end;             /* INT64_MIN / INT64_MAX: none */
    char *after_id, *before_id;
    xnode_t *ids;                   /* the ids field, or NULL */
    long max;
    char *rsm_after, *rsm_before;
    int rsm_before_set, flip;
} query_t;

static void query_free(query_t *q)
{
    free(q->with);
    free(q->after_id);
    free(q->before_id);
    free(q->rsm_after);
    free(q->rsm_before);
}

/* The text of n, or NULL when n is absent or its text is empty. */
static char *text_or_null(const xnode_t *n)
{
    char *t = n ? xnode_text(n) : NULL;
    if (t && !*t) FREE_AND_NULL(t);
    return t;
}

/* The row with this stanza-id in the archive of the account oid: 0 found, 1 none, -1 error. The
 * rows of its time part's 16 keys with its random part (one, unless an older release's stanza-ids
 * shared a microsecond) are read, and one of another account is not a match. */
static int find_sid(int64_t oid, const char *sid, store_row_t **row)
{
    int64_t time, rnd;
    *row = NULL;
    if (!sid || sid_parse(sid, &time, &rnd) < 0) return 1;
    storage_value_t lo = STORE_VAL_INT(time << 4), hi = STORE_VAL_INT(time << 4 | 15), r = STORE_VAL_INT(rnd);
    store_page_t page = {0};
    if (store_range(archive, &(store_range_t){.after = {&lo, 1, 1}, .before = {&hi, 1, 1}, .limit = 16,
                                              .match = "rnd", .match_value = &r}, &page) < 0)
        return -1;
    for (int i = 0; i < page.n && !*row; i++)
        if (page.rows[i]->col[C_OID].i == oid) {
            *row = page.rows[i];
            page.rows[i] = NULL;
        }
    store_page_free(&page);
    return *row ? 0 : 1;
}

static xnode_t *result_message(const char *ns, const char *to, const char *from, const char *queryid,
                               const store_row_t *row)
{
    xnode_t *inner = xnode_parse_one(row->col[C_XML].p, row->col[C_XML].len, NS_CLIENT);
    if (!inner) return NULL;
    xnode_t *m = xnode_new("message", NS_CLIENT);
    xnode_set_attr(m, "to", to);
    xnode_set_attr(m, "from", from);
    xnode_t *r = xnode_add_elem(m, "result", ns);
    if (queryid) xnode_set_attr(r, "queryid", queryid);
    char sid[SID_SIZE];
    sid_format(sid, row);
    xnode_set_attr(r, "id", sid);
    xnode_t *fw = xnode_add_elem(r, "forwarded", NS_FORWARD);
    char stamp[96];
    stamp_us(stamp, sizeof stamp, row->col[C_ID].i >> 4);
    xnode_set_attr(xnode_add_elem(fw, "delay", NS_DELAY), "stamp", stamp);
    xnode_add_child(fw, inner);
    return m;
}

/* Read the data form and the RSM set into q. NULL, or the error's condition. */
static const char *parse_query(xnode_t *qn, query_t *q, const char *ns)
{
    *q = (query_t){.start = INT64_MIN, .end = INT64_MAX, .max = PAGE_DEFAULT};
    xnode_t *x = xnode_child(qn, "x", NS_DATA);
    for (xnode_t *f = x ? xnode_first_elem(x) : NULL; f; f = xnode_next_elem(f)) {
        if (strcmp(f->name, "field") != 0) continue;
        const char *var = xnode_attr(f, "var");
        xnode_t *v = xnode_child(f, "value", NULL);
        char *val = v ? xnode_text(v) : xstrdup("");
        const char *err = NULL;
        if (!var) err = "bad-request";
        else if (strcmp(var, "FORM_TYPE") == 0) {
            if (strcmp(val, ns) != 0) err = "bad-request";
        } else if (strcmp(var, "with") == 0) q->with = v ? xnode_text(v) : NULL;   /* freed by the caller */
        else if (strcmp(var, "start") == 0) { if (parse_stamp(val, &q->start) < 0) err = "bad-request"; }
        else if (strcmp(var, "end") == 0) { if (parse_stamp(val, &q->end) < 0) err = "bad-request"; }
        else if (strcmp(var, "after-id") == 0) { free(q->after_id); q->after_id = text_or_null(v); }
        else if (strcmp(var, "before-id") == 0) { free(q->before_id); q->before_id = text_or_null(v); }
        else if (strcmp(var, "ids") == 0) q->ids = f;
        else err = "feature-not-implemented";   /* §4.1.1: "a form field that the server does not recognise" */
        free(val);
        if (err) return err;
    }
    xnode_t *set = xnode_child(qn, "set", NS_RSM);
    if (set) {
        xnode_t *m = xnode_child(set, "max", NS_RSM), *a = xnode_child(set, "after", NS_RSM),
                *b = xnode_child(set, "before", NS_RSM);
        if (m) {
            char *t = xnode_text(m), *e;
            long v = strtol(t, &e, 10);
            int bad = !*t || *e || v < 0;
            free(t);
            if (bad) return "bad-request";
            q->max = v > PAGE_MAX ? PAGE_MAX : v;
        }
        if (a && !(q->rsm_after = text_or_null(a))) return "bad-request";
        if (b) {
            q->rsm_before_set = 1;
            q->rsm_before = text_or_null(b);
        }
    }
    q->flip = xnode_child(qn, "flip-page", NULL) != NULL;
    return NULL;
}

/* Tighten the lower bound lo (inclusive flag) with the row's position (its id), exclusive: the
 * later of the two wins. */
static void bound_after(storage_value_t *lo, store_bound_t *b, const store_row_t *row)
{
    int64_t id = row->col[C_ID].i;
    if (b->v && (lo->i > id || (lo->i == id && !b->inclusive))) return;
    *lo = STORE_VAL_INT(id);
    *b = (store_bound_t){lo, 1, 0};
}

static void bound_before(storage_value_t *hi, store_bound_t *b, const store_row_t *row)
{
    int64_t id = row->col[C_ID].i;
    if (b->v && (hi->i < id || (hi->i == id && !b->inclusive))) return;
    *hi = STORE_VAL_INT(id);
    *b = (store_bound_t){hi, 1, 0};
}

static void add_text_elem(xnode_t *parent, const char *name, const char *ns, const char *text)
{
    xnode_add_text(xnode_add_elem(parent, name, ns), text);
}

static int internal_error(hook_event_t *ev, const char *what)
{
    log_warn("mam", "%s failed: %s", what, store_error(archive));
    return hook_error(ev, "wait", "internal-server-error");
}

static int do_query(hook_event_t *ev, xnode_t *qn, const char *ns)
{
    query_t q;
    const char *err = parse_query(qn, &q, ns);
    if (err) {
        query_free(&q);
        return hook_error(ev, strcmp(err, "feature-not-implemented") == 0 ? "cancel" : "modify", err);
    }
    jid_t *owner = jid_bare_of(ev->from);
    jid_t *with = NULL;
    int rc;
    if (q.with && !(with = jid_new(q.with))) {
        rc = hook_error(ev, "modify", "bad-request");
        goto out_early;
    }
    const char *queryid = xnode_attr(qn, "queryid");
    oids_check();
    int64_t oid = owner_oid(owner->bare, 0);    /* 0: no archive, every range is empty */
    if (oid < 0) {
        rc = internal_error(ev, "looking up the account");
        goto out_early;
    }
    storage_value_t pre[3] = {STORE_VAL_INT(oid)};
    store_range_t r = {.index = "by_time", .prefix = pre, .nprefix = 1};
    if (with) {
        pre[1] = STORE_VAL_TEXT(with->bare);
        r.nprefix = 2;
        r.index = "by_peer";
        if (with->resource) {
            pre[2] = STORE_VAL_TEXT(with->resource);
            r.match = "peer_res";
            r.match_value = &pre[2];
        }
    }
    storage_value_t lo[1], hi[1];
    /* a row's id is its time << 4 and 4 more bits, the time 52 bits (a stanza-id's 13 hex digits,
     * to 2112): start and end as ids */
    if (q.start != INT64_MIN) {
        lo[0] = STORE_VAL_INT(q.start < 0 ? 0 : q.start >> 52 ? INT64_MAX : q.start << 4);
        r.after = (store_bound_t){lo, 1, 1};
    }
    if (q.end != INT64_MAX) {
        hi[0] = STORE_VAL_INT(q.end < 0 ? -1 : q.end >> 52 ? INT64_MAX : q.end << 4 | 15);
        r.before = (store_bound_t){hi, 1, 1};
    }
    /* after-id, before-id and the RSM ids narrow the range; an unknown id is item-not-found */
    const char *const bounds[4] = {q.after_id, q.rsm_after, q.before_id, q.rsm_before};
    store_row_t *rows[4] = {0};
    for (int i = 0; i < 4; i++) {
        if (!bounds[i]) continue;
        int f = find_sid(oid, bounds[i], &rows[i]);
        if (f != 0) {
            rc = f < 0 ? internal_error(ev, "looking up a stanza-id") : hook_error(ev, "cancel", "item-not-found");
            goto out;
        }
    }
    /* the form's bounds first: the count covers them, not the page's RSM position */
    if (rows[0]) bound_after(lo, &r.after, rows[0]);
    if (rows[2]) bound_before(hi, &r.before, rows[2]);
    store_page_t page = {0};
    store_range_t rset = {0};
    storage_value_t set_lo[1];
    int count, more = 0, reverse = q.rsm_before_set;
    if (q.ids) {
        /* XEP-0313 §6.1.3 (#extended): exactly these messages, in archive order */
        store_row_t **got = NULL;
        int n = 0;
        for (xnode_t *v = xnode_first_elem(q.ids); v; v = xnode_next_elem(v)) {
            if (strcmp(v->name, "value") != 0) continue;
            char *t = xnode_text(v);
            store_row_t *row;
            int f = find_sid(oid, t, &row);
            free(t);
            if (f != 0) {
                for (int i = 0; i < n; i++) store_row_free(got[i]);
                free(got);
                rc = f < 0 ? internal_error(ev, "looking up a stanza-id") : hook_error(ev, "cancel", "item-not-found");
                goto out;
            }
            got = xrealloc(got, (size_t)(n + 1) * sizeof *got);
            got[n++] = row;
        }
        page.rows = got;
        page.n = n;
        count = n;
    } else {
        count = store_count_upto(archive, &r, COUNT_MAX);
        if (count < 0) {
            rc = internal_error(ev, "counting");
            goto out;
        }
        rset = r;                   /* the result set, before RSM's position: for <first index/> */
        if (rset.after.v) {
            memcpy(set_lo, lo, sizeof set_lo);
            rset.after.v = set_lo;
        }
        if (rows[1]) bound_after(lo, &r.after, rows[1]);
        if (rows[3]) bound_before(hi, &r.before, rows[3]);
        r.reverse = reverse;
        if (q.max == 0) {
            page.n = 0;
        } else {
            r.limit = (int)q.max;
            if (store_range(archive, &r, &page) < 0) {
                rc = internal_error(ev, "reading the archive");
                goto out;
            }
            more = page.more;
        }
    }
    /* the page in chronological order (flip-page: reversed), as messages to the requester; no
     * more than half the output limit at once, the rest being the next page */
    int n = page.n;
    if (reverse) {
        for (int i = 0; i < n / 2; i++) {
            store_row_t *t = page.rows[i];
            page.rows[i] = page.rows[n - 1 - i];
            page.rows[n - 1 - i] = t;
        }
    }
    size_t budget = session_output_limit() / 2;
    int first = 0, last = n - 1;     /* the rows sent: [first, last] */
    if (reverse) {                   /* a backward page that is cut keeps its newest rows */
        size_t bytes = 0;
        for (first = n; first > 0 && bytes + page.rows[first - 1]->col[C_XML].len + 512 <= budget; first--)
            bytes += page.rows[first - 1]->col[C_XML].len + 512;
        if (first > 0) more = 1;
    } else {
        size_t bytes = 0;
        for (last = -1; last + 1 < n && bytes + page.rows[last + 1]->col[C_XML].len + 512 <= budget; last++)
            bytes += page.rows[last + 1]->col[C_XML].len + 512;
        if (last < n - 1) more = 1;
    }
    for (int k = 0; k <= last - first; k++) {
        int i = q.flip ? last - k : first + k;
        xnode_t *m = result_message(ns, ev->from->full, owner->bare, queryid, page.rows[i]);
        if (!m) continue;
        session_send(ev->origin, m);
        xnode_free(m);
    }
    xnode_t *reply = stanza_reply(ev->stanza);
    xnode_t *fin = xnode_add_elem(reply, "fin", ns);
    if (!more) xnode_set_attr(fin, "complete", "true");   /* ids: complete unless the budget cut it */
    xnode_t *set = xnode_add_elem(fin, "set", NS_RSM);
    if (last >= first && n > 0) {
        xnode_t *fe = xnode_add_elem(set, "first", NS_RSM);
        char sid[SID_SIZE];
        sid_format(sid, page.rows[first]);
        xnode_add_text(fe, sid);
        /* XEP-0059 §2.4: the page's position in the result set, the rows of the set before its
         * first; counted like <count/> (so only below COUNT_MAX), not for an ids query */
        if (!q.ids && count < COUNT_MAX) {
            storage_value_t at = STORE_VAL_INT(page.rows[first]->col[C_ID].i);
            rset.before = (store_bound_t){&at, 1, 0};
            rset.limit = 0;
            int index = store_count(archive, &rset);
            if (index >= 0) {
                char buf[24];
                snprintf(buf, sizeof buf, "%d", index);
                xnode_set_attr(fe, "index", buf);
            }
        }
        sid_format(sid, page.rows[last]);
        add_text_elem(set, "last", NS_RSM, sid);
    }
    if (count < COUNT_MAX) {            /* XEP-0059 §2.6 lets a large count go unsaid */
        char cnt[24];
        snprintf(cnt, sizeof cnt, "%d", count);
        add_text_elem(set, "count", NS_RSM, cnt);
    }
    store_page_free(&page);
    rc = hook_reply(ev, reply);
out:
    for (int i = 0; i < 4; i++) store_row_free(rows[i]);
out_early:
    jid_free(with);
    jid_free(owner);
    query_free(&q);
    return rc;
}

/* §5.1: the fields a query may use. */
static int query_form(hook_event_t *ev, const char *ns)
{
    xnode_t *reply = stanza_reply(ev->stanza);
    xnode_t *x = xnode_add_elem(xnode_add_elem(reply, "query", ns), "x", NS_DATA);
    xnode_set_attr(x, "type", "form");
    xnode_t *f = xnode_add_elem(x, "field", NS_DATA);
    xnode_set_attr(f, "var", "FORM_TYPE");
    xnode_set_attr(f, "type", "hidden");
    add_text_elem(f, "value", NS_DATA, ns);
    static const char *const fields[][2] = {{"with", "jid-single"}, {"start", "text-single"},
                                            {"end", "text-single"}, {"after-id", "text-single"},
                                            {"before-id", "text-single"}, {"ids", "list-multi"}};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        f = xnode_add_elem(x, "field", NS_DATA);
        xnode_set_attr(f, "var", fields[i][0]);
        xnode_set_attr(f, "type", fields[i][1]);
    }
    return hook_reply(ev, reply);
}

/* ---- preferences ---- */

static void add_list(xnode_t *parent, const char *name, const char *ns, const char *list)
{
    xnode_t *l = xnode_add_elem(parent, name, ns);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, '\n');
        if (!e) break;
        char *j = xstrndup(p, (size_t)(e - p));
        add_text_elem(l, "jid", ns, j);
        free(j);
        p = e + 1;
    }
}

static xnode_t *prefs_xml(const prefs_t *p, const char *ns)
{
    xnode_t *x = xnode_new("prefs", ns);
    xnode_set_attr(x, "default", pref_names[p->dflt]);
    add_list(x, "always", ns, p->always);
    add_list(x, "never", ns, p->never);
    return x;
}

/* <always/> or <never/> as a "\n"-terminated list of bare JIDs. NULL when a JID is invalid. */
static char *read_list(const xnode_t *l, const char *ns)
{
    size_t cap = 1, n = 0;
    char *out = xstrdup("");
    for (xnode_t *j = l ? xnode_first_elem(l) : NULL; j; j = xnode_next_elem(j)) {
        if (strcmp(j->name, "jid") != 0 || strcmp(j->ns, ns) != 0) continue;
        char *t = xnode_text(j);
        jid_t *jj = jid_new(t);
        free(t);
        if (!jj) {
            free(out);
            return NULL;
        }
        if (!list_has(out, jj->bare)) {
            size_t k = strlen(jj->bare);
            out = xrealloc(out, cap + n + k + 1);
            memcpy(out + n, jj->bare, k);
            out[n + k] = '\n';
            out[n + k + 1] = '\0';
            n += k + 1;
            cap = n + 1;
        }
        jid_free(jj);
    }
    return out;
}

static int do_prefs(hook_event_t *ev, xnode_t *pn, const char *ns, int set)
{
    jid_t *owner = jid_bare_of(ev->from);
    prefs_t p;
    int rc;
    if (set) {
        const char *d = xnode_attr(pn, "default");
        int dflt = -1;
        for (int i = 0; d && i < 3; i++)
            if (strcmp(d, pref_names[i]) == 0) dflt = i;
        char *always = read_list(xnode_child(pn, "always", ns), ns);
        char *never = read_list(xnode_child(pn, "never", ns), ns);
        if (dflt < 0 || !always || !never) {
            free(always);
            free(never);
            jid_free(owner);
            return hook_error(ev, "modify", "bad-request");
        }
        storage_value_t row[4] = {STORE_VAL_TEXT(owner->bare), STORE_VAL_INT(dflt), STORE_VAL_TEXT(always),
                                  STORE_VAL_TEXT(never)};
        int w = store_put(prefs, row, NULL);
        prefs_cache_drop(owner->bare);
        free(always);
        free(never);
        if (w < 0) {
            jid_free(owner);
            log_warn("mam", "storing preferences failed: %s", store_error(prefs));
            return hook_error(ev, "wait", "internal-server-error");
        }
    }
    prefs_load(owner->bare, &p);
    xnode_t *reply = stanza_reply(ev->stanza);
    xnode_add_child(reply, prefs_xml(&p, ns));
    prefs_free(&p);
    rc = hook_reply(ev, reply);
    jid_free(owner);
    return rc;
}

/* §6 (metadata): the first and last message of the archive. */
static int do_metadata(hook_event_t *ev, const char *ns)
{
    jid_t *owner = jid_bare_of(ev->from);
    oids_check();
    int64_t oid = owner_oid(owner->bare, 0);
    jid_free(owner);
    if (oid < 0) return internal_error(ev, "looking up the account");
    storage_value_t o = STORE_VAL_INT(oid);
    xnode_t *reply = stanza_reply(ev->stanza);
    xnode_t *md = xnode_add_elem(reply, "metadata", ns);
    for (int rev = 0; rev < 2; rev++) {
        store_page_t page = {0};
        if (store_range(archive, &(store_range_t){.index = "by_time", .prefix = &o, .nprefix = 1, .reverse = rev,
                                                  .limit = 1}, &page) < 0) {
            xnode_free(reply);
            return internal_error(ev, "reading the archive");
        }
        if (page.n) {
            xnode_t *e = xnode_add_elem(md, rev ? "end" : "start", ns);
            char stamp[96], sid[SID_SIZE];
            stamp_us(stamp, sizeof stamp, page.rows[0]->col[C_ID].i >> 4);
            sid_format(sid, page.rows[0]);
            xnode_set_attr(e, "id", sid);
            xnode_set_attr(e, "timestamp", stamp);
        }
        store_page_free(&page);
    }
    return hook_reply(ev, reply);
}

/* iq-get and iq-set to the own bare JID in urn:xmpp:mam:2 (or :1). */
static int on_iq(hook_event_t *ev, void *ud)
{
    const char *ns = ud;
    if (!hook_own_account(ev) || !ev->origin) return hook_error(ev, "cancel", "forbidden");
    flush_pending();                    /* the account's last messages are part of what it reads */
    xnode_t *child = xnode_first_elem(ev->stanza);
    int set = strcmp(xnode_attr(ev->stanza, "type"), "set") == 0;
    if (strcmp(child->name, "query") == 0) return set ? do_query(ev, child, ns) : query_form(ev, ns);
    if (strcmp(child->name, "prefs") == 0) return do_prefs(ev, child, ns, set);
    if (strcmp(child->name, "metadata") == 0 && !set) return do_metadata(ev, ns);
    return hook_error(ev, "cancel", "feature-not-implemented");
}

/* ---- retention ---- */

static module_timer_t *again;       /* a one-shot timer for the next batch, or NULL */

static void expire_step(module_timer_t *t, void *ud);

/* The per-account sweep for hosts that keep less than the longest max_age_days: the next oid to
 * look at, or -1 when no sweep runs (one starts every EXPIRE_EVERY_MS). */
static int64_t sweep_next = -1;
#define SWEEP_OWNERS 200            /* accounts one step looks at */

/* The id below which a host keeping days days expires rows (0 when that is before 1970). */
static int64_t expiry_cut(int64_t now, long days)
{
    int64_t t = now - (int64_t)days * 86400 * 1000000;
    return t > 0 ? t << 4 : 0;
}

/* Delete up to EXPIRE_BATCH expired rows in one transaction: first those older than every host
 * keeps (walking the ids, which are time-ordered, of all accounts), then, when a host keeps less
 * than another, the rows of that host's accounts past its limit, with what is left of the batch
 * (at most SWEEP_OWNERS accounts looked at). When there is more to do, go on at the next loop
 * turn. */
static void expire_run(void)
{
    int more = 0, budget = EXPIRE_BATCH, failed = 0;
    flush_pending();
    int64_t now = now_us();
    long longest = -1, shortest = -1;
    for (size_t i = 0; i < host_count(); i++) {
        long d = ((const struct mam_conf *)module_host_conf(ctx, host_at(i)))->max_age_days;
        if (d > longest) longest = d;
        if (shortest < 0 || d < shortest) shortest = d;
    }
    if (longest < 0) return;
    int tx = store_begin(archive) == 0;
    storage_value_t cut = STORE_VAL_INT(expiry_cut(now, longest));
    int n = store_delete_range(archive, &(store_range_t){.before = {&cut, 1, 0}, .limit = budget});
    failed |= n < 0;
    if (n < 0) log_warn("mam", "expiring archived messages failed: %s", store_error(archive));
    else if (n > 0) log_debug("mam", "expired %d archived message(s)", n);
    if (n == budget) more = 1;
    else if (n > 0) budget -= n;
    if (!more && shortest < longest && sweep_next >= 0) {
        storage_value_t from = STORE_VAL_INT(sweep_next);
        store_page_t page = {0};
        if (store_range(owners, &(store_range_t){.after = {&from, 1, 1}, .limit = SWEEP_OWNERS}, &page) < 0) {
            log_warn("mam", "expiring archived messages failed: %s", store_error(owners));
            failed = 1;
            sweep_next = -1;
        } else {
            sweep_next = page.more ? -2 : -1;   /* -2: set from the page below */
            for (int i = 0; i < page.n; i++) {
                const store_row_t *o = page.rows[i];
                const char *at = strchr(o->col[1].p, '@');
                long d = host_conf(at ? at + 1 : "")->max_age_days;
                if (d >= longest) continue;
                storage_value_t oid = STORE_VAL_INT(o->col[0].i), ocut = STORE_VAL_INT(expiry_cut(now, d));
                int k = store_delete_range(archive, &(store_range_t){.index = "by_time", .prefix = &oid, .nprefix = 1,
                                                                     .before = {&ocut, 1, 0}, .limit = budget});
                if (k < 0) {
                    log_warn("mam", "expiring archived messages failed: %s", store_error(archive));
                    failed = 1;
                    sweep_next = -1;
                    break;
                }
                budget -= k;
                if (budget <= 0) {              /* this account again at the next step */
                    sweep_next = o->col[0].i;
                    break;
                }
            }
            if (sweep_next == -2) sweep_next = page.rows[page.n - 1]->col[0].i + 1;
            store_page_free(&page);
        }
        if (sweep_next >= 0) more = 1;
    }
    if (tx && (failed || store_commit(archive) < 0)) {
        if (!failed) log_warn("mam", "expiring archived messages failed: %s", store_error(archive));
        store_rollback(archive);
        more = 0;                       /* again at the next period, not in a loop */
    }
    if (more && !again) again = module_add_timer(ctx, 0, 0, expire_step, NULL);
}

static void expire_step(module_timer_t *t, void *ud)
{
    (void)ud;
    if (t == again) again = NULL;
    else if (sweep_next < 0) sweep_next = 0;    /* the periodic timer: a new sweep of the accounts */
    expire_run();
}

/* ---- a user clears their own archive: a XEP-0050 ad-hoc command ----
 * XEP-0313 has no verb for it. The command node PURGE_NODE is listed under the commands node of
 * disco#items on the server's domain and on the account's own bare JID, and runs on either, always
 * on the requester's own archive (on another account's JID: <forbidden/>): execute -> a form with
 * a boolean 'confirm' (status executing, the one action complete) -> complete (confirm true: the
 * archive is emptied, false: nothing) or cancel. It is civitas's only ad-hoc command: when a second
 * one comes, the XEP-0050 plumbing here belongs in a module the others register their nodes with. */
#define NS_COMMANDS "http://jabber.org/protocol/commands"
#define PURGE_NODE "urn:civitas:mam:purge"
#define PURGE_NAME "Clear my message archive"
#define CMD_SESSIONS 32                 /* open command sessions kept: one per account at a time */
#define CMD_TTL_US (600LL * 1000000)    /* a session not completed within 10 minutes has expired */
#define PURGE_BATCH 2000                /* rows one loop turn deletes: a large archive never stalls */

static struct cmd_session {
    char id[SID_SIZE];
    char *requester;                    /* its full JID; NULL: the slot is free */
    int64_t created;
} cmd_sessions[CMD_SESSIONS];

typedef struct purge_job {
    struct purge_job *next;
    char *owner;
    xnode_t *request;                   /* the completing IQ, answered when the rows are gone */
    int64_t cut;                        /* the rows archived up to this time go */
    long deleted;
} purge_job_t;
static purge_job_t *purges;             /* in the order confirmed; the first is being deleted */
static module_timer_t *purge_timer;

static void cmd_session_end(struct cmd_session *c)
{
    free(c->requester);
    c->requester = NULL;
}

static struct cmd_session *cmd_session_find(const char *id, const char *requester)
{
    for (size_t i = 0; i < CMD_SESSIONS; i++)
        if (cmd_sessions[i].requester && strcmp(cmd_sessions[i].id, id) == 0 &&
            strcmp(cmd_sessions[i].requester, requester) == 0)
            return &cmd_sessions[i];
    return NULL;
}

/* <iq type='result'><command node status [sessionid]/>; *cmd is the <command/>. */
static xnode_t *cmd_reply(const xnode_t *req, const char *status, const char *sessionid, xnode_t **cmd)
{
    xnode_t *r = stanza_reply(req);
    xnode_t *c = xnode_add_elem(r, "command", NS_COMMANDS);
    xnode_set_attr(c, "node", PURGE_NODE);
    if (sessionid) xnode_set_attr(c, "sessionid", sessionid);
    xnode_set_attr(c, "status", status);
    if (cmd) *cmd = c;
    return r;
}

/* A stanza error with XEP-0050's own condition (§4.6: bad-action, bad-sessionid, ...) beside it. */
static int cmd_error(hook_event_t *ev, const char *type, const char *cond, const char *specific)
{
    xnode_t *e = stanza_error(ev->stanza, type, cond, NULL);
    xnode_t *err = e ? xnode_child(e, "error", NULL) : NULL;
    if (err && specific) xnode_add_elem(err, specific, NS_COMMANDS);
    return hook_reply(ev, e);
}

static void cmd_note(xnode_t *cmd, const char *text)
{
    xnode_t *n = xnode_add_elem(cmd, "note", NS_COMMANDS);
    xnode_set_attr(n, "type", "info");
    xnode_add_text(n, text);
}

static void purge_step(module_timer_t *t, void *ud)
{
    (void)ud;
    if (t == purge_timer) purge_timer = NULL;
    purge_job_t *j = purges;
    if (!j) return;
    flush_pending();                    /* queued rows of the account are part of what goes */
    oids_check();
    int64_t oid = owner_oid(j->owner, 0);
    storage_value_t o = STORE_VAL_INT(oid), cut = STORE_VAL_INT(j->cut << 4 | 15);
    int n = oid < 0 ? -1 : oid == 0 ? 0
          : store_delete_range(archive, &(store_range_t){.index = "by_time", .prefix = &o, .nprefix = 1,
                                                         .before = {&cut, 1, 1}, .limit = PURGE_BATCH});
    if (n > 0) j->deleted += n;
    if (n < 0 || n < PURGE_BATCH) {
        purges = j->next;
        strmap_del(counts, j->owner);
        xnode_t *reply;
        if (n < 0) {
            log_warn("mam", "clearing an archive failed: %s", store_error(archive));
            reply = stanza_error(j->request, "wait", "internal-server-error", NULL);
        } else {
            xnode_t *cmd;
            char text[96];
            snprintf(text, sizeof text, "%ld message(s) deleted from your archive.", j->deleted);
            reply = cmd_reply(j->request, "completed", NULL, &cmd);
            cmd_note(cmd, text);
        }
        if (reply) route_stanza(reply);
        xnode_free(j->request);
        free(j->owner);
        free(j);
    }
    if (purges && !purge_timer) purge_timer = module_add_timer(ctx, 0, 0, purge_step, NULL);
}

/* execute without a session: a new session and the confirmation form (XEP-0050 §3.4, XEP-0004). */
static int cmd_start(hook_event_t *ev)
{
    /* the account's own open session is replaced; else a free or expired slot; none: wait. Never
     * another account's open session (one user's executes must not cancel everyone's purges) */
    struct cmd_session *s = NULL;
    const char *bare = ev->from->bare;
    size_t bl = strlen(bare);
    int64_t now = now_us();
    for (size_t i = 0; i < CMD_SESSIONS && !s; i++) {
        const char *q = cmd_sessions[i].requester;
        if (q && strncmp(q, bare, bl) == 0 && (q[bl] == '/' || q[bl] == '\0')) s = &cmd_sessions[i];
    }
    for (size_t i = 0; i < CMD_SESSIONS && !s; i++)
        if (!cmd_sessions[i].requester || now - cmd_sessions[i].created > CMD_TTL_US) s = &cmd_sessions[i];
    if (!s) return cmd_error(ev, "wait", "resource-constraint", NULL);
    cmd_session_end(s);
    new_sid(s->id);
    s->requester = xstrdup(ev->from->full);
    s->created = now_us();
    xnode_t *cmd;
    xnode_t *r = cmd_reply(ev->stanza, "executing", s->id, &cmd);
    xnode_t *acts = xnode_add_elem(cmd, "actions", NS_COMMANDS);
    xnode_set_attr(acts, "execute", "complete");
    xnode_add_elem(acts, "complete", NS_COMMANDS);
    xnode_t *x = xnode_add_elem(cmd, "x", NS_DATA);
    xnode_set_attr(x, "type", "form");
    add_text_elem(x, "title", NS_DATA, PURGE_NAME);
    add_text_elem(x, "instructions", NS_DATA,
                  "Deletes every message in your archive on this server. Your devices keep what they "
                  "already have; this cannot be undone.");
    xnode_t *f = xnode_add_elem(x, "field", NS_DATA);
    xnode_set_attr(f, "var", "FORM_TYPE");
    xnode_set_attr(f, "type", "hidden");
    add_text_elem(f, "value", NS_DATA, PURGE_NODE);
    f = xnode_add_elem(x, "field", NS_DATA);
    xnode_set_attr(f, "var", "confirm");
    xnode_set_attr(f, "type", "boolean");
    xnode_set_attr(f, "label", "Delete all messages in my archive");
    xnode_add_elem(f, "required", NS_DATA);
    add_text_elem(f, "value", NS_DATA, "0");
    return hook_reply(ev, r);
}

/* The submitted form's 'confirm': 1, 0, or -1 when absent or not a XEP-0004 boolean. */
static int form_confirm(const xnode_t *cmd)
{
    xnode_t *x = xnode_child(cmd, "x", NS_DATA);
    for (xnode_t *f = x ? xnode_first_elem(x) : NULL; f; f = xnode_next_elem(f)) {
        const char *var = xnode_attr(f, "var");
        if (strcmp(f->name, "field") != 0 || !var || strcmp(var, "confirm") != 0) continue;
        char *v = text_or_null(xnode_child(f, "value", NULL));
        int b = !v ? -1 : strcmp(v, "1") == 0 || strcmp(v, "true") == 0 ? 1
                          : strcmp(v, "0") == 0 || strcmp(v, "false") == 0 ? 0 : -1;
        free(v);
        return b;
    }
    return -1;
}

/* iq-set http://jabber.org/protocol/commands to the domain or to the own bare JID. */
static int on_command(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!ev->origin || !local_account(ev->from) || (ev->to && ev->to->node && !hook_own_account(ev)))
        return hook_error(ev, "cancel", "forbidden");
    xnode_t *cmd = xnode_first_elem(ev->stanza);
    const char *node = xnode_attr(cmd, "node"), *action = xnode_attr(cmd, "action"),
               *sid = xnode_attr(cmd, "sessionid");
    if (!node || strcmp(node, PURGE_NODE) != 0) return hook_error(ev, "cancel", "item-not-found");
    if (!action) action = "execute";
    int complete = strcmp(action, "complete") == 0 || strcmp(action, "execute") == 0;
    if (!complete && strcmp(action, "cancel") != 0) {
        int known = strcmp(action, "next") == 0 || strcmp(action, "prev") == 0;
        return cmd_error(ev, "modify", "bad-request", known ? "bad-action" : "malformed-action");
    }
    if (!sid) {
        if (strcmp(action, "execute") == 0) return cmd_start(ev);
        return cmd_error(ev, "modify", "bad-request", "bad-sessionid");
    }
    struct cmd_session *s = cmd_session_find(sid, ev->from->full);
    if (!s) return cmd_error(ev, "modify", "bad-request", "bad-sessionid");
    if (now_us() - s->created > CMD_TTL_US) {
        cmd_session_end(s);
        return cmd_error(ev, "cancel", "not-allowed", "session-expired");
    }
    if (!complete) {
        cmd_session_end(s);
        return hook_reply(ev, cmd_reply(ev->stanza, "canceled", sid, NULL));
    }
    int confirm = form_confirm(cmd);
    if (confirm < 0) return cmd_error(ev, "modify", "bad-request", "bad-payload");
    cmd_session_end(s);
    if (!confirm) {
        xnode_t *c;
        xnode_t *r = cmd_reply(ev->stanza, "completed", NULL, &c);
        cmd_note(c, "Nothing was deleted.");
        return hook_reply(ev, r);
    }
    purge_job_t *j = xmalloc(sizeof *j);
    jid_t *owner = jid_bare_of(ev->from);
    *j = (purge_job_t){.owner = xstrdup(owner->bare), .request = xnode_copy(ev->stanza), .cut = now_us()};
    jid_free(owner);
    purge_job_t **tail = &purges;
    while (*tail) tail = &(*tail)->next;
    *tail = j;
    if (!purge_timer) purge_timer = module_add_timer(ctx, 0, 0, purge_step, NULL);
    return HOOK_HANDLED;                /* answered by purge_step once the rows are gone */
}

/* disco#items of the commands node (XEP-0050 §2.2): the purge for the own account, on the domain
 * for any of its local accounts; nothing for anyone else. */
static int on_command_items(hook_event_t *ev, void *ud)
{
    (void)ud;
    const char *node = xnode_attr(xnode_first_elem(ev->stanza), "node");
    if (!node || strcmp(node, NS_COMMANDS) != 0) return HOOK_PASS;
    int bare = ev->to && ev->to->node;
    xnode_t *r = stanza_reply(ev->stanza);
    xnode_t *qe = xnode_add_elem(r, "query", NS_DISCO_ITEMS);
    xnode_set_attr(qe, "node", NS_COMMANDS);
    if (ev->origin && local_account(ev->from) && (!bare || hook_own_account(ev))) {
        xnode_t *it = xnode_add_elem(qe, "item", NULL);
        xnode_set_attr(it, "jid", bare ? ev->to->bare : ev->to->full);
        xnode_set_attr(it, "node", PURGE_NODE);
        xnode_set_attr(it, "name", PURGE_NAME);
    }
    return hook_reply(ev, r);
}

/* disco#info of the command's node (XEP-0050 §2.2). */
static int on_command_info(hook_event_t *ev, void *ud)
{
    (void)ud;
    const char *node = xnode_attr(xnode_first_elem(ev->stanza), "node");
    if (!node || strcmp(node, PURGE_NODE) != 0) return HOOK_PASS;
    xnode_t *r = stanza_reply(ev->stanza);
    xnode_t *qe = xnode_add_elem(r, "query", NS_DISCO_INFO);
    xnode_set_attr(qe, "node", PURGE_NODE);
    xnode_t *id = xnode_add_elem(qe, "identity", NULL);
    xnode_set_attr(id, "category", "automation");
    xnode_set_attr(id, "type", "command-node");
    xnode_set_attr(id, "name", PURGE_NAME);
    xnode_set_attr(xnode_add_elem(qe, "feature", NULL), "var", NS_COMMANDS);
    xnode_set_attr(xnode_add_elem(qe, "feature", NULL), "var", NS_DATA);
    return hook_reply(ev, r);
}

static void commands_load(module_ctx_t *m)
{
    module_add_feature(m, NS_COMMANDS);
    module_add_account_feature(m, NS_COMMANDS);
    module_hook(m, "iq-set/host/" NS_COMMANDS, 0, on_command, NULL);
    module_hook(m, "iq-set/bare/" NS_COMMANDS, 0, on_command, NULL);
    module_hook(m, "iq-get/host/" NS_DISCO_ITEMS, 1, on_command_items, NULL);   /* before mod_disco (0) */
    module_hook(m, "iq-get/bare/" NS_DISCO_ITEMS, 2, on_command_items, NULL);   /* before mod_pep (1) */
    module_hook(m, "iq-get/host/" NS_DISCO_INFO, 1, on_command_info, NULL);
    module_hook(m, "iq-get/bare/" NS_DISCO_INFO, 1, on_command_info, NULL);
}

static void commands_unload(void)
{
    purge_timer = NULL;                 /* the core cancels the module's timers */
    while (purges) {
        purge_job_t *j = purges;
        purges = j->next;
        xnode_free(j->request);
        free(j->owner);
        free(j);
    }
    for (size_t i = 0; i < CMD_SESSIONS; i++) cmd_session_end(&cmd_sessions[i]);
}

/* ---- accounts ---- */

static int on_user_deleted(hook_event_t *ev, void *ud)
{
    (void)ud;
    /* the core deleted the rows (the tables are declared with .account); drop what is queued for
     * the account and forget its count */
    if (!ev->to) return HOOK_PASS;
    size_t k = 0;
    for (size_t i = 0; i < npending; i++) {
        if (strcmp(pending[i].owner, ev->to->bare) == 0) pending_free(&pending[i]);
        else pending[k++] = pending[i];
    }
    npending = k;
    strmap_del(counts, ev->to->bare);
    strmap_del(oids, ev->to->bare);
    prefs_cache_drop(ev->to->bare);
    return HOOK_PASS;
}

static int load(module_ctx_t *m)
{
    ctx = m;
    archive = module_store(m, "archive");
    prefs = module_store(m, "prefs");
    owners = module_store(m, "owners");
    counts = strmap_new();
    oids = strmap_new();
    owners_watch = (storage_watch_t){0};
    oids_check();                       /* the first call says "changed": the watch starts here */
    sweep_next = 0;
    /* ids keep increasing across restarts, even when the clock went back */
    store_page_t newest = {0};
    if (store_range(archive, &(store_range_t){.reverse = 1, .limit = 1}, &newest) < 0) {
        log_error("mam", "reading the archive failed: %s", store_error(archive));
        return -1;
    }
    last_time = newest.n ? newest.rows[0]->col[C_ID].i >> 4 : 0;
    store_page_free(&newest);
    if (last_time > now_us() + 60 * 1000000) {
        /* a row stamped while the clock was ahead: new stamps follow the clock, not that row (an id
         * taken twice would fail its insert, never replace a row) */
        log_warn("mam", "the archive's newest message is stamped in the future; the clock was wrong?");
        last_time = now_us();
    }
    prefs_cache = strmap_new();
    prefs_watch = (storage_watch_t){0};
    again = NULL;
    flush_timer = NULL;
    undelivered_archived = NULL;
    memset(sent_ids, 0, sizeof sent_ids);
    module_add_account_feature(m, NS_MAM2);
    module_add_account_feature(m, NS_MAM_EXT);
    module_add_account_feature(m, NS_MAM1);
    module_add_account_feature(m, NS_SID);
    static const char *const nss[] = {NS_MAM2, NS_MAM1};
    for (size_t i = 0; i < 2; i++) {
        char *g = xasprintf("iq-get/bare/%s", nss[i]), *s = xasprintf("iq-set/bare/%s", nss[i]);
        module_hook(m, g, 0, on_iq, (void *)nss[i]);
        module_hook(m, s, 0, on_iq, (void *)nss[i]);
        free(g);
        free(s);
    }
    /* strip before anyone stamps; stamp after the modules that drop a message at "pre" (blocking,
     * e2e policy) */
    module_hook(m, HOOK_MESSAGE_DELIVER_PRE, 1000, on_pre_strip, NULL);
    module_hook(m, HOOK_PRE_STANZA_OUT, 10, on_out_stamp, NULL);
    module_hook(m, HOOK_MESSAGE_DELIVER_PRE, -50, on_pre, NULL);
    module_hook(m, HOOK_MESSAGE_DELIVER_POST, 0, on_post, NULL);
    /* before offline storage (0), which ends the event; and last, to keep what nobody kept */
    module_hook(m, HOOK_MESSAGE_UNDELIVERED, 50, on_undelivered, NULL);
    module_hook(m, HOOK_MESSAGE_UNDELIVERED, -100, on_undelivered_last, NULL);
    module_hook(m, HOOK_USER_DELETED, 0, on_user_deleted, NULL);
    commands_load(m);
    expire_run();
    module_add_timer(m, EXPIRE_EVERY_MS, 1, expire_step, NULL);
    return 0;
}

static void unload(module_ctx_t *m)
{
    (void)m;
    flush_timer = NULL;                 /* the core cancels the module's timers */
    commands_unload();
    flush_pending();                    /* before the core closes the store */
    free(pending);
    pending = NULL;
    prefs_cache_drop(NULL);
    strmap_free(prefs_cache);
    prefs_cache = NULL;
    npending = cappending = 0;
    strmap_free(counts);
    counts = NULL;
    strmap_free(oids);
    oids = NULL;
}

static const module_option_t options[] = {
    {.name = "max_age_days", .type = MOPT_INT, .offset = offsetof(struct mam_conf, max_age_days),
     .def = 14, .min = 0, .max = 36500, .per_host = 1},
    {.name = "max_messages", .type = MOPT_INT, .offset = offsetof(struct mam_conf, max_messages),
     .def = 100000, .min = 1, .max = 100000000, .per_host = 1},
    {0}};

const module_t civitas_module = {.abi = CIVITAS_MODULE_ABI, .name = "mam", .load = load, .unload = unload,
                                 .options = options, .conf = &conf, .conf_size = sizeof conf, .store = &schema};
