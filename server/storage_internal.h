/* server/storage_internal.h: the storage calls (storage_sqlite.c) that are not module API: those that
 * carry SCRAM creds (SASL, account.c and civitasctl use them; modules create accounts with
 * account_create) and a test hook. */
#ifndef CIVITAS_STORAGE_INTERNAL_H
#define CIVITAS_STORAGE_INTERNAL_H
#include "storage.h"
#include "scram.h"

/* Create an account with creds for SCRAM-SHA-1 and SCRAM-SHA-256. Either creds pointer may be NULL
 * (that mechanism then never succeeds for the user), not both. Each given creds must have the hash
 * of its slot (sha1->hash == SCRAM_SHA1, sha256->hash == SCRAM_SHA256), a salt of 1..SCRAM_MAX_SALT
 * bytes and 1..INT_MAX iterations; otherwise -1. user and domain must be non-empty.
 * 0 created, 1 already exists (nothing changed), -1 error. */
int storage_account_create(storage_t *s, const char *user, const char *domain,
                           const scram_creds_t *sha1, const scram_creds_t *sha256);
/* Fill *out with the creds for hash h (key lengths scram_hash_len(h); unused bytes zeroed).
 * 0 found, 1 no such account or no creds stored for h, -1 error (also: stored creds malformed). */
int storage_account_get(storage_t *s, const char *user, const char *domain, scram_hash_t h, scram_creds_t *out);
/* Replace both creds (same rules as create; a NULL pointer removes that hash's creds).
 * 0 done, 1 no such account, -1 error. */
int storage_account_set_creds(storage_t *s, const char *user, const char *domain,
                              const scram_creds_t *sha1, const scram_creds_t *sha256);
/* Test hook: cap the database at its current size plus `extra_pages` pages (PRAGMA max_page_count),
 * so that tests can provoke "database or disk is full" without filling a disk; extra_pages < 0
 * removes the cap. 0/-1. Never use outside tests. */
int storage_set_page_limit_for_test(storage_t *s, long extra_pages);

#endif
