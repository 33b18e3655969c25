/* server/fast_store.c: XEP-0484 FAST token rows in the core's key/value store (one per account and
 * client) and their revocation; linked into civitasctl as well (user revoke-tokens). */
#include "fast_store.h"
#include "util.h"
#include "strlist.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void hex(const unsigned char *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) snprintf(out + 2 * i, 3, "%02x", in[i]);
}

static int unhex(const char *in, unsigned char *out, size_t n)
{
    if (strlen(in) != 2 * n) return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(in + 2 * i, "%2x", &v) != 1) return -1;
        out[i] = (unsigned char)v;
    }
    return 0;
}

/* "mech hash expiry count", or "- - 0 0" for an empty slot */
static void slot_text(const fast_slot_t *sl, char *out, size_t size)
{
    char h[2 * FAST_HASH_LEN + 1];
    if (!sl->used) {
        snprintf(out, size, "- - 0 0");
        return;
    }
    hex(sl->hash, FAST_HASH_LEN, h);
    snprintf(out, size, "%s %s %" PRId64 " %" PRIu64, sl->mech, h, sl->expiry, sl->count);
}

static int slot_parse(const char *mech, const char *h, int64_t expiry, uint64_t count, fast_slot_t *sl)
{
    memset(sl, 0, sizeof *sl);
    if (strcmp(mech, "-") == 0) return 0;
    if (strlen(mech) >= FAST_MECH_MAX || unhex(h, sl->hash, FAST_HASH_LEN) < 0) return -1;
    strcpy(sl->mech, mech);
    sl->expiry = expiry;
    sl->count = count;
    sl->used = 1;
    return 0;
}

/* "1 revoked tag slot slot [revoked_until]" (rows written before revoked_until was kept lack it);
 * 0, or -1 when it is not a row. */
static int row_parse(const char *v, fast_row_t *row)
{
    char tag[64], m1[32], h1[80], m2[32], h2[80];
    int revoked = 0, n, ok;
    int64_t e1, e2, until = 0;
    uint64_t c1, c2;
    memset(row, 0, sizeof *row);
    n = sscanf(v, "1 %d %63s %31s %79s %" SCNd64 " %" SCNu64 " %31s %79s %" SCNd64 " %" SCNu64 " %" SCNd64,
               &revoked, tag, m1, h1, &e1, &c1, m2, h2, &e2, &c2, &until);
    ok = (n == 10 || n == 11) && unhex(tag, row->tag, FAST_TAG_LEN) == 0 &&
         slot_parse(m1, h1, e1, c1, &row->fresh) == 0 && slot_parse(m2, h2, e2, c2, &row->current) == 0;
    row->revoked = revoked != 0;
    row->revoked_until = row->revoked && n == 11 ? until : 0;
    explicit_bzero(h1, sizeof h1);
    explicit_bzero(h2, sizeof h2);
    if (!ok) memset(row, 0, sizeof *row);
    return ok ? 0 : -1;
}

int fast_row_load(storage_t *st, const char *user, const char *domain, const char *ua, fast_row_t *row)
{
    void *v = NULL;
    size_t len = 0;
    memset(row, 0, sizeof *row);
    int r = storage_kv_get(st, FAST_KV_STORE, user, domain, ua, &v, &len);
    if (r != 0) return r < 0 ? -1 : 1;
    int ok = row_parse(v, row) == 0;
    explicit_bzero(v, len);
    free(v);
    return ok ? 0 : 1;
}

int fast_row_save(storage_t *st, const char *user, const char *domain, const char *ua, const fast_row_t *row)
{
    char tag[2 * FAST_TAG_LEN + 1], s1[200], s2[200], buf[512];
    hex(row->tag, FAST_TAG_LEN, tag);
    slot_text(&row->fresh, s1, sizeof s1);
    slot_text(&row->current, s2, sizeof s2);
    int n = row->revoked ? snprintf(buf, sizeof buf, "1 1 %s %s %s %" PRId64, tag, s1, s2, row->revoked_until)
                         : snprintf(buf, sizeof buf, "1 0 %s %s %s", tag, s1, s2);
    int r = storage_kv_set(st, FAST_KV_STORE, user, domain, ua, buf, (size_t)n);
    explicit_bzero(buf, sizeof buf);
    return r;
}

typedef struct revoke_ctx {
    strlist_t keys;
} revoke_ctx_t;

static int collect(void *ud, const char *key, const void *val, size_t len)
{
    (void)val; (void)len;
    strlist_add(&((revoke_ctx_t *)ud)->keys, key);
    return 0;
}

/* The expiry of the row's last token (0 when it has none). */
static int64_t last_expiry(const fast_row_t *row)
{
    int64_t e = row->fresh.used ? row->fresh.expiry : 0;
    return row->current.used && row->current.expiry > e ? row->current.expiry : e;
}

/* Nothing left in the row: no token that has not expired and, when revoked (a revoked row answers
 * <credentials-expired/>), what it revoked has expired as well (0: not known, kept). */
static int row_dead(const fast_row_t *row, int64_t now)
{
    if (row->revoked) return row->revoked_until > 0 && row->revoked_until <= now;
    return last_expiry(row) <= now;
}

int fast_revoke_all(storage_t *st, const char *user, const char *domain)
{
    revoke_ctx_t c = {{0}};
    if (storage_kv_each(st, FAST_KV_STORE, user, domain, collect, &c) < 0) return -1;
    fast_row_t dead = {.revoked = 1}, row;
    int64_t now = (int64_t)time(NULL);
    int r = 0, n = 0;
    for (size_t i = 0; i < c.keys.n && r >= 0; i++) {
        int l = fast_row_load(st, user, domain, c.keys.v[i], &row);
        if (l < 0) {
            r = -1;
        } else if (l == 0 && row_dead(&row, now)) {
            r = storage_kv_del(st, FAST_KV_STORE, user, domain, c.keys.v[i]);
        } else {
            /* kept until the tokens it revokes would have expired (a row revoked again keeps its date) */
            dead.revoked_until = l == 0 ? (row.revoked ? row.revoked_until : last_expiry(&row)) : 0;
            if (fast_row_save(st, user, domain, c.keys.v[i], &dead) < 0) r = -1;
            else n++;
        }
    }
    explicit_bzero(&row, sizeof row);
    strlist_free(&c.keys);
    return r < 0 ? -1 : n;
}

int fast_expire(storage_t *st, const char *user, const char *domain, int64_t now)
{
    revoke_ctx_t c = {{0}};
    if (storage_kv_each(st, FAST_KV_STORE, user, domain, collect, &c) < 0) return -1;
    fast_row_t row;
    int r = 0, n = 0;
    for (size_t i = 0; i < c.keys.n && r >= 0; i++) {
        int l = fast_row_load(st, user, domain, c.keys.v[i], &row);
        if (l < 0) r = -1;
        else if (l == 0 && row_dead(&row, now)) {
            r = storage_kv_del(st, FAST_KV_STORE, user, domain, c.keys.v[i]);
            n += r == 0;
        }
    }
    explicit_bzero(&row, sizeof row);
    strlist_free(&c.keys);
    return r < 0 ? -1 : n;
}

void fast_sweep_reset(fast_sweep_t *cur)
{
    free(cur->user);
    free(cur->domain);
    free(cur->key);
    memset(cur, 0, sizeof *cur);
}

typedef struct sweep_batch {
    strlist_t user, domain, key, val;
    int bad;                        /* out of memory */
} sweep_batch_t;

static int sweep_collect(void *ud, const storage_value_t *c, int n)
{
    sweep_batch_t *b = ud;
    if (n != 4 || !c[0].p || !c[1].p || !c[2].p) return 0;
    char *v = strndup(c[3].p ? c[3].p : "", c[3].len);
    if (!v || strlist_add(&b->user, c[0].p) < 0 || strlist_add(&b->domain, c[1].p) < 0 ||
        strlist_add(&b->key, c[2].p) < 0 || strlist_add(&b->val, v) < 0) {
        b->bad = 1;
        free(v);
        return 1;
    }
    explicit_bzero(v, c[3].len);
    free(v);
    return 0;
}

int fast_sweep_step(storage_t *st, fast_sweep_t *cur, size_t batch, int64_t now, int64_t legacy_until)
{
    /* the kv table's primary key (store, user, domain, key) orders the walk: each step is one index
     * range, wherever the previous one stopped */
    static const char first[] = "SELECT user, domain, key, val FROM kv WHERE store = ? "
                                "ORDER BY user, domain, key LIMIT ?";
    static const char next[] = "SELECT user, domain, key, val FROM kv WHERE store = ? AND (user, domain, key) > "
                               "(?, ?, ?) ORDER BY user, domain, key LIMIT ?";
    storage_value_t p[5] = {{.type = STORAGE_TEXT, .p = FAST_KV_STORE, .len = strlen(FAST_KV_STORE)}};
    int np = 1;
    if (cur->user) {
        const char *c[3] = {cur->user, cur->domain, cur->key};
        for (int i = 0; i < 3; i++) p[np++] = (storage_value_t){.type = STORAGE_TEXT, .p = c[i], .len = strlen(c[i])};
    }
    p[np++] = (storage_value_t){.type = STORAGE_INT, .i = (int64_t)batch};
    sweep_batch_t b;
    memset(&b, 0, sizeof b);
    int r = storage_query(st, cur->user ? next : first, p, np, sweep_collect, &b), n = 0;
    if (r >= 0 && b.bad) r = -1;
    fast_row_t row;
    /* one commit for the step's changes, not one (and an fsync) per row */
    int tx = r >= 0 && b.key.n > 0 && storage_tx_begin(st) == 0;
    for (size_t i = 0; r >= 0 && i < b.key.n; i++) {
        if (row_parse(b.val.v[i], &row) < 0) continue;          /* not ours to judge: left alone */
        if (row.revoked && !row.revoked_until) {
            row.revoked_until = legacy_until;
            if (fast_row_save(st, b.user.v[i], b.domain.v[i], b.key.v[i], &row) < 0) r = -1;
        }
        if (r >= 0 && row_dead(&row, now)) {
            r = storage_kv_del(st, FAST_KV_STORE, b.user.v[i], b.domain.v[i], b.key.v[i]);
            n += r == 0;
        }
    }
    if (tx && (r < 0 || storage_tx_commit(st) < 0)) {
        storage_tx_rollback(st);
        r = -1;
    }
    explicit_bzero(&row, sizeof row);
    if (r >= 0) {
        if (b.key.n < batch) {
            cur->done = 1;
        } else {
            size_t last = b.key.n - 1;
            fast_sweep_reset(cur);
            cur->user = b.user.v[last];
            cur->domain = b.domain.v[last];
            cur->key = b.key.v[last];
            b.user.v[last] = b.domain.v[last] = b.key.v[last] = NULL;
        }
    }
    for (size_t i = 0; i < b.val.n; i++) explicit_bzero(b.val.v[i], strlen(b.val.v[i]));
    strlist_free(&b.user);
    strlist_free(&b.domain);
    strlist_free(&b.key);
    strlist_free(&b.val);
    return r < 0 ? -1 : n;
}
