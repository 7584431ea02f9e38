/* BookingService, WalletService and AdminService against real Redis and gRPC:
 * contention for one seat, all-or-nothing holds, exact hold expiry, permissions,
 * the per-user cap, idempotent charges and bad input that changes nothing. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "concert/v1/admin.pb-c.h"
#include "concert/v1/booking.pb-c.h"
#include "concert/v1/wallet.pb-c.h"
#include "th.h"

#define KEY "test-admin-key"
#define RESERVE "/concert.v1.BookingService/ReserveSeats"

static th_redis redis;
static th_server server;
static cc_client *cli;

static void start_with(const char *const *extra) {
    memset(&redis, 0, sizeof redis);
    th_redis_start(&redis);
    static const char *const base[] = {"--admin-key", KEY, "--admit-rate", "2000", "--max-active", "5000", NULL};
    th_server_start_with(&server, redis.url, base, extra);
    cli = cc_client_open(server.addr);
    cr_assert_eq(th_admin_catalogue(cli, KEY, "show", "day1", 100, 1000), GRPC_STATUS_OK);
}

static void start(void) { start_with(NULL); }

/* For tests whose subject is concurrency from one user, not the rate limits. */
static const char *const no_limits[] = {"--rate-user", "0", "--rate-peer", "0", NULL};
static void start_no_limits(void) { start_with(no_limits); }

static void stop(void) {
    th_server_close(&server, &cli);
    th_redis_stop(&redis);
}

static void end_test(void) {
    int rc = th_server_close(&server, &cli);
    cr_assert_eq(rc, 0, "concert-server exit status (log %s)", server.log);
}

static grpc_status_code reserve(const char *token, const int *seats, size_t n, Concert__V1__Reservation **out,
                                cc_status *st) {
    char auth[200];
    snprintf(auth, sizeof auth, "Bearer %s", token ? token : "");
    cc_md md[] = {{"authorization", auth}};
    Concert__V1__ReserveSeatsRequest req = CONCERT__V1__RESERVE_SEATS_REQUEST__INIT;
    req.schedule_id = "day1";
    req.n_seat_numbers = n;
    req.seat_numbers = (int32_t *)seats;
    return cc_client_unary(cli, RESERVE, &req.base, &concert__v1__reservation__descriptor, (ProtobufCMessage **)out,
                           token ? md : NULL, token ? 1 : 0, 5000, st);
}

static grpc_status_code resv_call(const char *method, const char *token, const char *rid,
                                  Concert__V1__Reservation **out, cc_status *st) {
    char auth[200];
    snprintf(auth, sizeof auth, "Bearer %s", token);
    cc_md md[] = {{"authorization", auth}};
    Concert__V1__GetReservationRequest req = CONCERT__V1__GET_RESERVATION_REQUEST__INIT;
    req.reservation_id = (char *)rid;
    return cc_client_unary(cli, method, &req.base, &concert__v1__reservation__descriptor, (ProtobufCMessage **)out, md,
                           1, 5000, st);
}

/* Issues `n` tokens at once and waits until every one is ACTIVE. */
static char (*active_tokens(int n, const char *prefix))[64] {
    char(*toks)[64] = calloc((size_t)n, sizeof *toks);
    cc_batch *b = cc_batch_new(cli);
    char(*users)[32] = calloc((size_t)n, sizeof *users);
    for (int i = 0; i < n; i++) {
        snprintf(users[i], sizeof users[i], "%s-%d", prefix, i);
        Concert__V1__IssueTokenRequest req = CONCERT__V1__ISSUE_TOKEN_REQUEST__INIT;
        req.user_id = users[i];
        req.concert_id = "show";
        cc_batch_add(b, "/concert.v1.QueueService/IssueToken", &req.base, NULL, 0, 10000);
    }
    cc_batch_wait(b);
    for (int i = 0; i < n; i++) {
        Concert__V1__QueueStatus *s = NULL;
        cr_assert_eq(cc_batch_result(b, i, &concert__v1__queue_status__descriptor, (ProtobufCMessage **)&s, NULL),
                     GRPC_STATUS_OK);
        snprintf(toks[i], sizeof toks[i], "%s", s->token);
        th_free_msg(s);
    }
    cc_batch_free(b);
    free(users);
    for (int i = 0; i < n; i++) cr_assert_eq(th_wait_active(cli, toks[i]), 0, "token %d never became ACTIVE", i);
    return toks;
}

/* ---- contention ---- */

Test(booking, two_hundred_clients_one_seat, .init = start, .fini = stop, .timeout = 60) {
    enum { N = 200 };
    char(*toks)[64] = active_tokens(N, "fan");
    static char auth[N][100];
    cc_batch *b = cc_batch_new(cli);
    int seat = 42;
    for (int i = 0; i < N; i++) {
        snprintf(auth[i], sizeof auth[i], "Bearer %s", toks[i]);
        cc_md md[] = {{"authorization", auth[i]}};
        Concert__V1__ReserveSeatsRequest req = CONCERT__V1__RESERVE_SEATS_REQUEST__INIT;
        req.schedule_id = "day1";
        req.n_seat_numbers = 1;
        req.seat_numbers = &seat;
        cc_batch_add(b, RESERVE, &req.base, md, 1, 10000);
    }
    cc_batch_wait(b);
    int won = 0, lost = 0;
    for (int i = 0; i < N; i++) {
        cc_status st;
        grpc_status_code code = cc_batch_result(b, i, NULL, NULL, &st);
        if (code == GRPC_STATUS_OK) won++;
        else if (code == GRPC_STATUS_FAILED_PRECONDITION || code == GRPC_STATUS_ALREADY_EXISTS) lost++;
        else cr_assert_fail("call %d: %s %s", i, cc_status_name(code), st.message);
    }
    cc_batch_free(b);
    cr_expect_eq(won, 1, "exactly one client wins the seat (%d did)", won);
    cr_expect_eq(lost, N - 1);
    free(toks);
    end_test();
}

Test(booking, overlapping_requests_never_leave_partial_holds, .init = start, .fini = stop, .timeout = 60) {
    enum { N = 120 };
    char(*toks)[64] = active_tokens(N, "pair");
    static char auth[N][100];
    static int seats[N][3];
    cc_batch *b = cc_batch_new(cli);
    srand(7);
    for (int i = 0; i < N; i++) {
        int first = 1 + rand() % 20;
        seats[i][0] = first, seats[i][1] = first + 1, seats[i][2] = first + 2;
        snprintf(auth[i], sizeof auth[i], "Bearer %s", toks[i]);
        cc_md md[] = {{"authorization", auth[i]}};
        Concert__V1__ReserveSeatsRequest req = CONCERT__V1__RESERVE_SEATS_REQUEST__INIT;
        req.schedule_id = "day1";
        req.n_seat_numbers = 3;
        req.seat_numbers = seats[i];
        cc_batch_add(b, RESERVE, &req.base, md, 1, 10000);
    }
    cc_batch_wait(b);
    int held_by_winners = 0;
    char winners[N][64];
    int nw = 0;
    for (int i = 0; i < N; i++) {
        Concert__V1__Reservation *r = NULL;
        cc_status st;
        grpc_status_code code = cc_batch_result(b, i, &concert__v1__reservation__descriptor, (ProtobufCMessage **)&r, &st);
        if (code == GRPC_STATUS_OK) {
            cr_expect_eq(r->n_seat_numbers, 3, "a hold is all or nothing");
            held_by_winners += (int)r->n_seat_numbers;
            snprintf(winners[nw++], 64, "%s", r->reservation_id);
            th_free_msg(r);
        } else {
            cr_assert_eq(code, GRPC_STATUS_FAILED_PRECONDITION, "%s %s", cc_status_name(code), st.message);
        }
    }
    cc_batch_free(b);
    cr_assert_gt(nw, 0);
    /* Every held seat in Redis belongs to a winner, and winners hold exactly theirs. */
    redisContext *rc = th_redis_connect(&redis);
    redisReply *all = redisCommand(rc, "HGETALL cc:{show}:s:day1:seat");
    int held_in_redis = 0;
    for (size_t i = 0; i + 1 < all->elements; i += 2) {
        const char *v = all->element[i + 1]->str;
        int found = 0;
        for (int w = 0; w < nw && !found; w++) found = !strncmp(v + 2, winners[w], strlen(winners[w]));
        cr_expect(found, "seat %s is held by %s, which no caller was told about", all->element[i]->str, v);
        held_in_redis++;
    }
    freeReplyObject(all);
    redisFree(rc);
    cr_expect_eq(held_in_redis, held_by_winners, "held seats in Redis %d, granted %d", held_in_redis, held_by_winners);
    free(toks);
    end_test();
}

/* ---- expiry ---- */

static const char *const short_hold[] = {"--hold-ttl-ms", "1000", "--sweep-interval-ms", "100", NULL};
static void start_short_hold(void) { start_with(short_hold); }

static int log_mentions(void *needle) {
    FILE *f = fopen(server.log, "r");
    if (!f) return 0;
    char line[2048];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

Test(booking, hold_lapses_exactly_and_is_reported, .init = start_short_hold, .fini = stop, .timeout = 60) {
    char(*toks)[64] = active_tokens(2, "exp");
    int seat = 5, other = 9;
    Concert__V1__Reservation *a = NULL, *b = NULL, *a2 = NULL, *lonely = NULL;
    cr_assert_eq(reserve(toks[0], &seat, 1, &a, NULL), GRPC_STATUS_OK);
    cr_assert_eq(reserve(toks[0], &other, 1, &lonely, NULL), GRPC_STATUS_OK);
    cc_status st;
    cr_expect_eq(reserve(toks[1], &seat, 1, NULL, &st), GRPC_STATUS_FAILED_PRECONDITION, "held: %s", st.message);
    /* Ask again the moment the deadline passes (by Redis' clock, which is this machine's). */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    cr_assert_gt(a->expires_at_unix_ms, now);
    th_pause_ms((int)(a->expires_at_unix_ms - now) + 5);
    cr_expect_eq(reserve(toks[1], &seat, 1, &b, &st), GRPC_STATUS_OK,
                 "a lapsed hold must free the seat at once: %s %s", cc_status_name(st.code), st.message);
    cr_assert_eq(resv_call("/concert.v1.BookingService/GetReservation", toks[0], a->reservation_id, &a2, NULL),
                 GRPC_STATUS_OK);
    cr_expect_eq(a2->status, CONCERT__V1__RESERVATION_STATUS__RESERVATION_STATUS_EXPIRED);
    /* The untouched one is swept and reported within a second of its deadline. */
    char needle[128];
    snprintf(needle, sizeof needle, "event=reservation_expired concert=show reservation=%s", lonely->reservation_id);
    clock_gettime(CLOCK_REALTIME, &ts);
    now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    int64_t budget = lonely->expires_at_unix_ms + 1000 - now;
    cr_expect(th_wait_for(log_mentions, needle, 10, budget > 0 ? (int)budget : 0), "not reported within 1 s");
    th_free_msg(a), th_free_msg(b), th_free_msg(a2), th_free_msg(lonely);
    free(toks);
    end_test();
}

/* ---- the seat map ---- */

static Concert__V1__ListSeatsResponse *list_seats(const char *token) {
    char auth[200];
    snprintf(auth, sizeof auth, "Bearer %s", token);
    cc_md md[] = {{"authorization", auth}};
    Concert__V1__ListSeatsRequest req = CONCERT__V1__LIST_SEATS_REQUEST__INIT;
    req.schedule_id = "day1";
    Concert__V1__ListSeatsResponse *r = NULL;
    cc_status st;
    cr_assert_eq(cc_client_unary(cli, "/concert.v1.BookingService/ListSeats", &req.base,
                                 &concert__v1__list_seats_response__descriptor, (ProtobufCMessage **)&r, md, 1, 5000, &st),
                 GRPC_STATUS_OK, "%s", st.message);
    return r;
}

static int seat_state(const Concert__V1__ListSeatsResponse *r, int number) {
    for (size_t i = 0; i < r->n_seats; i++)
        if (r->seats[i]->number == number) return r->seats[i]->state;
    return -1;
}

typedef struct {
    const char *token;
    int seat, want;
} seat_wait;

static int seat_is(void *arg) {
    seat_wait *w = arg;
    Concert__V1__ListSeatsResponse *r = list_seats(w->token);
    int st = seat_state(r, w->seat);
    th_free_msg(r);
    return st == w->want;
}

static const char *const seat_cache[] = {"--seat-cache-ms", "200", NULL};
static void start_seat_cache(void) { start_with(seat_cache); }

Test(booking, seat_map_from_the_cache, .init = start_seat_cache, .fini = stop, .timeout = 60) {
    char(*toks)[64] = active_tokens(1, "map");
    Concert__V1__ListSeatsResponse *r = list_seats(toks[0]);
    cr_assert_eq(r->n_seats, 100);
    cr_expect_str_eq(r->schedule_id, "day1");
    for (size_t i = 0; i < r->n_seats; i++) {
        cr_expect_eq(r->seats[i]->number, (int)i + 1, "sorted by number");
        cr_expect_eq(r->seats[i]->price, 1000);
        cr_expect_eq(r->seats[i]->state, CONCERT__V1__SEAT_STATE__SEAT_STATE_AVAILABLE);
    }
    th_free_msg(r);
    /* This server's hold shows at once (the cache is patched, not reloaded). */
    int seats[] = {5, 6};
    Concert__V1__Reservation *res = NULL;
    cr_assert_eq(reserve(toks[0], seats, 2, &res, NULL), GRPC_STATUS_OK);
    r = list_seats(toks[0]);
    cr_expect_eq(seat_state(r, 5), CONCERT__V1__SEAT_STATE__SEAT_STATE_HELD);
    cr_expect_eq(seat_state(r, 6), CONCERT__V1__SEAT_STATE__SEAT_STATE_HELD);
    cr_expect_eq(seat_state(r, 7), CONCERT__V1__SEAT_STATE__SEAT_STATE_AVAILABLE);
    th_free_msg(r);
    /* A cancellation, and a sale behind this server's back, show within --seat-cache-ms. */
    cr_assert_eq(resv_call("/concert.v1.BookingService/CancelReservation", toks[0], res->reservation_id, NULL, NULL),
                 GRPC_STATUS_OK);
    seat_wait w = {toks[0], 5, CONCERT__V1__SEAT_STATE__SEAT_STATE_AVAILABLE};
    cr_expect(th_wait_for(seat_is, &w, 50, 3000), "a cancelled seat shows AVAILABLE after the cache refresh");
    redisContext *rc = th_redis_connect(&redis);
    freeReplyObject(redisCommand(rc, "HSET cc:{show}:s:day1:seat 9 S|r1.show.00000000000000000000000000000009"));
    redisFree(rc);
    w.seat = 9, w.want = CONCERT__V1__SEAT_STATE__SEAT_STATE_SOLD;
    cr_expect(th_wait_for(seat_is, &w, 50, 3000), "a seat sold elsewhere shows SOLD after the cache refresh");
    th_free_msg(res);
    free(toks);
    end_test();
}

/* ---- permissions and the cap ---- */

Test(booking, permissions_and_cap, .init = start, .fini = stop, .timeout = 60) {
    char(*toks)[64] = active_tokens(3, "perm");
    int s1[] = {1, 2, 3}, s2[] = {4, 5}, s3[] = {6};
    Concert__V1__Reservation *r = NULL, *r2 = NULL;
    cc_status st;
    cr_assert_eq(reserve(toks[0], s1, 3, &r, &st), GRPC_STATUS_OK, "%s", st.message);
    cr_expect_eq(r->total_price, 3000);
    /* Another user may neither read nor cancel it. */
    cr_expect_eq(resv_call("/concert.v1.BookingService/GetReservation", toks[1], r->reservation_id, NULL, &st),
                 GRPC_STATUS_PERMISSION_DENIED);
    cr_expect(strstr(st.message, "reservation_id"), "%s", st.message);
    cr_expect_eq(resv_call("/concert.v1.BookingService/CancelReservation", toks[1], r->reservation_id, NULL, &st),
                 GRPC_STATUS_PERMISSION_DENIED);
    /* No token, a forged one. */
    cr_expect_eq(reserve(NULL, s3, 1, NULL, &st), GRPC_STATUS_UNAUTHENTICATED);
    cr_expect(strstr(st.message, "authorization"), "%s", st.message);
    cr_expect_eq(reserve("v1.show.0123456789abcdef0123456789abcdef", s3, 1, NULL, &st), GRPC_STATUS_UNAUTHENTICATED);
    /* The cap: 3 held + 2 more > 4. */
    cr_expect_eq(reserve(toks[0], s2, 2, NULL, &st), GRPC_STATUS_RESOURCE_EXHAUSTED, "%s", st.message);
    cr_expect(strstr(st.message, "seat_numbers"), "%s", st.message);
    cr_assert_eq(resv_call("/concert.v1.BookingService/CancelReservation", toks[0], r->reservation_id, &r2, NULL),
                 GRPC_STATUS_OK);
    cr_expect_eq(r2->status, CONCERT__V1__RESERVATION_STATUS__RESERVATION_STATUS_CANCELLED);
    cr_expect_eq(reserve(toks[1], s1, 3, NULL, &st), GRPC_STATUS_OK, "cancelled seats are free at once: %s", st.message);
    cr_expect_eq(reserve(toks[0], s2, 2, NULL, &st), GRPC_STATUS_OK, "the cap counts only live holds: %s", st.message);
    /* A token that left the queue is no longer ACTIVE. */
    cr_assert_eq(th_leave(cli, toks[2], NULL, NULL), GRPC_STATUS_OK);
    cr_expect_eq(reserve(toks[2], s3, 1, NULL, &st), GRPC_STATUS_PERMISSION_DENIED, "%s", st.message);
    th_free_msg(r), th_free_msg(r2);
    free(toks);
    end_test();
}

Test(booking, waiting_token_is_refused, .init = start, .fini = stop, .timeout = 60) {
    cc_md md[] = {{"x-admin-key", KEY}};
    Concert__V1__QueuePolicy pol = CONCERT__V1__QUEUE_POLICY__INIT;
    pol.concert_id = "show";
    pol.admit_rate = 0;
    char *fields[] = {"admit_rate"};
    Concert__V1__SetQueuePolicyRequest req = CONCERT__V1__SET_QUEUE_POLICY_REQUEST__INIT;
    req.policy = &pol;
    req.n_update_fields = 1;
    req.update_fields = fields;
    Concert__V1__QueuePolicy *got = NULL;
    cr_assert_eq(cc_client_unary(cli, "/concert.v1.AdminService/SetQueuePolicy", &req.base,
                                 &concert__v1__queue_policy__descriptor, (ProtobufCMessage **)&got, md, 1, 5000, NULL),
                 GRPC_STATUS_OK);
    cr_expect_eq(got->admit_rate, 0);
    cr_expect_eq(got->max_seats_per_user, 4, "other fields keep their defaults");
    Concert__V1__QueueStatus *s = NULL;
    cr_assert_eq(th_issue(cli, "patient", "show", &s, NULL), GRPC_STATUS_OK);
    cr_expect_eq(s->state, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING);
    int seat = 1;
    cc_status st;
    cr_expect_eq(reserve(s->token, &seat, 1, NULL, &st), GRPC_STATUS_PERMISSION_DENIED, "%s", st.message);
    cr_expect(strstr(st.message, "WAITING"), "%s", st.message);
    th_free_msg(s), th_free_msg(got);
    end_test();
}

/* ---- wallet ---- */

Test(wallet, thousand_charges_over_hundred_keys, .init = start_no_limits, .fini = stop, .timeout = 60) {
    enum { KEYS = 100, REPEAT = 10 };
    static char keys[KEYS][16];
    cc_batch *b = cc_batch_new(cli);
    for (int r = 0; r < REPEAT; r++)
        for (int k = 0; k < KEYS; k++) {
            snprintf(keys[k], sizeof keys[k], "key-%d", k);
            Concert__V1__ChargeRequest req = CONCERT__V1__CHARGE_REQUEST__INIT;
            req.user_id = "wallet-user";
            req.amount = k + 1;
            req.idempotency_key = keys[k];
            cc_batch_add(b, "/concert.v1.WalletService/Charge", &req.base, NULL, 0, 10000);
        }
    cc_batch_wait(b);
    int replayed = 0;
    for (int i = 0; i < KEYS * REPEAT; i++) {
        Concert__V1__ChargeResponse *r = NULL;
        cc_status st;
        cr_assert_eq(cc_batch_result(b, i, &concert__v1__charge_response__descriptor, (ProtobufCMessage **)&r, &st),
                     GRPC_STATUS_OK, "%s", st.message);
        replayed += r->replayed;
        th_free_msg(r);
    }
    cc_batch_free(b);
    cr_expect_eq(replayed, KEYS * (REPEAT - 1));
    Concert__V1__GetBalanceRequest req = CONCERT__V1__GET_BALANCE_REQUEST__INIT;
    req.user_id = "wallet-user";
    Concert__V1__Balance *bal = NULL;
    cr_assert_eq(cc_client_unary(cli, "/concert.v1.WalletService/GetBalance", &req.base, &concert__v1__balance__descriptor,
                                 (ProtobufCMessage **)&bal, NULL, 0, 5000, NULL),
                 GRPC_STATUS_OK);
    cr_expect_eq(bal->balance, KEYS * (KEYS + 1) / 2, "balance %lld", (long long)bal->balance);
    th_free_msg(bal);
    /* The same key with another amount is refused. */
    Concert__V1__ChargeRequest again = CONCERT__V1__CHARGE_REQUEST__INIT;
    again.user_id = "wallet-user";
    again.amount = 999;
    again.idempotency_key = "key-1";
    cc_status st;
    cr_expect_eq(cc_client_unary(cli, "/concert.v1.WalletService/Charge", &again.base, NULL, NULL, NULL, 0, 5000, &st),
                 GRPC_STATUS_FAILED_PRECONDITION);
    cr_expect(strstr(st.message, "idempotency_key"), "%s", st.message);
    end_test();
}

/* ---- bad input ---- */

static void expect(grpc_status_code got, const cc_status *st, grpc_status_code want, const char *field,
                   const char *what) {
    cr_expect_eq(got, want, "%s: want %s, got %s: %s", what, cc_status_name(want), cc_status_name(got), st->message);
    if (field) cr_expect(strstr(st->message, field) != NULL, "%s: '%s' must name %s", what, st->message, field);
}

Test(bad_input, every_new_rpc, .init = start, .fini = stop, .timeout = 60) {
    char(*toks)[64] = active_tokens(1, "bad");
    char auth[100];
    snprintf(auth, sizeof auth, "Bearer %s", toks[0]);
    cc_md tok[] = {{"authorization", auth}}, adm[] = {{"x-admin-key", KEY}};
    char *big = malloc(10241);
    memset(big, 'z', 10240);
    big[10240] = 0;
    char *digest0 = th_redis_digest(&redis);
    cc_status st;
    grpc_status_code c;

    /* Wallet */
    Concert__V1__ChargeRequest ch = CONCERT__V1__CHARGE_REQUEST__INIT;
    const struct {
        const char *user;
        int64_t amount;
        const char *key;
        const char *field;
    } charges[] = {
        {"", 10, "k", "user_id"},        {big, 10, "k", "user_id"},       {"u{x}", 10, "k", "user_id"},
        {"u", 0, "k", "amount"},         {"u", -5, "k", "amount"},        {"u", INT64_MAX, "k", "amount"},
        {"u", 1000000000001LL, "k", "amount"}, {"u", 10, "", "idempotency_key"}, {"u", 10, big, "idempotency_key"},
        {"u", 10, "bad key", "idempotency_key"},
    };
    for (size_t i = 0; i < sizeof charges / sizeof *charges; i++) {
        ch.user_id = (char *)charges[i].user;
        ch.amount = charges[i].amount;
        ch.idempotency_key = (char *)charges[i].key;
        c = cc_client_unary(cli, "/concert.v1.WalletService/Charge", &ch.base, NULL, NULL, NULL, 0, 5000, &st);
        expect(c, &st, GRPC_STATUS_INVALID_ARGUMENT, charges[i].field, "Charge");
    }
    Concert__V1__GetBalanceRequest gb = CONCERT__V1__GET_BALANCE_REQUEST__INIT;
    gb.user_id = big;
    c = cc_client_unary(cli, "/concert.v1.WalletService/GetBalance", &gb.base, NULL, NULL, NULL, 0, 5000, &st);
    expect(c, &st, GRPC_STATUS_INVALID_ARGUMENT, "user_id", "GetBalance");

    /* Booking */
    int seats_bad[][3] = {{0, 0, 0}, {-1, 0, 0}, {100001, 0, 0}, {3, 3, 0}};
    size_t nseats[] = {1, 1, 1, 2};
    for (int i = 0; i < 4; i++) {
        Concert__V1__ReserveSeatsRequest rq = CONCERT__V1__RESERVE_SEATS_REQUEST__INIT;
        rq.schedule_id = "day1";
        rq.n_seat_numbers = nseats[i];
        rq.seat_numbers = seats_bad[i];
        c = cc_client_unary(cli, RESERVE, &rq.base, NULL, NULL, tok, 1, 5000, &st);
        expect(c, &st, GRPC_STATUS_INVALID_ARGUMENT, "seat_numbers", "ReserveSeats seats");
    }
    int eleven[11] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, one = 1, missing = 101;
    Concert__V1__ReserveSeatsRequest rq = CONCERT__V1__RESERVE_SEATS_REQUEST__INIT;
    rq.schedule_id = "day1";
    rq.n_seat_numbers = 11;
    rq.seat_numbers = eleven;
    expect(cc_client_unary(cli, RESERVE, &rq.base, NULL, NULL, tok, 1, 5000, &st), &st, GRPC_STATUS_INVALID_ARGUMENT,
           "seat_numbers", "ReserveSeats 11 seats");
    rq.n_seat_numbers = 0;
    expect(cc_client_unary(cli, RESERVE, &rq.base, NULL, NULL, tok, 1, 5000, &st), &st, GRPC_STATUS_INVALID_ARGUMENT,
           "seat_numbers", "ReserveSeats no seats");
    rq.n_seat_numbers = 1;
    rq.seat_numbers = &missing;
    expect(cc_client_unary(cli, RESERVE, &rq.base, NULL, NULL, tok, 1, 5000, &st), &st, GRPC_STATUS_NOT_FOUND,
           "seat_numbers", "ReserveSeats unknown seat");
    rq.seat_numbers = &one;
    rq.schedule_id = "nope";
    expect(cc_client_unary(cli, RESERVE, &rq.base, NULL, NULL, tok, 1, 5000, &st), &st, GRPC_STATUS_NOT_FOUND,
           "schedule_id", "ReserveSeats unknown schedule");
    rq.schedule_id = big;
    expect(cc_client_unary(cli, RESERVE, &rq.base, NULL, NULL, tok, 1, 5000, &st), &st, GRPC_STATUS_INVALID_ARGUMENT,
           "schedule_id", "ReserveSeats huge schedule");
    rq.schedule_id = "";
    expect(cc_client_unary(cli, RESERVE, &rq.base, NULL, NULL, tok, 1, 5000, &st), &st, GRPC_STATUS_INVALID_ARGUMENT,
           "schedule_id", "ReserveSeats empty schedule");
    Concert__V1__ListSeatsRequest ls = CONCERT__V1__LIST_SEATS_REQUEST__INIT;
    ls.schedule_id = "nope";
    expect(cc_client_unary(cli, "/concert.v1.BookingService/ListSeats", &ls.base, NULL, NULL, tok, 1, 5000, &st), &st,
           GRPC_STATUS_NOT_FOUND, "schedule_id", "ListSeats");
    Concert__V1__ListSchedulesRequest lsch = CONCERT__V1__LIST_SCHEDULES_REQUEST__INIT;
    lsch.concert_id = "other";
    expect(cc_client_unary(cli, "/concert.v1.BookingService/ListSchedules", &lsch.base, NULL, NULL, tok, 1, 5000, &st),
           &st, GRPC_STATUS_PERMISSION_DENIED, "concert_id", "ListSchedules other concert");
    lsch.concert_id = "";
    expect(cc_client_unary(cli, "/concert.v1.BookingService/ListSchedules", &lsch.base, NULL, NULL, tok, 1, 5000, &st),
           &st, GRPC_STATUS_INVALID_ARGUMENT, "concert_id", "ListSchedules empty");
    const char *rids[] = {"", "r1.show.00000000000000000000000000000000", "garbage", big};
    grpc_status_code rcodes[] = {GRPC_STATUS_INVALID_ARGUMENT, GRPC_STATUS_NOT_FOUND, GRPC_STATUS_NOT_FOUND,
                                 GRPC_STATUS_INVALID_ARGUMENT};
    for (int i = 0; i < 4; i++) {
        expect(resv_call("/concert.v1.BookingService/GetReservation", toks[0], rids[i], NULL, &st), &st, rcodes[i],
               "reservation_id", "GetReservation");
        expect(resv_call("/concert.v1.BookingService/CancelReservation", toks[0], rids[i], NULL, &st), &st, rcodes[i],
               "reservation_id", "CancelReservation");
    }

    /* Admin */
    Concert__V1__CreateConcertRequest cc = CONCERT__V1__CREATE_CONCERT_REQUEST__INIT;
    cc.concert_id = "show";
    cc.name = "again";
    expect(cc_client_unary(cli, "/concert.v1.AdminService/CreateConcert", &cc.base, NULL, NULL, adm, 1, 5000, &st), &st,
           GRPC_STATUS_ALREADY_EXISTS, "concert_id", "CreateConcert twice");
    cc.concert_id = "new-one";
    cc.name = "";
    expect(cc_client_unary(cli, "/concert.v1.AdminService/CreateConcert", &cc.base, NULL, NULL, adm, 1, 5000, &st), &st,
           GRPC_STATUS_INVALID_ARGUMENT, "name", "CreateConcert no name");
    cc.name = "x";
    cc.concert_id = big;
    expect(cc_client_unary(cli, "/concert.v1.AdminService/CreateConcert", &cc.base, NULL, NULL, adm, 1, 5000, &st), &st,
           GRPC_STATUS_INVALID_ARGUMENT, "concert_id", "CreateConcert huge id");
    cc.concert_id = "new-one";
    expect(cc_client_unary(cli, "/concert.v1.AdminService/CreateConcert", &cc.base, NULL, NULL, NULL, 0, 5000, &st), &st,
           GRPC_STATUS_UNAUTHENTICATED, "x-admin-key", "CreateConcert without key");
    cc_md wrong[] = {{"x-admin-key", "nope"}};
    expect(cc_client_unary(cli, "/concert.v1.AdminService/CreateConcert", &cc.base, NULL, NULL, wrong, 1, 5000, &st), &st,
           GRPC_STATUS_PERMISSION_DENIED, "x-admin-key", "CreateConcert wrong key");
    Concert__V1__SeatRange r1 = CONCERT__V1__SEAT_RANGE__INIT, r2 = CONCERT__V1__SEAT_RANGE__INIT;
    Concert__V1__SeatRange *rr[] = {&r1, &r2};
    r1.first_seat = 1, r1.last_seat = 10, r1.price = 5;
    r2.first_seat = 10, r2.last_seat = 20, r2.price = 5;
    Concert__V1__CreateScheduleRequest cs = CONCERT__V1__CREATE_SCHEDULE_REQUEST__INIT;
    cs.concert_id = "show";
    cs.schedule_id = "day2";
    cs.starts_at_unix_ms = 1798000000000LL;
    cs.n_seats = 2;
    cs.seats = rr;
    expect(cc_client_unary(cli, "/concert.v1.AdminService/CreateSchedule", &cs.base, NULL, NULL, adm, 1, 5000, &st), &st,
           GRPC_STATUS_INVALID_ARGUMENT, "overlap", "CreateSchedule overlap");
    r2.first_seat = 11, r2.price = 0;
    expect(cc_client_unary(cli, "/concert.v1.AdminService/CreateSchedule", &cs.base, NULL, NULL, adm, 1, 5000, &st), &st,
           GRPC_STATUS_INVALID_ARGUMENT, "price", "CreateSchedule zero price");
    r2.price = 5, r2.last_seat = 200000;
    expect(cc_client_unary(cli, "/concert.v1.AdminService/CreateSchedule", &cs.base, NULL, NULL, adm, 1, 5000, &st), &st,
           GRPC_STATUS_INVALID_ARGUMENT, "seats", "CreateSchedule too many seats");
    r2.last_seat = 20;
    cs.concert_id = "unknown-concert";
    expect(cc_client_unary(cli, "/concert.v1.AdminService/CreateSchedule", &cs.base, NULL, NULL, adm, 1, 5000, &st), &st,
           GRPC_STATUS_NOT_FOUND, "concert_id", "CreateSchedule unknown concert");
    cs.concert_id = "show";
    cs.schedule_id = "day1";
    expect(cc_client_unary(cli, "/concert.v1.AdminService/CreateSchedule", &cs.base, NULL, NULL, adm, 1, 5000, &st), &st,
           GRPC_STATUS_ALREADY_EXISTS, "schedule_id", "CreateSchedule twice");
    Concert__V1__QueuePolicy pol = CONCERT__V1__QUEUE_POLICY__INIT;
    pol.concert_id = "show";
    pol.admit_rate = -1;
    char *f1[] = {"admit_rate"}, *f2[] = {"nonsense"};
    Concert__V1__SetQueuePolicyRequest sp = CONCERT__V1__SET_QUEUE_POLICY_REQUEST__INIT;
    sp.policy = &pol;
    sp.n_update_fields = 1;
    sp.update_fields = f1;
    expect(cc_client_unary(cli, "/concert.v1.AdminService/SetQueuePolicy", &sp.base, NULL, NULL, adm, 1, 5000, &st), &st,
           GRPC_STATUS_INVALID_ARGUMENT, "admit_rate", "SetQueuePolicy negative");
    sp.update_fields = f2;
    expect(cc_client_unary(cli, "/concert.v1.AdminService/SetQueuePolicy", &sp.base, NULL, NULL, adm, 1, 5000, &st), &st,
           GRPC_STATUS_INVALID_ARGUMENT, "update_fields", "SetQueuePolicy unknown field");
    pol.concert_id = "nope";
    sp.update_fields = f1;
    pol.admit_rate = 5;
    expect(cc_client_unary(cli, "/concert.v1.AdminService/SetQueuePolicy", &sp.base, NULL, NULL, adm, 1, 5000, &st), &st,
           GRPC_STATUS_NOT_FOUND, "concert_id", "SetQueuePolicy unknown concert");
    Concert__V1__GetStatsRequest gs = CONCERT__V1__GET_STATS_REQUEST__INIT;
    gs.concert_id = "nope";
    expect(cc_client_unary(cli, "/concert.v1.AdminService/GetStats", &gs.base, NULL, NULL, adm, 1, 5000, &st), &st,
           GRPC_STATUS_NOT_FOUND, "concert_id", "GetStats unknown");
    /* Not protobuf at all. */
    const char junk[] = "\xff\xff\xff\xff\x0f";
    expect(cc_client_unary_raw(cli, RESERVE, junk, sizeof junk, tok, 1, 5000, &st), &st, GRPC_STATUS_INVALID_ARGUMENT,
           "ReserveSeatsRequest", "junk");

    char *digest1 = th_redis_digest(&redis);
    cr_expect_str_eq(digest1, digest0, "bad input must not change anything in Redis");
    free(digest0), free(digest1), free(big), free(toks);
    end_test();
}

/* ---- admin ---- */

static void start_no_admin(void) {
    memset(&redis, 0, sizeof redis);
    th_redis_start(&redis);
    th_server_start(&server, redis.url, NULL);
    cli = cc_client_open(server.addr);
}

Test(admin, disabled_without_a_key, .init = start_no_admin, .fini = stop) {
    cc_md md[] = {{"x-admin-key", ""}};
    cc_status st;
    Concert__V1__ListConcertsRequest req = CONCERT__V1__LIST_CONCERTS_REQUEST__INIT;
    cr_expect_eq(cc_client_unary(cli, "/concert.v1.AdminService/ListConcerts", &req.base, NULL, NULL, md, 1, 5000, &st),
                 GRPC_STATUS_PERMISSION_DENIED);
    cr_expect(strstr(st.message, "disabled"), "%s", st.message);
    end_test();
}

Test(admin, stats_count_seats, .init = start, .fini = stop) {
    char(*toks)[64] = active_tokens(1, "st");
    int seats[] = {7, 8};
    cr_assert_eq(reserve(toks[0], seats, 2, NULL, NULL), GRPC_STATUS_OK);
    cc_md md[] = {{"x-admin-key", KEY}};
    Concert__V1__GetStatsRequest req = CONCERT__V1__GET_STATS_REQUEST__INIT;
    req.concert_id = "show";
    Concert__V1__Stats *s = NULL;
    cr_assert_eq(cc_client_unary(cli, "/concert.v1.AdminService/GetStats", &req.base, &concert__v1__stats__descriptor,
                                 (ProtobufCMessage **)&s, md, 1, 5000, NULL),
                 GRPC_STATUS_OK);
    cr_assert_eq(s->n_schedules, 1);
    cr_expect_eq(s->schedules[0]->seats_total, 100);
    cr_expect_eq(s->schedules[0]->held, 2);
    cr_expect_eq(s->schedules[0]->available, 98);
    cr_expect_eq(s->active, 1);
    Concert__V1__ListConcertsRequest lr = CONCERT__V1__LIST_CONCERTS_REQUEST__INIT;
    Concert__V1__ListConcertsResponse *l = NULL;
    cr_assert_eq(cc_client_unary(cli, "/concert.v1.AdminService/ListConcerts", &lr.base,
                                 &concert__v1__list_concerts_response__descriptor, (ProtobufCMessage **)&l, md, 1, 5000,
                                 NULL),
                 GRPC_STATUS_OK);
    cr_expect_eq(l->n_concerts, 1);
    cr_expect_str_eq(l->concerts[0]->name, "Test concert");
    th_free_msg(s), th_free_msg(l);
    free(toks);
    end_test();
}

/* ---- audit ---- */

static Concert__V1__AuditReport *audit(void) {
    cc_md md[] = {{"x-admin-key", KEY}};
    Concert__V1__AuditRequest req = CONCERT__V1__AUDIT_REQUEST__INIT;
    req.concert_id = "show";
    Concert__V1__AuditReport *r = NULL;
    cc_status st;
    cr_assert_eq(cc_client_unary(cli, "/concert.v1.AdminService/Audit", &req.base, &concert__v1__audit_report__descriptor,
                                 (ProtobufCMessage **)&r, md, 1, 5000, &st),
                 GRPC_STATUS_OK, "%s", st.message);
    return r;
}

Test(admin, audit_passes_then_finds_tampering, .init = start, .fini = stop) {
    char(*toks)[64] = active_tokens(2, "aud");
    int s1[] = {1, 2}, s2[] = {3};
    Concert__V1__Reservation *r = NULL;
    cr_assert_eq(reserve(toks[0], s1, 2, &r, NULL), GRPC_STATUS_OK);
    cr_assert_eq(reserve(toks[1], s2, 1, NULL, NULL), GRPC_STATUS_OK);
    Concert__V1__AuditReport *a = audit();
    cr_expect(a->ok, "a clean concert audits OK (%zu problems, first: %s)", a->n_problems,
              a->n_problems ? a->problems[0] : "");
    cr_expect_eq(a->seats_held, 3);
    th_free_msg(a);
    /* Sell a held seat behind the service's back, and invent a debit. */
    redisContext *rc = th_redis_connect(&redis);
    char v[128];
    snprintf(v, sizeof v, "S|%s", r->reservation_id);
    freeReplyObject(redisCommand(rc, "HSET cc:{show}:s:day1:seat 1 %s", v));
    freeReplyObject(redisCommand(rc, "HSET cc:{w:aud-0}:pay p1.show.0123456789abcdef0123456789abcdef 500"));
    freeReplyObject(redisCommand(rc, "SADD cc:{show}:pays p1.show.fedcba9876543210fedcba9876543210"));
    freeReplyObject(redisCommand(rc, "HSET cc:{show}:p:p1.show.fedcba9876543210fedcba9876543210 user aud-0 status FAILED amount 7 rid x"));
    redisFree(rc);
    a = audit();
    cr_expect_not(a->ok);
    int seat_problem = 0, wallet_problem = 0;
    for (size_t i = 0; i < a->n_problems; i++) {
        if (strstr(a->problems[i], "day1/1: SOLD")) seat_problem = 1;
        if (strstr(a->problems[i], "debit p1.show.0123456789abcdef0123456789abcdef has no payment")) wallet_problem = 1;
    }
    cr_expect(seat_problem, "the forged sale must be reported");
    cr_expect(wallet_problem, "the forged debit must be reported");
    cr_expect_eq(a->users_checked, 1);
    th_free_msg(a), th_free_msg(r);
    free(toks);
    end_test();
}
