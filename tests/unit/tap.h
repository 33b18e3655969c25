/* tests/unit/tap.h: minimal TAP producer for the C unit tests.
 * Each ok() is one test point; done_testing() prints the plan and returns the exit code. */
#include <stdio.h>
static int tap_n, tap_failed;
#define ok(cond, ...) do { int ok_c_ = !!(cond); tap_n++; if (!ok_c_) tap_failed++; \
    printf("%sok %d - ", ok_c_ ? "" : "not ", tap_n); printf(__VA_ARGS__); printf("\n"); } while (0)
#define done_testing() (printf("1..%d\n", tap_n), tap_failed ? 1 : 0)
