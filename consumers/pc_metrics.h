/* pc_metrics: payment-consumer's Prometheus metrics (--metrics HOST:PORT, GET
 * /metrics), on the shared registry and HTTP endpoint of common/cc_metrics. Family
 * names are the team's (docs/DATA.md, "Metrics"):
 *   payment_consumer_lag{partition}            messages not yet committed (gauge)
 *   payment_consumer_batch_size                payments per settled batch (histogram)
 *   payment_consumer_settle_seconds            message timestamp -> settled (histogram)
 *   payment_consumer_payments_total{outcome}   completed, failed, skipped
 *   payment_consumer_redis_errors_total, payment_consumer_kafka_errors_total
 *   payment_consumer_redis_up, payment_consumer_kafka_up
 *   payment_consumer_under_replicated_partitions  (topic metadata: ISR < replicas)
 *   plus process_* and payment_consumer_build_info from cc_metrics.
 * Owns its registry. Every function accepts NULL (no-op) and must be called on the
 * loop's thread; updates never allocate once a series exists. */
#ifndef PC_METRICS_H
#define PC_METRICS_H

#include <stdint.h>
#include <uv.h>

typedef struct pc_metrics pc_metrics;

/** Creates the registry; serves it on `hostport` when not NULL/empty (port 0 picks
 * one: the `metrics_listening` log line names it). `collect(payload)` runs before
 * each scrape. Returns 0, or -1 with a reason in err. */
int pc_metrics_create(pc_metrics **out, uv_loop_t *loop, const char *hostport, void (*collect)(void *payload),
                      void *payload, char *err, size_t errlen);
/** "host:port" served, or "-". */
const char *pc_metrics_address(const pc_metrics *m);

/** One settled payment: outcome "completed", "failed" or "skipped"; settle_seconds
 * from the message's timestamp (< 0: unknown, not observed). */
void pc_metrics_payment(pc_metrics *m, const char *outcome, double settle_seconds);
void pc_metrics_batch(pc_metrics *m, int size);
void pc_metrics_lag(pc_metrics *m, int partition, int64_t lag);
/** The partition is no longer ours: its lag series goes away. */
void pc_metrics_lag_clear(pc_metrics *m, int partition);
void pc_metrics_redis_up(pc_metrics *m, int up);
void pc_metrics_kafka_up(pc_metrics *m, int up);
/** The error totals so far (the registry's counters catch up to them). */
void pc_metrics_counters(pc_metrics *m, uint64_t redis_errors, uint64_t kafka_errors);
void pc_metrics_under_replicated(pc_metrics *m, int n);

/** Stops serving and frees the registry once its handles closed. */
void pc_metrics_close(pc_metrics *m);

#endif
