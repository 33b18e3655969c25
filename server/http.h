/* server/http.h: the HTTP/1.1 server of listen.http and listen.https (RFC 9110, RFC 9112) for the
 * services XMPP clients reach over HTTP: file upload (XEP-0363, mod_upload), WebSocket (RFC 7395)
 * and host-meta (XEP-0156). Requests are parsed by Debian's libhttp-parser (the streaming parser of
 * nodejs, http-parser 2.9): request bodies arrive in chunks as they are read, so an upload goes to
 * disk without ever being held in memory (libevent's evhttp buffers whole bodies).
 *
 * A handler is registered for a path prefix (the longest registered prefix matching the request's
 * path wins) and is called once a request's headers are complete:
 *
 *   static void on_get(http_request_t *r, void *arg)
 *   {
 *       if (strcmp(http_method(r), "GET") != 0) { http_respond_error(r, 405); return; }
 *       http_add_header(r, "Cache-Control", "no-store");
 *       http_respond(r, 200, "text/plain; charset=utf-8", "hello\n", 6);
 *   }
 *   module_add_http_handler(m, "/hello", on_get, NULL);
 *
 * Lifetime of a request: r is valid from the handler's call until the request is finished: its
 * response was queued (http_respond*) and its body was read to the end or given up, or its
 * connection went away. Then the function set by http_request_on_free runs (once, always: the
 * place to close and remove a half-written file) and r is freed. A handler may answer later (from
 * a timer or an IQ result); until then the connection waits (no pipelined request is read).
 *
 * Body: a handler that wants the request body calls http_read_body from the handler; each chunk is
 * passed to on_data as it arrives (chunked transfer coding already decoded), then on_end once. A
 * handler that answers without reading the body (an error before the upload starts) makes the core
 * close the connection after the response (`Connection: close`), so nothing is read into a
 * following request. `Expect: 100-continue` is answered when http_read_body is called.
 *
 * Responses always carry X-Content-Type-Options: nosniff, a Content-Security-Policy (default
 * "default-src 'none'; frame-ancestors 'none'"; a handler's own header replaces it), Date and
 * Content-Length (except 1xx, 204, 304); to HEAD the body is left out. Malformed requests are
 * answered by the core with 400 (431 for headers over http.max_header_size or http.max_headers, 501
 * for an unknown method, 505 for an HTTP version other than 1.0/1.1, 408 when the headers do not
 * arrive within http.request_timeout) and the connection closed; a path without a handler gets 404.
 *
 * Upgrade (WebSocket): the handler checks the request (http_header(r, "Upgrade") etc.), adds its
 * response headers (Upgrade, Connection, Sec-WebSocket-Accept, ...) and calls http_upgrade. The core
 * writes "HTTP/1.1 101 Switching Protocols" with them and, from the event loop (never inside the
 * handler), gives the connection to on_upgraded: the bufferevent (TLS already on it for https),
 * with any bytes the client sent after the request still in its input buffer. From then on the
 * HTTP server has forgotten the connection.
 *
 * Access log: one info line per request, "http: <client ip> <METHOD> <path> <status> <bytes>",
 * without the query string, and with only the matched handler prefix followed by "..." when the
 * path is longer (paths may hold capabilities, as upload URLs do); http_set_log_path replaces it. */
#ifndef CIVITAS_HTTP_H
#define CIVITAS_HTTP_H
#include "api.h"
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct http_request http_request_t;
typedef struct module_ctx module_ctx_t;
struct bufferevent;
struct ssl_st;
struct tls;

typedef void (*http_handler_fn)(http_request_t *r, void *arg);

/* What on_upgraded receives; everything in it becomes the callee's. */
typedef struct http_upgraded {
    struct bufferevent *bev;    /* callbacks cleared, timeouts cleared, reading and writing enabled;
                                   freeing it closes the socket (and frees the SSL). Over https an
                                   OpenSSL filter over a socket bufferevent (bufferevent_get_underlying),
                                   as c2s has after STARTTLS, so read rate limits work the same */
    struct ssl_st *ssl;         /* the connection's SSL when over TLS (owned by bev), else NULL */
    struct tls *tls;            /* the tls_t ssl was made from, with a reference the callee drops
                                   (http_tls_unref) once bev is freed; NULL without TLS */
    char peer_ip[64];           /* the client's address (after http.trusted_proxies) */
    char host[256];             /* the request's Host without port, lowercased ("" when none) */
} http_upgraded_t;
typedef void (*http_upgrade_fn)(http_upgraded_t *u, void *arg);

CIVITAS_API_BEGIN
/* Handle every request whose path starts with prefix ("/upload/"; "/" catches all) for module m.
 * -1 (logged) when the prefix does not start with '/' or is taken. Removed when m is unloaded. */
int module_add_http_handler(module_ctx_t *m, const char *prefix, http_handler_fn fn, void *arg);

/* ---- the request ---- */
const char *http_method(const http_request_t *r);       /* "GET", "PUT", ... */
const char *http_path(const http_request_t *r);         /* percent-decoded path, without query;
                                                           never contains NUL */
const char *http_raw_path(const http_request_t *r);     /* the path as sent (not decoded) */
const char *http_query(const http_request_t *r);        /* after '?', or NULL */
const char *http_prefix(const http_request_t *r);       /* the handler's prefix that matched */
/* The value of header `name` (case-insensitive), or NULL; repeated headers are joined with ", ". */
const char *http_header(const http_request_t *r, const char *name);
size_t http_header_count(const http_request_t *r);
/* The i-th header as received (name, value); 0 past the end. */
int http_header_at(const http_request_t *r, size_t i, const char **name, const char **value);
const char *http_host(const http_request_t *r);         /* Host without port, lowercased, or "" */
const char *http_peer_ip(const http_request_t *r);      /* client address (after trusted proxies) */
int http_is_tls(const http_request_t *r);               /* 1 over listen.https */
/* "https" or "http": the scheme the client used (X-Forwarded-Proto from a trusted proxy counts). */
const char *http_scheme(const http_request_t *r);
/* Content-Length of the body, or -1 when absent (chunked or no body). */
int64_t http_content_length(const http_request_t *r);
/* Arbitrary data of the handler, kept with the request. */
void http_set_data(http_request_t *r, void *data);
void *http_data(const http_request_t *r);
/* Called once when r is finished or its connection goes away (see above); r is still readable. */
void http_request_on_free(http_request_t *r, void (*fn)(http_request_t *r, void *arg), void *arg);
/* Log this path in the access log instead of the default (prefix + "..."). */
void http_set_log_path(http_request_t *r, const char *path);

/* Read the body: on_data for each chunk (return 0 to go on; -1 to stop: the handler has answered,
 * or the core answers 500), then on_end (the handler answers there). Call from the handler or
 * before answering; at most once. A request without a body gets on_end at once (from the loop). */
void http_read_body(http_request_t *r, int (*on_data)(http_request_t *r, const char *data, size_t len, void *arg),
                    void (*on_end)(http_request_t *r, void *arg), void *arg);

/* ---- the response (once per request) ---- */
/* A response header, before http_respond*; a second call with the same name replaces the first. */
void http_add_header(http_request_t *r, const char *name, const char *value);
/* The whole response from memory (body may be NULL with len 0; content_type may be NULL). */
void http_respond(http_request_t *r, int status, const char *content_type, const void *body, size_t len);
/* A small text/plain body naming the status ("404 Not Found\n"). */
void http_respond_error(http_request_t *r, int status);
/* The body from length bytes of fd at offset; fd is taken (closed by the core in every case). */
void http_respond_file(http_request_t *r, int status, const char *content_type, int fd, off_t offset, off_t length);
/* Switch protocols (above): writes 101 with the headers added, then hands over the connection. */
void http_upgrade(http_request_t *r, http_upgrade_fn on_upgraded, void *arg);

/* The base URL clients reach this server's HTTP services at for XMPP host `host`
 * ("https://upload.kaarst.example:5281", no trailing slash), in a static buffer: http.public_url
 * when set, else https (or http without an https listener) with `host` and the first listener's
 * port. NULL without any HTTP listener. */
const char *http_base_url(const char *host);
/* http.public_url as configured, or NULL. */
const char *http_public_url(void);
const char *http_status_text(int status);
/* Drop the reference an upgraded connection held on its certificates (tls_unref; NULL ok). */
void http_tls_unref(struct tls *t);
CIVITAS_API_END

/* For the core (main.c, listen.c, module.c). */
struct config;
int http_start(void);                         /* after listen_start's sockets; 0/-1 */
void http_accept(int fd, const char *peer_ip, int tls);   /* a connection of listen.http(s) */
void http_note_port(int tls, int port);       /* listen.c: the port a listener got */
void http_close_all(void);                    /* SIGTERM: idle connections close, others finish */
void http_stop(void);                         /* after the loop: every connection closes */
size_t http_connection_count(void);
void http_forget(const module_ctx_t *m);      /* module.c: drop m's handlers; NULL: all */

#endif
