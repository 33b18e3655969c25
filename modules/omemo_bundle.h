/* modules/omemo_bundle.h: checks of published OMEMO items (XEP-0384 v0.3 "legacy" and v0.8 "OMEMO:2"):
 * bundles are parsed and their signed prekey signature verified, device lists counted. Part of mod_omemo;
 * kept apart from the hooks so that the unit test and the fuzz target call it without a server. */
#ifndef CIVITAS_OMEMO_BUNDLE_H
#define CIVITAS_OMEMO_BUNDLE_H
#include "module.h"
#include <stdint.h>

#define NS_OMEMO_LEGACY "eu.siacs.conversations.axolotl"
#define NODE_LEGACY_DEVICES NS_OMEMO_LEGACY ".devicelist"
#define NODE_LEGACY_BUNDLES NS_OMEMO_LEGACY ".bundles:"     /* followed by the device id */
#define NS_OMEMO2 "urn:xmpp:omemo:2"
#define NODE_OMEMO2_DEVICES NS_OMEMO2 ":devices"
#define NODE_OMEMO2_BUNDLES NS_OMEMO2 ":bundles"            /* item id = device id */

typedef struct omemo_limits {
    int check_bundles;      /* 0: bundles are not looked at (device lists still are) */
    long max_devices;       /* a device list naming more devices is refused */
    long max_prekeys;       /* a bundle with more prekeys is refused */
} omemo_limits_t;

/* What a pubsub node is to OMEMO. */
typedef enum {
    OMEMO_NODE_NONE,            /* not an OMEMO node */
    OMEMO_NODE_LEGACY_DEVICES,
    OMEMO_NODE_LEGACY_BUNDLE,
    OMEMO_NODE_OMEMO2_DEVICES,
    OMEMO_NODE_OMEMO2_BUNDLE,
} omemo_node_t;
omemo_node_t omemo_node_kind(const char *node);

/* Needed once before omemo_check_item (libsignal's context, used for its logging only); 0 or -1.
 * omemo_bundle_cleanup frees it; both may be called again. */
int omemo_bundle_init(void);
void omemo_bundle_cleanup(void);

/* Checks the <item/> `item` about to be published to `node`. Returns NULL when it may be stored (also
 * for nodes that are not OMEMO's), else a static English text saying what is wrong, for the
 * <not-acceptable/> error. Costs one signature verification for a bundle, nothing for other nodes. */
const char *omemo_check_item(const char *node, const xnode_t *item, const omemo_limits_t *lim);

/* Decodes base64 (RFC 4648 §4, padding required; XML whitespace between characters is skipped, as
 * clients wrap long values) into out[0..cap); returns the length, or -1 for bad input or more than cap
 * bytes. Exposed for the tests. */
long omemo_b64_decode(const char *in, uint8_t *out, size_t cap);

#endif
