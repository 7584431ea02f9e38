/* concert-bench-echo: the bare gRPC C core echo server that the h2load comparisons
 * (scripts/bench-h2load.sh, issue 13) measure concert-server against. Thin main. */
#include <stdio.h>

#include "bench_echo.h"
#include "cc_log.h"
#include "cc_opt.h"

static const char usage[] =
    "Usage: concert-bench-echo [--listen HOST:PORT] [options]\n"
    "\n"
    "A bare single-thread gRPC C core server: one completion queue drained by one\n"
    "thread, every unary call answered in one batch with the request's bytes (or an\n"
    "empty message). The reference ceiling for h2load: whatever concert-server does on\n"
    "top of gRPC core is the difference to this. Methods in --methods are registered (the\n"
    "request arrives with the call, as in concert-server); any other path is answered\n"
    "too, with one more batch. Requests are armed as concert-server arms them: 2 per\n"
    "method (and 2 for any other path) at start, one more for a method whenever one turn\n"
    "of the queue takes as many of its calls as it has armed, up to --requests per method\n"
    "and 32 per method over all methods (gRPC 1.51 without NDEBUG walks every armed\n"
    "request on each completion: a reference arming more would pay what the server does\n"
    "not). Logs event=listening with the port (port 0 picks one), and event=echo_stats\n"
    "(turns, slots) at the stop.\n"
    "Stops on SIGTERM/SIGINT. Exit status: 0 stopped, 2 bad flags, 3 cannot bind.\n";

int main(int argc, char **argv) {
    const char *listen = "127.0.0.1:50052";
    const char *methods = "/grpc.health.v1.Health/Check,/concert.v1.QueueService/GetQueueStatus,"
                          "/concert.v1.QueueService/IssueToken";
    int64_t requests = 64;
    int empty = 0;
    const char *log_level = "info";
    const cc_opt opts[] = {
        {"listen", "CONCERT_ECHO_LISTEN", CC_OPT_STR, &listen, "HOST:PORT", "address to serve on (default 127.0.0.1:50052; port 0 picks one)", 0, 0},
        {"methods", "CONCERT_ECHO_METHODS", CC_OPT_STR, &methods, "PATHS", "comma-separated methods to register (default Health/Check, GetQueueStatus, IssueToken)", 0, 0},
        {"requests", "CONCERT_ECHO_REQUESTS", CC_OPT_INT, &requests, "N", "most armed requests per registered method; each starts at 2 and grows while busy, all together at most 32 per method (default 64)", 1, 65536},
        {"empty", "CONCERT_ECHO_EMPTY", CC_OPT_FLAG, &empty, NULL, "answer an empty message instead of echoing the request", 0, 0},
        {"log-level", "CONCERT_LOG_LEVEL", CC_OPT_STR, &log_level, "LEVEL", "debug, info, warn or error (default info)", 0, 0},
        {0},
    };
    if (cc_opt_parse(opts, argc, argv, usage, NULL, 0, NULL) < 0) return 2;
    int lvl = cc_log_level_parse(log_level);
    if (lvl < 0) {
        fprintf(stderr, "concert-bench-echo: --log-level: expected debug, info, warn or error\n");
        return 2;
    }
    cc_log_init("concert-bench-echo", (cc_log_level)lvl);
    bench_echo_config cfg = {.listen = listen, .methods = methods, .requests = (int)requests, .empty = empty};
    return bench_echo_run(&cfg);
}
