/* tests/fuzz/fuzz_websocket.c: libFuzzer target for XMPP over WebSocket (server/websocket.c on
 * libwslay, into the c2s stream of c2s.c) through websocket_fuzz_input: the bytes a client sends
 * after the handshake, framed by wslay, each text message given to the client stream (<open/>,
 * SASL, restart, stanzas, <close/>) as over a real connection, without a socket.
 * Input: first byte even: the rest is raw WebSocket bytes. Odd: the rest is split at 0xFF bytes into
 * messages, each sent as one masked frame whose first byte gives the opcode (low nibble) and FIN
 * (bit 0x80), so that the fuzzer reaches the stream behind the framing (the seeds log in with
 * PLAIN as fuzz@localhost / pw). Invariants: no crash, leak or UB (the sanitizers); every session
 * is freed once the loop ran (srv->nsessions back to 0). */
#include "server.h"
#include "module.h"
#include "websocket.h"
#include "scram.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <event2/event.h>

server_t *srv;

static void die(const char *what)
{
    fprintf(stderr, "fuzz_websocket: %s\n", what);
    abort();
}

static void init(void)
{
    char dir[] = "/tmp/civitas-fuzz-ws-XXXXXX";
    if (!mkdtemp(dir)) die("mkdtemp");
    char *cfg = xasprintf("hosts:\n  - name: localhost\nlisten:\n  client: []\ndata_dir: %s/data\n"
                          "federation:\n  mode: off\nlog:\n  level: error\nmodules: []\n", dir);
    strlist_t errors = {0};
    srv = xcalloc(1, sizeof *srv);
    srv->cfg = config_load_buffer("/tmp/fuzz_websocket.yml", cfg, strlen(cfg), NULL, &errors);
    free(cfg);
    if (!srv->cfg) die(errors.n ? errors.v[0] : "config");
    log_set_level("error");
    char *err = NULL;
    srv->store = storage_open(srv->cfg->data_dir, &err);
    if (!srv->store) die(err ? err : "storage_open");
    srv->base = event_base_new();
    srv->ip_state = strmap_new();
    srv->nhosts = 1;
    srv->hosts = xcalloc(1, sizeof *srv->hosts);
    srv->hosts[0] = xcalloc(1, sizeof(host_t));
    srv->hosts[0]->name = xstrdup("localhost");
    srv->hosts[0]->users = strmap_new();
    scram_creds_t a, b;
    if (scram_creds_from_password(SCRAM_SHA1, "pw", 4096, &a) < 0 ||
        scram_creds_from_password(SCRAM_SHA256, "pw", 4096, &b) < 0 ||
        storage_account_create(srv->store, "fuzz", "localhost", &a, &b) < 0)
        die("account");
}

/* Client frames: masked with the key 0 (RFC 6455 §5.3 allows any key; the payload stays as is). */
static void add_frame(uint8_t **out, size_t *n, const uint8_t *p, size_t len)
{
    uint8_t b0 = len ? p[0] : 0x81;
    const uint8_t *payload = len ? p + 1 : p;
    size_t plen = len ? len - 1 : 0;
    uint8_t hdr[14];
    size_t h = 0;
    hdr[h++] = (uint8_t)((b0 & 0x80) | (b0 & 0x0f));
    if (plen < 126) hdr[h++] = (uint8_t)(0x80 | plen);
    else {
        hdr[h++] = 0x80 | 126;
        hdr[h++] = (uint8_t)(plen >> 8);
        hdr[h++] = (uint8_t)plen;
    }
    memset(hdr + h, 0, 4);
    h += 4;
    *out = xrealloc(*out, *n + h + plen);
    memcpy(*out + *n, hdr, h);
    memcpy(*out + *n + h, payload, plen);
    *n += h + plen;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        init();
        ready = 1;
    }
    if (size == 0 || size > 65535) return 0;
    if (!(data[0] & 1)) {
        websocket_fuzz_input(data + 1, size - 1);
    } else {
        uint8_t *buf = NULL;
        size_t n = 0, start = 1;
        for (size_t i = 1; i <= size; i++)
            if (i == size || data[i] == 0xff) {
                add_frame(&buf, &n, data + start, i - start);
                start = i + 1;
            }
        websocket_fuzz_input(buf, n);
        free(buf);
    }
    for (int round = 0; round < 100 && srv->nsessions > 0; round++) event_base_loop(srv->base, EVLOOP_NONBLOCK);
    if (srv->nsessions != 0) die("invariant failed: a session outlived its input");
    return 0;
}
