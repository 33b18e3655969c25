/* server/s2s_conn.h: what incoming (s2s_in.c) and outgoing (s2s_out.c) server-to-server streams
 * share (s2s_conn.c): the connection, the core's entries, federation policy and helpers. */
#ifndef CIVITAS_S2S_CONN_H
#define CIVITAS_S2S_CONN_H
#include "server.h"
#include "xml.h"
#include "jid.h"
#include "host.h"
#include "component.h"
#include "stanza.h"
#include <stdint.h>

#define NS_DIALBACK "jabber:server:dialback"
#define NS_DIALBACK_FEATURE "urn:xmpp:features:dialback"

/* s2s_conn_t: one TCP connection carrying an XML stream in either direction (s2s_conn.c): bufferevent
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

/* What federation hands to the core: stanzas received from a peer, already checked by s2s_in
 * (its 'from' domain is authenticated on the stream, its 'to' is a domain we serve, its namespace
 * is jabber:client as for local stanzas), and bounces of stanzas that could not be delivered.
 * main.c passes the router's functions (router.h): federation sits below the router and never
 * calls up into it by name. Both take ownership. */
typedef struct s2s_local {
    void (*from_remote)(xnode_t *st, const char *authenticated_domain);
    void (*route)(xnode_t *st);
} s2s_local_t;
/* Set the core's entries (s2s_start, s2s_set_local). */
void s2s_conn_set_local(const s2s_local_t *local);
/* Open connections (s2s_stream_count). */
size_t s2s_conn_count(void);
/* After the event loop ended: free every connection now (owners are told through gone). */
void s2s_conn_free_all(void);

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

#endif
