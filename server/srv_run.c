/* srv_run: start-up and orderly shutdown of concert-server. SIGTERM/SIGINT: health
 * turns NOT_SERVING, watch streams end with UNAVAILABLE, in-flight unary calls finish
 * (cancelled after the grace period), then Redis closes and the process exits 0. A
 * fatal error (an address that cannot be bound, a method that can no longer take
 * calls) takes the same path with a non-zero status (srv_run.h); every failure path
 * frees what it made, so that the status is the one given even under LeakSanitizer. */
#include "srv_run.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cc_kafka.h"
#include "cc_log.h"
#include "srv_adapt.h"
#include "srv_receipt.h"
#include "srv_errors.h"
#include "srv_tls.h"
#include "srv_valid.h"

static uv_signal_t sig_term, sig_int;

static void on_redis_state(int up, void *payload) { srv_health_changed(payload); }

static void on_kafka_state(int up, void *payload) { srv_metrics_kafka_state(payload, up); }

static void on_topics(const char *err, void *payload) {
    srv_app *app = payload;
    app->topics_req = NULL;
    if (err) CC_WARN("kafka_topics_unchecked", "brokers=%s reason=\"%s\"", app->cfg.kafka, err);
    else CC_DEBUG("kafka_topics_checked", "brokers=%s", app->cfg.kafka);
}

static void on_sig_closed(uv_handle_t *h) {}

static void on_rpc_done(void *payload) {
    srv_app *app = payload;
    app->rpc = NULL;
    /* A broker that never answered must not hold the exit for the check's timeout. */
    if (app->topics_req) cc_kafka_topics_cancel(app->topics_req);
    app->topics_req = NULL;
    if (app->kafka) cc_kafka_producer_close(app->kafka, 2000);
    cc_redis_close(app->redis);
    uv_close((uv_handle_t *)&sig_term, on_sig_closed);
    uv_close((uv_handle_t *)&sig_int, on_sig_closed);
    CC_INFO("stopped", "exit_code=%d", app->exit_code);
}

void srv_stop(srv_app *app, int code, const char *reason) {
    if (app->shutting_down) return;
    app->exit_code = code;
    if (code == SRV_EXIT_OK) CC_INFO("shutting_down", "reason=\"%s\" grace_ms=%lld", reason, (long long)app->cfg.shutdown_grace_ms);
    else CC_ERROR("shutting_down", "reason=\"%s\" exit_code=%d", reason, code);
    app->shutting_down = 1;
    srv_health_changed(app);
    srv_queue_shutdown(app);
    srv_booking_shutdown(app);
    srv_payment_shutdown(app);
    srv_guard_shutdown(app);
    srv_metrics_stop(app);
    if (app->rpc) srv_rpc_shutdown(app->rpc, (uint64_t)app->cfg.shutdown_grace_ms, on_rpc_done, app);
    else on_rpc_done(app);
}

static void on_signal(uv_signal_t *h, int signum) {
    char why[32];
    snprintf(why, sizeof why, "signal %d", signum);
    srv_stop(h->data, SRV_EXIT_OK, why);
}

static void on_rpc_fatal(const char *reason, void *payload) { srv_stop(payload, SRV_EXIT_FATAL, reason); }

int srv_run(const srv_config *cfg) {
    signal(SIGPIPE, SIG_IGN);
    srv_app *app = calloc(1, sizeof *app);
    if (!app) abort();
    app->cfg = *cfg;
    app->loop = uv_default_loop();

    cc_redis_config rc = {
        .url = cfg->redis_url,
        .connections = (int)cfg->redis_connections,
        .command_timeout_ms = (int)cfg->redis_timeout_ms,
    };
    char err[400];
    if (cc_redis_create(&app->redis, app->loop, &rc, err, sizeof err) < 0) {
        fprintf(stderr, "concert-server: %s\n", err);
        free(app);
        return SRV_EXIT_USAGE;
    }
    uv_signal_init(app->loop, &sig_term);
    uv_signal_init(app->loop, &sig_int);
    sig_term.data = sig_int.data = app;
    cc_redis_set_state_cb(app->redis, on_redis_state, app);
    srv_health_init(app);
    srv_queue_init(app);
    srv_booking_init(app);
    srv_wallet_init(app);
    srv_admin_init(app);
    srv_payment_init(app);
    if (srv_guard_init(app, err, sizeof err) < 0) {
        fprintf(stderr, "concert-server: %s\n", err);
        srv_stop(app, SRV_EXIT_USAGE, err);
    }
    if (!app->shutting_down && srv_rpc_check_grpc_args(cfg->grpc_args, err, sizeof err) < 0) {
        fprintf(stderr, "concert-server: %s\n", err);
        srv_stop(app, SRV_EXIT_USAGE, err);
    }
    if (!app->shutting_down && srv_receipts_init(app, err, sizeof err) < 0) {
        fprintf(stderr, "concert-server: %s\n", err);
        srv_stop(app, SRV_EXIT_USAGE, err);
    }
    if (!app->shutting_down && cfg->kafka && *cfg->kafka) {
        /* Topics checked in the background: start-up never waits for Kafka (the
         * producer and the results feed reconnect by themselves). */
        app->topics_req = cc_kafka_ensure_topics_async(app->loop, cfg->kafka, 12, -1, 10000, on_topics, app);
        cc_kafka_producer_config kc = {.brokers = cfg->kafka, .message_timeout_ms = (int)cfg->kafka_timeout_ms,
                                       .client_id = "concert-server",
                                       .linger_ms = cfg->kafka_linger_ms > 0 ? (int)cfg->kafka_linger_ms : -1};
        if (cc_kafka_producer_create(&app->kafka, app->loop, &kc, err, sizeof err) < 0) {
            fprintf(stderr, "concert-server: kafka: %s\n", err);
            srv_stop(app, SRV_EXIT_USAGE, "kafka producer");
        } else {
            cc_kafka_producer_set_state_cb(app->kafka, on_kafka_state, app);
            if (srv_payment_start_feed(app, err, sizeof err) < 0) {
                fprintf(stderr, "concert-server: kafka: %s\n", err);
                srv_stop(app, SRV_EXIT_USAGE, "kafka results feed");
            }
        }
    }
    cc_redis_set_scripts(app->redis, srv_scripts, srv_n_scripts);

    grpc_init();
    const char *tls_mode = "plaintext";
    grpc_server_credentials *creds = NULL;
    if (!app->shutting_down) {
        creds = srv_tls_credentials(cfg->tls_cert, cfg->tls_key, cfg->tls_client_ca, &tls_mode, err, sizeof err);
        if (!creds) {
            fprintf(stderr, "concert-server: %s\n", err);
            srv_stop(app, SRV_EXIT_USAGE, err);
        }
    }
    if (!app->shutting_down) {
        srv_rpc_config sc = {.listen = cfg->listen,
                             .requests_per_method = (int)cfg->requests_per_method,
                             .creds = creds, /* taken by srv_rpc_start, also when it fails */
                             .reuse_port = cfg->reuse_port,
                             .grpc_args = cfg->grpc_args,
                             .keepalive_time_ms = cfg->keepalive_time_ms > 0 ? (int)cfg->keepalive_time_ms : -1,
                             .keepalive_timeout_ms = (int)cfg->keepalive_timeout_ms,
                             .decode = srv_decode_request,
                             .status_details = srv_err_details,
                             .on_fatal = on_rpc_fatal,
                             .fatal_payload = app};
        if (cfg->metrics && *cfg->metrics) sc.on_call_start = srv_metrics_call_start;
        sc.on_call_end = srv_adapt_call_end; /* booking errors for ADAPTIVE admission, then metrics */
        int port = 0;
        if (srv_rpc_start(&app->rpc, app->loop, &sc, srv_methods, srv_n_methods, app, &port) < 0) {
            app->rpc = NULL;
            srv_stop(app, SRV_EXIT_LISTEN, "cannot listen on the gRPC address");
        } else {
            CC_INFO("listening", "addr=%s port=%d redis=%s methods=%d tls=%s reuse_port=%d", cfg->listen, port,
                    cfg->redis_url, srv_n_methods, tls_mode, cfg->reuse_port);
        }
    }
    if (!app->shutting_down && cfg->metrics && *cfg->metrics && srv_metrics_start(app, cfg->metrics) < 0) {
        CC_ERROR("metrics_listen_failed", "addr=%s", cfg->metrics); /* the reason: srv_metrics' line above */
        srv_stop(app, SRV_EXIT_LISTEN, "cannot serve metrics");
    }
    if (!app->shutting_down) {
        uv_signal_start(&sig_term, on_signal, SIGTERM);
        uv_signal_start(&sig_int, on_signal, SIGINT);
    }

    if (app->rpc) srv_rpc_run(app->rpc); /* until the gRPC server has shut down */
    uv_run(app->loop, UV_RUN_DEFAULT);
    uv_loop_close(app->loop);
    grpc_shutdown();
    srv_queue_free(app);
    srv_booking_free(app);
    srv_guard_free(app);
    int code = app->exit_code;
    free(app);
    return code;
}
