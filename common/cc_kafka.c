/* cc_kafka: librdkafka glue. See cc_kafka.h for the contract.
 *
 * One mechanism for every librdkafka queue on a loop (`kq` below): the queue signals
 * a non-blocking pipe whenever it goes from empty to non-empty
 * (rd_kafka_queue_io_event_enable); a uv_poll on the read end drains the pipe and
 * serves the queue until it is empty, so every callback runs on the loop's thread.
 * librdkafka's own threads only ever touch the pipe (and cc_log, which is
 * thread-safe). Used by the producer (main queue: delivery reports, errors,
 * statistics), the consumer (consumer queue, with the main queue forwarded to it:
 * messages, rebalances, commit results, errors) and the asynchronous topic check
 * (an admin result queue).
 *
 * Ownership: each client owns its rd_kafka_t, its pipe and uv_poll handle; each
 * produced message owns a small `kmsg` (callback + payload) passed as msg_opaque and
 * freed right after its delivery report. A client is destroyed off the loop
 * (rd_kafka_destroy joins librdkafka's threads) and freed in its handle's close
 * callback. Must not: block the loop outside cc_kafka_ensure_topics and
 * cc_kafka_producer_close, or free anything from inside a serve pass (a close
 * requested there is deferred until the pass returns). */
#define _GNU_SOURCE
#include "cc_kafka.h"

#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "cc_log.h"

/* ---- shared helpers ---- */

/* librdkafka logs from its own threads: one logfmt line each (cc_log is one write). */
void cc_kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    char msg[512];
    size_t n = 0;
    for (const char *s = buf; *s && n < sizeof msg - 1; s++)
        msg[n++] = *s == '"' ? '\'' : *s;
    msg[n] = '\0';
    /* Errors that matter also reach the error callback; librdkafka's own log lines
     * (connection failures are LOG_ERR) are at most warnings here. */
    cc_log_level lvl = level <= LOG_WARNING ? CC_LOG_WARN : level <= LOG_INFO ? CC_LOG_INFO : CC_LOG_DEBUG;
    cc_log(lvl, "kafka_log", "client=%s fac=%s msg=\"%s\"", rd_kafka_name(rk), fac, msg);
}

static int conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *err, size_t errlen) {
    char why[256];
    if (rd_kafka_conf_set(conf, name, value, why, sizeof why) != RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "kafka config %s=%s: %s", name, value, why);
        return -1;
    }
    return 0;
}

/* rd_kafka_new with the project's log callback; on failure the conf is destroyed and
 * err says why ("kafka <what>: ..."). */
static rd_kafka_t *rk_new(rd_kafka_type_t type, rd_kafka_conf_t *conf, const char *what, char *err,
                          size_t errlen) {
    char why[512];
    rd_kafka_conf_set_log_cb(conf, cc_kafka_log_cb);
    rd_kafka_t *rk = rd_kafka_new(type, conf, why, sizeof why);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(err, errlen, "kafka %s: %s", what, why);
    }
    return rk;
}

/* ---- kq: a librdkafka queue served on the loop ---- */

typedef struct {
    uv_poll_t poll;
    int pipe_r, pipe_w;
    rd_kafka_queue_t *q; /* owned: destroyed by kq_detach */
    void (*serve)(void *owner);
    void (*closed)(void *owner);
    void *owner;
} kq;

static void kq_readable(uv_poll_t *h, int status, int events) {
    kq *w = h->data;
    char buf[256];
    while (read(w->pipe_r, buf, sizeof buf) > 0) {
    }
    w->serve(w->owner);
}

/* Takes ownership of q. 0 or -1 (err). */
static int kq_start(kq *w, uv_loop_t *loop, rd_kafka_queue_t *q, void (*serve)(void *), void *owner, char *err,
                    size_t errlen) {
    int fds[2];
    w->q = q;
    w->serve = serve;
    w->owner = owner;
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
        snprintf(err, errlen, "kafka: pipe: %s", strerror(errno));
        rd_kafka_queue_destroy(q);
        w->q = NULL;
        return -1;
    }
    w->pipe_r = fds[0];
    w->pipe_w = fds[1];
    uv_poll_init(loop, &w->poll, w->pipe_r);
    w->poll.data = w;
    uv_poll_start(&w->poll, UV_READABLE, kq_readable);
    rd_kafka_queue_io_event_enable(q, w->pipe_w, "1", 1);
    /* librdkafka writes to the pipe only when the queue turns non-empty: whatever it
     * queued before the line above (a refused connection, at once) would never wake
     * us. So wake up once by hand and serve it on the first loop turn. */
    ssize_t wr = write(w->pipe_w, "1", 1);
    (void)wr;
    return 0;
}

/* Serve again on the next loop turn (after a pause, or when a pass stopped early). */
static void kq_kick(kq *w) {
    ssize_t wr = write(w->pipe_w, "1", 1);
    (void)wr;
}

/* Stops the queue from signalling and releases it (call before rd_kafka_destroy). */
static void kq_detach(kq *w) {
    if (!w->q) return;
    rd_kafka_queue_io_event_enable(w->q, -1, NULL, 0);
    rd_kafka_queue_destroy(w->q);
    w->q = NULL;
}

static void kq_poll_closed(uv_handle_t *h) {
    kq *w = h->data;
    close(w->pipe_r);
    close(w->pipe_w);
    w->closed(w->owner);
}

/* After rd_kafka_destroy (nothing writes to the pipe any more): closes the handle,
 * then the pipe, then calls closed(owner), which may free the owner. */
static void kq_close(kq *w, void (*closed)(void *owner)) {
    w->closed = closed;
    uv_poll_stop(&w->poll);
    uv_close((uv_handle_t *)&w->poll, kq_poll_closed);
}

/* rd_kafka_destroy joins librdkafka's threads (and, on a dead cluster, waits for its
 * broker threads): off the loop. `after` runs on the loop once it is done. */
typedef struct {
    uv_work_t work;
    rd_kafka_t *rk;
    void (*after)(void *arg);
    void *arg;
} destroy_job;

static void destroy_work(uv_work_t *w) {
    destroy_job *j = w->data;
    rd_kafka_destroy(j->rk);
}

static void destroy_after(uv_work_t *w, int status) {
    destroy_job *j = w->data;
    j->after(j->arg);
    free(j);
}

static void destroy_off_loop(uv_loop_t *loop, rd_kafka_t *rk, void (*after)(void *), void *arg) {
    destroy_job *j = calloc(1, sizeof *j);
    if (!j) abort();
    j->rk = rk;
    j->after = after;
    j->arg = arg;
    j->work.data = j;
    if (uv_queue_work(loop, &j->work, destroy_work, destroy_after) != 0) {
        rd_kafka_destroy(rk);
        after(arg);
        free(j);
    }
}

/* ---- topics ---- */

/* Limits on every topic we create (docs/DATA.md, "Kafka topics"): a week or 1 GiB per
 * partition, whichever comes first; 64 MiB segments so retention can act on a quiet
 * topic too (a segment is deleted whole, once closed). */
static const char *const topic_settings[] = {
    "retention.ms", "604800000", "retention.bytes", "1073741824", "segment.bytes", "67108864",
    "segment.ms", "86400000", NULL,
};

typedef struct {
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;
    rd_kafka_NewTopic_t *nt[3];
    rd_kafka_AdminOptions_t *opt;
} topics_req;

static void topics_req_free(topics_req *t) {
    for (int i = 0; i < 3; i++)
        if (t->nt[i]) rd_kafka_NewTopic_destroy(t->nt[i]);
    if (t->opt) rd_kafka_AdminOptions_destroy(t->opt);
    t->opt = NULL;
    memset(t->nt, 0, sizeof t->nt);
}

/* Creates the admin client and sends CreateTopics (answer on t->q). 0 or -1 (err). */
static int topics_send(topics_req *t, const char *brokers, int request_partitions, int rf, int timeout_ms,
                       char *err, size_t errlen) {
    memset(t, 0, sizeof *t);
    if (request_partitions < 12) request_partitions = 12;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (conf_set(conf, "bootstrap.servers", brokers, err, errlen) < 0 ||
        conf_set(conf, "client.id", "concert-admin", err, errlen) < 0 ||
        conf_set(conf, "reconnect.backoff.max.ms", "1000", err, errlen) < 0) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    t->rk = rk_new(RD_KAFKA_PRODUCER, conf, "admin client", err, errlen);
    if (!t->rk) return -1;
    char why[512];
    const char *names[3] = {CC_TOPIC_PAYMENT_REQUESTS, CC_TOPIC_PAYMENT_RESULTS, CC_TOPIC_RESERVATION_EVENTS};
    int parts[3] = {request_partitions, 6, 6};
    for (int i = 0; i < 3; i++) {
        t->nt[i] = rd_kafka_NewTopic_new(names[i], parts[i], rf, why, sizeof why);
        if (!t->nt[i]) {
            snprintf(err, errlen, "topic %s: %s", names[i], why);
            topics_req_free(t);
            return -1;
        }
        for (int k = 0; topic_settings[k]; k += 2)
            rd_kafka_NewTopic_set_config(t->nt[i], topic_settings[k], topic_settings[k + 1]);
    }
    t->q = rd_kafka_queue_new(t->rk);
    t->opt = rd_kafka_AdminOptions_new(t->rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_request_timeout(t->opt, timeout_ms, why, sizeof why);
    rd_kafka_AdminOptions_set_operation_timeout(t->opt, timeout_ms, why, sizeof why);
    rd_kafka_CreateTopics(t->rk, t->nt, 3, t->opt, t->q);
    return 0;
}

/* Reads the CreateTopics answer: 0, or -1 with the reason. */
static int topics_result(rd_kafka_event_t *ev, const char *brokers, int timeout_ms, char *err, size_t errlen) {
    if (!ev) {
        snprintf(err, errlen, "creating topics: no answer from %s within %d ms", brokers, timeout_ms);
        return -1;
    }
    if (rd_kafka_event_error(ev)) {
        snprintf(err, errlen, "creating topics: %s", rd_kafka_event_error_string(ev));
        return -1;
    }
    const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
    size_t n = 0;
    const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &n);
    for (size_t i = 0; i < n; i++) {
        rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[i]);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
            CC_INFO("kafka_topic_created", "topic=%s", rd_kafka_topic_result_name(tr[i]));
        } else if (e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            const char *es = rd_kafka_topic_result_error_string(tr[i]);
            snprintf(err, errlen, "creating topic %s: %s", rd_kafka_topic_result_name(tr[i]),
                     es ? es : rd_kafka_err2str(e));
            return -1;
        }
    }
    return 0;
}

int cc_kafka_ensure_topics(const char *brokers, int request_partitions, int rf, int timeout_ms, char *err,
                           size_t errlen) {
    if (timeout_ms <= 0) timeout_ms = 10000;
    topics_req t;
    if (topics_send(&t, brokers, request_partitions, rf, timeout_ms, err, errlen) < 0) {
        if (t.rk) rd_kafka_destroy(t.rk);
        return -1;
    }
    /* A little more than the request timeout: the result then always arrives. */
    rd_kafka_event_t *ev = rd_kafka_queue_poll(t.q, timeout_ms + 2000);
    int rc = topics_result(ev, brokers, timeout_ms, err, errlen);
    if (ev) rd_kafka_event_destroy(ev);
    topics_req_free(&t);
    rd_kafka_queue_destroy(t.q);
    rd_kafka_destroy(t.rk);
    return rc;
}

struct cc_kafka_topics_req {
    uv_loop_t *loop;
    topics_req t;
    kq w;
    char brokers[512];
    int timeout_ms;
    cc_kafka_topics_cb cb;
    void *payload;
    int answered;
};
typedef struct cc_kafka_topics_req topics_async;

static void topics_async_closed(void *arg) { free(arg); }

static void topics_async_destroyed(void *arg) {
    topics_async *a = arg;
    kq_close(&a->w, topics_async_closed);
}

/* The request is over (answered or cancelled): free it, stop watching its queue, and
 * destroy the admin client off the loop. */
static void topics_async_drop(topics_async *a) {
    topics_req_free(&a->t);
    kq_detach(&a->w);
    destroy_off_loop(a->loop, a->t.rk, topics_async_destroyed, a);
}

static void topics_async_serve(void *arg) {
    topics_async *a = arg;
    if (a->answered || !a->w.q) return;
    rd_kafka_event_t *ev = rd_kafka_queue_poll(a->w.q, 0);
    if (!ev) return;
    char err[512] = "";
    int rc = topics_result(ev, a->brokers, a->timeout_ms, err, sizeof err);
    rd_kafka_event_destroy(ev);
    a->answered = 1;
    a->cb(rc == 0 ? NULL : err, a->payload);
    topics_async_drop(a);
}

void cc_kafka_topics_cancel(cc_kafka_topics_req *a) {
    if (!a || a->answered) return;
    a->answered = 1;
    topics_async_drop(a);
}

cc_kafka_topics_req *cc_kafka_ensure_topics_async(uv_loop_t *loop, const char *brokers, int request_partitions,
                                                  int rf, int timeout_ms, cc_kafka_topics_cb cb, void *payload) {
    if (timeout_ms <= 0) timeout_ms = 10000;
    topics_async *a = calloc(1, sizeof *a);
    if (!a) abort();
    a->loop = loop;
    a->timeout_ms = timeout_ms;
    a->cb = cb;
    a->payload = payload;
    snprintf(a->brokers, sizeof a->brokers, "%s", brokers);
    char err[512];
    if (topics_send(&a->t, brokers, request_partitions, rf, timeout_ms, err, sizeof err) < 0) {
        if (a->t.rk) rd_kafka_destroy(a->t.rk);
        cb(err, payload);
        free(a);
        return NULL;
    }
    if (kq_start(&a->w, loop, a->t.q, topics_async_serve, a, err, sizeof err) < 0) {
        /* Without the queue the answer cannot reach us; give up now. */
        topics_req_free(&a->t);
        rd_kafka_destroy(a->t.rk);
        cb(err, payload);
        free(a);
        return NULL;
    }
    return a;
}

/* ---- producer ---- */

struct cc_kafka_producer {
    uv_loop_t *loop;
    rd_kafka_t *rk;
    kq w;
    int pending;
    int up; /* 1 up, 0 down, -1 not known yet */
    int in_poll;
    int closing;
    int close_deferred;
    int close_timeout_ms;
    cc_kafka_state_cb state_cb;
    void *state_payload;
};

typedef struct {
    cc_kafka_delivery_cb cb;
    void *payload;
} kmsg;

static void set_up(cc_kafka_producer *p, int up) {
    if (p->up == up) return;
    p->up = up;
    if (up)
        CC_INFO("kafka_up", NULL);
    else
        CC_WARN("kafka_down", NULL);
    if (p->state_cb) p->state_cb(up, p->state_payload);
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    cc_kafka_producer *p = opaque;
    kmsg *k = m->_private;
    p->pending--;
    const char *err = NULL;
    if (m->err) {
        err = p->closing && (m->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE ||
                             m->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT)
                  ? "closing"
                  : rd_kafka_err2str(m->err);
        CC_DEBUG("kafka_delivery_failed", "topic=%s reason=\"%s\"", rd_kafka_topic_name(m->rkt), err);
    } else {
        set_up(p, 1);
    }
    if (k) {
        if (k->cb) k->cb(err, k->payload);
        free(k);
    }
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    cc_kafka_producer *p = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[512];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, why, sizeof why);
        CC_ERROR("kafka_fatal", "code=%s reason=\"%s\"", rd_kafka_err2name(orig), why);
        set_up(p, 0);
        return;
    }
    CC_WARN("kafka_error", "client=%s code=%s reason=\"%s\"", rd_kafka_name(rk),
            rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) set_up(p, 0);
}

/* Statistics (every second) tell us when a broker connection is UP again even if no
 * message has been delivered since: a configured or learned (not the internal) broker
 * in state UP. Each broker object reads `"source":"learned", "state":"UP"`. */
static int stats_broker_up(const char *json) {
    const char *b = strstr(json, "\"brokers\":{");
    if (!b) return 0;
    for (const char *s = strstr(b, "\"source\":\""); s; s = strstr(s + 1, "\"source\":\"")) {
        if (!strncmp(s + 10, "internal\"", 9)) continue;
        const char *st = strstr(s, "\"state\":\"");
        if (st && !strncmp(st + 9, "UP\"", 3)) return 1;
    }
    return 0;
}

static int on_stats(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
    cc_kafka_producer *p = opaque;
    if (p->up == 0 && stats_broker_up(json)) set_up(p, 1);
    return 0; /* librdkafka frees json */
}

static void producer_close_now(cc_kafka_producer *p);

static void producer_serve(void *arg) {
    cc_kafka_producer *p = arg;
    p->in_poll = 1;
    while (p->rk && rd_kafka_poll(p->rk, 0) > 0) {
    }
    p->in_poll = 0;
    if (p->close_deferred) producer_close_now(p);
}

int cc_kafka_producer_create(cc_kafka_producer **out, uv_loop_t *loop, const cc_kafka_producer_config *cfg,
                             char *err, size_t errlen) {
    *out = NULL;
    if (!cfg->brokers || !*cfg->brokers) {
        snprintf(err, errlen, "kafka: no brokers configured");
        return -1;
    }
    cc_kafka_producer *p = calloc(1, sizeof *p);
    if (!p) abort();
    p->loop = loop;
    p->up = -1;
    int timeout = cfg->message_timeout_ms > 0 ? cfg->message_timeout_ms : 10000;
    char tbuf[16], linger[16], batch[16];
    snprintf(tbuf, sizeof tbuf, "%d", timeout);
    /* Batching (docs/PERFORMANCE.md, "Kafka settings"): a produce request per
     * partition leader every linger.ms at most, so under load the broker handles a
     * few hundred requests per second however many messages they carry. */
    snprintf(linger, sizeof linger, "%d", cfg->linger_ms > 0 ? cfg->linger_ms : cfg->linger_ms < 0 ? 0 : 5);
    snprintf(batch, sizeof batch, "%d", cfg->batch_bytes > 0 ? cfg->batch_bytes : 262144);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (conf_set(conf, "bootstrap.servers", cfg->brokers, err, errlen) < 0 ||
        conf_set(conf, "client.id", cfg->client_id ? cfg->client_id : "concert", err, errlen) < 0 ||
        conf_set(conf, "enable.idempotence", "true", err, errlen) < 0 ||
        conf_set(conf, "acks", "all", err, errlen) < 0 ||
        conf_set(conf, "delivery.timeout.ms", tbuf, err, errlen) < 0 ||
        conf_set(conf, "message.timeout.ms", tbuf, err, errlen) < 0 ||
        conf_set(conf, "linger.ms", linger, err, errlen) < 0 ||
        conf_set(conf, "batch.size", batch, err, errlen) < 0 ||
        conf_set(conf, "statistics.interval.ms", "1000", err, errlen) < 0 ||
        /* Fail fast on a dead cluster rather than retrying a connection for ages. */
        conf_set(conf, "reconnect.backoff.max.ms", "1000", err, errlen) < 0) {
        rd_kafka_conf_destroy(conf);
        free(p);
        return -1;
    }
    rd_kafka_conf_set_opaque(conf, p);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_stats_cb(conf, on_stats);
    p->rk = rk_new(RD_KAFKA_PRODUCER, conf, "producer", err, errlen);
    if (!p->rk) {
        free(p);
        return -1;
    }
    if (kq_start(&p->w, loop, rd_kafka_queue_get_main(p->rk), producer_serve, p, err, errlen) < 0) {
        rd_kafka_destroy(p->rk);
        free(p);
        return -1;
    }
    *out = p;
    return 0;
}

void cc_kafka_producer_set_state_cb(cc_kafka_producer *p, cc_kafka_state_cb cb, void *payload) {
    p->state_cb = cb;
    p->state_payload = payload;
}

int cc_kafka_produce(cc_kafka_producer *p, const char *topic, const void *key, size_t keylen,
                     const void *value, size_t len, cc_kafka_delivery_cb cb, void *payload) {
    if (p->closing) return -1;
    kmsg *k = malloc(sizeof *k);
    if (!k) abort();
    k->cb = cb;
    k->payload = payload;
    rd_kafka_resp_err_t e =
        rd_kafka_producev(p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY((void *)key, keylen),
                          RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                          RD_KAFKA_V_OPAQUE(k), RD_KAFKA_V_END);
    if (e) {
        CC_WARN("kafka_produce_failed", "topic=%s reason=\"%s\"", topic, rd_kafka_err2str(e));
        free(k);
        return -1;
    }
    p->pending++;
    return 0;
}

int cc_kafka_producer_pending(const cc_kafka_producer *p) { return p->pending; }

int cc_kafka_producer_up(const cc_kafka_producer *p) { return p->up; }

static void producer_freed(void *arg) { free(arg); }

static void producer_close_now(cc_kafka_producer *p) {
    p->close_deferred = 0;
    rd_kafka_resp_err_t e = rd_kafka_flush(p->rk, p->close_timeout_ms);
    if (e) CC_WARN("kafka_flush_incomplete", "pending=%d", p->pending);
    /* What is left fails with "closing"; the purge reports come through the queue. */
    rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    p->in_poll = 1;
    while (rd_kafka_poll(p->rk, 0) > 0) {
    }
    if (p->pending > 0) rd_kafka_flush(p->rk, 100);
    p->in_poll = 0;
    kq_detach(&p->w);
    rd_kafka_destroy(p->rk); /* flushed and purged: returns at once */
    p->rk = NULL;
    kq_close(&p->w, producer_freed);
}

void cc_kafka_producer_close(cc_kafka_producer *p, int timeout_ms) {
    if (!p || p->closing) return;
    p->closing = 1;
    p->close_timeout_ms = timeout_ms;
    if (p->in_poll)
        p->close_deferred = 1; /* called from one of our callbacks */
    else
        producer_close_now(p);
}

/* ---- consumer ---- */

/* Messages served per loop turn at most, so one busy consumer cannot starve the
 * loop's other work; the rest is served on the next turn. */
#define SERVE_MAX 2000

struct cc_kafka_consumer {
    uv_loop_t *loop;
    rd_kafka_t *rk;
    kq w;
    const cc_kafka_consumer_ops *ops;
    void *payload;
    int grouped;
    int paused;
    int in_serve;
    int closing;  /* close requested: leaving the group */
    int detached; /* rd_kafka_consumer_closed: destroying */
    uv_timer_t close_timer; /* while closing: checks rd_kafka_consumer_closed */
    int timer_live;
    int handles;  /* open uv handles (the poll, the close timer) */
    void (*done)(void *payload);
    void *done_payload;
};

static void apply_pause(cc_kafka_consumer *c) {
    rd_kafka_topic_partition_list_t *l = NULL;
    if (rd_kafka_assignment(c->rk, &l) || !l) return;
    if (l->cnt) {
        if (c->paused)
            rd_kafka_pause_partitions(c->rk, l);
        else
            rd_kafka_resume_partitions(c->rk, l);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

static void consumer_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                               void *opaque) {
    cc_kafka_consumer *c = opaque;
    if (c->ops->rebalance) {
        c->ops->rebalance(rk, err, parts, c->payload);
    } else {
        int coop = !strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE");
        rd_kafka_error_t *e = NULL;
        if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
            coop ? (void)(e = rd_kafka_incremental_assign(rk, parts)) : (void)rd_kafka_assign(rk, parts);
        else
            coop ? (void)(e = rd_kafka_incremental_unassign(rk, parts)) : (void)rd_kafka_assign(rk, NULL);
        if (e) rd_kafka_error_destroy(e);
    }
    if (c->paused && err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) apply_pause(c); /* new partitions too */
}

static void consumer_committed(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *offsets,
                               void *opaque) {
    cc_kafka_consumer *c = opaque;
    if (c->ops->committed) c->ops->committed(err, offsets, c->payload);
}

static void consumer_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    cc_kafka_consumer *c = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[512];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, why, sizeof why);
        CC_ERROR("kafka_fatal", "client=%s code=%s reason=\"%s\"", rd_kafka_name(rk), rd_kafka_err2name(orig), why);
    } else {
        CC_WARN("kafka_error", "client=%s code=%s reason=\"%s\"", rd_kafka_name(rk),
                rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
    }
    if (c->ops->error) c->ops->error((rd_kafka_resp_err_t)err, reason, c->payload);
}

static void consumer_freed(void *arg) {
    cc_kafka_consumer *c = arg;
    if (--c->handles > 0) return;
    void (*done)(void *) = c->done;
    void *dp = c->done_payload;
    free(c);
    if (done) done(dp);
}

static void consumer_destroyed(void *arg) {
    cc_kafka_consumer *c = arg;
    kq_close(&c->w, consumer_freed);
}

static void close_timer_closed(uv_handle_t *h) { consumer_freed(h->data); }

static void consumer_finish_close(cc_kafka_consumer *c) {
    c->detached = 1;
    if (c->timer_live) {
        c->timer_live = 0;
        uv_timer_stop(&c->close_timer);
        uv_close((uv_handle_t *)&c->close_timer, close_timer_closed);
    }
    kq_detach(&c->w);
    rd_kafka_t *rk = c->rk;
    c->rk = NULL;
    destroy_off_loop(c->loop, rk, consumer_destroyed, c);
}

static void consumer_serve(void *arg) {
    cc_kafka_consumer *c = arg;
    if (c->detached || c->in_serve) return;
    c->in_serve = 1;
    int n = 0;
    while (c->rk && n < SERVE_MAX) {
        /* Serves callbacks (rebalance, commit results, errors) and returns messages. */
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, 0);
        if (!m) break;
        n++;
        if (c->closing) {
            rd_kafka_message_destroy(m); /* the owner is gone: redelivered to the next owner */
        } else if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF && c->ops->error)
                c->ops->error(m->err, rd_kafka_message_errstr(m), c->payload);
            rd_kafka_message_destroy(m);
        } else {
            c->ops->message(m, c->payload);
        }
    }
    c->in_serve = 0;
    if (n >= SERVE_MAX) kq_kick(&c->w);
    if (c->closing && !c->detached && c->rk && rd_kafka_consumer_closed(c->rk)) consumer_finish_close(c);
}

int cc_kafka_consumer_create(cc_kafka_consumer **out, uv_loop_t *loop, const cc_kafka_consumer_config *cfg,
                             const char *const *topics, int n_topics, const cc_kafka_consumer_ops *ops,
                             void *payload, char *err, size_t errlen) {
    *out = NULL;
    if (!cfg->brokers || !*cfg->brokers) {
        snprintf(err, errlen, "kafka: no brokers configured");
        return -1;
    }
    cc_kafka_consumer *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->loop = loop;
    c->ops = ops;
    c->payload = payload;
    c->grouped = cfg->group && *cfg->group;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* librdkafka's consumer queue exists only with a group.id. A consumer "without a
     * group" gets a name of its own and never subscribes or commits, so it never
     * joins a group: the owner assigns partitions at explicit offsets. */
    char nogroup[128];
    snprintf(nogroup, sizeof nogroup, "%s-unjoined", cfg->client_id ? cfg->client_id : "concert-consumer");
    if (conf_set(conf, "bootstrap.servers", cfg->brokers, err, errlen) < 0 ||
        conf_set(conf, "client.id", cfg->client_id ? cfg->client_id : "concert-consumer", err, errlen) < 0 ||
        conf_set(conf, "group.id", c->grouped ? cfg->group : nogroup, err, errlen) < 0 ||
        conf_set(conf, "enable.auto.commit", "false", err, errlen) < 0 ||
        conf_set(conf, "enable.auto.offset.store", "false", err, errlen) < 0 ||
        conf_set(conf, "reconnect.backoff.max.ms", "1000", err, errlen) < 0) {
        rd_kafka_conf_destroy(conf);
        free(c);
        return -1;
    }
    for (int i = 0; cfg->settings && cfg->settings[i]; i += 2)
        if (conf_set(conf, cfg->settings[i], cfg->settings[i + 1], err, errlen) < 0) {
            rd_kafka_conf_destroy(conf);
            free(c);
            return -1;
        }
    rd_kafka_conf_set_opaque(conf, c);
    if (c->grouped) rd_kafka_conf_set_rebalance_cb(conf, consumer_rebalance);
    rd_kafka_conf_set_offset_commit_cb(conf, consumer_committed);
    rd_kafka_conf_set_error_cb(conf, consumer_error);
    c->rk = rk_new(RD_KAFKA_CONSUMER, conf, "consumer", err, errlen);
    if (!c->rk) {
        free(c);
        return -1;
    }
    /* One queue for everything: the main queue (errors, commits, rebalances) is
     * forwarded to the consumer queue, which the loop serves. */
    rd_kafka_poll_set_consumer(c->rk);
    if (kq_start(&c->w, loop, rd_kafka_queue_get_consumer(c->rk), consumer_serve, c, err, errlen) < 0) {
        rd_kafka_destroy(c->rk);
        free(c);
        return -1;
    }
    c->handles = 1;
    if (c->grouped && n_topics > 0) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n_topics);
        for (int i = 0; i < n_topics; i++)
            rd_kafka_topic_partition_list_add(l, topics[i], RD_KAFKA_PARTITION_UA);
        rd_kafka_resp_err_t e = rd_kafka_subscribe(c->rk, l);
        rd_kafka_topic_partition_list_destroy(l);
        if (e) {
            snprintf(err, errlen, "kafka subscribe: %s", rd_kafka_err2str(e));
            kq_detach(&c->w);
            rd_kafka_destroy(c->rk);
            c->rk = NULL;
            /* The handle is live: close it, freeing c, without a `done`. */
            kq_close(&c->w, consumer_freed);
            return -1;
        }
    }
    *out = c;
    return 0;
}

rd_kafka_t *cc_kafka_consumer_rk(cc_kafka_consumer *c) { return c->rk; }

void cc_kafka_consumer_pause(cc_kafka_consumer *c, int paused) {
    paused = !!paused;
    if (c->paused == paused || c->closing) return;
    c->paused = paused;
    apply_pause(c);
}

int cc_kafka_consumer_commit(cc_kafka_consumer *c, const rd_kafka_topic_partition_list_t *offsets) {
    if (c->closing || !c->rk) return -1;
    rd_kafka_resp_err_t e = rd_kafka_commit(c->rk, offsets, 1 /* async: the result is served on the loop */);
    if (e) {
        CC_WARN("commit_failed", "reason=\"%s\"", rd_kafka_err2str(e));
        return -1;
    }
    return 0;
}

/* The last events of a close may be served before librdkafka marks the consumer
 * closed, and nothing wakes us after that: look again every 10 ms while closing. */
static void on_close_timer(uv_timer_t *t) { consumer_serve(t->data); }

void cc_kafka_consumer_close(cc_kafka_consumer *c, void (*done)(void *payload), void *payload) {
    if (!c || c->closing) return;
    c->closing = 1;
    c->done = done;
    c->done_payload = payload;
    /* Leave the group without blocking: the revocation and the close's completion
     * come through the queue we serve. */
    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(c->rk);
    rd_kafka_error_t *e = rd_kafka_consumer_close_queue(c->rk, q);
    rd_kafka_queue_destroy(q);
    if (e) {
        CC_WARN("kafka_close_failed", "reason=\"%s\"", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
    uv_timer_init(c->loop, &c->close_timer);
    c->close_timer.data = c;
    c->timer_live = 1;
    c->handles++;
    uv_timer_start(&c->close_timer, on_close_timer, 10, 10);
    kq_kick(&c->w);
}
