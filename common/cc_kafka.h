/* cc_kafka: librdkafka glue shared by concert-server and payment-consumer.
 *
 * - Topic names and the topic set the services need, created if missing (admin API),
 *   each with retention and segment limits; blocking (start-up of a tool) or on a
 *   loop (concert-server: start-up never waits for Kafka).
 * - A producer attached to a libuv loop: idempotent (enable.idempotence=true,
 *   acks=all), batching tuned for this workload (linger.ms, batch.size); its delivery
 *   reports arrive on the loop.
 * - A consumer attached to the same kind of loop: its messages, rebalances, commit
 *   results and errors arrive on the loop, with or without a consumer group.
 * Both signal the loop the same way: the client's queue writes a byte to a pipe when
 * it turns non-empty (rd_kafka_queue_io_event_enable), a uv_poll on the pipe serves
 * the queue until it is empty. No polling thread, no timer polling.
 *
 * Threading: every function must be called on the loop's thread (except
 * cc_kafka_ensure_topics and cc_kafka_log_cb); callbacks run there too. */
#ifndef CC_KAFKA_H
#define CC_KAFKA_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include <librdkafka/rdkafka.h>

/** librdkafka log callback for every client of the project (rd_kafka_conf_set_log_cb):
 * one logfmt line per message through cc_log, at most at warn level (errors that
 * matter also reach the clients' error callbacks). Safe from librdkafka's threads. */
void cc_kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf);

#define CC_TOPIC_PAYMENT_REQUESTS "concert.payment-requests"
#define CC_TOPIC_PAYMENT_RESULTS "concert.payment-results"
#define CC_TOPIC_RESERVATION_EVENTS "concert.reservation-events"

/* ---- topics ---- */

/** Creates the three topics if they do not exist: payment requests with
 * `request_partitions` partitions (at least 12), the others with 6; replication
 * factor `rf` (-1: the broker default); retention 7 days or 1 GiB per partition,
 * 64 MiB segments (docs/DATA.md). Blocking, bounded by timeout_ms.
 * Returns 0 (also when they already exist) or -1 with a reason in err. */
int cc_kafka_ensure_topics(const char *brokers, int request_partitions, int rf, int timeout_ms, char *err,
                           size_t errlen);

/** Called on the loop with NULL (topics exist) or the reason they could not be checked. */
typedef void (*cc_kafka_topics_cb)(const char *err, void *payload);

typedef struct cc_kafka_topics_req cc_kafka_topics_req;

/** cc_kafka_ensure_topics without blocking the loop: the admin request and its answer
 * go through the loop; `cb` is called exactly once (also on failure to start), unless
 * the request is cancelled first. The admin client is destroyed off the loop
 * (uv_queue_work) afterwards. Returns the pending request, or NULL when `cb` has
 * already run (it could not start). The request frees itself after `cb`. */
cc_kafka_topics_req *cc_kafka_ensure_topics_async(uv_loop_t *loop, const char *brokers, int request_partitions,
                                                  int rf, int timeout_ms, cc_kafka_topics_cb cb, void *payload);

/** Drops a pending request (shutdown): `cb` will not be called, and the loop is not
 * kept waiting for the broker's answer. Only before `cb` has run. */
void cc_kafka_topics_cancel(cc_kafka_topics_req *req);

/* ---- producer ---- */

typedef struct cc_kafka_producer cc_kafka_producer;

typedef struct {
    const char *brokers;        /* host:port[,host:port] */
    int message_timeout_ms;     /* delivery.timeout.ms: how long librdkafka retries (default 10000) */
    const char *client_id;      /* default "concert" */
    int linger_ms;              /* linger.ms: how long a batch waits for more messages (0: the
                                   default, 5; -1: none) */
    int batch_bytes;            /* batch.size (default 262144; 0 = the default) */
} cc_kafka_producer_config;

/** Delivery report: err is NULL when the message is durable (acked by all in-sync
 * replicas), else a reason ("Local: Message timed out", ...). */
typedef void (*cc_kafka_delivery_cb)(const char *err, void *payload);

/** Called on the loop when the producer's view of the cluster changes: up=1 after a
 * successful delivery or broker connection, up=0 on "all brokers down". */
typedef void (*cc_kafka_state_cb)(int up, void *payload);

/** Creates the producer on `loop`. Returns 0 or -1 with a reason in err. */
int cc_kafka_producer_create(cc_kafka_producer **out, uv_loop_t *loop, const cc_kafka_producer_config *cfg,
                             char *err, size_t errlen);

void cc_kafka_producer_set_state_cb(cc_kafka_producer *p, cc_kafka_state_cb cb, void *payload);

/** Queues a message. Returns 0 (cb will be called exactly once, on the loop) or -1
 * when it cannot even be queued (cb not called). key/value are copied. */
int cc_kafka_produce(cc_kafka_producer *p, const char *topic, const void *key, size_t keylen, const void *value,
                     size_t len, cc_kafka_delivery_cb cb, void *payload);

/** Messages queued but not yet reported. */
int cc_kafka_producer_pending(const cc_kafka_producer *p);

/** 1 when the producer last saw the cluster up (0 down, -1 not known yet). */
int cc_kafka_producer_up(const cc_kafka_producer *p);

/** Flushes for at most timeout_ms (blocking; for shutdown), fails what is left with
 * "closing", stops watching the fd and frees the producer once its handle closed. */
void cc_kafka_producer_close(cc_kafka_producer *p, int timeout_ms);

/* ---- consumer ---- */

typedef struct cc_kafka_consumer cc_kafka_consumer;

typedef struct {
    const char *brokers;
    const char *group;          /* consumer group (subscribe), or NULL: no group, the
                                   owner assigns partitions itself (rd_kafka_assign) */
    const char *client_id;      /* default "concert-consumer" */
    /* Extra librdkafka settings, name/value pairs, NULL-terminated (may be NULL):
     * fetch tuning, session timeout, assignment strategy... Applied after the
     * defaults (enable.auto.commit=false, enable.auto.offset.store=false). */
    const char *const *settings;
} cc_kafka_consumer_config;

typedef struct {
    /* A fetched message; the callee owns it (rd_kafka_message_destroy). Required. */
    void (*message)(rd_kafka_message_t *m, void *payload);
    /* A consume error (m->err set, e.g. a partition error) or a client error from
     * librdkafka's error callback: code and reason. May be NULL. */
    void (*error)(rd_kafka_resp_err_t err, const char *reason, void *payload);
    /* Group rebalance (group consumers only): the callee must (incrementally)
     * assign or unassign, as librdkafka's rebalance_cb. May be NULL (default handling). */
    void (*rebalance)(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                      void *payload);
    /* Result of an asynchronous commit (cc_kafka_consumer_commit). May be NULL. */
    void (*committed)(rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *offsets, void *payload);
} cc_kafka_consumer_ops;

/** Creates the consumer on `loop` (subscribed to `topics[0..n)` when cfg->group is
 * set). `ops` must outlive it. Returns 0 or -1 with a reason in err. */
int cc_kafka_consumer_create(cc_kafka_consumer **out, uv_loop_t *loop, const cc_kafka_consumer_config *cfg,
                             const char *const *topics, int n_topics, const cc_kafka_consumer_ops *ops,
                             void *payload, char *err, size_t errlen);

/** The librdkafka handle (for assign, seek, watermarks...). Owned by the consumer. */
rd_kafka_t *cc_kafka_consumer_rk(cc_kafka_consumer *c);

/** Flow control: while paused, messages stay in librdkafka's queue (which stops
 * fetching once full). Unpausing serves what is queued on the next loop turn. */
void cc_kafka_consumer_pause(cc_kafka_consumer *c, int paused);

/** Commits `offsets` asynchronously; the result comes to ops->committed on the loop.
 * Returns 0, or -1 when the commit could not even be requested. */
int cc_kafka_consumer_commit(cc_kafka_consumer *c, const rd_kafka_topic_partition_list_t *offsets);

/** Leaves the group (its revocation reaches ops->rebalance on the loop), then
 * destroys the client off the loop; `done` (may be NULL) runs on the loop once every
 * handle is closed and the consumer freed. No callback runs after `done`. */
void cc_kafka_consumer_close(cc_kafka_consumer *c, void (*done)(void *payload), void *payload);

#endif
