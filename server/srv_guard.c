/* srv_guard: what stands between a caller and the services' Redis work: the rate
 * limits (per user or token, and per peer address, on IssueToken, GetQueueStatus,
 * ListSeats and Charge) and identity mode (x-user-assertion on IssueToken and every
 * WalletService call). Owns the two bucket tables, their sweep timer and the identity
 * verifier; must not talk to Redis. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cc_log.h"
#include "srv_app.h"
#include "srv_ident.h"
#include "srv_valid.h"

#define MAX_BUCKETS 200000

static void on_limit_sweep(uv_timer_t *t) {
    srv_app *app = t->data;
    uint64_t now = uv_now(app->loop);
    srv_limit_sweep(app->limit_user, &app->rate_user, now);
    srv_limit_sweep(app->limit_peer, &app->rate_peer, now);
}

int srv_guard_init(srv_app *app, char *err, size_t errlen) {
    const char *ru = app->cfg.rate_user ? app->cfg.rate_user : "0";
    const char *rp = app->cfg.rate_peer ? app->cfg.rate_peer : "0";
    if (srv_limit_parse(ru, &app->rate_user) < 0) {
        snprintf(err, errlen, "--rate-user: expected RATE[:BURST] or 0, got '%s'", ru);
        return -1;
    }
    if (srv_limit_parse(rp, &app->rate_peer) < 0) {
        snprintf(err, errlen, "--rate-peer: expected RATE[:BURST] or 0, got '%s'", rp);
        return -1;
    }
    if (app->cfg.identity_key && *app->cfg.identity_key) {
        char why[300];
        if (srv_ident_load(&app->ident, app->cfg.identity_key, why, sizeof why) < 0) {
            snprintf(err, errlen, "--identity-key: %s", why);
            return -1;
        }
        CC_INFO("identity_mode", "alg=%s key=%s calls=\"IssueToken, WalletService\"", srv_ident_alg(app->ident),
                app->cfg.identity_key);
    } else {
        CC_WARN("identity_trusted", "msg=\"user_id is trusted from callers: run behind a gateway that checks logins, "
                                    "or set --identity-key to verify x-user-assertion\"");
    }
    app->limit_user = srv_limit_new(MAX_BUCKETS);
    app->limit_peer = srv_limit_new(MAX_BUCKETS);
    uv_timer_init(app->loop, &app->limit_timer);
    app->limit_timer.data = app;
    uv_timer_start(&app->limit_timer, on_limit_sweep, 1000, 1000);
    CC_INFO("rate_limits", "user=%s peer=%s", ru, rp);
    return 0;
}

static void on_closed(uv_handle_t *h) {}

void srv_guard_shutdown(srv_app *app) {
    if (app->limit_user && !uv_is_closing((uv_handle_t *)&app->limit_timer))
        uv_close((uv_handle_t *)&app->limit_timer, on_closed);
}

void srv_guard_free(srv_app *app) {
    srv_limit_free(app->limit_user);
    srv_limit_free(app->limit_peer);
    srv_ident_free(app->ident);
    app->limit_user = app->limit_peer = NULL;
    app->ident = NULL;
}

int srv_auth_user(srv_call *call, const char *user_id) {
    srv_app *app = srv_call_app(call);
    if (!app->ident) return 0;
    size_t len = 0;
    const char *jwt = srv_call_metadata(call, "x-user-assertion", &len);
    if (!jwt) {
        srv_call_finish(call, GRPC_STATUS_UNAUTHENTICATED,
                        "x-user-assertion: required (a JWT whose sub is the user_id, signed with %s)",
                        srv_ident_alg(app->ident));
        return -1;
    }
    char sub[SRV_MAX_USER + 1], why[160];
    if (srv_ident_verify(app->ident, jwt, len, (int64_t)time(NULL), sub, sizeof sub, why, sizeof why) < 0) {
        srv_call_finish(call, GRPC_STATUS_UNAUTHENTICATED, "x-user-assertion: %s", why);
        return -1;
    }
    if (strcmp(sub, user_id) != 0) {
        srv_call_finish(call, GRPC_STATUS_PERMISSION_DENIED, "user_id: the x-user-assertion is for another user");
        return -1;
    }
    return 0;
}

static void refuse(srv_call *call, int64_t wait_ms, const char *what) {
    char v[24];
    snprintf(v, sizeof v, "%" PRId64, wait_ms);
    srv_call_add_trailer(call, "retry-after-ms", v);
    srv_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "%s: too many %s calls, retry after %" PRId64 " ms", what,
                    strrchr(srv_call_method(call)->path, '/') + 1, wait_ms);
}

int srv_limit_call(srv_call *call, const char *field, const char *who) {
    srv_app *app = srv_call_app(call);
    if (!app->limit_user) return 0;
    uint64_t now = uv_now(app->loop);
    int m = (int)(srv_call_method(call) - srv_methods);
    char key[300];
    int n;
    if (app->rate_peer.rate > 0) {
        char addr[64];
        srv_call_peer_addr(call, addr, sizeof addr);
        n = snprintf(key, sizeof key, "%d|%s", m, addr);
        int64_t wait = srv_limit_take(app->limit_peer, &app->rate_peer, key, (size_t)n, now);
        if (wait) {
            refuse(call, wait, "peer address");
            return -1;
        }
    }
    if (who && app->rate_user.rate > 0) {
        n = snprintf(key, sizeof key, "%d|%.280s", m, who);
        int64_t wait = srv_limit_take(app->limit_user, &app->rate_user, key, (size_t)n, now);
        if (wait) {
            refuse(call, wait, field);
            return -1;
        }
    }
    return 0;
}
