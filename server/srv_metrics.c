/* srv_metrics: a tiny HTTP endpoint (--metrics HOST:PORT) on the server's loop that
 * answers any GET with Prometheus text: calls by method and code, active calls and
 * streams, Redis and Kafka health. One short-lived connection per scrape; nothing
 * here blocks. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cc_kafka.h"
#include "cc_log.h"
#include "srv_app.h"

static uv_tcp_t listener;
static int listening;

typedef struct {
    uv_tcp_t tcp;
    uv_write_t wr;
    srv_app *app;
    char in[2048];
    size_t in_len;
    char *out;
    int replied;
} mconn;

static const char *const code_names[] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
};

typedef struct {
    char *buf;
    size_t len, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->buf + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        b->cap = b->cap * 2 + (size_t)(n > 0 ? n : 64);
        b->buf = realloc(b->buf, b->cap);
        if (!b->buf) abort();
    }
}

static void count_concert(srv_app *app, const char *concert, void *arg) { ++*(int *)arg; }

/** Renders the metrics page (caller frees *out). */
static size_t render(srv_app *app, char **out) {
    sbuf b = {malloc(8192), 0, 8192};
    if (!b.buf) abort();
    srv_rpc_stats rs;
    srv_rpc_get_stats(app->rpc, &rs);
    sb_printf(&b, "# HELP concert_grpc_calls_total Finished gRPC calls by method and status code.\n"
                  "# TYPE concert_grpc_calls_total counter\n");
    for (int m = 0; m <= srv_n_methods; m++)
        for (int code = 0; code <= 16; code++) {
            uint64_t v = srv_rpc_calls(app->rpc, m, (grpc_status_code)code);
            if (!v) continue;
            sb_printf(&b, "concert_grpc_calls_total{method=\"%s\",code=\"%s\"} %" PRIu64 "\n",
                      m < srv_n_methods ? srv_methods[m].path : "unknown", code_names[code], v);
        }
    sb_printf(&b, "# TYPE concert_grpc_calls_active gauge\nconcert_grpc_calls_active %" PRIu64 "\n", rs.active);
    sb_printf(&b, "# TYPE concert_grpc_calls_accepted_total counter\nconcert_grpc_calls_accepted_total %" PRIu64 "\n",
              rs.accepted);
    cc_redis_stats st;
    cc_redis_get_stats(app->redis, &st);
    sb_printf(&b,
              "# TYPE concert_redis_up gauge\nconcert_redis_up %d\n"
              "# TYPE concert_redis_commands_total counter\nconcert_redis_commands_total %" PRIu64 "\n"
              "# TYPE concert_redis_errors_total counter\nconcert_redis_errors_total %" PRIu64 "\n"
              "# TYPE concert_redis_timeouts_total counter\nconcert_redis_timeouts_total %" PRIu64 "\n"
              "# TYPE concert_redis_reconnects_total counter\nconcert_redis_reconnects_total %" PRIu64 "\n",
              cc_redis_is_up(app->redis), st.sent, st.errors, st.timeouts, st.reconnects);
    if (app->kafka)
        sb_printf(&b, "# TYPE concert_kafka_pending_messages gauge\nconcert_kafka_pending_messages %d\n",
                  cc_kafka_producer_pending(app->kafka));
    int concerts = 0;
    srv_concerts_foreach(app, count_concert, &concerts);
    sb_printf(&b, "# TYPE concert_concerts_known gauge\nconcert_concerts_known %d\n", concerts);
    *out = b.buf;
    return b.len;
}

static void on_closed(uv_handle_t *h) {
    mconn *c = h->data;
    free(c->out);
    free(c);
}

static void on_written(uv_write_t *w, int status) {
    mconn *c = w->data;
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    mconn *c = h->data;
    buf->base = c->in + c->in_len;
    buf->len = sizeof c->in - 1 - c->in_len;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
    mconn *c = s->data;
    if (n < 0 || c->in_len + (size_t)(n > 0 ? n : 0) >= sizeof c->in - 1) {
        if (!c->replied) uv_close((uv_handle_t *)&c->tcp, on_closed);
        return;
    }
    c->in_len += (size_t)n;
    c->in[c->in_len] = '\0';
    if (c->replied || !strstr(c->in, "\r\n\r\n")) return;
    c->replied = 1;
    uv_read_stop(s);
    char *body = NULL;
    size_t blen = render(c->app, &body);
    size_t cap = blen + 256;
    c->out = malloc(cap);
    if (!c->out) abort();
    int hl = snprintf(c->out, cap,
                      "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n",
                      blen);
    memcpy(c->out + hl, body, blen);
    free(body);
    uv_buf_t out = uv_buf_init(c->out, (unsigned)(hl + (int)blen));
    c->wr.data = c;
    uv_write(&c->wr, s, &out, 1, on_written);
}

static void on_connection(uv_stream_t *server, int status) {
    if (status < 0) return;
    mconn *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->app = server->data;
    uv_tcp_init(server->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, on_closed);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int srv_metrics_start(srv_app *app, const char *hostport) {
    char host[256];
    const char *colon = strrchr(hostport, ':');
    if (!colon || colon == hostport || (size_t)(colon - hostport) >= sizeof host) return -1;
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    struct sockaddr_in addr;
    if (uv_ip4_addr(host, atoi(colon + 1), &addr) != 0) return -1;
    uv_tcp_init(app->loop, &listener);
    listener.data = app;
    if (uv_tcp_bind(&listener, (const struct sockaddr *)&addr, 0) != 0 ||
        uv_listen((uv_stream_t *)&listener, 64, on_connection) != 0) {
        uv_close((uv_handle_t *)&listener, NULL);
        return -1;
    }
    listening = 1;
    CC_INFO("metrics_listening", "addr=%s", hostport);
    return 0;
}

void srv_metrics_stop(srv_app *app) {
    if (listening) uv_close((uv_handle_t *)&listener, NULL);
    listening = 0;
}
