/* ctl_pay: `concertctl pay` and `payment get|watch` (concert.v1.PaymentService).
 * All send the queue token as `authorization: Bearer`. `pay` without --key makes up
 * a random idempotency key and always tells it, so a retry after UNAVAILABLE pays at
 * most once; `--wait` follows the payment until COMPLETED (exit 0) or FAILED (1). */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "concert/v1/payment.pb-c.h"
#include "ctl.h"

#define PS "/concert.v1.PaymentService/"

static const char *status_name(Concert__V1__PaymentStatus s) {
    switch (s) {
    case CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_PENDING: return "PENDING";
    case CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_COMPLETED: return "COMPLETED";
    case CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_FAILED: return "FAILED";
    case CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_UNCONFIRMED: return "UNCONFIRMED";
    default: return "UNKNOWN";
    }
}

static void human_payment(const ProtobufCMessage *m, FILE *out) {
    const Concert__V1__Payment *p = (const void *)m;
    fprintf(out, "payment %s %s amount %lld for %s", p->payment_id, status_name(p->status), (long long)p->amount,
            p->reservation_id);
    if (p->reason && *p->reason) fprintf(out, " (%s)", p->reason);
    fprintf(out, " key %s\n", p->idempotency_key);
}

static int is_final(const Concert__V1__Payment *p) {
    return p->status == CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_COMPLETED ||
           p->status == CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_FAILED;
}

/* Streams WatchPayment until the payment is final: 0 COMPLETED, 1 FAILED, or the
 * error. A first update equal to `shown` (already printed) is not printed again. */
static int watch(ctl_ctx *ctx, const char *pid, int shown) {
    Concert__V1__GetPaymentRequest req;
    concert__v1__get_payment_request__init(&req);
    req.payment_id = (char *)pid;
    int rc = 0;
    cc_stream *s = ctl_stream(ctx, PS "WatchPayment", &req.base, &rc);
    if (!s) return rc;
    ProtobufCMessage *m;
    int last = 0;
    while (cc_stream_next(s, &concert__v1__payment__descriptor, &m) == 1) {
        last = ((Concert__V1__Payment *)m)->status;
        if (last != shown) ctl_print(ctx, m, human_payment);
        shown = 0;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    if ((rc = ctl_stream_end(s))) return rc;
    return last == CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_COMPLETED ? CTL_EXIT_OK : CTL_EXIT_NEGATIVE;
}

/* ---- pay ---- */

static const char *pay_resv, *pay_key;
static int pay_wait;

static const cc_opt pay_opts[] = {
    {"reservation", NULL, CC_OPT_STR, &pay_resv, "ID", "the HELD reservation to pay", 0, 0},
    {"key", NULL, CC_OPT_STR, &pay_key, "KEY",
     "idempotency key, 1..128 of [A-Za-z0-9_.:-] (default: a new random one, printed)", 0, 0},
    {"wait", NULL, CC_OPT_FLAG, &pay_wait, NULL, "follow the payment until COMPLETED (exit 0) or FAILED (exit 1)", 0, 0},
    {0},
};

static int run_pay(ctl_ctx *ctx) {
    int rc;
    if ((rc = ctl_require(ctx, "reservation", pay_resv))) return rc;
    char made[48];
    const char *key = pay_key;
    if (!key) {
        unsigned char r[16];
        static const char hex[] = "0123456789abcdef";
        if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) return ctl_usage_error(ctx, "no randomness; give --key");
        memcpy(made, "pay-", 4);
        for (int i = 0; i < 16; i++) made[4 + 2 * i] = hex[r[i] >> 4], made[5 + 2 * i] = hex[r[i] & 15];
        made[36] = '\0';
        key = made;
    }
    Concert__V1__PayRequest req;
    concert__v1__pay_request__init(&req);
    req.reservation_id = (char *)pay_resv;
    req.idempotency_key = (char *)key;
    ProtobufCMessage *resp;
    if ((rc = ctl_unary(ctx, PS "Pay", &req.base, &concert__v1__payment__descriptor, &resp))) {
        if (!pay_key && rc != GRPC_STATUS_INVALID_ARGUMENT)
            fprintf(stderr, "concertctl: pay: the idempotency key was %s; retry with --key %s to pay at most once\n",
                    key, key);
        return rc;
    }
    ctl_print(ctx, resp, human_payment);
    Concert__V1__Payment *p = (void *)resp;
    int out = CTL_EXIT_OK;
    if (is_final(p)) out = p->status == CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_COMPLETED ? CTL_EXIT_OK : CTL_EXIT_NEGATIVE;
    else if (pay_wait) out = watch(ctx, p->payment_id, (int)p->status);
    protobuf_c_message_free_unpacked(resp, NULL);
    return out;
}

/* ---- payment get / watch ---- */

static const char *get_pid;

static const cc_opt get_opts[] = {
    {"payment", NULL, CC_OPT_STR, &get_pid, "ID", "the payment id Pay answered", 0, 0},
    {0},
};

static int run_get(ctl_ctx *ctx) {
    int rc;
    if ((rc = ctl_require(ctx, "payment", get_pid))) return rc;
    Concert__V1__GetPaymentRequest req;
    concert__v1__get_payment_request__init(&req);
    req.payment_id = (char *)get_pid;
    ProtobufCMessage *resp;
    if ((rc = ctl_unary(ctx, PS "GetPayment", &req.base, &concert__v1__payment__descriptor, &resp))) return rc;
    ctl_print(ctx, resp, human_payment);
    protobuf_c_message_free_unpacked(resp, NULL);
    return CTL_EXIT_OK;
}

static int run_watch(ctl_ctx *ctx) {
    int rc;
    if ((rc = ctl_require(ctx, "payment", get_pid))) return rc;
    return watch(ctx, get_pid, 0);
}

const ctl_cmd ctl_pay_cmds[] = {
    {"pay", "pay a HELD reservation from the prepaid balance (through Kafka)", "--reservation ID [--key KEY] [--wait]",
     "Calls PaymentService.Pay with the owner's ACTIVE token. The answer comes once the\n"
     "payment request is durable in Kafka: PENDING. payment-consumer then debits the\n"
     "balance once, sells the seats and expires the token (COMPLETED), or FAILS it\n"
     "(insufficient balance, hold expired). UNAVAILABLE means Kafka did not acknowledge in\n"
     "time and nothing was debited: retry with the same --key (printed when made up) and\n"
     "the same payment is found, never a second one. --wait follows it to the end.\n",
     pay_opts, CTL_SEND_AUTH, 0, run_pay},
    {"payment get", "show a payment", "--payment ID", "Calls PaymentService.GetPayment (the owner's token).\n", get_opts,
     CTL_SEND_AUTH, 0, run_get},
    {"payment watch", "follow a payment until COMPLETED (exit 0) or FAILED (exit 1)", "--payment ID",
     "Calls PaymentService.WatchPayment (the owner's token).\n", get_opts, CTL_SEND_AUTH, 0, run_watch},
    {0},
};
