/* tests/clients/omemo_client.c: a legacy OMEMO client (XEP-0384 v0.3, eu.siacs.conversations.axolotl) on
 * libstrophe and libsignal-protocol-c (crypto on OpenSSL) for the integration tests: publishes, sends, decrypts. */
/*
 * Usage: omemo_client --jid J --password P [--host H] [--port N] [--tls-trust] [--cafile F]
 *                     [--timeout S] [--verbose] --state DIR COMMAND...
 *        omemo_client selftest
 * Commands:
 *   publish [--publish-broken-bundle]
 *       create the identity, registration id, device id, 100 prekeys and a signed prekey in DIR on first use;
 *       add the device id to the account's device list and publish it and the bundle (PEP, publish-options
 *       pubsub#access_model=open). --publish-broken-bundle signs the signed prekey wrongly (one bit flipped).
 *       Output: "device ID", then "published" or "publish-error NODE CONDITION" (exit 1).
 *   send --to JID --body TEXT
 *       fetch the recipient's device list and ours, build a session from the bundle of every device without
 *       one (ours except this device included), encrypt the body once with AES-128-GCM and its key+tag for
 *       every device, send it (with a <store/> hint and a fallback body). JID may be full: the message then
 *       goes to that resource, the device lists are the bare JID's. Output: "session JID DEVICE new|existing",
 *       "refused JID DEVICE REASON" for a bundle that does not give a session, "sent N" (keys). Exit 0 when
 *       at least one device of the recipient got a key.
 *   receive --count N [--timeout S]
 *       enable carbons (XEP-0280), send presence, print "ready FULLJID", then one line "FROM\tBODY" per
 *       decrypted message (FROM: the sender's bare JID; carbons unwrapped). Exit 0 after N messages, 1 on
 *       timeout. Before exiting, prekeys used up by prekey messages are replaced and the bundle republished.
 *       Details (device ids, prekey or not) go to stderr as "info: ..." lines.
 *   muc-send --room ROOM --nick NICK --body TEXT
 *       OMEMO in a group chat, as clients do it (XEP-0384 v0.3 §5 "group chats", Conversations' way): check
 *       with disco#info that the room is muc_nonanonymous and muc_membersonly ("room-ok", else "room-not-omemo
 *       MISSING" and exit 1); join it as NICK (no history); learn the members' real JIDs from the occupants'
 *       presences (<item jid/>) and the member lists (owner, admin, member; members may read them in such a
 *       room); "members JID JID ..." (sorted, without us); then as send: a session with every device of every
 *       member and our own other devices, one <key/> each, one type='groupchat' message to the room.
 *       Output: the session/refused lines, "sent N", "encrypted XML" (the <encrypted/> element as sent, one
 *       line) and, once the room reflects the message to us, "reflected" (exit 0), or "error CONDITION" when
 *       the room or the server refuses it (exit 1).
 *   muc-receive --room ROOM --nick NICK --count N [--history H] [--timeout S]
 *       join ROOM as NICK asking for H messages of history (default 0), print "ready FULLJID" when in the
 *       room, then "FROM\tBODY" per decrypted groupchat message, FROM being the sender's real bare JID,
 *       mapped from its occupant JID through the occupants' presences (non-anonymous room). A message
 *       without a key for this device is "undecryptable OCCUPANT-JID REASON". Exit as receive.
 *   selftest
 *       two stores in temporary directories talk to each other without a server; TAP on stdout.
 * The store (identity, prekeys, signed prekey, sessions, trusted identities, device lists) lives in DIR as
 * one file per record, so a later run continues every session. Identities are trusted on first use.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <strophe.h>
#include <signal_protocol.h>
#include <key_helper.h>
#include <session_builder.h>
#include <session_cipher.h>
#include <session_pre_key.h>
#include <protocol.h>
#include <curve.h>
#include "signal_crypto.h"

#define NS_OMEMO "eu.siacs.conversations.axolotl"
#define NODE_DEVICES NS_OMEMO ".devicelist"
#define NODE_BUNDLES NS_OMEMO ".bundles:"
#define NS_PUBSUB "http://jabber.org/protocol/pubsub"
#define NS_CARBONS "urn:xmpp:carbons:2"
#define NS_FORWARD "urn:xmpp:forward:0"
#define NS_MUC "http://jabber.org/protocol/muc"
#define NS_MUC_USER NS_MUC "#user"
#define NS_MUC_ADMIN NS_MUC "#admin"
#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define MAX_OCCUPANTS 256
#define PREKEY_COUNT 100
#define SIGNED_PREKEY_ID 1
#define AES_KEY_LEN 16
#define GCM_TAG_LEN 16
#define GCM_IV_LEN 12
#define MAX_DEVICES 64
#define FALLBACK_BODY "I sent you an OMEMO encrypted message but your client doesn't seem to support that."

/* One OMEMO device: its Signal store on disk. */
typedef struct omemo {
    char *dir;                      /* the state directory */
    signal_context *sig;
    signal_protocol_store_context *store;
    ratchet_identity_key_pair *identity;
    uint32_t device_id;             /* our OMEMO device id (the Signal address' device of ours) */
    uint32_t reg_id;                /* Signal registration id */
    int prekeys_used;               /* a prekey message consumed one of ours: replace and republish */
} omemo_t;

/* The XMPP side: one connection, driven synchronously from main (never from inside a handler). */
typedef struct client {
    xmpp_ctx_t *ctx;
    xmpp_conn_t *conn;
    omemo_t *om;
    char *bare;                     /* our bare JID */
    double timeout;                 /* per request (and for receive: overall) */
    int bound, disconnected;
    xmpp_stanza_t *reply;           /* the answer to the pending request */
    int iq_seq;
    int want;                       /* receive: messages to decrypt */
    int got;                        /* receive: messages decrypted */
    /* group chat: the room, our nick, and the occupants' real bare JIDs by nick (non-anonymous room) */
    const char *room, *nick;
    int joined;                     /* 1: in the room (self-presence, 110); -1: join refused */
    char *join_error;
    char *occ_nick[MAX_OCCUPANTS], *occ_jid[MAX_OCCUPANTS];
    int nocc;
    const char *sent_id;            /* muc-send: the id of our message */
    int sent_state;                 /* 1 reflected by the room, -1 error */
    char *sent_error;
} client_t;

static xmpp_ctx_t *g_ctx;           /* for base64 (libstrophe's) */
static int g_verbose;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void info(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("info: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void out(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    putchar('\n');
    fflush(stdout);
    va_end(ap);
}

/* ------------------------------------------------------------------------------------------------
 * base64 and XML text helpers */

static char *b64_encode(const uint8_t *data, size_t len)
{
    return xmpp_base64_encode(g_ctx, data, len);
}

/* Decodes base64 text, ignoring white space (other clients wrap lines). Returns 0 or -1. The result is
 * malloc()ed by us (copied out of libstrophe's allocation). */
static int b64_decode(const char *text, uint8_t **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    if (!text)
        return -1;
    size_t n = strlen(text), j = 0;
    char *clean = malloc(n + 1);
    if (!clean)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (text[i] != ' ' && text[i] != '\n' && text[i] != '\r' && text[i] != '\t')
            clean[j++] = text[i];
    clean[j] = '\0';
    unsigned char *bin = NULL;
    size_t binlen = 0;
    if (j > 0)
        xmpp_base64_decode_bin(g_ctx, clean, j, &bin, &binlen);
    free(clean);
    if (!bin || binlen == 0) {
        if (bin)
            xmpp_free(g_ctx, bin);
        return -1;
    }
    *data = malloc(binlen);
    if (*data)
        memcpy(*data, bin, binlen);
    *len = binlen;
    xmpp_free(g_ctx, bin);
    return *data ? 0 : -1;
}

/* The text of a child element (by name, any namespace), decoded; -1 when missing or not base64. */
static int child_b64(xmpp_stanza_t *el, const char *name, uint8_t **data, size_t *len)
{
    xmpp_stanza_t *c = el ? xmpp_stanza_get_child_by_name(el, name) : NULL;
    char *text = c ? xmpp_stanza_get_text(c) : NULL;
    int rc = b64_decode(text, data, len);
    if (text)
        xmpp_free(g_ctx, text);
    return rc;
}

/* A growing string for building XML. */
typedef struct sbuf {
    char *s;
    size_t len, cap;
} sbuf_t;

static void sb_add(sbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    if (b->len + (size_t)n + 1 > b->cap) {
        b->cap = (b->len + (size_t)n + 1) * 2;
        b->s = realloc(b->s, b->cap);
        if (!b->s)
            abort();
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* XML-escaped copy of s for attribute values and text. */
static char *xml_esc(const char *s)
{
    sbuf_t b = {0};
    sb_add(&b, "%s", "");
    for (; *s; s++) {
        switch (*s) {
        case '&': sb_add(&b, "&amp;"); break;
        case '<': sb_add(&b, "&lt;"); break;
        case '>': sb_add(&b, "&gt;"); break;
        case '\'': sb_add(&b, "&apos;"); break;
        case '"': sb_add(&b, "&quot;"); break;
        default: sb_add(&b, "%c", *s);
        }
    }
    return b.s;
}

/* ------------------------------------------------------------------------------------------------
 * Files of the store */

static char *path_of(const omemo_t *om, const char *fmt, ...)
{
    va_list ap;
    char name[512];
    va_start(ap, fmt);
    vsnprintf(name, sizeof(name), fmt, ap);
    va_end(ap);
    char *p = NULL;
    if (asprintf(&p, "%s/%s", om->dir, name) < 0)
        abort();
    return p;
}

/* Reads a whole file; 1 found, 0 missing, -1 error. */
static int file_read(const char *path, uint8_t **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    *data = NULL;
    *len = 0;
    if (!f)
        return errno == ENOENT ? 0 : -1;
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            fclose(f);
            return -1;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
        if (n == cap)
            buf = realloc(buf, cap *= 2);
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return -1;
    }
    *data = buf;
    *len = n;
    return 1;
}

/* Writes a file atomically (temp file + rename), so a killed run never leaves half a session. */
static int file_write(const char *path, const uint8_t *data, size_t len)
{
    char *tmp = NULL;
    if (asprintf(&tmp, "%s.tmp", path) < 0)
        return -1;
    FILE *f = fopen(tmp, "wb");
    int rc = -1;
    if (f) {
        size_t w = len ? fwrite(data, 1, len, f) : 0;
        if (fclose(f) == 0 && w == len && rename(tmp, path) == 0)
            rc = 0;
    }
    if (rc)
        unlink(tmp);
    free(tmp);
    return rc;
}

/* "name-device": the file name part for a Signal address (the name is a bare JID: no '/'). */
static char *addr_key(const signal_protocol_address *a)
{
    char *k = NULL;
    if (asprintf(&k, "%.*s-%d", (int)a->name_len, a->name, a->device_id) < 0)
        abort();
    return k;
}

/* ------------------------------------------------------------------------------------------------
 * The Signal store on files: session-NAME-DEV, trusted-NAME-DEV, prekey-ID, signed-prekey-ID */

static int st_load_session(signal_buffer **record, signal_buffer **user_record, const signal_protocol_address *a,
                           void *ud)
{
    char *k = addr_key(a), *p = path_of(ud, "session-%s", k);
    uint8_t *d;
    size_t n;
    int r = file_read(p, &d, &n);
    free(k);
    free(p);
    if (r <= 0)
        return r;
    *record = signal_buffer_create(d, n);
    free(d);
    return *record ? 1 : SG_ERR_NOMEM;
}

/* Calls fn for every device id that has a file "PREFIX-NAME-DEV". */
static int scan_devices(omemo_t *om, const char *prefix, const char *name, size_t name_len,
                        void (*fn)(omemo_t *, const char *, int, void *), void *arg)
{
    DIR *d = opendir(om->dir);
    if (!d)
        return -1;
    char *pfx = NULL;
    if (asprintf(&pfx, "%s-%.*s-", prefix, (int)name_len, name) < 0)
        abort();
    size_t pl = strlen(pfx);
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, pfx, pl) != 0)
            continue;
        char *end;
        long dev = strtol(e->d_name + pl, &end, 10);
        if (*end || end == e->d_name + pl)
            continue;   /* *.tmp and the like */
        fn(om, e->d_name, (int)dev, arg);
        count++;
    }
    closedir(d);
    free(pfx);
    return count;
}

static void push_device(omemo_t *om, const char *file, int dev, void *arg)
{
    signal_int_list_push_back(arg, dev);
}

static void unlink_file(omemo_t *om, const char *file, int dev, void *arg)
{
    char *p = path_of(om, "%s", file);
    unlink(p);
    free(p);
}

static int st_sub_device_sessions(signal_int_list **sessions, const char *name, size_t name_len, void *ud)
{
    signal_int_list *l = signal_int_list_alloc();
    if (!l)
        return SG_ERR_NOMEM;
    int n = scan_devices(ud, "session", name, name_len, push_device, l);
    *sessions = l;
    return n;
}

static int st_store_session(const signal_protocol_address *a, uint8_t *record, size_t record_len,
                            uint8_t *user_record, size_t user_record_len, void *ud)
{
    char *k = addr_key(a), *p = path_of(ud, "session-%s", k);
    int rc = file_write(p, record, record_len);
    free(k);
    free(p);
    return rc;
}

static int st_contains_session(const signal_protocol_address *a, void *ud)
{
    char *k = addr_key(a), *p = path_of(ud, "session-%s", k);
    int r = access(p, F_OK) == 0;
    free(k);
    free(p);
    return r;
}

static int st_delete_session(const signal_protocol_address *a, void *ud)
{
    char *k = addr_key(a), *p = path_of(ud, "session-%s", k);
    int r = unlink(p) == 0;
    free(k);
    free(p);
    return r;
}

static int st_delete_all_sessions(const char *name, size_t name_len, void *ud)
{
    return scan_devices(ud, "session", name, name_len, unlink_file, NULL);
}

static int st_load_pre_key(signal_buffer **record, uint32_t id, void *ud)
{
    char *p = path_of(ud, "prekey-%u", id);
    uint8_t *d;
    size_t n;
    int r = file_read(p, &d, &n);
    free(p);
    if (r <= 0)
        return r == 0 ? SG_ERR_INVALID_KEY_ID : SG_ERR_UNKNOWN;
    *record = signal_buffer_create(d, n);
    free(d);
    return *record ? SG_SUCCESS : SG_ERR_NOMEM;
}

static int st_store_pre_key(uint32_t id, uint8_t *record, size_t len, void *ud)
{
    char *p = path_of(ud, "prekey-%u", id);
    int rc = file_write(p, record, len);
    free(p);
    return rc;
}

static int st_contains_pre_key(uint32_t id, void *ud)
{
    char *p = path_of(ud, "prekey-%u", id);
    int r = access(p, F_OK) == 0;
    free(p);
    return r;
}

static int st_remove_pre_key(uint32_t id, void *ud)
{
    omemo_t *om = ud;
    char *p = path_of(ud, "prekey-%u", id);
    int rc = unlink(p) == 0 ? 0 : -1;
    free(p);
    /* legacy OMEMO: a used prekey is replaced and the bundle published again */
    if (rc == 0)
        om->prekeys_used++;
    return rc;
}

static int st_load_signed_pre_key(signal_buffer **record, uint32_t id, void *ud)
{
    char *p = path_of(ud, "signed-prekey-%u", id);
    uint8_t *d;
    size_t n;
    int r = file_read(p, &d, &n);
    free(p);
    if (r <= 0)
        return r == 0 ? SG_ERR_INVALID_KEY_ID : SG_ERR_UNKNOWN;
    *record = signal_buffer_create(d, n);
    free(d);
    return *record ? SG_SUCCESS : SG_ERR_NOMEM;
}

static int st_store_signed_pre_key(uint32_t id, uint8_t *record, size_t len, void *ud)
{
    char *p = path_of(ud, "signed-prekey-%u", id);
    int rc = file_write(p, record, len);
    free(p);
    return rc;
}

static int st_contains_signed_pre_key(uint32_t id, void *ud)
{
    char *p = path_of(ud, "signed-prekey-%u", id);
    int r = access(p, F_OK) == 0;
    free(p);
    return r;
}

static int st_remove_signed_pre_key(uint32_t id, void *ud)
{
    char *p = path_of(ud, "signed-prekey-%u", id);
    int rc = unlink(p) == 0 ? 0 : -1;
    free(p);
    return rc;
}

static int st_identity_key_pair(signal_buffer **public_data, signal_buffer **private_data, void *ud)
{
    omemo_t *om = ud;
    if (ec_public_key_serialize(public_data, ratchet_identity_key_pair_get_public(om->identity)) < 0 ||
        ec_private_key_serialize(private_data, ratchet_identity_key_pair_get_private(om->identity)) < 0)
        return SG_ERR_UNKNOWN;
    return 0;
}

static int st_registration_id(void *ud, uint32_t *registration_id)
{
    *registration_id = ((omemo_t *)ud)->reg_id;
    return 0;
}

static int st_save_identity(const signal_protocol_address *a, uint8_t *key, size_t key_len, void *ud)
{
    char *k = addr_key(a), *p = path_of(ud, "trusted-%s", k);
    int rc = key ? file_write(p, key, key_len) : (unlink(p), 0);
    free(k);
    free(p);
    return rc;
}

/* Trust on first use: an unknown device is trusted; a known one only with the identity key seen first. */
static int st_is_trusted(const signal_protocol_address *a, uint8_t *key, size_t key_len, void *ud)
{
    char *k = addr_key(a), *p = path_of(ud, "trusted-%s", k);
    uint8_t *d;
    size_t n;
    int r = file_read(p, &d, &n);
    free(k);
    free(p);
    if (r < 0)
        return SG_ERR_UNKNOWN;
    if (r == 0)
        return 1;
    int same = n == key_len && memcmp(d, key, n) == 0;
    free(d);
    return same;
}

/* ------------------------------------------------------------------------------------------------
 * The device: load or create */

static int write_text(omemo_t *om, const char *name, const char *text)
{
    char *p = path_of(om, "%s", name);
    int rc = file_write(p, (const uint8_t *)text, strlen(text));
    free(p);
    return rc;
}

/* Generates count prekeys from id start on and stores them. */
static int gen_prekeys(omemo_t *om, unsigned start, unsigned count)
{
    signal_protocol_key_helper_pre_key_list_node *head = NULL;
    if (signal_protocol_key_helper_generate_pre_keys(&head, start, count, om->sig) < 0)
        return -1;
    int rc = 0;
    for (signal_protocol_key_helper_pre_key_list_node *n = head; n && rc == 0;
         n = signal_protocol_key_helper_key_list_next(n))
        rc = signal_protocol_pre_key_store_key(om->store, signal_protocol_key_helper_key_list_element(n));
    signal_protocol_key_helper_key_list_free(head);
    return rc < 0 ? -1 : 0;
}

/* The highest prekey id in the store (0: none); new prekeys continue after it. */
static void max_prekey_id(omemo_t *om, unsigned *max, unsigned *count)
{
    DIR *d = opendir(om->dir);
    *max = 0;
    *count = 0;
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        if (strncmp(e->d_name, "prekey-", 7) != 0)
            continue;
        unsigned long id = strtoul(e->d_name + 7, &end, 10);
        if (*end)
            continue;
        if (id > *max)
            *max = (unsigned)id;
        (*count)++;
    }
    closedir(d);
}

/* Opens the device in dir, creating identity, ids, prekeys and the signed prekey on first use. */
static omemo_t *omemo_open(const char *dir)
{
    omemo_t *om = calloc(1, sizeof(*om));
    if (!om)
        return NULL;
    om->dir = strdup(dir);
    mkdir(dir, 0700);
    if (signal_context_create(&om->sig, om) < 0 || signal_context_set_crypto_provider(om->sig, &signal_crypto_openssl) < 0 ||
        signal_protocol_store_context_create(&om->store, om->sig) < 0)
        goto fail;
    signal_protocol_session_store ss = {
        .load_session_func = st_load_session, .get_sub_device_sessions_func = st_sub_device_sessions,
        .store_session_func = st_store_session, .contains_session_func = st_contains_session,
        .delete_session_func = st_delete_session, .delete_all_sessions_func = st_delete_all_sessions,
        .user_data = om};
    signal_protocol_pre_key_store ps = {
        .load_pre_key = st_load_pre_key, .store_pre_key = st_store_pre_key,
        .contains_pre_key = st_contains_pre_key, .remove_pre_key = st_remove_pre_key, .user_data = om};
    signal_protocol_signed_pre_key_store sps = {
        .load_signed_pre_key = st_load_signed_pre_key, .store_signed_pre_key = st_store_signed_pre_key,
        .contains_signed_pre_key = st_contains_signed_pre_key, .remove_signed_pre_key = st_remove_signed_pre_key,
        .user_data = om};
    signal_protocol_identity_key_store is = {
        .get_identity_key_pair = st_identity_key_pair, .get_local_registration_id = st_registration_id,
        .save_identity = st_save_identity, .is_trusted_identity = st_is_trusted, .user_data = om};
    signal_protocol_store_context_set_session_store(om->store, &ss);
    signal_protocol_store_context_set_pre_key_store(om->store, &ps);
    signal_protocol_store_context_set_signed_pre_key_store(om->store, &sps);
    signal_protocol_store_context_set_identity_key_store(om->store, &is);

    char *p = path_of(om, "identity");
    uint8_t *d = NULL;
    size_t n = 0;
    int r = file_read(p, &d, &n);
    free(p);
    if (r < 0)
        goto fail;
    if (r == 1) {
        int ok = ratchet_identity_key_pair_deserialize(&om->identity, d, n, om->sig) == 0;
        free(d);
        p = path_of(om, "device");
        r = file_read(p, &d, &n);
        free(p);
        if (!ok || r != 1)
            goto fail;
        char txt[64];
        snprintf(txt, sizeof(txt), "%.*s", (int)n, (char *)d);
        free(d);
        if (sscanf(txt, "%u %u", &om->device_id, &om->reg_id) != 2)
            goto fail;
        return om;
    }
    /* first use: a new device */
    signal_buffer *ser = NULL;
    if (signal_protocol_key_helper_generate_identity_key_pair(&om->identity, om->sig) < 0 ||
        signal_protocol_key_helper_generate_registration_id(&om->reg_id, 0, om->sig) < 0)
        goto fail;
    uint32_t rnd = 0;
    while (rnd == 0) {       /* XEP-0384: a randomly generated integer between 1 and 2^31 - 1 */
        RAND_bytes((uint8_t *)&rnd, sizeof(rnd));
        rnd &= 0x7fffffff;
    }
    om->device_id = rnd;
    session_signed_pre_key *spk = NULL;
    if (gen_prekeys(om, 1, PREKEY_COUNT) < 0 ||
        signal_protocol_key_helper_generate_signed_pre_key(&spk, om->identity, SIGNED_PREKEY_ID,
                                                           (uint64_t)time(NULL) * 1000, om->sig) < 0 ||
        signal_protocol_signed_pre_key_store_key(om->store, spk) < 0)
        goto fail;
    SIGNAL_UNREF(spk);
    char txt[64];
    snprintf(txt, sizeof(txt), "%u %u\n", om->device_id, om->reg_id);
    if (ratchet_identity_key_pair_serialize(&ser, om->identity) < 0)
        goto fail;
    p = path_of(om, "identity");
    r = file_write(p, signal_buffer_data(ser), signal_buffer_len(ser));
    free(p);
    signal_buffer_bzero_free(ser);
    /* the device file last: its presence says the rest is complete */
    if (r < 0 || write_text(om, "device", txt) < 0)
        goto fail;
    return om;
fail:
    fprintf(stderr, "omemo_client: cannot open or create the OMEMO store in %s\n", dir);
    exit(1);
}

static void omemo_close(omemo_t *om)
{
    if (!om)
        return;
    if (om->identity)
        SIGNAL_UNREF(om->identity);
    signal_protocol_store_context_destroy(om->store);
    signal_context_destroy(om->sig);
    free(om->dir);
    free(om);
}

/* The next prekey id to hand out: kept in the file next-prekey-id, since the highest id still in the
 * store is not enough (when a peer used the highest one, its id would be handed out again). */
static unsigned next_prekey_id(omemo_t *om, unsigned max_present)
{
    char *p = path_of(om, "next-prekey-id");
    uint8_t *d = NULL;
    size_t n = 0;
    unsigned next = 0;
    if (file_read(p, &d, &n) == 1) {
        char txt[32];
        snprintf(txt, sizeof(txt), "%.*s", (int)(n < 31 ? n : 31), (char *)d);
        next = (unsigned)strtoul(txt, NULL, 10);
    }
    free(d);
    free(p);
    if (next <= max_present)
        next = max_present + 1;
    if (next < PREKEY_COUNT + 1)
        next = PREKEY_COUNT + 1;    /* ids 1..PREKEY_COUNT were the first batch */
    return next;
}

/* Replaces prekeys used up by prekey messages so the bundle offers PREKEY_COUNT again. Returns how many. */
static int omemo_refill_prekeys(omemo_t *om)
{
    unsigned max, count;
    max_prekey_id(om, &max, &count);
    if (count >= PREKEY_COUNT)
        return 0;
    unsigned add = PREKEY_COUNT - count;
    /* prekey ids are 24-bit in libsignal's helper (it wraps at 0xFFFFFE) */
    unsigned start = next_prekey_id(om, max);
    if (gen_prekeys(om, start, add) < 0)
        return -1;
    char txt[32];
    snprintf(txt, sizeof(txt), "%u\n", start + add);
    return write_text(om, "next-prekey-id", txt) < 0 ? -1 : (int)add;
}

static char *pubkey_b64(const ec_public_key *k)
{
    signal_buffer *b = NULL;
    if (ec_public_key_serialize(&b, k) < 0)   /* 33 bytes: the 0x05 type byte and the Curve25519 point */
        return NULL;
    char *s = b64_encode(signal_buffer_data(b), signal_buffer_len(b));
    signal_buffer_free(b);
    return s;
}

/* The <bundle/> of this device (XEP-0384 v0.3 §4.3). broken: the signature has one bit flipped. */
static char *omemo_bundle_xml(omemo_t *om, int broken)
{
    session_signed_pre_key *spk = NULL;
    if (signal_protocol_signed_pre_key_load_key(om->store, &spk, SIGNED_PREKEY_ID) < 0)
        return NULL;
    sbuf_t b = {0};
    char *k = pubkey_b64(ec_key_pair_get_public(session_signed_pre_key_get_key_pair(spk)));
    size_t siglen = session_signed_pre_key_get_signature_len(spk);
    uint8_t *sig = malloc(siglen);
    memcpy(sig, session_signed_pre_key_get_signature(spk), siglen);
    if (broken)
        sig[siglen / 2] ^= 0x01;
    char *s = b64_encode(sig, siglen);
    char *ik = pubkey_b64(ratchet_identity_key_pair_get_public(om->identity));
    sb_add(&b, "<bundle xmlns='%s'><signedPreKeyPublic signedPreKeyId='%u'>%s</signedPreKeyPublic>"
               "<signedPreKeySignature>%s</signedPreKeySignature><identityKey>%s</identityKey><prekeys>",
           NS_OMEMO, session_signed_pre_key_get_id(spk), k, s, ik);
    xmpp_free(g_ctx, k);
    xmpp_free(g_ctx, s);
    xmpp_free(g_ctx, ik);
    free(sig);
    SIGNAL_UNREF(spk);
    DIR *d = opendir(om->dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char *end;
        if (strncmp(e->d_name, "prekey-", 7) != 0)
            continue;
        unsigned long id = strtoul(e->d_name + 7, &end, 10);
        session_pre_key *pk = NULL;
        if (*end || signal_protocol_pre_key_load_key(om->store, &pk, (uint32_t)id) < 0)
            continue;
        char *pub = pubkey_b64(ec_key_pair_get_public(session_pre_key_get_key_pair(pk)));
        sb_add(&b, "<preKeyPublic preKeyId='%lu'>%s</preKeyPublic>", id, pub);
        xmpp_free(g_ctx, pub);
        SIGNAL_UNREF(pk);
    }
    if (d)
        closedir(d);
    sb_add(&b, "</prekeys></bundle>");
    return b.s;
}

static int decode_pub(omemo_t *om, xmpp_stanza_t *el, const char *name, ec_public_key **key)
{
    uint8_t *d;
    size_t n;
    if (child_b64(el, name, &d, &n) < 0)
        return -1;
    int rc = curve_decode_point(key, d, n, om->sig);
    free(d);
    return rc < 0 ? -1 : 0;
}

/* Builds a session with device dev of jid from its <bundle/> element (one random prekey, as the XEP says).
 * Returns 0, or -1 with *why set to a short reason (a bundle that is incomplete or whose signature fails). */
static int omemo_session_from_bundle(omemo_t *om, const char *jid, uint32_t dev, xmpp_stanza_t *bundle,
                                     const char **why)
{
    ec_public_key *spk = NULL, *ik = NULL, *pk = NULL;
    uint8_t *sig = NULL;
    size_t siglen = 0;
    session_pre_key_bundle *b = NULL;
    session_builder *builder = NULL;
    int rc = -1;
    *why = "incomplete-bundle";
    xmpp_stanza_t *spk_el = xmpp_stanza_get_child_by_name(bundle, "signedPreKeyPublic");
    xmpp_stanza_t *prekeys = xmpp_stanza_get_child_by_name(bundle, "prekeys");
    const char *spk_id = spk_el ? xmpp_stanza_get_attribute(spk_el, "signedPreKeyId") : NULL;
    if (!spk_id || !prekeys || decode_pub(om, bundle, "signedPreKeyPublic", &spk) < 0 ||
        decode_pub(om, bundle, "identityKey", &ik) < 0 ||
        child_b64(bundle, "signedPreKeySignature", &sig, &siglen) < 0)
        goto done;
    /* XEP-0384: pick one of the prekeys at random */
    xmpp_stanza_t *cand[256];
    int nc = 0;
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(prekeys); c && nc < 256; c = xmpp_stanza_get_next(c))
        if (xmpp_stanza_get_name(c) && strcmp(xmpp_stanza_get_name(c), "preKeyPublic") == 0 &&
            xmpp_stanza_get_attribute(c, "preKeyId"))
            cand[nc++] = c;
    if (nc == 0)
        goto done;
    uint32_t r = 0;
    RAND_bytes((uint8_t *)&r, sizeof(r));
    xmpp_stanza_t *chosen = cand[r % (uint32_t)nc];
    char *text = xmpp_stanza_get_text(chosen);
    uint8_t *pkd;
    size_t pkn;
    int bad = b64_decode(text, &pkd, &pkn) < 0;
    if (text)
        xmpp_free(g_ctx, text);
    if (bad)
        goto done;
    bad = curve_decode_point(&pk, pkd, pkn, om->sig) < 0;
    free(pkd);
    if (bad)
        goto done;
    uint32_t pk_id = (uint32_t)strtoul(xmpp_stanza_get_attribute(chosen, "preKeyId"), NULL, 10);
    if (session_pre_key_bundle_create(&b, 0, (int)dev, pk_id, pk, (uint32_t)strtoul(spk_id, NULL, 10), spk, sig,
                                      siglen, ik) < 0)
        goto done;
    signal_protocol_address addr = {jid, strlen(jid), (int32_t)dev};
    if (session_builder_create(&builder, om->store, &addr, om->sig) < 0)
        goto done;
    int s = session_builder_process_pre_key_bundle(builder, b);
    if (s == SG_ERR_INVALID_KEY) {
        *why = "invalid-signature";     /* the signed prekey's signature does not verify with the identity key */
    } else if (s == SG_ERR_UNTRUSTED_IDENTITY) {
        *why = "untrusted-identity";
    } else if (s < 0) {
        *why = "session-error";
    } else {
        rc = 0;
        *why = NULL;
    }
done:
    session_builder_free(builder);
    if (b)
        SIGNAL_UNREF(b);
    if (spk)
        SIGNAL_UNREF(spk);
    if (ik)
        SIGNAL_UNREF(ik);
    if (pk)
        SIGNAL_UNREF(pk);
    free(sig);
    return rc;
}

/* Encrypts the key material for one device; *prekey says whether it is a PreKeySignalMessage. Returns base64. */
static char *omemo_encrypt_key(omemo_t *om, const char *jid, uint32_t dev, const uint8_t *km, size_t kmlen,
                               int *prekey)
{
    signal_protocol_address addr = {jid, strlen(jid), (int32_t)dev};
    session_cipher *c = NULL;
    ciphertext_message *msg = NULL;
    char *res = NULL;
    if (session_cipher_create(&c, om->store, &addr, om->sig) == 0 && session_cipher_encrypt(c, km, kmlen, &msg) == 0) {
        *prekey = ciphertext_message_get_type(msg) == CIPHERTEXT_PREKEY_TYPE;
        signal_buffer *ser = ciphertext_message_get_serialized(msg);
        res = b64_encode(signal_buffer_data(ser), signal_buffer_len(ser));
    }
    if (msg)
        SIGNAL_UNREF(msg);
    session_cipher_free(c);
    return res;
}

/* Decrypts the key material sent to us by device dev of jid. Returns the plaintext buffer or NULL (*err). */
static signal_buffer *omemo_decrypt_key(omemo_t *om, const char *jid, uint32_t dev, const uint8_t *data, size_t len,
                                        int prekey, int *err)
{
    signal_protocol_address addr = {jid, strlen(jid), (int32_t)dev};
    session_cipher *c = NULL;
    signal_buffer *plain = NULL;
    *err = session_cipher_create(&c, om->store, &addr, om->sig);
    if (*err == 0 && prekey) {
        pre_key_signal_message *m = NULL;
        *err = pre_key_signal_message_deserialize(&m, data, len, om->sig);
        if (*err == 0)
            *err = session_cipher_decrypt_pre_key_signal_message(c, m, NULL, &plain);
        if (m)
            SIGNAL_UNREF(m);
    } else if (*err == 0) {
        signal_message *m = NULL;
        *err = signal_message_deserialize(&m, data, len, om->sig);
        if (*err == 0)
            *err = session_cipher_decrypt_signal_message(c, m, NULL, &plain);
        if (m)
            SIGNAL_UNREF(m);
    }
    session_cipher_free(c);
    return *err == 0 ? plain : NULL;
}

/* ------------------------------------------------------------------------------------------------
 * AES-128-GCM for the payload, as legacy OMEMO does (12-byte IV, 16-byte tag carried with the key) */

static int gcm_run(int enc, const uint8_t *key, const uint8_t *iv, size_t iv_len, const uint8_t *in, size_t len,
                   uint8_t *out_buf, uint8_t *tag)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int n = 0, fin = 0, ok = c && EVP_CipherInit_ex(c, EVP_aes_128_gcm(), NULL, NULL, NULL, enc) &&
                             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, (int)iv_len, NULL) &&
                             EVP_CipherInit_ex(c, NULL, NULL, key, iv, enc) &&
                             (len == 0 || EVP_CipherUpdate(c, out_buf, &n, in, (int)len));
    if (ok && !enc)
        ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, GCM_TAG_LEN, tag);
    if (ok)
        ok = EVP_CipherFinal_ex(c, out_buf + n, &fin) == 1;
    if (ok && enc)
        ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, GCM_TAG_LEN, tag);
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : -1;
}

/* An encrypted message ready for the wire, apart from the per-device keys. */
typedef struct payload {
    uint8_t keytag[AES_KEY_LEN + GCM_TAG_LEN];   /* what every device receives, Signal-encrypted */
    uint8_t iv[GCM_IV_LEN];
    char *iv_b64, *payload_b64;
} payload_t;

static int payload_encrypt(const char *body, payload_t *p)
{
    size_t len = strlen(body);
    uint8_t *ct = malloc(len + 1);
    if (!ct || RAND_bytes(p->keytag, AES_KEY_LEN) != 1 || RAND_bytes(p->iv, GCM_IV_LEN) != 1 ||
        gcm_run(1, p->keytag, p->iv, GCM_IV_LEN, (const uint8_t *)body, len, ct, p->keytag + AES_KEY_LEN) < 0) {
        free(ct);
        return -1;
    }
    p->iv_b64 = b64_encode(p->iv, GCM_IV_LEN);
    p->payload_b64 = b64_encode(ct, len);
    free(ct);
    return 0;
}

/* Decrypts a payload with the key material of a <key/>: 32 bytes are key and tag; 16 bytes (older clients)
 * are the key alone, the tag then ends the payload. Returns a NUL-terminated malloc()ed body or NULL. */
static char *payload_decrypt(const uint8_t *km, size_t kmlen, const uint8_t *iv, size_t iv_len, const uint8_t *ct,
                             size_t ctlen)
{
    uint8_t tag[GCM_TAG_LEN];
    if (kmlen >= AES_KEY_LEN + GCM_TAG_LEN) {
        memcpy(tag, km + AES_KEY_LEN, GCM_TAG_LEN);
    } else if (kmlen == AES_KEY_LEN && ctlen >= GCM_TAG_LEN) {
        ctlen -= GCM_TAG_LEN;
        memcpy(tag, ct + ctlen, GCM_TAG_LEN);
    } else {
        return NULL;
    }
    char *body = malloc(ctlen + 1);
    if (!body || gcm_run(0, km, iv, iv_len, ct, ctlen, (uint8_t *)body, tag) < 0) {
        free(body);
        return NULL;
    }
    body[ctlen] = '\0';
    return body;
}

/* The <encrypted/> element for the given devices (jids[i], devs[i]); *nkeys: keys written. */
static char *encrypted_xml(omemo_t *om, const payload_t *p, char **jids, uint32_t *devs, int n, int *nkeys,
                           int *peer_keys, const char *peer)
{
    sbuf_t b = {0};
    sb_add(&b, "<encrypted xmlns='%s'><header sid='%u'>", NS_OMEMO, om->device_id);
    *nkeys = 0;
    *peer_keys = 0;
    for (int i = 0; i < n; i++) {
        int prekey = 0;
        char *k = omemo_encrypt_key(om, jids[i], devs[i], p->keytag, sizeof(p->keytag), &prekey);
        if (!k) {
            fprintf(stderr, "omemo_client: encrypting for %s/%u failed\n", jids[i], devs[i]);
            continue;
        }
        sb_add(&b, "<key rid='%u'%s>%s</key>", devs[i], prekey ? " prekey='true'" : "", k);
        info("key for %s device %u%s", jids[i], devs[i], prekey ? " (PreKeySignalMessage)" : " (SignalMessage)");
        xmpp_free(g_ctx, k);
        (*nkeys)++;
        if (strcmp(jids[i], peer) == 0)
            (*peer_keys)++;
    }
    sb_add(&b, "<iv>%s</iv></header><payload>%s</payload></encrypted>", p->iv_b64, p->payload_b64);
    return b.s;
}

/* ------------------------------------------------------------------------------------------------
 * XMPP: connection and synchronous requests */

static void conn_handler(xmpp_conn_t *conn, xmpp_conn_event_t status, int error, xmpp_stream_error_t *se,
                         void *userdata)
{
    client_t *c = userdata;
    if (status == XMPP_CONN_CONNECT) {
        c->bound = 1;
        return;
    }
    if (!c->disconnected && c->bound)
        fprintf(stderr, "omemo_client: disconnected\n");
    c->disconnected = 1;
}

static int reply_handler(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *userdata)
{
    client_t *c = userdata;
    if (c->reply)
        xmpp_stanza_release(c->reply);
    c->reply = xmpp_stanza_copy(stanza);
    return 0;
}

/* Sends <iq type to>inner</iq> and waits for its answer. Returns the answer (release it) or NULL. */
static xmpp_stanza_t *iq_sync(client_t *c, const char *type, const char *to, const char *inner)
{
    char id[32];
    snprintf(id, sizeof(id), "om%d", ++c->iq_seq);
    sbuf_t b = {0};
    char *to_e = to ? xml_esc(to) : NULL;
    sb_add(&b, "<iq type='%s' id='%s'", type, id);
    if (to_e)
        sb_add(&b, " to='%s'", to_e);
    sb_add(&b, ">%s</iq>", inner);
    free(to_e);
    xmpp_stanza_t *iq = xmpp_stanza_new_from_string(c->ctx, b.s);
    free(b.s);
    if (!iq)
        return NULL;
    if (c->reply)
        xmpp_stanza_release(c->reply);
    c->reply = NULL;
    xmpp_id_handler_add(c->conn, reply_handler, id, c);
    xmpp_send(c->conn, iq);
    xmpp_stanza_release(iq);
    double deadline = now_s() + c->timeout;
    while (!c->reply && !c->disconnected && now_s() < deadline)
        xmpp_run_once(c->ctx, 50);
    if (!c->reply) {
        xmpp_id_handler_delete(c->conn, reply_handler, id);
        fprintf(stderr, "omemo_client: no answer to request %s\n", id);
        return NULL;
    }
    xmpp_stanza_t *r = c->reply;
    c->reply = NULL;
    return r;
}

/* The defined condition of an error reply ("none" when it is no error). */
static const char *error_condition(xmpp_stanza_t *st)
{
    const char *type = st ? xmpp_stanza_get_type(st) : NULL;
    if (!st)
        return "no-answer";
    if (!type || strcmp(type, "error") != 0)
        return "none";
    xmpp_stanza_t *e = xmpp_stanza_get_child_by_name(st, "error");
    for (xmpp_stanza_t *k = e ? xmpp_stanza_get_children(e) : NULL; k; k = xmpp_stanza_get_next(k)) {
        const char *ns = xmpp_stanza_get_ns(k), *name = xmpp_stanza_get_name(k);
        if (name && ns && strcmp(ns, "urn:ietf:params:xml:ns:xmpp-stanzas") == 0 && strcmp(name, "text") != 0)
            return name;
    }
    return "undefined-condition";
}

/* The first <item/> payload of a pubsub items result, or NULL. */
static xmpp_stanza_t *first_item_payload(xmpp_stanza_t *r, const char *name)
{
    xmpp_stanza_t *ps = r ? xmpp_stanza_get_child_by_name_and_ns(r, "pubsub", NS_PUBSUB) : NULL;
    xmpp_stanza_t *items = ps ? xmpp_stanza_get_child_by_name(ps, "items") : NULL;
    xmpp_stanza_t *item = items ? xmpp_stanza_get_child_by_name(items, "item") : NULL;
    return item ? xmpp_stanza_get_child_by_name_and_ns(item, name, NS_OMEMO) : NULL;
}

static void save_device_list(client_t *c, const char *jid, const uint32_t *devs, int n)
{
    sbuf_t b = {0};
    sb_add(&b, "%s", "");
    for (int i = 0; i < n; i++)
        sb_add(&b, "%u\n", devs[i]);
    char *p = path_of(c->om, "devices-%s", jid);
    file_write(p, (uint8_t *)b.s, b.len);
    free(p);
    free(b.s);
}

static int load_device_list(client_t *c, const char *jid, uint32_t *devs, int max)
{
    char *p = path_of(c->om, "devices-%s", jid);
    FILE *f = fopen(p, "r");
    free(p);
    int n = 0;
    unsigned v;
    while (f && n < max && fscanf(f, "%u", &v) == 1)
        devs[n++] = v;
    if (f)
        fclose(f);
    return n;
}

/* Fetches jid's device list (XEP-0384 §4.2). Returns the number of devices (0 for an empty or missing list),
 * -1 when the request failed (then the cached list of an earlier run is used if there is one). */
static int fetch_device_list(client_t *c, const char *jid, uint32_t *devs, int max)
{
    xmpp_stanza_t *r = iq_sync(c, "get", strcmp(jid, c->bare) == 0 ? NULL : jid,
                               "<pubsub xmlns='" NS_PUBSUB "'><items node='" NODE_DEVICES "'/></pubsub>");
    const char *cond = error_condition(r);
    int n = 0;
    if (strcmp(cond, "none") != 0 && strcmp(cond, "item-not-found") != 0) {
        info("device list of %s not fetched: %s", jid, cond);
        if (r)
            xmpp_stanza_release(r);
        n = load_device_list(c, jid, devs, max);
        return n ? n : -1;
    }
    xmpp_stanza_t *list = first_item_payload(r, "list");
    for (xmpp_stanza_t *d = list ? xmpp_stanza_get_children(list) : NULL; d && n < max; d = xmpp_stanza_get_next(d)) {
        const char *id = xmpp_stanza_get_name(d) && strcmp(xmpp_stanza_get_name(d), "device") == 0 ?
                         xmpp_stanza_get_attribute(d, "id") : NULL;
        char *end;
        unsigned long v = id ? strtoul(id, &end, 10) : 0;
        if (id && !*end && v > 0 && v <= 0x7fffffff)
            devs[n++] = (uint32_t)v;
    }
    if (r)
        xmpp_stanza_release(r);
    save_device_list(c, jid, devs, n);
    return n;
}

static const char PUBLISH_OPTIONS[] =
    "<publish-options><x xmlns='jabber:x:data' type='submit'>"
    "<field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
    "<field var='pubsub#access_model'><value>open</value></field>"
    "</x></publish-options>";

/* Publishes item 'current' with payload to node (XEP-0223 publish-options: access model open). 0 or -1. */
static int publish(client_t *c, const char *node, const char *payload)
{
    sbuf_t b = {0};
    sb_add(&b, "<pubsub xmlns='" NS_PUBSUB "'><publish node='%s'><item id='current'>%s</item></publish>%s</pubsub>",
           node, payload, PUBLISH_OPTIONS);
    xmpp_stanza_t *r = iq_sync(c, "set", NULL, b.s);
    free(b.s);
    const char *cond = error_condition(r);
    int ok = strcmp(cond, "none") == 0;
    if (!ok)
        out("publish-error %s %s", node, cond);
    if (r)
        xmpp_stanza_release(r);
    return ok ? 0 : -1;
}

static int publish_bundle(client_t *c, int broken)
{
    char node[128];
    snprintf(node, sizeof(node), NODE_BUNDLES "%u", c->om->device_id);
    char *bundle = omemo_bundle_xml(c->om, broken);
    if (!bundle)
        return -1;
    int rc = publish(c, node, bundle);
    free(bundle);
    return rc;
}

static int cmd_publish(client_t *c, int broken)
{
    uint32_t devs[MAX_DEVICES + 1];
    out("device %u", c->om->device_id);
    int n = fetch_device_list(c, c->bare, devs, MAX_DEVICES);
    if (n < 0)
        n = 0;
    int have = 0;
    for (int i = 0; i < n; i++)
        have |= devs[i] == c->om->device_id;
    if (!have)
        devs[n++] = c->om->device_id;
    sbuf_t b = {0};
    sb_add(&b, "<list xmlns='%s'>", NS_OMEMO);
    for (int i = 0; i < n; i++)
        sb_add(&b, "<device id='%u'/>", devs[i]);
    sb_add(&b, "</list>");
    /* the bundle first: whoever sees the new device in the list can fetch its bundle at once */
    int rc = publish_bundle(c, broken);
    if (rc == 0)
        rc = publish(c, NODE_DEVICES, b.s);
    free(b.s);
    if (rc == 0) {
        save_device_list(c, c->bare, devs, n);
        out("published");
    }
    return rc == 0 ? 0 : 1;
}

/* Makes sure there is a session with every device of jid (except ours); appends them to jids/devs. */
static void sessions_for(client_t *c, const char *jid, char **jids, uint32_t *devs, int *n)
{
    uint32_t list[MAX_DEVICES];
    int k = fetch_device_list(c, jid, list, MAX_DEVICES);
    for (int i = 0; i < k && *n < 2 * MAX_DEVICES; i++) {
        uint32_t dev = list[i];
        if (strcmp(jid, c->bare) == 0 && dev == c->om->device_id)
            continue;
        signal_protocol_address addr = {jid, strlen(jid), (int32_t)dev};
        if (signal_protocol_session_contains_session(c->om->store, &addr) == 1) {
            out("session %s %u existing", jid, dev);
        } else {
            char inner[256];
            snprintf(inner, sizeof(inner),
                     "<pubsub xmlns='" NS_PUBSUB "'><items node='" NODE_BUNDLES "%u' max_items='1'/></pubsub>", dev);
            xmpp_stanza_t *r = iq_sync(c, "get", strcmp(jid, c->bare) == 0 ? NULL : jid, inner);
            xmpp_stanza_t *bundle = first_item_payload(r, "bundle");
            const char *why = "no-bundle";
            int ok = bundle && omemo_session_from_bundle(c->om, jid, dev, bundle, &why) == 0;
            if (!bundle && r && strcmp(error_condition(r), "none") != 0)
                why = error_condition(r);
            if (ok)
                out("session %s %u new", jid, dev);
            else
                out("refused %s %u %s", jid, dev, why);
            if (r)
                xmpp_stanza_release(r);
            if (!ok)
                continue;
        }
        jids[*n] = (char *)jid;
        devs[*n] = dev;
        (*n)++;
    }
}

static int cmd_send(client_t *c, const char *to, const char *body)
{
    char *peer = xmpp_jid_bare(c->ctx, to);
    char *jids[2 * MAX_DEVICES];
    uint32_t devs[2 * MAX_DEVICES];
    int n = 0;
    sessions_for(c, peer, jids, devs, &n);
    if (strcmp(peer, c->bare) != 0)
        sessions_for(c, c->bare, jids, devs, &n);    /* our other devices read the conversation too */
    payload_t p = {0};
    if (payload_encrypt(body, &p) < 0) {
        xmpp_free(c->ctx, peer);
        return 1;
    }
    int nkeys = 0, peer_keys = 0;
    char *enc = encrypted_xml(c->om, &p, jids, devs, n, &nkeys, &peer_keys, peer);
    int rc = 1;
    if (peer_keys > 0) {
        char *to_e = xml_esc(to);
        sbuf_t b = {0};
        char *mid = xmpp_uuid_gen(c->ctx);
        sb_add(&b, "<message type='chat' to='%s' id='%s'>%s<encryption xmlns='urn:xmpp:eme:0' "
                   "namespace='" NS_OMEMO "' name='OMEMO'/><store xmlns='urn:xmpp:hints'/><body>%s</body></message>",
               to_e, mid ? mid : "omemo", enc, FALLBACK_BODY);
        if (mid)
            xmpp_free(c->ctx, mid);
        xmpp_stanza_t *m = xmpp_stanza_new_from_string(c->ctx, b.s);
        if (m) {
            xmpp_send(c->conn, m);
            xmpp_stanza_release(m);
            out("sent %d", nkeys);
            rc = 0;
        }
        free(b.s);
        free(to_e);
    } else {
        out("no-devices %s", peer);
    }
    free(enc);
    OPENSSL_cleanse(p.keytag, sizeof(p.keytag));
    xmpp_free(g_ctx, p.iv_b64);
    xmpp_free(g_ctx, p.payload_b64);
    xmpp_free(c->ctx, peer);
    return rc;
}

/* Decrypts an <encrypted/> message from bare JID from; prints "FROM\tBODY". 0, or -1 (reason on stderr). */
static const char *g_why;          /* why the last handle_encrypted failed (a short word) */

static int handle_encrypted(client_t *c, const char *from, xmpp_stanza_t *enc)
{
    g_why = "no-header";
    xmpp_stanza_t *header = xmpp_stanza_get_child_by_name(enc, "header");
    const char *sid = header ? xmpp_stanza_get_attribute(header, "sid") : NULL;
    if (!sid) {
        info("encrypted message from %s without header sid", from);
        return -1;
    }
    xmpp_stanza_t *key = NULL;
    for (xmpp_stanza_t *k = xmpp_stanza_get_children(header); k; k = xmpp_stanza_get_next(k)) {
        const char *rid = xmpp_stanza_get_name(k) && strcmp(xmpp_stanza_get_name(k), "key") == 0 ?
                          xmpp_stanza_get_attribute(k, "rid") : NULL;
        if (rid && strtoul(rid, NULL, 10) == c->om->device_id)
            key = k;
    }
    if (!key) {
        g_why = "no-key-for-device";
        info("message from %s device %s has no key for our device %u", from, sid, c->om->device_id);
        return -1;
    }
    const char *pk = xmpp_stanza_get_attribute(key, "prekey");
    int prekey = pk && (strcmp(pk, "true") == 0 || strcmp(pk, "1") == 0);
    uint8_t *kd = NULL, *iv = NULL, *ct = NULL;
    size_t kn = 0, ivn = 0, ctn = 0;
    char *text = xmpp_stanza_get_text(key);
    int bad = b64_decode(text, &kd, &kn) < 0 || child_b64(header, "iv", &iv, &ivn) < 0 ||
              child_b64(enc, "payload", &ct, &ctn) < 0;
    if (text)
        xmpp_free(g_ctx, text);
    int rc = -1, err = 0;
    g_why = "bad-encoding";
    if (bad) {
        info("message from %s: key, iv or payload is not base64", from);
    } else {
        signal_buffer *km = omemo_decrypt_key(c->om, from, (uint32_t)strtoul(sid, NULL, 10), kd, kn, prekey, &err);
        g_why = "signal-error";
        if (!km) {
            info("message from %s device %s: the Signal session did not decrypt the key (error %d)", from, sid, err);
        } else {
            char *body = payload_decrypt(signal_buffer_data(km), signal_buffer_len(km), iv, ivn, ct, ctn);
            signal_buffer_bzero_free(km);
            g_why = "gcm-error";
            if (!body) {
                info("message from %s device %s: the payload failed AES-GCM authentication", from, sid);
            } else {
                info("decrypted from %s device %s%s", from, sid, prekey ? " (PreKeySignalMessage)" : "");
                printf("%s\t", from);
                for (char *s = body; *s; s++)
                    putchar(*s == '\n' ? ' ' : *s);
                putchar('\n');
                fflush(stdout);
                free(body);
                rc = 0;
            }
        }
    }
    free(kd);
    free(iv);
    free(ct);
    return rc;
}

/* ------------------------------------------------------------------------------------------------
 * Group chat (XEP-0045): OMEMO needs a non-anonymous, members-only room; the sender encrypts for every
 * member's devices, a receiver maps the sender's occupant JID to its real JID to find the session. */

/* The real bare JID behind nick in our room, or NULL. */
static const char *occupant_jid(client_t *c, const char *nick)
{
    for (int i = 0; i < c->nocc; i++)
        if (strcmp(c->occ_nick[i], nick) == 0)
            return c->occ_jid[i];
    return NULL;
}

static void occupant_set(client_t *c, const char *nick, const char *bare)
{
    for (int i = 0; i < c->nocc; i++)
        if (strcmp(c->occ_nick[i], nick) == 0) {
            free(c->occ_jid[i]);
            c->occ_jid[i] = strdup(bare);
            return;
        }
    if (c->nocc < MAX_OCCUPANTS) {
        c->occ_nick[c->nocc] = strdup(nick);
        c->occ_jid[c->nocc++] = strdup(bare);
    }
}

/* 1 when the muc#user <x/> of st carries <status code='code'/>. */
static int has_status(xmpp_stanza_t *x, int code)
{
    for (xmpp_stanza_t *k = x ? xmpp_stanza_get_children(x) : NULL; k; k = xmpp_stanza_get_next(k)) {
        const char *v = xmpp_stanza_get_name(k) && strcmp(xmpp_stanza_get_name(k), "status") == 0 ?
                        xmpp_stanza_get_attribute(k, "code") : NULL;
        if (v && atoi(v) == code)
            return 1;
    }
    return 0;
}

/* The resource part of a full JID (the nick of an occupant JID), or NULL. */
static const char *resource_of(const char *jid)
{
    const char *s = jid ? strchr(jid, '/') : NULL;
    return s ? s + 1 : NULL;
}

/* 1 when jid's bare part is the room. */
static int from_room(client_t *c, const char *jid)
{
    size_t n = strlen(c->room);
    return jid && strncasecmp(jid, c->room, n) == 0 && (jid[n] == '/' || jid[n] == '\0');
}

/* Presence from the room: occupants' real JIDs (<item jid/>, non-anonymous room), our own entry (110)
 * or a refused join (type error). */
static int muc_presence_handler(xmpp_conn_t *conn, xmpp_stanza_t *st, void *userdata)
{
    client_t *c = userdata;
    const char *from = xmpp_stanza_get_from(st), *type = xmpp_stanza_get_type(st);
    if (!from_room(c, from))
        return 1;
    if (type && strcmp(type, "error") == 0) {
        if (!c->joined) {
            c->joined = -1;
            free(c->join_error);
            c->join_error = strdup(error_condition(st));
        }
        return 1;
    }
    const char *nick = resource_of(from);
    xmpp_stanza_t *x = xmpp_stanza_get_child_by_name_and_ns(st, "x", NS_MUC_USER);
    xmpp_stanza_t *item = x ? xmpp_stanza_get_child_by_name(x, "item") : NULL;
    const char *jid = item ? xmpp_stanza_get_attribute(item, "jid") : NULL;
    if (nick && jid && !(type && strcmp(type, "unavailable") == 0)) {
        char *bare = xmpp_jid_bare(c->ctx, jid);
        occupant_set(c, nick, bare);
        info("occupant %s is %s", nick, bare);
        xmpp_free(c->ctx, bare);
    }
    if (has_status(x, 110) && !(type && strcmp(type, "unavailable") == 0))
        c->joined = 1;
    return 1;
}

/* A groupchat message with <encrypted/>: decrypt with the session of the sender's real JID. */
static void groupchat_encrypted(client_t *c, xmpp_stanza_t *msg, const char *from, xmpp_stanza_t *enc)
{
    if (!c->room || !from_room(c, from))
        return;
    const char *nick = resource_of(from);
    const char *real = nick ? occupant_jid(c, nick) : NULL;
    if (!real) {
        out("undecryptable %s unknown-occupant", from);
        return;
    }
    info("groupchat from %s (real JID %s)", from, real);
    if (handle_encrypted(c, real, enc) == 0)
        c->got++;
    else if (strcmp(real, c->bare) == 0 && g_why && strcmp(g_why, "no-key-for-device") == 0 &&
             !xmpp_stanza_get_child_by_name(msg, "delay"))
        info("our own message reflected by the room (no key for the sending device)");
    else
        out("undecryptable %s %s", from, g_why ? g_why : "error");
}

/* Checks the room is fit for OMEMO and joins it (presence handler installed). 0, or -1 (said why). */
static int muc_join(client_t *c, int history)
{
    xmpp_stanza_t *r = iq_sync(c, "get", c->room, "<query xmlns='" NS_DISCO_INFO "'/>");
    const char *cond = error_condition(r);
    if (strcmp(cond, "none") != 0) {
        out("error %s", cond);
        if (r)
            xmpp_stanza_release(r);
        return -1;
    }
    int nonanon = 0, membersonly = 0;
    xmpp_stanza_t *qy = xmpp_stanza_get_child_by_name_and_ns(r, "query", NS_DISCO_INFO);
    for (xmpp_stanza_t *f = qy ? xmpp_stanza_get_children(qy) : NULL; f; f = xmpp_stanza_get_next(f)) {
        const char *var = xmpp_stanza_get_name(f) && strcmp(xmpp_stanza_get_name(f), "feature") == 0 ?
                          xmpp_stanza_get_attribute(f, "var") : NULL;
        if (var && strcmp(var, "muc_nonanonymous") == 0)
            nonanon = 1;
        if (var && strcmp(var, "muc_membersonly") == 0)
            membersonly = 1;
    }
    xmpp_stanza_release(r);
    if (!nonanon || !membersonly) {
        out("room-not-omemo%s%s", nonanon ? "" : " muc_nonanonymous", membersonly ? "" : " muc_membersonly");
        return -1;
    }
    out("room-ok");
    xmpp_handler_add(c->conn, muc_presence_handler, NULL, "presence", NULL, c);
    char *to = NULL;
    if (asprintf(&to, "%s/%s", c->room, c->nick) < 0)
        abort();
    char *to_e = xml_esc(to);
    sbuf_t b = {0};
    sb_add(&b, "<presence to='%s'><x xmlns='" NS_MUC "'><history maxstanzas='%d'/></x></presence>", to_e, history);
    xmpp_send_raw_string(c->conn, "%s", b.s);
    free(b.s);
    free(to_e);
    free(to);
    double deadline = now_s() + c->timeout;
    while (!c->joined && !c->disconnected && now_s() < deadline)
        xmpp_run_once(c->ctx, 50);
    if (c->joined != 1) {
        out("error %s", c->join_error ? c->join_error : "no-answer");
        return -1;
    }
    return 0;
}

/* Adds jid (a bare JID) to the set jids[0..*n) unless it is there or is us. */
static void add_member(client_t *c, char **jids, int *n, const char *jid)
{
    if (!jid || strcmp(jid, c->bare) == 0 || *n >= MAX_OCCUPANTS)
        return;
    for (int i = 0; i < *n; i++)
        if (strcmp(jids[i], jid) == 0)
            return;
    jids[(*n)++] = strdup(jid);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int muc_sent_handler(xmpp_conn_t *conn, xmpp_stanza_t *st, void *userdata)
{
    client_t *c = userdata;
    const char *id = xmpp_stanza_get_id(st), *type = xmpp_stanza_get_type(st);
    if (!c->sent_id || !id || strcmp(id, c->sent_id) != 0 || c->sent_state)
        return 1;
    if (type && strcmp(type, "error") == 0) {
        c->sent_state = -1;
        c->sent_error = strdup(error_condition(st));
    } else if (type && strcmp(type, "groupchat") == 0 && from_room(c, xmpp_stanza_get_from(st))) {
        c->sent_state = 1;
    }
    return 1;
}

static int cmd_muc_send(client_t *c, const char *body)
{
    if (muc_join(c, 0) < 0)
        return 1;
    /* the members: occupants we saw (real JIDs) and the affiliation lists; XEP-0384 v0.3 §5: a
     * message goes to every member, present or not */
    char *members[MAX_OCCUPANTS];
    int nm = 0;
    for (int i = 0; i < c->nocc; i++)
        add_member(c, members, &nm, c->occ_jid[i]);
    static const char *const affs[] = {"owner", "admin", "member"};
    for (size_t a = 0; a < sizeof(affs) / sizeof(*affs); a++) {
        char inner[160];
        snprintf(inner, sizeof(inner), "<query xmlns='" NS_MUC_ADMIN "'><item affiliation='%s'/></query>", affs[a]);
        xmpp_stanza_t *r = iq_sync(c, "get", c->room, inner);
        const char *cond = error_condition(r);
        if (strcmp(cond, "none") != 0)
            info("the %s list of %s: %s", affs[a], c->room, cond);
        xmpp_stanza_t *qy = r ? xmpp_stanza_get_child_by_name_and_ns(r, "query", NS_MUC_ADMIN) : NULL;
        for (xmpp_stanza_t *it = qy ? xmpp_stanza_get_children(qy) : NULL; it; it = xmpp_stanza_get_next(it)) {
            const char *jid = xmpp_stanza_get_name(it) && strcmp(xmpp_stanza_get_name(it), "item") == 0 ?
                              xmpp_stanza_get_attribute(it, "jid") : NULL;
            if (jid) {
                char *bare = xmpp_jid_bare(c->ctx, jid);
                add_member(c, members, &nm, bare);
                xmpp_free(c->ctx, bare);
            }
        }
        if (r)
            xmpp_stanza_release(r);
    }
    qsort(members, (size_t)nm, sizeof(*members), cmp_str);
    sbuf_t ml = {0};
    sb_add(&ml, "members");
    for (int i = 0; i < nm; i++)
        sb_add(&ml, " %s", members[i]);
    out("%s", ml.s);
    free(ml.s);

    char *jids[2 * MAX_DEVICES];
    uint32_t devs[2 * MAX_DEVICES];
    int n = 0;
    for (int i = 0; i < nm; i++)
        sessions_for(c, members[i], jids, devs, &n);
    sessions_for(c, c->bare, jids, devs, &n);   /* our other devices read the room too */
    int rc = 1;
    payload_t p = {0};
    if (n == 0) {
        out("no-devices %s", c->room);
    } else if (payload_encrypt(body, &p) == 0) {
        int nkeys = 0, peer_keys = 0;
        char *enc = encrypted_xml(c->om, &p, jids, devs, n, &nkeys, &peer_keys, c->bare);
        char *to_e = xml_esc(c->room);
        char *uuid = xmpp_uuid_gen(c->ctx);
        const char *mid = uuid ? uuid : "omemo-muc";
        sbuf_t b = {0};
        sb_add(&b, "<message type='groupchat' to='%s' id='%s'>%s<encryption xmlns='urn:xmpp:eme:0' "
                   "namespace='" NS_OMEMO "' name='OMEMO'/><store xmlns='urn:xmpp:hints'/><body>%s</body></message>",
               to_e, mid, enc, FALLBACK_BODY);
        c->sent_id = mid;
        xmpp_handler_add(c->conn, muc_sent_handler, NULL, "message", NULL, c);
        xmpp_send_raw_string(c->conn, "%s", b.s);
        out("sent %d", nkeys);
        out("encrypted %s", enc);
        double deadline = now_s() + c->timeout;
        while (!c->sent_state && !c->disconnected && now_s() < deadline)
            xmpp_run_once(c->ctx, 50);
        xmpp_handler_delete(c->conn, muc_sent_handler);
        if (c->sent_state == 1) {
            out("reflected");
            rc = 0;
        } else {
            out("error %s", c->sent_error ? c->sent_error : "no-reflection");
        }
        c->sent_id = NULL;
        if (uuid)
            xmpp_free(c->ctx, uuid);
        free(b.s);
        free(to_e);
        free(enc);
        OPENSSL_cleanse(p.keytag, sizeof(p.keytag));
        xmpp_free(g_ctx, p.iv_b64);
        xmpp_free(g_ctx, p.payload_b64);
    }
    for (int i = 0; i < nm; i++)
        free(members[i]);
    return rc;
}

static int message_handler(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *userdata)
{
    client_t *c = userdata;
    xmpp_stanza_t *msg = stanza;
    const char *outer_from = xmpp_stanza_get_from(stanza);
    xmpp_stanza_t *carbon = xmpp_stanza_get_child_by_name_and_ns(stanza, "received", NS_CARBONS);
    if (!carbon)
        carbon = xmpp_stanza_get_child_by_name_and_ns(stanza, "sent", NS_CARBONS);
    if (carbon) {
        /* XEP-0280 §11: a carbon is only genuine when it comes from our own bare JID */
        char *ob = outer_from ? xmpp_jid_bare(c->ctx, outer_from) : NULL;
        int ours = !ob || strcmp(ob, c->bare) == 0;
        if (ob)
            xmpp_free(c->ctx, ob);
        xmpp_stanza_t *fwd = xmpp_stanza_get_child_by_name_and_ns(carbon, "forwarded", NS_FORWARD);
        msg = fwd ? xmpp_stanza_get_child_by_name(fwd, "message") : NULL;
        if (!ours || !msg) {
            info("ignored a carbon that is not from %s", c->bare);
            return 1;
        }
        info("carbon (%s)", xmpp_stanza_get_name(carbon));
    }
    xmpp_stanza_t *enc = xmpp_stanza_get_child_by_name_and_ns(msg, "encrypted", NS_OMEMO);
    const char *from = xmpp_stanza_get_from(msg);
    if (!enc || !from)
        return 1;
    const char *type = xmpp_stanza_get_type(msg);
    if (type && strcmp(type, "groupchat") == 0) {
        groupchat_encrypted(c, msg, from, enc);
        return 1;
    }
    char *bare = xmpp_jid_bare(c->ctx, from);
    if (handle_encrypted(c, bare, enc) == 0)
        c->got++;
    xmpp_free(c->ctx, bare);
    return 1;
}

/* After "ready": decrypts until c->want messages arrived or the timeout, then replaces the prekeys
 * that prekey messages used up and republishes the bundle. 0 when all arrived. */
static int receive_until_done(client_t *c)
{
    out("ready %s", xmpp_conn_get_bound_jid(c->conn));
    double deadline = now_s() + c->timeout;
    while (c->got < c->want && !c->disconnected && now_s() < deadline)
        xmpp_run_once(c->ctx, 50);
    int rc = c->got >= c->want ? 0 : 1;
    if (rc)
        fprintf(stderr, "omemo_client: %d of %d messages decrypted\n", c->got, c->want);
    xmpp_handler_delete(c->conn, message_handler);
    if (c->om->prekeys_used && !c->disconnected) {
        int added = omemo_refill_prekeys(c->om);
        if (added > 0 && publish_bundle(c, 0) == 0)
            info("%d used prekeys replaced, bundle republished", added);
    }
    return rc;
}

static int cmd_receive(client_t *c)
{
    xmpp_stanza_t *r = iq_sync(c, "set", NULL, "<enable xmlns='" NS_CARBONS "'/>");
    info("carbons: %s", error_condition(r));
    if (r)
        xmpp_stanza_release(r);
    xmpp_handler_add(c->conn, message_handler, NULL, "message", NULL, c);
    xmpp_send_raw_string(c->conn, "<presence/>");
    return receive_until_done(c);
}

static int cmd_muc_receive(client_t *c, int history)
{
    xmpp_handler_add(c->conn, message_handler, NULL, "message", NULL, c);
    xmpp_send_raw_string(c->conn, "<presence/>");
    if (muc_join(c, history) < 0)
        return 1;
    return receive_until_done(c);
}

/* ------------------------------------------------------------------------------------------------
 * selftest: two devices in temporary directories, no server */

static int t_n, t_failed;

static void t_ok(int cond, const char *desc)
{
    printf("%sok %d - %s\n", cond ? "" : "not ", ++t_n, desc);
    if (!cond)
        t_failed++;
}

/* Parses a bundle as it would come off the wire. */
static xmpp_stanza_t *bundle_stanza(omemo_t *om, int broken)
{
    char *xml = omemo_bundle_xml(om, broken);
    xmpp_stanza_t *s = xml ? xmpp_stanza_new_from_string(g_ctx, xml) : NULL;
    free(xml);
    return s;
}

/* Encrypts body from a to b's device and decrypts it at b; returns the body b got (or NULL). */
static char *t_roundtrip(omemo_t *a, const char *a_jid, omemo_t *b, const char *b_jid, const char *body, int *prekey)
{
    payload_t p = {0};
    if (payload_encrypt(body, &p) < 0)
        return NULL;
    char *k = omemo_encrypt_key(a, b_jid, b->device_id, p.keytag, sizeof(p.keytag), prekey);
    uint8_t *kd = NULL, *iv = NULL, *ct = NULL;
    size_t kn, ivn, ctn;
    char *res = NULL;
    int err;
    if (k && b64_decode(k, &kd, &kn) == 0 && b64_decode(p.iv_b64, &iv, &ivn) == 0 &&
        b64_decode(p.payload_b64, &ct, &ctn) == 0) {
        signal_buffer *km = omemo_decrypt_key(b, a_jid, a->device_id, kd, kn, *prekey, &err);
        if (km) {
            res = payload_decrypt(signal_buffer_data(km), signal_buffer_len(km), iv, ivn, ct, ctn);
            signal_buffer_free(km);
        }
    }
    if (k)
        xmpp_free(g_ctx, k);
    free(kd);
    free(iv);
    free(ct);
    xmpp_free(g_ctx, p.iv_b64);
    xmpp_free(g_ctx, p.payload_b64);
    return res;
}

static int cmd_selftest(void)
{
    char tmpl[] = "/tmp/omemo-selftest-XXXXXX";
    if (!mkdtemp(tmpl))
        return 1;
    char *da = NULL, *db = NULL, *dc = NULL;
    if (asprintf(&da, "%s/alice", tmpl) < 0 || asprintf(&db, "%s/bob", tmpl) < 0 || asprintf(&dc, "%s/carol", tmpl) < 0)
        return 1;
    const char *aj = "alice@a.example", *bj = "bob@b.example", *cj = "carol@c.example";
    omemo_t *a = omemo_open(da), *b = omemo_open(db), *cc = omemo_open(dc);
    const char *why = NULL;
    int prekey = 0;

    xmpp_stanza_t *bb = bundle_stanza(b, 0);
    t_ok(bb && omemo_session_from_bundle(a, bj, b->device_id, bb, &why) == 0,
         "a session is built from the peer's <bundle/> (XML round trip, signature verified)");
    char *got = t_roundtrip(a, aj, b, bj, "hello bob", &prekey);
    t_ok(got && strcmp(got, "hello bob") == 0, "bob decrypts alice's first message");
    t_ok(prekey, "the first message is a PreKeySignalMessage (prekey='true')");
    free(got);
    t_ok(b->prekeys_used == 1, "the prekey used by the first message is removed from bob's store");
    got = t_roundtrip(b, bj, a, aj, "hello alice", &prekey);
    t_ok(got && strcmp(got, "hello alice") == 0 && !prekey, "bob answers with a SignalMessage; alice decrypts it");
    free(got);
    got = t_roundtrip(a, aj, b, bj, "second", &prekey);
    t_ok(got && strcmp(got, "second") == 0 && !prekey, "alice's next message is a SignalMessage");
    free(got);

    /* a second run continues the session from the files */
    omemo_close(b);
    b = omemo_open(db);
    got = t_roundtrip(a, aj, b, bj, "after restart", &prekey);
    t_ok(got && strcmp(got, "after restart") == 0, "the session persists in the state directory");
    free(got);

    xmpp_stanza_t *broken = bundle_stanza(cc, 1);
    why = NULL;
    t_ok(broken && omemo_session_from_bundle(a, cj, cc->device_id, broken, &why) < 0 && why &&
         strcmp(why, "invalid-signature") == 0, "a bundle whose signedPreKeySignature does not verify is refused");
    signal_protocol_address ca = {cj, strlen(cj), (int32_t)cc->device_id};
    t_ok(signal_protocol_session_contains_session(a->store, &ca) != 1, "no session with the broken bundle's device");

    /* tampering with the payload fails GCM authentication */
    payload_t p = {0};
    payload_encrypt("tamper", &p);
    uint8_t *ct;
    size_t ctn;
    b64_decode(p.payload_b64, &ct, &ctn);
    ct[0] ^= 1;
    char *bad = payload_decrypt(p.keytag, sizeof(p.keytag), p.iv, GCM_IV_LEN, ct, ctn);
    t_ok(bad == NULL, "AES-128-GCM: a modified payload is rejected (the tag travels with the key)");
    free(bad);
    ct[0] ^= 1;
    bad = payload_decrypt(p.keytag, sizeof(p.keytag), p.iv, GCM_IV_LEN, ct, ctn);
    t_ok(bad && strcmp(bad, "tamper") == 0 && ctn == strlen("tamper"),
         "the payload is the ciphertext without the tag (as long as the plaintext)");
    free(bad);
    free(ct);
    xmpp_free(g_ctx, p.iv_b64);
    xmpp_free(g_ctx, p.payload_b64);

    t_ok(omemo_refill_prekeys(b) == 1, "a used prekey is replaced by a new one");
    unsigned max, count;
    max_prekey_id(b, &max, &count);
    t_ok(count == PREKEY_COUNT && max == PREKEY_COUNT + 1, "the new prekey gets an id not used before");
    /* the peer uses the highest prekey (the one just made): its replacement must not get that id again */
    char *top = path_of(b, "prekey-%u", PREKEY_COUNT + 1);
    unlink(top);
    free(top);
    t_ok(omemo_refill_prekeys(b) == 1, "the highest prekey used: replaced");
    max_prekey_id(b, &max, &count);
    t_ok(count == PREKEY_COUNT && max == PREKEY_COUNT + 2, "the highest prekey used: the new one gets a fresh id");

    if (bb)
        xmpp_stanza_release(bb);
    if (broken)
        xmpp_stanza_release(broken);
    omemo_close(a);
    omemo_close(b);
    omemo_close(cc);
    char *cmd = NULL;
    if (asprintf(&cmd, "rm -rf '%s'", tmpl) >= 0 && system(cmd) != 0)
        fprintf(stderr, "omemo_client: cannot remove %s\n", tmpl);
    free(cmd);
    free(da);
    free(db);
    free(dc);
    printf("1..%d\n", t_n);
    return t_failed ? 1 : 0;
}

/* ------------------------------------------------------------------------------------------------ */

static void usage(void)
{
    fprintf(stderr, "usage: omemo_client --jid J --password P [--host H] [--port N] [--tls-trust] [--cafile F]\n"
                    "                    [--timeout S] [--verbose] --state DIR\n"
                    "                    publish [--publish-broken-bundle] | send --to JID --body TEXT |\n"
                    "                    receive --count N [--timeout S] |\n"
                    "                    muc-send --room ROOM --nick NICK --body TEXT |\n"
                    "                    muc-receive --room ROOM --nick NICK --count N [--history H]\n"
                    "       omemo_client selftest\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *jid = NULL, *password = NULL, *host = "127.0.0.1", *cafile = NULL, *state = NULL;
    const char *cmd = NULL, *to = NULL, *body = NULL, *room = NULL, *nick = NULL;
    int history = 0;
    unsigned short port = 5222;
    long flags = XMPP_CONN_FLAG_MANDATORY_TLS | XMPP_CONN_FLAG_DISABLE_SM;
    int broken = 0, count = 1;
    double timeout = 10;

    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(o, "--jid") && more) jid = argv[++i];
        else if (!strcmp(o, "--password") && more) password = argv[++i];
        else if (!strcmp(o, "--host") && more) host = argv[++i];
        else if (!strcmp(o, "--port") && more) port = (unsigned short)atoi(argv[++i]);
        else if (!strcmp(o, "--cafile") && more) cafile = argv[++i];
        else if (!strcmp(o, "--state") && more) state = argv[++i];
        else if (!strcmp(o, "--timeout") && more) timeout = atof(argv[++i]);
        else if (!strcmp(o, "--to") && more) to = argv[++i];
        else if (!strcmp(o, "--body") && more) body = argv[++i];
        else if (!strcmp(o, "--count") && more) count = atoi(argv[++i]);
        else if (!strcmp(o, "--room") && more) room = argv[++i];
        else if (!strcmp(o, "--nick") && more) nick = argv[++i];
        else if (!strcmp(o, "--history") && more) history = atoi(argv[++i]);
        else if (!strcmp(o, "--tls-trust")) flags |= XMPP_CONN_FLAG_TRUST_TLS;
        else if (!strcmp(o, "--publish-broken-bundle")) broken = 1;
        else if (!strcmp(o, "--verbose")) g_verbose = 1;
        else if (!cmd && (!strcmp(o, "publish") || !strcmp(o, "send") || !strcmp(o, "receive") ||
                          !strcmp(o, "muc-send") || !strcmp(o, "muc-receive") || !strcmp(o, "selftest"))) cmd = o;
        else {
            fprintf(stderr, "omemo_client: unknown or incomplete option %s\n", o);
            usage();
        }
    }
    if (!cmd)
        usage();
    xmpp_initialize();
    if (!strcmp(cmd, "selftest")) {
        g_ctx = xmpp_ctx_new(NULL, NULL);
        int rc = cmd_selftest();
        xmpp_ctx_free(g_ctx);
        xmpp_shutdown();
        return rc;
    }
    if (!jid || !password || !state || (!strcmp(cmd, "send") && (!to || !body)) ||
        (!strncmp(cmd, "muc-", 4) && (!room || !nick)) || (!strcmp(cmd, "muc-send") && !body))
        usage();

    client_t c = {0};
    c.timeout = timeout;
    c.want = count;
    c.room = room;
    c.nick = nick;
    c.ctx = g_ctx = xmpp_ctx_new(NULL, g_verbose ? xmpp_get_default_logger(XMPP_LEVEL_DEBUG) : NULL);
    c.conn = xmpp_conn_new(c.ctx);
    c.bare = xmpp_jid_bare(c.ctx, jid);
    c.om = omemo_open(state);
    xmpp_conn_set_flags(c.conn, flags);
    xmpp_conn_set_jid(c.conn, jid);
    xmpp_conn_set_pass(c.conn, password);
    if (cafile)
        xmpp_conn_set_cafile(c.conn, cafile);
    int rc = 1;
    if (xmpp_connect_client(c.conn, host, port, conn_handler, &c) != XMPP_EOK) {
        fprintf(stderr, "omemo_client: cannot start connecting\n");
        goto done;
    }
    double deadline = now_s() + timeout;
    while (!c.bound && !c.disconnected && now_s() < deadline)
        xmpp_run_once(c.ctx, 50);
    if (!c.bound) {
        fprintf(stderr, "omemo_client: no session (login failed or timed out)\n");
        goto done;
    }
    if (!strcmp(cmd, "publish"))
        rc = cmd_publish(&c, broken);
    else if (!strcmp(cmd, "send"))
        rc = cmd_send(&c, to, body);
    else if (!strcmp(cmd, "muc-send"))
        rc = cmd_muc_send(&c, body);
    else if (!strcmp(cmd, "muc-receive"))
        rc = cmd_muc_receive(&c, history);
    else
        rc = cmd_receive(&c);
    /* a clean end: whatever was queued is written before the stream closes */
    if (!c.disconnected) {
        xmpp_disconnect(c.conn);
        double close_deadline = now_s() + 5;
        while (!c.disconnected && now_s() < close_deadline)
            xmpp_run_once(c.ctx, 50);
    }
done:
    if (c.reply)
        xmpp_stanza_release(c.reply);
    xmpp_free(c.ctx, c.bare);
    for (int i = 0; i < c.nocc; i++) {
        free(c.occ_nick[i]);
        free(c.occ_jid[i]);
    }
    free(c.join_error);
    free(c.sent_error);
    xmpp_conn_release(c.conn);
    omemo_close(c.om);
    xmpp_ctx_free(c.ctx);
    xmpp_shutdown();
    return rc;
}
