/* Redis failures: calls fail UNAVAILABLE within their deadline (never hang), health
 * turns NOT_SERVING, and the server recovers by itself when Redis returns. SIGTERM
 * ends watch streams and exits 0. (Metrics: test_metrics.c.) */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "grpc/health/v1/health.pb-c.h"
#include "th.h"

static th_redis redis;
static th_server server;
static cc_client *cli;

#define KEY "resilience-key"

static void make_concerts(void) {
    const char *concerts[] = {"res", "term", "met"};
    for (int i = 0; i < 3; i++) cr_assert_eq(th_admin_concert(cli, KEY, concerts[i]), GRPC_STATUS_OK);
}

static void start(void) {
    memset(&redis, 0, sizeof redis);
    th_redis_start(&redis);
    const char *flags[] = {"--redis-timeout-ms", "400", "--admin-key", KEY, NULL};
    th_server_start(&server, redis.url, flags);
    cli = cc_client_open(server.addr);
    make_concerts();
}

static void stop(void) {
    if (cli) cc_client_close(cli);
    cli = NULL;
    if (redis.pid) kill(redis.pid, SIGCONT);
    th_server_stop(&server);
    th_redis_stop(&redis);
}

static void end_test(void) {
    int rc = th_server_close(&server, &cli);
    cr_assert_eq(rc, 0, "concert-server exit status (log %s)", server.log);
}

static int health(void) {
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckResponse *resp = NULL;
    cc_status st;
    if (cc_client_unary(cli, "/grpc.health.v1.Health/Check", &req.base, &grpc__health__v1__health_check_response__descriptor,
                        (ProtobufCMessage **)&resp, NULL, 0, 2000, &st) != GRPC_STATUS_OK)
        return -1;
    int s = resp->status;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return s;
}

static int not_serving(void *arg) {
    return health() == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
}
static int refused_logged(void *arg) { return th_server_log_has(&server, "Connection refused"); }
static int serving(void *arg) { return health() == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING; }
/* A restarted Redis has lost everything, the concert too: an admin creates it again. */
static int issue_ok(void *arg) {
    return th_admin_concert(cli, KEY, "res") == GRPC_STATUS_OK && th_issue(cli, "again", "res", NULL, NULL) == GRPC_STATUS_OK;
}

Test(redis_failure, killed_then_restarted, .init = start, .fini = stop, .timeout = 60) {
    cr_assert_eq(th_issue(cli, "before", "res", NULL, NULL), GRPC_STATUS_OK);
    th_redis_kill(&redis);
    for (int i = 0; i < 20; i++) {
        cc_status st;
        uint64_t t0 = th_now_ms();
        Concert__V1__IssueTokenRequest req = CONCERT__V1__ISSUE_TOKEN_REQUEST__INIT;
        req.user_id = "during";
        req.concert_id = "res";
        grpc_status_code code = cc_client_unary(cli, "/concert.v1.QueueService/IssueToken", &req.base, NULL, NULL,
                                                NULL, 0, 2000, &st);
        uint64_t took = th_now_ms() - t0;
        cr_assert_eq(code, GRPC_STATUS_UNAVAILABLE, "with Redis dead: %s %s", cc_status_name(code), st.message);
        cr_assert_lt(took, 2000, "the call must fail before its 2 s deadline, took %llu ms", (unsigned long long)took);
    }
    cr_assert(th_wait_for(not_serving, NULL, 20, 5000), "health must say NOT_SERVING while Redis is down");
    th_redis_start(&redis); /* same port, fresh data */
    cr_assert(th_wait_for(issue_ok, NULL, 50, 10000), "the server did not recover within 10 s of Redis' return");
    cr_expect(th_wait_for(serving, NULL, 20, 5000), "health must say SERVING again");
    end_test();
}

Test(redis_failure, hung_redis_times_out, .init = start, .fini = stop, .timeout = 60) {
    cr_assert_eq(th_issue(cli, "before", "res", NULL, NULL), GRPC_STATUS_OK);
    kill(redis.pid, SIGSTOP);
    cc_status st;
    uint64_t t0 = th_now_ms();
    grpc_status_code code = th_issue(cli, "frozen", "res", NULL, &st);
    uint64_t took = th_now_ms() - t0;
    cr_expect_eq(code, GRPC_STATUS_UNAVAILABLE, "a hung Redis: %s %s", cc_status_name(code), st.message);
    cr_expect_lt(took, 1500, "the 400 ms Redis timeout must answer well before the 5 s deadline (%llu ms)",
                 (unsigned long long)took);
    kill(redis.pid, SIGCONT);
    cr_assert(th_wait_for(issue_ok, NULL, 50, 10000), "no recovery after Redis resumed");
    end_test();
}

/* A killed Redis is noticed at once, on every connection: with commands unread in
 * the stopped Redis' socket, SIGKILL makes the kernel reset the connections (EPOLLERR),
 * which hiredis 0.14's libuv adapter ignored until the command timeout (5 s here). */
static void start_long_timeout(void) {
    memset(&redis, 0, sizeof redis);
    th_redis_start(&redis);
    const char *flags[] = {"--redis-timeout-ms", "5000", "--admin-key", KEY, NULL};
    th_server_start(&server, redis.url, flags);
    cli = cc_client_open(server.addr);
    make_concerts();
}

Test(redis_failure, killed_redis_is_noticed_at_once, .init = start_long_timeout, .fini = stop, .timeout = 60) {
    cr_assert_eq(th_issue(cli, "before", "res", NULL, NULL), GRPC_STATUS_OK);
    kill(redis.pid, SIGSTOP);
    /* Calls in flight on both connections (round robin), stuck in the stopped Redis. */
    cc_batch *b = cc_batch_new(cli);
    char users[6][16];
    for (int i = 0; i < 6; i++) {
        snprintf(users[i], sizeof users[i], "stuck-%d", i);
        Concert__V1__IssueTokenRequest req = CONCERT__V1__ISSUE_TOKEN_REQUEST__INIT;
        req.user_id = users[i];
        req.concert_id = "res";
        cc_batch_add(b, "/concert.v1.QueueService/IssueToken", &req.base, NULL, 0, 15000);
    }
    th_pause_ms(300); /* bounded: the calls reach the server and Redis' socket */
    uint64_t t0 = th_now_ms();
    kill(redis.pid, SIGKILL);
    waitpid(redis.pid, NULL, 0);
    redis.pid = 0;
    cc_batch_wait(b);
    uint64_t took = th_now_ms() - t0;
    for (int i = 0; i < 6; i++) {
        cc_status st;
        grpc_status_code code = cc_batch_result(b, i, NULL, NULL, &st);
        cr_expect_eq(code, GRPC_STATUS_UNAVAILABLE, "call %d: %s %s", i, cc_status_name(code), st.message);
    }
    cc_batch_free(b);
    fprintf(stderr, "redis killed: every stuck call failed %llu ms after the kill (command timeout 5000 ms)\n",
            (unsigned long long)took);
    cr_expect_lt(took, 1000, "the calls failed %llu ms after Redis was killed: noticed only by the timeout",
                 (unsigned long long)took);
    /* Reconnects end in 'connection refused' at once, not in a connect timeout. */
    cr_expect(th_wait_for(refused_logged, NULL, 20, 3000), "no 'Connection refused' in %s", server.log);
    cr_expect_not(th_server_log_has(&server, "event=redis_connect_timeout"), "a connect timed out (log %s)", server.log);
    end_test();
}

Test(redis_failure, health_watch_follows_redis, .init = start, .fini = stop, .timeout = 60) {
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    cc_stream *st = cc_client_stream(cli, "/grpc.health.v1.Health/Watch", &req.base, NULL, 0, 30000);
    Grpc__Health__V1__HealthCheckResponse *m = NULL;
    cr_assert_eq(cc_stream_next(st, &grpc__health__v1__health_check_response__descriptor, (ProtobufCMessage **)&m), 1);
    cr_expect_eq(m->status, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    protobuf_c_message_free_unpacked(&m->base, NULL);
    th_redis_kill(&redis);
    cr_assert_eq(cc_stream_next(st, &grpc__health__v1__health_check_response__descriptor, (ProtobufCMessage **)&m), 1);
    cr_expect_eq(m->status, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
    protobuf_c_message_free_unpacked(&m->base, NULL);
    th_redis_start(&redis);
    cr_assert_eq(cc_stream_next(st, &grpc__health__v1__health_check_response__descriptor, (ProtobufCMessage **)&m), 1);
    cr_expect_eq(m->status, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    protobuf_c_message_free_unpacked(&m->base, NULL);
    cc_stream_close(st, NULL);
    end_test();
}

Test(shutdown, sigterm_ends_watches_and_exits_zero, .init = start, .fini = stop, .timeout = 60) {
    Concert__V1__QueueStatus *s = NULL;
    /* Admission is running (default rate) but max active 1000 is far away: the
     * watcher stays WAITING only if we pause it, so use a second concert policy-free
     * token and simply watch; whatever its state, SIGTERM must end the stream. */
    const char *flags_unused[] = {NULL};
    (void)flags_unused;
    cr_assert_eq(th_issue(cli, "w", "term", &s, NULL), GRPC_STATUS_OK);
    protobuf_c_message_free_unpacked(&s->base, NULL);
    Grpc__Health__V1__HealthCheckRequest hreq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    cc_stream *st = cc_client_stream(cli, "/grpc.health.v1.Health/Watch", &hreq.base, NULL, 0, 30000);
    Grpc__Health__V1__HealthCheckResponse *m = NULL;
    cr_assert_eq(cc_stream_next(st, &grpc__health__v1__health_check_response__descriptor, (ProtobufCMessage **)&m), 1);
    protobuf_c_message_free_unpacked(&m->base, NULL);
    uint64_t t0 = th_now_ms();
    int rc = th_server_stop(&server);
    cr_expect_eq(rc, 0, "exit status after SIGTERM with an open stream");
    cr_expect_lt(th_now_ms() - t0, 1500, "streams must not hold shutdown until the grace period");
    while (cc_stream_next(st, &grpc__health__v1__health_check_response__descriptor, (ProtobufCMessage **)&m) == 1)
        protobuf_c_message_free_unpacked(&m->base, NULL);
    cc_status fin;
    cc_stream_close(st, &fin);
    cr_expect_neq(fin.code, GRPC_STATUS_OK, "the stream ends with an error status, got %s", cc_status_name(fin.code));
}

