/* modules/mod_push.c: XEP-0357 Push Notifications: a client registers its app server's JID and node
 * (<enable/>, per device; kept in the push_reg table across restarts); a message for an account
 * with no session, or for a hibernated XEP-0198 session ("smacks/hibernated-stanza"), becomes a
 * PubSub publish of a urn:xmpp:push:summary form to that node. Privacy first: the summary carries
 * a message count and, for important messages, a fixed text; the sender and the real body only
 * when the host's admin turns them on. A registration whose app server fails repeatedly is dropped. */
#include "module.h"
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_PUSH "urn:xmpp:push:0"
#define NS_PUBSUB "http://jabber.org/protocol/pubsub"
#define NS_XDATA "jabber:x:data"
#define NS_HINTS "urn:xmpp:hints"
#define NS_OMEMO_LEGACY "eu.siacs.conversations.axolotl"
#define NS_OMEMO2 "urn:xmpp:omemo:2"
#define NS_JMI0 "urn:xmpp:jingle-message:0"
#define NS_JMI1 "urn:xmpp:jingle-message:1"
#define FORM_OPTIONS "http://jabber.org/protocol/pubsub#publish-options"
#define FORM_SUMMARY "urn:xmpp:push:summary"
#define MAX_OPTIONS 4096            /* bytes of a stored publish-options form */
#define MAX_ATTR 1024               /* bytes of the jid and node attributes */
#define MAX_BODY 256                /* characters of a real body in a summary (include_body) */

static struct push_conf {
    int include_sender;     /* per host: last-message-sender in the summary */
    int include_body;       /* per host: the real body as last-message-body */
    char *body_text;        /* per host: the fixed last-message-body of an important message */
    long max_errors;        /* consecutive errors or time-outs before a registration is dropped */
    long timeout;           /* seconds to wait for the app server's answer */
    long max_registrations; /* per account */
} conf;

static const module_option_t options[] = {
    {.name = "include_sender", .type = MOPT_BOOL, .offset = offsetof(struct push_conf, include_sender), .def = 0,
     .per_host = 1},
    {.name = "include_body", .type = MOPT_BOOL, .offset = offsetof(struct push_conf, include_body), .def = 0,
     .per_host = 1},
    {.name = "body_text", .type = MOPT_STRING, .offset = offsetof(struct push_conf, body_text), .min = 1,
     .max = 200, .def_string = "New message", .per_host = 1},
    {.name = "max_errors", .type = MOPT_INT, .offset = offsetof(struct push_conf, max_errors), .def = 5, .min = 1,
     .max = 1000},
    {.name = "timeout", .type = MOPT_DURATION, .offset = offsetof(struct push_conf, timeout), .def = 30, .min = 1,
     .max = 3600},
    {.name = "max_registrations", .type = MOPT_INT, .offset = offsetof(struct push_conf, max_registrations),
     .def = 20, .min = 1, .max = 1000},
    {.name = NULL}};

/* push_reg: one row per registration (account, app server JID, node). */
enum { R_JID, R_SERVICE, R_NODE, R_RESOURCE, R_OPTIONS, R_ERRORS, R_CREATED };
static const store_column_t reg_columns[] = {
    {"jid", STORE_TEXT},     {"service", STORE_TEXT}, {"node", STORE_TEXT},
    {"resource", STORE_TEXT}, /* the resource that enabled it: its hibernated session is pushed for */
    {"options", STORE_BLOB | STORE_OPTIONAL},       /* the publish-options form as sent, serialised */
    {"errors", STORE_INT},   {"created", STORE_INT}, {.name = NULL}};
static const store_table_t tables[] = {
    {.name = "reg", .columns = reg_columns, .key = "jid, service, node", .account = "jid"}, {.name = NULL}};
static const store_schema_t schema = {.version = 1, .tables = tables};

static module_ctx_t *self;
static store_t *regs;

/* Per account, in memory (a restart starts the count again): messages pushed since the account's
 * last login and what the summary may say about the last one. */
typedef struct user_state {
    long count;
    int important;          /* the last message was important (body, OMEMO, call) */
    char *sender;           /* its sender, kept only with include_sender */
    char *body;             /* its body, kept only with include_body */
} user_state_t;
static strmap_t *users;     /* bare JID -> user_state_t */

/* Per registration with a publish in flight: one at a time; messages meanwhile set `again`, and
 * one more publish (with the count by then) follows the answer. An app server never gets more
 * than one unanswered publish per registration, however fast messages arrive. */
typedef struct pending {
    int again;
} pending_t;
static strmap_t *pending;   /* "jid\nservice\nnode" -> pending_t */

static void user_free(void *p)
{
    user_state_t *u = p;
    if (!u) return;
    free(u->sender);
    free(u->body);
    free(u);
}

static void user_forget(const char *bare) { user_free(strmap_del(users, bare)); }

static char *reg_key(const char *jid, const char *service, const char *node)
{
    return xasprintf("%s\n%s\n%s", jid, service, node);
}

/* ---- enable / disable (XEP-0357 §5, §6) ---- */

static const char *form_type(const xnode_t *x)
{
    for (xnode_t *f = xnode_first_elem(x); f; f = xnode_next_elem(f)) {
        const char *var = xnode_attr(f, "var");
        if (strcmp(f->name, "field") == 0 && var && strcmp(var, "FORM_TYPE") == 0) {
            xnode_t *v = xnode_child(f, "value", NS_XDATA);
            return v && v->children && !v->children->name ? v->children->text : "";
        }
    }
    return NULL;
}

static int on_enable(hook_event_t *ev, xnode_t *en)
{
    const char *service_s = xnode_attr(en, "jid"), *node = xnode_attr(en, "node");
    if (!service_s || !node || !*node || strlen(service_s) > MAX_ATTR || strlen(node) > MAX_ATTR)
        return hook_error_cond(ev, STANZA_ERR_BAD_REQUEST);
    jid_t *service = jid_new(service_s);
    /* the account itself as the app server would publish into its own PEP */
    int own = service && jid_bare_equal(service, ev->from);
    if (!service || own) {
        jid_free(service);
        return hook_error_cond(ev, own ? STANZA_ERR_NOT_ACCEPTABLE : STANZA_ERR_JID_MALFORMED);
    }
    xnode_t *x = xnode_child(en, "x", NS_XDATA);
    char *opts = NULL;
    size_t opts_len = 0;
    if (x) {
        const char *ft = form_type(x);
        if (!ft || strcmp(ft, FORM_OPTIONS) != 0) {
            jid_free(service);
            return hook_error_cond(ev, STANZA_ERR_BAD_REQUEST);
        }
        opts = xnode_serialize(x, NULL, &opts_len);
        if (!opts || opts_len > MAX_OPTIONS) {
            free(opts);
            jid_free(service);
            return hook_error_cond(ev, STANZA_ERR_NOT_ACCEPTABLE);
        }
    }
    const char *bare = ev->to->bare;
    storage_value_t key[] = {STORE_VAL_TEXT((char *)bare), STORE_VAL_TEXT(service->full), STORE_VAL_TEXT((char *)node)};
    store_row_t *old = NULL;
    int exists = store_get(regs, key, &old);
    store_row_free(old);
    int fresh = exists == 1;    /* store_get: 0 found (enabled again: replaced), 1 none */
    int n = store_count(regs, &(store_range_t){.prefix = key, .nprefix = 1});
    int r = -1;
    if (exists >= 0 && n >= 0 && fresh && n >= conf.max_registrations) {
        free(opts);
        jid_free(service);
        return hook_error_cond(ev, STANZA_ERR_RESOURCE_CONSTRAINT);
    }
    if (exists >= 0 && n >= 0) {
        storage_value_t row[] = {key[0], key[1], key[2], STORE_VAL_TEXT(ev->from->resource ? ev->from->resource : ""),
                                 opts ? STORE_VAL_BLOB(opts, opts_len) : STORE_VAL_NULL, STORE_VAL_INT(0),
                                 STORE_VAL_INT(now_unix())};
        r = store_put(regs, row, NULL);
    }
    free(opts);
    jid_free(service);
    if (r < 0) {
        log_warn("push", "storing a push registration failed: %s", store_error(regs));
        return hook_error_cond(ev, STANZA_ERR_INTERNAL_SERVER_ERROR);
    }
    if (ev->origin) session_set_data(ev->origin, SESSION_DATA_PUSH_ENABLED, (void *)1, NULL);
    log_info("push", "%s enabled push (%d registration(s))", log_jid(bare), n + fresh);
    return hook_reply(ev, stanza_reply(ev->stanza));
}

/* §6: without node, every registration with that app server goes. */
static int on_disable(hook_event_t *ev, xnode_t *dis)
{
    const char *service_s = xnode_attr(dis, "jid"), *node = xnode_attr(dis, "node");
    jid_t *service = service_s ? jid_new(service_s) : NULL;
    if (!service) return hook_error_cond(ev, STANZA_ERR_BAD_REQUEST);
    storage_value_t key[] = {STORE_VAL_TEXT((char *)ev->to->bare), STORE_VAL_TEXT(service->full),
                             STORE_VAL_TEXT(node ? (char *)node : "")};
    int r;
    if (node) r = store_delete(regs, key);
    else {
        int n;
        r = 0;
        do {
            n = store_delete_range(regs, &(store_range_t){.prefix = key, .nprefix = 2, .limit = STORE_MAX_LIMIT});
            if (n > 0) r += n;
        } while (n == STORE_MAX_LIMIT);
        if (n < 0) r = -1;
    }
    jid_free(service);
    if (r < 0) {
        log_warn("push", "removing a push registration failed: %s", store_error(regs));
        return hook_error_cond(ev, STANZA_ERR_INTERNAL_SERVER_ERROR);
    }
    if (ev->origin) session_set_data(ev->origin, SESSION_DATA_PUSH_ENABLED, NULL, NULL);
    return hook_reply(ev, stanza_reply(ev->stanza));
}

static int on_iq(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!hook_own_account(ev)) return hook_error_cond(ev, STANZA_ERR_FORBIDDEN);
    xnode_t *c = xnode_first_elem(ev->stanza);
    if (strcmp(c->name, "enable") == 0) return on_enable(ev, c);
    if (strcmp(c->name, "disable") == 0) return on_disable(ev, c);
    return hook_error_cond(ev, STANZA_ERR_FEATURE_NOT_IMPLEMENTED);
}

/* ---- notifications (XEP-0357 §7) ---- */

static void publish(const char *bare, const char *service, const char *node);

static void add_field(xnode_t *x, const char *var, const char *value)
{
    xnode_t *f = xnode_add_elem(x, "field", NS_XDATA);
    xnode_set_attr(f, "var", var);
    xnode_add_text(xnode_add_elem(f, "value", NS_XDATA), value);
}

typedef struct inflight {
    char *jid, *service, *node;
} inflight_t;

/* The app server's answer: a result clears the error count, an error or a time-out adds one; at
 * max_errors in a row the registration goes (XEP-0357 §8 leaves it to the server). */
static void on_published(iq_outcome_t outcome, const xnode_t *reply, void *ud)
{
    (void)reply;
    inflight_t *f = ud;
    char *k = reg_key(f->jid, f->service, f->node);
    pending_t *p = strmap_del(pending, k);
    free(k);
    int again = p && p->again && outcome != IQ_CANCELLED;
    free(p);
    if (outcome != IQ_CANCELLED) {
        storage_value_t key[] = {STORE_VAL_TEXT(f->jid), STORE_VAL_TEXT(f->service), STORE_VAL_TEXT(f->node)};
        store_row_t *row = NULL;
        if (store_get(regs, key, &row) == 0) {
            long errors = outcome == IQ_RESULT ? 0 : (long)row->col[R_ERRORS].i + 1;
            if (errors >= conf.max_errors) {
                log_info("push", "dropping a push registration of %s after %ld failed notifications",
                         log_jid(f->jid), errors);
                if (store_delete(regs, key) < 0) log_warn("push", "removing a push registration failed: %s", store_error(regs));
                again = 0;
            } else if (errors != row->col[R_ERRORS].i) {
                storage_value_t nrow[STORE_MAX_COLUMNS];
                for (int i = 0; i < row->ncols; i++) nrow[i] = row->col[i];
                nrow[R_ERRORS] = STORE_VAL_INT(errors);
                if (store_put(regs, nrow, NULL) < 0) log_warn("push", "updating a push registration failed: %s", store_error(regs));
            }
            store_row_free(row);
        } else {
            again = 0;          /* disabled meanwhile, or the account is gone */
        }
    }
    if (again) publish(f->jid, f->service, f->node);
    free(f->jid);
    free(f->service);
    free(f->node);
    free(f);
}

/* Send one notification to the registration (bare, service, node), echoing its publish-options,
 * unless one is in flight already (then one more follows its answer). */
static void publish(const char *bare, const char *service, const char *node)
{
    char *k = reg_key(bare, service, node);
    pending_t *p = strmap_get(pending, k);
    if (p) {
        p->again = 1;
        free(k);
        return;
    }
    storage_value_t key[] = {STORE_VAL_TEXT((char *)bare), STORE_VAL_TEXT((char *)service), STORE_VAL_TEXT((char *)node)};
    store_row_t *row = NULL;
    if (store_get(regs, key, &row) != 0) {
        free(k);
        return;
    }
    user_state_t *u = strmap_get(users, bare);
    jid_t *bj = jid_new(bare);
    const struct push_conf *hc = module_host_conf(self, bj ? host_find(bj->domain) : NULL);
    jid_free(bj);
    char count[32];
    snprintf(count, sizeof count, "%ld", u ? u->count : 1);

    xnode_t *iq = xnode_new("iq", NS_CLIENT);
    xnode_set_attr(iq, "type", "set");
    xnode_set_attr(iq, "from", bare);
    xnode_set_attr(iq, "to", service);
    xnode_t *ps = xnode_add_elem(iq, "pubsub", NS_PUBSUB);
    xnode_t *pub = xnode_add_elem(ps, "publish", NS_PUBSUB);
    xnode_set_attr(pub, "node", node);
    xnode_t *x = xnode_add_elem(xnode_add_elem(xnode_add_elem(pub, "item", NS_PUBSUB), "notification", NS_PUSH), "x",
                                NS_XDATA);
    xnode_set_attr(x, "type", "submit");
    add_field(x, "FORM_TYPE", FORM_SUMMARY);
    add_field(x, "message-count", count);
    if (u && hc->include_sender && u->sender) add_field(x, "last-message-sender", u->sender);
    if (u && u->important) add_field(x, "last-message-body", hc->include_body && u->body ? u->body : hc->body_text);
    if (row->col[R_OPTIONS].type != STORAGE_NULL) {
        xnode_t *o = xnode_parse_one(row->col[R_OPTIONS].p, row->col[R_OPTIONS].len, NULL);
        if (o) xnode_add_child(xnode_add_elem(ps, "publish-options", NS_PUBSUB), o);
    }
    store_row_free(row);

    inflight_t *f = xcalloc(1, sizeof *f);
    f->jid = xstrdup(bare);
    f->service = xstrdup(service);
    f->node = xstrdup(node);
    if (module_send_iq(self, iq, NULL, conf.timeout * 1000, on_published, f)) {
        strmap_put(pending, k, xcalloc(1, sizeof(pending_t)));
    } else {
        log_warn("push", "cannot send a notification for %s", log_jid(bare));
        free(f->jid);
        free(f->service);
        free(f->node);
        free(f);
    }
    free(k);
}

/* What a message is worth to a sleeping phone: 2 important (a body, an OMEMO payload, a XEP-0353
 * call: the summary says "New message"), 1 worth a silent wake-up (other content offline storage
 * keeps: <store/>, e.g. an OMEMO key transport), 0 nothing (chat states, receipts, errors). */
static int importance(const xnode_t *st)
{
    const char *type = xnode_attr(st, "type");
    if (type && (strcmp(type, "error") == 0 || strcmp(type, "headline") == 0)) return 0;
    if (xnode_child(st, "body", NS_CLIENT) || xnode_child(st, "encrypted", NS_OMEMO_LEGACY) ||
        xnode_child(st, "encrypted", NS_OMEMO2) || xnode_child(st, "propose", NS_JMI0) ||
        xnode_child(st, "propose", NS_JMI1))
        return 2;
    if (xnode_child(st, "no-store", NS_HINTS)) return 0;
    return xnode_child(st, "store", NS_HINTS) ? 1 : 0;
}

/* Count the message for bare and notify its registrations (only those enabled from resource, when
 * resource is not NULL: a hibernated session's own). */
static void notify(const jid_t *to, const xnode_t *st, const char *resource)
{
    int imp = importance(st);
    if (!imp || !to || !to->node) return;
    storage_value_t b = STORE_VAL_TEXT(to->bare);
    store_page_t page = {0};
    if (store_range(regs, &(store_range_t){.prefix = &b, .nprefix = 1, .limit = (int)conf.max_registrations}, &page) < 0) {
        log_warn("push", "reading push registrations failed: %s", store_error(regs));
        return;
    }
    if (page.n == 0) {
        store_page_free(&page);
        return;
    }
    user_state_t *u = strmap_get(users, to->bare);
    if (!u) {
        u = xcalloc(1, sizeof *u);
        strmap_put(users, to->bare, u);
    }
    u->count++;
    u->important = imp == 2;
    free(u->sender);
    free(u->body);
    u->sender = u->body = NULL;
    host_t *h = host_find(to->domain);
    const struct push_conf *hc = module_host_conf(self, h);
    const char *from = xnode_attr(st, "from");
    if (hc->include_sender && from) u->sender = xstrdup(from);
    xnode_t *body = xnode_child(st, "body", NS_CLIENT);
    if (hc->include_body && body) {
        u->body = xnode_text(body);
        /* cut at MAX_BODY characters, on a UTF-8 boundary */
        size_t chars = 0, i = 0;
        for (; u->body[i] && chars < MAX_BODY; i++)
            if (((unsigned char)u->body[i] & 0xC0) != 0x80) chars++;
        while (u->body[i] && ((unsigned char)u->body[i] & 0xC0) == 0x80) i++;
        u->body[i] = '\0';
    }
    for (int i = 0; i < page.n; i++) {
        const store_row_t *r = page.rows[i];
        if (resource && strcmp(r->col[R_RESOURCE].p, resource) != 0) continue;
        publish(to->bare, r->col[R_SERVICE].p, r->col[R_NODE].p);
    }
    store_page_free(&page);
}

/* "message/undelivered": no session took it (the user is offline). Runs before offline storage. */
static int on_undelivered(hook_event_t *ev, void *ud)
{
    (void)ud;
    notify(ev->to, ev->stanza, NULL);
    return HOOK_PASS;
}

/* "smacks/hibernated-stanza" (module.h): queued for a session whose connection is gone. */
static int on_hibernated(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!ev->to || !ev->to->resource) return HOOK_PASS;
    jid_t *bare = jid_bare_of(ev->to);
    notify(bare, ev->stanza, ev->to->resource);
    jid_free(bare);
    return HOOK_PASS;
}

/* A login or a resumed session (XEP-0198): the user sees what came meanwhile, the count starts again. */
static int on_bound(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (ev->from) {
        jid_t *bare = jid_bare_of(ev->from);
        user_forget(bare->bare);
        jid_free(bare);
    }
    return HOOK_PASS;
}

/* The core deleted the account's rows (push_reg has .account); only the memory is left. */
static int on_user_deleted(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (ev->to) user_forget(ev->to->bare);
    return HOOK_PASS;
}

static int load(module_ctx_t *m)
{
    self = m;
    regs = module_store(m, "reg");
    users = strmap_new();
    pending = strmap_new();
    module_add_account_feature(m, NS_PUSH);
    module_hook(m, "iq-set/bare/" NS_PUSH, 0, on_iq, NULL);
    module_hook(m, HOOK_MESSAGE_UNDELIVERED, 10, on_undelivered, NULL);   /* before offline (0) */
    module_hook(m, HOOK_SMACKS_HIBERNATED_STANZA, 0, on_hibernated, NULL);
    module_hook(m, HOOK_SESSION_BOUND, 0, on_bound, NULL);
    module_hook(m, HOOK_SESSION_RESUMED, 0, on_bound, NULL);   /* a phone back from hibernation too */
    module_hook(m, HOOK_USER_DELETED, 0, on_user_deleted, NULL);
    return 0;
}

static void unload(module_ctx_t *m)
{
    (void)m;
    strmap_free_all(users, user_free);
    users = NULL;
    strmap_free_all(pending, free);
    pending = NULL;
}

const module_t civitas_module = {.abi = CIVITAS_MODULE_ABI, .name = "push", .load = load, .unload = unload,
                                 .options = options, .conf = &conf, .conf_size = sizeof conf, .store = &schema};
