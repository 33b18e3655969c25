/* server/module.c: loading modules with dlopen, and the registry of what they add: named
 * hooks ordered by priority, disco features and identities. Unloading removes it all. */
#include "server.h"
#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct module_ctx {
    const module_t *desc;
    void *dl;                   /* dlopen handle */
    strlist_t errors;
    module_ctx_t *next;
};

typedef struct hook_entry {
    int priority;
    hook_fn fn;
    void *ud;
    module_ctx_t *owner;
} hook_entry_t;

typedef struct hook_list {
    hook_entry_t *v;
    size_t n;
} hook_list_t;

typedef struct feature { char *var; module_ctx_t *owner; } feature_t;
typedef struct identity { disco_identity_t id; module_ctx_t *owner; } identity_t;

static strmap_t *hooks;             /* name -> hook_list_t */
static module_ctx_t *loaded;
static feature_t *features; static size_t nfeatures;
static identity_t *identities; static size_t nidentities;

void module_hook(module_ctx_t *m, const char *name, int priority, hook_fn fn, void *ud)
{
    if (!hooks) hooks = strmap_new();
    hook_list_t *l = strmap_get(hooks, name);
    if (!l) {
        l = xcalloc(1, sizeof *l);
        strmap_put(hooks, name, l);
    }
    l->v = xrealloc(l->v, (l->n + 1) * sizeof *l->v);
    size_t i = l->n;
    while (i > 0 && l->v[i - 1].priority < priority) {   /* stable: equal priorities keep load order */
        l->v[i] = l->v[i - 1];
        i--;
    }
    l->v[i] = (hook_entry_t){priority, fn, ud, m};
    l->n++;
}

int hook_fire(hook_event_t *ev)
{
    hook_list_t *l = hooks ? strmap_get(hooks, ev->name) : NULL;
    if (!l) return HOOK_PASS;
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].fn(ev, l->v[i].ud) == HOOK_HANDLED) return HOOK_HANDLED;
    return HOOK_PASS;
}

void module_add_feature(module_ctx_t *m, const char *var)
{
    for (size_t i = 0; i < nfeatures; i++)
        if (strcmp(features[i].var, var) == 0) return;
    features = xrealloc(features, (nfeatures + 1) * sizeof *features);
    features[nfeatures++] = (feature_t){xstrdup(var), m};
}

void module_add_identity(module_ctx_t *m, const char *category, const char *type, const char *name)
{
    identities = xrealloc(identities, (nidentities + 1) * sizeof *identities);
    identities[nidentities++] = (identity_t){{xstrdup(category), xstrdup(type), xstrdup(name)}, m};
}

size_t module_feature_count(void) { return nfeatures; }
const char *module_feature(size_t i) { return i < nfeatures ? features[i].var : NULL; }
size_t module_identity_count(void) { return nidentities; }
const disco_identity_t *module_identity(size_t i) { return i < nidentities ? &identities[i].id : NULL; }

const cfg_node_t *module_config(module_ctx_t *m) { return config_module_section(srv->cfg, m->desc->name); }
strlist_t *module_errors(module_ctx_t *m) { return &m->errors; }
storage_t *module_storage(module_ctx_t *m) { (void)m; return srv->store; }
const config_t *server_config(void) { return srv->cfg; }
const char *module_name(const module_ctx_t *m) { return m->desc->name; }

/* Where modules live: $CIVITAS_MODULE_DIR, else next to a civitasd run from the build tree
 * (libtool puts the objects in modules/.libs), else the installed module directory. */
static char *module_path(const char *name)
{
    const char *env = getenv("CIVITAS_MODULE_DIR");
    if (env && *env) return xasprintf("%s/mod_%s.so", env, name);
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            char *p = xasprintf("%s/modules/.libs/mod_%s.so", exe, name);
            if (access(p, R_OK) == 0) return p;
            free(p);
        }
    }
    return xasprintf("%s/mod_%s.so", MODULEDIR, name);
}

static int module_load_one(const char *name)
{
    for (const char *c = name; *c; c++)
        if (!(( *c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_')) {
            log_error("modules", "invalid module name '%s'", name);
            return -1;
        }
    char *path = module_path(name);
    void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        log_error("modules", "cannot load module '%s': %s", name, dlerror());
        free(path);
        return -1;
    }
    free(path);
    const module_t *desc = dlsym(dl, "civitas_module");
    if (!desc || desc->abi != CIVITAS_MODULE_ABI || !desc->name || strcmp(desc->name, name) != 0 || !desc->load) {
        log_error("modules", "module '%s' has no matching civitas_module descriptor (ABI %d)", name, CIVITAS_MODULE_ABI);
        dlclose(dl);
        return -1;
    }
    module_ctx_t *m = xcalloc(1, sizeof *m);
    m->desc = desc;
    m->dl = dl;
    m->next = loaded;
    loaded = m;
    if (desc->load(m) < 0) {
        for (size_t i = 0; i < m->errors.n; i++) log_error("config", "%s", m->errors.v[i]);
        log_error("modules", "module '%s' failed to load", name);
        return -1;
    }
    log_debug("modules", "loaded %s", name);
    return 0;
}

int modules_load(void)
{
    const config_t *c = srv->cfg;
    if (c->modules_set) {
        for (size_t i = 0; i < c->modules.n; i++)
            if (module_load_one(c->modules.v[i]) < 0) return -1;
    } else {
        for (size_t i = 0; standard_modules[i]; i++)
            if (module_load_one(standard_modules[i]) < 0) return -1;
    }
    return 0;
}

/* Remove everything m registered (hooks, features, identities). */
static void module_forget(module_ctx_t *m)
{
    size_t pos = 0;
    const char *key;
    void *val;
    while (hooks && strmap_next(hooks, &pos, &key, &val)) {
        hook_list_t *l = val;
        size_t j = 0;
        for (size_t i = 0; i < l->n; i++)
            if (l->v[i].owner != m) l->v[j++] = l->v[i];
        l->n = j;
    }
    size_t j = 0;
    for (size_t i = 0; i < nfeatures; i++) {
        if (features[i].owner == m) free(features[i].var);
        else features[j++] = features[i];
    }
    nfeatures = j;
    j = 0;
    for (size_t i = 0; i < nidentities; i++) {
        if (identities[i].owner == m) {
            free((char *)identities[i].id.category);
            free((char *)identities[i].id.type);
            free((char *)identities[i].id.name);
        } else identities[j++] = identities[i];
    }
    nidentities = j;
}

void modules_unload(void)
{
    while (loaded) {
        module_ctx_t *m = loaded;
        loaded = m->next;
        if (m->desc->unload) m->desc->unload(m);
        module_forget(m);
        strlist_free(&m->errors);
        dlclose(m->dl);
        free(m);
    }
    size_t pos = 0;
    void *val;
    while (hooks && strmap_next(hooks, &pos, NULL, &val)) {
        hook_list_t *l = val;
        free(l->v);
        free(l);
    }
    strmap_free(hooks);
    hooks = NULL;
    free(features); features = NULL;
    free(identities); identities = NULL;
}
