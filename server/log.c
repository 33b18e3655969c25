/* server/log.c: the log sink (stderr or a file), levels, and JID pseudonyms so that logs
 * do not record who talks to whom unless the admin turns that on. */
#include "log.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <openssl/evp.h>

log_level_t log_min_level = LOG_INFO;
static FILE *log_fp;
static int log_show_jids;

int log_set_level(const char *name)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (name && strcmp(name, names[i]) == 0) { log_min_level = (log_level_t)i; return 0; }
    return -1;
}

int log_open_file(const char *path)
{
    FILE *fp = NULL;
    if (path && !(fp = fopen(path, "a"))) return -1;
    if (log_fp) fclose(log_fp);
    log_fp = fp;
    if (log_fp) setvbuf(log_fp, NULL, _IOLBF, 0);
    return 0;
}

void log_set_jids(int show) { log_show_jids = show; }

const char *log_jid(const char *jid)
{
    static char bufs[4][64];
    static int next;
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (!jid) return "-";
    if (log_show_jids) return jid;
    char *b = bufs[next++ & 3];
    EVP_Digest(jid, strlen(jid), md, &mdlen, EVP_sha256(), NULL);
    snprintf(b, 64, "jid#%02x%02x%02x%02x", md[0], md[1], md[2], md[3]);
    return b;
}

/* The length of the valid UTF-8 sequence at s (at most n bytes) and its code point, or 0 when the
 * bytes there are no valid, shortest-form, non-surrogate sequence. */
static size_t utf8_seq(const unsigned char *s, size_t n, unsigned *cp)
{
    size_t len = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc0 ? 2 : 0;
    if (!len || s[0] > 0xf4 || len > n) return 0;
    unsigned c = s[0] & (0x7f >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    static const unsigned min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < min[len] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return 0;
    *cp = c;
    return len;
}

/* Code points that must not reach a log verbatim: C0 and C1 controls and DEL (a newline would start
 * a forged line, an escape sequence would drive the admin's terminal), the Unicode line and
 * paragraph separators, and the bidirectional overrides that reorder what a line shows. */
static int must_escape(unsigned cp)
{
    return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 ||
           (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

void log_escape(FILE *fp, const char *text, size_t n)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    while (i < n) {
        size_t run = 0;                     /* plain printable ASCII goes out in one piece */
        while (i + run < n && s[i + run] >= 0x20 && s[i + run] < 0x7f && s[i + run] != '\\') run++;
        if (run) {
            fwrite(s + i, 1, run, fp);
            i += run;
            continue;
        }
        unsigned cp = s[i];
        size_t len = cp < 0x80 ? 1 : utf8_seq(s + i, n - i, &cp);
        if (!len) {                         /* not UTF-8: the byte in hex */
            fprintf(fp, "\\x%02x", s[i]);
            i++;
        } else if (cp == '\\') {
            fputs("\\\\", fp);
            i++;
        } else if (cp == '\n' || cp == '\r' || cp == '\t') {
            fputc('\\', fp);
            fputc(cp == '\n' ? 'n' : cp == '\r' ? 'r' : 't', fp);
            i++;
        } else if (must_escape(cp)) {
            fprintf(fp, cp < 0x100 ? "\\x%02x" : "\\u%04x", cp);
            i += len;
        } else {
            fwrite(s + i, 1, len, fp);
            i += len;
        }
    }
}

void log_write(log_level_t level, const char *subsys, const char *fmt, ...)
{
    static const char *lv[] = {"debug", "info", "warn", "error"};
    FILE *fp = log_fp ? log_fp : stderr;
    char ts[32], small[1024], *msg = small;
    time_t t = time(NULL);
    struct tm tm;
    va_list ap;
    gmtime_r(&t, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    /* The whole message is formatted first and written escaped: values from the network (a
     * dialback 'to', a stream error text, a peer's TLS alert) are written by many callers, and
     * escaping here covers every one of them. */
    va_start(ap, fmt);
    int len = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (len < 0) len = 0;
    if ((size_t)len >= sizeof small && (msg = malloc((size_t)len + 1))) {
        va_start(ap, fmt);
        vsnprintf(msg, (size_t)len + 1, fmt, ap);
        va_end(ap);
    } else if ((size_t)len >= sizeof small) {
        msg = small;                        /* out of memory: the truncated message */
        len = (int)sizeof small - 1;
    }
    flockfile(fp);
    fprintf(fp, "%s civitasd[%d]: %s: ", ts, (int)getpid(), lv[level]);
    log_escape(fp, subsys, strlen(subsys));
    fputs(": ", fp);
    log_escape(fp, msg, (size_t)len);
    fputc('\n', fp);
    funlockfile(fp);
    fflush(fp);
    if (msg != small) free(msg);
}
