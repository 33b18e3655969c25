/* modules/mod_roster.c: the jabber:iq:roster protocol (RFC 6121 §2): roster get, set and remove with
 * their errors and pushes, and XEP-0237 roster versioning (the 'ver' stream feature, changes as pushes). */
#include "module.h"
#include <stddef.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_ROSTERVER "urn:xmpp:features:rosterver"

static struct roster_conf {
    long max_items;             /* roster: {max_items}: contacts per user */
    long max_name_length;       /* roster: {max_name_length}: bytes of a name or a group name */
} conf;

/* RFC 6121 §2.3.3: only the account itself may read or change its roster. */
static int own_roster(const hook_event_t *ev)
{
    return ev->origin && ev->from && ev->to && ev->to->node && strcmp(ev->from->bare, ev->to->bare) == 0;
}

/* The client's version as a number, or -1 when it is not one of ours. */
static int64_t parse_ver(const char *ver)
{
    if (!ver || !*ver || strlen(ver) > 18) return -1;
    for (const char *p = ver; *p; p++)
        if (*p < '0' || *p > '9') return -1;
    return strtoll(ver, NULL, 10);
}

static int by_version(const void *a, const void *b)
{
    const roster_item_t *x = *(roster_item_t *const *)a, *y = *(roster_item_t *const *)b;
    return x->ver < y->ver ? -1 : x->ver > y->ver;
}

static int on_get(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!own_roster(ev)) return hook_error(ev, "auth", "forbidden");
    const char *ver = xnode_attr(xnode_first_elem(ev->stanza), "ver");
    roster_set_interested(ev->origin, ver != NULL);
    roster_t *r = roster_load(ev->to);
    if (!r) return hook_error(ev, "wait", "internal-server-error");
    int64_t current = roster_version(r), have = parse_ver(ver);
    xnode_t *reply = stanza_reply(ev->stanza);
    if (have >= 0 && have <= current && have >= roster_oldest_version(r)) {
        /* XEP-0237 §2.4: the client is up to date, or gets the changes since its version as
         * roster pushes after an empty result */
        hook_reply(ev, reply);
        size_t n = 0;
        roster_item_t **changed = xcalloc(roster_count(r) + 1, sizeof *changed);
        for (size_t i = 0; i < roster_count(r); i++)
            if (roster_at(r, i)->ver > have) changed[n++] = roster_at(r, i);
        qsort(changed, n, sizeof *changed, by_version);
        for (size_t i = 0; i < n; i++) roster_push_to(ev->origin, ev->to, changed[i]);
        free(changed);
        roster_free(r);
        return HOOK_HANDLED;
    }
    xnode_t *q = xnode_add_elem(reply, "query", NS_ROSTER);
    if (ver) {
        char num[32];
        snprintf(num, sizeof num, "%" PRId64, current);
        xnode_set_attr(q, "ver", num);
    }
    for (size_t i = 0; i < roster_count(r); i++)
        if (roster_at(r, i)->listed) xnode_add_child(q, roster_item_xml(roster_at(r, i)));
    roster_free(r);
    return hook_reply(ev, reply);
}

/* Route a presence of type `type` from the account's bare JID (or `from`) to the contact. */
static void send_presence(const char *type, const char *from, const char *to)
{
    route_stanza(stanza_presence(type, from, to));
}

/* RFC 6121 §2.5.2: removing an item also ends the subscriptions both ways. */
static int remove_item(hook_event_t *ev, roster_t *r, roster_item_t *it)
{
    int unsubscribe = (it->sub & ROSTER_SUB_TO) || it->ask;
    int unsubscribed = (it->sub & ROSTER_SUB_FROM) || it->pending_in;
    int had_from = it->sub & ROSTER_SUB_FROM;
    char *contact = xstrdup(it->jid);
    it->listed = 0;
    it->sub = 0;
    it->ask = it->approved = 0;
    FREE_AND_NULL(it->name);
    strlist_free(&it->groups);
    xnode_free(it->pending_in);
    it->pending_in = NULL;
    int rc = roster_save(r, it, 1);
    roster_free(r);
    if (rc < 0) {
        free(contact);
        return hook_error(ev, "wait", "internal-server-error");
    }
    hook_reply(ev, stanza_reply(ev->stanza));
    /* the subscription stanzas come from the bare JID (§3.1.2, §3.2.2, §3.3.2) */
    if (unsubscribe) send_presence("unsubscribe", ev->to->bare, contact);
    if (unsubscribed) send_presence("unsubscribed", ev->to->bare, contact);
    if (had_from)       /* §3.2.2: the contact loses the user's presence: unavailable from each resource */
        for (session_t *s = user_sessions(ev->to); s; s = session_next_in_user(s))
            if (session_available(s)) send_presence("unavailable", session_jid(s)->full, contact);
    free(contact);
    return HOOK_HANDLED;
}

/* The checks of RFC 6121 §2.3.3 on the item's name and groups; NULL when fine, else
 * "bad-request" or "not-acceptable". */
static const char *check_item(const xnode_t *item)
{
    const char *name = xnode_attr(item, "name");
    if (name && (long)strlen(name) > conf.max_name_length) return "not-acceptable";
    strlist_t seen = {0};
    const char *err = NULL;
    for (xnode_t *g = xnode_first_elem(item); g && !err; g = xnode_next_elem(g)) {
        if (strcmp(g->name, "group") != 0 || strcmp(g->ns, NS_ROSTER) != 0) continue;
        char *t = xnode_text(g);
        if (!*t || (long)strlen(t) > conf.max_name_length) err = "not-acceptable";
        for (size_t i = 0; !err && i < seen.n; i++)
            if (strcmp(seen.v[i], t) == 0) err = "bad-request";
        strlist_add(&seen, t);
        free(t);
    }
    strlist_free(&seen);
    return err;
}

static int on_set(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!own_roster(ev)) return hook_error(ev, "auth", "forbidden");
    xnode_t *q = xnode_first_elem(ev->stanza), *item = NULL;
    int items = 0;
    for (xnode_t *c = xnode_first_elem(q); c; c = xnode_next_elem(c))
        if (strcmp(c->name, "item") == 0 && strcmp(c->ns, NS_ROSTER) == 0) {
            item = c;
            items++;
        }
    if (items != 1) return hook_error(ev, "modify", "bad-request");        /* §2.3.3 */
    const char *jid_s = xnode_attr(item, "jid");
    if (!jid_s) return hook_error(ev, "modify", "bad-request");
    jid_t *contact = jid_new(jid_s);
    if (!contact) return hook_error(ev, "modify", "not-acceptable");
    const char *sub = xnode_attr(item, "subscription");
    /* §2.1.2.5: in a roster set every subscription value but "remove" is ignored */
    int removing = sub && strcmp(sub, "remove") == 0;
    const char *err = removing ? NULL : check_item(item);
    if (err) {
        jid_free(contact);
        return hook_error(ev, "modify", err);
    }
    roster_t *r = roster_load(ev->to);
    if (!r) {
        jid_free(contact);
        return hook_error(ev, "wait", "internal-server-error");
    }
    roster_item_t *it = roster_find(r, contact->full);
    if (removing) {
        jid_free(contact);
        if (!it || !it->listed) {                                           /* §2.5.3 */
            roster_free(r);
            return hook_error(ev, "cancel", "item-not-found");
        }
        return remove_item(ev, r, it);
    }
    if ((!it || !it->listed) && (long)roster_listed_count(r) >= conf.max_items) {
        jid_free(contact);
        roster_free(r);
        return hook_error(ev, "wait", "resource-constraint");
    }
    it = roster_add(r, contact->full);
    jid_free(contact);
    it->listed = 1;
    const char *name = xnode_attr(item, "name");
    free(it->name);
    it->name = name && *name ? xstrdup(name) : NULL;
    strlist_free(&it->groups);
    for (xnode_t *g = xnode_first_elem(item); g; g = xnode_next_elem(g))
        if (strcmp(g->name, "group") == 0 && strcmp(g->ns, NS_ROSTER) == 0) {
            char *t = xnode_text(g);
            strlist_add(&it->groups, t);
            free(t);
        }
    int rc = roster_save(r, it, 1);                 /* §2.3.2: the push goes to every interested resource */
    roster_free(r);
    if (rc < 0) return hook_error(ev, "wait", "internal-server-error");
    return hook_reply(ev, stanza_reply(ev->stanza));
}

static int on_features(hook_event_t *ev, void *ud)
{
    (void)ud;
    xnode_add_elem(ev->features, "ver", NS_ROSTERVER);      /* XEP-0237 §2.1 */
    return HOOK_PASS;
}

static int load(module_ctx_t *m)
{
    module_add_feature(m, NS_ROSTER);
    module_hook(m, "iq-get/bare/" NS_ROSTER, 0, on_get, NULL);
    module_hook(m, "iq-set/bare/" NS_ROSTER, 0, on_set, NULL);
    module_hook(m, "stream-features", 0, on_features, NULL);
    return 0;
}

static const module_option_t options[] = {
    {.name = "max_items", .type = MOPT_INT, .offset = offsetof(struct roster_conf, max_items),
     .def = 1000, .min = 1, .max = 1000000},
    {.name = "max_name_length", .type = MOPT_INT, .offset = offsetof(struct roster_conf, max_name_length),
     .def = 1023, .min = 1, .max = 65535},
    {0}};

const module_t civitas_module = { .abi = CIVITAS_MODULE_ABI, .name = "roster", .load = load,
                                    .options = options, .conf = &conf };
