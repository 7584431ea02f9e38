/* srv_adapt: see srv_adapt.h. */
#include "srv_adapt.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cc_log.h"

extern const unsigned char lua_adapt_health[];
extern const size_t lua_adapt_health_len;
static cc_redis_script s_health;

struct srv_adapt {
    unsigned char *booking; /* per method index: 1 for booking and payment unary calls */
    int64_t calls, errors;  /* since the last report */
    int64_t sent_calls, sent_errors;
    int64_t win_calls, win_errors; /* every server's, last complete window */
    int inflight;
    uv_timer_t timer;
    int timer_live;
};

static int server_side(grpc_status_code c) {
    return c == GRPC_STATUS_UNAVAILABLE || c == GRPC_STATUS_INTERNAL || c == GRPC_STATUS_DEADLINE_EXCEEDED ||
           c == GRPC_STATUS_UNKNOWN || c == GRPC_STATUS_DATA_LOSS;
}

void srv_adapt_call_end(void *p, int method, grpc_status_code code, double seconds) {
    srv_app *app = p;
    srv_metrics_call_end(app, method, code, seconds);
    srv_adapt *a = app->adapt;
    if (!a || method < 0 || method >= srv_n_methods || !a->booking[method]) return;
    a->calls++;
    if (server_side(code)) a->errors++;
}

void srv_adapt_window(const srv_app *app, int64_t *calls, int64_t *errors) {
    *calls = app->adapt ? app->adapt->win_calls : 0;
    *errors = app->adapt ? app->adapt->win_errors : 0;
}

static void on_report(redisReply *r, const char *err, void *p) {
    srv_app *app = p;
    srv_adapt *a = app->adapt;
    if (!a) return;
    a->inflight = 0;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 2) {
        a->win_calls = srv_int_at(r, 0);
        a->win_errors = srv_int_at(r, 1);
    } else {
        /* Not counted: add them to the next report. */
        a->calls += a->sent_calls;
        a->errors += a->sent_errors;
    }
    a->sent_calls = a->sent_errors = 0;
}

static void on_timer(uv_timer_t *t) {
    srv_app *app = t->data;
    srv_adapt *a = app->adapt;
    if (a->inflight || !cc_redis_is_up(app->redis)) return;
    char c[24], e[24], len[24];
    snprintf(c, sizeof c, "%" PRId64, a->calls);
    snprintf(e, sizeof e, "%" PRId64, a->errors);
    snprintf(len, sizeof len, "%" PRId64, app->cfg.adapt_interval_ms);
    const char *args[] = {"cc:health", c, e, len};
    if (cc_redis_eval(app->redis, &s_health, on_report, app, 1, 4, args, NULL) == 0) {
        a->inflight = 1;
        a->sent_calls = a->calls, a->sent_errors = a->errors;
        a->calls = a->errors = 0;
    }
}

int srv_adapt_init(srv_app *app) {
    srv_script_add(&s_health, "adapt_health", NULL, 0, lua_adapt_health, lua_adapt_health_len);
    srv_adapt *a = calloc(1, sizeof *a);
    if (!a) abort();
    a->booking = calloc((size_t)srv_n_methods + 1, 1);
    if (!a->booking) abort();
    for (int i = 0; i < srv_n_methods; i++) {
        const char *p = srv_methods[i].path;
        a->booking[i] = srv_methods[i].kind == SRV_UNARY && (!strncmp(p, "/concert.v1.BookingService/", 27) ||
                                                             !strncmp(p, "/concert.v1.PaymentService/", 27));
    }
    app->adapt = a;
    uv_timer_init(app->loop, &a->timer);
    a->timer.data = app;
    a->timer_live = 1;
    uint64_t every = (uint64_t)app->cfg.adapt_interval_ms;
    uv_timer_start(&a->timer, on_timer, every, every);
    return 0;
}

static void on_closed(uv_handle_t *h) {}

void srv_adapt_shutdown(srv_app *app) {
    if (app->adapt && app->adapt->timer_live) {
        uv_close((uv_handle_t *)&app->adapt->timer, on_closed);
        app->adapt->timer_live = 0;
    }
}

void srv_adapt_free(srv_app *app) {
    if (!app->adapt) return;
    free(app->adapt->booking);
    free(app->adapt);
    app->adapt = NULL;
}
