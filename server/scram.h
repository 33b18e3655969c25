/* server/scram.h: server side of SASL SCRAM-SHA-1/-SHA-256 and their -PLUS variants (RFC 5802,
 * RFC 7677, channel bindings RFC 9266 / RFC 5929), PLAIN (RFC 4616) parsing, SCRAM keys, base64. */
#ifndef CIVITAS_SCRAM_H
#define CIVITAS_SCRAM_H
#include "api.h"
#include "codec.h"     /* base64 */
#include <stddef.h>

typedef enum { SCRAM_SHA1 = 0, SCRAM_SHA256 = 1 } scram_hash_t;
#define SCRAM_MAX_KEY 32   /* SHA-256 length */
#define SCRAM_MAX_SALT 32
#define SCRAM_SALT_LEN 16            /* salt length scram_creds_from_password() generates */
#define SCRAM_DEFAULT_ITERATIONS 4096 /* RFC 7677 §4: at least 4096 */
#define SCRAM_MAX_MESSAGE 4096       /* longer client messages are malformed-request */
#define SCRAM_MAX_CB_DATA 64         /* buffer size given to get_cb_data */

/* What is stored for an account, per hash: never the password itself. */
typedef struct scram_creds {
    scram_hash_t hash;
    unsigned char salt[SCRAM_MAX_SALT]; size_t salt_len;
    unsigned iterations;
    unsigned char stored_key[SCRAM_MAX_KEY];
    unsigned char server_key[SCRAM_MAX_KEY];   /* both of scram_hash_len(hash) bytes */
} scram_creds_t;

/* 20 for SCRAM_SHA1, 32 for SCRAM_SHA256, 0 for anything else. */
size_t scram_hash_len(scram_hash_t h);

/* Mechanism names: "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS".
 * scram_mech_name returns a static string (NULL for a bad h); scram_mech_parse fills *h and
 * *plus (1 for -PLUS) and returns 0, or -1 for any other name (exact, case-sensitive match). */
const char *scram_mech_name(scram_hash_t h, int plus);
int scram_mech_parse(const char *name, scram_hash_t *h, int *plus);

/* SASLprep (RFC 4013) of a UTF-8 string, as a "stored string" (unassigned code points are
 * prohibited, RFC 5802 §2.2). Returns a malloc'd string, or NULL when the input is not valid
 * UTF-8, contains prohibited characters, fails the bidi rule, or maps to the empty string.
 * Callers use it to normalize a PLAIN authcid the same way SCRAM usernames are normalized. */
char *scram_saslprep(const char *in);

/* Derive creds from a password (this function SASLpreps it itself) with a fresh random salt
 * of SCRAM_SALT_LEN bytes and the given iteration count (callers use SCRAM_DEFAULT_ITERATIONS).
 * 0, or -1 when the password is rejected by SASLprep, iterations is 0 or above INT_MAX, h is
 * invalid or the crypto library fails. On -1 *out is zeroed. */
int scram_creds_from_password(scram_hash_t h, const char *password, unsigned iterations, scram_creds_t *out);
/* Both creds every account stores (SCRAM-SHA-1 and SCRAM-SHA-256), each with its own salt, from
 * one password: 0, or -1 as scram_creds_from_password (then both are zeroed). */
int scram_creds_pair_from_password(const char *password, unsigned iterations, scram_creds_t *sha1,
                                   scram_creds_t *sha256);
/* The same with a given salt (1..SCRAM_MAX_SALT bytes): used to reproduce known creds. 0/-1. */
int scram_creds_derive(scram_hash_t h, const char *password, const unsigned char *salt, size_t salt_len,
                       unsigned iterations, scram_creds_t *out);
/* PLAIN against stored creds: derive with creds' salt/iterations, compare StoredKey in
 * constant time. 1 match, 0 not (also when SASLprep rejects the password), -1 error (bad creds,
 * crypto failure). */
int scram_check_password(const scram_creds_t *c, const char *password);
/* Creds for an account that does not exist, so that asking about it looks like asking about one
 * that does: a salt of SCRAM_SALT_LEN bytes that is the same for (h, username) during the process
 * life (a keyed hash under a random process secret), the given iteration count (the server's
 * configured one, as new accounts get), and random keys that no proof or password matches.
 * PLAIN checks a password against them so that an unknown user costs the same PBKDF2 time.
 * 0, or -1 (bad arguments, crypto failure; *out zeroed). */
int scram_fake_creds(scram_hash_t h, const char *username, unsigned iterations, scram_creds_t *out);

/* SCRAM building blocks, exposed so tests and tools can act as a SCRAM client without using
 * the crypto library directly. out receives scram_hash_len(h) bytes. All return 0/-1.
 * scram_salted_password: SaltedPassword := Hi(SASLprep(password), salt, i) (RFC 5802 §3). */
int scram_hmac(scram_hash_t h, const void *key, size_t keylen, const void *data, size_t len, unsigned char *out);
int scram_digest(scram_hash_t h, const void *data, size_t len, unsigned char *out);
int scram_salted_password(scram_hash_t h, const char *password, const unsigned char *salt, size_t salt_len,
                          unsigned iterations, unsigned char *out);

/* 1 when the n bytes at a and b are equal, compared in constant time (secrets, MACs), else 0. */
int scram_memeq(const void *a, const void *b, size_t n);

/* PLAIN message "authzid\0authcid\0passwd": 0 and malloc'd strings (authzid NULL when empty)
 * or -1 when malformed (wrong number of NULs, empty authcid or password, invalid UTF-8, over
 * 1024 bytes); on -1 all three are set to NULL. No SASLprep is applied: the caller normalizes
 * authcid with scram_saslprep(); scram_check_password() preps the password itself. */
int sasl_plain_parse(const unsigned char *in, size_t len, char **authzid, char **authcid, char **passwd);

/* One SCRAM exchange on the server side. */
typedef struct scram_server scram_server_t;
typedef struct scram_server_cb {
    /* Look up creds of `username` (already decoded from =2C/=3D and SASLprepped) for hash h.
     * 0 found, -1 unknown user. Creds whose hash differs from h, whose salt_len is 0 or
     * above SCRAM_MAX_SALT or whose iterations is 0 make the exchange fail (not-authorized). */
    int (*get_creds)(void *ud, const char *username, scram_hash_t h, scram_creds_t *out);
    /* Fill channel binding data of `type` ("tls-exporter" | "tls-server-end-point") into buf
     * (max 64 bytes), set *len. 0 ok, -1 unsupported. May be NULL when no binding exists. */
    int (*get_cb_data)(void *ud, const char *type, unsigned char *buf, size_t *len);
} scram_server_cb_t;

/* plus: this is the -PLUS mechanism. server_supports_plus: the server advertised some -PLUS
 * mechanism on this stream (so a client gs2 flag 'y' means a downgrade attack and must fail).
 * cb is copied; ud is passed to its functions. NULL for a bad h or a NULL get_creds. */
scram_server_t *scram_server_new(scram_hash_t h, int plus, int server_supports_plus, const scram_server_cb_t *cb, void *ud);
void scram_server_free(scram_server_t *s);   /* NULL ok; wipes the keys it held */

typedef enum { SCRAM_CONTINUE, SCRAM_OK, SCRAM_FAIL } scram_step_t;
/* Feed one decoded client message (the caller turns an absent initial response into an empty
 * challenge itself; an empty message here is malformed-request).
 * - On CONTINUE *out is the server-first message "r=<nonce>,s=<salt>,i=<iterations>".
 * - On OK *out is the server-final "v=<ServerSignature>" to send in <success/>.
 * - On FAIL *out is NULL and *failure names the RFC 6120 §6.5 condition:
 *     "not-authorized": bad proof, unknown user (indistinguishable from a wrong password: an
 *        unknown user still gets a server-first with a stable fake salt and the iteration count
 *        of scram_server_set_iterations, 4096 by default),
 *        channel-binding data mismatch, nonce mismatch, unsupported channel-binding type, gs2
 *        flag 'y' while the server offers -PLUS (downgrade), username rejected by SASLprep;
 *     "malformed-request": syntax errors, bad base64, "m=" extension, a -PLUS mechanism
 *        without "p=", "p=" on a mechanism without -PLUS, a message after OK or FAIL;
 *     "invalid-authzid": the gs2 "a=" authzid is empty or badly escaped. (Whether the user
 *        may act as a well-formed authzid is the caller's decision, after OK.)
 * On CONTINUE and OK *failure is NULL. *out is malloc'd and NUL-terminated, *outlen its length
 * (outlen may be NULL); the caller frees it. After OK or FAIL the exchange is over. */
scram_step_t scram_server_step(scram_server_t *s, const unsigned char *in, size_t len, char **out, size_t *outlen, const char **failure);
/* After OK: the authenticated (decoded, SASLprepped) username; NULL before OK. Owned by s. */
const char *scram_server_username(const scram_server_t *s);
/* The iteration count shown to a user that does not exist: the server's configured count for new
 * accounts (default SCRAM_DEFAULT_ITERATIONS). Call before the first step; 0 or above INT_MAX is
 * ignored. */
void scram_server_set_iterations(scram_server_t *s, unsigned iterations);
/* The (decoded, SASLprepped) username the client named in its first message, whether or not it
 * exists or authenticated; NULL before that. For accounting failures only. Owned by s. */
const char *scram_server_claimed_username(const scram_server_t *s);
/* After OK: the decoded authzid from the gs2 header, or NULL (also before OK). Owned by s. */
const char *scram_server_authzid(const scram_server_t *s);
/* XEP-0474 (SSDP): add ",h=<base64(H(advertised))>" to the server-first message, H being the
 * mechanism's hash; advertised is the sorted mechanism list joined by 0x1E, then 0x1F and the sorted
 * channel-binding types joined by 0x1E when XEP-0440 advertised them. Call before the first step.
 * 0/-1. */
int scram_server_set_ssdp(scram_server_t *s, const char *advertised);
/* Test hook: use `snonce` as the server part of the nonce instead of random bytes, so the
 * RFC examples can be replayed. Call before the first step. 0, or -1 when snonce is empty,
 * over 64 bytes, or not printable ASCII without ','. Never use outside tests. */
int scram_server_set_nonce_for_test(scram_server_t *s, const char *snonce);

#endif
