/* cc_client: a small gRPC C core client for concertctl, the tests and tools.
 * Blocking unary calls, server and bidi streams read message by message, and batches of many
 * unary calls in flight at once on one completion queue (no thread per call).
 * One channel per cc_client, reused by every call. Not thread-safe per object. */
#ifndef CC_CLIENT_H
#define CC_CLIENT_H

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

#include "cc_opt.h"
#include "cc_tls.h"

typedef struct cc_client cc_client;
typedef struct cc_stream cc_stream;
typedef struct cc_batch cc_batch;

/** A metadata pair (key lower-case). */
typedef struct {
    const char *key;
    const char *value;
} cc_md;

typedef struct {
    grpc_status_code code;
    char message[512];
    int64_t retry_after_ms; /* unary calls: the `retry-after-ms` trailer of a refusal (rate
                               limits: when a call would pass again); 0 when none */
} cc_status;

/** Fills ops[0..3] with the client's half of a call: SEND_INITIAL_METADATA (md),
 * SEND_MESSAGE (req), SEND_CLOSE_FROM_CLIENT and RECV_INITIAL_METADATA into init_md.
 * Returns 4. Owns nothing: md and init_md must live until the batch completes; req
 * may be destroyed once the batch is started. Shared by this file and concert-bench. */
size_t cc_ops_request(grpc_op *ops, grpc_metadata *md, size_t n_md, grpc_byte_buffer *req,
                      grpc_metadata_array *init_md);

/** Fills ops[0..1] with RECV_MESSAGE into *resp and RECV_STATUS_ON_CLIENT into
 * trail/code/details: the rest of a unary call's single batch. Returns 2. */
size_t cc_ops_unary_reply(grpc_op *ops, grpc_byte_buffer **resp, grpc_metadata_array *trail, grpc_status_code *code,
                          grpc_slice *details);

/** TLS of a channel (the clients' --tls, --tls-ca, --tls-cert, --tls-key,
 * --tls-server-name). Off unless `enabled`. files.ca_file: the CA the server's
 * certificate must chain to (unset: the system's roots); cert/key: the client's
 * certificate for mutual TLS; server_name: the name the server's certificate must
 * carry (unset: the target's host). Strings are borrowed. */
typedef struct {
    int enabled;
    cc_tls_files files;
    const char *server_name;
} cc_client_tls;

/** The clients' TLS option rows (cc_opt), shared by concertctl and concert-bench:
 * --tls, --tls-ca, --tls-cert, --tls-key, --tls-server-name and their variables.
 * Any of the files or the name turns TLS on without --tls. */
#define CC_CLIENT_TLS_OPTS(t)                                                                                  \
    {"tls", "CONCERT_TLS", CC_OPT_FLAG, &(t).enabled, NULL,                                                    \
     "use TLS, verifying the server against the system's CAs (implied by the --tls-* options)", 0, 0},         \
        {"tls-ca", "CONCERT_TLS_CA", CC_OPT_STR, &(t).files.ca_file, "FILE",                                   \
         "use TLS; the server's certificate must chain to this PEM CA", 0, 0},                                 \
        {"tls-cert", "CONCERT_TLS_CLIENT_CERT", CC_OPT_STR, &(t).files.cert_file, "FILE",                      \
         "mutual TLS: present this PEM client certificate (needs --tls-key)", 0, 0},                           \
        {"tls-key", "CONCERT_TLS_CLIENT_KEY", CC_OPT_STR, &(t).files.key_file, "FILE",                         \
         "PEM private key of --tls-cert", 0, 0},                                                               \
        {"tls-server-name", "CONCERT_TLS_SERVER_NAME", CC_OPT_STR, &(t).server_name, "NAME",                   \
         "name the server's certificate must carry (default: the host of --server)", 0, 0}

/** Channel credentials for `tls` (NULL or not enabled: insecure), files read and
 * checked now. The caller releases them. NULL with "<flag>: <reason>" in err. */
grpc_channel_credentials *cc_client_credentials(const cc_client_tls *tls, char *err, size_t errlen);

/** Opens a channel to `target` (host:port, plaintext). grpc_init() is done here. */
cc_client *cc_client_open(const char *target);
/** Same over TLS as `tls` says (NULL: plaintext); NULL with the reason in err. */
cc_client *cc_client_open_tls(const char *target, const cc_client_tls *tls, char *err, size_t errlen);
void cc_client_close(cc_client *c);

/** The gRPC code's canonical name, e.g. "INVALID_ARGUMENT". */
const char *cc_status_name(grpc_status_code code);

/** Blocking unary call. On OK and when resp_desc is given, *resp_out is the unpacked
 * response (free with protobuf_c_message_free_unpacked). Returns st->code. */
grpc_status_code cc_client_unary(cc_client *c, const char *method, const ProtobufCMessage *req,
                                 const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp_out,
                                 const cc_md *md, int n_md, int timeout_ms, cc_status *st);

/** Same with raw request bytes (for tests of malformed input). */
grpc_status_code cc_client_unary_raw(cc_client *c, const char *method, const void *data, size_t len,
                                     const cc_md *md, int n_md, int timeout_ms, cc_status *st);

/** Starts a server-streaming call. NULL if it could not be started. */
cc_stream *cc_client_stream(cc_client *c, const char *method, const ProtobufCMessage *req, const cc_md *md,
                            int n_md, int timeout_ms);
/** Starts a bidi-streaming call with no message sent yet (cc_stream_send sends them,
 * cc_stream_close_send half-closes). NULL if it could not be started. */
cc_stream *cc_client_bidi(cc_client *c, const char *method, const cc_md *md, int n_md, int timeout_ms);
/** Bidi: sends one message (blocks until gRPC took it). 0, or -1 if the call is over. */
int cc_stream_send(cc_stream *s, const ProtobufCMessage *msg);
/** Bidi: tells the server no more messages come. 0 or -1. */
int cc_stream_close_send(cc_stream *s);
/** Next message: 1 and *msg_out, 0 at the end of the stream, -1 on error. */
int cc_stream_next(cc_stream *s, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **msg_out);
/** Cancels if still open, fills the final status and frees the stream. */
void cc_stream_close(cc_stream *s, cc_status *st);

/** Many unary calls in flight at once. */
cc_batch *cc_batch_new(cc_client *c);
/** Starts a call now; returns its index. */
int cc_batch_add(cc_batch *b, const char *method, const ProtobufCMessage *req, const cc_md *md, int n_md,
                 int timeout_ms);
/** Waits until every started call has finished. */
void cc_batch_wait(cc_batch *b);
int cc_batch_count(const cc_batch *b);
/** Result of call i: its status, and on OK the response unpacked as `desc` (owned by
 * the caller) when resp_out is not NULL. */
grpc_status_code cc_batch_result(cc_batch *b, int i, const ProtobufCMessageDescriptor *desc,
                                 ProtobufCMessage **resp_out, cc_status *st);
void cc_batch_free(cc_batch *b);

#endif
