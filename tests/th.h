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
#endif
