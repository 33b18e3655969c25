/* server/fast.h: XEP-0484 FAST: the HT-* mechanisms on a stream (fast.c); what is stored per
 * account and client is fast_store.h. */
#ifndef CIVITAS_FAST_H
#define CIVITAS_FAST_H
#include "fast_store.h"

/* ---- on a stream (fast.c) ---- */
typedef struct session session_t;
typedef struct sasl2_req sasl2_req_t;
typedef struct xnode xnode_t;
/* The <fast/> inline feature (its mechanisms) into inline, when FAST works on s. */
void fast_add_inline(session_t *s, xnode_t *inl);
/* 1 when mech is a FAST mechanism offered on s. */
int fast_mech_offered(session_t *s, const char *mech);
/* Authenticate with a token: mechanism r->mechanism, initial response r->initial. Ends in
 * sasl_success or sasl_fail_as. */
void fast_authenticate(session_t *s, sasl2_req_t *r);
/* After success: the <token/> to add to <success/> (a new token when the client asked for one or the
 * one it used is due for rotation), or NULL. */
xnode_t *fast_after_success(session_t *s, sasl2_req_t *r);

/* ---- the sweep (fast.c) ---- */
/* Rows with nothing left in them (fast_sweep_step) are deleted for every account: a pass at start-up
 * and one every hour, in small batches, one per turn of the event loop. main.c. */
void fast_sweep_start(void);
void fast_sweep_stop(void);

#endif
