/* modules/mod_private.c: XEP-0049 Private XML Storage (jabber:iq:private): a user's own XML
 * fragments, one per (element name, namespace), readable and writable by that user only. */
#include "module.h"
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define NS_PRIVATE "jabber:iq:private"
#define KV_STORE "private"

static struct private_conf {
    long max_items;
} conf;

static storage_t *store;

/* Stored under "{namespace}name" (Clark notation). */
static char *key_of(const xnode_t *el) { return xasprintf("{%s}%s", el->ns, el->name); }

/* XEP-0049 §2.3: namespaces reserved in Jabber: "jabber:…", "http://jabber.org/…" and "vcard-temp"
 * (each has its own protocol); an element without a namespace of its own is refused as well. */
static int reserved(const char *ns)
{
    return !*ns || strncmp(ns, "jabber:", 7) == 0 || strncmp(ns, "http://jabber.org/", 18) == 0 ||
           strcmp(ns, "vcard-temp") == 0;
}

/* §2.3: only the account itself ("Forbidden" for another user's data). */
static int check_request(hook_event_t *ev, xnode_t **query)
{
    if (!ev->origin || !ev->from || !jid_bare_equal(ev->from, ev->to)) {
        hook_error(ev, "auth", "forbidden");
        return -1;
    }
    *query = xnode_first_elem(ev->stanza);
    if (strcmp((*query)->name, "query") != 0) {
        hook_error(ev, "modify", "bad-request");
        return -1;
    }
    return 0;
}

/* §2.3: the get names one fragment by an empty element (more than one namespace per get is not
 * allowed); the result holds the stored fragment, or the element as asked when none is stored. */
static int on_get(hook_event_t *ev, void *ud)
{
    (void)ud;
    xnode_t *query;
    if (check_request(ev, &query) < 0) return HOOK_HANDLED;
    xnode_t *first = xnode_first_elem(query);
    if (!first) return hook_error(ev, "modify", "bad-request");   /* "Bad Format" (§3 table) */
    for (xnode_t *c = first; c; c = xnode_next_elem(c))
        if (strcmp(c->ns, first->ns) != 0) return hook_error(ev, "modify", "bad-request");
    if (reserved(first->ns)) return hook_error(ev, "modify", "not-acceptable");
    xnode_t *reply = stanza_reply(ev->stanza);
    xnode_t *rq = xnode_add_elem(reply, "query", NS_PRIVATE);
    for (xnode_t *c = first; c; c = xnode_next_elem(c)) {
        char *key = key_of(c);
        void *val;
        size_t len;
        int r = storage_kv_get(store, KV_STORE, ev->to->node, ev->to->domain, key, &val, &len);
        free(key);
        if (r < 0) {
            log_warn("private", "reading private XML failed: %s", storage_last_error(store));
            xnode_free(reply);
            return hook_error(ev, "wait", "internal-server-error");
        }
        xnode_t *frag = NULL;
        if (r == 0) {
            frag = xnode_parse_one(val, len, NULL);
            free(val);
        }
        xnode_add_child(rq, frag ? frag : xnode_new(c->name, c->ns));
    }
    return hook_reply(ev, reply);
}

static int count_cb(void *ud, const char *key, const void *val, size_t len)
{
    (void)key; (void)val; (void)len;
    (*(long *)ud)++;
    return 0;
}

/* §2.3: each child replaces the fragment of its (name, namespace); no child, or a reserved
 * namespace: <not-acceptable/>. Everything is checked before anything is written. */
static int on_set(hook_event_t *ev, void *ud)
{
    (void)ud;
    xnode_t *query;
    if (check_request(ev, &query) < 0) return HOOK_HANDLED;
    long fresh = 0;
    const char *u = ev->to->node, *d = ev->to->domain;
    if (!xnode_first_elem(query)) return hook_error(ev, "modify", "not-acceptable");
    for (xnode_t *c = xnode_first_elem(query); c; c = xnode_next_elem(c)) {
        if (reserved(c->ns)) return hook_error(ev, "modify", "not-acceptable");
        char *key = key_of(c);
        void *val;
        size_t len;
        int r = storage_kv_get(store, KV_STORE, u, d, key, &val, &len);
        free(key);
        if (r < 0) return hook_error(ev, "wait", "internal-server-error");
        if (r == 0) free(val);
        else fresh++;
    }
    long have = 0;
    if (fresh && storage_kv_each(store, KV_STORE, u, d, count_cb, &have) < 0)
        return hook_error(ev, "wait", "internal-server-error");
    if (have + fresh > conf.max_items)
        return hook_reply(ev, stanza_error(ev->stanza, "wait", "resource-constraint", "too many private XML fragments"));
    for (xnode_t *c = xnode_first_elem(query); c; c = xnode_next_elem(c)) {
        size_t len;
        char *xml = xnode_serialize(c, NULL, &len);
        if (!xml) return hook_error(ev, "modify", "bad-request");
        char *key = key_of(c);
        int r = storage_kv_set(store, KV_STORE, u, d, key, xml, len);
        free(key);
        free(xml);
        if (r < 0) {
            log_warn("private", "storing private XML failed: %s", storage_last_error(store));
            return hook_error(ev, "wait", "internal-server-error");
        }
    }
    return hook_reply(ev, stanza_reply(ev->stanza));
}

static int load(module_ctx_t *m)
{
    store = module_storage(m);
    module_add_feature(m, NS_PRIVATE);
    module_hook(m, "iq-get/bare/" NS_PRIVATE, 0, on_get, NULL);
    module_hook(m, "iq-set/bare/" NS_PRIVATE, 0, on_set, NULL);
    return 0;
}

static const module_option_t options[] = {
    {"max_items", MOPT_INT, offsetof(struct private_conf, max_items), 256, 1, 100000},
    {0}};

const module_t civitas_module = { .abi = CIVITAS_MODULE_ABI, .name = "private", .load = load,
                                    .options = options, .conf = &conf };
