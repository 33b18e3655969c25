/* server/iq_request.c: IQ requests sent by the core or a module with a result callback
 * (module_send_iq, iq_request.h): the pending table, answer matching by id and sender, time-outs. */
#include "iq_request.h"
#include "component.h"
#include "timer.h"
#include "host.h"
#include "stanza.h"
#include "log.h"
#include "util.h"
#include <stdlib.h>
#include <string.h>

#define IQ_DEFAULT_TIMEOUT_MS 30000
#define IQ_MAX_TIMEOUT_MS 3600000

struct iq_request {
    char *id;                   /* the request's id (key in pending) */
    char *ours;                 /* the request's 'from' (prepared full form): answers go there */
    char *peer;                 /* the expected sender (prepared full form) */
    int peer_is_bare;           /* peer has no resource: an answer without 'from' counts too */
    module_ctx_t *owner;        /* NULL: the core */
    module_timer_t *timer;      /* the time-out */
    iq_result_fn cb;
    void *ud;
    int sending;                /* route_stanza of the request is on the stack */
    xnode_t *early;             /* an answer that came while sending (a bounce), held for later */
    iq_outcome_t early_outcome;
};

static strmap_t *pending;       /* id -> iq_request_t */
static const iq_request_env_t *env;     /* route_stanza and module_unloading (main.c) */

void iq_requests_start(const iq_request_env_t *e) { env = e; }

const char *iq_request_id(const iq_request_t *r) { return r ? r->id : NULL; }

static void request_free(iq_request_t *r)
{
    free(r->id);
    free(r->ours);
    free(r->peer);
    xnode_free(r->early);
    free(r);
}

/* Take r out of the table and run its callback once; frees r. */
static void complete(iq_request_t *r, iq_outcome_t outcome, const xnode_t *reply)
{
    strmap_del(pending, r->id);
    if (r->timer) module_timer_cancel(r->timer);
    r->timer = NULL;
    r->cb(outcome, reply, r->ud);
    request_free(r);
}

static void on_timeout(module_timer_t *t, void *ud)
{
    (void)t;
    iq_request_t *r = ud;
    r->timer = NULL;                /* a one-shot timer is freed by timer.c after this returns */
    /* what a server answers when the entity did not (RFC 6120 §8.3.3.16: type wait) */
    xnode_t *e = xnode_new("iq", NS_CLIENT);
    xnode_set_attr(e, "type", "error");
    xnode_set_attr(e, "id", r->id);
    xnode_set_attr(e, "from", r->peer);
    xnode_set_attr(e, "to", r->ours);
    xnode_t *err = xnode_add_elem(e, "error", NS_CLIENT);
    xnode_set_attr(err, "type", "wait");
    xnode_add_elem(err, "remote-server-timeout", NS_STANZAS);
    complete(r, IQ_TIMEOUT, e);
    xnode_free(e);
}

/* An answer that came before module_send_iq returned runs its callback from the loop, so that
 * the handle the caller gets is valid until then. */
static void on_early(module_timer_t *t, void *ud)
{
    (void)t;
    iq_request_t *r = ud;
    r->timer = NULL;
    complete(r, r->early_outcome, r->early);
}

iq_request_t *module_send_iq(module_ctx_t *m, xnode_t *iq, const char *expected_from, long timeout_ms,
                             iq_result_fn cb, void *ud)
{
    if (!pending) pending = strmap_new();
    const char *type = xnode_attr(iq, "type");
    const char *to_s = xnode_attr(iq, "to"), *from_s = xnode_attr(iq, "from");
    jid_t *to = to_s ? jid_new(to_s) : NULL;
    jid_t *from = from_s ? jid_new(from_s) : NULL;
    jid_t *peer = expected_from ? jid_new(expected_from) : (to_s ? jid_new(to_s) : NULL);
    const char *id = xnode_attr(iq, "id");
    int ok = cb && strcmp(iq->name, "iq") == 0 && type && (strcmp(type, "get") == 0 || strcmp(type, "set") == 0) &&
             to && from && peer && (host_find(from->domain) || component_find(from->domain)) && env && (!m || !env->unloading(m)) &&
             (!id || (*id && !strmap_get(pending, id)));
    if (!ok) {
        jid_free(to); jid_free(from); jid_free(peer);
        xnode_free(iq);
        return NULL;
    }
    iq_request_t *r = xcalloc(1, sizeof *r);
    if (id) r->id = xstrdup(id);
    else {
        char hex[33];
        do random_hex(hex, 16); while (strmap_get(pending, hex));
        r->id = xstrdup(hex);
        xnode_set_attr(iq, "id", r->id);
    }
    r->ours = xstrdup(from->full);
    r->peer = xstrdup(peer->full);
    r->peer_is_bare = peer->resource == NULL;
    r->owner = m;
    r->cb = cb;
    r->ud = ud;
    if (timeout_ms <= 0) timeout_ms = IQ_DEFAULT_TIMEOUT_MS;
    if (timeout_ms > IQ_MAX_TIMEOUT_MS) timeout_ms = IQ_MAX_TIMEOUT_MS;
    r->timer = module_add_timer(NULL, timeout_ms, 0, on_timeout, r);
    strmap_put(pending, r->id, r);
    jid_free(to); jid_free(from); jid_free(peer);
    r->sending = 1;
    env->route(iq);                 /* route_stanza: a bounce or a local answer may come back from in here */
    r->sending = 0;
    return r;
}

void iq_request_cancel(iq_request_t *r)
{
    if (r) complete(r, IQ_CANCELLED, NULL);
}

int iq_request_deliver(const xnode_t *st, const jid_t *from, const jid_t *to)
{
    if (!pending || !to || strcmp(st->name, "iq") != 0) return 0;
    const char *type = xnode_attr(st, "type"), *id = xnode_attr(st, "id");
    if (!type || !id) return 0;
    int is_result = strcmp(type, "result") == 0;
    if (!is_result && strcmp(type, "error") != 0) return 0;
    iq_request_t *r = strmap_get(pending, id);
    if (!r || strcmp(to->full, r->ours) != 0) return 0;
    /* the sender must be the one asked; for a request to an account or a server, an answer
     * without 'from' is its own server speaking for it (RFC 6120 §8.1.2.1) */
    int sender_ok = from ? strcmp(from->full, r->peer) == 0 : r->peer_is_bare;
    if (!sender_ok) {
        log_debug("iq", "answer to request %s from an unexpected sender: not consumed", id);
        return 0;
    }
    iq_outcome_t outcome = is_result ? IQ_RESULT : IQ_ERROR;
    if (r->sending) {
        if (r->early) return 0;     /* one answer only */
        r->early = xnode_copy(st);
        r->early_outcome = outcome;
        module_timer_cancel(r->timer);
        r->timer = module_add_timer(NULL, 0, 0, on_early, r);
        return 1;
    }
    complete(r, outcome, st);
    return 1;
}

/* Cancel every request of owner (every one, the core's included, when all is set). */
static void cancel_where(module_ctx_t *owner, int all)
{
    if (!pending) return;
    for (;;) {                      /* callbacks may change the table: restart after each */
        size_t pos = 0;
        const char *key;
        void *val;
        iq_request_t *found = NULL;
        while (strmap_next(pending, &pos, &key, &val))
            if (all || ((iq_request_t *)val)->owner == owner) {
                found = val;
                break;
            }
        if (!found) return;
        complete(found, IQ_CANCELLED, NULL);
    }
}

void iq_requests_forget(module_ctx_t *m) { cancel_where(m, 0); }

void iq_requests_shutdown(void)
{
    cancel_where(NULL, 1);
    strmap_free(pending);
    pending = NULL;
}
