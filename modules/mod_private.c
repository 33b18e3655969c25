/* modules/mod_private.c: XEP-0049 Private XML Storage (jabber:iq:private): a user's own XML
 * fragments, one per (element name, namespace), readable and writable by that user only. Kept in
 * the module's own table (store.h), private_xml: (jid, name) -> xml. */
#include "module.h"
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define NS_PRIVATE "jabber:iq:private"

static struct private_conf {
    long max_items;
} conf;

/* One row per fragment. Releases before the table kept fragments in the core's kv store
 * "private" under the same key: the import moves them in when the table is created. */
enum { COL_JID, COL_NAME, COL_XML };
static const store_column_t xml_columns[] = {
    {"jid", STORE_TEXT},            /* the owner's bare JID */
    {"name", STORE_TEXT},           /* "{namespace}element" */
    {"xml", STORE_BLOB},            /* the fragment, serialised */
    {.name = NULL}};
static const store_table_t tables[] = {
    {.name = "xml", .columns = xml_columns, .key = "jid, name", .account = "jid"},
    {.name = NULL}};
static const store_schema_t schema = {
    .version = 1,
    .tables = tables,
    .import = "INSERT INTO private_xml (jid, name, xml)"
              " SELECT CASE WHEN user = '' THEN domain ELSE user || '@' || domain END, key, val"
              " FROM kv WHERE store = 'private';"
              "DELETE FROM kv WHERE store = 'private'",
};

static store_t *fragments;

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
        hook_error_cond(ev, STANZA_ERR_FORBIDDEN);
        return -1;
    }
    *query = xnode_first_elem(ev->stanza);
    if (strcmp((*query)->name, "query") != 0) {
        hook_error_cond(ev, STANZA_ERR_BAD_REQUEST);
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
    if (!first) return hook_error_cond(ev, STANZA_ERR_BAD_REQUEST);   /* "Bad Format" (§3 table) */
    for (xnode_t *c = first; c; c = xnode_next_elem(c))
        if (strcmp(c->ns, first->ns) != 0) return hook_error_cond(ev, STANZA_ERR_BAD_REQUEST);
    if (reserved(first->ns)) return hook_error_cond(ev, STANZA_ERR_NOT_ACCEPTABLE);
    xnode_t *reply = stanza_reply(ev->stanza);
    xnode_t *rq = xnode_add_elem(reply, "query", NS_PRIVATE);
    for (xnode_t *c = first; c; c = xnode_next_elem(c)) {
        char *name = key_of(c);
        store_row_t *row;
        int r = store_get(fragments, (storage_value_t[]){STORE_VAL_TEXT(ev->to->bare), STORE_VAL_TEXT(name)}, &row);
        free(name);
        if (r < 0) {
            log_warn("private", "reading private XML failed: %s", store_error(fragments));
            xnode_free(reply);
            return hook_error(ev, "wait", "internal-server-error");
        }
        xnode_t *frag = NULL;
        if (r == 0) {
            frag = xnode_parse_one(row->col[COL_XML].p, row->col[COL_XML].len, NULL);
            store_row_free(row);
        }
        xnode_add_child(rq, frag ? frag : xnode_new(c->name, c->ns));
    }
    return hook_reply(ev, reply);
}

/* Write every child of query in one transaction: a set is stored whole or not at all. 0/-1. */
static int store_all(const char *bare, const xnode_t *query)
{
    if (store_begin(fragments) < 0) return -1;
    int r = 0;
    for (xnode_t *c = xnode_first_elem(query); c && r == 0; c = xnode_next_elem(c)) {
        size_t len;
        char *xml = xnode_serialize(c, NULL, &len);
        char *name = key_of(c);
        storage_value_t row[] = {STORE_VAL_TEXT(bare), STORE_VAL_TEXT(name), STORE_VAL_BLOB(xml, len)};
        r = xml ? store_put(fragments, row, NULL) : -1;
        free(name);
        free(xml);
    }
    if (r == 0 && store_commit(fragments) == 0) return 0;
    log_warn("private", "storing private XML failed: %s", store_error(fragments));
    store_rollback(fragments);
    return -1;
}

/* §2.3: each child replaces the fragment of its (name, namespace); no child, or a reserved
 * namespace: <not-acceptable/>. Everything is checked before anything is written. */
static int on_set(hook_event_t *ev, void *ud)
{
    (void)ud;
    xnode_t *query;
    if (check_request(ev, &query) < 0) return HOOK_HANDLED;
    long fresh = 0;
    const char *bare = ev->to->bare;
    if (!xnode_first_elem(query)) return hook_error_cond(ev, STANZA_ERR_NOT_ACCEPTABLE);
    for (xnode_t *c = xnode_first_elem(query); c; c = xnode_next_elem(c)) {
        if (reserved(c->ns)) return hook_error_cond(ev, STANZA_ERR_NOT_ACCEPTABLE);
        char *name = key_of(c);
        store_row_t *row;
        int r = store_get(fragments, (storage_value_t[]){STORE_VAL_TEXT(bare), STORE_VAL_TEXT(name)}, &row);
        free(name);
        if (r < 0) return hook_error(ev, "wait", "internal-server-error");
        if (r == 0) store_row_free(row);
        else fresh++;
    }
    storage_value_t owner = STORE_VAL_TEXT(bare);
    long have = fresh ? store_count(fragments, &(store_range_t){.prefix = &owner, .nprefix = 1}) : 0;
    if (have < 0) return hook_error(ev, "wait", "internal-server-error");
    if (have + fresh > conf.max_items)
        return hook_reply(ev, stanza_error(ev->stanza, "wait", "resource-constraint", "too many private XML fragments"));
    if (store_all(bare, query) < 0) return hook_error(ev, "wait", "internal-server-error");
    return hook_reply(ev, stanza_reply(ev->stanza));
}

static int load(module_ctx_t *m)
{
    fragments = module_store(m, "xml");
    module_add_feature(m, NS_PRIVATE);
    module_hook(m, "iq-get/bare/" NS_PRIVATE, 0, on_get, NULL);
    module_hook(m, "iq-set/bare/" NS_PRIVATE, 0, on_set, NULL);
    return 0;
}

static const module_option_t options[] = {
    {.name = "max_items", .type = MOPT_INT, .offset = offsetof(struct private_conf, max_items),
     .def = 256, .min = 1, .max = 100000},
    {0}};

const module_t civitas_module = { .abi = CIVITAS_MODULE_ABI, .name = "private", .load = load,
                                    .options = options, .conf = &conf, .store = &schema };
