/* server/timer.h: timers owned by modules (Prosody's module:add_timer) on the server's event loop,
 * and the core's own (owner NULL). Every timer of a module is cancelled when it unloads. */
#ifndef CIVITAS_TIMER_H
#define CIVITAS_TIMER_H
#include "api.h"

typedef struct module_ctx module_ctx_t;  /* a loaded module's handle (hook.h) */

CIVITAS_API_BEGIN
/* A timer owned by a module on the server's event loop. fn runs after ms milliseconds (0 allowed:
 * at the next turn of the loop), and with repeat every ms milliseconds until cancelled. A one-shot
 * timer's handle is freed after fn returns; a repeating one's stays valid until module_timer_cancel
 * (allowed from inside its own fn). Every timer of a module is cancelled when the module unloads:
 * fn never runs after that. m NULL: a core timer (cancelled at shutdown). Never NULL. */
typedef struct module_timer module_timer_t;
typedef void (*module_timer_fn)(module_timer_t *t, void *ud);
module_timer_t *module_add_timer(module_ctx_t *m, long ms, int repeat, module_timer_fn fn, void *ud);
/* Stop and free a timer (NULL is a no-op). Do not use the handle after: a one-shot timer whose fn
 * already ran is gone, so cancel only timers that are still pending or repeating. */
void module_timer_cancel(module_timer_t *t);
CIVITAS_API_END

/* For module.c and main.c: every timer of m is cancelled (module unload); every timer freed
 * (shutdown, after the loop stopped). */
void timers_forget(module_ctx_t *m);
void timers_shutdown(void);

#endif
