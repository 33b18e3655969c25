/* modules/mod_register.c: XEP-0077 In-Band Registration: account creation before authentication
 * (when register.allow_registration is on, at most max_per_address_per_hour accounts and
 * max_attempts_per_address_per_hour attempts per client address, an IPv6 /64 counting as one),
 * and for logged-in users password change and account removal (with all their data). */
#include "module.h"
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NS_REGISTER "jabber:iq:register"
#define HOUR_MS 3600000

static struct register_conf {
    int allow_registration;     /* XEP-0077 §3.1 account creation before authentication */
    long max_per_address;       /* accounts created from one address in any hour */
    long max_attempts;          /* registration requests from one address in any hour */
} conf;

/* ip_limit_key(client address) -> the times of its events in the last hour (a sliding window) */
typedef struct recent {
    size_t n;
    int64_t at[];               /* the window's cap slots, oldest first */
} recent_t;

typedef struct window {
    strmap_t *map;              /* address key -> recent_t */
    long cap;                   /* the slot count the entries were made with */
} window_t;

static window_t created;        /* accounts created */
static window_t attempts;       /* requests to create one, whatever their outcome */

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
    int rc, r = -2;
    jid_t *bare = NULL;
    if (!node || strcmp(node, ev->from->node) != 0) {
        rc = hook_error(ev, "cancel", "not-authorized");      /* §3.3: only one's own password */
    } else if (!(bare = jid_bare_of(ev->from)) || (r = account_set_password(bare, pass)) == -2) {
        rc = hook_error(ev, "modify", "not-acceptable");
    } else if (r != 0) {
        rc = hook_error(ev, "wait", "internal-server-error");
    } else {
        rc = hook_reply(ev, stanza_reply(ev->stanza));
    }
    jid_free(bare);
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

/* ---- account creation before authentication (XEP-0077 §3.1) ---- */

/* The events of key still inside the hour, pruned; created on demand. */
static recent_t *recent_of(window_t *w, const char *key)
{
    recent_t *r = strmap_get(w->map, key);
    if (!r) {
        r = xcalloc(1, sizeof *r + (size_t)w->cap * sizeof r->at[0]);
        strmap_put(w->map, key, r);
    }
    int64_t now = now_ms();
    size_t keep = 0;
    while (keep < r->n && now - r->at[keep] >= HOUR_MS) keep++;
    memmove(r->at, r->at + keep, (r->n - keep) * sizeof r->at[0]);
    r->n -= keep;
    return r;
}

/* Forget addresses whose last event is more than an hour old. */
static void recent_prune(window_t *w)
{
    size_t pos = 0;
    const char *key;
    void *v;
    int64_t now = now_ms();
    while (strmap_next(w->map, &pos, &key, &v)) {
        recent_t *r = v;
        if (!r->n || now - r->at[r->n - 1] >= HOUR_MS) free(strmap_del(w->map, key));
    }
}

static void window_init(window_t *w, long cap)
{
    w->map = strmap_new();
    w->cap = cap;
}

static void window_free(window_t *w)
{
    strmap_free_all(w->map, free);
    w->map = NULL;
}

static int on_preauth_features(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (conf.allow_registration) xnode_add_elem(ev->features, "register", "http://jabber.org/features/iq-register");
    return HOOK_PASS;
}

static int on_preauth_get(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!conf.allow_registration) return HOOK_PASS;     /* the core answers <service-unavailable/> */
    xnode_t *r = stanza_reply(ev->stanza);
    xnode_t *q = xnode_add_elem(r, "query", NS_REGISTER);
    xnode_add_text(xnode_add_elem(q, "instructions", NULL), "Choose a username and password.");
    xnode_add_elem(q, "username", NULL);
    xnode_add_elem(q, "password", NULL);
    return hook_reply(ev, r);
}

static int on_preauth_set(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!conf.allow_registration) return HOOK_PASS;
    xnode_t *q = xnode_first_elem(ev->stanza);
    xnode_t *un = xnode_child(q, "username", NULL), *pw = xnode_child(q, "password", NULL);
    if (!un || !pw) return hook_error(ev, "modify", "bad-request");      /* §3.1: a required field missing */
    const char *addr = session_ip(ev->origin);
    char key[IP_LIMIT_KEY_LEN];
    ip_limit_key(addr, key, sizeof key);        /* an IPv6 /64 is one address, as for every limit */
    recent_t *seen = recent_of(&created, key), *tried = recent_of(&attempts, key);
    if ((long)seen->n >= created.cap || (long)tried->n >= attempts.cap) {
        /* as Prosody's mod_register_limits answers: wait, policy-violation */
        log_info("register", "%s: registration refused, %zu accounts and %zu attempts from this address in the "
                 "last hour", addr, seen->n, tried->n);
        return hook_reply(ev, stanza_error(ev->stanza, "wait", "policy-violation",
                                           "Too many registrations from this address recently"));
    }
    tried->at[tried->n++] = now_ms();   /* each attempt counts, whatever its outcome */
    char *user = xnode_text(un), *pass = xnode_text(pw);
    char *node = jid_prep_node(user);
    const char *domain = host_name(ev->host);
    /* 0 created, 1 taken, -2 invalid username or password, -1 storage error; account_create
     * refuses a taken name before it derives the keys (the expensive part) */
    jid_t *bare = node ? jid_make(node, domain, NULL) : NULL;
    int r = bare ? account_create(bare, pass) : -2;
    jid_free(bare);
    if (r == 0) {
        seen->at[seen->n++] = now_ms();
        log_info("register", "%s: registered %s@%s", addr, log_jid(node), domain);
        hook_reply(ev, stanza_reply(ev->stanza));
    } else if (r == 1) {
        hook_error(ev, "cancel", "conflict");                    /* §3.1: the username is taken */
    } else if (r == -2) {
        hook_error(ev, "modify", "not-acceptable");              /* invalid username or password */
    } else {
        hook_error(ev, "wait", "internal-server-error");
    }
    if (!seen->n) free(strmap_del(created.map, key));
    recent_prune(&created);
    recent_prune(&attempts);
    explicit_bzero(pass, strlen(pass));
    free(pass);
    free(user);
    free(node);
    return HOOK_HANDLED;
}

/* ---- the logged-in user's own account (XEP-0077 §3.2, §3.3) ---- */

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
    window_init(&created, conf.max_per_address);
    window_init(&attempts, conf.max_attempts);
    module_hook(m, "stream-features/preauth", 0, on_preauth_features, NULL);
    module_hook(m, "iq-get/preauth/" NS_REGISTER, 0, on_preauth_get, NULL);
    module_hook(m, "iq-set/preauth/" NS_REGISTER, 0, on_preauth_set, NULL);
    module_add_feature(m, NS_REGISTER);
    module_hook(m, "iq-get/host/" NS_REGISTER, 0, on_get, NULL);
    module_hook(m, "iq-set/host/" NS_REGISTER, 0, on_set, NULL);
    module_hook(m, "iq-get/bare/" NS_REGISTER, 0, on_get, NULL);
    module_hook(m, "iq-set/bare/" NS_REGISTER, 0, on_set, NULL);
    return 0;
}

static const module_option_t options[] = {
    {.name = "allow_registration", .type = MOPT_BOOL, .offset = offsetof(struct register_conf, allow_registration),
     .def = 0, .min = 0, .max = 1},
    {.name = "max_per_address_per_hour", .type = MOPT_INT, .offset = offsetof(struct register_conf, max_per_address),
     .def = 5, .min = 1, .max = 10000},
    {.name = "max_attempts_per_address_per_hour", .type = MOPT_INT, .offset = offsetof(struct register_conf, max_attempts),
     .def = 20, .min = 1, .max = 100000},
    {0}};

static void unload(module_ctx_t *m)
{
    (void)m;
    window_free(&created);
    window_free(&attempts);
}

const module_t civitas_module = { .abi = CIVITAS_MODULE_ABI, .name = "register", .load = load,
                                  .unload = unload, .options = options, .conf = &conf };
