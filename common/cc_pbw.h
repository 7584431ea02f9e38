/* cc_pbw: a tiny protobuf wire writer, for messages we write by hand rather than
 * through protobuf-c structs: replies built straight from a cache (the seat map) and
 * messages whose .proto we do not compile (google.rpc.Status and its details, see
 * server/srv_errors.c). Writes the proto3 wire format only (varint and
 * length-delimited fields; no groups, no fixed-width types). Owns nothing beyond the
 * buffer of a cc_pbw. Must not: know any message's schema. */
#ifndef CC_PBW_H
#define CC_PBW_H

#include <stddef.h>
#include <stdint.h>

/** Bytes a varint of `v` takes (1..10). */
size_t cc_pbw_varint_len(uint64_t v);

/** Writes `v` as a varint at `p` (room for 10 bytes); returns the bytes written. */
size_t cc_pbw_put_varint(uint8_t *p, uint64_t v);

/** A growing buffer: zero-initialise (`cc_pbw w = {0};`), append fields, take
 * `data`/`len`, then cc_pbw_free. Allocation failure aborts (as everywhere here). */
typedef struct {
    uint8_t *data;
    size_t len, cap;
} cc_pbw;

/** Field `field` as a varint (int32, int64, uint*, bool, enum). Zero is written too:
 * leave proto3 defaults out by not calling it. */
void cc_pbw_varint(cc_pbw *w, uint32_t field, uint64_t v);
/** Field `field` as length-delimited bytes (string, bytes, an embedded message). */
void cc_pbw_bytes(cc_pbw *w, uint32_t field, const void *data, size_t len);
/** cc_pbw_bytes of a NUL-terminated string; nothing for NULL or "" (proto3 default). */
void cc_pbw_string(cc_pbw *w, uint32_t field, const char *s);
/** An embedded message: the bytes another cc_pbw built (even when empty). */
void cc_pbw_message(cc_pbw *w, uint32_t field, const cc_pbw *sub);
/** Frees the buffer; `w` may be reused after (it is zeroed). */
void cc_pbw_free(cc_pbw *w);

#endif
