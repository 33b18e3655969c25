/* server/tls.h: TLS for every stream, on OpenSSL: one context per served host chosen by SNI,
 * the Mozilla "intermediate" profile, channel-binding data for SCRAM -PLUS. */
#ifndef CIVITAS_TLS_H
#define CIVITAS_TLS_H
#include <stddef.h>
#include "config.h"

struct ssl_st;                  /* OpenSSL's SSL, opaque outside tls.c */
typedef struct tls tls_t;

/* Load the certificate and key of every host. On failure returns NULL and appends
 * "FILE:LINE: message" lines (the host's line in the config) to errors. */
tls_t *tls_new(const config_t *c, strlist_t *errors);
/* Reference counting: a stream holds its tls_t while its SSL exists, so a SIGHUP reload can
 * swap in new certificates without pulling them from under running handshakes. */
void tls_ref(tls_t *t);
void tls_unref(tls_t *t);       /* NULL ok */
/* A new server-side SSL object (accept state), referencing t. NULL on failure. */
struct ssl_st *tls_new_ssl(tls_t *t);
/* Server-side SSL for an incoming s2s stream: like tls_new_ssl, and asks for (does not require)
 * the peer's certificate, accepting any during the handshake (certcheck.h judges it later). */
struct ssl_st *tls_new_ssl_s2s(tls_t *t);
/* Client-side SSL for an outgoing s2s stream from local_domain (one of t's hosts): presents that
 * host's certificate (for SASL EXTERNAL, XEP-0178), sends SNI sni when it is ASCII, and accepts
 * any server certificate during the handshake (certcheck.h judges it after). NULL when
 * local_domain is not a host of t or the context cannot be made (logged). */
struct ssl_st *tls_new_client_ssl(tls_t *t, const char *local_domain, const char *sni);
/* Channel binding of an established connection: type "tls-exporter" (RFC 9266; TLS 1.3 or
 * extended master secret only), "tls-server-end-point" (RFC 5929) or "tls-unique" (RFC 5929,
 * for clients that know no other; see tls.c). 0 with data, -1 when
 * this connection cannot provide it. buf must hold 64 bytes. */
int tls_channel_binding(struct ssl_st *ssl, const char *type, unsigned char *buf, size_t *len);
/* 1 when tls-exporter is usable on this connection */
int tls_has_exporter(struct ssl_st *ssl);
const char *tls_version_name(struct ssl_st *ssl);
const char *tls_sni(struct ssl_st *ssl);   /* server name the client asked for, or NULL */
/* The last OpenSSL error as text, for logs. */
const char *tls_error_string(void);
/* An OpenSSL error code (e.g. from bufferevent_get_openssl_error) as text, in a static buffer. */
const char *tls_error_text(unsigned long e);
/* Free an SSL object that no bufferevent owns (NULL ok). */
void tls_free_ssl(struct ssl_st *ssl);

#endif
