/* server/strlist.c: a growable list of strings (strlist.h). */
#include <stdlib.h>
#include <string.h>
#include "strlist.h"

int strlist_add(strlist_t *l, const char *s)
{
    char *copy = strdup(s ? s : "");
    char **v = copy ? realloc(l->v, (l->n + 1) * sizeof *v) : NULL;
    if (!v) {
        free(copy);
        return -1;
    }
    v[l->n++] = copy;
    l->v = v;
    return 0;
}

void strlist_free(strlist_t *l)
{
    if (!l) return;
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}
