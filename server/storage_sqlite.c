/* server/storage_sqlite.c: the embedded SQLite driver behind storage.h: schema and migrations, cached
 * prepared statements, transactions, error recovery. The only file that includes sqlite3.h. */
#include "storage_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#define DB_NAME "civitas.db"
const char *const storage_files[] = {DB_NAME, DB_NAME "-wal", DB_NAME "-shm", DB_NAME "-journal", NULL};
#define BUSY_TIMEOUT_MS 5000
#define QUERY_CACHE_MAX 64   /* storage_query statements kept prepared; more are prepared per call */

/* ---- schema ---- */

/* core_migrations[i] takes the core schema from version i to i+1. Version 0 is a database without
 * our tables (new, or only schema_version at 0). Append new migrations; never edit old ones. */
static const char *const core_migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE accounts ("
    " domain TEXT NOT NULL, user TEXT NOT NULL,"
    " sha1_salt BLOB, sha1_iter INTEGER, sha1_stored BLOB, sha1_server BLOB,"
    " sha256_salt BLOB, sha256_iter INTEGER, sha256_stored BLOB, sha256_server BLOB,"
    " created INTEGER NOT NULL,"
    " PRIMARY KEY (domain, user));"
    "CREATE TABLE kv ("
    " store TEXT NOT NULL, user TEXT NOT NULL, domain TEXT NOT NULL, key TEXT NOT NULL, val BLOB NOT NULL,"
    " PRIMARY KEY (store, user, domain, key));"
    "CREATE TABLE list ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, list TEXT NOT NULL, user TEXT NOT NULL, domain TEXT NOT NULL,"
    " ts INTEGER NOT NULL, val BLOB NOT NULL);"
    "CREATE INDEX list_key ON list (list, user, domain, id);"
    /* storage_list_expire runs over a whole list (the archive may be large) */
    "CREATE INDEX list_ts ON list (list, ts);"
    "CREATE TABLE module_schema (module TEXT PRIMARY KEY, version INTEGER NOT NULL);"
    "CREATE TABLE user_tables (tbl TEXT PRIMARY KEY, user_col TEXT NOT NULL, domain_col TEXT NOT NULL);",
    /* 1 -> 2: account events (storage_user_event_next): what a deletion leaves for the server */
    "CREATE TABLE user_events ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, user TEXT NOT NULL, domain TEXT NOT NULL);"
    "CREATE TABLE user_event_rows ("
    " event INTEGER NOT NULL REFERENCES user_events (id) ON DELETE CASCADE, key TEXT NOT NULL, val BLOB NOT NULL);"
    "CREATE INDEX user_event_rows_event ON user_event_rows (event);",
};
#define CORE_VERSION ((int)(sizeof core_migrations / sizeof core_migrations[0]))

static const char *const core_tables[] = {
    "accounts", "kv", "list", "module_schema", "user_tables", "schema_version", "user_events", "user_event_rows",
};

/* ---- cached statements ---- */

enum {
    ST_BEGIN, ST_COMMIT, ST_ROLLBACK, ST_SAVEPOINT, ST_RELEASE, ST_ROLLBACK_TO,
    ST_ACC_CREATE, ST_ACC_GET, ST_ACC_EXISTS, ST_ACC_SET, ST_ACC_DEL, ST_ACC_LIST,
    ST_KV_SET, ST_KV_GET, ST_KV_DEL, ST_KV_EACH, ST_KV_DEL_USER,
    ST_LIST_APPEND, ST_LIST_EACH, ST_LIST_COUNT, ST_LIST_DEL_UPTO, ST_LIST_DEL_ONE, ST_LIST_EXPIRE,
    ST_LIST_DEL_USER, ST_UT_ALL, ST_UT_GET, ST_UT_PUT, ST_UT_DEL, ST_DATA_VERSION, ST_SYNC_NORMAL, ST_SYNC_FULL,
    ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_DATA_VERSION] = "PRAGMA data_version",
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_SYNC_NORMAL] = "PRAGMA synchronous = NORMAL",
    [ST_SYNC_FULL] = "PRAGMA synchronous = FULL",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SAVEPOINT] = "SAVEPOINT storage_op",
    [ST_RELEASE] = "RELEASE storage_op",
    [ST_ROLLBACK_TO] = "ROLLBACK TO storage_op",
    [ST_ACC_CREATE] = "INSERT INTO accounts (domain, user, sha1_salt, sha1_iter, sha1_stored, sha1_server,"
                      " sha256_salt, sha256_iter, sha256_stored, sha256_server, created)"
                      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                      " ON CONFLICT (domain, user) DO NOTHING",
    [ST_ACC_GET] = "SELECT sha1_salt, sha1_iter, sha1_stored, sha1_server,"
                   " sha256_salt, sha256_iter, sha256_stored, sha256_server"
                   " FROM accounts WHERE domain = ?1 AND user = ?2",
    [ST_ACC_EXISTS] = "SELECT 1 FROM accounts WHERE domain = ?1 AND user = ?2",
    [ST_ACC_SET] = "UPDATE accounts SET sha1_salt = ?3, sha1_iter = ?4, sha1_stored = ?5, sha1_server = ?6,"
                   " sha256_salt = ?7, sha256_iter = ?8, sha256_stored = ?9, sha256_server = ?10"
                   " WHERE domain = ?1 AND user = ?2",
    [ST_ACC_DEL] = "DELETE FROM accounts WHERE domain = ?1 AND user = ?2",
    [ST_ACC_LIST] = "SELECT user FROM accounts WHERE domain = ?1 ORDER BY user",
    [ST_KV_SET] = "INSERT INTO kv (store, user, domain, key, val) VALUES (?1, ?2, ?3, ?4, ?5)"
                  " ON CONFLICT (store, user, domain, key) DO UPDATE SET val = excluded.val",
    [ST_KV_GET] = "SELECT val FROM kv WHERE store = ?1 AND user = ?2 AND domain = ?3 AND key = ?4",
    [ST_KV_DEL] = "DELETE FROM kv WHERE store = ?1 AND user = ?2 AND domain = ?3 AND key = ?4",
    [ST_KV_EACH] = "SELECT key, val FROM kv WHERE store = ?1 AND user = ?2 AND domain = ?3 ORDER BY key",
    /* Both per-user deletions walk the few distinct store/list names through the primary index
     * (a "loose index scan": one index seek per name) and then delete (name, user, domain) ranges,
     * instead of scanning every row or paying for a second index on every write. */
    [ST_KV_DEL_USER] = "WITH RECURSIVE n(name) AS ("
                       " SELECT (SELECT store FROM kv ORDER BY store LIMIT 1)"
                       " UNION ALL"
                       " SELECT (SELECT store FROM kv WHERE store > n.name ORDER BY store LIMIT 1)"
                       " FROM n WHERE n.name IS NOT NULL)"
                       " DELETE FROM kv WHERE store IN (SELECT name FROM n WHERE name IS NOT NULL)"
                       " AND user = ?1 AND domain = ?2",
    [ST_LIST_APPEND] = "INSERT INTO list (list, user, domain, ts, val) VALUES (?1, ?2, ?3, ?4, ?5)",
    [ST_LIST_EACH] = "SELECT id, ts, val FROM list WHERE list = ?1 AND user = ?2 AND domain = ?3 AND id > ?4"
                     " ORDER BY id LIMIT ?5",
    [ST_LIST_COUNT] = "SELECT COUNT(*) FROM list WHERE list = ?1 AND user = ?2 AND domain = ?3",
    [ST_LIST_DEL_UPTO] = "DELETE FROM list WHERE list = ?1 AND user = ?2 AND domain = ?3 AND id <= ?4",
    [ST_LIST_DEL_ONE] = "DELETE FROM list WHERE list = ?1 AND user = ?2 AND domain = ?3 AND id = ?4",
    [ST_LIST_EXPIRE] = "DELETE FROM list WHERE list = ?1 AND ts < ?2",
    [ST_LIST_DEL_USER] = "WITH RECURSIVE n(name) AS ("
                         " SELECT (SELECT list FROM list ORDER BY list LIMIT 1)"
                         " UNION ALL"
                         " SELECT (SELECT list FROM list WHERE list > n.name ORDER BY list LIMIT 1)"
                         " FROM n WHERE n.name IS NOT NULL)"
                         " DELETE FROM list WHERE list IN (SELECT name FROM n WHERE name IS NOT NULL)"
                         " AND user = ?1 AND domain = ?2",
    [ST_UT_ALL] = "SELECT u.tbl, u.user_col, u.domain_col FROM user_tables u"
                  " JOIN sqlite_master m ON m.type = 'table' AND m.name = u.tbl ORDER BY u.tbl",
    [ST_UT_GET] = "SELECT 1 FROM user_tables WHERE tbl = ?1 AND user_col = ?2 AND domain_col = ?3",
    [ST_UT_PUT] = "INSERT INTO user_tables (tbl, user_col, domain_col) VALUES (?1, ?2, ?3)"
                  " ON CONFLICT (tbl) DO UPDATE SET user_col = excluded.user_col, domain_col = excluded.domain_col",
    [ST_UT_DEL] = "DELETE FROM user_tables WHERE tbl = ?1",
};

typedef struct query {
    struct query *next;
    char *sql;
    sqlite3_stmt *st;
} query_t;

struct storage {
    sqlite3 *db;              /* the connection; replaced by reconnect() */
    char *path;               /* data_dir/civitas.db */
    sqlite3_stmt *st[ST_COUNT]; /* prepared on first use, finalised by close/reconnect */
    query_t *queries;         /* storage_query's cache, most recent first */
    int nqueries;
    int in_cb;                /* inside an iteration callback: reentry is refused */
    int reconnect;            /* the connection saw the file read-only: reopen when it is writable */
    unsigned generation;      /* counts connections (reconnect()): data_version is per connection */
    int tx_depth;             /* open storage_tx_begin() levels */
    int tx_own;               /* the outermost level began the transaction (else: a savepoint in a batch) */
    int tx_lazy;              /* that transaction commits with synchronous = NORMAL (storage_tx_begin_lazy) */
    struct checkpointer *ckpt; /* storage_checkpoint_thread(), or NULL */
    char err[512];            /* storage_last_error() */
};

static const unsigned char empty_blob[1];

/* ---- errors ---- */

static void set_err(storage_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(storage_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof s->err, fmt, ap);
    va_end(ap);
}

/* Record a failed SQLite call. A connection that found its file read-only keeps it open read-only
 * forever, so remember to reopen it (see enter()). */
static int db_fail(storage_t *s, int rc, const char *what)
{
    if ((rc & 0xff) == SQLITE_READONLY) s->reconnect = 1;
    set_err(s, "%s: %s (sqlite %d)", what, sqlite3_errmsg(s->db), rc);
    return -1;
}

static char *msg_dup(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *msg_dup(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *m = malloc((size_t)n + 1);
    if (!m) return NULL;
    va_start(ap, fmt);
    vsnprintf(m, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return m;
}

/* ---- connection ---- */

static void finalize_all(storage_t *s)
{
    for (int i = 0; i < ST_COUNT; i++) {
        sqlite3_finalize(s->st[i]);
        s->st[i] = NULL;
    }
    while (s->queries) {
        query_t *q = s->queries;
        s->queries = q->next;
        sqlite3_finalize(q->st);
        free(q->sql);
        free(q);
    }
    s->nqueries = 0;
}

/* Open path with our settings. 0 and *out, or -1 and a message in errbuf. */
static int connect_db(const char *path, sqlite3 **out, char *errbuf, size_t errlen)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
                             | SQLITE_OPEN_NOFOLLOW, NULL);
    if (rc != SQLITE_OK) {
        snprintf(errbuf, errlen, "cannot open %s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close_v2(db);
        return -1;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    /* trusted_schema=OFF: SQL functions in the schema cannot be abused by a tampered file.
     * wal_autocheckpoint 10000 pages (40 MiB of WAL at most between checkpoints, truncated at close)
     * instead of 1000: a page rewritten by many commits (an account's index page in the message
     * archive) is copied into the database once per checkpoint; +25-30% chat messages per server
     * CPU-second with mam in the bench. cache_size 32 MiB (SQLite's default is 2 MiB; pages are
     * allocated as they are used, so an idle server stays small): with 2 MiB, an archive batch of a
     * busy server spilled dirty pages into the WAL in the middle of its transaction and read back
     * evicted index pages, about a third of the archive's cost in the chat bench. */
    char *msg = NULL;
    rc = sqlite3_exec(db, "PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON; PRAGMA trusted_schema = OFF;"
                      " PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 10000;"   /* STORAGE_CHECKPOINT_PAGES */
                      " PRAGMA cache_size = -32768;",
                      NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        snprintf(errbuf, errlen, "%s: %s", path, msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        sqlite3_close_v2(db);
        return -1;
    }
    sqlite3_stmt *st = NULL;
    rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    const char *mode = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    if (!mode || strcmp(mode, "wal") != 0) {
        snprintf(errbuf, errlen, "%s: cannot enable WAL journal: %s", path,
                 mode ? mode : sqlite3_errmsg(db));
        sqlite3_finalize(st);
        sqlite3_close_v2(db);
        return -1;
    }
    sqlite3_finalize(st);
    *out = db;
    return 0;
}

/* SQLite creates the -wal and -shm files with the mode of the database file, so while that file
 * is read-only they are born read-only too, and would keep the database read-only after the
 * database file is writable again. Called only when the database file is writable: then its side
 * files must be too, and like it private (0600). Best effort (another owner's files stay as they are). */
static void fix_side_files(const char *path)
{
    static const char *const suffix[] = { "-wal", "-shm" };
    for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
        char side[PATH_MAX];
        struct stat sb;
        if ((size_t)snprintf(side, sizeof side, "%s%s", path, suffix[i]) >= sizeof side) continue;
        if (lstat(side, &sb) == 0 && S_ISREG(sb.st_mode) && (sb.st_mode & 07777) != 0600) chmod(side, 0600);
    }
}

/* Reopen the connection after a read-only condition ended, so writes work again: a connection
 * that found its file read-only opened it O_RDONLY and stays so. Only between operations, never
 * inside a batch or a callback. The old connection is closed first so that nothing it opened
 * read-only (descriptors, the shared-memory index) is shared with the new one. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int pages);

static int reconnect(storage_t *s)
{
    if (s->db) {
        if (access(s->path, W_OK) != 0) return 0;    /* still read-only: cheap check, keep using it */
        fix_side_files(s->path);
        finalize_all(s);
        sqlite3_close_v2(s->db);
        s->db = NULL;
    }
    char msg[sizeof s->err];
    if (connect_db(s->path, &s->db, msg, sizeof msg) < 0) {
        set_err(s, "reopen: %s", msg);    /* s->db stays NULL: the next call tries again */
        return -1;
    }
    s->reconnect = sqlite3_db_readonly(s->db, "main") == 1;
    s->generation++;
    if (s->ckpt) sqlite3_wal_hook(s->db, wal_hook, s->ckpt);
    return 0;
}

/* ---- the checkpointer thread (storage_checkpoint_thread) ----
 * The loop thread's connection gets a WAL hook instead of SQLite's auto-checkpoint (which would copy
 * up to STORAGE_CHECKPOINT_PAGES pages and fsync the database inside whichever commit crossed the
 * mark: a stall of the loop of about 100 ms on this project's VM, the chat bench's p99 latency with
 * mam, and seconds on a slow disk). The hook only wakes the thread; the thread's own connection
 * runs a PASSIVE checkpoint, which never blocks the writer; the writer restarts the WAL from its
 * beginning at its next commit after a complete one. */
#define CHECKPOINTER_BUSY_MS 500

typedef struct checkpointer {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int want, stop;           /* want: 1 a PASSIVE checkpoint, 2 a TRUNCATE one (an account deleted) */
    int truncate_due;         /* a TRUNCATE that could not run yet: at the next wake-up */
    sqlite3 *db;              /* NULL after a failed reopen: the next wake-up tries again */
    const char *path;         /* the storage's */
} checkpointer_t;

static void *checkpointer_main(void *arg)
{
    checkpointer_t *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->want && !c->stop) pthread_cond_wait(&c->cv, &c->mu);
        if (c->stop) break;
        int truncate = (c->want & 2) || c->truncate_due;
        c->want = 0;
        pthread_mutex_unlock(&c->mu);
        /* Opened while the file was read-only, the connection stays so and cannot checkpoint (see
         * reconnect()): reopen it, closed first as there, once the file is writable again. */
        if (c->db && sqlite3_db_readonly(c->db, "main") == 1 && access(c->path, W_OK) == 0) {
            sqlite3_close_v2(c->db);
            c->db = NULL;
        }
        char msg[256];
        if (!c->db && connect_db(c->path, &c->db, msg, sizeof msg) == 0)    /* stays NULL when it fails */
            sqlite3_busy_timeout(c->db, CHECKPOINTER_BUSY_MS);
        int rc = c->db ? sqlite3_wal_checkpoint_v2(c->db, NULL, truncate ? SQLITE_CHECKPOINT_TRUNCATE
                                                                      : SQLITE_CHECKPOINT_PASSIVE, NULL, NULL)
                       : SQLITE_CANTOPEN;
        pthread_mutex_lock(&c->mu);
        c->truncate_due = truncate && rc != SQLITE_OK;
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static int wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
    checkpointer_t *c = arg;
    /* The WAL restarts from its beginning only when a write begins after a checkpoint copied all
     * of it; a PASSIVE checkpoint beside back-to-back commits never catches up, and a thread that
     * cannot open its connection never checkpoints. Far past the mark the loop checkpoints itself
     * (PASSIVE: it copies what the thread has not, or gives way at once to the thread's). */
    if (pages >= 4 * STORAGE_CHECKPOINT_PAGES)
        sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    else if (pages >= STORAGE_CHECKPOINT_PAGES) {
        pthread_mutex_lock(&c->mu);
        c->want |= 1;
        pthread_cond_signal(&c->cv);
        pthread_mutex_unlock(&c->mu);
    }
    return SQLITE_OK;
}

static void checkpointer_stop(storage_t *s)
{
    checkpointer_t *c = s->ckpt;
    if (!c) return;
    if (s->db) sqlite3_wal_autocheckpoint(s->db, STORAGE_CHECKPOINT_PAGES);   /* removes the hook */
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    sqlite3_close_v2(c->db);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
    s->ckpt = NULL;
}

int storage_checkpoint_thread(storage_t *s)
{
    if (!s || !s->db || s->ckpt) return -1;
    checkpointer_t *c = calloc(1, sizeof *c);
    char msg[sizeof s->err];
    if (!c) return -1;
    if (connect_db(s->path, &c->db, msg, sizeof msg) < 0) {
        set_err(s, "checkpointer: %s", msg);
        free(c);
        return -1;
    }
    /* a TRUNCATE holds the write lock while it waits: well below the writers' 5 s (it is retried) */
    sqlite3_busy_timeout(c->db, CHECKPOINTER_BUSY_MS);
    c->path = s->path;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    if (pthread_create(&c->thread, NULL, checkpointer_main, c) != 0) {
        set_err(s, "checkpointer: cannot start a thread");
        sqlite3_close_v2(c->db);
        pthread_cond_destroy(&c->cv);
        pthread_mutex_destroy(&c->mu);
        free(c);
        return -1;
    }
    s->ckpt = c;
    sqlite3_wal_hook(s->db, wal_hook, c);
    return 0;
}

/* Entry of every public operation. */
static int enter(storage_t *s)
{
    if (!s) return -1;
    if (s->in_cb) {
        set_err(s, "storage called from inside an iteration callback");
        return -1;
    }
    if ((!s->db || (s->reconnect && sqlite3_get_autocommit(s->db))) && reconnect(s) < 0) return -1;
    if (s->tx_depth > 0 && sqlite3_get_autocommit(s->db)) {
        /* SQLite rolled the transaction back after an error: refuse to go on outside it, where
         * each write would commit on its own. */
        set_err(s, "the transaction was rolled back after an error: end it with storage_tx_rollback");
        return -1;
    }
    return 0;
}

static sqlite3_stmt *stmt(storage_t *s, int id)
{
    if (!s->st[id]) {
        int rc = sqlite3_prepare_v3(s->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &s->st[id], NULL);
        if (rc != SQLITE_OK) {
            db_fail(s, rc, "prepare");
            sqlite3_finalize(s->st[id]);
            s->st[id] = NULL;
        }
    }
    return s->st[id];
}

static void done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* Step a statement that returns no rows, then reset it. 0/-1. */
static int run(storage_t *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    int r = rc == SQLITE_DONE ? 0 : db_fail(s, rc, what);
    done(st);
    return r;
}

static int run_id(storage_t *s, int id, const char *what)
{
    sqlite3_stmt *st = stmt(s, id);
    return st ? run(s, st, what) : -1;
}

/* Text binding; every key string goes through here. */
static int bind_text(storage_t *s, sqlite3_stmt *st, int idx, const char *v)
{
    int rc = sqlite3_bind_text(st, idx, v, -1, SQLITE_STATIC);
    return rc == SQLITE_OK ? 0 : db_fail(s, rc, "bind");
}

static int bind_blob(storage_t *s, sqlite3_stmt *st, int idx, const void *v, size_t len)
{
    /* bind_blob with a NULL pointer binds SQL NULL: an empty value must stay an empty blob. */
    int rc = len == 0 ? sqlite3_bind_zeroblob(st, idx, 0)
                      : sqlite3_bind_blob64(st, idx, v, (sqlite3_uint64)len, SQLITE_STATIC);
    return rc == SQLITE_OK ? 0 : db_fail(s, rc, "bind");
}

/* Bind the strings strs[0..n-1] to ?1..?n, all of which must be non-NULL. The statement is left
 * reset on failure. 0/-1. */
static int bind_keys(storage_t *s, sqlite3_stmt *st, const char *const *strs, int n)
{
    for (int i = 0; i < n; i++) {
        if (!strs[i]) {
            set_err(s, "invalid argument: NULL string");
            done(st);
            return -1;
        }
        if (bind_text(s, st, i + 1, strs[i]) < 0) {
            done(st);
            return -1;
        }
    }
    return 0;
}

/* Prepare cached statement id and bind n key strings: the common start of most operations. */
static sqlite3_stmt *keyed(storage_t *s, int id, const char *const *strs, int n)
{
    if (enter(s) < 0) return NULL;
    sqlite3_stmt *st = stmt(s, id);
    if (!st || bind_keys(s, st, strs, n) < 0) return NULL;
    return st;
}

/* ---- transactions used inside one operation: nest as a savepoint inside a caller's batch ---- */

/* Returns 1 (own transaction) or 2 (savepoint in a batch), or -1. */
static int tx_begin(storage_t *s)
{
    int outer = sqlite3_get_autocommit(s->db);
    if (run_id(s, outer ? ST_BEGIN : ST_SAVEPOINT, "begin") < 0) return -1;
    return outer ? 1 : 2;
}

static int tx_end(storage_t *s, int kind, int ok)
{
    if (ok) {
        if (run_id(s, kind == 1 ? ST_COMMIT : ST_RELEASE, "commit") == 0) return 0;
        if (kind == 2) return -1;    /* the batch owner rolls back */
    }
    if (sqlite3_get_autocommit(s->db)) return -1;    /* SQLite already rolled everything back */
    char keep[sizeof s->err];
    memcpy(keep, s->err, sizeof keep);    /* report the first failure, not the rollback's */
    if (kind == 1) run_id(s, ST_ROLLBACK, "rollback");
    else if (run_id(s, ST_ROLLBACK_TO, "rollback") == 0) run_id(s, ST_RELEASE, "release");
    memcpy(s->err, keep, sizeof keep);
    return -1;
}

int storage_begin(storage_t *s)
{
    if (enter(s) < 0) return -1;
    if (!sqlite3_get_autocommit(s->db)) {
        set_err(s, "begin: a batch is already open");
        return -1;
    }
    return run_id(s, ST_BEGIN, "begin");
}

int storage_commit(storage_t *s)
{
    if (enter(s) < 0) return -1;
    if (sqlite3_get_autocommit(s->db)) {
        set_err(s, "commit: no batch is open (it was rolled back after an error)");
        return -1;
    }
    if (run_id(s, ST_COMMIT, "commit") == 0) return 0;
    char keep[sizeof s->err];
    memcpy(keep, s->err, sizeof keep);
    if (!sqlite3_get_autocommit(s->db)) run_id(s, ST_ROLLBACK, "rollback");
    memcpy(s->err, keep, sizeof keep);
    return -1;
}

int storage_rollback(storage_t *s)
{
    if (enter(s) < 0) return -1;
    if (sqlite3_get_autocommit(s->db)) return 0;
    return run_id(s, ST_ROLLBACK, "rollback");
}

/* ---- nested transactions (store_begin): levels counted, inner levels are savepoints ---- */

/* Back to synchronous = FULL after a lazy transaction ended (committed or rolled back). */
static void end_lazy(storage_t *s)
{
    if (!s->tx_lazy) return;
    s->tx_lazy = 0;
    if (run_id(s, ST_SYNC_FULL, "synchronous") < 0) {
        /* never leave the connection lazy: every other commit relies on FULL (setting a pragma
         * outside a transaction touches no file; this cannot fail short of memory corruption) */
        if (s->db && sqlite3_exec(s->db, "PRAGMA synchronous = FULL", NULL, NULL, NULL) != SQLITE_OK) abort();
    }
}

/* SQLite refuses to change synchronous inside a transaction ("Safety level may not be changed
 * inside a transaction"), so the lazy level is set before BEGIN and undone after the outermost
 * COMMIT or ROLLBACK (end_lazy). */
int storage_tx_begin_lazy(storage_t *s)
{
    if (enter(s) < 0) return -1;
    if (s->tx_depth > 0 || !sqlite3_get_autocommit(s->db)) return storage_tx_begin(s);
    if (run_id(s, ST_SYNC_NORMAL, "synchronous") < 0) return storage_tx_begin(s);
    s->tx_lazy = 1;
    if (storage_tx_begin(s) < 0) {
        end_lazy(s);
        return -1;
    }
    return 0;
}

int storage_tx_begin(storage_t *s)
{
    if (enter(s) < 0) return -1;
    int own = s->tx_depth == 0 && sqlite3_get_autocommit(s->db);
    if (run_id(s, own ? ST_BEGIN : ST_SAVEPOINT, "begin transaction") < 0) return -1;
    if (s->tx_depth == 0) s->tx_own = own;
    s->tx_depth++;
    return 0;
}

/* The common start of commit and rollback: the level to end, or -1. *gone: SQLite already rolled
 * the whole transaction back after an error. */
static int tx_level(storage_t *s, int *gone)
{
    if (!s) return -1;
    if (s->in_cb) {
        set_err(s, "storage called from inside an iteration callback");
        return -1;
    }
    if (s->tx_depth == 0) {
        set_err(s, "no transaction is open");
        return -1;
    }
    *gone = !s->db || sqlite3_get_autocommit(s->db);
    return s->tx_depth--;
}

int storage_tx_commit(storage_t *s)
{
    int gone, level = tx_level(s, &gone);
    if (level < 0) return -1;
    if (gone) {
        if (level == 1) end_lazy(s);
        set_err(s, "commit: the transaction was rolled back after an error");
        return -1;
    }
    int outer = level == 1 && s->tx_own;
    if (run_id(s, outer ? ST_COMMIT : ST_RELEASE, "commit") == 0) {
        if (outer) end_lazy(s);
        return 0;
    }
    if (outer && !sqlite3_get_autocommit(s->db)) {
        char keep[sizeof s->err];
        memcpy(keep, s->err, sizeof keep);
        run_id(s, ST_ROLLBACK, "rollback");
        end_lazy(s);
        memcpy(s->err, keep, sizeof keep);
    } else if (outer && sqlite3_get_autocommit(s->db)) {
        end_lazy(s);
    }
    return -1;
}

int storage_tx_rollback(storage_t *s)
{
    int gone, level = tx_level(s, &gone);
    if (level < 0) return -1;
    if (gone) {
        if (level == 1) end_lazy(s);
        return 0;
    }
    if (level == 1 && s->tx_own) {
        int rc = run_id(s, ST_ROLLBACK, "rollback");
        end_lazy(s);
        return rc;
    }
    if (run_id(s, ST_ROLLBACK_TO, "rollback") < 0) return -1;
    return run_id(s, ST_RELEASE, "rollback");
}

int storage_tx_depth(storage_t *s)
{
    return s ? s->tx_depth : 0;
}

/* ---- open, migrate, close ---- */

static int mkdir_p(const char *dir, char *errbuf, size_t errlen)
{
    char *p = strdup(dir);
    if (!p) {
        snprintf(errbuf, errlen, "out of memory");
        return -1;
    }
    for (char *c = p + 1; ; c++) {
        if (*c != '/' && *c != '\0') continue;
        char saved = *c;
        *c = '\0';
        if (mkdir(p, 0700) < 0 && errno != EEXIST) {
            snprintf(errbuf, errlen, "cannot create directory %s: %s", p, strerror(errno));
            free(p);
            return -1;
        }
        *c = saved;
        if (saved == '\0') break;
    }
    free(p);
    struct stat sb;
    if (stat(dir, &sb) < 0 || !S_ISDIR(sb.st_mode)) {
        snprintf(errbuf, errlen, "%s is not a directory", dir);
        return -1;
    }
    return 0;
}

int storage_make_dir(const char *data_dir, char **err)
{
    char msg[512];
    if (err) *err = NULL;
    if (!data_dir || !*data_dir) snprintf(msg, sizeof msg, "no data_dir given");
    else if (mkdir_p(data_dir, msg, sizeof msg) == 0) return 0;
    if (err) *err = strdup(msg);
    return -1;
}

/* Create the database file ourselves so it is born 0600 whatever the umask; tighten an existing
 * one that group or others could read. SQLite gives the -wal and -shm files the same mode. */
static int prepare_file(const char *path, char *errbuf, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0) {
        close(fd);
        return 0;
    }
    struct stat sb;
    if (errno != EEXIST || lstat(path, &sb) < 0) {
        snprintf(errbuf, errlen, "cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISREG(sb.st_mode)) {
        snprintf(errbuf, errlen, "%s is not a regular file", path);
        return -1;
    }
    if ((sb.st_mode & 077) && chmod(path, sb.st_mode & 0700) < 0) {
        snprintf(errbuf, errlen, "cannot restrict the mode of %s: %s", path, strerror(errno));
        return -1;
    }
    if (access(path, W_OK) == 0) fix_side_files(path);
    return 0;
}

/* One-off statement returning one integer (text parameter ?1 if p1). 0 and *out (dflt when no row)
 * or -1. */
static int query_int(storage_t *s, const char *sql, const char *p1, int64_t dflt, int64_t *out)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK && p1) rc = sqlite3_bind_text(st, 1, p1, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    *out = rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL ? sqlite3_column_int64(st, 0) : dflt;
    int r = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_fail(s, rc, "query");
    sqlite3_finalize(st);
    return r;
}

/* Version of the core schema (module NULL) or of a module's tables. */
static int schema_version(storage_t *s, const char *module, int64_t *v)
{
    if (module)
        return query_int(s, "SELECT version FROM module_schema WHERE module = ?1", module, 0, v);
    int64_t has = 0;
    if (query_int(s, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
                  NULL, 0, &has) < 0)
        return -1;
    if (!has) {
        *v = 0;
        return 0;
    }
    return query_int(s, "SELECT MAX(version) FROM schema_version", NULL, 0, v);
}

static int record_version(storage_t *s, const char *module, int64_t v)
{
    const char *sql = module ? "INSERT INTO module_schema (module, version) VALUES (?1, ?2)"
                               " ON CONFLICT (module) DO UPDATE SET version = excluded.version"
                             : "INSERT INTO schema_version (version, applied) VALUES (?2, ?3)";
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK && module) rc = sqlite3_bind_text(st, 1, module, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 2, v);
    if (rc == SQLITE_OK && !module) rc = sqlite3_bind_int64(st, 3, (int64_t)time(NULL));
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    int r = rc == SQLITE_DONE ? 0 : db_fail(s, rc, "record schema version");
    sqlite3_finalize(st);
    return r;
}

/* Apply steps[v..n-1] one transaction each; at version 0 with create given, create alone takes the
 * schema to n. The version is read again inside each transaction, under the write lock, so two
 * processes starting at once never apply a step twice. */
static int migrate(storage_t *s, const char *module, const char *create, const char *const *steps, int n,
                   int (*check)(void *ud), void *ud)
{
    const char *what = module ? module : "core schema";
    for (;;) {
        int64_t v;
        if (schema_version(s, module, &v) < 0) return -1;
        if (v > n) {
            set_err(s, "%s version %lld is newer than this build knows (%d): refusing to use it",
                    what, (long long)v, n);
            return -1;
        }
        if (v == n) return 0;
        if (run_id(s, ST_BEGIN, "begin migration") < 0) return -1;
        int ok = schema_version(s, module, &v) == 0, checked = 0;
        char keep_err[sizeof s->err];
        if (ok && v < n) {
            char *msg = NULL;
            int rc = module ? SQLITE_OK
                            : sqlite3_exec(s->db, "CREATE TABLE IF NOT EXISTS schema_version"
                                           " (version INTEGER PRIMARY KEY, applied INTEGER NOT NULL)",
                                           NULL, NULL, &msg);
            int64_t to = v == 0 && create ? n : v + 1;
            if (rc == SQLITE_OK) {
                sqlite3_free(msg);
                msg = NULL;
                rc = sqlite3_exec(s->db, v == 0 && create ? create : steps[v], NULL, NULL, &msg);
            }
            if (rc != SQLITE_OK) {
                set_err(s, "%s migration %lld -> %lld failed: %s", what, (long long)v, (long long)to,
                        msg ? msg : sqlite3_errstr(rc));
                if ((rc & 0xff) == SQLITE_READONLY) s->reconnect = 1;
                ok = 0;
            }
            sqlite3_free(msg);
            ok = ok && record_version(s, module, to) == 0;
            if (ok && to == n && check && check(ud) < 0) {
                memcpy(keep_err, s->err, sizeof keep_err);
                ok = 0;
                checked = 1;
            }
        }
        if (tx_end(s, 1, ok) < 0) {
            if (checked) memcpy(s->err, keep_err, sizeof keep_err);
            return -1;
        }
    }
}

storage_t *storage_open(const char *data_dir, char **err)
{
    char msg[512];
    storage_t *s = NULL;
    if (err) *err = NULL;
    if (!data_dir || !*data_dir) {
        snprintf(msg, sizeof msg, "no data_dir given");
        goto fail;
    }
    if (mkdir_p(data_dir, msg, sizeof msg) < 0) goto fail;
    s = calloc(1, sizeof *s);
    size_t dl = strlen(data_dir);
    if (s) s->path = msg_dup("%s%s" DB_NAME, data_dir, data_dir[dl - 1] == '/' ? "" : "/");
    if (!s || !s->path) {
        snprintf(msg, sizeof msg, "out of memory");
        goto fail;
    }
    if (prepare_file(s->path, msg, sizeof msg) < 0 || connect_db(s->path, &s->db, msg, sizeof msg) < 0)
        goto fail;
    if (migrate(s, NULL, NULL, core_migrations, CORE_VERSION, NULL, NULL) < 0) {
        if (err) *err = msg_dup("%s: %s", s->path, s->err);
        storage_close(s);
        return NULL;
    }
    s->reconnect = sqlite3_db_readonly(s->db, "main") == 1;
    snprintf(s->err, sizeof s->err, "no error");
    return s;
fail:
    if (err) *err = msg_dup("%s", msg);
    storage_close(s);
    return NULL;
}

void storage_close(storage_t *s)
{
    if (!s) return;
    checkpointer_stop(s);
    if (s->db) {
        if (!sqlite3_get_autocommit(s->db)) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        finalize_all(s);
        sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
        sqlite3_close_v2(s->db);
    }
    free(s->path);
    free(s);
}

const char *storage_last_error(storage_t *s)
{
    return s ? s->err : "no storage";
}

/* ---- accounts ---- */

static int creds_valid(const scram_creds_t *c, scram_hash_t h)
{
    return !c || (c->hash == h && c->salt_len >= 1 && c->salt_len <= SCRAM_MAX_SALT && c->iterations >= 1
                  && c->iterations <= INT_MAX);
}

/* Bind one hash's four columns starting at index idx (all NULL when c is NULL). */
static int bind_creds(storage_t *s, sqlite3_stmt *st, int idx, const scram_creds_t *c)
{
    if (!c) return 0;    /* cleared bindings are NULL */
    size_t kl = scram_hash_len(c->hash);
    if (bind_blob(s, st, idx, c->salt, c->salt_len) < 0) return -1;
    int rc = sqlite3_bind_int64(st, idx + 1, (int64_t)c->iterations);
    if (rc != SQLITE_OK) return db_fail(s, rc, "bind");
    if (bind_blob(s, st, idx + 2, c->stored_key, kl) < 0) return -1;
    return bind_blob(s, st, idx + 3, c->server_key, kl);
}

/* The common part of create and set_creds: statement id, keys and both creds bound. */
static sqlite3_stmt *account_write_stmt(storage_t *s, int id, const char *user, const char *domain,
                                        const scram_creds_t *sha1, const scram_creds_t *sha256)
{
    if (enter(s) < 0) return NULL;
    if (!user || !*user || !domain || !*domain) {
        set_err(s, "invalid argument: empty user or domain");
        return NULL;
    }
    if ((!sha1 && !sha256) || !creds_valid(sha1, SCRAM_SHA1) || !creds_valid(sha256, SCRAM_SHA256)) {
        set_err(s, "invalid credentials (wrong hash, salt length or iteration count)");
        return NULL;
    }
    const char *keys[] = { domain, user };
    sqlite3_stmt *st = stmt(s, id);
    if (!st || bind_keys(s, st, keys, 2) < 0) return NULL;
    if (bind_creds(s, st, 3, sha1) < 0 || bind_creds(s, st, 7, sha256) < 0) {
        done(st);
        return NULL;
    }
    return st;
}

static int record_event(storage_t *s, const char *kind, const char *user, const char *domain);

/* One account write and, when it changed a row, its account event, in one transaction. */
static int account_write(storage_t *s, sqlite3_stmt *st, const char *what, const char *event,
                         const char *user, const char *domain)
{
    int kind = tx_begin(s);
    if (kind < 0) {
        done(st);
        return -1;
    }
    int ok = run(s, st, what) == 0, changed = ok && sqlite3_changes(s->db) > 0;
    if (changed && record_event(s, event, user, domain) < 0) ok = 0;
    if (tx_end(s, kind, ok) < 0) return -1;
    return changed ? 0 : 1;
}

int storage_account_create(storage_t *s, const char *user, const char *domain,
                           const scram_creds_t *sha1, const scram_creds_t *sha256)
{
    sqlite3_stmt *st = account_write_stmt(s, ST_ACC_CREATE, user, domain, sha1, sha256);
    if (!st) return -1;
    int rc = sqlite3_bind_int64(st, 11, (int64_t)time(NULL));
    if (rc != SQLITE_OK) {
        done(st);
        return db_fail(s, rc, "bind");
    }
    return account_write(s, st, "create account", STORAGE_EVENT_USER_CREATED, user, domain);
}

int storage_account_set_creds(storage_t *s, const char *user, const char *domain,
                              const scram_creds_t *sha1, const scram_creds_t *sha256)
{
    sqlite3_stmt *st = account_write_stmt(s, ST_ACC_SET, user, domain, sha1, sha256);
    if (!st) return -1;
    return account_write(s, st, "set credentials", STORAGE_EVENT_PASSWORD_CHANGED, user, domain);
}

/* Copy a blob column into dst, which must receive exactly want bytes (want 0: 1..max bytes). */
static int column_bytes(sqlite3_stmt *st, int col, unsigned char *dst, size_t want, size_t max, size_t *got)
{
    const void *p = sqlite3_column_blob(st, col);
    size_t n = (size_t)sqlite3_column_bytes(st, col);
    if (!p || (want ? n != want : (n < 1 || n > max))) return -1;
    memcpy(dst, p, n);
    if (got) *got = n;
    return 0;
}

int storage_account_get(storage_t *s, const char *user, const char *domain, scram_hash_t h, scram_creds_t *out)
{
    const char *keys[] = { domain, user };
    if (!out || (h != SCRAM_SHA1 && h != SCRAM_SHA256)) {
        if (s) set_err(s, "invalid argument");
        return -1;
    }
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st = keyed(s, ST_ACC_GET, keys, 2);
    if (!st) return -1;
    int rc = sqlite3_step(st), r;
    int c = h == SCRAM_SHA1 ? 0 : 4;
    if (rc == SQLITE_DONE || (rc == SQLITE_ROW && sqlite3_column_type(st, c) == SQLITE_NULL)) {
        r = 1;
    } else if (rc != SQLITE_ROW) {
        r = db_fail(s, rc, "get account");
    } else {
        size_t kl = scram_hash_len(h);
        int64_t it = sqlite3_column_int64(st, c + 1);
        out->hash = h;
        out->iterations = (unsigned)it;
        r = 0;
        if (it < 1 || it > INT_MAX || column_bytes(st, c, out->salt, 0, SCRAM_MAX_SALT, &out->salt_len) < 0
            || column_bytes(st, c + 2, out->stored_key, kl, kl, NULL) < 0
            || column_bytes(st, c + 3, out->server_key, kl, kl, NULL) < 0) {
            set_err(s, "stored credentials are malformed");
            memset(out, 0, sizeof *out);
            r = -1;
        }
    }
    done(st);
    return r;
}

int storage_account_exists(storage_t *s, const char *user, const char *domain)
{
    const char *keys[] = { domain, user };
    sqlite3_stmt *st = keyed(s, ST_ACC_EXISTS, keys, 2);
    if (!st) return -1;
    int rc = sqlite3_step(st);
    int r = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : db_fail(s, rc, "account exists");
    done(st);
    return r;
}

int64_t storage_data_version(storage_t *s)
{
    sqlite3_stmt *st = keyed(s, ST_DATA_VERSION, NULL, 0);
    if (!st) return -1;
    int rc = sqlite3_step(st);
    int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : db_fail(s, rc, "data version");
    done(st);
    return v;
}

int storage_changed(storage_t *s, storage_watch_t *w)
{
    if (!w) return -1;
    int64_t v = storage_data_version(s);
    if (v < 0) return -1;
    int changed = !w->primed || w->generation != s->generation || w->version != v;
    w->primed = 1;
    w->generation = s->generation;
    w->version = v;
    return changed;
}

int64_t storage_last_insert_id(storage_t *s)
{
    return s && s->db ? (int64_t)sqlite3_last_insert_rowid(s->db) : -1;
}

typedef struct user_table {
    char *tbl, *ucol, *dcol;
} user_table_t;

static void user_tables_free(user_table_t *t, int n)
{
    for (int i = 0; i < n; i++) {
        free(t[i].tbl);
        free(t[i].ucol);
        free(t[i].dcol);
    }
    free(t);
}

/* Read the registered user tables that exist now. Count, or -1. */
static int user_tables_load(storage_t *s, user_table_t **out)
{
    *out = NULL;
    sqlite3_stmt *st = stmt(s, ST_UT_ALL);
    if (!st) return -1;
    user_table_t *t = NULL;
    int n = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        user_table_t *nt = realloc(t, (size_t)(n + 1) * sizeof *t);
        if (!nt) break;
        t = nt;
        t[n].tbl = strdup((const char *)sqlite3_column_text(st, 0));
        t[n].ucol = strdup((const char *)sqlite3_column_text(st, 1));
        t[n].dcol = strdup((const char *)sqlite3_column_text(st, 2));
        n++;
        if (!t[n - 1].tbl || !t[n - 1].ucol || !t[n - 1].dcol) break;
    }
    if (rc != SQLITE_DONE) {
        if (rc == SQLITE_ROW) set_err(s, "out of memory");
        else db_fail(s, rc, "read user tables");
        done(st);
        user_tables_free(t, n);
        return -1;
    }
    done(st);
    *out = t;
    return n;
}

/* DELETE the rows of (user, domain) from one registered table. Names were validated when they
 * were registered and are quoted here anyway. An empty domain column (tables declared through
 * store.h) means that the user column holds the bare JID, "user@domain" (or "domain"). */
static int delete_from_user_table(storage_t *s, const user_table_t *t, const char *user, const char *domain)
{
    char *bare = *t->dcol ? NULL : *user ? msg_dup("%s@%s", user, domain) : msg_dup("%s", domain);
    char *sql = *t->dcol ? msg_dup("DELETE FROM \"%s\" WHERE \"%s\" = ?1 AND \"%s\" = ?2", t->tbl, t->ucol, t->dcol)
                         : msg_dup("DELETE FROM \"%s\" WHERE \"%s\" = ?1", t->tbl, t->ucol);
    if (!sql || (!*t->dcol && !bare)) {
        free(sql);
        free(bare);
        set_err(s, "out of memory");
        return -1;
    }
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    free(sql);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(st);
        free(bare);
        return db_fail(s, rc, "delete user rows");
    }
    int r = bare ? bind_text(s, st, 1, bare) : bind_text(s, st, 1, user) == 0 ? bind_text(s, st, 2, domain) : -1;
    if (r == 0) r = run(s, st, "delete user rows");
    sqlite3_finalize(st);
    free(bare);
    return r;
}

/* An account event of kind (STORAGE_EVENT_*) for user@domain. 0 / -1 */
static int record_event(storage_t *s, const char *kind, const char *user, const char *domain)
{
    storage_value_t p[3] = {{.type = STORAGE_TEXT, .p = kind, .len = strlen(kind)},
                            {.type = STORAGE_TEXT, .p = user, .len = strlen(user)},
                            {.type = STORAGE_TEXT, .p = domain, .len = strlen(domain)}};
    return storage_query(s, "INSERT INTO user_events (kind, user, domain) VALUES (?, ?, ?)", p, 3, NULL, NULL) < 0
           ? -1 : 0;
}

/* The "user-deleted" event of an account, with a copy of its STORAGE_CONTACTS_STORE rows. */
static int record_deletion(storage_t *s, const char *user, const char *domain)
{
    storage_value_t p[3] = {{.type = STORAGE_TEXT, .p = STORAGE_EVENT_USER_DELETED,
                             .len = strlen(STORAGE_EVENT_USER_DELETED)},
                            {.type = STORAGE_TEXT, .p = user, .len = strlen(user)},
                            {.type = STORAGE_TEXT, .p = domain, .len = strlen(domain)}};
    if (record_event(s, STORAGE_EVENT_USER_DELETED, user, domain) < 0) return -1;
    storage_value_t q[4] = {{.type = STORAGE_INT, .i = sqlite3_last_insert_rowid(s->db)},
                            {.type = STORAGE_TEXT, .p = STORAGE_CONTACTS_STORE, .len = strlen(STORAGE_CONTACTS_STORE)},
                            p[1], p[2]};
    return storage_query(s, "INSERT INTO user_event_rows (event, key, val) SELECT ?, key, val FROM kv"
                            " WHERE store = ? AND user = ? AND domain = ?", q, 4, NULL, NULL) < 0 ? -1 : 0;
}

static int delete_user_rows(storage_t *s, const char *user, const char *domain, int *found)
{
    const char *keys[] = { domain, user }, *ukeys[] = { user, domain };
    sqlite3_stmt *st = stmt(s, ST_ACC_DEL);
    if (!st || bind_keys(s, st, keys, 2) < 0 || run(s, st, "delete account") < 0) return -1;
    *found = sqlite3_changes(s->db) > 0;
    if (*found && record_deletion(s, user, domain) < 0) return -1;
    int ids[] = { ST_KV_DEL_USER, ST_LIST_DEL_USER };
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        st = stmt(s, ids[i]);
        if (!st || bind_keys(s, st, ukeys, 2) < 0 || run(s, st, "delete user data") < 0) return -1;
    }
    user_table_t *t;
    int n = user_tables_load(s, &t), r = n < 0 ? -1 : 0;
    for (int i = 0; i < n && r == 0; i++) r = delete_from_user_table(s, &t[i], user, domain);
    user_tables_free(t, n < 0 ? 0 : n);
    return r;
}

int storage_account_delete(storage_t *s, const char *user, const char *domain)
{
    if (enter(s) < 0) return -1;
    if (!user || !domain) {
        set_err(s, "invalid argument: NULL string");
        return -1;
    }
    int kind = tx_begin(s);
    if (kind < 0) return -1;
    int found = 0;
    int ok = delete_user_rows(s, user, domain, &found) == 0;
    if (tx_end(s, kind, ok) < 0) return -1;
    /* The old page images are still in the -wal file until a checkpoint copies the (zeroed) pages
     * back and the WAL restarts; truncate it now for privacy. Best effort: readers may hold it.
     * With the checkpointer thread, that thread does it (here it would find the thread's PASSIVE
     * checkpoint running and give up at once, and the loop would wait for it). */
    if (kind == 1 && s->ckpt) {
        pthread_mutex_lock(&s->ckpt->mu);
        s->ckpt->want |= 2;
        pthread_cond_signal(&s->ckpt->cv);
        pthread_mutex_unlock(&s->ckpt->mu);
    } else if (kind == 1) {
        sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
    }
    return found ? 0 : 1;
}

int storage_account_list(storage_t *s, const char *domain, int (*cb)(void *ud, const char *user), void *ud)
{
    const char *keys[] = { domain };
    if (!cb) {
        if (s) set_err(s, "invalid argument: no callback");
        return -1;
    }
    sqlite3_stmt *st = keyed(s, ST_ACC_LIST, keys, 1);
    if (!st) return -1;
    int n = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        n++;
        s->in_cb = 1;
        int stop = cb(ud, (const char *)sqlite3_column_text(st, 0));
        s->in_cb = 0;
        if (stop) {
            rc = SQLITE_DONE;
            break;
        }
    }
    if (rc != SQLITE_DONE) n = db_fail(s, rc, "list accounts");
    done(st);
    return n;
}

/* ---- key/value ---- */

int storage_kv_set(storage_t *s, const char *store, const char *user, const char *domain, const char *key,
                   const void *val, size_t len)
{
    const char *keys[] = { store, user, domain, key };
    if (!val && len) {
        if (s) set_err(s, "invalid argument: NULL value");
        return -1;
    }
    sqlite3_stmt *st = keyed(s, ST_KV_SET, keys, 4);
    if (!st) return -1;
    if (bind_blob(s, st, 5, val, len) < 0) {
        done(st);
        return -1;
    }
    return run(s, st, "kv set");
}

int storage_kv_get(storage_t *s, const char *store, const char *user, const char *domain, const char *key,
                   void **val, size_t *len)
{
    const char *keys[] = { store, user, domain, key };
    if (!val || !len) {
        if (s) set_err(s, "invalid argument");
        return -1;
    }
    *val = NULL;
    *len = 0;
    sqlite3_stmt *st = keyed(s, ST_KV_GET, keys, 4);
    if (!st) return -1;
    int rc = sqlite3_step(st), r = 1;
    if (rc == SQLITE_ROW) {
        const void *p = sqlite3_column_blob(st, 0);
        size_t n = (size_t)sqlite3_column_bytes(st, 0);
        unsigned char *copy = malloc(n + 1);
        if (!copy) {
            set_err(s, "out of memory");
            r = -1;
        } else {
            if (n) memcpy(copy, p, n);
            copy[n] = '\0';
            *val = copy;
            *len = n;
            r = 0;
        }
    } else if (rc != SQLITE_DONE) {
        r = db_fail(s, rc, "kv get");
    }
    done(st);
    return r;
}

int storage_kv_del(storage_t *s, const char *store, const char *user, const char *domain, const char *key)
{
    const char *keys[] = { store, user, domain, key };
    sqlite3_stmt *st = keyed(s, ST_KV_DEL, keys, 4);
    return st ? run(s, st, "kv delete") : -1;
}

static const void *blob_or_empty(sqlite3_stmt *st, int col)
{
    const void *p = sqlite3_column_blob(st, col);
    return p ? p : empty_blob;
}

int storage_kv_each(storage_t *s, const char *store, const char *user, const char *domain,
                    int (*cb)(void *ud, const char *key, const void *val, size_t len), void *ud)
{
    const char *keys[] = { store, user, domain };
    if (!cb) {
        if (s) set_err(s, "invalid argument: no callback");
        return -1;
    }
    sqlite3_stmt *st = keyed(s, ST_KV_EACH, keys, 3);
    if (!st) return -1;
    int n = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        n++;
        const void *v = blob_or_empty(st, 1);
        size_t vl = (size_t)sqlite3_column_bytes(st, 1);
        s->in_cb = 1;
        int stop = cb(ud, (const char *)sqlite3_column_text(st, 0), v, vl);
        s->in_cb = 0;
        if (stop) {
            rc = SQLITE_DONE;
            break;
        }
    }
    if (rc != SQLITE_DONE) n = db_fail(s, rc, "kv each");
    done(st);
    return n;
}

/* ---- lists ---- */

int64_t storage_list_append(storage_t *s, const char *list, const char *user, const char *domain, int64_t when,
                            const void *val, size_t len)
{
    const char *keys[] = { list, user, domain };
    if (!val && len) {
        if (s) set_err(s, "invalid argument: NULL value");
        return -1;
    }
    sqlite3_stmt *st = keyed(s, ST_LIST_APPEND, keys, 3);
    if (!st) return -1;
    int rc = sqlite3_bind_int64(st, 4, when);
    if (rc != SQLITE_OK || bind_blob(s, st, 5, val, len) < 0) {
        done(st);
        return rc != SQLITE_OK ? db_fail(s, rc, "bind") : -1;
    }
    if (run(s, st, "list append") < 0) return -1;
    return (int64_t)sqlite3_last_insert_rowid(s->db);
}

int storage_list_each(storage_t *s, const char *list, const char *user, const char *domain, int64_t after_id,
                      int limit, int (*cb)(void *ud, int64_t id, int64_t when, const void *val, size_t len),
                      void *ud)
{
    const char *keys[] = { list, user, domain };
    if (!cb) {
        if (s) set_err(s, "invalid argument: no callback");
        return -1;
    }
    sqlite3_stmt *st = keyed(s, ST_LIST_EACH, keys, 3);
    if (!st) return -1;
    int rc = sqlite3_bind_int64(st, 4, after_id);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 5, limit > 0 ? limit : -1);    /* -1: no limit */
    if (rc != SQLITE_OK) {
        done(st);
        return db_fail(s, rc, "bind");
    }
    int n = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        n++;
        const void *v = blob_or_empty(st, 2);
        size_t vl = (size_t)sqlite3_column_bytes(st, 2);
        s->in_cb = 1;
        int stop = cb(ud, sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1), v, vl);
        s->in_cb = 0;
        if (stop) {
            rc = SQLITE_DONE;
            break;
        }
    }
    if (rc != SQLITE_DONE) n = db_fail(s, rc, "list each");
    done(st);
    return n;
}

int storage_list_count(storage_t *s, const char *list, const char *user, const char *domain)
{
    const char *keys[] = { list, user, domain };
    sqlite3_stmt *st = keyed(s, ST_LIST_COUNT, keys, 3);
    if (!st) return -1;
    int rc = sqlite3_step(st);
    int64_t n = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    int r = rc != SQLITE_ROW ? db_fail(s, rc, "list count") : n > INT_MAX ? INT_MAX : (int)n;
    done(st);
    return r;
}

/* Shared by delete_upto and delete_one: three keys and one integer as ?4. */
static int list_delete(storage_t *s, int id, const char *list, const char *user, const char *domain, int64_t arg)
{
    const char *keys[] = { list, user, domain };
    sqlite3_stmt *st = keyed(s, id, keys, 3);
    if (!st) return -1;
    int rc = sqlite3_bind_int64(st, 4, arg);
    if (rc != SQLITE_OK) {
        done(st);
        return db_fail(s, rc, "bind");
    }
    return run(s, st, "list delete");
}

int storage_list_delete_upto(storage_t *s, const char *list, const char *user, const char *domain, int64_t upto_id)
{
    return list_delete(s, ST_LIST_DEL_UPTO, list, user, domain, upto_id);
}

int storage_list_delete_one(storage_t *s, const char *list, const char *user, const char *domain, int64_t id)
{
    return list_delete(s, ST_LIST_DEL_ONE, list, user, domain, id);
}

int storage_list_expire(storage_t *s, const char *list, int64_t older_than)
{
    const char *keys[] = { list };
    sqlite3_stmt *st = keyed(s, ST_LIST_EXPIRE, keys, 1);
    if (!st) return -1;
    int rc = sqlite3_bind_int64(st, 2, older_than);
    if (rc != SQLITE_OK) {
        done(st);
        return db_fail(s, rc, "bind");
    }
    if (run(s, st, "list expire") < 0) return -1;
    return sqlite3_changes(s->db);
}

/* ---- module tables ---- */

int storage_module_migrate(storage_t *s, const char *module, const char *const *steps, int n)
{
    return storage_module_install(s, module, NULL, steps, n, NULL, NULL);
}

int storage_module_install(storage_t *s, const char *module, const char *create, const char *const *steps, int n,
                           int (*check)(void *ud), void *ud)
{
    if (enter(s) < 0) return -1;
    if (!module || !*module || n < 0 || (n > (create ? 1 : 0) && !steps)) {
        set_err(s, "invalid argument");
        return -1;
    }
    for (int i = create ? 1 : 0; i < n; i++) {
        if (!steps[i]) {
            set_err(s, "invalid argument: NULL migration step");
            return -1;
        }
    }
    if (!sqlite3_get_autocommit(s->db)) {
        set_err(s, "module migration inside a batch");
        return -1;
    }
    return migrate(s, module, create, steps, n, check, ud);
}

static int is_ident(const char *n)
{
    if (!n || !((*n >= 'A' && *n <= 'Z') || (*n >= 'a' && *n <= 'z') || *n == '_')) return 0;
    for (; *n; n++)
        if (!((*n >= 'A' && *n <= 'Z') || (*n >= 'a' && *n <= 'z') || (*n >= '0' && *n <= '9') || *n == '_'))
            return 0;
    return 1;
}

static int is_core_table(const char *t)
{
    if (strncasecmp(t, "sqlite_", 7) == 0) return 1;
    for (size_t i = 0; i < sizeof core_tables / sizeof core_tables[0]; i++)
        if (strcasecmp(t, core_tables[i]) == 0) return 1;
    return 0;
}

int storage_register_user_table(storage_t *s, const char *table, const char *user_col, const char *domain_col)
{
    if (enter(s) < 0) return -1;
    if (!is_ident(table) || !is_ident(user_col) || !is_ident(domain_col) || is_core_table(table)) {
        set_err(s, "register user table: invalid or reserved name");
        return -1;
    }
    /* Both columns of the table exist (pragma_table_info is empty for a missing table). */
    char *sql = msg_dup("SELECT COUNT(*) FROM pragma_table_info('%s') WHERE name IN ('%s', '%s')",
                        table, user_col, domain_col);
    int64_t cols = 0;
    int r = sql ? query_int(s, sql, NULL, 0, &cols) : -1;
    free(sql);
    if (r < 0) return -1;
    if (cols != (strcmp(user_col, domain_col) == 0 ? 1 : 2)) {
        set_err(s, "register user table: %s has no columns %s and %s", table, user_col, domain_col);
        return -1;
    }
    const char *keys[] = { table, user_col, domain_col };
    sqlite3_stmt *st = keyed(s, ST_UT_GET, keys, 3);
    if (!st) return -1;
    int rc = sqlite3_step(st);
    done(st);
    if (rc == SQLITE_ROW) return 0;    /* unchanged: no write, so a read-only start still works */
    if (rc != SQLITE_DONE) return db_fail(s, rc, "register user table");
    st = keyed(s, ST_UT_PUT, keys, 3);
    return st ? run(s, st, "register user table") : -1;
}

int storage_unregister_user_table(storage_t *s, const char *table)
{
    const char *keys[] = { table };
    sqlite3_stmt *st = keyed(s, ST_UT_DEL, keys, 1);
    return st ? run(s, st, "unregister user table") : -1;
}

/* ---- storage_query ---- */

static sqlite3_stmt *query_stmt(storage_t *s, const char *sql, int *cached)
{
    query_t **pp = &s->queries;
    for (query_t *q = *pp; q; pp = &q->next, q = *pp) {
        if (strcmp(q->sql, sql) == 0) {
            *pp = q->next;            /* move to front */
            q->next = s->queries;
            s->queries = q;
            *cached = 1;
            return q->st;
        }
    }
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, &tail);
    if (rc != SQLITE_OK || !st) {
        if (rc == SQLITE_OK) set_err(s, "query: empty SQL");
        else db_fail(s, rc, "query prepare");
        sqlite3_finalize(st);
        return NULL;
    }
    while (tail && (*tail == ' ' || *tail == '\t' || *tail == '\n' || *tail == '\r' || *tail == ';')) tail++;
    if (tail && *tail) {
        set_err(s, "query: more than one statement");
        sqlite3_finalize(st);
        return NULL;
    }
    *cached = 0;
    if (s->nqueries >= QUERY_CACHE_MAX) {
        /* Full: drop the least recently used statement (the last; none is running now, since
         * storage_query is never reentered), so the statements in use stay prepared. */
        query_t **last = &s->queries;
        while ((*last)->next) last = &(*last)->next;
        sqlite3_finalize((*last)->st);
        free((*last)->sql);
        free(*last);
        *last = NULL;
        s->nqueries--;
    }
    query_t *q = malloc(sizeof *q);
    char *copy = strdup(sql);
    if (!q || !copy) {
        free(q);
        free(copy);
        return st;
    }
    q->sql = copy;
    q->st = st;
    q->next = s->queries;
    s->queries = q;
    s->nqueries++;
    *cached = 1;
    return st;
}

static int bind_value(storage_t *s, sqlite3_stmt *st, int idx, const storage_value_t *v)
{
    int rc;
    switch (v->type) {
    case STORAGE_NULL: rc = sqlite3_bind_null(st, idx); break;
    case STORAGE_INT: rc = sqlite3_bind_int64(st, idx, v->i); break;
    case STORAGE_TEXT:
        if (!v->p) rc = sqlite3_bind_null(st, idx);
        else rc = sqlite3_bind_text64(st, idx, v->p, (sqlite3_uint64)v->len, SQLITE_STATIC, SQLITE_UTF8);
        break;
    case STORAGE_BLOB:
        if (!v->p && v->len) {
            set_err(s, "query: NULL blob parameter");
            return -1;
        }
        return bind_blob(s, st, idx, v->p, v->len);
    default:
        set_err(s, "query: bad parameter type");
        return -1;
    }
    return rc == SQLITE_OK ? 0 : db_fail(s, rc, "query bind");
}

static void column_value(sqlite3_stmt *st, int i, storage_value_t *v)
{
    memset(v, 0, sizeof *v);
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER:
    case SQLITE_FLOAT:
        v->type = STORAGE_INT;
        v->i = sqlite3_column_int64(st, i);
        break;
    case SQLITE_TEXT:
        v->type = STORAGE_TEXT;
        v->p = sqlite3_column_text(st, i);
        v->len = (size_t)sqlite3_column_bytes(st, i);
        break;
    case SQLITE_BLOB:
        v->type = STORAGE_BLOB;
        v->p = blob_or_empty(st, i);
        v->len = (size_t)sqlite3_column_bytes(st, i);
        break;
    default:
        v->type = STORAGE_NULL;
    }
}

static int query_rows(storage_t *s, sqlite3_stmt *st, int (*row)(void *, const storage_value_t *, int), void *ud)
{
    int ncols = sqlite3_column_count(st), n = 0, rc;
    storage_value_t *cols = ncols ? calloc((size_t)ncols, sizeof *cols) : NULL;
    if (ncols && !cols) {
        set_err(s, "out of memory");
        return -1;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        n++;
        if (!row) continue;
        for (int i = 0; i < ncols; i++) column_value(st, i, &cols[i]);
        s->in_cb = 1;
        int stop = row(ud, cols, ncols);
        s->in_cb = 0;
        if (stop) {
            rc = SQLITE_DONE;
            break;
        }
    }
    free(cols);
    if (rc != SQLITE_DONE) return db_fail(s, rc, "query");
    return ncols ? n : sqlite3_changes(s->db);
}

int storage_query(storage_t *s, const char *sql, const storage_value_t *params, int nparams,
                  int (*row)(void *ud, const storage_value_t *cols, int ncols), void *ud)
{
    if (enter(s) < 0) return -1;
    if (!sql || nparams < 0 || (nparams && !params)) {
        set_err(s, "invalid argument");
        return -1;
    }
    int cached = 0;
    sqlite3_stmt *st = query_stmt(s, sql, &cached);
    if (!st) return -1;
    int r = 0;
    if (sqlite3_bind_parameter_count(st) != nparams) {
        set_err(s, "query: statement has %d parameters, %d given", sqlite3_bind_parameter_count(st), nparams);
        r = -1;
    }
    for (int i = 0; i < nparams && r == 0; i++) r = bind_value(s, st, i + 1, &params[i]);
    if (r == 0) r = query_rows(s, st, row, ud);
    if (cached) done(st);
    else sqlite3_finalize(st);
    return r;
}

/* ---- account events ---- */

typedef struct event_row {
    int64_t *id;
    char **kind, **user, **domain;
} event_row_t;

static int event_cb(void *ud, const storage_value_t *c, int n)
{
    event_row_t *e = ud;
    if (n != 4 || c[0].type != STORAGE_INT) return 1;
    *e->id = c[0].i;
    *e->kind = strdup(c[1].p ? c[1].p : "");
    *e->user = strdup(c[2].p ? c[2].p : "");
    *e->domain = strdup(c[3].p ? c[3].p : "");
    return 1;
}

int storage_user_event_next(storage_t *s, int64_t *id, char **kind, char **user, char **domain)
{
    *kind = *user = *domain = NULL;
    event_row_t e = {id, kind, user, domain};
    int n = storage_query(s, "SELECT id, kind, user, domain FROM user_events ORDER BY id LIMIT 1", NULL, 0,
                          event_cb, &e);
    if (n < 0) return -1;
    if (n == 0) return 1;
    if (!*kind || !*user || !*domain) {
        free(*kind);
        free(*user);
        free(*domain);
        *kind = *user = *domain = NULL;
        set_err(s, "out of memory");
        return -1;
    }
    return 0;
}

typedef struct rows_ud {
    int (*cb)(void *ud, const char *key, const void *val, size_t len);
    void *ud;
} rows_ud_t;

static int rows_cb(void *ud, const storage_value_t *c, int n)
{
    rows_ud_t *r = ud;
    if (n != 2) return 1;
    return r->cb(r->ud, c[0].p ? c[0].p : "", c[1].p ? c[1].p : "", c[1].len);
}

int storage_user_event_rows(storage_t *s, int64_t id, int (*cb)(void *ud, const char *key, const void *val, size_t len),
                            void *ud)
{
    if (!cb) {
        if (s) set_err(s, "invalid argument: no callback");
        return -1;
    }
    rows_ud_t r = {cb, ud};
    storage_value_t p = {.type = STORAGE_INT, .i = id};
    return storage_query(s, "SELECT key, val FROM user_event_rows WHERE event = ? ORDER BY key", &p, 1, rows_cb, &r);
}

int storage_user_event_done(storage_t *s, int64_t id)
{
    storage_value_t p = {.type = STORAGE_INT, .i = id};
    return storage_query(s, "DELETE FROM user_events WHERE id = ?", &p, 1, NULL, NULL) < 0 ? -1 : 0;
}

int storage_set_page_limit_for_test(storage_t *s, long extra_pages)
{
    if (enter(s) < 0) return -1;
    int64_t pages = 0, got = 0;
    if (query_int(s, "PRAGMA page_count", NULL, 0, &pages) < 0) return -1;
    /* 4294967294 is SQLite's largest page count (and its default limit since 3.33). */
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA max_page_count = %lld",
             extra_pages < 0 ? 4294967294LL : (long long)pages + extra_pages);
    return query_int(s, sql, NULL, 0, &got);
}
