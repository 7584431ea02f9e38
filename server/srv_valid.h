/* srv_valid: input validation and queue-token format; pure functions (unit tested).
 * Tokens look like "v1.<concert_id>.<32 hex digits>": 128 bits from the kernel's
 * CSPRNG, with the concert in clear so a token finds its queue without a lookup. The
 * binding to user and concert is stored in Redis, not derived from the text. */
#ifndef SRV_VALID_H
#define SRV_VALID_H

#include <stddef.h>

#define SRV_MAX_ID 64       /* concert, schedule and reservation ids */
#define SRV_MAX_USER 128    /* user ids */
#define SRV_TOKEN_MAX (3 + SRV_MAX_ID + 1 + 32)

/** 1 if `s` is 1..64 characters of [A-Za-z0-9_-]. */
int srv_valid_id(const char *s);

/** 1 if `s` is 1..128 bytes without control characters or braces (braces would
 * change a Redis Cluster hash tag). */
int srv_valid_user(const char *s);

/** Writes a fresh token for `concert_id` into out[SRV_TOKEN_MAX + 1]; 0 or -1. */
int srv_token_new(char *out, const char *concert_id);

/** Parses a token of `len` bytes: 0 and the concert into concert[SRV_MAX_ID + 1], or
 * -1 if it is not of the token format. */
int srv_token_parse(const char *tok, size_t len, char *concert);

/** Ids of other entities bound to a concert use the same shape with another prefix:
 * "r1.<concert>.<32 hex>" for reservations, "p1.<concert>.<32 hex>" for payments. */
int srv_id_new(char *out, const char *prefix, const char *concert_id);
int srv_id_parse(const char *id, size_t len, const char *prefix, char *concert);

/** 1 if `s` is 1..128 characters of [A-Za-z0-9_.:-] (idempotency keys). */
int srv_valid_key(const char *s);

/** Constant-time comparison of two NUL-terminated strings; 1 if equal. */
int srv_secret_eq(const char *a, const char *b, size_t blen);

/** Extracts a bearer token from an `authorization` metadata value; NULL if absent. */
const char *srv_bearer(const char *value, size_t len, size_t *tok_len);

#endif
