/* server/util.c: allocation, strings, clocks, randomness and the string hash map
 * declared in util.h. */
#define _GNU_SOURCE   /* vasprintf */
#include "util.h"
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/rand.h>

static void oom(void)
{
    fputs("civitas: out of memory\n", stderr);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) oom();
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) oom();
    return p;
}

void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) oom();
    return p;
}

char *xstrdup(const char *s)
{
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) oom();
    return d;
}

char *xstrndup(const char *s, size_t n)
{
    char *d = strndup(s, n);
    if (!d) oom();
    return d;
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *s;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0) oom();
    va_end(ap);
    return s;
}

int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t now_unix(void)
{
    return (int64_t)time(NULL);
}

void random_hex(char *buf, size_t n)
{
    unsigned char b[64];
    static const char hex[] = "0123456789abcdef";
    if (n > sizeof b) n = sizeof b;
    if (RAND_bytes(b, (int)n) != 1) abort();   /* no entropy: refuse to make guessable ids */
    for (size_t i = 0; i < n; i++) {
        buf[2 * i] = hex[b[i] >> 4];
        buf[2 * i + 1] = hex[b[i] & 15];
    }
    buf[2 * n] = '\0';
}

/* ---- strmap ---- */
#define TOMBSTONE ((char *)1)
struct strmap {
    char **keys;        /* NULL empty, TOMBSTONE deleted */
    void **vals;
    size_t cap;         /* power of two */
    size_t count;       /* live entries */
    size_t used;        /* live + tombstones */
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;        /* FNV-1a */
    while (*s) { h ^= (unsigned char)*s++; h *= 1099511628211ULL; }
    return h;
}

strmap_t *strmap_new(void)
{
    strmap_t *m = xcalloc(1, sizeof *m);
    m->cap = 16;
    m->keys = xcalloc(m->cap, sizeof *m->keys);
    m->vals = xcalloc(m->cap, sizeof *m->vals);
    return m;
}

void strmap_free(strmap_t *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i] && m->keys[i] != TOMBSTONE) free(m->keys[i]);
    free(m->keys);
    free(m->vals);
    free(m);
}

void strmap_free_all(strmap_t *m, void (*free_value)(void *))
{
    if (!m) return;
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i] && m->keys[i] != TOMBSTONE) free_value(m->vals[i]);
    strmap_free(m);
}

static size_t find_slot(const strmap_t *m, const char *key, int *found)
{
    size_t mask = m->cap - 1, i = hash_str(key) & mask, first_free = SIZE_MAX;
    for (;;) {
        char *k = m->keys[i];
        if (!k) {
            *found = 0;
            return first_free != SIZE_MAX ? first_free : i;
        }
        if (k == TOMBSTONE) {
            if (first_free == SIZE_MAX) first_free = i;
        } else if (strcmp(k, key) == 0) {
            *found = 1;
            return i;
        }
        i = (i + 1) & mask;
    }
}

static void grow(strmap_t *m)
{
    char **ok = m->keys;
    void **ov = m->vals;
    size_t ocap = m->cap;
    if (m->count * 2 >= m->cap) m->cap *= 2;     /* else same size: just drop tombstones */
    m->keys = xcalloc(m->cap, sizeof *m->keys);
    m->vals = xcalloc(m->cap, sizeof *m->vals);
    m->used = m->count;
    for (size_t i = 0; i < ocap; i++) {
        if (!ok[i] || ok[i] == TOMBSTONE) continue;
        int f;
        size_t s = find_slot(m, ok[i], &f);
        m->keys[s] = ok[i];
        m->vals[s] = ov[i];
    }
    free(ok);
    free(ov);
}

void *strmap_get(const strmap_t *m, const char *key)
{
    int f;
    size_t i = find_slot(m, key, &f);
    return f ? m->vals[i] : NULL;
}

void strmap_put(strmap_t *m, const char *key, void *value)
{
    int f;
    size_t i = find_slot(m, key, &f);
    if (f) { m->vals[i] = value; return; }
    if (!m->keys[i]) m->used++;
    m->keys[i] = xstrdup(key);
    m->vals[i] = value;
    m->count++;
    if (m->used * 4 >= m->cap * 3) grow(m);
}

void *strmap_del(strmap_t *m, const char *key)
{
    int f;
    size_t i = find_slot(m, key, &f);
    if (!f) return NULL;
    void *v = m->vals[i];
    free(m->keys[i]);
    m->keys[i] = TOMBSTONE;
    m->vals[i] = NULL;
    m->count--;
    return v;
}

size_t strmap_count(const strmap_t *m) { return m->count; }

int strmap_next(const strmap_t *m, size_t *pos, const char **key, void **value)
{
    while (*pos < m->cap) {
        size_t i = (*pos)++;
        if (m->keys[i] && m->keys[i] != TOMBSTONE) {
            if (key) *key = m->keys[i];
            if (value) *value = m->vals[i];
            return 1;
        }
    }
    return 0;
}

/* One subscriber holds a whole IPv6 /64 (RFC 6177, and SLAAC needs it), so counting single IPv6
 * addresses would let one host open 2^64 times the limit. */
void ip_limit_key(const char *ip, char *key, size_t keylen)
{
    struct in6_addr a;
    if (inet_pton(AF_INET6, ip, &a) != 1) {
        snprintf(key, keylen, "%s", ip);
        return;
    }
    char buf[INET6_ADDRSTRLEN];
    if (IN6_IS_ADDR_V4MAPPED(&a)) {
        inet_ntop(AF_INET, &a.s6_addr[12], buf, sizeof buf);
        snprintf(key, keylen, "%s", buf);
        return;
    }
    memset(&a.s6_addr[8], 0, 8);
    inet_ntop(AF_INET6, &a, buf, sizeof buf);
    snprintf(key, keylen, "%s/64", buf);
}
