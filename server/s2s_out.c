/* server/s2s_out.c: outgoing server-to-server streams, one per (local domain, remote domain): SRV
 * (XEP-0368 and RFC 6120 §3.2) or a partner's route, TLS, SASL EXTERNAL or dialback, the queue of
 * stanzas waiting for the stream, bounces, back-off and idle close. */
#include "s2s_out.h"
#include "dialback.h"
#include "dns.h"
#include "certcheck.h"
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONNECT_TIMEOUT 10          /* seconds for one TCP connection and TLS handshake */
#define ESTABLISH_TIMEOUT 45        /* seconds from the first stanza to an authenticated stream */
#define OUT_IDLE_SECONDS 300        /* an established stream unused this long is closed */
#define MAX_QUEUE 1000              /* stanzas waiting for one stream */
#define BACKOFF_FIRST_MS 1000       /* after a failure, wait 1 s, 2 s, 4 s ... */
#define BACKOFF_MAX_MS 60000        /* ... at most a minute, before connecting again */
#define DEFAULT_PORT 5269

typedef struct qitem {
    xnode_t *st;                    /* the stanza, for a bounce if the stream fails */
    char *xml;                      /* st serialised as it is sent (written at flush as is) */
    size_t bytes;                   /* strlen(xml) */
    struct qitem *next;
} qitem_t;

typedef struct vreq {               /* a db:verify we send for an incoming stream */
    char *id, *key;
    uint64_t serial;
    s2s_verify_done_fn done;        /* told the answer (s2s_in_verify_result) */
    int sent;
    struct vreq *next;
} vreq_t;

typedef struct target { char *host; int port, priority, direct_tls; } target_t;

typedef enum { OUT_IDLE, OUT_RESOLVING, OUT_CONNECTING, OUT_ESTABLISHED, OUT_CLOSING } out_state_t;
typedef enum { AUTH_NONE, AUTH_SASL, AUTH_SASL_OK, AUTH_DIALBACK } out_auth_t;

typedef struct s2s_out {
    char *local, *remote, *mapkey;
    out_state_t state;
    qitem_t *q, **qtail;
    size_t qlen, qbytes;            /* stanzas queued, their serialised size (limits.max_s2s_queue_bytes) */
    int qfull_logged;               /* the queue overflowed since it was last empty */
    vreq_t *vq;
    s2s_conn_t *conn;
    dns_query_t *srvq[2];           /* _xmpps-server, _xmpp-server */
    target_t *srvt[2]; size_t nsrvt[2];
    int srv_refused;                /* an SRV answer said "." (no service) */
    dns_query_t *aq;
    target_t *targets; size_t ntargets, ti;
    struct sockaddr_storage *addrs; size_t naddrs, ai;
    int cert_ok;
    char cert_reason[96];
    out_auth_t auth;
    int dialback_offered;
    char peer_id[129];              /* the peer's stream id, for the dialback key */
    char last_why[240];             /* the last connection failure */
    int last_timed_out;
    int failures;
    int64_t retry_at;               /* monotonic ms; no new attempt before */
    int64_t last_used;
    struct event *timer;            /* deadline / idle check / retry */
    struct event *attempt_timer;    /* one connection attempt */
} s2s_out_t;

static strmap_t *outs;              /* "local remote" -> s2s_out_t */

static void out_start(s2s_out_t *o);
static void try_target(s2s_out_t *o);
static void try_addr(s2s_out_t *o);
static const s2s_conn_cb_t out_cb;

/* The host whose certificate a stream from `local` presents: a component's parent's (component.h;
 * when that certificate does not name the component's domain, the peer falls back to dialback). */
static const char *out_cert_host(const char *local)
{
    const host_t *h = component_cert_host(local);
    return h ? host_name(h) : local;
}

/* ---- small things ---- */

static void bounce(xnode_t *st, const char *type, const char *cond, const char *text)
{
    xnode_t *e = stanza_error(st, type, cond, text);    /* NULL for errors: never answered */
    xnode_free(st);
    if (e) s2s_deliver_bounce(e);
}

static void timer_in(s2s_out_t *o, int64_t ms)
{
    if (ms < 0) ms = 0;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    evtimer_add(o->timer, &tv);
}

static void free_targets(s2s_out_t *o)
{
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < o->nsrvt[k]; i++) free(o->srvt[k][i].host);
        free(o->srvt[k]);
        o->srvt[k] = NULL;
        o->nsrvt[k] = 0;
    }
    for (size_t i = 0; i < o->ntargets; i++) free(o->targets[i].host);
    free(o->targets);
    o->targets = NULL;
    o->ntargets = o->ti = 0;
    free(o->addrs);
    o->addrs = NULL;
    o->naddrs = o->ai = 0;
    o->srv_refused = 0;
}

static void cancel_lookups(s2s_out_t *o)
{
    for (int k = 0; k < 2; k++) {
        dns_cancel(o->srvq[k]);
        o->srvq[k] = NULL;
    }
    dns_cancel(o->aq);
    o->aq = NULL;
}

static void on_timer(evutil_socket_t fd, short what, void *arg);
static void on_attempt_timer(evutil_socket_t fd, short what, void *arg);

static s2s_out_t *out_get(const char *local, const char *remote)
{
    if (!outs) outs = strmap_new();
    char *k = xasprintf("%s %s", local, remote);
    s2s_out_t *o = strmap_get(outs, k);
    if (o) {
        free(k);
        return o;
    }
    o = xcalloc(1, sizeof *o);
    o->local = xstrdup(local);
    o->remote = xstrdup(remote);
    o->mapkey = k;
    o->qtail = &o->q;
    o->timer = evtimer_new(srv->base, on_timer, o);
    o->attempt_timer = evtimer_new(srv->base, on_attempt_timer, o);
    strmap_put(outs, k, o);
    return o;
}

/* Only when nothing refers to o any more: no connection, no lookup, nothing queued. */
static void out_free(s2s_out_t *o)
{
    strmap_del(outs, o->mapkey);
    cancel_lookups(o);
    free_targets(o);
    while (o->q) {
        qitem_t *i = o->q;
        o->q = i->next;
        xnode_free(i->st);
        free(i->xml);
        free(i);
    }
    while (o->vq) {
        vreq_t *v = o->vq;
        o->vq = v->next;
        free(v->id);
        free(v->key);
        free(v);
    }
    event_free(o->timer);
    event_free(o->attempt_timer);
    free(o->local);
    free(o->remote);
    free(o->mapkey);
    free(o);
}

static void send_verify(s2s_out_t *o, vreq_t *v)
{
    xnode_t *d = xnode_new("verify", NS_DIALBACK);
    xnode_set_attr(d, "from", o->local);
    xnode_set_attr(d, "to", o->remote);
    xnode_set_attr(d, "id", v->id);
    xnode_add_text(d, v->key);
    s2s_conn_send_prefixed(o->conn, d);     /* <db:verify>: ejabberd knows no other form */
    xnode_free(d);
    v->sent = 1;
}

static void flush_verifies(s2s_out_t *o)
{
    for (vreq_t *v = o->vq; v; v = v->next)
        if (!v->sent) send_verify(o, v);
}

/* Tell every waiting incoming stream that no answer will come (result -1), or only those whose
 * request was sent on a connection that has gone (sent_only). */
static void fail_verifies(s2s_out_t *o, int sent_only)
{
    vreq_t *keep = NULL, **kt = &keep, *fail = NULL;
    while (o->vq) {
        vreq_t *v = o->vq;
        o->vq = v->next;
        v->next = NULL;
        if (sent_only && !v->sent) {
            *kt = v;
            kt = &v->next;
        } else {
            v->next = fail;
            fail = v;
        }
    }
    o->vq = keep;
    while (fail) {      /* o's state is consistent now: s2s_in may call back into s2s_out */
        vreq_t *v = fail;
        fail = v->next;
        v->done(v->serial, o->local, o->remote, -1);
        free(v->id);
        free(v->key);
        free(v);
    }
}

/* ---- success and failure ---- */

static void out_fail(s2s_out_t *o, const char *cond, const char *why)
{
    log_info("s2s", "outgoing %s -> %s failed: %s", o->local, o->remote, why);
    cancel_lookups(o);
    free_targets(o);
    evtimer_del(o->attempt_timer);
    if (o->conn) {
        o->conn->owner = NULL;          /* its `gone` must not come back here */
        s2s_conn_close(o->conn, NULL, NULL, why);
        o->conn = NULL;
    }
    o->failures++;
    int64_t backoff = BACKOFF_FIRST_MS;
    for (int i = 1; i < o->failures && backoff < BACKOFF_MAX_MS; i++) backoff *= 2;
    if (backoff > BACKOFF_MAX_MS) backoff = BACKOFF_MAX_MS;
    o->retry_at = now_ms() + backoff;
    o->state = OUT_IDLE;
    o->auth = AUTH_NONE;
    timer_in(o, backoff);               /* then retry what queued meanwhile, or forget o */
    qitem_t *q = o->q;
    o->q = NULL;
    o->qtail = &o->q;
    o->qlen = o->qbytes = 0;
    o->qfull_logged = 0;
    fail_verifies(o, 0);
    /* bounce last: the errors go through the router and hooks, which may route to o again */
    while (q) {
        qitem_t *i = q;
        q = i->next;
        bounce(i->st, "cancel", cond, NULL);
        free(i->xml);
        free(i);
    }
}

static void out_established(s2s_out_t *o, const char *how)
{
    o->state = OUT_ESTABLISHED;
    o->failures = 0;
    o->retry_at = 0;
    o->last_used = now_ms();
    evtimer_del(o->attempt_timer);
    timer_in(o, OUT_IDLE_SECONDS * 1000);
    s2s_conn_authenticated_limits(o->conn);
    int direct = o->targets && o->ti < o->ntargets && o->targets[o->ti].direct_tls;
    log_info("s2s", "outgoing %s -> %s established (%s; peer certificate %s%s%s) via %s%s", o->local, o->remote, how,
             o->cert_ok ? "verified" : "not verified", o->cert_ok ? "" : ": ", o->cert_ok ? "" : o->cert_reason,
             o->conn->ip, direct ? ", direct TLS" : "");
    free_targets(o);
    while (o->q && o->conn) {
        qitem_t *i = o->q;
        o->q = i->next;
        s2s_conn_send_str(o->conn, i->xml);     /* serialised when queued: not again */
        xnode_free(i->st);
        free(i->xml);
        free(i);
    }
    o->q = NULL;
    o->qtail = &o->q;
    o->qlen = o->qbytes = 0;
    o->qfull_logged = 0;
    if (o->conn) flush_verifies(o);
}

/* ---- connection callbacks ---- */

static void out_tcp_up(s2s_conn_t *c)
{
    s2s_out_t *o = c->owner;
    if (!o) return;
    if (o->targets && o->targets[o->ti].direct_tls) {
        struct ssl_st *ssl = tls_new_client_ssl(srv->tls, out_cert_host(o->local), o->remote);
        if (!ssl) {
            s2s_conn_abort(c, "cannot set up TLS");
            return;
        }
        s2s_conn_start_tls_client(c, ssl);        /* XEP-0368: TLS from the first byte */
        return;
    }
    s2s_conn_header(c, o->local, o->remote, NULL);
}

static void out_tls_up(s2s_conn_t *c)
{
    s2s_out_t *o = c->owner;
    if (!o) return;
    const char *reason = NULL;
    o->cert_ok = certcheck_peer(c->ssl, o->remote, s2s_partner_ca(o->remote), &reason);
    snprintf(o->cert_reason, sizeof o->cert_reason, "%s", reason ? reason : "");
    log_debug("s2s", "outgoing %s -> %s: TLS up, certificate %s %s", o->local, o->remote,
              o->cert_ok ? "verified" : "not verified:", o->cert_ok ? "" : o->cert_reason);
    s2s_conn_header(c, o->local, o->remote, NULL);   /* the stream restarts over TLS */
}

static int out_open(s2s_conn_t *c, const char *ns_stream, const char *name, const char *content_ns, const char **attrs)
{
    s2s_out_t *o = c->owner;
    if (!o) return -1;
    const char *id = s2s_attr(attrs, "id"), *version = s2s_attr(attrs, "version");
    if (xstream_check_header(ns_stream, name) || !content_ns || strcmp(content_ns, NS_SERVER) != 0) {
        s2s_conn_close(c, "invalid-namespace", NULL, "the peer's stream is not a server stream");
        return -1;
    }
    if (!version || atoi(version) != 1) {
        s2s_conn_close(c, "unsupported-version", NULL, "the peer does not speak XMPP 1.0");
        return -1;
    }
    snprintf(o->peer_id, sizeof o->peer_id, "%s", id ? id : "");
    return 0;
}

static void start_dialback(s2s_out_t *o)
{
    o->auth = AUTH_DIALBACK;
    char *key = dialback_key(o->remote, o->local, o->peer_id);
    xnode_t *r = xnode_new("result", NS_DIALBACK);
    xnode_set_attr(r, "from", o->local);
    xnode_set_attr(r, "to", o->remote);
    xnode_add_text(r, key);
    s2s_conn_send_prefixed(o->conn, r);     /* <db:result>: ejabberd knows no other form */
    xnode_free(r);
    free(key);
    flush_verifies(o);      /* db:verify may share the stream while dialback runs */
}

static void handle_features(s2s_out_t *o, xnode_t *f)
{
    s2s_conn_t *c = o->conn;
    if (!c->tls_active) {
        if (xnode_child(f, "starttls", NS_TLS)) s2s_conn_send_str(c, "<starttls xmlns='" NS_TLS "'/>");
        else out_fail(o, "remote-server-not-found", "the peer does not offer TLS");
        return;
    }
    if (o->state == OUT_ESTABLISHED) return;
    if (o->auth == AUTH_SASL_OK) {
        out_established(o, "SASL EXTERNAL");
        return;
    }
    if (o->auth != AUTH_NONE) return;
    o->dialback_offered = xnode_child(f, "dialback", NS_DIALBACK_FEATURE) != NULL;
    int external = 0;
    xnode_t *m = xnode_child(f, "mechanisms", NS_SASL);
    for (xnode_t *e = m ? xnode_first_elem(m) : NULL; e; e = xnode_next_elem(e)) {
        char *t = xnode_text(e);
        if (strcmp(e->name, "mechanism") == 0 && strcmp(t, "EXTERNAL") == 0) external = 1;
        free(t);
    }
    if (!o->cert_ok && !srv->cfg->fed_dialback) {
        char why[200];
        snprintf(why, sizeof why, "peer certificate not verified (%s) and federation.dialback is false", o->cert_reason);
        out_fail(o, "remote-server-not-found", why);
    } else if (external) {
        /* XEP-0178: authorization identity = our domain, as Prosody and ejabberd send it */
        char *b64 = NULL;
        base64_encode((const unsigned char *)o->local, strlen(o->local), &b64);
        char *a = xasprintf("<auth xmlns='" NS_SASL "' mechanism='EXTERNAL'>%s</auth>", b64 ? b64 : "=");
        s2s_conn_send_str(c, a);
        free(a);
        free(b64);
        o->auth = AUTH_SASL;
    } else if (o->dialback_offered) {
        start_dialback(o);
    } else {
        out_fail(o, "remote-server-not-found", "the peer offers no authentication we can use");
    }
}

static void handle_db_answer(s2s_out_t *o, xnode_t *el)
{
    const char *type = xnode_attr(el, "type"), *from = xnode_attr(el, "from"), *to = xnode_attr(el, "to");
    char *f = from ? jid_prep_domain(from) : NULL, *t = to ? jid_prep_domain(to) : NULL;
    int ours = type && f && t && strcmp(f, o->remote) == 0 && strcmp(t, o->local) == 0;
    free(f);
    free(t);
    if (!ours) {
        log_debug("s2s", "outgoing %s -> %s: ignored a dialback element not meant for this stream", o->local, o->remote);
        return;
    }
    if (strcmp(el->name, "result") == 0) {
        /* only the answer to the db:result we sent on this very stream counts */
        if (o->auth != AUTH_DIALBACK || o->state == OUT_ESTABLISHED) return;
        if (strcmp(type, "valid") == 0) {
            out_established(o, "dialback");
        } else {
            xnode_t *e = xnode_child(el, "error", NULL);
            xnode_t *cond = e ? xnode_first_elem(e) : NULL;
            char why[160];
            snprintf(why, sizeof why, "the peer refused our dialback key (%s%s%s)", type, cond ? ": " : "",
                     cond ? cond->name : "");
            out_fail(o, "remote-server-not-found", why);
        }
        return;
    }
    /* db:verify answer: only for a request we sent (jabberd2 CVE-2012-3525) */
    const char *id = xnode_attr(el, "id");
    for (vreq_t **pv = &o->vq; id && *pv; pv = &(*pv)->next) {
        vreq_t *v = *pv;
        if (!v->sent || strcmp(v->id, id) != 0) continue;
        *pv = v->next;
        int result = strcmp(type, "valid") == 0 ? 1 : strcmp(type, "invalid") == 0 ? 0 : -1;
        v->done(v->serial, o->local, o->remote, result);
        free(v->id);
        free(v->key);
        free(v);
        return;
    }
    log_debug("s2s", "outgoing %s -> %s: ignored an unsolicited db:verify answer", o->local, o->remote);
}

static int out_stanza(s2s_conn_t *c, xnode_t *el)
{
    s2s_out_t *o = c->owner;
    int stop = 0;
    if (!o) {
        xnode_free(el);
        return 1;
    }
    if (strcmp(el->ns, NS_STREAMS) == 0 && strcmp(el->name, "features") == 0) {
        handle_features(o, el);
    } else if (strcmp(el->ns, NS_TLS) == 0 && strcmp(el->name, "proceed") == 0 && !c->tls_active) {
        struct ssl_st *ssl = tls_new_client_ssl(srv->tls, out_cert_host(o->local), o->remote);
        if (!ssl) {
            out_fail(o, "remote-server-not-found", "cannot set up TLS");
        } else {
            c->ssl = ssl;
            c->tls = srv->tls;
            tls_ref(c->tls);
            c->starttls_pending = 1;
            stop = 1;
        }
    } else if (strcmp(el->ns, NS_TLS) == 0) {
        out_fail(o, "remote-server-not-found", "the peer refused STARTTLS");
    } else if (strcmp(el->ns, NS_SASL) == 0 && o->auth == AUTH_SASL) {
        if (strcmp(el->name, "success") == 0) {
            o->auth = AUTH_SASL_OK;
            c->reset_pending = 1;                      /* RFC 6120 §6.4.6: restart the stream */
            s2s_conn_header(c, o->local, o->remote, NULL);
            stop = 1;
        } else if (o->dialback_offered) {
            log_debug("s2s", "outgoing %s -> %s: SASL EXTERNAL refused, trying dialback", o->local, o->remote);
            start_dialback(o);
        } else {
            out_fail(o, "remote-server-not-found", "the peer refused SASL EXTERNAL");
        }
    } else if (strcmp(el->ns, NS_DIALBACK) == 0) {
        handle_db_answer(o, el);
    } else {
        log_debug("s2s", "outgoing %s -> %s: ignored <%s/> from the peer", o->local, o->remote, el->name);
    }
    xnode_free(el);
    return stop;
}

static void out_gone(s2s_conn_t *c)
{
    s2s_out_t *o = c->owner;
    if (!o) return;
    o->conn = NULL;
    evtimer_del(o->attempt_timer);
    if (o->state == OUT_ESTABLISHED || o->state == OUT_CLOSING) {
        log_debug("s2s", "outgoing %s -> %s closed: %s", o->local, o->remote, c->why[0] ? c->why : "closed");
        o->state = OUT_IDLE;
        o->auth = AUTH_NONE;
        evtimer_del(o->timer);
        fail_verifies(o, 1);
        if (o->q || o->vq) out_start(o);       /* stanzas came while it was closing */
        else out_free(o);
        return;
    }
    if (o->state != OUT_CONNECTING) return;
    snprintf(o->last_why, sizeof o->last_why, "%s: %s", c->ip, c->why[0] ? c->why : "connection lost");
    if (c->peer_header_seen) {        /* the peer answered and then went: that is its verdict */
        char why[300];
        snprintf(why, sizeof why, "connection lost during negotiation (%s)", o->last_why);
        out_fail(o, "remote-server-not-found", why);
        return;
    }
    o->ai++;
    try_addr(o);
}

static const s2s_conn_cb_t out_cb = {out_open, out_stanza, out_tcp_up, out_tls_up, out_gone};

/* ---- finding the peer ---- */

static void on_attempt_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    s2s_out_t *o = arg;
    if (o->conn && !o->conn->peer_header_seen) {
        o->last_timed_out = 1;
        s2s_conn_abort(o->conn, "connection attempt timed out");
    }
}

static void try_addr(s2s_out_t *o)
{
    while (o->ai < o->naddrs) {
        const struct sockaddr_storage *ss = &o->addrs[o->ai];
        int len = ss->ss_family == AF_INET6 ? (int)sizeof(struct sockaddr_in6) : (int)sizeof(struct sockaddr_in);
        o->conn = s2s_conn_connect((const struct sockaddr *)ss, len, &out_cb, o);
        if (o->conn) {
            log_debug("s2s", "outgoing %s -> %s: connecting to %s (%s)", o->local, o->remote, o->conn->ip,
                      o->targets[o->ti].direct_tls ? "direct TLS" : "STARTTLS");
            struct timeval tv = {CONNECT_TIMEOUT, 0};
            evtimer_add(o->attempt_timer, &tv);
            return;
        }
        o->ai++;
    }
    o->ti++;
    try_target(o);
}

static void on_addrs(void *ud, dns_status_t status, const struct sockaddr_storage *addrs, size_t n)
{
    s2s_out_t *o = ud;
    o->aq = NULL;
    free(o->addrs);
    o->addrs = NULL;
    o->naddrs = o->ai = 0;
    if (n) {
        o->addrs = xmalloc(n * sizeof *addrs);
        memcpy(o->addrs, addrs, n * sizeof *addrs);
        o->naddrs = n;
    } else {
        snprintf(o->last_why, sizeof o->last_why, "%s: %s", o->targets[o->ti].host,
                 status == DNS_EMPTY ? "no address" : "address lookup failed");
    }
    try_addr(o);
}

static void try_target(s2s_out_t *o)
{
    while (o->ti < o->ntargets) {
        o->aq = dns_addr(o->targets[o->ti].host, o->targets[o->ti].port, on_addrs, o);
        if (o->aq) return;
        snprintf(o->last_why, sizeof o->last_why, "%s: cannot be looked up", o->targets[o->ti].host);
        o->ti++;
    }
    char why[300];
    snprintf(why, sizeof why, "no connection (%s)", o->last_why[0] ? o->last_why : "no address");
    out_fail(o, o->last_timed_out ? "remote-server-timeout" : "remote-server-not-found", why);
}

static void add_target(target_t **v, size_t *n, const char *host, int port, int priority, int direct_tls)
{
    *v = xrealloc(*v, (*n + 1) * sizeof **v);
    (*v)[*n] = (target_t){xstrdup(host), port, priority, direct_tls};
    (*n)++;
}

/* Both SRV answers are in: merge them by priority (each list is already in RFC 2782 order;
 * at equal priority direct TLS goes first, XEP-0368 §3), or fall back to the domain itself. */
static void srv_done(s2s_out_t *o)
{
    size_t i = 0, j = 0;
    while (i < o->nsrvt[0] || j < o->nsrvt[1]) {
        target_t *t = (j >= o->nsrvt[1] || (i < o->nsrvt[0] && o->srvt[0][i].priority <= o->srvt[1][j].priority))
                          ? &o->srvt[0][i++] : &o->srvt[1][j++];
        add_target(&o->targets, &o->ntargets, t->host, t->port, t->priority, t->direct_tls);
    }
    if (!o->ntargets) {
        if (o->srv_refused) {
            out_fail(o, "remote-server-not-found", "the domain's SRV records say it offers no federation ('.')");
            return;
        }
        add_target(&o->targets, &o->ntargets, o->remote, DEFAULT_PORT, 0, 0);   /* RFC 6120 §3.2.2 */
    }
    o->state = OUT_CONNECTING;
    try_target(o);
}

static void on_srv(s2s_out_t *o, int k, dns_status_t status, const dns_srv_rr_t *rrs, size_t n)
{
    o->srvq[k] = NULL;
    for (size_t i = 0; status == DNS_OK && i < n; i++) {
        if (!rrs[i].target[0]) {
            if (n == 1) o->srv_refused = 1;
            continue;
        }
        add_target(&o->srvt[k], &o->nsrvt[k], rrs[i].target, rrs[i].port, rrs[i].priority, k == 0);
    }
    if (!o->srvq[0] && !o->srvq[1]) srv_done(o);
}

static void on_srv_tls(void *ud, dns_status_t st, const dns_srv_rr_t *rrs, size_t n) { on_srv(ud, 0, st, rrs, n); }
static void on_srv_plain(void *ud, dns_status_t st, const dns_srv_rr_t *rrs, size_t n) { on_srv(ud, 1, st, rrs, n); }

/* A partner's route "host:port" or "[v6]:port". 0/-1 */
static int parse_route(const char *route, char **host, int *port)
{
    const char *colon = strrchr(route, ':');
    if (!colon || colon == route) return -1;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p < 1 || p > 65535) return -1;
    const char *h = route;
    size_t hl = (size_t)(colon - route);
    if (h[0] == '[' && hl > 2 && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    *host = xstrndup(h, hl);
    *port = (int)p;
    return 0;
}

static void out_start(s2s_out_t *o)
{
    free_targets(o);
    o->state = OUT_RESOLVING;
    o->auth = AUTH_NONE;
    o->cert_ok = 0;
    o->last_why[0] = '\0';
    o->last_timed_out = 0;
    timer_in(o, ESTABLISH_TIMEOUT * 1000);
    const cfg_partner_t *p = config_partner(srv->cfg, o->remote);
    char *host = NULL;
    int port = 0;
    if (p && p->route) {
        if (parse_route(p->route, &host, &port) < 0) {
            out_fail(o, "remote-server-not-found", "the partner's route is not host:port");
            return;
        }
        add_target(&o->targets, &o->ntargets, host, port, 0, 0);
        free(host);
        log_debug("s2s", "outgoing %s -> %s: static route %s", o->local, o->remote, p->route);
        o->state = OUT_CONNECTING;
        try_target(o);
        return;
    }
    if (!dns_name_is_ascii(o->remote)) {
        out_fail(o, "remote-server-not-found", "internationalised domain names cannot be looked up yet");
        return;
    }
    char *n0 = xasprintf("_xmpps-server._tcp.%s", o->remote), *n1 = xasprintf("_xmpp-server._tcp.%s", o->remote);
    o->srvq[0] = dns_srv(n0, on_srv_tls, o);
    o->srvq[1] = dns_srv(n1, on_srv_plain, o);
    free(n0);
    free(n1);
    if (!o->srvq[0] && !o->srvq[1]) srv_done(o);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    s2s_out_t *o = arg;
    switch (o->state) {
    case OUT_IDLE:                  /* back-off over */
        if (o->q || o->vq) out_start(o);
        else out_free(o);
        break;
    case OUT_RESOLVING:
    case OUT_CONNECTING: {
        char why[64];
        snprintf(why, sizeof why, "not established within %d seconds", ESTABLISH_TIMEOUT);
        out_fail(o, "remote-server-timeout", why);
        break;
    }
    case OUT_ESTABLISHED: {
        int64_t idle = now_ms() - o->last_used;
        if (idle >= OUT_IDLE_SECONDS * 1000) {
            log_debug("s2s", "outgoing %s -> %s idle, closing", o->local, o->remote);
            o->state = OUT_CLOSING;
            s2s_conn_close(o->conn, NULL, NULL, "idle");
        } else {
            timer_in(o, OUT_IDLE_SECONDS * 1000 - idle);
        }
        break;
    }
    case OUT_CLOSING:
        break;
    }
}

/* ---- entry points ---- */

/* Does the serialised stanza (bytes long) fit into o's queue (at most MAX_QUEUE stanzas and
 * limits.max_s2s_queue_bytes bytes as they will be sent)? */
static int queue_room(const s2s_out_t *o, size_t bytes)
{
    return o->qlen < MAX_QUEUE && o->qbytes + bytes <= (size_t)srv->cfg->max_s2s_queue_bytes;
}

void s2s_out_route(xnode_t *st)
{
    jid_t *from = jid_new(xnode_attr(st, "from")), *to = jid_new(xnode_attr(st, "to"));
    const char *why = NULL;
    size_t bytes = 0;
    char *xml = NULL;
    if (!from || !to || (!host_find(from->domain) && !component_find(from->domain))) {
        log_debug("s2s", "dropped a stanza to a remote domain without a local sender");
        xnode_free(st);
    } else if (srv->shutting_down) {
        /* going down: what can leave on an open stream (e.g. unavailable presence) still does */
        char *k = xasprintf("%s %s", from->domain, to->domain);
        s2s_out_t *o = outs ? strmap_get(outs, k) : NULL;
        free(k);
        if (o && o->state == OUT_ESTABLISHED && o->conn && !o->conn->closing) s2s_conn_send(o->conn, st);
        xnode_free(st);
    } else if (!s2s_policy_allows(to->domain, &why)) {
        log_info("s2s", "outgoing %s -> %s refused: %s", from->domain, to->domain, why);
        bounce(st, "cancel", "policy-violation", why);
    } else {
        s2s_out_t *o = out_get(from->domain, to->domain);
        if (o->state == OUT_ESTABLISHED && o->conn && !o->conn->closing) {
            s2s_conn_send(o->conn, st);
            o->last_used = now_ms();
            xnode_free(st);
        } else if (!(xml = xnode_serialize(st, NS_SERVER, &bytes))) {
            log_warn("s2s", "outgoing %s -> %s: cannot serialise an element, not sent", o->local, o->remote);
            xnode_free(st);
        } else if (!queue_room(o, bytes)) {
            /* RFC 6120 §8.3.3.18; bounce() never answers an error with an error (§8.3.1) */
            if (!o->qfull_logged)
                log_info("s2s", "outgoing %s -> %s: queue over %zu stanzas or %ld bytes (limits.max_s2s_queue_bytes) "
                         "while the stream is set up: bouncing with <resource-constraint/>", o->local, o->remote,
                         (size_t)MAX_QUEUE, srv->cfg->max_s2s_queue_bytes);
            o->qfull_logged = 1;
            bounce(st, "wait", "resource-constraint", NULL);
            free(xml);
        } else {
            qitem_t *i = xcalloc(1, sizeof *i);
            i->st = st;
            i->xml = xml;
            i->bytes = bytes;
            o->qbytes += bytes;
            *o->qtail = i;
            o->qtail = &i->next;
            o->qlen++;
            if (o->state == OUT_IDLE && now_ms() >= o->retry_at) out_start(o);
            /* else: connecting (it will be sent), closing (reconnects in gone), or in back-off
             * (the timer retries then) */
        }
    }
    jid_free(from);
    jid_free(to);
}

void s2s_out_verify(const char *local, const char *remote, const char *id, const char *key, uint64_t in_serial,
                    s2s_verify_done_fn done)
{
    const char *why;
    if (!s2s_policy_allows(remote, &why) || srv->shutting_down) {
        done(in_serial, local, remote, -1);
        return;
    }
    s2s_out_t *o = out_get(local, remote);
    if (o->state == OUT_IDLE && now_ms() < o->retry_at && !o->q && !o->vq) {
        done(in_serial, local, remote, -1);   /* it failed moments ago */
        return;
    }
    vreq_t *v = xcalloc(1, sizeof *v);
    v->id = xstrdup(id);
    v->key = xstrdup(key);
    v->serial = in_serial;
    v->done = done;
    v->next = o->vq;
    o->vq = v;
    if (o->conn && (o->state == OUT_ESTABLISHED || o->auth == AUTH_DIALBACK)) send_verify(o, v);
    else if (o->state == OUT_IDLE && now_ms() >= o->retry_at) out_start(o);
}

void s2s_out_close_all(void)
{
    size_t pos = 0;
    void *v;
    while (outs && strmap_next(outs, &pos, NULL, &v)) {
        s2s_out_t *o = v;
        cancel_lookups(o);
        if (o->conn) {
            o->conn->owner = NULL;
            s2s_conn_close(o->conn, NULL, NULL, "shutdown");
            o->conn = NULL;
        }
        o->state = OUT_CLOSING;
        evtimer_del(o->timer);
        evtimer_del(o->attempt_timer);
    }
}

void s2s_out_free_all(void)
{
    size_t pos = 0;
    void *v;
    while (outs && strmap_next(outs, &pos, NULL, &v)) {
        s2s_out_t *o = v;
        if (o->conn) o->conn->owner = NULL;
        out_free(o);        /* deletes the current key: allowed while iterating */
    }
    strmap_free(outs);
    outs = NULL;
}
