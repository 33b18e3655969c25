/* tests/fuzz/fuzz_http.c: libFuzzer target for the HTTP server's request parsing (server/http.c on
 * libhttp-parser), through its real entry point: a connection accepted by http_accept on one end of
 * a socket pair, the input written to the other end as the client's bytes, then end of input. The
 * handlers read bodies in chunks, answer at once or after the body, answer HEAD with a file, and take
 * over the connection on "Upgrade: fuzz". Invariants: no crash, leak or UB (the sanitizers); every
 * connection is freed once its client has gone (the loop ends with none left). */
#include "server.h"
#include "module.h"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

server_t *srv;

static void die(const char *what)
{
    fprintf(stderr, "fuzz_http: %s\n", what);
    abort();
}

static int on_data(http_request_t *r, const char *data, size_t len, void *arg)
{
    (void)arg;
    size_t *n = http_data(r);
    *n += len;
    if (len && data[0] == '!') {            /* a handler that stops reading mid-way */
        http_respond_error(r, 507);
        return -1;
    }
    return 0;
}

static void on_end(http_request_t *r, void *arg)
{
    (void)arg;
    char out[64];
    int k = snprintf(out, sizeof out, "%zu\n", *(size_t *)http_data(r));
    http_respond(r, 200, "text/plain", out, (size_t)k);
}

static void free_count(http_request_t *r, void *arg)
{
    (void)arg;
    free(http_data(r));
}

static void upgraded(http_upgraded_t *u, void *arg)
{
    (void)arg;
    bufferevent_free(u->bev);
    http_tls_unref(u->tls);
}

static void handler(http_request_t *r, void *arg)
{
    (void)arg;
    const char *up = http_header(r, "Upgrade");
    if (up && strcmp(up, "fuzz") == 0) {
        http_add_header(r, "Upgrade", "fuzz");
        http_upgrade(r, upgraded, NULL);
        return;
    }
    if (strcmp(http_method(r), "HEAD") == 0 || strcmp(http_method(r), "GET") == 0) {
        int fd = open("/dev/zero", O_RDONLY);
        if (fd < 0) die("/dev/zero");
        http_add_header(r, "X-Path", http_path(r));
        http_respond_file(r, 200, "application/octet-stream", fd, 0, 16);
        return;
    }
    if (strcmp(http_method(r), "DELETE") == 0) {
        http_respond_error(r, 403);         /* answered before the body */
        return;
    }
    size_t *n = xcalloc(1, sizeof *n);
    http_set_data(r, n);
    http_request_on_free(r, free_count, NULL);
    http_read_body(r, on_data, on_end, NULL);
}

static void init(void)
{
    static const char cfg[] = "hosts:\n  - name: localhost\nlisten:\n  http: [\"127.0.0.1:0\"]\n"
                              "data_dir: /nonexistent\nlog:\n  level: error\n"
                              "http:\n  max_header_size: 4096\n  max_headers: 16\n  trusted_proxies: [\"127.0.0.1\"]\n";
    strlist_t errors = {0};
    srv = xcalloc(1, sizeof *srv);
    srv->cfg = config_load_buffer("/tmp/fuzz_http.yml", cfg, sizeof cfg - 1, NULL, &errors);
    if (!srv->cfg) die(errors.n ? errors.v[0] : "config");
    log_set_level("error");
    srv->base = event_base_new();
    if (http_start() < 0) die("http_start");
    if (module_add_http_handler(NULL, "/", handler, NULL) < 0) die("handler");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        init();
        ready = 1;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) die("socketpair");
    int big = 1 << 20;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    http_accept(sv[0], "127.0.0.1", 0);
    size_t off = 0;
    char buf[65536];
    for (int round = 0; round < 10000 && http_connection_count() > 0; round++) {
        if (off < size) {
            ssize_t w = send(sv[1], data + off, size - off, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w > 0) off += (size_t)w;
            if (off == size) shutdown(sv[1], SHUT_WR);
        } else if (size == 0 && round == 0) {
            shutdown(sv[1], SHUT_WR);
        }
        event_base_loop(srv->base, EVLOOP_NONBLOCK);
        while (recv(sv[1], buf, sizeof buf, MSG_DONTWAIT) > 0) {
        }
    }
    close(sv[1]);
    for (int round = 0; round < 100 && http_connection_count() > 0; round++) event_base_loop(srv->base, EVLOOP_NONBLOCK);
    if (http_connection_count() != 0) die("invariant failed: a connection outlived its client");
    return 0;
}
