/* modules/mod_pep.c: XEP-0163 Personal Eventing Protocol: every account is a PubSub service (the
 * XEP-0060 subset clients use) at its bare JID. Nodes are created by publishing (auto-create) or
 * <create/>, configured by XEP-0223 publish-options (preconditions) or the owner's <configure/>.
 * Items are read by whoever the node's access model lets (open: anyone, also over s2s; presence:
 * the owner and contacts subscribed to the owner's presence; whitelist: the owner). Notifications go
 * to the owner's available resources and to contacts with a presence subscription whose XEP-0115
 * caps include NODE+notify; the last item goes to such a contact's resource when its caps become
 * known (send_last_published_item). Tables: pep_nodes (owner, node, config) and pep_items (owner,
 * node, id, seq, publisher, time, payload as published, byte-exact). */
#include "module.h"
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_PUBSUB "http://jabber.org/protocol/pubsub"
#define NS_PUBSUB_OWNER "http://jabber.org/protocol/pubsub#owner"
#define NS_PUBSUB_EVENT "http://jabber.org/protocol/pubsub#event"
#define NS_PUBSUB_ERRORS "http://jabber.org/protocol/pubsub#errors"
#define NS_XDATA "jabber:x:data"
#define FORM_CONFIG "http://jabber.org/protocol/pubsub#node_config"
#define FORM_OPTIONS "http://jabber.org/protocol/pubsub#publish-options"

static struct pep_conf {
    long max_item_size;
    long max_items;
    long max_nodes;
} conf;

static const module_option_t options[] = {
    {"max_item_size", MOPT_SIZE, offsetof(struct pep_conf, max_item_size), 65536, 256, 16 * 1024 * 1024, .per_host = 0},
    {"max_items", MOPT_INT, offsetof(struct pep_conf, max_items), 1000, 1, STORE_MAX_LIMIT, .per_host = 0},
    {"max_nodes", MOPT_INT, offsetof(struct pep_conf, max_nodes), 1000, 1, STORE_MAX_LIMIT, .per_host = 0},
    {.name = NULL}};

enum { N_OWNER, N_NODE, N_ACCESS, N_MAX, N_PERSIST, N_SENDLAST, N_NOTIFYRETRACT };
static const store_column_t node_columns[] = {
    {"owner", STORE_TEXT}, {"node", STORE_TEXT}, {"access_model", STORE_INT}, {"max_items", STORE_INT},
    {"persist_items", STORE_INT}, {"send_last", STORE_INT}, {"notify_retract", STORE_INT}, {.name = NULL}};
enum { I_OWNER, I_NODE, I_ID, I_SEQ, I_PUBLISHER, I_TIME, I_PAYLOAD };
static const store_column_t item_columns[] = {
    {"owner", STORE_TEXT}, {"node", STORE_TEXT}, {"id", STORE_TEXT}, {"seq", STORE_INT},
    {"publisher", STORE_TEXT}, {"time", STORE_INT}, {"payload", STORE_BLOB}, {.name = NULL}};
static const store_index_t item_indexes[] = {{"by_seq", "owner, node, seq"}, {.name = NULL}};
enum { S_OWNER, S_NODE, S_JID, S_SUBSCRIBER };
static const store_column_t sub_columns[] = {
    {"owner", STORE_TEXT}, {"node", STORE_TEXT}, {"jid", STORE_TEXT}, {"subscriber", STORE_TEXT}, {.name = NULL}};
static const store_index_t sub_indexes[] = {{"by_subscriber", "subscriber"}, {.name = NULL}};
static const store_table_t tables[] = {
    {.name = "subscriptions", .columns = sub_columns, .key = "owner, node, jid", .account = "owner",
     .indexes = sub_indexes},
    {.name = "nodes", .columns = node_columns, .key = "owner, node", .account = "owner"},
    {.name = "items", .columns = item_columns, .key = "owner, node, id", .account = "owner", .indexes = item_indexes},
    {.name = NULL}};
static const store_schema_t schema = {.version = 1, .tables = tables};

static store_t *nodes, *items, *subs;
static storage_t *accounts;

/* ---- node configuration ---- */
enum { ACCESS_OPEN, ACCESS_PRESENCE, ACCESS_WHITELIST };
static const char *const access_names[] = {"open", "presence", "whitelist", NULL};
enum { SENDLAST_NEVER, SENDLAST_ON_SUB, SENDLAST_ON_SUB_AND_PRESENCE };
static const char *const sendlast_names[] = {"never", "on_sub", "on_sub_and_presence", NULL};
#define MAX_ITEMS_MAX (-1L)
#define MAX_NAME 1024             /* bytes of a node name or an item id */
#define MAX_SUBS 1000             /* explicit subscriptions per node */       /* pubsub#max_items "max": the module's max_items */

typedef struct node_config {
    int access;
    long max_items;               /* or MAX_ITEMS_MAX */
    int persist;
    int send_last;
    int notify_retract;
} node_config_t;

/* XEP-0163 §4 defaults: presence access, persistent, the last item kept. */
static const node_config_t default_config = {ACCESS_PRESENCE, 1, 1, SENDLAST_ON_SUB_AND_PRESENCE, 1};

static long effective_max(const node_config_t *c)
{
    long m = c->max_items == MAX_ITEMS_MAX ? conf.max_items : c->max_items;
    if (!c->persist) m = 1;
    return m < 1 ? 1 : m > conf.max_items ? conf.max_items : m;
}

static int name_index(const char *const *names, const char *v)
{
    for (int i = 0; names[i]; i++)
        if (strcmp(names[i], v) == 0) return i;
    return -1;
}

static int parse_bool(const char *v)
{
    if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0) return 1;
    if (strcmp(v, "0") == 0 || strcmp(v, "false") == 0) return 0;
    return -1;
}

/* The value of field var of a data form, malloc'd, or NULL. */
static char *form_value(const xnode_t *x, const char *var)
{
    for (xnode_t *f = xnode_first_elem(x); f; f = xnode_next_elem(f)) {
        const char *v = xnode_attr(f, "var");
        if (strcmp(f->name, "field") != 0 || !v || strcmp(v, var) != 0) continue;
        xnode_t *val = xnode_child(f, "value", NS_XDATA);
        return val ? xnode_text(val) : xstrdup("");
    }
    return NULL;
}

/* Apply the fields of form x to c. -1 (and *bad names the field) on a value not allowed. Fields
 * the module does not know are ignored (XEP-0060 §8.2.4 lets a service ignore them) unless
 * strict (publish-options: an unknown precondition cannot be met, XEP-0223 §4). */
static int apply_form(const xnode_t *x, node_config_t *c, int strict, const char **bad)
{
    for (xnode_t *f = xnode_first_elem(x); f; f = xnode_next_elem(f)) {
        const char *var = xnode_attr(f, "var");
        if (strcmp(f->name, "field") != 0 || !var || strcmp(var, "FORM_TYPE") == 0) continue;
        xnode_t *vn = xnode_child(f, "value", NS_XDATA);
        char *v = vn ? xnode_text(vn) : xstrdup("");
        int ok = 1;
        *bad = var;
        if (strcmp(var, "pubsub#access_model") == 0) {
            int a = name_index(access_names, v);
            if (a < 0) ok = 0; else c->access = a;
        } else if (strcmp(var, "pubsub#persist_items") == 0) {
            int b = parse_bool(v);
            if (b < 0) ok = 0; else c->persist = b;
        } else if (strcmp(var, "pubsub#notify_retract") == 0) {
            int b = parse_bool(v);
            if (b < 0) ok = 0; else c->notify_retract = b;
        } else if (strcmp(var, "pubsub#send_last_published_item") == 0) {
            int s = name_index(sendlast_names, v);
            if (s < 0) ok = 0; else c->send_last = s;
        } else if (strcmp(var, "pubsub#max_items") == 0) {
            char *end;
            long n = strtol(v, &end, 10);
            if (strcmp(v, "max") == 0) c->max_items = MAX_ITEMS_MAX;
            else if (!*v || *end || n < 1 || n > conf.max_items) ok = 0;
            else c->max_items = n;
        } else if (strict) {
            ok = 0;
        }
        free(v);
        if (!ok) return -1;
    }
    return 0;
}

static int config_equal(const node_config_t *a, const node_config_t *b)
{
    long am = a->max_items == MAX_ITEMS_MAX ? conf.max_items : a->max_items;
    long bm = b->max_items == MAX_ITEMS_MAX ? conf.max_items : b->max_items;
    return a->access == b->access && am == bm && a->persist == b->persist && a->send_last == b->send_last &&
           a->notify_retract == b->notify_retract;
}

static xnode_t *config_form(const node_config_t *c, const char *form_type)
{
    xnode_t *x = xnode_new("x", NS_XDATA);
    xnode_set_attr(x, "type", "form");
    struct { const char *var, *type; char val[32]; } f[] = {
        {"FORM_TYPE", "hidden", ""}, {"pubsub#access_model", "list-single", ""},
        {"pubsub#max_items", "text-single", ""}, {"pubsub#persist_items", "boolean", ""},
        {"pubsub#send_last_published_item", "list-single", ""}, {"pubsub#notify_retract", "boolean", ""}};
    snprintf(f[0].val, sizeof f[0].val, "%s", "");
    snprintf(f[1].val, sizeof f[1].val, "%s", access_names[c->access]);
    if (c->max_items == MAX_ITEMS_MAX) snprintf(f[2].val, sizeof f[2].val, "max");
    else snprintf(f[2].val, sizeof f[2].val, "%ld", c->max_items);
    snprintf(f[3].val, sizeof f[3].val, "%d", c->persist);
    snprintf(f[4].val, sizeof f[4].val, "%s", sendlast_names[c->send_last]);
    snprintf(f[5].val, sizeof f[5].val, "%d", c->notify_retract);
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        xnode_t *fe = xnode_add_elem(x, "field", NULL);
        xnode_set_attr(fe, "var", f[i].var);
        xnode_set_attr(fe, "type", f[i].type);
        xnode_add_text(xnode_add_elem(fe, "value", NULL), i == 0 ? form_type : f[i].val);
        const char *const *opts = i == 1 ? access_names : i == 4 ? sendlast_names : NULL;
        for (int k = 0; opts && opts[k]; k++)
            xnode_add_text(xnode_add_elem(xnode_add_elem(fe, "option", NULL), "value", NULL), opts[k]);
    }
    return x;
}

/* ---- storage ---- */

/* 0 found (*c set), 1 no such node, -1 error. */
static int node_get(const char *owner, const char *node, node_config_t *c)
{
    store_row_t *row;
    int r = store_get(nodes, (storage_value_t[]){STORE_VAL_TEXT(owner), STORE_VAL_TEXT(node)}, &row);
    if (r != 0) return r;
    c->access = (int)row->col[N_ACCESS].i;
    c->max_items = (long)row->col[N_MAX].i;
    c->persist = (int)row->col[N_PERSIST].i;
    c->send_last = (int)row->col[N_SENDLAST].i;
    c->notify_retract = (int)row->col[N_NOTIFYRETRACT].i;
    if (c->access < 0 || c->access > ACCESS_WHITELIST) c->access = ACCESS_WHITELIST;
    if (c->send_last < 0 || c->send_last > SENDLAST_ON_SUB_AND_PRESENCE) c->send_last = SENDLAST_NEVER;
    store_row_free(row);
    return 0;
}

static int node_put(const char *owner, const char *node, const node_config_t *c)
{
    storage_value_t row[] = {STORE_VAL_TEXT(owner), STORE_VAL_TEXT(node), STORE_VAL_INT(c->access),
                             STORE_VAL_INT(c->max_items), STORE_VAL_INT(c->persist), STORE_VAL_INT(c->send_last),
                             STORE_VAL_INT(c->notify_retract)};
    return store_put(nodes, row, NULL);
}

static int node_count(const char *owner)
{
    storage_value_t o = STORE_VAL_TEXT(owner);
    return store_count(nodes, &(store_range_t){.prefix = &o, .nprefix = 1});
}

/* Items of a node, newest first (at most limit). */
static int items_page(const char *owner, const char *node, int limit, store_page_t *page)
{
    storage_value_t p[] = {STORE_VAL_TEXT(owner), STORE_VAL_TEXT(node)};
    return store_range(items, &(store_range_t){.index = "by_seq", .prefix = p, .nprefix = 2, .reverse = 1,
                                               .limit = limit}, page);
}

static int64_t next_seq(const char *owner, const char *node)
{
    store_page_t page = {0};
    int64_t s = 1;
    if (items_page(owner, node, 1, &page) == 0 && page.n == 1) s = page.rows[0]->col[I_SEQ].i + 1;
    store_page_free(&page);
    return s;
}

/* Drop the oldest items beyond max. 0/-1. */
static int trim(const char *owner, const char *node, long max)
{
    storage_value_t p[] = {STORE_VAL_TEXT(owner), STORE_VAL_TEXT(node)};
    store_range_t r = {.index = "by_seq", .prefix = p, .nprefix = 2};
    int n = store_count(items, &r);
    if (n < 0) return -1;
    if (n <= max) return 0;
    r.limit = (int)(n - max);
    return store_delete_range(items, &r) < 0 ? -1 : 0;
}

static int purge_items(const char *owner, const char *node)
{
    storage_value_t p[] = {STORE_VAL_TEXT(owner), STORE_VAL_TEXT(node)};
    int n;
    do n = store_delete_range(items, &(store_range_t){.index = "by_seq", .prefix = p, .nprefix = 2,
                                                     .limit = STORE_MAX_LIMIT});
    while (n == STORE_MAX_LIMIT);
    return n < 0 ? -1 : 0;
}

/* <item id publisher?>payload</item> of a stored row. */
static xnode_t *item_xml(const store_row_t *row, int with_payload, const char *ns)
{
    xnode_t *it = xnode_new("item", ns);
    xnode_set_attr(it, "id", row->col[I_ID].p);
    if (with_payload) {
        xnode_t *pl = xnode_parse_one(row->col[I_PAYLOAD].p, row->col[I_PAYLOAD].len, NULL);
        if (pl) xnode_add_child(it, pl);
    }
    return it;
}

/* ---- access ---- */

static int is_owner(const hook_event_t *ev) { return ev->from && jid_bare_equal(ev->from, ev->to); }

/* RFC 6121 §8.5.1: a request to an account that does not exist gets <service-unavailable/>.
 * 1 when it exists (or is the requester); otherwise answered, 0. */
static int account_ok(hook_event_t *ev)
{
    if (is_owner(ev)) return 1;
    int ex = storage_account_exists(accounts, ev->to->node, ev->to->domain);
    if (ex > 0) return 1;
    hook_error(ev, ex < 0 ? "wait" : "cancel", ex < 0 ? "internal-server-error" : "service-unavailable");
    return 0;
}

static int can_read(const jid_t *owner, const jid_t *who, const node_config_t *c)
{
    if (!who) return 0;
    if (jid_bare_equal(owner, who) || c->access == ACCESS_OPEN) return 1;
    return c->access == ACCESS_PRESENCE && roster_is_subscribed(owner, who, ROSTER_SUB_FROM);
}

/* 1 allowed; otherwise answers with the XEP-0060 §6.5.9 error and returns 0. */
static int may_read(hook_event_t *ev, const node_config_t *c)
{
    if (can_read(ev->to, ev->from, c)) return 1;
    xnode_t *e = stanza_error(ev->stanza, c->access == ACCESS_PRESENCE ? "auth" : "cancel",
                              c->access == ACCESS_PRESENCE ? "not-authorized" : "not-allowed", NULL);
    xnode_t *err = xnode_child(e, "error", NULL);
    if (err) xnode_add_elem(err, c->access == ACCESS_PRESENCE ? "presence-subscription-required" : "closed-node",
                            NS_PUBSUB_ERRORS);
    hook_reply(ev, e);
    return 0;
}

static int pubsub_error(hook_event_t *ev, const char *type, const char *cond, const char *app)
{
    xnode_t *e = stanza_error(ev->stanza, type, cond, NULL);
    xnode_t *err = xnode_child(e, "error", NULL);
    if (err && app) xnode_add_elem(err, app, NS_PUBSUB_ERRORS);
    return hook_reply(ev, e);
}

/* ---- notifications ---- */

/* Full JIDs of remote contacts that sent available presence to a local account: "owner\nfull"
 * (at most REMOTE_PRESENT_MAX; an entry goes at the JID's unavailable presence or the owner's
 * deletion). */
#define REMOTE_PRESENT_MAX 100000
static strmap_t *remote_present;

static strmap_t *notify_sent;      /* while notify() runs: the JIDs already sent to */

static void send_event(const char *owner, const char *to, xnode_t *items_el)
{
    static unsigned long counter;
    if (notify_sent) {
        if (strmap_get(notify_sent, to)) return;
        strmap_put(notify_sent, to, (void *)1);
    }
    char id[32];
    snprintf(id, sizeof id, "pep%lu", ++counter);
    xnode_t *m = xnode_new("message", NS_CLIENT);
    xnode_set_attr(m, "from", owner);
    xnode_set_attr(m, "to", to);
    xnode_set_attr(m, "type", "headline");
    xnode_set_attr(m, "id", id);
    xnode_add_child(xnode_add_elem(m, "event", NS_PUBSUB_EVENT), xnode_copy(items_el));
    route_stanza(m);
}

typedef struct notify_ctx { const char *owner, *node; xnode_t *items_el; char *feature; } notify_ctx_t;

static void notify_remote(const char *key, void *val, void *ud)
{
    (void)val;
    notify_ctx_t *n = ud;
    size_t ol = strlen(n->owner);
    if (strncmp(key, n->owner, ol) != 0 || key[ol] != '\n') return;
    jid_t *full = jid_new(key + ol + 1);
    jid_t *owner = jid_new(n->owner);
    if (full && owner && caps_has_feature(full, n->feature) && roster_is_subscribed(owner, full, ROSTER_SUB_FROM))
        send_event(n->owner, full->full, n->items_el);
    jid_free(full);
    jid_free(owner);
}

/* items_el (<items node>…</items>) to the owner's available resources and to subscribed contacts'
 * resources whose caps include node+notify. */
static void notify(const char *owner_s, const char *node, xnode_t *items_el)
{
    jid_t *owner = jid_new(owner_s);
    if (!owner) return;
    notify_ctx_t n = {owner_s, node, items_el, xasprintf("%s+notify", node)};
    notify_sent = strmap_new();
    for (session_t *s = user_sessions(owner); s; s = session_next_in_user(s))
        if (session_available(s)) send_event(owner_s, session_jid(s)->full, items_el);
    roster_t *r = roster_load(owner);
    for (size_t i = 0; r && i < roster_count(r); i++) {
        roster_item_t *it = roster_at(r, i);
        if (!it->listed || !(it->sub & ROSTER_SUB_FROM)) continue;
        jid_t *c = jid_new(it->jid);
        if (c && host_find(c->domain)) {
            for (session_t *s = user_sessions(c); s; s = session_next_in_user(s))
                if (session_available(s) && session_has_feature(s, n.feature))
                    send_event(owner_s, session_jid(s)->full, items_el);
        }
        jid_free(c);
    }
    roster_free(r);
    size_t pos = 0;
    const char *key;
    void *val;
    while (strmap_next(remote_present, &pos, &key, &val)) notify_remote(key, val, &n);
    /* explicit subscriptions (XEP-0060 §6.1), as long as the access model still lets them read */
    node_config_t c;
    int have = node_get(owner_s, node, &c);
    storage_value_t p[] = {STORE_VAL_TEXT(owner_s), STORE_VAL_TEXT(node)};
    store_page_t page = {0};
    if (store_range(subs, &(store_range_t){.prefix = p, .nprefix = 2, .limit = STORE_MAX_LIMIT}, &page) == 0) {
        for (int i = 0; i < page.n; i++) {
            jid_t *sj = jid_new(page.rows[i]->col[S_JID].p);
            if (sj && (have != 0 || can_read(owner, sj, &c))) send_event(owner_s, sj->full, items_el);
            jid_free(sj);
        }
    }
    store_page_free(&page);
    strmap_free(notify_sent);
    notify_sent = NULL;
    free(n.feature);
    jid_free(owner);
}

/* The last item of each node of owner with send_last != never, to the full JID `to` if its caps
 * include node+notify. */
static void send_last_items(const char *owner, const jid_t *to)
{
    storage_value_t o = STORE_VAL_TEXT(owner);
    store_page_t page = {0};
    if (store_range(nodes, &(store_range_t){.prefix = &o, .nprefix = 1, .limit = STORE_MAX_LIMIT}, &page) < 0) return;
    for (int i = 0; i < page.n; i++) {
        const store_row_t *nr = page.rows[i];
        if (nr->col[N_SENDLAST].i == SENDLAST_NEVER) continue;
        const char *node = nr->col[N_NODE].p;
        char *feat = xasprintf("%s+notify", node);
        int want = caps_has_feature(to, feat);
        free(feat);
        if (!want) continue;
        store_page_t ip = {0};
        if (items_page(owner, node, 1, &ip) == 0 && ip.n == 1) {
            xnode_t *el = xnode_new("items", NS_PUBSUB_EVENT);
            xnode_set_attr(el, "node", node);
            xnode_add_child(el, item_xml(ip.rows[0], 1, NS_PUBSUB_EVENT));
            send_event(owner, to->full, el);
            xnode_free(el);
        }
        store_page_free(&ip);
    }
    store_page_free(&page);
}

/* XEP-0163 §4.3.3: a resource whose caps became known gets the last items of the nodes it is
 * interested in: its own account's, and those of every account whose presence it receives. */
static int on_caps_known(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!ev->from || !ev->from->node) return HOOK_PASS;
    if (host_find(ev->from->domain)) {
        send_last_items(ev->from->bare, ev->from);
        jid_t *bare = jid_bare_of(ev->from);
        roster_t *r = roster_load(bare);
        for (size_t i = 0; r && i < roster_count(r); i++) {
            roster_item_t *it = roster_at(r, i);
            if (!it->listed || !(it->sub & ROSTER_SUB_TO)) continue;
            jid_t *c = jid_new(it->jid);
            if (c && c->node && host_find(c->domain) && roster_is_subscribed(c, ev->from, ROSTER_SUB_FROM))
                send_last_items(c->bare, ev->from);
            jid_free(c);
        }
        roster_free(r);
        jid_free(bare);
        return HOOK_PASS;
    }
    return HOOK_PASS;   /* a remote resource: on_caps_known_remote */
}

typedef struct remote_ctx { const jid_t *full; } remote_ctx_t;

static void last_for_remote(const char *key, void *val, void *ud)
{
    (void)val;
    remote_ctx_t *rc = ud;
    const char *nl = strchr(key, '\n');
    if (!nl || strcmp(nl + 1, rc->full->full) != 0) return;
    char *owner_s = xasprintf("%.*s", (int)(nl - key), key);
    jid_t *owner = jid_new(owner_s);
    if (owner && roster_is_subscribed(owner, rc->full, ROSTER_SUB_FROM)) send_last_items(owner_s, rc->full);
    jid_free(owner);
    free(owner_s);
}

static int on_caps_known_remote(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!ev->from || !ev->from->resource || host_find(ev->from->domain)) return HOOK_PASS;
    remote_ctx_t rc = {ev->from};
    size_t pos = 0;
    const char *key;
    void *val;
    while (strmap_next(remote_present, &pos, &key, &val)) last_for_remote(key, val, &rc);
    return HOOK_PASS;
}

static int on_user_deleted(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!ev->to) return HOOK_PASS;
    /* the deleted account's own subscriptions to other accounts' nodes (its nodes went with it) */
    storage_value_t b = STORE_VAL_TEXT(ev->to->bare);
    int n;
    do n = store_delete_range(subs, &(store_range_t){.index = "by_subscriber", .prefix = &b, .nprefix = 1,
                                                     .limit = STORE_MAX_LIMIT});
    while (n == STORE_MAX_LIMIT);
    if (n < 0) log_warn("pep", "deleting subscriptions of a deleted account failed: %s", store_error(subs));
    size_t ol = strlen(ev->to->bare), pos = 0;
    const char *key;
    void *val;
    while (strmap_next(remote_present, &pos, &key, &val))
        if (strncmp(key, ev->to->bare, ol) == 0 && key[ol] == '\n') strmap_del(remote_present, key);
    return HOOK_PASS;
}

static int on_contact_presence(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!ev->from || !ev->from->resource || !ev->to || host_find(ev->from->domain)) return HOOK_PASS;
    char *key = xasprintf("%s\n%s", ev->to->bare, ev->from->full);
    const char *type = xnode_attr(ev->stanza, "type");
    if (type && strcmp(type, "unavailable") == 0) strmap_del(remote_present, key);
    else if (!strmap_get(remote_present, key) && strmap_count(remote_present) < REMOTE_PRESENT_MAX)
        strmap_put(remote_present, key, (void *)1);
    free(key);
    return HOOK_PASS;
}

/* ---- requests ---- */

static int internal_error(hook_event_t *ev, const char *what)
{
    log_warn("pep", "%s failed: %s", what, store_error(items));
    return hook_error(ev, "wait", "internal-server-error");
}

static int do_publish(hook_event_t *ev, xnode_t *ps, xnode_t *pub)
{
    const char *owner = ev->to->bare;
    const char *node = xnode_attr(pub, "node");
    if (!is_owner(ev)) return hook_error(ev, "auth", "forbidden");
    if (!node || !*node) return pubsub_error(ev, "modify", "bad-request", "nodeid-required");
    xnode_t *item = xnode_child(pub, "item", NS_PUBSUB);
    xnode_t *payload = item ? xnode_first_elem(item) : NULL;
    if (!item || !payload) return pubsub_error(ev, "modify", "bad-request", item ? "payload-required" : "item-required");
    const char *given_id = xnode_attr(item, "id");
    if (strlen(node) > MAX_NAME || (given_id && strlen(given_id) > MAX_NAME))
        return hook_reply(ev, stanza_error(ev->stanza, "modify", "not-acceptable", "node name or item id too long"));
    if (xnode_next_elem(payload) || xnode_next_elem(item)) return pubsub_error(ev, "modify", "bad-request", "invalid-payload");
    node_config_t cur, want;
    int r = node_get(owner, node, &cur);
    if (r < 0) return internal_error(ev, "reading a node");
    want = r == 0 ? cur : default_config;
    xnode_t *po = xnode_child(ps, "publish-options", NS_PUBSUB);
    xnode_t *form = po ? xnode_child(po, "x", NS_XDATA) : NULL;
    if (form) {
        char *ft = form_value(form, "FORM_TYPE");
        int okft = ft && strcmp(ft, FORM_OPTIONS) == 0;
        free(ft);
        const char *bad;
        node_config_t pre = want;
        if (!okft || apply_form(form, &pre, 1, &bad) < 0 || (r == 0 && !config_equal(&pre, &cur)))
            return pubsub_error(ev, "cancel", "conflict", "precondition-not-met");
        want = pre;
    }
    if (r == 1) {
        int n = node_count(owner);
        if (n < 0) return internal_error(ev, "counting nodes");
        if (n >= conf.max_nodes) return hook_reply(ev, stanza_error(ev->stanza, "wait", "resource-constraint", "too many PEP nodes"));
    }
    size_t len;
    char *xml = xnode_serialize(payload, NULL, &len);
    if (!xml) return internal_error(ev, "serializing");
    if ((long)len > conf.max_item_size) {
        free(xml);
        return pubsub_error(ev, "modify", "not-acceptable", "payload-too-big");
    }
    /* the last look before it is stored (mod_omemo checks bundles) */
    hook_event_t pe = {.name = HOOK_PEP_PUBLISH, .stanza = ev->stanza, .origin = ev->origin, .host = ev->host,
                       .from = ev->from, .to = ev->to};
    if (hook_fire(&pe) == HOOK_HANDLED) {
        free(xml);
        return HOOK_HANDLED;
    }
    char gen[40];
    const char *id = xnode_attr(item, "id");
    if (!id || !*id) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        snprintf(gen, sizeof gen, "%lx%08lx%04x", (long)ts.tv_sec, (long)ts.tv_nsec, (unsigned)rand() & 0xffff);
        id = gen;
    }
    if (store_begin(items) < 0) { free(xml); return internal_error(ev, "storing"); }
    int ok = (r == 1 ? node_put(owner, node, &want) : 0) == 0;
    if (ok) {
        storage_value_t row[] = {STORE_VAL_TEXT(owner), STORE_VAL_TEXT(node), STORE_VAL_TEXT(id),
                                 STORE_VAL_INT(next_seq(owner, node)), STORE_VAL_TEXT(ev->from->full),
                                 STORE_VAL_INT((int64_t)time(NULL)), STORE_VAL_BLOB(xml, len)};
        ok = store_put(items, row, NULL) == 0 && trim(owner, node, effective_max(&want)) == 0;
    }
    free(xml);
    if (!ok || store_commit(items) < 0) {
        store_rollback(items);
        return internal_error(ev, "storing an item");
    }
    xnode_t *reply = stanza_reply(ev->stanza);
    xnode_t *rp = xnode_add_elem(xnode_add_elem(reply, "pubsub", NS_PUBSUB), "publish", NULL);
    xnode_set_attr(rp, "node", node);
    xnode_set_attr(xnode_add_elem(rp, "item", NULL), "id", id);
    char *node_copy = xstrdup(node), *id_copy = xstrdup(id);
    xnode_t *pl_copy = xnode_copy(payload);
    hook_reply(ev, reply);
    xnode_t *el = xnode_new("items", NS_PUBSUB_EVENT);
    xnode_set_attr(el, "node", node_copy);
    xnode_t *it = xnode_add_elem(el, "item", NULL);
    xnode_set_attr(it, "id", id_copy);
    xnode_add_child(it, pl_copy);
    notify(owner, node_copy, el);
    xnode_free(el);
    free(node_copy);
    free(id_copy);
    return HOOK_HANDLED;
}

static int do_items(hook_event_t *ev, xnode_t *req)
{
    const char *node = xnode_attr(req, "node");
    if (!node || !*node) return pubsub_error(ev, "modify", "bad-request", "nodeid-required");
    node_config_t c;
    int r = node_get(ev->to->bare, node, &c);
    if (r < 0) return internal_error(ev, "reading a node");
    if (r == 1) return hook_error(ev, "cancel", "item-not-found");   /* XEP-0060 §6.5.9.11 */
    if (!may_read(ev, &c)) return HOOK_HANDLED;
    xnode_t *reply = stanza_reply(ev->stanza);
    xnode_t *out = xnode_add_elem(xnode_add_elem(reply, "pubsub", NS_PUBSUB), "items", NULL);
    xnode_set_attr(out, "node", node);
    xnode_t *want = xnode_child(req, "item", NS_PUBSUB);
    if (want) {
        for (; want; want = xnode_next_elem(want)) {
            const char *id = xnode_attr(want, "id");
            if (strcmp(want->name, "item") != 0 || !id) continue;
            store_row_t *row;
            int g = store_get(items, (storage_value_t[]){STORE_VAL_TEXT(ev->to->bare), STORE_VAL_TEXT(node),
                                                        STORE_VAL_TEXT(id)}, &row);
            if (g < 0) { xnode_free(reply); return internal_error(ev, "reading an item"); }
            if (g == 0) { xnode_add_child(out, item_xml(row, 1, NS_PUBSUB)); store_row_free(row); }
        }
        return hook_reply(ev, reply);
    }
    const char *mx = xnode_attr(req, "max_items");
    long limit = conf.max_items;
    if (mx) {
        char *end;
        long v = strtol(mx, &end, 10);
        if (!*mx || *end || v < 1) { xnode_free(reply); return hook_error(ev, "modify", "bad-request"); }
        if (v < limit) limit = v;
    }
    store_page_t page = {0};
    if (items_page(ev->to->bare, node, (int)limit, &page) < 0) { xnode_free(reply); return internal_error(ev, "reading items"); }
    for (int i = 0; i < page.n; i++) xnode_add_child(out, item_xml(page.rows[i], 1, NS_PUBSUB));   /* newest first */
    store_page_free(&page);
    return hook_reply(ev, reply);
}

static int do_retract(hook_event_t *ev, xnode_t *req)
{
    const char *owner = ev->to->bare, *node = xnode_attr(req, "node");
    if (!is_owner(ev)) return hook_error(ev, "auth", "forbidden");
    if (!node || !*node) return pubsub_error(ev, "modify", "bad-request", "nodeid-required");
    xnode_t *item = xnode_child(req, "item", NS_PUBSUB);
    const char *id = item ? xnode_attr(item, "id") : NULL;
    if (!id || !*id) return pubsub_error(ev, "modify", "bad-request", "item-required");
    node_config_t c;
    int r = node_get(owner, node, &c);
    if (r < 0) return internal_error(ev, "reading a node");
    if (r == 1) return hook_error(ev, "cancel", "item-not-found");
    int d = store_delete(items, (storage_value_t[]){STORE_VAL_TEXT(owner), STORE_VAL_TEXT(node), STORE_VAL_TEXT(id)});
    if (d < 0) return internal_error(ev, "retracting");
    if (d == 0) return hook_error(ev, "cancel", "item-not-found");
    const char *nt = xnode_attr(req, "notify");
    int want_notify = nt ? parse_bool(nt) == 1 : c.notify_retract;
    xnode_t *el = NULL;
    if (want_notify) {
        el = xnode_new("items", NS_PUBSUB_EVENT);
        xnode_set_attr(el, "node", node);
        xnode_set_attr(xnode_add_elem(el, "retract", NULL), "id", id);
    }
    char *owner_copy = xstrdup(owner);
    hook_reply(ev, stanza_reply(ev->stanza));
    if (el) notify(owner_copy, xnode_attr(el, "node"), el);
    xnode_free(el);
    free(owner_copy);
    return HOOK_HANDLED;
}

static int do_create(hook_event_t *ev, xnode_t *ps, xnode_t *req)
{
    const char *owner = ev->to->bare, *node = xnode_attr(req, "node");
    if (!is_owner(ev)) return hook_error(ev, "auth", "forbidden");
    if (!node || !*node) return pubsub_error(ev, "modify", "not-acceptable", "nodeid-required");
    if (strlen(node) > MAX_NAME)
        return hook_reply(ev, stanza_error(ev->stanza, "modify", "not-acceptable", "node name too long"));
    node_config_t c = default_config, old;
    int r = node_get(owner, node, &old);
    if (r < 0) return internal_error(ev, "reading a node");
    if (r == 0) return hook_error(ev, "cancel", "conflict");
    xnode_t *cf = xnode_child(ps, "configure", NS_PUBSUB);
    xnode_t *form = cf ? xnode_child(cf, "x", NS_XDATA) : NULL;
    const char *bad;
    if (form && apply_form(form, &c, 0, &bad) < 0) return hook_error(ev, "modify", "not-acceptable");
    int n = node_count(owner);
    if (n < 0) return internal_error(ev, "counting nodes");
    if (n >= conf.max_nodes) return hook_reply(ev, stanza_error(ev->stanza, "wait", "resource-constraint", "too many PEP nodes"));
    if (node_put(owner, node, &c) < 0) return internal_error(ev, "creating a node");
    return hook_reply(ev, stanza_reply(ev->stanza));
}

/* XEP-0060 §6.1: subscribe (jid must be the requester's bare or full JID), §6.2 unsubscribe. */
static int do_subscribe(hook_event_t *ev, xnode_t *req, int sub)
{
    const char *owner = ev->to->bare, *node = xnode_attr(req, "node"), *js = xnode_attr(req, "jid");
    if (!node || !*node) return pubsub_error(ev, "modify", "bad-request", "nodeid-required");
    jid_t *j = js ? jid_new(js) : NULL;
    if (!j || !ev->from || !jid_bare_equal(j, ev->from)) {
        jid_free(j);
        return pubsub_error(ev, "modify", "bad-request", j || !js ? "invalid-jid" : "jid-required");
    }
    node_config_t c;
    int r = node_get(owner, node, &c);
    if (r < 0) { jid_free(j); return internal_error(ev, "reading a node"); }
    if (r == 1) { jid_free(j); return hook_error(ev, "cancel", "item-not-found"); }
    storage_value_t key[] = {STORE_VAL_TEXT(owner), STORE_VAL_TEXT(node), STORE_VAL_TEXT(j->full),
                             STORE_VAL_TEXT(j->bare)};   /* the key and, for store_put, the row */
    if (!sub) {
        int d = store_delete(subs, key);
        jid_free(j);
        if (d < 0) return internal_error(ev, "unsubscribing");
        if (d == 0) return pubsub_error(ev, "cancel", "unexpected-request", "not-subscribed");
        return hook_reply(ev, stanza_reply(ev->stanza));
    }
    if (!may_read(ev, &c)) { jid_free(j); return HOOK_HANDLED; }
    storage_value_t p[] = {STORE_VAL_TEXT(owner), STORE_VAL_TEXT(node)};
    int n = store_count(subs, &(store_range_t){.prefix = p, .nprefix = 2});
    store_row_t *had = NULL;
    int g = n < 0 ? -1 : store_get(subs, key, &had);
    store_row_free(had);
    if (g == 1 && n >= MAX_SUBS) {
        jid_free(j);
        return hook_reply(ev, stanza_error(ev->stanza, "wait", "resource-constraint", "too many subscriptions"));
    }
    if (g < 0 || store_put(subs, key, NULL) < 0) { jid_free(j); return internal_error(ev, "subscribing"); }
    xnode_t *reply = stanza_reply(ev->stanza);
    xnode_t *se = xnode_add_elem(xnode_add_elem(reply, "pubsub", NS_PUBSUB), "subscription", NULL);
    xnode_set_attr(se, "node", node);
    xnode_set_attr(se, "jid", j->full);
    xnode_set_attr(se, "subscription", "subscribed");
    char *owner_copy = xstrdup(owner), *node_copy = xstrdup(node);
    hook_reply(ev, reply);
    if (c.send_last != SENDLAST_NEVER) {      /* §6.1.7: the last item at subscription */
        store_page_t ip = {0};
        if (items_page(owner_copy, node_copy, 1, &ip) == 0 && ip.n == 1) {
            xnode_t *el = xnode_new("items", NS_PUBSUB_EVENT);
            xnode_set_attr(el, "node", node_copy);
            xnode_add_child(el, item_xml(ip.rows[0], 1, NS_PUBSUB_EVENT));
            send_event(owner_copy, j->full, el);
            xnode_free(el);
        }
        store_page_free(&ip);
    }
    free(owner_copy);
    free(node_copy);
    jid_free(j);
    return HOOK_HANDLED;
}

/* XEP-0060 §5.6: the requester's subscriptions at this service (optionally of one node). */
static int do_subscriptions(hook_event_t *ev, xnode_t *req)
{
    const char *only = xnode_attr(req, "node");
    storage_value_t o = STORE_VAL_TEXT(ev->to->bare);
    store_page_t page = {0};
    if (!ev->from || store_range(subs, &(store_range_t){.prefix = &o, .nprefix = 1, .limit = STORE_MAX_LIMIT}, &page) < 0)
        return internal_error(ev, "listing subscriptions");
    xnode_t *reply = stanza_reply(ev->stanza);
    xnode_t *out = xnode_add_elem(xnode_add_elem(reply, "pubsub", NS_PUBSUB), "subscriptions", NULL);
    if (only) xnode_set_attr(out, "node", only);
    for (int i = 0; i < page.n; i++) {
        const store_row_t *row = page.rows[i];
        jid_t *sj = jid_new(row->col[S_JID].p);
        if (sj && jid_bare_equal(sj, ev->from) && (!only || strcmp(only, row->col[S_NODE].p) == 0)) {
            xnode_t *se = xnode_add_elem(out, "subscription", NULL);
            xnode_set_attr(se, "node", row->col[S_NODE].p);
            xnode_set_attr(se, "jid", sj->full);
            xnode_set_attr(se, "subscription", "subscribed");
        }
        jid_free(sj);
    }
    store_page_free(&page);
    return hook_reply(ev, reply);
}

static int on_pubsub_set(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!ev->to->node) return HOOK_PASS;
    if (!account_ok(ev)) return HOOK_HANDLED;
    xnode_t *ps = xnode_first_elem(ev->stanza);
    if (strcmp(ps->name, "pubsub") != 0) return hook_error(ev, "modify", "bad-request");
    for (xnode_t *c = xnode_first_elem(ps); c; c = xnode_next_elem(c)) {
        if (strcmp(c->name, "publish") == 0) return do_publish(ev, ps, c);
        if (strcmp(c->name, "retract") == 0) return do_retract(ev, c);
        if (strcmp(c->name, "create") == 0) return do_create(ev, ps, c);
        if (strcmp(c->name, "subscribe") == 0) return do_subscribe(ev, c, 1);
        if (strcmp(c->name, "unsubscribe") == 0) return do_subscribe(ev, c, 0);
    }
    return pubsub_error(ev, "cancel", "feature-not-implemented", NULL);
}

static int on_pubsub_get(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!ev->to->node) return HOOK_PASS;
    if (!account_ok(ev)) return HOOK_HANDLED;
    xnode_t *ps = xnode_first_elem(ev->stanza);
    if (strcmp(ps->name, "pubsub") != 0) return hook_error(ev, "modify", "bad-request");
    xnode_t *c = xnode_first_elem(ps);
    if (c && strcmp(c->name, "items") == 0) return do_items(ev, c);
    if (c && strcmp(c->name, "subscriptions") == 0) return do_subscriptions(ev, c);
    return pubsub_error(ev, "cancel", "feature-not-implemented", NULL);
}

/* pubsub#owner: configure (get/set), delete, purge. */
static int on_owner(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!ev->to->node) return HOOK_PASS;
    if (!account_ok(ev)) return HOOK_HANDLED;
    xnode_t *ps = xnode_first_elem(ev->stanza);
    xnode_t *c = ps ? xnode_first_elem(ps) : NULL;
    if (strcmp(ps->name, "pubsub") != 0 || !c) return hook_error(ev, "modify", "bad-request");
    if (!is_owner(ev)) return hook_error(ev, "auth", "forbidden");
    const char *owner = ev->to->bare, *node = xnode_attr(c, "node");
    int get = strcmp(xnode_attr(ev->stanza, "type"), "get") == 0;
    if (!node || !*node) return pubsub_error(ev, "modify", "bad-request", "nodeid-required");
    node_config_t cf;
    int r = node_get(owner, node, &cf);
    if (r < 0) return internal_error(ev, "reading a node");
    if (r == 1) return hook_error(ev, "cancel", "item-not-found");
    if (strcmp(c->name, "configure") == 0 && get) {
        xnode_t *reply = stanza_reply(ev->stanza);
        xnode_t *conf_el = xnode_add_elem(xnode_add_elem(reply, "pubsub", NS_PUBSUB_OWNER), "configure", NULL);
        xnode_set_attr(conf_el, "node", node);
        xnode_add_child(conf_el, config_form(&cf, FORM_CONFIG));
        return hook_reply(ev, reply);
    }
    if (get) return pubsub_error(ev, "cancel", "feature-not-implemented", NULL);
    if (strcmp(c->name, "configure") == 0) {
        xnode_t *form = xnode_child(c, "x", NS_XDATA);
        const char *type = form ? xnode_attr(form, "type") : NULL;
        if (!form) return hook_error(ev, "modify", "bad-request");
        if (type && strcmp(type, "cancel") == 0) return hook_reply(ev, stanza_reply(ev->stanza));
        const char *bad;
        if (apply_form(form, &cf, 0, &bad) < 0) return hook_error(ev, "modify", "not-acceptable");
        if (store_begin(nodes) < 0) return internal_error(ev, "configuring");
        if (node_put(owner, node, &cf) < 0 || trim(owner, node, effective_max(&cf)) < 0 || store_commit(nodes) < 0) {
            store_rollback(nodes);
            return internal_error(ev, "configuring");
        }
        return hook_reply(ev, stanza_reply(ev->stanza));
    }
    if (strcmp(c->name, "purge") == 0 || strcmp(c->name, "delete") == 0) {
        int del = strcmp(c->name, "delete") == 0;
        if (store_begin(items) < 0) return internal_error(ev, "deleting");
        int bad = purge_items(owner, node) < 0 ||
                  (del && store_delete(nodes, (storage_value_t[]){STORE_VAL_TEXT(owner), STORE_VAL_TEXT(node)}) < 0);
        if (bad || store_commit(items) < 0) {
            store_rollback(items);
            return internal_error(ev, "deleting");
        }
        char *owner_copy = xstrdup(owner);
        xnode_t *el = xnode_new(del ? "delete" : "purge", NS_PUBSUB_EVENT);
        xnode_set_attr(el, "node", node);
        hook_reply(ev, stanza_reply(ev->stanza));
        notify(owner_copy, xnode_attr(el, "node"), el);
        if (del) {
            storage_value_t p[] = {STORE_VAL_TEXT(owner_copy), STORE_VAL_TEXT(xnode_attr(el, "node"))};
            int n;
            do n = store_delete_range(subs, &(store_range_t){.prefix = p, .nprefix = 2, .limit = STORE_MAX_LIMIT});
            while (n == STORE_MAX_LIMIT);
        }
        xnode_free(el);
        free(owner_copy);
        return HOOK_HANDLED;
    }
    return pubsub_error(ev, "cancel", "feature-not-implemented", NULL);
}

/* XEP-0030 items of an account (XEP-0163 §?: its nodes), for the owner; others see the nodes
 * they may read. */
static int on_disco_items(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!ev->to->node || !is_owner(ev)) return HOOK_PASS;
    xnode_t *in = xnode_first_elem(ev->stanza);
    if (xnode_attr(in, "node")) return HOOK_PASS;
    storage_value_t o = STORE_VAL_TEXT(ev->to->bare);
    store_page_t page = {0};
    if (store_range(nodes, &(store_range_t){.prefix = &o, .nprefix = 1, .limit = STORE_MAX_LIMIT}, &page) < 0)
        return internal_error(ev, "listing nodes");
    xnode_t *reply = stanza_reply(ev->stanza);
    xnode_t *qe = xnode_add_elem(reply, "query", NS_DISCO_ITEMS);
    for (int i = 0; i < page.n; i++) {
        xnode_t *it = xnode_add_elem(qe, "item", NULL);
        xnode_set_attr(it, "jid", ev->to->bare);
        xnode_set_attr(it, "node", page.rows[i]->col[N_NODE].p);
    }
    store_page_free(&page);
    return hook_reply(ev, reply);
}

static const char *const features[] = {
    "publish", "publish-options", "auto-create", "persistent-items", "retrieve-items", "multi-items",
    "item-ids", "config-node", "config-node-max", "filtered-notifications", "retract-items", "delete-nodes",
    "purge-nodes", "access-presence", "access-open", "access-whitelist", "create-nodes", "subscribe",
    "retrieve-subscriptions", NULL};

static int load(module_ctx_t *m)
{
    nodes = module_store(m, "nodes");
    items = module_store(m, "items");
    subs = module_store(m, "subscriptions");
    accounts = module_storage(m);
    remote_present = strmap_new();
    module_add_account_identity(m, "pubsub", "pep", NULL);
    module_add_account_feature(m, NS_PUBSUB);
    for (int i = 0; features[i]; i++) {
        char *f = xasprintf(NS_PUBSUB "#%s", features[i]);
        module_add_account_feature(m, f);
        free(f);
    }
    module_add_feature(m, NS_PUBSUB "#publish");
    module_hook(m, "iq-set/bare/" NS_PUBSUB, 0, on_pubsub_set, NULL);
    module_hook(m, "iq-get/bare/" NS_PUBSUB, 0, on_pubsub_get, NULL);
    module_hook(m, "iq-set/bare/" NS_PUBSUB_OWNER, 0, on_owner, NULL);
    module_hook(m, "iq-get/bare/" NS_PUBSUB_OWNER, 0, on_owner, NULL);
    module_hook(m, "iq-get/bare/" NS_DISCO_ITEMS, 1, on_disco_items, NULL);
    module_hook(m, HOOK_CAPS_KNOWN, 0, on_caps_known, NULL);
    module_hook(m, HOOK_CAPS_KNOWN, 0, on_caps_known_remote, NULL);
    module_hook(m, HOOK_CONTACT_PRESENCE, 0, on_contact_presence, NULL);
    module_hook(m, HOOK_USER_DELETED, 0, on_user_deleted, NULL);
    return 0;
}

static void unload(module_ctx_t *m)
{
    (void)m;
    strmap_free(remote_present);
    remote_present = NULL;
}

const module_t civitas_module = {
    .abi = CIVITAS_MODULE_ABI, .name = "pep", .load = load, .unload = unload,
    .options = options, .conf = &conf, .store = &schema};
