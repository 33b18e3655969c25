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
 * messages); presence is dropped. A message with body "ping-me" makes the component send an
 * XEP-0199 ping (module_send_iq) from the address it was sent to, to the sender, and report the
 * outcome in a message "pinged: result|error|timeout|cancelled". */
#include "module.h"
#include <stdlib.h>
#include <string.h>

#define NS_PING "urn:xmpp:ping"

static module_ctx_t *self;

typedef struct pinged { char *from, *to; } pinged_t;

static void on_pinged(iq_outcome_t outcome, const xnode_t *reply, void *ud)
{
    (void)reply;
    pinged_t *p = ud;
    static const char *const names[] = {"result", "error", "timeout", "cancelled"};
    if (outcome != IQ_CANCELLED) {
        char *text = xasprintf("pinged: %s", names[outcome]);
        xnode_t *m = xnode_new("message", NS_CLIENT);
        xnode_set_attr(m, "from", p->from);
        xnode_set_attr(m, "to", p->to);
        xnode_set_attr(m, "type", "chat");
        xnode_add_text(xnode_add_elem(m, "body", NS_CLIENT), text);
        free(text);
        route_stanza(m);
    }
    free(p->from);
    free(p->to);
    free(p);
}

static void send_ping(const hook_event_t *ev)
{
    pinged_t *p = xcalloc(1, sizeof *p);
    p->from = xstrdup(ev->to->full);
    p->to = xstrdup(ev->from->full);
    xnode_t *iq = xnode_new("iq", NS_CLIENT);
    xnode_set_attr(iq, "type", "get");
    xnode_set_attr(iq, "from", p->from);
    xnode_set_attr(iq, "to", p->to);
    xnode_add_elem(iq, "ping", NS_PING);
    if (!module_send_iq(self, iq, NULL, 10000, on_pinged, p)) {
        xnode_t *m = xnode_new("message", NS_CLIENT);
        xnode_set_attr(m, "from", p->from);
        xnode_set_attr(m, "to", p->to);
        xnode_set_attr(m, "type", "chat");
        xnode_add_text(xnode_add_elem(m, "body", NS_CLIENT), "pinged: refused");
        route_stanza(m);
        free(p->from);
        free(p->to);
        free(p);
    }
}

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
    if (strcmp(text, "ping-me") == 0) {
        free(text);
        send_ping(ev);
        return HOOK_HANDLED;
    }
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
    self = m;
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
