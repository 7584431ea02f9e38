/* ctl_wallet: the `wallet ...` commands of concertctl (concert.v1.WalletService):
 * balance and charge. The user id is trusted by the service (a gateway checks it in
 * production), so no token is sent. `wallet charge` without --key makes up a random
 * idempotency key and always tells it, also when the call fails, so a retry with
 * the same key cannot charge twice; argv, metadata, deadlines and exit statuses are
 * ctl_out's and concertctl.c's business. */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "concert/v1/wallet.pb-c.h"
#include "ctl.h"

#define WS "/concert.v1.WalletService/"

/* ---- human output ---- */

static void human_balance(const ProtobufCMessage *m, FILE *out) {
    const Concert__V1__Balance *b = (const void *)m;
    fprintf(out, "%s balance %lld\n", b->user_id, (long long)b->balance);
}

static void human_charge(const ProtobufCMessage *m, FILE *out) {
    const Concert__V1__ChargeResponse *r = (const void *)m;
    if (r->replayed)
        fprintf(out,
                "already charged %lld to %s with key %s: not charged again (balance right after it: %lld)\n",
                (long long)r->amount, r->user_id, r->idempotency_key, (long long)r->balance);
    else
        fprintf(out, "charged %lld to %s: balance %lld (key %s)\n", (long long)r->amount, r->user_id,
                (long long)r->balance, r->idempotency_key);
}

/* ---- wallet balance ---- */

static const char *bal_user;

static const cc_opt balance_opts[] = {
    {"user", NULL, CC_OPT_STR, &bal_user, "USER", "user id (trusted: set by the gateway)", 0, 0},
    {0},
};

static int run_balance(ctl_ctx *ctx) {
    int rc;
    if ((rc = ctl_require(ctx, "user", bal_user))) return rc;
    Concert__V1__GetBalanceRequest req;
    concert__v1__get_balance_request__init(&req);
    req.user_id = (char *)bal_user;
    ProtobufCMessage *resp;
    if ((rc = ctl_unary(ctx, WS "GetBalance", &req.base, &concert__v1__balance__descriptor, &resp)))
        return rc;
    ctl_print(ctx, resp, human_balance);
    protobuf_c_message_free_unpacked(resp, NULL);
    return CTL_EXIT_OK;
}

/* ---- wallet charge ---- */

static const char *chg_user, *chg_key;
static int64_t chg_amount = -1; /* -1 = not given */

static const cc_opt charge_opts[] = {
    {"user", NULL, CC_OPT_STR, &chg_user, "USER", "user id (trusted: set by the gateway)", 0, 0},
    {"amount", NULL, CC_OPT_INT, &chg_amount, "N", "amount to add, smallest currency unit (1..10^12)", 0,
     INT64_MAX},
    {"key", NULL, CC_OPT_STR, &chg_key, "KEY",
     "idempotency key, 1..128 of [A-Za-z0-9_.:-] (default: a new random one, printed)", 0, 0},
    {0},
};

/* "ctl-" and 32 hex digits from the kernel CSPRNG. */
static int random_key(char *out, size_t cap) {
    unsigned char r[16];
    static const char hex[] = "0123456789abcdef";
    if (cap < 4 + 2 * sizeof r + 1 || getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) return -1;
    memcpy(out, "ctl-", 4);
    for (size_t i = 0; i < sizeof r; i++) {
        out[4 + 2 * i] = hex[r[i] >> 4];
        out[5 + 2 * i] = hex[r[i] & 15];
    }
    out[4 + 2 * sizeof r] = '\0';
    return 0;
}

static int run_charge(ctl_ctx *ctx) {
    int rc;
    if ((rc = ctl_require(ctx, "user", chg_user))) return rc;
    if (chg_amount < 0) return ctl_usage_error(ctx, "--amount is required");
    char made[48];
    const char *key = chg_key;
    if (!key) {
        if (random_key(made, sizeof made) < 0) {
            fprintf(stderr, "concertctl: %s: no randomness for a key; give --key\n", ctx->cmd->name);
            return CTL_EXIT_USAGE;
        }
        key = made;
    }
    Concert__V1__ChargeRequest req;
    concert__v1__charge_request__init(&req);
    req.user_id = (char *)chg_user;
    req.amount = chg_amount;
    req.idempotency_key = (char *)key;
    ProtobufCMessage *resp;
    if ((rc = ctl_unary(ctx, WS "Charge", &req.base, &concert__v1__charge_response__descriptor, &resp))) {
        /* Whether it was charged is unknown after e.g. a deadline: retrying with the
         * same key is safe. Only worth saying when the key was made up here. */
        if (!chg_key && rc != GRPC_STATUS_INVALID_ARGUMENT)
            fprintf(
                stderr,
                "concertctl: %s: the idempotency key was %s; retry with --key %s to charge at most once\n",
                ctx->cmd->name, key, key);
        return rc;
    }
    ctl_print(ctx, resp, human_charge);
    protobuf_c_message_free_unpacked(resp, NULL);
    return CTL_EXIT_OK;
}

/* ---- the table ---- */

const ctl_cmd ctl_wallet_cmds[] = {
    {"wallet balance", "show a user's prepaid balance", "--user USER",
     "Calls WalletService.GetBalance. The balance is in the smallest currency unit; a\n"
     "user who never charged has 0.\n",
     balance_opts, 0, 0, run_balance},
    {"wallet charge", "add money to a user's balance, at most once per idempotency key",
     "--user USER --amount N [--key KEY]",
     "Calls WalletService.Charge. The same key with the same amount charges once and\n"
     "answers the first result again (\"already charged\"); the same key with another\n"
     "amount is FAILED_PRECONDITION (exit 9), as is a balance that would pass 10^15.\n"
     "Without --key a random key is made up and printed (on failure too, on stderr): to\n"
     "retry a charge whose outcome is unknown (e.g. DEADLINE_EXCEEDED, UNAVAILABLE),\n"
     "give that key with --key and it is charged at most once.\n",
     charge_opts, 0, 0, run_charge},
    {0},
};
