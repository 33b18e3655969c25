/* server/fast.c: XEP-0484 FAST on a stream: the HT-SHA-256-{ENDP,EXPR,NONE} mechanisms
 * (draft-schmaus-kitten-sasl-ht) inside SASL2, tokens issued in <success/> and rotated.
 *
 * What is stored is SHA-256(token), never the token. The HT mechanisms key an HMAC with the token;
 * tokens are FAST_TOKEN_RAW random bytes, 96 characters in hex, longer than SHA-256's 64-byte
 * block, and RFC 2104 §2 keys an HMAC with a longer key by its hash: HMAC(token, m) equals
 * HMAC(SHA-256(token), m), so the stored hash checks a token without the token itself. A stolen
 * database row is still as good as the token for these mechanisms (as with any HT server).
 *
 * Each row (fast_store.c) also carries a tag of the account's SCRAM credentials when issued: a new
 * password (from XEP-0077, civitasctl, anything) changes them, and every older token stops working at
 * once even before the "password-changed" event revokes the rows. */
#include "fast.h"
#include "sasl.h"
#include "sasl2_req.h"
#include "server.h"
#include "stanza.h"
#include "scram.h"
#include "timer.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAST_TOKEN_RAW 48           /* random bytes; in hex 96 characters, above the 64-byte HMAC block */

static const char *const mechs[] = {"HT-SHA-256-EXPR", "HT-SHA-256-ENDP", "HT-SHA-256-NONE", NULL};

/* The channel binding a mechanism hashes in: NULL for -NONE. */
static const char *cb_type(const char *mech)
{
    if (strcmp(mech, "HT-SHA-256-EXPR") == 0) return "tls-exporter";
    if (strcmp(mech, "HT-SHA-256-ENDP") == 0) return "tls-server-end-point";
    return NULL;
}

int fast_mech_offered(session_t *s, const char *mech)
{
    if (srv->cfg->fast_token_days <= 0 || !s->tls_active) return 0;
    for (size_t i = 0; mechs[i]; i++) {
        if (strcmp(mechs[i], mech) != 0) continue;
        const char *cb = cb_type(mech);
        return !cb || s->transport->channel_binding(s, cb, NULL, NULL) == 0;
    }
    return 0;
}

void fast_add_inline(session_t *s, xnode_t *inl)
{
    xnode_t *f = NULL;
    for (size_t i = 0; mechs[i]; i++) {
        if (!fast_mech_offered(s, mechs[i])) continue;
        if (!f) f = xnode_add_elem(inl, "fast", NS_FAST);    /* no tls-0rtt: we take no early data */
        xnode_add_text(xnode_add_elem(f, "mechanism", NULL), mechs[i]);
    }
}

/* The tag of user's current credentials: HMAC-SHA-256 keyed by its SCRAM-SHA-256 StoredKey. */
static int cred_tag(session_t *s, const char *user, unsigned char *tag)
{
    scram_creds_t c;
    unsigned char d[SCRAM_MAX_KEY];
    static const char label[] = "civitas FAST credentials";
    int r = -1;
    if (storage_account_get(srv->store, user, s->host->name, SCRAM_SHA256, &c) == 0 &&
        scram_hmac(SCRAM_SHA256, c.stored_key, scram_hash_len(SCRAM_SHA256), label, sizeof label - 1, d) == 0)
        r = 0;
    if (r == 0) memcpy(tag, d, FAST_TAG_LEN);
    explicit_bzero(&c, sizeof c);
    return r;
}

/* HMAC(token, label || cb) with the stored hash as key (see the top of this file). */
static void ht_hmac(const unsigned char *key, const char *label, const unsigned char *cb, size_t cblen,
                    unsigned char *out)
{
    size_t ll = strlen(label);
    unsigned char msg[16 + SCRAM_MAX_CB_DATA];
    memcpy(msg, label, ll);
    if (cblen) memcpy(msg + ll, cb, cblen);
    scram_hmac(SCRAM_SHA256, key, FAST_HASH_LEN, msg, ll + cblen, out);
}

void fast_authenticate(session_t *s, sasl2_req_t *r)
{
    char *authcid = NULL, *user = NULL;
    const unsigned char *hash;
    size_t hlen;
    if (!r->initial || sasl2_ht_parse(r->initial, r->initial_len, &authcid, &hash, &hlen) < 0) {
        sasl_fail_as(s, NULL, "malformed-request");
        return;
    }
    unsigned char cb[SCRAM_MAX_CB_DATA];
    size_t cblen = 0;
    const char *type = cb_type(r->mechanism);
    const char *cond = "not-authorized";
    fast_row_t row;
    int found = 0, r_load;
    fast_slot_t *used = NULL;
    unsigned char expect[FAST_HASH_LEN], tag[FAST_TAG_LEN];
    /* XEP-0484 §4.1: FAST needs the user-agent id the token is bound to */
    if (!r->ua_id[0] || !(user = jid_prep_node(authcid))) goto fail;
    if (type && s->transport->channel_binding(s, type, cb, &cblen) < 0) goto fail;
    if ((r_load = fast_row_load(srv->store, user, s->host->name, r->ua_id, &row)) < 0) {
        cond = "temporary-auth-failure";
        goto fail;
    }
    found = r_load == 0;
    if (found && row.revoked) cond = "credentials-expired";
    for (int i = 0; found && i < 2 && !used; i++) {
        fast_slot_t *sl = i == 0 ? &row.fresh : &row.current;    /* §5.1: 'new' first */
        if (!sl->used || strcmp(sl->mech, r->mechanism) != 0) continue;   /* bound to its mechanism */
        ht_hmac(sl->hash, "Initiator", cb, cblen, expect);
        if (hlen == FAST_HASH_LEN && scram_memeq(expect, hash, FAST_HASH_LEN)) used = sl;
    }
    if (!used) goto fail;
    if (used->expiry <= now_unix() || cred_tag(s, user, tag) < 0 || !scram_memeq(tag, row.tag, FAST_TAG_LEN)) {
        cond = "credentials-expired";   /* §4.2: a token the server no longer trusts */
        goto fail;
    }
    if (r->has_count) {   /* §3.4: a count at or below one already processed is a replay */
        if (r->fast_count <= used->count) goto fail;
        used->count = r->fast_count;
    }
    r->fast_expiry = used->expiry;
    unsigned char answer[FAST_HASH_LEN];
    ht_hmac(used->hash, "Responder", cb, cblen, answer);
    if (used == &row.fresh) {   /* the new token is in use: the older one goes (§3.5) */
        row.current = row.fresh;
        memset(&row.fresh, 0, sizeof row.fresh);
        used = &row.current;
    }
    if (r->fast_invalidate) memset(&row, 0, sizeof row);   /* §3.6: log out this client */
    if (fast_row_save(srv->store, user, s->host->name, r->ua_id, &row) < 0) {
        cond = "temporary-auth-failure";
        goto fail;
    }
    r->fast_used = 1;
    explicit_bzero(&row, sizeof row);
    sasl_success(s, authcid, NULL, (const char *)answer, FAST_HASH_LEN);
    free(authcid);
    free(user);
    return;
fail:
    explicit_bzero(&row, sizeof row);
    sasl_fail_as(s, user ? user : authcid, cond);
    free(authcid);
    free(user);
}

xnode_t *fast_after_success(session_t *s, sasl2_req_t *r)
{
    long days = srv->cfg->fast_token_days;
    if (days <= 0 || !r->ua_id[0]) return NULL;
    int64_t now = now_unix(), lifetime = (int64_t)days * 86400;
    const char *mech = r->request_token;
    /* §3.5: rotate a token used in its second half of life, unless the client logs out */
    if (!mech && r->fast_used && !r->fast_invalidate && r->fast_expiry - now < lifetime / 2) mech = r->mechanism;
    if (!mech) return NULL;
    fast_row_t row;
    if (fast_row_load(srv->store, s->user, s->host->name, r->ua_id, &row) < 0) return NULL;
    if (row.revoked) memset(&row, 0, sizeof row);
    char token[2 * FAST_TOKEN_RAW + 1];
    if (cred_tag(s, s->user, row.tag) < 0) return NULL;
    random_hex(token, FAST_TOKEN_RAW);
    /* §3.5: a new token goes to the 'new' slot, replacing one never used */
    memset(&row.fresh, 0, sizeof row.fresh);
    row.fresh.used = 1;
    snprintf(row.fresh.mech, sizeof row.fresh.mech, "%s", mech);
    scram_digest(SCRAM_SHA256, token, strlen(token), row.fresh.hash);
    row.fresh.expiry = now + lifetime;
    xnode_t *t = NULL;
    if (fast_row_save(srv->store, s->user, s->host->name, r->ua_id, &row) == 0) {
        char ts[40];
        t = xnode_new("token", NS_FAST);
        xnode_set_attr(t, "expiry", xep0082_timestamp(ts, sizeof ts, row.fresh.expiry));
        xnode_set_attr(t, "token", token);
    } else {
        log_warn("c2s", "%s: storing a FAST token failed: %s", s->ip, storage_last_error(srv->store));
    }
    explicit_bzero(token, sizeof token);
    explicit_bzero(&row, sizeof row);
    return t;
}

/* ---- the sweep over every account ---- */

#define FAST_SWEEP_EVERY_MS (3600L * 1000)
#define FAST_SWEEP_BATCH 64         /* rows per turn of the loop: each turn stays short */

static fast_sweep_t sweep;
static module_timer_t *sweep_every, *sweep_next;   /* sweep_next: a pass is running */
static int sweep_deleted;

static void sweep_step(module_timer_t *t, void *ud)
{
    (void)t; (void)ud;
    sweep_next = NULL;              /* a one-shot timer: freed after this returns */
    int64_t now = now_unix(), lifetime = (int64_t)srv->cfg->fast_token_days * 86400;
    int n = fast_sweep_step(srv->store, &sweep, FAST_SWEEP_BATCH, now, now + lifetime);
    if (n < 0) {
        log_warn("fast", "sweeping expired FAST tokens failed: %s", storage_last_error(srv->store));
    } else {
        sweep_deleted += n;
        if (!sweep.done) {
            sweep_next = module_add_timer(NULL, 0, 0, sweep_step, NULL);
            return;
        }
        if (sweep_deleted) log_info("fast", "deleted %d expired FAST token row%s", sweep_deleted,
                                    sweep_deleted == 1 ? "" : "s");
    }
    fast_sweep_reset(&sweep);       /* after an error the next pass starts over */
    sweep_deleted = 0;
}

static void sweep_pass(module_timer_t *t, void *ud)
{
    (void)t; (void)ud;
    if (!sweep_next) sweep_next = module_add_timer(NULL, 0, 0, sweep_step, NULL);
}

void fast_sweep_start(void)
{
    sweep_every = module_add_timer(NULL, FAST_SWEEP_EVERY_MS, 1, sweep_pass, NULL);
    sweep_pass(NULL, NULL);
}

void fast_sweep_stop(void)
{
    module_timer_cancel(sweep_next);
    module_timer_cancel(sweep_every);
    sweep_next = sweep_every = NULL;
    fast_sweep_reset(&sweep);
}
