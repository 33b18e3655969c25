/* server/sasl.c: SASL negotiation on a client stream (RFC 6120 §6): the mechanisms offered,
 * SCRAM (RFC 5802/7677, -PLUS with channel binding) and PLAIN, and the per-address back-off. */
#include "sasl.h"
#include "fast_store.h"
#include "sasl2_req.h"
#include "server.h"
#include "ip_limits.h"
#include "stanza.h"
#include "scram.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <event2/event.h>

#define MAX_SASL_RETRIES 5        /* RFC 6120 §6.4.5: "at least 2 and no more than 5" */
#define SASL_FORGET_MS 600000     /* an address's failures are forgotten 10 minutes after the last */


/* ---- mechanisms ---- */

static const char *const all_mechs[];

static int mech_enabled(const char *mech)
{
    const config_t *c = srv->cfg;
    int known = 0;
    for (size_t i = 0; all_mechs[i]; i++)
        if (strcmp(all_mechs[i], mech) == 0) known = 1;
    if (!known) return 0;
    if (!c->sasl_mechanisms_set) return 1;
    for (size_t i = 0; i < c->sasl_mechanisms.n; i++)
        if (strcmp(c->sasl_mechanisms.v[i], mech) == 0) return 1;
    return 0;
}

static const char *const all_mechs[] = {"SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1",
                                        "PLAIN", NULL};

/* A mechanism is offered only when it can work on this stream: every one needs TLS first
 * (so PLAIN is never offered in the clear), -PLUS needs a channel binding we can supply. */
static int mech_offered(session_t *s, const char *mech)
{
    if (!s->tls_active || !mech_enabled(mech)) return 0;
    /* tls-server-end-point works on every TLS connection with a certificate; a WebSocket behind a
     * TLS-terminating proxy has none to bind to */
    if (strstr(mech, "-PLUS") && s->transport->channel_binding(s, "tls-server-end-point", NULL, NULL) != 0) return 0;
    return 1;
}

void sasl_drop_sasl2(session_t *s)
{
    if (!s->sasl2) return;
    sasl2_req_clear(s->sasl2);
    free(s->sasl2);
    s->sasl2 = NULL;
}

int sasl_mech_offered(session_t *s, const char *mech) { return mech_offered(s, mech); }

const char *sasl_mechanism_at(size_t i)
{
    return i < sizeof all_mechs / sizeof *all_mechs - 1 ? all_mechs[i] : NULL;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* XEP-0474 §6.1: the offered mechanisms sorted (i;octet) joined by 0x1E, then 0x1F and the sorted
 * channel-binding types when XEP-0440 advertised them. The same lists go to both SASL profiles. */
char *sasl_ssdp_string(session_t *s)
{
    const char *m[sizeof all_mechs / sizeof *all_mechs];
    size_t n = 0;
    for (size_t i = 0; all_mechs[i]; i++)
        if (mech_offered(s, all_mechs[i])) m[n++] = all_mechs[i];
    qsort(m, n, sizeof *m, cmp_str);
    char buf[256];       /* the names are short and few */
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", i ? "\x1e" : "", m[i]);
    if (sasl_plus_offered(s)) {   /* sorted: tls-exporter < tls-server-end-point */
        int exp = s->transport->channel_binding(s, "tls-exporter", NULL, NULL) == 0;
        snprintf(buf + len, sizeof buf - len, "\x1f%stls-server-end-point", exp ? "tls-exporter\x1e" : "");
    }
    return xstrdup(buf);
}

int sasl_plus_offered(session_t *s)
{
    return mech_offered(s, "SCRAM-SHA-256-PLUS") || mech_offered(s, "SCRAM-SHA-1-PLUS");
}

void sasl_add_mechanisms(session_t *s, xnode_t *features)
{
    xnode_t *m = xnode_add_elem(features, "mechanisms", NS_SASL);
    for (size_t i = 0; all_mechs[i]; i++)
        if (mech_offered(s, all_mechs[i])) xnode_add_text(xnode_add_elem(m, "mechanism", NULL), all_mechs[i]);
}

void sasl_add_channel_bindings(session_t *s, xnode_t *features)
{
    if (sasl_plus_offered(s)) {   /* XEP-0440: which channel-binding types work here */
        xnode_t *cb = xnode_add_elem(features, "sasl-channel-binding", "urn:xmpp:sasl-cb:0");
        xnode_set_attr(xnode_add_elem(cb, "channel-binding", NULL), "type", "tls-server-end-point");
        if (s->transport->channel_binding(s, "tls-exporter", NULL, NULL) == 0)
            xnode_set_attr(xnode_add_elem(cb, "channel-binding", NULL), "type", "tls-exporter");
    }
}

/* ---- SASL ---- */

static int get_creds(void *ud, const char *username, scram_hash_t h, scram_creds_t *out)
{
    session_t *s = ud;
    char *node = jid_prep_node(username);
    int r = node ? storage_account_get(srv->store, node, s->host->name, h, out) : 1;
    free(node);
    return r == 0 ? 0 : -1;
}

static int get_cb_data(void *ud, const char *type, unsigned char *buf, size_t *len)
{
    session_t *s = ud;
    return s->transport->channel_binding(s, type, buf, len);
}

static const scram_server_cb_t scram_cb = {get_creds, get_cb_data};

static void send_sasl(session_t *s, const char *what, const char *data, size_t len)
{
    /* SASL2's <success/> carries more (sasl2.c) */
    if (s->sasl2 && s->sasl2->on_success && strcmp(what, "success") == 0) {
        s->sasl2->on_success(s, data, len);
        return;
    }
    char *b64 = NULL;
    if (data && len) base64_encode((const unsigned char *)data, len, &b64);
    char *msg;
    if (s->sasl2) msg = xasprintf("<%s xmlns='" NS_SASL2 "'>%s</%s>", what, b64 ? b64 : "", what);  /* §2.2 */
    else if (data && !len) msg = xasprintf("<%s xmlns='" NS_SASL "'>=</%s>", what, what);
    else if (b64) msg = xasprintf("<%s xmlns='" NS_SASL "'>%s</%s>", what, b64, what);
    else msg = xasprintf("<%s xmlns='" NS_SASL "'/>", what);
    session_write_str(s, msg);
    free(msg);
    free(b64);
}

void sasl_reset(session_t *s)
{
    scram_server_free(s->scram);
    s->scram = NULL;
    FREE_AND_NULL(s->mech);
}

/* The per-address slot of an account's failures: a hash of its bare JID (0: no account named). */
static uint64_t account_key(session_t *s, const char *user)
{
    char *node = user ? jid_prep_node(user) : NULL;
    char *bare = node ? xasprintf("%s@%s", node, s->host->name) : NULL;
    unsigned char d[SCRAM_MAX_KEY];
    uint64_t k = 0;
    if (bare && scram_digest(SCRAM_SHA256, bare, strlen(bare), d) == 0) {
        memcpy(&k, d, sizeof k);
        if (!k) k = 1;
    }
    free(bare);
    free(node);
    return k;
}

/* Count a failure for the address, and for the account the client named when there is a slot for
 * it. Failures of unnamed or untracked accounts are forgiven only by time. */
static void count_failure(session_t *s, ip_state_t *ip, const char *user)
{
    int64_t now = now_ms();
    if (ip->sasl_failures && now - ip->last_failure_ms > SASL_FORGET_MS) {
        ip->sasl_failures = 0;
        memset(ip->sasl_account, 0, sizeof ip->sasl_account);
    }
    ip->sasl_failures++;
    ip->last_failure_ms = now;
    uint64_t k = account_key(s, user);
    int slot = -1;
    for (int i = 0; k && i < IP_SASL_ACCOUNTS; i++) {
        if (ip->sasl_account[i].account == k) {
            slot = i;
            break;
        }
        if (slot < 0 && !ip->sasl_account[i].account) slot = i;
    }
    if (slot < 0) return;
    ip->sasl_account[slot].account = k;
    ip->sasl_account[slot].failures++;
}

/* A success forgives the failures of that account only: another account's success (the attacker's
 * own, say) leaves the address's back-off in place. */
static void forgive_failures(session_t *s, ip_state_t *ip, const char *user)
{
    uint64_t k = account_key(s, user);
    for (int i = 0; k && i < IP_SASL_ACCOUNTS; i++) {
        if (ip->sasl_account[i].account != k) continue;
        ip->sasl_failures -= ip->sasl_account[i].failures;
        if (ip->sasl_failures < 0) ip->sasl_failures = 0;
        ip->sasl_account[i].account = 0;
        ip->sasl_account[i].failures = 0;
    }
}

/* A line for the user in SASL2's <failure/> (XEP-0388 §2.6.2), never telling whether an account exists. */
static const char *failure_text(const char *condition)
{
    static const char *const t[][2] = {
        {"not-authorized", "Authentication failed"},
        {"credentials-expired", "The token is no longer valid; log in with the password"},
        {"invalid-mechanism", "This mechanism is not offered"},
        {"malformed-request", "The request is malformed"},
        {"incorrect-encoding", "The data is not valid base64"},
        {"invalid-authzid", "You may authorize only as yourself"},
        {"encryption-required", "TLS is required"},
        {"aborted", "Authentication aborted"}};
    for (size_t i = 0; i < sizeof t / sizeof *t; i++)
        if (strcmp(t[i][0], condition) == 0) return t[i][1];
    return NULL;
}

/* user: the account the client tried (NULL when it named none). */
void sasl_fail_as(session_t *s, const char *user, const char *condition)
{
    ip_state_t *ip = ip_state_get(s->ip);
    count_failure(s, ip, user);
    sasl_reset(s);
    s->sasl_failures++;
    log_info("c2s", "%s: authentication failed (%s)", s->ip, condition);
    xnode_t *f;
    if (s->sasl2) {     /* XEP-0388 §2.6.2: the RFC 6120 condition, a text; inline requests are void */
        f = xnode_new("failure", NS_SASL2);
        xnode_add_elem(f, condition, NS_SASL);
        const char *text = failure_text(condition);
        if (text) xnode_add_text(xnode_add_elem(f, "text", NULL), text);
        sasl_drop_sasl2(s);
    } else {
        f = xnode_new("failure", NS_SASL);
        xnode_add_elem(f, condition, NULL);
    }
    if (s->sasl_failures > MAX_SASL_RETRIES) {
        session_send(s, f);
        xnode_free(f);
        session_close(s, "policy-violation", "too many authentication attempts");
        return;
    }
    /* Repeated failures from one address are slowed down: the answer (and further reading)
     * waits 2^(n-limit) seconds, at most 30. */
    int over = ip->sasl_failures - (int)srv->cfg->sasl_failures_per_ip;
    if (over > 0) {
        long secs = over >= 5 ? 30 : (1L << over);
        if (secs > 30) secs = 30;
        s->delayed = f;
        s->transport->stop(s, 0);
        struct timeval tv = {secs, 0};
        evtimer_add(s->delay_ev, &tv);
        return;
    }
    session_send(s, f);
    xnode_free(f);
}

static void sasl_fail(session_t *s, const char *condition)
{
    sasl_fail_as(s, s->scram ? scram_server_claimed_username(s->scram) : NULL, condition);
}

void sasl_success(session_t *s, const char *user, const char *authzid, const char *extra, size_t extra_len)
{
    char *node = jid_prep_node(user);
    if (!node) {
        sasl_fail_as(s, user, "not-authorized");
        return;
    }
    if (authzid && *authzid) {   /* we authorise only as oneself */
        jid_t *az = jid_new(authzid);
        int okz = az && !az->resource && az->node && strcmp(az->node, node) == 0 &&
                  strcmp(az->domain, s->host->name) == 0;
        jid_free(az);
        if (!okz) {
            free(node);
            sasl_fail_as(s, user, "invalid-authzid");
            return;
        }
    }
    sasl_reset(s);
    if (ip_count_session(s) < 0) {
        free(node);
        log_info("c2s", "%s: authenticated, but limits.max_sessions_per_ip is reached", s->ip);
        session_close(s, "policy-violation", "too many sessions from this address");
        return;
    }
    s->user = node;
    s->authenticated = 1;
    if (s->counted_unauth) {
        s->counted_unauth = 0;
        srv->unauthenticated--;
    }
    forgive_failures(s, ip_state_get(s->ip), node);
    if (fast_expire(srv->store, node, s->host->name, now_unix()) < 0)   /* XEP-0484 rows of clients gone */
        log_warn("c2s", "%s: expiring FAST tokens failed: %s", s->ip, storage_last_error(srv->store));
    log_info("c2s", "%s: authenticated %s@%s (%s)", s->ip, log_jid(node), s->host->name, tls_version_name(s->ssl));
    send_sasl(s, "success", extra, extra_len);
}

/* The payload of <auth>/<response>: base64, where "=" means empty (RFC 6120 §6.4.2). */
static int sasl_payload(xnode_t *el, unsigned char **out, size_t *len)
{
    char *t = xnode_text(el);
    int r = 0;
    *out = NULL;
    *len = 0;
    if (strcmp(t, "=") == 0 || *t == '\0') {
        *out = (unsigned char *)xstrdup("");
    } else if (base64_decode(t, strlen(t), out, len) < 0) {
        r = -1;
    }
    free(t);
    return r;
}

static void sasl_step(session_t *s, const unsigned char *in, size_t len)
{
    char *out = NULL;
    size_t outlen = 0;
    const char *failure = "not-authorized";
    scram_step_t r = scram_server_step(s->scram, in, len, &out, &outlen, &failure);
    if (r == SCRAM_CONTINUE) send_sasl(s, "challenge", out, outlen);
    else if (r == SCRAM_OK) {
        char *user = xstrdup(scram_server_username(s->scram));
        char *az = xstrdup(scram_server_authzid(s->scram));
        sasl_success(s, user, az, out, outlen);
        free(user);
        free(az);
    } else sasl_fail(s, failure ? failure : "not-authorized");
    free(out);
}

static void handle_plain(session_t *s, const unsigned char *in, size_t len)
{
    char *authzid = NULL, *authcid = NULL, *pw = NULL;
    scram_creds_t creds;
    if (sasl_plain_parse(in, len, &authzid, &authcid, &pw) < 0) {
        sasl_fail(s, "malformed-request");
        return;
    }
    char *node = jid_prep_node(authcid);
    int found = node && storage_account_get(srv->store, node, s->host->name, SCRAM_SHA256, &creds) == 0;
    /* an unknown user costs the same PBKDF2 run as a wrong password (issue 9 item 8) */
    if (!found) scram_fake_creds(SCRAM_SHA256, node ? node : authcid, (unsigned)srv->cfg->scram_iterations, &creds);
    int match = scram_check_password(&creds, pw) == 1;
    if (found && match) sasl_success(s, authcid, authzid, NULL, 0);
    else sasl_fail_as(s, authcid, "not-authorized");
    explicit_bzero(&creds, sizeof creds);
    explicit_bzero(pw, strlen(pw));
    free(node);
    free(authzid);
    free(authcid);
    free(pw);
}

void sasl_begin(session_t *s, const char *mech, const unsigned char *in, size_t len)
{
    if (s->mech) sasl_reset(s);   /* a new start in the middle of an exchange aborts it */
    if (!mech || !mech_offered(s, mech)) {
        sasl_fail(s, "invalid-mechanism");
        return;
    }
    s->mech = xstrdup(mech);
    if (strcmp(mech, "PLAIN") == 0) {
        handle_plain(s, in, len);
    } else {
        int sha256 = strncmp(mech, "SCRAM-SHA-256", 13) == 0;
        int plus = strstr(mech, "-PLUS") != NULL;
        s->scram = scram_server_new(sha256 ? SCRAM_SHA256 : SCRAM_SHA1, plus, sasl_plus_offered(s), &scram_cb, s);
        scram_server_set_iterations(s->scram, (unsigned)srv->cfg->scram_iterations);  /* unknown users */
        char *ssdp = sasl_ssdp_string(s);       /* XEP-0474 */
        scram_server_set_ssdp(s->scram, ssdp);
        free(ssdp);
        if (len == 0) send_sasl(s, "challenge", "", 0);   /* no initial response: ask for it */
        else sasl_step(s, in, len);
    }
}

void sasl_respond(session_t *s, const unsigned char *in, size_t len)
{
    if (!s->scram) sasl_fail(s, "malformed-request");
    else sasl_step(s, in, len);
}

static void handle_auth(session_t *s, xnode_t *el)
{
    const char *mech = xnode_attr(el, "mechanism");
    if (s->authenticated) {
        session_close(s, "policy-violation", "already authenticated");
        return;
    }
    sasl_drop_sasl2(s);     /* this exchange speaks RFC 6120's profile */
    if (!s->tls_active) {   /* every mechanism needs TLS here (RFC 6120 §6.5.2) */
        sasl_fail(s, "encryption-required");
        return;
    }
    if (s->mech) sasl_reset(s);
    if (!mech || !mech_offered(s, mech)) {
        sasl_fail(s, "invalid-mechanism");
        return;
    }
    unsigned char *in;
    size_t len;
    if (sasl_payload(el, &in, &len) < 0) {
        sasl_fail(s, "incorrect-encoding");
        return;
    }
    sasl_begin(s, mech, in, len);
    free(in);
}

void sasl_handle(session_t *s, xnode_t *el)
{
    if (strcmp(el->name, "auth") == 0) {
        handle_auth(s, el);
        return;
    }
    if (!s->mech || s->authenticated || s->sasl2) {
        /* a response or abort without an exchange: the client is confused */
        if (strcmp(el->name, "abort") == 0 || strcmp(el->name, "response") == 0) {
            sasl_fail(s, "aborted");
            return;
        }
        session_close(s, "unsupported-stanza-type", NULL);
        return;
    }
    if (strcmp(el->name, "abort") == 0) {
        sasl_fail(s, "aborted");
    } else if (strcmp(el->name, "response") == 0 && s->scram) {
        unsigned char *in;
        size_t len;
        if (sasl_payload(el, &in, &len) < 0) {
            sasl_fail(s, "incorrect-encoding");
            return;
        }
        sasl_step(s, in, len);
        free(in);
    } else {
        sasl_fail(s, "malformed-request");
    }
}
