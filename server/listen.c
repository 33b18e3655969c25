/* server/listen.c: the listening sockets named in the config's listen: section (XMPP and HTTP). Each logs
 * "listening <kind> <addr>:<port>" with the real port, so port 0 works for tests. */
#include "listen.h"
#include "server.h"
#include "c2s.h"
#include "s2s.h"
#include "http.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <event2/listener.h>

typedef struct listener {
    struct evconnlistener *l;
    c2s_kind_t kind;
    int s2s;                    /* 1: server (STARTTLS), 2: server_tls (direct TLS); 0: client;
                                   3: http, 4: https (server/http.c) */
    struct listener *next;
} listener_t;

static listener_t *listeners;

static void addr_text(const struct sockaddr *sa, char *ip, size_t iplen, int *port)
{
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const void *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, iplen);
        *port = ntohs(s6->sin6_port);
    } else {
        const struct sockaddr_in *s4 = (const void *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, ip, iplen);
        *port = ntohs(s4->sin_port);
    }
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg)
{
    (void)l; (void)len;
    listener_t *li = arg;
    char ip[INET6_ADDRSTRLEN];
    int port;
    addr_text(sa, ip, sizeof ip, &port);
    if (li->s2s >= 3) http_accept(fd, ip, li->s2s == 4);
    else if (li->s2s) s2s_accept(fd, ip, li->s2s == 2);
    else c2s_accept(fd, ip, li->kind);
}

/* "127.0.0.1:5222", "[::1]:5222" -> sockaddr. 0/-1 */
static int parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[128];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host) return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    int port = atoi(colon + 1);
    memset(ss, 0, sizeof *ss);
    if (host[0] == '[') {
        size_t hl = strlen(host);
        if (hl < 3 || host[hl - 1] != ']') return -1;
        host[hl - 1] = '\0';
        struct sockaddr_in6 *s6 = (void *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host + 1, &s6->sin6_addr) != 1) return -1;
        *len = sizeof *s6;
    } else {
        struct sockaddr_in *s4 = (void *)ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &s4->sin_addr) != 1) return -1;
        *len = sizeof *s4;
    }
    return 0;
}

static int listen_one(const char *addr, const char *kindname, c2s_kind_t kind, int s2s)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (parse_addr(addr, &ss, &len) < 0) {
        log_error("listen", "invalid address '%s' for %s", addr, kindname);
        return -1;
    }
    listener_t *li = xcalloc(1, sizeof *li);
    li->kind = kind;
    li->s2s = s2s;
    li->l = evconnlistener_new_bind(srv->base, on_accept, li, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 1024,
                                    (struct sockaddr *)&ss, (int)len);
    if (!li->l) {
        log_error("listen", "cannot listen on %s for %s: %s", addr, kindname,
                  evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        free(li);
        return -1;
    }
    li->next = listeners;
    listeners = li;
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    char ip[INET6_ADDRSTRLEN];
    int port = 0;
    getsockname(evconnlistener_get_fd(li->l), (struct sockaddr *)&bound, &blen);
    addr_text((struct sockaddr *)&bound, ip, sizeof ip, &port);
    if (s2s >= 3) http_note_port(s2s == 4, port);
    if (bound.ss_family == AF_INET6) log_info("listen", "listening %s [%s]:%d", kindname, ip, port);
    else log_info("listen", "listening %s %s:%d", kindname, ip, port);
    return 0;
}

int listen_start(void)
{
    const config_t *c = srv->cfg;
    for (size_t i = 0; i < c->listen_client.n; i++)
        if (listen_one(c->listen_client.v[i], "client", C2S_PLAIN, 0) < 0) return -1;
    for (size_t i = 0; i < c->listen_client_tls.n; i++)
        if (listen_one(c->listen_client_tls.v[i], "client_tls", C2S_DIRECT_TLS, 0) < 0) return -1;
    for (size_t i = 0; i < c->listen_server.n; i++)
        if (listen_one(c->listen_server.v[i], "server", C2S_PLAIN, 1) < 0) return -1;
    for (size_t i = 0; i < c->listen_server_tls.n; i++)
        if (listen_one(c->listen_server_tls.v[i], "server_tls", C2S_DIRECT_TLS, 2) < 0) return -1;
    for (size_t i = 0; i < c->listen_http.n; i++)
        if (listen_one(c->listen_http.v[i], "http", C2S_PLAIN, 3) < 0) return -1;
    for (size_t i = 0; i < c->listen_https.n; i++)
        if (listen_one(c->listen_https.v[i], "https", C2S_PLAIN, 4) < 0) return -1;
    if (c->listen_http.n || c->listen_https.n) return http_start();
    return 0;
}

void listen_stop(void)
{
    while (listeners) {
        listener_t *li = listeners;
        listeners = li->next;
        evconnlistener_free(li->l);
        free(li);
    }
}
