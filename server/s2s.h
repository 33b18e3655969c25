/* server/s2s.h: federation (RFC 6120 server-to-server streams, XEP-0220 dialback, XEP-0178 SASL
 * EXTERNAL, XEP-0368 direct TLS): the interface to the rest of the core (s2s.c). Below it: s2s_in.h
 * (incoming streams), s2s_out.h (outgoing streams), s2s_conn.h (the connection both use), dialback.h. */
#ifndef CIVITAS_S2S_H
#define CIVITAS_S2S_H
#include "s2s_conn.h"   /* s2s_local_t */
#include "xml.h"

/* ---------------------------------------------------------------------------------------------
 * For the core (main.c, listen.c, router.c).
 *
 * Every federation decision is logged in one line with the subsystem "s2s" and no stanza content:
 *   "outgoing A -> B established (SASL EXTERNAL|dialback; peer certificate verified|not verified: why)"
 *   "outgoing A -> B failed: why"                  "outgoing A -> B refused: why" (policy)
 *   "incoming B -> A authenticated (SASL EXTERNAL|dialback|certificate) from IP"
 *   "incoming from IP refused: why"               "incoming B -> A refused: why"
 */

/* Start federation: the dialback secret and the resolver. 0, or -1 after logging why. */
int s2s_start(const s2s_local_t *local);
/* Only the core's entries, without starting federation (the module fuzz target). */
void s2s_set_local(const s2s_local_t *local);
/* After the event loop ended: free every stream, queue and lookup (queued stanzas are dropped). */
void s2s_stop(void);
/* SIGTERM: close every stream (incoming with <system-shutdown/>, outgoing with </stream:stream>),
 * drop queued stanzas, cancel lookups. Streams then go away on their own (s2s_stream_count). */
void s2s_close_all(void);
/* Open s2s connections (shutdown waits until this is 0). */
size_t s2s_stream_count(void);
/* A connection accepted on listen.server (direct_tls 0) or listen.server_tls (1). Takes fd. */
void s2s_accept(int fd, const char *peer_ip, int direct_tls);
/* A stanza from a local entity to a domain we do not serve. Takes ownership. It goes out on the
 * one stream for (sender's domain, recipient's domain), queued while that stream is being set up;
 * when it cannot be delivered it is bounced to the sender (never for errors): policy-violation
 * (federation.mode), remote-server-not-found (DNS, connection, TLS or authentication failure),
 * remote-server-timeout (the stream was not up within the time limit), resource-constraint (the
 * queue of the stream being set up is full: limits.max_s2s_queue_bytes or 1000 stanzas). Stanzas whose 'from' is
 * not one of our domains are dropped. */
void s2s_route(xnode_t *st);


#endif
