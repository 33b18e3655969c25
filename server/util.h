/* server/util.h: small helpers every part of civitas uses: checked allocation, strings,
 * time, randomness and a string-keyed hash map. */
#ifndef CIVITAS_UTIL_H
#define CIVITAS_UTIL_H
#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include "api.h"

/* Allocation that never returns NULL: out of memory aborts (a server that cannot allocate
 * a few bytes cannot keep its promises anyway, and every caller stays simple). */
CIVITAS_API_BEGIN
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);                 /* NULL stays NULL */
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define FREE_AND_NULL(p) do { free(p); (p) = NULL; } while (0)

int64_t now_ms(void);                         /* CLOCK_MONOTONIC in milliseconds */
int64_t now_unix(void);                       /* wall clock seconds */
/* Fill buf with hex of n random bytes from the CSPRNG (buf holds 2n+1). */
void random_hex(char *buf, size_t n);
CIVITAS_API_END

/* The key under which per-address limits count a peer address (text, as inet_ntop writes it):
 * IPv4 as is, an IPv4-mapped IPv6 address as its IPv4 address, other IPv6 addresses as their
 * /64 prefix ("2001:db8:1:2::/64"). key holds IP_LIMIT_KEY_LEN bytes. */
#define IP_LIMIT_KEY_LEN 64
CIVITAS_API void ip_limit_key(const char *ip, char *key, size_t keylen);

/* A string-keyed hash map (open addressing, linear probing, tombstones). Written here because
 * glibc's hsearch allows one table per process and no deletion, and GLib is a large dependency
 * for a 100-line structure. Keys are copied; values are owned by the caller. */
typedef struct strmap strmap_t;
CIVITAS_API_BEGIN
strmap_t *strmap_new(void);
void strmap_free(strmap_t *m);                /* frees keys, not values; NULL ok */
/* Frees the map with its keys and passes each value to free_value (free for plain malloc'd
 * values); NULL ok. For a map that owns its values. */
void strmap_free_all(strmap_t *m, void (*free_value)(void *));
void *strmap_get(const strmap_t *m, const char *key);
void strmap_put(strmap_t *m, const char *key, void *value);   /* replaces */
void *strmap_del(strmap_t *m, const char *key);               /* returns the old value */
size_t strmap_count(const strmap_t *m);
/* Iterate: pos starts at 0; returns 0 at the end. Do not modify the map while iterating
 * except with strmap_del of the current key. */
int strmap_next(const strmap_t *m, size_t *pos, const char **key, void **value);
CIVITAS_API_END

#endif
