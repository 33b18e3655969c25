/* server/log.c: the log sink (stderr or a file), levels, and JID pseudonyms so that logs
 * do not record who talks to whom unless the admin turns that on. */
#include "log.h"
#include <stdarg.h>
#include <stdio.h>
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

void log_write(log_level_t level, const char *subsys, const char *fmt, ...)
{
    static const char *lv[] = {"debug", "info", "warn", "error"};
    FILE *fp = log_fp ? log_fp : stderr;
    char ts[32];
    time_t t = time(NULL);
    struct tm tm;
    va_list ap;
    gmtime_r(&t, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    flockfile(fp);
    fprintf(fp, "%s civitasd[%d]: %s: %s: ", ts, (int)getpid(), lv[level], subsys);
    va_start(ap, fmt);
    vfprintf(fp, fmt, ap);
    va_end(ap);
    fputc('\n', fp);
    funlockfile(fp);
    fflush(fp);
}
