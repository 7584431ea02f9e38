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
    "with any debit refunded), publishes PaymentResult to concert.payment-results and a\n"
    "PAID ReservationEvent to concert.reservation-events, and only then commits the\n"
    "offsets. Run 1..N replicas with the same --group; each takes a share of the\n"
    "partitions. Redelivery is harmless: every step is idempotent by payment id.\n"
    "Redis URLs: redis://host:port[/db] or sentinel://host:port[,host:port...]/name.\n"
    "Logs one logfmt line per event to stderr, the consumer lag every --lag-interval-ms.\n"
    "SIGTERM/SIGINT: finishes the batch in hand, commits, leaves the group, exits 0.\n";

int main(int argc, char **argv) {
    const char *redis = "redis://127.0.0.1:6379", *kafka = NULL, *group = "payment-consumer", *level = "info";
    int64_t batch = 500, wait_replicas = 0, wait_timeout = 1000, partitions = 12, session = 10000,
            lag_interval = 10000, redis_timeout = 2000;
    int create_topics = 0;
    const cc_opt opts[] = {
        {"redis", "CONCERT_REDIS", CC_OPT_STR, &redis, "URL", "Redis URL (default redis://127.0.0.1:6379)", 0, 0},
        {"kafka", "CONCERT_KAFKA", CC_OPT_STR, &kafka, "BROKERS", "Kafka bootstrap servers host:port[,...] (required)", 0, 0},
        {"group", "CONCERT_GROUP", CC_OPT_STR, &group, "NAME", "Kafka consumer group (default payment-consumer)", 0, 0},
        {"batch", "CONCERT_BATCH", CC_OPT_INT, &batch, "N", "most payments settled per batch: one Redis pipeline per step, one commit (default 500)", 1, 100000},
        {"redis-wait-replicas", "CONCERT_REDIS_WAIT_REPLICAS", CC_OPT_INT, &wait_replicas, "N", "before committing a batch, WAIT until N Redis replicas have it; fewer = retry the batch (default 0: no WAIT)", 0, 16},
        {"redis-wait-timeout-ms", "CONCERT_REDIS_WAIT_TIMEOUT_MS", CC_OPT_INT, &wait_timeout, "MS", "timeout of that WAIT (default 1000)", 1, 60000},
        {"redis-timeout-ms", "CONCERT_REDIS_TIMEOUT_MS", CC_OPT_INT, &redis_timeout, "MS", "Redis connect/read/write timeout; a late reply drops the connection and the batch is retried (default 2000)", 10, 60000},
        {"create-topics", "CONCERT_CREATE_TOPICS", CC_OPT_FLAG, &create_topics, NULL, "create the Kafka topics first if they are missing", 0, 0},
        {"partitions", "CONCERT_PARTITIONS", CC_OPT_INT, &partitions, "N", "partitions of concert.payment-requests when --create-topics creates it (default 12, at least 12)", 12, 10000},
        {"session-timeout-ms", "CONCERT_SESSION_TIMEOUT_MS", CC_OPT_INT, &session, "MS", "Kafka group session timeout: how soon a dead replica's partitions move (default 10000)", 1000, 300000},
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
        .batch = (int)batch,
        .redis_wait_replicas = (int)wait_replicas,
        .redis_wait_timeout_ms = (int)wait_timeout,
        .redis_timeout_ms = (int)redis_timeout,
        .create_topics = create_topics,
        .partitions = (int)partitions,
        .session_timeout_ms = (int)session,
        .lag_interval_ms = (int)lag_interval,
    };
    return pc_run(&cfg);
}
