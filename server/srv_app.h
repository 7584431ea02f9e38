/* srv_app: the state one concert-server process shares between its services: the
 * loop, the Redis pool, the configuration, the Lua scripts and the per-concert
 * registry (admission ticks and queue watchers). Services are in srv_<name>.c. */
#ifndef SRV_APP_H
#define SRV_APP_H

#include <grpc/grpc.h>
#include <stdint.h>
#include <uv.h>

#include "cc_redis.h"
#include "srv_limit.h"
#include "srv_rpc.h"

typedef struct {
    const char *listen;
    const char *redis_url;
    const char *kafka;
    const char *admin_key;
    const char *metrics;
    const char *log_level;
    int64_t admit_rate;        /* default admissions per second per concert */
    int64_t max_active;        /* default cap of ACTIVE users per concert */
    int64_t active_ttl_ms;     /* default lifetime of an ACTIVE token */
    int64_t idle_timeout_ms;   /* default: waiting users silent this long lose their place */
    int64_t admit_interval_ms; /* how often this server runs the admission script */
    int64_t watch_interval_ms; /* how often queue watchers are refreshed */
    int64_t redis_connections;
    int64_t redis_timeout_ms;
    int64_t shutdown_grace_ms;
    int64_t requests_per_method;
    int64_t hold_ttl_ms;        /* default seat hold */
    int64_t max_seats_per_user; /* default cap of seats one user holds at once */
    int64_t sweep_interval_ms;  /* how often lapsed holds are expired and reported */
    int64_t kafka_timeout_ms;   /* how long the producer retries a payment request */
    int64_t kafka_linger_ms;    /* payment requests producer: linger.ms */
    int64_t kafka_fetch_wait_ms;   /* results feed: fetch.wait.max.ms */
    int64_t kafka_fetch_min_bytes; /* results feed: fetch.min.bytes */
    int64_t keepalive_time_ms;    /* --keepalive-time-ms: server PINGs after this much silence (0 = off) */
    int64_t keepalive_timeout_ms; /* --keepalive-timeout-ms: unanswered PING closes the connection */
    int reuse_port;              /* --reuse-port: share the listening port (SO_REUSEPORT) */
    const char *grpc_args;       /* --grpc-args "KEY=INT,...": gRPC core channel args over the defaults */
    const char *identity_key;    /* --identity-key FILE: verify x-user-assertion (NULL: trust user_id) */
    const char *rate_user;       /* per user (or token) and method: "RATE[:BURST]" or "0" */
    const char *rate_peer;       /* per peer address and method */
    int64_t max_queues_per_user; /* concerts one user may wait in (or be ACTIVE in) at once */
    int64_t max_tokens_per_stream; /* --max-tokens-per-stream: tokens one WatchQueueStatuses stream watches */
    int64_t seat_cache_ms;       /* how old a seat map served by ListSeats may be */
    const char *tls_cert, *tls_key, *tls_client_ca; /* srv_tls.h; unset = plaintext */
    const char *signing_key;      /* --signing-key FILE: Ed25519 private key (PEM) signing admission
                                     receipts; NULL = one generated at start-up (srv_receipt.h) */
    int64_t adapt_interval_ms;    /* ADAPTIVE admission: how often the rate is recomputed */
    int64_t adapt_pending_ms;     /* ... unhealthy while a payment is pending longer than this */
    int64_t adapt_backlog;        /* ... or more payments of the concert than this are unsettled */
    int64_t adapt_error_permille; /* ... or more booking calls than this fail (per mille) */
} srv_config;

typedef struct srv_concert srv_concert;
typedef struct srv_watcher srv_watcher;
typedef struct srv_health_watcher srv_health_watcher;

typedef struct cc_kafka_producer cc_kafka_producer;
typedef struct srv_ident srv_ident;
typedef struct srv_seatmaps srv_seatmaps;
typedef struct srv_queue_state srv_queue_state;
typedef struct srv_receipts srv_receipts;
typedef struct srv_adapt srv_adapt;

typedef struct srv_app {
    uv_loop_t *loop;
    srv_config cfg;
    cc_redis *redis;
    cc_kafka_producer *kafka; /* NULL without --kafka */
    struct cc_kafka_topics_req *topics_req; /* the start-up topic check while pending */
    srv_rpc *rpc;
    int shutting_down;
    /* concerts known to this server, for admission ticks and watchers */
    srv_concert **concert_buckets;
    size_t n_buckets, n_concerts;
    uv_timer_t admit_timer, watch_timer, refresh_timer;
    int refresh_inflight;
    uv_timer_t sweep_timer;
    /* health watchers */
    srv_health_watcher *health_watchers;
    /* abuse protection: rate limits (user/token and peer buckets) and identity mode */
    srv_limit_spec rate_user, rate_peer;
    srv_limit *limit_user, *limit_peer;
    uv_timer_t limit_timer;
    srv_ident *ident; /* NULL: user_id is trusted (gateway mode) */
    srv_seatmaps *seatmaps; /* ListSeats cache (srv_booking.c) */
    srv_queue_state *queue; /* srv_queue.c: argument strings, Redis clock offset */
    srv_receipts *receipts; /* srv_receipt.c: the signing key */
    srv_adapt *adapt;       /* srv_adapt.c: booking error counts for ADAPTIVE admission */
    int exit_code;    /* what the process exits with (srv_run.h) */
} srv_app;

/* ---- Redis helpers shared by services ---- */

/** Maps a failed Redis call (reply NULL with `err`, or an error reply) to a gRPC
 * status and a message; returns GRPC_STATUS_OK when `reply` is not an error. */
grpc_status_code srv_redis_status(const redisReply *reply, const char *err, char *msg, size_t msglen);

/** Finishes `call` with the status of a failed Redis call. */
void srv_fail_redis(srv_call *call, const redisReply *reply, const char *err);

/** Finishes `call` with UNAVAILABLE because no Redis connection is up. */
void srv_fail_no_redis(srv_call *call);

/* ---- services ---- */

/** All methods this server registers (queue, health, reflection, ...). */
extern const srv_method srv_methods[];
extern const int srv_n_methods;

int srv_queue_init(srv_app *app);
void srv_queue_shutdown(srv_app *app);
/** Frees the concert registry once the loop has stopped. */
void srv_queue_free(srv_app *app);
void srv_health_init(srv_app *app);
/** Redis went up or down: tell health watchers. */
void srv_health_changed(srv_app *app);

void srv_queue_issue_token(srv_call *c);
void srv_queue_get_status(srv_call *c);
void srv_queue_watch(srv_call *c);
void srv_queue_watch_many(srv_call *c);
void srv_queue_leave(srv_call *c);
void srv_queue_sale_proof(srv_call *c);
void srv_receipt_keys(srv_call *c);
void srv_health_check(srv_call *c);
/** Health/Check answered without an srv_call: 1 and the reply's bytes, or 0 (see srv_rpc.h). */
int srv_health_check_cq(const ProtobufCMessage *req, void *app, grpc_slice *reply);
void srv_health_watch(srv_call *c);
void srv_reflection_info(srv_call *c);

int srv_booking_init(srv_app *app);
void srv_booking_shutdown(srv_app *app);
/** Frees the seat-map cache once the loop has stopped. */
void srv_booking_free(srv_app *app);
void srv_booking_list_schedules(srv_call *c);
void srv_booking_list_seats(srv_call *c);
void srv_booking_reserve(srv_call *c);
void srv_booking_get(srv_call *c);
void srv_booking_cancel(srv_call *c);

void srv_payment_init(srv_app *app);
/** Starts reading concert.payment-results for WatchPayment (with --kafka); 0 or -1. */
int srv_payment_start_feed(srv_app *app, char *err, size_t errlen);
void srv_payment_shutdown(srv_app *app);
void srv_payment_pay(srv_call *c);
void srv_payment_get(srv_call *c);
void srv_payment_watch(srv_call *c);

/** Serves Prometheus metrics on HOST:PORT (GET /metrics; port 0 picks one and the
 * `metrics_listening` log line names it); 0, or -1 with the reason on stderr. */
int srv_metrics_start(srv_app *app, const char *hostport);
void srv_metrics_stop(srv_app *app);
/** srv_rpc call observer (srv_rpc_config.on_call_start / on_call_end). */
void srv_metrics_call_start(void *app, int method);
void srv_metrics_call_end(void *app, int method, grpc_status_code code, double seconds);
/** One admission tick's reply for `concert` (queue gauges, admitted counter). */
void srv_metrics_queue_tick(srv_app *app, const char *concert, int64_t admitted, int64_t waiting, int64_t active);
/** Users admitted outside a tick (IssueToken straight through, PASSTHROUGH). */
void srv_metrics_queue_admitted(srv_app *app, const char *concert, int64_t admitted);
/** The concert's effective admission rate (concert_queue_effective_admit_rate). */
void srv_metrics_queue_rate(srv_app *app, const char *concert, int64_t rate);
/** Counts one Pay answer by `outcome` (pending, completed, failed, unavailable, rejected). */
void srv_metrics_payment(srv_app *app, const char *outcome);
/** The Kafka producer's state changed. */
void srv_metrics_kafka_state(srv_app *app, int up);
/* Every srv_metrics_* call is a no-op without --metrics. */

void srv_wallet_init(srv_app *app);
void srv_wallet_balance(srv_call *c);
void srv_wallet_charge(srv_call *c);

void srv_admin_init(srv_app *app);
void srv_admin_create_concert(srv_call *c);
void srv_admin_list_concerts(srv_call *c);
void srv_admin_create_schedule(srv_call *c);
void srv_admin_set_policy(srv_call *c);
void srv_admin_get_policy(srv_call *c);
void srv_admin_stats(srv_call *c);
void srv_admin_audit(srv_call *c);
void srv_admin_export_sale(srv_call *c);

/** Scripts registered with the Redis pool, filled by the services' init functions
 * (at most SRV_MAX_SCRIPTS: srv_script_add aborts beyond, at start-up). */
#define SRV_MAX_SCRIPTS 64
extern cc_redis_script *srv_scripts[];
extern int srv_n_scripts;

/** Initialises `s` from `prelude` (may be NULL) followed by `body` and registers it
 * for loading on every Redis connection. The text is kept for the process' life. */
void srv_script_add(cc_redis_script *s, const char *name, const unsigned char *prelude, size_t prelude_len,
                    const unsigned char *body, size_t body_len);

/** For scripts answering {0, ...} or {grpc_code, message}: 1 if the reply is a
 * success; otherwise finishes `call` with the error (or the Redis failure) and
 * returns 0. */
int srv_script_ok(srv_call *call, const redisReply *r, const char *err);

/** Integer / string element i of an array reply (0 / "" when absent). */
int64_t srv_int_at(const redisReply *r, size_t i);
const char *srv_str_at(const redisReply *r, size_t i);

/** The bearer token of the call: fills token[SRV_TOKEN_MAX+1] and the token's concert;
 * on failure finishes the call with UNAUTHENTICATED and returns -1. */
int srv_auth_token(srv_call *call, char *token, char *concert);

/** Checks the x-admin-key metadata; on failure finishes the call and returns -1. */
int srv_auth_admin(srv_call *call);

/** Identity mode: checks that the call's x-user-assertion names `user_id`. Without
 * --identity-key it returns 0 at once. On failure finishes the call (UNAUTHENTICATED:
 * missing or invalid; PERMISSION_DENIED: another user's) and returns -1. */
int srv_auth_user(srv_call *call, const char *user_id);

/** Rate limits of the call's method for `who` (the user id, or the token; NULL: the
 * peer limit only) and for the caller's address. On a limit it finishes the call with
 * RESOURCE_EXHAUSTED and a `retry-after-ms` trailer and returns -1. `field` names
 * what `who` is in the message ("user_id", "token"). */
int srv_limit_call(srv_call *call, const char *field, const char *who);

/** Sets up the limits and identity mode from the configuration (0, or -1 with err). */
int srv_guard_init(srv_app *app, char *err, size_t errlen);
void srv_guard_shutdown(srv_app *app);
/** Frees what srv_guard_init made, once the loop has stopped. */
void srv_guard_free(srv_app *app);

/** Calls `fn` for every concert this server knows (queues and catalogue). */
/** WatchQueueStatus and WatchQueueStatuses streams open in this process (the
 * concert_watch_streams gauge). */
size_t srv_queue_watch_streams(void);
/** Tokens watched in this process over both methods (the concert_watched_tokens gauge):
 * one per WatchQueueStatus stream, one per token of a WatchQueueStatuses stream. */
size_t srv_queue_watched_tokens(void);
void srv_concerts_foreach(srv_app *app, void (*fn)(srv_app *app, const char *concert, void *arg), void *arg);
/** A concert with live users (a join, a live token): this server ticks it and writes it
 * into cc:queues so that every server does, until a tick finds it empty. Never for an
 * id a caller merely named. */
void srv_concert_remember(srv_app *app, const char *concert);

#endif
