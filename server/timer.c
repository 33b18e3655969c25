/* server/timer.c: timers owned by modules (module_add_timer, timer.h) on the libevent loop; the
 * one place besides the stream code that touches libevent timers, so modules never include it. */
#include "timer.h"
#include "server.h"
#include <stdlib.h>

struct module_timer {
    struct event *ev;               /* libevent timer (EV_PERSIST when repeating) */
    module_ctx_t *owner;            /* the module that added it; NULL for the core */
    module_timer_fn fn;
    void *ud;
    unsigned repeat : 1;
    unsigned running : 1;           /* fn is on the stack: free after it returns */
    unsigned cancelled : 1;         /* cancelled while running */
    module_timer_t *next, *prev;    /* every live timer (timers) */
};

static module_timer_t *timers;

static void unlink_free(module_timer_t *t)
{
    if (t->prev) t->prev->next = t->next;
    else timers = t->next;
    if (t->next) t->next->prev = t->prev;
    event_free(t->ev);
    free(t);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    module_timer_t *t = arg;
    t->running = 1;
    t->fn(t, t->ud);
    t->running = 0;
    if (t->cancelled || !t->repeat) unlink_free(t);
}

module_timer_t *module_add_timer(module_ctx_t *m, long ms, int repeat, module_timer_fn fn, void *ud)
{
    if (ms < 0) ms = 0;
    if (repeat && ms < 1) ms = 1;    /* a repeating 0 ms timer would starve the loop */
    module_timer_t *t = xcalloc(1, sizeof *t);
    t->owner = m;
    t->fn = fn;
    t->ud = ud;
    t->repeat = repeat != 0;
    t->ev = event_new(srv->base, -1, repeat ? EV_PERSIST : 0, on_timer, t);
    if (!t->ev) abort();             /* allocation failure, as xmalloc */
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_add(t->ev, &tv);
    t->next = timers;
    if (timers) timers->prev = t;
    timers = t;
    return t;
}

void module_timer_cancel(module_timer_t *t)
{
    if (!t) return;
    event_del(t->ev);
    if (t->running) t->cancelled = 1;      /* on_timer frees it when fn returns */
    else unlink_free(t);
}

void timers_forget(module_ctx_t *m)
{
    for (module_timer_t *t = timers, *next; t; t = next) {
        next = t->next;
        if (t->owner == m) module_timer_cancel(t);
    }
}

void timers_shutdown(void)
{
    while (timers) unlink_free(timers);     /* after the loop stopped: no fn is running */
}
