/* server/standard_modules.c: the modules a server loads when its config has no modules: list, and
 * where module files are found, which decides the names a config may list (standard or present). */
#include "util.h"
#include <dirent.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *const standard_modules[] = {"disco", "ping", "version", "time", "roster", "presence", "register", "offline", "blocking", "vcard", "private", "last", "carbons", NULL};

/* The build tree's module directory when the running program is in a build tree (libtool puts
 * the objects in modules/.libs next to it), else NULL. malloc'd. */
static char *build_tree_dir(void)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return NULL;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash) return NULL;
    *slash = '\0';
    char *d = xasprintf("%s/modules/.libs", exe);
    if (access(d, R_OK) == 0) return d;
    free(d);
    return NULL;
}

/* Where modules live: $CIVITAS_MODULE_DIR, else next to a program run from the build tree, else
 * the installed module directory. */
char *module_file(const char *name)
{
    const char *env = getenv("CIVITAS_MODULE_DIR");
    if (env && *env) return xasprintf("%s/mod_%s.so", env, name);
    char *dir = build_tree_dir();
    if (dir) {
        char *p = xasprintf("%s/mod_%s.so", dir, name);
        free(dir);
        if (access(p, R_OK) == 0) return p;
        free(p);
    }
    return xasprintf("%s/mod_%s.so", MODULEDIR, name);
}

static void add_dir(const char ***v, size_t *n, const char *dir)
{
    DIR *d = dir ? opendir(dir) : NULL;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l <= 7 || strncmp(e->d_name, "mod_", 4) != 0 || strcmp(e->d_name + l - 3, ".so") != 0) continue;
        char *name = xstrndup(e->d_name + 4, l - 7);
        int seen = 0;
        for (size_t i = 0; i < *n && !seen; i++) seen = strcmp((*v)[i], name) == 0;
        if (seen) {
            free(name);
            continue;
        }
        *v = xrealloc(*v, (*n + 2) * sizeof **v);
        (*v)[(*n)++] = name;
        (*v)[*n] = NULL;
    }
    if (d) closedir(d);
}

const char *const *modules_known(void)
{
    static const char **known;
    if (known) return known;
    size_t n = 0;
    while (standard_modules[n]) n++;
    known = xcalloc(n + 1, sizeof *known);
    memcpy(known, standard_modules, n * sizeof *known);
    const char *env = getenv("CIVITAS_MODULE_DIR");
    if (env && *env) add_dir(&known, &n, env);
    else {
        char *dir = build_tree_dir();
        add_dir(&known, &n, dir);
        free(dir);
        add_dir(&known, &n, MODULEDIR);
    }
    return known;
}
