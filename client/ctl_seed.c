/* ctl_seed: `concertctl seed`, a realistic demo catalogue loaded through AdminService:
 * a few touring concerts (fictional acts), each with 2-3 consecutive show nights, a
 * seat map in three price tiers (VIP, R, S) and a queue policy. Ids are fixed (prefix
 * + slug, slug-1, slug-2, ...), so running it again changes nothing but the policies:
 * ALREADY_EXISTS is reported as "exists". Calls go through cc_client directly (with
 * the x-admin-key ctl_out would send) because ALREADY_EXISTS is no error here. */
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "concert/v1/admin.pb-c.h"
#include "ctl.h"

#define AS "/concert.v1.AdminService/"

#define DAY_MS 86400000LL
#define N_TIERS 3

typedef struct {
    const char *slug, *name;
    int dates;                    /* show nights by default (--schedules 0) */
    int64_t admit_rate, max_active; /* queue policy: bigger tours admit faster */
} tour;

/* Made-up acts; after the last one the list starts again with "-2" ids. */
static const tour tours[] = {
    {"aurora", "Aurora Vale: Northern Lights World Tour 2026", 3, 200, 2000},
    {"neon-harbor", "Neon Harbor: Midnight Drive Tour", 2, 100, 1000},
    {"han-river-phil", "Han River Philharmonic: Summer Symphony Nights", 3, 50, 500},
    {"velvet-static", "Velvet Static: The Reunion Tour", 2, 150, 1500},
    {"kairo-tides", "Kairo & The Tides: Saltwater Tour", 3, 100, 1000},
    {"luna-park", "Luna Park Orchestra: Film Scores Live", 2, 50, 500},
    {"maren-oaks", "Maren Oaks: Acoustic Evenings", 2, 30, 300},
    {"solstice", "Solstice Open Air 2026", 3, 300, 3000},
};
#define N_TOURS (sizeof tours / sizeof tours[0])

static const char *const tier_names[N_TIERS] = {"VIP", "R", "S"};
static const int64_t tier_prices[N_TIERS] = {25000, 15000, 9000};

/* Queue policy fields every seeded concert gets (besides rate and cap). */
#define SEED_ACTIVE_TTL_MS 600000
#define SEED_IDLE_TIMEOUT_MS 60000
#define SEED_HOLD_TTL_MS 300000
#define SEED_MAX_SEATS 4

static int64_t opt_concerts = 3, opt_schedules = 0, opt_seats = 1200;
static const char *opt_prefix = "";

static const cc_opt seed_opts[] = {
    {"concerts", NULL, CC_OPT_INT, &opt_concerts, "N", "how many concerts (default 3)", 1, 100},
    {"schedules", NULL, CC_OPT_INT, &opt_schedules, "N", "show dates per concert (default 2 or 3 each)", 0,
     30},
    {"seats", NULL, CC_OPT_INT, &opt_seats, "N",
     "seats per show, split 10/40/50 % into VIP/R/S (default 1200)", 1, 100000},
    {"prefix", NULL, CC_OPT_STR, &opt_prefix, "P",
     "put P before every concert id (e.g. load- -> load-aurora)", 0, 0},
    {0},
};

typedef struct {
    int first, last; /* seats; first > last when the tier is empty (tiny --seats) */
} tier_range;

static void tier_ranges(int64_t seats, tier_range out[N_TIERS]) {
    int64_t vip = seats / 10, r = seats * 4 / 10;
    if (vip < 1) vip = 1;
    if (r < 1 && seats >= 2) r = 1;
    if (vip + r > seats) r = seats - vip;
    out[0] = (tier_range){1, (int)vip};
    out[1] = (tier_range){(int)vip + 1, (int)(vip + r)};
    out[2] = (tier_range){(int)(vip + r + 1), (int)seats};
}

/* The i-th concert's id and display name. */
static void concert_names(int i, char *id, size_t id_cap, char *name, size_t name_cap) {
    const tour *tr = &tours[i % N_TOURS];
    int round = i / (int)N_TOURS + 1;
    if (round > 1) {
        snprintf(id, id_cap, "%s%s-%d", opt_prefix, tr->slug, round);
        snprintf(name, name_cap, "%s (encore %d)", tr->name, round - 1);
    } else {
        snprintf(id, id_cap, "%s%s", opt_prefix, tr->slug);
        snprintf(name, name_cap, "%s", tr->name);
    }
}

static int n_dates_of(int i) { return opt_schedules ? (int)opt_schedules : tours[i % N_TOURS].dates; }

/* One call with the admin key. 0 on OK, 1 on ALREADY_EXISTS, otherwise prints the
 * error and returns the exit status (> 1, as ctl_fail does). */
static int admin_call(ctl_ctx *ctx, const char *method, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp_out) {
    cc_md md[1];
    int n_md = 0;
    if (ctx->admin_key && *ctx->admin_key) md[n_md++] = (cc_md){"x-admin-key", ctx->admin_key};
    cc_status st;
    *resp_out = NULL;
    grpc_status_code code = cc_client_unary(ctl_client(ctx), method, req, resp_desc, resp_out, md, n_md,
                                            ctl_timeout(ctx, CTL_DEFAULT_TIMEOUT_MS), &st);
    if (code == GRPC_STATUS_OK) return 0;
    if (code == GRPC_STATUS_ALREADY_EXISTS) return 1;
    int rc = ctl_fail(&st);
    return rc > 1 ? rc : CTL_EXIT_USAGE;
}

static void json_str_field(const char *name, const char *v) {
    printf(",\"%s\":", name);
    ctl_json_string(stdout, v, strlen(v));
}

typedef struct {
    int concerts, concerts_new, schedules, schedules_new;
    int id_w; /* width of the id column */
} tally;

static int seed_concert(ctl_ctx *ctx, int i, const tier_range tiers[N_TIERS], int64_t day0_ms, tally *t) {
    const tour *tr = &tours[i % N_TOURS];
    char id[160], name[240];
    concert_names(i, id, sizeof id, name, sizeof name);

    Concert__V1__CreateConcertRequest creq;
    concert__v1__create_concert_request__init(&creq);
    creq.concert_id = id;
    creq.name = name;
    ProtobufCMessage *resp;
    int rc = admin_call(ctx, AS "CreateConcert", &creq.base, &concert__v1__concert__descriptor, &resp);
    if (rc > 1) return rc;
    const char *result = rc ? "exists" : "created";
    t->concerts++;
    t->concerts_new += !rc;
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    if (ctx->json) {
        fputs("{\"kind\":\"concert\"", stdout);
        json_str_field("concertId", id);
        json_str_field("name", name);
        json_str_field("result", result);
        fputs("}\n", stdout);
    } else {
        printf("concert   %-*s  %-7s  %s\n", t->id_w, id, result, name);
    }

    /* Consecutive show nights at 19:30 UTC, each tour starting a few days after the last. */
    int n_dates = n_dates_of(i);
    Concert__V1__SeatRange ranges[N_TIERS], *ptrs[N_TIERS];
    size_t n_ranges = 0;
    for (int k = 0; k < N_TIERS; k++) {
        if (tiers[k].first > tiers[k].last) continue;
        concert__v1__seat_range__init(&ranges[n_ranges]);
        ranges[n_ranges].first_seat = tiers[k].first;
        ranges[n_ranges].last_seat = tiers[k].last;
        ranges[n_ranges].price = tier_prices[k];
        ptrs[n_ranges] = &ranges[n_ranges];
        n_ranges++;
    }
    for (int d = 0; d < n_dates; d++) {
        char sid[200];
        snprintf(sid, sizeof sid, "%s-%d", id, d + 1);
        Concert__V1__CreateScheduleRequest sreq;
        concert__v1__create_schedule_request__init(&sreq);
        sreq.concert_id = id;
        sreq.schedule_id = sid;
        sreq.starts_at_unix_ms = day0_ms + (int64_t)(5 * i + d) * DAY_MS + (19 * 3600 + 30 * 60) * 1000LL;
        sreq.n_seats = n_ranges;
        sreq.seats = ptrs;
        rc = admin_call(ctx, AS "CreateSchedule", &sreq.base, &concert__v1__schedule__descriptor, &resp);
        if (rc > 1) return rc;
        t->schedules++;
        t->schedules_new += !rc;
        const Concert__V1__Schedule *s = (const void *)resp;
        if (ctx->json) {
            fputs("{\"kind\":\"schedule\"", stdout);
            json_str_field("concertId", id);
            json_str_field("scheduleId", sid);
            if (s) {
                printf(",\"startsAtUnixMs\":%lld", (long long)s->starts_at_unix_ms);
                json_str_field("date", s->date);
                printf(",\"seatsTotal\":%lld", (long long)s->seats_total);
            }
            json_str_field("result", rc ? "exists" : "created");
            fputs("}\n", stdout);
        } else if (s) {
            printf("schedule  %-*s  created  %s, %lld seats\n", t->id_w, sid, s->date,
                   (long long)s->seats_total);
        } else {
            printf("schedule  %-*s  exists\n", t->id_w, sid);
        }
        if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    }

    /* The policy is (re)set on every run: the catalogue converges to the seed's. */
    Concert__V1__QueuePolicy pol;
    concert__v1__queue_policy__init(&pol);
    pol.concert_id = id;
    pol.admit_rate = tr->admit_rate;
    pol.max_active = tr->max_active;
    pol.active_ttl_ms = SEED_ACTIVE_TTL_MS;
    pol.idle_timeout_ms = SEED_IDLE_TIMEOUT_MS;
    pol.hold_ttl_ms = SEED_HOLD_TTL_MS;
    pol.max_seats_per_user = SEED_MAX_SEATS;
    static char *const fields[] = {"admit_rate",  "max_active",  "active_ttl_ms",
                                   "idle_timeout_ms", "hold_ttl_ms", "max_seats_per_user"};
    Concert__V1__SetQueuePolicyRequest preq;
    concert__v1__set_queue_policy_request__init(&preq);
    preq.policy = &pol;
    preq.n_update_fields = sizeof fields / sizeof fields[0];
    preq.update_fields = (char **)fields;
    rc = admin_call(ctx, AS "SetQueuePolicy", &preq.base, &concert__v1__queue_policy__descriptor, &resp);
    if (rc > 1) return rc;
    const Concert__V1__QueuePolicy *p = (const void *)resp;
    if (!p) p = &pol; /* cannot happen: SetQueuePolicy never answers ALREADY_EXISTS */
    if (ctx->json) {
        fputs("{\"kind\":\"policy\"", stdout);
        json_str_field("concertId", id);
        printf(",\"admitRate\":%lld,\"maxActive\":%lld,\"activeTtlMs\":%lld,\"idleTimeoutMs\":%lld,"
               "\"holdTtlMs\":%lld,\"maxSeatsPerUser\":%lld",
               (long long)p->admit_rate, (long long)p->max_active, (long long)p->active_ttl_ms,
               (long long)p->idle_timeout_ms, (long long)p->hold_ttl_ms, (long long)p->max_seats_per_user);
        json_str_field("result", "set");
        fputs("}\n", stdout);
    } else {
        char hold[32];
        ctl_fmt_duration(hold, sizeof hold, p->hold_ttl_ms / 1000);
        printf("policy    %-*s  set      admit %lld/s, at most %lld active, hold %s, %lld seats per user\n",
               t->id_w, id, (long long)p->admit_rate, (long long)p->max_active, hold,
               (long long)p->max_seats_per_user);
    }
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    fflush(stdout);
    return CTL_EXIT_OK;
}

static int run_seed(ctl_ctx *ctx) {
    tier_range tiers[N_TIERS];
    tier_ranges(opt_seats, tiers);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    int64_t now = (int64_t)tv.tv_sec * 1000;
    int64_t day0 = now - now % DAY_MS + 28 * DAY_MS; /* first show four weeks out */

    tally t = {0};
    /* Width of the longest schedule id, for aligned columns. */
    for (int i = 0; i < opt_concerts; i++) {
        char id[160], name[240];
        concert_names(i, id, sizeof id, name, sizeof name);
        int w = snprintf(NULL, 0, "%s-%d", id, n_dates_of(i));
        if (w > t.id_w) t.id_w = w;
    }
    for (int i = 0; i < opt_concerts; i++) {
        int rc = seed_concert(ctx, i, tiers, day0, &t);
        if (rc) {
            fprintf(stderr,
                    "concertctl: seed: stopped; what was created stays, running seed again finishes it\n");
            return rc;
        }
    }

    if (ctx->json) {
        printf("{\"kind\":\"summary\",\"concerts\":%d,\"concertsCreated\":%d,\"concertsExisted\":%d,"
               "\"schedules\":%d,\"schedulesCreated\":%d,\"schedulesExisted\":%d,\"seatsPerSchedule\":%lld,"
               "\"tiers\":[",
               t.concerts, t.concerts_new, t.concerts - t.concerts_new, t.schedules, t.schedules_new,
               t.schedules - t.schedules_new, (long long)opt_seats);
        int first = 1;
        for (int k = 0; k < N_TIERS; k++) {
            if (tiers[k].first > tiers[k].last) continue;
            printf("%s{\"tier\":\"%s\",\"firstSeat\":%d,\"lastSeat\":%d,\"price\":%lld}", first ? "" : ",",
                   tier_names[k], tiers[k].first, tiers[k].last, (long long)tier_prices[k]);
            first = 0;
        }
        puts("]}");
    } else {
        printf("seeded %d concert%s (%d created, %d existed), %d schedule%s (%d created, %d existed)\n",
               t.concerts, t.concerts == 1 ? "" : "s", t.concerts_new, t.concerts - t.concerts_new,
               t.schedules, t.schedules == 1 ? "" : "s", t.schedules_new, t.schedules - t.schedules_new);
        printf("seats per show: %lld;", (long long)opt_seats);
        for (int k = 0, n = 0; k < N_TIERS; k++) {
            if (tiers[k].first > tiers[k].last) continue;
            if (tiers[k].first == tiers[k].last)
                printf("%s %s seat %d at %lld", n++ ? "," : "", tier_names[k], tiers[k].first,
                       (long long)tier_prices[k]);
            else
                printf("%s %s seats %d-%d at %lld", n++ ? "," : "", tier_names[k], tiers[k].first,
                       tiers[k].last, (long long)tier_prices[k]);
        }
        putchar('\n');
    }
    fflush(stdout);
    return CTL_EXIT_OK;
}

const ctl_cmd ctl_seed_cmds[] = {
    {"seed", "load demo concerts, show dates, seat maps and queue policies",
     "[--concerts N] [--schedules N] [--seats N] [--prefix P]",
     "Creates, through AdminService, N concerts of made-up touring acts (default 3:\n"
     "aurora, neon-harbor, han-river-phil), each with 2-3 consecutive show nights four\n"
     "weeks out at 19:30 UTC (schedule ids <concert>-1, <concert>-2, ...), every show with\n"
     "the same seat map in three price tiers: VIP (first 10 %) at 25000, R (next 40 %) at\n"
     "15000 and S (the rest) at 9000, 1200 seats by default. Sets each concert's queue\n"
     "policy (admission rate and cap by the act's size, 10 min active TTL, 60 s idle\n"
     "timeout, 5 min holds, 4 seats per user).\n"
     "\n"
     "Idempotent: ids are fixed, so concerts and schedules that exist already are left\n"
     "as they are and reported as \"exists\"; only the queue policies are set again. Stops\n"
     "at the first other error (exit: its gRPC code); run it again to finish.\n"
     "With --json: one object per concert, schedule and policy (\"kind\"), then a summary.\n"
     "Needs the admin key: --admin-key KEY or CONCERT_ADMIN_KEY (sent as x-admin-key).\n",
     seed_opts, CTL_SEND_ADMIN, 0, run_seed},
    {0},
};
