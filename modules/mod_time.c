/* modules/mod_time.c: XEP-0202 Entity Time of the server, always in UTC (tzo +00:00), so
 * that the server's location is not disclosed. */
#include "module.h"
#include <time.h>

static int on_time(hook_event_t *ev, void *ud)
{
    (void)ud;
    char buf[XEP0082_SIZE];
    xep0082_timestamp(buf, sizeof buf, (int64_t)time(NULL));
    xnode_t *r = stanza_reply(ev->stanza);
    xnode_t *q = xnode_add_elem(r, "time", "urn:xmpp:time");
    xnode_add_text(xnode_add_elem(q, "tzo", NULL), "+00:00");
    xnode_add_text(xnode_add_elem(q, "utc", NULL), buf);
    return hook_reply(ev, r);
}

static int load(module_ctx_t *m)
{
    module_add_feature(m, "urn:xmpp:time");
    module_hook(m, "iq-get/host/urn:xmpp:time", 0, on_time, NULL);
    return 0;
}

const module_t civitas_module = { .abi = CIVITAS_MODULE_ABI, .name = "time", .load = load };
