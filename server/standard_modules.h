/* server/standard_modules.h: module names: the standard set (from modules/standard.list) and the
 * modules a config may name, and the file a module is loaded from. Shared by civitasd and civitasctl. */
#ifndef CIVITAS_STANDARD_MODULES_H
#define CIVITAS_STANDARD_MODULES_H

/* The modules a server loads when its config has no modules: list, in the list's order. */
extern const char *const standard_modules[];

/* Where module NAME is loaded from (malloc'd): $CIVITAS_MODULE_DIR/mod_NAME.so, else next to a
 * program run from the build tree (libtool puts modules in modules/.libs), else the installed
 * module directory. */
char *module_file(const char *name);

/* The names a config may use (in modules: and as section keys): the standard modules and every
 * other mod_<name>.so where module_file looks. NULL-terminated; free with modules_known_free. */
char **modules_known(void);
void modules_known_free(char **names);

#endif
