/* server/s2s.c: federation's entry points for the core: start, stop, accepting, routing. */
#include "s2s.h"
#include "s2s_in.h"
#include "s2s_out.h"
#include "dialback.h"
#include "dns.h"
#include "certcheck.h"

void s2s_set_local(const s2s_local_t *to_local) { s2s_conn_set_local(to_local); }

int s2s_start(const s2s_local_t *to_local)
{
    s2s_set_local(to_local);
    dialback_init();
    if (dns_start(srv->base) < 0) return -1;
    return 0;
}

void s2s_accept(int fd, const char *peer_ip, int direct_tls)
{
    s2s_in_accept(fd, peer_ip, direct_tls);
}

void s2s_route(xnode_t *st) { s2s_out_route(st); }

size_t s2s_stream_count(void) { return s2s_conn_count(); }

void s2s_close_all(void)
{
    s2s_out_close_all();
    s2s_in_close_all();
}

void s2s_stop(void)
{
    /* connections still open (the shutdown timer ran out): free them now, owners are told */
    s2s_conn_free_all();
    s2s_out_free_all();
    dns_stop();
    certcheck_cleanup();
    dialback_cleanup();
}
