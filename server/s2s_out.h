/* server/s2s_out.h: outgoing server-to-server streams (s2s_out.c), one per (local domain, remote
 * domain). */
#ifndef CIVITAS_S2S_OUT_H
#define CIVITAS_S2S_OUT_H
#include "s2s_conn.h"

/* s2s_route (s2s.h): a stanza to a remote domain. Takes ownership. */
void s2s_out_route(xnode_t *st);
/* Ask the authoritative server of `remote` whether key is valid for the stream `id` it opened to
 * `local` (XEP-0220 §2.1.2, db:verify), over the outgoing stream (local, remote). The answer goes
 * to done(in_serial, local, remote, result): 1 valid, 0 invalid, -1 no answer. */
typedef void (*s2s_verify_done_fn)(uint64_t in_serial, const char *local, const char *remote, int result);
void s2s_out_verify(const char *local, const char *remote, const char *id, const char *key, uint64_t in_serial,
                    s2s_verify_done_fn done);
void s2s_out_close_all(void);
void s2s_out_free_all(void);

#endif
