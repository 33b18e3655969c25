/* modules/mod_smacks.c: XEP-0198 Stream Management (urn:xmpp:sm:3): acknowledgements both ways,
 * a queue of the stanzas the client has not acknowledged, and resumption of a session whose
 * connection was lost (it hibernates: bound, presence kept, output queued). What the client never
 * acknowledged when a session ends for good goes to offline storage ("message/undelivered"),
 * except carbon copies and messages another resource of the user also got. */
#include "module.h"
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NS_SM "urn:xmpp:sm:3"
#define NS_CARBONS "urn:xmpp:carbons:2"
#define NS_DELAY "urn:xmpp:delay"
#define NS_HINTS "urn:xmpp:hints"
#define DATA_KEY "smacks.state"
#define CARBONS_KEY "carbons.enabled"   /* mod_carbons' session data: set while carbons are on */
#define GONE_MAX 10000                  /* resumption ids of ended sessions remembered at most */
#define TAP_PRIORITY -1000              /* the last tap: it writes the stanza itself */

static struct smacks_conf {
    long hibernation;       /* seconds a session with a lost connection waits for resumption */
    long push_hibernation;  /* the same for a session that enabled push (XEP-0357, "push.enabled") */
    long max_unacked;       /* stanzas queued unacknowledged before the stream is closed */
    long max_unacked_bytes; /* their bytes: max_unacked stanzas of limits.max_stanza_size are 256 MB */
    long ack_timeout;       /* seconds without an answer to <r/> before the connection counts as lost */
    long ack_request_after; /* unacknowledged stanzas that make the server ask (<r/>) at once */
    long ack_request_delay; /* else seconds after a stanza before it asks (0: at the end of this turn) */
    long max_hibernating;   /* hibernating sessions per account (each may hold max_unacked_bytes); 0: any */
} conf;

static module_ctx_t *mod;

/* One stanza written and not acknowledged: its bytes as written, for resending. */
typedef struct entry {
    char *buf;
    size_t len;
    int64_t when;               /* when it was queued (unix seconds), for a <delay/> if stored */
    unsigned message : 1;       /* a message that is not a carbon copy: stored if never acked */
    unsigned elsewhere : 1;     /* another resource of the user got it (or a carbon of it) */
    unsigned replayed : 1;      /* from offline storage: stays there until acknowledged */
} entry_t;

typedef struct sm {
    session_t *s;               /* the session it belongs to (changes on resumption) */
    uint32_t in_h;              /* stanzas handled from the client, modulo 2^32 */
    uint32_t out_acked;         /* the client's last h: the queue holds what was sent after */
    entry_t *q;                 /* ring of unacknowledged stanzas */
    size_t head, n, cap;
    size_t bytes;               /* the queued stanzas' lengths */
    unsigned resume : 1;        /* resumption enabled */
    unsigned r_pending : 1;     /* an <r/> of ours is unanswered */
    unsigned ended : 1;         /* the session ended: the queue was dealt with */
    unsigned overflow : 1;      /* over max_unacked: closing */
    unsigned resuming : 1;      /* resumed, not yet resent: what is written queues behind (CSI's flush) */
    module_timer_t *hib_timer, *close_timer, *resend_timer;
    module_timer_t *r_timer;    /* the delayed <r/> (ack_request_delay) for fewer than ack_request_after */
    int64_t r_deadline_ms;      /* while r_pending: when the connection counts as lost */
    long hib_secs;              /* this hibernation's length (hibernation or push_hibernation) */
    uint64_t hib_seq;           /* order of the hibernations (the oldest ends first over the cap) */
    struct sm *wait_prev, *wait_next;   /* in `waiting` while r_pending */
    char id[33];                /* resumption id (previd) */
} sm_t;

/* The resumption ids of sessions that ended: the h to give in <failed/> for a while. */
typedef struct gone {
    uint32_t h;
    int64_t until_ms;
    char bare[];                /* the account: only it learns h */
} gone_t;

static strmap_t *live;          /* resumption id -> sm_t of a live or hibernating session */
/* Sessions with an unanswered <r/>, oldest request first (one ack_timeout for all: the deadlines
 * are in order), swept by one timer a second: no timer is made per request. */
static sm_t *waiting_head, *waiting_tail;
static module_timer_t *sweep_timer;
static strmap_t *gone;          /* resumption id -> gone_t */

static sm_t *sm_of(const session_t *s) { return s ? session_get_data(s, DATA_KEY) : NULL; }

static void send_sm(session_t *s, xnode_t *n)
{
    session_send(s, n);     /* not a stanza: no tap counts it */
    xnode_free(n);
}

static void write_str(session_t *s, const char *str) { session_write_raw(s, str, strlen(str)); }

static void send_failed(session_t *s, const char *cond, const uint32_t *h, xnode_t *into)
{
    xnode_t *f = xnode_new("failed", NS_SM);
    if (h) {
        char b[16];
        snprintf(b, sizeof b, "%u", (unsigned)*h);
        xnode_set_attr(f, "h", b);
    }
    xnode_add_elem(f, cond, NS_STANZAS);
    if (into) xnode_add_child(into, f);
    else send_sm(s, f);
}

static void cancel(module_timer_t **t)
{
    module_timer_cancel(*t);
    *t = NULL;
}

/* ---- the queue ---- */

static entry_t *q_at(sm_t *sm, size_t i) { return &sm->q[(sm->head + i) % sm->cap]; }

static void q_push(sm_t *sm, entry_t e)
{
    if (sm->n == sm->cap) {     /* grow the ring (amortised: no allocation per stanza) */
        size_t cap = sm->cap ? sm->cap * 2 : 16;
        entry_t *q = xmalloc(cap * sizeof *q);
        for (size_t i = 0; i < sm->n; i++) q[i] = *q_at(sm, i);
        free(sm->q);
        sm->q = q;
        sm->head = 0;
        sm->cap = cap;
    }
    *q_at(sm, sm->n++) = e;
    sm->bytes += e.len;
}

static void q_drop(sm_t *sm, size_t k)
{
    for (size_t i = 0; i < k && sm->n; i++) {
        sm->bytes -= q_at(sm, 0)->len;
        free(q_at(sm, 0)->buf);
        sm->head = (sm->head + 1) % sm->cap;
        sm->n--;
    }
}

static void ack_answered(sm_t *sm);

static void sm_free(void *p)
{
    sm_t *sm = p;
    ack_answered(sm);
    cancel(&sm->hib_timer);
    cancel(&sm->close_timer);
    cancel(&sm->resend_timer);
    cancel(&sm->r_timer);
    if (live && sm->id[0] && strmap_get(live, sm->id) == sm) strmap_del(live, sm->id);
    q_drop(sm, sm->n);
    free(sm->q);
    free(sm);
}

/* ---- acknowledgements ---- */

/* No request of ours is open any more (answered, or the connection is gone). */
static void ack_answered(sm_t *sm)
{
    if (!sm->r_pending) return;
    sm->r_pending = 0;
    if (sm->wait_prev) sm->wait_prev->wait_next = sm->wait_next;
    else waiting_head = sm->wait_next;
    if (sm->wait_next) sm->wait_next->wait_prev = sm->wait_prev;
    else waiting_tail = sm->wait_prev;
    sm->wait_prev = sm->wait_next = NULL;
}

static void on_sweep(module_timer_t *t, void *ud)
{
    (void)t; (void)ud;
    int64_t now = now_ms();
    while (waiting_head && waiting_head->r_deadline_ms <= now) {
        sm_t *sm = waiting_head;
        ack_answered(sm);
        if (sm->ended || session_hibernating(sm->s)) continue;
        log_info("smacks", "%s: no acknowledgement within %lds, connection counted as lost", session_ip(sm->s), conf.ack_timeout);
        session_lose_connection(sm->s);     /* hibernates when resumable, else ends the session */
    }
}

static void request_ack(sm_t *sm)
{
    if (sm->r_pending || sm->ended || sm->resuming || session_hibernating(sm->s)) return;
    cancel(&sm->r_timer);
    write_str(sm->s, "<r xmlns='" NS_SM "'/>");
    sm->r_pending = 1;
    sm->r_deadline_ms = now_ms() + conf.ack_timeout * 1000;
    sm->wait_prev = waiting_tail;
    if (waiting_tail) waiting_tail->wait_next = sm;
    else waiting_head = sm;
    waiting_tail = sm;
}

static void on_r_timer(module_timer_t *t, void *ud)
{
    (void)t;
    sm_t *sm = ud;
    sm->r_timer = NULL;
    if (sm->n) request_ack(sm);
}

/* After a stanza was written, or our request was answered with stanzas still unacknowledged:
 * ask at once when ack_request_after of them are, else after ack_request_delay (one <r/> for a
 * burst instead of one a stanza, as Prosody does). Resumption does not depend on it: the queue
 * keeps every stanza until the client's h covers it. */
static void maybe_request_ack(sm_t *sm)
{
    if (sm->r_pending || !sm->n) return;
    if (sm->n >= (size_t)conf.ack_request_after) request_ack(sm);
    else if (!sm->r_timer) sm->r_timer = module_add_timer(mod, conf.ack_request_delay * 1000, 0, on_r_timer, sm);
}

/* The client's h: drop what it acknowledges. -1 when h is more than was sent. */
static int take_ack(sm_t *sm, uint32_t h)
{
    long k = smacks_newly_acked(sm->out_acked, h, sm->n);
    if (k < 0) return -1;
    q_drop(sm, (size_t)k);
    sm->out_acked = h;
    if (k > 0 && !sm->n) session_output_confirmed(sm->s);   /* offline replay deletes what is acked */
    return 0;
}

/* XEP-0198 §4: <undefined-condition/> with <handled-count-too-high h send-count/> */
static void handled_too_high(session_t *s, sm_t *sm, uint32_t h)
{
    log_info("smacks", "%s: acknowledged more stanzas than were sent (%zu unacknowledged)", session_ip(s), sm->n);
    uint32_t sent = sm->out_acked + (uint32_t)sm->n;      /* modulo 2^32, as h */
    session_set_data(s, SESSION_DATA_STREAM_ERROR_APP,
                     xasprintf("<handled-count-too-high xmlns='" NS_SM "' h='%u' send-count='%u'/>", (unsigned)h,
                               (unsigned)sent),
                     free);
    session_close(s, "undefined-condition", "You acknowledged more stanzas than were sent");
}

/* ---- the tap: counting both ways, queueing, writing ---- */

static void tap_in(session_t *s, void *ud, const xnode_t *st)
{
    (void)s; (void)st;
    ((sm_t *)ud)->in_h++;       /* modulo 2^32 */
}

static void on_close_overflow(module_timer_t *t, void *ud)
{
    (void)t;
    sm_t *sm = ud;
    sm->close_timer = NULL;
    /* a hibernating session just ends: what it queued goes to offline storage (on_closed) */
    session_close(sm->s, "policy-violation", "too many unacknowledged stanzas");
}

/* Whether a message to s (a full JID) also reached another resource of the user: as the
 * addressee of a bare-JID message (RFC 6121 §8.5.2.1) or as a carbon copy (XEP-0280). Only
 * resources without stream management count here: one with it may lose the message too, so
 * its copy settles nothing (held_elsewhere decides at the end instead). */
static int reached_elsewhere(session_t *s, const xnode_t *st)
{
    const char *to = xnode_attr(st, "to");
    int to_bare = to && !strchr(to, '/');
    /* mod_carbons' rule (XEP-0280 §6): chat, or normal with a body, not <private/> or no-copy */
    const char *type = xnode_attr(st, "type");
    int chat = type && strcmp(type, "chat") == 0;
    if (!type || strcmp(type, "normal") == 0) chat = xnode_child(st, "body", NULL) != NULL;
    if (xnode_child(st, "private", NS_CARBONS) || xnode_child(st, "no-copy", NS_HINTS)) chat = 0;
    for (session_t *o = user_sessions(session_jid(s)); o; o = session_next_in_user(o)) {
        if (o == s || sm_of(o)) continue;
        if (to_bare && session_receives_bare(o)) return 1;
        if (chat && session_available(o) && session_get_data(o, CARBONS_KEY)) return 1;
    }
    return 0;
}

static int tap_out(session_t *s, void *ud, const xnode_t *st, const char *buf, size_t len)
{
    sm_t *sm = ud;
    if (sm->ended) return SESSION_TAP_WRITE;
    entry_t e = {.buf = xstrndup(buf, len), .len = len, .when = now_unix()};
    if (strcmp(st->name, "message") == 0 && !xnode_child(st, "received", NS_CARBONS) &&
        !xnode_child(st, "sent", NS_CARBONS)) {
        e.message = 1;
        e.elsewhere = reached_elsewhere(s, st) ? 1 : 0;
        e.replayed = session_writing_replay(s) ? 1 : 0;
    }
    q_push(sm, e);
    if (session_hibernating(s) && strcmp(st->name, "message") == 0) {
        /* a phone asleep: mod_push may wake it (module.h) */
        const char *from_s = xnode_attr(st, "from");
        jid_t *from = from_s ? jid_new(from_s) : NULL;
        hook_event_t ev = {.name = HOOK_SMACKS_HIBERNATED_STANZA, .stanza = (xnode_t *)st, .origin = s,
                           .host = session_host(s), .from = from, .to = session_jid(s)};
        hook_fire(&ev);     /* read-only for the handlers, hence the cast */
        jid_free(from);
    }
    if ((sm->n > (size_t)conf.max_unacked || sm->bytes > (size_t)conf.max_unacked_bytes) && !sm->overflow) {
        /* not now: this may run inside a delivery loop over the user's sessions */
        sm->overflow = 1;
        log_info("smacks", "%s: more than %ld unacknowledged stanzas or %ld bytes of them", session_ip(s),
                 conf.max_unacked, conf.max_unacked_bytes);
        sm->close_timer = module_add_timer(mod, 0, 0, on_close_overflow, sm);
    }
    /* queued, resent on resumption */
    if (session_hibernating(s) || sm->overflow || sm->resuming) return SESSION_TAP_HELD;
    session_write_raw(s, buf, len);
    maybe_request_ack(sm);
    return SESSION_TAP_HELD;
}

static size_t tap_unconfirmed(const session_t *s, void *ud)
{
    (void)s;
    return ((sm_t *)ud)->n;
}

static const session_tap_t tap = {tap_in, tap_out, tap_unconfirmed};

/* ---- enable ---- */

/* XEP-0198 §3: enable on a bound stream, once. The answer goes to `into` when given (Bind2
 * inline, "smacks/enable"), else onto the stream. */
static void enable(session_t *s, const xnode_t *el, xnode_t *into)
{
    if (!session_jid(s) || sm_of(s)) {
        send_failed(s, "unexpected-request", NULL, into);
        return;
    }
    const char *r = xnode_attr(el, "resume");
    sm_t *sm = xcalloc(1, sizeof *sm);
    sm->s = s;
    sm->resume = r && (strcmp(r, "true") == 0 || strcmp(r, "1") == 0) && conf.hibernation > 0;
    session_set_data(s, DATA_KEY, sm, sm_free);
    session_add_tap(s, &tap, TAP_PRIORITY, sm);
    xnode_t *ok = xnode_new("enabled", NS_SM);
    if (sm->resume) {
        random_hex(sm->id, 16);
        strmap_put(live, sm->id, sm);
        session_set_resumable(s, 1);
        char max[24];
        snprintf(max, sizeof max, "%ld", conf.hibernation);
        xnode_set_attr(ok, "id", sm->id);
        xnode_set_attr(ok, "resume", "true");
        xnode_set_attr(ok, "max", max);
    }
    if (into) xnode_add_child(into, ok);
    else send_sm(s, ok);
}

/* ---- resume ---- */

/* XEP-0198 §5: what the client has not acknowledged, again, in order. */
static void resend(sm_t *sm)
{
    sm->resuming = 0;
    for (size_t i = 0; i < sm->n; i++) session_write_raw(sm->s, q_at(sm, i)->buf, q_at(sm, i)->len);
    log_info("smacks", "%s: session resumed, %zu stanza(s) sent again", session_ip(sm->s), sm->n);
    if (sm->n) request_ack(sm);
}

static void on_resend(module_timer_t *t, void *ud)
{
    (void)t;
    sm_t *sm = ud;
    sm->resend_timer = NULL;
    if (!sm->ended) resend(sm);
}

static void remember_gone(sm_t *sm, const jid_t *j)
{
    if (!sm->id[0]) return;
    int64_t now = now_ms();
    if (strmap_count(gone) >= GONE_MAX) {       /* forget the expired ones first */
        size_t pos = 0;
        const char *k;
        void *v;
        while (strmap_next(gone, &pos, &k, &v))
            if (((gone_t *)v)->until_ms < now) {
                free(strmap_del(gone, k));
            }
    }
    if (strmap_count(gone) >= GONE_MAX) return;
    size_t n = strlen(j->bare) + 1;
    gone_t *g = xmalloc(sizeof *g + n);
    g->h = sm->in_h;
    g->until_ms = now + conf.hibernation * 1000;
    memcpy(g->bare, j->bare, n);
    free(strmap_get(gone, sm->id));
    strmap_put(gone, sm->id, g);
}

/* <failed/> for a resumption id that names no session of this account: with the last h when
 * the session ended recently (XEP-0198 §5), <item-not-found/> either way. */
static void resume_failed(session_t *s, const char *previd, const char *me, xnode_t *into)
{
    gone_t *g = previd ? strmap_get(gone, previd) : NULL;
    if (g && g->until_ms < now_ms()) {
        free(strmap_del(gone, previd));
        g = NULL;
    }
    int mine = g && me && strcmp(g->bare, me) == 0;
    send_failed(s, "item-not-found", mine ? &g->h : NULL, into);
}

/* XEP-0198 §5: <resume previd h/> on an authenticated stream instead of binding. */
static void resume(session_t *s, const xnode_t *el, xnode_t *into)
{
    const char *previd = xnode_attr(el, "previd");
    uint32_t h;
    if (session_jid(s) || sm_of(s)) {
        send_failed(s, "unexpected-request", NULL, into);
        return;
    }
    if (!previd || smacks_parse_h(xnode_attr(el, "h"), &h) < 0) {
        send_failed(s, "bad-request", NULL, into);
        return;
    }
    /* only a session of the same account (host and authenticated localpart) is named */
    const char *user = session_account(s);
    char *me = user ? xasprintf("%s@%s", user, host_name(session_host(s))) : NULL;
    sm_t *sm = strmap_get(live, previd);
    const jid_t *old_jid = sm ? session_jid(sm->s) : NULL;
    if (old_jid && me && strcmp(old_jid->bare, me) == 0) {
        if (smacks_newly_acked(sm->out_acked, h, sm->n) < 0) {
            xnode_t *f = xnode_new("failed", NS_SM);
            char b[16];
            snprintf(b, sizeof b, "%u", (unsigned)sm->in_h);
            xnode_set_attr(f, "h", b);
            xnode_add_elem(f, "undefined-condition", NS_STANZAS);
            xnode_add_elem(f, "handled-count-too-high", NS_SM);
            if (into) xnode_add_child(into, f);
            else send_sm(s, f);
            free(me);
            return;
        }
        session_t *old = sm->s;
        char b[16];
        snprintf(b, sizeof b, "%u", (unsigned)sm->in_h);
        /* <resumed/> before anything else reaches the resumed session (the checks above are
         * session_take_over's: it succeeds) */
        xnode_t *ok = xnode_new("resumed", NS_SM);
        xnode_set_attr(ok, "previd", previd);
        xnode_set_attr(ok, "h", b);
        if (into) xnode_add_child(into, ok);
        else send_sm(s, ok);
        /* what "session-resumed" handlers write (CSI's held stanzas) is newer than the queue:
         * it queues behind, and nothing is written before the caller's <success/> (inline) */
        sm->resuming = 1;
        if (session_take_over(s, old) == 0) {
            sm->s = s;
            ack_answered(sm);
            cancel(&sm->hib_timer);
            take_ack(sm, h);
            /* inline (SASL2): after the caller wrote its answer holding <resumed/> */
            if (into) sm->resend_timer = module_add_timer(mod, 0, 0, on_resend, sm);
            else resend(sm);
            free(me);
            return;
        }
        sm->resuming = 0;
        log_warn("smacks", "%s: resumption refused by the core", session_ip(s));
        session_close(s, "internal-server-error", NULL);
        free(me);
        return;
    }
    /* another account's id, or no such session: the same answer (no probing of others' ids) */
    resume_failed(s, previd, me, into);
    free(me);
}

/* ---- hooks ---- */

static int on_element(hook_event_t *ev, void *ud)
{
    (void)ud;
    xnode_t *el = ev->stanza;
    if (!el->ns || strcmp(el->ns, NS_SM) != 0) return HOOK_PASS;
    session_t *s = ev->origin;
    sm_t *sm = sm_of(s);
    if (strcmp(el->name, "enable") == 0) enable(s, el, NULL);
    else if (strcmp(el->name, "resume") == 0) resume(s, el, NULL);
    else if (strcmp(el->name, "r") == 0 && sm) {
        char a[64];
        snprintf(a, sizeof a, "<a xmlns='" NS_SM "' h='%u'/>", (unsigned)sm->in_h);
        write_str(s, a);
    } else if (strcmp(el->name, "a") == 0 && sm) {
        uint32_t h;
        if (smacks_parse_h(xnode_attr(el, "h"), &h) < 0) {
            session_close(s, "invalid-xml", "<a/> without a valid h");
            return HOOK_HANDLED;
        }
        if (take_ack(sm, h) < 0) {
            handled_too_high(s, sm, h);
            return HOOK_HANDLED;
        }
        ack_answered(sm);
        maybe_request_ack(sm);         /* more was sent after our <r/> */
    } else {
        /* <r/> or <a/> before <enable/> (§4: only once enabled) */
        send_failed(s, "unexpected-request", NULL, NULL);
    }
    return HOOK_HANDLED;
}

/* "smacks/enable" and "smacks/resume" (for Bind2 / SASL2 inline): ev->stanza is the <enable/>
 * or <resume/> element (read-only), ev->origin the session; the answer (<enabled/>, <resumed/>,
 * <failed/>) is appended to ev->features instead of being written. */
static int on_inline_enable(hook_event_t *ev, void *ud)
{
    (void)ud;
    enable(ev->origin, ev->stanza, ev->features);
    return HOOK_HANDLED;
}

static int on_inline_resume(hook_event_t *ev, void *ud)
{
    (void)ud;
    resume(ev->origin, ev->stanza, ev->features);
    return HOOK_HANDLED;
}

static int on_features(hook_event_t *ev, void *ud)
{
    (void)ud;
    xnode_add_elem(ev->features, "sm", NS_SM);
    return HOOK_PASS;
}

/* XEP-0386 §3.1 (XEP-0198 1.6 with Bind2): stream management can be enabled inside Bind2 ... */
static int on_bind2_inline(hook_event_t *ev, void *ud)
{
    (void)ud;
    xnode_set_attr(xnode_add_elem(ev->features, "feature", NULL), "var", NS_SM);
    return HOOK_PASS;
}

/* ... <enable/> inside <bind/>: <enabled/> (or <failed/>) inside <bound/> */
static int on_bind2_enable(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!ev->origin || strcmp(ev->stanza->name, "enable") != 0) return HOOK_PASS;
    enable(ev->origin, ev->stanza, ev->features);
    return HOOK_HANDLED;
}

/* XEP-0388 §2.1 / XEP-0198: and a session resumed inside SASL2 (<sm/> in its <inline/>) ... */
static int on_sasl2_inline(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (conf.hibernation > 0) xnode_add_elem(ev->features, "sm", NS_SM);
    return HOOK_PASS;
}

/* ... <resume/> inside <authenticate/>: <resumed/> (Bind2 then skipped: the session is bound) or
 * <failed/> (Bind2, if asked for, binds a new one) inside <success/> */
static int on_sasl2_request(hook_event_t *ev, void *ud)
{
    (void)ud;
    if (!ev->origin || strcmp(ev->stanza->name, "resume") != 0) return HOOK_PASS;
    resume(ev->origin, ev->stanza, ev->features);
    return HOOK_HANDLED;
}

static void on_hibernation_over(module_timer_t *t, void *ud)
{
    (void)t;
    sm_t *sm = ud;
    sm->hib_timer = NULL;
    log_info("smacks", "%s: not resumed within %lds, session ends", session_ip(sm->s), sm->hib_secs);
    session_close(sm->s, NULL, NULL);      /* "session-closed": on_closed stores the unacked */
}

/* Over smacks.max_hibernating_per_account: the account's oldest hibernating sessions end as if
 * their hibernation were over (their unacknowledged messages go to offline storage, on_closed). */
static void cap_hibernating(session_t *s)
{
    const jid_t *j = session_jid(s);
    if (conf.max_hibernating <= 0 || !j) return;
    jid_t *bare = jid_bare_of(j);
    for (int guard = 0; guard < 1000; guard++) {
        long n = 0;
        sm_t *oldest = NULL;
        for (session_t *o = user_sessions(bare); o; o = session_next_in_user(o)) {
            sm_t *osm = sm_of(o);
            if (!osm || osm->ended || !session_hibernating(o)) continue;
            n++;
            if (!oldest || osm->hib_seq < oldest->hib_seq) oldest = osm;
        }
        if (n <= conf.max_hibernating || !oldest) break;
        log_info("smacks", "%s: more than %ld hibernating sessions of the account, the oldest ends",
                 session_ip(oldest->s), conf.max_hibernating);
        cancel(&oldest->hib_timer);
        session_close(oldest->s, NULL, NULL);
        if (!oldest->ended) break;          /* not closed (already closing): do not loop */
    }
    jid_free(bare);
}

static int on_hibernated(hook_event_t *ev, void *ud)
{
    (void)ud;
    sm_t *sm = sm_of(ev->origin);
    if (!sm) return HOOK_PASS;
    ack_answered(sm);
    cancel(&sm->r_timer);     /* resend() asks again after <resumed/> */
    cancel(&sm->hib_timer);
    /* a phone that enabled push is woken by it and may sleep longer than hibernation */
    sm->hib_secs = session_get_data(ev->origin, SESSION_DATA_PUSH_ENABLED) ? conf.push_hibernation : conf.hibernation;
    sm->hib_timer = module_add_timer(mod, sm->hib_secs * 1000, 0, on_hibernation_over, sm);
    static uint64_t seq;
    sm->hib_seq = ++seq;
    cap_hibernating(ev->origin);
    return HOOK_PASS;
}

/* Undelivered for good: "message/undelivered" as for a message that found no session (offline
 * storage keeps it; without such a module the sender gets an error), with a <delay/> of when it
 * arrived here. */
static void store_unacked(session_t *s, const jid_t *bare, const entry_t *e)
{
    xnode_t *st = xnode_parse_one(e->buf, e->len, NS_CLIENT);
    if (!st) return;
    if (!xnode_child(st, "delay", NS_DELAY)) {
        char stamp[XEP0082_SIZE];
        xep0082_timestamp(stamp, sizeof stamp, e->when);
        xnode_t *d = xnode_add_elem(st, "delay", NS_DELAY);
        xnode_set_attr(d, "from", bare->domain);
        xnode_set_attr(d, "stamp", stamp);
    }
    const char *from_s = xnode_attr(st, "from");
    jid_t *from = from_s ? jid_new(from_s) : NULL;
    hook_event_t ev = {.name = HOOK_MESSAGE_UNDELIVERED, .stanza = st, .host = session_host(s), .from = from, .to = bare};
    if (hook_fire(&ev) != HOOK_HANDLED && ev.stanza) {
        const char *type = xnode_attr(ev.stanza, "type");
        xnode_t *err = type && strcmp(type, "headline") == 0 ? NULL : stanza_error_cond(ev.stanza, STANZA_ERR_SERVICE_UNAVAILABLE, NULL);
        if (err) route_stanza(err);
    }
    xnode_free(ev.stanza);
    jid_free(from);
}

/* A bare-JID message that another stream-managed session of the user still holds unacknowledged
 * (the same bytes): that session stores it if it ends without an ack, so it is not stored twice. */
static int held_elsewhere(session_t *s, const jid_t *user, const entry_t *e)
{
    for (session_t *o = user_sessions(user); o; o = session_next_in_user(o)) {
        sm_t *osm = o == s ? NULL : sm_of(o);
        if (!osm || osm->ended) continue;
        for (size_t i = 0; i < osm->n; i++) {
            const entry_t *oe = q_at(osm, i);
            if (oe->message && oe->len == e->len && memcmp(oe->buf, e->buf, e->len) == 0) return 1;
        }
    }
    return 0;
}

/* The session ended for good (closed, timed out, hibernation over, replaced): XEP-0198 §5 wants
 * unacknowledged stanzas treated as undelivered. Messages go to offline storage once; carbon
 * copies and messages another resource also got do not (the user has them). */
static int on_closed(hook_event_t *ev, void *ud)
{
    (void)ud;
    sm_t *sm = sm_of(ev->origin);
    if (!sm || sm->ended || !ev->from) return HOOK_PASS;
    sm->ended = 1;
    ack_answered(sm);
    cancel(&sm->hib_timer);
    jid_t *bare = jid_bare_of(ev->from);
    size_t stored = 0;
    for (size_t i = 0; i < sm->n; i++) {
        entry_t *e = q_at(sm, i);
        if (!e->message || e->elsewhere || e->replayed) continue;   /* replayed: still stored */
        if (held_elsewhere(ev->origin, ev->from, e)) continue;
        store_unacked(ev->origin, bare, e);
        stored++;
    }
    if (stored) log_info("smacks", "%s: %zu unacknowledged message(s) handed to offline delivery", session_ip(ev->origin), stored);
    q_drop(sm, sm->n);
    if (sm->id[0]) {
        remember_gone(sm, bare);
        if (strmap_get(live, sm->id) == sm) strmap_del(live, sm->id);
    }
    jid_free(bare);
    return HOOK_PASS;
}

static int load(module_ctx_t *m)
{
    mod = m;
    live = strmap_new();
    gone = strmap_new();
    waiting_head = waiting_tail = NULL;
    sweep_timer = module_add_timer(m, 1000, 1, on_sweep, NULL);
    module_hook(m, HOOK_STREAM_FEATURES, 0, on_features, NULL);
    module_hook(m, HOOK_STREAM_ELEMENT, 0, on_element, NULL);
    module_hook(m, "smacks/enable", 0, on_inline_enable, NULL);
    module_hook(m, "smacks/resume", 0, on_inline_resume, NULL);
    module_hook(m, HOOK_BIND2_INLINE, 0, on_bind2_inline, NULL);
    module_hook(m, HOOK_BIND2_ENABLE NS_SM, 0, on_bind2_enable, NULL);
    module_hook(m, HOOK_SASL2_INLINE, 0, on_sasl2_inline, NULL);
    module_hook(m, HOOK_SASL2_REQUEST NS_SM, 0, on_sasl2_request, NULL);
    module_hook(m, HOOK_SESSION_HIBERNATED, 0, on_hibernated, NULL);
    /* before offline (0) hands the session's replay over: the stored messages queue behind */
    module_hook(m, HOOK_SESSION_CLOSED, 10, on_closed, NULL);
    return 0;
}

static void unload(module_ctx_t *m)
{
    (void)m;
    strmap_free(live);          /* the sm_t values belong to their sessions */
    live = NULL;
    strmap_free_all(gone, free);
    gone = NULL;
}

static const module_option_t options[] = {
    {.name = "hibernation", .type = MOPT_DURATION, .offset = offsetof(struct smacks_conf, hibernation),
     .def = 300, .min = 0, .max = 7 * 86400},
    {.name = "push_hibernation", .type = MOPT_DURATION, .offset = offsetof(struct smacks_conf, push_hibernation),
     .def = 72 * 3600, .min = 0, .max = 30 * 86400},
    {.name = "max_unacked", .type = MOPT_INT, .offset = offsetof(struct smacks_conf, max_unacked),
     .def = 1000, .min = 1, .max = 1000000},
    {.name = "max_unacked_bytes", .type = MOPT_SIZE, .offset = offsetof(struct smacks_conf, max_unacked_bytes),
     .def = 4 * 1024 * 1024, .min = 65536, .max = 1L << 30},
    {.name = "ack_timeout", .type = MOPT_DURATION, .offset = offsetof(struct smacks_conf, ack_timeout),
     .def = 60, .min = 1, .max = 3600},
    {.name = "ack_request_after", .type = MOPT_INT, .offset = offsetof(struct smacks_conf, ack_request_after),
     .def = 5, .min = 1, .max = 1000000},
    {.name = "ack_request_delay", .type = MOPT_DURATION, .offset = offsetof(struct smacks_conf, ack_request_delay),
     .def = 1, .min = 0, .max = 3600},
    {.name = "max_hibernating_per_account", .type = MOPT_INT, .offset = offsetof(struct smacks_conf, max_hibernating),
     .def = 10, .min = 0, .max = 1000000},
    {0}};

const module_t civitas_module = { .abi = CIVITAS_MODULE_ABI, .name = "smacks", .load = load, .unload = unload,
                                    .options = options, .conf = &conf };
