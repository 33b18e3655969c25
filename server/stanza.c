/* server/stanza.c: building replies and errors (RFC 6120 §8.3). */
#include "stanza.h"
#include "util.h"
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

xnode_t *stanza_presence(const char *type, const char *from, const char *to)
{
    xnode_t *p = xnode_new("presence", NS_CLIENT);
    if (type) xnode_set_attr(p, "type", type);
    if (from) xnode_set_attr(p, "from", from);
    if (to) xnode_set_attr(p, "to", to);
    return p;
}

xnode_t *stanza_push_iq(const char *from, const char *to, xnode_t *payload)
{
    xnode_t *iq = xnode_new("iq", NS_CLIENT);
    char id[5 + 16 + 1] = "push-";
    random_hex(id + 5, 8);
    xnode_set_attr(iq, "type", "set");
    xnode_set_attr(iq, "id", id);
    if (from) xnode_set_attr(iq, "from", from);
    xnode_set_attr(iq, "to", to);
    if (payload) xnode_add_child(iq, payload);
    return iq;
}

/* RFC 6120 §8.3.3: each condition and the type its definition (and example) gives it */
static const struct { const char *name, *type; } conditions[STANZA_ERR_COUNT] = {
    [STANZA_ERR_BAD_REQUEST] = {"bad-request", "modify"},
    [STANZA_ERR_CONFLICT] = {"conflict", "cancel"},
    [STANZA_ERR_FEATURE_NOT_IMPLEMENTED] = {"feature-not-implemented", "cancel"},
    [STANZA_ERR_FORBIDDEN] = {"forbidden", "auth"},
    [STANZA_ERR_GONE] = {"gone", "cancel"},
    [STANZA_ERR_INTERNAL_SERVER_ERROR] = {"internal-server-error", "cancel"},
    [STANZA_ERR_ITEM_NOT_FOUND] = {"item-not-found", "cancel"},
    [STANZA_ERR_JID_MALFORMED] = {"jid-malformed", "modify"},
    [STANZA_ERR_NOT_ACCEPTABLE] = {"not-acceptable", "modify"},
    [STANZA_ERR_NOT_ALLOWED] = {"not-allowed", "cancel"},
    [STANZA_ERR_NOT_AUTHORIZED] = {"not-authorized", "auth"},
    [STANZA_ERR_POLICY_VIOLATION] = {"policy-violation", "modify"},
    [STANZA_ERR_RECIPIENT_UNAVAILABLE] = {"recipient-unavailable", "wait"},
    [STANZA_ERR_REDIRECT] = {"redirect", "modify"},
    [STANZA_ERR_REGISTRATION_REQUIRED] = {"registration-required", "auth"},
    [STANZA_ERR_REMOTE_SERVER_NOT_FOUND] = {"remote-server-not-found", "cancel"},
    [STANZA_ERR_REMOTE_SERVER_TIMEOUT] = {"remote-server-timeout", "wait"},
    [STANZA_ERR_RESOURCE_CONSTRAINT] = {"resource-constraint", "wait"},
    [STANZA_ERR_SERVICE_UNAVAILABLE] = {"service-unavailable", "cancel"},
    [STANZA_ERR_SUBSCRIPTION_REQUIRED] = {"subscription-required", "auth"},
    [STANZA_ERR_UNDEFINED_CONDITION] = {"undefined-condition", "modify"},
    [STANZA_ERR_UNEXPECTED_REQUEST] = {"unexpected-request", "wait"},
};

const char *stanza_err_name(stanza_err_t cond)
{
    return (unsigned)cond < STANZA_ERR_COUNT ? conditions[cond].name : NULL;
}

const char *stanza_err_type(stanza_err_t cond)
{
    return (unsigned)cond < STANZA_ERR_COUNT ? conditions[cond].type : NULL;
}

int stanza_err_from_name(const char *name)
{
    for (int i = 0; name && i < STANZA_ERR_COUNT; i++)
        if (strcmp(conditions[i].name, name) == 0) return i;
    return -1;
}

xnode_t *stanza_error_cond(const xnode_t *st, stanza_err_t cond, const char *text)
{
    if ((unsigned)cond >= STANZA_ERR_COUNT) return NULL;
    return stanza_error(st, conditions[cond].type, conditions[cond].name, text);
}

char *xep0082_timestamp(char *buf, size_t size, int64_t unix_time)
{
    time_t t = (time_t)unix_time;
    struct tm tm;
    if (!size) return buf;
    if (!gmtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) buf[0] = '\0';
    return buf;
}
