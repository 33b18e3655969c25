/* server/stanza.h: building replies and stanza errors (RFC 6120 §8.3), and the namespaces of the
 * protocol. Pure tree work: nothing here sends or routes. */
#ifndef CIVITAS_STANZA_H
#define CIVITAS_STANZA_H
#include "xml.h"
#include "api.h"

#define NS_CLIENT "jabber:client"
#define NS_SERVER "jabber:server"
#define NS_STREAMS "http://etherx.jabber.org/streams"
#define NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"
#define NS_STREAM_ERRORS "urn:ietf:params:xml:ns:xmpp-streams"
#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SESSION "urn:ietf:params:xml:ns:xmpp-session"
#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"

CIVITAS_API_BEGIN
/* Stanza helpers. stanza_reply: <iq type='result'> (or a message/presence of the same kind)
 * with id copied and to/from swapped. stanza_error: a new error reply to st (type is
 * cancel|modify|auth|wait; condition an RFC 6120 §8.3.3 name; text may be NULL); returns NULL
 * when st is itself an error (errors are never answered with errors). */
xnode_t *stanza_reply(const xnode_t *st);
xnode_t *stanza_error(const xnode_t *st, const char *type, const char *condition, const char *text);
CIVITAS_API_END

#endif
