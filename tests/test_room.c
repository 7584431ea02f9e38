/* The waiting room's second edition (issue 11) against a real redis-server and
 * concert-server over gRPC: straight-through admission, the queueing methods and their
 * changes at run time, a scheduled sale with a pre-queue and its verifiable shuffle,
 * signed admission receipts (and their keys across servers and rotations), and bad
 * input on every new policy field (INVALID_ARGUMENT naming the field, nothing changed
 * in Redis). The adaptive controller is in test_adaptive.c (it needs Kafka), the
 * invariants with two servers under every method in test_admission.c, the Python
 * verification recipes in tests/ops/test_room_recipes.sh. */
#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "cc_receipt.h"
#include "concert/v1/admin.pb-c.h"
#include "concert/v1/queue.pb-c.h"
#include "th.h"

#define KEY "room-admin-key"
#define QS "/concert.v1.QueueService/"
#define AS "/concert.v1.AdminService/"

static th_redis redis;
static th_server server, server2;
static cc_client *cli;

static void start_with(const char *const *extra) {
    memset(&redis, 0, sizeof redis);
    th_redis_start(&redis);
    static const char *const base[] = {"--admin-key", KEY, "--rate-user", "0", "--rate-peer", "0", NULL};
    th_server_start_with(&server, redis.url, base, extra);
    cli = cc_client_open(server.addr);
}

static void start(void) { start_with(NULL); }

static void stop(void) {
    th_server_close(&server, &cli);
    th_server_stop(&server2);
    th_redis_stop(&redis);
}

static void end_test(void) {
    int rc = th_server_close(&server, &cli);
    cr_assert_eq(rc, 0, "concert-server must exit 0 on SIGTERM, without a sanitizer report (got %d, log %s)", rc,
                 server.log);
}

static int64_t wall_ms(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* SetQueuePolicy of the named fields (NULL-terminated) of *p. */
static grpc_status_code set_policy(Concert__V1__QueuePolicy *p, const char *const *fields, cc_status *st) {
    cc_md md[] = {{"x-admin-key", KEY}};
    Concert__V1__SetQueuePolicyRequest req = CONCERT__V1__SET_QUEUE_POLICY_REQUEST__INIT;
    size_t n = 0;
    while (fields[n]) n++;
    req.policy = p;
    req.n_update_fields = n;
    req.update_fields = (char **)fields;
    cc_status local;
    return cc_client_unary(cli, AS "SetQueuePolicy", &req.base, NULL, NULL, md, 1, 5000, st ? st : &local);
}

static void set_method(const char *concert, Concert__V1__QueueingMethod m) {
    Concert__V1__QueuePolicy p = CONCERT__V1__QUEUE_POLICY__INIT;
    p.concert_id = (char *)concert;
    p.queueing_method = m;
    const char *f[] = {"queueing_method", NULL};
    cc_status st;
    cr_assert_eq(set_policy(&p, f, &st), GRPC_STATUS_OK, "set queueing_method: %s", st.message);
}

static void set_rate(const char *concert, int64_t rate, int64_t max_active) {
    Concert__V1__QueuePolicy p = CONCERT__V1__QUEUE_POLICY__INIT;
    p.concert_id = (char *)concert;
    p.admit_rate = rate;
    p.max_active = max_active;
    const char *f[] = {"admit_rate", "max_active", NULL};
    cc_status st;
    cr_assert_eq(set_policy(&p, f, &st), GRPC_STATUS_OK, "set admit_rate: %s", st.message);
}

static Concert__V1__QueuePolicy *get_policy(const char *concert) {
    cc_md md[] = {{"x-admin-key", KEY}};
    Concert__V1__GetQueuePolicyRequest req = CONCERT__V1__GET_QUEUE_POLICY_REQUEST__INIT;
    req.concert_id = (char *)concert;
    Concert__V1__QueuePolicy *p = NULL;
    cc_status st;
    cr_assert_eq(cc_client_unary(cli, AS "GetQueuePolicy", &req.base, &concert__v1__queue_policy__descriptor,
                                 (ProtobufCMessage **)&p, md, 1, 5000, &st),
                 GRPC_STATUS_OK, "GetQueuePolicy: %s", st.message);
    return p;
}

static Concert__V1__Stats *stats(const char *concert) {
    cc_md md[] = {{"x-admin-key", KEY}};
    Concert__V1__GetStatsRequest req = CONCERT__V1__GET_STATS_REQUEST__INIT;
    req.concert_id = (char *)concert;
    Concert__V1__Stats *s = NULL;
    cc_status st;
    cr_assert_eq(cc_client_unary(cli, AS "GetStats", &req.base, &concert__v1__stats__descriptor,
                                 (ProtobufCMessage **)&s, md, 1, 5000, &st),
                 GRPC_STATUS_OK, "GetStats: %s", st.message);
    return s;
}

static Concert__V1__QueueStatus *issue(const char *user, const char *concert) {
    Concert__V1__QueueStatus *s = NULL;
    cc_status st;
    cr_assert_eq(th_issue(cli, user, concert, &s, &st), GRPC_STATUS_OK, "IssueToken %s %s: %s", user, concert,
                 st.message);
    return s;
}

static void expect_field_error(grpc_status_code got, const cc_status *st, grpc_status_code want, const char *field) {
    cr_expect_eq(got, want, "want %s, got %s: %s", cc_status_name(want), cc_status_name(got), st->message);
    cr_expect(strstr(st->message, field) != NULL, "message '%s' must name '%s'", st->message, field);
}

/* The 16-byte token id of a token (its last 32 hex digits). */
static void token_id(const char *token, unsigned char id[16]) {
    const char *hex = token + strlen(token) - 32;
    for (int i = 0; i < 16; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        id[i] = (unsigned char)v;
    }
}

/* ---- straight through ---- */

Test(room, straight_through_when_there_is_room, .init = start, .fini = stop) {
    cr_assert_eq(th_admin_concert(cli, KEY, "st"), GRPC_STATUS_OK);
    set_rate("st", 10, 2);
    /* Nobody waits, the bucket has credit, nobody is active: ACTIVE at once. */
    Concert__V1__QueueStatus *a = issue("a", "st");
    cr_expect_eq(a->state, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE, "the first user must not wait for a tick");
    cr_expect_gt(a->expires_at_unix_ms, wall_ms());
    cr_expect_gt(a->admission_receipt.len, 64, "an ACTIVE answer carries its receipt");
    Concert__V1__QueueStatus *b = issue("b", "st");
    cr_expect_eq(b->state, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE);
    /* max_active 2 reached: the third waits, and is admitted once a place frees up. */
    Concert__V1__QueueStatus *c = issue("c", "st");
    cr_expect_eq(c->state, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING, "max_active is held");
    cr_expect_eq(c->position, 1);
    /* Asking again is idempotent, in every state. */
    Concert__V1__QueueStatus *a2 = issue("a", "st");
    cr_expect_str_eq(a2->token, a->token);
    cr_expect_eq(a2->state, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE);
    cr_assert_eq(th_leave(cli, a->token, NULL, NULL), GRPC_STATUS_OK);
    cr_assert(th_wait_active(cli, c->token) == 0, "the waiting user is admitted once a place frees up");
    /* Admission paused (rate 0): nobody goes straight through. */
    cr_assert_eq(th_admin_concert(cli, KEY, "st0"), GRPC_STATUS_OK);
    set_rate("st0", 0, 100);
    Concert__V1__QueueStatus *d = issue("d", "st0");
    cr_expect_eq(d->state, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING);
    cr_expect_eq(d->estimated_wait_seconds, -1);
    th_free_msg(a), th_free_msg(b), th_free_msg(c), th_free_msg(a2), th_free_msg(d);
    end_test();
}

/* The bucket is shared with the ticks: a burst on an idle concert goes straight
 * through up to half a second of the rate, then waits. */
Test(room, straight_through_keeps_the_rate, .init = start, .fini = stop) {
    cr_assert_eq(th_admin_concert(cli, KEY, "burst"), GRPC_STATUS_OK);
    set_rate("burst", 20, 100000);
    int active = 0;
    for (int i = 0; i < 40; i++) {
        char u[16];
        snprintf(u, sizeof u, "u%d", i);
        Concert__V1__QueueStatus *s = issue(u, "burst");
        active += s->state == CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE;
        th_free_msg(s);
    }
    /* 40 joins in well under a second at 20/s: the bucket's 10 plus what accrued. */
    cr_expect(active >= 10 && active <= 20, "%d of 40 went straight through at 20/s (burst 10)", active);
    end_test();
}

/* ---- queueing methods ---- */

Test(room, reject_refuses_new_tokens_and_keeps_the_old, .init = start, .fini = stop) {
    cr_assert_eq(th_admin_concert(cli, KEY, "rj"), GRPC_STATUS_OK);
    set_rate("rj", 0, 100);
    Concert__V1__QueueStatus *w = issue("waiter", "rj");
    set_method("rj", CONCERT__V1__QUEUEING_METHOD__QUEUEING_METHOD_REJECT);
    cc_status st;
    grpc_status_code c = th_issue(cli, "newcomer", "rj", NULL, &st);
    cr_expect_eq(c, GRPC_STATUS_UNAVAILABLE, "REJECT: %s %s", cc_status_name(c), st.message);
    cr_expect(strstr(st.message, "REJECT") && strstr(st.message, "concert_id"), "a clear message: %s", st.message);
    cr_expect_eq(th_state(cli, w->token), CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING, "the waiting keep their place");
    /* Admission of the waiting goes on (the queue drains in join order). */
    set_rate("rj", 50, 100);
    cr_assert(th_wait_active(cli, w->token) == 0);
    set_method("rj", CONCERT__V1__QUEUEING_METHOD__QUEUEING_METHOD_FIFO);
    Concert__V1__QueueStatus *n = issue("newcomer", "rj");
    cr_expect_neq(n->state, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_UNSPECIFIED, "joining works again");
    th_free_msg(w), th_free_msg(n);
    end_test();
}

Test(room, passthrough_admits_everyone_at_once, .init = start, .fini = stop) {
    cr_assert_eq(th_admin_concert(cli, KEY, "pt"), GRPC_STATUS_OK);
    set_rate("pt", 0, 0); /* paused and no room: only PASSTHROUGH lets anyone in */
    char toks[30][128];
    for (int i = 0; i < 30; i++) {
        char u[16];
        snprintf(u, sizeof u, "p%d", i);
        Concert__V1__QueueStatus *s = issue(u, "pt");
        cr_expect_eq(s->state, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING);
        snprintf(toks[i], sizeof toks[i], "%s", s->token);
        th_free_msg(s);
    }
    set_method("pt", CONCERT__V1__QUEUEING_METHOD__QUEUEING_METHOD_PASSTHROUGH);
    /* The waiting are admitted by the next ticks, the limits ignored. */
    for (int i = 0; i < 30; i++) cr_assert(th_wait_active(cli, toks[i]) == 0, "waiting user %d admitted", i);
    Concert__V1__QueueStatus *n = issue("late", "pt");
    cr_expect_eq(n->state, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE, "a new user is ACTIVE at once");
    cr_expect_gt(n->admission_receipt.len, 64);
    Concert__V1__Stats *s = stats("pt");
    cr_expect_eq(s->active, 31, "analytics still counted: %lld active", (long long)s->active);
    cr_expect_eq(s->waiting, 0);
    th_free_msg(s);
    /* Back to FIFO: the active keep their admission, new joiners wait (no room). */
    set_method("pt", CONCERT__V1__QUEUEING_METHOD__QUEUEING_METHOD_FIFO);
    Concert__V1__QueueStatus *w = issue("later", "pt");
    cr_expect_eq(w->state, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING);
    cr_expect_eq(th_state(cli, toks[0]), CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE);
    th_free_msg(n), th_free_msg(w);
    end_test();
}

/* RANDOM admits uniformly among everyone waiting; FIFO again admits in join order. */
Test(room, random_picks_among_everyone_then_fifo_again, .init = start, .fini = stop, .timeout = 60) {
    enum { N = 200 };
    cr_assert_eq(th_admin_concert(cli, KEY, "rnd"), GRPC_STATUS_OK);
    set_rate("rnd", 0, 100000);
    static char toks[N][128];
    for (int i = 0; i < N; i++) {
        char u[16];
        snprintf(u, sizeof u, "r%03d", i);
        Concert__V1__QueueStatus *s = issue(u, "rnd");
        snprintf(toks[i], sizeof toks[i], "%s", s->token);
        th_free_msg(s);
    }
    set_method("rnd", CONCERT__V1__QUEUEING_METHOD__QUEUEING_METHOD_RANDOM);
    /* Estimated waits under RANDOM: everyone waiting over the rate. */
    set_rate("rnd", 20, 100000);
    uint64_t t0 = th_now_ms();
    int admitted = 0;
    while (admitted < 40 && th_now_ms() - t0 < 10000) {
        admitted = 0;
        for (int i = 0; i < N; i++) admitted += th_state(cli, toks[i]) == CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE;
        if (admitted < 40) th_pause_ms(100);
    }
    set_rate("rnd", 0, 100000);
    cr_assert_geq(admitted, 40, "RANDOM admits at the rate (%d in 10 s at 20/s)", admitted);
    int late = 0, early = 0;
    for (int i = 0; i < N; i++) {
        if (th_state(cli, toks[i]) != CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE) continue;
        if (i >= N / 2) late++;
        else early++;
    }
    /* FIFO would have admitted the first `admitted`, all from the first half. Uniform
     * picks put about half in the second half; 1 in 10^6 chance of fewer than 5. */
    cr_expect_geq(late, 5, "RANDOM admitted %d from the second half, %d from the first", late, early);
    Concert__V1__QueueStatus *s = NULL;
    Concert__V1__Stats *st = stats("rnd");
    int64_t waiting = st->waiting;
    th_free_msg(st);
    int last = N - 1;
    while (th_state(cli, toks[last]) == CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE) last--;
    /* A rate of 1/s (the bucket holds one: at most a couple admitted while we look);
     * estimates follow a policy change within an admission tick. */
    set_rate("rnd", 1, 100000);
    uint64_t t1 = th_now_ms();
    do {
        th_free_msg(s);
        s = NULL;
        cr_assert_eq(th_status(cli, toks[last], &s, NULL), GRPC_STATUS_OK);
    } while (s->estimated_wait_seconds < waiting - 5 && th_now_ms() - t1 < 2000 && (th_pause_ms(20), 1));
    cr_expect_eq(s->state, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING);
    cr_expect_geq(s->estimated_wait_seconds, waiting - 5,
                  "RANDOM: the wait of the last in line is everyone waiting over the rate (%lld s, %lld waiting)",
                  (long long)s->estimated_wait_seconds, (long long)waiting);
    cr_expect_gt(s->estimated_wait_seconds, s->position / 2 + 5, "not its position over the rate");
    th_free_msg(s);
    /* FIFO again: the next admitted is the first still waiting. */
    set_rate("rnd", 0, 100000);
    set_method("rnd", CONCERT__V1__QUEUEING_METHOD__QUEUEING_METHOD_FIFO);
    int first = 0;
    while (th_state(cli, toks[first]) == CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE) first++;
    int before = 0;
    for (int i = 0; i < N; i++) before += th_state(cli, toks[i]) == CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE;
    set_rate("rnd", 1, 100000);
    cr_assert(th_wait_active(cli, toks[first]) == 0, "FIFO admits the first in line (user %d)", first);
    set_rate("rnd", 0, 100000);
    int after = 0;
    for (int i = 0; i < N; i++) after += th_state(cli, toks[i]) == CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE;
    cr_expect_leq(after - before, 2, "one admission a second: %d more active", after - before);
    end_test();
}

/* ---- scheduled sale ---- */

static grpc_status_code get_proof(const char *concert, Concert__V1__SaleProof **out, cc_status *st) {
    Concert__V1__GetSaleProofRequest req = CONCERT__V1__GET_SALE_PROOF_REQUEST__INIT;
    req.concert_id = (char *)concert;
    cc_status local;
    return cc_client_unary(cli, QS "GetSaleProof", &req.base, &concert__v1__sale_proof__descriptor,
                           (ProtobufCMessage **)out, NULL, 0, 5000, st ? st : &local);
}

static int sale_open(void *arg) {
    Concert__V1__SaleProof *p = NULL;
    int open = get_proof(arg, &p, NULL) == GRPC_STATUS_OK && p->seed.len == 32;
    th_free_msg(p);
    return open;
}

/* The pre-queue is open once GetSaleProof shows a commitment (asking draws it). */
static int prequeue_open(void *arg) {
    Concert__V1__SaleProof *p = NULL;
    int open = get_proof(arg, &p, NULL) == GRPC_STATUS_OK && p->commitment.len == 32;
    th_free_msg(p);
    return open;
}

static int joins(void *arg) { return th_issue(cli, "probe-user", arg, NULL, NULL) == GRPC_STATUS_OK; }

typedef struct {
    unsigned char hmac[32];
    int i;
} drawn;

static int cmp_drawn(const void *a, const void *b) { return memcmp(a, b, 32); }

Test(room, scheduled_sale_with_a_verifiable_shuffle, .init = start, .fini = stop, .timeout = 60) {
    enum { N = 40 };
    cr_assert_eq(th_admin_concert(cli, KEY, "sale"), GRPC_STATUS_OK);
    set_rate("sale", 0, 100000); /* admission paused: the places stay put while we look */
    int64_t now = wall_ms();
    Concert__V1__QueuePolicy p = CONCERT__V1__QUEUE_POLICY__INIT;
    p.concert_id = "sale";
    p.prequeue_opens_at_unix_ms = now + 1500;
    p.sale_opens_at_unix_ms = now + 5000;
    const char *f[] = {"prequeue_opens_at_unix_ms", "sale_opens_at_unix_ms", NULL};
    cc_status st;
    cr_assert_eq(set_policy(&p, f, &st), GRPC_STATUS_OK, "%s", st.message);
    /* Before the pre-queue opens: refused, naming the time; no commitment yet. */
    grpc_status_code c = th_issue(cli, "early", "sale", NULL, &st);
    cr_expect_eq(c, GRPC_STATUS_FAILED_PRECONDITION, "%s %s", cc_status_name(c), st.message);
    cr_expect(strstr(st.message, "pre-queue") && strstr(st.message, "opens at"), "names the time: %s", st.message);
    Concert__V1__SaleProof *pr = NULL;
    cr_assert_eq(get_proof("sale", &pr, &st), GRPC_STATUS_OK, "%s", st.message);
    cr_expect_eq(pr->commitment.len, 0, "no commitment before the pre-queue opens");
    cr_expect_eq(pr->opens_at_unix_ms, p.sale_opens_at_unix_ms);
    th_free_msg(pr);
    /* The pre-queue: WAITING, position 0, no estimate. */
    cr_assert(th_wait_for(prequeue_open, "sale", 50, 5000), "the pre-queue opened");
    static char toks[N + 1][128];
    for (int i = 0; i < N; i++) {
        char u[16];
        snprintf(u, sizeof u, "fan%02d", i);
        Concert__V1__QueueStatus *s = issue(u, "sale");
        cr_expect_eq(s->state, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING);
        cr_expect_eq(s->position, 0, "no place before the draw");
        cr_expect_eq(s->estimated_wait_seconds, -1);
        snprintf(toks[i], sizeof toks[i], "%s", s->token);
        th_free_msg(s);
    }
    Concert__V1__QueueStatus *ps = NULL;
    cr_assert_eq(th_status(cli, toks[3], &ps, NULL), GRPC_STATUS_OK);
    cr_expect_eq(ps->position, 0);
    th_free_msg(ps);
    /* The commitment is published and the seed is not. */
    cr_assert_eq(get_proof("sale", &pr, &st), GRPC_STATUS_OK);
    cr_expect_eq(pr->commitment.len, 32, "commitment published when the pre-queue opened");
    cr_expect_eq(pr->seed.len, 0, "the seed stays secret until the sale opens");
    unsigned char commitment[32];
    memcpy(commitment, pr->commitment.data, 32);
    th_free_msg(pr);
    /* Moving the pre-queue now is refused; one user leaves before the opening. */
    p.prequeue_opens_at_unix_ms = now + 2500;
    const char *f2[] = {"prequeue_opens_at_unix_ms", NULL};
    expect_field_error(set_policy(&p, f2, &st), &st, GRPC_STATUS_FAILED_PRECONDITION, "prequeue_opens_at_unix_ms");
    cr_assert_eq(th_leave(cli, toks[7], NULL, NULL), GRPC_STATUS_OK);
    cc_md md[] = {{"x-admin-key", KEY}};
    Concert__V1__ExportSaleOrderRequest er = CONCERT__V1__EXPORT_SALE_ORDER_REQUEST__INIT;
    er.concert_id = "sale";
    cc_stream *es = cc_client_stream(cli, AS "ExportSaleOrder", &er.base, md, 1, 5000);
    Concert__V1__SaleOrder *o = NULL;
    cr_expect_neq(cc_stream_next(es, &concert__v1__sale_order__descriptor, (ProtobufCMessage **)&o), 1);
    cc_stream_close(es, &st);
    cr_expect_eq(st.code, GRPC_STATUS_FAILED_PRECONDITION, "no export before the opening: %s", st.message);

    /* The opening: the seed is revealed and matches the commitment. */
    cr_assert(th_wait_for(sale_open, "sale", 50, 8000), "the sale opened");
    Concert__V1__QueueStatus *late = issue("late", "sale");
    cr_assert_eq(get_proof("sale", &pr, &st), GRPC_STATUS_OK);
    unsigned char h[32];
    SHA256(pr->seed.data, 32, h);
    cr_expect(!memcmp(h, commitment, 32), "SHA-256(seed) is the commitment published before");
    cr_expect_eq(pr->prequeued, N - 1, "pre-queued at the opening: %lld (one left)", (long long)pr->prequeued);
    unsigned char seed[32];
    memcpy(seed, pr->seed.data, 32);
    th_free_msg(pr);
    /* Recompute the order: HMAC-SHA256(seed, SHA-256(token id)), smallest first. */
    drawn d[N];
    int nd = 0;
    for (int i = 0; i < N; i++) {
        if (i == 7) continue;
        unsigned char id[16], sha[32];
        token_id(toks[i], id);
        SHA256(id, 16, sha);
        unsigned int hl = 32;
        HMAC(EVP_sha256(), seed, 32, sha, 32, d[nd].hmac, &hl);
        d[nd++].i = i;
    }
    qsort(d, (size_t)nd, sizeof *d, cmp_drawn);
    for (int k = 0; k < nd; k++) {
        Concert__V1__QueueStatus *s = NULL;
        cr_assert_eq(th_status(cli, toks[d[k].i], &s, NULL), GRPC_STATUS_OK);
        cr_expect_eq(s->state, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING);
        cr_expect_eq(s->position, k + 1, "pre-queued user %d: position %lld, drawn place %d", d[k].i,
                     (long long)s->position, k + 1);
        th_free_msg(s);
    }
    Concert__V1__QueueStatus *ls = NULL;
    cr_assert_eq(th_status(cli, late->token, &ls, NULL), GRPC_STATUS_OK);
    cr_expect_eq(ls->position, N, "the late user queues behind every pre-queued one");
    th_free_msg(ls);
    /* The export lists the same order; the late user queued behind everyone. */
    es = cc_client_stream(cli, AS "ExportSaleOrder", &er.base, md, 1, 5000);
    int got = 0;
    while (cc_stream_next(es, &concert__v1__sale_order__descriptor, (ProtobufCMessage **)&o) == 1) {
        cr_expect_eq(o->first_place, got + 1);
        cr_expect_eq(o->prequeued, N - 1);
        cr_expect(o->seed.len == 32 && !memcmp(o->seed.data, seed, 32));
        for (size_t i = 0; i < o->n_token_id_sha256; i++, got++) {
            unsigned char id[16], sha[32];
            token_id(toks[d[got].i], id);
            SHA256(id, 16, sha);
            cr_expect(o->token_id_sha256[i].len == 32 && !memcmp(o->token_id_sha256[i].data, sha, 32),
                      "place %d of the export is the recomputed one", got + 1);
        }
        th_free_msg(o);
    }
    cc_stream_close(es, &st);
    cr_expect_eq(st.code, GRPC_STATUS_OK, "%s", st.message);
    cr_expect_eq(got, N - 1, "the export lists every pre-queued user");
    /* Admission follows the draw: with room for 5, the first 5 drawn are admitted. */
    set_rate("sale", 100, 5);
    for (int k = 0; k < 5; k++) cr_assert(th_wait_active(cli, toks[d[k].i]) == 0, "drawn place %d admitted", k + 1);
    for (int k = 5; k < nd; k++)
        cr_expect_eq(th_state(cli, toks[d[k].i]), CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING,
                     "drawn place %d still waits", k + 1);
    cr_expect_eq(th_state(cli, late->token), CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING);
    /* An opened sale stays as it was. */
    p.sale_opens_at_unix_ms = wall_ms() + 60000;
    const char *f3[] = {"sale_opens_at_unix_ms", NULL};
    expect_field_error(set_policy(&p, f3, &st), &st, GRPC_STATUS_FAILED_PRECONDITION, "sale_opens_at_unix_ms");
    th_free_msg(late);
    end_test();
}

Test(room, sale_without_prequeue_refuses_until_it_opens, .init = start, .fini = stop) {
    cr_assert_eq(th_admin_concert(cli, KEY, "nopre"), GRPC_STATUS_OK);
    Concert__V1__QueuePolicy p = CONCERT__V1__QUEUE_POLICY__INIT;
    p.concert_id = "nopre";
    p.sale_opens_at_unix_ms = wall_ms() + 1500;
    const char *f[] = {"sale_opens_at_unix_ms", NULL};
    cc_status st;
    cr_assert_eq(set_policy(&p, f, &st), GRPC_STATUS_OK, "%s", st.message);
    grpc_status_code c = th_issue(cli, "u", "nopre", NULL, &st);
    cr_expect_eq(c, GRPC_STATUS_FAILED_PRECONDITION);
    cr_expect(strstr(st.message, "sale of 'nopre' opens at"), "%s", st.message);
    cr_assert(th_wait_for(joins, "nopre", 50, 5000), "joining opens with the sale");
    Concert__V1__SaleProof *pr = NULL;
    cr_assert_eq(get_proof("nopre", &pr, &st), GRPC_STATUS_OK);
    cr_expect_eq(pr->prequeued, 0);
    th_free_msg(pr);
    cr_expect_eq(get_proof("c-none", NULL, &st), GRPC_STATUS_NOT_FOUND, "%s", st.message);
    cr_assert_eq(th_admin_concert(cli, KEY, "plain"), GRPC_STATUS_OK);
    expect_field_error(get_proof("plain", NULL, &st), &st, GRPC_STATUS_FAILED_PRECONDITION, "concert_id");
    end_test();
}

/* ---- receipts ---- */

static Concert__V1__SigningKeys *signing_keys(cc_client *c) {
    Concert__V1__GetSigningKeysRequest req = CONCERT__V1__GET_SIGNING_KEYS_REQUEST__INIT;
    Concert__V1__SigningKeys *k = NULL;
    cc_status st;
    cr_assert_eq(cc_client_unary(c, QS "GetSigningKeys", &req.base, &concert__v1__signing_keys__descriptor,
                                 (ProtobufCMessage **)&k, NULL, 0, 5000, &st),
                 GRPC_STATUS_OK, "GetSigningKeys: %s", st.message);
    return k;
}

/* 0 if `receipt` verifies with a key GetSigningKeys (on c) lists under its key id. */
static int verify_with_listed(cc_client *c, const ProtobufCBinaryData *receipt) {
    Concert__V1__AdmissionReceipt *r = NULL;
    if (cc_receipt_parse(receipt->data, receipt->len, &r) < 0) return -2;
    Concert__V1__SigningKeys *k = signing_keys(c);
    int rc = -3;
    for (size_t i = 0; i < k->n_keys; i++)
        if (!strcmp(k->keys[i]->key_id, r->key_id) && k->keys[i]->public_key.len == 32)
            rc = cc_receipt_verify(receipt->data, receipt->len, k->keys[i]->public_key.data);
    th_free_msg(k);
    th_free_msg(r);
    return rc;
}

static void write_key(const char *path) {
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    FILE *f = fopen(path, "w");
    cr_assert(k && f);
    PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    EVP_PKEY_free(k);
}

Test(room, receipts_verify_offline_and_tampering_fails, .init = start, .fini = stop) {
    cr_assert_eq(th_admin_concert(cli, KEY, "rcpt"), GRPC_STATUS_OK);
    Concert__V1__QueueStatus *a = issue("alice", "rcpt");
    cr_assert_eq(a->state, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE);
    ProtobufCBinaryData *rc = &a->admission_receipt;
    cr_assert_gt(rc->len, 64);
    cr_expect_eq(verify_with_listed(cli, rc), 0, "the receipt verifies with the listed key");
    /* The statement: concert, hashes of the token id and the user, the times. */
    Concert__V1__AdmissionReceipt *r = NULL;
    cr_assert(cc_receipt_parse(rc->data, rc->len, &r) == 0);
    cr_expect_str_eq(r->concert_id, "rcpt");
    unsigned char id[16], h[32];
    token_id(a->token, id);
    SHA256(id, 16, h);
    cr_expect(r->token_id_sha256.len == 32 && !memcmp(r->token_id_sha256.data, h, 32));
    SHA256((const unsigned char *)"alice", 5, h);
    cr_expect(r->user_id_sha256.len == 32 && !memcmp(r->user_id_sha256.data, h, 32));
    cr_expect_eq(r->expires_at_unix_ms, a->expires_at_unix_ms);
    cr_expect(r->admitted_at_unix_ms > 0 && r->admitted_at_unix_ms < r->expires_at_unix_ms);
    cr_expect_eq(strlen(r->key_id), 16);
    th_free_msg(r);
    /* The byte layout documented in cc_receipt.h. */
    size_t n = rc->len - 64, cl = strlen("rcpt");
    cr_expect_eq(n, 2 + cl + 18 + 34 + 34 + 7 + 7, "statement of %zu bytes", n);
    cr_expect(rc->data[0] == 0x0a && rc->data[1] == cl && rc->data[2 + cl] == 0x12 && rc->data[3 + cl] == 16);
    /* GetQueueStatus of an ACTIVE token carries the same (deterministic) receipt. */
    Concert__V1__QueueStatus *s = NULL;
    cr_assert_eq(th_status(cli, a->token, &s, NULL), GRPC_STATUS_OK);
    cr_expect(s->admission_receipt.len == rc->len && !memcmp(s->admission_receipt.data, rc->data, rc->len));
    /* Any changed byte, statement or signature, fails. */
    for (size_t i = 0; i < rc->len; i += 7) {
        rc->data[i] ^= 0x01;
        cr_expect_neq(verify_with_listed(cli, rc), 0, "a receipt with byte %zu changed must not verify", i);
        rc->data[i] ^= 0x01;
    }
    cr_expect_eq(verify_with_listed(cli, rc), 0);
    /* WAITING answers carry none. */
    set_rate("rcpt", 0, 100);
    Concert__V1__QueueStatus *b = issue("bob", "rcpt");
    cr_expect_eq(b->state, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING);
    cr_expect_eq(b->admission_receipt.len, 0);
    th_free_msg(a), th_free_msg(s), th_free_msg(b);
    end_test();
}

typedef struct {
    cc_client *c;
    size_t n;
} keys_wait;

static int keys_listed(void *arg) {
    keys_wait *w = arg;
    Concert__V1__SigningKeys *k = signing_keys(w->c);
    size_t n = k->n_keys;
    th_free_msg(k);
    return n >= w->n;
}

Test(room, signing_keys_of_every_server_and_rotation, .fini = stop, .timeout = 60) {
    memset(&redis, 0, sizeof redis);
    th_redis_start(&redis);
    char dir[] = "/tmp/room-keys-XXXXXX";
    cr_assert(mkdtemp(dir));
    char k1[300], k2[300];
    snprintf(k1, sizeof k1, "%s/one.pem", dir);
    snprintf(k2, sizeof k2, "%s/two.pem", dir);
    write_key(k1);
    write_key(k2);
    const char *fa[] = {"--admin-key", KEY, "--signing-key", k1, NULL};
    const char *fb[] = {"--admin-key", KEY, NULL}; /* a generated key, with a warning */
    th_server_start(&server, redis.url, fa);
    th_server_start(&server2, redis.url, fb);
    cli = cc_client_open(server.addr);
    cc_client *cli2 = cc_client_open(server2.addr);
    keys_wait w1 = {cli, 2}, w2 = {cli2, 2};
    cr_assert(th_wait_for(keys_listed, &w1, 50, 5000) && th_wait_for(keys_listed, &w2, 50, 5000),
              "both servers' keys are listed by both");
    cr_expect(th_server_log_has(&server2, "event=signing_key_generated"), "a generated key is a warning");
    cr_assert_eq(th_admin_concert(cli, KEY, "keys"), GRPC_STATUS_OK);
    Concert__V1__QueueStatus *a = issue("ann", "keys"); /* signed by server 1 */
    cr_assert_eq(a->state, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE);
    cr_expect_eq(verify_with_listed(cli2, &a->admission_receipt), 0, "server 2 lists server 1's key");
    /* Rotation: server 1 restarts with another key; its old receipts still verify. */
    cc_client_close(cli);
    cli = NULL;
    cr_assert_eq(th_server_stop(&server), 0);
    const char *fa2[] = {"--admin-key", KEY, "--signing-key", k2, NULL};
    th_server_start(&server, redis.url, fa2);
    cli = cc_client_open(server.addr);
    keys_wait w3 = {cli2, 3};
    cr_assert(th_wait_for(keys_listed, &w3, 50, 5000), "the new key is listed beside the old, by every server");
    cr_expect_eq(verify_with_listed(cli, &a->admission_receipt), 0, "a receipt of the rotated key still verifies");
    Concert__V1__QueueStatus *again = NULL;
    cr_assert_eq(th_status(cli, a->token, &again, NULL), GRPC_STATUS_OK);
    cr_expect_eq(verify_with_listed(cli2, &again->admission_receipt), 0, "and so does one of the new key");
    Concert__V1__AdmissionReceipt *r1 = NULL, *r2 = NULL;
    cc_receipt_parse(a->admission_receipt.data, a->admission_receipt.len, &r1);
    cc_receipt_parse(again->admission_receipt.data, again->admission_receipt.len, &r2);
    cr_expect_str_neq(r1->key_id, r2->key_id, "the rotated server signs with its new key");
    cr_expect_eq(r1->admitted_at_unix_ms, r2->admitted_at_unix_ms, "the same admission, whoever signs it");
    th_free_msg(r1), th_free_msg(r2), th_free_msg(a), th_free_msg(again);
    cc_client_close(cli2);
    cr_expect_eq(th_server_stop(&server2), 0);
    end_test();
    th_rmrf(dir);
}

Test(room, a_bad_signing_key_is_a_start_up_error, .fini = stop) {
    memset(&redis, 0, sizeof redis);
    th_redis_start(&redis);
    char path[] = "/tmp/room-badkey-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert(write(fd, "not a key\n", 10) == 10);
    close(fd);
    const char *flags[] = {"--signing-key", path, NULL};
    th_server_spawn(&server, "127.0.0.1:0", redis.url, flags);
    int rc = th_server_wait_exit(&server, 10000);
    cr_expect_eq(rc, 2, "a bad --signing-key exits 2 (got %d)", rc);
    cr_expect(th_server_log_has(&server, "--signing-key"), "and names the flag (log %s)", server.log);
    unlink(path);
}

/* ---- bad input on every new policy field ---- */

Test(room, bad_policy_input_names_the_field_and_changes_nothing, .init = start, .fini = stop) {
    cr_assert_eq(th_admin_concert(cli, KEY, "bad"), GRPC_STATUS_OK);
    Concert__V1__QueueStatus *s = issue("someone", "bad");
    th_free_msg(s);
    th_pause_ms(300); /* the first ticks have written their bookkeeping */
    char *before = th_redis_digest(&redis);
    cc_status st;
    int64_t now = wall_ms();
    /* Each case: the field set, its value, the field the message must name. */
    const struct {
        const char *field;
        int64_t value;
        const char *names;
    } cases[] = {
        {"queueing_method", 9, "queueing_method"},
        {"queueing_method", -1, "queueing_method"},
        {"admission_mode", 7, "admission_mode"},
        {"admission_mode", CONCERT__V1__ADMISSION_MODE__ADMISSION_MODE_ADAPTIVE, "admit_rate_max"},
        {"admit_rate_min", -3, "admit_rate_min"},
        {"admit_rate_max", 2000000, "admit_rate_max"},
        {"sale_opens_at_unix_ms", -5, "sale_opens_at_unix_ms"},
        {"sale_opens_at_unix_ms", 99999999999999LL, "sale_opens_at_unix_ms"},
        {"sale_opens_at_unix_ms", now - 1000, "sale_opens_at_unix_ms"},
        {"sale_opens_at_unix_ms", now + 400LL * 86400000, "sale_opens_at_unix_ms"},
        {"prequeue_opens_at_unix_ms", now + 60000, "prequeue_opens_at_unix_ms"}, /* no sale */
        {"prequeue_opens_at_unix_ms", -1, "prequeue_opens_at_unix_ms"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        Concert__V1__QueuePolicy p = CONCERT__V1__QUEUE_POLICY__INIT;
        p.concert_id = "bad";
        const char *f = cases[i].field;
        int64_t v = cases[i].value;
        if (!strcmp(f, "queueing_method")) p.queueing_method = (Concert__V1__QueueingMethod)v;
        else if (!strcmp(f, "admission_mode")) p.admission_mode = (Concert__V1__AdmissionMode)v;
        else if (!strcmp(f, "admit_rate_min")) p.admit_rate_min = v;
        else if (!strcmp(f, "admit_rate_max")) p.admit_rate_max = v;
        else if (!strcmp(f, "sale_opens_at_unix_ms")) p.sale_opens_at_unix_ms = v;
        else p.prequeue_opens_at_unix_ms = v;
        const char *fl[] = {f, NULL};
        expect_field_error(set_policy(&p, fl, &st), &st, GRPC_STATUS_INVALID_ARGUMENT, cases[i].names);
    }
    /* Cross-field checks on a whole request. */
    Concert__V1__QueuePolicy p = CONCERT__V1__QUEUE_POLICY__INIT;
    p.concert_id = "bad";
    p.admission_mode = CONCERT__V1__ADMISSION_MODE__ADMISSION_MODE_ADAPTIVE;
    p.admit_rate_min = 50;
    p.admit_rate_max = 10;
    const char *fm[] = {"admission_mode", "admit_rate_min", "admit_rate_max", NULL};
    expect_field_error(set_policy(&p, fm, &st), &st, GRPC_STATUS_INVALID_ARGUMENT, "admit_rate_min");
    Concert__V1__QueuePolicy q = CONCERT__V1__QUEUE_POLICY__INIT;
    q.concert_id = "bad";
    q.sale_opens_at_unix_ms = now + 10000;
    q.prequeue_opens_at_unix_ms = now + 20000;
    const char *fs[] = {"sale_opens_at_unix_ms", "prequeue_opens_at_unix_ms", NULL};
    expect_field_error(set_policy(&q, fs, &st), &st, GRPC_STATUS_INVALID_ARGUMENT, "prequeue_opens_at_unix_ms");
    q.prequeue_opens_at_unix_ms = now - 20000;
    expect_field_error(set_policy(&q, fs, &st), &st, GRPC_STATUS_INVALID_ARGUMENT, "prequeue_opens_at_unix_ms");
    /* Nothing changed in Redis. */
    char *after = th_redis_digest(&redis);
    cr_expect_str_eq(after, before, "refused policy changes must write nothing");
    free(before), free(after);
    /* And a good one is read back. */
    Concert__V1__QueuePolicy g = CONCERT__V1__QUEUE_POLICY__INIT;
    g.concert_id = "bad";
    g.admission_mode = CONCERT__V1__ADMISSION_MODE__ADMISSION_MODE_ADAPTIVE;
    g.admit_rate_min = 5;
    g.admit_rate_max = 50;
    g.queueing_method = CONCERT__V1__QUEUEING_METHOD__QUEUEING_METHOD_RANDOM;
    const char *fg[] = {"admission_mode", "admitRateMin", "admit_rate_max", "queueingMethod", NULL}; /* either spelling */
    cr_assert_eq(set_policy(&g, fg, &st), GRPC_STATUS_OK, "%s", st.message);
    Concert__V1__QueuePolicy *back = get_policy("bad");
    cr_expect_eq(back->admission_mode, CONCERT__V1__ADMISSION_MODE__ADMISSION_MODE_ADAPTIVE);
    cr_expect_eq(back->admit_rate_min, 5);
    cr_expect_eq(back->admit_rate_max, 50);
    cr_expect_eq(back->queueing_method, CONCERT__V1__QUEUEING_METHOD__QUEUEING_METHOD_RANDOM);
    th_free_msg(back);
    end_test();
}

/* The new policy fields by either spelling (.proto name or proto3 JSON name); they
 * need valid companions (a sale's two times, both adaptive bounds), so test_api's
 * generic neighbour check leaves them to this test. */
Test(room, policy_fields_in_both_spellings, .init = start, .fini = stop) {
    cr_assert_eq(th_admin_concert(cli, KEY, "spell"), GRPC_STATUS_OK);
    cc_status st;
    for (int camel = 0; camel < 2; camel++) {
        int64_t now = wall_ms();
        Concert__V1__QueuePolicy p = CONCERT__V1__QUEUE_POLICY__INIT;
        p.concert_id = "spell";
        p.sale_opens_at_unix_ms = now + 3600000 + camel;
        p.prequeue_opens_at_unix_ms = now + 1800000 + camel;
        p.admit_rate_min = 3 + camel;
        p.admit_rate_max = 30 + camel;
        const char *snake[] = {"sale_opens_at_unix_ms", "prequeue_opens_at_unix_ms", "admit_rate_min",
                               "admit_rate_max", NULL};
        const char *json[] = {"saleOpensAtUnixMs", "prequeueOpensAtUnixMs", "admitRateMin", "admitRateMax", NULL};
        cr_assert_eq(set_policy(&p, camel ? json : snake, &st), GRPC_STATUS_OK, "%s", st.message);
        Concert__V1__QueuePolicy *back = get_policy("spell");
        cr_expect_eq(back->sale_opens_at_unix_ms, p.sale_opens_at_unix_ms);
        cr_expect_eq(back->prequeue_opens_at_unix_ms, p.prequeue_opens_at_unix_ms);
        cr_expect_eq(back->admit_rate_min, p.admit_rate_min);
        cr_expect_eq(back->admit_rate_max, p.admit_rate_max);
        th_free_msg(back);
    }
    end_test();
}
