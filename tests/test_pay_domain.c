/* The payment domain's pure parts (common/cc_pay): status mapping, reply decoding of
 * every shape the scripts answer (a payment, a refusal, an error reply, junk), the
 * debit/refund answers, seat lists, keys; and common/cc_smap, the map the consumer
 * (user -> payment in flight) and the server (payment -> watchers) keep. The scripts
 * themselves run against a real Redis in test_consumer and test_payment. */
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cc_pay.h"
#include "cc_smap.h"

/* ---- hand-built replies ---- */

static redisReply *r_str(const char *s) {
    redisReply *r = calloc(1, sizeof *r);
    r->type = REDIS_REPLY_STRING;
    r->str = strdup(s);
    r->len = strlen(s);
    return r;
}

static redisReply *r_int(long long v) {
    redisReply *r = calloc(1, sizeof *r);
    r->type = REDIS_REPLY_INTEGER;
    r->integer = v;
    return r;
}

static redisReply *r_nil(void) {
    redisReply *r = calloc(1, sizeof *r);
    r->type = REDIS_REPLY_NIL;
    return r;
}

static redisReply *r_err(const char *s) {
    redisReply *r = r_str(s);
    r->type = REDIS_REPLY_ERROR;
    return r;
}

static redisReply *r_arr(size_t n, redisReply **e) {
    redisReply *r = calloc(1, sizeof *r);
    r->type = REDIS_REPLY_ARRAY;
    r->elements = n;
    r->element = calloc(n ? n : 1, sizeof *r->element);
    memcpy(r->element, e, n * sizeof *e);
    return r;
}

/* pay_reply: {0, pid, rid, user, amount, status, reason, key, created, updated, new, sched, seats, paid} */
static redisReply *payment(const char *status, const char *reason, int is_new, int with_resv) {
    redisReply *e[14] = {r_int(0),         r_str("p1.c.0123"), r_str("r1.c.4567"), r_str("alice"), r_int(3000),
                         r_str(status),    r_str(reason),      r_str("k-1"),       r_int(1000),    r_int(2000),
                         r_int(is_new),    with_resv ? r_str("s1") : r_nil(), with_resv ? r_str("3,4,17") : r_nil(),
                         with_resv ? r_int(1999) : r_nil()};
    return r_arr(14, e);
}

Test(pay, decodes_a_payment) {
    redisReply *r = payment("COMPLETED", "", 0, 1);
    cc_pay_record p;
    cr_assert_eq(cc_pay_decode(r, &p, NULL, NULL), CC_PAY_OK);
    cr_expect_str_eq(p.pid, "p1.c.0123");
    cr_expect_str_eq(p.rid, "r1.c.4567");
    cr_expect_str_eq(p.user, "alice");
    cr_expect_eq(p.amount, 3000);
    cr_expect_eq(p.state, CC_PAY_COMPLETED);
    cr_expect_str_eq(p.key, "k-1");
    cr_expect_eq(p.created_ms, 1000);
    cr_expect_eq(p.updated_ms, 2000);
    cr_expect_str_eq(p.sched, "s1");
    cr_expect_eq(p.paid_ms, 1999);
    int32_t seats[8];
    cr_expect_eq(cc_pay_seats(p.seats, seats, 8), 3);
    cr_expect(seats[0] == 3 && seats[1] == 4 && seats[2] == 17);
    cr_expect_eq(cc_pay_seats(p.seats, seats, 2), 2, "bounded by the room given");
    Concert__V1__Payment m;
    cc_pay_to_api(&m, &p, "c");
    cr_expect_eq(m.status, CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_COMPLETED);
    cr_expect_str_eq(m.concert_id, "c");
    cr_expect_eq(m.amount, 3000);
    freeReplyObject(r);
    /* No reservation (nil): empty strings, not NULL. */
    r = payment("ABANDONED", "", 3, 0);
    cr_assert_eq(cc_pay_decode(r, &p, NULL, NULL), CC_PAY_OK);
    cr_expect_str_eq(p.sched, "");
    cr_expect_eq(cc_pay_seats(p.seats, seats, 8), 0);
    cr_expect_eq(p.is_new, 3);
    freeReplyObject(r);
}

Test(pay, every_status_and_its_api_face) {
    const char *names[] = {"SUBMITTING", "PENDING", "COMPLETED", "FAILED", "ABANDONED"};
    cc_pay_state st[] = {CC_PAY_SUBMITTING, CC_PAY_PENDING, CC_PAY_COMPLETED, CC_PAY_FAILED, CC_PAY_ABANDONED};
    Concert__V1__PaymentStatus api[] = {
        CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_UNCONFIRMED, CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_PENDING,
        CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_COMPLETED, CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_FAILED,
        CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_UNCONFIRMED};
    for (int i = 0; i < 5; i++) {
        cr_expect_eq(cc_pay_state_parse(names[i]), st[i], "%s", names[i]);
        cr_expect_eq(cc_pay_state_api(st[i]), api[i], "%s", names[i]);
        cr_expect_eq(cc_pay_state_terminal(st[i]), st[i] == CC_PAY_COMPLETED || st[i] == CC_PAY_FAILED);
    }
    cr_expect_eq(cc_pay_state_parse("PAID"), CC_PAY_UNKNOWN);
    cr_expect_eq(cc_pay_state_parse(NULL), CC_PAY_UNKNOWN);
}

Test(pay, refusals_errors_and_junk) {
    cc_pay_record p;
    int code = 0;
    const char *msg = NULL;
    redisReply *e[] = {r_int(7), r_str("payment_id: belongs to another user")};
    redisReply *r = r_arr(2, e);
    cr_expect_eq(cc_pay_decode(r, &p, &code, &msg), CC_PAY_REFUSED);
    cr_expect_eq(code, 7);
    cr_expect_str_eq(msg, "payment_id: belongs to another user");
    freeReplyObject(r);
    redisReply *e2[] = {r_int(99), r_str("odd")};
    r = r_arr(2, e2);
    cr_expect_eq(cc_pay_decode(r, &p, &code, &msg), CC_PAY_REFUSED);
    cr_expect_eq(code, 13, "an out-of-range code is INTERNAL");
    freeReplyObject(r);
    r = r_err("OOM command not allowed when used memory > 'maxmemory'.");
    cr_expect_eq(cc_pay_decode(r, &p, &code, &msg), CC_PAY_BAD);
    freeReplyObject(r);
    cr_expect_eq(cc_pay_decode(NULL, &p, &code, &msg), CC_PAY_BAD);
    /* A stale reply of another shape (the old consumer's 6-element HMGET) is not a payment. */
    redisReply *e3[] = {r_str("PENDING"), r_str("3000"), r_str("alice"), r_str("r1"), r_str(""), r_str("1")};
    r = r_arr(6, e3);
    cr_expect_eq(cc_pay_decode(r, &p, &code, &msg), CC_PAY_BAD);
    freeReplyObject(r);
    r = payment("PAID", "", 0, 1); /* unknown status */
    cr_expect_eq(cc_pay_decode(r, &p, &code, &msg), CC_PAY_BAD);
    freeReplyObject(r);
    r = r_str("DEBITED");
    cr_expect_eq(cc_pay_decode_debit(r), 1);
    cr_expect_eq(cc_pay_decode_refund(r), -1);
    freeReplyObject(r);
    r = r_str("INSUFFICIENT");
    cr_expect_eq(cc_pay_decode_debit(r), 0);
    freeReplyObject(r);
    r = r_str("NOT_DEBITED");
    cr_expect_eq(cc_pay_decode_refund(r), 0);
    cr_expect_eq(cc_pay_decode_debit(r), -1);
    freeReplyObject(r);
    r = r_err("BUSY Redis is busy running a script.");
    cr_expect_eq(cc_pay_decode_debit(r), -1);
    cr_expect_eq(cc_pay_decode_refund(r), -1);
    freeReplyObject(r);
}

Test(pay, keys_requests_and_scripts) {
    char prefix[80], tag[96];
    cr_assert_eq(cc_pay_concert_keys("show", prefix, sizeof prefix, tag, sizeof tag), 0);
    cr_expect_str_eq(prefix, "cc:{show}:");
    cr_expect_str_eq(tag, "cc:{show}:q:tok");
    char small[8];
    cr_expect_eq(cc_pay_concert_keys("show", small, sizeof small, tag, sizeof tag), -1, "too long");
    Concert__V1__PaymentRequested m = CONCERT__V1__PAYMENT_REQUESTED__INIT;
    m.payment_id = "p1.c.01";
    m.concert_id = "c";
    m.user_id = "u";
    m.amount = 5;
    cr_expect(cc_pay_request_valid(&m));
    m.amount = -1;
    cr_expect(!cc_pay_request_valid(&m), "negative amount");
    m.amount = 5;
    m.user_id = "";
    cr_expect(!cc_pay_request_valid(&m), "no user");
    cr_expect(!cc_pay_request_valid(NULL));
    /* Each executable registers its own scripts; each body carries the shared
     * helpers it calls (bk_lib + pay_lib for the concert-slot ones). */
    cc_redis_script *srv[4], *cons[4];
    cr_assert_eq(cc_pay_scripts_server(srv, 4), 3);
    cr_assert_eq(cc_pay_scripts_consumer(cons, 4), 4);
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(strlen(srv[i]->sha), 40);
        cr_expect(strstr(srv[i]->body, "local function pay_reply"), "%s has pay_reply", srv[i]->name);
    }
    cr_expect(strstr(cons[0]->body, "local function release") && strstr(cons[0]->body, "pay_reply"), "claim");
    cr_expect(!strstr(cons[1]->body, "pay_reply"), "debit needs no helper");
}

/* ---- cc_smap ---- */

static void count_each(const char *key, void *value, void *payload) {
    (*(int *)payload)++;
    cr_expect_eq(strtol(key + 1, NULL, 10), (long)(intptr_t)value, "%s", key);
}

Test(smap, put_get_del_grow) {
    cc_smap *m = cc_smap_new();
    char key[32];
    for (intptr_t i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "u%ld", (long)i);
        cr_assert_null(cc_smap_put(m, key, (void *)i), "new key");
    }
    cr_expect_eq(cc_smap_count(m), 5000);
    cr_expect_eq((intptr_t)cc_smap_put(m, "u7", (void *)7), 7, "replacing returns the old value");
    cr_expect_eq(cc_smap_count(m), 5000);
    for (intptr_t i = 0; i < 5000; i += 7) {
        snprintf(key, sizeof key, "u%ld", (long)i);
        cr_expect_eq((intptr_t)cc_smap_get(m, key), i);
    }
    cr_expect_null(cc_smap_get(m, "nobody"));
    int n = 0;
    cc_smap_each(m, count_each, &n);
    cr_expect_eq(n, 5000);
    for (intptr_t i = 0; i < 5000; i += 2) {
        snprintf(key, sizeof key, "u%ld", (long)i);
        cr_expect_eq((intptr_t)cc_smap_del(m, key), i);
    }
    cr_expect_null(cc_smap_del(m, "u0"), "gone already");
    cr_expect_eq(cc_smap_count(m), 2500);
    cr_expect_eq((intptr_t)cc_smap_get(m, "u4999"), 4999);
    cc_smap_free(m);
    cc_smap_free(NULL);
}
