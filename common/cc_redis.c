/* cc_redis: pooled hiredis async connections with timeouts, reconnects, Sentinel
 * discovery, Redis Cluster routing and script loading. See cc_redis.h for the contract.
 *
 * Shape: the pool has nodes, each with cfg.connections connections (rconn). Direct
 * and Sentinel URLs have one node; in cluster mode there is a node per address ever
 * seen (seeds, primaries of the slot map, redirect targets), and `slot_node[slot]`
 * names the primary of each slot. A node that is not a primary of the current map is
 * not "wanted": its connections are dropped and not reconnected. Each node keeps the
 * index of the connection of each lane (small, bulk; see cc_redis.h), chosen when a
 * command finds its lane's connection not up (pick_conn).
 *
 * Ownership: each pending command is a `rreq` holding its own RESP encoding (so it
 * can be resent after MOVED/ASK/TRYAGAIN/NOSCRIPT), linked in its connection's send
 * order (Redis answers in order, so the head is the oldest and the only one the
 * timeout timer needs to watch), or in the pool's retry list while it waits to be
 * resent; a finished one's block goes back to the pool's free list (req_free). A
 * hiredis context is never freed from inside one of its own callbacks (hiredis defers
 * that by itself). Each connection owns the arena its data context builds replies in
 * (rarena, below), freed with the pool like the nodes. */
#include "cc_redis.h"

#include <hiredis/async.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cc_asan.h"
#include "cc_log.h"
#include "cc_redis_uv.h"
#include "cc_sha1.h"
#include "cc_slot.h"

enum { C_DOWN, C_RESOLVING, C_CONNECTING, C_UP, C_IDLE /* node not wanted: no reconnect */ };

#define MAX_REDIRECTS 8
#define RETRY_MIN_MS 10
#define RETRY_MAX_MS 200
#define MAP_RETRY_MS 100 /* map refresh while some slot has no primary up */

struct rconn;
struct rnode;

typedef struct rreq {
    cc_redis_cb cb;
    void *payload;
    struct rconn *conn; /* NULL while in the retry list */
    uint64_t deadline_ms;
    uint64_t retry_at_ms;
    struct rreq *prev, *next;
    int slot;           /* -1: no key */
    int node;           /* >= 0: pinned to this node (cc_redis_command_node) */
    int redirects;
    int no_redirect;    /* MOVED/ASK go to the caller (a fence must stay on its connection) */
    int bulk;           /* 1: the bulk lane (kept through redirects and retries) */
    int noscript_resent;
    int ask_node;       /* >= 0: resend there after ASKING */
    int retry_ms;
    int pooled;         /* 1: a REQ_BLOCK-sized block that goes back to the pool's free list */
    size_t len;
    char *cmd;          /* RESP encoding; points into this allocation or NULL */
    struct rreq *next_free;
} rreq;

/* Requests whose encoding fits in one block (nearly all: the queue path's commands are
 * under 200 bytes) are recycled through the pool's free list instead of malloc/free. */
#define REQ_BLOCK 512
#define FREE_REQS_MAX 1024

/* Replies: built by the lean functions below into the connection's arena instead of a
 * calloc per object (hiredis' default). hiredis builds one reply tree at a time per
 * context and frees it (freeObject on the root) right after its callback, so the arena
 * is simply emptied then. Objects that do not fit go to malloc'd overflow chunks,
 * freed at the same time. */
#define ARENA_BYTES 4096

typedef struct achunk {
    struct achunk *next;
    _Alignas(max_align_t) unsigned char data[];
} achunk;

typedef struct rarena {
    size_t used;
    int busy;         /* a tree is being built or handed out */
    achunk *overflow; /* freed when the tree is */
    size_t ov_used, ov_cap;
    _Alignas(max_align_t) unsigned char data[ARENA_BYTES];
} rarena;

/* The root of a tree carries its arena in front of it: freeObject gets only the root. */
typedef struct {
    rarena *arena;
    _Alignas(max_align_t) redisReply reply;
} rroot;

typedef struct rconn {
    cc_redis *pool;
    struct rnode *node;
    int idx;
    int state;
    redisAsyncContext *ac;  /* the data connection */
    redisAsyncContext *sac; /* a sentinel being asked for the primary */
    int sentinel_idx;
    uv_timer_t timer; /* reconnect backoff, connect timeout or oldest-command timeout */
    int backoff_ms;
    rreq *head, *tail;
    const char *fail_reason;
    char host[256];
    int port;
    rarena *arena; /* the data connection's reply arena (allocated once, freed with the pool) */
} rconn;

typedef struct rnode {
    cc_redis *pool;
    int idx;
    char host[256];
    int port;
    int wanted;
    int n_up;
    int small, bulk;     /* the lanes' connections (indexes into conns), -1 none yet */
    rconn *conns;
    int fence_slot;      /* slot of fence_key, -1 none yet */
    char fence_key[40];  /* cc_redis_wait's fence: a key in a slot this node serves */
} rnode;

struct cc_redis {
    uv_loop_t *loop;
    cc_redis_url url;
    cc_redis_config cfg;
    rnode **nodes;
    int n_nodes, cap_nodes;
    int next_node;
    int up; /* the state reported to state_cb */
    int closing;
    int open_handles;
    cc_redis_script **scripts;
    int n_scripts;
    cc_redis_state_cb state_cb;
    void *state_payload;
    cc_redis_stats stats;
    /* cluster mode */
    int16_t *slot_node; /* CC_SLOTS entries, -1 unknown */
    int map_known;
    int map_inflight, map_again;
    uv_timer_t map_timer;
    int *primaries;     /* node indexes of the map's primaries, in map order */
    int n_primaries;
    /* commands waiting to be resent */
    rreq *retry_head, *retry_tail;
    uv_timer_t retry_timer;
    rreq *free_reqs; /* REQ_BLOCK blocks for reuse (req_new / req_free) */
    size_t n_free_reqs;
};

static void conn_start(rconn *c);
static void conn_down(rconn *c, const char *why);
static void on_timer(uv_timer_t *t);
static void drop_conn(rconn *c, const char *why);
static void update_up(cc_redis *r);
static void refresh_map(cc_redis *r);
static void dispatch(cc_redis *r, rreq *q);

/* ---- URL ---- */

static int parse_hostport(const char *s, size_t len, char *host, int *port) {
    const char *colon = memchr(s, ':', len);
    if (!colon || colon == s) return -1;
    size_t hl = (size_t)(colon - s);
    if (hl >= 256) return -1;
    memcpy(host, s, hl);
    host[hl] = '\0';
    int p = 0;
    const char *q = colon + 1;
    if (q == s + len) return -1;
    for (; q < s + len; q++) {
        if (*q < '0' || *q > '9') return -1;
        p = p * 10 + (*q - '0');
        if (p > 65535) return -1;
    }
    if (p == 0) return -1;
    *port = p;
    return 0;
}

/* host:port[,host:port...] up to `end` into out->host/port. */
static int parse_list(cc_redis_url *out, const char *p, const char *end) {
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        if (out->n_hosts == 8 ||
            parse_hostport(p, (size_t)(e - p), out->host[out->n_hosts], &out->port[out->n_hosts]) < 0)
            return -1;
        out->n_hosts++;
        p = comma ? comma + 1 : end;
    }
    return out->n_hosts > 0 ? 0 : -1;
}

int cc_redis_url_parse(cc_redis_url *out, const char *url, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    const char *rest;
    if (!strncmp(url, "redis://", 8)) {
        rest = url + 8;
        const char *slash = strchr(rest, '/');
        size_t hl = slash ? (size_t)(slash - rest) : strlen(rest);
        if (parse_hostport(rest, hl, out->host[0], &out->port[0]) < 0) {
            snprintf(err, errlen, "redis URL '%s': expected redis://host:port[/db]", url);
            return -1;
        }
        out->n_hosts = 1;
        if (slash && slash[1]) {
            char *end;
            long db = strtol(slash + 1, &end, 10);
            if (*end || db < 0 || db > 1000) {
                snprintf(err, errlen, "redis URL '%s': bad database number", url);
                return -1;
            }
            out->db = (int)db;
        }
        return 0;
    }
    if (!strncmp(url, "sentinel://", 11)) {
        out->sentinel = 1;
        rest = url + 11;
        const char *slash = strchr(rest, '/');
        if (!slash || !slash[1] || strlen(slash + 1) >= sizeof out->master_name) {
            snprintf(err, errlen, "redis URL '%s': expected sentinel://host:port[,host:port]/name", url);
            return -1;
        }
        snprintf(out->master_name, sizeof out->master_name, "%s", slash + 1);
        if (parse_list(out, rest, slash) < 0) {
            snprintf(err, errlen, "redis URL '%s': bad sentinel address list", url);
            return -1;
        }
        return 0;
    }
    if (!strncmp(url, "redis-cluster://", 16)) {
        out->cluster = 1;
        rest = url + 16;
        const char *end = rest + strlen(rest);
        if (end > rest && end[-1] == '/') end--;
        if (parse_list(out, rest, end) < 0) {
            snprintf(err, errlen, "redis URL '%s': expected redis-cluster://host:port[,host:port...] (up to 8 seeds)",
                     url);
            return -1;
        }
        return 0;
    }
    snprintf(err, errlen, "redis URL '%s': scheme must be redis://, sentinel:// or redis-cluster://", url);
    return -1;
}

/* ---- helpers ---- */

static uint64_t now_ms(cc_redis *r) { return uv_now(r->loop); }

char *cc_redis_script_join(const unsigned char *prelude, size_t prelude_len, const unsigned char *body,
                           size_t body_len, size_t *len_out) {
    size_t len = (prelude ? prelude_len + 1 : 0) + body_len;
    char *text = malloc(len + 1);
    if (!text) abort();
    size_t o = 0;
    if (prelude) {
        memcpy(text, prelude, prelude_len);
        text[prelude_len] = '\n';
        o = prelude_len + 1;
    }
    memcpy(text + o, body, body_len);
    text[len] = '\0';
    *len_out = len;
    return text;
}

void cc_redis_script_init(cc_redis_script *s, const char *name, const char *body, size_t len) {
    s->name = name;
    s->body = body;
    s->len = len;
    s->fenced_body = NULL;
    s->fenced_len = 0;
    cc_sha1_hex(s->sha, body, len);
}

static void unlink_req(rconn *c, rreq *q) {
    if (q->prev) q->prev->next = q->next; else c->head = q->next;
    if (q->next) q->next->prev = q->prev; else c->tail = q->prev;
    q->prev = q->next = NULL;
    q->conn = NULL;
}

static void arm_command_timer(rconn *c) {
    if (c->state != C_UP || !c->head || uv_is_active((uv_handle_t *)&c->timer)) return;
    uint64_t now = now_ms(c->pool);
    uint64_t due = c->head->deadline_ms > now ? c->head->deadline_ms - now : 0;
    uv_timer_start(&c->timer, on_timer, due, 0);
}

static void timer_in(rconn *c, uint64_t ms) {
    uv_timer_stop(&c->timer);
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

/* ---- commands: encoding and routing ---- */

static size_t digits(size_t v) {
    size_t n = 1;
    while (v >= 10) v /= 10, n++;
    return n;
}

/* Writes v in decimal at o (digits(v) bytes); returns the end. sprintf was 13 % of
 * the server's instructions under GetQueueStatus load (callgrind, issue 13). */
static char *put_uint(char *o, size_t v) {
    size_t n = digits(v);
    for (size_t i = n; i-- > 0; v /= 10) o[i] = (char)('0' + v % 10);
    return o + n;
}

/* Frees a request (or keeps its block for the next one). */
static void req_free(cc_redis *r, rreq *q) {
    if (!q->pooled || r->n_free_reqs >= FREE_REQS_MAX) {
        free(q);
        return;
    }
    q->next_free = r->free_reqs;
    r->free_reqs = q;
    r->n_free_reqs++;
    CC_POISON(q, offsetof(rreq, next_free)); /* the ASan build still sees a use after "free" */
    CC_POISON(q + 1, REQ_BLOCK - sizeof *q);
}

/* A request with its RESP encoding in the same allocation. */
static rreq *req_new(cc_redis *r, cc_redis_cb cb, void *payload, int argc, const char **argv, const size_t *argvlen) {
    size_t lens_s[16];
    if (!argvlen && argc <= 16) { /* measure each argument once */
        for (int i = 0; i < argc; i++) lens_s[i] = strlen(argv[i]);
        argvlen = lens_s;
    }
    size_t len = 1 + digits((size_t)argc) + 2;
    for (int i = 0; i < argc; i++) {
        size_t l = argvlen ? argvlen[i] : strlen(argv[i]);
        len += 1 + digits(l) + 2 + l + 2;
    }
    rreq *q;
    int pooled = sizeof *q + len + 1 <= REQ_BLOCK;
    if (pooled && r->free_reqs) {
        q = r->free_reqs;
        CC_UNPOISON(q, REQ_BLOCK);
        r->free_reqs = q->next_free;
        r->n_free_reqs--;
    } else if (!(q = malloc(pooled ? REQ_BLOCK : sizeof *q + len + 1))) {
        abort();
    }
    memset(q, 0, sizeof *q);
    q->pooled = pooled;
    q->cmd = (char *)(q + 1);
    char *o = q->cmd;
    *o++ = '*';
    o = put_uint(o, (size_t)argc);
    *o++ = '\r', *o++ = '\n';
    for (int i = 0; i < argc; i++) {
        size_t l = argvlen ? argvlen[i] : strlen(argv[i]);
        *o++ = '$';
        o = put_uint(o, l);
        *o++ = '\r', *o++ = '\n';
        memcpy(o, argv[i], l);
        o += l;
        *o++ = '\r', *o++ = '\n';
    }
    q->len = (size_t)(o - q->cmd);
    q->cb = cb;
    q->payload = payload;
    q->slot = -1;
    q->node = -1;
    q->ask_node = -1;
    q->deadline_ms = now_ms(r) + (uint64_t)r->cfg.command_timeout_ms;
    return q;
}

/* Commands whose argv[1] is not a key (or that have none). */
static int keyless(const char *cmd, size_t len) {
    static const char *const names[] = {"PING", "INFO", "SCRIPT", "WAIT", "TIME", "ROLE", "SELECT", "CLUSTER",
                                        "ASKING", "DBSIZE", "SCAN", "FLUSHALL", "FLUSHDB", "CONFIG", "CLIENT",
                                        "DEBUG", "MEMORY", "COMMAND", "SLOWLOG", "LATENCY", NULL};
    for (int i = 0; names[i]; i++)
        if (strlen(names[i]) == len && !strncasecmp(names[i], cmd, len)) return 1;
    return 0;
}

/* Sets q->slot from the key of the command: argv[1], or for EVAL/EVALSHA the first key
 * (argv[3] when numkeys > 0). */
static void route_key(rreq *q, int argc, const char **argv, const size_t *argvlen) {
    if (argc < 2) return;
    size_t l0 = argvlen ? argvlen[0] : strlen(argv[0]);
    int ki = 1;
    if ((l0 == 4 && !strncasecmp(argv[0], "EVAL", 4)) || (l0 == 7 && !strncasecmp(argv[0], "EVALSHA", 7)) ||
        (l0 == 10 && !strncasecmp(argv[0], "EVALSHA_RO", 10)) || (l0 == 7 && !strncasecmp(argv[0], "EVAL_RO", 7))) {
        if (argc < 4 || strtol(argv[2], NULL, 10) <= 0) return;
        ki = 3;
    } else if (keyless(argv[0], l0)) {
        return;
    }
    q->slot = cc_key_slot(argv[ki], argvlen ? argvlen[ki] : strlen(argv[ki]));
}

/* ---- nodes ---- */

static rnode *node_for(cc_redis *r, const char *host, int port) {
    for (int i = 0; i < r->n_nodes; i++)
        if (r->nodes[i]->port == port && !strcmp(r->nodes[i]->host, host)) return r->nodes[i];
    if (r->n_nodes == r->cap_nodes) {
        r->cap_nodes = r->cap_nodes ? r->cap_nodes * 2 : 8;
        r->nodes = realloc(r->nodes, (size_t)r->cap_nodes * sizeof *r->nodes);
        if (!r->nodes) abort();
    }
    rnode *n = calloc(1, sizeof *n);
    if (!n) abort();
    n->pool = r;
    n->idx = r->n_nodes;
    snprintf(n->host, sizeof n->host, "%s", host);
    n->port = port;
    n->fence_slot = -1;
    n->small = n->bulk = -1;
    n->conns = calloc((size_t)r->cfg.connections, sizeof *n->conns);
    if (!n->conns) abort();
    for (int i = 0; i < r->cfg.connections; i++) {
        rconn *c = &n->conns[i];
        c->pool = r;
        c->node = n;
        c->idx = i;
        c->backoff_ms = 50;
        c->state = C_IDLE;
        snprintf(c->host, sizeof c->host, "%s", host);
        c->port = port;
        uv_timer_init(r->loop, &c->timer);
        c->timer.data = c;
        r->open_handles++;
    }
    r->nodes[r->n_nodes++] = n;
    return n;
}

/* Starts (or stops) keeping the node's connections up. */
static void node_want(rnode *n, int want) {
    if (n->wanted == want) return;
    n->wanted = want;
    for (int i = 0; i < n->pool->cfg.connections; i++) {
        rconn *c = &n->conns[i];
        if (want && c->state == C_IDLE) {
            c->state = C_DOWN;
            c->backoff_ms = 50;
            timer_in(c, 0);
        } else if (!want && c->state != C_IDLE) {
            if (c->ac) drop_conn(c, "node left the slot map");
            uv_timer_stop(&c->timer);
            c->state = C_IDLE;
        }
    }
}

static int conn_is_up(const rnode *n, int i) { return i >= 0 && n->conns[i].state == C_UP && n->conns[i].ac; }

/* The first connection up other than `not`, or -1. */
static int first_up(const rnode *n, int not) {
    for (int i = 0; i < n->pool->cfg.connections; i++)
        if (i != not && conn_is_up(n, i)) return i;
    return -1;
}

/* The connection of a lane (cc_redis.h, "Lanes"). The small lane keeps its connection
 * while it is up (so that its commands stay in order and a loop turn's leave in one
 * write); when it is down the lane takes the first up that is not the bulk lane's, or
 * the bulk lane's when no other is. The bulk lane takes the first up other than the
 * small lane's, or shares the small lane's when there is none (re-chosen on every
 * command while it shares, so it leaves as soon as a second connection is up). Two
 * array reads per command while both lanes' connections stay up. */
static rconn *pick_conn(rnode *n, int bulk) {
    if (!conn_is_up(n, n->small)) {
        int i = first_up(n, conn_is_up(n, n->bulk) ? n->bulk : -1);
        if (i < 0) i = first_up(n, -1);
        if (i < 0) return NULL;
        n->small = i;
    }
    if (!bulk) return &n->conns[n->small];
    if (n->bulk == n->small || !conn_is_up(n, n->bulk)) n->bulk = first_up(n, n->small);
    return &n->conns[n->bulk >= 0 ? n->bulk : n->small];
}

/* Any node with a connection up, round robin (keyless commands, map refreshes). */
static rnode *any_up_node(cc_redis *r) {
    for (int i = 0; i < r->n_nodes; i++) {
        rnode *n = r->nodes[(r->next_node + i) % r->n_nodes];
        if (n->wanted && n->n_up > 0) {
            r->next_node = (n->idx + 1) % r->n_nodes;
            return n;
        }
    }
    return NULL;
}

/* The node a request goes to now, or NULL when it has no connection up. */
static rnode *target_of(cc_redis *r, const rreq *q) {
    if (q->ask_node >= 0) return r->nodes[q->ask_node];
    if (q->node >= 0) return r->nodes[q->node];
    if (r->url.cluster && q->slot >= 0)
        /* No map yet (or not a cluster at all), or a slot nobody serves: nowhere. */
        return r->slot_node[q->slot] >= 0 ? r->nodes[r->slot_node[q->slot]] : NULL;
    return r->url.cluster ? any_up_node(r) : r->nodes[0];
}

/* ---- replies ---- */

static void on_reply(redisAsyncContext *ac, void *rv, void *privdata);

static void link_req(rconn *c, rreq *q) {
    q->conn = c;
    q->prev = c->tail;
    q->next = NULL;
    if (c->tail) c->tail->next = q; else c->head = q;
    c->tail = q;
    c->pool->stats.sent++;
    arm_command_timer(c);
}

static int send_on(rconn *c, rreq *q) {
    if (redisAsyncFormattedCommand(c->ac, on_reply, q, q->cmd, q->len) != REDIS_OK) return -1;
    link_req(c, q);
    return 0;
}

/* Internal commands (SELECT, ROLE, SCRIPT LOAD, ASKING, CLUSTER SLOTS) on one connection. */
static int send_internal(rconn *c, cc_redis_cb cb, void *payload, int argc, const char **argv, const size_t *lens) {
    rreq *q = req_new(c->pool, cb, payload, argc, argv, lens);
    if (send_on(c, q) < 0) {
        req_free(c->pool, q);
        return -1;
    }
    return 0;
}

static void load_scripts(rconn *c) {
    cc_redis *r = c->pool;
    for (int i = 0; i < r->n_scripts; i++) {
        const cc_redis_script *sc = r->scripts[i];
        int f = r->url.cluster && sc->fenced_body;
        const char *argv[] = {"SCRIPT", "LOAD", f ? sc->fenced_body : sc->body};
        size_t lens[] = {6, 4, f ? sc->fenced_len : sc->len};
        send_internal(c, NULL, NULL, 3, argv, lens);
    }
}

static void retry_later(cc_redis *r, rreq *q, int ms);

static void finish(cc_redis *r, rreq *q, redisReply *reply, const char *err) {
    if (q->cb) q->cb(reply, err, q->payload);
    req_free(r, q);
}

/* "MOVED 3999 127.0.0.1:6381" / "ASK ..." -> node (created if new), slot. */
static rnode *redirect_target(cc_redis *r, const char *s, int *slot) {
    const char *sp = strchr(s, ' ');
    if (!sp) return NULL;
    *slot = atoi(sp + 1);
    const char *addr = strchr(sp + 1, ' ');
    if (!addr) return NULL;
    addr++;
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || *slot < 0 || *slot >= CC_SLOTS) return NULL;
    char host[256];
    size_t hl = (size_t)(colon - addr);
    if (hl >= sizeof host) return NULL;
    memcpy(host, addr, hl);
    host[hl] = '\0';
    int port = atoi(colon + 1);
    if (port <= 0 || port > 65535) return NULL;
    return node_for(r, host, port);
}

/* Cluster and script replies that are handled here rather than by the caller: 1 when
 * the request was taken over (resent or queued for a retry). */
static int take_over(rconn *c, rreq *q, redisReply *reply) {
    cc_redis *r = c->pool;
    if (reply->type != REDIS_REPLY_ERROR || !q->cmd) return 0;
    const char *s = reply->str;
    if (!strncmp(s, "NOSCRIPT", 8)) {
        if (q->noscript_resent || c->state != C_UP || !c->ac) return 0;
        /* Someone flushed the script cache or this is a new primary: load again on this
         * connection and resend behind the loads (same connection, so in order). */
        r->stats.noscript++;
        q->noscript_resent = 1;
        CC_WARN("redis_noscript", "conn=%d host=%s port=%d", c->idx, c->host, c->port);
        load_scripts(c);
        return send_on(c, q) == 0;
    }
    if (!r->url.cluster || q->no_redirect) return 0;
    int moved = !strncmp(s, "MOVED ", 6), ask = !strncmp(s, "ASK ", 4);
    if (moved || ask) {
        if (++q->redirects > MAX_REDIRECTS) return 0;
        int slot = -1;
        rnode *n = redirect_target(r, s, &slot);
        if (!n) return 0;
        if (moved) {
            r->stats.moved++;
            r->slot_node[slot] = (int16_t)n->idx;
            node_want(n, 1);
            q->ask_node = -1;
            refresh_map(r);
        } else {
            r->stats.asks++;
            node_want(n, 1);
            q->ask_node = n->idx;
        }
        dispatch(r, q);
        return 1;
    }
    if (!strncmp(s, "TRYAGAIN", 8) || !strncmp(s, "CLUSTERDOWN", 11)) {
        if (now_ms(r) >= q->deadline_ms) return 0;
        r->stats.retries++;
        q->retry_ms = q->retry_ms ? q->retry_ms * 2 : RETRY_MIN_MS;
        if (q->retry_ms > RETRY_MAX_MS) q->retry_ms = RETRY_MAX_MS;
        if (s[0] == 'C') refresh_map(r);
        retry_later(r, q, q->retry_ms);
        return 1;
    }
    return 0;
}

static void on_reply(redisAsyncContext *ac, void *rv, void *privdata) {
    rreq *q = privdata;
    rconn *c = q->conn;
    cc_redis *r = c->pool;
    redisReply *reply = rv;
    unlink_req(c, q);
    if (!reply) {
        r->stats.errors++;
        finish(r, q, NULL, c->fail_reason ? c->fail_reason : "disconnected");
        return;
    }
    r->stats.replies++;
    if (ac == c->ac && take_over(c, q, reply)) return;
    int readonly = reply->type == REDIS_REPLY_ERROR && !strncmp(reply->str, "READONLY", 8);
    finish(r, q, reply, NULL);
    if (readonly && ac == c->ac) {
        CC_WARN("redis_not_primary", "conn=%d host=%s port=%d", c->idx, c->host, c->port);
        drop_conn(c, "not primary");
    }
}

/* ---- sending: now, or later from the retry list ---- */

static void on_retry_timer(uv_timer_t *t);

static void arm_retry_timer(cc_redis *r) {
    if (!r->retry_head || r->closing) return;
    uint64_t now = now_ms(r), due = UINT64_MAX;
    for (rreq *q = r->retry_head; q; q = q->next)
        if (q->retry_at_ms < due) due = q->retry_at_ms;
    uv_timer_start(&r->retry_timer, on_retry_timer, due > now ? due - now : 0, 0);
}

static void retry_later(cc_redis *r, rreq *q, int ms) {
    q->conn = NULL;
    q->retry_at_ms = now_ms(r) + (uint64_t)ms;
    q->prev = r->retry_tail;
    q->next = NULL;
    if (r->retry_tail) r->retry_tail->next = q; else r->retry_head = q;
    r->retry_tail = q;
    arm_retry_timer(r);
}

/* Sends a (re)routed request: on its target's connection, else into the retry list
 * until the deadline. */
static void dispatch(cc_redis *r, rreq *q) {
    rnode *n = target_of(r, q);
    rconn *c = n ? pick_conn(n, q->bulk) : NULL;
    if (c) {
        if (q->ask_node >= 0) {
            const char *argv[] = {"ASKING"};
            send_internal(c, NULL, NULL, 1, argv, NULL);
            q->ask_node = -1; /* ASK is for one attempt */
        }
        if (send_on(c, q) == 0) return;
    }
    if (now_ms(r) >= q->deadline_ms || r->closing) {
        r->stats.errors++;
        finish(r, q, NULL, r->closing ? "closing" : "cluster node unreachable");
        return;
    }
    q->retry_ms = q->retry_ms ? q->retry_ms * 2 : RETRY_MIN_MS;
    if (q->retry_ms > RETRY_MAX_MS) q->retry_ms = RETRY_MAX_MS;
    retry_later(r, q, q->retry_ms);
}

static void on_retry_timer(uv_timer_t *t) {
    cc_redis *r = t->data;
    uint64_t now = now_ms(r);
    rreq *due = NULL, **tail = &due;
    for (rreq *q = r->retry_head, *next; q; q = next) {
        next = q->next;
        if (q->retry_at_ms > now) continue;
        if (q->prev) q->prev->next = q->next; else r->retry_head = q->next;
        if (q->next) q->next->prev = q->prev; else r->retry_tail = q->prev;
        q->prev = q->next = NULL;
        *tail = q;
        tail = &q->next;
    }
    for (rreq *q = due, *next; q; q = next) {
        next = q->next;
        q->next = NULL;
        dispatch(r, q);
    }
    arm_retry_timer(r);
}

/* ---- cluster slot map ---- */

static int covered_now(cc_redis *r);

static void on_map_timer(uv_timer_t *t) { refresh_map(t->data); }

static void map_retry_soon(cc_redis *r) {
    if (!r->closing && !uv_is_active((uv_handle_t *)&r->map_timer))
        uv_timer_start(&r->map_timer, on_map_timer, MAP_RETRY_MS, 0);
}

/* CLUSTER SLOTS: [[start, end, [host, port, id], replicas...], ...] */
static void on_slots(redisReply *reply, const char *err, void *payload) {
    cc_redis *r = payload;
    r->map_inflight = 0;
    if (r->closing) return;
    if (!reply || reply->type != REDIS_REPLY_ARRAY) {
        const char *why = reply && reply->type == REDIS_REPLY_ERROR ? reply->str : err ? err : "unexpected reply";
        if (reply && reply->type == REDIS_REPLY_ERROR && strstr(why, "cluster support disabled"))
            CC_ERROR("redis_not_cluster", "reason=\"%s\" hint=\"use redis:// or sentinel:// for this server\"", why);
        else
            CC_WARN("redis_cluster_map_failed", "reason=\"%s\"", why);
        map_retry_soon(r);
        return;
    }
    int16_t *map = malloc(CC_SLOTS * sizeof *map);
    if (!map) abort();
    for (int i = 0; i < CC_SLOTS; i++) map[i] = -1;
    int *prim = calloc((size_t)reply->elements + 1, sizeof *prim), n_prim = 0;
    if (!prim) abort();
    for (size_t i = 0; i < reply->elements; i++) {
        redisReply *e = reply->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 || e->element[2]->type != REDIS_REPLY_ARRAY ||
            e->element[2]->elements < 2)
            continue;
        long long a = e->element[0]->integer, b = e->element[1]->integer;
        redisReply *h = e->element[2]->element[0], *p = e->element[2]->element[1];
        if (h->type != REDIS_REPLY_STRING || p->type != REDIS_REPLY_INTEGER || a < 0 || b >= CC_SLOTS || a > b)
            continue;
        /* An empty host means "the address you reached me on" (Redis 7). */
        const char *host = h->len ? h->str : "127.0.0.1";
        rnode *n = node_for(r, host, (int)p->integer);
        int seen = 0;
        for (int k = 0; k < n_prim; k++) seen |= prim[k] == n->idx;
        if (!seen) prim[n_prim++] = n->idx;
        for (long long s = a; s <= b; s++) map[s] = (int16_t)n->idx;
    }
    int covered = 1;
    for (int s = 0; s < CC_SLOTS && covered; s++) covered = map[s] >= 0;
    memcpy(r->slot_node, map, CC_SLOTS * sizeof *map);
    free(map);
    free(r->primaries);
    r->primaries = prim;
    r->n_primaries = n_prim;
    int first = !r->map_known;
    r->map_known = 1;
    for (int i = 0; i < r->n_nodes; i++) {
        int want = 0;
        for (int k = 0; k < n_prim; k++) want |= prim[k] == i;
        node_want(r->nodes[i], want);
    }
    if (first || !covered) CC_INFO("redis_cluster_map", "primaries=%d covered=%d", n_prim, covered);
    update_up(r);
    /* A slot without a primary, or a primary we cannot reach (being failed over):
     * ask again soon, until the cluster has promoted a replica. */
    if (!covered_now(r)) map_retry_soon(r);
    if (r->map_again) {
        r->map_again = 0;
        refresh_map(r);
    }
}

/* Asks any node that is up for the slot map; coalesced (one in flight, one more after). */
static void refresh_map(cc_redis *r) {
    if (!r->url.cluster || r->closing) return;
    if (r->map_inflight) {
        r->map_again = 1;
        return;
    }
    rconn *c = NULL;
    for (int i = 0; i < r->n_nodes && !c; i++) {
        rnode *n = r->nodes[(r->next_node + i) % r->n_nodes];
        if (n->n_up > 0) c = pick_conn(n, 0);
    }
    if (!c) {
        map_retry_soon(r); /* nothing up: try again soon (connections are reconnecting) */
        return;
    }
    const char *argv[] = {"CLUSTER", "SLOTS"};
    if (send_internal(c, on_slots, r, 2, argv, NULL) == 0) r->map_inflight = 1;
}

/* ---- connection life cycle ---- */

static int covered_now(cc_redis *r) {
    if (!r->url.cluster) return r->nodes[0]->n_up > 0;
    if (!r->map_known) return 0;
    for (int k = 0; k < r->n_primaries; k++)
        if (r->nodes[r->primaries[k]]->n_up == 0) return 0;
    for (int s = 0; s < CC_SLOTS; s++)
        if (r->slot_node[s] < 0) return 0;
    return 1;
}

static void update_up(cc_redis *r) {
    int up = covered_now(r);
    if (up == r->up) return;
    r->up = up;
    if (r->url.cluster) {
        if (up) CC_INFO("redis_up", "mode=cluster primaries=%d", r->n_primaries);
        else CC_WARN("redis_down", "mode=cluster primaries=%d", r->n_primaries);
    }
    if (r->state_cb) r->state_cb(up, r->state_payload);
}

static void set_up(rconn *c, int up) {
    rnode *n = c->node;
    cc_redis *r = c->pool;
    int before = n->n_up > 0;
    n->n_up += up ? 1 : -1;
    int after = n->n_up > 0;
    if (before != after && !r->url.cluster) {
        if (after) CC_INFO("redis_up", "host=%s port=%d", c->host, c->port);
        else CC_WARN("redis_down", "host=%s port=%d", c->host, c->port);
    }
    if (r->url.cluster && before != after) {
        if (after) CC_DEBUG("redis_node_up", "host=%s port=%d", n->host, n->port);
        else if (n->wanted) CC_WARN("redis_node_down", "host=%s port=%d", n->host, n->port);
        /* A primary lost (failover?) or a node back: learn the map again. */
        refresh_map(r);
    }
    update_up(r);
}

static void on_role(redisReply *reply, const char *err, void *payload) {
    rconn *c = payload;
    if (!reply || c->state != C_UP) return;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
        reply->element[0]->type != REDIS_REPLY_STRING || strcmp(reply->element[0]->str, "master")) {
        CC_WARN("redis_not_primary", "conn=%d host=%s port=%d", c->idx, c->host, c->port);
        drop_conn(c, "not primary");
    }
}

static void on_connect(const redisAsyncContext *cac, int status) {
    rconn *c = cac->data;
    if (!c) return;
    cc_redis *r = c->pool;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback. */
        c->ac = NULL;
        conn_down(c, cac->errstr);
        return;
    }
    uv_timer_stop(&c->timer);
    c->state = C_UP;
    c->backoff_ms = 50;
    c->fail_reason = NULL;
    CC_DEBUG("redis_connected", "conn=%d host=%s port=%d", c->idx, c->host, c->port);
    if (r->url.db) {
        char db[16];
        snprintf(db, sizeof db, "%d", r->url.db);
        const char *argv[] = {"SELECT", db};
        send_internal(c, NULL, NULL, 2, argv, NULL);
    }
    if (r->url.sentinel) {
        const char *argv[] = {"ROLE"};
        send_internal(c, on_role, c, 1, argv, NULL);
    }
    load_scripts(c);
    set_up(c, 1);
    if (r->url.cluster && !r->map_known) refresh_map(r);
}

static void on_disconnect(const redisAsyncContext *cac, int status) {
    rconn *c = cac->data;
    if (!c) return; /* we dropped it ourselves */
    c->ac = NULL;
    conn_down(c, status == REDIS_OK ? "closed" : cac->errstr);
}

/* ---- replies built in the connection's arena ---- */

static void *arena_take(rarena *a, size_t n) {
    n = (n + _Alignof(max_align_t) - 1) & ~(_Alignof(max_align_t) - 1);
    if (n <= ARENA_BYTES - a->used) {
        void *p = a->data + a->used;
        a->used += n;
        CC_UNPOISON(p, n);
        return p;
    }
    if (!a->overflow || n > a->ov_cap - a->ov_used) {
        size_t cap = n > 16384 ? n : 16384;
        achunk *ch = malloc(sizeof *ch + cap);
        if (!ch) return NULL; /* hiredis: out of memory */
        ch->next = a->overflow;
        a->overflow = ch;
        a->ov_used = 0;
        a->ov_cap = cap;
    }
    void *p = a->overflow->data + a->ov_used;
    a->ov_used += n;
    return p;
}

/* A new reply object of `type`, linked into its parent array (as hiredis' own). */
static redisReply *lean_obj(const redisReadTask *task, int type) {
    rarena *a = task->privdata;
    redisReply *o;
    if (!task->parent) {
        /* A new tree: the arena is empty (the last tree was freed after its callback). */
        a->busy = 1;
        rroot *root = arena_take(a, sizeof *root);
        if (!root) return NULL;
        root->arena = a;
        o = &root->reply;
    } else {
        o = arena_take(a, sizeof *o);
        if (!o) return NULL;
    }
    memset(o, 0, sizeof *o);
    o->type = type;
    if (task->parent) ((redisReply *)task->parent->obj)->element[task->idx] = o;
    return o;
}

static void *lean_string(const redisReadTask *task, char *str, size_t len) {
    redisReply *o = lean_obj(task, task->type);
    if (!o) return NULL;
    char *buf = arena_take(task->privdata, len + 1);
    if (!buf) return NULL;
    memcpy(buf, str, len);
    buf[len] = '\0';
    o->str = buf;
    o->len = len;
    return o;
}

static void *lean_array(const redisReadTask *task, int elements) {
    redisReply *o = lean_obj(task, REDIS_REPLY_ARRAY);
    if (!o) return NULL;
    if (elements > 0) {
        o->element = arena_take(task->privdata, (size_t)elements * sizeof *o->element);
        if (!o->element) return NULL;
        memset(o->element, 0, (size_t)elements * sizeof *o->element);
    }
    o->elements = (size_t)elements;
    return o;
}

static void *lean_integer(const redisReadTask *task, long long value) {
    redisReply *o = lean_obj(task, REDIS_REPLY_INTEGER);
    if (o) o->integer = value;
    return o;
}

static void *lean_nil(const redisReadTask *task) { return lean_obj(task, REDIS_REPLY_NIL); }

/* Called by hiredis on a root only: after the callback, or for a tree it gives up. */
static void lean_free(void *obj) {
    if (!obj) return;
    rarena *a = ((rroot *)((char *)obj - offsetof(rroot, reply)))->arena;
    while (a->overflow) {
        achunk *ch = a->overflow;
        a->overflow = ch->next;
        free(ch);
    }
    a->used = 0;
    a->busy = 0;
    CC_POISON(a->data, ARENA_BYTES); /* the ASan build sees a reply used after its callback */
}

static redisReplyObjectFunctions lean_functions = {lean_string, lean_array, lean_integer, lean_nil, lean_free};

/* Has the context's reader build replies in c's arena. A previous context of c that
 * still holds a half-read tree (it cannot, but if) keeps the arena: then this one
 * keeps hiredis' own functions. */
static void use_arena(rconn *c, redisAsyncContext *ac) {
    if (!c->arena) {
        c->arena = malloc(sizeof *c->arena);
        if (!c->arena) abort();
        c->arena->used = 0;
        c->arena->busy = 0;
        c->arena->overflow = NULL;
        CC_POISON(c->arena->data, ARENA_BYTES);
    }
    if (c->arena->busy || !ac->c.reader) return;
    ac->c.reader->fn = &lean_functions;
    ac->c.reader->privdata = c->arena;
}

/* Attaches a new context to the loop. */
/* Our adapter (cc_redis_uv.c), not hiredis 0.14's: it acts on poll errors. */
static int attach(cc_redis *r, redisAsyncContext *ac) { return cc_redis_uv_attach(ac, r->loop); }

static void connect_data(rconn *c) {
    cc_redis *r = c->pool;
    redisAsyncContext *ac = redisAsyncConnect(c->host, c->port);
    if (!ac || ac->err) {
        const char *why = ac ? ac->errstr : "out of memory";
        CC_WARN("redis_connect_failed", "conn=%d host=%s port=%d reason=\"%s\"", c->idx, c->host, c->port, why);
        if (ac) redisAsyncFree(ac);
        conn_down(c, "connect failed");
        return;
    }
    ac->data = c;
    if (attach(r, ac) != REDIS_OK) {
        redisAsyncFree(ac);
        conn_down(c, "attach failed");
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    use_arena(c, ac);
    c->ac = ac;
    c->state = C_CONNECTING;
    timer_in(c, (uint64_t)r->cfg.connect_timeout_ms);
}

/* Sentinel discovery: ask sentinels in turn for the primary's address. */
static void sentinel_next(rconn *c);

static void free_sentinel(rconn *c) {
    redisAsyncContext *sac = c->sac;
    if (!sac) return;
    c->sac = NULL;
    sac->data = NULL;
    redisAsyncFree(sac);
}

static void on_sentinel_reply(redisAsyncContext *sac, void *rv, void *privdata) {
    rconn *c = privdata;
    redisReply *reply = rv;
    if (!c || c->sac != sac) return;
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
        reply->element[0]->type == REDIS_REPLY_STRING && reply->element[1]->type == REDIS_REPLY_STRING) {
        snprintf(c->host, sizeof c->host, "%s", reply->element[0]->str);
        c->port = atoi(reply->element[1]->str);
        free_sentinel(c); /* deferred by hiredis: we are inside its callback */
        connect_data(c);
        return;
    }
    free_sentinel(c);
    c->sentinel_idx++;
    sentinel_next(c);
}

static void on_sentinel_connect(const redisAsyncContext *cac, int status) {
    rconn *c = cac->data;
    if (!c) return;
    if (status != REDIS_OK) {
        c->sac = NULL; /* freed by hiredis */
        c->sentinel_idx++;
        sentinel_next(c);
    }
}

static void on_sentinel_disconnect(const redisAsyncContext *cac, int status) {
    rconn *c = cac->data;
    if (!c || c->sac != cac) return;
    c->sac = NULL;
    c->sentinel_idx++;
    sentinel_next(c);
}

static void sentinel_next(rconn *c) {
    cc_redis *r = c->pool;
    if (c->sentinel_idx >= r->url.n_hosts) {
        conn_down(c, "no sentinel answered");
        return;
    }
    int i = c->sentinel_idx;
    redisAsyncContext *sac = redisAsyncConnect(r->url.host[i], r->url.port[i]);
    if (!sac || sac->err || attach(r, sac) != REDIS_OK) {
        if (sac) redisAsyncFree(sac);
        c->sentinel_idx++;
        sentinel_next(c);
        return;
    }
    sac->data = c;
    redisAsyncSetConnectCallback(sac, on_sentinel_connect);
    redisAsyncSetDisconnectCallback(sac, on_sentinel_disconnect);
    c->sac = sac;
    redisAsyncCommand(sac, on_sentinel_reply, c, "SENTINEL get-master-addr-by-name %s", r->url.master_name);
}

static void conn_start(rconn *c) {
    cc_redis *r = c->pool;
    if (r->closing || !c->node->wanted) return;
    if (r->url.sentinel) {
        c->state = C_RESOLVING;
        c->sentinel_idx = 0;
        timer_in(c, (uint64_t)r->cfg.connect_timeout_ms * (uint64_t)(r->url.n_hosts + 1));
        sentinel_next(c);
    } else {
        connect_data(c);
    }
}

static void conn_down(rconn *c, const char *why) {
    cc_redis *r = c->pool;
    int was_up = c->state == C_UP;
    c->state = c->node->wanted ? C_DOWN : C_IDLE;
    if (was_up) set_up(c, 0);
    if (r->closing || c->state == C_IDLE) return;
    r->stats.reconnects++;
    CC_DEBUG("redis_reconnect_scheduled", "conn=%d in_ms=%d reason=\"%s\"", c->idx, c->backoff_ms, why ? why : "");
    timer_in(c, (uint64_t)c->backoff_ms);
    c->backoff_ms = c->backoff_ms * 2 > r->cfg.max_backoff_ms ? r->cfg.max_backoff_ms : c->backoff_ms * 2;
}

/* Drops the data connection now: every pending command fails with `why`. */
static void drop_conn(rconn *c, const char *why) {
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    c->fail_reason = why;
    if (ac) {
        ac->data = NULL;
        /* Pending callbacks run now, or right after the current hiredis callback. */
        redisAsyncFree(ac);
    }
    conn_down(c, why);
}

static void on_timer(uv_timer_t *t) {
    rconn *c = t->data;
    cc_redis *r = c->pool;
    switch (c->state) {
    case C_DOWN:
        conn_start(c);
        break;
    case C_RESOLVING:
    case C_CONNECTING:
        CC_WARN("redis_connect_timeout", "conn=%d host=%s port=%d", c->idx, c->host, c->port);
        free_sentinel(c);
        if (c->ac) {
            redisAsyncContext *ac = c->ac;
            c->ac = NULL;
            ac->data = NULL;
            redisAsyncFree(ac);
        }
        conn_down(c, "connect timeout");
        break;
    case C_UP:
        if (c->head && c->head->deadline_ms <= now_ms(r)) {
            r->stats.timeouts++;
            CC_WARN("redis_timeout", "conn=%d host=%s port=%d timeout_ms=%d", c->idx, c->host, c->port,
                    r->cfg.command_timeout_ms);
            drop_conn(c, "timeout");
        } else {
            arm_command_timer(c);
        }
        break;
    case C_IDLE:
        break;
    }
}

/* ---- public API ---- */

int cc_redis_create(cc_redis **out, uv_loop_t *loop, const cc_redis_config *cfg, char *err, size_t errlen) {
    cc_redis *r = calloc(1, sizeof *r);
    if (!r) abort();
    if (cc_redis_url_parse(&r->url, cfg->url, err, errlen) < 0) {
        free(r);
        return -1;
    }
    r->loop = loop;
    r->cfg = *cfg;
    if (r->cfg.connections <= 0) r->cfg.connections = 2;
    if (r->cfg.command_timeout_ms <= 0) r->cfg.command_timeout_ms = 2000;
    if (r->cfg.connect_timeout_ms <= 0) r->cfg.connect_timeout_ms = 1000;
    if (r->cfg.max_backoff_ms <= 0) r->cfg.max_backoff_ms = 2000;
    uv_timer_init(loop, &r->retry_timer);
    r->retry_timer.data = r;
    uv_timer_init(loop, &r->map_timer);
    r->map_timer.data = r;
    r->open_handles += 2;
    /* Direct: the URL's address. Sentinel: one node whose connections resolve their own
     * address. Cluster: the seeds, until the first slot map names the primaries. */
    int seeds = r->url.cluster ? r->url.n_hosts : 1;
    if (r->url.cluster) {
        r->slot_node = malloc(CC_SLOTS * sizeof *r->slot_node);
        if (!r->slot_node) abort();
        for (int i = 0; i < CC_SLOTS; i++) r->slot_node[i] = -1;
    }
    for (int i = 0; i < seeds; i++) {
        rnode *n = node_for(r, r->url.sentinel ? "" : r->url.host[i], r->url.sentinel ? 0 : r->url.port[i]);
        n->wanted = 1;
        for (int k = 0; k < r->cfg.connections; k++) n->conns[k].state = C_DOWN;
    }
    *out = r;
    /* Connect on the next loop turn, after the caller has set scripts and callbacks. */
    for (int i = 0; i < r->n_nodes; i++)
        for (int k = 0; k < r->cfg.connections; k++) timer_in(&r->nodes[i]->conns[k], 0);
    return 0;
}

/* The migration fence (cluster mode only). Our scripts touch keys they do not
 * declare (all in the slot of their first key, built from its `cc:{T}:` prefix). While
 * a slot moves between nodes, Redis redirects a command by its declared keys only, so
 * such a script could run where half of its keys are missing and leave partial
 * effects. scripts/redis-cluster.sh move-slot therefore sets `cc:{T}:frozen` on both
 * nodes for every tag of the slot until the move is over, and every script first
 * checks it and answers TRYAGAIN, which this pool retries within the command's
 * timeout. One EXISTS per script call, and only on a cluster. */
static const char fence[] =
    "do local t = string.match(KEYS[1] or '', '^cc:{[^}]*}:') "
    "if t and redis.call('EXISTS', t .. 'frozen') == 1 then "
    "return redis.error_reply('TRYAGAIN ' .. t .. ' is moving to another cluster node') end end\n";

void cc_redis_set_scripts(cc_redis *r, cc_redis_script **scripts, int n) {
    r->scripts = scripts;
    r->n_scripts = n;
    if (!r->url.cluster) return;
    for (int i = 0; i < n; i++) {
        cc_redis_script *sc = scripts[i];
        if (sc->fenced_body) continue; /* a second pool */
        sc->fenced_body = cc_redis_script_join((const unsigned char *)fence, sizeof fence - 2,
                                               (const unsigned char *)sc->body, sc->len, &sc->fenced_len);
        cc_sha1_hex(sc->fenced_sha, sc->fenced_body, sc->fenced_len);
    }
}

void cc_redis_set_state_cb(cc_redis *r, cc_redis_state_cb cb, void *payload) {
    r->state_cb = cb;
    r->state_payload = payload;
}

int cc_redis_is_up(const cc_redis *r) { return r->up; }

int cc_redis_is_cluster(const cc_redis *r) { return r->url.cluster; }

int cc_redis_n_nodes(const cc_redis *r) { return r->url.cluster ? r->n_primaries : 1; }

const char *cc_redis_node_addr(const cc_redis *r, int node, char *buf, size_t len) {
    buf[0] = '\0';
    if (node < 0 || node >= cc_redis_n_nodes(r)) return buf;
    const rnode *n = r->nodes[r->url.cluster ? r->primaries[node] : 0];
    const rconn *c = &n->conns[0];
    if (c->host[0]) snprintf(buf, len, "%s:%d", c->host, c->port);
    return buf;
}

/* Sends q now, or returns -1 (and frees it) when its target has no connection up. In
 * cluster mode a slot whose primary is down fails at once too: the caller answers
 * UNAVAILABLE rather than waiting out a failover. */
static int submit(cc_redis *r, rreq *q) {
    if (r->closing) {
        req_free(r, q);
        return -1;
    }
    rnode *n = target_of(r, q);
    rconn *c = n ? pick_conn(n, q->bulk) : NULL;
    if (!c || send_on(c, q) < 0) {
        req_free(r, q);
        return -1;
    }
    return 0;
}

static int command_lane(cc_redis *r, int bulk, cc_redis_cb cb, void *payload, int argc, const char **argv,
                        const size_t *argvlen) {
    if (r->closing || argc < 1) return -1;
    rreq *q = req_new(r, cb, payload, argc, argv, argvlen);
    q->bulk = bulk;
    if (r->url.cluster) route_key(q, argc, argv, argvlen);
    return submit(r, q);
}

int cc_redis_command_argv(cc_redis *r, cc_redis_cb cb, void *payload, int argc, const char **argv,
                          const size_t *argvlen) {
    return command_lane(r, 0, cb, payload, argc, argv, argvlen);
}

int cc_redis_command_argv_bulk(cc_redis *r, cc_redis_cb cb, void *payload, int argc, const char **argv,
                               const size_t *argvlen) {
    return command_lane(r, 1, cb, payload, argc, argv, argvlen);
}

int cc_redis_command_node(cc_redis *r, int node, cc_redis_cb cb, void *payload, int argc, const char **argv,
                          const size_t *argvlen) {
    if (r->closing || argc < 1 || node < 0 || node >= cc_redis_n_nodes(r)) return -1;
    rreq *q = req_new(r, cb, payload, argc, argv, argvlen);
    q->node = r->url.cluster ? r->primaries[node] : 0;
    return submit(r, q);
}

int cc_redis_command(cc_redis *r, cc_redis_cb cb, void *payload, const char *fmt, ...) {
    if (r->closing) return -1;
    /* Split hiredis' own formatting back into argv, so that routing and resending
     * work the same for both entry points. Rare calls only: not on a hot path. */
    char *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    int len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    if (len < 0 || !cmd) return -1;
    int argc = atoi(cmd + 1);
    const char **argv = calloc((size_t)(argc > 0 ? argc : 1), sizeof *argv);
    size_t *lens = calloc((size_t)(argc > 0 ? argc : 1), sizeof *lens);
    if (!argv || !lens) abort();
    char *p = strstr(cmd, "\r\n");
    for (int i = 0; i < argc && p; i++) {
        p += 2; /* at $ */
        lens[i] = (size_t)strtoul(p + 1, &p, 10);
        p += 2;
        argv[i] = p;
        p += lens[i];
    }
    int rc = cc_redis_command_argv(r, cb, payload, argc, argv, lens);
    free(argv);
    free(lens);
    redisFreeCommand(cmd);
    return rc;
}

static int eval_lane(cc_redis *r, int bulk, const cc_redis_script *s, cc_redis_cb cb, void *payload, int nkeys,
                     int nargs, const char **args, const size_t *lens) {
    /* Small calls (nearly all) build argv on the stack; large ones (watcher refreshes,
     * seat maps) on the heap. */
    const char *argv_s[64];
    size_t argvlen_s[64];
    const char **argv = argv_s;
    size_t *argvlen = argvlen_s;
    if (nargs < 0) return -1;
    if (nargs + 3 > 64) {
        argv = malloc((size_t)(nargs + 3) * sizeof *argv);
        argvlen = malloc((size_t)(nargs + 3) * sizeof *argvlen);
        if (!argv || !argvlen) abort();
    }
    char nk[16];
    snprintf(nk, sizeof nk, "%d", nkeys);
    argv[0] = "EVALSHA", argvlen[0] = 7;
    argv[1] = r->url.cluster && s->fenced_body ? s->fenced_sha : s->sha, argvlen[1] = 40;
    argv[2] = nk, argvlen[2] = strlen(nk);
    for (int i = 0; i < nargs; i++) {
        argv[3 + i] = args[i];
        argvlen[3 + i] = lens ? lens[i] : strlen(args[i]);
    }
    int rc = command_lane(r, bulk, cb, payload, nargs + 3, argv, argvlen);
    if (argv != argv_s) {
        free(argv);
        free(argvlen);
    }
    return rc;
}

int cc_redis_eval(cc_redis *r, const cc_redis_script *s, cc_redis_cb cb, void *payload, int nkeys, int nargs,
                  const char **args, const size_t *lens) {
    return eval_lane(r, 0, s, cb, payload, nkeys, nargs, args, lens);
}

int cc_redis_eval_bulk(cc_redis *r, const cc_redis_script *s, cc_redis_cb cb, void *payload, int nkeys, int nargs,
                       const char **args, const size_t *lens) {
    return eval_lane(r, 1, s, cb, payload, nkeys, nargs, args, lens);
}

/* ---- WAIT on every connection ---- */

typedef struct {
    cc_redis_wait_cb cb;
    void *payload;
    int left, min_acked;
    const char *err;
} wait_all;

static void wait_one_done(wait_all *w) {
    if (--w->left > 0) return;
    if (w->err) w->cb(-1, w->err, w->payload);
    else w->cb(w->min_acked, NULL, w->payload);
    free(w);
}

static void on_wait_one(redisReply *reply, const char *err, void *payload) {
    wait_all *w = payload;
    if (!reply || reply->type != REDIS_REPLY_INTEGER) {
        if (!w->err) w->err = reply && reply->type == REDIS_REPLY_ERROR ? "WAIT failed" : err ? err : "WAIT failed";
    } else if (reply->integer < w->min_acked) {
        w->min_acked = (int)reply->integer;
    }
    wait_one_done(w);
}

static void on_fence_one(redisReply *reply, const char *err, void *payload) {
    wait_all *w = payload;
    if (!reply || reply->type != REDIS_REPLY_INTEGER)
        if (!w->err) w->err = reply && reply->type == REDIS_REPLY_ERROR ? "fence write failed" : err ? err : "fence";
    wait_one_done(w);
}

/* A key this node serves: "cc:fence" outside a cluster; on a cluster a hash tag found
 * (a few thousand CRC16s at most, once per node and slot map) for the node's first
 * slot. */
static const char *fence_key(cc_redis *r, rnode *n) {
    if (!r->url.cluster) return "cc:fence";
    if (n->fence_slot >= 0 && r->slot_node[n->fence_slot] == n->idx) return n->fence_key;
    int slot = -1;
    for (int s = 0; s < CC_SLOTS && slot < 0; s++)
        if (r->slot_node[s] == n->idx) slot = s;
    if (slot < 0) return NULL;
    char tag[16];
    for (unsigned k = 0;; k++) {
        int len = snprintf(tag, sizeof tag, "f%u", k);
        if ((cc_crc16(tag, (size_t)len) & (CC_SLOTS - 1)) == slot) break;
    }
    snprintf(n->fence_key, sizeof n->fence_key, "cc:fence:{%s}", tag);
    n->fence_slot = slot;
    return n->fence_key;
}

int cc_redis_wait(cc_redis *r, int replicas, int timeout_ms, cc_redis_wait_cb cb, void *payload) {
    if (r->closing) return -1;
    char want[16], ms[16];
    snprintf(want, sizeof want, "%d", replicas);
    snprintf(ms, sizeof ms, "%d", timeout_ms);
    const char *argv[] = {"WAIT", want, ms};
    wait_all *w = calloc(1, sizeof *w);
    if (!w) abort();
    w->cb = cb;
    w->payload = payload;
    w->min_acked = 1 << 30;
    w->left = 1; /* held while sending, so no reply can finish it early */
    for (int i = 0; i < r->n_nodes; i++) {
        rnode *n = r->nodes[i];
        const char *fk = n->wanted ? fence_key(r, n) : NULL;
        if (!fk) continue;
        const char *incr[] = {"INCR", fk};
        for (int k = 0; k < r->cfg.connections; k++) {
            rconn *c = &n->conns[k];
            if (c->state != C_UP || !c->ac) continue;
            /* The fence write, then WAIT, pipelined on the same connection: the fence's
             * replication offset is past every write this primary applied before it
             * (ours on any connection, and anybody else's), and WAIT covers it. */
            rreq *f = req_new(r, on_fence_one, w, 2, incr, NULL);
            f->no_redirect = 1;
            if (send_on(c, f) != 0) {
                req_free(r, f);
                continue;
            }
            w->left++;
            rreq *q = req_new(r, on_wait_one, w, 3, argv, NULL);
            /* WAIT blocks its connection up to timeout_ms: give it that much more. */
            q->deadline_ms += (uint64_t)timeout_ms;
            if (send_on(c, q) == 0) w->left++;
            else req_free(r, q);
        }
    }
    if (w->left == 1) {
        free(w);
        return -1;
    }
    w->left--;
    return 0;
}

/* ---- closing ---- */

static void maybe_free(cc_redis *r) {
    if (--r->open_handles > 0) return;
    for (int i = 0; i < r->n_nodes; i++) {
        for (int k = 0; k < r->cfg.connections; k++) {
            rarena *a = r->nodes[i]->conns[k].arena;
            if (a) CC_UNPOISON(a->data, ARENA_BYTES);
            free(a);
        }
        free(r->nodes[i]->conns);
        free(r->nodes[i]);
    }
    while (r->free_reqs) {
        rreq *q = r->free_reqs;
        CC_UNPOISON(q, REQ_BLOCK);
        r->free_reqs = q->next_free;
        free(q);
    }
    free(r->nodes);
    free(r->slot_node);
    free(r->primaries);
    free(r);
}

static void on_conn_timer_closed(uv_handle_t *h) { maybe_free(((rconn *)h->data)->pool); }

static void on_pool_timer_closed(uv_handle_t *h) { maybe_free(h->data); }

void cc_redis_close(cc_redis *r) {
    if (r->closing) return;
    r->closing = 1;
    while (r->retry_head) {
        rreq *q = r->retry_head;
        r->retry_head = q->next;
        r->stats.errors++;
        finish(r, q, NULL, "closing");
    }
    r->retry_tail = NULL;
    uv_timer_stop(&r->retry_timer);
    uv_timer_stop(&r->map_timer);
    for (int i = 0; i < r->n_nodes; i++) {
        for (int k = 0; k < r->cfg.connections; k++) {
            rconn *c = &r->nodes[i]->conns[k];
            uv_timer_stop(&c->timer);
            free_sentinel(c);
            if (c->ac) drop_conn(c, "closing");
            uv_close((uv_handle_t *)&c->timer, on_conn_timer_closed);
        }
    }
    uv_close((uv_handle_t *)&r->retry_timer, on_pool_timer_closed);
    uv_close((uv_handle_t *)&r->map_timer, on_pool_timer_closed);
}

void cc_redis_get_stats(const cc_redis *r, cc_redis_stats *out) { *out = r->stats; }
