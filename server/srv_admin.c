/* srv_admin: AdminService. Every call is checked against --admin-key first (constant
 * time); a server without a key refuses all of them. Catalogue keys live under the
 * concert's hash tag (see srv_booking.c); the list of concerts is one global hash,
 * cc:concerts (id -> "created|name"). A concert exists once created here: only then
 * may users join its queue (its ticks start with the first user, see srv_queue.c). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cc_log.h"
#include "concert/v1/admin.pb-c.h"
#include "srv_app.h"
#include "srv_valid.h"

#define MAX_SEATS 100000
#define MAX_PRICE 1000000000000LL

extern const unsigned char lua_adm_concert[], lua_adm_schedule[], lua_adm_stats[], lua_adm_policy[],
    lua_adm_audit[], lua_wallet_audit[];
extern const size_t lua_adm_concert_len, lua_adm_schedule_len, lua_adm_stats_len, lua_adm_policy_len,
    lua_adm_audit_len, lua_wallet_audit_len;
static cc_redis_script s_concert, s_schedule, s_stats, s_policy, s_audit, s_wallet_audit;

typedef struct {
    srv_call *call;
    char concert[SRV_MAX_ID + 1];
    char sched[SRV_MAX_ID + 1];
    char name[201];
    int64_t starts;
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
        cc_redis_command(app->redis, ignore_reply, NULL, "HSET cc:concerts %s %s", a->concert, val);
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

static void on_list(redisReply *r, const char *err, void *p) {
    actx *a = p;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        srv_fail_redis(a->call, r, err);
    } else {
        size_t n = r->elements / 2;
        Concert__V1__Concert *items = calloc(n ? n : 1, sizeof *items);
        Concert__V1__Concert **ptrs = calloc(n ? n : 1, sizeof *ptrs);
        if (!items || !ptrs) abort();
        for (size_t i = 0; i < n; i++) {
            concert__v1__concert__init(&items[i]);
            items[i].concert_id = (char *)srv_str_at(r, 2 * i);
            const char *v = srv_str_at(r, 2 * i + 1);
            items[i].created_at_unix_ms = strtoll(v, NULL, 10);
            const char *bar = strchr(v, '|');
            items[i].name = (char *)(bar ? bar + 1 : "");
            ptrs[i] = &items[i];
        }
        Concert__V1__ListConcertsResponse resp;
        concert__v1__list_concerts_response__init(&resp);
        resp.n_concerts = n;
        resp.concerts = ptrs;
        srv_call_reply(a->call, &resp.base);
        free(items);
        free(ptrs);
    }
    free(a);
}

void srv_admin_list_concerts(srv_call *call) {
    actx *a = actx_new(call, NULL);
    if (!a) return;
    srv_app *app = srv_call_app(call);
    send_or_fail(a, cc_redis_command(app->redis, on_list, a, "HGETALL cc:concerts"));
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

/* ---- policy ---- */

static const char *const policy_fields[] = {"admit_rate", "max_active", "active_ttl_ms", "idle_timeout_ms",
                                            "hold_ttl_ms", "max_seats_per_user", NULL};
/* The Redis hash field of each (queue scripts read "rate"). */
static const char *const policy_keys[] = {"rate", "max_active", "active_ttl_ms", "idle_timeout_ms",
                                          "hold_ttl_ms", "max_seats_per_user", NULL};

static void on_policy(redisReply *r, const char *err, void *p) {
    actx *a = p;
    if (srv_script_ok(a->call, r, err)) {
        srv_app *app = srv_call_app(a->call);
        int64_t v[6] = {app->cfg.admit_rate,      app->cfg.max_active,  app->cfg.active_ttl_ms,
                        app->cfg.idle_timeout_ms, app->cfg.hold_ttl_ms, app->cfg.max_seats_per_user};
        for (size_t i = 1; i + 1 < r->elements; i += 2)
            for (int f = 0; policy_keys[f]; f++)
                if (!strcmp(srv_str_at(r, i), policy_keys[f])) v[f] = srv_int_at(r, i + 1);
        Concert__V1__QueuePolicy pol;
        concert__v1__queue_policy__init(&pol);
        pol.concert_id = a->concert;
        pol.admit_rate = v[0], pol.max_active = v[1], pol.active_ttl_ms = v[2];
        pol.idle_timeout_ms = v[3], pol.hold_ttl_ms = v[4], pol.max_seats_per_user = v[5];
        srv_call_reply(a->call, &pol.base);
    }
    free(a);
}

static void send_policy(actx *a, const char **pairs, int npairs) {
    char k1[SRV_MAX_ID + 20], k2[SRV_MAX_ID + 20];
    snprintf(k1, sizeof k1, "cc:{%s}:concert", a->concert);
    snprintf(k2, sizeof k2, "cc:{%s}:policy", a->concert);
    const char *args[2 + 12] = {k1, k2};
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
    int64_t v[6] = {p->admit_rate, p->max_active, p->active_ttl_ms, p->idle_timeout_ms, p->hold_ttl_ms,
                    p->max_seats_per_user};
    static const int64_t lo[6] = {0, 0, 1000, 0, 1000, 1};
    static const int64_t hi[6] = {1000000, 100000000, 86400000, 86400000, 3600000, 100};
    int use[6] = {0};
    for (size_t i = 0; i < req->n_update_fields; i++) {
        int f = 0;
        for (; policy_fields[f]; f++)
            if (!strcmp(req->update_fields[i], policy_fields[f])) break;
        if (!policy_fields[f]) {
            srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "update_fields: unknown field '%.64s'",
                            req->update_fields[i]);
            free(a);
            return;
        }
        use[f] = 1;
    }
    const char *pairs[12];
    char vals[6][24];
    int n = 0;
    for (int f = 0; f < 6; f++) {
        if (req->n_update_fields && !use[f]) continue;
        if (v[f] < lo[f] || v[f] > hi[f]) {
            srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "policy.%s: must be %lld..%lld", policy_fields[f],
                            (long long)lo[f], (long long)hi[f]);
            free(a);
            return;
        }
        snprintf(vals[f], sizeof vals[f], "%" PRId64, v[f]);
        pairs[n++] = policy_keys[f];
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
        size_t n = r->elements >= 3 ? (r->elements - 3) / 4 : 0;
        Concert__V1__ScheduleStats *items = calloc(n ? n : 1, sizeof *items);
        Concert__V1__ScheduleStats **ptrs = calloc(n ? n : 1, sizeof *ptrs);
        if (!items || !ptrs) abort();
        for (size_t i = 0; i < n; i++) {
            Concert__V1__ScheduleStats *s = &items[i];
            concert__v1__schedule_stats__init(s);
            s->schedule_id = (char *)srv_str_at(r, 3 + 4 * i);
            s->seats_total = srv_int_at(r, 4 + 4 * i);
            s->held = srv_int_at(r, 5 + 4 * i);
            s->sold = srv_int_at(r, 6 + 4 * i);
            s->available = s->seats_total - s->held - s->sold;
            ptrs[i] = s;
        }
        Concert__V1__Stats st;
        concert__v1__stats__init(&st);
        st.concert_id = a->concert;
        st.waiting = srv_int_at(r, 1);
        st.active = srv_int_at(r, 2);
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
    char key[SRV_MAX_ID + 20], prefix[SRV_MAX_ID + 8];
    snprintf(key, sizeof key, "cc:{%s}:concert", a->concert);
    snprintf(prefix, sizeof prefix, "cc:{%s}:", a->concert);
    const char *args[] = {key, prefix};
    srv_app *app = srv_call_app(call);
    send_or_fail(a, cc_redis_eval(app->redis, &s_stats, on_stats, a, 1, 2, args, NULL));
}

/* ---- audit ----
 * In bounded steps, one Redis call at a time, so that an audit of a big concert never
 * holds Redis (or this loop) for long and concurrent calls keep their latency:
 *  1. 'start': the schedules and their held/sold counters;
 *  2. 'seats' chunks (HSCAN, AUDIT_CHUNK seats) per schedule; seats are de-duplicated
 *     in a bitmap (a scan may return one twice) and counted against the counters;
 *  3. 'pays' chunks (SSCAN) of the concert's payments into rows;
 *  4. rows sorted (O(n log n)) by payment id (duplicates dropped), by reservation (a
 *     reservation paid twice) and by user; then wallet_audit.lua once per user in
 *     that user's slot, at most AUDIT_WINDOW at a time.
 * The audit reads live data: run it on a quiet concert (after a drill); under traffic
 * a counter may disagree with the seats for the moment a hold takes. */

#define AUDIT_CHUNK "200"
#define AUDIT_WINDOW 4
#define AUDIT_MAX_PROBLEMS 100

typedef struct {
    char *user, *pid, *status, *amount, *rid;
} pay_row;

typedef struct {
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
    size_t next_user; /* wallet phase: first row of the next user (rows sorted by user) */
    int inflight;
    int failed;
    grpc_status_code fail_code;
    char fail_msg[256];
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

static void audit_free(audit_ctx *x) {
    for (size_t i = 0; i < x->n_problems; i++) free(x->problems[i]);
    free(x->problems);
    for (size_t i = 0; i < x->n_rows; i++) {
        pay_row *r = &x->rows[i];
        free(r->user), free(r->pid), free(r->status), free(r->amount), free(r->rid);
    }
    free(x->rows);
    free(x->scheds), free(x->held_counter), free(x->sold_counter), free(x->seen);
    free(x);
}

static void audit_answer(audit_ctx *x) {
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
    return cc_redis_eval(app->redis, &s_audit, cb, x, 1, 2 + n_tail, args, NULL);
}

static void seats_next(audit_ctx *x);
static void pays_next(audit_ctx *x);
static void wallets_next(audit_ctx *x);

static int cmp_str_field(const char *a, const char *b) { return strcmp(a ? a : "", b ? b : ""); }
static int cmp_pid(const void *a, const void *b) {
    return cmp_str_field(((const pay_row *)a)->pid, ((const pay_row *)b)->pid);
}
static int cmp_user(const void *a, const void *b) {
    const pay_row *x = a, *y = b;
    int c = cmp_str_field(x->user, y->user);
    return c ? c : cmp_str_field(x->pid, y->pid);
}
static int cmp_rid_ptr(const void *a, const void *b) {
    return cmp_str_field((*(pay_row *const *)a)->rid, (*(pay_row *const *)b)->rid);
}

static void on_audit_seats(redisReply *r, const char *err, void *p) {
    audit_ctx *x = p;
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
        seats_next(x);
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
    if (x->cur < x->n_sched) seats_next(x);
    else pays_next(x);
}

static void seats_next(audit_ctx *x) {
    const char *tail[] = {"seats", x->scheds[x->cur], x->cursor, AUDIT_CHUNK};
    if (audit_eval(x, on_audit_seats, tail, 4) < 0) {
        audit_fail(x, NULL, "not connected");
        audit_answer(x);
    }
}

/* All payments are in: de-duplicate, find reservations paid twice, then the wallets. */
static void pays_done(audit_ctx *x) {
    if (x->n_rows) qsort(x->rows, x->n_rows, sizeof *x->rows, cmp_pid);
    size_t n = 0;
    for (size_t i = 0; i < x->n_rows; i++) {
        if (n && !cmp_str_field(x->rows[n - 1].pid, x->rows[i].pid)) {
            pay_row *d = &x->rows[i];
            free(d->user), free(d->pid), free(d->status), free(d->amount), free(d->rid);
            continue;
        }
        x->rows[n++] = x->rows[i];
    }
    x->n_rows = n;
    pay_row **completed = calloc(n ? n : 1, sizeof *completed);
    if (!completed) abort();
    size_t nc = 0;
    for (size_t i = 0; i < n; i++) {
        const char *st = x->rows[i].status;
        if (!strcmp(st, "COMPLETED")) x->rep.payments_completed++, completed[nc++] = &x->rows[i];
        else if (!strcmp(st, "FAILED")) x->rep.payments_failed++;
        else x->rep.payments_in_flight++;
    }
    qsort(completed, nc, sizeof *completed, cmp_rid_ptr);
    for (size_t i = 1; i < nc; i++)
        if (!cmp_str_field(completed[i - 1]->rid, completed[i]->rid)) {
            char msg[200];
            snprintf(msg, sizeof msg, "reservation %.100s paid twice", completed[i]->rid);
            add_problem(x, msg);
        }
    free(completed);
    if (n) qsort(x->rows, n, sizeof *x->rows, cmp_user);
    x->next_user = 0;
    wallets_next(x);
}

static void on_audit_pays(redisReply *r, const char *err, void *p) {
    audit_ctx *x = p;
    if (!srv_script_ok(x->a.call, r, err)) {
        audit_free(x);
        return;
    }
    for (size_t i = 2; i + 6 <= r->elements; i += 6) {
        if (x->n_rows == x->cap_rows) {
            x->cap_rows = x->cap_rows ? x->cap_rows * 2 : 1024;
            x->rows = realloc(x->rows, x->cap_rows * sizeof *x->rows);
            if (!x->rows) abort();
        }
        pay_row *row = &x->rows[x->n_rows++];
        row->user = strdup(srv_str_at(r, i));
        row->pid = strdup(srv_str_at(r, i + 1));
        row->status = strdup(srv_str_at(r, i + 2));
        row->amount = strdup(srv_str_at(r, i + 3));
        row->rid = strdup(srv_str_at(r, i + 4));
        if (!row->user || !row->pid || !row->status || !row->amount || !row->rid) abort();
        add_problem(x, srv_str_at(r, i + 5));
    }
    snprintf(x->cursor, sizeof x->cursor, "%s", srv_str_at(r, 1));
    if (strcmp(x->cursor, "0") != 0) pays_next(x);
    else pays_done(x);
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
    x->inflight--;
    if (!r || r->type != REDIS_REPLY_ARRAY) audit_fail(x, r, err);
    else
        for (size_t i = 0; i < r->elements; i++) add_problem(x, srv_str_at(r, i));
    wallets_next(x);
}

/* Keeps up to AUDIT_WINDOW wallet checks in flight; answers when all are back. */
static void wallets_next(audit_ctx *x) {
    srv_app *app = srv_call_app(x->a.call);
    char prefix[SRV_MAX_ID + 8];
    snprintf(prefix, sizeof prefix, "p1.%s.", x->a.concert);
    while (!x->failed && x->inflight < AUDIT_WINDOW && x->next_user < x->n_rows) {
        size_t k = x->next_user, end = k;
        const char *user = x->rows[k].user;
        while (end < x->n_rows && !strcmp(x->rows[end].user, user)) end++;
        x->next_user = end;
        if (!srv_valid_user(user)) {
            char msg[200];
            snprintf(msg, sizeof msg, "payment %.100s has no valid user", x->rows[k].pid);
            add_problem(x, msg);
            continue;
        }
        size_t nargs = 4 + 3 * (end - k);
        const char **args = calloc(nargs, sizeof *args);
        if (!args) abort();
        char k1[SRV_MAX_USER + 16], k2[SRV_MAX_USER + 16], k3[SRV_MAX_USER + 16];
        snprintf(k1, sizeof k1, "cc:{w:%s}:bal", user);
        snprintf(k2, sizeof k2, "cc:{w:%s}:pay", user);
        snprintf(k3, sizeof k3, "cc:{w:%s}:refund", user);
        args[0] = k1, args[1] = k2, args[2] = k3, args[3] = prefix;
        for (size_t j = k; j < end; j++) {
            args[4 + 3 * (j - k)] = x->rows[j].pid;
            args[5 + 3 * (j - k)] = x->rows[j].status;
            args[6 + 3 * (j - k)] = x->rows[j].amount;
        }
        x->rep.users_checked++;
        int rc = cc_redis_eval(app->redis, &s_wallet_audit, on_wallet_audit, x, 3, (int)nargs, args, NULL);
        free(args);
        if (rc < 0) audit_fail(x, NULL, "not connected");
        else x->inflight++;
    }
    if (x->inflight == 0 && (x->failed || x->next_user >= x->n_rows)) audit_answer(x);
}

static void on_audit_start(redisReply *r, const char *err, void *p) {
    audit_ctx *x = p;
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
    if (n) seats_next(x);
    else pays_next(x);
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
    srv_script_add(&s_schedule, "adm_schedule", NULL, 0, lua_adm_schedule, lua_adm_schedule_len);
    srv_script_add(&s_stats, "adm_stats", NULL, 0, lua_adm_stats, lua_adm_stats_len);
    srv_script_add(&s_policy, "adm_policy", NULL, 0, lua_adm_policy, lua_adm_policy_len);
}
