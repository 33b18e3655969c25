/* modules/mod_omemo.c: refuses broken OMEMO items before PEP stores them (XEP-0384 v0.3 and v0.8): a
 * bundle whose signed prekey signature does not verify, odd sizes, counts or ids, over-long device lists. */
#include "module.h"
#include "omemo_bundle.h"
#include <stddef.h>
#include <string.h>

/* The hook mod_pep fires before it stores a published item (ev->stanza: the publish IQ, read-only;
 * HOOK_HANDLED: the handler answered, nothing is stored). */
#ifdef HOOK_PEP_PUBLISH
#define OMEMO_HOOK HOOK_PEP_PUBLISH
#else
#define OMEMO_HOOK "pep/publish"
#endif
#define NS_PUBSUB "http://jabber.org/protocol/pubsub"

static struct omemo_conf {
    int check_bundles;      /* parse and verify bundles (per host) */
    long max_devices;       /* longest device list accepted (per host) */
    long max_prekeys;       /* most prekeys a bundle may offer (per host) */
} conf;

/* max_devices 64: clients only ever add themselves to a legacy device list, so reinstalls leave stale
 * ids that accumulate over the years (tens are seen); every sender encrypts the key for and fetches the
 * bundle of each listed device, so thousands would make each message to the account a denial of service.
 * max_prekeys 200: XEP-0384 asks for about 100 prekeys; twice that leaves room for clients that top up
 * early while bounding the bundle (about 10 KB) every peer downloads. */
static const module_option_t options[] = {
    {"check_bundles", MOPT_BOOL, offsetof(struct omemo_conf, check_bundles), 1, 0, 1, .per_host = 1},
    {"max_devices", MOPT_INT, offsetof(struct omemo_conf, max_devices), 64, 1, 100000, .per_host = 1},
    {"max_prekeys", MOPT_INT, offsetof(struct omemo_conf, max_prekeys), 200, 1, 100000, .per_host = 1},
    {0}};

static module_ctx_t *self;

static int on_publish(hook_event_t *ev, void *ud)
{
    const xnode_t *pubsub = xnode_child(ev->stanza, "pubsub", NS_PUBSUB);
    const xnode_t *publish = xnode_child(pubsub, "publish", NS_PUBSUB);
    const char *node = xnode_attr(publish, "node");
    if (omemo_node_kind(node) == OMEMO_NODE_NONE)
        return HOOK_PASS;
    const struct omemo_conf *c = module_host_conf(self, ev->host);
    omemo_limits_t lim = {.check_bundles = c->check_bundles, .max_devices = c->max_devices,
                          .max_prekeys = c->max_prekeys};
    for (const xnode_t *item = xnode_first_elem(publish); item; item = xnode_next_elem(item)) {
        if (strcmp(item->name, "item") != 0 || strcmp(item->ns, NS_PUBSUB) != 0)
            continue;
        const char *why = omemo_check_item(node, item, &lim);
        if (why) {
            log_info("omemo", "refused a publish to %s: %s", node, why);
            xnode_t *err = stanza_error(ev->stanza, "modify", "not-acceptable", why);
            if (err)
                hook_reply(ev, err);
            return HOOK_HANDLED;
        }
    }
    return HOOK_PASS;
}

static int load(module_ctx_t *m)
{
    self = m;
    if (omemo_bundle_init() < 0) {
        log_error("omemo", "libsignal-protocol-c: cannot create a context");
        return -1;
    }
    module_hook(m, OMEMO_HOOK, 10, on_publish, NULL);
    return 0;
}

static void unload(module_ctx_t *m)
{
    omemo_bundle_cleanup();
}

const module_t civitas_module = {.abi = CIVITAS_MODULE_ABI, .name = "omemo", .load = load, .unload = unload,
                                 .options = options, .conf = &conf, .conf_size = sizeof conf,
                                 .depends = (const char *const[]){"pep", NULL}};
