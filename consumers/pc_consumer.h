/* pc_consumer: payment-consumer's logic, on one libuv loop (the runtime concert-server
 * uses: cc_redis for Redis, cc_kafka for Kafka, both signalling the loop).
 *
 * Reads PaymentRequested from concert.payment-requests in a consumer group
 * (cooperative-sticky, manual commits), settles each payment in Redis with the
 * payment domain's scripts (common/cc_pay: claim, debit once by payment id, commit:
 * seats SOLD or FAILED, refund of a failed payment's debit), waits for Redis replicas
 * when asked (WAIT), publishes PaymentResult and, for completed payments, a PAID
 * ReservationEvent, and commits the offsets (asynchronously) only once all of that is
 * done and Kafka has acknowledged the results. Every step is idempotent by payment id,
 * so a redelivered or re-processed batch changes nothing.
 *
 * Owns its loop, Redis pool, Kafka consumer and producer; single-threaded (librdkafka
 * has its own threads, which only signal the loop). Must not commit an offset whose
 * payment's effects (and, with --redis-wait-replicas, their replication) are not done,
 * nor apply one user's payments out of Kafka order. */
#ifndef PC_CONSUMER_H
#define PC_CONSUMER_H

#include <stdint.h>

typedef struct {
    const char *redis_url;     /* redis://host:port[/db] or sentinel://host:port[,...]/name */
    const char *brokers;       /* Kafka bootstrap servers */
    const char *group;         /* consumer group id, default "payment-consumer" */
    const char *metrics;       /* HOST:PORT for /metrics, or NULL */
    int batch;                 /* most messages per batch, default 500 */
    int max_inflight;          /* batches settling at once, default 4 */
    int redis_connections;     /* Redis pool size, default 2 */
    int redis_wait_replicas;   /* >0: WAIT for this many replicas before committing */
    int redis_wait_timeout_ms; /* WAIT's timeout, default 1000 */
    int redis_timeout_ms;      /* per Redis command, default 2000 */
    int create_topics;         /* create the topics first if missing */
    int partitions;            /* partitions of the requests topic when creating, default 12 */
    int session_timeout_ms;    /* Kafka group session timeout, default 10000 */
    int lag_interval_ms;       /* how often the lag is logged, default 10000 */
    int commit_interval_ms;    /* offsets committed at most this often, default 100 */
    int fetch_wait_ms;         /* fetch.wait.max.ms, default 500 */
    int fetch_min_bytes;       /* fetch.min.bytes, default 1 */
    int linger_ms;             /* results producer linger.ms, default 5 */
    int max_rate;              /* payments per second at most (0: no limit) */
} pc_config;

/** Runs until SIGTERM or SIGINT (or pc_request_stop): settles the batches in hand,
 * commits them, leaves the group. Returns the process exit status: 0 after a clean
 * stop, 1 when it cannot start or a fatal error ends it (reason on stderr). Installs
 * the signal handlers (on the loop). */
int pc_run(const pc_config *cfg);

/** Asks pc_run to stop (async-signal-safe; from any thread). */
void pc_request_stop(void);

#endif
