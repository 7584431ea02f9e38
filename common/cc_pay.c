/* cc_pay: the payment domain (keys, scripts, replies). See cc_pay.h.
 *
 * Every payment script is common/lua/bk_lib.lua + pay_lib.lua + its own body, built
 * once into a static table (the texts live for the process, as cc_redis requires).
 * Key names are spelled only here: the concert prefix and slot key ("cc:{C}:",
 * "cc:{C}:q:tok") and the wallet keys ("cc:{w:U}:bal", ":pay", ":refund"); the
 * scripts build the rest from the prefix, inside the concert's slot. */
#include "cc_pay.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const unsigned char lua_bk_lib[], cc_lua_pay_lib[], cc_lua_pay_begin[], cc_lua_pay_submitted[],
    cc_lua_pay_get[], cc_lua_pay_claim[], cc_lua_pay_debit[], cc_lua_pay_commit[],
    cc_lua_pay_refund[];
extern const size_t lua_bk_lib_len, cc_lua_pay_lib_len, cc_lua_pay_begin_len, cc_lua_pay_submitted_len,
    cc_lua_pay_get_len, cc_lua_pay_claim_len, cc_lua_pay_debit_len, cc_lua_pay_commit_len,
    cc_lua_pay_refund_len;

/* ---- states ---- */

static const char *const state_names[] = {"", "SUBMITTING", "PENDING", "COMPLETED", "FAILED", "ABANDONED"};

cc_pay_state cc_pay_state_parse(const char *s) {
    if (!s) return CC_PAY_UNKNOWN;
    for (int i = 1; i < (int)(sizeof state_names / sizeof state_names[0]); i++)
        if (!strcmp(s, state_names[i])) return (cc_pay_state)i;
    return CC_PAY_UNKNOWN;
}

int cc_pay_state_terminal(cc_pay_state s) { return s == CC_PAY_COMPLETED || s == CC_PAY_FAILED; }

Concert__V1__PaymentStatus cc_pay_state_api(cc_pay_state s) {
    switch (s) {
    case CC_PAY_PENDING: return CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_PENDING;
    case CC_PAY_COMPLETED: return CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_COMPLETED;
    case CC_PAY_FAILED: return CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_FAILED;
    case CC_PAY_SUBMITTING:
    case CC_PAY_ABANDONED: return CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_UNCONFIRMED;
    default: return CONCERT__V1__PAYMENT_STATUS__PAYMENT_STATUS_UNSPECIFIED;
    }
}

/* ---- scripts ---- */

static cc_redis_script scripts[CC_PAY_N_SCRIPTS];
static int scripts_ready;

static void build(cc_pay_script_id id, const char *name, const unsigned char *prelude, size_t plen,
                  const unsigned char *body, size_t blen) {
    size_t len;
    char *text = cc_redis_script_join(prelude, plen, body, blen, &len); /* kept for the process' life */
    cc_redis_script_init(&scripts[id], name, text, len);
}

cc_redis_script *cc_pay_scripts(void) {
    if (scripts_ready) return scripts;
    size_t plen;
    /* bk_lib, then pay_lib: the prelude of every payment script (kept: never freed). */
    unsigned char *pre = (unsigned char *)cc_redis_script_join(lua_bk_lib, lua_bk_lib_len, cc_lua_pay_lib,
                                                               cc_lua_pay_lib_len, &plen);
    build(CC_PAY_S_BEGIN, "pay_begin", pre, plen, cc_lua_pay_begin, cc_lua_pay_begin_len);
    build(CC_PAY_S_SUBMITTED, "pay_submitted", pre, plen, cc_lua_pay_submitted, cc_lua_pay_submitted_len);
    build(CC_PAY_S_GET, "pay_get", pre, plen, cc_lua_pay_get, cc_lua_pay_get_len);
    build(CC_PAY_S_CLAIM, "pay_claim", pre, plen, cc_lua_pay_claim, cc_lua_pay_claim_len);
    build(CC_PAY_S_COMMIT, "pay_commit", pre, plen, cc_lua_pay_commit, cc_lua_pay_commit_len);
    /* The wallet-slot steps need no helper. */
    build(CC_PAY_S_DEBIT, "pay_debit", NULL, 0, cc_lua_pay_debit, cc_lua_pay_debit_len);
    build(CC_PAY_S_REFUND, "pay_refund", NULL, 0, cc_lua_pay_refund, cc_lua_pay_refund_len);
    free(pre);
    scripts_ready = 1;
    return scripts;
}

static int pick(cc_redis_script **out, int max, const cc_pay_script_id *ids, int n) {
    cc_redis_script *s = cc_pay_scripts();
    if (max < n) abort();
    for (int i = 0; i < n; i++)
        out[i] = &s[ids[i]];
    return n;
}

int cc_pay_scripts_server(cc_redis_script **out, int max) {
    static const cc_pay_script_id ids[] = {CC_PAY_S_BEGIN, CC_PAY_S_SUBMITTED, CC_PAY_S_GET};
    return pick(out, max, ids, 3);
}

int cc_pay_scripts_consumer(cc_redis_script **out, int max) {
    static const cc_pay_script_id ids[] = {CC_PAY_S_CLAIM, CC_PAY_S_DEBIT, CC_PAY_S_COMMIT, CC_PAY_S_REFUND};
    return pick(out, max, ids, 4);
}

/* ---- keys ---- */

int cc_pay_concert_keys(const char *concert, char *prefix, size_t plen, char *tag_key, size_t tlen) {
    if ((size_t)snprintf(prefix, plen, "cc:{%s}:", concert) >= plen) return -1;
    if ((size_t)snprintf(tag_key, tlen, "cc:{%s}:q:tok", concert) >= tlen) return -1;
    return 0;
}

typedef struct {
    char bal[CC_PAY_USER_MAX + 16], pay[CC_PAY_USER_MAX + 16], refund[CC_PAY_USER_MAX + 16];
} wallet_keys;

int cc_pay_wallet_key(char *out, size_t n, const char *user, const char *which) {
    int w = snprintf(out, n, "cc:{w:%s}:%s", user, which);
    return w < 0 || (size_t)w >= n ? -1 : 0;
}

static int wallet(wallet_keys *k, const char *user) {
    if (strlen(user) > CC_PAY_USER_MAX) return -1;
    cc_pay_wallet_key(k->bal, sizeof k->bal, user, "bal");
    cc_pay_wallet_key(k->pay, sizeof k->pay, user, "pay");
    cc_pay_wallet_key(k->refund, sizeof k->refund, user, "refund");
    return 0;
}

typedef struct {
    char prefix[CC_PAY_CONCERT_MAX + 8], tag[CC_PAY_CONCERT_MAX + 16];
} concert_keys;

static int concert_of(concert_keys *k, const char *concert) {
    if (strlen(concert) > CC_PAY_CONCERT_MAX) return -1;
    return cc_pay_concert_keys(concert, k->prefix, sizeof k->prefix, k->tag, sizeof k->tag);
}

/* ---- calls ---- */

static int eval(cc_redis *r, cc_pay_script_id id, cc_redis_cb cb, void *payload, int nkeys, int nargs,
                const char **args) {
    return cc_redis_eval(r, &cc_pay_scripts()[id], cb, payload, nkeys, nargs, args, NULL);
}

int cc_pay_begin(cc_redis *r, const char *concert, const char *token, const char *rid, const char *key,
                 const char *new_pid, cc_redis_cb cb, void *payload) {
    concert_keys k;
    if (concert_of(&k, concert) < 0) return -1;
    const char *args[] = {k.tag, k.prefix, token, rid, key, new_pid};
    return eval(r, CC_PAY_S_BEGIN, cb, payload, 1, 6, args);
}

static int submitted(cc_redis *r, const char *concert, const char *pid, const char *to, cc_redis_cb cb,
                     void *payload) {
    concert_keys k;
    if (concert_of(&k, concert) < 0) return -1;
    const char *args[] = {k.tag, k.prefix, pid, to};
    return eval(r, CC_PAY_S_SUBMITTED, cb, payload, 1, 4, args);
}

int cc_pay_accepted(cc_redis *r, const char *concert, const char *pid, cc_redis_cb cb, void *payload) {
    return submitted(r, concert, pid, "PENDING", cb, payload);
}

int cc_pay_abandon(cc_redis *r, const char *concert, const char *pid, cc_redis_cb cb, void *payload) {
    return submitted(r, concert, pid, "ABANDONED", cb, payload);
}

int cc_pay_get(cc_redis *r, const char *concert, const char *token, const char *pid, cc_redis_cb cb,
               void *payload) {
    concert_keys k;
    if (concert_of(&k, concert) < 0) return -1;
    const char *args[] = {k.tag, k.prefix, token, pid};
    return eval(r, CC_PAY_S_GET, cb, payload, 1, 4, args);
}

int cc_pay_claim(cc_redis *r, const Concert__V1__PaymentRequested *m, cc_redis_cb cb, void *payload) {
    concert_keys k;
    if (concert_of(&k, m->concert_id) < 0) return -1;
    char amount[24];
    snprintf(amount, sizeof amount, "%" PRId64, m->amount);
    const char *args[] = {k.tag, k.prefix, m->payment_id, m->user_id, amount};
    return eval(r, CC_PAY_S_CLAIM, cb, payload, 1, 5, args);
}

int cc_pay_debit(cc_redis *r, const char *user, const char *pid, int64_t amount, cc_redis_cb cb,
                 void *payload) {
    wallet_keys w;
    if (wallet(&w, user) < 0) return -1;
    char a[24];
    snprintf(a, sizeof a, "%" PRId64, amount);
    const char *args[] = {w.bal, w.pay, pid, a};
    return eval(r, CC_PAY_S_DEBIT, cb, payload, 2, 4, args);
}

int cc_pay_commit(cc_redis *r, const char *concert, const char *pid, int debited, cc_redis_cb cb,
                  void *payload) {
    concert_keys k;
    if (concert_of(&k, concert) < 0) return -1;
    const char *args[] = {k.tag, k.prefix, pid, debited ? "DEBITED" : "INSUFFICIENT"};
    return eval(r, CC_PAY_S_COMMIT, cb, payload, 1, 4, args);
}

int cc_pay_refund(cc_redis *r, const char *user, const char *pid, cc_redis_cb cb, void *payload) {
    wallet_keys w;
    if (wallet(&w, user) < 0) return -1;
    const char *args[] = {w.bal, w.pay, w.refund, pid};
    return eval(r, CC_PAY_S_REFUND, cb, payload, 3, 4, args);
}

/* ---- replies ---- */

static const redisReply *at(const redisReply *r, size_t i) {
    return r && r->type == REDIS_REPLY_ARRAY && i < r->elements ? r->element[i] : NULL;
}

static const char *str_at(const redisReply *r, size_t i) {
    const redisReply *e = at(r, i);
    return e && (e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_STATUS) ? e->str : "";
}

static int64_t int_at(const redisReply *r, size_t i) {
    const redisReply *e = at(r, i);
    if (!e) return 0;
    if (e->type == REDIS_REPLY_INTEGER) return e->integer;
    if (e->type == REDIS_REPLY_STRING) return strtoll(e->str, NULL, 10);
    return 0;
}

cc_pay_decoded cc_pay_decode(const redisReply *r, cc_pay_record *out, int *code, const char **msg) {
    memset(out, 0, sizeof *out);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 2 || r->element[0]->type != REDIS_REPLY_INTEGER)
        return CC_PAY_BAD;
    int64_t c = r->element[0]->integer;
    if (c != 0) {
        if (code) *code = c > 0 && c <= 16 ? (int)c : 13 /* INTERNAL */;
        if (msg) *msg = str_at(r, 1);
        return CC_PAY_REFUSED;
    }
    if (r->elements < 11) return CC_PAY_BAD;
    out->pid = str_at(r, 1);
    out->rid = str_at(r, 2);
    out->user = str_at(r, 3);
    out->amount = int_at(r, 4);
    out->status = str_at(r, 5);
    out->reason = str_at(r, 6);
    out->key = str_at(r, 7);
    out->created_ms = int_at(r, 8);
    out->updated_ms = int_at(r, 9);
    out->is_new = (int)int_at(r, 10);
    out->sched = str_at(r, 11);
    out->seats = str_at(r, 12);
    out->paid_ms = int_at(r, 13);
    out->state = cc_pay_state_parse(out->status);
    return out->state == CC_PAY_UNKNOWN ? CC_PAY_BAD : CC_PAY_OK;
}

static int status_is(const redisReply *r, const char *s) {
    return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) && !strcmp(r->str, s);
}

int cc_pay_decode_debit(const redisReply *r) {
    if (status_is(r, "DEBITED")) return 1;
    if (status_is(r, "INSUFFICIENT")) return 0;
    return -1;
}

int cc_pay_decode_refund(const redisReply *r) {
    return status_is(r, "REFUNDED") || status_is(r, "NOT_DEBITED") ? 0 : -1;
}

void cc_pay_to_api(Concert__V1__Payment *m, const cc_pay_record *p, const char *concert) {
    concert__v1__payment__init(m);
    m->payment_id = (char *)p->pid;
    m->reservation_id = (char *)p->rid;
    m->concert_id = (char *)concert;
    m->amount = p->amount;
    m->status = cc_pay_state_api(p->state);
    m->reason = (char *)p->reason;
    m->idempotency_key = (char *)p->key;
    m->created_at_unix_ms = p->created_ms;
    m->updated_at_unix_ms = p->updated_ms;
}

static int id_ok(const char *s, size_t max) { return s && *s && strlen(s) <= max; }

int cc_pay_request_valid(const Concert__V1__PaymentRequested *m) {
    return m && id_ok(m->payment_id, CC_PAY_ID_MAX) && id_ok(m->concert_id, CC_PAY_CONCERT_MAX) &&
           id_ok(m->user_id, CC_PAY_USER_MAX) && m->amount >= 0;
}

void cc_pay_result_event(Concert__V1__PaymentResult *ev, const Concert__V1__PaymentRequested *req,
                         const cc_pay_record *rec) {
    concert__v1__payment_result__init(ev);
    ev->payment_id = req->payment_id;
    ev->reservation_id = rec->rid && *rec->rid ? (char *)rec->rid : req->reservation_id;
    ev->concert_id = req->concert_id;
    ev->user_id = req->user_id;
    ev->amount = req->amount;
    ev->status = cc_pay_state_api(rec->state);
    ev->reason = (char *)(rec->reason ? rec->reason : "");
    ev->processed_at_unix_ms = rec->updated_ms;
}

size_t cc_pay_seats(const char *csv, int32_t *out, size_t max) {
    size_t n = 0;
    for (const char *s = csv; s && *s && n < max;) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) break;
        out[n++] = (int32_t)v;
        s = *end == ',' ? end + 1 : end;
    }
    return n;
}
