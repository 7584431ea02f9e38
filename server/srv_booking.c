/* srv_booking: BookingService (ListSchedules, ListSeats, ReserveSeats, GetReservation,
 * CancelReservation) and the sweep that expires lapsed holds.
 *
 * Redis layout, all under the concert's hash tag (P = "cc:{C}:"):
 *   P schedules        zset  schedule -> starts ms
 *   P s:<S>:meta       hash  total, held, sold, starts
 *   P s:<S>:price      hash  seat -> price
 *   P s:<S>:seat       hash  seat -> "H|<rid>|<expiry ms>" held or "S|<rid>" sold; absent = free
 *   P r:<rid>          hash  user, token, sched, seats "1,2", n, total, status, exp, created
 *   P holds            zset  rid -> expiry (the sweep's work list)
 *   P ures:<user>      zset  rid -> expiry (the user's live holds)   P uheld  hash user -> seats held
 * Every call checks the bearer token is ACTIVE inside the same script that reads or
 * changes seats, so admission and booking cannot disagree. ListSeats is rate limited
 * per token and served in pages from srv_seatmap's cache, which this server's holds
 * patch. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cc_log.h"
#include "concert/v1/booking.pb-c.h"
#include "srv_api.h"
#include "srv_app.h"
#include "srv_seatmap.h"
#include "srv_valid.h"

#define MAX_SEATS_PER_REQUEST 10
/* ListSeats pages: ~13 bytes a seat, so the default page is ~13 KB and the largest
 * ~65 KB (a 100,000-seat map was one 1.08 MB message). */
#define SEATS_PAGE_DEFAULT 1000
#define SEATS_PAGE_MAX 5000

extern const unsigned char lua_bk_lib[], lua_bk_reserve[], lua_bk_get[], lua_bk_list[], lua_bk_sweep[];
extern const size_t lua_bk_lib_len, lua_bk_reserve_len, lua_bk_get_len, lua_bk_list_len, lua_bk_sweep_len;

static cc_redis_script s_reserve, s_get, s_list, s_sweep;

typedef struct {
    srv_call *call;
    char token[SRV_TOKEN_MAX + 1];
    char concert[SRV_MAX_ID + 1];
    char prefix[SRV_MAX_ID + 8];
    char tag_key[SRV_MAX_ID + 16];
    char sched[SRV_MAX_ID + 1];
    int reserving; /* the reply is a new hold (else a read or a cancel) */
    int32_t page_after; /* ListSeats: the page's seats are numbered above this */
    int page_size;
} bctx;

/* Authenticates and allocates the call context; NULL when the call was finished. */
static bctx *bctx_new(srv_call *call) {
    bctx *b = calloc(1, sizeof *b);
    if (!b) abort();
    b->call = call;
    if (srv_auth_token(call, b->token, b->concert) < 0) {
        free(b);
        return NULL;
    }
    snprintf(b->prefix, sizeof b->prefix, "cc:{%s}:", b->concert);
    snprintf(b->tag_key, sizeof b->tag_key, "cc:{%s}:q:tok", b->concert);
    return b;
}

static void format_date(int64_t ms, char *out, size_t len) {
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int eval(bctx *b, const cc_redis_script *s, cc_redis_cb cb, int nargs, const char **args) {
    srv_app *app = srv_call_app(b->call);
    if (cc_redis_eval(app->redis, s, cb, b, 1, nargs, args, NULL) < 0) {
        srv_fail_no_redis(b->call);
        free(b);
        return -1;
    }
    return 0;
}

/* ---- reservations ---- */

static Concert__V1__ReservationStatus status_of(const char *s) {
    if (!strcmp(s, "HELD")) return CONCERT__V1__RESERVATION_STATUS__RESERVATION_STATUS_HELD;
    if (!strcmp(s, "PAYMENT_PENDING")) return CONCERT__V1__RESERVATION_STATUS__RESERVATION_STATUS_PAYMENT_PENDING;
    if (!strcmp(s, "PAID")) return CONCERT__V1__RESERVATION_STATUS__RESERVATION_STATUS_PAID;
    if (!strcmp(s, "CANCELLED")) return CONCERT__V1__RESERVATION_STATUS__RESERVATION_STATUS_CANCELLED;
    if (!strcmp(s, "EXPIRED")) return CONCERT__V1__RESERVATION_STATUS__RESERVATION_STATUS_EXPIRED;
    return CONCERT__V1__RESERVATION_STATUS__RESERVATION_STATUS_UNSPECIFIED;
}

/* Reply tail from bk_lib's resv_reply: 0, rid, sched, total, status, exp, created, seats... */
static void on_reservation(redisReply *r, const char *err, void *p) {
    bctx *b = p;
    if (srv_script_ok(b->call, r, err)) {
        Concert__V1__Reservation m;
        concert__v1__reservation__init(&m);
        m.reservation_id = (char *)srv_str_at(r, 1);
        m.concert_id = b->concert;
        m.schedule_id = (char *)srv_str_at(r, 2);
        m.total_price = srv_int_at(r, 3);
        m.status = status_of(srv_str_at(r, 4));
        m.expires_at_unix_ms = srv_int_at(r, 5);
        m.created_at_unix_ms = srv_int_at(r, 6);
        int32_t seats[MAX_SEATS_PER_REQUEST * 4];
        size_t n = 0;
        for (size_t i = 7; i < r->elements && n < sizeof seats / sizeof *seats; i++) seats[n++] = (int32_t)srv_int_at(r, i);
        m.n_seat_numbers = n;
        m.seat_numbers = seats;
        srv_call_reply(b->call, &m.base);
        srv_app *app = srv_call_app(b->call);
        /* A new hold shows in this server's seat maps at once; freed seats show at the
         * next refresh (the cache cannot tell whether another hold took them since). */
        if (b->reserving) srv_seatmaps_held(app->seatmaps, b->concert, m.schedule_id, seats, n, m.expires_at_unix_ms);
    }
    free(b);
}

void srv_booking_reserve(srv_call *call) {
    const Concert__V1__ReserveSeatsRequest *req = (const void *)srv_call_request(call);
    if (!srv_valid_id(req->schedule_id)) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "schedule_id: must be 1..64 characters of [A-Za-z0-9_-]");
        return;
    }
    if (req->n_seat_numbers == 0 || req->n_seat_numbers > MAX_SEATS_PER_REQUEST) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "seat_numbers: give 1..%d seats", MAX_SEATS_PER_REQUEST);
        return;
    }
    for (size_t i = 0; i < req->n_seat_numbers; i++) {
        if (req->seat_numbers[i] < 1 || req->seat_numbers[i] > 100000) {
            srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "seat_numbers: %d is not a seat number (1..100000)",
                            req->seat_numbers[i]);
            return;
        }
        for (size_t j = 0; j < i; j++)
            if (req->seat_numbers[j] == req->seat_numbers[i]) {
                srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "seat_numbers: seat %d is listed twice",
                                req->seat_numbers[i]);
                return;
            }
    }
    bctx *b = bctx_new(call);
    if (!b) return;
    b->reserving = 1;
    srv_app *app = srv_call_app(call);
    char rid[SRV_TOKEN_MAX + 1], ttl[24], cap[24], seats[MAX_SEATS_PER_REQUEST][12];
    if (srv_id_new(rid, "r1", b->concert) < 0) {
        srv_call_finish(call, GRPC_STATUS_INTERNAL, "no randomness available");
        free(b);
        return;
    }
    snprintf(ttl, sizeof ttl, "%" PRId64, app->cfg.hold_ttl_ms);
    snprintf(cap, sizeof cap, "%" PRId64, app->cfg.max_seats_per_user);
    const char *args[8 + MAX_SEATS_PER_REQUEST] = {b->tag_key, b->prefix, b->token, req->schedule_id, ttl, cap, rid};
    for (size_t i = 0; i < req->n_seat_numbers; i++) {
        snprintf(seats[i], sizeof seats[i], "%d", req->seat_numbers[i]);
        args[7 + i] = seats[i];
    }
    eval(b, &s_reserve, on_reservation, 7 + (int)req->n_seat_numbers, args);
}

static void get_or_cancel(srv_call *call, const char *rid, const char *action) {
    size_t len = rid ? strlen(rid) : 0;
    char concert[SRV_MAX_ID + 1];
    if (len == 0) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "reservation_id: required");
        return;
    }
    if (srv_id_parse(rid, len, "r1", concert) < 0) {
        srv_call_finish(call, GRPC_STATUS_NOT_FOUND, "reservation_id: not found");
        return;
    }
    bctx *b = bctx_new(call);
    if (!b) return;
    if (strcmp(concert, b->concert) != 0) {
        srv_call_finish(call, GRPC_STATUS_PERMISSION_DENIED, "reservation_id: belongs to another concert");
        free(b);
        return;
    }
    const char *args[] = {b->tag_key, b->prefix, b->token, action, rid};
    eval(b, &s_get, on_reservation, 5, args);
}

void srv_booking_get(srv_call *call) {
    const Concert__V1__GetReservationRequest *req = (const void *)srv_call_request(call);
    get_or_cancel(call, req->reservation_id, "get");
}

void srv_booking_cancel(srv_call *call) {
    const Concert__V1__CancelReservationRequest *req = (const void *)srv_call_request(call);
    get_or_cancel(call, req->reservation_id, "cancel");
}

/* ---- listings ---- */

static void on_schedules(redisReply *r, const char *err, void *p) {
    bctx *b = p;
    if (srv_script_ok(b->call, r, err)) {
        size_t n = (r->elements - 1) / 4;
        Concert__V1__ListSchedulesResponse resp;
        concert__v1__list_schedules_response__init(&resp);
        Concert__V1__Schedule *items = calloc(n ? n : 1, sizeof *items);
        Concert__V1__Schedule **ptrs = calloc(n ? n : 1, sizeof *ptrs);
        char(*dates)[32] = calloc(n ? n : 1, sizeof *dates);
        if (!items || !ptrs || !dates) abort();
        for (size_t i = 0; i < n; i++) {
            Concert__V1__Schedule *s = &items[i];
            concert__v1__schedule__init(s);
            s->schedule_id = (char *)srv_str_at(r, 1 + 4 * i);
            s->concert_id = b->concert;
            s->starts_at_unix_ms = srv_int_at(r, 2 + 4 * i);
            format_date(s->starts_at_unix_ms, dates[i], sizeof dates[i]);
            s->date = dates[i];
            s->seats_total = srv_int_at(r, 3 + 4 * i);
            s->seats_left = srv_int_at(r, 4 + 4 * i);
            ptrs[i] = s;
        }
        resp.n_schedules = n;
        resp.schedules = ptrs;
        srv_call_reply(b->call, &resp.base);
        free(items);
        free(ptrs);
        free(dates);
    }
    free(b);
}

void srv_booking_list_schedules(srv_call *call) {
    const Concert__V1__ListSchedulesRequest *req = (const void *)srv_call_request(call);
    if (!srv_valid_id(req->concert_id)) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "concert_id: must be 1..64 characters of [A-Za-z0-9_-]");
        return;
    }
    bctx *b = bctx_new(call);
    if (!b) return;
    if (strcmp(req->concert_id, b->concert) != 0) {
        srv_call_finish(call, GRPC_STATUS_PERMISSION_DENIED, "concert_id: the token is for another concert");
        free(b);
        return;
    }
    const char *args[] = {b->tag_key, b->prefix, b->token, ""};
    eval(b, &s_list, on_schedules, 4, args);
}

/* The token is ACTIVE and the schedule exists (bk_list's check): the map itself
 * comes from the cache. */
static void on_seats_check(redisReply *r, const char *err, void *p) {
    bctx *b = p;
    if (srv_script_ok(b->call, r, err)) {
        srv_app *app = srv_call_app(b->call);
        srv_seatmaps_serve(app->seatmaps, b->call, b->concert, b->sched, srv_int_at(r, 1), b->page_after,
                           b->page_size);
    }
    free(b);
}

void srv_booking_list_seats(srv_call *call) {
    const Concert__V1__ListSeatsRequest *req = (const void *)srv_call_request(call);
    if (!srv_valid_id(req->schedule_id)) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "schedule_id: must be 1..64 characters of [A-Za-z0-9_-]");
        return;
    }
    bctx *b = bctx_new(call);
    if (!b) return;
    char scope[2 * SRV_MAX_ID + 2], err[160];
    snprintf(scope, sizeof scope, "%s/%s", b->concert, req->schedule_id);
    srv_page pg;
    int rc = srv_page_read(&pg, req->page_size, req->page_token, SRV_PAGE_SEATS, scope, SEATS_PAGE_DEFAULT,
                           SEATS_PAGE_MAX, err, sizeof err);
    if (rc == 0 && pg.cursor_len) { /* the cursor: the previous page's last seat number, 4 bytes big-endian */
        const uint8_t *c = pg.cursor;
        if (pg.cursor_len == 4)
            b->page_after = (int32_t)((uint32_t)c[0] << 24 | (uint32_t)c[1] << 16 | (uint32_t)c[2] << 8 | c[3]);
        if (b->page_after < 1) rc = -1, snprintf(err, sizeof err, "%s", SRV_PAGE_TOKEN_BAD);
    }
    if (rc < 0) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "%s", err);
        free(b);
        return;
    }
    b->page_size = pg.size;
    if (srv_limit_call(call, "token", b->token) < 0) {
        free(b);
        return;
    }
    snprintf(b->sched, sizeof b->sched, "%s", req->schedule_id);
    const char *args[] = {b->tag_key, b->prefix, b->token, b->sched};
    eval(b, &s_list, on_seats_check, 4, args);
}

/* ---- expiry sweep ---- */

typedef struct {
    char concert[SRV_MAX_ID + 1];
} sweep_ctx;

static void on_sweep(redisReply *r, const char *err, void *p) {
    sweep_ctx *sc = p;
    if (r && r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < r->elements; i++)
            CC_INFO("reservation_expired", "concert=%s reservation=%s", sc->concert, srv_str_at(r, i));
    } else if (r && r->type == REDIS_REPLY_ERROR) {
        CC_WARN("sweep_failed", "concert=%s error=\"%s\"", sc->concert, r->str);
    }
    free(sc);
}

static void sweep_one(srv_app *app, const char *concert, void *arg) {
    sweep_ctx *sc = malloc(sizeof *sc);
    if (!sc) abort();
    snprintf(sc->concert, sizeof sc->concert, "%s", concert);
    char key[SRV_MAX_ID + 16], prefix[SRV_MAX_ID + 8];
    snprintf(key, sizeof key, "cc:{%s}:holds", concert);
    snprintf(prefix, sizeof prefix, "cc:{%s}:", concert);
    const char *args[] = {key, prefix};
    /* Up to 500 releases at once: the bulk lane. */
    if (cc_redis_eval_bulk(app->redis, &s_sweep, on_sweep, sc, 1, 2, args, NULL) < 0) free(sc);
}

static void on_sweep_timer(uv_timer_t *t) {
    srv_app *app = t->data;
    if (cc_redis_is_up(app->redis)) srv_concerts_foreach(app, sweep_one, NULL);
    srv_seatmaps_sweep(app->seatmaps);
}

int srv_booking_init(srv_app *app) {
    srv_script_add(&s_reserve, "bk_reserve", lua_bk_lib, lua_bk_lib_len, lua_bk_reserve, lua_bk_reserve_len);
    srv_script_add(&s_get, "bk_get", lua_bk_lib, lua_bk_lib_len, lua_bk_get, lua_bk_get_len);
    srv_script_add(&s_list, "bk_list", lua_bk_lib, lua_bk_lib_len, lua_bk_list, lua_bk_list_len);
    srv_script_add(&s_sweep, "bk_sweep", lua_bk_lib, lua_bk_lib_len, lua_bk_sweep, lua_bk_sweep_len);
    app->seatmaps = srv_seatmaps_new(app);
    uv_timer_init(app->loop, &app->sweep_timer);
    app->sweep_timer.data = app;
    uv_timer_start(&app->sweep_timer, on_sweep_timer, (uint64_t)app->cfg.sweep_interval_ms,
                   (uint64_t)app->cfg.sweep_interval_ms);
    return 0;
}

static void on_closed(uv_handle_t *h) {}

void srv_booking_shutdown(srv_app *app) { uv_close((uv_handle_t *)&app->sweep_timer, on_closed); }

void srv_booking_free(srv_app *app) {
    srv_seatmaps_free(app->seatmaps);
    app->seatmaps = NULL;
}
