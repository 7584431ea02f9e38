/* ADAPTIVE admission (issue 11) with the real payment back end: a real Kafka broker,
 * the real payment-consumer and concert-server over gRPC. Stall the consumers
 * (SIGSTOP) while payments are pending: the concert's effective rate falls to
 * admit_rate_min within 10 s (GetStats and /metrics), and a waiting user's estimated
 * wait grows with it; resume them (SIGCONT): the payments settle, the rate climbs back
 * and the estimate shrinks. Bounded: about 20 s. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "concert/v1/admin.pb-c.h"
#include "concert/v1/booking.pb-c.h"
#include "concert/v1/payment.pb-c.h"
#include "concert/v1/wallet.pb-c.h"
#include "th.h"

#define KEY "adaptive-admin-key"
#define CONCERT "ad"
#define RATE_MIN 4
#define RATE_MAX 64
#define USERS 2000

static th_kafka kafka;

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
    char err[512];
    if (th_kafka_start(&kafka, 1, NULL, err, sizeof err) < 0) setenv("TH_KAFKA_ERROR", err, 1);
    else setenv("TH_KAFKA_BOOTSTRAP", kafka.bootstrap, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats) { th_kafka_stop(&kafka); }

static th_redis redis;
static th_server server;
static th_consumer consumer;
static cc_client *cli;

static void stop(void) {
    if (cli) cc_client_close(cli);
    cli = NULL;
    if (consumer.pid > 0) {
        kill(consumer.pid, SIGCONT);
        th_consumer_kill(&consumer);
    }
    th_server_stop(&server);
    th_redis_stop(&redis);
}

static int64_t effective_rate(void) {
    cc_md md[] = {{"x-admin-key", KEY}};
    Concert__V1__GetStatsRequest req = CONCERT__V1__GET_STATS_REQUEST__INIT;
    req.concert_id = CONCERT;
    Concert__V1__Stats *s = NULL;
    cc_status st;
    cr_assert_eq(cc_client_unary(cli, "/concert.v1.AdminService/GetStats", &req.base, &concert__v1__stats__descriptor,
                                 (ProtobufCMessage **)&s, md, 1, 5000, &st),
                 GRPC_STATUS_OK, "GetStats: %s", st.message);
    int64_t r = s->effective_admit_rate;
    th_free_msg(s);
    return r;
}

/* concert_queue_effective_admit_rate{concert="ad"} on /metrics, -1 if absent. */
static double metric_rate(void) {
    char *page = th_http(server.metrics_port, "GET", "/metrics");
    double v = -1;
    const char *p = page ? strstr(page, "concert_queue_effective_admit_rate{concert=\"" CONCERT "\"}") : NULL;
    if (p) v = strtod(strchr(p, '}') + 1, NULL);
    free(page);
    return v;
}

static long long pending(void) {
    redisContext *rc = th_redis_connect(&redis);
    redisReply *r = redisCommand(rc, "ZCARD cc:{" CONCERT "}:pend");
    long long n = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    redisFree(rc);
    return n;
}

static int nothing_pending(void *arg) { return pending() == 0; }

static int rate_at_most(void *arg) { return effective_rate() <= *(int64_t *)arg; }
static int rate_at_least(void *arg) { return effective_rate() >= *(int64_t *)arg; }

/* An ACTIVE user with money: its token into token[128]. */
static void admit(const char *user, char *token) {
    cr_assert_eq(th_active_token(cli, user, CONCERT, token, 128), 0, "user %s admitted", user);
    Concert__V1__ChargeRequest ch = CONCERT__V1__CHARGE_REQUEST__INIT;
    ch.user_id = (char *)user;
    ch.amount = 5000;
    ch.idempotency_key = "topup";
    cr_assert_eq(cc_client_unary(cli, "/concert.v1.WalletService/Charge", &ch.base, NULL, NULL, NULL, 0, 5000, NULL),
                 GRPC_STATUS_OK);
}

/* The ACTIVE user of `token` holds seat `seat` and pays: its payment id into pid. */
static void pay_one(const char *token, int seat, char *pid) {
    char rid[160], auth[160];
    cc_status st;
    cr_assert_eq(th_reserve_seat(cli, token, "d1", seat, rid, sizeof rid, &st), GRPC_STATUS_OK, "ReserveSeats: %s",
                 st.message);
    snprintf(auth, sizeof auth, "Bearer %s", token);
    cc_md md[] = {{"authorization", auth}};
    Concert__V1__PayRequest pr = CONCERT__V1__PAY_REQUEST__INIT;
    pr.reservation_id = rid;
    pr.idempotency_key = "pay-1";
    Concert__V1__Payment *p = NULL;
    cr_assert_eq(cc_client_unary(cli, "/concert.v1.PaymentService/Pay", &pr.base, &concert__v1__payment__descriptor,
                                 (ProtobufCMessage **)&p, md, 1, 15000, &st),
                 GRPC_STATUS_OK, "Pay: %s", st.message);
    snprintf(pid, 128, "%s", p->payment_id);
    th_free_msg(p);
}

static int64_t estimated_wait(const char *token, int64_t *pos) {
    Concert__V1__QueueStatus *s = NULL;
    cr_assert_eq(th_status(cli, token, &s, NULL), GRPC_STATUS_OK);
    cr_assert_eq(s->state, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING, "the watched user still waits");
    int64_t e = s->estimated_wait_seconds;
    *pos = s->position;
    th_free_msg(s);
    return e;
}

Test(adaptive, stalled_consumers_slow_admission_and_resumed_ones_speed_it_up, .fini = stop, .timeout = 120) {
    const char *b = getenv("TH_KAFKA_BOOTSTRAP");
    cr_assert(b && *b, "no Kafka broker: %s", getenv("TH_KAFKA_ERROR") ? getenv("TH_KAFKA_ERROR") : "?");
    memset(&redis, 0, sizeof redis);
    th_redis_start(&redis);
    const char *flags[] = {"--admin-key", KEY, "--kafka", b, "--rate-user", "0", "--rate-peer", "0",
                           "--metrics", "127.0.0.1:0", "--adapt-interval-ms", "500", "--adapt-pending-ms", "1000",
                           "--max-active", "100000", NULL};
    th_server_start(&server, redis.url, flags);
    cr_assert(th_metrics_port(&server) > 0, "metrics port");
    th_consumer_start(&consumer, redis.url, b, "adaptive-test", NULL);
    cli = cc_client_open(server.addr);
    cr_assert_eq(th_admin_catalogue(cli, KEY, CONCERT, "d1", 100, 1000), GRPC_STATUS_OK);

    /* A few paying users first (admitted at once), then a long line. */
    char pid[128], early[128], payers[3][128];
    admit("early", early);
    for (int i = 0; i < 3; i++) {
        char u[16];
        snprintf(u, sizeof u, "payer%d", i);
        admit(u, payers[i]);
    }
    pay_one(early, 1, pid); /* the back end works: this one settles */
    cc_md md[] = {{"x-admin-key", KEY}};
    Concert__V1__QueuePolicy p = CONCERT__V1__QUEUE_POLICY__INIT;
    p.concert_id = CONCERT;
    p.admission_mode = CONCERT__V1__ADMISSION_MODE__ADMISSION_MODE_ADAPTIVE;
    p.admit_rate_min = RATE_MIN;
    p.admit_rate_max = RATE_MAX;
    p.admit_rate = RATE_MAX;
    char *f[] = {"admission_mode", "admit_rate_min", "admit_rate_max", "admit_rate"};
    Concert__V1__SetQueuePolicyRequest req = CONCERT__V1__SET_QUEUE_POLICY_REQUEST__INIT;
    req.policy = &p;
    req.n_update_fields = 4;
    req.update_fields = f;
    cc_status st;
    cr_assert_eq(cc_client_unary(cli, "/concert.v1.AdminService/SetQueuePolicy", &req.base, NULL, NULL, md, 1, 5000, &st),
                 GRPC_STATUS_OK, "%s", st.message);
    cc_batch *bt = cc_batch_new(cli);
    static char users[USERS][16];
    for (int i = 0; i < USERS; i++) {
        snprintf(users[i], sizeof users[i], "w%04d", i);
        Concert__V1__IssueTokenRequest ir = CONCERT__V1__ISSUE_TOKEN_REQUEST__INIT;
        ir.user_id = users[i];
        ir.concert_id = CONCERT;
        cc_batch_add(bt, "/concert.v1.QueueService/IssueToken", &ir.base, NULL, 0, 20000);
    }
    cc_batch_wait(bt);
    char watched[128] = "";
    Concert__V1__QueueStatus *last = NULL;
    cr_assert_eq(cc_batch_result(bt, USERS - 1, &concert__v1__queue_status__descriptor, (ProtobufCMessage **)&last, &st),
                 GRPC_STATUS_OK, "%s", st.message);
    snprintf(watched, sizeof watched, "%s", last->token);
    th_free_msg(last);
    cc_batch_free(bt);
    int64_t hi = RATE_MAX;
    /* The first payment settles once the consumer has joined its group (it may take a
     * few seconds, long enough to count as pending too long): then the rate climbs. */
    cr_assert(th_wait_for(nothing_pending, NULL, 100, 20000), "the first payment settles");
    cr_assert(th_wait_for(rate_at_least, &hi, 100, 15000), "healthy: the rate is at its maximum (%lld)",
              (long long)effective_rate());
    int64_t pos0, est0 = estimated_wait(watched, &pos0);
    cr_expect_eq(est0, (pos0 + RATE_MAX - 1) / RATE_MAX, "estimate at the maximum rate");

    /* Stall the consumers, then pay: the payments stay PENDING. */
    cr_assert_eq(kill(consumer.pid, SIGSTOP), 0);
    uint64_t stalled = th_now_ms();
    char pids[3][128];
    for (int i = 0; i < 3; i++) pay_one(payers[i], 10 + i, pids[i]);
    int64_t lo = RATE_MIN;
    cr_assert(th_wait_for(rate_at_most, &lo, 100, 10000), "the rate falls to the minimum: %lld after %llu ms",
              (long long)effective_rate(), (unsigned long long)(th_now_ms() - stalled));
    uint64_t fell = th_now_ms() - stalled;
    fprintf(stderr, "adaptive: rate at the minimum %llu ms after the consumers stalled\n", (unsigned long long)fell);
    cr_expect_leq(fell, 10000);
    uint64_t t0 = th_now_ms();
    double m = -1;
    while ((m = metric_rate()) != RATE_MIN && th_now_ms() - t0 < 2000) th_pause_ms(50);
    cr_expect_eq(m, RATE_MIN, "/metrics shows the effective rate (%g)", m);
    int64_t pos1, est1 = estimated_wait(watched, &pos1);
    cr_expect_eq(est1, (pos1 + RATE_MIN - 1) / RATE_MIN, "the estimate follows the minimum rate");
    cr_expect_gt(est1, est0 * 4, "waiting users see the slowdown (%lld s -> %lld s)", (long long)est0,
                 (long long)est1);
    /* It stays at the minimum while the payments are stuck. */
    th_pause_ms(1200);
    cr_expect_eq(effective_rate(), RATE_MIN, "still at the minimum while payments are pending");

    /* Resume: the payments settle, the rate climbs back. */
    cr_assert_eq(kill(consumer.pid, SIGCONT), 0);
    uint64_t resumed = th_now_ms();
    int64_t half = RATE_MAX / 2;
    cr_assert(th_wait_for(rate_at_least, &half, 100, 15000), "the rate climbs back: %lld", (long long)effective_rate());
    fprintf(stderr, "adaptive: rate back to %lld %llu ms after the consumers resumed\n", (long long)half,
            (unsigned long long)(th_now_ms() - resumed));
    int64_t pos2, est2 = estimated_wait(watched, &pos2);
    cr_expect_lt(est2, est1, "the estimate shrinks again (%lld s -> %lld s)", (long long)est1, (long long)est2);
    cr_expect_eq(pending(), 0, "every payment settled");

    cc_client_close(cli);
    cli = NULL;
    cr_assert_eq(th_server_stop(&server), 0, "concert-server exit status (log %s)", server.log);
    cr_assert_eq(th_consumer_stop(&consumer), 0, "payment-consumer exit status");
}
