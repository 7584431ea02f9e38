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

/** The concert-server binary tests start: $CONCERT_TEST_SERVER_BIN if set (to run
 * a test against another build, e.g. the code before a fix), else this build's. */
const char *th_server_bin(void);
/** Path of the concertctl binary built with the tests. */
const char *th_ctl_bin(void);

/** Starts concert-server against `redis_url` with extra flags (NULL-terminated) and
 * waits until Health/Check answers (any status). */
void th_server_start(th_server *s, const char *redis_url, const char *const *extra);
/** Starts concert-server listening on `listen` (s->port is not chosen) and returns at
 * once, without waiting: for tests of start-up failures. */
void th_server_spawn(th_server *s, const char *listen, const char *redis_url, const char *const *extra);
/** Waits up to limit_ms for the process to exit; its exit status, -1 if it was
 * killed by a signal, or -2 if it is still running. */
int th_server_wait_exit(th_server *s, int limit_ms);
/** 1 if the server's log holds `needle`. */
int th_server_log_has(const th_server *s, const char *needle);
/** Waits until Health/Check says SERVING (Redis reachable; on a cluster: the slot map
 * known and every primary up). 1 if it did within limit_ms. */
int th_server_wait_serving(th_server *s, int limit_ms);
/** SIGTERM, waits; returns its exit status (or -1 if it had to be killed). */
int th_server_stop(th_server *s);
/** th_server_start with two NULL-terminated flag lists (either may be NULL), `base` first:
 * a test file's usual flags and one test's extra ones. */
void th_server_start_with(th_server *s, const char *redis_url, const char *const *base, const char *const *extra);
/** Closes *cli (if open, and sets it NULL), then th_server_stop: the last step of a test,
 * and of its teardown. Returns the server's exit status. */
int th_server_close(th_server *s, cc_client **cli);
/** Frees an unpacked protobuf-c message; NULL is fine. */
void th_free_msg(void *m);

/** The port a server started with `--metrics HOST:0` bound, from its
 * `event=metrics_listening ... port=N` log line (waits up to 5 s); 0 if none. */
int th_metrics_port(th_server *s);
/** One HTTP/1.1 request to 127.0.0.1:port; the whole response (headers and body),
 * caller frees. */
char *th_http(int port, const char *method, const char *path);

/** Starts argv[0] (PATH lookup) with stdout and stderr appended to `log` (NULL:
 * /dev/null); it gets SIGKILL when this process dies. */
pid_t th_spawn(char *const argv[], const char *log);

/** An integer field of Redis INFO (e.g. "total_commands_processed"); -1 if absent. */
long long th_redis_info_int(const th_redis *r, const char *field);
/** The same for the redis-server on 127.0.0.1:`port` (a cluster node, a replica). */
long long th_info_int(int port, const char *field);

/** Removes a folder tree. */
void th_rmrf(const char *dir);

/** Waits until `cond(arg)` is true, polling every `every_ms`, for at most `limit_ms`.
 * Returns 1 if it became true. */
int th_wait_for(int (*cond)(void *arg), void *arg, int every_ms, int limit_ms);



/* ---- raw gRPC calls (what cc_client does not expose: trailers, bidi streams) ---- */

typedef struct th_raw th_raw;
/** A plaintext channel to `addr` with its own completion queue. */
th_raw *th_raw_open(const char *addr);
void th_raw_close(th_raw *t);
/** One unary call with request bytes; fills st and, when trailer_key is given, the
 * value of that trailing metadata key into trailer[trailer_len] ("" if absent). */
grpc_status_code th_raw_unary(th_raw *t, const char *method, const void *req, size_t len, const cc_md *md,
                              int n_md, int timeout_ms, cc_status *st, const char *trailer_key, char *trailer,
                              size_t trailer_len);
/** Same with a protobuf request. */
grpc_status_code th_raw_unary_pb(th_raw *t, const char *method, const ProtobufCMessage *req, const cc_md *md,
                                 int n_md, int timeout_ms, cc_status *st, const char *trailer_key, char *trailer,
                                 size_t trailer_len);
/** A bidi stream: sends all `n` messages back to back (without waiting for
 * answers), half-closes, then reads answers until the end; returns how many came
 * (each answer's bytes into out[i] if out is not NULL; the caller frees them). */
int th_raw_bidi(th_raw *t, const char *method, grpc_byte_buffer *const *msgs, int n, grpc_byte_buffer **out,
                int max_out, int timeout_ms, cc_status *st);

/* ---- JWTs for identity mode ---- */

/** Base64url without padding (RFC 4648 section 5) of len bytes into out (4*len/3+4). */
void th_b64url(const unsigned char *in, size_t len, char *out);
/** A compact JWT: header and payload JSON as given, signed HS256 with `key`, into out
 * (at least 2 * (strlen(header) + strlen(payload)) + 64 bytes). */
void th_jwt_hs256(const void *key, size_t keylen, const char *header, const char *payload, char *out);

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

/** Creates the concert (ALREADY_EXISTS is fine): IssueToken needs an admin to have
 * created it. */
grpc_status_code th_admin_concert(cc_client *c, const char *admin_key, const char *concert);
/** SetQueuePolicy changing only admit_rate (0 = admit nobody: tokens stay WAITING). */
grpc_status_code th_admin_admit_rate(cc_client *c, const char *admin_key, const char *concert, int64_t rate,
                                     cc_status *st);
/** Creates the concert (if missing) and a schedule with seats 1..seats at `price`. */
grpc_status_code th_admin_catalogue(cc_client *c, const char *admin_key, const char *concert, const char *schedule,
                                    int seats, int64_t price);
/** Joins and waits (up to 10 s) until the token is ACTIVE; 0 or -1. */
int th_active_token(cc_client *c, const char *user, const char *concert, char *token, size_t len);
/** Waits until an issued token is ACTIVE; 0 or -1. */
int th_wait_active(cc_client *c, const char *token);
/** ReserveSeats of one seat with an ACTIVE token; on OK its reservation id into
 * rid[len]. */
grpc_status_code th_reserve_seat(cc_client *c, const char *token, const char *schedule, int seat, char *rid,
                                 size_t len, cc_status *st);
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
