/* server/s2s.h: federation (RFC 6120 server-to-server streams, XEP-0220 dialback, XEP-0178 SASL
 * EXTERNAL, XEP-0368 direct TLS): the interface to the rest of the core and between the s2s files. */
#ifndef CIVITAS_S2S_H
#define CIVITAS_S2S_H
#include "server.h"
#include "xml.h"
#include "jid.h"
#include "host.h"
#include "component.h"
#include "stanza.h"
#include <stdint.h>

#define NS_DIALBACK "jabber:server:dialback"
#define NS_DIALBACK_FEATURE "urn:xmpp:features:dialback"

/* ---------------------------------------------------------------------------------------------
 * For the core (main.c, listen.c, router.c).
 *
 * Every federation decision is logged in one line with the subsystem "s2s" and no stanza content:
 *   "outgoing A -> B established (SASL EXTERNAL|dialback; peer certificate verified|not verified: why)"
 *   "outgoing A -> B failed: why"                  "outgoing A -> B refused: why" (policy)
 *   "incoming B -> A authenticated (SASL EXTERNAL|dialback|certificate) from IP"
 *   "incoming from IP refused: why"               "incoming B -> A refused: why"
 */

/* What federation hands to the core: stanzas received from a peer, already checked by s2s_in
 * (its 'from' domain is authenticated on the stream, its 'to' is a domain we serve, its namespace
 * is jabber:client as for local stanzas), and bounces of stanzas that could not be delivered.
 * main.c passes the router's functions (router.h): federation sits below the router and never
 * calls up into it by name. Both take ownership. */
typedef struct s2s_local {
    void (*from_remote)(xnode_t *st, const char *authenticated_domain);
    void (*route)(xnode_t *st);
} s2s_local_t;
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


/* ---------------------------------------------------------------------------------------------
 * Between s2s.c, s2s_in.c, s2s_out.c and dialback.c.
 *
 * s2s_conn_t: one TCP connection carrying an XML stream in either direction (s2s.c): bufferevent
 * I/O as in c2s.c (deferred callbacks, freed at a safe point), STARTTLS/direct TLS, the parser,
 * stream errors before closing. Its owner (an incoming stream or an outgoing pair) gets events
 * through s2s_conn_cb_t and is told by `gone` when the connection is being freed. */
typedef struct s2s_conn s2s_conn_t;

typedef struct s2s_conn_cb {
    /* The peer's stream header (see xstream_cb_t.stream_open). 0 go on, -1 stop (after closing). */
    int (*stream_open)(s2s_conn_t *c, const char *ns_stream, const char *name, const char *content_ns,
                       const char **attrs);
    /* One depth-1 element; the callee owns it. 0 go on, 1 stop this feed (restart, TLS, closing). */
    int (*stanza)(s2s_conn_t *c, xnode_t *el);
    void (*tcp_up)(s2s_conn_t *c);      /* outgoing: the TCP connection is established */
    void (*tls_up)(s2s_conn_t *c);      /* the TLS handshake finished (outgoing only) */
    /* The connection is being freed (from the loop, a safe point: the owner may start a new one).
     * c->why says why in a few words. After this c is gone. */
    void (*gone)(s2s_conn_t *c);
} s2s_conn_cb_t;

struct s2s_conn {
    s2s_conn_t *next, *prev;        /* every connection, for shutdown */
    const s2s_conn_cb_t *cb;
    void *owner;
    struct bufferevent *bev;        /* socket, or the TLS filter over it */
    struct ssl_st *ssl;             /* owned by bev once TLS started */
    tls_t *tls;                     /* reference held while ssl exists */
    xstream_t *xs;
    struct flow *flow;              /* XEP-0205 input limits (limits.*), as for client streams */
    unsigned outgoing : 1;
    unsigned tls_active : 1;        /* TLS established or under way */
    unsigned tls_handshaking : 1;   /* outgoing: waiting for the handshake's end */
    unsigned header_sent : 1;       /* our stream header is out */
    unsigned closing : 1;           /* our </stream:stream> is out: send nothing more */
    unsigned freeing : 1;
    unsigned reset_pending : 1;     /* stream restart after the current feed */
    unsigned starttls_pending : 1;  /* start TLS (with ssl) after the current feed */
    unsigned peer_header_seen : 1;  /* the peer's first stream header arrived */
    unsigned ssl_in_bev : 1;        /* bev owns ssl (frees it) */
    char ip[64];                    /* peer address ("ADDR" or "[ADDR]:PORT" for outgoing) */
    char why[160];                  /* why it went away, for gone */
    struct event *free_ev, *flush_timer, *drain_ev;
};

/* An accepted connection (incoming); direct_tls: ssl set, TLS from the first byte. */
s2s_conn_t *s2s_conn_accept(int fd, const char *ip, struct ssl_st *ssl, const s2s_conn_cb_t *cb, void *owner);
/* An outgoing connection to addr; tcp_up or gone follows. NULL when the socket cannot be made. */
s2s_conn_t *s2s_conn_connect(const struct sockaddr *addr, int addrlen, const s2s_conn_cb_t *cb, void *owner);
/* Send our stream header (jabber:server, dialback namespace declared; from/to/id optional). */
void s2s_conn_header(s2s_conn_t *c, const char *from, const char *to, const char *id);
void s2s_conn_send(s2s_conn_t *c, const xnode_t *n);
/* Send n with the prefix our stream header binds to its namespace: <stream:features/>,
 * <db:result/>, <db:verify/> (anything else as s2s_conn_send). The same XML as the unprefixed form,
 * but ejabberd recognises only these forms on s2s streams and ignores the others until its idle
 * timeout. n's children are written as s2s_conn_send writes elements (jabber:server default). */
void s2s_conn_send_prefixed(s2s_conn_t *c, const xnode_t *n);
void s2s_conn_send_str(s2s_conn_t *c, const char *s);
/* Start TLS now (outgoing direct TLS, after tcp_up): client side, tls_up follows. */
void s2s_conn_start_tls_client(s2s_conn_t *c, struct ssl_st *ssl);
/* Close the stream: a stream error (condition NULL: none, a plain close), </stream:stream>,
 * then the socket once the output drained (at most a few seconds). why goes to c->why. Safe from
 * any callback; repeated calls do nothing. */
void s2s_conn_close(s2s_conn_t *c, const char *condition, const char *text, const char *why);
/* Drop the connection without a word (connect failures, TLS failures). */
void s2s_conn_abort(s2s_conn_t *c, const char *why);
/* Raise the parser's limits and the read rate to the configured post-authentication ones. */
void s2s_conn_authenticated_limits(s2s_conn_t *c);

/* Hand a stanza to the core (s2s_local_t given to s2s_start); take ownership. */
void s2s_deliver_remote(xnode_t *st, const char *authenticated_domain);
void s2s_deliver_bounce(xnode_t *st);

/* Is federation with domain allowed by federation.mode? 1 yes; 0 no with *why set. */
int s2s_policy_allows(const char *domain, const char **why);
/* The partner's `ca:` file for domain, or NULL. */
const char *s2s_partner_ca(const char *domain);
/* The attribute value of name in a NULL-terminated attrs list (xstream style), or NULL. */
const char *s2s_attr(const char **attrs, const char *name);
/* Rewrite jabber:server to jabber:client in st and the descendants that inherited it, so that
 * remote stanzas look like local ones to modules. */
void s2s_stanza_to_client_ns(xnode_t *st);

/* s2s_out.c */
/* Ask the authoritative server of `remote` whether key is valid for the stream `id` it opened to
 * `local` (XEP-0220 §2.1.2, db:verify), over the outgoing stream (local, remote). The answer goes
 * to s2s_in_verify_result(in_serial, ...). */
void s2s_out_verify(const char *local, const char *remote, const char *id, const char *key, uint64_t in_serial);
void s2s_out_close_all(void);
void s2s_out_free_all(void);

/* s2s_in.c */
void s2s_in_accept(int fd, const char *peer_ip, int direct_tls);
/* The answer to a db:verify: result 1 valid, 0 invalid, -1 no answer (connection failed). The
 * incoming stream in_serial may have gone meanwhile: then nothing happens. */
void s2s_in_verify_result(uint64_t in_serial, const char *local, const char *remote, int result);
void s2s_in_close_all(void);

/* dialback.c: XEP-0185 keys. */
/* A fresh secret from the CSPRNG (at start; keys of earlier runs become invalid). */
void dialback_init(void);
void dialback_cleanup(void);
/* The key for a stream: hex(HMAC-SHA256(SHA256(secret), receiving + ' ' + originating + ' ' +
 * stream_id)), malloc'd (64 hex digits). receiving: the domain the originating server connects
 * to; originating: the domain it claims. */
char *dialback_key(const char *receiving, const char *originating, const char *stream_id);
/* 1 when key is the key for (receiving, originating, stream_id), compared in constant time. */
int dialback_check(const char *receiving, const char *originating, const char *stream_id, const char *key);

#endif
