/* server/scram.c: SCRAM-SHA-1/-256(-PLUS) server exchanges, SCRAM key derivation, PLAIN parsing
 on OpenSSL 3 (HMAC, digests, PBKDF2, RNG) and libidn (SASLprep).
 *
 * Why SCRAM is written here rather than taken from GNU SASL: GNU SASL 2.2, the version in
 * Debian 12, has no tls-server-end-point channel binding (RFC 5929), which is the only binding
 * available on TLS 1.2 connections without extended master secret, and XEP-0440 servers are
 * expected to offer it. The server side of SCRAM is small (two messages) and is kept here,
 * next to the key storage format it depends on. */
#include "scram.h"
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stringprep.h>

#define PLAIN_MAX 1024
#define SNONCE_RAW 24          /* random bytes in the server nonce: 32 base64 characters */
#define TEST_NONCE_MAX 64
#define MAX_FIELD 1024         /* a username or authzid longer than this is malformed */

static const char F_NOTAUTH[] = "not-authorized";
static const char F_MALFORMED[] = "malformed-request";
static const char F_AUTHZID[] = "invalid-authzid";

/* ---- primitives ---- */

static const EVP_MD *md_of(scram_hash_t h)
{
    switch (h) {
    case SCRAM_SHA1: return EVP_sha1();
    case SCRAM_SHA256: return EVP_sha256();
    }
    return NULL;
}

size_t scram_hash_len(scram_hash_t h)
{
    switch (h) {
    case SCRAM_SHA1: return 20;
    case SCRAM_SHA256: return 32;
    }
    return 0;
}

static const struct { const char *name; scram_hash_t h; int plus; } mechs[] = {
    { "SCRAM-SHA-1", SCRAM_SHA1, 0 }, { "SCRAM-SHA-1-PLUS", SCRAM_SHA1, 1 },
    { "SCRAM-SHA-256", SCRAM_SHA256, 0 }, { "SCRAM-SHA-256-PLUS", SCRAM_SHA256, 1 },
};

const char *scram_mech_name(scram_hash_t h, int plus)
{
    for (size_t i = 0; i < sizeof mechs / sizeof mechs[0]; i++)
        if (mechs[i].h == h && mechs[i].plus == !!plus) return mechs[i].name;
    return NULL;
}

int scram_mech_parse(const char *name, scram_hash_t *h, int *plus)
{
    if (!name) return -1;
    for (size_t i = 0; i < sizeof mechs / sizeof mechs[0]; i++) {
        if (strcmp(mechs[i].name, name) == 0) {
            *h = mechs[i].h;
            *plus = mechs[i].plus;
            return 0;
        }
    }
    return -1;
}

int scram_hmac(scram_hash_t h, const void *key, size_t keylen, const void *data, size_t len, unsigned char *out)
{
    const EVP_MD *md = md_of(h);
    unsigned int outl = 0;
    if (!md || keylen > INT_MAX) return -1;
    if (!HMAC(md, key, (int)keylen, data, len, out, &outl)) return -1;
    return outl == scram_hash_len(h) ? 0 : -1;
}

int scram_digest(scram_hash_t h, const void *data, size_t len, unsigned char *out)
{
    const EVP_MD *md = md_of(h);
    unsigned int outl = 0;
    if (!md || EVP_Digest(data, len, out, &outl, md, NULL) != 1) return -1;
    return outl == scram_hash_len(h) ? 0 : -1;
}

/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF. */
static int utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        unsigned min, cp;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) { k = 1; min = 0x80; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { k = 2; min = 0x800; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { k = 3; min = 0x10000; cp = c & 0x07; }
        else return 0;
        if (n - i <= k) return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += k + 1;
    }
    return 1;
}

char *scram_saslprep(const char *in)
{
    char *out = NULL;
    if (!in || !utf8_valid((const unsigned char *)in, strlen(in))) return NULL;
    if (stringprep_profile(in, &out, "SASLprep", STRINGPREP_NO_UNASSIGNED) != STRINGPREP_OK) {
        free(out);
        return NULL;
    }
    if (!out || !*out) {
        free(out);
        return NULL;
    }
    return out;
}

/* ---- keys ---- */

/* SaltedPassword from an already SASLprepped password. */
static int salted_prepped(scram_hash_t h, const char *prepped, const unsigned char *salt, size_t salt_len,
                          unsigned iterations, unsigned char *out)
{
    const EVP_MD *md = md_of(h);
    size_t plen = strlen(prepped);
    if (!md || !salt || salt_len == 0 || salt_len > INT_MAX || plen > INT_MAX) return -1;
    if (iterations == 0 || iterations > INT_MAX) return -1;
    if (PKCS5_PBKDF2_HMAC(prepped, (int)plen, salt, (int)salt_len, (int)iterations, md,
                          (int)scram_hash_len(h), out) != 1)
        return -1;
    return 0;
}

int scram_salted_password(scram_hash_t h, const char *password, const unsigned char *salt, size_t salt_len,
                          unsigned iterations, unsigned char *out)
{
    char *prepped = scram_saslprep(password);
    if (!prepped) return -1;
    int r = salted_prepped(h, prepped, salt, salt_len, iterations, out);
    OPENSSL_clear_free(prepped, strlen(prepped));
    return r;
}

/* StoredKey and ServerKey from SaltedPassword (RFC 5802 §3). */
static int keys_from_salted(scram_hash_t h, const unsigned char *sp, unsigned char *stored, unsigned char *server)
{
    unsigned char client_key[SCRAM_MAX_KEY];
    size_t hl = scram_hash_len(h);
    int r = -1;
    if (scram_hmac(h, sp, hl, "Client Key", 10, client_key) == 0 &&
        scram_digest(h, client_key, hl, stored) == 0 &&
        scram_hmac(h, sp, hl, "Server Key", 10, server) == 0)
        r = 0;
    OPENSSL_cleanse(client_key, sizeof client_key);
    return r;
}

int scram_creds_derive(scram_hash_t h, const char *password, const unsigned char *salt, size_t salt_len,
                       unsigned iterations, scram_creds_t *out)
{
    unsigned char sp[SCRAM_MAX_KEY];
    memset(out, 0, sizeof *out);
    if (salt_len == 0 || salt_len > SCRAM_MAX_SALT) return -1;
    int r = scram_salted_password(h, password, salt, salt_len, iterations, sp);
    if (r == 0) r = keys_from_salted(h, sp, out->stored_key, out->server_key);
    OPENSSL_cleanse(sp, sizeof sp);
    if (r < 0) {
        OPENSSL_cleanse(out, sizeof *out);
        return -1;
    }
    out->hash = h;
    memcpy(out->salt, salt, salt_len);
    out->salt_len = salt_len;
    out->iterations = iterations;
    return 0;
}

int scram_creds_from_password(scram_hash_t h, const char *password, unsigned iterations, scram_creds_t *out)
{
    unsigned char salt[SCRAM_SALT_LEN];
    memset(out, 0, sizeof *out);
    if (RAND_bytes(salt, sizeof salt) != 1) return -1;
    return scram_creds_derive(h, password, salt, sizeof salt, iterations, out);
}

int scram_creds_pair_from_password(const char *password, unsigned iterations, scram_creds_t *sha1,
                                   scram_creds_t *sha256)
{
    if (scram_creds_from_password(SCRAM_SHA1, password, iterations, sha1) == 0 &&
        scram_creds_from_password(SCRAM_SHA256, password, iterations, sha256) == 0)
        return 0;
    OPENSSL_cleanse(sha1, sizeof *sha1);
    OPENSSL_cleanse(sha256, sizeof *sha256);
    return -1;
}

static int creds_sane(const scram_creds_t *c, scram_hash_t h)
{
    return c->hash == h && scram_hash_len(h) != 0 && c->salt_len >= 1 && c->salt_len <= SCRAM_MAX_SALT &&
           c->iterations >= 1 && c->iterations <= INT_MAX;
}

int scram_check_password(const scram_creds_t *c, const char *password)
{
    unsigned char sp[SCRAM_MAX_KEY], stored[SCRAM_MAX_KEY], server[SCRAM_MAX_KEY];
    if (!c || !password || !creds_sane(c, c->hash)) return -1;
    char *prepped = scram_saslprep(password);
    if (!prepped) return 0;      /* no stored password can be one SASLprep rejects */
    int r = salted_prepped(c->hash, prepped, c->salt, c->salt_len, c->iterations, sp);
    OPENSSL_clear_free(prepped, strlen(prepped));
    if (r == 0) r = keys_from_salted(c->hash, sp, stored, server);
    if (r == 0) r = CRYPTO_memcmp(stored, c->stored_key, scram_hash_len(c->hash)) == 0 ? 1 : 0;
    OPENSSL_cleanse(sp, sizeof sp);
    OPENSSL_cleanse(stored, sizeof stored);
    OPENSSL_cleanse(server, sizeof server);
    return r;
}

/* ---- PLAIN ---- */

int sasl_plain_parse(const unsigned char *in, size_t len, char **authzid, char **authcid, char **passwd)
{
    *authzid = *authcid = *passwd = NULL;
    if (!in || len == 0 || len > PLAIN_MAX) return -1;
    const unsigned char *n1 = memchr(in, 0, len);
    if (!n1) return -1;
    const unsigned char *n2 = memchr(n1 + 1, 0, len - (size_t)(n1 + 1 - in));
    if (!n2 || memchr(n2 + 1, 0, len - (size_t)(n2 + 1 - in))) return -1;
    size_t zl = (size_t)(n1 - in), cl = (size_t)(n2 - n1 - 1), pl = len - (size_t)(n2 + 1 - in);
    if (cl == 0 || pl == 0) return -1;
    if (!utf8_valid(in, zl) || !utf8_valid(n1 + 1, cl) || !utf8_valid(n2 + 1, pl)) return -1;
    char *z = zl ? strndup((const char *)in, zl) : NULL;
    char *c = strndup((const char *)n1 + 1, cl);
    char *p = strndup((const char *)n2 + 1, pl);
    if ((zl && !z) || !c || !p) {
        free(z);
        free(c);
        free(p);
        return -1;
    }
    *authzid = z;
    *authcid = c;
    *passwd = p;
    return 0;
}

/* ---- the SCRAM server ---- */

enum { ST_FIRST, ST_FINAL, ST_OK, ST_FAIL };

struct scram_server {
    scram_hash_t hash;
    int plus, server_supports_plus;
    scram_server_cb_t cb;
    void *ud;
    int state;
    char *test_snonce;
    char *gs2_header;            /* the client's gs2 header, up to and including its second ',' */
    unsigned char cb_data[SCRAM_MAX_CB_DATA];
    size_t cb_len;               /* with flag 'p' only */
    char *authzid, *username;
    char *client_first_bare, *server_first, *nonce;
    scram_creds_t creds;
    int user_known;
    unsigned fake_iterations;    /* what an unknown user's server-first shows */
    char *ssdp;                  /* XEP-0474: the advertised lists, hashed into "h=" */
};

scram_server_t *scram_server_new(scram_hash_t h, int plus, int server_supports_plus, const scram_server_cb_t *cb, void *ud)
{
    if (!scram_hash_len(h) || !cb || !cb->get_creds) return NULL;
    scram_server_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->hash = h;
    s->plus = !!plus;
    s->server_supports_plus = !!server_supports_plus;
    s->cb = *cb;
    s->ud = ud;
    s->state = ST_FIRST;
    s->fake_iterations = SCRAM_DEFAULT_ITERATIONS;
    return s;
}

void scram_server_set_iterations(scram_server_t *s, unsigned iterations)
{
    if (s && iterations >= 1 && iterations <= INT_MAX) s->fake_iterations = iterations;
}

const char *scram_server_claimed_username(const scram_server_t *s)
{
    return s ? s->username : NULL;
}

void scram_server_free(scram_server_t *s)
{
    if (!s) return;
    free(s->test_snonce);
    free(s->gs2_header);
    free(s->authzid);
    free(s->username);
    free(s->client_first_bare);
    free(s->server_first);
    free(s->nonce);
    free(s->ssdp);
    OPENSSL_cleanse(s, sizeof *s);
    free(s);
}

const char *scram_server_username(const scram_server_t *s)
{
    return s && s->state == ST_OK ? s->username : NULL;
}

const char *scram_server_authzid(const scram_server_t *s)
{
    return s && s->state == ST_OK ? s->authzid : NULL;
}

/* printable = %x21-2B / %x2D-7E: what a nonce is made of. */
static int nonce_valid(const char *p, size_t n)
{
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x21 || p[i] > 0x7E || p[i] == ',') return 0;
    return 1;
}

int scram_memeq(const void *a, const void *b, size_t n) { return CRYPTO_memcmp(a, b, n) == 0; }

int scram_server_set_ssdp(scram_server_t *s, const char *advertised)
{
    if (!s || !advertised || s->state != ST_FIRST) return -1;
    char *d = strdup(advertised);
    if (!d) return -1;
    free(s->ssdp);
    s->ssdp = d;
    return 0;
}

int scram_server_set_nonce_for_test(scram_server_t *s, const char *snonce)
{
    if (!s || !snonce || s->state != ST_FIRST) return -1;
    size_t n = strlen(snonce);
    if (n > TEST_NONCE_MAX || !nonce_valid(snonce, n)) return -1;
    char *d = strdup(snonce);
    if (!d) return -1;
    free(s->test_snonce);
    s->test_snonce = d;
    return 0;
}

/* saslname = 1*(value-safe-char / "=2C" / "=3D"), the field already cut at ','. Decodes into a
 * malloc'd string; -1 when empty, too long or badly escaped. */
static int saslname_decode(const char *p, size_t n, char **out)
{
    *out = NULL;
    if (n == 0 || n > MAX_FIELD) return -1;
    char *d = malloc(n + 1), *w = d;
    if (!d) return -1;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '=') {
            *w++ = p[i];
        } else if (i + 2 < n && p[i + 1] == '2' && p[i + 2] == 'C') {
            *w++ = ',';
            i += 2;
        } else if (i + 2 < n && p[i + 1] == '3' && p[i + 2] == 'D') {
            *w++ = '=';
            i += 2;
        } else {
            free(d);
            return -1;
        }
    }
    *w = '\0';
    *out = d;
    return 0;
}

/* attr-val = ALPHA "=" value, value = 1*value-char (anything but ',' and NUL: the message was
 * already checked for UTF-8 and NUL). */
static int attr_val_valid(const char *p, size_t n)
{
    return n >= 3 && ((p[0] >= 'a' && p[0] <= 'z') || (p[0] >= 'A' && p[0] <= 'Z')) && p[1] == '=';
}

/* Length of the field at p, up to the next ',' or the end. */
static size_t field_len(const char *p)
{
    const char *c = strchr(p, ',');
    return c ? (size_t)(c - p) : strlen(p);
}

static int cb_name_known(const char *p, size_t n)
{
    return (n == 12 && memcmp(p, "tls-exporter", 12) == 0) ||
           (n == 20 && memcmp(p, "tls-server-end-point", 20) == 0) ||
           (n == 10 && memcmp(p, "tls-unique", 10) == 0);   /* older clients (slixmpp 1.8) know only this */
}

/* cb-name = 1*(ALPHA / DIGIT / "." / "-") */
static int cb_name_valid(const char *p, size_t n)
{
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

/* Parses the gs2 header at the start of msg, checks the binding flag against the mechanism and
 * fetches the channel-binding data. Returns the failure condition or NULL; sets *bare. */
static const char *parse_gs2(scram_server_t *s, const char *msg, const char **bare)
{
    const char *p = msg;
    char flag = *p;
    const char *cbname = NULL;
    size_t cbn = 0;
    if (flag == 'n' || flag == 'y') {
        p++;
    } else if (flag == 'p' && p[1] == '=') {
        cbname = p + 2;
        cbn = field_len(cbname);
        if (!cb_name_valid(cbname, cbn)) return F_MALFORMED;
        p = cbname + cbn;
    } else {
        return F_MALFORMED;
    }
    if (*p++ != ',') return F_MALFORMED;
    if (p[0] == 'a' && p[1] == '=') {
        size_t n = field_len(p + 2);
        if (saslname_decode(p + 2, n, &s->authzid) < 0) return F_AUTHZID;
        p += 2 + n;
    }
    if (*p++ != ',') return F_MALFORMED;
    s->gs2_header = strndup(msg, (size_t)(p - msg));
    if (!s->gs2_header) return F_NOTAUTH;
    *bare = p;

    if (flag == 'p' && !s->plus) return F_MALFORMED;     /* binding on a non-PLUS mechanism */
    if (flag != 'p' && s->plus) return F_MALFORMED;      /* -PLUS chosen but no binding */
    if (flag == 'y' && s->server_supports_plus) return F_NOTAUTH;   /* downgrade (RFC 5802 §6) */
    if (flag == 'p') {
        char type[32];
        size_t len = sizeof s->cb_data;
        if (!cb_name_known(cbname, cbn) || !s->cb.get_cb_data) return F_NOTAUTH;
        memcpy(type, cbname, cbn);
        type[cbn] = '\0';
        if (s->cb.get_cb_data(s->ud, type, s->cb_data, &len) != 0 || len == 0 || len > sizeof s->cb_data)
            return F_NOTAUTH;
        s->cb_len = len;
    }
    return NULL;
}

/* Parses client-first-message-bare; stores it, the username and the client nonce (in s->nonce). */
static const char *parse_bare(scram_server_t *s, const char *bare)
{
    const char *p = bare;
    if (p[0] == 'm' && p[1] == '=') return F_MALFORMED;   /* mandatory extension we do not know */
    if (p[0] != 'n' || p[1] != '=') return F_MALFORMED;
    size_t n = field_len(p + 2);
    char *user = NULL;
    if (saslname_decode(p + 2, n, &user) < 0) return F_MALFORMED;
    p += 2 + n;
    if (p[0] != ',' || p[1] != 'r' || p[2] != '=') {
        free(user);
        return F_MALFORMED;
    }
    p += 3;
    n = field_len(p);
    if (!nonce_valid(p, n) || n > MAX_FIELD) {
        free(user);
        return F_MALFORMED;
    }
    s->nonce = strndup(p, n);
    p += n;
    while (*p == ',') {             /* optional extensions: ignored when well-formed */
        p++;
        size_t e = field_len(p);
        if (!attr_val_valid(p, e)) break;
        p += e;
    }
    if (*p != '\0' || p[-1] == ',' || !s->nonce) {
        free(user);
        return F_MALFORMED;
    }
    s->username = scram_saslprep(user);
    free(user);
    if (!s->username) return F_NOTAUTH;   /* no account can have this name */
    s->client_first_bare = strdup(bare);
    return s->client_first_bare ? NULL : F_NOTAUTH;
}

static int fake_secret_ok;
static unsigned char fake_secret[32];
static pthread_once_t fake_once = PTHREAD_ONCE_INIT;

static void fake_secret_init(void)
{
    fake_secret_ok = RAND_bytes(fake_secret, sizeof fake_secret) == 1;
}

int scram_fake_creds(scram_hash_t h, const char *username, unsigned iterations, scram_creds_t *out)
{
    unsigned char mac[32];
    memset(out, 0, sizeof *out);
    pthread_once(&fake_once, fake_secret_init);
    if (!fake_secret_ok || !username || !scram_hash_len(h) || iterations == 0 || iterations > INT_MAX) return -1;
    size_t ulen = strlen(username);
    unsigned char *msg = malloc(ulen + 1);
    if (!msg) return -1;
    msg[0] = (unsigned char)h;
    memcpy(msg + 1, username, ulen);
    int r = scram_hmac(SCRAM_SHA256, fake_secret, sizeof fake_secret, msg, ulen + 1, mac);
    free(msg);
    if (r < 0) return -1;
    out->hash = h;
    memcpy(out->salt, mac, SCRAM_SALT_LEN);
    out->salt_len = SCRAM_SALT_LEN;
    out->iterations = iterations;
    if (RAND_bytes(out->stored_key, sizeof out->stored_key) != 1 ||
        RAND_bytes(out->server_key, sizeof out->server_key) != 1) {
        OPENSSL_cleanse(out, sizeof *out);
        return -1;
    }
    return 0;
}

/* Creds for a user that does not exist (see scram_fake_creds). */
static int fake_creds(scram_server_t *s)
{
    return scram_fake_creds(s->hash, s->username, s->fake_iterations, &s->creds);
}

static char *concat3(const char *a, const char *b, const char *c)
{
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *d = malloc(la + lb + lc + 1);
    if (!d) return NULL;
    memcpy(d, a, la);
    memcpy(d + la, b, lb);
    memcpy(d + la + lb, c, lc + 1);
    return d;
}

/* client-first -> server-first. Returns the failure condition or NULL with *out set. */
static const char *client_first(scram_server_t *s, const char *msg, char **out)
{
    const char *bare = NULL, *f;
    if ((f = parse_gs2(s, msg, &bare)) || (f = parse_bare(s, bare))) return f;

    if (s->cb.get_creds(s->ud, s->username, s->hash, &s->creds) == 0) {
        if (!creds_sane(&s->creds, s->hash)) return F_NOTAUTH;
        s->user_known = 1;
    } else if (fake_creds(s) < 0) {
        return F_NOTAUTH;
    }

    char *snonce = NULL, *salt = NULL;
    if (s->test_snonce) {
        snonce = strdup(s->test_snonce);
    } else {
        unsigned char raw[SNONCE_RAW];
        if (RAND_bytes(raw, sizeof raw) != 1 || base64_encode(raw, sizeof raw, &snonce) < 0) snonce = NULL;
    }
    if (!snonce || base64_encode(s->creds.salt, s->creds.salt_len, &salt) < 0) {
        free(snonce);
        return F_NOTAUTH;
    }
    char *full = concat3(s->nonce, snonce, "");
    free(snonce);
    if (!full) {
        free(salt);
        return F_NOTAUTH;
    }
    free(s->nonce);
    s->nonce = full;
    /* XEP-0474 §6.1: the hash of what was advertised, signed by the proofs like the rest */
    char *ssdp = NULL;
    if (s->ssdp) {
        unsigned char d[SCRAM_MAX_KEY];
        if (scram_digest(s->hash, s->ssdp, strlen(s->ssdp), d) < 0 ||
            base64_encode(d, scram_hash_len(s->hash), &ssdp) < 0) {
            free(salt);
            return F_NOTAUTH;
        }
    }
    size_t need = strlen(full) + strlen(salt) + (ssdp ? strlen(ssdp) : 0) + 40;
    s->server_first = malloc(need);
    if (s->server_first)
        snprintf(s->server_first, need, "r=%s,s=%s,i=%u%s%s", full, salt, s->creds.iterations, ssdp ? ",h=" : "",
                 ssdp ? ssdp : "");
    free(salt);
    free(ssdp);
    if (!s->server_first) return F_NOTAUTH;
    *out = strdup(s->server_first);
    return *out ? NULL : F_NOTAUTH;
}

/* The expected c= value decoded: gs2 header followed by the binding data when flag was 'p'. */
static int cbind_matches(const scram_server_t *s, const unsigned char *got, size_t got_len)
{
    size_t hl = strlen(s->gs2_header);
    if (got_len != hl + s->cb_len) return 0;
    return CRYPTO_memcmp(got, s->gs2_header, hl) == 0 &&
           CRYPTO_memcmp(got + hl, s->cb_data, s->cb_len) == 0;
}

/* Verifies the proof over auth_message; on success writes the server-final into *out. */
static const char *verify_proof(scram_server_t *s, const char *auth_message, const unsigned char *proof, char **out)
{
    size_t hl = scram_hash_len(s->hash), al = strlen(auth_message);
    unsigned char sig[SCRAM_MAX_KEY], key[SCRAM_MAX_KEY], stored[SCRAM_MAX_KEY];
    const char *f = F_NOTAUTH;
    if (scram_hmac(s->hash, s->creds.stored_key, hl, auth_message, al, sig) < 0) goto done;
    for (size_t i = 0; i < hl; i++) key[i] = proof[i] ^ sig[i];
    if (scram_digest(s->hash, key, hl, stored) < 0) goto done;
    /* both tests always run, so an unknown user costs the same as a wrong password */
    int match = CRYPTO_memcmp(stored, s->creds.stored_key, hl) == 0;
    if (!(match & s->user_known)) goto done;
    char *b64 = NULL;
    if (scram_hmac(s->hash, s->creds.server_key, hl, auth_message, al, sig) < 0 ||
        base64_encode(sig, hl, &b64) < 0)
        goto done;
    *out = concat3("v=", b64, "");
    free(b64);
    if (*out) f = NULL;
done:
    OPENSSL_cleanse(sig, sizeof sig);
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(stored, sizeof stored);
    return f;
}

/* client-final -> server-final. msg: "c=..,r=..[,ext..],p=..". */
static const char *client_final(scram_server_t *s, char *msg, char **out)
{
    const char *p = msg, *f;
    if (p[0] != 'c' || p[1] != '=') return F_MALFORMED;
    size_t cn = field_len(p + 2);
    const char *cval = p + 2;
    p = cval + cn;
    if (p[0] != ',' || p[1] != 'r' || p[2] != '=') return F_MALFORMED;
    const char *rval = p + 3;
    size_t rn = field_len(rval);
    p = rval + rn;
    /* the proof is the last attribute; anything between r= and it must be attr-vals */
    char *last = strrchr(msg, ',');
    if (!last || last < p || last[1] != 'p' || last[2] != '=') return F_MALFORMED;
    while (p < last) {
        p++;
        size_t e = field_len(p);
        if (!attr_val_valid(p, e)) return F_MALFORMED;
        p += e;
    }
    const char *pval = last + 3;
    unsigned char *cb = NULL, *proof = NULL;
    size_t cbl, pl;
    if (base64_decode(cval, cn, &cb, &cbl) < 0) return F_MALFORMED;
    if (base64_decode(pval, strlen(pval), &proof, &pl) < 0 || pl != scram_hash_len(s->hash)) {
        f = F_MALFORMED;
    } else if (!cbind_matches(s, cb, cbl)) {
        f = F_NOTAUTH;                /* a different channel, or a tampered gs2 header */
    } else if (rn != strlen(s->nonce) || memcmp(rval, s->nonce, rn) != 0) {
        f = F_NOTAUTH;                /* not the nonce of this exchange: a replay */
    } else {
        *last = '\0';                 /* msg is now client-final-message-without-proof */
        char *am1 = concat3(s->client_first_bare, ",", s->server_first);
        char *am = am1 ? concat3(am1, ",", msg) : NULL;
        f = am ? verify_proof(s, am, proof, out) : F_NOTAUTH;
        free(am1);
        free(am);
    }
    free(cb);
    free(proof);
    return f;
}

scram_step_t scram_server_step(scram_server_t *s, const unsigned char *in, size_t len, char **out, size_t *outlen, const char **failure)
{
    const char *f = NULL;
    *out = NULL;
    if (outlen) *outlen = 0;
    *failure = NULL;
    if (!s || s->state == ST_OK || s->state == ST_FAIL) {
        f = F_MALFORMED;
    } else if (!in || len == 0 || len > SCRAM_MAX_MESSAGE || memchr(in, 0, len) || !utf8_valid(in, len)) {
        f = F_MALFORMED;
    } else {
        char *msg = strndup((const char *)in, len);
        if (!msg) f = F_NOTAUTH;
        else if (s->state == ST_FIRST) f = client_first(s, msg, out);
        else f = client_final(s, msg, out);
        free(msg);
    }
    if (f) {
        free(*out);
        *out = NULL;
        *failure = f;
        if (s) s->state = ST_FAIL;
        return SCRAM_FAIL;
    }
    if (outlen) *outlen = strlen(*out);
    if (s->state == ST_FIRST) {
        s->state = ST_FINAL;
        return SCRAM_CONTINUE;
    }
    s->state = ST_OK;
    return SCRAM_OK;
}
