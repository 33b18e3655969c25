/* server/fast_store.h: XEP-0484 FAST tokens as stored per account and client (user-agent id), their
 * revocation and expiry (fast_store.c; used by fast.c, sasl.c at login, account.c and civitasctl). The
 * HT-* mechanisms on a stream are fast.h. */
#ifndef CIVITAS_FAST_STORE_H
#define CIVITAS_FAST_STORE_H
#include "storage.h"
#include <stddef.h>
#include <stdint.h>

#define FAST_KV_STORE "fast"        /* storage_kv store; key: the user-agent id */
#define FAST_HASH_LEN 32            /* SHA-256 */
#define FAST_TAG_LEN 16
#define FAST_MECH_MAX 24

/* One token of a client (XEP-0484 §5.1's two slots, 'new' and 'current'). The token itself is not
 * stored: hash is SHA-256(token), see fast.c for why that is also the HMAC key. */
typedef struct fast_slot {
    int used;
    char mech[FAST_MECH_MAX];       /* the mechanism it was issued for */
    unsigned char hash[FAST_HASH_LEN];
    int64_t expiry;                 /* unix seconds */
    uint64_t count;                 /* the highest <fast count/> seen with it */
} fast_slot_t;

typedef struct fast_row {
    int revoked;                    /* revoked (password change, admin): both slots empty */
    int64_t revoked_until;          /* revoked: when its last token would have expired (0: unknown) */
    unsigned char tag[FAST_TAG_LEN]; /* of the account's credentials when issued (fast.c) */
    fast_slot_t fresh, current;
} fast_row_t;

/* 0 found, 1 none (or unreadable: treated as none), -1 storage error. */
int fast_row_load(storage_t *st, const char *user, const char *domain, const char *ua, fast_row_t *row);
int fast_row_save(storage_t *st, const char *user, const char *domain, const char *ua, const fast_row_t *row);
/* Revoke every token of user@domain: each client's row keeps only "revoked" (so that its next FAST
 * attempt gets <credentials-expired/>), a row with no token left is deleted. Number of clients
 * revoked, or -1. */
int fast_revoke_all(storage_t *st, const char *user, const char *domain);
/* Delete the rows of user@domain with nothing left in them: not revoked and every token expired at
 * now (run at each login of the account, so that rows of client ids gone do not pile up; a row
 * with nothing left to revoke is deleted by fast_revoke_all as well). Rows deleted, or -1. */
int fast_expire(storage_t *st, const char *user, const char *domain, int64_t now);

/* The periodic sweep over the rows of every account (fast.c runs it from a core timer): a cursor
 * ({0} to start; fast_sweep_reset frees it) and one step, which looks at up to batch rows after the
 * cursor and deletes those with nothing left in them at now: not revoked and every token expired,
 * or revoked and the last token it revoked past its expiry (until then the row answers
 * <credentials-expired/>). A revoked row that does not know that expiry (written before it was
 * kept) gets legacy_until. Rows deleted, or -1; cur->done once the last row was looked at. */
typedef struct fast_sweep {
    char *user, *domain, *key;      /* the last row looked at; NULL: from the start */
    int done;
} fast_sweep_t;
int fast_sweep_step(storage_t *st, fast_sweep_t *cur, size_t batch, int64_t now, int64_t legacy_until);
void fast_sweep_reset(fast_sweep_t *cur);

#endif
