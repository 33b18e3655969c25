/* modules/mod_websocket.c: XMPP over WebSocket (RFC 7395) at /xmpp-websocket on listen.http /
 * listen.https, and its discovery (XEP-0156) at /.well-known/host-meta (XRD) and
 * /.well-known/host-meta.json. The handshake and the framing are the core's (server/websocket.c):
 * a WebSocket stream is a client stream like a TCP one. Here: the Origin policy
 * (websocket.allowed_origins: any Origin when empty, CONTRACT.md) and the URL announced
 * (websocket.url, else http.public_url, else the request's own scheme and Host), and the keepalive
 * (websocket.ping_interval, ping_timeout: server/websocket.c sends the pings). */
#include "module.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define WS_PATH "/xmpp-websocket"
#define HOST_META "/.well-known/host-meta"
#define REL_WS "urn:xmpp:alt-connections:websocket"

static struct ws_conf {
    strlist_t allowed_origins;
    char *url;
    long ping_interval, ping_timeout;
} conf;

static const module_option_t options[] = {
    {"allowed_origins", MOPT_LIST, offsetof(struct ws_conf, allowed_origins), 0, 0, 0, .def_string = NULL},
    {"url", MOPT_STRING, offsetof(struct ws_conf, url), 0, 0, 0, .def_string = NULL},
    {"ping_interval", MOPT_DURATION, offsetof(struct ws_conf, ping_interval), 300, 0, 86400, .def_string = NULL},
    {"ping_timeout", MOPT_DURATION, offsetof(struct ws_conf, ping_timeout), 60, 1, 3600, .def_string = NULL},
    {.name = NULL}};

static int origin_allowed(const char *origin)
{
    if (!conf.allowed_origins.n || !origin) return 1;  /* no list: any; no Origin: not a browser */
    for (size_t i = 0; i < conf.allowed_origins.n; i++)
        if (strcasecmp(conf.allowed_origins.v[i], origin) == 0) return 1;
    return 0;
}

static void on_websocket(http_request_t *r, void *arg)
{
    (void)arg;
    if (strcmp(http_path(r), WS_PATH) != 0) {
        http_respond_error(r, 404);
        return;
    }
    if (!origin_allowed(http_header(r, "Origin"))) {
        log_info("websocket", "%s: Origin not in websocket.allowed_origins", http_peer_ip(r));
        static const char msg[] = "403 Forbidden: this Origin may not open XMPP streams here\n";
        http_respond(r, 403, "text/plain; charset=utf-8", msg, sizeof msg - 1);
        return;
    }
    websocket_handshake(r);
}

/* A Host header fit to be written into a URL: a name or address and an optional port. */
static int host_ok(const char *h)
{
    if (!h || !*h || strlen(h) > 255) return 0;
    for (const char *p = h; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr(".-:[]", *p)))
            return 0;
    return 1;
}

/* The WebSocket URL clients of r should use (malloc'd). */
static char *ws_url(http_request_t *r)
{
    if (conf.url) return xstrdup(conf.url);
    const char *base = http_public_url();
    if (base) {
        int tls = strncasecmp(base, "https:", 6) == 0;
        const char *rest = strstr(base, "://");
        rest = rest ? rest + 3 : base;
        size_t n = strlen(rest);
        while (n && rest[n - 1] == '/') n--;
        return xasprintf("%s://%.*s" WS_PATH, tls ? "wss" : "ws", (int)n, rest);
    }
    const char *host = http_header(r, "Host");
    if (!host_ok(host)) host = http_host(r);
    return xasprintf("%s://%s" WS_PATH, strcmp(http_scheme(r), "https") == 0 ? "wss" : "ws", host);
}

static void on_host_meta(http_request_t *r, void *arg)
{
    (void)arg;
    const char *path = http_path(r);
    int json = strcmp(path, HOST_META ".json") == 0;
    if (!json && strcmp(path, HOST_META) != 0) {
        http_respond_error(r, 404);
        return;
    }
    /* XEP-0156 §3: any web page may read it */
    http_add_header(r, "Access-Control-Allow-Origin", "*");
    if (strcmp(http_method(r), "OPTIONS") == 0) {
        http_add_header(r, "Access-Control-Allow-Methods", "GET, HEAD, OPTIONS");
        http_respond(r, 204, NULL, NULL, 0);
        return;
    }
    if (strcmp(http_method(r), "GET") != 0 && strcmp(http_method(r), "HEAD") != 0) {
        http_add_header(r, "Allow", "GET, HEAD, OPTIONS");
        http_respond_error(r, 405);
        return;
    }
    char *url = ws_url(r);
    char *esc = xml_escape_attr(url, NULL);    /* also fit for JSON: no quote, backslash or control */
    free(url);
    if (!esc || strchr(esc, '\\')) {
        free(esc);
        http_respond_error(r, 500);
        return;
    }
    char *body;
    if (json)
        body = xasprintf("{\"links\":[{\"rel\":\"" REL_WS "\",\"href\":\"%s\"}]}\n", esc);
    else
        body = xasprintf("<?xml version='1.0' encoding='utf-8'?>\n"
                         "<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n"
                         "  <Link rel='" REL_WS "' href='%s'/>\n"
                         "</XRD>\n", esc);
    free(esc);
    http_add_header(r, "Cache-Control", "max-age=3600");
    http_respond(r, 200, json ? "application/json" : "application/xrd+xml; charset=utf-8", body, strlen(body));
    free(body);
}

static int load(module_ctx_t *m)
{
    if (!http_base_url("localhost")) {
        log_info("websocket", "no HTTP listener (listen.http / listen.https): no WebSocket is offered");
        return 0;
    }
    websocket_set_keepalive(conf.ping_interval, conf.ping_timeout);
    if (module_add_http_handler(m, WS_PATH, on_websocket, NULL) < 0) return -1;
    if (module_add_http_handler(m, HOST_META, on_host_meta, NULL) < 0) return -1;
    return 0;
}

static void unload(module_ctx_t *m)
{
    (void)m;
    websocket_set_keepalive(0, 0);      /* sessions still open stop pinging */
}

const module_t civitas_module = {.abi = CIVITAS_MODULE_ABI, .name = "websocket", .load = load, .unload = unload,
                                 .options = options, .conf = &conf};
