/* server/roster.h: the roster service (RFC 6121 §2, XEP-0237): every account's contact list with its
 * subscription states, pending inbound requests, pre-approvals, versions, tombstones and roster pushes. */
#ifndef CIVITAS_ROSTER_H
#define CIVITAS_ROSTER_H
#include "api.h"
#include <stdint.h>
#include "xml.h"
#include "jid.h"
#include "util.h"
#include "strlist.h"
#include "session.h"
#include "api.h"

#define NS_ROSTER "jabber:iq:roster"

/* Subscription bits of roster_item_t.sub (RFC 6121 §2.1.2.5): none 0, to 1, from 2, both 3. */
#define ROSTER_SUB_TO 1         /* the user receives the contact's presence */
#define ROSTER_SUB_FROM 2       /* the contact receives the user's presence */

/* One record of a roster. Besides the items the client sees (listed), a roster keeps hidden records:
 * a contact that only has a pending inbound request (RFC 6121 Appendix A "None + Pending In" is not
 * shown to clients) and tombstones of removed items (so that XEP-0237 can send removals to clients
 * holding an older version). Every string is owned by the record. */
typedef struct roster_item {
    char *jid;              /* the contact's JID, prepared (normally bare); unique in the roster */
    char *name;             /* the handle the user gave it, or NULL */
    strlist_t groups;       /* group names, without duplicates */
    int sub;                /* ROSTER_SUB_* bits */
    int ask;                /* pending out: the user asked to subscribe (ask='subscribe') */
    int approved;           /* the user pre-approved a subscription from the contact (§3.4) */
    int listed;             /* 1 an item of the roster; 0 a hidden record */
    xnode_t *pending_in;    /* pending in: the stored inbound subscribe stanza (§3.1.3), or NULL */
    int64_t ver;            /* the roster version of the record's last visible change (0: never visible) */
} roster_item_t;

typedef struct roster roster_t;   /* one account's roster, loaded in memory */
CIVITAS_API_BEGIN

/* Load the roster of a local account (owner: its bare JID, with a localpart) from storage.
 * Returns it (free with roster_free), or NULL on a storage error (logged). An account without a
 * roster gets an empty one. Changes are written by roster_save, record by record. */
roster_t *roster_load(const jid_t *owner);
void roster_free(roster_t *r);                      /* NULL is a no-op */
/* Rosters are cached in memory (see roster.c): every roster_load of one account returns the same
 * object while it is cached, so a change saved by one holder is seen by all. Drop an account's
 * roster from the cache (account deleted); roster_cache_shutdown empties it at exit. */
void roster_forget(const jid_t *owner);
CIVITAS_API_END
/* For the core only (main.c, account.c). The roster of a deleted account as the account event
 * `event` keeps it (see storage.h, "Account events"): not cached, nothing of it can be saved. NULL
 * on a storage error. */
void roster_cache_shutdown(void);
roster_t *roster_load_deleted(const jid_t *owner, int64_t event);
CIVITAS_API_BEGIN

/* The record of contact jid (a prepared JID string, as in roster_item_t.jid), listed or hidden,
 * or NULL. The pointer stays valid until roster_free. */
roster_item_t *roster_find(roster_t *r, const char *jid);
/* The record of jid, created (hidden, subscription none, version 0) when there is none. Nothing is
 * stored until roster_save. */
roster_item_t *roster_add(roster_t *r, const char *jid);
/* Every record, listed or hidden, in no particular order: i in 0 .. roster_count()-1. */
size_t roster_count(const roster_t *r);
roster_item_t *roster_at(const roster_t *r, size_t i);
/* Number of listed items (the roster size a client sees, for limits). */
size_t roster_listed_count(const roster_t *r);
/* Number of hidden records holding a pending inbound request (for limits on subscription spam). */
size_t roster_pending_count(const roster_t *r);
/* The current roster version (XEP-0237): it grows with every visible change; 0 for a roster that
 * never changed. Written in 'ver' attributes as a decimal number. */
int64_t roster_version(const roster_t *r);
/* The oldest version a client may hold and still be brought up to date by the records whose ver
 * is greater (tombstones at or below it may have been pruned): older versions get the full roster. */
int64_t roster_oldest_version(const roster_t *r);

/* Store it after the caller changed it. visible: the change is one a client sees (listed, name,
 * groups, subscription, ask, approved); then it gets a new version and a roster push (RFC 6121
 * §2.1.6) goes to every interested resource of the owner: the item, or subscription='remove' when
 * it is not listed. A record that holds nothing any more (not listed, no pending request) and was
 * never visible is deleted; one that was visible stays as a tombstone (the oldest are pruned).
 * 0 stored, -1 storage error (logged; the in-memory record keeps the change). After it returns, a
 * record that is neither listed nor pending may have been freed: do not use it any more.
 * Save before routing stanzas the change causes: a local contact's answer can come back at once and
 * change this roster through another roster_t (load again after routing if still needed). */
int roster_save(roster_t *r, roster_item_t *it, int visible);

/* The one subscription check (RFC 6121 §2.1.2.5, Appendix A). 1 when the roster of the local
 * account owner (bare JID) lists contact (its bare JID is taken) with a subscription including
 * direction: ROSTER_SUB_FROM (contact receives owner's presence: "is contact subscribed to
 * owner's presence"), ROSTER_SUB_TO (owner receives contact's presence), or both bits (mutual).
 * 0 otherwise, also when the roster cannot be read. */
int roster_is_subscribed(const jid_t *owner, const jid_t *contact, int direction);

/* <item/> (in NS_ROSTER, unlinked, the caller owns it) for a roster result or push: jid, name,
 * subscription, ask, approved and groups; a record that is not listed gives
 * <item jid='…' subscription='remove'/>. */
xnode_t *roster_item_xml(const roster_item_t *it);
/* Name of sub bits: "none", "to", "from", "both". */
const char *roster_sub_name(int sub);

/* Interested resources (RFC 6121 §2.1.6): a session becomes one when it requests the roster.
 * versioning: it sent a 'ver' (XEP-0237), so pushes to it carry the version. */
void roster_set_interested(session_t *s, int versioning);
/* 0 not interested, 1 interested, 2 interested and versioning. */
int roster_interested(const session_t *s);
/* Send a roster push of it to every interested resource of owner (roster_save does this). */
void roster_push(const jid_t *owner, const roster_item_t *it);
/* The same push to one session of owner, whether interested or not (XEP-0237 §2.4: the changes
 * since the version a client holds are sent as pushes after the empty result). */
void roster_push_to(session_t *s, const jid_t *owner, const roster_item_t *it);

CIVITAS_API_END

#endif
