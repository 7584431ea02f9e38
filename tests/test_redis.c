/* test_redis: cc_redis's lanes against a real redis-server: small commands share one
 * connection, the bulk lane is another connection of the same node, a blocked bulk lane
 * does not hold small commands, one connection carries both lanes, and the lanes move
 * (and the small one stays put) when connections drop and come back. Connections are
 * told apart by CLIENT ID, asked through the lane under test. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "cc_redis.h"
#include "th.h"

static th_redis redis;
static uv_loop_t loop;
static uv_timer_t tick; /* keeps uv_run(UV_RUN_ONCE) waking up while a test waits */
static cc_redis *pool;

typedef struct {
    int done;
    long long value; /* an integer reply */
    int type;
    char err[64];
} answer;

/* Answers live here, not on a test's stack: a failed assertion leaves the test while
 * commands are pending, and their callbacks run when the pool closes. */
static answer answers[256];
static int n_answers;

static answer *new_answer(void) {
    cr_assert_lt(n_answers, 256);
    return &answers[n_answers++];
}

static void on_tick(uv_timer_t *t) { (void)t; }

static void open_pool(int connections) {
    n_answers = 0;
    th_redis_start(&redis);
    cr_assert_eq(uv_loop_init(&loop), 0);
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, on_tick, 5, 5);
    cc_redis_config cfg = {.url = redis.url, .connections = connections, .command_timeout_ms = 8000};
    char err[200];
    cr_assert_eq(cc_redis_create(&pool, &loop, &cfg, err, sizeof err), 0, "%s", err);
}

static void close_pool(void) {
    if (pool) cc_redis_close(pool);
    pool = NULL;
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&loop, UV_RUN_DEFAULT); /* until the pool's handles are closed and it is freed */
    cr_expect_eq(uv_loop_close(&loop), 0, "every handle closed");
    th_redis_stop(&redis);
}

static void start2(void) { open_pool(2); }
static void start1(void) { open_pool(1); }
static void start3(void) { open_pool(3); }
static void stop(void) { close_pool(); }

/* Runs the loop until *flag is set or limit_ms pass; 1 if it was set. */
static int run_until(const int *flag, int limit_ms) {
    uint64_t end = th_now_ms() + (uint64_t)limit_ms;
    while (!*flag && th_now_ms() < end) uv_run(&loop, UV_RUN_ONCE);
    return *flag;
}

/* Connections from this pool as Redis counts them (the inspector's own excluded). */
static long long pool_clients(void) { return th_redis_info_int(&redis, "connected_clients") - 1; }

static void wait_clients(long long want) {
    uint64_t end = th_now_ms() + 10000;
    long long got;
    while ((got = pool_clients()) != want && th_now_ms() < end)
        for (int i = 0; i < 4; i++) uv_run(&loop, UV_RUN_ONCE);
    cr_assert_eq(got, want, "the pool has %lld connections up, not %lld", got, want);
}

static void on_answer(redisReply *r, const char *err, void *p) {
    answer *a = p;
    a->done = 1;
    a->type = r ? r->type : -1;
    if (r && r->type == REDIS_REPLY_INTEGER) a->value = r->integer;
    if (!r) snprintf(a->err, sizeof a->err, "%s", err ? err : "?");
}

static int send_lane(int bulk, answer *a, int argc, const char **argv) {
    memset(a, 0, sizeof *a);
    return bulk ? cc_redis_command_argv_bulk(pool, on_answer, a, argc, argv, NULL)
                : cc_redis_command_argv(pool, on_answer, a, argc, argv, NULL);
}

/* CLIENT ID of the connection the lane uses now; -1 when the command failed (its
 * connection was just dropped) or was not sent. */
static long long lane_id_try(int bulk) {
    const char *argv[] = {"CLIENT", "ID"};
    answer *a = new_answer();
    if (send_lane(bulk, a, 2, argv) != 0) return -1;
    cr_assert(run_until(&a->done, 5000), "CLIENT ID answered");
    return a->type == REDIS_REPLY_INTEGER ? a->value : -1;
}

static long long lane_id(int bulk) {
    long long id = lane_id_try(bulk);
    cr_assert_geq(id, 0, "CLIENT ID on the %s lane", bulk ? "bulk" : "small");
    return id;
}

static void kill_client(long long id) {
    redisContext *c = th_redis_connect(&redis);
    cr_assert(c);
    redisReply *r = redisCommand(c, "CLIENT KILL ID %lld", id);
    cr_assert(r && r->type == REDIS_REPLY_INTEGER && r->integer == 1, "CLIENT KILL ID %lld", id);
    freeReplyObject(r);
    redisFree(c);
}

/* The lane's CLIENT ID once it differs from `not` (or equals `want` when want > 0):
 * the pool notices a killed connection and reconnects on its own time. */
static long long lane_id_becomes(int bulk, long long not, long long want) {
    uint64_t end = th_now_ms() + 10000;
    long long id;
    do {
        id = lane_id_try(bulk);
        if (id >= 0 && (want > 0 ? id == want : id != not)) return id;
        /* A failure means the drop was just noticed: ask again at once (the pool
         * reconnects after a 50 ms backoff, the fallback is seen before that). */
        if (id >= 0)
            for (int i = 0; i < 4; i++) uv_run(&loop, UV_RUN_ONCE);
    } while (th_now_ms() < end);
    cr_assert_fail("the %s lane stayed on client %lld", bulk ? "bulk" : "small", id);
    return -1;
}

Test(lanes, small_commands_share_one_connection_bulk_another, .init = start2, .fini = stop, .timeout = 60) {
    wait_clients(2);
    /* A loop turn's worth, sent together: small ones, bulk ones, then both alternating
     * (round robin over two connections would split the first group). */
    enum { N = 6, ALL = 4 * N };
    const char *argv[] = {"CLIENT", "ID"};
    answer *a[ALL];
    int lane[ALL];
    for (int i = 0; i < ALL; i++) {
        lane[i] = i < N ? 0 : i < 2 * N ? 1 : i % 2;
        cr_assert_eq(send_lane(lane[i], a[i] = new_answer(), 2, argv), 0);
    }
    for (int i = 0; i < ALL; i++) cr_assert(run_until(&a[i]->done, 5000), "command %d answered", i);
    long long s0 = a[0]->value, b0 = a[N]->value;
    for (int i = 0; i < ALL; i++) {
        long long want = lane[i] ? b0 : s0;
        cr_expect_eq(a[i]->value, want, "command %d of the %s lane went to client %lld, not %lld", i,
                     lane[i] ? "bulk" : "small", a[i]->value, want);
    }
    cr_expect_neq(s0, b0, "the bulk lane has a connection of its own");
}

Test(lanes, a_blocked_bulk_lane_does_not_hold_small_commands, .init = start2, .fini = stop, .timeout = 60) {
    wait_clients(2);
    /* BLPOP holds the bulk connection (as a long script or a big reply would)... */
    const char *blpop[] = {"BLPOP", "lanes:list", "20"};
    answer *b = new_answer();
    cr_assert_eq(send_lane(1, b, 3, blpop), 0);
    /* ... while small commands are answered at once, in their order. */
    const char *incr[] = {"INCR", "lanes:n"};
    enum { N = 20 };
    answer *s[N];
    uint64_t t0 = th_now_ms();
    for (int i = 0; i < N; i++) cr_assert_eq(send_lane(0, s[i] = new_answer(), 2, incr), 0);
    cr_assert(run_until(&s[N - 1]->done, 5000), "the small lane answered while the bulk lane was blocked");
    uint64_t took = th_now_ms() - t0;
    cr_expect_lt(took, 2000, "small commands took %llu ms behind a blocked bulk lane", (unsigned long long)took);
    cr_expect(!b->done, "BLPOP is still blocked");
    for (int i = 0; i < N; i++) cr_expect_eq(s[i]->value, i + 1, "INCR %d answered %lld", i, s[i]->value);
    /* A push on the small lane unblocks the bulk one. */
    const char *push[] = {"RPUSH", "lanes:list", "x"};
    cr_assert_eq(send_lane(0, new_answer(), 3, push), 0);
    cr_assert(run_until(&b->done, 5000), "BLPOP answered after the push");
    cr_expect_eq(b->type, REDIS_REPLY_ARRAY);
}

Test(lanes, one_connection_carries_both_lanes, .init = start1, .fini = stop, .timeout = 60) {
    wait_clients(1);
    long long s = lane_id(0), b = lane_id(1);
    cr_expect_eq(s, b, "with --redis-connections 1 both lanes share it (small %lld, bulk %lld)", s, b);
}

Test(lanes, lanes_move_when_connections_drop, .init = start2, .fini = stop, .timeout = 60) {
    wait_clients(2);
    long long s = lane_id(0), b = lane_id(1);
    cr_assert_neq(s, b);
    /* The bulk connection drops: bulk commands share the small lane's, then take the
     * new connection; the small lane never moves. */
    kill_client(b);
    cr_expect_eq(lane_id_becomes(1, b, s), s, "bulk falls back to the small lane's connection");
    long long b2 = lane_id_becomes(1, s, 0);
    cr_expect_neq(b2, b, "a new connection");
    cr_expect_eq(lane_id(0), s, "the small lane stayed on its connection");
    /* The small connection drops: small commands move to the bulk's, and stay there when
     * the other one is back (the bulk lane takes that one). */
    kill_client(s);
    cr_expect_eq(lane_id_becomes(0, s, b2), b2, "small moves to the connection that is up");
    long long b3 = lane_id_becomes(1, b2, 0);
    cr_expect_neq(b3, s);
    cr_expect_eq(lane_id(0), b2, "the small lane did not move back");
    wait_clients(2);
}

Test(lanes, a_third_connection_is_a_spare, .init = start3, .fini = stop, .timeout = 60) {
    wait_clients(3);
    long long s = lane_id(0), b = lane_id(1);
    cr_assert_neq(s, b);
    /* The small lane's connection drops: it takes the spare, not the bulk lane's. */
    kill_client(s);
    long long s2 = lane_id_becomes(0, s, 0);
    cr_expect_neq(s2, b, "the small lane took the spare, not the bulk lane's connection");
    cr_expect_eq(lane_id(1), b, "the bulk lane stayed on its connection");
}
