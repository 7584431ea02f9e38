/* bench_engine: the asynchronous gRPC C core client engine of concert-bench.
 *
 * Many calls in flight over a few channels: each channel is created with its own
 * channel argument and a local subchannel pool, so every channel is a separate HTTP/2
 * connection. One completion queue per worker thread (default one thread); no
 * thread per call, no blocking call on the hot path.
 *
 * Work is described as virtual users: a user has at most one call in flight, and a
 * scenario (see bench_scen.h) decides in `next` what a user does next (a unary call or
 * a server stream). Two ways to drive users:
 *   closed loop  `concurrency` calls in flight; a finished call's user goes to the back
 *                of the idle line and the user at its head makes the next call.
 *   open loop    `rate` calls per second on a fixed schedule, each taken by an idle
 *                user; latency is measured from the SCHEDULED send time, so a server
 *                that falls behind cannot hide it (no coordinated omission). Users
 *                bound the calls in flight; a late call waits for a user.
 * A phase runs warmup then duration seconds (or until every user retired); the
 * calling thread samples once per second: merges the workers' latency histograms,
 * samples the watched processes, prints a progress line, and records a time series.
 * Calls still in flight at the end are cancelled and not counted.
 *
 * Threading: bench_engine_* from one control thread; bench_user_* only from the
 * scenario callbacks, which run on the user's worker thread. */
#ifndef BENCH_ENGINE_H
#define BENCH_ENGINE_H

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "bench_proc.h"
#include "cc_client.h"
#include "bench_report.h"

#define BENCH_MAX_CHANNELS 64
#define BENCH_MAX_THREADS 64

typedef struct bench_engine bench_engine;
typedef struct bench_user bench_user;

typedef struct {
    const char *target;  /* host:port */
    const cc_client_tls *tls; /* NULL: plaintext */
    int channels;        /* separate connections (default 4) */
    int threads;         /* worker threads, one completion queue each (default 1) */
    int timeout_ms;      /* deadline of each unary call (default 10000) */
    int quiet;           /* no progress lines on stderr */
} bench_engine_config;

/** Creates the channels (they connect lazily). Returns 0, or -1 with a reason. */
int bench_engine_new(bench_engine **out, const bench_engine_config *cfg, char *err, size_t errlen);
void bench_engine_free(bench_engine *e);

/** Waits until every channel is connected (READY), at most timeout_ms.
 * Returns 0, or -1 with a reason. */
int bench_engine_connect(bench_engine *e, int timeout_ms, char *err, size_t errlen);

/** Registers a method ("/pkg.Service/Method") on every channel under a short label
 * for reports ("GetQueueStatus"); `stream` for server-streaming methods. Returns its
 * id (0..BENCH_MAX_METHODS-1), or -1 when the table is full. Same path twice: same id. */
int bench_engine_method(bench_engine *e, const char *path, const char *label, int stream);

/** A scenario's per-user behaviour. Callbacks run on the user's worker thread. */
typedef struct {
    /* The user may make its next call: start exactly one with bench_user_unary or
     * bench_user_stream and return 0; return 1 for "not now" (the user goes back to
     * the idle line and is asked again after the next completion or within 20 ms; the
     * slot stays free meanwhile); or return -1 when it has nothing more to do (the
     * user retires for the rest of the phase). */
    int (*next)(bench_user *u);
    /* A unary call finished; `resp` (the response bytes when code is OK, else NULL)
     * is only valid during the call. May be NULL. */
    void (*unary_done)(bench_user *u, int method, grpc_status_code code, grpc_byte_buffer *resp);
    /* A stream message arrived (valid during the call). May be NULL. */
    void (*stream_msg)(bench_user *u, int method, grpc_byte_buffer *msg);
    /* A stream ended by itself (not when the engine cancels it at the end). May be NULL. */
    void (*stream_end)(bench_user *u, int method, grpc_status_code code);
    /* Frees what the scenario keeps in the user's data, at the end. May be NULL. */
    void (*user_free)(bench_user *u);
} bench_user_ops;

/** One measured phase. */
typedef struct {
    const char *name;          /* section name in the report */
    const bench_user_ops *ops;
    void *payload;             /* scenario state, bench_user_payload() */
    size_t user_data_size;     /* zeroed bytes per user, bench_user_data() */
    int users;                 /* virtual users; closed loop: at least `concurrency` */
    int concurrency;           /* closed loop: calls in flight */
    double rate;               /* > 0: open loop, scheduled calls per second */
    int warmup_s;              /* not counted */
    int duration_s;            /* measured; the phase also ends when every user retired */
} bench_phase;

/** Runs a phase to its end and returns its section (caller owns it; hand it to
 * bench_report_add). `procs` (may be NULL) is sampled once per second. NULL if the
 * phase could not start (reason on stderr). */
bench_result *bench_engine_run(bench_engine *e, const bench_phase *ph, bench_proc *procs);

/* ---- for scenario callbacks (the user's worker thread) ---- */

/** The user's zeroed scenario state (phase.user_data_size bytes). */
void *bench_user_data(bench_user *u);
/** The phase's payload. */
void *bench_user_payload(const bench_user *u);
/** 0 .. users-1, unique within the phase. */
uint64_t bench_user_id(const bench_user *u);

/** From `next`, before returning 1: the user sleeps until monotonic time `ns`
 * (bench_now_ns) and is asked again then, not before (instead of waiting in the
 * "not now" line, which is asked once per loop turn). For users that wait for a time
 * of their own (a poll interval, an open-loop arrival). */
void bench_user_wake_at(bench_user *u, uint64_t ns);

/** Adds a metadata pair (lower-case key, e.g. "authorization") to the user's NEXT call
 * only (at most 2; dropped when that call ends or fails to start). Only from `next`,
 * before bench_user_unary/bench_user_stream. 0 or -1. */
int bench_user_metadata(bench_user *u, const char *key, const char *value);
/** Starts a unary call of `method` with the serialised request `req` (the engine
 * takes its own reference; the caller keeps its). Only from `next`. 0 or -1. */
int bench_user_unary(bench_user *u, int method, grpc_slice req);
/** Starts a server-streaming call; it lasts until the server ends it or the phase
 * ends. Only from `next`. 0 or -1. */
int bench_user_stream(bench_user *u, int method, grpc_slice req);

/** Serialises a protobuf-c message into a new slice (caller unrefs it). */
grpc_slice bench_pack(const ProtobufCMessage *msg);

/** CLOCK_MONOTONIC in ns. */
uint64_t bench_now_ns(void);

#endif
