/* cc_pb: protobuf-c messages to and from gRPC byte buffers, shared by the server, the
 * CLI, the load generator and the tests. Owns nothing beyond what it returns. */
#ifndef CC_PB_H
#define CC_PB_H

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <protobuf-c/protobuf-c.h>
#include <stdint.h>

/** Serialises `msg` into a new byte buffer (caller destroys it). */
grpc_byte_buffer *cc_pb_pack(const ProtobufCMessage *msg);

/** Wraps raw bytes in a new byte buffer (caller destroys it). */
grpc_byte_buffer *cc_pb_pack_raw(const void *data, size_t len);

/** Parses `bb` as `desc`; NULL if `bb` is NULL or not a valid message. The result is
 * freed with protobuf_c_message_free_unpacked(msg, NULL). */
ProtobufCMessage *cc_pb_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb);

/** The same with `alloc` (NULL: malloc), e.g. a cc_pb_arena's; freed with the same
 * allocator. Reads a one-slice buffer where it is (cc_pb_span). */
ProtobufCMessage *cc_pb_unpack_in(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb,
                                  ProtobufCAllocator *alloc);

/** A byte buffer's bytes as one span (`data`, `len`): where they are when the buffer is
 * one slice (nearly every message), else copied once into a flat slice. Valid until
 * cc_pb_span_close; `data` is NULL when there are no bytes. */
typedef struct {
    const uint8_t *data;
    size_t len;
    grpc_byte_buffer_reader r;
    int have_reader;
    grpc_slice flat;
} cc_pb_span;

/** Opens `bb` (NULL: no bytes). -1 when gRPC cannot read it (then nothing to close). */
int cc_pb_span_open(cc_pb_span *sp, grpc_byte_buffer *bb);
void cc_pb_span_close(cc_pb_span *sp);

/** A protobuf-c allocator over bytes its owner keeps (a call's inline bytes, a stack
 * buffer), so that unpacking a small message needs no malloc: pieces that fit are
 * bump-allocated there, bigger ones malloc'd (counted in `spilled`); its free leaves
 * pieces in the bytes alone (protobuf-c frees every piece it allocated, also on a
 * failed unpack). The owner empties it (cc_pb_arena_reset) before the next message and
 * keeps the bytes alive while the message is. Bytes that are ASan-poisoned while their
 * owner is recycled are unpoisoned piece by piece as they are handed out. */
typedef struct {
    unsigned char *bytes; /* aligned to max_align_t */
    uint32_t cap, used;
    uint32_t spilled; /* pieces malloc'd since the last reset */
} cc_pb_arena;

/** Sets `a` over `cap` bytes at `bytes` (aligned to max_align_t), empty, and `alloc` to it. */
void cc_pb_arena_init(cc_pb_arena *a, void *bytes, size_t cap, ProtobufCAllocator *alloc);
static inline void cc_pb_arena_reset(cc_pb_arena *a) { a->used = 0, a->spilled = 0; }
/** Whether `p` lies in the arena's bytes. */
static inline int cc_pb_arena_holds(const cc_pb_arena *a, const void *p) {
    return (const unsigned char *)p >= a->bytes && (const unsigned char *)p < a->bytes + a->cap;
}

#endif
