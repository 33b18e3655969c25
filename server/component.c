/* server/component.c: the component table and the plain disco items of hosts (component.h). */
#include "component.h"
#include "jid.h"
#include "log.h"
#include <stdlib.h>
#include <string.h>

struct component {
    host_t host;                /* name = the component's domain; users stays empty */
    char *name;
    host_t *parent;
    const module_ctx_t *owner;
    hook_fn fn;
    void *ud;
    disco_identity_t *ids; size_t nids;
    char **features; size_t nfeatures;
};

typedef struct item { disco_item_t it; const module_ctx_t *owner; } item_t;

static component_t **comps; static size_t ncomps;
static item_t *items; static size_t nitems;

component_t *component_find(const char *domain)
{
    for (size_t i = 0; domain && i < ncomps; i++)
        if (strcmp(comps[i]->host.name, domain) == 0) return comps[i];
    return NULL;
}

host_t *component_host(const char *domain)
{
    component_t *c = component_find(domain);
    return c ? &c->host : NULL;
}

const host_t *component_cert_host(const char *domain)
{
    host_t *h = host_find(domain);
    if (h) return h;
    component_t *c = component_find(domain);
    return c ? c->parent : NULL;
}

component_t *module_add_component(module_ctx_t *m, host_t *parent, const char *domain, const char *name,
                                  hook_fn fn, void *ud)
{
    char *d = domain ? jid_prep_domain(domain) : NULL;
    if (!d || !parent || !fn || host_find(d) || component_find(d)) {
        log_error("component", "cannot serve '%s': %s", domain ? domain : "(null)",
                  !d ? "not a valid domain" : !parent || !fn ? "no parent host or handler" : "domain already served");
        free(d);
        return NULL;
    }
    component_t *c = xcalloc(1, sizeof *c);
    c->host.name = d;
    c->host.users = strmap_new();
    c->name = name ? xstrdup(name) : NULL;
    c->parent = parent;
    c->owner = m;
    c->fn = fn;
    c->ud = ud;
    comps = xrealloc(comps, (ncomps + 1) * sizeof *comps);
    comps[ncomps++] = c;
    log_info("component", "serving %s (under %s)", d, host_name(parent));
    return c;
}

const char *component_domain(const component_t *c) { return c->host.name; }
const char *component_name(const component_t *c) { return c->name; }
host_t *component_parent(const component_t *c) { return c->parent; }
size_t component_count(void) { return ncomps; }
component_t *component_at(size_t i) { return i < ncomps ? comps[i] : NULL; }

void component_add_identity(component_t *c, const char *category, const char *type, const char *name)
{
    c->ids = xrealloc(c->ids, (c->nids + 1) * sizeof *c->ids);
    c->ids[c->nids++] = (disco_identity_t){xstrdup(category), xstrdup(type), name ? xstrdup(name) : NULL};
}

void component_add_feature(component_t *c, const char *var)
{
    for (size_t i = 0; i < c->nfeatures; i++)
        if (strcmp(c->features[i], var) == 0) return;
    c->features = xrealloc(c->features, (c->nfeatures + 1) * sizeof *c->features);
    c->features[c->nfeatures++] = xstrdup(var);
}

size_t component_identity_count(const component_t *c) { return c->nids; }
const disco_identity_t *component_identity(const component_t *c, size_t i) { return i < c->nids ? &c->ids[i] : NULL; }
size_t component_feature_count(const component_t *c) { return c->nfeatures; }
const char *component_feature(const component_t *c, size_t i) { return i < c->nfeatures ? c->features[i] : NULL; }

int component_fire(component_t *c, hook_event_t *ev)
{
    ev->component = c;
    return c->fn(ev, c->ud);
}

void module_add_item(module_ctx_t *m, host_t *host, const char *jid, const char *node, const char *name)
{
    items = xrealloc(items, (nitems + 1) * sizeof *items);
    items[nitems++] = (item_t){{host, xstrdup(jid), node ? xstrdup(node) : NULL, name ? xstrdup(name) : NULL}, m};
}

size_t module_item_count(void) { return nitems; }
const disco_item_t *module_item(size_t i) { return i < nitems ? &items[i].it : NULL; }

static void component_free(component_t *c)
{
    for (size_t i = 0; i < c->nids; i++) {
        free((char *)c->ids[i].category);
        free((char *)c->ids[i].type);
        free((char *)c->ids[i].name);
    }
    for (size_t i = 0; i < c->nfeatures; i++) free(c->features[i]);
    free(c->ids);
    free(c->features);
    strmap_free(c->host.users);
    free(c->host.name);
    free(c->name);
    free(c);
}

void component_forget(const module_ctx_t *m)
{
    size_t j = 0;
    for (size_t i = 0; i < ncomps; i++) {
        if (!m || comps[i]->owner == m) component_free(comps[i]);
        else comps[j++] = comps[i];
    }
    ncomps = j;
    j = 0;
    for (size_t i = 0; i < nitems; i++) {
        if (!m || items[i].owner == m) {
            free((char *)items[i].it.jid);
            free((char *)items[i].it.node);
            free((char *)items[i].it.name);
        } else items[j++] = items[i];
    }
    nitems = j;
    if (!m) {
        free(comps); comps = NULL;
        free(items); items = NULL;
    }
}
