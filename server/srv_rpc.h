/* srv_rpc: the gRPC C core server and a libuv loop driven by one thread.
 *
 * Two completion queues. The calls' queue (created _for_next, registered with the
 * server) carries every accept and every batch of unary calls; srv_rpc_run drives it
 * and the loop. The streams' queue (non-polling, not registered) carries every batch
 * of a server or bidi stream after its accept: a held stream keeps a batch outstanding
 * for its whole life, and Debian's gRPC 1.51 (no NDEBUG) walks every outstanding tag of
 * a queue on each of its completions, so on one shared queue every unary call would pay
 * for every held stream. A thread of its own (srv-streams) pops the streams' queue and
 * pushes each event to the loop's thread (a mutex-guarded list and a uv_async_t), which
 * runs it there: every call's state machine still lives on that one thread, and the
 * srv-streams thread never touches a call. Unary calls have no hand-off.
 * srv_rpc_run drives the calls' queue and the loop: it blocks in
 * grpc_completion_queue_next with the deadline of the loop's next timer, handles the
 * completions that are ready (up to a batch), then runs the loop once without blocking
 * (UV_RUN_NOWAIT: Redis replies, timers, the writes the handlers queued), and again.
 * Nothing of a unary call crosses threads: its request, its handler, its Redis
 * commands and replies, its answer and its end are all on that thread, as in a bare
 * single-thread gRPC server (a stream's completions cross once, as events, and are
 * run on that thread too). The loop's own events (a Redis reply, another thread's
 * uv_async_send) can arrive while that thread is blocked in gRPC: a waker thread
 * watches the loop's backend fd (uv_backend_fd) and then rings a doorbell (a call on a
 * lame channel, whose failure lands on the queue at once). gRPC core 1.51 offers no
 * public way to poll its queue from another loop or to post to it; under load the
 * thread is seldom blocked, so the bell seldom rings.
 *
 * Each registered method keeps several grpc_server_request_registered_call armed;
 * every accepted call becomes an `srv_call`, a small state machine freed (or kept for
 * reuse by the next call) when its handler has finished and no batch is in flight.
 * Unknown methods get UNIMPLEMENTED. Server streams keep one SEND_MESSAGE in flight
 * with a queue behind it, and RECV_CLOSE_ON_SERVER armed at the start to notice
 * cancellation. Bidi streams (client streaming) get no first message: the handler arms
 * one RECV_MESSAGE at a time with srv_call_recv, and its callback decodes the message
 * with srv_call_decode and arms the next receive, or waits for srv_call_on_drain first
 * when its client is not reading the answers. Methods with a `cq_handler` are answered
 * from the request's completion itself, without an srv_call (Health/Check).
 *
 * Requests are decoded through the configured `decode` function (the server checks
 * every string on the wire before unpacking); a request that does not decode is
 * answered INVALID_ARGUMENT before any handler runs (bidi: the handler answers it). Must not: block the loop, or
 * know anything about the services behind the methods. */
#ifndef SRV_RPC_H
#define SRV_RPC_H

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>
#include <stdint.h>
#include <uv.h>

typedef struct srv_rpc srv_rpc;
typedef struct srv_call srv_call;

typedef enum { SRV_UNARY, SRV_SERVER_STREAM, SRV_BIDI_STREAM } srv_kind;

typedef void (*srv_handler)(srv_call *call);

/** Optional, unary only: answers a call at once, without an srv_call (no per-call state
 * machine; srv_rpc still counts it and calls the observers). Gets the decoded request and the app; returns
 * 1 and the reply's serialised bytes in *reply (a slice srv_rpc takes, e.g.
 * grpc_slice_from_static_buffer) to answer OK at once, or 0 to hand the call to
 * `handler` as usual (errors, anything that needs more than a glance at the app). */
typedef int (*srv_cq_handler)(const ProtobufCMessage *req, void *app, grpc_slice *reply);

typedef struct {
    const char *path;                         /* "/pkg.Service/Method" */
    srv_kind kind;
    const ProtobufCMessageDescriptor *request; /* unary and server stream (decoded by srv_rpc); bidi: for tools, NULL allowed */
    srv_handler handler;
    srv_cq_handler cq_handler;                /* NULL: every call goes to `handler` */
} srv_method;

/** Decodes a request of type `desc` from `len` bytes, unpacking with `alloc` (NULL:
 * malloc): 0 and *out (owned by the caller, freed with the same allocator), or -1 and
 * an INVALID_ARGUMENT message in err[errlen]. */
typedef int (*srv_decode_fn)(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                             ProtobufCAllocator *alloc, ProtobufCMessage **out, char *err, size_t errlen);

typedef struct {
    const char *listen;   /* host:port; port 0 picks one */
    int requests_per_method; /* most armed requests per method (default 64; each starts with 2,
                                a busy one gets more: see srv_rpc_start) */
    int max_message_bytes;   /* largest request accepted (default 1 MiB) */
    int max_metadata_bytes;  /* largest header block of one call (default 64 KiB): a bigger one
                                fails that call alone (RESOURCE_EXHAUSTED) */
    int reuse_port;          /* 1: share the port with other processes (SO_REUSEPORT); 0: a busy
                                port is a bind failure */
    int keepalive_time_ms;    /* HTTP/2 PING after this long without traffic on a connection
                                 (0 = default 60000; < 0 = no keepalive pings) */
    int keepalive_timeout_ms; /* a PING unanswered this long closes the connection and
                                 cancels its calls (0 = default 20000) */
    const char *grpc_args;    /* "KEY=INT,KEY=INT": integer gRPC core channel args set after (and
                                 so over) the server's own; NULL or "" = none. Checked with
                                 srv_rpc_check_grpc_args before srv_rpc_start. */
    srv_decode_fn decode;    /* NULL: protobuf-c unpacking alone */
    /* Called on the loop when the server can no longer accept calls of some method
     * (re-arming a request failed): the process should stop with an error. */
    void (*on_fatal)(const char *reason, void *payload);
    void *fatal_payload;
    /* Optional observer of every call (metrics), run on the loop: `on_call_start` when
     * a call is accepted, `on_call_end` when its status is sent, with the seconds in
     * between. `method` is the index in `methods`, n_methods for an unknown method. */
    void (*on_call_start)(void *app, int method);
    void (*on_call_end)(void *app, int method, grpc_status_code code, double seconds);
    grpc_server_credentials *creds; /* taken and released by srv_rpc_start; NULL = plaintext */
    /* Optional, run on the loop for every non-OK status the server sends (not for those
     * gRPC core makes itself, e.g. DEADLINE_EXCEEDED): the value of trailer
     * `grpc-status-details-bin` (a serialized google.rpc.Status whose code and message
     * are `code` and `message`), a new slice srv_rpc takes; an empty slice for none. */
    grpc_slice (*status_details)(srv_call *c, grpc_status_code code, const char *message);
} srv_rpc_config;

/** Checks a --grpc-args value ("KEY=INT,KEY=INT", keys "grpc.<lowercase>", at most 16):
 * 0, or -1 and a reason naming --grpc-args in err[errlen]. */
int srv_rpc_check_grpc_args(const char *spec, char *err, size_t errlen);

/** Creates, binds and starts the server. `methods` must outlive it; `app` is handed
 * to handlers through srv_call_app(). Returns 0 and the bound port, or -1 after
 * logging why (event=listen_failed with the system's reason); nothing is left
 * allocated on failure. */
int srv_rpc_start(srv_rpc **out, uv_loop_t *loop, const srv_rpc_config *cfg,
                  const srv_method *methods, int n_methods, void *app, int *bound_port);

/** Runs the server and the loop on the calling thread (the loop's) until the server has
 * shut down (srv_rpc_shutdown); then returns, and the caller's uv_run(UV_RUN_DEFAULT)
 * finishes the loop's remaining work (the server is freed there, `done` runs there).
 * Call it instead of uv_run while a server runs. */
void srv_rpc_run(srv_rpc *s);

/** Stops accepting calls; in-flight calls may finish. After `grace_ms` the remaining
 * calls are cancelled. `done` runs on the loop once every call is over, both completion
 * queues have shut down and the srv-streams thread has been joined; the server is freed
 * after it returns. */
void srv_rpc_shutdown(srv_rpc *s, uint64_t grace_ms, void (*done)(void *payload), void *payload);

/* ---- per call (the loop's thread only) ---- */

void *srv_call_app(const srv_call *c);
const srv_method *srv_call_method(const srv_call *c);
/** The unpacked request (unary and server-stream calls); owned by the call. */
const ProtobufCMessage *srv_call_request(const srv_call *c);
/** A request metadata value by lower-case key, or NULL. Not NUL-terminated: *len. */
const char *srv_call_metadata(const srv_call *c, const char *key, size_t *len);
/** Frees the call's copy of its request metadata (gRPC core's array, ~480 bytes): a
 * long-held call calls it once it has read what it needs; srv_call_metadata answers
 * NULL afterwards. */
void srv_call_drop_metadata(srv_call *c);
/** The call's deadline in loop milliseconds (uv_now scale); UINT64_MAX for none. */
uint64_t srv_call_deadline_ms(const srv_call *c);
/** Handler-owned state. */
void srv_call_set_data(srv_call *c, void *data);
void *srv_call_data(const srv_call *c);

/** The caller's address without the port ("127.0.0.1", "::1"), or "" if unknown,
 * into out[len]. */
void srv_call_peer_addr(const srv_call *c, char *out, size_t len);

/** Unary: answers OK with `msg` (serialised now; the caller keeps ownership). */
void srv_call_reply(srv_call *c, const ProtobufCMessage *msg);
/** Unary: answers OK with already serialised bytes; `bb` stays the caller's. */
void srv_call_reply_raw(srv_call *c, grpc_byte_buffer *bb);
/** Adds trailing metadata sent with the call's status (e.g. "retry-after-ms"); at
 * most 4 pairs, copied. Call before srv_call_finish. */
void srv_call_add_trailer(srv_call *c, const char *key, const char *value);
/** A trailer added with srv_call_add_trailer, or NULL. Not NUL-terminated: *len. */
const char *srv_call_trailer(const srv_call *c, const char *key, size_t *len);
/** Unary or stream: ends the call with `code` and a message naming the problem
 * (invalid UTF-8 in it, e.g. a character cut by a %.Ns, is replaced: clients decode
 * the message as UTF-8). With cfg.status_details, a non-OK status also carries the
 * structured details. Pending stream messages are sent first. The handler must not
 * touch `c` after. */
void srv_call_finish(srv_call *c, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/** Streams: queues a message (serialised now). Returns -1 if the call is over. */
int srv_call_send(srv_call *c, const ProtobufCMessage *msg);
int srv_call_send_raw(srv_call *c, grpc_byte_buffer *bb_taken);
/** Messages queued or in flight. */
int srv_call_pending_writes(const srv_call *c);
/** Streams: `cb` runs once, from a write's completion, when the messages queued or in
 * flight have fallen to `at` or fewer (not after the call ended). For backpressure: a
 * handler that stops receiving while its client reads slowly resumes from `cb`. */
void srv_call_on_drain(srv_call *c, int at, void (*cb)(srv_call *c));
/** Streams: `cb` runs once if the client cancels or the server shuts down; the handler
 * then must call srv_call_finish (its status is not delivered). */
void srv_call_on_cancel(srv_call *c, void (*cb)(srv_call *c));
int srv_call_is_cancelled(const srv_call *c);

/** Bidi streams: receives the next message; `cb` gets NULL at the end of the client's
 * stream (or on error). The buffer is owned by the call and valid during `cb`. */
void srv_call_recv(srv_call *c, void (*cb)(srv_call *c, grpc_byte_buffer *bb));
/** Bidi streams: decodes a message `cb` got as `desc` with the server's configured
 * decoder (every string checked on the wire first, as for the first request of other
 * calls). 0 and *out (the caller frees it with protobuf_c_message_free_unpacked), or -1
 * with the reason in err. */
int srv_call_decode(srv_call *c, const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb,
                    ProtobufCMessage **out, char *err, size_t errlen);

/** Counters for stats. */
typedef struct {
    uint64_t accepted, finished, unimplemented, active;
} srv_rpc_stats;
void srv_rpc_get_stats(const srv_rpc *s, srv_rpc_stats *out);
/** Finished calls of method index `method` (n_methods: unknown methods) with `code`. */
uint64_t srv_rpc_calls(const srv_rpc *s, int method, grpc_status_code code);

#endif
