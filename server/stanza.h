/* server/stanza.h: building replies and stanza errors (RFC 6120 §8.3), and the namespaces of the
 * protocol. Pure tree work: nothing here sends or routes. */
#ifndef CIVITAS_STANZA_H
#define CIVITAS_STANZA_H
#include "xml.h"
#include "api.h"
#include <stddef.h>
#include <stdint.h>

#define NS_CLIENT "jabber:client"
#define NS_SERVER "jabber:server"
#define NS_STREAMS "http://etherx.jabber.org/streams"
#define NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"
#define NS_STREAM_ERRORS "urn:ietf:params:xml:ns:xmpp-streams"
#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SESSION "urn:ietf:params:xml:ns:xmpp-session"
#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"

CIVITAS_API_BEGIN
/* Stanza helpers. stanza_reply: <iq type='result'> (or a message/presence of the same kind)
 * with id copied and to/from swapped. stanza_error: a new error reply to st (type is
 * cancel|modify|auth|wait; condition an RFC 6120 §8.3.3 name; text may be NULL); returns NULL
 * when st is itself an error (errors are never answered with errors). */
xnode_t *stanza_reply(const xnode_t *st);
xnode_t *stanza_error(const xnode_t *st, const char *type, const char *condition, const char *text);

/* ---- Typed stanza errors (RFC 6120 §8.3.3): each condition carries its element name and the
 * error type the RFC's definition gives it, so a handler names one thing and cannot misspell it:
 *   return hook_reply(ev, stanza_error_cond(ev->stanza, STANZA_ERR_FORBIDDEN, NULL));
 * or hook_error_cond(ev, STANZA_ERR_FORBIDDEN) (router.h). stanza_error (above) stays for a type
 * other than the default (e.g. <internal-server-error/> of type wait) and for older modules. */
typedef enum {
    STANZA_ERR_BAD_REQUEST,             /* modify */
    STANZA_ERR_CONFLICT,                /* cancel */
    STANZA_ERR_FEATURE_NOT_IMPLEMENTED, /* cancel */
    STANZA_ERR_FORBIDDEN,               /* auth */
    STANZA_ERR_GONE,                    /* cancel */
    STANZA_ERR_INTERNAL_SERVER_ERROR,   /* cancel */
    STANZA_ERR_ITEM_NOT_FOUND,          /* cancel */
    STANZA_ERR_JID_MALFORMED,           /* modify */
    STANZA_ERR_NOT_ACCEPTABLE,          /* modify */
    STANZA_ERR_NOT_ALLOWED,             /* cancel */
    STANZA_ERR_NOT_AUTHORIZED,          /* auth */
    STANZA_ERR_POLICY_VIOLATION,        /* modify */
    STANZA_ERR_RECIPIENT_UNAVAILABLE,   /* wait */
    STANZA_ERR_REDIRECT,                /* modify */
    STANZA_ERR_REGISTRATION_REQUIRED,   /* auth */
    STANZA_ERR_REMOTE_SERVER_NOT_FOUND, /* cancel */
    STANZA_ERR_REMOTE_SERVER_TIMEOUT,   /* wait */
    STANZA_ERR_RESOURCE_CONSTRAINT,     /* wait */
    STANZA_ERR_SERVICE_UNAVAILABLE,     /* cancel */
    STANZA_ERR_SUBSCRIPTION_REQUIRED,   /* auth */
    STANZA_ERR_UNDEFINED_CONDITION,     /* modify (the RFC's example; any type is allowed) */
    STANZA_ERR_UNEXPECTED_REQUEST,      /* wait */
    STANZA_ERR_COUNT                    /* not a condition: the number of them */
} stanza_err_t;

/* The condition's element name ("forbidden") and default type ("auth"); NULL out of range. */
const char *stanza_err_name(stanza_err_t cond);
const char *stanza_err_type(stanza_err_t cond);
/* The condition named name, or -1 (STANZA_ERR_COUNT is never returned) when it is none. */
int stanza_err_from_name(const char *name);
/* stanza_error with cond's name and default type (NULL: st is an error, or cond out of range). */
xnode_t *stanza_error_cond(const xnode_t *st, stanza_err_t cond, const char *text);

/* Stanzas modules keep building. stanza_presence: <presence/> with the given type, from and to
 * (each omitted when NULL). stanza_push_iq: an <iq type='set'/> from `from` (omitted when NULL)
 * to `to`, with a random id ("push-" and 16 hex digits) and payload as its child (taken; may be
 * NULL) -- a roster push (RFC 6121 §2.1.6), a blocking push (XEP-0191 §3.3), any server push.
 * Both return a new stanza the caller owns (route_stanza or session_send it). */
xnode_t *stanza_presence(const char *type, const char *from, const char *to);
xnode_t *stanza_push_iq(const char *from, const char *to, xnode_t *payload);

/* XEP-0082 DateTime of a Unix time, in UTC with whole seconds ("2026-12-02T11:13:00Z"), as the
 * <delay/> of XEP-0203, XEP-0202's <utc/> and MAM want it. Writes buf (at least XEP0082_SIZE
 * bytes) and returns it. */
#define XEP0082_SIZE 32
char *xep0082_timestamp(char *buf, size_t size, int64_t unix_time);
CIVITAS_API_END

#endif
