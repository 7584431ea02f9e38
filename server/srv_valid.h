/* srv_valid: input validation and queue-token format; pure functions (unit tested).
 * Tokens look like "v2.<concert_id>.<n>.<32 hex digits>": the concert in clear so a
 * token finds its queue without a lookup, n the concert's join number (decimal, the
 * token's key in the queue's sorted set, see docs/DATA.md) and the token id, 128 bits
 * from the kernel's CSPRNG. The binding to user and concert is stored in Redis, not
 * derived from the text. "v1.<concert_id>.<32 hex>" (the layout before) still parses,
 * with n = 0: such a token is unknown to its queue. */
#ifndef SRV_VALID_H
#define SRV_VALID_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#define SRV_MAX_ID 64       /* concert, schedule and reservation ids */
#define SRV_MAX_USER 128    /* user ids */
#define SRV_TOKEN_MAX (3 + SRV_MAX_ID + 1 + 16 + 1 + 32)
#define SRV_TOKEN_N_MAX 9007199254740991LL /* join numbers stay exact in a Redis score (2^53 - 1) */

/** 1 if `s` is 1..64 characters of [A-Za-z0-9_-]. */
int srv_valid_id(const char *s);

/** 1 if `s` is 1..128 bytes without control characters or braces (braces would
 * change a Redis Cluster hash tag). */
int srv_valid_user(const char *s);

/** A fresh token id: 16 bytes from the kernel's CSPRNG into id and their 32 lowercase
 * hex digits into hex[33]; 0 or -1 (no randomness). */
int srv_token_id_new(unsigned char id[16], char hex[33]);

/** Writes "v2.<concert_id>.<n>.<hex>" into out[SRV_TOKEN_MAX + 1]; returns its length. */
size_t srv_token_format(char *out, const char *concert_id, int64_t n, const char *hex);

/** A token taken apart. */
typedef struct {
    char concert[SRV_MAX_ID + 1];
    int64_t n;            /* the join number; 0 for a v1 token */
    unsigned char id[16]; /* the token id */
} srv_token_parts;

/** Parses a token of `len` bytes (v2, or v1 with n = 0): 0 and its parts, or -1 if it
 * is not of the token format. */
int srv_token_split(const char *tok, size_t len, srv_token_parts *out);

/** srv_token_split for the concert alone, into concert[SRV_MAX_ID + 1]. */
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

/* ---- the one rule for every string field (issue 9) ----
 * Every string of every request, ids and names alike: valid UTF-8 (no overlong form,
 * no surrogate, nothing above U+10FFFF), no control character (C0 including NUL and
 * tab, DEL, C1), at most a bounded number of bytes. Fields with a stricter shape (ids
 * of [A-Za-z0-9_-], idempotency keys) are checked again by their handlers. */

typedef enum {
    SRV_STR_OK = 0,
    SRV_STR_TOO_LONG,
    SRV_STR_BAD_UTF8,
    SRV_STR_CONTROL, /* a control character other than NUL */
    SRV_STR_NUL,
} srv_str_rc;

/** Checks `len` bytes of `s` (which may contain NUL) against the rule with a bound of
 * `max` bytes. */
srv_str_rc srv_valid_string(const char *s, size_t len, size_t max);

/** A short reason for a failed check, e.g. "must be valid UTF-8". */
const char *srv_valid_string_reason(srv_str_rc rc);

/** The byte bound of a request string field by its name (user_id 128, concert_id 64,
 * token 256, name 200, ...; 1024 for any other). */
size_t srv_valid_field_max(const char *field_name);

/** Checks every string field of a serialized `desc` message on the wire, before
 * unpacking (protobuf-c hands proto3 strings out as NUL-terminated char *, so an
 * embedded NUL would silently truncate them): nested messages and repeated fields
 * included. Returns 0, -1 with "<field path>: <reason>" in err[errlen] for a string
 * that breaks the rule, or -2 when the bytes are not a valid message. */
int srv_valid_wire(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len, char *err,
                   size_t errlen);

/** Request decoding as the server does it: srv_valid_wire, then unpacking with `alloc`
 * (NULL: protobuf-c's default, malloc). On success *out is the message (free with
 * protobuf_c_message_free_unpacked and the same allocator) and 0 is returned;
 * otherwise -1 and the INVALID_ARGUMENT message in err (naming the field, or "request
 * is not a valid X message"). */
int srv_decode_request(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                       ProtobufCAllocator *alloc, ProtobufCMessage **out, char *err, size_t errlen);

#endif
