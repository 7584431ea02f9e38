/* srv_run: start-up and orderly shutdown of concert-server. SIGTERM/SIGINT: health
 * turns NOT_SERVING, watch streams end with UNAVAILABLE, in-flight unary calls finish
 * (cancelled after the grace period), then Redis closes and the process exits 0. */
#include "srv_run.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cc_kafka.h"
#include "cc_log.h"
#include "srv_tls.h"

static uv_signal_t sig_term, sig_int;
static int exit_code;

static void on_redis_state(int up, void *payload) { srv_health_changed(payload); }

static void on_kafka_state(int up, void *payload) { srv_metrics_kafka_state(payload, up); }

static void on_topics(const char *err, void *payload) {
    srv_app *app = payload;
    if (err) CC_WARN("kafka_topics_unchecked", "brokers=%s reason=\"%s\"", app->cfg.kafka, err);
    else CC_DEBUG("kafka_topics_checked", "brokers=%s", app->cfg.kafka);
}

static void on_sig_closed(uv_handle_t *h) {}

static void on_rpc_done(void *payload) {
    srv_app *app = payload;
    if (app->kafka) cc_kafka_producer_close(app->kafka, 2000);
    cc_redis_close(app->redis);
    uv_close((uv_handle_t *)&sig_term, on_sig_closed);
    uv_close((uv_handle_t *)&sig_int, on_sig_closed);
    CC_INFO("stopped", NULL);
}

static void on_signal(uv_signal_t *h, int signum) {
    srv_app *app = h->data;
    if (app->shutting_down) return;
    CC_INFO("shutting_down", "signal=%d grace_ms=%lld", signum, (long long)app->cfg.shutdown_grace_ms);
    app->shutting_down = 1;
    srv_health_changed(app);
    srv_queue_shutdown(app);
    srv_booking_shutdown(app);
    srv_payment_shutdown(app);
    srv_metrics_stop(app);
    srv_rpc_shutdown(app->rpc, (uint64_t)app->cfg.shutdown_grace_ms, on_rpc_done, app);
}

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
    char err[256];
    if (cc_redis_create(&app->redis, app->loop, &rc, err, sizeof err) < 0) {
        fprintf(stderr, "concert-server: %s\n", err);
        return 2;
    }
    cc_redis_set_state_cb(app->redis, on_redis_state, app);
    srv_health_init(app);
    srv_queue_init(app);
    srv_booking_init(app);
    srv_wallet_init(app);
    srv_admin_init(app);
    srv_payment_init(app);
    if (cfg->kafka && *cfg->kafka) {
        /* Topics checked in the background: start-up never waits for Kafka (the
         * producer and the results feed reconnect by themselves). */
        cc_kafka_ensure_topics_async(app->loop, cfg->kafka, 12, -1, 10000, on_topics, app);
        cc_kafka_producer_config kc = {.brokers = cfg->kafka, .message_timeout_ms = (int)cfg->kafka_timeout_ms,
                                       .client_id = "concert-server",
                                       .linger_ms = cfg->kafka_linger_ms > 0 ? (int)cfg->kafka_linger_ms : -1};
        if (cc_kafka_producer_create(&app->kafka, app->loop, &kc, err, sizeof err) < 0) {
            fprintf(stderr, "concert-server: kafka: %s\n", err);
            return 2;
        }
        cc_kafka_producer_set_state_cb(app->kafka, on_kafka_state, app);
        if (srv_payment_start_feed(app, err, sizeof err) < 0) {
            fprintf(stderr, "concert-server: kafka: %s\n", err);
            return 2;
        }
    }
    cc_redis_set_scripts(app->redis, srv_scripts, srv_n_scripts);

    grpc_init();
    const char *tls_mode;
    grpc_server_credentials *creds =
        srv_tls_credentials(cfg->tls_cert, cfg->tls_key, cfg->tls_client_ca, &tls_mode, err, sizeof err);
    if (!creds) {
        fprintf(stderr, "concert-server: %s\n", err);
        return 2;
    }
    srv_rpc_config sc = {.listen = cfg->listen, .requests_per_method = (int)cfg->requests_per_method, .creds = creds};
    if (cfg->metrics && *cfg->metrics) {
        sc.on_call_start = srv_metrics_call_start;
        sc.on_call_end = srv_metrics_call_end;
    }
    int port = 0;
    if (srv_rpc_start(&app->rpc, app->loop, &sc, srv_methods, srv_n_methods, app, &port) < 0) {
        fprintf(stderr, "concert-server: cannot listen on %s\n", cfg->listen);
        return 1;
    }
    CC_INFO("listening", "addr=%s port=%d redis=%s methods=%d tls=%s", cfg->listen, port, cfg->redis_url,
            srv_n_methods, tls_mode);

    if (cfg->metrics && *cfg->metrics && srv_metrics_start(app, cfg->metrics) < 0) return 1;

    uv_signal_init(app->loop, &sig_term);
    uv_signal_init(app->loop, &sig_int);
    sig_term.data = sig_int.data = app;
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);

    uv_run(app->loop, UV_RUN_DEFAULT);
    uv_loop_close(app->loop);
    grpc_shutdown();
    srv_queue_free(app);
    free(app);
    return exit_code;
}
