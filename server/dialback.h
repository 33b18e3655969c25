/* server/dialback.h: XEP-0220 dialback keys as XEP-0185 recommends (dialback.c). */
#ifndef CIVITAS_DIALBACK_H
#define CIVITAS_DIALBACK_H

/* A fresh secret from the CSPRNG (at start; keys of earlier runs become invalid). */
void dialback_init(void);
void dialback_cleanup(void);
/* The key for a stream: hex(HMAC-SHA256(SHA256(secret), receiving + ' ' + originating + ' ' +
 * stream_id)), malloc'd (64 hex digits). receiving: the domain the originating server connects
 * to; originating: the domain it claims. */
char *dialback_key(const char *receiving, const char *originating, const char *stream_id);
/* 1 when key is the key for (receiving, originating, stream_id), compared in constant time. */
int dialback_check(const char *receiving, const char *originating, const char *stream_id, const char *key);

#endif
