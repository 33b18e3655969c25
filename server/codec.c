/* server/codec.c: base64, digests, HMAC and random bytes (codec.h) on OpenSSL 3. */
#include "codec.h"
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

int base64_encode(const unsigned char *in, size_t len, char **out)
{
    *out = NULL;
    if (len > (size_t)INT_MAX / 4 * 3 - 3) return -1;
    size_t n = 4 * ((len + 2) / 3);
    unsigned char *b = malloc(n + 1);
    if (!b) return -1;
    int w = EVP_EncodeBlock(b, in, (int)len);   /* writes the terminating NUL */
    if (w < 0 || (size_t)w != n) {
        free(b);
        return -1;
    }
    *out = (char *)b;
    return 0;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

int base64_decode(const char *in, size_t len, unsigned char **out, size_t *outlen)
{
    *out = NULL;
    *outlen = 0;
    if (len % 4 != 0 || len > INT_MAX) return -1;
    size_t pad = 0;
    if (len && in[len - 1] == '=') pad = in[len - 2] == '=' ? 2 : 1;
    /* EVP_DecodeBlock skips surrounding whitespace and does not look at pad bits: check first. */
    for (size_t i = 0; i < len - pad; i++)
        if (b64_value((unsigned char)in[i]) < 0) return -1;
    if (pad == 1 && (b64_value((unsigned char)in[len - 2]) & 0x03)) return -1;
    if (pad == 2 && (b64_value((unsigned char)in[len - 3]) & 0x0F)) return -1;
    unsigned char *b = malloc(len / 4 * 3 + 1);
    if (!b) return -1;
    int r = len ? EVP_DecodeBlock(b, (const unsigned char *)in, (int)len) : 0;
    if (r < 0 || (size_t)r != len / 4 * 3) {
        free(b);
        return -1;
    }
    *out = b;
    *outlen = (size_t)r - pad;
    return 0;
}

int digest_sha1(const void *data, size_t len, unsigned char out[20])
{
    unsigned int n = 0;
    return EVP_Digest(data, len, out, &n, EVP_sha1(), NULL) == 1 && n == 20 ? 0 : -1;
}

int digest_sha256(const void *data, size_t len, unsigned char out[32])
{
    unsigned int n = 0;
    return EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) == 1 && n == 32 ? 0 : -1;
}

int hmac_sha256(const void *key, size_t keylen, const void *data, size_t len, unsigned char out[32])
{
    unsigned int n = 0;
    if (keylen > INT_MAX) return -1;
    return HMAC(EVP_sha256(), key, (int)keylen, data, len, out, &n) && n == 32 ? 0 : -1;
}

int random_bytes(void *out, size_t len)
{
    if (len > INT_MAX) return -1;
    return RAND_bytes(out, (int)len) == 1 ? 0 : -1;
}

void hex_encode(const unsigned char *in, size_t len, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = hx[in[i] >> 4];
        out[2 * i + 1] = hx[in[i] & 15];
    }
    out[2 * len] = '\0';
}
