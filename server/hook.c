/* server/hook.c: the registry of named hooks: handlers by name, ordered by priority, each owned by
 * the module that registered it (removed when that module unloads). */
#include "hook.h"
#include "util.h"
#include <stdlib.h>

typedef struct hook_entry {
    int priority;
    hook_fn fn;
    void *ud;
    const module_ctx_t *owner;
} hook_entry_t;

typedef struct hook_list {
    hook_entry_t *v;
    size_t n;
} hook_list_t;

static strmap_t *hooks;             /* name -> hook_list_t */

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

void hook_forget(const module_ctx_t *m)
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
}

static void hook_list_free(void *p)
{
    hook_list_t *l = p;
    free(l->v);
    free(l);
}

void hook_free_all(void)
{
    strmap_free_all(hooks, hook_list_free);
    hooks = NULL;
}
