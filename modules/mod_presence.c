/* modules/mod_presence.c: presence (RFC 6121 §3, §4): the subscription state machine of Appendix A,
 * pre-approval, pending requests, broadcasts, probes, directed presence and unavailable on logout. */
#include "module.h"
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_PREAPPROVAL "urn:xmpp:features:pre-approval"
#define NS_DELAY "urn:xmpp:delay"
#define NS_NICK "http://jabber.org/protocol/nick"
/* What a stored pending request keeps of its texts (bytes, cut at a character boundary). */
#define PENDING_STATUS_MAX 1024
#define PENDING_NICK_MAX 256
#define PENDING_ID_MAX 128

static struct presence_conf {
    long max_pending;       /* pending requests from contacts outside the roster, per user */
    long max_directed;      /* directed-presence recipients per session */
} conf;

static storage_t *store;
/* bare JID -> the user's last unavailable presence (with a delay stamp), for probes (§4.3.2) */
static strmap_t *last_unavailable;

/* ---- per-session state (session data, freed with the session) ---- */

#define STATE_KEY "presence.state"

typedef struct pstate {
    xnode_t *last;          /* the last available presence broadcast (NULL when unavailable) */
    strmap_t *directed;     /* full JIDs that got directed available presence (§4.6), at most
                               conf.max_directed; NULL while empty */
    strmap_t *errors;       /* bare JIDs of contacts subscribed to the user that answered with a
                               presence error (§4.5.2); bounded by the roster; NULL while empty */
} pstate_t;

static void pstate_free(void *p)
{
    pstate_t *st = p;
    xnode_free(st->last);
    strmap_free(st->directed);
    strmap_free(st->errors);
    free(st);
}

static pstate_t *state_of(session_t *s)
{
    pstate_t *st = session_get_data(s, STATE_KEY);
    if (!st) {
        st = xcalloc(1, sizeof *st);
        session_set_data(s, STATE_KEY, st, pstate_free);
    }
    return st;
}

static const xnode_t *state_last(const session_t *s)
{
    const pstate_t *st = session_get_data(s, STATE_KEY);
    return st ? st->last : NULL;
}

static void state_set_last(session_t *s, const xnode_t *pres)
{
    pstate_t *st = state_of(s);
    xnode_free(st->last);
    st->last = NULL;
    if (!pres) return;
    st->last = xnode_copy(pres);
    xnode_set_attr(st->last, "to", NULL);
}

/* kind 'd': the directed-presence set, 'e': the presence-error set. */
static strmap_t **state_set(const session_t *s, char kind)
{
    pstate_t *st = session_get_data(s, STATE_KEY);
    return st ? (kind == 'd' ? &st->directed : &st->errors) : NULL;
}

static int state_find(const session_t *s, char kind, const char *jid)
{
    strmap_t **set = state_set(s, kind);
    return set && *set && strmap_get(*set, jid) != NULL;
}

static void state_add(session_t *s, char kind, const char *jid)
{
    state_of(s);
    strmap_t **set = state_set(s, kind);
    if (!*set) *set = strmap_new();
    strmap_put(*set, jid, (void *)1);
}

static void state_del(session_t *s, char kind, const char *jid)
{
    strmap_t **set = state_set(s, kind);
    if (set && *set) strmap_del(*set, jid);
}

static size_t state_count(const session_t *s, char kind)
{
    strmap_t **set = state_set(s, kind);
    return set && *set ? strmap_count(*set) : 0;
}

/* ---- helpers ---- */

/* Route a copy of p addressed to `to` (from kept, or replaced when from is not NULL). */
static void route_copy(const xnode_t *p, const char *from, const char *to)
{
    xnode_t *c = xnode_copy(p);
    if (from) xnode_set_attr(c, "from", from);
    xnode_set_attr(c, "to", to);
    route_stanza(c);
}

/* Deliver st to every available resource of a local user (RFC 6121 §8.5.2.1.3). */
static void deliver_available(const jid_t *user, const xnode_t *st)
{
    for (session_t *s = user_sessions(user); s; s = session_next_in_user(s))
        if (session_available(s)) session_send(s, st);
}

/* §3.1.5, §3.3.3: the current presence of each available resource of user (or, with type
 * "unavailable", unavailable presence from each) to a contact. */
static void send_resources_presence(const jid_t *user, const char *to, int unavailable)
{
    for (session_t *s = user_sessions(user); s; s = session_next_in_user(s)) {
        if (!session_available(s)) continue;
        const xnode_t *last = state_last(s);
        if (unavailable) route_stanza(stanza_presence("unavailable", session_jid(s)->full, to));
        else if (last) route_copy(last, session_jid(s)->full, to);
    }
}

static int is_subscription_type(const char *t)
{
    return t && (strcmp(t, "subscribe") == 0 || strcmp(t, "subscribed") == 0 || strcmp(t, "unsubscribe") == 0 ||
                 strcmp(t, "unsubscribed") == 0);
}

/* ---- pending requests: what is kept of an inbound request until the user answers ---- */

/* Append text to parent, cut to at most max bytes without splitting a UTF-8 character. */
static void add_text_cut(xnode_t *parent, const xnode_t *from, size_t max)
{
    char *t = xnode_text(from);
    size_t n = strlen(t);
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)t[n] & 0xC0) == 0x80) n--;
        t[n] = '\0';
    }
    xnode_add_text(parent, t);
    free(t);
}

/* The stored form of an inbound subscribe stanza: what RFC 6121 §3.1.3 needs to present the
 * request again (from, to, the first <status/> with its xml:lang, a XEP-0172 <nick/>, the id),
 * each bounded; every other child is dropped. Also read back old records that kept the whole
 * stanza. The caller owns the result. */
static xnode_t *pending_compact(const xnode_t *st)
{
    xnode_t *p = stanza_presence("subscribe", xnode_attr(st, "from"), xnode_attr(st, "to"));
    const char *id = xnode_attr(st, "id");
    if (id && strlen(id) <= PENDING_ID_MAX) xnode_set_attr(p, "id", id);
    const xnode_t *status = xnode_child(st, "status", NS_CLIENT);
    if (status) {
        xnode_t *c = xnode_add_elem(p, "status", NS_CLIENT);
        const char *lang = xnode_attr(status, XML_ATTR_LANG);
        if (lang && strlen(lang) <= 35) xnode_set_attr(c, XML_ATTR_LANG, lang);     /* RFC 5646 §4.4.1 */
        add_text_cut(c, status, PENDING_STATUS_MAX);
    }
    const xnode_t *nick = xnode_child(st, "nick", NS_NICK);
    if (nick) add_text_cut(xnode_add_elem(p, "nick", NS_NICK), nick, PENDING_NICK_MAX);
    return p;
}

/* ---- inbound subscription stanzas (§3.1.3, §3.1.6, §3.2.3, §3.3.3; Appendix A.3) ---- */

static void inbound_subscribe(const jid_t *user, roster_t *r, roster_item_t *it, xnode_t *st, const char *contact)
{
    if (it && (it->sub & ROSTER_SUB_FROM)) {
        /* §3.1.3 ¶2: already subscribed: the server answers for the contact, and since the other
         * side evidently lost track, it also gets the current presence */
        roster_free(r);
        route_stanza(stanza_presence("subscribed", user->bare, contact));
        send_resources_presence(user, contact, 0);
        return;
    }
    if (it && it->pending_in) {         /* A.3.1: a request is pending already: not delivered again */
        roster_free(r);
        return;
    }
    if (it && it->approved) {           /* §3.4: pre-approved: approve at once, From */
        it->approved = 0;
        it->sub |= ROSTER_SUB_FROM;
        it->listed = 1;
        roster_save(r, it, 1);
        roster_free(r);
        route_stanza(stanza_presence("subscribed", user->bare, contact));
        send_resources_presence(user, contact, 0);
        return;
    }
    if (!(it && it->listed) && roster_pending_count(r) >= (size_t)conf.max_pending) {
        /* subscription spam: refused, so that the requester learns it was not kept (the oldest
         * requests stay; requests from contacts in the roster are bounded by the roster) */
        log_info("presence", "too many pending subscription requests for %s: refused", log_jid(user->bare));
        roster_free(r);
        xnode_t *e = stanza_error(st, "wait", "resource-constraint", NULL);
        if (e) route_stanza(e);
        return;
    }
    /* None / None + Pending Out / To -> + Pending In: keep the request (§3.1.3 ¶4), deliver it
     * to the available resources now and to each resource that becomes available later */
    it = roster_add(r, contact);
    it->pending_in = pending_compact(st);
    roster_save(r, it, 0);
    roster_free(r);
    deliver_available(user, st);
}

static void inbound_subscription(const char *type, const jid_t *user, xnode_t *st, const char *contact)
{
    roster_t *r = roster_load(user);
    if (!r) return;
    roster_item_t *it = roster_find(r, contact);
    if (strcmp(type, "subscribe") == 0) {
        inbound_subscribe(user, r, it, st, contact);
        return;
    }
    int deliver = 0, had_from = 0;
    if (strcmp(type, "subscribed") == 0) {
        /* A.3.2: delivered only when the user asked: None+PO -> To, None+PO+PI -> To+PI, From+PO -> Both */
        if (it && it->ask) {
            it->ask = 0;
            it->sub |= ROSTER_SUB_TO;
            roster_save(r, it, 1);
            deliver = 1;
        }
    } else if (strcmp(type, "unsubscribe") == 0) {
        /* A.3.3: the contact ends its subscription (From -> None, Both -> To) or takes back its request */
        if (it && ((it->sub & ROSTER_SUB_FROM) || it->pending_in)) {
            had_from = it->sub & ROSTER_SUB_FROM;
            it->sub &= ~ROSTER_SUB_FROM;
            xnode_free(it->pending_in);
            it->pending_in = NULL;
            roster_save(r, it, had_from);
            deliver = 1;
        }
    } else {
        /* A.3.4 "unsubscribed": the contact denies or cancels our subscription: To -> None, Both -> From */
        if (it && ((it->sub & ROSTER_SUB_TO) || it->ask)) {
            it->sub &= ~ROSTER_SUB_TO;
            it->ask = 0;
            roster_save(r, it, 1);
            deliver = 1;
        }
    }
    roster_free(r);
    if (deliver) deliver_available(user, st);
    /* §3.3.3: the former subscriber is told that the user's resources are unavailable to it now */
    if (had_from) send_resources_presence(user, contact, 1);
}

/* ---- probes (§4.3.2) ---- */

static void answer_probe(const jid_t *user, const char *prober_bare, const char *reply_to)
{
    if (strcmp(prober_bare, user->bare) != 0) {
        jid_t *prober = jid_new(prober_bare);
        int subscribed = roster_is_subscribed(user, prober, ROSTER_SUB_FROM);
        jid_free(prober);
        if (!subscribed) {      /* no presence is revealed; the prober's server learns it has no subscription */
            route_stanza(stanza_presence("unsubscribed", user->bare, prober_bare));
            return;
        }
    }
    int sent = 0;
    for (session_t *s = user_sessions(user); s; s = session_next_in_user(s)) {
        const xnode_t *last = session_available(s) ? state_last(s) : NULL;
        if (last) {
            route_copy(last, session_jid(s)->full, reply_to);
            sent++;
        }
    }
    if (sent) return;
    const xnode_t *unavail = strmap_get(last_unavailable, user->bare);
    if (unavail) route_copy(unavail, NULL, reply_to);
    else route_stanza(stanza_presence("unavailable", user->bare, reply_to));
}

/* ---- presence addressed to a local account ---- */

/* Subscription stanzas and probes to a bare or full JID of a local user (both are treated as sent to
 * the bare JID: §3.1.3 ¶1, §4.3.2). */
static void inbound_special(hook_event_t *ev, const char *type)
{
    jid_t *user = jid_bare_of(ev->to);
    const char *from_s = xnode_attr(ev->stanza, "from");
    jid_t *from = from_s ? jid_new(from_s) : NULL;
    int exists = from && user->node ? storage_account_exists(store, user->node, user->domain) : -1;
    /* §4.3.2 ¶1: a probe to an account that does not exist is answered unsubscribed, as one from a
     * prober without a subscription is (answer_probe), so probes do not reveal which accounts
     * exist. §8.5.1: the other stanzas to a missing account are silently ignored. */
    if (exists == 0 && strcmp(type, "probe") == 0) {
        jid_t *contact = jid_bare_of(from);
        route_stanza(stanza_presence("unsubscribed", user->bare, contact->bare));
        jid_free(contact);
    } else if (exists == 1) {
        jid_t *contact = jid_bare_of(from);
        if (strcmp(type, "probe") == 0) {
            answer_probe(user, contact->bare, from->full);
        } else {
            xnode_set_attr(ev->stanza, "from", contact->bare);   /* stamped as the bare JID (§3.1.2) */
            xnode_set_attr(ev->stanza, "to", user->bare);
            inbound_subscription(type, user, ev->stanza, contact->bare);
        }
        jid_free(contact);
    }
    jid_free(from);
    jid_free(user);
}

/* A presence error from `from` means no more presence goes there this session (§4.5.2 ¶2). Only
 * the user's broadcasts consult it, so it is kept only for contacts subscribed to the user's
 * presence: a peer sending errors from countless JIDs adds nothing. session NULL: every session
 * of user (an error to the bare JID). */
static void note_error(const jid_t *user, session_t *only, const char *from)
{
    if (!user_sessions(user)) return;   /* no session to keep it in: no roster read either */
    jid_t *j = from ? jid_new(from) : NULL;
    if (j && roster_is_subscribed(user, j, ROSTER_SUB_FROM))
        for (session_t *s = user_sessions(user); s; s = session_next_in_user(s))
            if (!only || s == only) state_add(s, 'e', j->bare);
    jid_free(j);
}

static int on_presence_bare(hook_event_t *ev, void *ud)
{
    (void)ud;
    const char *type = xnode_attr(ev->stanza, "type");
    if (type && (is_subscription_type(type) || strcmp(type, "probe") == 0)) {
        inbound_special(ev, type);
        return HOOK_HANDLED;
    }
    if (type && strcmp(type, "unavailable") != 0 && strcmp(type, "error") != 0) return HOOK_HANDLED;
    if (type && strcmp(type, "error") == 0) note_error(ev->to, NULL, xnode_attr(ev->stanza, "from"));
    /* §8.5.2.1.3: presence to the bare JID goes to every available resource (none: dropped) */
    deliver_available(ev->to, ev->stanza);
    return HOOK_HANDLED;
}

static int on_presence_full(hook_event_t *ev, void *ud)
{
    (void)ud;
    const char *type = xnode_attr(ev->stanza, "type");
    if (type && (is_subscription_type(type) || strcmp(type, "probe") == 0)) {
        inbound_special(ev, type);
        return HOOK_HANDLED;
    }
    if (type && strcmp(type, "error") == 0) {
        jid_t *bare = jid_bare_of(ev->to);
        for (session_t *s = user_sessions(bare); s; s = session_next_in_user(s))
            if (strcmp(session_jid(s)->full, ev->to->full) == 0) note_error(bare, s, xnode_attr(ev->stanza, "from"));
        jid_free(bare);
    }
    return HOOK_PASS;      /* the core delivers it to that resource (§8.5.3) */
}

/* ---- outbound subscription stanzas (§3.1.2, §3.1.5, §3.2.2, §3.3.2, §3.4; Appendix A.2) ---- */

typedef enum { OUT_DROP, OUT_ROUTE } out_action_t;

/* Apply the user's stanza to the roster. Returns whether to route it; *then_presence is set to 1
 * when the contact must get the user's presence afterwards, 2 for unavailable presence. */
static out_action_t outbound_apply(const char *type, roster_t *r, const char *contact, int *then_presence)
{
    roster_item_t *it = roster_find(r, contact);
    *then_presence = 0;
    if (strcmp(type, "subscribe") == 0) {
        /* A.2.1: None -> None+PO, From -> From+PO; always routed (A.2: resynchronisation) */
        it = roster_add(r, contact);
        int visible = !it->listed || (!(it->sub & ROSTER_SUB_TO) && !it->ask);
        if (!(it->sub & ROSTER_SUB_TO)) it->ask = 1;
        it->listed = 1;
        if (visible) roster_save(r, it, 1);
        return OUT_ROUTE;
    }
    if (strcmp(type, "unsubscribe") == 0) {
        /* A.2.3: To -> None, Both -> From, Pending Out cancelled; always routed */
        if (it && ((it->sub & ROSTER_SUB_TO) || it->ask)) {
            it->sub &= ~ROSTER_SUB_TO;
            it->ask = 0;
            roster_save(r, it, 1);
        }
        return OUT_ROUTE;
    }
    if (strcmp(type, "subscribed") == 0) {
        if (it && it->pending_in) {
            /* A.2.2: None+PI -> From, None+PO+PI -> From+PO, To+PI -> Both */
            xnode_free(it->pending_in);
            it->pending_in = NULL;
            it->sub |= ROSTER_SUB_FROM;
            it->approved = 0;
            it->listed = 1;
            roster_save(r, it, 1);
            *then_presence = 1;         /* §3.1.5 */
            return OUT_ROUTE;
        }
        if (it && (it->sub & ROSTER_SUB_FROM)) return OUT_DROP;     /* no state change: not routed */
        /* §3.4.1: pre-approval; the item is added when absent; nothing is routed */
        it = roster_add(r, contact);
        if (!it->approved || !it->listed) {
            it->approved = 1;
            it->listed = 1;
            roster_save(r, it, 1);
        }
        return OUT_DROP;
    }
    /* "unsubscribed", A.2.4: From -> None, Both -> To, a pending request denied */
    if (it && ((it->sub & ROSTER_SUB_FROM) || it->pending_in)) {
        int had_from = it->sub & ROSTER_SUB_FROM;
        int visible = had_from || it->approved;
        it->sub &= ~ROSTER_SUB_FROM;
        it->approved = 0;
        xnode_free(it->pending_in);
        it->pending_in = NULL;
        roster_save(r, it, visible);
        *then_presence = had_from ? 2 : 0;     /* §3.2.2: unavailable from each resource */
        return OUT_ROUTE;
    }
    if (it && it->approved) {           /* §3.4.2: a pre-approval is cancelled; nothing to route */
        it->approved = 0;
        roster_save(r, it, 1);
    }
    return OUT_DROP;
}

static void outbound_subscription(session_t *origin, xnode_t *st, const char *type)
{
    const jid_t *me = session_jid(origin);
    jid_t *to = jid_new(xnode_attr(st, "to"));
    if (!to) {
        xnode_t *e = stanza_error(st, "modify", "jid-malformed", NULL);
        if (e) route_stanza(e);
        return;
    }
    jid_t *contact = jid_bare_of(to), *user = jid_bare_of(me);
    jid_free(to);
    roster_t *r = roster_load(user);
    if (!r) {
        xnode_t *e = stanza_error(st, "wait", "internal-server-error", NULL);
        if (e) route_stanza(e);
    } else {
        int then_presence;
        out_action_t act = outbound_apply(type, r, contact->bare, &then_presence);
        roster_free(r);                 /* saved before anything is routed (see roster_save) */
        if (act == OUT_ROUTE) {
            /* §3.1.2: to the bare JID, stamped with the user's bare JID */
            route_copy(st, user->bare, contact->bare);
            if (then_presence) send_resources_presence(user, contact->bare, then_presence == 2);
        }
        for (session_t *s = user_sessions(user); s; s = session_next_in_user(s)) state_del(s, 'e', contact->bare);
    }
    jid_free(contact);
    jid_free(user);
}

/* Directed presence (§4.6): remember who got available presence outside the roster, so that
 * they get unavailable presence when the resource goes away. Past conf.max_directed recipients a
 * new one is refused with <resource-constraint/> (returns HOOK_HANDLED): one that is not
 * remembered would never learn that the resource went away. */
static int directed_presence(session_t *origin, xnode_t *st, const char *type)
{
    jid_t *to = jid_new(xnode_attr(st, "to"));
    const jid_t *me = session_jid(origin);
    int rc = HOOK_PASS;
    if (!to || strcmp(to->bare, me->bare) == 0) {
        jid_free(to);
        return rc;
    }
    state_del(origin, 'e', to->bare);
    if (!type) {
        int via_roster = 0;
        if (session_available(origin)) {
            jid_t *user = jid_bare_of(me);
            via_roster = roster_is_subscribed(user, to, ROSTER_SUB_FROM);
            jid_free(user);
        }
        if (via_roster || state_find(origin, 'd', to->full)) {
            /* known already */
        } else if (state_count(origin, 'd') >= (size_t)conf.max_directed) {
            log_info("presence", "%s: directed presence to too many entities: refused", log_jid(me->full));
            xnode_t *e = stanza_error(st, "wait", "resource-constraint", NULL);
            if (e) route_stanza(e);
            rc = HOOK_HANDLED;
        } else {
            state_add(origin, 'd', to->full);
        }
    } else if (strcmp(type, "unavailable") == 0) {
        state_del(origin, 'd', to->full);
    }
    jid_free(to);
    return rc;
}

static int on_outbound(hook_event_t *ev, void *ud)
{
    (void)ud;
    xnode_t *st = ev->stanza;
    if (!ev->origin || strcmp(st->name, "presence") != 0 || !xnode_attr(st, "to")) return HOOK_PASS;
    const char *type = xnode_attr(st, "type");
    if (is_subscription_type(type)) {
        outbound_subscription(ev->origin, st, type);
        return HOOK_HANDLED;
    }
    if (!type || strcmp(type, "unavailable") == 0) return directed_presence(ev->origin, st, type);
    return HOOK_PASS;
}

/* ---- the user's own presence: initial presence, broadcasts, unavailable ---- */

static void remember_unavailable(const jid_t *user, const xnode_t *pres)
{
    xnode_t *c = xnode_copy(pres);
    xnode_set_attr(c, "to", NULL);
    char stamp[XEP0082_SIZE];
    xep0082_timestamp(stamp, sizeof stamp, (int64_t)time(NULL));
    xnode_t *d = xnode_add_elem(c, "delay", NS_DELAY);     /* XEP-0203: when it was last seen */
    xnode_set_attr(d, "from", user->domain);
    xnode_set_attr(d, "stamp", stamp);
    xnode_free(strmap_del(last_unavailable, user->bare));
    strmap_put(last_unavailable, user->bare, c);
}

/* Broadcast p (from the session's full JID) to the contacts subscribed to the user's presence that
 * did not answer with an error; for unavailable presence also to directed-presence recipients. */
static void broadcast_to_contacts(session_t *s, const jid_t *user, const xnode_t *p, int unavailable)
{
    roster_t *r = roster_load(user);
    strlist_t sent = {0};
    for (size_t i = 0; r && i < roster_count(r); i++) {
        roster_item_t *it = roster_at(r, i);
        if (!(it->sub & ROSTER_SUB_FROM) || state_find(s, 'e', it->jid)) continue;
        strlist_add(&sent, it->jid);
    }
    roster_free(r);
    strmap_t **directed = unavailable ? state_set(s, 'd') : NULL;
    if (directed && *directed) {
        /* the directed set is keyed by full JIDs and the roster by bare ones: a full JID that is
         * also a roster JID got it above already */
        strmap_t *seen = strmap_new();
        for (size_t i = 0; i < sent.n; i++) strmap_put(seen, sent.v[i], (void *)1);
        size_t pos = 0;
        const char *jid;
        while (strmap_next(*directed, &pos, &jid, NULL))
            if (!strmap_get(seen, jid)) strlist_add(&sent, jid);
        strmap_free(seen);
        strmap_free(*directed);
        *directed = NULL;
    }
    for (size_t i = 0; i < sent.n; i++) route_copy(p, NULL, sent.v[i]);
    strlist_free(&sent);
}

static int any_available(const jid_t *user)
{
    for (session_t *s = user_sessions(user); s; s = session_next_in_user(s))
        if (session_available(s)) return 1;
    return 0;
}

static int on_initial(hook_event_t *ev, void *ud)
{
    (void)ud;
    session_t *s = ev->origin;
    const jid_t *user = ev->to;
    roster_t *r = roster_load(user);
    for (size_t i = 0; r && i < roster_count(r); i++) {
        roster_item_t *it = roster_at(r, i);
        /* §3.1.3 ¶4: pending requests are delivered whenever the user becomes available; one
         * stored whole by an older version is made compact (and stored so) first */
        if (!it->pending_in) continue;
        xnode_t *p = pending_compact(it->pending_in);
        if (!xnode_equal(p, it->pending_in)) {
            xnode_free(it->pending_in);
            it->pending_in = p;
            roster_save(r, it, 0);
        } else {
            xnode_free(p);
        }
        session_send(s, it->pending_in);
    }
    strlist_t probe = {0}, ask = {0};
    for (size_t i = 0; r && i < roster_count(r); i++) {
        roster_item_t *it = roster_at(r, i);
        if (it->sub & ROSTER_SUB_TO) strlist_add(&probe, it->jid);
        else if (it->ask) strlist_add(&ask, it->jid);
    }
    roster_free(r);
    /* §4.2.2: the new resource learns of the user's other available resources */
    for (session_t *o = user_sessions(user); o; o = session_next_in_user(o)) {
        const xnode_t *last = o != s && session_available(o) ? state_last(o) : NULL;
        if (!last) continue;
        xnode_t *c = xnode_copy(last);
        xnode_set_attr(c, "from", session_jid(o)->full);
        xnode_set_attr(c, "to", session_jid(s)->full);
        session_send(s, c);
        xnode_free(c);
    }
    /* §4.3.1: probes from the bare JID to every contact the user is subscribed to */
    for (size_t i = 0; i < probe.n; i++) route_stanza(stanza_presence("probe", user->bare, probe.v[i]));
    /* §3.1.2 last ¶: an unanswered request is sent again when a resource becomes available */
    for (size_t i = 0; i < ask.n; i++) route_stanza(stanza_presence("subscribe", user->bare, ask.v[i]));
    strlist_free(&probe);
    strlist_free(&ask);
    return HOOK_PASS;
}

/* The unavailable broadcast of a session that goes away or sends unavailable presence (§4.5.2). */
static void broadcast_unavailable(session_t *s, const jid_t *full, const xnode_t *p, int to_self)
{
    jid_t *user = jid_bare_of(full);
    broadcast_to_contacts(s, user, p, 1);
    xnode_t *c = xnode_copy(p);
    xnode_set_attr(c, "to", user->bare);
    for (session_t *o = user_sessions(user); o; o = session_next_in_user(o))
        if (session_available(o) || (to_self && o == s)) session_send(o, c);
    xnode_free(c);
    state_set_last(s, NULL);
    if (!any_available(user)) remember_unavailable(user, p);
    jid_free(user);
}

static int on_self(hook_event_t *ev, void *ud)
{
    (void)ud;
    session_t *s = ev->origin;
    xnode_t *p = ev->stanza;
    const char *type = xnode_attr(p, "type");
    if (!type) {
        /* §4.2.2, §4.4.2: to the subscribed contacts and to every available resource of the user,
         * the sender included */
        broadcast_to_contacts(s, ev->to, p, 0);
        xnode_t *c = xnode_copy(p);
        xnode_set_attr(c, "to", ev->to->bare);
        deliver_available(ev->to, c);
        xnode_free(c);
        state_set_last(s, p);
        return HOOK_HANDLED;
    }
    if (!state_last(s) && !state_count(s, 'd')) return HOOK_HANDLED;   /* was not available */
    if (strcmp(type, "unavailable") == 0) {
        broadcast_unavailable(s, ev->from, p, 1);
    } else {            /* type='error' from the client: taken as unavailable (the core did so too) */
        xnode_t *u = stanza_presence("unavailable", ev->from->full, NULL);
        broadcast_unavailable(s, ev->from, u, 1);
        xnode_free(u);
    }
    return HOOK_HANDLED;
}

/* A session that ends without unavailable presence (clean close or a dropped connection). */
static int on_closed(hook_event_t *ev, void *ud)
{
    (void)ud;
    session_t *s = ev->origin;
    if (!ev->from || (!state_last(s) && !state_count(s, 'd'))) return HOOK_PASS;
    xnode_t *u = stanza_presence("unavailable", ev->from->full, NULL);
    broadcast_unavailable(s, ev->from, u, 0);
    xnode_free(u);
    return HOOK_PASS;
}

/* An account was removed: forget its last unavailable presence (its roster went with the account). */
static int on_user_deleted(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (ev->to) xnode_free(strmap_del(last_unavailable, ev->to->bare));
    roster_forget(ev->to);
    return HOOK_PASS;
}

/* "presence/resend" (fired by mod_blocking on unblock, XEP-0191 §3.4): a contact subscribed to
 * ev->from's presence gets the current presence of each of ev->from's available resources. */
static int on_resend(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!ev->from || !ev->to || !ev->to->node) return HOOK_PASS;
    if (roster_is_subscribed(ev->from, ev->to, ROSTER_SUB_FROM)) send_resources_presence(ev->from, ev->to->full, 0);
    return HOOK_HANDLED;
}

static int on_features(hook_event_t *ev, void *ud)
{
    (void)ud;
    xnode_add_elem(ev->features, "sub", NS_PREAPPROVAL);       /* RFC 6121 §3.4 */
    return HOOK_PASS;
}

static int load(module_ctx_t *m)
{
    store = module_storage(m);
    last_unavailable = strmap_new();
    module_hook(m, "stream-features", 0, on_features, NULL);
    module_hook(m, "pre-stanza/out", 0, on_outbound, NULL);
    module_hook(m, "presence/initial", 0, on_initial, NULL);
    module_hook(m, "presence/self", 0, on_self, NULL);
    module_hook(m, "presence/bare", 0, on_presence_bare, NULL);
    module_hook(m, "presence/full", 0, on_presence_full, NULL);
    module_hook(m, "session-closed", 0, on_closed, NULL);
    module_hook(m, "user-deleted", 0, on_user_deleted, NULL);
    module_hook(m, "presence/resend", 0, on_resend, NULL);
    return 0;
}

static void node_free(void *n) { xnode_free(n); }

static void unload(module_ctx_t *m)
{
    (void)m;
    strmap_free_all(last_unavailable, node_free);
    last_unavailable = NULL;
}

static const module_option_t options[] = {
    {.name = "max_pending", .type = MOPT_INT, .offset = offsetof(struct presence_conf, max_pending),
     .def = 100, .min = 1, .max = 100000},
    {.name = "max_directed", .type = MOPT_INT, .offset = offsetof(struct presence_conf, max_directed),
     .def = 1000, .min = 1, .max = 100000},
    {0}};

const module_t civitas_module = { .abi = CIVITAS_MODULE_ABI, .name = "presence", .load = load, .unload = unload,
                                  .options = options, .conf = &conf };
