/* server/ip_limits.c: per-address state (connections, sessions, SASL failures) and the count of
 * unauthenticated streams. The flow control of one stream (bytes and stanzas per second, output
 * backlog) is flow.c's: that is per stream and shared with s2s, this is per peer address. */
#include "ip_limits.h"
#include "server.h"
#include <stdlib.h>

ip_state_t *ip_state_get(const char *ip)
{
    char key[IP_LIMIT_KEY_LEN];
    ip_limit_key(ip, key, sizeof key);
    ip_state_t *st = strmap_get(srv->ip_state, key);
    if (!st) {
        st = xcalloc(1, sizeof *st);
        strmap_put(srv->ip_state, key, st);
    }
    return st;
}

/* Forget an address once it has no connections and its failures are old (10 minutes). */
void ip_state_release(const char *ip)
{
    char key[IP_LIMIT_KEY_LEN];
    ip_limit_key(ip, key, sizeof key);
    ip_state_t *st = strmap_get(srv->ip_state, key);
    if (st && st->connections <= 0 && st->sessions <= 0 &&
        (st->sasl_failures == 0 || now_ms() - st->last_failure_ms > 600000))
        free(strmap_del(srv->ip_state, key));
}

void ip_state_free_all(void)
{
    strmap_free_all(srv->ip_state, free);
}

/* ---- per-address accounting (limits.max_connections_per_ip, limits.max_sessions_per_ip) ---- */

enum { IP_UNCOUNTED, IP_UNAUTH, IP_SESSION };     /* session.ip_counted */

void ip_count_unauth(session_t *s, ip_state_t *ip)
{
    s->ip_counted = IP_UNAUTH;
    ip->connections++;
    s->ip_prev = NULL;
    s->ip_next = ip->unauth;
    if (ip->unauth) ip->unauth->ip_prev = s;
    ip->unauth = s;
}

void ip_uncount(session_t *s, ip_state_t *ip)
{
    if (s->ip_counted == IP_UNAUTH) {
        ip->connections--;
        if (s->ip_next) s->ip_next->ip_prev = s->ip_prev;
        if (s->ip_prev) s->ip_prev->ip_next = s->ip_next;
        else ip->unauth = s->ip_next;
        s->ip_next = s->ip_prev = NULL;
    } else if (s->ip_counted == IP_SESSION) {
        ip->sessions--;
    }
    s->ip_counted = IP_UNCOUNTED;
}

int ip_count_session(session_t *s)
{
    ip_state_t *ip = ip_state_get(s->ip);
    if (srv->cfg->max_sessions_per_ip && ip->sessions >= srv->cfg->max_sessions_per_ip) return -1;
    ip_uncount(s, ip);
    s->ip_counted = IP_SESSION;
    ip->sessions++;
    return 0;
}

/* A server that was busy for a moment accepts a whole backlog in one go, before it has
 * read the EOFs of the closed connections in it; counting those, it refused the live connection
 * queued behind them (issue 9: after 500 quick connect/close cycles a login was refused). */
void ip_reap(ip_state_t *ip)
{
    session_t *next;
    for (session_t *s = ip->unauth; s; s = next) {
        next = s->ip_next;
        if (!s->freeing && !s->transport->peer_gone(s)) continue;
        ip_uncount(s, ip);
        if (s->counted_unauth) {
            s->counted_unauth = 0;
            srv->unauthenticated--;
        }
        session_free_later(s);
    }
}
