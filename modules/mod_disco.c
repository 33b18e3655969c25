/* modules/mod_disco.c: XEP-0030 Service Discovery for the server's domain: identity and the
 * features every loaded module registered; items: the host's components and the items modules
 * added (component.h); and the disco#info of each component's domain. And for an account's bare
 * JID (answered by the server on its behalf, XEP-0030 §3, XEP-0163 §6.1): the identities and
 * features modules registered for accounts (module_add_account_*). The account itself and
 * contacts it shares presence with (subscription from) also see account/registered;
 * anyone else sees what modules registered (pubsub/pep: open PEP nodes are readable by anyone),
 * as Prosody does for PEP. An account that does not exist: <service-unavailable/> (RFC 6121
 * §8.5.1). Items of an account: none here; a module that has some (mod_pep) answers first. */
#include "module.h"
#include <string.h>

static int on_info(hook_event_t *ev, void *ud)
{
    (void)ud;
    xnode_t *in = xnode_first_elem(ev->stanza);
    const char *node = xnode_attr(in, "node");
    if (node && *node)   /* no nodes are published (XEP-0030 §3.1: item-not-found) */
        return hook_error(ev, "cancel", "item-not-found");
    xnode_t *r = stanza_reply(ev->stanza);
    xnode_t *q = xnode_add_elem(r, "query", NS_DISCO_INFO);
    for (size_t i = 0; i < module_identity_count(); i++) {
        const disco_identity_t *id = module_identity(i);
        xnode_t *e = xnode_add_elem(q, "identity", NULL);
        xnode_set_attr(e, "category", id->category);
        xnode_set_attr(e, "type", id->type);
        if (id->name) xnode_set_attr(e, "name", id->name);
    }
    for (size_t i = 0; i < module_feature_count(); i++)
        xnode_set_attr(xnode_add_elem(q, "feature", NULL), "var", module_feature(i));
    return hook_reply(ev, r);
}

/* The host's items: the components it is the parent of, and the plain items modules added. */
static void host_items(xnode_t *q, const host_t *h)
{
    for (size_t i = 0; i < component_count(); i++) {
        const component_t *c = component_at(i);
        if (component_parent(c) != h) continue;
        xnode_t *e = xnode_add_elem(q, "item", NULL);
        xnode_set_attr(e, "jid", component_domain(c));
        if (component_name(c)) xnode_set_attr(e, "name", component_name(c));
    }
    for (size_t i = 0; i < module_item_count(); i++) {
        const disco_item_t *it = module_item(i);
        if (it->host != h) continue;
        xnode_t *e = xnode_add_elem(q, "item", NULL);
        xnode_set_attr(e, "jid", it->jid);
        if (it->node) xnode_set_attr(e, "node", it->node);
        if (it->name) xnode_set_attr(e, "name", it->name);
    }
}

static int on_items(hook_event_t *ev, void *ud)
{
    (void)ud;
    xnode_t *r = stanza_reply(ev->stanza);
    xnode_t *q = xnode_add_elem(r, "query", NS_DISCO_ITEMS);
    const char *node = xnode_attr(xnode_first_elem(ev->stanza), "node");
    if (!node || !*node) host_items(q, ev->host);
    return hook_reply(ev, r);
}

/* disco#info of a component's domain: what its module registered, plus disco itself. */
static int on_component_info(hook_event_t *ev, void *ud)
{
    (void)ud;
    const component_t *c = ev->component;
    const char *node = xnode_attr(xnode_first_elem(ev->stanza), "node");
    if (!c || (node && *node)) return hook_error(ev, "cancel", "item-not-found");
    xnode_t *r = stanza_reply(ev->stanza);
    xnode_t *q = xnode_add_elem(r, "query", NS_DISCO_INFO);
    for (size_t i = 0; i < component_identity_count(c); i++) {
        const disco_identity_t *id = component_identity(c, i);
        xnode_t *e = xnode_add_elem(q, "identity", NULL);
        xnode_set_attr(e, "category", id->category);
        xnode_set_attr(e, "type", id->type);
        if (id->name) xnode_set_attr(e, "name", id->name);
    }
    int info = 0, items = 0;
    for (size_t i = 0; i < component_feature_count(c); i++) {
        const char *f = component_feature(c, i);
        info |= strcmp(f, NS_DISCO_INFO) == 0;
        items |= strcmp(f, NS_DISCO_ITEMS) == 0;
        xnode_set_attr(xnode_add_elem(q, "feature", NULL), "var", f);
    }
    if (!info) xnode_set_attr(xnode_add_elem(q, "feature", NULL), "var", NS_DISCO_INFO);
    if (!items) xnode_set_attr(xnode_add_elem(q, "feature", NULL), "var", NS_DISCO_ITEMS);
    return hook_reply(ev, r);
}

/* disco#items of a component's domain that its module did not answer: none. */
static int on_component_items(hook_event_t *ev, void *ud)
{
    (void)ud;
    xnode_t *r = stanza_reply(ev->stanza);
    xnode_add_elem(r, "query", NS_DISCO_ITEMS);
    return hook_reply(ev, r);
}

static void component_hooks(module_ctx_t *m)
{
    module_hook(m, "iq-get/component/" NS_DISCO_INFO, 0, on_component_info, NULL);
    module_hook(m, "iq-get/component/" NS_DISCO_ITEMS, 0, on_component_items, NULL);
}

static storage_t *store;

/* 1: the account exists; 0: answered with an error (none, or a storage failure). */
static int account_ok(hook_event_t *ev)
{
    int ex = storage_account_exists(store, ev->to->node, ev->to->domain);
    if (ex > 0) return 1;
    hook_error(ev, ex < 0 ? "wait" : "cancel", ex < 0 ? "internal-server-error" : "service-unavailable");
    return 0;
}

static int on_account_info(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!ev->to->node) return HOOK_PASS;
    if (!account_ok(ev)) return HOOK_HANDLED;
    xnode_t *in = xnode_first_elem(ev->stanza);
    const char *node = xnode_attr(in, "node");
    if (node && *node)
        return hook_error(ev, "cancel", "item-not-found");
    int trusted = ev->from && (jid_bare_equal(ev->from, ev->to) ||
                               roster_is_subscribed(ev->to, ev->from, ROSTER_SUB_FROM));
    if (!trusted && module_account_identity_count() == 0)
        return hook_error(ev, "cancel", "service-unavailable");
    xnode_t *r = stanza_reply(ev->stanza);
    xnode_t *q = xnode_add_elem(r, "query", NS_DISCO_INFO);
    if (trusted) {
        xnode_t *e = xnode_add_elem(q, "identity", NULL);
        xnode_set_attr(e, "category", "account");
        xnode_set_attr(e, "type", "registered");
    }
    for (size_t i = 0; i < module_account_identity_count(); i++) {
        const disco_identity_t *id = module_account_identity(i);
        xnode_t *e = xnode_add_elem(q, "identity", NULL);
        xnode_set_attr(e, "category", id->category);
        xnode_set_attr(e, "type", id->type);
        if (id->name) xnode_set_attr(e, "name", id->name);
    }
    xnode_set_attr(xnode_add_elem(q, "feature", NULL), "var", NS_DISCO_INFO);
    xnode_set_attr(xnode_add_elem(q, "feature", NULL), "var", NS_DISCO_ITEMS);
    for (size_t i = 0; i < module_account_feature_count(); i++)
        xnode_set_attr(xnode_add_elem(q, "feature", NULL), "var", module_account_feature(i));
    return hook_reply(ev, r);
}

static int on_account_items(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!ev->to->node) return HOOK_PASS;
    if (!account_ok(ev)) return HOOK_HANDLED;
    xnode_t *r = stanza_reply(ev->stanza);
    xnode_add_elem(r, "query", NS_DISCO_ITEMS);
    return hook_reply(ev, r);
}

static int load(module_ctx_t *m)
{
    store = module_storage(m);
    module_hook(m, "iq-get/bare/" NS_DISCO_INFO, 0, on_account_info, NULL);
    module_hook(m, "iq-get/bare/" NS_DISCO_ITEMS, 0, on_account_items, NULL);
    module_add_identity(m, "server", "im", "civitas");
    module_add_feature(m, NS_DISCO_INFO);
    module_add_feature(m, NS_DISCO_ITEMS);
    module_hook(m, "iq-get/host/" NS_DISCO_INFO, 0, on_info, NULL);
    module_hook(m, "iq-get/host/" NS_DISCO_ITEMS, 0, on_items, NULL);
    component_hooks(m);
    return 0;
}

const module_t civitas_module = { .abi = CIVITAS_MODULE_ABI, .name = "disco", .load = load };
