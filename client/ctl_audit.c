/* ctl_audit: `concertctl audit`, the check run after every failure drill: asks
 * AdminService.Audit for one concert or for every concert and exits 1 when any
 * invariant is broken (a seat sold twice or without a COMPLETED payment, counters
 * that disagree with the seats, a debit without its payment, a refund without a
 * FAILED payment, a negative balance). */
#include <stdlib.h>
#include <string.h>

#include "concert/v1/admin.pb-c.h"
#include "ctl.h"

#define AS "/concert.v1.AdminService/"

static const char *audit_concert;

static const cc_opt audit_opts[] = {
    {"concert", NULL, CC_OPT_STR, &audit_concert, "ID", "audit only this concert (default: every concert)", 0, 0},
    {0},
};

static void human_report(const ProtobufCMessage *m, FILE *out) {
    const Concert__V1__AuditReport *r = (const void *)m;
    fprintf(out, "audit %s: %s (seats sold %lld, held %lld; payments completed %lld, failed %lld, in flight %lld; %lld users)\n",
            r->concert_id, r->ok ? "OK" : "PROBLEMS", (long long)r->seats_sold, (long long)r->seats_held,
            (long long)r->payments_completed, (long long)r->payments_failed, (long long)r->payments_in_flight,
            (long long)r->users_checked);
    for (size_t i = 0; i < r->n_problems; i++) fprintf(out, "  problem: %s\n", r->problems[i]);
}

/* Audits one concert; 0 when OK, CTL_EXIT_NEGATIVE with problems, else the error. */
static int audit_one(ctl_ctx *ctx, const char *concert) {
    Concert__V1__AuditRequest req;
    concert__v1__audit_request__init(&req);
    req.concert_id = (char *)concert;
    ProtobufCMessage *resp;
    int rc = ctl_unary(ctx, AS "Audit", &req.base, &concert__v1__audit_report__descriptor, &resp);
    if (rc) return rc;
    ctl_print(ctx, resp, human_report);
    int ok = ((Concert__V1__AuditReport *)resp)->ok;
    protobuf_c_message_free_unpacked(resp, NULL);
    return ok ? CTL_EXIT_OK : CTL_EXIT_NEGATIVE;
}

static int run_audit(ctl_ctx *ctx) {
    if (audit_concert) return audit_one(ctx, audit_concert);
    Concert__V1__ListConcertsRequest req;
    concert__v1__list_concerts_request__init(&req);
    ctl_pages pages;
    int rc = ctl_unary_pages(ctx, AS "ListConcerts", &req.base, &concert__v1__list_concerts_response__descriptor,
                             "concerts", &pages);
    if (rc) return rc;
    const Concert__V1__ListConcertsResponse *l = (const void *)pages.msg;
    int worst = CTL_EXIT_OK;
    for (size_t i = 0; i < l->n_concerts; i++) {
        int r = audit_one(ctx, l->concerts[i]->concert_id);
        if (r != CTL_EXIT_OK && (worst == CTL_EXIT_OK || worst == CTL_EXIT_NEGATIVE)) worst = r;
    }
    if (l->n_concerts == 0 && !ctx->json) printf("audit: no concerts\n");
    ctl_pages_free(&pages);
    return worst;
}

const ctl_cmd ctl_audit_cmds[] = {
    {"audit", "check the invariants of one or every concert (exit 1 on a problem)", "[--concert ID]",
     "Calls AdminService.Audit: every SOLD seat belongs to a PAID reservation paid by\n"
     "exactly one COMPLETED payment, seat counters match the seats, each user's debits\n"
     "and refunds match the concert's COMPLETED and FAILED payments, no balance is\n"
     "negative. Payments still in flight are counted, not flagged: audit a quiet system.\n"
     "Exit 0 when everything holds, 1 when a problem is found.\n",
     audit_opts, CTL_SEND_ADMIN, 0, run_audit},
    {0},
};
