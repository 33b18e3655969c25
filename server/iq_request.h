/* server/iq_request.h: IQ requests sent by the core or a module with a result callback
 * (Prosody's module:send_iq): the pending table, answer matching by id and sender, time-outs.
 * Below the router: router.c hands it the answers; it sends through the route given at start. */
#ifndef CIVITAS_IQ_REQUEST_H
#define CIVITAS_IQ_REQUEST_H
#include "xml.h"
#include "jid.h"
#include "api.h"

typedef struct module_ctx module_ctx_t;  /* a loaded module's handle (hook.h) */

CIVITAS_API_BEGIN
/* Like libstrophe's xmpp_id_handler_add and Prosody's module:send_iq. module_send_iq takes an
 * <iq type='get|set'> with 'to' and 'from' set ('from': this server's domain, a local account's
 * JID, or a component's domain or a JID at it: where the answer is addressed) and takes ownership
 * of it. Without an 'id' it gets a random one (128 bits from the CSPRNG, so a third party can neither guess nor predict it); an 'id' the
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
CIVITAS_API_END

/* What the requests need from the layers above them, given by main.c (as federation gets its
 * s2s_local_t): the router's route_stanza sends a request; module_unloading tells whether a
 * module's unloading began (it may send nothing then). Set before any request is sent. */
typedef struct iq_request_env {
    void (*route)(xnode_t *st);
    int (*unloading)(const module_ctx_t *m);
} iq_request_env_t;
void iq_requests_start(const iq_request_env_t *env);

/* For router.c: st (an IQ to a local JID) is the answer to a pending request: its callback ran
 * (or will, from the loop) and the caller frees st; 0 when it is not one (route it on). */
int iq_request_deliver(const xnode_t *st, const jid_t *from, const jid_t *to);
/* For module.c: cancel m's pending requests (callbacks with IQ_CANCELLED). For main.c: every
 * one, at exit. */
void iq_requests_forget(module_ctx_t *m);
void iq_requests_shutdown(void);

#endif
