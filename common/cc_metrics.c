/* cc_metrics: see cc_metrics.h for the contract.
 *
 * Each family keeps its series twice: in insertion order (a doubly linked list, so
 * the page is stable from scrape to scrape) and in a small open hash table keyed by
 * the label values joined with \x1f (so cc_metric_with is O(1)). Histograms keep
 * per-bucket (non-cumulative) counts; the page shows them cumulative, as the format
 * wants. The HTTP side reads one request (at most 4 KiB), answers and closes. */
#define _GNU_SOURCE
#include "cc_metrics.h"

#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cc_log.h"

typedef enum { K_COUNTER, K_GAUGE, K_HISTOGRAM } kind;

struct cc_series {
    cc_metric *f;
    char *key;     /* label values joined by \x1f */
    char **values; /* f->n_labels of them */
    double value;  /* counter, gauge */
    double sum;    /* histogram */
    uint64_t count;
    uint64_t *buckets; /* n_bounds + 1 (last: +Inf), not cumulative */
    cc_series *prev, *next; /* insertion order */
    cc_series *hnext;
};

struct cc_metric {
    cc_metrics *m;
    kind k;
    char *name, *help;
    char **labels;
    int n_labels;
    double *bounds;
    int n_bounds;
    cc_series *first, *last;
    cc_series **table;
    size_t n_slots, n_series;
    cc_metric *next;
};

typedef struct collector {
    void (*cb)(cc_metrics *m, void *payload);
    void *payload;
    struct collector *next;
} collector;

typedef struct mconn {
    uv_tcp_t tcp;
    uv_write_t wr;
    cc_metrics *m;
    char in[4096];
    size_t in_len;
    char *out;
    int replied;
    struct mconn *prev, *next;
} mconn;

struct cc_metrics {
    char *prefix, *version;
    cc_metric *first, *last;
    collector *collectors;
    uv_loop_t *loop;
    uv_tcp_t listener;
    int listening;
    int closing;
    int open_handles;
    mconn *conns;
};

const double cc_metrics_latency_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                            0.1,    0.25,  0.5,    1,     2.5,  5,     10};
const int cc_metrics_n_latency_bounds = sizeof cc_metrics_latency_bounds / sizeof cc_metrics_latency_bounds[0];

static void *xcalloc(size_t n, size_t sz) {
    void *p = calloc(n ? n : 1, sz);
    if (!p) abort();
    return p;
}

static char *xstrdup(const char *s) {
    char *d = strdup(s ? s : "");
    if (!d) abort();
    return d;
}

/* ---- registry ---- */

cc_metrics *cc_metrics_new(const char *prefix, const char *version) {
    cc_metrics *m = xcalloc(1, sizeof *m);
    m->prefix = xstrdup(prefix);
    m->version = xstrdup(version);
    return m;
}

static cc_metric *declare(cc_metrics *m, kind k, const char *name, const char *help, int n_labels,
                          const char *const *labels) {
    for (cc_metric *f = m->first; f; f = f->next)
        if (!strcmp(f->name, name)) return f;
    cc_metric *f = xcalloc(1, sizeof *f);
    f->m = m;
    f->k = k;
    f->name = xstrdup(name);
    f->help = xstrdup(help);
    f->n_labels = n_labels > 0 ? n_labels : 0;
    f->labels = xcalloc((size_t)f->n_labels, sizeof *f->labels);
    for (int i = 0; i < f->n_labels; i++)
        f->labels[i] = xstrdup(labels[i]);
    if (m->last) m->last->next = f; else m->first = f;
    m->last = f;
    return f;
}

cc_metric *cc_metrics_counter(cc_metrics *m, const char *name, const char *help, int n_labels,
                              const char *const *labels) {
    return declare(m, K_COUNTER, name, help, n_labels, labels);
}

cc_metric *cc_metrics_gauge(cc_metrics *m, const char *name, const char *help, int n_labels,
                            const char *const *labels) {
    return declare(m, K_GAUGE, name, help, n_labels, labels);
}

cc_metric *cc_metrics_histogram(cc_metrics *m, const char *name, const char *help, int n_labels,
                                const char *const *labels, const double *bounds, int n_bounds) {
    cc_metric *f = declare(m, K_HISTOGRAM, name, help, n_labels, labels);
    if (!f->bounds) {
        f->n_bounds = n_bounds > 0 ? n_bounds : 0;
        f->bounds = xcalloc((size_t)f->n_bounds, sizeof *f->bounds);
        memcpy(f->bounds, bounds, (size_t)f->n_bounds * sizeof *f->bounds);
    }
    return f;
}

static uint64_t hash_key(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void rehash(cc_metric *f) {
    size_t n = f->n_slots ? f->n_slots * 2 : 16;
    cc_series **t = xcalloc(n, sizeof *t);
    for (cc_series *s = f->first; s; s = s->next) {
        size_t i = hash_key(s->key) & (n - 1);
        s->hnext = t[i];
        t[i] = s;
    }
    free(f->table);
    f->table = t;
    f->n_slots = n;
}

cc_series *cc_metric_with(cc_metric *f, const char *const *values) {
    char stack[512], *key = stack;
    size_t need = 1;
    for (int i = 0; i < f->n_labels; i++)
        need += strlen(values && values[i] ? values[i] : "") + 1;
    if (need > sizeof stack) key = xcalloc(need, 1);
    size_t o = 0;
    for (int i = 0; i < f->n_labels; i++) {
        const char *v = values && values[i] ? values[i] : "";
        size_t l = strlen(v);
        memcpy(key + o, v, l);
        o += l;
        if (i + 1 < f->n_labels) key[o++] = '\x1f';
    }
    key[o] = '\0';
    if (f->n_slots) {
        for (cc_series *s = f->table[hash_key(key) & (f->n_slots - 1)]; s; s = s->hnext)
            if (!strcmp(s->key, key)) {
                if (key != stack) free(key);
                return s;
            }
    }
    cc_series *s = xcalloc(1, sizeof *s);
    s->f = f;
    s->key = xstrdup(key);
    if (key != stack) free(key);
    s->values = xcalloc((size_t)f->n_labels, sizeof *s->values);
    for (int i = 0; i < f->n_labels; i++)
        s->values[i] = xstrdup(values && values[i] ? values[i] : "");
    if (f->k == K_HISTOGRAM) s->buckets = xcalloc((size_t)f->n_bounds + 1, sizeof *s->buckets);
    if ((f->n_series + 1) * 4 > f->n_slots * 3) rehash(f); /* before s is in the list */
    s->prev = f->last;
    if (f->last) f->last->next = s; else f->first = s;
    f->last = s;
    size_t i = hash_key(s->key) & (f->n_slots - 1);
    s->hnext = f->table[i];
    f->table[i] = s;
    f->n_series++;
    return s;
}

void cc_series_add(cc_series *s, double v) { s->value += v; }

void cc_series_set(cc_series *s, double v) { s->value = v; }

void cc_series_observe(cc_series *s, double v) {
    const cc_metric *f = s->f;
    int i = 0;
    while (i < f->n_bounds && v > f->bounds[i])
        i++;
    s->buckets[i]++;
    s->count++;
    s->sum += v;
}

static void free_series(cc_series *s) {
    for (int i = 0; i < s->f->n_labels; i++)
        free(s->values[i]);
    free(s->values);
    free(s->buckets);
    free(s->key);
    free(s);
}

void cc_metric_clear(cc_metric *f) {
    for (cc_series *s = f->first, *n; s; s = n) {
        n = s->next;
        free_series(s);
    }
    f->first = f->last = NULL;
    free(f->table);
    f->table = NULL;
    f->n_slots = f->n_series = 0;
}

void cc_metrics_on_collect(cc_metrics *m, void (*cb)(cc_metrics *m, void *payload), void *payload) {
    collector *c = xcalloc(1, sizeof *c), **p = &m->collectors;
    c->cb = cb;
    c->payload = payload;
    while (*p)
        p = &(*p)->next;
    *p = c;
}

/* ---- rendering ---- */

typedef struct {
    char *buf;
    size_t len, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap)
            b->cap = b->cap ? b->cap * 2 : 4096;
        b->buf = realloc(b->buf, b->cap);
        if (!b->buf) abort();
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) {
        sb_put(b, tmp, (size_t)n);
        return;
    }
    char *big = xcalloc((size_t)n + 1, 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_put(b, big, (size_t)n);
    free(big);
}

/* HELP text: backslash and newline escaped; label values also the double quote. */
static void sb_escaped(sbuf *b, const char *s, int quote) {
    for (; *s; s++) {
        if (*s == '\\') sb_put(b, "\\\\", 2);
        else if (*s == '\n') sb_put(b, "\\n", 2);
        else if (quote && *s == '"') sb_put(b, "\\\"", 2);
        else sb_put(b, s, 1);
    }
}

static void sb_number(sbuf *b, double v) {
    if (isnan(v)) sb_put(b, "NaN", 3);
    else if (isinf(v)) sb_printf(b, "%s", v > 0 ? "+Inf" : "-Inf");
    else sb_printf(b, "%.15g", v);
}

/* name{labels[,le="x"]} */
static void sb_series_name(sbuf *b, const cc_metric *f, const cc_series *s, const char *suffix, const char *le) {
    sb_printf(b, "%s%s", f->name, suffix);
    if (f->n_labels == 0 && !le) return;
    sb_put(b, "{", 1);
    for (int i = 0; i < f->n_labels; i++) {
        sb_printf(b, "%s%s=\"", i ? "," : "", f->labels[i]);
        sb_escaped(b, s->values[i], 1);
        sb_put(b, "\"", 1);
    }
    if (le) sb_printf(b, "%sle=\"%s\"", f->n_labels ? "," : "", le);
    sb_put(b, "}", 1);
}

static void render_family(sbuf *b, const cc_metric *f) {
    static const char *const types[] = {"counter", "gauge", "histogram"};
    sb_printf(b, "# HELP %s ", f->name);
    sb_escaped(b, f->help, 0);
    sb_printf(b, "\n# TYPE %s %s\n", f->name, types[f->k]);
    for (const cc_series *s = f->first; s; s = s->next) {
        if (f->k != K_HISTOGRAM) {
            sb_series_name(b, f, s, "", NULL);
            sb_put(b, " ", 1);
            sb_number(b, s->value);
            sb_put(b, "\n", 1);
            continue;
        }
        uint64_t cum = 0;
        for (int i = 0; i <= f->n_bounds; i++) {
            char le[40];
            if (i < f->n_bounds) snprintf(le, sizeof le, "%.15g", f->bounds[i]);
            else snprintf(le, sizeof le, "+Inf");
            cum += s->buckets[i];
            sb_series_name(b, f, s, "_bucket", le);
            sb_printf(b, " %llu\n", (unsigned long long)cum);
        }
        sb_series_name(b, f, s, "_sum", NULL);
        sb_put(b, " ", 1);
        sb_number(b, s->sum);
        sb_put(b, "\n", 1);
        sb_series_name(b, f, s, "_count", NULL);
        sb_printf(b, " %llu\n", (unsigned long long)s->count);
    }
}

/* process_* as the Prometheus client libraries export them, from /proc. */
static void render_process(sbuf *b) {
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    double cpu = 0, start = 0, vsize = 0, rss = 0;
    char buf[1024];
    FILE *fp = fopen("/proc/self/stat", "r");
    if (fp) {
        size_t n = fread(buf, 1, sizeof buf - 1, fp);
        buf[n] = '\0';
        fclose(fp);
        /* Fields after the command name "(...)": state is field 3. */
        char *p = strrchr(buf, ')');
        unsigned long long utime = 0, stime = 0, starttime = 0, vs = 0;
        long long rsspages = 0;
        if (p && sscanf(p + 2,
                        "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d %llu "
                        "%llu %lld",
                        &utime, &stime, &starttime, &vs, &rsspages) == 5) {
            cpu = (double)(utime + stime) / (double)tick;
            vsize = (double)vs;
            rss = (double)rsspages * (double)page;
            double btime = 0;
            FILE *st = fopen("/proc/stat", "r");
            if (st) {
                char line[256];
                while (fgets(line, sizeof line, st))
                    if (!strncmp(line, "btime ", 6)) btime = strtod(line + 6, NULL);
                fclose(st);
            }
            start = btime + (double)starttime / (double)tick;
        }
    }
    int fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        for (struct dirent *e; (e = readdir(d));)
            if (e->d_name[0] != '.') fds++;
        closedir(d);
        fds--; /* the directory stream itself */
    }
    struct rlimit rl = {0, 0};
    getrlimit(RLIMIT_NOFILE, &rl);
    sb_printf(b, "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
                 "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total ");
    sb_number(b, cpu);
    sb_printf(b, "\n# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                 "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes ");
    sb_number(b, rss);
    sb_printf(b, "\n# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
                 "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes ");
    sb_number(b, vsize);
    sb_printf(b, "\n# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
                 "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds ");
    sb_number(b, start);
    sb_printf(b, "\n# HELP process_open_fds Number of open file descriptors.\n"
                 "# TYPE process_open_fds gauge\nprocess_open_fds %d\n"
                 "# HELP process_max_fds Maximum number of open file descriptors.\n"
                 "# TYPE process_max_fds gauge\nprocess_max_fds ",
              fds);
    sb_number(b, rl.rlim_cur == RLIM_INFINITY ? INFINITY : (double)rl.rlim_cur);
    sb_put(b, "\n", 1);
}

char *cc_metrics_render(cc_metrics *m, size_t *len) {
    for (collector *c = m->collectors; c; c = c->next)
        c->cb(m, c->payload);
    sbuf b = {0};
    sb_put(&b, "", 0);
    for (const cc_metric *f = m->first; f; f = f->next)
        render_family(&b, f);
    render_process(&b);
    sb_printf(&b, "# HELP %s_build_info Build information (always 1).\n# TYPE %s_build_info gauge\n%s_build_info{version=\"",
              m->prefix, m->prefix, m->prefix);
    sb_escaped(&b, m->version, 1);
    sb_put(&b, "\"} 1\n", 5);
    if (len) *len = b.len;
    return b.buf;
}

/* ---- HTTP ---- */

static void maybe_free(cc_metrics *m);

static void on_conn_closed(uv_handle_t *h) {
    mconn *c = h->data;
    cc_metrics *m = c->m;
    if (c->prev) c->prev->next = c->next; else m->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    free(c->out);
    free(c);
    m->open_handles--;
    maybe_free(m);
}

static void conn_close(mconn *c) {
    if (!uv_is_closing((uv_handle_t *)&c->tcp)) uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_written(uv_write_t *w, int status) { conn_close(w->data); }

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    mconn *c = h->data;
    buf->base = c->in + c->in_len;
    buf->len = sizeof c->in - 1 - c->in_len;
}

static void respond(mconn *c, int code, const char *reason, const char *body, size_t blen, int head) {
    size_t cap = blen + 256;
    c->out = xcalloc(cap, 1);
    int hl = snprintf(c->out, cap,
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", code,
                      reason, code == 200 ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain; charset=utf-8",
                      blen);
    size_t n = (size_t)hl;
    if (!head) {
        memcpy(c->out + n, body, blen);
        n += blen;
    }
    uv_buf_t out = uv_buf_init(c->out, (unsigned)n);
    c->wr.data = c;
    if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &out, 1, on_written) != 0) conn_close(c);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
    mconn *c = st->data;
    if (c->replied) return;
    if (n < 0) {
        conn_close(c);
        return;
    }
    c->in_len += (size_t)n;
    c->in[c->in_len] = '\0';
    int full = c->in_len >= sizeof c->in - 1;
    if (!strstr(c->in, "\r\n\r\n") && !strstr(c->in, "\n\n") && !full) return;
    c->replied = 1;
    uv_read_stop(st);
    /* Request line: METHOD SP PATH[?query] SP VERSION */
    char method[8] = "", path[256] = "";
    if (full || sscanf(c->in, "%7s %255s", method, path) != 2) {
        const char msg[] = "bad request\n";
        respond(c, 400, "Bad Request", msg, sizeof msg - 1, 0);
        return;
    }
    char *q = strchr(path, '?');
    if (q) *q = '\0';
    int head = !strcmp(method, "HEAD");
    if (strcmp(method, "GET") && !head) {
        const char msg[] = "only GET /metrics\n";
        respond(c, 405, "Method Not Allowed", msg, sizeof msg - 1, 0);
        return;
    }
    if (strcmp(path, "/metrics")) {
        const char msg[] = "not found: metrics are at /metrics\n";
        respond(c, 404, "Not Found", msg, sizeof msg - 1, head);
        return;
    }
    size_t blen = 0;
    char *body = cc_metrics_render(c->m, &blen);
    respond(c, 200, "OK", body, blen, head);
    free(body);
}

static void on_connection(uv_stream_t *server, int status) {
    cc_metrics *m = server->data;
    if (status < 0 || m->closing) return;
    mconn *c = xcalloc(1, sizeof *c);
    c->m = m;
    uv_tcp_init(m->loop, &c->tcp);
    c->tcp.data = c;
    c->next = m->conns;
    if (m->conns) m->conns->prev = c;
    m->conns = c;
    m->open_handles++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        conn_close(c);
}

static void on_listener_closed(uv_handle_t *h) {
    cc_metrics *m = h->data;
    m->open_handles--;
    maybe_free(m);
}

int cc_metrics_serve(cc_metrics *m, uv_loop_t *loop, const char *hostport, int *bound_port, char *err,
                     size_t errlen) {
    char host[256];
    const char *colon = strrchr(hostport ? hostport : "", ':');
    const char *h = hostport, *he = colon;
    if (h && *h == '[') {
        h++;
        if (!colon || colon[-1] != ']') colon = NULL;
        else he = colon - 1;
    }
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || he <= h || (size_t)(he - h) >= sizeof host || !end || *end || end == colon + 1 || port < 0 ||
        port > 65535) {
        snprintf(err, errlen, "metrics address '%s': expected HOST:PORT", hostport ? hostport : "");
        return -1;
    }
    memcpy(host, h, (size_t)(he - h));
    host[he - h] = '\0';
    struct sockaddr_storage ss;
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&ss) != 0) {
        snprintf(err, errlen, "metrics address '%s': host must be a numeric IPv4 or IPv6 address", hostport);
        return -1;
    }
    m->loop = loop;
    uv_tcp_init(loop, &m->listener);
    m->listener.data = m;
    m->open_handles++;
    int rc = uv_tcp_bind(&m->listener, (const struct sockaddr *)&ss, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&m->listener, 64, on_connection);
    if (rc != 0) {
        snprintf(err, errlen, "metrics address '%s': %s", hostport, uv_strerror(rc));
        uv_close((uv_handle_t *)&m->listener, on_listener_closed);
        return -1;
    }
    struct sockaddr_storage got;
    int gl = sizeof got;
    int p = (int)port;
    if (uv_tcp_getsockname(&m->listener, (struct sockaddr *)&got, &gl) == 0)
        p = ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&got)->sin6_port
                                            : ((struct sockaddr_in *)&got)->sin_port);
    m->listening = 1;
    if (bound_port) *bound_port = p;
    CC_INFO("metrics_listening", "addr=%s host=%s port=%d path=/metrics", hostport, host, p);
    return 0;
}

static void free_all(cc_metrics *m) {
    for (cc_metric *f = m->first, *n; f; f = n) {
        n = f->next;
        cc_metric_clear(f);
        for (int i = 0; i < f->n_labels; i++)
            free(f->labels[i]);
        free(f->labels);
        free(f->bounds);
        free(f->name);
        free(f->help);
        free(f);
    }
    for (collector *c = m->collectors, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    free(m->prefix);
    free(m->version);
    free(m);
}

static void maybe_free(cc_metrics *m) {
    if (m->closing && m->open_handles == 0) free_all(m);
}

void cc_metrics_close(cc_metrics *m) {
    if (!m || m->closing) return;
    m->closing = 1;
    if (m->listening) {
        m->listening = 0;
        uv_close((uv_handle_t *)&m->listener, on_listener_closed);
    }
    for (mconn *c = m->conns; c; c = c->next)
        conn_close(c);
    maybe_free(m);
}
