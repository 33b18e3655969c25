/* server/account.c: accounts coming, changing and going. Every creation, password change and
 * deletion (XEP-0077 through account_*, or civitasctl in another process) is a stored account
 * event, fired here once as "user-created", "password-changed" or "user-deleted", at a safe point. */
#include "account.h"
#include "server.h"
#include "router.h"
#include "stanza.h"
#include "roster.h"
#include "scram.h"
#include "fast_store.h"
#include <stdlib.h>
#include <string.h>

#define POLL_MS 1000            /* how often to look whether another process wrote (civitasctl) */
#define EVENTS_PER_RUN 100      /* account events handled per loop turn; more wait for the next one */

static struct event *run_ev;    /* handles the pending account events at the next loop turn */
static struct event *poll_ev;   /* every POLL_MS: storage_data_version changed? then run_ev */
static int64_t seen_version = -1;
static int running;             /* run_events is on the stack (hooks may delete accounts too) */

static void presence_to(const char *type, const char *from, const char *to)
{
    route_stanza(stanza_presence(type, from, to));
}

/* One deleted account of host h; event: its account event (the roster copy lives there). The
 * order matters: the sessions go first (their unavailable broadcasts must not find a roster), then
 * every module and cache forgets the account, then the contacts learn that the subscriptions are
 * over, as if the user had removed each of them from the roster (RFC 6121 §2.5.2, §3.2.2, §3.3.2):
 * unavailable from each resource that was available to those who saw the user's presence,
 * 'unsubscribe' where the user had a subscription or a pending request, 'unsubscribed' where the
 * contact had one or asked for one. Otherwise whoever registers the name next would inherit the
 * contacts' presence (their rosters still say they share it with this JID). */
static void user_deleted(host_t *h, const jid_t *bare, int64_t event)
{
    roster_t *r = roster_load_deleted(bare, event);
    if (!r) log_warn("account", "the contacts of deleted %s cannot be read; they are not told", log_jid(bare->bare));
    roster_forget(bare);

    strlist_t avail = {0};
    size_t n = 0;
    user_t *u = session_user(h, bare->bare);
    for (session_t *s = u ? u->sessions : NULL; s; s = s->next_in_user) n++;
    session_t **ss = xcalloc(n + 1, sizeof *ss);
    n = 0;
    for (session_t *s = u ? u->sessions : NULL; s; s = s->next_in_user) ss[n++] = s;
    for (size_t i = 0; i < n; i++) {
        if (ss[i]->available) strlist_add(&avail, ss[i]->jid->full);
        ss[i]->available = 0;           /* it ends with the account: no last activity is recorded */
        session_unbind(ss[i]);           /* session-closed now, while the account is still named */
        session_close(ss[i], "not-authorized", "account removed");   /* XEP-0077 §3.2 */
    }
    free(ss);
    /* a stream that authenticated as the account but has not bound a resource yet would bind and
     * act for an account that no longer exists */
    for (session_t *s = srv->sessions; s; s = s->next)
        if (s->authenticated && !s->bound && s->host == h && s->user && strcmp(s->user, bare->node) == 0)
            session_close(s, "not-authorized", "account removed");

    hook_event_t ev = {.name = "user-deleted", .host = h, .from = bare, .to = bare};
    hook_fire(&ev);

    for (size_t i = 0; r && i < roster_count(r); i++) {
        const roster_item_t *it = roster_at(r, i);
        if (it->sub & ROSTER_SUB_FROM)
            for (size_t j = 0; j < avail.n; j++) presence_to("unavailable", avail.v[j], it->jid);
        if ((it->sub & ROSTER_SUB_TO) || it->ask) presence_to("unsubscribe", bare->bare, it->jid);
        if ((it->sub & ROSTER_SUB_FROM) || it->pending_in) presence_to("unsubscribed", bare->bare, it->jid);
    }
    /* Between the deletion and this point the account's sessions still ran (stanzas read together
     * with an XEP-0077 <remove/>, or up to POLL_MS after a civitasctl deletion) and may have stored
     * rows for it; they are closed now, so remove what they wrote, unless the name is an account
     * again already. */
    if (storage_account_exists(srv->store, bare->node, bare->domain) == 0) {
        if (storage_account_delete(srv->store, bare->node, bare->domain) < 0)
            log_warn("account", "removing what %s stored after its deletion failed: %s", log_jid(bare->bare),
                     storage_last_error(srv->store));
        roster_forget(bare);
    }
    log_info("account", "%s deleted: %zu session%s ended, %zu contact%s told", log_jid(bare->bare), n,
             n == 1 ? "" : "s", r ? roster_count(r) : 0, r && roster_count(r) == 1 ? "" : "s");
    strlist_free(&avail);
    roster_free(r);
}

static void run_events(void)
{
    if (running) return;
    running = 1;
    int n = 0, r = 0;
    for (; n < EVENTS_PER_RUN; n++) {
        int64_t id;
        char *kind, *user, *domain;
        if ((r = storage_user_event_next(srv->store, &id, &kind, &user, &domain)) != 0) break;
        jid_t *bare = jid_make(user, domain, NULL);
        host_t *h = bare ? host_find(bare->domain) : NULL;
        if (h && strcmp(kind, STORAGE_EVENT_USER_DELETED) == 0) user_deleted(h, bare, id);
        else if (h && (strcmp(kind, STORAGE_EVENT_USER_CREATED) == 0 || strcmp(kind, STORAGE_EVENT_PASSWORD_CHANGED) == 0)) {
            /* a new password revokes the account's XEP-0484 tokens (fast.c refuses them already) */
            if (strcmp(kind, STORAGE_EVENT_PASSWORD_CHANGED) == 0 &&
                fast_revoke_all(srv->store, bare->node, bare->domain) < 0)
                log_warn("account", "revoking the FAST tokens of %s failed: %s", log_jid(bare->bare),
                         storage_last_error(srv->store));
            /* "user-created", "password-changed": the hook names are the event kinds */
            hook_event_t ev = {.name = kind, .host = h, .from = bare, .to = bare};
            hook_fire(&ev);
        }
        jid_free(bare);
        free(kind);
        free(user);
        free(domain);
        /* handled at least once: a crash before this line handles it again at the next start */
        if ((r = storage_user_event_done(srv->store, id)) < 0) break;
    }
    if (r < 0) log_warn("account", "reading account events failed: %s", storage_last_error(srv->store));
    running = 0;
    if (n == EVENTS_PER_RUN && run_ev) event_active(run_ev, EV_TIMEOUT, 0);
}

static void on_run(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what; (void)arg;
    run_events();
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what; (void)arg;
    int64_t v = storage_data_version(srv->store);
    if (v == seen_version) return;
    seen_version = v;
    run_events();
}

static void ensure_run_ev(void)
{
    if (!run_ev && srv->base) run_ev = evtimer_new(srv->base, on_run, NULL);
}

/* Handle the account event just recorded at the next loop turn, after the caller returned. */
static void events_soon(void)
{
    ensure_run_ev();
    if (run_ev) event_active(run_ev, EV_TIMEOUT, 0);
}

int account_delete(const jid_t *bare)
{
    if (!bare || !bare->node) return -1;
    int r = storage_account_delete(srv->store, bare->node, bare->domain);
    if (r < 0) {
        log_warn("account", "deleting %s failed: %s", log_jid(bare->bare), storage_last_error(srv->store));
        return -1;
    }
    events_soon();
    return r;
}

/* SCRAM-SHA-1 and SCRAM-SHA-256 creds of password with the configured iterations. 0/-1 */
static int make_creds(const char *password, scram_creds_t *sha1, scram_creds_t *sha256)
{
    if (!*password) return -1;
    return scram_creds_pair_from_password(password, (unsigned)srv->cfg->scram_iterations, sha1, sha256);
}

int account_create(const jid_t *bare, const char *password)
{
    scram_creds_t sha1, sha256;
    if (!bare || !bare->node || !*password) return -2;
    /* the cheap refusal first: the two key derivations are the expensive part */
    int e = storage_account_exists(srv->store, bare->node, bare->domain);
    if (e != 0) return e > 0 ? 1 : -1;
    if (make_creds(password, &sha1, &sha256) < 0) return -2;
    int r = storage_account_create(srv->store, bare->node, bare->domain, &sha1, &sha256);
    explicit_bzero(&sha1, sizeof sha1);
    explicit_bzero(&sha256, sizeof sha256);
    if (r == 0) events_soon();
    return r;
}

int account_set_password(const jid_t *bare, const char *password)
{
    scram_creds_t sha1, sha256;
    if (!bare || !bare->node || make_creds(password, &sha1, &sha256) < 0) return -2;
    int r = storage_account_set_creds(srv->store, bare->node, bare->domain, &sha1, &sha256);
    explicit_bzero(&sha1, sizeof sha1);
    explicit_bzero(&sha256, sizeof sha256);
    if (r == 0) events_soon();
    return r;
}

void account_events_start(void)
{
    ensure_run_ev();
    seen_version = storage_data_version(srv->store);
    run_events();           /* deletions done while no server ran */
    poll_ev = event_new(srv->base, -1, EV_PERSIST, on_poll, NULL);
    struct timeval tv = {POLL_MS / 1000, (POLL_MS % 1000) * 1000};
    event_add(poll_ev, &tv);
}

void account_events_stop(void)
{
    if (poll_ev) event_free(poll_ev);
    if (run_ev) event_free(run_ev);
    poll_ev = run_ev = NULL;
}
