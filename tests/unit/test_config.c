/* tests/unit/test_config.c: the YAML config loader (server/config.c): values, defaults, bounds,
 * includes, path resolution, and the exact "FILE:LINE: message" of each error. The example config is
 * argv[1], else $CIVITAS_SRCDIR/conf/civitas.yml, else ./conf/civitas.yml. */
#define _GNU_SOURCE
#include "config.h"
#include "tap.h"
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[256];                   /* the mkdtemp directory */
static char main_path[PATH_MAX];       /* dir/civitas.yml */
static const char *const known[] = {"disco", "ping", "version", "time", "offline", NULL};

/* Write dir/NAME (creating one level of subdirectory) with TEXT. */
static void write_file(const char *name, const char *text)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    char *slash = strrchr(p, '/');
    *slash = '\0';
    mkdir(p, 0700);
    *slash = '/';
    FILE *f = fopen(p, "w");
    if (!f) {
        perror(p);
        exit(2);
    }
    fputs(text, f);
    fclose(f);
}

static strlist_t errs;

/* Load TEXT as dir/civitas.yml; errs holds the errors of this load only. */
static config_t *load(const char *text)
{
    strlist_free(&errs);
    write_file("civitas.yml", text);
    return config_load(main_path, known, &errs);
}

/* Is "FILE:LINE: MSG" among the errors? FILE is relative to dir. */
static int has_error(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int has_error(const char *file, int line, const char *fmt, ...)
{
    char msg[1024], want[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(want, sizeof want, "%s/%s:%d: %s", dir, file, line, msg);
    for (size_t i = 0; i < errs.n; i++)
        if (strcmp(errs.v[i], want) == 0) return 1;
    printf("# wanted: %s\n", want);
    for (size_t i = 0; i < errs.n; i++) printf("# got:    %s\n", errs.v[i]);
    return 0;
}

/* Some error at FILE:LINE containing SUB. */
static int has_error_sub(const char *file, int line, const char *sub)
{
    char pre[PATH_MAX + 64];
    snprintf(pre, sizeof pre, "%s/%s:%d: ", dir, file, line);
    for (size_t i = 0; i < errs.n; i++)
        if (strncmp(errs.v[i], pre, strlen(pre)) == 0 && strstr(errs.v[i] + strlen(pre), sub)) return 1;
    printf("# wanted: %s...%s...\n", pre, sub);
    for (size_t i = 0; i < errs.n; i++) printf("# got:    %s\n", errs.v[i]);
    return 0;
}

static int fails_with(const char *text, int line, const char *msg)
{
    config_t *c = load(text);
    int r = !c && has_error("civitas.yml", line, "%s", msg);
    config_free(c);
    return r;
}

static int fails_with_sub(const char *text, int line, const char *sub)
{
    config_t *c = load(text);
    int r = !c && has_error_sub("civitas.yml", line, sub);
    config_free(c);
    return r;
}

static int streq_path(const char *got, const char *rel)
{
    char want[PATH_MAX];
    snprintf(want, sizeof want, "%s/%s", dir, rel);
    if (got && strcmp(got, want) == 0) return 1;
    printf("# wanted %s, got %s\n", want, got ? got : "(null)");
    return 0;
}

#define HOST "hosts:\n  - name: kaarst.example\n"

static void test_defaults(void)
{
    config_t *c = load(HOST);
    ok(c && errs.n == 0, "a config with one host and nothing else loads");
    if (!c) return;
    ok(c->nhosts == 1 && strcmp(c->hosts[0].name, "kaarst.example") == 0 && c->hosts[0].line == 2 &&
           !c->hosts[0].certificate && !c->hosts[0].key,
       "the host is read with its line; tls is optional here");
    ok(streq_path(c->data_dir, "data"), "data_dir defaults to 'data' next to the config file");
    ok(strcmp(c->storage_driver, "sqlite") == 0 && !c->storage_dsn, "storage defaults to sqlite without dsn");
    ok(c->fed_mode == FED_OPEN && c->fed_dialback == 1 && c->npartners == 0, "federation defaults: open, dialback");
    ok(!c->modules_set && !c->sasl_mechanisms_set && strcmp(c->log_level, "info") == 0 && !c->log_file &&
           !c->log_jids && !c->user,
       "modules/sasl unset, log info to stderr without JIDs, no user switch");
    ok(c->max_stanza_size == 262144 && c->max_stanza_size_preauth == 8192 && c->max_depth == 64 &&
           c->max_attributes == 64 && c->stream_header_timeout == 30 && c->auth_timeout == 60 &&
           c->max_connections_per_ip == 64 && c->max_sessions_per_ip == 0 && c->max_unauthenticated == 1024 && c->sasl_failures_per_ip == 5 &&
           c->max_output_buffer == 1048576 && c->scram_iterations == 4096,
       "every limit has its documented default");
    ok(c->listen_client.n == 0 && c->listen_http.n == 0 && !c->module_sections, "no listeners, no module sections");
    config_free(c);
}

static void test_full(void)
{
    config_t *c = load("hosts:\n"
                       "  - name: Kaarst.Example.\n"
                       "    tls: {certificate: certs/k.crt, key: /etc/k.key}\n"
                       "  - name: \"meerbusch.example\"\n"
                       "listen:\n"
                       "  client: [\"127.0.0.1:5222\", \"[::1]:5222\"]\n"
                       "  client_tls: 127.0.0.1:5223\n"
                       "  server: [\"0.0.0.0:0\"]\n"
                       "  server_tls: []\n"
                       "  http: [\"127.0.0.1:5280\"]\n"
                       "data_dir: /var/lib/civitas\n"
                       "storage: {driver: postgresql, dsn: \"postgresql://db/civitas\"}\n"
                       "federation:\n"
                       "  mode: allowlist\n"
                       "  dialback: no\n"
                       "  partners:\n"
                       "    - domain: Neuss.Example\n"
                       "      route: \"127.0.0.3:5269\"\n"
                       "      ca: ca/neuss.pem\n"
                       "      e2e: require\n"
                       "    - domain: dormagen.example\n"
                       "modules: [ping, version]\n"
                       "sasl: {mechanisms: [scram-sha-256, PLAIN], iterations: 10000}\n"
                       "log: {level: debug, file: log/c.log, jids: on}\n"
                       "user: civitas\n"
                       "limits:\n"
                       "  max_stanza_size: 10000\n"
                       "  max_stanza_size_preauth: +2048\n"
                       "  max_depth: 1024\n"
                       "  auth_timeout: 5\n"
                       "version:\n"
                       "  show_os: yes\n"
                       "  limit: 7\n"
                       "ping:\n");
    ok(c != NULL, "a config using every key loads");
    if (!c) return;
    ok(c->nhosts == 2 && strcmp(c->hosts[0].name, "kaarst.example") == 0 &&
           strcmp(c->hosts[1].name, "meerbusch.example") == 0,
       "host names are lowercased and lose a trailing dot");
    ok(streq_path(c->hosts[0].certificate, "certs/k.crt") && strcmp(c->hosts[0].key, "/etc/k.key") == 0,
       "a relative certificate resolves against the config's directory; an absolute key stays");
    ok(c->listen_client.n == 2 && strcmp(c->listen_client.v[1], "[::1]:5222") == 0 && c->listen_client_tls.n == 1 &&
           c->listen_server.n == 1 && c->listen_server_tls.n == 0 && c->listen_http.n == 1,
       "listen lists, a single string counting as a list of one");
    ok(strcmp(c->data_dir, "/var/lib/civitas") == 0 && strcmp(c->storage_driver, "postgresql") == 0 &&
           strcmp(c->storage_dsn, "postgresql://db/civitas") == 0,
       "data_dir and storage");
    const cfg_partner_t *p = config_partner(c, "neuss.example");
    ok(c->fed_mode == FED_ALLOWLIST && !c->fed_dialback && c->npartners == 2 && p && p->e2e == E2E_REQUIRE &&
           strcmp(p->route, "127.0.0.3:5269") == 0 && streq_path(p->ca, "ca/neuss.pem") &&
           config_partner(c, "dormagen.example")->e2e == E2E_OFF && !config_partner(c, "x.example"),
       "federation: mode, dialback, partners with route, ca, e2e (default off)");
    ok(p && p->e2e_line == 20 && config_partner(c, "dormagen.example")->e2e_line == 0,
       "federation.partners.e2e: its line is kept, 0 when not written (then the host's e2e_policy applies)");
    ok(c->modules_set && c->modules.n == 2 && strcmp(c->modules.v[1], "version") == 0, "modules list");
    ok(c->sasl_mechanisms_set && c->sasl_mechanisms.n == 2 && strcmp(c->sasl_mechanisms.v[0], "SCRAM-SHA-256") == 0 &&
           c->scram_iterations == 10000,
       "sasl mechanisms are uppercased; iterations");
    ok(strcmp(c->log_level, "debug") == 0 && streq_path(c->log_file, "log/c.log") && c->log_jids == 1 &&
           strcmp(c->user, "civitas") == 0,
       "log level, file (resolved), jids; user");
    ok(c->max_stanza_size == 10000 && c->max_stanza_size_preauth == 2048 && c->max_depth == 1024 &&
           c->auth_timeout == 5 && c->max_attributes == 64,
       "limits at their bounds are accepted; others keep defaults");
    ok(config_host(c, "meerbusch.example") == &c->hosts[1] && config_host(c, "KAARST.example") == &c->hosts[0] &&
           !config_host(c, "neuss.example") && !config_host(c, NULL),
       "config_host finds served domains only");

    const cfg_node_t *v = config_module_section(c, "version"), *pg = config_module_section(c, "ping");
    ok(v && v->type == CFG_MAP && pg && pg->type == CFG_MAP && !pg->children && !config_module_section(c, "time"),
       "module sections are kept (an empty one as an empty mapping)");
    strlist_t e = {0};
    int show = 0;
    long lim = 0, other = 0;
    const char *s = NULL;
    ok(cfg_get_bool(v, "show_os", 0, &show, &e) == 0 && show == 1 &&
           cfg_get_int(v, "limit", 3, 1, 10, &lim, &e) == 0 && lim == 7 &&
           cfg_get_int(v, "absent", 3, 1, 10, &other, &e) == 0 && other == 3 &&
           cfg_get_string(pg, "x", "dflt", &s, &e) == 0 && strcmp(s, "dflt") == 0 && e.n == 0,
       "cfg_get_bool/int/string read values and defaults");
    char want[PATH_MAX + 100];
    snprintf(want, sizeof want, "%s/civitas.yml:33: version.limit: 7 is above the maximum 5", dir);
    ok(cfg_get_int(v, "limit", 3, 1, 5, &lim, &e) == -1 && lim == 3 && e.n == 1 && strcmp(e.v[0], want) == 0,
       "cfg_get_int: out of bounds -> -1, default, 'FILE:LINE: module.key: ...'");
    strlist_free(&e);
    static const char *const allowed[] = {"show_os", NULL};
    snprintf(want, sizeof want, "%s/civitas.yml:33: unknown key 'limit' in section 'version'", dir);
    ok(cfg_check_keys(v, allowed, &e) == -1 && e.n == 1 && strcmp(e.v[0], want) == 0 &&
           cfg_check_keys(pg, allowed, &e) == 0 && cfg_check_keys(NULL, allowed, &e) == 0,
       "cfg_check_keys reports a key the module does not know, with its line");
    strlist_free(&e);
    ok(cfg_get_bool(v, "limit", 0, &show, &e) == -1 && cfg_get_string(v, "show_os", NULL, &s, &e) == 0 &&
           strcmp(s, "yes") == 0 && e.n == 1 && strstr(e.v[0], "version.limit: expected true or false"),
       "cfg_get_bool rejects a number");
    strlist_free(&e);
    config_free(c);
}

static void test_unknown_keys(void)
{
    ok(fails_with(HOST "listen:\n  client: []\n  lisen: [\"1.2.3.4:5\"]\n", 5, "unknown key 'lisen' in 'listen'"),
       "an unknown key in a section: file, line, key and section");
    ok(fails_with(HOST "dta_dir: /x\n", 3, "unknown key 'dta_dir'"), "an unknown top-level key");
    ok(fails_with("hosts:\n  - name: a.example\n    tls:\n      cert: x\n", 4, "unknown key 'cert' in 'hosts.tls'"),
       "an unknown key inside a host's tls");
    ok(fails_with(HOST "include: []\nlimits:\n  include: x\n", 5, "unknown key 'include' in 'limits'"),
       "include is only a top-level key");
    ok(fails_with(HOST "limits:\n  max_depth: 9\n  max_depth: 10\n", 5, "duplicate key 'max_depth' (first at line 4)"),
       "a key given twice in one mapping is an error");
}

/* The XEP-0205 rate limits (issue 5): defaults, bounds and values, one check per key. */
static void test_rate_limits(void)
{
    config_t *c = load(HOST);
    ok(c && c->max_bytes_per_second == 100000, "limits.max_bytes_per_second defaults to 100000");
    ok(c && c->max_bytes_per_second_preauth == 10000, "limits.max_bytes_per_second_preauth defaults to 10000");
    ok(c && c->max_stanzas_per_second == 100, "limits.max_stanzas_per_second defaults to 100");
    ok(c && c->max_s2s_queue_bytes == 1048576, "limits.max_s2s_queue_bytes defaults to 1048576");
    config_free(c);
    c = load(HOST "limits:\n  max_bytes_per_second: 1024\n  max_bytes_per_second_preauth: 1073741824\n"
                  "  max_stanzas_per_second: 1\n");
    ok(c && c->max_bytes_per_second == 1024 && c->max_bytes_per_second_preauth == 1073741824 &&
           c->max_stanzas_per_second == 1,
       "the rate limits accept values at their bounds");
    config_free(c);
    ok(fails_with(HOST "limits:\n  max_bytes_per_second: 1023\n", 4,
                  "limits.max_bytes_per_second: 1023 is below the minimum 1024"),
       "limits.max_bytes_per_second below 1024 is refused");
    ok(fails_with(HOST "limits:\n  max_bytes_per_second_preauth: 1073741825\n", 4,
                  "limits.max_bytes_per_second_preauth: 1073741825 is above the maximum 1073741824"),
       "limits.max_bytes_per_second_preauth above 1073741824 is refused");
    ok(fails_with(HOST "limits:\n  max_stanzas_per_second: 0\n", 4,
                  "limits.max_stanzas_per_second: 0 is below the minimum 1") &&
           fails_with(HOST "limits:\n  max_stanzas_per_second: 1000001\n", 4,
                      "limits.max_stanzas_per_second: 1000001 is above the maximum 1000000"),
       "limits.max_stanzas_per_second must be 1..1000000");
}

static void test_types_and_bounds(void)
{
    ok(fails_with(HOST "limits:\n  max_stanza_size: 5\n", 4, "limits.max_stanza_size: 5 is below the minimum 10000"),
       "integer below its minimum");
    ok(fails_with(HOST "limits:\n  max_depth: 1025\n", 4, "limits.max_depth: 1025 is above the maximum 1024"),
       "integer above its maximum");
    ok(fails_with(HOST "limits:\n  auth_timeout: 12abc\n", 4, "limits.auth_timeout: expected a whole number, got '12abc'"),
       "integer with trailing garbage");
    ok(fails_with(HOST "sasl:\n  iterations: 99999999999999999999999\n", 4,
                  "sasl.iterations: 99999999999999999999999 is above the maximum 1000000"),
       "integer overflow is out of range, not wrapped");
    ok(fails_with(HOST "limits:\n  max_depth: 0x10\n", 4, "limits.max_depth: expected a whole number, got '0x10'") &&
           fails_with(HOST "limits:\n  max_depth: [1]\n", 4, "limits.max_depth: expected a whole number, got a list") &&
           fails_with(HOST "limits:\n  max_depth:\n", 4, "limits.max_depth: expected a whole number, got nothing"),
       "integers are decimal only; lists and empty values are rejected");
    ok(fails_with(HOST "federation:\n  dialback: maybe\n", 4,
                  "federation.dialback: expected true or false (yes/no, on/off), got 'maybe'"),
       "boolean garbage");
    config_t *c = load(HOST "log: {jids: YES}\nfederation: {dialback: off}\n");
    ok(c && c->log_jids == 1 && c->fed_dialback == 0, "booleans yes/off, case-insensitive");
    config_free(c);
    ok(fails_with(HOST "federation:\n  mode: closed\n", 4, "federation.mode: 'closed' is not one of open, allowlist, off"),
       "federation.mode must be open, allowlist or off");
    ok(fails_with(HOST "storage:\n  driver: mysql\n", 4, "storage.driver: 'mysql' is not one of sqlite, postgresql"),
       "storage.driver must be sqlite or postgresql");
    ok(fails_with(HOST "storage:\n  driver: postgresql\n", 3, "storage.dsn is required with driver postgresql"),
       "postgresql needs a dsn");
    ok(fails_with(HOST "log:\n  level: verbose\n", 4, "log.level: 'verbose' is not one of debug, info, warn, error"),
       "log.level choices");
    ok(fails_with(HOST "sasl:\n  mechanisms: [SCRAM-SHA-256, DIGEST-MD5]\n", 4,
                  "sasl.mechanisms: 'DIGEST-MD5' is not one of SCRAM-SHA-256-PLUS, SCRAM-SHA-1-PLUS, SCRAM-SHA-256, "
                  "SCRAM-SHA-1, PLAIN, EXTERNAL"),
       "sasl.mechanisms names mechanisms civitas has");
    ok(fails_with(HOST "modules:\n  - ping\n  - roster2\n", 5, "modules: no module named 'roster2'") &&
           fails_with(HOST "modules: [ping, ping]\n", 3, "modules: 'ping' is listed twice"),
       "modules must be known and listed once");
    c = load(HOST "modules: []\n");
    ok(c && c->modules_set && c->modules.n == 0, "modules: [] loads no module (set, empty)");
    config_free(c);
    ok(fails_with(HOST "listen: [\"1.2.3.4:5\"]\n", 3, "listen: expected a mapping (key: value lines), got a list") &&
           fails_with(HOST "data_dir: \"\"\n", 3, "data_dir: expected a string, got an empty one") &&
           fails_with(HOST "user: [a]\n", 3, "user: expected a string, got a list"),
       "wrong shapes: mapping/string expected");
    ok(fails_with(HOST "offline: [1]\n", 3, "offline: a module's section must be a mapping (key: value lines)"),
       "a module section must be a mapping");
}

static void test_hosts(void)
{
    ok(fails_with("", 1, "no hosts: list at least one domain under 'hosts:' (- name: example.org)"),
       "an empty file is an error: no hosts");
    ok(fails_with("# only a comment\nhosts: []\n", 2, "no hosts: list at least one domain under 'hosts:' (- name: example.org)"),
       "an empty hosts list is an error");
    ok(fails_with("hosts:\n  - tls: {certificate: a, key: b}\n", 2, "hosts: 'name' is required"), "a host needs a name");
    ok(fails_with("hosts:\n  - name: a.example\n    tls:\n      certificate: a.crt\n", 2,
                  "hosts: 'a.example': tls needs both certificate and key (or neither)"),
       "certificate without key");
    char want[PATH_MAX + 100];
    snprintf(want, sizeof want, "hosts: 'a.example' is listed twice (first at %s:2)", main_path);
    ok(fails_with("hosts:\n  - name: a.example\n  - name: b.example\n  - name: A.example\n", 4, want),
       "duplicate host names (case-insensitive) are an error naming the first");
    ok(fails_with("hosts:\n  - name: a@b.example\n", 2, "hosts.name: 'a@b.example' is not a domain name (has a character not allowed in a domain)"),
       "a host name with '@' is rejected");
    ok(fails_with(HOST "federation:\n  partners:\n    - route: \"1.2.3.4:5269\"\n", 5, "federation.partners: 'domain' is required") &&
           fails_with(HOST "federation:\n  partners:\n    - domain: n.example\n      e2e: always\n", 6,
                      "federation.partners.e2e: 'always' is not one of off, warn, require"),
       "partners need a domain; e2e is off, warn or require");
}

static void test_listen(void)
{
    struct {
        const char *addr, *why;
    } bad[] = {
        {"127.0.0.1", "the :port is missing"},
        {"127.0.0.1:65536", "the port must be a number from 0 to 65535"},
        {"::1:5222", "write IPv6 addresses in brackets, as [::1]:5222"},
        {"[::g]:5222", "not an IPv6 address"},
        {"localhost:5222", "not an IPv4 address (or [IPv6])"},
        {"1.2.3.4:52x", "the port must be a number from 0 to 65535"},
    };
    int all = 1;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char text[256], msg[256];
        snprintf(text, sizeof text, HOST "listen:\n  server:\n    - \"0.0.0.0:5269\"\n    - \"%s\"\n", bad[i].addr);
        snprintf(msg, sizeof msg, "listen.server: '%s' is not address:port (%s)", bad[i].addr, bad[i].why);
        all &= fails_with(text, 6, msg);
    }
    ok(all, "bad listen addresses are reported with their own line and the reason");
    config_t *c = load(HOST "listen: {client: [\"0.0.0.0:0\", \"[::]:65535\"]}\nfederation:\n  partners:\n"
                            "    - {domain: n.example, route: \"xmpp.n.example:5269\"}\n");
    ok(c && c->listen_client.n == 2, "port 0 and 65535, [::] accepted; a route may name a host");
    config_free(c);
}

static void test_syntax(void)
{
    ok(fails_with_sub(HOST "listen:\n  client: [\"1.2.3.4:5\"\n", 5, "YAML syntax error"),
       "a YAML syntax error is reported with its line");
    ok(fails_with_sub(HOST "limits: &l\n  max_depth: 9\n", 3, "anchors (&l) are not supported") &&
           fails_with_sub("defaults: &d {max_depth: 9}\n" HOST "limits: *d\n", 1, "anchors (&d) are not supported"),
       "anchors are rejected, saying so");
    ok(fails_with(HOST "limits: *x\n", 3, "YAML aliases (*x) are not supported: write the value out"),
       "an alias is rejected");
    ok(fails_with_sub(HOST "---\n" HOST, 3, "a second YAML document"), "several documents are rejected");
    ok(fails_with("- a\n- b\n", 1, "the top level must be a mapping (key: value lines)"), "top level must be a mapping");
    ok(fails_with_sub(HOST "user: \"ci\\0vitas\"\n", 3, "NUL"), "a NUL character in a value is rejected");
    char deep[400] = HOST "x: ";
    for (int i = 0; i < 40; i++) strcat(deep, "[");
    ok(fails_with_sub(deep, 3, "nested more than 32 levels deep"), "deep nesting is refused");
    ok(fails_with_sub(HOST "? [a, b]\n: c\n", 3, "a key must be a plain string"), "complex keys are refused");
    ok(fails_with_sub(HOST "user: \"\xff\xfe\"\n", 3, "YAML syntax error"), "invalid UTF-8 is reported with its line");
}

static void test_includes(void)
{
    write_file("conf.d/10-meerbusch.yml", "hosts:\n  - name: meerbusch.example\n    tls:\n"
                                          "      certificate: m.crt\n      key: m.key\n"
                                          "federation:\n  partners:\n    - domain: neuss.example\n"
                                          "modules: [ping]\n");
    write_file("conf.d/20-more.yml", "hosts:\n  - name: dormagen.example\nlimits:\n  max_depth: 100\n");
    write_file("conf.d/notes.txt", "this: [is not yaml\n");
    config_t *c = load(HOST "include: conf.d/*.yml\nfederation:\n  partners:\n    - domain: grevenbroich.example\n"
                            "modules: [disco]\nlimits:\n  auth_timeout: 9\n");
    ok(c && c->nhosts == 3 && strcmp(c->hosts[1].name, "meerbusch.example") == 0 &&
           strcmp(c->hosts[2].name, "dormagen.example") == 0 && c->npartners == 2 &&
           strcmp(c->partners[1].domain, "neuss.example") == 0 && c->modules.n == 2 &&
           strcmp(c->modules.v[1], "ping") == 0,
       "included files append hosts, partners and modules in glob order");
    ok(c && c->max_depth == 100 && c->auth_timeout == 9, "mappings merge: limits from both files");
    ok(c && streq_path(c->hosts[1].certificate, "conf.d/m.crt") && streq_path(c->hosts[1].key, "conf.d/m.key"),
       "relative paths resolve against the directory of the file they are written in");
    ok(c && streq_path(c->hosts[1].file, "conf.d/10-meerbusch.yml") && c->hosts[1].line == 2,
       "an included host remembers its file and line");
    config_free(c);

    write_file("conf.d/20-more.yml", "hosts:\n  - name: dormagen.example\nlimits:\n  max_depth: 100\n");
    c = load(HOST "include: [conf.d/*.yml]\nlimits:\n  max_depth: 50\n");
    char want[PATH_MAX + 200];
    snprintf(want, sizeof want, "limits.max_depth: already set at %s/civitas.yml:5", dir);
    ok(!c && has_error("conf.d/20-more.yml", 4, "%s", want), "a scalar set in two files: error naming both places");
    config_free(c);

    c = load(HOST "include: [\"nothing/*.yml\", \"conf.d/none-*.yml\"]\n");
    ok(c && c->nhosts == 1,
       "a glob that matches nothing is not an error");
    config_free(c);
    snprintf(want, sizeof want, "include: '%s/missing.yml' does not exist", dir);
    ok(fails_with(HOST "include: missing.yml\n", 3, want), "a plain include name that does not exist is an error");

    write_file("cyc/a.yml", "include: b.yml\n");
    write_file("cyc/b.yml", "include: a.yml\n");
    snprintf(want, sizeof want, "include: '%s/cyc/a.yml' is already being read (include cycle)", dir);
    ok(!load(HOST "include: cyc/a.yml\n") && has_error("cyc/b.yml", 1, "%s", want),
       "an include cycle is an error at the include line");
    ok(fails_with_sub(HOST "include: civitas.yml\n", 3, "is already being read (include cycle)"),
       "a file including itself");

    /* chain: civitas.yml -> d1 -> ... -> d8 is allowed (depth 8); d9 is too deep */
    for (int i = 1; i <= 9; i++) {
        char name[32], text[64];
        snprintf(name, sizeof name, "deep/d%d.yml", i);
        if (i < 9) snprintf(text, sizeof text, "include: d%d.yml\n", i + 1);
        else snprintf(text, sizeof text, "user: deep\n");
        write_file(name, text);
    }
    ok(!load(HOST "include: deep/d1.yml\n") && has_error_sub("deep/d8.yml", 1, "includes nested more than 8 deep"),
       "includes nested deeper than 8 are an error");
    write_file("deep/d8.yml", "user: deep\n");
    c = load(HOST "include: deep/d1.yml\n");
    ok(c && strcmp(c->user, "deep") == 0, "8 levels of includes are fine");
    config_free(c);
    write_file("bad/x.yml", "limits:\n  max_depth: 2\n");
    ok(!load(HOST "include: bad/x.yml\n") && has_error("bad/x.yml", 2, "limits.max_depth: 2 is below the minimum 8"),
       "an error in an included file names that file and line");
}

/* Mutated copies of a valid config through config_load_buffer: no crash (ASan/UBSan watch), and the
 * result is consistent: a config and no errors, or NULL and only well-formed "FILE:LINE: " errors. */
static void test_robust(void)
{
    static const char base[] = "hosts:\n  - name: kaarst.example\n    tls: {certificate: a, key: b}\n"
                               "listen:\n  client: [\"127.0.0.1:5222\", \"[::1]:0\"]\n"
                               "federation:\n  mode: allowlist\n  partners:\n    - {domain: n.example, e2e: warn}\n"
                               "limits:\n  max_depth: 99\nsasl: {mechanisms: [PLAIN]}\nversion: {show_os: true}\n";
    static const char alphabet[] = "-:[]{}\"'&*!|>#%@` \n\t,?~0123456789az\\";
    char path[PATH_MAX], buf[sizeof base + 64];
    snprintf(path, sizeof path, "%s/fuzz.yml", dir);
    size_t prefix = strlen(path);
    srand(12345);
    int consistent = 1, loaded = 0;
    for (int round = 0; round < 3000; round++) {
        size_t len = sizeof base - 1;
        memcpy(buf, base, len);
        int edits = 1 + rand() % 4;
        for (int k = 0; k < edits; k++) {
            size_t at = (size_t)rand() % len;
            int op = rand() % 3;
            char ch = rand() % 8 ? alphabet[rand() % (sizeof alphabet - 1)] : (char)(rand() % 256);
            if (op == 0) buf[at] = ch;
            else if (op == 1 && len + 1 < sizeof buf) memmove(buf + at + 1, buf + at, len - at), buf[at] = ch, len++;
            else if (len > 1) memmove(buf + at, buf + at + 1, len - at - 1), len--;
        }
        strlist_t e = {0};
        config_t *c = config_load_buffer(path, buf, len, known, &e);
        if (c) {
            loaded++;
            consistent &= e.n == 0 && c->nhosts >= 1;
        } else {
            consistent &= e.n >= 1;
            for (size_t i = 0; i < e.n; i++)
                consistent &= strncmp(e.v[i], path, prefix) == 0 && e.v[i][prefix] == ':' &&
                              strtol(e.v[i] + prefix + 1, NULL, 10) >= 1 && !strchr(e.v[i], '\n');
        }
        config_free(c);
        strlist_free(&e);
    }
    ok(consistent && loaded > 0 && loaded < 3000, "3000 mutated configs: no crash, errors always 'FILE:LINE: ' (%d loaded)",
       loaded);
    strlist_t e = {0};
    ok(!config_load(NULL, known, &e) && e.n == 1 && !config_load_buffer(path, NULL, 0, known, &e) && e.n == 2,
       "no file name / no text: errors, no crash");
    strlist_free(&e);
}

static void test_example(const char *path)
{
    strlist_t e = {0};
    extern const char *const standard_modules[];   /* server/standard_modules.c: what civitasd accepts */
    config_t *c = config_load(path, standard_modules, &e);
    for (size_t i = 0; i < e.n; i++) printf("# %s\n", e.v[i]);
    ok(c && c->nhosts == 1 && strcmp(c->hosts[0].name, "kaarst.example") == 0 && c->hosts[0].certificate &&
           c->hosts[0].key,
       "%s loads: host kaarst.example with tls", path);
    ok(c && c->listen_client.n == 1 && strcmp(c->listen_client.v[0], "127.0.0.1:5222") == 0 &&
           c->listen_client_tls.n == 1 && strcmp(c->listen_client_tls.v[0], "127.0.0.1:5223") == 0 &&
           c->listen_server.n == 1 && strcmp(c->listen_server.v[0], "127.0.0.1:5269") == 0,
       "the example listens on 127.0.0.1 ports 5222, 5223 and 5269");
    ok(c && c->max_stanza_size == 262144 && c->max_output_buffer == 1048576 && c->scram_iterations == 4096 &&
           c->max_bytes_per_second == 100000 && c->max_bytes_per_second_preauth == 10000 &&
           c->max_stanzas_per_second == 100 && c->max_s2s_queue_bytes == 1048576 &&
           c->fed_mode == FED_OPEN && c->fed_dialback && !c->log_jids && !c->modules_set,
       "the example's values are the defaults it documents");
    config_free(c);
    strlist_free(&e);
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}

int main(int argc, char **argv)
{
    snprintf(dir, sizeof dir, "%s/civitas-config-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 2;
    }
    snprintf(main_path, sizeof main_path, "%s/civitas.yml", dir);
    test_defaults();
    test_full();
    test_unknown_keys();
    test_types_and_bounds();
    test_rate_limits();
    test_hosts();
    test_listen();
    test_syntax();
    test_includes();
    test_robust();
    /* make check runs tests without arguments but exports CIVITAS_SRCDIR */
    char example[PATH_MAX];
    const char *src = getenv("CIVITAS_SRCDIR");
    snprintf(example, sizeof example, "%.4000s/conf/civitas.yml", src ? src : ".");
    test_example(argc > 1 ? argv[1] : example);
    strlist_free(&errs);
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return done_testing();
}
