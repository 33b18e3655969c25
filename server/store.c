/* server/store.c: module-scoped tables (store.h): declarations checked and turned into SQL, migrations
 * through storage_module_install, typed rows and index ranges run with storage_query. No SQLite here. */
#include "store.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A key or index: column numbers, the declared ones first, then the key columns it lacked. */
typedef struct sindex {
    const char *name;                  /* declared name; NULL for the primary key */
    char *sql;                         /* the index's SQL name; NULL for the primary key */
    int col[STORE_MAX_INDEX_COLUMNS];
    int n;
} sindex_t;

struct store {
    storage_t *db;
    const store_table_t *decl;
    char *tbl;                         /* <module>_<table> */
    int ncols;
    sindex_t key;
    sindex_t *idx;                     /* declared indexes */
    int nidx;
    int account;                       /* column number of .account, or -1 (a .parent table) */
    int parent_col;                    /* column number of .parent_column, or -1 */
    const struct store *parent;        /* the .parent table, or NULL */
    int id_col;                        /* the STORE_ID column, or -1 */
    char *sql_put, *sql_insert, *sql_get, *sql_del, *sql_del_account;
    char *dyn;                         /* the last generated (range) SQL */
    const char *last;                  /* store_last_sql */
    int own_err;                       /* 1: err holds the last error, 0: the storage's */
    char err[256];
};

struct store_module {
    store_t **t;
    int n;
};

/* ---- small helpers ---- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf_t;

static void sb_add(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(sbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (k < 0) return;
    if (b->n + (size_t)k + 1 > b->cap) {
        b->cap = (b->n + (size_t)k + 1) * 2;
        b->p = xrealloc(b->p, b->cap);
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

static int fail(store_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(store_t *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->err, sizeof t->err, fmt, ap);
    va_end(ap);
    t->own_err = 1;
    return -1;
}

/* Entry of every operation on a table. */
static int begin_op(store_t *t)
{
    if (!t) return -1;
    t->own_err = 0;
    return 0;
}

static int is_name(const char *n, int underscore)
{
    if (!n || !((*n >= 'a' && *n <= 'z') || (underscore && *n == '_'))) return 0;
    for (; *n; n++)
        if (!((*n >= 'a' && *n <= 'z') || (*n >= '0' && *n <= '9') || (underscore && *n == '_'))) return 0;
    return 1;
}

static store_type_t col_type(const store_column_t *c) { return (store_type_t)(c->type & ~STORE_OPTIONAL); }
static int col_optional(const store_column_t *c) { return (c->type & STORE_OPTIONAL) != 0; }

static const char *type_sql(store_type_t ty)
{
    return ty == STORE_TEXT ? "TEXT" : ty == STORE_BLOB ? "BLOB" : "INTEGER";
}

static int column_of(const store_t *t, const char *name, size_t len)
{
    for (int i = 0; i < t->ncols; i++)
        if (strlen(t->decl->columns[i].name) == len && strncmp(t->decl->columns[i].name, name, len) == 0) return i;
    return -1;
}

static int index_has(const sindex_t *x, int col)
{
    for (int i = 0; i < x->n; i++)
        if (x->col[i] == col) return 1;
    return 0;
}

/* Parse "a, b, c" into x. 0, or -1 with the message in t. */
static int parse_columns(store_t *t, const char *list, sindex_t *x, const char *what)
{
    x->n = 0;
    const char *p = list;
    while (p && *p) {
        while (*p == ' ') p++;
        const char *e = p;
        while (*e && *e != ',' && *e != ' ') e++;
        int c = column_of(t, p, (size_t)(e - p));
        if (c < 0 || index_has(x, c) || x->n >= STORE_MAX_INDEX_COLUMNS)
            return fail(t, "%s \"%s\": unknown, repeated or too many columns", what, list);
        x->col[x->n++] = c;
        while (*e == ' ') e++;
        if (*e == ',') e++;
        p = e;
    }
    if (x->n == 0) return fail(t, "%s: no columns", what);
    return 0;
}

/* ---- declaration -> store_t ---- */

static void store_free(store_t *t)
{
    if (!t) return;
    for (int i = 0; i < t->nidx; i++) free(t->idx[i].sql);
    free(t->idx);
    free(t->tbl);
    free(t->sql_put);
    free(t->sql_get);
    free(t->sql_del);
    free(t->sql_del_account);
    free(t->sql_insert);
    free(t->dyn);
    free(t);
}

static int check_table(store_t *t, const char *module)
{
    const store_table_t *d = t->decl;
    static const char *const reserved[] = {"module_schema", "user_tables", "schema_version"};
    if (!is_name(d->name, 0)) return fail(t, "table name must be [a-z][a-z0-9]*");
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (strcmp(t->tbl, reserved[i]) == 0) return fail(t, "the name %s is the core's", t->tbl);
    if (strncmp(module, "sqlite", 6) == 0) return fail(t, "names starting with sqlite are SQLite's");
    if (!d->columns) return fail(t, "no columns");
    t->id_col = -1;
    while (d->columns[t->ncols].name) {
        const store_column_t *c = &d->columns[t->ncols];
        if (t->ncols >= STORE_MAX_COLUMNS) return fail(t, "more than %d columns", STORE_MAX_COLUMNS);
        if (!is_name(c->name, 1)) return fail(t, "column name %s must be [a-z_][a-z0-9_]*", c->name);
        if (column_of(t, c->name, strlen(c->name)) >= 0) return fail(t, "column %s declared twice", c->name);
        store_type_t ty = col_type(c);
        if (ty < STORE_INT || ty > STORE_ID || (ty == STORE_ID && col_optional(c)))
            return fail(t, "column %s has no valid type", c->name);
        if (ty == STORE_ID) {
            if (t->id_col >= 0) return fail(t, "more than one STORE_ID column");
            t->id_col = t->ncols;
        }
        t->ncols++;
    }
    if (t->ncols == 0) return fail(t, "no columns");
    if (parse_columns(t, d->key, &t->key, "key") < 0) return -1;
    for (int i = 0; i < t->key.n; i++)
        if (col_optional(&d->columns[t->key.col[i]]))
            return fail(t, "key column %s is optional", d->columns[t->key.col[i]].name);
    if (t->id_col >= 0 && (t->key.n != 1 || t->key.col[0] != t->id_col))
        return fail(t, "a STORE_ID column must be the whole key");
    t->account = d->account ? column_of(t, d->account, strlen(d->account)) : -1;
    t->parent_col = d->parent_column ? column_of(t, d->parent_column, strlen(d->parent_column)) : -1;
    if (d->parent || d->parent_column) {
        if (d->account) return fail(t, "a table has an account column or a parent, not both");
        if (!d->parent || !d->parent_column) return fail(t, "parent and parent_column go together");
        if (t->parent_col < 0 || d->columns[t->parent_col].type != STORE_INT)
            return fail(t, "parent_column must name an INT column that is not optional");
    } else if (t->account < 0 || d->columns[t->account].type != STORE_TEXT)
        return fail(t, "account must name a TEXT column that is not optional");
    int owner = t->account >= 0 ? t->account : t->parent_col;
    int leads = t->key.col[0] == owner;
    for (const store_index_t *x = d->indexes; x && x->name; x++) {
        if (!is_name(x->name, 1)) return fail(t, "index name %s must be [a-z_][a-z0-9_]*", x->name);
        for (int i = 0; i < t->nidx; i++)
            if (strcmp(t->idx[i].name, x->name) == 0) return fail(t, "index %s declared twice", x->name);
        t->idx = xrealloc(t->idx, (size_t)(t->nidx + 1) * sizeof *t->idx);
        sindex_t *si = &t->idx[t->nidx++];
        memset(si, 0, sizeof *si);
        si->name = x->name;
        if (parse_columns(t, x->columns, si, "index") < 0) return -1;
        for (int i = 0; i < t->key.n; i++) {          /* complete the order with the key */
            if (index_has(si, t->key.col[i])) continue;
            if (si->n >= STORE_MAX_INDEX_COLUMNS) return fail(t, "index %s: too many columns with the key", x->name);
            si->col[si->n++] = t->key.col[i];
        }
        si->sql = xasprintf("%s__%s", t->tbl, x->name);
        leads |= si->col[0] == owner;
    }
    if (!leads)
        return fail(t, "the %s column must lead the key or an index (deleting an account would scan)",
                    t->account >= 0 ? "account" : "parent");
    return 0;
}

/* A .parent table's parent: declared before it in the same module, keyed by a STORE_ID, with an
 * account column. */
static int check_parent(store_t *t, const store_module_t *sm)
{
    if (!t->decl->parent) return 0;
    for (int i = 0; i < sm->n && sm->t[i] != t; i++)
        if (strcmp(sm->t[i]->decl->name, t->decl->parent) == 0) {
            const store_t *p = sm->t[i];
            if (p->id_col < 0 || p->account < 0)
                return fail(t, "parent %s must have a STORE_ID key and an account column", t->decl->parent);
            t->parent = p;
            return 0;
        }
    return fail(t, "parent %s is not a table declared before it", t->decl->parent);
}

static void add_names(sbuf_t *b, const store_t *t, const int *cols, int n, const char *sep)
{
    for (int i = 0; i < n; i++) sb_add(b, "%s\"%s\"", i ? sep : "", t->decl->columns[cols[i]].name);
}

/* WHERE clause of the key: "k1" = ?1 AND ... */
static char *key_where(const store_t *t)
{
    sbuf_t b = {0};
    for (int i = 0; i < t->key.n; i++)
        sb_add(&b, "%s\"%s\" = ?%d", i ? " AND " : "", t->decl->columns[t->key.col[i]].name, i + 1);
    return b.p;
}

static void build_statements(store_t *t)
{
    const store_column_t *c = t->decl->columns;
    sbuf_t b = {0};
    int all[STORE_MAX_COLUMNS];
    for (int i = 0; i < t->ncols; i++) all[i] = i;
    sb_add(&b, "INSERT INTO \"%s\" (", t->tbl);
    add_names(&b, t, all, t->ncols, ", ");
    sb_add(&b, ") VALUES (");
    for (int i = 0; i < t->ncols; i++) sb_add(&b, "%s?%d", i ? ", " : "", i + 1);
    sb_add(&b, ")");
    t->sql_insert = xstrdup(b.p);
    sb_add(&b, " ON CONFLICT (");
    add_names(&b, t, t->key.col, t->key.n, ", ");
    sb_add(&b, ") DO ");
    int upd = 0;
    for (int i = 0; i < t->ncols; i++) {
        if (index_has(&t->key, i)) continue;
        sb_add(&b, "%s\"%s\" = excluded.\"%s\"", upd++ ? ", " : "UPDATE SET ", c[i].name, c[i].name);
    }
    if (!upd) sb_add(&b, "NOTHING");
    t->sql_put = b.p;

    char *kw = key_where(t);
    b = (sbuf_t){0};
    sb_add(&b, "SELECT ");
    add_names(&b, t, all, t->ncols, ", ");
    sb_add(&b, " FROM \"%s\" WHERE %s", t->tbl, kw);
    t->sql_get = b.p;
    t->sql_del = xasprintf("DELETE FROM \"%s\" WHERE %s", t->tbl, kw);
    if (t->parent)
        t->sql_del_account = xasprintf("DELETE FROM \"%s\" WHERE \"%s\" IN (SELECT \"%s\" FROM \"%s\" WHERE \"%s\" = ?1)",
                                       t->tbl, c[t->parent_col].name, t->parent->decl->columns[t->parent->id_col].name,
                                       t->parent->tbl, t->parent->decl->columns[t->parent->account].name);
    else
        t->sql_del_account = xasprintf("DELETE FROM \"%s\" WHERE \"%s\" = ?1", t->tbl, c[t->account].name);
    free(kw);
}

/* CREATE TABLE and CREATE INDEX for the declaration. */
static void add_create(sbuf_t *b, const store_t *t)
{
    const store_column_t *c = t->decl->columns;
    sb_add(b, "CREATE TABLE \"%s\" (", t->tbl);
    for (int i = 0; i < t->ncols; i++) {
        sb_add(b, "%s\"%s\" ", i ? ", " : "", c[i].name);
        if (col_type(&c[i]) == STORE_ID) sb_add(b, "INTEGER PRIMARY KEY AUTOINCREMENT");
        else sb_add(b, "%s%s", type_sql(col_type(&c[i])), col_optional(&c[i]) ? "" : " NOT NULL");
    }
    if (t->id_col < 0) {
        sb_add(b, ", PRIMARY KEY (");
        add_names(b, t, t->key.col, t->key.n, ", ");
        sb_add(b, ")");
    }
    if (t->parent)
        sb_add(b, ", FOREIGN KEY (\"%s\") REFERENCES \"%s\" (\"%s\") ON DELETE CASCADE", c[t->parent_col].name,
               t->parent->tbl, t->parent->decl->columns[t->parent->id_col].name);
    sb_add(b, ");\n");
    for (int i = 0; i < t->nidx; i++) {
        sb_add(b, "CREATE INDEX \"%s\" ON \"%s\" (", t->idx[i].sql, t->tbl);
        add_names(b, t, t->idx[i].col, t->idx[i].n, ", ");
        sb_add(b, ");\n");
    }
}

/* Record the table in the core's list of tables holding users' rows (an empty domain_col: the
 * account column holds the bare JID), so that deleting an account empties it, in any process. */
static void add_register(sbuf_t *b, const store_t *t)
{
    if (t->account < 0) {              /* a .parent table: its rows go with the parent's */
        sb_add(b, ";\nDELETE FROM user_tables WHERE tbl = '%s';\n", t->tbl);
        return;
    }
    sb_add(b, ";\nINSERT INTO user_tables (tbl, user_col, domain_col) VALUES ('%s', '%s', '')"
           " ON CONFLICT (tbl) DO UPDATE SET user_col = excluded.user_col, domain_col = excluded.domain_col;\n",
           t->tbl, t->decl->columns[t->account].name);
}

/* ---- checking the tables against the declaration ---- */

typedef struct colinfo {
    char name[64], type[96];
    int pk;
} colinfo_t;

typedef struct colinfos {
    colinfo_t v[STORE_MAX_COLUMNS * 2];
    int n;
} colinfos_t;

static int colinfo_cb(void *ud, const storage_value_t *cols, int ncols)
{
    colinfos_t *ci = ud;
    if (ncols < 3 || ci->n >= (int)(sizeof ci->v / sizeof ci->v[0])) return 0;
    colinfo_t *c = &ci->v[ci->n++];
    memset(c, 0, sizeof *c);
    if (cols[0].type == STORAGE_TEXT) snprintf(c->name, sizeof c->name, "%s", (const char *)cols[0].p);
    if (cols[1].type == STORAGE_TEXT) snprintf(c->type, sizeof c->type, "%s", (const char *)cols[1].p);
    c->pk = cols[2].type == STORAGE_INT ? (int)cols[2].i : 0;
    return 0;
}

static int verify(store_t *t)
{
    colinfos_t ci = {0};
    storage_value_t p = STORE_VAL_TEXT(t->tbl);
    if (storage_query(t->db, "SELECT name, type, pk FROM pragma_table_info(?1)", &p, 1, colinfo_cb, &ci) < 0)
        return -1;
    if (ci.n == 0) return fail(t, "table %s is missing", t->tbl);
    for (int i = 0; i < t->ncols; i++) {
        const store_column_t *c = &t->decl->columns[i];
        const colinfo_t *found = NULL;
        for (int j = 0; j < ci.n && !found; j++)
            if (strcmp(ci.v[j].name, c->name) == 0) found = &ci.v[j];
        if (!found) return fail(t, "column %s is missing (an upgrade step forgotten?)", c->name);
        if (strcasecmp(found->type, type_sql(col_type(c))) != 0)
            return fail(t, "column %s is %s, declared %s", c->name, found->type, type_sql(col_type(c)));
        int pos = 0;
        for (int k = 0; k < t->key.n; k++)
            if (t->key.col[k] == i) pos = k + 1;
        if (found->pk != pos) return fail(t, "the primary key differs from the declared one at %s", c->name);
    }
    for (int x = 0; x < t->nidx; x++) {
        ci.n = 0;
        p = STORE_VAL_TEXT(t->idx[x].sql);
        if (storage_query(t->db, "SELECT name, '', seqno FROM pragma_index_info(?1) ORDER BY seqno", &p, 1,
                          colinfo_cb, &ci) < 0)
            return -1;
        int same = ci.n == t->idx[x].n;
        for (int i = 0; same && i < ci.n; i++)
            same = strcmp(ci.v[i].name, t->decl->columns[t->idx[x].col[i]].name) == 0;
        if (!same) return fail(t, "index %s is missing or has other columns than declared", t->idx[x].name);
    }
    if (t->parent) {                   /* the cascade that deletes the rows with the account */
        ci.n = 0;
        p = STORE_VAL_TEXT(t->tbl);
        if (storage_query(t->db, "SELECT \"from\", \"table\" || ' ' || \"to\" || ' ' || on_delete, 0"
                          " FROM pragma_foreign_key_list(?1)", &p, 1, colinfo_cb, &ci) < 0)
            return -1;
        char want[sizeof ci.v[0].type];
        snprintf(want, sizeof want, "%s %s CASCADE", t->parent->tbl, t->parent->decl->columns[t->parent->id_col].name);
        if (ci.n != 1 || strcmp(ci.v[0].name, t->decl->columns[t->parent_col].name) != 0 || strcmp(ci.v[0].type, want) != 0)
            return fail(t, "the foreign key to %s is missing or differs", t->parent->tbl);
    }
    return 0;
}

/* ---- opening a module's tables ---- */

/* storage_module_install's check: the tables as declared, before the migration commits. */
static int verify_all(void *ud)
{
    store_module_t *sm = ud;
    for (int i = 0; i < sm->n; i++)
        if (verify(sm->t[i]) < 0) return -1;
    return 0;
}

void store_module_close(store_module_t *sm)
{
    if (!sm) return;
    for (int i = 0; i < sm->n; i++) store_free(sm->t[i]);
    free(sm->t);
    free(sm);
}

store_t *store_module_table(store_module_t *sm, const char *table)
{
    for (int i = 0; sm && table && i < sm->n; i++)
        if (strcmp(sm->t[i]->decl->name, table) == 0) return sm->t[i];
    return NULL;
}

store_module_t *store_module_open(storage_t *s, const char *module, const store_schema_t *schema, char **err)
{
    char *msg = NULL;
    const store_table_t *d = schema ? schema->tables : NULL;
    if (err) *err = NULL;
    if (!s || !is_name(module, 1) || !schema || schema->version < 1 || !d || !d->name
        || (schema->version > 1 && !schema->upgrade)) {
        if (err) *err = xasprintf("%s: invalid storage declaration (name, version, tables or upgrade steps)",
                                  module ? module : "?");
        return NULL;
    }
    store_module_t *sm = xcalloc(1, sizeof *sm);
    sbuf_t create = {0}, reg = {0};
    for (; d->name && !msg; d++) {
        store_t *t = xcalloc(1, sizeof *t);
        t->db = s;
        t->decl = d;
        t->tbl = xasprintf("%s_%s", module, d->name);
        sm->t = xrealloc(sm->t, (size_t)(sm->n + 1) * sizeof *sm->t);
        sm->t[sm->n++] = t;
        if (store_module_table(sm, d->name) != t) fail(t, "declared twice");
        else if (check_table(t, module) == 0 && check_parent(t, sm) == 0) {
            build_statements(t);
            add_create(&create, t);
            add_register(&reg, t);
            continue;
        }
        msg = xasprintf("%s: table %s: %s", module, d->name ? d->name : "?", t->err);
    }
    if (!msg) {
        int n = schema->version;
        const char **steps = xcalloc((size_t)n, sizeof *steps);
        char *last = NULL;
        for (int v = 1; v < n; v++) steps[v] = schema->upgrade[v - 1];
        if (n > 1 && steps[n - 1]) steps[n - 1] = last = xasprintf("%s%s", steps[n - 1], reg.p);
        sb_add(&create, "%s%s", schema->import ? schema->import : "", reg.p);
        if (storage_module_install(s, module, create.p, steps, n, verify_all, sm) < 0) {
            store_t *bad = NULL;                /* a declaration check failed: its message */
            for (int i = 0; i < sm->n && !bad; i++)
                if (sm->t[i]->own_err) bad = sm->t[i];
            msg = bad ? xasprintf("%s: table %s: %s", module, bad->decl->name, bad->err)
                      : xasprintf("%s: %s", module, storage_last_error(s));
        }
        free(steps);
        free(last);
    }
    for (int i = 0; i < sm->n && !msg; i++)
        if (verify(sm->t[i]) < 0)
            msg = xasprintf("%s: table %s: %s", module, sm->t[i]->decl->name, store_error(sm->t[i]));
    free(create.p);
    free(reg.p);
    if (!msg) return sm;
    if (err) *err = msg;
    else free(msg);
    store_module_close(sm);
    return NULL;
}

/* ---- values and rows ---- */

/* Does v fit column col? allow_null: an ID column may be NULL in a put. */
static int check_value(store_t *t, int col, const storage_value_t *v, int allow_null)
{
    const store_column_t *c = &t->decl->columns[col];
    int is_null = v->type == STORAGE_NULL || (v->type == STORAGE_TEXT && !v->p);
    if (is_null) {
        if (col_optional(c) || allow_null) return 0;
        return fail(t, "column %s: NULL where a value is required", c->name);
    }
    store_type_t ty = col_type(c);
    storage_type_t want = ty == STORE_TEXT ? STORAGE_TEXT : ty == STORE_BLOB ? STORAGE_BLOB : STORAGE_INT;
    if (v->type != want) return fail(t, "column %s: value of the wrong type", c->name);
    if (v->type == STORAGE_BLOB && !v->p && v->len) return fail(t, "column %s: NULL blob with a length", c->name);
    return 0;
}

static int check_values(store_t *t, const int *cols, int n, const storage_value_t *v)
{
    if (n && !v) return fail(t, "values missing");
    for (int i = 0; i < n; i++)
        if (check_value(t, cols[i], &v[i], 0) < 0) return -1;
    return 0;
}

void store_row_free(store_row_t *r)
{
    free(r);
}

static store_row_t *row_copy(const storage_value_t *cols, int ncols)
{
    size_t size = sizeof(store_row_t) + (size_t)ncols * sizeof(storage_value_t);
    for (int i = 0; i < ncols; i++)
        if (cols[i].type == STORAGE_TEXT || cols[i].type == STORAGE_BLOB) size += cols[i].len + 1;
    store_row_t *r = xmalloc(size);
    char *data = (char *)&r->col[ncols];
    r->ncols = ncols;
    for (int i = 0; i < ncols; i++) {
        r->col[i] = cols[i];
        if (cols[i].type == STORAGE_TEXT || cols[i].type == STORAGE_BLOB) {
            if (cols[i].len) memcpy(data, cols[i].p, cols[i].len);
            data[cols[i].len] = '\0';
            r->col[i].p = data;
            data += cols[i].len + 1;
        } else {
            r->col[i].p = NULL;
            r->col[i].len = 0;
        }
    }
    return r;
}

static int run(store_t *t, const char *sql, const storage_value_t *params, int n,
               int (*row)(void *, const storage_value_t *, int), void *ud)
{
    t->last = sql;
    return storage_query(t->db, sql, params, n, row, ud);
}

/* ---- rows by key ---- */

static int put(store_t *t, const char *sql, const storage_value_t *row, int64_t *id)
{
    if (begin_op(t) < 0) return -1;
    if (!row) return fail(t, "put: no row");
    for (int i = 0; i < t->ncols; i++)
        if (check_value(t, i, &row[i], i == t->id_col) < 0) return -1;
    if (run(t, sql, row, t->ncols, NULL, NULL) < 0) return -1;
    if (id && t->id_col >= 0)
        *id = row[t->id_col].type == STORAGE_INT ? row[t->id_col].i : storage_last_insert_id(t->db);
    return 0;
}

int store_put(store_t *t, const storage_value_t *row, int64_t *id)
{
    return put(t, t->sql_put, row, id);
}

int store_insert(store_t *t, const storage_value_t *row, int64_t *id)
{
    return put(t, t->sql_insert, row, id);
}

typedef struct collect {
    store_row_t **rows;
    int n, max;
} collect_t;

static int collect_cb(void *ud, const storage_value_t *cols, int ncols)
{
    collect_t *c = ud;
    c->rows = xrealloc(c->rows, (size_t)(c->n + 1) * sizeof *c->rows);
    c->rows[c->n++] = row_copy(cols, ncols);
    return 0;
}

int store_get(store_t *t, const storage_value_t *key, store_row_t **row)
{
    if (row) *row = NULL;
    if (begin_op(t) < 0) return -1;
    if (!row) return fail(t, "get: nowhere to put the row");
    if (check_values(t, t->key.col, t->key.n, key) < 0) return -1;
    collect_t c = {0};
    int r = run(t, t->sql_get, key, t->key.n, collect_cb, &c);
    if (r > 0) *row = c.rows[0];
    for (int i = 1; i < c.n; i++) free(c.rows[i]);
    free(c.rows);
    return r < 0 ? -1 : r > 0 ? 0 : 1;
}

int store_delete(store_t *t, const storage_value_t *key)
{
    if (begin_op(t) < 0) return -1;
    if (check_values(t, t->key.col, t->key.n, key) < 0) return -1;
    return run(t, t->sql_del, key, t->key.n, NULL, NULL);
}

int store_delete_account(store_t *t, const char *bare)
{
    if (begin_op(t) < 0) return -1;
    if (!bare) return fail(t, "delete account: no JID");
    storage_value_t v = STORE_VAL_TEXT(bare);
    return run(t, t->sql_del_account, &v, 1, NULL, NULL);
}

/* ---- ranges ---- */

static const sindex_t *find_index(store_t *t, const char *name)
{
    if (!name) return &t->key;
    for (int i = 0; i < t->nidx; i++)
        if (strcmp(t->idx[i].name, name) == 0) return &t->idx[i];
    fail(t, "no index named %s", name);
    return NULL;
}

static int add_bound(store_t *t, sbuf_t *b, const sindex_t *x, int from, const store_bound_t *bd, const char *op,
                     storage_value_t *params, int *np)
{
    if (!bd->v) return 0;
    if (bd->n < 1 || from + bd->n > x->n)
        return fail(t, "range: a bound has %d values, 1 to %d allowed", bd->n, x->n - from);
    if (check_values(t, x->col + from, bd->n, bd->v) < 0) return -1;
    sb_add(b, " AND %s", bd->n > 1 ? "(" : "");
    add_names(b, t, x->col + from, bd->n, ", ");
    sb_add(b, "%s %s%s %s", bd->n > 1 ? ")" : "", op, bd->inclusive ? "=" : "", bd->n > 1 ? "(" : "");
    for (int i = 0; i < bd->n; i++) {
        sb_add(b, "%s?", i ? ", " : "");
        params[(*np)++] = bd->v[i];
    }
    sb_add(b, "%s", bd->n > 1 ? ")" : "");
    return 0;
}

/* Build "FROM t [INDEXED BY i] WHERE ..." with its parameters (at most 2 + 3 * STORE_MAX_INDEX_COLUMNS);
 * with order, add ORDER BY and "LIMIT ?" (limit + extra). NULL on error. */
static char *range_sql(store_t *t, const char *select, const store_range_t *r, int order, int extra,
                       storage_value_t *params, int *np)
{
    const sindex_t *x = find_index(t, r->index);
    *np = 0;
    if (!x) return NULL;
    if (r->nprefix < 0 || r->nprefix > x->n || (r->nprefix && !r->prefix)) {
        fail(t, "range: the prefix has %d values, 0 to %d allowed", r->nprefix, x->n);
        return NULL;
    }
    if (check_values(t, x->col, r->nprefix, r->prefix) < 0) return NULL;
    if (order && (r->limit < 1 || r->limit > STORE_MAX_LIMIT)) {
        fail(t, "range: limit %d is not within 1..%d", r->limit, STORE_MAX_LIMIT);
        return NULL;
    }
    sbuf_t b = {0};
    sb_add(&b, "%s FROM \"%s\"", select, t->tbl);
    if (x->sql) sb_add(&b, " INDEXED BY \"%s\"", x->sql);
    sb_add(&b, " WHERE 1");
    for (int i = 0; i < r->nprefix; i++) {
        sb_add(&b, " AND \"%s\" = ?", t->decl->columns[x->col[i]].name);
        params[(*np)++] = r->prefix[i];
    }
    if (add_bound(t, &b, x, r->nprefix, &r->after, ">", params, np) < 0
        || add_bound(t, &b, x, r->nprefix, &r->before, "<", params, np) < 0) {
        free(b.p);
        return NULL;
    }
    if (r->match) {
        int c = column_of(t, r->match, strlen(r->match));
        if (c < 0 || !r->match_value || check_value(t, c, r->match_value, 0) < 0) {
            if (c < 0 || !r->match_value) fail(t, "range: match names no column or has no value");
            free(b.p);
            return NULL;
        }
        sb_add(&b, " AND \"%s\" = ?", t->decl->columns[c].name);
        params[(*np)++] = *r->match_value;
    }
    if (order) {
        for (int i = r->nprefix; i < x->n; i++)
            sb_add(&b, "%s\"%s\"%s", i == r->nprefix ? " ORDER BY " : ", ", t->decl->columns[x->col[i]].name,
                   r->reverse ? " DESC" : "");
        sb_add(&b, " LIMIT ?");
        params[(*np)++] = STORE_VAL_INT(r->limit + extra);
    }
    return b.p;
}

#define MAX_RANGE_PARAMS (2 + 3 * STORE_MAX_INDEX_COLUMNS)

static const char *keep_sql(store_t *t, char *sql)
{
    free(t->dyn);
    t->dyn = sql;
    return sql;
}

int store_range(store_t *t, const store_range_t *r, store_page_t *page)
{
    if (page) memset(page, 0, sizeof *page);
    if (begin_op(t) < 0) return -1;
    if (!r || !page) return fail(t, "range: no range or no page");
    storage_value_t params[MAX_RANGE_PARAMS];
    int np;
    sbuf_t sel = {0};
    int all[STORE_MAX_COLUMNS];
    for (int i = 0; i < t->ncols; i++) all[i] = i;
    sb_add(&sel, "SELECT ");
    add_names(&sel, t, all, t->ncols, ", ");
    char *sql = range_sql(t, sel.p, r, 1, 1, params, &np);
    free(sel.p);
    if (!sql) return -1;
    collect_t c = {0};
    int n = run(t, keep_sql(t, sql), params, np, collect_cb, &c);
    if (n < 0) {
        for (int i = 0; i < c.n; i++) free(c.rows[i]);
        free(c.rows);
        return -1;
    }
    if (c.n > r->limit) {                  /* the extra row only says that more follow */
        free(c.rows[--c.n]);
        page->more = 1;
    }
    page->rows = c.rows;
    page->n = c.n;
    return 0;
}

void store_page_free(store_page_t *page)
{
    if (!page) return;
    for (int i = 0; i < page->n; i++) free(page->rows[i]);
    free(page->rows);
    memset(page, 0, sizeof *page);
}

static int count_cb(void *ud, const storage_value_t *cols, int ncols)
{
    if (ncols > 0 && cols[0].type == STORAGE_INT) *(int64_t *)ud = cols[0].i;
    return 0;
}

int store_count(store_t *t, const store_range_t *r)
{
    if (begin_op(t) < 0) return -1;
    if (!r) return fail(t, "count: no range");
    storage_value_t params[MAX_RANGE_PARAMS];
    int np;
    char *sql = range_sql(t, "SELECT COUNT(*)", r, 0, 0, params, &np);
    if (!sql) return -1;
    int64_t n = -1;
    if (run(t, keep_sql(t, sql), params, np, count_cb, &n) < 0) return -1;
    return n > 0x7fffffff ? 0x7fffffff : (int)n;
}

int store_count_upto(store_t *t, const store_range_t *r, int max)
{
    if (begin_op(t) < 0) return -1;
    if (!r) return fail(t, "count: no range");
    if (max < 1) return fail(t, "count: max %d is not positive", max);
    storage_value_t params[MAX_RANGE_PARAMS + 1];
    int np;
    char *inner = range_sql(t, "SELECT 1", r, 0, 0, params, &np);
    if (!inner) return -1;
    char *sql = xasprintf("SELECT COUNT(*) FROM (%s LIMIT ?)", inner);
    free(inner);
    params[np++] = STORE_VAL_INT(max);
    int64_t n = -1;
    if (run(t, keep_sql(t, sql), params, np, count_cb, &n) < 0) return -1;
    return (int)n;
}

int store_delete_range(store_t *t, const store_range_t *r)
{
    if (begin_op(t) < 0) return -1;
    if (!r) return fail(t, "delete range: no range");
    storage_value_t params[MAX_RANGE_PARAMS];
    int np;
    char *inner = range_sql(t, "SELECT rowid", r, 1, 0, params, &np);
    if (!inner) return -1;
    char *sql = xasprintf("DELETE FROM \"%s\" WHERE rowid IN (%s)", t->tbl, inner);
    free(inner);
    return run(t, keep_sql(t, sql), params, np, NULL, NULL);
}

int store_expire(store_t *t, const char *index, int64_t older_than, int limit)
{
    if (begin_op(t) < 0) return -1;
    const sindex_t *x = index ? find_index(t, index) : NULL;
    if (!index) return fail(t, "expire: no index given");
    if (!x) return -1;
    store_type_t ty = col_type(&t->decl->columns[x->col[0]]);
    if (ty != STORE_INT && ty != STORE_ID) return fail(t, "expire: index %s does not start with an INT column", index);
    storage_value_t before = STORE_VAL_INT(older_than);
    store_range_t r = {.index = index, .before = {&before, 1, 0}, .limit = limit};
    return store_delete_range(t, &r);
}

/* ---- transactions, caches, errors ---- */

int store_begin(store_t *t)
{
    return begin_op(t) < 0 ? -1 : storage_tx_begin(t->db);
}

int store_begin_lazy(store_t *t)
{
    return begin_op(t) < 0 ? -1 : storage_tx_begin_lazy(t->db);
}

int store_commit(store_t *t)
{
    return begin_op(t) < 0 ? -1 : storage_tx_commit(t->db);
}

int store_rollback(store_t *t)
{
    return begin_op(t) < 0 ? -1 : storage_tx_rollback(t->db);
}

int store_changed(store_t *t, storage_watch_t *w)
{
    return begin_op(t) < 0 ? -1 : storage_changed(t->db, w);
}

const char *store_error(store_t *t)
{
    if (!t) return "no table";
    return t->own_err ? t->err : storage_last_error(t->db);
}

const char *store_last_sql(store_t *t)
{
    return t && t->last ? t->last : "";
}
