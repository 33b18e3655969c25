/* server/sasl.h: SASL on a client stream (RFC 6120 §6): what is offered, the exchange, and the
 * back-off of repeated failures per address (forgiven per account by its success). */
#ifndef CIVITAS_SASL_H
#define CIVITAS_SASL_H
#include "session.h"

/* The <mechanisms/> offered on s (TLS first; -PLUS only with channel binding) into features. */
void sasl_add_mechanisms(session_t *s, xnode_t *features);
/* XEP-0440: the channel-binding types that work on s, when a -PLUS mechanism is offered. */
void sasl_add_channel_bindings(session_t *s, xnode_t *features);
int sasl_plus_offered(session_t *s);
/* One element of the urn:ietf:params:xml:ns:xmpp-sasl namespace (auth, response, abort). On
 * success s->authenticated and s->user are set and <success/> is out; the caller restarts the
 * stream. A failure's answer may be held back (s->delayed, reading stopped): s->delay_ev (the
 * caller's event) is armed and sends it. el stays the caller's. */
void sasl_handle(session_t *s, xnode_t *el);

/* ---- shared with SASL2 (sasl2.c): one exchange, one back-off, whichever profile carries it.
 * The profile is XEP-0388's while s->sasl2 is set (challenges and <failure/> are then written in
 * urn:xmpp:sasl:2, <success/> by s->sasl2->on_success), else RFC 6120's. */
/* Drop the SASL2 request of s, if any (a failure, a legacy <auth/>, the end of the stream). */
void sasl_drop_sasl2(session_t *s);
int sasl_mech_offered(session_t *s, const char *mech);
const char *sasl_mechanism_at(size_t i);      /* every known mechanism, then NULL */
/* XEP-0474: the string whose hash the SCRAM server-first carries ("h="); malloc'd. */
char *sasl_ssdp_string(session_t *s);
/* End the exchange in progress, if any (no answer, nothing counted). */
void sasl_reset(session_t *s);
/* Start mechanism mech with the decoded initial response (len 0: none, ask for it). */
void sasl_begin(session_t *s, const char *mech, const unsigned char *in, size_t len);
/* The client's decoded response to a challenge. */
void sasl_respond(session_t *s, const unsigned char *in, size_t len);
/* A failure of an attempt for account user (NULL: none named): counted in the back-off, answered
 * with condition (maybe held back, as sasl_handle says). */
void sasl_fail_as(session_t *s, const char *user, const char *condition);
/* A mechanism authenticated user (authzid: what the client asked to act as, or NULL): the checks
 * and the accounting of every success, then <success/> with extra (the mechanism's final data). */
void sasl_success(session_t *s, const char *user, const char *authzid, const char *extra, size_t extra_len);

#endif
