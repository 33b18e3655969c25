/* server/router.h: where stanzas go: from local clients and from federation to local sessions,
 * to module hooks, to federation, or back as bounces. */
#ifndef CIVITAS_ROUTER_H
#define CIVITAS_ROUTER_H
#include "session.h"
#include "hook.h"
#include "stanza.h"
#include "api.h"

/* A stanza from a local client session (from already stamped). Takes ownership. */
void router_from_client(session_t *s, xnode_t *st);
/* A stanza from a remote server, already checked by s2s_in (its 'from' domain is authenticated
 * on the stream, its 'to' is a domain we serve, its namespace is jabber:client as for local
 * stanzas). Routed exactly like a local stanza (hooks, delivery, bounces). Takes ownership.
 * Federation reaches it through the function given to s2s_start. */
void router_from_remote(xnode_t *st, const char *authenticated_domain);

CIVITAS_API_BEGIN
/* Routing. route_stanza takes ownership: it delivers to a local session, to a local account's
 * hooks, or bounces with the RFC's error. The stanza needs 'to' and 'from' set. */
void route_stanza(xnode_t *stanza);
/* Deliver a message stored for s's account (offline replay) to session s through the same hooks
 * as live delivery, with ev->replay = 1: "message/deliver/pre" (may change or stop it), the
 * write, "message/deliver/post". Takes ownership. Returns 1 when written, 0 when a handler
 * stopped it. */
int route_replay(session_t *s, xnode_t *st);
/* Route a reply or error built from ev->stanza back to its sender; returns HOOK_HANDLED. For an
 * origin without a bound JID (the preauth hooks) the reply goes straight back on its stream. */
int hook_reply(hook_event_t *ev, xnode_t *reply);
/* Answer ev->stanza with an error; returns HOOK_HANDLED. */
int hook_error(hook_event_t *ev, const char *type, const char *condition);
/* 1 when ev came from a local client session of the very account it addresses (its bare JID, or
 * no 'to', which the core turns into that): the check before a user's own data is read or
 * changed (roster, vCard, private XML, blocking list). 0 otherwise (another account, a remote
 * sender, the server itself). */
int hook_own_account(const hook_event_t *ev);
/* Answer ev->stanza with a typed error (stanza.h: cond's default type, no text); HOOK_HANDLED. */
int hook_error_cond(hook_event_t *ev, stanza_err_t cond);
CIVITAS_API_END

#endif
