/* srv_app: wiring of one concert-server process: the method table, Redis error
 * mapping, start-up and the SIGTERM drain. main.c only parses configuration. */
#include "srv_app.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cc_log.h"
#include "concert/v1/queue.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"

cc_redis_script *srv_scripts[32];
int srv_n_scripts;

const srv_method srv_methods[] = {
    {"/concert.v1.QueueService/IssueToken", SRV_UNARY, &concert__v1__issue_token_request__descriptor,
     srv_queue_issue_token},
    {"/concert.v1.QueueService/GetQueueStatus", SRV_UNARY, &concert__v1__get_queue_status_request__descriptor,
     srv_queue_get_status},
    {"/concert.v1.QueueService/WatchQueueStatus", SRV_SERVER_STREAM,
     &concert__v1__watch_queue_status_request__descriptor, srv_queue_watch},
    {"/concert.v1.QueueService/LeaveQueue", SRV_UNARY, &concert__v1__leave_queue_request__descriptor,
     srv_queue_leave},
    {"/grpc.health.v1.Health/Check", SRV_UNARY, &grpc__health__v1__health_check_request__descriptor,
     srv_health_check},
    {"/grpc.health.v1.Health/Watch", SRV_SERVER_STREAM, &grpc__health__v1__health_check_request__descriptor,
     srv_health_watch},
    {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", SRV_BIDI_STREAM, NULL,
     srv_reflection_info},
    {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", SRV_BIDI_STREAM, NULL, srv_reflection_info},
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
