/* server/tls.c: the one file that talks to OpenSSL's TLS API: contexts per host with SNI,
 * protocol and cipher policy, channel bindings. */
#define _GNU_SOURCE   /* vasprintf */
#include "tls.h"
#include "util.h"
#include "log.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509.h>

/* Mozilla "intermediate" (v5.7): TLS 1.2 and 1.3, forward-secret AEAD suites only. */
#define TLS12_CIPHERS "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:" \
    "ECDHE-RSA-CHACHA20-POLY1305:DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:" \
    "DHE-RSA-CHACHA20-POLY1305"
#define TLS_GROUPS "X25519:prime256v1:secp384r1"

typedef struct tls_host {
    char *name;
    SSL_CTX *ctx;
    SSL_CTX *client_ctx;        /* outgoing s2s from this host, made on first use */
    char *certificate, *key;    /* paths, for client_ctx */
} tls_host_t;

struct tls {
    int refs;
    tls_host_t *hosts; size_t nhosts;   /* hosts[0] is the default when SNI names none */
};

const char *tls_error_string(void)
{
    static char buf[256];
    unsigned long e = ERR_get_error();
    if (!e) return "unknown TLS error";
    ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return buf;
}

/* Append one formatted error line (strlist_add copies). */
static void add_err(strlist_t *errors, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_err(strlist_t *errors, const char *fmt, ...)
{
    va_list ap;
    char *s;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0) s = NULL;
    va_end(ap);
    if (s) strlist_add(errors, s);
    free(s);
}

const char *tls_error_text(unsigned long e)
{
    static char buf[256];
    if (!e) return "unknown TLS error";
    ERR_error_string_n(e, buf, sizeof buf);
    return buf;
}

void tls_free_ssl(struct ssl_st *ssl) { SSL_free(ssl); }

static int on_servername(SSL *ssl, int *al, void *arg)
{
    (void)al;
    tls_t *t = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name) return SSL_TLSEXT_ERR_OK;
    for (size_t i = 0; i < t->nhosts; i++)
        if (strcasecmp(t->hosts[i].name, name) == 0) {
            if (SSL_get_SSL_CTX(ssl) != t->hosts[i].ctx) SSL_set_SSL_CTX(ssl, t->hosts[i].ctx);
            return SSL_TLSEXT_ERR_OK;
        }
    return SSL_TLSEXT_ERR_OK;   /* unknown name: keep the default; the stream header decides */
}

static SSL_CTX *ctx_new(tls_t *t, const cfg_host_t *h, strlist_t *errors)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* no renegotiation (Prosody CVE-2021-32920), no compression (CRIME), small idle buffers */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* OpenSSL 3 refuses client-initiated renegotiation unless SSL_OP_ALLOW_CLIENT_RENEGOTIATION */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS);
    SSL_CTX_set1_groups_list(ctx, TLS_GROUPS);
    SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
    SSL_CTX_set_tlsext_servername_arg(ctx, t);
    if (SSL_CTX_use_certificate_chain_file(ctx, h->certificate) != 1) {
        add_err(errors, "%s:%d: hosts: %s: cannot load certificate %s: %s", h->file, h->certificate_line, h->name,
                                      h->certificate, tls_error_string());
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, h->key, SSL_FILETYPE_PEM) != 1) {
        add_err(errors, "%s:%d: hosts: %s: cannot load key %s: %s", h->file, h->key_line, h->name, h->key,
                                      tls_error_string());
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        add_err(errors, "%s:%d: hosts: %s: key %s does not match certificate %s", h->file, h->line,
                                      h->name, h->key, h->certificate);
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

tls_t *tls_new(const config_t *c, strlist_t *errors)
{
    tls_t *t = xcalloc(1, sizeof *t);
    t->refs = 1;
    t->hosts = xcalloc(c->nhosts, sizeof *t->hosts);
    int bad = 0;
    for (size_t i = 0; i < c->nhosts; i++) {
        const cfg_host_t *h = &c->hosts[i];
        if (!h->certificate || !h->key) {
            add_err(errors, "%s:%d: hosts: %s: tls certificate and key are required (clients must use TLS)",
                    h->file, h->line, h->name);
            bad = 1;
            continue;
        }
        SSL_CTX *ctx = ctx_new(t, h, errors);
        if (!ctx) {
            bad = 1;
            continue;
        }
        t->hosts[t->nhosts].name = xstrdup(h->name);
        t->hosts[t->nhosts].ctx = ctx;
        t->hosts[t->nhosts].certificate = xstrdup(h->certificate);
        t->hosts[t->nhosts].key = xstrdup(h->key);
        t->nhosts++;
    }
    if (bad || t->nhosts == 0) {
        tls_unref(t);
        return NULL;
    }
    return t;
}

void tls_ref(tls_t *t) { t->refs++; }

void tls_unref(tls_t *t)
{
    if (!t || --t->refs > 0) return;
    for (size_t i = 0; i < t->nhosts; i++) {
        SSL_CTX_free(t->hosts[i].ctx);
        SSL_CTX_free(t->hosts[i].client_ctx);
        free(t->hosts[i].name);
        free(t->hosts[i].certificate);
        free(t->hosts[i].key);
    }
    free(t->hosts);
    free(t);
}

struct ssl_st *tls_new_ssl(tls_t *t)
{
    SSL *ssl = SSL_new(t->hosts[0].ctx);
    return ssl;
}

/* Any certificate is accepted during the handshake: whether it is good for the peer's domain is
 * decided afterwards by certcheck, once the stream says which domain that is. */
static int accept_any_cert(int preverify_ok, X509_STORE_CTX *ctx)
{
    (void)preverify_ok; (void)ctx;
    return 1;
}

struct ssl_st *tls_new_ssl_s2s(tls_t *t)
{
    static const unsigned char sid_ctx[] = "civitas-s2s";
    SSL *ssl = SSL_new(t->hosts[0].ctx);
    if (!ssl) return NULL;
    /* ask for the peer's certificate (SASL EXTERNAL, XEP-0178); a session id context is required
     * when the server verifies peers, or resumption fails */
    SSL_set_verify(ssl, SSL_VERIFY_PEER, accept_any_cert);
    SSL_set_session_id_context(ssl, sid_ctx, sizeof sid_ctx - 1);
    return ssl;
}

static SSL_CTX *client_ctx_new(const tls_host_t *h)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS);
    SSL_CTX_set1_groups_list(ctx, TLS_GROUPS);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);     /* judged by certcheck after the handshake */
    if (SSL_CTX_use_certificate_chain_file(ctx, h->certificate) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, h->key, SSL_FILETYPE_PEM) != 1) {
        log_warn("tls", "%s: cannot load the certificate for outgoing streams: %s", h->name, tls_error_string());
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

struct ssl_st *tls_new_client_ssl(tls_t *t, const char *local_domain, const char *sni)
{
    tls_host_t *h = NULL;
    for (size_t i = 0; i < t->nhosts; i++)
        if (strcasecmp(t->hosts[i].name, local_domain) == 0) h = &t->hosts[i];
    if (!h) return NULL;
    if (!h->client_ctx) h->client_ctx = client_ctx_new(h);
    if (!h->client_ctx) return NULL;
    SSL *ssl = SSL_new(h->client_ctx);
    if (!ssl) return NULL;
    int ascii = sni != NULL;
    for (const char *c = sni; c && *c; c++)
        if ((unsigned char)*c >= 0x80) ascii = 0;
    if (ascii) SSL_set_tlsext_host_name(ssl, sni);     /* RFC 6066: host names in A-label form only */
    return ssl;
}

int tls_has_exporter(struct ssl_st *ssl)
{
    return SSL_version(ssl) == TLS1_3_VERSION || SSL_get_extms_support(ssl) == 1;
}

int tls_channel_binding(struct ssl_st *ssl, const char *type, unsigned char *buf, size_t *len)
{
    if (!SSL_is_init_finished(ssl)) return -1;
    if (strcmp(type, "tls-exporter") == 0) {
        if (!tls_has_exporter(ssl)) return -1;
        static const char label[] = "EXPORTER-Channel-Binding";
        if (SSL_export_keying_material(ssl, buf, 32, label, sizeof label - 1, NULL, 0, 0) != 1) return -1;
        *len = 32;
        return 0;
    }
    if (strcmp(type, "tls-unique") == 0) {
        /* RFC 5929 §3.1: the first Finished message of the latest handshake: the client's in a
         * full handshake, the server's in a resumed one. TLS 1.2 only with the extended master
         * secret (RFC 7627, against the triple-handshake attack). On TLS 1.3 it is not defined
         * (RFC 9266), but clients built on OpenSSL send the client Finished, which is bound to
         * the whole transcript; accepting it keeps such clients working with -PLUS. */
        if (SSL_version(ssl) != TLS1_3_VERSION && SSL_get_extms_support(ssl) != 1) return -1;
        size_t n = SSL_session_reused(ssl) ? SSL_get_finished(ssl, buf, 64) : SSL_get_peer_finished(ssl, buf, 64);
        if (n == 0 || n > 64) return -1;
        *len = n;
        return 0;
    }
    if (strcmp(type, "tls-server-end-point") == 0) {
        X509 *cert = SSL_get_certificate(ssl);
        int md_nid = NID_undef;
        if (!cert) return -1;
        /* RFC 5929 §4.1: the certificate's signature hash, but SHA-256 for MD5 and SHA-1 */
        if (!X509_get_signature_info(cert, &md_nid, NULL, NULL, NULL)) md_nid = NID_undef;
        const EVP_MD *md = (md_nid == NID_sha384) ? EVP_sha384() : (md_nid == NID_sha512) ? EVP_sha512() : EVP_sha256();
        unsigned int n = 0;
        if (X509_digest(cert, md, buf, &n) != 1) return -1;
        *len = n;
        return 0;
    }
    return -1;
}

const char *tls_version_name(struct ssl_st *ssl) { return ssl ? SSL_get_version(ssl) : "no TLS here"; }

const char *tls_sni(struct ssl_st *ssl) { return SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name); }
