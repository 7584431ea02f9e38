/* bench_scen_watch: many concurrent WatchQueueStatus streams held by one server. Every
 * virtual user joins the run's concert (IssueToken) and opens a watch stream, then
 * holds it for the whole run while the server admits users at its rate; streams end
 * by themselves when their token turns ACTIVE (or EXPIRED). Reports how many opened,
 * the messages received, how the streams ended, how many were still open at the end,
 * and the watched processes' memory (the server's RSS is the point).
 * With --tokens-per-stream K > 1 an engine user stands for K users: it joins K times
 * and watches the K tokens on one WatchQueueStatuses stream (one request, then
 * half-closed: the server ends the stream once every token had its last update). */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "bench_scen.h"
#include "cc_pb.h"
#include "concert/v1/queue.pb-c.h"

#define ISSUE_TRIES 3

static int64_t opt_open_conc = 500;
static int64_t opt_per_stream = 1;

static const cc_opt opts[] = {
    {"open-concurrency", NULL, CC_OPT_INT, &opt_open_conc, "N",
     "streams opening at once (IssueToken sent, first status not yet seen); default 500, 0 = all at once", 0,
     10000000},
    {"tokens-per-stream", NULL, CC_OPT_INT, &opt_per_stream, "K",
     "tokens watched per stream: 1 (default) = one WatchQueueStatus stream per user; K > 1 = one "
     "WatchQueueStatuses stream per K users (the server's --max-tokens-per-stream must allow K)", 1, 100000},
    {0},
};

typedef struct {
    const char *concert;
    char run_id[12];
    int m_issue, m_watch;
    int per_stream;       /* K */
    int64_t tokens_total; /* --users */
    atomic_llong opening; /* users between their IssueToken and their first status */
    atomic_llong issued, issue_failed, ended_active, ended_expired, ended_error, msgs_waiting, tokens_seen;
} watch_state;

typedef struct {
    grpc_slice req;
    int has_token;
    int done;
    int tries;
    int last_state;
    int opening;
    /* K > 1: this user's tokens (sorted once all are issued) and which had an update */
    char **tokens;
    int n_tokens, want, ended;
    unsigned char *seen;
} wuser;

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Tokens this engine user watches: K, the last stream fewer if --users is not a multiple. */
static int tokens_of(const watch_state *s, bench_user *u) {
    int64_t first = (int64_t)bench_user_id(u) * s->per_stream;
    int64_t left = s->tokens_total - first;
    return left <= 0 ? 0 : left < s->per_stream ? (int)left : s->per_stream;
}

static void opened(watch_state *s, wuser *wu) {
    if (!wu->opening) return;
    wu->opening = 0;
    atomic_fetch_sub(&s->opening, 1);
}

static int w_next(bench_user *u) {
    watch_state *s = bench_user_payload(u);
    wuser *wu = bench_user_data(u);
    if (wu->done) return -1;
    if (wu->has_token) return bench_user_stream(u, s->m_watch, wu->req);
    if (s->per_stream > 1 && !wu->want && !(wu->want = tokens_of(s, u))) return -1;
    if (wu->tries >= ISSUE_TRIES) {
        opened(s, wu);
        return -1;
    }
    if (!wu->opening) {
        /* Ramp: at most --open-concurrency users opening at once. */
        if (opt_open_conc > 0 && atomic_load(&s->opening) >= opt_open_conc) return 1;
        wu->opening = 1;
        atomic_fetch_add(&s->opening, 1);
    }
    wu->tries++;
    char user[64];
    if (s->per_stream > 1)
        snprintf(user, sizeof user, "watch-%s-%llu-%d", s->run_id, (unsigned long long)bench_user_id(u), wu->n_tokens);
    else
        snprintf(user, sizeof user, "watch-%s-%llu", s->run_id, (unsigned long long)bench_user_id(u));
    Concert__V1__IssueTokenRequest req;
    concert__v1__issue_token_request__init(&req);
    req.user_id = user;
    req.concert_id = (char *)s->concert;
    grpc_slice sl = bench_pack(&req.base);
    int rc = bench_user_unary(u, s->m_issue, sl);
    grpc_slice_unref(sl);
    return rc;
}

static void w_unary(bench_user *u, int method, grpc_status_code code, grpc_byte_buffer *resp) {
    watch_state *s = bench_user_payload(u);
    wuser *wu = bench_user_data(u);
    if (code != GRPC_STATUS_OK) {
        atomic_fetch_add(&s->issue_failed, 1);
        return;
    }
    Concert__V1__QueueStatus *st = (void *)cc_pb_unpack(&concert__v1__queue_status__descriptor, resp);
    if (!st) return;
    if (s->per_stream > 1 && st->token && *st->token) {
        if (!wu->tokens && !(wu->tokens = calloc((size_t)wu->want, sizeof *wu->tokens))) abort();
        if (!(wu->tokens[wu->n_tokens++] = strdup(st->token))) abort();
        wu->tries = 0;
        atomic_fetch_add(&s->issued, 1);
        if (wu->n_tokens == wu->want) {
            qsort(wu->tokens, (size_t)wu->n_tokens, sizeof *wu->tokens, cmp_str);
            if (!(wu->seen = calloc((size_t)wu->n_tokens, 1))) abort();
            Concert__V1__WatchQueueStatusesRequest req;
            concert__v1__watch_queue_statuses_request__init(&req);
            req.add_tokens = wu->tokens;
            req.n_add_tokens = (size_t)wu->n_tokens;
            wu->req = bench_pack(&req.base);
            wu->has_token = 1;
        }
    } else if (st->token && *st->token) {
        Concert__V1__WatchQueueStatusRequest req;
        concert__v1__watch_queue_status_request__init(&req);
        req.token = st->token;
        wu->req = bench_pack(&req.base);
        wu->has_token = 1;
        atomic_fetch_add(&s->issued, 1);
    }
    protobuf_c_message_free_unpacked(&st->base, NULL);
}

/* K > 1: one token's update on the user's WatchQueueStatuses stream. */
static void w_msg_many(watch_state *s, wuser *wu, grpc_byte_buffer *msg) {
    Concert__V1__WatchQueueStatusesResponse *m =
        (void *)cc_pb_unpack(&concert__v1__watch_queue_statuses_response__descriptor, msg);
    if (!m) return;
    opened(s, wu);
    const char *key = m->token;
    char **hit = key ? bsearch(&key, wu->tokens, (size_t)wu->n_tokens, sizeof *wu->tokens, cmp_str) : NULL;
    if (hit) {
        size_t i = (size_t)(hit - wu->tokens);
        if (!wu->seen[i]) {
            wu->seen[i] = 1;
            atomic_fetch_add(&s->tokens_seen, 1);
        }
        int state = m->status ? (int)m->status->state : 0;
        if (m->error_code) {
            atomic_fetch_add(&s->ended_error, 1);
            wu->ended++;
        } else if (state == CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE) {
            atomic_fetch_add(&s->ended_active, 1);
            wu->ended++;
        } else if (state == CONCERT__V1__QUEUE_STATE__QUEUE_STATE_EXPIRED) {
            atomic_fetch_add(&s->ended_expired, 1);
            wu->ended++;
        } else if (state == CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING) {
            atomic_fetch_add(&s->msgs_waiting, 1);
        }
    }
    protobuf_c_message_free_unpacked(&m->base, NULL);
}

static void w_msg(bench_user *u, int method, grpc_byte_buffer *msg) {
    watch_state *s = bench_user_payload(u);
    wuser *wu = bench_user_data(u);
    if (s->per_stream > 1) {
        w_msg_many(s, wu, msg);
        return;
    }
    Concert__V1__QueueStatus *st = (void *)cc_pb_unpack(&concert__v1__queue_status__descriptor, msg);
    if (!st) return;
    opened(s, wu);
    wu->last_state = (int)st->state;
    if (st->state == CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING) atomic_fetch_add(&s->msgs_waiting, 1);
    protobuf_c_message_free_unpacked(&st->base, NULL);
}

static void w_end(bench_user *u, int method, grpc_status_code code) {
    watch_state *s = bench_user_payload(u);
    wuser *wu = bench_user_data(u);
    wu->done = 1; /* one stream per user: no reconnect, so every failure shows */
    opened(s, wu);
    if (s->per_stream > 1) {
        /* Tokens without their last update when the stream ended count as errors. */
        if (wu->n_tokens > wu->ended) atomic_fetch_add(&s->ended_error, wu->n_tokens - wu->ended);
        wu->ended = wu->n_tokens;
        return;
    }
    if (code == GRPC_STATUS_OK && wu->last_state == CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE)
        atomic_fetch_add(&s->ended_active, 1);
    else if (code == GRPC_STATUS_OK && wu->last_state == CONCERT__V1__QUEUE_STATE__QUEUE_STATE_EXPIRED)
        atomic_fetch_add(&s->ended_expired, 1);
    else
        atomic_fetch_add(&s->ended_error, 1);
}

static void w_free(bench_user *u) {
    wuser *wu = bench_user_data(u);
    if (wu->has_token) grpc_slice_unref(wu->req);
    wu->has_token = 0;
    for (int i = 0; i < wu->n_tokens; i++) free(wu->tokens[i]);
    free(wu->tokens);
    free(wu->seen);
    wu->tokens = NULL, wu->seen = NULL, wu->n_tokens = 0;
}

static const bench_user_ops watch_ops = {
    .next = w_next, .unary_done = w_unary, .stream_msg = w_msg, .stream_end = w_end, .user_free = w_free};

static int watch_run(bench_ctx *c) {
    watch_state *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->concert = c->o->concert;
    unsigned char rb[4] = {0};
    if (getrandom(rb, sizeof rb, 0) != (ssize_t)sizeof rb) rb[0] = (unsigned char)rand();
    snprintf(s->run_id, sizeof s->run_id, "%02x%02x%02x%02x", rb[0], rb[1], rb[2], rb[3]);
    s->m_issue = bench_engine_method(c->engine, "/concert.v1.QueueService/IssueToken", "IssueToken", 0);
    s->per_stream = (int)opt_per_stream;
    const char *label = s->per_stream > 1 ? "WatchQueueStatuses" : "WatchQueueStatus";
    s->m_watch = bench_engine_method(c->engine, s->per_stream > 1 ? "/concert.v1.QueueService/WatchQueueStatuses"
                                                                   : "/concert.v1.QueueService/WatchQueueStatus",
                                     label, 1);

    bench_phase ph;
    memset(&ph, 0, sizeof ph);
    ph.name = "watch";
    s->tokens_total = bench_opt(c->o->users, 10000);
    ph.users = (int)((s->tokens_total + s->per_stream - 1) / s->per_stream); /* one engine user per stream */
    ph.concurrency = ph.users; /* every user holds its stream at once */
    ph.warmup_s = 0;           /* opening the streams is part of what is measured */
    ph.duration_s = bench_opt(c->o->duration, 30);
    ph.ops = &watch_ops;
    ph.payload = s;
    ph.user_data_size = sizeof(wuser);
    bench_result *res = bench_engine_run(c->engine, &ph, c->procs);
    if (!res) {
        free(s);
        return -1;
    }
    int mw = bench_result_method(res, label);
    const bench_method_result *w = mw >= 0 ? &res->m[mw] : NULL;
    uint64_t opened = w ? w->hist.count : 0, still = w ? w->open_at_end : 0;
    bench_result_kv_num(res, "tokens (users) requested", (double)s->tokens_total, "");
    bench_result_kv_num(res, "tokens per stream", s->per_stream, "");
    bench_result_kv_num(res, "streams requested", ph.users, "");
    bench_result_kv_num(res, "users opening at once (at most)", opt_open_conc > 0 ? (double)opt_open_conc : ph.users,
                        "");
    bench_result_kv_num(res, "tokens issued", (double)atomic_load(&s->issued), "");
    bench_result_kv_num(res, "streams opened (first status received)", (double)opened, "");
    bench_result_kv_num(res, "streams still open at the end (held)", (double)still, "");
    const char *what = s->per_stream > 1 ? "tokens" : "streams";
    char k1[96], k2[96], k3[96];
    snprintf(k1, sizeof k1, "%s ended ACTIVE (admitted while watching)", what);
    snprintf(k2, sizeof k2, "%s ended EXPIRED", what);
    snprintf(k3, sizeof k3, "%s ended with an error", what);
    if (s->per_stream > 1)
        bench_result_kv_num(res, "tokens watched (first update received)", (double)atomic_load(&s->tokens_seen), "");
    bench_result_kv_num(res, k1, (double)atomic_load(&s->ended_active), "");
    bench_result_kv_num(res, k2, (double)atomic_load(&s->ended_expired), "");
    bench_result_kv_num(res, k3, (double)atomic_load(&s->ended_error), "");
    bench_result_kv_num(res, "messages received", w ? (double)w->messages : 0, "");
    bench_result_kv_num(res, "IssueToken failures", (double)atomic_load(&s->issue_failed), "");
    /* Concurrency reached: held at the end + those that ended normally. */
    uint64_t peak = 0;
    for (size_t i = 0; i < res->n_points; i++)
        if (res->points[i].streams_open > peak) peak = res->points[i].streams_open;
    bench_result_kv_num(res, "most streams open at once (sampled each second)", (double)peak, "");
    for (int p = 0; p < res->n_procs; p++) {
        if (strncmp(res->procs[p].name, "concert-server", 14) != 0) continue;
        double mb = (double)res->procs[p].rss_max / (1024.0 * 1024);
        bench_result_kv_text(res, "target: server RSS < 64 MB with the streams open",
                             "%s (%s max %.1f MiB, %llu streams opened, %lld tokens)",
                             mb < 64 && opened >= (uint64_t)ph.users ? "met" : "MISSED", res->procs[p].name, mb,
                             (unsigned long long)opened, (long long)s->tokens_total);
        break;
    }
    bench_result_kv_text(res, "concert", "%s", s->concert);
    bench_report_add(c->report, res);
    free(s);
    return 0;
}

const bench_scenario bench_scen_watch = {
    "watch",
    "N concurrent WatchQueueStatus streams held while the server admits (default 10,000)",
    "Every virtual user (--users, default 10000) joins the run's concert with IssueToken\n"
    "and opens one WatchQueueStatus stream (at most --open-concurrency users opening at\n"
    "once), and holds it for the rest of --duration seconds (default 30). --concurrency,\n"
    "--rate and --warmup do not apply: every user holds its stream, and opening them is\n"
    "part of the test. The server pushes a status whenever a position changes and ends\n"
    "a stream when its token turns ACTIVE, so start it with an admission rate (e.g.\n"
    "--admit-rate 100 --max-active 100000) to see streams end ACTIVE during the run.\n"
    "Reports streams opened, messages, how they ended, how many were still open at the\n"
    "end, and the watched processes' RSS: pass the server with --watch-pid\n"
    "concert-server=PID.\n"
    "10,000 streams over the default 4 connections is 2,500 HTTP/2 streams each; the\n"
    "server allows 100,000 per connection.\n"
    "--tokens-per-stream K (default 1): each stream watches K users' tokens through\n"
    "WatchQueueStatuses (one request with all K, then half-closed), so --users 10000\n"
    "--tokens-per-stream 100 holds 100 streams; the counts of how streams ended are then\n"
    "per token. The server's --max-tokens-per-stream (default 1000) must allow K.\n"
    "Target (docs/PERFORMANCE.md): 10,000 streams with server RSS under 64 MB.\n",
    opts,
    watch_run,
};
