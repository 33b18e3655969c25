/* server/jid.h: XMPP addresses (RFC 7622 syntax, RFC 6122 stringprep profiles): splitting a JID,
 * preparing its parts (Nodeprep, Resourceprep, IDNA2008 domains), building and comparing them. */
#ifndef CIVITAS_JID_H
#define CIVITAS_JID_H
#include "api.h"

/* Longest prepared localpart, domainpart or resourcepart, in bytes (RFC 7622 §3.2-3.4). The
 * limit applies after preparation, so a longer raw part may still shrink into it. */
#define JID_PART_MAX 1023
/* Longest raw (unprepared) part accepted at all: 4 * JID_PART_MAX, room for every prepared
 * 1023-byte part written with wider characters (fullwidth letters, Kelvin sign, soft hyphens
 * sprinkled in), while keeping the work stringprep does on hostile input bounded. */
#define JID_INPUT_MAX (4 * JID_PART_MAX)

/* A prepared JID. Every string is NUL-terminated UTF-8, owned by the jid and read-only; they all
 * live in the same allocation as the struct, so jid_free() is the only way to release them.
 * Since every part is prepared, two JIDs are the same address exactly when their strings are
 * equal (strcmp), which is what jid_equal() and jid_bare_equal() do. */
typedef struct jid {
    char *node;      /* prepared localpart, or NULL when absent */
    char *domain;    /* prepared domainpart, never NULL: lowercase, U-label (Unicode) form for IDNs, no trailing dot */
    char *resource;  /* prepared resourcepart, or NULL when absent */
    char *bare;      /* "node@domain" or "domain" */
    char *full;      /* "node@domain/resource", or equal text to bare when there is no resource */
} jid_t;

/* Parse and prepare a JID string. The resourcepart is everything after the FIRST '/', the
 * localpart everything before the first '@' of what remains, the domainpart the rest; so
 * "a@b/c@d/e" is node "a", domain "b", resource "c@d/e" (RFC 7622 §3.1).
 * Returns a new jid (free with jid_free), or NULL when str is NULL or the JID is invalid:
 * an empty localpart ("@b"), resourcepart ("b/") or domainpart, a part longer than JID_PART_MAX
 * after preparation (or JID_INPUT_MAX before), invalid UTF-8, characters a profile prohibits,
 * or a domain that is neither an IP literal nor a valid IDNA2008 host name. */
CIVITAS_API_BEGIN
jid_t *jid_new(const char *str);

/* Build a JID from separate parts, preparing each. node and resource may be NULL (absent);
 * domain may not. An empty string is not an absent part: it makes the JID invalid.
 * Returns a new jid, or NULL when domain is NULL or any given part is invalid. */
jid_t *jid_make(const char *node, const char *domain, const char *resource);

/* A new jid equal to j; NULL when j is NULL. */
jid_t *jid_dup(const jid_t *j);

/* A new jid with j's node and domain and no resource; NULL when j is NULL. */
jid_t *jid_bare_of(const jid_t *j);

/* A new jid with j's node and domain and the given resourcepart, prepared (resource binding,
 * RFC 6120 §7). NULL when j is NULL or resource is NULL or invalid. */
jid_t *jid_with_resource(const jid_t *j, const char *resource);

/* Free a jid and all its strings. NULL is a no-op. */
void jid_free(jid_t *j);

/* 1 when a and b are the same full JID (node, domain and resource all equal, case-sensitively
 * on the prepared forms), else 0. A NULL argument compares unequal to everything. */
int jid_equal(const jid_t *a, const jid_t *b);

/* 1 when a and b have the same bare JID (node and domain; resources ignored), else 0.
 * A NULL argument compares unequal to everything. */
int jid_bare_equal(const jid_t *a, const jid_t *b);

/* Prepare one part on its own. Each returns a malloc'd string the caller frees with free(),
 * or NULL when in is NULL, empty, invalid UTF-8, longer than JID_INPUT_MAX, prohibited by the
 * profile, or empty or longer than JID_PART_MAX once prepared. Results are idempotent:
 * preparing a prepared string gives it back unchanged.
 *
 * jid_prep_node: RFC 6122 Nodeprep (NFKC, case folding; prohibits spaces, controls and
 * " & ' / : < > @ among others). Unassigned code points are allowed (stringprep "query"
 * mode), as deployed servers do, since the profile's tables stop at Unicode 3.2. */
char *jid_prep_node(const char *in);

/* jid_prep_domain: one trailing '.' is stripped. An IPv4 dotted quad ("192.0.2.1") or an IPv6
 * address in brackets ("[2001:db8::1]") is returned as written, without further normalisation.
 * Anything else must be a host name: IDNA2008 with UTS #46 mapping (non-transitional, falling
 * back to transitional only for characters non-transitional processing disallows), every label
 * 1..63 octets in A-label form and letters, digits and hyphens only (STD3). The result is the
 * lowercase U-label (Unicode) form, so "MÜNCHEN.de." and "xn--mnchen-3ya.de" both give
 * "münchen.de". An "xn--" label must be the A-label of a valid U-label (RFC 5891 §5.4), so the
 * result always prepares to itself again. */
char *jid_prep_domain(const char *in);

/* jid_prep_resource: RFC 6122 Resourceprep (NFKC, no case folding; ASCII space allowed,
 * controls and non-ASCII spaces prohibited). Unassigned code points are allowed, as for nodes. */
char *jid_prep_resource(const char *in);
CIVITAS_API_END

#endif
