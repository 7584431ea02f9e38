/* QueueService against a real redis-server and concert-server over gRPC:
 * concurrent joins, idempotency, admission to ACTIVE and its expiry, leaving, idle
 * abandonment, watch streams and bad input. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "th.h"

static th_redis redis;
static th_server server;
static cc_client *cli;

#define KEY "queue-admin-key"

/* Every concert these tests queue for: a queue exists only for a concert an admin
 * created. */
static const char *const concerts[] = {"big", "c-one", "c-two", "lv",   "ttl",  "idle", "watch", "wx",
                                       "cw",  "c1",    "c2",    "many", "held", "mc",   "mc2",   NULL};

static void start(const char *const *flags) {
    memset(&redis, 0, sizeof redis);
    th_redis_start(&redis);
    static const char *const base[] = {"--admin-key", KEY, NULL};
    th_server_start_with(&server, redis.url, base, flags);
    cli = cc_client_open(server.addr);
    for (int i = 0; concerts[i]; i++)
        cr_assert_eq(th_admin_concert(cli, KEY, concerts[i]), GRPC_STATUS_OK, "create concert %s", concerts[i]);
}

/* Teardown (Criterion ignores assertions here, so it only cleans up). */
static void stop(void) {
    th_server_close(&server, &cli);
    th_redis_stop(&redis);
}

/* The last step of every test: a clean SIGTERM exit, with no sanitizer report. */
static void end_test(void) {
    int rc = th_server_close(&server, &cli);
    cr_assert_eq(rc, 0, "concert-server must exit 0 on SIGTERM (got %d, log %s)", rc, server.log);
}

#define Q_METHOD "/concert.v1.QueueService/IssueToken"

static void free_status(Concert__V1__QueueStatus *s) {
    if (s) protobuf_c_message_free_unpacked(&s->base, NULL);
}

/* The armed requests per method of a stopped server, from its grpc_loop_stats line:
 * every method's in all (*slots) and the most of one method (*most); 0 if the line is
 * missing. */
static int loop_slots(const th_server *s, int *slots, int *most) {
    FILE *f = fopen(s->log, "r");
    if (!f) return 0;
    char line[1024];
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "event=grpc_loop_stats");
        if (p && (p = strstr(p, " slots=")) && sscanf(p, " slots=%d most_slots=%d", slots, most) == 2) found = 1;
    }
    fclose(f);
    return found;
}

/* Stream calls' completions by the queue they came on, from a stopped server's
 * grpc_loop_stats line: the streams' queue (*streams_q) and the calls' queue that also
 * carries every unary call (*calls_q); 0 if the line or its fields are missing. */
static int loop_stream_events(const th_server *s, long long *streams_q, long long *calls_q) {
    FILE *f = fopen(s->log, "r");
    if (!f) return 0;
    char line[1024];
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "event=grpc_loop_stats");
        if (p && (p = strstr(p, " stream_events_streams_q=")) &&
            sscanf(p, " stream_events_streams_q=%lld stream_events_calls_q=%lld", streams_q, calls_q) == 2)
            found = 1;
    }
    fclose(f);
    return found;
}

/* ---- concurrency and idempotency ---- */

static const char *const paused[] = {"--admit-rate", "0", NULL};

static void start_paused(void) { start(paused); }

Test(queue, thousand_concurrent_joins, .init = start_paused, .fini = stop) {
    enum { N = 1000 };
    char users[N][16];
    static char tokens[N][128];
    int seen_pos[N + 1] = {0};
    for (int round = 0; round < 2; round++) {
        cc_batch *b = cc_batch_new(cli);
        for (int i = 0; i < N; i++) {
            snprintf(users[i], sizeof users[i], "user-%d", i);
            Concert__V1__IssueTokenRequest req = CONCERT__V1__ISSUE_TOKEN_REQUEST__INIT;
            req.user_id = users[i];
            req.concert_id = "big";
            cc_batch_add(b, Q_METHOD, &req.base, NULL, 0, 20000);
        }
        cc_batch_wait(b);
        for (int i = 0; i < N; i++) {
            Concert__V1__QueueStatus *s = NULL;
            cc_status st;
            cr_assert_eq(cc_batch_result(b, i, &concert__v1__queue_status__descriptor, (ProtobufCMessage **)&s, &st),
                         GRPC_STATUS_OK, "call %d: %s %s", i, cc_status_name(st.code), st.message);
            cr_assert_eq(s->state, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING);
            cr_assert(s->position >= 1 && s->position <= N, "position %lld out of range", (long long)s->position);
            if (round == 0) {
                cr_assert_eq(seen_pos[s->position], 0, "position %lld given twice", (long long)s->position);
                seen_pos[s->position] = i + 1;
                snprintf(tokens[i], sizeof tokens[i], "%s", s->token);
            } else {
                cr_assert_str_eq(s->token, tokens[i], "asking again must return the same token");
                cr_assert_eq(seen_pos[s->position], i + 1, "asking again must return the same place");
            }
            free_status(s);
        }
        cc_batch_free(b);
    }
    for (int p = 1; p <= N; p++) cr_assert(seen_pos[p], "position %d missing: a gap", p);
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++) cr_assert_str_neq(tokens[i], tokens[j], "tokens must be distinct");
    /* Later joiners queue behind: strictly increasing. */
    Concert__V1__QueueStatus *s = NULL;
    cr_assert_eq(th_issue(cli, "late", "big", &s, NULL), GRPC_STATUS_OK);
    cr_expect_eq(s->position, N + 1);
    free_status(s);
    int keep = getenv("TH_KEEP_LOGS") != NULL;
    setenv("TH_KEEP_LOGS", "1", 1); /* read below (a test runs in a process of its own) */
    end_test();
    if (!keep) unsetenv("TH_KEEP_LOGS");
    /* Each method starts with 2 armed requests; IssueToken, 1,000 at once, got more (up
     * to --requests-per-method, 64), the idle methods none (srv_rpc note_taken). */
    int slots = 0, most = 0;
    int found = loop_slots(&server, &slots, &most);
    cr_assert(found, "no grpc_loop_stats slots in %s", server.log);
    if (!keep) unlink(server.log);
    cr_expect(most > 2 && most <= 64, "the busiest method should have grown from 2 up to 64 slots, has %d", most);
    cr_expect(slots <= most + 2 * 40, "idle methods should keep 2 slots each: %d in all, %d for the busiest", slots,
              most);
}

Test(queue, same_user_other_concert_gets_another_token, .init = start_paused, .fini = stop) {
    Concert__V1__QueueStatus *a = NULL, *b = NULL;
    cr_assert_eq(th_issue(cli, "u1", "c-one", &a, NULL), GRPC_STATUS_OK);
    cr_assert_eq(th_issue(cli, "u1", "c-two", &b, NULL), GRPC_STATUS_OK);
    cr_expect_str_neq(a->token, b->token);
    cr_expect_str_eq(a->concert_id, "c-one");
    cr_expect_str_eq(b->concert_id, "c-two");
    cr_expect_eq(a->estimated_wait_seconds, -1, "admission paused: unknown wait");
    free_status(a);
    free_status(b);
    end_test();
}

/* ---- an idle server wakes for Redis at once ---- */

/* Every timer of the server at its slowest: the loop then has nothing of its own to do
 * for up to ~1 s at a time (the fixed 1 s timers), and one thread waits in gRPC core
 * meanwhile. A Redis reply arriving then must wake it at once (srv_rpc.c's waker and
 * doorbell), not at the next timer: each of 20 calls one after the other, each needing
 * Redis, has 400 ms. Without the doorbell a reply waits for the next 1 s tick, so most
 * calls would pass their deadline. */
static const char *const slow_timers[] = {"--admit-rate", "0", "--admit-interval-ms", "10000",
                                          "--sweep-interval-ms", "10000", "--watch-interval-ms", "60000",
                                          "--adapt-interval-ms", "60000", NULL};
static void start_slow_timers(void) { start(slow_timers); }

Test(queue, idle_server_answers_redis_calls_at_once, .init = start_slow_timers, .fini = stop) {
    Concert__V1__QueueStatus *s = NULL;
    cr_assert_eq(th_issue(cli, "idle-waker", "c-one", &s, NULL), GRPC_STATUS_OK);
    char token[128];
    snprintf(token, sizeof token, "%s", s->token);
    free_status(s);
    for (int i = 0; i < 20; i++) {
        Concert__V1__GetQueueStatusRequest req = CONCERT__V1__GET_QUEUE_STATUS_REQUEST__INIT;
        req.token = token;
        Concert__V1__QueueStatus *st = NULL;
        cc_status cs;
        grpc_status_code c = cc_client_unary(cli, "/concert.v1.QueueService/GetQueueStatus", &req.base,
                                             &concert__v1__queue_status__descriptor, (ProtobufCMessage **)&st,
                                             NULL, 0, 400, &cs);
        cr_assert_eq(c, GRPC_STATUS_OK, "call %d: %s %s (a Redis reply waited for a timer?)", i, cc_status_name(c),
                     cs.message);
        cr_expect_eq(st->state, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING);
        free_status(st);
    }
    end_test();
}

/* ---- leaving ---- */

Test(queue, leave_then_rejoin, .init = start_paused, .fini = stop) {
    Concert__V1__QueueStatus *a = NULL, *b = NULL, *a2 = NULL;
    cr_assert_eq(th_issue(cli, "first", "lv", &a, NULL), GRPC_STATUS_OK);
    cr_assert_eq(th_issue(cli, "second", "lv", &b, NULL), GRPC_STATUS_OK);
    cr_expect_eq(b->position, 2);
    int prev = -1;
    cr_assert_eq(th_leave(cli, a->token, &prev, NULL), GRPC_STATUS_OK);
    cr_expect_eq(prev, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING);
    cr_expect_eq(th_state(cli, a->token), CONCERT__V1__QUEUE_STATE__QUEUE_STATE_EXPIRED);
    Concert__V1__QueueStatus *bs = NULL;
    cr_assert_eq(th_status(cli, b->token, &bs, NULL), GRPC_STATUS_OK);
    cr_expect_eq(bs->position, 1, "the one behind moves up");
    cr_assert_eq(th_leave(cli, a->token, &prev, NULL), GRPC_STATUS_OK, "leaving twice is harmless");
    cr_expect_eq(prev, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_EXPIRED);
    cr_assert_eq(th_issue(cli, "first", "lv", &a2, NULL), GRPC_STATUS_OK);
    cr_expect_str_neq(a2->token, a->token, "after leaving, joining again is a new token");
    cr_expect_eq(a2->position, 2, "at the back of the line");
    free_status(a);
    free_status(b);
    free_status(bs);
    free_status(a2);
    end_test();
}

/* ---- admission, expiry, idle ---- */

static const char *const fast_ttl[] = {"--admit-rate", "50", "--active-ttl-ms", "1000", NULL};
static void start_fast_ttl(void) { start(fast_ttl); }

typedef struct {
    const char *token;
    int want;
} state_wait;

static int has_state(void *arg) {
    state_wait *w = arg;
    return th_state(cli, w->token) == w->want;
}

Test(queue, admitted_then_active_ttl_expires, .init = start_fast_ttl, .fini = stop) {
    Concert__V1__QueueStatus *a = NULL;
    cr_assert_eq(th_issue(cli, "ttl-user", "ttl", &a, NULL), GRPC_STATUS_OK);
    state_wait w = {a->token, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE};
    cr_assert(th_wait_for(has_state, &w, 20, 5000), "not admitted within 5 s at 50/s");
    Concert__V1__QueueStatus *s = NULL;
    cr_assert_eq(th_status(cli, a->token, &s, NULL), GRPC_STATUS_OK);
    cr_expect_gt(s->expires_at_unix_ms, 0);
    uint64_t t0 = th_now_ms();
    w.want = CONCERT__V1__QUEUE_STATE__QUEUE_STATE_EXPIRED;
    cr_assert(th_wait_for(has_state, &w, 20, 5000), "ACTIVE token did not expire");
    uint64_t waited = th_now_ms() - t0;
    cr_expect_leq(waited, 1500, "expired %llu ms after we saw it ACTIVE; the TTL is 1000 ms",
                  (unsigned long long)waited);
    /* Re-joining after expiry is a fresh place in line. */
    Concert__V1__QueueStatus *b = NULL;
    cr_assert_eq(th_issue(cli, "ttl-user", "ttl", &b, NULL), GRPC_STATUS_OK);
    cr_expect_str_neq(b->token, a->token);
    free_status(a);
    free_status(b);
    free_status(s);
    end_test();
}

static const char *const idle_flags[] = {"--admit-rate", "0", "--idle-timeout-ms", "600", NULL};
static void start_idle(void) { start(idle_flags); }

Test(queue, idle_waiting_users_lose_their_place, .init = start_idle, .fini = stop) {
    Concert__V1__QueueStatus *quiet = NULL, *asking = NULL;
    cr_assert_eq(th_issue(cli, "quiet", "idle", &quiet, NULL), GRPC_STATUS_OK);
    cr_assert_eq(th_issue(cli, "asking", "idle", &asking, NULL), GRPC_STATUS_OK);
    cr_expect_eq(asking->position, 2);
    /* Keep asking for one of them; leave the other alone. */
    uint64_t end = th_now_ms() + 5000;
    int gone = 0;
    while (th_now_ms() < end) {
        cr_assert_eq(th_state(cli, asking->token), CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING,
                     "a user who keeps asking must keep waiting");
        /* Peek at the quiet one through Redis, not the API (asking would refresh it). */
        redisContext *rc = th_redis_connect(&redis);
        /* While waiting, q:users holds the user's join number; once it ended, its token. */
        redisReply *r = redisCommand(rc, "HGET cc:{idle}:q:users quiet");
        gone = r && r->type == REDIS_REPLY_STRING && !strncmp(r->str, "v2.", 3);
        freeReplyObject(r);
        redisFree(rc);
        if (gone) break;
        th_pause_ms(100);
    }
    cr_assert(gone, "the quiet user still waits after 5 s with a 600 ms idle timeout");
    cr_expect_eq(th_state(cli, quiet->token), CONCERT__V1__QUEUE_STATE__QUEUE_STATE_EXPIRED);
    Concert__V1__QueueStatus *s = NULL;
    cr_assert_eq(th_status(cli, asking->token, &s, NULL), GRPC_STATUS_OK);
    cr_expect_eq(s->position, 1, "the asking user moved up");
    free_status(quiet);
    free_status(asking);
    free_status(s);
    end_test();
}

/* ---- the idle-bit mirror (GetQueueStatus' fast path skips GETBIT for a user this
 * server already saw set this epoch; srv_queue.c seen_mirror) ---- */

/* Redis' count of `cmd` calls so far (INFO commandstats; commands from scripts too). */
static long long cmd_calls(const char *cmd) {
    redisContext *rc = th_redis_connect(&redis);
    redisReply *r = redisCommand(rc, "INFO commandstats");
    long long n = -1;
    char want[64];
    snprintf(want, sizeof want, "cmdstat_%s:calls=", cmd);
    if (r && r->type == REDIS_REPLY_STRING) {
        const char *p = strstr(r->str, want);
        n = p ? atoll(p + strlen(want)) : 0;
    }
    freeReplyObject(r);
    redisFree(rc);
    return n;
}

static int user_ended(const char *concert, const char *user) {
    redisContext *rc = th_redis_connect(&redis);
    /* While waiting, q:users holds the user's join number; once it ended, its token. */
    redisReply *r = redisCommand(rc, "HGET cc:{%s}:q:users %s", concert, user);
    int gone = r && r->type == REDIS_REPLY_STRING && !strncmp(r->str, "v2.", 3);
    freeReplyObject(r);
    redisFree(rc);
    return gone;
}

static const char *const mirror_flags[] = {"--admit-rate", "0", "--idle-timeout-ms", "1200", "--rate-user", "0", NULL};
static void start_mirror(void) { start(mirror_flags); }

/* Redis' clock (ms). */
static long long redis_ms(redisContext *rc) {
    redisReply *r = redisCommand(rc, "TIME");
    long long t = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2
                      ? atoll(r->element[0]->str) * 1000 + atoll(r->element[1]->str) / 1000
                      : 0;
    freeReplyObject(r);
    return t;
}

/* Idle epochs of 600 ms: a user polled only through this server, and only in the
 * second half of each epoch by Redis' clock (so never where the mirror is not used),
 * for 4.5 s (7 epochs) keeps waiting: the mirror started over every epoch, or its
 * skipped SETBITs would leave the user without a bit and the sweep would drop it.
 * The silent one is dropped, and fewer GETBITs than polls reach Redis. */
Test(queue, idle_mirror_keeps_pollers_and_skips_getbit, .init = start_mirror, .fini = stop) {
    Concert__V1__QueueStatus *quiet = NULL, *asking = NULL;
    cr_assert_eq(th_issue(cli, "quiet", "idle", &quiet, NULL), GRPC_STATUS_OK);
    cr_assert_eq(th_issue(cli, "asking", "idle", &asking, NULL), GRPC_STATUS_OK);
    redisContext *rc = th_redis_connect(&redis);
    long long g0 = cmd_calls("getbit");
    uint64_t end = th_now_ms() + 4500;
    int polls = 0, gone = 0;
    while (th_now_ms() < end) {
        if (redis_ms(rc) % 600 < 320) { /* the first half (and some): wait for the second */
            th_pause_ms(10);
            continue;
        }
        cr_assert_eq(th_state(cli, asking->token), CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING,
                     "poll %d: a user who keeps asking must keep waiting", polls);
        polls++;
        if (!gone) gone = user_ended("idle", "quiet");
        th_pause_ms(40);
    }
    redisFree(rc);
    long long getbits = cmd_calls("getbit") - g0;
    cr_assert(gone, "the quiet user still waits after 4.5 s with a 1200 ms idle timeout");
    cr_expect_eq(th_state(cli, quiet->token), CONCERT__V1__QUEUE_STATE__QUEUE_STATE_EXPIRED);
    /* Main: a GETBIT per poll, plus the sweep's for the quiet user. Here one per epoch
     * plus the sweep's (idle_mirror_forgets_on_reconnect counts them exactly). */
    cr_expect(getbits < polls, "%lld GETBITs for %d polls: the mirror should skip most", getbits, polls);
    cr_log_info("%lld GETBITs for %d polls", getbits, polls);
    free_status(quiet);
    free_status(asking);
    end_test();
}

typedef struct {
    const char *token;
    long long before;
} quiet_poll;

/* One poll that sent no GETBIT (the mirror knew the bit). */
static int poll_without_getbit(void *arg) {
    quiet_poll *q = arg;
    long long g = cmd_calls("getbit");
    int st = th_state(cli, q->token);
    return st == CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING && cmd_calls("getbit") == g;
}

static int poll_waiting(void *arg) {
    return th_state(cli, arg) == CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING;
}

typedef struct {
    long long clients;
} all_back;

static int clients_back(void *arg) {
    return th_redis_info_int(&redis, "connected_clients") >= ((all_back *)arg)->clients;
}

static const char *const mirror_long[] = {"--admit-rate", "0", "--idle-timeout-ms", "20000", "--rate-user", "0", NULL};
static void start_mirror_long(void) { start(mirror_long); }

/* The mirror is a copy of Redis' bits: after a reconnect (a Redis restart or
 * failover may have lost them) the server asks Redis again and sets the bit anew. */
Test(queue, idle_mirror_forgets_on_reconnect, .init = start_mirror_long, .fini = stop) {
    Concert__V1__QueueStatus *a = NULL;
    cr_assert_eq(th_issue(cli, "asking", "idle", &a, NULL), GRPC_STATUS_OK);
    quiet_poll q = {a->token, 0};
    cr_assert(th_wait_for(poll_without_getbit, &q, 20, 5000), "no poll went without GETBIT in 5 s");
    /* 40 repeated polls within one 10 s epoch: a GETBIT at most at an epoch start. */
    long long g0 = cmd_calls("getbit");
    for (int i = 0; i < 40; i++)
        cr_assert_eq(th_state(cli, a->token), CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING);
    long long getbits = cmd_calls("getbit") - g0;
    cr_expect_leq(getbits, 2, "%lld GETBITs for 40 polls", getbits);
    /* Lose the bits and every connection of the server. */
    redisContext *rc = th_redis_connect(&redis);
    long long clients = th_redis_info_int(&redis, "connected_clients");
    freeReplyObject(redisCommand(rc, "DEL cc:{idle}:q:seen:0:0 cc:{idle}:q:seen:1:0 cc:{idle}:q:seen:2:0"));
    freeReplyObject(redisCommand(rc, "CLIENT KILL TYPE normal SKIPME yes"));
    all_back b = {clients};
    cr_assert(th_wait_for(clients_back, &b, 20, 10000), "the server's connections did not come back");
    cr_assert(th_wait_for(poll_waiting, (void *)a->token, 20, 5000), "no answer after the reconnect");
    for (int i = 0; i < 5; i++)
        cr_assert_eq(th_state(cli, a->token), CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING);
    long long n = atoll(a->token + strlen("v2.idle."));
    int set = 0;
    for (int slot = 0; slot < 3; slot++) {
        redisReply *r = redisCommand(rc, "GETBIT cc:{idle}:q:seen:%d:0 %lld", slot, n);
        set |= r && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
        freeReplyObject(r);
    }
    cr_expect(set, "after a reconnect the polls must set the user's idle bit again (n=%lld)", n);
    redisFree(rc);
    free_status(a);
    end_test();
}

/* ---- the member cache (a repeated GetQueueStatus whose idle bit needs nothing is one
 * ZRANK of the member this server already found; srv_queue.c member_cache) ---- */

enum { C_ZRANK, C_ZRANGEBYSCORE, C_ZCOUNT, C_GETBIT, C_SETBIT, C_EVALSHA, C_N };
static const char *const counted[C_N] = {"zrank", "zrangebyscore", "zcount", "getbit", "setbit", "evalsha"};

/* Redis' counts of the commands above, from one INFO commandstats. */
static void cmd_counts(long long out[C_N]) {
    redisContext *rc = th_redis_connect(&redis);
    redisReply *r = redisCommand(rc, "INFO commandstats");
    cr_assert(r && r->type == REDIS_REPLY_STRING, "INFO commandstats");
    for (int i = 0; i < C_N; i++) {
        char want[64];
        snprintf(want, sizeof want, "cmdstat_%s:calls=", counted[i]);
        const char *p = strstr(r->str, want);
        out[i] = p ? atoll(p + strlen(want)) : 0;
    }
    freeReplyObject(r);
    redisFree(rc);
}

/* Idle epochs of 10 s: once the mirror knows the user's bit this epoch, 40 polls
 * inside the epoch are 40 ZRANKs and nothing else of the status path: no
 * ZRANGEBYSCORE, ZCOUNT, GETBIT or script (main: a ZRANGEBYSCORE and a ZCOUNT each).
 * A window is clean when no EVALSHA ran in it (admission ticks, once a second here,
 * run ZRANGEBYSCORE inside their script) and it stayed in one epoch; up to 10 windows
 * are tried. */
static const char *const mcache_flags[] = {"--admit-rate", "0",   "--idle-timeout-ms",   "20000",
                                           "--rate-user",  "0",   "--admit-interval-ms", "1000",
                                           NULL};
static void start_mcache(void) { start(mcache_flags); }

Test(queue, member_cache_repeat_poll_is_one_zrank, .init = start_mcache, .fini = stop) {
    Concert__V1__QueueStatus *a = NULL, *b = NULL;
    cr_assert_eq(th_issue(cli, "ahead", "mc", &a, NULL), GRPC_STATUS_OK);
    cr_assert_eq(th_issue(cli, "asker", "mc", &b, NULL), GRPC_STATUS_OK);
    quiet_poll q = {b->token, 0};
    cr_assert(th_wait_for(poll_without_getbit, &q, 20, 5000), "no poll went without GETBIT in 5 s");
    redisContext *rc = th_redis_connect(&redis);
    long long before[C_N], after[C_N], d[C_N];
    int clean = 0;
    for (int attempt = 0; attempt < 10 && !clean; attempt++) {
        while (redis_ms(rc) % 10000 < 1000 || redis_ms(rc) % 10000 > 7000) th_pause_ms(20);
        /* This epoch's first poll asks GETBIT (and the mirror learns the bit): not counted. */
        long long e0 = redis_ms(rc) / 10000;
        cr_assert(th_wait_for(poll_without_getbit, &q, 20, 2000), "no poll without GETBIT in this epoch");
        cmd_counts(before);
        for (int i = 0; i < 40; i++) {
            Concert__V1__QueueStatus *s = NULL;
            cr_assert_eq(th_status(cli, b->token, &s, NULL), GRPC_STATUS_OK);
            cr_assert_eq(s->state, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING);
            cr_assert_eq(s->position, 2, "poll %d: position %lld", i, (long long)s->position);
            free_status(s);
        }
        cmd_counts(after);
        for (int i = 0; i < C_N; i++) d[i] = after[i] - before[i];
        clean = d[C_EVALSHA] == 0 && redis_ms(rc) / 10000 == e0; /* no tick, one epoch */
    }
    redisFree(rc);
    cr_assert(clean, "every window of 40 polls ran a script or left its epoch (last: %lld EVALSHA)",
              d[C_EVALSHA]);
    cr_expect_eq(d[C_ZRANK], 40, "%lld ZRANKs for 40 polls", d[C_ZRANK]);
    cr_expect_eq(d[C_ZRANGEBYSCORE] + d[C_ZCOUNT] + d[C_GETBIT] + d[C_SETBIT], 0,
                 "40 repeated polls sent %lld ZRANGEBYSCORE, %lld ZCOUNT, %lld GETBIT, %lld SETBIT",
                 d[C_ZRANGEBYSCORE], d[C_ZCOUNT], d[C_GETBIT], d[C_SETBIT]);
    free_status(a);
    free_status(b);
    end_test();
}

static const char *const mcache_noidle[] = {"--admit-rate", "0", "--idle-timeout-ms", "0", "--rate-user", "0",
                                            "--admit-interval-ms", "500", NULL};
static void start_mcache_noidle(void) { start(mcache_noidle); }

/* A poll of token: its position (-1 unless WAITING) and *state, and *cached = 1 if
 * Redis saw exactly one ZRANK for it and nothing else of the status path (no
 * ZRANGEBYSCORE, ZCOUNT or script). Polled again (up to 10 times) while an admission
 * tick (EVALSHA; it runs ZRANGEBYSCORE inside) blurs the counts. */
static int64_t poll_pos(const char *token, int *state, int *cached) {
    int64_t pos = -1;
    *cached = 0;
    for (int i = 0; i < 10; i++) {
        long long b[C_N], a[C_N];
        cmd_counts(b);
        Concert__V1__QueueStatus *s = NULL;
        cr_assert_eq(th_status(cli, token, &s, NULL), GRPC_STATUS_OK);
        cmd_counts(a);
        *state = s->state;
        pos = s->state == CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING ? s->position : -1;
        free_status(s);
        if (a[C_EVALSHA] != b[C_EVALSHA]) continue;
        *cached = a[C_ZRANK] - b[C_ZRANK] == 1 && a[C_ZRANGEBYSCORE] == b[C_ZRANGEBYSCORE] &&
                  a[C_ZCOUNT] == b[C_ZCOUNT];
        break;
    }
    return pos;
}

typedef struct {
    const char *token;
    int64_t pos;
} cached_poll;

/* Once the server ticked the concert and its fast path found the member: a poll
 * answered by ZRANK alone, at the expected position. */
static int poll_is_cached(void *arg) {
    cached_poll *c = arg;
    int st, cached;
    return poll_pos(c->token, &st, &cached) == c->pos && cached;
}

/* Answers from the cache stay exact: users ahead leave and are admitted while the
 * last one polls (without an idle timeout the bit never needs a GETBIT, so every
 * repeated poll may be a ZRANK), and the poller's own admission ends the cache's
 * answers: ZRANK finds no member and the script says ACTIVE. */
Test(queue, member_cache_positions_stay_exact, .init = start_mcache_noidle, .fini = stop) {
    const char *users[] = {"u-a", "u-b", "u-c", "u-d"};
    Concert__V1__QueueStatus *t[4] = {0};
    for (int i = 0; i < 4; i++) cr_assert_eq(th_issue(cli, users[i], "mc2", &t[i], NULL), GRPC_STATUS_OK);
    cr_assert_eq(t[3]->position, 4);
    int st, quick;
    cached_poll cp = {t[3]->token, 4};
    cr_assert(th_wait_for(poll_is_cached, &cp, 20, 5000), "no poll answered by ZRANK alone in 5 s");
    int prev;
    cr_assert_eq(th_leave(cli, t[1]->token, &prev, NULL), GRPC_STATUS_OK);
    cr_expect_eq(poll_pos(t[3]->token, &st, &quick), 3, "after the second user left");
    cr_expect(quick, "the poll after a leave was not answered by ZRANK alone");
    /* Admit the first; then stop admission and check against the third's state. */
    cr_assert_eq(th_admin_admit_rate(cli, KEY, "mc2", 1, NULL), GRPC_STATUS_OK);
    cr_assert_eq(th_wait_active(cli, t[0]->token), 0, "the first user was not admitted");
    cr_assert_eq(th_admin_admit_rate(cli, KEY, "mc2", 0, NULL), GRPC_STATUS_OK);
    int checked = 0;
    for (int i = 0; i < 5 && !checked; i++) {
        int c1 = th_state(cli, t[2]->token);
        int64_t pos = poll_pos(t[3]->token, &st, &quick);
        int c2 = th_state(cli, t[2]->token);
        if (c1 != c2) continue; /* the third moved meanwhile: ask again */
        checked = 1;
        cr_expect_eq(pos, c1 == CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING ? 2 : 1,
                     "position %lld with the first admitted and the third %d", (long long)pos, c1);
        cr_expect(quick, "the poll after an admission was not answered by ZRANK alone");
    }
    cr_assert(checked, "the third user's state kept changing");
    /* Its own admission: the cached member is gone, the answer is ACTIVE. */
    cr_assert_eq(th_admin_admit_rate(cli, KEY, "mc2", 1000, NULL), GRPC_STATUS_OK);
    cr_assert_eq(th_wait_active(cli, t[3]->token), 0, "the last user was not admitted");
    cr_expect_eq(th_state(cli, t[3]->token), CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE);
    for (int i = 0; i < 4; i++) free_status(t[i]);
    end_test();
}

/* A token with a waiting user's join number and another id is refused while that
 * user's member is cached (the cache answers only for the id it proved). */
Test(queue, member_cache_refuses_a_forged_id, .init = start_mcache_noidle, .fini = stop) {
    Concert__V1__QueueStatus *a = NULL;
    cr_assert_eq(th_issue(cli, "real", "mc", &a, NULL), GRPC_STATUS_OK);
    int st, quick;
    cached_poll cp = {a->token, 1};
    cr_assert(th_wait_for(poll_is_cached, &cp, 20, 5000), "no poll answered by ZRANK alone in 5 s");
    char forged[128];
    snprintf(forged, sizeof forged, "%s", a->token);
    size_t len = strlen(forged);
    for (size_t i = len - 32; i < len; i++) forged[i] = forged[i] == '0' ? '1' : '0'; /* the id, all of it */
    long long b[C_N], c[C_N];
    for (int i = 0; i < 3; i++) {
        cmd_counts(b);
        Concert__V1__QueueStatus *s = NULL;
        cr_expect_eq(th_status(cli, forged, &s, NULL), GRPC_STATUS_UNAUTHENTICATED,
                     "a forged id got an answer");
        free_status(s);
        cmd_counts(c);
        cr_expect_eq(c[C_ZRANK] - b[C_ZRANK], 0, "a forged id was asked by ZRANK");
    }
    cr_expect_eq(poll_pos(a->token, &st, &quick), 1, "the real token after the forgeries");
    free_status(a);
    end_test();
}

/* ---- watch ---- */

static const char *const slow_admit[] = {"--admit-rate", "4", "--watch-interval-ms", "100", NULL};
static void start_slow_admit(void) { start(slow_admit); }

Test(queue, watch_streams_positions_and_ends_active, .init = start_slow_admit, .fini = stop) {
    Concert__V1__QueueStatus *s = NULL;
    char tok[128];
    for (int i = 0; i < 6; i++) {
        char u[16];
        snprintf(u, sizeof u, "w%d", i);
        cr_assert_eq(th_issue(cli, u, "watch", &s, NULL), GRPC_STATUS_OK);
        snprintf(tok, sizeof tok, "%s", s->token);
        free_status(s);
    }
    Concert__V1__WatchQueueStatusRequest req = CONCERT__V1__WATCH_QUEUE_STATUS_REQUEST__INIT;
    req.token = tok;
    cc_stream *st = cc_client_stream(cli, "/concert.v1.QueueService/WatchQueueStatus", &req.base, NULL, 0, 20000);
    cr_assert(st);
    int n = 0, last_state = 0;
    int64_t last_pos = 1000;
    Concert__V1__QueueStatus *m = NULL;
    int positions_seen = 0;
    while (cc_stream_next(st, &concert__v1__queue_status__descriptor, (ProtobufCMessage **)&m) == 1) {
        n++;
        last_state = m->state;
        if (m->state == CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING) {
            cr_expect_lt(m->position, last_pos, "positions only go down (%lld after %lld)", (long long)m->position,
                         (long long)last_pos);
            last_pos = m->position;
            positions_seen++;
        }
        free_status(m);
    }
    cc_status fin;
    cc_stream_close(st, &fin);
    cr_expect_eq(fin.code, GRPC_STATUS_OK, "stream ended with %s %s", cc_status_name(fin.code), fin.message);
    cr_expect_eq(last_state, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE, "the last message is ACTIVE");
    cr_expect_geq(positions_seen, 2, "saw %d waiting updates before admission", positions_seen);
    end_test();
}

Test(queue, watch_of_expired_token_ends_at_once, .init = start_paused, .fini = stop) {
    Concert__V1__QueueStatus *s = NULL;
    cr_assert_eq(th_issue(cli, "x", "wx", &s, NULL), GRPC_STATUS_OK);
    cr_assert_eq(th_leave(cli, s->token, NULL, NULL), GRPC_STATUS_OK);
    Concert__V1__WatchQueueStatusRequest req = CONCERT__V1__WATCH_QUEUE_STATUS_REQUEST__INIT;
    req.token = s->token;
    cc_stream *st = cc_client_stream(cli, "/concert.v1.QueueService/WatchQueueStatus", &req.base, NULL, 0, 5000);
    Concert__V1__QueueStatus *m = NULL;
    cr_assert_eq(cc_stream_next(st, &concert__v1__queue_status__descriptor, (ProtobufCMessage **)&m), 1);
    cr_expect_eq(m->state, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_EXPIRED);
    free_status(m);
    cr_expect_eq(cc_stream_next(st, &concert__v1__queue_status__descriptor, (ProtobufCMessage **)&m), 0);
    cc_status fin;
    cc_stream_close(st, &fin);
    cr_expect_eq(fin.code, GRPC_STATUS_OK);
    free_status(s);
    end_test();
}

/* Held streams keep batches outstanding on their completion queue for their whole life,
 * and gRPC 1.51 (built without NDEBUG) walks every outstanding tag of a queue on each
 * completion: on the queue of the unary calls, every GetQueueStatus would walk every
 * held stream's tags. So every batch of a stream after its accept completes on the
 * streams' own queue (srv_rpc.c "streams"). Hold 40 WatchQueueStatus and 10
 * WatchQueueStatuses streams, make unary calls while they get updates, end some from the
 * client and the rest by SIGTERM: every stream completion came on the streams' queue,
 * none on the unary one (with the streams bound to s->cq it is the other way round). */
static const char *const held_flags[] = {"--admit-rate", "0", "--watch-interval-ms", "50", NULL};
static void start_held(void) { start(held_flags); }

Test(queue, held_streams_complete_off_the_unary_queue, .init = start_held, .fini = stop, .timeout = 60) {
    enum { W = 40, B = 10, CALLS = 200 };
    static char tokens[W + B][128];
    for (int i = 0; i < W + B; i++) {
        char u[32];
        snprintf(u, sizeof u, "held-%d", i);
        Concert__V1__QueueStatus *s = NULL;
        cr_assert_eq(th_issue(cli, u, "held", &s, NULL), GRPC_STATUS_OK);
        snprintf(tokens[i], sizeof tokens[i], "%s", s->token);
        free_status(s);
    }
    cc_stream *st[W + B];
    for (int i = 0; i < W; i++) {
        Concert__V1__WatchQueueStatusRequest req = CONCERT__V1__WATCH_QUEUE_STATUS_REQUEST__INIT;
        req.token = tokens[i];
        st[i] = cc_client_stream(cli, "/concert.v1.QueueService/WatchQueueStatus", &req.base, NULL, 0, 30000);
        cr_assert(st[i], "watch %d did not start", i);
        Concert__V1__QueueStatus *m = NULL;
        cr_assert_eq(cc_stream_next(st[i], &concert__v1__queue_status__descriptor, (ProtobufCMessage **)&m), 1,
                     "watch %d: no first status", i);
        cr_expect_eq(m->state, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING);
        free_status(m);
    }
    for (int i = W; i < W + B; i++) {
        st[i] = cc_client_bidi(cli, "/concert.v1.QueueService/WatchQueueStatuses", NULL, 0, 30000);
        cr_assert(st[i], "multi-watch %d did not start", i);
        Concert__V1__WatchQueueStatusesRequest req = CONCERT__V1__WATCH_QUEUE_STATUSES_REQUEST__INIT;
        char *add[1] = {tokens[i]};
        req.n_add_tokens = 1;
        req.add_tokens = add;
        cr_assert_eq(cc_stream_send(st[i], &req.base), 0);
        Concert__V1__WatchQueueStatusesResponse *u = NULL;
        cr_assert_eq(cc_stream_next(st[i], &concert__v1__watch_queue_statuses_response__descriptor,
                                    (ProtobufCMessage **)&u),
                     1, "multi-watch %d: no first update", i);
        cr_expect_eq(u->error_code, 0, "multi-watch %d: %s", i, u->error_message);
        protobuf_c_message_free_unpacked(&u->base, NULL);
    }
    /* Unary calls while every stream is held and refreshed. */
    for (int i = 0; i < CALLS; i++) {
        Concert__V1__QueueStatus *s = NULL;
        cr_assert_eq(th_status(cli, tokens[i % (W + B)], &s, NULL), GRPC_STATUS_OK, "call %d", i);
        cr_expect_eq(s->state, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING);
        free_status(s);
    }
    /* Half of the watches end from the client's side (a cancel), the rest by SIGTERM. */
    for (int i = 0; i < W; i += 2) {
        cc_status fin;
        cc_stream_close(st[i], &fin);
        cr_expect_eq(fin.code, GRPC_STATUS_CANCELLED);
        st[i] = NULL;
    }
    int keep = getenv("TH_KEEP_LOGS") != NULL;
    setenv("TH_KEEP_LOGS", "1", 1); /* read below (a test runs in a process of its own) */
    int rc = th_server_stop(&server);
    if (!keep) unsetenv("TH_KEEP_LOGS");
    cr_expect_eq(rc, 0, "concert-server exited %d with streams open (log %s)", rc, server.log);
    for (int i = 0; i < W + B; i++) {
        if (!st[i]) continue;
        const ProtobufCMessageDescriptor *d = i < W ? &concert__v1__queue_status__descriptor
                                                    : &concert__v1__watch_queue_statuses_response__descriptor;
        ProtobufCMessage *m = NULL;
        while (cc_stream_next(st[i], d, &m) == 1) protobuf_c_message_free_unpacked(m, NULL);
        cc_status fin;
        cc_stream_close(st[i], &fin);
        cr_expect_eq(fin.code, GRPC_STATUS_UNAVAILABLE, "stream %d ended %s at shutdown", i, cc_status_name(fin.code));
    }
    cc_client_close(cli);
    cli = NULL;
    long long streams_q = -1, calls_q = -1;
    int found = loop_stream_events(&server, &streams_q, &calls_q);
    cr_assert(found, "no grpc_loop_stats stream events in %s", server.log);
    if (!keep) unlink(server.log);
    /* Each stream: its close, its first message, its status at least. */
    cr_expect_geq(streams_q, 3 * (W + B), "%lld stream completions on the streams' queue", streams_q);
    cr_expect_eq(calls_q, 0, "%lld stream completions on the unary calls' queue", calls_q);
}

Test(queue, cancelled_watch_frees_the_server_side, .init = start_paused, .fini = stop) {
    /* Open and abandon many watches; the server must keep serving and exit cleanly. */
    Concert__V1__QueueStatus *s = NULL;
    cr_assert_eq(th_issue(cli, "cw", "cw", &s, NULL), GRPC_STATUS_OK);
    for (int i = 0; i < 50; i++) {
        Concert__V1__WatchQueueStatusRequest req = CONCERT__V1__WATCH_QUEUE_STATUS_REQUEST__INIT;
        req.token = s->token;
        cc_stream *st = cc_client_stream(cli, "/concert.v1.QueueService/WatchQueueStatus", &req.base, NULL, 0, 5000);
        Concert__V1__QueueStatus *m = NULL;
        cr_assert_eq(cc_stream_next(st, &concert__v1__queue_status__descriptor, (ProtobufCMessage **)&m), 1);
        cr_expect_eq(m->state, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING);
        free_status(m);
        cc_status fin;
        cc_stream_close(st, &fin);
        cr_expect_eq(fin.code, GRPC_STATUS_CANCELLED);
    }
    cr_expect_eq(th_state(cli, s->token), CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING);
    free_status(s);
    end_test();
}

/* ---- bad input ---- */

static void expect_code(grpc_status_code got, const cc_status *st, grpc_status_code want, const char *field) {
    cr_expect_eq(got, want, "want %s, got %s: %s", cc_status_name(want), cc_status_name(got), st->message);
    if (field) cr_expect(strstr(st->message, field) != NULL, "message '%s' must name '%s'", st->message, field);
}

Test(queue, bad_input_gets_clear_errors, .init = start_paused, .fini = stop) {
    cc_status st;
    char *big = malloc(10 * 1024 + 1);
    memset(big, 'x', 10 * 1024);
    big[10 * 1024] = 0;
    expect_code(th_issue(cli, "", "c1", NULL, &st), &st, GRPC_STATUS_INVALID_ARGUMENT, "user_id");
    expect_code(th_issue(cli, big, "c1", NULL, &st), &st, GRPC_STATUS_INVALID_ARGUMENT, "user_id");
    expect_code(th_issue(cli, "u", "", NULL, &st), &st, GRPC_STATUS_INVALID_ARGUMENT, "concert_id");
    expect_code(th_issue(cli, "u", big, NULL, &st), &st, GRPC_STATUS_INVALID_ARGUMENT, "concert_id");
    expect_code(th_issue(cli, "u", "c{1}", NULL, &st), &st, GRPC_STATUS_INVALID_ARGUMENT, "concert_id");
    expect_code(th_issue(cli, "u\x01", "c1", NULL, &st), &st, GRPC_STATUS_INVALID_ARGUMENT, "user_id");
    expect_code(th_status(cli, "", NULL, &st), &st, GRPC_STATUS_INVALID_ARGUMENT, "token");
    expect_code(th_status(cli, big, NULL, &st), &st, GRPC_STATUS_INVALID_ARGUMENT, "token");
    expect_code(th_status(cli, "not-a-token", NULL, &st), &st, GRPC_STATUS_UNAUTHENTICATED, "token");
    expect_code(th_status(cli, "v1.c1.0123456789abcdef0123456789abcdef", NULL, &st), &st,
                GRPC_STATUS_UNAUTHENTICATED, "token");
    expect_code(th_leave(cli, "v1.c1.0123456789abcdef0123456789abcdef", NULL, &st), &st,
                GRPC_STATUS_UNAUTHENTICATED, "token");
    /* A concert no admin created has no queue: NOT_FOUND, and nothing is written. */
    expect_code(th_issue(cli, "u", "nowhere", NULL, &st), &st, GRPC_STATUS_NOT_FOUND, "concert_id");
    expect_code(th_status(cli, "v1.nowhere.0123456789abcdef0123456789abcdef", NULL, &st), &st, GRPC_STATUS_NOT_FOUND,
                "token");
    expect_code(th_leave(cli, "v1.nowhere.0123456789abcdef0123456789abcdef", NULL, &st), &st, GRPC_STATUS_NOT_FOUND,
                "token");
    /* A real token with the concert part changed is forged. */
    Concert__V1__QueueStatus *s = NULL;
    cr_assert_eq(th_issue(cli, "real", "c1", &s, NULL), GRPC_STATUS_OK);
    char forged[128];
    cr_assert(!strncmp(s->token, "v2.c1.", 6), "%s", s->token);
    snprintf(forged, sizeof forged, "v2.c2.%s", s->token + 6);
    expect_code(th_status(cli, forged, NULL, &st), &st, GRPC_STATUS_UNAUTHENTICATED, "token");
    /* Bytes that are not protobuf. */
    const char junk[] = "\xff\xff\xff\xff\x0f garbage";
    expect_code(cc_client_unary_raw(cli, Q_METHOD, junk, sizeof junk, NULL, 0, 5000, &st), &st,
                GRPC_STATUS_INVALID_ARGUMENT, "IssueTokenRequest");
    expect_code(cc_client_unary_raw(cli, "/concert.v1.QueueService/NoSuchMethod", "", 0, NULL, 0, 5000, &st), &st,
                GRPC_STATUS_UNIMPLEMENTED, NULL);
    /* Nothing was written for the bad calls: only "real" joined c1. */
    redisContext *rc = th_redis_connect(&redis);
    redisReply *r = redisCommand(rc, "ZCARD cc:{c1}:q:wait");
    cr_expect_eq(r->integer, 1, "bad calls must not change state");
    freeReplyObject(r);
    r = redisCommand(rc, "KEYS cc:{nowhere}*");
    cr_expect_eq(r->elements, 0, "nothing written for a made-up concert");
    freeReplyObject(r);
    redisFree(rc);
    /* And the server still serves. */
    cr_expect_eq(th_state(cli, s->token), CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING);
    free_status(s);
    free(big);
    end_test();
}

static const char *const many_flags[] = {"--admit-rate", "40", "--watch-interval-ms", "100", NULL};
static void start_many(void) { start(many_flags); }

/* More watchers of one concert than fit in one small Redis call (a past bug: more
 * than 55 watchers were never refreshed). */
Test(queue, hundred_watchers_of_one_concert_all_end_active, .init = start_many, .fini = stop, .timeout = 60) {
    enum { N = 100 };
    cc_stream *streams[N];
    for (int i = 0; i < N; i++) {
        char u[16];
        Concert__V1__QueueStatus *s = NULL;
        snprintf(u, sizeof u, "many-%d", i);
        cr_assert_eq(th_issue(cli, u, "many", &s, NULL), GRPC_STATUS_OK);
        Concert__V1__WatchQueueStatusRequest req = CONCERT__V1__WATCH_QUEUE_STATUS_REQUEST__INIT;
        req.token = s->token;
        streams[i] = cc_client_stream(cli, "/concert.v1.QueueService/WatchQueueStatus", &req.base, NULL, 0, 30000);
        cr_assert(streams[i]);
        free_status(s);
    }
    int active = 0;
    for (int i = 0; i < N; i++) {
        Concert__V1__QueueStatus *m = NULL;
        int last = 0;
        while (cc_stream_next(streams[i], &concert__v1__queue_status__descriptor, (ProtobufCMessage **)&m) == 1) {
            last = m->state;
            free_status(m);
        }
        cc_status fin;
        cc_stream_close(streams[i], &fin);
        cr_expect_eq(fin.code, GRPC_STATUS_OK, "watcher %d ended %s %s", i, cc_status_name(fin.code), fin.message);
        active += last == CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE;
    }
    cr_expect_eq(active, N, "%d of %d watchers saw ACTIVE", active, N);
    end_test();
}
