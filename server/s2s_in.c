/* server/s2s_in.c: incoming server-to-server streams: required STARTTLS, SASL EXTERNAL (XEP-0178),
 * dialback as receiving and authoritative server (XEP-0220), and the checks on every peer stanza. */
#include "s2s_in.h"
#include "s2s_out.h"
#include "dialback.h"
#include "ip_limits.h"
#include "certcheck.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define IN_IDLE_SECONDS 600         /* an authenticated stream without stanzas this long is closed */
#define MAX_PAIRS 64                /* domain pairs one stream may authenticate (piggybacking) */

typedef struct in_pair {
    char *from, *to;                /* remote domain, our domain */
    int ok;                         /* 1 authenticated, 0 dialback verification under way */
    struct in_pair *next;
} in_pair_t;

typedef struct s2s_in {
    s2s_conn_t *conn;
    uint64_t serial;
    char key[24];                   /* serial as text: the key in `streams` */
    host_t *host;                   /* the stream header's 'to' */
    char *hdr_from;                 /* the header's 'from', prepared, or NULL */
    char id[33];                    /* our stream id (dialback keys are bound to it) */
    char ip[64];
    unsigned sasl_done : 1, any_auth : 1, refusal_logged : 1, direct_tls : 1;
    int npairs;
    char *cert_domain;              /* the last certificate check: for this domain, */
    int cert_ok;                    /* ... this verdict, */
    char cert_reason[96];           /* ... and why not */
    in_pair_t *pairs;
    struct event *timer;
    int64_t last_active;
} s2s_in_t;

static strmap_t *streams;           /* serial text -> s2s_in_t */
static uint64_t next_serial = 1;

static void send_features(s2s_in_t *in);

/* ---- helpers ---- */

static in_pair_t *pair_find(s2s_in_t *in, const char *from, const char *to)
{
    for (in_pair_t *p = in->pairs; p; p = p->next)
        if (strcmp(p->from, from) == 0 && strcmp(p->to, to) == 0) return p;
    return NULL;
}

static in_pair_t *pair_add(s2s_in_t *in, const char *from, const char *to, int ok)
{
    in_pair_t *p = xcalloc(1, sizeof *p);
    p->from = xstrdup(from);
    p->to = xstrdup(to);
    p->ok = ok;
    p->next = in->pairs;
    in->pairs = p;
    in->npairs++;
    return p;
}

static void pair_remove(s2s_in_t *in, in_pair_t *victim)
{
    for (in_pair_t **pp = &in->pairs; *pp; pp = &(*pp)->next)
        if (*pp == victim) {
            *pp = victim->next;
            in->npairs--;
            free(victim->from);
            free(victim->to);
            free(victim);
            return;
        }
}

static void authenticated(s2s_in_t *in, in_pair_t *p, const char *how)
{
    p->ok = 1;
    if (!in->any_auth) s2s_conn_authenticated_limits(in->conn);
    in->any_auth = 1;
    in->last_active = now_ms();
    log_info("s2s", "incoming %s -> %s authenticated (%s) from %s%s", p->from, p->to, how, in->ip,
             in->direct_tls ? ", direct TLS" : "");
}

/* Does the peer's certificate verify for domain? Remembered for the last domain asked. */
static int cert_ok_for(s2s_in_t *in, const char *domain, const char **reason)
{
    if (!in->conn->tls_active || !in->conn->ssl) {
        *reason = "no TLS";
        return 0;
    }
    if (!in->cert_domain || strcmp(in->cert_domain, domain) != 0) {
        const char *r = NULL;
        in->cert_ok = certcheck_peer(in->conn->ssl, domain, s2s_partner_ca(domain), &r);
        snprintf(in->cert_reason, sizeof in->cert_reason, "%s", r ? r : "");
        free(in->cert_domain);
        in->cert_domain = xstrdup(domain);
    }
    *reason = in->cert_reason;
    return in->cert_ok;
}

static void on_timer(evutil_socket_t fd, short what, void *arg);

static void arm_timer(s2s_in_t *in, long seconds)
{
    if (!in->timer) in->timer = evtimer_new(srv->base, on_timer, in);
    struct timeval tv = {seconds, 0};
    evtimer_add(in->timer, &tv);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    s2s_in_t *in = arg;
    if (!in->any_auth) {
        s2s_conn_close(in->conn, "connection-timeout", NULL, "not authenticated in time");
        return;
    }
    int64_t idle = (now_ms() - in->last_active) / 1000;
    if (idle >= IN_IDLE_SECONDS) {
        log_debug("s2s", "incoming stream from %s idle, closing", in->ip);
        s2s_conn_close(in->conn, NULL, NULL, "idle");
        return;
    }
    arm_timer(in, IN_IDLE_SECONDS - (long)idle);
}

/* Text content without surrounding white space (malloc'd). */
static char *trimmed_text(const xnode_t *el)
{
    char *t = xnode_text(el);
    char *s = t;
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n') s++;
    size_t l = strlen(s);
    while (l && (s[l - 1] == ' ' || s[l - 1] == '\t' || s[l - 1] == '\r' || s[l - 1] == '\n')) l--;
    char *r = xstrndup(s, l);
    free(t);
    return r;
}

/* ---- stream header and features ---- */

static int in_open(s2s_conn_t *c, const char *ns_stream, const char *name, const char *content_ns, const char **attrs)
{
    s2s_in_t *in = c->owner;
    const char *to = s2s_attr(attrs, "to"), *from = s2s_attr(attrs, "from"), *version = s2s_attr(attrs, "version");
    char *dom = to ? jid_prep_domain(to) : NULL;
    host_t *h = dom ? host_find(dom) : NULL;
    if (dom && !h) h = component_host(dom);         /* a component's domain is ours too */
    free(dom);
    if (in->host && h != in->host) h = NULL;        /* a restart may not switch domains */
    char *pfrom = from ? jid_prep_domain(from) : NULL;
    random_hex(in->id, 16);
    s2s_conn_header(c, h ? h->name : NULL, pfrom, in->id);
    const char *bad = xstream_check_header(ns_stream, name);
    const char *why = NULL;
    if (bad || !content_ns || strcmp(content_ns, NS_SERVER) != 0) {
        s2s_conn_close(c, "invalid-namespace", NULL, "not a server stream");
    } else if (!h) {
        log_info("s2s", "incoming from %s refused: host-unknown", in->ip);
        s2s_conn_close(c, "host-unknown", NULL, "host-unknown");
    } else if (from && !pfrom) {
        s2s_conn_close(c, "invalid-from", NULL, "invalid 'from'");
    } else if (!version || atoi(version) != 1) {
        s2s_conn_close(c, "unsupported-version", NULL, "version");
    } else if ((pfrom && !s2s_policy_allows(pfrom, &why)) || (!pfrom && srv->cfg->fed_mode == FED_OFF)) {
        if (!why) why = "federation is off";
        log_info("s2s", "incoming %s -> %s refused: %s", pfrom ? pfrom : "(no from)", h->name, why);
        s2s_conn_close(c, "policy-violation", why, "policy");
    } else {
        in->host = h;
        free(in->hdr_from);
        in->hdr_from = pfrom;
        if (!in->any_auth) arm_timer(in, srv->cfg->auth_timeout);
        send_features(in);
        return 0;
    }
    free(pfrom);
    return -1;
}

static void send_features(s2s_in_t *in)
{
    s2s_conn_t *c = in->conn;
    xnode_t *f = xnode_new("features", NS_STREAMS);
    if (!c->tls_active) {
        xnode_add_elem(xnode_add_elem(f, "starttls", NS_TLS), "required", NULL);   /* RFC 6120 §5.3.1 */
    } else {
        const char *reason = "the stream header has no 'from'";
        int cert = in->hdr_from ? cert_ok_for(in, in->hdr_from, &reason) : 0;
        if (cert && !in->sasl_done)
            xnode_add_text(xnode_add_elem(xnode_add_elem(f, "mechanisms", NS_SASL), "mechanism", NULL), "EXTERNAL");
        /* dialback: the fallback where certificates cannot be verified, if the admin allows it;
         * with a verified certificate a dialback request is granted on the certificate (XEP-0344) */
        if (srv->cfg->fed_dialback || cert)
            xnode_add_elem(xnode_add_elem(f, "dialback", NS_DIALBACK_FEATURE), "errors", NULL);
        if (!cert && !srv->cfg->fed_dialback && !in->any_auth && in->hdr_from && !in->refusal_logged) {
            in->refusal_logged = 1;
            log_info("s2s", "incoming %s -> %s refused: certificate not verified (%s) and federation.dialback is false",
                     in->hdr_from, in->host->name, reason);
        }
    }
    s2s_conn_send_prefixed(c, f);      /* <stream:features>: ejabberd knows no other form */
    xnode_free(f);
}

/* ---- STARTTLS and SASL EXTERNAL ---- */

static void handle_starttls(s2s_in_t *in)
{
    s2s_conn_t *c = in->conn;
    struct ssl_st *ssl = tls_new_ssl_s2s(srv->tls);
    if (!ssl) {
        s2s_conn_send_str(c, "<failure xmlns='" NS_TLS "'/>");
        s2s_conn_close(c, NULL, NULL, "cannot start TLS");
        return;
    }
    c->ssl = ssl;
    c->tls = srv->tls;
    tls_ref(c->tls);
    s2s_conn_send_str(c, "<proceed xmlns='" NS_TLS "'/>");
    c->starttls_pending = 1;
}

static void sasl_failure(s2s_in_t *in, const char *cond)
{
    char *m = xasprintf("<failure xmlns='" NS_SASL "'><%s/></failure>", cond);
    s2s_conn_send_str(in->conn, m);
    free(m);
}

/* The authorization identity of an EXTERNAL <auth/>: NULL when empty ("=" or nothing, then the
 * stream's 'from' is meant), else the prepared domain, or "" when it is no valid domain. */
static char *external_authzid(const xnode_t *el)
{
    char *t = trimmed_text(el);
    if (!*t || strcmp(t, "=") == 0) {
        free(t);
        return NULL;
    }
    unsigned char *raw = NULL;
    size_t len = 0;
    char *dom = NULL;
    if (base64_decode(t, strlen(t), &raw, &len) == 0 && len && !memchr(raw, 0, len)) {
        char *s = xstrndup((const char *)raw, len);
        dom = jid_prep_domain(s);
        free(s);
    }
    free(raw);
    free(t);
    return dom ? dom : xstrdup("");
}

static void handle_sasl(s2s_in_t *in, xnode_t *el)
{
    if (strcmp(el->name, "auth") != 0) {
        sasl_failure(in, strcmp(el->name, "abort") == 0 ? "aborted" : "malformed-request");
        return;
    }
    if (in->sasl_done) {
        s2s_conn_close(in->conn, "policy-violation", "already authenticated", "SASL again");
        return;
    }
    const char *mech = xnode_attr(el, "mechanism");
    if (!mech || strcmp(mech, "EXTERNAL") != 0) {
        sasl_failure(in, "invalid-mechanism");
        return;
    }
    char *authz = external_authzid(el);
    const char *domain = authz ? authz : in->hdr_from;
    const char *why = NULL, *reason = NULL;
    if (!domain || !*domain || (in->hdr_from && strcmp(domain, in->hdr_from) != 0)) {
        /* XEP-0178 §3: the authorization identity, if any, is the 'from' of the stream */
        sasl_failure(in, "invalid-authzid");
    } else if (!s2s_policy_allows(domain, &why)) {
        log_info("s2s", "incoming %s -> %s refused: %s", domain, in->host->name, why);
        sasl_failure(in, "not-authorized");
    } else if (!cert_ok_for(in, domain, &reason)) {
        log_info("s2s", "incoming %s -> %s refused: SASL EXTERNAL with a certificate that does not verify (%s)",
                 domain, in->host->name, reason);
        sasl_failure(in, "not-authorized");
    } else {
        in_pair_t *p = pair_find(in, domain, in->host->name);
        if (!p) p = pair_add(in, domain, in->host->name, 1);
        in->sasl_done = 1;
        authenticated(in, p, "SASL EXTERNAL");
        s2s_conn_send_str(in->conn, "<success xmlns='" NS_SASL "'/>");
        in->conn->reset_pending = 1;       /* RFC 6120 §6.4.6: the stream restarts */
    }
    free(authz);
}

/* ---- dialback ---- */

static void db_answer(s2s_in_t *in, const char *name, const char *from, const char *to, const char *id,
                      const char *type, const char *error)
{
    xnode_t *r = xnode_new(name, NS_DIALBACK);
    xnode_set_attr(r, "from", from);
    xnode_set_attr(r, "to", to);
    if (id) xnode_set_attr(r, "id", id);
    xnode_set_attr(r, "type", type);
    if (error) {
        xnode_t *e = xnode_add_elem(r, "error", NS_SERVER);       /* in jabber:server, as XEP-0220 writes it */
        xnode_set_attr(e, "type", "cancel");
        xnode_add_elem(e, error, NS_STANZAS);
    }
    s2s_conn_send_prefixed(in->conn, r);    /* <db:result>, <db:verify>: ejabberd knows no other form */
    xnode_free(r);
}

/* Receiving-server role: the peer claims `from` towards our `to` (XEP-0220 §2.1.1). */
static void handle_db_result(s2s_in_t *in, xnode_t *el)
{
    if (xnode_attr(el, "type")) {
        /* an answer on a stream where we asked nothing: never a reason to trust anyone
         * (jabberd2 CVE-2012-3525) */
        log_debug("s2s", "%s: ignored an unsolicited dialback answer", in->ip);
        return;
    }
    const char *from_a = xnode_attr(el, "from"), *to_a = xnode_attr(el, "to");
    if (!from_a || !to_a) {
        s2s_conn_close(in->conn, "improper-addressing", NULL, "dialback without from/to");
        return;
    }
    char *from = jid_prep_domain(from_a), *to = jid_prep_domain(to_a), *key = trimmed_text(el);
    const char *why = NULL, *reason = NULL;
    in_pair_t *p;
    if (!from) {
        s2s_conn_close(in->conn, "invalid-from", NULL, "dialback with an invalid from");
    } else if (!to || (!host_find(to) && !component_find(to))) {
        log_info("s2s", "incoming %s -> %s refused: not a domain of ours", from, to_a);
        db_answer(in, "result", to_a, from, NULL, "error", "item-not-found");
    } else if (!s2s_policy_allows(from, &why)) {
        log_info("s2s", "incoming %s -> %s refused: %s", from, to, why);
        db_answer(in, "result", to, from, NULL, "error", "policy-violation");
    } else if ((p = pair_find(in, from, to))) {
        if (p->ok) db_answer(in, "result", to, from, NULL, "valid", NULL);   /* asked again: same answer */
    } else if (in->npairs >= MAX_PAIRS) {
        s2s_conn_close(in->conn, "policy-violation", "too many domains on one stream", "too many domains");
    } else if (cert_ok_for(in, from, &reason)) {
        p = pair_add(in, from, to, 0);
        authenticated(in, p, "certificate, on a dialback request");
        db_answer(in, "result", to, from, NULL, "valid", NULL);
    } else if (!srv->cfg->fed_dialback) {
        log_info("s2s", "incoming %s -> %s refused: certificate not verified (%s) and federation.dialback is false",
                 from, to, reason);
        db_answer(in, "result", to, from, NULL, "error", "not-authorized");
    } else if (!*key) {
        log_info("s2s", "incoming %s -> %s refused: empty dialback key", from, to);
        db_answer(in, "result", to, from, NULL, "invalid", NULL);
    } else {
        pair_add(in, from, to, 0);
        log_debug("s2s", "incoming %s -> %s: verifying the dialback key with %s", from, to, from);
        s2s_out_verify(to, from, in->id, key, in->serial, s2s_in_verify_result);
    }
    free(from);
    free(to);
    free(key);
}

void s2s_in_verify_result(uint64_t in_serial, const char *local, const char *remote, int result)
{
    char k[24];
    snprintf(k, sizeof k, "%" PRIu64, in_serial);
    s2s_in_t *in = streams ? strmap_get(streams, k) : NULL;
    if (!in || in->conn->closing) return;
    in_pair_t *p = pair_find(in, remote, local);
    if (!p || p->ok) return;
    if (result == 1) {
        authenticated(in, p, "dialback");
        db_answer(in, "result", local, remote, NULL, "valid", NULL);
        return;
    }
    log_info("s2s", "incoming %s -> %s refused: %s", remote, local,
             result == 0 ? "dialback key invalid" : "no answer from its authoritative server");
    pair_remove(in, p);
    if (result == 0) db_answer(in, "result", local, remote, NULL, "invalid", NULL);
    else db_answer(in, "result", local, remote, NULL, "error", "remote-connection-failed");
}

/* Authoritative-server role: is this key one we made (XEP-0220 §2.1.3)? Stateless: the key is
 * bound to the domains and the stream id by the HMAC. */
static void handle_db_verify(s2s_in_t *in, xnode_t *el)
{
    if (xnode_attr(el, "type")) {
        log_debug("s2s", "%s: ignored a dialback verification answer on an incoming stream", in->ip);
        return;
    }
    const char *from_a = xnode_attr(el, "from"), *to_a = xnode_attr(el, "to"), *id = xnode_attr(el, "id");
    if (!from_a || !to_a || !id) {
        s2s_conn_close(in->conn, "improper-addressing", NULL, "db:verify without from/to/id");
        return;
    }
    char *from = jid_prep_domain(from_a), *to = jid_prep_domain(to_a), *key = trimmed_text(el);
    if (!from) {
        s2s_conn_close(in->conn, "invalid-from", NULL, "db:verify with an invalid from");
    } else if (!to || (!host_find(to) && !component_find(to))) {
        db_answer(in, "verify", to_a, from, id, "error", "item-not-found");
    } else {
        int valid = dialback_check(from, to, id, key);
        log_info("s2s", "dialback verification from %s for our %s answered %s", from, to, valid ? "valid" : "invalid");
        db_answer(in, "verify", to, from, id, valid ? "valid" : "invalid", NULL);
    }
    free(from);
    free(to);
    free(key);
}

/* ---- stanzas ---- */

static void handle_stanza(s2s_in_t *in, xnode_t *st)
{
    const char *from = xnode_attr(st, "from"), *to = xnode_attr(st, "to");
    jid_t *fj = from ? jid_new(from) : NULL, *tj = to ? jid_new(to) : NULL;
    in_pair_t *p = NULL;
    /* RFC 6120 §4.9.3.11, §4.9.3.6, §4.9.3.9 */
    if (!fj || !tj) {
        s2s_conn_close(in->conn, "improper-addressing", NULL, "stanza without a valid from/to");
    } else if (!host_find(tj->domain) && !component_find(tj->domain)) {
        s2s_conn_close(in->conn, "host-unknown", NULL, "stanza to a domain we do not serve");
    } else if (!(p = pair_find(in, fj->domain, tj->domain)) || !p->ok) {
        s2s_conn_close(in->conn, "invalid-from", NULL, "stanza from a domain not authenticated on this stream");
    } else {
        in->last_active = now_ms();
        xnode_set_attr(st, "from", fj->full);
        xnode_set_attr(st, "to", tj->full);
        s2s_stanza_to_client_ns(st);
        char *dom = xstrdup(fj->domain);
        jid_free(fj);
        jid_free(tj);
        s2s_deliver_remote(st, dom);
        free(dom);
        return;
    }
    jid_free(fj);
    jid_free(tj);
    xnode_free(st);
}

static int is_stanza(const xnode_t *el)
{
    return strcmp(el->ns, NS_SERVER) == 0 &&
           (strcmp(el->name, "message") == 0 || strcmp(el->name, "presence") == 0 || strcmp(el->name, "iq") == 0);
}

static int in_stanza(s2s_conn_t *c, xnode_t *el)
{
    s2s_in_t *in = c->owner;
    if (!c->tls_active) {
        if (strcmp(el->ns, NS_TLS) == 0 && strcmp(el->name, "starttls") == 0) handle_starttls(in);
        else if (is_stanza(el)) s2s_conn_close(c, "not-authorized", "TLS and authentication are required", "early stanza");
        else if (strcmp(el->ns, NS_DIALBACK) == 0 || strcmp(el->ns, NS_SASL) == 0)
            s2s_conn_close(c, "policy-violation", "TLS is required", "no TLS");
        else s2s_conn_close(c, "unsupported-stanza-type", NULL, "unknown element");
    } else if (strcmp(el->ns, NS_TLS) == 0) {
        s2s_conn_close(c, "policy-violation", "TLS is already established", "STARTTLS again");
    } else if (strcmp(el->ns, NS_SASL) == 0) {
        handle_sasl(in, el);
    } else if (strcmp(el->ns, NS_DIALBACK) == 0 && strcmp(el->name, "result") == 0) {
        handle_db_result(in, el);
    } else if (strcmp(el->ns, NS_DIALBACK) == 0 && strcmp(el->name, "verify") == 0) {
        handle_db_verify(in, el);
    } else if (is_stanza(el)) {
        handle_stanza(in, el);     /* takes ownership */
        return 0;
    } else {
        s2s_conn_close(c, "unsupported-stanza-type", NULL, "unknown element");
    }
    xnode_free(el);
    return 0;
}

static void in_gone(s2s_conn_t *c)
{
    s2s_in_t *in = c->owner;
    log_debug("s2s", "incoming stream from %s gone: %s", in->ip, c->why[0] ? c->why : "closed");
    strmap_del(streams, in->key);
    if (strmap_count(streams) == 0) {
        strmap_free(streams);
        streams = NULL;
    }
    ip_state_t *ip = ip_state_get(in->ip);
    ip->connections--;
    ip_state_release(in->ip);
    while (in->pairs) pair_remove(in, in->pairs);
    if (in->timer) event_free(in->timer);
    free(in->hdr_from);
    free(in->cert_domain);
    free(in);
}

static const s2s_conn_cb_t in_cb = {in_open, in_stanza, NULL, NULL, in_gone};

void s2s_in_accept(int fd, const char *peer_ip, int direct_tls)
{
    ip_state_t *ip = ip_state_get(peer_ip);
    if (srv->shutting_down || ip->connections >= srv->cfg->max_connections_per_ip) {
        log_info("s2s", "incoming from %s refused: connection limits", peer_ip);
        ip_state_release(peer_ip);
        close(fd);
        return;
    }
    struct ssl_st *ssl = NULL;
    if (direct_tls && !(ssl = tls_new_ssl_s2s(srv->tls))) {
        log_warn("s2s", "%s: cannot set up TLS", peer_ip);
        ip_state_release(peer_ip);
        close(fd);
        return;
    }
    ip->connections++;
    if (!streams) streams = strmap_new();
    s2s_in_t *in = xcalloc(1, sizeof *in);
    in->serial = next_serial++;
    snprintf(in->key, sizeof in->key, "%" PRIu64, in->serial);
    snprintf(in->ip, sizeof in->ip, "%s", peer_ip);
    in->last_active = now_ms();
    in->direct_tls = direct_tls != 0;
    strmap_put(streams, in->key, in);
    in->conn = s2s_conn_accept(fd, peer_ip, ssl, &in_cb, in);
    arm_timer(in, srv->cfg->stream_header_timeout);
    log_debug("s2s", "incoming connection from %s (%s)", peer_ip, direct_tls ? "direct TLS" : "STARTTLS port");
}

void s2s_in_close_all(void)
{
    size_t pos = 0;
    void *v;
    while (streams && strmap_next(streams, &pos, NULL, &v)) {
        s2s_in_t *in = v;
        s2s_conn_close(in->conn, "system-shutdown", NULL, "shutdown");
    }
}
