/* tests/unit/test_module_options.c: the typed values of module options (server/config.c): enum,
 * duration, size and list beside int and bool, their bounds, and the exact "FILE:LINE: message" of
 * each error, as `civitasd --check` prints them. One table of cases per type. */
#define _GNU_SOURCE
#include "config.h"
#include "tap.h"
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[256], path[PATH_MAX + 32];
static const char *const known[] = {"offline", NULL};

/* Load "hosts: ... offline: {v: VALUE}" and return the section; the value is on line 3. */
static config_t *cfg;
static const cfg_node_t *section_with(const char *value)
{
    config_free(cfg);
    FILE *f = fopen(path, "w");
    if (!f) exit(2);
    fprintf(f, "hosts:\n  - name: kaarst.example\noffline:\n  v: %s\n", value);
    fclose(f);
    strlist_t e = {0};
    cfg = config_load(path, known, &e);
    for (size_t i = 0; i < e.n; i++) printf("# config: %s\n", e.v[i]);
    strlist_free(&e);
    return config_module_section(cfg, "offline");
}

/* errors must be exactly one line "PATH:4: offline.v: MSG" (MSG NULL: no error). */
static int one_error(const strlist_t *e, const char *msg)
{
    if (!msg) {
        for (size_t i = 0; i < e->n; i++) printf("# unexpected: %s\n", e->v[i]);
        return e->n == 0;
    }
    char want[PATH_MAX + 600];
    snprintf(want, sizeof want, "%s:4: offline.v: %s", path, msg);
    if (e->n == 1 && strcmp(e->v[0], want) == 0) return 1;
    printf("# wanted: %s\n", want);
    for (size_t i = 0; i < e->n; i++) printf("# got:    %s\n", e->v[i]);
    return 0;
}

#define DUR_WHAT "expected a duration (seconds, or a whole number with s, m, h or d: 30s, 5m, 72h, 14d), got "
#define SIZE_WHAT "expected a size (bytes, or a whole number with K, M, G or T, also written KiB, MiB, GiB, TiB, " \
                  "binary: 512K, 10M, 1G), got "

static void test_duration(void)
{
    static const struct { const char *text; long want; const char *err; } cases[] = {
        {"0", 0, "0 is below the minimum 1m"},
        {"90", 90, NULL},
        {"120s", 120, NULL},
        {"5m", 300, NULL},
        {"72h", 259200, NULL},
        {"14d", 1209600, NULL},
        {"\"14d\"", 1209600, NULL},
        {"366d", 0, "366d is above the maximum 365d"},
        {"31536001", 0, "31536001 is above the maximum 365d"},
        {"99999999999999999999d", 0, "99999999999999999999d is above the maximum 365d"},
        {"9223372036854775807d", 0, "9223372036854775807d is above the maximum 365d"},
        {"59s", 0, "59s is below the minimum 1m"},
        {"-5", 0, DUR_WHAT "'-5'"},
        {"5 m", 0, DUR_WHAT "'5 m'"},
        {"5M", 0, DUR_WHAT "'5M'"},
        {"1.5h", 0, DUR_WHAT "'1.5h'"},
        {"h", 0, DUR_WHAT "'h'"},
        {"5w", 0, DUR_WHAT "'5w'"},
        {"", 0, DUR_WHAT "nothing"},
        {"[1d]", 0, DUR_WHAT "a list"},
        {"{a: 1}", 0, DUR_WHAT "a mapping"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const cfg_node_t *s = section_with(cases[i].text);
        strlist_t e = {0};
        long v = -1;
        int r = cfg_get_duration(s, "v", 7, 60, 365 * 86400L, &v, &e);
        ok(s && r == (cases[i].err ? -1 : 0) && v == (cases[i].err ? 7 : cases[i].want) && one_error(&e, cases[i].err),
           "duration %s -> %s", cases[i].text, cases[i].err ? cases[i].err : "ok");
        strlist_free(&e);
    }
    long v = -1;
    strlist_t e = {0};
    ok(cfg_get_duration(section_with("1m"), "absent", 3600, 60, 86400, &v, &e) == 0 && v == 3600 && e.n == 0,
       "duration: an absent key gives the default");
}

static void test_size(void)
{
    static const struct { const char *text; long want; const char *err; } cases[] = {
        {"1024", 1024, NULL},
        {"512K", 512L << 10, NULL},
        {"512k", 512L << 10, NULL},
        {"512KiB", 512L << 10, NULL},
        {"10M", 10L << 20, NULL},
        {"10MiB", 10L << 20, NULL},
        {"1G", 1L << 30, NULL},
        {"1GiB", 1L << 30, NULL},
        {"2T", 2L << 40, NULL},
        {"3T", 0, "3T is above the maximum 2TiB"},
        {"1023", 0, "1023 is below the minimum 1KiB"},
        {"99999999999999999999", 0, "99999999999999999999 is above the maximum 2TiB"},
        {"10MB", 0, SIZE_WHAT "'10MB'"},
        {"10 M", 0, SIZE_WHAT "'10 M'"},
        {"1.5G", 0, SIZE_WHAT "'1.5G'"},
        {"-1", 0, SIZE_WHAT "'-1'"},
        {"M", 0, SIZE_WHAT "'M'"},
        {"", 0, SIZE_WHAT "nothing"},
        {"[1]", 0, SIZE_WHAT "a list"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const cfg_node_t *s = section_with(cases[i].text);
        strlist_t e = {0};
        long v = -1;
        int r = cfg_get_size(s, "v", 5, 1024, 2L << 40, &v, &e);
        ok(s && r == (cases[i].err ? -1 : 0) && v == (cases[i].err ? 5 : cases[i].want) && one_error(&e, cases[i].err),
           "size %s -> %s", cases[i].text, cases[i].err ? cases[i].err : "ok");
        strlist_free(&e);
    }
}

static void test_enum(void)
{
    static const char *const modes[] = {"off", "warn", "require", NULL};
    static const struct { const char *text; int want; const char *err; } cases[] = {
        {"off", 0, NULL},
        {"warn", 1, NULL},
        {"require", 2, NULL},
        {"\"require\"", 2, NULL},
        {"Require", 0, "'Require' is not one of off, warn, require"},
        {"maybe", 0, "'maybe' is not one of off, warn, require"},
        {"", 0, "expected one of off, warn, require, got nothing"},
        {"[off]", 0, "expected one of off, warn, require, got a list"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const cfg_node_t *s = section_with(cases[i].text);
        strlist_t e = {0};
        int v = -1;
        int r = cfg_get_enum(s, "v", modes, 1, &v, &e);
        ok(s && r == (cases[i].err ? -1 : 0) && v == (cases[i].err ? 1 : cases[i].want) && one_error(&e, cases[i].err),
           "enum %s -> %s", cases[i].text, cases[i].err ? cases[i].err : "ok");
        strlist_free(&e);
    }
}

static void test_list(void)
{
    static const char *const def[] = {"a", "b", NULL};
    static const struct { const char *text; const char *want; const char *err; } cases[] = {
        {"[x, y, z]", "x,y,z", NULL},
        {"[]", "", NULL},
        {"", "", NULL},
        {"\n    - one\n    - two", "one,two", NULL},
        {"x", "a,b", "expected a list of strings ([a, b] or '- a' lines), got 'x'"},
        {"{x: 1}", "a,b", "expected a list of strings ([a, b] or '- a' lines), got a mapping"},
        {"[x, \"\"]", "a,b", "expected a string, got an empty one"},
        {"[x, [y]]", "a,b", "expected a string, got a list"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const cfg_node_t *s = section_with(cases[i].text);
        strlist_t e = {0}, l = {0};
        int r = cfg_get_list(s, "v", def, &l, &e);
        char got[200] = "";
        for (size_t k = 0; k < l.n; k++) snprintf(got + strlen(got), sizeof got - strlen(got), "%s%s", k ? "," : "", l.v[k]);
        ok(s && r == (cases[i].err ? -1 : 0) && strcmp(got, cases[i].want) == 0 && one_error(&e, cases[i].err),
           "list %s -> [%s] %s", cases[i].text, got, cases[i].err ? cases[i].err : "ok");
        strlist_free(&l);
        strlist_free(&e);
    }
    strlist_t e = {0}, l = {0};
    ok(cfg_get_list(section_with("[x]"), "absent", def, &l, &e) == 0 && l.n == 2 && strcmp(l.v[1], "b") == 0 && e.n == 0,
       "list: an absent key gives a copy of the default");
    strlist_free(&l);
    ok(cfg_get_list(section_with("[x]"), "absent", NULL, &l, &e) == 0 && l.n == 0 && !l.v, "list: no default is empty");
}

static void test_format(void)
{
    static const struct { long v; int size; const char *want; } cases[] = {
        {0, 0, "0s"},       {90, 0, "90s"},     {300, 0, "5m"},      {259200, 0, "3d"},  {7200, 0, "2h"},
        {1209600, 0, "14d"}, {0, 1, "0"},        {1000, 1, "1000"},   {1024, 1, "1KiB"},  {10485760, 1, "10MiB"},
        {1L << 30, 1, "1GiB"}, {3L << 40, 1, "3TiB"}, {1536, 1, "1536"} /* 1.5K: not a whole unit */,
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char buf[40];
        const char *got = cases[i].size ? cfg_format_size(cases[i].v, buf, sizeof buf)
                                        : cfg_format_duration(cases[i].v, buf, sizeof buf);
        ok(strcmp(got, cases[i].want) == 0, "format %ld (%s) -> %s (got %s)", cases[i].v,
           cases[i].size ? "size" : "duration", cases[i].want, got);
    }
}

int main(void)
{
    snprintf(dir, sizeof dir, "%s/civitas-modopt-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir)) return 2;
    snprintf(path, sizeof path, "%s/civitas.yml", dir);
    test_duration();
    test_size();
    test_enum();
    test_list();
    test_format();
    config_free(cfg);
    unlink(path);
    rmdir(dir);
    return done_testing();
}
