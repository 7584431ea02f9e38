/* bench_echo: see bench_echo.h. The loop is the reference code that was in
 * docs/PERFORMANCE.md's appendix, grown to several methods and a generic slot. */
#include "bench_echo.h"

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cc_log.h"

#define MAX_METHODS 32
/* Armed requests as concert-server arms them (server/srv_rpc.c, note_taken): gRPC 1.51
 * as Debian builds it (no NDEBUG) walks every tag outstanding on the queue on each
 * completion (cq_check_tag), so every idle armed request costs every call ~6
 * instructions, twice. A reference that armed 256 per method would pay ~6-7k
 * instructions per call that the server does not, and flatter the ratios. */
#define FIRST_SLOTS 2   /* armed requests per registered method at start */
#define GENERIC_SLOTS 2 /* armed generic requests (any other method), never more */
#define SLOT_BUDGET 32  /* all registered methods' slots together, per method */
#define BATCH 256       /* completions per turn at most (as srv_rpc_run) */

typedef struct {
    void *reg;     /* grpc_server_register_method's handle */
    int slots;     /* armed requests of the method */
    int taken;     /* its calls taken in turn `turn` */
    uint64_t turn;
} method_slots;

typedef struct slot {
    int phase;  /* 0: armed, 1 (generic only): reading the message, 2: answered */
    int generic;
    method_slots *ms; /* registered method, NULL for a generic slot */
    struct slot *next; /* every slot, for the final free */
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
static slot *all_slots;
static method_slots ms_of[MAX_METHODS];
static int n_regs, cap_per_method, total_slots; /* total_slots: registered methods' */
static uint64_t turns;

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
        grpc_server_request_registered_call(srv, s->ms->reg, &s->call, &s->deadline, &s->md, &s->req, cq, cq, s);
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

static void new_slot(method_slots *ms) {
    slot *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->generic = ms == NULL;
    s->ms = ms;
    s->next = all_slots;
    all_slots = s;
    if (ms) ms->slots++, total_slots++;
    arm(s);
}

/* A registered method's call was taken from one of its slots: a method that takes as
 * many calls in one turn as it has slots had calls waiting in gRPC core for a re-arm,
 * and gets one more slot, up to cap_per_method and SLOT_BUDGET per method in total (a
 * slot is never taken back), as concert-server's note_taken. */
static void note_taken(method_slots *ms) {
    if (ms->turn != turns) {
        ms->turn = turns;
        ms->taken = 0;
    }
    if (++ms->taken >= ms->slots && ms->slots < cap_per_method && total_slots < SLOT_BUDGET * n_regs) new_slot(ms);
}

/* One completion of the queue. */
static void handle(grpc_event ev, int shut) {
    slot *s = ev.tag;
    if (!ev.success) {
        release(s);
        if (!shut) arm(s);
        return;
    }
    if (s->phase == 0 && s->generic) {
        /* A generic slot: the message comes in its own batch. */
        s->phase = 1;
        grpc_op op;
        memset(&op, 0, sizeof op);
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &s->req;
        grpc_call_start_batch(s->call, &op, 1, s, NULL);
    } else if (s->phase < 2) {
        if (s->phase == 0 && !shut) note_taken(s->ms);
        answer(s);
    } else {
        release(s);
        if (!shut) arm(s);
    }
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

    n_regs = 0;
    all_slots = NULL;
    total_slots = 0;
    turns = 0;
    char *list = strdup(cfg->methods ? cfg->methods : "");
    for (char *save = NULL, *p = strtok_r(list, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        if (n_regs == MAX_METHODS || p[0] != '/') {
            CC_ERROR("bad_method", "method=\"%s\" reason=\"expected /pkg.Service/Method, at most %d\"", p, MAX_METHODS);
            free(list);
            return 2;
        }
        ms_of[n_regs] = (method_slots){0};
        ms_of[n_regs].reg = grpc_server_register_method(srv, p, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        if (!ms_of[n_regs].reg) {
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

    cap_per_method = cfg->requests > 0 ? cfg->requests : 64;
    int first = cap_per_method < FIRST_SLOTS ? cap_per_method : FIRST_SLOTS;
    for (int i = 0; i < n_regs; i++)
        for (int k = 0; k < first; k++) new_slot(&ms_of[i]);
    for (int k = 0; k < GENERIC_SLOTS; k++) new_slot(NULL);
    CC_INFO("listening", "addr=%s port=%d methods=%d first_requests=%d requests_per_method=%d reply=%s", cfg->listen,
            port, n_regs, first, cap_per_method, empty_reply ? "empty" : "echo");

    int shut = 0;
    for (;;) {
        if (stopping && !shut) {
            shut = 1;
            grpc_server_shutdown_and_notify(srv, cq, NULL);
            grpc_server_cancel_all_calls(srv);
        }
        /* A turn: wait for one completion (a deadline so that a signal is noticed within
         * 200 ms), then take what else is ready without waiting, at most BATCH. */
        grpc_event ev = grpc_completion_queue_next(cq, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                                                    gpr_time_from_millis(200, GPR_TIMESPAN)),
                                                   NULL);
        turns++;
        int done = 0;
        for (int n = 0; ev.type != GRPC_QUEUE_TIMEOUT;) {
            if (ev.type == GRPC_QUEUE_SHUTDOWN) {
                done = 1;
                break;
            }
            if (!ev.tag) grpc_completion_queue_shutdown(cq); /* the server's shutdown notification */
            else handle(ev, shut);
            if (++n == BATCH) break;
            ev = grpc_completion_queue_next(cq, gpr_time_0(GPR_CLOCK_MONOTONIC), NULL);
        }
        if (done) break;
    }
    int most = 0;
    for (int i = 0; i < n_regs; i++)
        if (ms_of[i].slots > most) most = ms_of[i].slots;
    CC_INFO("echo_stats", "turns=%llu slots=%d most_slots=%d", (unsigned long long)turns, total_slots, most);
    grpc_server_destroy(srv);
    grpc_completion_queue_destroy(cq);
    while (all_slots) {
        slot *nx = all_slots->next;
        free(all_slots);
        all_slots = nx;
    }
    grpc_shutdown();
    CC_INFO("stopped", NULL);
    return 0;
}
