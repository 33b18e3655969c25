/* tests/bench/loadgen.c: the XMPP load generator of the benchmark (issue 6): real client streams
 * (STARTTLS or direct TLS, SCRAM-SHA-1, bind, presence) on libevent + OpenSSL, and its scenarios. */
/*
 * One process, one thread, one event loop: pin it to its own core (tests/bench/run does).
 * Scenarios (see usage()): login, idle, chat, roster, rostersetup, bound.
 *
 * Each scenario prints human-readable progress on stderr and ends with ONE line on stdout:
 *   RESULT scenario=NAME key=value key=value ...
 * which tests/bench/run turns into its table. Server figures come from /proc/PID (--server-pid):
 * CPU seconds (utime+stime of all its threads) and VmRSS.
 *
 * SCRAM: every bench user shares one password, but each account has its own salt, so the
 * SaltedPassword (PBKDF2, the expensive part of a SCRAM client) is cached by (salt, iterations),
 * in memory and optionally in a file (--scram-cache) shared by the runs against several servers.
 *
 * The XML reader is a tokenizer, not a parser: it finds the stream header and the end of each
 * depth-1 element (quotes, CDATA, comments, PIs and empty elements handled), then looks at names,
 * attributes and substrings. That is enough for the stanzas servers send and costs far less CPU
 * than the servers' own parsing, so the generator is not the first thing to saturate.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SHA1_LEN 20
#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"

/* ------------------------------------------------------------------------------------------ */
/* small helpers */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double now_s(void) { return (double)now_ns() / 1e9; }

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) die("out of memory");
    return p;
}

static void hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[in[i] >> 4];
        out[2 * i + 1] = hx[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hex_decode(const char *in, unsigned char *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(in + 2 * i, "%2x", &v) != 1) return -1;
        out[i] = (unsigned char)v;
    }
    return 0;
}

/* base64 of n bytes into out (room for 4*ceil(n/3)+1). */
static void b64_encode(const unsigned char *in, size_t n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

/* Decode base64 (no whitespace) into out (capacity cap); returns the length or -1. */
static int b64_decode(const char *in, size_t n, unsigned char *out, size_t cap)
{
    if (n % 4 || n / 4 * 3 > cap) return -1;
    int len = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
    if (len < 0) return -1;
    if (n >= 1 && in[n - 1] == '=') len--;
    if (n >= 2 && in[n - 2] == '=') len--;
    return len;
}

/* ------------------------------------------------------------------------------------------ */
/* SCRAM SaltedPassword cache, keyed by (salt, iterations) */

typedef struct spcache_ent {
    unsigned char salt[64];
    size_t salt_len;
    unsigned iter;
    int used;
    unsigned char client_key[SHA1_LEN], stored_key[SHA1_LEN], server_key[SHA1_LEN];
} spcache_ent_t;

typedef struct spcache {
    spcache_ent_t *v;
    size_t cap, n;
    unsigned long computed, hits;
    double compute_s;            /* CPU time spent in PBKDF2 */
    FILE *append;                /* new entries are appended here when --scram-cache is given */
} spcache_t;

static uint64_t spcache_hash(const unsigned char *salt, size_t len, unsigned iter)
{
    uint64_t h = 1469598103934665603ull ^ iter;
    for (size_t i = 0; i < len; i++) h = (h ^ salt[i]) * 1099511628211ull;
    return h;
}

static spcache_ent_t *spcache_slot(spcache_t *c, const unsigned char *salt, size_t len, unsigned iter)
{
    size_t i = (size_t)spcache_hash(salt, len, iter) & (c->cap - 1);
    for (;; i = (i + 1) & (c->cap - 1)) {
        spcache_ent_t *e = &c->v[i];
        if (!e->used) return e;
        if (e->iter == iter && e->salt_len == len && memcmp(e->salt, salt, len) == 0) return e;
    }
}

static void spcache_grow(spcache_t *c)
{
    spcache_ent_t *old = c->v;
    size_t oldcap = c->cap;
    c->cap = oldcap ? oldcap * 2 : 4096;
    c->v = xcalloc(c->cap, sizeof *c->v);
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].used) *spcache_slot(c, old[i].salt, old[i].salt_len, old[i].iter) = old[i];
    free(old);
}

/* Fill the derived keys of e from SaltedPassword sp. */
static void spcache_set(spcache_ent_t *e, const unsigned char *sp)
{
    unsigned int l = SHA1_LEN;
    HMAC(EVP_sha1(), sp, SHA1_LEN, (const unsigned char *)"Client Key", 10, e->client_key, &l);
    HMAC(EVP_sha1(), sp, SHA1_LEN, (const unsigned char *)"Server Key", 10, e->server_key, &l);
    SHA1(e->client_key, SHA1_LEN, e->stored_key);
}

static spcache_ent_t *spcache_insert(spcache_t *c, const unsigned char *salt, size_t len, unsigned iter,
                                     const unsigned char *sp)
{
    if ((c->n + 1) * 2 > c->cap) spcache_grow(c);
    spcache_ent_t *e = spcache_slot(c, salt, len, iter);
    if (!e->used) {
        e->used = 1;
        memcpy(e->salt, salt, len);
        e->salt_len = len;
        e->iter = iter;
        c->n++;
    }
    spcache_set(e, sp);
    return e;
}

/* Lines "salt_base64 iterations saltedpassword_hex" (what this program appends). */
static void spcache_load(spcache_t *c, const char *path)
{
    FILE *f = fopen(path, "r");
    if (f) {
        char b64[128], hx[64];
        unsigned iter;
        while (fscanf(f, "%127s %u %63s", b64, &iter, hx) == 3) {
            unsigned char salt[96], sp[SHA1_LEN];
            int sl = b64_decode(b64, strlen(b64), salt, sizeof salt);
            if (sl <= 0 || sl > 64 || strlen(hx) != 2 * SHA1_LEN || hex_decode(hx, sp, SHA1_LEN) < 0) continue;
            spcache_insert(c, salt, (size_t)sl, iter, sp);
        }
        fclose(f);
    }
    c->append = fopen(path, "a");
    if (!c->append) note("cannot append to %s: %s", path, strerror(errno));
}

static const spcache_ent_t *spcache_get(spcache_t *c, const char *password, const unsigned char *salt, size_t len,
                                        unsigned iter)
{
    if (len > 64) return NULL;
    if (c->cap) {
        spcache_ent_t *e = spcache_slot(c, salt, len, iter);
        if (e->used) {
            c->hits++;
            return e;
        }
    }
    unsigned char sp[SHA1_LEN];
    double t0 = thread_cpu_s();
    if (!PKCS5_PBKDF2_HMAC_SHA1(password, (int)strlen(password), salt, (int)len, (int)iter, SHA1_LEN, sp))
        return NULL;
    c->compute_s += thread_cpu_s() - t0;
    c->computed++;
    if (c->append) {
        char b64[128], hx[2 * SHA1_LEN + 1];
        b64_encode(salt, len, b64);
        hex_encode(sp, SHA1_LEN, hx);
        fprintf(c->append, "%s %u %s\n", b64, iter, hx);
    }
    return spcache_insert(c, salt, len, iter, sp);
}

/* ------------------------------------------------------------------------------------------ */
/* XML tokenizer */

enum { TOK_MORE = 0, TOK_HEADER, TOK_ELEMENT, TOK_END, TOK_BAD };

/* Index just past the '>' that ends the tag starting at p[i] (quotes respected), or 0. */
static size_t tag_end(const char *p, size_t n, size_t i)
{
    char q = 0;
    for (size_t j = i + 1; j < n; j++) {
        char ch = p[j];
        if (q) {
            if (ch == q) q = 0;
        } else if (ch == '"' || ch == '\'') {
            q = ch;
        } else if (ch == '>') {
            return j + 1;
        }
    }
    return 0;
}

/* Skip a <!-- -->, <![CDATA[ ]]> or <? ?> at p[i]; index after it, 0 when incomplete. */
static size_t skip_special(const char *p, size_t n, size_t i)
{
    const char *end;
    size_t elen;
    if (n - i >= 4 && memcmp(p + i, "<!--", 4) == 0) end = "-->", elen = 3;
    else if (n - i >= 9 && memcmp(p + i, "<![CDATA[", 9) == 0) end = "]]>", elen = 3;
    else if (p[i + 1] == '?') end = "?>", elen = 2;
    else if (n - i < 9) return 0;
    else return tag_end(p, n, i);        /* <!DOCTYPE ...>: never from a server, skip it anyway */
    const char *e = memmem(p + i, n - i, end, elen);
    return e ? (size_t)(e - p) + elen : 0;
}

/* Next token of a stream. in_stream: the header was seen. *used: bytes the token takes, including
 * leading whitespace. TOK_ELEMENT: the element is p[*start .. *used). */
static int xml_next(const char *p, size_t n, int in_stream, size_t *start, size_t *used)
{
    size_t i = 0;
    for (;;) {
        while (i < n && p[i] != '<') {
            if (!in_stream || p[i] == ' ' || p[i] == '\n' || p[i] == '\r' || p[i] == '\t') i++;
            else return TOK_BAD;         /* text at depth 1 */
        }
        if (i + 1 >= n) return TOK_MORE;
        if (p[i + 1] == '?' || p[i + 1] == '!') {
            size_t j = skip_special(p, n, i);
            if (!j) return TOK_MORE;
            i = j;
            continue;
        }
        break;
    }
    *start = i;
    if (!in_stream) {
        size_t j = tag_end(p, n, i);
        if (!j) return TOK_MORE;
        *used = j;
        return TOK_HEADER;
    }
    if (p[i + 1] == '/') {
        size_t j = tag_end(p, n, i);
        if (!j) return TOK_MORE;
        *used = j;
        return TOK_END;
    }
    int depth = 0;
    while (i < n) {
        if (p[i] != '<') {
            const char *lt = memchr(p + i, '<', n - i);
            if (!lt) return TOK_MORE;
            i = (size_t)(lt - p);
            continue;
        }
        if (i + 1 >= n) return TOK_MORE;
        if (p[i + 1] == '!' || p[i + 1] == '?') {
            size_t j = skip_special(p, n, i);
            if (!j) return TOK_MORE;
            i = j;
            continue;
        }
        size_t j = tag_end(p, n, i);
        if (!j) return TOK_MORE;
        if (p[i + 1] == '/') depth--;
        else if (p[j - 2] != '/') depth++;
        i = j;
        if (depth <= 0) {
            *used = j;
            return depth == 0 ? TOK_ELEMENT : TOK_BAD;
        }
    }
    return TOK_MORE;
}

/* The element's local name equals name ("stream:features" matches "features"). */
static int el_is(const char *el, size_t len, const char *name)
{
    size_t i = 1, s = 1;
    while (i < len && el[i] != ' ' && el[i] != '>' && el[i] != '/' && el[i] != '\t' && el[i] != '\n' &&
           el[i] != '\r') {
        if (el[i] == ':') s = i + 1;
        i++;
    }
    size_t nl = strlen(name);
    return i - s == nl && memcmp(el + s, name, nl) == 0;
}

/* Value of attribute `name` of the element's start tag (no entity decoding), copied into out.
 * Returns its length, or -1 when absent or longer than cap-1. */
static int el_attr(const char *el, size_t len, const char *name, char *out, size_t cap)
{
    size_t end = tag_end(el, len, 0), i = 1, nl = strlen(name);
    if (!end) return -1;
    while (i < end && !strchr(" \t\r\n/>", el[i])) i++;      /* element name */
    for (;;) {
        while (i < end && strchr(" \t\r\n", el[i])) i++;
        if (i >= end || el[i] == '/' || el[i] == '>') return -1;
        size_t ns = i;
        while (i < end && el[i] != '=' && !strchr(" \t\r\n", el[i])) i++;
        size_t ne = i;
        while (i < end && el[i] != '\'' && el[i] != '"') i++;
        if (i >= end) return -1;
        char q = el[i++];
        size_t vs = i;
        while (i < end && el[i] != q) i++;
        if (i >= end) return -1;
        size_t ve = i++;
        if (ne - ns == nl && memcmp(el + ns, name, nl) == 0) {
            if (ve - vs >= cap) return -1;
            memcpy(out, el + vs, ve - vs);
            out[ve - vs] = '\0';
            return (int)(ve - vs);
        }
    }
}

/* The text between the start tag and the next '<' (a leaf element's content); length, or -1. */
static int el_text(const char *el, size_t len, const char **txt)
{
    size_t s = tag_end(el, len, 0);
    if (!s || el[s - 2] == '/') {
        *txt = el + len;
        return 0;
    }
    const char *lt = memchr(el + s, '<', len - s);
    if (!lt) return -1;
    *txt = el + s;
    return (int)(lt - (el + s));
}

static int el_has(const char *el, size_t len, const char *s) { return memmem(el, len, s, strlen(s)) != NULL; }

/* ------------------------------------------------------------------------------------------ */
/* the generator */

enum {
    ST_FREE = 0,      /* slot unused */
    ST_CONNECTING,
    ST_FEAT1,         /* waiting for pre-TLS features */
    ST_PROCEED,       /* sent <starttls/> */
    ST_TLS,           /* TLS handshake running */
    ST_FEAT2,         /* waiting for SASL features */
    ST_CHALLENGE,     /* sent <auth/> */
    ST_SUCCESS,       /* sent the client-final message */
    ST_FEAT3,         /* waiting for post-SASL features */
    ST_BIND,
    ST_ROSTER,
    ST_PING,          /* presence sent, ping in flight: login done when it returns */
    ST_ONLINE,
    ST_DEAD           /* failed or closed */
};

typedef struct lg lg_t;

typedef struct conn {
    lg_t *lg;
    struct bufferevent *bev;
    struct event *connev;
    int fd;
    int idx;                      /* user index (0-based) within the scenario's accounts */
    int state;
    int in_stream;                /* the current stream's header has been read */
    char nonce[40];
    char cfb[160];                /* client-first-message-bare */
    unsigned char srv_sig[SHA1_LEN];
    uint64_t t_start;
    /* scenario data */
    int inflight;                 /* chat: messages sent and not yet received by the partner */
    unsigned seq;
    int subs_acked;               /* rostersetup */
} conn_t;

typedef struct opts {
    const char *host;
    int port;
    int direct_tls;
    const char *domain;
    const char *prefix;           /* account names: PREFIX1 .. PREFIXn */
    int first;                    /* number of the first account (default 1) */
    const char *password;
    int nsources;                 /* source addresses 127.1.x.y spread over */
    int concurrency;              /* logins in flight */
    pid_t server_pid;
    const char *scram_cache;
    double duration;              /* chat: seconds per phase */
    double settle;                /* idle: seconds to wait before reading RSS */
    int window;                   /* chat: messages in flight per connection */
    int contacts;                 /* roster: contacts per user */
    double timeout;               /* per scenario */
    double lat_fraction;          /* chat: open-loop rate as a fraction of the saturated rate */
    int body_size;
} opts_t;

struct lg {
    opts_t o;
    struct event_base *base;
    SSL_CTX *ctx;
    spcache_t cache;
    conn_t *conns;
    int nconns;
    /* login pacing */
    int next, end, inflight_logins;
    int roster_get;
    int online, failed, dropped;
    uint64_t t_first, t_last_online;
    char errsample[200];
    /* scenario hooks */
    void (*on_online)(conn_t *c);
    void (*on_stanza)(conn_t *c, const char *el, size_t len);
    /* chat */
    int chat_phase;               /* 0 off, 1 closed loop, 2 open loop */
    uint64_t phase_start, phase_end;
    unsigned long delivered, sent;
    uint64_t *lat;                /* latency samples (ns) */
    size_t nlat, caplat;
    /* roster */
    unsigned long presences, presences_avail;
    uint64_t t_last_presence;
    unsigned long subscribed;
};

static lg_t G;

static void conn_fail(conn_t *c, const char *why);
static void conn_send(conn_t *c, const char *s, size_t n) { bufferevent_write(c->bev, s, n); }
static void conn_sends(conn_t *c, const char *s) { conn_send(c, s, strlen(s)); }

static void send_header(conn_t *c)
{
    char buf[320];
    int n = snprintf(buf, sizeof buf,
                     "<?xml version='1.0'?><stream:stream to='%s' xmlns='jabber:client' "
                     "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
                     G.o.domain);
    c->in_stream = 0;
    conn_send(c, buf, (size_t)n);
}

static void user_name(int idx, char *out, size_t cap) { snprintf(out, cap, "%s%d", G.o.prefix, G.o.first + idx); }

/* Index of the bench account a JID belongs to (from='r12@dom/res' -> 11), or -1. */
static int jid_index(const char *jid)
{
    size_t pl = strlen(G.o.prefix);
    if (strncmp(jid, G.o.prefix, pl) != 0) return -1;
    char *end;
    long v = strtol(jid + pl, &end, 10);
    if (end == jid + pl || *end != '@') return -1;
    return (int)v - G.o.first;
}

static void login_pump(void);

static void login_done(conn_t *c)
{
    c->state = ST_ONLINE;
    G.online++;
    G.inflight_logins--;
    G.t_last_online = now_ns();
    if (G.on_online) G.on_online(c);
    login_pump();
}

/* ---- SCRAM client ---- */

static void scram_start(conn_t *c)
{
    unsigned char rnd[18];
    RAND_bytes(rnd, sizeof rnd);
    b64_encode(rnd, sizeof rnd, c->nonce);
    char user[64];
    user_name(c->idx, user, sizeof user);
    snprintf(c->cfb, sizeof c->cfb, "n=%s,r=%s", user, c->nonce);
    char first[200], b64[300], out[400];
    int n = snprintf(first, sizeof first, "n,,%s", c->cfb);
    b64_encode((unsigned char *)first, (size_t)n, b64);
    n = snprintf(out, sizeof out, "<auth xmlns='" NS_SASL "' mechanism='SCRAM-SHA-1'>%s</auth>", b64);
    conn_send(c, out, (size_t)n);
    c->state = ST_CHALLENGE;
}

static int scram_challenge(conn_t *c, const char *txt, int tlen)
{
    unsigned char sf[512];
    int sfl = b64_decode(txt, (size_t)tlen, sf, sizeof sf - 1);
    if (sfl <= 0) return -1;
    sf[sfl] = '\0';
    const char *r = NULL, *s = NULL, *i = NULL;
    char *save = NULL, copy[512];
    memcpy(copy, sf, (size_t)sfl + 1);
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (tok[0] == 'r' && tok[1] == '=') r = tok + 2;
        else if (tok[0] == 's' && tok[1] == '=') s = tok + 2;
        else if (tok[0] == 'i' && tok[1] == '=') i = tok + 2;
    }
    if (!r || !s || !i || strncmp(r, c->nonce, strlen(c->nonce)) != 0) return -1;
    unsigned char salt[96];
    int saltl = b64_decode(s, strlen(s), salt, sizeof salt);
    long iter = strtol(i, NULL, 10);
    if (saltl <= 0 || iter <= 0) return -1;
    const spcache_ent_t *e = spcache_get(&G.cache, G.o.password, salt, (size_t)saltl, (unsigned)iter);
    if (!e) return -1;
    char wo_proof[300], authmsg[1200];
    int wl = snprintf(wo_proof, sizeof wo_proof, "c=biws,r=%s", r);
    int al = snprintf(authmsg, sizeof authmsg, "%s,%s,%s", c->cfb, (char *)sf, wo_proof);
    if (wl >= (int)sizeof wo_proof || al >= (int)sizeof authmsg) return -1;
    unsigned char sig[SHA1_LEN], proof[SHA1_LEN];
    unsigned int l = SHA1_LEN;
    HMAC(EVP_sha1(), e->stored_key, SHA1_LEN, (unsigned char *)authmsg, (size_t)al, sig, &l);
    for (int k = 0; k < SHA1_LEN; k++) proof[k] = e->client_key[k] ^ sig[k];
    HMAC(EVP_sha1(), e->server_key, SHA1_LEN, (unsigned char *)authmsg, (size_t)al, c->srv_sig, &l);
    char final[400], pb64[40], fb64[600], out[700];
    b64_encode(proof, SHA1_LEN, pb64);
    int fl = snprintf(final, sizeof final, "%s,p=%s", wo_proof, pb64);
    b64_encode((unsigned char *)final, (size_t)fl, fb64);
    int n = snprintf(out, sizeof out, "<response xmlns='" NS_SASL "'>%s</response>", fb64);
    conn_send(c, out, (size_t)n);
    c->state = ST_SUCCESS;
    return 0;
}

/* Check "v=<ServerSignature>" from <success/> or a final <challenge/>. */
static int scram_verify(conn_t *c, const char *txt, int tlen)
{
    unsigned char v[128];
    int vl = b64_decode(txt, (size_t)tlen, v, sizeof v - 1);
    if (vl < 3 || v[0] != 'v' || v[1] != '=') return -1;
    unsigned char sig[64];
    int sl = b64_decode((char *)v + 2, (size_t)vl - 2, sig, sizeof sig);
    return sl == SHA1_LEN && memcmp(sig, c->srv_sig, SHA1_LEN) == 0 ? 0 : -1;
}

/* ---- the login state machine ---- */

static void on_read(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);

static void start_tls(conn_t *c)
{
    SSL *ssl = SSL_new(G.ctx);
    if (!ssl) {
        conn_fail(c, "SSL_new");
        return;
    }
    SSL_set_tlsext_host_name(ssl, G.o.domain);
    if (c->bev) bufferevent_free(c->bev);       /* plain bufferevent: does not close the fd */
    c->bev = bufferevent_openssl_socket_new(G.base, c->fd, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        SSL_free(ssl);
        conn_fail(c, "bufferevent_openssl_socket_new");
        return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->state = ST_TLS;
}

static void send_presence_and_ping(conn_t *c)
{
    conn_sends(c, "<presence/><iq type='get' id='lgp'><ping xmlns='urn:xmpp:ping'/></iq>");
    c->state = ST_PING;
}

/* Answer the server's IQ requests (roster pushes, pings) so that it never waits on us. */
static void answer_iq(conn_t *c, const char *el, size_t len)
{
    char type[16], id[128], from[256], out[512];
    if (el_attr(el, len, "type", type, sizeof type) < 0) return;
    if (strcmp(type, "get") != 0 && strcmp(type, "set") != 0) return;
    if (el_attr(el, len, "id", id, sizeof id) < 0) return;
    int n;
    if (el_attr(el, len, "from", from, sizeof from) >= 0)
        n = snprintf(out, sizeof out, "<iq type='result' id='%s' to='%s'/>", id, from);
    else
        n = snprintf(out, sizeof out, "<iq type='result' id='%s'/>", id);
    conn_send(c, out, (size_t)n);
}

/* One depth-1 element in a login state. Returns -1 when the connection was failed. */
static int handle_login_element(conn_t *c, const char *el, size_t len)
{
    const char *txt;
    int tl;
    char id[32], type[16];
    switch (c->state) {
    case ST_FEAT1:
        if (!el_is(el, len, "features")) break;
        if (!el_has(el, len, "starttls")) return conn_fail(c, "no STARTTLS offered"), -1;
        conn_sends(c, "<starttls xmlns='" NS_TLS "'/>");
        c->state = ST_PROCEED;
        return 0;
    case ST_PROCEED:
        if (!el_is(el, len, "proceed")) return conn_fail(c, "STARTTLS refused"), -1;
        start_tls(c);
        return c->state == ST_TLS ? 1 : -1;       /* 1: stop reading the old bufferevent */
    case ST_FEAT2:
        if (!el_is(el, len, "features")) break;
        if (!el_has(el, len, ">SCRAM-SHA-1<")) return conn_fail(c, "SCRAM-SHA-1 not offered"), -1;
        scram_start(c);
        return 0;
    case ST_CHALLENGE:
        if (!el_is(el, len, "challenge")) return conn_fail(c, "SASL failure (first step)"), -1;
        tl = el_text(el, len, &txt);
        if (tl <= 0 || scram_challenge(c, txt, tl) < 0) return conn_fail(c, "bad server-first-message"), -1;
        return 0;
    case ST_SUCCESS:
        if (el_is(el, len, "challenge")) {       /* RFC 6120 §6.3.10: final data in a challenge */
            tl = el_text(el, len, &txt);
            if (tl <= 0 || scram_verify(c, txt, tl) < 0) return conn_fail(c, "bad server signature"), -1;
            conn_sends(c, "<response xmlns='" NS_SASL "'/>");
            return 0;
        }
        if (!el_is(el, len, "success")) {
            char msg[200];
            snprintf(msg, sizeof msg, "SASL failure: %.*s", (int)(len < 150 ? len : 150), el);
            return conn_fail(c, msg), -1;
        }
        tl = el_text(el, len, &txt);
        if (tl > 0 && scram_verify(c, txt, tl) < 0) return conn_fail(c, "bad server signature"), -1;
        send_header(c);
        c->state = ST_FEAT3;
        return 1;                                  /* a new stream: re-tokenize from its header */
    case ST_FEAT3:
        if (!el_is(el, len, "features")) break;
        if (!el_has(el, len, "bind")) return conn_fail(c, "no bind offered"), -1;
        conn_sends(c, "<iq type='set' id='lgb'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                      "<resource>lg</resource></bind></iq>");
        c->state = ST_BIND;
        return 0;
    case ST_BIND:
        if (!el_is(el, len, "iq") || el_attr(el, len, "id", id, sizeof id) < 0 || strcmp(id, "lgb") != 0) break;
        if (el_attr(el, len, "type", type, sizeof type) < 0 || strcmp(type, "result") != 0)
            return conn_fail(c, "bind failed"), -1;
        if (G.roster_get) {
            conn_sends(c, "<iq type='get' id='lgr'><query xmlns='jabber:iq:roster'/></iq>");
            c->state = ST_ROSTER;
        } else {
            send_presence_and_ping(c);
        }
        return 0;
    case ST_ROSTER:
        if (!el_is(el, len, "iq") || el_attr(el, len, "id", id, sizeof id) < 0 || strcmp(id, "lgr") != 0) break;
        send_presence_and_ping(c);
        return 0;
    case ST_PING:
        if (el_is(el, len, "iq") && el_attr(el, len, "id", id, sizeof id) >= 0 && strcmp(id, "lgp") == 0) {
            login_done(c);
            return 0;
        }
        break;
    default:
        break;
    }
    /* anything else: stream errors end the login, IQ requests get an answer, the rest goes to
     * the scenario once the session is bound */
    if (el_is(el, len, "error") && c->state < ST_ONLINE) {
        char msg[200];
        snprintf(msg, sizeof msg, "stream error: %.*s", (int)(len < 150 ? len : 150), el);
        return conn_fail(c, msg), -1;
    }
    if (el_is(el, len, "iq")) answer_iq(c, el, len);
    if (c->state >= ST_PING && G.on_stanza) G.on_stanza(c, el, len);
    return 0;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    conn_t *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        size_t n = evbuffer_get_length(in);
        if (n == 0) return;
        const char *p = (const char *)evbuffer_pullup(in, -1);
        size_t start = 0, used = 0;
        int tok = xml_next(p, n, c->in_stream, &start, &used);
        if (tok == TOK_MORE) {
            if (n > 4u << 20) conn_fail(c, "element over 4 MiB");
            return;
        }
        if (tok == TOK_BAD) {
            conn_fail(c, "malformed XML from the server");
            return;
        }
        if (tok == TOK_END) {
            conn_fail(c, "stream closed by the server");
            return;
        }
        if (tok == TOK_HEADER) {
            c->in_stream = 1;
            evbuffer_drain(in, used);
            continue;
        }
        int r = handle_login_element(c, p + start, used - start);
        if (r < 0) return;                          /* c failed: bev freed */
        if (r > 0 && c->state == ST_TLS) return;   /* old bev freed by start_tls */
        evbuffer_drain(in, used);
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    conn_t *c = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        if (c->state == ST_TLS) {
            send_header(c);
            c->state = ST_FEAT2;
        }
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        char msg[200];
        unsigned long e = bufferevent_get_openssl_error(bev);
        if (e) {
            char eb[120];
            ERR_error_string_n(e, eb, sizeof eb);
            snprintf(msg, sizeof msg, "TLS error in state %d: %s", c->state, eb);
        } else if (what & BEV_EVENT_EOF) {
            snprintf(msg, sizeof msg, "connection closed by the server in state %d", c->state);
        } else {
            snprintf(msg, sizeof msg, "socket error in state %d: %s", c->state, strerror(errno));
        }
        conn_fail(c, msg);
    }
}

static void conn_close(conn_t *c)
{
    if (c->connev) {
        event_free(c->connev);
        c->connev = NULL;
    }
    if (c->bev) {
        bufferevent_free(c->bev);     /* closes the fd (CLOSE_ON_FREE) */
        c->bev = NULL;
    } else if (c->fd >= 0) {
        close(c->fd);
    }
    c->fd = -1;
}

static void conn_fail(conn_t *c, const char *why)
{
    int was = c->state;
    conn_close(c);
    c->state = ST_DEAD;
    if (was == ST_ONLINE) {
        G.online--;
        G.dropped++;
        if (!G.errsample[0]) snprintf(G.errsample, sizeof G.errsample, "%s", why);
        return;
    }
    if (was >= ST_CONNECTING && was < ST_ONLINE) {
        G.failed++;
        G.inflight_logins--;
        if (!G.errsample[0]) snprintf(G.errsample, sizeof G.errsample, "%s", why);
        login_pump();
    }
}

/* Plain bufferevent on a connected socket: send the header (or start TLS for direct TLS). */
static void conn_connected(conn_t *c)
{
    if (G.o.direct_tls) {
        start_tls(c);
        return;
    }
    c->bev = bufferevent_socket_new(G.base, c->fd, 0);   /* not CLOSE_ON_FREE: TLS takes the fd over */
    if (!c->bev) {
        conn_fail(c, "bufferevent_socket_new");
        return;
    }
    bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    send_header(c);
    c->state = ST_FEAT1;
}

static void on_connect_ready(evutil_socket_t fd, short what, void *arg)
{
    conn_t *c = arg;
    (void)what;
    int err = 0;
    socklen_t l = sizeof err;
    event_free(c->connev);
    c->connev = NULL;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0 || err) {
        char msg[120];
        snprintf(msg, sizeof msg, "connect: %s", strerror(err ? err : errno));
        conn_fail(c, msg);
        return;
    }
    conn_connected(c);
}

/* Source address number k: 127.1.x.y, skipping .0 and .255 in the last byte. */
static void source_addr(int k, struct sockaddr_in *sa)
{
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    uint32_t a = (127u << 24) | (1u << 16) | ((uint32_t)(k / 254) << 8) | (uint32_t)(k % 254 + 1);
    sa->sin_addr.s_addr = htonl(a);
}

static void conn_start(int idx)
{
    conn_t *c = &G.conns[idx];
    memset(c, 0, sizeof *c);
    c->lg = &G;
    c->idx = idx;
    c->fd = -1;
    c->state = ST_CONNECTING;
    c->t_start = now_ns();
    G.inflight_logins++;
    if (!G.t_first) G.t_first = c->t_start;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        conn_fail(c, strerror(errno));
        return;
    }
    c->fd = fd;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
#ifdef IP_BIND_ADDRESS_NO_PORT
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
#endif
    if (G.o.nsources > 0) {
        struct sockaddr_in src;
        source_addr(idx % G.o.nsources, &src);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
            char msg[120];
            snprintf(msg, sizeof msg, "bind source: %s", strerror(errno));
            conn_fail(c, msg);
            return;
        }
    }
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)G.o.port)};
    inet_pton(AF_INET, G.o.host, &dst.sin_addr);
    if (connect(fd, (struct sockaddr *)&dst, sizeof dst) == 0) {
        conn_connected(c);
        return;
    }
    if (errno != EINPROGRESS) {
        char msg[120];
        snprintf(msg, sizeof msg, "connect: %s", strerror(errno));
        conn_fail(c, msg);
        return;
    }
    c->connev = event_new(G.base, fd, EV_WRITE, on_connect_ready, c);
    event_add(c->connev, NULL);
}

/* Start logins until `concurrency` are in flight or every account up to G.end has been tried. */
static void login_pump(void)
{
    static int pumping;
    if (pumping) return;          /* a synchronous failure inside conn_start re-enters */
    pumping = 1;
    while (G.next < G.end && G.inflight_logins < G.o.concurrency) conn_start(G.next++);
    pumping = 0;
}

/* ---- running the loop until a condition holds ---- */

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* Run the loop until cond() or `timeout` seconds; 0 when cond() holds. */
static int run_until(int (*cond)(void), double timeout)
{
    double deadline = now_s() + timeout;
    while (!cond()) {
        if (now_s() >= deadline) return -1;
        event_base_loop(G.base, EVLOOP_ONCE);
    }
    return 0;
}

static int cond_never(void) { return 0; }
static void run_for(double seconds) { run_until(cond_never, seconds); }

static int cond_logins_done(void) { return G.next >= G.end && G.inflight_logins == 0; }

/* Log in accounts [from, to) with the configured concurrency; returns when all are online or
 * failed (or the scenario timeout passes). */
static void login_range(int from, int to)
{
    G.next = from;
    G.end = to;
    login_pump();
    if (run_until(cond_logins_done, G.o.timeout) < 0)
        note("timeout: %d logins still in flight after %.0f s", G.inflight_logins, G.o.timeout);
}

static void close_all(void)
{
    for (int i = 0; i < G.nconns; i++)
        if (G.conns[i].state != ST_FREE && G.conns[i].state != ST_DEAD) {
            conn_close(&G.conns[i]);
            G.conns[i].state = ST_DEAD;
        }
    G.online = 0;
    G.inflight_logins = 0;
    /* let libevent finish freeing the bufferevents */
    event_base_loop(G.base, EVLOOP_NONBLOCK);
}

/* ---- server figures from /proc ---- */

static double server_cpu(void)
{
    if (G.o.server_pid <= 0) return 0;
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)G.o.server_pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');        /* comm may contain spaces */
    if (!p) return -1;
    unsigned long long ut = 0, st = 0;
    /* after ") ": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long server_rss_kb(void)
{
    if (G.o.server_pid <= 0) return 0;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)G.o.server_pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

/* Busy CPU seconds of the whole machine (all cores) from /proc/stat: with the server's and our own
 * CPU subtracted, what other processes took during a measurement (a noisy machine shows here). */
static double machine_busy_s(void)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    unsigned long long v[10] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
                   &v[5], &v[6], &v[7], &v[8], &v[9]);
    fclose(f);
    if (n < 8) return 0;
    /* user nice system idle iowait irq softirq steal: processes' time is user+nice+system; irq and
     * softirq time (loopback TCP of our own traffic, mostly) is charged to no process, so leave it out */
    unsigned long long busy = v[0] + v[1] + v[2] + v[7];
    return (double)busy / (double)sysconf(_SC_CLK_TCK);
}

static int server_alive(void) { return G.o.server_pid <= 0 || kill(G.o.server_pid, 0) == 0; }

/* ------------------------------------------------------------------------------------------ */
/* scenarios */

static void setup_conns(int n)
{
    G.conns = xcalloc((size_t)n, sizeof *G.conns);
    G.nconns = n;
    for (int i = 0; i < n; i++) G.conns[i].fd = -1;
}

static double busy0;             /* machine_busy_s() when the measurement started */

static void print_common(double wall, double scpu, double gcpu)
{
    double other = machine_busy_s() - busy0 - scpu - gcpu;
    printf(" wall_s=%.3f server_cpu_s=%.3f gen_cpu_s=%.3f other_cpu_s=%.3f online=%d failed=%d dropped=%d"
           " pbkdf2_computed=%lu pbkdf2_cached=%lu",
           wall, scpu, gcpu, other > 0 ? other : 0, G.online, G.failed, G.dropped, G.cache.computed, G.cache.hits);
}

static void print_err(void)
{
    if (G.errsample[0]) note("first error: %s", G.errsample);
    if (!server_alive()) note("the server process %d is gone", (int)G.o.server_pid);
}

/* login N: N sessions log in (and stay), as fast as the server takes them. */
static int scen_login(int n)
{
    setup_conns(n);
    double c0 = server_cpu(), g0 = self_cpu_s();
    busy0 = machine_busy_s();
    login_range(0, n);
    double wall = (double)(G.t_last_online - G.t_first) / 1e9;
    double scpu = server_cpu() - c0, gcpu = self_cpu_s() - g0;
    printf("RESULT scenario=login n=%d logins_per_s=%.1f logins_per_server_cpu_s=%.1f", n,
           wall > 0 ? G.online / wall : 0, scpu > 0 ? G.online / scpu : 0);
    print_common(wall, scpu, gcpu);
    printf("\n");
    print_err();
    close_all();
    return G.failed ? 1 : 0;
}

/* idle N: RSS of the server with N authenticated idle sessions minus RSS with none, per session. */
static int scen_idle(int n)
{
    int warm = n < 20 ? n : 20;
    setup_conns(n);
    /* warm-up: the first logins load code and fill caches that later ones reuse */
    login_range(0, warm);
    close_all();
    run_for(G.o.settle);
    long rss0 = server_rss_kb();
    double c0 = server_cpu(), g0 = self_cpu_s();
    busy0 = machine_busy_s();
    G.t_first = 0;
    G.failed = 0;
    login_range(0, n);
    double wall = (double)(G.t_last_online - G.t_first) / 1e9;
    double scpu = server_cpu() - c0, gcpu = self_cpu_s() - g0;
    double busy1 = machine_busy_s();
    run_for(G.o.settle);
    long rss1 = server_rss_kb();
    busy0 += machine_busy_s() - busy1;     /* the settling time is not part of the measurement */
    int online = G.online;
    printf("RESULT scenario=idle n=%d rss0_kb=%ld rss1_kb=%ld kb_per_session=%.1f logins_per_s=%.1f", n, rss0,
           rss1, online > 0 ? (double)(rss1 - rss0) / online : 0, wall > 0 ? online / wall : 0);
    print_common(wall, scpu, gcpu);
    printf("\n");
    print_err();
    close_all();
    return G.failed || G.dropped ? 1 : 0;
}

/* ---- chat ---- */

static char **chat_to;            /* bare JID of each connection's partner */

static void chat_send(conn_t *c)
{
    char buf[1024];
    int n = snprintf(buf, sizeof buf, "<message to='%s' type='chat' id='c%u'><body>T:%" PRIu64 " ",
                     chat_to[c->idx], c->seq++, now_ns());
    int pad = G.o.body_size - 24;
    if (pad < 0) pad = 0;
    if (pad > (int)sizeof buf - n - 40) pad = (int)sizeof buf - n - 40;
    static const char filler[] = "the quick brown fox jumps over the lazy dog ";
    for (int k = 0; k < pad; k++) buf[n++] = filler[k % (sizeof filler - 1)];
    n += snprintf(buf + n, sizeof buf - (size_t)n, "</body></message>");
    conn_send(c, buf, (size_t)n);
    c->inflight++;
    G.sent++;
}

static void lat_add(uint64_t v)
{
    if (G.nlat == G.caplat) {
        G.caplat = G.caplat ? G.caplat * 2 : 1 << 16;
        G.lat = realloc(G.lat, G.caplat * sizeof *G.lat);
        if (!G.lat) die("out of memory");
    }
    G.lat[G.nlat++] = v;
}

static void chat_stanza(conn_t *c, const char *el, size_t len)
{
    if (!el_is(el, len, "message")) return;
    const char *t = memmem(el, len, "T:", 2);
    if (!t) return;
    uint64_t ts = strtoull(t + 2, NULL, 10), now = now_ns();
    conn_t *from = &G.conns[c->idx ^ 1];
    if (from->inflight > 0) from->inflight--;
    if (G.chat_phase && ts >= G.phase_start && now <= G.phase_end) {
        G.delivered++;
        lat_add(now - ts);
    }
    /* closed loop: the sender refills its window as soon as one of its messages arrives */
    if (G.chat_phase == 1 && from->state == ST_ONLINE)
        while (from->inflight < G.o.window) chat_send(from);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_ms(double p)
{
    if (!G.nlat) return 0;
    size_t i = (size_t)(p * (double)(G.nlat - 1) + 0.5);
    return (double)G.lat[i] / 1e6;
}

/* One measured phase: counters reset, run `dur` seconds, figures out. */
typedef struct phase_res {
    double rate, rate_per_cpu, scpu, gcpu, busy, wall, p50, p99, p999, max;
    unsigned long n;
} phase_res_t;

static int open_loop_idx;
static double open_loop_rate;
static uint64_t open_loop_t0;
static unsigned long open_loop_sent;

static void open_loop_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (G.chat_phase != 2) return;
    double el = (double)(now_ns() - open_loop_t0) / 1e9;
    unsigned long due = (unsigned long)(el * open_loop_rate);
    int guard = 0;
    while (open_loop_sent < due && guard < G.nconns * 4) {
        conn_t *c = &G.conns[open_loop_idx];
        open_loop_idx = (open_loop_idx + 1) % G.nconns;
        guard++;
        if (c->state != ST_ONLINE) continue;
        chat_send(c);
        open_loop_sent++;
    }
}

static phase_res_t chat_phase(int phase, double dur, double rate)
{
    phase_res_t r = {0};
    G.nlat = 0;
    G.delivered = 0;
    uint64_t warm = (uint64_t)(0.5e9);            /* let the pipeline fill before counting */
    G.chat_phase = phase;
    G.phase_start = now_ns() + warm;
    G.phase_end = G.phase_start + (uint64_t)(dur * 1e9);
    struct event *tick = NULL;
    if (phase == 1) {
        for (int i = 0; i < G.nconns; i++)
            if (G.conns[i].state == ST_ONLINE)
                while (G.conns[i].inflight < G.o.window) chat_send(&G.conns[i]);
    } else {
        open_loop_rate = rate;
        open_loop_t0 = now_ns();
        open_loop_sent = 0;
        tick = event_new(G.base, -1, EV_PERSIST, open_loop_tick, NULL);
        struct timeval tv = {0, 1000};
        event_add(tick, &tv);
    }
    run_for(0.5);
    double c0 = server_cpu(), g0 = self_cpu_s(), b0 = machine_busy_s();
    run_for(dur);
    r.scpu = server_cpu() - c0;
    r.gcpu = self_cpu_s() - g0;
    r.busy = machine_busy_s() - b0;
    r.wall = dur;
    G.chat_phase = 0;              /* stop sending; let what is in flight arrive */
    if (tick) event_free(tick);
    run_for(1.0);
    r.n = G.delivered;
    r.rate = (double)G.delivered / dur;
    r.rate_per_cpu = r.scpu > 0 ? (double)G.delivered / r.scpu : 0;
    qsort(G.lat, G.nlat, sizeof *G.lat, cmp_u64);
    r.p50 = pct_ms(0.50);
    r.p99 = pct_ms(0.99);
    r.p999 = pct_ms(0.999);
    r.max = G.nlat ? (double)G.lat[G.nlat - 1] / 1e6 : 0;
    return r;
}

static int scen_chat(int pairs)
{
    int n = 2 * pairs;
    setup_conns(n);
    chat_to = xcalloc((size_t)n, sizeof *chat_to);
    for (int i = 0; i < n; i++) {
        char u[64];
        user_name(i ^ 1, u, sizeof u);
        if (asprintf(&chat_to[i], "%s@%s", u, G.o.domain) < 0) die("out of memory");
    }
    G.on_stanza = chat_stanza;
    login_range(0, n);
    if (G.online != n) {
        print_err();
        printf("RESULT scenario=chat pairs=%d error=login_failed\n", pairs);
        return 1;
    }
    phase_res_t sat = chat_phase(1, G.o.duration, 0);
    note("closed loop (window %d per connection): %.0f msg/s delivered, server CPU %.2f s in %.1f s, "
         "latency p50 %.2f ms p99 %.2f ms", G.o.window, sat.rate, sat.scpu, sat.wall, sat.p50, sat.p99);
    /* drain stragglers, reset windows */
    for (int i = 0; i < n; i++) G.conns[i].inflight = 0;
    double target = sat.rate * G.o.lat_fraction;
    phase_res_t ol = chat_phase(2, G.o.duration, target);
    note("open loop at %.0f msg/s: %.0f delivered/s, latency p50 %.2f p99 %.2f p99.9 %.2f max %.2f ms", target,
         ol.rate, ol.p50, ol.p99, ol.p999, ol.max);
    printf("RESULT scenario=chat pairs=%d window=%d msgs_per_s=%.1f msgs_per_server_cpu_s=%.1f sat_p50_ms=%.3f"
           " sat_p99_ms=%.3f lat_rate=%.1f lat_delivered_per_s=%.1f p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f"
           " lat_server_cpu_s=%.3f",
           pairs, G.o.window, sat.rate, sat.rate_per_cpu, sat.p50, sat.p99, target, ol.rate, ol.p50, ol.p99,
           ol.p999, ol.max, ol.scpu);
    busy0 = machine_busy_s() - sat.busy;
    print_common(sat.wall, sat.scpu, sat.gcpu);
    printf("\n");
    print_err();
    close_all();
    return G.dropped ? 1 : 0;
}

/* ---- roster: users with `contacts` contacts each (a ring: i±1..i±contacts/2) logging in ---- */

static int self_presence(conn_t *c, const char *el, size_t len)
{
    char from[256];
    if (el_attr(el, len, "from", from, sizeof from) < 0) return 1;
    return jid_index(from) == c->idx;
}

static void roster_stanza(conn_t *c, const char *el, size_t len)
{
    if (!el_is(el, len, "presence") || self_presence(c, el, len)) return;
    char type[32];
    G.presences++;
    if (el_attr(el, len, "type", type, sizeof type) < 0) G.presences_avail++;
    G.t_last_presence = now_ns();
}

static unsigned long roster_expected;
static int cond_presences_done(void) { return G.presences_avail >= roster_expected; }

static int scen_roster(int n)
{
    if (n <= G.o.contacts) die("roster: need more users (%d) than contacts (%d)", n, G.o.contacts);
    setup_conns(n);
    G.on_stanza = roster_stanza;
    G.roster_get = 1;
    roster_expected = (unsigned long)n * (unsigned long)(G.o.contacts / 2 * 2);
    double c0 = server_cpu(), g0 = self_cpu_s();
    busy0 = machine_busy_s();
    login_range(0, n);
    double login_wall = (double)(G.t_last_online - G.t_first) / 1e9;
    /* presences may still be on their way; wait for all (or a quiet second) */
    for (;;) {
        unsigned long before = G.presences;
        if (run_until(cond_presences_done, 1.0) == 0 || G.presences == before) break;
    }
    uint64_t t_end = G.t_last_presence > G.t_last_online ? G.t_last_presence : G.t_last_online;
    double wall = (double)(t_end - G.t_first) / 1e9;
    double scpu = server_cpu() - c0, gcpu = self_cpu_s() - g0;
    printf("RESULT scenario=roster n=%d contacts=%d presences=%lu available=%lu expected=%lu"
           " presences_per_s=%.1f available_per_s=%.1f available_per_server_cpu_s=%.1f logins_per_s=%.1f",
           n, G.o.contacts, G.presences, G.presences_avail, roster_expected, wall > 0 ? G.presences / wall : 0,
           wall > 0 ? G.presences_avail / wall : 0, scpu > 0 ? G.presences_avail / scpu : 0,
           login_wall > 0 ? G.online / login_wall : 0);
    print_common(wall, scpu, gcpu);
    printf("\n");
    if (G.presences_avail < roster_expected)
        note("only %lu of %lu expected presences arrived: are the rosters provisioned?", G.presences_avail,
             roster_expected);
    print_err();
    close_all();
    return G.failed || G.presences_avail < roster_expected ? 1 : 0;
}

/* rostersetup N: make the ring's subscriptions through the protocol (RFC 6121 §3): i asks each
 * higher neighbour j; j approves and asks back; i approves. Done when every user has received
 * `subscribed` from each of its contacts. For servers whose storage we cannot write directly. */
static int ring_distance(int a, int b, int n)
{
    int d = ((b - a) % n + n) % n;
    return d;
}

static void presence_to(conn_t *c, int other, const char *type)
{
    char u[64], buf[256];
    user_name(other, u, sizeof u);
    int k = snprintf(buf, sizeof buf, "<presence to='%s@%s' type='%s'/>", u, G.o.domain, type);
    conn_send(c, buf, (size_t)k);
}

static void setup_online(conn_t *c)
{
    int half = G.o.contacts / 2;
    for (int d = 1; d <= half; d++) presence_to(c, (c->idx + d) % G.nconns, "subscribe");
}

static void setup_stanza(conn_t *c, const char *el, size_t len)
{
    if (!el_is(el, len, "presence")) return;
    char type[32], from[256];
    if (el_attr(el, len, "type", type, sizeof type) < 0 || el_attr(el, len, "from", from, sizeof from) < 0) return;
    int o = jid_index(from);
    if (o < 0 || o >= G.nconns) return;
    int half = G.o.contacts / 2;
    if (strcmp(type, "subscribe") == 0) {
        presence_to(c, o, "subscribed");
        int d = ring_distance(o, c->idx, G.nconns);      /* o asked first: ask back */
        if (d >= 1 && d <= half) presence_to(c, o, "subscribe");
    } else if (strcmp(type, "subscribed") == 0) {
        c->subs_acked++;
        G.subscribed++;
    }
}

static unsigned long setup_expected;
static int cond_setup_done(void) { return G.subscribed >= setup_expected; }

static int scen_rostersetup(int n)
{
    if (n <= G.o.contacts) die("rostersetup: need more users (%d) than contacts (%d)", n, G.o.contacts);
    setup_conns(n);
    G.on_stanza = setup_stanza;
    setup_expected = (unsigned long)n * (unsigned long)(G.o.contacts / 2 * 2);
    login_range(0, n);
    for (int i = 0; i < n; i++)
        if (G.conns[i].state == ST_ONLINE) setup_online(&G.conns[i]);
    int r = run_until(cond_setup_done, G.o.timeout);
    printf("RESULT scenario=rostersetup n=%d contacts=%d subscribed=%lu expected=%lu%s\n", n, G.o.contacts,
           G.subscribed, setup_expected, r < 0 ? " error=timeout" : "");
    print_err();
    run_for(0.5);                  /* roster pushes and their answers */
    close_all();
    return r < 0 ? 1 : 0;
}

/* ---- bound: what TLS + SCRAM-SHA-1 cost on one core, measured in-process ---- */

static EVP_PKEY *bound_key(void)
{
    return EVP_EC_gen("P-256");
}

static X509 *bound_cert(EVP_PKEY *k, const char *cn)
{
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, k);
    X509_NAME *nm = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, nm);
    X509_sign(x, k, EVP_sha256());
    return x;
}

/* Drive one client/server handshake over a BIO pair; adds each side's time. 0 ok. */
static int bound_handshake(SSL_CTX *sctx, SSL_CTX *cctx, double *ts, double *tc, char *info, size_t infocap)
{
    SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
    BIO *sb, *cb;
    BIO_new_bio_pair(&sb, 1 << 16, &cb, 1 << 16);
    SSL_set_bio(s, sb, sb);
    SSL_set_bio(c, cb, cb);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    SSL_set_tlsext_host_name(c, "bench.example");
    int sd = 0, cd = 0, rounds = 0;
    while ((!sd || !cd) && rounds++ < 20) {
        uint64_t t0 = now_ns();
        if (!cd) {
            int r = SSL_do_handshake(c);
            if (r == 1) cd = 1;
            else if (SSL_get_error(c, r) != SSL_ERROR_WANT_READ) break;
        }
        uint64_t t1 = now_ns();
        if (!sd) {
            int r = SSL_do_handshake(s);
            if (r == 1) sd = 1;
            else if (SSL_get_error(s, r) != SSL_ERROR_WANT_READ) break;
        }
        uint64_t t2 = now_ns();
        *tc += (double)(t1 - t0) / 1e9;
        *ts += (double)(t2 - t1) / 1e9;
    }
    /* TLS 1.3: the server's session tickets are written after its handshake completes; a real
     * server pays for them too, so let the client read them. */
    char buf[64];
    uint64_t t0 = now_ns();
    int rr = SSL_read(c, buf, sizeof buf);
    (void)rr;
    *tc += (double)(now_ns() - t0) / 1e9;
    if (info) snprintf(info, infocap, "%s %s", SSL_get_version(s), SSL_get_cipher_name(s));
    int ok = sd && cd;
    SSL_free(s);
    SSL_free(c);
    return ok ? 0 : -1;
}

/* The server's share of SCRAM-SHA-1 with stored keys: verify the proof, sign the answer. */
static void bound_scram_server(const unsigned char *stored_key, const unsigned char *server_key,
                               const char *authmsg, const unsigned char *proof, unsigned char *v)
{
    unsigned char sig[SHA1_LEN], ck[SHA1_LEN], sk[SHA1_LEN];
    unsigned int l = SHA1_LEN;
    HMAC(EVP_sha1(), stored_key, SHA1_LEN, (const unsigned char *)authmsg, strlen(authmsg), sig, &l);
    for (int k = 0; k < SHA1_LEN; k++) ck[k] = proof[k] ^ sig[k];
    SHA1(ck, SHA1_LEN, sk);
    if (CRYPTO_memcmp(sk, stored_key, SHA1_LEN) != 0) die("bound: SCRAM self-check failed");
    HMAC(EVP_sha1(), server_key, SHA1_LEN, (const unsigned char *)authmsg, strlen(authmsg), v, &l);
}

static int scen_bound(double seconds)
{
    EVP_PKEY *k = bound_key();
    X509 *x = bound_cert(k, "bench.example");
    SSL_CTX *sctx = SSL_CTX_new(TLS_server_method()), *cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_use_certificate(sctx, x);
    SSL_CTX_use_PrivateKey(sctx, k);
    SSL_CTX_set_session_cache_mode(sctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
    double ts = 0, tc = 0;
    int n = 0;
    char info[128] = "";
    double t_end = now_s() + seconds;
    while (now_s() < t_end || n < 50) {
        if (bound_handshake(sctx, cctx, &ts, &tc, info, sizeof info) < 0) die("bound: handshake failed");
        n++;
    }
    double t_tls_s = ts / n, t_tls_c = tc / n;
    /* PBKDF2-SHA1, 4096 iterations (what a client without a cache, or a server that keeps
     * plaintext passwords, pays per login) */
    unsigned char sp[SHA1_LEN], salt[16];
    RAND_bytes(salt, sizeof salt);
    int np = 0;
    uint64_t t0 = now_ns();
    while (np < 20 || (double)(now_ns() - t0) < seconds * 0.25e9) {
        PKCS5_PBKDF2_HMAC_SHA1("bench-password", 14, salt, sizeof salt, 4096, SHA1_LEN, sp);
        np++;
    }
    double t_pbkdf2 = (double)(now_ns() - t0) / 1e9 / np;
    /* server-side SCRAM with stored keys */
    spcache_ent_t e;
    spcache_set(&e, sp);
    const char *authmsg = "n=u1,r=abcdefghijklmnopqrstuvwx,r=abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH,"
                          "s=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=,i=4096,c=biws,"
                          "r=abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH";
    unsigned char proof[SHA1_LEN], sig[SHA1_LEN], v[SHA1_LEN];
    unsigned int l = SHA1_LEN;
    HMAC(EVP_sha1(), e.stored_key, SHA1_LEN, (const unsigned char *)authmsg, strlen(authmsg), sig, &l);
    for (int i = 0; i < SHA1_LEN; i++) proof[i] = e.client_key[i] ^ sig[i];
    int ns = 0;
    t0 = now_ns();
    while (ns < 100000) {
        bound_scram_server(e.stored_key, e.server_key, authmsg, proof, v);
        ns++;
    }
    double t_scram = (double)(now_ns() - t0) / 1e9 / ns;
    double per_login = t_tls_s + t_scram;
    note("%d full handshakes (%s, ECDSA P-256 certificate): server %.1f us, client %.1f us each", n, info,
         t_tls_s * 1e6, t_tls_c * 1e6);
    note("PBKDF2-SHA1 4096 iterations: %.1f us; server SCRAM-SHA-1 with stored keys: %.2f us", t_pbkdf2 * 1e6,
         t_scram * 1e6);
    printf("RESULT scenario=bound tls=\"%s\" handshakes=%d tls_server_us=%.1f tls_client_us=%.1f pbkdf2_us=%.1f"
           " scram_server_us=%.2f bound_logins_per_s=%.1f bound_plaintext_logins_per_s=%.1f"
           " client_uncached_logins_per_s=%.1f client_cached_logins_per_s=%.1f\n",
           info, n, t_tls_s * 1e6, t_tls_c * 1e6, t_pbkdf2 * 1e6, t_scram * 1e6, 1.0 / per_login,
           1.0 / (per_login + t_pbkdf2), 1.0 / (t_tls_c + t_pbkdf2), 1.0 / t_tls_c);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    X509_free(x);
    EVP_PKEY_free(k);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loadgen [options] SCENARIO [N]\n"
            "scenarios:\n"
            "  login N        N sessions log in (and stay) as fast as the server accepts them: logins/s\n"
            "  idle N         server RSS with N idle authenticated sessions minus RSS with none, per session\n"
            "  chat P         P pairs exchange messages: saturated msgs/s (closed loop, --window per\n"
            "                 connection), then latency p50/p99/p99.9 in an open loop at --lat-fraction of it\n"
            "  roster N       N users with --contacts contacts each (ring) log in: presence stanzas/s\n"
            "  rostersetup N  create the ring's subscriptions through the protocol (for roster)\n"
            "  bound          in-process micro-benchmark: logins/s that TLS + SCRAM-SHA-1 allow on one core\n"
            "options:\n"
            "  --host ADDR (127.0.0.1) --port P --tls (direct TLS instead of STARTTLS) --domain D\n"
            "  --prefix P (u): accounts are P1..PN (--first K starts at PK) --password PW (bench-password)\n"
            "  --sources N (256): spread connections over source addresses 127.1.x.y (0: kernel's choice)\n"
            "  --concurrency C (100): logins in flight --server-pid PID: read its CPU and RSS from /proc\n"
            "  --scram-cache FILE: SaltedPassword cache shared between runs\n"
            "  --duration S (5) chat phase length --window W (8) --lat-fraction F (0.5) --body-size B (100)\n"
            "  --contacts C (100) --settle S (2) idle wait before reading RSS --timeout S (120)\n"
            "Output: progress on stderr, one 'RESULT scenario=... k=v ...' line on stdout. Exit 1 on failures.\n");
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return;
    rlim_t want = 1 << 20;
    rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
    if (rl.rlim_max < want) {      /* root may raise the hard limit too */
        struct rlimit r2 = {want, want};
        if (setrlimit(RLIMIT_NOFILE, &r2) == 0) return;
    }
    setrlimit(RLIMIT_NOFILE, &rl);
}

int main(int argc, char **argv)
{
    opts_t *o = &G.o;
    *o = (opts_t){.host = "127.0.0.1", .port = 5222, .domain = "bench.example", .prefix = "u", .first = 1,
                  .password = "bench-password", .nsources = 256, .concurrency = 100, .duration = 5, .settle = 2,
                  .window = 8, .contacts = 100, .timeout = 120, .lat_fraction = 0.5, .body_size = 100};
    static const struct option lo[] = {
        {"host", 1, 0, 'H'},       {"port", 1, 0, 'p'},        {"tls", 0, 0, 'T'},        {"domain", 1, 0, 'd'},
        {"prefix", 1, 0, 'u'},     {"first", 1, 0, 'f'},       {"password", 1, 0, 'P'},   {"sources", 1, 0, 's'},
        {"concurrency", 1, 0, 'c'}, {"server-pid", 1, 0, 'S'}, {"scram-cache", 1, 0, 'C'}, {"duration", 1, 0, 't'},
        {"window", 1, 0, 'w'},     {"contacts", 1, 0, 'k'},    {"settle", 1, 0, 'e'},     {"timeout", 1, 0, 'o'},
        {"lat-fraction", 1, 0, 'l'}, {"body-size", 1, 0, 'b'}, {"help", 0, 0, 'h'},       {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (opt) {
        case 'H': o->host = optarg; break;
        case 'p': o->port = atoi(optarg); break;
        case 'T': o->direct_tls = 1; break;
        case 'd': o->domain = optarg; break;
        case 'u': o->prefix = optarg; break;
        case 'f': o->first = atoi(optarg); break;
        case 'P': o->password = optarg; break;
        case 's': o->nsources = atoi(optarg); break;
        case 'c': o->concurrency = atoi(optarg); break;
        case 'S': o->server_pid = (pid_t)atoi(optarg); break;
        case 'C': o->scram_cache = optarg; break;
        case 't': o->duration = atof(optarg); break;
        case 'w': o->window = atoi(optarg); break;
        case 'k': o->contacts = atoi(optarg); break;
        case 'e': o->settle = atof(optarg); break;
        case 'o': o->timeout = atof(optarg); break;
        case 'l': o->lat_fraction = atof(optarg); break;
        case 'b': o->body_size = atoi(optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    const char *scen = argv[optind];
    int n = optind + 1 < argc ? atoi(argv[optind + 1]) : 0;
    if (o->concurrency < 1 || o->window < 1 || o->nsources < 0 || o->nsources > 254 * 250) {
        usage(stderr);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    if (strcmp(scen, "bound") == 0) return scen_bound(n > 0 ? n : 3.0);
    if (n <= 0) {
        usage(stderr);
        return 2;
    }
    raise_nofile();
    G.base = event_base_new();
    G.ctx = SSL_CTX_new(TLS_client_method());
    if (!G.base || !G.ctx) die("cannot set up libevent/OpenSSL");
    SSL_CTX_set_verify(G.ctx, SSL_VERIFY_NONE, NULL);        /* a benchmark: the server is ours */
    SSL_CTX_set_session_cache_mode(G.ctx, SSL_SESS_CACHE_OFF); /* every login a full handshake */
    if (o->scram_cache) spcache_load(&G.cache, o->scram_cache);
    /* a tick so that run_until() notices its deadline even when nothing happens */
    struct event *tick = event_new(G.base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 100000};
    event_add(tick, &tv);
    int rc;
    if (strcmp(scen, "login") == 0) rc = scen_login(n);
    else if (strcmp(scen, "idle") == 0) rc = scen_idle(n);
    else if (strcmp(scen, "chat") == 0) rc = scen_chat(n);
    else if (strcmp(scen, "roster") == 0) rc = scen_roster(n);
    else if (strcmp(scen, "rostersetup") == 0) rc = scen_rostersetup(n);
    else {
        usage(stderr);
        return 2;
    }
    if (G.cache.computed) note("PBKDF2 computed %lu times (%.2f s CPU), cache hits %lu", G.cache.computed,
                               G.cache.compute_s, G.cache.hits);
    event_free(tick);
    for (int i = 0; i < G.nconns; i++) conn_close(&G.conns[i]);
    free(G.conns);
    free(G.lat);
    if (chat_to) {
        for (int i = 0; i < G.nconns; i++) free(chat_to[i]);
        free(chat_to);
    }
    free(G.cache.v);
    if (G.cache.append) fclose(G.cache.append);
    SSL_CTX_free(G.ctx);
    event_base_free(G.base);
    return rc;
}
