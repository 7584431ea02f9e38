/* bench_echo: see bench_echo.h. The loop is the reference code that was in
 * docs/PERFORMANCE.md's appendix, grown to several methods and a generic slot. */
#include "bench_echo.h"

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cc_log.h"

#define MAX_METHODS 32

typedef struct {
    int phase;  /* 0: armed, 1 (generic only): reading the message, 2: answered */
    int generic;
    void *reg;  /* registered method, NULL for the generic slot */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_call_details details;
    grpc_metadata_array md;
    grpc_byte_buffer *req;
    int cancelled;
} slot;

static grpc_server *srv;
static grpc_completion_queue *cq;
static volatile sig_atomic_t stopping;
static int empty_reply;

static void on_signal(int sig) {
    (void)sig;
    stopping = 1;
}

static void arm(slot *s) {
    s->phase = 0;
    s->call = NULL;
    s->req = NULL;
    s->cancelled = 0;
    grpc_metadata_array_init(&s->md);
    if (s->generic) {
        grpc_call_details_init(&s->details);
        grpc_server_request_call(srv, &s->call, &s->details, &s->md, cq, cq, s);
    } else {
        grpc_server_request_registered_call(srv, s->reg, &s->call, &s->deadline, &s->md, &s->req, cq, cq, s);
    }
}

static void answer(slot *s) {
    s->phase = 2;
    grpc_byte_buffer *bb = NULL;
    if (!empty_reply && s->req) {
        bb = s->req; /* the request's slices, as they came */
    } else {
        grpc_slice e = grpc_empty_slice();
        bb = grpc_raw_byte_buffer_create(&e, 1);
    }
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    grpc_slice det = grpc_empty_slice();
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[2].data.send_status_from_server.status = GRPC_STATUS_OK;
    ops[2].data.send_status_from_server.status_details = &det;
    ops[3].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[3].data.recv_close_on_server.cancelled = &s->cancelled;
    grpc_call_start_batch(s->call, ops, 4, s, NULL);
    if (bb != s->req) grpc_byte_buffer_destroy(bb);
}

static void release(slot *s) {
    if (s->req) grpc_byte_buffer_destroy(s->req);
    s->req = NULL;
    grpc_metadata_array_destroy(&s->md);
    if (s->generic) grpc_call_details_destroy(&s->details);
    if (s->call) grpc_call_unref(s->call);
    s->call = NULL;
}

int bench_echo_run(const bench_echo_config *cfg) {
    empty_reply = cfg->empty;
    grpc_init();
    /* As concert-server: no SO_REUSEPORT surprise, unlimited streams per connection. */
    grpc_arg args[2];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = (char *)GRPC_ARG_ALLOW_REUSEPORT;
    args[0].value.integer = 0;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = (char *)GRPC_ARG_MAX_CONCURRENT_STREAMS;
    args[1].value.integer = 100000;
    grpc_channel_args ca = {2, args};
    srv = grpc_server_create(&ca, NULL);
    cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv, cq, NULL);

    void *regs[MAX_METHODS];
    int n_regs = 0;
    char *list = strdup(cfg->methods ? cfg->methods : "");
    for (char *save = NULL, *p = strtok_r(list, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        if (n_regs == MAX_METHODS || p[0] != '/') {
            CC_ERROR("bad_method", "method=\"%s\" reason=\"expected /pkg.Service/Method, at most %d\"", p, MAX_METHODS);
            free(list);
            return 2;
        }
        regs[n_regs] = grpc_server_register_method(srv, p, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        if (!regs[n_regs]) {
            CC_ERROR("bad_method", "method=\"%s\" reason=\"registered twice?\"", p);
            free(list);
            return 2;
        }
        n_regs++;
    }
    free(list);

    grpc_server_credentials *cr = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(srv, cfg->listen, cr);
    grpc_server_credentials_release(cr);
    if (port == 0) {
        CC_ERROR("listen_failed", "addr=%s", cfg->listen);
        grpc_server_destroy(srv);
        grpc_completion_queue_destroy(cq);
        return 3;
    }
    grpc_server_start(srv);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);

    int per = cfg->requests > 0 ? cfg->requests : 256;
    int n_slots = n_regs * per + 8; /* + the generic slots */
    slot *slots = calloc((size_t)n_slots, sizeof *slots);
    if (!slots) abort();
    for (int i = 0; i < n_slots; i++) {
        slots[i].generic = i >= n_regs * per;
        slots[i].reg = slots[i].generic ? NULL : regs[i / per];
        arm(&slots[i]);
    }
    CC_INFO("listening", "addr=%s port=%d methods=%d requests_per_method=%d reply=%s", cfg->listen, port, n_regs,
            per, empty_reply ? "empty" : "echo");

    int shut = 0;
    for (;;) {
        if (stopping && !shut) {
            shut = 1;
            grpc_server_shutdown_and_notify(srv, cq, NULL);
            grpc_server_cancel_all_calls(srv);
        }
        /* A deadline so that a signal is noticed within 200 ms. */
        grpc_event ev = grpc_completion_queue_next(cq, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                                                    gpr_time_from_millis(200, GPR_TIMESPAN)),
                                                   NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT) continue;
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (!ev.tag) { /* the server's shutdown notification */
            grpc_completion_queue_shutdown(cq);
            continue;
        }
        slot *s = ev.tag;
        if (!ev.success) {
            release(s);
            if (!shut) arm(s);
            continue;
        }
        if (s->phase == 0 && s->generic) {
            /* The generic slot: the message comes in its own batch. */
            s->phase = 1;
            grpc_op op;
            memset(&op, 0, sizeof op);
            op.op = GRPC_OP_RECV_MESSAGE;
            op.data.recv_message.recv_message = &s->req;
            grpc_call_start_batch(s->call, &op, 1, s, NULL);
        } else if (s->phase < 2) {
            answer(s);
        } else {
            release(s);
            if (!shut) arm(s);
        }
    }
    grpc_server_destroy(srv);
    grpc_completion_queue_destroy(cq);
    free(slots);
    grpc_shutdown();
    CC_INFO("stopped", NULL);
    return 0;
}
