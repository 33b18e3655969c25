/* server/ctl.c: civitasctl, the admin's command-line tool: accounts (add, del, passwd, list)
 * written straight to the storage the server uses. Exit 0 ok, 1 user error, 2 usage error. */
#include "config.h"
#include "jid.h"
#include "scram.h"
#include "standard_modules.h"
#include "storage.h"
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
                "  user list DOMAIN   print the accounts of DOMAIN, one bare JID a line\n"
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
    storage_value_t v = {.type = STORAGE_TEXT, .p = j->bare, .len = strlen(j->bare)};
    int d = storage_query(st, "DELETE FROM mam_archive WHERE owner = ?", &v, 1, NULL, NULL);
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
    if (!config_path || nargs != 3 || strcmp(args[0], "user") != 0 ||
        (strcmp(args[1], "add") != 0 && strcmp(args[1], "del") != 0 && strcmp(args[1], "passwd") != 0 &&
         strcmp(args[1], "list") != 0 && strcmp(args[1], "purge-archive") != 0)) {
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
    int rc = user_cmd(c, st, args[1], args[2]);
    storage_close(st);
    config_free(c);
    return rc;
}
