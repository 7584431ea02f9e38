/* cc_pb: protobuf-c messages to and from gRPC byte buffers, shared by the server, the
 * CLI, the load generator and the tests. Owns nothing beyond what it returns. */
#ifndef CC_PB_H
#define CC_PB_H

#include <grpc/byte_buffer.h>
#include <protobuf-c/protobuf-c.h>

/** Serialises `msg` into a new byte buffer (caller destroys it). */
grpc_byte_buffer *cc_pb_pack(const ProtobufCMessage *msg);

/** Wraps raw bytes in a new byte buffer (caller destroys it). */
grpc_byte_buffer *cc_pb_pack_raw(const void *data, size_t len);

/** Parses `bb` as `desc`; NULL if `bb` is NULL or not a valid message. The result is
 * freed with protobuf_c_message_free_unpacked(msg, NULL). */
ProtobufCMessage *cc_pb_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb);

#endif
