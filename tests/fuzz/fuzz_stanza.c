/* tests/fuzz/fuzz_stanza.c: libFuzzer target for the stanza round trip (xnode_parse_one, xnode_serialize)
 * and for what a relay depends on: the serialised stanza is, inside a stream, exactly one stanza again. */
#include "xml.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Abort with a message: libFuzzer records the input as a crash. */
#define CHECK(cond, what) do { if (!(cond)) { fprintf(stderr, "invariant failed: %s\n", what); abort(); } } while (0)

typedef struct {
    xnode_t *got[3];
    int n, closed, failed;
} sink_t;

static int sink_stanza(void *ud, xnode_t *st)
{
    sink_t *s = ud;
    if (s->n < 3) s->got[s->n] = st;
    else xnode_free(st);
    s->n++;
    return 0;
}

static void sink_close(void *ud) { ((sink_t *)ud)->closed = 1; }
static void sink_error(void *ud, const char *c, const char *t)
{
    (void)c; (void)t;
    ((sink_t *)ud)->failed = 1;
}

/* The serialisation of st, put into a stream between a header and a marker stanza, must come out as
 * exactly st followed by the marker: nothing the serialiser writes can end the stanza early, open
 * another one, or reach the stream level (stanza smuggling, cf. CVE-2022-22784). */
static void check_in_stream(const xnode_t *st, const char *xml, size_t len, const char *default_ns)
{
    static const char marker[] = "<iq xmlns='urn:civitas:fuzz' id='marker'/>";
    xstream_cb_t cb = {NULL, sink_stanza, sink_close, sink_error};
    sink_t s;
    memset(&s, 0, sizeof s);
    xstream_limits_t lim = {len + 64, XNODE_PARSE_MAX_DEPTH, XNODE_PARSE_MAX_ATTRS, 0};
    xstream_t *x = xstream_new(&cb, &s, &lim);
    char hdr[256];
    snprintf(hdr, sizeof hdr, "<stream:stream xmlns:stream='" XML_NS_STREAMS "'%s%s%s>",
             default_ns ? " xmlns='" : "", default_ns ? default_ns : "", default_ns ? "'" : "");
    int r = xstream_feed(x, hdr, strlen(hdr));
    r |= xstream_feed(x, xml, len);
    r |= xstream_feed(x, marker, sizeof marker - 1);
    r |= xstream_feed(x, "</stream:stream>", 16);
    CHECK(r == 0 && !s.failed && s.closed, "serialised stanza parses inside a stream");
    CHECK(s.n == 2, "exactly one stanza and the marker come out of the stream");
    CHECK(xnode_equal(s.got[0], st), "stanza from the stream equals the original");
    CHECK(s.got[1] && strcmp(s.got[1]->name, "iq") == 0 && !strcmp(xnode_attr(s.got[1], "id"), "marker"),
          "the marker follows intact");
    for (int i = 0; i < 3; i++) xnode_free(s.got[i]);
    xstream_free(x);
}

/* xnode_serialize writes a jabber:client or jabber:server stanza as if in default_ns, together with
 * the descendants that inherit the stanza's namespace (xml.h): apply the same to the expected tree. */
static void translate_ns(xnode_t *n, const char *from, const char *to)
{
    if (!n->name || strcmp(n->ns, from) != 0) return;
    free(n->ns);
    n->ns = strdup(to);
    for (xnode_t *c = n->children; c; c = c->next) translate_ns(c, from, to);
}

static void round_trip(const char *data, size_t size, const char *default_ns)
{
    xnode_t *a = xnode_parse_one(data, size, default_ns);
    if (!a) return;
    xnode_t *want = xnode_copy(a);
    CHECK(xnode_equal(a, want), "a copy equals the original");
    if (default_ns && (!strcmp(a->ns, "jabber:client") || !strcmp(a->ns, "jabber:server")) &&
        strcmp(a->ns, default_ns) != 0)
        translate_ns(want, a->ns, default_ns);
    size_t len1 = 0, len2 = 0;
    char *s1 = xnode_serialize(a, default_ns, &len1);
    CHECK(s1 != NULL, "a parsed tree serialises");
    CHECK(strlen(s1) == len1, "serialised length");
    xnode_t *b = xnode_parse_one(s1, len1, default_ns);
    CHECK(b != NULL, "the serialised tree parses again");
    CHECK(xnode_equal(want, b), "parse(serialise(a)) equals a");
    CHECK(xnode_equal(b, want), "xnode_equal is symmetric");
    char *s2 = xnode_serialize(b, default_ns, &len2);
    CHECK(s2 && len1 == len2 && memcmp(s1, s2, len1) == 0, "serialisation is a fixed point");
    check_in_stream(want, s1, len1, default_ns);
    free(s2);
    xnode_free(b);
    free(s1);
    xnode_free(want);
    xnode_free(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    /* the first byte picks the default namespace: stored XML, c2s or s2s streams */
    static const char *const nss[] = {"jabber:client", "jabber:server", NULL};
    const char *ns = nss[data[0] % 3];
    round_trip((const char *)data + 1, size - 1, ns);
    return 0;
}
