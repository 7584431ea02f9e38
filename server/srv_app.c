/* srv_app: wiring of one concert-server process: the method table, Redis error
 * mapping, start-up and the SIGTERM drain. main.c only parses configuration. */
#include "srv_app.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cc_log.h"
#include "concert/v1/admin.pb-c.h"
#include "concert/v1/booking.pb-c.h"
#include "concert/v1/payment.pb-c.h"
#include "concert/v1/queue.pb-c.h"
#include "concert/v1/wallet.pb-c.h"
#include "srv_valid.h"
#include "grpc/health/v1/health.pb-c.h"

cc_redis_script *srv_scripts[SRV_MAX_SCRIPTS];
int srv_n_scripts;

const srv_method srv_methods[] = {
    {"/concert.v1.QueueService/IssueToken", SRV_UNARY, &concert__v1__issue_token_request__descriptor,
     srv_queue_issue_token, NULL},
    {"/concert.v1.QueueService/GetQueueStatus", SRV_UNARY, &concert__v1__get_queue_status_request__descriptor,
     srv_queue_get_status, NULL},
    {"/concert.v1.QueueService/WatchQueueStatus", SRV_SERVER_STREAM,
     &concert__v1__watch_queue_status_request__descriptor, srv_queue_watch, NULL},
    {"/concert.v1.QueueService/WatchQueueStatuses", SRV_BIDI_STREAM,
     &concert__v1__watch_queue_statuses_request__descriptor, srv_queue_watch_many, NULL},
    {"/concert.v1.QueueService/LeaveQueue", SRV_UNARY, &concert__v1__leave_queue_request__descriptor,
     srv_queue_leave, NULL},
    {"/concert.v1.QueueService/GetSaleProof", SRV_UNARY, &concert__v1__get_sale_proof_request__descriptor,
     srv_queue_sale_proof, NULL},
    {"/concert.v1.QueueService/GetSigningKeys", SRV_UNARY, &concert__v1__get_signing_keys_request__descriptor,
     srv_receipt_keys, NULL},
    {"/concert.v1.BookingService/ListSchedules", SRV_UNARY, &concert__v1__list_schedules_request__descriptor,
     srv_booking_list_schedules, NULL},
    {"/concert.v1.BookingService/ListSeats", SRV_UNARY, &concert__v1__list_seats_request__descriptor,
     srv_booking_list_seats, NULL},
    {"/concert.v1.BookingService/ReserveSeats", SRV_UNARY, &concert__v1__reserve_seats_request__descriptor,
     srv_booking_reserve, NULL},
    {"/concert.v1.BookingService/GetReservation", SRV_UNARY, &concert__v1__get_reservation_request__descriptor,
     srv_booking_get, NULL},
    {"/concert.v1.BookingService/CancelReservation", SRV_UNARY,
     &concert__v1__cancel_reservation_request__descriptor, srv_booking_cancel, NULL},
    {"/concert.v1.WalletService/GetBalance", SRV_UNARY, &concert__v1__get_balance_request__descriptor,
     srv_wallet_balance, NULL},
    {"/concert.v1.WalletService/Charge", SRV_UNARY, &concert__v1__charge_request__descriptor, srv_wallet_charge, NULL},
    {"/concert.v1.AdminService/CreateConcert", SRV_UNARY, &concert__v1__create_concert_request__descriptor,
     srv_admin_create_concert, NULL},
    {"/concert.v1.AdminService/ListConcerts", SRV_UNARY, &concert__v1__list_concerts_request__descriptor,
     srv_admin_list_concerts, NULL},
    {"/concert.v1.AdminService/CreateSchedule", SRV_UNARY, &concert__v1__create_schedule_request__descriptor,
     srv_admin_create_schedule, NULL},
    {"/concert.v1.AdminService/SetQueuePolicy", SRV_UNARY, &concert__v1__set_queue_policy_request__descriptor,
     srv_admin_set_policy, NULL},
    {"/concert.v1.AdminService/GetQueuePolicy", SRV_UNARY, &concert__v1__get_queue_policy_request__descriptor,
     srv_admin_get_policy, NULL},
    {"/concert.v1.AdminService/GetStats", SRV_UNARY, &concert__v1__get_stats_request__descriptor,
     srv_admin_stats, NULL},
    {"/concert.v1.AdminService/Audit", SRV_UNARY, &concert__v1__audit_request__descriptor, srv_admin_audit, NULL},
    {"/concert.v1.AdminService/ExportSaleOrder", SRV_SERVER_STREAM, &concert__v1__export_sale_order_request__descriptor,
     srv_admin_export_sale, NULL},
    {"/concert.v1.PaymentService/Pay", SRV_UNARY, &concert__v1__pay_request__descriptor, srv_payment_pay, NULL},
    {"/concert.v1.PaymentService/GetPayment", SRV_UNARY, &concert__v1__get_payment_request__descriptor,
     srv_payment_get, NULL},
    {"/concert.v1.PaymentService/WatchPayment", SRV_SERVER_STREAM, &concert__v1__get_payment_request__descriptor,
     srv_payment_watch, NULL},
    {"/grpc.health.v1.Health/Check", SRV_UNARY, &grpc__health__v1__health_check_request__descriptor,
     srv_health_check, srv_health_check_cq},
    {"/grpc.health.v1.Health/Watch", SRV_SERVER_STREAM, &grpc__health__v1__health_check_request__descriptor,
     srv_health_watch, NULL},
    {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", SRV_BIDI_STREAM, NULL,
     srv_reflection_info, NULL},
    {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", SRV_BIDI_STREAM, NULL, srv_reflection_info, NULL},
};
const int srv_n_methods = sizeof srv_methods / sizeof srv_methods[0];

grpc_status_code srv_redis_status(const redisReply *reply, const char *err, char *msg, size_t msglen) {
    if (!reply) {
        snprintf(msg, msglen, "redis unavailable: %s", err ? err : "no reply");
        return GRPC_STATUS_UNAVAILABLE;
    }
    if (reply->type != REDIS_REPLY_ERROR) {
        snprintf(msg, msglen, "unexpected reply from redis");
        return GRPC_STATUS_INTERNAL;
    }
    const char *s = reply->str;
    if (!strncmp(s, "OOM", 3)) {
        snprintf(msg, msglen, "redis out of memory: try again later");
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    }
    if (!strncmp(s, "READONLY", 8) || !strncmp(s, "LOADING", 7) || !strncmp(s, "BUSY", 4) ||
        !strncmp(s, "NOSCRIPT", 8) || !strncmp(s, "MASTERDOWN", 10) || !strncmp(s, "TRYAGAIN", 8) ||
        !strncmp(s, "CLUSTERDOWN", 11)) {
        snprintf(msg, msglen, "redis unavailable: %.200s", s);
        return GRPC_STATUS_UNAVAILABLE;
    }
    CC_ERROR("redis_error", "error=\"%.200s\"", s);
    snprintf(msg, msglen, "internal error");
    return GRPC_STATUS_INTERNAL;
}

void srv_fail_redis(srv_call *call, const redisReply *reply, const char *err) {
    char msg[256];
    grpc_status_code code = srv_redis_status(reply, err, msg, sizeof msg);
    srv_call_finish(call, code == GRPC_STATUS_OK ? GRPC_STATUS_INTERNAL : code, "%s", msg);
}

void srv_fail_no_redis(srv_call *call) { srv_call_finish(call, GRPC_STATUS_UNAVAILABLE, "redis unavailable"); }

void srv_script_add(cc_redis_script *s, const char *name, const unsigned char *prelude, size_t prelude_len,
                    const unsigned char *body, size_t body_len) {
    if (srv_n_scripts >= SRV_MAX_SCRIPTS) {
        /* A programming error caught at every start: the table is sized in srv_app.h. */
        CC_ERROR("too_many_scripts", "script=%s max=%d", name, SRV_MAX_SCRIPTS);
        abort();
    }
    size_t len;
    char *text = cc_redis_script_join(prelude, prelude_len, body, body_len, &len);
    cc_redis_script_init(s, name, text, len);
    srv_scripts[srv_n_scripts++] = s;
}

int64_t srv_int_at(const redisReply *r, size_t i) {
    if (!r || r->type != REDIS_REPLY_ARRAY || i >= r->elements) return 0;
    const redisReply *e = r->element[i];
    if (e->type == REDIS_REPLY_INTEGER) return e->integer;
    if (e->type == REDIS_REPLY_STRING) return strtoll(e->str, NULL, 10);
    return 0;
}

const char *srv_str_at(const redisReply *r, size_t i) {
    if (!r || r->type != REDIS_REPLY_ARRAY || i >= r->elements) return "";
    const redisReply *e = r->element[i];
    return e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_STATUS ? e->str : "";
}

int srv_script_ok(srv_call *call, const redisReply *r, const char *err) {
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1 || r->element[0]->type != REDIS_REPLY_INTEGER) {
        srv_fail_redis(call, r, err);
        return 0;
    }
    int64_t code = r->element[0]->integer;
    if (code == 0) return 1;
    if (code < 0 || code > 16) code = GRPC_STATUS_INTERNAL;
    srv_call_finish(call, (grpc_status_code)code, "%s", srv_str_at(r, 1));
    return 0;
}

int srv_auth_token(srv_call *call, char *token, char *concert) {
    size_t vlen = 0, tlen = 0;
    const char *v = srv_call_metadata(call, "authorization", &vlen);
    const char *t = v ? srv_bearer(v, vlen, &tlen) : NULL;
    if (!t) {
        srv_call_finish(call, GRPC_STATUS_UNAUTHENTICATED,
                        "authorization: a queue token is required ('authorization: Bearer <token>')");
        return -1;
    }
    if (tlen > SRV_TOKEN_MAX || srv_token_parse(t, tlen, concert) < 0) {
        srv_call_finish(call, GRPC_STATUS_UNAUTHENTICATED, "authorization: unknown token");
        return -1;
    }
    memcpy(token, t, tlen);
    token[tlen] = '\0';
    return 0;
}

int srv_auth_admin(srv_call *call) {
    srv_app *app = srv_call_app(call);
    if (!app->cfg.admin_key || !*app->cfg.admin_key) {
        srv_call_finish(call, GRPC_STATUS_PERMISSION_DENIED, "admin is disabled on this server (no --admin-key)");
        return -1;
    }
    size_t len = 0;
    const char *k = srv_call_metadata(call, "x-admin-key", &len);
    if (!k) {
        srv_call_finish(call, GRPC_STATUS_UNAUTHENTICATED, "x-admin-key: required");
        return -1;
    }
    if (!srv_secret_eq(app->cfg.admin_key, k, len)) {
        CC_WARN("admin_denied", "method=%s", srv_call_method(call)->path);
        srv_call_finish(call, GRPC_STATUS_PERMISSION_DENIED, "x-admin-key: wrong key");
        return -1;
    }
    return 0;
}
