/* pc_redis: payment-consumer's one synchronous hiredis connection, used in pipelines
 * (append N commands, then read N replies). Connects with exponential backoff; with a
 * sentinel:// URL asks the sentinels for the primary (SENTINEL
 * get-master-addr-by-name) and checks its ROLE before using it; loads the Lua
 * scripts on every (re)connect and offers EVAL with the body as the NOSCRIPT
 * fallback. Any I/O error, timeout or "not the primary" drops the connection; the
 * next pc_redis_ensure reconnects.
 *
 * Owns the connection and the script texts. Single-threaded; blocking by design
 * (the consumer has nothing else to do while Redis answers). */
#ifndef PC_REDIS_H
#define PC_REDIS_H

#include <hiredis/hiredis.h>
#include <signal.h>
#include <stddef.h>

typedef struct pc_redis pc_redis;

/** A Lua script: its full text (prelude + body) and SHA1. */
typedef struct {
    const char *name;
    char *text;
    size_t len;
    char sha[41];
} pc_script;

/** Builds `prelude` (may be NULL) + "\n" + `body` into s (owned by s; free with
 * pc_script_free), the way concert-server prepends bk_lib.lua. */
void pc_script_init(pc_script *s, const char *name, const unsigned char *prelude, size_t prelude_len,
                    const unsigned char *body, size_t body_len);
void pc_script_free(pc_script *s);

/** Parses the URL (redis:// or sentinel://); does not connect. 0 or -1 with err. */
int pc_redis_create(pc_redis **out, const char *url, int timeout_ms, char *err, size_t errlen);
void pc_redis_free(pc_redis *r);

/** Scripts loaded on every connect; the array and scripts must outlive r. */
void pc_redis_set_scripts(pc_redis *r, pc_script *const *scripts, int n);

/** Returns 0 once connected (at once if already), retrying with backoff
 * (50 ms doubling to 2 s); -1 if *stop became non-zero first. */
int pc_redis_ensure(pc_redis *r, volatile sig_atomic_t *stop);

/** 1 while a connection is up. */
int pc_redis_is_up(const pc_redis *r);

/** Drops the connection (logged with `why`). */
void pc_redis_drop(pc_redis *r, const char *why);

/** Appends one command to the pipeline. 0, or -1 (connection dropped). */
int pc_redis_append(pc_redis *r, int argc, const char **argv, const size_t *lens);

/** Appends EVALSHA (or, with `full`, EVAL with the text) of s with nkeys keys
 * followed by ARGV: args[0..nargs) are keys then ARGV. */
int pc_redis_append_eval(pc_redis *r, const pc_script *s, int full, int nkeys, int nargs, const char **args);

/** Reads the next reply of the pipeline (caller frees with freeReplyObject), or
 * NULL after an I/O error or timeout (the connection is then dropped). Error
 * replies that mean "not the primary" (READONLY) or "loading" also drop it, but
 * are returned. */
redisReply *pc_redis_read(pc_redis *r);

/** Host and port of the connection (for logs). */
const char *pc_redis_addr(const pc_redis *r);

#endif
