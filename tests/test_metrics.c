/* Metrics: the cc_metrics registry renders valid Prometheus text (escaping, cumulative
 * histogram buckets, HELP/TYPE on every family), and concert-server's /metrics page
 * passes `promtool check metrics`, names the port it bound when asked for port 0,
 * counts calls with the standard gRPC labels and latency histograms, shows the queue
 * per concert, Redis health, process_* and build info, and answers 404 elsewhere. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cc_metrics.h"
#include "th.h"

/* ---- the registry alone ---- */

Test(registry, renders_families_series_and_escapes) {
    cc_metrics *m = cc_metrics_new("t", "1.2\"3");
    const char *l[] = {"a", "b"};
    cc_metric *c = cc_metrics_counter(m, "t_things_total", "Things.\nSecond line \\ here.", 2, l);
    cc_metric *again = cc_metrics_counter(m, "t_things_total", "ignored", 2, l);
    cr_assert_eq(c, again, "declaring a name twice gives the first family");
    const char *v1[] = {"x\"y", "p\\q\nr"};
    cc_series *s = cc_metric_with(c, v1);
    cc_series_add(s, 2);
    cc_series_add(cc_metric_with(c, v1), 1);
    cc_metric *g = cc_metrics_gauge(m, "t_level", "Level.", 0, NULL);
    cc_series_set(cc_metric_with(g, NULL), 0.5);
    char *page = cc_metrics_render(m, NULL);
    cr_expect(strstr(page, "# HELP t_things_total Things.\\nSecond line \\\\ here.\n# TYPE t_things_total counter\n"),
              "%s", page);
    cr_expect(strstr(page, "t_things_total{a=\"x\\\"y\",b=\"p\\\\q\\nr\"} 3\n"), "%s", page);
    cr_expect(strstr(page, "t_level 0.5\n"), "%s", page);
    cr_expect(strstr(page, "t_build_info{version=\"1.2\\\"3\"} 1\n"), "%s", page);
    cr_expect(strstr(page, "# TYPE process_cpu_seconds_total counter\n"), "%s", page);
    cr_expect(strstr(page, "process_resident_memory_bytes "), "%s", page);
    free(page);
    cc_metrics_close(m);
}

Test(registry, histogram_buckets_are_cumulative) {
    cc_metrics *m = cc_metrics_new("t", "1");
    const double b[] = {0.1, 1, 10};
    const char *l[] = {"op"};
    cc_metric *h = cc_metrics_histogram(m, "t_op_seconds", "Op time.", 1, l, b, 3);
    const char *v[] = {"read"};
    cc_series *s = cc_metric_with(h, v);
    double obs[] = {0.05, 0.1, 0.5, 5, 50};
    for (int i = 0; i < 5; i++) cc_series_observe(s, obs[i]);
    char *page = cc_metrics_render(m, NULL);
    cr_expect(strstr(page, "t_op_seconds_bucket{op=\"read\",le=\"0.1\"} 2\n"), "%s", page);
    cr_expect(strstr(page, "t_op_seconds_bucket{op=\"read\",le=\"1\"} 3\n"), "%s", page);
    cr_expect(strstr(page, "t_op_seconds_bucket{op=\"read\",le=\"10\"} 4\n"), "%s", page);
    cr_expect(strstr(page, "t_op_seconds_bucket{op=\"read\",le=\"+Inf\"} 5\n"), "%s", page);
    cr_expect(strstr(page, "t_op_seconds_sum{op=\"read\"} 55.65\n"), "%s", page);
    cr_expect(strstr(page, "t_op_seconds_count{op=\"read\"} 5\n"), "%s", page);
    free(page);
    cc_metrics_close(m);
}

Test(registry, many_series_and_clear) {
    cc_metrics *m = cc_metrics_new("t", "1");
    const char *l[] = {"concert"};
    cc_metric *g = cc_metrics_gauge(m, "t_waiting", "Waiting.", 1, l);
    char name[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof name, "c%d", i);
        const char *v[] = {name};
        cc_series_set(cc_metric_with(g, v), i);
    }
    for (int i = 0; i < 5000; i += 997) {
        snprintf(name, sizeof name, "c%d", i);
        const char *v[] = {name};
        cr_assert_eq(cc_metric_with(g, v), cc_metric_with(g, v));
    }
    char *page = cc_metrics_render(m, NULL);
    cr_expect(strstr(page, "t_waiting{concert=\"c4999\"} 4999\n"), "%s", "c4999 missing");
    free(page);
    cc_metric_clear(g);
    page = cc_metrics_render(m, NULL);
    cr_expect(strstr(page, "# TYPE t_waiting gauge\n") && !strstr(page, "t_waiting{"), "cleared");
    free(page);
    cc_metrics_close(m);
}

/* ---- concert-server's endpoint ---- */

static th_redis redis;
static th_server server;
static cc_client *cli;
static int metrics_port;

static void start(void) {
    memset(&redis, 0, sizeof redis);
    th_redis_start(&redis);
    const char *flags[] = {"--metrics", "127.0.0.1:0", "--admin-key", "mk", "--admit-interval-ms", "20", NULL};
    th_server_start(&server, redis.url, flags);
    cli = cc_client_open(server.addr);
    metrics_port = th_metrics_port(&server);
    cr_assert(metrics_port > 0, "no metrics_listening port in %s", server.log);
}

static void stop(void) {
    th_server_close(&server, &cli);
    th_redis_stop(&redis);
}

static char *http(const char *method, const char *path) { return th_http(metrics_port, method, path); }

static int has_line(const char *page, const char *line) {
    size_t n = strlen(line);
    for (const char *p = page; (p = strstr(p, line)); p += n)
        if ((p == page || p[-1] == '\n') && p[n] == '\n') return 1;
    return 0;
}

/* Runs promtool check metrics on the body; its verdict (0 = clean) and output. */
static int promtool(const char *body, char *out, size_t outlen) {
    char path[] = "/tmp/concert-metrics-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    size_t len = strlen(body);
    cr_assert(write(fd, body, len) == (ssize_t)len);
    close(fd);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s 2>&1", path);
    FILE *p = popen(cmd, "r");
    cr_assert(p, "promtool (Debian package prometheus) must be installed");
    size_t o = fread(out, 1, outlen - 1, p);
    out[o] = '\0';
    int st = pclose(p);
    unlink(path);
    return st;
}

/* Redis used/max memory of the (only) primary, labelled with its address. */
static int memory_known(void *arg) {
    char *resp = http("GET", "/metrics");
    char used[96], max[96];
    snprintf(used, sizeof used, "\nconcert_redis_used_memory_bytes{node=\"127.0.0.1:%d\"} ", redis.port);
    snprintf(max, sizeof max, "concert_redis_maxmemory_bytes{node=\"127.0.0.1:%d\"} 0", redis.port);
    int ok = strstr(resp, used) && has_line(resp, max);
    free(resp);
    return ok;
}

Test(server, page_passes_promtool_with_standard_grpc_labels, .init = start, .fini = stop, .timeout = 60) {
    cr_assert_eq(th_admin_catalogue(cli, "mk", "met", "s1", 10, 100), GRPC_STATUS_OK);
    cr_assert_eq(th_issue(cli, "m1", "met", NULL, NULL), GRPC_STATUS_OK);
    cr_assert_eq(th_issue(cli, "m2", "met", NULL, NULL), GRPC_STATUS_OK);
    cr_assert_eq(th_issue(cli, "", "met", NULL, NULL), GRPC_STATUS_INVALID_ARGUMENT);
    char *resp = http("GET", "/metrics");
    cr_assert(!strncmp(resp, "HTTP/1.1 200 OK\r\n", 17), "%.200s", resp);
    cr_expect(strstr(resp, "Content-Type: text/plain; version=0.0.4"), "%.300s", resp);
    const char *page = strstr(resp, "\r\n\r\n") + 4;
    char out[4096];
    int st = promtool(page, out, sizeof out);
    cr_expect_eq(st, 0, "promtool check metrics failed:\n%s", out);
    const char *svc = "grpc_service=\"concert.v1.QueueService\",grpc_method=\"IssueToken\"";
    char want[512];
    snprintf(want, sizeof want, "grpc_server_started_total{grpc_type=\"unary\",%s} 3", svc);
    cr_expect(has_line(page, want), "%s\n%s", want, page);
    snprintf(want, sizeof want, "grpc_server_handled_total{grpc_type=\"unary\",%s,grpc_code=\"OK\"} 2", svc);
    cr_expect(has_line(page, want), "%s", want);
    snprintf(want, sizeof want, "grpc_server_handled_total{grpc_type=\"unary\",%s,grpc_code=\"InvalidArgument\"} 1",
             svc);
    cr_expect(has_line(page, want), "%s", want);
    snprintf(want, sizeof want, "grpc_server_handling_seconds_count{grpc_type=\"unary\",%s} 3", svc);
    cr_expect(has_line(page, want), "%s", want);
    snprintf(want, sizeof want, "grpc_server_handling_seconds_bucket{grpc_type=\"unary\",%s,le=\"+Inf\"} 3", svc);
    cr_expect(has_line(page, want), "%s", want);
    cr_expect(has_line(page, "# TYPE grpc_server_handling_seconds histogram"), "histogram type");
    cr_expect(has_line(page, "concert_redis_up 1"), "redis up");
    cr_expect(th_wait_for(memory_known, NULL, 50, 3000), "Redis memory per node (INFO memory) on the page");
    cr_expect(has_line(page, "concert_build_info{version=\"" CONCERT_VERSION "\"} 1"), "build info");
    cr_expect(strstr(page, "\nprocess_cpu_seconds_total "), "process cpu");
    cr_expect(strstr(page, "\nprocess_open_fds "), "process fds");
    /* Every family has HELP and TYPE (promtool checks HELP; count TYPE lines too). */
    int helps = 0, types = 0;
    for (const char *p = page; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (!strncmp(p, "# HELP ", 7)) helps++;
        if (!strncmp(p, "# TYPE ", 7)) types++;
    }
    cr_expect(helps > 10 && helps == types, "HELP %d, TYPE %d", helps, types);
    free(resp);
    cr_assert_eq(th_server_stop(&server), 0, "exit status");
}

static int queue_gauges(void *arg) {
    char *resp = http("GET", "/metrics");
    int ok = has_line(resp, "concert_queue_active{concert=\"met\"} 2") &&
             has_line(resp, "concert_queue_waiting{concert=\"met\"} 0") &&
             has_line(resp, "concert_queue_admitted_total{concert=\"met\"} 2");
    if (!ok && arg) snprintf(arg, 4096, "%s", resp);
    free(resp);
    return ok;
}

Test(server, queue_gauges_per_concert, .init = start, .fini = stop, .timeout = 60) {
    cr_assert_eq(th_admin_catalogue(cli, "mk", "met", "s1", 10, 100), GRPC_STATUS_OK);
    char tok[256];
    cr_assert_eq(th_active_token(cli, "q1", "met", tok, sizeof tok), 0);
    cr_assert_eq(th_active_token(cli, "q2", "met", tok, sizeof tok), 0);
    static char last[4096];
    cr_expect(th_wait_for(queue_gauges, last, 20, 5000), "queue gauges never showed 2 active:\n%s", last);
    cr_assert_eq(th_server_stop(&server), 0, "exit status");
}

Test(server, only_metrics_path_serves_metrics, .init = start, .fini = stop, .timeout = 60) {
    char *r = http("GET", "/healthz");
    cr_expect(!strncmp(r, "HTTP/1.1 404 ", 13), "%.200s", r);
    cr_expect(!strstr(r, "grpc_server_"), "a 404 carries no metrics");
    free(r);
    r = http("GET", "/");
    cr_expect(!strncmp(r, "HTTP/1.1 404 ", 13), "%.200s", r);
    free(r);
    r = http("POST", "/metrics");
    cr_expect(!strncmp(r, "HTTP/1.1 405 ", 13), "%.200s", r);
    free(r);
    r = http("GET", "/metrics?x=1");
    cr_expect(!strncmp(r, "HTTP/1.1 200 ", 13), "%.200s", r);
    free(r);
    cr_assert_eq(th_server_stop(&server), 0, "exit status");
}

Test(server, unusable_metrics_address_is_fatal, .timeout = 30) {
    memset(&redis, 0, sizeof redis);
    th_redis_start(&redis);
    char log[] = "/tmp/concert-metrics-bad-XXXXXX";
    int fd = mkstemp(log);
    close(fd);
    char *argv[] = {TH_SERVER_BIN, "--listen", "127.0.0.1:0", "--redis", redis.url, "--metrics", "nonsense", NULL};
    pid_t pid = th_spawn(argv, log);
    int st = 0;
    cr_assert(waitpid(pid, &st, 0) == pid);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) != 0, "exit status %d", st);
    FILE *fp = fopen(log, "r");
    char buf[2048] = "";
    size_t n = fp ? fread(buf, 1, sizeof buf - 1, fp) : 0;
    buf[n] = '\0';
    if (fp) fclose(fp);
    cr_expect(strstr(buf, "--metrics"), "one-line reason naming the flag: %s", buf);
    unlink(log);
    th_redis_stop(&redis);
}
