/* modules/mod_csi.c: XEP-0352 Client State Indication: while a client says it is <inactive/>, the
 * presence updates and chat states for it wait (only the latest per contact), so a phone's radio
 * wakes for what matters; anything else flushes what waits, in order, and goes at once. */
#include "module.h"
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define NS_CSI "urn:xmpp:csi:0"
#define NS_CHATSTATES "http://jabber.org/protocol/chatstates"
#define NS_CARBONS "urn:xmpp:carbons:2"
#define NS_FORWARD "urn:xmpp:forward:0"
#define STATE_KEY "csi.state"
#define TAP_PRIORITY 100               /* above XEP-0198's (-1000): it counts what we let through */

static struct csi_conf {
    long max_held;          /* stanzas held for one session; one more flushes them all */
} conf;

/* One held stanza, in arrival order; key: what makes a later one replace it. */
typedef struct held {
    struct held *prev, *next;
    char *key;
    xnode_t *st;
    size_t size;            /* its serialised size */
} held_t;

/* A session's state (session data): inactive, and what waits while it is. */
typedef struct csi {
    unsigned inactive : 1;
    held_t *head, *tail;
    strmap_t *by_key;       /* key -> held_t */
    size_t n;
    size_t bytes;           /* sum of the held stanzas' sizes */
} csi_t;

static void held_unlink(csi_t *c, held_t *h)
{
    if (h->prev) h->prev->next = h->next;
    else c->head = h->next;
    if (h->next) h->next->prev = h->prev;
    else c->tail = h->prev;
    strmap_del(c->by_key, h->key);
    c->n--;
    c->bytes -= h->size;
}

static void held_free(held_t *h)
{
    xnode_free(h->st);
    free(h->key);
    free(h);
}

/* The session ended: what still waits was presence and chat states for a client that is gone. */
static void csi_free(void *p)
{
    csi_t *c = p;
    while (c->head) {
        held_t *h = c->head;
        held_unlink(c, h);
        held_free(h);
    }
    strmap_free(c->by_key);
    free(c);
}

static csi_t *csi_of(session_t *s, int create)
{
    csi_t *c = session_get_data(s, STATE_KEY);
    if (!c && create) {
        c = xcalloc(1, sizeof *c);
        c->by_key = strmap_new();
        session_set_data(s, STATE_KEY, c, csi_free);
    }
    return c;
}

static const session_tap_t tap;

/* Write everything held, oldest first, through the taps after ours (XEP-0198 counts them). */
static void flush(session_t *s, csi_t *c)
{
    if (!c->head) return;
    log_debug("csi", "%s: flushing %zu held stanza(s)", session_ip(s), c->n);
    while (c->head) {
        held_t *h = c->head;
        held_unlink(c, h);
        session_send_after(s, &tap, h->st);
        held_free(h);
    }
}

/* A message that is only a chat state (XEP-0085): no body, subject, OMEMO payload, call or
 * anything but the chat state and the hints, ids and addressing that travel with it. */
static int only_chat_state(const xnode_t *m)
{
    const char *type = xnode_attr(m, "type");
    if (type && strcmp(type, "error") == 0) return 0;
    int state = 0;
    for (xnode_t *c = xnode_first_elem(m); c; c = xnode_next_elem(c)) {
        if (strcmp(c->ns, NS_CHATSTATES) == 0) state = 1;
        else if (strcmp(c->ns, "urn:xmpp:hints") == 0 || strcmp(c->ns, "urn:xmpp:sid:0") == 0 ||
                 strcmp(c->ns, "urn:xmpp:delay") == 0 || strcmp(c->ns, "http://jabber.org/protocol/address") == 0 ||
                 strcmp(c->ns, "http://jabber.org/protocol/muc#user") == 0)
            continue;
        else return 0;  /* body, subject, <encrypted/> of either OMEMO namespace, XEP-0353, receipts... */
    }
    return state;
}

/* The key under which st may wait (malloc'd), or NULL when st is important: it goes now and
 * flushes what waits before it. Presence updates (available, unavailable) wait under their
 * sender's full JID, chat states under their sender's; a carbon of a chat state under the contact
 * it is about. Everything else is important: messages with a body, OMEMO payloads (no body),
 * XEP-0353 call signalling, receipts and markers, errors, subscription requests, IQs. */
static char *hold_key(const xnode_t *st)
{
    const char *from = xnode_attr(st, "from");
    if (!from) return NULL;
    if (strcmp(st->name, "presence") == 0) {
        const char *type = xnode_attr(st, "type");
        if (type && strcmp(type, "unavailable") != 0) return NULL;
        return xasprintf("p %s", from);
    }
    if (strcmp(st->name, "message") != 0) return NULL;
    if (only_chat_state(st)) return xasprintf("c %s", from);
    /* XEP-0280: a carbon of a chat state, keyed by the conversation's contact */
    for (xnode_t *c = xnode_first_elem(st); c; c = xnode_next_elem(c)) {
        if (strcmp(c->ns, NS_CARBONS) != 0 || (strcmp(c->name, "sent") != 0 && strcmp(c->name, "received") != 0))
            continue;
        xnode_t *inner = xnode_child(xnode_child(c, "forwarded", NS_FORWARD), "message", NULL);
        if (!inner || !only_chat_state(inner)) return NULL;
        int sent = strcmp(c->name, "sent") == 0;
        const char *peer = xnode_attr(inner, sent ? "to" : "from");
        return peer ? xasprintf("%s %s", sent ? "s" : "r", peer) : NULL;
    }
    return NULL;
}

/* The session's tap (session.h), added when it first goes inactive, above XEP-0198's so that
 * stream management counts only what is really written: holds back what may wait. */
static int tap_out(session_t *s, void *ud, const xnode_t *st, const char *buf, size_t len)
{
    csi_t *c = ud;
    if (!c->inactive) return SESSION_TAP_WRITE;
    char *key = hold_key(st);
    if (!key) {             /* important: what waits goes first, then this one */
        flush(s, c);
        return SESSION_TAP_WRITE;
    }
    held_t *old = strmap_get(c->by_key, key);
    if (old) {              /* only the latest per contact: the older one is void */
        held_unlink(c, old);
        held_free(old);
    }
    /* bounded like the output queue it stands in for: past max_held stanzas or half of
     * limits.max_output_buffer, what waits goes out (and a client that does not read is dropped
     * by the output limit as it would be without CSI) */
    if (c->n >= (size_t)conf.max_held || c->bytes + len > session_output_limit() / 2) flush(s, c);
    held_t *h = xcalloc(1, sizeof *h);
    h->key = key;
    h->size = len;
    c->bytes += len;
    h->st = xnode_copy(st);
    h->prev = c->tail;
    if (c->tail) c->tail->next = h;
    else c->head = h;
    c->tail = h;
    strmap_put(c->by_key, key, h);
    c->n++;
    return SESSION_TAP_HELD;
}

static const session_tap_t tap = {.out = tap_out};

/* Set the client's state (XEP-0352 §4.2), from the stream or inline in Bind2 (XEP-0386). */
static void set_state(session_t *s, int inactive)
{
    csi_t *c = csi_of(s, 0);
    if (!c) {
        if (!inactive) return;     /* active and never inactive: nothing to do */
        c = csi_of(s, 1);
        session_add_tap(s, &tap, TAP_PRIORITY, c);
    }
    c->inactive = inactive;
    if (!inactive) flush(s, c);
}

/* "stream-element": <inactive/> and <active/> (XEP-0352 §4.2). No answer is sent. Before
 * binding there is nothing to hold yet (and a <resume/> would replace the session's state):
 * ignored; Bind2 carries it inline instead (on_inline). */
static int on_state(hook_event_t *ev, void *ud)
{
    (void)ud;
    const xnode_t *el = ev->stanza;
    if (!el->ns || strcmp(el->ns, NS_CSI) != 0) return HOOK_PASS;
    int inactive = strcmp(el->name, "inactive") == 0;
    if (!inactive && strcmp(el->name, "active") != 0) return HOOK_PASS;    /* the stream closes */
    if (session_jid(ev->origin)) set_state(ev->origin, inactive);
    return HOOK_HANDLED;
}

/* XEP-0386 §3.1: the client state can be set inside Bind2 ... */
static int on_bind2_inline(hook_event_t *ev, void *ud)
{
    (void)ud;
    xnode_set_attr(xnode_add_elem(ev->features, "feature", NULL), "var", NS_CSI);
    return HOOK_PASS;
}

/* ... <inactive/> (or <active/>) inside <bind/>, just bound; nothing is answered */
static int on_bind2_enable(hook_event_t *ev, void *ud)
{
    (void)ud;
    const char *name = ev->stanza->name;
    int inactive = strcmp(name, "inactive") == 0;
    if (!ev->origin || (!inactive && strcmp(name, "active") != 0)) return HOOK_PASS;
    set_state(ev->origin, inactive);
    return HOOK_HANDLED;
}

/* XEP-0352 §5.2: the state is not restored when a stream is resumed (XEP-0198): the resumed
 * session is active, and what waited goes out (mod_smacks queues it behind what it sends again:
 * it writes nothing of its own until the resumption is answered). */
static int on_resumed(hook_event_t *ev, void *ud)
{
    (void)ud;
    csi_t *c = ev->origin ? csi_of(ev->origin, 0) : NULL;
    if (c) {
        c->inactive = 0;
        flush(ev->origin, c);
    }
    return HOOK_PASS;
}

/* XEP-0352 §4.1: the stream feature after authentication. */
static int on_features(hook_event_t *ev, void *ud)
{
    (void)ud;
    xnode_add_elem(ev->features, "csi", NS_CSI);
    return HOOK_PASS;
}

static int load(module_ctx_t *m)
{
    module_hook(m, HOOK_STREAM_FEATURES, 0, on_features, NULL);
    module_hook(m, HOOK_STREAM_ELEMENT, 0, on_state, NULL);
    module_hook(m, HOOK_SESSION_RESUMED, 0, on_resumed, NULL);
    module_hook(m, HOOK_BIND2_INLINE, 0, on_bind2_inline, NULL);
    module_hook(m, HOOK_BIND2_ENABLE NS_CSI, 0, on_bind2_enable, NULL);
    return 0;
}

static const module_option_t options[] = {
    {.name = "max_held", .type = MOPT_INT, .offset = offsetof(struct csi_conf, max_held), .def = 1000, .min = 1,
     .max = 100000},
    {0}};

const module_t civitas_module = {.abi = CIVITAS_MODULE_ABI, .name = "csi", .load = load, .options = options,
                                 .conf = &conf};
