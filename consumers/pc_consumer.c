/* pc_consumer: see pc_consumer.h.
 *
 * Flow. librdkafka's consumer queue signals the loop (cc_kafka); each fetched message
 * goes into a buffer; after each poll phase (a uv_check) the buffer is cut into a
 * batch of up to --batch messages, as long as fewer than --max-inflight batches are
 * settling. At low load a batch is one message (lowest latency); under load messages
 * pile up while batches are in flight, so batches grow by themselves. A batch settles
 * every payment with the payment steps (cc_pay: claim, debit, commit, refund), each a
 * reply callback of its own on the async Redis pool: replies are matched to their
 * commands by hiredis, so a failed step can never leave a stale reply for the next
 * one. Then, if asked, a fence write and WAIT; then the results are produced
 * (cc_kafka, delivery reports on the loop); once Kafka acknowledged all of them the
 * batch is done. Offsets are committed asynchronously for the longest run of done
 * batches in fetch order, at most every --commit-interval-ms.
 *
 * Order (why several batches in flight are still right). A user's payments share a
 * partition (key = user id), so they arrive in Kafka order, and batches are cut in
 * arrival order. Each payment waits for the previous payment *of the same user* (in
 * this or an earlier batch) to finish all its Redis steps before its own first step
 * (`users`, a map user -> latest payment of that user in flight). For one user this
 * is exactly "one payment after the other, in Kafka order": debiting p2 before p1's
 * refund could make p2 fail where sequential application would not. Payments of
 * different users touch disjoint keys except commutative counters (schedule held /
 * sold) and distinct seats, reservations and tokens in a concert's slot, so their
 * interleaving changes nothing. Offsets are committed only for a prefix of batches
 * that are all done, so a commit never passes an unsettled payment.
 *
 * Failure (rewind). Any failed step (Redis down or timed out, an error reply such as
 * OOM or BUSY, NOSCRIPT more than a few times, WAIT short, a result not delivered)
 * dooms its batch and every later one: they start no new step, and once quiet each
 * partition they touched is sought back (asynchronously) to its first unsettled
 * offset; messages fetched beyond it before the seek takes effect are dropped. After
 * a backoff (or once Redis is up again) processing resumes. Re-processing is harmless:
 * every step is idempotent by payment id. Earlier batches still complete and commit.
 *
 * WAIT covers only the writes made on its own connection, and the batch's steps ran
 * on any connection of the pool (of any primary, on a Redis Cluster): so the batch
 * ends with cc_redis_wait, which writes a fence and WAITs on every connection of every
 * primary. The fences' replication offsets are past every write Redis applied before
 * them, including all of this batch's (their replies came first), and those of an
 * earlier attempt of a redelivered batch, which may write nothing itself.
 *
 * Partitions revoked by a rebalance are unassigned at once: their buffered messages
 * are dropped and in-flight work on them is never committed (another consumer owns
 * them now and re-processes from the last commit, which is harmless).
 *
 * Must not: commit before the effects are applied (and replicated when asked), keep
 * messages of a revoked partition, block the loop, or crash on a failed commit
 * (librdkafka 2.0.2 #4059: a commit racing a cooperative rebalance may fail with
 * ILLEGAL_GENERATION; the messages are then redelivered, which is harmless). */
#define _GNU_SOURCE
#include "pc_consumer.h"

#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "cc_kafka.h"
#include "cc_log.h"
#include "cc_pay.h"
#include "cc_redis.h"
#include "cc_smap.h"
#include "concert/v1/booking.pb-c.h"
#include "concert/v1/events.pb-c.h"
#include "concert/v1/payment.pb-c.h"
#include "pc_metrics.h"

#define SEATS_MAX 16
#define NOSCRIPT_TRIES 4

/* ---- state ---- */

enum { IT_WAIT, IT_CLAIM, IT_DEBIT, IT_COMMIT, IT_REFUND, IT_DONE };
enum { B_STEPS, B_WAIT, B_PUBLISH, B_DONE };

typedef struct pc pc;
typedef struct batch batch;

typedef struct item {
    batch *b;
    rd_kafka_message_t *m;
    Concert__V1__PaymentRequested *req; /* NULL: undecodable or invalid (skipped) */
    uint32_t part_epoch;                /* the partition's assignment when fetched */
    int step, tries, debited, skipped, cancelled;
    cc_pay_state final;
    char rid[CC_PAY_ID_MAX + 1], reason[256], sched[CC_PAY_ID_MAX + 1];
    int32_t seats[SEATS_MAX];
    size_t n_seats;
    int64_t updated_ms, paid_ms;
    struct item *next_same_user; /* this user's next payment, waiting for this one */
    struct item *ready_next;     /* ready list */
    int in_map;
} item;

struct batch {
    pc *p;
    item *items;
    int n;
    uint64_t seq;
    int steps_left; /* items whose steps are not over */
    int pending;    /* fence/WAIT replies and delivery reports outstanding */
    int phase;
    int doomed;
    uint64_t t0_ms;
    batch *next;
};

struct pc {
    pc_config cfg;
    uv_loop_t loop;
    cc_redis *redis;
    cc_redis_script *scripts[CC_PAY_N_SCRIPTS];
    cc_kafka_consumer *kc;
    cc_kafka_producer *prod;
    pc_metrics *metrics;
    /* Partitions of the requests topic (index = partition). */
    int cap;
    unsigned char *assigned;
    uint32_t *epoch;
    int64_t *to_commit; /* next offset to commit, -1 none */
    int64_t *committed; /* last committed (by us or found at assignment), -1 unknown */
    int64_t *retry_from; /* after a rewind: the offset the partition must resume at */
    int64_t *seek_to;    /* during a rewind: the lowest unsettled offset */
    int n_dirty;         /* partitions with something to commit */
    /* Fetched, not yet in a batch. */
    rd_kafka_message_t **buf;
    int n_buf, cap_buf, paused;
    /* Batches in flight, in fetch order. */
    batch *head, *tail;
    int n_inflight;
    uint64_t seq;
    cc_smap *users;
    item *ready, *ready_tail;
    int pumping, completing;
    int rewinding, backing_off, backoff_ms;
    int stopping, stopped_consumer, exit_code;
    int commit_inflight, commit_again, health_inflight;
    int jobs; /* thread-pool jobs using the consumer: it closes only once they are done */
    uint64_t last_commit_ms;
    double tokens;
    uint64_t tokens_at;
    uv_check_t check;
    uv_timer_t t_resume, t_commit, t_lag, t_stop;
    uv_signal_t sig_term, sig_int;
    uv_async_t stop_async;
    /* Counters (also in /metrics). */
    uint64_t n_completed, n_failed, n_skipped, n_batches, n_retries, n_redis_errors, n_kafka_errors;
    uint64_t window_start, window_done;
};

static pc *the_pc; /* for pc_request_stop */

static uint64_t now_ms(pc *p) { return uv_now(&p->loop); }

static int64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pump(pc *p);
static void batch_check(batch *b);
static void doom_from(pc *p, batch *b, const char *why);
static void try_dispatch(pc *p);
static void maybe_finish_stop(pc *p);
static void start_step(item *it);

/* ---- users map: user id -> that user's latest payment in flight ---- */

/* Makes `it` its user's latest item; returns the previous one still in flight, if any. */
static item *users_push(cc_smap *u, item *it) {
    item *prev = cc_smap_put(u, it->req->user_id, it);
    if (prev) prev->in_map = 0;
    it->in_map = 1;
    return prev;
}

static void users_remove(cc_smap *u, item *it) {
    if (!it->in_map) return;
    if (cc_smap_get(u, it->req->user_id) == it) cc_smap_del(u, it->req->user_id);
    it->in_map = 0;
}

/* ---- partitions ---- */

static void ensure_cap(pc *p, int32_t part) {
    if (part < p->cap) return;
    int cap = p->cap ? p->cap : 16;
    while (cap <= part)
        cap *= 2;
    p->assigned = realloc(p->assigned, (size_t)cap);
    p->epoch = realloc(p->epoch, (size_t)cap * sizeof *p->epoch);
    p->to_commit = realloc(p->to_commit, (size_t)cap * sizeof *p->to_commit);
    p->committed = realloc(p->committed, (size_t)cap * sizeof *p->committed);
    p->retry_from = realloc(p->retry_from, (size_t)cap * sizeof *p->retry_from);
    p->seek_to = realloc(p->seek_to, (size_t)cap * sizeof *p->seek_to);
    if (!p->assigned || !p->epoch || !p->to_commit || !p->committed || !p->retry_from || !p->seek_to) abort();
    for (int i = p->cap; i < cap; i++) {
        p->assigned[i] = 0, p->epoch[i] = 0;
        p->to_commit[i] = p->committed[i] = p->retry_from[i] = p->seek_to[i] = -1;
    }
    p->cap = cap;
}

static int is_assigned(const pc *p, int32_t part) { return part >= 0 && part < p->cap && p->assigned[part]; }

static void note_seek(pc *p, int32_t part, int64_t offset) {
    if (!is_assigned(p, part)) return;
    if (p->seek_to[part] < 0 || offset < p->seek_to[part]) p->seek_to[part] = offset;
}

/* "0,3,5" for logs. */
static void fmt_parts(char *out, size_t len, const rd_kafka_topic_partition_list_t *l) {
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; i < l->cnt && o + 12 < len; i++)
        o += (size_t)snprintf(out + o, len - o, "%s%" PRId32, i ? "," : "", l->elems[i].partition);
}

/* ---- committing ---- */

static void commit_now(pc *p);

static void on_commit_timer(uv_timer_t *t) { commit_now(t->data); }

/* Commits soon: at once if the last commit is older than --commit-interval-ms. */
static void commit_soon(pc *p) {
    if (p->n_dirty == 0) return;
    if (p->commit_inflight) {
        p->commit_again = 1;
        return;
    }
    if (uv_is_active((uv_handle_t *)&p->t_commit)) return;
    uint64_t due = p->last_commit_ms + (uint64_t)p->cfg.commit_interval_ms, now = now_ms(p);
    uv_timer_start(&p->t_commit, on_commit_timer, due > now ? due - now : 0, 0);
}

static void commit_now(pc *p) {
    if (p->n_dirty == 0 || p->commit_inflight || !p->kc) return;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(p->n_dirty);
    for (int i = 0; i < p->cap; i++)
        if (p->to_commit[i] >= 0 && p->assigned[i])
            rd_kafka_topic_partition_list_add(l, CC_TOPIC_PAYMENT_REQUESTS, i)->offset = p->to_commit[i];
    for (int i = 0; i < p->cap; i++)
        p->to_commit[i] = -1;
    p->n_dirty = 0;
    p->last_commit_ms = now_ms(p);
    if (l->cnt && cc_kafka_consumer_commit(p->kc, l) == 0) p->commit_inflight = 1;
    rd_kafka_topic_partition_list_destroy(l);
}

static void on_committed(rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *offsets, void *payload) {
    pc *p = payload;
    p->commit_inflight = 0;
    for (int i = 0; offsets && i < offsets->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &offsets->elems[i];
        if (strcmp(tp->topic, CC_TOPIC_PAYMENT_REQUESTS)) continue;
        int32_t part = tp->partition;
        if (!tp->err && !err) {
            if (part < p->cap && p->assigned[part] && tp->offset > p->committed[part]) p->committed[part] = tp->offset;
        } else if (is_assigned(p, part) && p->to_commit[part] < tp->offset) {
            /* Try again with the next commit (while we keep the partition). */
            if (p->to_commit[part] < 0) p->n_dirty++;
            p->to_commit[part] = tp->offset;
        }
    }
    rd_kafka_resp_err_t e = err;
    for (int i = 0; !e && offsets && i < offsets->cnt; i++)
        e = offsets->elems[i].err;
    if (e && e != RD_KAFKA_RESP_ERR__NO_OFFSET) {
        p->n_kafka_errors++;
        int rebalance = e == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION || e == RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID ||
                        e == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS || e == RD_KAFKA_RESP_ERR__STATE;
        CC_WARN("commit_failed", "code=%s reason=\"%s\" during_rebalance=%d", rd_kafka_err2name(e),
                rd_kafka_err2str(e), rebalance);
    }
    if (p->commit_again || p->n_dirty) {
        p->commit_again = 0;
        commit_soon(p);
    }
    maybe_finish_stop(p);
}

/* ---- batches: completion in fetch order ---- */

static void item_free(item *it) {
    if (it->req) concert__v1__payment_requested__free_unpacked(it->req, NULL);
    if (it->m) rd_kafka_message_destroy(it->m);
}

static void batch_free(batch *b) {
    for (int i = 0; i < b->n; i++)
        item_free(&b->items[i]);
    free(b->items);
    free(b);
}

static void backoff_done(uv_timer_t *t);

/* Every doomed batch is quiet and every earlier one is done: seek back and pause. */
static void finish_rewind(pc *p) {
    for (int i = 0; i < p->n_buf; i++) {
        note_seek(p, p->buf[i]->partition, p->buf[i]->offset);
        rd_kafka_message_destroy(p->buf[i]);
    }
    p->n_buf = 0;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    for (int i = 0; i < p->cap; i++) {
        if (p->seek_to[i] >= 0 && p->assigned[i]) {
            rd_kafka_topic_partition_list_add(l, CC_TOPIC_PAYMENT_REQUESTS, i)->offset = p->seek_to[i];
            p->retry_from[i] = p->seek_to[i];
        }
        p->seek_to[i] = -1;
    }
    if (l->cnt && p->kc) {
        rd_kafka_error_t *e = rd_kafka_seek_partitions(cc_kafka_consumer_rk(p->kc), l, 0 /* async */);
        if (e) {
            CC_WARN("seek_failed", "reason=\"%s\"", rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
    p->rewinding = 0;
    if (p->stopping) {
        maybe_finish_stop(p);
        return;
    }
    /* Redis down: resume when it is up again (on_redis_state). Otherwise back off. */
    p->backoff_ms = p->backoff_ms ? p->backoff_ms * 2 : 100;
    if (p->backoff_ms > 2000) p->backoff_ms = 2000;
    p->backing_off = 1;
    uv_timer_start(&p->t_resume, backoff_done, (uint64_t)p->backoff_ms, 0);
}

static void complete_batches(pc *p) {
    if (p->completing) return; /* the outer call's loop sees this batch too */
    p->completing = 1;
    while (p->head && p->head->phase == B_DONE) {
        batch *b = p->head;
        p->head = b->next;
        if (!p->head) p->tail = NULL;
        p->n_inflight--;
        if (b->doomed) {
            for (int i = 0; i < b->n; i++)
                note_seek(p, b->items[i].m->partition, b->items[i].m->offset);
        } else {
            int completed = 0, failed = 0, skipped = 0;
            int64_t now = wall_ms();
            for (int i = 0; i < b->n; i++) {
                item *it = &b->items[i];
                int32_t part = it->m->partition;
                if (is_assigned(p, part) && p->epoch[part] == it->part_epoch) {
                    int64_t next = it->m->offset + 1;
                    if (p->to_commit[part] < 0) p->n_dirty++;
                    if (next > p->to_commit[part]) p->to_commit[part] = next;
                }
                const char *outcome = it->skipped ? "skipped" : it->final == CC_PAY_COMPLETED ? "completed" : "failed";
                if (it->skipped) skipped++;
                else if (it->final == CC_PAY_COMPLETED) completed++;
                else failed++;
                rd_kafka_timestamp_type_t tt;
                int64_t ts = rd_kafka_message_timestamp(it->m, &tt);
                pc_metrics_payment(p->metrics, outcome, ts > 0 && now >= ts ? (double)(now - ts) / 1000.0 : -1);
            }
            p->n_completed += (uint64_t)completed;
            p->n_failed += (uint64_t)failed;
            p->n_skipped += (uint64_t)skipped;
            p->n_batches++;
            p->window_done += (uint64_t)b->n;
            p->backoff_ms = 0;
            pc_metrics_batch(p->metrics, b->n);
            CC_DEBUG("batch", "messages=%d completed=%d failed=%d skipped=%d ms=%" PRIu64, b->n, completed, failed,
                     skipped, now_ms(p) - b->t0_ms);
        }
        batch_free(b);
    }
    p->completing = 0;
    commit_soon(p);
    if (p->rewinding && !p->head) finish_rewind(p);
    try_dispatch(p);
    maybe_finish_stop(p);
}

/* ---- results ---- */

static void on_result_delivered(const char *err, void *payload) {
    batch *b = payload;
    b->pending--;
    if (err) {
        b->p->n_kafka_errors++;
        doom_from(b->p, b, err);
    }
    batch_check(b);
}

static int produce(batch *b, const char *topic, const char *key, const ProtobufCMessage *msg) {
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t stackbuf[1024], *buf = len <= sizeof stackbuf ? stackbuf : malloc(len);
    if (!buf) abort();
    protobuf_c_message_pack(msg, buf);
    int rc = cc_kafka_produce(b->p->prod, topic, key, strlen(key), buf, len, on_result_delivered, b);
    if (buf != stackbuf) free(buf);
    if (rc == 0) b->pending++;
    return rc;
}

static void publish(batch *b) {
    b->phase = B_PUBLISH;
    for (int i = 0; i < b->n && !b->doomed; i++) {
        item *it = &b->items[i];
        if (it->skipped) continue;
        const Concert__V1__PaymentRequested *q = it->req;
        cc_pay_record rec = {.rid = it->rid, .reason = it->reason, .state = it->final, .updated_ms = it->updated_ms};
        Concert__V1__PaymentResult r;
        cc_pay_result_event(&r, q, &rec);
        if (!r.processed_at_unix_ms) r.processed_at_unix_ms = wall_ms();
        if (produce(b, CC_TOPIC_PAYMENT_RESULTS, q->user_id, &r.base) < 0) {
            doom_from(b->p, b, "results not queued");
            break;
        }
        if (it->final == CC_PAY_COMPLETED) {
            Concert__V1__ReservationEvent ev = CONCERT__V1__RESERVATION_EVENT__INIT;
            ev.reservation_id = r.reservation_id;
            ev.concert_id = q->concert_id;
            ev.schedule_id = it->sched;
            ev.user_id = q->user_id;
            ev.n_seat_numbers = it->n_seats;
            ev.seat_numbers = it->seats;
            ev.status = CONCERT__V1__RESERVATION_STATUS__RESERVATION_STATUS_PAID;
            ev.at_unix_ms = it->paid_ms ? it->paid_ms : r.processed_at_unix_ms;
            ev.payment_id = q->payment_id;
            if (produce(b, CC_TOPIC_RESERVATION_EVENTS, q->concert_id, &ev.base) < 0) {
                doom_from(b->p, b, "results not queued");
                break;
            }
        }
    }
}

/* ---- WAIT ---- */

static void on_wait(int acked, const char *err, void *payload) {
    batch *b = payload;
    pc *p = b->p;
    b->pending--;
    if (acked < p->cfg.redis_wait_replicas) {
        CC_WARN("redis_wait_short", "wanted=%d acked=%d timeout_ms=%d%s%s", p->cfg.redis_wait_replicas, acked,
                p->cfg.redis_wait_timeout_ms, err ? " reason=" : "", err ? err : "");
        doom_from(p, b, "WAIT short");
    }
    batch_check(b);
}

/* Replicated when asked: cc_redis_wait writes a fence and WAITs on every connection
 * of every primary, so it covers this batch's writes and those of an earlier attempt
 * of a redelivered batch (which may now write nothing). */
static void start_wait(batch *b) {
    pc *p = b->p;
    b->phase = B_WAIT;
    if (cc_redis_wait(p->redis, p->cfg.redis_wait_replicas, p->cfg.redis_wait_timeout_ms, on_wait, b) == 0)
        b->pending++;
    else
        doom_from(p, b, "redis unavailable");
}

/* Moves a batch on once nothing of it is outstanding. */
static void batch_check(batch *b) {
    if (b->steps_left > 0 || b->pending > 0 || b->phase == B_DONE) return;
    pc *p = b->p;
    if (b->doomed) {
        b->phase = B_DONE;
    } else if (b->phase == B_STEPS) {
        if (p->cfg.redis_wait_replicas > 0) start_wait(b);
        else publish(b);
        if (b->pending > 0) return;
        if (!b->doomed && b->phase == B_WAIT) publish(b); /* nothing sent: cannot happen, but safe */
        if (b->pending > 0) return;
        b->phase = B_DONE;
    } else if (b->phase == B_WAIT) {
        publish(b);
        if (b->pending > 0) return;
        b->phase = B_DONE;
    } else {
        b->phase = B_DONE;
    }
    complete_batches(p);
}

/* Dooms `b` and every later batch: no new steps; re-processed after a seek back. */
static void doom_from(pc *p, batch *b, const char *why) {
    if (b->doomed) return;
    int first = !p->rewinding;
    p->rewinding = 1;
    int n = 0;
    for (batch *x = b; x; x = x->next)
        if (!x->doomed) {
            x->doomed = 1;
            n += x->n;
        }
    if (first) {
        p->n_retries++;
        CC_WARN("batch_retry", "messages=%d reason=\"%s\" redis=%s", n, why ? why : "",
                cc_redis_is_up(p->redis) ? "up" : "down");
    }
    /* Stop fetching until the seek back: what comes now is re-fetched anyway. */
    if (p->kc && !p->paused) {
        p->paused = 1;
        cc_kafka_consumer_pause(p->kc, 1);
    }
}

/* ---- the payment steps (one reply callback per step and payment) ---- */

/* The item's steps are over (done, skipped or cancelled): hand over to the user's
 * next payment, and let the batch move on. */
static void item_over(item *it) {
    batch *b = it->b;
    pc *p = b->p;
    it->step = IT_DONE;
    item *next = it->next_same_user;
    it->next_same_user = NULL;
    if (next) {
        /* Its predecessor is over: it may start (through the ready list: no deep recursion). */
        next->ready_next = NULL;
        if (p->ready_tail) p->ready_tail->ready_next = next;
        else p->ready = next;
        p->ready_tail = next;
    } else if (it->req) {
        users_remove(p->users, it);
    }
    b->steps_left--;
    batch_check(b);
}

static void item_fail(item *it, const char *step, const redisReply *r, const char *err) {
    pc *p = it->b->p;
    p->n_redis_errors++;
    if (r && r->type == REDIS_REPLY_ERROR) {
        static const char *const transient[] = {"READONLY", "LOADING",  "MASTERDOWN",  "OOM",      "BUSY",
                                                "TRYAGAIN", "CLUSTERDOWN", "NOSCRIPT", NULL};
        int warn = 0;
        for (int i = 0; transient[i] && !warn; i++)
            warn = !strncmp(r->str, transient[i], strlen(transient[i]));
        cc_log(warn ? CC_LOG_WARN : CC_LOG_ERROR, "redis_error", "step=%s payment=%s reply=\"%s\"", step,
               it->req->payment_id, r->str);
    } else if (r) {
        CC_ERROR("redis_error", "step=%s payment=%s reply=\"unexpected reply type %d\"", step, it->req->payment_id,
                 r->type);
    } else {
        CC_DEBUG("redis_failed", "step=%s payment=%s reason=\"%s\"", step, it->req->payment_id, err ? err : "");
    }
    doom_from(p, it->b, r && r->type == REDIS_REPLY_ERROR ? r->str : err ? err : "unexpected reply");
    it->cancelled = 1;
    item_over(it);
}

static int is_noscript(const redisReply *r) {
    return r && r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "NOSCRIPT", 8);
}

static const char *const step_names[] = {"wait", "claim", "debit", "commit", "refund", "done"};

/* Common prologue of every step's reply: 1 = go on with `r`; 0 = handled. */
static int step_reply(item *it, redisReply *r, const char *err) {
    if (it->b->doomed) {
        it->cancelled = 1;
        item_over(it);
        return 0;
    }
    if (is_noscript(r) && ++it->tries < NOSCRIPT_TRIES) {
        /* The script cache was flushed (or this is a new primary): cc_redis loads the
         * scripts again on that connection; send the same step again. */
        CC_DEBUG("redis_noscript", "step=%s payment=%s try=%d", step_names[it->step], it->req->payment_id, it->tries);
        start_step(it);
        return 0;
    }
    if (!r || r->type == REDIS_REPLY_ERROR) {
        item_fail(it, step_names[it->step], r, err);
        return 0;
    }
    it->tries = 0;
    return 1;
}

static void keep_record(item *it, const cc_pay_record *rec) {
    it->final = rec->state;
    snprintf(it->rid, sizeof it->rid, "%s", rec->rid);
    snprintf(it->reason, sizeof it->reason, "%s", rec->reason);
    snprintf(it->sched, sizeof it->sched, "%s", rec->sched);
    it->n_seats = cc_pay_seats(rec->seats, it->seats, SEATS_MAX);
    it->updated_ms = rec->updated_ms;
    it->paid_ms = rec->paid_ms;
}

static void skip(item *it, const char *event, const char *why) {
    const Concert__V1__PaymentRequested *q = it->req;
    CC_ERROR(event, "payment=%s concert=%s user=\"%s\" partition=%" PRId32 " offset=%" PRId64 " reason=\"%s\"",
             q->payment_id, q->concert_id, q->user_id, it->m->partition, it->m->offset, why);
    it->skipped = 1;
    item_over(it);
}

static void on_step(redisReply *r, const char *err, void *payload) {
    item *it = payload;
    pc *p = it->b->p; /* the item's batch may be freed by what follows */
    if (!step_reply(it, r, err)) {
        pump(p);
        return;
    }
    cc_pay_record rec;
    int code = 0;
    const char *msg = "";
    switch (it->step) {
    case IT_CLAIM:
    case IT_COMMIT: {
        cc_pay_decoded d = cc_pay_decode(r, &rec, &code, &msg);
        if (d == CC_PAY_REFUSED) {
            skip(it, code == 9 ? "payment_mismatch" : "payment_unknown", msg);
            break;
        }
        if (d != CC_PAY_OK) {
            item_fail(it, step_names[it->step], r, NULL);
            break;
        }
        keep_record(it, &rec);
        if (rec.state == CC_PAY_COMPLETED) {
            item_over(it);
        } else if (rec.state == CC_PAY_FAILED) {
            /* A debit may exist (this run's, or one of a crashed earlier run): give it
             * back, once. Not needed when Pay had abandoned it (never debited) or the
             * debit just said INSUFFICIENT. */
            int maybe_debited = it->step == IT_CLAIM ? rec.is_new != 3 : it->debited;
            if (maybe_debited) {
                it->step = IT_REFUND;
                start_step(it);
            } else {
                item_over(it);
            }
        } else if (it->step == IT_CLAIM && rec.state == CC_PAY_PENDING) {
            it->step = IT_DEBIT;
            start_step(it);
        } else {
            item_fail(it, step_names[it->step], r, NULL); /* claim/commit never leave it so */
        }
        break;
    }
    case IT_DEBIT: {
        int d = cc_pay_decode_debit(r);
        if (d < 0) {
            item_fail(it, "debit", r, NULL);
            break;
        }
        it->debited = d;
        it->step = IT_COMMIT;
        start_step(it);
        break;
    }
    case IT_REFUND:
        if (cc_pay_decode_refund(r) < 0) item_fail(it, "refund", r, NULL);
        else item_over(it);
        break;
    default:
        item_fail(it, "?", r, NULL);
    }
    pump(p);
}

/* Sends the item's current step; a failure to send (no connection) fails it. */
static void start_step(item *it) {
    pc *p = it->b->p;
    const Concert__V1__PaymentRequested *q = it->req;
    int rc;
    switch (it->step) {
    case IT_CLAIM: rc = cc_pay_claim(p->redis, q, on_step, it); break;
    case IT_DEBIT: rc = cc_pay_debit(p->redis, q->user_id, q->payment_id, q->amount, on_step, it); break;
    case IT_COMMIT: rc = cc_pay_commit(p->redis, q->concert_id, q->payment_id, it->debited, on_step, it); break;
    case IT_REFUND: rc = cc_pay_refund(p->redis, q->user_id, q->payment_id, on_step, it); break;
    default: rc = -1;
    }
    if (rc < 0) item_fail(it, step_names[it->step], NULL, "redis unavailable");
}

/* Starts the items whose predecessor is over (or cancels them if their batch is doomed). */
static void pump(pc *p) {
    if (p->pumping) return;
    p->pumping = 1;
    while (p->ready) {
        item *it = p->ready;
        p->ready = it->ready_next;
        if (!p->ready) p->ready_tail = NULL;
        it->ready_next = NULL;
        if (it->b->doomed) {
            it->cancelled = 1;
            item_over(it);
        } else {
            it->step = IT_CLAIM;
            start_step(it);
        }
    }
    p->pumping = 0;
}

/* ---- batching and dispatch ---- */

static void on_check(uv_check_t *h) { try_dispatch(h->data); }

static void dispatch(pc *p, int n) {
    batch *b = calloc(1, sizeof *b);
    if (!b) abort();
    b->p = p;
    b->seq = ++p->seq;
    b->t0_ms = now_ms(p);
    b->items = calloc((size_t)n, sizeof *b->items);
    if (!b->items) abort();
    b->n = n;
    b->steps_left = n + 1; /* held until every item is started: see the end */
    if (p->tail) p->tail->next = b;
    else p->head = b;
    p->tail = b;
    p->n_inflight++;
    for (int i = 0; i < n; i++) {
        item *it = &b->items[i];
        it->b = b;
        it->m = p->buf[i];
        it->part_epoch = it->m->partition < p->cap ? p->epoch[it->m->partition] : 0;
    }
    memmove(p->buf, p->buf + n, (size_t)(p->n_buf - n) * sizeof *p->buf);
    p->n_buf -= n;
    for (int i = 0; i < n; i++) {
        item *it = &b->items[i];
        it->req = concert__v1__payment_requested__unpack(NULL, it->m->len, it->m->payload);
        if (it->req && !cc_pay_request_valid(it->req)) {
            concert__v1__payment_requested__free_unpacked(it->req, NULL);
            it->req = NULL;
        }
        if (!it->req) {
            CC_ERROR("bad_message", "partition=%" PRId32 " offset=%" PRId64 " bytes=%zu", it->m->partition,
                     it->m->offset, it->m->len);
            it->skipped = 1;
            it->step = IT_DONE;
            b->steps_left--;
            continue;
        }
        item *prev = users_push(p->users, it);
        if (prev && prev->step != IT_DONE) {
            prev->next_same_user = it; /* waits for this user's previous payment */
            it->step = IT_WAIT;
        } else {
            it->step = IT_CLAIM;
            start_step(it);
        }
    }
    pump(p);
    /* A step may fail at once (no Redis connection) and end items: the batch is only
     * let go now, so it cannot complete (and be freed) while being started. */
    b->steps_left--;
    batch_check(b);
}

static void take_tokens(pc *p) {
    uint64_t now = now_ms(p);
    /* A burst of at most 100 ms worth: an idle consumer does not save up. */
    double cap = p->cfg.max_rate / 10 > 1 ? p->cfg.max_rate / 10 : 1;
    p->tokens += (double)(now - p->tokens_at) * p->cfg.max_rate / 1000.0;
    if (p->tokens > cap) p->tokens = cap;
    p->tokens_at = now;
}

static void on_resume(uv_timer_t *t) { try_dispatch(t->data); }

static void try_dispatch(pc *p) {
    while (!p->rewinding && !p->backing_off && !p->stopping && p->n_buf > 0 &&
           p->n_inflight < p->cfg.max_inflight && cc_redis_is_up(p->redis)) {
        int n = p->n_buf < p->cfg.batch ? p->n_buf : p->cfg.batch;
        if (p->cfg.max_rate > 0) {
            take_tokens(p);
            if (p->tokens < 1) {
                uint64_t wait = (uint64_t)((1 - p->tokens) * 1000.0 / p->cfg.max_rate) + 1;
                if (!uv_is_active((uv_handle_t *)&p->t_resume)) uv_timer_start(&p->t_resume, on_resume, wait, 0);
                break;
            }
            if (n > (int)p->tokens) n = (int)p->tokens;
            p->tokens -= n;
        }
        dispatch(p, n);
    }
    int low = p->cfg.batch * p->cfg.max_inflight;
    if (p->paused && !p->rewinding && !p->backing_off && !p->stopping && p->n_buf < low) {
        p->paused = 0;
        cc_kafka_consumer_pause(p->kc, 0);
    }
    if (p->n_buf == 0) uv_check_stop(&p->check);
}

static void backoff_done(uv_timer_t *t) {
    pc *p = t->data;
    p->backing_off = 0;
    if (!cc_redis_is_up(p->redis)) return; /* on_redis_state resumes */
    if (p->paused && !p->stopping) {
        p->paused = 0;
        cc_kafka_consumer_pause(p->kc, 0);
    }
    try_dispatch(p);
}

static void on_redis_state(int up, void *payload) {
    pc *p = payload;
    pc_metrics_redis_up(p->metrics, up);
    if (up && !p->backing_off && !p->rewinding && !p->stopping) {
        if (p->paused) {
            p->paused = 0;
            cc_kafka_consumer_pause(p->kc, 0);
        }
        try_dispatch(p);
    }
}

/* ---- Kafka consumer callbacks (on the loop) ---- */

static void on_message(rd_kafka_message_t *m, void *payload) {
    pc *p = payload;
    int32_t part = m->partition;
    if (strcmp(rd_kafka_topic_name(m->rkt), CC_TOPIC_PAYMENT_REQUESTS) || !is_assigned(p, part) || p->stopping) {
        rd_kafka_message_destroy(m); /* revoked meanwhile, or stopping: redelivered to the owner */
        return;
    }
    if (p->retry_from[part] >= 0) {
        if (m->offset <= p->retry_from[part]) {
            p->retry_from[part] = -1;
        } else {
            /* Fetched before the seek back took effect: dropped, it comes again. */
            CC_DEBUG("seek_not_applied", "partition=%" PRId32 " want=%" PRId64 " got=%" PRId64, part,
                     p->retry_from[part], m->offset);
            rd_kafka_message_destroy(m);
            return;
        }
    }
    if (p->rewinding) {
        /* Fetched while rewinding: re-fetched after the seek. */
        note_seek(p, part, m->offset);
        rd_kafka_message_destroy(m);
        return;
    }
    if (p->n_buf == p->cap_buf) {
        p->cap_buf = p->cap_buf ? p->cap_buf * 2 : 1024;
        p->buf = realloc(p->buf, (size_t)p->cap_buf * sizeof *p->buf);
        if (!p->buf) abort();
    }
    p->buf[p->n_buf++] = m;
    if (!uv_is_active((uv_handle_t *)&p->check)) uv_check_start(&p->check, on_check);
    /* Back-pressure: stop fetching while a lot is waiting (librdkafka's own queue
     * holds what was fetched already). */
    if (!p->paused && p->n_buf >= 2 * p->cfg.batch * p->cfg.max_inflight) {
        p->paused = 1;
        cc_kafka_consumer_pause(p->kc, 1);
    }
}

static void on_kafka_error(rd_kafka_resp_err_t err, const char *reason, void *payload) {
    pc *p = payload;
    p->n_kafka_errors++;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) pc_metrics_kafka_up(p->metrics, 0);
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        p->exit_code = 1;
        pc_request_stop();
    }
}

typedef struct {
    uv_work_t work;
    pc *p;
    rd_kafka_topic_partition_list_t *l;
    uint32_t *epochs;
} committed_job;

/* The committed offsets of newly assigned partitions, for the lag (off the loop:
 * rd_kafka_committed blocks). */
static void committed_work(uv_work_t *w) {
    committed_job *j = w->data;
    if (rd_kafka_committed(cc_kafka_consumer_rk(j->p->kc), j->l, 5000)) j->l->cnt = 0;
}

static void committed_after(uv_work_t *w, int status) {
    committed_job *j = w->data;
    pc *p = j->p;
    p->jobs--;
    for (int i = 0; i < j->l->cnt; i++) {
        int32_t part = j->l->elems[i].partition;
        if (is_assigned(p, part) && p->epoch[part] == j->epochs[i] && j->l->elems[i].offset >= 0 &&
            j->l->elems[i].offset > p->committed[part])
            p->committed[part] = j->l->elems[i].offset;
    }
    rd_kafka_topic_partition_list_destroy(j->l);
    free(j->epochs);
    free(j);
    maybe_finish_stop(p);
}

static void query_committed(pc *p, const rd_kafka_topic_partition_list_t *parts) {
    if (!parts->cnt || p->stopping) return;
    committed_job *j = calloc(1, sizeof *j);
    if (!j) abort();
    j->p = p;
    j->l = rd_kafka_topic_partition_list_copy(parts);
    j->epochs = calloc((size_t)parts->cnt, sizeof *j->epochs);
    if (!j->epochs) abort();
    for (int i = 0; i < parts->cnt; i++)
        j->epochs[i] = p->epoch[parts->elems[i].partition];
    j->work.data = j;
    if (uv_queue_work(&p->loop, &j->work, committed_work, committed_after) != 0) {
        rd_kafka_topic_partition_list_destroy(j->l);
        free(j->epochs);
        free(j);
        return;
    }
    p->jobs++;
}

static void drop_buffered(pc *p, int32_t part) {
    int k = 0;
    for (int i = 0; i < p->n_buf; i++) {
        if (p->buf[i]->partition == part) rd_kafka_message_destroy(p->buf[i]);
        else p->buf[k++] = p->buf[i];
    }
    p->n_buf = k;
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                         void *payload) {
    pc *p = payload;
    int coop = !strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE");
    char list[1024];
    fmt_parts(list, sizeof list, parts);
    rd_kafka_error_t *e = NULL;
    pc_metrics_kafka_up(p->metrics, 1);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        if (!coop)
            for (int i = 0; i < p->cap; i++)
                p->assigned[i] = 0;
        for (int i = 0; i < parts->cnt; i++) {
            if (strcmp(parts->elems[i].topic, CC_TOPIC_PAYMENT_REQUESTS)) continue;
            int32_t part = parts->elems[i].partition;
            ensure_cap(p, part);
            p->assigned[part] = 1;
            p->epoch[part]++;
            p->retry_from[part] = p->seek_to[part] = p->committed[part] = -1; /* starts at the committed offset */
            if (p->to_commit[part] >= 0) p->n_dirty--;
            p->to_commit[part] = -1;
        }
        /* A cooperative rebalance's first phase may assign nothing: not news. */
        cc_log(parts->cnt ? CC_LOG_INFO : CC_LOG_DEBUG, "partitions_assigned", "topic=%s partitions=%s count=%d",
               CC_TOPIC_PAYMENT_REQUESTS, list, parts->cnt);
        if (coop)
            e = rd_kafka_incremental_assign(rk, parts);
        else {
            rd_kafka_resp_err_t ae = rd_kafka_assign(rk, parts);
            if (ae) CC_ERROR("assign_failed", "reason=\"%s\"", rd_kafka_err2str(ae));
        }
        query_committed(p, parts);
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        int lost = rd_kafka_assignment_lost(rk);
        for (int i = 0; i < parts->cnt; i++) {
            int32_t part = parts->elems[i].partition;
            if (part < p->cap && !strcmp(parts->elems[i].topic, CC_TOPIC_PAYMENT_REQUESTS)) {
                p->assigned[part] = 0;
                p->epoch[part]++; /* in-flight work on it is never committed */
                if (p->to_commit[part] >= 0) p->n_dirty--;
                p->to_commit[part] = p->retry_from[part] = p->seek_to[part] = -1;
                drop_buffered(p, part);
                pc_metrics_lag_clear(p->metrics, part);
            }
        }
        if (lost)
            CC_WARN("partitions_lost", "topic=%s partitions=%s count=%d", CC_TOPIC_PAYMENT_REQUESTS, list, parts->cnt);
        else
            CC_INFO("partitions_revoked", "topic=%s partitions=%s count=%d", CC_TOPIC_PAYMENT_REQUESTS, list,
                    parts->cnt);
        if (coop)
            e = rd_kafka_incremental_unassign(rk, parts);
        else
            rd_kafka_assign(rk, NULL);
    } else {
        CC_ERROR("rebalance_failed", "reason=\"%s\"", rd_kafka_err2str(err));
        for (int i = 0; i < p->cap; i++) {
            p->assigned[i] = 0, p->epoch[i]++;
            p->to_commit[i] = p->retry_from[i] = p->seek_to[i] = -1;
        }
        p->n_dirty = 0;
        for (int i = 0; i < p->n_buf; i++)
            rd_kafka_message_destroy(p->buf[i]);
        p->n_buf = 0;
        rd_kafka_assign(rk, NULL);
    }
    if (e) {
        CC_ERROR("assign_failed", "reason=\"%s\"", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
}

/* ---- lag and topic health ---- */

/* Lag per assigned partition: the log end offset librdkafka last saw (it refreshes on
 * every fetch response) minus our committed offset (or the log start, before any
 * commit). Updates the gauges; returns the sum. */
static int64_t update_lag(pc *p, int *parts_out, int *known_out) {
    int64_t lag = 0;
    int known = 0, parts = 0;
    if (!p->kc) return 0;
    rd_kafka_t *rk = cc_kafka_consumer_rk(p->kc);
    for (int i = 0; i < p->cap; i++) {
        if (!p->assigned[i]) continue;
        parts++;
        int64_t lo = -1, hi = -1;
        if (rd_kafka_get_watermark_offsets(rk, CC_TOPIC_PAYMENT_REQUESTS, i, &lo, &hi) || hi < 0) continue;
        int64_t base = p->committed[i] >= 0 ? p->committed[i] : lo >= 0 ? lo : 0;
        int64_t l = hi > base ? hi - base : 0;
        lag += l;
        known++;
        pc_metrics_lag(p->metrics, i, l);
    }
    if (parts_out) *parts_out = parts;
    if (known_out) *known_out = known;
    return lag;
}

typedef struct {
    uv_work_t work;
    pc *p;
    int under;
} health_job;

/* Topic metadata (blocking in librdkafka: off the loop): partitions of our topics
 * whose ISR is smaller than their replica set. */
static void health_work(uv_work_t *w) {
    health_job *j = w->data;
    const struct rd_kafka_metadata *md = NULL;
    j->under = -1;
    if (rd_kafka_metadata(cc_kafka_consumer_rk(j->p->kc), 1, NULL, &md, 5000) != RD_KAFKA_RESP_ERR_NO_ERROR) return;
    j->under = 0;
    for (int t = 0; t < md->topic_cnt; t++) {
        const char *name = md->topics[t].topic;
        if (strcmp(name, CC_TOPIC_PAYMENT_REQUESTS) && strcmp(name, CC_TOPIC_PAYMENT_RESULTS) &&
            strcmp(name, CC_TOPIC_RESERVATION_EVENTS))
            continue;
        for (int i = 0; i < md->topics[t].partition_cnt; i++)
            if (md->topics[t].partitions[i].isr_cnt < md->topics[t].partitions[i].replica_cnt) j->under++;
    }
    rd_kafka_metadata_destroy(md);
}

static void health_after(uv_work_t *w, int status) {
    health_job *j = w->data;
    pc *p = j->p;
    p->health_inflight = 0;
    p->jobs--;
    if (j->under >= 0 && p->metrics) pc_metrics_under_replicated(p->metrics, j->under);
    free(j);
    maybe_finish_stop(p);
}

static void check_health(pc *p) {
    if (p->health_inflight || !p->kc || p->stopping || !p->metrics) return;
    health_job *j = calloc(1, sizeof *j);
    if (!j) abort();
    j->p = p;
    j->work.data = j;
    if (uv_queue_work(&p->loop, &j->work, health_work, health_after) == 0) p->health_inflight = 1, p->jobs++;
    else free(j);
}

static void on_lag_timer(uv_timer_t *t) {
    pc *p = t->data;
    int parts = 0, known = 0;
    int64_t lag = update_lag(p, &parts, &known);
    uint64_t now = now_ms(p);
    double secs = (double)(now - p->window_start) / 1000.0;
    CC_INFO("consumer_lag",
            "lag=%" PRId64 " partitions=%d known=%d processed=%" PRIu64 " rate_per_s=%.0f"
            " completed_total=%" PRIu64 " failed_total=%" PRIu64,
            lag, parts, known, p->window_done, secs > 0 ? (double)p->window_done / secs : 0.0, p->n_completed,
            p->n_failed);
    p->window_start = now;
    p->window_done = 0;
    check_health(p);
}

/* ---- stopping ---- */

static void on_handle_closed(uv_handle_t *h) {}

static void on_consumer_closed(void *payload) {
    pc *p = payload;
    p->kc = NULL;
    if (p->prod) cc_kafka_producer_close(p->prod, 5000);
    p->prod = NULL;
    cc_redis_close(p->redis);
    pc_metrics_close(p->metrics);
    p->metrics = NULL;
    uv_close((uv_handle_t *)&p->check, on_handle_closed);
    uv_close((uv_handle_t *)&p->t_resume, on_handle_closed);
    uv_close((uv_handle_t *)&p->t_commit, on_handle_closed);
    uv_close((uv_handle_t *)&p->t_lag, on_handle_closed);
    uv_close((uv_handle_t *)&p->t_stop, on_handle_closed);
    uv_close((uv_handle_t *)&p->sig_term, on_handle_closed);
    uv_close((uv_handle_t *)&p->sig_int, on_handle_closed);
    uv_close((uv_handle_t *)&p->stop_async, on_handle_closed);
}

/* Once nothing is in flight and the last commit answered: leave the group. */
static void maybe_finish_stop(pc *p) {
    if (!p->stopping || p->stopped_consumer) return;
    if (p->head || p->rewinding || p->jobs) return;
    if (p->n_dirty && !p->commit_inflight) commit_now(p);
    if (p->commit_inflight) return;
    p->stopped_consumer = 1;
    uv_timer_stop(&p->t_stop);
    CC_INFO("stopping",
            "completed=%" PRIu64 " failed=%" PRIu64 " skipped=%" PRIu64 " batches=%" PRIu64 " retries=%" PRIu64,
            p->n_completed, p->n_failed, p->n_skipped, p->n_batches, p->n_retries);
    uv_timer_stop(&p->t_lag);
    uv_timer_stop(&p->t_resume);
    uv_timer_stop(&p->t_commit);
    cc_kafka_consumer_close(p->kc, on_consumer_closed, p);
}

static void on_stop_timeout(uv_timer_t *t) {
    pc *p = t->data;
    CC_WARN("stop_timeout", "in_flight=%d", p->n_inflight);
    /* Give up on what is in flight (never committed: redelivered to the next owner). */
    while (p->head) {
        batch *b = p->head;
        p->head = b->next;
        b->phase = B_DONE;
    }
    p->tail = NULL;
    p->rewinding = 0;
    p->commit_inflight = 0;
    p->n_dirty = 0;
    maybe_finish_stop(p);
}

static void begin_stop(pc *p) {
    if (p->stopping) return;
    p->stopping = 1;
    CC_INFO("stop_requested", "in_flight=%d buffered=%d", p->n_inflight, p->n_buf);
    for (int i = 0; i < p->n_buf; i++)
        rd_kafka_message_destroy(p->buf[i]); /* not committed: redelivered */
    p->n_buf = 0;
    if (p->kc) cc_kafka_consumer_pause(p->kc, 1);
    uv_timer_start(&p->t_stop, on_stop_timeout, 15000, 0);
    maybe_finish_stop(p);
}

static void on_signal(uv_signal_t *h, int sig) { begin_stop(h->data); }
static void on_stop_async(uv_async_t *h) { begin_stop(h->data); }

void pc_request_stop(void) {
    if (the_pc) uv_async_send(&the_pc->stop_async);
}

/* ---- setup ---- */

static const cc_kafka_consumer_ops consumer_ops = {
    .message = on_message,
    .error = on_kafka_error,
    .rebalance = on_rebalance,
    .committed = on_committed,
};

static void on_kafka_state(int up, void *payload) { pc_metrics_kafka_up(((pc *)payload)->metrics, up); }

/* Before each scrape: fresh lag and error totals. */
static void collect(void *payload) {
    pc *p = payload;
    update_lag(p, NULL, NULL);
    pc_metrics_counters(p->metrics, p->n_redis_errors, p->n_kafka_errors);
}

int pc_run(const pc_config *cfg_in) {
    pc *p = calloc(1, sizeof *p);
    if (!p) abort();
    p->cfg = *cfg_in;
    pc_config *cfg = &p->cfg;
    if (!cfg->group || !*cfg->group) cfg->group = "payment-consumer";
    if (cfg->batch <= 0) cfg->batch = 500;
    if (cfg->max_inflight <= 0) cfg->max_inflight = 4;
    if (cfg->redis_connections <= 0) cfg->redis_connections = 2;
    if (cfg->redis_wait_timeout_ms <= 0) cfg->redis_wait_timeout_ms = 1000;
    if (cfg->redis_timeout_ms <= 0) cfg->redis_timeout_ms = 2000;
    if (cfg->partitions <= 0) cfg->partitions = 12;
    if (cfg->session_timeout_ms <= 0) cfg->session_timeout_ms = 10000;
    if (cfg->lag_interval_ms <= 0) cfg->lag_interval_ms = 10000;
    if (cfg->commit_interval_ms < 0) cfg->commit_interval_ms = 100;
    if (cfg->fetch_wait_ms <= 0) cfg->fetch_wait_ms = 500;
    if (cfg->fetch_min_bytes <= 0) cfg->fetch_min_bytes = 1;
    if (!cfg->brokers || !*cfg->brokers) {
        fprintf(stderr, "payment-consumer: --kafka BROKERS is required\n");
        free(p);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&p->loop);
    char err[512];
    int rc = 0;
    if (cfg->create_topics &&
        cc_kafka_ensure_topics(cfg->brokers, cfg->partitions, -1, 15000, err, sizeof err) < 0) {
        fprintf(stderr, "payment-consumer: %s\n", err);
        uv_loop_close(&p->loop);
        free(p);
        return 1;
    }
    cc_redis_config rcfg = {.url = cfg->redis_url, .connections = cfg->redis_connections,
                            .command_timeout_ms = cfg->redis_timeout_ms};
    if (cc_redis_create(&p->redis, &p->loop, &rcfg, err, sizeof err) < 0) {
        fprintf(stderr, "payment-consumer: %s\n", err);
        uv_loop_close(&p->loop);
        free(p);
        return 1;
    }
    int ns = cc_pay_scripts_consumer(p->scripts, CC_PAY_N_SCRIPTS);
    cc_redis_set_scripts(p->redis, p->scripts, ns);
    cc_redis_set_state_cb(p->redis, on_redis_state, p);
    ensure_cap(p, 0);
    p->users = cc_smap_new();

    if (pc_metrics_create(&p->metrics, &p->loop, cfg->metrics, collect, p, err, sizeof err) < 0) {
        fprintf(stderr, "payment-consumer: %s\n", err);
        rc = 1;
        goto fail;
    }
    char session[16], heartbeat[16], fetch_wait[16], fetch_min[16];
    snprintf(session, sizeof session, "%d", cfg->session_timeout_ms);
    snprintf(heartbeat, sizeof heartbeat, "%d", cfg->session_timeout_ms / 3 > 0 ? cfg->session_timeout_ms / 3 : 1000);
    snprintf(fetch_wait, sizeof fetch_wait, "%d", cfg->fetch_wait_ms);
    snprintf(fetch_min, sizeof fetch_min, "%d", cfg->fetch_min_bytes);
    const char *settings[] = {
        "partition.assignment.strategy", "cooperative-sticky",
        "auto.offset.reset", "earliest",
        "session.timeout.ms", session,
        "heartbeat.interval.ms", heartbeat,
        /* Fetch tuning (docs/PERFORMANCE.md): the broker answers a fetch once it has
         * fetch.min.bytes or after fetch.wait.max.ms. */
        "fetch.wait.max.ms", fetch_wait,
        "fetch.min.bytes", fetch_min,
        /* New partitions and a topic created after we subscribed are noticed soon. */
        "topic.metadata.refresh.interval.ms", "10000",
        NULL,
    };
    cc_kafka_consumer_config kcfg = {.brokers = cfg->brokers, .group = cfg->group, .client_id = "payment-consumer",
                                     .settings = settings};
    const char *topics[] = {CC_TOPIC_PAYMENT_REQUESTS};
    if (cc_kafka_consumer_create(&p->kc, &p->loop, &kcfg, topics, 1, &consumer_ops, p, err, sizeof err) < 0) {
        fprintf(stderr, "payment-consumer: %s\n", err);
        rc = 1;
        goto fail;
    }
    cc_kafka_producer_config pcfg = {.brokers = cfg->brokers, .message_timeout_ms = 10000,
                                     .client_id = "payment-consumer-results",
                                     .linger_ms = cfg->linger_ms > 0 ? cfg->linger_ms : -1,
                                     .batch_bytes = 0};
    if (cc_kafka_producer_create(&p->prod, &p->loop, &pcfg, err, sizeof err) < 0) {
        fprintf(stderr, "payment-consumer: %s\n", err);
        rc = 1;
        goto fail;
    }
    cc_kafka_producer_set_state_cb(p->prod, on_kafka_state, p);

    uv_check_init(&p->loop, &p->check);
    p->check.data = p;
    uv_timer_init(&p->loop, &p->t_resume);
    uv_timer_init(&p->loop, &p->t_commit);
    uv_timer_init(&p->loop, &p->t_lag);
    uv_timer_init(&p->loop, &p->t_stop);
    p->t_resume.data = p->t_commit.data = p->t_lag.data = p->t_stop.data = p;
    uv_signal_init(&p->loop, &p->sig_term);
    uv_signal_init(&p->loop, &p->sig_int);
    p->sig_term.data = p->sig_int.data = p;
    uv_signal_start(&p->sig_term, on_signal, SIGTERM);
    uv_signal_start(&p->sig_int, on_signal, SIGINT);
    uv_async_init(&p->loop, &p->stop_async, on_stop_async);
    p->stop_async.data = p;
    the_pc = p;
    p->window_start = p->tokens_at = now_ms(p);
    p->tokens = cfg->max_rate > 0 ? 1 : 0;
    uv_timer_start(&p->t_lag, on_lag_timer, (uint64_t)cfg->lag_interval_ms, (uint64_t)cfg->lag_interval_ms);
    CC_INFO("started", "group=%s brokers=%s topic=%s batch=%d max_inflight=%d redis_wait_replicas=%d metrics=%s",
            cfg->group, cfg->brokers, CC_TOPIC_PAYMENT_REQUESTS, cfg->batch, cfg->max_inflight,
            cfg->redis_wait_replicas, pc_metrics_address(p->metrics));
    uv_run(&p->loop, UV_RUN_DEFAULT);
    the_pc = NULL;
    rc = p->exit_code;
    goto out;
fail:
    if (p->kc) cc_kafka_consumer_close(p->kc, NULL, NULL);
    if (p->prod) cc_kafka_producer_close(p->prod, 0);
    pc_metrics_close(p->metrics);
    cc_redis_close(p->redis);
    uv_run(&p->loop, UV_RUN_DEFAULT);
out:
    if (uv_loop_close(&p->loop) != 0) CC_WARN("loop_not_closed", NULL);
    free(p->buf);
    cc_smap_free(p->users);
    free(p->assigned);
    free(p->epoch);
    free(p->to_commit);
    free(p->committed);
    free(p->retry_from);
    free(p->seek_to);
    if (rc == 0) CC_INFO("stopped", NULL);
    free(p);
    return rc;
}
