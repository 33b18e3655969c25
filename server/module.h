/* server/module.h: the API between the civitas core and its modules; this header is its
 * documentation. A module is a shared object exporting one const descriptor, civitas_module.
 * Modules include this header only (and system headers). The API is exactly what it declares and
 * what the headers it includes declare under CIVITAS_API (api.h): civitasd is built with
 * -fvisibility=hidden and exports nothing else (scripts/include-graph --exports checks). The
 * functions keep the prefix of their object (session_, stanza_, jid_, xnode_, storage_, ...). */
#ifndef CIVITAS_MODULE_H
#define CIVITAS_MODULE_H
#include "api.h"
#include "xml.h"
#include "jid.h"
#include "strlist.h"      /* strlist_t: list options, roster groups, caps features */
#include "storage.h"     /* per-user key/value stores and lists, transactions */
#include "store.h"        /* module-scoped tables: store_* */
#include "codec.h"       /* base64, SHA-1/-256, HMAC-SHA-256, random bytes, hex */
#include "util.h"        /* xmalloc, xstrdup, xasprintf, strmap: modules use the core's helpers */
#include "log.h"
#include "hook.h"        /* hook_event_t, module_hook, hook_fire */
#include "host.h"        /* host_find, host_name */
#include "session.h"     /* sessions: send, close, data, presence state, output flow */
#include "router.h"      /* route_stanza, hook_reply, hook_error */
#include "stanza.h"      /* stanza_reply, stanza_error, NS_* */
#include "account.h"     /* account_delete, account_create, account_set_password */
#include "timer.h"       /* module_add_timer, module_timer_cancel */
#include "iq_request.h"  /* module_send_iq: IQ requests with a result callback */
#include "caps.h"        /* XEP-0115 capabilities of a JID */
#include "component.h"   /* module_add_component: subdomains a module serves; disco items */
#include "sm_seq.h"      /* XEP-0198 h arithmetic modulo 2^32 (static inline) */
#include "http.h"        /* module_add_http_handler: HTTP requests by path prefix (listen.http/https) */
#include "websocket.h"   /* websocket_handshake: XMPP over WebSocket (RFC 7395) */

#define CIVITAS_MODULE_ABI 4     /* 2: module_t gained conf_size and depends; 3: store;
                                    4: hook_event_t.component */

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
 *   message/component                    every message to a component's domain or a JID at it
 *                                        (room@conference.example), from anyone (local clients have
 *                                        passed pre-stanza/out), before the component's handler;
 *                                        ev->component and ev->host (its parent) set; HOOK_HANDLED:
 *                                        dealt with (answered or dropped), the component never sees it
 *   component/iq, component/message, component/presence
 *                                        not hooks: the names a component's own handler is called
 *                                        with (component.h, module_add_component)
 *   iq-get/component/<ns>, iq-set/component/<ns>
 *                                        an IQ to a component's bare domain its handler passed on
 *                                        (ev->component set; mod_disco answers disco#info/#items)
 *   presence/resend                      send from's current presence to the contact 'to' if it is
 *                                        subscribed (fired by blocking on unblock; presence answers)
 *   smacks/hibernated-stanza             fired by stream management (mod_smacks) for each message it
 *                                        queues for a hibernated session (its connection is gone and it
 *                                        waits for resumption). origin = that session, to = its full
 *                                        JID, from = the sender, host set, stanza = the message
 *                                        (read-only). Handlers return HOOK_PASS. mod_push sends a
 *                                        notification to the registrations enabled from that resource.
 *                                        A session that enabled push carries session data "push.enabled"
 *                                        (non-NULL, set by mod_push): smacks keeps it hibernated for
 *                                        smacks.push_hibernation instead of smacks.hibernation.
 * Handlers of one name run by descending priority (0 is the usual one).
 * (module_hook and hook_fire: hook.h.) */

CIVITAS_API_BEGIN
/* XEP-0030 features and identities of the server, collected from every loaded module. */
void module_add_feature(module_ctx_t *m, const char *var);
void module_add_identity(module_ctx_t *m, const char *category, const char *type, const char *name);
size_t module_feature_count(void);
const char *module_feature(size_t i);
size_t module_identity_count(void);
const disco_identity_t *module_identity(size_t i);
/* XEP-0030 for an account's bare JID: what mod_disco answers disco#info to user@host with (besides
 * the identity account/registered and the disco features), e.g. pubsub/pep and PEP's features
 * (XEP-0163 §1). Removed at the module's unload like the server's. */
void module_add_account_feature(module_ctx_t *m, const char *var);
void module_add_account_identity(module_ctx_t *m, const char *category, const char *type, const char *name);
size_t module_account_feature_count(void);
const char *module_account_feature(size_t i);
size_t module_account_identity_count(void);
const disco_identity_t *module_account_identity(size_t i);

strlist_t *module_errors(module_ctx_t *m);      /* config errors go here; the core prints them */
storage_t *module_storage(module_ctx_t *m);
/* The module's own table `table`, declared in its descriptor's .store and brought to the declared
 * version before load runs (store.h documents declarations and every store_* call); NULL when the
 * module declared no such table. Valid until the module is unloaded. */
store_t *module_store(module_ctx_t *m, const char *table);
const char *module_name(const module_ctx_t *m);
/* The module's own directory for files, data_dir/<module name> (mode 0700, created on the first
 * call), or NULL (logged) when it cannot be made. Valid until the module is unloaded. */
const char *module_data_dir(module_ctx_t *m);

CIVITAS_API_END

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
CIVITAS_API const void *module_host_conf(const module_ctx_t *m, const host_t *h);

/* ---- Hook names as constants -------------------------------------------------------------
 * Use these instead of string literals: a misspelt constant does not compile, a misspelt string
 * silently never fires. The stanza hooks built from a namespace ("iq-get/host/<ns>") stay strings. */
#define HOOK_IQ_HOST "iq/host"
#define HOOK_IQ_BARE "iq/bare"
#define HOOK_IQ_FULL "iq/full"
#define HOOK_MESSAGE_BARE "message/bare"
#define HOOK_MESSAGE_FULL "message/full"
#define HOOK_MESSAGE_HOST "message/host"
#define HOOK_MESSAGE_COMPONENT "message/component"
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
/* Stream management and other stream-level extensions (session.h, "Stream management support"):
 *   stream-element      a top-level element that is not a stanza on an authenticated stream
 *                       (XEP-0198 <enable/> <r/> <a/> <resume/>, XEP-0352 <active/>); origin =
 *                       the session, stanza = the element (may be taken), from = its full JID
 *                       once bound. Not handled: stream error <unsupported-stanza-type/>.
 *   session-hibernated  origin's connection was lost and it is resumable (session_set_resumable):
 *                       it stays bound without a connection until session_close or resumption
 *   session-resumed     origin took over a bound session on a new connection (session_take_over);
 *                       no session-closed / session-bound fire for that
 *   smacks/enable, smacks/resume
 *                       fired by a module (Bind2 / SASL2 inline) for mod_smacks: stanza = the
 *                       <enable/> or <resume/> element (read-only), origin = the session,
 *                       features = the node the answer (<enabled/>, <resumed/>, <failed/>) is
 *                       appended to instead of being written; HOOK_HANDLED when smacks is loaded */
#define HOOK_STREAM_ELEMENT "stream-element"
#define HOOK_SESSION_HIBERNATED "session-hibernated"
#define HOOK_SESSION_RESUMED "session-resumed"
#define HOOK_SMACKS_HIBERNATED_STANZA "smacks/hibernated-stanza"
#define SESSION_DATA_PUSH_ENABLED "push.enabled"
/* Session data (a malloc'd string of serialised XML) set before session_close with a condition: an
 * application-specific condition element the stream error carries after the defined one (RFC 6120
 * §4.9.4), e.g. XEP-0198's <handled-count-too-high/>. */
#define SESSION_DATA_STREAM_ERROR_APP "stream-error.app"
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
 *                          caps_features/caps_has_feature (caps.h). */
#define HOOK_RESOURCE_AVAILABLE "resource-available"
#define HOOK_RESOURCE_UNAVAILABLE "resource-unavailable"
#define HOOK_CONTACT_PRESENCE "contact-presence"
#define HOOK_CAPS_KNOWN "caps-known"
/* mod_pep (XEP-0163): fired before an item is stored. stanza = the whole publish IQ (read-only),
 * origin = the publisher's session, from = its full JID, to = the owner's bare JID, host set. A
 * handler that returns HOOK_HANDLED has answered the IQ with an error; nothing is stored. */
#define HOOK_PEP_PUBLISH "pep/publish"

/* ---- SASL2 (XEP-0388) and Bind2 (XEP-0386): inline features ------------------------------
 * A module that can be negotiated inside SASL2 says so and acts on the client's request:
 *   bind2/inline           advertising: ev->features is Bind2's <inline/> element in the stream
 *                          features; append <feature var='<namespace>'/> (origin, host set)
 *   bind2/enable/<ns>      the client's <bind/> held an element of namespace ns (carbons'
 *                          <enable/>, XEP-0198's <enable/>, XEP-0352's <active/>/<inactive/>): ev->stanza
 *                          is that element (read-only, never taken), origin the session, just bound
 *                          (from = its full JID); append any answer to ev->features, the <bound/>
 *                          element of <success/>. Return HOOK_HANDLED when enabled.
 *   sasl2/inline           advertising outside Bind2: ev->features is SASL2's <inline/> (XEP-0198's <sm/>)
 *   sasl2/request/<ns>     an element of namespace ns directly in <authenticate/> (XEP-0198's
 *                          <resume/>), after authentication and before binding: ev->stanza as above,
 *                          answers go into ev->features (they end up in <success/>). A handler that
 *                          binds the session (a resumed stream) makes the core skip Bind2.
 * Everything runs before <success/> is written; "session-bound" fires after it and the features. */
#define HOOK_BIND2_INLINE "bind2/inline"
#define HOOK_BIND2_ENABLE "bind2/enable/"     /* + the namespace */
#define HOOK_SASL2_INLINE "sasl2/inline"
#define HOOK_SASL2_REQUEST "sasl2/request/"   /* + the namespace */

/* ---- Timers, IQ requests, presence and capabilities -------------------------------------
 * module_add_timer, module_timer_cancel: timer.h. module_send_iq (an IQ with a result callback),
 * iq_request_cancel: iq_request.h. session_presence (a session's current presence): session.h.
 * caps_info, caps_features, caps_has_feature, session_has_feature (XEP-0115): caps.h. */

/* ---- Message flow ------------------------------------------------------------------------
 * Every message the router delivers passes the same three points, whatever its route: to a local
 * bare or full JID, to another server (after "route/remote", which blocking uses), from a local
 * client, from federation, sent by a module (route_stanza, bounces included) or replayed from
 * storage (route_replay, mod_offline). IQs and presence do not pass them. For a local account the
 * addressing hooks (message/bare, message/full) run first; RFC 6121 §8.5 decides in the router
 * (an error to a bare JID is ignored and groupchat to it bounced before "pre"; a message to a full
 * JID without that resource continues as to the bare JID and passes "pre" once).
 *   message/deliver/pre    right before delivery. ev->stanza may be changed in place (e.g. a
 *                          XEP-0359 <stanza-id/> stamped); HOOK_HANDLED stops it (the core frees
 *                          it unless the handler took it: ev->stanza = NULL). from/to/host as in
 *                          the addressing hooks; origin = the local sender's session or NULL.
 *                          Standard priorities: mod_mam strips forged stanza-ids at 1000 and
 *                          stamps its own at -50; mod_carbons copies at -100 (after the stamp, so
 *                          carbons carry it): a handler that may stop a message runs above -50.
 *   message/deliver/post   after it was written to one or more sessions or handed to federation:
 *                          once per message, not per resource. Read-only (archive, push). For a
 *                          remote addressee it fires when federation takes the message; a later
 *                          failure reaches the sender as a bounce (itself a message).
 *   message/undelivered    a message to a local account that no session took (none available with
 *                          a non-negative priority, or all on hold: session_hold_bare): offline
 *                          storage, push. HOOK_HANDLED: kept (or answered); otherwise the core
 *                          drops a headline and bounces anything else (<service-unavailable/>).
 *                          Also fired for an address without an account: handlers check.
 * Replay: a stored message delivered later goes through route_replay, which fires "pre" and "post"
 * again with ev->replay = 1. Rule against doubles: such a message passed "pre" and "undelivered"
 * when it arrived, so a handler stamps (pre) and archives (post, undelivered) only when
 * ev->replay == 0; with ev->replay == 1 it may look (push, counters) but keeps the stored stamp.
 * So every message is stamped once and archived once, at "post" or at "undelivered". */
#define HOOK_MESSAGE_DELIVER_PRE "message/deliver/pre"
#define HOOK_MESSAGE_DELIVER_POST "message/deliver/post"
#define HOOK_MESSAGE_UNDELIVERED "message/undelivered"

/* ---- Lifecycle events --------------------------------------------------------------------
 * Fired by the core from the loop (never inside the call that caused them), whoever acted:
 *   user-created       an account was created (to = from = its bare JID; host set)
 *   password-changed   an account's password was set (the same fields)
 * Both travel like "user-deleted" (above; storage.h "Account events"): account_create,
 * account_set_password (XEP-0077) and civitasctl user add/passwd record a stored event in the same
 * transaction as the write, and the server fires the hook once per event: at the next loop turn
 * for its own writes, within a second for another process's, at the next start for writes made
 * while no server ran. Events of one account fire in the order they happened.
 *   host-started       each served host (host set), once the modules are loaded, before the server
 *                      reports ready and before the account events left from while it was down
 *   host-stopping      each served host at SIGTERM/SIGINT, while the sessions are still open
 * Handlers return HOOK_PASS; there is no stanza. */
#define HOOK_USER_CREATED "user-created"
#define HOOK_PASSWORD_CHANGED "password-changed"
#define HOOK_HOST_STARTED "host-started"
#define HOOK_HOST_STOPPING "host-stopping"

/* ---- Stanza ownership: one rule ----------------------------------------------------------
 * A function that sends or routes a stanza *takes* it when it is the end of its road, and only
 * *reads* it when the stanza goes on to other places:
 *   takes (never touch st afterwards): route_stanza, route_replay, hook_reply (its reply),
 *     module_send_iq (iq_request.h).
 *   reads (the caller still owns and frees it): session_send, and every hook_fire: ev->stanza
 *     belongs to whoever fired the hook (the core frees the stanzas it fires) unless a handler
 *     takes it by setting ev->stanza = NULL; a handler that takes it must also return
 *     HOOK_HANDLED, and nobody else may keep a pointer to it past the handler.
 *   builds (the caller owns the result): stanza_reply, stanza_error, stanza_error_cond,
 *     xnode_copy, xnode_parse_one.
 * Errors: typed conditions (stanza_err_t, stanza.h) with hook_error_cond / stanza_error_cond;
 * hook_own_account (router.h) is the "own account?" check; stanza_presence and stanza_push_iq
 * (stanza.h) build a presence and a push; xep0082_timestamp (stanza.h) the XEP-0082 time format;
 * session_receives_bare (session.h) the resources a bare-JID message goes to. */

/* ---- Roster service ----------------------------------------------------------------------
 * Rosters (RFC 6121 §2, XEP-0237), shared by mod_roster, mod_presence and any module that needs a
 * user's contacts: roster_load, roster_find, roster_save (versions and roster pushes), interested
 * resources. Implemented in server/roster.c; documented in server/roster.h. */
#include "roster.h"

#endif
