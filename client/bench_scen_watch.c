/* bench_scen_watch: many concurrent WatchQueueStatus streams held by one server. Every
 * virtual user joins the run's concert (IssueToken) and opens a watch stream, then
 * holds it for the whole run while the server admits users at its rate; streams end
 * by themselves when their token turns ACTIVE (or EXPIRED). Reports how many opened,
 * the messages received, how the streams ended, how many were still open at the end,
 * and the watched processes' memory (the server's RSS is the point). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "bench_scen.h"
#include "cc_pb.h"
#include "concert/v1/queue.pb-c.h"

#define ISSUE_TRIES 3

static int64_t opt_open_conc = 500;

static const cc_opt opts[] = {
    {"open-concurrency", NULL, CC_OPT_INT, &opt_open_conc, "N",
     "users opening at once (IssueToken sent, first status not yet seen); default 500, 0 = all at once", 0,
     10000000},
    {0},
};

typedef struct {
    const char *concert;
    char run_id[12];
    int m_issue, m_watch;
    atomic_llong opening; /* users between their IssueToken and their first status */
    atomic_llong issued, issue_failed, ended_active, ended_expired, ended_error, msgs_waiting;
} watch_state;

typedef struct {
    grpc_slice req;
    int has_token;
    int done;
    int tries;
    int last_state;
    int opening;
} wuser;

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
    if (st->token && *st->token) {
        Concert__V1__WatchQueueStatusRequest req;
        concert__v1__watch_queue_status_request__init(&req);
        req.token = st->token;
        wu->req = bench_pack(&req.base);
        wu->has_token = 1;
        atomic_fetch_add(&s->issued, 1);
    }
    protobuf_c_message_free_unpacked(&st->base, NULL);
}

static void w_msg(bench_user *u, int method, grpc_byte_buffer *msg) {
    watch_state *s = bench_user_payload(u);
    wuser *wu = bench_user_data(u);
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
    s->m_watch = bench_engine_method(c->engine, "/concert.v1.QueueService/WatchQueueStatus", "WatchQueueStatus", 1);

    bench_phase ph;
    memset(&ph, 0, sizeof ph);
    ph.name = "watch";
    ph.users = bench_opt(c->o->users, 10000);
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
    int mw = bench_result_method(res, "WatchQueueStatus");
    const bench_method_result *w = mw >= 0 ? &res->m[mw] : NULL;
    uint64_t opened = w ? w->hist.count : 0, still = w ? w->open_at_end : 0;
    bench_result_kv_num(res, "streams requested", ph.users, "");
    bench_result_kv_num(res, "users opening at once (at most)", opt_open_conc > 0 ? (double)opt_open_conc : ph.users,
                        "");
    bench_result_kv_num(res, "tokens issued", (double)atomic_load(&s->issued), "");
    bench_result_kv_num(res, "streams opened (first status received)", (double)opened, "");
    bench_result_kv_num(res, "streams still open at the end (held)", (double)still, "");
    bench_result_kv_num(res, "streams ended ACTIVE (admitted while watching)", (double)atomic_load(&s->ended_active),
                        "");
    bench_result_kv_num(res, "streams ended EXPIRED", (double)atomic_load(&s->ended_expired), "");
    bench_result_kv_num(res, "streams ended with an error", (double)atomic_load(&s->ended_error), "");
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
        bench_result_kv_text(res, "target: server RSS < 64 MB with the streams open", "%s (%s max %.1f MiB, %llu opened)",
                             mb < 64 && opened >= (uint64_t)ph.users ? "met" : "MISSED", res->procs[p].name, mb,
                             (unsigned long long)opened);
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
    "Target (docs/PERFORMANCE.md): 10,000 streams with server RSS under 64 MB.\n",
    opts,
    watch_run,
};
