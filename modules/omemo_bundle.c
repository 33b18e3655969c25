/* modules/omemo_bundle.c: parses published OMEMO bundles and device lists and says whether they are
 * usable: sizes, counts and ids, and the signed prekey's signature under the identity key. */
#include "omemo_bundle.h"
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include <signal_protocol.h>
#include <curve.h>

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

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

long omemo_b64_decode(const char *in, uint8_t *out, size_t cap)
{
    /* c: the characters without whitespace; only the last quad may end in one or two '=' */
    size_t len = strlen(in), m = 0, n = 0;
    char *c = malloc(len + 1);
    if (!c)
        return -1;
    for (size_t i = 0; i < len; i++)
        if (in[i] != ' ' && in[i] != '\t' && in[i] != '\n' && in[i] != '\r')
            c[m++] = in[i];
    long rc = -1;
    if (m % 4 != 0)
        goto out;
    for (size_t q = 0; q < m; q += 4) {
        int last = q + 4 == m, v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            if (c[q + k] == '=' && last && k >= 2 && (k == 3 || c[q + 3] == '=')) {
                v[k] = 0, pad++;
                continue;
            }
            if ((v[k] = b64_value((unsigned char)c[q + k])) < 0)
                goto out;
        }
        uint32_t acc = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        /* the unused bits must be zero: one spelling per value */
        if ((pad == 2 && (acc & 0xffff)) || (pad == 1 && (acc & 0xff)))
            goto out;
        size_t bytes = 3 - (size_t)pad;
        if (n + bytes > cap)
            goto out;
        out[n++] = (uint8_t)(acc >> 16);
        if (bytes > 1) out[n++] = (uint8_t)(acc >> 8);
        if (bytes > 2) out[n++] = (uint8_t)acc;
    }
    rc = (long)n;
out:
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
