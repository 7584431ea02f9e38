/* cc_redis: pooled hiredis async connections with timeouts, reconnects, Sentinel
 * discovery and script loading. See cc_redis.h for the contract.
 *
 * Ownership: the pool owns its connections; each pending command is a `rreq` linked
 * in its connection's send order (Redis answers in order, so the head is the oldest
 * and the only one the timeout timer needs to watch). A hiredis context is never
 * freed from inside one of its own callbacks (hiredis defers that by itself). */
#include "cc_redis.h"

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cc_log.h"
#include "cc_sha1.h"

enum { C_DOWN, C_RESOLVING, C_CONNECTING, C_UP };

struct rconn;

typedef struct rreq {
    cc_redis_cb cb;
    void *payload;
    struct rconn *conn;
    uint64_t deadline_ms;
    struct rreq *prev, *next;
} rreq;

typedef struct rconn {
    cc_redis *pool;
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
} rconn;

struct cc_redis {
    uv_loop_t *loop;
    cc_redis_url url;
    cc_redis_config cfg;
    rconn *conns;
    int n_conns;
    int next_conn;
    int n_up;
    int closing;
    int open_handles;
    cc_redis_script **scripts;
    int n_scripts;
    cc_redis_state_cb state_cb;
    void *state_payload;
    cc_redis_stats stats;
};

static void conn_start(rconn *c);
static void conn_down(rconn *c, const char *why);
static void on_timer(uv_timer_t *t);

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
        const char *p = rest;
        while (p < slash) {
            const char *comma = memchr(p, ',', (size_t)(slash - p));
            const char *e = comma ? comma : slash;
            if (out->n_hosts == 8 ||
                parse_hostport(p, (size_t)(e - p), out->host[out->n_hosts], &out->port[out->n_hosts]) < 0) {
                snprintf(err, errlen, "redis URL '%s': bad sentinel address list", url);
                return -1;
            }
            out->n_hosts++;
            p = comma ? comma + 1 : slash;
        }
        return 0;
    }
    snprintf(err, errlen, "redis URL '%s': scheme must be redis:// or sentinel://", url);
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
    cc_sha1_hex(s->sha, body, len);
}

static void unlink_req(rconn *c, rreq *q) {
    if (q->prev) q->prev->next = q->next; else c->head = q->next;
    if (q->next) q->next->prev = q->prev; else c->tail = q->prev;
    q->prev = q->next = NULL;
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

/* ---- replies ---- */

static void drop_conn(rconn *c, const char *why);

static void on_reply(redisAsyncContext *ac, void *rv, void *privdata) {
    rreq *q = privdata;
    rconn *c = q->conn;
    cc_redis *r = c->pool;
    redisReply *reply = rv;
    unlink_req(c, q);
    if (!reply) {
        r->stats.errors++;
        if (q->cb) q->cb(NULL, c->fail_reason ? c->fail_reason : "disconnected", q->payload);
        free(q);
        return;
    }
    r->stats.replies++;
    int readonly = reply->type == REDIS_REPLY_ERROR && !strncmp(reply->str, "READONLY", 8);
    int noscript = reply->type == REDIS_REPLY_ERROR && !strncmp(reply->str, "NOSCRIPT", 8);
    if (q->cb) q->cb(reply, NULL, q->payload);
    free(q);
    if (readonly && ac == c->ac) {
        CC_WARN("redis_not_primary", "conn=%d host=%s port=%d", c->idx, c->host, c->port);
        drop_conn(c, "not primary");
    } else if (noscript && ac == c->ac) {
        /* Someone flushed the script cache: load again on this connection. */
        for (int i = 0; i < r->n_scripts; i++)
            redisAsyncCommand(ac, NULL, NULL, "SCRIPT LOAD %b", r->scripts[i]->body, r->scripts[i]->len);
    }
}

static rreq *new_req(rconn *c, cc_redis_cb cb, void *payload) {
    rreq *q = calloc(1, sizeof *q);
    if (!q) abort();
    q->cb = cb;
    q->payload = payload;
    q->conn = c;
    q->deadline_ms = now_ms(c->pool) + (uint64_t)c->pool->cfg.command_timeout_ms;
    return q;
}

static void link_req(rconn *c, rreq *q) {
    q->prev = c->tail;
    if (c->tail) c->tail->next = q; else c->head = q;
    c->tail = q;
    c->pool->stats.sent++;
    arm_command_timer(c);
}

static int send_on(rconn *c, cc_redis_cb cb, void *payload, int argc, const char **argv,
                   const size_t *argvlen) {
    rreq *q = new_req(c, cb, payload);
    if (redisAsyncCommandArgv(c->ac, on_reply, q, argc, argv, argvlen) != REDIS_OK) {
        free(q);
        return -1;
    }
    link_req(c, q);
    return 0;
}

/* ---- connection life cycle ---- */

static void set_up(rconn *c, int up) {
    cc_redis *r = c->pool;
    int before = r->n_up > 0;
    r->n_up += up ? 1 : -1;
    int after = r->n_up > 0;
    if (before != after) {
        if (after) CC_INFO("redis_up", "host=%s port=%d", c->host, c->port);
        else CC_WARN("redis_down", "host=%s port=%d", c->host, c->port);
        if (r->state_cb) r->state_cb(after, r->state_payload);
    }
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
        send_on(c, NULL, NULL, 2, argv, NULL);
    }
    if (r->url.sentinel) {
        const char *argv[] = {"ROLE"};
        send_on(c, on_role, c, 1, argv, NULL);
    }
    for (int i = 0; i < r->n_scripts; i++) {
        const char *argv[] = {"SCRIPT", "LOAD", r->scripts[i]->body};
        size_t lens[] = {6, 4, r->scripts[i]->len};
        send_on(c, NULL, NULL, 3, argv, lens);
    }
    set_up(c, 1);
}

static void on_disconnect(const redisAsyncContext *cac, int status) {
    rconn *c = cac->data;
    if (!c) return; /* we dropped it ourselves */
    c->ac = NULL;
    conn_down(c, status == REDIS_OK ? "closed" : cac->errstr);
}

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
    if (redisLibuvAttach(ac, r->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        conn_down(c, "attach failed");
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
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
    if (!sac || sac->err || redisLibuvAttach(sac, r->loop) != REDIS_OK) {
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
    if (r->closing) return;
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
    c->state = C_DOWN;
    if (was_up) set_up(c, 0);
    if (r->closing) return;
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
    r->n_conns = r->cfg.connections;
    r->conns = calloc((size_t)r->n_conns, sizeof *r->conns);
    if (!r->conns) abort();
    for (int i = 0; i < r->n_conns; i++) {
        rconn *c = &r->conns[i];
        c->pool = r;
        c->idx = i;
        c->backoff_ms = 50;
        if (!r->url.sentinel) {
            snprintf(c->host, sizeof c->host, "%s", r->url.host[0]);
            c->port = r->url.port[0];
        }
        uv_timer_init(loop, &c->timer);
        c->timer.data = c;
        r->open_handles++;
    }
    *out = r;
    /* Connect on the next loop turn, after the caller has set scripts and callbacks. */
    for (int i = 0; i < r->n_conns; i++) timer_in(&r->conns[i], 0);
    return 0;
}

void cc_redis_set_scripts(cc_redis *r, cc_redis_script **scripts, int n) {
    r->scripts = scripts;
    r->n_scripts = n;
}

void cc_redis_set_state_cb(cc_redis *r, cc_redis_state_cb cb, void *payload) {
    r->state_cb = cb;
    r->state_payload = payload;
}

int cc_redis_is_up(const cc_redis *r) { return r->n_up > 0; }

static rconn *pick(cc_redis *r) {
    for (int i = 0; i < r->n_conns; i++) {
        rconn *c = &r->conns[(r->next_conn + i) % r->n_conns];
        if (c->state == C_UP && c->ac) {
            r->next_conn = (c->idx + 1) % r->n_conns;
            return c;
        }
    }
    return NULL;
}

int cc_redis_command_argv(cc_redis *r, cc_redis_cb cb, void *payload, int argc, const char **argv,
                          const size_t *argvlen) {
    if (r->closing) return -1;
    for (int tries = 0; tries < r->n_conns; tries++) {
        rconn *c = pick(r);
        if (!c) return -1;
        if (send_on(c, cb, payload, argc, argv, argvlen) == 0) return 0;
    }
    return -1;
}

int cc_redis_command(cc_redis *r, cc_redis_cb cb, void *payload, const char *fmt, ...) {
    if (r->closing) return -1;
    rconn *c = pick(r);
    if (!c) return -1;
    rreq *q = new_req(c, cb, payload);
    va_list ap;
    va_start(ap, fmt);
    int rc = redisvAsyncCommand(c->ac, on_reply, q, fmt, ap);
    va_end(ap);
    if (rc != REDIS_OK) {
        free(q);
        return -1;
    }
    link_req(c, q);
    return 0;
}

int cc_redis_eval(cc_redis *r, const cc_redis_script *s, cc_redis_cb cb, void *payload, int nkeys,
                  int nargs, const char **args, const size_t *lens) {
    return cc_redis_eval_on(r, -1, s, cb, payload, nkeys, nargs, args, lens);
}

int cc_redis_conn_pick(cc_redis *r) {
    if (r->closing) return -1;
    rconn *c = pick(r);
    return c ? c->idx : -1;
}

int cc_redis_command_argv_on(cc_redis *r, int conn, cc_redis_cb cb, void *payload, int argc, const char **argv,
                             const size_t *argvlen) {
    if (conn < 0) return cc_redis_command_argv(r, cb, payload, argc, argv, argvlen);
    if (r->closing || conn >= r->n_conns) return -1;
    rconn *c = &r->conns[conn];
    if (c->state != C_UP || !c->ac) return -1;
    return send_on(c, cb, payload, argc, argv, argvlen);
}

int cc_redis_eval_on(cc_redis *r, int conn, const cc_redis_script *s, cc_redis_cb cb, void *payload, int nkeys,
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
    argv[1] = s->sha, argvlen[1] = 40;
    argv[2] = nk, argvlen[2] = strlen(nk);
    for (int i = 0; i < nargs; i++) {
        argv[3 + i] = args[i];
        argvlen[3 + i] = lens ? lens[i] : strlen(args[i]);
    }
    int rc = cc_redis_command_argv_on(r, conn, cb, payload, nargs + 3, argv, argvlen);
    if (argv != argv_s) {
        free(argv);
        free(argvlen);
    }
    return rc;
}

static void on_handle_closed(uv_handle_t *h) {
    rconn *c = h->data;
    cc_redis *r = c->pool;
    if (--r->open_handles == 0) {
        free(r->conns);
        free(r);
    }
}

void cc_redis_close(cc_redis *r) {
    if (r->closing) return;
    r->closing = 1;
    for (int i = 0; i < r->n_conns; i++) {
        rconn *c = &r->conns[i];
        uv_timer_stop(&c->timer);
        free_sentinel(c);
        if (c->ac) drop_conn(c, "closing");
        uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    }
}

void cc_redis_get_stats(const cc_redis *r, cc_redis_stats *out) { *out = r->stats; }
