/* payment-consumer and cc_kafka against a real Kafka broker, a real Redis and the real
 * concert-server: the happy path, insufficient balance, a hold that lapsed before
 * processing, duplicate delivery, a Redis hang, three consumers with one SIGKILLed
 * mid-stream (every payment settles exactly once, balances and seats agree), Pay
 * end to end, and the cc_kafka producer on a libuv loop.
 *
 * Isolation: ONE Kafka broker for the whole binary (about 6 s to start), started in
 * Criterion's PRE_ALL hook in the runner process and stopped in POST_ALL (a reaper
 * child stops it if the runner dies first). The topic names are fixed by the
 * product, so topics are shared: each test gets its own Redis, concert-server and
 * consumer group, the group's offsets are first committed at the current end of the
 * requests topic (a new group would otherwise read the earlier tests' requests, whose
 * payments live in another Redis), and payment ids are random. Results are read from
 * the offsets the topics had when the test began. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "cc_kafka.h"
#include "cc_log.h"
#include "concert/v1/booking.pb-c.h"
#include "concert/v1/events.pb-c.h"
#include "concert/v1/payment.pb-c.h"
#include "concert/v1/wallet.pb-c.h"
#include "cc_pay.h"
#include "th.h"

#define KEY "consumer-admin-key"
#define CONCERT "show"
#define PRICE 1000

/* ---- the broker, once per binary ---- */

static th_kafka kafka;

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
    char err[512];
    if (th_kafka_start(&kafka, 1, NULL, err, sizeof err) < 0) {
        setenv("TH_KAFKA_ERROR", err, 1);
        return;
    }
    setenv("TH_KAFKA_BOOTSTRAP", kafka.bootstrap, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats) { th_kafka_stop(&kafka); }

static const char *brokers_override; /* a test's own cluster */

static const char *brokers(void) {
    if (brokers_override) return brokers_override;
    const char *b = getenv("TH_KAFKA_BOOTSTRAP");
    cr_assert(b && *b, "no Kafka broker: %s",
              getenv("TH_KAFKA_ERROR") ? getenv("TH_KAFKA_ERROR") : "not started");
    return b;
}

/* ---- per-test services ---- */

static th_redis redis;
static th_redis *inspect = &redis; /* where the checks read; the new primary after a failover */
static th_server server;
static cc_client *cli;
static th_consumer cons[3];
static rd_kafka_t *prod;
static char group[96];
static int64_t results_start[64], events_start[64];
static const char *begin_text, *accepted_text; /* the payment domain's scripts (common/cc_pay) */

static rd_kafka_t *new_client(rd_kafka_type_t type, const char *group_id) {
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    char err[256];
    cr_assert(rd_kafka_conf_set(c, "bootstrap.servers", brokers(), err, sizeof err) == RD_KAFKA_CONF_OK);
    rd_kafka_conf_set(c, "log_level", "2", err, sizeof err); /* a broker killed on purpose is no news */
    if (type == RD_KAFKA_PRODUCER) {
        rd_kafka_conf_set(c, "enable.idempotence", "true", err, sizeof err);
        rd_kafka_conf_set(c, "linger.ms", "1", err, sizeof err);
    } else {
        rd_kafka_conf_set(c, "group.id", group_id, err, sizeof err);
        rd_kafka_conf_set(c, "enable.auto.commit", "false", err, sizeof err);
        rd_kafka_conf_set(c, "enable.partition.eof", "false", err, sizeof err);
    }
    rd_kafka_t *rk = rd_kafka_new(type, c, err, sizeof err);
    cr_assert(rk, "rd_kafka_new: %s", err);
    return rk;
}

/* A topic created a moment ago may not be in every broker's metadata yet (seen with
 * three brokers): ask again every 100 ms, 20 s at most. */
static int partitions_of(rd_kafka_t *rk, const char *topic) {
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    int n = 0;
    uint64_t end = th_now_ms() + 20000;
    for (;;) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, t, &md, 5000);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
            n = md->topic_cnt == 1 && !md->topics[0].err ? md->topics[0].partition_cnt : 0;
            rd_kafka_metadata_destroy(md);
        }
        if (n > 0 || th_now_ms() >= end) break;
        th_pause_ms(100);
    }
    rd_kafka_topic_destroy(t);
    cr_assert(n > 0 && n <= 64, "%s has %d partitions", topic, n);
    return n;
}

/* The end offset of every partition of `topic`. A topic created a moment ago may
 * have no leader yet: ask again (every 100 ms, 15 s at most). */
static int topic_ends(const char *topic, int64_t *out) {
    int n = partitions_of(prod, topic);
    for (int i = 0; i < n; i++) {
        int64_t lo, hi;
        rd_kafka_resp_err_t e;
        uint64_t end = th_now_ms() + 15000;
        while ((e = rd_kafka_query_watermark_offsets(prod, topic, i, &lo, &hi, 5000)) && th_now_ms() < end)
            th_pause_ms(100);
        cr_assert_eq(e, 0, "watermarks of %s[%d]: %s", topic, i, rd_kafka_err2str(e));
        out[i] = hi;
    }
    return n;
}

/* Commits the group's offsets at the end of the requests topic, so its consumers
 * start with this test's messages. */
static void group_at_end(const char *g) {
    int64_t ends[64];
    int n = topic_ends(CC_TOPIC_PAYMENT_REQUESTS, ends);
    rd_kafka_t *c = new_client(RD_KAFKA_CONSUMER, g);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(l, CC_TOPIC_PAYMENT_REQUESTS, i)->offset = ends[i];
    /* The first group on a fresh broker waits for __consumer_offsets to load. */
    rd_kafka_resp_err_t e;
    uint64_t end = th_now_ms() + 20000;
    while ((e = rd_kafka_commit(c, l, 0)) && th_now_ms() < end)
        th_pause_ms(100);
    cr_assert_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "commit start offsets: %s", rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
}

static const char *cluster_url; /* a test on a Redis Cluster: its URL (no single Redis then) */

static void start_with(const char *const *server_extra) {
    memset(&redis, 0, sizeof redis);
    inspect = &redis;
    memset(cons, 0, sizeof cons);
    if (!cluster_url) th_redis_start(&redis);
    const char *flags[24] = {"--admin-key", KEY, "--admit-rate", "5000", "--max-active", "5000"};
    int n = 6;
    for (int i = 0; server_extra && server_extra[i]; i++)
        flags[n++] = server_extra[i];
    flags[n] = NULL;
    th_server_start(&server, cluster_url ? cluster_url : redis.url, flags);
    cr_assert(th_server_wait_serving(&server, 10000), "server not SERVING (log %s)", server.log);
    cli = cc_client_open(server.addr);
    cr_assert_eq(th_admin_catalogue(cli, KEY, CONCERT, "day1", 400, PRICE), GRPC_STATUS_OK);
    char err[512];
    cr_assert_eq(cc_kafka_ensure_topics(brokers(), 12, -1, 15000, err, sizeof err), 0, "ensure topics: %s",
                 err);
    prod = new_client(RD_KAFKA_PRODUCER, NULL);
    snprintf(group, sizeof group, "test-%d-%" PRIu64, (int)getpid(), th_now_ms());
    group_at_end(group);
    topic_ends(CC_TOPIC_PAYMENT_RESULTS, results_start);
    topic_ends(CC_TOPIC_RESERVATION_EVENTS, events_start);
    begin_text = cc_pay_scripts()[CC_PAY_S_BEGIN].body;
    accepted_text = cc_pay_scripts()[CC_PAY_S_SUBMITTED].body;
}

static void start(void) { start_with(NULL); }

static void stop(void) {
    for (int i = 0; i < 3; i++)
        th_consumer_kill(&cons[i]);
    th_server_close(&server, &cli);
    th_redis_stop(&redis);
    if (prod) rd_kafka_destroy(prod);
    prod = NULL;
}

static void start_consumer_on(int i, const char *redis_url, const char *const *extra) {
    const char *flags[16] = {"--session-timeout-ms", "6000", "--lag-interval-ms", "1000"};
    int n = 4;
    for (int k = 0; extra && extra[k]; k++)
        flags[n++] = extra[k];
    flags[n] = NULL;
    th_consumer_start(&cons[i], redis_url, brokers(), group, flags);
    cr_assert(
        th_consumer_log_has(&cons[i], "level=info comp=payment-consumer event=partitions_assigned", 30000),
        "consumer %d got no partitions (log %s)", i, cons[i].log);
}

static void start_consumer(int i, const char *const *extra) { start_consumer_on(i, redis.url, extra); }

/* Every live consumer exits 0 on SIGTERM and logged no error. */
static void end_test(void) {
    for (int i = 0; i < 3; i++) {
        if (cons[i].pid <= 0) continue;
        cons[i].keep_log = th_consumer_log_has(&cons[i], "level=error", 0);
        cr_expect(!cons[i].keep_log, "consumer %d logged an error (log %s)", i, cons[i].log);
        int rc = th_consumer_stop(&cons[i]);
        cr_expect_eq(rc, 0, "payment-consumer exit status (log %s)", cons[i].log);
    }
    if (cli) cc_client_close(cli);
    cli = NULL;
    cr_expect_eq(th_server_stop(&server), 0, "concert-server exit status (log %s)", server.log);
}

/* ---- booking state through the server's API ---- */

typedef struct {
    char user[32];
    char token[64];
    char rid[96];
    char pid[96];
    int64_t amount;
} pay_t;

static void new_pid(char *out, size_t len) {
    unsigned char r[16];
    cr_assert(getrandom(r, sizeof r, 0) == (ssize_t)sizeof r);
    char hex[33];
    for (int i = 0; i < 16; i++)
        sprintf(hex + 2 * i, "%02x", r[i]);
    snprintf(out, len, "p1.%s.%s", CONCERT, hex);
}

/* Issues tokens for users[0..n) and waits until all are ACTIVE. */
static void activate(pay_t **users, int n) {
    cc_batch *b = cc_batch_new(cli);
    for (int i = 0; i < n; i++) {
        Concert__V1__IssueTokenRequest req = CONCERT__V1__ISSUE_TOKEN_REQUEST__INIT;
        req.user_id = users[i]->user;
        req.concert_id = CONCERT;
        cc_batch_add(b, "/concert.v1.QueueService/IssueToken", &req.base, NULL, 0, 10000);
    }
    cc_batch_wait(b);
    for (int i = 0; i < n; i++) {
        Concert__V1__QueueStatus *s = NULL;
        cr_assert_eq(
            cc_batch_result(b, i, &concert__v1__queue_status__descriptor, (ProtobufCMessage **)&s, NULL),
            GRPC_STATUS_OK);
        snprintf(users[i]->token, sizeof users[i]->token, "%s", s->token);
        th_free_msg(s);
    }
    cc_batch_free(b);
    for (int i = 0; i < n; i++)
        cr_assert_eq(th_wait_active(cli, users[i]->token), 0, "token %d not ACTIVE", i);
}

static void charge(const char *user, int64_t amount) {
    Concert__V1__ChargeRequest req = CONCERT__V1__CHARGE_REQUEST__INIT;
    char key[64];
    snprintf(key, sizeof key, "topup-%.50s", user);
    req.user_id = (char *)user;
    req.amount = amount;
    req.idempotency_key = key;
    cc_status st;
    cr_assert_eq(
        cc_client_unary(cli, "/concert.v1.WalletService/Charge", &req.base, NULL, NULL, NULL, 0, 5000, &st),
        GRPC_STATUS_OK, "charge: %s", st.message);
}

/* ReserveSeats for each p (seats[i][0..nseats)), filling rid and amount. */
static void reserve(pay_t **ps, int n, int32_t (*seats)[4], int nseats) {
    static char auth[512][100];
    cr_assert(n <= 512);
    cc_batch *b = cc_batch_new(cli);
    for (int i = 0; i < n; i++) {
        snprintf(auth[i], sizeof auth[i], "Bearer %.*s", (int)sizeof ps[i]->token - 1, ps[i]->token);
        cc_md md[] = {{"authorization", auth[i]}};
        Concert__V1__ReserveSeatsRequest req = CONCERT__V1__RESERVE_SEATS_REQUEST__INIT;
        req.schedule_id = "day1";
        req.n_seat_numbers = (size_t)nseats;
        req.seat_numbers = seats[i];
        cc_batch_add(b, "/concert.v1.BookingService/ReserveSeats", &req.base, md, 1, 10000);
    }
    cc_batch_wait(b);
    for (int i = 0; i < n; i++) {
        Concert__V1__Reservation *r = NULL;
        cc_status st;
        cr_assert_eq(
            cc_batch_result(b, i, &concert__v1__reservation__descriptor, (ProtobufCMessage **)&r, &st),
            GRPC_STATUS_OK, "reserve %d: %s", i, st.message);
        snprintf(ps[i]->rid, sizeof ps[i]->rid, "%s", r->reservation_id);
        ps[i]->amount = r->total_price;
        th_free_msg(r);
    }
    cc_batch_free(b);
}

/* What Pay does before Kafka: pay_begin.lua (payment SUBMITTING), pipelined. */
static void begin(pay_t **ps, int n) {
    redisContext *rc = th_redis_connect(&redis);
    cr_assert(rc);
    for (int i = 0; i < n; i++) {
        new_pid(ps[i]->pid, sizeof ps[i]->pid);
        char key[64];
        snprintf(key, sizeof key, "key-%d-%s", i, ps[i]->pid + 20);
        redisAppendCommand(rc, "EVAL %s 1 cc:{%s}:q:tok cc:{%s}: %s %s %s %s", begin_text, CONCERT, CONCERT,
                           ps[i]->token, ps[i]->rid, key, ps[i]->pid);
    }
    for (int i = 0; i < n; i++) {
        redisReply *r = NULL;
        cr_assert_eq(redisGetReply(rc, (void **)&r), REDIS_OK);
        cr_assert(r->type == REDIS_REPLY_ARRAY && r->elements >= 6 && r->element[0]->integer == 0,
                  "pay_begin %d: %s", i,
                  r->type == REDIS_REPLY_ERROR                      ? r->str
                  : r->type == REDIS_REPLY_ARRAY && r->elements > 1 ? r->element[1]->str
                                                                    : "?");
        cr_assert_str_eq(r->element[5]->str, "SUBMITTING");
        freeReplyObject(r);
    }
    redisFree(rc);
}

/* Produces each payment's PaymentRequested (key = user id) and waits for the acks. */
static void produce_requests(pay_t **ps, int n) {
    for (int i = 0; i < n; i++) {
        Concert__V1__PaymentRequested ev = CONCERT__V1__PAYMENT_REQUESTED__INIT;
        ev.payment_id = ps[i]->pid;
        ev.reservation_id = ps[i]->rid;
        ev.concert_id = CONCERT;
        ev.user_id = ps[i]->user;
        ev.amount = ps[i]->amount;
        ev.idempotency_key = "k";
        ev.requested_at_unix_ms = 1;
        uint8_t buf[1024];
        size_t len = protobuf_c_message_pack(&ev.base, buf);
        rd_kafka_resp_err_t e =
            rd_kafka_producev(prod, RD_KAFKA_V_TOPIC(CC_TOPIC_PAYMENT_REQUESTS),
                              RD_KAFKA_V_KEY(ps[i]->user, strlen(ps[i]->user)), RD_KAFKA_V_VALUE(buf, len),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        cr_assert_eq(e, 0, "produce: %s", rd_kafka_err2str(e));
    }
    cr_assert_eq(rd_kafka_flush(prod, 30000), 0, "flush");
}

/* produce_requests, then SUBMITTING -> PENDING as the server does on the ack. */
static void request(pay_t **ps, int n) {
    produce_requests(ps, n);
    redisContext *rc = th_redis_connect(&redis);
    for (int i = 0; i < n; i++)
        redisAppendCommand(rc, "EVAL %s 1 cc:{%s}:q:tok cc:{%s}: %s PENDING", accepted_text, CONCERT, CONCERT,
                           ps[i]->pid);
    for (int i = 0; i < n; i++) {
        redisReply *r = NULL;
        cr_assert_eq(redisGetReply(rc, (void **)&r), REDIS_OK);
        freeReplyObject(r);
    }
    redisFree(rc);
}

/* ---- Redis inspection ---- */

static redisReply *cmd(const char *fmt, ...) {
    redisContext *rc = th_redis_connect(inspect);
    cr_assert(rc, "connect to redis");
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(rc, fmt, ap);
    va_end(ap);
    redisFree(rc);
    cr_assert(r, "redis command");
    return r;
}

static int64_t int_cmd(const char *fmt, const char *a, const char *b) {
    redisReply *r = cmd(fmt, a, b);
    int64_t v = r->type == REDIS_REPLY_INTEGER  ? r->integer
                : r->type == REDIS_REPLY_STRING ? atoll(r->str)
                                                : 0;
    freeReplyObject(r);
    return v;
}

static void str_cmd(char *out, size_t len, const char *fmt, const char *a, const char *b) {
    redisReply *r = cmd(fmt, a, b);
    snprintf(out, len, "%s", r->type == REDIS_REPLY_STRING ? r->str : "");
    freeReplyObject(r);
}

static int64_t balance(const char *user) { return int_cmd("GET cc:{w:%s}:bal", user, NULL); }
static int64_t debits(const char *user) { return int_cmd("HLEN cc:{w:%s}:pay", user, NULL); }
static int64_t refunds(const char *user) { return int_cmd("HLEN cc:{w:%s}:refund", user, NULL); }

static void pay_status(const pay_t *p, char *status, size_t len) {
    str_cmd(status, len, "HGET cc:{" CONCERT "}:p:%s status", p->pid, NULL);
}

static void pay_reason(const pay_t *p, char *reason, size_t len) {
    str_cmd(reason, len, "HGET cc:{" CONCERT "}:p:%s reason", p->pid, NULL);
}

static void resv_status(const pay_t *p, char *status, size_t len) {
    str_cmd(status, len, "HGET cc:{" CONCERT "}:r:%s status", p->rid, NULL);
}

typedef struct {
    pay_t **ps;
    int n;
    int want;
} settled_arg;

static int count_settled(pay_t **ps, int n) {
    redisContext *rc = th_redis_connect(inspect);
    if (!rc) return 0;
    for (int i = 0; i < n; i++)
        redisAppendCommand(rc, "HGET cc:{" CONCERT "}:p:%s status", ps[i]->pid);
    int done = 0;
    for (int i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(rc, (void **)&r) != REDIS_OK) break;
        if (r->type == REDIS_REPLY_STRING && (!strcmp(r->str, "COMPLETED") || !strcmp(r->str, "FAILED")))
            done++;
        freeReplyObject(r);
    }
    redisFree(rc);
    return done;
}

static int settled(void *arg) {
    settled_arg *a = arg;
    return count_settled(a->ps, a->n) >= a->want;
}

/* Waits until at least `want` of ps[0..n) are COMPLETED or FAILED. */
static void wait_settled(pay_t **ps, int n, int want, int limit_ms) {
    settled_arg a = {ps, n, want};
    cr_assert(th_wait_for(settled, &a, 20, limit_ms), "only %d of %d payments settled within %d ms",
              count_settled(ps, n), want, limit_ms);
}

/* ---- Kafka inspection ---- */

typedef int (*match_fn)(const rd_kafka_message_t *m, void *arg);

/* Reads `topic` from the offsets it had when the test began until match() is true. */
static int read_until(const char *topic, const int64_t *start, match_fn match, void *arg, int limit_ms) {
    char g[128];
    snprintf(g, sizeof g, "%s-reader", group);
    rd_kafka_t *c = new_client(RD_KAFKA_CONSUMER, g);
    int n = partitions_of(c, topic);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(l, topic, i)->offset = start[i];
    cr_assert_eq(rd_kafka_assign(c, l), 0);
    rd_kafka_topic_partition_list_destroy(l);
    int found = 0;
    uint64_t end = th_now_ms() + (uint64_t)limit_ms;
    while (!found && th_now_ms() < end) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (!m) continue;
        if (!m->err) found = match(m, arg);
        rd_kafka_message_destroy(m);
    }
    rd_kafka_destroy(c);
    return found;
}

typedef struct {
    const pay_t *p;
    int status;
    const char *reason;
} result_want;

static int result_matches(const rd_kafka_message_t *m, void *arg) {
    result_want *w = arg;
    Concert__V1__PaymentResult *r = concert__v1__payment_result__unpack(NULL, m->len, m->payload);
    if (!r) return 0;
    int ok = !strcmp(r->payment_id, w->p->pid) && (int)r->status == w->status && r->amount == w->p->amount &&
             !strcmp(r->user_id, w->p->user) && !strcmp(r->reservation_id, w->p->rid) &&
             !strcmp(r->concert_id, CONCERT) && (!w->reason || !strcmp(r->reason, w->reason)) &&
             m->key_len == strlen(w->p->user) && !memcmp(m->key, w->p->user, m->key_len);
    th_free_msg(r);
    return ok;
}

typedef struct {
    const pay_t *p;
    int32_t seats[4];
    size_t n;
} event_want;

static int event_matches(const rd_kafka_message_t *m, void *arg) {
    event_want *w = arg;
    Concert__V1__ReservationEvent *e = concert__v1__reservation_event__unpack(NULL, m->len, m->payload);
    if (!e) return 0;
    int ok = !strcmp(e->reservation_id, w->p->rid) &&
             e->status == CONCERT__V1__RESERVATION_STATUS__RESERVATION_STATUS_PAID &&
             !strcmp(e->payment_id, w->p->pid) && !strcmp(e->schedule_id, "day1") &&
             !strcmp(e->user_id, w->p->user) && e->n_seat_numbers == w->n && e->at_unix_ms > 0;
    for (size_t i = 0; ok && i < w->n; i++)
        ok = e->seat_numbers[i] == w->seats[i];
    th_free_msg(e);
    return ok;
}

/* n payments of n users "<prefix>-<i>": each ACTIVE, topped up with `topup` (0: not at
 * all), holding seat first_seat + i, and recorded SUBMITTING as Pay does. */
static void make_payments(pay_t *pays, pay_t **ps, int32_t (*seats)[4], int n, const char *prefix, int first_seat,
                          int64_t topup) {
    memset(pays, 0, (size_t)n * sizeof *pays);
    for (int i = 0; i < n; i++) {
        snprintf(pays[i].user, sizeof pays[i].user, "%s-%d", prefix, i);
        ps[i] = &pays[i];
        seats[i][0] = first_seat + i;
    }
    activate(ps, n);
    for (int i = 0; topup && i < n; i++)
        charge(pays[i].user, topup);
    reserve(ps, n, seats, 1);
    begin(ps, n);
}

/* ---- one user, one payment ---- */

static pay_t *one_payment(const char *user, int64_t topup, int32_t *seats, int nseats) {
    static pay_t p;
    memset(&p, 0, sizeof p);
    snprintf(p.user, sizeof p.user, "%s", user);
    pay_t *ps[] = {&p};
    activate(ps, 1);
    if (topup) charge(user, topup);
    int32_t s[1][4] = {{0}};
    memcpy(s[0], seats, (size_t)nseats * sizeof *seats);
    reserve(ps, 1, s, nseats);
    begin(ps, 1);
    return &p;
}

Test(consumer, happy_path, .init = start, .fini = stop, .timeout = 90) {
    start_consumer(0, NULL);
    int32_t seats[] = {1, 2};
    pay_t *p = one_payment("alice", 5000, seats, 2);
    cr_assert_eq(p->amount, 2 * PRICE);
    pay_t *ps[] = {p};
    request(ps, 1);
    wait_settled(ps, 1, 1, 20000);
    char st[64];
    pay_status(p, st, sizeof st);
    cr_expect_str_eq(st, "COMPLETED");
    cr_expect_eq(balance("alice"), 3000, "debited once");
    cr_expect_eq(debits("alice"), 1);
    cr_expect_eq(refunds("alice"), 0);
    resv_status(p, st, sizeof st);
    cr_expect_str_eq(st, "PAID");
    char want[128];
    snprintf(want, sizeof want, "S|%.120s", p->rid);
    str_cmd(st, sizeof st, "HGET cc:{" CONCERT "}:s:day1:seat %s", "1", NULL);
    cr_expect_str_eq(st, want, "seat 1 SOLD to the reservation");
    str_cmd(st, sizeof st, "HGET cc:{" CONCERT "}:s:day1:seat %s", "2", NULL);
    cr_expect_str_eq(st, want, "seat 2 SOLD to the reservation");
    cr_expect_eq(int_cmd("HGET cc:{" CONCERT "}:s:day1:meta %s", "sold", NULL), 2);
    cr_expect_eq(th_state(cli, p->token), CONCERT__V1__QUEUE_STATE__QUEUE_STATE_EXPIRED,
                 "the token is expired");
    result_want rw = {p, CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_COMPLETED, ""};
    cr_expect(read_until(CC_TOPIC_PAYMENT_RESULTS, results_start, result_matches, &rw, 10000),
              "PaymentResult COMPLETED published");
    event_want ew = {p, {1, 2}, 2};
    cr_expect(read_until(CC_TOPIC_RESERVATION_EVENTS, events_start, event_matches, &ew, 10000),
              "ReservationEvent PAID published");
    cr_expect(th_consumer_log_has(&cons[0], "event=batch messages=1 completed=1", 5000), "batch logged");
    cr_expect(th_consumer_log_has(&cons[0], "event=consumer_lag lag=0", 5000), "lag logged");
    end_test();
}

Test(consumer, insufficient_balance, .init = start, .fini = stop, .timeout = 90) {
    start_consumer(0, NULL);
    int32_t seats[] = {7};
    pay_t *p = one_payment("bob", 500, seats, 1);
    pay_t *ps[] = {p};
    request(ps, 1);
    wait_settled(ps, 1, 1, 20000);
    char st[64];
    pay_status(p, st, sizeof st);
    cr_expect_str_eq(st, "FAILED");
    pay_reason(p, st, sizeof st);
    cr_expect_str_eq(st, "insufficient balance");
    cr_expect_eq(balance("bob"), 500, "nothing debited");
    cr_expect_eq(debits("bob"), 0);
    cr_expect_eq(refunds("bob"), 0);
    resv_status(p, st, sizeof st);
    cr_expect_str_eq(st, "HELD", "the hold is untouched");
    cr_expect_eq(th_state(cli, p->token), CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE,
                 "the token stays ACTIVE");
    result_want rw = {p, CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_FAILED, "insufficient balance"};
    cr_expect(read_until(CC_TOPIC_PAYMENT_RESULTS, results_start, result_matches, &rw, 10000),
              "PaymentResult FAILED published");
    end_test();
}

static const char *const short_hold[] = {"--hold-ttl-ms", "1000", "--sweep-interval-ms", "100", NULL};
static void start_short_hold(void) { start_with(short_hold); }

static int hold_gone(void *arg) {
    char st[64];
    resv_status(arg, st, sizeof st);
    return !strcmp(st, "EXPIRED");
}

Test(consumer, hold_expired_before_processing, .init = start_short_hold, .fini = stop, .timeout = 90) {
    start_consumer(0, NULL);
    int32_t seats[] = {3};
    pay_t *p = one_payment("carol", 5000, seats, 1);
    cr_assert(th_wait_for(hold_gone, p, 20, 5000), "the hold did not lapse");
    pay_t *ps[] = {p};
    request(ps, 1);
    wait_settled(ps, 1, 1, 20000);
    char st[64];
    pay_status(p, st, sizeof st);
    cr_expect_str_eq(st, "FAILED");
    pay_reason(p, st, sizeof st);
    cr_expect_str_eq(st, "hold expired");
    cr_expect_eq(balance("carol"), 5000, "any debit refunded");
    cr_expect_eq(debits("carol"), refunds("carol"), "every debit has its refund");
    str_cmd(st, sizeof st, "HGET cc:{" CONCERT "}:s:day1:seat %s", "3", NULL);
    cr_expect_str_eq(st, "", "the seat is free");
    end_test();
}

Test(consumer, duplicate_delivery_debits_once, .init = start, .fini = stop, .timeout = 90) {
    start_consumer(0, NULL);
    pay_t a = {.user = "dave"}, b = {.user = "dave"}, c = {.user = "dave"};
    pay_t *all[] = {&a, &b, &c};
    activate(all, 1);
    snprintf(b.token, sizeof b.token, "%s", a.token);
    snprintf(c.token, sizeof c.token, "%s", a.token);
    charge("dave", 10000);
    int32_t seats[3][4] = {{10}, {11}, {12}};
    reserve(all, 3, seats, 1);
    begin(all, 3);
    /* a twice, then b as a fence: same user, same partition, so when b is settled
     * both copies of a have been processed. */
    pay_t *first[] = {&a, &a, &b};
    request(first, 3);
    wait_settled(&all[1], 1, 1, 20000);
    char st[64];
    pay_status(&a, st, sizeof st);
    cr_expect_str_eq(st, "COMPLETED");
    cr_expect_eq(balance("dave"), 10000 - 2 * PRICE);
    cr_expect_eq(debits("dave"), 2);
    /* a again after it is settled, then c as the fence. */
    pay_t *again[] = {&a, &c};
    request(again, 2);
    wait_settled(&all[2], 1, 1, 20000);
    cr_expect_eq(balance("dave"), 10000 - 3 * PRICE, "three payments, three debits");
    cr_expect_eq(debits("dave"), 3);
    cr_expect_eq(refunds("dave"), 0);
    cr_expect_eq(int_cmd("HGET cc:{" CONCERT "}:s:day1:meta %s", "sold", NULL), 3);
    pay_status(&a, st, sizeof st);
    cr_expect_str_eq(st, "COMPLETED");
    end_test();
}

Test(consumer, redis_hang_then_recovers, .init = start, .fini = stop, .timeout = 90) {
    const char *flags[] = {"--redis-timeout-ms", "300", NULL};
    start_consumer(0, flags);
    int32_t seats[] = {20};
    pay_t *p = one_payment("erin", 5000, seats, 1);
    pay_t *ps[] = {p};
    kill(redis.pid, SIGSTOP);
    produce_requests(ps, 1);
    int noticed = th_consumer_log_has(&cons[0], "event=batch_retry", 10000);
    kill(redis.pid, SIGCONT);
    cr_assert(noticed, "the consumer did not notice the hang (log %s)", cons[0].log);
    wait_settled(ps, 1, 1, 20000);
    char st[64];
    pay_status(p, st, sizeof st);
    cr_expect_str_eq(st, "COMPLETED");
    cr_expect_eq(balance("erin"), 5000 - PRICE, "debited once");
    cr_expect_eq(debits("erin"), 1);
    end_test();
}

/* ---- three consumers, one SIGKILLed mid-stream ---- */

enum { USERS = 150, PAYS = 2 * USERS };

static int64_t topup_of(int u) { return u % 11 == 0 ? 0 : u % 5 == 0 ? PRICE : 2 * PRICE; }

Test(consumer, three_consumers_one_killed, .init = start, .fini = stop, .timeout = 120) {
    static pay_t pays[PAYS];
    static pay_t *ps[PAYS], *firsts[USERS];
    static int32_t seats[PAYS][4];
    memset(pays, 0, sizeof pays);
    for (int u = 0; u < USERS; u++) {
        for (int k = 0; k < 2; k++) {
            pay_t *p = &pays[2 * u + k];
            snprintf(p->user, sizeof p->user, "fan-%d", u);
            ps[2 * u + k] = p;
            seats[2 * u + k][0] = 2 * u + k + 1;
        }
        firsts[u] = &pays[2 * u];
    }
    activate(firsts, USERS);
    for (int u = 0; u < USERS; u++)
        memcpy(pays[2 * u + 1].token, pays[2 * u].token, sizeof pays[0].token); /* same user, same token */
    for (int u = 0; u < USERS; u++)
        if (topup_of(u)) charge(pays[2 * u].user, topup_of(u));
    reserve(ps, PAYS, seats, 1);
    begin(ps, PAYS);

    const char *flags[] = {"--batch", "25", NULL};
    for (int i = 0; i < 3; i++)
        start_consumer(i, flags);
    /* Interleaved per user: p1 then p2 of each user, so order matters for the users
     * whose balance covers one payment. */
    enum { FIRST = 120 };
    request(ps, FIRST);
    wait_settled(ps, FIRST, FIRST / 3, 30000);
    th_consumer_kill(&cons[1]);
    request(ps + FIRST, PAYS - FIRST);
    wait_settled(ps, PAYS, PAYS, 60000);

    /* Every payment settled once, as applying them one by one in order would. */
    int completed = 0, sold_expected = 0;
    for (int u = 0; u < USERS; u++) {
        const char *user = pays[2 * u].user;
        int64_t topup = topup_of(u), spent = 0;
        for (int k = 0; k < 2; k++) {
            pay_t *p = &pays[2 * u + k];
            char st[64], reason[64];
            pay_status(p, st, sizeof st);
            pay_reason(p, reason, sizeof reason);
            int should = topup >= (k + 1) * PRICE;
            cr_expect_str_eq(st, should ? "COMPLETED" : "FAILED", "%s payment %d: %s (%s)", user, k, st,
                             reason);
            if (!strcmp(st, "COMPLETED")) {
                completed++;
                spent += p->amount;
                char rs[32];
                resv_status(p, rs, sizeof rs);
                cr_expect_str_eq(rs, "PAID");
            } else {
                cr_expect_str_eq(reason, "insufficient balance", "%s payment %d", user, k);
            }
            /* debit iff completed (or refunded) */
            int64_t d = int_cmd("HEXISTS cc:{w:%s}:pay %s", user, p->pid);
            int64_t r = int_cmd("HEXISTS cc:{w:%s}:refund %s", user, p->pid);
            cr_expect(!strcmp(st, "COMPLETED") ? d == 1 && r == 0 : d == r,
                      "%s payment %d: debit %" PRId64 " refund %" PRId64 " status %s", user, k, d, r, st);
        }
        cr_expect_eq(debits(user) - refunds(user), spent / PRICE, "%s: debits minus refunds", user);
        cr_expect_eq(balance(user), topup - spent, "%s: balance", user);
        sold_expected += (int)(spent / PRICE);
    }
    cr_expect_eq(completed, sold_expected);
    /* SOLD seats are exactly the seats of PAID reservations. */
    redisReply *all = cmd("HGETALL cc:{" CONCERT "}:s:day1:seat");
    int sold = 0;
    for (size_t i = 0; i + 1 < all->elements; i += 2) {
        const char *v = all->element[i + 1]->str;
        if (v[0] != 'S') continue;
        sold++;
        char rs[32];
        str_cmd(rs, sizeof rs, "HGET cc:{" CONCERT "}:r:%s status", v + 2, NULL);
        cr_expect_str_eq(rs, "PAID", "seat %s sold to %s", all->element[i]->str, v + 2);
    }
    freeReplyObject(all);
    cr_expect_eq(sold, completed, "SOLD seats %d, completed payments %d", sold, completed);
    cr_expect_eq(int_cmd("HGET cc:{" CONCERT "}:s:day1:meta %s", "sold", NULL), completed);
    end_test();
    if (!getenv("TH_KEEP_LOGS")) unlink(cons[1].log); /* the killed one's */
}

/* ---- Sentinel: the consumer follows a failover; WAIT gates the commit ---- */

static th_redis replica;
static pid_t sentinel_pid;
static int sentinel_port;

static void stop_ha(void) {
    if (sentinel_pid > 0) {
        kill(sentinel_pid, SIGKILL);
        waitpid(sentinel_pid, NULL, 0);
        sentinel_pid = 0;
    }
    th_redis_stop(&replica);
    stop();
}

static char *info_of(th_redis *r, const char *section) {
    redisContext *rc = th_redis_connect(r);
    if (!rc) return strdup("");
    redisReply *rep = redisCommand(rc, "INFO %s", section);
    char *out = strdup(rep && rep->type == REDIS_REPLY_STRING ? rep->str : "");
    if (rep) freeReplyObject(rep);
    redisFree(rc);
    return out;
}

/* `r` is a primary with at least one replica in sync. */
static int primary_with_replica(void *arg) {
    char *info = info_of(arg, "replication");
    int ok =
        strstr(info, "role:master") && strstr(info, "connected_slaves:1") && strstr(info, "state=online");
    free(info);
    return ok;
}

static int is_primary(void *arg) {
    char *info = info_of(arg, "replication");
    int ok = strstr(info, "role:master") != NULL;
    free(info);
    return ok;
}

static redisReply *sentinel_cmd(const char *fmt, ...) {
    struct timeval tv = {1, 0};
    redisContext *rc = redisConnectWithTimeout("127.0.0.1", sentinel_port, tv);
    if (!rc || rc->err) {
        if (rc) redisFree(rc);
        return NULL;
    }
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(rc, fmt, ap);
    va_end(ap);
    redisFree(rc);
    return r;
}

/* The sentinel knows the primary and its replica. */
static int sentinel_ready(void *arg) {
    redisReply *r = sentinel_cmd("SENTINEL replicas mymaster");
    int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 1;
    if (r) freeReplyObject(r);
    return ok;
}

static void start_replica_and_sentinel(void) {
    memset(&replica, 0, sizeof replica);
    th_redis_start(&replica);
    redisContext *rc = th_redis_connect(&replica);
    redisReply *r = redisCommand(rc, "REPLICAOF 127.0.0.1 %d", redis.port);
    cr_assert(r && r->type == REDIS_REPLY_STATUS, "REPLICAOF");
    freeReplyObject(r);
    redisFree(rc);
    cr_assert(th_wait_for(primary_with_replica, &redis, 20, 10000), "the replica did not sync");
    sentinel_port = th_free_port();
    char conf[300], log[300];
    snprintf(conf, sizeof conf, "%s/sentinel.conf", replica.dir);
    snprintf(log, sizeof log, "%s/sentinel.log", replica.dir);
    FILE *f = fopen(conf, "w");
    cr_assert(f);
    fprintf(f,
            "port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor mymaster 127.0.0.1 %d 1\n"
            "sentinel down-after-milliseconds mymaster 2000\nsentinel failover-timeout mymaster 10000\n",
            sentinel_port, replica.dir, redis.port);
    fclose(f);
    char *argv[] = {"redis-server", conf, "--sentinel", NULL};
    sentinel_pid = th_spawn(argv, log);
    cr_assert(th_wait_for(sentinel_ready, NULL, 50, 15000), "sentinel did not find the replica (log %s)",
              log);
}

Test(consumer, sentinel_failover_and_wait, .init = start, .fini = stop_ha, .timeout = 90) {
    start_replica_and_sentinel();
    pay_t a = {.user = "gina"}, b = {.user = "gina"};
    pay_t *both[] = {&a, &b};
    activate(both, 1);
    snprintf(b.token, sizeof b.token, "%s", a.token);
    charge("gina", 5000);
    int32_t seats[2][4] = {{40}, {41}};
    reserve(both, 2, seats, 1);
    begin(both, 2); /* both recorded before the failover: the server stays on the old primary */
    char url[128];
    snprintf(url, sizeof url, "sentinel://127.0.0.1:%d/mymaster", sentinel_port);
    const char *flags[] = {"--redis-wait-replicas", "1", "--redis-wait-timeout-ms", "500", NULL};
    start_consumer_on(0, url, flags);

    pay_t *pa[] = {&a};
    request(pa, 1);
    cr_assert(th_consumer_log_has(&cons[0], "event=batch messages=1 completed=1", 20000), "A not settled");
    /* WAIT came before the commit (and the log line): the replica has it already. */
    inspect = &replica;
    char st[64];
    pay_status(&a, st, sizeof st);
    cr_expect_str_eq(st, "COMPLETED", "the replica has the completed payment");
    cr_expect_eq(balance("gina"), 4000);

    redisReply *r = sentinel_cmd("SENTINEL FAILOVER mymaster");
    cr_assert(r && r->type == REDIS_REPLY_STATUS, "SENTINEL FAILOVER: %s", r && r->str ? r->str : "no reply");
    freeReplyObject(r);
    cr_assert(th_wait_for(is_primary, &replica, 20, 20000), "the replica was not promoted");
    /* Sentinel turns the old primary into a replica at its next INFO round (up to
     * 10 s); do it now, as it would. */
    redisContext *rc = th_redis_connect(&redis);
    r = redisCommand(rc, "REPLICAOF 127.0.0.1 %d", replica.port);
    cr_assert(r && r->type == REDIS_REPLY_STATUS, "REPLICAOF");
    freeReplyObject(r);
    redisFree(rc);
    cr_assert(th_wait_for(primary_with_replica, &replica, 20, 20000), "the old primary did not follow");
    pay_t *pb[] = {&b};
    produce_requests(pb, 1);
    wait_settled(pb, 1, 1, 30000);
    pay_status(&b, st, sizeof st);
    cr_expect_str_eq(st, "COMPLETED");
    cr_expect_eq(balance("gina"), 3000, "debited once each");
    cr_expect_eq(debits("gina"), 2);
    char up[96];
    /* A connection of the pool reached the new primary (the pool as a whole may never
     * have been down: one connection moves while the other still answers). */
    snprintf(up, sizeof up, "event=redis_connected conn=0 host=127.0.0.1 port=%d", replica.port);
    if (!th_consumer_log_has(&cons[0], up, 0))
        snprintf(up, sizeof up, "event=redis_connected conn=1 host=127.0.0.1 port=%d", replica.port);
    cr_expect(th_consumer_log_has(&cons[0], up, 0), "the consumer follows the new primary (log %s)",
              cons[0].log);
    end_test();
}

/* Sum of the group's committed offsets on the requests topic. */
static int64_t committed_sum(void) {
    rd_kafka_t *c = new_client(RD_KAFKA_CONSUMER, group);
    int n = partitions_of(c, CC_TOPIC_PAYMENT_REQUESTS);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(l, CC_TOPIC_PAYMENT_REQUESTS, i);
    cr_assert_eq(rd_kafka_committed(c, l, 10000), 0, "committed offsets");
    int64_t sum = 0;
    for (int i = 0; i < n; i++)
        sum += l->elems[i].offset > 0 ? l->elems[i].offset : 0;
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(c);
    return sum;
}

static int committed_reaches(void *arg) { return committed_sum() >= *(int64_t *)arg; }

Test(consumer, wait_short_holds_the_commit, .init = start, .fini = stop_ha, .timeout = 90) {
    const char *flags[] = {"--redis-wait-replicas", "1", "--redis-wait-timeout-ms", "100", NULL};
    start_consumer(0, flags);
    int32_t seats[] = {50};
    pay_t *p = one_payment("hank", 5000, seats, 1);
    int64_t before = committed_sum();
    pay_t *ps[] = {p};
    request(ps, 1);
    /* No replica: the effects are applied, but the batch is neither published nor
     * committed; it is retried. */
    cr_assert(th_consumer_log_has(&cons[0], "event=redis_wait_short wanted=1 acked=0", 20000), "no WAIT");
    cr_assert(th_consumer_log_has(&cons[0], "event=batch_retry", 5000));
    cr_expect_eq(committed_sum(), before, "nothing committed while no replica has the payment");
    cr_expect_eq(balance("hank"), 4000);
    /* A replica arrives: the retried batch commits (and debits nothing more). */
    memset(&replica, 0, sizeof replica);
    th_redis_start(&replica);
    redisContext *rc = th_redis_connect(&replica);
    redisReply *r = redisCommand(rc, "REPLICAOF 127.0.0.1 %d", redis.port);
    cr_assert(r && r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);
    redisFree(rc);
    cr_assert(th_consumer_log_has(&cons[0], "event=batch messages=1 completed=1", 20000), "never committed");
    /* Offsets are committed asynchronously right after the batch is done. */
    int64_t want = before + 1;
    cr_expect(th_wait_for(committed_reaches, &want, 50, 10000), "committed after WAIT: %" PRId64 " of %" PRId64,
              committed_sum(), want);
    cr_expect_eq(balance("hank"), 4000, "debited once");
    cr_expect_eq(debits("hank"), 1);
    end_test();
}

/* ---- a broker of three killed under payment load ---- */

static th_kafka k3;

static void start_three_brokers(void) {
    char err[512];
    int rc = th_kafka_start(&k3, 3, NULL, err, sizeof err);
    cr_assert_eq(rc, 0, "3-node Kafka: %s", err);
    brokers_override = k3.bootstrap;
    start();
}

static void stop_three_brokers(void) {
    stop();
    brokers_override = NULL;
    th_kafka_stop(&k3);
}

Test(consumer, broker_killed_under_load, .init = start_three_brokers, .fini = stop_three_brokers,
     .timeout = 120) {
    enum { N = 100 };
    static pay_t pays[N];
    static pay_t *ps[N];
    static int32_t seats[N][4];
    make_payments(pays, ps, seats, N, "k", 100, PRICE);
    start_consumer(0, NULL);
    request(ps, N / 2);
    wait_settled(ps, N / 2, N / 4, 30000);
    cr_assert_eq(th_kafka_kill_node(&k3, 2), 0, "kill node 2");
    request(ps + N / 2, N - N / 2); /* acks=all: 2 of 3 in sync is enough (min.insync.replicas=2) */
    wait_settled(ps, N, N, 60000);
    cr_assert_eq(th_kafka_start_node(&k3, 2), 0, "restart node 2");
    for (int i = 0; i < N; i++) {
        char st[64];
        pay_status(&pays[i], st, sizeof st);
        cr_expect_str_eq(st, "COMPLETED", "payment %d", i);
        cr_expect_eq(balance(pays[i].user), 0, "payment %d debited once", i);
        cr_expect_eq(debits(pays[i].user), 1, "payment %d", i);
    }
    cr_expect_eq(int_cmd("HGET cc:{" CONCERT "}:s:day1:meta %s", "sold", NULL), N);
    end_test();
}

/* ---- Pay end to end (server -> Kafka -> consumer -> Redis) ---- */

static void start_with_kafka(void) {
    static const char *flags[3];
    flags[0] = "--kafka";
    flags[1] = brokers();
    flags[2] = NULL;
    start_with(flags);
}

typedef struct {
    const char *auth;
    const char *pid;
    char status[16];
} getpay_arg;

static int payment_done(void *arg) {
    getpay_arg *a = arg;
    cc_md md[] = {{"authorization", a->auth}};
    Concert__V1__GetPaymentRequest req = CONCERT__V1__GET_PAYMENT_REQUEST__INIT;
    req.payment_id = (char *)a->pid;
    Concert__V1__Payment *m = NULL;
    if (cc_client_unary(cli, "/concert.v1.PaymentService/GetPayment", &req.base,
                        &concert__v1__payment__descriptor, (ProtobufCMessage **)&m, md, 1, 5000,
                        NULL) != GRPC_STATUS_OK)
        return 0;
    int done = m->status == CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_COMPLETED ||
               m->status == CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_FAILED;
    snprintf(a->status, sizeof a->status, "%s", done ? (m->status == 2 ? "COMPLETED" : "FAILED") : "");
    th_free_msg(m);
    return done;
}

Test(consumer, pay_rpc_end_to_end, .init = start_with_kafka, .fini = stop, .timeout = 90) {
    start_consumer(0, NULL);
    pay_t p = {.user = "frank"};
    pay_t *ps[] = {&p};
    activate(ps, 1);
    charge("frank", 3000);
    int32_t seats[1][4] = {{30}};
    reserve(ps, 1, seats, 1);
    char auth[100];
    snprintf(auth, sizeof auth, "Bearer %s", p.token);
    cc_md md[] = {{"authorization", auth}};
    Concert__V1__PayRequest req = CONCERT__V1__PAY_REQUEST__INIT;
    req.reservation_id = p.rid;
    req.idempotency_key = "frank-1";
    Concert__V1__Payment *m = NULL;
    cc_status st;
    cr_assert_eq(cc_client_unary(cli, "/concert.v1.PaymentService/Pay", &req.base,
                                 &concert__v1__payment__descriptor, (ProtobufCMessage **)&m, md, 1, 10000,
                                 &st),
                 GRPC_STATUS_OK, "Pay: %s %s", cc_status_name(st.code), st.message);
    getpay_arg a = {auth, m->payment_id, ""};
    cr_assert(th_wait_for(payment_done, &a, 20, 20000), "payment %s not settled", m->payment_id);
    cr_expect_str_eq(a.status, "COMPLETED");
    cr_expect_eq(balance("frank"), 3000 - PRICE);
    /* The same key again: the same payment, nothing paid twice. */
    Concert__V1__Payment *m2 = NULL;
    cr_assert_eq(cc_client_unary(cli, "/concert.v1.PaymentService/Pay", &req.base,
                                 &concert__v1__payment__descriptor, (ProtobufCMessage **)&m2, md, 1, 10000,
                                 &st),
                 GRPC_STATUS_OK, "Pay again: %s", st.message);
    cr_expect_str_eq(m2->payment_id, m->payment_id);
    cr_expect_eq(m2->status, CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_COMPLETED);
    cr_expect_eq(balance("frank"), 3000 - PRICE);
    th_free_msg(m);
    th_free_msg(m2);
    end_test();
}

/* ---- cc_kafka producer on a libuv loop ---- */

typedef struct {
    int delivered, failed, ups, downs;
    char last_err[128];
} kstate;

static void on_dr(const char *err, void *payload) {
    kstate *k = payload;
    if (err) {
        k->failed++;
        snprintf(k->last_err, sizeof k->last_err, "%s", err);
    } else {
        k->delivered++;
    }
}

static void on_state(int up, void *payload) {
    kstate *k = payload;
    if (up)
        k->ups++;
    else
        k->downs++;
}

static void on_stop_timer(uv_timer_t *t) { uv_stop(t->loop); }

/* Runs the loop until `done(k)` or limit_ms. */
static int run_until(uv_loop_t *loop, int (*done)(const kstate *), const kstate *k, int limit_ms) {
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uint64_t end = th_now_ms() + (uint64_t)limit_ms;
    while (!done(k) && th_now_ms() < end) {
        uv_timer_start(&t, on_stop_timer, 20, 0);
        uv_run(loop, UV_RUN_DEFAULT);
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return done(k);
}

static int all_100(const kstate *k) { return k->delivered + k->failed >= 100 && k->ups > 0; }
static int three_failed(const kstate *k) { return k->delivered + k->failed >= 3 && k->downs > 0; }

Test(cc_kafka, producer_delivers_on_the_loop, .timeout = 60) {
    cc_log_init("test_consumer", CC_LOG_ERROR);
    char err[512];
    cr_assert_eq(cc_kafka_ensure_topics(brokers(), 12, -1, 15000, err, sizeof err), 0, "%s", err);
    cr_assert_eq(cc_kafka_ensure_topics(brokers(), 12, -1, 15000, err, sizeof err), 0, "twice: %s", err);
    uv_loop_t loop;
    uv_loop_init(&loop);
    cc_kafka_producer *p = NULL;
    cc_kafka_producer_config cfg = {.brokers = brokers(), .message_timeout_ms = 10000, .client_id = "test"};
    cr_assert_eq(cc_kafka_producer_create(&p, &loop, &cfg, err, sizeof err), 0, "%s", err);
    kstate k = {0};
    cc_kafka_producer_set_state_cb(p, on_state, &k);
    for (int i = 0; i < 100; i++) {
        char v[32];
        int n = snprintf(v, sizeof v, "m%d", i);
        cr_assert_eq(cc_kafka_produce(p, CC_TOPIC_RESERVATION_EVENTS, "k", 1, v, (size_t)n, on_dr, &k), 0);
    }
    cr_expect_eq(cc_kafka_producer_pending(p), 100);
    cr_expect(run_until(&loop, all_100, &k, 20000), "delivered %d failed %d ups %d", k.delivered, k.failed,
              k.ups);
    cr_expect_eq(k.delivered, 100, "last error: %s", k.last_err);
    cr_expect_eq(cc_kafka_producer_pending(p), 0);
    cc_kafka_producer_close(p, 1000);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_expect_eq(uv_loop_close(&loop), 0, "every handle closed");
}

Test(cc_kafka, producer_reports_a_dead_cluster, .timeout = 60) {
    cc_log_init("test_consumer", CC_LOG_ERROR); /* the refused connections are expected */
    char err[512], addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", th_free_port());
    uv_loop_t loop;
    uv_loop_init(&loop);
    cc_kafka_producer *p = NULL;
    cc_kafka_producer_config cfg = {.brokers = addr, .message_timeout_ms = 1500};
    cr_assert_eq(cc_kafka_producer_create(&p, &loop, &cfg, err, sizeof err), 0, "%s", err);
    kstate k = {0};
    cc_kafka_producer_set_state_cb(p, on_state, &k);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(cc_kafka_produce(p, CC_TOPIC_PAYMENT_REQUESTS, "k", 1, "v", 1, on_dr, &k), 0);
    uint64_t t0 = th_now_ms();
    cr_expect(run_until(&loop, three_failed, &k, 15000), "failed %d downs %d", k.failed, k.downs);
    cr_expect_eq(k.failed, 3);
    cr_expect_lt(th_now_ms() - t0, 6000, "reported within the message timeout");
    cr_expect(strstr(k.last_err, "timed out") || strstr(k.last_err, "Timed out"), "reason: %s", k.last_err);
    /* Close with messages still queued: they fail with "closing". */
    kstate k2 = {0};
    cr_assert_eq(cc_kafka_produce(p, CC_TOPIC_PAYMENT_REQUESTS, "k", 1, "v", 1, on_dr, &k2), 0);
    cc_kafka_producer_close(p, 100);
    cr_expect_eq(k2.failed, 1);
    cr_expect_str_eq(k2.last_err, "closing");
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_expect_eq(uv_loop_close(&loop), 0);
}

/* ---- an error reply in the middle of a pipelined step (issue 8's run_step defect) ----
 * One payment of a batch gets an error reply (its wallet's balance key is a hash:
 * WRONGTYPE inside pay_debit) while the others' replies are fine; with `flush` the
 * script cache is flushed first, so every step meets NOSCRIPT too. The connection
 * stays up. Every reply is matched to its own payment: no payment is skipped or
 * settled from another's reply; the batch is retried until the key is repaired, and
 * then every payment ends COMPLETED, debited exactly once. */
static void error_reply_mid_step(int flush) {
    enum { N = 24, BAD = 11 };
    static pay_t pays[N];
    static pay_t *ps[N];
    static int32_t seats[N][4];
    make_payments(pays, ps, seats, N, "mid", 200, 3 * PRICE);
    const char *flags[] = {"--batch", "100", NULL};
    start_consumer(0, flags);
    freeReplyObject(cmd("DEL cc:{w:%s}:bal", pays[BAD].user));
    freeReplyObject(cmd("HSET cc:{w:%s}:bal poison 1", pays[BAD].user));
    if (flush) freeReplyObject(cmd("SCRIPT FLUSH"));
    request(ps, N);
    cr_assert(th_consumer_log_has(&cons[0], "event=redis_error step=debit", 20000), "no error reply met (log %s)",
              cons[0].log);
    cr_assert(th_consumer_log_has(&cons[0], "event=batch_retry", 5000), "the batch is not retried");
    /* Nothing of the poisoned payment settled meanwhile (it is retried, not skipped). */
    char st[64];
    pay_status(&pays[BAD], st, sizeof st);
    cr_expect(strcmp(st, "COMPLETED") && strcmp(st, "FAILED"), "the failed payment settled anyway: %s", st);
    freeReplyObject(cmd("DEL cc:{w:%s}:bal", pays[BAD].user));
    char amount[16];
    snprintf(amount, sizeof amount, "%d", 3 * PRICE);
    freeReplyObject(cmd("SET cc:{w:%s}:bal %s", pays[BAD].user, amount));
    wait_settled(ps, N, N, 30000);
    for (int i = 0; i < N; i++) {
        pay_status(&pays[i], st, sizeof st);
        cr_expect_str_eq(st, "COMPLETED", "payment %d", i);
        cr_expect_eq(balance(pays[i].user), 2 * PRICE, "payment %d debited once", i);
        cr_expect_eq(debits(pays[i].user), 1, "payment %d", i);
        cr_expect_eq(refunds(pays[i].user), 0, "payment %d", i);
    }
    cr_expect(!th_consumer_log_has(&cons[0], "event=payment_unknown", 0), "a payment was skipped as unknown");
    cr_expect(!th_consumer_log_has(&cons[0], "event=payment_mismatch", 0), "a payment was skipped as mismatched");
    cr_expect(!th_consumer_log_has(&cons[0], "skipped=1", 0), "a payment was skipped");
    cr_expect_eq(int_cmd("HGET cc:{" CONCERT "}:s:day1:meta %s", "sold", NULL), N);
    /* The WRONGTYPE error is logged at error level on purpose: check the exit only. */
    cons[0].keep_log = 1;
    cr_expect_eq(th_consumer_stop(&cons[0]), 0, "payment-consumer exit status (log %s)", cons[0].log);
    if (!getenv("TH_KEEP_LOGS")) unlink(cons[0].log);
    end_test();
}

Test(consumer, error_reply_mid_step_skips_nothing, .init = start, .fini = stop, .timeout = 90) {
    error_reply_mid_step(0);
}

Test(consumer, error_reply_mid_step_after_script_flush, .init = start, .fini = stop, .timeout = 90) {
    error_reply_mid_step(1);
}

/* ---- metrics ---- */

/* Sum of every sample of `name` (any labels; "name{" or "name ") on a page. */
static double metric_sum(const char *page, const char *name) {
    double sum = 0;
    size_t n = strlen(name);
    for (const char *p = page; p && (p = strstr(p, name)); p += n) {
        if (p != page && p[-1] != '\n') continue;
        if (p[n] != '{' && p[n] != ' ') continue;
        const char *v = strchr(p, ' ');
        if (v) sum += strtod(v + 1, NULL);
    }
    return sum;
}

/* The consumer's /metrics body (NULL if it does not answer). */
static char *consumer_page(th_consumer *c) {
    int port = th_log_port(c->log, "metrics_listening");
    if (!port) return NULL;
    char *resp = th_http(port, "GET", "/metrics");
    if (!resp) return NULL;
    char *body = strstr(resp, "\r\n\r\n");
    char *out = body ? strdup(body + 4) : NULL;
    free(resp);
    return out;
}

static double consumer_metric(th_consumer *c, const char *name) {
    char *page = consumer_page(c);
    double v = page ? metric_sum(page, name) : -1;
    free(page);
    return v;
}

static const char *const metrics_flags[] = {"--metrics", "127.0.0.1:0", NULL};

Test(consumer, metrics_page, .init = start, .fini = stop, .timeout = 90) {
    start_consumer(0, metrics_flags);
    int32_t seats[] = {60};
    pay_t *p = one_payment("ivan", 5000, seats, 1);
    pay_t *ps[] = {p};
    request(ps, 1);
    wait_settled(ps, 1, 1, 20000);
    char *page = NULL;
    uint64_t end = th_now_ms() + 10000;
    /* The counters are bumped once the batch is done (results acknowledged). */
    while (th_now_ms() < end) {
        free(page);
        page = consumer_page(&cons[0]);
        if (page && strstr(page, "payment_consumer_payments_total{outcome=\"completed\"} 1\n")) break;
        th_pause_ms(50);
    }
    cr_assert(page, "no /metrics page (log %s)", cons[0].log);
    const char *want[] = {
        "payment_consumer_payments_total{outcome=\"completed\"} 1\n",
        "payment_consumer_batch_size_count 1\n",
        "payment_consumer_settle_seconds_count 1\n",
        "payment_consumer_redis_up 1\n",
        "payment_consumer_kafka_up 1\n",
        "payment_consumer_redis_errors_total 0\n",
        "payment_consumer_kafka_errors_total ",
        "payment_consumer_lag{partition=\"",
        "# TYPE payment_consumer_under_replicated_partitions gauge\n",
        "payment_consumer_build_info{version=\"" CONCERT_VERSION "\"} 1\n",
        "\nprocess_cpu_seconds_total ",
        "\nprocess_resident_memory_bytes ",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_expect(strstr(page, want[i]), "missing %s in\n%s", want[i], page);
    /* The lag counts from committed offsets, and commits follow the batch. */
    double lag = -1;
    for (uint64_t until = th_now_ms() + 5000; th_now_ms() < until; th_pause_ms(50)) {
        lag = consumer_metric(&cons[0], "payment_consumer_lag");
        if (lag == 0) break;
    }
    cr_expect_eq(lag, 0, "no lag once settled and committed");
    FILE *f = popen("promtool check metrics > /dev/null 2>&1", "w");
    cr_assert(f, "promtool (Debian package prometheus) must be installed");
    fputs(page, f);
    cr_expect_eq(pclose(f), 0, "promtool check metrics refuses the page:\n%s", page);
    free(page);
    end_test();
}

/* ---- the lag drill: a backlog, then more replicas drain it faster ----
 * Each consumer is capped (--max-rate) so that a consumer, not the shared 2-core
 * machine, is the bottleneck, as one replica is when the load outgrows it. */
enum { DRILL_N = 390, DRILL_RATE = 20 };

/* A metric summed over every live consumer. */
static double drill_sum(const char *name) {
    double sum = 0;
    for (int i = 0; i < 3; i++)
        if (cons[i].pid > 0) {
            double v = consumer_metric(&cons[i], name);
            if (v > 0) sum += v;
        }
    return sum;
}

static double drill_completed(void) { return drill_sum("payment_consumer_payments_total"); }
static double drill_lag(void) { return drill_sum("payment_consumer_lag"); }

/* Settled per second over `ms`, from the consumers' own counters. */
static double drill_rate(int ms) {
    double c0 = drill_completed();
    uint64_t t0 = th_now_ms();
    while (th_now_ms() - t0 < (uint64_t)ms)
        th_pause_ms(50);
    double c1 = drill_completed();
    return (c1 - c0) * 1000.0 / (double)(th_now_ms() - t0);
}

static int count_has(const char *needle) {
    int n = 0;
    for (int i = 0; i < 3; i++)
        n += cons[i].pid > 0 && th_consumer_log_has(&cons[i], needle, 0);
    return n;
}

static int all_three_assigned(void *arg) {
    return count_has("level=info comp=payment-consumer event=partitions_assigned") == 3;
}

Test(consumer, lag_drill_more_replicas_drain_faster, .init = start, .fini = stop, .timeout = 120) {
    static pay_t pays[DRILL_N];
    static pay_t *ps[DRILL_N];
    static int32_t seats[DRILL_N][4];
    make_payments(pays, ps, seats, DRILL_N, "lag", 1, PRICE);
    char rate[16];
    snprintf(rate, sizeof rate, "%d", DRILL_RATE);
    const char *flags[] = {"--metrics", "127.0.0.1:0", "--max-rate", rate, "--lag-interval-ms", "500", NULL};
    start_consumer(0, flags);
    request(ps, DRILL_N); /* the backlog */
    double lag0 = drill_lag();
    double r1 = drill_rate(3000);
    double lag1 = drill_lag();
    for (int i = 1; i < 3; i++)
        th_consumer_start(&cons[i], redis.url, brokers(), group, flags);
    cr_assert(th_wait_for(all_three_assigned, NULL, 50, 30000), "the new replicas got no partitions");
    double r3 = drill_rate(3000);
    double lag3 = drill_lag();
    fprintf(stderr,
            "lag drill: 1 replica %.1f payments/s (lag %.0f -> %.0f), 3 replicas %.1f payments/s (lag %.0f), "
            "cap %d/s each\n",
            r1, lag0, lag1, r3, lag3, DRILL_RATE);
    cr_expect(r1 > 0.5 * DRILL_RATE && r1 < 1.5 * DRILL_RATE, "one replica drains %.1f/s, cap %d", r1, DRILL_RATE);
    cr_expect(r3 > 2.0 * r1, "three replicas drain %.1f/s, one drained %.1f/s", r3, r1);
    cr_expect(lag1 > 0 && lag3 < lag1, "the lag falls in the metrics: %.0f then %.0f", lag1, lag3);
    wait_settled(ps, DRILL_N, DRILL_N, 60000);
    for (int i = 0; i < DRILL_N; i++)
        cr_expect_eq(debits(pays[i].user), 1, "payment %d debited once", i);
    cr_expect_eq(int_cmd("HGET cc:{" CONCERT "}:s:day1:meta %s", "sold", NULL), DRILL_N);
    end_test();
}

/* ---- on a Redis Cluster (3 primaries, 1 replica each) ----
 * The consumer on the same cc_redis as the server: concert and wallet slots on
 * different primaries, WAIT on every primary; every payment settles once. Checked
 * through the API (the keys are spread over the nodes). */
static th_rcluster rcl;

static void start_on_cluster(void) {
    char err[512];
    cr_assert_eq(th_rcluster_start(&rcl, 3, 1, err, sizeof err), 0, "Redis Cluster: %s", err);
    cluster_url = rcl.url;
    start_with_kafka();
}

static void stop_on_cluster(void) {
    stop();
    th_rcluster_stop(&rcl);
    cluster_url = NULL;
}

static int64_t api_balance(const char *user) {
    Concert__V1__GetBalanceRequest req = CONCERT__V1__GET_BALANCE_REQUEST__INIT;
    req.user_id = (char *)user;
    Concert__V1__Balance *b = NULL;
    cc_status st;
    cr_assert_eq(cc_client_unary(cli, "/concert.v1.WalletService/GetBalance", &req.base, &concert__v1__balance__descriptor,
                                 (ProtobufCMessage **)&b, NULL, 0, 5000, &st),
                 GRPC_STATUS_OK, "GetBalance: %s", st.message);
    int64_t v = b->balance;
    th_free_msg(b);
    return v;
}

Test(consumer, on_a_redis_cluster, .init = start_on_cluster, .fini = stop_on_cluster, .timeout = 120) {
    const char *flags[] = {"--redis-wait-replicas", "1", NULL};
    start_consumer_on(0, cluster_url, flags);
    enum { N = 12 };
    static pay_t pays[N];
    static pay_t *ps[N];
    static int32_t seats[N][4];
    memset(pays, 0, sizeof pays);
    for (int i = 0; i < N; i++) {
        snprintf(pays[i].user, sizeof pays[i].user, "cl-%d", i);
        ps[i] = &pays[i];
        seats[i][0] = i + 1;
    }
    activate(ps, N);
    for (int i = 0; i < N; i++)
        charge(pays[i].user, 3 * PRICE);
    reserve(ps, N, seats, 1);
    static char auth[N][100];
    for (int i = 0; i < N; i++) {
        snprintf(auth[i], sizeof auth[i], "Bearer %s", pays[i].token);
        cc_md md[] = {{"authorization", auth[i]}};
        char key[32];
        snprintf(key, sizeof key, "cl-key-%d", i);
        Concert__V1__PayRequest req = CONCERT__V1__PAY_REQUEST__INIT;
        req.reservation_id = pays[i].rid;
        req.idempotency_key = key;
        Concert__V1__Payment *m = NULL;
        cc_status st;
        cr_assert_eq(cc_client_unary(cli, "/concert.v1.PaymentService/Pay", &req.base, &concert__v1__payment__descriptor,
                                     (ProtobufCMessage **)&m, md, 1, 10000, &st),
                     GRPC_STATUS_OK, "Pay %d: %s", i, st.message);
        snprintf(pays[i].pid, sizeof pays[i].pid, "%s", m->payment_id);
        th_free_msg(m);
    }
    for (int i = 0; i < N; i++) {
        getpay_arg a = {auth[i], pays[i].pid, ""};
        cr_assert(th_wait_for(payment_done, &a, 20, 30000), "payment %d not settled (log %s)", i, cons[0].log);
        cr_expect_str_eq(a.status, "COMPLETED", "payment %d", i);
        cr_expect_eq(api_balance(pays[i].user), 2 * PRICE, "payment %d debited once", i);
    }
    cr_expect(th_consumer_log_has(&cons[0], "event=redis_up mode=cluster", 0), "the consumer runs on the cluster");
    end_test();
}

/* ---- a cluster primary killed while payments flow ---- */
#include "cc_slot.h"
#include "concert/v1/admin.pb-c.h"

/* Port of the primary serving `slot`, as node 1..n see it. */
static int cluster_owner(int slot) {
    for (int n = 1; n <= rcl.nodes; n++) {
        redisContext *c = redisConnect("127.0.0.1", th_rcluster_port(&rcl, n));
        if (!c || c->err) {
            if (c) redisFree(c);
            continue;
        }
        redisReply *r = redisCommand(c, "CLUSTER SLOTS");
        int port = 0;
        for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
            if (slot >= r->element[i]->element[0]->integer && slot <= r->element[i]->element[1]->integer)
                port = (int)r->element[i]->element[2]->element[1]->integer;
        if (r) freeReplyObject(r);
        redisFree(c);
        if (port) return port;
    }
    return 0;
}

typedef struct {
    int primary, replica;
} synced_arg;

static int replica_synced(void *arg) {
    synced_arg *s = arg;
    long long a = th_info_int(s->primary, "master_repl_offset"), b = th_info_int(s->replica, "slave_repl_offset");
    return a > 0 && a == b;
}

/* Pay until the server answers (UNAVAILABLE/UNKNOWN/DEADLINE_EXCEEDED are retried with
 * the same key, as a client should); returns the final code. */
static grpc_status_code pay_retrying(pay_t *p, const char *auth, const char *key, int *retries) {
    for (uint64_t end = th_now_ms() + 30000; th_now_ms() < end;) {
        cc_md md[] = {{"authorization", auth}};
        Concert__V1__PayRequest req = CONCERT__V1__PAY_REQUEST__INIT;
        req.reservation_id = p->rid;
        req.idempotency_key = (char *)key;
        Concert__V1__Payment *m = NULL;
        grpc_status_code code = cc_client_unary(cli, "/concert.v1.PaymentService/Pay", &req.base,
                                                &concert__v1__payment__descriptor, (ProtobufCMessage **)&m, md, 1,
                                                3000, NULL);
        if (code == GRPC_STATUS_OK) {
            snprintf(p->pid, sizeof p->pid, "%s", m->payment_id);
            th_free_msg(m);
            return code;
        }
        if (code != GRPC_STATUS_UNAVAILABLE && code != GRPC_STATUS_UNKNOWN && code != GRPC_STATUS_DEADLINE_EXCEEDED)
            return code;
        ++*retries;
        th_pause_ms(50);
    }
    return GRPC_STATUS_DEADLINE_EXCEEDED;
}

Test(consumer, cluster_primary_killed_while_paying, .init = start_on_cluster, .fini = stop_on_cluster,
     .timeout = 150) {
    const char *flags[] = {"--redis-wait-replicas", "1", NULL};
    start_consumer_on(0, cluster_url, flags);
    enum { N = 20 };
    static pay_t pays[N];
    static pay_t *ps[N];
    static int32_t seats[N][4];
    static char auth[N][100], keys[N][32];
    memset(pays, 0, sizeof pays);
    for (int i = 0; i < N; i++) {
        snprintf(pays[i].user, sizeof pays[i].user, "kp-%d", i);
        snprintf(keys[i], sizeof keys[i], "kp-key-%d", i);
        ps[i] = &pays[i];
        seats[i][0] = 100 + i;
    }
    activate(ps, N);
    for (int i = 0; i < N; i++) charge(pays[i].user, 3 * PRICE);
    reserve(ps, N, seats, 1);
    for (int i = 0; i < N; i++) snprintf(auth[i], sizeof auth[i], "Bearer %s", pays[i].token);
    /* The concert's primary goes down while the first half is being settled. */
    char tag[80];
    snprintf(tag, sizeof tag, "{%s}", CONCERT);
    int doomed_port = cluster_owner(cc_key_slot(tag, strlen(tag))), doomed = 0, rep = 0;
    for (int n = 1; n <= rcl.nodes; n++) {
        int p = th_rcluster_port(&rcl, n);
        if (p == doomed_port) doomed = n;
        else if (th_info_int(p, "master_port") == doomed_port) rep = p;
    }
    cr_assert(doomed && rep, "the concert's primary and its replica");
    int retries = 0;
    for (int i = 0; i < N / 2; i++)
        cr_assert_eq(pay_retrying(&pays[i], auth[i], keys[i], &retries), GRPC_STATUS_OK, "Pay %d", i);
    /* What Redis acknowledged without WAIT (Pay's own records) is lost with a primary
     * that had not replicated it; wait for the replica, then kill. The consumer is
     * mid-batch: its steps fail and are redone on the new primary. */
    synced_arg sa = {doomed_port, rep};
    cr_assert(th_wait_for(replica_synced, &sa, 2, 5000), "replica caught up");
    cr_assert_eq(th_rcluster_kill_node(&rcl, doomed), 0);
    uint64_t t0 = th_now_ms();
    for (int i = N / 2; i < N; i++)
        cr_assert_eq(pay_retrying(&pays[i], auth[i], keys[i], &retries), GRPC_STATUS_OK, "Pay %d during failover", i);
    cr_log_info("cluster failover while paying: Pay retried %d times, all accepted after %llu ms", retries,
                (unsigned long long)(th_now_ms() - t0));
    for (int i = 0; i < N; i++) {
        getpay_arg a = {auth[i], pays[i].pid, ""};
        cr_assert(th_wait_for(payment_done, &a, 20, 60000), "payment %d not settled (log %s)", i, cons[0].log);
        cr_expect_str_eq(a.status, "COMPLETED", "payment %d", i);
        cr_expect_eq(api_balance(pays[i].user), 2 * PRICE, "payment %d debited once", i);
    }
    /* The same key again reports the same, completed payment: nothing paid twice. */
    int again = 0;
    pay_t copy = pays[0];
    cr_expect_eq(pay_retrying(&copy, auth[0], keys[0], &again), GRPC_STATUS_OK);
    cr_expect_str_eq(copy.pid, pays[0].pid, "same key, same payment");
    cc_md md[] = {{"x-admin-key", KEY}};
    Concert__V1__AuditRequest areq = CONCERT__V1__AUDIT_REQUEST__INIT;
    areq.concert_id = CONCERT;
    Concert__V1__AuditReport *rep_a = NULL;
    cr_assert_eq(cc_client_unary(cli, "/concert.v1.AdminService/Audit", &areq.base, &concert__v1__audit_report__descriptor,
                                 (ProtobufCMessage **)&rep_a, md, 1, 30000, NULL),
                 GRPC_STATUS_OK, "Audit");
    cr_expect_eq(rep_a->n_problems, 0, "audit: %s", rep_a->n_problems ? rep_a->problems[0] : "");
    th_free_msg(rep_a);
    end_test();
}
