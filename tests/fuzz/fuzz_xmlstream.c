/* tests/fuzz/fuzz_xmlstream.c: libFuzzer target for the XMPP stream parser (xstream_* of server/xml.c):
 * arbitrary bytes in arbitrary chunks, with limits, stops and stream restarts chosen by the input. */
#include "xml.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond, what) do { if (!(cond)) { fprintf(stderr, "invariant failed: %s\n", what); abort(); } } while (0)

/* Input layout: byte 0 = options, byte 1 = PRNG seed for chunk sizes and restarts, the rest = the
 * bytes of the stream. Options: bits 0-1 pick the limits (defaults, tiny, c2s pre-auth, large);
 * bit 2: the stanza callback asks to stop on <starttls/> or <success/> like c2s does, and the feed
 * then restarts the stream; bit 3: raise the limits after the first stanza (as after SASL);
 * bits 4-7: the largest chunk is 2^(bits) bytes. */
typedef struct {
    xstream_t *x;
    int stop_on_restart;
    int raise_after;
    int errors, closes, opens, stanzas;
    int stopped;
} fz_t;

static const xstream_limits_t limit_sets[4] = {
    {0, 0, 0, 0},
    {64, 3, 2, 128},
    {8192, 32, 32, 0},
    {1 << 20, 1024, 1024, 1 << 16},
};

static int fz_open(void *ud, const char *ns, const char *name, const char *content_ns, const char **attrs)
{
    fz_t *f = ud;
    CHECK(ns && name, "header names are not NULL");
    for (size_t i = 0; attrs && attrs[i]; i += 2) CHECK(attrs[i + 1] != NULL, "attribute pairs");
    (void)content_ns;
    (void)xstream_check_header(ns, name);
    f->opens++;
    return 0;
}

static int fz_stanza(void *ud, xnode_t *st)
{
    fz_t *f = ud;
    f->stanzas++;
    CHECK(st && st->name && st->ns && !st->parent, "a stanza is an unlinked element");
    /* a stanza the parser built always serialises (xml.h: "Never NULL for trees the parser built") */
    size_t len;
    char *s = xnode_serialize(st, "jabber:client", &len);
    CHECK(s != NULL, "a parsed stanza serialises");
    free(s);
    int r = 0;
    if (f->raise_after && f->stanzas == 1) xstream_set_limits(f->x, &limit_sets[3]);
    if (f->stop_on_restart && (!strcmp(st->name, "starttls") || !strcmp(st->name, "success"))) {
        f->stopped = 1;
        r = 1;
    }
    xnode_free(st);
    return r;
}

static void fz_close(void *ud) { ((fz_t *)ud)->closes++; }

static void fz_error(void *ud, const char *cond, const char *text)
{
    fz_t *f = ud;
    f->errors++;
    CHECK(f->errors == 1, "error is called at most once per stream");
    static const char *const conds[] = {"not-well-formed", "restricted-xml", "policy-violation",
                                        "unsupported-encoding", "bad-format", NULL};
    int known = 0;
    for (int i = 0; conds[i]; i++) known |= !strcmp(cond, conds[i]);
    CHECK(known, "the condition is one xml.h lists");
    CHECK(text != NULL, "an error has a text");
}

static uint32_t rng_next(uint32_t *s)
{
    *s = *s * 1103515245u + 12345u;
    return *s >> 16;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    uint8_t opt = data[0];
    uint32_t rng = data[1];
    const char *p = (const char *)data + 2;
    size_t left = size - 2;
    size_t maxchunk = (size_t)1 << (opt >> 4);
    fz_t f;
    memset(&f, 0, sizeof f);
    f.stop_on_restart = !!(opt & 4);
    f.raise_after = !!(opt & 8);
    xstream_cb_t cb = {fz_open, fz_stanza, fz_close, fz_error};
    f.x = xstream_new(&cb, &f, &limit_sets[opt & 3]);
    int restarts = 0;
    while (left) {
        size_t n = 1 + rng_next(&rng) % maxchunk;
        if (n > left) n = left;
        int r = xstream_feed(f.x, p, n);
        p += n;
        left -= n;
        CHECK(r == 0 || f.errors || f.stopped, "feed fails only after an error or a stop");
        /* After a stop the caller restarts (STARTTLS, SASL); a few restarts also come at random
         * points, as a stream restart may follow any feed. */
        if (f.stopped || (rng_next(&rng) % 64 == 0 && restarts < 8)) {
            restarts++;
            xstream_reset(f.x);
            f.stopped = 0;
            f.errors = 0;
        } else if (r < 0) {
            CHECK(xstream_feed(f.x, "<a/>", 4) == -1, "after an error feeding is refused");
        }
    }
    xstream_free(f.x);
    return 0;
}
