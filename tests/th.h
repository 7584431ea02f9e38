/* th: the integration-test harness. Starts real services on free loopback ports in
 * temporary folders (never 6379/9092), waits for conditions rather than sleeping, and
 * stops only the processes it started, by pid. Children get PR_SET_PDEATHSIG so that
 * a crashed test cannot leave them running. */
#ifndef TH_H
#define TH_H

#include <hiredis/hiredis.h>
#include <stdint.h>
#include <sys/types.h>

#include "cc_client.h"

typedef struct {
    pid_t pid;
    int port;
    char dir[256];
    char url[64];
    int maxmemory_mb; /* 0: none */
} th_redis;

typedef struct {
    pid_t pid;
    int port;
    char addr[64];
    char log[300];
    int metrics_port; /* filled by th_metrics_port */
} th_server;

/** A free TCP port on 127.0.0.1 (bound and released). */
int th_free_port(void);

/** Milliseconds on a monotonic clock. */
uint64_t th_now_ms(void);

/** Sleeps `ms` milliseconds: only as the poll interval of a wait loop. */
void th_pause_ms(int ms);

/** Starts redis-server (port chosen if r->port is 0) and waits until it answers PING. */
void th_redis_start(th_redis *r);
/** SIGKILLs it (data is lost: no persistence) and waits for it. Keeps the folder. */
void th_redis_kill(th_redis *r);
/** Stops it and removes its folder. */
void th_redis_stop(th_redis *r);
/** A synchronous connection for inspecting state; NULL if it cannot connect. */
redisContext *th_redis_connect(const th_redis *r);

/** Starts concert-server against `redis_url` with extra flags (NULL-terminated) and
 * waits until Health/Check answers (any status). */
void th_server_start(th_server *s, const char *redis_url, const char *const *extra);
/** SIGTERM, waits; returns its exit status (or -1 if it had to be killed). */
int th_server_stop(th_server *s);

/** The port a server started with `--metrics HOST:0` bound, from its
 * `event=metrics_listening ... port=N` log line (waits up to 5 s); 0 if none. */
int th_metrics_port(th_server *s);
/** One HTTP/1.1 request to 127.0.0.1:port; the whole response (headers and body),
 * caller frees. */
char *th_http(int port, const char *method, const char *path);

/** Starts argv[0] (PATH lookup) with stdout and stderr appended to `log` (NULL:
 * /dev/null); it gets SIGKILL when this process dies. */
pid_t th_spawn(char *const argv[], const char *log);

/** Removes a folder tree. */
void th_rmrf(const char *dir);

/** Waits until `cond(arg)` is true, polling every `every_ms`, for at most `limit_ms`.
 * Returns 1 if it became true. */
int th_wait_for(int (*cond)(void *arg), void *arg, int every_ms, int limit_ms);



/* ---- QueueService helpers ---- */
#include "concert/v1/queue.pb-c.h"

/** IssueToken; on OK *out is the response (free with protobuf_c_message_free_unpacked). */
grpc_status_code th_issue(cc_client *c, const char *user, const char *concert, Concert__V1__QueueStatus **out,
                          cc_status *st);
/** GetQueueStatus. */
grpc_status_code th_status(cc_client *c, const char *token, Concert__V1__QueueStatus **out, cc_status *st);
/** LeaveQueue; *prev gets the previous state. */
grpc_status_code th_leave(cc_client *c, const char *token, int *prev, cc_status *st);
/** The token's state now (QUEUE_STATE_*), or -code on a failed call. */
int th_state(cc_client *c, const char *token);

/* ---- catalogue and booking helpers ---- */

/** Creates the concert (if missing) and a schedule with seats 1..seats at `price`. */
grpc_status_code th_admin_catalogue(cc_client *c, const char *admin_key, const char *concert, const char *schedule,
                                    int seats, int64_t price);
/** Joins and waits (up to 10 s) until the token is ACTIVE; 0 or -1. */
int th_active_token(cc_client *c, const char *user, const char *concert, char *token, size_t len);
/** Waits until an issued token is ACTIVE; 0 or -1. */
int th_wait_active(cc_client *c, const char *token);
/** A digest of every key's value (but the admission clock), to prove that nothing
 * changed. Caller frees. */
char *th_redis_digest(const th_redis *r);

/* ---- Kafka (scripts/kafka.sh) and payment-consumer ---- */

typedef struct {
    char dir[256];       /* kafka.sh --dir: configs, data, logs, pid files */
    char bootstrap[256]; /* host:port[,host:port] */
    int nodes;
    int reaper_fd;       /* write end of the reaper's pipe, -1 if none */
    pid_t reaper;
} th_kafka;

/** Starts a `nodes`-node Kafka (1 or 3) with scripts/kafka.sh in `dir` (NULL: a new
 * temp folder), waits until it is ready and fills k->bootstrap. Also forks a reaper
 * that stops the brokers and removes the folder if this process dies without
 * calling th_kafka_stop (the brokers are not our children: kafka.sh starts them).
 * Usable outside a test (no cr_assert): returns 0, or -1 with the reason in err. */
int th_kafka_start(th_kafka *k, int nodes, const char *dir, char *err, size_t errlen);
/** Stops every node (kafka.sh stop), removes the folder, dismisses the reaper. */
void th_kafka_stop(th_kafka *k);
/** SIGKILLs node n (1-based); 0 or the script's exit status. */
int th_kafka_kill_node(th_kafka *k, int node);
/** Restarts node n with its data and waits until it is back in sync. */
int th_kafka_start_node(th_kafka *k, int node);

typedef struct {
    pid_t pid;
    char log[300];
    char group[128];
    int keep_log; /* set by a test that saw something wrong: th_consumer_stop keeps the log */
} th_consumer;

/** Starts payment-consumer (--redis, --kafka, --group, --log-level debug, then
 * `extra`, NULL-terminated) and waits until it logs event=started. */
void th_consumer_start(th_consumer *c, const char *redis_url, const char *brokers, const char *group,
                       const char *const *extra);
/** Waits up to limit_ms until the consumer's log holds `needle`; 1 if it does. */
int th_consumer_log_has(th_consumer *c, const char *needle, int limit_ms);
/** SIGTERM, waits (15 s, then SIGKILL); returns the exit status or -1. The log is
 * removed on exit status 0 unless keep_log or TH_KEEP_LOGS is set. */
int th_consumer_stop(th_consumer *c);
/** SIGKILL, reaps it. */
void th_consumer_kill(th_consumer *c);

/* ---- Redis Cluster (scripts/redis-cluster.sh) ---- */

typedef struct {
    char dir[256];    /* redis-cluster.sh --dir */
    char seeds[512];  /* host:port,host:port,... (every node) */
    char url[600];    /* redis-cluster://<seeds> */
    int nodes;
    int reaper_fd;
    pid_t reaper;
} th_rcluster;

/** Starts a cluster of `primaries` primaries with `replicas` replicas each (scripts/
 * redis-cluster.sh start) in a new temp folder and waits for cluster_state:ok; forks a
 * reaper as th_kafka_start does. Returns 0, or -1 with the reason in err. */
int th_rcluster_start(th_rcluster *c, int primaries, int replicas, char *err, size_t errlen);
/** Stops every node, removes the folder, dismisses the reaper. */
void th_rcluster_stop(th_rcluster *c);
/** SIGKILLs node n (1-based); 0 or the script's exit status. */
int th_rcluster_kill_node(th_rcluster *c, int node);
/** Restarts node n; 0 or the script's exit status. */
int th_rcluster_start_node(th_rcluster *c, int node);
/** Node n's port (0 if unknown). */
int th_rcluster_port(th_rcluster *c, int node);

/** The port of the last `event=<event> ... port=N` line in `log` (0 if none): e.g. a
 * payment-consumer's `metrics_listening`. */
int th_log_port(const char *log, const char *event);
#endif
