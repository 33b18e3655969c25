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
#include "config.h"
#include "storage.h"
#include "util.h"        /* xmalloc, xstrdup, xasprintf, strmap: modules use the core's helpers */
#include "log.h"
#include "hook.h"        /* hook_event_t, module_hook, hook_fire */
#include "host.h"        /* host_find, host_name */
#include "session.h"     /* sessions: send, close, data, presence state, output flow */
#include "router.h"      /* route_stanza, hook_reply, hook_error */
#include "stanza.h"      /* stanza_reply, stanza_error, NS_* */
#include "account.h"     /* account_delete */

#define CIVITAS_MODULE_ABI 1

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
 * Handlers of one name run by descending priority (0 is the usual one).
 * (module_hook and hook_fire: hook.h.) */

CIVITAS_API_BEGIN
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
const char *module_name(const module_ctx_t *m);

CIVITAS_API_END

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
} module_t;

/* ---- Roster service ----------------------------------------------------------------------
 * Rosters (RFC 6121 §2, XEP-0237), shared by mod_roster, mod_presence and any module that needs a
 * user's contacts: roster_load, roster_find, roster_save (versions and roster pushes), interested
 * resources. Implemented in server/roster.c; documented in server/roster.h. */
#include "roster.h"

#endif
