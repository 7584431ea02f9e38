/* srv_rpc: gRPC C core server on a libuv loop. See srv_rpc.h.
 *
 * One thread (the one in srv_rpc_run) owns everything: srv_rpc's state, every srv_call
 * (and `free_calls`, the finished ones it reuses), the slots, the fast calls (fcall),
 * the stats and the observers. It blocks in grpc_completion_queue_next, with the
 * deadline of the loop's next timer, and runs the loop without blocking
 * (UV_RUN_NOWAIT) between batches of completions. The waker thread shares with it
 * only three atomics (`blocked`, `uv_pending`, `w_fired`) and the bell channel (gRPC
 * core's calls are thread-safe); it never touches a call or the loop. The srv-streams
 * thread (streams_main) shares only the streams' queue `scq`, the event list under
 * `st_mu` and `st_async` (uv_async_send); it never touches a call either: the loop's
 * thread runs the events it pushes (on_streams).
 *
 * Tags: every completion carries a pointer to an `srv_tag` whose `fn` runs on that
 * thread. A call owns three tags (final/status, close, write/recv) so that several of
 * its batches can be in flight; `refs` counts those batches plus one for the handler,
 * and the call is freed when it drops to zero. */
#include "srv_rpc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/slice_buffer.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cc_asan.h"
#include "cc_log.h"
#include "cc_pb.h"

typedef struct srv_tag srv_tag;
struct srv_tag {
    void (*fn)(srv_tag *tag, int ok);
};

typedef struct srv_slot {
    srv_tag tag;
    srv_rpc *s;
    const srv_method *m; /* NULL: the generic (unregistered) slot */
    void *reg;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_call_details details;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
} srv_slot;

/* A call answered at once (srv_method.cq_handler), without an srv_call: from accept to
 * the end of its one batch, then back on the free list. */
typedef struct fcall {
    srv_tag tag;
    srv_rpc *s;
    grpc_call *call;
    int cancelled;
    struct fcall *next_free;
} fcall;

#define MAX_TRAILERS 4 /* srv_call_add_trailer's; one more slot for grpc-status-details-bin */
/* Bytes in each call for its unpacked request (more: malloc). A token request (the
 * message and a token of SRV_TOKEN_MAX bytes) takes at most 160; kept small because
 * every open stream carries it (10,000 watchers: 1.9 MB). */
#define CALL_ARENA 192

#define FREE_CALLS_MAX 1024 /* finished srv_calls kept for reuse */
/* A request metadata array of at most this many entries is emptied and kept for the
 * next call instead of freed (gRPC core appends to it: no free and realloc per call); a
 * bigger one (a call with many headers) is freed, so that no slot or kept call holds
 * one for good. */
#define MD_KEEP 16

typedef struct wq {
    grpc_byte_buffer *bb;
    struct wq *next;
} wq;

struct srv_call {
    srv_tag t_final, t_close, t_io, t_recv;
    int close_cancelled; /* written by RECV_CLOSE_ON_SERVER */
    srv_rpc *s;
    const srv_method *m;
    grpc_call *call;
    grpc_metadata_array md;
    ProtobufCMessage *req;
    uint64_t deadline_ms;
    int refs;
    int handler_done;  /* finish called */
    int status_sent;
    int cancelled;
    int closed;        /* RECV_CLOSE_ON_SERVER completed */
    int write_busy;
    int n_queued;
    wq *q_head, *q_tail;
    grpc_status_code code;
    char *details;
    void (*on_cancel)(srv_call *c);
    void (*on_recv)(srv_call *c, grpc_byte_buffer *bb);
    void (*on_drain)(srv_call *c); /* once pending writes fall to drain_at */
    int drain_at;
    grpc_byte_buffer *recv_bb;
    grpc_byte_buffer *husk; /* unary: the request's buffer, emptied, to send the reply in (take_husk) */
    void *data;
    int in_list;
    srv_call *prev, *next; /* all live calls, for shutdown */
    int sent_initial_md;
    grpc_metadata *trailers; /* MAX_TRAILERS + 1 of them, allocated by the first trailer (a held
                                stream has none: 520 bytes less per WatchQueueStatus); sent with
                                the status (+ the details); slices owned by the call */
    size_t n_trailers;
    uint64_t started_ns; /* uv_hrtime() when accepted, for the call observer */
    srv_call *next_free; /* in srv_rpc.free_calls once finished */
    /* The unpacked request lives in arena_bytes when it fits (cc_pb_arena): no malloc
     * per call. A reused call clears every field up to `arena` and empties the arena;
     * its bytes are not cleared (they are poisoned while the call is recycled). */
    ProtobufCAllocator alloc;
    cc_pb_arena arena;
    _Alignas(max_align_t) unsigned char arena_bytes[CALL_ARENA];
};

/* A registered method's armed requests (slots): few at first, more while it is busy
 * (note_taken). */
typedef struct {
    void *reg;     /* grpc_server_register_method's handle */
    int slots;     /* slots of the method */
    int taken;     /* its calls taken in turn `turn` of srv_rpc_run */
    uint64_t turn;
} method_slots;

/* A completion of the streams' queue on its way to the loop's thread. */
typedef struct {
    srv_tag *tag;
    int ok;
} st_event;

#define FIRST_SLOTS 2 /* armed requests per method at start (at most cfg.requests_per_method) */
/* Slots of all methods together, per method: growth stops there, so that whatever the
 * traffic no more requests are armed than the 32 per method of before growth. */
#define SLOT_BUDGET 32

struct srv_rpc {
    uv_loop_t *loop;
    grpc_server *server;
    grpc_completion_queue *cq;
    /* The waker (waker_main): wakes the thread blocked in grpc_completion_queue_next
     * when the loop has something to do (see srv_rpc_run). */
    pthread_t waker;
    int w_ep;           /* its epoll set: the loop's backend fd (one-shot) and w_stop */
    int w_stop;         /* eventfd: the waker exits */
    int waker_on;       /* the thread runs (joined by waker_stop) */
    int w_fired;        /* __atomic: the backend fd fired; srv_rpc_run re-arms it */
    int blocked;        /* __atomic: srv_rpc_run is (about to be) blocked in gRPC */
    int uv_pending;     /* __atomic: the loop has events srv_rpc_run has not run yet */
    grpc_channel *bell; /* a lame channel: a call on it completes at once on s->cq */
    uint64_t bells, waits, turns; /* __atomic bells; srv_rpc_run's turns and blocking waits */
    const srv_method *methods;
    int n_methods;
    void *app;
    srv_rpc_config cfg;
    int shutting_down;
    int cq_done;
    int server_done;
    uv_timer_t grace;
    void (*done)(void *);
    void *done_payload;
    srv_tag t_shutdown;
    srv_call *calls;
    srv_rpc_stats stats;
    uint64_t *by_code; /* [method][code] finished calls; row n_methods: unknown methods */
    method_slots *ms;  /* [method] */
    int method_slots_total; /* slots of registered methods (for SLOT_BUDGET) */
    int open_slots;
    int cq_closing; /* grpc_completion_queue_shutdown called */
    int forced; /* connections closed once our calls were over */
    fcall *free_fcalls;      /* finished fast calls for reuse */
    srv_call *free_calls;    /* finished calls for reuse (call_new), freed with s */
    size_t n_free_calls;
    /* The streams' queue (see "streams" below): every batch of a streaming call after
     * its accept completes on `scq`, a non-polling queue drained by the srv-streams
     * thread, which hands the events to this thread through `st_async`. */
    grpc_completion_queue *scq;
    pthread_t st_thread;
    int st_on;               /* the thread runs (joined by on_streams once it said done) */
    pthread_mutex_t st_mu;   /* guards the five fields below, shared with the thread */
    st_event *st_ev;         /* events the thread pushed, not yet taken by on_streams */
    size_t st_n, st_cap;
    int st_done;             /* the thread saw the queue's shutdown and is about to return */
    int st_async_on;         /* st_async is initialised: the thread may signal it */
    st_event *st_spare;      /* on_streams' batch (this thread only), swapped with st_ev */
    size_t st_spare_cap;
    uv_async_t st_async;
    int streams_done;        /* the streams' queue has shut down and its thread is joined */
    int cur_q;               /* 1 while on_streams dispatches (for stream_ev) */
    uint64_t stream_ev[2];   /* stream calls' completions that came on s->cq [0] and on scq [1] */
    uint64_t st_handoffs;    /* on_streams runs that had events */
    int open_handles;        /* grace and st_async, until their close callbacks */
};

static void on_slot(srv_tag *t, int ok);

static int fast_answer(srv_rpc *s, srv_slot *sl);
static void maybe_done(srv_rpc *s);

/* ---- one thread for gRPC and the loop ---- */

/* A doorbell: a call on the lame channel fails at once, and its completion lands on
 * s->cq, which wakes the thread blocked in grpc_completion_queue_next. Made by the
 * waker (ring), freed by on_bell on srv_rpc_run's thread when that completion comes;
 * none is made once waker_stop has run, so every bell is freed before the queue's
 * shutdown event. gRPC core 1.51
 * has no public way to post an event to a completion queue, nor to poll one from
 * another loop; this is the cheapest public one (~5 us of CPU, measured), and it only
 * rings when that thread is blocked with the loop's events waiting. */
typedef struct {
    srv_tag tag;
    grpc_call *call;
    grpc_metadata_array trailers;
    grpc_status_code status;
    grpc_slice details;
} srv_bell;

static void on_bell(srv_tag *t, int ok) {
    srv_bell *b = (srv_bell *)t;
    grpc_call_unref(b->call);
    grpc_slice_unref(b->details);
    grpc_metadata_array_destroy(&b->trailers);
    free(b);
}

/* Waker thread. */
static void ring(srv_rpc *s) {
    srv_bell *b = calloc(1, sizeof *b);
    if (!b) abort();
    b->tag.fn = on_bell;
    grpc_metadata_array_init(&b->trailers);
    b->details = grpc_empty_slice();
    b->call = grpc_channel_create_call(s->bell, NULL, GRPC_PROPAGATE_DEFAULTS, s->cq,
                                       grpc_slice_from_static_string("/srv.Bell/Ring"), NULL,
                                       gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[1].data.recv_status_on_client.trailing_metadata = &b->trailers;
    ops[1].data.recv_status_on_client.status = &b->status;
    ops[1].data.recv_status_on_client.status_details = &b->details;
    grpc_call_error e = grpc_call_start_batch(b->call, ops, 2, &b->tag, NULL);
    if (e != GRPC_CALL_OK) {
        /* Not expected; the loop then waits for the next gRPC event or timer. */
        CC_ERROR("grpc_bell_failed", "error=%d", (int)e);
        grpc_call_unref(b->call);
        grpc_metadata_array_destroy(&b->trailers);
        free(b);
        return;
    }
    __atomic_add_fetch(&s->bells, 1, __ATOMIC_RELAXED);
}

/* Waits for the loop's backend fd (one-shot: srv_rpc_run re-arms it once it has run
 * the loop), tells srv_rpc_run, and rings if that thread is blocked in gRPC. The
 * stores and loads are sequentially consistent, as in srv_rpc_run: either this thread
 * sees `blocked` and rings, or that one sees `uv_pending` and does not block. */
static void *waker_main(void *arg) {
    srv_rpc *s = arg;
    pthread_setname_np(pthread_self(), "srv-wake");
    for (;;) {
        struct epoll_event ev[2];
        int n = epoll_wait(s->w_ep, ev, 2, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            CC_ERROR("waker_failed", "reason=\"%s\"", strerror(errno));
            abort(); /* the loop would never run again while gRPC is idle */
        }
        for (int i = 0; i < n; i++)
            if (ev[i].data.u32 == 1) return NULL;
        __atomic_store_n(&s->w_fired, 1, __ATOMIC_SEQ_CST);
        __atomic_store_n(&s->uv_pending, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&s->blocked, __ATOMIC_SEQ_CST)) ring(s);
    }
}

static int waker_arm(srv_rpc *s, int op) {
    struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.u32 = 0};
    return epoll_ctl(s->w_ep, op, uv_backend_fd(s->loop), &ev);
}

static int waker_start(srv_rpc *s, char *err, size_t errlen) {
    s->w_ep = epoll_create1(EPOLL_CLOEXEC);
    s->w_stop = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event stop = {.events = EPOLLIN, .data.u32 = 1};
    if (s->w_ep < 0 || s->w_stop < 0 || waker_arm(s, EPOLL_CTL_ADD) < 0 ||
        epoll_ctl(s->w_ep, EPOLL_CTL_ADD, s->w_stop, &stop) < 0) {
        snprintf(err, errlen, "waker: %s", strerror(errno));
        return -1;
    }
    s->bell = grpc_lame_client_channel_create("srv-bell", GRPC_STATUS_UNAVAILABLE, "bell");
    if (pthread_create(&s->waker, NULL, waker_main, s) != 0) {
        snprintf(err, errlen, "waker: cannot start a thread");
        return -1;
    }
    s->waker_on = 1;
    return 0;
}

/* Before the completion queue shuts down (no bell may start after). */
static void waker_stop(srv_rpc *s) {
    if (s->waker_on) {
        uint64_t one = 1;
        if (write(s->w_stop, &one, sizeof one) < 0) abort();
        pthread_join(s->waker, NULL);
        s->waker_on = 0;
        int slots = 0, most = 0; /* the methods' slots as they had grown (note_taken) */
        for (int i = 0; s->ms && i < s->n_methods; i++) {
            slots += s->ms[i].slots;
            if (s->ms[i].slots > most) most = s->ms[i].slots;
        }
        /* stream_events_*: stream calls' completions by the queue they came on (all on
         * the streams' queue: none on the calls' queue s->cq); handoffs: runs of
         * on_streams that had events. */
        CC_INFO("grpc_loop_stats",
                "turns=%llu waits=%llu bells=%llu slots=%d most_slots=%d stream_events_streams_q=%llu "
                "stream_events_calls_q=%llu handoffs=%llu",
                (unsigned long long)s->turns, (unsigned long long)s->waits,
                (unsigned long long)__atomic_load_n(&s->bells, __ATOMIC_RELAXED), slots, most,
                (unsigned long long)s->stream_ev[1], (unsigned long long)s->stream_ev[0],
                (unsigned long long)s->st_handoffs);
    }
    if (s->bell) grpc_channel_destroy(s->bell);
    s->bell = NULL;
    if (s->w_ep >= 0) close(s->w_ep);
    if (s->w_stop >= 0) close(s->w_stop);
    s->w_ep = s->w_stop = -1;
}

/* ---- streams: their own completion queue and thread ---- */

/* Why: gRPC 1.51 as Debian builds it (no NDEBUG) checks every completion's tag against
 * the list of every tag outstanding on its queue (cq_check_tag, a linear walk under the
 * queue's mutex, ~6 instructions per tag, twice per unary call). A held stream keeps a
 * batch outstanding for its whole life (RECV_CLOSE_ON_SERVER, a receive or a send), so
 * on one shared queue every unary call would walk every held stream's tags: 2,000
 * watchers, ~24k instructions per call. So a streaming call is bound to `scq` (its
 * slot's cq_bound_to_call, arm_slot) and all its batches complete there; its accept
 * still comes on s->cq (the server's queue). `scq` is non-polling: the srv-streams
 * thread only pops events (it never polls fds: the loop's thread does all the I/O, as
 * before) and pushes them, under st_mu, to the loop's thread, which runs them in
 * on_streams (st_async): a call's state machine stays on the loop's thread. Unary calls
 * stay on s->cq with no hand-off. */

/* The srv-streams thread: pops the streams' queue until it shuts down. Signals the loop
 * when it pushes into an empty list (on_streams takes the whole list under the mutex,
 * so a non-empty one has a signal pending), and once more at the shutdown. */
static void *streams_main(void *arg) {
    srv_rpc *s = arg;
    pthread_setname_np(pthread_self(), "srv-streams");
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->scq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT) continue;
        int done = ev.type == GRPC_QUEUE_SHUTDOWN;
        pthread_mutex_lock(&s->st_mu);
        int signal = s->st_async_on && (done || s->st_n == 0);
        if (done) {
            s->st_done = 1;
        } else {
            if (s->st_n == s->st_cap) {
                s->st_cap = s->st_cap ? 2 * s->st_cap : 64;
                s->st_ev = realloc(s->st_ev, s->st_cap * sizeof *s->st_ev);
                if (!s->st_ev) abort();
            }
            s->st_ev[s->st_n++] = (st_event){ev.tag, ev.success};
        }
        pthread_mutex_unlock(&s->st_mu);
        if (signal) uv_async_send(&s->st_async);
        if (done) return NULL;
    }
}

/* On the loop: runs the events the srv-streams thread pushed; after its last one (the
 * queue shut down), joins it (it returns right after its signal) and lets shutdown go on. */
static void on_streams(uv_async_t *a) {
    srv_rpc *s = a->data;
    pthread_mutex_lock(&s->st_mu);
    st_event *ev = s->st_ev;
    size_t n = s->st_n, cap = s->st_cap;
    s->st_ev = s->st_spare;
    s->st_cap = s->st_spare_cap;
    s->st_n = 0;
    int done = s->st_done;
    pthread_mutex_unlock(&s->st_mu);
    s->st_spare = ev;
    s->st_spare_cap = cap;
    if (n) s->st_handoffs++;
    s->cur_q = 1;
    for (size_t i = 0; i < n; i++) ev[i].tag->fn(ev[i].tag, ev[i].ok);
    s->cur_q = 0;
    if (done && s->st_on) {
        pthread_join(s->st_thread, NULL);
        s->st_on = 0;
        s->streams_done = 1;
        maybe_done(s);
    }
}

static int streams_start(srv_rpc *s, char *err, size_t errlen) {
    grpc_completion_queue_attributes attr = {GRPC_CQ_CURRENT_VERSION, GRPC_CQ_NEXT, GRPC_CQ_NON_POLLING, NULL};
    s->scq = grpc_completion_queue_create(grpc_completion_queue_factory_lookup(&attr), &attr, NULL);
    if (!s->scq) {
        snprintf(err, errlen, "streams: cannot create a completion queue");
        return -1;
    }
    pthread_mutex_init(&s->st_mu, NULL);
    if (pthread_create(&s->st_thread, NULL, streams_main, s) != 0) {
        snprintf(err, errlen, "streams: cannot start a thread");
        return -1;
    }
    s->st_on = 1;
    /* After the thread: a failure here leaves no loop handle behind (free_unstarted
     * then stops the thread). Nothing reaches scq before the server starts. */
    int e = uv_async_init(s->loop, &s->st_async, on_streams);
    if (e < 0) {
        snprintf(err, errlen, "streams: %s", uv_strerror(e));
        return -1;
    }
    s->st_async.data = s;
    pthread_mutex_lock(&s->st_mu);
    s->st_async_on = 1;
    pthread_mutex_unlock(&s->st_mu);
    return 0;
}

/* The completion queue a call of `m` is bound to. */
static grpc_completion_queue *call_queue(srv_rpc *s, const srv_method *m) {
    return m && m->kind != SRV_UNARY ? s->scq : s->cq;
}

static void new_slot(srv_rpc *s, const srv_method *m, void *reg);

/* A call of a registered method was taken from one of its slots. A method that takes as
 * many calls in one turn as it has slots had calls waiting in gRPC core for a re-arm:
 * it gets one more slot, up to cfg.requests_per_method. Idle methods keep FIRST_SLOTS,
 * because every armed request costs every completion (see srv_rpc_start). A slot is
 * never taken back (gRPC core 1.51 cannot cancel a requested call): a method that was
 * busy once keeps its slots, so all methods' slots together stop at SLOT_BUDGET per
 * method, what they had before, whatever the traffic. */
static void note_taken(srv_rpc *s, const srv_slot *sl) {
    method_slots *ms = &s->ms[sl->m - s->methods];
    if (ms->turn != s->turns) {
        ms->turn = s->turns;
        ms->taken = 0;
    }
    if (++ms->taken >= ms->slots && ms->slots < s->cfg.requests_per_method &&
        s->method_slots_total < SLOT_BUDGET * s->n_methods)
        new_slot(s, sl->m, ms->reg);
}

static void dispatch(srv_rpc *s, grpc_event ev) {
    srv_tag *t = ev.tag;
    if (t->fn == on_slot && ev.success && ((srv_slot *)t)->m && !s->shutting_down) note_taken(s, (srv_slot *)t);
    if (t->fn == on_slot && ev.success && ((srv_slot *)t)->m && ((srv_slot *)t)->m->cq_handler &&
        fast_answer(s, (srv_slot *)t) == 0)
        return; /* answered without an srv_call */
    t->fn(t, ev.success);
}

void srv_rpc_run(srv_rpc *s) {
    enum { BATCH = 256 };
    uv_loop_t *loop = s->loop;
    for (;;) {
        __atomic_store_n(&s->uv_pending, 0, __ATOMIC_SEQ_CST);
        uv_run(loop, UV_RUN_NOWAIT); /* timers, Redis replies, writes the handlers queued */
        s->turns++;
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_time_0(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT) {
            /* Nothing from gRPC: block until gRPC or the loop has something. The waker is
             * armed only here, so a busy server (never blocked) never wakes it. */
            if (__atomic_exchange_n(&s->w_fired, 0, __ATOMIC_SEQ_CST) && waker_arm(s, EPOLL_CTL_MOD) < 0) {
                CC_ERROR("waker_failed", "reason=\"%s\"", strerror(errno));
                abort();
            }
            int ms = uv_loop_alive(loop) ? uv_backend_timeout(loop) : -1;
            __atomic_store_n(&s->blocked, 1, __ATOMIC_SEQ_CST);
            if (__atomic_load_n(&s->uv_pending, __ATOMIC_SEQ_CST)) ms = 0;
            gpr_timespec dl = ms < 0    ? gpr_inf_future(GPR_CLOCK_MONOTONIC)
                              : ms == 0 ? gpr_time_0(GPR_CLOCK_MONOTONIC)
                                        : gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                                       gpr_time_from_millis(ms, GPR_TIMESPAN));
            s->waits++;
            ev = grpc_completion_queue_next(s->cq, dl, NULL);
            __atomic_store_n(&s->blocked, 0, __ATOMIC_SEQ_CST);
        }
        /* The loop's clock (uv_now) moves only in uv_run: handlers that run now must not
         * see the time before the wait (rate limits, deadlines, Redis' clock estimate). */
        if (ev.type != GRPC_QUEUE_TIMEOUT) uv_update_time(loop);
        for (int n = 0; ev.type != GRPC_QUEUE_TIMEOUT;) {
            if (ev.type == GRPC_QUEUE_SHUTDOWN) {
                /* maybe_done closes the handles; the caller's uv_run finishes (and frees s). */
                s->cq_done = 1;
                maybe_done(s);
                return;
            }
            dispatch(s, ev);
            if (++n == BATCH) break;
            ev = grpc_completion_queue_next(s->cq, gpr_time_0(GPR_CLOCK_MONOTONIC), NULL);
        }
    }
}

/* ---- calls ---- */

/* Empties a request metadata array for reuse (MD_KEEP); its strings were the call's. */
static void md_recycle(grpc_metadata_array *md) {
    if (md->capacity > MD_KEEP) {
        grpc_metadata_array_destroy(md);
        grpc_metadata_array_init(md);
    }
    md->count = 0;
}

/* Discards the stream messages not yet handed to gRPC. */
static void drop_queue(srv_call *c) {
    while (c->q_head) {
        wq *w = c->q_head;
        c->q_head = w->next;
        grpc_byte_buffer_destroy(w->bb);
        free(w);
        c->n_queued--;
    }
    c->q_tail = NULL;
}

static void call_unref(srv_call *c) {
    if (--c->refs > 0) return;
    srv_rpc *s = c->s;
    if (c->in_list) {
        if (c->prev) c->prev->next = c->next; else s->calls = c->next;
        if (c->next) c->next->prev = c->prev;
    }
    s->stats.finished++;
    s->stats.active--;
    if (s->shutting_down && s->stats.active == 0) maybe_done(s);
    drop_queue(c);
    if (c->req) protobuf_c_message_free_unpacked(c->req, &c->alloc);
    if (c->recv_bb) grpc_byte_buffer_destroy(c->recv_bb);
    if (c->husk) grpc_byte_buffer_destroy(c->husk);
    for (size_t i = 0; i < c->n_trailers; i++) {
        grpc_slice_unref(c->trailers[i].key);
        grpc_slice_unref(c->trailers[i].value);
    }
    free(c->trailers);
    free(c->details);
    grpc_call_unref(c->call);
    if (s->n_free_calls < FREE_CALLS_MAX) {
        md_recycle(&c->md); /* kept for a slot to re-arm with (call_new) */
        c->next_free = s->free_calls;
        s->free_calls = c;
        s->n_free_calls++;
        /* All but the link: a use after the call ended is still caught in the ASan build. */
        CC_POISON(c, offsetof(srv_call, next_free));
        CC_POISON(c->arena_bytes, CALL_ARENA);
    } else {
        grpc_metadata_array_destroy(&c->md);
        free(c);
    }
}

static void start_batch(srv_call *c, grpc_op *ops, size_t n, srv_tag *tag) {
    c->refs++;
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, tag, NULL);
    if (e != GRPC_CALL_OK) {
        CC_ERROR("grpc_batch_failed", "method=%s error=%d", c->m ? c->m->path : "?", (int)e);
        c->refs--;
    }
}

static void send_status(srv_call *c);
static void alloc_trailers(srv_call *c);
static int is_unary(const srv_call *c);

/* A stream call's completion, counted by the queue it came on (grpc_loop_stats): all on
 * the streams' queue (streams_main), none on s->cq. */
static void count_stream_ev(srv_call *c) {
    if (!is_unary(c)) c->s->stream_ev[c->s->cur_q]++;
}

static void on_final(srv_tag *t, int ok) {
    srv_call *c = (srv_call *)((char *)t - offsetof(srv_call, t_final));
    count_stream_ev(c);
    call_unref(c);
}

static void fire_cancel(srv_call *c) {
    if (c->cancelled || c->handler_done) return;
    c->cancelled = 1;
    if (c->on_cancel) c->on_cancel(c);
}

static void on_close(srv_tag *t, int ok) {
    srv_call *c = (srv_call *)((char *)t - offsetof(srv_call, t_close));
    count_stream_ev(c);
    c->closed = 1;
    fire_cancel(c);
    call_unref(c);
}

static void write_next(srv_call *c);

static void on_write(srv_tag *t, int ok) {
    srv_call *c = (srv_call *)((char *)t - offsetof(srv_call, t_io));
    count_stream_ev(c);
    c->write_busy = 0;
    if (!ok) {
        drop_queue(c); /* the stream is broken */
        fire_cancel(c);
    }
    write_next(c);
    if (c->on_drain && !c->handler_done && c->n_queued + c->write_busy <= c->drain_at) {
        void (*cb)(srv_call *) = c->on_drain;
        c->on_drain = NULL;
        cb(c);
    }
    call_unref(c);
}

static void write_next(srv_call *c) {
    if (c->write_busy) return;
    if (c->q_head) {
        wq *w = c->q_head;
        c->q_head = w->next;
        if (!c->q_head) c->q_tail = NULL;
        grpc_op ops[2];
        size_t n = 0;
        memset(ops, 0, sizeof ops);
        if (!c->sent_initial_md) {
            ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
            n++;
            c->sent_initial_md = 1;
        }
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = w->bb;
        n++;
        c->write_busy = 1;
        c->t_io.fn = on_write;
        start_batch(c, ops, n, &c->t_io);
        grpc_byte_buffer_destroy(w->bb); /* the batch holds its own reference */
        free(w);
        c->n_queued--;
        return;
    }
    if (c->handler_done && !c->status_sent) send_status(c);
}

static int is_unary(const srv_call *c) { return !c->m || c->m->kind == SRV_UNARY; }

static void count_code(srv_call *c, grpc_status_code code) {
    srv_rpc *s = c->s;
    int m = c->m ? (int)(c->m - s->methods) : s->n_methods;
    if ((int)code < 0 || (int)code > 16) code = GRPC_STATUS_UNKNOWN;
    s->by_code[m * 17 + (int)code]++;
    if (s->cfg.on_call_end)
        s->cfg.on_call_end(s->app, m, code, (double)(uv_hrtime() - c->started_ns) / 1e9);
}

static void send_status(srv_call *c) {
    count_code(c, c->code);
    c->status_sent = 1;
    grpc_op ops[4];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (is_unary(c)) {
        ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        ops[n].data.recv_close_on_server.cancelled = &c->close_cancelled;
        n++;
    }
    if (!c->sent_initial_md) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->sent_initial_md = 1;
    }
    grpc_slice details = grpc_slice_from_copied_string(c->details ? c->details : "");
    if (c->code != GRPC_STATUS_OK && c->s->cfg.status_details && c->n_trailers <= MAX_TRAILERS) {
        grpc_slice d = c->s->cfg.status_details(c, c->code, c->details ? c->details : "");
        if (GRPC_SLICE_LENGTH(d)) {
            alloc_trailers(c);
            grpc_metadata *m = &c->trailers[c->n_trailers++];
            memset(m, 0, sizeof *m);
            m->key = grpc_slice_from_static_string("grpc-status-details-bin");
            m->value = d;
        } else {
            grpc_slice_unref(d);
        }
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = c->code;
    ops[n].data.send_status_from_server.status_details = &details;
    ops[n].data.send_status_from_server.trailing_metadata_count = c->n_trailers;
    ops[n].data.send_status_from_server.trailing_metadata = c->n_trailers ? c->trailers : NULL;
    n++;
    c->t_final.fn = on_final;
    start_batch(c, ops, n, &c->t_final);
    grpc_slice_unref(details);
}

static void alloc_trailers(srv_call *c) {
    if (c->trailers) return;
    c->trailers = calloc(MAX_TRAILERS + 1, sizeof *c->trailers);
    if (!c->trailers) abort();
}

static srv_call *call_new(srv_rpc *s, const srv_method *m, grpc_call *call, gpr_timespec deadline,
                          grpc_metadata_array *md) {
    srv_call *c = s->free_calls;
    grpc_metadata_array spare; /* for the slot: a finished call's emptied array, or a new one */
    grpc_metadata_array_init(&spare);
    if (c) {
        s->free_calls = c->next_free;
        s->n_free_calls--;
        CC_UNPOISON(c, offsetof(srv_call, arena));
        spare = c->md;
        memset(c, 0, offsetof(srv_call, arena)); /* the arena's bytes need no clearing */
    } else if (!(c = calloc(1, sizeof *c))) {
        abort();
    }
    cc_pb_arena_init(&c->arena, c->arena_bytes, CALL_ARENA, &c->alloc);
    c->s = s;
    c->m = m;
    c->call = call;
    c->md = *md;
    *md = spare;
    c->refs = 1; /* the handler's */
    gpr_timespec now = gpr_now(GPR_CLOCK_MONOTONIC);
    gpr_timespec dl = gpr_convert_clock_type(deadline, GPR_CLOCK_MONOTONIC);
    if (gpr_time_cmp(dl, gpr_inf_future(GPR_CLOCK_MONOTONIC)) == 0) {
        c->deadline_ms = UINT64_MAX;
    } else {
        gpr_timespec left = gpr_time_sub(dl, now);
        int64_t ms = left.tv_sec * 1000 + left.tv_nsec / 1000000;
        c->deadline_ms = uv_now(s->loop) + (uint64_t)(ms > 0 ? ms : 0);
    }
    c->next = s->calls;
    if (s->calls) s->calls->prev = c;
    s->calls = c;
    c->in_list = 1;
    s->stats.accepted++;
    s->stats.active++;
    if (s->cfg.on_call_start) {
        c->started_ns = uv_hrtime();
        s->cfg.on_call_start(s->app, m ? (int)(m - s->methods) : s->n_methods);
    }
    if (m && m->kind != SRV_UNARY) {
        /* Streams: RECV_CLOSE_ON_SERVER from the start, to learn of cancellation at
         * once. Unary calls fold it into their single final batch instead. */
        grpc_op op;
        memset(&op, 0, sizeof op);
        op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        op.data.recv_close_on_server.cancelled = &c->close_cancelled;
        c->t_close.fn = on_close;
        start_batch(c, &op, 1, &c->t_close);
    }
    return c;
}

/* ---- accepting calls ---- */

/* Decodes the payload with the configured function and `alloc` (NULL: malloc). A
 * payload in one slice (nearly all) is read where it is; only a split one is copied
 * into one flat slice first. */
static int srv_rpc_decode(srv_rpc *s, const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb,
                          ProtobufCAllocator *alloc, ProtobufCMessage **out, char *err, size_t errlen) {
    *out = NULL;
    cc_pb_span sp;
    if (cc_pb_span_open(&sp, bb) < 0) {
        snprintf(err, errlen, "request is not a valid %s message", desc->name);
        return -1;
    }
    int rc;
    if (s->cfg.decode) {
        rc = s->cfg.decode(desc, sp.len ? sp.data : NULL, sp.len, alloc, out, err, errlen);
    } else {
        static const uint8_t empty[1];
        *out = protobuf_c_message_unpack(desc, alloc, sp.len, sp.len ? sp.data : empty);
        rc = *out ? 0 : -1;
        if (rc < 0) snprintf(err, errlen, "request is not a valid %s message", desc->name);
    }
    cc_pb_span_close(&sp);
    return rc;
}

static void arm_slot(srv_slot *sl);

/* A request buffer whose slices can be swapped for a reply's: gRPC core hands a
 * registered method's message over as a raw, uncompressed buffer. */
static int reusable(const grpc_byte_buffer *bb) {
    return bb && bb->type == GRPC_BB_RAW && bb->data.raw.compression == GRPC_COMPRESS_NONE;
}

/* After decoding: a unary call keeps its request's buffer, emptied, and sends its reply
 * in it (srv_call_reply), as the echo server sends its request back: no buffer made and
 * freed per call. Streams do not keep it (it would stay for the stream's life). */
static void take_husk(srv_call *c, grpc_byte_buffer *bb) {
    if (!bb) return;
    if (c->m && c->m->kind == SRV_UNARY && reusable(bb)) {
        grpc_slice_buffer_reset_and_unref(&bb->data.raw.slice_buffer);
        c->husk = bb;
    } else {
        grpc_byte_buffer_destroy(bb);
    }
}

/* ---- fast calls: answered at once, without an srv_call ---- */

/* The slot's request headers as HPACK counts them (RFC 7541 4.1: name + value + 32 per
 * field), against cfg.max_metadata_bytes. */
static size_t md_bytes_of(const srv_slot *sl) {
    size_t n = 0;
    for (size_t i = 0; i < sl->md.count; i++)
        n += GRPC_SLICE_LENGTH(sl->md.metadata[i].key) + GRPC_SLICE_LENGTH(sl->md.metadata[i].value) + 32;
    return n;
}

/* The fast call's one batch is over. */
static void fast_end(srv_tag *t, int ok) {
    fcall *f = (fcall *)t;
    grpc_call_unref(f->call);
    f->call = NULL;
    f->next_free = f->s->free_fcalls;
    f->s->free_fcalls = f;
}

/* A slot whose request could not be armed again. Its method can no longer take
 * calls: the slot is freed here (nothing else points at it) and the process is told. */
static void slot_lost(srv_slot *sl) {
    srv_rpc *s = sl->s;
    if (sl->m) s->ms[sl->m - s->methods].slots--, s->method_slots_total--;
    grpc_metadata_array_destroy(&sl->md);
    grpc_call_details_destroy(&sl->details);
    s->open_slots--;
    free(sl);
    if (!s->shutting_down && s->cfg.on_fatal) s->cfg.on_fatal("cannot accept calls any more", s->cfg.fatal_payload);
    maybe_done(s);
}

/* The four ops of a unary call's OK answer: initial metadata, `msg`, status OK with
 * `details` (the caller's empty slice, alive until the batch starts), and the close
 * whose flag lands in *cancelled. */
static void ops_ok_reply(grpc_op ops[4], grpc_byte_buffer *msg, grpc_slice *details, int *cancelled) {
    memset(ops, 0, 4 * sizeof *ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = msg;
    ops[2].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[2].data.send_status_from_server.status = GRPC_STATUS_OK;
    ops[2].data.send_status_from_server.status_details = details;
    ops[3].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[3].data.recv_close_on_server.cancelled = cancelled;
}

/* Answers the call in slot `sl` with its method's cq_handler and re-arms the slot, or
 * returns -1 and leaves the slot untouched for on_slot (shutdown, headers too big, a
 * request that does not decode, or the handler declined). */
static int fast_answer(srv_rpc *s, srv_slot *sl) {
    if (s->shutting_down) return -1;
    uint64_t t0 = uv_hrtime();
    if (md_bytes_of(sl) > (size_t)s->cfg.max_metadata_bytes) return -1;
    char err[300];
    ProtobufCMessage *req;
    _Alignas(max_align_t) unsigned char bytes[CALL_ARENA]; /* a fast call's request lives on the stack */
    cc_pb_arena a;
    ProtobufCAllocator alloc;
    cc_pb_arena_init(&a, bytes, sizeof bytes, &alloc);
    if (srv_rpc_decode(s, sl->m->request, sl->payload, &alloc, &req, err, sizeof err) < 0) return -1;
    grpc_slice body;
    int answered = sl->m->cq_handler(req, s->app, &body);
    protobuf_c_message_free_unpacked(req, &alloc);
    if (!answered) return -1;
    /* The reply goes out in the request's own buffer, as the echo server sends its
     * request back: its slices are swapped for the reply's (no buffer made and freed per
     * call). */
    grpc_byte_buffer *reply = sl->payload;
    sl->payload = NULL;
    if (reusable(reply)) {
        grpc_slice_buffer_reset_and_unref(&reply->data.raw.slice_buffer);
        grpc_slice_buffer_add(&reply->data.raw.slice_buffer, body);
    } else {
        if (reply) grpc_byte_buffer_destroy(reply);
        reply = grpc_raw_byte_buffer_create(&body, 1);
        grpc_slice_unref(body);
    }

    fcall *f = s->free_fcalls;
    if (f) s->free_fcalls = f->next_free;
    else if (!(f = calloc(1, sizeof *f))) abort();
    f->tag.fn = fast_end;
    f->s = s;
    f->call = sl->call;
    f->cancelled = 0;
    sl->call = NULL;
    md_recycle(&sl->md);

    /* Counted before the answer leaves: a client that got it and then reads /metrics
     * sees it. */
    int mi = (int)(sl->m - s->methods);
    s->stats.accepted++;
    s->stats.finished++;
    s->by_code[mi * 17 + GRPC_STATUS_OK]++;
    if (s->cfg.on_call_start) s->cfg.on_call_start(s->app, mi);
    if (s->cfg.on_call_end) s->cfg.on_call_end(s->app, mi, GRPC_STATUS_OK, (double)(uv_hrtime() - t0) / 1e9);

    grpc_op ops[4];
    grpc_slice details = grpc_empty_slice();
    ops_ok_reply(ops, reply, &details, &f->cancelled);
    grpc_call_error e = grpc_call_start_batch(f->call, ops, 4, &f->tag, NULL);
    grpc_byte_buffer_destroy(reply);
    if (e != GRPC_CALL_OK) {
        CC_ERROR("grpc_batch_failed", "method=%s error=%d", sl->m->path, (int)e);
        fast_end(&f->tag, 0);
    }

    arm_slot(sl); /* may free sl (slot_lost): not touched after */
    return 0;
}

static void on_slot(srv_tag *t, int ok) {
    srv_slot *sl = (srv_slot *)t;
    srv_rpc *s = sl->s;
    if (!ok || s->shutting_down) {
        if (ok && sl->call) {
            /* Accepted during shutdown: refuse politely. */
            grpc_call_cancel_with_status(sl->call, GRPC_STATUS_UNAVAILABLE, "server shutting down", NULL);
            grpc_call_unref(sl->call);
        }
        if (sl->payload) grpc_byte_buffer_destroy(sl->payload);
        grpc_metadata_array_destroy(&sl->md);
        grpc_call_details_destroy(&sl->details);
        free(sl);
        s->open_slots--;
        maybe_done(s);
        return;
    }
    grpc_call *call = sl->call;
    grpc_byte_buffer *payload = sl->payload;
    const srv_method *m = sl->m;
    srv_call *c;
    size_t md_bytes = md_bytes_of(sl);
    if (md_bytes > (size_t)s->cfg.max_metadata_bytes) {
        c = call_new(s, m, call, m ? sl->deadline : sl->details.deadline, &sl->md);
        if (!m) {
            grpc_call_details_destroy(&sl->details);
            grpc_call_details_init(&sl->details);
        }
        sl->call = NULL;
        sl->payload = NULL;
        arm_slot(sl);
        if (payload) grpc_byte_buffer_destroy(payload);
        srv_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "metadata: %zu bytes of headers, at most %d per call",
                        md_bytes, s->cfg.max_metadata_bytes);
        return;
    }
    if (!m) {
        /* An unregistered method. */
        char path[256];
        size_t pl = GRPC_SLICE_LENGTH(sl->details.method);
        if (pl >= sizeof path) pl = sizeof path - 1;
        memcpy(path, GRPC_SLICE_START_PTR(sl->details.method), pl);
        path[pl] = '\0';
        c = call_new(s, NULL, call, sl->details.deadline, &sl->md);
        grpc_call_details_destroy(&sl->details);
        grpc_call_details_init(&sl->details);
        sl->call = NULL;
        arm_slot(sl);
        s->stats.unimplemented++;
        srv_call_finish(c, GRPC_STATUS_UNIMPLEMENTED, "unknown method %s", path);
        return;
    }
    c = call_new(s, m, call, sl->deadline, &sl->md);
    sl->call = NULL;
    sl->payload = NULL;
    arm_slot(sl);
    if (m->kind != SRV_BIDI_STREAM) {
        char err[300];
        int rc = srv_rpc_decode(s, m->request, payload, &c->alloc, &c->req, err, sizeof err);
        take_husk(c, payload);
        if (rc < 0) {
            srv_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "%s", err);
            return;
        }
    }
    m->handler(c);
}

static void arm_slot(srv_slot *sl) {
    srv_rpc *s = sl->s;
    grpc_call_error e;
    sl->tag.fn = on_slot;
    if (sl->m) {
        e = grpc_server_request_registered_call(s->server, sl->reg, &sl->call, &sl->deadline, &sl->md,
                                                sl->m->kind == SRV_BIDI_STREAM ? NULL : &sl->payload,
                                                call_queue(s, sl->m), s->cq, &sl->tag);
    } else {
        e = grpc_server_request_call(s->server, &sl->call, &sl->details, &sl->md, s->cq, s->cq, &sl->tag);
    }
    if (e != GRPC_CALL_OK) {
        CC_ERROR("grpc_request_call_failed", "method=%s error=%d", sl->m ? sl->m->path : "*", (int)e);
        slot_lost(sl);
    }
}

static void new_slot(srv_rpc *s, const srv_method *m, void *reg) {
    srv_slot *sl = calloc(1, sizeof *sl);
    if (!sl) abort();
    sl->s = s;
    sl->m = m;
    sl->reg = reg;
    grpc_metadata_array_init(&sl->md);
    grpc_call_details_init(&sl->details);
    s->open_slots++;
    if (m) s->ms[m - s->methods].slots++, s->method_slots_total++;
    arm_slot(sl);
}

/* Why `addr` cannot be bound, from the system (gRPC core only says it failed): binds a
 * socket of our own the way gRPC would, without SO_REUSEPORT. */
static void listen_reason(const char *addr, char *out, size_t len) {
    snprintf(out, len, "not a bindable HOST:PORT");
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof host) return;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    char *h = host;
    if (h[0] == '[' && h[strlen(h) - 1] == ']') h[strlen(h) - 1] = '\0', h++;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t sl;
    int port = atoi(colon + 1);
    if (port < 0 || port > 65535) return;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, h, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET, a4->sin_port = htons((uint16_t)port), sl = sizeof *a4;
    } else if (inet_pton(AF_INET6, h, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6, a6->sin6_port = htons((uint16_t)port), sl = sizeof *a6;
    } else {
        snprintf(out, len, "cannot resolve or bind host '%.100s'", h);
        return;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM, 0);
    if (fd < 0) {
        snprintf(out, len, "%s", strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0) snprintf(out, len, "%s", strerror(errno));
    else snprintf(out, len, "gRPC core refused the address");
    close(fd);
}

/* ---- --grpc-args: integer channel args over the server's own ---- */

#define MAX_GRPC_ARGS 16

typedef struct {
    char buf[1024]; /* the keys point in here */
    const char *key[MAX_GRPC_ARGS];
    int val[MAX_GRPC_ARGS];
    int n;
} grpc_args_spec;

/* "KEY=INT,KEY=INT": keys are gRPC core's names ("grpc.http2.bdp_probe"), values ints. */
static int parse_grpc_args(const char *spec, grpc_args_spec *out, char *err, size_t errlen) {
    out->n = 0;
    if (!spec || !*spec) return 0;
    if (strlen(spec) >= sizeof out->buf) {
        snprintf(err, errlen, "--grpc-args: longer than %zu characters", sizeof out->buf - 1);
        return -1;
    }
    strcpy(out->buf, spec);
    for (char *save = NULL, *item = strtok_r(out->buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (!eq || eq == item) {
            snprintf(err, errlen, "--grpc-args: '%s' is not KEY=INTEGER", item);
            return -1;
        }
        *eq = '\0';
        if (strncmp(item, "grpc.", 5) != 0 || strspn(item, "abcdefghijklmnopqrstuvwxyz0123456789._") != strlen(item)) {
            snprintf(err, errlen, "--grpc-args: '%s' is not a gRPC core channel arg name (grpc.<lowercase>)", item);
            return -1;
        }
        errno = 0;
        char *end = NULL;
        long v = strtol(eq + 1, &end, 10);
        if (errno || end == eq + 1 || *end || v < -2147483647L - 1 || v > 2147483647L) {
            snprintf(err, errlen, "--grpc-args: value of %s must be a 32-bit integer, got '%s'", item, eq + 1);
            return -1;
        }
        if (out->n == MAX_GRPC_ARGS) {
            snprintf(err, errlen, "--grpc-args: more than %d args", MAX_GRPC_ARGS);
            return -1;
        }
        out->key[out->n] = item;
        out->val[out->n] = (int)v;
        out->n++;
    }
    return 0;
}

int srv_rpc_check_grpc_args(const char *spec, char *err, size_t errlen) {
    grpc_args_spec g;
    return parse_grpc_args(spec, &g, err, errlen);
}

/* Frees a server that never started (no loop handles). */
static void free_unstarted(srv_rpc *s, void **regs) {
    waker_stop(s);
    if (s->scq) {
        grpc_completion_queue_shutdown(s->scq);
        if (s->st_on) {
            pthread_join(s->st_thread, NULL); /* it returns at the shutdown, signalling nothing */
        } else {
            while (grpc_completion_queue_next(s->scq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
                   GRPC_QUEUE_SHUTDOWN) {
            }
        }
        grpc_completion_queue_destroy(s->scq);
        pthread_mutex_destroy(&s->st_mu);
        free(s->st_ev);
    }
    if (s->server) grpc_server_destroy(s->server);
    if (s->cq) {
        grpc_completion_queue_shutdown(s->cq);
        while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type != GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(s->cq);
    }
    free(regs);
    free(s->by_code);
    free(s->ms);
    free(s);
}

int srv_rpc_start(srv_rpc **out, uv_loop_t *loop, const srv_rpc_config *cfg, const srv_method *methods,
                  int n_methods, void *app, int *bound_port) {
    srv_rpc *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->loop = loop;
    s->cfg = *cfg;
    if (s->cfg.requests_per_method <= 0) s->cfg.requests_per_method = 64;
    if (s->cfg.max_message_bytes <= 0) s->cfg.max_message_bytes = 1 << 20;
    if (s->cfg.max_metadata_bytes <= 0) s->cfg.max_metadata_bytes = 64 << 10;
    s->methods = methods;
    s->n_methods = n_methods;
    s->app = app;
    s->by_code = calloc((size_t)(n_methods + 1) * 17, sizeof *s->by_code);
    s->ms = calloc((size_t)n_methods + 1, sizeof *s->ms);
    if (!s->by_code || !s->ms) abort();
    s->w_ep = s->w_stop = -1;

    /* gRPC core turns SO_REUSEPORT on by default: a second server on a busy port would
     * silently share it. Only --reuse-port allows that.
     * Metadata: gRPC core 1.51 fails the whole connection (every call on it) when a
     * header block passes GRPC_ARG_MAX_METADATA_SIZE (default 8 KiB). So the transport
     * gets a generous hard limit and on_slot enforces max_metadata_bytes per call: a
     * call with bigger headers fails alone, its neighbours on the connection live on. */
    grpc_arg args[16 + MAX_GRPC_ARGS];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = s->cfg.max_message_bytes;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = (char *)GRPC_ARG_MAX_CONCURRENT_STREAMS;
    args[1].value.integer = 100000;
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = (char *)GRPC_ARG_ALLOW_REUSEPORT;
    args[2].value.integer = s->cfg.reuse_port ? 1 : 0;
    args[3].type = GRPC_ARG_INTEGER;
    args[3].key = (char *)GRPC_ARG_MAX_METADATA_SIZE;
    args[3].value.integer = s->cfg.max_metadata_bytes * 4 > (1 << 20) ? s->cfg.max_metadata_bytes * 4 : 1 << 20;
    /* Keepalive: a client that vanished without a FIN (host gone, process stopped, NAT
     * dropped) would hold its WatchQueueStatus streams for ever. The server PINGs each
     * connection after keepalive_time_ms of silence, also with no call open and with
     * no data sent in between; an unanswered PING closes the connection, which cancels
     * its calls. Clients' own keepalive PINGs are allowed down to every 10 s (gRPC's
     * default is 5 min: a client pinging every 30 s would be sent GOAWAY). */
    int n = 4;
    if (s->cfg.keepalive_time_ms >= 0) {
        int kt = s->cfg.keepalive_time_ms ? s->cfg.keepalive_time_ms : 60000;
        int kto = s->cfg.keepalive_timeout_ms > 0 ? s->cfg.keepalive_timeout_ms : 20000;
        const struct { const char *key; int v; } ka[] = {
            {GRPC_ARG_KEEPALIVE_TIME_MS, kt},
            {GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kto},
            {GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1},
            {GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0},
            {GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000},
            {GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2},
        };
        for (size_t i = 0; i < sizeof ka / sizeof ka[0]; i++) {
            args[n].type = GRPC_ARG_INTEGER;
            args[n].key = (char *)ka[i].key;
            args[n].value.integer = ka[i].v;
            n++;
        }
    }
    /* --grpc-args last: a key the server sets already gets the given value instead. */
    grpc_args_spec extra;
    char aerr[200];
    if (parse_grpc_args(s->cfg.grpc_args, &extra, aerr, sizeof aerr) < 0) {
        CC_ERROR("grpc_args_invalid", "reason=\"%s\"", aerr); /* srv_rpc_check_grpc_args first */
        if (cfg->creds) grpc_server_credentials_release(cfg->creds);
        free_unstarted(s, NULL);
        return -1;
    }
    for (int i = 0; i < extra.n; i++) {
        int j = 0;
        while (j < n && strcmp(args[j].key, extra.key[i]) != 0) j++;
        if (j == n) n++;
        args[j].type = GRPC_ARG_INTEGER;
        args[j].key = (char *)extra.key[i];
        args[j].value.integer = extra.val[i];
    }
    grpc_channel_args ca = {(size_t)n, args};
    s->server = grpc_server_create(&ca, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);
    void **regs = calloc((size_t)n_methods + 1, sizeof *regs);
    if (!regs) abort();
    for (int i = 0; i < n_methods; i++) {
        regs[i] = grpc_server_register_method(
            s->server, methods[i].path, NULL,
            methods[i].kind == SRV_BIDI_STREAM ? GRPC_SRM_PAYLOAD_NONE : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
            0);
        if (!regs[i]) {
            CC_ERROR("grpc_register_failed", "method=%s", methods[i].path);
            if (cfg->creds) grpc_server_credentials_release(cfg->creds); /* taken, as on success */
            free_unstarted(s, regs);
            return -1;
        }
    }
    grpc_server_credentials *creds = cfg->creds ? cfg->creds : grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(s->server, cfg->listen, creds);
    grpc_server_credentials_release(creds);
    if (port == 0) {
        char why[256];
        listen_reason(cfg->listen, why, sizeof why);
        CC_ERROR("listen_failed", "addr=%s reason=\"%s\"%s", cfg->listen, why,
                 s->cfg.reuse_port ? "" : " hint=\"another process holds the port? --reuse-port shares it\"");
        free_unstarted(s, regs);
        return -1;
    }
    char werr[200];
    if (waker_start(s, werr, sizeof werr) < 0 || streams_start(s, werr, sizeof werr) < 0) {
        CC_ERROR("grpc_start_failed", "reason=\"%s\"", werr);
        free_unstarted(s, regs);
        return -1;
    }
    grpc_server_start(s->server);
    uv_timer_init(loop, &s->grace);
    s->grace.data = s;
    /* FIRST_SLOTS armed requests per method, more only for a busy one (note_taken), not
     * requests_per_method each: every armed request costs every completion. gRPC 1.51
     * as Debian builds it (no NDEBUG) checks each completion's tag against a list of
     * every tag outstanding on the queue (cq_check_tag: a linear scan under the
     * queue's mutex, twice per unary call), and the armed requests of idle methods sit
     * at the list's head for good: 29 methods x 32 cost ~10,700 instructions per call.
     * A call that finds no armed request waits in gRPC core's queue of its method and
     * is handed over by the next re-arm (arm_slot runs as soon as a slot's call is
     * taken), which costs gRPC core a few locks more than an armed one: a busy method
     * therefore grows its slots (docs/PERFORMANCE.md "Server cost per call"). */
    for (int i = 0; i < n_methods; i++) {
        s->ms[i].reg = regs[i];
        int first = s->cfg.requests_per_method < FIRST_SLOTS ? s->cfg.requests_per_method : FIRST_SLOTS;
        for (int k = 0; k < first; k++) new_slot(s, &methods[i], regs[i]);
    }
    new_slot(s, NULL, NULL);
    new_slot(s, NULL, NULL);
    free(regs);
    *bound_port = port;
    *out = s;
    return 0;
}

/* ---- shutdown ---- */

static void on_closed_handle(uv_handle_t *h) {
    srv_rpc *s = h->data;
    if (--s->open_handles > 0) return;
    void (*done)(void *) = s->done;
    void *payload = s->done_payload;
    grpc_server_destroy(s->server);
    grpc_completion_queue_destroy(s->cq);
    grpc_completion_queue_destroy(s->scq);
    pthread_mutex_destroy(&s->st_mu);
    free(s->st_ev);
    free(s->st_spare);
    while (s->free_fcalls) {
        fcall *f = s->free_fcalls;
        s->free_fcalls = f->next_free;
        free(f);
    }
    while (s->free_calls) {
        srv_call *c = s->free_calls;
        s->free_calls = c->next_free;
        CC_UNPOISON(c, sizeof *c);
        grpc_metadata_array_destroy(&c->md);
        free(c);
    }
    free(s->by_code);
    free(s->ms);
    free(s);
    if (done) done(payload);
}

static void maybe_done(srv_rpc *s) {
    if (!s->shutting_down) return;
    if (s->stats.active == 0 && !s->server_done && !s->forced) {
        /* Our calls are over. gRPC core would also wait for every client connection to
         * close after its GOAWAY; a client that is not reading never does, so close
         * them now rather than at the end of the grace period. */
        s->forced = 1;
        grpc_server_cancel_all_calls(s->server);
    }
    if (s->server_done && !s->cq_done && s->open_slots == 0 && s->stats.active == 0) {
        if (!s->cq_closing) {
            s->cq_closing = 1;
            waker_stop(s); /* no bell may start on a queue that is shutting down */
            /* No call is left, so neither queue has a batch outstanding: the streams'
             * queue's shutdown reaches on_streams (streams_done), s->cq's srv_rpc_run. */
            grpc_completion_queue_shutdown(s->scq);
            grpc_completion_queue_shutdown(s->cq);
        }
        return;
    }
    if (s->cq_done == 1 && s->streams_done && !uv_is_closing((uv_handle_t *)&s->grace)) {
        uv_timer_stop(&s->grace);
        s->open_handles = 2;
        uv_close((uv_handle_t *)&s->grace, on_closed_handle);
        uv_close((uv_handle_t *)&s->st_async, on_closed_handle);
    }
}

static void on_server_shutdown(srv_tag *t, int ok) {
    srv_rpc *s = (srv_rpc *)((char *)t - offsetof(srv_rpc, t_shutdown));
    s->server_done = 1;
    CC_INFO("grpc_server_drained", NULL);
    maybe_done(s);
}

static void on_grace(uv_timer_t *t) {
    srv_rpc *s = t->data;
    CC_WARN("shutdown_grace_expired", "active_calls=%llu", (unsigned long long)s->stats.active);
    grpc_server_cancel_all_calls(s->server);
}

void srv_rpc_shutdown(srv_rpc *s, uint64_t grace_ms, void (*done)(void *), void *payload) {
    if (s->shutting_down) return;
    s->shutting_down = 1;
    s->done = done;
    s->done_payload = payload;
    s->t_shutdown.fn = on_server_shutdown;
    grpc_server_shutdown_and_notify(s->server, s->cq, &s->t_shutdown);
    /* Streams end now (clients retry elsewhere); unary calls get the grace period. */
    for (srv_call *c = s->calls; c; c = c->next)
        if (c->m && c->m->kind != SRV_UNARY) fire_cancel(c);
    uv_timer_start(&s->grace, on_grace, grace_ms, 0);
    maybe_done(s);
}

/* ---- per-call API ---- */

void *srv_call_app(const srv_call *c) { return c->s->app; }
const srv_method *srv_call_method(const srv_call *c) { return c->m; }
const ProtobufCMessage *srv_call_request(const srv_call *c) { return c->req; }
uint64_t srv_call_deadline_ms(const srv_call *c) { return c->deadline_ms; }
void srv_call_set_data(srv_call *c, void *data) { c->data = data; }
void *srv_call_data(const srv_call *c) { return c->data; }
int srv_call_is_cancelled(const srv_call *c) { return c->cancelled; }
int srv_call_pending_writes(const srv_call *c) { return c->n_queued + c->write_busy; }
void srv_call_on_cancel(srv_call *c, void (*cb)(srv_call *c)) { c->on_cancel = cb; }

void srv_call_on_drain(srv_call *c, int at, void (*cb)(srv_call *c)) {
    c->drain_at = at;
    c->on_drain = cb;
}

void srv_call_drop_metadata(srv_call *c) {
    grpc_metadata_array_destroy(&c->md);
    grpc_metadata_array_init(&c->md);
}

const char *srv_call_metadata(const srv_call *c, const char *key, size_t *len) {
    size_t kl = strlen(key);
    for (size_t i = 0; i < c->md.count; i++) {
        const grpc_metadata *m = &c->md.metadata[i];
        if (GRPC_SLICE_LENGTH(m->key) == kl && !memcmp(GRPC_SLICE_START_PTR(m->key), key, kl)) {
            *len = GRPC_SLICE_LENGTH(m->value);
            return (const char *)GRPC_SLICE_START_PTR(m->value);
        }
    }
    return NULL;
}

void srv_call_peer_addr(const srv_call *c, char *out, size_t len) {
    if (!len) return;
    out[0] = '\0';
    char *peer = grpc_call_get_peer(c->call);
    if (!peer) return;
    /* "ipv4:127.0.0.1:5000", "ipv6:[::1]:5000", "unix:/path" */
    const char *p = strchr(peer, ':');
    p = p ? p + 1 : peer;
    size_t n = strlen(p);
    const char *colon = strrchr(p, ':');
    if (!strncmp(peer, "ipv", 3) && colon) n = (size_t)(colon - p);
    if (n && p[0] == '[' && p[n - 1] == ']') p++, n -= 2;
    if (n >= len) n = len - 1;
    memcpy(out, p, n);
    out[n] = '\0';
    gpr_free(peer);
}

void srv_call_add_trailer(srv_call *c, const char *key, const char *value) {
    if (c->n_trailers >= MAX_TRAILERS) return;
    alloc_trailers(c);
    grpc_metadata *m = &c->trailers[c->n_trailers++];
    memset(m, 0, sizeof *m);
    m->key = grpc_slice_from_copied_string(key);
    m->value = grpc_slice_from_copied_string(value);
}

const char *srv_call_trailer(const srv_call *c, const char *key, size_t *len) {
    size_t kl = strlen(key);
    for (size_t i = 0; i < c->n_trailers; i++) {
        const grpc_metadata *m = &c->trailers[i];
        if (GRPC_SLICE_LENGTH(m->key) == kl && !memcmp(GRPC_SLICE_START_PTR(m->key), key, kl)) {
            *len = GRPC_SLICE_LENGTH(m->value);
            return (const char *)GRPC_SLICE_START_PTR(m->value);
        }
    }
    return NULL;
}

/* Makes `s` valid UTF-8 in place: a sequence cut at the end (a %.Ns) is dropped, any
 * other invalid byte becomes '?'. Clients decode status messages as UTF-8. */
static void utf8_clean(char *s) {
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        size_t n = *p < 0x80 ? 1 : (*p & 0xe0) == 0xc0 ? 2 : (*p & 0xf0) == 0xe0 ? 3 : (*p & 0xf8) == 0xf0 ? 4 : 0;
        unsigned cp = n == 2 ? *p & 0x1fu : n == 3 ? *p & 0x0fu : *p & 0x07u;
        size_t i = 1;
        for (; n > 1 && i < n && (p[i] & 0xc0) == 0x80; i++) cp = cp << 6 | (p[i] & 0x3fu);
        int ok = n == 1 || (n > 1 && i == n && !(n == 2 && cp < 0x80) && !(n == 3 && cp < 0x800) &&
                            !(n == 4 && (cp < 0x10000 || cp > 0x10ffff)) && !(cp >= 0xd800 && cp <= 0xdfff));
        if (ok) p += n;
        else if (n > 1 && !p[i]) *p = '\0'; /* cut short at the end */
        else *p++ = '?';
    }
}

/* Answers OK with `bb`, which gRPC core empties (it takes the slices out of the buffer
 * it sends); the caller destroys the husk. */
static void reply_emptying(srv_call *c, grpc_byte_buffer *bb) {
    c->handler_done = 1;
    c->status_sent = 1;
    c->sent_initial_md = 1;
    count_code(c, GRPC_STATUS_OK);
    grpc_op ops[4];
    grpc_slice details = grpc_empty_slice();
    ops_ok_reply(ops, bb, &details, &c->close_cancelled);
    c->t_final.fn = on_final;
    start_batch(c, ops, 4, &c->t_final);
    call_unref(c); /* the handler's reference */
}

void srv_call_reply(srv_call *c, const ProtobufCMessage *msg) {
    if (c->handler_done) return;
    grpc_byte_buffer *bb = c->husk; /* ours alone: no copy needed */
    c->husk = NULL;
    if (bb) {
        grpc_slice s = grpc_slice_malloc(protobuf_c_message_get_packed_size(msg));
        protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
        grpc_slice_buffer_add(&bb->data.raw.slice_buffer, s);
    } else {
        bb = cc_pb_pack(msg);
    }
    reply_emptying(c, bb);
    grpc_byte_buffer_destroy(bb);
}

void srv_call_reply_raw(srv_call *c, grpc_byte_buffer *bb) {
    if (c->handler_done) return;
    /* Give gRPC core a copy (slice references, not bytes) so that a cached reply stays
     * whole: in the request's buffer when the call kept it. */
    grpc_byte_buffer *cp = c->husk;
    c->husk = NULL;
    if (cp && reusable(bb)) {
        for (size_t i = 0; i < bb->data.raw.slice_buffer.count; i++)
            grpc_slice_buffer_add(&cp->data.raw.slice_buffer, grpc_slice_ref(bb->data.raw.slice_buffer.slices[i]));
    } else {
        if (cp) grpc_byte_buffer_destroy(cp);
        cp = grpc_byte_buffer_copy(bb);
    }
    reply_emptying(c, cp);
    grpc_byte_buffer_destroy(cp);
}

void srv_call_finish(srv_call *c, grpc_status_code code, const char *fmt, ...) {
    if (c->handler_done) return;
    c->handler_done = 1;
    c->code = code;
    if (fmt) {
        char buf[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        utf8_clean(buf);
        c->details = strdup(buf);
    }
    if (code != GRPC_STATUS_OK) drop_queue(c); /* errors discard queued stream messages */
    write_next(c);
    call_unref(c);
}

int srv_call_send_raw(srv_call *c, grpc_byte_buffer *bb) {
    if (c->handler_done || c->cancelled) {
        grpc_byte_buffer_destroy(bb);
        return -1;
    }
    wq *w = malloc(sizeof *w);
    if (!w) abort();
    w->bb = bb;
    w->next = NULL;
    if (c->q_tail) c->q_tail->next = w; else c->q_head = w;
    c->q_tail = w;
    c->n_queued++;
    write_next(c);
    return 0;
}

int srv_call_send(srv_call *c, const ProtobufCMessage *msg) {
    return srv_call_send_raw(c, cc_pb_pack(msg));
}

static void on_recv(srv_tag *t, int ok) {
    srv_call *c = (srv_call *)((char *)t - offsetof(srv_call, t_recv));
    count_stream_ev(c);
    /* Take the message out of the call before the callback runs: the callback may
     * re-arm the receive into c->recv_bb at once, and gRPC core fills that pointer from
     * its own thread when the next message arrives. */
    grpc_byte_buffer *bb = c->recv_bb;
    c->recv_bb = NULL;
    void (*cb)(srv_call *, grpc_byte_buffer *) = c->on_recv;
    c->on_recv = NULL;
    if (!c->handler_done) cb(c, ok ? bb : NULL);
    if (bb) grpc_byte_buffer_destroy(bb);
    call_unref(c);
}

void srv_call_recv(srv_call *c, void (*cb)(srv_call *c, grpc_byte_buffer *bb)) {
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (!c->sent_initial_md) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->sent_initial_md = 1;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n].data.recv_message.recv_message = &c->recv_bb;
    n++;
    c->on_recv = cb;
    c->t_recv.fn = on_recv;
    start_batch(c, ops, n, &c->t_recv);
}

int srv_call_decode(srv_call *c, const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb,
                    ProtobufCMessage **out, char *err, size_t errlen) {
    return srv_rpc_decode(c->s, desc, bb, NULL, out, err, errlen); /* malloc: the caller frees it */
}

void srv_rpc_get_stats(const srv_rpc *s, srv_rpc_stats *out) {
    *out = s->stats;
}

uint64_t srv_rpc_calls(const srv_rpc *s, int method, grpc_status_code code) {
    if (method < 0 || method > s->n_methods || (int)code < 0 || (int)code > 16) return 0;
    return s->by_code[method * 17 + (int)code];
}
