/* modules/mod_muc.c: XEP-0045 Multi-User Chat as a component (conference.<host> by default, or
 * muc.host per host). Rooms live in memory while they exist; persistent rooms (their configuration,
 * subject and affiliations) are also kept in the module's tables and loaded at start. Every
 * groupchat message is kept in muc_messages (the room's archive: stanza-id, time, nick, real bare
 * JID, occupant-id, the stanza as broadcast), trimmed to max_history per room; history on join
 * reads it, and MUC-MAM (XEP-0313 on the room JID) pages it by (room, ts) and (room, stanza_id).
 * Occupant ids (XEP-0421) are random per (room, real bare JID) and kept in muc_ids, so they stay
 * stable across sessions and restarts without a keyed hash.
 *
 * One occupant is one nick of one real bare JID; it may have several sessions (full JIDs: one user's
 * devices under one nick). Presence from the room goes to every session of every occupant. */
#include "module.h"
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_MUC "http://jabber.org/protocol/muc"
#define NS_MUC_USER NS_MUC "#user"
#define NS_MUC_ADMIN NS_MUC "#admin"
#define NS_MUC_OWNER NS_MUC "#owner"
#define NS_XDATA "jabber:x:data"
#define NS_SID "urn:xmpp:sid:0"
#define NS_OCCUPANT_ID "urn:xmpp:occupant-id:0"
#define NS_DELAY "urn:xmpp:delay"
#define NS_PING "urn:xmpp:ping"
#define NS_HINTS "urn:xmpp:hints"
#define NS_MAM "urn:xmpp:mam:2"
#define NS_RSM "http://jabber.org/protocol/rsm"
#define NS_FORWARD "urn:xmpp:forward:0"
#define FORM_ROOMCONFIG NS_MUC "#roomconfig"
#define FORM_ROOMINFO NS_MUC "#roominfo"
#define FORM_REGISTER NS_MUC "#register"
#define FORM_REQUEST NS_MUC "#request"
#define NS_REGISTER "jabber:iq:register"
#define NS_XVALIDATE "http://jabber.org/protocol/xdata-validate"
#define NODE_ROOMUSER "x-roomuser-item"

static struct muc_conf {
    char *host;
    long max_rooms_per_user;
    long max_occupants;
    long max_history;
    long default_history;
    int remote_create;
    long max_age_days;
} conf;

static const module_option_t options[] = {
    {"host", MOPT_STRING, offsetof(struct muc_conf, host), 0, 1, 1023, .def_string = NULL, .per_host = 1},
    {"max_rooms_per_user", MOPT_INT, offsetof(struct muc_conf, max_rooms_per_user), 100, 1, 1000000, .per_host = 0},
    {"max_occupants", MOPT_INT, offsetof(struct muc_conf, max_occupants), 500, 2, 100000, .per_host = 0},
    {"max_history", MOPT_INT, offsetof(struct muc_conf, max_history), 100, 0, STORE_MAX_LIMIT, .per_host = 0},
    {"default_history", MOPT_INT, offsetof(struct muc_conf, default_history), 20, 0, STORE_MAX_LIMIT, .per_host = 0},
    {"remote_create", MOPT_BOOL, offsetof(struct muc_conf, remote_create), 0, 0, 1, .per_host = 0},
    {"max_age_days", MOPT_INT, offsetof(struct muc_conf, max_age_days), 14, 0, 36500, .per_host = 1},
    {.name = NULL}};

/* ---- tables ---- */
enum { R_JID, R_NAME, R_DESC, R_PASSWORD, R_SUBJECT, R_SUBJECT_NICK, R_FLAGS, R_MAX_USERS, R_HISTORY, R_CREATED };
static const store_column_t room_columns[] = {
    {"jid", STORE_TEXT}, {"name", STORE_TEXT}, {"description", STORE_TEXT}, {"password", STORE_TEXT},
    {"subject", STORE_TEXT}, {"subject_nick", STORE_TEXT}, {"flags", STORE_INT}, {"max_users", STORE_INT},
    {"history", STORE_INT}, {"created", STORE_INT}, {.name = NULL}};
enum { A_ROOM, A_JID, A_AFF, A_REASON };
static const store_column_t aff_columns[] = {
    {"room", STORE_TEXT}, {"jid", STORE_TEXT}, {"affiliation", STORE_INT}, {"reason", STORE_TEXT}, {.name = NULL}};
static const store_index_t by_jid[] = {{"by_jid", "jid"}, {.name = NULL}};
enum { I_ROOM, I_JID, I_ID };
static const store_column_t id_columns[] = {
    {"room", STORE_TEXT}, {"jid", STORE_TEXT}, {"id", STORE_TEXT}, {.name = NULL}};
enum { M_ID, M_ROOM, M_TS, M_STANZA_ID, M_NICK, M_JID, M_OCCUPANT_ID, M_XML };
static const store_column_t msg_columns[] = {
    {"id", STORE_ID}, {"room", STORE_TEXT}, {"ts", STORE_INT}, {"stanza_id", STORE_TEXT}, {"nick", STORE_TEXT},
    {"jid", STORE_TEXT}, {"occupant_id", STORE_TEXT}, {"xml", STORE_BLOB}, {.name = NULL}};
static const store_index_t msg_indexes[] = {
    {"by_room", "room"}, {"by_time", "room, ts"}, {"by_sid", "room, stanza_id"}, {"by_age", "ts"}, {.name = NULL}};
enum { N_ROOM, N_JID, N_NICK };
static const store_column_t nick_columns[] = {
    {"room", STORE_TEXT}, {"jid", STORE_TEXT}, {"nick", STORE_TEXT}, {.name = NULL}};
/* server/ctl.c (civitasctl muc create/destroy) writes these tables with SQL that knows their layout:
 * a table or column added here goes there too. */
static const store_table_t tables[] = {
    {.name = "rooms", .columns = room_columns, .key = "jid", .account = "jid"},
    {.name = "affiliations", .columns = aff_columns, .key = "room, jid", .account = "jid", .indexes = by_jid},
    {.name = "ids", .columns = id_columns, .key = "room, jid", .account = "jid", .indexes = by_jid},
    {.name = "messages", .columns = msg_columns, .key = "id", .account = "room", .indexes = msg_indexes},
    {.name = "nicks", .columns = nick_columns, .key = "room, jid", .account = "jid", .indexes = by_jid},
    {.name = NULL}};
/* 1 -> 2: registered nicks (XEP-0045 §7.10), by_age for muc.max_age_days */
static const char *const upgrade[] = {
    "CREATE TABLE \"muc_nicks\" (\"room\" TEXT NOT NULL, \"jid\" TEXT NOT NULL, \"nick\" TEXT NOT NULL,"
    " PRIMARY KEY (\"room\", \"jid\"));"
    " CREATE INDEX \"muc_nicks__by_jid\" ON \"muc_nicks\" (\"jid\", \"room\");"
    " CREATE INDEX \"muc_messages__by_age\" ON \"muc_messages\" (\"ts\", \"id\")",
    NULL};
static const store_schema_t schema = {.version = 2, .tables = tables, .upgrade = upgrade};

static store_t *t_rooms, *t_affs, *t_ids, *t_msgs, *t_nicks;

/* ---- rooms in memory ---- */
enum { AFF_OUTCAST, AFF_NONE, AFF_MEMBER, AFF_ADMIN, AFF_OWNER };
static const char *const aff_names[] = {"outcast", "none", "member", "admin", "owner", NULL};
enum { ROLE_NONE, ROLE_VISITOR, ROLE_PARTICIPANT, ROLE_MODERATOR };
static const char *const role_names[] = {"none", "visitor", "participant", "moderator", NULL};

enum {
    F_PERSISTENT = 1, F_PUBLIC = 2, F_MEMBERS_ONLY = 4, F_MODERATED = 8, F_PASSWORD = 16, F_WHOIS_ANYONE = 32,
    F_ALLOW_INVITES = 64, F_CHANGE_SUBJECT = 128,
    F_NO_LOGGING = 256           /* muc#roomconfig_enablelogging off (inverted: rooms saved before it log) */
};

typedef struct room_config {
    char *name, *desc, *password;
    int flags;
    long max_users;              /* 0: the module's max_occupants */
    long history;                /* messages sent on join at most (muc#maxhistoryfetch) */
} room_config_t;

typedef struct occ_session {
    char *full;                  /* the real full JID */
} occ_session_t;

typedef struct occupant {
    char *nick;
    char *bare;                  /* the real bare JID */
    char *occupant_id;           /* XEP-0421 */
    int role;
    xnode_t *pres;               /* the last available presence (children only matter) */
    occ_session_t *s;
    size_t ns;
} occupant_t;

typedef struct room {
    char *jid;                   /* room@service */
    room_config_t cfg;
    char *subject, *subject_nick;
    strmap_t *occ;               /* nick -> occupant_t */
    strmap_t *by_full;           /* real full JID -> occupant_t */
    strmap_t *affs;              /* real bare JID -> (void *)(intptr_t)(affiliation + 1) */
    strmap_t *nicks;             /* real bare JID -> its registered nick (malloc'd), XEP-0045 §7.10 */
    strmap_t *voice_asked;       /* real bare JID -> (void *)(intptr_t) its last voice request (unix s) */
    int locked;                  /* created with <x/>, not yet configured: nobody else may enter */
    int64_t created;
    long nhist;                  /* rows in the archive, -1: not counted yet */
} room_t;

static strmap_t *rooms;          /* room JID -> room_t */

static int has_flag(const room_t *r, int f) { return (r->cfg.flags & f) != 0; }

/* Logged (XEP-0045 170): the room's discussion is archived for MUC-MAM. A room with logging off keeps
 * only the messages it sends on entering (muc#maxhistoryfetch). */
static int flags_logged(int flags) { return !(flags & F_NO_LOGGING) && conf.max_history > 0; }
static int is_logged(const room_t *r) { return flags_logged(r->cfg.flags); }

/* Messages the room's archive keeps at most. */
static long archive_cap(const room_t *r)
{
    if (is_logged(r)) return conf.max_history;
    return r->cfg.history < conf.max_history ? r->cfg.history : conf.max_history;
}

static int get_aff(const room_t *r, const char *bare)
{
    void *v = strmap_get(r->affs, bare);
    return v ? (int)(intptr_t)v - 1 : AFF_NONE;
}

static long max_users(const room_t *r)
{
    return r->cfg.max_users > 0 && r->cfg.max_users < conf.max_occupants ? r->cfg.max_users : conf.max_occupants;
}

static int name_index(const char *const *names, const char *s)
{
    for (int i = 0; s && names[i]; i++)
        if (strcmp(names[i], s) == 0) return i;
    return -1;
}

/* ---- persistence ---- */
static void save_room(room_t *r)
{
    if (!has_flag(r, F_PERSISTENT)) return;
    storage_value_t row[] = {
        STORE_VAL_TEXT(r->jid), STORE_VAL_TEXT(r->cfg.name ? r->cfg.name : ""),
        STORE_VAL_TEXT(r->cfg.desc ? r->cfg.desc : ""), STORE_VAL_TEXT(r->cfg.password ? r->cfg.password : ""),
        STORE_VAL_TEXT(r->subject ? r->subject : ""), STORE_VAL_TEXT(r->subject_nick ? r->subject_nick : ""),
        STORE_VAL_INT(r->cfg.flags), STORE_VAL_INT(r->cfg.max_users), STORE_VAL_INT(r->cfg.history),
        STORE_VAL_INT(r->created)};
    if (store_put(t_rooms, row, NULL) < 0) log_error("muc", "saving a room failed: %s", store_error(t_rooms));
}

static void save_aff(room_t *r, const char *bare, int aff, const char *reason)
{
    if (!has_flag(r, F_PERSISTENT)) return;
    if (aff == AFF_NONE) {
        storage_value_t key[] = {STORE_VAL_TEXT(r->jid), STORE_VAL_TEXT(bare)};
        if (store_delete(t_affs, key) < 0) log_error("muc", "deleting an affiliation failed: %s", store_error(t_affs));
        return;
    }
    storage_value_t row[] = {STORE_VAL_TEXT(r->jid), STORE_VAL_TEXT(bare), STORE_VAL_INT(aff),
                             STORE_VAL_TEXT(reason ? reason : "")};
    if (store_put(t_affs, row, NULL) < 0) log_error("muc", "saving an affiliation failed: %s", store_error(t_affs));
}

/* Delete every row of a table whose key (or index) starts with the room's JID. */
static void delete_prefix(store_t *t, const char *index, const char *jid)
{
    storage_value_t p = STORE_VAL_TEXT(jid);
    store_range_t rr = {.index = index, .prefix = &p, .nprefix = 1, .limit = STORE_MAX_LIMIT};
    while (store_delete_range(t, &rr) == STORE_MAX_LIMIT) {}
}

static void unsave_room(room_t *r)
{
    storage_value_t key = STORE_VAL_TEXT(r->jid);
    store_delete(t_rooms, &key);
    delete_prefix(t_affs, NULL, r->jid);
    delete_prefix(t_nicks, NULL, r->jid);
}

static void set_aff(room_t *r, const char *bare, int aff, const char *reason)
{
    if (aff == AFF_NONE) strmap_del(r->affs, bare);
    else strmap_put(r->affs, bare, (void *)(intptr_t)(aff + 1));
    save_aff(r, bare, aff, reason);
}

/* ---- registered nicks (XEP-0045 §7.10): kept like affiliations, in the table for persistent rooms ---- */
static const char *reg_nick(const room_t *r, const char *bare) { return strmap_get(r->nicks, bare); }

/* The bare JID that registered nick in r, or NULL. */
static const char *reg_holder(const room_t *r, const char *nick)
{
    size_t pos = 0;
    const char *k;
    void *v;
    while (strmap_next(r->nicks, &pos, &k, &v))
        if (strcmp(v, nick) == 0) return k;
    return NULL;
}

static void save_nick(room_t *r, const char *bare, const char *nick)
{
    if (!has_flag(r, F_PERSISTENT)) return;
    int rc;
    if (!nick) {
        storage_value_t key[] = {STORE_VAL_TEXT(r->jid), STORE_VAL_TEXT(bare)};
        rc = store_delete(t_nicks, key);
    } else {
        storage_value_t row[] = {STORE_VAL_TEXT(r->jid), STORE_VAL_TEXT(bare), STORE_VAL_TEXT(nick)};
        rc = store_put(t_nicks, row, NULL);
    }
    if (rc < 0) log_error("muc", "saving a registered nick failed: %s", store_error(t_nicks));
}

/* Register (nick) or unregister (NULL) bare's nick in r. */
static void set_nick(room_t *r, const char *bare, const char *nick)
{
    free(strmap_del(r->nicks, bare));
    if (nick) strmap_put(r->nicks, bare, xstrdup(nick));
    save_nick(r, bare, nick);
}

/* Persist everything of a room that just became persistent. */
static void save_room_all(room_t *r)
{
    if (!has_flag(r, F_PERSISTENT)) return;
    if (store_begin(t_rooms) < 0) return;
    save_room(r);
    size_t pos = 0;
    const char *k;
    void *v;
    while (strmap_next(r->affs, &pos, &k, &v)) save_aff(r, k, (int)(intptr_t)v - 1, NULL);
    pos = 0;
    while (strmap_next(r->nicks, &pos, &k, &v)) save_nick(r, k, v);
    if (store_commit(t_rooms) < 0) store_rollback(t_rooms);
}

static const char *occupant_id_for(const room_t *r, const char *bare, char *buf, size_t size)
{
    storage_value_t key[] = {STORE_VAL_TEXT(r->jid), STORE_VAL_TEXT(bare)};
    store_row_t *row = NULL;
    if (store_get(t_ids, key, &row) == 0) {
        snprintf(buf, size, "%s", (const char *)row->col[I_ID].p);
        store_row_free(row);
        return buf;
    }
    char hex[33];
    random_hex(hex, 16);
    snprintf(buf, size, "%s", hex);
    storage_value_t nrow[] = {STORE_VAL_TEXT(r->jid), STORE_VAL_TEXT(bare), STORE_VAL_TEXT(buf)};
    if (store_put(t_ids, nrow, NULL) < 0) log_error("muc", "saving an occupant id failed: %s", store_error(t_ids));
    return buf;
}

/* ---- room lifecycle ---- */
static room_t *room_new(const char *jid)
{
    room_t *r = xcalloc(1, sizeof *r);
    r->jid = xstrdup(jid);
    r->occ = strmap_new();
    r->by_full = strmap_new();
    r->affs = strmap_new();
    r->nicks = strmap_new();
    r->voice_asked = strmap_new();
    r->cfg.flags = F_PUBLIC;
    r->cfg.history = conf.default_history < conf.max_history ? conf.default_history : conf.max_history;
    r->created = now_unix();
    r->nhist = -1;
    strmap_put(rooms, jid, r);
    return r;
}

static void occupant_free(occupant_t *o)
{
    for (size_t i = 0; i < o->ns; i++) free(o->s[i].full);
    free(o->s);
    free(o->nick);
    free(o->bare);
    free(o->occupant_id);
    xnode_free(o->pres);
    free(o);
}

static void room_free(room_t *r)
{
    size_t pos = 0;
    const char *k;
    void *v;
    while (strmap_next(r->occ, &pos, &k, &v)) occupant_free(v);
    strmap_free(r->occ);
    strmap_free(r->by_full);
    strmap_free(r->affs);
    pos = 0;
    while (strmap_next(r->nicks, &pos, &k, &v)) free(v);
    strmap_free(r->nicks);
    strmap_free(r->voice_asked);
    free(r->cfg.name);
    free(r->cfg.desc);
    free(r->cfg.password);
    free(r->subject);
    free(r->subject_nick);
    free(r->jid);
    free(r);
}

/* Forget a room: memory, tables, archive, occupant ids. */
static void room_destroy(room_t *r)
{
    unsave_room(r);
    delete_prefix(t_msgs, "by_room", r->jid);
    delete_prefix(t_ids, NULL, r->jid);
    strmap_del(rooms, r->jid);
    room_free(r);
}

static room_t *load_room(const storage_value_t *c)
{
    room_t *r = room_new(c[R_JID].p);
    if (*(char *)c[R_NAME].p) r->cfg.name = xstrdup(c[R_NAME].p);
    if (*(char *)c[R_DESC].p) r->cfg.desc = xstrdup(c[R_DESC].p);
    if (*(char *)c[R_PASSWORD].p) r->cfg.password = xstrdup(c[R_PASSWORD].p);
    if (*(char *)c[R_SUBJECT].p) r->subject = xstrdup(c[R_SUBJECT].p);
    if (*(char *)c[R_SUBJECT_NICK].p) r->subject_nick = xstrdup(c[R_SUBJECT_NICK].p);
    r->cfg.flags = (int)c[R_FLAGS].i | F_PERSISTENT;
    r->cfg.max_users = c[R_MAX_USERS].i;
    r->cfg.history = c[R_HISTORY].i;
    r->created = c[R_CREATED].i;
    storage_value_t p = STORE_VAL_TEXT(r->jid);
    store_range_t ar = {.prefix = &p, .nprefix = 1, .limit = STORE_MAX_LIMIT};
    store_page_t ap = {0};
    if (store_range(t_affs, &ar, &ap) == 0)
        for (int j = 0; j < ap.n; j++) {
            long a = ap.rows[j]->col[A_AFF].i;
            if (a >= AFF_OUTCAST && a <= AFF_OWNER && a != AFF_NONE)
                strmap_put(r->affs, ap.rows[j]->col[A_JID].p, (void *)(intptr_t)(a + 1));
        }
    store_page_free(&ap);
    if (store_range(t_nicks, &ar, &ap) == 0)
        for (int j = 0; j < ap.n; j++)
            strmap_put(r->nicks, ap.rows[j]->col[N_JID].p, xstrdup(ap.rows[j]->col[N_NICK].p));
    store_page_free(&ap);
    return r;
}

static void destroy_room(room_t *r, const xnode_t *destroy);

/* Bring the rooms in memory in line with the table: at start, and after civitasctl changed it
 * (muc create: load the room; muc destroy: destroy it, telling its occupants). */
static int sync_rooms(void)
{
    strmap_t *seen = strmap_new();
    storage_value_t last;
    char *lastjid = NULL;
    for (;;) {
        store_range_t rr = {.limit = 1000};
        if (lastjid) rr.after = (store_bound_t){&last, 1, 0};
        store_page_t page = {0};
        if (store_range(t_rooms, &rr, &page) < 0) {
            log_error("muc", "loading rooms failed: %s", store_error(t_rooms));
            free(lastjid);
            strmap_free(seen);
            return -1;
        }
        for (int i = 0; i < page.n; i++) {
            const storage_value_t *c = page.rows[i]->col;
            strmap_put(seen, c[R_JID].p, seen);
            if (!strmap_get(rooms, c[R_JID].p)) load_room(c);
        }
        int more = page.more && page.n > 0;
        if (more) {
            free(lastjid);
            lastjid = xstrdup(page.rows[page.n - 1]->col[R_JID].p);
            last = STORE_VAL_TEXT(lastjid);
        }
        store_page_free(&page);
        if (!more) break;
    }
    free(lastjid);
    size_t pos = 0, n = 0;
    const char *k;
    void *v;
    char **gone = NULL;
    while (strmap_next(rooms, &pos, &k, &v))
        if (has_flag(v, F_PERSISTENT) && !strmap_get(seen, k)) {
            gone = xrealloc(gone, (n + 1) * sizeof *gone);
            gone[n++] = xstrdup(k);
        }
    for (size_t i = 0; i < n; i++) {
        room_t *r = strmap_get(rooms, gone[i]);
        if (r) destroy_room(r, NULL);
        free(gone[i]);
    }
    free(gone);
    strmap_free(seen);
    return 0;
}

/* The rows of rooms that are not persistent rooms: temporary rooms never outlive the process, so
 * what one left in the tables (its archive, occupant ids) after a crash (kill -9, power loss) is
 * deleted at start. Walks the table's room index one room at a time (no scan of the rows). */
static int drop_orphans(store_t *t, const char *index, int col)
{
    char *last = NULL;
    int n = 0;
    for (;;) {
        storage_value_t lv = STORE_VAL_TEXT(last ? last : "");
        store_range_t rr = {.index = index, .limit = 1};
        if (last) rr.after = (store_bound_t){&lv, 1, 0};
        store_page_t page = {0};
        if (store_range(t, &rr, &page) < 0 || page.n == 0) {
            store_page_free(&page);
            break;
        }
        free(last);
        last = xstrdup(page.rows[0]->col[col].p);
        store_page_free(&page);
        /* the rooms table decides (only persistent rooms have a row), not the rooms in memory: a
         * room civitasctl created since the load, or one a failed load missed, is not an orphan */
        storage_value_t key = STORE_VAL_TEXT(last);
        store_row_t *row = NULL;
        int found = store_get(t_rooms, &key, &row);
        store_row_free(row);
        if (found < 0) break;
        if (found == 1) {
            delete_prefix(t, index, last);
            n++;
        }
    }
    free(last);
    return n;
}

static void drop_temporary_leftovers(void)
{
    int n = drop_orphans(t_msgs, "by_room", M_ROOM);
    n += drop_orphans(t_ids, NULL, I_ROOM);
    n += drop_orphans(t_affs, NULL, A_ROOM);
    n += drop_orphans(t_nicks, NULL, N_ROOM);
    if (n > 0) log_info("muc", "deleted what %d room(s) that were not persistent left behind (an unclean stop)", n);
}

/* ---- retention: muc.max_age_days per host, like mam.max_age_days for the user archive ---- */
#define EXPIRE_EVERY_MS 60000        /* the sweep runs this often (and at load) */
#define EXPIRE_BATCH 500             /* rows one step deletes; a full batch schedules the next turn */
static module_ctx_t *ctx;
static module_timer_t *again;        /* a one-shot timer for the next batch, or NULL */

static void expire_step(module_timer_t *t, void *ud);

/* The options of the host a room's service belongs to (the host that registered the component; the
 * section's values for a room whose service no host has now). */
static const struct muc_conf *room_conf(const room_t *r)
{
    const char *at = strchr(r->jid, '@');
    const component_t *c = at ? component_find(at + 1) : NULL;
    return module_host_conf(ctx, c ? component_parent(c) : NULL);
}

/* 1 when every host has the section's max_age_days (no host overrides it). */
static int one_max_age(void)
{
    for (size_t i = 0; i < host_count(); i++)
        if (((const struct muc_conf *)module_host_conf(ctx, host_at(i)))->max_age_days != conf.max_age_days) return 0;
    return 1;
}

/* Delete up to EXPIRE_BATCH expired rows; when a batch was full, go on at the next loop turn. With one
 * value for all hosts a single walk of by_age does it; with values per host each room in memory (every
 * room with archived rows: persistent rooms are loaded, temporary ones live in memory) is cut by its
 * host's value along by_time (room, ts). */
static void expire_run(void)
{
    int64_t now = now_unix();
    int n = 0;
    if (one_max_age()) {
        if (conf.max_age_days <= 0) return;
        n = store_expire(t_msgs, "by_age", now - (int64_t)conf.max_age_days * 86400, EXPIRE_BATCH);
        if (n < 0) {
            log_warn("muc", "expiring archived room messages failed: %s", store_error(t_msgs));
            return;
        }
        size_t pos = 0;
        const char *k;
        void *v;
        while (n > 0 && strmap_next(rooms, &pos, &k, &v)) ((room_t *)v)->nhist = -1;   /* counted again when needed */
    } else {
        size_t pos = 0;
        const char *k;
        void *v;
        while (n < EXPIRE_BATCH && strmap_next(rooms, &pos, &k, &v)) {
            room_t *r = v;
            long days = room_conf(r)->max_age_days;
            if (days <= 0) continue;
            storage_value_t room = STORE_VAL_TEXT(r->jid);
            storage_value_t cut = STORE_VAL_INT(now - (int64_t)days * 86400);
            int d = store_delete_range(t_msgs, &(store_range_t){.index = "by_time", .prefix = &room, .nprefix = 1,
                                                                .before = {&cut, 1, 0}, .limit = EXPIRE_BATCH - n});
            if (d < 0) {
                log_warn("muc", "expiring archived room messages failed: %s", store_error(t_msgs));
                return;
            }
            if (d > 0) r->nhist = -1;
            n += d;
        }
    }
    if (n > 0) log_debug("muc", "expired %d archived room message(s)", n);
    if (n == EXPIRE_BATCH && !again) again = module_add_timer(ctx, 0, 0, expire_step, NULL);
}

static void expire_step(module_timer_t *t, void *ud)
{
    (void)ud;
    if (t == again) again = NULL;
    expire_run();
}

static storage_watch_t rooms_watch;
static void relays_expire(int all);

static void on_sync_timer(module_timer_t *t, void *ud)
{
    (void)t;
    (void)ud;
    if (store_changed(t_rooms, &rooms_watch) != 0) sync_rooms();
    relays_expire(0);
}

/* ---- XML helpers ---- */

static char *child_text(const xnode_t *n, const char *name, const char *ns)
{
    xnode_t *c = xnode_child(n, name, ns);
    return c ? xnode_text(c) : NULL;
}

static void add_text_elem(xnode_t *parent, const char *name, const char *ns, const char *text)
{
    xnode_add_text(xnode_add_elem(parent, name, ns), text);
}

/* Remove parent's children named name in ns (by: only those with by='by'). */
static void strip_children(xnode_t *parent, const char *name, const char *ns, const char *by)
{
    xnode_t *c = xnode_first_elem(parent);
    while (c) {
        xnode_t *next = xnode_next_elem(c);
        if (strcmp(c->name, name) == 0 && strcmp(c->ns, ns) == 0 && (!by || (xnode_attr(c, "by") && strcmp(xnode_attr(c, "by"), by) == 0)))
            xnode_free(c);
        c = next;
    }
}

static char *occ_jid(const room_t *r, const char *nick) { return xasprintf("%s/%s", r->jid, nick); }

static void send_to(xnode_t *st, const char *from, const char *to)
{
    xnode_set_attr(st, "from", from);
    xnode_set_attr(st, "to", to);
    route_stanza(st);
}

/* ---- presence ---- */
typedef struct pres_opts {
    const char *type;            /* NULL (available) or "unavailable" */
    int codes[8];
    int ncodes;
    const char *newnick;         /* 303 */
    const char *actor;           /* nick of the moderator who acted */
    const char *reason;
    const xnode_t *destroy;      /* a <destroy/> to include */
    int created;                 /* 201 for the creator's own presence */
    int entering;                /* the initial self-presence: 170 when the room is logged */
} pres_opts_t;

static int can_see_jid(const room_t *r, const occupant_t *viewer)
{
    return has_flag(r, F_WHOIS_ANYONE) || viewer->role == ROLE_MODERATOR;
}

/* o's presence as seen by viewer (one of viewer's sessions). */
static xnode_t *build_presence(const room_t *r, const occupant_t *o, const occupant_t *viewer, const pres_opts_t *op)
{
    xnode_t *p;
    if (!op->type && o->pres) {
        p = xnode_copy(o->pres);
    } else {
        p = xnode_new("presence", NS_CLIENT);
        if (op->type) xnode_set_attr(p, "type", op->type);
        if (op->type && o->pres) {
            xnode_t *st = xnode_child(o->pres, "status", NS_CLIENT);
            if (st) xnode_add_child(p, xnode_copy(st));
        }
    }
    xnode_t *x = xnode_add_elem(p, "x", NS_MUC_USER);
    xnode_t *item = xnode_add_elem(x, "item", NS_MUC_USER);
    xnode_set_attr(item, "affiliation", aff_names[get_aff(r, o->bare)]);
    xnode_set_attr(item, "role", op->type ? "none" : role_names[o->role]);
    if (viewer && can_see_jid(r, viewer) && o->ns) xnode_set_attr(item, "jid", o->s[0].full);
    if (op->newnick) xnode_set_attr(item, "nick", op->newnick);
    if (op->actor) xnode_set_attr(xnode_add_elem(item, "actor", NS_MUC_USER), "nick", op->actor);
    if (op->reason) add_text_elem(item, "reason", NS_MUC_USER, op->reason);
    if (op->destroy) xnode_add_child(x, xnode_copy(op->destroy));
    int is_self = viewer == o;
    int codes[12], n = 0;
    if (is_self && has_flag(r, F_WHOIS_ANYONE) && !op->type) codes[n++] = 100;
    for (int i = 0; i < op->ncodes; i++) codes[n++] = op->codes[i];
    if (is_self && op->created) codes[n++] = 201;
    if (is_self && op->entering && is_logged(r)) codes[n++] = 170;
    if (is_self) codes[n++] = 110;
    for (int i = 0; i < n; i++) {
        char buf[8];
        snprintf(buf, sizeof buf, "%d", codes[i]);
        xnode_set_attr(xnode_add_elem(x, "status", NS_MUC_USER), "code", buf);
    }
    xnode_set_attr(xnode_add_elem(p, "occupant-id", NS_OCCUPANT_ID), "id", o->occupant_id);
    return p;
}

static void send_presence(const room_t *r, const occupant_t *o, const occupant_t *viewer, const char *to_full,
                          const pres_opts_t *op)
{
    xnode_t *p = build_presence(r, o, viewer, op);
    char *from = occ_jid(r, o->nick);
    send_to(p, from, to_full);
    free(from);
}

/* o's presence to every session of every occupant (o's own included). */
static void broadcast_presence(const room_t *r, const occupant_t *o, const pres_opts_t *op)
{
    size_t pos = 0;
    const char *k;
    void *v;
    while (strmap_next(r->occ, &pos, &k, &v)) {
        occupant_t *viewer = v;
        for (size_t i = 0; i < viewer->ns; i++) send_presence(r, o, viewer, viewer->s[i].full, op);
    }
}

static occupant_t *find_session(const room_t *r, const char *full) { return strmap_get(r->by_full, full); }

static void remove_session(room_t *r, occupant_t *o, const char *full)
{
    for (size_t i = 0; i < o->ns; i++)
        if (strcmp(o->s[i].full, full) == 0) {
            free(o->s[i].full);
            o->s[i] = o->s[--o->ns];
            break;
        }
    strmap_del(r->by_full, full);
}

static void maybe_gc(room_t *r)
{
    if (strmap_count(r->occ) == 0 && !has_flag(r, F_PERSISTENT)) room_destroy(r);
}

/* Remove the whole occupant o: unavailable (with op's codes) to everyone, o's sessions included.
 * The room may be gone afterwards when gc is set. */
static void remove_occupant(room_t *r, occupant_t *o, const pres_opts_t *op, int gc)
{
    pres_opts_t u = *op;
    u.type = "unavailable";
    broadcast_presence(r, o, &u);
    for (size_t i = 0; i < o->ns; i++) strmap_del(r->by_full, o->s[i].full);
    strmap_del(r->occ, o->nick);
    occupant_free(o);
    if (gc) maybe_gc(r);
}

/* One session leaves (its unavailable presence, an error, its stream ended). */
static void session_leaves(room_t *r, occupant_t *o, const char *full, const xnode_t *pres, int code)
{
    pres_opts_t op = {0};
    if (code) op.codes[op.ncodes++] = code;
    if (o->ns > 1) {
        op.type = "unavailable";
        send_presence(r, o, o, full, &op);
        remove_session(r, o, full);
        return;
    }
    if (pres) {
        xnode_t *st = xnode_child(pres, "status", NS_CLIENT);
        if (st) {
            xnode_free(o->pres);
            o->pres = xnode_new("presence", NS_CLIENT);
            xnode_add_child(o->pres, xnode_copy(st));
        }
    }
    remove_occupant(r, o, &op, 1);
}

/* Every room the full JID is in: it left (its stream ended, it went unavailable). */
static void leave_everywhere(const char *full, int code)
{
    size_t pos = 0;
    const char *k;
    void *v;
    /* collect first: leaving may destroy rooms while we iterate */
    size_t n = 0, cap = 0;
    char **jids = NULL;
    while (strmap_next(rooms, &pos, &k, &v))
        if (find_session(v, full)) {
            if (n == cap) jids = xrealloc(jids, (cap = cap ? 2 * cap : 8) * sizeof *jids);
            jids[n++] = xstrdup(k);
        }
    for (size_t i = 0; i < n; i++) {
        room_t *r = strmap_get(rooms, jids[i]);
        occupant_t *o = r ? find_session(r, full) : NULL;
        if (o) session_leaves(r, o, full, NULL, code);
        free(jids[i]);
    }
    free(jids);
}

/* ---- history ---- */
/* Keep at most max rows of the room's archive (the oldest go). */
static void trim_archive(room_t *r, long max)
{
    storage_value_t p = STORE_VAL_TEXT(r->jid);
    store_range_t rr = {.index = "by_room", .prefix = &p, .nprefix = 1, .limit = 1};
    if (r->nhist < 0) r->nhist = store_count(t_msgs, &rr);
    while (r->nhist > max) {
        long over = r->nhist - max;
        rr.limit = (int)(over < STORE_MAX_LIMIT ? over : STORE_MAX_LIMIT);
        int d = store_delete_range(t_msgs, &rr);
        if (d <= 0) break;
        r->nhist -= d;
    }
}

static void archive(room_t *r, const occupant_t *o, const xnode_t *msg, const char *sid)
{
    long cap = archive_cap(r);
    if (cap == 0) return;
    size_t len;
    char *xml = xnode_serialize(msg, NULL, &len);
    if (!xml) return;
    storage_value_t row[] = {STORE_VAL_NULL, STORE_VAL_TEXT(r->jid), STORE_VAL_INT(now_unix()), STORE_VAL_TEXT(sid),
                             STORE_VAL_TEXT(o->nick), STORE_VAL_TEXT(o->bare), STORE_VAL_TEXT(o->occupant_id),
                             STORE_VAL_BLOB(xml, len)};
    storage_value_t p = STORE_VAL_TEXT(r->jid);
    store_range_t rr = {.index = "by_room", .prefix = &p, .nprefix = 1, .limit = 1};
    if (r->nhist < 0) r->nhist = store_count(t_msgs, &rr);
    if (store_put(t_msgs, row, NULL) < 0) log_error("muc", "archiving a message failed: %s", store_error(t_msgs));
    else r->nhist++;
    free(xml);
    trim_archive(r, cap);
}

static long attr_long(const xnode_t *n, const char *name, long def)
{
    const char *s = xnode_attr(n, name);
    if (!s || !*s) return def;
    char *end;
    long v = strtol(s, &end, 10);
    return *end || v < 0 ? def : v;
}

/* XEP-0082 DateTime to Unix time; -1 when it is none. */
static int64_t parse_stamp(const char *s)
{
    int Y, M, D, h, m, sec, used = 0;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &Y, &M, &D, &h, &m, &sec, &used) != 6 || used != 19) return -1;
    if (Y < 1970 || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60) return -1;
    /* days from civil (Howard Hinnant's algorithm) */
    Y -= M <= 2;
    long era = (Y >= 0 ? Y : Y - 399) / 400;
    long yoe = Y - era * 400;
    long doy = (153 * (M + (M > 2 ? -3 : 9)) + 2) / 5 + D - 1;
    long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    long days = era * 146097 + doe - 719468;
    int64_t t = (int64_t)days * 86400 + h * 3600 + m * 60 + sec;
    const char *tz = s + 19;
    if (*tz == '.') while (*++tz >= '0' && *tz <= '9') {}
    if ((*tz == '+' || *tz == '-') && strlen(tz) == 6) {
        int oh = atoi(tz + 1), om = atoi(tz + 4);
        t -= (*tz == '+' ? 1 : -1) * (oh * 3600 + om * 60);
    }
    return t;
}

static void send_history(room_t *r, const char *to, const xnode_t *hist)
{
    long max = r->cfg.history;
    int64_t since = 0;
    if (hist) {
        if (xnode_attr(hist, "maxchars") && attr_long(hist, "maxchars", 1) == 0) return;
        long ms = attr_long(hist, "maxstanzas", -1);
        if (ms >= 0 && ms < max) max = ms;
        long secs = attr_long(hist, "seconds", -1);
        if (secs >= 0) since = now_unix() - secs;
        int64_t s = parse_stamp(xnode_attr(hist, "since"));
        if (s > since) since = s;
    }
    if (max <= 0) return;
    storage_value_t p = STORE_VAL_TEXT(r->jid);
    store_range_t rr = {.index = "by_room", .prefix = &p, .nprefix = 1, .reverse = 1,
                        .limit = (int)(max < STORE_MAX_LIMIT ? max : STORE_MAX_LIMIT)};
    store_page_t page = {0};
    if (store_range(t_msgs, &rr, &page) < 0) return;
    for (int i = page.n - 1; i >= 0; i--) {
        storage_value_t *c = page.rows[i]->col;
        if (c[M_TS].i < since) continue;
        xnode_t *m = xnode_parse_one(c[M_XML].p, c[M_XML].len, NS_CLIENT);
        if (!m) continue;
        char stamp[XEP0082_SIZE];
        xep0082_timestamp(stamp, sizeof stamp, c[M_TS].i);
        xnode_t *d = xnode_add_elem(m, "delay", NS_DELAY);
        xnode_set_attr(d, "from", r->jid);
        xnode_set_attr(d, "stamp", stamp);
        xnode_set_attr(m, "to", to);
        route_stanza(m);
    }
    store_page_free(&page);
}

static void send_subject(const room_t *r, const char *to)
{
    xnode_t *m = xnode_new("message", NS_CLIENT);
    xnode_set_attr(m, "type", "groupchat");
    xnode_t *s = xnode_add_elem(m, "subject", NS_CLIENT);
    if (r->subject) xnode_add_text(s, r->subject);
    char *from = r->subject_nick ? occ_jid(r, r->subject_nick) : xstrdup(r->jid);
    send_to(m, from, to);
    free(from);
}

/* A message from the room itself to every occupant's sessions, with status codes. */
static void room_status_message(const room_t *r, const int *codes, int n)
{
    size_t pos = 0;
    const char *k;
    void *v;
    while (strmap_next(r->occ, &pos, &k, &v)) {
        occupant_t *o = v;
        for (size_t i = 0; i < o->ns; i++) {
            xnode_t *m = xnode_new("message", NS_CLIENT);
            xnode_set_attr(m, "type", "groupchat");
            xnode_set_attr(m, "id", "muc-status");
            xnode_t *x = xnode_add_elem(m, "x", NS_MUC_USER);
            for (int j = 0; j < n; j++) {
                char buf[8];
                snprintf(buf, sizeof buf, "%d", codes[j]);
                xnode_set_attr(xnode_add_elem(x, "status", NS_MUC_USER), "code", buf);
            }
            send_to(m, r->jid, o->s[i].full);
        }
    }
}

/* ---- joining, presence ---- */
static int rooms_owned(const char *bare)
{
    int n = 0;
    size_t pos = 0;
    const char *k;
    void *v;
    while (strmap_next(rooms, &pos, &k, &v))
        if (get_aff(v, bare) == AFF_OWNER) n++;
    return n;
}

static int role_for(const room_t *r, int aff)
{
    if (aff >= AFF_ADMIN) return ROLE_MODERATOR;
    if (aff == AFF_MEMBER || !has_flag(r, F_MODERATED)) return ROLE_PARTICIPANT;
    return ROLE_VISITOR;
}

static int presence_error(hook_event_t *ev, stanza_err_t cond)
{
    xnode_t *e = stanza_error_cond(ev->stanza, cond, NULL);
    if (!e) return HOOK_HANDLED;
    if (!xnode_child(e, "x", NS_MUC)) xnode_add_elem(e, "x", NS_MUC);
    return hook_reply(ev, e);
}

/* A copy of a client's presence as the room keeps it: without addressing and MUC elements. */
static xnode_t *keep_presence(const xnode_t *st)
{
    xnode_t *p = xnode_copy(st);
    xnode_set_attr(p, "to", NULL);
    xnode_set_attr(p, "from", NULL);
    xnode_set_attr(p, "id", NULL);
    strip_children(p, "x", NS_MUC, NULL);
    strip_children(p, "x", NS_MUC_USER, NULL);
    strip_children(p, "occupant-id", NS_OCCUPANT_ID, NULL);
    return p;
}

/* Everything a session gets when it enters: the others' presence, its own, history, subject. */
static void welcome(room_t *r, occupant_t *o, const char *full, const xnode_t *hist, int created)
{
    size_t pos = 0;
    const char *k;
    void *v;
    pres_opts_t op = {0};
    while (strmap_next(r->occ, &pos, &k, &v))
        if (v != o) send_presence(r, v, o, full, &op);
    op.created = created;
    op.entering = 1;
    send_presence(r, o, o, full, &op);
    send_history(r, full, hist);
    send_subject(r, full);
}

static int on_join(hook_event_t *ev, room_t *r)
{
    const char *nick = ev->to->resource;
    const char *full = ev->from->full, *bare = ev->from->bare;
    xnode_t *mx = xnode_child(ev->stanza, "x", NS_MUC);
    int created = 0;
    if (!r) {
        if (!conf.remote_create && !host_find(ev->from->domain)) return presence_error(ev, STANZA_ERR_NOT_ALLOWED);
        if (rooms_owned(bare) >= conf.max_rooms_per_user) return presence_error(ev, STANZA_ERR_RESOURCE_CONSTRAINT);
        r = room_new(ev->to->bare);
        delete_prefix(t_msgs, "by_room", r->jid);        /* what a crashed temporary room left */
        r->nhist = 0;
        set_aff(r, bare, AFF_OWNER, NULL);
        r->locked = mx != NULL;                           /* §10.1: locked until configured */
        created = 1;
        log_info("muc", "room %s created", r->jid);
    }
    int aff = get_aff(r, bare);
    occupant_t *o = strmap_get(r->occ, nick);
    if (o && strcmp(o->bare, bare) != 0) return presence_error(ev, STANZA_ERR_CONFLICT);
    const char *holder = reg_holder(r, nick);        /* §7.11: a nick another user registered */
    if (holder && strcmp(holder, bare) != 0) return presence_error(ev, STANZA_ERR_CONFLICT);
    if (!created) {
        if (r->locked && aff != AFF_OWNER) return presence_error(ev, STANZA_ERR_ITEM_NOT_FOUND);
        if (aff == AFF_OUTCAST) return presence_error(ev, STANZA_ERR_FORBIDDEN);
        if (has_flag(r, F_MEMBERS_ONLY) && aff < AFF_MEMBER) return presence_error(ev, STANZA_ERR_REGISTRATION_REQUIRED);
        if (has_flag(r, F_PASSWORD) && r->cfg.password && aff < AFF_ADMIN) {
            char *pw = mx ? child_text(mx, "password", NS_MUC) : NULL;
            int okpw = pw && strcmp(pw, r->cfg.password) == 0;
            free(pw);
            if (!okpw) return presence_error(ev, STANZA_ERR_NOT_AUTHORIZED);
        }
        if (!o && aff < AFF_ADMIN && (long)strmap_count(r->occ) >= max_users(r))
            return presence_error(ev, STANZA_ERR_SERVICE_UNAVAILABLE);
    }
    xnode_t *hist = mx ? xnode_child(mx, "history", NS_MUC) : NULL;
    if (o) {            /* another session of the same user under the same nick */
        o->s = xrealloc(o->s, (o->ns + 1) * sizeof *o->s);
        o->s[o->ns++].full = xstrdup(full);
        strmap_put(r->by_full, full, o);
        welcome(r, o, full, hist, 0);
        return HOOK_HANDLED;
    }
    o = xcalloc(1, sizeof *o);
    o->nick = xstrdup(nick);
    o->bare = xstrdup(bare);
    char idbuf[80];
    o->occupant_id = xstrdup(occupant_id_for(r, bare, idbuf, sizeof idbuf));
    o->role = role_for(r, aff);
    o->pres = keep_presence(ev->stanza);
    o->s = xmalloc(sizeof *o->s);
    o->s[0].full = xstrdup(full);
    o->ns = 1;
    /* the others' presence to the newcomer first, then the newcomer's to everyone, its own last */
    size_t pos = 0;
    const char *k;
    void *v;
    pres_opts_t op = {0};
    while (strmap_next(r->occ, &pos, &k, &v)) send_presence(r, v, o, full, &op);
    pos = 0;
    while (strmap_next(r->occ, &pos, &k, &v)) {
        occupant_t *viewer = v;
        for (size_t i = 0; i < viewer->ns; i++) send_presence(r, o, viewer, viewer->s[i].full, &op);
    }
    strmap_put(r->occ, nick, o);
    strmap_put(r->by_full, full, o);
    op.created = created;
    op.entering = 1;
    send_presence(r, o, o, full, &op);
    send_history(r, full, hist);
    send_subject(r, full);
    return HOOK_HANDLED;
}

static int on_nick_change(hook_event_t *ev, room_t *r, occupant_t *o)
{
    const char *nick = ev->to->resource;
    const char *holder = reg_holder(r, nick);
    if (strmap_get(r->occ, nick) || (holder && strcmp(holder, o->bare) != 0))
        return presence_error(ev, STANZA_ERR_CONFLICT);
    pres_opts_t op = {.type = "unavailable", .newnick = nick, .codes = {303}, .ncodes = 1};
    broadcast_presence(r, o, &op);
    strmap_del(r->occ, o->nick);
    free(o->nick);
    o->nick = xstrdup(nick);
    strmap_put(r->occ, nick, o);
    xnode_free(o->pres);
    o->pres = keep_presence(ev->stanza);
    pres_opts_t av = {0};
    broadcast_presence(r, o, &av);
    return HOOK_HANDLED;
}

/* 1 when a message or presence error from an occupant says its session is gone (the conditions
 * Prosody's is_kickable_error lists, or no condition at all); others, e.g. <policy-violation/> from an
 * occupant's server whose e2e policy refused one plaintext message, leave the occupant in the room.
 * Prosody removes on any presence error; a live session's <not-acceptable/> or <policy-violation/>
 * is no more a sign of a lost session in a presence than in a message, so the same list applies. */
static int kickable_error(const xnode_t *st)
{
    static const char *const gone[] = {"gone", "internal-server-error", "item-not-found", "jid-malformed",
                                        "recipient-unavailable", "redirect", "remote-server-not-found",
                                        "remote-server-timeout", "service-unavailable", NULL};
    const xnode_t *e = xnode_child(st, "error", NULL);
    for (const xnode_t *c = e ? xnode_first_elem(e) : NULL; c; c = xnode_next_elem(c)) {
        if (strcmp(c->ns, NS_STANZAS) != 0 || strcmp(c->name, "text") == 0) continue;
        for (size_t i = 0; gone[i]; i++)
            if (strcmp(c->name, gone[i]) == 0) return 1;
        return 0;
    }
    return 1;
}

static int on_presence(hook_event_t *ev, room_t *r)
{
    const char *type = xnode_attr(ev->stanza, "type");
    occupant_t *o = r ? find_session(r, ev->from->full) : NULL;
    if (type && strcmp(type, "error") == 0) {
        if (o && kickable_error(ev->stanza)) session_leaves(r, o, ev->from->full, NULL, 333);
        return HOOK_HANDLED;
    }
    if (type && strcmp(type, "unavailable") == 0) {
        if (o) session_leaves(r, o, ev->from->full, ev->stanza, 0);
        return HOOK_HANDLED;
    }
    if (type) return HOOK_HANDLED;                 /* subscriptions, probes: nothing for a room */
    if (!ev->to->resource) return presence_error(ev, STANZA_ERR_JID_MALFORMED);
    if (!o) return on_join(ev, r);
    if (strcmp(o->nick, ev->to->resource) != 0) return on_nick_change(ev, r, o);
    xnode_free(o->pres);
    o->pres = keep_presence(ev->stanza);
    pres_opts_t op = {0};
    broadcast_presence(r, o, &op);
    return HOOK_HANDLED;
}

/* ---- messages ---- */
static void broadcast_message(room_t *r, occupant_t *o, xnode_t *st)
{
    xnode_t *m = xnode_copy(st);
    xnode_set_attr(m, "to", NULL);
    char *from = occ_jid(r, o->nick);
    xnode_set_attr(m, "from", from);
    strip_children(m, "stanza-id", NS_SID, r->jid);
    strip_children(m, "x", NS_MUC_USER, NULL);         /* only the room speaks muc#user (a forged <item jid/>) */
    strip_children(m, "occupant-id", NS_OCCUPANT_ID, NULL);
    char sid[33];
    random_hex(sid, 12);
    xnode_t *s = xnode_add_elem(m, "stanza-id", NS_SID);
    xnode_set_attr(s, "id", sid);
    xnode_set_attr(s, "by", r->jid);
    xnode_set_attr(xnode_add_elem(m, "occupant-id", NS_OCCUPANT_ID), "id", o->occupant_id);
    int store = (xnode_child(m, "body", NS_CLIENT) || xnode_child(m, "encrypted", NULL))
                && !xnode_child(m, "no-store", NS_HINTS) && !xnode_child(m, "no-permanent-store", NS_HINTS);
    if (store) archive(r, o, m, sid);
    size_t pos = 0;
    const char *k;
    void *v;
    while (strmap_next(r->occ, &pos, &k, &v)) {
        occupant_t *to = v;
        for (size_t i = 0; i < to->ns; i++) {
            xnode_t *c = xnode_copy(m);
            xnode_set_attr(c, "to", to->s[i].full);
            route_stanza(c);
        }
    }
    free(from);
    xnode_free(m);
}

/* XEP-0045 §7.8.2 mediated invitations (and declines) sent to the room; at most MAX_INVITES a message. */
#define MAX_INVITES 20
static int on_invite(hook_event_t *ev, room_t *r, occupant_t *o, xnode_t *x)
{
    int aff = get_aff(r, ev->from->bare);
    int n = 0;
    for (xnode_t *c = xnode_first_elem(x); c && n < MAX_INVITES; c = xnode_next_elem(c)) {
        if (strcmp(c->ns, NS_MUC_USER) != 0) continue;
        int invite = strcmp(c->name, "invite") == 0, decline = strcmp(c->name, "decline") == 0;
        if (!invite && !decline) continue;
        n++;
        jid_t *to = jid_new(xnode_attr(c, "to"));
        if (!to) return hook_error_cond(ev, STANZA_ERR_JID_MALFORMED);
        if (invite) {
            if (!o) { jid_free(to); return hook_error_cond(ev, STANZA_ERR_NOT_ACCEPTABLE); }
            if (!has_flag(r, F_ALLOW_INVITES) && aff < AFF_ADMIN && o->role != ROLE_MODERATOR) {
                jid_free(to);
                return hook_error_cond(ev, STANZA_ERR_FORBIDDEN);
            }
            /* §7.8.2: in a members-only room the invitee becomes a member */
            if (has_flag(r, F_MEMBERS_ONLY) && get_aff(r, to->bare) < AFF_MEMBER && get_aff(r, to->bare) != AFF_OUTCAST)
                set_aff(r, to->bare, AFF_MEMBER, NULL);
        }
        xnode_t *m = xnode_new("message", NS_CLIENT);
        xnode_t *ox = xnode_add_elem(m, "x", NS_MUC_USER);
        xnode_t *e = xnode_add_elem(ox, c->name, NS_MUC_USER);
        xnode_set_attr(e, "from", ev->from->bare);
        char *reason = child_text(c, "reason", NS_MUC_USER);
        if (reason) add_text_elem(e, "reason", NS_MUC_USER, reason);
        free(reason);
        if (invite && has_flag(r, F_PASSWORD) && r->cfg.password) add_text_elem(ox, "password", NS_MUC_USER, r->cfg.password);
        if (invite && r->cfg.name) add_text_elem(m, "body", NS_CLIENT, r->cfg.name);
        send_to(m, r->jid, to->full);
        jid_free(to);
    }
    return HOOK_HANDLED;
}

static int on_voice_form(hook_event_t *ev, room_t *r, occupant_t *o, xnode_t *x);

static int on_message(hook_event_t *ev, room_t *r)
{
    const char *type = xnode_attr(ev->stanza, "type");
    if (!type) type = "normal";
    occupant_t *o = find_session(r, ev->from->full);
    if (strcmp(type, "error") == 0) {
        if (o && kickable_error(ev->stanza)) session_leaves(r, o, ev->from->full, NULL, 333);
        return HOOK_HANDLED;
    }
    if (ev->to->resource) {      /* a private message */
        if (strcmp(type, "groupchat") == 0) return hook_error_cond(ev, STANZA_ERR_BAD_REQUEST);
        if (!o) return hook_error_cond(ev, STANZA_ERR_NOT_ACCEPTABLE);
        occupant_t *to = strmap_get(r->occ, ev->to->resource);
        if (!to) return hook_error_cond(ev, STANZA_ERR_ITEM_NOT_FOUND);
        char *from = occ_jid(r, o->nick);
        for (size_t i = 0; i < to->ns; i++) {
            xnode_t *m = xnode_copy(ev->stanza);
            strip_children(m, "x", NS_MUC_USER, NULL);  /* no forged <item jid/> */
            xnode_add_elem(m, "x", NS_MUC_USER);
            send_to(m, from, to->s[i].full);
        }
        free(from);
        return HOOK_HANDLED;
    }
    if (strcmp(type, "groupchat") != 0) {
        xnode_t *x = xnode_child(ev->stanza, "x", NS_MUC_USER);
        if (x) return on_invite(ev, r, o, x);
        x = xnode_child(ev->stanza, "x", NS_XDATA);
        if (x) return on_voice_form(ev, r, o, x);
        return hook_error_cond(ev, o ? STANZA_ERR_BAD_REQUEST : STANZA_ERR_NOT_ACCEPTABLE);
    }
    if (!o) return hook_error_cond(ev, STANZA_ERR_NOT_ACCEPTABLE);
    if (o->role < ROLE_PARTICIPANT) return hook_error_cond(ev, STANZA_ERR_FORBIDDEN);
    xnode_t *subj = xnode_child(ev->stanza, "subject", NS_CLIENT);
    if (subj && !xnode_child(ev->stanza, "body", NS_CLIENT)) {
        if (!has_flag(r, F_CHANGE_SUBJECT) && o->role != ROLE_MODERATOR) return hook_error_cond(ev, STANZA_ERR_FORBIDDEN);
        free(r->subject);
        free(r->subject_nick);
        r->subject = xnode_text(subj);
        r->subject_nick = xstrdup(o->nick);
        save_room(r);
    }
    broadcast_message(r, o, ev->stanza);
    return HOOK_HANDLED;
}

/* ---- data forms ---- */
static xnode_t *form_field(xnode_t *x, const char *var, const char *type, const char *label, const char *value)
{
    xnode_t *f = xnode_add_elem(x, "field", NS_XDATA);
    xnode_set_attr(f, "var", var);
    if (type) xnode_set_attr(f, "type", type);
    if (label) xnode_set_attr(f, "label", label);
    if (value) add_text_elem(f, "value", NS_XDATA, value);
    return f;
}

static void bool_field(xnode_t *x, const char *var, const char *label, int on)
{
    form_field(x, var, "boolean", label, on ? "1" : "0");
}

static void option(xnode_t *f, const char *label, const char *value)
{
    xnode_t *o = xnode_add_elem(f, "option", NS_XDATA);
    if (label) xnode_set_attr(o, "label", label);
    add_text_elem(o, "value", NS_XDATA, value);
}

static xnode_t *config_form(const room_t *r)
{
    xnode_t *x = xnode_new("x", NS_XDATA);
    xnode_set_attr(x, "type", "form");
    add_text_elem(x, "title", NS_XDATA, "Room configuration");
    form_field(x, "FORM_TYPE", "hidden", NULL, FORM_ROOMCONFIG);
    form_field(x, "muc#roomconfig_roomname", "text-single", "Name", r->cfg.name ? r->cfg.name : "");
    form_field(x, "muc#roomconfig_roomdesc", "text-single", "Description", r->cfg.desc ? r->cfg.desc : "");
    bool_field(x, "muc#roomconfig_persistentroom", "Persistent", has_flag(r, F_PERSISTENT));
    bool_field(x, "muc#roomconfig_publicroom", "Listed in the directory", has_flag(r, F_PUBLIC));
    bool_field(x, "muc#roomconfig_membersonly", "Members only", has_flag(r, F_MEMBERS_ONLY));
    bool_field(x, "muc#roomconfig_moderatedroom", "Moderated", has_flag(r, F_MODERATED));
    bool_field(x, "muc#roomconfig_passwordprotectedroom", "Password required", has_flag(r, F_PASSWORD));
    form_field(x, "muc#roomconfig_roomsecret", "text-private", "Password", r->cfg.password ? r->cfg.password : "");
    xnode_t *f = form_field(x, "muc#roomconfig_whois", "list-single", "Who may see real JIDs",
                            has_flag(r, F_WHOIS_ANYONE) ? "anyone" : "moderators");
    option(f, "Moderators", "moderators");
    option(f, "Anyone", "anyone");
    char buf[32];
    snprintf(buf, sizeof buf, "%ld", max_users(r));
    f = form_field(x, "muc#roomconfig_maxusers", "list-single", "Maximum occupants", buf);
    static const long choices[] = {10, 20, 30, 50, 100, 200, 500, 1000};
    for (size_t i = 0; i < sizeof choices / sizeof *choices && choices[i] <= conf.max_occupants; i++) {
        char c[32];
        snprintf(c, sizeof c, "%ld", choices[i]);
        option(f, c, c);
    }
    snprintf(buf, sizeof buf, "%ld", r->cfg.history);
    form_field(x, "muc#maxhistoryfetch", "text-single", "Messages sent on join", buf);
    bool_field(x, "muc#roomconfig_allowinvites", "Occupants may invite", has_flag(r, F_ALLOW_INVITES));
    bool_field(x, "muc#roomconfig_changesubject", "Occupants may change the subject", has_flag(r, F_CHANGE_SUBJECT));
    bool_field(x, "muc#roomconfig_enablelogging", "Archive the discussion (MUC-MAM)", !has_flag(r, F_NO_LOGGING));
    return x;
}

static int parse_bool(const char *v) { return v && (strcmp(v, "1") == 0 || strcmp(v, "true") == 0); }

/* The new configuration from a submitted form; 0, or -1 on a bad value. Fields left out keep
 * their value. */
static int apply_form(const xnode_t *x, room_config_t *c)
{
    static const struct { const char *var; int flag; } bools[] = {
        {"muc#roomconfig_persistentroom", F_PERSISTENT}, {"muc#roomconfig_publicroom", F_PUBLIC},
        {"muc#roomconfig_membersonly", F_MEMBERS_ONLY}, {"muc#roomconfig_moderatedroom", F_MODERATED},
        {"muc#roomconfig_passwordprotectedroom", F_PASSWORD}, {"muc#roomconfig_allowinvites", F_ALLOW_INVITES},
        {"muc#roomconfig_changesubject", F_CHANGE_SUBJECT}, {NULL, 0}};
    for (xnode_t *f = xnode_first_elem(x); f; f = xnode_next_elem(f)) {
        if (strcmp(f->name, "field") != 0 || strcmp(f->ns, NS_XDATA) != 0) continue;
        const char *var = xnode_attr(f, "var");
        if (!var) continue;
        char *v = child_text(f, "value", NS_XDATA);
        int bad = 0;
        int matched = 0;
        for (int i = 0; bools[i].var; i++)
            if (strcmp(var, bools[i].var) == 0) {
                if (v && !parse_bool(v) && strcmp(v, "0") != 0 && strcmp(v, "false") != 0) bad = 1;
                else if (parse_bool(v)) c->flags |= bools[i].flag;
                else c->flags &= ~bools[i].flag;
                matched = 1;
            }
        if (matched) {
        } else if (strcmp(var, "muc#roomconfig_enablelogging") == 0) {
            if (v && !parse_bool(v) && strcmp(v, "0") != 0 && strcmp(v, "false") != 0) bad = 1;
            else if (parse_bool(v)) c->flags &= ~F_NO_LOGGING;
            else c->flags |= F_NO_LOGGING;
        } else if (strcmp(var, "FORM_TYPE") == 0) {
            if (v && strcmp(v, FORM_ROOMCONFIG) != 0) bad = 1;
        } else if (strcmp(var, "muc#roomconfig_roomname") == 0) {
            free(c->name);
            c->name = v && *v ? xstrdup(v) : NULL;
        } else if (strcmp(var, "muc#roomconfig_roomdesc") == 0) {
            free(c->desc);
            c->desc = v && *v ? xstrdup(v) : NULL;
        } else if (strcmp(var, "muc#roomconfig_roomsecret") == 0) {
            free(c->password);
            c->password = v && *v ? xstrdup(v) : NULL;
        } else if (strcmp(var, "muc#roomconfig_whois") == 0) {
            if (v && strcmp(v, "anyone") == 0) c->flags |= F_WHOIS_ANYONE;
            else if (v && strcmp(v, "moderators") == 0) c->flags &= ~F_WHOIS_ANYONE;
            else bad = 1;
        } else if (strcmp(var, "muc#roomconfig_maxusers") == 0) {
            char *end = NULL;
            long n = v ? strtol(v, &end, 10) : 0;
            if (v && strcmp(v, "none") == 0) c->max_users = 0;
            else if (!v || *end || n < 1) bad = 1;
            else c->max_users = n > conf.max_occupants ? conf.max_occupants : n;
        } else if (strcmp(var, "muc#maxhistoryfetch") == 0 || strcmp(var, "muc#roomconfig_historylength") == 0) {
            char *end = NULL;
            long n = v ? strtol(v, &end, 10) : -1;
            if (!v || *end || n < 0) bad = 1;
            else c->history = n > conf.max_history ? conf.max_history : n;
        }
        free(v);
        if (bad) return -1;
    }
    if ((c->flags & F_PASSWORD) && !c->password) return -1;
    return 0;
}

/* ---- owner ---- */
static void destroy_room(room_t *r, const xnode_t *destroy)
{
    pres_opts_t op = {0};
    xnode_t *d = xnode_new("destroy", NS_MUC_USER);
    if (destroy) {
        const char *alt = xnode_attr(destroy, "jid");
        if (alt) xnode_set_attr(d, "jid", alt);
        char *reason = child_text(destroy, "reason", NS_MUC_OWNER);
        if (reason) add_text_elem(d, "reason", NS_MUC_USER, reason);
        free(reason);
        char *pw = child_text(destroy, "password", NS_MUC_OWNER);
        if (pw) add_text_elem(d, "password", NS_MUC_USER, pw);
        free(pw);
    }
    op.destroy = d;
    op.type = "unavailable";
    size_t pos = 0;
    const char *k;
    void *v;
    while (strmap_next(r->occ, &pos, &k, &v)) {
        occupant_t *o = v;
        for (size_t i = 0; i < o->ns; i++) send_presence(r, o, o, o->s[i].full, &op);
    }
    xnode_free(d);
    log_info("muc", "room %s destroyed", r->jid);
    room_destroy(r);
}

/* Remove occupants that may no longer be in the room (members-only: 322; affiliation lost: 321). */
static void remove_nonmembers(room_t *r, int code)
{
    size_t pos = 0;
    const char *k;
    void *v;
    occupant_t **gone = NULL;
    size_t n = 0;
    while (strmap_next(r->occ, &pos, &k, &v))
        if (get_aff(r, ((occupant_t *)v)->bare) < AFF_MEMBER) {
            gone = xrealloc(gone, (n + 1) * sizeof *gone);
            gone[n++] = v;
        }
    for (size_t i = 0; i < n; i++) {
        pres_opts_t op = {.codes = {code}, .ncodes = 1};
        remove_occupant(r, gone[i], &op, 0);
    }
    free(gone);
}

static int on_owner(hook_event_t *ev, room_t *r, const char *type)
{
    if (get_aff(r, ev->from->bare) != AFF_OWNER) return hook_error_cond(ev, STANZA_ERR_FORBIDDEN);
    xnode_t *q = xnode_first_elem(ev->stanza);
    if (strcmp(type, "get") == 0) {
        xnode_t *reply = stanza_reply(ev->stanza);
        xnode_t *rq = xnode_add_elem(reply, "query", NS_MUC_OWNER);
        xnode_add_child(rq, config_form(r));
        return hook_reply(ev, reply);
    }
    xnode_t *destroy = xnode_child(q, "destroy", NS_MUC_OWNER);
    if (destroy) {
        const char *alt = xnode_attr(destroy, "jid");
        jid_t *j = alt ? jid_new(alt) : NULL;
        if (alt && !j) return hook_error_cond(ev, STANZA_ERR_JID_MALFORMED);
        jid_free(j);
        hook_reply(ev, stanza_reply(ev->stanza));
        destroy_room(r, destroy);
        return HOOK_HANDLED;
    }
    xnode_t *x = xnode_child(q, "x", NS_XDATA);
    if (!x) return hook_error_cond(ev, STANZA_ERR_BAD_REQUEST);
    const char *xt = xnode_attr(x, "type");
    if (xt && strcmp(xt, "cancel") == 0) {
        hook_reply(ev, stanza_reply(ev->stanza));
        if (r->locked) destroy_room(r, NULL);      /* §10.1.3: cancelling the initial configuration */
        return HOOK_HANDLED;
    }
    if (!xt || strcmp(xt, "submit") != 0) return hook_error_cond(ev, STANZA_ERR_BAD_REQUEST);
    room_config_t c = r->cfg;
    c.name = xstrdup(r->cfg.name);
    c.desc = xstrdup(r->cfg.desc);
    c.password = xstrdup(r->cfg.password);
    if (apply_form(x, &c) < 0) {
        free(c.name);
        free(c.desc);
        free(c.password);
        return hook_error_cond(ev, STANZA_ERR_NOT_ACCEPTABLE);
    }
    int was_locked = r->locked;
    int old = r->cfg.flags;
    free(r->cfg.name);
    free(r->cfg.desc);
    free(r->cfg.password);
    r->cfg = c;
    r->locked = 0;
    if ((old & F_PERSISTENT) && !(c.flags & F_PERSISTENT)) unsave_room(r);
    else if (!(old & F_PERSISTENT) && (c.flags & F_PERSISTENT)) save_room_all(r);
    else save_room(r);
    hook_reply(ev, stanza_reply(ev->stanza));
    if (!flags_logged(c.flags)) trim_archive(r, archive_cap(r));
    if (!was_locked) {
        int codes[4], n = 0;
        codes[n++] = 104;
        if (!(old & F_WHOIS_ANYONE) && (c.flags & F_WHOIS_ANYONE)) codes[n++] = 172;
        if ((old & F_WHOIS_ANYONE) && !(c.flags & F_WHOIS_ANYONE)) codes[n++] = 173;
        if (!flags_logged(old) && flags_logged(c.flags)) codes[n++] = 170;    /* §10.2.1 */
        if (flags_logged(old) && !flags_logged(c.flags)) codes[n++] = 171;
        room_status_message(r, codes, n);
    }
    if (!(old & F_MEMBERS_ONLY) && (c.flags & F_MEMBERS_ONLY)) remove_nonmembers(r, 322);
    maybe_gc(r);
    return HOOK_HANDLED;
}

/* ---- admin ---- */
static occupant_t *occupant_of(const room_t *r, const char *bare)
{
    size_t pos = 0;
    const char *k;
    void *v;
    while (strmap_next(r->occ, &pos, &k, &v))
        if (strcmp(((occupant_t *)v)->bare, bare) == 0) return v;
    return NULL;
}

static int count_aff(const room_t *r, int aff)
{
    int n = 0;
    size_t pos = 0;
    const char *k;
    void *v;
    while (strmap_next(r->affs, &pos, &k, &v))
        if ((int)(intptr_t)v - 1 == aff) n++;
    return n;
}

static int admin_get(hook_event_t *ev, room_t *r, xnode_t *item, occupant_t *me)
{
    int myaff = get_aff(r, ev->from->bare);
    int aff = name_index(aff_names, xnode_attr(item, "affiliation"));
    int role = name_index(role_names, xnode_attr(item, "role"));
    xnode_t *reply = stanza_reply(ev->stanza);
    xnode_t *rq = xnode_add_elem(reply, "query", NS_MUC_ADMIN);
    if (aff >= 0 && aff != AFF_NONE) {
        /* admins and owners; members too in members-only rooms where real JIDs are public (OMEMO) */
        int may = myaff >= AFF_ADMIN || (aff != AFF_OUTCAST && myaff == AFF_MEMBER && has_flag(r, F_MEMBERS_ONLY)
                                         && has_flag(r, F_WHOIS_ANYONE));
        if (!may) { xnode_free(reply); return hook_error_cond(ev, STANZA_ERR_FORBIDDEN); }
        size_t pos = 0;
        const char *k;
        void *v;
        while (strmap_next(r->affs, &pos, &k, &v)) {
            if ((int)(intptr_t)v - 1 != aff) continue;
            xnode_t *it = xnode_add_elem(rq, "item", NS_MUC_ADMIN);
            xnode_set_attr(it, "affiliation", aff_names[aff]);
            xnode_set_attr(it, "jid", k);
            occupant_t *o = occupant_of(r, k);
            if (o) {
                xnode_set_attr(it, "nick", o->nick);
                xnode_set_attr(it, "role", role_names[o->role]);
            }
        }
        return hook_reply(ev, reply);
    }
    if (role > ROLE_NONE) {
        if (!me || me->role != ROLE_MODERATOR) { xnode_free(reply); return hook_error_cond(ev, STANZA_ERR_FORBIDDEN); }
        size_t pos = 0;
        const char *k;
        void *v;
        while (strmap_next(r->occ, &pos, &k, &v)) {
            occupant_t *o = v;
            if (o->role != role) continue;
            xnode_t *it = xnode_add_elem(rq, "item", NS_MUC_ADMIN);
            xnode_set_attr(it, "affiliation", aff_names[get_aff(r, o->bare)]);
            xnode_set_attr(it, "role", role_names[role]);
            xnode_set_attr(it, "nick", o->nick);
            xnode_set_attr(it, "jid", o->s[0].full);
        }
        return hook_reply(ev, reply);
    }
    xnode_free(reply);
    return hook_error_cond(ev, STANZA_ERR_BAD_REQUEST);
}

/* A role change by a moderator (§8.2 kick, §8.3/8.4 voice, §9.6/9.7 moderator): 0 or an error. */
static int check_role_change(const room_t *r, const occupant_t *me, int myaff, const occupant_t *t, int role)
{
    int taff = get_aff(r, t->bare);
    if (!me || me->role != ROLE_MODERATOR) return STANZA_ERR_FORBIDDEN;
    if (role == ROLE_MODERATOR || t->role == ROLE_MODERATOR) {
        if (myaff < AFF_ADMIN) return STANZA_ERR_FORBIDDEN;
    }
    if (taff >= AFF_ADMIN && role != ROLE_MODERATOR) return STANZA_ERR_NOT_ALLOWED;
    if (taff > myaff) return STANZA_ERR_NOT_ALLOWED;
    return -1;
}

/* An affiliation change (§9, §10): -1 when allowed, else the error. */
static int check_aff_change(const room_t *r, int myaff, const char *target, int aff)
{
    int taff = get_aff(r, target);
    if (myaff < AFF_ADMIN) return STANZA_ERR_FORBIDDEN;
    if (myaff == AFF_ADMIN && (aff >= AFF_ADMIN || taff >= AFF_ADMIN)) return STANZA_ERR_NOT_ALLOWED;
    if (taff == AFF_OWNER && aff != AFF_OWNER && count_aff(r, AFF_OWNER) <= 1) return STANZA_ERR_CONFLICT;
    return -1;
}

static void apply_aff(room_t *r, const char *target, int aff, const occupant_t *me, const char *reason)
{
    set_aff(r, target, aff, reason);
    if (aff < AFF_MEMBER && reg_nick(r, target)) set_nick(r, target, NULL);   /* the nick went with the membership */
    occupant_t *o;
    while ((o = occupant_of(r, target))) {
        pres_opts_t op = {.actor = me ? me->nick : NULL, .reason = reason};
        if (aff == AFF_OUTCAST || (aff < AFF_MEMBER && has_flag(r, F_MEMBERS_ONLY))) {
            op.codes[op.ncodes++] = aff == AFF_OUTCAST ? 301 : 321;
            remove_occupant(r, o, &op, 0);
            continue;
        }
        o->role = role_for(r, aff);
        broadcast_presence(r, o, &op);
        break;
    }
}

static int admin_set(hook_event_t *ev, room_t *r, xnode_t *q, occupant_t *me)
{
    int myaff = get_aff(r, ev->from->bare);
    /* check every item before changing anything */
    for (xnode_t *it = xnode_first_elem(q); it; it = xnode_next_elem(it)) {
        if (strcmp(it->name, "item") != 0) continue;
        const char *aff_s = xnode_attr(it, "affiliation"), *role_s = xnode_attr(it, "role");
        int err;
        if (aff_s) {
            int aff = name_index(aff_names, aff_s);
            jid_t *j = jid_new(xnode_attr(it, "jid"));
            if (aff < 0 || !j) { jid_free(j); return hook_error_cond(ev, STANZA_ERR_BAD_REQUEST); }
            err = check_aff_change(r, myaff, j->bare, aff);
            jid_free(j);
        } else if (role_s) {
            int role = name_index(role_names, role_s);
            const char *nick = xnode_attr(it, "nick");
            occupant_t *t = nick ? strmap_get(r->occ, nick) : NULL;
            if (role < 0 || !nick) return hook_error_cond(ev, STANZA_ERR_BAD_REQUEST);
            if (!t) return hook_error_cond(ev, STANZA_ERR_ITEM_NOT_FOUND);
            err = check_role_change(r, me, myaff, t, role);
        } else {
            return hook_error_cond(ev, STANZA_ERR_BAD_REQUEST);
        }
        if (err >= 0) return hook_error_cond(ev, (stanza_err_t)err);
    }
    char *actor = me ? xstrdup(me->nick) : NULL;
    occupant_t actor_o = {.nick = actor};
    xnode_t *iq = xnode_copy(ev->stanza);
    hook_reply(ev, stanza_reply(ev->stanza));
    xnode_t *qq = xnode_first_elem(iq);
    for (xnode_t *it = xnode_first_elem(qq); it; it = xnode_next_elem(it)) {
        if (strcmp(it->name, "item") != 0) continue;
        char *reason = child_text(it, "reason", NS_MUC_ADMIN);
        const char *aff_s = xnode_attr(it, "affiliation");
        if (aff_s) {
            jid_t *j = jid_new(xnode_attr(it, "jid"));
            apply_aff(r, j->bare, name_index(aff_names, aff_s), actor ? &actor_o : NULL, reason);
            jid_free(j);
        } else {
            int role = name_index(role_names, xnode_attr(it, "role"));
            occupant_t *t = strmap_get(r->occ, xnode_attr(it, "nick"));
            pres_opts_t op = {.actor = actor, .reason = reason};
            if (t && role == ROLE_NONE) {
                op.codes[op.ncodes++] = 307;
                remove_occupant(r, t, &op, 0);
            } else if (t) {
                t->role = role;
                broadcast_presence(r, t, &op);
            }
        }
        free(reason);
    }
    xnode_free(iq);
    free(actor);
    maybe_gc(r);
    return HOOK_HANDLED;
}

/* ---- data forms sent to the room ---- */

/* The value of the form's field var (malloc'd; "" for a field without one), or NULL without the field. */
static char *form_value(const xnode_t *x, const char *var)
{
    for (xnode_t *f = xnode_first_elem(x); f; f = xnode_next_elem(f)) {
        const char *v = xnode_attr(f, "var");
        if (strcmp(f->name, "field") != 0 || strcmp(f->ns, NS_XDATA) != 0 || !v || strcmp(v, var) != 0) continue;
        char *t = child_text(f, "value", NS_XDATA);
        return t ? t : xstrdup("");
    }
    return NULL;
}

static int form_type_is(const xnode_t *x, const char *want)
{
    char *ft = form_value(x, "FORM_TYPE");
    int ok = ft && strcmp(ft, want) == 0;
    free(ft);
    return ok;
}

#define VOICE_REQUEST_INTERVAL 60    /* seconds between two voice requests of one occupant */

/* XEP-0045 §7.13 a visitor's voice request (a muc#request form with muc#role only), sent on to the
 * moderators as the §8.6 approval form; §8.6 a moderator's submitted approval grants voice. */
static int on_voice_form(hook_event_t *ev, room_t *r, occupant_t *o, xnode_t *x)
{
    if (!form_type_is(x, FORM_REQUEST))
        return hook_error_cond(ev, o ? STANZA_ERR_BAD_REQUEST : STANZA_ERR_NOT_ACCEPTABLE);
    if (!o) return hook_error_cond(ev, STANZA_ERR_NOT_ACCEPTABLE);
    const char *xt = xnode_attr(x, "type");
    if (!xt || strcmp(xt, "submit") != 0) return hook_error_cond(ev, STANZA_ERR_BAD_REQUEST);
    char *allow = form_value(x, "muc#request_allow");
    if (allow) {                 /* an approval */
        char *nick = form_value(x, "muc#roomnick");
        int yes = parse_bool(allow);
        free(allow);
        int err = -1;
        occupant_t *t = nick ? strmap_get(r->occ, nick) : NULL;
        if (o->role != ROLE_MODERATOR) err = STANZA_ERR_FORBIDDEN;
        else if (!nick) err = STANZA_ERR_BAD_REQUEST;
        else if (yes && !t) err = STANZA_ERR_ITEM_NOT_FOUND;
        else if (yes) err = check_role_change(r, o, get_aff(r, o->bare), t, ROLE_PARTICIPANT);
        free(nick);
        if (err >= 0) return hook_error_cond(ev, (stanza_err_t)err);
        if (yes && t->role == ROLE_VISITOR) {
            t->role = ROLE_PARTICIPANT;
            pres_opts_t op = {.actor = o->nick};
            broadcast_presence(r, t, &op);
        }
        return HOOK_HANDLED;
    }
    char *role = form_value(x, "muc#role");
    int participant = role && strcmp(role, "participant") == 0;
    free(role);
    if (!participant) return hook_error_cond(ev, STANZA_ERR_BAD_REQUEST);
    if (o->role != ROLE_VISITOR) return hook_error_cond(ev, STANZA_ERR_NOT_ALLOWED);
    /* one request per VOICE_REQUEST_INTERVAL and real user (leaving and joining again does not reset
     * it): a visitor must not flood the moderators with forms (XEP-0045 sets no limit;
     * <resource-constraint/> is type wait: ask again later) */
    int64_t now = now_unix();
    int64_t asked = (int64_t)(intptr_t)strmap_get(r->voice_asked, o->bare);
    if (asked && now - asked < VOICE_REQUEST_INTERVAL)
        return hook_error_cond(ev, STANZA_ERR_RESOURCE_CONSTRAINT);
    strmap_put(r->voice_asked, o->bare, (void *)(intptr_t)now);
    size_t pos = 0;
    const char *k;
    void *v;
    while (strmap_next(r->occ, &pos, &k, &v)) {
        occupant_t *m = v;
        if (m->role != ROLE_MODERATOR) continue;
        for (size_t i = 0; i < m->ns; i++) {
            xnode_t *msg = xnode_new("message", NS_CLIENT);
            xnode_t *f = xnode_add_elem(msg, "x", NS_XDATA);
            xnode_set_attr(f, "type", "form");
            add_text_elem(f, "title", NS_XDATA, "Voice request");
            add_text_elem(f, "instructions", NS_XDATA, "To grant voice, set \"Grant voice\" and submit the form.");
            form_field(f, "FORM_TYPE", "hidden", NULL, FORM_REQUEST);
            form_field(f, "muc#role", "list-single", "Requested role", "participant");
            form_field(f, "muc#jid", "jid-single", "User ID", ev->from->full);
            form_field(f, "muc#roomnick", "text-single", "Room nickname", o->nick);
            form_field(f, "muc#request_allow", "boolean", "Grant voice to this person?", "false");
            send_to(msg, r->jid, m->s[i].full);
        }
    }
    return HOOK_HANDLED;
}

/* XEP-0045 §7.10 registering with a room (XEP-0077 on the room JID): the muc#register form, the nick
 * reserved and the user made a member; <remove/> ends both. Banned users may not register, nor may
 * users without an affiliation in a members-only room (registration would let anyone in). */
static int on_register(hook_event_t *ev, room_t *r, int get)
{
    const char *bare = ev->from->bare;
    int aff = get_aff(r, bare);
    if (aff == AFF_OUTCAST || (has_flag(r, F_MEMBERS_ONLY) && aff < AFF_MEMBER))
        return hook_error_cond(ev, STANZA_ERR_NOT_ALLOWED);
    const char *mine = reg_nick(r, bare);
    xnode_t *q = xnode_first_elem(ev->stanza);
    if (get) {
        xnode_t *reply = stanza_reply(ev->stanza);
        xnode_t *rq = xnode_add_elem(reply, "query", NS_REGISTER);
        if (mine) {
            xnode_add_elem(rq, "registered", NS_REGISTER);
            add_text_elem(rq, "username", NS_REGISTER, mine);
            return hook_reply(ev, reply);
        }
        xnode_t *x = xnode_add_elem(rq, "x", NS_XDATA);
        xnode_set_attr(x, "type", "form");
        add_text_elem(x, "title", NS_XDATA, "Register with the room");
        add_text_elem(x, "instructions", NS_XDATA, "Reserve a nickname; you become a member of the room.");
        form_field(x, "FORM_TYPE", "hidden", NULL, FORM_REGISTER);
        xnode_t *f = form_field(x, "muc#register_roomnick", "text-single", "Desired nickname", NULL);
        xnode_add_elem(f, "required", NS_XDATA);
        return hook_reply(ev, reply);
    }
    if (xnode_child(q, "remove", NS_REGISTER)) {
        if (!mine) return hook_error_cond(ev, STANZA_ERR_REGISTRATION_REQUIRED);
        hook_reply(ev, stanza_reply(ev->stanza));
        set_nick(r, bare, NULL);
        if (aff == AFF_MEMBER) {
            apply_aff(r, bare, AFF_NONE, NULL, NULL);
            maybe_gc(r);
        }
        return HOOK_HANDLED;
    }
    xnode_t *x = xnode_child(q, "x", NS_XDATA);
    const char *xt = x ? xnode_attr(x, "type") : NULL;
    char *ft = x ? form_value(x, "FORM_TYPE") : NULL;
    int bad = !xt || strcmp(xt, "submit") != 0 || (ft && strcmp(ft, FORM_REGISTER) != 0);
    free(ft);
    char *want = bad ? NULL : form_value(x, "muc#register_roomnick");
    /* the nick as an occupant JID's resource (resourceprep), as presence to room/nick gives it */
    char *ojid = want && *want ? occ_jid(r, want) : NULL;
    jid_t *j = ojid ? jid_new(ojid) : NULL;
    free(ojid);
    free(want);
    if (!j || !j->resource) {
        jid_free(j);
        return hook_error_cond(ev, STANZA_ERR_BAD_REQUEST);
    }
    const char *holder = reg_holder(r, j->resource);
    occupant_t *in = strmap_get(r->occ, j->resource);
    if ((holder && strcmp(holder, bare) != 0) || (in && strcmp(in->bare, bare) != 0)) {
        jid_free(j);
        return hook_error_cond(ev, STANZA_ERR_CONFLICT);
    }
    hook_reply(ev, stanza_reply(ev->stanza));
    set_nick(r, bare, j->resource);
    jid_free(j);
    if (aff < AFF_MEMBER) apply_aff(r, bare, AFF_MEMBER, NULL, NULL);
    return HOOK_HANDLED;
}

/* ---- disco ---- */
static int room_info(hook_event_t *ev, room_t *r)
{
    xnode_t *reply = stanza_reply(ev->stanza);
    xnode_t *q = xnode_add_elem(reply, "query", NS_DISCO_INFO);
    const char *node = xnode_attr(xnode_first_elem(ev->stanza), "node");
    if (node && strcmp(node, NODE_ROOMUSER) == 0) {
        /* XEP-0045 §7.11: the asker's registered nick, or an empty result */
        xnode_set_attr(q, "node", node);
        const char *nick = reg_nick(r, ev->from->bare);
        if (nick) {
            xnode_t *ni = xnode_add_elem(q, "identity", NS_DISCO_INFO);
            xnode_set_attr(ni, "category", "conference");
            xnode_set_attr(ni, "name", nick);
            xnode_set_attr(ni, "type", "text");
        }
        return hook_reply(ev, reply);
    }
    xnode_t *id = xnode_add_elem(q, "identity", NS_DISCO_INFO);
    xnode_set_attr(id, "category", "conference");
    xnode_set_attr(id, "type", "text");
    xnode_set_attr(id, "name", r->cfg.name ? r->cfg.name : ev->to->node);
    const char *feats[] = {
        NS_MUC, NS_DISCO_INFO, NS_SID, NS_OCCUPANT_ID, NS_MUC "#stable_id", NS_MUC "#self-ping-optimization",
        NS_REGISTER, FORM_REGISTER, FORM_REQUEST,
        has_flag(r, F_PUBLIC) ? "muc_public" : "muc_hidden",
        has_flag(r, F_PERSISTENT) ? "muc_persistent" : "muc_temporary",
        has_flag(r, F_MEMBERS_ONLY) ? "muc_membersonly" : "muc_open",
        has_flag(r, F_MODERATED) ? "muc_moderated" : "muc_unmoderated",
        has_flag(r, F_WHOIS_ANYONE) ? "muc_nonanonymous" : "muc_semianonymous",
        has_flag(r, F_PASSWORD) ? "muc_passwordprotected" : "muc_unsecured", NULL};
    for (int i = 0; feats[i]; i++) xnode_set_attr(xnode_add_elem(q, "feature", NS_DISCO_INFO), "var", feats[i]);
    if (is_logged(r)) {
        xnode_set_attr(xnode_add_elem(q, "feature", NS_DISCO_INFO), "var", NS_MAM);
        xnode_set_attr(xnode_add_elem(q, "feature", NS_DISCO_INFO), "var", NS_MAM "#extended");
    }
    xnode_t *x = xnode_add_elem(q, "x", NS_XDATA);
    xnode_set_attr(x, "type", "result");
    form_field(x, "FORM_TYPE", "hidden", NULL, FORM_ROOMINFO);
    form_field(x, "muc#roominfo_description", NULL, "Description", r->cfg.desc ? r->cfg.desc : "");
    form_field(x, "muc#roominfo_subject", NULL, "Subject", r->subject ? r->subject : "");
    char buf[32];
    snprintf(buf, sizeof buf, "%zu", strmap_count(r->occ));
    form_field(x, "muc#roominfo_occupants", NULL, "Occupants", buf);
    form_field(x, "muc#roominfo_subjectmod", "boolean", "Occupants may change the subject",
               has_flag(r, F_CHANGE_SUBJECT) ? "1" : "0");
    form_field(x, "muc#roomconfig_roomname", NULL, "Name", r->cfg.name ? r->cfg.name : "");
    form_field(x, "muc#roomconfig_allowinvites", "boolean", NULL, has_flag(r, F_ALLOW_INVITES) ? "1" : "0");
    /* §7.2.12 / §17.1: a client may learn before entering that the discussion is logged */
    form_field(x, "muc#roomconfig_enablelogging", "boolean", "Discussion archived (MUC-MAM)", is_logged(r) ? "1" : "0");
    return hook_reply(ev, reply);
}

static int service_items(hook_event_t *ev)
{
    xnode_t *reply = stanza_reply(ev->stanza);
    xnode_t *q = xnode_add_elem(reply, "query", NS_DISCO_ITEMS);
    const char *domain = ev->to->domain;
    size_t dl = strlen(domain);
    size_t pos = 0;
    const char *k;
    void *v;
    while (strmap_next(rooms, &pos, &k, &v)) {
        room_t *r = v;
        size_t kl = strlen(k);
        if (!has_flag(r, F_PUBLIC) || r->locked || kl <= dl + 1 || k[kl - dl - 1] != '@' || strcmp(k + kl - dl, domain) != 0)
            continue;
        xnode_t *it = xnode_add_elem(q, "item", NS_DISCO_ITEMS);
        xnode_set_attr(it, "jid", k);
        xnode_set_attr(it, "name", r->cfg.name ? r->cfg.name : k);
    }
    return hook_reply(ev, reply);
}

static int is_query(const xnode_t *q, const char *name, const char *ns)
{
    return q && strcmp(q->name, name) == 0 && strcmp(q->ns, ns) == 0;
}

/* IQs between occupants (vCards, pings, software version; XEP-0045 lets the room relay them): with a fresh id
 * from the sender's occupant JID to one session of the target (vcard-temp to its bare JID), and the
 * answer back. Unanswered relays are forgotten after RELAY_TTL seconds. */
#define RELAY_TTL 120
#define RELAY_MAX 10000
typedef struct relay {
    char *id;                    /* the asker's id */
    char *to;                    /* the asker's real JID */
    char *from;                  /* the target's occupant JID (the answer comes from it) */
    char *target;                /* the real JID the IQ went to */
    char *asker_nick_jid;        /* the asker's occupant JID (the answer is addressed to it) */
    int64_t at;
} relay_t;
static strmap_t *relays;

static void relay_free(relay_t *rl)
{
    free(rl->id);
    free(rl->to);
    free(rl->from);
    free(rl->target);
    free(rl->asker_nick_jid);
    free(rl);
}

static void relays_expire(int all)
{
    size_t pos = 0;
    const char *k;
    void *v;
    int64_t old = now_unix() - RELAY_TTL;
    while (relays && strmap_next(relays, &pos, &k, &v))
        if (all || ((relay_t *)v)->at < old) {
            strmap_del(relays, k);
            relay_free(v);
        }
}

static int relay_iq(hook_event_t *ev, room_t *r, occupant_t *me, occupant_t *t)
{
    if (strmap_count(relays) >= RELAY_MAX) return hook_error_cond(ev, STANZA_ERR_RESOURCE_CONSTRAINT);
    xnode_t *q = xnode_first_elem(ev->stanza);
    int vcard = q && strcmp(q->name, "vCard") == 0 && strcmp(q->ns, "vcard-temp") == 0;
    char id[33];
    random_hex(id, 12);
    relay_t *rl = xcalloc(1, sizeof *rl);
    rl->id = xstrdup(xnode_attr(ev->stanza, "id") ? xnode_attr(ev->stanza, "id") : "");
    rl->to = xstrdup(ev->from->full);
    rl->from = occ_jid(r, t->nick);
    rl->at = now_unix();
    strmap_put(relays, id, rl);
    xnode_t *iq = xnode_copy(ev->stanza);
    xnode_set_attr(iq, "id", id);
    rl->target = xstrdup(vcard ? t->bare : t->s[0].full);
    rl->asker_nick_jid = occ_jid(r, me->nick);
    send_to(iq, rl->asker_nick_jid, rl->target);
    return HOOK_HANDLED;
}

/* A result or error to an occupant JID: the answer to a relayed IQ. */
static void relay_answer(hook_event_t *ev)
{
    const char *id = xnode_attr(ev->stanza, "id");
    relay_t *rl = id ? strmap_get(relays, id) : NULL;
    if (!rl || !ev->to->resource) return;
    /* only the entity it was sent to answers it, to the occupant JID it was sent from */
    if (strcmp(rl->target, ev->from->full) != 0 || strcmp(rl->asker_nick_jid, ev->to->full) != 0) return;
    strmap_del(relays, id);
    xnode_t *iq = xnode_copy(ev->stanza);
    xnode_set_attr(iq, "id", rl->id[0] ? rl->id : NULL);
    send_to(iq, rl->from, rl->to);
    relay_free(rl);
}

/* ---- XEP-0313 on the room JID (MUC-MAM): the archive muc_messages, paged by (ts, id) ----
 * Filters start, end, before-id, after-id (XEP-0313 §4.1.1 and "extended"); RSM max, before, after.
 * Readable by occupants and affiliated users; in rooms that are not members-only by anyone not banned. */
#define MAM_MAX 250

static int mam_form(hook_event_t *ev)
{
    xnode_t *reply = stanza_reply(ev->stanza);
    xnode_t *q = xnode_add_elem(reply, "query", NS_MAM);
    xnode_t *x = xnode_add_elem(q, "x", NS_XDATA);
    xnode_set_attr(x, "type", "form");
    form_field(x, "FORM_TYPE", "hidden", NULL, NS_MAM);
    form_field(x, "with", "jid-single", NULL, NULL);
    form_field(x, "start", "text-single", NULL, NULL);
    form_field(x, "end", "text-single", NULL, NULL);
    form_field(x, "before-id", "text-single", NULL, NULL);
    form_field(x, "after-id", "text-single", NULL, NULL);
    /* XEP-0313 §5.1: ids is open to any value (XEP-0122 <open/>), the server lists none */
    xnode_t *ids = form_field(x, "ids", "list-multi", NULL, NULL);
    xnode_t *v = xnode_add_elem(ids, "validate", NS_XVALIDATE);
    xnode_set_attr(v, "datatype", "xs:string");
    xnode_add_elem(v, "open", NS_XVALIDATE);
    return hook_reply(ev, reply);
}

/* One archived row to the asker as a MAM result. XEP-0313 §"MUC Archives": any muc#user <x/> the
 * sender put in is stripped; an asker who may see real JIDs (a non-anonymous room, a moderator, an
 * admin or owner) gets the sender's (bare) JID in <x><item jid/></x>: OMEMO clients need it to
 * decrypt the history. */
static void mam_result(const room_t *r, const char *to, const char *queryid, const storage_value_t *c, int see_jid)
{
    xnode_t *orig = xnode_parse_one(c[M_XML].p, c[M_XML].len, NS_CLIENT);
    if (!orig) return;
    strip_children(orig, "x", NS_MUC_USER, NULL);
    if (see_jid) {
        xnode_t *item = xnode_add_elem(xnode_add_elem(orig, "x", NS_MUC_USER), "item", NS_MUC_USER);
        xnode_set_attr(item, "jid", c[M_JID].p);
    }
    xnode_t *m = xnode_new("message", NS_CLIENT);
    xnode_t *res = xnode_add_elem(m, "result", NS_MAM);
    if (queryid) xnode_set_attr(res, "queryid", queryid);
    xnode_set_attr(res, "id", c[M_STANZA_ID].p);
    xnode_t *fw = xnode_add_elem(res, "forwarded", NS_FORWARD);
    char stamp[XEP0082_SIZE];
    xep0082_timestamp(stamp, sizeof stamp, c[M_TS].i);
    xnode_set_attr(xnode_add_elem(fw, "delay", NS_DELAY), "stamp", stamp);
    xnode_add_child(fw, orig);
    send_to(m, r->jid, to);
}

static int row_order(const void *a, const void *b)
{
    const store_row_t *x = *(store_row_t *const *)a, *y = *(store_row_t *const *)b;
    if (x->col[M_TS].i != y->col[M_TS].i) return x->col[M_TS].i < y->col[M_TS].i ? -1 : 1;
    return x->col[M_ID].i < y->col[M_ID].i ? -1 : x->col[M_ID].i > y->col[M_ID].i;
}

/* XEP-0313 #extended 'ids': exactly these messages, in archive order; an unknown id is
 * item-not-found. At most MAM_MAX of them (then the answer is not complete). */
static int mam_ids(hook_event_t *ev, room_t *r, const xnode_t *field, const char *queryid, int see_jid)
{
    store_row_t **rows = NULL;
    int n = 0, cut = 0, err = -1;
    for (xnode_t *v = xnode_first_elem(field); v && err < 0; v = xnode_next_elem(v)) {
        if (strcmp(v->name, "value") != 0) continue;
        if (n == MAM_MAX) { cut = 1; break; }
        char *sid = xnode_text(v);
        storage_value_t p[] = {STORE_VAL_TEXT(r->jid), STORE_VAL_TEXT(sid)};
        store_range_t rr = {.index = "by_sid", .prefix = p, .nprefix = 2, .limit = 1};
        store_page_t page = {0};
        if (store_range(t_msgs, &rr, &page) < 0) err = STANZA_ERR_INTERNAL_SERVER_ERROR;
        else if (page.n != 1) err = STANZA_ERR_ITEM_NOT_FOUND;
        else {
            int dup = 0;
            for (int i = 0; i < n; i++) dup |= rows[i]->col[M_ID].i == page.rows[0]->col[M_ID].i;
            if (!dup) {
                rows = xrealloc(rows, (size_t)(n + 1) * sizeof *rows);
                rows[n++] = page.rows[0];
                page.n = 0;
            }
        }
        store_page_free(&page);
        free(sid);
    }
    if (err < 0) {
        qsort(rows, (size_t)n, sizeof *rows, row_order);
        for (int i = 0; i < n; i++) mam_result(r, ev->from->full, queryid, rows[i]->col, see_jid);
    }
    xnode_t *reply = err < 0 ? stanza_reply(ev->stanza) : NULL;
    if (reply) {
        xnode_t *fin = xnode_add_elem(reply, "fin", NS_MAM);
        if (!cut) xnode_set_attr(fin, "complete", "true");
        xnode_t *rs = xnode_add_elem(fin, "set", NS_RSM);
        if (n > 0) {
            add_text_elem(rs, "first", NS_RSM, rows[0]->col[M_STANZA_ID].p);
            add_text_elem(rs, "last", NS_RSM, rows[n - 1]->col[M_STANZA_ID].p);
        }
        char buf[32];
        snprintf(buf, sizeof buf, "%d", n);
        add_text_elem(rs, "count", NS_RSM, buf);
    }
    for (int i = 0; i < n; i++) store_row_free(rows[i]);
    free(rows);
    return reply ? hook_reply(ev, reply) : hook_error_cond(ev, (stanza_err_t)err);
}

/* The archive position (ts, id) of the message with stanza-id sid: 0, or -1 when there is none. */
static int mam_position(const room_t *r, const char *sid, int64_t *ts, int64_t *id)
{
    storage_value_t p[] = {STORE_VAL_TEXT(r->jid), STORE_VAL_TEXT(sid)};
    store_range_t rr = {.index = "by_sid", .prefix = p, .nprefix = 2, .limit = 1};
    store_page_t page = {0};
    int rc = -1;
    if (store_range(t_msgs, &rr, &page) == 0 && page.n == 1) {
        *ts = page.rows[0]->col[M_TS].i;
        *id = page.rows[0]->col[M_ID].i;
        rc = 0;
    }
    store_page_free(&page);
    return rc;
}

/* A MUC-MAM query's form fields (XEP-0313 §4.1.1, #extended), each malloc'd or NULL. */
typedef struct mam_args {
    char *start, *end, *before_id, *after_id, *with;
    const xnode_t *ids;          /* the ids field, or NULL */
} mam_args_t;

static void mam_args_free(mam_args_t *a)
{
    free(a->start);
    free(a->end);
    free(a->before_id);
    free(a->after_id);
    free(a->with);
}

/* Read the query's data form into a: -1, or the error (a field the room does not know: §5.1). */
static int mam_parse_form(const xnode_t *q, mam_args_t *a)
{
    xnode_t *x = xnode_child(q, "x", NS_XDATA);
    for (xnode_t *f = x ? xnode_first_elem(x) : NULL; f; f = xnode_next_elem(f)) {
        if (strcmp(f->name, "field") != 0) continue;
        const char *var = xnode_attr(f, "var");
        if (var && strcmp(var, "FORM_TYPE") == 0) {
            char *v = child_text(f, "value", NS_XDATA);
            int bad = !v || strcmp(v, NS_MAM) != 0;
            free(v);
            if (bad) return STANZA_ERR_BAD_REQUEST;
            continue;
        }
        if (var && strcmp(var, "ids") == 0) {
            a->ids = f;
            continue;
        }
        char **dst = !var ? NULL : strcmp(var, "start") == 0 ? &a->start : strcmp(var, "end") == 0 ? &a->end
                   : strcmp(var, "before-id") == 0 ? &a->before_id : strcmp(var, "after-id") == 0 ? &a->after_id
                   : strcmp(var, "with") == 0 ? &a->with : NULL;
        if (!dst) return STANZA_ERR_FEATURE_NOT_IMPLEMENTED;   /* XEP-0313 §4.1.1: a field the server does not recognise */
        if (!*dst) *dst = child_text(f, "value", NS_XDATA);
    }
    return -1;
}

static int mam_query(hook_event_t *ev, room_t *r, occupant_t *me)
{
    int aff = get_aff(r, ev->from->bare);
    if (aff == AFF_OUTCAST || (!me && aff < AFF_MEMBER && has_flag(r, F_MEMBERS_ONLY)))
        return hook_error_cond(ev, STANZA_ERR_FORBIDDEN);
    xnode_t *q = xnode_first_elem(ev->stanza);
    const char *queryid = xnode_attr(q, "queryid");
    int see_jid = has_flag(r, F_WHOIS_ANYONE) || aff >= AFF_ADMIN || (me && me->role == ROLE_MODERATOR);
    mam_args_t a = {0};
    int err = mam_parse_form(q, &a);
    if (err < 0 && a.ids) {
        mam_args_free(&a);
        return mam_ids(ev, r, a.ids, queryid, see_jid);
    }
    xnode_t *set = xnode_child(q, "set", NS_RSM);
    long max = 50;
    int last_page = 0;
    if (set) {
        char *m = child_text(set, "max", NS_RSM);
        if (m) max = strtol(m, NULL, 10);
        free(m);
        xnode_t *b = xnode_child(set, "before", NS_RSM);
        char *bt = b ? xnode_text(b) : NULL;
        if (b && !*bt) last_page = 1;
        else if (bt && !a.before_id) a.before_id = xstrdup(bt);
        free(bt);
        char *at = child_text(set, "after", NS_RSM);
        if (at && !a.after_id) a.after_id = at;
        else free(at);
    }
    if (max < 0) max = 0;
    if (max > MAM_MAX) max = MAM_MAX;
    storage_value_t p = STORE_VAL_TEXT(r->jid);
    storage_value_t lo[2], hi[2];
    store_range_t rr = {.index = "by_time", .prefix = &p, .nprefix = 1};
    /* 'with': an occupant JID (room/nick) narrows to that nick's messages; the room's bare JID is the
     * whole archive; any other JID matches nothing (the room column never equals it) */
    jid_t *wj = NULL;
    storage_value_t wv;
    if (err < 0 && a.with) {
        if (!(wj = jid_new(a.with))) err = STANZA_ERR_BAD_REQUEST;
        else if (strcmp(wj->bare, r->jid) != 0 || wj->resource) {
            wv = STORE_VAL_TEXT(wj->resource && strcmp(wj->bare, r->jid) == 0 ? wj->resource : wj->bare);
            rr.match = strcmp(wj->bare, r->jid) != 0 ? "room" : "nick";
            rr.match_value = &wv;
        }
    }
    int64_t ts, id;
    int64_t s_ts = a.start ? parse_stamp(a.start) : -1, e_ts = a.end ? parse_stamp(a.end) : -1;
    if ((a.start && s_ts < 0) || (a.end && e_ts < 0)) err = STANZA_ERR_BAD_REQUEST;
    if (err < 0 && a.after_id) {
        if (mam_position(r, a.after_id, &ts, &id) < 0) err = STANZA_ERR_ITEM_NOT_FOUND;
        lo[0] = STORE_VAL_INT(ts);
        lo[1] = STORE_VAL_INT(id);
        rr.after = (store_bound_t){lo, 2, 0};
    } else if (err < 0 && a.start) {
        lo[0] = STORE_VAL_INT(s_ts);
        rr.after = (store_bound_t){lo, 1, 1};
    }
    if (err < 0 && a.before_id) {
        if (mam_position(r, a.before_id, &ts, &id) < 0) err = STANZA_ERR_ITEM_NOT_FOUND;
        hi[0] = STORE_VAL_INT(ts);
        hi[1] = STORE_VAL_INT(id);
        rr.before = (store_bound_t){hi, 2, 0};
        last_page = 1;
    } else if (err < 0 && a.end) {
        hi[0] = STORE_VAL_INT(e_ts);
        rr.before = (store_bound_t){hi, 1, 1};
    }
    mam_args_free(&a);
    int count = err < 0 ? store_count(t_msgs, &rr) : 0;
    store_page_t page = {0};
    rr.reverse = last_page;
    rr.limit = max > 0 ? (int)max : 1;
    if (err < 0 && store_range(t_msgs, &rr, &page) < 0) err = STANZA_ERR_INTERNAL_SERVER_ERROR;
    jid_free(wj);
    if (err >= 0) return hook_error_cond(ev, (stanza_err_t)err);
    int n = max > 0 ? page.n : 0;
    const char *first = NULL, *last = NULL;
    for (int k = 0; k < n; k++) {
        storage_value_t *c = page.rows[last_page ? n - 1 - k : k]->col;
        if (!first) first = c[M_STANZA_ID].p;
        last = c[M_STANZA_ID].p;
        mam_result(r, ev->from->full, queryid, c, see_jid);
    }
    xnode_t *reply = stanza_reply(ev->stanza);
    xnode_t *fin = xnode_add_elem(reply, "fin", NS_MAM);
    if (max == 0 ? count <= 0 : !page.more) xnode_set_attr(fin, "complete", "true");
    xnode_t *rs = xnode_add_elem(fin, "set", NS_RSM);
    if (first) add_text_elem(rs, "first", NS_RSM, first);
    if (last) add_text_elem(rs, "last", NS_RSM, last);
    char buf[32];
    snprintf(buf, sizeof buf, "%d", count < 0 ? 0 : count);
    add_text_elem(rs, "count", NS_RSM, buf);
    store_page_free(&page);
    return hook_reply(ev, reply);
}

static int on_iq(hook_event_t *ev, room_t *r)
{
    const char *type = xnode_attr(ev->stanza, "type");
    if (!type || (strcmp(type, "get") != 0 && strcmp(type, "set") != 0)) {
        const char *id = xnode_attr(ev->stanza, "id");
        if (r && ev->to->resource && id && strmap_get(relays, id)) {
            relay_answer(ev);
            return HOOK_HANDLED;
        }
        /* Never a reason to remove the occupant (as Prosody): an IQ error answers one request, and
         * <service-unavailable/> or <item-not-found/> are how a live client declines one (RFC 6120
         * §8.3.3); one that answers no relay (late, or a duplicate) is dropped. */
        return HOOK_HANDLED;
    }
    xnode_t *q = xnode_first_elem(ev->stanza);
    int get = strcmp(type, "get") == 0;
    if (!r) return hook_error_cond(ev, STANZA_ERR_ITEM_NOT_FOUND);
    occupant_t *me = find_session(r, ev->from->full);
    if (ev->to->resource) {
        /* XEP-0410: a self-ping is answered by the room; other IQs to an occupant are relayed */
        if (!me) return hook_error_cond(ev, STANZA_ERR_NOT_ACCEPTABLE);
        occupant_t *t = strmap_get(r->occ, ev->to->resource);
        if (!t) return hook_error_cond(ev, STANZA_ERR_ITEM_NOT_FOUND);
        if (get && is_query(q, "ping", NS_PING) && t == me) return hook_reply(ev, stanza_reply(ev->stanza));
        return relay_iq(ev, r, me, t);
    }
    if (get && is_query(q, "query", NS_DISCO_INFO)) return room_info(ev, r);
    if (get && is_query(q, "query", NS_DISCO_ITEMS)) {
        xnode_t *reply = stanza_reply(ev->stanza);
        xnode_add_elem(reply, "query", NS_DISCO_ITEMS);
        return hook_reply(ev, reply);
    }
    if (get && is_query(q, "ping", NS_PING)) return hook_reply(ev, stanza_reply(ev->stanza));
    if (is_query(q, "query", NS_MAM)) {
        if (!is_logged(r)) return hook_error_cond(ev, STANZA_ERR_SERVICE_UNAVAILABLE);
        return get ? mam_form(ev) : mam_query(ev, r, me);
    }
    if (is_query(q, "query", NS_REGISTER)) return on_register(ev, r, get);
    if (is_query(q, "query", NS_MUC_OWNER)) return on_owner(ev, r, type);
    if (is_query(q, "query", NS_MUC_ADMIN)) {
        xnode_t *item = xnode_child(q, "item", NS_MUC_ADMIN);
        if (!item) return hook_error_cond(ev, STANZA_ERR_BAD_REQUEST);
        return get ? admin_get(ev, r, item, me) : admin_set(ev, r, q, me);
    }
    return hook_error_cond(ev, STANZA_ERR_SERVICE_UNAVAILABLE);
}

static int on_stanza(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!ev->from || !ev->to) return HOOK_HANDLED;
    const char *kind = ev->name + strlen("component/");
    if (!ev->to->node) {
        xnode_t *q = xnode_first_elem(ev->stanza);
        const char *type = xnode_attr(ev->stanza, "type");
        if (strcmp(kind, "iq") == 0 && type && strcmp(type, "get") == 0 && is_query(q, "query", NS_DISCO_ITEMS)
            && !xnode_attr(q, "node"))
            return service_items(ev);
        return HOOK_PASS;
    }
    room_t *r = strmap_get(rooms, ev->to->bare);
    if (strcmp(kind, "presence") == 0) return on_presence(ev, r);
    if (!r) {
        const char *type = xnode_attr(ev->stanza, "type");
        if (type && strcmp(type, "error") == 0) return HOOK_HANDLED;
        if (strcmp(kind, "iq") == 0 && (!type || (strcmp(type, "get") != 0 && strcmp(type, "set") != 0)))
            return HOOK_HANDLED;
        return hook_error_cond(ev, STANZA_ERR_ITEM_NOT_FOUND);
    }
    if (strcmp(kind, "message") == 0) return on_message(ev, r);
    return on_iq(ev, r);
}

/* ---- sessions and the server going away ---- */
static int on_session_gone(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (ev->stanza && strcmp(ev->name, HOOK_RESOURCE_UNAVAILABLE) == 0) return HOOK_PASS;  /* unavailable presence: mod_presence tells the rooms */
    const jid_t *j = ev->origin ? session_jid(ev->origin) : ev->from;
    if (j && j->resource) leave_everywhere(j->full, 0);
    return HOOK_PASS;
}

/* The service of a stopping host goes away with it: every occupant of its rooms is told (332). */
static int on_host_stopping(hook_event_t *ev, void *ud)
{
    (void)ud;
    size_t pos = 0;
    const char *k;
    void *v;
    while (strmap_next(rooms, &pos, &k, &v)) {
        room_t *r = v;
        const char *at = strchr(r->jid, '@');
        component_t *c = at ? component_find(at + 1) : NULL;
        if (!c || component_parent(c) != ev->host) continue;
        size_t p2 = 0;
        const char *k2;
        void *v2;
        pres_opts_t op = {.type = "unavailable", .codes = {332}, .ncodes = 1};
        while (strmap_next(r->occ, &p2, &k2, &v2)) {
            occupant_t *o = v2;
            for (size_t i = 0; i < o->ns; i++) send_presence(r, o, o, o->s[i].full, &op);
        }
    }
    return HOOK_PASS;
}

/* A deleted account's rows are gone (the core deletes them by the tables' account column); drop its
 * affiliations from the rooms in memory too. */
static int on_user_deleted(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!ev->to) return HOOK_PASS;
    size_t pos = 0;
    const char *k;
    void *v;
    while (strmap_next(rooms, &pos, &k, &v)) {
        strmap_del(((room_t *)v)->affs, ev->to->bare);
        free(strmap_del(((room_t *)v)->nicks, ev->to->bare));
    }
    return HOOK_PASS;
}

static int load(module_ctx_t *m)
{
    t_rooms = module_store(m, "rooms");
    t_affs = module_store(m, "affiliations");
    t_ids = module_store(m, "ids");
    t_msgs = module_store(m, "messages");
    t_nicks = module_store(m, "nicks");
    rooms = strmap_new();
    relays = strmap_new();
    for (size_t i = 0; i < host_count(); i++) {
        host_t *h = host_at(i);
        const struct muc_conf *hc = module_host_conf(m, h);
        char *domain = hc->host ? xstrdup(hc->host) : xasprintf("conference.%s", host_name(h));
        if (component_find(domain) && hc->host) {    /* one service named for several hosts */
            free(domain);
            continue;
        }
        component_t *c = module_add_component(m, h, domain, "Chatrooms", on_stanza, NULL);
        free(domain);
        if (!c) return -1;
        component_add_identity(c, "conference", "text", "Chatrooms");
        component_add_feature(c, NS_MUC);
        component_add_feature(c, NS_OCCUPANT_ID);
        component_add_feature(c, NS_MUC "#self-ping-optimization");
    }
    store_changed(t_rooms, &rooms_watch);
    if (sync_rooms() == 0)          /* never judge rows orphans on a failed load */
        drop_temporary_leftovers();
    ctx = m;
    again = NULL;
    expire_run();
    module_add_timer(m, EXPIRE_EVERY_MS, 1, expire_step, NULL);
    module_add_timer(m, 1000, 1, on_sync_timer, NULL);
    module_hook(m, HOOK_SESSION_CLOSED, 0, on_session_gone, NULL);
    module_hook(m, HOOK_RESOURCE_UNAVAILABLE, 0, on_session_gone, NULL);
    module_hook(m, HOOK_HOST_STOPPING, 0, on_host_stopping, NULL);
    module_hook(m, HOOK_USER_DELETED, 0, on_user_deleted, NULL);
    return 0;
}

static void unload(module_ctx_t *m)
{
    (void)m;
    size_t pos = 0;
    const char *k;
    void *v;
    while (strmap_next(rooms, &pos, &k, &v)) room_free(v);
    strmap_free(rooms);
    rooms = NULL;
    relays_expire(1);
    strmap_free(relays);
    relays = NULL;
    again = NULL;                     /* the core cancels the module's timers */
}

const module_t civitas_module = {
    .abi = CIVITAS_MODULE_ABI, .name = "muc", .load = load, .unload = unload,
    .options = options, .conf = &conf, .conf_size = sizeof conf, .store = &schema};
