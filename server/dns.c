/* server/dns.c: the one file that talks to libunbound: asynchronous SRV and A/AAAA lookups whose
 * results arrive through ub_fd() registered with libevent, ordered by RFC 2782 for SRV. */
#include "dns.h"
#include "util.h"
#include "log.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unbound.h>

#define RR_A 1
#define RR_AAAA 28
#define RR_SRV 33
#define CLASS_IN 1

typedef struct dns_part {
    dns_query_t *q;
    int idx;
    int id;                 /* libunbound's async id */
    int pending;            /* 1 while libunbound owes us the answer */
} dns_part_t;

struct dns_query {
    int is_srv;
    dns_part_t part[2];     /* SRV: part[0]; addresses: part[0] AAAA, part[1] A */
    dns_srv_cb scb;
    dns_addr_cb acb;
    void *ud;
    int port;
    struct sockaddr_storage *addrs[2];
    size_t naddrs[2];
    dns_status_t status[2];
    struct event *literal_ev;   /* an IP literal: answer from the loop, not from the call */
    dns_query_t *next, *prev;
};

static struct ub_ctx *ctx;
static struct event *fd_ev;
static struct event_base *dns_base;
static dns_query_t *queries;

int dns_name_is_ascii(const char *name)
{
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p >= 0x80) return 0;
    return 1;
}

static void on_ub_fd(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what; (void)arg;
    int r = ub_process(ctx);
    if (r != 0) log_warn("dns", "resolver: %s", ub_strerror(r));
}

int dns_start(struct event_base *base)
{
    dns_base = base;
    ctx = ub_ctx_create();
    if (!ctx) {
        log_error("dns", "cannot create the resolver");
        return -1;
    }
    int r = ub_ctx_async(ctx, 1);          /* a resolver thread; callbacks run in ub_process */
    const char *fwd = getenv("CIVITAS_DNS_SERVER");
    if (r == 0 && fwd && *fwd) {
        r = ub_ctx_set_fwd(ctx, fwd);
        if (r == 0) log_info("dns", "using the name server %s (CIVITAS_DNS_SERVER)", fwd);
    } else if (r == 0) {
        r = ub_ctx_resolvconf(ctx, NULL);
        if (r == 0) {
            int h = ub_ctx_hosts(ctx, NULL);
            if (h != 0) log_warn("dns", "cannot read /etc/hosts: %s", ub_strerror(h));
        }
    }
    if (r != 0) {
        log_error("dns", "cannot configure the resolver: %s", ub_strerror(r));
        ub_ctx_delete(ctx);
        ctx = NULL;
        return -1;
    }
    fd_ev = event_new(base, ub_fd(ctx), EV_READ | EV_PERSIST, on_ub_fd, NULL);
    event_add(fd_ev, NULL);
    return 0;
}

static void query_unlink(dns_query_t *q)
{
    if (q->next) q->next->prev = q->prev;
    if (q->prev) q->prev->next = q->next;
    else if (queries == q) queries = q->next;
    q->next = q->prev = NULL;
}

static void query_free(dns_query_t *q)
{
    query_unlink(q);
    if (q->literal_ev) event_free(q->literal_ev);
    free(q->addrs[0]);
    free(q->addrs[1]);
    free(q);
}

void dns_cancel(dns_query_t *q)
{
    if (!q) return;
    for (int i = 0; i < 2; i++)
        if (q->part[i].pending && ctx) ub_cancel(ctx, q->part[i].id);
    query_free(q);
}

void dns_stop(void)
{
    while (queries) dns_cancel(queries);
    if (fd_ev) event_free(fd_ev);
    fd_ev = NULL;
    if (ctx) ub_ctx_delete(ctx);
    ctx = NULL;
}

static dns_query_t *query_new(void)
{
    dns_query_t *q = xcalloc(1, sizeof *q);
    for (int i = 0; i < 2; i++) {
        q->part[i].q = q;
        q->part[i].idx = i;
    }
    q->next = queries;
    if (queries) queries->prev = q;
    queries = q;
    return q;
}

static dns_status_t result_status(int err, const struct ub_result *res)
{
    if (err != 0 || !res) return DNS_FAIL;
    if (res->havedata) return DNS_OK;
    if (res->nxdomain || res->rcode == 0) return DNS_EMPTY;   /* NXDOMAIN or NODATA */
    return DNS_FAIL;
}

/* A domain name in uncompressed wire format -> "a.b.c" ("" for the root). -1 when malformed. */
static int wire_name(const unsigned char *p, size_t len, char *out, size_t outlen)
{
    size_t i = 0, o = 0;
    while (i < len) {
        size_t l = p[i++];
        if (l == 0) {
            out[o] = '\0';
            return 0;
        }
        if (l > 63 || i + l > len || o + l + 2 > outlen) return -1;
        if (o) out[o++] = '.';
        for (size_t k = 0; k < l; k++) {
            unsigned char ch = p[i + k];
            /* host names only: letters, digits, hyphen, underscore (RFC 952/1123 and SRV labels) */
            if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
                  ch == '_'))
                return -1;
            out[o++] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
        }
        i += l;
    }
    return -1;
}

static int by_priority(const void *a, const void *b)
{
    const dns_srv_rr_t *x = a, *y = b;
    return x->priority - y->priority;
}

/* RFC 2782: within one priority, pick by running sum of weights against a uniform random number
 * (zero weights first, so that they are chosen only rarely), repeat with the rest. */
static void srv_order(dns_srv_rr_t *rr, size_t n)
{
    qsort(rr, n, sizeof *rr, by_priority);
    for (size_t start = 0; start < n;) {
        size_t end = start;
        while (end < n && rr[end].priority == rr[start].priority) end++;
        for (size_t i = start; i < end; i++) {
            /* zero-weight records move to the front of the remaining group */
            for (size_t j = i; j < end; j++)
                if (rr[j].weight == 0) {
                    dns_srv_rr_t t = rr[i];
                    rr[i] = rr[j];
                    rr[j] = t;
                    break;
                }
            unsigned long total = 0;
            for (size_t j = i; j < end; j++) total += (unsigned long)rr[j].weight;
            unsigned long pick = total ? arc4random_uniform((uint32_t)total + 1) : 0, run = 0;
            for (size_t j = i; j < end; j++) {
                run += (unsigned long)rr[j].weight;
                if (run >= pick) {
                    dns_srv_rr_t t = rr[i];
                    rr[i] = rr[j];
                    rr[j] = t;
                    break;
                }
            }
        }
        start = end;
    }
}

static void on_srv(void *mydata, int err, struct ub_result *res)
{
    dns_part_t *p = mydata;
    dns_query_t *q = p->q;
    p->pending = 0;
    dns_status_t st = result_status(err, res);
    dns_srv_rr_t *rr = NULL;
    size_t n = 0;
    if (st == DNS_OK) {
        size_t cap = 0;
        while (res->data[cap]) cap++;
        rr = xcalloc(cap ? cap : 1, sizeof *rr);
        for (size_t i = 0; i < cap; i++) {
            const unsigned char *d = (const unsigned char *)res->data[i];
            char name[256];
            if (res->len[i] < 7 || wire_name(d + 6, (size_t)res->len[i] - 6, name, sizeof name) < 0) continue;
            rr[n].priority = (d[0] << 8) | d[1];
            rr[n].weight = (d[2] << 8) | d[3];
            rr[n].port = (d[4] << 8) | d[5];
            rr[n].target = xstrdup(name);
            n++;
        }
        if (n == 0) st = DNS_FAIL;
        srv_order(rr, n);
    }
    if (res) ub_resolve_free(res);
    dns_srv_cb cb = q->scb;
    void *ud = q->ud;
    query_free(q);
    cb(ud, st, rr, n);
    for (size_t i = 0; i < n; i++) free(rr[i].target);
    free(rr);
}

dns_query_t *dns_srv(const char *name, dns_srv_cb cb, void *ud)
{
    if (!ctx || !dns_name_is_ascii(name)) return NULL;
    dns_query_t *q = query_new();
    q->is_srv = 1;
    q->scb = cb;
    q->ud = ud;
    int r = ub_resolve_async(ctx, name, RR_SRV, CLASS_IN, &q->part[0], on_srv, &q->part[0].id);
    if (r != 0) {
        log_warn("dns", "cannot look up %s: %s", name, ub_strerror(r));
        query_free(q);
        return NULL;
    }
    q->part[0].pending = 1;
    return q;
}

/* Both address families answered (or a literal): report, IPv6 first. */
static void addr_done(dns_query_t *q)
{
    size_t n = q->naddrs[0] + q->naddrs[1];
    struct sockaddr_storage *all = xcalloc(n ? n : 1, sizeof *all);
    if (q->naddrs[0]) memcpy(all, q->addrs[0], q->naddrs[0] * sizeof *all);
    if (q->naddrs[1]) memcpy(all + q->naddrs[0], q->addrs[1], q->naddrs[1] * sizeof *all);
    dns_status_t st = n ? DNS_OK
                        : (q->status[0] == DNS_FAIL && q->status[1] == DNS_FAIL) ? DNS_FAIL : DNS_EMPTY;
    dns_addr_cb cb = q->acb;
    void *ud = q->ud;
    query_free(q);
    cb(ud, st, all, n);
    free(all);
}

static void on_addr(void *mydata, int err, struct ub_result *res)
{
    dns_part_t *p = mydata;
    dns_query_t *q = p->q;
    p->pending = 0;
    q->status[p->idx] = result_status(err, res);
    if (q->status[p->idx] == DNS_OK) {
        size_t cap = 0;
        while (res->data[cap]) cap++;
        q->addrs[p->idx] = xcalloc(cap ? cap : 1, sizeof(struct sockaddr_storage));
        for (size_t i = 0; i < cap; i++) {
            struct sockaddr_storage *ss = &q->addrs[p->idx][q->naddrs[p->idx]];
            if (p->idx == 0 && res->len[i] == 16) {
                struct sockaddr_in6 *s6 = (void *)ss;
                s6->sin6_family = AF_INET6;
                s6->sin6_port = htons((uint16_t)q->port);
                memcpy(&s6->sin6_addr, res->data[i], 16);
            } else if (p->idx == 1 && res->len[i] == 4) {
                struct sockaddr_in *s4 = (void *)ss;
                s4->sin_family = AF_INET;
                s4->sin_port = htons((uint16_t)q->port);
                memcpy(&s4->sin_addr, res->data[i], 4);
            } else continue;
            q->naddrs[p->idx]++;
        }
    }
    if (res) ub_resolve_free(res);
    if (!q->part[0].pending && !q->part[1].pending) addr_done(q);
}

static void on_literal(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    addr_done(arg);
}

/* An IP literal ("192.0.2.1", "::1", "[::1]") into q's results. 1 when host was one. */
static int parse_literal(dns_query_t *q, const char *host)
{
    char buf[64];
    size_t l = strlen(host);
    if (l >= sizeof buf) return 0;
    if (host[0] == '[' && l > 2 && host[l - 1] == ']') {
        memcpy(buf, host + 1, l - 2);
        buf[l - 2] = '\0';
    } else {
        memcpy(buf, host, l + 1);
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in6 *s6 = (void *)&ss;
    struct sockaddr_in *s4 = (void *)&ss;
    int idx;
    if (inet_pton(AF_INET6, buf, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)q->port);
        idx = 0;
    } else if (inet_pton(AF_INET, buf, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)q->port);
        idx = 1;
    } else {
        return 0;
    }
    q->addrs[idx] = xmalloc(sizeof ss);
    q->addrs[idx][0] = ss;
    q->naddrs[idx] = 1;
    return 1;
}

dns_query_t *dns_addr(const char *host, int port, dns_addr_cb cb, void *ud)
{
    if (!dns_base) return NULL;
    dns_query_t *q = query_new();
    q->acb = cb;
    q->ud = ud;
    q->port = port;
    if (parse_literal(q, host)) {
        q->literal_ev = event_new(dns_base, -1, 0, on_literal, q);
        event_active(q->literal_ev, 0, 0);
        return q;
    }
    if (!ctx || !dns_name_is_ascii(host)) {
        query_free(q);
        return NULL;
    }
    static const int types[2] = {RR_AAAA, RR_A};
    for (int i = 0; i < 2; i++) {
        int r = ub_resolve_async(ctx, host, types[i], CLASS_IN, &q->part[i], on_addr, &q->part[i].id);
        if (r != 0) {
            log_warn("dns", "cannot look up %s: %s", host, ub_strerror(r));
            dns_cancel(q);
            return NULL;
        }
        q->part[i].pending = 1;
    }
    return q;
}
