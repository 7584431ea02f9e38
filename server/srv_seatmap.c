/* srv_seatmap: see srv_seatmap.h. */
#include "srv_seatmap.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cc_log.h"
#include "cc_pbw.h"
#include <grpc/byte_buffer.h>
#include <grpc/slice.h>
#include "concert/v1/booking.pb-c.h"
#include "srv_api.h"
#include "srv_valid.h"

#define SCAN_COUNT "5000"
#define MAX_MAPS 64
#define IDLE_MS 60000

enum { ST_FREE = 0, ST_HELD = 1, ST_SOLD = 2 };

typedef struct waiter {
    srv_call *call;
    int64_t now;
    int32_t after; /* the page: seats numbered above `after`, at most `size` */
    int size;
    struct waiter *next;
} waiter;

typedef struct seatmap {
    struct seatmap *next;
    srv_seatmaps *owner;
    char concert[SRV_MAX_ID + 1], sched[SRV_MAX_ID + 1];
    char price_key[2 * SRV_MAX_ID + 24], seat_key[2 * SRV_MAX_ID + 24];
    /* the map, sorted by seat number */
    size_t n;
    int32_t *num;
    int64_t *price;
    uint8_t *state;
    int64_t *exp; /* hold expiry (unix ms) of HELD seats */
    int prices_ready;
    uint64_t states_at; /* loop ms of the last complete state scan; 0 = never */
    /* a load in flight: prices (then) states into the *_new arrays */
    int loading;
    char cursor[32];
    int32_t *pnum;
    int64_t *pprice;
    size_t pn, pcap;
    uint8_t *state_new;
    int64_t *exp_new;
    waiter *waiters, *waiters_tail;
    /* the last page served, serialized: valid for the same (after, size) until
     * `packed_until` (Redis ms) or a change */
    grpc_byte_buffer *packed;
    int64_t packed_until;
    int32_t packed_after;
    int packed_size;
    uint64_t used_at;
} seatmap;

struct srv_seatmaps {
    srv_app *app;
    seatmap *maps;
    size_t n_maps;
};

srv_seatmaps *srv_seatmaps_new(srv_app *app) {
    srv_seatmaps *m = calloc(1, sizeof *m);
    if (!m) abort();
    m->app = app;
    return m;
}

static void map_free(seatmap *s) {
    free(s->num), free(s->price), free(s->state), free(s->exp);
    free(s->pnum), free(s->pprice), free(s->state_new), free(s->exp_new);
    if (s->packed) grpc_byte_buffer_destroy(s->packed);
    free(s);
}

void srv_seatmaps_free(srv_seatmaps *m) {
    if (!m) return;
    for (seatmap *s = m->maps, *n; s; s = n) {
        n = s->next;
        map_free(s);
    }
    free(m);
}

static seatmap *find(srv_seatmaps *m, const char *concert, const char *sched) {
    for (seatmap *s = m->maps; s; s = s->next)
        if (!strcmp(s->concert, concert) && !strcmp(s->sched, sched)) return s;
    return NULL;
}

static void unlink_map(srv_seatmaps *m, seatmap *s) {
    for (seatmap **pp = &m->maps; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            m->n_maps--;
            return;
        }
}

void srv_seatmaps_sweep(srv_seatmaps *m) {
    uint64_t now = uv_now(m->app->loop);
    for (seatmap *s = m->maps, *n; s; s = n) {
        n = s->next;
        if (!s->loading && now - s->used_at > IDLE_MS) {
            unlink_map(m, s);
            map_free(s);
        }
    }
}

static seatmap *get(srv_seatmaps *m, const char *concert, const char *sched) {
    seatmap *s = find(m, concert, sched);
    if (s) return s;
    if (m->n_maps >= MAX_MAPS) {
        /* Evict the least recently used map that is not loading. */
        seatmap *lru = NULL;
        for (seatmap *x = m->maps; x; x = x->next)
            if (!x->loading && (!lru || x->used_at < lru->used_at)) lru = x;
        if (lru) {
            unlink_map(m, lru);
            map_free(lru);
        }
    }
    s = calloc(1, sizeof *s);
    if (!s) abort();
    s->owner = m;
    snprintf(s->concert, sizeof s->concert, "%s", concert);
    snprintf(s->sched, sizeof s->sched, "%s", sched);
    snprintf(s->price_key, sizeof s->price_key, "cc:{%s}:s:%s:price", concert, sched);
    snprintf(s->seat_key, sizeof s->seat_key, "cc:{%s}:s:%s:seat", concert, sched);
    s->next = m->maps;
    m->maps = s;
    m->n_maps++;
    return s;
}

static ssize_t seat_index(const int32_t *num, size_t n, int32_t seat) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (num[mid] < seat) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && num[lo] == seat ? (ssize_t)lo : -1;
}

/* ---- serving ---- */

static void invalidate(seatmap *s) {
    if (s->packed) grpc_byte_buffer_destroy(s->packed);
    s->packed = NULL;
}

/* A page of ListSeatsResponse on the wire, written directly: field 1 schedule_id, then
 * per seat field 2 (a Seat: 1 number, 2 price, 3 state), then field 3 next_page_token
 * when seats are left. Building a 100,000-seat map through protobuf-c's structs cost the
 * loop tens of milliseconds; a page costs microseconds. Proto3 leaves zero values out,
 * as protobuf-c would. */
static void build(seatmap *s, int64_t now, int32_t after, int size) {
    size_t sl = strlen(s->sched);
    /* The first seat numbered above `after` (seats are sorted by number). */
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->num[mid] <= after) lo = mid + 1;
        else hi = mid;
    }
    size_t first = lo, end = s->n - first > (size_t)size ? first + (size_t)size : s->n;
    char next[SRV_PAGE_TOKEN_MAX + 1] = "";
    if (end < s->n) {
        char scope[2 * SRV_MAX_ID + 2];
        snprintf(scope, sizeof scope, "%s/%s", s->concert, s->sched);
        uint8_t cur[4];
        uint32_t last = (uint32_t)s->num[end - 1];
        cur[0] = (uint8_t)(last >> 24), cur[1] = (uint8_t)(last >> 16), cur[2] = (uint8_t)(last >> 8),
        cur[3] = (uint8_t)last;
        srv_page_token(next, SRV_PAGE_SEATS, scope, cur, sizeof cur);
    }
    size_t tl = strlen(next);
    /* Per seat at most: 1 tag + 1 length + (1 + 5) + (1 + 10) + (1 + 1). */
    size_t cap = 2 + 10 + sl + (end - first) * 21 + 2 + tl;
    grpc_slice slice = grpc_slice_malloc(cap);
    uint8_t *out = GRPC_SLICE_START_PTR(slice), *p = out;
    if (sl) {
        *p++ = 0x0a;
        p += cc_pbw_put_varint(p, sl);
        memcpy(p, s->sched, sl);
        p += sl;
    }
    int64_t until = INT64_MAX;
    for (size_t i = first; i < end; i++) {
        int st = s->state[i];
        if (st == ST_HELD) {
            if (s->exp[i] > now) {
                if (s->exp[i] < until) until = s->exp[i];
            } else {
                st = ST_FREE; /* lapsed: free at its millisecond, as ReserveSeats sees it */
            }
        }
        int state = st == ST_SOLD   ? CONCERT__V1__SEAT_STATE__SEAT_STATE_SOLD
                    : st == ST_HELD ? CONCERT__V1__SEAT_STATE__SEAT_STATE_HELD
                                    : CONCERT__V1__SEAT_STATE__SEAT_STATE_AVAILABLE;
        uint8_t seat[24];
        size_t n = 0;
        if (s->num[i]) seat[n++] = 0x08, n += cc_pbw_put_varint(seat + n, (uint64_t)(int64_t)s->num[i]);
        if (s->price[i]) seat[n++] = 0x10, n += cc_pbw_put_varint(seat + n, (uint64_t)s->price[i]);
        if (state) seat[n++] = 0x18, n += cc_pbw_put_varint(seat + n, (uint64_t)state);
        *p++ = 0x12;
        p += cc_pbw_put_varint(p, n);
        memcpy(p, seat, n);
        p += n;
    }
    if (tl) {
        *p++ = 0x1a;
        p += cc_pbw_put_varint(p, tl);
        memcpy(p, next, tl);
        p += tl;
    }
    slice = grpc_slice_sub_no_ref(slice, 0, (size_t)(p - out));
    if (s->packed) grpc_byte_buffer_destroy(s->packed);
    s->packed = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    s->packed_until = until;
    s->packed_after = after;
    s->packed_size = size;
}

static void answer(seatmap *s, srv_call *call, int64_t now, int32_t after, int size) {
    if (!s->packed || now >= s->packed_until || s->packed_after != after || s->packed_size != size)
        build(s, now, after, size);
    srv_call_reply_raw(call, s->packed);
}

static void fail_waiters(seatmap *s, grpc_status_code code, const char *msg) {
    waiter *w = s->waiters;
    s->waiters = s->waiters_tail = NULL;
    while (w) {
        waiter *n = w->next;
        srv_call_finish(w->call, code, "%s", msg);
        free(w);
        w = n;
    }
}

static void serve_waiters(seatmap *s) {
    waiter *w = s->waiters;
    s->waiters = s->waiters_tail = NULL;
    while (w) {
        waiter *n = w->next;
        answer(s, w->call, w->now, w->after, w->size);
        free(w);
        w = n;
    }
}

/* ---- loading ---- */

static void scan_next(seatmap *s);

static void load_failed(seatmap *s, const redisReply *r, const char *err) {
    char msg[256];
    grpc_status_code code = srv_redis_status(r, err, msg, sizeof msg);
    if (code == GRPC_STATUS_OK) code = GRPC_STATUS_INTERNAL, snprintf(msg, sizeof msg, "unexpected reply from redis");
    s->loading = 0;
    free(s->state_new), free(s->exp_new);
    s->state_new = NULL, s->exp_new = NULL;
    if (!s->prices_ready) s->pn = 0;
    fail_waiters(s, code, msg);
}

/* All prices are in: ordered by seat number without sorting (seat numbers are
 * 1..MAX_SEAT, so a bitmap of the ones seen orders them in one pass), HSCAN's
 * duplicates dropped, kept as the map's seats. */
#define MAX_SEAT 100000

static void prices_done(seatmap *s) {
    int64_t *price_of = malloc((MAX_SEAT + 1) * sizeof *price_of);
    uint8_t *seen = calloc(MAX_SEAT + 1, 1);
    if (!price_of || !seen) abort();
    size_t n = 0;
    for (size_t i = 0; i < s->pn; i++) {
        int32_t seat = s->pnum[i];
        if (seat < 1 || seat > MAX_SEAT || seen[seat]) continue;
        seen[seat] = 1, price_of[seat] = s->pprice[i], n++;
    }
    s->num = malloc((n ? n : 1) * sizeof *s->num);
    s->price = malloc((n ? n : 1) * sizeof *s->price);
    s->state = calloc(n ? n : 1, 1);
    s->exp = calloc(n ? n : 1, sizeof *s->exp);
    if (!s->num || !s->price || !s->state || !s->exp) abort();
    size_t k = 0;
    for (int32_t seat = 1; seat <= MAX_SEAT && k < n; seat++)
        if (seen[seat]) s->num[k] = seat, s->price[k] = price_of[seat], k++;
    s->n = n;
    free(price_of);
    free(seen);
    free(s->pnum), free(s->pprice);
    s->pnum = NULL, s->pprice = NULL, s->pn = s->pcap = 0;
    s->prices_ready = 1;
}

static void on_scan(redisReply *r, const char *err, void *p) {
    seatmap *s = p;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_ARRAY) {
        load_failed(s, r, err);
        return;
    }
    const redisReply *items = r->element[1];
    for (size_t i = 0; i + 1 < items->elements; i += 2) {
        const char *k = items->element[i]->str, *v = items->element[i + 1]->str;
        if (!k || !v) continue;
        long seat = strtol(k, NULL, 10);
        if (!s->prices_ready) {
            if (s->pn == s->pcap) {
                s->pcap = s->pcap ? s->pcap * 2 : 1024;
                s->pnum = realloc(s->pnum, s->pcap * sizeof *s->pnum);
                s->pprice = realloc(s->pprice, s->pcap * sizeof *s->pprice);
                if (!s->pnum || !s->pprice) abort();
            }
            s->pnum[s->pn] = (int32_t)seat;
            s->pprice[s->pn] = strtoll(v, NULL, 10);
            s->pn++;
        } else {
            ssize_t at = seat_index(s->num, s->n, (int32_t)seat);
            if (at < 0) continue;
            if (v[0] == 'S') {
                s->state_new[at] = ST_SOLD;
            } else if (v[0] == 'H') {
                const char *bar = strrchr(v, '|');
                s->state_new[at] = ST_HELD;
                s->exp_new[at] = bar ? strtoll(bar + 1, NULL, 10) : 0;
            }
        }
    }
    snprintf(s->cursor, sizeof s->cursor, "%s", r->element[0]->str);
    if (strcmp(s->cursor, "0") != 0) {
        scan_next(s);
        return;
    }
    if (!s->prices_ready) {
        prices_done(s);
        s->state_new = calloc(s->n ? s->n : 1, 1);
        s->exp_new = calloc(s->n ? s->n : 1, sizeof *s->exp_new);
        if (!s->state_new || !s->exp_new) abort();
        scan_next(s); /* cursor "0": the state scan starts */
        return;
    }
    free(s->state), free(s->exp);
    s->state = s->state_new, s->exp = s->exp_new;
    s->state_new = NULL, s->exp_new = NULL;
    s->states_at = uv_now(s->owner->app->loop);
    s->loading = 0;
    invalidate(s);
    serve_waiters(s);
}

static void scan_next(seatmap *s) {
    const char *argv[] = {"HSCAN", s->prices_ready ? s->seat_key : s->price_key, s->cursor, "COUNT", SCAN_COUNT};
    /* Up to 5000 fields a reply: on the bulk lane, so that small commands do not queue
     * behind it (test_abuse's big_reads). */
    if (cc_redis_command_argv_bulk(s->owner->app->redis, on_scan, s, 5, argv, NULL) < 0)
        load_failed(s, NULL, "not connected");
}

static void start_load(seatmap *s) {
    s->loading = 1;
    snprintf(s->cursor, sizeof s->cursor, "0");
    if (s->prices_ready) {
        s->state_new = calloc(s->n ? s->n : 1, 1);
        s->exp_new = calloc(s->n ? s->n : 1, sizeof *s->exp_new);
        if (!s->state_new || !s->exp_new) abort();
    }
    scan_next(s);
}

void srv_seatmaps_serve(srv_seatmaps *m, srv_call *call, const char *concert, const char *sched, int64_t now,
                       int32_t after, int size) {
    seatmap *s = get(m, concert, sched);
    uint64_t loop_now = uv_now(m->app->loop);
    s->used_at = loop_now;
    if (s->prices_ready && s->states_at && loop_now - s->states_at <= (uint64_t)m->app->cfg.seat_cache_ms &&
        !s->loading) {
        answer(s, call, now, after, size);
        return;
    }
    waiter *w = malloc(sizeof *w);
    if (!w) abort();
    w->call = call, w->now = now, w->after = after, w->size = size, w->next = NULL;
    if (s->waiters_tail) s->waiters_tail->next = w; else s->waiters = w;
    s->waiters_tail = w;
    if (!s->loading) start_load(s);
}

void srv_seatmaps_held(srv_seatmaps *m, const char *concert, const char *sched, const int32_t *seats, size_t n,
                       int64_t exp) {
    seatmap *s = find(m, concert, sched);
    if (!s || !s->prices_ready) return;
    for (size_t i = 0; i < n; i++) {
        ssize_t at = seat_index(s->num, s->n, seats[i]);
        if (at < 0) continue;
        /* Patch the copy being loaded too: the scan may already have passed the seat. */
        for (int k = 0; k < 2; k++) {
            uint8_t *st = k ? s->state_new : s->state;
            int64_t *ex = k ? s->exp_new : s->exp;
            if (!st) continue;
            st[at] = ST_HELD, ex[at] = exp;
        }
    }
    invalidate(s);
}
