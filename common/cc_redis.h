/* cc_redis: a small pool of long-lived, multiplexed hiredis async connections on one
 * libuv loop. Commands travel in two lanes (below), pipelined; each has a timeout (hiredis 0.14 has none, so a per-connection uv timer watches the
 * oldest pending command and drops the connection when it is late); dropped
 * connections reconnect with exponential backoff. Lua scripts are registered once,
 * loaded on every (re)connect and called by SHA.
 *
 * Redis URLs: redis://host:port[/db], sentinel://host:port[,host:port...]/name, or
 * redis-cluster://host:port[,host:port...] (seed nodes). In Sentinel mode each
 * (re)connect asks the sentinels for the current primary. In cluster mode the pool
 * keeps a slot map (CLUSTER SLOTS), one set of connections per primary, and routes
 * every command by the slot of its key (hash tags honoured); MOVED updates the map and
 * resends, ASK resends after ASKING, TRYAGAIN/CLUSTERDOWN retry with backoff within
 * the command's timeout; the map is refreshed on redirects and whenever a primary's
 * connections drop. Commands without a key go to any primary. Scripts are loaded on
 * every connection of every node; a NOSCRIPT reply (a flushed cache, a new primary)
 * reloads them on that connection and resends the command once, transparently.
 *
 * Lanes. A node's connections carry two lanes:
 *  - the small lane (cc_redis_command_argv, cc_redis_command, cc_redis_eval,
 *    cc_redis_command_node, CLUSTER SLOTS) is one connection (the first
 *    up when one is needed), kept while it stays up: a loop turn's commands leave in one
 *    write and come back in one read;
 *  - the bulk lane (cc_redis_command_argv_bulk, cc_redis_eval_bulk), for commands whose
 *    replies are big or that run long (HSCAN chunks, watcher refreshes, admission,
 *    audits, exports, sweeps), is another connection of the same node, so that a small
 *    command never waits behind a big reply. When only one connection of the node is
 *    up (or --redis-connections is 1) both lanes share it. Connections beyond two are
 *    hot spares that take over a lane whose connection drops.
 * Ordering: Redis runs one connection's commands in the order sent, and only those.
 * So commands of the same lane to the same node run in the order they were sent while
 * the lane keeps its connection; commands of different lanes may run in any order. A
 * caller whose second command must see the effect of the first (a write that is not
 * awaited, then a read of the same key) sends both on the same lane, or sends the
 * second from the first's callback. A lane changes connection only when its
 * connection drops (its pending commands then fail) or, for the bulk lane, when a
 * second connection comes up while it shared the small lane's: then bulk commands
 * already sent may run after later ones. Redirects (MOVED/ASK/TRYAGAIN) and NOSCRIPT
 * resends keep a command's lane.
 *
 * Threading: every function must be called from the loop's thread. */
#ifndef CC_REDIS_H
#define CC_REDIS_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct cc_redis cc_redis;

/** A parsed Redis URL. */
typedef struct {
    int sentinel;             /* 1 for sentinel:// */
    int cluster;              /* 1 for redis-cluster:// */
    char host[8][256];        /* direct: host[0]; sentinel: up to 8 sentinels; cluster: seeds */
    int port[8];
    int n_hosts;
    int db;                   /* redis:// only */
    char master_name[128];    /* sentinel:// only */
} cc_redis_url;

/** Parses `url`; returns 0, or -1 with a reason in err[errlen]. */
int cc_redis_url_parse(cc_redis_url *out, const char *url, char *err, size_t errlen);

typedef struct {
    const char *url;            /* see above */
    int connections;            /* connections per node (per primary in cluster mode), default 2:
                                 * the small and the bulk lane (see above); 1: both share one */
    int command_timeout_ms;     /* default 2000 */
    int connect_timeout_ms;     /* default 1000 */
    int max_backoff_ms;         /* default 2000 */
} cc_redis_config;

/** Called with the reply (owned by the pool: built in its connection's arena and
 * reused after the call, so valid only during it), or with reply == NULL and `err`
 * saying why ("timeout", "disconnected", ...). */
typedef void (*cc_redis_cb)(redisReply *reply, const char *err, void *payload);

/** Called on the loop when the pool goes from no connection up to one, or back. */
typedef void (*cc_redis_state_cb)(int up, void *payload);

/** A Lua script: register once with cc_redis_script_init before use. */
typedef struct {
    const char *name;
    const char *body;
    size_t len;
    char sha[41];
    /* Cluster mode: the body behind the migration fence (see cc_redis.c), made by the
     * first cluster pool the script is given to and kept for the process' life. */
    char *fenced_body;
    size_t fenced_len;
    char fenced_sha[41];
} cc_redis_script;

/** Joins `prelude` (may be NULL), a newline and `body` into a new NUL-terminated
 * string (length in *len_out), for scripts that share helper functions. The caller
 * owns it; scripts keep theirs for the life of the process. */
char *cc_redis_script_join(const unsigned char *prelude, size_t prelude_len, const unsigned char *body,
                           size_t body_len, size_t *len_out);

/** Fills script->sha from its body. */
void cc_redis_script_init(cc_redis_script *script, const char *name, const char *body, size_t len);

/** Creates the pool and starts connecting. Returns 0 or -1 (bad URL: reason in err). */
int cc_redis_create(cc_redis **out, uv_loop_t *loop, const cc_redis_config *cfg,
                    char *err, size_t errlen);

/** Scripts loaded (SCRIPT LOAD) on every connection as it comes up. The array must
 * outlive the pool. Call before the first connection is up. In cluster mode each
 * script is loaded and called with the migration fence prepended (see cc_redis.c):
 * the fenced_* fields are filled once and never freed. */
void cc_redis_set_scripts(cc_redis *r, cc_redis_script **scripts, int n);

void cc_redis_set_state_cb(cc_redis *r, cc_redis_state_cb cb, void *payload);

/** 1 if at least one connection is up (cluster mode: the slot map is known and every
 * slot's primary has a connection up). */
int cc_redis_is_up(const cc_redis *r);

/** 1 in cluster mode. */
int cc_redis_is_cluster(const cc_redis *r);

/** Primaries known: 1 outside cluster mode; in cluster mode those of the slot map
 * (0 before the first map). */
int cc_redis_n_nodes(const cc_redis *r);

/** "host:port" of primary `node` into buf (Sentinel: the address the first connection
 * resolved; "" when unknown). Returns buf. */
const char *cc_redis_node_addr(const cc_redis *r, int node, char *buf, size_t len);

/** Sends a command to primary `node` (0 <= node < cc_redis_n_nodes), for what is per
 * node (SCAN, INFO, DBSIZE), on the small lane. Same contract as cc_redis_command_argv. */
int cc_redis_command_node(cc_redis *r, int node, cc_redis_cb cb, void *payload, int argc, const char **argv,
                          const size_t *argvlen);

/** Called once with the fewest replicas that acknowledged (WAIT) across the
 * connections asked, or with acked = -1 and `err` when one of them failed. */
typedef void (*cc_redis_wait_cb)(int acked, const char *err, void *payload);

/** Replication fence: on every connection that is up (both lanes' and the spares), of
 * every primary, a small write (INCR of a fence key that primary serves) followed by
 * WAIT `replicas` `timeout_ms`, pipelined. Once `cb` reports >= replicas, every write any client made
 * on any primary before the call is on that many replicas of its primary (WAIT covers
 * the writes of its own connection, and the fence's offset is past all earlier ones,
 * also those of another process, e.g. a crashed consumer's). Returns 0 (cb called
 * exactly once) or -1 when no connection is up. */
int cc_redis_wait(cc_redis *r, int replicas, int timeout_ms, cc_redis_wait_cb cb, void *payload);

/** Sends a command on the small lane. Returns 0 when queued (cb will be called exactly
 * once), or -1 when no connection is up (cb will not be called). argv and argvlen
 * (NULL: strlen of each) are copied before it returns. */
int cc_redis_command_argv(cc_redis *r, cc_redis_cb cb, void *payload, int argc,
                          const char **argv, const size_t *argvlen);

/** The same on the bulk lane: for a command whose reply is big (many elements, a large
 * string) or that runs long, so that small commands do not queue behind it. Same
 * contract; mind the ordering rule above. */
int cc_redis_command_argv_bulk(cc_redis *r, cc_redis_cb cb, void *payload, int argc,
                               const char **argv, const size_t *argvlen);

/** printf-style variant (hiredis format: %s, %b, %d...). Same contract. */
int cc_redis_command(cc_redis *r, cc_redis_cb cb, void *payload, const char *fmt, ...);

/** EVALSHA of `script` with `nkeys` keys followed by args (args[0..nargs) are
 * keys then ARGV), on the small lane. Same contract as cc_redis_command_argv. */
int cc_redis_eval(cc_redis *r, const cc_redis_script *script, cc_redis_cb cb, void *payload,
                  int nkeys, int nargs, const char **args, const size_t *lens);

/** The same on the bulk lane (see cc_redis_command_argv_bulk). */
int cc_redis_eval_bulk(cc_redis *r, const cc_redis_script *script, cc_redis_cb cb, void *payload,
                       int nkeys, int nargs, const char **args, const size_t *lens);

/** Stops reconnecting, fails pending commands with "closing", frees the pool once
 * every handle is closed (the loop keeps running until then). */
void cc_redis_close(cc_redis *r);

/** Counters for stats and tests. */
typedef struct {
    uint64_t sent, replies, errors, timeouts, reconnects;
    uint64_t moved, asks, retries, noscript; /* cluster redirects, TRYAGAIN/CLUSTERDOWN retries, NOSCRIPT resends */
} cc_redis_stats;
void cc_redis_get_stats(const cc_redis *r, cc_redis_stats *out);

#endif
