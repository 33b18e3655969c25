/* server/server.h: the core's shared state (hosts, sessions, the loop) and the internal
 * interfaces between its files. Modules never include this; they see module.h. */
#ifndef CIVITAS_SERVER_H
#define CIVITAS_SERVER_H
#include <event2/event.h>
#include "module.h"
#include "standard_modules.h"
#include "util.h"
#include "log.h"
#include "tls.h"

/* An account with at least one bound resource. */
typedef struct user {
    char *bare;                 /* "node@domain" */
    session_t *sessions;        /* linked through session->next_in_user */
} user_t;

struct host {
    char *name;                 /* prepared domain */
    strmap_t *users;            /* bare JID -> user_t, only accounts that are online */
};

typedef struct server {
    struct event_base *base;
    config_t *cfg;
    char *config_path;
    storage_t *store;
    tls_t *tls;                 /* certificates of every host, SNI selection */
    host_t **hosts; size_t nhosts;
    session_t *sessions;        /* every client stream, for shutdown */
    size_t nsessions;
    size_t unauthenticated;     /* streams not yet authenticated (limits) */
    strmap_t *ip_state;         /* ip_limit_key of a peer -> ip_state_t (connections, SASL failures) */
    int shutting_down;
} server_t;

extern server_t *srv;

/* The per-address accounting for abuse limits, keyed by ip_limit_key (an IPv6 /64 is one
 * address). Only connections that have not authenticated are limited tightly: behind one
 * address (a NAT) there may be hundreds of accounts, and accounts are accountable. */
#define IP_SASL_ACCOUNTS 8      /* accounts whose failures an address keeps apart (c2s.c) */
typedef struct ip_state {
    int connections;            /* c2s streams not yet authenticated, and inbound s2s streams */
    int sessions;               /* authenticated c2s streams */
    session_t *unauth;          /* the c2s streams counted in connections (session.ip_next) */
    int sasl_failures;          /* failures not yet forgiven (by a success of their account or by
                                   10 minutes without a failure); the SASL back-off counts these */
    int64_t last_failure_ms;
    struct {
        uint64_t account;       /* hash of the account's bare JID; 0: slot free */
        int failures;           /* its share of sasl_failures */
    } sasl_account[IP_SASL_ACCOUNTS];
} ip_state_t;
ip_state_t *ip_state_get(const char *ip);    /* created on demand; ip is a peer address */
void ip_state_release(const char *ip);       /* drop when unused */

/* listen.c: open every listener of the config; logs "listening <kind> <addr>:<port>". */
int listen_start(void);
void listen_stop(void);

/* c2s.c */
typedef enum { C2S_PLAIN, C2S_DIRECT_TLS } c2s_kind_t;
void c2s_accept(int fd, const char *peer_ip, c2s_kind_t kind);
void c2s_close_all(void);             /* SIGTERM: </stream:stream> to everyone */
/* Deliver a stanza to a session (its 'to' is that session's full or bare JID). */
void session_deliver(session_t *s, const xnode_t *st);
/* session_close (module.h) is safe from any callback: the session is freed later at a safe point. */

/* router.c */
user_t *router_user(host_t *h, const char *bare);        /* NULL when offline */
void router_bind(session_t *s);       /* add a bound session (replaces a same full JID: conflict) */
void router_unbind(session_t *s);
session_t *router_find_full(const jid_t *j);
/* A stanza from a local client session (from already stamped). Takes ownership. */
void router_from_client(session_t *s, xnode_t *st);

/* account.c: account events (storage.h). account_events_start handles those left while no server
 * ran, then looks every second whether another process (civitasctl) recorded new ones. */
void account_events_start(void);
void account_events_stop(void);

/* module.c */
int modules_load(void);               /* config's modules: list, or every standard module */
/* A module linked into the program instead of loaded from a file (the module fuzz target). */
int module_load_static(const module_t *desc);
/* Several linked-in modules (NULL-terminated), started in dependency order. 0/-1 */
int modules_load_static(const module_t *const *descs);
/* --check: every module to be loaded exists, its dependencies are loaded too and its config section
 * is valid. 0/-1 (errors filled). With report, one line a module in load order with its effective
 * options as YAML ("offline: {max_messages: 1000, ...}"). */
int modules_check(const config_t *c, strlist_t *errors);
int modules_check_report(const config_t *c, strlist_t *errors, strlist_t *report);
void modules_unload(void);
int module_unloading(const module_ctx_t *m);    /* 1 once its unloading began: it may add nothing */

/* timer.c: every timer of m is cancelled (module unload); every timer freed (shutdown). */
void timers_forget(module_ctx_t *m);
void timers_shutdown(void);

/* caps.c: the XEP-0115 cache (module.h has its queries). caps_presence: presence from the full
 * JID from (a local session's own, or a contact's arriving for a local account of host) may
 * announce caps; caps_forget: from is gone. */
int caps_start(void);
void caps_stop(void);
void caps_presence(host_t *host, const jid_t *from, const xnode_t *st, session_t *origin);
void caps_forget(const jid_t *full);

/* iq_request.c. iq_request_deliver: st (an IQ to a local JID, routed by router.c) is the answer
 * to a pending request: its callback ran (or will, from the loop) and the caller frees st; 0 when
 * it is not one (route it on). iq_requests_forget: cancel m's pending requests (callbacks with
 * IQ_CANCELLED); iq_requests_shutdown: every one, at exit. */
int iq_request_deliver(const xnode_t *st, const jid_t *from, const jid_t *to);
void iq_requests_forget(module_ctx_t *m);
void iq_requests_shutdown(void);

#endif
