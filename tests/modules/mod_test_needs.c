/* tests/modules/mod_test_needs.c: a test module that depends on test_types (as omemo on pep). */
#include "module.h"

static int load(module_ctx_t *m)
{
    log_info("test_needs", "loaded");
    return 0;
}

const module_t civitas_module = {.abi = CIVITAS_MODULE_ABI, .name = "test_needs", .load = load,
                                 .depends = (const char *const[]){"test_types", NULL}};
