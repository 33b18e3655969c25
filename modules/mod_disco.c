/* modules/mod_disco.c: XEP-0030 Service Discovery for the server's domain: identity and the
 * features every loaded module registered; items (none yet, components will add them). */
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

static int on_items(hook_event_t *ev, void *ud)
{
    (void)ud;
    xnode_t *r = stanza_reply(ev->stanza);
    xnode_add_elem(r, "query", NS_DISCO_ITEMS);
    return hook_reply(ev, r);
}

static int load(module_ctx_t *m)
{
    module_add_identity(m, "server", "im", "civitas");
    module_add_feature(m, NS_DISCO_INFO);
    module_add_feature(m, NS_DISCO_ITEMS);
    module_hook(m, "iq-get/host/" NS_DISCO_INFO, 0, on_info, NULL);
    module_hook(m, "iq-get/host/" NS_DISCO_ITEMS, 0, on_items, NULL);
    return 0;
}

const module_t civitas_module = { .abi = CIVITAS_MODULE_ABI, .name = "disco", .load = load };
