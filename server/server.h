/* server/server.h: the core's shared state (config, storage, TLS, hosts, sessions, the loop),
 * defined in main.c. Modules never include this; they see module.h. */
#ifndef CIVITAS_SERVER_H
#define CIVITAS_SERVER_H
#include <event2/event.h>
#include "util.h"
#include "log.h"
#include "config.h"
#include "storage_internal.h"
#include "tls.h"

typedef struct host host_t;
typedef struct session session_t;

typedef struct server {
    struct event_base *base;
    config_t *cfg;
    char *config_path;
    storage_t *store;
    tls_t *tls;                 /* certificates of every host, SNI selection */
    host_t **hosts; size_t nhosts;   /* host.c */
    session_t *sessions;        /* every client stream, for shutdown (session.c) */
    size_t nsessions;
    size_t unauthenticated;     /* streams not yet authenticated (ip_limits.c) */
    strmap_t *ip_state;         /* ip_limit_key of a peer -> ip_state_t (ip_limits.c) */
    int shutting_down;
} server_t;

extern server_t *srv;

/* module.c, for main.c: loading and unloading modules. */
struct module;
struct module_ctx;
/* Find and dlopen the config's modules: list, or every standard module (civitasd does this before it
 * drops root: the module files need not be readable by the user it becomes). 0/-1 (logged) */
int modules_open(void);
/* Start the opened modules (modules_open first when it was not called): options, load. 0/-1 */
int modules_load(void);
/* A module linked into the program instead of loaded from a file (the module fuzz target). */
int module_load_static(const struct module *desc);
/* Several linked-in modules (NULL-terminated), started in dependency order. 0/-1 */
int modules_load_static(const struct module *const *descs);
/* --check: every module to be loaded exists, its dependencies are loaded too and its config section
 * is valid. 0/-1 (errors filled). With report, one line a module in load order with its effective
 * options as YAML ("offline: {max_messages: 1000, ...}"). */
int modules_check(const config_t *c, strlist_t *errors);
int modules_check_report(const config_t *c, strlist_t *errors, strlist_t *report);
void modules_unload(void);
/* 1 once m's unloading began: it may add nothing (given to iq_request.c by main.c) */
int module_unloading(const struct module_ctx *m);

#endif
