/* Start-up and exit status (issue 9, item 1 and the exit code of item 10): a second
 * server on a busy port fails loudly with a non-zero exit instead of silently sharing
 * it (gRPC core sets SO_REUSEPORT by default); sharing takes --reuse-port on both; the
 * exit status says what happened (0 clean stop, 2 bad configuration, 3 cannot listen). */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "th.h"

static th_redis redis;
static th_server a, b;

static void start(void) {
    memset(&redis, 0, sizeof redis);
    th_redis_start(&redis);
}

static void stop(void) {
    th_server_stop(&a);
    th_server_stop(&b);
    th_redis_stop(&redis);
}

static int serves(const char *addr) {
    cc_client *c = cc_client_open(addr);
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    cc_status st;
    int ok = cc_client_unary(c, "/grpc.health.v1.Health/Check", &req.base, NULL, NULL, NULL, 0, 2000, &st) ==
             GRPC_STATUS_OK;
    cc_client_close(c);
    return ok;
}

Test(listen, second_server_on_a_busy_port_exits_nonzero, .init = start, .fini = stop, .timeout = 60) {
    th_server_start(&a, redis.url, NULL);
    th_server_spawn(&b, a.addr, redis.url, NULL);
    int rc = th_server_wait_exit(&b, 10000);
    cr_assert_neq(rc, -2, "a second concert-server on busy %s kept running (it shares the port)", a.addr);
    cr_expect_eq(rc, 3, "exit status 3 means 'cannot listen' (got %d, log %s)", rc, b.log);
    cr_expect(th_server_log_has(&b, "ddress already in use"), "the reason is given in one line (log %s)", b.log);
    /* Every call still reaches the first server. */
    for (int i = 0; i < 8; i++) cr_expect(serves(a.addr), "call %d", i);
    int rca = th_server_stop(&a);
    cr_expect_eq(rca, 0, "the first server exits 0 on SIGTERM (log %s)", a.log);
}

static const char *const reuse[] = {"--reuse-port", NULL};

Test(listen, reuse_port_shares_the_port_explicitly, .init = start, .fini = stop, .timeout = 60) {
    th_server_start(&a, redis.url, reuse);
    th_server_spawn(&b, a.addr, redis.url, reuse);
    cr_expect_eq(th_server_wait_exit(&b, 2000), -2, "with --reuse-port on both, the second one runs (log %s)", b.log);
    cr_expect(serves(a.addr));
    cr_expect_eq(th_server_stop(&b), 0, "log %s", b.log);
    cr_expect_eq(th_server_stop(&a), 0, "log %s", a.log);
}

Test(listen, exit_status_means_something, .init = start, .fini = stop, .timeout = 60) {
    const char *bad_flag[] = {"--no-such-flag", NULL};
    th_server_spawn(&b, "127.0.0.1:0", redis.url, bad_flag);
    cr_expect_eq(th_server_wait_exit(&b, 10000), 2, "an unknown flag is a usage error (log %s)", b.log);
    th_server_spawn(&b, "127.0.0.1:0", "redis://nowhere", NULL);
    cr_expect_eq(th_server_wait_exit(&b, 10000), 2, "a bad Redis URL is a usage error (log %s)", b.log);
    th_server_spawn(&b, "256.1.1.1:x", redis.url, NULL);
    cr_expect_eq(th_server_wait_exit(&b, 10000), 3, "an address that cannot be bound (log %s)", b.log);
    /* The metrics address busy: also 'cannot listen', and nothing is left running. */
    th_server_start(&a, redis.url, NULL);
    char metrics[64];
    snprintf(metrics, sizeof metrics, "%s", a.addr);
    const char *busy_metrics[] = {"--metrics", metrics, NULL};
    th_server_spawn(&b, "127.0.0.1:0", redis.url, busy_metrics);
    cr_expect_eq(th_server_wait_exit(&b, 10000), 3, "metrics address in use (log %s)", b.log);
    cr_expect(th_server_log_has(&b, "metrics"), "log %s", b.log);
    /* A clean stop is 0, by SIGTERM and by SIGINT. */
    cr_expect_eq(th_server_stop(&a), 0, "SIGTERM (log %s)", a.log);
    th_server_start(&a, redis.url, NULL);
    kill(a.pid, SIGINT);
    cr_expect_eq(th_server_wait_exit(&a, 10000), 0, "SIGINT (log %s)", a.log);
}
