/* server/router.c: where stanzas go. The only place where one session reaches another:
 * the online-user table, RFC 6121 §8 delivery rules, module hooks, and bounces. */
#include "router.h"
#include "stanza.h"
#include "s2s.h"
#include "caps.h"
#include "iq_request.h"
#include "component.h"
#include <stdlib.h>
#include <string.h>

static host_t *find_host_of(const jid_t *j) { return j ? host_find(j->domain) : NULL; }

/* Bounce st with an error to its sender, unless it is an error already. Frees st. */
static void bounce(xnode_t *st, const char *type, const char *cond)
{
    xnode_t *e = stanza_error(st, type, cond, NULL);
    xnode_free(st);
    if (e) route_stanza(e);
}

static const char *stanza_type(const xnode_t *st)
{
    const char *t = xnode_attr(st, "type");
    return t ? t : "";
}

/* RFC 6121 §8.5.2.1: a headline (all_nonneg) to every available resource with a non-negative
 * priority; anything else to those session_receives_bare names (sessions on hold excepted). */
static int deliver_to_bare(user_t *u, const xnode_t *st, int all_nonneg)
{
    int n = 0;
    for (session_t *s = u ? u->sessions : NULL; s; s = s->next_in_user)
        if (all_nonneg ? session_priority(s) >= 0 : session_receives_bare(s)) {
            session_deliver(s, st);
            n++;
        }
    return n;
}

/* ---- the message flow hooks (module.h, "Message flow"): for messages only ---- */

/* "message/deliver/pre": 1 when a handler stopped the message (ev->stanza is then freed by the
 * caller unless a handler took it). */
static int message_pre(hook_event_t *ev)
{
    if (strcmp(ev->stanza->name, "message") != 0) return 0;
    ev->name = "message/deliver/pre";
    return hook_fire(ev) == HOOK_HANDLED || !ev->stanza;
}

/* "message/deliver/post": once per message, after it was written or handed to federation. */
static void message_post(hook_event_t *ev)
{
    if (!ev->stanza || strcmp(ev->stanza->name, "message") != 0) return;
    hook_event_t pev = *ev;
    pev.name = "message/deliver/post";
    hook_fire(&pev);
}

static void route_message_bare(host_t *h, const jid_t *to, xnode_t *st, hook_event_t *ev)
{
    ev->name = "message/bare";
    if (hook_fire(ev) == HOOK_HANDLED || !ev->stanza) return;
    const char *type = stanza_type(st);
    user_t *u = session_user(h, to->bare);
    /* §8.5.2.1.1 / §8.5.2.2: an error to a bare JID is ignored; groupchat is never delivered to
     * a bare JID (a MUC sends to full JIDs): the sender gets <service-unavailable/> */
    if (strcmp(type, "error") == 0) return;
    if (strcmp(type, "groupchat") == 0) {
        ev->stanza = NULL;
        bounce(st, "cancel", "service-unavailable");
        return;
    }
    if (message_pre(ev)) return;
    /* headline goes to every non-negative resource (§8.5.2.1.1); others to the best ones */
    int headline = strcmp(type, "headline") == 0;
    if (deliver_to_bare(u, st, headline) > 0) {
        message_post(ev);
        return;
    }
    /* §8.5.2.2: no available resource. Offline storage and push are modules' jobs (they hook
     * "message/undelivered"); without one: headlines are dropped, anything else bounces. */
    ev->name = "message/undelivered";
    if (hook_fire(ev) == HOOK_HANDLED || !ev->stanza) return;
    if (headline) return;
    ev->stanza = NULL;
    bounce(st, "cancel", "service-unavailable");
}

static void route_iq_local(host_t *h, const jid_t *to, xnode_t *st, hook_event_t *ev, int to_host)
{
    const char *type = stanza_type(st);
    int request = strcmp(type, "get") == 0 || strcmp(type, "set") == 0;
    /* every IQ first, whatever its payload (blocking, IQ result tracking) */
    ev->name = to_host ? "iq/host" : "iq/bare";
    if (hook_fire(ev) == HOOK_HANDLED || !ev->stanza) return;
    if (!request) return;           /* results and errors to the server or an account end here */
    xnode_t *child = xnode_first_elem(st);
    char *name = xasprintf("iq-%s/%s/%s", type, to_host ? "host" : "bare", child ? child->ns : "");
    ev->name = name;
    int r = hook_fire(ev);
    free(name);
    if (r == HOOK_HANDLED || !ev->stanza) return;
    (void)h; (void)to;
    ev->stanza = NULL;
    bounce(st, "cancel", "service-unavailable");
}

/* A stanza to a component's domain or a JID at it: its handler, then the core's defaults
 * (component.h). */
static void route_component(component_t *c, const jid_t *to, xnode_t *st, hook_event_t *ev)
{
    const char *kind = st->name, *type = stanza_type(st);
    int iq = strcmp(kind, "iq") == 0, message = strcmp(kind, "message") == 0;
    if (message) {                  /* "message/component" (module.h): e2e policy at a room's door */
        ev->name = "message/component";
        ev->component = c;
        if (hook_fire(ev) == HOOK_HANDLED || !ev->stanza) return;
    }
    ev->name = iq ? "component/iq" : message ? "component/message" : "component/presence";
    if (component_fire(c, ev) == HOOK_HANDLED || !ev->stanza) return;
    if (iq) {
        if (strcmp(type, "get") != 0 && strcmp(type, "set") != 0) return;
        if (!to->node && !to->resource) {
            xnode_t *child = xnode_first_elem(st);
            char *name = xasprintf("iq-%s/component/%s", type, child ? child->ns : "");
            ev->name = name;
            int r = hook_fire(ev);
            free(name);
            if (r == HOOK_HANDLED || !ev->stanza) return;
        }
    } else if (!message || strcmp(type, "error") == 0 || strcmp(type, "headline") == 0) {
        return;                     /* presence, errors and headlines nobody took are dropped */
    }
    ev->stanza = NULL;
    bounce(st, "cancel", "service-unavailable");
}

/* Presence from another account's JID (local or remote) to a local account: the caps service
 * learns from it, then "contact-presence" (HOOK_CONTACT_PRESENCE, module.h; the core names hooks
 * by their strings since it cannot include module.h). Does not change or take the stanza. */
static void contact_presence(const hook_event_t *ev)
{
    const char *type = xnode_attr(ev->stanza, "type");
    if (type && strcmp(type, "unavailable") != 0) return;
    if (!ev->from || jid_bare_equal(ev->from, ev->to)) return;
    caps_presence(ev->host, ev->from, ev->stanza, ev->origin);
    hook_event_t cev = *ev;
    cev.name = "contact-presence";
    hook_fire(&cev);
}

/* Route a stanza whose 'from' and 'to' are set. Takes ownership. */
static void route(xnode_t *st, session_t *origin, const jid_t *from)
{
    const char *to_s = xnode_attr(st, "to");
    jid_t *to = to_s ? jid_new(to_s) : NULL;
    if (!to) {
        if (origin) bounce(st, "modify", "jid-malformed");
        else xnode_free(st);
        return;
    }
    host_t *h = find_host_of(to);
    component_t *c = h ? NULL : component_find(to->domain);
    /* the answer to an IQ request of the core or a module (iq_request.c) goes no further */
    if ((h || c) && strcmp(st->name, "iq") == 0 && iq_request_deliver(st, from, to)) {
        xnode_free(st);
        jid_free(to);
        return;
    }
    hook_event_t ev = {.stanza = st, .origin = origin, .host = h, .from = from, .to = to};
    if (h && to->node && strcmp(st->name, "presence") == 0) contact_presence(&ev);
    if (c) {
        ev.host = component_parent(c);
        route_component(c, to, st, &ev);
        goto out;
    }
    if (!h) {                       /* a remote domain: federation queues, sends or bounces it */
        /* the last look before it leaves: what a module sends on a local user's behalf passes
         * here too (blocking filters it as the local hooks do for local recipients) */
        ev.name = "route/remote";
        if (hook_fire(&ev) == HOOK_HANDLED || !ev.stanza) goto out;
        if (message_pre(&ev)) goto out;
        /* post before federation takes it (it may send and free it at once): from here on the
         * message is committed; a later failure comes back to the sender as a bounce */
        message_post(&ev);
        ev.stanza = NULL;
        s2s_route(st);
        goto out;
    }
    const char *kind = st->name;
    if (!to->node && !to->resource) {                       /* the server itself */
        if (strcmp(kind, "iq") == 0) route_iq_local(h, to, st, &ev, 1);
        else {
            ev.name = strcmp(kind, "message") == 0 ? "message/host" : "presence/host";
            hook_fire(&ev);
        }
    } else if (!to->resource) {                             /* an account's bare JID */
        if (strcmp(kind, "iq") == 0) route_iq_local(h, to, st, &ev, 0);
        else if (strcmp(kind, "message") == 0) route_message_bare(h, to, st, &ev);
        else {
            ev.name = "presence/bare";
            hook_fire(&ev);
        }
    } else {                                                /* a full JID */
        ev.name = strcmp(kind, "message") == 0 ? "message/full"
                  : strcmp(kind, "presence") == 0 ? "presence/full" : "iq/full";
        if (hook_fire(&ev) == HOOK_HANDLED || !ev.stanza) goto out;
        session_t *s = session_find_full(to);
        const char *type = stanza_type(st);
        if (s) {
            if (message_pre(&ev)) goto out;
            session_deliver(s, st);
            message_post(&ev);
        } else if (strcmp(kind, "message") == 0) {
            /* §8.5.3.2.1: no such resource: normal and chat are treated as to the bare JID */
            if (strcmp(type, "groupchat") == 0) {
                ev.stanza = NULL;
                bounce(st, "cancel", "service-unavailable");
                goto out;
            }
            if (strcmp(type, "headline") == 0 || strcmp(type, "error") == 0) goto out;
            jid_t *bare = jid_bare_of(to);
            ev.to = bare;
            route_message_bare(h, bare, st, &ev);
            jid_free(bare);
        } else if (strcmp(kind, "iq") == 0) {
            if (strcmp(type, "get") == 0 || strcmp(type, "set") == 0) {  /* §8.5.3.2.2 */
                ev.stanza = NULL;
                bounce(st, "cancel", "service-unavailable");
                goto out;
            }
        }
        /* presence to an unavailable resource is dropped (§8.5.3.2.3) */
    }
out:
    xnode_free(ev.stanza);
    jid_free(to);
}

void route_stanza(xnode_t *st)
{
    const char *from_s = xnode_attr(st, "from");
    jid_t *from = from_s ? jid_new(from_s) : NULL;
    route(st, NULL, from);
    jid_free(from);
}

int route_replay(session_t *s, xnode_t *st)
{
    const char *from_s = xnode_attr(st, "from"), *to_s = xnode_attr(st, "to");
    jid_t *from = from_s ? jid_new(from_s) : NULL;
    jid_t *to = to_s ? jid_new(to_s) : NULL;
    hook_event_t ev = {.stanza = st, .host = s->host, .from = from, .to = to ? to : s->jid, .replay = 1};
    int written = 0;
    if (!message_pre(&ev)) {
        s->writing_replay = 1;      /* session_writing_replay: taps tell a stored message */
        session_deliver(s, ev.stanza);
        s->writing_replay = 0;
        message_post(&ev);
        written = 1;
    }
    xnode_free(ev.stanza);
    jid_free(from);
    jid_free(to);
    return written;
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

int hook_own_account(const hook_event_t *ev)
{
    return ev->origin && ev->from && ev->to && ev->to->node && !ev->to->resource && jid_bare_equal(ev->from, ev->to);
}

int hook_error_cond(hook_event_t *ev, stanza_err_t cond)
{
    return hook_reply(ev, stanza_error_cond(ev->stanza, cond, NULL));
}

/* RFC 6120 §8.2.3 and §8.3: the shape every IQ must have. Returns an error condition or NULL. */
static const char *iq_invalid(const xnode_t *st)
{
    const char *type = xnode_attr(st, "type"), *id = xnode_attr(st, "id");
    if (!id || !type) return "bad-request";
    int children = 0;
    for (xnode_t *c = xnode_first_elem(st); c; c = xnode_next_elem(c)) children++;
    if (strcmp(type, "get") == 0 || strcmp(type, "set") == 0) return children == 1 ? NULL : "bad-request";
    if (strcmp(type, "result") == 0) return children <= 1 ? NULL : "bad-request";
    if (strcmp(type, "error") == 0) return NULL;
    return "bad-request";
}

/* Presence without 'to' from a client: availability for routing, then broadcast. */
static void client_presence(session_t *s, xnode_t *st)
{
    const char *type = xnode_attr(st, "type");
    int was_available = s->available;
    int had_presence = session_presence(s) != NULL;
    if (!type) {
        xnode_t *p = xnode_child(st, "priority", NULL);
        int prio = 0;
        if (p) {
            char *t = xnode_text(p);
            char *end;
            long v = strtol(t, &end, 10);
            int valid = *t && *end == '\0' && v >= -128 && v <= 127;
            free(t);
            if (!valid) {
                bounce(st, "modify", "bad-request");
                return;
            }
            prio = (int)v;
        }
        s->available = 1;
        s->priority = prio;
    } else if (strcmp(type, "unavailable") == 0) {
        s->available = 0;
    } else if (strcmp(type, "error") == 0) {
        /* RFC 6121 §4.7.2.1 */
        s->available = 0;
    } else {
        bounce(st, "modify", "bad-request");
        return;
    }
    /* the current presence is the session's before any hook runs; the events after the hooks */
    xnode_t *now = s->available ? xnode_copy(st) : NULL;
    xnode_t *ended = !s->available && had_presence ? xnode_copy(st) : NULL;
    session_set_presence(s, now);
    caps_presence(s->host, s->jid, st, s);
    jid_t *bare = jid_bare_of(s->jid);
    hook_event_t ev = {.name = "presence/initial", .stanza = st, .origin = s, .host = s->host, .from = s->jid, .to = bare};
    if (s->available && !was_available) hook_fire(&ev);
    ev.name = "presence/self";
    if (ev.stanza && hook_fire(&ev) != HOOK_HANDLED && ev.stanza) {
        /* no presence module: at least the user's own available resources learn of it
         * (RFC 6121 §4.2.2, including the sender) */
        xnode_set_attr(st, "to", bare->bare);
        user_t *u = session_user(s->host, bare->bare);
        for (session_t *o = u ? u->sessions : NULL; o; o = o->next_in_user)
            if (o->available || o == s) session_deliver(o, st);
    }
    xnode_free(ev.stanza);
    if (now && !had_presence) {
        hook_event_t aev = {.name = "resource-available", .stanza = now, .origin = s, .host = s->host, .from = s->jid, .to = bare};
        hook_fire(&aev);
    } else if (ended) {
        hook_event_t uev = {.name = "resource-unavailable", .stanza = ended, .origin = s, .host = s->host, .from = s->jid, .to = bare};
        hook_fire(&uev);
    }
    xnode_free(now);
    xnode_free(ended);
    jid_free(bare);
}

void router_from_client(session_t *s, xnode_t *st)
{
    if (strcmp(st->name, "iq") == 0) {
        const char *cond = iq_invalid(st);
        if (cond) {
            const char *type = xnode_attr(st, "type");
            if (type && strcmp(type, "error") == 0) xnode_free(st);
            else {
                xnode_set_attr(st, "to", NULL);   /* the server answers (RFC 6120 §8.3.1) */
                bounce(st, "modify", cond);
            }
            return;
        }
    }
    hook_event_t ev = {.name = "pre-stanza/out", .stanza = st, .origin = s, .host = s->host, .from = s->jid};
    if (hook_fire(&ev) == HOOK_HANDLED || !ev.stanza) {
        xnode_free(ev.stanza);
        return;
    }
    if (!xnode_attr(st, "to")) {
        if (strcmp(st->name, "presence") == 0) {
            client_presence(s, st);
            return;
        }
        /* no 'to': addressed to the sender's own account (RFC 6120 §10.3) */
        xnode_set_attr(st, "to", s->jid->bare);
    }
    route(st, s, s->jid);
}

void router_from_remote(xnode_t *st, const char *authenticated_domain)
{
    (void)authenticated_domain;     /* s2s_in checked that 'from' is in it */
    if (strcmp(st->name, "iq") == 0) {
        const char *cond = iq_invalid(st);
        if (cond) {
            bounce(st, "modify", cond);   /* never for errors (stanza_error) */
            return;
        }
    }
    const char *from_s = xnode_attr(st, "from");
    jid_t *from = from_s ? jid_new(from_s) : NULL;
    route(st, NULL, from);
    jid_free(from);
}
