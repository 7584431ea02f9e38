/* cc_metrics: Prometheus metrics for every executable of the project.
 *
 * A registry of metric families (counter, gauge, histogram), each with fixed label
 * names and any number of series (one per combination of label values), rendered in
 * the Prometheus text format 0.0.4 with HELP and TYPE for every family, followed by
 * the standard process_* families and `<prefix>_build_info{version} 1`. An optional
 * HTTP endpoint on a libuv loop answers `GET /metrics` (and HEAD) with the page,
 * 404 for any other path, 405 for other methods; one short connection per scrape.
 *
 * Ownership: the registry owns its families, series and label strings; the handles
 * returned (cc_metric, cc_series) stay valid until cc_metrics_close, except series
 * dropped by cc_metric_clear. Threading: every function must be called on one
 * thread (the loop's, when serving). Must not: block the loop, or allocate per
 * update (updates on an existing series are a few arithmetic operations). */
#ifndef CC_METRICS_H
#define CC_METRICS_H

#include <stddef.h>
#include <uv.h>

typedef struct cc_metrics cc_metrics;
typedef struct cc_metric cc_metric;
typedef struct cc_series cc_series;

/** A new registry. `prefix` names the build-info family (`<prefix>_build_info`),
 * `version` its label. Both are copied. */
cc_metrics *cc_metrics_new(const char *prefix, const char *version);

/** Declares a family. `name` must be a valid Prometheus name (counters end in
 * `_total`), `help` one line; label names are copied. Declaring the same name twice
 * returns the first family. Never NULL (aborts on out of memory). */
cc_metric *cc_metrics_counter(cc_metrics *m, const char *name, const char *help, int n_labels,
                              const char *const *labels);
cc_metric *cc_metrics_gauge(cc_metrics *m, const char *name, const char *help, int n_labels,
                            const char *const *labels);
/** A histogram with `n_bounds` strictly increasing upper bounds (the +Inf bucket is
 * implicit). */
cc_metric *cc_metrics_histogram(cc_metrics *m, const char *name, const char *help, int n_labels,
                                const char *const *labels, const double *bounds, int n_bounds);

/** The series of `f` with these label values (n_labels of them; NULL when the family
 * has no labels), created at 0 on first use. Callers on a hot path keep the handle. */
cc_series *cc_metric_with(cc_metric *f, const char *const *label_values);

/** Counter/gauge: adds v. */
void cc_series_add(cc_series *s, double v);
/** Gauge: sets v. */
void cc_series_set(cc_series *s, double v);
/** Histogram: records one observation. */
void cc_series_observe(cc_series *s, double v);

/** Drops every series of `f` (for gauges rebuilt at each collection, e.g. one per
 * concert). Handles to them become invalid. */
void cc_metric_clear(cc_metric *f);

/** `cb` runs right before every render (scrape), to refresh gauges. Several may be
 * registered; they run in order. */
void cc_metrics_on_collect(cc_metrics *m, void (*cb)(cc_metrics *m, void *payload), void *payload);

/** The whole page (NUL-terminated; length in *len if len is not NULL). Caller frees. */
char *cc_metrics_render(cc_metrics *m, size_t *len);

/** Serves the page on `hostport` (`host:port`, `[v6]:port`; port 0 picks one) on
 * `loop`. Logs `metrics_listening addr=... port=N`; *bound_port gets the port.
 * Returns 0, or -1 with a reason in err. */
int cc_metrics_serve(cc_metrics *m, uv_loop_t *loop, const char *hostport, int *bound_port, char *err,
                     size_t errlen);

/** Stops listening (open scrapes are closed) and frees the registry once every handle
 * has closed; with no loop attached it frees at once. */
void cc_metrics_close(cc_metrics *m);

/** Latency buckets in seconds shared by the project's histograms (0.5 ms .. 10 s). */
extern const double cc_metrics_latency_bounds[];
extern const int cc_metrics_n_latency_bounds;

#endif
