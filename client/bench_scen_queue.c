/* bench_scen_queue: the queue path. Each virtual user calls IssueToken once (its own
 * user id, the run's concert), then polls GetQueueStatus with its token; both methods
 * are counted, per method and in total. Options: --token (every user polls one given
 * token: GetQueueStatus only, the same request ghz sends, for the cross-check) and
 * --polls (a user is replaced by a fresh one after N polls, so IssueToken keeps a share
 * of the traffic) and --concerts (users spread over N concerts `<concert>-0..N-1`, which
 * must exist: the Redis Cluster comparison, scripts/bench-cluster.sh). Also the building block of deep-queue (bench_queue_* API), whose
 * fill mode issues tokens for N distinct users as fast as possible. */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "bench_scen.h"
#include "cc_pb.h"
#include "concert/v1/queue.pb-c.h"

struct bench_queue {
    char concert[80];
    char run_id[20]; /* user ids: <run_id>-<user>-<generation> */
    int m_issue, m_status;
    grpc_slice shared; /* --token: the one GetQueueStatus request */
    int has_shared;
    int64_t polls, fill;
    int64_t concerts; /* > 1: user u joins <concert>-<u mod concerts> */
    atomic_llong fill_next, issued;
    atomic_llong states[4]; /* GetQueueStatus answers by state */
    atomic_llong pos_min, pos_max;
    atomic_llong bad_replies;
};

typedef struct {
    grpc_slice status_req;
    int has_token;
    int64_t polls_done;
    uint32_t gen;
} quser;

static void random_hex(char *out, size_t nbytes) {
    unsigned char b[32];
    if (nbytes > sizeof b) nbytes = sizeof b;
    if (getrandom(b, nbytes, 0) != (ssize_t)nbytes) {
        for (size_t i = 0; i < nbytes; i++) b[i] = (unsigned char)rand();
    }
    for (size_t i = 0; i < nbytes; i++) sprintf(out + 2 * i, "%02x", b[i]);
}

static grpc_slice pack_issue(const bench_queue *q, const char *user, uint64_t uid) {
    Concert__V1__IssueTokenRequest req;
    concert__v1__issue_token_request__init(&req);
    char cid[120];
    req.user_id = (char *)user;
    req.concert_id = (char *)q->concert;
    if (q->concerts > 1) {
        snprintf(cid, sizeof cid, "%s-%" PRIu64, q->concert, uid % (uint64_t)q->concerts);
        req.concert_id = cid;
    }
    return bench_pack(&req.base);
}

static grpc_slice pack_status(const char *token) {
    Concert__V1__GetQueueStatusRequest req;
    concert__v1__get_queue_status_request__init(&req);
    req.token = (char *)token;
    return bench_pack(&req.base);
}

static int q_next(bench_user *u) {
    bench_queue *q = bench_user_payload(u);
    quser *qu = bench_user_data(u);
    char user[96];
    if (q->fill) {
        long long n = atomic_fetch_add(&q->fill_next, 1);
        if (n >= q->fill) return -1;
        snprintf(user, sizeof user, "fill-%s-%lld", q->run_id, n);
        grpc_slice s = pack_issue(q, user, (uint64_t)n);
        int rc = bench_user_unary(u, q->m_issue, s);
        grpc_slice_unref(s);
        return rc;
    }
    if (q->has_shared) return bench_user_unary(u, q->m_status, q->shared);
    if (qu->has_token && q->polls > 0 && qu->polls_done >= q->polls) {
        /* This user is done polling: a fresh user takes its place. */
        grpc_slice_unref(qu->status_req);
        qu->has_token = 0;
        qu->gen++;
    }
    if (!qu->has_token) {
        snprintf(user, sizeof user, "%s-%" PRIu64 "-%u", q->run_id, bench_user_id(u), qu->gen);
        grpc_slice s = pack_issue(q, user, bench_user_id(u));
        int rc = bench_user_unary(u, q->m_issue, s);
        grpc_slice_unref(s);
        return rc;
    }
    qu->polls_done++;
    return bench_user_unary(u, q->m_status, qu->status_req);
}

static void atomic_min(atomic_llong *a, long long v) {
    long long cur = atomic_load(a);
    while ((cur == 0 || v < cur) && !atomic_compare_exchange_weak(a, &cur, v)) {
    }
}

static void atomic_max(atomic_llong *a, long long v) {
    long long cur = atomic_load(a);
    while (v > cur && !atomic_compare_exchange_weak(a, &cur, v)) {
    }
}

static void q_done(bench_user *u, int method, grpc_status_code code, grpc_byte_buffer *resp) {
    bench_queue *q = bench_user_payload(u);
    quser *qu = bench_user_data(u);
    if (code != GRPC_STATUS_OK) return;
    if (method == q->m_issue && q->fill) {
        atomic_fetch_add(&q->issued, 1);
        return;
    }
    /* Every reply unpacked where it is into a stack arena: no malloc, no copy (cc_pb.h).
     * A QueueStatus (a token, a concert id, a receipt) takes well under 1 KB. */
    _Alignas(max_align_t) unsigned char bytes[1024];
    cc_pb_arena arena;
    ProtobufCAllocator alloc;
    cc_pb_arena_init(&arena, bytes, sizeof bytes, &alloc);
    Concert__V1__QueueStatus *st = (void *)cc_pb_unpack_in(&concert__v1__queue_status__descriptor, resp, &alloc);
    if (!st) {
        atomic_fetch_add(&q->bad_replies, 1);
        return;
    }
    if (method == q->m_issue) {
        atomic_fetch_add(&q->issued, 1);
        if (st->position > 0) {
            atomic_min(&q->pos_min, st->position);
            atomic_max(&q->pos_max, st->position);
        }
        if (st->token && *st->token && !qu->has_token) {
            qu->status_req = pack_status(st->token);
            qu->has_token = 1;
            qu->polls_done = 0;
        }
    } else if (method == q->m_status) {
        int s = (int)st->state;
        if (s >= 0 && s < 4) atomic_fetch_add(&q->states[s], 1);
    }
    if (arena.spilled) protobuf_c_message_free_unpacked(&st->base, &alloc); /* else nothing was malloc'd */
}

static void q_user_free(bench_user *u) {
    quser *qu = bench_user_data(u);
    if (qu->has_token) grpc_slice_unref(qu->status_req);
    qu->has_token = 0;
}

static const bench_user_ops queue_ops = {.next = q_next, .unary_done = q_done, .user_free = q_user_free};

bench_queue *bench_queue_new(bench_engine *e, const char *concert, const char *token, int64_t polls, int64_t fill) {
    bench_queue *q = calloc(1, sizeof *q);
    if (!q) abort();
    snprintf(q->concert, sizeof q->concert, "%s", concert);
    random_hex(q->run_id, 4);
    q->m_issue = bench_engine_method(e, "/concert.v1.QueueService/IssueToken", "IssueToken", 0);
    q->m_status = bench_engine_method(e, "/concert.v1.QueueService/GetQueueStatus", "GetQueueStatus", 0);
    if (token && *token) {
        q->shared = pack_status(token);
        q->has_shared = 1;
    }
    q->polls = polls > 0 ? polls : 0;
    q->fill = fill > 0 ? fill : 0;
    return q;
}

void bench_queue_free(bench_queue *q) {
    if (!q) return;
    if (q->has_shared) grpc_slice_unref(q->shared);
    free(q);
}

void bench_queue_phase(bench_queue *q, bench_phase *ph) {
    ph->ops = &queue_ops;
    ph->payload = q;
    ph->user_data_size = sizeof(quser);
}

void bench_queue_positions(const bench_queue *q, int64_t *min, int64_t *max) {
    *min = atomic_load(&q->pos_min);
    *max = atomic_load(&q->pos_max);
}

int64_t bench_queue_issued(const bench_queue *q) { return atomic_load(&q->issued); }

void bench_queue_findings(const bench_queue *q, bench_result *res) {
    static const char *const names[4] = {"UNSPECIFIED", "WAITING", "ACTIVE", "EXPIRED"};
    char buf[160];
    int n = 0;
    for (int s = 1; s < 4; s++) {
        long long v = atomic_load(&q->states[s]);
        if (v) n += snprintf(buf + n, sizeof buf - (size_t)n, "%s%s %lld", n ? ", " : "", names[s], v);
        if (n >= (int)sizeof buf) break;
    }
    if (n) bench_result_kv_text(res, "GetQueueStatus states seen (whole run incl. warmup)", "%s", buf);
    int64_t lo, hi;
    bench_queue_positions(q, &lo, &hi);
    if (hi) bench_result_kv_text(res, "IssueToken positions returned", "%" PRId64 " .. %" PRId64, lo, hi);
    long long bad = atomic_load(&q->bad_replies);
    if (bad) bench_result_kv_num(res, "responses that were not a QueueStatus", (double)bad, "");
    if (q->concerts > 1) bench_result_kv_text(res, "concerts", "%s-0 .. %s-%lld", q->concert, q->concert, (long long)q->concerts - 1);
    else bench_result_kv_text(res, "concert", "%s", q->concert);
}

/* ---- the `queue` scenario ---- */

static const char *opt_token = NULL;
static int64_t opt_polls = 0, opt_concerts = 1;

static const cc_opt opts[] = {
    {"token", NULL, CC_OPT_STR, &opt_token, "TOKEN",
     "every user polls this token (GetQueueStatus only; the ghz cross-check)", 0, 0},
    {"polls", NULL, CC_OPT_INT, &opt_polls, "N",
     "after N polls a user is replaced by a fresh one (IssueToken again); 0 = poll forever (default)", 0,
     1000000000},
    {"concerts", NULL, CC_OPT_INT, &opt_concerts, "N",
     "spread users over N concerts <concert>-0 .. <concert>-(N-1), which must exist (default 1: --concert itself)",
     1, 100000},
    {0},
};

/* Adds the DESIGN.md queue-path verdict: >= 40,000 req/s, p99 < 10 ms, no failure. */
static void queue_target(bench_result *res) {
    double rps = bench_result_rps(res), p99 = bench_result_ms(res, -1, 99);
    uint64_t errors = bench_result_calls(res) - bench_result_ok(res);
    int met = rps >= 40000 && p99 < 10 && errors == 0;
    bench_result_kv_text(res, "target: >= 40,000 req/s, p99 < 10 ms, no failed request",
                         "%s (%.0f req/s, p99 %.2f ms, %llu failed)", met ? "met" : "MISSED", rps, p99,
                         (unsigned long long)errors);
}

static int queue_run(bench_ctx *c) {
    bench_queue *q = bench_queue_new(c->engine, c->o->concert, opt_token, opt_polls, 0);
    q->concerts = opt_concerts;
    bench_phase ph = bench_phase_from_opts(c->o, opt_token ? "queue (GetQueueStatus, one token)" : "queue", 64, 2,
                                           10);
    bench_queue_phase(q, &ph);
    bench_result *res = bench_engine_run(c->engine, &ph, c->procs);
    if (!res) {
        bench_queue_free(q);
        return -1;
    }
    bench_queue_findings(q, res);
    queue_target(res);
    bench_report_add(c->report, res);
    bench_queue_free(q);
    return 0;
}

const bench_scenario bench_scen_queue = {
    "queue",
    "IssueToken once per virtual user, then GetQueueStatus polling (the waiting room's hot path)",
    "Each virtual user joins the run's concert with IssueToken (its own user id), then\n"
    "polls GetQueueStatus with its token for the rest of the run. Both methods are\n"
    "reported, per method and in total, with the states the polls saw. Start the server\n"
    "with --admit-rate 0 to keep every user WAITING (with admission on, tokens turn ACTIVE\n"
    "after a while; the numbers are valid either way, the states seen say which).\n"
    "--users larger than --concurrency spreads the polls over more tokens; --polls N\n"
    "replaces a user by a fresh one after N polls so IssueToken keeps a steady share.\n"
    "--concerts N spreads the users over the existing concerts <concert>-0 .. -(N-1).\n"
    "--token T makes every call GetQueueStatus(T): the same request ghz sends, for a\n"
    "like-for-like comparison (scripts/bench.sh does it).\n"
    "Target (docs/PERFORMANCE.md): >= 40,000 req/s with p99 < 10 ms and no failure.\n",
    opts,
    queue_run,
};
