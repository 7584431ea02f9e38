/* Start-up and exit status (issue 9, item 1 and the exit code of item 10): a second
 * server on a busy port fails loudly with a non-zero exit instead of silently sharing
 * it (gRPC core sets SO_REUSEPORT by default); sharing takes --reuse-port on both; the
 * exit status says what happened (0 clean stop, 2 bad configuration, 3 cannot listen).
 * --grpc-args (issue 13) reaches gRPC core over the server's own args, and a malformed
 * value is a usage error naming the flag. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "concert/v1/queue.pb-c.h"
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

/* IssueToken with a user_id of `n` bytes; the status code. */
static grpc_status_code issue(const char *addr, size_t n, cc_status *st) {
    char user[256];
    memset(user, 'u', n);
    user[n] = '\0';
    cc_client *c = cc_client_open(addr);
    Concert__V1__IssueTokenRequest req = CONCERT__V1__ISSUE_TOKEN_REQUEST__INIT;
    req.user_id = user;
    req.concert_id = (char *)"no-such-concert";
    grpc_status_code code =
        cc_client_unary(c, "/concert.v1.QueueService/IssueToken", &req.base, NULL, NULL, NULL, 0, 5000, st);
    cc_client_close(c);
    return code;
}

Test(listen, grpc_args_override_the_servers_channel_args, .init = start, .fini = stop, .timeout = 60) {
    /* The server sets grpc.max_receive_message_length (1 MiB); --grpc-args wins. */
    const char *small[] = {"--grpc-args", "grpc.http2.bdp_probe=0,grpc.max_receive_message_length=64", NULL};
    th_server_start(&a, redis.url, small);
    cc_status st;
    cr_expect_eq(issue(a.addr, 100, &st), GRPC_STATUS_RESOURCE_EXHAUSTED,
                 "a 100-byte user_id passes a 64-byte message limit (got %s: %s, log %s)", cc_status_name(st.code),
                 st.message, a.log);
    cr_expect_neq(issue(a.addr, 8, &st), GRPC_STATUS_RESOURCE_EXHAUSTED, "a small request is not refused (%s)",
                  st.message);
    cr_expect(serves(a.addr));
    cr_expect_eq(th_server_stop(&a), 0, "log %s", a.log);
    /* Without the flag the same request reaches the handler (which says the concert is unknown). */
    th_server_start(&a, redis.url, NULL);
    cr_expect_neq(issue(a.addr, 100, &st), GRPC_STATUS_RESOURCE_EXHAUSTED, "default limit is 1 MiB (%s)", st.message);
    cr_expect_eq(th_server_stop(&a), 0, "log %s", a.log);

    const char *bad[][3] = {
        {"--grpc-args", "grpc.http2.bdp_probe", NULL},
        {"--grpc-args", "grpc.http2.bdp_probe=yes", NULL},
        {"--grpc-args", "Max=1", NULL},
        {"--grpc-args", "grpc.x=99999999999", NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        th_server_spawn(&b, "127.0.0.1:0", redis.url, bad[i]);
        cr_expect_eq(th_server_wait_exit(&b, 10000), 2, "--grpc-args %s is a usage error (log %s)", bad[i][1], b.log);
        cr_expect(th_server_log_has(&b, "--grpc-args"), "the reason names the flag (log %s)", b.log);
    }
}
