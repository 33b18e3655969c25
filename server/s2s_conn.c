/* server/s2s_conn.c: what incoming and outgoing server-to-server streams share: the connection (bufferevent
 * I/O, TLS, parser, stream errors, freeing at a safe point), the core's entries, federation policy. */
#include "s2s_conn.h"
#include "dns.h"
#include "certcheck.h"
#include "flow.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>

#define READ_CHUNK 16384
#define CLOSE_FLUSH_SECONDS 5

static s2s_conn_t *conns;
static size_t nconns;

static void on_read(struct bufferevent *bev, void *arg);
static void on_write(struct bufferevent *bev, void *arg);
static void check_drained(s2s_conn_t *c);
static void on_event(struct bufferevent *bev, short what, void *arg);

/* ---- policy and helpers ---- */

int s2s_policy_allows(const char *domain, const char **why)
{
    const config_t *c = srv->cfg;
    if (c->fed_mode == FED_OFF) {
        *why = "federation is off";
        return 0;
    }
    if (host_find(domain) || component_find(domain)) {
        *why = "that is one of our own domains";
        return 0;
    }
    if (c->fed_mode == FED_ALLOWLIST && !config_partner(c, domain)) {
        *why = "not a partner (federation.mode allowlist)";
        return 0;
    }
    return 1;
}

const char *s2s_partner_ca(const char *domain)
{
    const cfg_partner_t *p = config_partner(srv->cfg, domain);
    return p ? p->ca : NULL;
}

const char *s2s_attr(const char **attrs, const char *name)
{
    for (size_t i = 0; attrs && attrs[i]; i += 2)
        if (strcmp(attrs[i], name) == 0) return attrs[i + 1];
    return NULL;
}

void s2s_stanza_to_client_ns(xnode_t *st)
{
    /* iterative pre-order walk; only descendants still in jabber:server change */
    xnode_t *n = st;
    while (n) {
        if (n->name && strcmp(n->ns, NS_SERVER) == 0) {
            free(n->ns);
            n->ns = xstrdup(NS_CLIENT);
        }
        if (n->name && n->children) {
            n = n->children;
            continue;
        }
        while (n && n != st && !n->next) n = n->parent;
        if (!n || n == st) break;
        n = n->next;
    }
}

/* ---- output ---- */

void s2s_conn_send_str(s2s_conn_t *c, const char *s)
{
    if (c->closing || c->freeing || !c->bev) return;
    bufferevent_write(c->bev, s, strlen(s));
    /* A peer that stops reading must not make us buffer without bound. With TLS the filter
     * encrypts into the socket's buffer at once: flow_output_queued counts both. */
    if (flow_output_queued(c->bev) > (size_t)srv->cfg->max_output_buffer) {
        log_info("s2s", "%s: output queue over %ld bytes (limits.max_output_buffer): the peer does not read, "
                 "dropping the connection", c->ip, srv->cfg->max_output_buffer);
        s2s_conn_abort(c, "the peer does not read (output queue over limits.max_output_buffer)");
    }
}

void s2s_conn_send(s2s_conn_t *c, const xnode_t *n)
{
    size_t len;
    char *buf = xnode_serialize(n, NS_SERVER, &len);
    if (!buf) {
        log_warn("s2s", "%s: cannot serialise an element, not sent", c->ip);
        return;
    }
    s2s_conn_send_str(c, buf);
    free(buf);
}

static void buf_append(char **buf, size_t *len, const char *s, size_t n)
{
    *buf = xrealloc(*buf, *len + n + 1);
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
}

void s2s_conn_send_prefixed(s2s_conn_t *c, const xnode_t *n)
{
    const char *prefix = strcmp(n->ns, NS_STREAMS) == 0 ? "stream:" : strcmp(n->ns, NS_DIALBACK) == 0 ? "db:" : NULL;
    for (char **a = n->attrs; prefix && a && *a; a += 2)
        if (strchr(a[0], ' ')) prefix = NULL;          /* a namespaced attribute: the serialiser's job */
    if (!prefix) {
        s2s_conn_send(c, n);
        return;
    }
    char *buf = NULL, *part;
    size_t len = 0, plen;
    int ok = 1;
    buf_append(&buf, &len, "<", 1);
    buf_append(&buf, &len, prefix, strlen(prefix));
    buf_append(&buf, &len, n->name, strlen(n->name));
    for (char **a = n->attrs; a && *a; a += 2) {
        if (!(part = xml_escape_attr(a[1], &plen))) ok = 0;
        char *at = xasprintf(" %s='%s'", a[0], part ? part : "");
        buf_append(&buf, &len, at, strlen(at));
        free(at);
        free(part);
    }
    buf_append(&buf, &len, n->children ? ">" : "/>", n->children ? 1 : 2);
    for (const xnode_t *ch = n->children; ch; ch = ch->next) {
        /* children as s2s_conn_send writes elements: jabber:server is the default namespace */
        part = ch->name ? xnode_serialize(ch, NS_SERVER, &plen) : xml_escape_attr(ch->text, &plen);
        if (!part) ok = 0;
        else buf_append(&buf, &len, part, plen);
        free(part);
    }
    if (n->children) {
        char *end = xasprintf("</%s%s>", prefix, n->name);
        buf_append(&buf, &len, end, strlen(end));
        free(end);
    }
    if (ok) s2s_conn_send_str(c, buf);
    else log_warn("s2s", "%s: cannot serialise an element, not sent", c->ip);
    free(buf);
}

void s2s_conn_header(s2s_conn_t *c, const char *from, const char *to, const char *id)
{
    char *f = from ? xml_escape_attr(from, NULL) : NULL, *t = to ? xml_escape_attr(to, NULL) : NULL;
    char *hdr = xasprintf("<?xml version='1.0'?><stream:stream xmlns='" NS_SERVER "' xmlns:stream='" NS_STREAMS
                          "' xmlns:db='" NS_DIALBACK "'%s%s%s%s%s%s%s%s%s version='1.0' xml:lang='en'>",
                          f ? " from='" : "", f ? f : "", f ? "'" : "", t ? " to='" : "", t ? t : "", t ? "'" : "",
                          id ? " id='" : "", id ? id : "", id ? "'" : "");
    s2s_conn_send_str(c, hdr);
    free(hdr);
    free(f);
    free(t);
    c->header_sent = 1;
}

/* ---- closing and freeing ---- */

static void on_free(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    s2s_conn_t *c = arg;
    if (c->next) c->next->prev = c->prev;
    if (c->prev) c->prev->next = c->next;
    else conns = c->next;
    nconns--;
    if (c->cb->gone) c->cb->gone(c);
    if (c->bev) bufferevent_free(c->bev);      /* closes the socket and frees the SSL it owns */
    if (!c->ssl_in_bev) tls_free_ssl(c->ssl);  /* made for STARTTLS that never started */
    tls_unref(c->tls);
    xstream_free(c->xs);
    flow_free(c->flow);                        /* after the bufferevent it limited */
    if (c->flush_timer) event_free(c->flush_timer);
    if (c->drain_ev) event_free(c->drain_ev);
    event_free(c->free_ev);
    free(c);
}

static void free_later(s2s_conn_t *c)
{
    if (c->freeing) return;
    c->freeing = 1;
    c->closing = 1;
    if (c->bev) bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    event_active(c->free_ev, 0, 0);
}

void s2s_conn_abort(s2s_conn_t *c, const char *why)
{
    if (c->freeing) return;
    if (why && !c->why[0]) snprintf(c->why, sizeof c->why, "%s", why);
    free_later(c);
}

static void on_flush_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    free_later(arg);
}

static int output_drained(s2s_conn_t *c) { return flow_output_queued(c->bev) == 0; }

void s2s_conn_close(s2s_conn_t *c, const char *condition, const char *text, const char *why)
{
    if (c->closing || c->freeing) return;
    if (why && !c->why[0]) snprintf(c->why, sizeof c->why, "%s", why);
    if (!c->bev || (c->outgoing && !c->header_sent)) {     /* nothing said yet: just go */
        free_later(c);
        return;
    }
    if (!c->header_sent) s2s_conn_header(c, NULL, NULL, NULL);
    if (condition) {
        log_info("s2s", "%s: stream error <%s/>%s%s", c->ip, condition, text ? ": " : "", text ? text : "");
        char *t = text ? xml_escape_attr(text, NULL) : NULL;
        char *err = xasprintf("<stream:error><%s xmlns='" NS_STREAM_ERRORS "'/>%s%s%s</stream:error>", condition,
                              t ? "<text xmlns='" NS_STREAM_ERRORS "'>" : "", t ? t : "", t ? "</text>" : "");
        s2s_conn_send_str(c, err);
        free(err);
        free(t);
    }
    s2s_conn_send_str(c, "</stream:stream>");
    if (c->freeing) return;
    c->closing = 1;
    bufferevent_disable(c->bev, EV_READ);
    struct timeval tv = {CLOSE_FLUSH_SECONDS, 0};      /* a peer that does not read: not for ever */
    c->flush_timer = evtimer_new(srv->base, on_flush_timeout, c);
    evtimer_add(c->flush_timer, &tv);
    check_drained(c);
}

/* ---- parser callbacks ---- */

static int x_open(void *ud, const char *ns_stream, const char *name, const char *content_ns, const char **attrs)
{
    s2s_conn_t *c = ud;
    if (c->closing) return -1;
    c->peer_header_seen = 1;
    return c->cb->stream_open(c, ns_stream, name, content_ns, attrs);
}

static int x_stanza(void *ud, xnode_t *el)
{
    s2s_conn_t *c = ud;
    if (c->closing) {
        xnode_free(el);
        return 1;
    }
    flow_take(c->flow);
    if (strcmp(el->ns, NS_STREAMS) == 0 && strcmp(el->name, "error") == 0) {
        xnode_t *cond = NULL;
        for (xnode_t *e = xnode_first_elem(el); e; e = xnode_next_elem(e))
            if (strcmp(e->ns, NS_STREAM_ERRORS) == 0 && strcmp(e->name, "text") != 0) cond = e;
        char why[128];
        snprintf(why, sizeof why, "stream error <%s/> from the peer", cond ? cond->name : "undefined-condition");
        log_info("s2s", "%s: %s", c->ip, why);
        xnode_free(el);
        s2s_conn_close(c, NULL, NULL, why);
        return 1;
    }
    int r = c->cb->stanza(c, el);
    return (r || c->closing || c->reset_pending || c->starttls_pending) ? 1 : 0;
}

static void x_close(void *ud)
{
    s2s_conn_close(ud, NULL, NULL, "closed by the peer");
}

static void x_error(void *ud, const char *condition, const char *text)
{
    s2s_conn_close(ud, condition, text, "XML error");
}

static const xstream_cb_t xml_cb = {x_open, x_stanza, x_close, x_error};

/* ---- I/O ---- */

static void start_tls_filter(s2s_conn_t *c, int accepting)
{
    struct bufferevent *tlsbev = bufferevent_openssl_filter_new(
        srv->base, c->bev, c->ssl, accepting ? BUFFEREVENT_SSL_ACCEPTING : BUFFEREVENT_SSL_CONNECTING,
        BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (!tlsbev) {
        s2s_conn_abort(c, "cannot start TLS");
        return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(tlsbev, 1);
    c->bev = tlsbev;
    c->ssl_in_bev = 1;
    c->tls_active = 1;
    c->tls_handshaking = !accepting;
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

void s2s_conn_start_tls_client(s2s_conn_t *c, struct ssl_st *ssl)
{
    c->ssl = ssl;
    c->tls = srv->tls;
    tls_ref(c->tls);
    start_tls_filter(c, 0);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    s2s_conn_t *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    char buf[READ_CHUNK];
    int n;
    while (!c->closing && !c->freeing && evbuffer_get_length(in) > 0) {
        size_t room = flow_room(c->flow, sizeof buf);
        if (!room) {                    /* out of stanza tokens: on_flow_resume goes on */
            flow_pause(c->flow, c->bev);
            return;
        }
        if ((n = evbuffer_remove(in, buf, room)) <= 0) break;
        xstream_feed(c->xs, buf, (size_t)n);
        if (c->reset_pending) {
            c->reset_pending = 0;
            xstream_reset(c->xs);
        }
        if (c->starttls_pending) {
            c->starttls_pending = 0;
            xstream_reset(c->xs);
            if (!c->tls) {
                c->tls = srv->tls;
                tls_ref(c->tls);
            }
            start_tls_filter(c, !c->outgoing);     /* bytes still queued belong to the handshake */
            return;
        }
    }
}

static void on_flow_resume(void *arg)
{
    s2s_conn_t *c = arg;
    if (c->closing || c->freeing) return;
    bufferevent_enable(c->bev, EV_READ);
    on_read(c->bev, c);                 /* bytes read before the pause wait in the input buffer */
}

static void on_drain_poll(evutil_socket_t fd, short what, void *arg);

/* A closing stream is freed once its output reached the socket. A TLS filter reports only that
 * its own buffer emptied, not the socket layer's below it: then look again shortly. */
static void check_drained(s2s_conn_t *c)
{
    if (!c->closing || c->freeing) return;
    if (output_drained(c)) {
        free_later(c);
        return;
    }
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        if (!c->drain_ev) c->drain_ev = evtimer_new(srv->base, on_drain_poll, c);
        struct timeval tv = {0, 20000};
        evtimer_add(c->drain_ev, &tv);
    }
}

static void on_drain_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    check_drained(arg);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    (void)bev;
    check_drained(arg);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    s2s_conn_t *c = arg;
    if (c->freeing) return;
    if (what & BEV_EVENT_CONNECTED) {
        if (c->tls_handshaking) {
            c->tls_handshaking = 0;
            if (c->cb->tls_up) c->cb->tls_up(c);
        } else if (c->cb->tcp_up) {
            c->cb->tcp_up(c);
        }
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
        char why[sizeof c->why];
        unsigned long tls_err = c->tls_active ? bufferevent_get_openssl_error(bev) : 0;
        if (what & BEV_EVENT_EOF) snprintf(why, sizeof why, "connection closed by the peer");
        else if (tls_err) snprintf(why, sizeof why, "TLS error: %s", tls_error_text(tls_err));
        else if (what & BEV_EVENT_TIMEOUT) snprintf(why, sizeof why, "time-out");
        else snprintf(why, sizeof why, "%s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        s2s_conn_abort(c, why);
    }
}

static s2s_conn_t *conn_new(const char *ip, const s2s_conn_cb_t *cb, void *owner, int outgoing)
{
    s2s_conn_t *c = xcalloc(1, sizeof *c);
    snprintf(c->ip, sizeof c->ip, "%s", ip);
    c->cb = cb;
    c->owner = owner;
    c->outgoing = outgoing != 0;
    c->free_ev = event_new(srv->base, -1, 0, on_free, c);
    xstream_limits_t lim = {(size_t)srv->cfg->max_stanza_size_preauth, 32, 32, 0};
    c->xs = xstream_new(&xml_cb, c, &lim);
    c->flow = flow_new(srv->base, on_flow_resume, c);
    c->next = conns;
    if (conns) conns->prev = c;
    conns = c;
    nconns++;
    return c;
}

/* XEP-0205 bytes per second, on the socket (before authentication: the _preauth rate). */
static void set_read_rate(s2s_conn_t *c, long per_second)
{
    if (c->bev && flow_set_bytes(c->flow, c->bev, per_second) < 0)
        log_warn("s2s", "%s: cannot set the read rate limit", c->ip);
}

void s2s_conn_authenticated_limits(s2s_conn_t *c)
{
    xstream_limits_t lim = {(size_t)srv->cfg->max_stanza_size, (size_t)srv->cfg->max_depth,
                            (size_t)srv->cfg->max_attributes, 0};
    xstream_set_limits(c->xs, &lim);
    set_read_rate(c, srv->cfg->max_bytes_per_second);
}

s2s_conn_t *s2s_conn_accept(int fd, const char *ip, struct ssl_st *ssl, const s2s_conn_cb_t *cb, void *owner)
{
    s2s_conn_t *c = conn_new(ip, cb, owner, 0);
    if (ssl) {
        c->ssl = ssl;
        c->tls = srv->tls;
        tls_ref(c->tls);
        /* TLS as a filter over a socket bufferevent, as after STARTTLS and in c2s.c: the read rate
         * limit then applies to the socket (an openssl socket bufferevent paused by a rate limit
         * keeps the rest of a record inside SSL, and nothing wakes it up again) */
        struct bufferevent *sock = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
        c->bev = sock ? bufferevent_openssl_filter_new(srv->base, sock, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                       BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS)
                      : NULL;
        if (sock && !c->bev) {
            bufferevent_free(sock);     /* closes fd */
            fd = -1;
        }
        if (c->bev) {
            bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
            c->ssl_in_bev = 1;
        }
        c->tls_active = 1;
    } else {
        c->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    }
    if (!c->bev) {
        if (fd >= 0) close(fd);
        s2s_conn_abort(c, "cannot set up the connection");
        return c;
    }
    set_read_rate(c, srv->cfg->max_bytes_per_second_preauth);
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    return c;
}

s2s_conn_t *s2s_conn_connect(const struct sockaddr *addr, int addrlen, const s2s_conn_cb_t *cb, void *owner)
{
    char ip[INET6_ADDRSTRLEN + 10] = "?";
    char a[INET6_ADDRSTRLEN] = "?";
    if (addr->sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)addr)->sin6_addr, a, sizeof a);
        snprintf(ip, sizeof ip, "[%s]:%d", a, ntohs(((const struct sockaddr_in6 *)(const void *)addr)->sin6_port));
    } else {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)addr)->sin_addr, a, sizeof a);
        snprintf(ip, sizeof ip, "%s:%d", a, ntohs(((const struct sockaddr_in *)(const void *)addr)->sin_port));
    }
    struct bufferevent *bev = bufferevent_socket_new(srv->base, -1, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (!bev) return NULL;
    s2s_conn_t *c = conn_new(ip, cb, owner, 1);
    c->bev = bev;
    set_read_rate(c, srv->cfg->max_bytes_per_second_preauth);
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)addr, addrlen) < 0)
        s2s_conn_abort(c, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    return c;
}

/* ---- the core's entries, counting, freeing ---- */

static const s2s_local_t *local;     /* the router's entries (s2s_start) */

void s2s_deliver_remote(xnode_t *st, const char *authenticated_domain)
{
    if (local) local->from_remote(st, authenticated_domain);
    else xnode_free(st);
}

void s2s_deliver_bounce(xnode_t *st)
{
    if (local) local->route(st);
    else xnode_free(st);
}

void s2s_conn_set_local(const s2s_local_t *to_local) { local = to_local; }

size_t s2s_conn_count(void) { return nconns; }

void s2s_conn_free_all(void)
{
    while (conns) {
        s2s_conn_t *c = conns;
        if (!c->freeing) {
            c->freeing = 1;
            if (c->bev) bufferevent_disable(c->bev, EV_READ | EV_WRITE);
        }
        on_free(-1, 0, c);
    }
}
