/* pc_redis: see pc_redis.h. Owns one redisContext at a time; never blocks longer
 * than the configured timeout per read or write, and never sleeps longer than 50 ms
 * without looking at the stop flag. */
#define _GNU_SOURCE
#include "pc_redis.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cc_log.h"
#include "cc_redis.h"
#include "cc_sha1.h"

struct pc_redis {
    cc_redis_url url;
    int timeout_ms;
    redisContext *c;
    char addr[300];
    int backoff_ms;
    pc_script *const *scripts;
    int n_scripts;
    int was_up;
};

void pc_script_init(pc_script *s, const char *name, const unsigned char *prelude, size_t prelude_len,
                    const unsigned char *body, size_t body_len) {
    size_t len;
    char *text = cc_redis_script_join(prelude, prelude_len, body, body_len, &len);
    s->name = name;
    s->text = text;
    s->len = len;
    cc_sha1_hex(s->sha, text, len);
}

void pc_script_free(pc_script *s) {
    free(s->text);
    s->text = NULL;
}

int pc_redis_create(pc_redis **out, const char *url, int timeout_ms, char *err, size_t errlen) {
    pc_redis *r = calloc(1, sizeof *r);
    if (!r) abort();
    if (cc_redis_url_parse(&r->url, url, err, errlen) < 0) {
        free(r);
        return -1;
    }
    r->timeout_ms = timeout_ms > 0 ? timeout_ms : 2000;
    r->backoff_ms = 50;
    *out = r;
    return 0;
}

void pc_redis_free(pc_redis *r) {
    if (!r) return;
    if (r->c) redisFree(r->c);
    free(r);
}

void pc_redis_set_scripts(pc_redis *r, pc_script *const *scripts, int n) {
    r->scripts = scripts;
    r->n_scripts = n;
}

int pc_redis_is_up(const pc_redis *r) { return r->c != NULL; }

const char *pc_redis_addr(const pc_redis *r) { return r->addr[0] ? r->addr : "-"; }

void pc_redis_drop(pc_redis *r, const char *why) {
    if (!r->c) return;
    CC_WARN("redis_down", "addr=%s reason=\"%s\"", r->addr, why ? why : "");
    redisFree(r->c);
    r->c = NULL;
}

static redisContext *connect_to(const pc_redis *r, const char *host, int port) {
    struct timeval tv = {r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    if (!c) return NULL;
    if (c->err) {
        CC_DEBUG("redis_connect_failed", "host=%s port=%d reason=\"%s\"", host, port, c->errstr);
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    return c;
}

/* One command on a fresh context; the reply or NULL (logged). */
static redisReply *command(redisContext *c, int argc, const char **argv, const size_t *lens) {
    redisReply *rep = redisCommandArgv(c, argc, argv, lens);
    if (!rep) CC_DEBUG("redis_command_failed", "cmd=%s reason=\"%s\"", argv[0], c->errstr);
    return rep;
}

/* Sentinel discovery: the primary's address from the first sentinel that knows it. */
static int resolve(pc_redis *r, char *host, size_t hostlen, int *port) {
    for (int i = 0; i < r->url.n_hosts; i++) {
        redisContext *s = connect_to(r, r->url.host[i], r->url.port[i]);
        if (!s) continue;
        const char *argv[] = {"SENTINEL", "get-master-addr-by-name", r->url.master_name};
        redisReply *rep = command(s, 3, argv, NULL);
        int ok = rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
                 rep->element[0]->type == REDIS_REPLY_STRING && rep->element[1]->type == REDIS_REPLY_STRING;
        if (ok) {
            snprintf(host, hostlen, "%s", rep->element[0]->str);
            *port = atoi(rep->element[1]->str);
        }
        if (rep) freeReplyObject(rep);
        redisFree(s);
        if (ok) return 0;
    }
    return -1;
}

/* Connects once: 0, or -1 with a reason. */
static int try_connect(pc_redis *r, const char **why) {
    char host[256];
    int port;
    if (r->url.sentinel) {
        if (resolve(r, host, sizeof host, &port) < 0) {
            *why = "no sentinel knows the primary";
            return -1;
        }
    } else {
        snprintf(host, sizeof host, "%s", r->url.host[0]);
        port = r->url.port[0];
    }
    snprintf(r->addr, sizeof r->addr, "%s:%d", host, port);
    redisContext *c = connect_to(r, host, port);
    if (!c) {
        *why = "connect failed";
        return -1;
    }
    if (r->url.sentinel) {
        const char *argv[] = {"ROLE"};
        redisReply *rep = command(c, 1, argv, NULL);
        int primary = rep && rep->type == REDIS_REPLY_ARRAY && rep->elements >= 1 &&
                      rep->element[0]->type == REDIS_REPLY_STRING && !strcmp(rep->element[0]->str, "master");
        if (rep) freeReplyObject(rep);
        if (!primary) {
            redisFree(c);
            *why = "not the primary (ROLE)";
            return -1;
        }
    }
    if (r->url.db) {
        char db[16];
        snprintf(db, sizeof db, "%d", r->url.db);
        const char *argv[] = {"SELECT", db};
        redisReply *rep = command(c, 2, argv, NULL);
        int ok = rep && rep->type == REDIS_REPLY_STATUS;
        if (rep) freeReplyObject(rep);
        if (!ok) {
            redisFree(c);
            *why = "SELECT failed";
            return -1;
        }
    }
    for (int i = 0; i < r->n_scripts; i++) {
        const pc_script *s = r->scripts[i];
        const char *argv[] = {"SCRIPT", "LOAD", s->text};
        size_t lens[] = {6, 4, s->len};
        redisReply *rep = command(c, 3, argv, lens);
        int ok = rep && rep->type == REDIS_REPLY_STRING && !strcmp(rep->str, s->sha);
        if (rep && !ok)
            CC_ERROR("redis_script_load_failed", "script=%s reply=\"%s\"", s->name,
                     rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected");
        if (rep) freeReplyObject(rep);
        if (!ok) {
            redisFree(c);
            *why = "SCRIPT LOAD failed";
            return -1;
        }
    }
    r->c = c;
    return 0;
}

static void pause_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

int pc_redis_ensure(pc_redis *r, volatile sig_atomic_t *stop) {
    while (!r->c) {
        if (stop && *stop) return -1;
        const char *why = NULL;
        if (try_connect(r, &why) == 0) {
            r->backoff_ms = 50;
            CC_INFO("redis_up", "addr=%s", r->addr);
            r->was_up = 1;
            return 0;
        }
        CC_DEBUG("redis_reconnect_scheduled", "addr=%s in_ms=%d reason=\"%s\"", r->addr, r->backoff_ms, why);
        if (r->was_up == 0) {
            CC_WARN("redis_unreachable", "addr=%s reason=\"%s\"", r->addr, why);
            r->was_up = -1; /* warned once; later attempts at debug */
        }
        for (int waited = 0; waited < r->backoff_ms; waited += 50) {
            if (stop && *stop) return -1;
            pause_ms(50);
        }
        r->backoff_ms = r->backoff_ms * 2 > 2000 ? 2000 : r->backoff_ms * 2;
    }
    return 0;
}

int pc_redis_append(pc_redis *r, int argc, const char **argv, const size_t *lens) {
    if (!r->c) return -1;
    if (redisAppendCommandArgv(r->c, argc, argv, lens) != REDIS_OK) {
        pc_redis_drop(r, r->c->errstr);
        return -1;
    }
    return 0;
}

int pc_redis_append_eval(pc_redis *r, const pc_script *s, int full, int nkeys, int nargs, const char **args) {
    enum { MAX = 16 };
    const char *argv[MAX + 3];
    size_t lens[MAX + 3];
    char nk[16];
    if (nargs > MAX) return -1;
    snprintf(nk, sizeof nk, "%d", nkeys);
    argv[0] = full ? "EVAL" : "EVALSHA";
    lens[0] = strlen(argv[0]);
    argv[1] = full ? s->text : s->sha;
    lens[1] = full ? s->len : 40;
    argv[2] = nk;
    lens[2] = strlen(nk);
    for (int i = 0; i < nargs; i++) {
        argv[3 + i] = args[i];
        lens[3 + i] = strlen(args[i]);
    }
    return pc_redis_append(r, nargs + 3, argv, lens);
}

redisReply *pc_redis_read(pc_redis *r) {
    if (!r->c) return NULL;
    void *rep = NULL;
    if (redisGetReply(r->c, &rep) != REDIS_OK || !rep) {
        pc_redis_drop(r, r->c->errstr[0] ? r->c->errstr : "no reply");
        return NULL;
    }
    redisReply *reply = rep;
    if (reply->type == REDIS_REPLY_ERROR &&
        (!strncmp(reply->str, "READONLY", 8) || !strncmp(reply->str, "LOADING", 7) ||
         !strncmp(reply->str, "MASTERDOWN", 10)))
        pc_redis_drop(r, reply->str);
    return reply;
}
