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

/** 1 if `s` is 1..128 bytes without control characters. */
int srv_valid_user(const char *s);

/** Writes a fresh token for `concert_id` into out[SRV_TOKEN_MAX + 1]; 0 or -1. */
int srv_token_new(char *out, const char *concert_id);

/** Parses a token of `len` bytes: 0 and the concert into concert[SRV_MAX_ID + 1], or
 * -1 if it is not of the token format. */
int srv_token_parse(const char *tok, size_t len, char *concert);

/** Extracts a bearer token from an `authorization` metadata value; NULL if absent. */
const char *srv_bearer(const char *value, size_t len, size_t *tok_len);

#endif
