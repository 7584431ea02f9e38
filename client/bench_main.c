/* concert-bench: the load generator. Thin main: global options, the scenario table,
 * help, dispatch, and where the report goes. The engine is bench_engine.c, scenarios
 * are bench_scen_<name>.c (see bench_scen.h for how to add one), output is
 * bench_report.c, process sampling bench_proc.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "bench_engine.h"
#include "bench_proc.h"
#include "bench_report.h"
#include "bench_scen.h"
#include "cc_opt.h"

/* ---- the scenario table: add a row (and its file) for a new scenario ---- */

static const bench_scenario *const scenarios[] = {
    &bench_scen_ping,
    &bench_scen_queue,
    &bench_scen_watch,
    &bench_scen_deep_queue,
    &bench_scen_booking,
    NULL,
};

/* ---- global options ---- */

static bench_opts o = {
    .server = "127.0.0.1:50051",
    .concurrency = -1,
    .rate = -1,
    .users = -1,
    .warmup = -1,
    .duration = -1,
    .threads = 1,
    .channels = 4,
    .timeout_ms = 10000,
};

static const char *watch_dummy;

static const cc_opt global_opts[] = {
    {"server", "CONCERT_SERVER", CC_OPT_STR, &o.server, "HOST:PORT", "concert-server to load (default 127.0.0.1:50051)",
     0, 0},
    {"concurrency", NULL, CC_OPT_INT, &o.concurrency, "N",
     "closed loop: N calls in flight, each user calls again when its call ends (default 64)", 1, 1000000},
    {"rate", NULL, CC_OPT_INT, &o.rate, "R",
     "open loop instead: R calls/s on a fixed schedule, latency from the scheduled time", 1, 10000000},
    {"users", NULL, CC_OPT_INT, &o.users, "N",
     "virtual users (distinct ids/tokens); default: the concurrency (open loop: 1000, the cap in flight)", 1,
     10000000},
    {"warmup", NULL, CC_OPT_INT, &o.warmup, "S", "seconds run but not counted first (default 2)", 0, 3600},
    {"duration", NULL, CC_OPT_INT, &o.duration, "S", "seconds measured (default 10; watch: 30)", 1, 86400},
    {"concert", NULL, CC_OPT_STR, &o.concert, "ID", "concert id to use (default: a fresh random one per run)", 0, 0},
    {"threads", NULL, CC_OPT_INT, &o.threads, "N", "worker threads, one completion queue each (default 1)", 1, 64},
    {"channels", NULL, CC_OPT_INT, &o.channels, "N", "gRPC channels = HTTP/2 connections (default 4)", 1, 64},
    {"timeout-ms", NULL, CC_OPT_INT, &o.timeout_ms, "MS", "deadline of each unary call (default 10000)", 1, 600000},
    {"watch-pid", NULL, CC_OPT_STR, &watch_dummy, "NAME=PID",
     "sample CPU % and RSS of this process during the run (repeatable)", 0, 0},
    {"watch-proc", NULL, CC_OPT_STR, &watch_dummy, "NAME",
     "same for every process whose name (comm) is exactly NAME (repeatable)", 0, 0},
    {"out", NULL, CC_OPT_STR, &o.out, "DIR",
     "also write report.md, report.json, series-*.tsv, charts.gp and PNG charts to DIR", 0, 0},
    {"json", NULL, CC_OPT_FLAG, &o.json, NULL, "print the JSON report on stdout instead of Markdown", 0, 0},
    {"quiet", NULL, CC_OPT_FLAG, &o.quiet, NULL, "no progress line on stderr", 0, 0},
    CC_CLIENT_TLS_OPTS(o.tls),
    {0},
};

bench_phase bench_phase_from_opts(const bench_opts *g, const char *name, int def_conc, int def_warmup,
                                  int def_duration) {
    bench_phase ph;
    memset(&ph, 0, sizeof ph);
    ph.name = name;
    if (g->rate > 0) {
        ph.rate = (double)g->rate;
        ph.users = bench_opt(g->users, 1000);
    } else {
        ph.concurrency = bench_opt(g->concurrency, def_conc);
        ph.users = bench_opt(g->users, ph.concurrency);
        if (ph.users < ph.concurrency) ph.concurrency = ph.users; /* a user has one call in flight */
    }
    ph.warmup_s = bench_opt(g->warmup, def_warmup);
    ph.duration_s = bench_opt(g->duration, def_duration);
    return ph;
}

/* ---- help ---- */

static const char intro[] =
    "Load generator for concert-server: an asynchronous gRPC C core client (many calls in\n"
    "flight over a few HTTP/2 connections, one completion queue per worker thread, no\n"
    "thread per call) with a latency histogram of bounded error (HDR-style, < 0.4 %).\n"
    "\n"
    "Modes:\n"
    "  closed loop (default)  --concurrency N calls in flight; each virtual user makes its\n"
    "                         next call when the previous one ends (max throughput).\n"
    "  open loop              --rate R calls/s on a fixed schedule; latency counts from the\n"
    "                         SCHEDULED send time, so a server falling behind shows as\n"
    "                         latency instead of being hidden (no coordinated omission).\n"
    "\n"
    "Output: a progress line per second on stderr (elapsed, req/s, errors, p99); at the end\n"
    "a Markdown report on stdout (--json: the JSON document instead): mean latency, max\n"
    "throughput, success rate, CPU % and memory of each watched process (the seed report's\n"
    "table), then p50/p90/p99/p99.9/max per method, results by gRPC status code, and\n"
    "throughput per second. --out DIR also writes report.md, report.json, one TSV series\n"
    "per phase, charts.gp and, when gnuplot is installed, throughput/latency/cpu PNGs.\n";

static const char exit_help[] =
    "Exit status: 0 the run finished and some call succeeded; 1 it could not run (server\n"
    "unreachable, Redis unreachable for deep-queue, cannot write --out) or no call\n"
    "succeeded; 2 usage error.\n";

static void print_opts(FILE *out, const cc_opt *opts) {
    for (const cc_opt *op = opts; op && op->name; op++) {
        char left[96];
        snprintf(left, sizeof left, "--%s%s%s", op->name, op->metavar ? " " : "", op->metavar ? op->metavar : "");
        fprintf(out, "  %-24s %s", left, op->help);
        if (op->env) fprintf(out, " [env %s]", op->env);
        fputc('\n', out);
    }
}

static void global_help(FILE *out) {
    fputs("Usage: concert-bench [options] <scenario> [scenario options]\n\n", out);
    fputs(intro, out);
    fputs("\nScenarios:\n", out);
    for (const bench_scenario *const *s = scenarios; *s; s++) fprintf(out, "  %-12s %s\n", (*s)->name, (*s)->summary);
    fputs("\nOptions (anywhere on the line):\n", out);
    print_opts(out, global_opts);
    fprintf(out, "  %-24s %s\n", "--help", "this help; after a scenario: that scenario's help");
    fputs("\nExamples:\n"
          "  concert-bench --server 127.0.0.1:50051 ping\n"
          "  concert-bench queue --concurrency 128 --duration 30 --out bench-out/queue\n"
          "  concert-bench queue --rate 20000 --watch-proc concert-server --watch-proc redis-server\n"
          "  concert-bench watch --users 10000 --watch-pid concert-server=1234\n"
          "  concert-bench deep-queue --fill 1000000 --redis redis://127.0.0.1:6390\n"
          "scripts/bench.sh runs every scenario against its own server and Redis.\n\n",
          out);
    fputs(exit_help, out);
}

static void scenario_help(const bench_scenario *s, FILE *out) {
    fprintf(out, "Usage: concert-bench [options] %s [%s options]\n\n%s: %s\n\n%s", s->name, s->name, s->name, s->summary,
            s->help);
    if (s->opts && s->opts->name) {
        fprintf(out, "\n%s options:\n", s->name);
        print_opts(out, s->opts);
    }
    fputs("\nGlobal options (anywhere on the line):\n", out);
    print_opts(out, global_opts);
    fprintf(out, "  %-24s %s\n\n", "--help", "show this help and exit");
    fputs(exit_help, out);
}

/* ---- argv handling ---- */

static const cc_opt *find_opt(const cc_opt *opts, const char *name, size_t len) {
    for (const cc_opt *op = opts; op && op->name; op++)
        if (strlen(op->name) == len && !strncmp(op->name, name, len)) return op;
    return NULL;
}

/* Does option --name (len bytes) take a value, in any table? */
static int takes_value(const char *name, size_t len) {
    const cc_opt *op = find_opt(global_opts, name, len);
    for (const bench_scenario *const *s = scenarios; !op && *s; s++) op = find_opt((*s)->opts, name, len);
    return op && op->type != CC_OPT_FLAG;
}

static const bench_scenario *find_scenario(const char *name) {
    for (const bench_scenario *const *s = scenarios; *s; s++)
        if (!strcmp((*s)->name, name)) return *s;
    return NULL;
}

#define MAX_WATCH 14

int main(int argc, char **argv) {
    /* 1. Take the repeatable --watch-pid / --watch-proc out of argv. */
    const char *watch_pid[MAX_WATCH], *watch_proc[MAX_WATCH];
    int n_pid = 0, n_proc = 0;
    static char **args; /* lives as long as the process (static: not a leak on early exits) */
    args = calloc((size_t)argc + 1, sizeof *args);
    if (!args) abort();
    int n_args = 0;
    args[n_args++] = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **list = NULL;
        int *n = NULL;
        const char *val = NULL;
        if (!strncmp(a, "--watch-pid", 11) && (a[11] == '\0' || a[11] == '=')) list = watch_pid, n = &n_pid;
        else if (!strncmp(a, "--watch-proc", 12) && (a[12] == '\0' || a[12] == '=')) list = watch_proc, n = &n_proc;
        if (!list) {
            args[n_args++] = argv[i];
            continue;
        }
        const char *eq = strchr(a, '=');
        if (eq) val = eq + 1;
        else if (i + 1 < argc) val = argv[++i];
        if (!val || !*val) {
            fprintf(stderr, "concert-bench: %s needs a value (see --help)\n", a);
            return 2;
        }
        if (*n >= MAX_WATCH) {
            fprintf(stderr, "concert-bench: at most %d of %.12s\n", MAX_WATCH, a);
            return 2;
        }
        list[(*n)++] = val;
    }
    args[n_args] = NULL;

    /* 2. Find the scenario word (skipping option values) and --help. */
    const char *scen_name = NULL;
    int help = 0;
    for (int i = 1; i < n_args; i++) {
        const char *a = args[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            help = 1;
            continue;
        }
        if (!strncmp(a, "--", 2) && a[2]) {
            const char *eq = strchr(a + 2, '=');
            if (!eq && takes_value(a + 2, strlen(a + 2))) i++;
            continue;
        }
        if (!scen_name) scen_name = a;
    }
    const bench_scenario *scen = scen_name ? find_scenario(scen_name) : NULL;
    if (help) {
        if (scen) scenario_help(scen, stdout);
        else global_help(stdout);
        return 0;
    }
    if (!scen_name) {
        fprintf(stderr, "concert-bench: no scenario given (ping, queue, watch, deep-queue; see --help)\n");
        return 2;
    }
    if (!scen) {
        fprintf(stderr, "concert-bench: unknown scenario '%s' (see --help)\n", scen_name);
        return 2;
    }

    /* 3. Parse the scenario's options and the global ones together. */
    int n_so = 0, n_go = 0;
    for (const cc_opt *op = scen->opts; op && op->name; op++) n_so++;
    for (const cc_opt *op = global_opts; op->name; op++) n_go++;
    cc_opt *all = calloc((size_t)(n_so + n_go + 1), sizeof *all);
    if (!all) abort();
    if (n_so) memcpy(all, scen->opts, (size_t)n_so * sizeof *all);
    memcpy(all + n_so, global_opts, (size_t)n_go * sizeof *all);
    char *pos[2];
    int n_pos = 0;
    if (cc_opt_parse(all, n_args, args, "", pos, 1, &n_pos) < 0) return 2;
    free(all);

    char concert[40];
    if (!o.concert || !*o.concert) {
        unsigned char rb[6] = {0};
        if (getrandom(rb, sizeof rb, 0) != (ssize_t)sizeof rb) rb[0] = (unsigned char)rand();
        snprintf(concert, sizeof concert, "bench-%02x%02x%02x%02x%02x%02x", rb[0], rb[1], rb[2], rb[3], rb[4], rb[5]);
        o.concert = concert;
    }

    /* 4. Watched processes. */
    bench_proc *procs = bench_proc_new();
    char err[512];
    for (int i = 0; i < n_pid; i++)
        if (bench_proc_add_spec(procs, watch_pid[i], err, sizeof err) < 0) {
            fprintf(stderr, "concert-bench: %s\n", err);
            return 2;
        }
    for (int i = 0; i < n_proc; i++)
        if (bench_proc_add_comm(procs, watch_proc[i]) == 0) {
            fprintf(stderr, "concert-bench: --watch-proc: no process named '%s'\n", watch_proc[i]);
            return 2;
        }

    /* 5. Connect, run, report. */
    bench_engine_config ec = {
        .target = o.server,
        .channels = (int)o.channels,
        .threads = (int)o.threads,
        .timeout_ms = (int)o.timeout_ms,
        .quiet = o.quiet,
        .tls = &o.tls,
    };
    bench_engine *e;
    if (bench_engine_new(&e, &ec, err, sizeof err) < 0) {
        fprintf(stderr, "concert-bench: %s\n", err);
        return 1;
    }
    if (bench_engine_connect(e, 5000, err, sizeof err) < 0) {
        fprintf(stderr, "concert-bench: %s\n", err);
        bench_engine_free(e);
        return 1;
    }
    char cmdline[2048];
    size_t cl = 0;
    cmdline[0] = '\0';
    for (int i = 0; i < argc && cl + 2 < sizeof cmdline; i++) {
        const char *a = i == 0 ? "concert-bench" : argv[i];
        int n = snprintf(cmdline + cl, sizeof cmdline - cl, "%s%s", i ? " " : "", a);
        if (n < 0) break;
        cl += (size_t)n;
    }
    if (cl >= sizeof cmdline) cl = sizeof cmdline - 1;
    bench_report_meta meta = {
        .scenario = scen->name,
        .server = o.server,
        .concert = o.concert,
        .command_line = cmdline,
        .threads = (int)o.threads,
        .channels = (int)o.channels,
    };
    bench_report *rep = bench_report_new(&meta);
    bench_ctx ctx = {.engine = e, .report = rep, .procs = procs, .o = &o};
    int rc = scen->run(&ctx);
    bench_engine_free(e);

    uint64_t ok = 0;
    for (int i = 0; i < bench_report_sections(rep); i++) ok += bench_result_ok(bench_report_section(rep, i));
    int status = 0;
    if (bench_report_sections(rep) > 0) {
        if (o.out && *o.out && bench_report_write_dir(rep, o.out, err, sizeof err) < 0) {
            fprintf(stderr, "concert-bench: %s\n", err);
            status = 1;
        }
        if (o.json) bench_report_json(rep, stdout);
        else bench_report_markdown(rep, stdout);
        fflush(stdout);
    }
    if (rc < 0) {
        fprintf(stderr, "concert-bench: %s did not complete\n", scen->name);
        status = 1;
    } else if (ok == 0) {
        fprintf(stderr, "concert-bench: no call succeeded\n");
        status = 1;
    }
    bench_report_free(rep);
    bench_proc_free(procs);
    free(args);
    return status;
}
