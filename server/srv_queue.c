/* srv_queue: QueueService (IssueToken, GetQueueStatus, WatchQueueStatus, WatchQueueStatuses, LeaveQueue)
 * plus the per-concert registry that drives admission ticks and watcher refreshes.
 *
 * Redis layout (docs/DATA.md "Queue"; server/lua/queue_lib.lua), one hash tag per
 * concert so a concert's queue lives in one slot. A waiting user costs one member of
 * the sorted set q:wait (token id + user, scored by the join number n the token
 * carries) and one field of q:users (user -> n), plus bits in per-chunk bitmaps for the
 * idle timeout; ACTIVE and ended tokens are keyed by token (q:tok, q:active, q:gone,
 * q:since) as the booking and payment scripts expect. cc:{uq:<b>}:users (the users'
 * concerts, for the cap; in 65536 small buckets, see queue_user.lua) and cc:queues
 * (concerts with live users).
 *
 * Work is proportional to live state, never to ids a stranger made up: IssueToken,
 * GetQueueStatus, WatchQueueStatus and LeaveQueue on a concert no admin created answer
 * NOT_FOUND and write nothing; a concert enters this server's registry (and
 * cc:queues) only through a real join or a live token, and leaves both once its
 * admission tick finds it empty. Watchers: one refresh per concert per tick asks for
 * all of its watched tokens in one script call (in chunks), never one round trip per
 * watcher, and a refresh starts only when every batch of the previous one is back.
 *
 * GetQueueStatus of a waiting user (the call everyone repeats) is three plain reads
 * pipelined (ZRANGEBYSCORE proves the token and finds the member, ZCOUNT gives the
 * position, GETBIT tells whether this idle epoch already saw the user; skipped when
 * this server's idle-bit mirror knows it did, see seen_mirror), and a repeated poll
 * whose bit needs nothing and whose member this server knows is one (ZRANK of the
 * member, see member_cache), when this
 * server's last admission tick of the concert is fresh: the rate, the idle timeout and
 * the sale's opening come from that tick, and Redis' clock from this server's clock
 * plus the offset the ticks measure. Anything else goes through queue_status.lua.
 *
 * ACTIVE answers carry a signed admission receipt (srv_receipt.h). */
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "cc_asan.h"
#include "cc_log.h"
#include "cc_receipt.h"
#include "cc_smap.h"
#include "concert/v1/queue.pb-c.h"
#include "srv_adapt.h"
#include "srv_app.h"
#include "srv_queue.h"
#include "srv_receipt.h"
#include "srv_sale.h"
#include "srv_valid.h"

#define WATCH_CHUNK 500
#define GONE_KEEP_MS (3600 * 1000)
#define NOTE_EVERY_MS 1000 /* how often a live concert re-asserts itself in cc:queues */
#define INFO_FRESH_MS 2000 /* the fast path trusts a tick's figures this long */
#define ISSUE_TRIES 4      /* seed / tie retries of one IssueToken */
#define CHUNK 65536        /* join numbers per idle bitmap (queue_lib.lua) */
#define MIRROR_MAX_CHUNKS 64 /* idle-bit mirror: at most 64 chunks of 8 KiB per concert (seen_mirror) */
#define MIRROR_SLACK_MS 50   /* idle-bit mirror: margin beyond half the clock tick's round trip */

extern const unsigned char lua_queue_lib[], lua_queue_issue[], lua_queue_status[], lua_queue_leave[],
    lua_queue_admit[], lua_queue_watch[], lua_queue_user[];
extern const size_t lua_queue_lib_len, lua_queue_issue_len, lua_queue_status_len, lua_queue_leave_len,
    lua_queue_admit_len, lua_queue_watch_len, lua_queue_user_len;

static cc_redis_script s_issue, s_status, s_leave, s_admit, s_watch, s_user;

struct srv_queue_state {
    char d_rate[24], d_max[24], d_ttl[24], d_idle[24], gone_keep[24];
    char a_interval[24], a_pending[24], a_backlog[24], a_errors[24];
    int64_t clock_offset; /* Redis ms minus uv_now, from the admission ticks */
    int clock_known;
    struct fctx *free_fast; /* finished fast-path contexts for reuse (status_fast), freed with the state */
    size_t n_free_fast;
};

typedef struct wstream wstream;

/* One watched token: a WatchQueueStatus call, or one token of a WatchQueueStatuses
 * stream (then `stream` is set and `call` is the stream's call). */
struct srv_watcher {
    srv_call *call;
    wstream *stream;            /* NULL: the watcher is its own call */
    srv_watcher *sprev, *snext; /* the stream's tokens */
    srv_concert *concert;       /* NULL until the first status proved the token */
    char token[SRV_TOKEN_MAX + 1];
    char n[24];             /* the token's join number */
    unsigned char id[16];   /* and its id */
    int refs;    /* the list's + each in-flight refresh's */
    int dead;    /* finished or cancelled */
    int last_state;
    int64_t last_pos;
    srv_watcher *prev, *next;
};

/* The idle-bit mirror (issue 13): which q:seen bits of one idle epoch this server
 * knows are set in Redis, so that GetQueueStatus' fast path skips GETBIT (and SETBIT)
 * for a user it already saw this epoch: two commands per repeated poll, not three.
 *
 * Tagged by the absolute epoch E (of Redis' clock as this server estimates it), the
 * epoch length L and the pool's reconnect count; any change of the three drops every
 * chunk, and no reply to a command sent before a drop (or a reconnect) marks. A bit is marked only when Redis confirmed it (GETBIT said 1 or SETBIT
 * answered) for a proven waiting token, and only if the command was sent at least
 * (the tick's round trip / 2 + MIRROR_SLACK_MS) ms into epoch E by this server's
 * estimate of Redis' clock (not at all when that margin is L / 2 or more). Why it
 * never lies while it is consulted (epoch E by the estimate; docs/DATA.md "Queue"):
 *  - Redis clears slot E%3 only in the sweeps of epochs = E+2 (mod 3), i.e. E-1 and
 *    E+2 (DEL slot (e+1)%3), each on Redis' own clock. The estimate (this concert's
 *    last tick: Redis' TIME minus the midpoint of the tick's send and reply by uv_now)
 *    is ahead of Redis by at most half that tick's round trip (Redis read TIME between
 *    send and reply; uv_now is updated after epoll returns and lags the real clock
 *    otherwise), so a command sent at estimate >= E*L + margin executes
 *    at Redis time >= E*L: after any E-1 sweep. It is consulted only while the
 *    estimate is < (E+1)*L, i.e. Redis < (E+2)*L unless the estimate lags Redis by a
 *    whole epoch: before the E+2 sweep. So a skipped GETBIT would have read 1 and the
 *    skipped SETBIT would have been a no-op: Redis ends in the same state, and idle
 *    drop-out is unchanged.
 *  - Other writers (seen() in queue_issue/status/watch) only ever set bits.
 *  - The sweep's other DEL (all slots of a chunk whose q:here is empty) needs every
 *    user of that chunk gone from the line; a token that left or idled out fails the
 *    fast path's ZRANGEBYSCORE and goes to the script, and a rejoin has a new n.
 *  - The idle timeout changed: a new L drops the mirror at this server's next tick
 *    reply (admit interval, 100 ms by default; the fast path stops after
 *    INFO_FRESH_MS without one); until then the old L's slots are what the fast path
 *    writes anyway, and the sweep clears nothing in the first two epochs of the new L
 *    (at least L_new ms after the change).
 *  - Redis restart, failover, data loss with a reconnect: any connection going down
 *    bumps cc_redis_stats.reconnects, which drops the mirror. A concert deleted (the
 *    tick says so) drops it too; one recreated within the epoch reuses join numbers,
 *    but IssueToken's seen() sets the new user's bit in Redis' epoch at the join.
 * Even a wrong mirror costs at most one epoch's bits of a user, and the sweep drops
 * only users with no bit in three consecutive epochs. */
typedef struct {
    int64_t epoch, L; /* L == 0: empty */
    uint64_t gen;     /* cc_redis_stats.reconnects when it was started */
    uint64_t era;     /* drops so far: a command sent before a drop never marks after it */
    int n;            /* chunks in use */
    int last;         /* the chunk found last (most polls are in one chunk) */
    int64_t idx[MIRROR_MAX_CHUNKS];
    uint8_t *bits[MIRROR_MAX_CHUNKS]; /* CHUNK / 8 bytes each, calloc'd on first mark */
} seen_mirror;

static void mirror_drop(seen_mirror *m) {
    for (int i = 0; i < m->n; i++) free(m->bits[i]);
    m->n = m->last = 0;
    m->L = 0;
    m->era++;
}

/* The member cache (issue 13): which q:wait member a waiting token has, so that a
 * repeated GetQueueStatus of a user whose idle bit needs no refresh (the mirror knows
 * it set this epoch, or the concert has no idle timeout) is ONE command,
 * `ZRANK q:wait <member>`, instead of ZRANGEBYSCORE (find and prove the member) and
 * ZCOUNT (the position). Direct-mapped by the join number n (slot n mod size), size a
 * power of two from MCACHE_MIN to MCACHE_MAX entries picked from the tick's waiting
 * count (grown as the line grows, shrunk when it fell to an eighth), allocated at the
 * first fill; an entry holds n and the member (token id, 16 raw bytes, then the user;
 * users longer than MCACHE_MEMBER - 16 bytes are not cached). Filled only from a
 * ZRANGEBYSCORE reply that proved the token (the member at score n starts with the
 * token's id and is not pre-queued); used only when the request's n and id equal the
 * entry's (CRYPTO_memcmp), so a forged token (right n, wrong id) never gets a cached
 * answer: it goes the long way and the script refuses it.
 * Why one ZRANK answers exactly what the script would (docs/DATA.md "Queue"):
 *  - A member is written once, by IssueToken's join (ZADD q:wait n id..user with a
 *    fresh random id; nothing rescores it), and leaves by ZREM or ZPOPMIN (leave,
 *    admission, idle drop, concert deleted). So while the member is in q:wait its
 *    token is waiting with score n; ZRANK's reply proves that, and nil means gone:
 *    nil (or any other reply) goes to queue_status.lua, which answers ACTIVE, EXPIRED
 *    or unknown. A stale entry is therefore never a wrong answer, only a nil.
 *  - Join numbers are unique in q:wait (q:seq), so ZRANK + 1 = ZCOUNT -inf n, and
 *    queue_status.lua itself answers ZRANK + 1.
 *  - The idle bit: ZRANK alone is used only where the fast path would have sent no
 *    GETBIT either (mirror_has, see seen_mirror), so Redis' bits end the same.
 * It is dropped with the mirror (new epoch, idle timeout or reconnect, concert
 * deleted or forgotten): not needed for the argument above, but it keeps a deleted and
 * recreated concert (join numbers reused) from carrying entries over, and a reply to
 * a command sent before a drop never fills after it (era). */
#define MCACHE_MIN 64
#define MCACHE_MAX 16384
#define MCACHE_MEMBER 63 /* id (16) + a user of up to 47 bytes: 72-byte entries */

typedef struct {
    int64_t n; /* 0: empty */
    uint8_t len;
    unsigned char member[MCACHE_MEMBER];
} mcache_entry;

typedef struct {
    mcache_entry *e; /* NULL until the first fill */
    uint32_t size;   /* entries of e (a power of two) */
    uint32_t want;   /* the size the last tick asked for (0: MCACHE_MIN) */
    uint64_t era;    /* drops so far */
    uint64_t gen;    /* cc_redis_stats.reconnects the entries were filled under */
} member_cache;

static void mcache_drop(member_cache *m) {
    free(m->e);
    m->e = NULL;
    m->size = 0;
    m->era++;
}

/* The size for `waiting` users: the next power of two, within [MCACHE_MIN, MCACHE_MAX];
 * the entries go when it changes (grow, or the line fell to an eighth). */
static void mcache_size(member_cache *m, int64_t waiting) {
    uint32_t want = MCACHE_MIN;
    while (want < MCACHE_MAX && (int64_t)want < waiting) want <<= 1;
    m->want = want;
    if (m->e && (want > m->size || (uint64_t)want * 8 <= m->size)) {
        free(m->e);
        m->e = NULL;
        m->size = 0;
    }
}

/* The entry of token (n, id), or NULL. */
static const mcache_entry *mcache_find(const member_cache *m, int64_t n, const unsigned char id[16]) {
    if (!m->e || n <= 0) return NULL;
    const mcache_entry *e = &m->e[(uint64_t)n & (m->size - 1)];
    if (e->n != n || CRYPTO_memcmp(e->member, id, 16) != 0) return NULL;
    return e;
}

/* Drops the entries if the pool reconnected since they were filled. */
static void mcache_check(member_cache *m, uint64_t gen) {
    if (m->gen != gen) {
        mcache_drop(m);
        m->gen = gen;
    }
}

static void mcache_put(member_cache *m, uint64_t era, int64_t n, const char *member, size_t len) {
    if (m->era != era || n <= 0 || len <= 16 || len > MCACHE_MEMBER) return;
    if (!m->e) {
        m->size = m->want ? m->want : MCACHE_MIN;
        if (!(m->e = calloc(m->size, sizeof *m->e))) abort();
    }
    mcache_entry *e = &m->e[(uint64_t)n & (m->size - 1)];
    e->n = n;
    e->len = (uint8_t)len;
    memcpy(e->member, member, len);
}

static void mcache_forget(member_cache *m, int64_t n, const unsigned char id[16]) {
    mcache_entry *e = (mcache_entry *)mcache_find(m, n, id);
    if (e) e->n = 0;
}

struct srv_concert {
    char id[SRV_MAX_ID + 1];
    srv_concert *hnext;
    srv_app *app;
    int admit_inflight;
    int watch_batches; /* refresh batches in flight */
    int idle_ticks;    /* admission ticks in a row that found the concert empty */
    uint64_t noted_ms; /* when this server last wrote it into cc:queues */
    size_t n_watchers;
    srv_watcher *watchers;
    /* What this server's last admission tick said (the fast path's inputs). */
    uint64_t admit_sent; /* uv_now when the tick was sent */
    uint64_t info_at;    /* uv_now of its reply, 0 = none yet */
    int64_t rate, idle_ms, sale_at, waiting;
    int method;
    int64_t clock_offset, clock_rtt; /* Redis ms minus uv_now from this tick (its node's clock), its round trip */
    seen_mirror seen; /* the fast path's idle bits known set (see seen_mirror) */
    member_cache members; /* waiting tokens' q:wait members (see member_cache) */
    /* The scheduled sale's seed once drawn (pre-queue joins need it). */
    int have_seed;
    unsigned char seed[32];
    char commit[65];
};

/* What a concert's entry knows of Redis beyond the tick's figures: its idle bits and its
 * waiting members, forgotten together (deleted concert, entry freed). */
static void concert_caches_drop(srv_concert *c) {
    mirror_drop(&c->seen);
    mcache_drop(&c->members);
}

/* Frees an entry already out of the registry (or with the registry). */
static void concert_free(srv_concert *c) {
    OPENSSL_cleanse(c->seed, sizeof c->seed);
    concert_caches_drop(c);
    free(c);
}

/* ---- keys and scripts ---- */

void srv_queue_keys_of(srv_queue_keys *k, const char *concert) {
    /* By copying: this runs for every queue call (snprintf here was a tenth of the
     * server's instructions on the GetQueueStatus path). */
    size_t cl = strnlen(concert, SRV_MAX_ID);
    char *p = k->prefix;
    memcpy(p, "cc:{", 4);
    memcpy(p + 4, concert, cl);
    p[4 + cl] = '}', p[5 + cl] = ':', p[6 + cl] = '\0';
    k->plen = 6 + cl;
    memcpy(k->slot, k->prefix, k->plen);
    memcpy(k->slot + k->plen, "q:wait", 7);
}

void srv_queue_script_add(cc_redis_script *s, const char *name, const unsigned char *body, size_t len) {
    srv_script_add(s, name, lua_queue_lib, lua_queue_lib_len, body, len);
}

/* ---- registry ---- */

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static srv_concert *concert_get(srv_app *app, const char *id, int create) {
    uint64_t h = hash_str(id) % app->n_buckets;
    for (srv_concert *c = app->concert_buckets[h]; c; c = c->hnext)
        if (!strcmp(c->id, id)) return c;
    if (!create) return NULL;
    srv_concert *c = calloc(1, sizeof *c);
    if (!c) abort();
    snprintf(c->id, sizeof c->id, "%s", id);
    c->app = app;
    c->hnext = app->concert_buckets[h];
    app->concert_buckets[h] = c;
    app->n_concerts++;
    CC_INFO("queue_known", "concert=%s", id);
    return c;
}

/* Takes an empty concert out of the registry and of cc:queues. Only from a tick's
 * reply: no watcher, no batch and no admission call may point at it. */
static void ignore_reply(redisReply *r, const char *err, void *p) {}

static void concert_drop(srv_app *app, srv_concert *c, int exists) {
    uint64_t h = hash_str(c->id) % app->n_buckets;
    for (srv_concert **pp = &app->concert_buckets[h]; *pp; pp = &(*pp)->hnext)
        if (*pp == c) {
            *pp = c->hnext;
            break;
        }
    app->n_concerts--;
    CC_INFO("queue_idle", "concert=%s exists=%d", c->id, exists);
    cc_redis_command(app->redis, ignore_reply, NULL, "SREM cc:queues %s", c->id);
    concert_free(c);
}

#define FOR_EACH_CONCERT(app, c)                          \
    for (size_t b_ = 0; b_ < (app)->n_buckets; b_++)      \
        for (srv_concert *c = (app)->concert_buckets[b_], *n_; c && ((n_ = c->hnext), 1); c = n_)

/* A concert with live users (a join, a live token): ticked here, and written into
 * cc:queues so that every server ticks it (again every NOTE_EVERY_MS while it lives,
 * which heals a race with a server that just found it empty). */
static srv_concert *concert_note_then(srv_app *app, const char *concert, cc_redis_cb done, void *payload,
                                      int *sent) {
    srv_concert *c = concert_get(app, concert, 1);
    uint64_t now = uv_now(app->loop);
    c->idle_ticks = 0;
    *sent = 0;
    if (!c->noted_ms || now - c->noted_ms >= NOTE_EVERY_MS) {
        c->noted_ms = now ? now : 1;
        *sent = cc_redis_command(app->redis, done, payload, "SADD cc:queues %s", concert) == 0;
    }
    return c;
}

static srv_concert *concert_note(srv_app *app, const char *concert) {
    int sent;
    return concert_note_then(app, concert, ignore_reply, NULL, &sent);
}

void srv_concert_remember(srv_app *app, const char *concert) { concert_note(app, concert); }

void srv_concerts_foreach(srv_app *app, void (*fn)(srv_app *app, const char *concert, void *arg), void *arg) {
    FOR_EACH_CONCERT(app, c) fn(app, c->id, arg);
}

/* Redis' clock as this server estimates it (ms). */
static int64_t redis_now(const srv_app *app) {
    return (int64_t)uv_now(app->loop) + app->queue->clock_offset;
}

/* ---- the idle-bit mirror (seen_mirror) ---- */

static uint64_t redis_gen(const srv_app *app) {
    cc_redis_stats st;
    cc_redis_get_stats(app->redis, &st);
    return st.reconnects;
}

/* The chunk of join number n, or -1. */
static int mirror_find(const seen_mirror *m, int64_t n) {
    int64_t ci = n / CHUNK;
    if (m->last < m->n && m->idx[m->last] == ci) return m->last;
    for (int i = 0; i < m->n; i++)
        if (m->idx[i] == ci) return i;
    return -1;
}

/* 1 if bit n is known set for (E, L, gen); starts the mirror over for another tag. */
static int mirror_has(seen_mirror *m, int64_t E, int64_t L, uint64_t gen, int64_t n) {
    if (m->epoch != E || m->L != L || m->gen != gen) {
        mirror_drop(m);
        m->epoch = E, m->L = L, m->gen = gen;
        return 0;
    }
    int i = mirror_find(m, n);
    if (i < 0) return 0;
    m->last = i;
    int64_t b = n % CHUNK;
    return (m->bits[i][b >> 3] >> (b & 7)) & 1;
}

static void mirror_mark(seen_mirror *m, uint64_t era, int64_t n) {
    if (m->era != era || !m->L) return; /* started over since the send */
    int i = mirror_find(m, n);
    if (i < 0) {
        if (m->n >= MIRROR_MAX_CHUNKS) return; /* full: those users keep their GETBIT */
        i = m->n;
        if (!(m->bits[i] = calloc(1, CHUNK / 8))) abort();
        m->idx[i] = n / CHUNK;
        m->n++;
    }
    int64_t b = n % CHUNK;
    m->bits[i][b >> 3] |= (uint8_t)(1u << (b & 7));
}

/* ---- replies ---- */

/* Seconds until admission: the position over the rate (FIFO), or everyone waiting
 * over the rate (RANDOM: each admission is a draw among all of them); -1 while
 * admission is paused or the place is not drawn yet (pre-queue). */
static int64_t estimate_wait(int64_t position, int64_t waiting, int64_t rate, int method, int phase) {
    if (rate <= 0 || phase == 2) return -1;
    int64_t ahead = method == 2 ? (waiting > position ? waiting : position) : position;
    return (ahead + rate - 1) / rate;
}

static void status_init(Concert__V1__QueueStatus *st, const char *token, const char *concert) {
    concert__v1__queue_status__init(st);
    st->token = (char *)token;
    st->concert_id = (char *)concert;
}

static void status_waiting(Concert__V1__QueueStatus *st, int64_t pos, int64_t est) {
    st->state = CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING;
    st->position = pos;
    st->estimated_wait_seconds = est;
}

/* ACTIVE, with the receipt signed into buf[CC_RECEIPT_MAX] (kept by the caller until
 * the status is sent). */
static void status_active(srv_app *app, Concert__V1__QueueStatus *st, const char *concert, const unsigned char id[16],
                          const char *user, int64_t since, int64_t expires, uint8_t *buf) {
    st->state = CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE;
    st->expires_at_unix_ms = expires;
    size_t n = user && *user ? srv_receipt_make(app, concert, id, user, since, expires, buf) : 0;
    if (n) st->admission_receipt.data = buf, st->admission_receipt.len = n;
}

static void status_expired(Concert__V1__QueueStatus *st) {
    st->state = CONCERT__V1__QUEUE_STATE__QUEUE_STATE_EXPIRED;
}

static void finish_no_concert(srv_call *call, const char *field, const char *concert) {
    srv_call_finish(call, GRPC_STATUS_NOT_FOUND, "%s: no concert '%s' (an admin creates concerts)", field, concert);
}

/* A unary call waiting for Redis. */
typedef struct {
    srv_call *call;
    srv_app *app;
    char concert[SRV_MAX_ID + 1];
    char token[SRV_TOKEN_MAX + 1];
    char n[24];           /* the token's join number ("0": a v1 token) */
    int64_t nv;           /* the same as a number */
    unsigned char id[16]; /* the token id */
} qctx;

/* Writes v in decimal at o and a NUL; returns the end (at the NUL). For the per-call
 * strings of the queue path: snprintf was 3 % of a GetQueueStatus (callgrind). */
static char *put_i64(char *o, int64_t v) {
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    char tmp[24];
    size_t n = 0;
    do tmp[n++] = (char)('0' + u % 10); while (u /= 10);
    if (v < 0) *o++ = '-';
    while (n) *o++ = tmp[--n];
    *o = '\0';
    return o;
}

static qctx *qctx_new(srv_call *call) {
    qctx *q = calloc(1, sizeof *q);
    if (!q) abort();
    q->call = call;
    q->app = srv_call_app(call);
    return q;
}

static void parts_into(qctx *q, const srv_token_parts *p) {
    memcpy(q->concert, p->concert, sizeof q->concert);
    put_i64(q->n, p->n);
    q->nv = p->n;
    memcpy(q->id, p->id, 16);
}

/* Validates a request's token field: fills q (token, concert, n, id), or finishes the
 * call with the error and returns -1. */
static int take_token(srv_call *call, qctx *q, const char *token) {
    size_t len = token ? strlen(token) : 0;
    srv_token_parts p;
    if (len == 0) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "token: required");
        return -1;
    }
    if (len > 256) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "token: longer than 256 bytes");
        return -1;
    }
    if (srv_token_split(token, len, &p) < 0) {
        srv_call_finish(call, GRPC_STATUS_UNAUTHENTICATED, "token: unknown token");
        return -1;
    }
    memcpy(q->token, token, len + 1);
    parts_into(q, &p);
    return 0;
}

/* The script arguments every queue script starts with: slot, prefix, concert, then
 * (with defaults) the server's default policy. Returns how many were filled. */
static int base_args(const srv_app *app, const srv_queue_keys *k, const char *concert, int defaults,
                     const char **args) {
    srv_queue_state *s = app->queue;
    args[0] = k->slot, args[1] = k->prefix, args[2] = concert;
    if (!defaults) return 3;
    args[3] = s->d_rate, args[4] = s->d_max, args[5] = s->d_ttl, args[6] = s->d_idle;
    return 7;
}

/* ---- the per-user record (cap on concerts waited in at once) ---- */

#define USER_BUCKETS 65536 /* queue_user.lua: records in small hashes (listpacks) */

/* The bucket of a user's record: "cc:{uq:<FNV-1a(user) mod 65536>}:users". */
static void user_key(char *out, size_t len, const char *user) {
    snprintf(out, len, "cc:{uq:%u}:users", (unsigned)(hash_str(user) % USER_BUCKETS));
}

/* 'del' the (concert, token) entry of the user's record; not awaited. */
static void user_record(srv_app *app, const char *user, const char *concert, const char *token) {
    srv_token_parts tp;
    if (srv_token_split(token, strlen(token), &tp) < 0) return;
    char key[48], n[24];
    user_key(key, sizeof key, user);
    snprintf(n, sizeof n, "%" PRId64, tp.n);
    const char *args[] = {key, "del", user, concert, n};
    cc_redis_eval(app->redis, &s_user, ignore_reply, NULL, 1, 5, args, NULL);
}

/* ---- IssueToken ----
 * 1. queue_issue (concert slot): NOT_FOUND unless an admin created the concert; an
 *    existing WAITING or ACTIVE token is answered at once (one round trip, as ever).
 *    Straight through to ACTIVE when nobody waits and there is credit and room;
 *    everyone under PASSTHROUGH; UNAVAILABLE under REJECT; FAILED_PRECONDITION before a
 *    scheduled sale's pre-queue opens. A pre-queue join needs the sale's seed: the
 *    script hands it over (or takes one this server draws) and the call is sent again.
 * 2. For a new token only: queue_user 'add' (user slot) records it unless the user
 *    already waits in --max-queues-per-user concerts. When full, each recorded token is
 *    looked at in its own concert (queue_watch) and the dead ones are pruned before a
 *    second, final 'add'; still full, the new token is given up (queue_leave) and the
 *    call answers RESOURCE_EXHAUSTED. */

#define MAX_CAP_ENTRIES 1000

typedef struct {
    char concert[SRV_MAX_ID + 1];
    char token[SRV_TOKEN_MAX + 1];
    int dead;
} cap_entry;

typedef struct {
    qctx q; /* q.token: the token issued */
    char user[SRV_MAX_USER + 1];
    char hex[33];                /* the fresh token id in hex (q.id: its bytes) */
    int tries;
    int offer_seed;              /* the script has no seed yet: draw one and offer it */
    Concert__V1__QueueStatus st; /* the answer, sent once the token is recorded */
    uint8_t receipt[CC_RECEIPT_MAX];
    int pruned;
    int pending;
    int failed;
    cap_entry *entries;
    size_t n_entries;
} ictx;

static void ictx_free(ictx *x) {
    free(x->entries);
    free(x);
}

static void send_add(ictx *x);
static void send_issue(ictx *x);

static void reply_issued(ictx *x) {
    x->st.token = x->q.token;
    x->st.concert_id = x->q.concert;
    srv_call_reply(x->q.call, &x->st.base);
    ictx_free(x);
}

static void on_noted(redisReply *r, const char *err, void *p) { reply_issued(p); }

/* Answers and frees x. The concert is registered first: when this join writes it into
 * cc:queues (a new or long-unnoted concert, at most once a second), the answer waits for
 * the SADD's reply, so a client that has its token finds the queue registered (an
 * answer sent while the SADD still sat in the output buffer raced it under load). */
static void answer_issued(ictx *x) {
    int sent;
    concert_note_then(x->q.app, x->q.concert, on_noted, x, &sent);
    if (!sent) reply_issued(x);
}

static void on_undo(redisReply *r, const char *err, void *p) {}

/* Runs a script that takes the base arguments (with the defaults or not) and then the
 * token's n, id and text. */
static int eval_token(srv_app *app, const cc_redis_script *script, const qctx *q, int defaults, cc_redis_cb cb,
                      void *payload) {
    srv_queue_keys k;
    srv_queue_keys_of(&k, q->concert);
    const char *args[12];
    size_t lens[12];
    int n = base_args(app, &k, q->concert, defaults, args);
    int id_at = n + 1;
    args[n++] = q->n, args[n++] = (const char *)q->id, args[n++] = q->token;
    for (int i = 0; i < n; i++) lens[i] = i == id_at ? 16 : strlen(args[i]);
    return cc_redis_eval(app->redis, script, cb, payload, 1, n, args, lens);
}

static void send_leave(srv_app *app, qctx *q, cc_redis_cb cb, void *payload, int *rc) {
    *rc = eval_token(app, &s_leave, q, 0, cb, payload);
}

/* Over the cap: the token just made is given up, then the call refused. */
static void refuse_over_cap(ictx *x) {
    int rc;
    send_leave(x->q.app, &x->q, on_undo, NULL, &rc);
    srv_call_finish(x->q.call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                    "concert_id: user_id already waits in %" PRId64 " concerts, the most at once; leave one first",
                    x->q.app->cfg.max_queues_per_user);
    ictx_free(x);
}

static void fmt_utc(int64_t ms, char *out, size_t len) {
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Sent again with a fresh token id (a tie in the pre-queue's draw). */
static int new_id(ictx *x) {
    if (srv_token_id_new(x->q.id, x->hex) < 0) {
        srv_call_finish(x->q.call, GRPC_STATUS_INTERNAL, "no randomness available");
        return -1;
    }
    return 0;
}

static void retry_issue(ictx *x) {
    if (++x->tries >= ISSUE_TRIES) {
        srv_call_finish(x->q.call, GRPC_STATUS_UNAVAILABLE, "concert_id: the pre-queue is busy, try again");
        ictx_free(x);
        return;
    }
    send_issue(x);
}

static void on_issue(redisReply *r, const char *err, void *p) {
    ictx *x = p;
    qctx *q = &x->q;
    srv_app *app = q->app;
    int64_t code = srv_int_at(r, 0);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
        srv_fail_redis(q->call, r, err);
    } else if (code == -1) {
        finish_no_concert(q->call, "concert_id", q->concert);
    } else if (code == -4) {
        srv_call_finish(q->call, GRPC_STATUS_UNAVAILABLE,
                        "concert_id: the waiting room of '%s' admits nobody new now (queueing method REJECT, "
                        "maintenance); try again later",
                        q->concert);
    } else if (code == -5) {
        char a[32], b[32];
        int64_t pre = srv_int_at(r, 1), sale = srv_int_at(r, 2);
        fmt_utc(sale, b, sizeof b);
        if (pre > 0) {
            fmt_utc(pre, a, sizeof a);
            srv_call_finish(q->call, GRPC_STATUS_FAILED_PRECONDITION,
                            "concert_id: the pre-queue of '%s' opens at %s (%" PRId64 " ms), the sale at %s (%" PRId64
                            " ms)",
                            q->concert, a, pre, b, sale);
        } else {
            srv_call_finish(q->call, GRPC_STATUS_FAILED_PRECONDITION,
                            "concert_id: the sale of '%s' opens at %s (%" PRId64 " ms); joining opens then", q->concert,
                            b, sale);
        }
    } else if (code == -2) {
        /* The pre-queue's seed: the one drawn (kept for the next joins), or none yet. */
        const char *seed = srv_str_at(r, 1), *commit = srv_str_at(r, 2);
        srv_concert *c = concert_note(app, q->concert);
        if (strlen(seed) == 64 && strlen(commit) == 64 && srv_sale_unhex(seed, 32, c->seed) == 0) {
            memcpy(c->commit, commit, 65);
            c->have_seed = 1;
            x->offer_seed = 0;
        } else {
            x->offer_seed = 1;
        }
        retry_issue(x);
        return;
    } else if (code == -3) {
        if (new_id(x) == 0) {
            retry_issue(x);
            return;
        }
    } else if (code != 0 || r->elements < 11) {
        srv_fail_redis(q->call, r, err);
    } else {
        const char *tok = srv_str_at(r, 1);
        int64_t state = srv_int_at(r, 2), flags = srv_int_at(r, 7);
        snprintf(q->token, sizeof q->token, "%s", tok);
        srv_token_parts tp;
        if (srv_token_split(q->token, strlen(q->token), &tp) == 0) parts_into(q, &tp);
        status_init(&x->st, NULL, NULL);
        if (state == 2) {
            status_active(app, &x->st, q->concert, q->id, x->user, srv_int_at(r, 5), srv_int_at(r, 4), x->receipt);
        } else {
            int64_t pos = srv_int_at(r, 3);
            status_waiting(&x->st, pos,
                           estimate_wait(pos, srv_int_at(r, 10), srv_int_at(r, 6), (int)srv_int_at(r, 9),
                                         (int)srv_int_at(r, 8)));
        }
        if (flags & 2) srv_metrics_queue_admitted(app, q->concert, 1);
        if (flags & 1) {
            send_add(x); /* a new token: counted against the cap first */
            return;
        }
        answer_issued(x);
        return;
    }
    ictx_free(x);
}

static void send_issue(ictx *x) {
    qctx *q = &x->q;
    srv_app *app = q->app;
    srv_queue_keys k;
    srv_queue_keys_of(&k, q->concert);
    const char *args[16];
    size_t lens[16];
    int n = base_args(app, &k, q->concert, 1, args);
    char score[SRV_SALE_SCORE_MAX] = "", seed_hex[65] = "", commit[65] = "";
    unsigned char sha[32], cand[32];
    int have_draw = 0;
    srv_concert *c = concert_get(app, q->concert, 0);
    if (x->offer_seed) {
        if (srv_sale_seed_new(cand, seed_hex, commit) == 0) {
            srv_sale_draw(cand, q->id, sha, NULL, score);
            have_draw = 1;
        }
        OPENSSL_cleanse(cand, sizeof cand);
    } else if (c && c->have_seed && (!c->info_at || c->sale_at > redis_now(app))) {
        memcpy(commit, c->commit, 65);
        srv_sale_draw(c->seed, q->id, sha, NULL, score);
        have_draw = 1;
    }
    args[n++] = x->user;
    args[n++] = (const char *)q->id;
    args[n++] = x->hex;
    args[n++] = commit;
    args[n++] = score;
    args[n++] = have_draw ? (const char *)sha : "";
    args[n++] = seed_hex;
    for (int i = 0; i < n; i++) lens[i] = i == 8 ? 16 : i == 12 ? (have_draw ? 32 : 0) : strlen(args[i]);
    int rc = cc_redis_eval(app->redis, &s_issue, on_issue, x, 1, n, args, lens);
    OPENSSL_cleanse(seed_hex, sizeof seed_hex);
    if (rc < 0) {
        srv_fail_no_redis(q->call);
        ictx_free(x);
    }
}

/* One recorded token looked at in its concert: alive if WAITING or ACTIVE. */
typedef struct {
    ictx *x;
    size_t i;
} probe_arg;

static void probes_done(ictx *x) {
    if (x->failed) ictx_free(x);
    else send_add(x);
}

static void on_probe(redisReply *r, const char *err, void *p) {
    probe_arg *a = p;
    ictx *x = a->x;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 8) {
        int64_t state = srv_int_at(r, 4);
        x->entries[a->i].dead = state != 1 && state != 2;
    } else if (!x->failed) {
        x->failed = 1;
        srv_fail_redis(x->q.call, r, err);
    }
    free(a);
    if (--x->pending == 0) probes_done(x);
}

static void probe_entries(ictx *x) {
    srv_app *app = x->q.app;
    x->pending = 1;
    for (size_t i = 0; i < x->n_entries; i++) {
        cap_entry *e = &x->entries[i];
        srv_token_parts tp;
        if (!srv_valid_id(e->concert) || srv_token_split(e->token, strlen(e->token), &tp) < 0 ||
            strcmp(tp.concert, e->concert) != 0) {
            e->dead = 1; /* not something the server wrote */
            continue;
        }
        qctx pq = {.app = app};
        parts_into(&pq, &tp);
        snprintf(pq.token, sizeof pq.token, "%s", e->token);
        probe_arg *a = malloc(sizeof *a);
        if (!a) abort();
        a->x = x, a->i = i;
        x->pending++;
        if (eval_token(app, &s_watch, &pq, 1, on_probe, a) < 0) {
            free(a);
            x->pending--;
            if (!x->failed) {
                x->failed = 1;
                srv_fail_no_redis(x->q.call);
            }
        }
    }
    if (--x->pending == 0) probes_done(x);
}

static void on_add(redisReply *r, const char *err, void *p) {
    ictx *x = p;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
        srv_fail_redis(x->q.call, r, err);
        ictx_free(x);
        return;
    }
    if (srv_int_at(r, 0) == 0) {
        answer_issued(x);
        return;
    }
    if (x->pruned) {
        refuse_over_cap(x);
        return;
    }
    /* Full: find out which of the recorded tokens still live. */
    size_t n = (r->elements - 1) / 2;
    if (n > MAX_CAP_ENTRIES) n = MAX_CAP_ENTRIES;
    x->entries = calloc(n ? n : 1, sizeof *x->entries);
    if (!x->entries) abort();
    x->n_entries = n;
    for (size_t i = 0; i < n; i++) {
        snprintf(x->entries[i].concert, sizeof x->entries[i].concert, "%s", srv_str_at(r, 1 + 2 * i));
        snprintf(x->entries[i].token, sizeof x->entries[i].token, "%s", srv_str_at(r, 2 + 2 * i));
    }
    x->pruned = 1;
    probe_entries(x);
}

static void send_add(ictx *x) {
    srv_app *app = x->q.app;
    char key[48], cap[24];
    user_key(key, sizeof key, x->user);
    snprintf(cap, sizeof cap, "%" PRId64, app->cfg.max_queues_per_user);
    size_t n_dead = 0;
    for (size_t i = 0; i < x->n_entries; i++) n_dead += x->entries[i].dead;
    const char **args = calloc(7 + 2 * n_dead, sizeof *args);
    size_t *lens = calloc(7 + 2 * n_dead, sizeof *lens);
    char(*nums)[24] = calloc(n_dead + 1, sizeof *nums);
    if (!args || !lens || !nums) abort();
    args[0] = key, args[1] = "add", args[2] = x->user, args[3] = x->q.concert, args[4] = x->q.n;
    args[5] = (const char *)x->q.id, args[6] = cap;
    size_t k = 7, d = 0;
    for (size_t i = 0; i < x->n_entries; i++) {
        srv_token_parts tp;
        if (!x->entries[i].dead) continue;
        if (srv_token_split(x->entries[i].token, strlen(x->entries[i].token), &tp) < 0) tp.n = 0;
        snprintf(nums[d], sizeof nums[d], "%" PRId64, tp.n);
        args[k++] = x->entries[i].concert, args[k++] = nums[d++];
    }
    for (size_t i = 0; i < k; i++) lens[i] = i == 5 ? 16 : strlen(args[i]);
    int rc = cc_redis_eval(app->redis, &s_user, on_add, x, 1, (int)k, args, lens);
    free(args);
    free(lens);
    free(nums);
    if (rc < 0) {
        srv_fail_no_redis(x->q.call);
        ictx_free(x);
    }
}

void srv_queue_issue_token(srv_call *call) {
    const Concert__V1__IssueTokenRequest *req = (const void *)srv_call_request(call);
    if (!srv_valid_user(req->user_id)) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
                        "user_id: must be 1..128 bytes without control characters or braces");
        return;
    }
    if (!srv_valid_id(req->concert_id)) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "concert_id: must be 1..64 characters of [A-Za-z0-9_-]");
        return;
    }
    if (srv_limit_call(call, "user_id", req->user_id) < 0) return;
    if (srv_auth_user(call, req->user_id) < 0) return;
    ictx *x = calloc(1, sizeof *x);
    if (!x) abort();
    x->q.call = call;
    x->q.app = srv_call_app(call);
    snprintf(x->q.concert, sizeof x->q.concert, "%s", req->concert_id);
    snprintf(x->user, sizeof x->user, "%s", req->user_id);
    if (new_id(x) < 0) {
        ictx_free(x);
        return;
    }
    send_issue(x);
}

/* ---- GetQueueStatus ---- */

/* A live token proves a live queue: make sure someone ticks it. */
static void note_live(srv_app *app, const char *concert) {
    if (!concert_get(app, concert, 0)) concert_note(app, concert);
}

typedef struct {
    qctx q;
    uint8_t receipt[CC_RECEIPT_MAX];
} sctx;

static void on_status(redisReply *r, const char *err, void *p) {
    sctx *s = p;
    qctx *q = &s->q;
    int64_t state = srv_int_at(r, 0);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
        srv_fail_redis(q->call, r, err);
    } else if (state < 0) {
        finish_no_concert(q->call, "token", q->concert);
    } else if (state == 0) {
        srv_call_finish(q->call, GRPC_STATUS_UNAUTHENTICATED, "token: unknown token");
    } else if (r->elements < 6) {
        srv_fail_redis(q->call, r, err);
    } else {
        Concert__V1__QueueStatus st;
        status_init(&st, q->token, q->concert);
        if (state == 1 && r->elements >= 12) {
            int64_t pos = srv_int_at(r, 1);
            status_waiting(&st, pos,
                           estimate_wait(pos, srv_int_at(r, 8), srv_int_at(r, 4), (int)srv_int_at(r, 7),
                                         (int)srv_int_at(r, 6)));
        } else if (state == 2) {
            status_active(q->app, &st, q->concert, q->id, srv_str_at(r, 5), srv_int_at(r, 3), srv_int_at(r, 2),
                          s->receipt);
        } else {
            status_expired(&st);
        }
        srv_call_reply(q->call, &st.base);
        if (state == 1 || state == 2) note_live(q->app, q->concert);
    }
    free(s);
}

static int send_status_script(srv_app *app, const qctx *q, cc_redis_cb cb, void *payload) {
    return eval_token(app, &s_status, q, 1, cb, payload);
}

static void status_by_script(sctx *s) {
    if (send_status_script(s->q.app, &s->q, on_status, s) < 0) {
        srv_fail_no_redis(s->q.call);
        free(s);
    }
}

/* The fast path: three plain reads of a waiting user, two when the idle-bit mirror
 * knows the bit, one (ZRANK) when the member cache also knows the member (see the top
 * of the file). The tick's figures are copied: the concert
 * may leave the registry meanwhile (the mirror is looked up again by id). Owned by the
 * call's handler until fast_done (or the reply to its SETBIT, which marks the mirror),
 * then back on app->queue->free_fast. */
typedef struct fctx {
    qctx q;
    int64_t rate, waiting, idle_ms;
    int method;
    char seen_key[SRV_MAX_ID + 48];
    char bit[16];
    int pending, failed, found, got_bit;
    int64_t pos, bitval;
    int may_mark;           /* sent late enough in the epoch that a confirmed bit may be mirrored */
    uint64_t m_gen, m_era;  /* the reconnect count and the mirror's era at the send */
    uint64_t mc_era;        /* the member cache's era at the send (a found member fills it) */
    struct fctx *next_free;
} fctx;

#define FREE_FAST_MAX 1024

static fctx *fctx_get(srv_app *app) {
    srv_queue_state *qs = app->queue;
    fctx *f = qs->free_fast;
    if (f) {
        CC_UNPOISON(f, sizeof *f);
        qs->free_fast = f->next_free;
        qs->n_free_fast--;
    } else if (!(f = malloc(sizeof *f))) {
        abort();
    }
    return f;
}

static void fctx_put(srv_app *app, fctx *f) {
    srv_queue_state *qs = app->queue;
    if (qs->n_free_fast >= FREE_FAST_MAX) {
        free(f);
        return;
    }
    f->next_free = qs->free_fast;
    qs->free_fast = f;
    qs->n_free_fast++;
    CC_POISON(f, offsetof(fctx, next_free)); /* the ASan build still sees a use after "free" */
}

/* A proven waiting token's bit, confirmed set by Redis: into the concert's mirror
 * (if the concert is still known and its mirror still has the tag of the send). */
static void fast_mark(fctx *f) {
    srv_app *app = f->q.app;
    srv_concert *c = concert_get(app, f->q.concert, 0);
    if (c && redis_gen(app) == f->m_gen) mirror_mark(&c->seen, f->m_era, f->q.nv);
}

static void on_fast_setbit(redisReply *r, const char *err, void *p) {
    fctx *f = p;
    if (r && r->type == REDIS_REPLY_INTEGER) fast_mark(f);
    fctx_put(f->q.app, f);
}

static void fast_done(fctx *f) {
    srv_app *app = f->q.app;
    if (f->failed || !f->found || f->pos <= 0) {
        /* Not a plain waiting user (or Redis hiccuped): the script answers. */
        sctx *again = malloc(sizeof *again);
        if (!again) abort();
        again->q = f->q;
        fctx_put(app, f);
        status_by_script(again);
        return;
    }
    Concert__V1__QueueStatus st;
    status_init(&st, f->q.token, f->q.concert);
    status_waiting(&st, f->pos, estimate_wait(f->pos, f->waiting, f->rate, f->method, 0));
    srv_call_reply(f->q.call, &st.base);
    if (f->got_bit && f->bitval == 0) {
        /* f stays ours until the reply: a SETBIT that Redis answered is mirrored. */
        const char *argv[] = {"SETBIT", f->seen_key, f->bit, "1"};
        if (!f->may_mark) cc_redis_command_argv(app->redis, ignore_reply, NULL, 4, argv, NULL);
        else if (cc_redis_command_argv(app->redis, on_fast_setbit, f, 4, argv, NULL) == 0) return;
    } else if (f->got_bit && f->may_mark) {
        fast_mark(f); /* GETBIT said 1 */
    }
    fctx_put(app, f);
}

static void on_fast_member(redisReply *r, const char *err, void *p) {
    fctx *f = p;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        f->failed = 1;
    } else if (r->elements == 1 && r->element[0]->type == REDIS_REPLY_STRING && r->element[0]->len > 16 &&
               CRYPTO_memcmp(r->element[0]->str, f->q.id, 16) == 0 && r->element[0]->str[16] != 1) {
        f->found = 1;
        /* The token's member, proven: the next poll may ask ZRANK of it (member_cache). */
        const redisReply *m = r->element[0];
        srv_concert *c = m->len <= MCACHE_MEMBER ? concert_get(f->q.app, f->q.concert, 0) : NULL;
        if (c) mcache_put(&c->members, f->mc_era, f->q.nv, m->str, m->len);
    }
    if (--f->pending == 0) fast_done(f);
}

/* ZRANK of the cached member: its rank, or the script answers (nil: the member left
 * the line, so the entry goes too). */
static void on_fast_rank(redisReply *r, const char *err, void *p) {
    fctx *f = p;
    if (r && r->type == REDIS_REPLY_INTEGER && r->integer >= 0) {
        f->found = 1;
        f->pos = r->integer + 1;
    } else {
        f->failed = 1;
        srv_concert *c = r && r->type == REDIS_REPLY_NIL ? concert_get(f->q.app, f->q.concert, 0) : NULL;
        if (c) mcache_forget(&c->members, f->q.nv, f->q.id);
    }
    fast_done(f);
}

static void on_fast_count(redisReply *r, const char *err, void *p) {
    fctx *f = p;
    if (!r || r->type != REDIS_REPLY_INTEGER) f->failed = 1;
    else f->pos = r->integer;
    if (--f->pending == 0) fast_done(f);
}

static void on_fast_bit(redisReply *r, const char *err, void *p) {
    fctx *f = p;
    if (r && r->type == REDIS_REPLY_INTEGER) {
        f->got_bit = 1;
        f->bitval = r->integer;
    }
    if (--f->pending == 0) fast_done(f);
}

/* 1 if the fast path may answer for concert c now. */
static int fast_ok(const srv_app *app, const srv_concert *c) {
    if (!c || !c->info_at || !app->queue->clock_known) return 0;
    if (uv_now(app->loop) - c->info_at > INFO_FRESH_MS) return 0;
    return c->sale_at <= 0 || c->sale_at <= redis_now(app);
}

/* GETBIT q:seen:<slot>:<n / CHUNK> <n % CHUNK> of f's token. */
static void send_getbit(srv_app *app, fctx *f, const srv_queue_keys *k, int64_t slot) {
    int64_t n = f->q.nv;
    /* "<prefix>q:seen:<slot>:<n / CHUNK>" and "<n % CHUNK>", without snprintf */
    char *o = f->seen_key;
    memcpy(o, k->prefix, k->plen);
    memcpy(o + k->plen, "q:seen:", 7);
    o = put_i64(o + k->plen + 7, slot);
    *o++ = ':';
    put_i64(o, n / CHUNK);
    put_i64(f->bit, n % CHUNK);
    const char *gb[] = {"GETBIT", f->seen_key, f->bit};
    if (cc_redis_command_argv(app->redis, on_fast_bit, f, 3, gb, NULL) == 0) f->pending++;
}

static void status_fast(srv_app *app, srv_concert *c, qctx *q) {
    fctx *f = fctx_get(app);
    f->q = *q;
    f->rate = c->rate, f->waiting = c->waiting, f->idle_ms = c->idle_ms, f->method = c->method;
    f->failed = f->found = f->got_bit = 0;
    f->pos = f->bitval = 0;
    srv_queue_keys k;
    srv_queue_keys_of(&k, q->concert);
    int64_t n = q->nv;
    uint64_t gen = redis_gen(app);
    mcache_check(&c->members, gen);
    /* The idle bit first: when it needs no GETBIT, a cached member answers alone. */
    f->may_mark = 0;
    int need_bit = 0;
    int64_t slot = 0;
    if (f->idle_ms > 0 && n > 0) {
        int64_t L = (f->idle_ms + 1) / 2;
        /* Redis' clock by this concert's last tick (fresh: fast_ok), which measured the
         * clock of the node that holds the concert (Redis Cluster: one per slot). */
        int64_t rn = (int64_t)uv_now(app->loop) + c->clock_offset;
        int64_t E = rn / L;
        /* The mirror only from a margin into the epoch (see seen_mirror); an L too
         * short for the margin never uses it. */
        int64_t margin = c->clock_rtt / 2 + MIRROR_SLACK_MS;
        int known = 0;
        if (margin < L / 2 && rn - E * L >= margin) {
            uint64_t era = c->seen.era;
            known = mirror_has(&c->seen, E, L, gen, n); /* then GETBIT would say 1: no GETBIT, no SETBIT */
            if (c->seen.era != era) mcache_drop(&c->members); /* the mirror started over: so do the members */
            f->may_mark = !known, f->m_gen = gen, f->m_era = c->seen.era;
        }
        need_bit = !known, slot = E % 3;
    }
    f->mc_era = c->members.era;
    const mcache_entry *e = need_bit ? NULL : mcache_find(&c->members, n, q->id);
    if (e) {
        /* One command: the member is known, the bit needs nothing (see member_cache). */
        const char *zk[] = {"ZRANK", k.slot, (const char *)e->member};
        const size_t zl[] = {5, k.plen + 6, e->len};
        if (cc_redis_command_argv(app->redis, on_fast_rank, f, 3, zk, zl) == 0) return;
    }
    f->pending = 1; /* held until every command is sent */
    const char *zr[] = {"ZRANGEBYSCORE", k.slot, q->n, q->n, "LIMIT", "0", "1"};
    if (cc_redis_command_argv(app->redis, on_fast_member, f, 7, zr, NULL) == 0) f->pending++;
    else f->failed = 1;
    const char *zc[] = {"ZCOUNT", k.slot, "-inf", q->n};
    if (cc_redis_command_argv(app->redis, on_fast_count, f, 4, zc, NULL) == 0) f->pending++;
    else f->failed = 1;
    if (need_bit) send_getbit(app, f, &k, slot);
    if (--f->pending == 0) fast_done(f);
}

void srv_queue_get_status(srv_call *call) {
    const Concert__V1__GetQueueStatusRequest *req = (const void *)srv_call_request(call);
    srv_app *app = srv_call_app(call);
    qctx q = {.call = call, .app = app};
    if (take_token(call, &q, req->token) < 0 || srv_limit_call(call, "token", q.token) < 0) return;
    srv_concert *c = q.n[0] != '0' ? concert_get(app, q.concert, 0) : NULL;
    if (fast_ok(app, c)) {
        status_fast(app, c, &q);
        return;
    }
    sctx *s = malloc(sizeof *s);
    if (!s) abort();
    s->q = q;
    status_by_script(s);
}

/* ---- LeaveQueue ---- */

static void on_leave(redisReply *r, const char *err, void *p) {
    qctx *q = p;
    int64_t prev = srv_int_at(r, 0);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 2) {
        srv_fail_redis(q->call, r, err);
    } else if (prev < 0) {
        finish_no_concert(q->call, "token", q->concert);
    } else if (prev == 0) {
        srv_call_finish(q->call, GRPC_STATUS_UNAUTHENTICATED, "token: unknown token");
    } else {
        Concert__V1__LeaveQueueResponse resp;
        concert__v1__leave_queue_response__init(&resp);
        resp.previous_state = (Concert__V1__QueueState)prev;
        srv_call_reply(q->call, &resp.base);
        const char *user = srv_str_at(r, 1);
        if (*user && srv_valid_user(user)) user_record(q->app, user, q->concert, q->token);
    }
    free(q);
}

void srv_queue_leave(srv_call *call) {
    const Concert__V1__LeaveQueueRequest *req = (const void *)srv_call_request(call);
    qctx *q = qctx_new(call);
    if (take_token(call, q, req->token) < 0) {
        free(q);
        return;
    }
    int rc;
    send_leave(q->app, q, on_leave, q, &rc);
    if (rc < 0) {
        free(q);
        srv_fail_no_redis(call);
    }
}

/* ---- WatchQueueStatus ---- */

/* Not inlined: GCC 12 at -O3 cannot see that callers always hold a reference while
 * they use the watcher, and reports a use after free that cannot happen. */
__attribute__((noinline)) static void watcher_unref(srv_watcher *w) {
    if (--w->refs == 0) free(w);
}

/* Watch streams this process holds open (WatchQueueStatus calls and WatchQueueStatuses
 * streams, created and not yet ended) and the tokens they watch: the
 * concert_watch_streams and concert_watched_tokens gauges. Loop thread only. */
static size_t watch_streams, watched_tokens;

size_t srv_queue_watch_streams(void) { return watch_streams; }
size_t srv_queue_watched_tokens(void) { return watched_tokens; }

/* A WatchQueueStatuses stream: its tokens (a list, and a map by token for adds and
 * removes). Freed by stream_end, which ends the call. */
struct wstream {
    srv_call *call;
    cc_smap *by_token;
    srv_watcher *tokens;
    size_t n;
    int half_closed; /* the client sent its last request */
    int ending;      /* stream_end runs: its watchers' ends must not end it again */
};

/* watcher_end's code for a token of a stream that goes without a word (removed by the
 * client, or its stream is over). */
#define END_QUIET ((grpc_status_code)-1)

static void stream_end(wstream *s, grpc_status_code code, const char *msg);
static void stream_send_error(wstream *s, const char *token, grpc_status_code code, const char *msg);

/* Ends a watcher: a WatchQueueStatus call ends with status `code`; a token of a
 * WatchQueueStatuses stream leaves the stream (with an update carrying `code` unless OK
 * or END_QUIET), and the stream ends OK if it was half-closed and this was its last
 * token. Either way the watcher is taken off its concert's list. */
static void watcher_end(srv_watcher *w, grpc_status_code code, const char *msg) {
    if (w->dead) return;
    w->dead = 1;
    watched_tokens--;
    srv_concert *c = w->concert;
    if (c) {
        if (w->prev) w->prev->next = w->next; else c->watchers = w->next;
        if (w->next) w->next->prev = w->prev;
        c->n_watchers--;
    }
    wstream *s = w->stream;
    if (s) {
        if (w->sprev) w->sprev->snext = w->snext; else s->tokens = w->snext;
        if (w->snext) w->snext->sprev = w->sprev;
        if (cc_smap_get(s->by_token, w->token) == w) cc_smap_del(s->by_token, w->token);
        s->n--;
        if (code != GRPC_STATUS_OK && code != END_QUIET && code != GRPC_STATUS_CANCELLED)
            stream_send_error(s, w->token, code, msg);
        if (s->half_closed && s->n == 0 && !s->ending) stream_end(s, GRPC_STATUS_OK, "");
    } else {
        watch_streams--;
        srv_call_set_data(w->call, NULL);
        srv_call_finish(w->call, code == END_QUIET ? GRPC_STATUS_CANCELLED : code, "%s", msg);
    }
    watcher_unref(w);
}

/* Sends a watcher's status: as it is on its own call, wrapped in an update on a stream. */
static void watcher_send(srv_watcher *w, Concert__V1__QueueStatus *st) {
    if (!w->stream) {
        srv_call_send(w->call, &st->base);
        return;
    }
    Concert__V1__WatchQueueStatusesResponse u;
    concert__v1__watch_queue_statuses_response__init(&u);
    u.token = w->token;
    u.status = st;
    srv_call_send(w->call, &u.base);
}

/* How many messages may wait unsent before a WAITING step is skipped (a slow reader):
 * one for a call of its own, one refresh's worth for a stream. */
static int watcher_backlog(const srv_watcher *w) { return w->stream ? (int)w->stream->n : 1; }

/* What a refresh found for one token. */
typedef struct {
    int state;
    int64_t value; /* position (waiting) or expiry (active) */
    int64_t since;
    const char *user;
    int64_t rate, waiting;
    int method, phase;
} watch_seen;

/* Sends the status if it changed; ends the stream on a terminal state. */
static void watcher_update(srv_watcher *w, const watch_seen *v) {
    if (w->dead) return;
    if (v->state == 0) {
        watcher_end(w, GRPC_STATUS_UNAUTHENTICATED, "token: unknown token");
        return;
    }
    int64_t pos = v->state == 1 ? v->value : 0;
    if (v->state == w->last_state && pos == w->last_pos) return;
    if (v->state == 1 && srv_call_pending_writes(w->call) > watcher_backlog(w)) return; /* slow reader: skip a step */
    srv_app *app = srv_call_app(w->call);
    const char *concert = w->concert ? w->concert->id : "";
    Concert__V1__QueueStatus st;
    uint8_t receipt[CC_RECEIPT_MAX];
    status_init(&st, w->token, concert);
    if (v->state == 1) status_waiting(&st, pos, estimate_wait(pos, v->waiting, v->rate, v->method, v->phase));
    else if (v->state == 2) status_active(app, &st, concert, w->id, v->user, v->since, v->value, receipt);
    else status_expired(&st);
    watcher_send(w, &st);
    w->last_state = v->state;
    w->last_pos = pos;
    if (v->state != 1) watcher_end(w, GRPC_STATUS_OK, "");
}

typedef struct {
    srv_concert *concert;
    size_t n;
    srv_watcher *w[WATCH_CHUNK];
} watch_batch;

static void on_watch_batch(redisReply *r, const char *err, void *p) {
    watch_batch *b = p;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 4 + 4 * b->n) {
        watch_seen v = {.rate = srv_int_at(r, 0), .phase = (int)srv_int_at(r, 1), .method = (int)srv_int_at(r, 2),
                        .waiting = srv_int_at(r, 3)};
        for (size_t i = 0; i < b->n; i++) {
            v.state = (int)srv_int_at(r, 4 + 4 * i);
            v.value = srv_int_at(r, 5 + 4 * i);
            v.since = srv_int_at(r, 6 + 4 * i);
            v.user = srv_str_at(r, 7 + 4 * i);
            watcher_update(b->w[i], &v);
        }
    } else if (r && r->type == REDIS_REPLY_ERROR) {
        CC_WARN("watch_refresh_failed", "concert=%s error=\"%s\"", b->concert->id, r->str);
    }
    /* On a Redis outage watchers simply wait for the next tick. The batches of one
     * refresh may travel on different connections and come back in any order: the
     * next refresh starts only when all of them are back. */
    b->concert->watch_batches--;
    for (size_t i = 0; i < b->n; i++) watcher_unref(b->w[i]);
    free(b);
}

static void refresh_watchers(srv_concert *c) {
    srv_app *app = c->app;
    if (c->watch_batches || !c->watchers) return;
    srv_queue_keys k;
    srv_queue_keys_of(&k, c->id);
    const char **args = malloc((7 + 3 * WATCH_CHUNK) * sizeof *args);
    size_t *lens = malloc((7 + 3 * WATCH_CHUNK) * sizeof *lens);
    if (!args || !lens) abort();
    int base = base_args(app, &k, c->id, 1, args);
    for (int i = 0; i < base; i++) lens[i] = strlen(args[i]);
    srv_watcher *w = c->watchers;
    while (w) {
        watch_batch *b = calloc(1, sizeof *b);
        if (!b) abort();
        b->concert = c;
        int n = base;
        for (; w && b->n < WATCH_CHUNK; w = w->next) {
            b->w[b->n] = w;
            args[n] = w->n, lens[n] = strlen(w->n), n++;
            args[n] = (const char *)w->id, lens[n] = 16, n++;
            args[n] = w->token, lens[n] = strlen(w->token), n++;
            w->refs++;
            b->n++;
        }
        /* Up to WATCH_CHUNK statuses a reply: the bulk lane. */
        if (cc_redis_eval_bulk(app->redis, &s_watch, on_watch_batch, b, 1, n, args, lens) < 0) {
            CC_DEBUG("watch_refresh_not_sent", "concert=%s watchers=%zu", c->id, b->n);
            for (size_t i = 0; i < b->n; i++) watcher_unref(b->w[i]);
            free(b);
            break;
        }
        c->watch_batches++;
    }
    free(args);
    free(lens);
}

static void on_watch_cancel(srv_call *call) {
    srv_watcher *w = srv_call_data(call);
    if (w) watcher_end(w, GRPC_STATUS_CANCELLED, "cancelled");
    else srv_call_finish(call, GRPC_STATUS_CANCELLED, "cancelled");
}

/* The first status proves (or refutes) the token before anything is registered: a
 * forged token or a made-up concert costs one script call and no state. */
static void on_watch_first(redisReply *r, const char *err, void *p) {
    srv_watcher *w = p;
    if (w->dead) {
        watcher_unref(w);
        return;
    }
    srv_app *app = srv_call_app(w->call);
    int64_t state = srv_int_at(r, 0);
    char concert[SRV_MAX_ID + 1];
    srv_token_parse(w->token, strlen(w->token), concert);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
        char msg[256];
        grpc_status_code code = srv_redis_status(r, err, msg, sizeof msg);
        watcher_end(w, code == GRPC_STATUS_OK ? GRPC_STATUS_INTERNAL : code, msg);
    } else if (state < 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "token: no concert '%s' (an admin creates concerts)", concert);
        watcher_end(w, GRPC_STATUS_NOT_FOUND, msg);
    } else if (state == 0) {
        watcher_end(w, GRPC_STATUS_UNAUTHENTICATED, "token: unknown token");
    } else if (r->elements < 6) {
        watcher_end(w, GRPC_STATUS_INTERNAL, "unexpected reply from redis");
    } else if (app->shutting_down) {
        watcher_end(w, GRPC_STATUS_UNAVAILABLE, "server shutting down");
    } else if (state == 1 && r->elements >= 12) {
        /* WAITING: from now on the concert's refresh ticks update this watcher. */
        srv_concert *c = concert_get(app, concert, 0);
        if (!c) c = concert_note(app, concert);
        w->concert = c;
        w->next = c->watchers;
        if (c->watchers) c->watchers->prev = w;
        c->watchers = w;
        c->n_watchers++;
        watch_seen v = {.state = 1, .value = srv_int_at(r, 1), .rate = srv_int_at(r, 4), .phase = (int)srv_int_at(r, 6),
                        .method = (int)srv_int_at(r, 7), .waiting = srv_int_at(r, 8)};
        watcher_update(w, &v);
    } else {
        /* ACTIVE or EXPIRED: sent, then the end. */
        Concert__V1__QueueStatus st;
        uint8_t receipt[CC_RECEIPT_MAX];
        status_init(&st, w->token, concert);
        if (state == 2)
            status_active(app, &st, concert, w->id, srv_str_at(r, 5), srv_int_at(r, 3), srv_int_at(r, 2), receipt);
        else
            status_expired(&st);
        watcher_send(w, &st);
        watcher_end(w, GRPC_STATUS_OK, "");
    }
    watcher_unref(w);
}

void srv_queue_watch(srv_call *call) {
    const Concert__V1__WatchQueueStatusRequest *req = (const void *)srv_call_request(call);
    srv_app *app = srv_call_app(call);
    qctx q = {.call = call, .app = app};
    if (take_token(call, &q, req->token) < 0) return;
    if (app->shutting_down) {
        srv_call_finish(call, GRPC_STATUS_UNAVAILABLE, "server shutting down");
        return;
    }
    /* Held for minutes and nothing reads its headers again (its status details take the
     * concert from the token): 480 of the ~12,500 bytes a held stream costs. */
    srv_call_drop_metadata(call);
    srv_watcher *w = calloc(1, sizeof *w);
    if (!w) abort();
    w->call = call;
    memcpy(w->token, q.token, sizeof w->token);
    memcpy(w->n, q.n, sizeof w->n);
    memcpy(w->id, q.id, 16);
    w->refs = 2; /* the call's and the first status query's */
    watch_streams++;
    watched_tokens++;
    srv_call_set_data(call, w);
    srv_call_on_cancel(call, on_watch_cancel);
    if (send_status_script(app, &q, on_watch_first, w) < 0) {
        w->refs--;
        watcher_end(w, GRPC_STATUS_UNAVAILABLE, "redis unavailable");
    }
}

/* ---- WatchQueueStatuses ----
 * One bidi stream, many tokens: each token is an srv_watcher like a WatchQueueStatus
 * call's (the same first status, concert list, refresh batches, updates and end), only
 * its messages are wrapped in WatchQueueStatusesResponse on the shared call and its
 * errors are that token's update instead of the call's status (watcher_end). Requests
 * are read one at a time: the next receive is armed once a request's tokens are sent
 * to Redis, so a client that floods requests is paced by its own stream. */

static void stream_send_error(wstream *s, const char *token, grpc_status_code code, const char *msg) {
    Concert__V1__WatchQueueStatusesResponse u;
    concert__v1__watch_queue_statuses_response__init(&u);
    u.token = (char *)token;
    u.error_code = (int32_t)code;
    u.error_message = (char *)msg;
    srv_call_send(s->call, &u.base);
}

/* Ends every token of the stream without a word, then the call with `code`. */
static void stream_end(wstream *s, grpc_status_code code, const char *msg) {
    if (s->ending) return;
    s->ending = 1;
    while (s->tokens) watcher_end(s->tokens, END_QUIET, "");
    watch_streams--;
    srv_call_set_data(s->call, NULL);
    srv_call_finish(s->call, code, "%s", msg);
    cc_smap_free(s->by_token);
    free(s);
}

static void on_stream_cancel(srv_call *call) {
    wstream *s = srv_call_data(call);
    if (s) stream_end(s, GRPC_STATUS_CANCELLED, "cancelled");
    else srv_call_finish(call, GRPC_STATUS_CANCELLED, "cancelled");
}

/* The shape of a request, before anything is changed: every token 1..256 bytes, at
 * most the stream's limit in one list. 0, or -1 with the stream ended. */
static int stream_check(wstream *s, const Concert__V1__WatchQueueStatusesRequest *req, size_t max) {
    const struct {
        const char *field;
        char **v;
        size_t n;
    } lists[] = {{"remove_tokens", req->remove_tokens, req->n_remove_tokens},
                 {"add_tokens", req->add_tokens, req->n_add_tokens}};
    char msg[160];
    for (size_t l = 0; l < 2; l++) {
        if (lists[l].n > max) {
            snprintf(msg, sizeof msg, "%s: %zu tokens in one request, at most %zu (--max-tokens-per-stream)",
                     lists[l].field, lists[l].n, max);
            stream_end(s, GRPC_STATUS_INVALID_ARGUMENT, msg);
            return -1;
        }
        for (size_t i = 0; i < lists[l].n; i++) {
            size_t len = strlen(lists[l].v[i]);
            if (len == 0 || len > 256) {
                snprintf(msg, sizeof msg, "%s[%zu]: %s", lists[l].field, i,
                         len ? "longer than 256 bytes" : "required");
                stream_end(s, GRPC_STATUS_INVALID_ARGUMENT, msg);
                return -1;
            }
        }
    }
    return 0;
}

/* Starts watching one token on the stream (a token already watched: nothing). */
static void stream_add(wstream *s, srv_app *app, const char *token, size_t max) {
    if (cc_smap_get(s->by_token, token)) return;
    if (s->n >= max) {
        char msg[160];
        snprintf(msg, sizeof msg, "add_tokens: this stream already watches %zu tokens (--max-tokens-per-stream)", s->n);
        stream_send_error(s, token, GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
        return;
    }
    size_t len = strlen(token);
    srv_token_parts p;
    if (srv_token_split(token, len, &p) < 0) {
        stream_send_error(s, token, GRPC_STATUS_UNAUTHENTICATED, "token: unknown token");
        return;
    }
    qctx q = {.call = s->call, .app = app};
    memcpy(q.token, token, len + 1);
    parts_into(&q, &p);
    srv_watcher *w = calloc(1, sizeof *w);
    if (!w) abort();
    w->call = s->call;
    w->stream = s;
    memcpy(w->token, q.token, sizeof w->token);
    memcpy(w->n, q.n, sizeof w->n);
    memcpy(w->id, q.id, 16);
    w->refs = 2; /* the stream's and the first status query's */
    w->snext = s->tokens;
    if (s->tokens) s->tokens->sprev = w;
    s->tokens = w;
    s->n++;
    watched_tokens++;
    cc_smap_put(s->by_token, w->token, w);
    if (send_status_script(app, &q, on_watch_first, w) < 0) {
        w->refs--;
        watcher_end(w, GRPC_STATUS_UNAVAILABLE, "redis unavailable"); /* as every call says it */
    }
}

static void on_stream_request(srv_call *call, grpc_byte_buffer *bb);

#define STREAM_UNSENT_MAX 64 /* updates a stream may have unsent before its requests wait */

static void resume_requests(srv_call *call) { srv_call_recv(call, on_stream_request); }

static void on_stream_request(srv_call *call, grpc_byte_buffer *bb) {
    wstream *s = srv_call_data(call);
    if (!s) return;
    if (!bb) {
        /* The client is done asking (or the stream broke: the cancel follows). */
        s->half_closed = 1;
        if (s->n == 0) stream_end(s, GRPC_STATUS_OK, "");
        return;
    }
    srv_app *app = srv_call_app(call);
    size_t max = app->cfg.max_tokens_per_stream > 0 ? (size_t)app->cfg.max_tokens_per_stream : 1000;
    ProtobufCMessage *msg = NULL;
    char err[300];
    if (srv_call_decode(call, &concert__v1__watch_queue_statuses_request__descriptor, bb, &msg, err, sizeof err) < 0) {
        stream_end(s, GRPC_STATUS_INVALID_ARGUMENT, err);
        return;
    }
    const Concert__V1__WatchQueueStatusesRequest *req = (const void *)msg;
    if (stream_check(s, req, max) < 0) {
        protobuf_c_message_free_unpacked(msg, NULL);
        return;
    }
    for (size_t i = 0; i < req->n_remove_tokens; i++) {
        srv_watcher *w = cc_smap_get(s->by_token, req->remove_tokens[i]);
        if (w) watcher_end(w, END_QUIET, "");
    }
    if (app->shutting_down) {
        protobuf_c_message_free_unpacked(msg, NULL);
        stream_end(s, GRPC_STATUS_UNAVAILABLE, "server shutting down");
        return;
    }
    for (size_t i = 0; i < req->n_add_tokens; i++) stream_add(s, app, req->add_tokens[i], max);
    protobuf_c_message_free_unpacked(msg, NULL);
    /* Backpressure: WAITING steps are skipped for a slow reader, but refusals and last
     * updates are not. While more than STREAM_UNSENT_MAX updates are unsent, the next
     * request is not read: a client that asks without reading is held back by HTTP/2
     * flow control once gRPC's windows are full, and this stream's queue stays within
     * one request's updates. */
    int unsent = srv_call_pending_writes(call);
    if (unsent > STREAM_UNSENT_MAX) {
        CC_DEBUG("watch_stream_paused", "unsent=%d tokens=%zu", unsent, s->n);
        srv_call_on_drain(call, STREAM_UNSENT_MAX / 4, resume_requests);
    } else {
        srv_call_recv(call, on_stream_request);
    }
}

void srv_queue_watch_many(srv_call *call) {
    srv_app *app = srv_call_app(call);
    if (app->shutting_down) {
        srv_call_finish(call, GRPC_STATUS_UNAVAILABLE, "server shutting down");
        return;
    }
    /* Held for minutes, like a WatchQueueStatus call, and nothing reads its headers: no
     * auth (the tokens in its requests are the credentials), no rate limit, and the
     * peer address comes from the transport. The only reader would be the status
     * details' concert_id, taken from an `authorization` bearer when a call has no
     * concert of its own; a stream spans concerts and its clients send none. */
    srv_call_drop_metadata(call);
    wstream *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->call = call;
    s->by_token = cc_smap_new();
    watch_streams++;
    srv_call_set_data(call, s);
    srv_call_on_cancel(call, on_stream_cancel);
    srv_call_recv(call, on_stream_request);
}

/* ---- ticks ---- */

static void on_admit(redisReply *r, const char *err, void *p) {
    srv_concert *c = p;
    srv_app *app = c->app;
    c->admit_inflight = 0;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 7) {
        int64_t admitted = srv_int_at(r, 0), waiting = srv_int_at(r, 1), active = srv_int_at(r, 2);
        int64_t expired = srv_int_at(r, 3), idled = srv_int_at(r, 4), holds = srv_int_at(r, 5);
        int exists = srv_int_at(r, 6) != 0;
        srv_metrics_queue_tick(c->app, c->id, admitted, waiting, active);
        if (exists && r->elements >= 13) {
            uint64_t now = uv_now(app->loop);
            int64_t rnow = srv_int_at(r, 7);
            c->rate = srv_int_at(r, 8);
            c->idle_ms = srv_int_at(r, 9);
            c->method = (int)srv_int_at(r, 10);
            c->sale_at = srv_int_at(r, 11);
            c->waiting = waiting;
            mcache_size(&c->members, waiting);
            c->info_at = now ? now : 1;
            /* Redis' clock: its reading is halfway between send and reply. */
            app->queue->clock_offset = rnow - (int64_t)(c->admit_sent + (now - c->admit_sent) / 2);
            app->queue->clock_known = 1;
            c->clock_offset = app->queue->clock_offset;
            c->clock_rtt = (int64_t)(now - c->admit_sent);
            srv_metrics_queue_rate(app, c->id, c->rate);
        }
        if (admitted || expired || idled)
            CC_DEBUG("queue_tick", "concert=%s admitted=%" PRId64 " waiting=%" PRId64 " active=%" PRId64
                     " expired=%" PRId64 " idled=%" PRId64, c->id, admitted, waiting, active, expired, idled);
        /* Tell this server's watchers of the new admissions without waiting a tick. */
        if (admitted && c->watchers) refresh_watchers(c);
        /* Ended tokens the queue forgot: out of their users' records too. */
        for (size_t i = 13; i + 1 < r->elements; i += 2) {
            const char *user = srv_str_at(r, i);
            if (srv_valid_user(user)) user_record(app, user, c->id, srv_str_at(r, i + 1));
        }
        if (!exists) concert_caches_drop(c); /* deleted: its bits and members went with it */
        int empty = !exists || (waiting == 0 && active == 0 && holds == 0);
        if (!empty) {
            concert_note(app, c->id);
        } else if ((++c->idle_ticks >= 2 || !exists) && !c->watchers && !c->watch_batches && !app->shutting_down) {
            concert_drop(app, c, exists);
        }
    } else if (r && r->type == REDIS_REPLY_ERROR) {
        CC_WARN("queue_tick_failed", "concert=%s error=\"%s\"", c->id, r->str);
    }
}

static void on_admit_timer(uv_timer_t *t) {
    srv_app *app = t->data;
    srv_queue_state *s = app->queue;
    if (!cc_redis_is_up(app->redis)) return;
    char calls[24], errors[24];
    int64_t wc, we;
    srv_adapt_window(app, &wc, &we);
    snprintf(calls, sizeof calls, "%" PRId64, wc);
    snprintf(errors, sizeof errors, "%" PRId64, we);
    FOR_EACH_CONCERT(app, c) {
        if (c->admit_inflight) continue;
        unsigned char rnd[16];
        char rhex[33];
        if (srv_token_id_new(rnd, rhex) < 0) return; /* RANDOM picks need the CSPRNG */
        srv_queue_keys k;
        srv_queue_keys_of(&k, c->id);
        const char *args[16];
        int n = base_args(app, &k, c->id, 1, args);
        args[n++] = s->gone_keep, args[n++] = rhex, args[n++] = calls, args[n++] = errors;
        args[n++] = s->a_interval, args[n++] = s->a_pending, args[n++] = s->a_backlog, args[n++] = s->a_errors;
        c->admit_sent = uv_now(app->loop);
        /* Admission may move many tokens (and its reply lists the ended ones): the bulk
         * lane. What it reads that the small lane writes unawaited (q:seen bits) only
         * matters at the idle timeout's scale. */
        if (cc_redis_eval_bulk(app->redis, &s_admit, on_admit, c, 1, n, args, NULL) == 0) c->admit_inflight = 1;
    }
}

static void on_watch_timer(uv_timer_t *t) {
    srv_app *app = t->data;
    if (!cc_redis_is_up(app->redis)) return;
    FOR_EACH_CONCERT(app, c) refresh_watchers(c);
}

static void on_queues(redisReply *r, const char *err, void *p) {
    srv_app *app = p;
    app->refresh_inflight = 0;
    if (!r || r->type != REDIS_REPLY_ARRAY || app->shutting_down) return;
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING && srv_valid_id(r->element[i]->str))
            concert_get(app, r->element[i]->str, 1);
}

static void on_refresh_timer(uv_timer_t *t) {
    srv_app *app = t->data;
    if (app->refresh_inflight) return;
    if (cc_redis_command(app->redis, on_queues, app, "SMEMBERS cc:queues") == 0) app->refresh_inflight = 1;
}

/* ---- life cycle ---- */

int srv_queue_init(srv_app *app) {
    srv_queue_script_add(&s_issue, "queue_issue", lua_queue_issue, lua_queue_issue_len);
    srv_queue_script_add(&s_status, "queue_status", lua_queue_status, lua_queue_status_len);
    srv_queue_script_add(&s_leave, "queue_leave", lua_queue_leave, lua_queue_leave_len);
    srv_queue_script_add(&s_admit, "queue_admit", lua_queue_admit, lua_queue_admit_len);
    srv_queue_script_add(&s_watch, "queue_watch", lua_queue_watch, lua_queue_watch_len);
    srv_script_add(&s_user, "queue_user", NULL, 0, lua_queue_user, lua_queue_user_len);
    srv_sale_init(app);
    srv_adapt_init(app);
    srv_queue_state *s = calloc(1, sizeof *s);
    if (!s) abort();
    const srv_config *cfg = &app->cfg;
    snprintf(s->d_rate, sizeof s->d_rate, "%" PRId64, cfg->admit_rate);
    snprintf(s->d_max, sizeof s->d_max, "%" PRId64, cfg->max_active);
    snprintf(s->d_ttl, sizeof s->d_ttl, "%" PRId64, cfg->active_ttl_ms);
    snprintf(s->d_idle, sizeof s->d_idle, "%" PRId64, cfg->idle_timeout_ms);
    snprintf(s->gone_keep, sizeof s->gone_keep, "%d", GONE_KEEP_MS);
    snprintf(s->a_interval, sizeof s->a_interval, "%" PRId64, cfg->adapt_interval_ms);
    snprintf(s->a_pending, sizeof s->a_pending, "%" PRId64, cfg->adapt_pending_ms);
    snprintf(s->a_backlog, sizeof s->a_backlog, "%" PRId64, cfg->adapt_backlog);
    snprintf(s->a_errors, sizeof s->a_errors, "%" PRId64, cfg->adapt_error_permille);
    app->queue = s;
    app->n_buckets = 1024;
    app->concert_buckets = calloc(app->n_buckets, sizeof *app->concert_buckets);
    if (!app->concert_buckets) abort();
    uv_timer_init(app->loop, &app->admit_timer);
    uv_timer_init(app->loop, &app->watch_timer);
    uv_timer_init(app->loop, &app->refresh_timer);
    app->admit_timer.data = app->watch_timer.data = app->refresh_timer.data = app;
    uv_timer_start(&app->admit_timer, on_admit_timer, (uint64_t)app->cfg.admit_interval_ms,
                   (uint64_t)app->cfg.admit_interval_ms);
    uv_timer_start(&app->watch_timer, on_watch_timer, (uint64_t)app->cfg.watch_interval_ms,
                   (uint64_t)app->cfg.watch_interval_ms);
    uv_timer_start(&app->refresh_timer, on_refresh_timer, 200, 1000);
    return 0;
}

static void on_timer_closed(uv_handle_t *h) {}

void srv_queue_free(srv_app *app) {
    for (size_t b = 0; b < app->n_buckets; b++) {
        srv_concert *c = app->concert_buckets[b];
        while (c) {
            srv_concert *next = c->hnext;
            concert_free(c);
            c = next;
        }
    }
    free(app->concert_buckets);
    app->concert_buckets = NULL;
    while (app->queue && app->queue->free_fast) {
        fctx *f = app->queue->free_fast;
        CC_UNPOISON(f, sizeof *f);
        app->queue->free_fast = f->next_free;
        free(f);
    }
    free(app->queue);
    app->queue = NULL;
    srv_adapt_free(app);
    srv_receipts_free(app);
}

void srv_queue_shutdown(srv_app *app) {
    uv_close((uv_handle_t *)&app->admit_timer, on_timer_closed);
    uv_close((uv_handle_t *)&app->watch_timer, on_timer_closed);
    uv_close((uv_handle_t *)&app->refresh_timer, on_timer_closed);
    srv_adapt_shutdown(app);
    srv_receipts_shutdown(app);
    FOR_EACH_CONCERT(app, c) {
        while (c->watchers) {
            srv_watcher *w = c->watchers;
            if (w->stream) stream_end(w->stream, GRPC_STATUS_UNAVAILABLE, "server shutting down");
            else watcher_end(w, GRPC_STATUS_UNAVAILABLE, "server shutting down");
        }
    }
}
