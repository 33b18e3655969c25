/* server/fast.h: XEP-0484 FAST tokens: what is stored per account and client (user-agent id),
 * revocation (fast_store.c, also used by civitasctl), and the HT-* mechanisms on a stream (fast.c). */
#ifndef CIVITAS_FAST_H
#define CIVITAS_FAST_H
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

/* ---- on a stream (fast.c) ---- */
typedef struct session session_t;
typedef struct sasl2_req sasl2_req_t;
typedef struct xnode xnode_t;
/* The <fast/> inline feature (its mechanisms) into inline, when FAST works on s. */
void fast_add_inline(session_t *s, xnode_t *inl);
/* 1 when mech is a FAST mechanism offered on s. */
int fast_mech_offered(session_t *s, const char *mech);
/* Authenticate with a token: mechanism r->mechanism, initial response r->initial. Ends in
 * sasl_success or sasl_fail_as. */
void fast_authenticate(session_t *s, sasl2_req_t *r);
/* After success: the <token/> to add to <success/> (a new token when the client asked for one or the
 * one it used is due for rotation), or NULL. */
xnode_t *fast_after_success(session_t *s, sasl2_req_t *r);

#endif
