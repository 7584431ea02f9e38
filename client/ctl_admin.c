/* ctl_admin: the `admin ...` commands of concertctl (concert.v1.AdminService):
 * concert create/list, schedule create, policy set/get, stats, sale export. Every one
 * sends the admin key (CTL_SEND_ADMIN). Builds requests from options (seat maps from a
 * "1-100:15000,101-500:9000" spec, start times from RFC 3339 or Unix ms), prints
 * replies; argv, metadata, deadlines and exit statuses are ctl_out's and
 * concertctl.c's business. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#include "concert/v1/admin.pb-c.h"
#include "ctl.h"

#define AS "/concert.v1.AdminService/"

/* Unix ms below this (1973-03-03) are almost surely seconds given by mistake. */
#define MIN_PLAUSIBLE_MS 100000000000LL
/* The server accepts at most this many seat ranges per schedule. */
#define MAX_RANGES 1000

/* ---- parsing helpers ---- */

/* Reads exactly `n` digits at *p into *out; advances *p. */
static int digits(const char **p, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i])) return -1;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

/* RFC 3339 ("2026-07-04T19:30:00Z", "2026-07-04T19:30:00.5+09:00"; seconds optional)
 * or Unix milliseconds ("1783193400000") -> Unix ms. -1 with *why set on error. */
static int parse_starts(const char *s, int64_t *ms_out, const char **why) {
    *why = "expected RFC 3339 (2026-07-04T19:30:00Z) or Unix milliseconds";
    if (!*s) return -1;
    const char *p = s;
    while (isdigit((unsigned char)*p)) p++;
    if (!*p) {
        errno = 0;
        long long v = strtoll(s, NULL, 10);
        if (errno || v <= 0) return -1;
        if (v < MIN_PLAUSIBLE_MS) {
            *why = "looks like Unix seconds; give milliseconds or RFC 3339";
            return -1;
        }
        *ms_out = v;
        return 0;
    }
    int y, mo, d, h, mi, sec = 0, frac_ms = 0, off_h = 0, off_m = 0, sign = 0;
    p = s;
    if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' || digits(&p, 2, &d)) return -1;
    if (*p != 'T' && *p != 't' && *p != ' ') return -1;
    p++;
    if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi)) return -1;
    if (*p == ':') {
        p++;
        if (digits(&p, 2, &sec)) return -1;
        if (*p == '.') {
            p++;
            int n = 0, scale = 100;
            while (isdigit((unsigned char)*p)) {
                if (n++ < 3) frac_ms += (*p - '0') * scale, scale /= 10;
                p++;
            }
            if (!n) return -1;
        }
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p++ == '-' ? -1 : 1;
        if (digits(&p, 2, &off_h) || *p++ != ':' || digits(&p, 2, &off_m) || off_h > 23 || off_m > 59)
            return -1;
    } else {
        *why = "needs a time zone: end it with Z or an offset like +09:00";
        return -1;
    }
    if (*p) return -1;
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) return -1;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi,
                    .tm_sec = sec > 59 ? 59 : sec};
    time_t t = timegm(&tm);
    if (t == (time_t)-1 || tm.tm_mday != d || tm.tm_mon != mo - 1) {
        *why = "no such date";
        return -1;
    }
    int64_t ms = ((int64_t)t - (int64_t)sign * (off_h * 3600 + off_m * 60)) * 1000 + frac_ms;
    if (ms <= 0) return -1;
    *ms_out = ms;
    return 0;
}

/* A non-negative decimal of at most 18 digits at *p; advances *p. */
static int number(const char **p, int64_t *out) {
    const char *s = *p;
    int64_t v = 0;
    int n = 0;
    while (isdigit((unsigned char)*s)) {
        if (++n > 18) return -1;
        v = v * 10 + (*s++ - '0');
    }
    if (!n) return -1;
    *p = s;
    *out = v;
    return 0;
}

static void skip_spaces(const char **p) {
    while (**p == ' ') (*p)++;
}

/* "1-100:15000,101-500:9000" (a single seat may be written "7:5000") -> ranges.
 * Syntax only; the server checks bounds, overlaps and prices (INVALID_ARGUMENT
 * naming the field). Returns the number of ranges, or -1 with `err` filled. */
static int parse_seat_spec(const char *spec, Concert__V1__SeatRange *out, int cap, char *err, size_t errlen) {
    const char *p = spec;
    int n = 0;
    for (;;) {
        const char *item = p;
        int64_t first, last, price;
        skip_spaces(&p);
        if (number(&p, &first)) goto bad;
        last = first;
        if (*p == '-') {
            p++;
            if (number(&p, &last)) goto bad;
        }
        if (*p++ != ':' || number(&p, &price)) goto bad;
        skip_spaces(&p);
        if (first > 1000000000 || last > 1000000000) goto bad;
        if (n == cap) {
            snprintf(err, errlen, "at most %d ranges", cap);
            return -1;
        }
        concert__v1__seat_range__init(&out[n]);
        out[n].first_seat = (int32_t)first;
        out[n].last_seat = (int32_t)last;
        out[n].price = price;
        n++;
        if (!*p) return n;
        if (*p++ != ',') goto bad;
        continue;
    bad:;
        size_t len = strcspn(item, ",");
        snprintf(err, errlen, "'%.*s' is not FIRST-LAST:PRICE (e.g. 1-100:15000,101-500:9000)",
                 (int)(len > 60 ? 60 : len), item);
        return -1;
    }
}

/* ---- human output ---- */

static void human_concert(const ProtobufCMessage *m, FILE *out) {
    const Concert__V1__Concert *c = (const void *)m;
    char t[48];
    ctl_fmt_time_ms(t, sizeof t, c->created_at_unix_ms);
    fprintf(out, "concert %s \"%s\" (created %s)\n", c->concert_id, c->name, t);
}

static int concert_cmp(const void *a, const void *b) {
    return strcmp((*(Concert__V1__Concert *const *)a)->concert_id,
                  (*(Concert__V1__Concert *const *)b)->concert_id);
}

static void human_concerts(const ProtobufCMessage *m, FILE *out) {
    const Concert__V1__ListConcertsResponse *r = (const void *)m;
    if (!r->n_concerts) {
        fputs("no concerts yet (admin concert create, or concertctl seed)\n", out);
        return;
    }
    int w = 0;
    for (size_t i = 0; i < r->n_concerts; i++) {
        int l = (int)strlen(r->concerts[i]->concert_id);
        if (l > w) w = l;
    }
    for (size_t i = 0; i < r->n_concerts; i++) {
        const Concert__V1__Concert *c = r->concerts[i];
        char t[48];
        ctl_fmt_time_ms(t, sizeof t, c->created_at_unix_ms);
        fprintf(out, "%-*s  %s  (created %s)\n", w, c->concert_id, c->name, t);
    }
}

static void human_schedule(const ProtobufCMessage *m, FILE *out) {
    const Concert__V1__Schedule *s = (const void *)m;
    fprintf(out, "schedule %s of concert %s on %s: %lld seats\n", s->schedule_id, s->concert_id, s->date,
            (long long)s->seats_total);
}

static void human_policy(const ProtobufCMessage *m, FILE *out) {
    const Concert__V1__QueuePolicy *p = (const void *)m;
    char a[32], b[32], c[32];
    ctl_fmt_duration(a, sizeof a, p->active_ttl_ms / 1000);
    ctl_fmt_duration(b, sizeof b, p->idle_timeout_ms / 1000);
    ctl_fmt_duration(c, sizeof c, p->hold_ttl_ms / 1000);
    fprintf(out, "queue policy of concert %s\n", p->concert_id);
    if (p->admit_rate) fprintf(out, "  admit-rate          %lld per second\n", (long long)p->admit_rate);
    else fputs("  admit-rate          0 (admission paused)\n", out);
    fprintf(out, "  max-active          %lld users\n", (long long)p->max_active);
    fprintf(out, "  active-ttl-ms       %lld (%s)\n", (long long)p->active_ttl_ms, a);
    if (p->idle_timeout_ms)
        fprintf(out, "  idle-timeout-ms     %lld (%s)\n", (long long)p->idle_timeout_ms, b);
    else fputs("  idle-timeout-ms     0 (never)\n", out);
    fprintf(out, "  hold-ttl-ms         %lld (%s)\n", (long long)p->hold_ttl_ms, c);
    fprintf(out, "  max-seats-per-user  %lld\n", (long long)p->max_seats_per_user);
    static const char *const methods[] = {"fifo", "fifo", "random", "passthrough", "reject"};
    int qm = (int)p->queueing_method;
    fprintf(out, "  queueing-method     %s\n", qm >= 0 && qm <= 4 ? methods[qm] : "?");
    if (p->admission_mode == CONCERT__V1__ADMISSION_MODE__ADMISSION_MODE_ADAPTIVE)
        fprintf(out, "  admission-mode      adaptive, %lld..%lld per second\n", (long long)p->admit_rate_min,
                (long long)p->admit_rate_max);
    else
        fputs("  admission-mode      fixed (admit-rate)\n", out);
    if (p->sale_opens_at_unix_ms) {
        ctl_fmt_time_ms(a, sizeof a, p->sale_opens_at_unix_ms);
        fprintf(out, "  sale-opens-at       %s (%lld)\n", a, (long long)p->sale_opens_at_unix_ms);
        if (p->prequeue_opens_at_unix_ms) {
            ctl_fmt_time_ms(b, sizeof b, p->prequeue_opens_at_unix_ms);
            fprintf(out, "  prequeue-opens-at   %s (%lld)\n", b, (long long)p->prequeue_opens_at_unix_ms);
        } else {
            fputs("  prequeue-opens-at   none (joining opens with the sale)\n", out);
        }
    } else {
        fputs("  sale-opens-at       none (no scheduled sale)\n", out);
    }
}

static void human_stats(const ProtobufCMessage *m, FILE *out) {
    const Concert__V1__Stats *s = (const void *)m;
    fprintf(out, "concert %s: %lld waiting, %lld active, admitting %lld per second, %zu schedule%s\n",
            s->concert_id, (long long)s->waiting, (long long)s->active, (long long)s->effective_admit_rate,
            s->n_schedules, s->n_schedules == 1 ? "" : "s");
    int w = 0;
    for (size_t i = 0; i < s->n_schedules; i++) {
        int l = (int)strlen(s->schedules[i]->schedule_id);
        if (l > w) w = l;
    }
    for (size_t i = 0; i < s->n_schedules; i++) {
        const Concert__V1__ScheduleStats *x = s->schedules[i];
        fprintf(out, "  %-*s  %lld seats: %lld available, %lld held, %lld sold\n", w, x->schedule_id,
                (long long)x->seats_total, (long long)x->available, (long long)x->held, (long long)x->sold);
    }
}

/* Calls `method`, prints the reply with `human`, frees it. */
static int call_print(ctl_ctx *ctx, const char *method, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *resp_desc,
                      void (*human)(const ProtobufCMessage *, FILE *)) {
    ProtobufCMessage *resp;
    int rc = ctl_unary(ctx, method, req, resp_desc, &resp);
    if (rc) return rc;
    ctl_print(ctx, resp, human);
    protobuf_c_message_free_unpacked(resp, NULL);
    return CTL_EXIT_OK;
}

/* ---- admin concert create / list ---- */

static const char *concert_id, *concert_name;

static const cc_opt concert_create_opts[] = {
    {"concert", NULL, CC_OPT_STR, &concert_id, "ID", "concert id, 1..64 characters of [A-Za-z0-9_-]", 0, 0},
    {"name", NULL, CC_OPT_STR, &concert_name, "NAME", "display name, 1..200 bytes", 0, 0},
    {0},
};

static int run_concert_create(ctl_ctx *ctx) {
    int rc;
    if ((rc = ctl_require(ctx, "concert", concert_id)) || (rc = ctl_require(ctx, "name", concert_name)))
        return rc;
    Concert__V1__CreateConcertRequest req;
    concert__v1__create_concert_request__init(&req);
    req.concert_id = (char *)concert_id;
    req.name = (char *)concert_name;
    return call_print(ctx, AS "CreateConcert", &req.base, &concert__v1__concert__descriptor, human_concert);
}

static int run_concert_list(ctl_ctx *ctx) {
    Concert__V1__ListConcertsRequest req;
    concert__v1__list_concerts_request__init(&req);
    ctl_pages pages; /* every page */
    int rc = ctl_unary_pages(ctx, AS "ListConcerts", &req.base, &concert__v1__list_concerts_response__descriptor,
                             "concerts", &pages);
    if (rc) return rc;
    Concert__V1__ListConcertsResponse *r = (void *)pages.msg;
    if (r->n_concerts > 1) qsort(r->concerts, r->n_concerts, sizeof *r->concerts, concert_cmp);
    ctl_print(ctx, pages.msg, human_concerts);
    ctl_pages_free(&pages);
    return CTL_EXIT_OK;
}

/* ---- admin schedule create ---- */

static const char *sched_concert, *sched_id, *sched_starts, *sched_seats;

static const cc_opt schedule_create_opts[] = {
    {"concert", NULL, CC_OPT_STR, &sched_concert, "ID", "the concert (must exist)", 0, 0},
    {"schedule", NULL, CC_OPT_STR, &sched_id, "ID",
     "schedule id, unique in the concert, 1..64 of [A-Za-z0-9_-]", 0, 0},
    {"starts", NULL, CC_OPT_STR, &sched_starts, "TIME",
     "show start: RFC 3339 (2026-07-04T19:30:00Z, +09:00 offsets) or Unix ms", 0, 0},
    {"seats", NULL, CC_OPT_STR, &sched_seats, "SPEC",
     "seat ranges with prices: FIRST-LAST:PRICE[,...], e.g. 1-100:15000,101-500:9000", 0, 0},
    {0},
};

static int run_schedule_create(ctl_ctx *ctx) {
    int rc;
    if ((rc = ctl_require(ctx, "concert", sched_concert)) || (rc = ctl_require(ctx, "schedule", sched_id)) ||
        (rc = ctl_require(ctx, "starts", sched_starts)) || (rc = ctl_require(ctx, "seats", sched_seats)))
        return rc;
    int64_t starts;
    const char *why;
    if (parse_starts(sched_starts, &starts, &why) < 0)
        return ctl_usage_error(ctx, "--starts '%s': %s", sched_starts, why);
    Concert__V1__SeatRange *ranges = calloc(MAX_RANGES, sizeof *ranges);
    Concert__V1__SeatRange **ptrs = calloc(MAX_RANGES, sizeof *ptrs);
    if (!ranges || !ptrs) abort();
    char err[160];
    int n = parse_seat_spec(sched_seats, ranges, MAX_RANGES, err, sizeof err);
    if (n < 0) {
        rc = ctl_usage_error(ctx, "--seats: %s", err);
    } else {
        for (int i = 0; i < n; i++) ptrs[i] = &ranges[i];
        Concert__V1__CreateScheduleRequest req;
        concert__v1__create_schedule_request__init(&req);
        req.concert_id = (char *)sched_concert;
        req.schedule_id = (char *)sched_id;
        req.starts_at_unix_ms = starts;
        req.n_seats = (size_t)n;
        req.seats = ptrs;
        rc = call_print(ctx, AS "CreateSchedule", &req.base, &concert__v1__schedule__descriptor,
                        human_schedule);
    }
    free(ranges);
    free(ptrs);
    return rc;
}

/* ---- admin policy set / get ---- */

static const char *policy_concert;
/* -1 = not given; the server checks the ranges and names the field. */
static int64_t pol_admit_rate = -1, pol_max_active = -1, pol_active_ttl = -1, pol_idle_timeout = -1,
               pol_hold_ttl = -1, pol_max_seats = -1;

static const char *pol_method, *pol_mode, *pol_sale_at, *pol_prequeue_at;
static int64_t pol_rate_min = -1, pol_rate_max = -1;

/* A sale time: RFC 3339, Unix ms, "+N[s|m|h]" from now, or "none" / "0" (no sale). */
static int parse_when(const char *s, int64_t *out, const char **why) {
    if (!strcmp(s, "none") || !strcmp(s, "0")) {
        *out = 0;
        return 0;
    }
    if (s[0] == '+') {
        char *end;
        errno = 0;
        long long n = strtoll(s + 1, &end, 10);
        int64_t unit = *end == 's' ? 1000 : *end == 'm' ? 60000 : *end == 'h' ? 3600000 : 0;
        if (errno || n <= 0 || !unit || end[1]) {
            *why = "a relative time is +N followed by s, m or h (+90s, +5m, +2h)";
            return -1;
        }
        struct timeval tv;
        gettimeofday(&tv, NULL);
        *out = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000 + n * unit;
        return 0;
    }
    return parse_starts(s, out, why);
}

static int parse_enum(const char *s, const char *const *names, int n) {
    for (int i = 0; i < n; i++)
        if (!strcasecmp(s, names[i])) return i;
    return -1;
}

static const cc_opt policy_set_opts[] = {
    {"concert", NULL, CC_OPT_STR, &policy_concert, "ID", "the concert (must exist)", 0, 0},
    {"admit-rate", NULL, CC_OPT_INT, &pol_admit_rate, "N", "admissions per second (0 pauses admission)", 0,
     INT64_MAX},
    {"max-active", NULL, CC_OPT_INT, &pol_max_active, "N", "cap of ACTIVE users at once", 0, INT64_MAX},
    {"active-ttl-ms", NULL, CC_OPT_INT, &pol_active_ttl, "MS", "how long an ACTIVE token lasts", 0,
     INT64_MAX},
    {"idle-timeout-ms", NULL, CC_OPT_INT, &pol_idle_timeout, "MS",
     "waiting users silent this long lose their place (0 = never)", 0, INT64_MAX},
    {"hold-ttl-ms", NULL, CC_OPT_INT, &pol_hold_ttl, "MS", "how long ReserveSeats holds seats", 0, INT64_MAX},
    {"max-seats-per-user", NULL, CC_OPT_INT, &pol_max_seats, "N", "seats one user may hold at once", 0,
     INT64_MAX},
    {"queueing-method", NULL, CC_OPT_STR, &pol_method, "METHOD",
     "fifo, random (uniform picks), passthrough (everyone ACTIVE at once) or reject (no new tokens)", 0, 0},
    {"prequeue-opens-at", NULL, CC_OPT_STR, &pol_prequeue_at, "TIME",
     "a scheduled sale's pre-queue opens (TIME as --sale-opens-at)", 0, 0},
    {"sale-opens-at", NULL, CC_OPT_STR, &pol_sale_at, "TIME",
     "a scheduled sale opens: RFC 3339, Unix ms, +N[s|m|h] from now, or none", 0, 0},
    {"admission-mode", NULL, CC_OPT_STR, &pol_mode, "MODE",
     "fixed (admit-rate) or adaptive (between the bounds, following the payment back end)", 0, 0},
    {"admit-rate-min", NULL, CC_OPT_INT, &pol_rate_min, "N", "adaptive: the lowest rate", 0, INT64_MAX},
    {"admit-rate-max", NULL, CC_OPT_INT, &pol_rate_max, "N", "adaptive: the highest rate", 0, INT64_MAX},
    {0},
};

static const cc_opt policy_get_opts[] = {
    {"concert", NULL, CC_OPT_STR, &policy_concert, "ID", "the concert", 0, 0},
    {0},
};

static int run_policy_set(ctl_ctx *ctx) {
    int rc;
    if ((rc = ctl_require(ctx, "concert", policy_concert))) return rc;
    Concert__V1__QueuePolicy pol;
    concert__v1__queue_policy__init(&pol);
    pol.concert_id = (char *)policy_concert;
    const struct {
        int64_t v;
        int64_t *field;
        const char *name;
    } given[] = {
        {pol_admit_rate, &pol.admit_rate, "admit_rate"},
        {pol_max_active, &pol.max_active, "max_active"},
        {pol_active_ttl, &pol.active_ttl_ms, "active_ttl_ms"},
        {pol_idle_timeout, &pol.idle_timeout_ms, "idle_timeout_ms"},
        {pol_hold_ttl, &pol.hold_ttl_ms, "hold_ttl_ms"},
        {pol_max_seats, &pol.max_seats_per_user, "max_seats_per_user"},
        {pol_rate_min, &pol.admit_rate_min, "admit_rate_min"},
        {pol_rate_max, &pol.admit_rate_max, "admit_rate_max"},
    };
    char *fields[sizeof given / sizeof given[0] + 4];
    size_t n = 0;
    for (size_t i = 0; i < sizeof given / sizeof given[0]; i++) {
        if (given[i].v < 0) continue;
        *given[i].field = given[i].v;
        fields[n++] = (char *)given[i].name;
    }
    static const char *const methods[] = {"fifo", "random", "passthrough", "reject"};
    static const char *const modes[] = {"fixed", "adaptive"};
    const char *why;
    if (pol_method) {
        int m = parse_enum(pol_method, methods, 4);
        if (m < 0) return ctl_usage_error(ctx, "--queueing-method: expected fifo, random, passthrough or reject");
        pol.queueing_method = (Concert__V1__QueueingMethod)(m + 1);
        fields[n++] = "queueing_method";
    }
    if (pol_mode) {
        int m = parse_enum(pol_mode, modes, 2);
        if (m < 0) return ctl_usage_error(ctx, "--admission-mode: expected fixed or adaptive");
        pol.admission_mode = (Concert__V1__AdmissionMode)(m + 1);
        fields[n++] = "admission_mode";
    }
    if (pol_sale_at) {
        if (parse_when(pol_sale_at, &pol.sale_opens_at_unix_ms, &why) < 0)
            return ctl_usage_error(ctx, "--sale-opens-at: %s", why);
        fields[n++] = "sale_opens_at_unix_ms";
    }
    if (pol_prequeue_at) {
        if (parse_when(pol_prequeue_at, &pol.prequeue_opens_at_unix_ms, &why) < 0)
            return ctl_usage_error(ctx, "--prequeue-opens-at: %s", why);
        fields[n++] = "prequeue_opens_at_unix_ms";
    }
    if (!n)
        return ctl_usage_error(ctx, "give at least one of --admit-rate, --max-active, --active-ttl-ms, "
                                    "--idle-timeout-ms, --hold-ttl-ms, --max-seats-per-user, --queueing-method, "
                                    "--sale-opens-at, --prequeue-opens-at, --admission-mode, --admit-rate-min, "
                                    "--admit-rate-max");
    Concert__V1__SetQueuePolicyRequest req;
    concert__v1__set_queue_policy_request__init(&req);
    req.policy = &pol;
    req.n_update_fields = n;
    req.update_fields = fields;
    return call_print(ctx, AS "SetQueuePolicy", &req.base, &concert__v1__queue_policy__descriptor,
                      human_policy);
}

static int run_policy_get(ctl_ctx *ctx) {
    int rc;
    if ((rc = ctl_require(ctx, "concert", policy_concert))) return rc;
    Concert__V1__GetQueuePolicyRequest req;
    concert__v1__get_queue_policy_request__init(&req);
    req.concert_id = (char *)policy_concert;
    return call_print(ctx, AS "GetQueuePolicy", &req.base, &concert__v1__queue_policy__descriptor,
                      human_policy);
}

/* ---- admin stats ---- */

static const char *stats_concert;

static const cc_opt stats_opts[] = {
    {"concert", NULL, CC_OPT_STR, &stats_concert, "ID", "the concert", 0, 0},
    {0},
};

static int run_stats(ctl_ctx *ctx) {
    int rc;
    if ((rc = ctl_require(ctx, "concert", stats_concert))) return rc;
    Concert__V1__GetStatsRequest req;
    concert__v1__get_stats_request__init(&req);
    req.concert_id = (char *)stats_concert;
    return call_print(ctx, AS "GetStats", &req.base, &concert__v1__stats__descriptor, human_stats);
}

/* ---- admin sale export ---- */

static const char *export_concert;

static const cc_opt export_opts[] = {
    {"concert", NULL, CC_OPT_STR, &export_concert, "ID", "the concert", 0, 0},
    {0},
};

/* "1 3f1c...e0" per pre-queued user: place, SHA-256 of the token id. */
static void human_order(const ProtobufCMessage *m, FILE *out) {
    const Concert__V1__SaleOrder *o = (const void *)m;
    for (size_t i = 0; i < o->n_token_id_sha256; i++) {
        fprintf(out, "%lld ", (long long)(o->first_place + (int64_t)i));
        for (size_t k = 0; k < o->token_id_sha256[i].len; k++) fprintf(out, "%02x", o->token_id_sha256[i].data[k]);
        fputc('\n', out);
    }
}

static int run_export(ctl_ctx *ctx) {
    int rc;
    if ((rc = ctl_require(ctx, "concert", export_concert))) return rc;
    Concert__V1__ExportSaleOrderRequest req;
    concert__v1__export_sale_order_request__init(&req);
    req.concert_id = (char *)export_concert;
    cc_stream *s = ctl_stream(ctx, AS "ExportSaleOrder", &req.base, &rc);
    if (!s) return rc;
    ProtobufCMessage *m;
    int n;
    while ((n = cc_stream_next(s, &concert__v1__sale_order__descriptor, &m)) == 1) {
        ctl_print(ctx, m, human_order);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    if (n < 0) return ctl_stream_bad(s, &concert__v1__sale_order__descriptor);
    return ctl_stream_end(s);
}

/* ---- the table ---- */

#define ADMIN_KEY_HELP                                                                                       \
    "Needs the server's admin key: --admin-key KEY or CONCERT_ADMIN_KEY (sent as x-admin-key).\n"            \
    "A wrong key is PERMISSION_DENIED (exit 7), as is any call to a server without one.\n"

const ctl_cmd ctl_admin_cmds[] = {
    {"admin concert create", "create a concert (id and display name)", "--concert ID --name NAME",
     "Calls AdminService.CreateConcert. An existing id is ALREADY_EXISTS (exit 6); nothing\n"
     "is changed then. Its queue starts with the server's default policy (see\n"
     "admin policy set).\n" ADMIN_KEY_HELP,
     concert_create_opts, CTL_SEND_ADMIN, 0, run_concert_create},
    {"admin concert list", "list every concert", "",
     "Calls AdminService.ListConcerts, page after page; prints one concert per line,\n"
     "sorted by id.\n" ADMIN_KEY_HELP, NULL,
     CTL_SEND_ADMIN, 0, run_concert_list},
    {"admin schedule create", "add a show date with its seat map and prices",
     "--concert ID --schedule ID --starts TIME --seats SPEC",
     "Calls AdminService.CreateSchedule. SPEC lists seat ranges with their price in the\n"
     "smallest currency unit: FIRST-LAST:PRICE, comma-separated, e.g.\n"
     "  --seats 1-100:15000,101-500:9000      (100 seats at 15000, 400 at 9000)\n"
     "A single seat is N:PRICE. Ranges must not overlap; seat numbers 1..100000. TIME is\n"
     "RFC 3339 with a zone (2026-07-04T19:30:00Z, 2026-07-04T19:30:00+09:00) or Unix ms.\n"
     "An existing schedule id is ALREADY_EXISTS (exit 6); an unknown concert NOT_FOUND (5).\n" ADMIN_KEY_HELP,
     schedule_create_opts, CTL_SEND_ADMIN, 0, run_schedule_create},
    {"admin policy set", "change a concert's queue policy (only the fields given)",
     "--concert ID [--admit-rate N] [--max-active N] [--active-ttl-ms MS] ...",
     "Calls AdminService.SetQueuePolicy with update_fields naming just the options given;\n"
     "the other fields keep their value. At least one is needed. Prints the whole policy\n"
     "afterwards. Out-of-range values are INVALID_ARGUMENT (exit 3), naming the field.\n"
     "Takes effect at once on every server (admission, holds, caps). A scheduled sale:\n"
     "  --prequeue-opens-at +10m --sale-opens-at +40m   (users join a pre-queue from +10m;\n"
     "  at +40m the shuffle gives them their places; see `sale proof`). An opened sale\n"
     "  cannot move (FAILED_PRECONDITION, exit 9), nor an open pre-queue's start.\n"
     "Adaptive admission: --admission-mode adaptive --admit-rate-min 20 --admit-rate-max 500.\n"
     ADMIN_KEY_HELP,
     policy_set_opts, CTL_SEND_ADMIN, 0, run_policy_set},
    {"admin policy get", "show a concert's queue policy", "--concert ID",
     "Calls AdminService.GetQueuePolicy. Fields never set for the concert show the\n"
     "server's defaults (concert-server --admit-rate, --hold-ttl-ms, ...).\n" ADMIN_KEY_HELP,
     policy_get_opts, CTL_SEND_ADMIN, 0, run_policy_get},
    {"admin stats", "a concert's queue (waiting, active) and seats per schedule", "--concert ID",
     "Calls AdminService.GetStats: users waiting and active in the queue, the admission\n"
     "rate in force (the adaptive controller's under --admission-mode adaptive), and for\n"
     "each schedule its seats available, held and sold.\n" ADMIN_KEY_HELP,
     stats_opts, CTL_SEND_ADMIN, 0, run_stats},
    {"admin sale export", "the drawn order of a scheduled sale's pre-queue, for an audit", "--concert ID",
     "Calls AdminService.ExportSaleOrder (only once the sale has opened): prints one line per\n"
     "pre-queued user, its place and SHA-256 of its token id, in drawn order (--json: the\n"
     "SaleOrder messages, with the seed). Recompute it: client/python/verify_sale.py,\n"
     "README \"Scheduled sales\".\n" ADMIN_KEY_HELP,
     export_opts, CTL_SEND_ADMIN, 0, run_export},
    {0},
};
