/* server/sasl2.h: XEP-0388 SASL2 on a client stream, with XEP-0386 Bind2 and XEP-0484 FAST inline:
 * the <authentication/> feature, the <authenticate/> request (parsed in sasl2_parse.c, pure and
 * fuzzed), and the <success/> that binds, enables inline features and issues tokens. The exchange
 * itself (mechanisms, back-off) is sasl.c's, shared with RFC 6120's profile. */
#ifndef CIVITAS_SASL2_H
#define CIVITAS_SASL2_H
#include "xml.h"
#include <stddef.h>
#include <stdint.h>

#define NS_SASL2 "urn:xmpp:sasl:2"
#define NS_BIND2 "urn:xmpp:bind:0"
#define NS_FAST "urn:xmpp:fast:0"
#define NS_SASL_CB "urn:xmpp:sasl-cb:0"

#define SASL2_UA_ID_LEN 36          /* a UUID's text form */
#define SASL2_MAX_TAG 64            /* bytes of a Bind2 <tag/> kept in the resource */

/* What a client's <authenticate/> asks for besides the mechanism (XEP-0388 §2.3). */
typedef struct sasl2_req {
    char *mechanism;
    unsigned char *initial;         /* decoded <initial-response/>, NULL when absent */
    size_t initial_len;
    char ua_id[SASL2_UA_ID_LEN + 1]; /* <user-agent id/>, lower case; "" when absent */
    char *software, *device;        /* <user-agent/>'s texts, or NULL */
    int bind;                       /* XEP-0386 <bind/> present */
    char *tag;                      /* its <tag/>, or NULL */
    xnode_t *bind_el;               /* a copy of <bind/>: its other-namespace children are the inline
                                       feature requests ("bind2/enable/<ns>") */
    xnode_t *extra;                 /* copies of <authenticate/>'s children in other namespaces (XEP-0198
                                       <resume/>, ...) under one container: "sasl2/request/<ns>" */
    char *request_token;            /* XEP-0484 <request-token mechanism/>, or NULL */
    int fast;                       /* <fast/> present: the mechanism is used with a token */
    int fast_invalidate;            /* <fast invalidate='true'/> */
    int has_count;                  /* <fast count/> given */
    uint64_t fast_count;
    int fast_used;                  /* fast.c: authenticated with a token ... */
    int64_t fast_expiry;            /* ... that expires then */
} sasl2_req_t;

/* Parse <authenticate xmlns='urn:xmpp:sasl:2'/> into *r (zeroed first). 0, or -1 with *cond the
 * RFC 6120 §6.5 condition to fail with ("invalid-mechanism": no mechanism attribute;
 * "incorrect-encoding": bad base64; "malformed-request": a bad user-agent id, FAST count or tag).
 * Free with sasl2_req_clear (also after -1). */
int sasl2_parse_authenticate(const xnode_t *el, sasl2_req_t *r, const char **cond);
void sasl2_req_clear(sasl2_req_t *r);
/* The base64 content of <initial-response/> or <response/>: surrounding whitespace is ignored,
 * empty content is empty data. 0 (*out malloc'd, NUL-terminated), -1 bad base64. */
int sasl2_payload(const xnode_t *el, unsigned char **out, size_t *len);
/* A HT-* initial response (draft-schmaus-kitten-sasl-ht §3.1): authcid NUL initiator-hashed-token.
 * 0 with *authcid malloc'd and *hash and *hlen pointing into in; -1 malformed. */
int sasl2_ht_parse(const unsigned char *in, size_t len, char **authcid, const unsigned char **hash, size_t *hlen);

/* ---- on a stream (sasl2.c; needs the server) ---- */
typedef struct session session_t;
/* The <authentication/> feature (and Bind2's, FAST's inline parts) into features, when SASL2 can
 * offer a mechanism on s. */
void sasl2_add_features(session_t *s, xnode_t *features);
/* One element of urn:xmpp:sasl:2 from a client that has not authenticated (authenticate,
 * response, abort). el stays the caller's. */
void sasl2_handle(session_t *s, xnode_t *el);
/* sasl.c: the exchange authenticated s (s->user set): bind, enable, issue tokens, write <success/>
 * with the mechanism's final data, then drop the request. */
void sasl2_success(session_t *s, const char *extra, size_t extra_len);
/* Drop the SASL2 request of s, if any (a failure, a legacy <auth/>, the end of the stream). */
void sasl2_reset(session_t *s);

#endif
