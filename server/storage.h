/* server/storage.h: the storage interface: accounts (SCRAM creds only), per-user key/value stores and
 * ordered lists for modules, module-owned tables, transactions. Driver: storage_sqlite.c (embedded SQLite). */
#ifndef CIVITAS_STORAGE_H
#define CIVITAS_STORAGE_H
#include <stddef.h>
#include <stdint.h>
#include "api.h"

/* One open database. Not thread-safe: use a storage_t from one thread at a time (the writer thread
 * owns it, or the loop thread does). Several processes (civitasd and civitasctl) may open the same
 * data_dir at once: SQLite's WAL mode and a 5 s busy timeout arbitrate between them.
 *
 * Conventions for every function below:
 * - Strings (user, domain, store, key, list) are NUL-terminated UTF-8, already prepared by the
 *   caller (nodeprep'd lowercase user, prepared domain): storage compares bytes, never folds case.
 *   NULL is an error (-1); for kv and list the user may be "" (data of the domain itself).
 * - Every write is durable when the function returns 0 (synchronous=FULL): data accepted survives
 *   kill -9 and power loss. Inside storage_begin()/storage_commit() it is durable at the commit.
 * - -1 means an error (I/O, disk full, read-only database, bad arguments, corruption); it never
 *   aborts. storage_last_error() says what happened. After the condition ends (space freed, file
 *   writable again) the same storage_t works again without being reopened.
 * - The iteration callbacks (`cb`) must not call any storage_* function on the same storage_t
 *   (such a call returns -1): collect what you need and act after the iteration returns. Pointers
 *   handed to a callback are valid only during that call. A callback returns 0 to go on, anything
 *   else to stop; the iteration then returns the number of callbacks made so far (including the
 *   one that stopped it). */
typedef struct storage storage_t;

/* Open (create if needed) data_dir/civitas.db. Missing directories of data_dir are created with
 * mode 0700; the database file (and its -wal/-shm files) get mode 0600, and an existing database
 * readable by group or others is tightened to 0600. Enables WAL, synchronous=FULL, foreign keys,
 * secure_delete (deleted data is overwritten), a 5000 ms busy timeout, and runs the versioned
 * migrations: an empty or older database is upgraded in place, each migration in its own
 * transaction (a failed one leaves the database at the previous version); a database whose schema
 * is newer than this build knows is refused. A read-only database file opens (reads work, writes
 * return -1) as long as no migration is needed.
 * Returns the storage, or NULL and *err set to a malloc'd message the caller frees (err may be NULL). */
storage_t *storage_open(const char *data_dir, char **err);
/* The names of the files the storage keeps directly in data_dir (NULL-terminated): what civitasd,
 * started as root, gives to its unprivileged user. */
extern const char *const storage_files[];
/* Create data_dir (and missing parents) with mode 0700, as storage_open does. civitasd started as
 * root calls it before it gives the directory to its user and switches to that user, so that the
 * database is opened (and SQLite creates its -wal/-shm files) only without privileges: as root,
 * SQLite would follow a link the user put in data_dir. 0, or -1 and *err as for storage_open. */
int storage_make_dir(const char *data_dir, char **err);
/* Roll back an open storage_begin() batch, finalise statements, checkpoint the WAL into the
 * database file and close. NULL is a no-op. */
void storage_close(storage_t *s);
/* Move the WAL checkpoints off the calling thread (civitasd's loop): a thread of the storage with
 * a connection of its own copies the WAL into the database file (and syncs it) once a commit leaves
 * STORAGE_CHECKPOINT_PAGES pages in the WAL, instead of the committing call doing it. A checkpoint
 * is not a commit: data_version (store_changed) does not move. Without it (civitasctl), commits
 * checkpoint as SQLite does by itself at that size. 0, or -1 (the commits checkpoint as before). */
int storage_checkpoint_thread(storage_t *s);
#define STORAGE_CHECKPOINT_PAGES 10000

/* ---- Accounts, keyed by (user, domain). Only SCRAM creds are stored, never a password. ---- */

/* Creating an account, reading and replacing its SCRAM creds: storage_internal.h. */
/* 1 the account exists, 0 it does not, -1 error. */
CIVITAS_API int storage_account_exists(storage_t *s, const char *user, const char *domain);
/* Delete the account AND every row any table holds for (user, domain), in one transaction: its kv
 * and list entries and the rows of every table registered with storage_register_user_table()
 * (whether or not its module is loaded in this process, so civitasctl deletes them too). In the
 * same transaction, when the account existed, a STORAGE_EVENT_USER_DELETED account event is
 * recorded (see "Account events" below). Outside a
 * batch the WAL is then checkpointed so deleted data does not linger in the -wal file either.
 * 0 deleted, 1 no such account (stray rows of that user are still removed), -1 error (nothing
 * deleted). */
int storage_account_delete(storage_t *s, const char *user, const char *domain);
/* Call cb for each user of domain in ascending (byte) order. Number of callbacks, or -1. */
int storage_account_list(storage_t *s, const char *domain, int (*cb)(void *ud, const char *user), void *ud);

/* ---- Per-user key/value stores for modules (roster version, vCard, private XML, last activity):
 * (store, user, domain, key) -> blob. `store` is a module's namespace of keys, e.g. "vcard". ---- */

/* Insert or replace. val may be NULL when len is 0 (an empty value, still "found" by get). 0/-1. */
CIVITAS_API_BEGIN
int storage_kv_set(storage_t *s, const char *store, const char *user, const char *domain, const char *key,
                   const void *val, size_t len);
/* 0 found: *val is a malloc'd copy the caller frees (never NULL, one extra NUL byte after the
 * data so text values can be used as strings), *len its length; 1 none (*val NULL, *len 0); -1. */
int storage_kv_get(storage_t *s, const char *store, const char *user, const char *domain, const char *key,
                   void **val, size_t *len);
/* 0 (also when absent) / -1. */
int storage_kv_del(storage_t *s, const char *store, const char *user, const char *domain, const char *key);
/* Call cb for each key of (store, user, domain) in ascending key order. Number of callbacks, or -1. */
int storage_kv_each(storage_t *s, const char *store, const char *user, const char *domain,
                    int (*cb)(void *ud, const char *key, const void *val, size_t len), void *ud);

/* ---- Per-user ordered lists (offline messages, archive). Ids come from one sequence shared by all
 * lists: increasing, never reused, even after deletions and restarts. `when` is the caller's
 * timestamp (unix seconds or ms, the caller's choice per list; storage_list_expire compares it). ---- */

/* Append; returns the new id (> 0), or -1. val may be NULL when len is 0. */
int64_t storage_list_append(storage_t *s, const char *list, const char *user, const char *domain, int64_t when,
                            const void *val, size_t len);
/* Call cb for entries with id > after_id in ascending id order, at most limit of them (limit <= 0:
 * all). Number of callbacks, or -1. */
int storage_list_each(storage_t *s, const char *list, const char *user, const char *domain, int64_t after_id,
                      int limit, int (*cb)(void *ud, int64_t id, int64_t when, const void *val, size_t len),
                      void *ud);
/* Number of entries, or -1. */
int storage_list_count(storage_t *s, const char *list, const char *user, const char *domain);
/* Delete entries with id <= upto_id. 0/-1. */
int storage_list_delete_upto(storage_t *s, const char *list, const char *user, const char *domain, int64_t upto_id);
/* Delete one entry. 0 (also when absent) / -1. */
int storage_list_delete_one(storage_t *s, const char *list, const char *user, const char *domain, int64_t id);
/* Delete the entries of `list`, of every user, whose `when` < older_than. Rows deleted, or -1. */
int storage_list_expire(storage_t *s, const char *list, int64_t older_than);

/* ---- Transactions: group many writes into one commit (the writer thread batches). ----
 * storage_begin takes the write lock at once (BEGIN IMMEDIATE); -1 if a batch is already open.
 * Functions called inside a batch that need their own transaction (account_delete, ...) nest in it
 * as savepoints. If any call inside a batch returns -1 the batch may already be rolled back by the
 * database: call storage_rollback() (always safe, 0 also when nothing is open) and redo it.
 * storage_commit: 0 when durable; -1 when the commit failed, in which case the batch is rolled back
 * entirely (nothing of it is stored). */
int storage_begin(storage_t *s);
int storage_commit(storage_t *s);
int storage_rollback(storage_t *s);

/* Nested transactions (what store_begin/store_commit/store_rollback of store.h use). Levels are
 * counted: the outermost begins the transaction (BEGIN IMMEDIATE; a savepoint when a
 * storage_begin() batch is open), inner levels are savepoints. storage_tx_rollback undoes its own
 * level only; storage_tx_commit of the outermost level makes everything durable. Each returns 0
 * or -1 (commit/rollback without an open level: -1). When SQLite has rolled the transaction back
 * after an error, every storage call fails until each open level is ended (commit: -1,
 * rollback: 0), so that later writes never commit on their own. storage_tx_depth: open levels. */
int storage_tx_begin(storage_t *s);
int storage_tx_commit(storage_t *s);
int storage_tx_rollback(storage_t *s);
/* storage_tx_begin whose transaction commits with synchronous = NORMAL (only when it opens the
 * outermost level; otherwise exactly storage_tx_begin). In WAL mode that commit is appended to the
 * WAL without an fsync: kept when the process crashes, but an OS crash or power loss may drop it
 * (and the lazy commits before it, never out of order) until the next FULL commit or checkpoint
 * syncs the WAL. For data whose loss there is acceptable (a message archive), never for accounts or
 * offline messages. The connection is FULL again when the transaction ends. */
int storage_tx_begin_lazy(storage_t *s);
int storage_tx_depth(storage_t *s);

/* Human text of the last failure, for logs (never message content; may name users). Owned by s,
 * valid until the next storage call. NULL s gives a fixed text. */
const char *storage_last_error(storage_t *s);
CIVITAS_API_END
/* A number that changes when another connection (civitasctl, another process) has committed
 * since the last call (SQLite's data_version); caches in the server compare it to know when
 * to drop what they hold. -1 on error. */
int64_t storage_data_version(storage_t *s);
/* A cache's view of storage_data_version: zero-initialise one per cache. */
typedef struct storage_watch {
    int64_t version;          /* data_version when last looked */
    unsigned generation;      /* the connection it was read on (a reopened connection starts anew) */
    int primed;               /* 0: never looked */
} storage_watch_t;
/* 1 when another connection (civitasctl, another process) may have committed since the last call
 * with w, or on the first call; 0 when not; -1 on error (treat it as 1: drop the cache). The
 * storage's own writes never count: a cache kept up to date by its owner stays valid. */
int storage_changed(storage_t *s, storage_watch_t *w);
/* The id the last insert on this storage gave its row (an INTEGER PRIMARY KEY), or -1. */
int64_t storage_last_insert_id(storage_t *s);

/* ---- Account events: how a deletion reaches the running server, whichever process deleted.
 * storage_account_delete() records one event per deleted account, with a copy of the account's
 * rows of the kv store STORAGE_CONTACTS_STORE (its roster: the contacts whose subscriptions the
 * server must cancel; the rows are gone from kv by then). civitasd reads the events oldest first,
 * acts on each (server/account.c: the "user-deleted" hook) and removes it with its rows; it looks
 * at start and whenever storage_data_version says another process wrote, so an event recorded by
 * civitasctl while no server runs is handled at the next start. The copy is the only data of a
 * deleted account kept after the deletion, and only until the server has handled the event. ---- */
#define STORAGE_EVENT_USER_DELETED "user-deleted"
/* storage_account_create and storage_account_set_creds record, in the same transaction as the
 * write, a STORAGE_EVENT_USER_CREATED / STORAGE_EVENT_PASSWORD_CHANGED event (no rows copied):
 * the server fires "user-created" / "password-changed" once for each, whichever process wrote. */
#define STORAGE_EVENT_USER_CREATED "user-created"
#define STORAGE_EVENT_PASSWORD_CHANGED "password-changed"
#define STORAGE_CONTACTS_STORE "roster"

/* The oldest event: 0 with *id and malloc'd *kind, *user, *domain (the caller frees them); 1 none;
 * -1 error. */
int storage_user_event_next(storage_t *s, int64_t *id, char **kind, char **user, char **domain);
/* Call cb for each row copied with event id (key, value as in storage_kv_each), in key order.
 * Number of callbacks, or -1. */
int storage_user_event_rows(storage_t *s, int64_t id, int (*cb)(void *ud, const char *key, const void *val, size_t len),
                            void *ud);
/* Remove the event and its rows. 0 (also when absent) / -1. */
int storage_user_event_done(storage_t *s, int64_t id);

/* ---- Module-owned tables. A module that needs more than kv and lists creates its own tables with
 * storage_module_migrate and uses them through storage_query. SQL is SQLite's dialect restricted to
 * what PostgreSQL also accepts ("?" placeholders, INTEGER/TEXT/BLOB columns, ON CONFLICT). ---- */

/* Bring `module`'s tables to version n: steps[i] (one string, may hold several statements) takes
 * them from version i to i+1 and runs in its own transaction together with the version bump
 * (recorded in table module_schema). 0 up to date; -1 error (a failed step leaves the previous
 * version), also when the database holds a newer version than n or when called inside a batch. */
CIVITAS_API_BEGIN
int storage_module_migrate(storage_t *s, const char *module, const char *const *steps, int n);
/* The same, with a creation script: when `module` has no version yet, create (several statements
 * allowed) alone takes it to version n, in one transaction; otherwise steps[v] takes it from v to
 * v + 1 as above (steps[0] is not used and may be absent). check (may be NULL) is called inside the
 * transaction that reaches version n, before its commit; when it returns -1 (after setting no
 * storage error of its own; storage_last_error then says what check's storage calls said, or the
 * caller reports its own reason) that step is rolled back. store.h's declarations go through this. */
int storage_module_install(storage_t *s, const char *module, const char *create, const char *const *steps, int n,
                           int (*check)(void *ud), void *ud);
/* Declare that rows of `table` belong to the user named by columns (user_col, domain_col), so that
 * storage_account_delete() removes them. (store.h registers its tables in the same table with an
 * empty domain_col: user_col then holds the bare JID.) The declaration is stored in the database (table
 * user_tables) and so outlives the process; repeating it is cheap (no write when unchanged).
 * Names must be plain identifiers ([A-Za-z_][A-Za-z0-9_]*), the table and both columns must exist
 * and core tables cannot be registered. 0/-1. */
int storage_register_user_table(storage_t *s, const char *table, const char *user_col, const char *domain_col);
/* The reverse, for a module dropping its table. 0 (also when not registered) / -1. */
int storage_unregister_user_table(storage_t *s, const char *table);

typedef enum { STORAGE_NULL, STORAGE_INT, STORAGE_TEXT, STORAGE_BLOB } storage_type_t;
/* A parameter or a result column. i for INT; p and len for TEXT (p NUL-terminated in results; len
 * excludes the NUL, for parameters len is used when p is given, so set it) and BLOB. A TEXT parameter
 * with p NULL binds NULL; a BLOB parameter with p NULL must have len 0 (an empty blob). Result
 * columns holding REAL values come back as INT (truncated): keep module tables to the four types. */
typedef struct storage_value {
    storage_type_t type;
    int64_t i;
    const void *p;
    size_t len;
} storage_value_t;
/* Run one SQL statement with nparams "?" parameters (prepared once and cached by its text).
 * For a statement returning rows, row (may be NULL) is called for each with its ncols columns
 * (same callback rules as above); returns the number of rows seen. For other statements returns
 * the number of rows changed. -1 on error (also when sql holds more than one statement). */
int storage_query(storage_t *s, const char *sql, const storage_value_t *params, int nparams,
                  int (*row)(void *ud, const storage_value_t *cols, int ncols), void *ud);
CIVITAS_API_END

#endif
