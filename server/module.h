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

#define CIVITAS_MODULE_ABI 3     /* 2: module_t gained conf_size and depends; 3: store */

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
 *   route/remote                         every stanza to a domain this server does not serve, right
 *                                        before federation sends it (also those a module routes on a
 *                                        user's behalf: broadcasts, probes, answers); HOOK_HANDLED
 *                                        drops it (or the handler dealt with it)
 *   presence/self                        presence without 'to' from a local client (broadcast); the
 *                                        session's availability and priority are already updated
 *   presence/initial                     fired right before presence/self for a session's first
 *                                        available presence (offline delivery, probes)
 *   session-bound, session-closed        a client's resource came and went (origin set)
 *   session-drained                      origin's output was all accepted by the TCP layer, after
 *                                        session_want_drained(origin) (see there)
 *   stream-features                      c2s features after authentication (features set)
 *   stream-features/preauth              c2s features before authentication, inside TLS (features set)
 *   iq-get/preauth/<ns>, iq-set/preauth/<ns>
 *                                        an IQ on a stream that has not authenticated yet; the core
 *                                        passes only jabber:iq:register (XEP-0077 §3.1, mod_register).
 *                                        origin is that session, from and to are NULL, host is the
 *                                        stream's; hook_reply/hook_error answer on that stream.
 *                                        Not handled: <service-unavailable/>
 *   user-deleted                         an account was removed (to = from = its bare JID; host set):
 *                                        fired once per deletion, whoever deleted (account_delete,
 *                                        XEP-0077, civitasctl in another process, also while no server
 *                                        ran: then at the next start), from the loop, never inside the
 *                                        handler that asked for the deletion. When it fires the rows are
 *                                        gone, the account's sessions are closed and unbound (their
 *                                        session-closed ran) and the core's roster cache forgot it;
 *                                        handlers drop whatever they hold for the account. Afterwards
 *                                        the core tells the contacts (unavailable, unsubscribe,
 *                                        unsubscribed). See account_delete below.
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

/* Delete a local account (bare: a JID with a localpart of a served host) and everything stored for
 * it, in one transaction with its account event (storage.h, "Account events"). 0 deleted, 1 no such
 * account, -1 storage error (logged; nothing deleted). The consequences follow at the next loop turn,
 * after the caller returned (so an IQ result can still reach the session): the account's sessions
 * end with <not-authorized/>, "user-deleted" fires, the contacts' subscriptions are cancelled. The
 * same happens when civitasctl deletes: the server notices its account event within a second.
 * Design note: deletions travel as stored events, not as calls, so that one path serves every process
 * and survives a restart; a module API that replaces hooks keeps this as one "user-deleted" event. */
int account_delete(const jid_t *bare);

/* Output flow, for modules that send much at once (offline replay). session_output_queued: bytes
 * written to s and not yet accepted by the TCP layer (plaintext and TLS records); past
 * limits.max_output_buffer (server_config()->max_output_buffer) the session is dropped.
 * session_want_drained: fire "session-drained" (origin s) once, from the event loop, as soon as
 * that number is 0 (at the next loop turn when it is 0 already). Nothing fires for a session that
 * closes first; "session-closed" comes instead. Until stream management exists, "accepted by the
 * TCP layer" is the best a server knows of what the client got. */
size_t session_output_queued(const session_t *s);
void session_want_drained(session_t *s);

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
 * section against them at --check and at start (unknown keys, types, bounds: FILE:LINE errors
 * naming module, key and what is allowed), and, before load, stores each value (or the default)
 * at `offset` in the module's `conf` struct. Modules never parse their options themselves.
 * `civitasd --check` prints every module's effective values, defaults included.
 *
 *   type           the field at offset   written in the config as
 *   MOPT_INT       long                  a whole number in [min, max]
 *   MOPT_BOOL      int (0/1)             true/false, yes/no, on/off
 *   MOPT_STRING    char * (or NULL)      a non-empty string; default def_string (may be NULL);
 *                                        if max > 0, its length in bytes is within [min, max]
 *   MOPT_ENUM      int                   one of choices[] (NULL-terminated); stored as the index,
 *                                        default: index def
 *   MOPT_LIST      strlist_t             a list of non-empty strings ([a, b] or "- a" lines);
 *                                        default: choices[] (NULL: empty); if max > 0, at most max
 *                                        entries and at least min
 *   MOPT_DURATION  long, seconds         seconds, or a whole number with s, m, h, d ("72h", "14d");
 *                                        def/min/max in seconds
 *   MOPT_SIZE      long, bytes           bytes, or a whole number with K, M, G, T (binary; also
 *                                        KiB, MiB, GiB, TiB: "512K", "10MiB"); def/min/max in bytes
 *
 * Strings and lists are owned by the core: copies of the config's text, freed (and the fields
 * cleared) after the module's unload, so they outlive a reload of the config (SIGHUP).
 *
 * Per host: a row with per_host = 1 may also be set for one of the server's hosts under the
 * section's `hosts:` key, e.g. `offline: {max_messages: 1000, hosts: {kaarst.example:
 * {max_messages: 50}}}`. A module with such rows sets conf_size in its descriptor and reads its
 * options through module_host_conf(m, host), which returns the host's copy of the conf struct
 * (the section's values with the host's overrides) or `conf` itself for hosts without any.
 *
 * Rows are written positionally ({"max_items", MOPT_INT, offsetof(...), 1000, 1, 100000}), the
 * fields after max by name (.def_string, .choices, .per_host). */
typedef enum { MOPT_INT, MOPT_BOOL, MOPT_STRING, MOPT_ENUM, MOPT_LIST, MOPT_DURATION, MOPT_SIZE } module_opt_type_t;
typedef struct module_option {
    const char *name;                       /* key in the module's section; NULL ends the table */
    module_opt_type_t type;                 /* see the table above */
    size_t offset;                          /* offsetof(the module's conf struct, field) */
    long def, min, max;                     /* default and bounds, as the table above says per type */
    const char *def_string;                 /* MOPT_STRING: the default, or NULL */
    const char *const *choices;             /* MOPT_ENUM: the allowed names; MOPT_LIST: the default */
    int per_host;                           /* 1: may differ per host (section's hosts: map) */
} module_option_t;

/* The descriptor a module exports as `const module_t civitas_module`. load returns 0, or -1
 * after logging why (the server then refuses to start). Everything registered through m is
 * removed automatically when the module is unloaded; unload (optional) frees the module's own data.
 * Modules are loaded after the modules they depend on (then in the order of the config's
 * modules: list, or of the standard list) and unloaded in reverse; a module whose dependency is
 * not loaded stops --check and the start with a message naming both. */
typedef struct module {
    int abi;                                /* CIVITAS_MODULE_ABI */
    const char *name;                       /* as written in the config's modules: list */
    int (*load)(module_ctx_t *m);
    void (*unload)(module_ctx_t *m);
    const module_option_t *options;         /* optional: the section's keys, see above */
    void *conf;                             /* where the options' values are stored */
    size_t conf_size;                       /* sizeof *conf; needed when a row has per_host */
    const char *const *depends;             /* optional: names of modules that must be loaded
                                               first, NULL-terminated ("pep" for "omemo") */
    const store_schema_t *store;            /* optional: the module's own tables (store.h) */
} module_t;

/* The module's conf struct as it applies to host h: a copy with h's `hosts:` overrides, or the
 * descriptor's conf when h has none (or h is NULL). Valid until the module is unloaded. */
const void *module_host_conf(const module_ctx_t *m, const host_t *h);

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

/* ---- Hook names as constants -------------------------------------------------------------
 * Use these instead of string literals: a misspelt constant does not compile, a misspelt string
 * silently never fires. The stanza hooks built from a namespace ("iq-get/host/<ns>") stay strings. */
#define HOOK_IQ_HOST "iq/host"
#define HOOK_IQ_BARE "iq/bare"
#define HOOK_IQ_FULL "iq/full"
#define HOOK_MESSAGE_BARE "message/bare"
#define HOOK_MESSAGE_FULL "message/full"
#define HOOK_MESSAGE_HOST "message/host"
#define HOOK_PRESENCE_BARE "presence/bare"
#define HOOK_PRESENCE_FULL "presence/full"
#define HOOK_PRESENCE_HOST "presence/host"
#define HOOK_PRE_STANZA_OUT "pre-stanza/out"
#define HOOK_PRESENCE_SELF "presence/self"
#define HOOK_PRESENCE_INITIAL "presence/initial"
#define HOOK_PRESENCE_RESEND "presence/resend"
#define HOOK_SESSION_BOUND "session-bound"
#define HOOK_SESSION_CLOSED "session-closed"
#define HOOK_STREAM_FEATURES "stream-features"
#define HOOK_STREAM_FEATURES_PREAUTH "stream-features/preauth"
#define HOOK_USER_DELETED "user-deleted"
/* Events of presence and capabilities (informational: handlers return HOOK_PASS; ev->stanza is
 * read-only here and must not be taken). Fired by the core, whatever modules are loaded.
 *   resource-available     a bound resource went from unavailable to available (its first available
 *                          presence, or the first after an unavailable one). origin = the session,
 *                          from = its full JID, to = its bare JID, stanza = that presence.
 *   resource-unavailable   the same resource stopped being available: unavailable (or error)
 *                          presence (stanza set), or the stream ended while it was available
 *                          (stanza NULL). Exactly once per resource-available.
 *   contact-presence       presence without type or of type unavailable from another account's JID
 *                          arrived for a local account (bare or full JID; from a local or a remote
 *                          contact), before the delivery hooks (blocking may still drop it).
 *                          from = the contact (full JID as sent), to = the addressee, host = its
 *                          host, origin = the sending local session or NULL, stanza = the presence.
 *   caps-known             XEP-0115: the capabilities of a full JID became known (verified, from the
 *                          cache or a disco#info answer) after it sent presence with caps. from =
 *                          that full JID, host = the local host that learnt it, origin = its session
 *                          when local, stanza = the verified disco#info <query/>. Query them with
 *                          caps_features/caps_has_feature below. */
#define HOOK_RESOURCE_AVAILABLE "resource-available"
#define HOOK_RESOURCE_UNAVAILABLE "resource-unavailable"
#define HOOK_CONTACT_PRESENCE "contact-presence"
#define HOOK_CAPS_KNOWN "caps-known"

/* ---- Timers ------------------------------------------------------------------------------
 * A timer owned by a module (Prosody's module:add_timer) on the server's event loop. fn runs
 * after ms milliseconds (0 allowed: at the next turn of the loop), and with repeat every ms
 * milliseconds until cancelled. A one-shot timer's handle is freed after fn returns; a repeating
 * one's stays valid until module_timer_cancel (allowed from inside its own fn). Every timer of a
 * module is cancelled when the module unloads: fn never runs after that. m NULL: a core timer
 * (cancelled at shutdown). Never NULL. */
typedef struct module_timer module_timer_t;
typedef void (*module_timer_fn)(module_timer_t *t, void *ud);
module_timer_t *module_add_timer(module_ctx_t *m, long ms, int repeat, module_timer_fn fn, void *ud);
/* Stop and free a timer (NULL is a no-op). Do not use the handle after: a one-shot timer whose fn
 * already ran is gone, so cancel only timers that are still pending or repeating. */
void module_timer_cancel(module_timer_t *t);

/* ---- IQ requests with a result callback -----------------------------------------------------
 * Like libstrophe's xmpp_id_handler_add and Prosody's module:send_iq. module_send_iq takes an
 * <iq type='get|set'> with 'to' and 'from' set ('from': this server's domain or a local account's
 * JID: where the answer is addressed) and takes ownership of it. Without an 'id' it gets a random
 * one (128 bits from the CSPRNG, so a third party can neither guess nor predict it); an 'id' the
 * caller set must not be pending already. The IQ is routed (local session, local account, or
 * over federation) and the callback runs exactly once, with one outcome:
 *   IQ_RESULT, IQ_ERROR  the answer: an <iq type='result|error'> with that id, addressed to the
 *                        request's 'from', sent by expected_from (NULL: the request's 'to'). When
 *                        expected_from is a bare JID or a domain (the request went to an account or
 *                        a server), an answer from that JID or without 'from' counts (RFC 6120
 *                        §8.1.2.1). An answer from anyone else is not consumed: it is routed on as
 *                        if no request were pending (to an account or the server it ends there).
 *   IQ_TIMEOUT           nothing within timeout_ms (<= 0: 30 s; at most one hour). reply is a
 *                        synthesized <iq type='error' from=expected_from to=request's from> with
 *                        <error type='wait'><remote-server-timeout/></error>.
 *   IQ_CANCELLED         the owning module unloads (before its unload function runs) or the
 *                        server stops, or iq_request_cancel; reply is NULL. Only to free ud.
 * reply belongs to the core and is valid during the callback only (copy what you keep). The
 * callback may send new requests. Returns a handle valid until the callback has run, or NULL when
 * the IQ is unusable (not get/set, no valid 'to' or 'from', id pending, module unloading): then
 * the IQ is freed and the callback is never called. */
typedef enum { IQ_RESULT, IQ_ERROR, IQ_TIMEOUT, IQ_CANCELLED } iq_outcome_t;
typedef void (*iq_result_fn)(iq_outcome_t outcome, const xnode_t *reply, void *ud);
typedef struct iq_request iq_request_t;
iq_request_t *module_send_iq(module_ctx_t *m, xnode_t *iq, const char *expected_from, long timeout_ms,
                             iq_result_fn cb, void *ud);
const char *iq_request_id(const iq_request_t *r);
/* Cancel a pending request: the callback runs with IQ_CANCELLED now, a late answer is not
 * consumed. NULL is a no-op. */
void iq_request_cancel(iq_request_t *r);

/* ---- Presence and capabilities -----------------------------------------------------------
 * A session's current presence: its last available presence without 'to' (as the client sent
 * it, 'from' stamped), or NULL when it is not available. Read-only; valid until the session's
 * next presence. Priority: session_priority above. */
const xnode_t *session_presence(const session_t *s);

/* XEP-0115 entity capabilities of a full JID (a local session's or a remote contact's whose
 * presence reached a local account), once verified: the disco#info <query/> (identities, features,
 * forms) or NULL while unknown. Valid until the JID's next presence. */
const xnode_t *caps_info(const jid_t *full);
/* The features of caps_info as a list (NULL while unknown); caps_has_feature: 1 when known and
 * listed, e.g. caps_has_feature(j, "urn:xmpp:avatar:metadata+notify"). */
const strlist_t *caps_features(const jid_t *full);
int caps_has_feature(const jid_t *full, const char *var);
/* The same for a local session. */
int session_has_feature(const session_t *s, const char *var);

/* ---- Roster service ----------------------------------------------------------------------
 * Rosters (RFC 6121 §2, XEP-0237), shared by mod_roster, mod_presence and any module that needs a
 * user's contacts: roster_load, roster_find, roster_save (versions and roster pushes), interested
 * resources. Implemented in server/roster.c; documented in server/roster.h. */
#include "roster.h"

#endif
