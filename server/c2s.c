/* server/c2s.c: client-to-server streams (RFC 6120): the state machine from the stream
 * header through STARTTLS, SASL (sasl.c) and resource binding to established, every stream error,
 * and the TCP/TLS transport of its sessions (session.h's vtable over libevent bufferevents). */
#define _GNU_SOURCE   /* POLLRDHUP */
#include "c2s.h"
#include "server.h"
#include "router.h"
#include "ip_limits.h"
#include "flow.h"
#include "stanza.h"
#include "sasl.h"
#include "sasl2.h"
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>

#define READ_CHUNK 16384

static void on_read(struct bufferevent *bev, void *arg);
static void on_write(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);
static int dispatch(session_t *s, xnode_t *el);
static void after_feed(session_t *s);

static const session_stream_t c2s_ws_stream;

/* The stream is framed by WebSocket (RFC 7395, websocket.c): each write is one message holding
 * one complete element, <open/> and <close/> stand for the stream's header and end. */
static int framed(const session_t *s) { return s->stream == &c2s_ws_stream; }

/* ---- output ---- */

static void send_header(session_t *s, const char *to_attr)
{
    if (framed(s)) {
        char *open = xasprintf("<open xmlns='" NS_FRAMING "' id='%s'%s%s%s%s%s%s version='1.0' xml:lang='en'/>", s->id,
                               s->host ? " from='" : "", s->host ? s->host->name : "", s->host ? "'" : "",
                               to_attr ? " to='" : "", to_attr ? to_attr : "", to_attr ? "'" : "");
        session_write_str(s, open);
        free(open);
        s->header_sent = 1;
        return;
    }
    char *hdr = xasprintf("<?xml version='1.0'?><stream:stream xmlns='" NS_CLIENT "' xmlns:stream='" NS_STREAMS
                          "' id='%s'%s%s%s%s%s%s version='1.0' xml:lang='en'>",
                          s->id, s->host ? " from='" : "", s->host ? s->host->name : "", s->host ? "'" : "",
                          to_attr ? " to='" : "", to_attr ? to_attr : "", to_attr ? "'" : "");
    session_write_str(s, hdr);
    free(hdr);
    s->header_sent = 1;
}

/* ---- the stream's end ---- */

static void iq_error(session_t *s, xnode_t *iq, const char *type, const char *cond);

/* The stream's end (session_close): our header if none went out yet, the stream error, the
 * closing tag. */
#define STREAM_ERROR_APP_KEY "stream-error.app"   /* module.h: SESSION_DATA_STREAM_ERROR_APP */

static void c2s_close(session_t *s, const char *condition, const char *text)
{
    if (!s->header_sent) send_header(s, NULL);
    if (condition) {
        log_info("c2s", "%s: stream error <%s/>%s%s", s->ip, condition, text ? ": " : "", text ? text : "");
        const char *app = session_get_data(s, STREAM_ERROR_APP_KEY);   /* RFC 6120 §4.9.4 */
        char *t = text ? xml_escape_attr(text, NULL) : NULL;           /* character data, never markup */
        char *err = xasprintf("<stream:error%s><%s xmlns='" NS_STREAM_ERRORS "'/>%s%s%s%s</stream:error>",
                              framed(s) ? " xmlns:stream='" NS_STREAMS "'" : "", condition, app ? app : "",
                              t ? "<text xmlns='" NS_STREAM_ERRORS "'>" : "", t ? t : "", t ? "</text>" : "");
        session_write_str(s, err);
        free(err);
        free(t);
    }
    session_write_str(s, framed(s) ? "<close xmlns='" NS_FRAMING "'/>" : "</stream:stream>");
}

/* The session is being freed: the stream's own state and its place in the limits. */
static void c2s_free(session_t *s)
{
    if (s->counted_unauth) srv->unauthenticated--;
    ip_uncount(s, ip_state_get(s->ip));
    ip_state_release(s->ip);
    xstream_free(s->xs);
    scram_server_free(s->scram);
    sasl_drop_sasl2(s);
    if (s->delay_ev) event_free(s->delay_ev);
    xnode_free(s->delayed);
    free(s->mech);
}

static const session_stream_t c2s_stream = {c2s_close, c2s_free, NS_CLIENT};
static const session_stream_t c2s_ws_stream = {c2s_close, c2s_free, NULL};

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    session_t *s = arg;
    session_close(s, "connection-timeout", NULL);
}

static void arm_timer(session_t *s, long seconds)
{
    if (s->timer) event_free(s->timer);
    s->timer = evtimer_new(srv->base, on_timeout, s);
    struct timeval tv = {seconds, 0};
    evtimer_add(s->timer, &tv);
}

/* ---- features ---- */

/* XEP-0077 §3.1 account creation before authentication is mod_register's: the core hands such
 * IQs to the "iq-<type>/preauth/<ns>" hooks and answers <service-unavailable/> when no module
 * takes them. Returns 1 when a handler took ownership of iq. */
static int handle_preauth_iq(session_t *s, xnode_t *iq)
{
    const char *type = xnode_attr(iq, "type");
    xnode_t *q = xnode_first_elem(iq);
    if (!type || (strcmp(type, "get") != 0 && strcmp(type, "set") != 0)) return 0;  /* never answered */
    char *name = xasprintf("iq-%s/preauth/%s", type, q->ns);
    hook_event_t ev = {.name = name, .stanza = iq, .origin = s, .host = s->host};
    int r = hook_fire(&ev);
    free(name);
    if (!ev.stanza) return 1;
    if (r != HOOK_HANDLED) iq_error(s, iq, "cancel", "service-unavailable");
    return 0;
}

static void send_features(session_t *s)
{
    xnode_t *f = xnode_new("features", NS_STREAMS);
    if (!s->tls_active) {
        xnode_t *st = xnode_add_elem(f, "starttls", NS_TLS);
        xnode_add_elem(st, "required", NULL);
    } else if (!s->authenticated) {
        sasl_add_mechanisms(s, f);
        sasl2_add_features(s, f);  /* XEP-0388 beside RFC 6120's: never one without the other */
        hook_event_t ev = {.name = "stream-features/preauth", .origin = s, .host = s->host, .features = f};
        hook_fire(&ev);     /* mod_register's <register/> (XEP-0077 §8) */
        sasl_add_channel_bindings(s, f);
    } else {
        if (!s->bound) {   /* bound already by XEP-0386 inside SASL2 */
            xnode_add_elem(f, "bind", NS_BIND);
            xnode_add_elem(xnode_add_elem(f, "session", NS_SESSION), "optional", NULL);
        }
        hook_event_t ev = {.name = "stream-features", .origin = s, .host = s->host, .features = f};
        hook_fire(&ev);
    }
    /* written with the stream: prefix, as some older clients expect (RFC 6120 §4.3.2); in one
     * write, as a WebSocket message holds one whole element (RFC 7395 §3.4: the prefix declared) */
    struct evbuffer *out = evbuffer_new();
    const char *start = framed(s) ? "<stream:features xmlns:stream='" NS_STREAMS "'>" : "<stream:features>";
    evbuffer_add(out, start, strlen(start));
    for (xnode_t *c = xnode_first_elem(f); c; c = xnode_next_elem(c)) {
        size_t len;
        char *one = xnode_serialize(c, s->stream->content_ns, &len);
        if (one) evbuffer_add(out, one, len);
        free(one);
    }
    evbuffer_add(out, "</stream:features>", 18);
    size_t n = evbuffer_get_length(out);
    session_write(s, (const char *)evbuffer_pullup(out, -1), n);
    evbuffer_free(out);
    xnode_free(f);
}

/* ---- stream header ---- */

static int on_stream_open(void *ud, const char *ns_stream, const char *name, const char *content_ns, const char **attrs)
{
    session_t *s = ud;
    const char *to = NULL, *version = NULL, *from = NULL;
    for (size_t i = 0; attrs && attrs[i]; i += 2) {
        if (strcmp(attrs[i], "to") == 0) to = attrs[i + 1];
        else if (strcmp(attrs[i], "version") == 0) version = attrs[i + 1];
        else if (strcmp(attrs[i], "from") == 0) from = attrs[i + 1];
    }
    random_hex(s->id, 16);
    if (to) {
        char *dom = jid_prep_domain(to);
        host_t *h = dom ? host_find(dom) : NULL;
        free(dom);
        if (s->host && h != s->host) h = NULL;       /* a restart may not switch domains */
        s->host = h;
    }
    /* RFC 6120 §4.7.2: echo 'from' as 'to' only if it is a valid JID */
    jid_t *fj = from ? jid_new(from) : NULL;
    char *to_attr = fj ? xml_escape_attr(fj->full, NULL) : NULL;   /* a resource may hold ' < & */
    send_header(s, to_attr);
    free(to_attr);
    jid_free(fj);
    if (strcmp(ns_stream, NS_STREAMS) != 0 || strcmp(name, "stream") != 0) {
        session_close(s, "invalid-namespace", NULL);
        return -1;
    }
    if (!content_ns || strcmp(content_ns, NS_CLIENT) != 0) {
        session_close(s, "invalid-namespace", NULL);
        return -1;
    }
    if (!to) {
        session_close(s, "host-unknown", NULL);
        return -1;
    }
    if (!s->host) {
        session_close(s, "host-unknown", NULL);
        return -1;
    }
    /* RFC 6120 §4.7.5: no version means 0.9, which we do not speak; a higher major is refused */
    if (!version || atoi(version) != 1) {
        session_close(s, "unsupported-version", NULL);
        return -1;
    }
    if (s->state == C2S_WAIT_HEADER) {
        s->state = C2S_OPEN;
        if (!s->authenticated) arm_timer(s, srv->cfg->auth_timeout);
    }
    send_features(s);
    return 0;
}

static void on_stream_close(void *ud)
{
    session_close(ud, NULL, NULL);
}

static void on_stream_error(void *ud, const char *condition, const char *text)
{
    session_close(ud, condition, text);
}

/* ---- STARTTLS ---- */

static int handle_starttls(session_t *s, xnode_t *el)
{
    if (s->tls_active || s->authenticated) {
        session_close(s, "policy-violation", "TLS is already established");
        return 1;
    }
    (void)el;
    s->ssl = tls_new_ssl(srv->tls);
    if (!s->ssl) {
        session_write_str(s, "<failure xmlns='" NS_TLS "'/>");
        session_close(s, NULL, NULL);
        return 1;
    }
    s->tls = srv->tls;
    tls_ref(s->tls);
    session_write_str(s, "<proceed xmlns='" NS_TLS "'/>");
    s->starttls_pending = 1;    /* the filter is put on after this feed returns */
    return 1;
}

static void start_tls_filter(session_t *s)
{
    struct bufferevent *tlsbev = bufferevent_openssl_filter_new(srv->base, s->bev, s->ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                                BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (!tlsbev) {
        session_free_later(s);
        return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(tlsbev, 1);
    s->bev = tlsbev;
    s->tls_active = 1;
    bufferevent_setcb(s->bev, on_read, on_write, on_event, s);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}

/* ---- XEP-0205 rate limits ---- */

/* The stream's flow control (flow.h: bytes per second on the socket, stanzas per second; reading
 * pauses, nothing is dropped). A legitimate burst (a reconnecting client's roster, presence and
 * queries) only waits instead of costing the user the stream and the stanzas in flight. The state
 * lives in the session's data list. */
#define RATE_KEY "c2s.rate"

static void rate_free(void *p) { flow_free(p); }   /* the transport is freed before the data */

static flow_t *rate_of(session_t *s) { return session_get_data(s, RATE_KEY); }

/* Set the read rate of the connection (before authentication and after). */
static void rate_set_bytes(session_t *s, long per_second)
{
    flow_t *r = rate_of(s);
    if (r && flow_set_bytes(r, s->bev, per_second) < 0) log_warn("c2s", "%s: cannot set the read rate limit", s->ip);
}

static size_t rate_room(session_t *s)
{
    flow_t *r = rate_of(s);
    return r ? flow_room(r, READ_CHUNK) : READ_CHUNK;
}

static void rate_take(session_t *s)
{
    flow_t *r = rate_of(s);
    if (r) flow_take(r);
}

static void on_rate_resume(void *arg)
{
    session_t *s = arg;
    /* a SASL back-off that also holds reading resumes it itself (on_delay_done) */
    if (s->state == C2S_CLOSING || s->freeing || s->delayed) return;
    s->transport->resume(s);            /* bytes read before the pause wait in the input buffer */
}

static void rate_pause(session_t *s) { flow_pause(rate_of(s), s->bev); }

static void rate_init(session_t *s)
{
    session_set_data(s, RATE_KEY, flow_new(srv->base, on_rate_resume, s), rate_free);
    rate_set_bytes(s, srv->cfg->max_bytes_per_second_preauth);
}

/* While a failure's answer is held back (s->delayed), nothing else the client sent is acted on:
 * reading stops, and what was already parsed from the same read (pipelined <auth/> elements, say)
 * waits here, in order, as children of a container node, until on_delay_done. */
#define HELD_KEY "c2s.held"

static void held_free(void *p) { xnode_free(p); }

static void hold(session_t *s, xnode_t *el)
{
    xnode_t *held = session_get_data(s, HELD_KEY);
    if (!held) {
        held = xnode_new("held", NULL);
        session_set_data(s, HELD_KEY, held, held_free);
    }
    xnode_add_child(held, el);
}

static void on_delay_done(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    session_t *s = arg;
    if (s->delayed) session_send(s, s->delayed);
    xnode_free(s->delayed);
    s->delayed = NULL;
    /* what was held, in order, until one of them is held back again or ends this stream */
    xnode_t *held = session_get_data(s, HELD_KEY);
    int stop = 0;
    while (held && held->children && !stop && !s->delayed && s->state == C2S_OPEN && !s->freeing) {
        xnode_t *el = held->children;
        xnode_unlink(el);
        stop = dispatch(s, el);
    }
    if (stop || s->state != C2S_OPEN) session_set_data(s, HELD_KEY, NULL, NULL);  /* the rest is void */
    if (s->state == C2S_CLOSING || s->freeing || s->delayed) return;
    if (s->reset_pending || s->starttls_pending) {
        /* the parser has read past the element that restarts the stream: start afresh, as
         * on_read does after a feed */
        after_feed(s);
        if (s->state == C2S_CLOSING || s->freeing || !s->bev) return;
    }
    s->transport->resume(s);    /* what the client sent meanwhile waits in the input buffer */
}

/* ---- SASL (sasl.c) ---- */

/* Authenticated: the timer of the unauthenticated stream goes, stanzas may now be as large as the
 * config allows, the read rate is the authenticated one, and the stream restarts. */
static void authenticated_limits(session_t *s)
{
    if (s->timer) {
        event_free(s->timer);
        s->timer = NULL;
    }
    xstream_limits_t lim = {(size_t)srv->cfg->max_stanza_size, (size_t)srv->cfg->max_depth,
                            (size_t)srv->cfg->max_attributes, 0};
    xstream_set_limits(s->xs, &lim);
    rate_set_bytes(s, srv->cfg->max_bytes_per_second);
}

static void authenticated(session_t *s)
{
    authenticated_limits(s);
    s->reset_pending = 1;
}


/* XEP-0388 §2.6.1: after SASL2's <success/> no restart, the authenticated features at once; then
 * "session-bound" when XEP-0386 bound the stream inside it. */
static void sasl2_element(session_t *s, xnode_t *el)
{
    int was = s->authenticated, was_bound = s->bound;
    sasl2_handle(s, el);
    if (was || !s->authenticated || s->state != C2S_OPEN || s->freeing) return;
    authenticated_limits(s);
    send_features(s);
    if (!was_bound && s->bound && !s->resumed) {    /* a resumption (XEP-0198 inline) binds no new session */
        hook_event_t ev = {.name = "session-bound", .origin = s, .host = s->host, .from = s->jid};
        hook_fire(&ev);
    }
}

static void sasl_element(session_t *s, xnode_t *el)
{
    int was = s->authenticated;
    sasl_handle(s, el);
    if (!was && s->authenticated) authenticated(s);
}

/* ---- bind and session ---- */

static void iq_error(session_t *s, xnode_t *iq, const char *type, const char *cond)
{
    xnode_t *e = stanza_error(iq, type, cond, NULL);
    if (!e) return;
    xnode_set_attr(e, "from", NULL);
    xnode_set_attr(e, "to", NULL);
    session_send(s, e);
    xnode_free(e);
}

static void handle_bind(session_t *s, xnode_t *iq, xnode_t *bind)
{
    xnode_t *res = xnode_child(bind, "resource", NS_BIND);
    char *want = res ? xnode_text(res) : NULL;
    char *resource = NULL;
    if (want && *want) {
        resource = jid_prep_resource(want);
        if (!resource) {
            free(want);
            iq_error(s, iq, "modify", "bad-request");
            return;
        }
    } else {
        char r[17];
        random_hex(r, 8);
        resource = xasprintf("civitas-%s", r);
    }
    free(want);
    int bad = session_bind_resource(s, resource) < 0;
    free(resource);
    if (bad) {
        iq_error(s, iq, "modify", "bad-request");
        return;
    }
    xnode_t *r = stanza_reply(iq);
    xnode_set_attr(r, "from", NULL);
    xnode_set_attr(r, "to", NULL);
    xnode_add_text(xnode_add_elem(xnode_add_elem(r, "bind", NS_BIND), "jid", NULL), s->jid->full);
    session_send(s, r);
    xnode_free(r);
    hook_event_t ev = {.name = "session-bound", .origin = s, .host = s->host, .from = s->jid};
    hook_fire(&ev);
}

/* Before binding only the bind (and legacy session) IQs are allowed. */
static void handle_prebind(session_t *s, xnode_t *st)
{
    const char *type = xnode_attr(st, "type");
    xnode_t *child = xnode_first_elem(st);
    if (strcmp(st->name, "iq") == 0 && type && strcmp(type, "set") == 0 && child &&
        strcmp(child->name, "bind") == 0 && strcmp(child->ns, NS_BIND) == 0) {
        handle_bind(s, st, child);
        return;
    }
    session_close(s, "not-authorized", "bind a resource first");
}

/* ---- stanzas ---- */

static int is_stanza(const xnode_t *el)
{
    return strcmp(el->ns, NS_CLIENT) == 0 &&
           (strcmp(el->name, "message") == 0 || strcmp(el->name, "presence") == 0 || strcmp(el->name, "iq") == 0);
}

static void handle_established(session_t *s, xnode_t *st)
{
    /* RFC 6120 §8.1.2.1: 'from' must be the session's full JID (or its bare JID); we stamp it */
    const char *from = xnode_attr(st, "from");
    if (from) {
        jid_t *fj = jid_new(from);
        int good = fj && (jid_equal(fj, s->jid) || (!fj->resource && jid_bare_equal(fj, s->jid)));
        jid_free(fj);
        if (!good) {
            session_close(s, "invalid-from", NULL);
            xnode_free(st);     /* we own it (found leaking by the sanitizer suite) */
            return;
        }
    }
    xnode_set_attr(st, "from", s->jid->full);
    /* RFC 3921 §3 session establishment: nothing to do any more, but old clients ask */
    xnode_t *child = xnode_first_elem(st);
    const char *type = xnode_attr(st, "type");
    const char *to = xnode_attr(st, "to");
    if (strcmp(st->name, "iq") == 0 && type && strcmp(type, "set") == 0 && child &&
        (!to || strcmp(to, s->host->name) == 0) &&
        strcmp(child->name, "session") == 0 && strcmp(child->ns, NS_SESSION) == 0) {
        xnode_t *r = stanza_reply(st);
        xnode_set_attr(r, "to", NULL);
        session_send(s, r);
        xnode_free(r);
        xnode_free(st);
        return;
    }
    router_from_client(s, st);
}

/* Elements parsed from the current WebSocket message (c2s_ws_message). */
static int ws_elements;

static int on_stanza(void *ud, xnode_t *el)
{
    session_t *s = ud;
    if (framed(s) && ++ws_elements > 1) {
        xnode_free(el);
        session_close(s, "not-well-formed", "a WebSocket message holds one element");
        return -1;
    }
    rate_take(s);
    if (s->state != C2S_OPEN) {
        xnode_free(el);
        return 1;
    }
    if (s->delayed) {           /* a SASL failure is held back: act on nothing before it is out */
        hold(s, el);
        return 0;
    }
    return dispatch(s, el);
}

/* Act on one element of the stream; takes ownership. 1 when the rest of the input must not be
 * acted on (closing, stream restart, STARTTLS), else 0. */
static int dispatch(session_t *s, xnode_t *el)
{
    if (framed(s) && strcmp(el->ns, NS_FRAMING) == 0) {
        /* RFC 7395 §3.6: <close/> ends the stream (answered with <close/>); an <open/> comes
         * only at the start or after a restart (c2s_ws_message) */
        if (strcmp(el->name, "close") == 0) session_close(s, NULL, NULL);
        else session_close(s, "bad-format", "<open/> inside an open stream");
        xnode_free(el);
        return 1;
    }
    if (!s->tls_active) {
        if (strcmp(el->name, "starttls") == 0 && strcmp(el->ns, NS_TLS) == 0) {
            int r = handle_starttls(s, el);
            xnode_free(el);
            return r;
        }
        if (strcmp(el->ns, NS_SASL) == 0 && strcmp(el->name, "auth") == 0) sasl_element(s, el);
        else if (is_stanza(el)) session_close(s, "not-authorized", "TLS and authentication are required");
        else session_close(s, "unsupported-stanza-type", NULL);
    } else if (!s->authenticated) {
        xnode_t *child = xnode_first_elem(el);
        if (strcmp(el->ns, NS_SASL) == 0) sasl_element(s, el);
        else if (strcmp(el->ns, NS_SASL2) == 0) sasl2_element(s, el);
        else if (strcmp(el->name, "iq") == 0 && strcmp(el->ns, NS_CLIENT) == 0 && child &&
                 strcmp(child->ns, "jabber:iq:register") == 0 && xnode_attr(el, "id")) {
            if (handle_preauth_iq(s, el)) el = NULL;
        }
        else if (strcmp(el->ns, NS_TLS) == 0) session_close(s, "policy-violation", "TLS is already established");
        else if (is_stanza(el)) session_close(s, "not-authorized", NULL);
        else session_close(s, "unsupported-stanza-type", NULL);
    } else if (!is_stanza(el)) {
        /* XEP-0198's <enable/>, <r/>, <a/>, <resume/>, CSI's <active/>: modules (session.h) */
        hook_event_t ev = {.name = "stream-element", .stanza = el, .origin = s, .host = s->host,
                           .from = s->bound ? s->jid : NULL};
        if (hook_fire(&ev) != HOOK_HANDLED && ev.stanza) session_close(s, "unsupported-stanza-type", NULL);
        el = ev.stanza;
    } else if (!s->bound) {
        handle_prebind(s, el);
    } else {
        if (s->taps) session_stanza_in(s, el);     /* XEP-0198 counts what the client sent */
        handle_established(s, el);     /* takes ownership */
        el = NULL;
    }
    xnode_free(el);
    return (s->state == C2S_CLOSING || s->reset_pending || s->starttls_pending) ? 1 : 0;
}

static const xstream_cb_t stream_cb = {on_stream_open, on_stanza, on_stream_close, on_stream_error};

/* A stream restart or STARTTLS asked for by the elements just acted on. */
static void after_feed(session_t *s)
{
    if (s->reset_pending) {
        s->reset_pending = 0;
        xstream_reset(s->xs);
        s->state = C2S_WAIT_HEADER;
    }
    if (s->starttls_pending) {
        s->starttls_pending = 0;
        xstream_reset(s->xs);
        s->state = C2S_WAIT_HEADER;
        start_tls_filter(s);    /* bytes still queued belong to the TLS handshake */
    }
}

/* ---- libevent callbacks ---- */

static void on_read(struct bufferevent *bev, void *arg)
{
    session_t *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    char buf[READ_CHUNK];
    int n;
    while (s->state != C2S_CLOSING && !s->freeing && evbuffer_get_length(in) > 0) {
        size_t room = rate_room(s);
        if (!room) {
            rate_pause(s);
            return;
        }
        if ((n = evbuffer_remove(in, buf, room < sizeof buf ? room : sizeof buf)) <= 0) break;
        xstream_feed(s->xs, buf, (size_t)n);
        if (s->starttls_pending) {
            after_feed(s);
            return;
        }
        after_feed(s);
        /* a SASL back-off disabled reading: keep the rest for later */
        if (!(bufferevent_get_enabled(s->bev) & EV_READ)) return;
    }
}

static void on_write(struct bufferevent *bev, void *arg)
{
    (void)bev;
    session_t *s = arg;
    session_output_progress(s);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    session_t *s = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        if (what & BEV_EVENT_ERROR) log_debug("c2s", "%s: connection error: %s", s->ip, tls_error_string());
        session_connection_lost(s);     /* a resumable session hibernates (XEP-0198) */
    }
}

/* ---- the TCP/TLS transport (bufferevents) ---- */

static void tcp_write(session_t *s, const char *data, size_t len) { bufferevent_write(s->bev, data, len); }

/* flow_output_queued counts the TLS filter's output and the socket's under it. */
static size_t tcp_queued(const session_t *s) { return s->bev ? flow_output_queued(s->bev) : 0; }

/* Every change of the socket-level output buffer under a TLS filter (the filter's own write
 * callback only says that the plaintext went into TLS). */
static void on_under_output(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    if (info->n_deleted) session_output_progress(arg);
}

static void tcp_watch_output(session_t *s)
{
    struct bufferevent *under = s->bev ? bufferevent_get_underlying(s->bev) : NULL;
    if (under) evbuffer_add_cb(bufferevent_get_output(under), on_under_output, s);
}

static void tcp_stop(session_t *s, int writing_too)
{
    if (s->bev) bufferevent_disable(s->bev, writing_too ? EV_READ | EV_WRITE : EV_READ);
}

/* The peer has closed its end or reset the connection: nothing it could still send will arrive,
 * so the stream can never authenticate. */
static int tcp_peer_gone(const session_t *s)
{
    struct bufferevent *under = s->bev ? bufferevent_get_underlying(s->bev) : NULL;
    evutil_socket_t fd = s->bev ? bufferevent_getfd(under ? under : s->bev) : -1;
    if (fd < 0) return 0;
#ifdef POLLRDHUP
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) return 1;
#else
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR))) return 1;
    char c;
    if ((p.revents & POLLIN) && recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0) return 1;
#endif
    return 0;
}

static int tcp_channel_binding(const session_t *s, const char *type, unsigned char *buf, size_t *len)
{
    if (!buf) return strcmp(type, "tls-exporter") != 0 || tls_has_exporter(s->ssl) ? 0 : -1;
    return tls_channel_binding(s->ssl, type, buf, len);
}

static void tcp_free(session_t *s)
{
    if (s->bev) bufferevent_free(s->bev);    /* closes the socket and frees the SSL */
    tls_unref(s->tls);
}

static void tcp_resume(session_t *s)
{
    bufferevent_enable(s->bev, EV_READ);
    on_read(s->bev, s);
}

static const session_transport_t tcp_transport = {tcp_write,     tcp_queued,          tcp_watch_output, tcp_stop,
                                                  tcp_peer_gone, tcp_channel_binding, tcp_free,         tcp_resume};

void c2s_accept(int fd, const char *peer_ip, c2s_kind_t kind)
{
    const config_t *c = srv->cfg;
    ip_state_t *ip = ip_state_get(peer_ip);
    if (ip->connections >= c->max_connections_per_ip) ip_reap(ip);
    if (srv->shutting_down || ip->connections >= c->max_connections_per_ip ||
        srv->unauthenticated >= (size_t)c->max_unauthenticated) {
        log_info("c2s", "%s: connection refused (limits)", peer_ip);
        ip_state_release(peer_ip);
        close(fd);
        return;
    }
    session_t *s = session_new(peer_ip, &tcp_transport, &c2s_stream);
    ip_count_unauth(s, ip);
    s->kind = kind;
    if (kind == C2S_DIRECT_TLS) {
        s->ssl = tls_new_ssl(srv->tls);
        s->tls = srv->tls;
        tls_ref(s->tls);
        /* TLS as a filter over a socket bufferevent, as after STARTTLS: the read rate limit then
         * applies to the socket. An openssl socket bufferevent paused by a rate limit keeps the
         * rest of a TLS record decrypted inside SSL, and nothing wakes it up again. */
        struct bufferevent *sock =
            s->ssl ? bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS) : NULL;
        s->bev = sock ? bufferevent_openssl_filter_new(srv->base, sock, s->ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                       BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS)
                      : NULL;
        if (sock && !s->bev) {
            bufferevent_free(sock);     /* closes fd */
            fd = -1;
        }
        if (s->bev) bufferevent_openssl_set_allow_dirty_shutdown(s->bev, 1);
        s->tls_active = 1;
    } else {
        s->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    }
    s->counted_unauth = 1;
    srv->unauthenticated++;
    if (!s->bev) {
        log_warn("c2s", "%s: cannot set up the connection", peer_ip);
        if (fd >= 0) close(fd);
        session_free_later(s);
        return;
    }
    s->delay_ev = evtimer_new(srv->base, on_delay_done, s);     /* armed by sasl.c's back-off */
    xstream_limits_t lim = {(size_t)c->max_stanza_size_preauth, 32, 32, 0};
    s->xs = xstream_new(&stream_cb, s, &lim);
    rate_init(s);
    bufferevent_setcb(s->bev, on_read, on_write, on_event, s);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
    arm_timer(s, c->stream_header_timeout);
    log_debug("c2s", "%s: connected (%s)", peer_ip, kind == C2S_DIRECT_TLS ? "direct TLS" : "STARTTLS port");
}

void c2s_close_all(void)
{
    for (session_t *s = srv->sessions; s; s = s->next)
        session_close(s, "system-shutdown", NULL);
}

/* ---- WebSocket (RFC 7395): the same stream, framed by websocket.c ---- */

session_t *c2s_ws_new(const char *peer_ip, const session_transport_t *t, struct bufferevent *bev)
{
    const config_t *c = srv->cfg;
    ip_state_t *ip = ip_state_get(peer_ip);
    if (ip->connections >= c->max_connections_per_ip) ip_reap(ip);
    if (srv->shutting_down || ip->connections >= c->max_connections_per_ip ||
        srv->unauthenticated >= (size_t)c->max_unauthenticated) {
        log_info("c2s", "%s: WebSocket refused (limits)", peer_ip);
        ip_state_release(peer_ip);
        return NULL;
    }
    session_t *s = session_new(peer_ip, t, &c2s_ws_stream);
    ip_count_unauth(s, ip);
    s->kind = C2S_DIRECT_TLS;
    s->bev = bev;
    s->tls_active = 1;          /* TLS below the WebSocket, or at the trusted proxy in front */
    s->counted_unauth = 1;
    srv->unauthenticated++;
    s->delay_ev = evtimer_new(srv->base, on_delay_done, s);
    xstream_limits_t lim = {(size_t)c->max_stanza_size_preauth, 32, 32, 0};
    s->xs = xstream_new(&stream_cb, s, &lim);
    rate_init(s);
    arm_timer(s, c->stream_header_timeout);
    log_debug("c2s", "%s: connected (WebSocket)", peer_ip);
    return s;
}

/* The <open/> that starts the stream or restarts it (RFC 7395 §3.3.2, §3.7): given to the stream
 * parser as the RFC 6120 header it stands for, so that on_stream_open judges it as for TCP. */
static void ws_open(session_t *s, const char *msg, size_t len)
{
    xnode_t *o = len <= XSTREAM_DEFAULT_MAX_HEADER_SIZE ? xnode_parse_one(msg, len, NULL) : NULL;
    if (!o) {
        session_close(s, "not-well-formed", "expected <open/>");
        return;
    }
    if (strcmp(o->name, "open") != 0 || strcmp(o->ns, NS_FRAMING) != 0) {
        xnode_free(o);
        session_close(s, "invalid-namespace", "expected <open/> in " NS_FRAMING);
        return;
    }
    struct evbuffer *h = evbuffer_new();
    evbuffer_add_printf(h, "<stream:stream xmlns='" NS_CLIENT "' xmlns:stream='" NS_STREAMS "'");
    for (size_t i = 0; o->attrs && o->attrs[i]; i += 2) {
        const char *name = o->attrs[i];
        if (strcmp(name, XML_ATTR_LANG) == 0) name = "xml:lang";
        else if (strchr(name, ' ')) continue;       /* other namespaced attributes mean nothing here */
        char *v = xml_escape_attr(o->attrs[i + 1], NULL);
        if (v) evbuffer_add_printf(h, " %s='%s'", name, v);
        free(v);
    }
    evbuffer_add(h, ">", 1);
    xnode_free(o);
    size_t n = evbuffer_get_length(h);
    xstream_feed(s->xs, (const char *)evbuffer_pullup(h, -1), n);
    evbuffer_free(h);
}

int c2s_ws_message(session_t *s, const char *msg, size_t len)
{
    if (s->state == C2S_CLOSING || s->freeing) return 0;
    if (s->delayed) return 1;                   /* a SASL back-off: on_delay_done resumes */
    if (rate_room(s) == 0) {
        rate_pause(s);
        return 1;
    }
    if (s->state == C2S_WAIT_HEADER) {
        ws_open(s, msg, len);
        return 0;
    }
    ws_elements = 0;
    int r = xstream_feed(s->xs, msg, len);
    if (r == 0 && s->state == C2S_OPEN && !s->freeing && !s->reset_pending &&
        (ws_elements != 1 || !xstream_idle(s->xs)))
        session_close(s, "not-well-formed", "a WebSocket message holds exactly one complete element");
    if (!s->delayed) after_feed(s);
    return 0;
}
