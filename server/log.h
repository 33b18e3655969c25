/* server/log.h: levelled logging by subsystem. Never pass a message body or other stanza
 * content to these macros; JIDs only through log_jid(), which hides them unless the admin allows. */
#ifndef CIVITAS_LOG_H
#define CIVITAS_LOG_H
#include "api.h"
#include <stddef.h>
#include <stdio.h>

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR } log_level_t;
CIVITAS_API extern log_level_t log_min_level;   /* messages below it cost one comparison */

int log_set_level(const char *name);          /* "debug" | "info" | "warn" | "error"; -1 if unknown */
int log_open_file(const char *path);          /* NULL: stderr. Reopens (SIGHUP). 0/-1 */
void log_set_jids(int show);                  /* 1: log JIDs as they are; 0 (default): hashed */
/* A JID for a log line: itself when allowed, else a short stable pseudonym ("jid#1a2b3c4d"). Returns
 * a pointer into one of a few rotating static buffers: use it within one log call. */
CIVITAS_API const char *log_jid(const char *jid);
/* Every message is written as one line: control characters (newline included), DEL, C1 controls,
 * U+2028/U+2029, bidirectional overrides and bytes that are not UTF-8 become \n, \r, \t, \xNN or
 * \uNNNN, and a backslash becomes \\, so no value from the network can forge or hide a line. */
CIVITAS_API void log_write(log_level_t level, const char *subsys, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Write the n bytes of text to fp escaped as above (for log_write; exposed for the unit tests). */
void log_escape(FILE *fp, const char *text, size_t n);

#define LOG_AT(lvl, subsys, ...) do { if ((lvl) >= log_min_level) log_write((lvl), (subsys), __VA_ARGS__); } while (0)
#define log_debug(subsys, ...) LOG_AT(LOG_DEBUG, subsys, __VA_ARGS__)
#define log_info(subsys, ...) LOG_AT(LOG_INFO, subsys, __VA_ARGS__)
#define log_warn(subsys, ...) LOG_AT(LOG_WARN, subsys, __VA_ARGS__)
#define log_error(subsys, ...) LOG_AT(LOG_ERROR, subsys, __VA_ARGS__)

#endif
