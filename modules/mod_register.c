/* modules/mod_register.c: XEP-0077 In-Band Registration for logged-in users: password change
 * and account removal (with every stored piece of data). Account creation over XMPP is done
 * before authentication by the core when register.allow_registration is on. */
#include "module.h"
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define NS_REGISTER "jabber:iq:register"

static storage_t *store;
static struct register_conf {
    int allow_registration;     /* read by the core's c2s before authentication (XEP-0077 §3.1) */
} conf;

/* The account the request is about: only the requester's own, addressed to the server or to
 * the requester's bare JID (the core turns a missing 'to' into the latter). */
static int own_account(const hook_event_t *ev)
{
    return ev->from && ev->from->node && ev->origin &&
           (!ev->to->node || jid_bare_equal(ev->to, ev->from));
}

static int on_get(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!own_account(ev)) return hook_error(ev, "cancel", "service-unavailable");
    xnode_t *r = stanza_reply(ev->stanza);
    xnode_t *q = xnode_add_elem(r, "query", NS_REGISTER);
    xnode_add_elem(q, "registered", NULL);
    xnode_add_text(xnode_add_elem(q, "username", NULL), ev->from->node);
    xnode_add_elem(q, "password", NULL);
    return hook_reply(ev, r);
}

static int change_password(hook_event_t *ev, xnode_t *q)
{
    xnode_t *un = xnode_child(q, "username", NULL), *pw = xnode_child(q, "password", NULL);
    if (!un || !pw) return hook_error(ev, "modify", "bad-request");
    char *user = xnode_text(un), *pass = xnode_text(pw);
    char *node = jid_prep_node(user);
    int rc;
    scram_creds_t sha1, sha256;
    if (!node || strcmp(node, ev->from->node) != 0) {
        rc = hook_error(ev, "cancel", "not-authorized");      /* §3.3: only one's own password */
    } else if (!*pass || scram_creds_from_password(SCRAM_SHA1, pass, (unsigned)server_config()->scram_iterations, &sha1) < 0 ||
               scram_creds_from_password(SCRAM_SHA256, pass, (unsigned)server_config()->scram_iterations, &sha256) < 0) {
        rc = hook_error(ev, "modify", "not-acceptable");
    } else if (storage_account_set_creds(store, node, ev->from->domain, &sha1, &sha256) != 0) {
        rc = hook_error(ev, "wait", "internal-server-error");
    } else {
        rc = hook_reply(ev, stanza_reply(ev->stanza));
    }
    explicit_bzero(pass, strlen(pass));
    free(pass);
    free(user);
    free(node);
    return rc;
}

/* XEP-0077 §3.2: the result first; the core then ends every session of the account, fires
 * "user-deleted" and cancels the contacts' subscriptions (account_delete). */
static int remove_account(hook_event_t *ev)
{
    jid_t *bare = jid_bare_of(ev->from);
    int r = account_delete(bare);
    jid_free(bare);
    if (r < 0) return hook_error(ev, "wait", "internal-server-error");
    return hook_reply(ev, stanza_reply(ev->stanza));
}

static int on_set(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!own_account(ev)) return hook_error(ev, "cancel", "service-unavailable");
    xnode_t *q = xnode_first_elem(ev->stanza);
    if (xnode_child(q, "remove", NULL)) return remove_account(ev);
    return change_password(ev, q);
}

static int load(module_ctx_t *m)
{
    store = module_storage(m);
    module_add_feature(m, NS_REGISTER);
    module_hook(m, "iq-get/host/" NS_REGISTER, 0, on_get, NULL);
    module_hook(m, "iq-set/host/" NS_REGISTER, 0, on_set, NULL);
    module_hook(m, "iq-get/bare/" NS_REGISTER, 0, on_get, NULL);
    module_hook(m, "iq-set/bare/" NS_REGISTER, 0, on_set, NULL);
    return 0;
}

static const module_option_t options[] = {
    {"allow_registration", MOPT_BOOL, offsetof(struct register_conf, allow_registration), 0, 0, 1},
    {0}};

const module_t civitas_module = { .abi = CIVITAS_MODULE_ABI, .name = "register", .load = load,
                                  .options = options, .conf = &conf };
