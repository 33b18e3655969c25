/* server/stanza.c: building replies and errors (RFC 6120 §8.3). */
#include "stanza.h"
#include "util.h"
#include <stdlib.h>
#include <string.h>

xnode_t *stanza_reply(const xnode_t *st)
{
    xnode_t *r = xnode_new(st->name, st->ns);
    const char *id = xnode_attr(st, "id"), *from = xnode_attr(st, "from"), *to = xnode_attr(st, "to");
    if (strcmp(st->name, "iq") == 0) xnode_set_attr(r, "type", "result");
    if (id) xnode_set_attr(r, "id", id);
    if (from) xnode_set_attr(r, "to", from);
    if (to) xnode_set_attr(r, "from", to);
    return r;
}

xnode_t *stanza_error(const xnode_t *st, const char *type, const char *condition, const char *text)
{
    const char *t = xnode_attr(st, "type");
    if (t && strcmp(t, "error") == 0) return NULL;      /* never answer an error with an error */
    /* RFC 6120 §8.3.1 lets the error carry the original payload; clients match on it */
    xnode_t *e = xnode_copy(st);
    const char *from = xnode_attr(st, "from"), *to = xnode_attr(st, "to");
    char *f = xstrdup(from), *tt = xstrdup(to);
    xnode_set_attr(e, "from", tt);
    xnode_set_attr(e, "to", f);
    free(f);
    free(tt);
    xnode_set_attr(e, "type", "error");
    xnode_t *err = xnode_add_elem(e, "error", st->ns);
    xnode_set_attr(err, "type", type);
    xnode_add_elem(err, condition, NS_STANZAS);
    if (text) xnode_add_text(xnode_add_elem(err, "text", NS_STANZAS), text);
    return e;
}
