/* server/flow.c: flow control of one stream, shared by c2s and s2s: XEP-0205 input limits
 * (libevent token bucket for bytes, a stanza bucket) and the output backlog of a stream. */
#include "flow.h"
#include "server.h"
#include <stdint.h>
#include <stdlib.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>

#define TICK_MS 250
#define MIN_ELEMENT_BYTES 4       /* "<a/>": n bytes complete at most n / 4 depth-1 elements */

struct flow {
    struct ev_token_bucket_cfg *bytes;   /* set on the socket-level bufferevent */
    int64_t tokens_m;                    /* stanza tokens in thousandths */
    int64_t last_ms;
    struct event *resume;                /* ends a stanza-rate pause */
    void (*resume_cb)(void *ud);
    void *ud;
};

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    flow_t *f = arg;
    f->resume_cb(f->ud);
}

flow_t *flow_new(struct event_base *base, void (*resume)(void *ud), void *ud)
{
    flow_t *f = xcalloc(1, sizeof *f);
    f->tokens_m = (int64_t)srv->cfg->max_stanzas_per_second * 1000;
    f->last_ms = now_ms();
    f->resume_cb = resume;
    f->ud = ud;
    f->resume = evtimer_new(base, on_resume, f);
    return f;
}

void flow_free(flow_t *f)
{
    if (!f) return;
    if (f->resume) event_free(f->resume);
    if (f->bytes) ev_token_bucket_cfg_free(f->bytes);
    free(f);
}

int flow_set_bytes(flow_t *f, struct bufferevent *bev, long per_second)
{
    struct bufferevent *sock = bufferevent_get_underlying(bev);
    if (!sock) sock = bev;          /* plain TCP, or TLS reading the socket itself */
    struct timeval tick = {0, TICK_MS * 1000};
    size_t per_tick = (size_t)per_second * TICK_MS / 1000;
    struct ev_token_bucket_cfg *cfg =
        ev_token_bucket_cfg_new(per_tick, (size_t)per_second, EV_RATE_LIMIT_MAX, EV_RATE_LIMIT_MAX, &tick);
    if (!cfg || bufferevent_set_rate_limit(sock, cfg) < 0) {
        if (cfg) ev_token_bucket_cfg_free(cfg);
        return -1;
    }
    if (f->bytes) ev_token_bucket_cfg_free(f->bytes);
    f->bytes = cfg;
    return 0;
}

size_t flow_room(flow_t *f, size_t chunk)
{
    long rate = srv->cfg->max_stanzas_per_second;
    int64_t now = now_ms();
    f->tokens_m += (now - f->last_ms) * rate;
    if (f->tokens_m > (int64_t)rate * 1000) f->tokens_m = (int64_t)rate * 1000;
    f->last_ms = now;
    int64_t whole = f->tokens_m / 1000;
    return whole >= (int64_t)(chunk / MIN_ELEMENT_BYTES) ? chunk : (size_t)whole * MIN_ELEMENT_BYTES;
}

void flow_take(flow_t *f) { f->tokens_m -= 1000; }

void flow_pause(flow_t *f, struct bufferevent *bev)
{
    long rate = srv->cfg->max_stanzas_per_second;
    int64_t ms = (1000 - f->tokens_m + rate - 1) / rate;
    if (ms < 1) ms = 1;
    bufferevent_disable(bev, EV_READ);
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(f->resume, &tv);
}

size_t flow_output_queued(struct bufferevent *bev)
{
    size_t queued = evbuffer_get_length(bufferevent_get_output(bev));
    struct bufferevent *under = bufferevent_get_underlying(bev);
    if (under) queued += evbuffer_get_length(bufferevent_get_output(under));
    return queued;
}
