/* server/sasl2_req.c: the SASL2 request (XEP-0388 <authenticate/> with XEP-0386 <bind/> and
 * XEP-0484 <request-token/>/<fast/>) and the HT-* initial response, parsed without the server so
 * that tests/fuzz/fuzz_sasl2 can drive them. */
#include "sasl2_req.h"
#include "scram.h"
#include "util.h"
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

void sasl2_req_clear(sasl2_req_t *r)
{
    free(r->mechanism);
    if (r->initial) explicit_bzero(r->initial, r->initial_len);
    free(r->initial);
    free(r->software);
    free(r->device);
    free(r->tag);
    xnode_free(r->bind_el);
    xnode_free(r->extra);
    free(r->request_token);
    memset(r, 0, sizeof *r);
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

int sasl2_payload(const xnode_t *el, unsigned char **out, size_t *len)
{
    char *t = xnode_text(el);
    char *p = t, *e = t + strlen(t);
    while (p < e && is_space(*p)) p++;
    while (e > p && is_space(e[-1])) e--;
    int r = 0;
    *out = NULL;
    *len = 0;
    if (p == e) *out = (unsigned char *)xstrdup("");        /* §2.2: empty element, empty data */
    else if (base64_decode(p, (size_t)(e - p), out, len) < 0) r = -1;
    free(t);
    return r;
}

/* 8-4-4-4-12 hex digits (XEP-0388 §2.3 asks for a UUID v4; any UUID is taken), kept lower case. */
static int uuid_ok(const char *id, char *out)
{
    if (strlen(id) != SASL2_UA_ID_LEN) return 0;
    for (size_t i = 0; i < SASL2_UA_ID_LEN; i++) {
        char c = id[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') return 0;
        } else if (!isxdigit((unsigned char)c)) {
            return 0;
        }
        out[i] = (char)tolower((unsigned char)c);
    }
    out[SASL2_UA_ID_LEN] = '\0';
    return 1;
}

static int is_true(const char *v) { return v && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0); }

/* A short text child: NULL when absent, empty or longer than max bytes (then *bad is set). */
static char *short_text(const xnode_t *el, size_t max, int *bad)
{
    if (!el) return NULL;
    char *t = xnode_text(el);
    if (!*t || strlen(t) > max) {
        if (*t) *bad = 1;
        free(t);
        return NULL;
    }
    return t;
}

int sasl2_parse_authenticate(const xnode_t *el, sasl2_req_t *r, const char **cond)
{
    memset(r, 0, sizeof *r);
    *cond = "malformed-request";
    const char *mech = xnode_attr(el, "mechanism");
    if (!mech || !*mech || strlen(mech) > 20) {    /* RFC 4422 §3.1: at most 20 characters */
        *cond = "invalid-mechanism";
        return -1;
    }
    r->mechanism = xstrdup(mech);
    int bad = 0;
    for (xnode_t *c = xnode_first_elem(el); c; c = xnode_next_elem(c)) {
        if (strcmp(c->ns, NS_SASL2) == 0) {
            if (strcmp(c->name, "initial-response") == 0) {
                if (r->initial) return -1;          /* one only */
                if (sasl2_payload(c, &r->initial, &r->initial_len) < 0) {
                    *cond = "incorrect-encoding";
                    return -1;
                }
            } else if (strcmp(c->name, "user-agent") == 0) {
                const char *id = xnode_attr(c, "id");
                if (id && !uuid_ok(id, r->ua_id)) return -1;
                free(r->software);
                free(r->device);
                r->software = short_text(xnode_child(c, "software", NS_SASL2), 256, &bad);
                r->device = short_text(xnode_child(c, "device", NS_SASL2), 256, &bad);
            }
            /* other SASL2 children are for later versions: ignored */
        } else if (strcmp(c->ns, NS_BIND2) == 0 && strcmp(c->name, "bind") == 0) {
            if (r->bind) return -1;
            r->bind = 1;
            r->tag = short_text(xnode_child(c, "tag", NS_BIND2), SASL2_MAX_TAG, &bad);
            r->bind_el = xnode_copy(c);
        } else if (strcmp(c->ns, NS_FAST) == 0 && strcmp(c->name, "request-token") == 0) {
            const char *m = xnode_attr(c, "mechanism");
            if (!m || !*m || r->request_token) return -1;
            r->request_token = xstrdup(m);
        } else if (strcmp(c->ns, NS_FAST) == 0 && strcmp(c->name, "fast") == 0) {
            if (r->fast) return -1;
            r->fast = 1;
            r->fast_invalidate = is_true(xnode_attr(c, "invalidate"));
            const char *count = xnode_attr(c, "count");
            if (count) {   /* XEP-0484 §3.4: a positive integer */
                char *end;
                errno = 0;
                if (!isdigit((unsigned char)*count)) return -1;
                unsigned long long v = strtoull(count, &end, 10);
                if (errno || *end || v == 0) return -1;
                r->has_count = 1;
                r->fast_count = v;
            }
        } else {
            if (!r->extra) r->extra = xnode_new("extra", NULL);
            xnode_add_child(r->extra, xnode_copy(c));
        }
        if (bad) return -1;
    }
    *cond = NULL;
    return 0;
}

int sasl2_ht_parse(const unsigned char *in, size_t len, char **authcid, const unsigned char **hash, size_t *hlen)
{
    *authcid = NULL;
    *hash = NULL;
    *hlen = 0;
    const unsigned char *nul = len ? memchr(in, '\0', len) : NULL;
    if (!nul || nul == in || (size_t)(nul - in) > 1024) return -1;
    size_t n = (size_t)(nul - in);
    if (len - n - 1 == 0 || len - n - 1 > 64) return -1;   /* an HMAC: 32 bytes for SHA-256 */
    *authcid = xstrndup((const char *)in, n);
    *hash = nul + 1;
    *hlen = len - n - 1;
    return 0;
}
