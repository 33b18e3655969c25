/* server/ctl.c: civitasctl, the admin's command-line tool: accounts (add, del, passwd, list) and
 * group chat rooms (muc list, create, destroy) written straight to the storage the server uses. Exit 0 ok, 1 user error, 2 usage error. */
#include "config.h"
#include "jid.h"
#include "scram.h"
#include "fast_store.h"
#include "standard_modules.h"
#include "storage_internal.h"
#include "util.h"
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static void usage(FILE *fp)
{
    fprintf(fp, "usage: civitasctl --config FILE COMMAND\n"
                "commands:\n"
                "  user add JID       create an account; the password is read from stdin (one line)\n"
                "  user del JID       delete an account and every piece of data stored for it\n"
                "  user passwd JID    set a new password, read from stdin\n"
                "  user revoke-tokens JID   revoke every FAST token (XEP-0484) of the account\n"
                "  user list DOMAIN   print the accounts of DOMAIN, one bare JID a line\n"
                "  muc list           print the persistent rooms, one room JID a line\n"
                "  muc create ROOM OWNER  create a persistent, public room owned by the account OWNER\n"
                "  muc destroy ROOM   destroy a persistent room (its occupants are told)\n"
                "  user purge-archive JID\n"
                "                     delete every message of the account's archive (XEP-0313, module mam)\n"
                "options: --config FILE, --help, --version\n");
}

/* One line from stdin, without its newline; NULL (with a message) when empty. */
static char *read_password(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n > 0 && line[n - 1] == '\n') line[--n] = '\0';
    if (n > 0 && line[n - 1] == '\r') line[--n] = '\0';
    if (n <= 0) {
        fprintf(stderr, "civitasctl: no password given on standard input\n");
        free(line);
        return NULL;
    }
    return line;
}

static int print_user(void *ud, const char *user)
{
    printf("%s@%s\n", user, (const char *)ud);
    return 0;
}

/* The JID must be a bare account JID of a host this config serves. */
static jid_t *account_jid(const config_t *c, const char *arg)
{
    jid_t *j = jid_new(arg);
    if (!j || !j->node || j->resource) {
        fprintf(stderr, "civitasctl: '%s' is not a valid account JID (user@domain)\n", arg);
        jid_free(j);
        return NULL;
    }
    for (size_t i = 0; i < c->nhosts; i++) {
        char *d = jid_prep_domain(c->hosts[i].name);
        int same = d && strcmp(d, j->domain) == 0;
        free(d);
        if (same) return j;
    }
    fprintf(stderr, "civitasctl: %s is not a host of this server (see hosts: in %s)\n", j->domain, c->path);
    jid_free(j);
    return NULL;
}

/* mod_mam's archive table (store.h names it <module>_<table>); absent while mam never ran. */
static int count_cb(void *ud, const storage_value_t *cols, int ncols)
{
    if (ncols > 0 && cols[0].type == STORAGE_INT) *(int64_t *)ud = cols[0].i;
    return 0;
}

static int purge_archive(storage_t *st, const jid_t *j)
{
    int64_t n = 0;
    if (storage_query(st, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'mam_archive'",
                      NULL, 0, count_cb, &n) < 0) {
        fprintf(stderr, "civitasctl: storage error: %s\n", storage_last_error(st));
        return 1;
    }
    int r = storage_account_exists(st, j->node, j->domain);
    if (r <= 0) {
        if (r == 0) fprintf(stderr, "civitasctl: %s does not exist\n", j->bare);
        else fprintf(stderr, "civitasctl: storage error: %s\n", storage_last_error(st));
        return 1;
    }
    if (n == 0) return 0;          /* no archive was ever kept here */
    /* mod_mam's schema 3 keeps the account as an owners row (mam_owners); a data_dir the new server
     * has not opened yet is still at schema 2, with the JID in every row */
    int64_t v3 = 0;
    if (storage_query(st, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'mam_owners'",
                      NULL, 0, count_cb, &v3) < 0) {
        fprintf(stderr, "civitasctl: storage error: %s\n", storage_last_error(st));
        return 1;
    }
    storage_value_t v = {.type = STORAGE_TEXT, .p = j->bare, .len = strlen(j->bare)};
    int d = storage_query(st, v3 ? "DELETE FROM mam_archive WHERE oid IN (SELECT oid FROM mam_owners WHERE owner = ?)"
                                 : "DELETE FROM mam_archive WHERE owner = ?", &v, 1, NULL, NULL);
    if (d < 0) {
        fprintf(stderr, "civitasctl: storage error: %s\n", storage_last_error(st));
        return 1;
    }
    printf("%d message(s) deleted from the archive of %s\n", d, j->bare);
    return 0;
}

static int make_creds(const config_t *c, const char *pw, scram_creds_t *sha1, scram_creds_t *sha256)
{
    if (scram_creds_pair_from_password(pw, (unsigned)c->scram_iterations, sha1, sha256) < 0) {
        fprintf(stderr, "civitasctl: the password is not valid (SASLprep refused it)\n");
        return -1;
    }
    return 0;
}

static int user_cmd(const config_t *c, storage_t *st, const char *verb, const char *arg)
{
    if (strcmp(verb, "list") == 0) {
        char *d = jid_prep_domain(arg);
        if (!d) {
            fprintf(stderr, "civitasctl: '%s' is not a valid domain\n", arg);
            return 1;
        }
        int n = storage_account_list(st, d, print_user, d);
        free(d);
        if (n < 0) {
            fprintf(stderr, "civitasctl: storage error: %s\n", storage_last_error(st));
            return 1;
        }
        return 0;
    }
    jid_t *j = account_jid(c, arg);
    if (!j) return 1;
    int rc = 1;
    scram_creds_t sha1, sha256;
    char *pw = NULL;
    if (strcmp(verb, "add") == 0 || strcmp(verb, "passwd") == 0) {
        if (!(pw = read_password()) || make_creds(c, pw, &sha1, &sha256) < 0) goto out;
        int r = strcmp(verb, "add") == 0 ? storage_account_create(st, j->node, j->domain, &sha1, &sha256)
                                         : storage_account_set_creds(st, j->node, j->domain, &sha1, &sha256);
        if (r == 1) fprintf(stderr, "civitasctl: %s %s\n", j->bare, strcmp(verb, "add") == 0 ? "already exists" : "does not exist");
        else if (r < 0) fprintf(stderr, "civitasctl: storage error: %s\n", storage_last_error(st));
        else rc = 0;
    } else if (strcmp(verb, "revoke-tokens") == 0) {
        int r = storage_account_exists(st, j->node, j->domain);
        int n = r == 1 ? fast_revoke_all(st, j->node, j->domain) : -1;
        if (r == 0) fprintf(stderr, "civitasctl: %s does not exist\n", j->bare);
        else if (n < 0) fprintf(stderr, "civitasctl: storage error: %s\n", storage_last_error(st));
        else {
            printf("%d client%s\n", n, n == 1 ? "" : "s");
            rc = 0;
        }
    } else if (strcmp(verb, "purge-archive") == 0) {
        rc = purge_archive(st, j);
    } else if (strcmp(verb, "del") == 0) {
        int r = storage_account_delete(st, j->node, j->domain);
        if (r == 1) fprintf(stderr, "civitasctl: %s does not exist\n", j->bare);
        else if (r < 0) fprintf(stderr, "civitasctl: storage error: %s\n", storage_last_error(st));
        else rc = 0;
    }
out:
    if (pw) {
        explicit_bzero(pw, strlen(pw));
        free(pw);
    }
    jid_free(j);
    return rc;
}

/* ---- muc: the rows of mod_muc's tables (modules/mod_muc.c: muc_rooms keyed by jid; muc_affiliations,
 * muc_ids, muc_messages, muc_nicks by room), written with SQL because civitasctl loads no modules; a
 * running server notices within a second (store_changed) and loads or destroys the room. ---- */
#define MUC_F_PERSISTENT 1       /* mod_muc's room flags */
#define MUC_F_PUBLIC 2
#define MUC_AFF_OWNER 4          /* mod_muc's affiliation numbers */

static int print_room(void *ud, const storage_value_t *cols, int ncols)
{
    (void)ud;
    if (ncols == 1 && cols[0].type == STORAGE_TEXT) printf("%.*s\n", (int)cols[0].len, (const char *)cols[0].p);
    return 0;
}

/* The room JID must be a bare JID at a MUC service of this config (muc.host or conference.<host>). */
static jid_t *room_jid(const config_t *c, const char *arg)
{
    jid_t *j = jid_new(arg);
    if (!j || !j->node || j->resource) {
        fprintf(stderr, "civitasctl: '%s' is not a valid room JID (room@service)\n", arg);
        jid_free(j);
        return NULL;
    }
    const cfg_node_t *sec = config_module_section(c, "muc");
    const cfg_node_t *top = sec ? cfg_child(sec, "host") : NULL;
    const cfg_node_t *hosts = sec ? cfg_child(sec, "hosts") : NULL;
    for (size_t i = 0; i < c->nhosts; i++) {
        const cfg_node_t *hs = hosts ? cfg_child(hosts, c->hosts[i].name) : NULL;
        const cfg_node_t *h = hs ? cfg_child(hs, "host") : NULL;
        if (!h) h = top;
        char *svc = h && h->type == CFG_SCALAR ? xstrdup(h->value) : xasprintf("conference.%s", c->hosts[i].name);
        char *d = jid_prep_domain(svc);
        int same = d && strcmp(d, j->domain) == 0;
        free(d);
        free(svc);
        if (same) return j;
    }
    fprintf(stderr, "civitasctl: %s is not a group chat service of this server (muc.host or conference.<host>)\n",
            j->domain);
    jid_free(j);
    return NULL;
}

static int muc_cmd(const config_t *c, storage_t *st, int nargs, char **args)
{
    if (strcmp(args[1], "list") == 0 && nargs == 2) {
        if (storage_query(st, "SELECT jid FROM muc_rooms ORDER BY jid", NULL, 0, print_room, NULL) < 0) {
            fprintf(stderr, "civitasctl: storage error (has the muc module ever run?): %s\n", storage_last_error(st));
            return 1;
        }
        return 0;
    }
    jid_t *room = nargs >= 3 ? room_jid(c, args[2]) : NULL;
    if (!room) return 1;
    storage_value_t key = {.type = STORAGE_TEXT, .p = room->bare, .len = strlen(room->bare)};
    int exists = storage_query(st, "SELECT jid FROM muc_rooms WHERE jid = ?", &key, 1, NULL, NULL);
    int rc = 1;
    if (exists < 0) {
        fprintf(stderr, "civitasctl: storage error (has the muc module ever run?): %s\n", storage_last_error(st));
    } else if (strcmp(args[1], "create") == 0 && nargs == 4) {
        jid_t *owner = account_jid(c, args[3]);
        if (!owner) goto out;
        if (exists > 0) {
            fprintf(stderr, "civitasctl: %s already exists\n", room->bare);
        } else if (storage_begin(st) == 0) {
            storage_value_t row[] = {key, {.type = STORAGE_INT, .i = MUC_F_PERSISTENT | MUC_F_PUBLIC},
                                     {.type = STORAGE_INT, .i = now_unix()}};
            storage_value_t aff[] = {key, {.type = STORAGE_TEXT, .p = owner->bare, .len = strlen(owner->bare)},
                                     {.type = STORAGE_INT, .i = MUC_AFF_OWNER}};
            if (storage_query(st, "INSERT INTO muc_rooms (jid, name, description, password, subject, subject_nick, "
                                  "flags, max_users, history, created) VALUES (?, '', '', '', '', '', ?, 0, 20, ?)",
                              row, 3, NULL, NULL) < 0 ||
                storage_query(st, "INSERT INTO muc_affiliations (room, jid, affiliation, reason) VALUES (?, ?, ?, '')",
                              aff, 3, NULL, NULL) < 0 || storage_commit(st) < 0) {
                fprintf(stderr, "civitasctl: storage error: %s\n", storage_last_error(st));
                storage_rollback(st);
            } else {
                rc = 0;
            }
        }
        jid_free(owner);
    } else if (strcmp(args[1], "destroy") == 0 && nargs == 3) {
        if (exists == 0) {
            fprintf(stderr, "civitasctl: %s does not exist (temporary rooms end with their last occupant)\n", room->bare);
        } else if (storage_begin(st) == 0) {
            /* every table of mod_muc's schema: a room created again under this name starts empty */
            /* muc_nicks came with mod_muc's schema 2: a database the new server has not opened yet
             * lacks it (sqlite_master tells; a statement on a missing table fails) */
            storage_value_t nicks = {.type = STORAGE_TEXT, .p = "muc_nicks", .len = 9};
            int has_nicks = storage_query(st, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                          &nicks, 1, NULL, NULL);
            if (has_nicks < 0 ||
                storage_query(st, "DELETE FROM muc_affiliations WHERE room = ?", &key, 1, NULL, NULL) < 0 ||
                storage_query(st, "DELETE FROM muc_ids WHERE room = ?", &key, 1, NULL, NULL) < 0 ||
                (has_nicks > 0 && storage_query(st, "DELETE FROM muc_nicks WHERE room = ?", &key, 1, NULL, NULL) < 0) ||
                storage_query(st, "DELETE FROM muc_messages WHERE room = ?", &key, 1, NULL, NULL) < 0 ||
                storage_query(st, "DELETE FROM muc_rooms WHERE jid = ?", &key, 1, NULL, NULL) < 0 || storage_commit(st) < 0) {
                fprintf(stderr, "civitasctl: storage error: %s\n", storage_last_error(st));
                storage_rollback(st);
            } else {
                rc = 0;
            }
        }
    } else {
        usage(stderr);
        rc = 2;
    }
out:
    jid_free(room);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {NULL, 0, NULL, 0}};
    const char *config_path = NULL;
    int o;
    while ((o = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        switch (o) {
        case 'c': config_path = optarg; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("civitasctl %s\n", PACKAGE_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    int nargs = argc - optind;
    char **args = argv + optind;
    int muc = nargs >= 2 && strcmp(args[0], "muc") == 0 &&
              (strcmp(args[1], "list") == 0 || strcmp(args[1], "create") == 0 || strcmp(args[1], "destroy") == 0);
    if (!config_path || (!muc && (nargs != 3 || strcmp(args[0], "user") != 0 ||
        (strcmp(args[1], "add") != 0 && strcmp(args[1], "del") != 0 && strcmp(args[1], "passwd") != 0 &&
         strcmp(args[1], "revoke-tokens") != 0 && strcmp(args[1], "purge-archive") != 0 &&
         strcmp(args[1], "list") != 0)))) {
        usage(stderr);
        return 2;
    }
    strlist_t errors = {0};
    char **known = modules_known();   /* the names civitasd accepts too */
    config_t *c = config_load(config_path, (const char *const *)known, &errors);
    modules_known_free(known);
    if (!c) {
        for (size_t i = 0; i < errors.n; i++) fprintf(stderr, "%s\n", errors.v[i]);
        strlist_free(&errors);
        return 1;
    }
    strlist_free(&errors);
    char *err = NULL;
    storage_t *st = storage_open(c->data_dir, &err);
    if (!st) {
        fprintf(stderr, "civitasctl: storage: %s\n", err ? err : "cannot open");
        free(err);
        config_free(c);
        return 1;
    }
    int rc = muc ? muc_cmd(c, st, nargs, args) : user_cmd(c, st, args[1], args[2]);
    storage_close(st);
    config_free(c);
    return rc;
}
