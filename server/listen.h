/* server/listen.h: the listening sockets of the config; each accepted connection goes to c2s.c or
 * to federation. */
#ifndef CIVITAS_LISTEN_H
#define CIVITAS_LISTEN_H

/* Open every listener of the config; logs "listening <kind> <addr>:<port>". 0/-1 */
int listen_start(void);
void listen_stop(void);

#endif
