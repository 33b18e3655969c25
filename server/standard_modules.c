/* server/standard_modules.c: the modules a server loads when its config has no modules: list,
 * which are also the names accepted as module sections in the config. */
#include <stddef.h>

const char *const standard_modules[] = {"disco", "ping", "version", "time", "roster", "presence", "register", "offline", "blocking", "vcard", "private", "last", "carbons", NULL};
