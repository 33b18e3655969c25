/* tests/bench/bench_users.c: bulk creation of the benchmark's civitas accounts straight through the
 * storage layer, from precomputed SCRAM-SHA-1 credentials (civitasctl would run PBKDF2 twice per user). */
/*
 * usage: bench_users DATA_DIR DOMAIN [RPREFIX RN CONTACTS] < creds.tsv
 * Each input line: USER SALT ITERATIONS STORED_KEY_HEX SERVER_KEY_HEX (whitespace-separated; the salt
 * is used as the bytes of the given string, as Prosody does). Only SCRAM-SHA-1 credentials are stored:
 * the benchmark logs in with SCRAM-SHA-1 on every server. All accounts go in one transaction per 2000
 * users. Existing accounts are left as they are. Exit 0 when every line was stored or existed.
 *
 * With RPREFIX RN CONTACTS, the accounts RPREFIX1..RPREFIX<RN> also get the benchmark's roster ring
 * (contacts i±1..i±CONTACTS/2, subscription both), written as records of civitas's roster store
 * (server/roster.c: store "roster", key = contact JID, value = <r xmlns='urn:civitas:roster:0'
 * ver sub listed/>). If that format changes, the roster scenario reports presences missing.
 */
#include "scram.h"
#include "storage.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hex20(const char *h, unsigned char *out)
{
    if (strlen(h) != 40) return -1;
    for (int i = 0; i < 20; i++) {
        unsigned v;
        if (sscanf(h + 2 * i, "%2x", &v) != 1) return -1;
        out[i] = (unsigned char)v;
    }
    return 0;
}

/* The roster ring of RPREFIX1..RPREFIX<rn>, in one transaction. Number of errors. */
static long write_rosters(storage_t *st, const char *domain, const char *prefix, int rn, int contacts)
{
    long bad = 0;
    int half = contacts / 2;
    if (storage_begin(st) < 0) return 1;
    for (int i = 0; i < rn; i++) {
        char user[128];
        snprintf(user, sizeof user, "%s%d", prefix, i + 1);
        int ver = 0;
        for (int d = -half; d <= half; d++) {
            if (d == 0) continue;
            char jid[256], rec[160];
            snprintf(jid, sizeof jid, "%s%d@%s", prefix, ((i + d) % rn + rn) % rn + 1, domain);
            int n = snprintf(rec, sizeof rec, "<r xmlns='urn:civitas:roster:0' ver='%d' sub='3' listed='1'/>", ++ver);
            if (storage_kv_set(st, "roster", user, domain, jid, rec, (size_t)n) < 0) bad++;
        }
    }
    if (storage_commit(st) < 0) bad++;
    return bad;
}

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 6) {
        fprintf(stderr, "usage: bench_users DATA_DIR DOMAIN [RPREFIX RN CONTACTS] < creds.tsv\n");
        return 2;
    }
    char *err = NULL;
    storage_t *st = storage_open(argv[1], &err);
    if (!st) {
        fprintf(stderr, "bench_users: %s\n", err ? err : "cannot open storage");
        free(err);
        return 1;
    }
    char user[128], salt[128], sk[128], svk[128];
    unsigned iter;
    long n = 0, created = 0, bad = 0;
    int batch = 0;
    while (scanf("%127s %127s %u %127s %127s", user, salt, &iter, sk, svk) == 5) {
        scram_creds_t c = {.hash = SCRAM_SHA1, .iterations = iter};
        c.salt_len = strlen(salt);
        if (c.salt_len == 0 || c.salt_len > SCRAM_MAX_SALT || hex20(sk, c.stored_key) < 0 ||
            hex20(svk, c.server_key) < 0) {
            fprintf(stderr, "bench_users: bad line for %s\n", user);
            bad++;
            continue;
        }
        memcpy(c.salt, salt, c.salt_len);
        if (!batch && storage_begin(st) < 0) break;
        batch = 1;
        int r = storage_account_create(st, user, argv[2], &c, NULL);
        if (r < 0) {
            fprintf(stderr, "bench_users: %s: %s\n", user, storage_last_error(st));
            bad++;
        }
        created += r == 0;
        if (++n % 2000 == 0) {
            if (storage_commit(st) < 0) bad++;
            batch = 0;
        }
    }
    if (batch && storage_commit(st) < 0) bad++;
    if (argc == 6) {
        int rn = atoi(argv[4]), contacts = atoi(argv[5]);
        if (rn > contacts) bad += write_rosters(st, argv[2], argv[3], rn, contacts);
        fprintf(stderr, "bench_users: rosters of %s1..%s%d written (%d contacts each)\n", argv[3], argv[3], rn, contacts);
    }
    storage_close(st);
    fprintf(stderr, "bench_users: %ld lines, %ld accounts created, %ld errors\n", n, created, bad);
    return bad ? 1 : 0;
}
