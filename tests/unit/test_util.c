/* tests/unit/test_util.c: TAP tests for server/util.c: the address key of the per-address limits
 * (IPv4 as is, IPv4-mapped IPv6 as IPv4, other IPv6 per /64); strmap_free_all. */
#include "util.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int key_is(const char *ip, const char *want)
{
    char key[IP_LIMIT_KEY_LEN];
    ip_limit_key(ip, key, sizeof key);
    if (strcmp(key, want) != 0) printf("# %s -> %s, want %s\n", ip, key, want);
    return strcmp(key, want) == 0;
}

static const struct {
    const char *ip, *key, *what;
} cases[] = {
    {"192.0.2.7", "192.0.2.7", "IPv4 counts per address"},
    {"::ffff:192.0.2.7", "192.0.2.7", "an IPv4-mapped address counts as its IPv4 address"},
    {"2001:db8:1:2::1", "2001:db8:1:2::/64", "IPv6 counts per /64"},
    {"2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64", "another address of the same /64, same key"},
    {"2001:db8:1:3::1", "2001:db8:1:3::/64", "the next /64 is another key"},
    {"::1", "::/64", "loopback"},
    {"fe80::1:2:3:4", "fe80::/64", "link-local"},
    {"not an address", "not an address", "text that is no address is its own key"},
};

static int freed;
static void count_free(void *v) { freed++; free(v); }

int main(void)
{
    strmap_t *m = strmap_new();
    char key[16];
    for (int i = 0; i < 40; i++) {      /* more than the initial capacity: the map grows */
        snprintf(key, sizeof key, "k%d", i);
        strmap_put(m, key, xstrdup(key));
    }
    free(strmap_del(m, "k3"));          /* a tombstone is not a value */
    strmap_free_all(m, count_free);
    ok(freed == 39, "strmap_free_all frees each live value once (%d)", freed);
    strmap_free_all(NULL, count_free);
    ok(freed == 39, "strmap_free_all(NULL) does nothing");

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        ok(key_is(cases[i].ip, cases[i].key), "ip_limit_key(%s): %s", cases[i].ip, cases[i].what);
    return done_testing();
}
