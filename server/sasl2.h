/* server/sasl2.h: XEP-0388 SASL2 on a client stream, with XEP-0386 Bind2 and XEP-0484 FAST inline:
 * the <authentication/> feature, the <authenticate/> request (sasl2_req.h), and the <success/> that
 * binds, enables inline features and issues tokens. The exchange itself (mechanisms, back-off) is
 * sasl.c's, shared with RFC 6120's profile. */
#ifndef CIVITAS_SASL2_H
#define CIVITAS_SASL2_H
#include "sasl2_req.h"

/* ---- on a stream (sasl2.c; needs the server) ---- */
/* The <authentication/> feature (and Bind2's, FAST's inline parts) into features, when SASL2 can
 * offer a mechanism on s. */
void sasl2_add_features(session_t *s, xnode_t *features);
/* One element of urn:xmpp:sasl:2 from a client that has not authenticated (authenticate,
 * response, abort). el stays the caller's. */
void sasl2_handle(session_t *s, xnode_t *el);
/* When s authenticated in sasl2_handle, <success/> is out; the caller (c2s.c) then applies the
 * authenticated stream's limits, sends its features (§2.6.1: no restart) and, when Bind2 bound s,
 * fires "session-bound". */

#endif
