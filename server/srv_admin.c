/* srv_admin: AdminService. Every call is checked against --admin-key first (constant
 * time); a server without a key refuses all of them. Catalogue keys live under the
 * concert's hash tag (see srv_booking.c); the list of concerts is one global hash,
 * cc:concerts (id -> "created|name"), indexed for paging by {cc:concerts}:ids (a zset
 * of the ids, read by ZRANGEBYLEX). A concert exists once created here: only then
 * may users join its queue (its ticks start with the first user, see srv_queue.c). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cc_log.h"
#include "cc_pay.h"
#include "concert/v1/admin.pb-c.h"
#include "srv_api.h"
#include "srv_app.h"
#include "srv_valid.h"

#define MAX_SEATS 100000
#define MAX_PRICE 1000000000000LL
#define CONCERTS_PAGE_DEFAULT 100
#define CONCERTS_PAGE_MAX 1000
#define CATALOGUE_KEY "cc:concerts"
#define CATALOGUE_INDEX_KEY "{cc:concerts}:ids" /* in cc:concerts' slot */

extern const unsigned char lua_adm_concert[], lua_adm_schedule[], lua_adm_stats[], lua_adm_policy[],
    lua_adm_audit[], lua_wallet_audit[], lua_adm_list[];
extern const size_t lua_adm_concert_len, lua_adm_schedule_len, lua_adm_stats_len, lua_adm_policy_len,
    lua_adm_audit_len, lua_wallet_audit_len, lua_adm_list_len;
static cc_redis_script s_concert, s_schedule, s_stats, s_policy, s_audit, s_wallet_audit, s_list;

typedef struct {
    srv_call *call;
    char concert[SRV_MAX_ID + 1];
    char sched[SRV_MAX_ID + 1];
    char name[201];
    int64_t starts;
    int page_size; /* ListConcerts */
} actx;

static actx *actx_new(srv_call *call, const char *concert) {
    if (srv_auth_admin(call) < 0) return NULL;
    if (concert && !srv_valid_id(concert)) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "concert_id: must be 1..64 characters of [A-Za-z0-9_-]");
        return NULL;
    }
    actx *a = calloc(1, sizeof *a);
    if (!a) abort();
    a->call = call;
    if (concert) snprintf(a->concert, sizeof a->concert, "%s", concert);
    return a;
}

static void send_or_fail(actx *a, int rc) {
    if (rc < 0) {
        srv_fail_no_redis(a->call);
        free(a);
    }
}

static void ignore_reply(redisReply *r, const char *err, void *p) {}

/* ---- concerts ---- */

static void on_concert(redisReply *r, const char *err, void *p) {
    actx *a = p;
    if (srv_script_ok(a->call, r, err)) {
        srv_app *app = srv_call_app(a->call);
        int64_t created = srv_int_at(r, 1);
        char val[240];
        snprintf(val, sizeof val, "%" PRId64 "|%s", created, a->name);
        /* Not awaited, and read by adm_list: on its lane (the bulk one), so that a
         * ListConcerts sent after this answer runs after them (cc_redis.h, "Ordering"). */
        const char *hset[] = {"HSET", CATALOGUE_KEY, a->concert, val};
        const char *zadd[] = {"ZADD", CATALOGUE_INDEX_KEY, "0", a->concert};
        cc_redis_command_argv_bulk(app->redis, ignore_reply, NULL, 4, hset, NULL);
        cc_redis_command_argv_bulk(app->redis, ignore_reply, NULL, 4, zadd, NULL);
        CC_INFO("concert_created", "concert=%s", a->concert);
        Concert__V1__Concert c;
        concert__v1__concert__init(&c);
        c.concert_id = a->concert;
        c.name = a->name;
        c.created_at_unix_ms = created;
        srv_call_reply(a->call, &c.base);
    }
    free(a);
}

void srv_admin_create_concert(srv_call *call) {
    const Concert__V1__CreateConcertRequest *req = (const void *)srv_call_request(call);
    actx *a = actx_new(call, req->concert_id);
    if (!a) return;
    size_t nl = strlen(req->name);
    if (nl == 0 || nl > 200) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "name: must be 1..200 bytes");
        free(a);
        return;
    }
    memcpy(a->name, req->name, nl + 1);
    char key[SRV_MAX_ID + 20];
    snprintf(key, sizeof key, "cc:{%s}:concert", a->concert);
    const char *args[] = {key, a->concert, a->name};
    srv_app *app = srv_call_app(call);
    send_or_fail(a, cc_redis_eval(app->redis, &s_concert, on_concert, a, 1, 3, args, NULL));
}

/* adm_list's reply {0, id, "created|name", ...}: up to page_size + 1 ids, the extra one
 * only telling that another page follows. */
static void on_list(redisReply *r, const char *err, void *p) {
    actx *a = p;
    if (srv_script_ok(a->call, r, err)) {
        size_t got = (r->elements - 1) / 2, n = got > (size_t)a->page_size ? (size_t)a->page_size : got;
        Concert__V1__Concert *items = calloc(n ? n : 1, sizeof *items);
        Concert__V1__Concert **ptrs = calloc(n ? n : 1, sizeof *ptrs);
        if (!items || !ptrs) abort();
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            const char *v = srv_str_at(r, 2 + 2 * i);
            if (!*v) continue; /* indexed, but its catalogue entry is missing */
            concert__v1__concert__init(&items[k]);
            items[k].concert_id = (char *)srv_str_at(r, 1 + 2 * i);
            items[k].created_at_unix_ms = strtoll(v, NULL, 10);
            const char *bar = strchr(v, '|');
            items[k].name = (char *)(bar ? bar + 1 : "");
            ptrs[k] = &items[k];
            k++;
        }
        Concert__V1__ListConcertsResponse resp;
        concert__v1__list_concerts_response__init(&resp);
        resp.n_concerts = k;
        resp.concerts = ptrs;
        char next[SRV_PAGE_TOKEN_MAX + 1];
        if (got > n) {
            const char *last = srv_str_at(r, 1 + 2 * (n - 1));
            srv_page_token(next, SRV_PAGE_CONCERTS, "", last, strlen(last));
            resp.next_page_token = next;
        }
        srv_call_reply(a->call, &resp.base);
        free(items);
        free(ptrs);
    }
    free(a);
}

void srv_admin_list_concerts(srv_call *call) {
    const Concert__V1__ListConcertsRequest *req = (const void *)srv_call_request(call);
    actx *a = actx_new(call, NULL);
    if (!a) return;
    srv_page pg;
    char err[160];
    int rc = srv_page_read(&pg, req->page_size, req->page_token, SRV_PAGE_CONCERTS, "", CONCERTS_PAGE_DEFAULT,
                           CONCERTS_PAGE_MAX, err, sizeof err);
    if (rc == 0 && pg.cursor_len) { /* the cursor: the last id of the previous page */
        if (pg.cursor_len > SRV_MAX_ID) pg.cursor_len = 0;
        memcpy(a->concert, pg.cursor, pg.cursor_len), a->concert[pg.cursor_len] = '\0';
        if (!srv_valid_id(a->concert)) rc = -1, snprintf(err, sizeof err, "%s", SRV_PAGE_TOKEN_BAD);
    }
    if (rc < 0) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "%s", err);
        free(a);
        return;
    }
    a->page_size = pg.size;
    char limit[16];
    snprintf(limit, sizeof limit, "%d", a->page_size + 1);
    const char *args[] = {CATALOGUE_KEY, CATALOGUE_INDEX_KEY, a->concert, limit};
    srv_app *app = srv_call_app(call);
    /* Up to 1001 concerts a page: the bulk lane. */
    send_or_fail(a, cc_redis_eval_bulk(app->redis, &s_list, on_list, a, 2, 4, args, NULL));
}

/* ---- schedules ---- */

static int range_cmp(const void *x, const void *y) {
    const Concert__V1__SeatRange *a = *(Concert__V1__SeatRange *const *)x, *b = *(Concert__V1__SeatRange *const *)y;
    return (a->first_seat > b->first_seat) - (a->first_seat < b->first_seat);
}

static void on_schedule(redisReply *r, const char *err, void *p) {
    actx *a = p;
    if (srv_script_ok(a->call, r, err)) {
        CC_INFO("schedule_created", "concert=%s schedule=%s seats=%" PRId64, a->concert, a->sched, srv_int_at(r, 1));
        Concert__V1__Schedule s;
        concert__v1__schedule__init(&s);
        char date[32];
        time_t t = (time_t)(a->starts / 1000);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &tm);
        s.schedule_id = a->sched;
        s.concert_id = a->concert;
        s.starts_at_unix_ms = a->starts;
        s.date = date;
        s.seats_total = s.seats_left = srv_int_at(r, 1);
        srv_call_reply(a->call, &s.base);
    }
    free(a);
}

void srv_admin_create_schedule(srv_call *call) {
    const Concert__V1__CreateScheduleRequest *req = (const void *)srv_call_request(call);
    actx *a = actx_new(call, req->concert_id);
    if (!a) return;
    const char *bad = NULL;
    char msg[160];
    if (!srv_valid_id(req->schedule_id)) bad = "schedule_id: must be 1..64 characters of [A-Za-z0-9_-]";
    else if (req->starts_at_unix_ms <= 0 || req->starts_at_unix_ms > 32503680000000LL)
        bad = "starts_at_unix_ms: must be a time between 1970 and 3000";
    else if (req->n_seats == 0 || req->n_seats > 1000)
        bad = "seats: give 1..1000 seat ranges";
    Concert__V1__SeatRange **sorted = NULL;
    int64_t total = 0;
    if (!bad) {
        sorted = malloc(req->n_seats * sizeof *sorted);
        if (!sorted) abort();
        memcpy(sorted, req->seats, req->n_seats * sizeof *sorted);
        qsort(sorted, req->n_seats, sizeof *sorted, range_cmp);
        for (size_t i = 0; i < req->n_seats && !bad; i++) {
            const Concert__V1__SeatRange *s = sorted[i];
            if (s->first_seat < 1 || s->last_seat > MAX_SEATS || s->first_seat > s->last_seat) {
                snprintf(msg, sizeof msg, "seats: range %d..%d must lie within 1..%d and not be empty", s->first_seat,
                         s->last_seat, MAX_SEATS);
                bad = msg;
            } else if (s->price <= 0 || s->price > MAX_PRICE) {
                snprintf(msg, sizeof msg, "seats: price of range %d..%d must be 1..%lld", s->first_seat, s->last_seat,
                         (long long)MAX_PRICE);
                bad = msg;
            } else if (i > 0 && s->first_seat <= sorted[i - 1]->last_seat) {
                snprintf(msg, sizeof msg, "seats: ranges %d..%d and %d..%d overlap", sorted[i - 1]->first_seat,
                         sorted[i - 1]->last_seat, s->first_seat, s->last_seat);
                bad = msg;
            }
            total += (int64_t)s->last_seat - s->first_seat + 1;
        }
        if (!bad && total > MAX_SEATS) bad = "seats: at most 100000 seats per schedule";
    }
    if (bad) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "%s", bad);
        free(sorted);
        free(a);
        return;
    }
    snprintf(a->sched, sizeof a->sched, "%s", req->schedule_id);
    a->starts = req->starts_at_unix_ms;
    size_t nargs = 4 + 3 * req->n_seats;
    const char **args = calloc(nargs, sizeof *args);
    char(*nums)[24] = calloc(3 * req->n_seats + 1, sizeof *nums);
    if (!args || !nums) abort();
    char key[SRV_MAX_ID + 20], prefix[SRV_MAX_ID + 8];
    snprintf(key, sizeof key, "cc:{%s}:concert", a->concert);
    snprintf(prefix, sizeof prefix, "cc:{%s}:", a->concert);
    snprintf(nums[3 * req->n_seats], 24, "%" PRId64, a->starts);
    args[0] = key, args[1] = prefix, args[2] = a->sched, args[3] = nums[3 * req->n_seats];
    for (size_t i = 0; i < req->n_seats; i++) {
        snprintf(nums[3 * i], 24, "%d", sorted[i]->first_seat);
        snprintf(nums[3 * i + 1], 24, "%d", sorted[i]->last_seat);
        snprintf(nums[3 * i + 2], 24, "%" PRId64, sorted[i]->price);
        args[4 + 3 * i] = nums[3 * i], args[5 + 3 * i] = nums[3 * i + 1], args[6 + 3 * i] = nums[3 * i + 2];
    }
    srv_app *app = srv_call_app(call);
    send_or_fail(a, cc_redis_eval(app->redis, &s_schedule, on_schedule, a, 1, (int)nargs, args, NULL));
    free(args);
    free(nums);
    free(sorted);
}

/* ---- policy ----
 * Each QueuePolicy field, its Redis hash field (queue scripts read "rate" ...), its
 * bounds and the server's default. Range checks are here; the checks that need the
 * stored policy or Redis' clock (a sale's times, admit_rate_min <= admit_rate_max) are
 * in adm_policy.lua, before it writes anything. */

enum { F_RATE, F_MAX_ACTIVE, F_TTL, F_IDLE, F_HOLD, F_SEATS, F_METHOD, F_PRE, F_SALE, F_MODE, F_RMIN, F_RMAX, F_N };

static const struct {
    const char *field, *key;
    int64_t lo, hi;
} pol_fields[F_N] = {
    {"admit_rate", "rate", 0, 1000000},
    {"max_active", "max_active", 0, 100000000},
    {"active_ttl_ms", "active_ttl_ms", 1000, 86400000},
    {"idle_timeout_ms", "idle_timeout_ms", 0, 86400000},
    {"hold_ttl_ms", "hold_ttl_ms", 1000, 3600000},
    {"max_seats_per_user", "max_seats_per_user", 1, 100},
    {"queueing_method", "method", 0, 4},
    {"prequeue_opens_at_unix_ms", "prequeue_at", 0, 32503680000000LL},
    {"sale_opens_at_unix_ms", "sale_at", 0, 32503680000000LL},
    {"admission_mode", "mode", 0, 2},
    {"admit_rate_min", "rate_min", 0, 1000000},
    {"admit_rate_max", "rate_max", 0, 1000000},
};

static void policy_values(const Concert__V1__QueuePolicy *p, int64_t v[F_N]) {
    v[F_RATE] = p->admit_rate, v[F_MAX_ACTIVE] = p->max_active, v[F_TTL] = p->active_ttl_ms;
    v[F_IDLE] = p->idle_timeout_ms, v[F_HOLD] = p->hold_ttl_ms, v[F_SEATS] = p->max_seats_per_user;
    v[F_METHOD] = (int64_t)p->queueing_method, v[F_PRE] = p->prequeue_opens_at_unix_ms;
    v[F_SALE] = p->sale_opens_at_unix_ms, v[F_MODE] = (int64_t)p->admission_mode;
    v[F_RMIN] = p->admit_rate_min, v[F_RMAX] = p->admit_rate_max;
}

static void on_policy(redisReply *r, const char *err, void *p) {
    actx *a = p;
    if (srv_script_ok(a->call, r, err)) {
        srv_app *app = srv_call_app(a->call);
        int64_t v[F_N] = {app->cfg.admit_rate,      app->cfg.max_active,  app->cfg.active_ttl_ms,
                          app->cfg.idle_timeout_ms, app->cfg.hold_ttl_ms, app->cfg.max_seats_per_user};
        for (size_t i = 1; i + 1 < r->elements; i += 2)
            for (int f = 0; f < F_N; f++)
                if (!strcmp(srv_str_at(r, i), pol_fields[f].key)) v[f] = srv_int_at(r, i + 1);
        Concert__V1__QueuePolicy pol;
        concert__v1__queue_policy__init(&pol);
        pol.concert_id = a->concert;
        pol.admit_rate = v[F_RATE], pol.max_active = v[F_MAX_ACTIVE], pol.active_ttl_ms = v[F_TTL];
        pol.idle_timeout_ms = v[F_IDLE], pol.hold_ttl_ms = v[F_HOLD], pol.max_seats_per_user = v[F_SEATS];
        pol.queueing_method = (Concert__V1__QueueingMethod)v[F_METHOD];
        pol.prequeue_opens_at_unix_ms = v[F_PRE], pol.sale_opens_at_unix_ms = v[F_SALE];
        pol.admission_mode = (Concert__V1__AdmissionMode)v[F_MODE];
        pol.admit_rate_min = v[F_RMIN], pol.admit_rate_max = v[F_RMAX];
        srv_call_reply(a->call, &pol.base);
    }
    free(a);
}

static void send_policy(actx *a, const char **pairs, int npairs) {
    char k1[SRV_MAX_ID + 20], k2[SRV_MAX_ID + 20];
    snprintf(k1, sizeof k1, "cc:{%s}:concert", a->concert);
    snprintf(k2, sizeof k2, "cc:{%s}:policy", a->concert);
    const char *args[2 + 2 * F_N] = {k1, k2};
    for (int i = 0; i < npairs; i++) args[2 + i] = pairs[i];
    srv_app *app = srv_call_app(a->call);
    send_or_fail(a, cc_redis_eval(app->redis, &s_policy, on_policy, a, 2, 2 + npairs, args, NULL));
}

void srv_admin_set_policy(srv_call *call) {
    const Concert__V1__SetQueuePolicyRequest *req = (const void *)srv_call_request(call);
    if (!req->policy) {
        if (srv_auth_admin(call) == 0) srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "policy: required");
        return;
    }
    const Concert__V1__QueuePolicy *p = req->policy;
    actx *a = actx_new(call, p->concert_id);
    if (!a) return;
    int64_t v[F_N];
    policy_values(p, v);
    int use[F_N] = {0};
    for (size_t i = 0; i < req->n_update_fields; i++) {
        int f = 0;
        for (; f < F_N; f++)
            if (srv_field_name_is(pol_fields[f].field, req->update_fields[i])) break; /* max_active or maxActive */
        if (f == F_N) {
            srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "update_fields: unknown field '%.64s'",
                            req->update_fields[i]);
            free(a);
            return;
        }
        use[f] = 1;
    }
    const char *pairs[2 * F_N];
    char vals[F_N][24];
    int n = 0;
    for (int f = 0; f < F_N; f++) {
        if (req->n_update_fields && !use[f]) continue;
        if (v[f] < pol_fields[f].lo || v[f] > pol_fields[f].hi) {
            if (f == F_METHOD || f == F_MODE)
                srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "policy.%s: unknown value %lld (0..%lld)",
                                pol_fields[f].field, (long long)v[f], (long long)pol_fields[f].hi);
            else
                srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "policy.%s: must be %lld..%lld",
                                pol_fields[f].field, (long long)pol_fields[f].lo, (long long)pol_fields[f].hi);
            free(a);
            return;
        }
        snprintf(vals[f], sizeof vals[f], "%" PRId64, v[f]);
        pairs[n++] = pol_fields[f].key;
        pairs[n++] = vals[f];
    }
    CC_INFO("policy_set", "concert=%s fields=%d", a->concert, n / 2);
    send_policy(a, pairs, n);
}

void srv_admin_get_policy(srv_call *call) {
    const Concert__V1__GetQueuePolicyRequest *req = (const void *)srv_call_request(call);
    actx *a = actx_new(call, req->concert_id);
    if (a) send_policy(a, NULL, 0);
}

/* ---- stats ---- */

static void on_stats(redisReply *r, const char *err, void *p) {
    actx *a = p;
    if (srv_script_ok(a->call, r, err)) {
        size_t n = r->elements >= 4 ? (r->elements - 4) / 4 : 0;
        Concert__V1__ScheduleStats *items = calloc(n ? n : 1, sizeof *items);
        Concert__V1__ScheduleStats **ptrs = calloc(n ? n : 1, sizeof *ptrs);
        if (!items || !ptrs) abort();
        for (size_t i = 0; i < n; i++) {
            Concert__V1__ScheduleStats *s = &items[i];
            concert__v1__schedule_stats__init(s);
            s->schedule_id = (char *)srv_str_at(r, 4 + 4 * i);
            s->seats_total = srv_int_at(r, 5 + 4 * i);
            s->held = srv_int_at(r, 6 + 4 * i);
            s->sold = srv_int_at(r, 7 + 4 * i);
            s->available = s->seats_total - s->held - s->sold;
            ptrs[i] = s;
        }
        Concert__V1__Stats st;
        concert__v1__stats__init(&st);
        st.concert_id = a->concert;
        st.waiting = srv_int_at(r, 1);
        st.active = srv_int_at(r, 2);
        st.effective_admit_rate = srv_int_at(r, 3);
        st.n_schedules = n;
        st.schedules = ptrs;
        srv_call_reply(a->call, &st.base);
        free(items);
        free(ptrs);
    }
    free(a);
}

void srv_admin_stats(srv_call *call) {
    const Concert__V1__GetStatsRequest *req = (const void *)srv_call_request(call);
    actx *a = actx_new(call, req->concert_id);
    if (!a) return;
    srv_app *app = srv_call_app(call);
    char key[SRV_MAX_ID + 20], prefix[SRV_MAX_ID + 8], rate[24];
    snprintf(key, sizeof key, "cc:{%s}:concert", a->concert);
    snprintf(prefix, sizeof prefix, "cc:{%s}:", a->concert);
    snprintf(rate, sizeof rate, "%" PRId64, app->cfg.admit_rate);
    const char *args[] = {key, prefix, rate};
    send_or_fail(a, cc_redis_eval(app->redis, &s_stats, on_stats, a, 1, 3, args, NULL));
}

/* ---- audit ----
 * In bounded steps, one Redis call at a time, so that an audit of a big concert never
 * holds Redis (or this loop) for long and concurrent calls keep their latency:
 *  1. 'start': the schedules and their held/sold counters;
 *  2. 'seats' chunks (HSCAN, AUDIT_CHUNK seats) per schedule; seats are de-duplicated
 *     in a bitmap (a scan may return one twice) and counted against the counters;
 *  3. 'pays' chunks (SSCAN) of the concert's payments into rows;
 *  4. as each chunk arrives its rows go into hash tables: by payment id (a scan may
 *     return one twice: dropped), by reservation of the COMPLETED ones (a reservation
 *     paid twice) and by user (a chain per user) - O(n) in all, spread over the chunks,
 *     never one long sort on the loop; then wallet_audit.lua once per user in that
 *     user's slot, at most AUDIT_WINDOW at a time.
 * It is paced, one step at a time, so that other calls keep their latency: a concurrent
 * call waits behind at most one step (one script of AUDIT_CHUNK rows or one wallet).
 * While other calls arrive, the audit occupies Redis (a call in flight) and this loop
 * (decoding a chunk, building a wallet check) at most AUDIT_DUTY of the time: each step
 * that ran beside other calls owes a pause of its occupancy x (1 - AUDIT_DUTY) /
 * AUDIT_DUTY before the next. Alone (no call arrived since the last step) it runs at
 * full speed; idle time is never banked as credit for a later burst.
 * The audit reads live data: run it on a quiet concert (after a drill); under traffic
 * a counter may disagree with the seats for the moment a hold takes. */

#define AUDIT_CHUNK "20"
#define AUDIT_WINDOW 1
#define AUDIT_DUTY 0.2
#define AUDIT_MAX_PROBLEMS 100

typedef struct {
    char *user, *pid, *status, *amount, *rid;
    uint64_t h_user, h_pid, h_rid;
    uint32_t next_of_user; /* the user's next row + 1; 0 ends the chain */
} pay_row;

/* An open-addressing table of row indexes (+1; 0 = empty) keyed by one string field. */
typedef struct {
    uint32_t *slot;
    size_t cap, n;
} rtab;

typedef struct audit_ctx {
    actx a;
    Concert__V1__AuditReport rep;
    char **problems;
    size_t n_problems, cap_problems;
    /* schedules */
    char (*scheds)[SRV_MAX_ID + 1];
    int64_t *held_counter, *sold_counter;
    size_t n_sched, cur;
    uint8_t *seen; /* seat bitmap of the current schedule */
    int64_t ns, nh;
    char cursor[32];
    /* payments */
    pay_row *rows;
    size_t n_rows, cap_rows;
    rtab by_pid, by_rid, by_user; /* by_user holds each user's first row (chain head) */
    size_t next_slot;             /* wallet phase: the next slot of by_user */
    int inflight;
    int failed;
    grpc_status_code fail_code;
    char fail_msg[256];
    /* pacing */
    uv_timer_t pace;
    void (*next)(struct audit_ctx *x);
    uint64_t start_ns, busy_ns, busy_since;
    uint64_t loop_ns, work_since; /* the loop's own work for the audit */
    uint64_t owed_ns;             /* pause owed before the next step */
    uint64_t seen_accepted;       /* calls accepted by the server at the last step */
    uint64_t max_redis_ns, max_work_ns, steps;
    int busy;
} audit_ctx;

static void add_problem(audit_ctx *x, const char *s) {
    if (!*s || x->n_problems >= AUDIT_MAX_PROBLEMS) return;
    if (x->n_problems == x->cap_problems) {
        x->cap_problems = x->cap_problems ? x->cap_problems * 2 : 16;
        x->problems = realloc(x->problems, x->cap_problems * sizeof *x->problems);
        if (!x->problems) abort();
    }
    x->problems[x->n_problems++] = strdup(s);
}

static void on_audit_closed(uv_handle_t *h) { free(h->data); }

static void audit_free(audit_ctx *x) {
    for (size_t i = 0; i < x->n_problems; i++) free(x->problems[i]);
    free(x->problems);
    for (size_t i = 0; i < x->n_rows; i++) {
        pay_row *r = &x->rows[i];
        free(r->user), free(r->pid), free(r->status), free(r->amount), free(r->rid);
    }
    free(x->rows);
    free(x->by_pid.slot), free(x->by_rid.slot), free(x->by_user.slot);
    free(x->scheds), free(x->held_counter), free(x->sold_counter), free(x->seen);
    x->pace.data = x;
    uv_close((uv_handle_t *)&x->pace, on_audit_closed); /* frees x */
}

/* Whether other calls arrived since the last step: only then does the audit yield. */
static int others_busy(audit_ctx *x) {
    srv_app *app = srv_call_app(x->a.call);
    srv_rpc_stats st;
    srv_rpc_get_stats(app->rpc, &st);
    int busy = st.accepted != x->seen_accepted;
    x->seen_accepted = st.accepted;
    return busy;
}

/* A step occupied Redis or the loop for `d` ns: the pause it owes. */
static void occupied(audit_ctx *x, uint64_t d) {
    if (others_busy(x)) x->owed_ns += (uint64_t)((double)d * (1 - AUDIT_DUTY) / AUDIT_DUTY);
}

/* Occupancy: the time during which at least one audit call is in Redis. */
static void busy_begin(audit_ctx *x) {
    if (x->busy++ == 0) x->busy_since = uv_hrtime();
}

static void busy_end(audit_ctx *x) {
    uint64_t now = uv_hrtime();
    if (--x->busy == 0) {
        uint64_t d = now - x->busy_since;
        x->busy_ns += d;
        if (d > x->max_redis_ns) x->max_redis_ns = d;
        occupied(x, d);
    }
    x->work_since = now; /* the reply's decoding starts */
    x->steps++;
}

/* The loop's work since the last reply (or since `work_since` was set) ends. */
static void work_end(audit_ctx *x) {
    if (!x->work_since) return;
    uint64_t d = uv_hrtime() - x->work_since;
    x->loop_ns += d;
    if (d > x->max_work_ns) x->max_work_ns = d;
    x->work_since = 0;
    occupied(x, d);
}

/* Whole milliseconds of pause owed (0: go on now). */
static uint64_t pause_ms(const audit_ctx *x) { return x->owed_ns / 1000000; }

static void on_pace(uv_timer_t *t);

/* Waits the pause owed, then runs `fn`. */
static void pace(audit_ctx *x, void (*fn)(audit_ctx *x), uint64_t ms) {
    x->owed_ns -= ms * 1000000;
    x->next = fn;
    uv_timer_start(&x->pace, on_pace, ms, 0);
}

static void on_pace(uv_timer_t *t) {
    audit_ctx *x = t->data;
    x->next(x);
}

/* Runs the next step now, or after the pause the duty cycle asks for. */
static void audit_then(audit_ctx *x, void (*fn)(audit_ctx *x)) {
    work_end(x);
    uint64_t ms = pause_ms(x);
    if (!ms) {
        fn(x);
        return;
    }
    pace(x, fn, ms);
}

static void audit_answer(audit_ctx *x) {
    work_end(x);
    CC_INFO("audit_done",
            "concert=%s failed=%d payments=%zu steps=%" PRIu64 " took_ms=%" PRIu64 " redis_ms=%" PRIu64
            " loop_ms=%" PRIu64 " max_redis_us=%" PRIu64 " max_loop_us=%" PRIu64,
            x->a.concert, x->failed, x->n_rows, x->steps, (uv_hrtime() - x->start_ns) / 1000000,
            x->busy_ns / 1000000, x->loop_ns / 1000000, x->max_redis_ns / 1000, x->max_work_ns / 1000);
    if (x->failed) {
        srv_call_finish(x->a.call, x->fail_code, "%s", x->fail_msg);
    } else {
        x->rep.concert_id = x->a.concert;
        x->rep.ok = x->n_problems == 0;
        x->rep.n_problems = x->n_problems;
        x->rep.problems = x->problems;
        if (!x->rep.ok) CC_WARN("audit_problems", "concert=%s problems=%zu", x->a.concert, x->n_problems);
        srv_call_reply(x->a.call, &x->rep.base);
    }
    audit_free(x);
}

static void audit_fail(audit_ctx *x, const redisReply *r, const char *err) {
    if (!x->failed) {
        x->failed = 1;
        x->fail_code = srv_redis_status(r, err, x->fail_msg, sizeof x->fail_msg);
        if (x->fail_code == GRPC_STATUS_OK) x->fail_code = GRPC_STATUS_INTERNAL;
    }
}

static int audit_eval(audit_ctx *x, cc_redis_cb cb, const char **argv_tail, int n_tail) {
    char key[SRV_MAX_ID + 20], prefix[SRV_MAX_ID + 8];
    snprintf(key, sizeof key, "cc:{%s}:concert", x->a.concert);
    snprintf(prefix, sizeof prefix, "cc:{%s}:", x->a.concert);
    const char *args[8] = {key, argv_tail[0], prefix};
    for (int i = 1; i < n_tail; i++) args[2 + i] = argv_tail[i];
    srv_app *app = srv_call_app(x->a.call);
    int rc = cc_redis_eval_bulk(app->redis, &s_audit, cb, x, 1, 2 + n_tail, args, NULL); /* chunks of rows */
    if (rc == 0) busy_begin(x);
    return rc;
}

static uint64_t hash_str64(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; s && *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static void seats_next(audit_ctx *x);
static void pays_next(audit_ctx *x);
static void wallets_next(audit_ctx *x);

enum { F_PID, F_RID, F_USER };

static const char *row_key(const pay_row *r, int f, uint64_t *h) {
    *h = f == F_PID ? r->h_pid : f == F_RID ? r->h_rid : r->h_user;
    return f == F_PID ? r->pid : f == F_RID ? r->rid : r->user;
}

static void rtab_grow(rtab *t, const pay_row *rows, int f) {
    size_t cap = t->cap ? t->cap * 2 : 1024;
    uint32_t *slot = calloc(cap, sizeof *slot);
    if (!slot) abort();
    for (size_t i = 0; i < t->cap; i++) {
        if (!t->slot[i]) continue;
        uint64_t h;
        row_key(&rows[t->slot[i] - 1], f, &h);
        size_t j = h & (cap - 1);
        while (slot[j]) j = (j + 1) & (cap - 1);
        slot[j] = t->slot[i];
    }
    free(t->slot);
    t->slot = slot;
    t->cap = cap;
}

/* The slot of the row whose field equals row `idx`'s; inserts `idx` when there is
 * none (*added = 1). */
static uint32_t *rtab_put(rtab *t, const pay_row *rows, int f, uint32_t idx, int *added) {
    if ((t->n + 1) * 2 > t->cap) rtab_grow(t, rows, f);
    uint64_t h, h2;
    const char *key = row_key(&rows[idx], f, &h);
    size_t j = h & (t->cap - 1);
    while (t->slot[j]) {
        const char *k2 = row_key(&rows[t->slot[j] - 1], f, &h2);
        if (h2 == h && !strcmp(k2, key)) {
            *added = 0;
            return &t->slot[j];
        }
        j = (j + 1) & (t->cap - 1);
    }
    t->slot[j] = idx + 1;
    t->n++;
    *added = 1;
    return &t->slot[j];
}

static void free_row(pay_row *r) { free(r->user), free(r->pid), free(r->status), free(r->amount), free(r->rid); }

/* A payment row from a chunk: counted once, checked for a reservation paid twice and
 * chained to its user. */
static void take_row(audit_ctx *x, const redisReply *r, size_t i) {
    if (x->n_rows == x->cap_rows) {
        x->cap_rows = x->cap_rows ? x->cap_rows * 2 : 1024;
        x->rows = realloc(x->rows, x->cap_rows * sizeof *x->rows);
        if (!x->rows) abort();
    }
    uint32_t idx = (uint32_t)x->n_rows;
    pay_row *row = &x->rows[idx];
    memset(row, 0, sizeof *row);
    row->user = strdup(srv_str_at(r, i));
    row->pid = strdup(srv_str_at(r, i + 1));
    row->status = strdup(srv_str_at(r, i + 2));
    row->amount = strdup(srv_str_at(r, i + 3));
    row->rid = strdup(srv_str_at(r, i + 4));
    if (!row->user || !row->pid || !row->status || !row->amount || !row->rid) abort();
    row->h_user = hash_str64(row->user), row->h_pid = hash_str64(row->pid), row->h_rid = hash_str64(row->rid);
    int added;
    rtab_put(&x->by_pid, x->rows, F_PID, idx, &added);
    if (!added) { /* the scan returned it twice */
        free_row(row);
        return;
    }
    x->n_rows++;
    add_problem(x, srv_str_at(r, i + 5));
    if (!strcmp(row->status, "COMPLETED")) {
        x->rep.payments_completed++;
        rtab_put(&x->by_rid, x->rows, F_RID, idx, &added);
        if (!added) {
            char msg[200];
            snprintf(msg, sizeof msg, "reservation %.100s paid twice", row->rid);
            add_problem(x, msg);
        }
    } else if (!strcmp(row->status, "FAILED")) {
        x->rep.payments_failed++;
    } else {
        x->rep.payments_in_flight++;
    }
    uint32_t *head = rtab_put(&x->by_user, x->rows, F_USER, idx, &added);
    if (!added) {
        row->next_of_user = *head;
        *head = idx + 1;
    }
}

static void on_audit_seats(redisReply *r, const char *err, void *p) {
    audit_ctx *x = p;
    busy_end(x);
    if (!srv_script_ok(x->a.call, r, err)) {
        audit_free(x);
        return;
    }
    for (size_t i = 2; i + 3 <= r->elements; i += 3) {
        int64_t seat = srv_int_at(r, i), kind = srv_int_at(r, i + 1);
        if (seat >= 1 && seat <= MAX_SEATS) {
            if (x->seen[seat >> 3] & (1u << (seat & 7))) continue; /* returned twice by the scan */
            x->seen[seat >> 3] |= (uint8_t)(1u << (seat & 7));
        }
        if (kind == 2) x->ns++;
        else if (kind == 1) x->nh++;
        add_problem(x, srv_str_at(r, i + 2));
    }
    snprintf(x->cursor, sizeof x->cursor, "%s", srv_str_at(r, 1));
    if (strcmp(x->cursor, "0") != 0) {
        audit_then(x, seats_next);
        return;
    }
    /* The schedule is done: its counters must agree with its seats. */
    char msg[200];
    const char *sched = x->scheds[x->cur];
    if (x->ns != x->sold_counter[x->cur]) {
        snprintf(msg, sizeof msg, "%s: %" PRId64 " seats SOLD, counter says %" PRId64, sched, x->ns, x->sold_counter[x->cur]);
        add_problem(x, msg);
    }
    if (x->nh != x->held_counter[x->cur]) {
        snprintf(msg, sizeof msg, "%s: %" PRId64 " seats held, counter says %" PRId64, sched, x->nh, x->held_counter[x->cur]);
        add_problem(x, msg);
    }
    x->rep.seats_sold += x->ns;
    x->rep.seats_held += x->nh;
    x->cur++;
    x->ns = x->nh = 0;
    memset(x->seen, 0, MAX_SEATS / 8 + 1);
    snprintf(x->cursor, sizeof x->cursor, "0");
    audit_then(x, x->cur < x->n_sched ? seats_next : pays_next);
}

static void seats_next(audit_ctx *x) {
    const char *tail[] = {"seats", x->scheds[x->cur], x->cursor, AUDIT_CHUNK};
    if (audit_eval(x, on_audit_seats, tail, 4) < 0) {
        audit_fail(x, NULL, "not connected");
        audit_answer(x);
    }
}

/* All payments are in: de-duplicate, find reservations paid twice, then the wallets. */
/* All payments are in (counted and de-duplicated as they came): the wallets. */
static void pays_done(audit_ctx *x) {
    x->next_slot = 0;
    wallets_next(x);
}

static void on_audit_pays(redisReply *r, const char *err, void *p) {
    audit_ctx *x = p;
    busy_end(x);
    if (!srv_script_ok(x->a.call, r, err)) {
        audit_free(x);
        return;
    }
    for (size_t i = 2; i + 6 <= r->elements; i += 6) take_row(x, r, i);
    snprintf(x->cursor, sizeof x->cursor, "%s", srv_str_at(r, 1));
    audit_then(x, strcmp(x->cursor, "0") != 0 ? pays_next : pays_done);
}

static void pays_next(audit_ctx *x) {
    const char *tail[] = {"pays", x->cursor, AUDIT_CHUNK};
    if (audit_eval(x, on_audit_pays, tail, 3) < 0) {
        audit_fail(x, NULL, "not connected");
        audit_answer(x);
    }
}

static void on_wallet_audit(redisReply *r, const char *err, void *p) {
    audit_ctx *x = p;
    busy_end(x);
    x->inflight--;
    if (!r || r->type != REDIS_REPLY_ARRAY) audit_fail(x, r, err);
    else
        for (size_t i = 0; i < r->elements; i++) add_problem(x, srv_str_at(r, i));
    wallets_next(x);
}

/* Keeps up to AUDIT_WINDOW wallet checks in flight; answers when all are back. */
static void wallets_next(audit_ctx *x) {
    work_end(x);
    x->work_since = uv_hrtime(); /* building the next check is the loop's work too */
    srv_app *app = srv_call_app(x->a.call);
    char prefix[SRV_MAX_ID + 8];
    snprintf(prefix, sizeof prefix, "p1.%s.", x->a.concert);
    uint64_t wait = 0;
    while (!x->failed && x->inflight < AUDIT_WINDOW && x->next_slot < x->by_user.cap && !(wait = pause_ms(x))) {
        uint32_t head = x->by_user.slot[x->next_slot++];
        if (!head) continue;
        const char *user = x->rows[head - 1].user;
        size_t count = 0;
        for (uint32_t k = head; k; k = x->rows[k - 1].next_of_user) count++;
        if (!srv_valid_user(user)) {
            char msg[200];
            snprintf(msg, sizeof msg, "payment %.100s has no valid user", x->rows[head - 1].pid);
            add_problem(x, msg);
            continue;
        }
        size_t nargs = 4 + 3 * count;
        const char **args = calloc(nargs, sizeof *args);
        if (!args) abort();
        char k1[SRV_MAX_USER + 16], k2[SRV_MAX_USER + 16], k3[SRV_MAX_USER + 16];
        cc_pay_wallet_key(k1, sizeof k1, user, "bal");
        cc_pay_wallet_key(k2, sizeof k2, user, "pay");
        cc_pay_wallet_key(k3, sizeof k3, user, "refund");
        args[0] = k1, args[1] = k2, args[2] = k3, args[3] = prefix;
        size_t a = 4;
        for (uint32_t k = head; k; k = x->rows[k - 1].next_of_user) {
            args[a++] = x->rows[k - 1].pid;
            args[a++] = x->rows[k - 1].status;
            args[a++] = x->rows[k - 1].amount;
        }
        x->rep.users_checked++;
        int rc = cc_redis_eval_bulk(app->redis, &s_wallet_audit, on_wallet_audit, x, 3, (int)nargs, args, NULL);
        free(args);
        if (rc < 0) {
            audit_fail(x, NULL, "not connected");
        } else {
            x->inflight++;
            busy_begin(x);
        }
    }
    work_end(x);
    if (x->inflight == 0 && (x->failed || x->next_slot >= x->by_user.cap)) {
        audit_answer(x);
        return;
    }
    if (x->inflight == 0 && wait) pace(x, wallets_next, wait);
}

static void on_audit_start(redisReply *r, const char *err, void *p) {
    audit_ctx *x = p;
    busy_end(x);
    if (!srv_script_ok(x->a.call, r, err)) {
        audit_free(x);
        return;
    }
    size_t n = (r->elements - 1) / 3;
    x->scheds = calloc(n ? n : 1, sizeof *x->scheds);
    x->held_counter = calloc(n ? n : 1, sizeof *x->held_counter);
    x->sold_counter = calloc(n ? n : 1, sizeof *x->sold_counter);
    x->seen = calloc(MAX_SEATS / 8 + 1, 1);
    if (!x->scheds || !x->held_counter || !x->sold_counter || !x->seen) abort();
    for (size_t i = 0; i < n; i++) {
        snprintf(x->scheds[i], sizeof x->scheds[i], "%s", srv_str_at(r, 1 + 3 * i));
        x->held_counter[i] = srv_int_at(r, 2 + 3 * i);
        x->sold_counter[i] = srv_int_at(r, 3 + 3 * i);
    }
    x->n_sched = n;
    snprintf(x->cursor, sizeof x->cursor, "0");
    audit_then(x, n ? seats_next : pays_next);
}

void srv_admin_audit(srv_call *call) {
    const Concert__V1__AuditRequest *req = (const void *)srv_call_request(call);
    if (srv_auth_admin(call) < 0) return;
    if (!srv_valid_id(req->concert_id)) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "concert_id: must be 1..64 characters of [A-Za-z0-9_-]");
        return;
    }
    audit_ctx *x = calloc(1, sizeof *x);
    if (!x) abort();
    x->a.call = call;
    snprintf(x->a.concert, sizeof x->a.concert, "%s", req->concert_id);
    concert__v1__audit_report__init(&x->rep);
    srv_app *app = srv_call_app(call);
    uv_timer_init(app->loop, &x->pace);
    x->pace.data = x;
    x->start_ns = uv_hrtime();
    others_busy(x); /* this call itself is not another's */
    const char *tail[] = {"start"};
    if (audit_eval(x, on_audit_start, tail, 1) < 0) {
        srv_fail_no_redis(call);
        audit_free(x);
    }
}

void srv_admin_init(srv_app *app) {
    srv_script_add(&s_audit, "adm_audit", NULL, 0, lua_adm_audit, lua_adm_audit_len);
    srv_script_add(&s_wallet_audit, "wallet_audit", NULL, 0, lua_wallet_audit, lua_wallet_audit_len);
    srv_script_add(&s_concert, "adm_concert", NULL, 0, lua_adm_concert, lua_adm_concert_len);
    srv_script_add(&s_list, "adm_list", NULL, 0, lua_adm_list, lua_adm_list_len);
    srv_script_add(&s_schedule, "adm_schedule", NULL, 0, lua_adm_schedule, lua_adm_schedule_len);
    srv_script_add(&s_stats, "adm_stats", NULL, 0, lua_adm_stats, lua_adm_stats_len);
    srv_script_add(&s_policy, "adm_policy", NULL, 0, lua_adm_policy, lua_adm_policy_len);
}
