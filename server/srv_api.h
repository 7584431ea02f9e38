/* srv_api: conventions of the public API that several handlers share, so that every
 * method follows them the same way:
 *   - pagination (AIP-158): page_size 0 means the method's default, bigger than its
 *     maximum means the maximum, negative is INVALID_ARGUMENT; page tokens are opaque
 *     to clients and checked by the server;
 *   - field names given as data (SetQueuePolicy.update_fields) in either spelling: the
 *     .proto's snake_case name or its proto3 JSON (lowerCamelCase) name.
 * Pure functions (unit tested). Must not: know any method's keys or data. */
#ifndef SRV_API_H
#define SRV_API_H

#include <stddef.h>
#include <stdint.h>

/* ---- pagination ---- */

/** The page size for a request's `page_size`: 0 -> dflt, above max -> max. -1 when
 * negative (INVALID_ARGUMENT "page_size: ..."). */
int srv_page_size(int32_t requested, int dflt, int max);

/** The listings that hand out page tokens (a token of one is refused by another). */
typedef enum { SRV_PAGE_SEATS = 1, SRV_PAGE_CONCERTS = 2 } srv_page_kind;

#define SRV_PAGE_CURSOR_MAX 64
#define SRV_PAGE_TOKEN_MAX (2 * (2 + SRV_PAGE_CURSOR_MAX) + 16)

/** Writes the token of the page after `cursor` (what the last page ended with, at most
 * SRV_PAGE_CURSOR_MAX bytes) of listing `kind` within `scope` (e.g. "<concert>/<schedule>";
 * "" for a global listing) into out[SRV_PAGE_TOKEN_MAX + 1]: lower-case hex of a
 * version, the kind and the cursor, then 16 hex digits of a check over the scope and
 * all of that. The check is not a secret: the token grants nothing a caller could not
 * ask for; it catches tokens that were altered, cut, made up, or made for another
 * listing or scope. */
void srv_page_token(char *out, srv_page_kind kind, const char *scope, const void *cursor, size_t cursor_len);

/** Reads a token made by srv_page_token for the same kind and scope: 0 and the cursor
 * in cursor[*cursor_len] (room for SRV_PAGE_CURSOR_MAX bytes), or -1 (INVALID_ARGUMENT
 * "page_token: ..."). */
int srv_page_token_parse(const char *token, srv_page_kind kind, const char *scope, uint8_t *cursor,
                         size_t *cursor_len);

/** A List request's page: its size and, after the first page, the cursor its token
 * carries (cursor_len 0 for the first page). */
typedef struct {
    int size;
    uint8_t cursor[SRV_PAGE_CURSOR_MAX];
    size_t cursor_len;
} srv_page;

/** The INVALID_ARGUMENT message of a page token a listing refuses. */
#define SRV_PAGE_TOKEN_BAD "page_token: not a next_page_token of this listing (altered, made up, or for another request)"

/** Reads a List request's page_size (srv_page_size with dflt, max) and page_token (""
 * or a token of `kind` and `scope`) into *out: 0, or -1 with the INVALID_ARGUMENT
 * message ("page_size: ..." or SRV_PAGE_TOKEN_BAD) in err[errlen]. */
int srv_page_read(srv_page *out, int32_t page_size, const char *page_token, srv_page_kind kind, const char *scope,
                  int dflt, int max, char *err, size_t errlen);

/* ---- field names ---- */

/** 1 if `given` names the field `name` (snake_case, as written in the .proto): either
 * `name` itself or its proto3 JSON name (each '_' dropped and the letter after it
 * upper-cased: "max_active" -> "maxActive"). */
int srv_field_name_is(const char *name, const char *given);

#endif
