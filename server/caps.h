/* server/caps.h: the core's XEP-0115 capabilities cache: which full JID advertises which 'ver', the
 * verified disco#info of each ver, the queries that fill it and the "caps-known" event (module.h). */
#ifndef CIVITAS_CAPS_H
#define CIVITAS_CAPS_H
#include "xml.h"
#include "jid.h"
#include "strlist.h"
#include "session.h"
#include "api.h"

CIVITAS_API_BEGIN
/* XEP-0115 entity capabilities of a full JID (a local session's or a remote contact's whose
 * presence reached a local account), once verified: the disco#info <query/> (identities, features,
 * forms) or NULL while unknown. Valid until the JID's next presence. */
const xnode_t *caps_info(const jid_t *full);
/* The features of caps_info as a list (NULL while unknown); caps_has_feature: 1 when known and
 * listed, e.g. caps_has_feature(j, "urn:xmpp:avatar:metadata+notify"). */
const strlist_t *caps_features(const jid_t *full);
int caps_has_feature(const jid_t *full, const char *var);
/* The same for a local session. */
int session_has_feature(const session_t *s, const char *var);
CIVITAS_API_END

/* For main.c: start and stop the cache. For router.c: caps_presence: presence from the full JID
 * from (a local session's own, or a contact's arriving for a local account of host) may announce
 * caps. caps_forget: from is gone (session.c calls it through session_on_unbind when a resource
 * ends, after its events). */
int caps_start(void);
void caps_stop(void);
void caps_presence(host_t *host, const jid_t *from, const xnode_t *st, session_t *origin);
void caps_forget(const jid_t *full);

#endif
