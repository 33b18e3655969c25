/* server/main.c: civitasd's entry point: options, start-up in order (config, logs, storage,
 * TLS, hosts, modules, listeners, privileges), signals, and shutdown in reverse. */
#include "server.h"
#include "host.h"
#include "ip_limits.h"
#include "listen.h"
#include "c2s.h"
#include "router.h"
#include "account.h"
#include "roster.h"
#include "s2s.h"
#include "standard_modules.h"
#include "timer.h"
#include "iq_request.h"
#include "caps.h"
#include "http.h"
#include "fast.h"
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <openssl/ssl.h>

server_t *srv;

/* What federation hands to the router (s2s.h): received stanzas and bounces. */
static const s2s_local_t federation_local = {router_from_remote, route_stanza};
/* What the IQ requests (iq_request.h) need from the layers above them. */
static const iq_request_env_t iq_env = {route_stanza, module_unloading};

static void usage(FILE *fp)
{
    fprintf(fp, "usage: civitasd --config FILE [--check]\n"
                "  --config FILE  the YAML configuration (see conf/civitas.yml)\n"
                "  --check        validate the config and its certificates, then exit (0 usable, 1 not);\n"
                "                 when usable, print every module's effective options\n"
                "  --help         this text\n"
                "  --version      print the version\n");
}

static void print_errors(const strlist_t *errors)
{
    for (size_t i = 0; i < errors->n; i++) fprintf(stderr, "%s\n", errors->v[i]);
}

/* Module names in the config must name modules that exist (checked again when loading). */
static config_t *load_config(const char *path, strlist_t *errors)
{
    char **known = modules_known();
    config_t *c = config_load(path, (const char *const *)known, errors);
    modules_known_free(known);
    return c;
}

static void apply_logging(const config_t *c)
{
    log_set_level(c->log_level ? c->log_level : "info");
    log_set_jids(c->log_jids);
    if (log_open_file(c->log_file) < 0) log_error("main", "cannot open log file %s", c->log_file);
}

static void on_reload(evutil_socket_t sig, short what, void *arg)
{
    (void)sig; (void)what; (void)arg;
    strlist_t errors = {0};
    log_info("main", "SIGHUP: reloading %s", srv->config_path);
    config_t *c = load_config(srv->config_path, &errors);
    tls_t *t = c ? tls_new(c, &errors) : NULL;
    if (!c || !t) {
        for (size_t i = 0; i < errors.n; i++) log_error("config", "%s", errors.v[i]);
        log_error("main", "reload failed; keeping the running configuration");
        config_free(c);
        strlist_free(&errors);
        return;
    }
    strlist_free(&errors);
    /* New streams use the new certificates; running ones keep theirs (reference counted). */
    tls_unref(srv->tls);
    srv->tls = t;
    /* Limits and logging come from the new config; hosts, listeners and modules stay as they
     * were started (changing those needs a restart, which the log says). */
    config_t *old = srv->cfg;
    srv->cfg = c;
    apply_logging(c);
    config_free(old);
    log_info("main", "reloaded configuration and certificates (hosts, listeners and modules change on restart)");
}

static struct event *term_timer, *done_poll;

static void on_term_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what; (void)arg;
    log_warn("main", "streams did not close in time; exiting");
    event_base_loopbreak(srv->base);
}

static void check_done(evutil_socket_t fd, short what, void *arg);

/* "host-started" / "host-stopping" (module.h) for every served host, in the config's order. */
static void fire_hosts(const char *name)
{
    for (size_t i = 0; i < host_count(); i++) {
        hook_event_t ev = {.name = name, .host = host_at(i)};
        hook_fire(&ev);
    }
}

static void on_term(evutil_socket_t sig, short what, void *arg)
{
    (void)what; (void)arg;
    if (srv->shutting_down) return;
    log_info("main", "signal %d: closing every stream", (int)sig);
    srv->shutting_down = 1;
    fire_hosts("host-stopping");    /* while every session is still there */
    listen_stop();
    c2s_close_all();
    s2s_close_all();
    http_close_all();
    struct timeval tv = {6, 0};
    term_timer = evtimer_new(srv->base, on_term_timeout, NULL);
    evtimer_add(term_timer, &tv);
    check_done(-1, 0, NULL);
}

/* Stop the loop once every session is gone. */
static void check_done(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what; (void)arg;
    if (!srv->sessions && s2s_stream_count() == 0 && http_connection_count() == 0) {
        event_base_loopexit(srv->base, NULL);
        return;
    }
    if (!done_poll) done_poll = evtimer_new(srv->base, check_done, NULL);
    struct timeval tv = {0, 20000};
    evtimer_add(done_poll, &tv);
}

/* Give the data_dir and the storage's files in it (storage_files) to uid:gid. We are root, and the
 * directory's contents are the unprivileged user's: it may have put links there. So nothing else in
 * the directory is touched, no symbolic link is followed (O_NOFOLLOW), each file is changed through
 * the descriptor that was checked (no race with a rename), and a file with more than one link is
 * left alone with a warning: a hard link may be any file of the file system (/etc/shadow). The
 * data_dir itself is the path the administrator configured and may be a symbolic link. 0/-1 */
static int chown_data_dir(const char *dir, uid_t uid, gid_t gid)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fchown(dfd, uid, gid) < 0) {
        if (dfd >= 0) close(dfd);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; storage_files[i] && rc == 0; i++) {
        const char *name = storage_files[i];
        int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ELOOP) log_warn("main", "%s/%s is a symbolic link: not followed, owner unchanged", dir, name);
            else if (errno != ENOENT) rc = -1;
            continue;
        }
        struct stat st;
        if (fstat(fd, &st) < 0) rc = -1;
        else if (!S_ISREG(st.st_mode)) log_warn("main", "%s/%s is not a regular file: owner unchanged", dir, name);
        else if (st.st_nlink > 1)
            log_warn("main", "%s/%s has %ju links: owner unchanged (a hard link may be any file)", dir, name,
                     (uintmax_t)st.st_nlink);
        else if ((st.st_uid != uid || st.st_gid != gid) && fchown(fd, uid, gid) < 0) rc = -1;
        close(fd);
    }
    close(dfd);
    return rc;
}

static int drop_privileges(const char *user)
{
    if (!user || geteuid() != 0) return 0;
    struct passwd *pw = getpwnam(user);
    if (!pw) {
        log_error("main", "user '%s' does not exist", user);
        return -1;
    }
    /* The data_dir and the database files must stay usable after the switch, also when
     * civitasctl (run as root) created them: they are given to the user at every start. */
    char *err = NULL;
    if (storage_make_dir(srv->cfg->data_dir, &err) < 0) {
        log_error("main", "storage: %s", err ? err : "cannot create the data_dir");
        free(err);
        return -1;
    }
    if (chown_data_dir(srv->cfg->data_dir, pw->pw_uid, pw->pw_gid) < 0) {
        log_error("main", "cannot give %s to user '%s'", srv->cfg->data_dir, user);
        return -1;
    }
    if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
        log_error("main", "cannot switch to user '%s'", user);
        return -1;
    }
    log_info("main", "running as %s", user);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"check", no_argument, NULL, 'k'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {NULL, 0, NULL, 0}};
    const char *config_path = NULL;
    int check = 0, o;
    while ((o = getopt_long(argc, argv, "c:khV", opts, NULL)) != -1) {
        switch (o) {
        case 'c': config_path = optarg; break;
        case 'k': check = 1; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("civitasd %s\n", PACKAGE_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!config_path || optind != argc) {
        usage(stderr);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    srv = xcalloc(1, sizeof *srv);
    srv->config_path = xstrdup(config_path);
    strlist_t errors = {0};
    srv->cfg = load_config(config_path, &errors);
    if (srv->cfg) srv->tls = tls_new(srv->cfg, &errors);
    if (!srv->cfg || !srv->tls) {
        print_errors(&errors);
        if (!errors.n) fprintf(stderr, "%s: unusable configuration\n", config_path);
        return 1;
    }
    strlist_free(&errors);
    if (check) {
        strlist_t report = {0};
        if (modules_check_report(srv->cfg, &errors, &report) < 0) {
            print_errors(&errors);
            return 1;
        }
        printf("%s: configuration is usable\n", config_path);
        /* What the modules will run with, defaults included, as config text an admin can copy. */
        printf("# modules in load order, with every option's effective value:\n");
        for (size_t i = 0; i < report.n; i++) printf("%s\n", report.v[i]);
        strlist_free(&report);
        return 0;
    }
    apply_logging(srv->cfg);

    /* Only binding the ports and opening the module files need root (the module directory, the
     * build tree say, need not be open to user:); the storage is opened after the switch to user:,
     * so that nothing in the user's data_dir is ever opened with privileges. */
    srv->base = event_base_new();
    srv->ip_state = strmap_new();
    if (listen_start() < 0 || modules_open() < 0 || drop_privileges(srv->cfg->user) < 0) {
        log_error("main", "start-up failed");
        return 1;
    }
    char *err = NULL;
    srv->store = storage_open(srv->cfg->data_dir, &err);
    if (!srv->store) {
        log_error("main", "storage: %s", err ? err : "cannot open");
        free(err);
        return 1;
    }
    if (storage_checkpoint_thread(srv->store) < 0)     /* WAL checkpoints off the loop */
        log_warn("main", "storage: %s; commits checkpoint the WAL themselves", storage_last_error(srv->store));
    iq_requests_start(&iq_env);
    if (host_setup() < 0 || modules_load() < 0 || caps_start() < 0 || s2s_start(&federation_local) < 0) {
        log_error("main", "start-up failed");
        return 1;
    }
    fire_hosts("host-started");     /* before the account events left while no server ran */
    account_events_start();
    fast_sweep_start();
    struct event *ev_term = evsignal_new(srv->base, SIGTERM, on_term, NULL);
    struct event *ev_int = evsignal_new(srv->base, SIGINT, on_term, NULL);
    struct event *ev_hup = evsignal_new(srv->base, SIGHUP, on_reload, NULL);
    event_add(ev_term, NULL);
    event_add(ev_int, NULL);
    event_add(ev_hup, NULL);
    log_info("main", "civitas %s ready (%zu host%s)", PACKAGE_VERSION, srv->nhosts, srv->nhosts == 1 ? "" : "s");

    event_base_dispatch(srv->base);

    /* Shutdown in reverse order of start-up. */
    for (session_t *s = srv->sessions; s; s = s->next) s->bound = 0;
    account_events_stop();
    fast_sweep_stop();
    s2s_stop();
    caps_stop();
    http_stop();     /* requests end (their modules' cleanup runs) before the modules go */
    modules_unload();
    iq_requests_shutdown();
    timers_shutdown();
    roster_cache_shutdown();
    event_free(ev_term);
    event_free(ev_int);
    event_free(ev_hup);
    if (term_timer) event_free(term_timer);
    if (done_poll) event_free(done_poll);
    storage_close(srv->store);
    log_info("main", "stopped");
    host_free_all();
    ip_state_free_all();
    tls_unref(srv->tls);
    config_free(srv->cfg);
    free(srv->config_path);
    event_base_free(srv->base);
    free(srv);
    return 0;
}
