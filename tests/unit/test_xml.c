/* tests/unit/test_xml.c: unit tests of server/xml.c: the xnode tree, the serialiser, and the
 * streaming parser's RFC 6120 §11 rules (restricted XML, UTF-8, limits, stream smuggling). */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "xml.h"
#include "tap.h"

#define NS_C "jabber:client"
#define HDR "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' " \
            "to='example.com' version='1.0' xml:lang='en'>"

/* ---- a recording stream consumer ---- */

typedef struct {
    int opened;
    char open_ns[128], open_name[64], content_ns[128], to[64], lang[16];
    int open_ret;            /* what stream_open returns */
    xnode_t *st[64];
    int nst;
    int stop_after;          /* stanza returns 1 once this many arrived (0: never) */
    int closed;
    int nerr;
    char err[64];
} rec_t;

static int rec_open(void *ud, const char *ns, const char *name, const char *cns, const char **attrs)
{
    rec_t *r = ud;
    r->opened++;
    snprintf(r->open_ns, sizeof r->open_ns, "%s", ns);
    snprintf(r->open_name, sizeof r->open_name, "%s", name);
    snprintf(r->content_ns, sizeof r->content_ns, "%s", cns ? cns : "(null)");
    for (size_t i = 0; attrs && attrs[i]; i += 2) {
        if (!strcmp(attrs[i], "to")) snprintf(r->to, sizeof r->to, "%s", attrs[i + 1]);
        if (!strcmp(attrs[i], XML_ATTR_LANG)) snprintf(r->lang, sizeof r->lang, "%s", attrs[i + 1]);
    }
    return r->open_ret;
}

static int rec_stanza(void *ud, xnode_t *st)
{
    rec_t *r = ud;
    if (r->nst < 64) r->st[r->nst++] = st;
    else xnode_free(st);
    return (r->stop_after && r->nst >= r->stop_after) ? 1 : 0;
}

static void rec_close(void *ud)
{
    ((rec_t *)ud)->closed++;
}

static void rec_error(void *ud, const char *cond, const char *text)
{
    rec_t *r = ud;
    (void)text;
    r->nerr++;
    snprintf(r->err, sizeof r->err, "%s", cond);
}

static const xstream_cb_t rec_cb = {rec_open, rec_stanza, rec_close, rec_error};

static void rec_free(rec_t *r)
{
    for (int i = 0; i < r->nst; i++) xnode_free(r->st[i]);
    memset(r, 0, sizeof *r);
}

/* Feed data to a new stream in chunks of `chunk` bytes (0: at once). Returns the last feed's result. */
static int run(rec_t *r, const char *data, size_t len, size_t chunk, const xstream_limits_t *lim)
{
    memset(r, 0, sizeof *r);
    xstream_t *x = xstream_new(&rec_cb, r, lim);
    int ret = 0;
    if (!chunk) chunk = len ? len : 1;
    for (size_t off = 0; off < len && ret == 0; off += chunk)
        ret = xstream_feed(x, data + off, len - off < chunk ? len - off : chunk);
    xstream_free(x);
    return ret;
}

static int runs(rec_t *r, const char *data)
{
    return run(r, data, strlen(data), 0, NULL);
}

/* The error condition a stream body (after HDR) produces, or "" if none. */
static const char *body_error(const char *body)
{
    static char cond[64];
    rec_t r;
    char *s = malloc(strlen(HDR) + strlen(body) + 1);
    strcpy(s, HDR);
    strcat(s, body);
    runs(&r, s);
    snprintf(cond, sizeof cond, "%s", r.nerr ? r.err : "");
    rec_free(&r);
    free(s);
    return cond;
}

static char *ser(const xnode_t *n, const char *dns)
{
    size_t len;
    return xnode_serialize(n, dns, &len);
}

static int ser_is(const xnode_t *n, const char *dns, const char *want)
{
    char *s = ser(n, dns);
    int ok = s && !strcmp(s, want);
    if (!ok) printf("# got: %s\n# want: %s\n", s ? s : "(null)", want);
    free(s);
    return ok;
}

/* parse -> serialise -> parse: equal trees and serialisation stable. */
static int roundtrip(const char *xml, const char *dns)
{
    xnode_t *a = xnode_parse_one(xml, strlen(xml), dns);
    if (!a) { printf("# first parse failed: %s\n", xml); return 0; }
    size_t len;
    char *s = xnode_serialize(a, dns, &len);
    xnode_t *b = s ? xnode_parse_one(s, len, dns) : NULL;
    char *s2 = b ? xnode_serialize(b, dns, NULL) : NULL;
    int ok = b && xnode_equal(a, b) && s2 && !strcmp(s, s2);
    if (!ok) printf("# roundtrip failed: %s -> %s\n", xml, s ? s : "(null)");
    free(s);
    free(s2);
    xnode_free(a);
    xnode_free(b);
    return ok;
}

/* ---- tree ---- */

static void test_tree(void)
{
    xnode_t *m = xnode_new("message", NS_C);
    xnode_set_attr(m, "to", "a@b");
    xnode_set_attr(m, "type", "chat");
    xnode_set_attr(m, "type", xnode_attr(m, "type"));       /* aliasing its own value is safe */
    xnode_set_attr(m, "type", "normal");
    ok(!strcmp(xnode_attr(m, "type"), "normal") && !strcmp(xnode_attr(m, "to"), "a@b"), "set_attr sets and replaces");
    xnode_set_attr(m, "to", NULL);
    ok(xnode_attr(m, "to") == NULL && !strcmp(xnode_attr(m, "type"), "normal"), "set_attr NULL removes only that attribute");

    xnode_t *body = xnode_add_elem(m, "body", NULL);
    xnode_add_text(body, "he");
    xnode_add_text(body, "llo");
    xnode_t *x = xnode_add_elem(m, "x", "urn:x");
    xnode_add_text(m, "  ");
    xnode_t *y = xnode_add_elem(m, "y", "urn:y");
    ok(!strcmp(body->ns, NS_C) && !strcmp(x->ns, "urn:x"), "add_elem with ns NULL inherits the parent's namespace");
    ok(xnode_child(m, "body", NS_C) == body && xnode_child(m, NULL, "urn:y") == y &&
       xnode_child(m, "body", "urn:x") == NULL && xnode_child(m, "x", NULL) == x, "xnode_child matches name and ns");
    ok(xnode_first_elem(m) == body && xnode_next_elem(body) == x && xnode_next_elem(x) == y && !xnode_next_elem(y),
       "first_elem/next_elem skip text nodes");
    char *t = xnode_text(body), *t2 = xnode_text(x);
    ok(!strcmp(t, "hello") && !strcmp(t2, ""), "xnode_text concatenates direct text, \"\" when none");
    free(t);
    free(t2);

    xnode_t *c = xnode_copy(m);
    ok(c && c->parent == NULL && xnode_equal(c, m), "copy is equal and unlinked");
    xnode_set_attr(xnode_child(c, "body", NULL), "xml:lang", "de");
    ok(!xnode_equal(c, m) && xnode_attr(body, "xml:lang") == NULL, "copy is deep (changing it leaves the original)");
    xnode_free(c);

    xnode_free(x);                          /* a linked child: unlinked first */
    ok(xnode_next_elem(body) == y && m->last_child == y, "freeing a linked child unlinks it");
    xnode_unlink(y);
    ok(m->last_child && !m->last_child->name && y->parent == NULL, "unlink of the last child fixes last_child");
    xnode_add_child(m, y);
    ok(m->last_child == y && y->parent == m, "add_child appends after unlink");
    xnode_free(m);

    /* xnode_equal: adjacent text merges, empty text is absent, attribute order is irrelevant. */
    xnode_t *a = xnode_new("a", "u"), *b = xnode_new("a", "u");
    xnode_set_attr(a, "p", "1"); xnode_set_attr(a, "q", "2");
    xnode_set_attr(b, "q", "2"); xnode_set_attr(b, "p", "1");
    xnode_add_text(a, "ab"); xnode_add_text(a, ""); xnode_add_text(a, "c");
    xnode_add_text(b, "a"); xnode_add_text(b, "bc");
    ok(xnode_equal(a, b), "xnode_equal: text runs and attribute order");
    xnode_add_elem(b, "k", NULL);
    ok(!xnode_equal(a, b), "xnode_equal: an extra child differs");
    xnode_free(a);
    xnode_free(b);
}

/* ---- serialiser ---- */

static void test_serialize(void)
{
    xnode_t *m = xnode_new("message", NS_C);
    xnode_set_attr(m, "to", "a@b");
    xnode_add_text(xnode_add_elem(m, "body", NULL), "hi");
    ok(ser_is(m, NS_C, "<message to='a@b'><body>hi</body></message>"), "stanza in the stream's namespace: no xmlns");
    ok(ser_is(m, NULL, "<message xmlns='jabber:client' to='a@b'><body>hi</body></message>"),
       "default_ns NULL: the namespace is written");
    /* c2s stanza sent on s2s: root and inheriting children move; an explicitly qualified forwarded
     * stanza (XEP-0297) keeps jabber:client. */
    xnode_t *fw = xnode_add_elem(m, "forwarded", "urn:xmpp:forward:0");
    xnode_add_elem(fw, "message", NS_C);
    ok(ser_is(m, "jabber:server", "<message to='a@b'><body>hi</body><forwarded xmlns='urn:xmpp:forward:0'>"
              "<message xmlns='jabber:client'/></forwarded></message>"),
       "jabber:client root written as if in the s2s default namespace; forwarded stanza keeps its own");
    xnode_free(m);

    xnode_t *e = xnode_new("e", "urn:e");
    xnode_set_attr(e, "v", "'<>&\"\t\n\r");
    xnode_set_attr(e, XML_ATTR_LANG, "en");
    xnode_set_attr(e, "urn:p k", "1");
    xnode_set_attr(e, "urn:q k", "2");
    xnode_set_attr(e, "urn:p j", "3");
    xnode_add_text(e, "a<b>&c'\"]]>\r\n");
    ok(ser_is(e, NS_C, "<e xmlns='urn:e' xmlns:a0='urn:p' xmlns:a1='urn:q' v='&apos;&lt;&gt;&amp;&quot;&#9;&#10;&#13;' "
              "xml:lang='en' a0:k='1' a1:k='2' a0:j='3'>a&lt;b&gt;&amp;c'\"]]&gt;&#13;\n</e>"),
       "escaping, xml:lang and generated attribute prefixes");
    xnode_free(e);

    xnode_t *p = xnode_new("a", "urn:a");
    xnode_add_elem(xnode_add_elem(p, "b", ""), "c", "urn:a");
    ok(ser_is(p, "jabber:client", "<a xmlns='urn:a'><b xmlns=''><c xmlns='urn:a'/></b></a>"),
       "namespace changes and xmlns='' are written where needed");
    xnode_free(p);

    /* Trees that cannot be written as well-formed XML are refused, not written broken. */
    const char *bad_attr[] = {"xmlns", "xmlns:x", "a b c d'", "a'b", "1a", "", " x", "http://www.w3.org/2000/xmlns/ x"};
    int refused = 1;
    for (size_t i = 0; i < sizeof bad_attr / sizeof *bad_attr; i++) {
        xnode_t *n = xnode_new("a", "");
        xnode_set_attr(n, bad_attr[i], "v");
        size_t len = 99;
        char *s = xnode_serialize(n, NULL, &len);
        if (s || len != 0) { refused = 0; printf("# accepted attribute name '%s'\n", bad_attr[i]); }
        free(s);
        xnode_free(n);
    }
    ok(refused, "invalid attribute names (xmlns, colon, quote, leading digit) are refused");
    const char *bad_text[] = {"a\x01", "\xff", "\xc0\x80", "\xed\xa0\x80", "\xef\xbf\xbe"};
    refused = 1;
    for (size_t i = 0; i < sizeof bad_text / sizeof *bad_text; i++) {
        xnode_t *n = xnode_new("a", "");
        xnode_add_text(n, bad_text[i]);
        char *s = ser(n, NULL);
        xnode_t *n2 = xnode_new("a", "");
        xnode_set_attr(n2, "v", bad_text[i]);
        char *s2 = ser(n2, NULL);
        if (s || s2) { refused = 0; printf("# accepted text %zu\n", i); }
        free(s); free(s2);
        xnode_free(n); xnode_free(n2);
    }
    xnode_t *nul = xnode_new("a", "");
    xnode_add_child(nul, xnode_new_text("a\0b", 3));
    char *snul = ser(nul, NULL);
    ok(refused && !snul, "control characters, invalid UTF-8, surrogates, U+FFFE and NUL are refused");
    free(snul);
    xnode_free(nul);
    xnode_t *bn = xnode_new("a b", ""), *bns = xnode_new("a", "urn:a b"), *bxml = xnode_new("a", XML_NS_XML);
    char *s1 = ser(bn, NULL), *s2 = ser(bns, NULL), *s3 = ser(bxml, NULL);
    ok(!s1 && !s2 && !s3, "invalid element name, namespace with a space, element in the xml namespace are refused");
    free(s1); free(s2); free(s3);
    xnode_free(bn); xnode_free(bns); xnode_free(bxml);
    xnode_t *u = xnode_new("caf\xc3\xa9", "");
    char *su = ser(u, NULL);
    ok(su && !strcmp(su, "<caf\xc3\xa9/>"), "non-ASCII names that XML allows are written");
    free(su);
    xnode_free(u);
}

static void test_roundtrip(void)
{
    ok(roundtrip("<message xmlns='jabber:client' to='a@b/&amp;lt;' id=\"q'&quot;\">"
                 "<body xml:lang='de'>&amp;lt; &lt;b&gt; ' \" &#x10000; caf\xc3\xa9</body></message>", NULL),
       "round trip: &amp;lt; in text and attributes, quotes, xml:lang, non-BMP");
    ok(roundtrip("<a xmlns='urn:a'><b xmlns='urn:b'><c xmlns=''><d xmlns='urn:a'/></c></b><e/></a>", "jabber:client"),
       "round trip: nested default-namespace changes including xmlns=''");
    ok(roundtrip("<a xmlns:p='urn:p' xmlns:q='urn:q' p:x='1' q:x='2' x='3' p:y='&#9;&#10;&#13;'>"
                 "t&#13;&#10;u<![CDATA[<not a tag> & ]]]]><![CDATA[>]]></a>", NULL),
       "round trip: namespaced attributes, CR/TAB/LF, CDATA");
    xnode_t *n = xnode_parse_one("<x:a xmlns:x='urn:y'><x:b/></x:a>", 33, NULL);
    ok(n && ser_is(n, NULL, "<a xmlns='urn:y'><b/></a>"), "prefixed elements serialise unprefixed with xmlns");
    xnode_free(n);
    n = xnode_parse_one("<a><![CDATA[x<y]]>z</a>", 23, NULL);
    ok(n && n->children && !n->children->name && n->children == n->last_child &&
       !strcmp(n->children->text, "x<yz"), "a CDATA section becomes (one merged) text node");
    xnode_free(n);
    n = xnode_parse_one(" <iq type='get'/>\n", 18, NS_C);
    ok(n && !strcmp(n->ns, NS_C) && !strcmp(n->name, "iq") && !strcmp(xnode_attr(n, "type"), "get"),
       "parse_one: unqualified element in default_ns, surrounding whitespace allowed");
    xnode_free(n);
    n = xnode_parse_one("<m xml:lang='fr'/>", 18, NULL);
    ok(n && !strcmp(xnode_attr(n, XML_ATTR_LANG), "fr") && !strcmp(n->ns, ""),
       "xml:lang is reported as '" XML_NS_XML " lang'; no namespace gives \"\"");
    xnode_free(n);

    const char *bad[] = {
        "<a/><b/>", "<a/>x", "<a><!-- c --></a>", "<a><?pi x?></a>", "<?xml version='1.0'?><a/>",
        "<!DOCTYPE a><a/>", "<p:a/>", "<a>&foo;</a>", "<a></r><r><b/>", "<a/></r>",
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>",
        "<a><s:x xmlns:s='http://etherx.jabber.org/streams'/></a>", "<a>", "", "<a b='1' b='2'/>", "<a>\xff</a>",
    };
    int all = 1;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        xnode_t *b = xnode_parse_one(bad[i], strlen(bad[i]), NS_C);
        if (b) { all = 0; printf("# parse_one accepted: %s\n", bad[i]); xnode_free(b); }
    }
    ok(all, "parse_one refuses: two elements, text, comment, PI, XML declaration, DTD, unbound prefix, "
            "undefined entity, closing-tag injection, stream elements, incomplete, empty, duplicate attribute, bad UTF-8");
}

/* ---- the stream parser ---- */

static void test_header(void)
{
    rec_t r;
    int ret = runs(&r, "<?xml version='1.0' encoding='utf-8'?>\n" HDR);
    ok(ret == 0 && r.opened == 1 && !strcmp(r.open_ns, XML_NS_STREAMS) && !strcmp(r.open_name, "stream") &&
       !strcmp(r.content_ns, NS_C) && !strcmp(r.to, "example.com") && !strcmp(r.lang, "en"),
       "stream_open gets namespace, name, content namespace, attributes (xml:lang expanded)");
    rec_free(&r);
    ok(xstream_check_header(XML_NS_STREAMS, "stream") == NULL &&
       !strcmp(xstream_check_header("urn:wrong", "stream"), "invalid-namespace") &&
       !strcmp(xstream_check_header(XML_NS_STREAMS, "strem"), "invalid-namespace"),
       "xstream_check_header: invalid-namespace for a wrong root");
    memset(&r, 0, sizeof r);
    r.open_ret = -1;
    xstream_t *x = xstream_new(&rec_cb, &r, NULL);
    ret = xstream_feed(x, "<stream:stream xmlns:stream='urn:bad'><message/>", 48);
    int ret2 = xstream_feed(x, "<message/>", 10);
    ok(ret == -1 && ret2 == -1 && r.opened == 1 && !strcmp(r.open_ns, "urn:bad") && r.nst == 0 && r.nerr == 0,
       "a wrong header is passed to stream_open; returning -1 stops the stream");
    xstream_free(x);
    rec_free(&r);
}

static void test_stanzas(void)
{
    rec_t r;
    const char *s = HDR "<message to='a@b'><body>x</body></message> \n\t<presence/>";
    int ret = runs(&r, s);
    ok(ret == 0 && r.nst == 2 && !strcmp(r.st[0]->name, "message") && !strcmp(r.st[0]->ns, NS_C) &&
       !strcmp(r.st[1]->name, "presence") && r.st[0]->parent == NULL, "two stanzas in one feed are both delivered");
    rec_free(&r);

    const char *big = HDR "<message xmlns:e='urn:e' e:a='1' type='chat' xml:lang='en'>"
        "<body>caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 &amp;&lt;&#x41;&#66;<![CDATA[ <c> ]]></body>"
        "<x xmlns='urn:x'><y a=\"'\"/></x></message>\r\n  <iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>"
        "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features></stream:stream>";
    rec_t one;
    run(&one, big, strlen(big), 0, NULL);
    ret = run(&r, big, strlen(big), 1, NULL);
    int same = one.nst == 3 && r.nst == 3 && r.closed == 1 && one.closed == 1 && ret == 0;
    for (int i = 0; same && i < 3; i++) same = xnode_equal(one.st[i], r.st[i]);
    ok(same, "a stream fed one byte at a time parses identically");
    ok(one.nst == 3 && !strcmp(one.st[2]->name, "features") && !strcmp(one.st[2]->ns, XML_NS_STREAMS),
       "depth-1 stream:features is delivered as a stanza");
    char *body = one.nst ? xnode_text(xnode_child(one.st[0], "body", NULL)) : NULL;
    ok(body && !strcmp(body, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 &<AB <c> "), "entities, references, CDATA and UTF-8 in text");
    free(body);
    rec_free(&one);
    rec_free(&r);

    /* Many whitespace keepalives, together far more than a stanza may be, cost nothing. */
    xstream_limits_t lim = {100, 0, 0, 0};
    size_t n = strlen(HDR) + 5000 + 12;
    char *ka = malloc(n + 1);
    strcpy(ka, HDR);
    memset(ka + strlen(HDR), ' ', 5000);
    strcpy(ka + strlen(HDR) + 5000, "<presence/>");
    ret = run(&r, ka, strlen(ka), 7, &lim);
    ok(ret == 0 && r.nst == 1 && r.nerr == 0, "whitespace between stanzas does not count against the stanza limit");
    rec_free(&r);
    free(ka);

    ok(!strcmp(body_error("hello<presence/>"), "not-well-formed"), "text between stanzas: not-well-formed");
    ret = runs(&r, HDR "<presence/></stream:stream><garbage<<&");
    ok(ret == 0 && r.closed == 1 && r.nst == 1 && r.nerr == 0, "</stream:stream> closes; bytes after it are ignored");
    rec_free(&r);
    memset(&r, 0, sizeof r);
    xstream_t *x = xstream_new(&rec_cb, &r, NULL);
    xstream_feed(x, HDR "</stream:stream>", strlen(HDR) + 16);
    ret = xstream_feed(x, "<message/>", 10);
    ok(ret == 0 && r.closed == 1 && r.nst == 0, "feeding after the close is ignored");
    xstream_free(x);
    rec_free(&r);
}

static void test_restricted(void)
{
    ok(!strcmp(body_error("<message><!-- hi --></message>"), "restricted-xml"), "comment in a stanza: restricted-xml");
    ok(!strcmp(body_error("<!-- hi -->"), "restricted-xml"), "comment between stanzas: restricted-xml");
    ok(!strcmp(body_error("<message><?php x ?></message>"), "restricted-xml"), "processing instruction: restricted-xml");
    rec_t r;
    runs(&r, "<!DOCTYPE stream:stream>" HDR);
    ok(r.nerr == 1 && !strcmp(r.err, "restricted-xml") && r.opened == 0, "DOCTYPE before the header: restricted-xml");
    rec_free(&r);
    runs(&r, "<?xml version='1.0'?><!DOCTYPE s [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;'>]>"
             "<s>&b;</s>");
    ok(r.nerr == 1 && !strcmp(r.err, "restricted-xml") && r.opened == 0, "internal subset with entity declarations: restricted-xml");
    rec_free(&r);
    runs(&r, "<!-- x -->" HDR);
    ok(r.nerr == 1 && !strcmp(r.err, "restricted-xml") && r.opened == 0, "comment before the header: restricted-xml");
    rec_free(&r);
    ok(!strcmp(body_error("<message>&ent;</message>"), "not-well-formed"), "undefined entity: not-well-formed");
    ok(!strcmp(body_error("<message><body></message></body>"), "not-well-formed"), "mismatched tags: not-well-formed");
    ok(!strcmp(body_error("<message><body>\xc3\x28</body></message>"), "not-well-formed") &&
       !strcmp(body_error("<message><body>\xed\xa0\x80</body></message>"), "not-well-formed") &&
       !strcmp(body_error("<message><body>\xc0\xbc</body></message>"), "not-well-formed"),
       "invalid UTF-8 (bad sequence, surrogate, overlong '<'): not-well-formed");
    ok(!strcmp(body_error("<message><body>\x01</body></message>"), "not-well-formed"), "C0 control character: not-well-formed");
    ok(!strcmp(body_error("<message a='1' a='2'/>"), "not-well-formed") &&
       !strcmp(body_error("<message xmlns:p='urn:a' xmlns:q='urn:a' p:a='1' q:a='2'/>"), "not-well-formed"),
       "duplicate attributes (also through namespaces): not-well-formed");
    ok(!strcmp(body_error("<p:message/>"), "not-well-formed"), "unbound prefix: not-well-formed");
    ok(!strcmp(body_error("<?xml version='1.0'?><message/>"), "not-well-formed"), "XML declaration after the header: not-well-formed");
}

static void test_encoding(void)
{
    rec_t r;
    runs(&r, "<?xml version='1.0' encoding='ISO-8859-1'?>" HDR);
    ok(r.nerr == 1 && !strcmp(r.err, "unsupported-encoding") && r.opened == 0, "XML declaration naming ISO-8859-1: unsupported-encoding");
    rec_free(&r);
    const char u16[] = "\xfe\xff\0<\0s\0>";
    run(&r, u16, sizeof u16 - 1, 0, NULL);
    int bom = r.nerr == 1 && !strcmp(r.err, "unsupported-encoding") && r.opened == 0;
    rec_free(&r);
    const char u16le[] = "<\0s\0>\0";
    run(&r, u16le, sizeof u16le - 1, 1, NULL);
    ok(bom && r.nerr == 1 && !strcmp(r.err, "unsupported-encoding") && r.opened == 0,
       "UTF-16 (with a BOM, or detected from '<' NUL, even fed bytewise): unsupported-encoding");
    rec_free(&r);
    runs(&r, "\xef\xbb\xbf" HDR "<presence/>");
    ok(r.nerr == 0 && r.opened == 1 && r.nst == 1, "a UTF-8 byte-order mark is accepted");
    rec_free(&r);
}

static void test_smuggling(void)
{
    ok(!strcmp(body_error("<message><stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                          "</stream:error></message>"), "bad-format"),
       "element in the streams namespace inside a stanza: bad-format");
    ok(!strcmp(body_error("<message><body><x:features xmlns:x='http://etherx.jabber.org/streams'/></body></message>"),
               "bad-format"), "streams namespace under any prefix, deeper inside: bad-format");
    ok(!strcmp(body_error("<stream:stream>"), "bad-format"), "a nested stream header: bad-format");
    /* expat >= 2.4.5 (CVE-2022-25236, configure checks it): a namespace URI holding the namespace
     * separator (a space) is a syntax error, so no parsed name is ever split wrongly or unserialisable. */
    ok(!strcmp(body_error("<message><x xmlns='urn:a b'/></message>"), "not-well-formed"),
       "a space inside a default namespace URI: not-well-formed, not a silently dropped stanza");
    ok(!strcmp(body_error("<message xmlns:p='urn:a b'><p:x/></message>"), "not-well-formed"),
       "a space inside a prefixed namespace URI: not-well-formed");
    ok(!strcmp(body_error("<message><x xmlns:p='urn:a b c' p:y='1'/></message>"), "not-well-formed"),
       "a space inside the namespace URI of an attribute: not-well-formed");
    rec_t r;
    runs(&r, HDR "<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>");
    ok(r.nerr == 0 && r.nst == 1 && !strcmp(r.st[0]->name, "error") && !strcmp(r.st[0]->ns, XML_NS_STREAMS),
       "depth-1 stream:error is delivered normally");
    rec_free(&r);
}

/* A stream of HDR + a <message> stanza of exactly `size` bytes. */
static char *stanza_of(size_t size)
{
    const char *pre = "<message><body>", *post = "</body></message>";
    size_t fill = size - strlen(pre) - strlen(post);
    char *s = malloc(strlen(HDR) + size + 1);
    strcpy(s, HDR);
    strcat(s, pre);
    memset(s + strlen(s), 'a', fill);
    strcpy(s + strlen(HDR) + strlen(pre) + fill, post);
    return s;
}

static void test_limits(void)
{
    rec_t r;
    xstream_limits_t lim = {200, 0, 0, 0};
    char *s = stanza_of(200);
    int ret = run(&r, s, strlen(s), 0, &lim);
    int at = ret == 0 && r.nst == 1 && r.nerr == 0;
    rec_free(&r);
    ret = run(&r, s, strlen(s), 1, &lim);
    ok(at && ret == 0 && r.nst == 1 && r.nerr == 0, "a stanza of exactly max_stanza_size passes (at once and bytewise)");
    rec_free(&r);
    free(s);
    s = stanza_of(201);
    ret = run(&r, s, strlen(s), 0, &lim);
    int over = ret == -1 && r.nst == 0 && r.nerr == 1 && !strcmp(r.err, "policy-violation");
    rec_free(&r);
    ret = run(&r, s, strlen(s), 1, &lim);
    ok(over && ret == -1 && r.nst == 0 && r.nerr == 1 && !strcmp(r.err, "policy-violation"),
       "one byte over max_stanza_size: policy-violation (at once and bytewise)");
    rec_free(&r);
    /* Counted while parsing: the error comes once the limit is used up, not at the end tag. */
    memset(&r, 0, sizeof r);
    xstream_t *x = xstream_new(&rec_cb, &r, &lim);
    xstream_feed(x, s, strlen(HDR) + 199);
    int before = r.nerr;
    ret = xstream_feed(x, s + strlen(HDR) + 199, 1);
    ok(before == 0 && ret == -1 && r.nerr == 1 && !strcmp(r.err, "policy-violation"),
       "the size error fires as soon as max bytes of an unfinished stanza are in (before its end tag)");
    ret = xstream_feed(x, "</message>", 10);
    ok(ret == -1 && r.nerr == 1, "after an error feeding is refused and error is not called again");
    xstream_free(x);
    rec_free(&r);
    free(s);

    /* A huge start tag (not yet a stanza for expat) is bounded too. */
    size_t hl = strlen(HDR);
    char *tag = malloc(hl + 100000 + 1);
    strcpy(tag, HDR);
    strcat(tag, "<message a='");
    memset(tag + strlen(tag), 'x', 100000 - 12);
    tag[hl + 100000] = '\0';
    ret = run(&r, tag, strlen(tag), 0, &lim);
    ok(ret == -1 && r.nerr == 1 && !strcmp(r.err, "policy-violation"), "an endless start tag: policy-violation");
    rec_free(&r);
    free(tag);

    xstream_limits_t dl = {0, 3, 0, 0};
    run(&r, HDR "<a><b><c/></b></a>", strlen(HDR) + 18, 0, &dl);
    int d_ok = r.nerr == 0 && r.nst == 1;
    rec_free(&r);
    run(&r, HDR "<a><b><c><d/></c></b></a>", strlen(HDR) + 25, 0, &dl);
    ok(d_ok && r.nerr == 1 && !strcmp(r.err, "policy-violation") && r.nst == 0,
       "max_depth: stanza nesting of exactly max passes, max+1 is policy-violation");
    rec_free(&r);

    xstream_limits_t al = {0, 0, 3, 0};
    const char *a3 = HDR "<a x='1' y='2' z='3'/>", *a4 = HDR "<a x='1' y='2' z='3' w='4'/>",
               *n4 = HDR "<a x='1' y='2' xmlns:p='urn:p' p:z='3'/>";
    run(&r, a3, strlen(a3), 0, &al);
    int a_ok = r.nerr == 0 && r.nst == 1;
    rec_free(&r);
    run(&r, a4, strlen(a4), 0, &al);
    int a_bad = r.nerr == 1 && !strcmp(r.err, "policy-violation");
    rec_free(&r);
    run(&r, n4, strlen(n4), 0, &al);
    ok(a_ok && a_bad && r.nerr == 1 && !strcmp(r.err, "policy-violation"),
       "max_attrs: exactly max passes, one more (or a namespace declaration) is policy-violation");
    rec_free(&r);

    xstream_limits_t hlim = {0, 0, 0, strlen(HDR)};
    run(&r, HDR "<presence/>", strlen(HDR) + 11, 1, &hlim);
    int h_ok = r.opened == 1 && r.nst == 1 && r.nerr == 0;
    rec_free(&r);
    hlim.max_header_size = strlen(HDR) - 1;
    run(&r, HDR, strlen(HDR), 0, &hlim);
    ok(h_ok && r.opened == 0 && r.nerr == 1 && !strcmp(r.err, "policy-violation"),
       "max_header_size: exactly max passes, one byte over is policy-violation");
    rec_free(&r);
    char *endless = malloc(10000);
    memset(endless, ' ', 10000);
    run(&r, endless, 10000, 0, NULL);
    ok(r.nerr == 1 && !strcmp(r.err, "policy-violation"), "no header within 4096 bytes (default): policy-violation");
    rec_free(&r);
    free(endless);
}

static xstream_t *limits_x;
static xstream_limits_t next_limits;
static int set_limits_cb(void *ud, xnode_t *st)
{
    rec_t *r = ud;
    xstream_set_limits(limits_x, &next_limits);
    xnode_free(st);
    r->nst++;
    return 0;
}

static void test_control(void)
{
    /* STARTTLS command injection: nothing after <starttls/> in the same read may be acted on. */
    rec_t r;
    memset(&r, 0, sizeof r);
    r.stop_after = 1;
    xstream_t *x = xstream_new(&rec_cb, &r, NULL);
    const char *in = HDR "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><message to='victim'/>";
    int ret = xstream_feed(x, in, strlen(in));
    int ret2 = xstream_feed(x, "<presence/>", 11);
    ok(ret == -1 && ret2 == -1 && r.nst == 1 && !strcmp(r.st[0]->name, "starttls") && r.nerr == 0,
       "stanza callback returning 1 stops delivery: the stanza after <starttls/> is dropped");
    /* Restart after TLS: a fresh parser; an XML declaration is allowed again. */
    r.stop_after = 0;
    xstream_reset(x);
    const char *again = "<?xml version='1.0'?>" HDR "<iq type='set' id='b'/>";
    ret = xstream_feed(x, again, strlen(again));
    ok(ret == 0 && r.opened == 2 && r.nst == 2 && !strcmp(r.st[1]->name, "iq"), "xstream_reset then a new header works");
    xstream_free(x);
    rec_free(&r);

    /* Limits changed from inside a stanza callback apply to the next stanza, even one that arrived
     * in the same feed (parsing is suspended after each stanza until it has been delivered). */
    xstream_cb_t cb = rec_cb;
    cb.stanza = set_limits_cb;
    xstream_limits_t small = {100, 0, 0, 0};
    memset(&r, 0, sizeof r);
    x = limits_x = xstream_new(&cb, &r, &small);
    next_limits = (xstream_limits_t){1000, 0, 0, 0};
    char *s = stanza_of(500);
    xstream_feed(x, s, strlen(HDR));
    xstream_feed(x, "<presence/>", 11);
    ret = xstream_feed(x, s + strlen(HDR), 500);
    ok(ret == 0 && r.nst == 2 && r.nerr == 0, "xstream_set_limits raises the stanza limit for the following stanzas");
    xstream_free(x);
    free(s);
    memset(&r, 0, sizeof r);
    x = limits_x = xstream_new(&cb, &r, NULL);
    next_limits = (xstream_limits_t){50, 0, 0, 0};
    s = stanza_of(80);
    const char *p1 = "<presence/>";
    char *both = malloc(strlen(s) + 12);
    strcpy(both, HDR);
    strcat(both, p1);
    strcat(both, s + strlen(HDR));
    ret = xstream_feed(x, both, strlen(both));
    ok(ret == -1 && r.nst == 1 && r.nerr == 1 && !strcmp(r.err, "policy-violation"),
       "a limit lowered in a stanza callback applies to the next stanza of the same feed");
    xstream_free(x);
    free(s);
    free(both);
}

/* A long start tag fed a byte at a time must cost linear time (expat alone would re-tokenise the
 * partial tag on every byte). */
static void test_bytewise_cost(void)
{
    xstream_limits_t lim = {300000, 0, 0, 0};
    size_t n = 200000;
    char *s = malloc(strlen(HDR) + n + 32);
    strcpy(s, HDR);
    strcat(s, "<message a='");
    size_t off = strlen(s);
    memset(s + off, 'x', n);
    strcpy(s + off + n, "'/>");
    rec_t r;
    clock_t t0 = clock();
    run(&r, s, strlen(s), 1, &lim);
    double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    ok(r.nst == 1 && r.nerr == 0 && secs < 10.0, "a 200 kB start tag fed bytewise parses in linear time (%.2fs)", secs);
    rec_free(&r);
    free(s);
}

/* A string of n bytes: "\xc3\xa9" (é) repeated, then 'a' if n is odd. The caller frees it. */
static char *long_name(size_t n)
{
    char *s = malloc(n + 1);
    size_t i = 0;
    for (; i + 2 <= n; i += 2) memcpy(s + i, "\xc3\xa9", 2);
    if (i < n) s[i++] = 'a';
    s[i] = '\0';
    return s;
}

/* The stream HDR + "<message><" name " " attr "='v'/></message>": the stanza delivered (caller frees)
 * or NULL, the error condition in cond. */
static xnode_t *parse_named(const char *name, const char *attr, char *cond, size_t condlen)
{
    size_t n = strlen(HDR) + strlen(name) + strlen(attr) + 64;
    char *s = malloc(n);
    snprintf(s, n, "%s<message><%s %s='v'/></message>", HDR, name, attr);
    rec_t r;
    xstream_limits_t lim = {1 << 20, 0, 0, 0};
    run(&r, s, strlen(s), 0, &lim);
    free(s);
    snprintf(cond, condlen, "%s", r.nerr ? r.err : "");
    xnode_t *st = r.nst == 1 ? r.st[0] : NULL;
    if (st) r.nst = 0;
    rec_free(&r);
    return st;
}

static void test_names(void)
{
    char cond[64];
    /* Names are validated once, by the parser: every stanza it delivers can be written. */
    char *n1024 = long_name(XML_MAX_NAME_LEN), *n1025 = long_name(XML_MAX_NAME_LEN + 1);
    xnode_t *st = parse_named(n1024, n1024, cond, sizeof cond);
    char *out = st ? ser(st, NS_C) : NULL;
    ok(st && out, "element and attribute names of XML_MAX_NAME_LEN (1024) bytes parse and are written");
    free(out);
    xnode_free(st);
    st = parse_named(n1025, "a", cond, sizeof cond);
    ok(!st && !strcmp(cond, "policy-violation"),
       "an element name of 1025 bytes: policy-violation at parse time, not a stanza that cannot be written");
    xnode_free(st);
    st = parse_named("x", n1025, cond, sizeof cond);
    ok(!st && !strcmp(cond, "policy-violation"), "an attribute name of 1025 bytes: policy-violation");
    xnode_free(st);
    size_t pl = strlen(n1025) + 64;
    char *prefixed = malloc(pl);
    snprintf(prefixed, pl, "xmlns:p='urn:p' p:%s", n1025);
    st = parse_named("x", prefixed, cond, sizeof cond);
    ok(!st && !strcmp(cond, "policy-violation"), "a namespaced attribute's local name of 1025 bytes: policy-violation");
    xnode_free(st);
    free(prefixed);
    char *doc = malloc(strlen(n1025) + 8);
    sprintf(doc, "<%s/>", n1025);
    st = xnode_parse_one(doc, strlen(doc), NS_C);
    ok(!st, "xnode_parse_one refuses a name of 1025 bytes too");
    xnode_free(st);
    free(doc);

    /* Names made by code are still checked: too long, or not a name (U+00D7 cannot start one). */
    xnode_t *c = xnode_new(n1025, "");
    out = ser(c, NULL);
    ok(!out, "the serialiser refuses an element name over XML_MAX_NAME_LEN made by code");
    free(out);
    xnode_free(c);
    st = parse_named("\xc3\xa9l", "\xc3\xa4t", cond, sizeof cond);
    out = st ? ser(st, NS_C) : NULL;
    ok(out && strstr(out, "<\xc3\xa9l \xc3\xa4t='v'/>"), "parsed non-ASCII names are written");
    free(out);
    if (st) {
        xnode_t *child = xnode_first_elem(st);
        xnode_set_attr(child, "\xc3\x97" "bad", "v");
        out = ser(st, NS_C);
        ok(!out, "an invalid non-ASCII attribute name added by code to a parsed element is refused");
        free(out);
        xnode_set_attr(child, "\xc3\x97" "bad", NULL);
        xnode_set_attr(child, "\xc3\xa4t", "w");
        xnode_t *cp = xnode_copy(st);
        out = ser(cp, NS_C);
        ok(out && strstr(out, "<\xc3\xa9l \xc3\xa4t='w'/>"), "after removing it, the element (and a copy) is written");
        free(out);
        xnode_free(cp);
    }
    xnode_free(st);
    free(n1024);
    free(n1025);
}

int main(void)
{
    test_tree();
    test_serialize();
    test_roundtrip();
    test_header();
    test_stanzas();
    test_restricted();
    test_encoding();
    test_smuggling();
    test_limits();
    test_control();
    test_bytewise_cost();
    test_names();
    return done_testing();
}
