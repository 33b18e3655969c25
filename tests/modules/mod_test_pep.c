/* tests/modules/mod_test_pep.c: a stand-in for mod_pep, named "pep", for test_omemo_checks.py while no real
 * mod_pep is built: a pubsub publish to one's own account fires "pep/publish" as mod_pep does (the whole
 * IQ, origin, from, to = the owner's bare JID, host) and is answered with a result unless a handler answered
 * it. It stores nothing; a get of items finds none. */
#include "module.h"
#include <string.h>

#define NS_PUBSUB "http://jabber.org/protocol/pubsub"

static int on_set(hook_event_t *ev, void *ud)
{
    if (!xnode_child(xnode_child(ev->stanza, "pubsub", NS_PUBSUB), "publish", NS_PUBSUB))
        return hook_error(ev, "cancel", "feature-not-implemented");
    if (!ev->from || !ev->to || strcmp(ev->from->bare, ev->to->bare) != 0)
        return hook_error(ev, "auth", "forbidden");
    hook_event_t pe = *ev;
    pe.name = "pep/publish";
    if (hook_fire(&pe) == HOOK_HANDLED)
        return HOOK_HANDLED;
    log_info("pep", "test_pep: publish accepted");
    return hook_reply(ev, stanza_reply(ev->stanza));
}

static int on_get(hook_event_t *ev, void *ud)
{
    return hook_error(ev, "cancel", "item-not-found");
}

static int load(module_ctx_t *m)
{
    module_hook(m, "iq-set/bare/" NS_PUBSUB, 0, on_set, NULL);
    module_hook(m, "iq-get/bare/" NS_PUBSUB, 0, on_get, NULL);
    return 0;
}

const module_t civitas_module = {.abi = CIVITAS_MODULE_ABI, .name = "pep", .load = load};
