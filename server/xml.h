/* server/xml.h: the XML stanza tree (xnode), its serialiser, and the streaming XMPP parser (xstream)
 * that turns the bytes of an XML stream into stanzas under RFC 6120 §11's restrictions. */
#ifndef CIVITAS_XML_H
#define CIVITAS_XML_H
#include "api.h"
#include <stddef.h>

/* Namespaces the parser itself must know. */
#define XML_NS_XML "http://www.w3.org/XML/1998/namespace"
#define XML_NS_STREAMS "http://etherx.jabber.org/streams"
/* The attribute name xnode uses for xml:lang. */
#define XML_ATTR_LANG XML_NS_XML " lang"

/* ---------------------------------------------------------------------------------------------
 * The tree. An element has a local name and a namespace URI; prefixes are not kept (the
 * serialiser writes unprefixed elements with xmlns='…'). A text node holds unescaped UTF-8.
 * Every node is malloc'd; a node owns its children, names, attributes and text.
 * Allocation failure aborts the process (as util.h's xmalloc does), so the functions below that
 * allocate never return NULL for that reason.
 */
typedef struct xnode xnode_t;
struct xnode {
    char *name;            /* local name; NULL for a text node */
    char *ns;              /* namespace URI of the element (never NULL for elements; "" if none); NULL for text */
    char **attrs;          /* NULL or NULL-terminated name,value,name,value...; a namespaced attribute's name is
                              "URI localname" (space separated, as expat reports it), e.g. XML_ATTR_LANG */
    char *text; size_t text_len;  /* text nodes only (unescaped UTF-8, NUL-terminated as well) */
    xnode_t *parent, *children, *last_child, *next;
    /* 1: name and attribute names are known NCNames of at most XML_MAX_NAME_LEN bytes (the parser
     * built the element; copies keep it; xnode_set_attr clears it when it adds a name it cannot
     * vouch for cheaply), so the serialiser does not check them again. Code changing name or attrs
     * directly must clear it. */
    unsigned names_valid : 1;
};

/* The longest element or attribute local name, in bytes: the parser refuses a longer one
 * (<policy-violation/>), the serialiser refuses to write one. */
#define XML_MAX_NAME_LEN 1024

/* A new unlinked element. name must not be NULL; ns NULL is taken as "" (no namespace). */
CIVITAS_API_BEGIN
xnode_t *xnode_new(const char *name, const char *ns);
/* A new unlinked text node holding a copy of text[0..len). */
xnode_t *xnode_new_text(const char *text, size_t len);
/* Free n and its whole subtree (iteratively: no recursion however deep the tree). If n has a
 * parent it is unlinked first, so freeing a child inside a tree is safe. NULL is a no-op. */
void xnode_free(xnode_t *n);
/* Append child as the last child of the element parent and return child. parent takes ownership.
 * A child that still has a parent is unlinked from it first. child must not be an ancestor of parent. */
xnode_t *xnode_add_child(xnode_t *parent, xnode_t *child);
/* Append a new element to parent and return it. ns NULL = the parent's namespace ("" if parent is
 * NULL). parent NULL gives an unlinked element. */
xnode_t *xnode_add_elem(xnode_t *parent, const char *name, const char *ns);
/* Append a new text node holding a copy of the NUL-terminated text and return it. Adjacent text
 * nodes are allowed; they mean the concatenation of their texts. */
xnode_t *xnode_add_text(xnode_t *parent, const char *text);
/* Remove n from its parent's children (no-op without parent). The caller then owns n. */
void xnode_unlink(xnode_t *n);
/* Value of attribute name (for a namespaced one "URI local"), or NULL if absent. NULL n is allowed. */
const char *xnode_attr(const xnode_t *n, const char *name);
/* Set (copying name and value) or replace an attribute; value NULL removes it. "xmlns" and
 * "xmlns:…" are not attributes in this model (use the element's ns): the serialiser refuses them. */
void xnode_set_attr(xnode_t *n, const char *name, const char *value);
/* First child element of n with this local name and namespace; name or ns NULL matches any.
 * NULL if none or n is NULL. */
xnode_t *xnode_child(const xnode_t *n, const char *name, const char *ns);
/* First element child of n, or NULL. */
xnode_t *xnode_first_elem(const xnode_t *n);
/* Next element sibling of n, or NULL. */
xnode_t *xnode_next_elem(const xnode_t *n);
/* malloc'd concatenation of n's direct text children ("" if none). The caller frees it. */
char *xnode_text(const xnode_t *n);
/* Deep copy of n (iterative), unlinked; the caller owns it. NULL gives NULL. */
xnode_t *xnode_copy(const xnode_t *n);
/* 1 if a and b mean the same XML: equal local names and namespaces, the same attribute set (order
 * does not matter) and equal children, where adjacent text nodes count as their concatenation and
 * empty text nodes as absent. 0 otherwise. Two NULLs are equal. */
int xnode_equal(const xnode_t *a, const xnode_t *b);

/* Serialise n (and its subtree; n's own parent is ignored).
 * default_ns is the namespace that is the default on the enclosing stream ("jabber:client" or
 * "jabber:server", or NULL when there is none, e.g. storage): an element whose ns differs from its
 * parent's (or, for n, from default_ns, "" if NULL) gets xmlns='…'. When default_ns is not NULL and
 * n's ns is "jabber:client" or "jabber:server", n is written as if in default_ns, and so are its
 * descendants that inherit n's namespace (stanzas move between c2s and s2s streams unchanged);
 * descendants that declare a namespace of their own (e.g. a forwarded <message
 * xmlns='jabber:client'/>) keep it. Attributes in XML_NS_XML are written as xml:local; other
 * namespaced attributes get generated prefixes declared on their element (xmlns:a0='URI' a0:local='v').
 * Attribute values use ' quotes and escape & < > ' " and TAB, LF, CR (as character references, so
 * that attribute-value normalisation cannot change them); text escapes & < > and CR.
 * The output parses back (xnode_parse_one, or a stream with the same default namespace) into a tree
 * xnode_equal to n. Returns a malloc'd NUL-terminated string and its length in *len (len may be
 * NULL). Returns NULL (and *len = 0) if the tree cannot be written as well-formed XML: a name that
 * is not an XML NCName, text or a value that is not valid UTF-8 or holds a character XML forbids
 * (e.g. NUL or other C0 controls except TAB/LF/CR), an "xmlns" attribute, a namespace containing a
 * space, a reserved namespace used where XML forbids it. Never NULL for trees the parser built. */
char *xnode_serialize(const xnode_t *n, const char *default_ns, size_t *len);

/* Escape s for an attribute value in ' or " quotes (e.g. the stream header's to/from/id), with the
 * serialiser's rules. Returns a malloc'd string (length in *len if len is not NULL), or NULL if s is
 * NULL or not valid UTF-8 XML text. */
char *xml_escape_attr(const char *s, size_t *len);

/* Parse a document of exactly one element (surrounding whitespace allowed) with the same
 * restrictions as the stream parser (restricted XML, UTF-8 only, no XML declaration, no elements
 * in XML_NS_STREAMS named "stream" and none below the top element). Unprefixed elements without
 * xmlns are in default_ns ("" if NULL). Nesting is limited to XNODE_PARSE_MAX_DEPTH levels and
 * XNODE_PARSE_MAX_ATTRS attributes per element; size only by len. Stored XML must go through this
 * too. Returns the element (caller owns it) or NULL on any error. */
#define XNODE_PARSE_MAX_DEPTH 256
#define XNODE_PARSE_MAX_ATTRS 256
xnode_t *xnode_parse_one(const char *xml, size_t len, const char *default_ns);
CIVITAS_API_END

/* ---------------------------------------------------------------------------------------------
 * The stream parser: one per direction of one XML stream. It runs expat with namespace processing
 * and enforces RFC 6120 §11: UTF-8 only; no DTD, comments, processing instructions or entity
 * declarations; limits on stanza size, nesting and attributes, counted while parsing.
 */
typedef struct xstream xstream_t;

/* 0 in a field means its default. */
#define XSTREAM_DEFAULT_MAX_STANZA_SIZE 65536
#define XSTREAM_DEFAULT_MAX_DEPTH 64
#define XSTREAM_DEFAULT_MAX_ATTRS 64
#define XSTREAM_DEFAULT_MAX_HEADER_SIZE 4096
typedef struct xstream_limits {
    /* Bytes of one depth-1 element, from the '<' of its start tag to the '>' of its end tag,
     * counted while parsing: no more than this many bytes of one stanza are ever buffered. A
     * stanza of exactly this size passes. Whitespace between stanzas does not count. */
    size_t max_stanza_size;
    /* Element nesting inside a stanza: the stanza element is level 1, its children level 2, ... */
    size_t max_depth;
    /* Attributes per element inside a stanza, namespace declarations included. */
    size_t max_attrs;
    /* Bytes from the start (or restart) of the stream to the '>' of the stream header inclusive
     * (an XML declaration and leading whitespace count). */
    size_t max_header_size;
} xstream_limits_t;

typedef struct xstream_cb {
    /* The stream header arrived. ns_stream is the root element's namespace ("" if none), name its
     * local name, content_ns the default namespace declared on it (NULL if none), attrs as in xnode
     * (NULL-terminated pairs, unprefixed names; xml:lang as XML_ATTR_LANG). The parser does not
     * judge the header: check it (xstream_check_header) and the content namespace here.
     * All pointers are valid during the call only. Return 0 to go on, -1 to stop parsing. */
    int (*stream_open)(void *ud, const char *ns_stream, const char *name, const char *content_ns,
                       const char **attrs);
    /* One complete depth-1 element; ownership passes to the callee. Elements in XML_NS_STREAMS at
     * depth 1 (stream:features, stream:error) arrive here too. Return 0 to go on, 1 to stop
     * delivering: the rest of this feed is discarded unparsed (the caller will reset or close the
     * stream, e.g. after <starttls/>: bytes sent after it must not be acted on), -1 on error, stop. */
    int (*stanza)(void *ud, xnode_t *stanza);
    /* </stream:stream> (the root's end tag) was seen. Later bytes are ignored. */
    void (*stream_close)(void *ud);
    /* A stream error; condition is the RFC 6120 §4.9.3 element name, one of: not-well-formed |
     * restricted-xml | policy-violation | unsupported-encoding | bad-format. text is a short
     * English explanation without stanza content (for logs, or the <text/> of the stream error).
     * Called at most once; after it, feeding is refused. */
    void (*error)(void *ud, const char *condition, const char *text);
} xstream_cb_t;

/* A new stream parser expecting a stream header. cb is copied; any callback may be NULL (stanzas
 * are then freed). limits NULL means all defaults. Never NULL (allocation failure aborts). */
xstream_t *xstream_new(const xstream_cb_t *cb, void *ud, const xstream_limits_t *limits);
/* Replace the limits (NULL = defaults), e.g. raise them after authentication. May be called from a
 * stanza callback; it applies from the next stanza on. */
void xstream_set_limits(xstream_t *x, const xstream_limits_t *limits);
/* Feed bytes read from the peer (any split: a stanza cut into 1-byte feeds parses the same).
 * Callbacks are made from here, in stream order, but never from inside expat: events are queued in
 * expat's handlers and delivered after XML_Parse returns (parsing is suspended after each header
 * and stanza, so a stanza callback that stops prevents the following bytes from being parsed).
 * Callbacks must NOT call xstream_reset or xstream_free on x: they record what to do (return 1 or
 * -1 to stop delivery) and the caller acts after xstream_feed returns.
 * Returns 0 when all bytes were consumed (or ignored after the stream closed); -1 after an error
 * (cb->error was called) or when a callback asked to stop; from then on feeding returns -1 without
 * doing anything until xstream_reset. */
int xstream_feed(xstream_t *x, const char *buf, size_t len);
/* Stream restart (after STARTTLS or SASL success): a fresh expat parser that expects a new header
 * (an XML declaration is allowed again). Drops buffered bytes and any partial stanza; keeps the
 * callbacks and limits. Also clears a stopped or failed state. */
void xstream_reset(xstream_t *x);
/* Free the parser and everything it holds. NULL is a no-op. */
void xstream_free(xstream_t *x);
/* 1 when every byte fed was parsed and no element below the stream root is open (between
 * stanzas): a WebSocket message held whole elements only (RFC 7395 §3.3.3). */
int xstream_idle(const xstream_t *x);
/* For stream_open: NULL if (ns_stream, name) is the RFC 6120 stream header element
 * {http://etherx.jabber.org/streams}stream, else the stream error condition to close with
 * ("invalid-namespace", RFC 6120 §4.9.3.10, as a wrong root is a wrong stream namespace). */
const char *xstream_check_header(const char *ns_stream, const char *name);

#endif
