/* modules/mod_carbons.c: XEP-0280 Message Carbons: a user's other resources that enabled carbons
 * get a copy of each chat message the user sends or receives, so every device shows the same
 * conversation. Encrypted (OMEMO) payloads are copied byte for byte like the rest. */
#include "module.h"
#include <string.h>

#define NS_CARBONS "urn:xmpp:carbons:2"
#define NS_FORWARD "urn:xmpp:forward:0"
#define NS_HINTS "urn:xmpp:hints"
#define DATA_ENABLED "carbons.enabled"

static int enabled(const session_t *s) { return session_get_data(s, DATA_ENABLED) != NULL; }

static int on_toggle(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!ev->origin || !ev->from || !ev->to || !jid_bare_equal(ev->from, ev->to))
        return hook_error(ev, "cancel", "not-allowed");
    xnode_t *child = xnode_first_elem(ev->stanza);
    /* any non-NULL pointer marks "enabled"; session data needs no free function for it */
    session_set_data(ev->origin, DATA_ENABLED, strcmp(child->name, "enable") == 0 ? (void *)1 : NULL, NULL);
    return hook_reply(ev, stanza_reply(ev->stanza));
}

/* XEP-0280 §6: which messages are carbon-copied: type chat, or normal with a body (a common
 * client habit), not ones marked <private/> (§7: kept in the message, so that the recipient's
 * server does not copy it either) or no-copy, not carbons themselves, not errors. */
static int eligible(const xnode_t *st)
{
    const char *type = xnode_attr(st, "type");
    if (type && strcmp(type, "chat") != 0 && strcmp(type, "normal") != 0) return 0;
    if ((!type || strcmp(type, "normal") == 0) && !xnode_child(st, "body", NULL)) return 0;
    if (xnode_child(st, "private", NS_CARBONS) || xnode_child(st, "no-copy", NS_HINTS)) return 0;
    if (xnode_child(st, "sent", NS_CARBONS) || xnode_child(st, "received", NS_CARBONS)) return 0;
    return 1;
}

/* A <message> from the user's bare JID to one resource, holding <sent|received><forwarded>. */
static void copy_to(session_t *s, const jid_t *user, const xnode_t *st, const char *kind)
{
    xnode_t *m = xnode_new("message", NS_CLIENT);
    xnode_set_attr(m, "from", user->bare);
    xnode_set_attr(m, "to", session_jid(s)->full);
    xnode_set_attr(m, "type", xnode_attr(st, "type") ? xnode_attr(st, "type") : "normal");
    xnode_t *fw = xnode_add_elem(xnode_add_elem(m, kind, NS_CARBONS), "forwarded", NS_FORWARD);
    xnode_add_child(fw, xnode_copy(st));
    session_send(s, m);
    xnode_free(m);
}

/* §7: a message the user sends goes, as <sent/>, to the user's other enabled resources. At
 * "pre-stanza/out" 5: after blocking (100) and after mod_mam (10) stamped the id of the sender's
 * archive, which the copy keeps and the message to the contact loses (XEP-0313 §3.5). */
static int on_outbound(hook_event_t *ev, void *ud)
{
    (void)ud;
    xnode_t *st = ev->stanza;
    if (strcmp(st->name, "message") != 0 || !ev->origin || !eligible(st)) return HOOK_PASS;
    jid_t *bare = jid_bare_of(ev->from);
    for (session_t *s = user_sessions(bare); s; s = session_next_in_user(s))
        if (s != ev->origin && enabled(s)) copy_to(s, bare, st, "sent");
    jid_free(bare);
    return HOOK_PASS;
}

/* §6: a message to the user reaches the addressed (or best) resources itself; the other enabled
 * resources get it as <received/> (session_receives_bare: the core's choice for a bare JID). */
static void received(const jid_t *to, const xnode_t *st, const session_t *direct)
{
    jid_t *bare = jid_bare_of(to);
    for (session_t *s = user_sessions(bare); s; s = session_next_in_user(s)) {
        int gets_original = direct ? s == direct : session_receives_bare(s);
        if (!gets_original && enabled(s) && session_available(s)) copy_to(s, bare, st, "received");
    }
    jid_free(bare);
}

/* "message/deliver/pre", last: the message goes on to delivery (blocking and the e2e policy did not
 * stop it before) and the archive has stamped its XEP-0359 <stanza-id/> (mod_mam, priority -50),
 * so the copy carries the id the live message and the archive have (XEP-0313 §3.5: clients such
 * as Conversations de-duplicate carbons against MAM by it). ev->to is the addressed full JID when
 * that resource is bound, else the bare JID (RFC 6121 §8.5.3.2.1). A stored message delivered again
 * (replay) was copied when it arrived. */
static int on_deliver_pre(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (ev->replay || !ev->stanza || !ev->to || !ev->to->node || !host_find(ev->to->domain) ||
        !eligible(ev->stanza))
        return HOOK_PASS;
    session_t *direct = NULL;
    if (ev->to->resource) {
        jid_t *bare = jid_bare_of(ev->to);
        for (session_t *s = user_sessions(bare); s; s = session_next_in_user(s))
            if (jid_equal(session_jid(s), ev->to)) direct = s;
        jid_free(bare);
    }
    received(ev->to, ev->stanza, direct);
    return HOOK_PASS;
}

/* XEP-0386 §3.2: carbons enabled inside SASL2's Bind2 ("bind2/enable/<ns>"); nothing to answer. */
static int on_bind2_enable(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!ev->origin || strcmp(ev->stanza->name, "enable") != 0) return HOOK_PASS;
    session_set_data(ev->origin, DATA_ENABLED, (void *)1, NULL);
    return HOOK_HANDLED;
}

static int on_bind2_inline(hook_event_t *ev, void *ud)
{
    (void)ud;
    xnode_set_attr(xnode_add_elem(ev->features, "feature", NULL), "var", NS_CARBONS);
    return HOOK_PASS;
}

static int load(module_ctx_t *m)
{
    module_add_feature(m, NS_CARBONS);
    module_hook(m, "iq-set/bare/" NS_CARBONS, 0, on_toggle, NULL);
    module_hook(m, "pre-stanza/out", 5, on_outbound, NULL);     /* after blocking (100) */
    module_hook(m, HOOK_MESSAGE_DELIVER_PRE, -100, on_deliver_pre, NULL);   /* after mod_mam's stamp (-50) */
    module_hook(m, HOOK_BIND2_INLINE, 0, on_bind2_inline, NULL);
    module_hook(m, HOOK_BIND2_ENABLE NS_CARBONS, 0, on_bind2_enable, NULL);
    return 0;
}

const module_t civitas_module = { .abi = CIVITAS_MODULE_ABI, .name = "carbons", .load = load };
