/* tests/common/signal_crypto.c: the crypto provider libsignal-protocol-c needs, on OpenSSL 3 (random,
 * HMAC-SHA256, SHA-512, AES-CBC/CTR); shared by the OMEMO test client and the OMEMO unit tests. */
#include <stdint.h>
#include <stdlib.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include "signal_crypto.h"


static int cp_random(uint8_t *data, size_t len, void *ud)
{
    return RAND_bytes(data, (int)len) == 1 ? 0 : SG_ERR_UNKNOWN;
}

static int cp_hmac_init(void **hctx, const uint8_t *key, size_t key_len, void *ud)
{
    static char digest[] = "SHA256";
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *c = mac ? EVP_MAC_CTX_new(mac) : NULL;
    EVP_MAC_free(mac);
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    if (!c || !EVP_MAC_init(c, key, key_len, params)) {
        EVP_MAC_CTX_free(c);
        return SG_ERR_UNKNOWN;
    }
    *hctx = c;
    return 0;
}

static int cp_hmac_update(void *hctx, const uint8_t *data, size_t len, void *ud)
{
    return EVP_MAC_update(hctx, data, len) ? 0 : SG_ERR_UNKNOWN;
}

static int cp_hmac_final(void *hctx, signal_buffer **output, void *ud)
{
    uint8_t md[EVP_MAX_MD_SIZE];
    size_t n = 0;
    if (!EVP_MAC_final(hctx, md, &n, sizeof(md)))
        return SG_ERR_UNKNOWN;
    *output = signal_buffer_create(md, n);
    return *output ? 0 : SG_ERR_NOMEM;
}

static void cp_hmac_cleanup(void *hctx, void *ud)
{
    EVP_MAC_CTX_free(hctx);
}

static int cp_sha512_init(void **dctx, void *ud)
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (!c || !EVP_DigestInit_ex(c, EVP_sha512(), NULL)) {
        EVP_MD_CTX_free(c);
        return SG_ERR_UNKNOWN;
    }
    *dctx = c;
    return 0;
}

static int cp_sha512_update(void *dctx, const uint8_t *data, size_t len, void *ud)
{
    return EVP_DigestUpdate(dctx, data, len) ? 0 : SG_ERR_UNKNOWN;
}

static int cp_sha512_final(void *dctx, signal_buffer **output, void *ud)
{
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    /* the contract: the context is ready for reuse afterwards */
    if (!EVP_DigestFinal_ex(dctx, md, &n) || !EVP_DigestInit_ex(dctx, EVP_sha512(), NULL))
        return SG_ERR_UNKNOWN;
    *output = signal_buffer_create(md, n);
    return *output ? 0 : SG_ERR_NOMEM;
}

static void cp_sha512_cleanup(void *dctx, void *ud)
{
    EVP_MD_CTX_free(dctx);
}

static const EVP_CIPHER *aes_cipher(int mode, size_t key_len)
{
    if (mode == SG_CIPHER_AES_CBC_PKCS5)
        return key_len == 16 ? EVP_aes_128_cbc() : key_len == 24 ? EVP_aes_192_cbc() :
               key_len == 32 ? EVP_aes_256_cbc() : NULL;
    if (mode == SG_CIPHER_AES_CTR_NOPADDING)
        return key_len == 16 ? EVP_aes_128_ctr() : key_len == 24 ? EVP_aes_192_ctr() :
               key_len == 32 ? EVP_aes_256_ctr() : NULL;
    return NULL;
}

static int aes_run(signal_buffer **output, int mode, int enc, const uint8_t *key, size_t key_len,
                   const uint8_t *iv, size_t iv_len, const uint8_t *in, size_t in_len)
{
    const EVP_CIPHER *ci = aes_cipher(mode, key_len);
    if (!ci || iv_len != 16)
        return SG_ERR_INVAL;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    uint8_t *buf = malloc(in_len + 32);
    int n1 = 0, n2 = 0, rc = SG_ERR_UNKNOWN;
    if (c && buf && EVP_CipherInit_ex(c, ci, NULL, key, iv, enc) &&
        EVP_CIPHER_CTX_set_padding(c, mode == SG_CIPHER_AES_CBC_PKCS5) &&
        EVP_CipherUpdate(c, buf, &n1, in, (int)in_len) && EVP_CipherFinal_ex(c, buf + n1, &n2)) {
        *output = signal_buffer_create(buf, (size_t)(n1 + n2));
        rc = *output ? 0 : SG_ERR_NOMEM;
    }
    EVP_CIPHER_CTX_free(c);
    free(buf);
    return rc;
}

static int cp_encrypt(signal_buffer **output, int mode, const uint8_t *key, size_t key_len, const uint8_t *iv,
                      size_t iv_len, const uint8_t *plaintext, size_t plaintext_len, void *ud)
{
    return aes_run(output, mode, 1, key, key_len, iv, iv_len, plaintext, plaintext_len);
}

static int cp_decrypt(signal_buffer **output, int mode, const uint8_t *key, size_t key_len, const uint8_t *iv,
                      size_t iv_len, const uint8_t *ciphertext, size_t ciphertext_len, void *ud)
{
    return aes_run(output, mode, 0, key, key_len, iv, iv_len, ciphertext, ciphertext_len);
}

const signal_crypto_provider signal_crypto_openssl = {
    .random_func = cp_random,
    .hmac_sha256_init_func = cp_hmac_init,
    .hmac_sha256_update_func = cp_hmac_update,
    .hmac_sha256_final_func = cp_hmac_final,
    .hmac_sha256_cleanup_func = cp_hmac_cleanup,
    .sha512_digest_init_func = cp_sha512_init,
    .sha512_digest_update_func = cp_sha512_update,
    .sha512_digest_final_func = cp_sha512_final,
    .sha512_digest_cleanup_func = cp_sha512_cleanup,
    .encrypt_func = cp_encrypt,
    .decrypt_func = cp_decrypt,
};
