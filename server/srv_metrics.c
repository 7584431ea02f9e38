/* srv_metrics: concert-server's Prometheus metrics (--metrics HOST:PORT), on the
 * shared registry and HTTP endpoint of common/cc_metrics.
 *
 * Families (names shared with the dashboards and alerts in deploy/):
 * - gRPC, as the go-grpc-prometheus convention names them: grpc_server_started_total,
 *   grpc_server_handled_total, grpc_server_handling_seconds (histogram), labels
 *   grpc_service / grpc_method / grpc_type (/ grpc_code), fed by srv_rpc's call
 *   observer with series handles cached per method (no lookup per call);
 * - the queue per concert: concert_queue_waiting, concert_queue_active and
 *   concert_queue_effective_admit_rate (gauges, as this server's last admission tick
 *   saw them) and concert_queue_admitted_total (admissions this server made, by its
 *   ticks or straight through in IssueToken; sum over servers for the concert's total);
 * - Redis and Kafka health: up gauges, command counters, and Redis memory
 *   (used_memory, maxmemory) from an `INFO memory` every few seconds;
 * - process_* and concert_build_info, from cc_metrics.
 * Owns the registry (static: one per process). Must not block the loop or call Redis
 * per scrape. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cc_kafka.h"
#include "cc_log.h"
#include "cc_metrics.h"
#include "srv_app.h"

#ifndef CONCERT_VERSION
#define CONCERT_VERSION "dev"
#endif

#define REDIS_INFO_INTERVAL_MS 5000

static const char *const code_names[] = {
    "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists",
    "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange",
    "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
};

typedef struct {
    char service[128], method[96];
    const char *type;
    cc_series *started, *seconds;
    cc_series *handled[17];
} method_series;

static struct {
    cc_metrics *reg;
    srv_app *app;
    method_series *methods; /* srv_n_methods + 1 (unknown) */
    cc_metric *started, *handled, *seconds;
    cc_metric *q_waiting, *q_active, *q_admitted, *q_rate;
    cc_series *calls_active, *redis_up, *redis_cmds, *redis_errors, *redis_timeouts, *redis_reconnects;
    cc_metric *redis_used, *redis_max;
    cc_series *kafka_up, *kafka_pending, *concerts, *watch_streams, *watched_tokens;
    cc_metric *payments;
    cc_series *redir_moved, *redir_ask, *redir_retry, *noscript;
    uv_timer_t info_timer;
    int info_timer_live, info_inflight;
} M;

/* "/pkg.Service/Method" -> service "pkg.Service", method "Method". */
static void split_path(const char *path, method_series *ms) {
    const char *p = path[0] == '/' ? path + 1 : path;
    const char *slash = strrchr(p, '/');
    if (!slash) {
        snprintf(ms->service, sizeof ms->service, "unknown");
        snprintf(ms->method, sizeof ms->method, "%s", p);
        return;
    }
    snprintf(ms->service, sizeof ms->service, "%.*s", (int)(slash - p), p);
    snprintf(ms->method, sizeof ms->method, "%s", slash + 1);
}

static method_series *series_of(int method) {
    if (!M.methods || method < 0 || method > srv_n_methods) return NULL;
    return &M.methods[method];
}

void srv_metrics_call_start(void *app, int method) {
    method_series *ms = series_of(method);
    if (ms) cc_series_add(ms->started, 1);
}

void srv_metrics_call_end(void *app, int method, grpc_status_code code, double seconds) {
    method_series *ms = series_of(method);
    if (!ms) return;
    if ((int)code < 0 || (int)code > 16) code = GRPC_STATUS_UNKNOWN;
    if (!ms->handled[code]) {
        const char *v[] = {ms->type, ms->service, ms->method, code_names[code]};
        ms->handled[code] = cc_metric_with(M.handled, v);
    }
    cc_series_add(ms->handled[code], 1);
    cc_series_observe(ms->seconds, seconds);
}

void srv_metrics_queue_tick(srv_app *app, const char *concert, int64_t admitted, int64_t waiting, int64_t active) {
    if (!M.reg) return;
    const char *v[] = {concert};
    cc_series_set(cc_metric_with(M.q_waiting, v), (double)waiting);
    cc_series_set(cc_metric_with(M.q_active, v), (double)active);
    cc_series *a = cc_metric_with(M.q_admitted, v);
    if (admitted > 0) cc_series_add(a, (double)admitted);
}

void srv_metrics_queue_admitted(srv_app *app, const char *concert, int64_t admitted) {
    if (!M.reg || admitted <= 0) return;
    const char *v[] = {concert};
    cc_series_add(cc_metric_with(M.q_admitted, v), (double)admitted);
}

void srv_metrics_queue_rate(srv_app *app, const char *concert, int64_t rate) {
    if (!M.reg) return;
    const char *v[] = {concert};
    cc_series_set(cc_metric_with(M.q_rate, v), (double)rate);
}

void srv_metrics_payment(srv_app *app, const char *outcome) {
    if (!M.reg) return;
    const char *v[] = {outcome};
    cc_series_add(cc_metric_with(M.payments, v), 1);
}

void srv_metrics_kafka_state(srv_app *app, int up) {
    if (M.reg) cc_series_set(M.kafka_up, up);
}

/* ---- Redis memory, every few seconds (never per scrape), per primary ---- */

typedef struct {
    int node;
} info_req;

static double info_field(const char *info, const char *name) {
    size_t n = strlen(name);
    for (const char *p = info; (p = strstr(p, name)); p += n)
        if ((p == info || p[-1] == '\n') && p[n] == ':') return strtod(p + n + 1, NULL);
    return -1;
}

static void on_info(redisReply *r, const char *err, void *payload) {
    info_req *q = payload;
    int node = q->node;
    free(q);
    if (--M.info_inflight < 0) M.info_inflight = 0;
    if (!M.reg || !M.app || !r || r->type != REDIS_REPLY_STRING) return;
    char addr[300];
    cc_redis_node_addr(M.app->redis, node, addr, sizeof addr);
    if (!addr[0]) return;
    const char *v[] = {addr};
    double used = info_field(r->str, "used_memory"), max = info_field(r->str, "maxmemory");
    if (used >= 0) cc_series_set(cc_metric_with(M.redis_used, v), used);
    /* Asked every 250 ms until the first answer, then every REDIS_INFO_INTERVAL_MS. */
    if (M.info_timer_live) uv_timer_set_repeat(&M.info_timer, REDIS_INFO_INTERVAL_MS);
    if (max >= 0) cc_series_set(cc_metric_with(M.redis_max, v), max);
}

static void on_info_timer(uv_timer_t *t) {
    if (M.info_inflight || !M.app || !cc_redis_is_up(M.app->redis)) return;
    const char *argv[] = {"INFO", "memory"};
    for (int i = 0; i < cc_redis_n_nodes(M.app->redis); i++) {
        info_req *q = malloc(sizeof *q);
        if (!q) abort();
        q->node = i;
        if (cc_redis_command_node(M.app->redis, i, on_info, q, 2, argv, NULL) == 0) M.info_inflight++;
        else free(q);
    }
}

static void count_concert(srv_app *app, const char *concert, void *arg) { ++*(int *)arg; }

static void collect(cc_metrics *reg, void *payload) {
    srv_app *app = payload;
    srv_rpc_stats rs;
    srv_rpc_get_stats(app->rpc, &rs);
    cc_series_set(M.calls_active, (double)rs.active);
    cc_redis_stats st;
    cc_redis_get_stats(app->redis, &st);
    cc_series_set(M.redis_up, cc_redis_is_up(app->redis));
    cc_series_set(M.redis_cmds, (double)st.sent);
    cc_series_set(M.redis_errors, (double)st.errors);
    cc_series_set(M.redis_timeouts, (double)st.timeouts);
    cc_series_set(M.redis_reconnects, (double)st.reconnects);
    cc_series_set(M.redir_moved, (double)st.moved);
    cc_series_set(M.redir_ask, (double)st.asks);
    cc_series_set(M.redir_retry, (double)st.retries);
    cc_series_set(M.noscript, (double)st.noscript);
    if (app->kafka) cc_series_set(M.kafka_pending, cc_kafka_producer_pending(app->kafka));
    int n = 0;
    srv_concerts_foreach(app, count_concert, &n);
    cc_series_set(M.concerts, n);
    cc_series_set(M.watch_streams, (double)srv_queue_watch_streams());
    cc_series_set(M.watched_tokens, (double)srv_queue_watched_tokens());
}

static cc_series *single(cc_metric *f) { return cc_metric_with(f, NULL); }

int srv_metrics_start(srv_app *app, const char *hostport) {
    M.reg = cc_metrics_new("concert", CONCERT_VERSION);
    M.app = app;
    cc_metrics *r = M.reg;
    const char *lm[] = {"grpc_type", "grpc_service", "grpc_method", "grpc_code"};
    M.started = cc_metrics_counter(r, "grpc_server_started_total", "Total number of RPCs started on the server.", 3, lm);
    M.handled = cc_metrics_counter(r, "grpc_server_handled_total",
                                   "Total number of RPCs completed on the server, regardless of success or failure.",
                                   4, lm);
    M.seconds = cc_metrics_histogram(r, "grpc_server_handling_seconds",
                                     "Histogram of response latency (seconds) of gRPC that had been application-level "
                                     "handled by the server (streams: until their status).",
                                     3, lm, cc_metrics_latency_bounds, cc_metrics_n_latency_bounds);
    M.methods = calloc((size_t)srv_n_methods + 1, sizeof *M.methods);
    if (!M.methods) abort();
    for (int i = 0; i <= srv_n_methods; i++) {
        method_series *ms = &M.methods[i];
        if (i < srv_n_methods) {
            split_path(srv_methods[i].path, ms);
            ms->type = srv_methods[i].kind == SRV_UNARY           ? "unary"
                       : srv_methods[i].kind == SRV_SERVER_STREAM ? "server_stream"
                                                                  : "bidi_stream";
        } else {
            snprintf(ms->service, sizeof ms->service, "unknown");
            snprintf(ms->method, sizeof ms->method, "unknown");
            ms->type = "unary";
        }
        const char *v[] = {ms->type, ms->service, ms->method};
        ms->started = cc_metric_with(M.started, v);
        ms->seconds = cc_metric_with(M.seconds, v);
    }
    M.calls_active = single(cc_metrics_gauge(r, "concert_grpc_calls_active", "gRPC calls in progress (streams included).", 0, NULL));
    const char *lc[] = {"concert"};
    M.q_waiting = cc_metrics_gauge(r, "concert_queue_waiting", "Users waiting in the concert's queue, as this server's last admission tick saw it.", 1, lc);
    M.q_active = cc_metrics_gauge(r, "concert_queue_active", "ACTIVE users of the concert, as this server's last admission tick saw it.", 1, lc);
    M.q_admitted = cc_metrics_counter(r, "concert_queue_admitted_total", "Users this server admitted: moved from WAITING to ACTIVE by its ticks, or ACTIVE at once by IssueToken (sum over servers for the concert).", 1, lc);
    M.q_rate = cc_metrics_gauge(r, "concert_queue_effective_admit_rate", "Admissions per second the concert's queue admits at now: admit_rate, or the adaptive controller's rate, as this server's last admission tick saw it.", 1, lc);
    const char *lo[] = {"outcome"};
    M.payments = cc_metrics_counter(r, "concert_payments_total", "Pay calls by how they were answered (pending, completed, failed, unavailable, rejected).", 1, lo);
    M.redis_up = single(cc_metrics_gauge(r, "concert_redis_up", "1 while at least one Redis connection is up.", 0, NULL));
    M.redis_cmds = single(cc_metrics_counter(r, "concert_redis_commands_total", "Redis commands sent.", 0, NULL));
    M.redis_errors = single(cc_metrics_counter(r, "concert_redis_errors_total", "Redis commands that failed without a reply (disconnects, timeouts).", 0, NULL));
    M.redis_timeouts = single(cc_metrics_counter(r, "concert_redis_timeouts_total", "Redis commands that timed out (--redis-timeout-ms) and dropped their connection.", 0, NULL));
    M.redis_reconnects = single(cc_metrics_counter(r, "concert_redis_reconnects_total", "Redis reconnect attempts.", 0, NULL));
    const char *lk[] = {"kind"};
    cc_metric *redir = cc_metrics_counter(r, "concert_redis_cluster_redirects_total", "Redis Cluster replies the pool handled by itself: moved (MOVED, map updated), ask (ASK), tryagain (TRYAGAIN/CLUSTERDOWN, retried with backoff).", 1, lk);
    M.redir_moved = cc_metric_with(redir, (const char *[]){"moved"});
    M.redir_ask = cc_metric_with(redir, (const char *[]){"ask"});
    M.redir_retry = cc_metric_with(redir, (const char *[]){"tryagain"});
    M.noscript = single(cc_metrics_counter(r, "concert_redis_noscript_resends_total", "Script calls answered NOSCRIPT (flushed cache, new primary): scripts reloaded and the call resent.", 0, NULL));
    const char *ln[] = {"node"};
    M.redis_used = cc_metrics_gauge(r, "concert_redis_used_memory_bytes", "Redis used_memory of each primary (INFO memory, refreshed every 5 s).", 1, ln);
    M.redis_max = cc_metrics_gauge(r, "concert_redis_maxmemory_bytes", "Redis maxmemory of each primary (0: no limit; INFO memory, refreshed every 5 s).", 1, ln);
    if (app->kafka) {
        M.kafka_up = single(cc_metrics_gauge(r, "concert_kafka_up", "1 while the Kafka producer reaches a broker (payments).", 0, NULL));
        cc_series_set(M.kafka_up, 1);
        M.kafka_pending = single(cc_metrics_gauge(r, "concert_kafka_pending_messages", "Payment requests queued in the producer and not yet acknowledged.", 0, NULL));
    }
    M.watch_streams = single(cc_metrics_gauge(r, "concert_watch_streams", "WatchQueueStatus and WatchQueueStatuses streams held open (dead clients' are dropped by --keepalive-time-ms).", 0, NULL));
    M.watched_tokens = single(cc_metrics_gauge(r, "concert_watched_tokens", "Tokens watched: one per WatchQueueStatus stream, one per token of a WatchQueueStatuses stream.", 0, NULL));
    M.concerts = single(cc_metrics_gauge(r, "concert_concerts_known", "Concerts this server ticks (admission, watchers, hold sweep).", 0, NULL));
    cc_metrics_on_collect(r, collect, app);

    char err[256];
    int port = 0;
    if (cc_metrics_serve(r, app->loop, hostport, &port, err, sizeof err) < 0) {
        fprintf(stderr, "concert-server: --metrics: %s\n", err);
        cc_metrics_close(r);
        M.reg = NULL;
        return -1;
    }
    uv_timer_init(app->loop, &M.info_timer);
    M.info_timer_live = 1;
    uv_timer_start(&M.info_timer, on_info_timer, 0, 250);
    return 0;
}

static void on_timer_closed(uv_handle_t *h) {}

void srv_metrics_stop(srv_app *app) {
    if (M.info_timer_live) {
        M.info_timer_live = 0;
        uv_close((uv_handle_t *)&M.info_timer, on_timer_closed);
    }
    if (M.reg) cc_metrics_close(M.reg);
    M.reg = NULL;
    free(M.methods);
    M.methods = NULL;
}
