/* cc_kafka: librdkafka glue. See cc_kafka.h for the contract.
 *
 * The producer's main queue (delivery reports, errors, statistics) signals a
 * non-blocking pipe whenever it goes from empty to non-empty; a uv_poll on the read
 * end drains the pipe and serves the queue with rd_kafka_poll(rk, 0) until it is
 * empty, so every callback runs on the loop's thread. librdkafka's own threads only
 * ever touch the pipe (and cc_log, which is thread-safe).
 *
 * Ownership: the producer owns the rd_kafka_t, the pipe and the uv_poll handle; each
 * queued message owns a small `kmsg` (callback + payload) passed as msg_opaque and
 * freed right after its delivery report. Must not: block the loop outside
 * cc_kafka_ensure_topics and cc_kafka_producer_close, or free anything from inside
 * rd_kafka_poll (a close requested there is deferred until the poll returns). */
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

struct cc_kafka_producer {
    uv_loop_t *loop;
    rd_kafka_t *rk;
    rd_kafka_queue_t *mainq;
    int pipe_r, pipe_w;
    uv_poll_t poll;
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

/* ---- topics ---- */

int cc_kafka_ensure_topics(const char *brokers, int request_partitions, int rf, int timeout_ms, char *err,
                           size_t errlen) {
    if (request_partitions < 12) request_partitions = 12;
    if (timeout_ms <= 0) timeout_ms = 10000;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, cc_kafka_log_cb);
    if (conf_set(conf, "bootstrap.servers", brokers, err, errlen) < 0 ||
        conf_set(conf, "client.id", "concert-admin", err, errlen) < 0) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    char why[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(err, errlen, "kafka admin client: %s", why);
        return -1;
    }
    const char *names[3] = {CC_TOPIC_PAYMENT_REQUESTS, CC_TOPIC_PAYMENT_RESULTS, CC_TOPIC_RESERVATION_EVENTS};
    int parts[3] = {request_partitions, 6, 6};
    rd_kafka_NewTopic_t *nt[3] = {0};
    int rc = -1;
    for (int i = 0; i < 3; i++) {
        nt[i] = rd_kafka_NewTopic_new(names[i], parts[i], rf, why, sizeof why);
        if (!nt[i]) {
            snprintf(err, errlen, "topic %s: %s", names[i], why);
            goto out;
        }
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opt = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_request_timeout(opt, timeout_ms, why, sizeof why);
    rd_kafka_AdminOptions_set_operation_timeout(opt, timeout_ms, why, sizeof why);
    rd_kafka_CreateTopics(rk, nt, 3, opt, q);
    /* A little more than the request timeout: the result then always arrives. */
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, timeout_ms + 2000);
    if (!ev) {
        snprintf(err, errlen, "creating topics: no answer from %s within %d ms", brokers, timeout_ms);
    } else if (rd_kafka_event_error(ev)) {
        snprintf(err, errlen, "creating topics: %s", rd_kafka_event_error_string(ev));
    } else {
        const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
        size_t n = 0;
        const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &n);
        rc = 0;
        for (size_t i = 0; i < n; i++) {
            rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[i]);
            if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
                CC_INFO("kafka_topic_created", "topic=%s", rd_kafka_topic_result_name(tr[i]));
            } else if (e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
                const char *es = rd_kafka_topic_result_error_string(tr[i]);
                snprintf(err, errlen, "creating topic %s: %s", rd_kafka_topic_result_name(tr[i]),
                         es ? es : rd_kafka_err2str(e));
                rc = -1;
                break;
            }
        }
    }
    if (ev) rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(opt);
    rd_kafka_queue_destroy(q);
out:
    for (int i = 0; i < 3; i++)
        if (nt[i]) rd_kafka_NewTopic_destroy(nt[i]);
    rd_kafka_destroy(rk);
    return rc;
}

/* ---- producer: callbacks (all on the loop, from rd_kafka_poll) ---- */

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
    CC_WARN("kafka_error", "code=%s reason=\"%s\"", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
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

static void close_now(cc_kafka_producer *p);

static void serve(cc_kafka_producer *p) {
    p->in_poll = 1;
    while (p->rk && rd_kafka_poll(p->rk, 0) > 0) {
    }
    p->in_poll = 0;
    if (p->close_deferred) close_now(p);
}

static void on_readable(uv_poll_t *h, int status, int events) {
    cc_kafka_producer *p = h->data;
    char buf[256];
    while (read(p->pipe_r, buf, sizeof buf) > 0) {
    }
    serve(p);
}

/* ---- producer: public API ---- */

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
    p->pipe_r = p->pipe_w = -1;
    int timeout = cfg->message_timeout_ms > 0 ? cfg->message_timeout_ms : 10000;
    char tbuf[16];
    snprintf(tbuf, sizeof tbuf, "%d", timeout);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (conf_set(conf, "bootstrap.servers", cfg->brokers, err, errlen) < 0 ||
        conf_set(conf, "client.id", cfg->client_id ? cfg->client_id : "concert", err, errlen) < 0 ||
        conf_set(conf, "enable.idempotence", "true", err, errlen) < 0 ||
        conf_set(conf, "acks", "all", err, errlen) < 0 ||
        conf_set(conf, "delivery.timeout.ms", tbuf, err, errlen) < 0 ||
        conf_set(conf, "message.timeout.ms", tbuf, err, errlen) < 0 ||
        conf_set(conf, "linger.ms", "1", err, errlen) < 0 ||
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
    rd_kafka_conf_set_log_cb(conf, cc_kafka_log_cb);
    char why[512];
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
    if (!p->rk) {
        rd_kafka_conf_destroy(conf);
        free(p);
        snprintf(err, errlen, "kafka producer: %s", why);
        return -1;
    }
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
        snprintf(err, errlen, "kafka producer: pipe: %s", strerror(errno));
        rd_kafka_destroy(p->rk);
        free(p);
        return -1;
    }
    p->pipe_r = fds[0];
    p->pipe_w = fds[1];
    uv_poll_init(loop, &p->poll, p->pipe_r);
    p->poll.data = p;
    uv_poll_start(&p->poll, UV_READABLE, on_readable);
    p->mainq = rd_kafka_queue_get_main(p->rk);
    rd_kafka_queue_io_event_enable(p->mainq, p->pipe_w, "1", 1);
    /* librdkafka writes to the pipe only when the queue turns non-empty: whatever it
     * queued before the line above (a refused connection, at once) would never wake
     * us. So wake up once by hand and serve it on the first loop turn. */
    ssize_t w = write(p->pipe_w, "1", 1);
    (void)w;
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

static void on_poll_closed(uv_handle_t *h) {
    cc_kafka_producer *p = h->data;
    close(p->pipe_r);
    close(p->pipe_w);
    free(p);
}

static void close_now(cc_kafka_producer *p) {
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
    rd_kafka_queue_io_event_enable(p->mainq, -1, NULL, 0);
    rd_kafka_queue_destroy(p->mainq);
    rd_kafka_destroy(p->rk);
    p->rk = NULL;
    uv_poll_stop(&p->poll);
    uv_close((uv_handle_t *)&p->poll, on_poll_closed);
}

void cc_kafka_producer_close(cc_kafka_producer *p, int timeout_ms) {
    if (!p || p->closing) return;
    p->closing = 1;
    p->close_timeout_ms = timeout_ms;
    if (p->in_poll)
        p->close_deferred = 1; /* called from one of our callbacks */
    else
        close_now(p);
}
