/* cc_pb: see cc_pb.h. */
#include "cc_pb.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>
#include <stddef.h>
#include <stdlib.h>

#include "cc_asan.h"

grpc_byte_buffer *cc_pb_pack(const ProtobufCMessage *msg) {
    size_t len = protobuf_c_message_get_packed_size(msg);
    grpc_slice s = grpc_slice_malloc(len);
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

grpc_byte_buffer *cc_pb_pack_raw(const void *data, size_t len) {
    grpc_slice s = grpc_slice_from_copied_buffer(data, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

ProtobufCMessage *cc_pb_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb) {
    return cc_pb_unpack_in(desc, bb, NULL);
}

ProtobufCMessage *cc_pb_unpack_in(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb,
                                  ProtobufCAllocator *alloc) {
    cc_pb_span sp;
    if (!bb || cc_pb_span_open(&sp, bb) < 0) return NULL;
    static const uint8_t empty[1];
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, alloc, sp.len, sp.data ? sp.data : empty);
    cc_pb_span_close(&sp);
    return m;
}

int cc_pb_span_open(cc_pb_span *sp, grpc_byte_buffer *bb) {
    sp->data = NULL;
    sp->len = 0;
    sp->have_reader = 0;
    sp->flat = grpc_empty_slice();
    if (!bb) return 0;
    if (!grpc_byte_buffer_reader_init(&sp->r, bb)) return -1;
    sp->have_reader = 1;
    grpc_slice *first = NULL, *second = NULL;
    if (!grpc_byte_buffer_reader_peek(&sp->r, &first)) return 0; /* no bytes */
    if (!grpc_byte_buffer_reader_peek(&sp->r, &second)) {
        sp->data = GRPC_SLICE_START_PTR(*first); /* valid until the reader is destroyed */
        sp->len = GRPC_SLICE_LENGTH(*first);
        return 0;
    }
    grpc_byte_buffer_reader_destroy(&sp->r);
    sp->have_reader = 0;
    if (!grpc_byte_buffer_reader_init(&sp->r, bb)) return -1;
    sp->flat = grpc_byte_buffer_reader_readall(&sp->r);
    grpc_byte_buffer_reader_destroy(&sp->r);
    sp->data = GRPC_SLICE_START_PTR(sp->flat);
    sp->len = GRPC_SLICE_LENGTH(sp->flat);
    return 0;
}

void cc_pb_span_close(cc_pb_span *sp) {
    if (sp->have_reader) grpc_byte_buffer_reader_destroy(&sp->r);
    sp->have_reader = 0;
    grpc_slice_unref(sp->flat);
    sp->flat = grpc_empty_slice();
    sp->data = NULL;
    sp->len = 0;
}

static void *arena_alloc(void *data, size_t size) {
    cc_pb_arena *a = data;
    size_t at = ((size_t)a->used + _Alignof(max_align_t) - 1) & ~(_Alignof(max_align_t) - 1);
    if (size <= a->cap && at <= a->cap - size) {
        a->used = (uint32_t)(at + size);
        CC_UNPOISON(a->bytes + at, size);
        return a->bytes + at;
    }
    void *p = malloc(size);
    if (!p) abort();
    a->spilled++;
    return p;
}

static void arena_free(void *data, void *p) {
    if (!cc_pb_arena_holds(data, p)) free(p);
}

void cc_pb_arena_init(cc_pb_arena *a, void *bytes, size_t cap, ProtobufCAllocator *alloc) {
    a->bytes = bytes;
    a->cap = (uint32_t)cap;
    cc_pb_arena_reset(a);
    *alloc = (ProtobufCAllocator){arena_alloc, arena_free, a};
}
