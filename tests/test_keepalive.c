/* Keepalive (issue 13): a client that stops answering (here SIGSTOPped, as a host that
 * vanished without a FIN) must not hold its WatchQueueStatus stream for ever. With
 * --keepalive-time-ms/--keepalive-timeout-ms the server's unanswered PING closes the
 * connection and the concert_watch_streams gauge goes back to 0.
 * To see the test fail without keepalive: TH_NO_KEEPALIVE=1 (runs the server with
 * --keepalive-time-ms 0). */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "th.h"

#define KEY "keepalive-admin-key"

static th_redis redis;
static th_server server;
static cc_client *cli;
static int metrics_port;
static pid_t child = -1;

static void start(void) {
    memset(&redis, 0, sizeof redis);
    th_redis_start(&redis);
    const char *ka = getenv("TH_NO_KEEPALIVE") ? "0" : "200";
    const char *base[] = {"--admin-key", KEY, "--metrics", "127.0.0.1:0", "--admit-rate", "0", NULL};
    const char *extra[] = {"--keepalive-time-ms", ka, "--keepalive-timeout-ms", "200", NULL};
    th_server_start_with(&server, redis.url, base, extra);
    cli = cc_client_open(server.addr);
    metrics_port = th_metrics_port(&server);
    cr_assert(metrics_port > 0, "no metrics port in %s", server.log);
}

static void stop(void) {
    if (child > 0) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        child = -1;
    }
    th_server_close(&server, &cli);
    th_redis_stop(&redis);
}

/* The concert_watch_streams gauge, or -1 if the page has none. */
static long watch_streams(void) {
    char *page = th_http(metrics_port, "GET", "/metrics");
    long v = -1;
    const char *p = page ? strstr(page, "\nconcert_watch_streams ") : NULL;
    if (p) v = strtol(p + strlen("\nconcert_watch_streams "), NULL, 10);
    free(page);
    return v;
}

static int streams_are(void *want) { return watch_streams() == (long)(intptr_t)want; }

Test(keepalive, stopped_client_stream_is_dropped, .init = start, .fini = stop, .timeout = 60) {
    cr_assert_eq(th_admin_concert(cli, KEY, "ka"), GRPC_STATUS_OK);
    Concert__V1__QueueStatus *qs = NULL;
    cr_assert_eq(th_issue(cli, "u-ka", "ka", &qs, NULL), GRPC_STATUS_OK);
    char token[256];
    snprintf(token, sizeof token, "%s", qs->token);
    th_free_msg(qs);
    cr_assert_eq(watch_streams(), 0, "no stream before the watcher");

    char log[128];
    snprintf(log, sizeof log, "/tmp/concert-test-keepalive-%d.log", (int)getpid());
    char *argv[] = {(char *)th_ctl_bin(), "--server", server.addr, "--token", token, "queue", "watch", NULL};
    child = th_spawn(argv, log);
    cr_assert(th_wait_for(streams_are, (void *)(intptr_t)1, 20, 10000), "the watch stream did not open (%s, gauge %ld)",
              log, watch_streams());

    /* Alive, the client answers the 200 ms PINGs: its stream stays through ten
     * keepalive rounds (a server that dropped live clients, e.g. by striking their
     * answers as abuse, fails here). Stopped, it answers nothing and the server must
     * drop it. */
    for (int i = 0; i < 20; i++) {
        usleep(100 * 1000);
        cr_assert_eq(watch_streams(), 1, "a live client's stream was dropped after %d ms", (i + 1) * 100);
        cr_assert_eq(waitpid(child, NULL, WNOHANG), 0, "the watching client exited after %d ms (%s)", (i + 1) * 100, log);
    }
    cr_assert_eq(kill(child, SIGSTOP), 0);
    cr_assert(th_wait_for(streams_are, (void *)(intptr_t)0, 50, 10000),
              "a stopped client's stream is still held 10 s later (gauge %ld)", watch_streams());
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    child = -1;
    unlink(log);
}
