/* server/strlist.h: a growable list of strings (config lists, roster groups, caps features, module
 * list options). Part of the module API. */
#ifndef CIVITAS_STRLIST_H
#define CIVITAS_STRLIST_H
#include <stddef.h>
#include "api.h"

/* {0} is an empty list; every string is a malloc'd copy owned by the list. */
typedef struct strlist {
    char **v;                          /* v[0..n-1] */
    size_t n;
} strlist_t;

CIVITAS_API void strlist_free(strlist_t *l);              /* frees the strings and the array, leaves {0}; NULL ok */
CIVITAS_API int strlist_add(strlist_t *l, const char *s); /* appends a copy; -1 when out of memory */

#endif
