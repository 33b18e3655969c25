/* tests/unit/test_log.c: log lines cannot be forged or hidden by the values they carry: control
 * characters, C1 controls, line separators, bidi overrides and non-UTF-8 bytes are escaped. */
#include "tap.h"
#include "log.h"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* What log_escape writes for the n bytes of s (malloc'd). */
static char *escaped(const char *s, size_t n)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    log_escape(fp, s, n);
    fclose(fp);
    return buf;
}

static int escapes_to(const char *in, const char *want)
{
    char *got = escaped(in, strlen(in));
    int r = strcmp(got, want) == 0;
    if (!r) printf("# got '%s', want '%s'\n", got, want);
    free(got);
    return r;
}

static void escaping(void)
{
    ok(escapes_to("a.example", "a.example"), "plain text is written as it is");
    ok(escapes_to("x\ny", "x\\ny") && escapes_to("x\r\ny", "x\\r\\ny"), "CR and LF become \\r and \\n");
    ok(escapes_to("a\tb\x1b[31m\x7f", "a\\tb\\x1b[31m\\x7f"), "TAB, ESC (terminal sequences) and DEL are escaped");
    ok(escapes_to("C:\\x0a", "C:\\\\x0a"), "a backslash is doubled, so an escape in the input cannot pass for ours");
    ok(escapes_to("m\xc3\xbcnchen.de", "m\xc3\xbcnchen.de"), "UTF-8 letters stay readable");
    ok(escapes_to("a\xc2\x85" "b\xc2\x9b", "a\\x85b\\x9b"), "C1 controls (NEL, CSI) are escaped");
    ok(escapes_to("a\xe2\x80\xa8" "b\xe2\x80\xae" "c\xe2\x81\xa6", "a\\u2028b\\u202ec\\u2066"),
       "U+2028 and the bidi overrides U+202E, U+2066 are escaped");
    ok(escapes_to("a\xff\xc3(b\xc0\xafz\xed\xa0\x80", "a\\xff\\xc3(b\\xc0\\xafz\\xed\\xa0\\x80"),
       "bytes that are not UTF-8 (invalid, truncated, overlong, surrogates) are written in hex");
    char *got = escaped("a\0b", 3);
    ok(strcmp(got, "a\\x00b") == 0, "a NUL inside the value is escaped");
    free(got);
}

static void one_line(void)
{
    char path[] = "/tmp/civitas-test-log-XXXXXX";
    int fd = mkstemp(path);
    ok(fd >= 0 && log_open_file(path) == 0, "log to a file");
    log_info("s2s", "incoming %s -> %s refused", "e.example", "x\n2026-01-01T00:00:00Z civitasd[1]: info: forged");
    char big[3000];
    memset(big, 'v', sizeof big - 2);
    big[sizeof big - 2] = '\n';
    big[sizeof big - 1] = '\0';
    log_info("s2s", "long %s end", big);
    log_open_file(NULL);
    FILE *fp = fopen(path, "r");
    char line[8192];
    int lines = 0, forged = 0, escaped_nl = 0, long_ok = 0;
    while (fp && fgets(line, sizeof line, fp)) {
        lines++;
        if (strncmp(line, "2026-01-01", 10) == 0) forged = 1;
        if (strstr(line, "refused") && strstr(line, "x\\n2026-01-01T00:00:00Z civitasd[1]: info: forged")) escaped_nl = 1;
        if (strstr(line, "long vvv") && strstr(line, "v\\n end\n")) long_ok = 1;
    }
    if (fp) fclose(fp);
    unlink(path);
    ok(lines == 2 && !forged, "a newline in a value does not start a line of its own (%d lines)", lines);
    ok(escaped_nl, "the value is in its line with \\n in place of the newline");
    ok(long_ok, "a message longer than the formatting buffer is written whole, escaped");
}

int main(void)
{
    escaping();
    one_line();
    return done_testing();
}
