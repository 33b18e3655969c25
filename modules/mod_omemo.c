/* modules/mod_omemo.c: refuses broken OMEMO items before PEP stores them (XEP-0384 v0.3 and v0.8): a
 * bundle whose signed prekey signature does not verify, odd sizes, counts or ids, over-long device lists. */
#include "module.h"
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include <signal_protocol.h>
#include <curve.h>

/* ---- the checks ------------------------------------------------------------------------------
 * Kept apart from the hooks: tests/unit/test_omemo_bundle.c and tests/fuzz/fuzz_omemo_bundle.c include
 * this file with MOD_OMEMO_CHECKS_ONLY defined and call them without a server. */
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

#define LEGACY_KEY_LEN 33       /* libsignal's serialisation: type byte 0x05 (DJB_TYPE), then 32 bytes */
#define LEGACY_KEY_TYPE 0x05
#define OMEMO2_KEY_LEN 32       /* raw X25519 (spk, pk) or Ed25519 (ik) public keys */
#define SIG_LEN 64              /* XEdDSA and Ed25519 signatures */
#define OMEMO2_MAX_DEVICE_ID 0x7fffffffUL   /* XEP-0384 v0.8 §5.3.1: device ids are 1 .. 2^31 - 1 */

static signal_context *sigctx;  /* libsignal wants one for curve_decode_point (it logs through it) */

int omemo_bundle_init(void)
{
    if (sigctx)
        return 0;
    return signal_context_create(&sigctx, NULL) == 0 ? 0 : -1;
}

void omemo_bundle_cleanup(void)
{
    if (sigctx)
        signal_context_destroy(sigctx);
    sigctx = NULL;
}

omemo_node_t omemo_node_kind(const char *node)
{
    if (!node)
        return OMEMO_NODE_NONE;
    if (strcmp(node, NODE_LEGACY_DEVICES) == 0)
        return OMEMO_NODE_LEGACY_DEVICES;
    if (strncmp(node, NODE_LEGACY_BUNDLES, strlen(NODE_LEGACY_BUNDLES)) == 0)
        return OMEMO_NODE_LEGACY_BUNDLE;
    if (strcmp(node, NODE_OMEMO2_DEVICES) == 0)
        return OMEMO_NODE_OMEMO2_DEVICES;
    if (strcmp(node, NODE_OMEMO2_BUNDLES) == 0)
        return OMEMO_NODE_OMEMO2_BUNDLE;
    return OMEMO_NODE_NONE;
}

/* A decimal id in [min, max]: digits only, no sign, no leading zero, no spaces (peers build node names
 * from ids, so only the canonical spelling is findable). 0 or -1. */
static int parse_id(const char *s, unsigned long min, unsigned long max, unsigned long *out)
{
    if (!s || !*s || strlen(s) > 10 || (s[0] == '0' && s[1]))
        return -1;
    unsigned long long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (unsigned)(*p - '0');
    }
    if (v < min || v > max)
        return -1;
    if (out)
        *out = (unsigned long)v;
    return 0;
}

long omemo_b64_decode(const char *in, uint8_t *out, size_t cap)
{
    /* the characters without whitespace, then the core's strict decoder (codec.h) */
    size_t len = strlen(in), m = 0, n = 0;
    char *c = malloc(len + 1);
    if (!c)
        return -1;
    for (size_t i = 0; i < len; i++)
        if (in[i] != ' ' && in[i] != '\t' && in[i] != '\n' && in[i] != '\r')
            c[m++] = in[i];
    unsigned char *raw = NULL;
    long rc = -1;
    if (base64_decode(c, m, &raw, &n) == 0 && n <= cap) {
        memcpy(out, raw, n);
        rc = (long)n;
    }
    free(raw);
    free(c);
    return rc;
}

/* The base64 text of el decoded into out, which must come out exactly len bytes long. 0 or -1. */
static int decode_exact(const xnode_t *el, uint8_t *out, size_t len)
{
    if (!el)
        return -1;
    char *t = xnode_text(el);
    long n = omemo_b64_decode(t, out, len);
    free(t);
    return n == (long)len ? 0 : -1;
}

static int legacy_key(const xnode_t *el, uint8_t key[LEGACY_KEY_LEN])
{
    return decode_exact(el, key, LEGACY_KEY_LEN) == 0 && key[0] == LEGACY_KEY_TYPE ? 0 : -1;
}

/* The item's payload: its first child element. */
static const xnode_t *payload_of(const xnode_t *item, const char *name, const char *ns)
{
    const xnode_t *p = xnode_first_elem(item);
    if (!p || strcmp(p->name, name) != 0 || strcmp(p->ns ? p->ns : "", ns) != 0)
        return NULL;
    return p;
}

/* XEP-0384 v0.3 §4.3: <bundle><signedPreKeyPublic signedPreKeyId/><signedPreKeySignature/><identityKey/>
 * <prekeys><preKeyPublic preKeyId/>...</prekeys></bundle>, keys in libsignal's 33-byte form, the signature
 * XEdDSA over the serialised signed prekey (what libsignal's session builder checks). */
static const char *check_legacy_bundle(const xnode_t *b, const omemo_limits_t *lim)
{
    uint8_t spk[LEGACY_KEY_LEN], ik[LEGACY_KEY_LEN], sig[SIG_LEN], pk[LEGACY_KEY_LEN];
    const xnode_t *spk_el = xnode_child(b, "signedPreKeyPublic", NS_OMEMO_LEGACY);
    if (!spk_el)
        return "OMEMO bundle without signedPreKeyPublic";
    if (parse_id(xnode_attr(spk_el, "signedPreKeyId"), 0, 0xffffffffUL, NULL) < 0)
        return "OMEMO bundle: signedPreKeyId is not a number 0 .. 2^32-1";
    if (legacy_key(spk_el, spk) < 0)
        return "OMEMO bundle: signedPreKeyPublic is not a 33-byte Curve25519 key (type 5)";
    if (decode_exact(xnode_child(b, "signedPreKeySignature", NS_OMEMO_LEGACY), sig, SIG_LEN) < 0)
        return "OMEMO bundle: signedPreKeySignature missing or not 64 bytes";
    if (legacy_key(xnode_child(b, "identityKey", NS_OMEMO_LEGACY), ik) < 0)
        return "OMEMO bundle: identityKey missing or not a 33-byte Curve25519 key (type 5)";
    const xnode_t *pks = xnode_child(b, "prekeys", NS_OMEMO_LEGACY);
    if (!pks)
        return "OMEMO bundle without prekeys";
    long count = 0;
    for (const xnode_t *e = xnode_first_elem(pks); e; e = xnode_next_elem(e)) {
        if (strcmp(e->name, "preKeyPublic") != 0 || strcmp(e->ns ? e->ns : "", NS_OMEMO_LEGACY) != 0)
            continue;
        if (++count > lim->max_prekeys)
            return "OMEMO bundle: too many prekeys";
        if (parse_id(xnode_attr(e, "preKeyId"), 0, 0xffffffffUL, NULL) < 0)
            return "OMEMO bundle: a preKeyId is not a number 0 .. 2^32-1";
        if (legacy_key(e, pk) < 0)
            return "OMEMO bundle: a preKeyPublic is not a 33-byte Curve25519 key (type 5)";
    }
    if (count == 0)
        return "OMEMO bundle without any preKeyPublic";
    ec_public_key *key = NULL;
    if (!sigctx || curve_decode_point(&key, ik, sizeof ik, sigctx) != 0)
        return "OMEMO bundle: identityKey is not a usable Curve25519 key";
    int ok = curve_verify_signature(key, spk, sizeof spk, sig, sizeof sig);
    SIGNAL_UNREF(key);
    return ok == 1 ? NULL : "OMEMO bundle: the signedPreKeySignature does not verify under the identityKey";
}

/* Ed25519 signature sig over msg under the raw public key pub: 1 valid, 0 not. */
static int ed25519_verify(const uint8_t pub[OMEMO2_KEY_LEN], const uint8_t *msg, size_t len,
                          const uint8_t sig[SIG_LEN])
{
    EVP_PKEY *k = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, OMEMO2_KEY_LEN);
    EVP_MD_CTX *c = k ? EVP_MD_CTX_new() : NULL;
    int ok = c && EVP_DigestVerifyInit(c, NULL, NULL, NULL, k) == 1 && EVP_DigestVerify(c, sig, SIG_LEN, msg, len) == 1;
    EVP_MD_CTX_free(c);
    EVP_PKEY_free(k);
    return ok;
}

/* XEP-0384 v0.8 §5.3.2: <bundle><spk id/><spks/><ik/><prekeys><pk id/>...</prekeys></bundle>, ik the
 * Ed25519 identity key, spk and pk X25519 keys (32 bytes each), spks the Ed25519 signature of spk. */
static const char *check_omemo2_bundle(const xnode_t *b, const omemo_limits_t *lim)
{
    uint8_t spk[OMEMO2_KEY_LEN], ik[OMEMO2_KEY_LEN], sig[SIG_LEN], pk[OMEMO2_KEY_LEN];
    const xnode_t *spk_el = xnode_child(b, "spk", NS_OMEMO2);
    if (!spk_el)
        return "OMEMO:2 bundle without spk";
    if (parse_id(xnode_attr(spk_el, "id"), 0, 0xffffffffUL, NULL) < 0)
        return "OMEMO:2 bundle: the spk id is not a number 0 .. 2^32-1";
    if (decode_exact(spk_el, spk, sizeof spk) < 0)
        return "OMEMO:2 bundle: spk is not a 32-byte key";
    if (decode_exact(xnode_child(b, "spks", NS_OMEMO2), sig, sizeof sig) < 0)
        return "OMEMO:2 bundle: spks missing or not 64 bytes";
    if (decode_exact(xnode_child(b, "ik", NS_OMEMO2), ik, sizeof ik) < 0)
        return "OMEMO:2 bundle: ik missing or not a 32-byte key";
    const xnode_t *pks = xnode_child(b, "prekeys", NS_OMEMO2);
    if (!pks)
        return "OMEMO:2 bundle without prekeys";
    long count = 0;
    for (const xnode_t *e = xnode_first_elem(pks); e; e = xnode_next_elem(e)) {
        if (strcmp(e->name, "pk") != 0 || strcmp(e->ns ? e->ns : "", NS_OMEMO2) != 0)
            continue;
        if (++count > lim->max_prekeys)
            return "OMEMO:2 bundle: too many prekeys";
        if (parse_id(xnode_attr(e, "id"), 0, 0xffffffffUL, NULL) < 0)
            return "OMEMO:2 bundle: a pk id is not a number 0 .. 2^32-1";
        if (decode_exact(e, pk, sizeof pk) < 0)
            return "OMEMO:2 bundle: a pk is not a 32-byte key";
    }
    if (count == 0)
        return "OMEMO:2 bundle without any pk";
    if (!ed25519_verify(ik, spk, sizeof spk, sig))
        return "OMEMO:2 bundle: spks does not verify under ik (Ed25519)";
    return NULL;
}

/* <list><device id/>...</list> (legacy) or <devices><device id label/>...</devices> (OMEMO:2). */
static const char *check_devices(const xnode_t *list, const char *ns, unsigned long max_id, const omemo_limits_t *lim)
{
    long count = 0;
    for (const xnode_t *e = xnode_first_elem(list); e; e = xnode_next_elem(e)) {
        if (strcmp(e->name, "device") != 0 || strcmp(e->ns ? e->ns : "", ns) != 0)
            continue;
        if (++count > lim->max_devices)
            return "OMEMO device list names more devices than this server allows";
        if (parse_id(xnode_attr(e, "id"), 1, max_id, NULL) < 0)
            return max_id == OMEMO2_MAX_DEVICE_ID ? "OMEMO:2 device list: a device id is not a number 1 .. 2^31-1"
                                                  : "OMEMO device list: a device id is not a number 1 .. 2^32-1";
    }
    return NULL;
}

const char *omemo_check_item(const char *node, const xnode_t *item, const omemo_limits_t *lim)
{
    const xnode_t *p;
    switch (omemo_node_kind(node)) {
    case OMEMO_NODE_NONE:
        return NULL;
    case OMEMO_NODE_LEGACY_DEVICES:
        if (!(p = payload_of(item, "list", NS_OMEMO_LEGACY)))
            return "the OMEMO device list node takes <list xmlns='" NS_OMEMO_LEGACY "'/>";
        return check_devices(p, NS_OMEMO_LEGACY, 0xffffffffUL, lim);
    case OMEMO_NODE_OMEMO2_DEVICES:
        if (!(p = payload_of(item, "devices", NS_OMEMO2)))
            return "the OMEMO:2 device list node takes <devices xmlns='" NS_OMEMO2 "'/>";
        return check_devices(p, NS_OMEMO2, OMEMO2_MAX_DEVICE_ID, lim);
    case OMEMO_NODE_LEGACY_BUNDLE:
        if (!lim->check_bundles)
            return NULL;
        if (parse_id(node + strlen(NODE_LEGACY_BUNDLES), 1, 0xffffffffUL, NULL) < 0)
            return "OMEMO bundle node: the device id is not a number 1 .. 2^32-1";
        if (!(p = payload_of(item, "bundle", NS_OMEMO_LEGACY)))
            return "the OMEMO bundle node takes <bundle xmlns='" NS_OMEMO_LEGACY "'/>";
        return check_legacy_bundle(p, lim);
    case OMEMO_NODE_OMEMO2_BUNDLE:
        if (!lim->check_bundles)
            return NULL;
        if (parse_id(xnode_attr(item, "id"), 1, OMEMO2_MAX_DEVICE_ID, NULL) < 0)
            return "OMEMO:2 bundle: the item id (the device id) is not a number 1 .. 2^31-1";
        if (!(p = payload_of(item, "bundle", NS_OMEMO2)))
            return "the OMEMO:2 bundle node takes <bundle xmlns='" NS_OMEMO2 "'/>";
        return check_omemo2_bundle(p, lim);
    }
    return NULL;
}

#ifndef MOD_OMEMO_CHECKS_ONLY
/* ---- the module ------------------------------------------------------------------------------ */
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
#endif /* MOD_OMEMO_CHECKS_ONLY */
