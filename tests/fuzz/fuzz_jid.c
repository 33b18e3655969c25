/* tests/fuzz/fuzz_jid.c: libFuzzer target for JID parsing and preparation (server/jid.c): no crash on any
 * input, and a prepared JID is stable: jid_new(j->full) gives j back, each part preps to itself. */
#include "jid.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond, what) do { if (!(cond)) { fprintf(stderr, "invariant failed: %s\n", what); abort(); } } while (0)

static int same(const char *a, const char *b) { return a == b || (a && b && strcmp(a, b) == 0); }

static int jid_same(const jid_t *a, const jid_t *b)
{
    return same(a->node, b->node) && same(a->domain, b->domain) && same(a->resource, b->resource) &&
           same(a->bare, b->bare) && same(a->full, b->full);
}

static void check_part(char *(*prep)(const char *), const char *part, const char *what)
{
    if (!part) return;
    char *again = prep(part);
    CHECK(again && strcmp(again, part) == 0, what);
    free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    jid_t *j = jid_new(s);
    if (j) {
        CHECK(j->domain && j->bare && j->full, "domain, bare and full are set");
        CHECK(strlen(j->domain) <= JID_PART_MAX, "domain length");
        CHECK(!j->node || (*j->node && strlen(j->node) <= JID_PART_MAX), "node length");
        CHECK(!j->resource || (*j->resource && strlen(j->resource) <= JID_PART_MAX), "resource length");
        jid_t *k = jid_new(j->full);
        CHECK(k != NULL, "jid_new(j->full) is valid");
        CHECK(jid_same(j, k), "jid_new(j->full) equals j");
        CHECK(jid_equal(j, k) && jid_bare_equal(j, k), "jid_equal agrees");
        jid_t *m = jid_make(j->node, j->domain, j->resource);
        CHECK(m && jid_same(j, m), "jid_make(parts of j) equals j");
        jid_t *b = jid_new(j->bare);
        CHECK(b && !b->resource && same(b->bare, j->bare) && same(b->full, j->bare), "jid_new(j->bare) is bare j");
        check_part(jid_prep_node, j->node, "jid_prep_node is idempotent");
        check_part(jid_prep_domain, j->domain, "jid_prep_domain is idempotent");
        check_part(jid_prep_resource, j->resource, "jid_prep_resource is idempotent");
        jid_free(b);
        jid_free(m);
        jid_free(k);
        jid_free(j);
    }
    /* the part preparers on their own, on the whole input: a result preps to itself */
    char *n = jid_prep_node(s), *d = jid_prep_domain(s), *r = jid_prep_resource(s);
    check_part(jid_prep_node, n, "jid_prep_node(jid_prep_node(s)) == jid_prep_node(s)");
    check_part(jid_prep_domain, d, "jid_prep_domain(jid_prep_domain(s)) == jid_prep_domain(s)");
    check_part(jid_prep_resource, r, "jid_prep_resource(jid_prep_resource(s)) == jid_prep_resource(s)");
    free(n);
    free(d);
    free(r);
    free(s);
    return 0;
}
