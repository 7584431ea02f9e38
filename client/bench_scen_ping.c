/* bench_scen_ping: grpc.health.v1.Health/Check as fast as it goes. The server answers
 * it on its event loop without Redis, so this is our own ceiling: the most unary calls
 * per second this server, client and machine can do. Every other figure is reported
 * as a ratio to it (scripts/bench.sh). */
#include <stdio.h>

#include "bench_scen.h"
#include "grpc/health/v1/health.pb-c.h"

static const char *service = "";

static const cc_opt opts[] = {
    {"service", NULL, CC_OPT_STR, &service, "NAME", "service name asked about (default \"\": the whole server)", 0, 0},
    {0},
};

typedef struct {
    grpc_slice req;
    int m_check;
} ping_state;

static int ping_next(bench_user *u) {
    ping_state *s = bench_user_payload(u);
    return bench_user_unary(u, s->m_check, s->req);
}

static const bench_user_ops ping_ops = {.next = ping_next};

static int ping_run(bench_ctx *c) {
    ping_state s;
    s.m_check = bench_engine_method(c->engine, "/grpc.health.v1.Health/Check", "Health/Check", 0);
    Grpc__Health__V1__HealthCheckRequest req;
    grpc__health__v1__health_check_request__init(&req);
    req.service = (char *)service;
    s.req = bench_pack(&req.base);
    bench_phase ph = bench_phase_from_opts(c->o, "ping", 64, 2, 10);
    ph.ops = &ping_ops;
    ph.payload = &s;
    bench_result *res = bench_engine_run(c->engine, &ph, c->procs);
    grpc_slice_unref(s.req);
    if (!res) return -1;
    bench_result_kv_text(res, "role", "ceiling: no Redis on this path, every other figure compares to it");
    bench_report_add(c->report, res);
    return 0;
}

const bench_scenario bench_scen_ping = {
    "ping",
    "grpc.health.v1.Health/Check: the server's own ceiling (no Redis involved)",
    "Calls grpc.health.v1.Health/Check as fast as the mode allows. The server answers\n"
    "from its event loop without touching Redis, so this measures gRPC, the loop and the\n"
    "machine: the ceiling every other scenario is compared with. Run it in the same\n"
    "session as the others (same machine load) for a fair ratio.\n",
    opts,
    ping_run,
};
