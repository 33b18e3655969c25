/* server/s2s_in.h: incoming server-to-server streams (s2s_in.c). */
#ifndef CIVITAS_S2S_IN_H
#define CIVITAS_S2S_IN_H
#include "s2s_conn.h"

void s2s_in_accept(int fd, const char *peer_ip, int direct_tls);
/* The answer to a db:verify: result 1 valid, 0 invalid, -1 no answer (connection failed). The
 * incoming stream in_serial may have gone meanwhile: then nothing happens. */
void s2s_in_verify_result(uint64_t in_serial, const char *local, const char *remote, int result);
void s2s_in_close_all(void);

#endif
