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
#define NS_RSM "http://jabber.org/protocol/rsm"
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

enum { N_OWNER, N_NODE, N_ACCESS, N_MAX, N_PERSIST, N_SENDLAST, N_NOTIFYRETRACT, N_GROUPS };
static const store_column_t node_columns[] = {
    {"owner", STORE_TEXT}, {"node", STORE_TEXT}, {"access_model", STORE_INT}, {"max_items", STORE_INT},
    {"persist_items", STORE_INT}, {"send_last", STORE_INT}, {"notify_retract", STORE_INT},
    {"roster_groups", STORE_TEXT | STORE_OPTIONAL},     /* version 2: pubsub#roster_groups_allowed, '\n'-separated */
    {.name = NULL}};
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
static const char *const upgrade[] = {"ALTER TABLE pep_nodes ADD COLUMN roster_groups TEXT", NULL};
static const store_schema_t schema = {.version = 2, .tables = tables, .upgrade = upgrade};

static store_t *nodes, *items, *subs;
static storage_t *accounts;

/* ---- node configuration ---- */
/* Stored as the index: new models go at the end. XEP-0060's "authorize" model (every subscription
 * approved by the owner, §4.5) is not offered: a PEP service's readers are its contacts, which the
 * presence and roster models already express; asking for it gets <unsupported-access-model/>. */
enum { ACCESS_OPEN, ACCESS_PRESENCE, ACCESS_WHITELIST, ACCESS_ROSTER };
static const char *const access_names[] = {"open", "presence", "whitelist", "roster", NULL};
enum { SENDLAST_NEVER, SENDLAST_ON_SUB, SENDLAST_ON_SUB_AND_PRESENCE };
static const char *const sendlast_names[] = {"never", "on_sub", "on_sub_and_presence", NULL};
#define MAX_ITEMS_MAX (-1L)
#define MAX_NAME 1024             /* bytes of a node name or an item id */
#define MAX_SUBS 1000             /* explicit subscriptions per node */
#define MAX_GROUPS 2048           /* bytes of a node's pubsub#roster_groups_allowed, '\n'-separated */

typedef struct node_config {
    int access;
    long max_items;               /* or MAX_ITEMS_MAX */
    int persist;
    int send_last;
    int notify_retract;
    char groups[MAX_GROUPS];      /* roster model: the allowed roster groups, each followed by '\n' */
} node_config_t;

/* XEP-0163 §4 defaults: presence access, persistent, the last item kept. */
static const node_config_t default_config = {ACCESS_PRESENCE, 1, 1, SENDLAST_ON_SUB_AND_PRESENCE, 1, ""};

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
        } else if (strcmp(var, "pubsub#roster_groups_allowed") == 0) {
            size_t used = 0;
            c->groups[0] = 0;
            for (xnode_t *g = xnode_first_elem(f); g && ok; g = xnode_next_elem(g)) {
                if (strcmp(g->name, "value") != 0) continue;
                char *gv = xnode_text(g);
                size_t gl = strlen(gv);
                if (!gl || strchr(gv, '\n') || used + gl + 2 > sizeof c->groups) ok = 0;
                else { memcpy(c->groups + used, gv, gl); used += gl; c->groups[used++] = '\n'; c->groups[used] = 0; }
                free(gv);
            }
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
           a->notify_retract == b->notify_retract && strcmp(a->groups, b->groups) == 0;
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
    xnode_t *gf = xnode_add_elem(x, "field", NULL);
    xnode_set_attr(gf, "var", "pubsub#roster_groups_allowed");
    xnode_set_attr(gf, "type", "list-multi");
    for (const char *g = c->groups, *nl; (nl = strchr(g, '\n')); g = nl + 1) {
        char *one = xasprintf("%.*s", (int)(nl - g), g);
        xnode_add_text(xnode_add_elem(gf, "value", NULL), one);
        free(one);
    }
    return x;
}

/* ---- storage ---- */

/* 0 found (*c set), 1 no such node, -1 error. */
static void row_config(const store_row_t *row, node_config_t *c)
{
    c->access = (int)row->col[N_ACCESS].i;
    c->max_items = (long)row->col[N_MAX].i;
    c->persist = (int)row->col[N_PERSIST].i;
    c->send_last = (int)row->col[N_SENDLAST].i;
    c->notify_retract = (int)row->col[N_NOTIFYRETRACT].i;
    if (c->access < 0 || c->access > ACCESS_ROSTER) c->access = ACCESS_WHITELIST;
    if (c->send_last < 0 || c->send_last > SENDLAST_ON_SUB_AND_PRESENCE) c->send_last = SENDLAST_NEVER;
    const char *g = row->col[N_GROUPS].p;
    snprintf(c->groups, sizeof c->groups, "%s", g && row->col[N_GROUPS].type == STORAGE_TEXT ? g : "");
}

static int node_get(const char *owner, const char *node, node_config_t *c)
{
    store_row_t *row;
    int r = store_get(nodes, (storage_value_t[]){STORE_VAL_TEXT(owner), STORE_VAL_TEXT(node)}, &row);
    if (r != 0) return r;
    row_config(row, c);
    store_row_free(row);
    return 0;
}

static int node_put(const char *owner, const char *node, const node_config_t *c)
{
    storage_value_t row[] = {STORE_VAL_TEXT(owner), STORE_VAL_TEXT(node), STORE_VAL_INT(c->access),
                             STORE_VAL_INT(c->max_items), STORE_VAL_INT(c->persist), STORE_VAL_INT(c->send_last),
                             STORE_VAL_INT(c->notify_retract), STORE_VAL_TEXT(c->groups)};
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
    if (c->access == ACCESS_PRESENCE) return roster_is_subscribed(owner, who, ROSTER_SUB_FROM);
    if (c->access != ACCESS_ROSTER || !c->groups[0] || !owner->node || !host_find(owner->domain)) return 0;
    /* XEP-0060 §4.5 roster: a contact the owner put in one of the allowed roster groups */
    roster_t *r = roster_load(owner);
    jid_t *bare = jid_bare_of(who);
    roster_item_t *it = r && bare ? roster_find(r, bare->bare) : NULL;
    int in = 0;
    for (size_t i = 0; it && it->listed && i < it->groups.n && !in; i++) {
        size_t gl = strlen(it->groups.v[i]);
        for (const char *g = c->groups, *nl; !in && (nl = strchr(g, '\n')); g = nl + 1)
            in = (size_t)(nl - g) == gl && memcmp(g, it->groups.v[i], gl) == 0;
    }
    jid_free(bare);
    roster_free(r);
    return in;
}

/* 1 allowed; otherwise answers with the XEP-0060 §6.5.9 error and returns 0. */
static int may_read(hook_event_t *ev, const node_config_t *c)
{
    if (can_read(ev->to, ev->from, c)) return 1;
    /* §6.5.9.5 presence, §6.5.9.6 roster, §6.5.9.7 whitelist */
    int auth = c->access == ACCESS_PRESENCE || c->access == ACCESS_ROSTER;
    xnode_t *e = stanza_error(ev->stanza, auth ? "auth" : "cancel", auth ? "not-authorized" : "not-allowed", NULL);
    xnode_t *err = xnode_child(e, "error", NULL);
    if (err) xnode_add_elem(err, c->access == ACCESS_PRESENCE ? "presence-subscription-required"
                                 : c->access == ACCESS_ROSTER ? "not-in-roster-group" : "closed-node",
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

typedef struct notify_ctx {
    const char *owner, *node;
    xnode_t *items_el;
    char *feature;
    const node_config_t *cfg;
} notify_ctx_t;

/* A contact of owner to be notified (and sent last items): it may read the node, and it either
 * receives the owner's presence or the node is for its roster group. */
static int contact_may_know(const jid_t *owner, const jid_t *contact, const node_config_t *c)
{
    if (!can_read(owner, contact, c)) return 0;
    return c->access == ACCESS_ROSTER || roster_is_subscribed(owner, contact, ROSTER_SUB_FROM);
}

static void notify_remote(const char *key, void *val, void *ud)
{
    (void)val;
    notify_ctx_t *n = ud;
    size_t ol = strlen(n->owner);
    if (strncmp(key, n->owner, ol) != 0 || key[ol] != '\n') return;
    jid_t *full = jid_new(key + ol + 1);
    jid_t *owner = jid_new(n->owner);
    if (full && owner && caps_has_feature(full, n->feature) && contact_may_know(owner, full, n->cfg))
        send_event(n->owner, full->full, n->items_el);
    jid_free(full);
    jid_free(owner);
}

/* items_el (<items node>…</items>) to the owner's available resources and to the resources of
 * contacts that may read the node (configuration c) whose caps include node+notify. */
static void notify(const char *owner_s, const char *node, xnode_t *items_el, const node_config_t *c)
{
    jid_t *owner = jid_new(owner_s);
    if (!owner) return;
    notify_ctx_t n = {owner_s, node, items_el, xasprintf("%s+notify", node), c};
    notify_sent = strmap_new();
    for (session_t *s = user_sessions(owner); s; s = session_next_in_user(s))
        if (session_available(s)) send_event(owner_s, session_jid(s)->full, items_el);
    roster_t *r = roster_load(owner);
    for (size_t i = 0; r && i < roster_count(r); i++) {
        roster_item_t *it = roster_at(r, i);
        if (!it->listed) continue;
        jid_t *cj = jid_new(it->jid);
        if (cj && host_find(cj->domain) && contact_may_know(owner, cj, c)) {
            for (session_t *s = user_sessions(cj); s; s = session_next_in_user(s))
                if (session_available(s) && session_has_feature(s, n.feature))
                    send_event(owner_s, session_jid(s)->full, items_el);
        }
        jid_free(cj);
    }
    roster_free(r);
    size_t pos = 0;
    const char *key;
    void *val;
    while (strmap_next(remote_present, &pos, &key, &val)) notify_remote(key, val, &n);
    /* explicit subscriptions (XEP-0060 §6.1), as long as the access model still lets them read */
    storage_value_t p[] = {STORE_VAL_TEXT(owner_s), STORE_VAL_TEXT(node)};
    store_page_t page = {0};
    if (store_range(subs, &(store_range_t){.prefix = p, .nprefix = 2, .limit = STORE_MAX_LIMIT}, &page) == 0) {
        for (int i = 0; i < page.n; i++) {
            jid_t *sj = jid_new(page.rows[i]->col[S_JID].p);
            if (sj && can_read(owner, sj, c)) send_event(owner_s, sj->full, items_el);
            jid_free(sj);
        }
    }
    store_page_free(&page);
    strmap_free(notify_sent);
    notify_sent = NULL;
    free(n.feature);
    jid_free(owner);
}

/* The last item of owner's node (if it has one) to `to` as an event. */
static void send_last_item(const char *owner, const char *node, const char *to)
{
    store_page_t ip = {0};
    if (items_page(owner, node, 1, &ip) == 0 && ip.n == 1) {
        xnode_t *el = xnode_new("items", NS_PUBSUB_EVENT);
        xnode_set_attr(el, "node", node);
        xnode_add_child(el, item_xml(ip.rows[0], 1, NS_PUBSUB_EVENT));
        send_event(owner, to, el);
        xnode_free(el);
    }
    store_page_free(&ip);
}

/* The last item of each node of owner with send_last != never, to the full JID `to` if its caps
 * include node+notify. */
static void send_last_items(const char *owner, const jid_t *to)
{
    storage_value_t o = STORE_VAL_TEXT(owner);
    store_page_t page = {0};
    jid_t *oj = jid_new(owner);
    if (!oj || store_range(nodes, &(store_range_t){.prefix = &o, .nprefix = 1, .limit = STORE_MAX_LIMIT}, &page) < 0) {
        jid_free(oj);
        return;
    }
    for (int i = 0; i < page.n; i++) {
        const store_row_t *nr = page.rows[i];
        node_config_t cfg;
        row_config(nr, &cfg);
        if (cfg.send_last == SENDLAST_NEVER || !can_read(oj, to, &cfg)) continue;
        const char *node = nr->col[N_NODE].p;
        char *feat = xasprintf("%s+notify", node);
        int want = caps_has_feature(to, feat);
        free(feat);
        if (want) send_last_item(owner, node, to->full);
    }
    store_page_free(&page);
    jid_free(oj);
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

/* XEP-0163 §4.3.4 (send_last_published_item on_sub_and_presence): when the owner approves a
 * contact's subscription, the contact's resources interested in a node (+notify) get its last item.
 * The roster changes in mod_presence after this hook ran, so the check waits for the next loop turn. */
static module_ctx_t *self;

static void approved_later(module_timer_t *t, void *ud)
{
    (void)t;
    char *pair = ud, *nl = strchr(pair, '\n');
    *nl = 0;
    jid_t *owner = jid_new(pair), *contact = jid_new(nl + 1);
    if (owner && contact && roster_is_subscribed(owner, contact, ROSTER_SUB_FROM)) {
        if (host_find(contact->domain)) {
            for (session_t *s = user_sessions(contact); s; s = session_next_in_user(s))
                if (session_available(s)) send_last_items(owner->bare, session_jid(s));
        } else {                    /* remote: the contact's resources that sent the owner presence */
            size_t ol = strlen(owner->bare), pos = 0;
            const char *key;
            void *val;
            while (strmap_next(remote_present, &pos, &key, &val)) {
                if (strncmp(key, owner->bare, ol) != 0 || key[ol] != '\n') continue;
                jid_t *full = jid_new(key + ol + 1);
                if (full && jid_bare_equal(full, contact)) send_last_items(owner->bare, full);
                jid_free(full);
            }
        }
    }
    jid_free(owner);
    jid_free(contact);
    free(pair);
}

static int on_outbound(hook_event_t *ev, void *ud)
{
    (void)ud;
    xnode_t *st = ev->stanza;
    const char *type = xnode_attr(st, "type"), *to = xnode_attr(st, "to");
    if (!ev->from || !type || !to || strcmp(st->name, "presence") != 0 || strcmp(type, "subscribed") != 0)
        return HOOK_PASS;
    jid_t *owner = jid_bare_of(ev->from), *contact = jid_new(to);
    if (owner && contact && contact->node && !roster_is_subscribed(owner, contact, ROSTER_SUB_FROM)) {
        jid_t *cb = jid_bare_of(contact);
        module_add_timer(self, 0, 0, approved_later, xasprintf("%s\n%s", owner->bare, cb->bare));
        jid_free(cb);
    }
    jid_free(owner);
    jid_free(contact);
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

static void bookmarks_changed(const char *owner, const char *publisher, const char *node, const xnode_t *payload);

/* A configuration form with a value not allowed: <not-acceptable/>; for an access model the service
 * does not offer (authorize) with <unsupported-access-model/> (XEP-0060 §8.1.3.4, §8.2.5). */
static int config_error(hook_event_t *ev, const char *bad)
{
    return pubsub_error(ev, "modify", "not-acceptable",
                        strcmp(bad, "pubsub#access_model") == 0 ? "unsupported-access-model" : NULL);
}

static const node_config_t bm2_config, bm1_config;

/* The configuration of a node a publish creates: bookmarks (they may hold room passwords) are never
 * readable by others, whatever options the client forgot (XEP-0402 §3, XEP-0048 §3.3). */
static node_config_t default_for(const char *node)
{
    if (strcmp(node, "urn:xmpp:bookmarks:1") == 0) return bm2_config;
    if (strcmp(node, "storage:bookmarks") == 0) return bm1_config;
    return default_config;
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
    want = r == 0 ? cur : default_for(node);
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
    notify(owner, node_copy, el, &want);
    bookmarks_changed(owner, ev->from->full, node_copy, pl_copy);
    xnode_free(el);
    free(node_copy);
    free(id_copy);
    return HOOK_HANDLED;
}

/* The text of rsm's child name, malloc'd, or NULL when absent. */
static char *rsm_text(const xnode_t *rsm, const char *name)
{
    xnode_t *e = rsm ? xnode_child(rsm, name, NS_RSM) : NULL;
    return e ? xnode_text(e) : NULL;
}

/* XEP-0059 paging of a node's items (XEP-0060 §6.5.4 asks for a page with <set><max/>, §6.5.7):
 * the item ids are the UIDs, in the order items are returned (newest first). A node holds at most
 * max_items items, so the whole list is read and cut here. */
static int items_rsm(hook_event_t *ev, const char *node, const xnode_t *rsm, long limit, xnode_t *reply, xnode_t *out)
{
    char *mx = rsm_text(rsm, "max"), *after = rsm_text(rsm, "after"), *before = rsm_text(rsm, "before"),
         *index = rsm_text(rsm, "index");
    int bad = 0;
    long max = limit;
    if (mx) {
        char *end;
        long v = strtol(mx, &end, 10);
        if (!*mx || *end || v < 0) bad = 1; else if (v < max) max = v;
    }
    long from = 0;
    if (index) {
        char *end;
        from = strtol(index, &end, 10);
        if (!*index || *end || from < 0) bad = 1;
    }
    store_page_t page = {0};
    int rc = 0;
    if (bad) {
        rc = hook_error(ev, "modify", "bad-request");
        goto out;
    }
    if (items_page(ev->to->bare, node, (int)conf.max_items, &page) < 0) { rc = -1; goto out; }
    long n = page.n, to;
    if (after || (before && *before)) {
        const char *uid = after ? after : before;
        long at = -1;
        for (long i = 0; i < n && at < 0; i++)
            if (strcmp(page.rows[i]->col[I_ID].p, uid) == 0) at = i;
        if (at < 0) {               /* XEP-0059 §2.5: an unknown UID */
            rc = hook_error(ev, "cancel", "item-not-found");
            goto out;
        }
        if (after) { from = at + 1; to = from + max < n ? from + max : n; }
        else { to = at; from = to - max > 0 ? to - max : 0; }
    } else if (before) {            /* <before/> empty: the last page */
        to = n;
        from = n - max > 0 ? n - max : 0;
    } else {
        if (from > n) from = n;
        to = from + max < n ? from + max : n;
    }
    for (long i = from; i < to; i++) xnode_add_child(out, item_xml(page.rows[i], 1, NS_PUBSUB));
    xnode_t *set = xnode_add_elem(xnode_first_elem(reply), "set", NS_RSM);
    if (to > from) {
        char ix[24];
        snprintf(ix, sizeof ix, "%ld", from);
        xnode_t *f = xnode_add_elem(set, "first", NULL);
        xnode_set_attr(f, "index", ix);
        xnode_add_text(f, page.rows[from]->col[I_ID].p);
        xnode_add_text(xnode_add_elem(set, "last", NULL), page.rows[to - 1]->col[I_ID].p);
    }
    char cnt[24];
    snprintf(cnt, sizeof cnt, "%ld", n);
    xnode_add_text(xnode_add_elem(set, "count", NULL), cnt);
    rc = hook_reply(ev, reply);
    reply = NULL;
out:
    store_page_free(&page);
    xnode_free(reply);
    free(mx);
    free(after);
    free(before);
    free(index);
    return rc;
}

static int do_items(hook_event_t *ev, xnode_t *ps, xnode_t *req)
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
    xnode_t *rsm = xnode_child(ps, "set", NS_RSM);
    if (rsm) {
        int rc = items_rsm(ev, node, rsm, limit, reply, out);
        return rc < 0 ? internal_error(ev, "reading items") : rc;
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
    if (el) notify(owner_copy, xnode_attr(el, "node"), el, &c);
    bookmarks_changed(owner_copy, ev->from->full, node, NULL);
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
    if (form && apply_form(form, &c, 0, &bad) < 0) return config_error(ev, bad);
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
    if (c.send_last != SENDLAST_NEVER)        /* §6.1.7: the last item at subscription */
        send_last_item(owner_copy, node_copy, j->full);
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
    if (c && strcmp(c->name, "items") == 0) return do_items(ev, ps, c);
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
        if (apply_form(form, &cf, 0, &bad) < 0) return config_error(ev, bad);
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
        notify(owner_copy, xnode_attr(el, "node"), el, &cf);
        bookmarks_changed(owner_copy, ev->from->full, xnode_attr(el, "node"), NULL);
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

/* ---- XEP-0402 bookmarks and XEP-0411 compatibility ----
 * urn:xmpp:bookmarks:1 (one item per room, id = the room's bare JID) is the truth. The legacy forms
 * follow it: the PEP node storage:bookmarks (XEP-0048 §3.3, item 'current') is rewritten after
 * every change of the 0402 node, a publish to it rewrites the 0402 node, and XEP-0049 private
 * storage of <storage xmlns='storage:bookmarks'/> is answered and written from and to the 0402
 * node (mod_private never sees it once the 0402 node exists). Legacy <url/> bookmarks have no 0402
 * form and are not kept. */
#define NS_BM2 "urn:xmpp:bookmarks:1"
#define NS_BM1 "storage:bookmarks"
#define NS_PRIVATE "jabber:iq:private"
/* XEP-0402 §3 and XEP-0048 §3.3 publish-options: whitelist, persistent, never sent to others */
static const node_config_t bm2_config = {ACCESS_WHITELIST, MAX_ITEMS_MAX, 1, SENDLAST_NEVER, 1, ""};
static const node_config_t bm1_config = {ACCESS_WHITELIST, 1, 1, SENDLAST_NEVER, 1, ""};

/* Store payload as item id of owner's node (created with *create when missing: the server's own
 * nodes, not counted against max_nodes) and notify. 0/-1 (logged). */
static int store_item(const char *owner, const char *node, const char *id, const char *publisher,
                      const xnode_t *payload, const node_config_t *create)
{
    node_config_t c;
    int r = node_get(owner, node, &c);
    size_t len = 0;
    char *xml = r < 0 ? NULL : xnode_serialize(payload, NULL, &len);
    if (!xml || store_begin(items) < 0) {
        free(xml);
        log_warn("pep", "storing a bookmark failed: %s", store_error(items));
        return -1;
    }
    if (r == 1) c = *create;
    int ok = (r == 1 ? node_put(owner, node, &c) : 0) == 0;
    if (ok) {
        storage_value_t row[] = {STORE_VAL_TEXT(owner), STORE_VAL_TEXT(node), STORE_VAL_TEXT(id),
                                 STORE_VAL_INT(next_seq(owner, node)), STORE_VAL_TEXT(publisher),
                                 STORE_VAL_INT((int64_t)time(NULL)), STORE_VAL_BLOB(xml, len)};
        ok = store_put(items, row, NULL) == 0 && trim(owner, node, effective_max(&c)) == 0;
    }
    free(xml);
    if (!ok || store_commit(items) < 0) {
        log_warn("pep", "storing a bookmark failed: %s", store_error(items));
        store_rollback(items);
        return -1;
    }
    xnode_t *el = xnode_new("items", NS_PUBSUB_EVENT);
    xnode_set_attr(el, "node", node);
    xnode_t *it = xnode_add_elem(el, "item", NULL);
    xnode_set_attr(it, "id", id);
    xnode_add_child(it, xnode_copy(payload));
    notify(owner, node, el, &c);
    xnode_free(el);
    return 0;
}

static int retract_item(const char *owner, const char *node, const char *id)
{
    node_config_t c;
    if (node_get(owner, node, &c) != 0) return -1;
    int d = store_delete(items, (storage_value_t[]){STORE_VAL_TEXT(owner), STORE_VAL_TEXT(node), STORE_VAL_TEXT(id)});
    if (d < 0) log_warn("pep", "retracting a bookmark failed: %s", store_error(items));
    if (d <= 0 || !c.notify_retract) return d < 0 ? -1 : 0;
    xnode_t *el = xnode_new("items", NS_PUBSUB_EVENT);
    xnode_set_attr(el, "node", node);
    xnode_set_attr(xnode_add_elem(el, "retract", NULL), "id", id);
    notify(owner, node, el, &c);
    xnode_free(el);
    return 0;
}

static int truthy(const char *v) { return v && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0); }

static char *child_text(const xnode_t *el, const char *name, const char *ns)
{
    xnode_t *c = xnode_child(el, name, ns);
    return c ? xnode_text(c) : NULL;
}

/* XEP-0402 §3.1 <conference/>; ext (the 0402 <extensions/>) is copied. */
static xnode_t *bm2_conference(const char *name, int autojoin, const char *nick, const char *password,
                               const xnode_t *ext)
{
    xnode_t *c = xnode_new("conference", NS_BM2);
    if (name && *name) xnode_set_attr(c, "name", name);
    if (autojoin) xnode_set_attr(c, "autojoin", "true");
    if (nick && *nick) xnode_add_text(xnode_add_elem(c, "nick", NULL), nick);
    if (password && *password) xnode_add_text(xnode_add_elem(c, "password", NULL), password);
    if (ext) xnode_add_child(c, xnode_copy(ext));
    return c;
}

/* The parsed 0402 items of owner (rows newest first), or -1. */
static int bm2_rows(const char *owner, store_page_t *page)
{
    return items_page(owner, NS_BM2, (int)conf.max_items, page);
}

/* The legacy <storage/> (XEP-0048 §3.1) of owner's 0402 bookmarks, or NULL on a storage error; its
 * <url/> bookmarks (no 0402 form) from urls, or else from the legacy PEP node's current item. */
static xnode_t *bm1_storage(const char *owner, const xnode_t *urls)
{
    store_page_t page = {0};
    if (bm2_rows(owner, &page) < 0) return NULL;
    xnode_t *st = xnode_new("storage", NS_BM1), *cur = NULL;
    if (!urls) {
        store_row_t *row;
        if (store_get(items, (storage_value_t[]){STORE_VAL_TEXT(owner), STORE_VAL_TEXT(NS_BM1), STORE_VAL_TEXT("current")},
                      &row) == 0) {
            urls = cur = xnode_parse_one(row->col[I_PAYLOAD].p, row->col[I_PAYLOAD].len, NULL);
            store_row_free(row);
        }
    }
    for (int i = page.n - 1; i >= 0; i--) {     /* oldest first */
        const store_row_t *row = page.rows[i];
        xnode_t *pl = xnode_parse_one(row->col[I_PAYLOAD].p, row->col[I_PAYLOAD].len, NULL);
        if (!pl || strcmp(pl->name, "conference") != 0 || strcmp(pl->ns, NS_BM2) != 0) { xnode_free(pl); continue; }
        xnode_t *c = xnode_add_elem(st, "conference", NULL);
        xnode_set_attr(c, "jid", row->col[I_ID].p);
        if (xnode_attr(pl, "name")) xnode_set_attr(c, "name", xnode_attr(pl, "name"));
        xnode_set_attr(c, "autojoin", truthy(xnode_attr(pl, "autojoin")) ? "true" : "false");
        char *nick = child_text(pl, "nick", NS_BM2), *pw = child_text(pl, "password", NS_BM2);
        if (nick) xnode_add_text(xnode_add_elem(c, "nick", NULL), nick);
        if (pw) xnode_add_text(xnode_add_elem(c, "password", NULL), pw);
        free(nick);
        free(pw);
        xnode_free(pl);
    }
    store_page_free(&page);
    for (xnode_t *u = urls ? xnode_first_elem(urls) : NULL; u; u = xnode_next_elem(u))
        if (strcmp(u->name, "url") == 0 && strcmp(u->ns, NS_BM1) == 0) xnode_add_child(st, xnode_copy(u));
    xnode_free(cur);
    return st;
}

/* Rewrite the PEP node storage:bookmarks from the 0402 node. 0/-1. */
static int bm1_sync(const char *owner, const char *publisher, const xnode_t *urls)
{
    xnode_t *st = bm1_storage(owner, urls);
    int rc = st ? store_item(owner, NS_BM1, "current", publisher, st, &bm1_config) : -1;
    xnode_free(st);
    return rc;
}

/* Make the 0402 node hold the conferences of a legacy <storage/>: new and changed ones published,
 * missing ones retracted (each notified), 0402 <extensions/> of kept rooms preserved. 0/-1. */
static int bm2_from_legacy(const char *owner, const char *publisher, const xnode_t *storage)
{
    store_page_t page = {0};
    if (bm2_rows(owner, &page) < 0) return -1;
    strmap_t *keep = strmap_new();
    int rc = 0;
    for (xnode_t *c = xnode_first_elem(storage); c; c = xnode_next_elem(c)) {
        const char *js = xnode_attr(c, "jid");
        jid_t *j = js && strcmp(c->name, "conference") == 0 ? jid_new(js) : NULL;
        if (!j || !j->node || j->resource || strmap_get(keep, j->bare)) { jid_free(j); continue; }
        strmap_put(keep, j->bare, (void *)1);
        xnode_t *old = NULL;
        for (int i = 0; i < page.n && !old; i++)
            if (strcmp(page.rows[i]->col[I_ID].p, j->bare) == 0)
                old = xnode_parse_one(page.rows[i]->col[I_PAYLOAD].p, page.rows[i]->col[I_PAYLOAD].len, NULL);
        xnode_t *oldn = NULL;
        if (old) {
            char *on = child_text(old, "nick", NS_BM2), *op = child_text(old, "password", NS_BM2);
            oldn = bm2_conference(xnode_attr(old, "name"), truthy(xnode_attr(old, "autojoin")), on, op,
                                  xnode_child(old, "extensions", NS_BM2));
            free(on);
            free(op);
        }
        char *nick = child_text(c, "nick", NS_BM1), *pw = child_text(c, "password", NS_BM1);
        xnode_t *want = bm2_conference(xnode_attr(c, "name"), truthy(xnode_attr(c, "autojoin")), nick, pw,
                                       old ? xnode_child(old, "extensions", NS_BM2) : NULL);
        if (!oldn || !xnode_equal(oldn, want)) rc |= store_item(owner, NS_BM2, j->bare, publisher, want, &bm2_config);
        free(nick);
        free(pw);
        xnode_free(want);
        xnode_free(oldn);
        xnode_free(old);
        jid_free(j);
    }
    for (int i = 0; i < page.n; i++)
        if (!strmap_get(keep, page.rows[i]->col[I_ID].p)) rc |= retract_item(owner, NS_BM2, page.rows[i]->col[I_ID].p);
    strmap_free(keep);
    store_page_free(&page);
    node_config_t c;
    int r = node_get(owner, NS_BM2, &c);
    if (r == 1 && node_put(owner, NS_BM2, &bm2_config) < 0) r = -1;
    return rc || r < 0 ? -1 : 0;
}

/* After a client changed one of owner's nodes (payload: what it published, or NULL). */
static void bookmarks_changed(const char *owner, const char *publisher, const char *node, const xnode_t *payload)
{
    if (strcmp(node, NS_BM2) == 0) bm1_sync(owner, publisher, NULL);
    else if (strcmp(node, NS_BM1) == 0 && payload && strcmp(payload->name, "storage") == 0 &&
             strcmp(payload->ns, NS_BM1) == 0)
        bm2_from_legacy(owner, publisher, payload);
}

/* The <storage xmlns='storage:bookmarks'/> of a private XML request by the account itself when it
 * is the request's only fragment; otherwise NULL (mod_private answers). */
static xnode_t *private_bookmarks(const hook_event_t *ev)
{
    if (!ev->origin || !is_owner(ev)) return NULL;
    xnode_t *q = xnode_first_elem(ev->stanza), *st = q ? xnode_first_elem(q) : NULL;
    if (!st || strcmp(q->name, "query") != 0 || xnode_next_elem(st) || strcmp(st->name, "storage") != 0 ||
        strcmp(st->ns, NS_BM1) != 0)
        return NULL;
    return st;
}

static int on_private_get(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!private_bookmarks(ev)) return HOOK_PASS;
    node_config_t c;
    int r = node_get(ev->to->bare, NS_BM2, &c);
    if (r < 0) return internal_error(ev, "reading bookmarks");
    if (r == 1) return HOOK_PASS;            /* never used 0402: whatever private storage holds */
    xnode_t *st = bm1_storage(ev->to->bare, NULL);
    if (!st) return internal_error(ev, "reading bookmarks");
    xnode_t *reply = stanza_reply(ev->stanza);
    xnode_add_child(xnode_add_elem(reply, "query", NS_PRIVATE), st);
    return hook_reply(ev, reply);
}

static int on_private_set(hook_event_t *ev, void *ud)
{
    (void)ud;
    xnode_t *st = private_bookmarks(ev);
    if (!st) return HOOK_PASS;
    char *owner = xstrdup(ev->to->bare);
    int rc = bm2_from_legacy(owner, ev->from->full, st);
    if (rc == 0) rc = bm1_sync(owner, ev->from->full, st);
    free(owner);
    return rc < 0 ? internal_error(ev, "storing bookmarks") : hook_reply(ev, stanza_reply(ev->stanza));
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
    "purge-nodes", "access-presence", "access-open", "access-whitelist", "access-roster", "create-nodes",
    "subscribe", "retrieve-subscriptions", "rsm", NULL};

static int load(module_ctx_t *m)
{
    nodes = module_store(m, "nodes");
    items = module_store(m, "items");
    subs = module_store(m, "subscriptions");
    accounts = module_storage(m);
    remote_present = strmap_new();
    self = m;
    module_add_account_identity(m, "pubsub", "pep", NULL);
    module_add_account_feature(m, NS_PUBSUB);
    for (int i = 0; features[i]; i++) {
        char *f = xasprintf(NS_PUBSUB "#%s", features[i]);
        module_add_account_feature(m, f);
        free(f);
    }
    module_add_feature(m, NS_PUBSUB "#publish");
    /* Profanity decides whether to send publish-options from the server's features (disco#info of
     * the domain and its items), not the account's: without this it publishes OMEMO nodes with the
     * default access model (presence) and contacts that are not subscribed cannot start sessions. */
    module_add_feature(m, NS_PUBSUB "#publish-options");
    module_hook(m, "iq-set/bare/" NS_PUBSUB, 0, on_pubsub_set, NULL);
    module_hook(m, "iq-get/bare/" NS_PUBSUB, 0, on_pubsub_get, NULL);
    module_hook(m, "iq-set/bare/" NS_PUBSUB_OWNER, 0, on_owner, NULL);
    module_hook(m, "iq-get/bare/" NS_PUBSUB_OWNER, 0, on_owner, NULL);
    module_hook(m, "iq-get/bare/" NS_DISCO_ITEMS, 1, on_disco_items, NULL);
    module_hook(m, "iq-get/bare/" NS_PRIVATE, 10, on_private_get, NULL);     /* before mod_private (0) */
    module_hook(m, "iq-set/bare/" NS_PRIVATE, 10, on_private_set, NULL);
    module_add_account_feature(m, NS_BM2 "#compat");
    module_add_account_feature(m, NS_BM2 "#compat-pep");
    module_add_account_feature(m, "urn:xmpp:bookmarks-conversion:0");     /* XEP-0411 §2 */
    module_hook(m, HOOK_CAPS_KNOWN, 0, on_caps_known, NULL);
    module_hook(m, HOOK_CAPS_KNOWN, 0, on_caps_known_remote, NULL);
    module_hook(m, HOOK_CONTACT_PRESENCE, 0, on_contact_presence, NULL);
    module_hook(m, HOOK_USER_DELETED, 0, on_user_deleted, NULL);
    module_hook(m, HOOK_PRE_STANZA_OUT, 1, on_outbound, NULL);     /* after blocking (100), before presence (0) */
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
