/* server/xml.c: the XML stanza tree, its serialiser and the streaming XMPP parser (RFC 6120 §11).
 * The only file of civitas that includes expat.h. */
#ifndef XML_DTD
/* Expose XML_SetBillionLaughsAttackProtection*: they are declared only under XML_DTD, which expat.h
 * cannot know (it lives in expat_config.h). Expat's default builds have DTD support. */
#define XML_DTD 1
#endif
#include <expat.h>
#ifdef XML_UNICODE
#error "civitas needs an expat whose XML_Char is UTF-8 char (built without XML_UNICODE)"
#endif
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "xml.h"

/* Expat >= 2.6.0 (and distribution backports of the CVE-2023-52425 fix, which keep the version
 * number 2.5.0, so the version macros cannot tell) may defer reparsing a token until enough new
 * bytes arrive. A stream protocol must see a stanza as soon as its last byte is in, so we turn that
 * off; the quadratic reparsing it guards against cannot happen here because xstream only hands
 * expat complete markup (see the tracker below). Weak, so that civitas links with older expat. */
extern XML_Bool XML_SetReparseDeferralEnabled(XML_Parser parser, XML_Bool enabled) __attribute__((weak));

#define NS_XMLNS "http://www.w3.org/2000/xmlns/"

/* ---- allocation: failure aborts, as util.h's xmalloc does (this file stays standalone) ---- */

static void oom(void)
{
    fputs("civitas: out of memory\n", stderr);
    abort();
}

static void *xm_alloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) oom();
    return p;
}

static void *xm_realloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) oom();
    return p;
}

static char *xm_strndup(const char *s, size_t n)
{
    if (n == SIZE_MAX) oom();
    char *d = xm_alloc(n + 1);
    if (n) memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static char *xm_strdup(const char *s)
{
    return xm_strndup(s, strlen(s));
}

/* ---- a growing string ---- */

typedef struct {
    char *b;
    size_t len, cap;
} sbuf_t;

static void sb_put(sbuf_t *s, const char *p, size_t n)
{
    if (n > SIZE_MAX / 2 - s->len) oom();
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 128;
        while (cap < s->len + n + 1) cap *= 2;
        s->b = xm_realloc(s->b, cap);
        s->cap = cap;
    }
    memcpy(s->b + s->len, p, n);
    s->len += n;
    s->b[s->len] = '\0';
}

static void sb_puts(sbuf_t *s, const char *p)
{
    sb_put(s, p, strlen(p));
}

/* ---- nodes ---- */

xnode_t *xnode_new(const char *name, const char *ns)
{
    xnode_t *n = xm_alloc(sizeof *n);
    memset(n, 0, sizeof *n);
    n->name = xm_strdup(name ? name : "");
    n->ns = xm_strdup(ns ? ns : "");
    return n;
}

xnode_t *xnode_new_text(const char *text, size_t len)
{
    xnode_t *n = xm_alloc(sizeof *n);
    memset(n, 0, sizeof *n);
    n->text = xm_strndup(text ? text : "", text ? len : 0);
    n->text_len = text ? len : 0;
    return n;
}

static void free_attrs(char **a)
{
    if (!a) return;
    for (size_t i = 0; a[i]; i++) free(a[i]);
    free(a);
}

static void node_free_one(xnode_t *n)
{
    free(n->name);
    free(n->ns);
    free_attrs(n->attrs);
    free(n->text);
    free(n);
}

void xnode_unlink(xnode_t *n)
{
    if (!n || !n->parent) return;
    xnode_t *p = n->parent, *prev = NULL, *c;
    for (c = p->children; c && c != n; c = c->next) prev = c;
    if (c) {
        if (prev) prev->next = n->next;
        else p->children = n->next;
        if (p->last_child == n) p->last_child = prev;
    }
    n->parent = NULL;
    n->next = NULL;
}

void xnode_free(xnode_t *n)
{
    if (!n) return;
    xnode_unlink(n);
    /* Post-order without recursion: descend by detaching the first child, so that coming back up
     * (through parent) finds the next one. */
    xnode_t *cur = n;
    while (cur) {
        if (cur->children) {
            xnode_t *c = cur->children;
            cur->children = c->next;
            cur = c;
            continue;
        }
        xnode_t *up = (cur == n) ? NULL : cur->parent;
        node_free_one(cur);
        cur = up;
    }
}

xnode_t *xnode_add_child(xnode_t *parent, xnode_t *child)
{
    if (!child) return NULL;
    xnode_unlink(child);
    if (!parent) return child;
    child->parent = parent;
    child->next = NULL;
    if (parent->last_child) parent->last_child->next = child;
    else parent->children = child;
    parent->last_child = child;
    return child;
}

xnode_t *xnode_add_elem(xnode_t *parent, const char *name, const char *ns)
{
    if (!ns) ns = (parent && parent->ns) ? parent->ns : "";
    return xnode_add_child(parent, xnode_new(name, ns));
}

xnode_t *xnode_add_text(xnode_t *parent, const char *text)
{
    return xnode_add_child(parent, xnode_new_text(text, text ? strlen(text) : 0));
}

static size_t attr_count(char *const *a)
{
    size_t n = 0;
    if (a)
        while (a[2 * n]) n++;
    return n;
}

const char *xnode_attr(const xnode_t *n, const char *name)
{
    if (!n || !n->attrs || !name) return NULL;
    for (size_t i = 0; n->attrs[i]; i += 2)
        if (!strcmp(n->attrs[i], name)) return n->attrs[i + 1];
    return NULL;
}

static int ascii_ncname(const char *s, int *nonascii);

void xnode_set_attr(xnode_t *n, const char *name, const char *value)
{
    if (!n || !n->name || !name) return;
    size_t cnt = attr_count(n->attrs);
    for (size_t i = 0; i < cnt; i++) {
        if (strcmp(n->attrs[2 * i], name)) continue;
        if (value) {
            char *v = xm_strdup(value);    /* before freeing: value may be the old value */
            free(n->attrs[2 * i + 1]);
            n->attrs[2 * i + 1] = v;
        } else if (cnt == 1) {
            free_attrs(n->attrs);
            n->attrs = NULL;
        } else {
            free(n->attrs[2 * i]);
            free(n->attrs[2 * i + 1]);
            memmove(&n->attrs[2 * i], &n->attrs[2 * i + 2], (2 * (cnt - i - 1) + 1) * sizeof(char *));
        }
        return;
    }
    if (!value) return;
    const char *sp = strrchr(name, ' ');
    int nonascii;
    if (!ascii_ncname(sp ? sp + 1 : name, &nonascii)) n->names_valid = 0;
    n->attrs = xm_realloc(n->attrs, (2 * cnt + 3) * sizeof(char *));
    n->attrs[2 * cnt] = xm_strdup(name);
    n->attrs[2 * cnt + 1] = xm_strdup(value);
    n->attrs[2 * cnt + 2] = NULL;
}

xnode_t *xnode_child(const xnode_t *n, const char *name, const char *ns)
{
    if (!n) return NULL;
    for (xnode_t *c = n->children; c; c = c->next)
        if (c->name && (!name || !strcmp(c->name, name)) && (!ns || !strcmp(c->ns, ns))) return c;
    return NULL;
}

xnode_t *xnode_first_elem(const xnode_t *n)
{
    return xnode_child(n, NULL, NULL);
}

xnode_t *xnode_next_elem(const xnode_t *n)
{
    if (!n) return NULL;
    for (xnode_t *c = n->next; c; c = c->next)
        if (c->name) return c;
    return NULL;
}

char *xnode_text(const xnode_t *n)
{
    size_t len = 0;
    for (const xnode_t *c = n ? n->children : NULL; c; c = c->next)
        if (!c->name) len += c->text_len;
    char *s = xm_alloc(len + 1), *p = s;
    for (const xnode_t *c = n ? n->children : NULL; c; c = c->next)
        if (!c->name && c->text_len) {
            memcpy(p, c->text, c->text_len);
            p += c->text_len;
        }
    *p = '\0';
    return s;
}

static char **copy_attrs(const char *const *a)
{
    size_t cnt = 0;
    if (a)
        while (a[2 * cnt]) cnt++;
    if (!cnt) return NULL;
    char **d = xm_alloc((2 * cnt + 1) * sizeof(char *));
    for (size_t i = 0; i < 2 * cnt; i++) d[i] = xm_strdup(a[i]);
    d[2 * cnt] = NULL;
    return d;
}

static xnode_t *copy_one(const xnode_t *s)
{
    if (!s->name) return xnode_new_text(s->text, s->text_len);
    xnode_t *d = xnode_new(s->name, s->ns);
    d->attrs = copy_attrs((const char *const *)s->attrs);
    d->names_valid = s->names_valid;
    return d;
}

xnode_t *xnode_copy(const xnode_t *n)
{
    if (!n) return NULL;
    xnode_t *root = copy_one(n), *d = root;
    const xnode_t *s = n;
    for (;;) {
        if (s->name && s->children) {
            s = s->children;
            d = xnode_add_child(d, copy_one(s));
            continue;
        }
        while (s != n && !s->next) {
            s = s->parent;
            d = d->parent;
        }
        if (s == n) break;
        s = s->next;
        d = xnode_add_child(d->parent, copy_one(s));
    }
    return root;
}

/* ---- equality ---- */

static int elem_shallow_equal(const xnode_t *a, const xnode_t *b)
{
    if (strcmp(a->name, b->name) || strcmp(a->ns, b->ns)) return 0;
    size_t cnt = attr_count(a->attrs);
    if (cnt != attr_count(b->attrs)) return 0;
    for (size_t i = 0; i < cnt; i++) {
        const char *v = xnode_attr(b, a->attrs[2 * i]);
        if (!v || strcmp(v, a->attrs[2 * i + 1])) return 0;
    }
    return 1;
}

/* From *c, skip to the next significant child item. Returns 0 at the end, 1 for an element (*c),
 * 2 for a run of adjacent text nodes with text (*c its first node, *after the node after it). */
static int item_next(const xnode_t **c, const xnode_t **after)
{
    const xnode_t *p = *c;
    while (p) {
        if (p->name) {
            *c = p;
            *after = p->next;
            return 1;
        }
        size_t total = 0;
        const xnode_t *q = p;
        for (; q && !q->name; q = q->next) total += q->text_len;
        if (total) {
            *c = p;
            *after = q;
            return 2;
        }
        p = q;
    }
    *c = *after = NULL;
    return 0;
}

static int runs_equal(const xnode_t *a, const xnode_t *ae, const xnode_t *b, const xnode_t *be)
{
    size_t ai = 0, bi = 0;
    for (;;) {
        while (a != ae && ai == a->text_len) { a = a->next; ai = 0; }
        while (b != be && bi == b->text_len) { b = b->next; bi = 0; }
        if (a == ae || b == be) return a == ae && b == be;
        size_t n = a->text_len - ai < b->text_len - bi ? a->text_len - ai : b->text_len - bi;
        if (memcmp(a->text + ai, b->text + bi, n)) return 0;
        ai += n;
        bi += n;
    }
}

int xnode_equal(const xnode_t *a, const xnode_t *b)
{
    if (!a || !b) return a == b;
    if (!a->name || !b->name) {
        if (a->name || b->name) return 0;
        return a->text_len == b->text_len && !memcmp(a->text, b->text, a->text_len);
    }
    if (!elem_shallow_equal(a, b)) return 0;
    /* Walk both trees in step, without recursion. */
    const xnode_t *pa = a, *pb = b, *ca = a->children, *cb = b->children;
    for (;;) {
        const xnode_t *na, *nb;
        int ta = item_next(&ca, &na), tb = item_next(&cb, &nb);
        if (ta != tb) return 0;
        if (ta == 0) {
            if (pa == a) return 1;
            ca = pa->next;
            cb = pb->next;
            pa = pa->parent;
            pb = pb->parent;
        } else if (ta == 2) {
            if (!runs_equal(ca, na, cb, nb)) return 0;
            ca = na;
            cb = nb;
        } else {
            if (!elem_shallow_equal(ca, cb)) return 0;
            pa = ca;
            pb = cb;
            ca = pa->children;
            cb = pb->children;
        }
    }
}

/* ---- validation of what the serialiser writes ---- */

/* Decode one UTF-8 character of s[0..n). Returns its length, 0 if malformed (overlong, surrogate,
 * beyond U+10FFFF, truncated). */
static size_t utf8_dec(const unsigned char *s, size_t n, uint32_t *cp)
{
    uint32_t c = s[0], min;
    size_t len;
    if (c < 0x80) { *cp = c; return 1; }
    if (c >= 0xC2 && c <= 0xDF) { len = 2; c &= 0x1F; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; c &= 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; c &= 0x07; min = 0x10000; }
    else return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    *cp = c;
    return len;
}

/* XML 1.0 Char production. */
static int xml_char_ok(uint32_t c)
{
    return c == 0x9 || c == 0xA || c == 0xD || (c >= 0x20 && c <= 0xD7FF) ||
           (c >= 0xE000 && c <= 0xFFFD) || (c >= 0x10000 && c <= 0x10FFFF);
}

static int text_ok(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        uint32_t c;
        size_t l = utf8_dec(p + i, n - i, &c);
        if (!l || !xml_char_ok(c)) return 0;
        i += l;
    }
    return 1;
}

static void XMLCALL probe_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    (void)atts;
    const char **want = ud;
    if (*want && !strcmp(name, *want)) *want = NULL;
}

/* A name with non-ASCII characters: expat decides (its name tables are XML 1.0 4th edition's, so
 * only expat itself can say what it will accept back). A parser per call (about 2.4 us): only for
 * names made by code; the parser's own elements are not checked again (xnode.names_valid). */
static int name_ok_by_expat(const char *s)
{
    sbuf_t b = {0};
    sb_puts(&b, "<");
    sb_puts(&b, s);
    sb_puts(&b, "/>");
    XML_Parser p = XML_ParserCreateNS("UTF-8", ' ');
    if (!p) oom();
    const char *want = s;
    XML_SetUserData(p, &want);
    XML_SetStartElementHandler(p, probe_start);
    int ok = XML_Parse(p, b.b, (int)b.len, XML_TRUE) == XML_STATUS_OK && want == NULL;
    XML_ParserFree(p);
    free(b.b);
    return ok;
}

/* 1 if s is an NCName (a name without ':') of at most XML_MAX_NAME_LEN bytes as far as its ASCII
 * characters tell; *nonascii is then 1 when it also holds other characters, which this does not
 * judge. 0 if it is not one. Cheap: no parser. */
static int ascii_ncname(const char *s, int *nonascii)
{
    *nonascii = 0;
    if (!s || !*s) return 0;
    size_t i;
    for (i = 0; s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) *nonascii = 1;
        else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') continue;
        else if (i > 0 && ((c >= '0' && c <= '9') || c == '-' || c == '.')) continue;
        else return 0;
    }
    return i <= XML_MAX_NAME_LEN && !*nonascii;
}

/* An XML NCName (a name without ':') of at most XML_MAX_NAME_LEN bytes. */
static int ncname_ok(const char *s)
{
    int nonascii;
    if (ascii_ncname(s, &nonascii)) return 1;
    if (!nonascii || strlen(s) > XML_MAX_NAME_LEN) return 0;
    return text_ok(s, strlen(s)) && name_ok_by_expat(s);
}

/* A namespace URI expat will accept back: XML characters and no space (its namespace separator). */
static int ns_ok(const char *s, size_t n)
{
    return !memchr(s, ' ', n) && text_ok(s, n);
}

/* ---- serialiser ---- */

/* Escape s[0..n): & < > always (">" for "]]>"), CR always (line-end normalisation would eat it);
 * in an attribute value in ' quotes also ' " and TAB, LF (attribute-value normalisation would
 * turn them into spaces). 0 if s is not XML text. */
static int put_escaped(sbuf_t *b, const char *s, size_t n, int attr)
{
    if (!text_ok(s, n)) return 0;
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        const char *e;
        switch (s[i]) {
        case '&': e = "&amp;"; break;
        case '<': e = "&lt;"; break;
        case '>': e = "&gt;"; break;
        case '\r': e = "&#13;"; break;
        case '\'': e = attr ? "&apos;" : NULL; break;
        case '"': e = attr ? "&quot;" : NULL; break;
        case '\t': e = attr ? "&#9;" : NULL; break;
        case '\n': e = attr ? "&#10;" : NULL; break;
        default: e = NULL; break;
        }
        if (!e) continue;
        sb_put(b, s + run, i - run);
        sb_puts(b, e);
        run = i + 1;
    }
    sb_put(b, s + run, n - run);
    return 1;
}

static int put_attr_value(sbuf_t *b, const char *s, size_t n) { return put_escaped(b, s, n, 1); }
static int put_text(sbuf_t *b, const char *s, size_t n) { return put_escaped(b, s, n, 0); }

/* Split a stored attribute name "URI local" at its last space. Returns the URI length, or -1 when
 * the name has no namespace. */
static long attr_split(const char *name, const char **local)
{
    const char *sp = strrchr(name, ' ');
    if (!sp) {
        *local = name;
        return -1;
    }
    *local = sp + 1;
    return (long)(sp - name);
}

static void put_prefix(sbuf_t *b, size_t idx)
{
    char tmp[32];
    snprintf(tmp, sizeof tmp, "a%zu", idx);
    sb_puts(b, tmp);
}

/* Write the attributes of e, declaring a prefix for each distinct attribute namespace. */
static int put_attrs(sbuf_t *b, const xnode_t *e)
{
    size_t cnt = attr_count(e->attrs), nprefix = 0;
    if (!cnt) return 1;
    size_t *pidx = xm_alloc(cnt * sizeof *pidx);
    int ok = 0;
    for (size_t i = 0; i < cnt; i++) {          /* declarations first */
        const char *name = e->attrs[2 * i], *local;
        long ul = attr_split(name, &local);
        if (!e->names_valid && !ncname_ok(local)) goto out;
        if (ul < 0) {
            if (!strcmp(name, "xmlns")) goto out;
            continue;
        }
        if (ul == 0 || !ns_ok(name, (size_t)ul)) goto out;
        if ((size_t)ul == strlen(NS_XMLNS) && !memcmp(name, NS_XMLNS, (size_t)ul)) goto out;
        if ((size_t)ul == strlen(XML_NS_XML) && !memcmp(name, XML_NS_XML, (size_t)ul)) continue;
        size_t j;
        for (j = 0; j < i; j++)
            if (!strncmp(e->attrs[2 * j], name, (size_t)ul + 1)) break;   /* same "URI " */
        if (j < i) {
            pidx[i] = pidx[j];
            continue;
        }
        pidx[i] = nprefix++;
        sb_puts(b, " xmlns:");
        put_prefix(b, pidx[i]);
        sb_puts(b, "='");
        if (!put_attr_value(b, name, (size_t)ul)) goto out;
        sb_puts(b, "'");
    }
    for (size_t i = 0; i < cnt; i++) {
        const char *name = e->attrs[2 * i], *local, *v = e->attrs[2 * i + 1];
        long ul = attr_split(name, &local);
        sb_puts(b, " ");
        if (ul >= 0) {
            if ((size_t)ul == strlen(XML_NS_XML) && !memcmp(name, XML_NS_XML, (size_t)ul)) sb_puts(b, "xml");
            else put_prefix(b, pidx[i]);
            sb_puts(b, ":");
        }
        sb_puts(b, local);
        sb_puts(b, "='");
        if (!put_attr_value(b, v, strlen(v))) goto out;
        sb_puts(b, "'");
    }
    ok = 1;
out:
    free(pidx);
    return ok;
}

static int put_start_tag(sbuf_t *b, const xnode_t *e, int with_xmlns)
{
    if ((!e->names_valid && !ncname_ok(e->name)) || !ns_ok(e->ns, strlen(e->ns))) return 0;
    if (!strcmp(e->ns, XML_NS_XML) || !strcmp(e->ns, NS_XMLNS)) return 0;
    sb_puts(b, "<");
    sb_puts(b, e->name);
    if (with_xmlns) {
        sb_puts(b, " xmlns='");
        put_attr_value(b, e->ns, strlen(e->ns));
        sb_puts(b, "'");
    }
    return put_attrs(b, e);
}

char *xnode_serialize(const xnode_t *n, const char *default_ns, size_t *len)
{
    if (len) *len = 0;
    if (!n) return NULL;
    sbuf_t b = {0};
    sb_put(&b, "", 0);
    /* The namespace n is compared with. A jabber:client/jabber:server root is compared with itself
     * (so no xmlns is written and it takes the stream's default); so are the descendants that
     * share its namespace, because they compare with their parent's stored ns. */
    const char *outer = default_ns ? default_ns : "";
    if (n->name && default_ns && (!strcmp(n->ns, "jabber:client") || !strcmp(n->ns, "jabber:server")))
        outer = n->ns;
    const xnode_t *c = n;
    for (;;) {
        if (!c->name) {
            if (!put_text(&b, c->text, c->text_len)) goto fail;
        } else {
            const char *pns = (c == n) ? outer : c->parent->ns;
            if (!put_start_tag(&b, c, strcmp(c->ns, pns) != 0)) goto fail;
            if (c->children) {
                sb_puts(&b, ">");
                c = c->children;
                continue;
            }
            sb_puts(&b, "/>");
        }
        for (;;) {          /* c is complete: next sibling, or close the parents */
            if (c == n) goto done;
            if (c->next) {
                c = c->next;
                break;
            }
            c = c->parent;
            sb_puts(&b, "</");
            sb_puts(&b, c->name);
            sb_puts(&b, ">");
        }
    }
done:
    if (len) *len = b.len;
    return b.b;
fail:
    free(b.b);
    return NULL;
}

char *xml_escape_attr(const char *s, size_t *len)
{
    if (len) *len = 0;
    if (!s) return NULL;
    sbuf_t b = {0};
    sb_put(&b, "", 0);
    if (!put_attr_value(&b, s, strlen(s))) {
        free(b.b);
        return NULL;
    }
    if (len) *len = b.len;
    return b.b;
}

/* ---- the stream parser ---- */

enum { XS_RUNNING, XS_CLOSED, XS_FAILED, XS_STOPPED };
/* Markup tracker states (see xs_track). */
enum { TK_TEXT, TK_LT, TK_TAG, TK_BANG, TK_BANG_DASH, TK_COMMENT, TK_CDATA, TK_PI, TK_REF };
enum { EV_OPEN, EV_STANZA, EV_CLOSE, EV_ERROR };

typedef struct xs_event {
    struct xs_event *next;
    int type;
    xnode_t *node;                              /* EV_STANZA */
    char *ns, *name, *content_ns, **attrs;      /* EV_OPEN */
    const char *cond;                           /* EV_ERROR */
    char *text;
} xs_event_t;

struct xstream {
    XML_Parser p;
    xstream_cb_t cb;
    void *ud;
    xstream_limits_t lim;
    int state;
    int halted;          /* an error or the stream's end was seen: expat handlers do nothing more */
    int in_expat;        /* inside XML_Parse / XML_ResumeParser */
    int header_seen;
    /* Byte offsets since the (re)start. pend holds the accepted bytes not yet given to expat,
     * [fed, total); those before safe may be given to it. */
    uint64_t total, fed, safe;
    char *pend;
    size_t pend_cap;
    /* The markup tracker: where the incomplete markup (or reference) that is being held back began. */
    int tk;
    unsigned char tk_q, tk_h1, tk_h2;
    uint64_t tk_start;
    /* The tree under construction. depth counts open elements (the stream root is 1). */
    size_t depth, ns_decls;
    uint64_t stanza_start, start_tag_end;
    xnode_t *stanza, *cur;
    char *content_ns;
    xs_event_t *ev_head, *ev_tail;
};

static void ev_push(xstream_t *x, xs_event_t *ev)
{
    ev->next = NULL;
    if (x->ev_tail) x->ev_tail->next = ev;
    else x->ev_head = ev;
    x->ev_tail = ev;
}

static xs_event_t *ev_new(int type)
{
    xs_event_t *ev = xm_alloc(sizeof *ev);
    memset(ev, 0, sizeof *ev);
    ev->type = type;
    return ev;
}

static void ev_free(xs_event_t *ev)
{
    xnode_free(ev->node);
    free(ev->ns);
    free(ev->name);
    free(ev->content_ns);
    free_attrs(ev->attrs);
    free(ev->text);
    free(ev);
}

static void ev_clear(xstream_t *x)
{
    while (x->ev_head) {
        xs_event_t *ev = x->ev_head;
        x->ev_head = ev->next;
        ev_free(ev);
    }
    x->ev_tail = NULL;
}

/* Record the stream error (the first one wins) and stop expat if we are inside it. */
static void xs_fail(xstream_t *x, const char *cond, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void xs_fail(xstream_t *x, const char *cond, const char *fmt, ...)
{
    if (x->halted) return;
    x->halted = 1;
    xs_event_t *ev = ev_new(EV_ERROR);
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    ev->cond = cond;
    ev->text = xm_strdup(buf);
    ev_push(x, ev);
    if (x->in_expat) XML_StopParser(x->p, XML_FALSE);
}

static int is_streams_ns(const char *ns, size_t len)
{
    return len == strlen(XML_NS_STREAMS) && !memcmp(ns, XML_NS_STREAMS, len);
}

static void xs_header(xstream_t *x, const char *ns, size_t nslen, const char *local, const char **atts)
{
    xs_event_t *ev = ev_new(EV_OPEN);
    ev->ns = xm_strndup(ns, nslen);
    ev->name = xm_strdup(local);
    ev->content_ns = x->content_ns;
    x->content_ns = NULL;
    ev->attrs = copy_attrs(atts);
    ev_push(x, ev);
    x->header_seen = 1;
    x->depth = 1;
    XML_StopParser(x->p, XML_TRUE);     /* deliver the header before parsing on */
}

static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    xstream_t *x = ud;
    if (x->halted) return;
    size_t ndecl = x->ns_decls;
    x->ns_decls = 0;
    const char *sp = strrchr(name, ' ');
    const char *local = sp ? sp + 1 : name;
    size_t nslen = sp ? (size_t)(sp - name) : 0;
    if (x->depth == 0) {
        xs_header(x, name, nslen, local, atts);
        return;
    }
    size_t level = x->depth;                /* the stanza element is level 1 */
    if (is_streams_ns(name, nslen)) {
        /* Stream-level elements inside a stanza would let a peer smuggle stream control into
         * content another entity relays; a nested stream header is never legitimate. */
        if (level >= 2) { xs_fail(x, "bad-format", "element in the streams namespace inside a stanza"); return; }
        if (!strcmp(local, "stream")) { xs_fail(x, "bad-format", "nested stream header"); return; }
    }
    if (level > x->lim.max_depth) {
        xs_fail(x, "policy-violation", "stanza nested deeper than %zu levels", x->lim.max_depth);
        return;
    }
    size_t natts = 0;
    while (atts[2 * natts]) natts++;
    if (natts + ndecl > x->lim.max_attrs) {
        xs_fail(x, "policy-violation", "more than %zu attributes on an element", x->lim.max_attrs);
        return;
    }
    /* expat has checked every name (XML Name, NCName parts, bound prefixes); only the length the
     * serialiser accepts is ours to check, so that no stanza we deliver is one we cannot write. */
    int too_long = strlen(local) > XML_MAX_NAME_LEN;
    for (size_t i = 0; i < natts && !too_long; i++) {
        const char *asp = strrchr(atts[2 * i], ' ');
        too_long = strlen(asp ? asp + 1 : atts[2 * i]) > XML_MAX_NAME_LEN;
    }
    if (too_long) {
        xs_fail(x, "policy-violation", "a name longer than %d bytes", XML_MAX_NAME_LEN);
        return;
    }
    xnode_t *n = xm_alloc(sizeof *n);
    memset(n, 0, sizeof *n);
    n->name = xm_strdup(local);
    n->ns = xm_strndup(name, nslen);
    n->attrs = copy_attrs(atts);
    n->names_valid = 1;
    if (level == 1) {
        x->stanza = n;
        x->stanza_start = (uint64_t)XML_GetCurrentByteIndex(x->p);
        x->start_tag_end = x->stanza_start + (uint64_t)XML_GetCurrentByteCount(x->p);
    } else {
        xnode_add_child(x->cur, n);
    }
    x->cur = n;
    x->depth++;
}

static void XMLCALL on_end(void *ud, const XML_Char *name)
{
    (void)name;
    xstream_t *x = ud;
    if (x->halted) return;
    if (x->depth <= 1) {                    /* </stream:stream> */
        x->halted = 1;
        x->depth = 0;
        ev_push(x, ev_new(EV_CLOSE));
        XML_StopParser(x->p, XML_FALSE);    /* whatever follows is ignored, not parsed */
        return;
    }
    x->depth--;
    if (x->depth > 1) {
        x->cur = x->cur->parent;
        return;
    }
    /* The stanza is complete. For an empty-element tag expat reports a count of 0: it ended with
     * its start tag. */
    int cnt = XML_GetCurrentByteCount(x->p);
    uint64_t end = cnt > 0 ? (uint64_t)XML_GetCurrentByteIndex(x->p) + (uint64_t)cnt : x->start_tag_end;
    if (end - x->stanza_start > x->lim.max_stanza_size) {
        xs_fail(x, "policy-violation", "stanza larger than %zu bytes", x->lim.max_stanza_size);
        return;
    }
    xs_event_t *ev = ev_new(EV_STANZA);
    ev->node = x->stanza;
    x->stanza = x->cur = NULL;
    ev_push(x, ev);
    XML_StopParser(x->p, XML_TRUE);         /* deliver it before parsing on */
}

static size_t text_cap(size_t n)
{
    size_t c = 16;
    while (c < n) {
        if (c > SIZE_MAX / 2) oom();
        c *= 2;
    }
    return c;
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len)
{
    xstream_t *x = ud;
    if (x->halted || len <= 0) return;
    if (x->depth <= 1) {
        for (int i = 0; i < len; i++)
            if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r') {
                xs_fail(x, "not-well-formed", "text between stanzas");
                return;
            }
        return;
    }
    /* Text nodes the parser makes are allocated in powers of two (text_cap), so that text arriving
     * in many small pieces is appended in amortised linear time. */
    size_t n = (size_t)len;
    xnode_t *t = x->cur->last_child;
    if (t && !t->name) {
        if (t->text_len + n + 1 > text_cap(t->text_len + 1))
            t->text = xm_realloc(t->text, text_cap(t->text_len + n + 1));
    } else {
        t = xm_alloc(sizeof *t);
        memset(t, 0, sizeof *t);
        t->text = xm_alloc(text_cap(n + 1));
        xnode_add_child(x->cur, t);
    }
    memcpy(t->text + t->text_len, s, n);
    t->text_len += n;
    t->text[t->text_len] = '\0';
}

static void XMLCALL on_ns_decl(void *ud, const XML_Char *prefix, const XML_Char *uri)
{
    xstream_t *x = ud;
    if (x->halted) return;
    x->ns_decls++;
    if (x->depth == 0 && !prefix) {
        free(x->content_ns);
        x->content_ns = (uri && *uri) ? xm_strdup(uri) : NULL;
    }
}

static void XMLCALL on_xmldecl(void *ud, const XML_Char *version, const XML_Char *encoding, int standalone)
{
    (void)version;
    (void)standalone;
    xstream_t *x = ud;
    /* The parser was created for UTF-8, which overrides the declaration: refuse it explicitly. */
    if (encoding && strcasecmp(encoding, "UTF-8")) xs_fail(x, "unsupported-encoding", "only UTF-8 is allowed");
}

/* RFC 6120 §11.1: no comments, processing instructions, DTDs or declarations. */
static void XMLCALL on_comment(void *ud, const XML_Char *data)
{
    (void)data;
    xs_fail(ud, "restricted-xml", "comment");
}

static void XMLCALL on_pi(void *ud, const XML_Char *target, const XML_Char *data)
{
    (void)target;
    (void)data;
    xs_fail(ud, "restricted-xml", "processing instruction");
}

static void XMLCALL on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid, const XML_Char *pubid,
                               int has_internal_subset)
{
    (void)name;
    (void)sysid;
    (void)pubid;
    (void)has_internal_subset;
    xs_fail(ud, "restricted-xml", "document type declaration");
}

static void XMLCALL on_entity_decl(void *ud, const XML_Char *name, int is_param, const XML_Char *value,
                                   int value_len, const XML_Char *base, const XML_Char *sysid,
                                   const XML_Char *pubid, const XML_Char *notation)
{
    (void)name; (void)is_param; (void)value; (void)value_len; (void)base; (void)sysid; (void)pubid;
    (void)notation;
    xs_fail(ud, "restricted-xml", "entity declaration");
}

static void XMLCALL on_notation(void *ud, const XML_Char *name, const XML_Char *base, const XML_Char *sysid,
                                const XML_Char *pubid)
{
    (void)name; (void)base; (void)sysid; (void)pubid;
    xs_fail(ud, "restricted-xml", "notation declaration");
}

static void XMLCALL on_element_decl(void *ud, const XML_Char *name, XML_Content *model)
{
    (void)name;
    xstream_t *x = ud;
    XML_FreeContentModel(x->p, model);      /* the handler owns it */
    xs_fail(x, "restricted-xml", "element declaration");
}

static void XMLCALL on_attlist(void *ud, const XML_Char *el, const XML_Char *att, const XML_Char *type,
                               const XML_Char *dflt, int required)
{
    (void)el; (void)att; (void)type; (void)dflt; (void)required;
    xs_fail(ud, "restricted-xml", "attribute list declaration");
}

static void XMLCALL on_skipped(void *ud, const XML_Char *name, int is_param)
{
    (void)name;
    (void)is_param;
    xs_fail(ud, "not-well-formed", "undefined entity");
}

static XML_Parser xs_parser_new(xstream_t *x)
{
    XML_Parser p = XML_ParserCreateNS("UTF-8", ' ');
    if (!p) oom();
    XML_SetUserData(p, x);
    XML_SetElementHandler(p, on_start, on_end);
    XML_SetCharacterDataHandler(p, on_text);
    XML_SetStartNamespaceDeclHandler(p, on_ns_decl);
    XML_SetXmlDeclHandler(p, on_xmldecl);
    XML_SetCommentHandler(p, on_comment);
    XML_SetProcessingInstructionHandler(p, on_pi);
    XML_SetStartDoctypeDeclHandler(p, on_doctype);
    XML_SetEntityDeclHandler(p, on_entity_decl);
    XML_SetNotationDeclHandler(p, on_notation);
    XML_SetElementDeclHandler(p, on_element_decl);
    XML_SetAttlistDeclHandler(p, on_attlist);
    XML_SetSkippedEntityHandler(p, on_skipped);
    XML_SetParamEntityParsing(p, XML_PARAM_ENTITY_PARSING_NEVER);
    /* DTDs are refused before any entity could be declared; this is the second wall. */
    XML_SetBillionLaughsAttackProtectionMaximumAmplification(p, 10.0f);
    XML_SetBillionLaughsAttackProtectionActivationThreshold(p, 1024 * 1024);
    if (XML_SetReparseDeferralEnabled) XML_SetReparseDeferralEnabled(p, XML_FALSE);
    return p;
}

static void xs_set_limits(xstream_t *x, const xstream_limits_t *l)
{
    xstream_limits_t d;
    memset(&d, 0, sizeof d);
    if (l) d = *l;
    if (!d.max_stanza_size) d.max_stanza_size = XSTREAM_DEFAULT_MAX_STANZA_SIZE;
    if (!d.max_depth) d.max_depth = XSTREAM_DEFAULT_MAX_DEPTH;
    if (!d.max_attrs) d.max_attrs = XSTREAM_DEFAULT_MAX_ATTRS;
    if (!d.max_header_size) d.max_header_size = XSTREAM_DEFAULT_MAX_HEADER_SIZE;
    x->lim = d;
}

void xstream_set_limits(xstream_t *x, const xstream_limits_t *limits)
{
    if (x) xs_set_limits(x, limits);
}

/* Drop all parse state (keeping callbacks and limits). */
static void xs_clear(xstream_t *x)
{
    if (x->p) XML_ParserFree(x->p);
    x->p = NULL;
    xnode_free(x->stanza);
    x->stanza = x->cur = NULL;
    free(x->content_ns);
    x->content_ns = NULL;
    ev_clear(x);
    if (x->pend_cap > 65536) {
        free(x->pend);
        x->pend = NULL;
        x->pend_cap = 0;
    }
    x->total = x->fed = x->safe = x->tk_start = 0;
    x->tk = TK_TEXT;
    x->tk_q = x->tk_h1 = x->tk_h2 = 0;
    x->depth = x->ns_decls = 0;
    x->stanza_start = x->start_tag_end = 0;
    x->halted = x->in_expat = x->header_seen = 0;
}

xstream_t *xstream_new(const xstream_cb_t *cb, void *ud, const xstream_limits_t *limits)
{
    xstream_t *x = xm_alloc(sizeof *x);
    memset(x, 0, sizeof *x);
    if (cb) x->cb = *cb;
    x->ud = ud;
    xs_set_limits(x, limits);
    xstream_reset(x);
    return x;
}

void xstream_reset(xstream_t *x)
{
    if (!x) return;
    xs_clear(x);
    x->p = xs_parser_new(x);
    x->state = XS_RUNNING;
}

void xstream_free(xstream_t *x)
{
    if (!x) return;
    xs_clear(x);
    free(x->pend);
    free(x);
}

const char *xstream_check_header(const char *ns_stream, const char *name)
{
    if (!ns_stream || strcmp(ns_stream, XML_NS_STREAMS) || !name || strcmp(name, "stream"))
        return "invalid-namespace";
    return NULL;
}

/* Deliver the queued events in order. Returns 0 to go on parsing, -1 when the stream ended here
 * (closed, failed, or a callback asked to stop: the rest of the queue is dropped). */
static int xs_deliver(xstream_t *x)
{
    while (x->ev_head) {
        xs_event_t *ev = x->ev_head;
        x->ev_head = ev->next;
        if (!x->ev_head) x->ev_tail = NULL;
        int r = 0;
        switch (ev->type) {
        case EV_OPEN:
            if (x->cb.stream_open)
                r = x->cb.stream_open(x->ud, ev->ns, ev->name, ev->content_ns, (const char **)ev->attrs);
            break;
        case EV_STANZA: {
            xnode_t *st = ev->node;
            ev->node = NULL;
            if (x->cb.stanza) r = x->cb.stanza(x->ud, st);
            else xnode_free(st);
            break;
        }
        case EV_CLOSE:
            x->state = XS_CLOSED;
            if (x->cb.stream_close) x->cb.stream_close(x->ud);
            break;
        default:
            x->state = XS_FAILED;
            if (x->cb.error) x->cb.error(x->ud, ev->cond, ev->text);
            break;
        }
        ev_free(ev);
        if (r != 0) x->state = XS_STOPPED;
        if (x->state != XS_RUNNING) {
            ev_clear(x);
            return -1;
        }
    }
    return 0;
}

static const char *expat_condition(enum XML_Error e)
{
    switch (e) {
    case XML_ERROR_UNKNOWN_ENCODING:
    case XML_ERROR_INCORRECT_ENCODING:
        return "unsupported-encoding";
    case XML_ERROR_AMPLIFICATION_LIMIT_BREACH:
        return "restricted-xml";
    case XML_ERROR_NO_MEMORY:
        return "policy-violation";
    default:
        return "not-well-formed";
    }
}

/* Give expat the bytes before safe, delivering each event as it completes. Returns 0 or -1 (the
 * stream ended). */
static int xs_parse_ready(xstream_t *x)
{
    while (x->state == XS_RUNNING && x->safe > x->fed) {
        size_t n = (size_t)(x->safe - x->fed);
        if (n > (1u << 30)) n = 1u << 30;
        x->in_expat = 1;
        enum XML_Status st = XML_Parse(x->p, x->pend, (int)n, XML_FALSE);
        x->in_expat = 0;
        x->fed += n;
        memmove(x->pend, x->pend + n, (size_t)(x->total - x->fed));
        for (;;) {
            if (st == XML_STATUS_ERROR && !x->halted) {
                enum XML_Error e = XML_GetErrorCode(x->p);
                xs_fail(x, expat_condition(e), "%s at line %lu column %lu", XML_ErrorString(e),
                        (unsigned long)XML_GetCurrentLineNumber(x->p),
                        (unsigned long)XML_GetCurrentColumnNumber(x->p));
            }
            if (xs_deliver(x) < 0) return -1;
            if (st != XML_STATUS_SUSPENDED) break;
            x->in_expat = 1;
            st = XML_ResumeParser(x->p);
            x->in_expat = 0;
        }
    }
    return x->state == XS_RUNNING ? 0 : -1;
}

static void xs_track_done(xstream_t *x, uint64_t pos)
{
    x->tk = TK_TEXT;
    x->safe = pos + 1;
}

/* The markup tracker: a byte-level scanner that finds where incomplete markup (a tag, comment,
 * CDATA section, PI) or reference begins, so that only complete ones are handed to expat. Without
 * it, a peer sending a long start tag a byte at a time makes expat re-tokenise the tag from its
 * start on every byte (quadratic CPU). It only delays bytes: expat still judges everything. */
static void xs_track(xstream_t *x, unsigned char c, uint64_t pos)
{
    switch (x->tk) {
    case TK_TEXT:
        if (c == '<' || c == '&') {
            x->tk = c == '<' ? TK_LT : TK_REF;
            x->tk_start = pos;
        } else {
            x->safe = pos + 1;
        }
        return;
    case TK_LT:
        if (c == '!') { x->tk = TK_BANG; return; }
        if (c == '?') { x->tk = TK_PI; x->tk_h1 = x->tk_h2 = 0; return; }
        break;                              /* a start or end tag */
    case TK_BANG:
        if (c == '-') { x->tk = TK_BANG_DASH; return; }
        if (c == '[') { x->tk = TK_CDATA; x->tk_h1 = x->tk_h2 = 0; return; }
        break;                              /* <!DOCTYPE and the like: quotes matter */
    case TK_BANG_DASH:
        if (c == '-') { x->tk = TK_COMMENT; x->tk_h1 = x->tk_h2 = 0; return; }
        break;
    case TK_TAG:
        if (x->tk_q) {
            if (c == x->tk_q) x->tk_q = 0;
        } else if (c == '\'' || c == '"') {
            x->tk_q = c;
        } else if (c == '>') {
            xs_track_done(x, pos);
        }
        return;
    case TK_COMMENT:
    case TK_CDATA:
    case TK_PI: {
        unsigned char want = x->tk == TK_COMMENT ? '-' : x->tk == TK_CDATA ? ']' : '?';
        if (c == '>' && x->tk_h1 == want && (x->tk == TK_PI || x->tk_h2 == want)) {
            xs_track_done(x, pos);
            return;
        }
        x->tk_h2 = x->tk_h1;
        x->tk_h1 = c;
        return;
    }
    case TK_REF:
        if (c == ';') {
            xs_track_done(x, pos);
        } else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '#' ||
                     c == '_' || c == '-' || c == '.' || c == ':' || c >= 0x80)) {
            x->tk = TK_TEXT;                /* not a reference after all: expat will say so */
            x->safe = pos;
            xs_track(x, c, pos);
        }
        return;
    }
    x->tk = TK_TAG;                         /* from TK_LT, TK_BANG, TK_BANG_DASH */
    x->tk_q = 0;
    xs_track(x, c, pos);
}

/* Take buf[0..n) into pend. Returns -1 if the stream is refused (its error is queued). */
static int xs_accept(xstream_t *x, const char *buf, size_t n)
{
    size_t have = (size_t)(x->total - x->fed);
    if (have + n > x->pend_cap) {
        size_t cap = x->pend_cap ? x->pend_cap : 4096;
        while (cap < have + n) {
            if (cap > SIZE_MAX / 2) oom();
            cap *= 2;
        }
        x->pend = xm_realloc(x->pend, cap);
        x->pend_cap = cap;
    }
    memcpy(x->pend + have, buf, n);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)buf[i];
        uint64_t pos = x->total + i;
        /* Expat switches to UTF-16 on a byte-order mark or a NUL among the first two bytes even
         * when told the input is UTF-8: stop that here (RFC 6120 §11.6: UTF-8 only). */
        if ((pos == 0 && (c == 0x00 || c == 0xFE || c == 0xFF)) || (pos == 1 && c == 0x00)) {
            xs_fail(x, "unsupported-encoding", "only UTF-8 is allowed");
            return -1;
        }
        xs_track(x, c, pos);
    }
    x->total += n;
    return 0;
}

/* The size limit that applies now and how much of it is used. Before the header: everything so
 * far. In a stanza: from its start tag. Between stanzas: from the start of markup being held back
 * (the next stanza's start tag), whitespace being free. */
static void xs_budget(const xstream_t *x, uint64_t *limit, uint64_t *used, const char **what)
{
    if (!x->header_seen) {
        *limit = x->lim.max_header_size;
        *used = x->total;
        *what = "stream header";
    } else if (x->depth >= 2) {
        *limit = x->lim.max_stanza_size;
        *used = x->total - x->stanza_start;
        *what = "stanza";
    } else {
        *limit = x->lim.max_stanza_size;
        *used = x->tk != TK_TEXT ? x->total - x->tk_start : 0;
        *what = "stanza";
    }
}

int xstream_feed(xstream_t *x, const char *buf, size_t len)
{
    if (!x) return -1;
    if (x->state == XS_CLOSED) return 0;
    if (x->state != XS_RUNNING) return -1;
    for (;;) {
        if (xs_parse_ready(x) < 0) break;
        uint64_t limit, used;
        const char *what;
        xs_budget(x, &limit, &used, &what);
        /* A unit that has used its whole budget without being complete needs at least one more
         * byte, so it will exceed the limit: refuse it now, before buffering more of it. */
        if (used >= limit) {
            xs_fail(x, "policy-violation", "%s larger than %llu bytes", what, (unsigned long long)limit);
            xs_deliver(x);
            break;
        }
        if (!len) break;
        uint64_t room = limit - used;
        size_t n = room < len ? (size_t)room : len;
        if (xs_accept(x, buf, n) < 0) {
            xs_deliver(x);
            break;
        }
        buf += n;
        len -= n;
    }
    /* Nothing held back: give the buffer back. An idle session then keeps no input buffer at
     * all (4 KiB and more each, measured with massif), at the price of one allocation per read. */
    if (x->pend && x->total == x->fed) {
        free(x->pend);
        x->pend = NULL;
        x->pend_cap = 0;
    }
    return (x->state == XS_RUNNING || x->state == XS_CLOSED) ? 0 : -1;
}

/* ---- parsing one stored element ---- */

typedef struct {
    xnode_t *el;
    int count;
} one_t;

static int one_stanza(void *ud, xnode_t *st)
{
    one_t *o = ud;
    o->count++;
    if (o->el) {
        xnode_free(st);
        return -1;
    }
    o->el = st;
    return 0;
}

int xstream_idle(const xstream_t *x)
{
    return x->state == XS_RUNNING && x->fed == x->total && x->depth == 1 && !x->stanza;
}

xnode_t *xnode_parse_one(const char *xml, size_t len, const char *default_ns)
{
    if (!xml) return NULL;
    /* The element is parsed as the only stanza of a synthetic stream whose root declares nothing
     * but the default namespace, so that the stream parser's rules all apply. */
    sbuf_t h = {0};
    sb_puts(&h, "<r");
    if (default_ns) {
        sb_puts(&h, " xmlns='");
        if (!put_attr_value(&h, default_ns, strlen(default_ns))) {
            free(h.b);
            return NULL;
        }
        sb_puts(&h, "'");
    }
    sb_puts(&h, ">");
    xstream_cb_t cb;
    memset(&cb, 0, sizeof cb);
    cb.stanza = one_stanza;
    one_t o = {NULL, 0};
    /* The element cannot be larger than the input; 16 leaves room for the closing </r>. */
    xstream_limits_t lim = {len > 16 ? len : 16, XNODE_PARSE_MAX_DEPTH, XNODE_PARSE_MAX_ATTRS, h.len};
    xstream_t *x = xstream_new(&cb, &o, &lim);
    int ok = xstream_feed(x, h.b, h.len) == 0 && x->state == XS_RUNNING &&
             xstream_feed(x, xml, len) == 0 && x->state == XS_RUNNING && o.count == 1 &&
             xstream_feed(x, "</r>", 4) == 0 && x->state == XS_CLOSED;
    xstream_free(x);
    free(h.b);
    if (!ok) {
        xnode_free(o.el);
        return NULL;
    }
    return o.el;
}
