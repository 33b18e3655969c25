/* server/http.c: the HTTP/1.1 server of listen.http / listen.https (see http.h for the API).
 * Parsing is Debian's libhttp-parser (nodejs http-parser 2.9.4), chosen over the alternatives:
 * it is a packaged shared library with a streaming callback interface (URL, header and body
 * chunks as bytes are read), which fits libevent bufferevents and lets request bodies go to disk
 * chunk by chunk; libevent's evhttp buffers whole bodies in memory (unusable for uploads) and
 * llhttp is only in Debian as sources inside node packages. http-parser enforces the RFC 7230
 * grammar, refuses Content-Length together with Transfer-Encoding (request smuggling) and bounds
 * the header size; upstream is in maintenance mode, Debian carries its security fixes. */
#define _GNU_SOURCE
#include "http.h"
#include "server.h"
#include "flow.h"
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/sockios.h>
#include <time.h>
#include <unistd.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <http_parser.h>

#define HTTP_DEFAULT_CSP "default-src 'none'; frame-ancestors 'none'"
#define HTTP_DISCARD_MAX 65536      /* body bytes thrown away for a handler that did not read them */
#define HTTP_WRITE_TIMEOUT 60
#define HTTP_FILE_CHUNK 262144      /* file bodies over TLS: read ahead of the connection this much */
#define HTTP_OUTPUT_MAX (4 * HTTP_FILE_CHUNK)   /* answers queued before pipelined requests wait */

typedef struct route {
    char *prefix;
    size_t len;
    http_handler_fn fn;
    void *arg;
    const module_ctx_t *owner;
} route_t;

static route_t *routes;
static size_t nroutes;

typedef struct hdr { char *name, *value; } hdr_t;

typedef struct http_conn http_conn_t;

struct http_request {
    http_conn_t *c;
    char method[24];
    char *url;                  /* accumulated request target */
    size_t url_len;
    char *raw_path, *path, *query;
    hdr_t *hdrs; size_t nhdrs, cap;
    char host[256];
    char client_ip[64];
    int https;
    int64_t content_length;
    int body_expected;          /* Content-Length > 0 or chunked */
    int head;
    int keep_alive;
    char *prefix;               /* the matched route's prefix */
    char *log_path;
    /* body */
    int reading;
    int (*on_data)(http_request_t *, const char *, size_t, void *);
    void (*on_end)(http_request_t *, void *);
    void *body_arg;
    size_t discarded;
    int complete;               /* the whole request (body included) was parsed */
    int end_pending;            /* on_end to be called from the loop */
    /* response */
    hdr_t *rh; size_t nrh, rcap;
    int responded;
    int status;
    void (*on_free)(http_request_t *, void *);
    void *free_arg;
    void *data;
    http_upgrade_fn upgrade;
    void *upgrade_arg;
};

enum { ST_HEADERS, ST_BODY, ST_WAIT, ST_IDLE, ST_CLOSING, ST_LINGER };
#define HTTP_LINGER_SECONDS 5     /* reading (and dropping) an unwanted body after an early answer */

struct http_conn {
    struct bufferevent *bev;
    struct ssl_st *ssl;
    tls_t *tls;
    int is_tls;
    char peer[64];              /* the socket's peer */
    int trusted;                /* peer is in http.trusted_proxies */
    http_parser parser;
    struct event *timer;
    int state;
    int got_bytes;              /* anything received since the last request */
    http_request_t *req;
    int last_was_value;         /* header parsing: the last callback was a value */
    size_t nheaders, header_bytes;
    int err_status;             /* a status the callbacks decided on (431, 400) */
    int stop;                   /* stop parsing: the request was answered and the rest is not read */
    int closing;                /* close once the output is written */
    int in_process;
    int again;
    int dead;
    int line_checked;           /* the current request's line passed check_request_line */
    int linger;                 /* answered before the body was read: drop what still comes for a while
                                   before closing, so that the client, still sending, reads the answer
                                   instead of a reset (nginx's lingering close) */
    int lingering;
    int out_blocked;            /* the next request waits until the client reads its answers */
    size_t idle_unsent;         /* ST_IDLE: answer bytes not yet sent when the timer was set */
    int64_t body_start_ms;      /* ST_BODY: when the headers were complete (monotonic) */
    uint64_t body_bytes;        /* ST_BODY: body bytes received so far */
    struct event *wake;         /* conn_process from the loop once the output drained (TLS) */
    int file_fd;                /* a file body being read into a TLS connection's output, or -1 */
    off_t file_off, file_left;
    http_conn_t *prev, *next;
};

static http_conn_t *conns;
static size_t nconns;
static strmap_t *per_ip;        /* ip_limit_key of the peer (an IPv6 /64 is one) -> count (intptr_t) */
static int port_plain = -1, port_tls = -1;
static http_parser_settings settings;

/* http.trusted_proxies, parsed */
typedef struct cidr { int family; unsigned char addr[16]; int bits; } cidr_t;
static cidr_t *proxies;
static size_t nproxies;

static void conn_process(http_conn_t *c);
static void conn_free(http_conn_t *c);
static void on_under_output(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg);

/* ---------------------------------------------------------------------------------------------- */
/* helpers                                                                                         */

const char *http_status_text(int s)
{
    switch (s) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    case 507: return "Insufficient Storage";
    default: return s < 200 ? "Informational" : s < 300 ? "OK" : s < 400 ? "Redirection" : s < 500 ? "Client Error" : "Server Error";
    }
}

static int parse_cidr(const char *s, cidr_t *out)
{
    char ip[64];
    const char *slash = strchr(s, '/');
    size_t il = slash ? (size_t)(slash - s) : strlen(s);
    if (il >= sizeof ip) return -1;
    memcpy(ip, s, il);
    ip[il] = '\0';
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, ip, out->addr) == 1) out->family = AF_INET, out->bits = 32;
    else if (inet_pton(AF_INET6, ip, out->addr) == 1) out->family = AF_INET6, out->bits = 128;
    else return -1;
    if (slash) {
        int b = atoi(slash + 1);
        if (b < 0 || b > out->bits) return -1;
        out->bits = b;
    }
    return 0;
}

static int ip_trusted(const char *ip)
{
    unsigned char a[16];
    int fam;
    if (inet_pton(AF_INET, ip, a) == 1) fam = AF_INET;
    else if (inet_pton(AF_INET6, ip, a) == 1) fam = AF_INET6;
    else return 0;
    for (size_t i = 0; i < nproxies; i++) {
        const cidr_t *p = &proxies[i];
        if (p->family != fam) continue;
        int full = p->bits / 8, rest = p->bits % 8;
        if (memcmp(a, p->addr, (size_t)full) != 0) continue;
        if (rest && ((a[full] ^ p->addr[full]) & (0xff << (8 - rest)) & 0xff)) continue;
        return 1;
    }
    return 0;
}

static int valid_ip(const char *s)
{
    unsigned char a[16];
    return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

static const char *hdr_find(const hdr_t *h, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(h[i].name, name) == 0) return h[i].value;
    return NULL;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t') s++;
    size_t l = strlen(s);
    while (l && (s[l - 1] == ' ' || s[l - 1] == '\t')) s[--l] = '\0';
    return s;
}

/* The client's address: the socket's peer, or for a trusted proxy the right-most address of
 * X-Forwarded-For that is not itself a trusted proxy. */
static void find_client(http_request_t *r)
{
    http_conn_t *c = r->c;
    snprintf(r->client_ip, sizeof r->client_ip, "%s", c->peer);
    r->https = c->is_tls;
    if (!c->trusted) return;
    const char *xff = hdr_find(r->hdrs, r->nhdrs, "X-Forwarded-For");
    if (xff) {
        char *copy = xstrdup(xff);
        for (;;) {
            char *comma = strrchr(copy, ',');
            char *item = trim(comma ? comma + 1 : copy);
            if (!valid_ip(item)) break;
            snprintf(r->client_ip, sizeof r->client_ip, "%s", item);
            if (!ip_trusted(item) || !comma) break;
            *comma = '\0';
        }
        free(copy);
    }
    const char *proto = hdr_find(r->hdrs, r->nhdrs, "X-Forwarded-Proto");
    if (proto) r->https = strcasecmp(proto, "https") == 0;
}

static int is_tchar(int ch) { return ch > 0x20 && ch < 0x7f && !strchr("\"(),/:;<=>?@[\\]{}", ch); }

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Percent-decode; -1 on a bad escape or a NUL. */
static int pct_decode(const char *in, size_t len, char **out)
{
    char *o = xmalloc(len + 1), *w = o;
    for (size_t i = 0; i < len; i++) {
        if (in[i] == '%') {
            if (i + 2 >= len) {
                free(o);
                return -1;
            }
            int a = hexval((unsigned char)in[i + 1]), b = hexval((unsigned char)in[i + 2]);
            if (a < 0 || b < 0 || (a == 0 && b == 0)) { free(o); return -1; }
            *w++ = (char)(a * 16 + b);
            i += 2;
        } else {
            *w++ = in[i];
        }
    }
    *w = '\0';
    *out = o;
    return 0;
}

/* A path with a "." or ".." segment is refused (handlers never see one). */
static int has_dot_segment(const char *p)
{
    for (const char *s = p; (s = strchr(s, '/')); s++) {
        const char *seg = s + 1;
        if ((seg[0] == '.' && (seg[1] == '/' || seg[1] == '\0')) ||
            (seg[0] == '.' && seg[1] == '.' && (seg[2] == '/' || seg[2] == '\0')))
            return 1;
    }
    return 0;
}

static const route_t *route_find(const char *path)
{
    const route_t *best = NULL;
    for (size_t i = 0; i < nroutes; i++)
        if (strncmp(path, routes[i].prefix, routes[i].len) == 0 && (!best || routes[i].len > best->len))
            best = &routes[i];
    return best;
}

/* ---------------------------------------------------------------------------------------------- */
/* requests                                                                                        */

static void req_free(http_request_t *r)
{
    if (!r) return;
    if (r->on_free) {
        void (*fn)(http_request_t *, void *) = r->on_free;
        r->on_free = NULL;
        fn(r, r->free_arg);
    }
    for (size_t i = 0; i < r->nhdrs; i++) free(r->hdrs[i].name), free(r->hdrs[i].value);
    for (size_t i = 0; i < r->nrh; i++) free(r->rh[i].name), free(r->rh[i].value);
    free(r->hdrs);
    free(r->rh);
    free(r->url);
    free(r->raw_path);
    free(r->path);
    free(r->query);
    free(r->prefix);
    free(r->log_path);
    free(r);
}

/* Answer bytes not yet sent: queued here and in the socket's send queue (SIOCOUTQ). */
static size_t unsent(http_conn_t *c)
{
    size_t q = flow_output_queued(c->bev);
    int n = 0;
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    if (fd >= 0 && ioctl(fd, SIOCOUTQ, &n) == 0 && n > 0) q += (size_t)n;
    return q;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ST_BODY: milliseconds the body has left: request_timeout plus its bytes at http.min_body_rate. */
static int64_t body_time_left(const http_conn_t *c)
{
    const config_t *cfg = srv->cfg;
    int64_t allowed = (int64_t)cfg->http_request_timeout * 1000 +
                      (int64_t)(c->body_bytes * 1000 / (uint64_t)cfg->http_min_body_rate);
    return allowed - (mono_ms() - c->body_start_ms);
}

static void set_timer(http_conn_t *c, int state)
{
    c->state = state;
    evtimer_del(c->timer);
    const config_t *cfg = srv->cfg;
    struct timeval w = {HTTP_WRITE_TIMEOUT, 0};
    if (state == ST_HEADERS || state == ST_IDLE) {
        struct timeval tv = {state == ST_IDLE ? cfg->http_idle_timeout : cfg->http_request_timeout, 0};
        evtimer_add(c->timer, &tv);
        c->idle_unsent = state == ST_IDLE ? unsent(c) : 0;
        bufferevent_set_timeouts(c->bev, NULL, &w);
    } else if (state == ST_BODY) {
        struct timeval tv = {cfg->http_request_timeout, 0};
        bufferevent_set_timeouts(c->bev, &tv, &w);
        /* each pause is bounded by the read timeout, the whole body by http.min_body_rate: a body
         * trickled a byte at a time would otherwise hold the connection forever */
        c->body_start_ms = mono_ms();
        c->body_bytes = 0;
        if (cfg->http_min_body_rate > 0) evtimer_add(c->timer, &tv);
    } else {
        bufferevent_set_timeouts(c->bev, NULL, &w);
    }
}

static void access_log(http_request_t *r, int status, uint64_t bytes)
{
    const char *path = r->log_path;
    char buf[300];
    if (!path) {
        if (!r->prefix) path = "-";
        else if (r->path && strcmp(r->path, r->prefix) == 0) path = r->prefix;
        else {
            snprintf(buf, sizeof buf, "%s...", r->prefix);
            path = buf;
        }
    }
    log_info("http", "%s %s %s %d %llu", r->client_ip[0] ? r->client_ip : r->c->peer, r->method[0] ? r->method : "-",
             path, status, (unsigned long long)bytes);
}

static void http_date(char *buf, size_t len)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(buf, len, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* Status line and headers. clen < 0: no Content-Length. */
static void write_head(http_request_t *r, int status, const char *ctype, int64_t clen)
{
    http_conn_t *c = r->c;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    char date[64];
    http_date(date, sizeof date);
    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nDate: %s\r\n", status, http_status_text(status), date);
    if (ctype && !hdr_find(r->rh, r->nrh, "Content-Type")) evbuffer_add_printf(out, "Content-Type: %s\r\n", ctype);
    if (clen >= 0) evbuffer_add_printf(out, "Content-Length: %lld\r\n", (long long)clen);
    if (!hdr_find(r->rh, r->nrh, "X-Content-Type-Options")) evbuffer_add_printf(out, "X-Content-Type-Options: nosniff\r\n");
    if (!hdr_find(r->rh, r->nrh, "Content-Security-Policy"))
        evbuffer_add_printf(out, "Content-Security-Policy: %s\r\n", HTTP_DEFAULT_CSP);
    for (size_t i = 0; i < r->nrh; i++) evbuffer_add_printf(out, "%s: %s\r\n", r->rh[i].name, r->rh[i].value);
    if (status != 101) {
        if (!r->keep_alive) evbuffer_add_printf(out, "Connection: close\r\n");
        else if (c->parser.http_major == 1 && c->parser.http_minor == 0)
            evbuffer_add_printf(out, "Connection: keep-alive\r\n");
    }
    evbuffer_add(out, "\r\n", 2);
}

/* Decide whether the connection stays open after this response, before writing it. */
static void before_response(http_request_t *r)
{
    http_conn_t *c = r->c;
    r->responded = 1;
    if (srv->shutting_down) r->keep_alive = 0;
    /* a body not read to its end would be taken for the next request */
    if (!r->complete && r->body_expected && !r->reading) r->keep_alive = 0;
    if (!r->complete && r->body_expected) c->linger = 1;
    if (!r->complete && r->reading) r->keep_alive = 0;
    if (c->parser.upgrade && !r->upgrade) r->keep_alive = 0;
    if (!r->keep_alive) {
        c->closing = 1;
        c->stop = 1;
    }
}

static void after_response(http_request_t *r)
{
    http_conn_t *c = r->c;
    if (!c->in_process) conn_process(c);
}

void http_respond(http_request_t *r, int status, const char *content_type, const void *body, size_t len)
{
    if (!r || r->responded) return;
    before_response(r);
    int nobody = status < 200 || status == 204 || status == 304;
    write_head(r, status, nobody ? NULL : content_type, nobody ? -1 : (int64_t)len);
    if (!nobody && !r->head && len) bufferevent_write(r->c->bev, body, len);
    r->status = status;
    access_log(r, status, r->head || nobody ? 0 : len);
    after_response(r);
}

void http_respond_error(http_request_t *r, int status)
{
    char body[96];
    int n = snprintf(body, sizeof body, "%d %s\n", status, http_status_text(status));
    http_respond(r, status, "text/plain; charset=utf-8", body, (size_t)n);
}

/* Over TLS a file body is read in chunks as the connection drains (the write callback): an
 * evbuffer file segment would be copied into the TLS filter whole; without TLS sendfile serves it. */
static void feed_file(http_conn_t *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    while (c->file_fd >= 0 && evbuffer_get_length(out) < HTTP_FILE_CHUNK) {
        size_t n = c->file_left < 65536 ? (size_t)c->file_left : 65536;
        struct evbuffer_iovec v;
        ssize_t got = -1;
        if (evbuffer_reserve_space(out, (ev_ssize_t)n, &v, 1) == 1) {
            if (v.iov_len > n) v.iov_len = n;
            got = pread(c->file_fd, v.iov_base, v.iov_len, c->file_off);
            v.iov_len = got > 0 ? (size_t)got : 0;
            evbuffer_commit_space(out, &v, 1);
        }
        if (got <= 0) {                 /* the file shrank or failed: the response cannot be whole */
            log_warn("http", "%s: cannot read a file body", c->peer);
            close(c->file_fd);
            c->file_fd = -1;
            c->closing = c->stop = 1;
            c->linger = 0;
            return;
        }
        c->file_off += got;
        c->file_left -= got;
        if (c->file_left == 0) {
            close(c->file_fd);
            c->file_fd = -1;
        }
    }
}

void http_respond_file(http_request_t *r, int status, const char *content_type, int fd, off_t offset, off_t length)
{
    if (!r || r->responded) {
        if (fd >= 0) close(fd);
        return;
    }
    before_response(r);
    write_head(r, status, content_type, (int64_t)length);
    if (!r->head && length > 0 && r->c->is_tls) {
        http_conn_t *c = r->c;
        c->file_fd = fd;
        c->file_off = offset;
        c->file_left = length;
        bufferevent_setwatermark(c->bev, EV_WRITE, HTTP_FILE_CHUNK / 2, 0);
        feed_file(c);
    } else if (!r->head && length > 0) {
        if (evbuffer_add_file(bufferevent_get_output(r->c->bev), fd, offset, length) < 0) {
            close(fd);
            r->keep_alive = 0;
            r->c->closing = r->c->stop = 1;
        }
    } else {
        close(fd);
    }
    r->status = status;
    access_log(r, status, r->head ? 0 : (uint64_t)length);
    after_response(r);
}

void http_upgrade(http_request_t *r, http_upgrade_fn on_upgraded, void *arg)
{
    if (!r || r->responded) return;
    r->upgrade = on_upgraded;
    r->upgrade_arg = arg;
    r->keep_alive = 1;
    r->responded = 1;
    write_head(r, 101, NULL, -1);
    r->status = 101;
    access_log(r, 101, 0);
    r->c->stop = 1;             /* what follows belongs to the new protocol */
    after_response(r);
}

void http_add_header(http_request_t *r, const char *name, const char *value)
{
    if (!r || r->responded) return;
    /* no header injection: names are tokens, values have no CR/LF */
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("!#$%&'*+-.^_`|~", *p)) return;
    if (strpbrk(value, "\r\n")) return;
    for (size_t i = 0; i < r->nrh; i++)
        if (strcasecmp(r->rh[i].name, name) == 0) {
            free(r->rh[i].value);
            r->rh[i].value = xstrdup(value);
            return;
        }
    if (r->nrh == r->rcap) {
        r->rcap = r->rcap ? r->rcap * 2 : 8;
        r->rh = xrealloc(r->rh, r->rcap * sizeof *r->rh);
    }
    r->rh[r->nrh].name = xstrdup(name);
    r->rh[r->nrh].value = xstrdup(value);
    r->nrh++;
}

void http_read_body(http_request_t *r, int (*on_data)(http_request_t *, const char *, size_t, void *),
                    void (*on_end)(http_request_t *, void *), void *arg)
{
    if (!r || r->reading || r->responded) return;
    r->reading = 1;
    r->on_data = on_data;
    r->on_end = on_end;
    r->body_arg = arg;
    const char *expect = hdr_find(r->hdrs, r->nhdrs, "Expect");
    if (expect && strcasecmp(expect, "100-continue") == 0 && r->body_expected && !r->complete &&
        r->c->parser.http_minor >= 1)
        bufferevent_write(r->c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    if (r->complete) {
        r->end_pending = 1;
        if (!r->c->in_process) conn_process(r->c);
    }
}

const char *http_method(const http_request_t *r) { return r->method; }
const char *http_path(const http_request_t *r) { return r->path; }
const char *http_raw_path(const http_request_t *r) { return r->raw_path; }
const char *http_query(const http_request_t *r) { return r->query; }
const char *http_prefix(const http_request_t *r) { return r->prefix; }
const char *http_header(const http_request_t *r, const char *name) { return hdr_find(r->hdrs, r->nhdrs, name); }
size_t http_header_count(const http_request_t *r) { return r->nhdrs; }
int http_header_at(const http_request_t *r, size_t i, const char **name, const char **value)
{
    if (i >= r->nhdrs) return 0;
    *name = r->hdrs[i].name;
    *value = r->hdrs[i].value;
    return 1;
}
const char *http_host(const http_request_t *r) { return r->host; }
const char *http_peer_ip(const http_request_t *r) { return r->client_ip; }
int http_is_tls(const http_request_t *r) { return r->c->is_tls; }
const char *http_scheme(const http_request_t *r) { return r->https ? "https" : "http"; }
int64_t http_content_length(const http_request_t *r) { return r->content_length; }
void http_set_data(http_request_t *r, void *data) { r->data = data; }
void *http_data(const http_request_t *r) { return r->data; }
void http_request_on_free(http_request_t *r, void (*fn)(http_request_t *, void *), void *arg)
{
    r->on_free = fn;
    r->free_arg = arg;
}
void http_set_log_path(http_request_t *r, const char *path)
{
    free(r->log_path);
    r->log_path = xstrdup(path);
}

/* ---------------------------------------------------------------------------------------------- */
/* parser callbacks                                                                                */

static int cb_message_begin(http_parser *p)
{
    http_conn_t *c = p->data;
    req_free(c->req);
    c->req = xcalloc(1, sizeof *c->req);
    c->req->c = c;
    c->req->content_length = -1;
    c->last_was_value = 0;
    c->nheaders = c->header_bytes = 0;
    if (c->state != ST_HEADERS) set_timer(c, ST_HEADERS);
    return 0;
}

static int add_bytes(http_conn_t *c, size_t len)
{
    c->header_bytes += len;
    if (c->header_bytes > (size_t)srv->cfg->http_max_header_size) {
        c->err_status = 431;
        return -1;
    }
    return 0;
}

static void append(char **s, size_t *len, const char *at, size_t n)
{
    *s = xrealloc(*s, *len + n + 1);
    memcpy(*s + *len, at, n);
    *len += n;
    (*s)[*len] = '\0';
}

static int cb_url(http_parser *p, const char *at, size_t len)
{
    http_conn_t *c = p->data;
    if (add_bytes(c, len) < 0) {
        c->err_status = 414;
        return -1;
    }
    append(&c->req->url, &c->req->url_len, at, len);
    return 0;
}

static int cb_header_field(http_parser *p, const char *at, size_t len)
{
    http_conn_t *c = p->data;
    http_request_t *r = c->req;
    if (add_bytes(c, len) < 0) return -1;
    if (c->last_was_value || r->nhdrs == 0) {
        if (++c->nheaders > (size_t)srv->cfg->http_max_headers) {
            c->err_status = 431;
            return -1;
        }
        if (r->nhdrs == r->cap) {
            r->cap = r->cap ? r->cap * 2 : 16;
            r->hdrs = xrealloc(r->hdrs, r->cap * sizeof *r->hdrs);
        }
        r->hdrs[r->nhdrs].name = xstrdup("");
        r->hdrs[r->nhdrs].value = xstrdup("");
        r->nhdrs++;
    }
    c->last_was_value = 0;
    hdr_t *h = &r->hdrs[r->nhdrs - 1];
    size_t l = strlen(h->name);
    append(&h->name, &l, at, len);
    return 0;
}

static int cb_header_value(http_parser *p, const char *at, size_t len)
{
    http_conn_t *c = p->data;
    http_request_t *r = c->req;
    if (add_bytes(c, len) < 0) return -1;
    if (r->nhdrs == 0) return -1;
    c->last_was_value = 1;
    hdr_t *h = &r->hdrs[r->nhdrs - 1];
    size_t l = strlen(h->value);
    append(&h->value, &l, at, len);
    if (memchr(h->value, '\0', l)) {
        c->err_status = 400;
        return -1;
    }
    return 0;
}

/* Repeated headers become one, joined with ", " (RFC 9110 §5.3); Host and Content-Length must not
 * repeat (checked by http-parser for Content-Length; here for Host). */
static int merge_headers(http_request_t *r)
{
    size_t n = 0;
    for (size_t i = 0; i < r->nhdrs; i++) {     /* field-name = token (RFC 9110 §5.1): no spaces */
        const char *name = r->hdrs[i].name;
        if (!*name) return -1;
        for (const char *q = name; *q; q++)
            if (!is_tchar((unsigned char)*q)) return -1;
    }
    int hosts = 0;
    for (size_t i = 0; i < r->nhdrs; i++)
        if (strcasecmp(r->hdrs[i].name, "Host") == 0 && ++hosts > 1) return -1;
    for (size_t i = 0; i < r->nhdrs; i++) {
        hdr_t *h = &r->hdrs[i];
        size_t j;
        for (j = 0; j < n; j++)
            if (strcasecmp(r->hdrs[j].name, h->name) == 0) break;
        if (j < n) {
            char *v = xasprintf("%s, %s", r->hdrs[j].value, h->value);
            free(r->hdrs[j].value);
            r->hdrs[j].value = v;
            free(h->name);
            free(h->value);
        } else {
            r->hdrs[n++] = *h;
        }
    }
    r->nhdrs = n;
    return 0;
}

static int split_url(http_request_t *r)
{
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (!r->url || http_parser_parse_url(r->url, r->url_len, 0, &u) != 0) return -1;
    if (!(u.field_set & (1 << UF_PATH))) return -1;
    const char *ps = r->url + u.field_data[UF_PATH].off;
    size_t pl = u.field_data[UF_PATH].len;
    if (pl == 0 || ps[0] != '/') return -1;
    r->raw_path = xstrndup(ps, pl);
    if (pct_decode(ps, pl, &r->path) < 0) return -1;
    if (has_dot_segment(r->path)) return -1;
    if (u.field_set & (1 << UF_QUERY))
        r->query = xstrndup(r->url + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
    return 0;
}

static int set_host(http_request_t *r)
{
    const char *h = hdr_find(r->hdrs, r->nhdrs, "Host");
    if (!h) return r->c->parser.http_minor == 0 ? 0 : -1;     /* RFC 9112 §3.2: required in 1.1 */
    size_t l = strlen(h);
    if (h[0] == '[') {
        const char *e = strchr(h, ']');
        if (!e) return -1;
        l = (size_t)(e - h + 1);
    } else {
        const char *colon = strchr(h, ':');
        if (colon) l = (size_t)(colon - h);
    }
    if (l >= sizeof r->host) return -1;
    for (size_t i = 0; i < l; i++) {
        unsigned char ch = (unsigned char)h[i];
        if (!isalnum(ch) && !strchr(".-_[]:", ch)) return -1;
        r->host[i] = (char)tolower(ch);
    }
    r->host[l] = '\0';
    while (l && r->host[l - 1] == '.') r->host[--l] = '\0';
    return 0;
}

static int cb_headers_complete(http_parser *p)
{
    http_conn_t *c = p->data;
    http_request_t *r = c->req;
    snprintf(r->method, sizeof r->method, "%s", http_method_str((enum http_method)p->method));
    r->head = p->method == HTTP_HEAD;
    r->keep_alive = http_should_keep_alive(p);
    r->body_expected = (p->flags & F_CHUNKED) || (p->content_length > 0 && p->content_length != UINT64_MAX);
    if (p->content_length != UINT64_MAX && !(p->flags & F_CHUNKED)) r->content_length = (int64_t)p->content_length;
    set_timer(c, ST_BODY);
    if (merge_headers(r) < 0 || set_host(r) < 0) {
        c->err_status = 400;
        return -1;
    }
    find_client(r);
    if (p->http_major != 1) {
        c->err_status = 505;
        return -1;
    }
    if (p->method == HTTP_CONNECT) {
        c->err_status = 501;
        return -1;
    }
    if (split_url(r) < 0) {
        c->err_status = 400;
        return -1;
    }
    const route_t *rt = route_find(r->path);
    if (!rt) {
        http_respond_error(r, 404);
        return 0;
    }
    r->prefix = xstrdup(rt->prefix);
    rt->fn(r, rt->arg);     /* may answer, read the body or upgrade */
    return 0;
}

static int cb_body(http_parser *p, const char *at, size_t len)
{
    http_conn_t *c = p->data;
    http_request_t *r = c->req;
    if (c->stop) return -1;
    c->body_bytes += len;
    if (r->reading && r->on_data) {
        if (r->on_data(r, at, len, r->body_arg) < 0) {
            if (!r->responded) http_respond_error(r, 500);
            c->stop = 1;
            return -1;
        }
        return 0;
    }
    r->discarded += len;
    if (r->discarded > HTTP_DISCARD_MAX) {
        if (!r->responded) http_respond_error(r, 413);
        c->stop = 1;
        return -1;
    }
    return 0;
}

static int cb_message_complete(http_parser *p)
{
    http_conn_t *c = p->data;
    http_request_t *r = c->req;
    if (!r) return -1;
    r->complete = 1;
    if (r->reading) r->end_pending = 1;
    /* one request at a time: the next is parsed once this one is answered */
    http_parser_pause(p, 1);
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* connections                                                                                     */

/* An error the core answers itself, then closes. */
static void fail(http_conn_t *c, int status)
{
    if (!c->req) {
        c->req = xcalloc(1, sizeof *c->req);
        c->req->c = c;
    }
    http_request_t *r = c->req;
    if (!r->client_ip[0]) snprintf(r->client_ip, sizeof r->client_ip, "%s", c->peer);
    if (!r->method[0] && c->parser.http_errno != HPE_INVALID_METHOD && c->header_bytes)
        snprintf(r->method, sizeof r->method, "%s", http_method_str((enum http_method)c->parser.method));
    r->keep_alive = 0;
    if (!r->responded) http_respond_error(r, status);
    c->closing = c->stop = 1;
}

static int status_for(http_conn_t *c)
{
    if (c->err_status) return c->err_status;
    switch (HTTP_PARSER_ERRNO(&c->parser)) {
    case HPE_HEADER_OVERFLOW: return c->nheaders == 0 ? 414 : 431;   /* still in the request line: 414 */
    case HPE_INVALID_METHOD: return 501;
    case HPE_INVALID_VERSION: return 505;
    default: return 400;
    }
}

static void handover(http_conn_t *c)
{
    http_request_t *r = c->req;
    http_upgraded_t u;
    memset(&u, 0, sizeof u);
    http_upgrade_fn fn = r->upgrade;
    void *arg = r->upgrade_arg;
    u.bev = c->bev;
    u.ssl = c->ssl;
    u.tls = c->tls;
    snprintf(u.peer_ip, sizeof u.peer_ip, "%s", r->client_ip);
    snprintf(u.host, sizeof u.host, "%s", r->host);
    struct bufferevent *under = bufferevent_get_underlying(c->bev);
    if (under) evbuffer_remove_cb(bufferevent_get_output(under), on_under_output, c);
    bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
    bufferevent_set_timeouts(c->bev, NULL, NULL);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->bev = NULL;
    c->ssl = NULL;
    c->tls = NULL;
    r->upgrade = NULL;
    conn_free(c);
    fn(&u, arg);
}

/* RFC 9112 §3: request-line = method SP request-target SP HTTP-version. Debian builds http-parser
 * without HTTP_PARSER_STRICT, which lets "HTXP/1.1" through; the line is checked here before the
 * parser sees it. 1: fine, 0: not complete yet, -1: answered with an error. */
static int check_request_line(http_conn_t *c, struct evbuffer *in)
{
    /* empty lines before a request are ignored (RFC 9112 §2.2) */
    for (;;) {
        unsigned char two[2];
        ev_ssize_t n = evbuffer_copyout(in, two, 2);
        if (n >= 1 && two[0] == '\n') evbuffer_drain(in, 1);
        else if (n == 2 && two[0] == '\r' && two[1] == '\n') evbuffer_drain(in, 2);
        else if (n == 1 && two[0] == '\r') return 0;
        else break;
    }
    size_t avail = evbuffer_get_length(in);
    if (avail == 0) return 0;
    c->got_bytes = 1;
    if (c->state == ST_IDLE) set_timer(c, ST_HEADERS);
    size_t eol_len = 0;
    struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF);
    if (p.pos < 0) {
        /* a control character can never start a request (a TLS ClientHello on the plain port) */
        unsigned char head[64];
        ev_ssize_t hn = evbuffer_copyout(in, head, sizeof head);
        for (ev_ssize_t k = 0; k < hn; k++)
            if (head[k] < 0x20 && head[k] != '\r' && head[k] != '\t') {
                fail(c, 400);
                return -1;
            }
        if (avail <= (size_t)srv->cfg->http_max_header_size) return 0;
        fail(c, 414);
        return -1;
    }
    if ((size_t)p.pos > (size_t)srv->cfg->http_max_header_size) {
        fail(c, 414);
        return -1;
    }
    const char *line = (const char *)evbuffer_pullup(in, p.pos);
    size_t len = (size_t)p.pos, i = 0;
    while (i < len && is_tchar((unsigned char)line[i])) i++;
    int ok = i > 0 && i < len && line[i] == ' ';
    size_t t0 = ++i;
    while (ok && i < len && (unsigned char)line[i] > 0x20 && line[i] != 0x7f) i++;
    ok = ok && i > t0 && i < len && line[i] == ' ';
    i++;
    if (ok && len - i == 8 && memcmp(line + i, "HTTP/", 5) == 0 && isdigit((unsigned char)line[i + 5]) &&
        line[i + 6] == '.' && isdigit((unsigned char)line[i + 7])) {
        if (line[i + 5] != '1') {
            fail(c, 505);
            return -1;
        }
        return 1;
    }
    fail(c, 400);
    return -1;
}

static void parse_input(http_conn_t *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (!c->stop && !c->closing) {
        if (!c->req && !c->line_checked) {
            int ok = check_request_line(c, in);
            if (ok <= 0) return;
            c->line_checked = 1;
        }
        if (HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED) {
            if (c->req) return;             /* still being answered */
            http_parser_pause(&c->parser, 0);
        }
        size_t avail = evbuffer_get_contiguous_space(in);
        if (avail == 0) return;
        c->got_bytes = 1;
        const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)avail);
        size_t n = http_parser_execute(&c->parser, &settings, data, avail);
        evbuffer_drain(in, n);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (c->dead) return;
        if (e == HPE_PAUSED) continue;
        if (e != HPE_OK) {
            if (!c->stop) fail(c, status_for(c));
            else if (c->req && !c->req->responded) fail(c, status_for(c));
            return;
        }
        if (c->parser.upgrade) return;      /* the message ended; what follows is another protocol */
    }
}

static void conn_process(http_conn_t *c)
{
    if (c->in_process) {
        c->again = 1;
        return;
    }
    c->in_process = 1;
    do {
        c->again = 0;
        http_request_t *r = c->req;
        if (r && r->end_pending) {
            r->end_pending = 0;
            if (r->on_end) r->on_end(r, r->body_arg);
            if (!r->responded) {
                /* the handler answers later */
            }
        }
        if (c->file_fd >= 0) break;         /* a file body is still being queued (feed_file) */
        r = c->req;
        if (r && r->upgrade && r->responded) {
            c->in_process = 0;
            handover(c);
            return;
        }
        if (r && r->responded && (r->complete || c->closing)) {
            c->req = NULL;
            c->line_checked = 0;
            req_free(r);
            if (!c->closing) set_timer(c, ST_IDLE);
        }
        if (c->closing) {
            if (c->req) {
                r = c->req;
                c->req = NULL;
                req_free(r);
            }
            struct evbuffer *in = bufferevent_get_input(c->bev);
            if (!c->linger) bufferevent_disable(c->bev, EV_READ);
            else evbuffer_drain(in, evbuffer_get_length(in));
            if (flow_output_queued(c->bev) == 0) {
                if (!c->linger) {
                    c->in_process = 0;
                    conn_free(c);
                    return;
                }
                if (!c->lingering) {
                    c->lingering = 1;
                    evtimer_del(c->timer);
                    c->state = ST_LINGER;
                    struct timeval tv = {HTTP_LINGER_SECONDS, 0};
                    evtimer_add(c->timer, &tv);
                    bufferevent_set_timeouts(c->bev, NULL, NULL);
                    if (!c->is_tls) shutdown(bufferevent_getfd(c->bev), SHUT_WR);  /* the answer is complete */
                }
            }
            break;
        }
        if (c->req && c->req->complete && !c->req->responded) {
            set_timer(c, ST_WAIT);
            bufferevent_disable(c->bev, EV_READ);       /* nothing more until this is answered */
            break;
        }
        if (!c->req && flow_output_queued(c->bev) > HTTP_OUTPUT_MAX) {
            /* a client that pipelines requests and does not read the answers: the next request
             * waits until it does, or the answers (file segments holding descriptors among them)
             * would pile up without bound */
            c->out_blocked = 1;
            bufferevent_disable(c->bev, EV_READ);
            break;
        }
        c->out_blocked = 0;
        bufferevent_enable(c->bev, EV_READ);
        if (!c->stop) parse_input(c);
        if (c->dead) break;
        r = c->req;
        if (r && (r->end_pending || (r->responded && (r->complete || c->closing || r->upgrade)))) c->again = 1;
        if (c->closing) c->again = 1;
    } while (c->again);
    c->in_process = 0;
    if (c->dead) conn_free(c);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    conn_process(arg);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    (void)bev;
    http_conn_t *c = arg;
    if (c->file_fd >= 0) {
        feed_file(c);
        if (c->file_fd >= 0) return;
        if (!c->in_process) conn_process(c);     /* the body is queued: the next request */
        return;
    }
    if ((c->closing || c->out_blocked) && !c->in_process) conn_process(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    http_conn_t *c = arg;
    if (what & BEV_EVENT_TIMEOUT) log_debug("http", "%s: timeout while %s", c->peer, what & BEV_EVENT_READING ? "reading" : "writing");
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
        if (c->in_process) c->dead = 1;
        else conn_free(c);
    }
}

/* Under a TLS filter: the socket's own output changed (the filter's write callback only says
 * that the plaintext went into TLS); a closing connection waits for it to be sent. */
static void on_under_output(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    http_conn_t *c = arg;
    if (info->n_deleted && c->out_blocked && !c->closing && flow_output_queued(c->bev) <= HTTP_OUTPUT_MAX)
        event_active(c->wake, 0, 0);        /* from the loop, not inside the buffer's callback */
    if (info->n_deleted && c->closing && !c->lingering && c->state != ST_CLOSING) {
        c->state = ST_CLOSING;
        evtimer_del(c->timer);
        struct timeval now = {0, 0};
        evtimer_add(c->timer, &now);        /* from the loop, not inside the buffer's callback */
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    http_conn_t *c = arg;
    if (c->out_blocked && !c->in_process) conn_process(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    http_conn_t *c = arg;
    if (c->state == ST_CLOSING) {
        c->state = ST_WAIT;
        conn_process(c);
        return;
    }
    if (c->state == ST_LINGER) {
        conn_free(c);
        return;
    }
    if (c->state == ST_HEADERS && c->got_bytes) {
        fail(c, 408);
        conn_process(c);
        return;
    }
    if (c->state == ST_BODY) {
        /* the state stays ST_BODY while a file answer goes out over TLS: a request without a body,
         * or whose body is all here, is not slow (its answer is bounded by the write timeout) */
        if (!c->req || c->req->complete || !c->req->body_expected) return;
        int64_t left = srv->cfg->http_min_body_rate > 0 ? body_time_left(c) : 1;
        if (left > 0) {           /* bytes came in the meantime: more time */
            struct timeval tv = {left / 1000, (left % 1000) * 1000};
            if (srv->cfg->http_min_body_rate > 0) evtimer_add(c->timer, &tv);
            return;
        }
        log_debug("http", "%s: a body slower than http.min_body_rate", c->peer);
        fail(c, 408);
        conn_process(c);
        return;
    }
    size_t left = c->state == ST_IDLE && c->bev ? unsent(c) : 0;
    if (left && left < c->idle_unsent) {
        /* not idle: the last answer is still being read (a large file, a slow client); closing
         * now would cut it. A client that reads nothing for a whole idle_timeout is closed. */
        c->idle_unsent = left;
        struct timeval tv = {srv->cfg->http_idle_timeout, 0};
        evtimer_add(c->timer, &tv);
        return;
    }
    conn_free(c);
}

static intptr_t ip_connections(const char *ip)
{
    char key[INET6_ADDRSTRLEN + 4];
    ip_limit_key(ip, key, sizeof key);
    return (intptr_t)strmap_get(per_ip, key);
}

static void ip_count(const char *ip, int d)
{
    char key[INET6_ADDRSTRLEN + 4];
    ip_limit_key(ip, key, sizeof key);
    intptr_t n = (intptr_t)strmap_get(per_ip, key) + d;
    if (n <= 0) strmap_del(per_ip, key);
    else strmap_put(per_ip, key, (void *)n);
}

static void conn_free(http_conn_t *c)
{
    if (c->in_process) {
        c->dead = 1;
        return;
    }
    if (c->req) {
        http_request_t *r = c->req;
        c->req = NULL;
        if (!r->responded) access_log(r, 0, 0);     /* status 0: the client went away */
        req_free(r);
    }
    if (c->prev) c->prev->next = c->next;
    else conns = c->next;
    if (c->next) c->next->prev = c->prev;
    nconns--;
    if (!c->trusted) ip_count(c->peer, -1);
    if (c->timer) event_free(c->timer);
    if (c->wake) event_free(c->wake);
    if (c->file_fd >= 0) close(c->file_fd);
    struct bufferevent *under = c->bev ? bufferevent_get_underlying(c->bev) : NULL;
    if (under) evbuffer_remove_cb(bufferevent_get_output(under), on_under_output, c);
    if (c->bev) bufferevent_free(c->bev);       /* closes the socket and frees the SSL */
    if (c->tls) tls_unref(c->tls);
    free(c);
}

void http_accept(int fd, const char *peer_ip, int tls)
{
    const config_t *cfg = srv->cfg;
    int trusted = ip_trusted(peer_ip);
    if (srv->shutting_down || nconns >= (size_t)cfg->http_max_connections ||
        (!trusted && ip_connections(peer_ip) >= cfg->http_max_connections_per_ip)) {
        log_info("http", "%s: connection refused (limits)", peer_ip);
        close(fd);
        return;
    }
    http_conn_t *c = xcalloc(1, sizeof *c);
    c->file_fd = -1;
    snprintf(c->peer, sizeof c->peer, "%s", peer_ip);
    c->trusted = trusted;
    evutil_make_socket_nonblocking(fd);
    if (tls) {
        c->ssl = tls_new_ssl(srv->tls);
        struct bufferevent *sock =
            c->ssl ? bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS) : NULL;
        c->bev = sock ? bufferevent_openssl_filter_new(srv->base, sock, c->ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                       BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS)
                      : NULL;
        if (!c->bev) {
            if (sock) bufferevent_free(sock);
            else close(fd);
            if (c->ssl) tls_free_ssl(c->ssl);
            free(c);
            log_warn("http", "%s: cannot set up TLS", peer_ip);
            return;
        }
        bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
        evbuffer_add_cb(bufferevent_get_output(sock), on_under_output, c);
        c->tls = srv->tls;
        tls_ref(c->tls);
        c->is_tls = 1;
    } else {
        c->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
        if (!c->bev) {
            close(fd);
            free(c);
            return;
        }
    }
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->timer = evtimer_new(srv->base, on_timer, c);
    c->wake = event_new(srv->base, -1, 0, on_wake, c);
    c->next = conns;
    if (conns) conns->prev = c;
    conns = c;
    nconns++;
    if (!trusted) ip_count(peer_ip, 1);
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    set_timer(c, ST_HEADERS);
}

size_t http_connection_count(void) { return nconns; }

void http_tls_unref(struct tls *t) { tls_unref(t); }

void http_close_all(void)
{
    for (http_conn_t *c = conns, *next; c; c = next) {
        next = c->next;
        if (!c->req && !c->in_process) conn_free(c);     /* idle: nothing is lost */
    }
}

void http_stop(void)
{
    while (conns) {
        conns->in_process = 0;
        conn_free(conns);
    }
    strmap_free(per_ip);
    per_ip = NULL;
    free(proxies);
    proxies = NULL;
    nproxies = 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* routes, start                                                                                   */

int module_add_http_handler(module_ctx_t *m, const char *prefix, http_handler_fn fn, void *arg)
{
    if (!prefix || prefix[0] != '/' || !fn) {
        log_error("http", "a handler's path prefix must start with '/'");
        return -1;
    }
    for (size_t i = 0; i < nroutes; i++)
        if (strcmp(routes[i].prefix, prefix) == 0) {
            log_error("http", "the path %s is already handled", prefix);
            return -1;
        }
    routes = xrealloc(routes, (nroutes + 1) * sizeof *routes);
    routes[nroutes] = (route_t){xstrdup(prefix), strlen(prefix), fn, arg, m};
    nroutes++;
    return 0;
}

void http_forget(const module_ctx_t *m)
{
    size_t n = 0;
    for (size_t i = 0; i < nroutes; i++) {
        if (!m || routes[i].owner == m) free(routes[i].prefix);
        else routes[n++] = routes[i];
    }
    nroutes = n;
    if (!n) {
        free(routes);
        routes = NULL;
    }
}

void http_note_port(int tls, int port)
{
    if (tls && port_tls < 0) port_tls = port;
    if (!tls && port_plain < 0) port_plain = port;
}

const char *http_public_url(void) { return srv->cfg->http_public_url; }

const char *http_base_url(const char *host)
{
    static char buf[600];
    const config_t *cfg = srv->cfg;
    if (cfg->http_public_url) {
        snprintf(buf, sizeof buf, "%s", cfg->http_public_url);
        return buf;
    }
    if (port_tls >= 0) snprintf(buf, sizeof buf, "https://%s:%d", host, port_tls);
    else if (port_plain >= 0) snprintf(buf, sizeof buf, "http://%s:%d", host, port_plain);
    else return NULL;
    return buf;
}

int http_start(void)
{
    const config_t *cfg = srv->cfg;
    http_parser_set_max_header_size((uint32_t)cfg->http_max_header_size);
    memset(&settings, 0, sizeof settings);
    settings.on_message_begin = cb_message_begin;
    settings.on_url = cb_url;
    settings.on_header_field = cb_header_field;
    settings.on_header_value = cb_header_value;
    settings.on_headers_complete = cb_headers_complete;
    settings.on_body = cb_body;
    settings.on_message_complete = cb_message_complete;
    if (!per_ip) per_ip = strmap_new();
    free(proxies);
    nproxies = 0;
    proxies = xcalloc(cfg->http_trusted_proxies.n + 1, sizeof *proxies);
    for (size_t i = 0; i < cfg->http_trusted_proxies.n; i++)
        if (parse_cidr(cfg->http_trusted_proxies.v[i], &proxies[nproxies]) == 0) nproxies++;
    return 0;
}
