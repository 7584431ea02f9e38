/* cc_redis_uv: attaches a hiredis async context to a libuv loop, like hiredis'
 * adapters/libuv.h, with one difference that matters: Debian's hiredis 0.14 adapter
 * ignores poll errors, and libuv reports a socket error (EPOLLERR: a connection reset
 * by a killed Redis, a refused connect) as an error status while stopping the poll.
 * So a dead connection was noticed only by the command timeout, and a refused connect
 * only by the connect timeout. Here an error status makes hiredis read (or finish its
 * connect) at once, which surfaces the socket's error through the usual disconnect or
 * connect callback. Owns one uv_poll_t per context, freed in its close callback after
 * hiredis' cleanup hook. */
#ifndef CC_REDIS_UV_H
#define CC_REDIS_UV_H

#include <hiredis/async.h>
#include <uv.h>

/** Attaches `ac` to `loop`. Returns REDIS_OK, or REDIS_ERR (nothing allocated). */
int cc_redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop);

#endif
