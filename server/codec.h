/* server/codec.h: base64, digests, HMAC and random bytes on OpenSSL, for the core and modules
 * (SCRAM, dialback keys, vCard photo hashes, upload slots, archive ids). Part of the module API. */
#ifndef CIVITAS_CODEC_H
#define CIVITAS_CODEC_H
#include <stddef.h>
#include "api.h"

CIVITAS_API_BEGIN
/* Base64 (RFC 4648 §4, with padding). encode: *out malloc'd NUL-terminated; 0/-1.
 * decode: strict, -1 on characters outside the alphabet, whitespace, length not a multiple
 * of 4, misplaced padding or non-zero pad bits; on 0 *out is malloc'd (also for empty input,
 * *outlen 0) and the caller frees it. RFC 6120 §6.4.2's "=" for empty data is the caller's. */
CIVITAS_API int base64_encode(const unsigned char *in, size_t len, char **out);
CIVITAS_API int base64_decode(const char *in, size_t len, unsigned char **out, size_t *outlen);

/* SHA-1 (20 bytes) and SHA-256 (32 bytes) of data into out. 0/-1. */
int digest_sha1(const void *data, size_t len, unsigned char out[20]);
int digest_sha256(const void *data, size_t len, unsigned char out[32]);
/* HMAC-SHA-256 (32 bytes) of data under key into out. 0/-1. */
int hmac_sha256(const void *key, size_t keylen, const void *data, size_t len, unsigned char out[32]);
/* len bytes from the CSPRNG. 0/-1. */
int random_bytes(void *out, size_t len);
/* Lower-case hex of len bytes into out (2 * len + 1 bytes, NUL-terminated). */
void hex_encode(const unsigned char *in, size_t len, char *out);
CIVITAS_API_END

#endif
