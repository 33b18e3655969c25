/* server/module.h: the API between the civitas core and its modules; this header is its
 * documentation. A module is a shared object exporting one const descriptor, civitas_module. */
#ifndef CIVITAS_MODULE_H
#define CIVITAS_MODULE_H
#include "xml.h"
#include "jid.h"
#include "config.h"
#include "storage.h"
#include "store.h"        /* module-scoped tables: store_* */
#include "util.h"        /* xmalloc, xstrdup, xasprintf, strmap: modules use the core's helpers */

#define CIVITAS_MODULE_ABI 1

typedef struct session session_t;     /* a client's stream (opaque to modules) */
typedef struct host host_t;           /* a domain this server serves */
typedef struct module_ctx module_ctx_t;  /* a loaded module's handle: what it registered */

/* Handlers answer HOOK_HANDLED (stop: the stanza or event is dealt with) or HOOK_PASS
 * (let the next handler, and finally the core's default, have it). */
enum { HOOK_PASS = 0, HOOK_HANDLED = 1 };

/* What a hook is called with. Fields not meaningful for an event are NULL. */
typedef struct hook_event {
    const char *name;        /* the hook's name, e.g. "iq-get/host/urn:xmpp:ping" */
    xnode_t *stanza;         /* the stanza; the core frees it after the hooks ran unless a
                                handler sets ev->stanza = NULL to take ownership */
    session_t *origin;       /* the local client session it came from, or NULL */
    host_t *host;            /* the local host involved (addressed, or the sender's) */
    const jid_t *from;       /* sender (for client stanzas: the session's full JID) */
    const jid_t *to;         /* addressee; for stanzas without 'to', the sender's bare JID */
    xnode_t *features;       /* "stream-features": append children to offer them */
} hook_event_t;

typedef int (*hook_fn)(hook_event_t *ev, void *ud);

/* Hook names, after Prosody's (the '<ns>' is the namespace of the IQ's child element):
 *   iq-get/host/<ns>, iq-set/host/<ns>   IQ to the server's domain
 *   iq-get/bare/<ns>, iq-set/bare/<ns>   IQ to a local account's bare JID (or without 'to')
 *   iq/host, iq/bare                     every IQ to the domain / a bare JID, before the above
 *   message/bare, message/full, message/host, presence/bare, presence/full, presence/host
 *                                        stanzas to local addresses, before the core's delivery
 *   pre-stanza/out                       every stanza from a local client, 'from' stamped, before
 *                                        routing (blocking, carbons, archive, e2e policy); a handler
 *                                        that returns HOOK_HANDLED has dealt with it (or dropped it);
 *                                        ev->to is NULL here ('to' may be absent or invalid)
 *   presence/self                        presence without 'to' from a local client (broadcast); the
 *                                        session's availability and priority are already updated
 *   presence/initial                     fired right before presence/self for a session's first
 *                                        available presence (offline delivery, probes)
 *   session-bound, session-closed        a client's resource came and went (origin set)
 *   stream-features                      c2s features after authentication (features set)
 *   stream-features/preauth              c2s features before authentication, inside TLS (features set)
 *   iq-get/preauth/<ns>, iq-set/preauth/<ns>
 *                                        an IQ on a stream that has not authenticated yet; the core
 *                                        passes only jabber:iq:register (XEP-0077 §3.1, mod_register).
 *                                        origin is that session, from and to are NULL, host is the
 *                                        stream's; hook_reply/hook_error answer on that stream.
 *                                        Not handled: <service-unavailable/>
 *   user-deleted                         an account was removed (to = its bare JID)
 *   presence/resend                      send from's current presence to the contact 'to' if it is
 *                                        subscribed (fired by blocking on unblock; presence answers)
 * Handlers of one name run by descending priority (0 is the usual one). */
void module_hook(module_ctx_t *m, const char *name, int priority, hook_fn fn, void *ud);
/* Run the handlers of ev->name; returns HOOK_HANDLED when one took it. Used by the core and
 * by modules firing their own events. */
int hook_fire(hook_event_t *ev);

/* XEP-0030 features and identities of the server, collected from every loaded module. */
void module_add_feature(module_ctx_t *m, const char *var);
void module_add_identity(module_ctx_t *m, const char *category, const char *type, const char *name);
size_t module_feature_count(void);
const char *module_feature(size_t i);
typedef struct disco_identity { const char *category, *type, *name; } disco_identity_t;
size_t module_identity_count(void);
const disco_identity_t *module_identity(size_t i);

/* The module's own section of the config (top-level key named after the module), or NULL.
 * Read it with cfg_get_int/cfg_get_bool/cfg_get_string/cfg_check_keys from config.h. */
const cfg_node_t *module_config(module_ctx_t *m);
strlist_t *module_errors(module_ctx_t *m);      /* config errors go here; the core prints them */
storage_t *module_storage(module_ctx_t *m);
/* The module's own table `table`, declared in its descriptor's .store and brought to the declared
 * version before load runs (store.h documents declarations and every store_* call); NULL when the
 * module declared no such table. Valid until the module is unloaded. */
store_t *module_store(module_ctx_t *m, const char *table);
const config_t *server_config(void);            /* the running configuration (changes on SIGHUP) */
const char *module_name(const module_ctx_t *m);

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
/* Close a client's stream with a stream error (condition NULL: a plain close). */
void session_close(session_t *s, const char *condition, const char *text);

/* Routing. route_stanza takes ownership: it delivers to a local session, to a local account's
 * hooks, or bounces with the RFC's error. The stanza needs 'to' and 'from' set. */
void route_stanza(xnode_t *stanza);
/* Write n to one session (serialised; n stays the caller's). */
void session_send(session_t *s, const xnode_t *n);
const jid_t *session_jid(const session_t *s);   /* full JID once bound, else NULL */
host_t *session_host(const session_t *s);
const char *session_ip(const session_t *s);     /* the client's address, for per-address limits */
const char *host_name(const host_t *h);
host_t *host_find(const char *domain);          /* a served domain, or NULL */

/* Stanza helpers. stanza_reply: <iq type='result'> (or a message/presence of the same kind)
 * with id copied and to/from swapped. stanza_error: a new error reply to st (type is
 * cancel|modify|auth|wait; condition an RFC 6120 §8.3.3 name; text may be NULL); returns NULL
 * when st is itself an error (errors are never answered with errors). */
xnode_t *stanza_reply(const xnode_t *st);
xnode_t *stanza_error(const xnode_t *st, const char *type, const char *condition, const char *text);
/* Route a reply or error built from ev->stanza back to its sender; returns HOOK_HANDLED. For an
 * origin without a bound JID (the preauth hooks) the reply goes straight back on its stream. */
int hook_reply(hook_event_t *ev, xnode_t *reply);
/* Answer ev->stanza with an error; returns HOOK_HANDLED. */
int hook_error(hook_event_t *ev, const char *type, const char *condition);

/* A module's options, declared as rows (nginx-style): the core checks the module's config
 * section against them at --check and at start (unknown keys, types, bounds: FILE:LINE errors)
 * and, before load, stores each value (or the default) at `offset` in the module's `conf`
 * struct. Modules never parse their options themselves. */
typedef enum { MOPT_INT, MOPT_BOOL } module_opt_type_t;
typedef struct module_option {
    const char *name;                       /* key in the module's section; NULL ends the table */
    module_opt_type_t type;                 /* MOPT_INT: a long at offset; MOPT_BOOL: an int */
    size_t offset;                          /* offsetof(the module's conf struct, field) */
    long def, min, max;                     /* default and bounds (bounds: MOPT_INT only) */
} module_option_t;

/* The descriptor a module exports as `const module_t civitas_module`. load returns 0, or -1
 * after logging why (the server then refuses to start). Everything registered through m is
 * removed automatically when the module is unloaded; unload (optional) frees the module's own data. */
typedef struct module {
    int abi;                                /* CIVITAS_MODULE_ABI */
    const char *name;                       /* as written in the config's modules: list */
    int (*load)(module_ctx_t *m);
    void (*unload)(module_ctx_t *m);
    const module_option_t *options;         /* optional: the section's keys, see above */
    void *conf;                             /* where the options' values are stored */
    const store_schema_t *store;            /* optional: the module's own tables (store.h) */
} module_t;

#define NS_CLIENT "jabber:client"
#define NS_SERVER "jabber:server"
#define NS_STREAMS "http://etherx.jabber.org/streams"
#define NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"
#define NS_STREAM_ERRORS "urn:ietf:params:xml:ns:xmpp-streams"
#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SESSION "urn:ietf:params:xml:ns:xmpp-session"
#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"

/* ---- Roster service ----------------------------------------------------------------------
 * Rosters (RFC 6121 §2, XEP-0237), shared by mod_roster, mod_presence and any module that needs a
 * user's contacts: roster_load, roster_find, roster_save (versions and roster pushes), interested
 * resources. Implemented in server/roster.c; documented in server/roster.h. */
#include "roster.h"

#endif
