/* server/session.h: the client session structure shared by c2s.c (its owner) and router.c.
 * Modules never see it; they use the accessors in module.h. */
#ifndef CIVITAS_SESSION_H
#define CIVITAS_SESSION_H
#include "server.h"
#include "scram.h"

typedef enum {
    C2S_WAIT_HEADER,        /* before the client's stream header */
    C2S_OPEN,               /* header exchanged, negotiating TLS / SASL / bind */
    C2S_CLOSING             /* closing: output is flushed, input ignored, then freed */
} c2s_state_t;

typedef struct session_data {
    char *key;
    void *data;
    void (*free_fn)(void *);
    struct session_data *next;
} session_data_t;

struct session {
    session_t *next, *prev;         /* srv->sessions */
    session_t *next_in_user;        /* user_t.sessions, once bound */
    struct bufferevent *bev;        /* socket, or TLS filter over it */
    struct ssl_st *ssl;             /* owned by bev once TLS started */
    tls_t *tls;                     /* certificates this session's TLS uses (ref held) */
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
    unsigned ip_counted : 2;        /* in its ip_state: IP_UNCOUNTED, IP_UNAUTH or IP_SESSION (c2s.c) */
    unsigned freeing : 1;
    unsigned want_drained : 1;      /* fire "session-drained" once the output is empty */
    unsigned drain_watch : 1;       /* on_under_output is installed on the socket's buffer */
    int priority;                   /* from the last available presence */
    int sasl_failures;              /* on this stream */
    host_t *host;                   /* from the stream header's 'to' */
    char *user;                     /* authenticated localpart */
    jid_t *jid;                     /* full JID once bound */
    char *mech;                     /* SASL mechanism in progress */
    scram_server_t *scram;
    char id[33];                    /* stream id */
    char ip[64];                    /* peer address, for limits and logs */
    session_t *ip_next, *ip_prev;   /* ip_state.unauth, while ip_counted is IP_UNAUTH */
    struct event *timer;            /* header / auth time-out, close flush limit */
    struct event *free_ev;          /* frees the session at a safe point */
    struct event *delay_ev;         /* SASL failure back-off */
    struct event *drain_ev;         /* fires "session-drained" from the loop (session_want_drained) */
    xnode_t *delayed;               /* the failure answer held back by delay_ev */
    session_data_t *data;           /* modules' per-session data */
};

#endif
