/* server/websocket.h: XMPP over WebSocket (RFC 7395). The opening handshake (RFC 6455 §4.2) of a
 * request on the HTTP server (http.h) and, after it, the WebSocket framing (Debian's libwslay)
 * under the client stream of c2s.c: a WebSocket session is a c2s session whose transport sends
 * each write as one text message and whose stream writes <open/> and <close/> (RFC 7395 §3.3);
 * SASL, limits, modules and stanzas are those of TCP streams. mod_websocket registers the paths
 * (/xmpp-websocket, host-meta) and the Origin policy. */
#ifndef CIVITAS_WEBSOCKET_H
#define CIVITAS_WEBSOCKET_H
#include "api.h"
#include <stddef.h>
#include <stdint.h>

typedef struct http_request http_request_t;

CIVITAS_API_BEGIN
/* Answer r: 101 with Sec-WebSocket-Protocol: xmpp and the connection becomes a client stream, or
 * an error: 405 (not GET), 426 (Sec-WebSocket-Version other than 13), 400 (no WebSocket upgrade,
 * a bad key, or a Sec-WebSocket-Protocol list without "xmpp", RFC 7395 §3.1), 403 (plain HTTP
 * from an address that is neither loopback nor a trusted proxy saying https: XMPP needs TLS). */
void websocket_handshake(http_request_t *r);
/* Keepalive of WebSocket sessions opened from now on (mod_websocket's websocket.ping_interval and
 * ping_timeout, seconds): after interval seconds without data from the client a Ping frame goes
 * out, and when nothing (its Pong or anything else) came timeout seconds later the connection is
 * dropped (a resumable session hibernates). interval 0: no pings (the default). */
void websocket_set_keepalive(long interval, long timeout);
CIVITAS_API_END

/* The Sec-WebSocket-Accept value of key (RFC 6455 §4.2.2): 28 characters and a NUL in out. */
void websocket_accept_key(const char *key, char out[29]);
/* The fuzz target's entry (tests/fuzz/fuzz_websocket.c): data as the bytes a client sent after
 * the handshake, through the framing into a client stream without a socket. */
void websocket_fuzz_input(const uint8_t *data, size_t len);

#endif
