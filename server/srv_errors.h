/* srv_errors: the structured details of every error status the server sends.
 *
 * Every non-OK status carries trailer `grpc-status-details-bin`: a serialized
 * google.rpc.Status {code, message (the status message itself), details} with
 *   - google.rpc.ErrorInfo on every error: a stable `reason` (UPPER_SNAKE_CASE, one per
 *     kind of error, listed in README "Error codes"), domain "concert.v1", metadata
 *     `field` (the field the message names), `method`, and `concert_id` / `schedule_id`
 *     when the request (or its token or id) names them;
 *   - google.rpc.BadRequest for INVALID_ARGUMENT naming a field: one field violation
 *     {field, description = the message after "field: "};
 *   - google.rpc.RetryInfo for UNAVAILABLE and rate limits (RESOURCE_EXHAUSTED with
 *     trailer `retry-after-ms`: the same delay).
 * Reason and field are derived in one place from the `field: message` convention every
 * handler and script follows (docs/conventions.md), so no call site names a reason;
 * the rule table in srv_errors.c is the single list of reasons.
 *
 * The messages are written by hand (common/cc_pbw) with the field numbers of
 * googleapis' google/rpc/status.proto, error_details.proto and
 * google/protobuf/any.proto, duration.proto (documented in srv_errors.c); no .proto of
 * theirs is compiled or committed. tests/ops/test_error_details.sh decodes them with
 * the real definitions (PyPI googleapis-common-protos, grpcio-status).
 *
 * Pure except srv_err_details (which reads a call). Must not: decide codes or
 * messages (handlers do), or block. */
#ifndef SRV_ERRORS_H
#define SRV_ERRORS_H

#include <grpc/grpc.h>
#include <stdint.h>

#include "cc_pbw.h"
#include "srv_rpc.h"

#define SRV_ERR_DOMAIN "concert.v1"
#define SRV_ERR_FIELD_MAX 64

/** What an error is, derived from its code and message. */
typedef struct {
    const char *reason;          /* static; never NULL */
    char field[SRV_ERR_FIELD_MAX]; /* the field the message names ("" if none) */
    const char *description;     /* the message after "field: " (into `message`), or the whole message */
    int64_t retry_ms;            /* RetryInfo delay in ms; -1 for none */
} srv_err_info;

/** Classifies an error status. `retry_after_ms` is the call's `retry-after-ms` trailer
 * (-1 when it has none). `message` must outlive `out` (description points into it). */
void srv_err_classify(grpc_status_code code, const char *message, int64_t retry_after_ms, srv_err_info *out);

/** The field a message names: its prefix before ": " when that is a field path
 * ([A-Za-z_][A-Za-z0-9_.[]-]*, shorter than SRV_ERR_FIELD_MAX), into out; 0 if
 * found (then *rest points after ": "), -1 if the message names none. */
int srv_err_field(const char *message, char out[SRV_ERR_FIELD_MAX], const char **rest);

/** Appends a serialized google.rpc.Status for (code, message, info) to `out`, with
 * ErrorInfo metadata from `md` (n_md key/value pairs, each non-empty, valid UTF-8) and
 * `field` added first when info->field is set. */
void srv_err_encode(cc_pbw *out, grpc_status_code code, const char *message, const srv_err_info *info,
                    const char *const (*md)[2], size_t n_md);

/** The srv_rpc status_details hook (srv_rpc_config.status_details): classifies the
 * call's error and encodes it with the call's method, concert and schedule. Returns a
 * new slice (the caller takes it). Loop thread. */
grpc_slice srv_err_details(srv_call *c, grpc_status_code code, const char *message);

/** The reasons of the rule table and FIELD_INVALID, NULL after the last (the other
 * fallbacks are the code names): for the test that keeps README's error table
 * complete. */
const char *srv_err_reason_at(size_t i);

#endif
