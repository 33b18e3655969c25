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
        session_free_later(s);
    }
}

void session_write_str(session_t *s, const char *str) { session_write(s, str, strlen(str)); }

/* A stanza (not a stream-level element such as <r/> or <stream:features/>) for a bound session
 * passes the modules' output filters ("session/send", module.h) first: CSI holds some back. */
static int held_by_filter(session_t *s, const xnode_t *n)
{
    if (!s->bound || !n->name || (strcmp(n->ns, NS_CLIENT) != 0 && strcmp(n->ns, NS_SERVER) != 0)) return 0;
    if (strcmp(n->name, "message") != 0 && strcmp(n->name, "presence") != 0 && strcmp(n->name, "iq") != 0) return 0;
    /* read-only for the handlers (module.h), hence the cast */
    hook_event_t ev = {.name = "session/send", .stanza = (xnode_t *)n, .origin = s, .host = s->host, .to = s->jid};
    return hook_fire(&ev) == HOOK_HANDLED;
}

void session_send(session_t *s, const xnode_t *n)
{
    if (held_by_filter(s, n)) return;
    size_t len;
    char *buf = xnode_serialize(n, NS_CLIENT, &len);
    if (!buf) {     /* a tree that cannot be written as valid XML is dropped, never sent broken */
        log_warn("c2s", "%s: dropped an unserialisable <%s/>", s->ip, n->name ? n->name : "?");
        return;
    }
    session_write(s, buf, len);
    free(buf);
}

void session_deliver(session_t *s, const xnode_t *st) { session_send(s, st); }

/* ---- closing and freeing ---- */

static void on_free(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    session_t *s = arg;
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

/* ---- output flow for modules (session_want_drained, module.h) ---- */

size_t session_output_queued(const session_t *s) { return s->transport ? s->transport->queued(s) : 0; }

/* From the loop, never inside a write: the hook's handlers may send again. */
static void on_drain_ev(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    session_t *s = arg;
    if (!s->want_drained || s->freeing || s->state == C2S_CLOSING || !s->bound) return;
    if (!output_drained(s)) return;     /* written to again meanwhile: the next drain fires it */
    s->want_drained = 0;
    hook_event_t ev = {.name = "session-drained", .origin = s, .host = s->host, .from = s->jid};
    hook_fire(&ev);
}

static void check_drained(session_t *s)
{
    if (s->want_drained && !s->freeing && output_drained(s)) event_active(s->drain_ev, 0, 0);
}

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
