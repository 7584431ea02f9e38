/* Redis Cluster, on a real cluster of Debian redis-server processes started by
 * scripts/redis-cluster.sh: our key slots agree with CLUSTER KEYSLOT (hash tags
 * included, so every key of a concert or a wallet lands in one slot), and the script's
 * drill verbs work: a killed primary is replaced by its replica and the cluster is ok
 * again; the restarted node rejoins. */
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cc_slot.h"
#include "th.h"

static th_rcluster cl;

static void start(void) {
    char err[512];
    cr_assert_eq(th_rcluster_start(&cl, 3, 1, err, sizeof err), 0, "%s", err);
}

static void stop(void) { th_rcluster_stop(&cl); }

static redisContext *node(int n) {
    redisContext *c = redisConnect("127.0.0.1", th_rcluster_port(&cl, n));
    cr_assert(c && !c->err, "connect to node %d", n);
    return c;
}

Test(cluster, key_slots_match_redis, .init = start, .fini = stop, .timeout = 60) {
    redisContext *c = node(1);
    const char *keys[] = {"", "a", "foo", "123456789", "cc:{c1}:q:users", "cc:{c1}:p:p1.c1.x", "cc:{w:alice}:bal",
                          "{}x", "x{}", "a{b}c", "{a}{b}", "{{a}}", "}{x}", "cc:queues", "cc:concerts",
                          "{user1000}.following", "\xff\xfe{\x01}"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        redisReply *r = redisCommand(c, "CLUSTER KEYSLOT %b", keys[i], strlen(keys[i]));
        cr_assert(r && r->type == REDIS_REPLY_INTEGER, "CLUSTER KEYSLOT");
        cr_expect_eq(cc_key_slot(keys[i], strlen(keys[i])), (int)r->integer, "key %zu '%s'", i, keys[i]);
        freeReplyObject(r);
    }
    /* Random binary keys. */
    srand(7);
    for (int i = 0; i < 500; i++) {
        char k[24];
        size_t len = (size_t)(rand() % (int)sizeof k);
        for (size_t j = 0; j < len; j++) k[j] = (char)(rand() % 4 == 0 ? "{}"[rand() % 2] : rand() % 256);
        redisReply *r = redisCommand(c, "CLUSTER KEYSLOT %b", k, len);
        cr_assert(r && r->type == REDIS_REPLY_INTEGER);
        cr_expect_eq(cc_key_slot(k, len), (int)r->integer, "random key %d", i);
        freeReplyObject(r);
    }
    redisFree(c);
}

static int role_is(int n, const char *role) {
    redisContext *c = redisConnect("127.0.0.1", th_rcluster_port(&cl, n));
    if (!c || c->err) {
        if (c) redisFree(c);
        return 0;
    }
    redisReply *r = redisCommand(c, "ROLE");
    int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 && r->element[0]->type == REDIS_REPLY_STRING &&
             !strcmp(r->element[0]->str, role);
    if (r) freeReplyObject(r);
    redisFree(c);
    return ok;
}

typedef struct {
    int node;
} ok_arg;

static int cluster_ok_from(void *arg) {
    int n = ((ok_arg *)arg)->node;
    redisContext *c = redisConnect("127.0.0.1", th_rcluster_port(&cl, n));
    if (!c || c->err) {
        if (c) redisFree(c);
        return 0;
    }
    redisReply *r = redisCommand(c, "CLUSTER INFO");
    int ok = r && r->type == REDIS_REPLY_STRING && strstr(r->str, "cluster_state:ok");
    if (r) freeReplyObject(r);
    redisFree(c);
    return ok;
}

/* The replica of node 1 (the one whose ROLE names node 1's port as its primary). */
static int replica_of_node1(void) {
    int p1 = th_rcluster_port(&cl, 1);
    for (int n = 2; n <= cl.nodes; n++) {
        redisContext *c = node(n);
        redisReply *r = redisCommand(c, "ROLE");
        int mine = r && r->type == REDIS_REPLY_ARRAY && r->elements >= 3 && !strcmp(r->element[0]->str, "slave") &&
                   (int)r->element[2]->integer == p1;
        freeReplyObject(r);
        redisFree(c);
        if (mine) return n;
    }
    return 0;
}

typedef struct {
    int node;
} role_arg;

static int became_master(void *arg) { return role_is(((role_arg *)arg)->node, "master"); }

Test(cluster, killed_primary_fails_over_and_rejoins, .init = start, .fini = stop, .timeout = 90) {
    cr_assert(role_is(1, "master"), "node 1 starts as a primary");
    int rep = replica_of_node1();
    cr_assert(rep > 0, "node 1 has a replica");
    uint64_t t0 = th_now_ms();
    cr_assert_eq(th_rcluster_kill_node(&cl, 1), 0);
    role_arg ra = {rep};
    cr_assert(th_wait_for(became_master, &ra, 50, 20000), "replica %d did not take over", rep);
    ok_arg oa = {rep};
    cr_assert(th_wait_for(cluster_ok_from, &oa, 50, 20000), "cluster not ok after failover");
    cr_log_info("failover took %llu ms", (unsigned long long)(th_now_ms() - t0));
    cr_assert_eq(th_rcluster_start_node(&cl, 1), 0, "start-node");
    cr_assert(role_is(1, "slave"), "the old primary rejoins as a replica");
}

/* ---- concert-server on the cluster ---- */
#include "concert/v1/admin.pb-c.h"
#include "concert/v1/booking.pb-c.h"
#include "concert/v1/wallet.pb-c.h"

#define ADMIN "ck"

static th_server server;
static cc_client *cli;

/* Node (1-based, by port) serving `slot` now, from CLUSTER SLOTS on node 1's view. */
static int port_of_slot(int slot) {
    for (int n = 1; n <= cl.nodes; n++) {
        redisContext *c = redisConnect("127.0.0.1", th_rcluster_port(&cl, n));
        if (!c || c->err) {
            if (c) redisFree(c);
            continue;
        }
        redisReply *r = redisCommand(c, "CLUSTER SLOTS");
        int port = 0;
        for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
            redisReply *e = r->element[i];
            if (slot >= e->element[0]->integer && slot <= e->element[1]->integer)
                port = (int)e->element[2]->element[1]->integer;
        }
        if (r) freeReplyObject(r);
        redisFree(c);
        if (port) return port;
    }
    return 0;
}

/* Two ids "<prefix>N" whose hash tags `{<tagpre><id>}` land on different primaries. */
static void two_on_different_primaries(const char *tagpre, const char *prefix, char *a, char *b, size_t len) {
    char tag[128];
    snprintf(a, len, "%s0", prefix);
    snprintf(tag, sizeof tag, "{%s%s}", tagpre, a);
    int pa = port_of_slot(cc_key_slot(tag, strlen(tag)));
    for (int i = 1; i < 1000; i++) {
        snprintf(b, len, "%s%d", prefix, i);
        snprintf(tag, sizeof tag, "{%s%s}", tagpre, b);
        int pb = port_of_slot(cc_key_slot(tag, strlen(tag)));
        if (pb && pb != pa) return;
    }
    cr_assert_fail("no two %s on different primaries", prefix);
}

static void start_server(void) {
    start();
    /* The subject is the cluster, not the rate limits (one peer, a few users, many calls). */
    const char *flags[] = {"--admin-key", ADMIN, "--admit-interval-ms", "20", "--rate-user", "0", "--rate-peer", "0", NULL};
    th_server_start(&server, cl.url, flags);
    cr_assert(th_server_wait_serving(&server, 10000), "server not SERVING on the cluster (log %s)", server.log);
    cli = cc_client_open(server.addr);
}

static void stop_server(void) {
    th_server_close(&server, &cli);
    stop();
}

static grpc_status_code charge(const char *user, int64_t amount, const char *key) {
    Concert__V1__ChargeRequest req = CONCERT__V1__CHARGE_REQUEST__INIT;
    req.user_id = (char *)user;
    req.amount = amount;
    req.idempotency_key = (char *)key;
    return cc_client_unary(cli, "/concert.v1.WalletService/Charge", &req.base, &concert__v1__charge_response__descriptor,
                           NULL, NULL, 0, 5000, NULL);
}

static grpc_status_code reserve(const char *token, const char *sched, int seat, Concert__V1__Reservation **out) {
    char auth[200];
    snprintf(auth, sizeof auth, "Bearer %.180s", token);
    cc_md md[] = {{"authorization", auth}};
    Concert__V1__ReserveSeatsRequest req = CONCERT__V1__RESERVE_SEATS_REQUEST__INIT;
    req.schedule_id = (char *)sched;
    req.n_seat_numbers = 1;
    req.seat_numbers = (int32_t[]){seat};
    return cc_client_unary(cli, "/concert.v1.BookingService/ReserveSeats", &req.base,
                           &concert__v1__reservation__descriptor, (ProtobufCMessage **)out, md, 1, 5000, NULL);
}

static grpc_status_code audit(const char *concert, Concert__V1__AuditReport **out) {
    cc_md md[] = {{"x-admin-key", ADMIN}};
    Concert__V1__AuditRequest req = CONCERT__V1__AUDIT_REQUEST__INIT;
    req.concert_id = (char *)concert;
    return cc_client_unary(cli, "/concert.v1.AdminService/Audit", &req.base, &concert__v1__audit_report__descriptor,
                           (ProtobufCMessage **)out, md, 1, 10000, NULL);
}

Test(cluster_server, whole_flow_across_primaries, .init = start_server, .fini = stop_server, .timeout = 90) {
    char c1[32], c2[32], u1[32], u2[32];
    two_on_different_primaries("", "show", c1, c2, sizeof c1);
    two_on_different_primaries("w:", "fan", u1, u2, sizeof u1);
    const char *concerts[] = {c1, c2}, *users[] = {u1, u2};
    for (int i = 0; i < 2; i++)
        cr_assert_eq(th_admin_catalogue(cli, ADMIN, concerts[i], "d1", 20, 150), GRPC_STATUS_OK, "catalogue %s",
                     concerts[i]);
    for (int i = 0; i < 2; i++) {
        for (int k = 0; k < 2; k++) {
            char user[64], key[80], tok[256];
            snprintf(user, sizeof user, "%s-%d", users[k], i);
            snprintf(key, sizeof key, "k-%s", user);
            cr_assert_eq(th_active_token(cli, user, concerts[i], tok, sizeof tok), 0, "ACTIVE on %s", concerts[i]);
            cr_assert_eq(charge(user, 1000, key), GRPC_STATUS_OK, "charge %s", user);
            cr_assert_eq(charge(user, 1000, key), GRPC_STATUS_OK, "charge replay %s", user);
            Concert__V1__Reservation *r = NULL;
            cr_assert_eq(reserve(tok, "d1", 1 + k, &r), GRPC_STATUS_OK, "reserve on %s", concerts[i]);
            cr_expect_eq(r->total_price, 150);
            protobuf_c_message_free_unpacked(&r->base, NULL);
            cr_expect_neq(reserve(tok, "d1", 1 + k, NULL), GRPC_STATUS_OK, "the same seat twice");
        }
        Concert__V1__AuditReport *a = NULL;
        cr_assert_eq(audit(concerts[i], &a), GRPC_STATUS_OK, "audit %s", concerts[i]);
        cr_expect_eq(a->n_problems, 0, "audit problems on %s: %s", concerts[i], a->n_problems ? a->problems[0] : "");
        protobuf_c_message_free_unpacked(&a->base, NULL);
    }
    Concert__V1__ListConcertsResponse *lc = NULL;
    cc_md md[] = {{"x-admin-key", ADMIN}};
    Concert__V1__ListConcertsRequest lreq = CONCERT__V1__LIST_CONCERTS_REQUEST__INIT;
    cr_assert_eq(cc_client_unary(cli, "/concert.v1.AdminService/ListConcerts", &lreq.base,
                                 &concert__v1__list_concerts_response__descriptor, (ProtobufCMessage **)&lc, md, 1,
                                 5000, NULL),
                 GRPC_STATUS_OK);
    cr_expect_eq(lc->n_concerts, 2);
    protobuf_c_message_free_unpacked(&lc->base, NULL);
    cr_assert_eq(th_server_stop(&server), 0, "exit status (log %s)", server.log);
}

/* ---- kill -9 a primary under load ---- */

static int64_t balance_of(const char *user) {
    Concert__V1__GetBalanceRequest gb = CONCERT__V1__GET_BALANCE_REQUEST__INIT;
    gb.user_id = (char *)user;
    Concert__V1__Balance *b = NULL;
    if (cc_client_unary(cli, "/concert.v1.WalletService/GetBalance", &gb.base, &concert__v1__balance__descriptor,
                        (ProtobufCMessage **)&b, NULL, 0, 3000, NULL) != GRPC_STATUS_OK)
        return -1;
    int64_t v = b->balance;
    protobuf_c_message_free_unpacked(&b->base, NULL);
    return v;
}

static int node_of_port(int port) {
    for (int n = 1; n <= cl.nodes; n++)
        if (th_rcluster_port(&cl, n) == port) return n;
    return 0;
}

typedef struct {
    int primary, replica;
} sync_arg;

/* The replica has everything the primary wrote (replication offsets equal). */
static int replica_synced(void *arg) {
    sync_arg *s = arg;
    long long a = th_info_int(s->primary, "master_repl_offset"), b = th_info_int(s->replica, "slave_repl_offset");
    return a > 0 && a == b;
}

Test(cluster_server, primary_killed_under_load, .init = start_server, .fini = stop_server, .timeout = 120) {
    /* Six users, two per primary; charges flow round robin before, during and after. */
    enum { USERS = 6 };
    char users[USERS][32];
    int ports[USERS];
    int per_port_seen = 0;
    for (int i = 0, k = 0; k < USERS && i < 1000; i++) {
        char tag[64];
        snprintf(users[k], sizeof users[k], "payer%d", i);
        snprintf(tag, sizeof tag, "{w:%s}", users[k]);
        int p = port_of_slot(cc_key_slot(tag, strlen(tag)));
        int same = 0;
        for (int j = 0; j < k; j++) same += ports[j] == p;
        if (same >= 2) continue;
        ports[k++] = p;
        per_port_seen++;
    }
    cr_assert_eq(per_port_seen, USERS, "users spread over the primaries");
    int doomed_port = ports[0], doomed = node_of_port(doomed_port);
    int64_t acked[USERS] = {0};
    int n_ok = 0, n_unavail = 0, n_other = 0;
    char key[64];
    /* Before. */
    for (int round = 0; round < 30; round++)
        for (int u = 0; u < USERS; u++) {
            snprintf(key, sizeof key, "b%d", round);
            cr_assert_eq(charge(users[u], 1, key), GRPC_STATUS_OK, "before the kill");
            acked[u]++;
        }
    /* Redis replicates asynchronously: an acknowledged write not yet on the replica is
     * lost with the primary whatever the client does. Wait until the doomed primary's
     * replica has everything (the load pauses for that instant), then kill it. */
    int rep_port = 0;
    for (int n = 1; n <= cl.nodes && !rep_port; n++) {
        int p = th_rcluster_port(&cl, n);
        if (p != doomed_port && th_info_int(p, "master_port") == doomed_port) rep_port = p;
    }
    cr_assert(rep_port, "the doomed primary has a replica");
    sync_arg sa = {doomed_port, rep_port};
    cr_assert(th_wait_for(replica_synced, &sa, 5, 5000), "replica caught up");
    cr_assert_eq(th_rcluster_kill_node(&cl, doomed), 0);
    uint64_t t0 = th_now_ms(), first_fail = 0, last_fail = 0;
    int ok_rounds_after = 0;
    for (int round = 0; th_now_ms() - t0 < 30000 && ok_rounds_after < 20; round++) {
        int all_ok = 1;
        for (int u = 0; u < USERS; u++) {
            snprintf(key, sizeof key, "d%d", round);
            grpc_status_code code = charge(users[u], 1, key);
            if (code == GRPC_STATUS_OK) {
                acked[u]++, n_ok++;
            } else {
                all_ok = 0;
                if (code == GRPC_STATUS_UNAVAILABLE) n_unavail++;
                else n_other++;
                cr_expect(code == GRPC_STATUS_UNAVAILABLE, "user %d (primary %s): %s", u,
                          ports[u] == doomed_port ? "killed" : "alive", cc_status_name(code));
                cr_expect_eq(ports[u], doomed_port, "a call to a live primary failed: %s", cc_status_name(code));
                if (!first_fail) first_fail = th_now_ms();
                last_fail = th_now_ms();
            }
        }
        ok_rounds_after = all_ok && last_fail ? ok_rounds_after + 1 : 0;
        if (!all_ok) th_pause_ms(20);
    }
    cr_assert_geq(ok_rounds_after, 20, "the server never followed the failover (log %s)", server.log);
    cr_log_info("cluster failover: %d calls OK, %d UNAVAILABLE, %d other; failures from +%llu ms to +%llu ms after "
                "the kill",
                n_ok, n_unavail, n_other, (unsigned long long)(first_fail ? first_fail - t0 : 0),
                (unsigned long long)(last_fail ? last_fail - t0 : 0));
    cr_expect_eq(n_other, 0);
    /* Nothing acknowledged was lost. */
    for (int u = 0; u < USERS; u++)
        cr_expect_eq(balance_of(users[u]), acked[u], "user %d: balance vs acknowledged charges", u);
    cr_assert_eq(th_server_stop(&server), 0, "exit status (log %s)", server.log);
}

/* ---- live resharding under load ---- */
#include "concert/v1/queue.pb-c.h"
#include <sys/wait.h>

static void start_server_metrics(void) {
    start();
    const char *flags[] = {"--admin-key", ADMIN, "--admit-interval-ms", "20", "--rate-user", "0", "--rate-peer", "0",
                           "--metrics", "127.0.0.1:0", NULL};
    th_server_start(&server, cl.url, flags);
    cr_assert(th_server_wait_serving(&server, 10000), "server not SERVING on the cluster (log %s)", server.log);
    cli = cc_client_open(server.addr);
}

static double metric(const char *page, const char *line_start) {
    const char *p = strstr(page, line_start);
    return p ? strtod(p + strlen(line_start), NULL) : -1;
}

Test(cluster_server, slot_of_busy_concert_moves_live, .init = start_server_metrics, .fini = stop_server,
     .timeout = 120) {
    const char *concert = "busy";
    cr_assert_eq(th_admin_catalogue(cli, ADMIN, concert, "d1", 400, 10), GRPC_STATUS_OK);
    int slot = cc_key_slot("{busy}", 6);
    int src_port = port_of_slot(slot), dst = 0;
    for (int n = 1; n <= cl.nodes && !dst; n++)
        if (th_rcluster_port(&cl, n) != src_port && role_is(n, "master")) dst = n;
    cr_assert(dst, "another primary");
    /* Some state in the slot before the move: 60 users, 30 of them holding a seat. */
    char toks[60][128];
    for (int i = 0; i < 60; i++) {
        char user[32];
        snprintf(user, sizeof user, "early%d", i);
        cr_assert_eq(th_active_token(cli, user, concert, toks[i], sizeof toks[i]), 0);
        if (i % 2 == 0) cr_assert_eq(reserve(toks[i], "d1", 1 + i, NULL), GRPC_STATUS_OK);
    }
    /* Move the slot in small batches with pauses, so that the load meets every phase
     * (fenced, ASK, MOVED) while it runs. */
    char slot_s[16], dst_s[16];
    snprintf(slot_s, sizeof slot_s, "%d", slot);
    snprintf(dst_s, sizeof dst_s, "%d", dst);
    char log[400];
    snprintf(log, sizeof log, "%s/move-slot.log", cl.dir);
    char *argv[] = {TH_SOURCE_DIR "/scripts/redis-cluster.sh", "move-slot", "--dir", cl.dir, "--slot", slot_s,
                    "--to-node", dst_s, "--batch", "20", "--pause-ms", "20", NULL};
    pid_t mover = th_spawn(argv, log);
    int calls = 0, failed = 0, done = 0, st = 0;
    int next_user = 0, seat = 200;
    uint64_t t0 = th_now_ms();
    while (!done || calls < 200) {
        if (!done && waitpid(mover, &st, WNOHANG) == mover) done = 1;
        cr_assert(th_now_ms() - t0 < 60000, "the move did not end");
        char user[32];
        snprintf(user, sizeof user, "late%d", next_user++);
        Concert__V1__QueueStatus *qs = NULL;
        cc_status cs;
        grpc_status_code code = th_issue(cli, user, concert, &qs, &cs);
        calls++;
        if (code != GRPC_STATUS_OK) {
            failed++;
            cr_log_error("IssueToken during the move: %s %s", cc_status_name(code), cs.message);
            continue;
        }
        char tok[128];
        snprintf(tok, sizeof tok, "%s", qs->token);
        protobuf_c_message_free_unpacked(&qs->base, NULL);
        code = th_status(cli, tok, NULL, &cs);
        calls++;
        if (code != GRPC_STATUS_OK) failed++, cr_log_error("GetQueueStatus: %s %s", cc_status_name(code), cs.message);
        /* Holders of the early tokens reserve more seats while the data moves. */
        code = reserve(toks[(next_user * 2 + 1) % 60], "d1", seat++, NULL);
        calls++;
        if (code != GRPC_STATUS_OK && code != GRPC_STATUS_RESOURCE_EXHAUSTED)
            failed++, cr_log_error("ReserveSeats: %s", cc_status_name(code));
    }
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "move-slot failed, see %s", log);
    cr_log_info("resharding: %d calls in %llu ms, %d failed", calls, (unsigned long long)(th_now_ms() - t0), failed);
    cr_expect_eq(failed, 0, "calls failed during the move");
    cr_expect_eq(port_of_slot(slot), th_rcluster_port(&cl, dst), "the slot is on the new primary");
    /* The old tokens still work, the state is whole. */
    for (int i = 0; i < 60; i++) cr_expect_eq(th_state(cli, toks[i]), CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE);
    Concert__V1__AuditReport *a = NULL;
    cr_assert_eq(audit(concert, &a), GRPC_STATUS_OK);
    cr_expect_eq(a->n_problems, 0, "audit: %s", a->n_problems ? a->problems[0] : "");
    protobuf_c_message_free_unpacked(&a->base, NULL);
    char *page = th_http(th_metrics_port(&server), "GET", "/metrics");
    double moved = metric(page, "concert_redis_cluster_redirects_total{kind=\"moved\"} ");
    double ask = metric(page, "concert_redis_cluster_redirects_total{kind=\"ask\"} ");
    double again = metric(page, "concert_redis_cluster_redirects_total{kind=\"tryagain\"} ");
    cr_log_info("redirects: moved %.0f, ask %.0f, tryagain %.0f", moved, ask, again);
    cr_expect_gt(moved, 0, "the server learnt the new owner from MOVED");
    cr_expect_gt(ask + again, 0, "the load met the migration");
    free(page);
    cr_assert_eq(th_server_stop(&server), 0, "exit status (log %s)", server.log);
}

/* ---- bad topology: a clear error, UNAVAILABLE, never a hang ---- */

static int log_has(const th_server *s, const char *needle) {
    FILE *fp = fopen(s->log, "r");
    if (!fp) return 0;
    char line[2048];
    int found = 0;
    while (!found && fgets(line, sizeof line, fp)) found = strstr(line, needle) != NULL;
    fclose(fp);
    return found;
}

typedef struct {
    const th_server *s;
    const char *needle;
} log_arg;

static int log_has_cond(void *arg) {
    log_arg *a = arg;
    return log_has(a->s, a->needle);
}

static void unavailable_fast(const char *why) {
    uint64_t t0 = th_now_ms();
    cc_status cs;
    grpc_status_code code = th_issue(cli, "u1", "c1", NULL, &cs);
    uint64_t took = th_now_ms() - t0;
    cr_expect_eq(code, GRPC_STATUS_UNAVAILABLE, "%s: IssueToken %s %s", why, cc_status_name(code), cs.message);
    cr_expect_lt(took, 1000, "%s: answered after %llu ms", why, (unsigned long long)took);
}

Test(cluster_topology, seeds_unreachable, .timeout = 60) {
    char url[128];
    snprintf(url, sizeof url, "redis-cluster://127.0.0.1:%d,127.0.0.1:%d", th_free_port(), th_free_port());
    th_server_start(&server, url, NULL);
    cli = cc_client_open(server.addr);
    unavailable_fast("no seed answers");
    cc_client_close(cli);
    cli = NULL;
    cr_assert_eq(th_server_stop(&server), 0);
}

Test(cluster_topology, node_not_in_cluster_mode, .timeout = 60) {
    th_redis plain;
    memset(&plain, 0, sizeof plain);
    th_redis_start(&plain);
    char url[128];
    snprintf(url, sizeof url, "redis-cluster://127.0.0.1:%d", plain.port);
    th_server_start(&server, url, NULL);
    cli = cc_client_open(server.addr);
    log_arg la = {&server, "event=redis_not_cluster"};
    cr_expect(th_wait_for(log_has_cond, &la, 20, 5000), "a log line says the node is not in cluster mode");
    unavailable_fast("not a cluster node");
    cc_client_close(cli);
    cli = NULL;
    cr_assert_eq(th_server_stop(&server), 0);
    th_redis_stop(&plain);
}
