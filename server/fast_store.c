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

int fast_row_load(storage_t *st, const char *user, const char *domain, const char *ua, fast_row_t *row)
{
    void *v = NULL;
    size_t len = 0;
    memset(row, 0, sizeof *row);
    int r = storage_kv_get(st, FAST_KV_STORE, user, domain, ua, &v, &len);
    if (r != 0) return r < 0 ? -1 : 1;
    char tag[64], m1[32], h1[80], m2[32], h2[80];
    int revoked, ok;
    int64_t e1, e2;
    uint64_t c1, c2;
    ok = sscanf(v, "1 %d %63s %31s %79s %" SCNd64 " %" SCNu64 " %31s %79s %" SCNd64 " %" SCNu64, &revoked, tag, m1,
                h1, &e1, &c1, m2, h2, &e2, &c2) == 10 &&
         unhex(tag, row->tag, FAST_TAG_LEN) == 0 && slot_parse(m1, h1, e1, c1, &row->fresh) == 0 &&
         slot_parse(m2, h2, e2, c2, &row->current) == 0;
    row->revoked = revoked != 0;
    explicit_bzero(v, len);
    free(v);
    if (!ok) memset(row, 0, sizeof *row);
    return ok ? 0 : 1;
}

int fast_row_save(storage_t *st, const char *user, const char *domain, const char *ua, const fast_row_t *row)
{
    char tag[2 * FAST_TAG_LEN + 1], s1[200], s2[200], buf[512];
    hex(row->tag, FAST_TAG_LEN, tag);
    slot_text(&row->fresh, s1, sizeof s1);
    slot_text(&row->current, s2, sizeof s2);
    int n = snprintf(buf, sizeof buf, "1 %d %s %s %s", row->revoked ? 1 : 0, tag, s1, s2);
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

/* Nothing left in the row: not revoked (a revoked row answers <credentials-expired/>), and no token
 * that has not expired. */
static int row_dead(const fast_row_t *row, int64_t now)
{
    if (row->revoked) return 0;
    return !(row->fresh.used && row->fresh.expiry > now) && !(row->current.used && row->current.expiry > now);
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
        if (l < 0) r = -1;
        else if (l == 0 && row_dead(&row, now)) r = storage_kv_del(st, FAST_KV_STORE, user, domain, c.keys.v[i]);
        else if (fast_row_save(st, user, domain, c.keys.v[i], &dead) < 0) r = -1;
        else n++;
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
