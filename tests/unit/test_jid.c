/* tests/unit/test_jid.c: TAP tests for server/jid.c against RFC 7622 (JID syntax) and the
 * RFC 6122 Nodeprep/Resourceprep profiles, IDNA2008 domains and IP literals. */
#include "jid.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

static int str_eq(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* jid_new(in) succeeds and has exactly these parts and full string. */
static int parses_as(const char *in, const char *node, const char *domain, const char *resource,
                     const char *full)
{
    jid_t *j = jid_new(in);
    int r = j != NULL && str_eq(j->node, node) && str_eq(j->domain, domain)
            && str_eq(j->resource, resource) && str_eq(j->full, full);
    jid_free(j);
    return r;
}

static int rejected(const char *in)
{
    jid_t *j = jid_new(in);
    jid_free(j);
    return j == NULL;
}

/* A prep function gives want (NULL: rejects), and preparing its output again changes nothing. */
static int prep_is(char *(*prep)(const char *), const char *in, const char *want)
{
    char *out = prep(in);
    int r = str_eq(out, want);
    if (out != NULL) {
        char *again = prep(out);
        r = r && str_eq(again, out);
        free(again);
    }
    free(out);
    return r;
}

static char *repeat(const char *unit, size_t times, const char *suffix)
{
    size_t ul = strlen(unit), sl = strlen(suffix);
    char *s = malloc(ul * times + sl + 1);
    for (size_t i = 0; i < times; i++)
        memcpy(s + i * ul, unit, ul);
    memcpy(s + ul * times, suffix, sl + 1);
    return s;
}

static void test_forms(void)
{
    jid_t *j = jid_new("juliet@example.com");
    ok(j && str_eq(j->node, "juliet") && str_eq(j->domain, "example.com") && j->resource == NULL
       && str_eq(j->bare, "juliet@example.com") && str_eq(j->full, "juliet@example.com"),
       "RFC 7622 §3: node@domain has no resource, full equals bare");
    jid_free(j);
    ok(parses_as("juliet@example.com/foo", "juliet", "example.com", "foo", "juliet@example.com/foo"),
       "node@domain/resource");
    j = jid_new("example.com");
    ok(j && j->node == NULL && j->resource == NULL && str_eq(j->bare, "example.com")
       && str_eq(j->full, "example.com"), "domain alone is a JID");
    jid_free(j);
    ok(parses_as("example.com/foo", NULL, "example.com", "foo", "example.com/foo"), "domain/resource");
    ok(parses_as("juliet@example.com/foo bar", "juliet", "example.com", "foo bar", "juliet@example.com/foo bar"),
       "RFC 7622 §3.4: ASCII space allowed in a resourcepart");
}

static void test_case(void)
{
    ok(parses_as("JULIET@EXAMPLE.COM/Balcony", "juliet", "example.com", "Balcony", "juliet@example.com/Balcony"),
       "Nodeprep and domain lowercase; Resourceprep keeps case");
    ok(prep_is(jid_prep_node, "MÜLLER", "müller"), "Nodeprep case-folds non-ASCII (Ü -> ü)");
    ok(prep_is(jid_prep_node, "ｊｕｌｉｅｔ", "juliet"), "Nodeprep applies NFKC (fullwidth -> ASCII)");
    ok(prep_is(jid_prep_resource, "Ｂａｌｃｏｎｙ", "Balcony"), "Resourceprep applies NFKC but keeps case");
    ok(prep_is(jid_prep_node, "juliet\xC2\xAD", "juliet"), "Nodeprep maps U+00AD SOFT HYPHEN to nothing");
    jid_t *a = jid_new("juliet@example.com/Balcony"), *b = jid_new("juliet@example.com/balcony");
    ok(a && b && !jid_equal(a, b) && jid_bare_equal(a, b), "resources differing in case are different JIDs");
    jid_free(a);
    jid_free(b);
}

static void test_split(void)
{
    ok(parses_as("a@b/c@d/e", "a", "b", "c@d/e", "a@b/c@d/e"),
       "RFC 7622 §3.1: resource is everything after the first '/', '@' and '/' allowed in it");
    ok(parses_as("b/c/d", NULL, "b", "c/d", "b/c/d"), "no node: the first '/' still starts the resource");
    ok(parses_as("b/@c", NULL, "b", "@c", "b/@c"), "an '@' after the first '/' belongs to the resource");
    ok(rejected("a@b@c"), "a second '@' before any '/' lands in the domain, which is invalid");
}

static void test_invalid_forms(void)
{
    ok(rejected(NULL), "NULL is not a JID");
    ok(rejected(""), "empty string is invalid");
    ok(rejected("@example.com"), "empty localpart with '@' is invalid");
    ok(rejected("example.com/"), "empty resourcepart with '/' is invalid");
    ok(rejected("juliet@"), "empty domainpart after '@' is invalid");
    ok(rejected("juliet@/foo"), "empty domainpart between '@' and '/' is invalid");
    ok(rejected("/foo"), "empty domainpart before '/' is invalid");
    ok(rejected("@") && rejected("/") && rejected("@/"), "separators alone are invalid");
    ok(rejected("\xC2\xAD@example.com"), "localpart empty after preparation is invalid");
    ok(rejected("example.com/\xC2\xAD"), "resourcepart empty after preparation is invalid");
    ok(jid_make(NULL, NULL, NULL) == NULL && jid_make("", "example.com", NULL) == NULL
       && jid_make(NULL, "example.com", "") == NULL && jid_make(NULL, "", NULL) == NULL,
       "jid_make: NULL domain or any empty given part is invalid");
}

static void test_utf8(void)
{
    ok(rejected("\xFF" "a@example.com"), "invalid UTF-8 byte in localpart");
    ok(rejected("a@example.com/\xC0\xAF"), "overlong UTF-8 in resourcepart");
    ok(rejected("a@example.com/\xED\xA0\x80"), "UTF-8-encoded surrogate in resourcepart");
    ok(rejected("a@exampl\xE9.com"), "Latin-1 byte in domainpart");
    ok(rejected("a@example.com/x\xE2\x82"), "truncated UTF-8 sequence at the end");
}

static void test_prohibited(void)
{
    static const char *const bad[] = { "\"", "&", "'", "/", ":", "<", ">", "@", " " };
    int all = 1;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char in[8];
        snprintf(in, sizeof in, "a%sb", bad[i]);
        char *out = jid_prep_node(in);
        jid_t *j = jid_make(in, "example.com", NULL);
        if (out != NULL || j != NULL) {
            all = 0;
            printf("# node %s accepted\n", in);
        }
        free(out);
        jid_free(j);
    }
    ok(all, "RFC 6122 App. A.5: Nodeprep prohibits \" & ' / : < > @ and space");
    ok(rejected("a\tb@example.com"), "ASCII control character in localpart");
    ok(rejected("a@example.com/a\x01" "b"), "RFC 6122 App. B: ASCII control character in resourcepart");
    ok(rejected("a\xE2\x80\x83" "b@example.com"), "EM SPACE in localpart: NFKC gives a space, prohibited");
    ok(prep_is(jid_prep_resource, "a\xE2\x80\x83" "b", "a b"), "EM SPACE in resourcepart: NFKC gives an allowed space");
    ok(rejected("a@example.com/a\xE1\x9A\x80" "b"), "RFC 3454 C.1.2: OGHAM SPACE MARK (no decomposition) prohibited in resourcepart");
    ok(rejected("a\xEF\xBF\xBF@example.com"), "non-character U+FFFF prohibited in localpart");
    ok(rejected("\xD7\x90" "a@example.com"), "RFC 3454 §6: RandALCat and LCat mixed in one part");
    ok(prep_is(jid_prep_node, "\xD7\x90\xD7\x91", "\xD7\x90\xD7\x91"), "RandALCat-only localpart is fine");
}

static void test_lengths(void)
{
    char *s = repeat("a", 1023, "");
    char *t = repeat("a", 1024, "");
    jid_t *j = jid_make(s, "example.com", s);
    ok(j && strlen(j->node) == 1023 && strlen(j->resource) == 1023, "1023-byte localpart and resourcepart accepted");
    jid_free(j);
    ok(jid_make(t, "example.com", NULL) == NULL, "1024-byte localpart rejected");
    ok(jid_make(NULL, "example.com", t) == NULL, "1024-byte resourcepart rejected");
    free(s);
    free(t);

    /* RFC 7622: the length limit applies after preparation. */
    s = repeat("a", 1022, "\xC2\xAD\xC2\xAD");  /* 1026 bytes raw, 1022 prepared */
    char *n = jid_prep_node(s);
    ok(n && strlen(n) == 1022, "over-long raw localpart that prepares to 1022 bytes accepted");
    free(n);
    free(s);
    s = repeat("\xEF\xBC\xA1", 1024, "");  /* 1024 x U+FF21 FULLWIDTH A: 3072 bytes raw, 1024 prepared */
    ok(jid_prep_node(s) == NULL, "1024 fullwidth letters prepare to 1024 bytes: rejected");
    free(s);
    s = repeat("\xEF\xBC\xA1", 1023, "");
    n = jid_prep_node(s);
    ok(n && strlen(n) == 1023, "1023 fullwidth letters prepare to 1023 bytes: accepted");
    free(n);
    free(s);
    s = repeat("\xEF\xB7\xBA", 100, "");  /* U+FDFA expands to 18 characters (33 bytes) under NFKC */
    ok(jid_prep_resource(s) == NULL, "resource that grows past 1023 bytes under NFKC is rejected");
    free(s);
    s = repeat("\xC2\xAD", JID_INPUT_MAX / 2, "a");  /* JID_INPUT_MAX + 1 raw bytes */
    ok(jid_prep_node(s) == NULL, "raw part longer than JID_INPUT_MAX rejected before preparation");
    free(s);

    s = repeat("a", 63, ".example");
    t = repeat("a", 64, ".example");
    n = jid_prep_domain(s);
    ok(n && str_eq(n, s), "63-octet DNS label accepted");
    free(n);
    ok(jid_prep_domain(t) == NULL, "64-octet DNS label rejected");
    free(s);
    free(t);
    s = repeat("abcdefghi.", 26, "com");  /* 263 octets */
    ok(jid_prep_domain(s) == NULL, "domain over 253 octets rejected");
    free(s);
}

static void test_domains(void)
{
    ok(prep_is(jid_prep_domain, "EXAMPLE.com", "example.com"), "domain lowercased");
    ok(prep_is(jid_prep_domain, "example.com.", "example.com"), "RFC 7622 §3.2: one trailing dot stripped");
    ok(jid_prep_domain("example.com..") == NULL, "only one trailing dot is stripped");
    ok(jid_prep_domain("a..b") == NULL && jid_prep_domain(".example.com") == NULL
       && jid_prep_domain(".") == NULL, "empty labels rejected (\"a..b\", leading '.', \".\")");
    ok(jid_prep_domain("exa mple.com") == NULL && jid_prep_domain("exa_mple.com") == NULL,
       "space and '_' rejected (STD3), not silently dropped");
    ok(jid_prep_domain("a\xEF\xBC\xBF" "b.com") == NULL, "fullwidth low line (maps to '_') rejected");
    ok(jid_prep_domain("-example.com") == NULL && jid_prep_domain("example-.com") == NULL,
       "label starting or ending with '-' rejected");
    ok(jid_prep_domain("xn--a.com") == NULL, "invalid A-label rejected");
    ok(jid_prep_domain("a\xE2\x80\x8D" "b.com") == NULL, "ZERO WIDTH JOINER outside its context rejected");
    ok(prep_is(jid_prep_domain, "localhost", "localhost"), "single-label host name accepted");
}

static void test_idn(void)
{
    static const char *const forms[] = {
        "münchen.de", "MÜNCHEN.DE", "xn--mnchen-3ya.de", "XN--MNCHEN-3YA.de", "münchen.de.",
        "mu\xCC\x88nchen.de", /* decomposed: u + COMBINING DIAERESIS */
    };
    int all = 1;
    jid_t *ref = jid_new("user@münchen.de");
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        char buf[64];
        snprintf(buf, sizeof buf, "user@%s", forms[i]);
        jid_t *j = jid_new(buf);
        if (!jid_equal(ref, j)) {
            all = 0;
            printf("# %s -> %s\n", buf, j ? j->full : "(invalid)");
        }
        jid_free(j);
    }
    ok(ref && str_eq(ref->domain, "münchen.de"), "IDN domain kept in U-label form");
    ok(all, "U-label, upper case, A-label, trailing dot and NFD forms of an IDN are one JID");
    jid_free(ref);
    ok(prep_is(jid_prep_domain, "xn--55qx5d.cn", "公司.cn"), "A-label converted to U-label");
    ok(prep_is(jid_prep_domain, "fa\xC3\x9F.de", "fa\xC3\x9F.de"), "IDNA2008 non-transitional: ß kept, not mapped to ss");
    ok(prep_is(jid_prep_domain, "\xE2\x98\x83.net", "\xE2\x98\x83.net"),
       "symbol disallowed by IDNA2008 accepted through the transitional fallback, stable");
    /* found by tests/fuzz/fuzz_jid: the label decodes to "1mnche-mnch6an-y\u00AFen-y6an" (U+00AF MACRON,
     * DISALLOWED); accepting it gave a JID whose own text jid_new() then refused */
    ok(jid_prep_domain("xn--1mnche-mnch6an-yen-y6an-y6a.de") == NULL &&
           jid_new("u@xn--1mnche-mnch6an-yen-y6an-y6a.de/r") == NULL,
       "RFC 5891 §5.4: an A-label whose U-label is not valid IDNA2008 is rejected");
}

static void test_ip_literals(void)
{
    ok(parses_as("user@192.0.2.1/r", "user", "192.0.2.1", "r", "user@192.0.2.1/r"), "IPv4 literal domain");
    ok(prep_is(jid_prep_domain, "192.0.2.1.", "192.0.2.1"), "IPv4 literal with trailing dot");
    ok(parses_as("user@[::1]/r", "user", "[::1]", "r", "user@[::1]/r"), "IPv6 literal in brackets");
    ok(prep_is(jid_prep_domain, "[2001:db8::1]", "[2001:db8::1]"), "IPv6 literal kept as written");
    ok(jid_prep_domain("::1") == NULL, "IPv6 without brackets rejected");
    ok(jid_prep_domain("[::1") == NULL && jid_prep_domain("[::g]") == NULL
       && jid_prep_domain("[192.0.2.1]") == NULL && jid_prep_domain("[fe80::1%eth0]") == NULL,
       "malformed bracketed literals rejected");
}

static void test_api(void)
{
    jid_t *full = jid_new("Juliet@Example.com/Balcony");
    jid_t *bare = jid_bare_of(full);
    ok(bare && bare->resource == NULL && str_eq(bare->bare, "juliet@example.com")
       && str_eq(bare->full, "juliet@example.com") && bare->full != full->full,
       "jid_bare_of drops the resource into a new jid");
    ok(!jid_equal(full, bare) && jid_bare_equal(full, bare), "full differs from bare, bare parts equal");
    jid_t *dup = jid_dup(full);
    ok(dup && dup != full && jid_equal(dup, full), "jid_dup is equal and distinct");
    jid_t *made = jid_make("JULIET", "EXAMPLE.COM.", "Balcony");
    ok(jid_equal(made, full), "jid_make prepares each part like jid_new");
    jid_t *other = jid_with_resource(bare, "Ｃhamber");
    ok(other && str_eq(other->full, "juliet@example.com/Chamber"), "jid_with_resource prepares the resource");
    ok(jid_with_resource(bare, "") == NULL && jid_with_resource(bare, NULL) == NULL,
       "jid_with_resource rejects empty and NULL resources");
    jid_t *romeo = jid_new("romeo@example.com/Balcony");
    ok(!jid_equal(full, romeo) && !jid_bare_equal(full, romeo), "different localparts are different JIDs");
    jid_t *dom = jid_new("example.com");
    jid_t *dom2 = jid_new("EXAMPLE.COM.");
    ok(jid_equal(dom, dom2) && !jid_bare_equal(dom, bare), "domain JIDs compare by prepared domain");
    ok(!jid_equal(NULL, NULL) && !jid_equal(full, NULL) && !jid_bare_equal(NULL, full),
       "NULL compares unequal");
    ok(jid_dup(NULL) == NULL && jid_bare_of(NULL) == NULL, "jid_dup/jid_bare_of of NULL give NULL");
    jid_free(NULL);
    jid_free(full);
    jid_free(bare);
    jid_free(dup);
    jid_free(made);
    jid_free(other);
    jid_free(romeo);
    jid_free(dom);
    jid_free(dom2);
}

int main(void)
{
    test_forms();
    test_case();
    test_split();
    test_invalid_forms();
    test_utf8();
    test_prohibited();
    test_lengths();
    test_domains();
    test_idn();
    test_ip_literals();
    test_api();
    /* Leaks are reported by LeakSanitizer at exit (the -fsanitize=address build). */
    return done_testing();
}
