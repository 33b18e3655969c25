/* tests/modules/mod_test_component.c: a component (component.h) for tests/integration/
 * test_components.py. Built by `make check` only.
 *
 * Serves svc.<first host> ("Test service", identity store/file, features urn:xmpp:ping and
 * urn:civitas:test-component) and adds a plain item (jid = the first host, node test-node) to the
 * first host's disco#items. Known addresses: the domain itself and echo@ the domain (any
 * resource). To those, an XEP-0199 ping is answered with a result and a message is echoed back
 * (same type, body "echo: BODY", from the address it was sent to). Any other IQ get/set to the
 * domain is left to the core (disco#info by mod_disco, else service-unavailable). Any other node
 * at the domain is answered with the component's own error <item-not-found/> (IQ get/set and
 * messages); presence is dropped. */
#include "module.h"
#include <stdlib.h>
#include <string.h>

#define NS_PING "urn:xmpp:ping"

static int known(const jid_t *to) { return !to->node || strcmp(to->node, "echo") == 0; }

static int on_stanza(hook_event_t *ev, void *ud)
{
    (void)ud;
    const char *type = xnode_attr(ev->stanza, "type");
    if (!type) type = "";
    if (strcmp(type, "error") == 0 || strcmp(ev->name, "component/presence") == 0) return HOOK_PASS;
    if (!known(ev->to)) {
        if (strcmp(ev->name, "component/iq") == 0 && strcmp(type, "get") != 0 && strcmp(type, "set") != 0)
            return HOOK_HANDLED;
        return hook_error(ev, "cancel", "item-not-found");
    }
    if (strcmp(ev->name, "component/iq") == 0) {
        xnode_t *q = xnode_first_elem(ev->stanza);
        if (strcmp(type, "get") == 0 && q && strcmp(q->name, "ping") == 0 && q->ns && strcmp(q->ns, NS_PING) == 0)
            return hook_reply(ev, stanza_reply(ev->stanza));
        return HOOK_PASS;
    }
    xnode_t *body = xnode_child(ev->stanza, "body", NS_CLIENT);
    if (!body || !ev->from) return HOOK_HANDLED;
    char *text = xnode_text(body);
    char *echo = xasprintf("echo: %s", text);
    xnode_t *m = xnode_new("message", NS_CLIENT);
    xnode_set_attr(m, "from", ev->to->full);
    xnode_set_attr(m, "to", ev->from->full);
    if (*type) xnode_set_attr(m, "type", type);
    xnode_add_text(xnode_add_elem(m, "body", NS_CLIENT), echo);
    free(text);
    free(echo);
    route_stanza(m);
    return HOOK_HANDLED;
}

static int load(module_ctx_t *m)
{
    host_t *h = host_at(0);
    char *domain = xasprintf("svc.%s", host_name(h));
    component_t *c = module_add_component(m, h, domain, "Test service", on_stanza, NULL);
    free(domain);
    if (!c) return -1;
    component_add_identity(c, "store", "file", "Test service");
    component_add_feature(c, NS_PING);
    component_add_feature(c, "urn:civitas:test-component");
    module_add_item(m, h, host_name(h), "test-node", "A plain item");
    return 0;
}

const module_t civitas_module = { .abi = CIVITAS_MODULE_ABI, .name = "test_component", .load = load };
