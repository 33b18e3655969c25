/* server/session.h: a client session, below the router: its state, resource binding (the online
 * accounts of each host), presence, per-module data, and its output with the accounting of what
 * the peer has not taken yet. The stream (c2s.c) makes sessions and feeds them; the router delivers
 * to them; nothing here calls up into either (the transport and stream vtables point down). */
#ifndef CIVITAS_SESSION_H
#define CIVITAS_SESSION_H
#include "xml.h"
#include "jid.h"
#include "host.h"
#include "api.h"

typedef struct session session_t;     /* a client's stream (opaque to modules) */

/* An account with at least one bound resource (host.users). */
typedef struct user {
    char *bare;                 /* "node@domain" */
    session_t *sessions;        /* linked through session->next_in_user */
} user_t;

typedef enum {
    C2S_WAIT_HEADER,        /* before the client's stream header */
    C2S_OPEN,               /* header exchanged, negotiating TLS / SASL / bind */
    C2S_CLOSING             /* closing: output is flushed, input ignored, then freed */
} c2s_state_t;

typedef enum { C2S_PLAIN, C2S_DIRECT_TLS } c2s_kind_t;

/* How bytes reach the peer: TCP with STARTTLS or direct TLS (c2s.c), WebSocket (websocket.c,
 * RFC 7395: each write is one complete element, sent as one text message).
 * The session calls these; the transport tells the session about progress with
 * session_output_progress. */
typedef struct session_transport {
    void (*write)(session_t *s, const char *data, size_t len);  /* queue bytes for the peer */
    size_t (*queued)(const session_t *s);   /* bytes written and not yet accepted by the kernel */
    void (*watch_output)(session_t *s);     /* call session_output_progress as the backlog shrinks */
    void (*stop)(session_t *s, int writing_too);   /* stop reading (and writing) */
    int (*peer_gone)(const session_t *s);   /* 1 when the peer has closed or reset the connection */
    /* Channel binding data of type ("tls-server-end-point", "tls-exporter"); buf NULL: only
     * whether it is available. 0, or -1 when it is not. */
    int (*channel_binding)(const session_t *s, const char *type, unsigned char *buf, size_t *len);
    void (*free)(session_t *s);             /* release the connection (the session is being freed) */
    /* Reading may go on (after a SASL back-off or a stanza rate pause): read and act on what
     * waits in the input buffer. */
    void (*resume)(session_t *s);
} session_transport_t;

/* The stream protocol over the transport (c2s.c): its framing and its own state. */
typedef struct session_stream {
    /* Write what ends the stream: the header if none went out yet, the stream error (condition
     * NULL: none) and the closing tag. */
    void (*close)(session_t *s, const char *condition, const char *text);
    void (*free)(session_t *s);             /* release the stream's state (before the transport) */
    /* The default namespace of the stream's content for session_send: "jabber:client" on a TCP
     * stream, NULL over WebSocket (RFC 7395 §3.3.3: every message declares its namespaces). */
    const char *content_ns;
} session_stream_t;

typedef struct session_data {
    char *key;
    void *data;
    void (*free_fn)(void *);
    struct session_data *next;
} session_data_t;

struct session {
    session_t *next, *prev;         /* srv->sessions */
    session_t *next_in_user;        /* user_t.sessions, once bound */
    const session_transport_t *transport;
    const session_stream_t *stream;
    /* the TCP/TLS transport's (c2s.c) */
    struct bufferevent *bev;        /* socket, or TLS filter over it */
    struct ssl_st *ssl;             /* owned by bev once TLS started */
    struct tls *tls;                /* certificates this session's TLS uses (ref held) */
    /* the stream's (c2s.c, sasl.c) */
    xstream_t *xs;                  /* parser of the current stream */
    c2s_state_t state;
    c2s_kind_t kind;                /* plain (STARTTLS) or direct TLS port */
    unsigned tls_active : 1;        /* TLS established (or under way) */
    unsigned header_sent : 1;       /* our stream header is out (errors need it first) */
    unsigned authenticated : 1;
    unsigned bound : 1;
    unsigned reset_pending : 1;     /* stream restart after the current feed */
    unsigned starttls_pending : 1;  /* switch to TLS after the current feed */
    unsigned available : 1;         /* sent available presence */
    unsigned counted_unauth : 1;    /* counted in srv->unauthenticated */
    unsigned ip_counted : 2;        /* in its ip_state: IP_UNCOUNTED, IP_UNAUTH or IP_SESSION (ip_limits.c) */
    unsigned freeing : 1;
    unsigned want_drained : 1;      /* fire "session-drained" once the output is empty */
    unsigned drain_watch : 1;       /* the transport's watch_output is installed */
    unsigned hold_bare : 1;         /* not a receiver of bare-JID messages (session_hold_bare) */
    unsigned resumable : 1;         /* hibernate instead of ending when the connection is lost */
    unsigned hibernate_pending : 1; /* connection lost: on_free detaches it instead of freeing */
    unsigned hibernating : 1;       /* bound without a connection (session_hibernating) */
    unsigned writing_replay : 1;    /* route_replay is writing to it (session_writing_replay) */
    unsigned resumed : 1;           /* bound by session_take_over, not by binding (no "session-bound") */
    int priority;                   /* from the last available presence */
    int sasl_failures;              /* on this stream */
    host_t *host;                   /* from the stream header's 'to' */
    char *user;                     /* authenticated localpart */
    jid_t *jid;                     /* full JID once bound */
    char *mech;                     /* SASL mechanism in progress */
    struct scram_server *scram;
    struct sasl2_req *sasl2;        /* XEP-0388: the <authenticate/> request in progress (sasl2.c) */
    char id[33];                    /* stream id */
    char ip[64];                    /* peer address, for limits and logs */
    session_t *ip_next, *ip_prev;   /* ip_state.unauth, while ip_counted is IP_UNAUTH */
    struct event *timer;            /* header / auth time-out, close flush limit */
    struct event *free_ev;          /* frees the session at a safe point */
    struct event *delay_ev;         /* SASL failure back-off */
    struct event *drain_ev;         /* fires "session-drained" from the loop (session_want_drained) */
    xnode_t *delayed;               /* the failure answer held back by delay_ev */
    session_data_t *data;           /* modules' per-session data */
    struct session_tap_reg *taps;   /* stanza taps (session_add_tap), by descending priority */
};

/* ---- for the core ---- */

/* A new session of peer ip on the list of sessions (srv->sessions); the caller sets transport,
 * stream and its own fields. */
session_t *session_new(const char *ip, const session_transport_t *t, const session_stream_t *st);
/* Queue bytes as they are (stream framing); past limits.max_output_buffer the session is dropped
 * (a client that never reads must not make the server buffer without bound). */
void session_write(session_t *s, const char *data, size_t len);
void session_write_str(session_t *s, const char *str);
/* Deliver a stanza to a session (its 'to' is that session's full or bare JID). */
void session_deliver(session_t *s, const xnode_t *st);
/* Never free a session inside a libevent or expat callback: this marks it, and the loop frees it
 * once the current callback has returned. */
void session_free_later(session_t *s);
/* The transport took some output (or all): a closing session may be freed, "session-drained" may fire. */
void session_output_progress(session_t *s);

/* The connection of s is gone (EOF, reset, unreadable): a resumable bound session hibernates
 * (session_set_resumable), any other is freed. Safe from any callback. */
void session_connection_lost(session_t *s);
/* A stanza the client sent on a bound stream, before it is acted on: the taps' in functions. */
void session_stanza_in(session_t *s, const xnode_t *st);

/* The online accounts: session_user is NULL when offline. session_bind adds a bound session
 * (a session with the same full JID gets <conflict/>, RFC 6120 §7.7.2.2); session_unbind removes
 * it and fires "session-closed". */
user_t *session_user(host_t *h, const char *bare);
void session_bind(session_t *s);
void session_unbind(session_t *s);
session_t *session_find_full(const jid_t *j);
/* Resource binding of the authenticated s (RFC 6120 §7, XEP-0386): its full JID with resource
 * (already prepped), session_bind, s->bound. Nothing is answered and "session-bound" is not fired
 * (the caller does both, in its protocol's order). 0, or -1 when that makes no valid JID. */
int session_bind_resource(session_t *s, const char *resource);
/* After session_unbind's events ("session-closed", then "resource-unavailable" when the resource
 * was available), fn(full JID) runs: the caps cache (caps.c) forgets the resource. One slot;
 * NULL: nothing. */
void session_on_unbind(void (*fn)(const jid_t *full));

/* The session's current presence (session_presence): a copy of p, or NULL: not available. */
void session_set_presence(session_t *s, const xnode_t *p);

/* ---- the module API (module.h) ---- */
CIVITAS_API_BEGIN
/* Sessions of a user. user_sessions: the first bound session of a local account's bare JID
 * (or NULL), then session_next_in_user. Availability follows the last presence without 'to'. */
session_t *user_sessions(const jid_t *bare);
session_t *session_next_in_user(const session_t *s);
int session_available(const session_t *s);      /* 1 after available presence, 0 otherwise */
int session_priority(const session_t *s);       /* presence priority, or -129 when not available */
/* Per-session data of a module, under a key (use the module's name + purpose). The free
 * function runs when the session ends or the key is set again. */
void *session_get_data(const session_t *s, const char *key);
void session_set_data(session_t *s, const char *key, void *data, void (*free_fn)(void *));
/* Close a client's stream with a stream error (condition NULL: a plain close). Safe from any
 * callback: the session is freed later at a safe point. */
void session_close(session_t *s, const char *condition, const char *text);
/* Write n to one session (serialised; n stays the caller's). */
void session_send(session_t *s, const xnode_t *n);
const jid_t *session_jid(const session_t *s);   /* full JID once bound, else NULL */
host_t *session_host(const session_t *s);
const char *session_ip(const session_t *s);     /* the client's address, for per-address limits */
/* The account s authenticated as (its localpart at session_host), or NULL before SASL success. */
const char *session_account(const session_t *s);

/* Output flow, for modules that send much at once (offline replay). session_output_queued: bytes
 * written to s and not yet accepted by the TCP layer (plaintext and TLS records); past
 * session_output_limit() bytes (limits.max_output_buffer) the session is dropped.
 * session_want_drained: fire "session-drained" (origin s) once, from the event loop, as soon as
 * that number is 0 (at the next loop turn when it is 0 already). Nothing fires for a session that
 * closes first; "session-closed" comes instead. "Accepted by the
 * TCP layer" is what a server knows of what the client got without stream management; with it
 * (XEP-0198, a tap's unconfirmed count) the client's acknowledgements count too. */
size_t session_output_queued(const session_t *s);
size_t session_output_limit(void);
void session_want_drained(session_t *s);
/* With stream management (a tap with unconfirmed, below) "session-drained" means more: the
 * client also acknowledged every stanza written to it. */

/* A session's current presence: its last available presence without 'to' (as the client sent
 * it, 'from' stamped), or NULL when it is not available. Read-only; valid until the session's
 * next presence. Priority: session_priority above. */
const xnode_t *session_presence(const session_t *s);

/* While held (on = 1), s is not a receiver of normal and chat messages to its bare JID (RFC 6121
 * §8.5.2.1 picks among the others; with none left the message is "message/undelivered"), e.g.
 * while offline replay writes older messages to it (mod_offline). Headlines and messages to its
 * full JID still reach it. */
void session_hold_bare(session_t *s, int on);
/* RFC 6121 §8.5.2.1.1, the router's rule for a normal or chat message to a bare JID: the priority
 * of the resources it goes to (the highest non-negative one among the available sessions not on
 * hold), or -1 when none would take it (then it is "message/undelivered"). session_receives_bare:
 * whether s is one of those resources. Headlines go to every non-negative resource instead. */
int user_delivery_priority(const jid_t *bare);
int session_receives_bare(const session_t *s);

/* ---- Stream management support (XEP-0198, mod_smacks; also for CSI and Bind2) ----
 * Top-level elements that are not stanzas (<enable/>, <r/>, <a/>, <resume/>, CSI's <active/>)
 * on an authenticated stream, bound or not, go to the hook "stream-element" (HOOK_STREAM_ELEMENT,
 * module.h): origin = the session, stanza = the element (take it like a stanza), host set, from
 * = the full JID once bound. Not handled: <unsupported-stanza-type/>.
 *
 * Taps see every stanza (message, presence, iq in jabber:client) a session sends and receives
 * once it is bound, in descending priority: the counting of XEP-0198 and CSI's holding back.
 *   in     a stanza from the client, before the core acts on it (read-only)
 *   out    a stanza about to be written, serialised as buf (len bytes; read-only, copy what
 *          you keep). Return SESSION_TAP_WRITE to let it go on (to the next tap, then the
 *          connection), or SESSION_TAP_HELD when the tap keeps it back; it then sends it later
 *          with session_send_after(s, tap, st), which runs only the taps after it.
 * The per-stanza cost without taps is one pointer test. */
enum { SESSION_TAP_WRITE = 0, SESSION_TAP_HELD = 1 };
typedef struct session_tap {
    void (*in)(session_t *s, void *ud, const xnode_t *st);
    int (*out)(session_t *s, void *ud, const xnode_t *st, const char *buf, size_t len);
    /* optional: stanzas written and not yet confirmed by the client (XEP-0198: unacknowledged).
     * While any tap has some, "session-drained" waits: offline replay deletes only what the
     * client confirmed. Call session_output_confirmed(s) when the number drops. */
    size_t (*unconfirmed)(const session_t *s, void *ud);
} session_tap_t;
/* A tap's unconfirmed count dropped: "session-drained" may fire now. */
void session_output_confirmed(session_t *s);
/* 1 while route_replay writes a stored message to s (a tap's out can tell a replay: it stays in
 * offline storage until confirmed, so it must not be stored again). */
int session_writing_replay(const session_t *s);
/* Add or remove (session_remove_tap) tap for s; ud is passed to its functions. The taps of a
 * session go with it on session_take_over. */
void session_add_tap(session_t *s, const session_tap_t *tap, int priority, void *ud);
void session_remove_tap(session_t *s, const session_tap_t *tap);
void session_send_after(session_t *s, const session_tap_t *tap, const xnode_t *st);
/* Bytes as they are onto s's connection (no taps, no counting): <r/>, <a/>, resent stanzas.
 * Nothing while the session hibernates. */
void session_write_raw(session_t *s, const char *data, size_t len);

/* Resumption. session_set_resumable(s, 1): when s's connection is lost without a closing
 * </stream:stream> (session_connection_lost: reset, EOF, or session_lose_connection), s stays
 * bound (presence, module data, taps kept), its connection is released and it hibernates: writes
 * to it go only to its taps. Then "session-hibernated" fires (origin s, from the loop). A
 * hibernating session ends with session_close (its "session-closed" then fires as usual) or is
 * resumed with session_take_over. A clean close or a stream error never hibernates. */
void session_set_resumable(session_t *s, int on);
int session_hibernating(const session_t *s);
/* Treat s's connection as lost now (e.g. no answer to an ack request): it is released and s
 * hibernates if resumable, else s is freed. Safe from any callback. */
void session_lose_connection(session_t *s);
/* Resume: s, authenticated as the same account but not bound, takes over old's bound identity
 * (full JID, place among the user's resources, presence, priority, module data, taps); old's
 * connection, if it still has one, is dropped without a word, and old is freed without
 * "session-closed". Then "session-resumed" fires (origin s). 0, or -1 when old is not a bound
 * session of s's account (nothing changed). */
int session_take_over(session_t *s, session_t *old);
CIVITAS_API_END

#endif
