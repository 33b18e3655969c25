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

#endif
