/* Redis failure drills from DESIGN.md: the primary killed under load with Sentinel
 * failover (the server follows the new primary by itself), and Redis out of memory
 * (RESOURCE_EXHAUSTED, nothing without a TTL evicted, recovery when memory frees). */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "concert/v1/wallet.pb-c.h"
#include "th.h"

#define KEY "drill-key"

static th_redis primary, replica;
static th_server server;
static cc_client *cli;
static pid_t sentinels[3];
static int sentinel_ports[3];
static char sdir[256];

static pid_t spawn_quiet(char *const argv[], const char *log) {
    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) dup2(fd, 1), dup2(fd, 2), close(fd);
        execvp(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static redisReply *cmd_port(int port, const char *fmt, const char *arg) {
    th_redis r = {.port = port};
    redisContext *c = th_redis_connect(&r);
    if (!c) return NULL;
    redisReply *rep = arg ? redisCommand(c, fmt, arg) : redisCommand(c, fmt);
    redisFree(c);
    return rep;
}

static int replica_in_sync(void *arg) {
    redisReply *r = cmd_port(replica.port, "INFO replication", NULL);
    int ok = r && r->type == REDIS_REPLY_STRING && strstr(r->str, "master_link_status:up");
    if (r) freeReplyObject(r);
    return ok;
}

static int sentinels_know_replica(void *arg) {
    for (int i = 0; i < 3; i++) {
        redisReply *r = cmd_port(sentinel_ports[i], "SENTINEL replicas drill", NULL);
        int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1;
        if (r) freeReplyObject(r);
        if (!ok) return 0;
    }
    return 1;
}

static void start_ha(void) {
    memset(&primary, 0, sizeof primary);
    memset(&replica, 0, sizeof replica);
    th_redis_start(&primary);
    th_redis_start(&replica);
    char port[16];
    snprintf(port, sizeof port, "%d", primary.port);
    redisContext *rc = th_redis_connect(&replica);
    freeReplyObject(redisCommand(rc, "REPLICAOF 127.0.0.1 %s", port));
    redisFree(rc);
    cr_assert(th_wait_for(replica_in_sync, NULL, 20, 10000), "replica never synced");
    snprintf(sdir, sizeof sdir, "/tmp/concert-test-sentinel-XXXXXX");
    cr_assert(mkdtemp(sdir));
    char url[256] = "sentinel://";
    for (int i = 0; i < 3; i++) {
        sentinel_ports[i] = th_free_port();
        char conf[300], log[300];
        snprintf(conf, sizeof conf, "%s/s%d.conf", sdir, i);
        snprintf(log, sizeof log, "%s/s%d.log", sdir, i);
        FILE *f = fopen(conf, "w");
        fprintf(f, "port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor drill 127.0.0.1 %d 2\n"
                   "sentinel down-after-milliseconds drill 1000\nsentinel failover-timeout drill 10000\n",
                sentinel_ports[i], sdir, primary.port);
        fclose(f);
        char *argv[] = {"redis-sentinel", conf, NULL};
        sentinels[i] = spawn_quiet(argv, log);
        snprintf(url + strlen(url), sizeof url - strlen(url), "%s127.0.0.1:%d", i ? "," : "", sentinel_ports[i]);
    }
    strcat(url, "/drill");
    cr_assert(th_wait_for(sentinels_know_replica, NULL, 50, 15000), "sentinels never saw the replica");
    /* Charges as fast as the test can send them, from one user: no rate limit. */
    const char *flags[] = {"--admin-key", KEY, "--redis-timeout-ms", "500", "--rate-user", "0", NULL};
    th_server_start(&server, url, flags);
    cli = cc_client_open(server.addr);
}

static void stop_ha(void) {
    th_server_close(&server, &cli);
    for (int i = 0; i < 3; i++)
        if (sentinels[i] > 0) kill(sentinels[i], SIGKILL), waitpid(sentinels[i], NULL, 0), sentinels[i] = 0;
    th_redis_stop(&primary);
    th_redis_stop(&replica);
    th_rmrf(sdir);
}

static grpc_status_code charge(const char *user, int64_t amount, const char *key, int64_t *balance) {
    Concert__V1__ChargeRequest req = CONCERT__V1__CHARGE_REQUEST__INIT;
    req.user_id = (char *)user;
    req.amount = amount;
    req.idempotency_key = (char *)key;
    Concert__V1__ChargeResponse *r = NULL;
    cc_status st;
    grpc_status_code code = cc_client_unary(cli, "/concert.v1.WalletService/Charge", &req.base,
                                            &concert__v1__charge_response__descriptor, (ProtobufCMessage **)&r, NULL,
                                            0, 2000, &st);
    if (r) {
        if (balance) *balance = r->balance;
        protobuf_c_message_free_unpacked(&r->base, NULL);
    }
    return code;
}

Test(drill, redis_primary_killed_sentinel_failover, .init = start_ha, .fini = stop_ha, .timeout = 120) {
    /* Load before, during and after the failover; acknowledged charges must survive. */
    int64_t acked = 0, bal = 0;
    int ok_before = 0, failed_during = 0, ok_after = 0;
    char key[32];
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof key, "before-%d", i);
        if (charge("drill-user", 1, key, &bal) == GRPC_STATUS_OK) ok_before++, acked++;
    }
    cr_assert_eq(ok_before, 50);
    /* Let the replica catch up with what was acknowledged, then kill the primary. */
    redisContext *rc = th_redis_connect(&primary);
    freeReplyObject(redisCommand(rc, "WAIT 1 2000"));
    redisFree(rc);
    th_redis_kill(&primary);
    uint64_t t0 = th_now_ms(), recovered_at = 0;
    for (int i = 0; th_now_ms() - t0 < 30000; i++) {
        snprintf(key, sizeof key, "during-%d", i);
        grpc_status_code code = charge("drill-user", 1, key, &bal);
        if (code == GRPC_STATUS_OK) {
            acked++;
            if (!recovered_at) recovered_at = th_now_ms();
            if (++ok_after >= 20) break;
        } else {
            cr_assert(code == GRPC_STATUS_UNAVAILABLE || code == GRPC_STATUS_DEADLINE_EXCEEDED,
                      "during failover: %s", cc_status_name(code));
            failed_during++;
            th_pause_ms(50);
        }
    }
    cr_assert_geq(ok_after, 20, "the server never followed the new primary");
    cr_log_info("failover: %d calls refused, recovered after %llu ms", failed_during,
                (unsigned long long)(recovered_at - t0));
    cr_expect_lt(recovered_at - t0, 20000, "failover took %llu ms", (unsigned long long)(recovered_at - t0));
    /* Nothing acknowledged was lost: the balance counts every acknowledged charge. */
    Concert__V1__GetBalanceRequest gb = CONCERT__V1__GET_BALANCE_REQUEST__INIT;
    gb.user_id = "drill-user";
    Concert__V1__Balance *b = NULL;
    cr_assert_eq(cc_client_unary(cli, "/concert.v1.WalletService/GetBalance", &gb.base, &concert__v1__balance__descriptor,
                                 (ProtobufCMessage **)&b, NULL, 0, 2000, NULL),
                 GRPC_STATUS_OK);
    cr_expect_eq(b->balance, acked, "balance %lld, acknowledged %lld", (long long)b->balance, (long long)acked);
    protobuf_c_message_free_unpacked(&b->base, NULL);
    /* The replica is the primary now. */
    redisReply *role = cmd_port(replica.port, "ROLE", NULL);
    cr_expect(role && role->type == REDIS_REPLY_ARRAY && !strcmp(role->element[0]->str, "master"));
    if (role) freeReplyObject(role);
    int rc2 = th_server_stop(&server);
    cr_assert_eq(rc2, 0, "server exit status (log %s)", server.log);
}

/* ---- out of memory ---- */

static th_redis small;

static void start_small(void) {
    memset(&small, 0, sizeof small);
    small.maxmemory_mb = 3;
    th_redis_start(&small);
    /* Fills Redis from one address as fast as it can: no rate limit; a queue needs a
     * concert an admin created. */
    const char *flags[] = {"--admit-rate", "0", "--admin-key", KEY, "--rate-peer", "0", NULL};
    th_server_start(&server, small.url, flags);
    cli = cc_client_open(server.addr);
    cr_assert_eq(th_admin_concert(cli, KEY, "oom"), GRPC_STATUS_OK);
}

static void stop_small(void) {
    th_server_close(&server, &cli);
    th_redis_stop(&small);
}

Test(drill, redis_out_of_memory, .init = start_small, .fini = stop_small, .timeout = 120) {
    int64_t bal = 0;
    cr_assert_eq(charge("rich", 1000, "first", &bal), GRPC_STATUS_OK);
    /* Fill memory with waiting users until Redis refuses writes. */
    cc_status st;
    grpc_status_code code = GRPC_STATUS_OK;
    int joined = 0;
    char user[32];
    while (joined < 200000) {
        cc_batch *b = cc_batch_new(cli);
        for (int i = 0; i < 500; i++) {
            snprintf(user, sizeof user, "filler-%d", joined + i);
            Concert__V1__IssueTokenRequest req = CONCERT__V1__ISSUE_TOKEN_REQUEST__INIT;
            req.user_id = user;
            req.concert_id = "oom";
            cc_batch_add(b, "/concert.v1.QueueService/IssueToken", &req.base, NULL, 0, 5000);
        }
        cc_batch_wait(b);
        for (int i = 0; i < 500; i++) {
            grpc_status_code c = cc_batch_result(b, i, NULL, NULL, &st);
            if (c != GRPC_STATUS_OK) code = c;
            else joined++;
        }
        cc_batch_free(b);
        if (code != GRPC_STATUS_OK) break;
    }
    cr_assert_eq(code, GRPC_STATUS_RESOURCE_EXHAUSTED, "a full Redis must say RESOURCE_EXHAUSTED, got %s: %s",
                 cc_status_name(code), st.message);
    /* Client buffers shrink once the burst is over; keep Redis full for what follows. */
    redisContext *rc = th_redis_connect(&small);
    freeReplyObject(redisCommand(rc, "CONFIG SET maxmemory 1mb"));
    cr_expect_eq(charge("rich", 5, "second", NULL), GRPC_STATUS_RESOURCE_EXHAUSTED);
    cc_status st2;
    cr_expect_eq(th_issue(cli, "one-more", "oom", NULL, &st2), GRPC_STATUS_RESOURCE_EXHAUSTED, "%s", st2.message);
    /* Nothing without a TTL was evicted: the balance is intact. */
    Concert__V1__GetBalanceRequest gb = CONCERT__V1__GET_BALANCE_REQUEST__INIT;
    gb.user_id = "rich";
    Concert__V1__Balance *b = NULL;
    cr_assert_eq(cc_client_unary(cli, "/concert.v1.WalletService/GetBalance", &gb.base, &concert__v1__balance__descriptor,
                                 (ProtobufCMessage **)&b, NULL, 0, 2000, NULL),
                 GRPC_STATUS_OK, "reads still work when Redis is full");
    cr_expect_eq(b->balance, 1000);
    protobuf_c_message_free_unpacked(&b->base, NULL);
    redisReply *evicted = redisCommand(rc, "INFO stats");
    cr_expect(strstr(evicted->str, "evicted_keys:0"), "no key may be evicted (none has a TTL here)");
    freeReplyObject(evicted);
    /* Memory frees: the service recovers without a restart. */
    freeReplyObject(redisCommand(rc, "CONFIG SET maxmemory 256mb"));
    redisFree(rc);
    cr_expect_eq(charge("rich", 5, "second", &bal), GRPC_STATUS_OK);
    cr_expect_eq(bal, 1005);
    int rc2 = th_server_stop(&server);
    cr_assert_eq(rc2, 0, "server exit status (log %s)", server.log);
}
