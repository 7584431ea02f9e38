/* srv_health: grpc.health.v1.Health. SERVING while at least one Redis connection is
 * up, NOT_SERVING otherwise (and while shutting down). Watch streams get the current
 * status at once and every change after it. */
#include <stdlib.h>
#include <string.h>

#include <grpc/slice.h>

#include "cc_redis.h"
#include "grpc/health/v1/health.pb-c.h"
#include "srv_app.h"

struct srv_health_watcher {
    srv_call *call;
    int known;
    int last; /* last status sent */
    srv_health_watcher *prev, *next;
};

static const char *const known_services[] = {
    "", "concert.v1.QueueService", "concert.v1.BookingService", "concert.v1.WalletService",
    "concert.v1.AdminService", "concert.v1.PaymentService", "grpc.health.v1.Health", NULL,
};

static int is_known(const char *svc) {
    for (int i = 0; known_services[i]; i++)
        if (!strcmp(svc, known_services[i])) return 1;
    return 0;
}

static int current(srv_app *app) {
    if (app->shutting_down || !cc_redis_is_up(app->redis))
        return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
}

/* srv_method.cq_handler: SERVING for a known service, answered without an srv_call;
 * anything else (an unknown service's NOT_FOUND, NOT_SERVING) is left to
 * srv_health_check. */
int srv_health_check_cq(const ProtobufCMessage *m, void *p, grpc_slice *reply) {
    const Grpc__Health__V1__HealthCheckRequest *req = (const void *)m;
    srv_app *app = p;
    if (current(app) != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING ||
        !is_known(req->service))
        return 0;
    static const uint8_t serving[] = {0x08, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING};
    *reply = grpc_slice_from_static_buffer(serving, sizeof serving);
    return 1;
}

void srv_health_check(srv_call *c) {
    const Grpc__Health__V1__HealthCheckRequest *req = (const void *)srv_call_request(c);
    if (!is_known(req->service)) {
        srv_call_finish(c, GRPC_STATUS_NOT_FOUND, "service: unknown service '%.100s'", req->service);
        return;
    }
    Grpc__Health__V1__HealthCheckResponse resp;
    grpc__health__v1__health_check_response__init(&resp);
    resp.status = current(srv_call_app(c));
    srv_call_reply(c, &resp.base);
}

static void send_status(srv_health_watcher *w, int status) {
    Grpc__Health__V1__HealthCheckResponse resp;
    grpc__health__v1__health_check_response__init(&resp);
    resp.status = status;
    w->last = status;
    srv_call_send(w->call, &resp.base);
}

static void on_cancel(srv_call *c) {
    srv_health_watcher *w = srv_call_data(c);
    srv_app *app = srv_call_app(c);
    if (w->prev) w->prev->next = w->next; else app->health_watchers = w->next;
    if (w->next) w->next->prev = w->prev;
    free(w);
    srv_call_finish(c, GRPC_STATUS_CANCELLED, "cancelled");
}

void srv_health_watch(srv_call *c) {
    const Grpc__Health__V1__HealthCheckRequest *req = (const void *)srv_call_request(c);
    srv_app *app = srv_call_app(c);
    srv_health_watcher *w = calloc(1, sizeof *w);
    if (!w) abort();
    w->call = c;
    w->known = is_known(req->service);
    w->next = app->health_watchers;
    if (w->next) w->next->prev = w;
    app->health_watchers = w;
    srv_call_set_data(c, w);
    srv_call_on_cancel(c, on_cancel);
    send_status(w, w->known ? current(app) : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN);
}

void srv_health_changed(srv_app *app) {
    int st = current(app);
    for (srv_health_watcher *w = app->health_watchers; w; w = w->next)
        if (w->known && w->last != st) send_status(w, st);
}

void srv_health_init(srv_app *app) {
    app->health_watchers = NULL;
}
