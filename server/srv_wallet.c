/* srv_wallet: WalletService (GetBalance, Charge). Keys per user, under the user's
 * own hash tag: cc:{w:<user>}:bal (string, the balance) and cc:{w:<user>}:chg (hash
 * idempotency key -> "amount|balance after"). Idempotency records have no TTL, so
 * a memory-pressure eviction can never let a retried charge apply twice.
 * In identity mode (--identity-key) both calls need the user's x-user-assertion;
 * Charge is rate limited per user and per peer address. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cc_pay.h"
#include "concert/v1/wallet.pb-c.h"
#include "srv_app.h"
#include "srv_valid.h"

#define MAX_CHARGE 1000000000000LL       /* 10^12 */
#define MAX_BALANCE 1000000000000000LL   /* 10^15: far from int64 and Lua's 2^53 */

extern const unsigned char lua_wallet_charge[];
extern const size_t lua_wallet_charge_len;
static cc_redis_script s_charge;

typedef struct {
    srv_call *call;
    char user[SRV_MAX_USER + 1];
    char key[130];
    int64_t amount;
} wctx;

static int check_user(srv_call *call, const char *user) {
    if (!srv_valid_user(user)) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
                        "user_id: must be 1..128 bytes without control characters or braces");
        return -1;
    }
    return 0;
}

static void on_balance(redisReply *r, const char *err, void *p) {
    wctx *w = p;
    if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL)) {
        srv_fail_redis(w->call, r, err);
    } else {
        Concert__V1__Balance b;
        concert__v1__balance__init(&b);
        b.user_id = w->user;
        b.balance = r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : 0;
        srv_call_reply(w->call, &b.base);
    }
    free(w);
}

void srv_wallet_balance(srv_call *call) {
    const Concert__V1__GetBalanceRequest *req = (const void *)srv_call_request(call);
    if (check_user(call, req->user_id) < 0) return;
    if (srv_auth_user(call, req->user_id) < 0) return;
    wctx *w = calloc(1, sizeof *w);
    if (!w) abort();
    w->call = call;
    snprintf(w->user, sizeof w->user, "%s", req->user_id);
    srv_app *app = srv_call_app(call);
    char key[SRV_MAX_USER + 16];
    cc_pay_wallet_key(key, sizeof key, w->user, "bal");
    const char *argv[] = {"GET", key};
    if (cc_redis_command_argv(app->redis, on_balance, w, 2, argv, NULL) < 0) {
        free(w);
        srv_fail_no_redis(call);
    }
}

static void on_charge(redisReply *r, const char *err, void *p) {
    wctx *w = p;
    if (srv_script_ok(w->call, r, err)) {
        Concert__V1__ChargeResponse resp;
        concert__v1__charge_response__init(&resp);
        resp.user_id = w->user;
        resp.amount = w->amount;
        resp.balance = srv_int_at(r, 1);
        resp.idempotency_key = w->key;
        resp.replayed = srv_int_at(r, 2) != 0;
        srv_call_reply(w->call, &resp.base);
    }
    free(w);
}

void srv_wallet_charge(srv_call *call) {
    const Concert__V1__ChargeRequest *req = (const void *)srv_call_request(call);
    if (check_user(call, req->user_id) < 0) return;
    if (req->amount <= 0 || req->amount > MAX_CHARGE) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "amount: must be 1..%lld", (long long)MAX_CHARGE);
        return;
    }
    if (!srv_valid_key(req->idempotency_key)) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
                        "idempotency_key: must be 1..128 characters of [A-Za-z0-9_.:-]");
        return;
    }
    if (srv_limit_call(call, "user_id", req->user_id) < 0) return;
    if (srv_auth_user(call, req->user_id) < 0) return;
    wctx *w = calloc(1, sizeof *w);
    if (!w) abort();
    w->call = call;
    w->amount = req->amount;
    snprintf(w->user, sizeof w->user, "%s", req->user_id);
    snprintf(w->key, sizeof w->key, "%s", req->idempotency_key);
    char k1[SRV_MAX_USER + 16], k2[SRV_MAX_USER + 16], amount[24], max[24];
    cc_pay_wallet_key(k1, sizeof k1, w->user, "bal");
    cc_pay_wallet_key(k2, sizeof k2, w->user, "chg");
    snprintf(amount, sizeof amount, "%" PRId64, req->amount);
    snprintf(max, sizeof max, "%lld", (long long)MAX_BALANCE);
    const char *args[] = {k1, k2, amount, w->key, max};
    srv_app *app = srv_call_app(call);
    if (cc_redis_eval(app->redis, &s_charge, on_charge, w, 2, 5, args, NULL) < 0) {
        free(w);
        srv_fail_no_redis(call);
    }
}

void srv_wallet_init(srv_app *app) {
    srv_script_add(&s_charge, "wallet_charge", NULL, 0, lua_wallet_charge, lua_wallet_charge_len);
}
