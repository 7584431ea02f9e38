/* bench_report: what a concert-bench run measured, and its output: a Markdown report
 * (the seed report's table shape, then percentiles, result codes by gRPC code name
 * and throughput per second), a JSON document for machines, per-section time series
 * (TSV) and, when gnuplot is on PATH, a gnuplot script and PNG charts.
 *
 * A report holds one or more sections (bench_result), one per measured phase (e.g.
 * deep-queue has "fill", "empty" and "deep"), and findings: named values a scenario
 * adds (ratios, counts, targets met). The engine fills sections; scenarios add
 * findings; this module only formats. Owns every section added to it. */
#ifndef BENCH_REPORT_H
#define BENCH_REPORT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "bench_hist.h"
#include "bench_proc.h"

#define BENCH_MAX_METHODS 8
#define BENCH_MAX_KV 40
#define BENCH_N_CODES 17 /* gRPC codes OK .. UNAUTHENTICATED */

/** One method's numbers within a section. For a server stream, `hist` holds the time
 * from starting the call to its first message, `codes` how the streams ended (streams
 * the bench itself cancelled at the end are in `open_at_end`, not in codes). */
typedef struct {
    char name[48];
    int stream;
    bench_hist hist;
    uint64_t codes[BENCH_N_CODES];
    uint64_t messages;    /* stream messages received */
    uint64_t open_at_end; /* streams still open when the phase ended */
} bench_method_result;

/** One second of a section (the last one may be shorter: `dt`). */
typedef struct {
    double t, dt;                     /* end of the interval, seconds since measuring began */
    uint64_t ok, err;                 /* finished calls (unary + ended streams) */
    uint64_t method_ok[BENCH_MAX_METHODS];
    uint64_t messages;                /* stream messages */
    uint64_t streams_open;            /* at the end of the interval */
    uint64_t p50, p90, p99, max;      /* unary latency within the interval, ns */
    double cpu[BENCH_PROC_MAX];       /* per watched process, % of one core */
    uint64_t rss[BENCH_PROC_MAX];
} bench_point;

/** A watched process over a section's measured window. */
typedef struct {
    char name[40];
    int pid;
    double cpu_mean, cpu_max;
    uint64_t rss_mean, rss_max, rss_end;
    int samples;
} bench_proc_result;

/** A finding: a number (with a unit for humans) or a text. */
typedef struct {
    char key[64];
    char text[200]; /* rendering for Markdown; for numbers also the unit */
    double num;
    int is_num;
} bench_kv;

/** One measured phase. */
typedef struct bench_result {
    char name[64];
    char mode[8];           /* "closed" or "open" */
    int concurrency;
    double rate;            /* open loop: scheduled calls/s */
    int users;
    int warmup_s, duration_s; /* as configured */
    double elapsed_s;       /* measured window actually covered */
    int n_methods;
    bench_method_result m[BENCH_MAX_METHODS];
    bench_hist total;       /* unary latencies of every method */
    uint64_t codes[BENCH_N_CODES];
    uint64_t late;          /* open loop: scheduled calls not yet sent when it ended */
    size_t n_points, cap_points;
    bench_point *points;
    int n_procs;
    bench_proc_result procs[BENCH_PROC_MAX];
    int n_kv;
    bench_kv kv[BENCH_MAX_KV];
} bench_result;

typedef struct bench_report bench_report;

/** Facts printed at the top of every report. Strings are copied. */
typedef struct {
    const char *scenario;
    const char *server;
    const char *concert;
    const char *command_line;
    int threads, channels;
} bench_report_meta;

bench_report *bench_report_new(const bench_report_meta *meta);
void bench_report_free(bench_report *r);

/** A fresh, empty section (the engine fills it). */
bench_result *bench_result_new(const char *name);
void bench_result_free(bench_result *res);

/** Adds a finished section; the report owns it from now on. */
void bench_report_add(bench_report *r, bench_result *res);
int bench_report_sections(const bench_report *r);
bench_result *bench_report_section(bench_report *r, int i);

/** Findings of a section or of the whole run. `unit` may be "" ("ms", "x", "%"...). */
void bench_result_kv_num(bench_result *res, const char *key, double v, const char *unit);
void bench_result_kv_text(bench_result *res, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void bench_report_kv_num(bench_report *r, const char *key, double v, const char *unit);
void bench_report_kv_text(bench_report *r, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- derived numbers (also used by scenarios for findings) ---- */
uint64_t bench_result_calls(const bench_result *res); /* every finished call */
uint64_t bench_result_ok(const bench_result *res);
double bench_result_rps(const bench_result *res);      /* OK calls / elapsed */
double bench_result_max_rps(const bench_result *res);  /* best full second */
/** A method's index by name, -1 if absent. */
int bench_result_method(const bench_result *res, const char *name);
/** The value at percentile p of a method (or of the total when method < 0), in ms. */
double bench_result_ms(const bench_result *res, int method, double p);

/** The canonical name of a gRPC status code ("UNAVAILABLE"). */
const char *bench_code_name(int code);

/** Writes the Markdown report. */
void bench_report_markdown(const bench_report *r, FILE *out);
/** Writes the JSON document (one object). */
void bench_report_json(const bench_report *r, FILE *out);

/** Creates `dir` (and parents) and writes report.md, report.json, one
 * series-N-NAME.tsv per section and charts.gp; runs gnuplot there if it is on PATH
 * (throughput.png, latency.png, cpu.png), otherwise says so on stderr. Returns 0, or
 * -1 with a reason in err. */
int bench_report_write_dir(const bench_report *r, const char *dir, char *err, size_t errlen);

#endif
