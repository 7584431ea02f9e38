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
