/* tests/fuzz/fuzz_sasl2.c: libFuzzer target for the SASL2 request parser (server/sasl2_req.c): a
 * client's <authenticate/> with XEP-0386 <bind/> and XEP-0484 <request-token/>/<fast/>, the base64
 * payloads of SASL2 elements, and the HT-* initial response.
 *
 * Input: byte 0 picks what the rest is: even: one XML element in urn:xmpp:sasl:2 (an <authenticate/>
 * or a <response/>); odd: an HT initial response. Invariants: no crash, leak or UB; a parsed request
 * has a mechanism of 1..20 bytes, a user-agent id that is empty or a lower-case UUID, a tag of at
 * most SASL2_MAX_TAG bytes, a count only when one was given (and above 0); a failure names a
 * condition; an HT parse gives a non-empty authcid without NUL and a hash of 1..64 bytes. */
#include "sasl2_req.h"
#include "util.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond, what) do { if (!(cond)) { fprintf(stderr, "invariant failed: %s\n", what); abort(); } } while (0)

static void check_request(const xnode_t *el)
{
    sasl2_req_t r;
    const char *cond = NULL;
    int rc = sasl2_parse_authenticate(el, &r, &cond);
    if (rc < 0) {
        CHECK(cond && (!strcmp(cond, "invalid-mechanism") || !strcmp(cond, "incorrect-encoding") ||
                       !strcmp(cond, "malformed-request")), "a failure names an RFC 6120 condition");
    } else {
        CHECK(rc == 0 && !cond, "success has no condition");
        CHECK(r.mechanism && *r.mechanism && strlen(r.mechanism) <= 20, "mechanism of 1..20 bytes");
        size_t n = strlen(r.ua_id);
        CHECK(n == 0 || n == SASL2_UA_ID_LEN, "user-agent id empty or a UUID");
        for (size_t i = 0; i < n; i++)
            CHECK((r.ua_id[i] >= '0' && r.ua_id[i] <= '9') || (r.ua_id[i] >= 'a' && r.ua_id[i] <= 'f') ||
                      r.ua_id[i] == '-', "user-agent id is lower-case hex and dashes");
        CHECK(!r.tag || (*r.tag && strlen(r.tag) <= SASL2_MAX_TAG), "tag of 1..SASL2_MAX_TAG bytes");
        CHECK(!r.bind == !r.bind_el, "bind and its copy go together");
        CHECK(r.has_count ? r.fast_count > 0 && r.fast : r.fast_count == 0, "count only when given, above 0");
        CHECK(!r.initial || r.initial_len < 1u << 20, "initial response decoded");
    }
    sasl2_req_clear(&r);
    for (const xnode_t *c = xnode_first_elem(el); c; c = xnode_next_elem(c)) {
        unsigned char *out = NULL;
        size_t len = 0;
        if (sasl2_payload(c, &out, &len) == 0) CHECK(out != NULL, "payload set on success");
        else CHECK(out == NULL, "no payload on failure");
        free(out);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    if (data[0] % 2 == 0) {
        xnode_t *el = xnode_parse_one((const char *)p, n, NS_SASL2);
        if (el) {
            check_request(el);
            xnode_free(el);
        }
    } else {
        char *authcid;
        const unsigned char *hash;
        size_t hlen;
        if (sasl2_ht_parse(p, n, &authcid, &hash, &hlen) == 0) {
            CHECK(authcid && *authcid && strlen(authcid) < n, "authcid non-empty, before the NUL");
            CHECK(hlen >= 1 && hlen <= 64 && hash > p && hash + hlen == p + n, "hash is the rest");
            free(authcid);
        } else {
            CHECK(!authcid && !hash && !hlen, "nothing set on failure");
        }
    }
    return 0;
}
