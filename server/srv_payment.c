/* srv_payment: PaymentService (Pay, GetPayment, WatchPayment), on the payment domain
 * of common/cc_pay (keys, scripts and reply decoding live there, shared with
 * payment-consumer). Nothing moves money here: payment-consumer debits and settles.
 *
 * Pay. pay_begin records the payment SUBMITTING (or finds the one this idempotency key
 * made); the request goes to Kafka through the idempotent producer (acks=all); on
 * Kafka's acknowledgement pay_submitted turns it PENDING and the call answers with it.
 * If the acknowledgement has not come when the call's deadline is near (less a
 * margin; --kafka-timeout-ms without a deadline), or the delivery failed,
 * pay_submitted turns SUBMITTING into ABANDONED atomically, and only then does Pay answer
 * UNAVAILABLE: an ABANDONED payment is never debited (payment-consumer fails it, even
 * if Kafka holds the request after all), and only a retry of Pay with the same key
 * submits it again. If instead the request was seen in Kafka first (acknowledged, or
 * claimed by payment-consumer), the abandon finds it PENDING or later and Pay answers
 * that real state. When Redis cannot tell (the abandon or accept call failed), Pay
 * answers UNKNOWN: the state is unknown, retry with the same key to learn it.
 *
 * WatchPayment is pushed, not polled. Every server reads concert.payment-results
 * itself: a consumer without a group (cc_kafka, on the loop), assigned every partition
 * at the end offsets looked up when it starts (in a worker thread: the lookup blocks
 * in librdkafka), fetching with a short fetch.wait.max.ms. Watchers are in a map
 * payment id -> watchers; a result for a watched payment goes to its watchers at once.
 * A watcher registers before its first Redis read (pay_get, which also checks the
 * owner), so a result produced after that read reaches it, and one produced before is
 * already in Redis (payment-consumer produces results only once the effects are
 * applied), so the read sees it; a result that arrives while the read is in flight is
 * kept and applied after it. Watchers that registered before the feed was live, or
 * while it had a consume error (a possible gap), are read once more when it is live
 * again. No Redis call per watcher per tick. GetPayment is one read. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cc_kafka.h"
#include "cc_log.h"
#include "cc_pay.h"
#include "cc_smap.h"
#include "concert/v1/events.pb-c.h"
#include "concert/v1/payment.pb-c.h"
#include "srv_app.h"
#include "srv_valid.h"

#define DEADLINE_MARGIN_MS 150
#define REASON_MAX 256

/* ---- shared helpers ---- */

typedef struct {
    char rid[CC_PAY_ID_MAX + 1], key[160], reason[REASON_MAX];
    int64_t amount, created_ms, updated_ms;
    cc_pay_state state;
} pay_copy;

static void copy_record(pay_copy *c, const cc_pay_record *r) {
    snprintf(c->rid, sizeof c->rid, "%s", r->rid);
    snprintf(c->key, sizeof c->key, "%s", r->key);
    snprintf(c->reason, sizeof c->reason, "%s", r->reason);
    c->amount = r->amount;
    c->created_ms = r->created_ms;
    c->updated_ms = r->updated_ms;
    c->state = r->state;
}

static void copy_to_api(Concert__V1__Payment *m, const pay_copy *c, const char *pid, const char *concert) {
    cc_pay_record r = {.pid = pid, .rid = c->rid, .key = c->key, .reason = c->reason, .amount = c->amount,
                       .created_ms = c->created_ms, .updated_ms = c->updated_ms, .state = c->state};
    cc_pay_to_api(m, &r, concert);
}

static const char *outcome_of(cc_pay_state s) {
    switch (s) {
    case CC_PAY_PENDING: return "pending";
    case CC_PAY_COMPLETED: return "completed";
    case CC_PAY_FAILED: return "failed";
    default: return "unconfirmed";
    }
}

/* A payment script's reply: 1 with *rec decoded, else the call is finished (the
 * script's refusal or the Redis failure) and 0. */
static int script_record(srv_call *call, const redisReply *r, const char *err, cc_pay_record *rec) {
    int code = 0;
    const char *msg = "";
    cc_pay_decoded d = cc_pay_decode(r, rec, &code, &msg);
    if (d == CC_PAY_OK) return 1;
    if (d == CC_PAY_REFUSED) srv_call_finish(call, (grpc_status_code)code, "%s", msg);
    else srv_fail_redis(call, r, err);
    return 0;
}

/* ---- Pay ---- */

typedef struct pctx {
    srv_call *call;
    srv_app *app;
    char token[SRV_TOKEN_MAX + 1];
    char concert[SRV_MAX_ID + 1];
    char id[SRV_TOKEN_MAX + 1]; /* payment id */
    int refs;                   /* the call's side + each Kafka/Redis callback pending */
    int answered;
    int abandoning; /* the abandon is sent: its reply decides */
    uv_timer_t timer;
    int timer_live;
} pctx;

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

static void stop_timer(pctx *p) {
    if (p->timer_live) uv_timer_stop(&p->timer);
}

static int auth(srv_call *call, char *token, char *concert, const char *id_concert) {
    if (srv_auth_token(call, token, concert) < 0) return -1;
    if (strcmp(id_concert, concert) != 0) {
        srv_call_finish(call, GRPC_STATUS_PERMISSION_DENIED, "the token is for another concert");
        return -1;
    }
    return 0;
}

static void answer_record(pctx *p, const cc_pay_record *rec) {
    if (p->answered) return;
    p->answered = 1;
    stop_timer(p);
    Concert__V1__Payment m;
    cc_pay_to_api(&m, rec, p->concert);
    srv_metrics_payment(p->app, outcome_of(rec->state));
    srv_call_reply(p->call, &m.base);
}

static void answer_unavailable(pctx *p, const char *why) {
    if (p->answered) return;
    p->answered = 1;
    stop_timer(p);
    srv_metrics_payment(p->app, "unavailable");
    srv_call_finish(p->call, GRPC_STATUS_UNAVAILABLE,
                    "kafka did not acknowledge the payment in time (%s); it will not be debited; retry Pay with the "
                    "same idempotency_key",
                    why);
}

static void answer_unknown(pctx *p, const char *why) {
    if (p->answered) return;
    p->answered = 1;
    stop_timer(p);
    srv_metrics_payment(p->app, "unknown");
    srv_call_finish(p->call, GRPC_STATUS_UNKNOWN,
                    "the payment's state is unknown (%s); retry Pay with the same idempotency_key to learn it", why);
}

/* pay_submitted's reply (accepted or abandon): the payment's state after it. */
static void on_settled_state(redisReply *r, const char *err, void *arg, int from_abandon) {
    pctx *p = arg;
    cc_pay_record rec;
    cc_pay_decoded d = cc_pay_decode(r, &rec, NULL, NULL);
    if (d != CC_PAY_OK) {
        CC_WARN("payment_state_unknown", "payment=%s step=%s reason=\"%s\"", p->id,
                from_abandon ? "abandon" : "accepted", err ? err : r && r->type == REDIS_REPLY_ERROR ? r->str : "?");
        /* accepted failed: the abandon (timer) may still tell; abandon failed: nobody can. */
        if (from_abandon || p->abandoning) answer_unknown(p, err ? err : "redis error");
    } else if (rec.state == CC_PAY_ABANDONED) {
        answer_unavailable(p, from_abandon ? "timed out" : "abandoned by an earlier attempt");
    } else if (rec.state != CC_PAY_SUBMITTING) {
        answer_record(p, &rec); /* PENDING or later: it reached Kafka */
    } else {
        answer_unknown(p, "still submitting");
    }
    pctx_unref(p);
}

static void on_accepted(redisReply *r, const char *err, void *arg) { on_settled_state(r, err, arg, 0); }
static void on_abandoned(redisReply *r, const char *err, void *arg) { on_settled_state(r, err, arg, 1); }

static void abandon(pctx *p, const char *why) {
    if (p->answered || p->abandoning) return;
    p->abandoning = 1;
    CC_DEBUG("payment_abandon", "payment=%s reason=\"%s\"", p->id, why);
    p->refs++;
    if (cc_pay_abandon(p->app->redis, p->concert, p->id, on_abandoned, p) < 0) {
        p->refs--;
        answer_unknown(p, "redis unavailable");
    }
}

static void on_delivered(const char *err, void *arg) {
    pctx *p = arg;
    if (err) {
        CC_WARN("payment_not_delivered", "payment=%s reason=\"%s\"", p->id, err);
        abandon(p, err);
    } else {
        /* Durable: SUBMITTING -> PENDING, also when the call has given up already. */
        p->refs++;
        if (cc_pay_accepted(p->app->redis, p->concert, p->id, on_accepted, p) < 0) {
            p->refs--;
            if (!p->abandoning) answer_unknown(p, "redis unavailable");
        }
    }
    pctx_unref(p);
}

static void on_pay_timer(uv_timer_t *t) { abandon(t->data, "timed out"); }

static void on_begun(redisReply *r, const char *err, void *arg) {
    pctx *p = arg;
    cc_pay_record rec;
    if (!script_record(p->call, r, err, &rec)) {
        srv_metrics_payment(p->app, "rejected");
        p->answered = 1;
        pctx_unref(p);
        return;
    }
    snprintf(p->id, sizeof p->id, "%s", rec.pid);
    if (rec.state != CC_PAY_SUBMITTING) {
        /* The key's payment reached Kafka already (or was abandoned): its real state. */
        answer_record(p, &rec);
        pctx_unref(p);
        return;
    }
    Concert__V1__PaymentRequested ev;
    concert__v1__payment_requested__init(&ev);
    ev.payment_id = p->id;
    ev.reservation_id = (char *)rec.rid;
    ev.concert_id = p->concert;
    ev.user_id = (char *)rec.user;
    ev.amount = rec.amount;
    ev.idempotency_key = (char *)rec.key;
    ev.requested_at_unix_ms = rec.created_ms;
    size_t len = protobuf_c_message_get_packed_size(&ev.base);
    uint8_t stackbuf[1024], *buf = len <= sizeof stackbuf ? stackbuf : malloc(len);
    if (!buf) abort();
    protobuf_c_message_pack(&ev.base, buf);
    CC_DEBUG("payment_submitting", "payment=%s new=%d", p->id, rec.is_new);
    /* Decide before the caller's deadline if Kafka is slower. */
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
        abandon(p, "producer queue full");
    }
    if (buf != stackbuf) free(buf);
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
    srv_app *app = srv_call_app(call);
    pctx *p = calloc(1, sizeof *p);
    if (!p) abort();
    p->call = call;
    p->app = app;
    p->refs = 1;
    if (auth(call, p->token, p->concert, concert) < 0) {
        free(p);
        return;
    }
    if (!app->kafka) {
        srv_call_finish(call, GRPC_STATUS_UNAVAILABLE, "payments are disabled on this server (no --kafka)");
        free(p);
        return;
    }
    char pid[SRV_TOKEN_MAX + 1];
    if (srv_id_new(pid, "p1", p->concert) < 0) {
        CC_ERROR("payment_id_failed", "reason=\"getrandom failed\"");
        srv_call_finish(call, GRPC_STATUS_INTERNAL, "internal error: cannot make a payment id");
        free(p);
        return;
    }
    if (cc_pay_begin(app->redis, p->concert, p->token, req->reservation_id, req->idempotency_key, pid, on_begun,
                     p) < 0) {
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

typedef struct {
    srv_call *call;
    char concert[SRV_MAX_ID + 1];
} gctx;

static void on_get(redisReply *r, const char *err, void *arg) {
    gctx *g = arg;
    cc_pay_record rec;
    if (script_record(g->call, r, err, &rec)) {
        Concert__V1__Payment m;
        cc_pay_to_api(&m, &rec, g->concert);
        srv_call_reply(g->call, &m.base);
    }
    free(g);
}

void srv_payment_get(srv_call *call) {
    const Concert__V1__GetPaymentRequest *req = (const void *)srv_call_request(call);
    char concert[SRV_MAX_ID + 1], token[SRV_TOKEN_MAX + 1];
    if (take_payment_id(call, req->payment_id, concert) < 0) return;
    gctx *g = calloc(1, sizeof *g);
    if (!g) abort();
    g->call = call;
    if (auth(call, token, g->concert, concert) < 0) {
        free(g);
        return;
    }
    srv_app *app = srv_call_app(call);
    if (cc_pay_get(app->redis, g->concert, token, req->payment_id, on_get, g) < 0) {
        srv_fail_no_redis(call);
        free(g);
    }
}

/* ---- WatchPayment: watchers ---- */

typedef struct pwatch {
    srv_call *call;
    srv_app *app;
    char token[SRV_TOKEN_MAX + 1];
    char concert[SRV_MAX_ID + 1];
    char pid[SRV_TOKEN_MAX + 1];
    pay_copy rec;
    int have_record;     /* the first read answered (and the owner was checked) */
    Concert__V1__PaymentStatus last; /* last status sent */
    int reading;         /* a pay_get is in flight */
    int reread;          /* read again once it answers (the feed had a gap) */
    int have_event;      /* a result arrived while the first read was in flight */
    pay_copy event;
    int dead;
    int refs;            /* the call's side + a read in flight */
    struct pwatch *prev, *next; /* watchers of the same payment */
} pwatch;

/* The results feed and the watcher map. */
static struct {
    srv_app *app;
    cc_kafka_consumer *kc;
    cc_smap *watchers; /* payment id -> first watcher */
    int live;          /* assigned at known offsets, no error since */
    int setup_inflight, closing, closed;
    uv_timer_t retry;
    int backoff_ms;
    size_t n_watchers;
    uint64_t results, delivered;
} F;

/* Not inlined, like watcher_unref in srv_queue.c: GCC 12 -O3 false use-after-free. */
__attribute__((noinline)) static void pwatch_unref(pwatch *w) {
    if (--w->refs == 0) free(w);
}

static void pwatch_unlink(pwatch *w) {
    F.n_watchers--;
    if (w->prev) w->prev->next = w->next;
    else if (w->next) cc_smap_put(F.watchers, w->pid, w->next);
    else cc_smap_del(F.watchers, w->pid);
    if (w->next) w->next->prev = w->prev;
    w->prev = w->next = NULL;
}

static void pwatch_end(pwatch *w, grpc_status_code code, const char *msg) {
    if (w->dead) return;
    w->dead = 1;
    pwatch_unlink(w);
    srv_call_set_data(w->call, NULL);
    srv_call_finish(w->call, code, "%s", msg);
    pwatch_unref(w);
}

/* Sends the watcher's payment if its status changed; ends the stream when terminal. */
static void pwatch_show(pwatch *w, const pay_copy *c) {
    Concert__V1__Payment m;
    copy_to_api(&m, c, w->pid, w->concert);
    if (m.status == w->last) return;
    w->last = m.status;
    srv_call_send(w->call, &m.base);
    if (cc_pay_state_terminal(c->state)) pwatch_end(w, GRPC_STATUS_OK, "");
}

static void pwatch_read(pwatch *w);

static void on_watch_get(redisReply *r, const char *err, void *arg) {
    pwatch *w = arg;
    w->reading = 0;
    if (!w->dead) {
        cc_pay_record rec;
        int code = 0;
        const char *msg = "";
        cc_pay_decoded d = cc_pay_decode(r, &rec, &code, &msg);
        if (d == CC_PAY_REFUSED) {
            pwatch_end(w, (grpc_status_code)code, msg);
        } else if (d != CC_PAY_OK) {
            /* The first read failed: the client retries; a re-read failed: the pushed
             * result still comes. */
            if (!w->have_record) {
                char m[256];
                grpc_status_code c = srv_redis_status(r, err, m, sizeof m);
                pwatch_end(w, c == GRPC_STATUS_OK ? GRPC_STATUS_INTERNAL : c, m);
            }
        } else {
            copy_record(&w->rec, &rec);
            w->have_record = 1;
            pwatch_show(w, &w->rec);
            if (!w->dead && w->have_event) {
                /* A result came while the read was in flight: it is newer. */
                w->have_event = 0;
                pay_copy c = w->rec;
                c.state = w->event.state;
                c.updated_ms = w->event.updated_ms;
                snprintf(c.reason, sizeof c.reason, "%s", w->event.reason);
                pwatch_show(w, &c);
            }
            if (!w->dead && w->reread) {
                w->reread = 0;
                pwatch_read(w);
            }
        }
    }
    pwatch_unref(w);
}

static void pwatch_read(pwatch *w) {
    if (w->dead) return;
    if (w->reading) {
        w->reread = 1;
        return;
    }
    w->refs++;
    if (cc_pay_get(w->app->redis, w->concert, w->token, w->pid, on_watch_get, w) < 0) {
        w->refs--;
        if (!w->have_record) pwatch_end(w, GRPC_STATUS_UNAVAILABLE, "redis unavailable");
        return;
    }
    w->reading = 1;
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
    w->call = call;
    w->app = app;
    w->refs = 1;
    if (auth(call, w->token, w->concert, concert) < 0) {
        free(w);
        return;
    }
    snprintf(w->pid, sizeof w->pid, "%s", req->payment_id);
    /* Registered before the first read: see the top of the file. */
    pwatch *head = cc_smap_put(F.watchers, w->pid, w);
    F.n_watchers++;
    if (head) {
        w->next = head;
        head->prev = w;
    }
    srv_call_set_data(call, w);
    srv_call_on_cancel(call, on_pwatch_cancel);
    pwatch_read(w);
}

/* ---- the results feed ---- */

static void reread_one(const char *key, void *value, void *payload) {
    for (pwatch *w = value; w; w = w->next)
        pwatch_read(w);
}

/* After a possible gap in the feed: every watcher reads its payment once more. */
static void reread_all(const char *why) {
    if (!cc_smap_count(F.watchers)) return;
    CC_INFO("payment_watchers_reread", "watched=%zu reason=%s", cc_smap_count(F.watchers), why);
    /* pwatch_read never ends a watcher that has a record, and one without is being
     * read already: the map does not change while we walk it. */
    cc_smap_each(F.watchers, reread_one, NULL);
}

static void on_result(rd_kafka_message_t *m, void *payload) {
    Concert__V1__PaymentResult *r = concert__v1__payment_result__unpack(NULL, m->len, m->payload);
    rd_kafka_message_destroy(m);
    if (!r) return;
    F.results++;
    pwatch *w = r->payment_id ? cc_smap_get(F.watchers, r->payment_id) : NULL;
    if (w) {
        pay_copy ev = {0};
        ev.state = r->status == CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_COMPLETED ? CC_PAY_COMPLETED
                   : r->status == CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_FAILED  ? CC_PAY_FAILED
                                                                                      : CC_PAY_UNKNOWN;
        ev.updated_ms = r->processed_at_unix_ms;
        snprintf(ev.reason, sizeof ev.reason, "%s", r->reason ? r->reason : "");
        while (w && ev.state != CC_PAY_UNKNOWN) {
            pwatch *next = w->next; /* w may end here */
            F.delivered++;
            if (!w->have_record) {
                w->have_event = 1;
                w->event = ev;
            } else {
                pay_copy c = w->rec;
                c.state = ev.state;
                c.updated_ms = ev.updated_ms;
                snprintf(c.reason, sizeof c.reason, "%s", ev.reason);
                pwatch_show(w, &c);
            }
            w = next;
        }
    }
    concert__v1__payment_result__free_unpacked(r, NULL);
}

static void on_feed_error(rd_kafka_resp_err_t err, const char *reason, void *payload) {
    /* Partition errors (offset reset, ...) may skip results; broker loss does not (the
     * position is kept), but whatever was missed is re-read once the feed works. */
    if (!F.live) return;
    CC_WARN("payment_feed_error", "code=%s reason=\"%s\"", rd_kafka_err2name(err), reason ? reason : "");
    reread_all("feed_error");
}

static const cc_kafka_consumer_ops feed_ops = {.message = on_result, .error = on_feed_error};

typedef struct {
    uv_work_t work;
    rd_kafka_t *rk;
    rd_kafka_topic_partition_list_t *l;
    char err[256];
} setup_job;

static void feed_setup(void);

static void on_retry(uv_timer_t *t) { feed_setup(); }

/* Off the loop (these librdkafka calls block): the partitions of the results topic
 * and each one's end offset. Each call waits at most SETUP_WAIT_MS: a pending job
 * keeps the loop (and so a shutdown) waiting, and an unreachable broker is retried
 * with backoff from the loop anyway. */
#define SETUP_WAIT_MS 1000
static void setup_work(uv_work_t *w) {
    setup_job *j = w->data;
    rd_kafka_topic_t *t = rd_kafka_topic_new(j->rk, CC_TOPIC_PAYMENT_RESULTS, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(j->rk, 0, t, &md, SETUP_WAIT_MS);
    int n = 0;
    if (!e) {
        if (md->topic_cnt == 1 && !md->topics[0].err) n = md->topics[0].partition_cnt;
        else e = md->topic_cnt == 1 ? md->topics[0].err : RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_topic_destroy(t);
    if (e || n <= 0) {
        snprintf(j->err, sizeof j->err, "metadata of %s: %s", CC_TOPIC_PAYMENT_RESULTS,
                 e ? rd_kafka_err2str(e) : "no partitions");
        return;
    }
    j->l = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++) {
        int64_t lo = 0, hi = 0;
        e = rd_kafka_query_watermark_offsets(j->rk, CC_TOPIC_PAYMENT_RESULTS, i, &lo, &hi, SETUP_WAIT_MS);
        if (e) {
            snprintf(j->err, sizeof j->err, "end offset of %s[%d]: %s", CC_TOPIC_PAYMENT_RESULTS, i,
                     rd_kafka_err2str(e));
            rd_kafka_topic_partition_list_destroy(j->l);
            j->l = NULL;
            return;
        }
        rd_kafka_topic_partition_list_add(j->l, CC_TOPIC_PAYMENT_RESULTS, i)->offset = hi;
    }
}

static void feed_close(void);

static void setup_after(uv_work_t *w, int status) {
    setup_job *j = w->data;
    F.setup_inflight = 0;
    if (F.closing) {
        if (j->l) rd_kafka_topic_partition_list_destroy(j->l);
        free(j);
        feed_close();
        return;
    }
    rd_kafka_resp_err_t e = j->l ? rd_kafka_assign(j->rk, j->l) : RD_KAFKA_RESP_ERR__FAIL;
    if (!j->l || e) {
        F.backoff_ms = F.backoff_ms ? (F.backoff_ms * 2 > 5000 ? 5000 : F.backoff_ms * 2) : 200;
        CC_WARN("payment_feed_unavailable", "reason=\"%s\" retry_ms=%d", j->l ? rd_kafka_err2str(e) : j->err,
                F.backoff_ms);
        uv_timer_start(&F.retry, on_retry, (uint64_t)F.backoff_ms, 0);
    } else {
        F.live = 1;
        F.backoff_ms = 0;
        CC_INFO("payment_feed_live", "topic=%s partitions=%d", CC_TOPIC_PAYMENT_RESULTS, j->l->cnt);
        reread_all("feed_live");
    }
    if (j->l) rd_kafka_topic_partition_list_destroy(j->l);
    free(j);
}

static void feed_setup(void) {
    if (!F.kc || F.setup_inflight || F.closing) return;
    setup_job *j = calloc(1, sizeof *j);
    if (!j) abort();
    j->rk = cc_kafka_consumer_rk(F.kc);
    j->work.data = j;
    if (uv_queue_work(F.app->loop, &j->work, setup_work, setup_after) == 0) F.setup_inflight = 1;
    else free(j);
}

static void on_feed_closed(void *payload) { F.kc = NULL; }
static void on_retry_closed(uv_handle_t *h) {}

static void feed_close(void) {
    if (F.closed) return;
    if (F.setup_inflight) return; /* setup_after closes (the job uses the client) */
    F.closed = 1;
    uv_close((uv_handle_t *)&F.retry, on_retry_closed);
    if (F.kc) cc_kafka_consumer_close(F.kc, on_feed_closed, NULL);
}

/* ---- life cycle ---- */

void srv_payment_init(srv_app *app) {
    static cc_redis_script *mine[CC_PAY_N_SCRIPTS];
    int n = cc_pay_scripts_server(mine, CC_PAY_N_SCRIPTS);
    if (srv_n_scripts + n > SRV_MAX_SCRIPTS) {
        /* A programming error caught at every start, as srv_script_add does. */
        CC_ERROR("too_many_scripts", "script=pay max=%d", SRV_MAX_SCRIPTS);
        abort();
    }
    for (int i = 0; i < n; i++)
        srv_scripts[srv_n_scripts++] = mine[i]; /* built by cc_pay, kept for the process */
    memset(&F, 0, sizeof F);
    F.app = app;
    F.watchers = cc_smap_new();
    uv_timer_init(app->loop, &F.retry);
}

int srv_payment_start_feed(srv_app *app, char *err, size_t errlen) {
    /* The broker answers a fetch as soon as fetch.min.bytes of results are there, or
     * after fetch.wait.max.ms: with min 1 every result is pushed at once, and an idle
     * feed costs the broker one fetch per wait (docs/PERFORMANCE.md, Kafka settings). */
    char wait[16], min[16];
    snprintf(wait, sizeof wait, "%lld", (long long)app->cfg.kafka_fetch_wait_ms);
    snprintf(min, sizeof min, "%lld", (long long)app->cfg.kafka_fetch_min_bytes);
    const char *settings[] = {
        "fetch.wait.max.ms", wait, "fetch.min.bytes", min, "enable.partition.eof", "false",
        "auto.offset.reset", "latest", NULL,
    };
    cc_kafka_consumer_config kc = {.brokers = app->cfg.kafka, .group = NULL, .client_id = "concert-server-results",
                                   .settings = settings};
    if (cc_kafka_consumer_create(&F.kc, app->loop, &kc, NULL, 0, &feed_ops, NULL, err, errlen) < 0) return -1;
    feed_setup();
    return 0;
}

typedef struct {
    pwatch **w;
    size_t n;
} watch_list;

static void collect_one(const char *key, void *value, void *payload) {
    watch_list *l = payload;
    for (pwatch *w = value; w; w = w->next)
        l->w[l->n++] = w;
}

void srv_payment_shutdown(srv_app *app) {
    F.closing = 1;
    uv_timer_stop(&F.retry);
    /* Every watcher ends with UNAVAILABLE (clients reconnect elsewhere). Collected
     * first: ending one changes the map. */
    watch_list l = {calloc(F.n_watchers ? F.n_watchers : 1, sizeof *l.w), 0};
    if (!l.w) abort();
    cc_smap_each(F.watchers, collect_one, &l);
    for (size_t i = 0; i < l.n; i++)
        pwatch_end(l.w[i], GRPC_STATUS_UNAVAILABLE, "server shutting down");
    free(l.w);
    cc_smap_free(F.watchers);
    F.watchers = NULL;
    feed_close();
}
