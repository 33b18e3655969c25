/* tests/fuzz/fuzz_omemo_bundle.c: libFuzzer target for mod_omemo's checks (modules/mod_omemo.c): the
 * input's first byte picks the node (and the limits), the rest is a published <item/>; no crash, no leak,
 * and the verdict is NULL or a non-empty text. The base64 decoder is fed the raw rest as well. */
#define MOD_OMEMO_CHECKS_ONLY
#include "mod_omemo.c"       /* the checks, without the hooks */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond, what) do { if (!(cond)) { fprintf(stderr, "invariant failed: %s\n", what); abort(); } } while (0)

static const char *const nodes[] = {NODE_LEGACY_BUNDLES "12345", NODE_OMEMO2_BUNDLES, NODE_LEGACY_DEVICES,
                                    NODE_OMEMO2_DEVICES, NODE_LEGACY_BUNDLES "0", "urn:xmpp:avatar:data"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static int inited;
    if (!inited) {
        CHECK(omemo_bundle_init() == 0, "libsignal context");
        inited = 1;
    }
    const char *node = nodes[(data[0] & 0x7) % (sizeof nodes / sizeof *nodes)];
    omemo_limits_t lim = {.check_bundles = !(data[0] & 0x80), .max_devices = (data[0] & 0x40) ? 3 : 64,
                          .max_prekeys = (data[0] & 0x20) ? 2 : 200};
    char *s = malloc(size);
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';
    uint8_t buf[64];
    long n = omemo_b64_decode(s, buf, sizeof buf);
    CHECK(n >= -1 && n <= (long)sizeof buf, "base64 length within the buffer");
    xnode_t *item = xnode_parse_one(s, size - 1, NULL);
    if (item) {
        const char *why = omemo_check_item(node, item, &lim);
        CHECK(!why || *why, "a refusal has a text");
        xnode_free(item);
    }
    free(s);
    return 0;
}
