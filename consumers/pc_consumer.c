/* pc_consumer: see pc_consumer.h.
 *
 * One loop, one thread: poll a batch -> settle it in Redis -> (WAIT) -> publish the
 * results -> commit. A failure anywhere before the commit seeks the batch's
 * partitions back to the batch's first offsets, so the same messages come again
 * (after a Redis reconnect); re-processing is harmless because every step is keyed
 * by payment id.
 *
 * Order inside a batch (why pipelining is safe). Each payment runs four steps:
 * (1) read its record (concert slot), (2) pay_debit (user's wallet slot),
 * (3) pay_commit (concert slot), (4) pay_refund if it FAILED / read the reservation if
 * it COMPLETED. Step k+1 of a payment needs only the reply of its own step k. Payments
 * of *different* users touch disjoint keys, except commutative counters (schedule
 * held/sold) and distinct seats, reservations and tokens in the concert's slot, so
 * they can run in any interleaving. Payments of the *same* user share the balance:
 * debiting p2 before p1's failure refunds p1 could make p2 fail where applying them
 * one at a time would not. So the batch is cut into rounds (pc_rounds): round k holds
 * every user's k-th payment of the batch; each round pipelines its four steps across
 * its payments (all of distinct users), and rounds run in order. For one user this is
 * exactly "one payment after the other, in Kafka order" (the user's messages share a
 * partition: key = user id); across users it only reorders commuting work. The usual
 * batch (one payment per user) is one round: 4 round trips for up to --batch payments.
 *
 * Must not: commit before the effects are applied (and replicated when asked), keep
 * messages of a partition revoked during the poll (another consumer owns them now),
 * or crash on a failed commit (librdkafka 2.0.2 #4059: a commit racing a cooperative
 * rebalance may fail with ILLEGAL_GENERATION and lose the assignment; the messages
 * are then redelivered, which is harmless). */
#define _GNU_SOURCE
#include "pc_consumer.h"

#include <errno.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "cc_kafka.h"
#include "cc_log.h"
#include "concert/v1/booking.pb-c.h"
#include "concert/v1/events.pb-c.h"
#include "concert/v1/payment.pb-c.h"
#include "pc_redis.h"

extern const unsigned char pc_lua_bk_lib[], pc_lua_pay_debit[], pc_lua_pay_commit[], pc_lua_pay_refund[];
extern const size_t pc_lua_bk_lib_len, pc_lua_pay_debit_len, pc_lua_pay_commit_len, pc_lua_pay_refund_len;

static volatile sig_atomic_t stop_flag;

void pc_request_stop(void) { stop_flag = 1; }

static void on_signal(int sig) { stop_flag = 1; }

static uint64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void pause_ms(int ms) {
    for (int waited = 0; waited < ms && !stop_flag; waited += 20) {
        struct timespec ts = {0, 20 * 1000000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
        }
    }
}

/* ---- rounds ---- */

typedef struct {
    const char *user;
    int idx;
} ukey;

static int ukey_cmp(const void *a, const void *b) {
    const ukey *x = a, *y = b;
    int c = strcmp(x->user, y->user);
    return c ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

int pc_rounds(const char *const *users, int n, int *round) {
    if (n <= 0) return 0;
    ukey *k = malloc((size_t)n * sizeof *k);
    if (!k) abort();
    for (int i = 0; i < n; i++)
        k[i] = (ukey){users[i] ? users[i] : "", i};
    qsort(k, (size_t)n, sizeof *k, ukey_cmp);
    int rounds = 0;
    for (int i = 0; i < n; i++) {
        int r = i > 0 && !strcmp(k[i].user, k[i - 1].user) ? round[k[i - 1].idx] + 1 : 0;
        round[k[i].idx] = r;
        if (r + 1 > rounds) rounds = r + 1;
    }
    free(k);
    return rounds;
}

/* ---- state ---- */

enum { I_SKIP, I_TODO, I_DONE };

#define ID_MAX 192

typedef struct {
    rd_kafka_message_t *m;
    Concert__V1__PaymentRequested *req;
    int state;
    int debited;   /* step 2: 1 DEBITED, 0 INSUFFICIENT */
    int completed; /* final: 1 COMPLETED, 0 FAILED */
    int64_t updated;
    char rid[ID_MAX];
    char reason[ID_MAX];
    char sched[ID_MAX];
    int32_t *seats;
    size_t n_seats;
    int64_t paid_at;
} item;

typedef struct {
    const pc_config *cfg;
    rd_kafka_t *rk;   /* consumer */
    rd_kafka_t *prod; /* producer of results and events */
    pc_redis *redis;
    pc_script s_debit, s_commit, s_refund;
    pc_script *scripts[3];
    /* Partitions of the requests topic: assigned to us, and offsets waiting to be
     * committed (-1: none). */
    int cap;
    unsigned char *assigned;
    int64_t *to_commit;
    int n_to_commit;
    /* After a failed batch: the offset each partition must resume at (-1: none).
     * A message past it means the seek back did not take: drop it, seek again. */
    int64_t *retry_from;
    uint64_t last_commit_try;
    /* Delivery reports of the current batch. */
    int dr_failed;
    char dr_err[160];
    /* Counters. */
    uint64_t n_completed, n_failed, n_skipped, n_batches, n_retries;
    uint64_t window_start, window_done;
    uint64_t next_lag;
    int fail_backoff_ms;
} pc;

static void ensure_cap(pc *p, int32_t part) {
    if (part < p->cap) return;
    int cap = p->cap ? p->cap : 16;
    while (cap <= part)
        cap *= 2;
    p->assigned = realloc(p->assigned, (size_t)cap);
    p->to_commit = realloc(p->to_commit, (size_t)cap * sizeof *p->to_commit);
    p->retry_from = realloc(p->retry_from, (size_t)cap * sizeof *p->retry_from);
    if (!p->assigned || !p->to_commit || !p->retry_from) abort();
    for (int i = p->cap; i < cap; i++)
        p->assigned[i] = 0, p->to_commit[i] = -1, p->retry_from[i] = -1;
    p->cap = cap;
}

static int is_assigned(const pc *p, int32_t part) { return part >= 0 && part < p->cap && p->assigned[part]; }

/* "0,3,5" for logs. */
static void fmt_parts(char *out, size_t len, const rd_kafka_topic_partition_list_t *l) {
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; i < l->cnt && o + 12 < len; i++)
        o += (size_t)snprintf(out + o, len - o, "%s%" PRId32, i ? "," : "", l->elems[i].partition);
}

/* ---- Kafka callbacks (run inside rd_kafka_consumer_poll / flush on our thread) ---- */

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                         void *opaque) {
    pc *p = opaque;
    int coop = !strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE");
    char list[1024];
    fmt_parts(list, sizeof list, parts);
    rd_kafka_error_t *e = NULL;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        if (!coop) {
            for (int i = 0; i < p->cap; i++)
                p->assigned[i] = 0;
        }
        for (int i = 0; i < parts->cnt; i++) {
            if (strcmp(parts->elems[i].topic, CC_TOPIC_PAYMENT_REQUESTS)) continue;
            ensure_cap(p, parts->elems[i].partition);
            p->assigned[parts->elems[i].partition] = 1;
            p->retry_from[parts->elems[i].partition] = -1; /* starts at the committed offset */
        }
        /* A cooperative rebalance's first phase may assign nothing: not news. */
        cc_log(parts->cnt ? CC_LOG_INFO : CC_LOG_DEBUG, "partitions_assigned",
               "topic=%s partitions=%s count=%d", CC_TOPIC_PAYMENT_REQUESTS, list, parts->cnt);
        if (coop)
            e = rd_kafka_incremental_assign(rk, parts);
        else {
            rd_kafka_resp_err_t ae = rd_kafka_assign(rk, parts);
            if (ae) CC_ERROR("assign_failed", "reason=\"%s\"", rd_kafka_err2str(ae));
        }
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        int lost = rd_kafka_assignment_lost(rk);
        for (int i = 0; i < parts->cnt; i++) {
            int32_t part = parts->elems[i].partition;
            if (part < p->cap && !strcmp(parts->elems[i].topic, CC_TOPIC_PAYMENT_REQUESTS)) {
                p->assigned[part] = 0;
                if (p->to_commit[part] >= 0) p->n_to_commit--;
                p->to_commit[part] = -1; /* another consumer re-processes from the last commit */
                p->retry_from[part] = -1;
            }
        }
        if (lost)
            CC_WARN("partitions_lost", "topic=%s partitions=%s count=%d", CC_TOPIC_PAYMENT_REQUESTS, list,
                    parts->cnt);
        else
            CC_INFO("partitions_revoked", "topic=%s partitions=%s count=%d", CC_TOPIC_PAYMENT_REQUESTS, list,
                    parts->cnt);
        if (coop)
            e = rd_kafka_incremental_unassign(rk, parts);
        else
            rd_kafka_assign(rk, NULL);
    } else {
        CC_ERROR("rebalance_failed", "reason=\"%s\"", rd_kafka_err2str(err));
        for (int i = 0; i < p->cap; i++)
            p->assigned[i] = 0, p->to_commit[i] = -1, p->retry_from[i] = -1;
        p->n_to_commit = 0;
        rd_kafka_assign(rk, NULL);
    }
    if (e) {
        CC_ERROR("assign_failed", "reason=\"%s\"", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[512];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, why, sizeof why);
        CC_ERROR("kafka_fatal", "client=%s code=%s reason=\"%s\"", rd_kafka_name(rk), rd_kafka_err2name(orig),
                 why);
        return;
    }
    CC_WARN("kafka_error", "client=%s code=%s reason=\"%s\"", rd_kafka_name(rk),
            rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}


static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    pc *p = opaque;
    if (!m->err) return;
    p->dr_failed++;
    snprintf(p->dr_err, sizeof p->dr_err, "%s", rd_kafka_err2str(m->err));
}

/* ---- setup ---- */

static int set(rd_kafka_conf_t *c, const char *k, const char *v) {
    char why[256];
    if (rd_kafka_conf_set(c, k, v, why, sizeof why) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "payment-consumer: kafka config %s=%s: %s\n", k, v, why);
        return -1;
    }
    return 0;
}

static rd_kafka_t *make_consumer(pc *p) {
    const pc_config *cfg = p->cfg;
    char session[16], heartbeat[16];
    snprintf(session, sizeof session, "%d", cfg->session_timeout_ms);
    snprintf(heartbeat, sizeof heartbeat, "%d",
             cfg->session_timeout_ms / 3 > 0 ? cfg->session_timeout_ms / 3 : 1000);
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    if (set(c, "bootstrap.servers", cfg->brokers) || set(c, "group.id", cfg->group) ||
        set(c, "client.id", "payment-consumer") ||
        set(c, "partition.assignment.strategy", "cooperative-sticky") ||
        set(c, "enable.auto.commit", "false") || set(c, "enable.auto.offset.store", "false") ||
        set(c, "auto.offset.reset", "earliest") || set(c, "session.timeout.ms", session) ||
        set(c, "heartbeat.interval.ms", heartbeat) ||
        /* New partitions and a topic created after we subscribed are noticed soon. */
        set(c, "topic.metadata.refresh.interval.ms", "10000") || set(c, "reconnect.backoff.max.ms", "1000")) {
        rd_kafka_conf_destroy(c);
        return NULL;
    }
    rd_kafka_conf_set_opaque(c, p);
    rd_kafka_conf_set_rebalance_cb(c, on_rebalance);
    rd_kafka_conf_set_error_cb(c, on_error);
    rd_kafka_conf_set_log_cb(c, cc_kafka_log_cb);
    char why[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, why, sizeof why);
    if (!rk) {
        rd_kafka_conf_destroy(c);
        fprintf(stderr, "payment-consumer: kafka consumer: %s\n", why);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, CC_TOPIC_PAYMENT_REQUESTS, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (e) {
        fprintf(stderr, "payment-consumer: subscribe: %s\n", rd_kafka_err2str(e));
        rd_kafka_destroy(rk);
        return NULL;
    }
    return rk;
}

static rd_kafka_t *make_producer(pc *p) {
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    if (set(c, "bootstrap.servers", p->cfg->brokers) || set(c, "client.id", "payment-consumer-results") ||
        set(c, "enable.idempotence", "true") || set(c, "acks", "all") || set(c, "linger.ms", "1") ||
        set(c, "message.timeout.ms", "10000") || set(c, "reconnect.backoff.max.ms", "1000")) {
        rd_kafka_conf_destroy(c);
        return NULL;
    }
    rd_kafka_conf_set_opaque(c, p);
    rd_kafka_conf_set_dr_msg_cb(c, on_delivery);
    rd_kafka_conf_set_error_cb(c, on_error);
    rd_kafka_conf_set_log_cb(c, cc_kafka_log_cb);
    char why[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, why, sizeof why);
    if (!rk) {
        rd_kafka_conf_destroy(c);
        fprintf(stderr, "payment-consumer: kafka producer: %s\n", why);
    }
    return rk;
}

/* ---- Redis steps ---- */

typedef int (*append_fn)(pc *p, item *it, int full);
typedef int (*reply_fn)(pc *p, item *it, const redisReply *rep);

static int is_noscript(const redisReply *r) {
    return r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "NOSCRIPT", 8);
}

/* Pipelines one command per item, then reads every reply (in order) into `rf`.
 * Replies NOSCRIPT (script cache flushed, or a new primary) are sent again as EVAL
 * with the body. 0, or -1 when Redis failed (connection dropped or an error reply). */
static int run_step(pc *p, const char *step, item **L, int n, append_fn ap, reply_fn rf) {
    if (n == 0) return 0;
    for (int i = 0; i < n; i++)
        if (ap(p, L[i], 0) < 0) return -1;
    item **again = NULL;
    int n_again = 0, failed = 0;
    for (int i = 0; i < n; i++) {
        redisReply *rep = pc_redis_read(p->redis);
        if (!rep) {
            free(again);
            return -1;
        }
        if (is_noscript(rep)) {
            if (!again) again = malloc((size_t)n * sizeof *again);
            if (!again) abort();
            again[n_again++] = L[i];
        } else if (!failed && rf(p, L[i], rep) < 0) {
            failed = 1;
        }
        freeReplyObject(rep);
    }
    if (n_again && !failed) {
        CC_WARN("redis_noscript", "step=%s count=%d", step, n_again);
        for (int i = 0; i < n_again && !failed; i++)
            if (ap(p, again[i], 1) < 0) failed = -1;
        for (int i = 0; i < n_again && failed == 0; i++) {
            redisReply *rep = pc_redis_read(p->redis);
            if (!rep)
                failed = -1;
            else {
                if (rf(p, again[i], rep) < 0) failed = 1;
                freeReplyObject(rep);
            }
        }
    }
    free(again);
    return failed ? -1 : 0;
}

/* An error reply: logged; the batch will be retried. Redis' operational refusals
 * (a replica after a failover, loading, out of memory, a busy script) are warnings;
 * anything else (a script error, an unexpected reply) is a bug: an error. */
static int reply_error(const char *step, const item *it, const redisReply *rep) {
    static const char *const transient[] = {"READONLY", "LOADING",  "MASTERDOWN",  "OOM",
                                            "BUSY",     "TRYAGAIN", "CLUSTERDOWN", NULL};
    int warn = 0;
    for (int i = 0; rep->type == REDIS_REPLY_ERROR && transient[i] && !warn; i++)
        warn = !strncmp(rep->str, transient[i], strlen(transient[i]));
    cc_log(warn ? CC_LOG_WARN : CC_LOG_ERROR, "redis_error", "step=%s payment=%s reply=\"%s\"", step,
           it->req->payment_id, rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply type");
    return -1;
}

static void copy_str(char *dst, size_t len, const redisReply *r) {
    if (r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS))
        snprintf(dst, len, "%.*s", (int)r->len, r->str);
    else
        dst[0] = '\0';
}

static int64_t int_of(const redisReply *r) {
    if (!r) return 0;
    if (r->type == REDIS_REPLY_INTEGER) return r->integer;
    if (r->type == REDIS_REPLY_STRING) return strtoll(r->str, NULL, 10);
    return 0;
}

/* (1) the payment's record: HMGET cc:{C}:p:<pid> status amount user rid reason updated */
static int ap_read(pc *p, item *it, int full) {
    char key[ID_MAX * 2 + 16];
    snprintf(key, sizeof key, "cc:{%s}:p:%s", it->req->concert_id, it->req->payment_id);
    const char *argv[] = {"HMGET", key, "status", "amount", "user", "rid", "reason", "updated"};
    return pc_redis_append(p->redis, 8, argv, NULL);
}

static int rf_read(pc *p, item *it, const redisReply *rep) {
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 6) return reply_error("read", it, rep);
    char status[32], user[ID_MAX];
    copy_str(status, sizeof status, rep->element[0]);
    copy_str(user, sizeof user, rep->element[2]);
    int64_t amount = int_of(rep->element[1]);
    const Concert__V1__PaymentRequested *q = it->req;
    if (!status[0]) {
        CC_ERROR("payment_unknown", "payment=%s concert=%s user=\"%s\" partition=%" PRId32 " offset=%" PRId64,
                 q->payment_id, q->concert_id, q->user_id, it->m->partition, it->m->offset);
        it->state = I_SKIP;
        return 0;
    }
    if (strcmp(user, q->user_id) || amount != q->amount) {
        CC_ERROR("payment_mismatch",
                 "payment=%s concert=%s msg_user=\"%s\" user=\"%s\" msg_amount=%" PRId64 " amount=%" PRId64,
                 q->payment_id, q->concert_id, q->user_id, user, q->amount, amount);
        it->state = I_SKIP;
        return 0;
    }
    copy_str(it->rid, sizeof it->rid, rep->element[3]);
    if (!strcmp(status, "COMPLETED") || !strcmp(status, "FAILED")) {
        it->state = I_DONE;
        it->completed = status[0] == 'C';
        copy_str(it->reason, sizeof it->reason, rep->element[4]);
        it->updated = int_of(rep->element[5]);
    } else {
        it->state = I_TODO;
    }
    return 0;
}

/* (2) pay_debit: KEYS cc:{w:<user>}:bal cc:{w:<user>}:pay, ARGV pid amount */
static int ap_debit(pc *p, item *it, int full) {
    char bal[ID_MAX + 16], pay[ID_MAX + 16], amount[24];
    snprintf(bal, sizeof bal, "cc:{w:%s}:bal", it->req->user_id);
    snprintf(pay, sizeof pay, "cc:{w:%s}:pay", it->req->user_id);
    snprintf(amount, sizeof amount, "%" PRId64, it->req->amount);
    const char *args[] = {bal, pay, it->req->payment_id, amount};
    return pc_redis_append_eval(p->redis, &p->s_debit, full, 2, 4, args);
}

static int rf_debit(pc *p, item *it, const redisReply *rep) {
    if (rep->type == REDIS_REPLY_STRING || rep->type == REDIS_REPLY_STATUS) {
        if (!strcmp(rep->str, "DEBITED")) return it->debited = 1, 0;
        if (!strcmp(rep->str, "INSUFFICIENT")) return it->debited = 0, 0;
    }
    return reply_error("debit", it, rep);
}

/* (3) pay_commit: KEYS cc:{C}:q:tok, ARGV P pid DEBITED|INSUFFICIENT */
static int ap_commit(pc *p, item *it, int full) {
    char tok[ID_MAX + 16], prefix[ID_MAX + 8];
    snprintf(tok, sizeof tok, "cc:{%s}:q:tok", it->req->concert_id);
    snprintf(prefix, sizeof prefix, "cc:{%s}:", it->req->concert_id);
    const char *args[] = {tok, prefix, it->req->payment_id, it->debited ? "DEBITED" : "INSUFFICIENT"};
    return pc_redis_append_eval(p->redis, &p->s_commit, full, 1, 4, args);
}

static int rf_commit(pc *p, item *it, const redisReply *rep) {
    /* {0, pid, rid, user, amount, status, reason, key, created, updated, new} or {5, msg} */
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 2) return reply_error("commit", it, rep);
    if (int_of(rep->element[0]) != 0) {
        char msg[ID_MAX];
        copy_str(msg, sizeof msg, rep->element[1]);
        CC_ERROR("payment_unknown", "payment=%s concert=%s reason=\"%s\"", it->req->payment_id,
                 it->req->concert_id, msg);
        it->state = I_SKIP;
        return 0;
    }
    if (rep->elements < 10) return reply_error("commit", it, rep);
    char status[32];
    copy_str(status, sizeof status, rep->element[5]);
    if (strcmp(status, "COMPLETED") && strcmp(status, "FAILED")) return reply_error("commit", it, rep);
    it->state = I_DONE;
    it->completed = status[0] == 'C';
    copy_str(it->rid, sizeof it->rid, rep->element[2]);
    copy_str(it->reason, sizeof it->reason, rep->element[6]);
    it->updated = int_of(rep->element[9]);
    return 0;
}

/* (4) FAILED: pay_refund (KEYS bal pay refund, ARGV pid); COMPLETED: the reservation
 * for the PAID event (HMGET cc:{C}:r:<rid> sched seats paid). */
static int ap_finish(pc *p, item *it, int full) {
    if (!it->completed) {
        char bal[ID_MAX + 16], pay[ID_MAX + 16], ref[ID_MAX + 16];
        snprintf(bal, sizeof bal, "cc:{w:%s}:bal", it->req->user_id);
        snprintf(pay, sizeof pay, "cc:{w:%s}:pay", it->req->user_id);
        snprintf(ref, sizeof ref, "cc:{w:%s}:refund", it->req->user_id);
        const char *args[] = {bal, pay, ref, it->req->payment_id};
        return pc_redis_append_eval(p->redis, &p->s_refund, full, 3, 4, args);
    }
    char key[ID_MAX * 2 + 16];
    snprintf(key, sizeof key, "cc:{%s}:r:%s", it->req->concert_id, it->rid);
    const char *argv[] = {"HMGET", key, "sched", "seats", "paid"};
    return pc_redis_append(p->redis, 5, argv, NULL);
}

static int rf_finish(pc *p, item *it, const redisReply *rep) {
    if (!it->completed) {
        if ((rep->type == REDIS_REPLY_STRING || rep->type == REDIS_REPLY_STATUS) &&
            (!strcmp(rep->str, "REFUNDED") || !strcmp(rep->str, "NOT_DEBITED")))
            return 0;
        return reply_error("refund", it, rep);
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 3) return reply_error("reservation", it, rep);
    copy_str(it->sched, sizeof it->sched, rep->element[0]);
    char seats[1024];
    copy_str(seats, sizeof seats, rep->element[1]);
    it->paid_at = int_of(rep->element[2]);
    free(it->seats);
    it->seats = NULL;
    it->n_seats = 0;
    size_t cap = 1;
    for (const char *s = seats; *s; s++)
        cap += *s == ',';
    it->seats = calloc(cap, sizeof *it->seats);
    if (!it->seats) abort();
    for (char *s = seats; *s;) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) break;
        it->seats[it->n_seats++] = (int32_t)v;
        s = *end == ',' ? end + 1 : end;
    }
    return 0;
}

/* Runs the four steps for the items of one round (distinct users). */
static int settle_round(pc *p, item **L, int n) {
    item **sub = malloc((size_t)(n ? n : 1) * sizeof *sub);
    if (!sub) abort();
    int rc = run_step(p, "read", L, n, ap_read, rf_read);
    int k = 0;
    if (rc == 0) {
        for (int i = 0; i < n; i++)
            if (L[i]->state == I_TODO) sub[k++] = L[i];
        rc = run_step(p, "debit", sub, k, ap_debit, rf_debit);
    }
    if (rc == 0) rc = run_step(p, "commit", sub, k, ap_commit, rf_commit);
    if (rc == 0) {
        k = 0;
        for (int i = 0; i < n; i++)
            if (L[i]->state == I_DONE) sub[k++] = L[i];
        rc = run_step(p, "finish", sub, k, ap_finish, rf_finish);
    }
    free(sub);
    return rc;
}

static int settle(pc *p, item *items, int n) {
    size_t cap = n > 0 ? (size_t)n : 1;
    const char **users = malloc(cap * sizeof *users);
    int *round = malloc(cap * sizeof *round);
    item **L = malloc(cap * sizeof *L);
    if (!users || !round || !L) abort();
    for (int i = 0; i < n; i++)
        users[i] = items[i].req ? items[i].req->user_id : "";
    int rounds = pc_rounds(users, n, round);
    int rc = 0;
    for (int r = 0; r < rounds && rc == 0; r++) {
        int k = 0;
        for (int i = 0; i < n; i++)
            if (round[i] == r && items[i].req) {
                items[i].state = I_SKIP;
                L[k++] = &items[i];
            }
        rc = settle_round(p, L, k);
    }
    if (rc == 0 && p->cfg->redis_wait_replicas > 0) {
        char want[16], ms[16];
        snprintf(want, sizeof want, "%d", p->cfg->redis_wait_replicas);
        snprintf(ms, sizeof ms, "%d", p->cfg->redis_wait_timeout_ms);
        const char *argv[] = {"WAIT", want, ms};
        redisReply *rep = NULL;
        if (pc_redis_append(p->redis, 3, argv, NULL) == 0) rep = pc_redis_read(p->redis);
        if (!rep)
            rc = -1;
        else {
            if (rep->type != REDIS_REPLY_INTEGER || rep->integer < p->cfg->redis_wait_replicas) {
                CC_WARN("redis_wait_short", "wanted=%d acked=%lld timeout_ms=%d", p->cfg->redis_wait_replicas,
                        rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1LL,
                        p->cfg->redis_wait_timeout_ms);
                rc = -1;
            }
            freeReplyObject(rep);
        }
    }
    if (rc < 0 && pc_redis_is_up(p->redis) == 0) CC_WARN("batch_failed", "reason=redis_down");
    free(users);
    free(round);
    free(L);
    return rc;
}

/* ---- results ---- */

static int produce(pc *p, const char *topic, const char *key, const ProtobufCMessage *msg) {
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t stackbuf[1024], *buf = len <= sizeof stackbuf ? stackbuf : malloc(len);
    if (!buf) abort();
    protobuf_c_message_pack(msg, buf);
    rd_kafka_resp_err_t e = rd_kafka_producev(
        p->prod, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY((void *)key, strlen(key)),
        RD_KAFKA_V_VALUE(buf, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    if (buf != stackbuf) free(buf);
    if (e) {
        CC_WARN("produce_failed", "topic=%s reason=\"%s\"", topic, rd_kafka_err2str(e));
        return -1;
    }
    return 0;
}

static int64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int publish(pc *p, item *items, int n) {
    p->dr_failed = 0;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        item *it = &items[i];
        if (!it->req || it->state != I_DONE) continue;
        const Concert__V1__PaymentRequested *q = it->req;
        Concert__V1__PaymentResult r = CONCERT__V1__PAYMENT_RESULT__INIT;
        r.payment_id = q->payment_id;
        r.reservation_id = it->rid[0] ? it->rid : q->reservation_id;
        r.concert_id = q->concert_id;
        r.user_id = q->user_id;
        r.amount = q->amount;
        r.status = it->completed ? CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_COMPLETED
                                 : CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_FAILED;
        r.reason = it->reason;
        r.processed_at_unix_ms = it->updated ? it->updated : wall_ms();
        rc = produce(p, CC_TOPIC_PAYMENT_RESULTS, q->user_id, &r.base);
        if (rc == 0 && it->completed) {
            Concert__V1__ReservationEvent ev = CONCERT__V1__RESERVATION_EVENT__INIT;
            ev.reservation_id = r.reservation_id;
            ev.concert_id = q->concert_id;
            ev.schedule_id = it->sched;
            ev.user_id = q->user_id;
            ev.n_seat_numbers = it->n_seats;
            ev.seat_numbers = it->seats;
            ev.status = CONCERT__V1__RESERVATION_STATUS__RESERVATION_STATUS_PAID;
            ev.at_unix_ms = it->paid_at ? it->paid_at : r.processed_at_unix_ms;
            ev.payment_id = q->payment_id;
            rc = produce(p, CC_TOPIC_RESERVATION_EVENTS, q->concert_id, &ev.base);
        }
    }
    rd_kafka_resp_err_t fe = rd_kafka_flush(p->prod, 15000);
    if (rc == 0 && fe) {
        CC_WARN("publish_failed", "reason=\"flush: %s\"", rd_kafka_err2str(fe));
        rc = -1;
    }
    if (rc == 0 && p->dr_failed) {
        CC_WARN("publish_failed", "failed=%d reason=\"%s\"", p->dr_failed, p->dr_err);
        rc = -1;
    }
    if (rc < 0) {
        /* Drop what is left; the batch is re-processed and re-published. */
        rd_kafka_purge(p->prod, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(p->prod, 1000);
        char why[256];
        if (rd_kafka_fatal_error(p->prod, why, sizeof why)) {
            CC_ERROR("producer_recreated", "reason=\"%s\"", why);
            rd_kafka_destroy(p->prod);
            p->prod = make_producer(p);
            if (!p->prod) abort();
        }
    }
    return rc;
}

/* ---- offsets ---- */

static void commit_pending(pc *p, const char *why) {
    if (p->n_to_commit == 0) return;
    for (int i = 0; i < p->cap; i++)
        if (p->to_commit[i] >= 0 && !p->assigned[i]) p->to_commit[i] = -1, p->n_to_commit--;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(p->n_to_commit);
    for (int i = 0; i < p->cap; i++)
        if (p->to_commit[i] >= 0 && p->assigned[i])
            rd_kafka_topic_partition_list_add(l, CC_TOPIC_PAYMENT_REQUESTS, i)->offset = p->to_commit[i];
    if (l->cnt == 0) {
        rd_kafka_topic_partition_list_destroy(l);
        return;
    }
    rd_kafka_resp_err_t e = rd_kafka_commit(p->rk, l, 0); /* blocks while the group rebalances */
    p->last_commit_try = mono_ms();
    if (!e) {
        /* A partition may still fail on its own. */
        for (int i = 0; i < l->cnt; i++) {
            int32_t part = l->elems[i].partition;
            if (l->elems[i].err) {
                e = l->elems[i].err;
                continue;
            }
            if (p->to_commit[part] == l->elems[i].offset) {
                p->to_commit[part] = -1;
                p->n_to_commit--;
            }
        }
    }
    if (e) {
        int rebalance = e == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION ||
                        e == RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID ||
                        e == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS || e == RD_KAFKA_RESP_ERR__STATE;
        /* librdkafka 2.0.2 (#4059): a commit racing a cooperative rebalance can fail
         * this way and cost us the assignment; the next owner re-processes from the
         * last committed offset, which is harmless. Retried while we keep the partition. */
        CC_WARN("commit_failed", "when=%s code=%s reason=\"%s\" during_rebalance=%d", why,
                rd_kafka_err2name(e), rd_kafka_err2str(e), rebalance);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

static void seek_list(pc *p, rd_kafka_topic_partition_list_t *l) {
    rd_kafka_error_t *e = rd_kafka_seek_partitions(p->rk, l, 5000);
    if (e) {
        CC_WARN("seek_failed", "reason=\"%s\"", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
    for (int i = 0; i < l->cnt; i++)
        if (l->elems[i].err)
            CC_WARN("seek_failed", "partition=%" PRId32 " reason=\"%s\"", l->elems[i].partition,
                    rd_kafka_err2str(l->elems[i].err));
}

/* After a failure: back to each partition's first offset of the batch. */
static void seek_back(pc *p, item *items, int n) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    for (int i = 0; i < n; i++) {
        rd_kafka_message_t *m = items[i].m;
        if (!is_assigned(p, m->partition)) continue;
        rd_kafka_topic_partition_t *tp =
            rd_kafka_topic_partition_list_find(l, CC_TOPIC_PAYMENT_REQUESTS, m->partition);
        if (!tp)
            rd_kafka_topic_partition_list_add(l, CC_TOPIC_PAYMENT_REQUESTS, m->partition)->offset = m->offset;
        else if (m->offset < tp->offset)
            tp->offset = m->offset;
    }
    for (int i = 0; i < l->cnt; i++)
        p->retry_from[l->elems[i].partition] = l->elems[i].offset;
    if (l->cnt) seek_list(p, l);
    rd_kafka_topic_partition_list_destroy(l);
}

/* ---- lag ---- */

static void log_lag(pc *p) {
    uint64_t now = mono_ms();
    if (now < p->next_lag) return;
    p->next_lag = now + (uint64_t)p->cfg->lag_interval_ms;
    rd_kafka_topic_partition_list_t *l = NULL;
    if (rd_kafka_assignment(p->rk, &l) || !l) return;
    int64_t lag = 0;
    int known = 0;
    if (l->cnt && rd_kafka_committed(p->rk, l, 2000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        for (int i = 0; i < l->cnt; i++) {
            int64_t lo = -1, hi = -1;
            rd_kafka_get_watermark_offsets(p->rk, l->elems[i].topic, l->elems[i].partition, &lo, &hi);
            if (hi < 0) continue;
            int64_t base = l->elems[i].offset >= 0 ? l->elems[i].offset : lo >= 0 ? lo : 0;
            if (hi > base) lag += hi - base;
            known++;
        }
    }
    double secs = (double)(now - p->window_start) / 1000.0;
    CC_INFO("consumer_lag",
            "lag=%" PRId64 " partitions=%d known=%d processed=%" PRIu64 " rate_per_s=%.0f"
            " completed_total=%" PRIu64 " failed_total=%" PRIu64,
            lag, l->cnt, known, p->window_done, secs > 0 ? (double)p->window_done / secs : 0.0,
            p->n_completed, p->n_failed);
    p->window_start = now;
    p->window_done = 0;
    rd_kafka_topic_partition_list_destroy(l);
}

/* ---- the loop ---- */

static void free_items(item *items, int n) {
    for (int i = 0; i < n; i++) {
        if (items[i].req) concert__v1__payment_requested__free_unpacked(items[i].req, NULL);
        free(items[i].seats);
        rd_kafka_message_destroy(items[i].m);
    }
}

static int valid_id(const char *s, size_t max) { return s && *s && strlen(s) <= max; }

/* Polls up to --batch messages: waits for the first, then takes what is there. */
static int poll_batch(pc *p, item *items) {
    int n = 0, timeout = p->cfg->poll_timeout_ms;
    while (n < p->cfg->batch) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(p->rk, timeout);
        if (!m) break;
        timeout = 0;
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                CC_WARN("consume_error", "topic=%s partition=%" PRId32 " reason=\"%s\"",
                        m->rkt ? rd_kafka_topic_name(m->rkt) : "-", m->partition, rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        memset(&items[n], 0, sizeof items[n]);
        items[n++].m = m;
    }
    /* A partition revoked while we polled belongs to someone else now. After a
     * failed batch, a partition must resume exactly where that batch began. */
    int k = 0;
    rd_kafka_topic_partition_list_t *reseek = NULL;
    for (int i = 0; i < n; i++) {
        rd_kafka_message_t *m = items[i].m;
        int keep = is_assigned(p, m->partition);
        if (keep && p->retry_from[m->partition] >= 0) {
            if (m->offset <= p->retry_from[m->partition]) {
                p->retry_from[m->partition] = -1;
            } else {
                keep = 0;
                if (!reseek) reseek = rd_kafka_topic_partition_list_new(4);
                if (!rd_kafka_topic_partition_list_find(reseek, CC_TOPIC_PAYMENT_REQUESTS, m->partition)) {
                    CC_WARN("seek_not_applied", "partition=%" PRId32 " want=%" PRId64 " got=%" PRId64,
                            m->partition, p->retry_from[m->partition], m->offset);
                    rd_kafka_topic_partition_list_add(reseek, CC_TOPIC_PAYMENT_REQUESTS, m->partition)
                        ->offset = p->retry_from[m->partition];
                }
            }
        }
        if (keep)
            items[k++] = items[i];
        else
            rd_kafka_message_destroy(m);
    }
    if (reseek) {
        seek_list(p, reseek);
        rd_kafka_topic_partition_list_destroy(reseek);
    }
    for (int i = 0; i < k; i++) {
        item *it = &items[i];
        it->req = concert__v1__payment_requested__unpack(NULL, it->m->len, it->m->payload);
        if (it->req && (!valid_id(it->req->payment_id, 128) || !valid_id(it->req->concert_id, 64) ||
                        !valid_id(it->req->user_id, 128) || it->req->amount < 0)) {
            concert__v1__payment_requested__free_unpacked(it->req, NULL);
            it->req = NULL;
        }
        if (!it->req)
            CC_ERROR("bad_message", "partition=%" PRId32 " offset=%" PRId64 " bytes=%zu", it->m->partition,
                     it->m->offset, it->m->len);
    }
    return k;
}

static void record_offsets(pc *p, item *items, int n) {
    for (int i = 0; i < n; i++) {
        int32_t part = items[i].m->partition;
        if (!is_assigned(p, part)) continue;
        int64_t next = items[i].m->offset + 1;
        if (p->to_commit[part] < 0) p->n_to_commit++;
        if (next > p->to_commit[part]) p->to_commit[part] = next;
    }
}

static void run_loop(pc *p) {
    item *items = malloc((size_t)p->cfg->batch * sizeof *items);
    if (!items) abort();
    while (!stop_flag) {
        log_lag(p);
        if (p->n_to_commit && mono_ms() - p->last_commit_try >= 1000) commit_pending(p, "retry");
        if (pc_redis_ensure(p->redis, &stop_flag) < 0) break;
        int n = poll_batch(p, items);
        if (n == 0) continue;
        uint64_t t0 = mono_ms();
        int rc = settle(p, items, n);
        uint64_t t1 = mono_ms();
        if (rc == 0) rc = publish(p, items, n);
        uint64_t t2 = mono_ms();
        if (rc == 0) {
            int completed = 0, failed = 0, skipped = 0;
            for (int i = 0; i < n; i++) {
                if (!items[i].req || items[i].state == I_SKIP)
                    skipped++;
                else if (items[i].completed)
                    completed++;
                else
                    failed++;
            }
            record_offsets(p, items, n);
            commit_pending(p, "batch");
            p->n_completed += (uint64_t)completed;
            p->n_failed += (uint64_t)failed;
            p->n_skipped += (uint64_t)skipped;
            p->n_batches++;
            p->window_done += (uint64_t)n;
            p->fail_backoff_ms = 0;
            uint64_t t3 = mono_ms();
            CC_DEBUG("batch",
                     "messages=%d completed=%d failed=%d skipped=%d ms=%" PRIu64 " redis_ms=%" PRIu64
                     " publish_ms=%" PRIu64 " commit_ms=%" PRIu64,
                     n, completed, failed, skipped, t3 - t0, t1 - t0, t2 - t1, t3 - t2);
        } else {
            p->n_retries++;
            seek_back(p, items, n);
            CC_WARN("batch_retry", "messages=%d redis=%s", n, pc_redis_is_up(p->redis) ? "up" : "down");
            /* Redis down: pc_redis_ensure backs off. Otherwise (WAIT short, Kafka
             * down, an error reply) back off here. */
            if (pc_redis_is_up(p->redis)) {
                p->fail_backoff_ms = p->fail_backoff_ms ? p->fail_backoff_ms * 2 : 100;
                if (p->fail_backoff_ms > 2000) p->fail_backoff_ms = 2000;
                pause_ms(p->fail_backoff_ms);
            }
        }
        free_items(items, n);
    }
    free(items);
}

int pc_run(const pc_config *cfg_in) {
    pc_config cfg = *cfg_in;
    if (!cfg.group || !*cfg.group) cfg.group = "payment-consumer";
    if (cfg.batch <= 0) cfg.batch = 500;
    if (cfg.redis_wait_timeout_ms <= 0) cfg.redis_wait_timeout_ms = 1000;
    if (cfg.redis_timeout_ms <= 0) cfg.redis_timeout_ms = 2000;
    if (cfg.partitions <= 0) cfg.partitions = 12;
    if (cfg.session_timeout_ms <= 0) cfg.session_timeout_ms = 10000;
    if (cfg.lag_interval_ms <= 0) cfg.lag_interval_ms = 10000;
    if (cfg.poll_timeout_ms <= 0) cfg.poll_timeout_ms = 100;
    if (!cfg.brokers || !*cfg.brokers) {
        fprintf(stderr, "payment-consumer: --kafka BROKERS is required\n");
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    pc p;
    memset(&p, 0, sizeof p);
    p.cfg = &cfg;
    char err[512];
    if (pc_redis_create(&p.redis, cfg.redis_url, cfg.redis_timeout_ms, err, sizeof err) < 0) {
        fprintf(stderr, "payment-consumer: %s\n", err);
        return 1;
    }
    pc_script_init(&p.s_debit, "pay_debit", NULL, 0, pc_lua_pay_debit, pc_lua_pay_debit_len);
    pc_script_init(&p.s_commit, "pay_commit", pc_lua_bk_lib, pc_lua_bk_lib_len, pc_lua_pay_commit,
                   pc_lua_pay_commit_len);
    pc_script_init(&p.s_refund, "pay_refund", NULL, 0, pc_lua_pay_refund, pc_lua_pay_refund_len);
    p.scripts[0] = &p.s_debit, p.scripts[1] = &p.s_commit, p.scripts[2] = &p.s_refund;
    pc_redis_set_scripts(p.redis, p.scripts, 3);
    ensure_cap(&p, 0);

    int rc = 0;
    if (cfg.create_topics) {
        if (cc_kafka_ensure_topics(cfg.brokers, cfg.partitions, -1, 15000, err, sizeof err) < 0) {
            fprintf(stderr, "payment-consumer: %s\n", err);
            rc = 1;
            goto out;
        }
    }
    p.rk = make_consumer(&p);
    p.prod = p.rk ? make_producer(&p) : NULL;
    if (!p.rk || !p.prod) {
        rc = 1;
        goto out;
    }
    CC_INFO("started", "group=%s brokers=%s topic=%s batch=%d redis_wait_replicas=%d", cfg.group, cfg.brokers,
            CC_TOPIC_PAYMENT_REQUESTS, cfg.batch, cfg.redis_wait_replicas);
    p.window_start = mono_ms();
    p.next_lag = p.window_start + (uint64_t)cfg.lag_interval_ms;
    run_loop(&p);
    commit_pending(&p, "shutdown");
    CC_INFO("stopping",
            "completed=%" PRIu64 " failed=%" PRIu64 " skipped=%" PRIu64 " batches=%" PRIu64
            " retries=%" PRIu64,
            p.n_completed, p.n_failed, p.n_skipped, p.n_batches, p.n_retries);
    rd_kafka_resp_err_t e = rd_kafka_consumer_close(p.rk);
    if (e) CC_WARN("close_failed", "reason=\"%s\"", rd_kafka_err2str(e));
out:
    if (p.rk) rd_kafka_destroy(p.rk);
    if (p.prod) {
        rd_kafka_flush(p.prod, 5000);
        rd_kafka_destroy(p.prod);
    }
    pc_redis_free(p.redis);
    pc_script_free(&p.s_debit);
    pc_script_free(&p.s_commit);
    pc_script_free(&p.s_refund);
    free(p.assigned);
    free(p.to_commit);
    free(p.retry_from);
    if (rc == 0) CC_INFO("stopped", NULL);
    return rc;
}
