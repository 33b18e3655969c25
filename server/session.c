/* server/session.c: client sessions below the router: output and its accounting, closing and
 * freeing at a safe point, resource binding (the online accounts), presence state, module data. */
#include "session.h"
#include "server.h"
#include "hook.h"
#include "stanza.h"
#include <stdlib.h>
#include <string.h>
#include <event2/event.h>

#define CLOSE_FLUSH_SECONDS 5     /* a closing stream that does not drain is dropped after this */

static void on_free(evutil_socket_t fd, short what, void *arg);
static void hibernate(session_t *s);

/* A stanza tap of a session (session_add_tap): a short list, by descending priority. */
struct session_tap_reg {
    const session_tap_t *tap;
    void *ud;
    int priority;
    struct session_tap_reg *next;
};

session_t *session_new(const char *ip, const session_transport_t *t, const session_stream_t *st)
{
    session_t *s = xcalloc(1, sizeof *s);
    snprintf(s->ip, sizeof s->ip, "%s", ip);
    s->transport = t;
    s->stream = st;
    s->priority = -129;
    s->free_ev = event_new(srv->base, -1, 0, on_free, s);
    s->next = srv->sessions;
    if (srv->sessions) srv->sessions->prev = s;
    srv->sessions = s;
    srv->nsessions++;
    return s;
}

/* ---- output ---- */

size_t session_output_limit(void) { return (size_t)srv->cfg->max_output_buffer; }

void session_write(session_t *s, const char *data, size_t len)
{
    if (s->state == C2S_CLOSING || s->freeing) return;
    s->transport->write(s, data, len);
    /* A client that never reads must not make the server buffer without bound
     * (Openfire GHSA-x337-43mr-gg3h): past the cap the stream is dropped. The transport counts
     * the TLS filter's output and the socket's under it. */
    if (s->transport->queued(s) > (size_t)srv->cfg->max_output_buffer) {
        log_info("c2s", "%s: output queue over %ld bytes, dropping the stream", s->ip, srv->cfg->max_output_buffer);
        session_connection_lost(s);     /* a resumable session hibernates with its unacked stanzas */
    }
}

void session_write_str(session_t *s, const char *str) { session_write(s, str, strlen(str)); }

void session_write_raw(session_t *s, const char *data, size_t len) { session_write(s, data, len); }

static int is_stanza(const xnode_t *n)
{
    if (!n->ns || strcmp(n->ns, NS_CLIENT) != 0) return 0;
    return strcmp(n->name, "message") == 0 || strcmp(n->name, "presence") == 0 || strcmp(n->name, "iq") == 0;
}

/* Serialise n, pass it through the taps from t on (stanzas only), write what none held back. */
static void send_through(session_t *s, struct session_tap_reg *t, const xnode_t *n)
{
    size_t len;
    char *buf = xnode_serialize(n, s->stream ? s->stream->content_ns : NS_CLIENT, &len);
    if (!buf) {     /* a tree that cannot be written as valid XML is dropped, never sent broken */
        log_warn("c2s", "%s: dropped an unserialisable <%s/>", s->ip, n->name ? n->name : "?");
        return;
    }
    if (t && is_stanza(n))
        for (; t; t = t->next)
            if (t->tap->out && t->tap->out(s, t->ud, n, buf, len) == SESSION_TAP_HELD) {
                free(buf);
                return;
            }
    session_write(s, buf, len);
    free(buf);
}

void session_send(session_t *s, const xnode_t *n) { send_through(s, s->taps, n); }

void session_send_after(session_t *s, const session_tap_t *tap, const xnode_t *st)
{
    struct session_tap_reg *t = s->taps;
    while (t && t->tap != tap) t = t->next;
    send_through(s, t ? t->next : NULL, st);
}

void session_stanza_in(session_t *s, const xnode_t *st)
{
    for (struct session_tap_reg *t = s->taps; t; t = t->next)
        if (t->tap->in) t->tap->in(s, t->ud, st);
}

void session_add_tap(session_t *s, const session_tap_t *tap, int priority, void *ud)
{
    session_remove_tap(s, tap);
    struct session_tap_reg *r = xcalloc(1, sizeof *r), **pp = &s->taps;
    r->tap = tap;
    r->ud = ud;
    r->priority = priority;
    while (*pp && (*pp)->priority >= priority) pp = &(*pp)->next;
    r->next = *pp;
    *pp = r;
}

void session_remove_tap(session_t *s, const session_tap_t *tap)
{
    for (struct session_tap_reg **pp = &s->taps; *pp; pp = &(*pp)->next)
        if ((*pp)->tap == tap) {
            struct session_tap_reg *r = *pp;
            *pp = r->next;
            free(r);
            return;
        }
}

void session_deliver(session_t *s, const xnode_t *st) { session_send(s, st); }

/* ---- closing and freeing ---- */

static void on_free(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    session_t *s = arg;
    if (s->hibernate_pending) {
        s->hibernate_pending = 0;
        if (s->bound && !srv->shutting_down) {     /* at shutdown every session ends */
            hibernate(s);
            return;
        }
    }
    if (s->bound) session_unbind(s);
    if (s->next) s->next->prev = s->prev;
    if (s->prev) s->prev->next = s->next;
    else srv->sessions = s->next;
    srv->nsessions--;
    if (s->stream) s->stream->free(s);          /* parser, SASL, limits accounting */
    if (s->transport) s->transport->free(s);    /* closes the socket and frees the SSL */
    if (s->timer) event_free(s->timer);
    if (s->drain_ev) event_free(s->drain_ev);
    event_free(s->free_ev);
    while (s->data) {
        session_data_t *d = s->data;
        s->data = d->next;
        if (d->free_fn) d->free_fn(d->data);
        free(d->key);
        free(d);
    }
    while (s->taps) session_remove_tap(s, s->taps->tap);
    jid_free(s->jid);
    free(s->user);
    free(s);
}

void session_free_later(session_t *s)
{
    if (s->freeing) return;
    s->freeing = 1;
    s->state = C2S_CLOSING;
    if (s->transport) s->transport->stop(s, 1);
    event_active(s->free_ev, 0, 0);
}

static void on_close_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    session_free_later(arg);
}

static int output_drained(session_t *s) { return s->transport->queued(s) == 0; }

/* For "session-drained": the transport took everything and no tap waits for a confirmation. */
static int output_confirmed(session_t *s)
{
    if (!output_drained(s)) return 0;
    for (struct session_tap_reg *t = s->taps; t; t = t->next)
        if (t->tap->unconfirmed && t->tap->unconfirmed(s, t->ud) > 0) return 0;
    return 1;
}

/* ---- output flow for modules (session_want_drained, module.h) ---- */

size_t session_output_queued(const session_t *s) { return s->transport ? s->transport->queued(s) : 0; }

/* From the loop, never inside a write: the hook's handlers may send again. */
static void on_drain_ev(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    session_t *s = arg;
    if (!s->want_drained || s->freeing || s->state == C2S_CLOSING || !s->bound) return;
    if (!output_confirmed(s)) return;   /* written to again meanwhile: the next drain fires it */
    s->want_drained = 0;
    hook_event_t ev = {.name = "session-drained", .origin = s, .host = s->host, .from = s->jid};
    hook_fire(&ev);
}

static void check_drained(session_t *s)
{
    if (s->want_drained && !s->freeing && output_confirmed(s)) event_active(s->drain_ev, 0, 0);
}

void session_output_confirmed(session_t *s) { check_drained(s); }
int session_writing_replay(const session_t *s) { return s->writing_replay; }

void session_output_progress(session_t *s)
{
    if (s->state == C2S_CLOSING && !s->freeing && output_drained(s)) session_free_later(s);
    else check_drained(s);
}

static void watch_output(session_t *s)
{
    if (s->drain_watch) return;
    s->transport->watch_output(s);
    s->drain_watch = 1;
}

void session_want_drained(session_t *s)
{
    if (s->freeing || s->state == C2S_CLOSING || !s->transport) return;
    if (!s->drain_ev) s->drain_ev = event_new(srv->base, -1, 0, on_drain_ev, s);
    if (s->hibernating) {       /* no connection to watch: confirmations (resumption) wake it */
        s->want_drained = 1;
        return;
    }
    watch_output(s);
    s->want_drained = 1;
    check_drained(s);
}

void session_close(session_t *s, const char *condition, const char *text)
{
    if (s->state == C2S_CLOSING || s->freeing) return;
    s->stream->close(s, condition, text);
    if (s->bound) session_unbind(s);          /* no more stanzas reach a closing stream */
    s->state = C2S_CLOSING;
    s->transport->stop(s, 0);
    if (output_drained(s)) {
        session_free_later(s);
        return;
    }
    /* wait for the output to drain (the transport tells; for a TLS filter, the socket underneath
     * tells when its own buffer is empty), but not for ever */
    watch_output(s);
    struct timeval tv = {CLOSE_FLUSH_SECONDS, 0};
    if (s->timer) event_free(s->timer);
    s->timer = evtimer_new(srv->base, on_close_timeout, s);
    evtimer_add(s->timer, &tv);
}

/* ---- hibernation and resumption (XEP-0198; session.h) ---- */

/* What a hibernating session has instead of a connection: writes go nowhere (the taps kept what
 * matters), nothing is queued, the peer is gone. */
static void hib_write(session_t *s, const char *d, size_t n) { (void)s; (void)d; (void)n; }
static size_t hib_queued(const session_t *s) { (void)s; return 0; }
static void hib_noop(session_t *s) { (void)s; }
static void hib_stop(session_t *s, int w) { (void)s; (void)w; }
static int hib_gone(const session_t *s) { (void)s; return 1; }
static int hib_cb(const session_t *s, const char *t, unsigned char *b, size_t *l) { (void)s; (void)t; (void)b; (void)l; return -1; }
static void hib_close(session_t *s, const char *c, const char *t) { (void)s; (void)c; (void)t; }
static const session_transport_t hib_transport = {.write = hib_write, .queued = hib_queued, .watch_output = hib_noop,
    .stop = hib_stop, .peer_gone = hib_gone, .channel_binding = hib_cb, .free = hib_noop, .resume = hib_noop};
/* content_ns NULL: what is serialised while hibernating declares its namespace, so it suits a TCP
 * or a WebSocket connection that resumes the session */
static const session_stream_t hib_stream = {.close = hib_close, .free = hib_noop, .content_ns = NULL};

void session_set_resumable(session_t *s, int on) { s->resumable = on ? 1 : 0; }
int session_hibernating(const session_t *s) { return s->hibernating; }

void session_connection_lost(session_t *s)
{
    if (s->resumable && s->bound && !s->hibernating && s->state == C2S_OPEN && !s->freeing && !srv->shutting_down)
        s->hibernate_pending = 1;
    session_free_later(s);      /* on_free hibernates it instead when hibernate_pending */
}

void session_lose_connection(session_t *s) { session_connection_lost(s); }

/* Session data whose key starts with "c2s." belongs to the connection (rate limits, held input). */
static int connection_data(const session_data_t *d) { return strncmp(d->key, "c2s.", 4) == 0; }

/* From the loop (on_free): release the connection and the stream, keep the bound session. */
static void hibernate(session_t *s)
{
    s->stream->free(s);
    s->transport->free(s);
    s->bev = NULL;
    s->ssl = NULL;
    s->tls = NULL;
    s->xs = NULL;
    s->scram = NULL;
    s->mech = NULL;
    s->delay_ev = NULL;
    s->delayed = NULL;
    s->drain_watch = 0;
    if (s->timer) {
        event_free(s->timer);
        s->timer = NULL;
    }
    for (session_data_t **pp = &s->data; *pp;) {
        session_data_t *d = *pp;
        if (!connection_data(d)) {
            pp = &d->next;
            continue;
        }
        *pp = d->next;
        if (d->free_fn) d->free_fn(d->data);
        free(d->key);
        free(d);
    }
    s->stream = &hib_stream;
    s->transport = &hib_transport;
    s->freeing = 0;
    s->state = C2S_OPEN;
    s->hibernating = 1;
    log_info("c2s", "%s: connection of %s lost, hibernating", s->ip, log_jid(s->jid->full));
    hook_event_t ev = {.name = "session-hibernated", .origin = s, .host = s->host, .from = s->jid};
    hook_fire(&ev);
}

int session_take_over(session_t *s, session_t *old)
{
    if (old == s || !old->bound || s->bound || !s->authenticated || old->host != s->host || !old->user || !s->user ||
        strcmp(old->user, s->user) != 0)
        return -1;
    user_t *u = session_user(old->host, old->jid->bare);
    for (session_t **pp = u ? &u->sessions : NULL; pp && *pp; pp = &(*pp)->next_in_user)
        if (*pp == old) {
            *pp = s;
            break;
        }
    s->next_in_user = old->next_in_user;
    old->next_in_user = NULL;
    s->jid = old->jid;
    old->jid = NULL;
    old->bound = 0;
    s->bound = 1;
    s->resumed = 1;
    s->available = old->available;
    s->priority = old->priority;
    s->hold_bare = old->hold_bare;
    s->resumable = old->resumable;
    /* module data (presence, carbons, replay, stream management) moves; old's connection's stays */
    session_data_t **tail = &s->data;
    while (*tail) tail = &(*tail)->next;
    for (session_data_t **pp = &old->data; *pp;) {
        session_data_t *d = *pp;
        if (connection_data(d)) {
            pp = &d->next;
            continue;
        }
        *pp = d->next;
        d->next = NULL;
        *tail = d;
        tail = &d->next;
    }
    while (s->taps) session_remove_tap(s, s->taps->tap);     /* the session's taps are old's */
    s->taps = old->taps;
    old->taps = NULL;
    int drained = old->want_drained;
    old->want_drained = 0;
    old->hibernating = 0;
    old->hibernate_pending = 0;
    session_free_later(old);        /* its socket, if any, closes without a word */
    log_info("c2s", "%s: resumed %s", s->ip, log_jid(s->jid->full));
    hook_event_t ev = {.name = "session-resumed", .origin = s, .host = s->host, .from = s->jid};
    hook_fire(&ev);
    if (drained) session_want_drained(s);
    return 0;
}

/* ---- resources: the online accounts of each host ---- */

static host_t *find_host_of(const jid_t *j) { return j ? host_find(j->domain) : NULL; }

static void (*on_unbind)(const jid_t *full);   /* session_on_unbind */

user_t *session_user(host_t *h, const char *bare) { return strmap_get(h->users, bare); }

session_t *user_sessions(const jid_t *bare)
{
    host_t *h = find_host_of(bare);
    user_t *u = h ? session_user(h, bare->bare) : NULL;
    return u ? u->sessions : NULL;
}

int user_delivery_priority(const jid_t *bare)
{
    int best = -1;
    for (session_t *s = user_sessions(bare); s; s = s->next_in_user)
        if (!s->hold_bare && session_priority(s) > best) best = session_priority(s);
    return best;
}

int session_receives_bare(const session_t *s)
{
    if (!s->jid || s->hold_bare || !s->available || s->priority < 0) return 0;
    return s->priority == user_delivery_priority(s->jid);
}

session_t *session_find_full(const jid_t *j)
{
    host_t *h = find_host_of(j);
    user_t *u = h ? session_user(h, j->bare) : NULL;
    if (!u || !j->resource) return NULL;
    for (session_t *s = u->sessions; s; s = s->next_in_user)
        if (strcmp(s->jid->resource, j->resource) == 0) return s;
    return NULL;
}

void session_bind(session_t *s)
{
    session_t *old = session_find_full(s->jid);
    if (old) {                        /* RFC 6120 §7.7.2.2: the new session wins */
        session_unbind(old);
        session_close(old, "conflict", "replaced by a new session");
    }
    user_t *u = session_user(s->host, s->jid->bare);
    if (!u) {
        u = xcalloc(1, sizeof *u);
        u->bare = xstrdup(s->jid->bare);
        strmap_put(s->host->users, u->bare, u);
    }
    s->next_in_user = u->sessions;
    u->sessions = s;
}

int session_bind_resource(session_t *s, const char *resource)
{
    jid_t *j = jid_make(s->user, s->host->name, resource);
    if (!j) return -1;
    s->jid = j;
    session_bind(s);     /* a session with the same full JID gets <conflict/> (RFC 6120 §7.7.2.2) */
    s->bound = 1;
    log_info("c2s", "%s: bound %s", s->ip, log_jid(j->full));
    return 0;
}

void session_unbind(session_t *s)
{
    if (!s->bound) return;
    s->bound = 0;
    user_t *u = session_user(s->host, s->jid->bare);
    if (u) {
        for (session_t **pp = &u->sessions; *pp; pp = &(*pp)->next_in_user)
            if (*pp == s) {
                *pp = s->next_in_user;
                break;
            }
        if (!u->sessions) {
            strmap_del(s->host->users, u->bare);
            free(u->bare);
            free(u);
        }
    }
    s->next_in_user = NULL;
    hook_event_t ev = {.name = "session-closed", .origin = s, .host = s->host, .from = s->jid};
    hook_fire(&ev);
    if (session_presence(s)) {          /* the stream ended while the resource was available */
        session_set_presence(s, NULL);
        jid_t *bare = jid_bare_of(s->jid);
        hook_event_t uev = {.name = "resource-unavailable", .origin = s, .host = s->host, .from = s->jid, .to = bare};
        hook_fire(&uev);
        jid_free(bare);
    }
    if (on_unbind) on_unbind(s->jid);
}

void session_on_unbind(void (*fn)(const jid_t *full)) { on_unbind = fn; }

/* ---- a session's current presence (session_presence, session.h) ---- */

#define PRESENCE_KEY "core.presence"

static void presence_data_free(void *p) { xnode_free(p); }

const xnode_t *session_presence(const session_t *s) { return session_get_data(s, PRESENCE_KEY); }

void session_set_presence(session_t *s, const xnode_t *p)
{
    session_set_data(s, PRESENCE_KEY, p ? xnode_copy(p) : NULL, presence_data_free);
}

/* ---- accessors and module data ---- */

int session_priority(const session_t *s) { return s->available ? s->priority : -129; }
int session_available(const session_t *s) { return s->available; }
void session_hold_bare(session_t *s, int on) { s->hold_bare = on ? 1 : 0; }

void *session_get_data(const session_t *s, const char *key)
{
    for (session_data_t *d = s->data; d; d = d->next)
        if (strcmp(d->key, key) == 0) return d->data;
    return NULL;
}

void session_set_data(session_t *s, const char *key, void *data, void (*free_fn)(void *))
{
    for (session_data_t *d = s->data; d; d = d->next)
        if (strcmp(d->key, key) == 0) {
            if (d->free_fn && d->data != data) d->free_fn(d->data);
            d->data = data;
            d->free_fn = free_fn;
            return;
        }
    session_data_t *d = xcalloc(1, sizeof *d);
    d->key = xstrdup(key);
    d->data = data;
    d->free_fn = free_fn;
    d->next = s->data;
    s->data = d;
}
session_t *session_next_in_user(const session_t *s) { return s->next_in_user; }
const jid_t *session_jid(const session_t *s) { return s->bound ? s->jid : NULL; }
host_t *session_host(const session_t *s) { return s->host; }
const char *session_ip(const session_t *s) { return s->ip; }
const char *session_account(const session_t *s) { return s->authenticated ? s->user : NULL; }
