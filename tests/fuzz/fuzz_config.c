/* tests/fuzz/fuzz_config.c: libFuzzer target for the YAML configuration loader (config_load_buffer of
 * server/config.c), run in a scratch directory that holds a few files the input may include. */
#define _GNU_SOURCE
#include "config.h"
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHECK(cond, what) do { if (!(cond)) { fprintf(stderr, "invariant failed: %s\n", what); abort(); } } while (0)

static char scratch[64];
static char main_path[128];
static const char *const known[] = {"disco", "ping", "version", "time", "offline", NULL};

static void put(const char *name, const char *text)
{
    FILE *f = fopen(name, "w");
    CHECK(f != NULL, "scratch file");
    fputs(text, f);
    fclose(f);
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}

static void cleanup(void)
{
    if (scratch[0]) nftw(scratch, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    snprintf(scratch, sizeof scratch, "/tmp/civitas-fuzz-config-XXXXXX");
    CHECK(mkdtemp(scratch) != NULL, "mkdtemp");
    CHECK(chdir(scratch) == 0, "chdir to the scratch directory");
    atexit(cleanup);
    snprintf(main_path, sizeof main_path, "%s/civitas.yml", scratch);
    CHECK(mkdir("conf.d", 0700) == 0, "mkdir conf.d");
    put("conf.d/a.yml", "hosts:\n  - name: included.example\nmodules: [ping]\n");
    put("conf.d/b.yml", "limits:\n  max_depth: 32\nlog:\n  level: debug\n");
    put("self.yml", "include: self.yml\n");
    put("bad.yml", "hosts: [\n");
    put("cert.pem", "not a certificate\n");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    strlist_t errors = {0};
    config_t *c = config_load_buffer(main_path, (const char *)data, size, known, &errors);
    if (c) {
        CHECK(errors.n == 0, "no errors on success");
        CHECK(c->nhosts >= 1, "at least one host");
        for (size_t i = 0; i < c->nhosts; i++) CHECK(config_host(c, c->hosts[i].name) != NULL, "hosts are found");
        for (size_t i = 0; i < c->npartners; i++)
            CHECK(config_partner(c, c->partners[i].domain) != NULL, "partners are found");
        for (const cfg_node_t *s = c->module_sections; s; s = s->next) {
            CHECK(config_module_section(c, s->key) != NULL, "module sections are found");
            long l;
            int b;
            const char *str;
            strlist_t e2 = {0};
            cfg_get_int(s, "x", 1, 0, 10, &l, &e2);
            cfg_get_bool(s, "show_os", 0, &b, &e2);
            cfg_get_string(s, "name", "d", &str, &e2);
            static const char *const allowed[] = {"x", NULL};
            cfg_check_keys(s, allowed, &e2);
            strlist_free(&e2);
        }
        config_free(c);
    } else {
        CHECK(errors.n > 0, "an error message on failure");
        for (size_t i = 0; i < errors.n; i++) CHECK(errors.v[i] && *errors.v[i], "error lines are not empty");
    }
    strlist_free(&errors);
    return 0;
}
