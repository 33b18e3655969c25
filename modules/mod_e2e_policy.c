/* modules/mod_e2e_policy.c: the end-to-end encryption policy (issue 11, group chat issue 15): chat,
 * normal and groupchat messages with a <body> but no OMEMO, OpenPGP or OTR payload are refused
 * (require) or delivered with a notice (warn).
 *
 * Which mode governs a message (mode: off | warn | require, per host; federation.partners[].e2e):
 *   local -> local      the stricter of the sender's and the recipient's host mode
 *   local -> remote     the partner's e2e if written in the config, else the sender's host mode
 *   remote -> local     the partner's e2e if written in the config, else the recipient's host mode
 * Group chat (XEP-0045) is judged where it enters a room, like chat to the room's JID:
 *   local client -> room on our MUC service    the stricter of the sender's and the service's
 *                                              parent host's mode (local -> local)
 *   local client -> room on a remote service   the partner's e2e of the service's domain (the
 *                                              partner entry naming conference.example), else the
 *                                              sender's host mode (local -> remote)
 *   remote occupant -> room on our MUC service the partner's e2e of the sender's domain, else the
 *                                              service's parent host's mode (remote -> local), at
 *                                              "message/component", before the room sees it
 *   remote room -> local occupant              as remote -> local (require bounces it to the room
 *                                              with a modify error, which rooms do not kick for);
 *                                              warn delivers without notice (the recipient sent
 *                                              nothing and the sender is another server's occupant)
 * What our own components send (the MUC's broadcasts and relayed private messages) was judged on
 * its way in and is not judged again. Exempt: messages without <body> (chat states, receipts,
 * markers, key transport, subject changes: <subject/> without <body/>), types error and headline,
 * MUC invitations and declines (XEP-0045 muc#user <invite/>/<decline/>, XEP-0249 jabber:x:conference),
 * groupchat from a room's bare JID (the room's own messages), and messages to or from a domain JID
 * (the server itself, a remote server). The server sees only elements, never keys: a well-formed
 * <encrypted/> counts as encrypted, as it does for every client. */
#include "module.h"
#include <stdlib.h>
#include <string.h>

#define NS_OMEMO_LEGACY "eu.siacs.conversations.axolotl"
#define NS_OMEMO2 "urn:xmpp:omemo:2"
#define NS_OPENPGP "urn:xmpp:openpgp:0"     /* XEP-0373 */
#define NS_PGP_LEGACY "jabber:x:encrypted"  /* XEP-0027 */
#define NS_OTR "urn:xmpp:otr:0"             /* XEP-0380's name for OTR */
#define NS_EME "urn:xmpp:eme:0"             /* XEP-0380 */
#define NS_HINTS "urn:xmpp:hints"
#define NS_MUC_USER "http://jabber.org/protocol/muc#user"
#define NS_CONFERENCE "jabber:x:conference"     /* XEP-0249 direct invitations */

#define NOTICE_PERIOD (24 * 3600)           /* one warn notice per conversation per this many seconds */
#define NOTICE_MAX 10000                    /* conversations remembered; when full, no further notices */
#define PURGE_MS (10 * 60 * 1000)           /* how often expired conversations are forgotten */

enum { MODE_OFF = HOST_E2E_OFF, MODE_WARN = HOST_E2E_WARN, MODE_REQUIRE = HOST_E2E_REQUIRE };

typedef struct e2e_conf {
    int mode;                               /* MODE_*: index into modes[] */
} e2e_conf_t;

static const char *const modes[] = {"off", "warn", "require", NULL};
static e2e_conf_t conf;
static const module_option_t options[] = {
    {.name = "mode", .type = MOPT_ENUM, .offset = offsetof(e2e_conf_t, mode), .def = MODE_OFF, .choices = modes,
     .per_host = 1},
    {0}};

static module_ctx_t *self;
/* "sender-bare recipient-bare" -> when the last notice went out (unix seconds, as a pointer-sized
 * integer, never 0). A space cannot occur in a prepared JID, so the key is unambiguous. */
static strmap_t *noticed;

static int host_mode(const host_t *h) { return ((const e2e_conf_t *)module_host_conf(self, h))->mode; }

/* 1 when no host has a policy (module options change only with a restart) and no partner entry
 * writes one (the running config, SIGHUP applies): then every message passes, and the hooks return
 * before they parse a JID (that parse was the module's whole per-message cost). */
static int hosts_all_off = 1;
static int nothing_to_do(void) { return hosts_all_off && !host_any_partner_e2e(); }

/* The partner's e2e when the config writes one, else fallback. */
static int partner_mode(const char *domain, int fallback)
{
    int e2e = host_partner_e2e(domain);
    return e2e >= 0 ? e2e : fallback;
}

static int is_groupchat(const xnode_t *st)
{
    const char *type = xnode_attr(st, "type");
    return type && strcmp(type, "groupchat") == 0;
}

/* 1 for a message the policy covers: type chat, normal or groupchat, with a <body>, and no MUC
 * invitation or decline (their optional body is the inviter's words to someone not yet in the room,
 * who may have no key for it). Invitations are messages of type normal (XEP-0249 §3, XEP-0045 §7.8):
 * an invitation element in a chat or groupchat message, or one without its addressee, does not
 * exempt the body (else any plaintext would pass with an empty <x/> added). */
static int covered(const xnode_t *st)
{
    if (strcmp(st->name, "message") != 0) return 0;
    const char *type = xnode_attr(st, "type");
    if (type && strcmp(type, "chat") != 0 && strcmp(type, "normal") != 0 && strcmp(type, "groupchat") != 0)
        return 0;
    if (!xnode_child(st, "body", NULL)) return 0;
    if (type && strcmp(type, "normal") != 0) return 1;
    const xnode_t *c = xnode_child(st, "x", NS_CONFERENCE);
    if (c && xnode_attr(c, "jid")) return 0;
    const xnode_t *x = xnode_child(st, "x", NS_MUC_USER);
    const xnode_t *iv = x ? xnode_child(x, "invite", NS_MUC_USER) : NULL;
    const xnode_t *dc = x ? xnode_child(x, "decline", NS_MUC_USER) : NULL;
    /* a client's invitation names the invitee (to), the room's forwarded one the inviter (from) */
    if ((iv && (xnode_attr(iv, "to") || xnode_attr(iv, "from"))) || (dc && (xnode_attr(dc, "to") || xnode_attr(dc, "from"))))
        return 0;
    return 1;
}

static int known_method(const char *ns)
{
    static const char *const methods[] = {NS_OMEMO_LEGACY, NS_OMEMO2, NS_OPENPGP, NS_PGP_LEGACY, NS_OTR, NULL};
    for (size_t i = 0; ns && methods[i]; i++)
        if (strcmp(ns, methods[i]) == 0) return 1;
    return 0;
}

/* 1 when the message carries an end-to-end encrypted payload, or says so with XEP-0380. */
static int encrypted(const xnode_t *st)
{
    if (xnode_child(st, "encrypted", NS_OMEMO_LEGACY) || xnode_child(st, "encrypted", NS_OMEMO2) ||
        xnode_child(st, "openpgp", NS_OPENPGP) || xnode_child(st, "x", NS_PGP_LEGACY))
        return 1;
    for (const xnode_t *c = xnode_first_elem(st); c; c = xnode_next_elem(c))
        if (strcmp(c->name, "encryption") == 0 && strcmp(c->ns, NS_EME) == 0 && known_method(xnode_attr(c, "namespace")))
            return 1;
    /* OTR travels inside the body: every OTR message (data, query, key exchange) starts with "?OTR" */
    int otr = 0;
    for (const xnode_t *b = xnode_first_elem(st); b && !otr; b = xnode_next_elem(b))
        if (strcmp(b->name, "body") == 0) {
            char *text = xnode_text(b);
            otr = strncmp(text, "?OTR", 4) == 0;
            free(text);
        }
    return otr;
}

static void purge(module_timer_t *t, void *ud)
{
    (void)t; (void)ud;
    int64_t now = now_unix();
    size_t pos = 0;
    const char *key;
    void *v;
    while (strmap_next(noticed, &pos, &key, &v))
        if (now - (int64_t)(intptr_t)v >= NOTICE_PERIOD) strmap_del(noticed, key);
}

/* warn: tell the sender, once per conversation and day, that the message went out unencrypted.
 * The notice comes from the host that applied the policy, to the sender's full JID. */
static void warn(const host_t *h, const xnode_t *st, const jid_t *from, const jid_t *to)
{
    char *key = xasprintf("%s %s", from->bare, to->bare);
    int64_t now = now_unix();
    void *last = strmap_get(noticed, key);
    if (last && now - (int64_t)(intptr_t)last < NOTICE_PERIOD) {
        free(key);
        return;
    }
    if (!last && strmap_count(noticed) >= NOTICE_MAX) purge(NULL, NULL);
    if (!last && strmap_count(noticed) >= NOTICE_MAX) {   /* bounded: rather no notice than one too many */
        free(key);
        return;
    }
    strmap_put(noticed, key, (void *)(intptr_t)now);
    free(key);
    const char *type = xnode_attr(st, "type");
    xnode_t *m = xnode_new("message", NS_CLIENT);
    xnode_set_attr(m, "from", host_name(h));
    xnode_set_attr(m, "to", from->full);
    xnode_set_attr(m, "type", type && strcmp(type, "chat") == 0 ? "chat" : "normal");
    char *text = xasprintf("Your message to %s was not end-to-end encrypted. The e2e policy of %s for this "
                           "conversation is 'warn': it is delivered, but please enable OMEMO, OpenPGP or OTR. "
                           "(This notice comes at most once a day per conversation.)", to->bare, host_name(h));
    xnode_add_text(xnode_add_elem(m, "body", NS_CLIENT), text);
    free(text);
    xnode_add_elem(m, "no-store", NS_HINTS);    /* a transient notice: not for offline storage */
    route_stanza(m);
}

/* Apply mode to a covered message; h is the host whose policy (or partner entry) decided. */
static int apply(hook_event_t *ev, int mode, const host_t *h, const jid_t *from, const jid_t *to)
{
    if (mode == MODE_OFF || encrypted(ev->stanza)) return HOOK_PASS;
    if (mode == MODE_WARN) {
        /* groupchat from a remote room to a local occupant: nobody to tell (see the top) */
        if (!(is_groupchat(ev->stanza) && !ev->origin && !ev->component)) warn(h, ev->stanza, from, to);
        return HOOK_PASS;
    }
    /* RFC 6120 §8.3.3.12: the sender may retry encrypted (type modify) */
    char *text = xasprintf("%s refuses messages without end-to-end encryption between %s and %s "
                           "(e2e policy: require); use OMEMO, OpenPGP or OTR", host_name(h), from->bare, to->bare);
    hook_reply(ev, stanza_error(ev->stanza, "modify", "policy-violation", text));
    free(text);
    return HOOK_HANDLED;
}

/* A local client's message: to a local account (both hosts' modes) or to a remote one. */
static int on_outbound(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (nothing_to_do() || !ev->origin || !ev->from || !covered(ev->stanza)) return HOOK_PASS;
    const char *to_s = xnode_attr(ev->stanza, "to");
    jid_t *to = to_s ? jid_new(to_s) : jid_bare_of(ev->from);
    if (!to || !to->node) {         /* invalid (the router answers) or the server itself */
        jid_free(to);
        return HOOK_PASS;
    }
    int mode = host_mode(ev->host);
    const host_t *decides = ev->host;
    host_t *th = host_find(to->domain);
    component_t *tc = th ? NULL : component_find(to->domain);
    if (tc && component_parent(tc)) th = component_parent(tc);     /* our MUC: local -> local */
    if (th) {
        int m2 = host_mode(th);
        if (m2 > mode) {
            mode = m2;
            decides = th;
        }
    } else {
        mode = partner_mode(to->domain, mode);
    }
    int r = apply(ev, mode, decides, ev->from, to);
    jid_free(to);
    return r;
}

/* 1 when from is a remote user or a remote room's occupant: not a local host, not one of our
 * components (what they send was judged on its way in), not a domain JID, not a room's own groupchat. */
static int remote_sender(const hook_event_t *ev)
{
    const jid_t *f = ev->from;
    if (!f->node || host_find(f->domain) || component_find(f->domain)) return 0;
    return !(is_groupchat(ev->stanza) && !f->resource);
}

/* A message from a remote server to a local account, or (message/component) to a room on our MUC
 * service before the room sees it, ev->host being the service's parent host: remote -> local. Local
 * senders were judged on the way out. */
static int on_inbound(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (nothing_to_do() || ev->origin || !ev->from || !ev->to || !ev->host || !covered(ev->stanza)) return HOOK_PASS;
    if (!ev->to->node || !remote_sender(ev)) return HOOK_PASS;
    return apply(ev, partner_mode(ev->from->domain, host_mode(ev->host)), ev->host, ev->from, ev->to);
}

static int load(module_ctx_t *m)
{
    self = m;
    hosts_all_off = 1;
    for (size_t i = 0; i < host_count(); i++)
        if (host_mode(host_at(i)) != MODE_OFF) hosts_all_off = 0;
    noticed = strmap_new();
    module_add_timer(m, PURGE_MS, 1, purge, NULL);    /* cancelled by the core at unload */
    /* after blocking (100), before carbons (5) and offline storage (0): a refused message is not
     * copied or stored */
    module_hook(m, HOOK_PRE_STANZA_OUT, 50, on_outbound, NULL);
    module_hook(m, HOOK_MESSAGE_BARE, 50, on_inbound, NULL);
    module_hook(m, HOOK_MESSAGE_FULL, 50, on_inbound, NULL);
    module_hook(m, HOOK_MESSAGE_COMPONENT, 50, on_inbound, NULL);
    return 0;
}

static void unload(module_ctx_t *m)
{
    (void)m;
    strmap_free(noticed);           /* the values are integers, not allocations */
    noticed = NULL;
    self = NULL;
}

const module_t civitas_module = {
    .abi = CIVITAS_MODULE_ABI,
    .name = "e2e_policy",
    .load = load,
    .unload = unload,
    .options = options,
    .conf = &conf,
    .conf_size = sizeof conf,
};
