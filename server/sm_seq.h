/* server/sm_seq.h: XEP-0198 §4 sequence arithmetic (static inline, no code in civitasd), for
 * mod_smacks (through module.h) and its unit test
 * (tests/unit/test_smacks_seq.c): h counts handled stanzas modulo 2^32 and wraps to 0. */
#ifndef CIVITAS_SM_SEQ_H
#define CIVITAS_SM_SEQ_H
#include <stddef.h>
#include <stdint.h>

/* XEP-0198 h is an unsigned 32-bit decimal ("xs:unsignedInt"); 0 and *h set, or -1 for anything
 * else (sign, space, empty, too large). */
static inline int smacks_parse_h(const char *txt, uint32_t *h)
{
    if (!txt || !*txt) return -1;
    uint64_t v = 0;
    for (const char *p = txt; *p; p++) {
        if (*p < '0' || *p > '9') return -1;
        v = v * 10 + (uint64_t)(*p - '0');
        if (v > UINT32_MAX) return -1;
    }
    *h = (uint32_t)v;
    return 0;
}

/* How many of `unacked` queued stanzas the peer's h acknowledges, given the h it acknowledged
 * last (`acked`): (h - acked) mod 2^32. -1 when that is more than were sent (h too high). */
static inline long smacks_newly_acked(uint32_t acked, uint32_t h, size_t unacked)
{
    uint32_t n = h - acked;     /* unsigned: wraps modulo 2^32 as the XEP's counter does */
    return (size_t)n > unacked ? -1 : (long)n;
}

#endif
