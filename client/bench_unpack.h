/* bench_unpack: unpacks a reply of concert-bench's hot path (the queue scenario's
 * QueueStatus) into a small arena the caller keeps on its stack: no malloc and no copy
 * of the reply's bytes per call while it fits (the load generator shares the machine's
 * cores with the server it measures). Owns nothing beyond the arena it is given; must
 * not keep a pointer into the reply or the arena after bench_unpack_free. */
#ifndef BENCH_UNPACK_H
#define BENCH_UNPACK_H

#include <grpc/byte_buffer.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

/* Bytes of a bench_arena: a QueueStatus (struct, token, concert id and an admission
 * receipt) takes well under this; a bigger message spills to malloc. */
#define BENCH_ARENA 1024

typedef struct {
    ProtobufCAllocator alloc; /* set by bench_unpack */
    size_t used;
    int spilled; /* pieces malloc'd because they did not fit */
    _Alignas(max_align_t) unsigned char bytes[BENCH_ARENA];
} bench_arena;

/** Unpacks `bb` (borrowed; NULL gives NULL) as a `desc` message into `a`, reading a
 * single-slice buffer in place. NULL when it is not a valid message. The message lives
 * in `a` (and in malloc'd pieces when it did not fit) until bench_unpack_free(msg, a),
 * which the caller calls before `a` goes away (a NULL msg is fine). */
ProtobufCMessage *bench_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb, bench_arena *a);
/** Frees what bench_unpack malloc'd for `msg` (nothing when it fit in `a`). */
void bench_unpack_free(ProtobufCMessage *msg, bench_arena *a);

#endif
