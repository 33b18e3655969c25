/* server/c2s.h: client-to-server streams (RFC 6120) over TCP: accepted by listen.c, closed at
 * shutdown. Each stream makes a session (session.h) and hands its stanzas to the router. */
#ifndef CIVITAS_C2S_H
#define CIVITAS_C2S_H
#include "session.h"

void c2s_accept(int fd, const char *peer_ip, c2s_kind_t kind);
void c2s_close_all(void);             /* SIGTERM: </stream:stream> to everyone */

/* WebSocket (RFC 7395, websocket.c): a client stream whose transport t frames each write as one
 * text message. c2s_ws_new: a session over bev (its transport's), or NULL when the limits refuse
 * it (the caller closes). c2s_ws_message: one text message; 0 when taken, 1 when it must wait
 * (SASL back-off or stanza rate: give it again after t->resume). */
#define NS_FRAMING "urn:ietf:params:xml:ns:xmpp-framing"
struct bufferevent;
session_t *c2s_ws_new(const char *peer_ip, const session_transport_t *t, struct bufferevent *bev);
int c2s_ws_message(session_t *s, const char *msg, size_t len);

#endif
