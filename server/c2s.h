/* server/c2s.h: client-to-server streams (RFC 6120) over TCP: accepted by listen.c, closed at
 * shutdown. Each stream makes a session (session.h) and hands its stanzas to the router. */
#ifndef CIVITAS_C2S_H
#define CIVITAS_C2S_H
#include "session.h"

void c2s_accept(int fd, const char *peer_ip, c2s_kind_t kind);
void c2s_close_all(void);             /* SIGTERM: </stream:stream> to everyone */

#endif
