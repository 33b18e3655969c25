/* tests/fuzz/fuzz_modules.c: libFuzzer target for every standard module's stanza handlers through
 * one entry point: the router. Each input is one stanza, sent from a bound client session or from
 * a remote server, into a core with all standard modules linked in and real SQLite storage.
 *
 * Input: byte 0 picks the sender (a local session of alice or bob, or a remote user) and, when the
 * stanza has none, its 'to'; the rest is the stanza's XML (jabber:client). An element that is no
 * stanza goes to the "stream-element/<ns>" hooks of alice's or bob's session, as c2s hands it over. Invariants: no crash,
 * leak or UB (the sanitizers); a session the input closed (account removal, conflict) is freed by
 * the core and made again, an account removed is created again. */
#include "server.h"
#include "module.h"
#include "c2s.h"
#include "ip_limits.h"
#include "s2s.h"
#include "standard_modules.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <event2/event.h>

server_t *srv;

/* The standard modules (modules/standard.list, as server/standard_modules.def), compiled into this
 * program with civitas_module renamed (see fuzz.sh), and started in dependency order. */
#define CIV_MODULE(n) extern const module_t civitas_module_##n;
#include "standard_modules.def"
#undef CIV_MODULE
static const module_t *const mods[] = {
#define CIV_MODULE(n) &civitas_module_##n,
#include "standard_modules.def"
#undef CIV_MODULE
    NULL};

static session_t *sess[2];       /* alice's and bob's bound sessions */
static int unbound[2];           /* set by the harness's session-closed hook */
static int peer_fd[2] = {-1, -1};  /* the client ends of their socket pairs */
static const char *const names[2] = {"alice", "bob"};

static void die(const char *what)
{
    fprintf(stderr, "fuzz_modules: %s\n", what);
    abort();
}

/* A bound client session over a socket pair, made by the real c2s code and then marked as
 * authenticated and bound as SASL and resource binding would. */
static session_t *make_session(const char *user, const char *resource, int *client_end)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) die("socketpair");
    session_t *before = srv->sessions;
    c2s_accept(sv[0], "127.0.0.9", C2S_PLAIN);
    session_t *s = srv->sessions;
    if (s == before) die("c2s_accept made no session");
    s->state = C2S_OPEN;
    s->tls_active = s->authenticated = 1;
    s->header_sent = 1;
    s->host = srv->hosts[0];
    s->user = xstrdup(user);
    s->jid = jid_make(user, "localhost", resource);
    session_bind(s);
    s->bound = 1;
    s->available = 1;
    s->priority = 0;
    *client_end = sv[1];
    return s;
}

static void ensure_account(const char *user)
{
    if (storage_account_exists(srv->store, user, "localhost") == 1) return;
    scram_creds_t a, b;
    if (scram_creds_from_password(SCRAM_SHA1, "pw", 4096, &a) < 0 ||
        scram_creds_from_password(SCRAM_SHA256, "pw", 4096, &b) < 0 ||
        storage_account_create(srv->store, user, "localhost", &a, &b) < 0)
        die("account");
}

/* A session of the harness was unbound: the core closes it (conflict, account removal, also
 * from a deferred event inside the loop) and frees it soon; the harness must not use it again. */
static int on_unbound(hook_event_t *ev, void *ud)
{
    (void)ud;
    for (int i = 0; i < 2; i++)
        if (ev->origin == sess[i]) unbound[i] = 1;
    return HOOK_PASS;
}

static int harness_load(module_ctx_t *m)
{
    module_hook(m, "session-closed", -1000, on_unbound, NULL);
    return 0;
}

static const module_t harness_module = {.abi = CIVITAS_MODULE_ABI, .name = "fuzz-harness", .load = harness_load};

/* Let the loop run (deferred callbacks, frees), throw away what the server wrote to the
 * sessions, and make again what the input removed. */
static void settle(void)
{
    char buf[65536];
    for (int i = 0; i < 2; i++)
        if (sess[i]->state == C2S_CLOSING || sess[i]->freeing || !sess[i]->bound) unbound[i] = 1;
    event_base_loop(srv->base, EVLOOP_NONBLOCK);
    for (int i = 0; i < 2; i++) {
        while (recv(peer_fd[i], buf, sizeof buf, MSG_DONTWAIT) > 0) {
        }
        if (unbound[i]) {        /* freed by the loop above, or once its socket closes */
            close(peer_fd[i]);
            ensure_account(names[i]);
            sess[i] = make_session(names[i], "fuzz", &peer_fd[i]);
            unbound[i] = 0;
        }
    }
    event_base_loop(srv->base, EVLOOP_NONBLOCK);   /* frees what the closes above finished */
    ensure_account("carol");
}

static void init(void)
{
    char dir[] = "/tmp/civitas-fuzz-modules-XXXXXX";
    if (!mkdtemp(dir)) die("mkdtemp");
    char *cfgpath = xasprintf("%s/civitas.yml", dir);
    FILE *f = fopen(cfgpath, "w");
    if (!f) die("config");
    fprintf(f, "hosts:\n  - name: localhost\nlisten:\n  client: []\ndata_dir: %s/data\n"
               "federation:\n  mode: off\nlog:\n  level: error\n"
               "offline:\n  max_messages: 50\nroster:\n  max_items: 50\n", dir);
    fclose(f);
    strlist_t errors = {0};
    srv = xcalloc(1, sizeof *srv);
    srv->cfg = config_load(cfgpath, standard_modules, &errors);
    free(cfgpath);
    if (!srv->cfg) die(errors.n ? errors.v[0] : "config_load");
    log_set_level("error");
    char *err = NULL;
    srv->store = storage_open(srv->cfg->data_dir, &err);
    if (!srv->store) die(err ? err : "storage_open");
    srv->base = event_base_new();
    srv->ip_state = strmap_new();
    static const s2s_local_t local = {router_from_remote, route_stanza};
    s2s_set_local(&local);      /* bounces from federation reach the router, as in civitasd */
    static const iq_request_env_t iq_env = {route_stanza, module_unloading};
    iq_requests_start(&iq_env); /* module_send_iq routes its requests, as in civitasd */
    srv->nhosts = 1;
    srv->hosts = xcalloc(1, sizeof *srv->hosts);
    srv->hosts[0] = xcalloc(1, sizeof(host_t));
    srv->hosts[0]->name = xstrdup("localhost");
    srv->hosts[0]->users = strmap_new();
    if (module_load_static(&harness_module) < 0) die("harness module");
    if (modules_load_static(mods) < 0) die("module load");
    if (caps_start() < 0) die("caps");
    for (int i = 0; i < 2; i++) {
        ensure_account(names[i]);
        sess[i] = make_session(names[i], "fuzz", &peer_fd[i]);
    }
    ensure_account("carol");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        init();
        ready = 1;
    }
    if (size < 2) return 0;
    unsigned sel = data[0];
    xnode_t *st = xnode_parse_one((const char *)data + 1, size - 1, NS_CLIENT);
    if (!st) return 0;
    if (strcmp(st->ns, NS_CLIENT) != 0 ||
        (strcmp(st->name, "message") != 0 && strcmp(st->name, "presence") != 0 && strcmp(st->name, "iq") != 0)) {
        /* any other top-level element of an authenticated client stream goes where c2s sends it:
         * "stream-element/<ns>" (XEP-0352 <active/>/<inactive/>, XEP-0198); the state it leaves
         * (an inactive session) applies to the inputs that follow */
        session_t *s = sess[(sel & 1) != 0];
        char *name = xasprintf("stream-element/%s", st->ns);
        hook_event_t ev = {.name = name, .stanza = st, .origin = s, .host = s->host, .from = s->jid};
        hook_fire(&ev);
        free(name);
        xnode_free(ev.stanza);
        settle();
        return 0;
    }
    static const char *const tos[] = {"localhost", "alice@localhost", "bob@localhost", "bob@localhost/fuzz",
                                      "carol@localhost", "carol@localhost/gone", "nobody@localhost",
                                      "remote@elsewhere.example"};
    if (!xnode_attr(st, "to") && (sel & 8)) xnode_set_attr(st, "to", tos[(sel >> 4) & 7]);
    if ((sel & 3) < 3) {    /* from alice's or bob's session, as c2s hands it over after stamping 'from' */
        session_t *s = sess[(sel & 3) == 2];
        xnode_set_attr(st, "from", s->jid->full);
        router_from_client(s, st);
    } else {                /* from a remote server, as s2s_in hands it over */
        if (!xnode_attr(st, "to")) xnode_set_attr(st, "to", "alice@localhost");
        xnode_set_attr(st, "from", "remote@elsewhere.example/x");
        router_from_remote(st, "elsewhere.example");
    }
    settle();
    return 0;
}
