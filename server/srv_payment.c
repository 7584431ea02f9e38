/* srv_payment: PaymentService (Pay, GetPayment, WatchPayment).
 *
 * Pay: pay_begin.lua records the payment as SUBMITTING (or finds the one this
 * idempotency key made), the request goes to Kafka through the idempotent producer,
 * and only Kafka's acknowledgement (acks=all) turns it PENDING and answers the call.
 * If Kafka does not acknowledge before the call's deadline (less a margin), the call
 * answers UNAVAILABLE; the record stays SUBMITTING (shown as UNCONFIRMED) and a retry
 * with the same key sends the same payment id again, which payment-consumer applies
 * at most once. Nothing moves money here: payment-consumer debits and settles.
 *
 * WatchPayment: watchers are refreshed every --payment-watch-interval-ms with one
 * pay_get call per concert per tick for all of that concert's watched payments. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cc_kafka.h"
#include "cc_log.h"
#include "concert/v1/events.pb-c.h"
#include "concert/v1/payment.pb-c.h"
#include "srv_app.h"
#include "srv_valid.h"

#define WATCH_BATCH 256
#define DEADLINE_MARGIN_MS 150

extern const unsigned char lua_bk_lib[], lua_pay_begin[], lua_pay_accepted[], lua_pay_get[];
extern const size_t lua_bk_lib_len, lua_pay_begin_len, lua_pay_accepted_len, lua_pay_get_len;
static cc_redis_script s_begin, s_accepted, s_get;

typedef struct pctx {
    srv_call *call;
    srv_app *app;
    char token[SRV_TOKEN_MAX + 1];
    char concert[SRV_MAX_ID + 1];
    char prefix[SRV_MAX_ID + 8];
    char tag_key[SRV_MAX_ID + 16];
    char id[SRV_TOKEN_MAX + 1]; /* payment id */
    int refs;                   /* call side + Kafka side */
    int answered;
    uv_timer_t timer;
    int timer_live;
} pctx;

static pctx *pctx_new(srv_call *call) {
    pctx *p = calloc(1, sizeof *p);
    if (!p) abort();
    p->call = call;
    p->app = srv_call_app(call);
    p->refs = 1;
    return p;
}

static void on_timer_closed(uv_handle_t *h) { free(h->data); }

static void pctx_unref(pctx *p) {
    if (--p->refs > 0) return;
    if (p->timer_live) {
        p->timer_live = 0;
        p->timer.data = p;
        uv_close((uv_handle_t *)&p->timer, on_timer_closed);
        return;
    }
    free(p);
}

static int auth(pctx *p, const char *id_concert) {
    if (srv_auth_token(p->call, p->token, p->concert) < 0) return -1;
    if (strcmp(id_concert, p->concert) != 0) {
        srv_call_finish(p->call, GRPC_STATUS_PERMISSION_DENIED, "the token is for another concert");
        return -1;
    }
    snprintf(p->prefix, sizeof p->prefix, "cc:{%s}:", p->concert);
    snprintf(p->tag_key, sizeof p->tag_key, "cc:{%s}:q:tok", p->concert);
    return 0;
}

static Concert__V1__PaymentStatus status_of(const char *s) {
    if (!strcmp(s, "PENDING")) return CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_PENDING;
    if (!strcmp(s, "COMPLETED")) return CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_COMPLETED;
    if (!strcmp(s, "FAILED")) return CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_FAILED;
    if (!strcmp(s, "SUBMITTING")) return CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_UNCONFIRMED;
    return CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_UNSPECIFIED;
}

/* pay_reply: {0, pid, rid, user, amount, status, reason, key, created, updated, new} */
static void fill_payment(Concert__V1__Payment *m, const redisReply *r, char *concert) {
    concert__v1__payment__init(m);
    m->payment_id = (char *)srv_str_at(r, 1);
    m->reservation_id = (char *)srv_str_at(r, 2);
    m->concert_id = concert;
    m->amount = srv_int_at(r, 4);
    m->status = status_of(srv_str_at(r, 5));
    m->reason = (char *)srv_str_at(r, 6);
    m->idempotency_key = (char *)srv_str_at(r, 7);
    m->created_at_unix_ms = srv_int_at(r, 8);
    m->updated_at_unix_ms = srv_int_at(r, 9);
}

static void answer_unavailable(pctx *p, const char *why) {
    if (p->answered) return;
    p->answered = 1;
    srv_call_finish(p->call, GRPC_STATUS_UNAVAILABLE,
                    "kafka did not acknowledge the payment (%s); retry Pay with the same idempotency_key", why);
}

/* ---- Pay ---- */

static void on_accepted(redisReply *r, const char *err, void *arg) {
    pctx *p = arg;
    if (!p->answered) {
        p->answered = 1;
        if (srv_script_ok(p->call, r, err)) {
            Concert__V1__Payment m;
            fill_payment(&m, r, p->concert);
            srv_call_reply(p->call, &m.base);
        }
    } else if (!r || r->type == REDIS_REPLY_ERROR) {
        CC_WARN("payment_accept_unrecorded", "payment=%s reason=\"%s\"", p->id, err ? err : r->str);
    }
    pctx_unref(p);
}

static void on_delivered(const char *err, void *arg) {
    pctx *p = arg;
    if (err) {
        CC_WARN("payment_not_delivered", "payment=%s reason=\"%s\"", p->id, err);
        answer_unavailable(p, err);
        pctx_unref(p);
        return;
    }
    /* Durable: SUBMITTING -> PENDING, also when the call has already given up. */
    const char *args[] = {p->tag_key, p->prefix, p->id};
    if (cc_redis_eval(p->app->redis, &s_accepted, on_accepted, p, 1, 3, args, NULL) < 0) {
        if (!p->answered) {
            p->answered = 1;
            srv_fail_no_redis(p->call);
        }
        pctx_unref(p);
    }
}

static void on_pay_timer(uv_timer_t *t) {
    pctx *p = t->data;
    answer_unavailable(p, "timed out");
}

static void on_begun(redisReply *r, const char *err, void *arg) {
    pctx *p = arg;
    if (!srv_script_ok(p->call, r, err)) {
        p->answered = 1;
        pctx_unref(p);
        return;
    }
    const char *status = srv_str_at(r, 5);
    snprintf(p->id, sizeof p->id, "%s", srv_str_at(r, 1));
    if (strcmp(status, "SUBMITTING") != 0) {
        /* The key's payment already reached Kafka: its real state, nothing resent. */
        Concert__V1__Payment m;
        fill_payment(&m, r, p->concert);
        p->answered = 1;
        srv_call_reply(p->call, &m.base);
        pctx_unref(p);
        return;
    }
    Concert__V1__PaymentRequested ev;
    concert__v1__payment_requested__init(&ev);
    ev.payment_id = p->id;
    ev.reservation_id = (char *)srv_str_at(r, 2);
    ev.concert_id = p->concert;
    ev.user_id = (char *)srv_str_at(r, 3);
    ev.amount = srv_int_at(r, 4);
    ev.idempotency_key = (char *)srv_str_at(r, 7);
    ev.requested_at_unix_ms = srv_int_at(r, 8);
    size_t len = protobuf_c_message_get_packed_size(&ev.base);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) abort();
    protobuf_c_message_pack(&ev.base, buf);
    CC_DEBUG("payment_submitting", "payment=%s new=%lld", p->id, (long long)srv_int_at(r, 10));
    /* Answer UNAVAILABLE before the caller's deadline if Kafka is slower. */
    uint64_t dl = srv_call_deadline_ms(p->call), now = uv_now(p->app->loop);
    uint64_t wait = (uint64_t)p->app->cfg.kafka_timeout_ms;
    if (dl != UINT64_MAX) wait = dl > now + DEADLINE_MARGIN_MS ? dl - now - DEADLINE_MARGIN_MS : 0;
    uv_timer_init(p->app->loop, &p->timer);
    p->timer.data = p;
    p->timer_live = 1;
    uv_timer_start(&p->timer, on_pay_timer, wait, 0);
    p->refs++;
    if (cc_kafka_produce(p->app->kafka, CC_TOPIC_PAYMENT_REQUESTS, ev.user_id, strlen(ev.user_id), buf, len,
                         on_delivered, p) < 0) {
        p->refs--;
        answer_unavailable(p, "producer queue full");
    }
    free(buf);
    pctx_unref(p);
}

void srv_payment_pay(srv_call *call) {
    const Concert__V1__PayRequest *req = (const void *)srv_call_request(call);
    char concert[SRV_MAX_ID + 1];
    size_t len = strlen(req->reservation_id);
    if (len == 0) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "reservation_id: required");
        return;
    }
    if (srv_id_parse(req->reservation_id, len, "r1", concert) < 0) {
        srv_call_finish(call, GRPC_STATUS_NOT_FOUND, "reservation_id: not found");
        return;
    }
    if (!srv_valid_key(req->idempotency_key)) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
                        "idempotency_key: must be 1..128 characters of [A-Za-z0-9_.:-]");
        return;
    }
    pctx *p = pctx_new(call);
    if (auth(p, concert) < 0) {
        free(p);
        return;
    }
    if (!p->app->kafka) {
        srv_call_finish(call, GRPC_STATUS_UNAVAILABLE, "payments are disabled on this server (no --kafka)");
        free(p);
        return;
    }
    char pid[SRV_TOKEN_MAX + 1];
    srv_id_new(pid, "p1", p->concert);
    const char *args[] = {p->tag_key, p->prefix, p->token, req->reservation_id, req->idempotency_key, pid};
    if (cc_redis_eval(p->app->redis, &s_begin, on_begun, p, 1, 6, args, NULL) < 0) {
        srv_fail_no_redis(call);
        free(p);
    }
}

/* ---- GetPayment ---- */

static int take_payment_id(srv_call *call, const char *id, char *concert) {
    size_t len = strlen(id);
    if (len == 0) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "payment_id: required");
        return -1;
    }
    if (srv_id_parse(id, len, "p1", concert) < 0) {
        srv_call_finish(call, GRPC_STATUS_NOT_FOUND, "payment_id: not found");
        return -1;
    }
    return 0;
}

static void on_get(redisReply *r, const char *err, void *arg) {
    pctx *p = arg;
    if (srv_script_ok(p->call, r, err)) {
        Concert__V1__Payment m;
        fill_payment(&m, r, p->concert);
        srv_call_reply(p->call, &m.base);
    }
    free(p);
}

void srv_payment_get(srv_call *call) {
    const Concert__V1__GetPaymentRequest *req = (const void *)srv_call_request(call);
    char concert[SRV_MAX_ID + 1];
    if (take_payment_id(call, req->payment_id, concert) < 0) return;
    pctx *p = pctx_new(call);
    if (auth(p, concert) < 0) {
        free(p);
        return;
    }
    const char *args[] = {p->tag_key, p->prefix, p->token, req->payment_id};
    if (cc_redis_eval(p->app->redis, &s_get, on_get, p, 1, 4, args, NULL) < 0) {
        srv_fail_no_redis(call);
        free(p);
    }
}

/* ---- WatchPayment ---- */

typedef struct pwatch {
    pctx base;
    Concert__V1__PaymentStatus last;
    int dead, inflight;
    struct pwatch *prev, *next;
} pwatch;

static pwatch *watchers;
static uv_timer_t watch_timer;

/* Not inlined, like watcher_unref in srv_queue.c: GCC 12 -O3 false use-after-free. */
__attribute__((noinline)) static void pwatch_unref(pwatch *w) {
    if (--w->base.refs == 0) free(w);
}

static void pwatch_end(pwatch *w, grpc_status_code code, const char *msg) {
    if (w->dead) return;
    w->dead = 1;
    if (w->prev) w->prev->next = w->next; else watchers = w->next;
    if (w->next) w->next->prev = w->prev;
    srv_call_set_data(w->base.call, NULL);
    srv_call_finish(w->base.call, code, "%s", msg);
    pwatch_unref(w);
}

/* Sends the payment if its status changed; ends the stream when terminal. */
static void pwatch_send(pwatch *w, const redisReply *full) {
    Concert__V1__Payment m;
    fill_payment(&m, full, w->base.concert);
    if (m.status == w->last) return;
    w->last = m.status;
    srv_call_send(w->base.call, &m.base);
    if (m.status == CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_COMPLETED ||
        m.status == CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_FAILED)
        pwatch_end(w, GRPC_STATUS_OK, "");
}

static void on_watch_get(redisReply *r, const char *err, void *arg) {
    pwatch *w = arg;
    w->inflight = 0;
    if (!w->dead) {
        if (r && r->type == REDIS_REPLY_ARRAY && srv_int_at(r, 0) == 0 && r->elements >= 10) {
            pwatch_send(w, r);
        } else if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 2) {
            pwatch_end(w, (grpc_status_code)srv_int_at(r, 0), srv_str_at(r, 1));
        }
        /* Redis trouble: try again next tick. */
    }
    pwatch_unref(w);
}

static void refresh(pwatch *w) {
    if (w->inflight || w->dead) return;
    const char *args[] = {w->base.tag_key, w->base.prefix, w->base.token, w->base.id};
    w->base.refs++;
    if (cc_redis_eval(w->base.app->redis, &s_get, on_watch_get, w, 1, 4, args, NULL) < 0) {
        w->base.refs--;
        return;
    }
    w->inflight = 1;
}

static void on_watch_tick(uv_timer_t *t) {
    /* One small script per watched payment per tick: watchers live about as long as
     * a payment takes (tens of ms), so there are few at any time. */
    for (pwatch *w = watchers, *next; w; w = next) {
        next = w->next;
        refresh(w);
    }
}

static void on_pwatch_cancel(srv_call *call) {
    pwatch *w = srv_call_data(call);
    if (w) pwatch_end(w, GRPC_STATUS_CANCELLED, "cancelled");
    else srv_call_finish(call, GRPC_STATUS_CANCELLED, "cancelled");
}

void srv_payment_watch(srv_call *call) {
    const Concert__V1__GetPaymentRequest *req = (const void *)srv_call_request(call);
    char concert[SRV_MAX_ID + 1];
    if (take_payment_id(call, req->payment_id, concert) < 0) return;
    srv_app *app = srv_call_app(call);
    if (app->shutting_down) {
        srv_call_finish(call, GRPC_STATUS_UNAVAILABLE, "server shutting down");
        return;
    }
    pwatch *w = calloc(1, sizeof *w);
    if (!w) abort();
    w->base.call = call;
    w->base.app = app;
    w->base.refs = 1;
    if (auth(&w->base, concert) < 0) {
        free(w);
        return;
    }
    snprintf(w->base.id, sizeof w->base.id, "%s", req->payment_id);
    w->next = watchers;
    if (watchers) watchers->prev = w;
    watchers = w;
    srv_call_set_data(call, w);
    srv_call_on_cancel(call, on_pwatch_cancel);
    refresh(w); /* the first answer (and the owner check) at once */
}

/* ---- life cycle ---- */

void srv_payment_init(srv_app *app) {
    srv_script_add(&s_begin, "pay_begin", lua_bk_lib, lua_bk_lib_len, lua_pay_begin, lua_pay_begin_len);
    srv_script_add(&s_accepted, "pay_accepted", lua_bk_lib, lua_bk_lib_len, lua_pay_accepted, lua_pay_accepted_len);
    srv_script_add(&s_get, "pay_get", lua_bk_lib, lua_bk_lib_len, lua_pay_get, lua_pay_get_len);
    uv_timer_init(app->loop, &watch_timer);
    watch_timer.data = app;
    uv_timer_start(&watch_timer, on_watch_tick, (uint64_t)app->cfg.payment_watch_interval_ms,
                   (uint64_t)app->cfg.payment_watch_interval_ms);
}

static void on_closed(uv_handle_t *h) {}

void srv_payment_shutdown(srv_app *app) {
    uv_close((uv_handle_t *)&watch_timer, on_closed);
    while (watchers) pwatch_end(watchers, GRPC_STATUS_UNAVAILABLE, "server shutting down");
}
