/* bench_scen_deep: does a deep queue slow the queue path? Fills one concert's queue
 * with --fill N waiting users (IssueToken, many in flight, as fast as it goes), then
 * runs the same queue measurement on an empty concert and on the deep one and reports
 * the p99 ratio. With --redis, reads `INFO memory` used_memory before and after the
 * fill (a hiredis sync connection, two commands) for Redis bytes per waiting user.
 * The server must keep the users waiting: start it with --admit-rate 0 and
 * --idle-timeout-ms 0 (otherwise users idle out after a minute and the queue drains). */
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_scen.h"
#include "cc_redis.h"

static int64_t opt_fill = 1000000;
static int64_t opt_fill_conc = 512;
static int64_t opt_fill_timeout = 900;
static int64_t opt_polls = 9;
static const char *opt_redis = NULL;

static const cc_opt opts[] = {
    {"fill", NULL, CC_OPT_INT, &opt_fill, "N", "waiting users put in the deep queue (default 1000000)", 1,
     100000000},
    {"fill-concurrency", NULL, CC_OPT_INT, &opt_fill_conc, "N", "IssueToken calls in flight while filling (default 512)",
     1, 100000},
    {"fill-timeout", NULL, CC_OPT_INT, &opt_fill_timeout, "S", "give up filling after S seconds (default 900)", 1,
     86400},
    {"polls", NULL, CC_OPT_INT, &opt_polls, "N",
     "measurement: GetQueueStatus polls per user before a fresh user joins (default 9: 10 % IssueToken)", 0,
     1000000000},
    {"redis", NULL, CC_OPT_STR, &opt_redis, "URL",
     "redis://host:port[/db] of the server's Redis: report used_memory per waiting user", 0, 0},
    {0},
};

/* used_memory from INFO memory; -1 on any failure (reason in err). */
static int64_t redis_used_memory(const char *url, char *err, size_t errlen) {
    cc_redis_url u;
    if (cc_redis_url_parse(&u, url, err, errlen) < 0) return -1;
    if (u.sentinel) {
        snprintf(err, errlen, "--redis: give the primary as redis://host:port, not sentinel://");
        return -1;
    }
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout(u.host[0], u.port[0], tv);
    if (!c || c->err) {
        snprintf(err, errlen, "cannot connect to Redis at %.100s:%d: %.100s", u.host[0], u.port[0],
                 c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        return -1;
    }
    redisSetTimeout(c, tv);
    int64_t used = -1;
    redisReply *r = redisCommand(c, "INFO memory");
    if (r && r->type == REDIS_REPLY_STRING) {
        const char *p = strstr(r->str, "\nused_memory:");
        if (!p && !strncmp(r->str, "used_memory:", 12)) p = r->str - 1;
        if (p) used = strtoll(p + 13, NULL, 10);
    }
    if (used < 0) snprintf(err, errlen, "INFO memory from Redis had no used_memory: %s", r ? "" : c->errstr);
    if (r) freeReplyObject(r);
    redisFree(c);
    return used;
}

static bench_result *measure(bench_ctx *c, const char *concert, const char *name) {
    bench_queue *q = bench_queue_new(c->engine, concert, NULL, opt_polls, 0);
    bench_phase ph = bench_phase_from_opts(c->o, name, 64, 2, 10);
    bench_queue_phase(q, &ph);
    bench_result *res = bench_engine_run(c->engine, &ph, c->procs);
    if (res) {
        bench_queue_findings(q, res);
        int64_t lo, hi;
        bench_queue_positions(q, &lo, &hi);
        bench_result_kv_num(res, "queue depth seen by the first new user", lo > 0 ? (double)(lo - 1) : 0, "users");
    }
    bench_queue_free(q);
    return res;
}

static void ratio(bench_report *rep, const bench_result *deep, const bench_result *empty, const char *method,
                  const char *label) {
    int md = method ? bench_result_method(deep, method) : -1;
    int me = method ? bench_result_method(empty, method) : -1;
    if (method && (md < 0 || me < 0)) return;
    double d = bench_result_ms(deep, md, 99), e = bench_result_ms(empty, me, 99);
    if (e <= 0) return;
    char key[96];
    snprintf(key, sizeof key, "p99 deep / empty, %s", label);
    bench_report_kv_num(rep, key, d / e, "x");
}

static int deep_run(bench_ctx *c) {
    char deep[96], empty[96], err[256];
    snprintf(deep, sizeof deep, "%s", c->o->concert);
    snprintf(empty, sizeof empty, "%.80s-empty", c->o->concert);
    int64_t before = -1, after = -1;
    if (opt_redis) {
        before = redis_used_memory(opt_redis, err, sizeof err);
        if (before < 0) {
            fprintf(stderr, "concert-bench: deep-queue: %s\n", err);
            return -1;
        }
    }

    /* 1. Fill. */
    bench_queue *fq = bench_queue_new(c->engine, deep, NULL, 0, opt_fill);
    bench_phase ph;
    memset(&ph, 0, sizeof ph);
    ph.name = "deep-queue: fill";
    ph.concurrency = (int)opt_fill_conc;
    ph.users = (int)opt_fill_conc;
    ph.warmup_s = 0;
    ph.duration_s = (int)opt_fill_timeout;
    bench_queue_phase(fq, &ph);
    bench_result *fill = bench_engine_run(c->engine, &ph, c->procs);
    if (!fill) {
        bench_queue_free(fq);
        return -1;
    }
    int64_t issued = bench_queue_issued(fq);
    bench_queue_free(fq);
    bench_result_kv_num(fill, "users asked to wait", (double)opt_fill, "");
    bench_result_kv_num(fill, "users waiting after the fill (IssueToken OK)", (double)issued, "");
    bench_result_kv_num(fill, "fill time", fill->elapsed_s, "s");
    bench_result_kv_text(fill, "concert", "%s", deep);
    if (opt_redis) {
        after = redis_used_memory(opt_redis, err, sizeof err);
        if (after >= 0 && issued > 0) {
            bench_result_kv_num(fill, "Redis used_memory before", (double)before, "bytes");
            bench_result_kv_num(fill, "Redis used_memory after", (double)after, "bytes");
            bench_result_kv_num(fill, "Redis memory per waiting user", (double)(after - before) / (double)issued,
                                "bytes");
            bench_report_kv_num(c->report, "Redis memory per waiting user", (double)(after - before) / (double)issued,
                                "bytes");
        } else if (after < 0) {
            fprintf(stderr, "concert-bench: deep-queue: after the fill: %s\n", err);
        }
    }
    bench_report_add(c->report, fill);
    if (issued < opt_fill)
        fprintf(stderr, "concert-bench: deep-queue: only %" PRId64 " of %" PRId64 " users joined; measuring anyway\n",
                issued, opt_fill);

    /* 2. The same measurement on an empty concert, then on the deep one. */
    bench_result *e = measure(c, empty, "deep-queue: empty concert");
    if (!e) return -1;
    bench_report_add(c->report, e);
    char name[64];
    snprintf(name, sizeof name, "deep-queue: %s waiting", issued >= 1000000 ? "1M" : "N");
    if (issued < 1000000) snprintf(name, sizeof name, "deep-queue: %" PRId64 " waiting", issued);
    bench_result *d = measure(c, deep, name);
    if (!d) return -1;
    bench_report_add(c->report, d);

    bench_report_kv_num(c->report, "users waiting in the deep queue", (double)issued, "");
    ratio(c->report, d, e, NULL, "all calls");
    ratio(c->report, d, e, "IssueToken", "IssueToken");
    ratio(c->report, d, e, "GetQueueStatus", "GetQueueStatus");
    double r = bench_result_ms(e, -1, 99) > 0 ? bench_result_ms(d, -1, 99) / bench_result_ms(e, -1, 99) : 0;
    bench_report_kv_text(c->report, "target: p99 with the deep queue <= 2x the empty one", "%s (%.2fx)",
                         r > 0 && r <= 2.0 ? "met" : "MISSED", r);
    double tr = bench_result_rps(e) > 0 ? bench_result_rps(d) / bench_result_rps(e) : 0;
    bench_report_kv_num(c->report, "throughput deep / empty", tr, "x");
    return 0;
}

const bench_scenario bench_scen_deep_queue = {
    "deep-queue",
    "fill one queue with 1,000,000 waiting users, then compare the queue path with an empty queue",
    "1. fill: IssueToken for --fill distinct users (default 1,000,000) on the run's\n"
    "   concert, --fill-concurrency calls in flight, as fast as the server takes them;\n"
    "2. the queue measurement (as `queue`, with --polls 9: a fresh user joins after 9\n"
    "   polls, so IssueToken is 10 % of the calls) on an empty concert (<concert>-empty);\n"
    "3. the same on the deep concert; the findings give the p99 ratio deep / empty.\n"
    "With --redis URL, Redis used_memory is read before and after the fill (INFO memory)\n"
    "for the memory cost of one waiting user. Start the server with --admit-rate 0 and\n"
    "--idle-timeout-ms 0 so the million users stay WAITING for the whole run.\n"
    "Target (docs/PERFORMANCE.md): deep-queue p99 <= 2x the empty concert's.\n",
    opts,
    deep_run,
};
