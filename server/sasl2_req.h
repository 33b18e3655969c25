/* server/sasl2_req.h: what a client's XEP-0388 <authenticate/> asks for (with XEP-0386 <bind/> and
 * XEP-0484 <request-token/> and <fast/>), parsed without the server (sasl2_req.c) so that
 * tests/fuzz/fuzz_sasl2 can drive it; the HT-* initial response. Below sasl.c, sasl2.c and fast.c. */
#ifndef CIVITAS_SASL2_REQ_H
#define CIVITAS_SASL2_REQ_H
#include "xml.h"
#include <stddef.h>
#include <stdint.h>

typedef struct session session_t;

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
    /* sasl2.c: writes <success/> when the exchange (sasl.c) authenticated the client */
    void (*on_success)(session_t *s, const char *extra, size_t extra_len);
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

#endif
