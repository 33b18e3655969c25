/* tests/unit/test_scram.c: SCRAM server (RFC 5802/7677 examples, -PLUS bindings, failures),
 * PLAIN parsing, SCRAM key derivation and base64, checked against the RFCs' text. */
#include "scram.h"
#include "tap.h"
#include <stdlib.h>
#include <string.h>

/* ---- a test account store and channel ---- */

typedef struct fixture {
    const char *user;            /* the one known user */
    scram_creds_t creds;         /* its creds for `creds.hash` */
    char seen_user[256];         /* last username get_creds was asked about */
    const unsigned char *exporter; size_t exporter_len;      /* NULL: unsupported */
    const unsigned char *endpoint; size_t endpoint_len;
} fixture_t;

static int fx_get_creds(void *ud, const char *username, scram_hash_t h, scram_creds_t *out)
{
    fixture_t *f = ud;
    snprintf(f->seen_user, sizeof f->seen_user, "%s", username);
    if (strcmp(username, f->user) != 0 || h != f->creds.hash) return -1;
    *out = f->creds;
    return 0;
}

static int fx_get_cb(void *ud, const char *type, unsigned char *buf, size_t *len)
{
    fixture_t *f = ud;
    const unsigned char *d = NULL;
    size_t n = 0;
    if (strcmp(type, "tls-exporter") == 0) d = f->exporter, n = f->exporter_len;
    else if (strcmp(type, "tls-server-end-point") == 0) d = f->endpoint, n = f->endpoint_len;
    if (!d) return -1;
    memcpy(buf, d, n);
    *len = n;
    return 0;
}

static const scram_server_cb_t fx_cb = { fx_get_creds, fx_get_cb };

static const unsigned char EXPORTER[32] = "exporter-0123456789abcdef-xyzzy";
static const unsigned char ENDPOINT[32] = "endpoint-hash-of-the-certificat";

static void fx_init(fixture_t *f, scram_hash_t h, const char *user, const char *password)
{
    static const unsigned char salt[16] = "0123456789abcdef";
    memset(f, 0, sizeof *f);
    f->user = user;
    if (scram_creds_derive(h, password, salt, sizeof salt, 4096, &f->creds) != 0) abort();
    f->exporter = EXPORTER;
    f->exporter_len = sizeof EXPORTER;
    f->endpoint = ENDPOINT;
    f->endpoint_len = sizeof ENDPOINT;
}

static scram_step_t step_str(scram_server_t *s, const char *msg, char **out, const char **failure)
{
    size_t outlen;
    free(*out);
    *out = NULL;
    return scram_server_step(s, (const unsigned char *)msg, strlen(msg), out, &outlen, failure);
}

static char *cat(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *d = malloc(la + lb + 1);
    memcpy(d, a, la);
    memcpy(d + la, b, lb + 1);
    return d;
}

/* ---- a SCRAM client, written from RFC 5802 §3 ---- */

typedef struct client_run {
    const char *gs2;             /* gs2 header the client sends, e.g. "n,," */
    const char *user_field;      /* already escaped saslname */
    const char *password;
    const unsigned char *cb; size_t cb_len;   /* binding data the client sees (flag p) */
    const char *tamper_nonce;    /* if set, sent as r= instead of the combined nonce */
    int server_sig_ok;           /* out: the server-final proved the server knows ServerKey */
    int first_ok;                /* out: server-first was well-formed */
    char salt_b64[64];           /* out: the salt the server announced */
    unsigned iterations;         /* out */
} client_run_t;

/* Runs a full exchange; returns the result of the last step the server answered. */
static scram_step_t client_exchange(scram_server_t *s, scram_hash_t h, client_run_t *r, const char **failure)
{
    size_t hl = scram_hash_len(h);
    char *out = NULL, *bare = NULL, *first = NULL, *b64 = NULL;
    const char *cnonce = "clientNONCE0123456789";
    bare = malloc(strlen(r->user_field) + strlen(cnonce) + 8);
    sprintf(bare, "n=%s,r=%s", r->user_field, cnonce);
    first = cat(r->gs2, bare);
    scram_step_t st = step_str(s, first, &out, failure);
    r->first_ok = 0;
    if (st != SCRAM_CONTINUE) goto done;

    /* server-first: r=<nonce>,s=<salt>,i=<n> */
    char *sf = strdup(out), *nonce = NULL, *salt = NULL, *it = NULL;
    for (char *tok = strtok(sf, ","); tok; tok = strtok(NULL, ",")) {
        if (tok[0] == 'r' && tok[1] == '=') nonce = tok + 2;
        else if (tok[0] == 's' && tok[1] == '=') salt = tok + 2;
        else if (tok[0] == 'i' && tok[1] == '=') it = tok + 2;
    }
    unsigned char *saltb = NULL;
    size_t saltl = 0;
    r->first_ok = nonce && salt && it && strncmp(nonce, cnonce, strlen(cnonce)) == 0 &&
                  strlen(nonce) >= strlen(cnonce) + 18 &&
                  base64_decode(salt, strlen(salt), &saltb, &saltl) == 0;
    if (!r->first_ok) {
        free(sf);
        free(saltb);
        goto done;
    }
    snprintf(r->salt_b64, sizeof r->salt_b64, "%s", salt);
    r->iterations = (unsigned)strtoul(it, NULL, 10);

    unsigned char sp[32], ck[32], sk[32], srvk[32], csig[32], proof[32], ssig[32];
    scram_salted_password(h, r->password, saltb, saltl, r->iterations, sp);
    free(saltb);
    scram_hmac(h, sp, hl, "Client Key", 10, ck);
    scram_digest(h, ck, hl, sk);
    scram_hmac(h, sp, hl, "Server Key", 10, srvk);

    size_t gl = strlen(r->gs2);
    unsigned char *cbin = malloc(gl + r->cb_len + 1);
    memcpy(cbin, r->gs2, gl);
    if (r->cb_len) memcpy(cbin + gl, r->cb, r->cb_len);
    base64_encode(cbin, gl + r->cb_len, &b64);
    free(cbin);
    const char *use_nonce = r->tamper_nonce ? r->tamper_nonce : nonce;
    char *wop = malloc(strlen(b64) + strlen(use_nonce) + 8);
    sprintf(wop, "c=%s,r=%s", b64, use_nonce);
    free(b64);
    b64 = NULL;

    char *am = malloc(strlen(bare) + strlen(out) + strlen(wop) + 3);
    sprintf(am, "%s,%s,%s", bare, out, wop);
    scram_hmac(h, sk, hl, am, strlen(am), csig);
    for (size_t i = 0; i < hl; i++) proof[i] = ck[i] ^ csig[i];
    scram_hmac(h, srvk, hl, am, strlen(am), ssig);
    free(am);
    base64_encode(proof, hl, &b64);
    char *final = malloc(strlen(wop) + strlen(b64) + 4);
    sprintf(final, "%s,p=%s", wop, b64);
    free(wop);
    free(b64);
    b64 = NULL;
    free(sf);
    st = step_str(s, final, &out, failure);
    free(final);
    if (st == SCRAM_OK) {
        base64_encode(ssig, hl, &b64);
        char *want = cat("v=", b64);
        r->server_sig_ok = strcmp(out, want) == 0;
        free(want);
    } else {
        r->server_sig_ok = 0;
    }
done:
    free(b64);
    free(out);
    free(bare);
    free(first);
    return st;
}

static unsigned fx_iterations;      /* when set: scram_server_set_iterations for the next run */

/* One exchange on a fresh server; returns the step result and copies the failure. */
static scram_step_t run(fixture_t *f, scram_hash_t h, int plus, int supports_plus, client_run_t *r,
                        const char **failure, char *user_out, char *authzid_out)
{
    scram_server_t *s = scram_server_new(h, plus, supports_plus, &fx_cb, f);
    if (fx_iterations) scram_server_set_iterations(s, fx_iterations);
    scram_step_t st = client_exchange(s, h, r, failure);
    if (user_out) snprintf(user_out, 128, "%s", scram_server_username(s) ? scram_server_username(s) : "(null)");
    if (authzid_out) snprintf(authzid_out, 128, "%s", scram_server_authzid(s) ? scram_server_authzid(s) : "(null)");
    scram_server_free(s);
    return st;
}

static int streq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

/* ---- the RFC examples ---- */

static void test_rfc_example(scram_hash_t h, const char *salt_b64, const char *cnonce, const char *snonce,
                             const char *proof_b64, const char *v, const char *label)
{
    fixture_t f;
    unsigned char *salt;
    size_t salt_len;
    memset(&f, 0, sizeof f);
    base64_decode(salt_b64, strlen(salt_b64), &salt, &salt_len);
    f.user = "user";
    scram_creds_derive(h, "pencil", salt, salt_len, 4096, &f.creds);
    free(salt);

    char cf[128], sf[256], cfin[256];
    snprintf(cf, sizeof cf, "n,,n=user,r=%s", cnonce);
    snprintf(sf, sizeof sf, "r=%s%s,s=%s,i=4096", cnonce, snonce, salt_b64);
    snprintf(cfin, sizeof cfin, "c=biws,r=%s%s,p=%s", cnonce, snonce, proof_b64);

    for (int tamper = 0; tamper < 2; tamper++) {
        scram_server_t *s = scram_server_new(h, 0, 0, &fx_cb, &f);
        char *out = NULL;
        const char *fail = NULL;
        scram_server_set_nonce_for_test(s, snonce);
        scram_step_t st = step_str(s, cf, &out, &fail);
        if (!tamper) {
            ok(st == SCRAM_CONTINUE && streq(out, sf), "%s: server-first is the RFC's text (%s)", label, out ? out : "NULL");
            ok(streq(f.seen_user, "user"), "%s: get_creds asked for \"user\"", label);
            st = step_str(s, cfin, &out, &fail);
            ok(st == SCRAM_OK && fail == NULL, "%s: the RFC's client proof is accepted", label);
            ok(streq(out, v), "%s: server-final is the RFC's %s", label, v);
            ok(streq(scram_server_username(s), "user") && scram_server_authzid(s) == NULL,
               "%s: username \"user\", no authzid", label);
        } else {
            char bad[256];
            snprintf(bad, sizeof bad, "%s", cfin);
            char *pp = strstr(bad, ",p=") + 3;
            *pp = *pp == 'A' ? 'B' : 'A';   /* flip the first proof character */
            st = step_str(s, bad, &out, &fail);
            ok(st == SCRAM_FAIL && streq(fail, "not-authorized") && out == NULL,
               "%s: a proof with one character changed fails not-authorized", label);
        }
        free(out);
        scram_server_free(s);
    }
}

/* XEP-0474 §6.3's example: the SCRAM-SHA-1 server-first carries h = SHA-1 of the advertised lists, and
 * the client's proof over that server-first is accepted; the set is refused after the first step. */
static void test_ssdp(void)
{
    fixture_t f;
    unsigned char *salt;
    size_t salt_len;
    memset(&f, 0, sizeof f);
    base64_decode("QSXCR+Q6sek8bf92", 16, &salt, &salt_len);
    f.user = "user";
    scram_creds_derive(SCRAM_SHA1, "pencil", salt, salt_len, 4096, &f.creds);
    free(salt);
    scram_server_t *s = scram_server_new(SCRAM_SHA1, 0, 0, &fx_cb, &f);
    char *out = NULL;
    const char *fail = NULL;
    scram_server_set_nonce_for_test(s, "3rfcNHYJY1ZVvWVs7j");
    ok(scram_server_set_ssdp(s, "SCRAM-SHA-1\x1eSCRAM-SHA-1-PLUS\x1ftls-exporter\x1etls-server-end-point") == 0,
       "scram_server_set_ssdp before the first step");
    scram_step_t st = step_str(s, "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL", &out, &fail);
    ok(st == SCRAM_CONTINUE && out && strstr(out, ",i=4096,h=G6k/rBLDqgOhRRaCuuatSDFkJ08=") != NULL &&
           strcmp(strstr(out, ",h="), ",h=G6k/rBLDqgOhRRaCuuatSDFkJ08=") == 0,
       "XEP-0474 §6.3: server-first ends with h=G6k/rBLDqgOhRRaCuuatSDFkJ08= (%s)", out ? out : "NULL");
    ok(scram_server_set_ssdp(s, "x") == -1, "scram_server_set_ssdp refused after the first step");
    free(out);
    out = NULL;
    scram_server_free(s);
}

/* ---- base64, PLAIN, keys ---- */

static void test_base64(void)
{
    static const char *vec[][2] = { { "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
                                    { "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" } };
    int enc_ok = 1, dec_ok = 1;
    for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        char *e = NULL;
        unsigned char *d = NULL;
        size_t dl = 99;
        if (base64_encode((const unsigned char *)vec[i][0], strlen(vec[i][0]), &e) != 0 || strcmp(e, vec[i][1]) != 0)
            enc_ok = 0;
        if (base64_decode(vec[i][1], strlen(vec[i][1]), &d, &dl) != 0 || dl != strlen(vec[i][0]) ||
            memcmp(d, vec[i][0], dl) != 0)
            dec_ok = 0;
        free(e);
        free(d);
    }
    ok(enc_ok, "base64_encode matches the RFC 4648 §10 test vectors");
    ok(dec_ok, "base64_decode matches the RFC 4648 §10 test vectors (including empty)");
    static const char *bad[] = { "Zm9", "Zm9v YmE=", " Zm9v", "Zm9v\n", "Zg=a", "Z===", "====", "Zh==", "Zm9=",
                                 "Zm9vYmE=Zm9v", "Zm-v", "Zm_v" };
    int rej = 1;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unsigned char *d = (unsigned char *)"x";
        size_t dl = 7;
        if (base64_decode(bad[i], strlen(bad[i]), &d, &dl) != -1 || d != NULL) {
            rej = 0;
            printf("# accepted bad base64 \"%s\"\n", bad[i]);
        }
        free(d);
    }
    ok(rej, "base64_decode rejects bad length, whitespace, misplaced padding, non-zero pad bits, URL alphabet");
    unsigned char *d = NULL;
    size_t dl;
    ok(base64_decode("Zm9v\0Zm9v", 9, &d, &dl) == -1, "base64_decode rejects an embedded NUL");
    free(d);
}

static void test_plain(void)
{
    char *z, *c, *p;
    ok(sasl_plain_parse((const unsigned char *)"\0user\0pencil", 12, &z, &c, &p) == 0 && z == NULL &&
       streq(c, "user") && streq(p, "pencil"), "PLAIN: empty authzid gives NULL, authcid and password parsed");
    free(z); free(c); free(p);
    ok(sasl_plain_parse((const unsigned char *)"juliet@example.com\0juliet\0r0m30", 31, &z, &c, &p) == 0 &&
       streq(z, "juliet@example.com") && streq(c, "juliet") && streq(p, "r0m30"), "PLAIN: authzid kept");
    free(z); free(c); free(p);
    ok(sasl_plain_parse((const unsigned char *)"user\0pencil", 11, &z, &c, &p) == -1 && !z && !c && !p,
       "PLAIN: one NUL is malformed");
    ok(sasl_plain_parse((const unsigned char *)"\0user\0pen\0cil", 14, &z, &c, &p) == -1, "PLAIN: three NULs are malformed");
    ok(sasl_plain_parse((const unsigned char *)"\0\0pencil", 8, &z, &c, &p) == -1, "PLAIN: empty authcid is malformed");
    ok(sasl_plain_parse((const unsigned char *)"\0user\0", 6, &z, &c, &p) == -1, "PLAIN: empty password is malformed");
    ok(sasl_plain_parse((const unsigned char *)"\0user\0pen\xC0\xAF", 11, &z, &c, &p) == -1 &&
       sasl_plain_parse((const unsigned char *)"\0us\xED\xA0\x80r\0pencil", 14, &z, &c, &p) == -1 &&
       sasl_plain_parse((const unsigned char *)"\xFF\0user\0pencil", 13, &z, &c, &p) == -1,
       "PLAIN: invalid UTF-8 (overlong, surrogate, 0xFF) in any field is malformed");
    ok(sasl_plain_parse((const unsigned char *)"\0us\xC3\xA9r\0p\xE2\x82\xAC", 11, &z, &c, &p) == 0 &&
       streq(c, "us\xC3\xA9r") && streq(p, "p\xE2\x82\xAC"), "PLAIN: valid non-ASCII UTF-8 accepted");
    free(z); free(c); free(p);
    unsigned char big[1030];
    memset(big, 'a', sizeof big);
    big[0] = 0;
    big[5] = 0;
    ok(sasl_plain_parse(big, 1024, &z, &c, &p) == 0, "PLAIN: 1024 bytes accepted");
    free(z); free(c); free(p);
    ok(sasl_plain_parse(big, 1025, &z, &c, &p) == -1, "PLAIN: 1025 bytes rejected");
}

static void test_creds(void)
{
    scram_creds_t a, b;
    ok(scram_hash_len(SCRAM_SHA1) == 20 && scram_hash_len(SCRAM_SHA256) == 32, "hash lengths 20 and 32");
    ok(scram_creds_from_password(SCRAM_SHA256, "pencil", 4096, &a) == 0 && a.salt_len == 16 &&
       a.iterations == 4096 && a.hash == SCRAM_SHA256, "creds_from_password: 16-byte salt, iterations kept");
    ok(scram_check_password(&a, "pencil") == 1, "check_password: right password matches");
    ok(scram_check_password(&a, "pencil2") == 0 && scram_check_password(&a, "Pencil") == 0,
       "check_password: wrong passwords do not match");
    ok(scram_creds_from_password(SCRAM_SHA256, "pencil", 4096, &b) == 0 && memcmp(a.salt, b.salt, 16) != 0 &&
       memcmp(a.stored_key, b.stored_key, 32) != 0, "creds_from_password: fresh salt each time");
    ok(scram_creds_from_password(SCRAM_SHA1, "pencil", 0, &b) == -1, "creds_from_password: 0 iterations rejected");
    /* RFC 4013 §3: SOFT HYPHEN maps to nothing, so "I<U+00AD>X" and "IX" are the same password */
    ok(scram_creds_from_password(SCRAM_SHA1, "I\xC2\xADX", 4096, &b) == 0 && scram_check_password(&b, "IX") == 1,
       "SASLprep: a password with U+00AD matches the one without");
    /* U+2168 ROMAN NUMERAL NINE normalizes (NFKC) to "IX" */
    ok(scram_check_password(&b, "\xE2\x85\xA8") == 1, "SASLprep: U+2168 matches \"IX\" (NFKC)");
    ok(scram_creds_from_password(SCRAM_SHA1, "\x07", 4096, &b) == -1, "SASLprep: U+0007 is prohibited (RFC 4013 §3)");
    ok(scram_check_password(&a, "\x07") == 0, "check_password: a prohibited password never matches");
    ok(scram_creds_pair_from_password("pencil", 4096, &a, &b) == 0 && a.hash == SCRAM_SHA1 &&
       b.hash == SCRAM_SHA256 && scram_check_password(&a, "pencil") == 1 && scram_check_password(&b, "pencil") == 1 &&
       memcmp(a.salt, b.salt, 16) != 0, "creds_pair_from_password: SHA-1 and SHA-256 creds, each with its own salt");
    ok(scram_creds_pair_from_password("\x07", 4096, &a, &b) == -1 && a.salt_len == 0 && b.salt_len == 0,
       "creds_pair_from_password: a prohibited password -> -1, both zeroed");
    char *p = scram_saslprep("\xD8\xA7" "1");
    ok(p == NULL, "SASLprep: bidi rule rejects U+0627 followed by '1'");
    free(p);
    p = scram_saslprep("a\xC8\xA1");
    ok(p == NULL, "SASLprep: U+0221 (unassigned in Unicode 3.2) is rejected in a stored string (RFC 5802 §2.2)");
    free(p);
    p = scram_saslprep("user\xC2\xA0name");
    ok(streq(p, "user name"), "SASLprep: U+00A0 maps to SPACE");
    free(p);
    scram_hash_t h;
    int plus;
    ok(scram_mech_parse("SCRAM-SHA-256-PLUS", &h, &plus) == 0 && h == SCRAM_SHA256 && plus == 1 &&
       scram_mech_parse("SCRAM-SHA-1", &h, &plus) == 0 && h == SCRAM_SHA1 && plus == 0 &&
       scram_mech_parse("scram-sha-1", &h, &plus) == -1 && streq(scram_mech_name(SCRAM_SHA1, 1), "SCRAM-SHA-1-PLUS"),
       "mechanism names parse and print");
}

/* ---- the server against the simulated client ---- */

/* channel bindings and the gs2 flag */
static void test_exchanges(void)
{
    fixture_t f;
    const char *fail;
    char user[128], authz[128];
    fx_init(&f, SCRAM_SHA256, "juliet", "r0m30myr0m30");

    client_run_t r = { .gs2 = "n,,", .user_field = "juliet", .password = "r0m30myr0m30" };
    ok(run(&f, SCRAM_SHA256, 0, 0, &r, &fail, user, authz) == SCRAM_OK && r.server_sig_ok && streq(user, "juliet") &&
       streq(authz, "(null)"), "SCRAM-SHA-256: client succeeds and verifies the server signature");

    client_run_t rx = { .gs2 = "p=tls-exporter,,", .user_field = "juliet", .password = "r0m30myr0m30",
                        .cb = EXPORTER, .cb_len = sizeof EXPORTER };
    ok(run(&f, SCRAM_SHA256, 1, 1, &rx, &fail, NULL, NULL) == SCRAM_OK && rx.server_sig_ok,
       "SCRAM-SHA-256-PLUS with tls-exporter succeeds");
    client_run_t re = { .gs2 = "p=tls-server-end-point,,", .user_field = "juliet", .password = "r0m30myr0m30",
                        .cb = ENDPOINT, .cb_len = sizeof ENDPOINT };
    ok(run(&f, SCRAM_SHA256, 1, 1, &re, &fail, NULL, NULL) == SCRAM_OK && re.server_sig_ok,
       "SCRAM-SHA-256-PLUS with tls-server-end-point succeeds");

    client_run_t rm = rx;
    rm.cb = ENDPOINT;           /* the client sees another channel: a man in the middle */
    ok(run(&f, SCRAM_SHA256, 1, 1, &rm, &fail, NULL, NULL) == SCRAM_FAIL && streq(fail, "not-authorized"),
       "-PLUS: channel-binding data mismatch fails not-authorized");
    client_run_t rn = rx;
    rn.cb_len = 0;              /* p= but no binding data in c= */
    ok(run(&f, SCRAM_SHA256, 1, 1, &rn, &fail, NULL, NULL) == SCRAM_FAIL && streq(fail, "not-authorized"),
       "-PLUS: c= without the binding data fails not-authorized");

    f.endpoint = NULL;          /* this connection cannot give tls-server-end-point */
    ok(run(&f, SCRAM_SHA256, 1, 1, &re, &fail, NULL, NULL) == SCRAM_FAIL && streq(fail, "not-authorized") && !re.first_ok,
       "-PLUS: a binding type the connection cannot provide fails at client-first");
    f.endpoint = ENDPOINT;
    client_run_t ru = rx;
    ru.gs2 = "p=tls-unique,,";
    ok(run(&f, SCRAM_SHA256, 1, 1, &ru, &fail, NULL, NULL) == SCRAM_FAIL && streq(fail, "not-authorized"),
       "-PLUS: tls-unique (not offered) fails");
    ok(run(&f, SCRAM_SHA256, 1, 1, &r, &fail, NULL, NULL) == SCRAM_FAIL && streq(fail, "malformed-request"),
       "-PLUS mechanism with gs2 flag 'n' fails malformed-request");
    ok(run(&f, SCRAM_SHA256, 0, 1, &rx, &fail, NULL, NULL) == SCRAM_FAIL && streq(fail, "malformed-request"),
       "non-PLUS mechanism with p= fails malformed-request");

    client_run_t ry = r;
    ry.gs2 = "y,,";
    ok(run(&f, SCRAM_SHA256, 0, 1, &ry, &fail, NULL, NULL) == SCRAM_FAIL && streq(fail, "not-authorized"),
       "downgrade: flag 'y' while the server offers -PLUS fails not-authorized");
    ok(run(&f, SCRAM_SHA256, 0, 0, &ry, &fail, NULL, NULL) == SCRAM_OK && ry.server_sig_ok,
       "flag 'y' is fine when the server offers no -PLUS");

}

/* wrong password, unknown user, authzid, username handling */
static void test_users(void)
{
    fixture_t f;
    const char *fail;
    char user[128], authz[128];
    fx_init(&f, SCRAM_SHA256, "juliet", "r0m30myr0m30");
    client_run_t r = { .gs2 = "n,,", .user_field = "juliet", .password = "r0m30myr0m30" };

    client_run_t rw = r;
    rw.password = "wrong";
    const char *fail_wrong = NULL, *fail_unknown = NULL;
    ok(run(&f, SCRAM_SHA256, 0, 0, &rw, &fail_wrong, NULL, NULL) == SCRAM_FAIL && streq(fail_wrong, "not-authorized"),
       "wrong password fails not-authorized");
    client_run_t rk = r;
    rk.user_field = "romeo";
    ok(run(&f, SCRAM_SHA256, 0, 0, &rk, &fail_unknown, NULL, NULL) == SCRAM_FAIL && rk.first_ok &&
       streq(fail_unknown, fail_wrong), "unknown user: server-first as usual, then the same failure as a wrong password");
    unsigned char *salt = NULL;
    size_t sl = 0;
    base64_decode(rk.salt_b64, strlen(rk.salt_b64), &salt, &sl);
    ok(sl == 16 && rk.iterations == 4096, "unknown user: 16-byte salt and 4096 iterations like a real account");
    free(salt);
    char first_salt[64];
    snprintf(first_salt, sizeof first_salt, "%s", rk.salt_b64);
    run(&f, SCRAM_SHA256, 0, 0, &rk, &fail, NULL, NULL);
    ok(strcmp(first_salt, rk.salt_b64) == 0, "unknown user: the fake salt is the same on a second attempt");
    rk.user_field = "mercutio";
    run(&f, SCRAM_SHA256, 0, 0, &rk, &fail, NULL, NULL);
    ok(strcmp(first_salt, rk.salt_b64) != 0, "unknown user: different names get different fake salts");

    client_run_t ra = r;
    ra.gs2 = "n,a=juliet@capulet.example,";
    ok(run(&f, SCRAM_SHA256, 0, 0, &ra, &fail, user, authz) == SCRAM_OK && streq(authz, "juliet@capulet.example"),
       "authzid from the gs2 header is returned after OK");
    ra.gs2 = "n,a=a=2Cb=3Dc,";
    ok(run(&f, SCRAM_SHA256, 0, 0, &ra, &fail, user, authz) == SCRAM_OK && streq(authz, "a,b=c"),
       "authzid =2C and =3D are decoded");
    ra.gs2 = "n,a=x=2Gy,";
    ok(run(&f, SCRAM_SHA256, 0, 0, &ra, &fail, NULL, NULL) == SCRAM_FAIL && streq(fail, "invalid-authzid"),
       "badly escaped authzid fails invalid-authzid");
    ra.gs2 = "n,a=,";
    ok(run(&f, SCRAM_SHA256, 0, 0, &ra, &fail, NULL, NULL) == SCRAM_FAIL && streq(fail, "invalid-authzid"),
       "empty authzid fails invalid-authzid");

    fixture_t g;
    fx_init(&g, SCRAM_SHA1, "a,b=c", "pencil");
    client_run_t re2 = { .gs2 = "n,,", .user_field = "a=2Cb=3Dc", .password = "pencil" };
    ok(run(&g, SCRAM_SHA1, 0, 0, &re2, &fail, user, NULL) == SCRAM_OK && streq(g.seen_user, "a,b=c") &&
       streq(user, "a,b=c"), "username =2C/=3D decoded before lookup (SCRAM-SHA-1)");
    fx_init(&g, SCRAM_SHA1, "user name", "pencil");
    client_run_t rp = { .gs2 = "n,,", .user_field = "user\xC2\xA0name", .password = "pencil" };
    ok(run(&g, SCRAM_SHA1, 0, 0, &rp, &fail, NULL, NULL) == SCRAM_OK && streq(g.seen_user, "user name"),
       "username is SASLprepped before lookup");
    client_run_t rh = r;   /* juliet has SHA-256 creds only */
    ok(run(&f, SCRAM_SHA1, 0, 0, &rh, &fail, NULL, NULL) == SCRAM_FAIL && streq(fail, "not-authorized"),
       "no creds for this hash: fails like an unknown user");
    client_run_t rt = r;
    rt.tamper_nonce = "clientNONCE0123456789butnottheserverpart";
    ok(run(&f, SCRAM_SHA256, 0, 0, &rt, &fail, NULL, NULL) == SCRAM_FAIL && streq(fail, "not-authorized"),
       "client-final with another nonce fails");
}

/* Drives a server by hand to client-first, returns it (nonce part "SRV"). */
static scram_server_t *at_final(fixture_t *f, char **out)
{
    const char *fail;
    scram_server_t *s = scram_server_new(SCRAM_SHA256, 0, 0, &fx_cb, f);
    scram_server_set_nonce_for_test(s, "SRV");
    *out = NULL;
    if (step_str(s, "n,,n=juliet,r=abc", out, &fail) != SCRAM_CONTINUE) abort();
    return s;
}

static void test_malformed(void)
{
    fixture_t f;
    fx_init(&f, SCRAM_SHA256, "juliet", "r0m30myr0m30");
    static const struct { const char *msg, *why; } firsts[] = {
        { "", "empty message" },
        { "n,,m=ext,n=juliet,r=abc", "mandatory extension m=" },
        { "n,,n=juliet", "missing r=" },
        { "n,,r=abc,n=juliet", "r= before n=" },
        { "n,,n=,r=abc", "empty username" },
        { "n,,n=jul=2Xiet,r=abc", "bad escape in username" },
        { "n,,n=juliet,r=", "empty nonce" },
        { "n,,n=juliet,r=abc,", "trailing comma" },
        { "n,,n=juliet,r=abc,1=x", "extension without a letter name" },
        { "x,,n=juliet,r=abc", "unknown gs2 flag" },
        { "n,n=juliet,r=abc", "gs2 header with one comma" },
        { "n=juliet,r=abc", "no gs2 header" },
        { "p=,,n=juliet,r=abc", "empty cb-name" },
        { "n,,n=jul\xC0\xAFiet,r=abc", "invalid UTF-8" },
        { "n,,n=juliet,r=a\x7f" "b", "nonce with DEL" },
    };
    for (size_t i = 0; i < sizeof firsts / sizeof firsts[0]; i++) {
        scram_server_t *s = scram_server_new(SCRAM_SHA256, 0, 0, &fx_cb, &f);
        char *out = NULL;
        const char *fail = NULL;
        scram_step_t st = step_str(s, firsts[i].msg, &out, &fail);
        ok(st == SCRAM_FAIL && streq(fail, "malformed-request") && out == NULL, "client-first: %s -> malformed-request",
           firsts[i].why);
        free(out);
        scram_server_free(s);
    }
    {
        scram_server_t *s = scram_server_new(SCRAM_SHA256, 0, 0, &fx_cb, &f);
        char *out = NULL;
        const char *fail = NULL;
        size_t ol = 0;
        ok(scram_server_step(s, (const unsigned char *)"n,,n=juliet\0,r=abc", 18, &out, &ol, &fail) == SCRAM_FAIL &&
           streq(fail, "malformed-request"), "client-first: embedded NUL -> malformed-request");
        scram_server_free(s);
        s = scram_server_new(SCRAM_SHA256, 0, 0, &fx_cb, &f);
        ok(step_str(s, "n,,n=juliet,r=abc,x=ext,y=more", &out, &fail) == SCRAM_CONTINUE &&
           strncmp(out, "r=abc", 5) == 0,
           "client-first: unknown optional extensions are ignored");
        ok(scram_server_set_nonce_for_test(s, "late") == -1, "test nonce hook refused after the first step");
        free(out);
        scram_server_free(s);
        s = scram_server_new(SCRAM_SHA256, 0, 0, &fx_cb, &f);
        ok(scram_server_set_nonce_for_test(s, "a,b") == -1 && scram_server_set_nonce_for_test(s, "") == -1,
           "test nonce hook refuses ',' and empty");
        scram_server_free(s);
        char big[SCRAM_MAX_MESSAGE + 2];
        memset(big, 'a', sizeof big - 1);
        big[sizeof big - 1] = 0;
        memcpy(big, "n,,n=juliet,r=", 14);
        s = scram_server_new(SCRAM_SHA256, 0, 0, &fx_cb, &f);
        out = NULL;
        ok(step_str(s, big, &out, &fail) == SCRAM_FAIL && streq(fail, "malformed-request"),
           "client-first over SCRAM_MAX_MESSAGE -> malformed-request");
        scram_server_free(s);
    }
    /* client-final errors; nonce is "abcSRV", c=biws is base64("n,,") */
    static const struct { const char *msg, *fail, *why; } finals[] = {
        { "c=biws,r=abcSRV", "malformed-request", "missing proof" },
        { "r=abcSRV,c=biws,p=AAAA", "malformed-request", "r= before c=" },
        { "c=biws,p=AAAA", "malformed-request", "missing r=" },
        { "c=bi*s,r=abcSRV,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "malformed-request", "bad base64 in c=" },
        { "c=biws,r=abcSRV,p=AAAA", "malformed-request", "proof of the wrong length" },
        { "c=biws,r=abcSRV,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA!=", "malformed-request", "bad base64 in p=" },
        { "c=biws,r=abcSRV,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,x=1", "malformed-request", "attribute after p=" },
        { "c=biws,r=abcXXX,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "not-authorized", "wrong nonce" },
        { "c=eSws,r=abcSRV,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "not-authorized", "c= with another gs2 header" },
        { "c=biws,r=abcSRV,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "not-authorized", "zero proof" },
    };
    for (size_t i = 0; i < sizeof finals / sizeof finals[0]; i++) {
        char *out;
        const char *fail = NULL;
        scram_server_t *s = at_final(&f, &out);
        scram_step_t st = step_str(s, finals[i].msg, &out, &fail);
        ok(st == SCRAM_FAIL && streq(fail, finals[i].fail) && out == NULL, "client-final: %s -> %s", finals[i].why,
           finals[i].fail);
        ok(step_str(s, "c=biws", &out, &fail) == SCRAM_FAIL && streq(fail, "malformed-request") &&
           scram_server_username(s) == NULL, "after FAIL (%s) another message fails malformed-request", finals[i].why);
        free(out);
        scram_server_free(s);
    }
    /* after OK */
    client_run_t r = { .gs2 = "n,,", .user_field = "juliet", .password = "r0m30myr0m30" };
    scram_server_t *s = scram_server_new(SCRAM_SHA256, 0, 0, &fx_cb, &f);
    const char *fail = NULL;
    char *out = NULL;
    ok(scram_server_username(s) == NULL, "no username before the exchange");
    ok(client_exchange(s, SCRAM_SHA256, &r, &fail) == SCRAM_OK, "exchange completes");
    ok(step_str(s, "n,,n=juliet,r=abc", &out, &fail) == SCRAM_FAIL && streq(fail, "malformed-request") && out == NULL,
       "a message after OK fails malformed-request");
    free(out);
    scram_server_free(s);
    scram_server_free(NULL);
}

/* what an unknown user is shown and checked against: scram_fake_creds, scram_server_set_iterations */
static void test_fake(void)
{
    scram_creds_t a, b, c;
    ok(scram_fake_creds(SCRAM_SHA256, "romeo", 10000, &a) == 0 && a.iterations == 10000 && a.salt_len == 16 &&
       a.hash == SCRAM_SHA256, "fake creds carry the given iteration count and a 16-byte salt");
    scram_fake_creds(SCRAM_SHA256, "romeo", 10000, &b);
    scram_fake_creds(SCRAM_SHA1, "romeo", 10000, &c);
    ok(memcmp(a.salt, b.salt, 16) == 0 && memcmp(a.salt, c.salt, 16) != 0,
       "fake salt: stable per (hash, name), different across hashes");
    ok(scram_check_password(&a, "anything") == 0, "no password matches fake creds (PLAIN still runs PBKDF2)");
    ok(scram_fake_creds(SCRAM_SHA256, "romeo", 0, &a) < 0, "fake creds refuse 0 iterations");

    fixture_t f;
    const char *fail = NULL;
    fx_init(&f, SCRAM_SHA256, "juliet", "r0m30myr0m30");
    client_run_t rk = { .gs2 = "n,,", .user_field = "romeo", .password = "x" };
    fx_iterations = 12345;
    run(&f, SCRAM_SHA256, 0, 0, &rk, &fail, NULL, NULL);
    fx_iterations = 0;
    ok(rk.first_ok && rk.iterations == 12345, "scram_server_set_iterations: an unknown user is shown that count");
}

int main(void)
{
    test_base64();
    test_creds();
    test_plain();
    test_rfc_example(SCRAM_SHA1, "QSXCR+Q6sek8bf92", "fyko+d2lbbFgONRv9qkxdawL", "3rfcNHYJY1ZVvWVs7j",
                     "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=", "RFC 5802 §5 SCRAM-SHA-1");
    test_rfc_example(SCRAM_SHA256, "W22ZaJ0SNY7soEsUEjb6gQ==", "rOprNGfwEbeRWgbNEkqO", "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
                     "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
                     "RFC 7677 §3 SCRAM-SHA-256");
    test_ssdp();
    test_exchanges();
    test_users();
    test_fake();
    test_malformed();
    return done_testing();
}
