/* ctl_booking: the `booking ...` commands of concertctl (concert.v1.BookingService):
 * schedules, seats, reserve, get, cancel. Every one sends the queue token as
 * `authorization: Bearer` (CTL_SEND_AUTH). Builds requests from options, prints
 * replies (a seat map as a summary plus ranges per price and state); argv, metadata,
 * deadlines and exit statuses are ctl_out's and concertctl.c's business. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "concert/v1/booking.pb-c.h"
#include "ctl.h"

#define BS "/concert.v1.BookingService/"

/* Seat numbers accepted on one command line (the server takes at most 10 per call). */
#define MAX_SEATS_ARG 100
/* Ranges of seat numbers shown per line of `booking seats` before "+N more". */
#define MAX_RANGES_SHOWN 8

static int64_t now_ms(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static const char *seat_state_name(int st) {
    switch (st) {
    case CONCERT__V1__SEAT_STATE__SEAT_STATE_AVAILABLE: return "AVAILABLE";
    case CONCERT__V1__SEAT_STATE__SEAT_STATE_HELD: return "HELD";
    case CONCERT__V1__SEAT_STATE__SEAT_STATE_SOLD: return "SOLD";
    default: return "UNSPECIFIED";
    }
}

static const char *resv_status_name(int st) {
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&concert__v1__reservation_status__descriptor, st);
    return v && !strncmp(v->name, "RESERVATION_STATUS_", 19) ? v->name + 19 : "UNSPECIFIED";
}

/* ---- human output ---- */

/* "reservation r1.aurora.9f… HELD schedule aurora-1 seats 7,8 total 50000 until
 * 2026-05-01T12:05:00Z (5 min left)" */
static void human_reservation(const ProtobufCMessage *m, FILE *out) {
    const Concert__V1__Reservation *r = (const void *)m;
    fprintf(out, "reservation %s %s schedule %s seats ", r->reservation_id, resv_status_name(r->status),
            r->schedule_id);
    for (size_t i = 0; i < r->n_seat_numbers; i++) fprintf(out, "%s%d", i ? "," : "", r->seat_numbers[i]);
    fprintf(out, " total %lld", (long long)r->total_price);
    if (r->status == CONCERT__V1__RESERVATION_STATUS__RESERVATION_STATUS_HELD && r->expires_at_unix_ms > 0) {
        char a[48], b[48];
        int64_t left = (r->expires_at_unix_ms - now_ms()) / 1000;
        ctl_fmt_time_ms(a, sizeof a, r->expires_at_unix_ms);
        ctl_fmt_duration(b, sizeof b, left < 0 ? 0 : left);
        fprintf(out, " until %s (%s left)", a, b);
    }
    fputc('\n', out);
}

/* "aurora-1  2026-06-13T19:30:00Z  1198 of 1200 seats left" */
static void human_schedules(const ProtobufCMessage *m, FILE *out) {
    const Concert__V1__ListSchedulesResponse *r = (const void *)m;
    if (!r->n_schedules) {
        fputs("no schedules\n", out);
        return;
    }
    int w = 0;
    for (size_t i = 0; i < r->n_schedules; i++) {
        int l = (int)strlen(r->schedules[i]->schedule_id);
        if (l > w) w = l;
    }
    for (size_t i = 0; i < r->n_schedules; i++) {
        const Concert__V1__Schedule *s = r->schedules[i];
        fprintf(out, "%-*s  %s  ", w, s->schedule_id, s->date);
        if (s->seats_left > 0)
            fprintf(out, "%lld of %lld seats left\n", (long long)s->seats_left, (long long)s->seats_total);
        else
            fprintf(out, "sold out (%lld seats)\n", (long long)s->seats_total);
    }
}

static int seats_available_only; /* booking seats --available */

/* Price high to low, then AVAILABLE, HELD, SOLD, then seat number. */
static int seat_group_cmp(const void *a, const void *b) {
    const Concert__V1__Seat *x = *(Concert__V1__Seat *const *)a, *y = *(Concert__V1__Seat *const *)b;
    if (x->price != y->price) return x->price > y->price ? -1 : 1;
    if (x->state != y->state) return x->state < y->state ? -1 : 1;
    return (x->number > y->number) - (x->number < y->number);
}

/* One line per (price, state): count and the seat numbers as ranges. */
static void print_group(FILE *out, Concert__V1__Seat **g, size_t n) {
    fprintf(out, "  %10lld  %-9s  %6zu  ", (long long)g[0]->price, seat_state_name(g[0]->state), n);
    size_t ranges = 0, shown = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j + 1 < n && g[j + 1]->number == g[j]->number + 1) j++;
        if (ranges++ < MAX_RANGES_SHOWN) {
            if (shown++) fputs(", ", out);
            if (j > i) fprintf(out, "%d-%d", g[i]->number, g[j]->number);
            else fprintf(out, "%d", g[i]->number);
        }
        i = j + 1;
    }
    if (ranges > shown) fprintf(out, ", ... (+%zu more ranges)", ranges - shown);
    fputc('\n', out);
}

/* "schedule aurora-1: 1200 seats, 1197 available, 2 held, 1 sold" and a table. */
static void human_seats(const ProtobufCMessage *m, FILE *out) {
    const Concert__V1__ListSeatsResponse *r = (const void *)m;
    size_t count[4] = {0}, n = r->n_seats;
    for (size_t i = 0; i < n; i++) {
        int st = r->seats[i]->state;
        count[st >= 1 && st <= 3 ? st : 0]++;
    }
    if (seats_available_only) {
        /* The response was already filtered: n seats, all AVAILABLE. */
        if (n) fprintf(out, "schedule %s: %zu seats available\n", r->schedule_id, n);
        else fprintf(out, "schedule %s: no seats available\n", r->schedule_id);
    } else {
        fprintf(out, "schedule %s: %zu seats, %zu available, %zu held, %zu sold\n", r->schedule_id, n,
                count[1], count[2], count[3]);
    }
    if (!n) return;
    Concert__V1__Seat **sorted = malloc(n * sizeof *sorted);
    if (!sorted) abort();
    memcpy(sorted, r->seats, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, seat_group_cmp);
    fprintf(out, "  %10s  %-9s  %6s  %s\n", "price", "state", "seats", "numbers");
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && sorted[j]->price == sorted[i]->price && sorted[j]->state == sorted[i]->state) j++;
        print_group(out, sorted + i, j - i);
        i = j;
    }
    free(sorted);
}

/* ---- booking schedules ---- */

static const char *sch_concert;

static const cc_opt schedules_opts[] = {
    {"concert", NULL, CC_OPT_STR, &sch_concert, "ID", "the concert (must be the token's)", 0, 0},
    {0},
};

static int run_schedules(ctl_ctx *ctx) {
    int rc;
    if ((rc = ctl_require(ctx, "concert", sch_concert))) return rc;
    Concert__V1__ListSchedulesRequest req;
    concert__v1__list_schedules_request__init(&req);
    req.concert_id = (char *)sch_concert;
    ProtobufCMessage *resp;
    if ((rc = ctl_unary(ctx, BS "ListSchedules", &req.base, &concert__v1__list_schedules_response__descriptor,
                        &resp)))
        return rc;
    ctl_print(ctx, resp, human_schedules);
    protobuf_c_message_free_unpacked(resp, NULL);
    return CTL_EXIT_OK;
}

/* ---- booking seats ---- */

static const char *seats_schedule;

static const cc_opt seats_opts[] = {
    {"schedule", NULL, CC_OPT_STR, &seats_schedule, "ID", "a schedule of the token's concert", 0, 0},
    {"available", NULL, CC_OPT_FLAG, &seats_available_only, NULL, "only the seats still AVAILABLE", 0, 0},
    {0},
};

static int run_seats(ctl_ctx *ctx) {
    int rc;
    if ((rc = ctl_require(ctx, "schedule", seats_schedule))) return rc;
    Concert__V1__ListSeatsRequest req;
    concert__v1__list_seats_request__init(&req);
    req.schedule_id = (char *)seats_schedule;
    ctl_pages pages; /* every page: the whole schedule */
    if ((rc = ctl_unary_pages(ctx, BS "ListSeats", &req.base, &concert__v1__list_seats_response__descriptor, "seats",
                              &pages)))
        return rc;
    ProtobufCMessage *resp = pages.msg;
    Concert__V1__ListSeatsResponse *r = (void *)resp;
    Concert__V1__Seat **all = r->seats, **avail = NULL;
    size_t n_all = r->n_seats;
    if (seats_available_only) {
        /* Print a view holding only the AVAILABLE seats; the reply itself is freed intact. */
        avail = malloc((n_all ? n_all : 1) * sizeof *avail);
        if (!avail) abort();
        size_t k = 0;
        for (size_t i = 0; i < n_all; i++)
            if (all[i]->state == CONCERT__V1__SEAT_STATE__SEAT_STATE_AVAILABLE) avail[k++] = all[i];
        r->seats = avail;
        r->n_seats = k;
    }
    ctl_print(ctx, resp, human_seats);
    r->seats = all;
    r->n_seats = n_all;
    free(avail);
    ctl_pages_free(&pages);
    return CTL_EXIT_OK;
}

/* ---- booking reserve ---- */

static const char *res_schedule, *res_seats;

static const cc_opt reserve_opts[] = {
    {"schedule", NULL, CC_OPT_STR, &res_schedule, "ID", "a schedule of the token's concert", 0, 0},
    {"seats", NULL, CC_OPT_STR, &res_seats, "LIST", "seat numbers: 3,4,5 or 3-5 (1..10 seats)", 0, 0},
    {0},
};

/* "3,4,5" / "3-5" / "1,7-9" -> numbers; -1 with `err` filled on bad syntax. */
static int parse_seat_list(const char *s, int32_t *out, int cap, char *err, size_t errlen) {
    const char *p = s;
    int n = 0;
    for (;;) {
        const char *item = p;
        char *end;
        while (*p == ' ') p++;
        if (!isdigit((unsigned char)*p)) goto bad;
        long a = strtol(p, &end, 10), b;
        p = end;
        b = a;
        if (*p == '-') {
            p++;
            if (!isdigit((unsigned char)*p)) goto bad;
            b = strtol(p, &end, 10);
            p = end;
        }
        while (*p == ' ') p++;
        if (a < 1 || b < a || a > 1000000000 || b > 1000000000) goto bad;
        if (b - a + 1 > cap - n) {
            snprintf(err, errlen, "too many seats (the server takes at most 10 per reservation)");
            return -1;
        }
        for (long v = a; v <= b; v++) out[n++] = (int32_t)v;
        if (!*p) return n;
        if (*p++ != ',') goto bad;
        continue;
    bad:;
        size_t len = strcspn(item, ",");
        snprintf(err, errlen, "'%.*s' is not a seat number or range (e.g. 3,4,5 or 3-5)",
                 (int)(len > 40 ? 40 : len), item);
        return -1;
    }
}

static int run_reserve(ctl_ctx *ctx) {
    int rc;
    if ((rc = ctl_require(ctx, "schedule", res_schedule)) || (rc = ctl_require(ctx, "seats", res_seats)))
        return rc;
    int32_t seats[MAX_SEATS_ARG];
    char err[160];
    int n = parse_seat_list(res_seats, seats, MAX_SEATS_ARG, err, sizeof err);
    if (n < 0) return ctl_usage_error(ctx, "--seats: %s", err);
    Concert__V1__ReserveSeatsRequest req;
    concert__v1__reserve_seats_request__init(&req);
    req.schedule_id = (char *)res_schedule;
    req.n_seat_numbers = (size_t)n;
    req.seat_numbers = seats;
    ProtobufCMessage *resp;
    if ((rc = ctl_unary(ctx, BS "ReserveSeats", &req.base, &concert__v1__reservation__descriptor, &resp)))
        return rc;
    ctl_print(ctx, resp, human_reservation);
    protobuf_c_message_free_unpacked(resp, NULL);
    return CTL_EXIT_OK;
}

/* ---- booking get / cancel ---- */

static const char *resv_id;

static const cc_opt resv_opts[] = {
    {"reservation", NULL, CC_OPT_STR, &resv_id, "ID", "reservation id (from booking reserve)", 0, 0},
    {0},
};

static int run_get(ctl_ctx *ctx) {
    int rc;
    if ((rc = ctl_require(ctx, "reservation", resv_id))) return rc;
    Concert__V1__GetReservationRequest req;
    concert__v1__get_reservation_request__init(&req);
    req.reservation_id = (char *)resv_id;
    ProtobufCMessage *resp;
    if ((rc = ctl_unary(ctx, BS "GetReservation", &req.base, &concert__v1__reservation__descriptor, &resp)))
        return rc;
    ctl_print(ctx, resp, human_reservation);
    protobuf_c_message_free_unpacked(resp, NULL);
    return CTL_EXIT_OK;
}

static int run_cancel(ctl_ctx *ctx) {
    int rc;
    if ((rc = ctl_require(ctx, "reservation", resv_id))) return rc;
    Concert__V1__CancelReservationRequest req;
    concert__v1__cancel_reservation_request__init(&req);
    req.reservation_id = (char *)resv_id;
    ProtobufCMessage *resp;
    if ((rc =
             ctl_unary(ctx, BS "CancelReservation", &req.base, &concert__v1__reservation__descriptor, &resp)))
        return rc;
    ctl_print(ctx, resp, human_reservation);
    protobuf_c_message_free_unpacked(resp, NULL);
    return CTL_EXIT_OK;
}

/* ---- the table ---- */

#define TOKEN_HELP                                                                                           \
    "Needs an ACTIVE queue token of the concert (queue join, then queue watch until\n"                       \
    "ACTIVE): --token or CONCERT_TOKEN, sent as 'authorization: Bearer'. An unknown or\n"                    \
    "empty token is UNAUTHENTICATED (exit 16); one not (or no longer) ACTIVE, or another\n"                  \
    "user's reservation, PERMISSION_DENIED (exit 7).\n"

const ctl_cmd ctl_booking_cmds[] = {
    {"booking schedules", "list a concert's dates with the seats left", "--concert ID",
     "Calls BookingService.ListSchedules: one line per schedule (id, start time in UTC,\n"
     "seats left). The concert must be the token's.\n" TOKEN_HELP,
     schedules_opts, CTL_SEND_AUTH, 0, run_schedules},
    {"booking seats", "a schedule's seats: counts, then ranges by price and state",
     "--schedule ID [--available]",
     "Calls BookingService.ListSeats, page after page (the whole schedule). Prints a\n"
     "summary line, then one line per price and state with the seat numbers as ranges\n"
     "(long lists are cut short). With --available only the AVAILABLE seats. --json\n"
     "prints every page as one reply (every seat with number, price and state; with\n"
     "--available only the available ones).\n" TOKEN_HELP,
     seats_opts, CTL_SEND_AUTH, 0, run_seats},
    {"booking reserve", "hold seats, all or nothing, until the hold lapses", "--schedule ID --seats 3,4,5",
     "Calls BookingService.ReserveSeats. Either every seat is held for you or none is:\n"
     "a seat held or sold already is FAILED_PRECONDITION (exit 9), an unknown seat or\n"
     "schedule NOT_FOUND (5), more than the concert's per-user cap RESOURCE_EXHAUSTED (8).\n"
     "Prints the reservation id, its seats, total price and when the hold lapses (the\n"
     "concert's hold TTL, 5 min by default); pay before then.\n" TOKEN_HELP,
     reserve_opts, CTL_SEND_AUTH, 0, run_reserve},
    {"booking get", "show one of your reservations and its status", "--reservation ID",
     "Calls BookingService.GetReservation: HELD (until when), PAYMENT_PENDING, PAID,\n"
     "CANCELLED or EXPIRED. Only the token's owner may read it.\n" TOKEN_HELP,
     resv_opts, CTL_SEND_AUTH, 0, run_get},
    {"booking cancel", "release a held reservation's seats at once", "--reservation ID",
     "Calls BookingService.CancelReservation. Idempotent for a reservation already\n"
     "CANCELLED; one being paid or paid is FAILED_PRECONDITION (exit 9).\n" TOKEN_HELP,
     resv_opts, CTL_SEND_AUTH, 0, run_cancel},
    {0},
};
