/* modules/mod_ping.c: XEP-0199 XMPP Ping, answered by the server for its domain and, as
 * RFC 6121 §8.5.1 lets the server answer for an account, for bare JIDs. */
#include "module.h"

static int on_ping(hook_event_t *ev, void *ud)
{
    (void)ud;
    return hook_reply(ev, stanza_reply(ev->stanza));
}

static int load(module_ctx_t *m)
{
    module_add_feature(m, "urn:xmpp:ping");
    module_hook(m, "iq-get/host/urn:xmpp:ping", 0, on_ping, NULL);
    module_hook(m, "iq-get/bare/urn:xmpp:ping", 0, on_ping, NULL);
    return 0;
}

const module_t civitas_module = { .abi = CIVITAS_MODULE_ABI, .name = "ping", .load = load };
