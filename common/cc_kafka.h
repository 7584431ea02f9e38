/* cc_kafka: librdkafka glue shared by concert-server and payment-consumer.
 *
 * - Topic names and the topic set the services need, created if missing (admin API).
 * - A producer attached to a libuv loop: idempotent (enable.idempotence=true,
 *   acks=all); its delivery reports arrive on the loop through the main queue's
 *   io-event fd watched by uv_poll (no polling thread, no timer polling).
 *
 * Threading: the producer functions must be called on the loop's thread; delivery
 * callbacks run there too. */
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

/** Creates the three topics if they do not exist: payment requests with
 * `request_partitions` partitions (at least 12), the others with 6; replication
 * factor `rf` (-1: the broker default). Blocking, bounded by timeout_ms.
 * Returns 0 (also when they already exist) or -1 with a reason in err. */
int cc_kafka_ensure_topics(const char *brokers, int request_partitions, int rf, int timeout_ms, char *err,
                           size_t errlen);

typedef struct cc_kafka_producer cc_kafka_producer;

typedef struct {
    const char *brokers;        /* host:port[,host:port] */
    int message_timeout_ms;     /* delivery.timeout.ms: how long librdkafka retries (default 10000) */
    const char *client_id;      /* default "concert" */
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

/** Flushes for at most timeout_ms (blocking; for shutdown), fails what is left with
 * "closing", stops watching the fd and frees the producer once its handle closed. */
void cc_kafka_producer_close(cc_kafka_producer *p, int timeout_ms);

#endif
