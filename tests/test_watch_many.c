/* WatchQueueStatuses (issue 13): one bidi stream watching many tokens, against a real
 * redis-server and concert-server. Many tokens reach ACTIVE on one stream (and a
 * half-closed stream lives until they have), a removed token gets no more updates, a
 * bad token is answered in its own update while the stream goes on, the per-stream
 * token limit, malformed requests end the stream naming the field, and a cancelled
 * stream leaves nothing behind (concert_watch_streams and concert_watched_tokens back
 * to 0); a client that asks without reading is held back; watched tokens keep their
 * place while idle; a token added while Redis is down or hung gets its own
 * UNAVAILABLE update and the stream recovers when Redis returns; SIGTERM ends open
 * streams UNAVAILABLE and exits 0; concertctl queue watch with several tokens. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cc_pb.h"
#include "concert/v1/admin.pb-c.h"
#include "th.h"

#define KEY "watch-many-admin-key"
#define METHOD "/concert.v1.QueueService/WatchQueueStatuses"

static th_redis redis;
static th_server server;
static cc_client *cli;
static int metrics_port;

typedef Concert__V1__WatchQueueStatusesResponse update;

static void start_with(const char *const *extra) {
    memset(&redis, 0, sizeof redis);
    th_redis_start(&redis);
    static const char *const base[] = {"--admin-key", KEY, "--metrics", "127.0.0.1:0", "--watch-interval-ms", "100",
                                       "--admit-rate", "0", NULL};
    th_server_start_with(&server, redis.url, base, extra);
    cli = cc_client_open(server.addr);
    metrics_port = th_metrics_port(&server);
    cr_assert(metrics_port > 0, "no metrics port in %s", server.log);
    cr_assert_eq(th_admin_concert(cli, KEY, "wm"), GRPC_STATUS_OK);
}

static void start(void) { start_with(NULL); }

static void start_limit3(void) {
    static const char *const extra[] = {"--max-tokens-per-stream", "3", NULL};
    start_with(extra);
}

static void stop(void) {
    th_server_close(&server, &cli);
    th_redis_stop(&redis);
}

static void end_test(void) {
    int rc = th_server_close(&server, &cli);
    cr_assert_eq(rc, 0, "concert-server must exit 0 on SIGTERM (got %d, log %s)", rc, server.log);
}

/* A gauge of /metrics, or -1 if the page has none. */
static long gauge(const char *name) {
    char *page = th_http(metrics_port, "GET", "/metrics");
    char needle[96];
    snprintf(needle, sizeof needle, "\n%s ", name);
    const char *p = page ? strstr(page, needle) : NULL;
    long v = p ? strtol(p + strlen(needle), NULL, 10) : -1;
    free(page);
    return v;
}

typedef struct {
    long streams, tokens;
} gauges;

static int gauges_are(void *arg) {
    const gauges *g = arg;
    return gauge("concert_watch_streams") == g->streams && gauge("concert_watched_tokens") == g->tokens;
}

static void expect_gauges(long streams, long tokens) {
    gauges g = {streams, tokens};
    cr_assert(th_wait_for(gauges_are, &g, 20, 10000), "want %ld streams and %ld tokens, gauges say %ld and %ld",
              streams, tokens, gauge("concert_watch_streams"), gauge("concert_watched_tokens"));
}

static void issue(const char *user, char *token, size_t len) {
    Concert__V1__QueueStatus *s = NULL;
    cc_status st;
    cr_assert_eq(th_issue(cli, user, "wm", &s, &st), GRPC_STATUS_OK, "IssueToken %s: %s", user, st.message);
    snprintf(token, len, "%s", s->token);
    th_free_msg(s);
}

static void set_rate(int64_t rate) {
    cc_status st;
    cr_assert_eq(th_admin_admit_rate(cli, KEY, "wm", rate, &st), GRPC_STATUS_OK, "%s", st.message);
}

static void send_req(cc_stream *s, char **add, size_t n_add, char **rm, size_t n_rm) {
    Concert__V1__WatchQueueStatusesRequest req = CONCERT__V1__WATCH_QUEUE_STATUSES_REQUEST__INIT;
    req.add_tokens = add;
    req.n_add_tokens = n_add;
    req.remove_tokens = rm;
    req.n_remove_tokens = n_rm;
    cr_assert_eq(cc_stream_send(s, &req.base), 0, "the request was not sent");
}

/* The next update, or NULL at the end of the stream. */
static update *next_update(cc_stream *s) {
    update *u = NULL;
    int rc = cc_stream_next(s, &concert__v1__watch_queue_statuses_response__descriptor, (ProtobufCMessage **)&u);
    cr_assert(rc >= 0, "an update that does not decode");
    return rc == 1 ? u : NULL;
}

static int state_of(const update *u) { return u->status ? (int)u->status->state : 0; }

#define WAITING CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING

/* A stream (deadline in ms) watching `tok`, whose first update said WAITING. */
static cc_stream *open_watching(const char *tok, int deadline_ms) {
    cc_stream *s = cc_client_bidi(cli, METHOD, NULL, 0, deadline_ms);
    cr_assert(s);
    char *add[] = {(char *)tok};
    send_req(s, add, 1, NULL, 0);
    update *u = next_update(s);
    cr_assert(u, "no first update for %s", tok);
    cr_expect_str_eq(u->token, tok);
    cr_expect_eq(state_of(u), WAITING, "%s: state %d", tok, state_of(u));
    th_free_msg(u);
    return s;
}
#define ACTIVE CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE
#define EXPIRED CONCERT__V1__QUEUE_STATE__QUEUE_STATE_EXPIRED

static int index_of(char tokens[][128], int n, const char *token) {
    for (int i = 0; i < n; i++)
        if (!strcmp(tokens[i], token)) return i;
    return -1;
}

Test(watch_many, thirty_tokens_on_one_stream_reach_active_after_half_close, .init = start, .fini = stop,
     .timeout = 60) {
    enum { N = 30 };
    static char tokens[N][128];
    char *ptr[N];
    for (int i = 0; i < N; i++) {
        char u[32];
        snprintf(u, sizeof u, "many-%d", i);
        issue(u, tokens[i], sizeof tokens[i]);
        ptr[i] = tokens[i];
    }
    cc_stream *s = cc_client_bidi(cli, METHOD, NULL, 0, 30000);
    cr_assert(s);
    /* Two requests, one with a duplicate, then the client is done asking: the stream
     * must live on until every token has had its last update. */
    send_req(s, ptr, 20, NULL, 0);
    char *second[11];
    for (int i = 0; i < 10; i++) second[i] = ptr[20 + i];
    second[10] = ptr[0];
    send_req(s, second, 11, NULL, 0);
    cr_assert_eq(cc_stream_close_send(s), 0);

    int first[N], last[N], active[N], after_end[N], waiting_msgs = 0;
    int64_t last_pos[N];
    for (int i = 0; i < N; i++) first[i] = last[i] = active[i] = after_end[i] = 0, last_pos[i] = INT64_MAX;
    int firsts = 0;
    update *u;
    while ((u = next_update(s))) {
        int i = index_of(tokens, N, u->token);
        cr_assert(i >= 0, "an update for a token never added: %s", u->token);
        cr_assert_eq(u->error_code, 0, "token %d: error %d %s", i, u->error_code, u->error_message);
        cr_assert(u->status, "an update without a status");
        cr_expect_str_eq(u->status->token, tokens[i]);
        cr_expect_str_eq(u->status->concert_id, "wm");
        if (last[i] == ACTIVE || last[i] == EXPIRED) after_end[i]++;
        if (!first[i]) {
            first[i] = state_of(u);
            if (++firsts == N) set_rate(10); /* everyone is watched: admit them */
        }
        if (state_of(u) == WAITING) {
            cr_expect_lt(u->status->position, last_pos[i], "token %d: position %lld after %lld", i,
                         (long long)u->status->position, (long long)last_pos[i]);
            last_pos[i] = u->status->position;
            waiting_msgs++;
        }
        if (state_of(u) == ACTIVE) {
            active[i]++;
            cr_expect_gt(u->status->admission_receipt.len, 0, "token %d: ACTIVE without a receipt", i);
        }
        last[i] = state_of(u);
        th_free_msg(u);
    }
    cc_status fin;
    cc_stream_close(s, &fin);
    cr_expect_eq(fin.code, GRPC_STATUS_OK, "the stream ended %s %s", cc_status_name(fin.code), fin.message);
    int n_active = 0;
    for (int i = 0; i < N; i++) {
        cr_expect_eq(first[i], WAITING, "token %d: first update state %d", i, first[i]);
        cr_expect_eq(active[i], 1, "token %d: %d ACTIVE updates", i, active[i]);
        cr_expect_eq(after_end[i], 0, "token %d: %d updates after its last", i, after_end[i]);
        n_active += active[i] == 1;
    }
    cr_expect_eq(n_active, N, "%d of %d tokens reached ACTIVE", n_active, N);
    cr_expect_gt(waiting_msgs, N, "positions moved while waiting (%d WAITING updates)", waiting_msgs);
    expect_gauges(0, 0);
    end_test();
}

Test(watch_many, removed_token_gets_no_more_updates, .init = start, .fini = stop, .timeout = 60) {
    char a[128], b[128];
    issue("rm-a", a, sizeof a); /* first in line: admitted before b */
    issue("rm-b", b, sizeof b);
    cc_stream *s = cc_client_bidi(cli, METHOD, NULL, 0, 30000);
    cr_assert(s);
    char *add[] = {a, b};
    send_req(s, add, 2, NULL, 0);
    for (int k = 0; k < 2; k++) {
        update *u = next_update(s);
        cr_assert(u);
        cr_expect_eq(state_of(u), WAITING);
        th_free_msg(u);
    }
    expect_gauges(1, 2);
    /* Remove a; the unparsable token added in the same request is refused at once, and
     * removals come first: its answer proves the removal done. */
    char *rm[] = {a};
    char *bad[] = {"not-a-token"};
    send_req(s, bad, 1, rm, 1);
    update *u = next_update(s);
    cr_assert(u);
    cr_expect_str_eq(u->token, "not-a-token");
    cr_expect_eq(u->error_code, GRPC_STATUS_UNAUTHENTICATED, "error %d %s", u->error_code, u->error_message);
    th_free_msg(u);
    expect_gauges(1, 1);
    set_rate(50);
    int b_active = 0, about_a = 0;
    while (!b_active && (u = next_update(s))) {
        if (!strcmp(u->token, a)) about_a++;
        if (!strcmp(u->token, b) && state_of(u) == ACTIVE) b_active = 1;
        th_free_msg(u);
    }
    cr_expect(b_active, "b never reached ACTIVE");
    cr_expect_eq(about_a, 0, "%d updates for the removed token", about_a);
    cr_expect_eq(th_state(cli, a), ACTIVE, "a was admitted (before b) while not watched");
    /* Nothing watched, but the client has not half-closed: the stream stays. */
    expect_gauges(1, 0);
    cc_status fin;
    cc_stream_close(s, &fin);
    cr_expect_eq(fin.code, GRPC_STATUS_CANCELLED);
    expect_gauges(0, 0);
    end_test();
}

Test(watch_many, bad_tokens_are_answered_alone_and_malformed_requests_end_the_stream, .init = start, .fini = stop,
     .timeout = 60) {
    char good[128], gone[128], good2[128];
    issue("bad-good", good, sizeof good);
    issue("bad-gone", gone, sizeof gone);
    issue("bad-good2", good2, sizeof good2);
    cr_assert_eq(th_leave(cli, gone, NULL, NULL), GRPC_STATUS_OK);
    char forged[128], nosuch[128];
    /* The good token with another id; the same shape in a concert nobody created. */
    snprintf(forged, sizeof forged, "%.*s%s", (int)(strlen(good) - 32), good, "0123456789abcdef0123456789abcdef");
    snprintf(nosuch, sizeof nosuch, "v2.nosuch.1.%s", "0123456789abcdef0123456789abcdef");
    cc_stream *s = cc_client_bidi(cli, METHOD, NULL, 0, 30000);
    cr_assert(s);
    char *add[] = {"garbage", forged, nosuch, gone, good};
    send_req(s, add, 5, NULL, 0);
    int seen = 0;
    while (seen != 0x1f) {
        update *u = next_update(s);
        cr_assert(u, "the stream ended early (seen %#x)", seen);
        if (!strcmp(u->token, "garbage")) {
            cr_expect_eq(u->error_code, GRPC_STATUS_UNAUTHENTICATED, "garbage: %d %s", u->error_code, u->error_message);
            cr_expect(strstr(u->error_message, "token") != NULL, "%s", u->error_message);
            seen |= 1;
        } else if (!strcmp(u->token, forged)) {
            cr_expect_eq(u->error_code, GRPC_STATUS_UNAUTHENTICATED, "forged: %d %s", u->error_code, u->error_message);
            seen |= 2;
        } else if (!strcmp(u->token, nosuch)) {
            cr_expect_eq(u->error_code, GRPC_STATUS_NOT_FOUND, "nosuch: %d %s", u->error_code, u->error_message);
            cr_expect(strstr(u->error_message, "nosuch") != NULL, "%s", u->error_message);
            seen |= 4;
        } else if (!strcmp(u->token, gone)) {
            cr_expect_eq(u->error_code, 0);
            cr_expect_eq(state_of(u), EXPIRED, "a token that left: state %d", state_of(u));
            seen |= 8;
        } else if (!strcmp(u->token, good)) {
            cr_expect_eq(u->error_code, 0);
            cr_expect_eq(state_of(u), WAITING);
            seen |= 16;
        } else {
            cr_assert_fail("an update for %s", u->token);
        }
        th_free_msg(u);
    }
    expect_gauges(1, 1);
    /* The stream goes on: another token is watched. */
    char *add2[] = {good2};
    send_req(s, add2, 1, NULL, 0);
    update *u = next_update(s);
    cr_assert(u);
    cr_expect_str_eq(u->token, good2);
    cr_expect_eq(state_of(u), WAITING);
    th_free_msg(u);
    expect_gauges(1, 2);
    /* A malformed request (an empty token) ends the stream, naming the field. */
    char *empty[] = {good, ""};
    send_req(s, empty, 2, NULL, 0);
    cr_expect_null(next_update(s), "no update after a malformed request");
    cc_status fin;
    cc_stream_close(s, &fin);
    cr_expect_eq(fin.code, GRPC_STATUS_INVALID_ARGUMENT, "%s %s", cc_status_name(fin.code), fin.message);
    cr_expect(strstr(fin.message, "add_tokens[1]") != NULL, "message '%s' must name add_tokens[1]", fin.message);
    expect_gauges(0, 0);
    end_test();
}

Test(watch_many, token_limit_per_stream, .init = start_limit3, .fini = stop, .timeout = 60) {
    static char t[5][128];
    char *p[5];
    for (int i = 0; i < 5; i++) {
        char u[16];
        snprintf(u, sizeof u, "lim-%d", i);
        issue(u, t[i], sizeof t[i]);
        p[i] = t[i];
    }
    cc_stream *s = cc_client_bidi(cli, METHOD, NULL, 0, 30000);
    cr_assert(s);
    send_req(s, p, 3, NULL, 0);
    for (int k = 0; k < 3; k++) {
        update *u = next_update(s);
        cr_assert(u);
        cr_expect_eq(state_of(u), WAITING);
        th_free_msg(u);
    }
    /* A fourth: refused for that token only. */
    send_req(s, p + 3, 1, NULL, 0);
    update *u = next_update(s);
    cr_assert(u);
    cr_expect_str_eq(u->token, t[3]);
    cr_expect_eq(u->error_code, GRPC_STATUS_RESOURCE_EXHAUSTED, "%d %s", u->error_code, u->error_message);
    cr_expect(strstr(u->error_message, "add_tokens") && strstr(u->error_message, "--max-tokens-per-stream"), "%s",
              u->error_message);
    th_free_msg(u);
    expect_gauges(1, 3);
    /* Room again after a removal. */
    send_req(s, p + 3, 1, p, 1);
    u = next_update(s);
    cr_assert(u);
    cr_expect_str_eq(u->token, t[3]);
    cr_expect_eq(u->error_code, 0, "%d %s", u->error_code, u->error_message);
    cr_expect_eq(state_of(u), WAITING);
    th_free_msg(u);
    expect_gauges(1, 3);
    /* More tokens in one request than a stream may hold: the request is malformed. */
    char *four[] = {t[4], t[0], t[1], t[2]};
    send_req(s, four, 4, NULL, 0);
    cr_expect_null(next_update(s));
    cc_status fin;
    cc_stream_close(s, &fin);
    cr_expect_eq(fin.code, GRPC_STATUS_INVALID_ARGUMENT, "%s %s", cc_status_name(fin.code), fin.message);
    cr_expect(strstr(fin.message, "add_tokens: 4 tokens") != NULL, "%s", fin.message);
    expect_gauges(0, 0);
    end_test();
}

Test(watch_many, cancelled_streams_leave_nothing_behind, .init = start, .fini = stop, .timeout = 60) {
    enum { STREAMS = 3, PER = 10 };
    static char t[STREAMS * PER][128];
    for (int i = 0; i < STREAMS * PER; i++) {
        char u[16];
        snprintf(u, sizeof u, "cx-%d", i);
        issue(u, t[i], sizeof t[i]);
    }
    cc_stream *s[STREAMS];
    for (int k = 0; k < STREAMS; k++) {
        s[k] = cc_client_bidi(cli, METHOD, NULL, 0, 30000);
        cr_assert(s[k]);
        char *p[PER];
        for (int i = 0; i < PER; i++) p[i] = t[k * PER + i];
        send_req(s[k], p, PER, NULL, 0);
        for (int i = 0; i < PER; i++) {
            update *u = next_update(s[k]);
            cr_assert(u);
            cr_expect_eq(state_of(u), WAITING);
            th_free_msg(u);
        }
    }
    expect_gauges(STREAMS, STREAMS * PER);
    /* One WatchQueueStatus besides: both gauges count it. */
    Concert__V1__WatchQueueStatusRequest one = CONCERT__V1__WATCH_QUEUE_STATUS_REQUEST__INIT;
    one.token = t[0];
    cc_stream *single = cc_client_stream(cli, "/concert.v1.QueueService/WatchQueueStatus", &one.base, NULL, 0, 30000);
    cr_assert(single);
    Concert__V1__QueueStatus *m = NULL;
    cr_assert_eq(cc_stream_next(single, &concert__v1__queue_status__descriptor, (ProtobufCMessage **)&m), 1);
    th_free_msg(m);
    expect_gauges(STREAMS + 1, STREAMS * PER + 1);
    for (int k = 0; k < STREAMS; k++) {
        cc_status fin;
        cc_stream_close(s[k], &fin);
        cr_expect_eq(fin.code, GRPC_STATUS_CANCELLED);
    }
    expect_gauges(1, 1);
    cc_stream_close(single, NULL);
    expect_gauges(0, 0);
    /* The tokens are still waiting (nothing was given up). */
    cr_expect_eq(th_state(cli, t[5]), WAITING);
    end_test();
}

/* The end of the two Redis-outage tests: the client half-closes, admission starts, and
 * `a` (watched through the `what`) and `b` (added again after it) each reach ACTIVE
 * exactly once, with no error, and the stream ends OK. */
static void both_reach_active(cc_stream *s, const char *a, const char *b, const char *what) {
    cr_assert_eq(cc_stream_close_send(s), 0);
    set_rate(50);
    int active_a = 0, active_b = 0;
    update *u;
    while ((u = next_update(s))) {
        cr_expect_eq(u->error_code, 0, "%s: error %d '%s'", u->token, u->error_code, u->error_message);
        if (state_of(u) == ACTIVE) active_a += !strcmp(u->token, a), active_b += !strcmp(u->token, b);
        th_free_msg(u);
    }
    cc_status fin;
    cc_stream_close(s, &fin);
    cr_expect_eq(fin.code, GRPC_STATUS_OK, "the stream ended %s %s", cc_status_name(fin.code), fin.message);
    cr_expect_eq(active_a, 1, "the token watched through the %s: %d ACTIVE updates", what, active_a);
    cr_expect_eq(active_b, 1, "the token added again: %d ACTIVE updates", active_b);
    expect_gauges(0, 0);
    end_test();
}

static int redis_is(void *want) { return gauge("concert_redis_up") == (long)(intptr_t)want; }

/* Redis down while a stream is open: a token added meanwhile cannot be proved, so it
 * gets its own UNAVAILABLE update and leaves the stream; the stream and its tokens
 * already watched stay (their refreshes fail quietly). Redis comes back with its data
 * (SAVE before the kill, the same port and folder after): the watched token is
 * refreshed again and reaches ACTIVE, the refused one can be added again, and the
 * half-closed stream ends OK once both are done. Deterministic: the token is added
 * only once the server's concert_redis_up says no connection is up, and Redis is
 * dead (connection refused), not slow. */
Test(watch_many, redis_down_is_a_per_token_error_and_the_stream_recovers, .init = start, .fini = stop,
     .timeout = 60) {
    char a[128], b[128];
    issue("down-a", a, sizeof a);
    issue("down-b", b, sizeof b);
    cc_stream *s = open_watching(a, 40000);
    update *u;
    expect_gauges(1, 1);

    redisContext *rc = th_redis_connect(&redis);
    cr_assert(rc);
    redisReply *r = redisCommand(rc, "SAVE");
    cr_assert(r && r->type == REDIS_REPLY_STATUS, "SAVE failed");
    freeReplyObject(r);
    redisFree(rc);
    th_redis_kill(&redis);
    cr_assert(th_wait_for(redis_is, (void *)(intptr_t)0, 20, 10000), "concert_redis_up still says 1 after the kill");

    char *add_b[] = {b};
    send_req(s, add_b, 1, NULL, 0);
    u = next_update(s);
    cr_assert(u, "the stream ended instead of refusing the token alone");
    cr_expect_str_eq(u->token, b, "the first update after the outage is for %s", u->token);
    cr_expect_eq(u->error_code, GRPC_STATUS_UNAVAILABLE, "error %d '%s'", u->error_code, u->error_message);
    cr_expect_str_eq(u->error_message, "redis unavailable");
    cr_expect_null(u->status, "a refused token has no status");
    th_free_msg(u);
    expect_gauges(1, 1); /* a is still watched, b is not */

    th_redis_start(&redis); /* same port and folder: loads the dump */
    cr_assert(th_wait_for(redis_is, (void *)(intptr_t)1, 20, 10000), "the server did not reconnect within 10 s");
    send_req(s, add_b, 1, NULL, 0);
    u = next_update(s);
    cr_assert(u);
    cr_expect_str_eq(u->token, b);
    cr_expect_eq(u->error_code, 0, "after the outage: error %d '%s'", u->error_code, u->error_message);
    cr_expect_eq(state_of(u), WAITING);
    th_free_msg(u);
    expect_gauges(1, 2);

    both_reach_active(s, a, b, "outage");
}

static void start_timeout(void) {
    static const char *const extra[] = {"--redis-timeout-ms", "1500", NULL};
    start_with(extra);
}

/* The next update about `token`, skipping updates about others; NULL at the end. */
static update *next_about(cc_stream *s, const char *token) {
    update *u;
    while ((u = next_update(s)) && strcmp(u->token, token)) th_free_msg(u);
    return u;
}

/* Redis hung (SIGSTOP) while a stream is open: a token added meanwhile is sent, and its
 * first status times out (--redis-timeout-ms 1500), so its own update says so; the
 * stream goes on, and once Redis resumes the token can be added again and both reach
 * ACTIVE. The other path to the same per-token error as the test above: there the
 * command could not be sent at all. */
Test(watch_many, hung_redis_times_out_one_token_and_the_stream_goes_on, .init = start_timeout, .fini = stop,
     .timeout = 60) {
    char a[128], b[128];
    issue("hung-a", a, sizeof a);
    issue("hung-b", b, sizeof b);
    cc_stream *s = open_watching(a, 40000);
    char *add_b[] = {b};
    update *u;

    kill(redis.pid, SIGSTOP);
    uint64_t t0 = th_now_ms();
    send_req(s, add_b, 1, NULL, 0);
    u = next_about(s, b);
    uint64_t took = th_now_ms() - t0;
    cr_assert(u, "the stream ended instead of refusing the token alone");
    cr_expect_eq(u->error_code, GRPC_STATUS_UNAVAILABLE, "error %d '%s'", u->error_code, u->error_message);
    cr_expect_str_eq(u->error_message, "redis unavailable: timeout");
    cr_expect_null(u->status);
    cr_expect_lt(took, 4000, "the per-token error came %llu ms after the add (timeout 1500 ms)",
                 (unsigned long long)took);
    th_free_msg(u);
    expect_gauges(1, 1);

    kill(redis.pid, SIGCONT);
    /* Connections dropped during the pause come back with backoff: add b until it is
     * answered with a status (bounded by the loop and the stream's deadline). */
    int added = 0;
    for (int i = 0; i < 50 && !added; i++) {
        send_req(s, add_b, 1, NULL, 0);
        u = next_about(s, b);
        cr_assert(u);
        added = u->error_code == 0 && state_of(u) == WAITING;
        cr_assert(added || u->error_code == GRPC_STATUS_UNAVAILABLE, "after the pause: %d '%s'", u->error_code,
                  u->error_message);
        th_free_msg(u);
        if (!added) th_pause_ms(100);
    }
    cr_assert(added, "b could not be added within 5 s of Redis resuming");
    expect_gauges(1, 2);
    both_reach_active(s, a, b, "pause");
}

/* The exit status of `concertctl --server ADDR queue watch TOKEN...` (its output in log). */
static int ctl_watch(char **tokens, int n, const char *log) {
    char *argv[16] = {(char *)th_ctl_bin(), "--server", server.addr, "--timeout-ms", "20000", "queue", "watch"};
    int k = 7;
    for (int i = 0; i < n && k < 15; i++) argv[k++] = tokens[i];
    argv[k] = NULL;
    unlink(log);
    pid_t pid = th_spawn(argv, log);
    cr_assert(pid > 0);
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int count_in_file(const char *path, const char *needle) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, needle)) n++;
    fclose(f);
    return n;
}

Test(watch_many, concertctl_watches_several_tokens_on_one_stream, .init = start, .fini = stop, .timeout = 60) {
    static char t[3][128];
    char *p[4];
    for (int i = 0; i < 3; i++) {
        char u[16];
        snprintf(u, sizeof u, "ctl-%d", i);
        issue(u, t[i], sizeof t[i]);
        p[i] = t[i];
    }
    set_rate(50);
    char log[128];
    snprintf(log, sizeof log, "/tmp/concert-test-watch-many-%d.log", (int)getpid());
    int rc = ctl_watch(p, 3, log);
    cr_expect_eq(rc, 0, "concertctl exited %d (%s)", rc, log);
    cr_expect_eq(count_in_file(log, " ACTIVE"), 3, "one ACTIVE line per token (%s)", log);
    /* A refused token is reported with its code; the good one still ends ACTIVE. */
    char other[128];
    issue("ctl-other", other, sizeof other);
    char *q[] = {other, "v2.nosuch.1.0123456789abcdef0123456789abcdef"};
    rc = ctl_watch(q, 2, log);
    cr_expect_eq(rc, GRPC_STATUS_NOT_FOUND, "concertctl exited %d (%s)", rc, log);
    cr_expect_eq(count_in_file(log, " ACTIVE"), 1, "the good token still ends ACTIVE (%s)", log);
    cr_expect_geq(count_in_file(log, "NOT_FOUND"), 1, "the refused token is printed with its code (%s)", log);
    unlink(log);
    end_test();
}

static void start_idle(void) {
    static const char *const extra[] = {"--idle-timeout-ms", "600", NULL};
    start_with(extra);
}

/* Whether `user` no longer waits in wm (q:users holds a join number while waiting,
 * the token once it ended): read from Redis, since asking the API would refresh it. */
static int user_gone(void *user) {
    redisContext *rc = th_redis_connect(&redis);
    if (!rc) return 0;
    redisReply *r = redisCommand(rc, "HGET cc:{wm}:q:users %s", (const char *)user);
    int gone = r && r->type == REDIS_REPLY_STRING && !strncmp(r->str, "v2.", 3);
    freeReplyObject(r);
    redisFree(rc);
    return gone;
}

Test(watch_many, watched_tokens_keep_their_place_while_idle, .init = start_idle, .fini = stop, .timeout = 60) {
    char quiet[128], watched[128];
    issue("idle-quiet", quiet, sizeof quiet);
    issue("idle-watched", watched, sizeof watched);
    cc_stream *s = open_watching(watched, 30000);
    cr_assert(th_wait_for(user_gone, "idle-quiet", 50, 10000), "the quiet user still waits after 10 s (600 ms idle)");
    cr_expect(!user_gone("idle-watched"), "the watched user lost its place with the quiet one");
    /* No longer watched: it idles out too. */
    char *rm[] = {watched};
    send_req(s, NULL, 0, rm, 1);
    cr_expect(th_wait_for(user_gone, "idle-watched", 50, 10000), "the removed user still waits after 10 s");
    cc_stream_close(s, NULL);
    end_test();
}

/* A client that keeps asking and never reads: each request of 100 junk tokens earns
 * 100 refusals, more than a stream may have unsent, so the server waits for them to
 * drain before it reads the next request (logged as watch_stream_paused) instead of
 * queueing refusals without bound. The client, sending 2,000 such requests and reading
 * nothing, gets as far as flow control lets it; the stream is cleaned up after its
 * deadline and the server serves on. */
Test(watch_many, client_that_never_reads_is_held_back, .init = start, .fini = stop, .timeout = 90) {
    enum { N = 2000, PER = 100 };
    static char junk[PER][257];
    static char *add[PER];
    for (int i = 0; i < PER; i++) {
        memset(junk[i], 'a', 256);
        int l = snprintf(junk[i], 16, "junk-%d-", i);
        junk[i][l] = 'a';
        junk[i][256] = '\0';
        add[i] = junk[i];
    }
    Concert__V1__WatchQueueStatusesRequest req = CONCERT__V1__WATCH_QUEUE_STATUSES_REQUEST__INIT;
    req.add_tokens = add;
    req.n_add_tokens = PER;
    grpc_byte_buffer *one = cc_pb_pack(&req.base);
    static grpc_byte_buffer *msgs[N];
    for (int i = 0; i < N; i++) msgs[i] = grpc_byte_buffer_copy(one); /* gRPC takes a sent buffer's slices */
    th_raw *t = th_raw_open(server.addr);
    cc_status st;
    th_raw_bidi(t, METHOD, msgs, N, NULL, 0, 5000, &st);
    th_raw_close(t);
    for (int i = 0; i < N; i++) grpc_byte_buffer_destroy(msgs[i]);
    grpc_byte_buffer_destroy(one);
    cr_expect(th_server_log_has(&server, "event=watch_stream_paused"), "the server never paused the stream (%s)",
              server.log);
    expect_gauges(0, 0);
    /* The server still serves streams. */
    char tok[128];
    issue("after-flood", tok, sizeof tok);
    cc_stream *s = cc_client_bidi(cli, METHOD, NULL, 0, 10000);
    char *one_tok[] = {tok};
    send_req(s, one_tok, 1, NULL, 0);
    update *u = next_update(s);
    cr_assert(u);
    cr_expect_eq(state_of(u), WAITING);
    th_free_msg(u);
    cc_stream_close(s, NULL);
    end_test();
}

/* SIGTERM with a stream open (tokens proved, one still being proved): the stream ends
 * UNAVAILABLE and the server exits 0 with nothing leaked (LeakSanitizer would change
 * the exit status). */
Test(watch_many, shutdown_ends_open_streams, .init = start, .fini = stop, .timeout = 60) {
    char a[128], b[128];
    issue("sd-a", a, sizeof a);
    issue("sd-b", b, sizeof b);
    cc_client *own = cc_client_open(server.addr);
    cc_stream *s = cc_client_bidi(own, METHOD, NULL, 0, 30000);
    cr_assert(s);
    char *add[] = {a, b};
    send_req(s, add, 2, NULL, 0);
    for (int k = 0; k < 2; k++) {
        update *u = next_update(s);
        cr_assert(u);
        th_free_msg(u);
    }
    char c[128];
    issue("sd-c", c, sizeof c);
    char *add2[] = {c};
    send_req(s, add2, 1, NULL, 0);
    int rc = th_server_stop(&server);
    cr_expect_eq(rc, 0, "concert-server exited %d with a stream open (log %s)", rc, server.log);
    update *u;
    while ((u = next_update(s))) th_free_msg(u);
    cc_status fin;
    cc_stream_close(s, &fin);
    cr_expect_eq(fin.code, GRPC_STATUS_UNAVAILABLE, "%s %s", cc_status_name(fin.code), fin.message);
    cc_client_close(own);
}
