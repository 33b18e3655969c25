/* server/dns.h: asynchronous DNS for federation (SRV and address lookups) on libunbound, driven by
 * the libevent loop: no lookup ever blocks the server. The only file that includes unbound.h is dns.c. */
#ifndef CIVITAS_DNS_H
#define CIVITAS_DNS_H
#include <stddef.h>
#include <sys/socket.h>
#include <event2/event.h>

typedef struct dns_query dns_query_t;

/* Outcome of a lookup. DNS_EMPTY covers NXDOMAIN and NODATA (the name has no such records), which
 * callers treat differently from a failure (RFC 6120 §3.2.1: fall back to A/AAAA only then, though
 * civitas falls back on failures too, as Prosody and ejabberd do). */
typedef enum { DNS_OK = 0, DNS_EMPTY, DNS_FAIL } dns_status_t;

typedef struct dns_srv_rr {
    int priority, weight, port;
    char *target;           /* host name without trailing dot; "." (service refused) is reported as "" */
} dns_srv_rr_t;

/* Start the resolver on base: the system's /etc/resolv.conf and /etc/hosts, unless the environment
 * variable CIVITAS_DNS_SERVER names a forwarder "ADDR" or "ADDR@PORT" (tests and closed networks;
 * then /etc/hosts is not read either). 0, or -1 after logging why. */
int dns_start(struct event_base *base);
/* Cancel every lookup (no callback runs) and stop the resolver. Safe when never started. */
void dns_stop(void);

/* SRV records of name (e.g. "_xmpp-server._tcp.example.org"), in RFC 2782 order: ascending
 * priority, weighted random order within one priority. cb runs later from the event loop, never
 * from inside this call; rrs and their strings belong to dns.c and are valid during the call
 * only. The handle is gone once cb runs (do not cancel it there). NULL when the lookup cannot
 * start (cb will not run). name must be ASCII (A-labels). */
typedef void (*dns_srv_cb)(void *ud, dns_status_t status, const dns_srv_rr_t *rrs, size_t n);
dns_query_t *dns_srv(const char *name, dns_srv_cb cb, void *ud);

/* Addresses of host (AAAA and A, asked in parallel; IPv6 addresses first), each with port set.
 * host may be an IPv4 literal or an IPv6 literal with or without brackets: then no DNS is asked
 * (cb still runs later). Same rules for cb and the handle as dns_srv. */
typedef void (*dns_addr_cb)(void *ud, dns_status_t status, const struct sockaddr_storage *addrs, size_t n);
dns_query_t *dns_addr(const char *host, int port, dns_addr_cb cb, void *ud);

/* Abandon a lookup whose callback has not run yet: it never runs. NULL is a no-op. */
void dns_cancel(dns_query_t *q);

/* 1 when name is plain ASCII (usable as a DNS name as it is), else 0. */
int dns_name_is_ascii(const char *name);

#endif
