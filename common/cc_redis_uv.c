/* cc_redis_uv: see cc_redis_uv.h. */
#include "cc_redis_uv.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    redisAsyncContext *ac; /* NULL once hiredis called cleanup */
    uv_poll_t poll;
    int events;
    int polling; /* the events the poll was last started with (0: stopped) */
} uv_events;

static void on_poll(uv_poll_t *h, int status, int events) {
    uv_events *p = h->data;
    if (!p->ac) return;
    if (status < 0) {
        /* A socket error: libuv has stopped the poll. Reading makes hiredis see the
         * error (ECONNRESET, ECONNREFUSED on a connect in progress) and disconnect. */
        p->polling = 0;
        redisAsyncHandleRead(p->ac);
        if (p->ac && p->events && !p->polling) {
            uv_poll_start(&p->poll, p->events, on_poll);
            p->polling = p->events;
        }
        return;
    }
    if (events & UV_READABLE) redisAsyncHandleRead(p->ac);
    if (p->ac && (events & UV_WRITABLE)) redisAsyncHandleWrite(p->ac);
}

/* Only when the events change: hiredis asks for writability once per command, and
 * the poll restarted each time was a tenth of the cost of queueing one (callgrind). */
static void update(uv_events *p) {
    if (p->events == p->polling) return;
    if (p->events) uv_poll_start(&p->poll, p->events, on_poll);
    else uv_poll_stop(&p->poll);
    p->polling = p->events;
}

static void add_read(void *d) {
    uv_events *p = d;
    p->events |= UV_READABLE;
    update(p);
}

static void del_read(void *d) {
    uv_events *p = d;
    p->events &= ~UV_READABLE;
    update(p);
}

static void add_write(void *d) {
    uv_events *p = d;
    p->events |= UV_WRITABLE;
    update(p);
}

static void del_write(void *d) {
    uv_events *p = d;
    p->events &= ~UV_WRITABLE;
    update(p);
}

static void on_closed(uv_handle_t *h) { free(h->data); }

static void cleanup(void *d) {
    uv_events *p = d;
    p->ac = NULL;
    uv_close((uv_handle_t *)&p->poll, on_closed);
}

int cc_redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop) {
    if (ac->ev.data) return REDIS_ERR;
    uv_events *p = calloc(1, sizeof *p);
    if (!p) return REDIS_ERR;
    if (uv_poll_init(loop, &p->poll, ac->c.fd) != 0) {
        free(p);
        return REDIS_ERR;
    }
    p->ac = ac;
    p->poll.data = p;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    ac->ev.data = p;
    return REDIS_OK;
}
