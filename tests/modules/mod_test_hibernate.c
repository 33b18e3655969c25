/* tests/modules/mod_test_hibernate.c: stands in for stream management (mod_smacks) towards mod_push
 * in tests/integration/test_push.py. Built by `make check` only.
 *
 * A message to a full JID of a local account whose resource starts with "hib" (a session that
 * would be hibernated, XEP-0198) is reported on "smacks/hibernated-stanza" (module.h: origin NULL
 * here, to = that full JID, from = the sender, host set, stanza = the message) and then dropped, as
 * smacks would queue it for the session; nothing else is touched. */
#include "module.h"
#include <string.h>

static int on_full(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!ev->to || !ev->to->node || !ev->to->resource || strncmp(ev->to->resource, "hib", 3) != 0)
        return HOOK_PASS;
    hook_event_t hev = {.name = HOOK_SMACKS_HIBERNATED_STANZA, .stanza = ev->stanza, .host = ev->host,
                        .from = ev->from, .to = ev->to};
    hook_fire(&hev);
    return HOOK_HANDLED;
}

static int load(module_ctx_t *m)
{
    module_hook(m, HOOK_MESSAGE_FULL, 1000, on_full, NULL);
    return 0;
}

const module_t civitas_module = {.abi = CIVITAS_MODULE_ABI, .name = "test_hibernate", .load = load};
