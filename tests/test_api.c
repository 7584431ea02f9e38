/* The API's shared conventions (issue 12): structured error details (reasons and
 * fields derived from the messages, every reason in README's error table), pagination
 * of ListSeats and ListConcerts (every item exactly once, in order; bounded replies;
 * forged or stale page tokens refused naming page_token), and SetQueuePolicy's
 * update_fields in both spellings. The details themselves are decoded by a real
 * client library in tests/ops/test_error_details.sh. */
#define _GNU_SOURCE /* memmem */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "concert/v1/admin.pb-c.h"
#include "concert/v1/booking.pb-c.h"
#include "srv_api.h"
#include "srv_errors.h"
#include "srv_valid.h"
#include "th.h"

#define KEY "test-admin-key"
#define LIST_SEATS "/concert.v1.BookingService/ListSeats"
#define LIST_CONCERTS "/concert.v1.AdminService/ListConcerts"

/* ---- reasons (pure) ---- */

typedef struct {
    grpc_status_code code;
    const char *message;
    const char *reason;
    const char *field;
} reason_case;

/* Messages as handlers and scripts write them today. */
static const reason_case cases[] = {
    {GRPC_STATUS_INVALID_ARGUMENT, "concert_id: must be 1..64 characters of [A-Za-z0-9_-]", "FIELD_INVALID", "concert_id"},
    {GRPC_STATUS_INVALID_ARGUMENT, "policy.concert_id: must be valid UTF-8", "FIELD_INVALID", "policy.concert_id"},
    {GRPC_STATUS_INVALID_ARGUMENT, "token: required", "FIELD_REQUIRED", "token"},
    {GRPC_STATUS_INVALID_ARGUMENT, "request is not a valid concert.v1.IssueTokenRequest message", "MALFORMED_REQUEST", ""},
    {GRPC_STATUS_INVALID_ARGUMENT, SRV_PAGE_TOKEN_BAD, "PAGE_TOKEN_INVALID", "page_token"},
    {GRPC_STATUS_INVALID_ARGUMENT, "update_fields: unknown field 'nope'", "UNKNOWN_FIELD", "update_fields"},
    {GRPC_STATUS_UNAUTHENTICATED, "authorization: a queue token is required ('authorization: Bearer <token>')", "TOKEN_REQUIRED", "authorization"},
    {GRPC_STATUS_UNAUTHENTICATED, "authorization: unknown token", "TOKEN_UNKNOWN", "authorization"},
    {GRPC_STATUS_UNAUTHENTICATED, "token: unknown token", "TOKEN_UNKNOWN", "token"},
    {GRPC_STATUS_UNAUTHENTICATED, "x-admin-key: required", "ADMIN_KEY_REQUIRED", "x-admin-key"},
    {GRPC_STATUS_UNAUTHENTICATED, "x-user-assertion: required (a JWT whose sub is the user_id, signed with HS256)", "USER_ASSERTION_REQUIRED", "x-user-assertion"},
    {GRPC_STATUS_UNAUTHENTICATED, "x-user-assertion: expired", "USER_ASSERTION_INVALID", "x-user-assertion"},
    {GRPC_STATUS_PERMISSION_DENIED, "token: not admitted yet (WAITING)", "TOKEN_NOT_ADMITTED", "token"},
    {GRPC_STATUS_PERMISSION_DENIED, "token: not active (EXPIRED)", "TOKEN_EXPIRED", "token"},
    {GRPC_STATUS_PERMISSION_DENIED, "concert_id: the token is for another concert", "WRONG_CONCERT", "concert_id"},
    {GRPC_STATUS_PERMISSION_DENIED, "the token is for another concert", "WRONG_CONCERT", ""},
    {GRPC_STATUS_PERMISSION_DENIED, "user_id: the x-user-assertion is for another user", "USER_ASSERTION_MISMATCH", "user_id"},
    {GRPC_STATUS_PERMISSION_DENIED, "reservation_id: belongs to another user", "NOT_OWNER", "reservation_id"},
    {GRPC_STATUS_PERMISSION_DENIED, "x-admin-key: wrong key", "ADMIN_KEY_WRONG", "x-admin-key"},
    {GRPC_STATUS_PERMISSION_DENIED, "admin is disabled on this server (no --admin-key)", "ADMIN_DISABLED", ""},
    {GRPC_STATUS_NOT_FOUND, "concert_id: no concert 'x' (an admin creates concerts)", "CONCERT_NOT_FOUND", "concert_id"},
    {GRPC_STATUS_NOT_FOUND, "concert_id: no such concert", "CONCERT_NOT_FOUND", "concert_id"},
    {GRPC_STATUS_NOT_FOUND, "schedule_id: no such schedule in this concert", "SCHEDULE_NOT_FOUND", "schedule_id"},
    {GRPC_STATUS_NOT_FOUND, "seat_numbers: seat 7 does not exist", "SEAT_NOT_FOUND", "seat_numbers"},
    {GRPC_STATUS_NOT_FOUND, "reservation_id: not found", "RESERVATION_NOT_FOUND", "reservation_id"},
    {GRPC_STATUS_NOT_FOUND, "payment_id: not found", "PAYMENT_NOT_FOUND", "payment_id"},
    {GRPC_STATUS_NOT_FOUND, "service: unknown service 'x'", "SERVICE_NOT_FOUND", "service"},
    {GRPC_STATUS_ALREADY_EXISTS, "concert_id: c1 already exists", "CONCERT_ALREADY_EXISTS", "concert_id"},
    {GRPC_STATUS_ALREADY_EXISTS, "schedule_id: s1 already exists", "SCHEDULE_ALREADY_EXISTS", "schedule_id"},
    {GRPC_STATUS_FAILED_PRECONDITION, "seat_numbers: seat 4 is sold", "SEAT_SOLD", "seat_numbers"},
    {GRPC_STATUS_FAILED_PRECONDITION, "seat_numbers: seat 4 is held", "SEAT_HELD", "seat_numbers"},
    {GRPC_STATUS_FAILED_PRECONDITION, "idempotency_key: already used for a charge of 5", "IDEMPOTENCY_KEY_REUSED", "idempotency_key"},
    {GRPC_STATUS_FAILED_PRECONDITION, "reservation_id: already paid", "RESERVATION_PAID", "reservation_id"},
    {GRPC_STATUS_FAILED_PRECONDITION, "reservation_id: already being paid by p1.x.y", "RESERVATION_BEING_PAID", "reservation_id"},
    {GRPC_STATUS_FAILED_PRECONDITION, "reservation_id: not held (EXPIRED)", "RESERVATION_NOT_HELD", "reservation_id"},
    {GRPC_STATUS_FAILED_PRECONDITION, "amount: the balance would exceed 1000000000000000", "BALANCE_LIMIT", "amount"},
    {GRPC_STATUS_RESOURCE_EXHAUSTED, "token: too many ListSeats calls, retry after 50 ms", "RATE_LIMITED", "token"},
    {GRPC_STATUS_RESOURCE_EXHAUSTED, "peer address: too many IssueToken calls, retry after 5 ms", "RATE_LIMITED", ""},
    {GRPC_STATUS_RESOURCE_EXHAUSTED, "seat_numbers: at most 4 seats may be held at once (4 held now)", "SEAT_LIMIT", "seat_numbers"},
    {GRPC_STATUS_RESOURCE_EXHAUSTED, "concert_id: user_id already waits in 10 concerts, the most at once; leave one first", "QUEUE_LIMIT", "concert_id"},
    {GRPC_STATUS_RESOURCE_EXHAUSTED, "metadata: 90000 bytes of headers, at most 65536 per call", "METADATA_TOO_LARGE", "metadata"},
    {GRPC_STATUS_RESOURCE_EXHAUSTED, "redis out of memory: try again later", "REDIS_OUT_OF_MEMORY", ""},
    {GRPC_STATUS_UNAVAILABLE, "redis unavailable: connection refused", "REDIS_UNAVAILABLE", ""},
    {GRPC_STATUS_UNAVAILABLE, "kafka did not acknowledge the payment in time (timeout); it will not be debited; retry Pay with the same idempotency_key", "KAFKA_UNAVAILABLE", ""},
    {GRPC_STATUS_UNAVAILABLE, "payments are disabled on this server (no --kafka)", "PAYMENTS_DISABLED", ""},
    {GRPC_STATUS_UNAVAILABLE, "server shutting down", "SHUTTING_DOWN", ""},
    {GRPC_STATUS_UNIMPLEMENTED, "unknown method /x.Y/Z", "METHOD_NOT_FOUND", ""},
    {GRPC_STATUS_UNKNOWN, "the payment's state is unknown (redis timeout); retry Pay with the same idempotency_key to learn it", "PAYMENT_STATE_UNKNOWN", ""},
    {GRPC_STATUS_INTERNAL, "internal error", "INTERNAL", ""},
    {GRPC_STATUS_INVALID_ARGUMENT, "something odd", "INVALID_ARGUMENT", ""},
};

Test(reasons, every_kind_of_error_gets_its_reason_and_field) {
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        srv_err_info in;
        srv_err_classify(cases[i].code, cases[i].message, -1, &in);
        cr_expect_str_eq(in.reason, cases[i].reason, "'%s' (code %d)", cases[i].message, cases[i].code);
        cr_expect_str_eq(in.field, cases[i].field, "field of '%s'", cases[i].message);
        int retry = cases[i].code == GRPC_STATUS_UNAVAILABLE || !strcmp(cases[i].reason, "REDIS_OUT_OF_MEMORY");
        cr_expect_eq(in.retry_ms >= 0, retry, "RetryInfo for '%s' only when it may be retried", cases[i].message);
    }
}

Test(reasons, a_rate_limit_retry_hint_is_the_retry_delay) {
    srv_err_info in;
    srv_err_classify(GRPC_STATUS_RESOURCE_EXHAUSTED, "token: too many ListSeats calls, retry after 1234 ms", 1234, &in);
    cr_expect_str_eq(in.reason, "RATE_LIMITED");
    cr_expect_eq(in.retry_ms, 1234);
    srv_err_classify(GRPC_STATUS_RESOURCE_EXHAUSTED, "seat_numbers: at most 4 seats may be held at once", -1, &in);
    cr_expect_eq(in.retry_ms, -1, "a cap is not a rate limit: no RetryInfo");
}

Test(reasons, the_field_is_a_path_before_a_colon) {
    char f[SRV_ERR_FIELD_MAX];
    const char *rest;
    cr_expect_eq(srv_err_field("seats: ranges 1..2 and 2..3 overlap", f, &rest), 0);
    cr_expect_str_eq(f, "seats");
    cr_expect_str_eq(rest, "ranges 1..2 and 2..3 overlap");
    cr_expect_eq(srv_err_field("redis unavailable: x", f, &rest), -1, "words with spaces are not a field");
    cr_expect_eq(srv_err_field(": x", f, &rest), -1);
    cr_expect_eq(srv_err_field("9lives: x", f, &rest), -1);
    cr_expect_eq(srv_err_field("no colon at all", f, &rest), -1);
    char long_field[200];
    memset(long_field, 'a', 100);
    strcpy(long_field + 100, ": x");
    cr_expect_eq(srv_err_field(long_field, f, &rest), -1, "too long for a field");
}

/* README's error table names every reason, so clients can rely on the list. */
Test(reasons, readme_lists_every_reason) {
    FILE *fp = fopen(TH_SOURCE_DIR "/README.md", "r");
    cr_assert(fp);
    static char text[1 << 20];
    size_t n = fread(text, 1, sizeof text - 1, fp);
    fclose(fp);
    text[n] = '\0';
    const char *sec = strstr(text, "### Error codes");
    cr_assert(sec, "README has an 'Error codes' section");
    const char *end = strstr(sec + 4, "\n### ");
    size_t len = end ? (size_t)(end - sec) : strlen(sec);
    for (size_t i = 0; srv_err_reason_at(i); i++) {
        char want[80];
        snprintf(want, sizeof want, "`%s`", srv_err_reason_at(i));
        cr_expect(memmem(sec, len, want, strlen(want)) != NULL, "README 'Error codes' lacks %s", want);
    }
}

/* ---- page tokens and sizes (pure) ---- */

Test(pages, tokens_round_trip_and_refuse_everything_else) {
    char tok[SRV_PAGE_TOKEN_MAX + 1];
    uint8_t cur[SRV_PAGE_CURSOR_MAX];
    size_t cl = 99;
    srv_page_token(tok, SRV_PAGE_SEATS, "c1/s1", "\x00\x00\x03\xe8", 4);
    cr_assert_eq(srv_page_token_parse(tok, SRV_PAGE_SEATS, "c1/s1", cur, &cl), 0, "%s", tok);
    cr_expect_eq(cl, 4);
    cr_expect(!memcmp(cur, "\x00\x00\x03\xe8", 4));
    cr_expect_eq(srv_page_token_parse(tok, SRV_PAGE_SEATS, "c1/s2", cur, &cl), -1, "another schedule");
    cr_expect_eq(srv_page_token_parse(tok, SRV_PAGE_SEATS, "c2/s1", cur, &cl), -1, "another concert");
    cr_expect_eq(srv_page_token_parse(tok, SRV_PAGE_CONCERTS, "c1/s1", cur, &cl), -1, "another listing");
    for (size_t i = 0; tok[i]; i++) {
        char bad[sizeof tok];
        strcpy(bad, tok);
        bad[i] = bad[i] == '0' ? '1' : '0';
        cr_expect_eq(srv_page_token_parse(bad, SRV_PAGE_SEATS, "c1/s1", cur, &cl), -1, "altered at %zu: %s", i, bad);
    }
    char cut[sizeof tok];
    strcpy(cut, tok);
    cut[strlen(cut) - 2] = '\0';
    cr_expect_eq(srv_page_token_parse(cut, SRV_PAGE_SEATS, "c1/s1", cur, &cl), -1, "cut");
    const char *junk[] = {"", "abc", "zz", "01010000000000000000", "../../etc", "0101ABCDEF0123456789abcdef"};
    for (size_t i = 0; i < sizeof junk / sizeof *junk; i++)
        cr_expect_eq(srv_page_token_parse(junk[i], SRV_PAGE_SEATS, "c1/s1", cur, &cl), -1, "'%s'", junk[i]);
    char big[SRV_PAGE_CURSOR_MAX];
    memset(big, 'z', sizeof big);
    srv_page_token(tok, SRV_PAGE_CONCERTS, "", big, sizeof big);
    cr_expect_leq(strlen(tok), SRV_PAGE_TOKEN_MAX);
    cr_expect_eq(srv_page_token_parse(tok, SRV_PAGE_CONCERTS, "", cur, &cl), 0);
    cr_expect_eq(cl, sizeof big);
}

Test(pages, sizes) {
    cr_expect_eq(srv_page_size(0, 100, 1000), 100, "0: the default");
    cr_expect_eq(srv_page_size(7, 100, 1000), 7);
    cr_expect_eq(srv_page_size(5000, 100, 1000), 1000, "above the maximum: the maximum");
    cr_expect_eq(srv_page_size(-1, 100, 1000), -1, "negative: refused");
    srv_page pg;
    char err[160], tok[SRV_PAGE_TOKEN_MAX + 1];
    cr_expect_eq(srv_page_read(&pg, 0, "", SRV_PAGE_CONCERTS, "", 100, 1000, err, sizeof err), 0);
    cr_expect_eq(pg.size, 100);
    cr_expect_eq(pg.cursor_len, 0u, "no token: the first page");
    cr_expect_eq(srv_page_read(&pg, -3, "", SRV_PAGE_CONCERTS, "", 100, 1000, err, sizeof err), -1);
    cr_expect(!strncmp(err, "page_size: ", 11), "%s", err);
    srv_page_token(tok, SRV_PAGE_CONCERTS, "", "abc", 3);
    cr_expect_eq(srv_page_read(&pg, 5, tok, SRV_PAGE_CONCERTS, "", 100, 1000, err, sizeof err), 0);
    cr_expect_eq(pg.cursor_len, 3u);
    cr_expect_eq(srv_page_read(&pg, 5, tok, SRV_PAGE_SEATS, "", 100, 1000, err, sizeof err), -1);
    cr_expect_str_eq(err, SRV_PAGE_TOKEN_BAD);
}

/* ---- field names (pure) ---- */

Test(field_names, both_spellings_and_nothing_else) {
    const char *yes[][2] = {{"max_active", "max_active"},           {"max_active", "maxActive"},
                            {"max_seats_per_user", "maxSeatsPerUser"}, {"admit_rate", "admitRate"},
                            {"hold_ttl_ms", "holdTtlMs"},             {"concert_id", "concertId"}};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
        cr_expect(srv_field_name_is(yes[i][0], yes[i][1]), "%s names %s", yes[i][1], yes[i][0]);
    const char *no[][2] = {{"max_active", "maxactive"},   {"max_active", "MaxActive"}, {"max_active", "max-active"},
                           {"max_active", "maxActive_"},  {"max_active", "maxActiv"},  {"max_active", ""},
                           {"max_active", "max_Active"},  {"admit_rate", "maxActive"}, {"hold_ttl_ms", "holdTTLMs"}};
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        cr_expect(!srv_field_name_is(no[i][0], no[i][1]), "%s must not name %s", no[i][1], no[i][0]);
}

/* ---- against a real server ---- */

static th_redis redis;
static th_server server;
static cc_client *cli;
static char token[200], auth[220];

static void start(void) {
    memset(&redis, 0, sizeof redis);
    th_redis_start(&redis);
    /* Paging through 100 pages is not what the rate limits are about here. */
    const char *flags[] = {"--admin-key", KEY, "--admit-rate", "2000", "--rate-user", "0", "--rate-peer", "0", NULL};
    th_server_start(&server, redis.url, flags);
    cli = cc_client_open(server.addr);
}

static void stop(void) {
    th_server_close(&server, &cli);
    th_redis_stop(&redis);
}

static void catalogue(const char *concert, const char *schedule, int seats) {
    cr_assert_eq(th_admin_catalogue(cli, KEY, concert, schedule, seats, 700), GRPC_STATUS_OK);
}

static void activate(const char *concert) {
    cr_assert_eq(th_active_token(cli, "pager", concert, token, sizeof token), 0);
    snprintf(auth, sizeof auth, "Bearer %s", token);
}

static grpc_status_code list_seats(const char *schedule, int32_t size, const char *page_token,
                                   Concert__V1__ListSeatsResponse **out, cc_status *st) {
    cc_md md[] = {{"authorization", auth}};
    Concert__V1__ListSeatsRequest req = CONCERT__V1__LIST_SEATS_REQUEST__INIT;
    req.schedule_id = (char *)schedule;
    req.page_size = size;
    req.page_token = (char *)(page_token ? page_token : "");
    return cc_client_unary(cli, LIST_SEATS, &req.base, &concert__v1__list_seats_response__descriptor,
                           (ProtobufCMessage **)out, md, 1, 10000, st);
}

/* Walks every page; returns the number of seats, checking order and size on the way. */
static size_t walk_seats(const char *schedule, int32_t size, size_t want_per_page, size_t *pages) {
    char next[SRV_PAGE_TOKEN_MAX + 1] = "";
    int32_t last = 0;
    size_t total = 0, biggest = 0;
    *pages = 0;
    do {
        Concert__V1__ListSeatsResponse *r = NULL;
        cc_status st;
        cr_assert_eq(list_seats(schedule, size, next, &r, &st), GRPC_STATUS_OK, "page %zu: %s", *pages, st.message);
        size_t bytes = protobuf_c_message_get_packed_size(&r->base);
        if (bytes > biggest) biggest = bytes;
        cr_expect_str_eq(r->schedule_id, schedule);
        for (size_t i = 0; i < r->n_seats; i++) {
            cr_assert_gt(r->seats[i]->number, last, "page %zu: seat %d after %d (each once, in order)", *pages,
                         r->seats[i]->number, last);
            last = r->seats[i]->number;
        }
        if (r->next_page_token[0]) cr_expect_eq(r->n_seats, want_per_page, "page %zu is full", *pages);
        total += r->n_seats;
        cr_assert_lt(strlen(r->next_page_token), sizeof next);
        cr_assert(!next[0] || strcmp(next, r->next_page_token), "the token moves on");
        snprintf(next, sizeof next, "%s", r->next_page_token);
        protobuf_c_message_free_unpacked(&r->base, NULL);
        (*pages)++;
        cr_assert_lt(*pages, 1000u, "the pages end");
    } while (next[0]);
    cr_log_info("ListSeats %s page_size %d: %zu seats in %zu pages, the biggest reply %zu bytes\n", schedule, size,
                total, *pages, biggest);
    if (size == 0) cr_expect_leq(biggest, 100 * 1000, "no reply over ~100 KB by default (%zu bytes)", biggest);
    return total;
}

Test(pages, list_seats_covers_a_stadium_exactly_once_in_order, .init = start, .fini = stop, .timeout = 120) {
    catalogue("stadium", "final", 100000);
    activate("stadium");
    size_t pages;
    cr_expect_eq(walk_seats("final", 0, 1000, &pages), 100000u, "every seat");
    cr_expect_eq(pages, 100u, "1000 seats a page by default");
    cr_expect_eq(walk_seats("final", 7000, 5000, &pages), 100000u);
    cr_expect_eq(pages, 20u, "page_size above 5000 means 5000");
    cr_expect_eq(walk_seats("final", 999, 999, &pages), 100000u);
    cr_expect_eq(pages, 101u);
}

Test(pages, list_seats_pages_show_holds_and_end_exactly, .init = start, .fini = stop) {
    catalogue("club", "night", 10);
    activate("club");
    cc_md md[] = {{"authorization", auth}};
    int32_t seats[] = {5, 6};
    Concert__V1__ReserveSeatsRequest rr = CONCERT__V1__RESERVE_SEATS_REQUEST__INIT;
    rr.schedule_id = "night";
    rr.n_seat_numbers = 2;
    rr.seat_numbers = seats;
    cc_status st;
    cr_assert_eq(cc_client_unary(cli, "/concert.v1.BookingService/ReserveSeats", &rr.base, NULL, NULL, md, 1, 5000, &st),
                 GRPC_STATUS_OK, "%s", st.message);
    Concert__V1__ListSeatsResponse *r = NULL;
    cr_assert_eq(list_seats("night", 5, NULL, &r, &st), GRPC_STATUS_OK, "%s", st.message);
    cr_expect_eq(r->n_seats, 5u);
    cr_expect_eq(r->seats[4]->number, 5);
    cr_expect_eq(r->seats[4]->state, CONCERT__V1__SEAT_STATE__SEAT_STATE_HELD, "this server's hold shows at once");
    cr_assert(r->next_page_token[0]);
    char next[SRV_PAGE_TOKEN_MAX + 1];
    snprintf(next, sizeof next, "%s", r->next_page_token);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    cr_assert_eq(list_seats("night", 5, next, &r, &st), GRPC_STATUS_OK, "%s", st.message);
    cr_expect_eq(r->n_seats, 5u);
    cr_expect_eq(r->seats[0]->number, 6);
    cr_expect_eq(r->seats[0]->state, CONCERT__V1__SEAT_STATE__SEAT_STATE_HELD);
    cr_expect_str_eq(r->next_page_token, "", "a page ending at the last seat is the last page");
    protobuf_c_message_free_unpacked(&r->base, NULL);
    cr_assert_eq(list_seats("night", 0, NULL, &r, &st), GRPC_STATUS_OK);
    cr_expect_eq(r->n_seats, 10u);
    cr_expect_str_eq(r->next_page_token, "", "everything fits the default page: no token");
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

static void expect_page_token_refused(grpc_status_code code, const cc_status *st, const char *what) {
    cr_expect_eq(code, GRPC_STATUS_INVALID_ARGUMENT, "%s: %s", what, st->message);
    cr_expect(!strncmp(st->message, "page_token: ", 12), "%s names page_token: '%s'", what, st->message);
}

Test(pages, forged_and_stale_seat_tokens_are_refused, .init = start, .fini = stop) {
    catalogue("hall", "a", 30);
    catalogue("hall", "b", 30);
    catalogue("other", "a", 30);
    activate("hall");
    Concert__V1__ListSeatsResponse *r = NULL;
    cc_status st;
    cr_assert_eq(list_seats("a", 10, NULL, &r, &st), GRPC_STATUS_OK, "%s", st.message);
    char tok_a[SRV_PAGE_TOKEN_MAX + 1];
    snprintf(tok_a, sizeof tok_a, "%s", r->next_page_token);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    expect_page_token_refused(list_seats("b", 10, tok_a, NULL, &st), &st, "a token of another schedule");
    char bad[sizeof tok_a];
    snprintf(bad, sizeof bad, "%s", tok_a);
    bad[5] = bad[5] == 'f' ? 'e' : 'f';
    expect_page_token_refused(list_seats("a", 10, bad, NULL, &st), &st, "an altered token");
    expect_page_token_refused(list_seats("a", 10, "made-up", NULL, &st), &st, "a made-up token");
    /* The same schedule id in another concert: a token of hall's is not other's. */
    char hall_auth[sizeof auth];
    memcpy(hall_auth, auth, sizeof auth);
    activate("other");
    expect_page_token_refused(list_seats("a", 10, tok_a, NULL, &st), &st, "a token of another concert");
    memcpy(auth, hall_auth, sizeof auth);
    cr_expect_eq(list_seats("a", -1, NULL, NULL, &st), GRPC_STATUS_INVALID_ARGUMENT);
    cr_expect(!strncmp(st.message, "page_size: ", 11), "%s", st.message);
    cr_expect_eq(list_seats("a", 10, tok_a, NULL, &st), GRPC_STATUS_OK, "the real token still works: %s", st.message);
}

static grpc_status_code list_concerts(int32_t size, const char *page_token, Concert__V1__ListConcertsResponse **out,
                                      cc_status *st) {
    cc_md md[] = {{"x-admin-key", KEY}};
    Concert__V1__ListConcertsRequest req = CONCERT__V1__LIST_CONCERTS_REQUEST__INIT;
    req.page_size = size;
    req.page_token = (char *)(page_token ? page_token : "");
    return cc_client_unary(cli, LIST_CONCERTS, &req.base, &concert__v1__list_concerts_response__descriptor,
                           (ProtobufCMessage **)out, md, 1, 10000, st);
}

/* Walks every page of ListConcerts; returns how many, each after the one before. */
static size_t walk_concerts(int32_t size, size_t want_per_page, size_t *pages) {
    char next[SRV_PAGE_TOKEN_MAX + 1] = "", last[SRV_MAX_ID + 1] = "";
    size_t total = 0;
    *pages = 0;
    do {
        Concert__V1__ListConcertsResponse *r = NULL;
        cc_status st;
        cr_assert_eq(list_concerts(size, next, &r, &st), GRPC_STATUS_OK, "%s", st.message);
        for (size_t i = 0; i < r->n_concerts; i++) {
            cr_assert_gt(strcmp(r->concerts[i]->concert_id, last), 0, "%s after %s (each once, in order)",
                         r->concerts[i]->concert_id, last);
            snprintf(last, sizeof last, "%s", r->concerts[i]->concert_id);
            cr_expect_str_eq(r->concerts[i]->name, "Test concert");
        }
        if (r->next_page_token[0]) cr_expect_eq(r->n_concerts, want_per_page);
        total += r->n_concerts;
        snprintf(next, sizeof next, "%s", r->next_page_token);
        protobuf_c_message_free_unpacked(&r->base, NULL);
        cr_assert_lt(++*pages, 1000u);
    } while (next[0]);
    return total;
}

Test(pages, list_concerts_exactly_once_in_order, .init = start, .fini = stop, .timeout = 120) {
    for (int i = 0; i < 250; i++) {
        char id[32];
        snprintf(id, sizeof id, "c-%03d", (i * 37) % 250); /* not created in id order */
        cr_assert_eq(th_admin_concert(cli, KEY, id), GRPC_STATUS_OK);
    }
    size_t pages;
    cr_expect_eq(walk_concerts(0, 100, &pages), 250u);
    cr_expect_eq(pages, 3u, "100 concerts a page by default");
    cr_expect_eq(walk_concerts(7, 7, &pages), 250u);
    cr_expect_eq(pages, 36u);
    cr_expect_eq(walk_concerts(250, 250, &pages), 250u);
    cr_expect_eq(pages, 1u, "a page holding the last concert has no next token");

    /* Concerts created before the index existed (its key gone): indexed on the fly. */
    redisContext *rc = th_redis_connect(&redis);
    cr_assert(rc);
    freeReplyObject(redisCommand(rc, "DEL {cc:concerts}:ids"));
    cr_expect_eq(walk_concerts(0, 100, &pages), 250u, "every concert, also without the index");

    cc_status st;
    cr_expect_eq(list_concerts(-5, NULL, NULL, &st), GRPC_STATUS_INVALID_ARGUMENT);
    cr_expect(!strncmp(st.message, "page_size: ", 11), "%s", st.message);
    expect_page_token_refused(list_concerts(10, "010263", NULL, &st), &st, "a made-up token");
    char seat_tok[SRV_PAGE_TOKEN_MAX + 1];
    srv_page_token(seat_tok, SRV_PAGE_SEATS, "", "c-100", 5);
    expect_page_token_refused(list_concerts(10, seat_tok, NULL, &st), &st, "a token of another listing");
    redisFree(rc);
}

/* ---- update_fields ---- */

/* A scalar field of a message as int64 (int32, int64, bool, enum). */
static int64_t get_num(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
    const char *p = (const char *)m + f->offset;
    if (f->type == PROTOBUF_C_TYPE_INT64) return *(const int64_t *)p;
    if (f->type == PROTOBUF_C_TYPE_BOOL) return *(const protobuf_c_boolean *)p;
    return *(const int32_t *)p;
}

static void set_num(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, int64_t v) {
    char *p = (char *)m + f->offset;
    if (f->type == PROTOBUF_C_TYPE_INT64) *(int64_t *)p = v;
    else if (f->type == PROTOBUF_C_TYPE_BOOL) *(protobuf_c_boolean *)p = v != 0;
    else *(int32_t *)p = (int32_t)v;
}

static grpc_status_code set_one(const char *name, const Concert__V1__QueuePolicy *pol, Concert__V1__QueuePolicy **out,
                                cc_status *st) {
    cc_md md[] = {{"x-admin-key", KEY}};
    Concert__V1__SetQueuePolicyRequest req = CONCERT__V1__SET_QUEUE_POLICY_REQUEST__INIT;
    req.policy = (Concert__V1__QueuePolicy *)pol;
    char *names[] = {(char *)name};
    req.n_update_fields = 1;
    req.update_fields = names;
    return cc_client_unary(cli, "/concert.v1.AdminService/SetQueuePolicy", &req.base,
                           &concert__v1__queue_policy__descriptor, (ProtobufCMessage **)out, md, 1, 5000, st);
}

static Concert__V1__QueuePolicy *get_policy(const char *concert) {
    cc_md md[] = {{"x-admin-key", KEY}};
    Concert__V1__GetQueuePolicyRequest req = CONCERT__V1__GET_QUEUE_POLICY_REQUEST__INIT;
    req.concert_id = (char *)concert;
    Concert__V1__QueuePolicy *p = NULL;
    cc_status st;
    cr_assert_eq(cc_client_unary(cli, "/concert.v1.AdminService/GetQueuePolicy", &req.base,
                                 &concert__v1__queue_policy__descriptor, (ProtobufCMessage **)&p, md, 1, 5000, &st),
                 GRPC_STATUS_OK, "%s", st.message);
    return p;
}

/* The proto3 JSON name, written out here from the rule (protoc's ToJsonName) rather
 * than by the server's function; the Python test uses the real json_name. */
static void json_name(const char *name, char *out) {
    int up = 0;
    for (; *name; name++) {
        if (*name == '_') {
            up = 1;
            continue;
        }
        *out++ = up && *name >= 'a' && *name <= 'z' ? (char)(*name - 32) : *name;
        up = 0;
    }
    *out = '\0';
}

/* Every number field of QueuePolicy, also those added later: found by the descriptor. */
Test(update_fields, every_policy_field_in_both_spellings, .init = start, .fini = stop) {
    cr_assert_eq(th_admin_concert(cli, KEY, "pol"), GRPC_STATUS_OK);
    const ProtobufCMessageDescriptor *d = &concert__v1__queue_policy__descriptor;
    int tried = 0;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_INT64 && f->type != PROTOBUF_C_TYPE_INT32 && f->type != PROTOBUF_C_TYPE_BOOL)
            continue;
        /* Fields whose valid values depend on other fields or on the clock (a sale's
         * times, the adaptive bounds) have no valid neighbour to try here: their two
         * spellings are tested in test_room (policy_fields_in_both_spellings). */
        if (!strcmp(f->name, "prequeue_opens_at_unix_ms") || !strcmp(f->name, "sale_opens_at_unix_ms") ||
            !strcmp(f->name, "admit_rate_min") || !strcmp(f->name, "admit_rate_max"))
            continue;
        char camel[128];
        json_name(f->name, camel);
        const char *spellings[] = {f->name, camel};
        for (int sp = 0; sp < 2; sp++) {
            Concert__V1__QueuePolicy *before = get_policy("pol");
            int64_t v = get_num(&before->base, f);
            Concert__V1__QueuePolicy *after = NULL;
            cc_status st;
            grpc_status_code code = GRPC_STATUS_UNKNOWN;
            /* A value next to the current one (which is valid): one of the two is too. */
            for (int k = 0; k < 2 && code != GRPC_STATUS_OK; k++) {
                set_num(&before->base, f, f->type == PROTOBUF_C_TYPE_BOOL ? !v : k ? v - 1 : v + 1);
                code = set_one(spellings[sp], before, &after, &st);
                cr_expect(code == GRPC_STATUS_OK || strncmp(st.message, "update_fields", 13),
                          "'%s' must name the field: %s", spellings[sp], st.message);
            }
            cr_expect_eq(code, GRPC_STATUS_OK, "setting %s as '%s': %s", f->name, spellings[sp], st.message);
            if (code == GRPC_STATUS_OK) {
                Concert__V1__QueuePolicy *orig = get_policy("pol"); /* what the server kept */
                cr_expect_eq(get_num(&after->base, f), get_num(&before->base, f), "'%s' set %s", spellings[sp], f->name);
                for (unsigned j = 0; j < d->n_fields; j++)
                    if (j != i && d->fields[j].type != PROTOBUF_C_TYPE_STRING)
                        cr_expect_eq(get_num(&orig->base, &d->fields[j]), get_num(&after->base, &d->fields[j]));
                protobuf_c_message_free_unpacked(&orig->base, NULL);
                protobuf_c_message_free_unpacked(&after->base, NULL);
                tried++;
            }
            protobuf_c_message_free_unpacked(&before->base, NULL);
        }
    }
    cr_expect_geq(tried, 12, "six policy fields at least, each spelt two ways");
}

Test(update_fields, other_spellings_are_refused_naming_update_fields, .init = start, .fini = stop) {
    cr_assert_eq(th_admin_concert(cli, KEY, "pol"), GRPC_STATUS_OK);
    Concert__V1__QueuePolicy *p = get_policy("pol");
    const char *bad[] = {"MaxActive", "max-active", "maxactive", "max_Active", "policy.max_active", ""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cc_status st;
        cr_expect_eq(set_one(bad[i], p, NULL, &st), GRPC_STATUS_INVALID_ARGUMENT, "'%s'", bad[i]);
        cr_expect(!strncmp(st.message, "update_fields: ", 15), "'%s': %s", bad[i], st.message);
    }
    protobuf_c_message_free_unpacked(&p->base, NULL);
}
