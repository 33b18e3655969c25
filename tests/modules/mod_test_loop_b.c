/* tests/modules/mod_test_loop_b.c: a test module in a dependency cycle with test_loop_a. */
#include "module.h"

static int load(module_ctx_t *m) { return 0; }

const module_t civitas_module = {.abi = CIVITAS_MODULE_ABI, .name = "test_loop_b", .load = load,
                                 .depends = (const char *const[]){"test_loop_a", NULL}};
