/* server/host.c: the host table: the domains of the config, prepared, looked up by name. */
#include "host.h"
#include "server.h"
#include "jid.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

host_t *host_find(const char *domain)
{
    for (size_t i = 0; i < srv->nhosts; i++)
        if (strcmp(srv->hosts[i]->name, domain) == 0) return srv->hosts[i];
    return NULL;
}

const char *host_name(const host_t *h) { return h->name; }
size_t host_count(void) { return srv->nhosts; }
host_t *host_at(size_t i) { return i < srv->nhosts ? srv->hosts[i] : NULL; }

int host_setup(void)
{
    srv->nhosts = srv->cfg->nhosts;
    srv->hosts = xcalloc(srv->nhosts, sizeof *srv->hosts);
    for (size_t i = 0; i < srv->nhosts; i++) {
        char *name = jid_prep_domain(srv->cfg->hosts[i].name);
        if (!name) {
            fprintf(stderr, "%s:%d: hosts: '%s' is not a valid domain\n", srv->cfg->hosts[i].file,
                    srv->cfg->hosts[i].line, srv->cfg->hosts[i].name);
            return -1;
        }
        srv->hosts[i] = xcalloc(1, sizeof(host_t));
        srv->hosts[i]->name = name;
        srv->hosts[i]->users = strmap_new();
    }
    return 0;
}

void host_free_all(void)
{
    for (size_t i = 0; i < srv->nhosts; i++) {
        strmap_free(srv->hosts[i]->users);
        free(srv->hosts[i]->name);
        free(srv->hosts[i]);
    }
    free(srv->hosts);
}

int host_partner_e2e(const char *domain)
{
    const cfg_partner_t *p = domain ? config_partner(srv->cfg, domain) : NULL;
    return p && p->e2e_line ? (int)p->e2e : -1;
}

int host_any_partner_e2e(void)
{
    for (size_t i = 0; i < srv->cfg->npartners; i++)
        if (srv->cfg->partners[i].e2e_line) return 1;
    return 0;
}
