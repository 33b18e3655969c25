/* tests/unit/test_smacks_seq.c: TAP tests for server/sm_seq.h, XEP-0198 §4's counter: h is
 * an unsigned 32-bit number that wraps to 0 after 2^32 - 1; what an <a h/> acknowledges is the
 * difference modulo 2^32, never more than what is unacknowledged. */
#include "sm_seq.h"
#include "tap.h"

int main(void)
{
    uint32_t h = 7;
    ok(smacks_parse_h("0", &h) == 0 && h == 0, "h='0' parses");
    ok(smacks_parse_h("4294967295", &h) == 0 && h == UINT32_MAX, "h='4294967295' (2^32 - 1) parses");
    ok(smacks_parse_h("4294967296", &h) < 0, "h='4294967296' does not fit in 32 bits: refused");
    ok(smacks_parse_h("-1", &h) < 0 && smacks_parse_h("", &h) < 0 && smacks_parse_h(NULL, &h) < 0 &&
           smacks_parse_h(" 1", &h) < 0 && smacks_parse_h("1x", &h) < 0,
       "a sign, an empty or missing value, spaces or other characters are refused");
    ok(smacks_newly_acked(0, 3, 5) == 3, "h 3 after 0 with 5 unacknowledged: 3 acknowledged");
    ok(smacks_newly_acked(10, 10, 0) == 0, "the same h again acknowledges nothing");
    ok(smacks_newly_acked(0, 6, 5) == -1, "h above what was sent is refused (handled-count-too-high)");
    /* the wrap: the counter went 4294967294, 4294967295, 0, 1 */
    ok(smacks_newly_acked(UINT32_MAX - 1, 1, 5) == 3, "across the wrap: from 2^32 - 2 to 1 is 3 stanzas");
    ok(smacks_newly_acked(UINT32_MAX, 0, 1) == 1, "from 2^32 - 1 to 0 is 1 stanza");
    ok(smacks_newly_acked(UINT32_MAX - 1, 4, 5) == -1, "across the wrap, more than was sent is still refused");
    uint32_t c = UINT32_MAX;
    c++;
    ok(c == 0, "the counter itself (uint32_t) wraps to 0 after 2^32 - 1");
    return done_testing();
}
