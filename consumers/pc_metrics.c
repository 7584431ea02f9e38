/* pc_metrics: see pc_metrics.h. A thin, named layer over cc_metrics: the families are
 * declared once, series handles for the fixed label values are kept, and the lag
 * series are created per partition as partitions are assigned. Must not block or
 * call Redis/Kafka (pc_consumer feeds it). */
#include "pc_metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cc_metrics.h"

#ifndef CONCERT_VERSION
#define CONCERT_VERSION "dev"
#endif

struct pc_metrics {
    cc_metrics *reg;
    cc_metric *lag, *payments;
    cc_series *completed, *failed, *skipped;
    cc_series *batch, *settle, *redis_errors, *kafka_errors, *redis_up, *kafka_up, *under_replicated;
    uint64_t redis_errors_seen, kafka_errors_seen;
    void (*collect)(void *payload);
    void *payload;
    char addr[300];
};

static const double batch_bounds[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000};

static void on_collect(cc_metrics *reg, void *payload) {
    pc_metrics *m = payload;
    if (m->collect) m->collect(m->payload);
}

static cc_series *single(cc_metric *f) { return cc_metric_with(f, NULL); }

int pc_metrics_create(pc_metrics **out, uv_loop_t *loop, const char *hostport, void (*collect)(void *payload),
                      void *payload, char *err, size_t errlen) {
    pc_metrics *m = calloc(1, sizeof *m);
    if (!m) abort();
    m->collect = collect;
    m->payload = payload;
    snprintf(m->addr, sizeof m->addr, "-");
    cc_metrics *r = m->reg = cc_metrics_new("payment_consumer", CONCERT_VERSION);
    const char *part[] = {"partition"}, *outcome[] = {"outcome"};
    m->lag = cc_metrics_gauge(r, "payment_consumer_lag",
                              "Messages of a partition of concert.payment-requests not yet committed by this consumer "
                              "(log end offset minus committed offset).",
                              1, part);
    m->batch = single(cc_metrics_histogram(r, "payment_consumer_batch_size", "Payments per settled batch.", 0, NULL,
                                           batch_bounds, (int)(sizeof batch_bounds / sizeof batch_bounds[0])));
    m->settle = single(cc_metrics_histogram(
        r, "payment_consumer_settle_seconds",
        "From the request's Kafka timestamp to its batch settled (Redis effects applied, replicated when asked, "
        "results acknowledged by Kafka).",
        0, NULL, cc_metrics_latency_bounds, cc_metrics_n_latency_bounds));
    m->payments = cc_metrics_counter(r, "payment_consumer_payments_total",
                                     "Payment requests settled, by outcome (completed, failed, skipped).", 1, outcome);
    const char *c[] = {"completed"}, *f[] = {"failed"}, *s[] = {"skipped"};
    m->completed = cc_metric_with(m->payments, c);
    m->failed = cc_metric_with(m->payments, f);
    m->skipped = cc_metric_with(m->payments, s);
    m->redis_errors = single(cc_metrics_counter(r, "payment_consumer_redis_errors_total",
                                                "Redis steps that failed (error reply, timeout, no connection).", 0,
                                                NULL));
    m->kafka_errors = single(cc_metrics_counter(
        r, "payment_consumer_kafka_errors_total",
        "Kafka errors: client errors, failed commits, results not delivered.", 0, NULL));
    m->redis_up = single(cc_metrics_gauge(r, "payment_consumer_redis_up", "1 while a Redis connection is up.", 0, NULL));
    m->kafka_up = single(cc_metrics_gauge(r, "payment_consumer_kafka_up",
                                          "1 while the consumer or its producer reaches a broker.", 0, NULL));
    m->under_replicated = single(cc_metrics_gauge(
        r, "payment_consumer_under_replicated_partitions",
        "Partitions of the payment topics whose in-sync replicas are fewer than their replicas (topic metadata).", 0,
        NULL));
    cc_metrics_on_collect(r, on_collect, m);
    if (hostport && *hostport) {
        int port = 0;
        if (cc_metrics_serve(r, loop, hostport, &port, err, errlen) < 0) {
            cc_metrics_close(r);
            free(m);
            return -1;
        }
        snprintf(m->addr, sizeof m->addr, "%s (port %d)", hostport, port);
    }
    *out = m;
    return 0;
}

const char *pc_metrics_address(const pc_metrics *m) { return m ? m->addr : "-"; }

void pc_metrics_payment(pc_metrics *m, const char *outcome, double settle_seconds) {
    if (!m) return;
    cc_series_add(outcome[0] == 'c' ? m->completed : outcome[0] == 'f' ? m->failed : m->skipped, 1);
    if (settle_seconds >= 0 && outcome[0] != 's') cc_series_observe(m->settle, settle_seconds);
}

void pc_metrics_batch(pc_metrics *m, int size) {
    if (m) cc_series_observe(m->batch, size);
}

void pc_metrics_lag(pc_metrics *m, int partition, int64_t lag) {
    if (!m) return;
    char p[16];
    snprintf(p, sizeof p, "%d", partition);
    const char *v[] = {p};
    cc_series_set(cc_metric_with(m->lag, v), (double)lag);
}

void pc_metrics_lag_clear(pc_metrics *m, int partition) {
    /* cc_metrics drops series per family only: drop all, the next lag round brings
     * back the partitions still ours. */
    if (m) cc_metric_clear(m->lag);
    (void)partition;
}

void pc_metrics_redis_up(pc_metrics *m, int up) {
    if (m) cc_series_set(m->redis_up, up);
}

void pc_metrics_kafka_up(pc_metrics *m, int up) {
    if (m) cc_series_set(m->kafka_up, up);
}

void pc_metrics_counters(pc_metrics *m, uint64_t redis_errors, uint64_t kafka_errors) {
    if (!m) return;
    if (redis_errors > m->redis_errors_seen) cc_series_add(m->redis_errors, (double)(redis_errors - m->redis_errors_seen));
    if (kafka_errors > m->kafka_errors_seen) cc_series_add(m->kafka_errors, (double)(kafka_errors - m->kafka_errors_seen));
    m->redis_errors_seen = redis_errors;
    m->kafka_errors_seen = kafka_errors;
}

void pc_metrics_under_replicated(pc_metrics *m, int n) {
    if (m) cc_series_set(m->under_replicated, n);
}

void pc_metrics_close(pc_metrics *m) {
    if (!m) return;
    cc_metrics_close(m->reg);
    free(m);
}
