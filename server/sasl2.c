/* server/sasl2.c: XEP-0388 SASL2 on a client stream: the <authentication/> feature with XEP-0386
 * Bind2 and XEP-0484 FAST inline, <authenticate/>/<response/>/<abort/>, and the <success/> that
 * records the user agent, issues tokens, binds a resource and enables what the client asked for
 * inline, without a stream restart. Mechanisms, channel bindings, back-off: sasl.c's. */
#include "sasl2.h"
#include "sasl.h"
#include "fast.h"
#include "hook.h"
#include "server.h"
#include "stanza.h"
#include "scram.h"
#include <stdlib.h>
#include <string.h>

#define UA_KEY "sasl2.user-agent"   /* session data: the client's user-agent id (XEP-0388 §2.3) */

void sasl2_add_features(session_t *s, xnode_t *features)
{
    xnode_t *a = xnode_new("authentication", NS_SASL2);
    int n = 0;
    for (size_t i = 0; sasl_mechanism_at(i); i++)
        if (sasl_mech_offered(s, sasl_mechanism_at(i))) {
            xnode_add_text(xnode_add_elem(a, "mechanism", NULL), sasl_mechanism_at(i));
            n++;
        }
    if (!n) {     /* §2.1: never offered without a mechanism */
        xnode_free(a);
        return;
    }
    xnode_t *inl = xnode_add_elem(a, "inline", NULL);
    /* XEP-0386 §3.1: Bind2, with what modules can enable inline ("bind2/inline") */
    xnode_t *bind_inline = xnode_add_elem(xnode_add_elem(inl, "bind", NS_BIND2), "inline", NS_BIND2);
    hook_event_t ev = {.name = "bind2/inline", .origin = s, .host = s->host, .features = bind_inline};
    hook_fire(&ev);
    fast_add_inline(s, inl);
    hook_event_t ev2 = {.name = "sasl2/inline", .origin = s, .host = s->host, .features = inl};
    hook_fire(&ev2);   /* e.g. XEP-0198 <sm/> for resumption inside SASL2 */
    xnode_add_child(features, a);
}

/* A failure in SASL2's profile for a request that may not exist yet. */
static void success(session_t *s, const char *extra, size_t extra_len);

static void fail(session_t *s, const char *cond)
{
    if (!s->sasl2) s->sasl2 = xcalloc(1, sizeof *s->sasl2);
    sasl_fail_as(s, NULL, cond);
}

static void handle_authenticate(session_t *s, xnode_t *el)
{
    if (s->authenticated) {
        session_close(s, "policy-violation", "already authenticated");
        return;
    }
    sasl_reset(s);          /* a new request in the middle of an exchange aborts it */
    sasl_drop_sasl2(s);
    s->sasl2 = xcalloc(1, sizeof *s->sasl2);
    sasl2_req_t *r = s->sasl2;
    const char *cond;
    int parsed = sasl2_parse_authenticate(el, r, &cond);
    r->on_success = success;
    if (parsed < 0) {
        fail(s, cond);
        return;
    }
    if (!s->tls_active) {
        fail(s, "encryption-required");
        return;
    }
    if (r->request_token && !fast_mech_offered(s, r->request_token)) {   /* XEP-0484 §3.2 */
        fail(s, "invalid-mechanism");
        return;
    }
    if (r->fast) {
        if (!fast_mech_offered(s, r->mechanism)) fail(s, "invalid-mechanism");
        else fast_authenticate(s, r);
        return;
    }
    /* an absent initial response asks for a challenge, as in RFC 6120 */
    sasl_begin(s, r->mechanism, r->initial ? r->initial : (const unsigned char *)"", r->initial_len);
}

void sasl2_handle(session_t *s, xnode_t *el)
{
    if (strcmp(el->name, "authenticate") == 0) {
        handle_authenticate(s, el);
    } else if (strcmp(el->name, "response") == 0) {
        if (!s->sasl2 || !s->scram) {
            fail(s, "malformed-request");
            return;
        }
        unsigned char *in;
        size_t len;
        if (sasl2_payload(el, &in, &len) < 0) {
            fail(s, "incorrect-encoding");
            return;
        }
        sasl_respond(s, in, len);
        free(in);
    } else if (strcmp(el->name, "abort") == 0) {
        fail(s, "aborted");
    } else {
        /* §2.4: nothing else while authenticating */
        session_close(s, "unsupported-stanza-type", NULL);
    }
}

/* XEP-0386 §3.2: bind "<tag>/<random>" (or just the random part), enable the features the client
 * listed ("bind2/enable/<ns>", which add their answers to <bound/>), and end the earlier sessions
 * of the same client. NULL when binding failed. */
static xnode_t *bind2(session_t *s, sasl2_req_t *r)
{
    char rnd[13];
    random_hex(rnd, 6);
    char *tag = r->tag ? jid_prep_resource(r->tag) : NULL;
    char *res = tag && !strchr(tag, '/') ? xasprintf("%s/%s", tag, rnd) : xstrdup(rnd);
    free(tag);
    int ok = session_bind_resource(s, res) == 0;
    free(res);
    if (!ok) return NULL;
    xnode_t *bound = xnode_new("bound", NS_BIND2);
    for (xnode_t *c = xnode_first_elem(r->bind_el); c; c = xnode_next_elem(c)) {
        if (strcmp(c->ns, NS_BIND2) == 0) continue;
        char *name = xasprintf("bind2/enable/%s", c->ns);
        hook_event_t ev = {.name = name, .stanza = c, .origin = s, .host = s->host, .from = s->jid,
                           .features = bound};
        hook_fire(&ev);    /* read-only for handlers; a feature nobody enables is left out */
        free(name);
    }
    /* §3.2: "SHOULD terminate any earlier sessions from the same client": unbound at once, as
     * RFC 6120 §7.7.2.2 does with a session of the same full JID, so nothing more is routed to them */
    if (r->ua_id[0]) {
        session_t *old[16];
        size_t n = 0;
        jid_t *bare = jid_bare_of(s->jid);
        for (session_t *o = user_sessions(bare); o && n < sizeof old / sizeof *old; o = session_next_in_user(o)) {
            const char *ua = session_get_data(o, UA_KEY);
            if (o != s && ua && strcmp(ua, r->ua_id) == 0) old[n++] = o;
        }
        jid_free(bare);
        for (size_t i = 0; i < n; i++) {
            session_unbind(old[i]);
            session_close(old[i], "conflict", "Replaced by a new session of the same client");
        }
    }
    return bound;
}

static void success(session_t *s, const char *extra, size_t extra_len)
{
    sasl2_req_t *r = s->sasl2;
    xnode_t *ok = xnode_new("success", NS_SASL2);
    if (extra && extra_len) {
        char *b64 = NULL;
        if (base64_encode((const unsigned char *)extra, extra_len, &b64) == 0)
            xnode_add_text(xnode_add_elem(ok, "additional-data", NULL), b64);
        free(b64);
    }
    if (r->ua_id[0]) session_set_data(s, UA_KEY, xstrdup(r->ua_id), free);
    xnode_t *token = fast_after_success(s, r);
    /* requests outside <bind/> first (XEP-0386 §3.2: a resumed XEP-0198 session skips binding) */
    xnode_t *results = xnode_new("results", NULL);
    for (xnode_t *c = xnode_first_elem(r->extra); c; c = xnode_next_elem(c)) {
        char *name = xasprintf("sasl2/request/%s", c->ns);
        hook_event_t ev = {.name = name, .stanza = c, .origin = s, .host = s->host, .features = results};
        hook_fire(&ev);
        free(name);
    }
    xnode_t *bound = r->bind && !s->bound ? bind2(s, r) : NULL;
    char *authz = s->jid ? xstrdup(s->jid->full) : xasprintf("%s@%s", s->user, s->host->name);
    xnode_add_text(xnode_add_elem(ok, "authorization-identifier", NULL), authz);
    free(authz);
    if (bound) xnode_add_child(ok, bound);
    while (results->children) {
        xnode_t *c = results->children;
        xnode_unlink(c);
        xnode_add_child(ok, c);
    }
    xnode_free(results);
    if (token) xnode_add_child(ok, token);
    session_send(s, ok);
    xnode_free(ok);
    if (r->software || r->device) log_debug("c2s", "%s: user agent %s%s%s", s->ip, r->software ? r->software : "",
                                            r->device ? " on " : "", r->device ? r->device : "");
    sasl_drop_sasl2(s);     /* the caller sends the features (sasl2.h) */
}
