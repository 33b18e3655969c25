/* server/jid.c: JID parsing and preparation; the only file that uses libidn (stringprep
 * Nodeprep/Resourceprep) and libidn2 (IDNA2008 domains). Contracts are in jid.h. */
#include "jid.h"

#include <arpa/inet.h>
#include <idn2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <stringprep.h>

/* Out of memory aborts, as util.h's xmalloc does: a NULL from this module always means "invalid
 * JID", never "try again". (Not calling xmalloc keeps jid.c linkable on its own, for the unit
 * test and the fuzz target.) */
static void *jid_alloc(size_t n)
{
    void *p = malloc(n);
    if (p == NULL) {
        fputs("civitas: out of memory in jid\n", stderr);
        abort();
    }
    return p;
}

static char *jid_strndup(const char *s, size_t n)
{
    char *p = jid_alloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF. */
static int utf8_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t n;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            n = 1; cp = c & 0x1F; min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2; cp = c & 0x0F; min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3; cp = c & 0x07; min = 0x10000;
        } else {
            return 0;
        }
        if (len - i - 1 < n)
            return 0;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += n + 1;
    }
    return 1;
}

/* The checks every part shares before any library sees it. */
static int part_input_ok(const char *in, size_t *len)
{
    if (in == NULL)
        return 0;
    *len = strlen(in);
    return *len > 0 && *len <= JID_INPUT_MAX && utf8_valid((const unsigned char *)in, *len);
}

/* Run one of the two XMPP stringprep profiles (is_node selects Nodeprep). libidn prepares in
 * place and fails with STRINGPREP_TOO_SMALL_BUFFER when the output does not fit, so a buffer of
 * at least JID_PART_MAX + 1 bytes makes "does not fit" imply "too long". */
static char *prep_stringprep(const char *in, int is_node)
{
    size_t len;
    if (!part_input_ok(in, &len))
        return NULL;
    size_t cap = len + 1 > JID_PART_MAX + 1 ? len + 1 : JID_PART_MAX + 1;
    char *buf = jid_alloc(cap);
    memcpy(buf, in, len + 1);
    int rc = is_node ? stringprep_xmpp_nodeprep(buf, cap) : stringprep_xmpp_resourceprep(buf, cap);
    size_t out = strlen(buf);
    /* Empty after preparation: the part held only characters mapped to nothing (U+00AD...). */
    if (rc != STRINGPREP_OK || out == 0 || out > JID_PART_MAX) {
        free(buf);
        return NULL;
    }
    if (cap > out + 1) {
        char *shrunk = realloc(buf, out + 1);
        if (shrunk != NULL)
            buf = shrunk;
    }
    return buf;
}

/* The common case, plain ASCII, without the libraries: for ASCII input Nodeprep only folds case
 * and prohibits controls, space and " & ' / : < > @; Resourceprep changes nothing and prohibits
 * controls. Profiling showed JID preparation at a quarter of the server's CPU under a chat load,
 * nearly all of it stringprep and IDNA on ASCII. Returns the prepared copy, or NULL when the input
 * needs the full profile (non-ASCII, or a character the profile refuses: the slow path decides). */
static char *prep_ascii_fast(const char *in, int is_node)
{
    size_t len = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p; p++, len++) {
        unsigned char c = *p;
        if (c < 0x20 || c > 0x7E || (is_node && (c == ' ' || strchr("\"&'/:<>@", c))))
            return NULL;
    }
    if (len == 0 || len > JID_PART_MAX)
        return NULL;
    char *out = jid_strndup(in, len);
    if (is_node)
        for (char *p = out; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
    return out;
}

char *jid_prep_node(const char *in)
{
    char *fast = in ? prep_ascii_fast(in, 1) : NULL;
    return fast ? fast : prep_stringprep(in, 1);
}

char *jid_prep_resource(const char *in)
{
    char *fast = in ? prep_ascii_fast(in, 0) : NULL;
    return fast ? fast : prep_stringprep(in, 0);
}

/* RFC 7622 §3.2: an IPv4address or an IP-literal of RFC 3986 (only IPv6 inside brackets here;
 * IPvFuture and zone identifiers are rejected by inet_pton). */
static int domain_is_ip_literal(const char *s, size_t len)
{
    unsigned char addr[16];
    char tmp[INET6_ADDRSTRLEN + 2];
    if (len >= 2 && s[0] == '[' && s[len - 1] == ']') {
        if (len - 2 >= sizeof tmp)
            return 0;
        memcpy(tmp, s + 1, len - 2);
        tmp[len - 2] = '\0';
        return inet_pton(AF_INET6, tmp, addr) == 1;
    }
    return len < sizeof tmp && inet_pton(AF_INET, s, addr) == 1;
}

/* The A-label (ASCII) form must be a host name of RFC 1123 / STD3: labels of letters, digits
 * and hyphens, 1..63 octets, at most 253 octets in all (255 on the wire). idn2 has already
 * rejected leading/trailing hyphens, "--" in the 3rd/4th position and bad "xn--" labels. */
static int alabel_ok(const char *a)
{
    size_t total = strlen(a), label = 0;
    if (total == 0 || total > 253)
        return 0;
    for (const char *p = a; ; p++) {
        char c = *p;
        if (c == '.' || c == '\0') {
            if (label == 0 || label > 63)
                return 0;
            if (c == '\0')
                return 1;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-') {
            label++;
        } else {
            return 0;
        }
    }
}

/* IDNA2008 lookup to the A-label form; NULL if invalid. IDN2_USE_STD3_ASCII_RULES is not
 * passed on purpose: libidn2 2.3 then silently deletes disallowed ASCII ("a_b" and "a b" become
 * "ab", two distinct inputs one domain), so STD3 is enforced on the output by alabel_ok().
 * Transitional processing is the fallback only for IDN2_DISALLOWED (IDNA2003-era names such as
 * symbols), as curl does; other failures (bidi, CONTEXTJ) stay failures, so invisible joiners
 * are never quietly dropped. */
static char *domain_to_alabel(const char *s)
{
    uint8_t *out = NULL;
    int rc = idn2_lookup_u8((const uint8_t *)s, &out, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
    if (rc == IDN2_DISALLOWED) {
        idn2_free(out);
        out = NULL;
        rc = idn2_lookup_u8((const uint8_t *)s, &out, IDN2_NFC_INPUT | IDN2_TRANSITIONAL);
    }
    if (rc != IDN2_OK || out == NULL || !alabel_ok((const char *)out)) {
        idn2_free(out);
        return NULL;
    }
    char *a = jid_strndup((const char *)out, strlen((const char *)out));
    idn2_free(out);
    return a;
}

/* A domain of ASCII letters, digits, hyphens and dots whose labels IDNA leaves as they are
 * (1..63 octets, no hyphen at either end, no "--" in the 3rd and 4th position, so no "xn--"
 * A-label to check) prepares to its lowercase self: no need for libidn2. NULL: take the full path. */
static char *domain_ascii_fast(const char *in)
{
    size_t len = strlen(in), label = 0;
    if (len > 0 && in[len - 1] == '.')
        len--;
    if (len == 0 || len > 253)
        return NULL;
    for (size_t i = 0; i <= len; i++) {
        char c = i < len ? in[i] : '.';
        if (c == '.') {
            const char *l = in + i - label;
            if (label == 0 || label > 63 || l[0] == '-' || l[label - 1] == '-' ||
                (label >= 4 && l[2] == '-' && l[3] == '-'))
                return NULL;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-') {
            label++;
        } else {
            return NULL;
        }
    }
    char *out = jid_strndup(in, len);
    for (char *p = out; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return out;
}

char *jid_prep_domain(const char *in)
{
    char *fast = in ? domain_ascii_fast(in) : NULL;
    if (fast)
        return fast;
    size_t len;
    if (!part_input_ok(in, &len))
        return NULL;
    if (in[len - 1] == '.')   /* RFC 7622 §3.2: one final label separator is stripped */
        len--;
    if (len == 0)
        return NULL;
    char *s = jid_strndup(in, len);
    if (domain_is_ip_literal(s, len))
        return s;
    if (s[0] == '[') {        /* bracketed but not IPv6: no host name starts with '[' */
        free(s);
        return NULL;
    }
    char *alabel = domain_to_alabel(s);
    free(s);
    if (alabel == NULL)
        return NULL;
    char *ulabel = NULL;
    int rc = idn2_to_unicode_8z8z(alabel, &ulabel, 0);
    /* RFC 5891 §5.4: an A-label given as input is valid only if its U-label is, and converts back
     * to it. idn2 decodes "xn--" labels without that check, so e.g. xn--...-y6a (U+00AF MACRON,
     * DISALLOWED) would be accepted here and then refused when the prepared JID is parsed again. */
    char *again = (rc == IDN2_OK && ulabel) ? domain_to_alabel(ulabel) : NULL;
    int stable = again && strcasecmp(again, alabel) == 0;
    free(again);
    free(alabel);
    if (rc != IDN2_OK || ulabel == NULL || !stable || strlen(ulabel) > JID_PART_MAX) {
        idn2_free(ulabel);
        return NULL;
    }
    /* UTS #46 mapping already case-folded the name; this only guards ASCII that passed through
     * unmapped (an "XN--" prefix), so the string compares equal whatever the input's case. */
    char *d = jid_strndup(ulabel, strlen(ulabel));
    idn2_free(ulabel);
    for (char *p = d; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return d;
}

/* One allocation: the struct, then node, domain, resource, bare and full, each NUL-terminated.
 * The parts must already be prepared. */
static jid_t *jid_build(const char *node, const char *domain, const char *resource)
{
    size_t nl = node ? strlen(node) : 0, dl = strlen(domain), rl = resource ? strlen(resource) : 0;
    size_t bare_len = (node ? nl + 1 : 0) + dl;
    size_t full_len = bare_len + (resource ? rl + 1 : 0);
    size_t total = sizeof(jid_t) + (node ? nl + 1 : 0) + dl + 1 + (resource ? rl + 1 : 0)
                   + bare_len + 1 + full_len + 1;
    jid_t *j = jid_alloc(total);
    char *p = (char *)(j + 1);

    j->node = NULL;
    if (node) {
        j->node = p;
        memcpy(p, node, nl + 1);
        p += nl + 1;
    }
    j->domain = p;
    memcpy(p, domain, dl + 1);
    p += dl + 1;
    j->resource = NULL;
    if (resource) {
        j->resource = p;
        memcpy(p, resource, rl + 1);
        p += rl + 1;
    }
    j->bare = p;
    if (node)
        p += sprintf(p, "%s@", node);
    p += sprintf(p, "%s", domain) + 1;
    j->full = p;
    if (resource)
        sprintf(p, "%s/%s", j->bare, resource);
    else
        memcpy(p, j->bare, bare_len + 1);
    return j;
}

jid_t *jid_make(const char *node, const char *domain, const char *resource)
{
    char *n = NULL, *d = NULL, *r = NULL;
    jid_t *j = NULL;
    if (domain == NULL)
        return NULL;
    if (node != NULL && (n = jid_prep_node(node)) == NULL)
        goto out;
    if ((d = jid_prep_domain(domain)) == NULL)
        goto out;
    if (resource != NULL && (r = jid_prep_resource(resource)) == NULL)
        goto out;
    j = jid_build(n, d, r);
out:
    free(n);
    free(d);
    free(r);
    return j;
}

jid_t *jid_new(const char *str)
{
    if (str == NULL)
        return NULL;
    /* RFC 7622 §3.1: resourcepart first (after the first '/'), then the localpart (before the
     * first '@' of what remains). An empty part present with its separator is an error, which
     * jid_make reports since the prep functions reject "". */
    const char *slash = strchr(str, '/');
    size_t rest_len = slash ? (size_t)(slash - str) : strlen(str);
    const char *at = memchr(str, '@', rest_len);
    char *node = at ? jid_strndup(str, (size_t)(at - str)) : NULL;
    const char *dstart = at ? at + 1 : str;
    char *domain = jid_strndup(dstart, rest_len - (size_t)(dstart - str));
    jid_t *j = jid_make(node, domain, slash ? slash + 1 : NULL);
    free(node);
    free(domain);
    return j;
}

jid_t *jid_dup(const jid_t *j)
{
    return j ? jid_build(j->node, j->domain, j->resource) : NULL;
}

jid_t *jid_bare_of(const jid_t *j)
{
    return j ? jid_build(j->node, j->domain, NULL) : NULL;
}

jid_t *jid_with_resource(const jid_t *j, const char *resource)
{
    if (j == NULL)
        return NULL;
    char *r = jid_prep_resource(resource);
    if (r == NULL)
        return NULL;
    jid_t *out = jid_build(j->node, j->domain, r);
    free(r);
    return out;
}

void jid_free(jid_t *j)
{
    free(j);
}

int jid_equal(const jid_t *a, const jid_t *b)
{
    return a != NULL && b != NULL && strcmp(a->full, b->full) == 0;
}

int jid_bare_equal(const jid_t *a, const jid_t *b)
{
    return a != NULL && b != NULL && strcmp(a->bare, b->bare) == 0;
}
