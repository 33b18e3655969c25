/* server/hook.h: named hooks (Prosody-style): handlers registered by modules under a name, run by
 * descending priority when the core or a module fires the name. Below everything that fires them. */
#ifndef CIVITAS_HOOK_H
#define CIVITAS_HOOK_H
#include "xml.h"
#include "jid.h"
#include "api.h"

typedef struct session session_t;     /* a client's stream (opaque to modules) */
typedef struct host host_t;           /* a domain this server serves */
typedef struct module_ctx module_ctx_t;  /* a loaded module's handle: what it registered */
typedef struct component component_t;   /* a domain a module serves (component.h) */

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
    int replay;              /* message/deliver/pre and /post: 1 for a stored message delivered
                                again (offline replay, route_replay): it passed
                                "message/deliver/pre" and "message/undelivered" when it arrived */
    component_t *component;  /* stanzas to a component (component.h): the component addressed */
} hook_event_t;

typedef int (*hook_fn)(hook_event_t *ev, void *ud);

/* Register fn under name for module m (the hook names are listed in module.h). Handlers of one
 * name run by descending priority; equal priorities keep the order of registration. */
CIVITAS_API void module_hook(module_ctx_t *m, const char *name, int priority, hook_fn fn, void *ud);
/* Run the handlers of ev->name; returns HOOK_HANDLED when one took it. Used by the core and
 * by modules firing their own events. */
CIVITAS_API int hook_fire(hook_event_t *ev);

/* For module.c: drop every handler m registered (unload), and everything at shutdown. */
void hook_forget(const module_ctx_t *m);
void hook_free_all(void);

#endif
