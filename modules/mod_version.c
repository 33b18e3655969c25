/* modules/mod_version.c: XEP-0092 Software Version of the server. The operating system is
 * not disclosed unless the admin sets version.show_os (it helps attackers more than users). */
#include "module.h"
#include <sys/utsname.h>
#include <stddef.h>
#include <stdlib.h>

static struct version_conf {
    int show_os;                /* version: {show_os}: also name the operating system */
} conf;

static int on_version(hook_event_t *ev, void *ud)
{
    (void)ud;
    xnode_t *r = stanza_reply(ev->stanza);
    xnode_t *q = xnode_add_elem(r, "query", "jabber:iq:version");
    xnode_add_text(xnode_add_elem(q, "name", NULL), "civitas");
    xnode_add_text(xnode_add_elem(q, "version", NULL), PACKAGE_VERSION);
    if (conf.show_os) {
        struct utsname u;
        if (uname(&u) == 0) xnode_add_text(xnode_add_elem(q, "os", NULL), u.sysname);
    }
    return hook_reply(ev, r);
}

static int load(module_ctx_t *m)
{
    module_add_feature(m, "jabber:iq:version");
    module_hook(m, "iq-get/host/jabber:iq:version", 0, on_version, NULL);
    return 0;
}

static const module_option_t options[] = {
    {.name = "show_os", .type = MOPT_BOOL, .offset = offsetof(struct version_conf, show_os),
     .def = 0, .min = 0, .max = 1},
    {0}};

const module_t civitas_module = { .abi = CIVITAS_MODULE_ABI, .name = "version", .load = load,
                                  .options = options, .conf = &conf };
