/* server/ip_limits.h: per-address accounting for abuse limits (limits.max_connections_per_ip,
 * max_sessions_per_ip, max_unauthenticated; the SASL failures sasl.c counts per address). */
#ifndef CIVITAS_IP_LIMITS_H
#define CIVITAS_IP_LIMITS_H
#include <stdint.h>
#include "session.h"

/* The per-address accounting for abuse limits, keyed by ip_limit_key (an IPv6 /64 is one
 * address). Only connections that have not authenticated are limited tightly: behind one
 * address (a NAT) there may be hundreds of accounts, and accounts are accountable. */
#define IP_SASL_ACCOUNTS 8      /* accounts whose failures an address keeps apart (sasl.c) */
typedef struct ip_state {
    int connections;            /* c2s streams not yet authenticated, and inbound s2s streams */
    int sessions;               /* authenticated c2s streams */
    session_t *unauth;          /* the c2s streams counted in connections (session.ip_next) */
    int sasl_failures;          /* failures not yet forgiven (by a success of their account or by
                                   10 minutes without a failure); the SASL back-off counts these */
    int64_t last_failure_ms;
    struct {
        uint64_t account;       /* hash of the account's bare JID; 0: slot free */
        int failures;           /* its share of sasl_failures */
    } sasl_account[IP_SASL_ACCOUNTS];
} ip_state_t;
ip_state_t *ip_state_get(const char *ip);    /* created on demand; ip is a peer address */
void ip_state_release(const char *ip);       /* drop when unused */
void ip_state_free_all(void);                /* at exit */

/* A client stream s from the address of ip: counted in ip->connections (tightly limited) and in
 * srv->unauthenticated until it authenticates. */
void ip_count_unauth(session_t *s, ip_state_t *ip);
/* Take s out of the counts of its address (ip: its ip_state); a no-op when not counted. */
void ip_uncount(session_t *s, ip_state_t *ip);
/* Authenticated: from the tight count to the generous one. -1 (s unchanged) when its address
 * has limits.max_sessions_per_ip sessions already. */
int ip_count_session(session_t *s);
/* An address at its limit: its connections whose peer has already gone stop counting. */
void ip_reap(ip_state_t *ip);

#endif
