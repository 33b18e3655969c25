/* tests/fuzz/fuzz_scram.c: libFuzzer target for the SCRAM server (scram_server_step of server/scram.c) fed
 * arbitrary client messages, plus the PLAIN and base64 parsers it sits next to. */
#include "scram.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond, what) do { if (!(cond)) { fprintf(stderr, "invariant failed: %s\n", what); abort(); } } while (0)

/* The one account: the RFC 5802 / RFC 7677 example user, so the RFCs' messages make a seed corpus
 * that completes an exchange (with the RFCs' server nonces set through the test hook). */
static scram_creds_t creds[2];
static const char *const snonce[2] = {"3rfcNHYJY1ZVvWVs7j", "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"};

static const unsigned char EXPORTER[32] = "exporter-0123456789abcdef-xyzzy";
static const unsigned char ENDPOINT[32] = "endpoint-hash-of-the-certificat";

static int fz_creds(void *ud, const char *username, scram_hash_t h, scram_creds_t *out)
{
    (void)ud;
    if (strcmp(username, "user") != 0) return -1;
    *out = creds[h];
    return 0;
}

static int fz_cb(void *ud, const char *type, unsigned char *buf, size_t *len)
{
    int have_exporter = *(const int *)ud;
    if (!strcmp(type, "tls-server-end-point")) {
        memcpy(buf, ENDPOINT, sizeof ENDPOINT);
        *len = sizeof ENDPOINT;
        return 0;
    }
    if (!strcmp(type, "tls-exporter") && have_exporter) {
        memcpy(buf, EXPORTER, sizeof EXPORTER);
        *len = sizeof EXPORTER;
        return 0;
    }
    return -1;
}

static const scram_server_cb_t cbs = {fz_creds, fz_cb};

static int b64(const char *s, unsigned char *out, size_t *len)
{
    unsigned char *d;
    if (base64_decode(s, strlen(s), &d, len) < 0) return -1;
    memcpy(out, d, *len);
    free(d);
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    unsigned char salt[SCRAM_MAX_SALT];
    size_t n;
    if (b64("QSXCR+Q6sek8bf92", salt, &n) || scram_creds_derive(SCRAM_SHA1, "pencil", salt, n, 4096, &creds[0]) ||
        b64("W22ZaJ0SNY7soEsUEjb6gQ==", salt, &n) ||
        scram_creds_derive(SCRAM_SHA256, "pencil", salt, n, 4096, &creds[1])) {
        fprintf(stderr, "cannot derive the test creds\n");
        abort();
    }
    return 0;
}

/* Input: byte 0 = options (bit 0: SHA-256, bit 1: the -PLUS mechanism, bit 2: the server offers
 * -PLUS, bit 3: tls-exporter is available), then client messages separated by NUL bytes (a
 * message cannot hold a NUL: SCRAM rejects it anyway). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    uint8_t opt = data[0];
    scram_hash_t h = (opt & 1) ? SCRAM_SHA256 : SCRAM_SHA1;
    int have_exporter = !!(opt & 8);
    scram_server_t *s = scram_server_new(h, !!(opt & 2), !!(opt & 4), &cbs, &have_exporter);
    CHECK(s != NULL, "scram_server_new");
    CHECK(scram_server_set_nonce_for_test(s, snonce[h]) == 0, "test nonce");
    const uint8_t *p = data + 1, *end = data + size;
    int over = 0;
    while (p <= end) {
        const uint8_t *z = memchr(p, 0, (size_t)(end - p));
        size_t len = z ? (size_t)(z - p) : (size_t)(end - p);
        char *out = NULL;
        size_t outlen = 12345;
        const char *failure = "unset";
        scram_step_t r = scram_server_step(s, p, len, &out, &outlen, &failure);
        if (r == SCRAM_FAIL) {
            CHECK(!out && outlen == 0, "no output on FAIL");
            CHECK(failure && (!strcmp(failure, "not-authorized") || !strcmp(failure, "malformed-request") ||
                              !strcmp(failure, "invalid-authzid")), "a documented failure condition");
            CHECK(!scram_server_username(s), "no username unless OK");
        } else {
            CHECK(!over, "nothing but FAIL after OK or FAIL");
            CHECK(out && outlen == strlen(out) && !failure, "output on CONTINUE and OK");
            if (r == SCRAM_OK) {
                CHECK(!strncmp(out, "v=", 2), "server-final is v=");
                CHECK(scram_server_username(s) && !strcmp(scram_server_username(s), "user"), "OK only for user");
            } else {
                CHECK(!strncmp(out, "r=", 2), "server-first starts with r=");
            }
        }
        if (r != SCRAM_CONTINUE) over = 1;
        free(out);

        /* PLAIN and base64 on the same bytes */
        char *az, *ac, *pw;
        if (sasl_plain_parse(p, len, &az, &ac, &pw) == 0) {
            CHECK(ac && *ac && pw && *pw && (!az || *az), "PLAIN parts");
            free(az);
            free(ac);
            free(pw);
        } else {
            CHECK(!az && !ac && !pw, "PLAIN parts NULL on error");
        }
        unsigned char *dec;
        size_t declen;
        if (base64_decode((const char *)p, len, &dec, &declen) == 0) {
            char *enc;
            CHECK(base64_encode(dec, declen, &enc) == 0, "base64 encode");
            CHECK(strlen(enc) == len && memcmp(enc, p, len) == 0, "strict base64 decoding is canonical");
            free(enc);
            free(dec);
        }
        if (!z) break;
        p = z + 1;
    }
    scram_server_free(s);
    return 0;
}
