/* tests/unit/test_store.c: TAP tests for module-scoped tables (store.h) on the SQLite driver:
 * declarations, typed rows, paging both ways, index use, migrations, account deletion, caches,
 * .parent tables (rows deleted with their parent row by a foreign key). */
#include "store.h"
#include "tap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---- */

static char *fresh_dir(void)
{
    const char *tmp = getenv("TMPDIR");
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s/civitas-store-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

static void rm_rf(const char *dir)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "# could not remove %s\n", dir);
}

static int int_cb(void *ud, const storage_value_t *cols, int ncols)
{
    if (ncols > 0) *(int64_t *)ud = cols[0].type == STORAGE_INT ? cols[0].i : -2;
    return 0;
}

/* One integer from SQL run on s (no parameters), -1 on error. */
static int64_t sql_int(storage_t *s, const char *sql)
{
    int64_t v = -1;
    if (storage_query(s, sql, NULL, 0, int_cb, &v) < 0) return -1;
    return v;
}

static int plan_cb(void *ud, const storage_value_t *cols, int ncols)
{
    char *out = ud;
    if (ncols >= 4 && cols[3].type == STORAGE_TEXT) {
        size_t l = strlen(out);
        snprintf(out + l, 1024 - l, "%s%s", l ? "; " : "", (const char *)cols[3].p);
    }
    return 0;
}

/* The query plan of the last statement run on t (parameters bound to NULL), into out[1024]. 0 when
 * it walks indexes only: no full scan of a table and no sort in a temporary b-tree. */
static int plan_uses_index(storage_t *s, store_t *t, char *out)
{
    const char *sql = store_last_sql(t);
    int n = 0;
    for (const char *p = sql; *p; p++) n += *p == '?';
    storage_value_t params[64];
    for (int i = 0; i < n && i < 64; i++) params[i] = STORE_VAL_NULL;
    char *q = malloc(strlen(sql) + 32);
    sprintf(q, "EXPLAIN QUERY PLAN %s", sql);
    out[0] = '\0';
    int r = storage_query(s, q, params, n, plan_cb, out);
    free(q);
    if (r <= 0) return -1;
    /* "SCAN t" alone is a table scan; "SCAN t USING [COVERING] INDEX" walks an index in order
     * (bounded by the LIMIT), which is what a range without prefix does. */
    for (const char *p = out; (p = strstr(p, "SCAN ")) != NULL; p += 5) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char part[256];
        snprintf(part, sizeof part, "%.*s", (int)len, p);
        if (strncmp(part, "SCAN (subquery", 14) == 0) continue;   /* store_count_upto's LIMIT'ed rows */
        if (!strstr(part, "USING") || strstr(part, "CONSTANT")) return -1;
    }
    return strstr(out, "TEMP B-TREE") ? -1 : 0;
}

/* ---- the declarations under test ---- */

/* An MAM-like archive: ids assigned by the store, paged per owner by time. */
static const store_column_t archive_cols[] = {
    {"id", STORE_ID}, {"owner", STORE_TEXT}, {"ts", STORE_INT}, {"body", STORE_BLOB}, {NULL}};
static const store_index_t archive_idx[] = {{"by_owner", "owner, ts"}, {"by_time", "ts"}, {NULL}};
static const store_table_t mam_tables[] = {
    {.name = "archive", .columns = archive_cols, .key = "id", .account = "owner", .indexes = archive_idx},
    {NULL}};
static const store_schema_t mam_schema = {.version = 1, .tables = mam_tables};

/* PubSub-like items: (owner, node, item) keyed, ordered by position within a node. */
static const store_column_t item_cols[] = {
    {"owner", STORE_TEXT}, {"node", STORE_TEXT}, {"item", STORE_TEXT}, {"pos", STORE_INT},
    {"payload", STORE_BLOB | STORE_OPTIONAL}, {NULL}};
static const store_index_t item_idx[] = {{"by_pos", "owner, node, pos"}, {NULL}};
static const store_table_t pep_tables[] = {
    {.name = "items", .columns = item_cols, .key = "owner, node, item", .account = "owner", .indexes = item_idx},
    {NULL}};
static const store_schema_t pep_schema = {.version = 1, .tables = pep_tables};

static int64_t put_archive(store_t *t, const char *owner, int64_t ts, const char *body)
{
    int64_t id = -1;
    storage_value_t row[] = {STORE_VAL_NULL, STORE_VAL_TEXT(owner), STORE_VAL_INT(ts),
                             STORE_VAL_BLOB(body, strlen(body))};
    return store_put(t, row, &id) == 0 ? id : -1;
}

static int put_item(store_t *t, const char *owner, const char *node, const char *item, int64_t pos, const char *payload)
{
    storage_value_t row[] = {STORE_VAL_TEXT(owner), STORE_VAL_TEXT(node), STORE_VAL_TEXT(item), STORE_VAL_INT(pos),
                             payload ? STORE_VAL_BLOB(payload, strlen(payload)) : STORE_VAL_NULL};
    return store_put(t, row, NULL);
}

static int count_pep_items(store_t *t, const char *owner, const char *node)
{
    storage_value_t pre[] = {STORE_VAL_TEXT(owner), STORE_VAL_TEXT(node)};
    store_range_t r = {.prefix = pre, .nprefix = 2};
    return store_count(t, &r);
}

/* ---- tests ---- */

static void test_declarations(storage_t *s)
{
    static const store_column_t c1[] = {{"jid", STORE_TEXT}, {"v", STORE_TEXT}, {NULL}};
    static const store_column_t dup[] = {{"jid", STORE_TEXT}, {"jid", STORE_TEXT}, {NULL}};
    static const store_column_t idc[] = {{"id", STORE_ID}, {"jid", STORE_TEXT}, {NULL}};
    static const store_index_t on_v[] = {{"by_v", "v"}, {NULL}};
    struct { const char *module, *what; store_table_t t; } bad[] = {
        {"bad", "a table name with an underscore", {.name = "a_b", .columns = c1, .key = "jid", .account = "jid"}},
        {"bad", "an upper-case table name", {.name = "Ab", .columns = c1, .key = "jid", .account = "jid"}},
        {"bad", "a key naming no column", {.name = "t", .columns = c1, .key = "nosuch", .account = "jid"}},
        {"bad", "no account column", {.name = "t", .columns = c1, .key = "jid"}},
        {"bad", "an account column leading neither key nor index",
         {.name = "t", .columns = c1, .key = "v", .account = "jid", .indexes = on_v}},
        {"bad", "a column declared twice", {.name = "t", .columns = dup, .key = "jid", .account = "jid"}},
        {"bad", "a STORE_ID that is not the whole key",
         {.name = "t", .columns = idc, .key = "jid, id", .account = "jid"}},
        {"module", "a name that is a core table (module_schema)",
         {.name = "schema", .columns = c1, .key = "jid", .account = "jid"}},
        {"Bad", "an invalid module name", {.name = "t", .columns = c1, .key = "jid", .account = "jid"}},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        store_table_t tables[] = {bad[i].t, {NULL}};
        store_schema_t sc = {.version = 1, .tables = tables};
        char *err = NULL;
        store_module_t *sm = store_module_open(s, bad[i].module, &sc, &err);
        ok(sm == NULL && err, "declaration refused: %s (%s)", bad[i].what, err ? err : "accepted");
        store_module_close(sm);
        free(err);
    }
    ok(sql_int(s, "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'bad%'") == 0,
       "a refused declaration creates nothing");
}

static void test_rows(storage_t *s, store_t *items)
{
    ok(put_item(items, "alice@localhost", "urn:xmpp:avatar:data", "a1", 1, "<data/>") == 0
       && put_item(items, "alice@localhost", "urn:xmpp:avatar:data", "a2", 2, NULL) == 0,
       "store_put: rows inserted (an optional column NULL)");
    storage_value_t key[] = {STORE_VAL_TEXT("alice@localhost"), STORE_VAL_TEXT("urn:xmpp:avatar:data"),
                             STORE_VAL_TEXT("a1")};
    store_row_t *row = NULL;
    int r = store_get(items, key, &row);
    ok(r == 0 && row && row->ncols == 5 && row->col[3].type == STORAGE_INT && row->col[3].i == 1
       && row->col[4].type == STORAGE_BLOB && row->col[4].len == 7 && strcmp(row->col[4].p, "<data/>") == 0
       && strcmp(row->col[0].p, "alice@localhost") == 0,
       "store_get: the row by key, typed, blob NUL-terminated");
    store_row_free(row);
    char plan[1024];
    ok(plan_uses_index(s, items, plan) == 0, "store_get walks the key index (%s)", plan);
    ok(put_item(items, "alice@localhost", "urn:xmpp:avatar:data", "a1", 5, "<new/>") == 0
       && store_get(items, key, &row) == 0 && row->col[3].i == 5 && strcmp(row->col[4].p, "<new/>") == 0
       && count_pep_items(items, "alice@localhost", "urn:xmpp:avatar:data") == 2,
       "store_put with an existing key replaces the row");
    store_row_free(row);
    ok(plan_uses_index(s, items, plan) == 0, "store_count on a key prefix walks the index (%s)", plan);
    storage_value_t key2[] = {STORE_VAL_TEXT("alice@localhost"), STORE_VAL_TEXT("urn:xmpp:avatar:data"),
                              STORE_VAL_TEXT("a2")};
    ok(store_get(items, key2, &row) == 0 && row->col[4].type == STORAGE_NULL, "a NULL optional column reads as NULL");
    store_row_free(row);
    ok(store_delete(items, key2) == 1 && store_get(items, key2, &row) == 1 && row == NULL
       && store_delete(items, key2) == 0,
       "store_delete: 1 row deleted, then get says none (1), a second delete deletes 0");

    /* typed checks */
    storage_value_t wrong[] = {STORE_VAL_TEXT("alice@localhost"), STORE_VAL_TEXT("n"), STORE_VAL_TEXT("i"),
                               STORE_VAL_TEXT("not a number"), STORE_VAL_NULL};
    ok(store_put(items, wrong, NULL) == -1 && strstr(store_error(items), "pos"),
       "store_put: a TEXT value for an INT column is -1 (%s)", store_error(items));
    storage_value_t nul[] = {STORE_VAL_TEXT("alice@localhost"), STORE_VAL_NULL, STORE_VAL_TEXT("i"),
                             STORE_VAL_INT(1), STORE_VAL_NULL};
    ok(store_put(items, nul, NULL) == -1 && strstr(store_error(items), "node"),
       "store_put: NULL for a required column is -1 (%s)", store_error(items));
    storage_value_t badkey[] = {STORE_VAL_TEXT("alice@localhost"), STORE_VAL_INT(3), STORE_VAL_TEXT("a1")};
    ok(store_get(items, badkey, &row) == -1 && row == NULL, "store_get: a key of the wrong type is -1");
    ok(count_pep_items(items, "alice@localhost", "n") == 0, "refused puts stored nothing");
}

/* Rows of alice at ts 100..109 (ids in the same order), bob's in between. */
static void test_paging(storage_t *s, store_t *arch)
{
    int64_t ids[10];
    int okp = 1;
    for (int i = 0; i < 10; i++) {
        char body[32];
        snprintf(body, sizeof body, "m%d", i);
        ids[i] = put_archive(arch, "alice@localhost", 100 + i, body);
        okp = okp && ids[i] > 0 && (i == 0 || ids[i] > ids[i - 1]);
        okp = okp && put_archive(arch, "bob@localhost", 100 + i, "b") > 0;
    }
    ok(okp, "store_put on a STORE_ID table assigns increasing ids");
    storage_value_t owner = STORE_VAL_TEXT("alice@localhost");
    store_range_t r = {.index = "by_owner", .prefix = &owner, .nprefix = 1, .limit = 4};
    store_page_t pg;
    char plan[1024];
    /* oldest first, pages of 4: 0-3, 4-7, 8-9 */
    int got[10], n = 0, pages = 0, order_ok = 1;
    storage_value_t pos[2];
    for (;;) {
        if (store_range(arch, &r, &pg) < 0) break;
        pages++;
        for (int i = 0; i < pg.n; i++) got[n++ < 10 ? n - 1 : 9] = (int)pg.rows[i]->col[0].i;
        if (pages == 1) ok(plan_uses_index(s, arch, plan) == 0, "range, oldest first: walks the index (%s)", plan);
        if (pages == 2) ok(plan_uses_index(s, arch, plan) == 0, "range after a position: walks the index (%s)", plan);
        int more = pg.more;
        if (pg.n) {
            pos[0] = STORE_VAL_INT(pg.rows[pg.n - 1]->col[2].i);
            pos[1] = STORE_VAL_INT(pg.rows[pg.n - 1]->col[0].i);
        }
        order_ok = order_ok && (pages < 3 ? pg.n == 4 && more : pg.n == 2 && !more);
        store_page_free(&pg);
        if (!more || pages > 5) break;
        r.after = (store_bound_t){pos, 2, 0};
    }
    int all = n == 10;
    for (int i = 0; all && i < 10; i++) all = got[i] == ids[i];
    ok(pages == 3 && order_ok && all,
       "paging oldest first, limit 4: pages of 4, 4, 2; more is 1, 1, 0; every row once in order");

    /* newest first, before a position */
    r = (store_range_t){.index = "by_owner", .prefix = &owner, .nprefix = 1, .reverse = 1, .limit = 3};
    storage_value_t before[] = {STORE_VAL_INT(105), STORE_VAL_INT(ids[5])};
    r.before = (store_bound_t){before, 2, 0};
    ok(store_range(arch, &r, &pg) == 0 && pg.n == 3 && pg.more && pg.rows[0]->col[0].i == ids[4]
       && pg.rows[2]->col[0].i == ids[2],
       "newest first before (ts 105, id): rows 4, 3, 2 and more");
    store_page_free(&pg);
    ok(plan_uses_index(s, arch, plan) == 0, "range, newest first, before a position: walks the index (%s)", plan);
    r.before.v = NULL;
    r.limit = 10;
    ok(store_range(arch, &r, &pg) == 0 && pg.n == 10 && !pg.more && pg.rows[0]->col[0].i == ids[9]
       && pg.rows[9]->col[0].i == ids[0], "newest first, a limit of exactly all rows: 10 rows, no more");
    store_page_free(&pg);
    r.limit = 11;
    ok(store_range(arch, &r, &pg) == 0 && pg.n == 10 && !pg.more, "a limit above the rows: all of them, no more");
    store_page_free(&pg);

    /* time bounds, inclusive and not; counts */
    storage_value_t t3 = STORE_VAL_INT(103), t6 = STORE_VAL_INT(106);
    r = (store_range_t){.index = "by_owner", .prefix = &owner, .nprefix = 1, .limit = 100,
                        .after = {&t3, 1, 1}, .before = {&t6, 1, 1}};
    ok(store_range(arch, &r, &pg) == 0 && pg.n == 4 && pg.rows[0]->col[2].i == 103 && pg.rows[3]->col[2].i == 106
       && store_count(arch, &r) == 4, "inclusive time bounds 103..106: 4 rows, counted 4");
    store_page_free(&pg);
    ok(plan_uses_index(s, arch, plan) == 0, "store_count with bounds walks the index (%s)", plan);
    r.after.inclusive = r.before.inclusive = 0;
    ok(store_count(arch, &r) == 2, "exclusive time bounds 103..106: 2 rows");
    store_range_t whole = {.index = "by_owner", .prefix = &owner, .nprefix = 1};
    ok(store_count(arch, &whole) == 10, "store_count of the prefix: alice's 10 rows (bob's not)");
    ok(store_count_upto(arch, &whole, 4) == 4 && store_count_upto(arch, &whole, 10) == 10
       && store_count_upto(arch, &whole, 50) == 10 && store_count_upto(arch, &whole, 0) == -1,
       "store_count_upto: min(rows, max); max 0 is -1");
    ok(plan_uses_index(s, arch, plan) == 0, "store_count_upto walks the index (%s)", plan);
    storage_value_t p7[] = {STORE_VAL_INT(107), STORE_VAL_INT(ids[7])};
    whole.before = (store_bound_t){p7, 2, 0};
    ok(store_count(arch, &whole) == 7, "store_count before a row: its offset (RSM first index)");

    /* several rows at the same time (messages within one second): positions still name one row */
    storage_value_t gina = STORE_VAL_TEXT("gina@localhost");
    int64_t same[5];
    for (int i = 0; i < 5; i++) same[i] = put_archive(arch, "gina@localhost", 500, "same second");
    for (int rev = 0; rev < 2; rev++) {
        int seen = 0, dup_or_order = 0, guard = 0;
        int64_t prev = rev ? INT64_MAX : 0;
        r = (store_range_t){.index = "by_owner", .prefix = &gina, .nprefix = 1, .reverse = rev, .limit = 2};
        do {
            if (store_range(arch, &r, &pg) < 0) break;
            for (int i = 0; i < pg.n; i++) {
                int64_t id = pg.rows[i]->col[0].i;
                if (rev ? id >= prev : id <= prev) dup_or_order = 1;
                prev = id;
                seen++;
            }
            if (pg.n) {
                pos[0] = STORE_VAL_INT(500);
                pos[1] = STORE_VAL_INT(prev);
            }
            if (rev) r.before = (store_bound_t){pos, 2, 0};
            else r.after = (store_bound_t){pos, 2, 0};
            int more = pg.more;
            store_page_free(&pg);
            if (!more) break;
        } while (++guard < 10);
        ok(seen == 5 && !dup_or_order && prev == (rev ? same[0] : same[4]),
           "five rows with the same time, pages of 2 %s: each row once, in id order",
           rev ? "newest first" : "oldest first");
    }

    /* argument errors */
    r = (store_range_t){.index = "by_owner", .prefix = &owner, .nprefix = 1, .limit = 0};
    ok(store_range(arch, &r, &pg) == -1 && pg.n == 0, "a limit of 0 is -1 (%s)", store_error(arch));
    r.limit = STORE_MAX_LIMIT + 1;
    ok(store_range(arch, &r, &pg) == -1, "a limit above STORE_MAX_LIMIT is -1");
    r.limit = 5;
    r.index = "nosuch";
    ok(store_range(arch, &r, &pg) == -1 && strstr(store_error(arch), "nosuch"), "an unknown index is -1");
    storage_value_t three[] = {STORE_VAL_INT(1), STORE_VAL_INT(2), STORE_VAL_INT(3)};
    r.index = "by_owner";
    r.after = (store_bound_t){three, 3, 0};
    ok(store_range(arch, &r, &pg) == -1, "a bound with more values than the index has after the prefix is -1");
    storage_value_t wrong = STORE_VAL_INT(5);
    r = (store_range_t){.index = "by_owner", .prefix = &wrong, .nprefix = 1, .limit = 5};
    ok(store_range(arch, &r, &pg) == -1, "a prefix of the wrong type is -1");
}

static void test_expire(storage_t *s, store_t *arch)
{
    for (int i = 0; i < 25; i++) put_archive(arch, "carol@localhost", i, "old");
    storage_value_t owner = STORE_VAL_TEXT("carol@localhost");
    store_range_t all = {.index = "by_owner", .prefix = &owner, .nprefix = 1};
    int a = store_expire(arch, "by_time", 20, 8);
    char plan[1024];
    int planned = plan_uses_index(s, arch, plan);
    int b = store_expire(arch, "by_time", 20, 8), c = store_expire(arch, "by_time", 20, 8),
        d = store_expire(arch, "by_time", 20, 8);
    ok(a == 8 && b == 8 && c == 4 && d == 0 && store_count(arch, &all) == 5,
       "store_expire in batches of 8: 8, 8, 4, then 0; the 5 rows at ts >= 20 stay (%d %d %d %d)", a, b, c, d);
    ok(planned == 0, "store_expire walks the time index (%s)", plan);
    ok(store_expire(arch, "by_owner", 20, 8) == -1, "store_expire on an index not led by an INT column is -1");
    storage_value_t alice = STORE_VAL_TEXT("alice@localhost");
    ok(store_count(arch, &(store_range_t){.index = "by_owner", .prefix = &alice, .nprefix = 1}) == 10,
       "rows newer than the limit (alice's at 100..109) are untouched");
}

static void test_transactions(const char *dir, storage_t *s, store_t *items)
{
    storage_t *other = storage_open(dir, NULL);
    ok(store_begin(items) == 0 && put_item(items, "tx@localhost", "n", "one", 1, "x") == 0
       && count_pep_items(items, "tx@localhost", "n") == 1,
       "inside a transaction the writes are visible to their writer");
    ok(storage_tx_depth(s) == 1 && store_begin(items) == 0 && put_item(items, "tx@localhost", "n", "two", 2, "x") == 0
       && storage_tx_depth(s) == 2 && store_rollback(items) == 0,
       "a nested store_begin counts a level; its rollback ends that level");
    ok(count_pep_items(items, "tx@localhost", "n") == 1, "the inner rollback undid only the inner write");
    ok(store_begin(items) == 0 && put_item(items, "tx@localhost", "n", "three", 3, "x") == 0
       && store_commit(items) == 0 && storage_tx_depth(s) == 1,
       "an inner commit ends its level and keeps its write in the outer transaction");
    ok(store_put(items, (storage_value_t[]){STORE_VAL_INT(1), STORE_VAL_NULL, STORE_VAL_NULL, STORE_VAL_NULL,
                                            STORE_VAL_NULL}, NULL) == -1
       && storage_tx_depth(s) == 1, "a refused write inside the transaction leaves it open");
    static const store_column_t c[] = {{"jid", STORE_TEXT}, {NULL}};
    static const store_table_t t[] = {{.name = "t", .columns = c, .key = "jid", .account = "jid"}, {NULL}};
    char *err = NULL;
    store_module_t *sm = store_module_open(s, "intx", &(store_schema_t){.version = 1, .tables = t}, &err);
    ok(sm == NULL, "tables cannot be created or migrated inside a transaction (%s)", err ? err : "");
    free(err);
    store_module_close(sm);
    store_t *o_items = NULL;
    store_module_t *osm = other ? store_module_open(other, "pep", &pep_schema, NULL) : NULL;
    o_items = store_module_table(osm, "items");
    ok(o_items && count_pep_items(o_items, "tx@localhost", "n") == 0,
       "another connection does not see the open transaction's writes");
    ok(store_commit(items) == 0 && storage_tx_depth(s) == 0 && count_pep_items(o_items, "tx@localhost", "n") == 2,
       "the outermost commit makes them visible everywhere (two rows)");
    ok(store_commit(items) == -1 && store_rollback(items) == -1, "commit or rollback without a transaction is -1");
    ok(store_begin(items) == 0 && put_item(items, "tx@localhost", "n", "four", 4, "x") == 0
       && store_rollback(items) == 0 && count_pep_items(items, "tx@localhost", "n") == 2,
       "an outermost rollback undoes everything since store_begin");
    ok(storage_begin(s) == 0 && store_begin(items) == 0 && put_item(items, "tx@localhost", "n", "five", 5, "x") == 0
       && store_commit(items) == 0 && storage_rollback(s) == 0 && count_pep_items(items, "tx@localhost", "n") == 2,
       "inside a core batch (storage_begin) a store transaction is a savepoint of the batch");
    store_module_close(osm);
    storage_close(other);
}

/* store_range's match: a filter on a column outside the index, in pages, counts and deletes. */
static void test_match(store_t *arch)
{
    int okp = 1;
    for (int i = 0; i < 6; i++) okp = okp && put_archive(arch, "match@localhost", 500 + i, i % 2 ? "odd" : "even") > 0;
    storage_value_t owner = STORE_VAL_TEXT("match@localhost"), odd = STORE_VAL_BLOB("odd", 3);
    store_range_t r = {.index = "by_owner", .prefix = &owner, .nprefix = 1, .limit = 2, .match = "body",
                       .match_value = &odd};
    store_page_t pg = {0};
    ok(okp && store_range(arch, &r, &pg) == 0 && pg.n == 2 && pg.more && pg.rows[0]->col[2].i == 501
       && pg.rows[1]->col[2].i == 503, "match keeps only the rows whose column equals the value, in index order");
    store_page_free(&pg);
    ok(store_count(arch, &r) == 3 && store_count_upto(arch, &r, 2) == 2, "counts honour match");
    r.match = "nosuch";
    ok(store_range(arch, &r, &pg) == -1 && pg.n == 0, "match naming no column is -1");
    r.match = "ts";
    ok(store_range(arch, &r, &pg) == -1, "a match value of the wrong type is -1");
    r.match = "body";
    r.limit = 10;
    ok(store_delete_range(arch, &r) == 3 && store_count(arch, &(store_range_t){.index = "by_owner", .prefix = &owner,
                                                                              .nprefix = 1}) == 3,
       "delete_range honours match");
}


/* store_begin_lazy: inside its transaction the connection is at synchronous = NORMAL (1); what it
 * commits is visible to another connection; after COMMIT or ROLLBACK the connection is at FULL (2)
 * again for every other commit; nested, it is store_begin. */
static void test_begin_lazy(const char *dir, storage_t *s, store_t *items)
{
    storage_t *other = storage_open(dir, NULL);
    store_module_t *osm = other ? store_module_open(other, "pep", &pep_schema, NULL) : NULL;
    store_t *o_items = store_module_table(osm, "items");
    ok(sql_int(s, "PRAGMA synchronous") == 2, "the connection commits with synchronous = FULL");
    ok(store_begin_lazy(items) == 0 && sql_int(s, "PRAGMA synchronous") == 1, "store_begin_lazy: NORMAL inside");
    ok(put_item(items, "lazy@localhost", "n", "one", 1, "x") == 0 && store_commit(items) == 0
       && storage_tx_depth(s) == 0 && o_items && count_pep_items(o_items, "lazy@localhost", "n") == 1,
       "a lazy transaction commits: another connection sees the row");
    ok(sql_int(s, "PRAGMA synchronous") == 2, "after its commit the connection is at FULL again");
    ok(store_begin_lazy(items) == 0 && put_item(items, "lazy@localhost", "n", "two", 2, "x") == 0
       && store_rollback(items) == 0 && count_pep_items(items, "lazy@localhost", "n") == 1
       && sql_int(s, "PRAGMA synchronous") == 2, "a rolled back lazy transaction: nothing kept, FULL again");
    ok(store_begin(items) == 0 && store_begin_lazy(items) == 0 && storage_tx_depth(s) == 2
       && sql_int(s, "PRAGMA synchronous") == 2 && put_item(items, "lazy@localhost", "n", "three", 3, "x") == 0
       && store_commit(items) == 0 && store_commit(items) == 0 && count_pep_items(items, "lazy@localhost", "n") == 2
       && sql_int(s, "PRAGMA synchronous") == 2, "nested in a transaction store_begin_lazy is store_begin (FULL)");
    store_module_close(osm);
    storage_close(other);
}

static void test_changed(const char *dir, storage_t *s, store_t *items)
{
    storage_watch_t w = {0};
    ok(store_changed(items, &w) == 1, "store_changed: the first look says changed (nothing cached yet)");
    ok(store_changed(items, &w) == 0, "then unchanged");
    put_item(items, "watch@localhost", "n", "i", 1, NULL);
    ok(store_changed(items, &w) == 0, "the storage's own write does not count");
    storage_t *other = storage_open(dir, NULL);
    ok(other && storage_kv_set(other, "x", "u", "d", "k", "v", 1) == 0 && store_changed(items, &w) == 1,
       "a commit by another connection (civitasctl) is seen");
    ok(store_changed(items, &w) == 0, "and only once");
    storage_watch_t w2 = {0};
    ok(store_changed(items, &w2) == 1, "each watch keeps its own view");
    storage_close(other);
}

static int count_rows(storage_t *s, const char *table, const char *owner)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s WHERE owner = '%s'", table, owner);
    return (int)sql_int(s, sql);
}

static void test_account_delete(const char *dir, storage_t *s, store_t *arch, store_t *items)
{
    put_item(items, "dave@localhost", "n", "i1", 1, NULL);
    put_item(items, "dave@localhost", "m", "i2", 1, NULL);
    put_item(items, "erin@localhost", "n", "i1", 1, NULL);
    put_archive(arch, "dave@localhost", 1, "x");
    put_archive(arch, "erin@localhost", 1, "x");
    /* like civitasctl: another process that has not opened the modules' tables */
    storage_t *ctl = storage_open(dir, NULL);
    int r = ctl ? storage_account_delete(ctl, "dave", "localhost") : -2;
    ok(r == 1 && count_rows(s, "pep_items", "dave@localhost") == 0
       && count_rows(s, "mam_archive", "dave@localhost") == 0,
       "storage_account_delete in a process that never opened the modules empties both modules' tables");
    ok(count_rows(s, "pep_items", "erin@localhost") == 1 && count_rows(s, "mam_archive", "erin@localhost") == 1,
       "other accounts' rows stay");
    storage_close(ctl);
    ok(store_delete_account(items, "erin@localhost") == 1 && count_rows(s, "pep_items", "erin@localhost") == 0,
       "store_delete_account: one table, rows deleted counted");
    char plan[1024];
    ok(plan_uses_index(s, items, plan) == 0, "store_delete_account walks the index its account column leads (%s)",
       plan);
}

/* ---- .parent tables: rows owned by a row of another table, deleted by a foreign key's cascade ---- */

/* Account rows keyed by a small integer, and rows of those ids: the MAM archive's layout (owners,
 * archive). */
static const store_column_t owner_cols[] = {{"id", STORE_ID}, {"owner", STORE_TEXT}, {"host", STORE_TEXT}, {NULL}};
static const store_index_t owner_idx[] = {{"by_owner", "owner"}, {NULL}};
static const store_column_t kid_cols[] = {{"oid", STORE_INT}, {"k", STORE_TEXT}, {"v", STORE_TEXT}, {NULL}};
static const store_table_t fam_tables[] = {
    {.name = "owners", .columns = owner_cols, .key = "id", .account = "owner", .indexes = owner_idx},
    {.name = "kids", .columns = kid_cols, .key = "oid, k", .parent = "owners", .parent_column = "oid"},
    {NULL}};
static const store_schema_t fam_schema = {.version = 1, .tables = fam_tables};

/* Run statements one by one (storage_query takes one); 0, or -1 at the first failure. */
static int sql_run(storage_t *s, const char *const *stmts)
{
    for (; *stmts; stmts++)
        if (storage_query(s, *stmts, NULL, 0, NULL, NULL) < 0) return -1;
    return 0;
}

static int64_t put_owner(store_t *t, const char *owner, const char *host)
{
    int64_t id = -1;
    storage_value_t row[] = {STORE_VAL_NULL, STORE_VAL_TEXT(owner), STORE_VAL_TEXT(host)};
    return store_put(t, row, &id) == 0 ? id : -1;
}

static int put_kid(store_t *t, int64_t oid, const char *k)
{
    storage_value_t row[] = {STORE_VAL_INT(oid), STORE_VAL_TEXT(k), STORE_VAL_TEXT("v")};
    return store_put(t, row, NULL);
}

/* Rows of table tbl whose oid is one of oids[n] (ids of owners rows, which may be gone since). */
static int count_kids(storage_t *s, const char *tbl, const int64_t *oids, int n)
{
    char sql[512];
    int len = snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s WHERE oid IN (-1", tbl);
    for (int i = 0; i < n; i++) len += snprintf(sql + len, sizeof sql - (size_t)len, ", %lld", (long long)oids[i]);
    snprintf(sql + len, sizeof sql - (size_t)len, ")");
    return (int)sql_int(s, sql);
}

static void test_parent(const char *dir, storage_t *s)
{
    /* a row a former version left (kids had an account column): creating the tables drops it */
    const char *const stale[] = {"INSERT INTO user_tables (tbl, user_col, domain_col) VALUES ('fam_kids', 'owner', '')",
                                 NULL};
    ok(sql_run(s, stale) == 0, "a stale user_tables row for fam_kids");
    char *err = NULL;
    store_module_t *sm = store_module_open(s, "fam", &fam_schema, &err);
    store_t *owners = store_module_table(sm, "owners"), *kids = store_module_table(sm, "kids");
    ok(owners && kids, "a .parent declaration opens (%s)", err ? err : "");
    free(err);
    if (!owners || !kids) return;
    ok(sql_int(s, "SELECT COUNT(*) FROM pragma_foreign_key_list('fam_kids') WHERE \"from\" = 'oid'"
                  " AND \"table\" = 'fam_owners' AND \"to\" = 'id' AND on_delete = 'CASCADE'") == 1
       && sql_int(s, "SELECT COUNT(*) FROM pragma_foreign_key_list('fam_kids')") == 1,
       "the child's CREATE has FOREIGN KEY (oid) REFERENCES fam_owners (id) ON DELETE CASCADE");
    ok(sql_int(s, "SELECT COUNT(*) FROM pragma_foreign_key_list('fam_owners')") == 0,
       "the parent has no foreign key");
    ok(sql_int(s, "SELECT COUNT(*) FROM user_tables WHERE tbl = 'fam_owners' AND user_col = 'owner'") == 1
       && sql_int(s, "SELECT COUNT(*) FROM user_tables WHERE tbl = 'fam_kids'") == 0,
       "the parent is registered for account deletion, the child is not (its stale row deleted)");

    /* dave has two owners rows (one per host), erin one */
    int64_t dave[2] = {put_owner(owners, "dave@localhost", "localhost"), put_owner(owners, "dave@localhost", "other")};
    int64_t erin[1] = {put_owner(owners, "erin@localhost", "localhost")};
    int okp = dave[0] > 0 && dave[1] > 0 && erin[0] > 0;
    okp = okp && put_kid(kids, dave[0], "a") == 0 && put_kid(kids, dave[0], "b") == 0
          && put_kid(kids, dave[1], "a") == 0;
    okp = okp && put_kid(kids, erin[0], "a") == 0 && put_kid(kids, erin[0], "b") == 0;
    ok(okp && count_kids(s, "fam_kids", dave, 2) == 3 && count_kids(s, "fam_kids", erin, 1) == 2,
       "child rows written under existing parent rows");

    int64_t none = erin[0] + 1000;
    ok(put_kid(kids, none, "x") == -1 && count_kids(s, "fam_kids", &none, 1) == 0,
       "a child row whose parent id does not exist cannot be written: -1 (%s)", store_error(kids));

    /* store_put on an existing parent id updates it in place: its children stay */
    storage_value_t again[] = {STORE_VAL_INT(erin[0]), STORE_VAL_TEXT("erin@localhost"), STORE_VAL_TEXT("renamed")};
    ok(store_put(owners, again, NULL) == 0 && count_kids(s, "fam_kids", erin, 1) == 2,
       "replacing a parent row by store_put keeps its child rows");

    /* store_delete_account on the child: the rows of that account's parent rows only */
    ok(store_delete_account(kids, "dave@localhost") == 3 && count_kids(s, "fam_kids", dave, 2) == 0
       && count_kids(s, "fam_kids", erin, 1) == 2
       && sql_int(s, "SELECT COUNT(*) FROM fam_owners WHERE owner = 'dave@localhost'") == 2,
       "store_delete_account on the child deletes that account's child rows (3), not others', not the parents");
    char plan[1024];
    ok(plan_uses_index(s, kids, plan) == 0, "store_delete_account on the child walks indexes (%s)", plan);
    ok(store_delete_account(kids, "nobody@localhost") == 0, "store_delete_account of an account without rows: 0");

    /* store_delete of a parent row takes its children along */
    int64_t gone[1] = {put_owner(owners, "gone@localhost", "localhost")};
    ok(gone[0] > 0 && put_kid(kids, gone[0], "a") == 0 && put_kid(kids, gone[0], "b") == 0
       && store_delete(owners, (storage_value_t[]){STORE_VAL_INT(gone[0])}) == 1
       && count_kids(s, "fam_kids", gone, 1) == 0, "deleting a parent row deletes its child rows");

    /* deleting the account, as civitasctl user del does: in a process that never opened the module */
    okp = put_kid(kids, dave[0], "a") == 0 && put_kid(kids, dave[1], "b") == 0
          && count_kids(s, "fam_kids", dave, 2) == 2;
    storage_t *ctl = storage_open(dir, NULL);
    int r = ctl ? storage_account_delete(ctl, "dave", "localhost") : -2;
    ok(okp && r == 1 && sql_int(s, "SELECT COUNT(*) FROM fam_owners WHERE owner = 'dave@localhost'") == 0
       && count_kids(s, "fam_kids", dave, 2) == 0,
       "storage_account_delete deletes the account's parent rows and every child row of them");
    ok(sql_int(s, "SELECT COUNT(*) FROM fam_owners WHERE owner = 'erin@localhost'") == 1
       && count_kids(s, "fam_kids", erin, 1) == 2, "other accounts' parent and child rows stay");

    /* at the next start the tables (the foreign key included) pass the check */
    err = NULL;
    store_module_t *again_sm = ctl ? store_module_open(ctl, "fam", &fam_schema, &err) : NULL;
    ok(again_sm != NULL, "opening the module again (the foreign key checked) works (%s)", err ? err : "");
    free(err);
    store_module_close(again_sm);
    storage_close(ctl);
    store_module_close(sm);
}

/* Declarations of .parent tables that store.h forbids: refused with a message, nothing created. */
static void test_parent_declarations(storage_t *s)
{
    static const store_column_t kid_text[] = {{"oid", STORE_TEXT}, {"k", STORE_TEXT}, {NULL}};
    static const store_column_t kid_opt[] = {{"oid", STORE_INT | STORE_OPTIONAL}, {"k", STORE_TEXT}, {NULL}};
    static const store_column_t kid_acc[] = {{"oid", STORE_INT}, {"jid", STORE_TEXT}, {NULL}};
    static const store_column_t kid_id[] = {{"id", STORE_ID}, {"oid", STORE_INT}, {NULL}};
    static const store_index_t kid_by_oid[] = {{"by_oid", "oid"}, {NULL}};
    static const store_column_t plain_cols[] = {{"owner", STORE_TEXT}, {"n", STORE_INT}, {NULL}};
    static const store_column_t mid_cols[] = {{"id", STORE_ID}, {"oid", STORE_INT}, {NULL}};
    const store_table_t owners = {.name = "owners", .columns = owner_cols, .key = "id", .account = "owner",
                                  .indexes = owner_idx};
    const store_table_t kids = {.name = "kids", .columns = kid_cols, .key = "oid, k", .parent = "owners",
                                .parent_column = "oid"};
    struct { const char *what, *msg; store_table_t t[4]; } bad[] = {
        {"a parent declared after its child", "declared before",
         {kids, owners}},
        {"a parent naming no table", "declared before",
         {owners, {.name = "kids", .columns = kid_cols, .key = "oid, k", .parent = "nosuch", .parent_column = "oid"}}},
        {"a table its own parent", "declared before",
         {{.name = "kids", .columns = mid_cols, .key = "id", .parent = "kids", .parent_column = "oid",
           .indexes = kid_by_oid}}},
        {"a parent without a STORE_ID key", "STORE_ID key and an account",
         {{.name = "owners", .columns = plain_cols, .key = "owner, n", .account = "owner"},
          {.name = "kids", .columns = kid_cols, .key = "oid, k", .parent = "owners", .parent_column = "oid"}}},
        {"a parent without an account column (itself a .parent table)", "STORE_ID key and an account",
         {owners,
          {.name = "mid", .columns = mid_cols, .key = "id", .parent = "owners", .parent_column = "oid",
           .indexes = kid_by_oid},
          {.name = "kids", .columns = kid_cols, .key = "oid, k", .parent = "mid", .parent_column = "oid"}}},
        {"both .account and .parent", "not both",
         {owners, {.name = "kids", .columns = kid_acc, .key = "oid, jid", .account = "jid", .parent = "owners",
                   .parent_column = "oid"}}},
        {"a parent_column of type TEXT", "INT column",
         {owners, {.name = "kids", .columns = kid_text, .key = "oid, k", .parent = "owners", .parent_column = "oid"}}},
        {"an optional parent_column", "INT column",
         {owners, {.name = "kids", .columns = kid_opt, .key = "k", .parent = "owners", .parent_column = "oid",
                   .indexes = kid_by_oid}}},
        {"a parent_column that is a STORE_ID", "INT column",
         {owners, {.name = "kids", .columns = kid_id, .key = "id", .parent = "owners", .parent_column = "id"}}},
        {"a parent_column naming no column", "INT column",
         {owners, {.name = "kids", .columns = kid_cols, .key = "oid, k", .parent = "owners", .parent_column = "x"}}},
        {".parent without .parent_column", "go together",
         {owners, {.name = "kids", .columns = kid_cols, .key = "oid, k", .parent = "owners"}}},
        {".parent_column without .parent", "go together",
         {owners, {.name = "kids", .columns = kid_cols, .key = "oid, k", .parent_column = "oid"}}},
        {"a parent_column leading neither key nor index", "parent column must lead",
         {owners, {.name = "kids", .columns = kid_cols, .key = "k, oid", .parent = "owners", .parent_column = "oid"}}},
        {"a parent_column in an index, not first", "parent column must lead",
         {owners, {.name = "kids", .columns = kid_id, .key = "id", .parent = "owners", .parent_column = "oid",
                   .indexes = (const store_index_t[]){{"by_id_oid", "id, oid"}, {NULL}}}}},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        store_schema_t sc = {.version = 1, .tables = bad[i].t};
        char *err = NULL;
        store_module_t *sm = store_module_open(s, "badp", &sc, &err);
        ok(sm == NULL && err && strstr(err, bad[i].msg), "declaration refused: %s (%s)", bad[i].what,
           err ? err : "accepted");
        store_module_close(sm);
        free(err);
    }
    ok(sql_int(s, "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'badp%'") == 0
       && sql_int(s, "SELECT COUNT(*) FROM module_schema WHERE module = 'badp'") == 0,
       "a refused .parent declaration creates nothing");
    /* the accepted forms, for contrast: parent_column leading an index rather than the key */
    store_table_t good[] = {owners, {.name = "kids", .columns = kid_id, .key = "id", .parent = "owners",
                                     .parent_column = "oid", .indexes = kid_by_oid}, {NULL}};
    char *err = NULL;
    store_module_t *sm = store_module_open(s, "goodp", &(store_schema_t){.version = 1, .tables = good}, &err);
    ok(sm != NULL, "a parent_column leading an index (the key a STORE_ID) is accepted (%s)", err ? err : "");
    free(err);
    store_module_close(sm);
}

/* A database whose child table lacks the foreign key (or has another one) at the declared version:
 * refused at open. The same tables made by hand with the core's foreign key open, so the refusal
 * is the foreign key's. */
static void test_parent_verify(storage_t *s)
{
    const char *fmt[] = {
        "CREATE TABLE %s_owners (id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL, host TEXT NOT NULL)",
        "CREATE INDEX %s_owners__by_owner ON %s_owners (owner, id)",
        "CREATE TABLE %s_kids (oid INTEGER NOT NULL, k TEXT NOT NULL, v TEXT NOT NULL, PRIMARY KEY (oid, k)%s)",
        "INSERT INTO module_schema (module, version) VALUES ('%s', 1)",
        "INSERT INTO user_tables (tbl, user_col, domain_col) VALUES ('%s_owners', 'owner', '')",
    };
    struct { const char *module, *fk, *what; int opens; } cases[] = {
        {"fkok", ", FOREIGN KEY (oid) REFERENCES fkok_owners (id) ON DELETE CASCADE",
         "a hand-made child table with the foreign key opens", 1},
        {"fknone", "", "a child table without the foreign key is refused at open", 0},
        {"fknocasc", ", FOREIGN KEY (oid) REFERENCES fknocasc_owners (id)",
         "a foreign key without ON DELETE CASCADE is refused at open", 0},
        {"fkother", ", FOREIGN KEY (oid) REFERENCES fkother_owners (id) ON DELETE SET NULL",
         "a foreign key with another ON DELETE action is refused at open", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *m = cases[i].module;
        char q[5][512];
        snprintf(q[0], sizeof q[0], fmt[0], m);
        snprintf(q[1], sizeof q[1], fmt[1], m, m);
        snprintf(q[2], sizeof q[2], fmt[2], m, cases[i].fk);
        snprintf(q[3], sizeof q[3], fmt[3], m);
        snprintf(q[4], sizeof q[4], fmt[4], m);
        const char *const stmts[] = {q[0], q[1], q[2], q[3], q[4], NULL};
        char *err = NULL;
        int made = sql_run(s, stmts);
        store_module_t *sm = made == 0 ? store_module_open(s, m, &fam_schema, &err) : NULL;
        if (cases[i].opens)
            ok(made == 0 && sm != NULL, "%s (%s)", cases[i].what, err ? err : "");
        else
            ok(made == 0 && sm == NULL && err && strstr(err, "foreign key"), "%s (%s)", cases[i].what,
               err ? err : "accepted");
        free(err);
        store_module_close(sm);
    }
}

/* Version 1 kept the account's JID in every row (kids registered in user_tables); version 2 makes
 * kids a .parent table. The upgrade's last step drops the registration, so account deletion does
 * not run DELETE ... WHERE owner = ? on a table that has no owner column any more. */
static void test_parent_upgrade(storage_t *s)
{
    static const store_column_t kid1_cols[] = {{"owner", STORE_TEXT}, {"k", STORE_TEXT}, {NULL}};
    static const store_column_t kid2_cols[] = {{"oid", STORE_INT}, {"k", STORE_TEXT}, {NULL}};
    const store_table_t owners = {.name = "owners", .columns = owner_cols, .key = "id", .account = "owner",
                                  .indexes = owner_idx};
    store_table_t v1t[] = {owners, {.name = "kids", .columns = kid1_cols, .key = "owner, k", .account = "owner"},
                           {NULL}};
    store_table_t v2t[] = {owners, {.name = "kids", .columns = kid2_cols, .key = "oid, k", .parent = "owners",
                                    .parent_column = "oid"}, {NULL}};
    static const char *const steps[] = {
        "CREATE TABLE upg_kids2 (oid INTEGER NOT NULL, k TEXT NOT NULL, PRIMARY KEY (oid, k),"
        " FOREIGN KEY (oid) REFERENCES upg_owners (id) ON DELETE CASCADE);"
        " INSERT INTO upg_owners (owner, host) SELECT DISTINCT owner, '' FROM upg_kids;"
        " INSERT INTO upg_kids2 (oid, k) SELECT o.id, k.k FROM upg_kids k JOIN upg_owners o ON o.owner = k.owner;"
        " DROP TABLE upg_kids; ALTER TABLE upg_kids2 RENAME TO upg_kids"};
    char *err = NULL;
    store_module_t *sm = store_module_open(s, "upg", &(store_schema_t){.version = 1, .tables = v1t}, &err);
    store_t *k1 = store_module_table(sm, "kids");
    ok(k1 && store_put(k1, (storage_value_t[]){STORE_VAL_TEXT("hugo@localhost"), STORE_VAL_TEXT("a")}, NULL) == 0
       && store_put(k1, (storage_value_t[]){STORE_VAL_TEXT("ida@localhost"), STORE_VAL_TEXT("a")}, NULL) == 0
       && sql_int(s, "SELECT COUNT(*) FROM user_tables WHERE tbl = 'upg_kids'") == 1,
       "version 1: kids has an account column and is registered (%s)", err ? err : "");
    free(err);
    store_module_close(sm);
    err = NULL;
    sm = store_module_open(s, "upg", &(store_schema_t){.version = 2, .tables = v2t, .upgrade = steps}, &err);
    ok(sm && sql_int(s, "SELECT COUNT(*) FROM user_tables WHERE tbl = 'upg_kids'") == 0
       && sql_int(s, "SELECT COUNT(*) FROM user_tables WHERE tbl = 'upg_owners'") == 1
       && sql_int(s, "SELECT COUNT(*) FROM upg_kids") == 2,
       "upgrade to a .parent kids: its user_tables row deleted, rows kept (%s)", err ? err : "");
    free(err);
    ok(storage_account_delete(s, "hugo", "localhost") == 1
       && sql_int(s, "SELECT COUNT(*) FROM upg_kids k JOIN upg_owners o ON o.id = k.oid"
                     " WHERE o.owner = 'ida@localhost'") == 1
       && sql_int(s, "SELECT COUNT(*) FROM upg_kids") == 1
       && sql_int(s, "SELECT COUNT(*) FROM upg_owners WHERE owner = 'hugo@localhost'") == 0,
       "after the upgrade deleting an account works and cascades");
    store_module_close(sm);
}

/* notes v1 -> v2: a column and an index added by an upgrade step. */
static const store_column_t notes1_cols[] = {{"jid", STORE_TEXT}, {"k", STORE_TEXT}, {"v", STORE_TEXT}, {NULL}};
static const store_table_t notes1[] = {
    {.name = "n", .columns = notes1_cols, .key = "jid, k", .account = "jid"}, {NULL}};
static const store_column_t notes2_cols[] = {
    {"jid", STORE_TEXT}, {"k", STORE_TEXT}, {"v", STORE_TEXT}, {"prio", STORE_INT}, {NULL}};
static const store_index_t notes2_idx[] = {{"by_prio", "jid, prio"}, {NULL}};
static const store_table_t notes2[] = {
    {.name = "n", .columns = notes2_cols, .key = "jid, k", .account = "jid", .indexes = notes2_idx}, {NULL}};

static void test_migration(const char *dir, storage_t *s)
{
    /* data an older release kept in the core's kv table, imported when the table is created */
    storage_kv_set(s, "notes", "frank", "localhost", "a", "old-a", 5);
    storage_kv_set(s, "notes", "frank", "localhost", "b", "old-b", 5);
    store_schema_t v1 = {.version = 1, .tables = notes1,
                         .import = "INSERT INTO notes_n (jid, k, v)"
                                   " SELECT user || '@' || domain, key, CAST(val AS TEXT)"
                                   " FROM kv WHERE store = 'notes'; DELETE FROM kv WHERE store = 'notes'"};
    char *err = NULL;
    store_module_t *sm = store_module_open(s, "notes", &v1, &err);
    store_t *n = store_module_table(sm, "n");
    store_row_t *row = NULL;
    storage_value_t key[] = {STORE_VAL_TEXT("frank@localhost"), STORE_VAL_TEXT("b")};
    ok(n && store_get(n, key, &row) == 0 && strcmp(row->col[2].p, "old-b") == 0
       && sql_int(s, "SELECT COUNT(*) FROM kv WHERE store = 'notes'") == 0
       && sql_int(s, "SELECT version FROM module_schema WHERE module = 'notes'") == 1,
       "version 1 created, the import moved the old kv rows in (%s)", err ? err : "");
    store_row_free(row);
    free(err);
    store_module_close(sm);

    /* reopening an unchanged declaration runs nothing */
    sm = store_module_open(s, "notes", &v1, NULL);
    ok(sm && sql_int(s, "SELECT COUNT(*) FROM notes_n") == 2, "opening again at the same version keeps the rows");
    store_module_close(sm);

    /* a version 2 whose upgrade forgot the index: refused, and the failed check leaves the data */
    static const char *const forgot[] = {"ALTER TABLE notes_n ADD COLUMN prio INTEGER NOT NULL DEFAULT 0"};
    store_schema_t v2bad = {.version = 2, .tables = notes2, .upgrade = forgot};
    err = NULL;
    sm = store_module_open(s, "notes", &v2bad, &err);
    ok(sm == NULL && err && strstr(err, "by_prio")
       && sql_int(s, "SELECT version FROM module_schema WHERE module = 'notes'") == 1
       && sql_int(s, "SELECT COUNT(*) FROM pragma_table_info('notes_n') WHERE name = 'prio'") == 0,
       "an upgrade that does not produce the declaration is refused and rolled back: still version 1 (%s)",
       err ? err : "");
    free(err);

    static const char *const bad_step[] = {"ALTER TABLE notes_n ADD COLUMN prio INTEGER NOT NULL DEFAULT 0;"
                                           " CREATE INDEX broken ON nosuch (x)"};
    err = NULL;
    sm = store_module_open(s, "notes", &(store_schema_t){.version = 2, .tables = notes2, .upgrade = bad_step}, &err);
    ok(sm == NULL && sql_int(s, "SELECT version FROM module_schema WHERE module = 'notes'") == 1
       && sql_int(s, "SELECT COUNT(*) FROM pragma_table_info('notes_n') WHERE name = 'prio'") == 0,
       "a failing upgrade step is refused and leaves version 1 untouched (%s)", err ? err : "");
    free(err);

    static const char *const steps[] = {"ALTER TABLE notes_n ADD COLUMN prio INTEGER NOT NULL DEFAULT 0;"
                                        " CREATE INDEX notes_n__by_prio ON notes_n (jid, prio, k)"};
    store_schema_t v2 = {.version = 2, .tables = notes2, .upgrade = steps};
    err = NULL;
    sm = store_module_open(s, "notes", &v2, &err);
    n = store_module_table(sm, "n");
    ok(n && store_get(n, key, &row) == 0 && row->ncols == 4 && row->col[3].type == STORAGE_INT && row->col[3].i == 0
       && sql_int(s, "SELECT version FROM module_schema WHERE module = 'notes'") == 2,
       "upgrade 1 -> 2: old rows kept, the new column has its default (%s)", err ? err : "");
    store_row_free(row);
    free(err);
    storage_value_t jid = STORE_VAL_TEXT("frank@localhost");
    store_page_t pg;
    storage_value_t prio_row[] = {jid, STORE_VAL_TEXT("c"), STORE_VAL_TEXT("new"), STORE_VAL_INT(-1)};
    ok(n && store_put(n, prio_row, NULL) == 0
       && store_range(n, &(store_range_t){.index = "by_prio", .prefix = &jid, .nprefix = 1, .limit = 5}, &pg) == 0
       && pg.n == 3 && strcmp(pg.rows[0]->col[1].p, "c") == 0,
       "the new index pages by priority");
    store_page_free(&pg);
    ok(storage_account_delete(s, "frank", "localhost") == 1 && sql_int(s, "SELECT COUNT(*) FROM notes_n") == 0,
       "account deletion still reaches the upgraded table");
    store_module_close(sm);
    err = NULL;
    sm = store_module_open(s, "notes", &v1, &err);
    ok(sm == NULL && err && strstr(err, "newer"), "a database newer than the declaration is refused (%s)",
       err ? err : "");
    free(err);
    store_module_close(sm);
}

int main(void)
{
    char *dir = fresh_dir();
    char *err = NULL;
    storage_t *s = dir ? storage_open(dir, &err) : NULL;
    ok(s != NULL, "storage opens (%s)", err ? err : "");
    if (!s) return done_testing();
    store_module_t *mam = store_module_open(s, "mam", &mam_schema, &err);
    ok(mam != NULL, "a module's tables are created from its declaration (%s)", err ? err : "");
    free(err);
    err = NULL;
    store_module_t *pep = store_module_open(s, "pep", &pep_schema, &err);
    ok(pep != NULL, "a second module's tables too (%s)", err ? err : "");
    free(err);
    store_t *arch = store_module_table(mam, "archive"), *items = store_module_table(pep, "items");
    ok(arch && items && !store_module_table(pep, "archive")
       && sql_int(s, "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('mam_archive', 'pep_items',"
                     " 'mam_archive__by_owner', 'mam_archive__by_time', 'pep_items__by_pos')") == 5
       && sql_int(s, "SELECT COUNT(*) FROM user_tables WHERE tbl IN ('mam_archive', 'pep_items')") == 2,
       "tables and indexes are named <module>_<table>[__<index>] and registered for account deletion");
    if (!arch || !items) return done_testing();
    test_declarations(s);
    test_rows(s, items);
    test_paging(s, arch);
    test_expire(s, arch);
    test_transactions(dir, s, items);
    test_match(arch);
    test_begin_lazy(dir, s, items);
    test_changed(dir, s, items);
    test_account_delete(dir, s, arch, items);
    test_migration(dir, s);
    test_parent(dir, s);
    test_parent_declarations(s);
    test_parent_verify(s);
    test_parent_upgrade(s);
    store_module_close(mam);
    store_module_close(pep);
    storage_close(s);
    rm_rf(dir);
    free(dir);
    return done_testing();
}
