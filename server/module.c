/* server/module.c: loading modules with dlopen, and the registry of what they add: disco features
 * and identities (their hooks: hook.c). Unloading removes it all. */
#include "module.h"
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

typedef struct feature { char *var; module_ctx_t *owner; } feature_t;
typedef struct identity { disco_identity_t id; module_ctx_t *owner; } identity_t;

static module_ctx_t *loaded;
static feature_t *features; static size_t nfeatures;
static identity_t *identities; static size_t nidentities;

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

/* Check the module's section against its option rows; with store, put every value (or its
 * default) into desc->conf. Errors ("FILE:LINE: ...") go to errors. 0/-1 */
static int module_options(const module_t *desc, const config_t *c, strlist_t *errors, int store)
{
    const cfg_node_t *sec = config_module_section(c, desc->name);
    const module_option_t *o = desc->options;
    size_t n = 0;
    while (o && o[n].name) n++;
    const char **keys = xcalloc(n + 1, sizeof *keys);
    for (size_t i = 0; i < n; i++) keys[i] = o[i].name;
    int bad = sec && cfg_check_keys(sec, keys, errors) < 0;
    free(keys);
    for (size_t i = 0; i < n; i++) {
        long v = o[i].def;
        int b = (int)o[i].def;
        if (o[i].type == MOPT_INT) {
            if (cfg_get_int(sec, o[i].name, o[i].def, o[i].min, o[i].max, &v, errors) < 0) bad = 1;
            else if (store) *(long *)((char *)desc->conf + o[i].offset) = v;
        } else {
            if (cfg_get_bool(sec, o[i].name, (int)o[i].def, &b, errors) < 0) bad = 1;
            else if (store) *(int *)((char *)desc->conf + o[i].offset) = b;
        }
    }
    return bad ? -1 : 0;
}

/* dlopen a module and find its descriptor; NULL (with a message in errors) when impossible. */
static const module_t *module_open(const char *name, void **dl, strlist_t *errors)
{
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_')) {
            strlist_add(errors, "invalid module name");
            return NULL;
        }
    char *path = module_path(name);
    *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!*dl) {
        char *e = xasprintf("cannot load module '%s': %s", name, dlerror());
        strlist_add(errors, e);
        free(e);
        free(path);
        return NULL;
    }
    free(path);
    const module_t *desc = dlsym(*dl, "civitas_module");
    if (!desc || desc->abi != CIVITAS_MODULE_ABI || !desc->name || strcmp(desc->name, name) != 0 || !desc->load ||
        (desc->options && !desc->conf)) {
        char *e = xasprintf("module '%s' has no matching civitas_module descriptor (ABI %d)", name, CIVITAS_MODULE_ABI);
        strlist_add(errors, e);
        free(e);
        dlclose(*dl);
        return NULL;
    }
    return desc;
}

int modules_check(const config_t *c, strlist_t *errors)
{
    int bad = 0;
    const strlist_t *list = &c->modules;
    size_t n = 0;
    if (!c->modules_set) while (standard_modules[n]) n++;
    else n = list->n;
    for (size_t i = 0; i < n; i++) {
        void *dl;
        const module_t *desc = module_open(c->modules_set ? list->v[i] : standard_modules[i], &dl, errors);
        if (!desc || module_options(desc, c, errors, 0) < 0) bad = 1;
        if (desc) dlclose(dl);
    }
    return bad ? -1 : 0;
}

static int module_attach(const module_t *desc, void *dl);

static int module_load_one(const char *name)
{
    void *dl;
    strlist_t errors = {0};
    const module_t *desc = module_open(name, &dl, &errors);
    if (desc && module_options(desc, srv->cfg, &errors, 1) < 0) {
        dlclose(dl);
        desc = NULL;
    }
    if (!desc) {
        for (size_t i = 0; i < errors.n; i++) log_error("modules", "%s", errors.v[i]);
        strlist_free(&errors);
        return -1;
    }
    return module_attach(desc, dl);
}

/* Register a module whose options are already stored, and call its load. */
static int module_attach(const module_t *desc, void *dl)
{
    module_ctx_t *m = xcalloc(1, sizeof *m);
    m->desc = desc;
    m->dl = dl;
    m->next = loaded;
    loaded = m;
    if (desc->load(m) < 0) {
        for (size_t i = 0; i < m->errors.n; i++) log_error("config", "%s", m->errors.v[i]);
        log_error("modules", "module '%s' failed to load", desc->name);
        return -1;
    }
    log_debug("modules", "loaded %s", desc->name);
    return 0;
}

int module_load_static(const module_t *desc)
{
    strlist_t errors = {0};
    if (desc->abi != CIVITAS_MODULE_ABI || module_options(desc, srv->cfg, &errors, 1) < 0) {
        for (size_t i = 0; i < errors.n; i++) log_error("modules", "%s", errors.v[i]);
        strlist_free(&errors);
        return -1;
    }
    return module_attach(desc, NULL);
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
    hook_forget(m);
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
        if (m->dl) dlclose(m->dl);
        free(m);
    }
    hook_free_all();
    free(features); features = NULL;
    free(identities); identities = NULL;
}
