/* modules/mod_upload.c: XEP-0363 HTTP File Upload (v1.1, urn:xmpp:http:upload:0). Each host gets a
 * component upload.<host> (listed in the host's disco#items; identity store/file; max-file-size in
 * a XEP-0128 form) that answers slot requests of the host's own accounts with a PUT and a GET URL on
 * the HTTP server (server/http.h): <base>/upload/<slot>/<filename>, the slot 128 random bits.
 *
 * - PUT: the URL carries ?e=<expiry>&s=<HMAC-SHA256 over slot, size, content type, expiry and the
 *   requesting account>, keyed with a random secret kept in the database; accepted once, before
 *   the expiry (slot_timeout), with exactly the slot's size (Content-Length) and content type. The
 *   body is streamed to data_dir/upload/<account hash>/<slot>.part and renamed when complete.
 * - GET/HEAD: Range (one range), the slot's Content-Type; Content-Disposition: attachment for
 *   anything but safe image/audio/video types (no SVG: it runs scripts); CORS for any origin,
 *   OPTIONS preflights (XEP-0363 §CORS; the PUT URL itself is the credential).
 * - quotas: max_file_size (<file-too-large/> with <max-file-size/>), quota_per_day per account in
 *   24 hours (<resource-constraint/> with <retry stamp/>), quota_per_account stored, quota_per_host.
 * - expiry: files older than max_age_days and unused slots are deleted by a timer; an account's
 *   files when the account is deleted (user-deleted: its directory). No index of files is served. */
#define _GNU_SOURCE
#include "module.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#define NS_UPLOAD "urn:xmpp:http:upload:0"
#define NS_DATA "jabber:x:data"
#define PREFIX "/upload/"
#define SLOT_HEX 32                 /* 128 bits */
#define EXPIRE_BATCH 200
#define EXPIRE_BATCHES 50            /* 10,000 rows a minute at most */

static struct upload_conf {
    long max_file_size;
    long max_age_days;
    long quota_per_day;
    long quota_per_account;
    long quota_per_host;
    long slot_timeout;
    long slots_per_day;
} conf;

static const module_option_t options[] = {
    {"max_file_size", MOPT_SIZE, offsetof(struct upload_conf, max_file_size), 10 * 1024 * 1024, 1,
     4L * 1024 * 1024 * 1024, .per_host = 1},
    {"max_age_days", MOPT_INT, offsetof(struct upload_conf, max_age_days), 14, 1, 3650, .per_host = 0},
    {"quota_per_day", MOPT_SIZE, offsetof(struct upload_conf, quota_per_day), 100L * 1024 * 1024, 0,
     1L << 40, .per_host = 1},
    {"quota_per_account", MOPT_SIZE, offsetof(struct upload_conf, quota_per_account), 1024L * 1024 * 1024, 0,
     1L << 42, .per_host = 1},
    {"quota_per_host", MOPT_SIZE, offsetof(struct upload_conf, quota_per_host), 0, 0, 1L << 50, .per_host = 1},
    {"slot_timeout", MOPT_DURATION, offsetof(struct upload_conf, slot_timeout), 300, 1, 86400, .per_host = 0},
    {"slots_per_day", MOPT_INT, offsetof(struct upload_conf, slots_per_day), 1000, 0, 1000000, .per_host = 1},
    {.name = NULL}};

/* files: one row per slot. deadline: when the row and its file go (the PUT deadline while pending,
 * upload time + max_age_days once stored). */
static const store_column_t file_cols[] = {
    {"slot", STORE_TEXT}, {"owner", STORE_TEXT}, {"host", STORE_TEXT}, {"name", STORE_TEXT},
    {"size", STORE_INT}, {"ctype", STORE_TEXT}, {"created", STORE_INT}, {"deadline", STORE_INT},
    {"done", STORE_INT}, {.name = NULL}};
enum { C_SLOT, C_OWNER, C_HOST, C_NAME, C_SIZE, C_CTYPE, C_CREATED, C_DEADLINE, C_DONE };
static const store_index_t file_idx[] = {
    {"by_owner", "owner, created"}, {"by_deadline", "deadline"}, {"by_host", "host"}, {.name = NULL}};
static const store_column_t secret_cols[] = {{"name", STORE_TEXT}, {"value", STORE_BLOB}, {.name = NULL}};
static const store_table_t tables[] = {
    {.name = "files", .columns = file_cols, .key = "slot", .account = "owner", .indexes = file_idx},
    /* .account is required; "hmac" is no account JID, so no account deletion touches it */
    {.name = "secret", .columns = secret_cols, .key = "name", .account = "name"},
    {.name = NULL}};
static const store_schema_t schema = {.version = 1, .tables = tables};

static module_ctx_t *self;
static store_t *files, *secrets;
static unsigned char key[32];
static char *dir;                   /* data_dir/upload */
static strmap_t *active;            /* slot -> 1 while a PUT writes it */
static module_timer_t *expiry_timer;

/* ---------------------------------------------------------------------------------------------- */

static int64_t now_s(void) { return (int64_t)time(NULL); }

static void hex(const unsigned char *in, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[in[i] >> 4];
        out[2 * i + 1] = d[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* The directory of an account's files: a hash of its JID, so no JID is ever a file name. */
static char *owner_dir(const char *owner)
{
    unsigned char h[SHA256_DIGEST_LENGTH];
    char hx[2 * 16 + 1];
    SHA256((const unsigned char *)owner, strlen(owner), h);
    hex(h, 16, hx);
    return xasprintf("%s/%s", dir, hx);
}

static char *file_path(const char *owner, const char *slot, const char *suffix)
{
    char *d = owner_dir(owner);
    char *p = xasprintf("%s/%s%s", d, slot, suffix);
    free(d);
    return p;
}

static void sign(const char *slot, int64_t size, const char *ctype, int64_t expiry, const char *owner, char out[65])
{
    char *msg = xasprintf("%s\n%lld\n%s\n%lld\n%s", slot, (long long)size, ctype, (long long)expiry, owner);
    unsigned char mac[32];
    unsigned int len = sizeof mac;
    HMAC(EVP_sha256(), key, sizeof key, (const unsigned char *)msg, strlen(msg), mac, &len);
    free(msg);
    hex(mac, 32, out);
}

static int valid_slot(const char *s, size_t len)
{
    if (len != SLOT_HEX) return 0;
    for (size_t i = 0; i < len; i++)
        if (!strchr("0123456789abcdef", s[i])) return 0;
    return 1;
}

static int tchar(unsigned char ch)
{
    return ch > 0x20 && ch < 0x7f && !strchr("\"(),/:;<=>?@[\\]{}", ch);
}

/* A media type (RFC 9110 8.3.1: type "/" subtype *( OWS ";" OWS [ name "=" ( token / quoted-string ) ] ))
   in a canonical form into out: type, subtype and parameter names lowercased, "; " between parameters,
   values as sent; "" for none. Controls (CR, LF) and non-ASCII are refused everywhere, so the result is
   safe in a header line. Hand-written: no Debian library parses media types without a dependency as
   large as a whole HTTP stack. 0/-1 */
static int clean_ctype(const char *in, char *out, size_t outlen)
{
    size_t w = 0;
    const unsigned char *p = (const unsigned char *)in;
#define PUT(ch) do { if (w + 1 >= outlen) return -1; out[w++] = (char)(ch); } while (0)
#define LOWER(ch) ((ch) >= 'A' && (ch) <= 'Z' ? (ch) + 32 : (ch))
    out[0] = '\0';
    if (!*p) return 0;
    size_t tl = 0;
    for (; tchar(*p); p++, tl++) PUT(LOWER(*p));
    if (!tl || *p++ != '/') return -1;
    PUT('/');
    size_t sl = 0;
    for (; tchar(*p); p++, sl++) PUT(LOWER(*p));
    if (!sl) return -1;
    for (;;) {
        while (*p == ' ' || *p == '\t') p++;
        if (!*p) break;
        if (*p++ != ';') return -1;
        while (*p == ' ' || *p == '\t') p++;
        if (!*p || *p == ';') continue;           /* an empty parameter */
        PUT(';');
        PUT(' ');
        size_t nl = 0, nstart = w;
        for (; tchar(*p); p++, nl++) PUT(LOWER(*p));
        if (!nl || *p++ != '=') return -1;
        PUT('=');
        /* the value unquoted, then written in one form (RFC 9110 §5.6.6: a token and the same
         * token quoted are equivalent; §8.3.2: charset values are case-insensitive), so that the
         * slot's type and the PUT's compare equal however each was written */
        unsigned char v[256];
        size_t vn = 0;
        if (*p == '"') {
            p++;
            for (;;) {
                if (*p == '"') break;
                if (*p == '\\') p++;              /* quoted-pair: the next character as it is */
                if (*p != '\t' && (*p < 0x20 || *p >= 0x7f)) return -1;
                if (vn + 1 >= sizeof v) return -1;
                v[vn++] = *p++;
            }
            p++;
        } else {
            for (; tchar(*p); p++) {
                if (vn + 1 >= sizeof v) return -1;
                v[vn++] = *p;
            }
            if (!vn) return -1;
        }
        int charset = nl == 7 && memcmp(out + nstart, "charset", 7) == 0;
        int token = vn > 0;
        for (size_t i = 0; i < vn; i++)
            if (!tchar(v[i])) token = 0;
        if (!token) PUT('"');
        for (size_t i = 0; i < vn; i++) {
            if (!token && (v[i] == '"' || v[i] == '\\')) PUT('\\');
            PUT(charset ? LOWER(v[i]) : v[i]);
        }
        if (!token) PUT('"');
    }
#undef PUT
#undef LOWER
    out[w] = '\0';
    return 0;
}

/* Shown inline: types a browser renders without running anything; only the type/subtype counts,
   never a parameter. */
static int safe_inline(const char *ct)
{
    static const char *const safe[] = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/avif",
                                       "image/heic", "image/bmp", NULL};
    size_t n = strcspn(ct, ";");
    for (size_t i = 0; safe[i]; i++)
        if (strlen(safe[i]) == n && strncmp(ct, safe[i], n) == 0) return 1;
    return strncmp(ct, "audio/", 6) == 0 || strncmp(ct, "video/", 6) == 0;
}

/* RFC 3986 unreserved kept, everything else %XX (the file name in URLs). */
static char *pct_encode(const char *s)
{
    size_t n = strlen(s);
    char *o = xmalloc(3 * n + 1), *w = o;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || strchr("-._~", ch))
            *w++ = (char)ch;
        else w += sprintf(w, "%%%02X", ch);
    }
    *w = '\0';
    return o;
}

/* ---------------------------------------------------------------------------------------------- */
/* quotas                                                                                          */

/* Bytes of the owner's slots created at or after `since` (0: all), how many (*nrows), and the
 * deadline of the oldest one counted (when the quota frees up). More rows than are read here
 * count as over any quota: an account must not get past its quotas with many tiny slots. */
#define USAGE_MAX_PAGES 100
#define USAGE_FULL ((int64_t)1 << 60)
static int64_t owner_usage(const char *owner, int64_t since, int by_created, int64_t *oldest, int64_t *nrows)
{
    storage_value_t prefix = STORE_VAL_TEXT(owner);
    storage_value_t after = STORE_VAL_INT(since);
    storage_value_t last[2];
    char slotbuf[SLOT_HEX + 1];
    int64_t sum = 0, n = 0;
    *oldest = 0;
    store_range_t r = {.index = "by_owner", .prefix = &prefix, .nprefix = 1, .limit = 1000};
    if (since) r.after = (store_bound_t){&after, 1, 1};
    int more = 0;
    for (int pages = 0; pages < USAGE_MAX_PAGES; pages++) {
        store_page_t page = {0};
        if (store_range(files, &r, &page) < 0) return -1;
        for (int i = 0; i < page.n; i++) {
            sum += page.rows[i]->col[C_SIZE].i;
            n++;
            int64_t when = by_created ? page.rows[i]->col[C_CREATED].i : page.rows[i]->col[C_DEADLINE].i;
            if (!*oldest || when < *oldest) *oldest = when;
        }
        more = page.more && page.n > 0;
        if (more) {     /* the next page starts after the last row: (created, slot) */
            snprintf(slotbuf, sizeof slotbuf, "%s", (const char *)page.rows[page.n - 1]->col[C_SLOT].p);
            last[0] = STORE_VAL_INT(page.rows[page.n - 1]->col[C_CREATED].i);
            last[1] = STORE_VAL_TEXT(slotbuf);
            r.after = (store_bound_t){last, 2, 0};
        }
        store_page_free(&page);
        if (!more) break;
    }
    *nrows = more ? USAGE_FULL : n;
    return more ? USAGE_FULL : sum;
}

static int64_t host_usage(const char *host)
{
    storage_value_t prefix = STORE_VAL_TEXT(host);
    int64_t sum = 0;
    char slotbuf[SLOT_HEX + 1];
    storage_value_t last;
    store_range_t r = {.index = "by_host", .prefix = &prefix, .nprefix = 1, .limit = 5000};
    int more = 0;
    for (int pages = 0; pages < 1000; pages++) {
        store_page_t page = {0};
        if (store_range(files, &r, &page) < 0) return -1;
        for (int i = 0; i < page.n; i++) sum += page.rows[i]->col[C_SIZE].i;
        more = page.more && page.n > 0;
        if (more) {
            snprintf(slotbuf, sizeof slotbuf, "%s", (const char *)page.rows[page.n - 1]->col[C_SLOT].p);
            last = STORE_VAL_TEXT(slotbuf);
            r.after = (store_bound_t){&last, 1, 0};
        }
        store_page_free(&page);
        if (!more) break;
    }
    return more ? USAGE_FULL : sum;
}

/* ---------------------------------------------------------------------------------------------- */
/* slot requests                                                                                   */

static xnode_t *error_reply(hook_event_t *ev, const char *type, const char *cond, const char *text)
{
    return stanza_error(ev->stanza, type, cond, text);
}

static xnode_t *error_child(xnode_t *err_iq)
{
    for (xnode_t *c = xnode_first_elem(err_iq); c; c = xnode_next_elem(c))
        if (strcmp(c->name, "error") == 0) return c;
    return NULL;
}

static int too_large(hook_event_t *ev, long max)
{
    char text[128], num[32];
    snprintf(text, sizeof text, "File too large. The maximum file size is %ld bytes", max);
    xnode_t *e = error_reply(ev, "modify", "not-acceptable", text);
    if (!e) return HOOK_HANDLED;
    xnode_t *f = xnode_add_elem(error_child(e), "file-too-large", NS_UPLOAD);
    snprintf(num, sizeof num, "%ld", max);
    xnode_add_text(xnode_add_elem(f, "max-file-size", NS_UPLOAD), num);
    return hook_reply(ev, e);
}

static int quota_reached(hook_event_t *ev, const char *text, int64_t retry_at)
{
    xnode_t *e = error_reply(ev, "wait", "resource-constraint", text);
    if (!e) return HOOK_HANDLED;
    if (retry_at > 0) {
        char stamp[64];
        xep0082_timestamp(stamp, sizeof stamp, retry_at);
        xnode_set_attr(xnode_add_elem(error_child(e), "retry", NS_UPLOAD), "stamp", stamp);
    }
    return hook_reply(ev, e);
}

static int on_request(hook_event_t *ev, xnode_t *req)
{
    host_t *h = component_parent(ev->component);
    const struct upload_conf *hc = module_host_conf(self, h);
    /* the host's own accounts only: an upload service is no open file host */
    if (!ev->from->node || strcmp(ev->from->domain, host_name(h)) != 0)
        return hook_reply(ev, error_reply(ev, "cancel", "not-allowed", "Only accounts of this server may upload"));
    const char *filename = xnode_attr(req, "filename");
    const char *size_s = xnode_attr(req, "size");
    const char *ctype_in = xnode_attr(req, "content-type");
    char ctype[256];
    size_t fl = filename ? strlen(filename) : 0;
    int bad_name = fl == 0 || fl > 255;
    for (size_t i = 0; i < fl && !bad_name; i++)
        if ((unsigned char)filename[i] < 0x20 || filename[i] == '/' || filename[i] == '\\' || filename[i] == 0x7f)
            bad_name = 1;
    if (bad_name) return hook_reply(ev, error_reply(ev, "modify", "bad-request", "Invalid filename"));
    char *end = NULL;
    long long size = size_s && *size_s >= '0' && *size_s <= '9' ? strtoll(size_s, &end, 10) : -1;
    if (size <= 0 || !end || *end || strlen(size_s) > 18)
        return hook_reply(ev, error_reply(ev, "modify", "bad-request", "Invalid size"));
    if (clean_ctype(ctype_in ? ctype_in : "", ctype, sizeof ctype) < 0)
        return hook_reply(ev, error_reply(ev, "modify", "bad-request", "Invalid content-type"));
    if (size > hc->max_file_size) return too_large(ev, hc->max_file_size);

    const char *owner = ev->from->bare;
    int64_t now = now_s(), oldest = 0, nrows = 0;
    if (hc->quota_per_day || hc->slots_per_day) {
        int64_t day = owner_usage(owner, now - 86400, 1, &oldest, &nrows);
        if (day < 0) return hook_reply(ev, error_reply(ev, "wait", "internal-server-error", NULL));
        /* a slot is a row and work however small its size: their number is bounded too */
        if (hc->slots_per_day && nrows >= hc->slots_per_day)
            return quota_reached(ev, "Quota reached: this account was given the most upload slots for 24 hours",
                                 oldest ? oldest + 86400 : now + 86400);
        if (hc->quota_per_day && day + size > hc->quota_per_day)
            return quota_reached(ev, "Quota reached: the uploads of the last 24 hours are at the daily limit",
                                 oldest ? oldest + 86400 : now + 86400);
    }
    if (hc->quota_per_account) {
        int64_t all = owner_usage(owner, 0, 0, &oldest, &nrows);
        if (all < 0) return hook_reply(ev, error_reply(ev, "wait", "internal-server-error", NULL));
        if (all + size > hc->quota_per_account)
            return quota_reached(ev, "Quota reached: the stored files of this account are at the limit", oldest);
    }
    if (hc->quota_per_host) {
        int64_t hs = host_usage(host_name(h));
        if (hs < 0) return hook_reply(ev, error_reply(ev, "wait", "internal-server-error", NULL));
        if (hs + size > hc->quota_per_host)
            return quota_reached(ev, "Quota reached: the upload storage of this server is full", 0);
    }

    unsigned char rnd[16];
    char slot[SLOT_HEX + 1], sig[65];
    if (RAND_bytes(rnd, sizeof rnd) != 1) return hook_reply(ev, error_reply(ev, "wait", "internal-server-error", NULL));
    hex(rnd, sizeof rnd, slot);
    int64_t expiry = now + conf.slot_timeout;
    storage_value_t row[] = {STORE_VAL_TEXT(slot), STORE_VAL_TEXT(owner), STORE_VAL_TEXT(host_name(h)),
                             STORE_VAL_TEXT(filename), STORE_VAL_INT(size), STORE_VAL_TEXT(ctype),
                             STORE_VAL_INT(now), STORE_VAL_INT(expiry), STORE_VAL_INT(0)};
    if (store_put(files, row, NULL) < 0) {
        log_error("upload", "cannot store a slot: %s", store_error(files));
        return hook_reply(ev, error_reply(ev, "wait", "internal-server-error", NULL));
    }
    sign(slot, size, ctype, expiry, owner, sig);
    const char *base = http_base_url(host_name(h));
    char *name = pct_encode(filename);
    char *get = xasprintf("%s%s%s/%s", base, PREFIX, slot, name);
    char *put = xasprintf("%s?e=%lld&s=%s", get, (long long)expiry, sig);
    free(name);
    xnode_t *r = stanza_reply(ev->stanza);
    xnode_t *s = xnode_add_elem(r, "slot", NS_UPLOAD);
    xnode_set_attr(xnode_add_elem(s, "put", NULL), "url", put);
    xnode_set_attr(xnode_add_elem(s, "get", NULL), "url", get);
    free(get);
    free(put);
    return hook_reply(ev, r);
}

/* disco#info of upload.<host>, with max-file-size in a XEP-0128 form (XEP-0363 §3). */
static int on_info(hook_event_t *ev, xnode_t *q)
{
    if (xnode_attr(q, "node")) return HOOK_PASS;
    const struct upload_conf *hc = module_host_conf(self, component_parent(ev->component));
    xnode_t *r = stanza_reply(ev->stanza);
    xnode_t *rq = xnode_add_elem(r, "query", NS_DISCO_INFO);
    xnode_t *id = xnode_add_elem(rq, "identity", NULL);
    xnode_set_attr(id, "category", "store");
    xnode_set_attr(id, "type", "file");
    xnode_set_attr(id, "name", "HTTP File Upload");
    xnode_set_attr(xnode_add_elem(rq, "feature", NULL), "var", NS_DISCO_INFO);
    xnode_set_attr(xnode_add_elem(rq, "feature", NULL), "var", NS_UPLOAD);
    xnode_t *x = xnode_add_elem(rq, "x", NS_DATA);
    xnode_set_attr(x, "type", "result");
    xnode_t *f = xnode_add_elem(x, "field", NULL);
    xnode_set_attr(f, "var", "FORM_TYPE");
    xnode_set_attr(f, "type", "hidden");
    xnode_add_text(xnode_add_elem(f, "value", NULL), NS_UPLOAD);
    f = xnode_add_elem(x, "field", NULL);
    xnode_set_attr(f, "var", "max-file-size");
    char num[32];
    snprintf(num, sizeof num, "%ld", hc->max_file_size);
    xnode_add_text(xnode_add_elem(f, "value", NULL), num);
    return hook_reply(ev, r);
}

static int on_component(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (strcmp(ev->name, "component/iq") != 0 || ev->to->node || ev->to->resource) return HOOK_PASS;
    const char *type = xnode_attr(ev->stanza, "type");
    if (!type || strcmp(type, "get") != 0) return HOOK_PASS;
    xnode_t *q = xnode_first_elem(ev->stanza);
    if (!q) return HOOK_PASS;
    if (strcmp(q->ns, NS_UPLOAD) == 0 && strcmp(q->name, "request") == 0) return on_request(ev, q);
    if (strcmp(q->ns, NS_DISCO_INFO) == 0 && strcmp(q->name, "query") == 0) return on_info(ev, q);
    return HOOK_PASS;
}

/* ---------------------------------------------------------------------------------------------- */
/* HTTP                                                                                            */

typedef struct put {
    char slot[SLOT_HEX + 1];
    char *owner, *tmp, *final;
    int fd;
    int64_t size, got;
    int ok;
} put_t;

static void cors(http_request_t *r)
{
    http_add_header(r, "Access-Control-Allow-Origin", "*");
    http_add_header(r, "Access-Control-Allow-Methods", "GET, HEAD, PUT, OPTIONS");
    http_add_header(r, "Access-Control-Allow-Headers", "Content-Type, Authorization, Cookie, Expires, Range");
    http_add_header(r, "Access-Control-Expose-Headers", "Content-Length, Content-Range, Accept-Ranges");
    http_add_header(r, "Access-Control-Max-Age", "86400");
}

static void put_free(http_request_t *r, void *arg)
{
    (void)r;
    put_t *p = arg;
    if (p->fd >= 0) close(p->fd);
    if (!p->ok && p->tmp) unlink(p->tmp);
    strmap_del(active, p->slot);
    free(p->owner);
    free(p->tmp);
    free(p->final);
    free(p);
}

static int put_data(http_request_t *r, const char *data, size_t len, void *arg)
{
    put_t *p = arg;
    if (p->got + (int64_t)len > p->size) {
        http_respond_error(r, 413);
        return -1;
    }
    while (len) {
        ssize_t w = write(p->fd, data, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            log_warn("upload", "cannot write an upload: %s", strerror(errno));
            http_respond_error(r, errno == ENOSPC || errno == EDQUOT ? 507 : 500);
            return -1;
        }
        data += w;
        len -= (size_t)w;
        p->got += w;
    }
    return 0;
}

static void put_end(http_request_t *r, void *arg)
{
    put_t *p = arg;
    if (p->got != p->size) {
        http_respond_error(r, 400);
        return;
    }
    storage_value_t k = STORE_VAL_TEXT(p->slot);
    store_row_t *row = NULL;
    if (fsync(p->fd) < 0 || close(p->fd) < 0) {
        p->fd = -1;
        http_respond_error(r, 507);
        return;
    }
    p->fd = -1;
    if (store_get(files, &k, &row) != 0) {          /* the slot went (expired, account deleted) */
        http_respond_error(r, 410);
        return;
    }
    storage_value_t v[9];
    for (int i = 0; i < 9; i++) v[i] = row->col[i];
    v[C_DEADLINE] = STORE_VAL_INT(now_s() + conf.max_age_days * 86400);
    v[C_DONE] = STORE_VAL_INT(1);
    if (rename(p->tmp, p->final) < 0 || store_put(files, v, NULL) < 0) {
        store_row_free(row);
        unlink(p->final);
        http_respond_error(r, 500);
        return;
    }
    store_row_free(row);
    p->ok = 1;
    http_respond(r, 201, NULL, NULL, 0);
}

static void do_put(http_request_t *r, const char *slot, store_row_t *row)
{
    const char *q = http_query(r);
    long long e = -1;
    char sig[65] = "", want[65];
    for (const char *s = q; s && *s;) {
        const char *amp = strchr(s, '&');
        size_t n = amp ? (size_t)(amp - s) : strlen(s);
        if (n > 2 && strncmp(s, "e=", 2) == 0) e = atoll(s + 2);
        else if (n == 66 && strncmp(s, "s=", 2) == 0) memcpy(sig, s + 2, 64), sig[64] = '\0';
        s += n + (amp ? 1 : 0);
    }
    const char *owner = row->col[C_OWNER].p;
    const char *ctype = row->col[C_CTYPE].p;
    int64_t size = row->col[C_SIZE].i;
    sign(slot, size, ctype, (int64_t)e, owner, want);
    if (e < 0 || strlen(sig) != 64 || CRYPTO_memcmp(sig, want, 64) != 0) {
        http_respond_error(r, 403);
        return;
    }
    if (row->col[C_DONE].i) {
        http_respond_error(r, 409);       /* accepted once */
        return;
    }
    if (now_s() > e || e != row->col[C_DEADLINE].i) {
        http_respond_error(r, 403);       /* the slot expired */
        return;
    }
    if (strmap_get(active, slot)) {
        http_respond_error(r, 409);       /* another PUT is writing it */
        return;
    }
    int64_t cl = http_content_length(r);
    if (cl < 0) {
        http_respond_error(r, 411);
        return;
    }
    if (cl != size) {
        http_respond_error(r, cl > size ? 413 : 400);
        return;
    }
    char ct[256];
    const char *sent = http_header(r, "Content-Type");
    if (ctype[0] && (!sent || clean_ctype(sent, ct, sizeof ct) < 0 || strcmp(ct, ctype) != 0)) {
        http_respond_error(r, 415);
        return;
    }
    put_t *p = xcalloc(1, sizeof *p);
    snprintf(p->slot, sizeof p->slot, "%s", slot);
    p->owner = xstrdup(owner);
    p->size = size;
    p->fd = -1;
    char *d = owner_dir(owner);
    if (mkdir(d, 0700) < 0 && errno != EEXIST) {
        free(d);
        free(p->owner);
        free(p);
        http_respond_error(r, 500);
        return;
    }
    free(d);
    p->tmp = file_path(owner, slot, ".part");
    p->final = file_path(owner, slot, "");
    p->fd = open(p->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    strmap_put(active, p->slot, (void *)1);
    http_request_on_free(r, put_free, p);
    if (p->fd < 0) {
        http_respond_error(r, 500);
        return;
    }
    http_read_body(r, put_data, put_end, p);
}

/* "bytes=a-b" | "bytes=a-" | "bytes=-n" against size: 1 with [*from, *to], 0 ignore (serve all), -1 416 */
static int parse_range(const char *h, int64_t size, int64_t *from, int64_t *to)
{
    if (strncmp(h, "bytes=", 6) != 0) return 0;
    h += 6;
    if (strchr(h, ',')) return 0;                 /* several ranges: the whole file (RFC 9110 allows) */
    char *end;
    if (*h == '-') {
        if (h[1] < '0' || h[1] > '9') return -1;
        long long n = strtoll(h + 1, &end, 10);
        if (*end || n <= 0) return -1;
        *from = n >= size ? 0 : size - n;
        *to = size - 1;
        return 1;
    }
    if (*h < '0' || *h > '9') return -1;
    long long a = strtoll(h, &end, 10), b = size - 1;
    if (*end != '-') return -1;
    if (end[1]) {
        if (end[1] < '0' || end[1] > '9') return -1;
        char *e2;
        b = strtoll(end + 1, &e2, 10);
        if (*e2 || b < a) return -1;
        if (b >= size) b = size - 1;
    }
    if (a >= size) return -1;
    *from = a;
    *to = b;
    return 1;
}

static void do_get(http_request_t *r, const char *slot, store_row_t *row)
{
    if (!row->col[C_DONE].i) {
        http_respond_error(r, 404);
        return;
    }
    int64_t size = row->col[C_SIZE].i;
    const char *ctype = row->col[C_CTYPE].p;
    if (!ctype[0]) ctype = "application/octet-stream";
    char *path = file_path(row->col[C_OWNER].p, slot, "");
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    free(path);
    if (fd < 0) {
        http_respond_error(r, 404);
        return;
    }
    if (!safe_inline(ctype)) {
        char *enc = pct_encode(row->col[C_NAME].p);
        char *cd = xasprintf("attachment; filename*=UTF-8''%s", enc);
        http_add_header(r, "Content-Disposition", cd);
        free(cd);
        free(enc);
    }
    http_add_header(r, "Accept-Ranges", "bytes");
    http_add_header(r, "Cache-Control", "private, max-age=604800, immutable");
    http_add_header(r, "Content-Security-Policy", "default-src 'none'; sandbox; frame-ancestors 'none'");
    int64_t from = 0, to = size - 1;
    const char *range = http_header(r, "Range");
    int rg = range ? parse_range(range, size, &from, &to) : 0;
    char cr[96];
    if (rg < 0) {
        close(fd);
        snprintf(cr, sizeof cr, "bytes */%lld", (long long)size);
        http_add_header(r, "Content-Range", cr);
        http_respond_error(r, 416);
        return;
    }
    if (rg > 0) {
        snprintf(cr, sizeof cr, "bytes %lld-%lld/%lld", (long long)from, (long long)to, (long long)size);
        http_add_header(r, "Content-Range", cr);
    }
    http_respond_file(r, rg > 0 ? 206 : 200, ctype, fd, (off_t)from, (off_t)(to - from + 1));
}

static void on_http(http_request_t *r, void *arg)
{
    (void)arg;
    http_set_log_path(r, PREFIX "...");
    cors(r);
    const char *m = http_method(r);
    if (strcmp(m, "OPTIONS") == 0) {
        http_respond(r, 204, NULL, NULL, 0);
        return;
    }
    int get = strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0, put = strcmp(m, "PUT") == 0;
    if (!get && !put) {
        http_add_header(r, "Allow", "GET, HEAD, PUT, OPTIONS");
        http_respond_error(r, 405);
        return;
    }
    const char *rest = http_path(r) + strlen(PREFIX);
    const char *slash = strchr(rest, '/');
    size_t sl = slash ? (size_t)(slash - rest) : strlen(rest);
    if (!valid_slot(rest, sl)) {          /* also "/upload/": never an index of files */
        http_respond_error(r, 404);
        return;
    }
    char slot[SLOT_HEX + 1];
    memcpy(slot, rest, SLOT_HEX);
    slot[SLOT_HEX] = '\0';
    storage_value_t k = STORE_VAL_TEXT(slot);
    store_row_t *row = NULL;
    int found = store_get(files, &k, &row);
    if (found < 0) {
        http_respond_error(r, 500);
        return;
    }
    if (found == 1 || (row->col[C_DONE].i && row->col[C_DEADLINE].i < now_s())) {
        store_row_free(row);
        http_respond_error(r, 404);
        return;
    }
    if (put) do_put(r, slot, row);
    else do_get(r, slot, row);
    store_row_free(row);
}

/* ---------------------------------------------------------------------------------------------- */
/* expiry, account deletion                                                                        */

static void remove_files(const char *owner, const char *slot)
{
    char *p = file_path(owner, slot, "");
    unlink(p);
    free(p);
    p = file_path(owner, slot, ".part");
    if (!strmap_get(active, slot)) unlink(p);
    free(p);
}

/* One batch of what is past its deadline; how many went. */
static int expire_batch(int *full)
{
    storage_value_t before = STORE_VAL_INT(now_s());
    store_range_t r = {.index = "by_deadline", .before = {&before, 1, 0}, .limit = EXPIRE_BATCH};
    store_page_t page = {0};
    *full = 0;
    if (store_range(files, &r, &page) < 0) return 0;
    int n = 0;
    for (int i = 0; i < page.n; i++) {
        const char *slot = page.rows[i]->col[C_SLOT].p;
        if (strmap_get(active, slot)) continue;         /* an upload in progress finishes first */
        remove_files(page.rows[i]->col[C_OWNER].p, slot);
        storage_value_t k = STORE_VAL_TEXT(slot);
        store_delete(files, &k);
        n++;
    }
    *full = page.n == EXPIRE_BATCH;
    store_page_free(&page);
    return n;
}

/* Batches until nothing more is due (at most EXPIRE_BATCHES a run): one batch a minute fell behind
 * slots given faster than 200 a minute, and the table grew. */
static void expire(module_timer_t *t, void *ud)
{
    (void)t; (void)ud;
    int n = 0, full = 1, got = 1;
    for (int b = 0; b < EXPIRE_BATCHES && full && got; b++) {
        got = expire_batch(&full);
        n += got;
    }
    if (n) log_debug("upload", "expired %d files and slots", n);
}

static void rm_tree(const char *d)
{
    DIR *dp = opendir(d);
    if (!dp) return;
    struct dirent *e;
    while ((e = readdir(dp))) {
        if (e->d_name[0] == '.') continue;
        char *p = xasprintf("%s/%s", d, e->d_name);
        unlink(p);
        free(p);
    }
    closedir(dp);
    rmdir(d);
}

static int on_user_deleted(hook_event_t *ev, void *ud)
{
    (void)ud;
    /* the rows went with the account (files.owner); its directory goes here */
    char *d = owner_dir(ev->to->bare);
    rm_tree(d);
    free(d);
    return HOOK_PASS;
}

/* ---------------------------------------------------------------------------------------------- */

static int load_key(void)
{
    storage_value_t k = STORE_VAL_TEXT("hmac");
    store_row_t *row = NULL;
    int rc = store_get(secrets, &k, &row);
    if (rc < 0) return -1;
    if (rc == 0 && row->col[1].len == sizeof key) {
        memcpy(key, row->col[1].p, sizeof key);
        store_row_free(row);
        return 0;
    }
    store_row_free(row);
    if (RAND_bytes(key, sizeof key) != 1) return -1;
    storage_value_t v[] = {STORE_VAL_TEXT("hmac"), STORE_VAL_BLOB(key, sizeof key)};
    return store_put(secrets, v, NULL);
}

static int load(module_ctx_t *m)
{
    self = m;
    files = module_store(m, "files");
    secrets = module_store(m, "secret");
    if (!files || !secrets || load_key() < 0) {
        log_error("upload", "cannot open the upload tables");
        return -1;
    }
    const char *base = module_data_dir(m);
    if (!base) return -1;
    dir = xstrdup(base);
    active = strmap_new();
    module_hook(m, HOOK_USER_DELETED, 0, on_user_deleted, NULL);
    expire(NULL, NULL);
    expiry_timer = module_add_timer(m, 60000, 1, expire, NULL);
    if (!http_base_url("localhost")) {
        log_info("upload", "no HTTP listener (listen.http / listen.https): no upload service is offered");
        return 0;
    }
    if (module_add_http_handler(m, PREFIX, on_http, NULL) < 0) return -1;
    for (size_t i = 0; i < host_count(); i++) {
        host_t *h = host_at(i);
        char *domain = xasprintf("upload.%s", host_name(h));
        component_t *c = module_add_component(m, h, domain, "HTTP File Upload", on_component, NULL);
        free(domain);
        if (!c) return -1;
        component_add_identity(c, "store", "file", "HTTP File Upload");
        component_add_feature(c, NS_UPLOAD);
    }
    return 0;
}

static void unload(module_ctx_t *m)
{
    (void)m;
    strmap_free(active);
    active = NULL;
    free(dir);
    dir = NULL;
    OPENSSL_cleanse(key, sizeof key);
}

const module_t civitas_module = {.abi = CIVITAS_MODULE_ABI, .name = "upload", .load = load, .unload = unload,
                                 .options = options, .conf = &conf, .conf_size = sizeof conf, .store = &schema};
