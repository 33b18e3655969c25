/* server/host.h: the domains this server serves: the host table, made from the config at start,
 * each host with its table of online accounts (filled by session.c). */
#ifndef CIVITAS_HOST_H
#define CIVITAS_HOST_H
#include "util.h"
#include "api.h"

typedef struct host host_t;           /* a domain this server serves */

struct host {
    char *name;                 /* prepared domain */
    strmap_t *users;            /* bare JID -> user_t (session.h), only accounts that are online */
};

CIVITAS_API_BEGIN
const char *host_name(const host_t *h);
host_t *host_find(const char *domain);          /* a served domain, or NULL */
/* Every served domain, in the config's order: host_at(0) .. host_at(host_count() - 1). */
size_t host_count(void);
host_t *host_at(size_t i);                      /* NULL past the end */
/* The end-to-end encryption policy written for the federation partner domain (federation.partners[]
 * e2e: 0 off, 1 warn, 2 require), or -1 when domain is no partner or its entry writes none. Reads
 * the running configuration, so SIGHUP applies. */
enum { HOST_E2E_OFF = 0, HOST_E2E_WARN = 1, HOST_E2E_REQUIRE = 2 };
int host_partner_e2e(const char *domain);
/* 1 when some federation partner's entry writes an e2e policy (host_partner_e2e >= 0 for it). */
int host_any_partner_e2e(void);
CIVITAS_API_END

/* main.c: make the table from the config's hosts (0, or -1 after printing FILE:LINE: why), and
 * free it at the end. */
int host_setup(void);
void host_free_all(void);

#endif
