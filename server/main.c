/* concert-server: the gRPC front end. Parses configuration and hands over to srv_run. */
#include <stdio.h>
#include <string.h>

#include "cc_log.h"
#include "cc_opt.h"
#include "srv_run.h"

static const char usage[] =
    "Usage: concert-server --listen HOST:PORT --redis URL [options]\n"
    "\n"
    "The concert waiting room and booking gRPC service (package concert.v1), plus\n"
    "grpc.health.v1.Health and server reflection. Stateless: run as many as you like\n"
    "against one Redis. Redis URLs: redis://host:port[/db] or\n"
    "sentinel://host:port[,host:port...]/name. Logs one logfmt line per event to stderr.\n"
    "Queue policy flags are defaults for concerts without a policy set by an admin.\n"
    "Exit status: 0 stopped by SIGTERM/SIGINT, 1 fatal error while serving, 2 bad\n"
    "flags or configuration, 3 an address (gRPC or metrics) cannot be bound.\n";

int main(int argc, char **argv) {
    srv_config cfg = {
        .listen = "127.0.0.1:50051",
        .redis_url = "redis://127.0.0.1:6379",
        .log_level = "info",
        .admit_rate = 100,
        .max_active = 1000,
        .active_ttl_ms = 10 * 60 * 1000,
        .idle_timeout_ms = 60 * 1000,
        .admit_interval_ms = 100,
        .watch_interval_ms = 500,
        .redis_connections = 2,
        .redis_timeout_ms = 2000,
        .shutdown_grace_ms = 5000,
        .requests_per_method = 64,
        .keepalive_time_ms = 60000,
        .keepalive_timeout_ms = 20000,
        .hold_ttl_ms = 5 * 60 * 1000,
        .max_seats_per_user = 4,
        .sweep_interval_ms = 250,
        .kafka_timeout_ms = 10000,
        .kafka_linger_ms = 5,
        .kafka_fetch_wait_ms = 500,
        .kafka_fetch_min_bytes = 1,
        .rate_user = "20:40",
        .rate_peer = "2000:4000",
        .max_queues_per_user = 10,
        .max_tokens_per_stream = 1000,
        .seat_cache_ms = 500,
        .adapt_interval_ms = 2000,
        .adapt_pending_ms = 5000,
        .adapt_backlog = 1000,
        .adapt_error_permille = 50,
    };
    const cc_opt opts[] = {
        {"listen", "CONCERT_LISTEN", CC_OPT_STR, &cfg.listen, "HOST:PORT", "address to serve gRPC on (default 127.0.0.1:50051)", 0, 0},
        {"redis", "CONCERT_REDIS", CC_OPT_STR, &cfg.redis_url, "URL", "Redis URL (default redis://127.0.0.1:6379)", 0, 0},
        {"kafka", "CONCERT_KAFKA", CC_OPT_STR, &cfg.kafka, "BROKERS", "Kafka bootstrap servers host:port[,...] (payments)", 0, 0},
        {"admin-key", "CONCERT_ADMIN_KEY", CC_OPT_STR, &cfg.admin_key, "KEY", "x-admin-key for AdminService; unset = no admin", 0, 0},
        {"metrics", "CONCERT_METRICS", CC_OPT_STR, &cfg.metrics, "HOST:PORT", "serve Prometheus metrics over HTTP here", 0, 0},
        {"log-level", "CONCERT_LOG_LEVEL", CC_OPT_STR, &cfg.log_level, "LEVEL", "debug, info, warn or error (default info)", 0, 0},
        {"admit-rate", "CONCERT_ADMIT_RATE", CC_OPT_INT, &cfg.admit_rate, "N", "default admissions per second per concert (default 100; 0 pauses)", 0, 1000000},
        {"max-active", "CONCERT_MAX_ACTIVE", CC_OPT_INT, &cfg.max_active, "N", "default cap of ACTIVE users per concert (default 1000)", 0, 100000000},
        {"active-ttl-ms", "CONCERT_ACTIVE_TTL_MS", CC_OPT_INT, &cfg.active_ttl_ms, "MS", "default lifetime of an ACTIVE token (default 600000)", 1000, 86400000},
        {"idle-timeout-ms", "CONCERT_IDLE_TIMEOUT_MS", CC_OPT_INT, &cfg.idle_timeout_ms, "MS", "waiting users silent this long lose their place (default 60000; 0 = never)", 0, 86400000},
        {"hold-ttl-ms", "CONCERT_HOLD_TTL_MS", CC_OPT_INT, &cfg.hold_ttl_ms, "MS", "default seat hold before payment (default 300000)", 1000, 3600000},
        {"max-seats-per-user", "CONCERT_MAX_SEATS_PER_USER", CC_OPT_INT, &cfg.max_seats_per_user, "N", "default seats one user may hold at once per concert (default 4)", 1, 100},
        {"sweep-interval-ms", "CONCERT_SWEEP_INTERVAL_MS", CC_OPT_INT, &cfg.sweep_interval_ms, "MS", "how often lapsed holds are expired and reported (default 250)", 10, 10000},
        {"kafka-timeout-ms", "CONCERT_KAFKA_TIMEOUT_MS", CC_OPT_INT, &cfg.kafka_timeout_ms, "MS", "how long a payment request may wait for Kafka's acknowledgement when the call has no deadline (default 10000)", 100, 300000},
        {"kafka-linger-ms", "CONCERT_KAFKA_LINGER_MS", CC_OPT_INT, &cfg.kafka_linger_ms, "MS", "linger.ms of the payment requests producer: how long a batch waits for more payments (default 5)", 0, 1000},
        {"kafka-fetch-wait-ms", "CONCERT_KAFKA_FETCH_WAIT_MS", CC_OPT_INT, &cfg.kafka_fetch_wait_ms, "MS", "fetch.wait.max.ms of the payment results feed (WatchPayment): longest a fetch waits for --kafka-fetch-min-bytes (default 500)", 1, 10000},
        {"kafka-fetch-min-bytes", "CONCERT_KAFKA_FETCH_MIN_BYTES", CC_OPT_INT, &cfg.kafka_fetch_min_bytes, "N", "fetch.min.bytes of the payment results feed (default 1: a result is answered at once)", 1, 100000000},
        {"admit-interval-ms", "CONCERT_ADMIT_INTERVAL_MS", CC_OPT_INT, &cfg.admit_interval_ms, "MS", "how often this server runs admission (default 100)", 10, 10000},
        {"watch-interval-ms", "CONCERT_WATCH_INTERVAL_MS", CC_OPT_INT, &cfg.watch_interval_ms, "MS", "how often queue watchers are refreshed (default 500)", 50, 60000},
        {"redis-connections", "CONCERT_REDIS_CONNECTIONS", CC_OPT_INT, &cfg.redis_connections, "N", "pipelined Redis connections per node: small commands share the first, big or long replies (seat maps, watcher refreshes, admission, audits) go on the second; 1: both share one; more: hot spares (default 2)", 1, 64},
        {"redis-timeout-ms", "CONCERT_REDIS_TIMEOUT_MS", CC_OPT_INT, &cfg.redis_timeout_ms, "MS", "Redis command timeout (default 2000)", 10, 60000},
        {"shutdown-grace-ms", "CONCERT_SHUTDOWN_GRACE_MS", CC_OPT_INT, &cfg.shutdown_grace_ms, "MS", "on SIGTERM, time for in-flight calls (default 5000)", 0, 600000},
        {"tls-cert", "CONCERT_TLS_CERT", CC_OPT_STR, &cfg.tls_cert, "FILE", "serve gRPC over TLS with this PEM certificate (chain); needs --tls-key", 0, 0},
        {"tls-key", "CONCERT_TLS_KEY", CC_OPT_STR, &cfg.tls_key, "FILE", "PEM private key of --tls-cert", 0, 0},
        {"tls-client-ca", "CONCERT_TLS_CLIENT_CA", CC_OPT_STR, &cfg.tls_client_ca, "FILE", "mutual TLS: require client certificates signed by this PEM CA", 0, 0},
        {"requests-per-method", "CONCERT_REQUESTS_PER_METHOD", CC_OPT_INT, &cfg.requests_per_method, "N", "most calls kept armed per method in gRPC core: each method starts with 2 and gets one more whenever it takes as many calls in one turn of the loop as it has armed, up to N (default 64; a grown method keeps its slots, and all methods together stop at 32 per method; every armed call costs each call ~12 instructions with the Debian gRPC 1.51 build: docs/PERFORMANCE.md \"Server cost per call\")", 1, 4096},
        {"keepalive-time-ms", "CONCERT_KEEPALIVE_TIME_MS", CC_OPT_INT, &cfg.keepalive_time_ms, "MS", "PING a client connection after this long without traffic, so dead clients' streams (WatchQueueStatus) are dropped (default 60000; 0 = off)", 0, 86400000},
        {"keepalive-timeout-ms", "CONCERT_KEEPALIVE_TIMEOUT_MS", CC_OPT_INT, &cfg.keepalive_timeout_ms, "MS", "a keepalive PING unanswered this long closes the connection and cancels its calls (default 20000)", 10, 600000},
        {"grpc-args", "CONCERT_GRPC_ARGS", CC_OPT_STR, &cfg.grpc_args, "KEY=INT,...", "integer gRPC core channel args over the server's own, e.g. grpc.http2.lookahead_bytes=4096 (for tuning and measurement: docs/PERFORMANCE.md \"Streams\"; unset = the server's defaults)", 0, 0},
        {"reuse-port", "CONCERT_REUSE_PORT", CC_OPT_FLAG, &cfg.reuse_port, NULL, "share the listening port with other processes that also set it (SO_REUSEPORT); without it a busy port is a start-up error (exit 3)", 0, 0},
        {"identity-key", "CONCERT_IDENTITY_KEY", CC_OPT_STR, &cfg.identity_key, "FILE", "identity mode: IssueToken and WalletService calls need x-user-assertion, a JWT whose sub is the user_id, verified with this Ed25519 public key (PEM) or HS256 secret (>= 32 bytes); unset = user_id is trusted (gateway mode)", 0, 0},
        {"rate-user", "CONCERT_RATE_USER", CC_OPT_STR, &cfg.rate_user, "RATE[:BURST]", "per user (IssueToken, Charge) or token (GetQueueStatus, ListSeats) and method: calls per second and burst (default 20:40; 0 = off)", 0, 0},
        {"rate-peer", "CONCERT_RATE_PEER", CC_OPT_STR, &cfg.rate_peer, "RATE[:BURST]", "the same per caller IP address and method (default 2000:4000; 0 = off, e.g. behind a gateway)", 0, 0},
        {"max-queues-per-user", "CONCERT_MAX_QUEUES_PER_USER", CC_OPT_INT, &cfg.max_queues_per_user, "N", "concerts one user may wait in (or be ACTIVE in) at once (default 10)", 1, 1000},
        {"max-tokens-per-stream", "CONCERT_MAX_TOKENS_PER_STREAM", CC_OPT_INT, &cfg.max_tokens_per_stream, "N", "tokens one WatchQueueStatuses stream may watch at once; one more is refused in its own update (RESOURCE_EXHAUSTED), a request adding more than this at once ends the stream (INVALID_ARGUMENT) (default 1000)", 1, 100000},
        {"seat-cache-ms", "CONCERT_SEAT_CACHE_MS", CC_OPT_INT, &cfg.seat_cache_ms, "MS", "how old a seat map ListSeats serves may be (this server's own holds show at once; default 500)", 0, 60000},
        {"signing-key", "CONCERT_SIGNING_KEY", CC_OPT_STR, &cfg.signing_key, "FILE", "Ed25519 private key (PEM) that signs admission receipts; unset = a key generated at start-up (a warning: its receipts verify only until they expire)", 0, 0},
        {"adapt-interval-ms", "CONCERT_ADAPT_INTERVAL_MS", CC_OPT_INT, &cfg.adapt_interval_ms, "MS", "ADAPTIVE admission: how often the rate is recomputed (default 2000)", 200, 60000},
        {"adapt-pending-ms", "CONCERT_ADAPT_PENDING_MS", CC_OPT_INT, &cfg.adapt_pending_ms, "MS", "ADAPTIVE admission: unhealthy while a payment of the concert is pending longer than this (default 5000)", 100, 3600000},
        {"adapt-backlog", "CONCERT_ADAPT_BACKLOG", CC_OPT_INT, &cfg.adapt_backlog, "N", "ADAPTIVE admission: unhealthy while more of the concert's payments than this are unsettled (default 1000)", 1, 100000000},
        {"adapt-error-permille", "CONCERT_ADAPT_ERROR_PERMILLE", CC_OPT_INT, &cfg.adapt_error_permille, "N", "ADAPTIVE admission: unhealthy while more booking calls than this per mille fail on the server side (default 50)", 0, 1000},
        {0},
    };
    if (cc_opt_parse(opts, argc, argv, usage, NULL, 0, NULL) < 0) return SRV_EXIT_USAGE;
    int lvl = cc_log_level_parse(cfg.log_level);
    if (lvl < 0) {
        fprintf(stderr, "concert-server: --log-level: expected debug, info, warn or error\n");
        return SRV_EXIT_USAGE;
    }
    cc_log_init("concert-server", (cc_log_level)lvl);
    return srv_run(&cfg);
}
