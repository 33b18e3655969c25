/* tests/modules/mod_test_types.c: a module for the tests only (not installed): one option of every
 * type, most of them per host. It logs the values it got at load, for the server's default and for
 * each host, and again at unload, so tests/integration/test_module_api.py can check what the core
 * stored (defaults, bounds, per-host overrides, strings that outlive a reload of the config). */
#include "module.h"
#include <stddef.h>
#include <stdio.h>
#include <string.h>

static struct types_conf {
    long count;
    int flag;
    char *greeting;
    char *motd;
    int mode;
    strlist_t peers;
    long retention;
    long quota;
} conf;

static const char *const modes[] = {"off", "warn", "require", NULL};
static const char *const default_peers[] = {"a.example", "b.example", NULL};

static const module_option_t options[] = {
    {.name = "count", .type = MOPT_INT, .offset = offsetof(struct types_conf, count), .def = 5, .min = 0, .max = 100,
     .per_host = 1},
    {.name = "flag", .type = MOPT_BOOL, .offset = offsetof(struct types_conf, flag), .def = 0, .min = 0, .max = 1},
    {.name = "greeting", .type = MOPT_STRING, .offset = offsetof(struct types_conf, greeting), .min = 1, .max = 20,
     .def_string = "hello", .per_host = 1},
    {.name = "motd", .type = MOPT_STRING, .offset = offsetof(struct types_conf, motd)},
    {.name = "mode", .type = MOPT_ENUM, .offset = offsetof(struct types_conf, mode), .def = 1, .choices = modes,
     .per_host = 1},
    {.name = "peers", .type = MOPT_LIST, .offset = offsetof(struct types_conf, peers), .min = 0, .max = 3,
     .choices = default_peers, .per_host = 1},
    {.name = "retention", .type = MOPT_DURATION, .offset = offsetof(struct types_conf, retention), .def = 14 * 86400,
     .min = 60, .max = 365 * 86400L, .per_host = 1},
    {.name = "quota", .type = MOPT_SIZE, .offset = offsetof(struct types_conf, quota), .def = 10L << 20, .min = 1024,
     .max = 1L << 40},
    {0}};

static module_ctx_t *self;

static void show(const char *when, const char *who, const struct types_conf *c)
{
    char peers[256] = "";
    for (size_t i = 0; i < c->peers.n; i++)
        snprintf(peers + strlen(peers), sizeof peers - strlen(peers), "%s%s", i ? "," : "", c->peers.v[i]);
    log_info("test_types", "%s %s: count=%ld flag=%d greeting=%s motd=%s mode=%s peers=[%s] retention=%ld quota=%ld",
             when, who, c->count, c->flag, c->greeting ? c->greeting : "(null)", c->motd ? c->motd : "(null)",
             modes[c->mode], peers, c->retention, c->quota);
}

static void show_all(const char *when)
{
    show(when, "default", &conf);
    for (size_t i = 0; i < host_count(); i++) {
        host_t *h = host_at(i);
        show(when, host_name(h), module_host_conf(self, h));
    }
}

static int load(module_ctx_t *m)
{
    self = m;
    show_all("load");
    return 0;
}

static void unload(module_ctx_t *m)
{
    show_all("unload");
}

const module_t civitas_module = {.abi = CIVITAS_MODULE_ABI, .name = "test_types", .load = load, .unload = unload,
                                 .options = options, .conf = &conf, .conf_size = sizeof conf};
