/* srv_errors: see srv_errors.h.
 *
 * Wire layout written here (field numbers from googleapis; proto3, zero values left
 * out):
 *   google.rpc.Status       1 int32 code, 2 string message, 3 repeated Any details
 *   google.protobuf.Any     1 string type_url ("type.googleapis.com/<full name>"),
 *                           2 bytes value (the serialized message)
 *   google.rpc.ErrorInfo    1 string reason, 2 string domain,
 *                           3 map<string,string> metadata (entries: 1 key, 2 value)
 *   google.rpc.BadRequest   1 repeated FieldViolation field_violations
 *     FieldViolation        1 string field, 2 string description
 *   google.rpc.RetryInfo    1 Duration retry_delay
 *   google.protobuf.Duration 1 int64 seconds, 2 int32 nanos */
#include "srv_errors.h"

#include <stdlib.h>
#include <string.h>

#include "srv_valid.h"

/* ---- reasons ----
 * One row per kind of error, first match wins: the code, the field the message names
 * (NULL: any, "": none), a word the message contains (NULL: any), the reason, and the
 * RetryInfo delay (ms, -1: none; a rate limit's own `retry-after-ms` wins). A message
 * that matches no row gets its code's fallback below. Reasons are part of the API
 * (README "Error codes"): add rows, never rename one. */
typedef struct {
    grpc_status_code code;
    const char *field;
    const char *word;
    const char *reason;
    int64_t retry_ms;
} rule;

#define UNAVAILABLE_RETRY_MS 1000

static const rule rules[] = {
    {GRPC_STATUS_INVALID_ARGUMENT, "", "is not a valid", "MALFORMED_REQUEST", -1},
    {GRPC_STATUS_INVALID_ARGUMENT, "page_token", NULL, "PAGE_TOKEN_INVALID", -1},
    {GRPC_STATUS_INVALID_ARGUMENT, NULL, ": required", "FIELD_REQUIRED", -1},
    {GRPC_STATUS_INVALID_ARGUMENT, "update_fields", "unknown field", "UNKNOWN_FIELD", -1},
    {GRPC_STATUS_UNAUTHENTICATED, "authorization", "required", "TOKEN_REQUIRED", -1},
    {GRPC_STATUS_UNAUTHENTICATED, NULL, "unknown token", "TOKEN_UNKNOWN", -1},
    {GRPC_STATUS_UNAUTHENTICATED, "x-admin-key", NULL, "ADMIN_KEY_REQUIRED", -1},
    {GRPC_STATUS_UNAUTHENTICATED, "x-user-assertion", ": required", "USER_ASSERTION_REQUIRED", -1},
    {GRPC_STATUS_UNAUTHENTICATED, "x-user-assertion", NULL, "USER_ASSERTION_INVALID", -1},
    {GRPC_STATUS_PERMISSION_DENIED, "token", "WAITING", "TOKEN_NOT_ADMITTED", -1},
    {GRPC_STATUS_PERMISSION_DENIED, "token", "EXPIRED", "TOKEN_EXPIRED", -1},
    {GRPC_STATUS_PERMISSION_DENIED, NULL, "another concert", "WRONG_CONCERT", -1},
    {GRPC_STATUS_PERMISSION_DENIED, "user_id", "x-user-assertion", "USER_ASSERTION_MISMATCH", -1},
    {GRPC_STATUS_PERMISSION_DENIED, NULL, "another user", "NOT_OWNER", -1},
    {GRPC_STATUS_PERMISSION_DENIED, "x-admin-key", NULL, "ADMIN_KEY_WRONG", -1},
    {GRPC_STATUS_PERMISSION_DENIED, NULL, "admin is disabled", "ADMIN_DISABLED", -1},
    {GRPC_STATUS_NOT_FOUND, NULL, "no concert", "CONCERT_NOT_FOUND", -1},
    {GRPC_STATUS_NOT_FOUND, NULL, "no such concert", "CONCERT_NOT_FOUND", -1},
    {GRPC_STATUS_NOT_FOUND, "schedule_id", NULL, "SCHEDULE_NOT_FOUND", -1},
    {GRPC_STATUS_NOT_FOUND, "seat_numbers", NULL, "SEAT_NOT_FOUND", -1},
    {GRPC_STATUS_NOT_FOUND, "reservation_id", NULL, "RESERVATION_NOT_FOUND", -1},
    {GRPC_STATUS_NOT_FOUND, "payment_id", NULL, "PAYMENT_NOT_FOUND", -1},
    {GRPC_STATUS_NOT_FOUND, "service", NULL, "SERVICE_NOT_FOUND", -1},
    {GRPC_STATUS_ALREADY_EXISTS, "concert_id", NULL, "CONCERT_ALREADY_EXISTS", -1},
    {GRPC_STATUS_ALREADY_EXISTS, "schedule_id", NULL, "SCHEDULE_ALREADY_EXISTS", -1},
    {GRPC_STATUS_FAILED_PRECONDITION, "seat_numbers", "is sold", "SEAT_SOLD", -1},
    {GRPC_STATUS_FAILED_PRECONDITION, "seat_numbers", "is held", "SEAT_HELD", -1},
    {GRPC_STATUS_FAILED_PRECONDITION, "idempotency_key", NULL, "IDEMPOTENCY_KEY_REUSED", -1},
    {GRPC_STATUS_FAILED_PRECONDITION, "reservation_id", "already paid", "RESERVATION_PAID", -1},
    {GRPC_STATUS_FAILED_PRECONDITION, "reservation_id", "being paid", "RESERVATION_BEING_PAID", -1},
    {GRPC_STATUS_FAILED_PRECONDITION, "reservation_id", "not held", "RESERVATION_NOT_HELD", -1},
    {GRPC_STATUS_FAILED_PRECONDITION, "amount", NULL, "BALANCE_LIMIT", -1},
    {GRPC_STATUS_FAILED_PRECONDITION, "concert_id", "opens at", "SALE_NOT_OPEN", -1},
    {GRPC_STATUS_FAILED_PRECONDITION, "concert_id", "no scheduled sale", "NO_SCHEDULED_SALE", -1},
    {GRPC_STATUS_FAILED_PRECONDITION, "policy.sale_opens_at_unix_ms", NULL, "SALE_FIXED", -1},
    {GRPC_STATUS_FAILED_PRECONDITION, "policy.prequeue_opens_at_unix_ms", NULL, "SALE_FIXED", -1},
    {GRPC_STATUS_RESOURCE_EXHAUSTED, NULL, "too many", "RATE_LIMITED", -1},
    {GRPC_STATUS_RESOURCE_EXHAUSTED, "seat_numbers", NULL, "SEAT_LIMIT", -1},
    {GRPC_STATUS_RESOURCE_EXHAUSTED, "concert_id", "already waits", "QUEUE_LIMIT", -1},
    {GRPC_STATUS_RESOURCE_EXHAUSTED, "metadata", NULL, "METADATA_TOO_LARGE", -1},
    {GRPC_STATUS_RESOURCE_EXHAUSTED, NULL, "out of memory", "REDIS_OUT_OF_MEMORY", UNAVAILABLE_RETRY_MS},
    {GRPC_STATUS_UNAVAILABLE, NULL, "shutting down", "SHUTTING_DOWN", 100},
    {GRPC_STATUS_UNAVAILABLE, "concert_id", "REJECT", "QUEUE_CLOSED", UNAVAILABLE_RETRY_MS},
    {GRPC_STATUS_UNAVAILABLE, NULL, "payments are disabled", "PAYMENTS_DISABLED", UNAVAILABLE_RETRY_MS},
    {GRPC_STATUS_UNAVAILABLE, NULL, "kafka", "KAFKA_UNAVAILABLE", UNAVAILABLE_RETRY_MS},
    {GRPC_STATUS_UNAVAILABLE, NULL, "redis", "REDIS_UNAVAILABLE", UNAVAILABLE_RETRY_MS},
    {GRPC_STATUS_UNIMPLEMENTED, "", "unknown method", "METHOD_NOT_FOUND", -1},
    {GRPC_STATUS_UNKNOWN, NULL, "state is unknown", "PAYMENT_STATE_UNKNOWN", -1},
};

/* Per code, when no row matched: the code's own name (INVALID_ARGUMENT naming a field:
 * FIELD_INVALID). UNAVAILABLE always has a RetryInfo. */
static const char *const fallback[17] = {
    "OK",        "CANCELLED",          "UNKNOWN",        "INVALID_ARGUMENT",    "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
    "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
};

const char *srv_err_reason_at(size_t i) {
    size_t nr = sizeof rules / sizeof *rules;
    if (i < nr) return rules[i].reason;
    return i == nr ? "FIELD_INVALID" : NULL;
}

static int field_char(char ch, int first) {
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_') return 1;
    return !first && ((ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '[' || ch == ']');
}

int srv_err_field(const char *message, char out[SRV_ERR_FIELD_MAX], const char **rest) {
    out[0] = '\0';
    const char *colon = strstr(message, ": ");
    if (!colon || colon == message || colon - message >= SRV_ERR_FIELD_MAX) return -1;
    for (const char *p = message; p < colon; p++)
        if (!field_char(*p, p == message)) return -1;
    memcpy(out, message, (size_t)(colon - message));
    out[colon - message] = '\0';
    if (rest) *rest = colon + 2;
    return 0;
}

void srv_err_classify(grpc_status_code code, const char *message, int64_t retry_after_ms, srv_err_info *out) {
    if (!message) message = "";
    const char *rest = message;
    int has_field = srv_err_field(message, out->field, &rest) == 0;
    out->description = has_field ? rest : message;
    out->reason = NULL;
    out->retry_ms = -1;
    for (size_t i = 0; i < sizeof rules / sizeof *rules && !out->reason; i++) {
        const rule *r = &rules[i];
        if (r->code != code) continue;
        if (r->field && (*r->field ? !has_field || strcmp(r->field, out->field) : has_field)) continue;
        if (r->word && !strstr(message, r->word)) continue;
        out->reason = r->reason;
        out->retry_ms = r->retry_ms;
    }
    if (!out->reason) {
        int c = (int)code;
        out->reason = code == GRPC_STATUS_INVALID_ARGUMENT && has_field ? "FIELD_INVALID"
                      : c > 0 && c < 17                                 ? fallback[c]
                                                                        : "UNKNOWN";
    }
    if (code == GRPC_STATUS_UNAVAILABLE && out->retry_ms < 0) out->retry_ms = UNAVAILABLE_RETRY_MS;
    /* A rate limit says when a call would pass again: RetryInfo says the same. */
    if (retry_after_ms >= 0 && (code == GRPC_STATUS_RESOURCE_EXHAUSTED || code == GRPC_STATUS_UNAVAILABLE))
        out->retry_ms = retry_after_ms;
}

/* ---- encoding ---- */

static void add_any(cc_pbw *status, const char *type, const cc_pbw *value) {
    cc_pbw any = {0};
    char url[96];
    size_t n = (size_t)snprintf(url, sizeof url, "type.googleapis.com/%s", type);
    cc_pbw_bytes(&any, 1, url, n);
    cc_pbw_message(&any, 2, value);
    cc_pbw_message(status, 3, &any);
    cc_pbw_free(&any);
}

static void add_md(cc_pbw *info, const char *key, const char *value) {
    cc_pbw e = {0};
    cc_pbw_string(&e, 1, key);
    cc_pbw_string(&e, 2, value);
    cc_pbw_message(info, 3, &e);
    cc_pbw_free(&e);
}

void srv_err_encode(cc_pbw *out, grpc_status_code code, const char *message, const srv_err_info *info,
                    const char *const (*md)[2], size_t n_md) {
    if ((int)code) cc_pbw_varint(out, 1, (uint64_t)(int64_t)(int32_t)code);
    cc_pbw_string(out, 2, message);

    cc_pbw m = {0};
    cc_pbw_string(&m, 1, info->reason);
    cc_pbw_string(&m, 2, SRV_ERR_DOMAIN);
    if (info->field[0]) add_md(&m, "field", info->field);
    for (size_t i = 0; i < n_md; i++) add_md(&m, md[i][0], md[i][1]);
    add_any(out, "google.rpc.ErrorInfo", &m);
    cc_pbw_free(&m);

    if (code == GRPC_STATUS_INVALID_ARGUMENT && info->field[0]) {
        cc_pbw v = {0};
        cc_pbw_string(&v, 1, info->field);
        cc_pbw_string(&v, 2, info->description);
        cc_pbw_message(&m, 1, &v);
        cc_pbw_free(&v);
        add_any(out, "google.rpc.BadRequest", &m);
        cc_pbw_free(&m);
    }
    if (info->retry_ms >= 0) {
        cc_pbw d = {0};
        if (info->retry_ms / 1000) cc_pbw_varint(&d, 1, (uint64_t)(info->retry_ms / 1000));
        if (info->retry_ms % 1000) cc_pbw_varint(&d, 2, (uint64_t)(info->retry_ms % 1000) * 1000000u);
        cc_pbw_message(&m, 1, &d);
        cc_pbw_free(&d);
        add_any(out, "google.rpc.RetryInfo", &m);
        cc_pbw_free(&m);
    }
}

/* ---- the call's context ---- */

/* A string field `name` of `msg`, or of a message field of it (policy.concert_id). */
static const char *str_field(const ProtobufCMessage *msg, const char *name, int depth) {
    if (!msg) return NULL;
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, name);
    if (f && f->type == PROTOBUF_C_TYPE_STRING && f->label != PROTOBUF_C_LABEL_REPEATED) {
        const char *s = *(char *const *)((const char *)msg + f->offset);
        if (s && *s) return s;
    }
    if (depth > 0) return NULL;
    for (unsigned i = 0; i < d->n_fields; i++) {
        f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->label == PROTOBUF_C_LABEL_REPEATED) continue;
        const char *s = str_field(*(ProtobufCMessage *const *)((const char *)msg + f->offset), name, depth + 1);
        if (s) return s;
    }
    return NULL;
}

/* The concert a call is about: its concert_id, else the concert in its token (queue
 * token field or bearer) or in its reservation or payment id. Only a well-formed id. */
static int call_concert(srv_call *c, const ProtobufCMessage *req, char out[SRV_MAX_ID + 1]) {
    const char *s = str_field(req, "concert_id", 0);
    if (s && srv_valid_id(s)) {
        snprintf(out, SRV_MAX_ID + 1, "%s", s);
        return 0;
    }
    if ((s = str_field(req, "token", 0)) && strlen(s) <= SRV_TOKEN_MAX && srv_token_parse(s, strlen(s), out) == 0)
        return 0;
    size_t vlen = 0, tlen = 0;
    const char *v = srv_call_metadata(c, "authorization", &vlen);
    const char *t = v ? srv_bearer(v, vlen, &tlen) : NULL;
    if (t && tlen <= SRV_TOKEN_MAX && srv_token_parse(t, tlen, out) == 0) return 0;
    if ((s = str_field(req, "reservation_id", 0)) && srv_id_parse(s, strlen(s), "r1", out) == 0) return 0;
    if ((s = str_field(req, "payment_id", 0)) && srv_id_parse(s, strlen(s), "p1", out) == 0) return 0;
    return -1;
}

grpc_slice srv_err_details(srv_call *c, grpc_status_code code, const char *message) {
    int64_t retry_after = -1;
    size_t tl = 0;
    const char *t = srv_call_trailer(c, "retry-after-ms", &tl);
    if (t && tl > 0 && tl < 20) retry_after = strtoll(t, NULL, 10);
    srv_err_info info;
    srv_err_classify(code, message, retry_after, &info);

    const char *md[3][2];
    size_t n = 0;
    const srv_method *m = srv_call_method(c);
    if (m) md[n][0] = "method", md[n][1] = m->path + 1, n++;
    const ProtobufCMessage *req = srv_call_request(c);
    char concert[SRV_MAX_ID + 1];
    if (call_concert(c, req, concert) == 0) md[n][0] = "concert_id", md[n][1] = concert, n++;
    const char *sched = str_field(req, "schedule_id", 0);
    if (sched && srv_valid_id(sched)) md[n][0] = "schedule_id", md[n][1] = sched, n++;

    cc_pbw w = {0};
    srv_err_encode(&w, code, message, &info, (const char *const(*)[2])md, n);
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)w.data, w.len);
    cc_pbw_free(&w);
    return s;
}
