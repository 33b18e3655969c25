/* server/store.h: storage scoped to a module (after Prosody's module:open_store): a module declares its
 * tables, the core creates, migrates and empties them; typed rows, paged index ranges, transactions. */
#ifndef CIVITAS_STORE_H
#define CIVITAS_STORE_H
#include <string.h>
#include "storage.h"
#include "api.h"

/* ---- Declaring tables -------------------------------------------------------------------------
 * A module puts a const store_schema_t in its descriptor (module_t.store, see module.h). Before the
 * module's load runs, the core brings the tables to the declared version, in the shared database:
 *
 *   static const store_column_t fragment_cols[] = {
 *       {"jid", STORE_TEXT}, {"name", STORE_TEXT}, {"xml", STORE_BLOB}, {NULL}};
 *   static const store_table_t tables[] = {
 *       {.name = "xml", .columns = fragment_cols, .key = "jid, name", .account = "jid"},
 *       {NULL}};
 *   static const store_schema_t schema = {.version = 1, .tables = tables};
 *   const module_t civitas_module = {..., .store = &schema};
 *
 * and in load: `fragments = module_store(m, "xml");`.
 *
 * - Names of columns and indexes are [a-z_][a-z0-9_]*, of tables [a-z][a-z0-9]* (no '_'). In the
 *   database a table is named <module>_<table> and an index <module>_<table>__<index>: the tables
 *   of two modules never share a name (a module's name cannot hold its table's '_'), and a name
 *   the core uses itself (module_schema, ...) is refused.
 * - Columns are typed: STORE_INT (int64), STORE_TEXT (UTF-8), STORE_BLOB (bytes), STORE_ID (an
 *   int64 that is the table's whole primary key, assigned by store_put: increasing, never reused).
 *   Every column is NOT NULL unless its type has | STORE_OPTIONAL (not allowed for key columns).
 *   Values are checked against these types on every call.
 * - .key names the primary key's columns ("owner, node, item"), in the order key values are given.
 * - .account names the column holding the bare JID ("user@domain") of the account that owns the
 *   row. When an account is deleted (civitasctl user del, XEP-0077 cancel) its rows go from every
 *   declared table of every module, loaded or not: the core keeps the list in the database. For
 *   data owned by a room or a domain the column holds that JID. It must lead the key or an index.
 * - .parent, .parent_column (instead of .account): the rows belong to a row of another table of the
 *   module, declared before this one, whose key is a STORE_ID and which has an .account: the INT
 *   column .parent_column holds that row's id. Deleting the parent row (and so deleting the account)
 *   deletes these rows in the same statement (FOREIGN KEY ... ON DELETE CASCADE), in any process;
 *   a row whose parent does not exist cannot be written. For large tables whose index entries
 *   should carry a small integer rather than the JID (the MAM archive). .parent_column must lead
 *   the key or an index.
 * - .indexes: {name, "col, col"}: the columns a range query walks. The core appends the key columns
 *   the index lacks, so an index orders rows completely and a position in it names one row.
 *   A table can always also be walked by its key (range.index NULL).
 *
 * Versions and migrations (Prosody keeps them per store, we per module): `version` is what the
 * declaration describes (>= 1). In a database without the module's tables the core creates them as
 * declared, then runs `import` (optional SQL: bring over data an older release kept elsewhere, e.g.
 * in the core's kv table), in one transaction. In a database at version v < version it runs
 * upgrade[v - 1] (SQL taking v to v + 1: ALTER TABLE, CREATE TABLE or INDEX for what the new
 * version adds, named as the core names them, UPDATE ...) for each v, each in
 * its own transaction together with the version bump (module_schema). A failed step leaves the
 * previous version and the module fails to load; a database newer than the declaration is refused.
 * Before the last step (or the creation) commits, and at every start, the core checks that the
 * tables match the declaration (columns, types, key, indexes); otherwise the step is rolled back and
 * the module fails to load: a forgotten upgrade step is found at the first start, not by a user.
 * SQL fragments name tables by their full names (<module>_<table>); write SQL PostgreSQL also
 * accepts. Columns dropped from a declaration may stay in the database (NULL-able ones only).
 * Existing data_dirs are thus upgraded in place, as CONTRACT.md promises.
 *
 * ---- Using tables ------------------------------------------------------------------------------
 * All functions take the store_t of one table and return -1 on error (store_error() says why; a
 * wrong type, count or name is an error too), never abort. Rows and keys are arrays of
 * storage_value_t (storage.h): a row has one value per declared column, in declaration order; a key
 * one per key column, in .key order. Build them with STORE_VAL_INT/TEXT/BLOB/NULL.
 *
 * Threads, durability and the writer thread to come (DESIGN.md "Writes off the loop"): today every
 * write is durable when it returns 0 (inside a transaction: at the outermost commit). A later step
 * will queue writes to one writer thread that commits a batch per loop turn; for that:
 * - everything passed to a write is copied before the call returns (keep nothing alive for it);
 * - a read sees the module's own earlier writes, queued or not (the core will guarantee it);
 * - a transaction begins and ends within one callback (never across an event or a loop turn), so it
 *   can be moved to the writer as one unit;
 * - a module that must know when data is on disk (acknowledging a stanza, XEP-0198) will get
 *   variants of the writes taking a completion callback; the calls below keep their meaning.
 * Use a store_t from the loop thread only. Reads are short: point lookups, and ranges that walk an
 * index with a limit (never a table scan). */

typedef enum { STORE_INT = 1, STORE_TEXT, STORE_BLOB, STORE_ID } store_type_t;
#define STORE_OPTIONAL 0x100           /* or'ed into a column's type: it may hold NULL (STORE_VAL_NULL) */

typedef struct store_column {
    const char *name;                  /* NULL ends the list */
    int type;                          /* a store_type_t, maybe | STORE_OPTIONAL */
} store_column_t;

typedef struct store_index {
    const char *name;                  /* NULL ends the list */
    const char *columns;               /* "owner, node, pos": comma-separated column names */
} store_index_t;

typedef struct store_table {
    const char *name;                  /* NULL ends the list */
    const store_column_t *columns;     /* at most STORE_MAX_COLUMNS */
    const char *key;                   /* the primary key's columns, comma-separated */
    const char *account;               /* the column holding the owning account's bare JID */
    const store_index_t *indexes;      /* optional */
    const char *parent;                /* instead of account: the table whose row owns these rows */
    const char *parent_column;         /* the INT column holding that row's STORE_ID */
} store_table_t;

typedef struct store_schema {
    int version;                       /* >= 1 */
    const store_table_t *tables;       /* {NULL}-terminated */
    const char *import;                /* optional: SQL run once, after the tables were created */
    const char *const *upgrade;        /* upgrade[v - 1] takes version v to v + 1 */
} store_schema_t;

#define STORE_MAX_COLUMNS 32
#define STORE_MAX_INDEX_COLUMNS 8      /* columns of a key or index, appended key columns included */
#define STORE_MAX_LIMIT 10000          /* rows of one page or of one store_delete_range batch */

/* Values. TEXT must be NUL-terminated (STORE_VAL_TEXT takes its length with strlen). */
#define STORE_VAL_INT(v) ((storage_value_t){.type = STORAGE_INT, .i = (v)})
#define STORE_VAL_TEXT(s) ((storage_value_t){.type = STORAGE_TEXT, .p = (s), .len = strlen(s)})
#define STORE_VAL_BLOB(ptr, n) ((storage_value_t){.type = STORAGE_BLOB, .p = (ptr), .len = (n)})
#define STORE_VAL_NULL ((storage_value_t){.type = STORAGE_NULL})

typedef struct store store_t;                  /* one declared table, opened */
typedef struct store_module store_module_t;    /* every table of one module */

CIVITAS_API_BEGIN   /* to "For the core": the store_* calls modules make */

/* A row read from a table: one malloc'd block, freed with free() (store_row_free). TEXT and BLOB
 * values are followed by a NUL byte (so XML kept as a blob is also a string); NULL ones have type
 * STORAGE_NULL. */
typedef struct store_row {
    int ncols;                         /* the table's declared columns */
    storage_value_t col[];             /* in declaration order */
} store_row_t;
void store_row_free(store_row_t *r);

/* ---- Rows by key ---- */

/* Insert the row, or replace the row with the same key. With a STORE_ID key given as
 * STORE_VAL_NULL a new id is assigned and stored in *id (id may be NULL). 0/-1. */
int store_put(store_t *t, const storage_value_t *row, int64_t *id);
/* store_put for a new row only: -1 when a row with its key exists (nothing is replaced). A little
 * cheaper than store_put (no conflict clause), and a key computed twice is an error, not a silent
 * overwrite. */
int store_insert(store_t *t, const storage_value_t *row, int64_t *id);
/* 0 found (*row set, the caller frees it), 1 none (*row NULL), -1. */
int store_get(store_t *t, const storage_value_t *key, store_row_t **row);
/* Delete the row with this key. Rows deleted (0 or 1), or -1. */
int store_delete(store_t *t, const storage_value_t *key);
/* Delete every row of one account (bare JID) from this table (a .parent table: the rows of the
 * account's parent rows). Rows deleted, or -1. Deleting the account itself does this for every
 * table already. */
int store_delete_account(store_t *t, const char *bare);

/* ---- Ranges on an index, for paging (MAM, PubSub items, RSM) ----
 * The rows whose first nprefix index columns equal prefix[], and whose following columns lie
 * between the bounds, in index order (ascending, or descending with reverse). A bound compares the
 * n index columns after the prefix as a tuple (n may be fewer than all of them): an MAM archive
 * indexed by (owner, ts) with key id is walked as index (owner, ts, id); "before the message with
 * (ts 1700, id 42), newest first, 50 at most" is
 *   {.index = "by_time", .prefix = &owner, .nprefix = 1,
 *    .before = {(storage_value_t[]){STORE_VAL_INT(1700), STORE_VAL_INT(42)}, 2, 0},
 *    .reverse = 1, .limit = 50}
 * and "from time T on" is .after = {&T, 1, 1} (inclusive). */
typedef struct store_bound {
    const storage_value_t *v;          /* NULL: no bound */
    int n;                             /* 1 .. index columns after the prefix */
    int inclusive;                     /* 1: rows equal to the bound are part of the range */
} store_bound_t;

typedef struct store_range {
    const char *index;                 /* a declared index; NULL: the primary key */
    const storage_value_t *prefix;     /* values of the first nprefix index columns */
    int nprefix;
    store_bound_t after, before;       /* rows > after (>=), < before (<=) in index order */
    int reverse;                       /* 0: ascending (oldest first), 1: descending */
    int limit;                         /* 1 .. STORE_MAX_LIMIT; store_count ignores it */
    const char *match;                 /* optional: only rows whose column `match` (any column, also
                                          one outside the index) equals *match_value; the walk then
                                          reads the rows it passes over (a filter, not a seek: for a
                                          rare narrowing that does not deserve an index of its own) */
    const storage_value_t *match_value;
} store_range_t;

typedef struct store_page {
    store_row_t **rows;                /* n rows, in the order asked */
    int n;
    int more;                          /* 1: more rows follow in that direction (RSM/MAM: not
                                          complete); the next page starts after rows[n - 1] */
} store_page_t;
/* Fill *page with at most r->limit rows. 0/-1 (on -1 the page is empty). */
int store_range(store_t *t, const store_range_t *r, store_page_t *page);
void store_page_free(store_page_t *page);    /* frees the rows; the struct itself is the caller's */
/* Rows in the range, whatever the limit (RSM <count/>; with only .before set to a row's position,
 * that row's offset, RSM <first index=''/>). Walks the index, reads no row. Count, or -1. */
int store_count(store_t *t, const store_range_t *r);
/* store_count, but it stops at max (>= 1) rows: min(rows in the range, max). For a count that may be
 * omitted when large (RSM <count/> of a huge archive), without walking the whole index. */
int store_count_upto(store_t *t, const store_range_t *r, int max);
/* Delete the first r->limit rows of the range (in its order). Rows deleted, or -1. */
int store_delete_range(store_t *t, const store_range_t *r);
/* Retention: delete at most limit rows whose first `index` column is < older_than, oldest first.
 * Rows deleted, or -1. A timer calls it again while it returns limit, so a large expiry never
 * holds the loop (or the write lock) for long. The index's first column must be STORE_INT. */
int store_expire(store_t *t, const char *index, int64_t older_than, int limit);

/* ---- Transactions ----
 * Several calls made atomic (all or nothing). Nesting is counted: an inner store_begin is a
 * savepoint that its store_rollback undoes alone; only the outermost store_commit makes the whole
 * durable. After any call inside returns -1, end the transaction with store_rollback (SQLite may
 * already have rolled it back; then every call fails until it is ended). Never keep a transaction
 * open beyond the current callback: it holds the database's write lock (civitasctl waits on it).
 * The transaction covers the whole database (every table of every module), not only t. 0/-1. */
int store_begin(store_t *t);
int store_commit(store_t *t);
int store_rollback(store_t *t);
/* store_begin whose transaction does not wait for the disk at its commit (SQLite's synchronous =
 * NORMAL in WAL mode): what it commits survives a crash of the process, but an OS crash or power
 * loss may drop it (and earlier lazy commits, never out of order) until the next ordinary commit or
 * checkpoint. Only at the outermost level; inside another transaction it is store_begin. */
int store_begin_lazy(store_t *t);

/* ---- Caches ----
 * A module that keeps rows in memory asks, before trusting them, whether another process
 * (civitasctl) committed since it last looked: 1 yes, or the first time (drop the cache), 0 no,
 * -1 error (drop it too). The module's own writes never count. Zero-initialise w. Cheap: it asks
 * SQLite's data_version and touches no table. */
int store_changed(store_t *t, storage_watch_t *w);

/* The reason for the last -1 (for logs; never row contents). Valid until the next call on t. */
const char *store_error(store_t *t);

CIVITAS_API_END

/* ---- For the core ---- */

/* Bring module's tables to schema->version (see above) and open them. NULL and *err (malloc'd
 * message, "module: table: what") on error. */
store_module_t *store_module_open(storage_t *s, const char *module, const store_schema_t *schema, char **err);
void store_module_close(store_module_t *sm);       /* NULL is a no-op */
/* A declared table by name, or NULL. */
store_t *store_module_table(store_module_t *sm, const char *table);
/* The SQL the last call on t ran, with its values as "?": tests EXPLAIN it. */
const char *store_last_sql(store_t *t);

#endif
