/* tests/unit/test_storage.c: TAP tests for the storage interface on its SQLite driver: accounts, kv,
 * lists, deletion of everything a user owns, migrations, durability, read-only and full databases,
 * the WAL checkpointer thread. */
#define _GNU_SOURCE    /* memmem */
#include "storage_internal.h"
#include "tap.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The test looks at the database file itself, behind the interface's back. */
#include <sqlite3.h>

#ifdef STORAGE_TEST_STANDALONE
size_t scram_hash_len(scram_hash_t h) { return h == SCRAM_SHA1 ? 20 : 32; }
#endif

/* ---- helpers ---- */

static char *fresh_dir(void)
{
    const char *tmp = getenv("TMPDIR");
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s/civitas-storage-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

static void rm_rf(const char *dir)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "# could not remove %s\n", dir);
}

static void db_path(char *buf, size_t n, const char *dir)
{
    snprintf(buf, n, "%s/civitas.db", dir);
}

/* Deterministic creds: every byte derived from seed. */
static scram_creds_t creds(scram_hash_t h, unsigned char seed)
{
    scram_creds_t c;
    memset(&c, 0, sizeof c);
    c.hash = h;
    c.salt_len = 16;
    c.iterations = 4096 + seed;
    for (size_t i = 0; i < c.salt_len; i++) c.salt[i] = (unsigned char)(seed + i);
    for (size_t i = 0; i < scram_hash_len(h); i++) {
        c.stored_key[i] = (unsigned char)(seed * 3 + i);
        c.server_key[i] = (unsigned char)(seed * 7 + i);
    }
    return c;
}

static int creds_equal(const scram_creds_t *a, const scram_creds_t *b)
{
    size_t kl = scram_hash_len(a->hash);
    return a->hash == b->hash && a->salt_len == b->salt_len && a->iterations == b->iterations
           && memcmp(a->salt, b->salt, a->salt_len) == 0 && memcmp(a->stored_key, b->stored_key, kl) == 0
           && memcmp(a->server_key, b->server_key, kl) == 0;
}

/* Run one SQL statement straight on the file; the first column of its first row (or -1). */
static long long sql_int(const char *dir, const char *sql)
{
    char path[600];
    db_path(path, sizeof path, dir);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long long v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK
        && sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* Execute SQL on data_dir/civitas.db, creating it: used to hand-craft old or foreign databases. */
static int sql_exec(const char *dir, const char *sql)
{
    char path[600];
    db_path(path, sizeof path, dir);
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : -1;
}

static int file_mode(const char *path)
{
    struct stat sb;
    return stat(path, &sb) < 0 ? -1 : (int)(sb.st_mode & 07777);
}

/* Does the file contain the bytes? -1 when it cannot be read, 0 when missing or not found. */
static int file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    if (!f) return errno == ENOENT ? 0 : -1;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) { free(buf); buf = NULL; }
            buf = nb;
        }
    }
    fclose(f);
    if (!buf) return -1;
    int found = memmem(buf, len, needle, strlen(needle)) != NULL;
    free(buf);
    return found;
}

/* ---- callbacks ---- */

typedef struct collect {
    char text[512];    /* names/keys joined with ',' */
    int stop_after;    /* stop when this many were seen (0: never) */
    int seen;
    int64_t ids[16];
    int64_t whens[16];
    storage_t *s;      /* for the reentrancy test */
    int inner;         /* what the reentrant call returned */
} collect_t;

static void add_text(collect_t *c, const char *t, size_t len)
{
    size_t used = strlen(c->text);
    snprintf(c->text + used, sizeof c->text - used, "%s%.*s", used ? "," : "", (int)len, t);
}

static int user_cb(void *ud, const char *user)
{
    collect_t *c = ud;
    add_text(c, user, strlen(user));
    return c->stop_after && ++c->seen >= c->stop_after;
}

static int kv_cb(void *ud, const char *key, const void *val, size_t len)
{
    collect_t *c = ud;
    char item[300];
    snprintf(item, sizeof item, "%s=%zu", key, len);
    add_text(c, item, strlen(item));
    (void)val;
    if (c->s) c->inner = storage_kv_set(c->s, "st", "u", "d", "k", "v", 1);
    return c->stop_after && ++c->seen >= c->stop_after;
}

static int list_cb(void *ud, int64_t id, int64_t when, const void *val, size_t len)
{
    collect_t *c = ud;
    if (c->seen < 16) {
        c->ids[c->seen] = id;
        c->whens[c->seen] = when;
    }
    c->seen++;
    add_text(c, val, len);
    return c->stop_after && c->seen >= c->stop_after;
}

static int row_cb(void *ud, const storage_value_t *cols, int ncols)
{
    collect_t *c = ud;
    for (int i = 0; i < ncols; i++) {
        char num[32];
        if (cols[i].type == STORAGE_INT) {
            snprintf(num, sizeof num, "%lld", (long long)cols[i].i);
            add_text(c, num, strlen(num));
        } else if (cols[i].type == STORAGE_TEXT || cols[i].type == STORAGE_BLOB) {
            add_text(c, cols[i].p, cols[i].len);
        } else {
            add_text(c, "NULL", 4);
        }
    }
    return 0;
}

/* ---- tests ---- */

static void test_open_modes(void)
{
    char *base = fresh_dir(), dir[600], path[700], wal[720];
    snprintf(dir, sizeof dir, "%s/a/b/data", base);
    char *err = NULL;
    storage_t *s = storage_open(dir, &err);
    ok(s != NULL && err == NULL, "open creates missing directories and the database (%s)", err ? err : "");
    snprintf(path, sizeof path, "%s/a", base);
    ok(file_mode(dir) == 0700 && file_mode(path) == 0700, "created data_dir components have mode 0700");
    db_path(path, sizeof path, dir);
    ok(file_mode(path) == 0600, "database file has mode 0600 (got %o)", file_mode(path));
    ok(storage_kv_set(s, "st", "u", "d", "k", "v", 1) == 0, "a write succeeds");
    snprintf(wal, sizeof wal, "%s-wal", path);
    ok(file_mode(wal) == 0600, "WAL journal is on and its file has mode 0600 (got %o)", file_mode(wal));
    ok(sql_int(dir, "SELECT MAX(version) FROM schema_version") == 2, "fresh database is at schema version 2");
    storage_close(s);
    free(err);

    err = NULL;
    s = storage_open(NULL, &err);
    ok(s == NULL && err != NULL, "open(NULL) fails with a message");
    free(err);
    err = NULL;
    ok(storage_open(path, &err) == NULL && err && strstr(err, "not a directory"),
       "a data_dir that is a file is refused: %s", err ? err : "");
    free(err);
    storage_close(NULL);
    ok(storage_last_error(NULL) != NULL && storage_kv_set(NULL, "a", "b", "c", "d", "", 0) == -1,
       "NULL storage: close is a no-op, calls return -1");
    rm_rf(base);
    free(base);
}

static void test_accounts(storage_t *s, const char *dir)
{
    scram_creds_t a1 = creds(SCRAM_SHA1, 1), a256 = creds(SCRAM_SHA256, 2), out;
    ok(storage_account_create(s, "alice", "a.example", &a1, &a256) == 0, "account create");
    ok(storage_account_create(s, "alice", "a.example", &a256, &a1) == -1,
       "creds in the wrong slot (SHA-256 as SHA-1) are refused");
    scram_creds_t dup1 = creds(SCRAM_SHA1, 9);
    ok(storage_account_create(s, "alice", "a.example", &dup1, &a256) == 1, "creating an existing account gives 1");
    ok(storage_account_get(s, "alice", "a.example", SCRAM_SHA1, &out) == 0 && creds_equal(&out, &a1),
       "duplicate create did not change the creds; SHA-1 creds read back exactly");
    ok(storage_account_get(s, "alice", "a.example", SCRAM_SHA256, &out) == 0 && creds_equal(&out, &a256),
       "SHA-256 creds read back exactly");
    ok(storage_account_exists(s, "alice", "a.example") == 1 && storage_account_exists(s, "alice", "b.example") == 0
       && storage_account_exists(s, "Alice", "a.example") == 0,
       "exists: keyed by (user, domain), bytes compared as given");
    ok(storage_account_get(s, "nobody", "a.example", SCRAM_SHA1, &out) == 1, "get of an unknown user gives 1");

    scram_creds_t bad = creds(SCRAM_SHA1, 3);
    bad.salt_len = 0;
    int r1 = storage_account_create(s, "x", "a.example", &bad, NULL);
    bad = creds(SCRAM_SHA1, 3);
    bad.iterations = 0;
    int r2 = storage_account_create(s, "x", "a.example", &bad, NULL);
    int r3 = storage_account_create(s, "x", "a.example", NULL, NULL);
    int r4 = storage_account_create(s, "", "a.example", &a1, &a256);
    ok(r1 == -1 && r2 == -1 && r3 == -1 && r4 == -1 && storage_account_exists(s, "x", "a.example") == 0,
       "empty salt, zero iterations, no creds at all, empty user: -1 and nothing stored");

    scram_creds_t n1 = creds(SCRAM_SHA1, 5), n256 = creds(SCRAM_SHA256, 6);
    ok(storage_account_set_creds(s, "alice", "a.example", &n1, &n256) == 0
       && storage_account_get(s, "alice", "a.example", SCRAM_SHA1, &out) == 0 && creds_equal(&out, &n1)
       && storage_account_get(s, "alice", "a.example", SCRAM_SHA256, &out) == 0 && creds_equal(&out, &n256),
       "set_creds replaces both creds");
    ok(storage_account_set_creds(s, "ghost", "a.example", &n1, &n256) == 1, "set_creds of an unknown user gives 1");

    ok(storage_account_create(s, "only256", "a.example", NULL, &a256) == 0
       && storage_account_get(s, "only256", "a.example", SCRAM_SHA1, &out) == 1
       && storage_account_get(s, "only256", "a.example", SCRAM_SHA256, &out) == 0,
       "an account without SHA-1 creds: SHA-1 lookup gives 1, SHA-256 works");

    ok(sql_int(dir, "SELECT COUNT(*) FROM accounts WHERE sha1_stored IS NOT NULL"
                              " AND typeof(sha1_stored) = 'blob' AND length(sha1_stored) = 20") == 1
       && sql_int(dir, "SELECT COUNT(*) FROM pragma_table_info('accounts') WHERE name LIKE '%pass%'") == 0,
       "the table holds SCRAM keys as 20-byte blobs and has no password column");

    scram_creds_t c1 = creds(SCRAM_SHA1, 7), c256 = creds(SCRAM_SHA256, 8);
    storage_account_create(s, "carol", "a.example", &c1, &c256);
    storage_account_create(s, "bob", "a.example", &c1, &c256);
    storage_account_create(s, "zed", "b.example", &c1, &c256);
    collect_t c = { .text = "" };
    int n = storage_account_list(s, "a.example", user_cb, &c);
    ok(n == 4 && strcmp(c.text, "alice,bob,carol,only256") == 0, "list: users of one domain in ascending order (%s)",
       c.text);
    collect_t c2 = { .text = "", .stop_after = 2 };
    ok(storage_account_list(s, "a.example", user_cb, &c2) == 2 && strcmp(c2.text, "alice,bob") == 0,
       "list: a callback returning non-zero stops the iteration");
    collect_t c3 = { .text = "" };
    ok(storage_account_list(s, "none.example", user_cb, &c3) == 0 && c3.text[0] == '\0',
       "list of a domain without users gives 0");
}

static void test_kv(storage_t *s)
{
    void *v = NULL;
    size_t len = 0;
    ok(storage_kv_get(s, "vcard", "bob", "a.example", "photo", &v, &len) == 1 && v == NULL && len == 0,
       "kv get of a missing key gives 1");
    ok(storage_kv_set(s, "vcard", "bob", "a.example", "photo", "first", 5) == 0
       && storage_kv_set(s, "vcard", "bob", "a.example", "photo", "second!", 7) == 0
       && storage_kv_get(s, "vcard", "bob", "a.example", "photo", &v, &len) == 0 && len == 7
       && memcmp(v, "second!", 7) == 0 && ((char *)v)[7] == '\0',
       "kv set overwrites; get returns a NUL-terminated copy");
    free(v);
    const unsigned char bin[] = { 0, 1, 0, 255 };
    ok(storage_kv_set(s, "private", "bob", "a.example", "bin", bin, sizeof bin) == 0
       && storage_kv_get(s, "private", "bob", "a.example", "bin", &v, &len) == 0 && len == 4
       && memcmp(v, bin, 4) == 0, "kv values are binary-safe");
    free(v);
    ok(storage_kv_set(s, "private", "bob", "a.example", "empty", NULL, 0) == 0
       && storage_kv_get(s, "private", "bob", "a.example", "empty", &v, &len) == 0 && v != NULL && len == 0,
       "an empty value is stored and found");
    free(v);
    ok(storage_kv_get(s, "private", "bob", "b.example", "bin", &v, &len) == 1
       && storage_kv_get(s, "vcard", "bob", "a.example", "bin", &v, &len) == 1,
       "kv keys are scoped by store and domain");
    storage_kv_set(s, "private", "bob", "a.example", "a", "1", 1);
    storage_kv_set(s, "private", "carol", "a.example", "c", "x", 1);
    collect_t c = { .text = "" };
    int n = storage_kv_each(s, "private", "bob", "a.example", kv_cb, &c);
    ok(n == 3 && strcmp(c.text, "a=1,bin=4,empty=0") == 0,
       "kv each: one user's keys of one store, ordered by key (%s)", c.text);
    collect_t c2 = { .text = "", .s = s };
    ok(storage_kv_each(s, "vcard", "bob", "a.example", kv_cb, &c2) == 1 && c2.inner == -1
       && strcmp(c2.text, "photo=7") == 0,
       "a storage call from inside an iteration callback is refused with -1");
    ok(storage_kv_del(s, "private", "bob", "a.example", "a") == 0
       && storage_kv_get(s, "private", "bob", "a.example", "a", &v, &len) == 1
       && storage_kv_del(s, "private", "bob", "a.example", "a") == 0,
       "kv delete removes the key; deleting an absent key is 0");
    ok(storage_kv_set(s, NULL, "bob", "a.example", "k", "v", 1) == -1
       && storage_kv_set(s, "st", "bob", "a.example", "k", NULL, 3) == -1, "kv: NULL store or value -> -1");
}

static void test_lists(storage_t *s)
{
    int64_t id[5];
    const char *vals[] = { "m0", "m1", "m2", "m3", "m4" };
    int mono = 1;
    for (int i = 0; i < 5; i++) {
        id[i] = storage_list_append(s, "offline", "bob", "a.example", 100 + i * 10, vals[i], 2);
        if (id[i] <= 0 || (i && id[i] <= id[i - 1])) mono = 0;
    }
    int64_t other = storage_list_append(s, "offline", "carol", "a.example", 100, "c0", 2);
    ok(mono && other > id[4], "list append returns increasing ids");
    collect_t c = { .text = "" };
    ok(storage_list_each(s, "offline", "bob", "a.example", 0, 0, list_cb, &c) == 5
       && strcmp(c.text, "m0,m1,m2,m3,m4") == 0 && c.ids[0] == id[0] && c.whens[4] == 140,
       "list each: all entries of that user in id order with their ids and times");
    collect_t c2 = { .text = "" };
    ok(storage_list_each(s, "offline", "bob", "a.example", id[1], 2, list_cb, &c2) == 2
       && strcmp(c2.text, "m2,m3") == 0, "list each: after_id and limit page through the list");
    ok(storage_list_count(s, "offline", "bob", "a.example") == 5 && storage_list_count(s, "archive", "bob", "a.example") == 0,
       "list count, scoped by list name");
    ok(storage_list_delete_upto(s, "offline", "bob", "a.example", id[1]) == 0
       && storage_list_count(s, "offline", "bob", "a.example") == 3
       && storage_list_count(s, "offline", "carol", "a.example") == 1,
       "delete_upto removes ids <= upto of that user only");
    ok(storage_list_delete_one(s, "offline", "bob", "a.example", id[3]) == 0
       && storage_list_delete_one(s, "offline", "bob", "a.example", id[3]) == 0
       && storage_list_delete_one(s, "offline", "carol", "a.example", id[2]) == 0
       && storage_list_count(s, "offline", "bob", "a.example") == 2,
       "delete_one removes one entry; absent or another user's id: 0 and nothing removed");
    ok(storage_list_expire(s, "offline", 115) == 1 && storage_list_count(s, "offline", "carol", "a.example") == 0
       && storage_list_count(s, "offline", "bob", "a.example") == 2 && storage_list_expire(s, "offline", 115) == 0,
       "expire deletes entries older than the cut-off for every user and returns the count");
    storage_list_delete_upto(s, "offline", "bob", "a.example", INT64_MAX);
    int64_t next = storage_list_append(s, "offline", "bob", "a.example", 1, "n", 1);
    ok(next > other, "ids are not reused after the newest entries were deleted");

    /* batches */
    int before = storage_list_count(s, "offline", "bob", "a.example");
    ok(storage_begin(s) == 0 && storage_begin(s) == -1, "begin opens a batch; a second begin is -1");
    storage_list_append(s, "offline", "bob", "a.example", 1, "x", 1);
    storage_list_append(s, "offline", "bob", "a.example", 1, "y", 1);
    ok(storage_rollback(s) == 0 && storage_list_count(s, "offline", "bob", "a.example") == before,
       "rollback discards the batch");
    ok(storage_begin(s) == 0 && storage_list_append(s, "offline", "bob", "a.example", 1, "x", 1) > 0
       && storage_account_delete(s, "nobody", "a.example") == 1 && storage_commit(s) == 0
       && storage_list_count(s, "offline", "bob", "a.example") == before + 1,
       "commit stores the batch (an account deletion nests inside it)");
    ok(storage_commit(s) == -1 && storage_rollback(s) == 0, "commit without a batch is -1, rollback is 0");
}

static int module_rows(const char *dir, const char *user)
{
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM mod_roster WHERE owner = '%s'", user);
    return (int)sql_int(dir, sql);
}

static void test_modules(storage_t *s)
{
    const char *steps[] = {
        "CREATE TABLE mod_roster (owner TEXT NOT NULL, host TEXT NOT NULL, contact TEXT NOT NULL);",
        "ALTER TABLE mod_roster ADD COLUMN name TEXT; CREATE INDEX mod_roster_owner ON mod_roster (owner, host);",
    };
    ok(storage_module_migrate(s, "roster", steps, 1) == 0 && storage_module_migrate(s, "roster", steps, 2) == 0
       && storage_module_migrate(s, "roster", steps, 2) == 0,
       "module migrations apply each step once, also when run again");
    ok(storage_module_migrate(s, "roster", steps, 1) == -1 && strstr(storage_last_error(s), "newer"),
       "a module whose tables are newer than its steps is refused");
    const char *broken[] = { steps[0], steps[1], "CREATE TABLE mod_roster (x);" };
    ok(storage_module_migrate(s, "roster", broken, 3) == -1 && storage_module_migrate(s, "roster", steps, 2) == 0,
       "a failing step is -1 and leaves the previous version");
    ok(storage_register_user_table(s, "mod_roster", "owner", "host") == 0
       && storage_register_user_table(s, "mod_roster", "owner", "host") == 0,
       "register a module table as per-user (twice is fine)");
    ok(storage_register_user_table(s, "kv", "user", "domain") == -1
       && storage_register_user_table(s, "mod_roster", "owner", "nosuch") == -1
       && storage_register_user_table(s, "missing", "a", "b") == -1
       && storage_register_user_table(s, "mod_roster\"; --", "owner", "host") == -1,
       "core tables, missing columns or tables and non-identifiers cannot be registered");
    storage_value_t p[3] = {
        { .type = STORAGE_TEXT, .p = "bob", .len = 3 },
        { .type = STORAGE_TEXT, .p = "a.example", .len = 9 },
        { .type = STORAGE_TEXT, .p = "carol@a.example", .len = 15 },
    };
    int ins = storage_query(s, "INSERT INTO mod_roster (owner, host, contact) VALUES (?, ?, ?)", p, 3, NULL, NULL);
    p[0].p = "carol";
    p[0].len = 5;
    p[2].p = "bob@a.example";
    p[2].len = 13;
    ins += storage_query(s, "INSERT INTO mod_roster (owner, host, contact) VALUES (?, ?, ?)", p, 3, NULL, NULL);
    collect_t c = { .text = "" };
    ok(ins == 2 && storage_query(s, "SELECT contact, 42 FROM mod_roster WHERE owner = ? AND host = ?", p, 2, row_cb, &c) == 1
       && strcmp(c.text, "bob@a.example,42") == 0,
       "storage_query: writes return rows changed, reads pass typed columns");
    ok(storage_query(s, "SELECT 1; SELECT 2", NULL, 0, NULL, NULL) == -1
       && storage_query(s, "SELECT ?", NULL, 0, NULL, NULL) == -1
       && storage_query(s, "SELECT nosuch FROM mod_roster", NULL, 0, NULL, NULL) == -1,
       "storage_query refuses several statements, a wrong parameter count and bad SQL");
}

static void test_delete(storage_t *s, const char *dir)
{
    char path[700], wal[720];
    db_path(path, sizeof path, dir);
    snprintf(wal, sizeof wal, "%s-wal", path);
    const char *secret = "SECRET-vcard-of-bob-7f3a";
    storage_kv_set(s, "vcard", "bob", "a.example", "card", secret, strlen(secret));
    storage_kv_set(s, "vcard", "carol", "a.example", "card", "carol's", 7);
    storage_list_append(s, "archive", "bob", "a.example", 5, "hello", 5);
    storage_list_append(s, "archive", "carol", "a.example", 5, "hi", 2);
    storage_kv_set(s, "vcard", "bob", "b.example", "card", "other domain", 12);
    long long carol_kv = sql_int(dir, "SELECT COUNT(*) FROM kv WHERE user = 'carol'");
    long long carol_list = sql_int(dir, "SELECT COUNT(*) FROM list WHERE user = 'carol'");
    ok(sql_int(dir, "SELECT COUNT(*) FROM kv WHERE user = 'bob' AND domain = 'a.example'") > 0
       && sql_int(dir, "SELECT COUNT(*) FROM list WHERE user = 'bob' AND domain = 'a.example'") > 0
       && module_rows(dir, "bob") == 1 && file_contains(wal, secret) == 1,
       "before deletion bob has kv, list and module rows");
    ok(storage_account_delete(s, "bob", "a.example") == 0, "account delete gives 0");
    ok(storage_account_exists(s, "bob", "a.example") == 0
       && sql_int(dir, "SELECT COUNT(*) FROM accounts WHERE user = 'bob' AND domain = 'a.example'") == 0,
       "the account row is gone");
    ok(sql_int(dir, "SELECT COUNT(*) FROM kv WHERE user = 'bob' AND domain = 'a.example'") == 0
       && sql_int(dir, "SELECT COUNT(*) FROM list WHERE user = 'bob' AND domain = 'a.example'") == 0
       && module_rows(dir, "bob") == 0,
       "every kv, list and registered module row of the user is gone (read from the file)");
    ok(sql_int(dir, "SELECT COUNT(*) FROM kv WHERE user = 'carol'") == carol_kv && carol_kv > 0
       && sql_int(dir, "SELECT COUNT(*) FROM list WHERE user = 'carol'") == carol_list && carol_list > 0
       && module_rows(dir, "carol") == 1 && storage_account_exists(s, "carol", "a.example") == 1
       && sql_int(dir, "SELECT COUNT(*) FROM kv WHERE user = 'bob' AND domain = 'b.example'") == 1,
       "other users' rows (and the same name on another domain) remain");
    ok(file_contains(path, secret) == 0 && file_contains(wal, secret) == 0,
       "secure delete: the deleted value is in neither the database nor the WAL file");
    ok(storage_account_delete(s, "bob", "a.example") == 1, "deleting it again gives 1");
}

static int event_row_cb(void *ud, const char *key, const void *val, size_t len)
{
    char *out = ud;
    size_t n = strlen(out);
    snprintf(out + n, 256 - n, "%s=%.*s;", key, (int)len, (const char *)val);
    return 0;
}

/* Account events: a deletion leaves one event with a copy of the roster rows, in its transaction. */
static void test_user_events(storage_t *s)
{
    scram_creds_t a = creds(SCRAM_SHA1, 3);
    int64_t id = 0;
    char *kind, *user, *domain;
    while (storage_user_event_next(s, &id, &kind, &user, &domain) == 0) {     /* test_delete's */
        free(kind);
        free(user);
        free(domain);
        storage_user_event_done(s, id);
    }
    ok(storage_user_event_next(s, &id, &kind, &user, &domain) == 1, "account events: none after handling them");
    storage_account_create(s, "dora", "a.example", &a, NULL);
    static const char *const expect[] = {STORAGE_EVENT_USER_CREATED, STORAGE_EVENT_PASSWORD_CHANGED};
    ok(storage_account_create(s, "dora", "a.example", &a, NULL) == 1
       && storage_account_set_creds(s, "dora", "a.example", &a, NULL) == 0
       && storage_account_set_creds(s, "ghost", "a.example", &a, NULL) == 1, "account events: create, again, set creds");
    int seen = 0;
    for (int i = 0; i < 3 && storage_user_event_next(s, &id, &kind, &user, &domain) == 0; i++) {
        if (i < 2 && strcmp(kind, expect[i]) == 0 && strcmp(user, "dora") == 0 && strcmp(domain, "a.example") == 0)
            seen++;
        else
            seen = -10;
        free(kind);
        free(user);
        free(domain);
        storage_user_event_done(s, id);
    }
    ok(seen == 2, "account events: creating and setting creds left user-created, password-changed (no more)");
    storage_kv_set(s, STORAGE_CONTACTS_STORE, "dora", "a.example", "eve@b.example", "r1", 2);
    storage_kv_set(s, STORAGE_CONTACTS_STORE, "dora", "a.example", "fred@a.example", "r2", 2);
    storage_kv_set(s, "vcard", "dora", "a.example", "card", "not copied", 10);
    ok(storage_account_delete(s, "dora", "a.example") == 0, "account events: dora deleted");
    ok(storage_account_delete(s, "nobody", "a.example") == 1, "account events: deleting a missing account");
    int r = storage_user_event_next(s, &id, &kind, &user, &domain);
    ok(r == 0 && strcmp(kind, STORAGE_EVENT_USER_DELETED) == 0 && strcmp(user, "dora") == 0
       && strcmp(domain, "a.example") == 0, "account events: the deletion left one user-deleted event");
    if (r == 0) {
        free(kind);
        free(user);
        free(domain);
    }
    char rows[256] = "";
    ok(storage_user_event_rows(s, id, event_row_cb, rows) == 2
       && strcmp(rows, "eve@b.example=r1;fred@a.example=r2;") == 0,
       "account events: it keeps a copy of the roster rows (and nothing else)");
    ok(storage_user_event_done(s, id) == 0 && storage_user_event_next(s, &id, &kind, &user, &domain) == 1
       && storage_user_event_rows(s, id, event_row_cb, rows) == 0,
       "account events: done removes the event and its rows; a missing account left none");
    ok(storage_begin(s) == 0 && storage_account_create(s, "gus", "a.example", &a, NULL) == 0
       && storage_account_delete(s, "gus", "a.example") == 0 && storage_rollback(s) == 0
       && storage_user_event_next(s, &id, &kind, &user, &domain) == 1
       && storage_account_exists(s, "gus", "a.example") == 0,
       "account events: a rolled-back deletion leaves no event");
}

static void test_reopen(const char *dir)
{
    char *err = NULL;
    storage_t *s = storage_open(dir, &err);
    scram_creds_t out, a256 = creds(SCRAM_SHA256, 6);
    void *v = NULL;
    size_t len = 0;
    ok(s && storage_account_get(s, "alice", "a.example", SCRAM_SHA256, &out) == 0 && creds_equal(&out, &a256)
       && storage_kv_get(s, "vcard", "carol", "a.example", "card", &v, &len) == 0 && len == 7
       && storage_list_count(s, "archive", "carol", "a.example") == 1,
       "reopen: accounts, kv and lists persist (%s)", err ? err : "");
    free(v);
    free(err);
    ok(s && storage_register_user_table(s, "mod_roster", "owner", "host") == 0
       && sql_int(dir, "SELECT COUNT(*) FROM user_tables") == 1,
       "reopen: user table registrations persist in the database");
    storage_close(s);
    char wal[700];
    snprintf(wal, sizeof wal, "%s/civitas.db-wal", dir);
    struct stat sb;
    ok(stat(wal, &sb) != 0 || sb.st_size == 0, "close checkpoints: the WAL file is gone or empty");
}

static void test_migrations(void)
{
    char *dir = fresh_dir(), path[600];
    db_path(path, sizeof path, dir);
    /* A database at version 0 with a table of some earlier tool in it. */
    int made = sql_exec(dir, "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied INTEGER NOT NULL);"
                             "INSERT INTO schema_version VALUES (0, 0);"
                             "CREATE TABLE legacy (x TEXT); INSERT INTO legacy VALUES ('keep me');");
    chmod(path, 0644);
    char *err = NULL;
    storage_t *s = storage_open(dir, &err);
    scram_creds_t a1 = creds(SCRAM_SHA1, 1);
    ok(made == 0 && s && storage_account_create(s, "u", "d", &a1, NULL) == 0
       && sql_int(dir, "SELECT MAX(version) FROM schema_version") == 2
       && sql_int(dir, "SELECT COUNT(*) FROM legacy WHERE x = 'keep me'") == 1,
       "a version 0 database is upgraded in place to 2, its data kept (%s)", err ? err : "");
    ok(file_mode(path) == 0600, "an existing database readable by others is tightened to 0600");
    storage_close(s);
    free(err);
    err = NULL;
    s = storage_open(dir, &err);
    ok(s && storage_account_exists(s, "u", "d") == 1 && sql_int(dir, "SELECT COUNT(*) FROM schema_version") == 3,
       "reopening a current database applies nothing and keeps the data");
    storage_close(s);
    free(err);

    /* a newer schema is refused and left alone */
    err = NULL;
    sql_exec(dir, "INSERT INTO schema_version VALUES (99, 0)");
    s = storage_open(dir, &err);
    ok(s == NULL && err && strstr(err, "newer") && sql_int(dir, "SELECT MAX(version) FROM schema_version") == 99
       && sql_int(dir, "SELECT COUNT(*) FROM accounts") == 1,
       "a database newer than this build is refused untouched: %s", err ? err : "");
    storage_close(s);
    free(err);
    rm_rf(dir);
    free(dir);

    /* a failing migration rolls back: nothing of it stays */
    dir = fresh_dir();
    sql_exec(dir, "CREATE TABLE kv (conflicting INTEGER)");
    err = NULL;
    s = storage_open(dir, &err);
    ok(s == NULL && err && strstr(err, "migration 0 -> 1")
       && sql_int(dir, "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('accounts', 'schema_version')") == 0,
       "a failing migration is an error and leaves no part of it behind: %s", err ? err : "");
    free(err);
    rm_rf(dir);
    free(dir);
}

/* Write 'size' bytes under key until the capped database refuses. */
static void test_disk_full(void)
{
    char *dir = fresh_dir();
    storage_t *s = storage_open(dir, NULL);
    size_t big = 256 * 1024;
    char *blob = malloc(big);
    memset(blob, 'z', big);
    storage_kv_set(s, "st", "u", "d", "small", "ok", 2);
    ok(s && storage_set_page_limit_for_test(s, 2) == 0 && storage_kv_set(s, "st", "u", "d", "big", blob, big) == -1
       && strstr(storage_last_error(s), "full"),
       "disk full: a write returns -1 (%s)", s ? storage_last_error(s) : "");
    void *v = NULL;
    size_t len = 0;
    int in_batch = storage_begin(s) == 0 && storage_kv_set(s, "st", "u", "d", "big2", blob, big) == -1;
    int small = storage_kv_get(s, "st", "u", "d", "small", &v, &len) == 0 && len == 2;
    free(v);
    v = NULL;
    ok(in_batch && storage_rollback(s) == 0 && small && storage_kv_get(s, "st", "u", "d", "big", &v, &len) == 1,
       "disk full inside a batch: -1, rollback works, earlier data intact and readable");
    free(v);
    v = NULL;
    ok(storage_set_page_limit_for_test(s, -1) == 0 && storage_kv_set(s, "st", "u", "d", "big", blob, big) == 0
       && storage_kv_get(s, "st", "u", "d", "big", &v, &len) == 0 && len == big,
       "once space is available again the same storage writes");
    free(v);
    free(blob);
    storage_close(s);
    rm_rf(dir);
    free(dir);
}

/* Read-only database file: returns a bitmask of failed checks (bit i = check i), 6 checks. */
#define RO_CHECKS 6
static int readonly_checks(const char *base)
{
    int fail = 0;
    char dir[600], path[700];
    snprintf(dir, sizeof dir, "%s/ro", base);
    db_path(path, sizeof path, dir);
    storage_t *s = storage_open(dir, NULL);
    scram_creds_t a1 = creds(SCRAM_SHA1, 1);
    if (!s || storage_kv_set(s, "st", "u", "d", "k", "before", 6) < 0) return (1 << RO_CHECKS) - 1;
    storage_close(s);
    chmod(path, 0400);
    s = storage_open(dir, NULL);
    void *v = NULL;
    size_t len = 0;
    if (!s || storage_kv_get(s, "st", "u", "d", "k", &v, &len) != 0 || len != 6) fail |= 1;
    free(v);
    v = NULL;
    if (!s) return (1 << RO_CHECKS) - 1;
    if (storage_kv_set(s, "st", "u", "d", "k", "after", 5) != -1
        || storage_list_append(s, "l", "u", "d", 1, "x", 1) != -1
        || storage_account_create(s, "u", "d", &a1, NULL) != -1
        || storage_account_delete(s, "u", "d") != -1)
        fail |= 2;
    if (!strstr(storage_last_error(s), "readonly") && !strstr(storage_last_error(s), "read-only")) fail |= 4;
    if (storage_begin(s) == 0 && storage_kv_set(s, "st", "u", "d", "k", "after", 5) == 0) fail |= 8;
    storage_rollback(s);
    chmod(path, 0600);
    if (storage_kv_set(s, "st", "u", "d", "k", "after", 5) != 0
        || storage_kv_get(s, "st", "u", "d", "k", &v, &len) != 0 || len != 5 || memcmp(v, "after", 5) != 0)
        fail |= 16;
    free(v);
    v = NULL;
    storage_close(s);
    s = storage_open(dir, NULL);
    if (!s || storage_kv_get(s, "st", "u", "d", "k", &v, &len) != 0 || len != 5) fail |= 32;
    free(v);
    storage_close(s);
    return fail;
}

/* Run checks(dir) on a fresh directory and report each of the n checks (bit i of its result: check
 * i failed). Root ignores file modes, so as root the checks run as "nobody" in a child (tag names
 * its directory), or are skipped when that is not possible. */
static void checks_as_user(const char *tag, int (*checks)(const char *), const char *const *what, int n)
{
    int fail = 0;
    const char *skip = NULL;
    if (geteuid() != 0) {
        char *base = fresh_dir();
        fail = checks(base);
        rm_rf(base);
        free(base);
    } else {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            char tmpl[64];
            snprintf(tmpl, sizeof tmpl, "/tmp/civitas-storage-%s-XXXXXX", tag);
            if (setgid(65534) != 0 || setuid(65534) != 0 || !mkdtemp(tmpl)) _exit(255);
            int f = checks(tmpl);
            rm_rf(tmpl);
            _exit(f);
        }
        int st = 0;
        if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) == 255)
            skip = "running as root, which ignores file modes, and could not switch to nobody";
        else
            fail = WEXITSTATUS(st);
    }
    for (int i = 0; i < n; i++) {
        if (skip) ok(1, "%s # SKIP %s", what[i], skip);
        else ok(!(fail & (1 << i)), "%s", what[i]);
    }
}

static void test_readonly(void)
{
    static const char *what[RO_CHECKS] = {
        "read-only db file: open works and reads work",
        "read-only db file: kv set, list append, account create and delete return -1",
        "read-only db file: the error says the database is read-only",
        "read-only db file: a batch cannot write either",
        "read-only db file: writable again -> the same storage writes again",
        "read-only db file: the write made after recovery persists",
    };
    checks_as_user("ro", readonly_checks, what, RO_CHECKS);
}

/* A write that returned is on disk even if the process dies right after; an open batch is not. */
static void test_kill9(void)
{
    char *dir = fresh_dir();
    storage_t *s = storage_open(dir, NULL);
    storage_close(s);
    int killed = 0;
    for (int batch = 0; batch < 2; batch++) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            storage_t *c = storage_open(dir, NULL);
            if (!c) _exit(1);
            if (batch) storage_begin(c);
            if (storage_list_append(c, "offline", "u", "d", 1, batch ? "lost" : "kept", 4) <= 0) _exit(1);
            raise(SIGKILL);
            _exit(1);
        }
        int st = 0;
        if (pid > 0 && waitpid(pid, &st, 0) == pid && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) killed++;
    }
    s = storage_open(dir, NULL);
    collect_t c = { .text = "" };
    ok(killed == 2 && s && storage_list_each(s, "offline", "u", "d", 0, 0, list_cb, &c) == 1
       && strcmp(c.text, "kept") == 0,
       "kill -9: an accepted write survives, an uncommitted batch vanishes whole (%s)", c.text);
    storage_close(s);
    rm_rf(dir);
    free(dir);
}

/* ---- the checkpointer thread (storage_checkpoint_thread) ----
 * Which thread copies the WAL into the database file is seen through a VFS that passes every call
 * to SQLite's own (real files, real locks) and only counts the writes to a main database file, by
 * the thread that makes them: in WAL mode only a checkpoint writes that file. */
static sqlite3_vfs *real_vfs;
static sqlite3_vfs spy_vfs;
static pthread_t spy_main;               /* the test's thread: the storage's "loop" */
static int spy_writes_main, spy_writes_other;   /* __atomic: writes to a database file, by thread */

typedef struct spy_file {
    sqlite3_file base;
    sqlite3_file *real;                  /* the real VFS's file, allocated right after this struct */
    int main_db;
} spy_file_t;

#define SPY_REAL(f) (((spy_file_t *)(f))->real)
static int spy_close(sqlite3_file *f) { return SPY_REAL(f)->pMethods->xClose(SPY_REAL(f)); }
static int spy_read(sqlite3_file *f, void *b, int n, sqlite3_int64 o) { return SPY_REAL(f)->pMethods->xRead(SPY_REAL(f), b, n, o); }
static int spy_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 o)
{
    if (((spy_file_t *)f)->main_db)
        __atomic_add_fetch(pthread_equal(pthread_self(), spy_main) ? &spy_writes_main : &spy_writes_other, 1,
                           __ATOMIC_SEQ_CST);
    return SPY_REAL(f)->pMethods->xWrite(SPY_REAL(f), b, n, o);
}
static int spy_truncate(sqlite3_file *f, sqlite3_int64 sz) { return SPY_REAL(f)->pMethods->xTruncate(SPY_REAL(f), sz); }
static int spy_sync(sqlite3_file *f, int fl) { return SPY_REAL(f)->pMethods->xSync(SPY_REAL(f), fl); }
static int spy_size(sqlite3_file *f, sqlite3_int64 *sz) { return SPY_REAL(f)->pMethods->xFileSize(SPY_REAL(f), sz); }
static int spy_lock(sqlite3_file *f, int l) { return SPY_REAL(f)->pMethods->xLock(SPY_REAL(f), l); }
static int spy_unlock(sqlite3_file *f, int l) { return SPY_REAL(f)->pMethods->xUnlock(SPY_REAL(f), l); }
static int spy_reserved(sqlite3_file *f, int *r) { return SPY_REAL(f)->pMethods->xCheckReservedLock(SPY_REAL(f), r); }
static int spy_fcntl(sqlite3_file *f, int op, void *a) { return SPY_REAL(f)->pMethods->xFileControl(SPY_REAL(f), op, a); }
static int spy_sector(sqlite3_file *f) { return SPY_REAL(f)->pMethods->xSectorSize(SPY_REAL(f)); }
static int spy_devchar(sqlite3_file *f) { return SPY_REAL(f)->pMethods->xDeviceCharacteristics(SPY_REAL(f)); }
static int spy_shm_map(sqlite3_file *f, int pg, int sz, int ext, void volatile **p) { return SPY_REAL(f)->pMethods->xShmMap(SPY_REAL(f), pg, sz, ext, p); }
static int spy_shm_lock(sqlite3_file *f, int o, int n, int fl) { return SPY_REAL(f)->pMethods->xShmLock(SPY_REAL(f), o, n, fl); }
static void spy_shm_barrier(sqlite3_file *f) { SPY_REAL(f)->pMethods->xShmBarrier(SPY_REAL(f)); }
static int spy_shm_unmap(sqlite3_file *f, int del) { return SPY_REAL(f)->pMethods->xShmUnmap(SPY_REAL(f), del); }
static int spy_fetch(sqlite3_file *f, sqlite3_int64 o, int n, void **p) { return SPY_REAL(f)->pMethods->xFetch(SPY_REAL(f), o, n, p); }
static int spy_unfetch(sqlite3_file *f, sqlite3_int64 o, void *p) { return SPY_REAL(f)->pMethods->xUnfetch(SPY_REAL(f), o, p); }

static const sqlite3_io_methods spy_io = {
    3, spy_close, spy_read, spy_write, spy_truncate, spy_sync, spy_size, spy_lock, spy_unlock, spy_reserved,
    spy_fcntl, spy_sector, spy_devchar, spy_shm_map, spy_shm_lock, spy_shm_barrier, spy_shm_unmap, spy_fetch,
    spy_unfetch,
};

static int spy_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out)
{
    (void)vfs;
    spy_file_t *sf = (spy_file_t *)f;
    sf->real = (sqlite3_file *)(sf + 1);
    sf->main_db = (flags & SQLITE_OPEN_MAIN_DB) != 0;
    int rc = real_vfs->xOpen(real_vfs, name, sf->real, flags, out);
    /* SQLite's unix files speak version 3 of the methods; a failed open has none (then no xClose). */
    f->pMethods = rc == SQLITE_OK && sf->real->pMethods ? &spy_io : NULL;
    return rc;
}

/* Make the spy the default VFS (storage_open and sql_int use it). 0, or -1. */
static int spy_install(void)
{
    real_vfs = sqlite3_vfs_find(NULL);
    if (!real_vfs || !real_vfs->xOpen) return -1;
    spy_vfs = *real_vfs;    /* the other calls go to the real VFS's functions with its data */
    spy_vfs.zName = "civitas-test-spy";
    spy_vfs.szOsFile = (int)((sizeof(spy_file_t) + 15) / 16 * 16) + real_vfs->szOsFile;
    spy_vfs.xOpen = spy_open;
    spy_vfs.pNext = NULL;
    spy_main = pthread_self();
    return sqlite3_vfs_register(&spy_vfs, 1) == SQLITE_OK ? 0 : -1;
}

static void spy_remove(void)
{
    sqlite3_vfs_unregister(&spy_vfs);
    sqlite3_vfs_register(real_vfs, 1);
}

static void spy_counts(int *on_main, int *other)
{
    *on_main = __atomic_load_n(&spy_writes_main, __ATOMIC_SEQ_CST);
    *other = __atomic_load_n(&spy_writes_other, __ATOMIC_SEQ_CST);
}

/* Threads of this process (/proc/self/task), or -1. */
static int thread_count(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

/* The WAL's state from its wal-index (data_dir/civitas.db-shm, https://sqlite.org/walformat.html):
 * mxFrame (frames in the WAL) at byte 16 of the header, nBackfill (frames already copied into the
 * database file) at byte 96, both in native byte order. Read directly, so that looking does not
 * checkpoint. 0, or -1 when the file cannot be read. */
static int wal_state(const char *dir, uint32_t *frames, uint32_t *backfilled)
{
    char path[700];
    snprintf(path, sizeof path, "%s/civitas.db-shm", dir);
    int fd = open(path, O_RDONLY);
    unsigned char hdr[136];
    int ok = fd >= 0 && pread(fd, hdr, sizeof hdr, 0) == (ssize_t)sizeof hdr;
    if (fd >= 0) close(fd);
    if (!ok) return -1;
    memcpy(frames, hdr + 16, 4);
    memcpy(backfilled, hdr + 96, 4);
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Commit well over STORAGE_CHECKPOINT_PAGES pages (4 KiB each) of blobs into a scratch table, in a
 * few batches. 0, or -1. */
#define CKPT_BATCHES 4
#define CKPT_ROWS 200
#define CKPT_BLOB (64 * 1024)
static int write_many_pages(storage_t *s)
{
    static char blob[CKPT_BLOB];
    if (storage_query(s, "CREATE TABLE IF NOT EXISTS ckpt_scratch (id INTEGER PRIMARY KEY, b BLOB NOT NULL)",
                      NULL, 0, NULL, NULL) < 0)
        return -1;
    for (int b = 0; b < CKPT_BATCHES; b++) {
        if (storage_begin(s) < 0) return -1;
        for (int i = 0; i < CKPT_ROWS; i++) {
            memset(blob, 'a' + (b * CKPT_ROWS + i) % 26, sizeof blob);
            storage_value_t p = { .type = STORAGE_BLOB, .p = blob, .len = sizeof blob };
            if (storage_query(s, "INSERT INTO ckpt_scratch (b) VALUES (?)", &p, 1, NULL, NULL) != 1) {
                storage_rollback(s);
                return -1;
            }
        }
        if (storage_commit(s) < 0) return -1;
    }
    return 0;
}

/* Wait (at most 60 s) until the thread has copied the whole WAL into the database file. 1 when it
 * did, 0 when the deadline passed; *frames the WAL's size then. */
static int wait_backfilled(const char *dir, uint32_t *frames)
{
    double deadline = now_s() + 60;
    uint32_t f = 0, bf = 0;
    int other = 0, on_main = 0;
    for (;;) {
        spy_counts(&on_main, &other);
        if (wal_state(dir, &f, &bf) == 0 && f > 0 && bf == f && other > 0) break;
        if (now_s() > deadline) {
            *frames = f;
            return 0;
        }
        struct timespec ts = { 0, 20 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    *frames = f;
    return 1;
}

static void test_checkpoint_thread(void)
{
    char *dir = fresh_dir(), wal[700];
    snprintf(wal, sizeof wal, "%s/civitas.db-wal", dir);
    int spy = spy_install();
    storage_t *s = spy == 0 ? storage_open(dir, NULL) : NULL;
    if (!s) {
        ok(0, "checkpointer: storage opens through the counting VFS");
        if (spy == 0) spy_remove();
        rm_rf(dir);
        free(dir);
        return;
    }
    int threads0 = thread_count();
    ok(storage_checkpoint_thread(NULL) == -1, "checkpointer: NULL storage -> -1");
    ok(storage_checkpoint_thread(s) == 0, "checkpointer: the thread starts (%s)", storage_last_error(s));
    ok(storage_checkpoint_thread(s) == -1, "checkpointer: a second call returns -1");
    ok(threads0 > 0 && thread_count() == threads0 + 1, "checkpointer: one more thread runs (%d -> %d)", threads0,
       thread_count());

    storage_watch_t w = { 0 };
    int primed = storage_changed(s, &w);
    int on_main0, other0, on_main1, other1;
    spy_counts(&on_main0, &other0);
    int wrote = write_many_pages(s);
    spy_counts(&on_main1, &other1);
    uint32_t frames = 0, backfilled = 0;
    wal_state(dir, &frames, &backfilled);
    ok(wrote == 0 && frames > STORAGE_CHECKPOINT_PAGES, "checkpointer: %d batches wrote %u WAL frames (%s)",
       CKPT_BATCHES, frames, storage_last_error(s));
    ok(on_main1 == on_main0,
       "checkpointer: the committing calls did not checkpoint (database file writes on the loop thread: %d)",
       on_main1 - on_main0);
    ok(wait_backfilled(dir, &frames), "checkpointer: the thread copied the whole WAL (%u frames) into the database",
       frames);
    spy_counts(&on_main1, &other1);
    ok(on_main1 == on_main0 && other1 > other0,
       "checkpointer: the database file was written by the other thread only (%d writes), not the loop's (%d)",
       other1 - other0, on_main1 - on_main0);

    /* The checkpoint and the next own commit (which restarts the WAL after it) are no change for the
     * watch; a commit by another connection is. */
    ok(primed == 1 && storage_changed(s, &w) == 0, "checkpointer: own writes + the checkpoint: watch unchanged");
    ok(storage_kv_set(s, "st", "u", "d", "after", "x", 1) == 0 && storage_changed(s, &w) == 0,
       "checkpointer: an own commit after the checkpoint: watch unchanged");
    wal_state(dir, &frames, &backfilled);
    ok(frames < STORAGE_CHECKPOINT_PAGES, "checkpointer: that commit restarted the WAL (%u frames)", frames);
    ok(sql_exec(dir, "INSERT INTO ckpt_scratch (b) VALUES (x'00')") == 0 && storage_changed(s, &w) == 1,
       "checkpointer: a commit by another connection: watch changed");

    /* deleting an account truncates the WAL (the deleted rows' old page images) on the thread */
    scram_creds_t c1 = creds(SCRAM_SHA1, 1), c256 = creds(SCRAM_SHA256, 2);
    struct stat sb;
    int made = storage_account_create(s, "gone", "a.example", &c1, &c256) == 0 &&
               storage_kv_set(s, "st", "gone", "a.example", "k", "secret", 6) == 0 &&
               stat(wal, &sb) == 0 && sb.st_size > 0;
    spy_counts(&on_main0, &other0);
    int deleted = storage_account_delete(s, "gone", "a.example") == 0;
    spy_counts(&on_main1, &other1);
    double deadline = now_s() + 60;
    while (stat(wal, &sb) == 0 && sb.st_size > 0 && now_s() < deadline) {
        struct timespec ts = { 0, 20 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    ok(made && deleted && on_main1 == on_main0 && stat(wal, &sb) == 0 && sb.st_size == 0,
       "checkpointer: an account deletion has the thread truncate the WAL (loop thread's database writes: %d)",
       on_main1 - on_main0);

    storage_close(s);
    ok(thread_count() == threads0, "checkpointer: storage_close joined the thread (%d threads)", thread_count());
    ok(stat(wal, &sb) != 0 ? errno == ENOENT : sb.st_size == 0, "checkpointer: no WAL content left after close");
    spy_remove();
    long long rows = sql_int(dir, "SELECT count(*) FROM ckpt_scratch");
    ok(rows == CKPT_BATCHES * CKPT_ROWS + 1, "checkpointer: every row is in the database after close (%lld)", rows);
    rm_rf(dir);
    free(dir);
}

/* The thread keeps checkpointing after the storage reopened its connection: the database file was
 * read-only at open (so was the thread's connection), is writable again, and the next write
 * reconnects (see test_readonly). A bitmask of failed checks (bit i = check i), 4 checks. */
#define CKPT_RO_CHECKS 4
static int ckpt_reconnect_checks(const char *base)
{
    int fail = 0;
    char dir[600], path[700];
    snprintf(dir, sizeof dir, "%s/ro", base);
    db_path(path, sizeof path, dir);
    if (spy_install() < 0) return (1 << CKPT_RO_CHECKS) - 1;
    storage_t *s = storage_open(dir, NULL);
    if (!s || storage_kv_set(s, "st", "u", "d", "k", "before", 6) < 0) fail = (1 << CKPT_RO_CHECKS) - 1;
    storage_close(s);
    s = NULL;
    if (!fail && chmod(path, 0400) == 0) s = storage_open(dir, NULL);
    if (!s || storage_checkpoint_thread(s) < 0 || storage_kv_set(s, "st", "u", "d", "k", "ro", 2) != -1)
        fail |= 1;
    chmod(path, 0600);
    int on_main0, other0, on_main1, other1;
    spy_counts(&on_main0, &other0);
    if (!s || storage_kv_set(s, "st", "u", "d", "k", "rw", 2) < 0 || write_many_pages(s) < 0) fail |= 2;
    spy_counts(&on_main1, &other1);
    if (on_main1 != on_main0) fail |= 4;    /* the reopened connection has the hook, not auto-checkpoints */
    uint32_t frames = 0;
    if (!(fail & 2) && !wait_backfilled(dir, &frames)) fail |= 8;
    storage_close(s);
    spy_remove();
    return fail;
}

static void test_checkpoint_reconnect(void)
{
    static const char *what[CKPT_RO_CHECKS] = {
        "checkpointer on a read-only db file: the thread starts, writes return -1",
        "checkpointer: writable again -> the storage reconnects and writes well over 10000 pages",
        "checkpointer: after the reconnect the commits still do not checkpoint on the loop thread",
        "checkpointer: after the reconnect the thread copies the whole WAL into the database",
    };
    checks_as_user("ckpt", ckpt_reconnect_checks, what, CKPT_RO_CHECKS);
}

int main(void)
{
    test_open_modes();

    char *dir = fresh_dir();
    char *err = NULL;
    storage_t *s = storage_open(dir, &err);
    if (!s) {
        printf("# cannot open storage in %s: %s\n", dir ? dir : "(mkdtemp failed)", err ? err : "");
        free(err);
        return 1;
    }
    test_accounts(s, dir);
    test_kv(s);
    test_lists(s);
    test_modules(s);
    test_delete(s, dir);
    test_user_events(s);
    storage_close(s);
    test_reopen(dir);
    rm_rf(dir);
    free(dir);

    test_migrations();
    test_disk_full();
    test_readonly();
    test_kill9();
    test_checkpoint_thread();
    test_checkpoint_reconnect();
    return done_testing();
}
