/* server/c2s.h: client-to-server streams (RFC 6120) over TCP: accepted by listen.c, closed at
 * shutdown. Each stream makes a session (session.h) and hands its stanzas to the router. */
#ifndef CIVITAS_C2S_H
#define CIVITAS_C2S_H
#include "session.h"

void c2s_accept(int fd, const char *peer_ip, c2s_kind_t kind);
void c2s_close_all(void);             /* SIGTERM: </stream:stream> to everyone */
/* For SASL2 (sasl2.c). c2s_bind: bind resource (already prepped) to the authenticated s, as RFC 6120
 * resource binding does, without an answer and without "session-bound" (the caller fires it once its
 * answer is out); 0, or -1 when it makes no valid JID. c2s_authenticated_inline: s authenticated
 * without a stream restart (XEP-0388 §2.6.1): the authenticated limits, then its stream features. */
int c2s_bind(session_t *s, const char *resource);
void c2s_authenticated_inline(session_t *s);

#endif
