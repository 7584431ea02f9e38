/* pc_consumer: payment-consumer's logic. Reads PaymentRequested from
 * concert.payment-requests in a consumer group (cooperative-sticky, manual
 * commits), settles each payment in Redis with the payment scripts (status read,
 * pay_debit in the user's wallet slot, pay_commit in the concert's slot, pay_refund
 * for failures), publishes PaymentResult and, for completed payments, a PAID
 * ReservationEvent, and only then commits the batch's offsets. Every step is
 * idempotent by payment id, so a redelivered or re-processed batch changes nothing.
 *
 * Owns its Kafka consumer and producer and its Redis connection; single-threaded.
 * Must not commit an offset whose payment's Redis effects (and, with
 * --redis-wait-replicas, their replication) are not done. */
#ifndef PC_CONSUMER_H
#define PC_CONSUMER_H

#include <stdint.h>

typedef struct {
    const char *redis_url;     /* redis://host:port[/db] or sentinel://host:port[,...]/name */
    const char *brokers;       /* Kafka bootstrap servers */
    const char *group;         /* consumer group id, default "payment-consumer" */
    int batch;                 /* most messages per batch, default 500 */
    int redis_wait_replicas;   /* >0: WAIT for this many replicas before committing */
    int redis_wait_timeout_ms; /* WAIT's timeout, default 1000 */
    int redis_timeout_ms;      /* per Redis read/write, default 2000 */
    int create_topics;         /* create the topics first if missing */
    int partitions;            /* partitions of the requests topic when creating, default 12 */
    int session_timeout_ms;    /* Kafka group session timeout, default 10000 */
    int lag_interval_ms;       /* how often the lag is logged, default 10000 */
    int poll_timeout_ms;       /* longest wait for the first message of a batch, default 100 */
} pc_config;

/** Runs until SIGTERM or SIGINT (or pc_request_stop): finishes the batch in hand,
 * commits it, leaves the group. Returns the process exit status: 0 after a clean
 * stop, 1 when it cannot start (reason on stderr). Installs the signal handlers. */
int pc_run(const pc_config *cfg);

/** Asks pc_run to stop after the current batch. Async-signal-safe. */
void pc_request_stop(void);

/** Processing order inside a batch: round[i] = how many earlier messages of the
 * batch have the same user as message i. Payments of one round belong to distinct
 * users and are pipelined together; rounds run one after another, so one user's
 * payments are applied in Kafka order. Returns the number of rounds (0 for n == 0). */
int pc_rounds(const char *const *users, int n, int *round);

#endif
