/* bench_engine: see bench_engine.h.
 *
 * Tags: every batch carries a pointer to a `btag` embedded in its user; the worker
 * calls tag->fn. A unary call is one batch of six ops (one completion). A stream has
 * three batches in flight at once (start, status, one RECV_MESSAGE re-armed after
 * each message); it is over when all three have completed.
 *
 * Statistics: a worker records into its `cur` interval under its mutex (uncontended
 * but for one swap per second); once a second the control thread swaps `cur` with
 * `spare` and merges the spare outside the lock. Nothing is recorded after the stop
 * flag is set, so the measured window ends exactly at the last tick. */
#include "bench_engine.h"

#include <grpc/byte_buffer.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cc_client.h"
#include <time.h>
#include <unistd.h>

#define NS_PER_S UINT64_C(1000000000)
#define STOP_DRAIN_MAX_S 15 /* cancelled calls come back at once; this is a safety net */

typedef struct worker worker;

typedef struct btag {
    void (*fn)(worker *w, struct btag *t, int ok);
} btag;

struct bench_user {
    worker *w;
    uint64_t id;
    int ch;
    int busy;
    int retired;
    int stream;
    int method;
    int pending;   /* stream batches in flight */
    int got_first; /* stream: first message seen */
    uint64_t t_sched;
    grpc_call *call;
    grpc_metadata_array init_md, trail_md;
    grpc_metadata send_md[2]; /* bench_user_metadata: for the next call, kept until it ends */
    int n_send_md;
    grpc_byte_buffer *resp;
    grpc_status_code code;
    grpc_slice details;
    btag t_main, t_status, t_msg;
    void *data;
    bench_user *next_idle;
    uint64_t wake_at; /* bench_user_wake_at: asleep until then (0: not asleep) */
};

typedef struct {
    bench_hist h[BENCH_MAX_METHODS];
    uint64_t codes[BENCH_MAX_METHODS][BENCH_N_CODES];
    uint64_t messages[BENCH_MAX_METHODS];
} interval;

typedef struct {
    char path[160];
    char label[48];
    int stream;
    void *reg[BENCH_MAX_CHANNELS];
} method_reg;

struct bench_engine {
    bench_engine_config cfg;
    char target[256];
    grpc_channel *ch[BENCH_MAX_CHANNELS];
    int n_ch;
    method_reg m[BENCH_MAX_METHODS];
    int n_m;
    atomic_int stop;
};

struct worker {
    bench_engine *e;
    const bench_phase *ph;
    int index;
    pthread_t th;
    int started;
    grpc_completion_queue *cq;
    bench_user *users;
    size_t n_users;
    size_t active_users; /* not retired */
    char *udata;
    bench_user *idle_head, *idle_tail;
    bench_user *def_head, *def_tail; /* users that said "not now" */
    bench_user **sleep;              /* users that said "not before T": a min-heap on wake_at */
    size_t n_sleep;
    int inflight;
    int conc;
    int open;
    int stopping;
    uint64_t t0;
    double interval_ns;
    uint64_t next_k;
    uint64_t late;
    uint64_t open_at_end[BENCH_MAX_METHODS];
    pthread_mutex_t mu;
    interval *cur, *spare;
    atomic_long streams_open;
    atomic_int done;
};

uint64_t bench_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static gpr_timespec in_ns(uint64_t ns) {
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_nanos((int64_t)ns, GPR_TIMESPAN));
}

grpc_slice bench_pack(const ProtobufCMessage *msg) {
    size_t n = protobuf_c_message_get_packed_size(msg);
    grpc_slice s = grpc_slice_malloc(n);
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
    return s;
}

/* ---- engine ---- */

int bench_engine_new(bench_engine **out, const bench_engine_config *cfg, char *err, size_t errlen) {
    bench_engine *e = calloc(1, sizeof *e);
    if (!e) abort();
    e->cfg = *cfg;
    if (e->cfg.channels <= 0) e->cfg.channels = 4;
    if (e->cfg.threads <= 0) e->cfg.threads = 1;
    if (e->cfg.timeout_ms <= 0) e->cfg.timeout_ms = 10000;
    if (e->cfg.channels > BENCH_MAX_CHANNELS || e->cfg.threads > BENCH_MAX_THREADS) {
        snprintf(err, errlen, "at most %d channels and %d threads", BENCH_MAX_CHANNELS, BENCH_MAX_THREADS);
        free(e);
        return -1;
    }
    snprintf(e->target, sizeof e->target, "%s", cfg->target);
    grpc_init();
    grpc_channel_credentials *creds = cc_client_credentials(cfg->tls, err, errlen);
    if (!creds) {
        grpc_shutdown();
        free(e);
        return -1;
    }
    for (int i = 0; i < e->cfg.channels; i++) {
        /* A distinct argument per channel plus a local subchannel pool: no two channels
         * share a subchannel, so each is its own TCP connection. Retries off: a bench
         * must see every failure, not have the library hide it. */
        grpc_arg args[5];
        memset(args, 0, sizeof args);
        args[0].type = GRPC_ARG_INTEGER;
        args[0].key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL;
        args[0].value.integer = 1;
        args[1].type = GRPC_ARG_INTEGER;
        args[1].key = (char *)"concert.bench.channel_id";
        args[1].value.integer = i;
        args[2].type = GRPC_ARG_INTEGER;
        args[2].key = (char *)GRPC_ARG_ENABLE_RETRIES;
        args[2].value.integer = 0;
        args[3].type = GRPC_ARG_INTEGER;
        args[3].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
        args[3].value.integer = 16 << 20;
        grpc_channel_args ca = {4, args};
        if (cfg->tls && cc_tls_given(cfg->tls->server_name))
            args[ca.num_args++] = (grpc_arg){.type = GRPC_ARG_STRING, .key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
                                             .value.string = (char *)cfg->tls->server_name};
        e->ch[i] = grpc_channel_create(e->target, creds, &ca);
        if (!e->ch[i]) {
            snprintf(err, errlen, "cannot create a channel to %s", e->target);
            grpc_channel_credentials_release(creds);
            e->n_ch = i;
            bench_engine_free(e);
            return -1;
        }
        e->n_ch = i + 1;
    }
    grpc_channel_credentials_release(creds);
    *out = e;
    return 0;
}

void bench_engine_free(bench_engine *e) {
    if (!e) return;
    for (int i = 0; i < e->n_ch; i++) grpc_channel_destroy(e->ch[i]);
    free(e);
    grpc_shutdown();
}

int bench_engine_connect(bench_engine *e, int timeout_ms, char *err, size_t errlen) {
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    uint64_t end = bench_now_ns() + (uint64_t)timeout_ms * 1000000u;
    int rc = 0;
    for (int i = 0; i < e->n_ch && rc == 0; i++) {
        for (int round = 0;; round++) {
            grpc_connectivity_state st = grpc_channel_check_connectivity_state(e->ch[i], 1);
            if (st == GRPC_CHANNEL_READY) break;
            uint64_t now = bench_now_ns();
            if (now >= end || round > 10000) {
                snprintf(err, errlen, "cannot connect to %s within %d ms (is concert-server running there?)",
                         e->target, timeout_ms);
                rc = -1;
                break;
            }
            /* Wake on a state change or after 100 ms, whichever is first. */
            uint64_t wait = end - now < 100000000u ? end - now : 100000000u;
            grpc_channel_watch_connectivity_state(e->ch[i], st, in_ns(wait), cq, NULL);
            grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        }
    }
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type != GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
    return rc;
}

int bench_engine_method(bench_engine *e, const char *path, const char *label, int stream) {
    for (int i = 0; i < e->n_m; i++)
        if (!strcmp(e->m[i].path, path)) return i;
    if (e->n_m >= BENCH_MAX_METHODS) return -1;
    method_reg *m = &e->m[e->n_m];
    snprintf(m->path, sizeof m->path, "%s", path);
    snprintf(m->label, sizeof m->label, "%s", label);
    m->stream = stream;
    for (int c = 0; c < e->n_ch; c++) m->reg[c] = grpc_channel_register_call(e->ch[c], m->path, NULL, NULL);
    return e->n_m++;
}

/* ---- user accessors ---- */

void *bench_user_data(bench_user *u) { return u->data; }
void *bench_user_payload(const bench_user *u) { return u->w->ph->payload; }
uint64_t bench_user_id(const bench_user *u) { return u->id; }

/* ---- recording (worker thread) ---- */

static int recording(const worker *w) {
    return !w->stopping && !atomic_load_explicit(&w->e->stop, memory_order_relaxed);
}

static void record_unary(worker *w, int m, uint64_t ns, grpc_status_code code) {
    if (!recording(w)) return;
    int c = (int)code >= 0 && (int)code < BENCH_N_CODES ? (int)code : GRPC_STATUS_UNKNOWN;
    pthread_mutex_lock(&w->mu);
    bench_hist_record(&w->cur->h[m], ns);
    w->cur->codes[m][c]++;
    pthread_mutex_unlock(&w->mu);
}

static void record_first_message(worker *w, int m, uint64_t ns) {
    if (!recording(w)) return;
    pthread_mutex_lock(&w->mu);
    bench_hist_record(&w->cur->h[m], ns);
    w->cur->messages[m]++;
    pthread_mutex_unlock(&w->mu);
}

static void record_message(worker *w, int m) {
    if (!recording(w)) return;
    pthread_mutex_lock(&w->mu);
    w->cur->messages[m]++;
    pthread_mutex_unlock(&w->mu);
}

static void record_stream_end(worker *w, int m, grpc_status_code code) {
    if (!recording(w)) return;
    int c = (int)code >= 0 && (int)code < BENCH_N_CODES ? (int)code : GRPC_STATUS_UNKNOWN;
    pthread_mutex_lock(&w->mu);
    w->cur->codes[m][c]++;
    pthread_mutex_unlock(&w->mu);
}

/* ---- idle line ---- */

static void push_idle(worker *w, bench_user *u) {
    u->next_idle = NULL;
    if (w->idle_tail) w->idle_tail->next_idle = u;
    else w->idle_head = u;
    w->idle_tail = u;
}

static bench_user *pop_idle(worker *w) {
    bench_user *u = w->idle_head;
    if (!u) return NULL;
    w->idle_head = u->next_idle;
    if (!w->idle_head) w->idle_tail = NULL;
    u->next_idle = NULL;
    return u;
}

static void push_deferred(worker *w, bench_user *u) {
    u->next_idle = NULL;
    if (w->def_tail) w->def_tail->next_idle = u;
    else w->def_head = u;
    w->def_tail = u;
}

/* The next user to ask: the idle line first; then, once per turn, the head of the
 * deferred line (a deferred user is only retried when nobody else is waiting, so users
 * that can go never starve behind users that cannot). */
static bench_user *pop_next(worker *w, int *deferred_tried) {
    bench_user *u = pop_idle(w);
    if (u || *deferred_tried || !w->def_head) return u;
    *deferred_tried = 1;
    u = w->def_head;
    w->def_head = u->next_idle;
    if (!w->def_head) w->def_tail = NULL;
    u->next_idle = NULL;
    return u;
}

/* ---- sleeping users (bench_user_wake_at) ---- */

static void sleep_push(worker *w, bench_user *u) {
    size_t i = w->n_sleep++;
    w->sleep[i] = u; /* the array holds every user at most once: sized n_users */
    while (i > 0 && w->sleep[(i - 1) / 2]->wake_at > u->wake_at) {
        w->sleep[i] = w->sleep[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->sleep[i] = u;
}

static bench_user *sleep_pop(worker *w) {
    bench_user *top = w->sleep[0], *last = w->sleep[--w->n_sleep];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= w->n_sleep) break;
        if (c + 1 < w->n_sleep && w->sleep[c + 1]->wake_at < w->sleep[c]->wake_at) c++;
        if (w->sleep[c]->wake_at >= last->wake_at) break;
        w->sleep[i] = w->sleep[c];
        i = c;
    }
    if (w->n_sleep) w->sleep[i] = last;
    return top;
}

/* Users whose time has come go back to the idle line. */
static void wake_due(worker *w) {
    uint64_t now = bench_now_ns();
    while (w->n_sleep && w->sleep[0]->wake_at <= now) {
        bench_user *u = sleep_pop(w);
        u->wake_at = 0;
        push_idle(w, u);
    }
}

void bench_user_wake_at(bench_user *u, uint64_t ns) { u->wake_at = ns ? ns : 1; }

/* Asks the scenario for the user's next call: 0 started, 1 deferred (back in the idle
 * line, or asleep until its wake time), -1 retired. */
static int start_next(worker *w, bench_user *u) {
    u->wake_at = 0;
    int rc = w->ph->ops->next(u);
    if (rc == 0 && u->busy) return 0;
    if (rc == 1 && !u->busy) {
        if (u->wake_at && w->sleep) sleep_push(w, u);
        else push_deferred(w, u);
        return 1;
    }
    u->retired = 1;
    w->active_users--;
    return -1;
}

/* Closed loop: fills the free slots with idle users. Bounded by the idle line; stops
 * at the first deferral (asked again on the next loop turn). */
static void refill(worker *w) {
    int deferred_tried = 0;
    while (!w->stopping && w->inflight < w->conc) {
        bench_user *u = pop_next(w, &deferred_tried);
        if (!u) break;
        u->t_sched = bench_now_ns();
        start_next(w, u);
    }
}

/* Open loop: starts every call whose scheduled time has come, while users are idle. */
static void send_due(worker *w) {
    uint64_t now = bench_now_ns();
    int deferred_tried = 0;
    while (!w->stopping) {
        uint64_t due = w->t0 + (uint64_t)((double)w->next_k * w->interval_ns);
        if (due > now) break;
        bench_user *u = pop_next(w, &deferred_tried);
        if (!u) break; /* every user busy: the call waits, its clock is already running */
        u->t_sched = due;
        if (start_next(w, u) == 0) w->next_k++;
    }
}

static void user_finished(worker *w, bench_user *u) {
    if (w->stopping) return;
    push_idle(w, u);
    if (!w->open) refill(w);
}

static void call_cleanup(bench_user *u) {
    if (u->resp) grpc_byte_buffer_destroy(u->resp);
    u->resp = NULL;
    grpc_slice_unref(u->details);
    u->details = grpc_empty_slice();
    grpc_metadata_array_destroy(&u->init_md);
    grpc_metadata_array_destroy(&u->trail_md);
    for (int i = 0; i < u->n_send_md; i++) {
        grpc_slice_unref(u->send_md[i].key);
        grpc_slice_unref(u->send_md[i].value);
    }
    u->n_send_md = 0;
    if (u->call) grpc_call_unref(u->call);
    u->call = NULL;
}

int bench_user_metadata(bench_user *u, const char *key, const char *value) {
    if (u->busy || u->n_send_md >= (int)(sizeof u->send_md / sizeof u->send_md[0])) return -1;
    grpc_metadata *m = &u->send_md[u->n_send_md++];
    memset(m, 0, sizeof *m);
    m->key = grpc_slice_from_copied_string(key);
    m->value = grpc_slice_from_copied_string(value);
    return 0;
}

/* ---- unary calls ---- */

static void on_unary(worker *w, btag *t, int ok) {
    bench_user *u = (bench_user *)((char *)t - offsetof(bench_user, t_main));
    uint64_t now = bench_now_ns();
    grpc_status_code code = ok ? u->code : GRPC_STATUS_UNKNOWN;
    int m = u->method;
    u->busy = 0;
    w->inflight--;
    if (!w->stopping) {
        record_unary(w, m, now - u->t_sched, code);
        if (w->ph->ops->unary_done) w->ph->ops->unary_done(u, m, code, code == GRPC_STATUS_OK ? u->resp : NULL);
    }
    call_cleanup(u);
    user_finished(w, u);
}

static grpc_call *new_call(bench_user *u, int method, gpr_timespec deadline) {
    bench_engine *e = u->w->e;
    if (method < 0 || method >= e->n_m) return NULL;
    return grpc_channel_create_registered_call(e->ch[u->ch], NULL, GRPC_PROPAGATE_DEFAULTS, u->w->cq,
                                               e->m[method].reg[u->ch], deadline, NULL);
}

int bench_user_unary(bench_user *u, int method, grpc_slice req) {
    worker *w = u->w;
    if (u->busy) return -1;
    u->call = new_call(u, method, in_ns((uint64_t)w->e->cfg.timeout_ms * 1000000u));
    if (!u->call) return -1;
    grpc_metadata_array_init(&u->init_md);
    grpc_metadata_array_init(&u->trail_md);
    u->resp = NULL;
    u->details = grpc_empty_slice();
    u->code = GRPC_STATUS_UNKNOWN;
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&req, 1);
    grpc_op ops[6];
    size_t n = cc_ops_request(ops, u->send_md, (size_t)u->n_send_md, bb, &u->init_md);
    n += cc_ops_unary_reply(ops + n, &u->resp, &u->trail_md, &u->code, &u->details);
    u->t_main.fn = on_unary;
    grpc_call_error ce = grpc_call_start_batch(u->call, ops, n, &u->t_main, NULL);
    grpc_byte_buffer_destroy(bb);
    if (ce != GRPC_CALL_OK) {
        call_cleanup(u);
        return -1;
    }
    u->busy = 1;
    u->stream = 0;
    u->method = method;
    w->inflight++;
    return 0;
}

/* ---- server streams ---- */

static void stream_maybe_done(worker *w, bench_user *u) {
    if (u->pending > 0) return;
    if (u->got_first) atomic_fetch_sub(&w->streams_open, 1);
    int m = u->method;
    grpc_status_code code = u->code;
    u->busy = 0;
    w->inflight--;
    if (!w->stopping) {
        record_stream_end(w, m, code);
        if (w->ph->ops->stream_end) w->ph->ops->stream_end(u, m, code);
    }
    call_cleanup(u);
    user_finished(w, u);
}

static int arm_recv(bench_user *u) {
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &u->resp;
    if (grpc_call_start_batch(u->call, &op, 1, &u->t_msg, NULL) != GRPC_CALL_OK) return -1;
    u->pending++;
    return 0;
}

static void on_stream_start(worker *w, btag *t, int ok) {
    bench_user *u = (bench_user *)((char *)t - offsetof(bench_user, t_main));
    u->pending--;
    stream_maybe_done(w, u);
}

static void on_stream_status(worker *w, btag *t, int ok) {
    bench_user *u = (bench_user *)((char *)t - offsetof(bench_user, t_status));
    if (!ok) u->code = GRPC_STATUS_UNKNOWN;
    u->pending--;
    stream_maybe_done(w, u);
}

static void on_stream_msg(worker *w, btag *t, int ok) {
    bench_user *u = (bench_user *)((char *)t - offsetof(bench_user, t_msg));
    grpc_byte_buffer *bb = u->resp;
    u->resp = NULL;
    u->pending--;
    if (ok && bb) {
        if (!u->got_first) {
            u->got_first = 1;
            atomic_fetch_add(&w->streams_open, 1);
            record_first_message(w, u->method, bench_now_ns() - u->t_sched);
        } else {
            record_message(w, u->method);
        }
        if (!w->stopping && w->ph->ops->stream_msg) w->ph->ops->stream_msg(u, u->method, bb);
        if (!w->stopping) arm_recv(u);
    }
    if (bb) grpc_byte_buffer_destroy(bb);
    stream_maybe_done(w, u);
}

int bench_user_stream(bench_user *u, int method, grpc_slice req) {
    worker *w = u->w;
    if (u->busy) return -1;
    u->call = new_call(u, method, gpr_inf_future(GPR_CLOCK_MONOTONIC));
    if (!u->call) return -1;
    grpc_metadata_array_init(&u->init_md);
    grpc_metadata_array_init(&u->trail_md);
    u->resp = NULL;
    u->details = grpc_empty_slice();
    u->code = GRPC_STATUS_UNKNOWN;
    u->pending = 0;
    u->got_first = 0;
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&req, 1);
    grpc_op ops[4];
    cc_ops_request(ops, u->send_md, (size_t)u->n_send_md, bb, &u->init_md);
    u->t_main.fn = on_stream_start;
    u->t_status.fn = on_stream_status;
    u->t_msg.fn = on_stream_msg;
    grpc_call_error ce = grpc_call_start_batch(u->call, ops, 4, &u->t_main, NULL);
    grpc_byte_buffer_destroy(bb);
    if (ce != GRPC_CALL_OK) {
        call_cleanup(u);
        return -1;
    }
    u->pending = 1;
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &u->trail_md;
    ops[0].data.recv_status_on_client.status = &u->code;
    ops[0].data.recv_status_on_client.status_details = &u->details;
    if (grpc_call_start_batch(u->call, ops, 1, &u->t_status, NULL) == GRPC_CALL_OK) u->pending++;
    if (arm_recv(u) < 0) grpc_call_cancel(u->call, NULL);
    u->busy = 1;
    u->stream = 1;
    u->method = method;
    w->inflight++;
    return 0;
}

/* ---- worker thread ---- */

static void begin_stop(worker *w) {
    w->stopping = 1;
    if (w->open && w->interval_ns > 0) {
        /* Calls due more than 1 ms ago: one that just came due is not "late". */
        uint64_t now = bench_now_ns() - 1000000u;
        if (now > w->t0) {
            uint64_t due = (uint64_t)((double)(now - w->t0) / w->interval_ns) + 1;
            if (due > w->next_k && w->active_users > 0) w->late = due - w->next_k;
        }
    }
    for (size_t i = 0; i < w->n_users; i++) {
        bench_user *u = &w->users[i];
        if (!u->busy) continue;
        if (u->stream && u->got_first) w->open_at_end[u->method]++;
        grpc_call_cancel(u->call, NULL);
    }
}

static void *worker_main(void *arg) {
    worker *w = arg;
    bench_engine *e = w->e;
    if (!w->open) refill(w);
    uint64_t stop_started = 0;
    for (;;) {
        if (!w->stopping && atomic_load(&e->stop)) {
            begin_stop(w);
            stop_started = bench_now_ns();
        }
        if (w->stopping) {
            if (w->inflight == 0) break;
            if (bench_now_ns() - stop_started > STOP_DRAIN_MAX_S * NS_PER_S) {
                fprintf(stderr, "concert-bench: %d calls did not end after cancel; leaving them\n", w->inflight);
                break;
            }
        } else {
            wake_due(w);
            if (w->open) send_due(w);
            else refill(w); /* deferred users get their turn */
            /* Nothing in flight and nothing that could start: every user retired (or
             * this worker has no share of the concurrency). */
            if (w->inflight == 0 && (w->active_users == 0 || (!w->open && w->conc == 0))) break;
        }
        uint64_t wait = 20000000u; /* wake at least every 20 ms to notice the stop flag */
        if (w->open && !w->stopping && (w->idle_head || w->def_head)) {
            uint64_t due = w->t0 + (uint64_t)((double)w->next_k * w->interval_ns);
            uint64_t now = bench_now_ns();
            wait = due > now ? due - now : 0;
            if (wait > 20000000u) wait = 20000000u;
        }
        if (w->n_sleep && !w->stopping) {
            uint64_t now = bench_now_ns(), at = w->sleep[0]->wake_at;
            uint64_t until = at > now ? at - now : 0;
            if (until < wait) wait = until;
        }
        grpc_event ev = grpc_completion_queue_next(w->cq, in_ns(wait), NULL);
        if (ev.type == GRPC_OP_COMPLETE) {
            btag *t = ev.tag;
            t->fn(w, t, ev.success);
        } else if (ev.type == GRPC_QUEUE_SHUTDOWN) {
            break;
        }
    }
    atomic_store(&w->done, 1);
    return NULL;
}

/* Frees users and the queue once the thread is joined (no call is in flight then,
 * or we gave up on them: then the queue is leaked rather than destroyed under them). */
static void worker_free(worker *w) {
    if (w->users) {
        for (size_t i = 0; i < w->n_users; i++)
            if (w->ph->ops->user_free) w->ph->ops->user_free(&w->users[i]);
    }
    if (w->cq && w->inflight == 0) {
        grpc_completion_queue_shutdown(w->cq);
        for (int i = 0; i < 1000000; i++)
            if (grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type ==
                GRPC_QUEUE_SHUTDOWN)
                break;
        grpc_completion_queue_destroy(w->cq);
    }
    free(w->users);
    free(w->udata);
    free(w->sleep);
    free(w->cur);
    free(w->spare);
    pthread_mutex_destroy(&w->mu);
}

static interval *interval_new(void) {
    interval *iv = calloc(1, sizeof *iv);
    if (!iv) abort();
    for (int m = 0; m < BENCH_MAX_METHODS; m++) bench_hist_clear(&iv->h[m]);
    return iv;
}

static void interval_clear(interval *iv, int n_m) {
    for (int m = 0; m < n_m; m++) bench_hist_clear(&iv->h[m]);
    memset(iv->codes, 0, sizeof iv->codes);
    memset(iv->messages, 0, sizeof iv->messages);
}

static void interval_merge(interval *into, const interval *from, int n_m) {
    for (int m = 0; m < n_m; m++) {
        bench_hist_merge(&into->h[m], &from->h[m]);
        for (int c = 0; c < BENCH_N_CODES; c++) into->codes[m][c] += from->codes[m][c];
        into->messages[m] += from->messages[m];
    }
}

static int worker_init(worker *w, bench_engine *e, const bench_phase *ph, int index, int n_workers, uint64_t t0) {
    w->e = e;
    w->ph = ph;
    w->index = index;
    w->open = ph->rate > 0;
    pthread_mutex_init(&w->mu, NULL);
    w->cur = interval_new();
    w->spare = interval_new();
    size_t users = (size_t)ph->users;
    w->n_users = users / (size_t)n_workers + ((size_t)index < users % (size_t)n_workers ? 1 : 0);
    w->conc = ph->concurrency / n_workers + (index < ph->concurrency % n_workers ? 1 : 0);
    w->users = calloc(w->n_users ? w->n_users : 1, sizeof *w->users);
    size_t dsz = ph->user_data_size ? ph->user_data_size : 1;
    w->udata = calloc(w->n_users ? w->n_users : 1, dsz);
    w->sleep = calloc(w->n_users ? w->n_users : 1, sizeof *w->sleep);
    if (!w->users || !w->udata || !w->sleep) return -1;
    for (size_t i = 0; i < w->n_users; i++) {
        bench_user *u = &w->users[i];
        u->w = w;
        u->id = (uint64_t)index + i * (uint64_t)n_workers;
        u->ch = (int)(u->id % (uint64_t)e->n_ch);
        u->details = grpc_empty_slice();
        u->data = w->udata + i * dsz;
        push_idle(w, u);
    }
    w->active_users = w->n_users;
    if (w->open) {
        double per_worker = ph->rate / n_workers;
        w->interval_ns = 1e9 / per_worker;
        /* Interleave the workers' schedules. */
        w->t0 = t0 + (uint64_t)(w->interval_ns * index / n_workers);
    }
    w->cq = grpc_completion_queue_create_for_next(NULL);
    return 0;
}

/* ---- control thread ---- */

static void collect(worker *ws, int n, interval *acc, int n_m) {
    for (int i = 0; i < n; i++) {
        worker *w = &ws[i];
        pthread_mutex_lock(&w->mu);
        interval *full = w->cur;
        w->cur = w->spare;
        w->spare = full;
        pthread_mutex_unlock(&w->mu);
        interval_merge(acc, full, n_m);
        interval_clear(full, n_m);
    }
}

static int all_done(worker *ws, int n) {
    for (int i = 0; i < n; i++)
        if (!atomic_load(&ws[i].done)) return 0;
    return 1;
}

/* Sleeps until `tick` (monotonic ns), waking every 50 ms to see whether every worker
 * has finished. Returns 1 if they have. */
static int wait_tick(uint64_t tick, worker *ws, int n) {
    for (int i = 0; i < 100000; i++) {
        if (all_done(ws, n)) return 1;
        uint64_t now = bench_now_ns();
        if (now >= tick) return 0;
        uint64_t d = tick - now;
        if (d > 50000000u) d = 50000000u;
        struct timespec ts = {(time_t)(d / NS_PER_S), (long)(d % NS_PER_S)};
        nanosleep(&ts, NULL);
    }
    return all_done(ws, n);
}

static void add_point(bench_result *res, const interval *acc, int n_m, double t, double dt, uint64_t streams,
                      bench_proc *procs) {
    if (res->n_points == res->cap_points) {
        res->cap_points = res->cap_points ? res->cap_points * 2 : 64;
        res->points = realloc(res->points, res->cap_points * sizeof *res->points);
        if (!res->points) abort();
    }
    bench_point *p = &res->points[res->n_points++];
    memset(p, 0, sizeof *p);
    p->t = t;
    p->dt = dt;
    static bench_hist tmp; /* control thread only */
    bench_hist_clear(&tmp);
    for (int m = 0; m < n_m; m++) {
        for (int c = 0; c < BENCH_N_CODES; c++) {
            if (c == 0) p->ok += acc->codes[m][c];
            else p->err += acc->codes[m][c];
        }
        p->method_ok[m] = acc->codes[m][0];
        p->messages += acc->messages[m];
        if (!res->m[m].stream) bench_hist_merge(&tmp, &acc->h[m]);
    }
    p->p50 = bench_hist_percentile(&tmp, 50);
    p->p90 = bench_hist_percentile(&tmp, 90);
    p->p99 = bench_hist_percentile(&tmp, 99);
    p->max = tmp.max;
    p->streams_open = streams;
    if (procs)
        for (int i = 0; i < bench_proc_count(procs) && i < BENCH_PROC_MAX; i++) {
            const bench_proc_stat *st = bench_proc_get(procs, i);
            p->cpu[i] = st->cpu_now;
            p->rss[i] = st->rss_now;
        }
}

static void progress(const bench_engine *e, const bench_phase *ph, const bench_result *res, const interval *acc,
                     int n_m, int measuring, int sec, int of, double dt, uint64_t streams, bench_proc *procs) {
    if (e->cfg.quiet) return;
    uint64_t ok = 0, err = 0, msgs = 0;
    bench_hist *tmp = calloc(1, sizeof *tmp);
    if (!tmp) abort();
    bench_hist_clear(tmp);
    for (int m = 0; m < n_m; m++) {
        ok += acc->codes[m][0];
        for (int c = 1; c < BENCH_N_CODES; c++) err += acc->codes[m][c];
        msgs += acc->messages[m];
        if (!e->m[m].stream) bench_hist_merge(tmp, &acc->h[m]);
    }
    char line[512];
    int n = snprintf(line, sizeof line, "%s [%s %d/%d s] %.0f req/s, %llu errors, p99 %.2f ms", ph->name,
                     measuring ? "run" : "warmup", sec, of, dt > 0 ? (double)ok / dt : 0, (unsigned long long)err,
                     (double)bench_hist_percentile(tmp, 99) / 1e6);
    if (measuring && res->total.count && n < (int)sizeof line)
        n += snprintf(line + n, sizeof line - (size_t)n, " (so far %.2f ms)",
                      (double)bench_hist_percentile(&res->total, 99) / 1e6);
    if ((streams || msgs) && n < (int)sizeof line)
        n += snprintf(line + n, sizeof line - (size_t)n, ", %llu streams open, %.0f msgs/s",
                      (unsigned long long)streams, dt > 0 ? (double)msgs / dt : 0);
    if (procs && n < (int)sizeof line) {
        n += snprintf(line + n, sizeof line - (size_t)n, " | cpu");
        for (int i = 0; i < bench_proc_count(procs) && n < (int)sizeof line; i++) {
            const bench_proc_stat *st = bench_proc_get(procs, i);
            n += snprintf(line + n, sizeof line - (size_t)n, " %s %.0f%%", st->name, st->cpu_now);
        }
    }
    fprintf(stderr, "%s\n", line);
    free(tmp);
}

bench_result *bench_engine_run(bench_engine *e, const bench_phase *ph, bench_proc *procs) {
    if (!ph->ops || !ph->ops->next || ph->users <= 0 || ph->duration_s <= 0 ||
        (ph->rate <= 0 && ph->concurrency <= 0)) {
        fprintf(stderr, "concert-bench: phase %s: bad configuration\n", ph->name);
        return NULL;
    }
    int n_w = e->cfg.threads;
    int n_m = e->n_m;
    bench_result *res = bench_result_new(ph->name);
    snprintf(res->mode, sizeof res->mode, "%s", ph->rate > 0 ? "open" : "closed");
    res->concurrency = ph->rate > 0 ? 0 : ph->concurrency;
    res->rate = ph->rate > 0 ? ph->rate : 0;
    res->users = ph->users;
    res->warmup_s = ph->warmup_s;
    res->duration_s = ph->duration_s;
    res->n_methods = n_m;
    for (int m = 0; m < n_m; m++) {
        snprintf(res->m[m].name, sizeof res->m[m].name, "%s", e->m[m].label);
        res->m[m].stream = e->m[m].stream;
    }

    worker *ws = calloc((size_t)n_w, sizeof *ws);
    interval *acc = interval_new();
    if (!ws) abort();
    atomic_store(&e->stop, 0);
    uint64_t t_start = bench_now_ns();
    for (int i = 0; i < n_w; i++) {
        if (worker_init(&ws[i], e, ph, i, n_w, t_start) < 0) {
            fprintf(stderr, "concert-bench: out of memory for %d users\n", ph->users);
            abort();
        }
    }
    if (procs) bench_proc_sample(procs);
    for (int i = 0; i < n_w; i++) {
        if (pthread_create(&ws[i].th, NULL, worker_main, &ws[i]) != 0) {
            fprintf(stderr, "concert-bench: cannot start a worker thread\n");
            atomic_store(&e->stop, 1);
            break;
        }
        ws[i].started = 1;
    }

    int measuring = ph->warmup_s == 0;
    uint64_t t_meas = t_start, prev = t_start;
    if (measuring && procs) bench_proc_window_start(procs);
    /* Bounded: one iteration per second of warmup + duration (+1). */
    for (int k = 1; k <= ph->warmup_s + ph->duration_s + 1; k++) {
        int done = wait_tick(t_start + (uint64_t)k * NS_PER_S, ws, n_w);
        uint64_t now = bench_now_ns();
        int last = done || (measuring && k - ph->warmup_s >= ph->duration_s);
        if (last) atomic_store(&e->stop, 1);
        collect(ws, n_w, acc, n_m);
        if (procs) bench_proc_sample(procs);
        uint64_t streams = 0;
        for (int i = 0; i < n_w; i++) streams += (uint64_t)atomic_load(&ws[i].streams_open);
        double dt = (double)(now - prev) / 1e9;
        if (measuring) {
            for (int m = 0; m < n_m; m++) {
                bench_hist_merge(&res->m[m].hist, &acc->h[m]);
                if (!res->m[m].stream) bench_hist_merge(&res->total, &acc->h[m]);
                for (int c = 0; c < BENCH_N_CODES; c++) {
                    res->m[m].codes[c] += acc->codes[m][c];
                    res->codes[c] += acc->codes[m][c];
                }
                res->m[m].messages += acc->messages[m];
            }
            add_point(res, acc, n_m, (double)(now - t_meas) / 1e9, dt, streams, procs);
            progress(e, ph, res, acc, n_m, 1, k - ph->warmup_s, ph->duration_s, dt, streams, procs);
        } else {
            progress(e, ph, res, acc, n_m, 0, k, ph->warmup_s, dt, streams, procs);
        }
        interval_clear(acc, n_m);
        prev = now;
        if (last) {
            res->elapsed_s = measuring ? (double)(now - t_meas) / 1e9 : 0;
            break;
        }
        if (!measuring && k >= ph->warmup_s) {
            measuring = 1;
            t_meas = now;
            if (procs) bench_proc_window_start(procs);
        }
    }
    atomic_store(&e->stop, 1);
    for (int i = 0; i < n_w; i++) {
        if (ws[i].started) pthread_join(ws[i].th, NULL);
        for (int m = 0; m < n_m; m++) res->m[m].open_at_end += ws[i].open_at_end[m];
        res->late += ws[i].late;
        worker_free(&ws[i]);
    }
    if (procs) {
        res->n_procs = bench_proc_count(procs) < BENCH_PROC_MAX ? bench_proc_count(procs) : BENCH_PROC_MAX;
        for (int i = 0; i < res->n_procs; i++) {
            const bench_proc_stat *st = bench_proc_get(procs, i);
            bench_proc_result *pr = &res->procs[i];
            snprintf(pr->name, sizeof pr->name, "%s", st->name);
            pr->pid = st->pid;
            pr->samples = st->samples;
            pr->cpu_mean = st->samples ? st->cpu_sum / st->samples : 0;
            pr->cpu_max = st->cpu_max;
            pr->rss_mean = st->samples ? (uint64_t)(st->rss_sum / st->samples) : st->rss_now;
            pr->rss_max = st->rss_max;
            pr->rss_end = st->rss_now;
        }
    }
    free(acc);
    free(ws);
    return res;
}
