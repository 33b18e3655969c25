/* tests/unit/test_omemo_bundle.c: mod_omemo's checks (modules/mod_omemo.c) on real bundles: legacy
 * ones made by libsignal-protocol-c, OMEMO:2 ones signed with Ed25519 by OpenSSL, then broken one way each. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <signal_protocol.h>
#include <key_helper.h>
#include <session_pre_key.h>
#include <curve.h>
#include <ratchet.h>
#define MOD_OMEMO_CHECKS_ONLY
#include "mod_omemo.c"       /* the checks, without the hooks */
#include "scram.h"          /* base64_encode */
#include "signal_crypto.h"
#include "tap.h"

#define NS_PUBSUB "http://jabber.org/protocol/pubsub"
#define LEGACY_NODE NODE_LEGACY_BUNDLES "12345"

static char *fmt(const char *f, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, f);
    if (vasprintf(&s, f, ap) < 0)
        abort();
    va_end(ap);
    return s;
}

static char *b64(const uint8_t *d, size_t n)
{
    char *s = NULL;
    if (base64_encode(d, n, &s) < 0)
        abort();
    return s;
}

/* ---- a legacy bundle, one string per element (NULL: the element is left out) ---- */
typedef struct {
    const char *spk_id, *spk, *sig, *ik;
    char *prekeys;          /* the <preKeyPublic/> elements (NULL: no <prekeys/>) */
} legacy_t;

static uint8_t L_spk[33], L_sig[64], L_ik[33], L_other_ik[33];
static char *L_prekeys_xml;
static int L_npk = 100;

static void gen_legacy(void)
{
    signal_context *ctx = NULL;
    if (signal_context_create(&ctx, NULL) != 0 || signal_context_set_crypto_provider(ctx, &signal_crypto_openssl) != 0)
        abort();
    ratchet_identity_key_pair *ikp = NULL, *other = NULL;
    session_signed_pre_key *spk = NULL;
    signal_protocol_key_helper_pre_key_list_node *head = NULL;
    if (signal_protocol_key_helper_generate_identity_key_pair(&ikp, ctx) != 0 ||
        signal_protocol_key_helper_generate_identity_key_pair(&other, ctx) != 0 ||
        signal_protocol_key_helper_generate_signed_pre_key(&spk, ikp, 7, (uint64_t)time(NULL) * 1000, ctx) != 0 ||
        signal_protocol_key_helper_generate_pre_keys(&head, 1, (unsigned)L_npk, ctx) != 0)
        abort();
    signal_buffer *b = NULL;
    ec_public_key_serialize(&b, ratchet_identity_key_pair_get_public(ikp));
    memcpy(L_ik, signal_buffer_data(b), 33);
    signal_buffer_free(b);
    ec_public_key_serialize(&b, ratchet_identity_key_pair_get_public(other));
    memcpy(L_other_ik, signal_buffer_data(b), 33);
    signal_buffer_free(b);
    ec_public_key_serialize(&b, ec_key_pair_get_public(session_signed_pre_key_get_key_pair(spk)));
    memcpy(L_spk, signal_buffer_data(b), 33);
    signal_buffer_free(b);
    if (session_signed_pre_key_get_signature_len(spk) != 64)
        abort();
    memcpy(L_sig, session_signed_pre_key_get_signature(spk), 64);
    char *x = strdup("");
    for (signal_protocol_key_helper_pre_key_list_node *n = head; n; n = signal_protocol_key_helper_key_list_next(n)) {
        session_pre_key *pk = signal_protocol_key_helper_key_list_element(n);
        ec_public_key_serialize(&b, ec_key_pair_get_public(session_pre_key_get_key_pair(pk)));
        char *k = b64(signal_buffer_data(b), signal_buffer_len(b)), *y;
        signal_buffer_free(b);
        y = fmt("%s<preKeyPublic preKeyId='%u'>%s</preKeyPublic>", x, session_pre_key_get_id(pk), k);
        free(x), free(k), x = y;
    }
    L_prekeys_xml = x;
    signal_protocol_key_helper_key_list_free(head);
    SIGNAL_UNREF(spk);
    SIGNAL_UNREF(ikp);
    SIGNAL_UNREF(other);
    signal_context_destroy(ctx);
}

/* With OMEMO_SEED_DIR set, the valid items are also written there as seeds for tests/fuzz/fuzz_omemo_bundle
 * (its first byte picks the node: 0 legacy bundle, 1 OMEMO:2 bundle, 2 legacy list, 3 OMEMO:2 list). */
static void seed(const char *name, int node, const char *item_id, const char *payload)
{
    const char *dir = getenv("OMEMO_SEED_DIR");
    if (!dir)
        return;
    char *path = fmt("%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "%c<item xmlns='" NS_PUBSUB "' id='%s'>%s</item>", node, item_id, payload);
        fclose(f);
    }
    free(path);
}

static xnode_t *item_of(const char *item_id, const char *payload)
{
    char *xml = fmt("<item xmlns='" NS_PUBSUB "' id='%s'>%s</item>", item_id, payload);
    xnode_t *n = xnode_parse_one(xml, strlen(xml), NULL);
    if (!n) {
        fprintf(stderr, "unparsable test item: %s\n", xml);
        abort();
    }
    free(xml);
    return n;
}

static char *legacy_xml(const legacy_t *l)
{
    char *s = strdup("<bundle xmlns='" NS_OMEMO_LEGACY "'>"), *t;
#define ADD(...) (t = fmt(__VA_ARGS__), free(s), s = t)
    if (l->spk)
        l->spk_id ? ADD("%s<signedPreKeyPublic signedPreKeyId='%s'>%s</signedPreKeyPublic>", s, l->spk_id, l->spk)
                  : ADD("%s<signedPreKeyPublic>%s</signedPreKeyPublic>", s, l->spk);
    if (l->sig)
        ADD("%s<signedPreKeySignature>%s</signedPreKeySignature>", s, l->sig);
    if (l->ik)
        ADD("%s<identityKey>%s</identityKey>", s, l->ik);
    if (l->prekeys)
        ADD("%s<prekeys>%s</prekeys>", s, l->prekeys);
    ADD("%s</bundle>", s);
    return s;
}

static const omemo_limits_t defaults = {.check_bundles = 1, .max_devices = 64, .max_prekeys = 200};

/* The check's verdict on a legacy bundle published to node: NULL (accepted) or the reason. */
static const char *check_legacy(const char *node, const legacy_t *l, const omemo_limits_t *lim)
{
    char *x = legacy_xml(l);
    xnode_t *item = item_of("current", x);
    const char *why = omemo_check_item(node, item, lim ? lim : &defaults);
    xnode_free(item);
    free(x);
    return why;
}

static int refused(const char *why, const char *needle)
{
    if (!why)
        return 0;
    if (needle && !strstr(why, needle)) {
        printf("# refused, but for another reason: %s\n", why);
        return 0;
    }
    return 1;
}

static char *b64_mod(const uint8_t *d, size_t n, size_t flip_at, int add)
{
    uint8_t buf[128];
    memcpy(buf, d, n);
    if (flip_at < n)
        buf[flip_at] ^= 0x01;
    if (add)
        buf[n] = 0x42;
    return b64(buf, n + (size_t)add);
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void test_legacy(void)
{
    gen_legacy();
    char *spk = b64(L_spk, 33), *sig = b64(L_sig, 64), *ik = b64(L_ik, 33);
    legacy_t good = {"7", spk, sig, ik, L_prekeys_xml}, l;

    ok(check_legacy(LEGACY_NODE, &good, NULL) == NULL, "a libsignal bundle with %d prekeys is accepted", L_npk);
    ok(check_legacy(NODE_LEGACY_BUNDLES "4294967295", &good, NULL) == NULL, "device id 2^32-1 in the node name");

    /* base64 wrapped over lines, as some clients write it */
    char *wrapped = fmt("%.20s\n  %s", ik, ik + 20);
    l = good, l.ik = wrapped;
    ok(check_legacy(LEGACY_NODE, &l, NULL) == NULL, "base64 with whitespace inside is accepted");

    char *bad_sig = b64_mod(L_sig, 64, 10, 0);
    l = good, l.sig = bad_sig;
    ok(refused(check_legacy(LEGACY_NODE, &l, NULL), "does not verify"), "one bit flipped in the signature: refused");
    char *bad_spk = b64_mod(L_spk, 33, 20, 0);
    l = good, l.spk = bad_spk;
    ok(refused(check_legacy(LEGACY_NODE, &l, NULL), "does not verify"), "one bit flipped in the signed prekey: refused");
    char *other_ik = b64(L_other_ik, 33);
    l = good, l.ik = other_ik;
    ok(refused(check_legacy(LEGACY_NODE, &l, NULL), "does not verify"), "signed by another identity key: refused");

    uint8_t k[34];
    memcpy(k, L_ik, 33), k[0] = 0x06;
    char *wrong_type = b64(k, 33);
    l = good, l.ik = wrong_type;
    ok(refused(check_legacy(LEGACY_NODE, &l, NULL), "identityKey"), "identity key with type byte 6: refused");
    char *short_ik = b64(L_ik + 1, 32);
    l = good, l.ik = short_ik;
    ok(refused(check_legacy(LEGACY_NODE, &l, NULL), "identityKey"), "identity key of 32 bytes (no type byte): refused");
    char *long_spk = b64_mod(L_spk, 33, 99, 1);
    l = good, l.spk = long_spk;
    ok(refused(check_legacy(LEGACY_NODE, &l, NULL), "signedPreKeyPublic"), "signed prekey of 34 bytes: refused");
    char *short_sig = b64(L_sig, 63);
    l = good, l.sig = short_sig;
    ok(refused(check_legacy(LEGACY_NODE, &l, NULL), "signedPreKeySignature"), "signature of 63 bytes: refused");
    l = good, l.ik = "!!!!not*base64";
    ok(refused(check_legacy(LEGACY_NODE, &l, NULL), "identityKey"), "base64 garbage in the identity key: refused");
    char *trunc = fmt("%.*s", (int)strlen(ik) - 1, ik);
    l = good, l.ik = trunc;
    ok(refused(check_legacy(LEGACY_NODE, &l, NULL), "identityKey"), "identity key missing its last base64 character: refused");

    l = good, l.ik = NULL;
    ok(refused(check_legacy(LEGACY_NODE, &l, NULL), "identityKey"), "no identityKey: refused");
    l = good, l.spk = NULL;
    ok(refused(check_legacy(LEGACY_NODE, &l, NULL), "signedPreKeyPublic"), "no signedPreKeyPublic: refused");
    l = good, l.sig = NULL;
    ok(refused(check_legacy(LEGACY_NODE, &l, NULL), "signedPreKeySignature"), "no signedPreKeySignature: refused");
    l = good, l.prekeys = NULL;
    ok(refused(check_legacy(LEGACY_NODE, &l, NULL), "prekeys"), "no <prekeys/>: refused");
    l = good, l.prekeys = "";
    ok(refused(check_legacy(LEGACY_NODE, &l, NULL), "preKeyPublic"), "empty <prekeys/>: refused");
    l = good, l.spk_id = NULL;
    ok(refused(check_legacy(LEGACY_NODE, &l, NULL), "signedPreKeyId"), "no signedPreKeyId: refused");
    l = good, l.spk_id = "4294967296";
    ok(refused(check_legacy(LEGACY_NODE, &l, NULL), "signedPreKeyId"), "signedPreKeyId 2^32: refused");

    omemo_limits_t lim = defaults;
    lim.max_prekeys = L_npk;
    ok(check_legacy(LEGACY_NODE, &good, &lim) == NULL, "max_prekeys %d: %d prekeys accepted", L_npk, L_npk);
    lim.max_prekeys = L_npk - 1;
    ok(refused(check_legacy(LEGACY_NODE, &good, &lim), "too many prekeys"), "max_prekeys %d: %d prekeys refused",
       L_npk - 1, L_npk);

    const char *bad_ids[] = {"4294967296", "-1", "abc", "01", " 1", ""};
    for (size_t i = 0; i < sizeof bad_ids / sizeof *bad_ids; i++) {
        char *pks = fmt("%s<preKeyPublic preKeyId='%s'>%s</preKeyPublic>", L_prekeys_xml, bad_ids[i], spk);
        l = good, l.prekeys = pks;
        ok(refused(check_legacy(LEGACY_NODE, &l, NULL), "preKeyId"), "preKeyId '%s': refused", bad_ids[i]);
        free(pks);
    }
    char *pk_bad = fmt("%s<preKeyPublic preKeyId='999'>%s</preKeyPublic>", L_prekeys_xml, short_ik);
    l = good, l.prekeys = pk_bad;
    ok(refused(check_legacy(LEGACY_NODE, &l, NULL), "preKeyPublic"), "a prekey of 32 bytes: refused");

    const char *bad_nodes[] = {NODE_LEGACY_BUNDLES "0", NODE_LEGACY_BUNDLES "4294967296", NODE_LEGACY_BUNDLES "x1",
                               NODE_LEGACY_BUNDLES "", NODE_LEGACY_BUNDLES "007"};
    for (size_t i = 0; i < sizeof bad_nodes / sizeof *bad_nodes; i++)
        ok(refused(check_legacy(bad_nodes[i], &good, NULL), "device id"), "node '%s': refused", bad_nodes[i]);

    xnode_t *item = item_of("current", "<list xmlns='" NS_OMEMO_LEGACY "'/>");
    ok(refused(omemo_check_item(LEGACY_NODE, item, &defaults), "takes <bundle"), "a device list on a bundle node: refused");
    xnode_free(item);
    item = item_of("current", "");
    ok(refused(omemo_check_item(LEGACY_NODE, item, &defaults), "takes <bundle"), "an item without payload: refused");
    xnode_free(item);

    lim = defaults, lim.check_bundles = 0;
    l = good, l.sig = bad_sig;
    ok(check_legacy(LEGACY_NODE, &l, &lim) == NULL, "check_bundles off: a broken bundle is let through");
    ok(check_legacy("urn:xmpp:avatar:data", &l, NULL) == NULL, "other nodes are not looked at");

    /* the cost: one check = parse of every key + one XEdDSA verification */
    char *x = legacy_xml(&good);
    seed("legacy_bundle", 0, "current", x);
    item = item_of("current", x);
    int rounds = 500;
    double t0 = now_us();
    for (int i = 0; i < rounds; i++)
        if (omemo_check_item(LEGACY_NODE, item, &defaults))
            abort();
    double per = (now_us() - t0) / rounds;
    printf("# legacy bundle (%d prekeys) checked in %.1f us (one XEdDSA verification)\n", L_npk, per);
    signal_context *ctx = NULL;
    ec_public_key *key = NULL;
    if (signal_context_create(&ctx, NULL) != 0 || curve_decode_point(&key, L_ik, 33, ctx) != 0)
        abort();
    t0 = now_us();
    for (int i = 0; i < rounds; i++)
        if (curve_verify_signature(key, L_spk, 33, L_sig, 64) != 1)
            abort();
    printf("# of which curve_verify_signature alone: %.1f us\n", (now_us() - t0) / rounds);
    SIGNAL_UNREF(key);
    signal_context_destroy(ctx);
    xnode_free(item);
    free(x);

    free(spk), free(sig), free(ik), free(wrapped), free(bad_sig), free(bad_spk), free(other_ik), free(wrong_type);
    free(short_ik), free(long_spk), free(short_sig), free(trunc), free(pk_bad);
}

/* ---- OMEMO:2 ---- */
typedef struct {
    const char *spk_id, *spk, *spks, *ik;
    char *prekeys;
} omemo2_t;

static char *omemo2_xml(const omemo2_t *o)
{
    char *s = strdup("<bundle xmlns='" NS_OMEMO2 "'>"), *t;
    if (o->spk)
        o->spk_id ? ADD("%s<spk id='%s'>%s</spk>", s, o->spk_id, o->spk) : ADD("%s<spk>%s</spk>", s, o->spk);
    if (o->spks)
        ADD("%s<spks>%s</spks>", s, o->spks);
    if (o->ik)
        ADD("%s<ik>%s</ik>", s, o->ik);
    if (o->prekeys)
        ADD("%s<prekeys>%s</prekeys>", s, o->prekeys);
    ADD("%s</bundle>", s);
    return s;
}

static const char *check_omemo2(const char *item_id, const omemo2_t *o, const omemo_limits_t *lim)
{
    char *x = omemo2_xml(o);
    xnode_t *item = item_of(item_id, x);
    const char *why = omemo_check_item(NODE_OMEMO2_BUNDLES, item, lim ? lim : &defaults);
    xnode_free(item);
    free(x);
    return why;
}

static void test_omemo2(void)
{
    /* ik: Ed25519; spk: an X25519 public key; spks: Ed25519(ik, spk's 32 bytes) (XEP-0384 v0.8 §5.3.2) */
    EVP_PKEY *ik = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519"), *other = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    EVP_PKEY *spk = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
    uint8_t ikr[32], otr[32], spkr[32], sig[64];
    size_t n = 32, sl = 64;
    if (!ik || !other || !spk || !EVP_PKEY_get_raw_public_key(ik, ikr, &n) ||
        !EVP_PKEY_get_raw_public_key(other, otr, &n) || !EVP_PKEY_get_raw_public_key(spk, spkr, &n))
        abort();
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (!EVP_DigestSignInit(c, NULL, NULL, NULL, ik) || !EVP_DigestSign(c, sig, &sl, spkr, 32) || sl != 64)
        abort();
    EVP_MD_CTX_free(c);
    char *pks = strdup(""), *t;
    for (int i = 1; i <= 100; i++) {
        uint8_t r[32];
        RAND_bytes(r, 32);
        char *k = b64(r, 32);
        t = fmt("%s<pk id='%d'>%s</pk>", pks, i, k);
        free(pks), free(k), pks = t;
    }
    char *ik64 = b64(ikr, 32), *ot64 = b64(otr, 32), *spk64 = b64(spkr, 32), *sig64 = b64(sig, 64);
    omemo2_t good = {"1", spk64, sig64, ik64, pks}, o;
    ok(check_omemo2("31415", &good, NULL) == NULL, "an OMEMO:2 bundle signed with Ed25519 is accepted");
    ok(check_omemo2("2147483647", &good, NULL) == NULL, "OMEMO:2 device id 2^31-1 accepted");

    char *bad_sig = b64_mod(sig, 64, 3, 0);
    o = good, o.spks = bad_sig;
    ok(refused(check_omemo2("31415", &o, NULL), "does not verify"), "OMEMO:2: one bit flipped in spks: refused");
    char *bad_spk = b64_mod(spkr, 32, 0, 0);
    o = good, o.spk = bad_spk;
    ok(refused(check_omemo2("31415", &o, NULL), "does not verify"), "OMEMO:2: one bit flipped in spk: refused");
    o = good, o.ik = ot64;
    ok(refused(check_omemo2("31415", &o, NULL), "does not verify"), "OMEMO:2: another identity key: refused");
    char *long_ik = b64_mod(ikr, 32, 99, 1);
    o = good, o.ik = long_ik;
    ok(refused(check_omemo2("31415", &o, NULL), "ik"), "OMEMO:2: ik of 33 bytes: refused");
    char *short_spk = b64(spkr, 31);
    o = good, o.spk = short_spk;
    ok(refused(check_omemo2("31415", &o, NULL), "spk"), "OMEMO:2: spk of 31 bytes: refused");
    o = good, o.spks = NULL;
    ok(refused(check_omemo2("31415", &o, NULL), "spks"), "OMEMO:2: no spks: refused");
    o = good, o.spk_id = NULL;
    ok(refused(check_omemo2("31415", &o, NULL), "spk id"), "OMEMO:2: spk without id: refused");
    o = good, o.prekeys = "";
    ok(refused(check_omemo2("31415", &o, NULL), "without any pk"), "OMEMO:2: no pk: refused");
    char *pk_bad = fmt("%s<pk id='x'>%s</pk>", pks, spk64);
    o = good, o.prekeys = pk_bad;
    ok(refused(check_omemo2("31415", &o, NULL), "pk id"), "OMEMO:2: pk id 'x': refused");
    omemo_limits_t lim = defaults;
    lim.max_prekeys = 99;
    ok(refused(check_omemo2("31415", &good, &lim), "too many"), "OMEMO:2: 100 pks with max_prekeys 99: refused");
    const char *bad_ids[] = {"0", "2147483648", "-5", "abc"};
    for (size_t i = 0; i < sizeof bad_ids / sizeof *bad_ids; i++)
        ok(refused(check_omemo2(bad_ids[i], &good, NULL), "item id"), "OMEMO:2: item id '%s': refused", bad_ids[i]);

    char *x = omemo2_xml(&good);
    seed("omemo2_bundle", 1, "31415", x);
    xnode_t *item = item_of("31415", x);
    int rounds = 500;
    double t0 = now_us();
    for (int i = 0; i < rounds; i++)
        if (omemo_check_item(NODE_OMEMO2_BUNDLES, item, &defaults))
            abort();
    printf("# OMEMO:2 bundle (100 pks) checked in %.1f us (one Ed25519 verification)\n", (now_us() - t0) / rounds);
    xnode_free(item);
    free(x);
    free(pks), free(ik64), free(ot64), free(spk64), free(sig64), free(bad_sig), free(bad_spk), free(long_ik);
    free(short_spk), free(pk_bad);
    EVP_PKEY_free(ik), EVP_PKEY_free(other), EVP_PKEY_free(spk);
}

/* ---- device lists ---- */
static const char *check_list(const char *node, const char *outer, const char *ns, int count, const char *extra_id,
                              const omemo_limits_t *lim)
{
    char *s = fmt("<%s xmlns='%s'>", outer, ns), *t;
    for (int i = 1; i <= count; i++)
        ADD("%s<device id='%d'/>", s, 1000 + i);
    if (extra_id)
        ADD("%s<device id='%s'/>", s, extra_id);
    ADD("%s</%s>", s, outer);
    xnode_t *item = item_of("current", s);
    const char *why = omemo_check_item(node, item, lim);
    xnode_free(item);
    free(s);
    return why;
}

static void test_devices(void)
{
    seed("legacy_list", 2, "current", "<list xmlns='" NS_OMEMO_LEGACY "'><device id='1'/><device id='4294967295'/></list>");
    seed("omemo2_list", 3, "current", "<devices xmlns='" NS_OMEMO2 "'><device id='7' label='phone'/></devices>");
    omemo_limits_t lim = defaults;
    lim.max_devices = 5;
    ok(check_list(NODE_LEGACY_DEVICES, "list", NS_OMEMO_LEGACY, 5, NULL, &lim) == NULL, "legacy list at the cap: accepted");
    ok(refused(check_list(NODE_LEGACY_DEVICES, "list", NS_OMEMO_LEGACY, 6, NULL, &lim), "more devices"),
       "legacy list one over the cap: refused");
    ok(check_list(NODE_LEGACY_DEVICES, "list", NS_OMEMO_LEGACY, 0, NULL, &lim) == NULL, "empty legacy list: accepted");
    ok(refused(check_list(NODE_LEGACY_DEVICES, "list", NS_OMEMO_LEGACY, 1, "0", &lim), "device id"),
       "legacy device id 0: refused");
    ok(check_list(NODE_LEGACY_DEVICES, "list", NS_OMEMO_LEGACY, 1, "4294967295", &lim) == NULL,
       "legacy device id 2^32-1: accepted");
    ok(refused(check_list(NODE_LEGACY_DEVICES, "devices", NS_OMEMO2, 1, NULL, &lim), "takes <list"),
       "an OMEMO:2 list on the legacy node: refused");
    ok(check_list(NODE_OMEMO2_DEVICES, "devices", NS_OMEMO2, 5, NULL, &lim) == NULL, "OMEMO:2 list at the cap: accepted");
    ok(refused(check_list(NODE_OMEMO2_DEVICES, "devices", NS_OMEMO2, 6, NULL, &lim), "more devices"),
       "OMEMO:2 list one over the cap: refused");
    ok(refused(check_list(NODE_OMEMO2_DEVICES, "devices", NS_OMEMO2, 1, "2147483648", &lim), "device id"),
       "OMEMO:2 device id 2^31: refused");
    lim.check_bundles = 0;
    ok(refused(check_list(NODE_OMEMO2_DEVICES, "devices", NS_OMEMO2, 6, NULL, &lim), "more devices"),
       "the cap holds with check_bundles off");
    ok(check_list(NODE_LEGACY_DEVICES, "list", NS_OMEMO_LEGACY, 64, NULL, &defaults) == NULL,
       "64 devices under the default cap: accepted");
}

static void test_b64(void)
{
    struct { const char *in; long len; const char *out; } cases[] = {
        {"Zm9v", 3, "foo"}, {"Zg==", 1, "f"}, {"Zm8=", 2, "fo"}, {"", 0, ""}, {" Zm\n9v\r\n", 3, "foo"},
        {"Zh==", -1, NULL}, {"Zm9=", -1, NULL}, {"Zg=", -1, NULL}, {"Z===", -1, NULL}, {"Zg==Zg==", -1, NULL},
        {"Zm9v!", -1, NULL}, {"Zm=v", -1, NULL}, {"====", -1, NULL}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint8_t out[16];
        long n = omemo_b64_decode(cases[i].in, out, sizeof out);
        ok(n == cases[i].len && (n < 0 || memcmp(out, cases[i].out, (size_t)n) == 0), "base64 case %zu -> %ld", i, cases[i].len);
    }
    uint8_t two[2];
    ok(omemo_b64_decode("Zm9v", two, sizeof two) == -1, "base64 longer than the buffer: refused");
}

int main(void)
{
    if (omemo_bundle_init() < 0)
        return 1;
    test_b64();
    test_legacy();
    test_omemo2();
    test_devices();
    omemo_bundle_cleanup();
    return done_testing();
}
