/* bench_scen: the scenario table of concert-bench. A scenario is one row: a name, its
 * help, its own options (parsed together with the global ones) and a `run` function
 * that registers its methods on the engine, runs one or more phases
 * (bench_engine_run) and adds their sections and its findings to the report.
 *
 * Adding a scenario (e.g. `booking`: ReserveSeats, Pay, wait until COMPLETED):
 *   1. write client/bench_scen_booking.c defining
 *        const bench_scenario bench_scen_booking = {"booking", summary, help, opts, run};
 *      with a bench_user_ops state machine per virtual user (see bench_scen_queue.c:
 *      IssueToken, then the booking calls with `authorization: Bearer <token>`);
 *   2. declare it below and add it to `scenarios[]` in bench_main.c;
 *   3. add the file to concert-bench in client/CMakeLists.txt.
 * Scenario files own their per-user state and findings; they never parse argv, never
 * print the report and never exit(): `run` returns 0, or -1 after saying why. */
#ifndef BENCH_SCEN_H
#define BENCH_SCEN_H

#include <stdint.h>

#include "bench_engine.h"
#include "bench_proc.h"
#include "bench_report.h"
#include "cc_opt.h"

/** The global options, as given (integers are -1 when not given: the scenario picks
 * its own default, see bench_opt()). */
typedef struct {
    const char *server;
    const char *concert;  /* never NULL: a fresh random id unless --concert */
    int64_t concurrency, rate, users, warmup, duration;
    int64_t threads, channels, timeout_ms;
    int json, quiet;
    const char *out;
    cc_client_tls tls; /* --tls* options */
} bench_opts;

/** What a scenario's run() gets. */
typedef struct {
    bench_engine *engine;
    bench_report *report;
    bench_proc *procs;
    const bench_opts *o;
} bench_ctx;

typedef struct {
    const char *name;    /* "queue" */
    const char *summary; /* one line for `concert-bench --help` */
    const char *help;    /* paragraph(s) for `concert-bench NAME --help` */
    const cc_opt *opts;  /* its own options, {0}-terminated; NULL = none */
    int (*run)(bench_ctx *ctx);
} bench_scenario;

extern const bench_scenario bench_scen_ping;
extern const bench_scenario bench_scen_queue;
extern const bench_scenario bench_scen_watch;
extern const bench_scenario bench_scen_deep_queue;
extern const bench_scenario bench_scen_booking;

/** A global integer option's value, or `def` when it was not given. */
static inline int bench_opt(int64_t v, int def) { return v >= 0 ? (int)v : def; }

/** A phase with the global options applied: closed loop with `concurrency` (default
 * def_conc) or open loop when --rate was given; users default to the concurrency
 * (closed) or 1000 (open, as the cap of calls in flight); warmup/duration default to
 * def_warmup/def_duration. The caller sets ops, payload and user_data_size. */
bench_phase bench_phase_from_opts(const bench_opts *o, const char *name, int def_conc, int def_warmup,
                                  int def_duration);

/* ---- shared by the queue-path scenarios (bench_scen_queue.c) ---- */

/** State of one queue measurement (IssueToken once per user, then GetQueueStatus). */
typedef struct bench_queue bench_queue;

/** Sets up a queue measurement on `concert`. token: if not NULL, every user polls this
 * one token (GetQueueStatus only). polls: GetQueueStatus calls per user before it is
 * replaced by a fresh user (0 = poll forever). fill: if > 0, IssueToken only, for
 * `fill` distinct users, then the phase ends. */
bench_queue *bench_queue_new(bench_engine *e, const char *concert, const char *token, int64_t polls,
                             int64_t fill);
void bench_queue_free(bench_queue *q);
/** Points the phase at the queue measurement. */
void bench_queue_phase(bench_queue *q, bench_phase *ph);
/** Adds its findings (states seen, positions) to the section. */
void bench_queue_findings(const bench_queue *q, bench_result *res);
/** Lowest and highest position IssueToken returned (0 when none). */
void bench_queue_positions(const bench_queue *q, int64_t *min, int64_t *max);
/** Fill mode: users issued (OK). */
int64_t bench_queue_issued(const bench_queue *q);

#endif
