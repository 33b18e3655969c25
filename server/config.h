/* server/config.h: the YAML configuration (see conf/civitas.yml and CONTRACT.md) loaded into typed
 * structs, with includes, defaults, bounds and "FILE:LINE: message" errors; module sections kept as trees. */
#ifndef CIVITAS_CONFIG_H
#define CIVITAS_CONFIG_H
#include "api.h"
#include <stddef.h>

#include "strlist.h"      /* strlist_t */

typedef enum { FED_OPEN = 0, FED_ALLOWLIST, FED_OFF } fed_mode_t;
typedef enum { E2E_OFF = 0, E2E_WARN, E2E_REQUIRE } e2e_policy_t;  /* host_partner_e2e's HOST_E2E_* */

/* One node of the YAML tree as written, kept for module sections (validated later by the module
 * through cfg_get_* below). Everything in it is owned by the config_t it came from. */
typedef struct cfg_node cfg_node_t;
struct cfg_node {
    enum { CFG_SCALAR, CFG_SEQ, CFG_MAP } type;
    char *value;                       /* CFG_SCALAR: its text (never NULL, "" when empty); else NULL */
    char *key;                         /* the key when this node is a value in a mapping, else NULL */
    const char *file;                  /* file it was written in (owned by config_t.files) */
    int line;                          /* 1-based; for a mapping value, the line of its key */
    cfg_node_t *children;              /* CFG_SEQ items / CFG_MAP values (each with .key), in order */
    cfg_node_t *next;                  /* next sibling */
    int is_null;                       /* CFG_SCALAR written as nothing, ~ or null: "no value" */
};

typedef struct cfg_host {
    char *name;                        /* lowercased, trailing dot removed (IDN preparation is done elsewhere) */
    char *certificate;                 /* absolute path of the PEM chain, or NULL (then key is NULL too) */
    char *key;                         /* absolute path of the private key, or NULL */
    int line;                          /* where the entry starts */
    const char *file;
    int certificate_line, key_line;   /* where tls.certificate / tls.key were written */
} cfg_host_t;

typedef struct cfg_partner {
    char *domain;                      /* lowercased like host names */
    char *route;                       /* "host:port" static route, or NULL for DNS */
    char *ca;                          /* absolute path of a trust anchor for this partner, or NULL */
    e2e_policy_t e2e;                  /* default E2E_OFF */
    int e2e_line;                      /* where e2e was written; 0: not set (the e2e_policy module then applies
                                          the local host's mode to this partner too) */
    int line;
    const char *file;
} cfg_partner_t;

typedef struct config {
    char *path;                        /* main config file as given */
    cfg_host_t *hosts; size_t nhosts;  /* at least one; names unique */
    strlist_t listen_client, listen_client_tls, listen_server, listen_server_tls, listen_http; /* "host:port" / "[v6]:port" */
    strlist_t listen_https;            /* listen.https: HTTP over TLS, certificate by SNI (server/http.h) */
    /* http: the HTTP server of listen.http / listen.https (server/http.h, README "HTTP") */
    strlist_t http_trusted_proxies;    /* http.trusted_proxies: addresses/CIDRs whose X-Forwarded-For and
                                        * X-Forwarded-Proto are believed (a reverse proxy); default none */
    char *http_public_url;             /* http.public_url: base URL clients use ("https://chat.example"), or NULL */
    long http_max_header_size;         /* http.max_header_size bytes [16384] 1024..1048576: request line + headers */
    long http_max_headers;             /* http.max_headers [64] 8..1000 */
    long http_request_timeout;         /* http.request_timeout s [30] 1..3600: headers, and each pause in a body */
    long http_idle_timeout;            /* http.idle_timeout s [60] 1..3600: keep-alive between requests */
    long http_min_body_rate;           /* http.min_body_rate bytes/s [1024] 0..1e9: a body may take request_timeout
                                        * plus its size at this rate; 0: no bound but the pauses */
    long http_max_connections;         /* http.max_connections [4096] 1..1000000 */
    long http_max_connections_per_ip;  /* http.max_connections_per_ip [64] 1..1000000 (a trusted proxy: no limit) */
    char *data_dir;                    /* absolute or resolved against the config file's directory; default "data" there */
    char *storage_driver;              /* "sqlite" (default) | "postgresql" */
    char *storage_dsn;                 /* NULL unless given; required with postgresql */
    fed_mode_t fed_mode;               /* federation.mode, default FED_OPEN */
    int fed_dialback;                  /* federation.dialback, default 1 */
    cfg_partner_t *partners; size_t npartners; /* federation.partners; domains unique */
    strlist_t modules; int modules_set;     /* modules_set=0 when the key is absent (core then loads every standard module) */
    strlist_t sasl_mechanisms; int sasl_mechanisms_set;  /* `sasl: {mechanisms: [...]}` restricts offered mechs (uppercased) */
    char *log_level;                   /* log.level: debug|info|warn|error; default "info" */
    char *log_file;                    /* log.file, absolute; NULL = stderr */
    int log_jids;                      /* log.jids, default 0: JIDs appear in logs only when the admin turns it on */
    char *user;                        /* user to switch to after binding; NULL = stay */
    long max_stanza_size;              /* limits.max_stanza_size [262144] 10000..16777216 */
    long max_stanza_size_preauth;      /* limits.max_stanza_size_preauth [8192] 1024..16777216 */
    long max_depth;                    /* limits.max_depth [64] 8..1024 */
    long max_attributes;               /* limits.max_attributes [64] 8..1024 */
    long stream_header_timeout;        /* limits.stream_header_timeout seconds [30] 1..3600 */
    long auth_timeout;                 /* limits.auth_timeout seconds [60] 1..3600 */
    long max_connections_per_ip;       /* limits.max_connections_per_ip [64] 1..1000000, not yet authenticated */
    long max_sessions_per_ip;          /* limits.max_sessions_per_ip [0: unlimited] 0..10000000, authenticated */
    long max_unauthenticated;          /* limits.max_unauthenticated [1024] 1..10000000 */
    long sasl_failures_per_ip;         /* limits.sasl_failures_per_ip [5] 1..1000 (before back-off) */
    long max_output_buffer;            /* limits.max_output_buffer bytes [1048576] 65536..1073741824 */
    long max_bytes_per_second;         /* limits.max_bytes_per_second read per session once authenticated
                                        * [100000] 1024..1073741824; reading pauses, nothing is dropped */
    long max_bytes_per_second_preauth; /* limits.max_bytes_per_second_preauth [10000] 1024..1073741824 */
    long max_stanzas_per_second;       /* limits.max_stanzas_per_second per session [100] 1..1000000;
                                        * excess stanzas wait (reading pauses), XEP-0205 "karma" style */
    long max_s2s_queue_bytes;          /* limits.max_s2s_queue_bytes [1048576] 65536..1073741824: stanzas
                                        * waiting for one s2s stream being set up (serialised size) */
    long scram_iterations;             /* sasl.iterations [4096] 4096..1000000 */
    long fast_token_days;              /* sasl.fast_token_days [14] 0..3650; 0: no XEP-0484 FAST */
    cfg_node_t *module_sections;       /* top-level mappings named after a known module, in order, linked by
                                        * .next; each is a CFG_MAP whose .key is the module name */
    /* private */
    strlist_t files;                   /* every file read (and the main path): node/host .file point here */
    void *mem;                         /* every other allocation of this config, freed by config_free */
} config_t;

/* Load FILE (and its includes). known_modules: NULL-terminated list of module names whose top-level
 * sections are accepted as generic module sections (e.g. "offline:" with sub keys, validated later by
 * the module itself); names in `modules:` must be in it too (unless known_modules is NULL).
 * Returns NULL when unusable; then every error line ("FILE:LINE: message") is appended to *errors
 * (caller frees with strlist_free). On success nothing is appended. Never crashes on any input. */
config_t *config_load(const char *file, const char *const *known_modules, strlist_t *errors);
/* The same with the main file's text given (for fuzzing and tests); path names it in messages and
 * is the base for relative paths and includes (which are still read from disk). */
config_t *config_load_buffer(const char *path, const char *data, size_t len, const char *const *known_modules,
                             strlist_t *errors);
void config_free(config_t *c);                /* NULL ok */


const cfg_host_t *config_host(const config_t *c, const char *domain);       /* NULL when not served */
const cfg_partner_t *config_partner(const config_t *c, const char *domain); /* NULL when not a partner */

/* Typed option access for module sections, Prosody-style, with bounds. A NULL section or an absent key
 * gives the default and 0. On a bad value append "FILE:LINE: module.key: message" to errors and
 * return -1 (*out then holds the default). Booleans: true/false/yes/no/on/off; integers: decimal. */
const cfg_node_t *config_module_section(const config_t *c, const char *module); /* NULL if absent */
int cfg_get_int(const cfg_node_t *section, const char *key, long def, long min, long max, long *out, strlist_t *errors);
int cfg_get_bool(const cfg_node_t *section, const char *key, int def, int *out, strlist_t *errors);
/* *out points into the config (valid until config_free) or is def. Empty and null values are errors. */
int cfg_get_string(const cfg_node_t *section, const char *key, const char *def, const char **out, strlist_t *errors);
/* Every key of `section` must be in allowed[] (NULL-terminated); otherwise
 * "FILE:LINE: unknown key 'x' in section 'offline'" for each -> -1. */
int cfg_check_keys(const cfg_node_t *section, const char *const *allowed, strlist_t *errors);
/* More types, same contract. Enum: one of choices[] (NULL-terminated), *out its index. Duration: whole
 * seconds or a whole number with s, m, h, d ("30s", "5m", "72h", "14d"), *out in seconds. Size: bytes or a
 * whole number with a binary unit K, M, G, T (also k, m, g, t and KiB, MiB, GiB, TiB: "512K", "10MiB"), *out
 * in bytes. Bounds of durations and sizes are in seconds and bytes and shown in units in messages. */
int cfg_get_enum(const cfg_node_t *section, const char *key, const char *const *choices, int def, int *out,
                 strlist_t *errors);
int cfg_get_duration(const cfg_node_t *section, const char *key, long def, long min, long max, long *out,
                     strlist_t *errors);
int cfg_get_size(const cfg_node_t *section, const char *key, long def, long min, long max, long *out,
                 strlist_t *errors);
/* A list of non-empty strings ("key:" with nothing is the empty list). *out is always set to a new list the
 * caller frees with strlist_free: copies of the values, or of def (NULL-terminated, NULL: empty). */
int cfg_get_list(const cfg_node_t *section, const char *key, const char *const *def, strlist_t *out, strlist_t *errors);

/* The same checks for one value node, named `path` in messages (nested module options such as
 * "offline.hosts.kaarst.example.max_messages"); cfg_value_list sets *out only on success. */
const cfg_node_t *cfg_child(const cfg_node_t *map, const char *key);    /* value of key in a mapping, or NULL */
int cfg_value_int(const cfg_node_t *n, const char *path, long min, long max, long *out, strlist_t *errors);
int cfg_value_bool(const cfg_node_t *n, const char *path, int *out, strlist_t *errors);
int cfg_value_string(const cfg_node_t *n, const char *path, const char **out, strlist_t *errors);
int cfg_value_enum(const cfg_node_t *n, const char *path, const char *const *choices, int *out, strlist_t *errors);
int cfg_value_duration(const cfg_node_t *n, const char *path, long min, long max, long *out, strlist_t *errors);
int cfg_value_size(const cfg_node_t *n, const char *path, long min, long max, long *out, strlist_t *errors);
int cfg_value_list(const cfg_node_t *n, const char *path, strlist_t *out, strlist_t *errors);
/* A duration or size as the messages and `civitasd --check` show it: "14d", "90s", "10MiB", "1000". */
const char *cfg_format_duration(long seconds, char *buf, size_t len);
const char *cfg_format_size(long bytes, char *buf, size_t len);

#endif
