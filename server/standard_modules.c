/* server/standard_modules.c: the modules a server loads when its config has no modules: list (which
 * are also names accepted as module sections in the config), and where module files are found. */
#include "standard_modules.h"
#include "util.h"
#include <dirent.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Generated from modules/standard.list by scripts/gen-modules (the one list of standard modules). */
const char *const standard_modules[] = {
#define CIV_MODULE(name) #name,
#include "standard_modules.def"
#undef CIV_MODULE
    NULL};

/* The build tree's module directory when this program runs from a build tree, else NULL. */
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
    if (access(d, R_OK | X_OK) == 0) return d;
    free(d);
    return NULL;
}

char *module_file(const char *name)
{
    const char *env = getenv("CIVITAS_MODULE_DIR");
    if (env && *env) return xasprintf("%s/mod_%s.so", env, name);
    char *d = build_tree_dir();
    if (d) {
        char *p = xasprintf("%s/mod_%s.so", d, name);
        free(d);
        if (access(p, R_OK) == 0) return p;
        free(p);
    }
    return xasprintf("%s/mod_%s.so", MODULEDIR, name);
}

static void add_name(char ***v, size_t *n, const char *name, size_t len)
{
    for (size_t i = 0; i < *n; i++)
        if (strlen((*v)[i]) == len && strncmp((*v)[i], name, len) == 0) return;
    *v = xrealloc(*v, (*n + 2) * sizeof **v);
    (*v)[(*n)++] = xstrndup(name, len);
    (*v)[*n] = NULL;
}

/* Add the NAME of every mod_NAME.so in dir. */
static void scan_dir(const char *dir, char ***v, size_t *n)
{
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len <= 7 || strncmp(e->d_name, "mod_", 4) != 0 || strcmp(e->d_name + len - 3, ".so") != 0) continue;
        const char *name = e->d_name + 4;
        size_t k = len - 7, ok = 1;
        for (size_t i = 0; i < k; i++)
            ok &= (name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') || name[i] == '_';
        if (ok) add_name(v, n, name, k);
    }
    closedir(d);
}

char **modules_known(void)
{
    char **v = xcalloc(1, sizeof *v);
    size_t n = 0;
    for (size_t i = 0; standard_modules[i]; i++) add_name(&v, &n, standard_modules[i], strlen(standard_modules[i]));
    const char *env = getenv("CIVITAS_MODULE_DIR");
    if (env && *env) {
        scan_dir(env, &v, &n);
    } else {
        char *d = build_tree_dir();
        scan_dir(d, &v, &n);
        free(d);
        scan_dir(MODULEDIR, &v, &n);
    }
    return v;
}

void modules_known_free(char **names)
{
    for (size_t i = 0; names && names[i]; i++) free(names[i]);
    free(names);
}
