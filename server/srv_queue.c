/* srv_queue: QueueService (IssueToken, GetQueueStatus, WatchQueueStatus, LeaveQueue)
 * plus the per-concert registry that drives admission ticks and watcher refreshes.
 *
 * Redis layout, one hash tag per concert so a concert's queue lives in one slot:
 *   cc:{C}:q:users  hash  user -> latest token  cc:{C}:q:tok    hash  token -> user
 *   cc:{C}:q:wait   zset  token -> seq          cc:{C}:q:seen   zset  token -> last seen ms
 *   cc:{C}:q:active zset  token -> expiry ms    cc:{C}:q:gone   zset  token -> ended ms
 *   cc:{C}:q:seq    counter                     cc:{C}:q:adm    hash  token bucket
 *   cc:{C}:policy   hash  rate, max_active, active_ttl_ms, idle_timeout_ms (admin)
 *   cc:{C}:concert  hash  the concert (admin): no queue exists without it
 *   cc:{w:U}:queues hash  concert -> token, the concerts user U waits in (the cap)
 *   cc:queues       set   concerts with someone waiting, active or holding seats
 *
 * Work is proportional to live state, never to ids a stranger made up: IssueToken,
 * GetQueueStatus, WatchQueueStatus and LeaveQueue on a concert no admin created answer
 * NOT_FOUND and write nothing; a concert enters this server's registry (and
 * cc:queues) only through a real join or a live token, and leaves both once its
 * admission tick finds it empty. Watchers: one refresh per concert per tick asks for
 * all of its watched tokens in one script call (in chunks), never one round trip per
 * watcher, and a refresh starts only when every batch of the previous one is back. */
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

#define NOTE_EVERY_MS 1000 /* how often a live concert re-asserts itself in cc:queues */

extern const unsigned char lua_queue_issue[], lua_queue_status[], lua_queue_leave[], lua_queue_admit[],
    lua_queue_watch[], lua_queue_user[];
extern const size_t lua_queue_issue_len, lua_queue_status_len, lua_queue_leave_len, lua_queue_admit_len,
    lua_queue_watch_len, lua_queue_user_len;

static cc_redis_script s_issue, s_status, s_leave, s_admit, s_watch, s_user;

struct srv_watcher {
    srv_call *call;
    srv_concert *concert; /* NULL until the first status proved the token */
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
    int watch_batches; /* refresh batches in flight */
    int idle_ticks;    /* admission ticks in a row that found the concert empty */
    uint64_t noted_ms; /* when this server last wrote it into cc:queues */
    size_t n_watchers;
    srv_watcher *watchers;
};

/* ---- keys ---- */

enum { K_USERS, K_TOK, K_WAIT, K_SEEN, K_ACTIVE, K_GONE, K_SEQ, K_ADM, K_POLICY, K_CONCERT, K_HOLDS, K_N };
static const char *const key_suffix[K_N] = {"q:users", "q:tok",  "q:wait",  "q:seen",  "q:active", "q:gone",
                                            "q:seq",   "q:adm",  "policy",  "concert", "holds"};

typedef struct {
    char k[K_N][SRV_MAX_ID + 24];
} queue_keys;

/* "cc:{<concert>}:<suffix>" for every key, by copying (this runs for every queue call:
 * snprintf here was a tenth of the server's instructions on the GetQueueStatus path). */
static void make_keys(queue_keys *qk, const char *concert) {
    size_t cl = strnlen(concert, SRV_MAX_ID);
    for (int i = 0; i < K_N; i++) {
        char *p = qk->k[i];
        memcpy(p, "cc:{", 4);
        memcpy(p + 4, concert, cl);
        p[4 + cl] = '}', p[5 + cl] = ':';
        size_t sl = strlen(key_suffix[i]);
        memcpy(p + 6 + cl, key_suffix[i], sl + 1);
    }
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

/* Takes an empty concert out of the registry and of cc:queues. Only from a tick's
 * reply: no watcher, no batch and no admission call may point at it. */
static void ignore_reply(redisReply *r, const char *err, void *p) {}

static void concert_drop(srv_app *app, srv_concert *c, int exists) {
    uint64_t h = hash_str(c->id) % app->n_buckets;
    for (srv_concert **pp = &app->concert_buckets[h]; *pp; pp = &(*pp)->hnext)
        if (*pp == c) {
            *pp = c->hnext;
            break;
        }
    app->n_concerts--;
    CC_INFO("queue_idle", "concert=%s exists=%d", c->id, exists);
    cc_redis_command(app->redis, ignore_reply, NULL, "SREM cc:queues %s", c->id);
    free(c);
}

#define FOR_EACH_CONCERT(app, c)                          \
    for (size_t b_ = 0; b_ < (app)->n_buckets; b_++)      \
        for (srv_concert *c = (app)->concert_buckets[b_], *n_; c && ((n_ = c->hnext), 1); c = n_)

/* A concert with live users (a join, a live token): ticked here, and written into
 * cc:queues so that every server ticks it (again every NOTE_EVERY_MS while it lives,
 * which heals a race with a server that just found it empty). */
static srv_concert *concert_note(srv_app *app, const char *concert) {
    srv_concert *c = concert_get(app, concert, 1);
    uint64_t now = uv_now(app->loop);
    c->idle_ticks = 0;
    if (!c->noted_ms || now - c->noted_ms >= NOTE_EVERY_MS) {
        c->noted_ms = now ? now : 1;
        cc_redis_command(app->redis, ignore_reply, NULL, "SADD cc:queues %s", concert);
    }
    return c;
}

void srv_concert_remember(srv_app *app, const char *concert) { concert_note(app, concert); }

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

static void finish_no_concert(srv_call *call, const char *field, const char *concert) {
    srv_call_finish(call, GRPC_STATUS_NOT_FOUND, "%s: no concert '%s' (an admin creates concerts)", field, concert);
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

/* ---- the per-user record (cap on concerts waited in at once) ---- */

static void user_key(char *out, size_t len, const char *user) { snprintf(out, len, "cc:{w:%s}:queues", user); }

/* 'del' one (concert, token) of the user's record; not awaited. */
static void user_record(srv_app *app, const char *user, const char *concert, const char *token, const char *mode) {
    char key[SRV_MAX_USER + 24];
    user_key(key, sizeof key, user);
    const char *args[] = {key, mode, concert, token};
    cc_redis_eval(app->redis, &s_user, ignore_reply, NULL, 1, 4, args, NULL);
}

/* ---- IssueToken ----
 * 1. queue_issue (concert slot): NOT_FOUND unless an admin created the concert; an
 *    existing WAITING or ACTIVE token is answered at once (one round trip, as ever).
 * 2. For a new token only: queue_user 'add' (user slot) records it unless the user
 *    already waits in --max-queues-per-user concerts. When full, each recorded token is
 *    looked at in its own concert (queue_watch) and the dead ones are pruned before a
 *    second, final 'add'; still full, the new token is given up (queue_leave) and the
 *    call answers RESOURCE_EXHAUSTED. */

#define MAX_CAP_ENTRIES 1000

typedef struct {
    char concert[SRV_MAX_ID + 1];
    char token[SRV_TOKEN_MAX + 1];
    int dead;
} cap_entry;

typedef struct {
    qctx q; /* q.token: the fresh token, then the one issued */
    char user[SRV_MAX_USER + 1];
    Concert__V1__QueueStatus st; /* the answer, sent once the token is recorded */
    int pruned;
    int pending;
    int failed;
    cap_entry *entries;
    size_t n_entries;
} ictx;

static void ictx_free(ictx *x) {
    free(x->entries);
    free(x);
}

static void send_add(ictx *x);

static void answer_issued(ictx *x) {
    x->st.token = x->q.token;
    x->st.concert_id = x->q.concert;
    srv_call_reply(x->q.call, &x->st.base);
    concert_note(x->q.app, x->q.concert);
}

static void on_undo(redisReply *r, const char *err, void *p) {}

/* Over the cap: the token just made is given up, then the call refused. */
static void refuse_over_cap(ictx *x) {
    queue_keys qk;
    make_keys(&qk, x->q.concert);
    const char *args[] = {qk.k[K_USERS],  qk.k[K_TOK],  qk.k[K_WAIT],    qk.k[K_SEEN],
                          qk.k[K_ACTIVE], qk.k[K_GONE], qk.k[K_CONCERT], x->q.token};
    cc_redis_eval(x->q.app->redis, &s_leave, on_undo, NULL, 7, 8, args, NULL);
    srv_call_finish(x->q.call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                    "concert_id: user_id already waits in %" PRId64 " concerts, the most at once; leave one first",
                    x->q.app->cfg.max_queues_per_user);
    ictx_free(x);
}

static void on_issue(redisReply *r, const char *err, void *p) {
    ictx *x = p;
    qctx *q = &x->q;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 6) {
        srv_fail_redis(q->call, r, err);
    } else if (srv_int_at(r, 1) < 0) {
        finish_no_concert(q->call, "concert_id", q->concert);
    } else {
        const char *tok = r->element[0]->type == REDIS_REPLY_STRING ? r->element[0]->str : "";
        fill_status(&x->st, NULL, NULL, (int)srv_int_at(r, 1), srv_int_at(r, 2), srv_int_at(r, 3), srv_int_at(r, 4));
        snprintf(q->token, sizeof q->token, "%s", tok);
        if (srv_int_at(r, 5)) {
            send_add(x); /* a new token: counted against the cap first */
            return;
        }
        answer_issued(x);
    }
    ictx_free(x);
}

static void send_issue(ictx *x) {
    qctx *q = &x->q;
    srv_app *app = q->app;
    queue_keys qk;
    make_keys(&qk, q->concert);
    char rate[24];
    snprintf(rate, sizeof rate, "%" PRId64, app->cfg.admit_rate);
    const char *args[] = {qk.k[K_USERS],  qk.k[K_TOK],     qk.k[K_WAIT], qk.k[K_SEEN], qk.k[K_ACTIVE], qk.k[K_SEQ],
                          qk.k[K_POLICY], qk.k[K_CONCERT], qk.k[K_GONE], x->user,      q->token,       rate};
    if (cc_redis_eval(app->redis, &s_issue, on_issue, x, 9, 12, args, NULL) < 0) {
        srv_fail_no_redis(q->call);
        ictx_free(x);
    }
}

/* One recorded token looked at in its concert: alive if WAITING or ACTIVE. */
typedef struct {
    ictx *x;
    size_t i;
} probe_arg;

static void probes_done(ictx *x) {
    if (x->failed) ictx_free(x);
    else send_add(x);
}

static void on_probe(redisReply *r, const char *err, void *p) {
    probe_arg *a = p;
    ictx *x = a->x;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 3) {
        int64_t state = srv_int_at(r, 1);
        x->entries[a->i].dead = state != 1 && state != 2;
    } else if (!x->failed) {
        x->failed = 1;
        srv_fail_redis(x->q.call, r, err);
    }
    free(a);
    if (--x->pending == 0) probes_done(x);
}

static void probe_entries(ictx *x) {
    srv_app *app = x->q.app;
    x->pending = 1;
    for (size_t i = 0; i < x->n_entries; i++) {
        cap_entry *e = &x->entries[i];
        char concert[SRV_MAX_ID + 1];
        if (!srv_valid_id(e->concert) || srv_token_parse(e->token, strlen(e->token), concert) < 0 ||
            strcmp(concert, e->concert) != 0) {
            e->dead = 1; /* not something the server wrote */
            continue;
        }
        queue_keys qk;
        make_keys(&qk, e->concert);
        char rate[24];
        snprintf(rate, sizeof rate, "%" PRId64, app->cfg.admit_rate);
        const char *args[] = {qk.k[K_TOK], qk.k[K_WAIT], qk.k[K_SEEN], qk.k[K_ACTIVE], qk.k[K_POLICY], rate, e->token};
        probe_arg *a = malloc(sizeof *a);
        if (!a) abort();
        a->x = x, a->i = i;
        x->pending++;
        if (cc_redis_eval(app->redis, &s_watch, on_probe, a, 5, 7, args, NULL) < 0) {
            free(a);
            x->pending--;
            if (!x->failed) {
                x->failed = 1;
                srv_fail_no_redis(x->q.call);
            }
        }
    }
    if (--x->pending == 0) probes_done(x);
}

static void on_add(redisReply *r, const char *err, void *p) {
    ictx *x = p;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
        srv_fail_redis(x->q.call, r, err);
        ictx_free(x);
        return;
    }
    if (srv_int_at(r, 0) == 0) {
        answer_issued(x);
        ictx_free(x);
        return;
    }
    if (x->pruned) {
        refuse_over_cap(x);
        return;
    }
    /* Full: find out which of the recorded tokens still live. */
    size_t n = (r->elements - 1) / 2;
    if (n > MAX_CAP_ENTRIES) n = MAX_CAP_ENTRIES;
    x->entries = calloc(n ? n : 1, sizeof *x->entries);
    if (!x->entries) abort();
    x->n_entries = n;
    for (size_t i = 0; i < n; i++) {
        snprintf(x->entries[i].concert, sizeof x->entries[i].concert, "%s", srv_str_at(r, 1 + 2 * i));
        snprintf(x->entries[i].token, sizeof x->entries[i].token, "%s", srv_str_at(r, 2 + 2 * i));
    }
    x->pruned = 1;
    probe_entries(x);
}

static void send_add(ictx *x) {
    srv_app *app = x->q.app;
    char key[SRV_MAX_USER + 24], cap[24];
    user_key(key, sizeof key, x->user);
    snprintf(cap, sizeof cap, "%" PRId64, app->cfg.max_queues_per_user);
    size_t n_dead = 0;
    for (size_t i = 0; i < x->n_entries; i++) n_dead += x->entries[i].dead;
    const char **args = calloc(5 + 2 * n_dead, sizeof *args);
    if (!args) abort();
    args[0] = key, args[1] = "add", args[2] = x->q.concert, args[3] = x->q.token, args[4] = cap;
    size_t k = 5;
    for (size_t i = 0; i < x->n_entries; i++)
        if (x->entries[i].dead) args[k++] = x->entries[i].concert, args[k++] = x->entries[i].token;
    int rc = cc_redis_eval(app->redis, &s_user, on_add, x, 1, (int)k, args, NULL);
    free(args);
    if (rc < 0) {
        srv_fail_no_redis(x->q.call);
        ictx_free(x);
    }
}

void srv_queue_issue_token(srv_call *call) {
    const Concert__V1__IssueTokenRequest *req = (const void *)srv_call_request(call);
    if (!srv_valid_user(req->user_id)) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
                        "user_id: must be 1..128 bytes without control characters or braces");
        return;
    }
    if (!srv_valid_id(req->concert_id)) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "concert_id: must be 1..64 characters of [A-Za-z0-9_-]");
        return;
    }
    if (srv_limit_call(call, "user_id", req->user_id) < 0) return;
    if (srv_auth_user(call, req->user_id) < 0) return;
    ictx *x = calloc(1, sizeof *x);
    if (!x) abort();
    x->q.call = call;
    x->q.app = srv_call_app(call);
    snprintf(x->q.concert, sizeof x->q.concert, "%s", req->concert_id);
    snprintf(x->user, sizeof x->user, "%s", req->user_id);
    if (srv_token_new(x->q.token, x->q.concert) < 0) {
        ictx_free(x);
        srv_call_finish(call, GRPC_STATUS_INTERNAL, "no randomness available");
        return;
    }
    send_issue(x);
}

/* ---- GetQueueStatus ---- */

static void on_status(redisReply *r, const char *err, void *p) {
    qctx *q = p;
    int64_t state = srv_int_at(r, 0);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 5) {
        srv_fail_redis(q->call, r, err);
    } else if (state < 0) {
        finish_no_concert(q->call, "token", q->concert);
    } else if (state == 0) {
        srv_call_finish(q->call, GRPC_STATUS_UNAUTHENTICATED, "token: unknown token");
    } else {
        Concert__V1__QueueStatus st;
        fill_status(&st, q->token, q->concert, (int)state, srv_int_at(r, 1), srv_int_at(r, 2), srv_int_at(r, 3));
        srv_call_reply(q->call, &st.base);
        /* A live token proves a live queue: make sure someone ticks it. */
        if (state == 1 || state == 2) {
            srv_concert *c = concert_get(q->app, q->concert, 0);
            if (!c) concert_note(q->app, q->concert);
        }
    }
    free(q);
}

static int send_status_query(srv_app *app, const char *concert, const char *token, cc_redis_cb cb, void *payload) {
    queue_keys qk;
    make_keys(&qk, concert);
    char rate[24];
    snprintf(rate, sizeof rate, "%" PRId64, app->cfg.admit_rate);
    const char *args[] = {qk.k[K_TOK],    qk.k[K_WAIT],    qk.k[K_SEEN], qk.k[K_ACTIVE],
                          qk.k[K_POLICY], qk.k[K_CONCERT], token,        rate};
    return cc_redis_eval(app->redis, &s_status, cb, payload, 6, 8, args, NULL);
}

void srv_queue_get_status(srv_call *call) {
    const Concert__V1__GetQueueStatusRequest *req = (const void *)srv_call_request(call);
    qctx *q = qctx_new(call);
    if (take_token(call, q, req->token) < 0 || srv_limit_call(call, "token", q->token) < 0) {
        free(q);
        return;
    }
    if (send_status_query(q->app, q->concert, q->token, on_status, q) < 0) {
        free(q);
        srv_fail_no_redis(call);
    }
}

/* ---- LeaveQueue ---- */

static void on_leave(redisReply *r, const char *err, void *p) {
    qctx *q = p;
    int64_t prev = srv_int_at(r, 0);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 2) {
        srv_fail_redis(q->call, r, err);
    } else if (prev < 0) {
        finish_no_concert(q->call, "token", q->concert);
    } else if (prev == 0) {
        srv_call_finish(q->call, GRPC_STATUS_UNAUTHENTICATED, "token: unknown token");
    } else {
        Concert__V1__LeaveQueueResponse resp;
        concert__v1__leave_queue_response__init(&resp);
        resp.previous_state = (Concert__V1__QueueState)prev;
        srv_call_reply(q->call, &resp.base);
        const char *user = srv_str_at(r, 1);
        if (*user && srv_valid_user(user)) user_record(q->app, user, q->concert, q->token, "del");
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
    const char *args[] = {qk.k[K_USERS],  qk.k[K_TOK],  qk.k[K_WAIT],    qk.k[K_SEEN],
                          qk.k[K_ACTIVE], qk.k[K_GONE], qk.k[K_CONCERT], q->token};
    if (cc_redis_eval(q->app->redis, &s_leave, on_leave, q, 7, 8, args, NULL) < 0) {
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
    if (c) {
        if (w->prev) w->prev->next = w->next; else c->watchers = w->next;
        if (w->next) w->next->prev = w->prev;
        c->n_watchers--;
    }
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
    fill_status(&st, w->token, w->concert ? w->concert->id : "", state, pos, state == 2 ? value : 0, rate);
    srv_call_send(w->call, &st.base);
    w->last_state = state;
    w->last_pos = pos;
    if (state != 1) watcher_end(w, GRPC_STATUS_OK, "");
}

typedef struct {
    srv_concert *concert;
    size_t n;
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
    /* On a Redis outage watchers simply wait for the next tick. The batches of one
     * refresh may travel on different connections and come back in any order: the
     * next refresh starts only when all of them are back. */
    b->concert->watch_batches--;
    for (size_t i = 0; i < b->n; i++) watcher_unref(b->w[i]);
    free(b);
}

static void refresh_watchers(srv_concert *c) {
    srv_app *app = c->app;
    if (c->watch_batches || !c->watchers) return;
    queue_keys qk;
    make_keys(&qk, c->id);
    char rate[24];
    snprintf(rate, sizeof rate, "%" PRId64, app->cfg.admit_rate);
    const char *args[6 + WATCH_CHUNK];
    args[0] = qk.k[K_TOK], args[1] = qk.k[K_WAIT], args[2] = qk.k[K_SEEN], args[3] = qk.k[K_ACTIVE];
    args[4] = qk.k[K_POLICY], args[5] = rate;
    srv_watcher *w = c->watchers;
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
        c->watch_batches++;
    }
}

static void on_watch_cancel(srv_call *call) {
    srv_watcher *w = srv_call_data(call);
    if (w) watcher_end(w, GRPC_STATUS_CANCELLED, "cancelled");
    else srv_call_finish(call, GRPC_STATUS_CANCELLED, "cancelled");
}

/* The first status proves (or refutes) the token before anything is registered: a
 * forged token or a made-up concert costs one script call and no state. */
static void on_watch_first(redisReply *r, const char *err, void *p) {
    srv_watcher *w = p;
    if (w->dead) {
        watcher_unref(w);
        return;
    }
    srv_app *app = srv_call_app(w->call);
    int64_t state = srv_int_at(r, 0);
    char concert[SRV_MAX_ID + 1];
    srv_token_parse(w->token, strlen(w->token), concert);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 5) {
        char msg[256];
        grpc_status_code code = srv_redis_status(r, err, msg, sizeof msg);
        watcher_end(w, code == GRPC_STATUS_OK ? GRPC_STATUS_INTERNAL : code, msg);
    } else if (state < 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "token: no concert '%s' (an admin creates concerts)", concert);
        watcher_end(w, GRPC_STATUS_NOT_FOUND, msg);
    } else if (state == 0) {
        watcher_end(w, GRPC_STATUS_UNAUTHENTICATED, "token: unknown token");
    } else if (app->shutting_down) {
        watcher_end(w, GRPC_STATUS_UNAVAILABLE, "server shutting down");
    } else if (state == 1) {
        /* WAITING: from now on the concert's refresh ticks update this watcher. */
        srv_concert *c = concert_get(app, concert, 0);
        if (!c) c = concert_note(app, concert);
        w->concert = c;
        w->next = c->watchers;
        if (c->watchers) c->watchers->prev = w;
        c->watchers = w;
        c->n_watchers++;
        watcher_update(w, 1, srv_int_at(r, 1), srv_int_at(r, 3));
    } else {
        /* ACTIVE or EXPIRED: sent, then the end. */
        Concert__V1__QueueStatus st;
        fill_status(&st, w->token, concert, (int)state, 0, state == 2 ? srv_int_at(r, 2) : 0, srv_int_at(r, 3));
        srv_call_send(w->call, &st.base);
        watcher_end(w, GRPC_STATUS_OK, "");
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
    srv_watcher *w = calloc(1, sizeof *w);
    if (!w) abort();
    w->call = call;
    memcpy(w->token, q.token, sizeof w->token);
    w->refs = 2; /* the call's and the first status query's */
    srv_call_set_data(call, w);
    srv_call_on_cancel(call, on_watch_cancel);
    if (send_status_query(app, q.concert, w->token, on_watch_first, w) < 0) {
        w->refs--;
        watcher_end(w, GRPC_STATUS_UNAVAILABLE, "redis unavailable");
    }
}

/* ---- ticks ---- */

static void on_admit(redisReply *r, const char *err, void *p) {
    srv_concert *c = p;
    srv_app *app = c->app;
    c->admit_inflight = 0;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 7) {
        int64_t admitted = srv_int_at(r, 0), waiting = srv_int_at(r, 1), active = srv_int_at(r, 2);
        int64_t expired = srv_int_at(r, 3), idled = srv_int_at(r, 4), holds = srv_int_at(r, 5);
        int exists = srv_int_at(r, 6) != 0;
        srv_metrics_queue_tick(c->app, c->id, admitted, waiting, active);
        if (admitted || expired || idled)
            CC_DEBUG("queue_tick", "concert=%s admitted=%" PRId64 " waiting=%" PRId64 " active=%" PRId64
                     " expired=%" PRId64 " idled=%" PRId64, c->id, admitted, waiting, active, expired, idled);
        /* Tell this server's watchers of the new admissions without waiting a tick. */
        if (admitted && c->watchers) refresh_watchers(c);
        /* Ended tokens the queue forgot: out of their users' records too. */
        for (size_t i = 7; i + 1 < r->elements; i += 2) {
            const char *user = srv_str_at(r, i);
            if (srv_valid_user(user)) user_record(app, user, c->id, srv_str_at(r, i + 1), "del");
        }
        int empty = !exists || (waiting == 0 && active == 0 && holds == 0);
        if (!empty) {
            concert_note(app, c->id);
        } else if ((++c->idle_ticks >= 2 || !exists) && !c->watchers && !c->watch_batches && !app->shutting_down) {
            concert_drop(app, c, exists);
        }
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
        const char *args[] = {qk.k[K_USERS],  qk.k[K_TOK],     qk.k[K_WAIT],  qk.k[K_SEEN], qk.k[K_ACTIVE],
                              qk.k[K_GONE],   qk.k[K_ADM],     qk.k[K_POLICY], qk.k[K_CONCERT], qk.k[K_HOLDS],
                              a[0],           a[1],            a[2],          a[3],         a[4]};
        if (cc_redis_eval(app->redis, &s_admit, on_admit, c, 10, 15, args, NULL) == 0) c->admit_inflight = 1;
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
    if (!r || r->type != REDIS_REPLY_ARRAY || app->shutting_down) return;
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
    srv_script_add(&s_user, "queue_user", NULL, 0, lua_queue_user, lua_queue_user_len);
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
