/* server/account.h: accounts going away: every deletion becomes one "user-deleted" event. */
#ifndef CIVITAS_ACCOUNT_H
#define CIVITAS_ACCOUNT_H
#include "jid.h"
#include "api.h"

/* account_events_start handles the account events (storage.h) left while no server ran, then
 * looks every second whether another process (civitasctl) recorded new ones. */
void account_events_start(void);
void account_events_stop(void);

/* Delete a local account (bare: a JID with a localpart of a served host) and everything stored for
 * it, in one transaction with its account event (storage.h, "Account events"). 0 deleted, 1 no such
 * account, -1 storage error (logged; nothing deleted). The consequences follow at the next loop turn,
 * after the caller returned (so an IQ result can still reach the session): the account's sessions
 * end with <not-authorized/>, "user-deleted" fires, the contacts' subscriptions are cancelled. The
 * same happens when civitasctl deletes: the server notices its account event within a second.
 * Design note: deletions travel as stored events, not as calls, so that one path serves every process
 * and survives a restart; a module API that replaces hooks keeps this as one "user-deleted" event. */
CIVITAS_API int account_delete(const jid_t *bare);
/* Create a local account (bare: node@served-domain) with password, stored as SCRAM-SHA-1 and
 * SCRAM-SHA-256 keys (sasl.iterations). 0 created, 1 it exists, -1 storage error, -2 unusable
 * (an empty password); a taken name is refused before the (costly) keys are derived.
 * account_set_password: the same for a new password; 1 no such account. */
CIVITAS_API int account_create(const jid_t *bare, const char *password);
CIVITAS_API int account_set_password(const jid_t *bare, const char *password);

#endif
