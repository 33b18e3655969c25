/* server/component.h: components, after Prosody's: domains a module serves besides the hosts
 * (conference.<host>, upload.<host>, or any domain the admin configures). The router hands every
 * stanza addressed to a component's domain or to a JID at it (room@conference.example/nick) to
 * the component's handler; federation accepts streams to it and sends from it. A component has
 * its own disco#info (identities, features) and is listed in its parent host's disco#items.
 * Also plain items of a host's disco#items, for services that are no domain of their own. */
#ifndef CIVITAS_COMPONENT_H
#define CIVITAS_COMPONENT_H
#include "host.h"
#include "hook.h"

typedef struct disco_identity { const char *category, *type, *name; } disco_identity_t;
typedef struct disco_item { const host_t *host; const char *jid, *node, *name; } disco_item_t;

CIVITAS_API_BEGIN
/* Serve `domain` (prepared here; must be no host and no other component) for module m, listed in
 * parent's disco#items under `name` (may be NULL). Every stanza to the domain or a JID at it goes
 * to fn(ev, ud) with ev->name "component/iq", "component/message" or "component/presence",
 * ev->component = the component, ev->host = parent, ev->from/ev->to set. A handler that returns
 * HOOK_PASS leaves it to the core: an IQ get/set to the bare domain fires
 * "iq-get/component/<ns>" / "iq-set/component/<ns>" (mod_disco answers disco#info and #items
 * from what is registered below); any other IQ get/set and any message (not error or headline)
 * is answered <service-unavailable/>; presence is dropped. What the component sends goes out
 * through route_stanza with 'from' at its domain, to local users and over federation. Returns
 * NULL (logged) when the domain is invalid or taken. Removed when m is unloaded. Messages to a
 * component end at it: they do not pass the message flow hooks (module.h, "Message flow"), only
 * "message/component" right before the handler (module.h); what it sends to accounts does. Its IQ requests (module_send_iq from its domain) work as a host's. */
component_t *module_add_component(module_ctx_t *m, host_t *parent, const char *domain, const char *name,
                                  hook_fn fn, void *ud);
const char *component_domain(const component_t *c);
const char *component_name(const component_t *c);          /* NULL when none was given */
host_t *component_parent(const component_t *c);
void component_add_identity(component_t *c, const char *category, const char *type, const char *name);
void component_add_feature(component_t *c, const char *var);
size_t component_identity_count(const component_t *c);
const disco_identity_t *component_identity(const component_t *c, size_t i);
size_t component_feature_count(const component_t *c);
const char *component_feature(const component_t *c, size_t i);
component_t *component_find(const char *domain);            /* a prepared domain, or NULL */
size_t component_count(void);                                /* all components, in registration order */
component_t *component_at(size_t i);                         /* NULL past the end */

/* A plain item in host's disco#items (XEP-0030 §4): jid, optional node and name. Removed when m
 * is unloaded. */
void module_add_item(module_ctx_t *m, host_t *host, const char *jid, const char *node, const char *name);
size_t module_item_count(void);
const disco_item_t *module_item(size_t i);
CIVITAS_API_END

/* For the core: the host view of a component's domain (its name is the component's domain; it has
 * no accounts), for federation's streams to and from it; NULL when no component serves domain. */
host_t *component_host(const char *domain);
/* The served host whose TLS certificate a stream from `domain` presents: the host itself, a
 * component's parent, or NULL. */
const host_t *component_cert_host(const char *domain);
/* Run c's handler for ev. */
int component_fire(component_t *c, hook_event_t *ev);
/* module.c: drop what m registered; everything at shutdown. */
void component_forget(const module_ctx_t *m);

#endif
