/* bench_report: see bench_report.h. Formatting only: Markdown, JSON, TSV, gnuplot. */
#include "bench_report.h"

#include <errno.h>
#include <grpc/grpc.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#define MAX_SECTIONS 16

struct bench_report {
    char scenario[64], server[256], concert[128], command_line[2048], started[32];
    int threads, channels;
    int ncpu;
    char cpu_model[128];
    uint64_t mem_bytes;
    int n;
    bench_result *sec[MAX_SECTIONS];
    int n_kv;
    bench_kv kv[BENCH_MAX_KV];
};

static const char *const code_names[BENCH_N_CODES] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
};

const char *bench_code_name(int code) {
    return code >= 0 && code < BENCH_N_CODES ? code_names[code] : "UNKNOWN";
}

/* ---- life cycle ---- */

bench_report *bench_report_new(const bench_report_meta *meta) {
    bench_report *r = calloc(1, sizeof *r);
    if (!r) abort();
    snprintf(r->scenario, sizeof r->scenario, "%s", meta->scenario ? meta->scenario : "");
    snprintf(r->server, sizeof r->server, "%s", meta->server ? meta->server : "");
    snprintf(r->concert, sizeof r->concert, "%s", meta->concert ? meta->concert : "");
    snprintf(r->command_line, sizeof r->command_line, "%s", meta->command_line ? meta->command_line : "");
    r->threads = meta->threads;
    r->channels = meta->channels;
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(r->started, sizeof r->started, "%Y-%m-%dT%H:%M:%SZ", &tm);
    bench_proc_machine(&r->ncpu, r->cpu_model, sizeof r->cpu_model, &r->mem_bytes);
    return r;
}

void bench_report_free(bench_report *r) {
    if (!r) return;
    for (int i = 0; i < r->n; i++) bench_result_free(r->sec[i]);
    free(r);
}

bench_result *bench_result_new(const char *name) {
    bench_result *res = calloc(1, sizeof *res);
    if (!res) abort();
    snprintf(res->name, sizeof res->name, "%s", name);
    snprintf(res->mode, sizeof res->mode, "closed");
    bench_hist_clear(&res->total);
    for (int i = 0; i < BENCH_MAX_METHODS; i++) bench_hist_clear(&res->m[i].hist);
    return res;
}

void bench_result_free(bench_result *res) {
    if (!res) return;
    free(res->points);
    free(res);
}

void bench_report_add(bench_report *r, bench_result *res) {
    if (r->n >= MAX_SECTIONS) {
        bench_result_free(res);
        return;
    }
    r->sec[r->n++] = res;
}

int bench_report_sections(const bench_report *r) { return r->n; }
bench_result *bench_report_section(bench_report *r, int i) { return i >= 0 && i < r->n ? r->sec[i] : NULL; }

/* ---- findings ---- */

static void kv_num(bench_kv *kv, int *n, const char *key, double v, const char *unit) {
    if (*n >= BENCH_MAX_KV) return;
    bench_kv *k = &kv[(*n)++];
    snprintf(k->key, sizeof k->key, "%s", key);
    snprintf(k->text, sizeof k->text, "%s", unit ? unit : "");
    k->num = v;
    k->is_num = 1;
}

static void kv_text(bench_kv *kv, int *n, const char *key, const char *fmt, va_list ap) {
    if (*n >= BENCH_MAX_KV) return;
    bench_kv *k = &kv[(*n)++];
    snprintf(k->key, sizeof k->key, "%s", key);
    vsnprintf(k->text, sizeof k->text, fmt, ap);
    k->is_num = 0;
}

void bench_result_kv_num(bench_result *res, const char *key, double v, const char *unit) {
    kv_num(res->kv, &res->n_kv, key, v, unit);
}
void bench_result_kv_text(bench_result *res, const char *key, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    kv_text(res->kv, &res->n_kv, key, fmt, ap);
    va_end(ap);
}
void bench_report_kv_num(bench_report *r, const char *key, double v, const char *unit) {
    kv_num(r->kv, &r->n_kv, key, v, unit);
}
void bench_report_kv_text(bench_report *r, const char *key, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    kv_text(r->kv, &r->n_kv, key, fmt, ap);
    va_end(ap);
}

/* ---- derived numbers ---- */

uint64_t bench_result_calls(const bench_result *res) {
    uint64_t n = 0;
    for (int c = 0; c < BENCH_N_CODES; c++) n += res->codes[c];
    return n;
}

uint64_t bench_result_ok(const bench_result *res) { return res->codes[0]; }

double bench_result_rps(const bench_result *res) {
    return res->elapsed_s > 0 ? (double)bench_result_ok(res) / res->elapsed_s : 0.0;
}

double bench_result_max_rps(const bench_result *res) {
    double best = 0;
    for (size_t i = 0; i < res->n_points; i++) {
        const bench_point *p = &res->points[i];
        if (p->dt < 0.5) continue; /* a short tail interval says little */
        double v = (double)p->ok / p->dt;
        if (v > best) best = v;
    }
    if (best == 0 && res->n_points) best = bench_result_rps(res);
    return best;
}

int bench_result_method(const bench_result *res, const char *name) {
    for (int i = 0; i < res->n_methods; i++)
        if (!strcmp(res->m[i].name, name)) return i;
    return -1;
}

double bench_result_ms(const bench_result *res, int method, double p) {
    const bench_hist *h = method >= 0 && method < res->n_methods ? &res->m[method].hist : &res->total;
    if (p < 0) return bench_hist_mean(h) / 1e6;
    return (double)bench_hist_percentile(h, p) / 1e6;
}

static uint64_t method_calls(const bench_method_result *m) {
    uint64_t n = 0;
    for (int c = 0; c < BENCH_N_CODES; c++) n += m->codes[c];
    return n;
}

/* ---- small formatting helpers ---- */

/* 41234.5 -> "41,235" */
static const char *fmt_int(char *buf, size_t len, double v) {
    if (!isfinite(v)) return snprintf(buf, len, "n/a"), buf;
    long long x = llround(v);
    char tmp[32];
    int neg = x < 0;
    unsigned long long u = neg ? (unsigned long long)(-x) : (unsigned long long)x;
    int n = snprintf(tmp, sizeof tmp, "%llu", u);
    char out[48];
    int o = 0;
    if (neg) out[o++] = '-';
    for (int i = 0; i < n; i++) {
        out[o++] = tmp[i];
        if ((n - i - 1) % 3 == 0 && i != n - 1) out[o++] = ',';
    }
    out[o] = '\0';
    snprintf(buf, len, "%s", out);
    return buf;
}

/* Milliseconds with three significant-ish decimals. */
static const char *fmt_ms(char *buf, size_t len, double ms) {
    if (!isfinite(ms)) snprintf(buf, len, "n/a");
    else if (ms < 10) snprintf(buf, len, "%.3f", ms);
    else if (ms < 100) snprintf(buf, len, "%.2f", ms);
    else snprintf(buf, len, "%.1f", ms);
    return buf;
}

static const char *fmt_bytes(char *buf, size_t len, double b) {
    if (b >= 1024.0 * 1024 * 1024) snprintf(buf, len, "%.2f GiB", b / (1024.0 * 1024 * 1024));
    else if (b >= 1024.0 * 1024) snprintf(buf, len, "%.1f MiB", b / (1024.0 * 1024));
    else if (b >= 1024.0) snprintf(buf, len, "%.1f KiB", b / 1024.0);
    else snprintf(buf, len, "%.0f B", b);
    return buf;
}

static void md_kv(FILE *out, const bench_kv *kv, int n) {
    if (!n) return;
    fputs("| finding | value |\n|---|---|\n", out);
    for (int i = 0; i < n; i++) {
        const bench_kv *k = &kv[i];
        if (k->is_num) {
            char v[48];
            double a = fabs(k->num);
            if (a != 0 && a < 0.01) snprintf(v, sizeof v, "%.4g", k->num);
            else if (a < 100 && k->num != floor(k->num)) snprintf(v, sizeof v, "%.3f", k->num);
            else fmt_int(v, sizeof v, k->num);
            fprintf(out, "| %s | %s%s%s |\n", k->key, v, *k->text ? " " : "", k->text);
        } else {
            fprintf(out, "| %s | %s |\n", k->key, k->text);
        }
    }
    fputc('\n', out);
}

static int has_unary(const bench_result *s) { return s->total.count > 0; }

/* ---- Markdown ---- */

static void md_summary(const bench_report *r, FILE *out) {
    char a[64], b[64], c[64];
    fputs("## Summary\n\nThe seed report's table, one column per measured phase. CPU is in % of one core "
          "(this machine has ",
          out);
    fprintf(out, "%d, so %d %% is all of it).\n\n| metric |", r->ncpu, 100 * r->ncpu);
    for (int i = 0; i < r->n; i++) fprintf(out, " %s |", r->sec[i]->name);
    fputs("\n|---|", out);
    for (int i = 0; i < r->n; i++) fputs("---|", out);
    fputs("\n| mean response time |", out);
    for (int i = 0; i < r->n; i++) {
        if (has_unary(r->sec[i])) fprintf(out, " %s ms |", fmt_ms(a, sizeof a, bench_result_ms(r->sec[i], -1, -1)));
        else fputs(" - |", out);
    }
    fputs("\n| p99 response time |", out);
    for (int i = 0; i < r->n; i++) {
        if (has_unary(r->sec[i])) fprintf(out, " %s ms |", fmt_ms(a, sizeof a, bench_result_ms(r->sec[i], -1, 99)));
        else fputs(" - |", out);
    }
    fputs("\n| max throughput (best second) |", out);
    for (int i = 0; i < r->n; i++) fprintf(out, " %s req/s |", fmt_int(a, sizeof a, bench_result_max_rps(r->sec[i])));
    fputs("\n| mean throughput |", out);
    for (int i = 0; i < r->n; i++) fprintf(out, " %s req/s |", fmt_int(a, sizeof a, bench_result_rps(r->sec[i])));
    fputs("\n| success rate |", out);
    for (int i = 0; i < r->n; i++) {
        uint64_t calls = bench_result_calls(r->sec[i]), ok = bench_result_ok(r->sec[i]);
        if (!calls) fputs(" no calls |", out);
        else fprintf(out, " %.3f %% (%s of %s) |", 100.0 * (double)ok / (double)calls, fmt_int(b, sizeof b, (double)ok),
                     fmt_int(c, sizeof c, (double)calls));
    }
    /* One CPU and one memory row per process, in the order of the first section. */
    if (r->n) {
        const bench_result *s0 = r->sec[0];
        for (int p = 0; p < s0->n_procs; p++) {
            fprintf(out, "\n| CPU %s |", s0->procs[p].name);
            for (int i = 0; i < r->n; i++) {
                const bench_result *s = r->sec[i];
                if (p < s->n_procs && s->procs[p].samples)
                    fprintf(out, " %.0f %% (max %.0f %%) |", s->procs[p].cpu_mean, s->procs[p].cpu_max);
                else fputs(" - |", out);
            }
        }
        for (int p = 0; p < s0->n_procs; p++) {
            if (s0->procs[p].pid <= 0) continue;
            fprintf(out, "\n| memory (RSS) %s |", s0->procs[p].name);
            for (int i = 0; i < r->n; i++) {
                const bench_result *s = r->sec[i];
                if (p < s->n_procs && s->procs[p].samples)
                    fprintf(out, " %s (max %s) |", fmt_bytes(a, sizeof a, (double)s->procs[p].rss_mean),
                            fmt_bytes(b, sizeof b, (double)s->procs[p].rss_max));
                else fputs(" - |", out);
            }
        }
    }
    fputs("\n\n", out);
}

static void md_section(const bench_result *s, FILE *out) {
    char a[64], b[64], c[64], d[64], e[64], f[64], g[64], h[64];
    fprintf(out, "## %s\n\n", s->name);
    if (!strcmp(s->mode, "open"))
        fprintf(out, "Open loop: %s calls/s scheduled (latency from the scheduled send time), up to %d in flight; ",
                fmt_int(a, sizeof a, s->rate), s->users);
    else
        fprintf(out, "Closed loop: %d calls in flight over %d virtual users; ", s->concurrency, s->users);
    fprintf(out, "warmup %d s (not counted), measured %.1f s.", s->warmup_s, s->elapsed_s);
    if (s->late) fprintf(out, " %s scheduled calls were never sent (the server fell behind the schedule).",
                         fmt_int(a, sizeof a, (double)s->late));
    fputs("\n\n", out);

    if (has_unary(s)) {
        fputs("Latency in ms, per method (unary calls):\n\n"
              "| method | calls | OK/s | mean | p50 | p90 | p99 | p99.9 | max |\n"
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
              out);
        for (int i = 0; i < s->n_methods; i++) {
            const bench_method_result *m = &s->m[i];
            if (m->stream || !method_calls(m)) continue;
            fprintf(out, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", m->name,
                    fmt_int(a, sizeof a, (double)method_calls(m)),
                    fmt_int(b, sizeof b, s->elapsed_s > 0 ? (double)m->codes[0] / s->elapsed_s : 0),
                    fmt_ms(c, sizeof c, bench_hist_mean(&m->hist) / 1e6),
                    fmt_ms(d, sizeof d, (double)bench_hist_percentile(&m->hist, 50) / 1e6),
                    fmt_ms(e, sizeof e, (double)bench_hist_percentile(&m->hist, 90) / 1e6),
                    fmt_ms(f, sizeof f, (double)bench_hist_percentile(&m->hist, 99) / 1e6),
                    fmt_ms(g, sizeof g, (double)bench_hist_percentile(&m->hist, 99.9) / 1e6),
                    fmt_ms(h, sizeof h, (double)m->hist.max / 1e6));
        }
        const bench_hist *t = &s->total;
        uint64_t unary_calls = 0, unary_ok = 0;
        for (int i = 0; i < s->n_methods; i++)
            if (!s->m[i].stream) unary_calls += method_calls(&s->m[i]), unary_ok += s->m[i].codes[0];
        fprintf(out, "| **all** | %s | %s | %s | %s | %s | %s | %s | %s |\n\n", fmt_int(a, sizeof a, (double)unary_calls),
                fmt_int(b, sizeof b, s->elapsed_s > 0 ? (double)unary_ok / s->elapsed_s : 0),
                fmt_ms(c, sizeof c, bench_hist_mean(t) / 1e6),
                fmt_ms(d, sizeof d, (double)bench_hist_percentile(t, 50) / 1e6),
                fmt_ms(e, sizeof e, (double)bench_hist_percentile(t, 90) / 1e6),
                fmt_ms(f, sizeof f, (double)bench_hist_percentile(t, 99) / 1e6),
                fmt_ms(g, sizeof g, (double)bench_hist_percentile(t, 99.9) / 1e6),
                fmt_ms(h, sizeof h, (double)t->max / 1e6));
    }
    int any_stream = 0;
    for (int i = 0; i < s->n_methods; i++) any_stream |= s->m[i].stream && (s->m[i].hist.count || method_calls(&s->m[i]));
    if (any_stream) {
        fputs("Server streams (opened = first message received; latency = time to the first message, ms):\n\n"
              "| method | opened | messages | ended | still open at end | p50 | p99 | max |\n"
              "|---|---:|---:|---:|---:|---:|---:|---:|\n",
              out);
        for (int i = 0; i < s->n_methods; i++) {
            const bench_method_result *m = &s->m[i];
            if (!m->stream) continue;
            fprintf(out, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", m->name,
                    fmt_int(a, sizeof a, (double)m->hist.count), fmt_int(b, sizeof b, (double)m->messages),
                    fmt_int(c, sizeof c, (double)method_calls(m)), fmt_int(d, sizeof d, (double)m->open_at_end),
                    fmt_ms(e, sizeof e, (double)bench_hist_percentile(&m->hist, 50) / 1e6),
                    fmt_ms(f, sizeof f, (double)bench_hist_percentile(&m->hist, 99) / 1e6),
                    fmt_ms(g, sizeof g, (double)m->hist.max / 1e6));
        }
        fputc('\n', out);
    }

    fputs("Results by gRPC status code:\n\n| method | code | count | share |\n|---|---|---:|---:|\n", out);
    for (int i = 0; i < s->n_methods; i++) {
        const bench_method_result *m = &s->m[i];
        uint64_t n = method_calls(m);
        if (!n) continue;
        for (int k = 0; k < BENCH_N_CODES; k++)
            if (m->codes[k])
                fprintf(out, "| %s | %s | %s | %.3f %% |\n", m->name, bench_code_name(k),
                        fmt_int(a, sizeof a, (double)m->codes[k]), 100.0 * (double)m->codes[k] / (double)n);
    }
    fputc('\n', out);

    if (s->n_procs) {
        fputs("Watched processes over the measured window (CPU in % of one core):\n\n"
              "| process | pid | CPU mean | CPU max | RSS mean | RSS max | RSS at end |\n"
              "|---|---:|---:|---:|---:|---:|---:|\n",
              out);
        for (int p = 0; p < s->n_procs; p++) {
            const bench_proc_result *pr = &s->procs[p];
            if (pr->pid <= 0)
                fprintf(out, "| %s | - | %.0f %% | %.0f %% | - | - | - |\n",
                        pr->pid == 0 ? "machine (all CPUs)" : "others (machine - watched)", pr->cpu_mean, pr->cpu_max);
            else
                fprintf(out, "| %s | %d | %.0f %% | %.0f %% | %s | %s | %s |\n", pr->name, pr->pid, pr->cpu_mean,
                        pr->cpu_max, fmt_bytes(a, sizeof a, (double)pr->rss_mean),
                        fmt_bytes(b, sizeof b, (double)pr->rss_max), fmt_bytes(c, sizeof c, (double)pr->rss_end));
        }
        fputc('\n', out);
    }

    md_kv(out, s->kv, s->n_kv);

    if (s->n_points) {
        int streams = any_stream;
        fputs("Throughput over time (each row one second; latency of the calls finished in it):\n\n| t (s) | OK/s | errors |",
              out);
        if (streams) fputs(" msgs/s | streams open |", out);
        fputs(" p50 ms | p99 ms | max ms |", out);
        for (int p = 0; p < s->n_procs; p++) fprintf(out, " CPU %s |", s->procs[p].name);
        fputs("\n|---:|---:|---:|", out);
        if (streams) fputs("---:|---:|", out);
        fputs("---:|---:|---:|", out);
        for (int p = 0; p < s->n_procs; p++) fputs("---:|", out);
        fputc('\n', out);
        size_t step = s->n_points > 120 ? (s->n_points + 119) / 120 : 1;
        for (size_t i = 0; i < s->n_points; i += step) {
            const bench_point *pt = &s->points[i];
            double dt = pt->dt > 0 ? pt->dt : 1;
            fprintf(out, "| %.0f | %s | %s |", pt->t, fmt_int(a, sizeof a, (double)pt->ok / dt),
                    fmt_int(b, sizeof b, (double)pt->err));
            if (streams)
                fprintf(out, " %s | %s |", fmt_int(c, sizeof c, (double)pt->messages / dt),
                        fmt_int(d, sizeof d, (double)pt->streams_open));
            fprintf(out, " %s | %s | %s |", fmt_ms(e, sizeof e, (double)pt->p50 / 1e6),
                    fmt_ms(f, sizeof f, (double)pt->p99 / 1e6), fmt_ms(g, sizeof g, (double)pt->max / 1e6));
            for (int p = 0; p < s->n_procs; p++) fprintf(out, " %.0f %% |", pt->cpu[p]);
            fputc('\n', out);
        }
        if (step > 1) fprintf(out, "\n(every %zu-th second shown; the TSV and JSON have all of them)\n", step);
        fputc('\n', out);
    }
}

void bench_report_markdown(const bench_report *r, FILE *out) {
    char mem[32];
    fprintf(out, "# concert-bench: %s\n\n", r->scenario);
    fprintf(out, "- started %s against `%s`, concert id `%s`\n", r->started, r->server, r->concert);
    fprintf(out, "- generator: %d worker thread%s (one completion queue each), %d channels (separate HTTP/2 "
                 "connections), libgrpc core version %s\n",
            r->threads, r->threads == 1 ? "" : "s", r->channels, grpc_version_string());
    fprintf(out, "- machine: %d CPU%s (%s), %s RAM. **The load generator, the server and Redis all share these "
                 "cores**, so every figure is a whole-system figure, not the server's alone.\n",
            r->ncpu, r->ncpu == 1 ? "" : "s", r->cpu_model, fmt_bytes(mem, sizeof mem, (double)r->mem_bytes));
    if (*r->command_line) fprintf(out, "- command: `%s`\n", r->command_line);
    fputc('\n', out);
    md_summary(r, out);
    if (r->n_kv) {
        fputs("## Findings\n\n", out);
        md_kv(out, r->kv, r->n_kv);
    }
    for (int i = 0; i < r->n; i++) md_section(r->sec[i], out);
}

/* ---- JSON ---- */

static void jstr(FILE *out, const char *s) {
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\r': fputs("\\r", out); break;
        case '\t': fputs("\\t", out); break;
        default:
            if (*p < 0x20) fprintf(out, "\\u%04x", *p);
            else fputc(*p, out);
        }
    }
    fputc('"', out);
}

static void jnum(FILE *out, double v) {
    if (!isfinite(v)) fputs("null", out);
    else if (v == floor(v) && fabs(v) < 1e15) fprintf(out, "%.0f", v);
    else fprintf(out, "%.6g", v);
}

static void jlat(FILE *out, const bench_hist *h) {
    fputs("{\"count\":", out);
    jnum(out, (double)h->count);
    fputs(",\"mean\":", out);
    jnum(out, bench_hist_mean(h) / 1e6);
    static const double ps[] = {50, 90, 99, 99.9};
    static const char *const pn[] = {"p50", "p90", "p99", "p999"};
    for (int i = 0; i < 4; i++) {
        fprintf(out, ",\"%s\":", pn[i]);
        jnum(out, (double)bench_hist_percentile(h, ps[i]) / 1e6);
    }
    fputs(",\"max\":", out);
    jnum(out, (double)h->max / 1e6);
    fputc('}', out);
}

static void jcodes(FILE *out, const uint64_t *codes) {
    fputc('{', out);
    int first = 1;
    for (int k = 0; k < BENCH_N_CODES; k++) {
        if (!codes[k]) continue;
        if (!first) fputc(',', out);
        first = 0;
        jstr(out, bench_code_name(k));
        fputc(':', out);
        jnum(out, (double)codes[k]);
    }
    fputc('}', out);
}

static void jkv(FILE *out, const bench_kv *kv, int n) {
    fputc('{', out);
    for (int i = 0; i < n; i++) {
        if (i) fputc(',', out);
        jstr(out, kv[i].key);
        fputc(':', out);
        if (kv[i].is_num) jnum(out, kv[i].num);
        else jstr(out, kv[i].text);
    }
    fputc('}', out);
}

static void json_section(const bench_result *s, FILE *out) {
    fputs("{\"name\":", out);
    jstr(out, s->name);
    fputs(",\"mode\":", out);
    jstr(out, s->mode);
    fprintf(out, ",\"concurrency\":%d,\"rate\":", s->concurrency);
    jnum(out, s->rate);
    fprintf(out, ",\"users\":%d,\"warmup_s\":%d,\"duration_s\":%d,\"elapsed_s\":", s->users, s->warmup_s,
            s->duration_s);
    jnum(out, s->elapsed_s);
    fputs(",\"late\":", out);
    jnum(out, (double)s->late);
    uint64_t calls = bench_result_calls(s), ok = bench_result_ok(s);
    fputs(",\"total\":{\"calls\":", out);
    jnum(out, (double)calls);
    fputs(",\"ok\":", out);
    jnum(out, (double)ok);
    fputs(",\"errors\":", out);
    jnum(out, (double)(calls - ok));
    fputs(",\"success_rate\":", out);
    jnum(out, calls ? (double)ok / (double)calls : NAN);
    fputs(",\"rps\":", out);
    jnum(out, bench_result_rps(s));
    fputs(",\"max_rps\":", out);
    jnum(out, bench_result_max_rps(s));
    fputs(",\"latency_ms\":", out);
    jlat(out, &s->total);
    fputs(",\"codes\":", out);
    jcodes(out, s->codes);
    fputs("},\"methods\":[", out);
    int first = 1;
    for (int i = 0; i < s->n_methods; i++) {
        const bench_method_result *m = &s->m[i];
        if (!method_calls(m) && !m->hist.count && !m->open_at_end) continue;
        if (!first) fputc(',', out);
        first = 0;
        fputs("{\"name\":", out);
        jstr(out, m->name);
        fprintf(out, ",\"stream\":%s,\"calls\":", m->stream ? "true" : "false");
        jnum(out, (double)method_calls(m));
        fputs(",\"ok\":", out);
        jnum(out, (double)m->codes[0]);
        fputs(",\"rps\":", out);
        jnum(out, s->elapsed_s > 0 ? (double)m->codes[0] / s->elapsed_s : 0);
        fputs(",\"latency_ms\":", out);
        jlat(out, &m->hist);
        fputs(",\"codes\":", out);
        jcodes(out, m->codes);
        fputs(",\"messages\":", out);
        jnum(out, (double)m->messages);
        fputs(",\"open_at_end\":", out);
        jnum(out, (double)m->open_at_end);
        fputc('}', out);
    }
    fputs("],\"processes\":[", out);
    for (int p = 0; p < s->n_procs; p++) {
        const bench_proc_result *pr = &s->procs[p];
        if (p) fputc(',', out);
        fputs("{\"name\":", out);
        jstr(out, pr->name);
        fprintf(out, ",\"pid\":%d,\"samples\":%d,\"cpu_mean_pct\":", pr->pid, pr->samples);
        jnum(out, pr->cpu_mean);
        fputs(",\"cpu_max_pct\":", out);
        jnum(out, pr->cpu_max);
        fputs(",\"rss_mean_bytes\":", out);
        jnum(out, (double)pr->rss_mean);
        fputs(",\"rss_max_bytes\":", out);
        jnum(out, (double)pr->rss_max);
        fputs(",\"rss_end_bytes\":", out);
        jnum(out, (double)pr->rss_end);
        fputc('}', out);
    }
    fputs("],\"findings\":", out);
    jkv(out, s->kv, s->n_kv);
    fputs(",\"series\":[", out);
    for (size_t i = 0; i < s->n_points; i++) {
        const bench_point *pt = &s->points[i];
        double dt = pt->dt > 0 ? pt->dt : 1;
        if (i) fputc(',', out);
        fputs("{\"t\":", out);
        jnum(out, pt->t);
        fputs(",\"dt\":", out);
        jnum(out, pt->dt);
        fputs(",\"rps\":", out);
        jnum(out, (double)pt->ok / dt);
        fputs(",\"errors\":", out);
        jnum(out, (double)pt->err);
        fputs(",\"messages_per_s\":", out);
        jnum(out, (double)pt->messages / dt);
        fputs(",\"streams_open\":", out);
        jnum(out, (double)pt->streams_open);
        fputs(",\"p50_ms\":", out);
        jnum(out, (double)pt->p50 / 1e6);
        fputs(",\"p90_ms\":", out);
        jnum(out, (double)pt->p90 / 1e6);
        fputs(",\"p99_ms\":", out);
        jnum(out, (double)pt->p99 / 1e6);
        fputs(",\"max_ms\":", out);
        jnum(out, (double)pt->max / 1e6);
        fputs(",\"cpu_pct\":{", out);
        for (int p = 0; p < s->n_procs; p++) {
            if (p) fputc(',', out);
            jstr(out, s->procs[p].name);
            fputc(':', out);
            jnum(out, pt->cpu[p]);
        }
        fputs("},\"rss_bytes\":{", out);
        int f2 = 1;
        for (int p = 0; p < s->n_procs; p++) {
            if (s->procs[p].pid <= 0) continue;
            if (!f2) fputc(',', out);
            f2 = 0;
            jstr(out, s->procs[p].name);
            fputc(':', out);
            jnum(out, (double)pt->rss[p]);
        }
        fputs("}}", out);
    }
    fputs("]}", out);
}

void bench_report_json(const bench_report *r, FILE *out) {
    fputs("{\"tool\":\"concert-bench\",\"format\":1,\"scenario\":", out);
    jstr(out, r->scenario);
    fputs(",\"server\":", out);
    jstr(out, r->server);
    fputs(",\"concert\":", out);
    jstr(out, r->concert);
    fputs(",\"started_at\":", out);
    jstr(out, r->started);
    fputs(",\"command_line\":", out);
    jstr(out, r->command_line);
    fprintf(out, ",\"threads\":%d,\"channels\":%d,\"grpc_version\":", r->threads, r->channels);
    jstr(out, grpc_version_string());
    fprintf(out, ",\"machine\":{\"cpus\":%d,\"cpu_model\":", r->ncpu);
    jstr(out, r->cpu_model);
    fputs(",\"mem_bytes\":", out);
    jnum(out, (double)r->mem_bytes);
    fputs(",\"shared_by_generator_server_and_redis\":true},\"findings\":", out);
    jkv(out, r->kv, r->n_kv);
    fputs(",\"sections\":[", out);
    for (int i = 0; i < r->n; i++) {
        if (i) fputc(',', out);
        json_section(r->sec[i], out);
    }
    fputs("]}\n", out);
}

/* ---- files and charts ---- */

static int mkdir_p(const char *dir) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path) return -1;
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(path, 0755) < 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(path, 0755) < 0 && errno != EEXIST) return -1;
    return 0;
}

/* "deep-queue: fill" -> "deep-queue-fill" */
static void slug(char *out, size_t len, const char *name) {
    size_t o = 0;
    int dash = 0;
    for (const char *p = name; *p && o + 1 < len; p++) {
        char ch = *p;
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_';
        if (ok) {
            out[o++] = ch;
            dash = 0;
        } else if (!dash && o) {
            out[o++] = '-';
            dash = 1;
        }
    }
    while (o && out[o - 1] == '-') o--;
    out[o] = '\0';
}

static void series_name(char *out, size_t len, int i, const char *name) {
    char s[64];
    slug(s, sizeof s, name);
    snprintf(out, len, "series-%d-%s.tsv", i + 1, s);
}

static int write_tsv(const bench_result *s, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs("# t_s\tok_per_s\terrors\tmessages_per_s\tstreams_open\tp50_ms\tp90_ms\tp99_ms\tmax_ms", f);
    for (int p = 0; p < s->n_procs; p++) fprintf(f, "\tcpu_pct:%s", s->procs[p].name);
    for (int p = 0; p < s->n_procs; p++) fprintf(f, "\trss_mib:%s", s->procs[p].name);
    fputc('\n', f);
    for (size_t i = 0; i < s->n_points; i++) {
        const bench_point *pt = &s->points[i];
        double dt = pt->dt > 0 ? pt->dt : 1;
        fprintf(f, "%.3f\t%.1f\t%llu\t%.1f\t%llu\t%.4f\t%.4f\t%.4f\t%.4f", pt->t, (double)pt->ok / dt,
                (unsigned long long)pt->err, (double)pt->messages / dt, (unsigned long long)pt->streams_open,
                (double)pt->p50 / 1e6, (double)pt->p90 / 1e6, (double)pt->p99 / 1e6, (double)pt->max / 1e6);
        for (int p = 0; p < s->n_procs; p++) fprintf(f, "\t%.1f", pt->cpu[p]);
        for (int p = 0; p < s->n_procs; p++) fprintf(f, "\t%.2f", (double)pt->rss[p] / (1024.0 * 1024));
        fputc('\n', f);
    }
    return fclose(f);
}

static void gp_title(FILE *f, const char *a, const char *b) {
    /* Double-quoted gnuplot string; our names hold no quotes or backslashes, but be safe. */
    fputc('"', f);
    for (const char *p = a; *p; p++)
        if (*p != '"' && *p != '\\') fputc(*p, f);
    if (b && *b) {
        fputc(' ', f);
        for (const char *p = b; *p; p++)
            if (*p != '"' && *p != '\\') fputc(*p, f);
    }
    fputc('"', f);
}

static int write_gp(const bench_report *r, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    char tsv[128];
    fputs("# gnuplot script written by concert-bench: `gnuplot charts.gp` in this folder.\n"
          "if (strstrt(GPVAL_TERMINALS, \"pngcairo\") > 0) {\n"
          "  set terminal pngcairo size 1100,480 noenhanced font \",10\"\n"
          "} else {\n"
          "  set terminal png size 1100,480\n"
          "}\n"
          "set datafile separator \"\\t\"\n"
          "set grid\n"
          "set key outside right top\n"
          "set xlabel \"seconds since measuring began\"\n\n",
          f);
    /* Throughput: OK calls/s per section (and messages/s for stream sections). */
    fputs("set output \"throughput.png\"\nset title \"Throughput: OK calls per second", f);
    fprintf(f, " (%s)\"\nset ylabel \"calls/s\"\nset yrange [0:*]\nplot ", r->scenario);
    int first = 1;
    for (int i = 0; i < r->n; i++) {
        if (!r->sec[i]->n_points) continue;
        series_name(tsv, sizeof tsv, i, r->sec[i]->name);
        if (!first) fputs(", \\\n     ", f);
        first = 0;
        fprintf(f, "\"%s\" using 1:2 with linespoints lw 2 title ", tsv);
        gp_title(f, r->sec[i]->name, "OK/s");
        int streams = 0;
        for (int m = 0; m < r->sec[i]->n_methods; m++) streams |= r->sec[i]->m[m].stream && r->sec[i]->m[m].messages;
        if (streams) {
            fprintf(f, ", \\\n     \"%s\" using 1:4 with lines lw 2 title ", tsv);
            gp_title(f, r->sec[i]->name, "stream messages/s");
            fprintf(f, ", \\\n     \"%s\" using 1:5 with lines lw 1 dt 2 title ", tsv);
            gp_title(f, r->sec[i]->name, "streams open");
        }
    }
    if (first) fputs("0 notitle", f);
    /* Latency: p50 and p99 of each second, log scale. */
    fprintf(f, "\n\nset output \"latency.png\"\nset title \"Latency of the calls finished in each second (%s)\"\n"
               "set ylabel \"ms (log scale)\"\nset logscale y\nset yrange [*:*]\nplot ",
            r->scenario);
    first = 1;
    for (int i = 0; i < r->n; i++) {
        if (!r->sec[i]->n_points || !has_unary(r->sec[i])) continue;
        series_name(tsv, sizeof tsv, i, r->sec[i]->name);
        if (!first) fputs(", \\\n     ", f);
        first = 0;
        fprintf(f, "\"%s\" using 1:($6>0?$6:1/0) with lines lw 2 title ", tsv);
        gp_title(f, r->sec[i]->name, "p50");
        fprintf(f, ", \\\n     \"%s\" using 1:($8>0?$8:1/0) with linespoints lw 2 title ", tsv);
        gp_title(f, r->sec[i]->name, "p99");
        fprintf(f, ", \\\n     \"%s\" using 1:($9>0?$9:1/0) with lines lw 1 dt 3 title ", tsv);
        gp_title(f, r->sec[i]->name, "max");
    }
    if (first) fputs("1 notitle", f);
    fputs("\nunset logscale y\n", f);
    /* CPU of every watched process. */
    fprintf(f, "\nset output \"cpu.png\"\nset title \"CPU, %% of one core (%s; %d cores in all)\"\n"
               "set ylabel \"%%\"\nset yrange [0:*]\nplot ",
            r->scenario, r->ncpu);
    first = 1;
    for (int i = 0; i < r->n; i++) {
        const bench_result *s = r->sec[i];
        if (!s->n_points) continue;
        series_name(tsv, sizeof tsv, i, s->name);
        for (int p = 0; p < s->n_procs; p++) {
            if (!first) fputs(", \\\n     ", f);
            first = 0;
            fprintf(f, "\"%s\" using 1:%d with lines lw 2 title ", tsv, 10 + p);
            gp_title(f, r->n > 1 ? s->name : "", s->procs[p].name);
        }
    }
    if (first) fputs("0 notitle", f);
    fputs("\n", f);
    return fclose(f);
}

static int on_path(const char *prog) {
    const char *path = getenv("PATH");
    if (!path) return 0;
    char buf[4096];
    const char *p = path;
    while (*p) {
        const char *c = strchr(p, ':');
        size_t l = c ? (size_t)(c - p) : strlen(p);
        if (l && l < sizeof buf - 64) {
            snprintf(buf, sizeof buf, "%.*s/%s", (int)l, p, prog);
            if (access(buf, X_OK) == 0) return 1;
        }
        if (!c) break;
        p = c + 1;
    }
    return 0;
}

/* Runs gnuplot charts.gp in `dir`, output to gnuplot.log; gives it 60 s. */
static int run_gnuplot(const char *dir) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        if (chdir(dir) < 0) _exit(127);
        int fd = open("gnuplot.log", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execlp("gnuplot", "gnuplot", "charts.gp", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 1200; i++) {
        int st;
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid) return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
        if (w < 0) return -1;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL); /* our own child, by pid */
    waitpid(pid, NULL, 0);
    return -1;
}

int bench_report_write_dir(const bench_report *r, const char *dir, char *err, size_t errlen) {
    char path[4200];
    if (mkdir_p(dir) < 0) {
        snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    snprintf(path, sizeof path, "%s/report.md", dir);
    FILE *f = fopen(path, "w");
    if (!f) goto fail;
    bench_report_markdown(r, f);
    if (fclose(f) != 0) goto fail;
    snprintf(path, sizeof path, "%s/report.json", dir);
    f = fopen(path, "w");
    if (!f) goto fail;
    bench_report_json(r, f);
    if (fclose(f) != 0) goto fail;
    for (int i = 0; i < r->n; i++) {
        char name[128];
        series_name(name, sizeof name, i, r->sec[i]->name);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        if (write_tsv(r->sec[i], path) < 0) goto fail;
    }
    snprintf(path, sizeof path, "%s/charts.gp", dir);
    if (write_gp(r, path) < 0) goto fail;
    if (!on_path("gnuplot")) {
        fprintf(stderr, "concert-bench: gnuplot not found; charts skipped (Debian: apt-get install gnuplot-nox), "
                        "the script is %s\n", path);
    } else if (run_gnuplot(dir) < 0) {
        fprintf(stderr, "concert-bench: gnuplot failed; see %s/gnuplot.log (the report itself is complete)\n", dir);
    }
    return 0;
fail:
    snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
    return -1;
}
