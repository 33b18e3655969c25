/* server/websocket.c: XMPP over WebSocket (RFC 7395): the opening handshake and the WebSocket
 * transport of client sessions (session.h's vtable). Frames are read and written by Debian's
 * libwslay (a frame-only library: masking, fragmentation, control frames, close handshake,
 * message size limit) over the bufferevent the HTTP server hands over after 101; the stream itself
 * is c2s.c's (c2s_ws_new, c2s_ws_message). */
#define _GNU_SOURCE   /* POLLRDHUP */
#include "websocket.h"
#include "c2s.h"
#include "http.h"
#include "server.h"
#include "flow.h"
#include "tls.h"
#include <ctype.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <wslay/wslay.h>

#define WS_KEY "core.websocket"
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* A message that arrived while the stream could not take it (SASL back-off, stanza rate). */
typedef struct pending {
    struct pending *next;
    size_t len;
    char data[];
} pending_t;

typedef struct ws {
    wslay_event_context_ptr ctx;
    session_t *s;
    pending_t *head, *tail;
    int paused;                 /* the stream refused a message: read nothing until resume */
    uint16_t close_code;        /* status of our close frame (0: 1000) */
    struct event *idle;         /* keepalive: the ping after ping_interval, then the wait for data */
    int ping_out;               /* a ping went out and nothing came since */
} ws_t;

static long ping_interval, ping_timeout;   /* seconds; websocket_set_keepalive (mod_websocket) */

static ws_t *ws_of(const session_t *s) { return session_get_data(s, WS_KEY); }
static size_t ws_queued(const session_t *s);

/* ---- wslay callbacks ---- */

static ssize_t on_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud)
{
    (void)flags;
    ws_t *w = ud;
    session_t *s = w->s;
    int n = 0;
    if (!w->paused && s->state != C2S_CLOSING && !s->freeing && s->bev)
        n = evbuffer_remove(bufferevent_get_input(s->bev), buf, len);
    if (n <= 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    return n;
}

static ssize_t on_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *ud)
{
    (void)flags;
    ws_t *w = ud;
    if (!w->s->bev || bufferevent_write(w->s->bev, data, len) < 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

static void flush(ws_t *w)
{
    if (wslay_event_want_write(w->ctx)) wslay_event_send(w->ctx);
}

static void hold_message(ws_t *w, const uint8_t *msg, size_t len)
{
    pending_t *p = xmalloc(sizeof *p + len);
    p->next = NULL;
    p->len = len;
    memcpy(p->data, msg, len);
    if (w->tail) w->tail->next = p;
    else w->head = p;
    w->tail = p;
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *ud)
{
    (void)ctx;
    ws_t *w = ud;
    session_t *s = w->s;
    switch (arg->opcode) {
    case WSLAY_TEXT_FRAME:
        if (s->state == C2S_CLOSING || s->freeing) return;
        if (w->paused || w->head) hold_message(w, arg->msg, arg->msg_length);
        else if (c2s_ws_message(s, (const char *)arg->msg, arg->msg_length) == 1) {
            w->paused = 1;
            hold_message(w, arg->msg, arg->msg_length);
        }
        break;
    case WSLAY_BINARY_FRAME:
        /* RFC 7395 §3.2: text frames only; a binary one closes with 1003 (Unsupported Data) */
        log_info("c2s", "%s: WebSocket binary frame", s->ip);
        w->close_code = WSLAY_CODE_UNSUPPORTED_DATA;
        session_close(s, NULL, NULL);
        break;
    case WSLAY_CONNECTION_CLOSE:
        /* wslay answers the close frame itself; without <close/> first the stream just ends */
        if (s->state == C2S_CLOSING) session_free_later(s);
        else session_close(s, NULL, NULL);
        break;
    default:        /* ping (wslay sends the pong), pong */
        break;
    }
}

static const struct wslay_event_callbacks callbacks = {on_recv, on_send, NULL, NULL, NULL, NULL, on_msg};

/* Read what waits: messages held back first, then new frames. */
static void pump(session_t *s)
{
    ws_t *w = ws_of(s);
    if (!w) return;
    while (w->head && s->state != C2S_CLOSING && !s->freeing) {
        pending_t *p = w->head;
        if (c2s_ws_message(s, p->data, p->len) == 1) {
            w->paused = 1;
            return;
        }
        w->head = p->next;
        if (!w->head) w->tail = NULL;
        free(p);
    }
    w->paused = 0;
    /* a message is one element: at most the stream's stanza limit (plus room for the framing
     * element's own tags), which authentication raises */
    long max = s->authenticated ? srv->cfg->max_stanza_size : srv->cfg->max_stanza_size_preauth;
    wslay_event_config_set_max_recv_msg_length(w->ctx, (uint64_t)max + 4096);
    if (s->state != C2S_CLOSING && !s->freeing && wslay_event_recv(w->ctx) != 0) {
        /* a protocol error (wslay queued the close frame: 1002, 1007 or 1009) */
        log_info("c2s", "%s: WebSocket framing error", s->ip);
        flush(w);
        session_close(s, NULL, NULL);
        return;
    }
    /* a close frame came, or wslay stopped reading on a protocol error (an unmasked frame, a
     * message over the size limit: it queued the close frame with 1002 or 1009) */
    if ((wslay_event_get_close_received(w->ctx) || !wslay_event_get_read_enabled(w->ctx)) &&
        s->state != C2S_CLOSING)
        session_close(s, NULL, NULL);
    flush(w);
    /* the pongs wslay answers pings with bypass session_write: a client that sends pings and never
     * reads is held to the same output cap */
    if (!s->freeing && ws_queued(s) > (size_t)srv->cfg->max_output_buffer) {
        log_info("c2s", "%s: output queue over %ld bytes (WebSocket control frames), dropping the stream", s->ip,
                 srv->cfg->max_output_buffer);
        session_connection_lost(s);
    }
}

/* ---- keepalive (RFC 6455 §5.5.2: a Ping to an idle client; its Pong, or anything, answers) ---- */

static void arm_idle(ws_t *w, long secs)
{
    if (!w->idle || secs <= 0) return;
    struct timeval tv = {secs, 0};
    evtimer_add(w->idle, &tv);
}

static void on_idle(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    session_t *s = arg;
    ws_t *w = ws_of(s);
    if (!w || s->freeing || !s->bev) return;
    if (w->paused) {            /* we are not reading (the stream is full): a Pong could not arrive */
        w->ping_out = 0;
        arm_idle(w, ping_interval);
        return;
    }
    if (w->ping_out) {
        log_info("c2s", "%s: no answer to a WebSocket ping within %ld s, dropping the stream", s->ip, ping_timeout);
        session_connection_lost(s);
        return;
    }
    struct wslay_event_msg m = {WSLAY_PING, (const uint8_t *)"civitas", 7};
    if (wslay_event_queue_msg(w->ctx, &m) == 0) flush(w);
    w->ping_out = 1;
    arm_idle(w, ping_timeout);
}

/* ---- libevent callbacks ---- */

static void on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    ws_t *w = ws_of(arg);
    if (w && w->idle) {         /* the client is there: the next ping only after a quiet interval */
        w->ping_out = 0;
        arm_idle(w, ping_interval);
    }
    pump(arg);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    (void)bev;
    session_output_progress(arg);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    session_t *s = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) session_free_later(s);
}

/* ---- the transport (session.h) ---- */

static void ws_write(session_t *s, const char *data, size_t len)
{
    ws_t *w = ws_of(s);
    size_t i = 0;
    while (i < len && isspace((unsigned char)data[i])) i++;
    if (!w || i == len) return;     /* RFC 7395 §3.4: no whitespace between elements */
    struct wslay_event_msg m = {WSLAY_TEXT_FRAME, (const uint8_t *)data, len};
    if (wslay_event_queue_msg(w->ctx, &m) == 0) flush(w);
}

static size_t ws_queued(const session_t *s)
{
    ws_t *w = ws_of(s);
    return (s->bev ? flow_output_queued(s->bev) : 0) + (w ? wslay_event_get_queued_msg_length(w->ctx) : 0);
}

static void on_under_output(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    if (info->n_deleted) session_output_progress(arg);
}

static void ws_watch_output(session_t *s)
{
    struct bufferevent *under = s->bev ? bufferevent_get_underlying(s->bev) : NULL;
    if (under) evbuffer_add_cb(bufferevent_get_output(under), on_under_output, s);
}

static void ws_stop(session_t *s, int writing_too)
{
    ws_t *w = ws_of(s);
    if (s->bev) bufferevent_disable(s->bev, writing_too ? EV_READ | EV_WRITE : EV_READ);
    /* the stream ended (its <close/> is out): the close frame follows (RFC 7395 §3.6) */
    if (w && !writing_too && s->state == C2S_CLOSING && !wslay_event_get_close_sent(w->ctx)) {
        wslay_event_queue_close(w->ctx, w->close_code ? w->close_code : WSLAY_CODE_NORMAL_CLOSURE, NULL, 0);
        flush(w);
    }
}

static int ws_peer_gone(const session_t *s)
{
    struct bufferevent *under = s->bev ? bufferevent_get_underlying(s->bev) : NULL;
    evutil_socket_t fd = s->bev ? bufferevent_getfd(under ? under : s->bev) : -1;
    if (fd < 0) return 0;
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* Over listen.https the TLS under the WebSocket is the client's; behind a proxy there is none. */
static int ws_channel_binding(const session_t *s, const char *type, unsigned char *buf, size_t *len)
{
    if (!s->ssl) return -1;
    if (!buf) return strcmp(type, "tls-exporter") != 0 || tls_has_exporter(s->ssl) ? 0 : -1;
    return tls_channel_binding(s->ssl, type, buf, len);
}

static void ws_free(session_t *s)
{
    ws_t *w = ws_of(s);
    if (w) {
        if (w->idle) event_free(w->idle);
        wslay_event_context_free(w->ctx);
        while (w->head) {
            pending_t *p = w->head;
            w->head = p->next;
            free(p);
        }
        free(w);
    }
    if (s->bev) bufferevent_free(s->bev);    /* closes the socket and frees the SSL */
    s->bev = NULL;
    tls_unref(s->tls);
}

static void ws_resume(session_t *s)
{
    if (s->bev) bufferevent_enable(s->bev, EV_READ);
    pump(s);
}

static const session_transport_t ws_transport = {ws_write,     ws_queued,          ws_watch_output, ws_stop,
                                                 ws_peer_gone, ws_channel_binding, ws_free,         ws_resume};

/* A session over bev (which it takes); NULL when the limits refuse it (bev is then freed). */
static session_t *ws_session(struct bufferevent *bev, struct ssl_st *ssl, struct tls *tls, const char *ip)
{
    session_t *s = c2s_ws_new(ip, &ws_transport, bev);
    if (!s) {
        bufferevent_free(bev);
        tls_unref(tls);
        return NULL;
    }
    s->ssl = ssl;
    s->tls = tls;
    ws_t *w = xcalloc(1, sizeof *w);
    w->s = s;
    if (wslay_event_context_server_init(&w->ctx, &callbacks, w) != 0) abort();
    session_set_data(s, WS_KEY, w, NULL);       /* freed by ws_free */
    bufferevent_setcb(bev, on_read, on_write, on_event, s);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    if (ping_interval > 0) {
        w->idle = evtimer_new(srv->base, on_idle, s);
        arm_idle(w, ping_interval);
    }
    return s;
}

static void on_upgraded(http_upgraded_t *u, void *arg)
{
    (void)arg;
    session_t *s = ws_session(u->bev, u->ssl, u->tls, u->peer_ip);
    if (s && evbuffer_get_length(bufferevent_get_input(s->bev))) pump(s);
}

void websocket_set_keepalive(long interval, long timeout)
{
    ping_interval = interval;
    ping_timeout = timeout;
}

/* ---- the handshake (RFC 6455 §4.2.1, RFC 7395 §3.1) ---- */

/* 1 when the comma-separated list has token (case-insensitive). */
static int has_token(const char *list, const char *token)
{
    size_t tl = strlen(token);
    for (const char *p = list; p && *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        const char *e = p;
        while (*e && *e != ',') e++;
        const char *end = e;
        while (end > p && (end[-1] == ' ' || end[-1] == '\t')) end--;
        if ((size_t)(end - p) == tl && strncasecmp(p, token, tl) == 0) return 1;
        p = e;
    }
    return 0;
}

static int is_loopback(const char *ip)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, ip, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    return inet_pton(AF_INET6, ip, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

void websocket_accept_key(const char *key, char out[29])
{
    unsigned char md[SHA_DIGEST_LENGTH];
    char *in = xasprintf("%s" WS_GUID, key);
    SHA1((const unsigned char *)in, strlen(in), md);
    free(in);
    EVP_EncodeBlock((unsigned char *)out, md, sizeof md);
}

void websocket_handshake(http_request_t *r)
{
    if (strcmp(http_method(r), "GET") != 0) {
        http_add_header(r, "Allow", "GET");
        http_respond_error(r, 405);
        return;
    }
    const char *upgrade = http_header(r, "Upgrade"), *connection = http_header(r, "Connection");
    const char *key = http_header(r, "Sec-WebSocket-Key"), *version = http_header(r, "Sec-WebSocket-Version");
    const char *protocols = http_header(r, "Sec-WebSocket-Protocol");
    unsigned char raw[20];
    if (!upgrade || !has_token(upgrade, "websocket") || !connection || !has_token(connection, "upgrade") || !key ||
        strlen(key) != 24 || EVP_DecodeBlock(raw, (const unsigned char *)key, 24) != 18) {
        http_respond(r, 400, "text/plain; charset=utf-8", "400 Bad Request: a WebSocket handshake is expected\n", 51);
        return;
    }
    if (!version || strcmp(version, "13") != 0) {
        http_add_header(r, "Sec-WebSocket-Version", "13");
        http_respond_error(r, 426);
        return;
    }
    if (!protocols || !has_token(protocols, "xmpp")) {
        static const char msg[] = "400 Bad Request: the subprotocol must be xmpp (RFC 7395)\n";
        http_respond(r, 400, "text/plain; charset=utf-8", msg, sizeof msg - 1);
        return;
    }
    if (!http_is_tls(r) && strcmp(http_scheme(r), "https") != 0 && !is_loopback(http_peer_ip(r))) {
        static const char msg[] = "403 Forbidden: XMPP over WebSocket needs wss:// (or a trusted proxy)\n";
        http_respond(r, 403, "text/plain; charset=utf-8", msg, sizeof msg - 1);
        return;
    }
    char accept[29];
    websocket_accept_key(key, accept);
    http_add_header(r, "Upgrade", "websocket");
    http_add_header(r, "Connection", "Upgrade");
    http_add_header(r, "Sec-WebSocket-Accept", accept);
    http_add_header(r, "Sec-WebSocket-Protocol", "xmpp");
    http_upgrade(r, on_upgraded, NULL);
}

/* ---- fuzzing ---- */

void websocket_fuzz_input(const uint8_t *data, size_t len)
{
    struct bufferevent *pair[2];
    if (bufferevent_pair_new(srv->base, 0, pair) != 0) return;
    session_t *s = ws_session(pair[0], NULL, NULL, "192.0.2.1");
    if (!s) {
        bufferevent_free(pair[1]);
        return;
    }
    evbuffer_add(bufferevent_get_input(s->bev), data, len);
    pump(s);
    session_free_later(s);
    event_base_loop(srv->base, EVLOOP_NONBLOCK);
    bufferevent_free(pair[1]);
}
