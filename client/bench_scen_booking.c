/* bench_scen_booking: the reservation -> payment path through Kafka (the seed's "Kafka
 * reservation/payment" column).
 *
 * Setup (not measured), with the admin key: CreateConcert (the run's concert),
 * --schedules schedules of 100,000 seats each (100 ranges of 1,000), and a queue policy
 * that admits at once (admit_rate and max_active 100,000, long active/hold TTLs).
 *
 * Each virtual user loops: IssueToken with a fresh user id, GetQueueStatus every 5 ms
 * until ACTIVE, Charge its wallet (the "token renewal", needed because a COMPLETED
 * payment expires the token by design); then ReserveSeats of ONE unique seat (a global
 * counter) with `authorization: Bearer <token>`, Pay (a unique idempotency key), and a
 * WatchPayment stream until COMPLETED or FAILED. Every method's latency is in the
 * report (ReserveSeats and Pay separately); the scenario adds Pay -> COMPLETED (from
 * sending Pay until the COMPLETED message arrives), renewal time (IssueToken sent ->
 * ACTIVE -> Charge done), paid reservations/s and outcomes by kind.
 *
 * Open loop (--arrival-rate R): buyer k is due at start + k/R; an idle user takes the
 * next due buyer (not before its time), and "buyer due -> COMPLETED" counts from the
 * due time, so a system that falls behind shows it (no coordinated omission). */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "bench_scen.h"
#include "cc_client.h"
#include "cc_pb.h"
#include "concert/v1/admin.pb-c.h"
#include "concert/v1/booking.pb-c.h"
#include "concert/v1/payment.pb-c.h"
#include "concert/v1/queue.pb-c.h"
#include "concert/v1/wallet.pb-c.h"

#define SEATS_PER_SCHEDULE 100000
#define RANGES 100
#define SEAT_PRICE 100
#define CHARGE_AMOUNT 1000
#define POLL_NS 5000000u /* GetQueueStatus every 5 ms while WAITING */
#define PAY_TRIES 3

static const char *opt_admin_key = NULL;
static int64_t opt_schedules = 3;
static int64_t opt_arrival_rate = 0;

static const cc_opt opts[] = {
    {"admin-key", "CONCERT_ADMIN_KEY", CC_OPT_STR, &opt_admin_key, "KEY",
     "the server's admin key (x-admin-key), to create the concert, schedules and policy", 0, 0},
    {"schedules", NULL, CC_OPT_INT, &opt_schedules, "N",
     "schedules of 100,000 seats to create (default 3; each paid reservation takes one seat)", 1, 100},
    {"arrival-rate", NULL, CC_OPT_INT, &opt_arrival_rate, "R",
     "open loop: R new buyers per second on a fixed schedule (each one: token, charge, reserve, pay, watch); "
     "--concurrency is then the most buyers in flight (default 0: closed loop)",
     0, 1000000},
    {0},
};

enum { S_ISSUE, S_POLL, S_CHARGE, S_RESERVE, S_PAY, S_WATCH };

typedef struct {
    char concert[80];
    char run_id[12];
    int n_sched;
    int m_issue, m_status, m_charge, m_reserve, m_pay, m_watch;
    int64_t seats_total;
    atomic_llong seat_next;
    uint64_t win_start, win_end; /* the measured window (approximately the engine's) */
    pthread_mutex_t mu;
    bench_hist *pay_done, *renew, *flow;
    /* Open loop: buyer k is due at t0 + k / rate; a late start still counts from its due time. */
    double arrival_rate;
    uint64_t t0_ns;
    atomic_llong started, late_starts;
    atomic_llong completed, failed, completed_all, renewals, seats_out, watch_lost, pay_retries, reserve_failed,
        issue_failed, charge_failed, expired_seen, bad_replies;
    char last_failure[160];
} bk_state;

typedef struct {
    int state;
    uint32_t gen;
    int pay_tries;
    int outcome; /* WatchPayment: last PaymentStatus seen */
    uint64_t t_issue, t_pay, next_poll, t_due;
    char uid[64];
    char token[320];
    char auth[340];
    char resv[80];
    char payment[80];
} bk_user;

static int in_window(const bk_state *s, uint64_t t) { return t >= s->win_start && t < s->win_end; }

static int send_msg(bench_user *u, int method, const ProtobufCMessage *m, int auth, int stream) {
    bk_user *b = bench_user_data(u);
    if (auth && bench_user_metadata(u, "authorization", b->auth) < 0) return -1;
    grpc_slice sl = bench_pack(m);
    int rc = stream ? bench_user_stream(u, method, sl) : bench_user_unary(u, method, sl);
    grpc_slice_unref(sl);
    return rc;
}

static void fresh_user(bk_state *s, bench_user *u, bk_user *b) {
    b->gen++;
    b->state = S_ISSUE;
    b->token[0] = 0;
    b->t_due = 0; /* the next buyer */
    snprintf(b->uid, sizeof b->uid, "bk-%s-%" PRIu64 "-%u", s->run_id, bench_user_id(u), b->gen);
}

/* Open loop: the user takes the next buyer of the schedule (buyer k is due at t0 + k / rate)
 * and sleeps until it is due; a buyer taken after its time (every user was busy) is late,
 * and its latency still counts from its due time. */
static void take_arrival(bk_state *s, bk_user *b) {
    long long k = atomic_fetch_add(&s->started, 1);
    b->t_due = s->t0_ns + (uint64_t)((double)k * 1e9 / s->arrival_rate);
    uint64_t now = bench_now_ns();
    if (now > b->t_due + 10000000u) atomic_fetch_add(&s->late_starts, 1); /* no free user for 10 ms */
}

static int bk_next(bench_user *u) {
    bk_state *s = bench_user_payload(u);
    bk_user *b = bench_user_data(u);
    if (!b->uid[0]) fresh_user(s, u, b);
    switch (b->state) {
    case S_ISSUE: {
        if (!b->t_due) {
            if (s->arrival_rate > 0) take_arrival(s, b);
            else b->t_due = bench_now_ns();
        }
        if (bench_now_ns() < b->t_due) {
            bench_user_wake_at(u, b->t_due);
            return 1;
        }
        b->t_issue = bench_now_ns();
        Concert__V1__IssueTokenRequest r;
        concert__v1__issue_token_request__init(&r);
        r.user_id = b->uid;
        r.concert_id = s->concert;
        return send_msg(u, s->m_issue, &r.base, 0, 0);
    }
    case S_POLL: {
        if (bench_now_ns() < b->next_poll) {
            bench_user_wake_at(u, b->next_poll);
            return 1;
        }
        Concert__V1__GetQueueStatusRequest r;
        concert__v1__get_queue_status_request__init(&r);
        r.token = b->token;
        return send_msg(u, s->m_status, &r.base, 0, 0);
    }
    case S_CHARGE: {
        Concert__V1__ChargeRequest r;
        concert__v1__charge_request__init(&r);
        r.user_id = b->uid;
        r.amount = CHARGE_AMOUNT;
        r.idempotency_key = b->uid;
        return send_msg(u, s->m_charge, &r.base, 0, 0);
    }
    case S_RESERVE: {
        long long k = atomic_fetch_add(&s->seat_next, 1);
        if (k >= s->seats_total) {
            atomic_fetch_add(&s->seats_out, 1);
            return -1; /* every seat taken: this user is done */
        }
        char sched[128];
        snprintf(sched, sizeof sched, "%s-s%lld", s->concert, k / SEATS_PER_SCHEDULE);
        int32_t seat = (int32_t)(k % SEATS_PER_SCHEDULE) + 1;
        Concert__V1__ReserveSeatsRequest r;
        concert__v1__reserve_seats_request__init(&r);
        r.schedule_id = sched;
        r.n_seat_numbers = 1;
        r.seat_numbers = &seat;
        return send_msg(u, s->m_reserve, &r.base, 1, 0);
    }
    case S_PAY: {
        char key[256];
        snprintf(key, sizeof key, "%s-%s", b->uid, b->resv);
        Concert__V1__PayRequest r;
        concert__v1__pay_request__init(&r);
        r.reservation_id = b->resv;
        r.idempotency_key = key;
        b->t_pay = bench_now_ns();
        return send_msg(u, s->m_pay, &r.base, 1, 0);
    }
    case S_WATCH: {
        Concert__V1__GetPaymentRequest r;
        concert__v1__get_payment_request__init(&r);
        r.payment_id = b->payment;
        b->outcome = 0;
        return send_msg(u, s->m_watch, &r.base, 1, 1);
    }
    }
    return -1;
}

static void record(bk_state *s, bench_hist *h, uint64_t ns) {
    pthread_mutex_lock(&s->mu);
    bench_hist_record(h, ns);
    pthread_mutex_unlock(&s->mu);
}

static void became_active(bk_state *s, bk_user *b) {
    snprintf(b->auth, sizeof b->auth, "Bearer %s", b->token);
    b->state = S_CHARGE;
}

static void payment_final(bench_user *u, const Concert__V1__Payment *p) {
    bk_state *s = bench_user_payload(u);
    bk_user *b = bench_user_data(u);
    uint64_t now = bench_now_ns();
    b->outcome = (int)p->status;
    if (p->status == CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_COMPLETED) {
        atomic_fetch_add(&s->completed_all, 1);
        if (in_window(s, now)) {
            atomic_fetch_add(&s->completed, 1);
            record(s, s->pay_done, now - b->t_pay);
            if (b->t_due) record(s, s->flow, now - b->t_due);
        }
    } else if (p->status == CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_FAILED) {
        if (in_window(s, now)) atomic_fetch_add(&s->failed, 1);
        pthread_mutex_lock(&s->mu);
        snprintf(s->last_failure, sizeof s->last_failure, "%s", p->reason ? p->reason : "");
        pthread_mutex_unlock(&s->mu);
    }
}

static void bk_unary(bench_user *u, int method, grpc_status_code code, grpc_byte_buffer *resp) {
    bk_state *s = bench_user_payload(u);
    bk_user *b = bench_user_data(u);
    uint64_t now = bench_now_ns();
    if (method == s->m_issue || method == s->m_status) {
        if (code != GRPC_STATUS_OK) {
            atomic_fetch_add(&s->issue_failed, 1);
            fresh_user(s, u, b);
            return;
        }
        Concert__V1__QueueStatus *st = (void *)cc_pb_unpack(&concert__v1__queue_status__descriptor, resp);
        if (!st) {
            atomic_fetch_add(&s->bad_replies, 1);
            fresh_user(s, u, b);
            return;
        }
        if (method == s->m_issue && st->token && *st->token)
            snprintf(b->token, sizeof b->token, "%s", st->token);
        if (!b->token[0]) {
            fresh_user(s, u, b);
        } else if (st->state == CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE) {
            became_active(s, b);
        } else if (st->state == CONCERT__V1__QUEUE_STATE__QUEUE_STATE_EXPIRED) {
            atomic_fetch_add(&s->expired_seen, 1);
            fresh_user(s, u, b);
        } else {
            b->state = S_POLL;
            b->next_poll = now + POLL_NS;
        }
        protobuf_c_message_free_unpacked(&st->base, NULL);
    } else if (method == s->m_charge) {
        if (code != GRPC_STATUS_OK) {
            atomic_fetch_add(&s->charge_failed, 1);
            return; /* same key again: idempotent */
        }
        atomic_fetch_add(&s->renewals, 1);
        if (in_window(s, now)) record(s, s->renew, now - b->t_issue);
        b->state = S_RESERVE;
    } else if (method == s->m_reserve) {
        if (code == GRPC_STATUS_UNAUTHENTICATED || code == GRPC_STATUS_PERMISSION_DENIED) {
            atomic_fetch_add(&s->reserve_failed, 1);
            fresh_user(s, u, b);
            return;
        }
        if (code != GRPC_STATUS_OK) {
            atomic_fetch_add(&s->reserve_failed, 1);
            return; /* next seat */
        }
        Concert__V1__Reservation *r = (void *)cc_pb_unpack(&concert__v1__reservation__descriptor, resp);
        if (!r || !r->reservation_id) {
            atomic_fetch_add(&s->bad_replies, 1);
            if (r) protobuf_c_message_free_unpacked(&r->base, NULL);
            return;
        }
        snprintf(b->resv, sizeof b->resv, "%s", r->reservation_id);
        protobuf_c_message_free_unpacked(&r->base, NULL);
        b->state = S_PAY;
        b->pay_tries = 0;
    } else if (method == s->m_pay) {
        if (code != GRPC_STATUS_OK) {
            /* UNAVAILABLE & co: retry with the same key (never pays twice); give up after
             * a few and start over with a fresh user. */
            if (++b->pay_tries >= PAY_TRIES) fresh_user(s, u, b);
            else atomic_fetch_add(&s->pay_retries, 1);
            return;
        }
        Concert__V1__Payment *p = (void *)cc_pb_unpack(&concert__v1__payment__descriptor, resp);
        if (!p || !p->payment_id) {
            atomic_fetch_add(&s->bad_replies, 1);
            if (p) protobuf_c_message_free_unpacked(&p->base, NULL);
            fresh_user(s, u, b);
            return;
        }
        snprintf(b->payment, sizeof b->payment, "%s", p->payment_id);
        if (p->status == CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_COMPLETED ||
            p->status == CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_FAILED) {
            payment_final(u, p);
            fresh_user(s, u, b); /* token expired (COMPLETED) or start over */
        } else {
            b->state = S_WATCH;
        }
        protobuf_c_message_free_unpacked(&p->base, NULL);
    }
}

static void bk_msg(bench_user *u, int method, grpc_byte_buffer *msg) {
    bk_user *b = bench_user_data(u);
    bk_state *s = bench_user_payload(u);
    if (b->outcome == CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_COMPLETED ||
        b->outcome == CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_FAILED)
        return;
    Concert__V1__Payment *p = (void *)cc_pb_unpack(&concert__v1__payment__descriptor, msg);
    if (!p) {
        atomic_fetch_add(&s->bad_replies, 1);
        return;
    }
    if (p->status == CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_COMPLETED ||
        p->status == CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_FAILED)
        payment_final(u, p);
    else
        b->outcome = (int)p->status;
    protobuf_c_message_free_unpacked(&p->base, NULL);
}

static void bk_end(bench_user *u, int method, grpc_status_code code) {
    bk_state *s = bench_user_payload(u);
    bk_user *b = bench_user_data(u);
    if (b->outcome != CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_COMPLETED &&
        b->outcome != CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_FAILED)
        atomic_fetch_add(&s->watch_lost, 1);
    /* COMPLETED expires the token by design: the next round is a fresh user either way. */
    fresh_user(s, u, b);
}

static const bench_user_ops booking_ops = {.next = bk_next, .unary_done = bk_unary, .stream_msg = bk_msg,
                                           .stream_end = bk_end};

/* ---- setup (blocking, not measured) ---- */

static int admin_call(cc_client *c, const char *key, const char *method, const ProtobufCMessage *req, int ok_exists) {
    cc_md md = {"x-admin-key", key};
    cc_status st;
    grpc_status_code code = cc_client_unary(c, method, req, NULL, NULL, &md, 1, 30000, &st);
    if (code == GRPC_STATUS_OK || (ok_exists && code == GRPC_STATUS_ALREADY_EXISTS)) return 0;
    fprintf(stderr, "concert-bench booking: %s: %s %s\n", method, cc_status_name(code), st.message);
    return -1;
}

static int setup(const bench_opts *o, bk_state *s, const char *key) {
    char err[512];
    cc_client *c = cc_client_open_tls(o->server, &o->tls, err, sizeof err);
    if (!c) {
        fprintf(stderr, "concert-bench booking: cannot open a channel to %s: %s\n", o->server, err);
        return -1;
    }
    int rc = 0;
    Concert__V1__CreateConcertRequest cr;
    concert__v1__create_concert_request__init(&cr);
    cr.concert_id = s->concert;
    cr.name = "concert-bench booking";
    rc = admin_call(c, key, "/concert.v1.AdminService/CreateConcert", &cr.base, 1);
    for (int i = 0; rc == 0 && i < s->n_sched; i++) {
        char sched[128];
        snprintf(sched, sizeof sched, "%s-s%d", s->concert, i);
        Concert__V1__SeatRange ranges[RANGES], *rp[RANGES];
        for (int r = 0; r < RANGES; r++) {
            concert__v1__seat_range__init(&ranges[r]);
            ranges[r].first_seat = r * (SEATS_PER_SCHEDULE / RANGES) + 1;
            ranges[r].last_seat = (r + 1) * (SEATS_PER_SCHEDULE / RANGES);
            ranges[r].price = SEAT_PRICE;
            rp[r] = &ranges[r];
        }
        Concert__V1__CreateScheduleRequest sr;
        concert__v1__create_schedule_request__init(&sr);
        sr.concert_id = s->concert;
        sr.schedule_id = sched;
        sr.starts_at_unix_ms = 4102444800000LL; /* 2100-01-01 */
        sr.n_seats = RANGES;
        sr.seats = rp;
        rc = admin_call(c, key, "/concert.v1.AdminService/CreateSchedule", &sr.base, 0);
    }
    if (rc == 0) {
        Concert__V1__QueuePolicy p;
        concert__v1__queue_policy__init(&p);
        p.concert_id = s->concert;
        p.admit_rate = 100000;
        p.max_active = 100000;
        p.active_ttl_ms = 3600000;
        p.hold_ttl_ms = 3600000;
        char *fields[] = {"admit_rate", "max_active", "active_ttl_ms", "hold_ttl_ms"};
        Concert__V1__SetQueuePolicyRequest pr;
        concert__v1__set_queue_policy_request__init(&pr);
        pr.policy = &p;
        pr.n_update_fields = 4;
        pr.update_fields = fields;
        rc = admin_call(c, key, "/concert.v1.AdminService/SetQueuePolicy", &pr.base, 0);
    }
    cc_client_close(c);
    return rc;
}

static void hist_kv(bench_result *res, const char *what, const bench_hist *h) {
    char key[64];
    snprintf(key, sizeof key, "%s p50 ms", what);
    bench_result_kv_num(res, key, (double)bench_hist_percentile(h, 50) / 1e6, "ms");
    snprintf(key, sizeof key, "%s p90 ms", what);
    bench_result_kv_num(res, key, (double)bench_hist_percentile(h, 90) / 1e6, "ms");
    snprintf(key, sizeof key, "%s p99 ms", what);
    bench_result_kv_num(res, key, (double)bench_hist_percentile(h, 99) / 1e6, "ms");
    snprintf(key, sizeof key, "%s max ms", what);
    bench_result_kv_num(res, key, (double)h->max / 1e6, "ms");
}

static int booking_run(bench_ctx *c) {
    const char *key = opt_admin_key && *opt_admin_key ? opt_admin_key : getenv("CONCERT_ADMIN_KEY");
    if (!key || !*key) {
        fprintf(stderr, "concert-bench booking: needs --admin-key KEY (or CONCERT_ADMIN_KEY) to create its concert\n");
        return -1;
    }
    bk_state *s = calloc(1, sizeof *s);
    if (!s) abort();
    snprintf(s->concert, sizeof s->concert, "%s", c->o->concert);
    unsigned char rb[4] = {0};
    if (getrandom(rb, sizeof rb, 0) != (ssize_t)sizeof rb) rb[0] = (unsigned char)rand();
    snprintf(s->run_id, sizeof s->run_id, "%02x%02x%02x%02x", rb[0], rb[1], rb[2], rb[3]);
    s->n_sched = (int)opt_schedules;
    s->seats_total = (int64_t)s->n_sched * SEATS_PER_SCHEDULE;
    pthread_mutex_init(&s->mu, NULL);
    s->pay_done = malloc(sizeof *s->pay_done);
    s->renew = malloc(sizeof *s->renew);
    s->flow = malloc(sizeof *s->flow);
    if (!s->pay_done || !s->renew || !s->flow) abort();
    bench_hist_clear(s->pay_done);
    bench_hist_clear(s->renew);
    bench_hist_clear(s->flow);
    s->arrival_rate = (double)opt_arrival_rate;
    int rc = -1;
    if (setup(c->o, s, key) < 0) goto out;

    bench_engine *e = c->engine;
    s->m_issue = bench_engine_method(e, "/concert.v1.QueueService/IssueToken", "IssueToken", 0);
    s->m_status = bench_engine_method(e, "/concert.v1.QueueService/GetQueueStatus", "GetQueueStatus", 0);
    s->m_charge = bench_engine_method(e, "/concert.v1.WalletService/Charge", "Charge", 0);
    s->m_reserve = bench_engine_method(e, "/concert.v1.BookingService/ReserveSeats", "ReserveSeats", 0);
    s->m_pay = bench_engine_method(e, "/concert.v1.PaymentService/Pay", "Pay", 0);
    s->m_watch = bench_engine_method(e, "/concert.v1.PaymentService/WatchPayment", "WatchPayment", 1);

    bench_phase ph = bench_phase_from_opts(c->o, "booking", 64, 2, 10);
    ph.ops = &booking_ops;
    ph.payload = s;
    ph.user_data_size = sizeof(bk_user);
    if (s->arrival_rate > 0 && c->o->concurrency < 0) ph.users = ph.concurrency = 4096;
    s->t0_ns = bench_now_ns();
    s->win_start = bench_now_ns() + (uint64_t)ph.warmup_s * 1000000000u;
    s->win_end = s->win_start + (uint64_t)ph.duration_s * 1000000000u;
    bench_result *res = bench_engine_run(e, &ph, c->procs);
    if (!res) goto out;
    double el = res->elapsed_s > 0 ? res->elapsed_s : ph.duration_s;
    long long done = atomic_load(&s->completed), failed = atomic_load(&s->failed);
    double paid = (double)done / el, p99 = (double)bench_hist_percentile(s->pay_done, 99) / 1e6;
    bench_result_kv_num(res, "paid reservations/s", paid, "/s");
    bench_result_kv_num(res, "payments COMPLETED (measured window)", (double)done, "");
    bench_result_kv_num(res, "payments FAILED (measured window)", (double)failed, "");
    hist_kv(res, "Pay -> COMPLETED", s->pay_done);
    hist_kv(res, "token renewal (IssueToken -> ACTIVE -> Charge)", s->renew);
    hist_kv(res, "buyer due -> COMPLETED", s->flow);
    if (s->arrival_rate > 0) {
        bench_result_kv_num(res, "arrival rate (buyers/s, open loop)", s->arrival_rate, "/s");
        bench_result_kv_num(res, "buyers started (whole run)", (double)atomic_load(&s->started), "");
        bench_result_kv_num(res, "buyers started more than 10 ms late (no free user)",
                            (double)atomic_load(&s->late_starts), "");
    }
    bench_result_kv_num(res, "token renewals (whole run)", (double)atomic_load(&s->renewals), "");
    bench_result_kv_num(res, "payments COMPLETED (whole run incl. warmup)", (double)atomic_load(&s->completed_all), "");
    bench_result_kv_num(res, "seats reserved (counter)", (double)atomic_load(&s->seat_next), "");
    bench_result_kv_num(res, "ReserveSeats failures (user moved on)", (double)atomic_load(&s->reserve_failed), "");
    bench_result_kv_num(res, "Pay retries (same key)", (double)atomic_load(&s->pay_retries), "");
    bench_result_kv_num(res, "WatchPayment ended without an outcome", (double)atomic_load(&s->watch_lost), "");
    bench_result_kv_num(res, "IssueToken/GetQueueStatus failures", (double)atomic_load(&s->issue_failed), "");
    bench_result_kv_num(res, "Charge failures", (double)atomic_load(&s->charge_failed), "");
    if (atomic_load(&s->seats_out))
        bench_result_kv_num(res, "users stopped: every seat taken (raise --schedules)",
                            (double)atomic_load(&s->seats_out), "");
    if (atomic_load(&s->bad_replies))
        bench_result_kv_num(res, "undecodable responses", (double)atomic_load(&s->bad_replies), "");
    if (s->last_failure[0]) bench_result_kv_text(res, "a FAILED payment's reason", "%s", s->last_failure);
    int met = paid >= 5000 && p99 < 100 && failed == 0;
    bench_result_kv_text(res, "target: >= 5,000 paid/s, p99 Pay->COMPLETED < 100 ms",
                         "%s (%.0f paid/s, p99 %.2f ms, %lld FAILED)", met ? "met" : "MISSED", paid, p99, failed);
    bench_result_kv_text(res, "concert", "%s", s->concert);
    bench_report_add(c->report, res);
    rc = 0;
out:
    pthread_mutex_destroy(&s->mu);
    free(s->pay_done);
    free(s->renew);
    free(s->flow);
    free(s);
    return rc;
}

const bench_scenario bench_scen_booking = {
    "booking",
    "ReserveSeats, Pay, WatchPayment until COMPLETED: the Kafka reservation/payment path",
    "Setup (not measured; needs --admin-key or CONCERT_ADMIN_KEY): creates the run's\n"
    "concert, --schedules schedules of 100,000 seats and a queue policy that admits at\n"
    "once (admit_rate and max_active 100,000, active and hold TTL 1 h).\n"
    "Each virtual user (closed loop, --concurrency, default 64; or open loop with\n"
    "--arrival-rate R: a new buyer every 1/R s, --concurrency the most in flight, default\n"
    "4096, latency also from each buyer's due time) loops: IssueToken with a\n"
    "fresh user id, GetQueueStatus every 5 ms until ACTIVE, Charge its wallet; then\n"
    "ReserveSeats of one unique seat with 'authorization: Bearer <token>', Pay with a\n"
    "unique idempotency key, and a WatchPayment stream until COMPLETED or FAILED. A\n"
    "COMPLETED payment expires the token by design, so every paid reservation costs a\n"
    "token renewal (IssueToken -> ACTIVE -> Charge); its time is reported separately.\n"
    "Reports every method's latency (ReserveSeats and Pay separately), Pay -> COMPLETED\n"
    "(from sending Pay until the COMPLETED message), paid reservations/s and outcomes.\n"
    "The server needs --kafka and --admin-key, and a payment-consumer must be running.\n"
    "Target (docs/PERFORMANCE.md): >= 5,000 paid reservations/s, p99 Pay->COMPLETED < 100 ms.\n",
    opts,
    booking_run,
};
