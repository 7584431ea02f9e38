/* payment-consumer: settles payments from Kafka in Redis. Parses configuration and
 * hands over to pc_run (consumers/pc_consumer.c); nothing else lives here. */
#include <stdio.h>

#include "cc_log.h"
#include "cc_opt.h"
#include "pc_consumer.h"

static const char usage[] =
    "Usage: payment-consumer --redis URL --kafka BROKERS [--group NAME] [options]\n"
    "\n"
    "Reads PaymentRequested from concert.payment-requests as a member of a Kafka consumer\n"
    "group, settles each payment in Redis (debit once by payment id, seats SOLD, or FAILED\n"
    "with any debit refunded; a payment Pay abandoned fails without a debit), publishes\n"
    "PaymentResult to concert.payment-results and a PAID ReservationEvent to\n"
    "concert.reservation-events, and only then commits the offsets. Run 1..N replicas with\n"
    "the same --group; each takes a share of the partitions. Redelivery is harmless: every\n"
    "step is idempotent by payment id.\n"
    "Redis URLs: redis://host:port[/db] or sentinel://host:port[,host:port...]/name.\n"
    "Logs one logfmt line per event to stderr, the consumer lag every --lag-interval-ms;\n"
    "--metrics serves Prometheus metrics (lag per partition, batch sizes, settle latency).\n"
    "SIGTERM/SIGINT: settles the batches in hand, commits, leaves the group, exits 0.\n";

int main(int argc, char **argv) {
    const char *redis = "redis://127.0.0.1:6379", *kafka = NULL, *group = "payment-consumer", *level = "info",
               *metrics = NULL;
    int64_t batch = 500, inflight = 4, conns = 2, wait_replicas = 0, wait_timeout = 1000, partitions = 12,
            session = 10000, lag_interval = 10000, redis_timeout = 2000, commit_interval = 100, fetch_wait = 500,
            fetch_min = 1, linger = 5, max_rate = 0;
    int create_topics = 0;
    const cc_opt opts[] = {
        {"redis", "CONCERT_REDIS", CC_OPT_STR, &redis, "URL", "Redis URL (default redis://127.0.0.1:6379)", 0, 0},
        {"kafka", "CONCERT_KAFKA", CC_OPT_STR, &kafka, "BROKERS", "Kafka bootstrap servers host:port[,...] (required)", 0, 0},
        {"group", "CONCERT_GROUP", CC_OPT_STR, &group, "NAME", "Kafka consumer group (default payment-consumer)", 0, 0},
        {"metrics", "CONCERT_METRICS", CC_OPT_STR, &metrics, "HOST:PORT", "serve Prometheus metrics (GET /metrics) here; port 0 picks one (the metrics_listening log line names it)", 0, 0},
        {"batch", "CONCERT_BATCH", CC_OPT_INT, &batch, "N", "most payments in one batch (default 500)", 1, 100000},
        {"max-inflight", "CONCERT_MAX_INFLIGHT", CC_OPT_INT, &inflight, "N", "batches settling at once; one user's payments still apply in Kafka order (default 4)", 1, 64},
        {"redis-connections", "CONCERT_REDIS_CONNECTIONS", CC_OPT_INT, &conns, "N", "pipelined Redis connections: commands share the first, the others are hot spares (default 2)", 1, 64},
        {"redis-wait-replicas", "CONCERT_REDIS_WAIT_REPLICAS", CC_OPT_INT, &wait_replicas, "N", "before committing a batch, WAIT until N Redis replicas have it; fewer = retry the batch (default 0: no WAIT)", 0, 16},
        {"redis-wait-timeout-ms", "CONCERT_REDIS_WAIT_TIMEOUT_MS", CC_OPT_INT, &wait_timeout, "MS", "timeout of that WAIT (default 1000)", 1, 60000},
        {"redis-timeout-ms", "CONCERT_REDIS_TIMEOUT_MS", CC_OPT_INT, &redis_timeout, "MS", "Redis command timeout; a late reply drops the connection and the batch is retried (default 2000)", 10, 60000},
        {"create-topics", "CONCERT_CREATE_TOPICS", CC_OPT_FLAG, &create_topics, NULL, "create the Kafka topics first if they are missing", 0, 0},
        {"partitions", "CONCERT_PARTITIONS", CC_OPT_INT, &partitions, "N", "partitions of concert.payment-requests when --create-topics creates it (default 12, at least 12)", 12, 10000},
        {"session-timeout-ms", "CONCERT_SESSION_TIMEOUT_MS", CC_OPT_INT, &session, "MS", "Kafka group session timeout: how soon a dead replica's partitions move (default 10000)", 1000, 300000},
        {"commit-interval-ms", "CONCERT_COMMIT_INTERVAL_MS", CC_OPT_INT, &commit_interval, "MS", "settled offsets are committed (asynchronously) at most this often (default 100)", 0, 60000},
        {"fetch-wait-ms", "CONCERT_FETCH_WAIT_MS", CC_OPT_INT, &fetch_wait, "MS", "fetch.wait.max.ms: longest a fetch waits at the broker for fetch.min.bytes (default 500; with fetch.min.bytes 1 a message is answered at once)", 1, 10000},
        {"fetch-min-bytes", "CONCERT_FETCH_MIN_BYTES", CC_OPT_INT, &fetch_min, "N", "fetch.min.bytes (default 1: answer as soon as anything is there)", 1, 100000000},
        {"linger-ms", "CONCERT_LINGER_MS", CC_OPT_INT, &linger, "MS", "linger.ms of the results producer (default 5)", 0, 1000},
        {"max-rate", "CONCERT_MAX_RATE", CC_OPT_INT, &max_rate, "N", "settle at most N payments per second (default 0: no limit; protects Redis, used by the lag drill)", 0, 10000000},
        {"lag-interval-ms", "CONCERT_LAG_INTERVAL_MS", CC_OPT_INT, &lag_interval, "MS", "how often the consumer lag and throughput are logged (default 10000)", 100, 3600000},
        {"log-level", "CONCERT_LOG_LEVEL", CC_OPT_STR, &level, "LEVEL", "debug, info, warn or error (default info; debug logs every batch)", 0, 0},
        {0},
    };
    if (cc_opt_parse(opts, argc, argv, usage, NULL, 0, NULL) < 0) return 2;
    int lvl = cc_log_level_parse(level);
    if (lvl < 0) {
        fprintf(stderr, "payment-consumer: --log-level: expected debug, info, warn or error\n");
        return 2;
    }
    if (!kafka || !*kafka) {
        fprintf(stderr, "payment-consumer: --kafka BROKERS is required (or CONCERT_KAFKA)\n");
        return 2;
    }
    cc_log_init("payment-consumer", (cc_log_level)lvl);
    pc_config cfg = {
        .redis_url = redis,
        .brokers = kafka,
        .group = group,
        .metrics = metrics,
        .batch = (int)batch,
        .max_inflight = (int)inflight,
        .redis_connections = (int)conns,
        .redis_wait_replicas = (int)wait_replicas,
        .redis_wait_timeout_ms = (int)wait_timeout,
        .redis_timeout_ms = (int)redis_timeout,
        .create_topics = create_topics,
        .partitions = (int)partitions,
        .session_timeout_ms = (int)session,
        .lag_interval_ms = (int)lag_interval,
        .commit_interval_ms = (int)commit_interval,
        .fetch_wait_ms = (int)fetch_wait,
        .fetch_min_bytes = (int)fetch_min,
        .linger_ms = (int)linger,
        .max_rate = (int)max_rate,
    };
    return pc_run(&cfg);
}
