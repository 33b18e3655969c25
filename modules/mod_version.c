/* modules/mod_version.c: XEP-0092 Software Version of the server. The operating system is
 * not disclosed unless the admin sets version.show_os (it helps attackers more than users). */
#include "module.h"
#include <sys/utsname.h>
#include <stdlib.h>

static int show_os;

static int on_version(hook_event_t *ev, void *ud)
{
    (void)ud;
    xnode_t *r = stanza_reply(ev->stanza);
    xnode_t *q = xnode_add_elem(r, "query", "jabber:iq:version");
    xnode_add_text(xnode_add_elem(q, "name", NULL), "civitas");
    xnode_add_text(xnode_add_elem(q, "version", NULL), PACKAGE_VERSION);
    if (show_os) {
        struct utsname u;
        if (uname(&u) == 0) xnode_add_text(xnode_add_elem(q, "os", NULL), u.sysname);
    }
    return hook_reply(ev, r);
}

static int load(module_ctx_t *m)
{
    static const char *const keys[] = {"show_os", NULL};
    const cfg_node_t *sec = module_config(m);
    if (sec && (cfg_check_keys(sec, keys, module_errors(m)) < 0 || cfg_get_bool(sec, "show_os", 0, &show_os, module_errors(m)) < 0))
        return -1;
    module_add_feature(m, "jabber:iq:version");
    module_hook(m, "iq-get/host/jabber:iq:version", 0, on_version, NULL);
    return 0;
}

const module_t civitas_module = { .abi = CIVITAS_MODULE_ABI, .name = "version", .load = load };
