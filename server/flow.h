/* server/flow.h: flow control of one stream, shared by c2s and s2s: the XEP-0205 input limits
 * (bytes per second on the socket, stanzas per second) and the size of the output backlog. */
#ifndef CIVITAS_FLOW_H
#define CIVITAS_FLOW_H
#include <stddef.h>

struct bufferevent;
struct event_base;
typedef struct flow flow_t;

/* Input limits of one stream. Bytes: libevent's token bucket on the socket-level bufferevent
 * (reading pauses past the rate, nothing is dropped). Stanzas: a bucket of
 * limits.max_stanzas_per_second tokens, refilled continuously, one second's worth of burst; when it
 * is empty the owner stops parsing (flow_pause) until a token is back, then resume(ud) is called,
 * which re-enables reading and parses what waits in the input buffer. XEP-0205 defines no error
 * for the rate itself; delaying is the "karma" behaviour of §4.7. */
flow_t *flow_new(struct event_base *base, void (*resume)(void *ud), void *ud);
/* Only after the bufferevent it limits was freed: libevent keeps a pointer to the bucket's config.
 * NULL is a no-op. */
void flow_free(flow_t *f);
/* Limit reading to per_second bytes on the socket under bev (bev itself when it is no filter).
 * Replaces an earlier limit. 0, or -1 when libevent refused. */
int flow_set_bytes(flow_t *f, struct bufferevent *bev, long per_second);
/* How many bytes (at most chunk) may be parsed now without completing more depth-1 elements than
 * there are stanza tokens; 0: call flow_pause. */
size_t flow_room(flow_t *f, size_t chunk);
/* One depth-1 element was parsed. */
void flow_take(flow_t *f);
/* No token left: stop reading bev until the next one is due; then resume(ud). */
void flow_pause(flow_t *f, struct bufferevent *bev);

/* Bytes waiting to be written on bev: its own output and, for a TLS filter, the socket's below it
 * (the filter encrypts into the socket's buffer at once, so that is where the backlog of a peer
 * that does not read grows). */
size_t flow_output_queued(struct bufferevent *bev);

#endif
