/* tests/modules/mod_test_http.c: handlers on the HTTP server's module API (server/http.h) for
 * tests/integration/test_http.py. Built by `make check` only, never installed.
 *   /test/echo      GET/HEAD: "method path query host ip scheme" lines; with a body (any method):
 *                   read in chunks, answered "len=N sum=X chunks=K" (X: FNV-1a of the bytes)
 *   /test/later     answered 50 ms later from a timer (an asynchronous handler)
 *   /test/reject    answers 413 at once, without reading the body
 *   /test/abort     reads the body and stops after the first chunk with 507
 *   /test/file      a 100000-byte file (byte i is i % 251) through http_respond_file
 *   /test/upgrade   with "Upgrade: test": 101, then echoes every byte back over the raw connection
 *   /test/header    X-Test: value from the request's X-Set (a bad value is not written) */
#include "module.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>

static module_ctx_t *self;

typedef struct body { size_t len; uint32_t sum; int chunks; } body_t;

static int on_data(http_request_t *r, const char *data, size_t len, void *arg)
{
    body_t *b = arg;
    for (size_t i = 0; i < len; i++) b->sum = (b->sum ^ (unsigned char)data[i]) * 16777619u;
    b->len += len;
    b->chunks++;
    if (strcmp(http_prefix(r), "/test/abort") == 0) {
        http_respond_error(r, 507);
        return -1;
    }
    return 0;
}

static void on_end(http_request_t *r, void *arg)
{
    body_t *b = arg;
    char out[128];
    int n = snprintf(out, sizeof out, "len=%zu sum=%08x chunks=%d\n", b->len, b->sum, b->chunks);
    http_respond(r, 200, "text/plain", out, (size_t)n);
}

static void free_body(http_request_t *r, void *arg)
{
    (void)r;
    free(arg);
}

static void echo(http_request_t *r, void *arg)
{
    (void)arg;
    if (http_content_length(r) > 0 || http_header(r, "Transfer-Encoding")) {
        body_t *b = xcalloc(1, sizeof *b);
        b->sum = 2166136261u;
        http_request_on_free(r, free_body, b);
        http_read_body(r, on_data, on_end, b);
        return;
    }
    char *out = xasprintf("method=%s\npath=%s\nquery=%s\nhost=%s\nip=%s\nscheme=%s\n", http_method(r), http_path(r),
                          http_query(r) ? http_query(r) : "", http_host(r), http_peer_ip(r), http_scheme(r));
    http_respond(r, 200, "text/plain; charset=utf-8", out, strlen(out));
    free(out);
}

static void later_fire(module_timer_t *t, void *ud)
{
    (void)t;
    http_request_t *r = ud;
    http_request_on_free(r, NULL, NULL);
    http_respond(r, 200, "text/plain", "later\n", 6);
}

static void later_gone(http_request_t *r, void *arg)
{
    (void)r;
    module_timer_cancel(arg);       /* the client went away before the answer */
}

static void later(http_request_t *r, void *arg)
{
    (void)arg;
    module_timer_t *t = module_add_timer(self, 50, 0, later_fire, r);
    http_request_on_free(r, later_gone, t);
}

static void reject(http_request_t *r, void *arg)
{
    (void)arg;
    http_respond_error(r, 413);
}

static void file(http_request_t *r, void *arg)
{
    (void)arg;
    FILE *f = tmpfile();
    if (!f) {
        http_respond_error(r, 500);
        return;
    }
    for (int i = 0; i < 100000; i++) fputc(i % 251, f);
    fflush(f);
    int fd = dup(fileno(f));
    fclose(f);
    http_respond_file(r, 200, "application/octet-stream", fd, 0, 100000);
}

static void raw_read(struct bufferevent *bev, void *arg)
{
    (void)arg;
    bufferevent_write_buffer(bev, bufferevent_get_input(bev));
}

static void raw_event(struct bufferevent *bev, short what, void *arg)
{
    (void)what;
    bufferevent_free(bev);
    http_tls_unref(arg);
}

static void upgraded(http_upgraded_t *u, void *arg)
{
    (void)arg;
    log_info("test_http", "upgraded connection from %s for host %s", u->peer_ip, u->host);
    bufferevent_setcb(u->bev, raw_read, NULL, raw_event, u->tls);
    /* bytes the client sent right after the request are already waiting */
    if (evbuffer_get_length(bufferevent_get_input(u->bev))) raw_read(u->bev, NULL);
}

static void upgrade(http_request_t *r, void *arg)
{
    (void)arg;
    const char *up = http_header(r, "Upgrade");
    if (!up || strcmp(up, "test") != 0) {
        http_add_header(r, "Upgrade", "test");
        http_respond_error(r, 426);
        return;
    }
    http_add_header(r, "Upgrade", "test");
    http_add_header(r, "Connection", "Upgrade");
    http_upgrade(r, upgraded, NULL);
}

static void header(http_request_t *r, void *arg)
{
    (void)arg;
    const char *v = http_header(r, "X-Set");
    if (v) http_add_header(r, "X-Test", v);
    http_add_header(r, "Content-Security-Policy", "default-src 'self'");
    http_respond(r, 204, NULL, NULL, 0);
}

static int load(module_ctx_t *m)
{
    self = m;
    if (module_add_http_handler(m, "/test/echo", echo, NULL) < 0 ||
        module_add_http_handler(m, "/test/later", later, NULL) < 0 ||
        module_add_http_handler(m, "/test/reject", reject, NULL) < 0 ||
        module_add_http_handler(m, "/test/abort", echo, NULL) < 0 ||
        module_add_http_handler(m, "/test/file", file, NULL) < 0 ||
        module_add_http_handler(m, "/test/upgrade", upgrade, NULL) < 0 ||
        module_add_http_handler(m, "/test/header", header, NULL) < 0)
        return -1;
    if (module_add_http_handler(m, "/test/echo", echo, NULL) == 0) return -1;    /* taken: refused */
    return 0;
}

const module_t civitas_module = {.abi = CIVITAS_MODULE_ABI, .name = "test_http", .load = load};
