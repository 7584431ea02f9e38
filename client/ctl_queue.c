/* ctl_queue: the `queue ...` commands of concertctl (concert.v1.QueueService):
 * join, status, watch, leave. Builds requests from options, prints replies; argv,
 * metadata, deadlines and exit statuses are ctl_out's and concertctl.c's business. */
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "cc_receipt.h"
#include "concert/v1/queue.pb-c.h"
#include "ctl.h"

#define QS "/concert.v1.QueueService/"

static const char *state_name(int state) {
    switch (state) {
    case CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING: return "WAITING";
    case CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE: return "ACTIVE";
    case CONCERT__V1__QUEUE_STATE__QUEUE_STATE_EXPIRED: return "EXPIRED";
    default: return "UNSPECIFIED";
    }
}

static int64_t now_ms(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* "token v1.demo.ab12… WAITING position 12 (about 6 s)" */
static void human_status(const ProtobufCMessage *m, FILE *out) {
    const Concert__V1__QueueStatus *s = (const void *)m;
    char a[48], b[48];
    fprintf(out, "token %s %s", s->token, state_name(s->state));
    switch (s->state) {
    case CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING:
        if (s->position == 0) {
            fputs(" in the pre-queue (places are drawn when the sale opens)", out);
        } else if (s->estimated_wait_seconds < 0) {
            fprintf(out, " position %lld (admission paused)", (long long)s->position);
        } else {
            ctl_fmt_duration(a, sizeof a, s->estimated_wait_seconds);
            fprintf(out, " position %lld (about %s)", (long long)s->position, a);
        }
        break;
    case CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE:
        if (s->expires_at_unix_ms > 0) {
            int64_t left = (s->expires_at_unix_ms - now_ms()) / 1000;
            ctl_fmt_time_ms(a, sizeof a, s->expires_at_unix_ms);
            ctl_fmt_duration(b, sizeof b, left < 0 ? 0 : left);
            fprintf(out, " until %s (%s left)", a, b);
        }
        if (s->admission_receipt.len) {
            Concert__V1__AdmissionReceipt *r = NULL;
            if (cc_receipt_parse(s->admission_receipt.data, s->admission_receipt.len, &r) == 0) {
                fprintf(out, ", receipt signed by key %s", r->key_id);
                protobuf_c_message_free_unpacked(&r->base, NULL);
            }
        }
        break;
    default: break;
    }
    fputc('\n', out);
}

static void human_leave(const ProtobufCMessage *m, FILE *out) {
    const Concert__V1__LeaveQueueResponse *r = (const void *)m;
    if (r->previous_state == CONCERT__V1__QUEUE_STATE__QUEUE_STATE_EXPIRED)
        fprintf(out, "left (the token was already EXPIRED)\n");
    else
        fprintf(out, "left (the token was %s)\n", state_name(r->previous_state));
}

/* ---- queue join ---- */

static const char *join_user, *join_concert;

static const cc_opt join_opts[] = {
    {"user", NULL, CC_OPT_STR, &join_user, "USER", "user id, 1..128 bytes (trusted: set by the gateway)", 0, 0},
    {"concert", NULL, CC_OPT_STR, &join_concert, "ID", "concert id, 1..64 characters of [A-Za-z0-9_-]", 0, 0},
    {0},
};

static int run_join(ctl_ctx *ctx) {
    int rc;
    if ((rc = ctl_require(ctx, "user", join_user)) || (rc = ctl_require(ctx, "concert", join_concert)))
        return rc;
    Concert__V1__IssueTokenRequest req;
    concert__v1__issue_token_request__init(&req);
    req.user_id = (char *)join_user;
    req.concert_id = (char *)join_concert;
    ProtobufCMessage *resp;
    if ((rc = ctl_unary(ctx, QS "IssueToken", &req.base, &concert__v1__queue_status__descriptor, &resp)))
        return rc;
    ctl_print(ctx, resp, human_status);
    protobuf_c_message_free_unpacked(resp, NULL);
    return CTL_EXIT_OK;
}

/* ---- queue status ---- */

static int run_status(ctl_ctx *ctx) {
    Concert__V1__GetQueueStatusRequest req;
    concert__v1__get_queue_status_request__init(&req);
    req.token = (char *)ctx->token;
    ProtobufCMessage *resp;
    int rc = ctl_unary(ctx, QS "GetQueueStatus", &req.base, &concert__v1__queue_status__descriptor, &resp);
    if (rc) return rc;
    ctl_print(ctx, resp, human_status);
    protobuf_c_message_free_unpacked(resp, NULL);
    return CTL_EXIT_OK;
}

/* ---- queue watch ---- */

/* One token's update of WatchQueueStatuses: its status line, or its error. */
static void human_update(const ProtobufCMessage *m, FILE *out) {
    const Concert__V1__WatchQueueStatusesResponse *u = (const void *)m;
    if (u->error_code == 0 && u->status) {
        human_status(&u->status->base, out);
        return;
    }
    fprintf(out, "token %s %s: %s\n", u->token, cc_status_name((grpc_status_code)u->error_code), u->error_message);
}

/* Several tokens: one WatchQueueStatuses stream (one request, then half-closed: the
 * server ends it once every token had its last update). */
static int run_watch_many(ctl_ctx *ctx, char **tokens, size_t n_tokens) {
    Concert__V1__WatchQueueStatusesRequest req;
    concert__v1__watch_queue_statuses_request__init(&req);
    req.add_tokens = tokens;
    req.n_add_tokens = n_tokens;
    int rc;
    cc_stream *s = ctl_stream(ctx, QS "WatchQueueStatuses", &req.base, &rc);
    if (!s) return rc;
    int n, active = 0, expired = 0, worst = 0;
    ProtobufCMessage *m;
    while ((n = cc_stream_next(s, &concert__v1__watch_queue_statuses_response__descriptor, &m)) == 1) {
        const Concert__V1__WatchQueueStatusesResponse *u = (const void *)m;
        ctl_print(ctx, m, human_update);
        if (u->error_code) {
            cc_status st = {.code = (grpc_status_code)u->error_code};
            snprintf(st.message, sizeof st.message, "token %s: %s", u->token, u->error_message);
            int e = ctl_fail(&st);
            if (!worst) worst = e;
        } else if (u->status && u->status->state == CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE) {
            active++;
        } else if (u->status && u->status->state == CONCERT__V1__QUEUE_STATE__QUEUE_STATE_EXPIRED) {
            expired++;
        }
        protobuf_c_message_free_unpacked(m, NULL);
    }
    if (n < 0) return ctl_stream_bad(s, &concert__v1__watch_queue_statuses_response__descriptor);
    if ((rc = ctl_stream_end(s))) return rc;
    if (worst) return worst;
    if (expired) {
        fprintf(stderr, "concertctl: queue watch: %d of the tokens ended EXPIRED\n", expired);
        return CTL_EXIT_NEGATIVE;
    }
    if (active == (int)n_tokens) return CTL_EXIT_OK;
    cc_status st = {.code = GRPC_STATUS_UNAVAILABLE};
    snprintf(st.message, sizeof st.message, "the stream ended before every token was ACTIVE or EXPIRED; retry");
    return ctl_fail(&st);
}

static int run_watch(ctl_ctx *ctx) {
    int has_flag = ctx->token && *ctx->token;
    if (!ctx->token && ctx->n_args == 0)
        return ctl_usage_error(ctx, "--token is required (or set CONCERT_TOKEN), or give the tokens as arguments");
    if (ctx->n_args > 0) {
        size_t n = (size_t)ctx->n_args + (has_flag ? 1 : 0);
        char **tokens = calloc(n, sizeof *tokens);
        if (!tokens) abort();
        size_t k = 0;
        if (has_flag) tokens[k++] = (char *)ctx->token;
        for (int i = 0; i < ctx->n_args; i++) tokens[k++] = ctx->args[i];
        int rc = run_watch_many(ctx, tokens, n);
        free(tokens);
        return rc;
    }
    Concert__V1__WatchQueueStatusRequest req;
    concert__v1__watch_queue_status_request__init(&req);
    req.token = (char *)ctx->token;
    int rc;
    cc_stream *s = ctl_stream(ctx, QS "WatchQueueStatus", &req.base, &rc);
    if (!s) return rc;
    int last = 0, n;
    ProtobufCMessage *m;
    while ((n = cc_stream_next(s, &concert__v1__queue_status__descriptor, &m)) == 1) {
        last = ((Concert__V1__QueueStatus *)m)->state;
        ctl_print(ctx, m, human_status);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    if (n < 0) return ctl_stream_bad(s, &concert__v1__queue_status__descriptor);
    if ((rc = ctl_stream_end(s))) return rc;
    if (last == CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE) return CTL_EXIT_OK;
    if (last == CONCERT__V1__QUEUE_STATE__QUEUE_STATE_EXPIRED) {
        fprintf(stderr, "concertctl: queue watch: the token is EXPIRED\n");
        return CTL_EXIT_NEGATIVE;
    }
    cc_status st = {.code = GRPC_STATUS_UNAVAILABLE};
    snprintf(st.message, sizeof st.message, "the stream ended before the token was ACTIVE or EXPIRED; retry");
    return ctl_fail(&st);
}

/* ---- queue leave ---- */

static int run_leave(ctl_ctx *ctx) {
    Concert__V1__LeaveQueueRequest req;
    concert__v1__leave_queue_request__init(&req);
    req.token = (char *)ctx->token;
    ProtobufCMessage *resp;
    int rc = ctl_unary(ctx, QS "LeaveQueue", &req.base, &concert__v1__leave_queue_response__descriptor, &resp);
    if (rc) return rc;
    ctl_print(ctx, resp, human_leave);
    protobuf_c_message_free_unpacked(resp, NULL);
    return CTL_EXIT_OK;
}

/* ---- the table ---- */

const ctl_cmd ctl_queue_cmds[] = {
    {"queue join", "join a concert's waiting room; prints the token and place in line",
     "--user USER --concert ID",
     "Calls QueueService.IssueToken. Idempotent per (user, concert): asking again while the\n"
     "token is WAITING or ACTIVE returns the same token and place. Keep the token for the\n"
     "other queue commands (--token or CONCERT_TOKEN).\n",
     join_opts, 0, 0, run_join},
    {"queue status", "show where a token stands: WAITING (position, wait), ACTIVE or EXPIRED",
     "--token TOKEN",
     "Calls QueueService.GetQueueStatus. Also refreshes a waiting token's idle timer.\n",
     NULL, CTL_NEED_TOKEN, 0, run_status},
    {"queue watch", "follow tokens' status until ACTIVE (exit 0) or EXPIRED (exit 1)",
     "--token TOKEN | [--token TOKEN] TOKEN...",
     "Calls QueueService.WatchQueueStatus and prints every status the server streams (one\n"
     "line each) until the token is ACTIVE or EXPIRED. Holding the stream refreshes the\n"
     "idle timer. Exits 0 when ACTIVE, 1 when it ended EXPIRED. No deadline unless\n"
     "--timeout-ms is given (then DEADLINE_EXCEEDED, exit 4, when it runs out).\n"
     "With tokens as arguments (and --token, if given) all of them are watched on one\n"
     "WatchQueueStatuses stream, one line per update; a token the server refuses is\n"
     "printed with its error and the others go on. Exits 0 when every token is ACTIVE, 1\n"
     "when one ended EXPIRED, the gRPC code of the first refused token otherwise.\n",
     NULL, 0, 1000, run_watch},
    {"queue leave", "give up a token's place (waiting) or admission (active)",
     "--token TOKEN",
     "Calls QueueService.LeaveQueue; prints the state the token was in. Idempotent.\n",
     NULL, CTL_NEED_TOKEN, 0, run_leave},
    {0},
};
