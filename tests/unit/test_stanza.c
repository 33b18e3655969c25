/* tests/unit/test_stanza.c: TAP tests for server/stanza.c: the typed stanza errors (RFC 6120
 * §8.3.3, every condition with its name and default type) and XEP-0082 timestamps. */
#include "stanza.h"
#include "util.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

static xnode_t *parse(const char *xml) { return xnode_parse_one(xml, strlen(xml), NS_CLIENT); }

/* RFC 6120 §8.3.3.1 .. §8.3.3.22, in the RFC's order, with the type of each definition's example */
static const char *const rfc[][2] = {
    {"bad-request", "modify"}, {"conflict", "cancel"}, {"feature-not-implemented", "cancel"},
    {"forbidden", "auth"}, {"gone", "cancel"}, {"internal-server-error", "cancel"},
    {"item-not-found", "cancel"}, {"jid-malformed", "modify"}, {"not-acceptable", "modify"},
    {"not-allowed", "cancel"}, {"not-authorized", "auth"}, {"policy-violation", "modify"},
    {"recipient-unavailable", "wait"}, {"redirect", "modify"}, {"registration-required", "auth"},
    {"remote-server-not-found", "cancel"}, {"remote-server-timeout", "wait"},
    {"resource-constraint", "wait"}, {"service-unavailable", "cancel"},
    {"subscription-required", "auth"}, {"undefined-condition", "modify"}, {"unexpected-request", "wait"},
};

static void test_table(void)
{
    size_t n = sizeof rfc / sizeof rfc[0];
    ok(n == STANZA_ERR_COUNT, "RFC 6120 §8.3.3: 22 conditions, and the enum has as many");
    int all = 1;
    for (size_t i = 0; i < n; i++) {
        int c = stanza_err_from_name(rfc[i][0]);
        if (c < 0 || strcmp(stanza_err_name(c), rfc[i][0]) != 0 || strcmp(stanza_err_type(c), rfc[i][1]) != 0) {
            printf("# %s: %d %s\n", rfc[i][0], c, c < 0 ? "-" : stanza_err_type(c));
            all = 0;
        }
    }
    ok(all, "every condition has its RFC name and default type, and is found by name");
    ok(stanza_err_from_name("no-such-condition") == -1 && stanza_err_from_name(NULL) == -1
       && stanza_err_name(STANZA_ERR_COUNT) == NULL && stanza_err_type((stanza_err_t)-1) == NULL,
       "unknown names and values out of range are refused");
}

static void test_error_cond(void)
{
    xnode_t *iq = parse("<iq type='set' id='i1' from='a@x/r' to='x'><q xmlns='urn:t'/></iq>");
    xnode_t *e = stanza_error_cond(iq, STANZA_ERR_FORBIDDEN, "no");
    xnode_t *err = e ? xnode_child(e, "error", NS_CLIENT) : NULL;
    ok(e && strcmp(xnode_attr(e, "type"), "error") == 0 && strcmp(xnode_attr(e, "to"), "a@x/r") == 0
       && strcmp(xnode_attr(e, "from"), "x") == 0 && strcmp(xnode_attr(e, "id"), "i1") == 0,
       "stanza_error_cond: an error reply, addresses swapped, id kept");
    ok(err && strcmp(xnode_attr(err, "type"), "auth") == 0 && xnode_child(err, "forbidden", NS_STANZAS)
       && xnode_child(err, "text", NS_STANZAS), "stanza_error_cond: <forbidden/> of type auth, with the text");
    xnode_t *s = stanza_error(iq, "auth", "forbidden", "no");
    size_t l1, l2;
    char *a = xnode_serialize(e, NS_CLIENT, &l1), *b = xnode_serialize(s, NS_CLIENT, &l2);
    ok(a && b && l1 == l2 && memcmp(a, b, l1) == 0, "the string API builds the same error");
    free(a);
    free(b);
    xnode_free(s);
    ok(stanza_error_cond(e, STANZA_ERR_BAD_REQUEST, NULL) == NULL, "an error is never answered with an error");
    ok(stanza_error_cond(iq, STANZA_ERR_COUNT, NULL) == NULL, "a value out of range builds nothing");
    xnode_free(e);
    xnode_free(iq);
}

static void test_timestamp(void)
{
    char buf[XEP0082_SIZE];
    ok(strcmp(xep0082_timestamp(buf, sizeof buf, 0), "1970-01-01T00:00:00Z") == 0, "XEP-0082: the epoch");
    ok(strcmp(xep0082_timestamp(buf, sizeof buf, 1700000000), "2023-11-14T22:13:20Z") == 0,
       "XEP-0082: UTC with a Z, whole seconds");
    char small[8] = "x";
    ok(xep0082_timestamp(small, sizeof small, 0)[0] == '\0', "a buffer too small gives an empty string");
}

static void test_builders(void)
{
    xnode_t *p = stanza_presence("unavailable", "a@x/r", "b@y");
    ok(strcmp(p->name, "presence") == 0 && strcmp(p->ns, NS_CLIENT) == 0
       && strcmp(xnode_attr(p, "type"), "unavailable") == 0 && strcmp(xnode_attr(p, "from"), "a@x/r") == 0
       && strcmp(xnode_attr(p, "to"), "b@y") == 0, "stanza_presence: type, from, to");
    xnode_free(p);
    p = stanza_presence(NULL, NULL, "b@y");
    ok(!xnode_attr(p, "type") && !xnode_attr(p, "from"), "stanza_presence: NULL leaves the attribute out (available)");
    xnode_free(p);
    xnode_t *a = stanza_push_iq("a@x", "a@x/r", xnode_new("query", "jabber:iq:roster"));
    xnode_t *b = stanza_push_iq(NULL, "a@x/r", NULL);
    const char *ia = xnode_attr(a, "id"), *ib = xnode_attr(b, "id");
    ok(strcmp(xnode_attr(a, "type"), "set") == 0 && strcmp(xnode_attr(a, "from"), "a@x") == 0
       && xnode_child(a, "query", "jabber:iq:roster") && !xnode_attr(b, "from") && !xnode_first_elem(b),
       "stanza_push_iq: an IQ set carrying the payload, 'from' only when given");
    ok(ia && ib && strlen(ia) == 21 && strncmp(ia, "push-", 5) == 0 && strcmp(ia, ib) != 0,
       "stanza_push_iq: a random id per push");
    xnode_free(a);
    xnode_free(b);
}

int main(void)
{
    test_table();
    test_error_cond();
    test_timestamp();
    test_builders();
    return done_testing();
}
