/* bench_unpack: see bench_unpack.h. The allocator is concert-server's request arena
 * (server/srv_rpc.c, req_alloc) on the client side. */
#include "bench_unpack.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>
#include <stdlib.h>

static void *arena_alloc(void *data, size_t size) {
    bench_arena *a = data;
    size_t at = (a->used + _Alignof(max_align_t) - 1) & ~(_Alignof(max_align_t) - 1);
    if (size <= BENCH_ARENA && at <= BENCH_ARENA - size) {
        a->used = at + size;
        return a->bytes + at;
    }
    void *p = malloc(size);
    if (!p) abort();
    a->spilled++;
    return p;
}

/* protobuf-c frees every piece it allocated (also on a failed unpack): the arena's are
 * left alone, the rest were malloc'd. */
static void arena_free(void *data, void *p) {
    bench_arena *a = data;
    if ((unsigned char *)p >= a->bytes && (unsigned char *)p < a->bytes + BENCH_ARENA) return;
    free(p);
}

ProtobufCMessage *bench_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb, bench_arena *a) {
    a->alloc = (ProtobufCAllocator){arena_alloc, arena_free, a};
    a->used = 0;
    a->spilled = 0;
    if (!bb) return NULL;
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, bb)) return NULL;
    grpc_slice *first = NULL, *second = NULL;
    ProtobufCMessage *m;
    if (!grpc_byte_buffer_reader_peek(&r, &first)) {
        m = protobuf_c_message_unpack(desc, &a->alloc, 0, (const uint8_t *)"");
    } else if (!grpc_byte_buffer_reader_peek(&r, &second)) {
        /* One slice (the usual reply): unpacked where it is, valid until the reader goes. */
        m = protobuf_c_message_unpack(desc, &a->alloc, GRPC_SLICE_LENGTH(*first), GRPC_SLICE_START_PTR(*first));
    } else {
        grpc_byte_buffer_reader_destroy(&r);
        if (!grpc_byte_buffer_reader_init(&r, bb)) return NULL;
        grpc_slice flat = grpc_byte_buffer_reader_readall(&r);
        m = protobuf_c_message_unpack(desc, &a->alloc, GRPC_SLICE_LENGTH(flat), GRPC_SLICE_START_PTR(flat));
        grpc_slice_unref(flat);
    }
    grpc_byte_buffer_reader_destroy(&r);
    return m;
}

void bench_unpack_free(ProtobufCMessage *msg, bench_arena *a) {
    if (msg && a->spilled) protobuf_c_message_free_unpacked(msg, &a->alloc);
}
