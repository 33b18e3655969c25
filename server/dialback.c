/* server/dialback.c: XEP-0220 dialback keys as XEP-0185 recommends: HMAC-SHA256 keyed with
 * SHA-256 of a per-process secret from the CSPRNG, checked in constant time. */
#include "dialback.h"
#include "scram.h"
#include "util.h"
#include <stdlib.h>
#include <string.h>

static unsigned char secret_hash[32];      /* SHA256(secret): the HMAC key */
static int have_secret;

void dialback_init(void)
{
    char secret[65];
    random_hex(secret, 32);                 /* 256 bits from the CSPRNG */
    scram_digest(SCRAM_SHA256, secret, strlen(secret), secret_hash);
    explicit_bzero(secret, sizeof secret);
    have_secret = 1;
}

void dialback_cleanup(void)
{
    explicit_bzero(secret_hash, sizeof secret_hash);
    have_secret = 0;
}

char *dialback_key(const char *receiving, const char *originating, const char *stream_id)
{
    if (!have_secret) dialback_init();
    char *text = xasprintf("%s %s %s", receiving, originating, stream_id);
    unsigned char mac[32];
    scram_hmac(SCRAM_SHA256, secret_hash, sizeof secret_hash, text, strlen(text), mac);
    free(text);
    static const char hex[] = "0123456789abcdef";
    char *out = xmalloc(65);
    for (size_t i = 0; i < 32; i++) {
        out[2 * i] = hex[mac[i] >> 4];
        out[2 * i + 1] = hex[mac[i] & 15];
    }
    out[64] = '\0';
    return out;
}

int dialback_check(const char *receiving, const char *originating, const char *stream_id, const char *key)
{
    if (!receiving || !originating || !stream_id || !key) return 0;
    char *want = dialback_key(receiving, originating, stream_id);
    /* constant time over the expected length: the time says nothing about where they differ */
    size_t kl = strlen(key);
    unsigned diff = kl != 64;
    for (size_t i = 0; i < 64; i++) diff |= (unsigned char)want[i] ^ (unsigned char)(i < kl ? key[i] : 0);
    free(want);
    return diff == 0;
}
