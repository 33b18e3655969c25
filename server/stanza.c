/* server/stanza.c: building replies and errors (RFC 6120 §8.3), and the small lookups that
 * modules use (hosts, per-address state). */
#include "server.h"
#include <stdlib.h>
#include <string.h>

xnode_t *stanza_reply(const xnode_t *st)
{
    xnode_t *r = xnode_new(st->name, st->ns);
    const char *id = xnode_attr(st, "id"), *from = xnode_attr(st, "from"), *to = xnode_attr(st, "to");
    if (strcmp(st->name, "iq") == 0) xnode_set_attr(r, "type", "result");
    if (id) xnode_set_attr(r, "id", id);
    if (from) xnode_set_attr(r, "to", from);
    if (to) xnode_set_attr(r, "from", to);
    return r;
}

xnode_t *stanza_error(const xnode_t *st, const char *type, const char *condition, const char *text)
{
    const char *t = xnode_attr(st, "type");
    if (t && strcmp(t, "error") == 0) return NULL;      /* never answer an error with an error */
    /* RFC 6120 §8.3.1 lets the error carry the original payload; clients match on it */
    xnode_t *e = xnode_copy(st);
    const char *from = xnode_attr(st, "from"), *to = xnode_attr(st, "to");
    char *f = xstrdup(from), *tt = xstrdup(to);
    xnode_set_attr(e, "from", tt);
    xnode_set_attr(e, "to", f);
    free(f);
    free(tt);
    xnode_set_attr(e, "type", "error");
    xnode_t *err = xnode_add_elem(e, "error", st->ns);
    xnode_set_attr(err, "type", type);
    xnode_add_elem(err, condition, NS_STANZAS);
    if (text) xnode_add_text(xnode_add_elem(err, "text", NS_STANZAS), text);
    return e;
}

int hook_reply(hook_event_t *ev, xnode_t *reply)
{
    if (reply && ev->origin && !session_jid(ev->origin)) {
        /* before authentication there is no address to route to: the answer goes back on the
         * stream, without 'to' and 'from' (RFC 6120 §8.1.2.1, §8.1.1.1) */
        xnode_set_attr(reply, "to", NULL);
        xnode_set_attr(reply, "from", NULL);
        session_send(ev->origin, reply);
        xnode_free(reply);
    } else if (reply) {
        route_stanza(reply);
    }
    return HOOK_HANDLED;
}

int hook_error(hook_event_t *ev, const char *type, const char *condition)
{
    return hook_reply(ev, stanza_error(ev->stanza, type, condition, NULL));
}

host_t *host_find(const char *domain)
{
    for (size_t i = 0; i < srv->nhosts; i++)
        if (strcmp(srv->hosts[i]->name, domain) == 0) return srv->hosts[i];
    return NULL;
}

const char *host_name(const host_t *h) { return h->name; }

ip_state_t *ip_state_get(const char *ip)
{
    char key[IP_LIMIT_KEY_LEN];
    ip_limit_key(ip, key, sizeof key);
    ip_state_t *st = strmap_get(srv->ip_state, key);
    if (!st) {
        st = xcalloc(1, sizeof *st);
        strmap_put(srv->ip_state, key, st);
    }
    return st;
}

/* Forget an address once it has no connections and its failures are old (10 minutes). */
void ip_state_release(const char *ip)
{
    char key[IP_LIMIT_KEY_LEN];
    ip_limit_key(ip, key, sizeof key);
    ip_state_t *st = strmap_get(srv->ip_state, key);
    if (st && st->connections <= 0 && st->sessions <= 0 &&
        (st->sasl_failures == 0 || now_ms() - st->last_failure_ms > 600000))
        free(strmap_del(srv->ip_state, key));
}
