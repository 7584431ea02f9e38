/* bench_echo: the bare reference server of the h2load comparisons (issue 13): gRPC C
 * core with one completion queue drained by one thread, no event loop, no hand-off,
 * no decoding. Every unary call is answered in one batch (initial metadata, the reply,
 * status OK, receive close) with the request's bytes or an empty message. The methods
 * in `methods` are registered (the request arrives with the call, as concert-server's
 * do); any other method is taken through the generic request and costs one more batch
 * (read the message). Armed requests as concert-server's (server/srv_rpc.c): 2 per
 * registered method and 2 generic at start, one more for a method when a turn takes as
 * many of its calls as it has armed, up to `requests` per method and 32 per method in
 * total (every idle armed request costs every call in gRPC 1.51's tag check, so the
 * reference must not arm more than the server). Owns its gRPC server; must not: do
 * anything per call beyond that. */
#ifndef BENCH_ECHO_H
#define BENCH_ECHO_H

typedef struct {
    const char *listen;  /* HOST:PORT; port 0 picks one (logged) */
    const char *methods; /* comma-separated "/pkg.Service/Method" paths to register */
    int requests;        /* most armed requests per registered method (<= 0: 64) */
    int empty;           /* 1: answer an empty message instead of the request bytes */
} bench_echo_config;

/** Serves until SIGTERM/SIGINT. Returns 0 after a clean stop, 3 when the address cannot
 * be bound, 2 on a bad method list. */
int bench_echo_run(const bench_echo_config *cfg);

#endif
