/* tests/clients/xmpp_client.c: a scriptable command-line XMPP client on libstrophe for the
 * integration tests: logs in, runs the actions given on the command line in order, reports events. */
/*
 * Usage: xmpp_client --jid J --password P [--host H] [--port N] [--direct-tls] [--cafile F]
 *                    [--trust] [--allow-plaintext] [--timeout SECONDS] [--verbose] ACTION...
 * Actions, run in order once the session is bound (resource binding done):
 *   --send TO BODY                  send a chat message
 *   --expect-message FROM BODY      wait (up to --timeout) for a message whose 'from' contains FROM
 *                                   and whose body is BODY
 *   --iq TYPE TO NS                 send an IQ with one empty child in NS (element name: "ping" for
 *                                   urn:xmpp:ping, "time" for urn:xmpp:time, else "query"; or "NS NAME")
 *                                   and wait for the reply; succeeds on type='result'
 *   --presence                      send available presence
 *   --presence-priority N           send available presence with <priority>N</priority>
 *   --expect-stream-error COND      wait until the server ends the stream with this condition
 * Output, one line per event on stdout:
 *   bound <full jid> | message <from> <body> | iq-result <xml> | iq-error <xml> |
 *   stream-error <condition> | disconnected
 * Exit status: 0 when the session was bound and every action succeeded, 1 otherwise, 2 on bad usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <strophe.h>

typedef enum { ACT_SEND, ACT_EXPECT_MSG, ACT_IQ, ACT_PRESENCE, ACT_EXPECT_SE } act_kind_t;

typedef struct action {
    act_kind_t kind;
    const char *a, *b, *c;      /* arguments, as given on the command line */
} action_t;

typedef struct msg {
    char *from, *body;
    struct msg *next;
} msg_t;

typedef struct state {
    xmpp_ctx_t *ctx;
    xmpp_conn_t *conn;
    action_t *acts;
    int nacts;
    int cur;                    /* index of the running action */
    int cur_started;            /* the running action has been started (IQ sent) */
    int cur_done;               /* 1 success, -1 failure, 0 pending */
    double cur_deadline;
    double timeout;
    int bound, disconnected, failed;
    char *stream_error;         /* condition of a received stream error */
    msg_t *msgs, **msgs_tail;   /* received, not yet matched */
    int iq_seq;
} state_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void usage(void)
{
    fprintf(stderr, "usage: xmpp_client --jid J --password P [--host H] [--port N] [--direct-tls] "
                    "[--cafile F] [--trust] [--allow-plaintext] [--timeout S] [--verbose] "
                    "[--send TO BODY] [--expect-message FROM BODY] [--iq TYPE TO NS] [--presence] "
                    "[--presence-priority N] [--expect-stream-error COND]...\n");
    exit(2);
}

/* Prints text on one line: newlines and carriage returns become spaces. */
static void print_oneline(const char *prefix, const char *text)
{
    printf("%s", prefix);
    for (const char *p = text; p && *p; p++)
        putchar(*p == '\n' || *p == '\r' ? ' ' : *p);
    putchar('\n');
    fflush(stdout);
}

static void stream_error_condition(state_t *st, xmpp_stream_error_t *se)
{
    const char *cond = "undefined-condition";
    if (se->stanza) {
        for (xmpp_stanza_t *c = xmpp_stanza_get_children(se->stanza); c; c = xmpp_stanza_get_next(c)) {
            const char *name = xmpp_stanza_get_name(c);
            const char *ns = xmpp_stanza_get_ns(c);
            if (name && ns && strcmp(ns, "urn:ietf:params:xml:ns:xmpp-streams") == 0 &&
                strcmp(name, "text") != 0) {
                cond = name;
                break;
            }
        }
    }
    free(st->stream_error);
    st->stream_error = strdup(cond);
    printf("stream-error %s\n", cond);
    fflush(stdout);
}

static void conn_handler(xmpp_conn_t *conn, xmpp_conn_event_t status, int error,
                         xmpp_stream_error_t *stream_error, void *userdata)
{
    state_t *st = userdata;
    (void)error;
    if (status == XMPP_CONN_CONNECT) {
        st->bound = 1;
        printf("bound %s\n", xmpp_conn_get_bound_jid(conn) ? xmpp_conn_get_bound_jid(conn) : "(null)");
        fflush(stdout);
        return;
    }
    if (stream_error)
        stream_error_condition(st, stream_error);
    if (!st->disconnected) {
        printf("disconnected\n");
        fflush(stdout);
    }
    st->disconnected = 1;
}

static int message_handler(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *userdata)
{
    state_t *st = userdata;
    (void)conn;
    char *body = xmpp_message_get_body(stanza);
    if (!body)
        return 1;
    const char *from = xmpp_stanza_get_from(stanza);
    msg_t *m = calloc(1, sizeof(*m));
    if (!m) {
        xmpp_free(st->ctx, body);
        return 1;
    }
    m->from = strdup(from ? from : "");
    m->body = strdup(body);
    printf("message %s ", m->from);
    print_oneline("", m->body);
    xmpp_free(st->ctx, body);
    *st->msgs_tail = m;
    st->msgs_tail = &m->next;
    return 1;
}

static int iq_reply_handler(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *userdata)
{
    state_t *st = userdata;
    (void)conn;
    char *buf = NULL;
    size_t len = 0;
    const char *type = xmpp_stanza_get_type(stanza);
    int ok = type && strcmp(type, "result") == 0;
    if (xmpp_stanza_to_text(stanza, &buf, &len) == XMPP_EOK) {
        print_oneline(ok ? "iq-result " : "iq-error ", buf);
        xmpp_free(st->ctx, buf);
    }
    st->cur_done = ok ? 1 : -1;
    return 0;   /* one reply per id */
}

static void free_msg(msg_t *m)
{
    free(m->from);
    free(m->body);
    free(m);
}

/* Consumes the first received message matching the running expect-message action. */
static int take_matching_message(state_t *st, const char *from_sub, const char *body)
{
    for (msg_t **pp = &st->msgs; *pp; pp = &(*pp)->next) {
        msg_t *m = *pp;
        if (strstr(m->from, from_sub) && strcmp(m->body, body) == 0) {
            *pp = m->next;
            if (st->msgs_tail == &m->next)
                st->msgs_tail = pp;
            free_msg(m);
            return 1;
        }
    }
    return 0;
}

static void send_iq(state_t *st, const action_t *a)
{
    char id[32], ns[256];
    const char *name;
    snprintf(id, sizeof(id), "xc%d", ++st->iq_seq);
    snprintf(ns, sizeof(ns), "%s", a->c);
    char *sp = strchr(ns, ' ');
    if (sp) {
        *sp = '\0';
        name = sp + 1;
    } else if (strcmp(ns, "urn:xmpp:ping") == 0) {
        name = "ping";
    } else if (strcmp(ns, "urn:xmpp:time") == 0) {
        name = "time";
    } else {
        name = "query";
    }
    xmpp_stanza_t *iq = xmpp_iq_new(st->ctx, a->a, id);
    xmpp_stanza_t *child = xmpp_stanza_new(st->ctx);
    xmpp_stanza_set_name(child, name);
    xmpp_stanza_set_ns(child, ns);
    xmpp_stanza_add_child(iq, child);
    xmpp_stanza_release(child);
    if (a->b[0])
        xmpp_stanza_set_to(iq, a->b);
    xmpp_id_handler_add(st->conn, iq_reply_handler, id, st);
    xmpp_send(st->conn, iq);
    xmpp_stanza_release(iq);
}

static void send_presence(state_t *st, const char *priority)
{
    xmpp_stanza_t *pres = xmpp_presence_new(st->ctx);
    if (priority) {
        xmpp_stanza_t *prio = xmpp_stanza_new(st->ctx);
        xmpp_stanza_t *text = xmpp_stanza_new(st->ctx);
        xmpp_stanza_set_name(prio, "priority");
        xmpp_stanza_set_text(text, priority);
        xmpp_stanza_add_child(prio, text);
        xmpp_stanza_add_child(pres, prio);
        xmpp_stanza_release(text);
        xmpp_stanza_release(prio);
    }
    xmpp_send(st->conn, pres);
    xmpp_stanza_release(pres);
}

/* Advances the action script; called after every loop iteration once bound. */
static void step(state_t *st)
{
    while (st->cur < st->nacts && !st->failed) {
        const action_t *a = &st->acts[st->cur];
        if (!st->cur_started) {
            st->cur_started = 1;
            st->cur_done = 0;
            st->cur_deadline = now_s() + st->timeout;
            switch (a->kind) {
            case ACT_SEND: {
                char id[32];
                snprintf(id, sizeof(id), "xm%d", ++st->iq_seq);
                xmpp_stanza_t *m = xmpp_message_new(st->ctx, "chat", a->a, id);
                xmpp_message_set_body(m, a->b);
                xmpp_send(st->conn, m);
                xmpp_stanza_release(m);
                st->cur_done = 1;
                break;
            }
            case ACT_PRESENCE:
                send_presence(st, a->a);
                st->cur_done = 1;
                break;
            case ACT_IQ:
                send_iq(st, a);
                break;
            case ACT_EXPECT_MSG:
            case ACT_EXPECT_SE:
                break;
            }
        }
        if (a->kind == ACT_EXPECT_MSG && take_matching_message(st, a->a, a->b))
            st->cur_done = 1;
        if (a->kind == ACT_EXPECT_SE && st->stream_error)
            st->cur_done = strcmp(st->stream_error, a->a) == 0 ? 1 : -1;
        if (st->cur_done == 0 && now_s() > st->cur_deadline) {
            fprintf(stderr, "xmpp_client: action %d timed out\n", st->cur + 1);
            st->cur_done = -1;
        }
        if (st->cur_done == 0)
            return;
        if (st->cur_done < 0) {
            fprintf(stderr, "xmpp_client: action %d failed\n", st->cur + 1);
            st->failed = 1;
            return;
        }
        st->cur++;
        st->cur_started = 0;
    }
}

static int need(int i, int n, int argc)
{
    if (i + n >= argc)
        usage();
    return 1;
}

int main(int argc, char **argv)
{
    const char *jid = NULL, *password = NULL, *host = "127.0.0.1", *cafile = NULL;
    unsigned short port = 5222;
    long flags = XMPP_CONN_FLAG_MANDATORY_TLS;
    int verbose = 0;
    state_t st;
    memset(&st, 0, sizeof(st));
    st.timeout = 10;
    st.msgs_tail = &st.msgs;
    st.acts = calloc((size_t)argc, sizeof(action_t));
    if (!st.acts)
        return 1;

    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        action_t *a = &st.acts[st.nacts];
        if (!strcmp(o, "--jid") && need(i, 1, argc)) jid = argv[++i];
        else if (!strcmp(o, "--password") && need(i, 1, argc)) password = argv[++i];
        else if (!strcmp(o, "--host") && need(i, 1, argc)) host = argv[++i];
        else if (!strcmp(o, "--port") && need(i, 1, argc)) port = (unsigned short)atoi(argv[++i]);
        else if (!strcmp(o, "--cafile") && need(i, 1, argc)) cafile = argv[++i];
        else if (!strcmp(o, "--timeout") && need(i, 1, argc)) st.timeout = atof(argv[++i]);
        else if (!strcmp(o, "--direct-tls")) flags |= XMPP_CONN_FLAG_LEGACY_SSL;
        else if (!strcmp(o, "--trust")) flags |= XMPP_CONN_FLAG_TRUST_TLS;
        else if (!strcmp(o, "--allow-plaintext")) flags &= ~XMPP_CONN_FLAG_MANDATORY_TLS;
        else if (!strcmp(o, "--verbose")) verbose = 1;
        else if (!strcmp(o, "--send") && need(i, 2, argc)) {
            *a = (action_t){ACT_SEND, argv[i + 1], argv[i + 2], NULL};
            st.nacts++; i += 2;
        } else if (!strcmp(o, "--expect-message") && need(i, 2, argc)) {
            *a = (action_t){ACT_EXPECT_MSG, argv[i + 1], argv[i + 2], NULL};
            st.nacts++; i += 2;
        } else if (!strcmp(o, "--iq") && need(i, 3, argc)) {
            *a = (action_t){ACT_IQ, argv[i + 1], argv[i + 2], argv[i + 3]};
            st.nacts++; i += 3;
        } else if (!strcmp(o, "--presence")) {
            *a = (action_t){ACT_PRESENCE, NULL, NULL, NULL};
            st.nacts++;
        } else if (!strcmp(o, "--presence-priority") && need(i, 1, argc)) {
            *a = (action_t){ACT_PRESENCE, argv[i + 1], NULL, NULL};
            st.nacts++; i += 1;
        } else if (!strcmp(o, "--expect-stream-error") && need(i, 1, argc)) {
            *a = (action_t){ACT_EXPECT_SE, argv[i + 1], NULL, NULL};
            st.nacts++; i += 1;
        } else {
            fprintf(stderr, "xmpp_client: unknown or incomplete option %s\n", o);
            usage();
        }
    }
    if (!jid || !password)
        usage();

    xmpp_initialize();
    st.ctx = xmpp_ctx_new(NULL, verbose ? xmpp_get_default_logger(XMPP_LEVEL_DEBUG) : NULL);
    st.conn = xmpp_conn_new(st.ctx);
    xmpp_conn_set_flags(st.conn, flags | XMPP_CONN_FLAG_DISABLE_SM);
    xmpp_conn_set_jid(st.conn, jid);
    xmpp_conn_set_pass(st.conn, password);
    if (cafile)
        xmpp_conn_set_cafile(st.conn, cafile);
    xmpp_handler_add(st.conn, message_handler, NULL, "message", NULL, &st);

    int rc = 1;
    if (xmpp_connect_client(st.conn, host, port, conn_handler, &st) != XMPP_EOK) {
        fprintf(stderr, "xmpp_client: cannot start connecting\n");
        printf("disconnected\n");
        goto out;
    }
    /* Login must finish within the timeout; each action then has its own timeout. */
    double login_deadline = now_s() + st.timeout;
    int closing = 0;
    double close_deadline = 0;
    for (;;) {
        xmpp_run_once(st.ctx, 50);
        if (st.bound && !closing)
            step(&st);
        if (!st.bound && !st.disconnected && now_s() > login_deadline) {
            fprintf(stderr, "xmpp_client: no session within %.0f s\n", st.timeout);
            break;
        }
        if (st.disconnected) {
            /* an expect-stream-error action may have been completed by this very event */
            if (st.bound && !closing)
                step(&st);
            break;
        }
        if (st.bound && !closing && (st.failed || st.cur >= st.nacts)) {
            closing = 1;
            close_deadline = now_s() + 5;
            xmpp_disconnect(st.conn);
        }
        if (closing && now_s() > close_deadline)
            break;
    }
    rc = (st.bound && !st.failed && st.cur >= st.nacts) ? 0 : 1;
out:
    xmpp_conn_release(st.conn);
    xmpp_ctx_free(st.ctx);
    xmpp_shutdown();
    while (st.msgs) {
        msg_t *m = st.msgs;
        st.msgs = m->next;
        free_msg(m);
    }
    free(st.stream_error);
    free(st.acts);
    fflush(stdout);
    return rc;
}
