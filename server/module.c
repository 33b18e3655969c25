/* server/module.c: loading modules with dlopen, and the registry of what they add: disco features
 * and identities (their hooks: hook.c). Unloading removes it all. */
#include "module.h"
#include "server.h"
#include "standard_modules.h"
#include <dlfcn.h>
#include <errno.h>
#include <sys/stat.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* A host's copy of a module's conf struct (module_host_conf). */
typedef struct host_conf {
    char *host;                 /* the host's name as host_name() gives it */
    void *conf;                 /* conf_size bytes: the section's values, then the host's */
    unsigned char *own;         /* per option row: 1 when the host set it (its string/list is this copy's) */
} host_conf_t;

struct module_ctx {
    const module_t *desc;
    void *dl;                   /* dlopen handle, NULL for a module linked in */
    strlist_t errors;
    store_module_t *store;      /* the tables of desc->store, opened before load */
    int unloading;              /* its unload began: no new timers or IQ requests */
    char *data_dir;             /* module_data_dir, once asked for */
    host_conf_t *hconf; size_t nhconf;  /* hosts with their own values */
    module_ctx_t *next;
};

typedef struct feature { char *var; module_ctx_t *owner; } feature_t;
typedef struct identity { disco_identity_t id; module_ctx_t *owner; } identity_t;

static module_ctx_t *loaded;
/* The server's (domain's) disco registry, and the one every account's bare JID answers with. */
typedef struct disco_reg { feature_t *f; size_t nf; identity_t *id; size_t nid; } disco_reg_t;
static disco_reg_t server_reg, account_reg;

static void reg_add_feature(disco_reg_t *r, module_ctx_t *m, const char *var)
{
    for (size_t i = 0; i < r->nf; i++)
        if (strcmp(r->f[i].var, var) == 0) return;
    r->f = xrealloc(r->f, (r->nf + 1) * sizeof *r->f);
    r->f[r->nf++] = (feature_t){xstrdup(var), m};
}

static void reg_add_identity(disco_reg_t *r, module_ctx_t *m, const char *category, const char *type, const char *name)
{
    r->id = xrealloc(r->id, (r->nid + 1) * sizeof *r->id);
    r->id[r->nid++] = (identity_t){{xstrdup(category), xstrdup(type), name ? xstrdup(name) : NULL}, m};
}

static void reg_forget(disco_reg_t *r, const module_ctx_t *m)
{
    size_t j = 0;
    for (size_t i = 0; i < r->nf; i++) {
        if (r->f[i].owner == m) free(r->f[i].var);
        else r->f[j++] = r->f[i];
    }
    r->nf = j;
    j = 0;
    for (size_t i = 0; i < r->nid; i++) {
        if (r->id[i].owner == m) {
            free((char *)r->id[i].id.category);
            free((char *)r->id[i].id.type);
            free((char *)r->id[i].id.name);
        } else r->id[j++] = r->id[i];
    }
    r->nid = j;
}

static void reg_free(disco_reg_t *r)
{
    free(r->f);
    free(r->id);
    *r = (disco_reg_t){0};
}

void module_add_feature(module_ctx_t *m, const char *var) { reg_add_feature(&server_reg, m, var); }
void module_add_identity(module_ctx_t *m, const char *category, const char *type, const char *name)
{
    reg_add_identity(&server_reg, m, category, type, name);
}
size_t module_feature_count(void) { return server_reg.nf; }
const char *module_feature(size_t i) { return i < server_reg.nf ? server_reg.f[i].var : NULL; }
size_t module_identity_count(void) { return server_reg.nid; }
const disco_identity_t *module_identity(size_t i) { return i < server_reg.nid ? &server_reg.id[i].id : NULL; }

void module_add_account_feature(module_ctx_t *m, const char *var) { reg_add_feature(&account_reg, m, var); }
void module_add_account_identity(module_ctx_t *m, const char *category, const char *type, const char *name)
{
    reg_add_identity(&account_reg, m, category, type, name);
}
size_t module_account_feature_count(void) { return account_reg.nf; }
const char *module_account_feature(size_t i) { return i < account_reg.nf ? account_reg.f[i].var : NULL; }
size_t module_account_identity_count(void) { return account_reg.nid; }
const disco_identity_t *module_account_identity(size_t i)
{
    return i < account_reg.nid ? &account_reg.id[i].id : NULL;
}

strlist_t *module_errors(module_ctx_t *m) { return &m->errors; }
storage_t *module_storage(module_ctx_t *m) { (void)m; return srv->store; }
store_t *module_store(module_ctx_t *m, const char *table) { return store_module_table(m->store, table); }
const char *module_name(const module_ctx_t *m) { return m->desc->name; }

const char *module_data_dir(module_ctx_t *m)
{
    if (m->data_dir) return m->data_dir;
    char *d = xasprintf("%s/%s", srv->cfg->data_dir, m->desc->name);
    if (mkdir(d, 0700) < 0 && errno != EEXIST) {
        log_error("modules", "%s: cannot create %s: %s", m->desc->name, d, strerror(errno));
        free(d);
        return NULL;
    }
    m->data_dir = d;
    return d;
}
int module_unloading(const module_ctx_t *m) { return m->unloading; }

/* ---- options ------------------------------------------------------------------------------ */

/* Text built piece by piece (--check's listing, messages): a memory stream. */
typedef struct strbuf {
    FILE *f;
    char *s;
    size_t len;
} strbuf_t;

static void strbuf_open(strbuf_t *b)
{
    b->s = NULL;
    b->f = open_memstream(&b->s, &b->len);
    if (!b->f) abort();                    /* out of memory, as xmalloc */
}

/* Close the stream; the text is b->s (the caller frees it). */
static char *strbuf_close(strbuf_t *b)
{
    fclose(b->f);
    return b->s;
}

/* One option's value while it is checked, before it is stored (or shown by --check). */
typedef struct opt_value {
    long l;                     /* INT, DURATION, SIZE */
    int i;                      /* BOOL, ENUM */
    char *s;                    /* STRING (malloc'd or NULL) */
    strlist_t list;             /* LIST */
} opt_value_t;

static void opt_value_free(opt_value_t *v)
{
    free(v->s);
    v->s = NULL;
    strlist_free(&v->list);
}

static void opt_default(const module_option_t *o, opt_value_t *v)
{
    *v = (opt_value_t){.l = o->def, .i = (int)o->def};
    if (o->type == MOPT_STRING && o->def_string) v->s = xstrdup(o->def_string);
    if (o->type == MOPT_LIST)
        for (size_t i = 0; o->choices && o->choices[i]; i++) strlist_add(&v->list, o->choices[i]);
}

/* Parse the value node n of row o, named path in messages; 0, or -1 with an error appended. */
static int opt_parse(const module_option_t *o, const cfg_node_t *n, const char *path, opt_value_t *v,
                     strlist_t *errors)
{
    const char *str;
    switch (o->type) {
    case MOPT_INT: return cfg_value_int(n, path, o->min, o->max, &v->l, errors);
    case MOPT_BOOL: return cfg_value_bool(n, path, &v->i, errors);
    case MOPT_ENUM: return cfg_value_enum(n, path, o->choices, &v->i, errors);
    case MOPT_DURATION: return cfg_value_duration(n, path, o->min, o->max, &v->l, errors);
    case MOPT_SIZE: return cfg_value_size(n, path, o->min, o->max, &v->l, errors);
    case MOPT_STRING:
        if (cfg_value_string(n, path, &str, errors) < 0) return -1;
        if (o->max > 0 && ((long)strlen(str) < o->min || (long)strlen(str) > o->max)) {
            char *e = xasprintf("%s:%d: %s: '%.40s' is %zu bytes long; allowed: %ld to %ld", n->file, n->line, path,
                                str, strlen(str), o->min, o->max);
            strlist_add(errors, e);
            free(e);
            return -1;
        }
        free(v->s);
        v->s = xstrdup(str);
        return 0;
    case MOPT_LIST: {
        strlist_t l = {0};
        if (cfg_value_list(n, path, &l, errors) < 0) return -1;
        if (o->max > 0 && ((long)l.n < o->min || (long)l.n > o->max)) {
            char *e = xasprintf("%s:%d: %s: %zu entries; allowed: %ld to %ld", n->file, n->line, path, l.n, o->min,
                                o->max);
            strlist_add(errors, e);
            free(e);
            strlist_free(&l);
            return -1;
        }
        strlist_free(&v->list);
        v->list = l;
        return 0;
    }
    }
    return -1;
}

#define OPT_FIELD(base, o, type) ((type *)((char *)(base) + (o)->offset))

/* Move v into its field of the struct at base (v's string and list now belong to the field). */
static void opt_store(const module_option_t *o, opt_value_t *v, void *base)
{
    switch (o->type) {
    case MOPT_INT: case MOPT_DURATION: case MOPT_SIZE: *OPT_FIELD(base, o, long) = v->l; break;
    case MOPT_BOOL: case MOPT_ENUM: *OPT_FIELD(base, o, int) = v->i; break;
    case MOPT_STRING: *OPT_FIELD(base, o, char *) = v->s; v->s = NULL; break;
    case MOPT_LIST: *OPT_FIELD(base, o, strlist_t) = v->list; v->list = (strlist_t){0}; break;
    }
}

/* Free what opt_store put into the field (strings and lists) and clear it. */
static void opt_clear(const module_option_t *o, void *base)
{
    if (o->type == MOPT_STRING) {
        free(*OPT_FIELD(base, o, char *));
        *OPT_FIELD(base, o, char *) = NULL;
    } else if (o->type == MOPT_LIST) {
        strlist_free(OPT_FIELD(base, o, strlist_t));
    }
}

/* A YAML double-quoted string (for --check's listing). */
static void buf_quoted(strbuf_t *b, const char *s)
{
    fputc('"', b->f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(b->f, "\\%c", c);
        else if (c < 0x20 || c == 0x7f) fprintf(b->f, "\\x%02x", c);
        else fputc((char)c, b->f);
    }
    fputc('"', b->f);
}

/* "key: value" as YAML, the way the admin would write it. */
static void opt_show(strbuf_t *b, const module_option_t *o, const opt_value_t *v)
{
    char tmp[40];
    fprintf(b->f, "%s: ", o->name);
    switch (o->type) {
    case MOPT_INT: fprintf(b->f, "%ld", v->l); break;
    case MOPT_BOOL: fputs(v->i ? "true" : "false", b->f); break;
    case MOPT_ENUM: fputs(o->choices[v->i], b->f); break;
    case MOPT_DURATION: fputs(cfg_format_duration(v->l, tmp, sizeof tmp), b->f); break;
    case MOPT_SIZE: fputs(cfg_format_size(v->l, tmp, sizeof tmp), b->f); break;
    case MOPT_STRING:
        if (v->s) buf_quoted(b, v->s);
        else fputs("~", b->f);
        break;
    case MOPT_LIST:
        fputc('[', b->f);
        for (size_t i = 0; i < v->list.n; i++) {
            if (i) fputs(", ", b->f);
            buf_quoted(b, v->list.v[i]);
        }
        fputc(']', b->f);
        break;
    }
}

static void add_errorf(strlist_t *errors, const cfg_node_t *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void add_errorf(strlist_t *errors, const cfg_node_t *n, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char *e = xasprintf("%s:%d: %s", n->file, n->line, msg);
    strlist_add(errors, e);
    free(e);
}

/* The config's host named by a key of a section's hosts: map, or NULL. */
static const cfg_host_t *option_host(const config_t *c, const char *key)
{
    size_t len = strlen(key);
    if (len && key[len - 1] == '.') len--;
    for (size_t i = 0; i < c->nhosts; i++)
        if (strlen(c->hosts[i].name) == len && strncasecmp(c->hosts[i].name, key, len) == 0) return &c->hosts[i];
    return NULL;
}

/* One host's values: hv[i] is set (set[i] = 1) for the rows the host overrides. */
typedef struct host_values {
    const cfg_host_t *host;
    opt_value_t *v;
    unsigned char *set;
} host_values_t;

/* Check the module's section against its option rows (and the hosts: map for per-host rows).
 * With m, store every value (or its default) into desc->conf and make the hosts' copies; with
 * report, append the effective values as one YAML line. Errors ("FILE:LINE: ...") go to errors. 0/-1 */
static int module_options(const module_t *desc, const config_t *c, strlist_t *errors, module_ctx_t *m,
                          strlist_t *report)
{
    const cfg_node_t *sec = config_module_section(c, desc->name);
    const module_option_t *o = desc->options;
    size_t n = 0, nper = 0;
    while (o && o[n].name) nper += o[n++].per_host != 0;
    const char **keys = xcalloc(n + 2, sizeof *keys);
    for (size_t i = 0; i < n; i++) keys[i] = o[i].name;
    keys[n] = "hosts";
    int bad = sec && cfg_check_keys(sec, keys, errors) < 0;
    free(keys);

    opt_value_t *val = xcalloc(n ? n : 1, sizeof *val);
    for (size_t i = 0; i < n; i++) {
        char *path = xasprintf("%s.%s", desc->name, o[i].name);
        const cfg_node_t *v = cfg_child(sec, o[i].name);
        opt_default(&o[i], &val[i]);
        if (v && opt_parse(&o[i], v, path, &val[i], errors) < 0) bad = 1;
        free(path);
    }

    host_values_t *hv = NULL;
    size_t nhv = 0;
    const cfg_node_t *hosts = cfg_child(sec, "hosts");
    if (hosts && !(hosts->type == CFG_SCALAR && hosts->is_null)) {
        if (nper == 0) {
            add_errorf(errors, hosts, "%s.hosts: no option of module '%s' can differ per host", desc->name, desc->name);
            bad = 1;
        } else if (hosts->type != CFG_MAP) {
            add_errorf(errors, hosts, "%s.hosts: expected a mapping of host names to options "
                       "(hosts: {kaarst.example: {key: value}})", desc->name);
            bad = 1;
        } else {
            char *per = xstrdup("");
            for (size_t i = 0; i < n; i++)
                if (o[i].per_host) {
                    char *t = xasprintf("%s%s%s", per, *per ? ", " : "", o[i].name);
                    free(per);
                    per = t;
                }
            for (const cfg_node_t *h = hosts->children; h; h = h->next) {
                const cfg_host_t *ch = option_host(c, h->key);
                if (!ch) {
                    add_errorf(errors, h, "%s.hosts: '%.80s' is not one of this server's hosts (hosts:)", desc->name,
                               h->key);
                    bad = 1;
                    continue;
                }
                if (h->type != CFG_MAP && !(h->type == CFG_SCALAR && h->is_null)) {
                    add_errorf(errors, h, "%s.hosts.%.80s: expected a mapping (key: value lines)", desc->name, h->key);
                    bad = 1;
                    continue;
                }
                hv = xrealloc(hv, (nhv + 1) * sizeof *hv);
                host_values_t *cur = &hv[nhv++];
                *cur = (host_values_t){ch, xcalloc(n ? n : 1, sizeof *cur->v), xcalloc(n ? n : 1, 1)};
                for (const cfg_node_t *k = h->type == CFG_MAP ? h->children : NULL; k; k = k->next) {
                    size_t i = 0;
                    while (i < n && strcmp(o[i].name, k->key) != 0) i++;
                    if (i == n || !o[i].per_host) {
                        add_errorf(errors, k, "%s.hosts.%.80s: '%.80s' %s (per host: %s)", desc->name, h->key,
                                   k->key, i == n ? "is not an option of this module" : "cannot differ per host", per);
                        bad = 1;
                        continue;
                    }
                    char *path = xasprintf("%s.hosts.%s.%s", desc->name, h->key, k->key);
                    cur->set[i] = 1;
                    if (opt_parse(&o[i], k, path, &cur->v[i], errors) < 0) bad = 1;
                    free(path);
                }
            }
            free(per);
        }
    }

    if (!bad && report) {
        strbuf_t b;
        strbuf_open(&b);
        fprintf(b.f, "%s: {", desc->name);
        for (size_t i = 0; i < n; i++) {
            if (i) fputs(", ", b.f);
            opt_show(&b, &o[i], &val[i]);
        }
        if (nhv) {
            fputs(n ? ", hosts: {" : "hosts: {", b.f);
            for (size_t k = 0; k < nhv; k++) {
                fprintf(b.f, "%s%s: {", k ? ", " : "", hv[k].host->name);
                int first = 1;
                for (size_t i = 0; i < n; i++)
                    if (hv[k].set[i]) {
                        if (!first) fputs(", ", b.f);
                        opt_show(&b, &o[i], &hv[k].v[i]);
                        first = 0;
                    }
                fputc('}', b.f);
            }
            fputc('}', b.f);
        }
        fputc('}', b.f);
        char *line = strbuf_close(&b);
        strlist_add(report, line);
        free(line);
    }

    if (!bad && m) {
        for (size_t i = 0; i < n; i++) opt_store(&o[i], &val[i], desc->conf);
        for (size_t k = 0; k < nhv; k++) {
            host_conf_t *hc;
            m->hconf = xrealloc(m->hconf, (m->nhconf + 1) * sizeof *m->hconf);
            hc = &m->hconf[m->nhconf++];
            char *name = jid_prep_domain(hv[k].host->name);
            hc->host = name ? name : xstrdup(hv[k].host->name);
            hc->conf = xmalloc(desc->conf_size);
            memcpy(hc->conf, desc->conf, desc->conf_size);
            hc->own = hv[k].set;
            hv[k].set = NULL;
            for (size_t i = 0; i < n; i++)
                if (hc->own[i]) opt_store(&o[i], &hv[k].v[i], hc->conf);
        }
    }
    for (size_t k = 0; k < nhv; k++) {
        for (size_t i = 0; i < n; i++) opt_value_free(&hv[k].v[i]);
        free(hv[k].v);
        free(hv[k].set);
    }
    free(hv);
    for (size_t i = 0; i < n; i++) opt_value_free(&val[i]);
    free(val);
    return bad ? -1 : 0;
}

/* Free the option values stored for m (strings, lists, the hosts' copies). */
static void module_options_free(module_ctx_t *m)
{
    const module_option_t *o = m->desc->options;
    for (size_t k = 0; k < m->nhconf; k++) {
        for (size_t i = 0; o && o[i].name; i++)
            if (m->hconf[k].own[i]) opt_clear(&o[i], m->hconf[k].conf);
        free(m->hconf[k].host);
        free(m->hconf[k].conf);
        free(m->hconf[k].own);
    }
    free(m->hconf);
    m->hconf = NULL;
    m->nhconf = 0;
    for (size_t i = 0; o && o[i].name; i++) opt_clear(&o[i], m->desc->conf);
}

const void *module_host_conf(const module_ctx_t *m, const host_t *h)
{
    const char *name = h ? host_name(h) : NULL;
    for (size_t k = 0; name && k < m->nhconf; k++)
        if (strcmp(m->hconf[k].host, name) == 0) return m->hconf[k].conf;
    return m->desc->conf;
}

/* ---- loading ------------------------------------------------------------------------------ */

/* Is the descriptor usable (ABI, tables that make sense)? NULL, or why not. */
static const char *module_desc_problem(const module_t *desc)
{
    if (desc->abi != CIVITAS_MODULE_ABI || !desc->name || !desc->load) return "no matching civitas_module descriptor";
    const module_option_t *o = desc->options;
    if (o && !desc->conf) return "options but no conf";
    for (size_t i = 0; o && o[i].name; i++) {
        if (o[i].type == MOPT_ENUM && (!o[i].choices || !o[i].choices[0])) return "an enum option without choices";
        if (o[i].type == MOPT_ENUM) {
            long k = 0;
            while (o[i].choices[k]) k++;
            if (o[i].def < 0 || o[i].def >= k) return "an enum option whose default is not one of its choices";
        }
        if (o[i].per_host && desc->conf_size == 0) return "per-host options but no conf_size";
    }
    return NULL;
}

/* dlopen a module and find its descriptor; NULL (with a message in errors) when impossible. */
static const module_t *module_open(const char *name, void **dl, strlist_t *errors)
{
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_')) {
            strlist_add(errors, "invalid module name");
            return NULL;
        }
    char *path = module_file(name);
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
    const char *why = !desc ? "no civitas_module descriptor" : module_desc_problem(desc);
    if (!why && strcmp(desc->name, name) != 0) why = "a descriptor with another name";
    if (why) {
        char *e = xasprintf("module '%s' has %s (ABI %d)", name, why, CIVITAS_MODULE_ABI);
        strlist_add(errors, e);
        free(e);
        dlclose(*dl);
        return NULL;
    }
    return desc;
}

/* The modules to start: descriptors in the order given, then sorted so that every module comes
 * after the modules it depends on (a stable topological sort: otherwise the given order stays). */
typedef struct mod_set {
    const module_t **desc;
    void **dl;
    size_t n;
} mod_set_t;

static void mod_set_free(mod_set_t *set, int close)
{
    for (size_t i = 0; close && i < set->n; i++)
        if (set->dl[i]) dlclose(set->dl[i]);
    free(set->desc);
    free(set->dl);
    *set = (mod_set_t){0};
}

static ssize_t mod_set_find(const mod_set_t *set, const char *name)
{
    for (size_t i = 0; i < set->n; i++)
        if (strcmp(set->desc[i]->name, name) == 0) return (ssize_t)i;
    return -1;
}

/* Check every dependency is in the set and order the set; 0, or -1 with errors. */
static int mod_set_order(mod_set_t *set, strlist_t *errors)
{
    int bad = 0;
    for (size_t i = 0; i < set->n; i++)
        for (const char *const *d = set->desc[i]->depends; d && *d; d++)
            if (mod_set_find(set, *d) < 0) {
                char *e = xasprintf("module '%s' depends on module '%s', which is not loaded (add '%s' to modules:)",
                                    set->desc[i]->name, *d, *d);
                strlist_add(errors, e);
                free(e);
                bad = 1;
            }
    if (bad) return -1;
    const module_t **desc = xcalloc(set->n ? set->n : 1, sizeof *desc);
    void **dl = xcalloc(set->n ? set->n : 1, sizeof *dl);
    unsigned char *done = xcalloc(set->n ? set->n : 1, 1);
    size_t k = 0;
    while (k < set->n) {
        size_t i;
        for (i = 0; i < set->n; i++) {        /* the first module not started whose dependencies all are */
            if (done[i]) continue;
            const char *const *d = set->desc[i]->depends;
            while (d && *d && done[mod_set_find(set, *d)]) d++;
            if (!d || !*d) break;
        }
        if (i == set->n) {                     /* the rest wait for each other */
            strbuf_t b;
            strbuf_open(&b);
            fputs("modules depend on each other in a cycle:", b.f);
            for (size_t j = 0; j < set->n; j++)
                if (!done[j]) fprintf(b.f, " %s", set->desc[j]->name);
            char *msg = strbuf_close(&b);
            strlist_add(errors, msg);
            free(msg);
            free(desc);
            free(dl);
            free(done);
            return -1;
        }
        done[i] = 1;
        desc[k] = set->desc[i];
        dl[k++] = set->dl[i];
    }
    free(set->desc);
    free(set->dl);
    free(done);
    set->desc = desc;
    set->dl = dl;
    return 0;
}

/* Open the configured modules (or the standard ones) and order them. 0/-1 (errors filled; set
 * then holds what could be opened, for mod_set_free). */
static int mod_set_open(const config_t *c, mod_set_t *set, strlist_t *errors)
{
    size_t n = 0;
    if (!c->modules_set) while (standard_modules[n]) n++;
    else n = c->modules.n;
    *set = (mod_set_t){xcalloc(n ? n : 1, sizeof *set->desc), xcalloc(n ? n : 1, sizeof *set->dl), 0};
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        void *dl;
        const module_t *desc = module_open(c->modules_set ? c->modules.v[i] : standard_modules[i], &dl, errors);
        if (!desc) {
            bad = 1;
            continue;
        }
        set->desc[set->n] = desc;
        set->dl[set->n++] = dl;
    }
    if (bad) return -1;
    return mod_set_order(set, errors);
}

int modules_check_report(const config_t *c, strlist_t *errors, strlist_t *report)
{
    mod_set_t set;
    int bad = mod_set_open(c, &set, errors) < 0;
    for (size_t i = 0; i < set.n; i++)
        if (module_options(set.desc[i], c, errors, NULL, bad ? NULL : report) < 0) bad = 1;
    mod_set_free(&set, 1);
    return bad ? -1 : 0;
}

int modules_check(const config_t *c, strlist_t *errors) { return modules_check_report(c, errors, NULL); }

/* Store a module's options, register it, and call its load. When the options are refused, the
 * module is closed (its load and unload never run); when load fails, modules_unload removes it. */
static int module_start(const module_t *desc, void *dl)
{
    strlist_t errors = {0};
    module_ctx_t *m = xcalloc(1, sizeof *m);
    m->desc = desc;
    m->dl = dl;
    if (module_options(desc, srv->cfg, &errors, m, NULL) < 0) {
        for (size_t i = 0; i < errors.n; i++) log_error("modules", "%s", errors.v[i]);
        strlist_free(&errors);
        log_error("modules", "module '%s' failed to load", desc->name);
        if (dl) dlclose(dl);
        free(m);
        return -1;
    }
    m->next = loaded;
    loaded = m;
    if (desc->store) {            /* create or migrate the module's tables before it uses them */
        char *err = NULL;
        m->store = store_module_open(srv->store, desc->name, desc->store, &err);
        if (!m->store) {
            log_error("modules", "module '%s': storage: %s", desc->name, err ? err : "cannot open its tables");
            free(err);
            return -1;
        }
    }
    if (desc->load(m) < 0) {
        for (size_t i = 0; i < m->errors.n; i++) log_error("config", "%s", m->errors.v[i]);
        log_error("modules", "module '%s' failed to load", desc->name);
        return -1;
    }
    log_debug("modules", "loaded %s", desc->name);
    return 0;
}

/* Start an ordered set; what started is unloaded by modules_unload, the rest is closed here. */
static int mod_set_start(mod_set_t *set)
{
    for (size_t i = 0; i < set->n; i++)
        if (module_start(set->desc[i], set->dl[i]) < 0) {
            for (size_t j = i + 1; j < set->n; j++)
                if (set->dl[j]) dlclose(set->dl[j]);
            mod_set_free(set, 0);
            return -1;
        }
    mod_set_free(set, 0);
    return 0;
}

int module_load_static(const module_t *desc)
{
    const module_t *one[] = {desc, NULL};
    return modules_load_static(one);
}

int modules_load_static(const module_t *const *descs)
{
    mod_set_t set = {0};
    strlist_t errors = {0};
    size_t n = 0;
    while (descs[n]) n++;
    set.desc = xcalloc(n ? n : 1, sizeof *set.desc);
    set.dl = xcalloc(n ? n : 1, sizeof *set.dl);
    for (size_t i = 0; i < n; i++) {
        const char *why = module_desc_problem(descs[i]);
        if (why) {
            char *e = xasprintf("module '%s' has %s (ABI %d)", descs[i]->name ? descs[i]->name : "?", why,
                                CIVITAS_MODULE_ABI);
            strlist_add(&errors, e);
            free(e);
        }
        set.desc[set.n++] = descs[i];
    }
    /* A linked-in module may depend on one already loaded before this call. */
    for (module_ctx_t *m = loaded; m; m = m->next) {
        set.desc = xrealloc(set.desc, (set.n + 1) * sizeof *set.desc);
        set.dl = xrealloc(set.dl, (set.n + 1) * sizeof *set.dl);
        set.desc[set.n] = m->desc;
        set.dl[set.n++] = NULL;
    }
    if (errors.n || mod_set_order(&set, &errors) < 0) {
        for (size_t i = 0; i < errors.n; i++) log_error("modules", "%s", errors.v[i]);
        strlist_free(&errors);
        mod_set_free(&set, 0);
        return -1;
    }
    for (size_t i = 0; i < set.n; i++) {
        int started = 0;
        for (module_ctx_t *m = loaded; m; m = m->next) started |= m->desc == set.desc[i];
        if (!started && module_start(set.desc[i], NULL) < 0) {
            mod_set_free(&set, 0);
            return -1;
        }
    }
    mod_set_free(&set, 0);
    return 0;
}

/* The modules modules_open found, waiting for modules_load. */
static mod_set_t opened;
static int opened_ok;

int modules_open(void)
{
    strlist_t errors = {0};
    if (mod_set_open(srv->cfg, &opened, &errors) < 0) {
        for (size_t i = 0; i < errors.n; i++) log_error("modules", "%s", errors.v[i]);
        strlist_free(&errors);
        mod_set_free(&opened, 1);
        return -1;
    }
    opened_ok = 1;
    return 0;
}

int modules_load(void)
{
    if (!opened_ok && modules_open() < 0) return -1;
    opened_ok = 0;
    return mod_set_start(&opened);
}

/* Remove everything m registered (hooks, features, identities, timers). */
static void module_forget(module_ctx_t *m)
{
    timers_forget(m);
    hook_forget(m);
    component_forget(m);
    http_forget(m);
    reg_forget(&server_reg, m);
    reg_forget(&account_reg, m);
}

void modules_unload(void)
{
    while (loaded) {
        module_ctx_t *m = loaded;
        loaded = m->next;
        /* its requests end first, while it is whole: the callbacks free what they hold */
        m->unloading = 1;
        iq_requests_forget(m);
        if (m->desc->unload) m->desc->unload(m);
        module_forget(m);
        store_module_close(m->store);
        module_options_free(m);
        strlist_free(&m->errors);
        free(m->data_dir);
        if (m->dl) dlclose(m->dl);
        free(m);
    }
    hook_free_all();
    component_forget(NULL);
    http_forget(NULL);
    reg_free(&server_reg);
    reg_free(&account_reg);
}
