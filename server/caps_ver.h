/* server/caps_ver.h: XEP-0115 entity capabilities: the verification string and hash of a disco#info
 * answer (caps_ver.c, pure functions), used by the core's caps cache (caps.c, caps.h). */
#ifndef CIVITAS_CAPS_VER_H
#define CIVITAS_CAPS_VER_H
#include "xml.h"

#define NS_CAPS "http://jabber.org/protocol/caps"
#define NS_DATA_FORMS "jabber:x:data"

/* XEP-0115 §5.1 verification string S of a disco#info <query/> (identities, features, XEP-0128
 * extended forms), malloc'd; NULL when §5.4 says the answer must not be used: two identities
 * with the same category/type/xml:lang/name, a feature twice, two forms with one FORM_TYPE, or a
 * FORM_TYPE with different values. Forms without FORM_TYPE, or whose FORM_TYPE field is not
 * type='hidden', are left out (§5.4 3.5, 3.6). Strings are compared as octets (i;octet). */
char *caps_ver_string(const xnode_t *query);
/* base64 of the hash of s with the IANA hash name algo ("sha-1", "sha-224", "sha-256",
 * "sha-384", "sha-512"), malloc'd; NULL for an algorithm not supported. */
char *caps_ver_hash(const char *algo, const char *s);
/* 1 when query's verification string hashed with algo is ver, 0 otherwise (also for an answer
 * §5.4 rejects or an unsupported algorithm). */
int caps_ver_check(const xnode_t *query, const char *algo, const char *ver);
/* 1 for a hash name caps_ver_hash supports. */
int caps_hash_supported(const char *algo);

#endif
