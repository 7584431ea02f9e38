/* Audit at scale (issue 9, item 5): a concert with 100,000 paid seats and 100,000
 * COMPLETED payments of 10,000 users, written straight into a real Redis in the
 * layout docs/DATA.md gives. AdminService.Audit must find it clean, and while it runs
 * a GetBalance probe keeps its p99 within twice the p99 it has without the audit (the
 * audit once ran 9 s on the event loop at 40,000 payments and made Redis time out). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "concert/v1/admin.pb-c.h"
#include "concert/v1/wallet.pb-c.h"
#include "th.h"

#define KEY "audit-admin-key"
#define N_PAYMENTS 100000
#define N_USERS 10000

static th_redis redis;
static th_server server;
static cc_client *cli;

static void start(void) {
    memset(&redis, 0, sizeof redis);
    th_redis_start(&redis);
    const char *flags[] = {"--admin-key", KEY, NULL};
    th_server_start(&server, redis.url, flags);
    cli = cc_client_open(server.addr);
}

static void stop(void) {
    th_server_close(&server, &cli);
    th_redis_stop(&redis);
}

/* One chunk of paid reservations [from, to], consistent in every key. */
static const char seed_lua[] =
    "local P, from, to, users = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])\n"

    "for i = from, to do\n"
    "  local rid = string.format('r1.big.%032x', i)\n"
    "  local pid = string.format('p1.big.%032x', i)\n"
    "  local user = 'u' .. (i % users)\n"
    "  redis.call('HSET', P .. 's:s1:seat', i, 'S|' .. rid)\n"
    "  redis.call('HSET', P .. 'r:' .. rid, 'user', user, 'sched', 's1', 'seats', tostring(i), 'n', 1,\n"
    "    'total', '10', 'status', 'PAID', 'payment', pid, 'exp', 0, 'created', 0)\n"
    "  redis.call('HSET', P .. 'p:' .. pid, 'rid', rid, 'user', user, 'amount', '10', 'status', 'COMPLETED')\n"
    "  redis.call('SADD', P .. 'pays', pid)\n"
    "  redis.call('HSET', 'cc:{w:' .. user .. '}:pay', pid, '10')\n"
    "end\n"

    "return to - from + 1\n";

static void seed(void) {
    cr_assert_eq(th_admin_catalogue(cli, KEY, "big", "s1", N_PAYMENTS, 10), GRPC_STATUS_OK);
    redisContext *rc = th_redis_connect(&redis);
    struct timeval tv = {60, 0};
    redisSetTimeout(rc, tv);
    for (int from = 1; from <= N_PAYMENTS; from += 5000) {
        char f[16], t[16], u[16];
        snprintf(f, sizeof f, "%d", from);
        snprintf(t, sizeof t, "%d", from + 4999 > N_PAYMENTS ? N_PAYMENTS : from + 4999);
        snprintf(u, sizeof u, "%d", N_USERS);
        const char *argv[] = {"EVAL", seed_lua, "0", "cc:{big}:", f, t, u};
        redisReply *r = redisCommandArgv(rc, 7, argv, NULL);
        cr_assert(r && r->type == REDIS_REPLY_INTEGER, "seed: %s", r && r->str ? r->str : "no reply");
        freeReplyObject(r);
    }
    redisReply *r = redisCommand(rc, "HSET cc:{big}:s:s1:meta sold %d held 0", N_PAYMENTS);
    freeReplyObject(r);
    redisFree(rc);
}

typedef struct {
    const char *addr;
    Concert__V1__AuditReport *rep;
    cc_status st;
    volatile int done;
    uint64_t took_ms;
} audit_arg;

static void *run_audit(void *p) {
    audit_arg *a = p;
    cc_client *c = cc_client_open(a->addr);
    cc_md md[] = {{"x-admin-key", KEY}};
    Concert__V1__AuditRequest req = CONCERT__V1__AUDIT_REQUEST__INIT;
    req.concert_id = "big";
    uint64_t t0 = th_now_ms();
    cc_client_unary(c, "/concert.v1.AdminService/Audit", &req.base, &concert__v1__audit_report__descriptor,
                    (ProtobufCMessage **)&a->rep, md, 1, 100000, &a->st);
    a->took_ms = th_now_ms() - t0;
    cc_client_close(c);
    __atomic_store_n(&a->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static double probe_us(void) {
    Concert__V1__GetBalanceRequest req = CONCERT__V1__GET_BALANCE_REQUEST__INIT;
    req.user_id = "u17";
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    cc_status st;
    grpc_status_code code =
        cc_client_unary(cli, "/concert.v1.WalletService/GetBalance", &req.base, NULL, NULL, NULL, 0, 10000, &st);
    clock_gettime(CLOCK_MONOTONIC, &b);
    cr_assert_eq(code, GRPC_STATUS_OK, "the probe failed: %s %s", cc_status_name(code), st.message);
    return (double)(b.tv_sec - a.tv_sec) * 1e6 + (double)(b.tv_nsec - a.tv_nsec) / 1e3;
}

/* CPU seconds (user + system) of a process, from /proc. */
static double proc_cpu_s(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (p) sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st);
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double p99(double *v, size_t n) {
    qsort(v, n, sizeof *v, cmp_d);
    return v[(n * 99) / 100];
}

static void print_dist(const char *what, const double *v, size_t n) {
    fprintf(stderr, "audit: %s: p50 %.0f p90 %.0f p99 %.0f p99.9 %.0f max %.0f us (%zu probes)\n", what, v[n / 2],
            v[n * 9 / 10], v[n * 99 / 100], v[n * 999 / 1000], v[n - 1], n);
}

Test(audit, hundred_thousand_payments_without_stalling_others, .init = start, .fini = stop, .timeout = 240) {
    seed();
    enum { BASE = 3000, MAX = 200000 };
    static double base[BASE], during[MAX];
    for (int i = 0; i < 50; i++) probe_us(); /* warm up */
    for (int i = 0; i < BASE; i++) base[i] = probe_us();
    double srv0 = proc_cpu_s(server.pid), red0 = proc_cpu_s(redis.pid);
    audit_arg a = {server.addr, NULL, {0}, 0, 0};
    pthread_t th;
    pthread_create(&th, NULL, run_audit, &a);
    size_t n = 0;
    while (!__atomic_load_n(&a.done, __ATOMIC_SEQ_CST) && n < MAX) during[n++] = probe_us();
    pthread_join(th, NULL);
    double srv1 = proc_cpu_s(server.pid), red1 = proc_cpu_s(redis.pid);
    /* The same probe again without the audit: the baseline is measured on both sides
     * of the audit (the machine is shared and noisy), the worse of the two counts. */
    static double after[BASE];
    for (int i = 0; i < BASE; i++) after[i] = probe_us();
    fprintf(stderr, "audit: CPU during the audit and its probes: concert-server %.2f s, redis-server %.2f s\n",
            srv1 - srv0, red1 - red0);
    cr_assert_eq(a.st.code, GRPC_STATUS_OK, "Audit: %s %s", cc_status_name(a.st.code), a.st.message);
    cr_assert(a.rep);
    cr_expect(a.rep->ok, "a consistent concert audits clean (%zu problems, first: %s)", a.rep->n_problems,
              a.rep->n_problems ? a.rep->problems[0] : "");
    cr_expect_eq(a.rep->payments_completed, N_PAYMENTS);
    cr_expect_eq(a.rep->seats_sold, N_PAYMENTS);
    cr_expect_eq(a.rep->users_checked, N_USERS);
    cr_assert_geq(n, 100, "only %zu probes ran during the audit (%llu ms)", n, (unsigned long long)a.took_ms);
    double pb0 = p99(base, BASE), pb1 = p99(after, BASE), pd = p99(during, n);
    double pb = pb0 > pb1 ? pb0 : pb1;
    print_dist("before", base, BASE);
    print_dist("after", after, BASE);
    print_dist("during", during, n);
    fprintf(stderr, "audit: %d payments in %llu ms; GetBalance probe p99 %.0f us without, %.0f us during (%zu probes)\n",
            N_PAYMENTS, (unsigned long long)a.took_ms, pb, pd, n);
    /* Sub-millisecond p99s on a shared 2-core machine are noise; 1 ms is the floor. */
    double allowed = 2 * (pb > 1000 ? pb : 1000);
    cr_expect_leq(pd, allowed, "the probe's p99 went from %.0f us to %.0f us during the audit", pb, pd);
    protobuf_c_message_free_unpacked(&a.rep->base, NULL);
    /* And tampering is still found at this size. */
    redisContext *rc = th_redis_connect(&redis);
    freeReplyObject(redisCommand(rc, "HSET cc:{big}:p:p1.big.%032x status PENDING", 777));
    freeReplyObject(redisCommand(rc, "HSET cc:{w:u5}:pay p1.big.ffffffffffffffffffffffffffffffff 10"));
    redisFree(rc);
    audit_arg b = {server.addr, NULL, {0}, 0, 0};
    run_audit(&b);
    cr_assert_eq(b.st.code, GRPC_STATUS_OK, "%s", b.st.message);
    cr_expect_not(b.rep->ok);
    int sold_unpaid = 0, stray_debit = 0;
    for (size_t i = 0; i < b.rep->n_problems; i++) {
        if (strstr(b.rep->problems[i], "SOLD without a COMPLETED payment")) sold_unpaid = 1;
        if (strstr(b.rep->problems[i], "has no payment")) stray_debit = 1;
    }
    cr_expect(sold_unpaid, "a seat sold without a COMPLETED payment is reported");
    cr_expect(stray_debit, "a debit without a payment is reported");
    cr_expect_eq(b.rep->payments_in_flight, 1);
    protobuf_c_message_free_unpacked(&b.rep->base, NULL);
    if (cli) cc_client_close(cli);
    cli = NULL;
    cr_assert_eq(th_server_stop(&server), 0, "exit status (log %s)", server.log);
}
