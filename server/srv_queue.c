/* srv_queue: QueueService (IssueToken, GetQueueStatus, WatchQueueStatus, LeaveQueue)
 * plus the per-concert registry that drives admission ticks and watcher refreshes.
 *
 * Redis layout, one hash tag per concert so a concert's queue lives in one slot:
 *   cc:{C}:q:users  hash  user -> token         cc:{C}:q:tok    hash  token -> user
 *   cc:{C}:q:wait   zset  token -> seq          cc:{C}:q:seen   zset  token -> last seen ms
 *   cc:{C}:q:active zset  token -> expiry ms    cc:{C}:q:gone   zset  token -> ended ms
 *   cc:{C}:q:seq    counter                     cc:{C}:q:adm    hash  token bucket
 *   cc:{C}:policy   hash  rate, max_active, active_ttl_ms, idle_timeout_ms (admin)
 *   cc:queues       set   of concert ids with a queue (drives every server's ticks)
 *
 * Watchers: one refresh per concert per tick asks for all of its watched tokens in
 * one script call (in chunks), never one round trip per watcher. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cc_log.h"
#include "concert/v1/queue.pb-c.h"
#include "srv_app.h"
#include "srv_valid.h"

#define WATCH_CHUNK 500
#define GONE_KEEP_MS (3600 * 1000)

extern const unsigned char lua_queue_issue[], lua_queue_status[], lua_queue_leave[], lua_queue_admit[],
    lua_queue_watch[];
extern const size_t lua_queue_issue_len, lua_queue_status_len, lua_queue_leave_len, lua_queue_admit_len,
    lua_queue_watch_len;

static cc_redis_script s_issue, s_status, s_leave, s_admit, s_watch;

struct srv_watcher {
    srv_call *call;
    srv_concert *concert;
    char token[SRV_TOKEN_MAX + 1];
    int refs;    /* the list's + each in-flight refresh's */
    int dead;    /* finished or cancelled */
    int last_state;
    int64_t last_pos;
    srv_watcher *prev, *next;
};

struct srv_concert {
    char id[SRV_MAX_ID + 1];
    srv_concert *hnext;
    srv_app *app;
    int admit_inflight;
    int watch_inflight;
    size_t n_watchers;
    srv_watcher *watchers;
};

/* ---- keys ---- */

enum { K_USERS, K_TOK, K_WAIT, K_SEEN, K_ACTIVE, K_GONE, K_SEQ, K_ADM, K_POLICY, K_N };
static const char *const key_suffix[K_N] = {"q:users", "q:tok", "q:wait", "q:seen", "q:active",
                                            "q:gone",  "q:seq", "q:adm",  "policy"};

typedef struct {
    char k[K_N][SRV_MAX_ID + 24];
} queue_keys;

static void make_keys(queue_keys *qk, const char *concert) {
    for (int i = 0; i < K_N; i++) snprintf(qk->k[i], sizeof qk->k[i], "cc:{%s}:%s", concert, key_suffix[i]);
}

/* ---- registry ---- */

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static srv_concert *concert_get(srv_app *app, const char *id, int create) {
    uint64_t h = hash_str(id) % app->n_buckets;
    for (srv_concert *c = app->concert_buckets[h]; c; c = c->hnext)
        if (!strcmp(c->id, id)) return c;
    if (!create) return NULL;
    srv_concert *c = calloc(1, sizeof *c);
    if (!c) abort();
    snprintf(c->id, sizeof c->id, "%s", id);
    c->app = app;
    c->hnext = app->concert_buckets[h];
    app->concert_buckets[h] = c;
    app->n_concerts++;
    CC_INFO("queue_known", "concert=%s", id);
    return c;
}

#define FOR_EACH_CONCERT(app, c)                          \
    for (size_t b_ = 0; b_ < (app)->n_buckets; b_++)      \
        for (srv_concert *c = (app)->concert_buckets[b_]; c; c = c->hnext)

static void on_sadd(redisReply *r, const char *err, void *p) {}

void srv_concert_remember(srv_app *app, const char *concert) {
    if (concert_get(app, concert, 0)) return;
    concert_get(app, concert, 1);
    cc_redis_command(app->redis, on_sadd, NULL, "SADD cc:queues %s", concert);
}

void srv_concerts_foreach(srv_app *app, void (*fn)(srv_app *app, const char *concert, void *arg), void *arg) {
    FOR_EACH_CONCERT(app, c) fn(app, c->id, arg);
}

/* ---- replies ---- */

static int64_t estimate_wait(int64_t position, int64_t rate) {
    if (rate <= 0) return -1;
    return (position + rate - 1) / rate;
}

static void fill_status(Concert__V1__QueueStatus *st, const char *token, const char *concert, int state,
                        int64_t pos, int64_t expires, int64_t rate) {
    concert__v1__queue_status__init(st);
    st->token = (char *)token;
    st->concert_id = (char *)concert;
    switch (state) {
    case 1:
        st->state = CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING;
        st->position = pos;
        st->estimated_wait_seconds = estimate_wait(pos, rate);
        break;
    case 2:
        st->state = CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE;
        st->expires_at_unix_ms = expires;
        break;
    default:
        st->state = CONCERT__V1__QUEUE_STATE__QUEUE_STATE_EXPIRED;
        break;
    }
}


/* A unary call waiting for Redis. */
typedef struct {
    srv_call *call;
    srv_app *app;
    char concert[SRV_MAX_ID + 1];
    char token[SRV_TOKEN_MAX + 1];
} qctx;

static qctx *qctx_new(srv_call *call) {
    qctx *q = calloc(1, sizeof *q);
    if (!q) abort();
    q->call = call;
    q->app = srv_call_app(call);
    return q;
}

/* Validates a request's token field: fills q->token and q->concert, or finishes the
 * call with the error and returns -1. */
static int take_token(srv_call *call, qctx *q, const char *token) {
    size_t len = token ? strlen(token) : 0;
    if (len == 0) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "token: required");
        return -1;
    }
    if (len > 256) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "token: longer than 256 bytes");
        return -1;
    }
    if (srv_token_parse(token, len, q->concert) < 0) {
        srv_call_finish(call, GRPC_STATUS_UNAUTHENTICATED, "token: unknown token");
        return -1;
    }
    memcpy(q->token, token, len + 1);
    return 0;
}

/* ---- IssueToken ---- */

static void on_issue(redisReply *r, const char *err, void *p) {
    qctx *q = p;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 5) {
        srv_fail_redis(q->call, r, err);
    } else {
        Concert__V1__QueueStatus st;
        const char *tok = r->element[0]->type == REDIS_REPLY_STRING ? r->element[0]->str : "";
        fill_status(&st, tok, q->concert, (int)srv_int_at(r, 1), srv_int_at(r, 2), srv_int_at(r, 3), srv_int_at(r, 4));
        srv_call_reply(q->call, &st.base);
    }
    free(q);
}

void srv_queue_issue_token(srv_call *call) {
    const Concert__V1__IssueTokenRequest *req = (const void *)srv_call_request(call);
    if (!srv_valid_user(req->user_id)) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
                        "user_id: must be 1..128 bytes without control characters");
        return;
    }
    if (!srv_valid_id(req->concert_id)) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "concert_id: must be 1..64 characters of [A-Za-z0-9_-]");
        return;
    }
    qctx *q = qctx_new(call);
    srv_app *app = q->app;
    snprintf(q->concert, sizeof q->concert, "%s", req->concert_id);
    if (srv_token_new(q->token, q->concert) < 0) {
        free(q);
        srv_call_finish(call, GRPC_STATUS_INTERNAL, "no randomness available");
        return;
    }
    queue_keys qk;
    make_keys(&qk, q->concert);
    char rate[24];
    snprintf(rate, sizeof rate, "%" PRId64, app->cfg.admit_rate);
    const char *args[] = {qk.k[K_USERS], qk.k[K_TOK], qk.k[K_WAIT], qk.k[K_SEEN], qk.k[K_ACTIVE],
                          qk.k[K_SEQ],   qk.k[K_POLICY], req->user_id, q->token, rate};
    if (cc_redis_eval(app->redis, &s_issue, on_issue, q, 7, 10, args, NULL) < 0) {
        free(q);
        srv_fail_no_redis(call);
        return;
    }
    srv_concert_remember(app, q->concert);
}

/* ---- GetQueueStatus ---- */

static void on_status(redisReply *r, const char *err, void *p) {
    qctx *q = p;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 5) {
        srv_fail_redis(q->call, r, err);
    } else if (srv_int_at(r, 0) == 0) {
        srv_call_finish(q->call, GRPC_STATUS_UNAUTHENTICATED, "token: unknown token");
    } else {
        Concert__V1__QueueStatus st;
        fill_status(&st, q->token, q->concert, (int)srv_int_at(r, 0), srv_int_at(r, 1), srv_int_at(r, 2), srv_int_at(r, 3));
        srv_call_reply(q->call, &st.base);
    }
    free(q);
}

static int send_status_query(qctx *q, cc_redis_cb cb) {
    queue_keys qk;
    make_keys(&qk, q->concert);
    char rate[24];
    snprintf(rate, sizeof rate, "%" PRId64, q->app->cfg.admit_rate);
    const char *args[] = {qk.k[K_TOK], qk.k[K_WAIT], qk.k[K_SEEN], qk.k[K_ACTIVE], qk.k[K_POLICY], q->token, rate};
    return cc_redis_eval(q->app->redis, &s_status, cb, q, 5, 7, args, NULL);
}

void srv_queue_get_status(srv_call *call) {
    const Concert__V1__GetQueueStatusRequest *req = (const void *)srv_call_request(call);
    qctx *q = qctx_new(call);
    if (take_token(call, q, req->token) < 0) {
        free(q);
        return;
    }
    if (send_status_query(q, on_status) < 0) {
        free(q);
        srv_fail_no_redis(call);
    }
}

/* ---- LeaveQueue ---- */

static void on_leave(redisReply *r, const char *err, void *p) {
    qctx *q = p;
    if (!r || r->type != REDIS_REPLY_INTEGER) {
        srv_fail_redis(q->call, r, err);
    } else if (r->integer == 0) {
        srv_call_finish(q->call, GRPC_STATUS_UNAUTHENTICATED, "token: unknown token");
    } else {
        Concert__V1__LeaveQueueResponse resp;
        concert__v1__leave_queue_response__init(&resp);
        resp.previous_state = (Concert__V1__QueueState)r->integer;
        srv_call_reply(q->call, &resp.base);
    }
    free(q);
}

void srv_queue_leave(srv_call *call) {
    const Concert__V1__LeaveQueueRequest *req = (const void *)srv_call_request(call);
    qctx *q = qctx_new(call);
    if (take_token(call, q, req->token) < 0) {
        free(q);
        return;
    }
    queue_keys qk;
    make_keys(&qk, q->concert);
    const char *args[] = {qk.k[K_USERS], qk.k[K_TOK], qk.k[K_WAIT], qk.k[K_SEEN],
                          qk.k[K_ACTIVE], qk.k[K_GONE], q->token};
    if (cc_redis_eval(q->app->redis, &s_leave, on_leave, q, 6, 7, args, NULL) < 0) {
        free(q);
        srv_fail_no_redis(call);
    }
}

/* ---- WatchQueueStatus ---- */

/* Not inlined: GCC 12 at -O3 cannot see that callers always hold a reference while
 * they use the watcher, and reports a use after free that cannot happen. */
__attribute__((noinline)) static void watcher_unref(srv_watcher *w) {
    if (--w->refs == 0) free(w);
}

/* Ends a watcher's call (status `code`) and takes it off its concert's list. */
static void watcher_end(srv_watcher *w, grpc_status_code code, const char *msg) {
    if (w->dead) return;
    w->dead = 1;
    srv_concert *c = w->concert;
    if (w->prev) w->prev->next = w->next; else c->watchers = w->next;
    if (w->next) w->next->prev = w->prev;
    c->n_watchers--;
    srv_call_set_data(w->call, NULL);
    srv_call_finish(w->call, code, "%s", msg);
    watcher_unref(w);
}

/* Sends the status if it changed; ends the stream on a terminal state. */
static void watcher_update(srv_watcher *w, int state, int64_t value, int64_t rate) {
    if (w->dead) return;
    if (state == 0) {
        watcher_end(w, GRPC_STATUS_UNAUTHENTICATED, "token: unknown token");
        return;
    }
    int64_t pos = state == 1 ? value : 0;
    if (state == w->last_state && pos == w->last_pos) return;
    if (state == 1 && srv_call_pending_writes(w->call) > 1) return; /* slow reader: skip a step */
    Concert__V1__QueueStatus st;
    fill_status(&st, w->token, w->concert->id, state, pos, state == 2 ? value : 0, rate);
    srv_call_send(w->call, &st.base);
    w->last_state = state;
    w->last_pos = pos;
    if (state != 1) watcher_end(w, GRPC_STATUS_OK, "");
}

typedef struct {
    srv_concert *concert;
    size_t n;
    int last;
    srv_watcher *w[WATCH_CHUNK];
} watch_batch;

static void on_watch_batch(redisReply *r, const char *err, void *p) {
    watch_batch *b = p;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 + 2 * b->n) {
        int64_t rate = srv_int_at(r, 0);
        for (size_t i = 0; i < b->n; i++)
            watcher_update(b->w[i], (int)srv_int_at(r, 1 + 2 * i), srv_int_at(r, 2 + 2 * i), rate);
    } else if (r && r->type == REDIS_REPLY_ERROR) {
        CC_WARN("watch_refresh_failed", "concert=%s error=\"%s\"", b->concert->id, r->str);
    }
    /* On a Redis outage watchers simply wait for the next tick. */
    if (b->last) b->concert->watch_inflight = 0;
    for (size_t i = 0; i < b->n; i++) watcher_unref(b->w[i]);
    free(b);
}

static void refresh_watchers(srv_concert *c) {
    srv_app *app = c->app;
    if (c->watch_inflight || !c->watchers) return;
    queue_keys qk;
    make_keys(&qk, c->id);
    char rate[24];
    snprintf(rate, sizeof rate, "%" PRId64, app->cfg.admit_rate);
    const char *args[6 + WATCH_CHUNK];
    args[0] = qk.k[K_TOK], args[1] = qk.k[K_WAIT], args[2] = qk.k[K_SEEN], args[3] = qk.k[K_ACTIVE];
    args[4] = qk.k[K_POLICY], args[5] = rate;
    srv_watcher *w = c->watchers;
    watch_batch *last = NULL;
    while (w) {
        watch_batch *b = calloc(1, sizeof *b);
        if (!b) abort();
        b->concert = c;
        for (; w && b->n < WATCH_CHUNK; w = w->next) {
            b->w[b->n] = w;
            args[6 + b->n] = w->token;
            w->refs++;
            b->n++;
        }
        if (cc_redis_eval(app->redis, &s_watch, on_watch_batch, b, 5, 6 + (int)b->n, args, NULL) < 0) {
            CC_DEBUG("watch_refresh_not_sent", "concert=%s watchers=%zu", c->id, b->n);
            for (size_t i = 0; i < b->n; i++) watcher_unref(b->w[i]);
            free(b);
            break;
        }
        last = b;
        c->watch_inflight = 1;
    }
    if (last) last->last = 1;
}

static void on_watch_cancel(srv_call *call) {
    srv_watcher *w = srv_call_data(call);
    if (w) watcher_end(w, GRPC_STATUS_CANCELLED, "cancelled");
    else srv_call_finish(call, GRPC_STATUS_CANCELLED, "cancelled");
}

static void on_watch_first(redisReply *r, const char *err, void *p) {
    srv_watcher *w = p;
    if (w->dead) {
        watcher_unref(w);
        return;
    }
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 5) {
        char msg[256];
        grpc_status_code code = srv_redis_status(r, err, msg, sizeof msg);
        watcher_end(w, code == GRPC_STATUS_OK ? GRPC_STATUS_INTERNAL : code, msg);
    } else {
        watcher_update(w, (int)srv_int_at(r, 0), srv_int_at(r, 0) == 1 ? srv_int_at(r, 1) : srv_int_at(r, 2), srv_int_at(r, 3));
    }
    watcher_unref(w);
}

void srv_queue_watch(srv_call *call) {
    const Concert__V1__WatchQueueStatusRequest *req = (const void *)srv_call_request(call);
    srv_app *app = srv_call_app(call);
    qctx q = {.call = call, .app = app};
    if (take_token(call, &q, req->token) < 0) return;
    if (app->shutting_down) {
        srv_call_finish(call, GRPC_STATUS_UNAVAILABLE, "server shutting down");
        return;
    }
    srv_concert *c = concert_get(app, q.concert, 1);
    srv_watcher *w = calloc(1, sizeof *w);
    if (!w) abort();
    w->call = call;
    w->concert = c;
    memcpy(w->token, q.token, sizeof w->token);
    w->refs = 1;
    w->next = c->watchers;
    if (c->watchers) c->watchers->prev = w;
    c->watchers = w;
    c->n_watchers++;
    srv_call_set_data(call, w);
    srv_call_on_cancel(call, on_watch_cancel);
    /* The first status at once; later ones from the concert's refresh ticks. */
    queue_keys qk;
    make_keys(&qk, c->id);
    char rate[24];
    snprintf(rate, sizeof rate, "%" PRId64, app->cfg.admit_rate);
    const char *args[] = {qk.k[K_TOK], qk.k[K_WAIT], qk.k[K_SEEN], qk.k[K_ACTIVE], qk.k[K_POLICY], w->token, rate};
    w->refs++;
    if (cc_redis_eval(app->redis, &s_status, on_watch_first, w, 5, 7, args, NULL) < 0) {
        w->refs--;
        watcher_end(w, GRPC_STATUS_UNAVAILABLE, "redis unavailable");
    }
}

/* ---- ticks ---- */

static void on_admit(redisReply *r, const char *err, void *p) {
    srv_concert *c = p;
    c->admit_inflight = 0;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 5) {
        int64_t admitted = srv_int_at(r, 0), expired = srv_int_at(r, 3), idled = srv_int_at(r, 4);
        srv_metrics_queue_tick(c->app, c->id, admitted, srv_int_at(r, 1), srv_int_at(r, 2));
        if (admitted || expired || idled)
            CC_DEBUG("queue_tick", "concert=%s admitted=%" PRId64 " waiting=%" PRId64 " active=%" PRId64
                     " expired=%" PRId64 " idled=%" PRId64, c->id, admitted, srv_int_at(r, 1), srv_int_at(r, 2),
                     expired, idled);
        /* Tell this server's watchers of the new admissions without waiting a tick. */
        if (admitted && c->watchers) refresh_watchers(c);
    } else if (r && r->type == REDIS_REPLY_ERROR) {
        CC_WARN("queue_tick_failed", "concert=%s error=\"%s\"", c->id, r->str);
    }
}

static void on_admit_timer(uv_timer_t *t) {
    srv_app *app = t->data;
    if (!cc_redis_is_up(app->redis)) return;
    char a[5][24];
    snprintf(a[0], 24, "%" PRId64, app->cfg.admit_rate);
    snprintf(a[1], 24, "%" PRId64, app->cfg.max_active);
    snprintf(a[2], 24, "%" PRId64, app->cfg.active_ttl_ms);
    snprintf(a[3], 24, "%" PRId64, app->cfg.idle_timeout_ms);
    snprintf(a[4], 24, "%d", GONE_KEEP_MS);
    FOR_EACH_CONCERT(app, c) {
        if (c->admit_inflight) continue;
        queue_keys qk;
        make_keys(&qk, c->id);
        const char *args[] = {qk.k[K_USERS], qk.k[K_TOK], qk.k[K_WAIT], qk.k[K_SEEN], qk.k[K_ACTIVE],
                              qk.k[K_GONE],  qk.k[K_ADM], qk.k[K_POLICY], a[0], a[1], a[2], a[3], a[4]};
        if (cc_redis_eval(app->redis, &s_admit, on_admit, c, 8, 13, args, NULL) == 0) c->admit_inflight = 1;
    }
}

static void on_watch_timer(uv_timer_t *t) {
    srv_app *app = t->data;
    if (!cc_redis_is_up(app->redis)) return;
    FOR_EACH_CONCERT(app, c) refresh_watchers(c);
}

static void on_queues(redisReply *r, const char *err, void *p) {
    srv_app *app = p;
    app->refresh_inflight = 0;
    if (!r || r->type != REDIS_REPLY_ARRAY) return;
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING && srv_valid_id(r->element[i]->str))
            concert_get(app, r->element[i]->str, 1);
}

static void on_refresh_timer(uv_timer_t *t) {
    srv_app *app = t->data;
    if (app->refresh_inflight) return;
    if (cc_redis_command(app->redis, on_queues, app, "SMEMBERS cc:queues") == 0) app->refresh_inflight = 1;
}

/* ---- life cycle ---- */

int srv_queue_init(srv_app *app) {
    srv_script_add(&s_issue, "queue_issue", NULL, 0, lua_queue_issue, lua_queue_issue_len);
    srv_script_add(&s_status, "queue_status", NULL, 0, lua_queue_status, lua_queue_status_len);
    srv_script_add(&s_leave, "queue_leave", NULL, 0, lua_queue_leave, lua_queue_leave_len);
    srv_script_add(&s_admit, "queue_admit", NULL, 0, lua_queue_admit, lua_queue_admit_len);
    srv_script_add(&s_watch, "queue_watch", NULL, 0, lua_queue_watch, lua_queue_watch_len);
    app->n_buckets = 1024;
    app->concert_buckets = calloc(app->n_buckets, sizeof *app->concert_buckets);
    if (!app->concert_buckets) abort();
    uv_timer_init(app->loop, &app->admit_timer);
    uv_timer_init(app->loop, &app->watch_timer);
    uv_timer_init(app->loop, &app->refresh_timer);
    app->admit_timer.data = app->watch_timer.data = app->refresh_timer.data = app;
    uv_timer_start(&app->admit_timer, on_admit_timer, (uint64_t)app->cfg.admit_interval_ms,
                   (uint64_t)app->cfg.admit_interval_ms);
    uv_timer_start(&app->watch_timer, on_watch_timer, (uint64_t)app->cfg.watch_interval_ms,
                   (uint64_t)app->cfg.watch_interval_ms);
    uv_timer_start(&app->refresh_timer, on_refresh_timer, 200, 1000);
    return 0;
}

static void on_timer_closed(uv_handle_t *h) {}

void srv_queue_free(srv_app *app) {
    for (size_t b = 0; b < app->n_buckets; b++) {
        srv_concert *c = app->concert_buckets[b];
        while (c) {
            srv_concert *next = c->hnext;
            free(c);
            c = next;
        }
    }
    free(app->concert_buckets);
    app->concert_buckets = NULL;
}

void srv_queue_shutdown(srv_app *app) {
    uv_close((uv_handle_t *)&app->admit_timer, on_timer_closed);
    uv_close((uv_handle_t *)&app->watch_timer, on_timer_closed);
    uv_close((uv_handle_t *)&app->refresh_timer, on_timer_closed);
    FOR_EACH_CONCERT(app, c) {
        while (c->watchers) watcher_end(c->watchers, GRPC_STATUS_UNAVAILABLE, "server shutting down");
    }
}
