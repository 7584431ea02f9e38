/* srv_sale: see srv_sale.h. */
#include "srv_sale.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "cc_log.h"
#include "concert/v1/admin.pb-c.h"
#include "concert/v1/queue.pb-c.h"
#include "srv_queue.h"
#include "srv_valid.h"

#define REC 48                 /* q:plog record: 32 bytes SHA-256(token id), 16 digits n */
#define LOG_CHUNK (REC * 8192) /* bytes of q:plog per Redis call */
#define LEFT_CHUNK (256 * 1024)
#define PER_MESSAGE 2000 /* hashes per SaleOrder message (64 KB) */

extern const unsigned char lua_queue_sale[];
extern const size_t lua_queue_sale_len;
static cc_redis_script s_sale;

static const char hexd[] = "0123456789abcdef";

static void to_hex(const unsigned char *in, size_t n, char *out) {
    for (size_t i = 0; i < n; i++) out[2 * i] = hexd[in[i] >> 4], out[2 * i + 1] = hexd[in[i] & 15];
    out[2 * n] = '\0';
}

int srv_sale_unhex(const char *hex, size_t n, unsigned char *out) {
    for (size_t i = 0; i < n; i++) {
        int v = 0;
        for (int k = 0; k < 2; k++) {
            char c = hex[2 * i + k];
            int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
            if (d < 0) return -1;
            v = v * 16 + d;
        }
        out[i] = (unsigned char)v;
    }
    return 0;
}

int srv_sale_seed_new(unsigned char seed[32], char seed_hex[65], char commit_hex[65]) {
    if (getrandom(seed, 32, 0) != 32) return -1;
    unsigned char c[32];
    SHA256(seed, 32, c);
    to_hex(seed, 32, seed_hex);
    to_hex(c, 32, commit_hex);
    return 0;
}

void srv_sale_draw(const unsigned char seed[32], const unsigned char id[16], unsigned char id_sha[32],
                   unsigned char hmac[32], char score[SRV_SALE_SCORE_MAX]) {
    unsigned char h[32];
    unsigned int hl = 32;
    SHA256(id, 16, id_sha);
    HMAC(EVP_sha256(), seed, 32, id_sha, 32, h, &hl);
    if (hmac) memcpy(hmac, h, 32);
    uint64_t top = 0;
    for (int i = 0; i < 7; i++) top = top << 8 | h[i];
    top >>= 4; /* the first 52 bits */
    snprintf(score, SRV_SALE_SCORE_MAX, "%" PRId64, (int64_t)top - ((int64_t)1 << 52));
}

void srv_sale_init(srv_app *app) { srv_queue_script_add(&s_sale, "queue_sale", lua_queue_sale, lua_queue_sale_len); }

/* ---- GetSaleProof ---- */

typedef struct {
    srv_call *call;
    char concert[SRV_MAX_ID + 1];
} proof_ctx;

static void on_proof(redisReply *r, const char *err, void *p) {
    proof_ctx *x = p;
    int64_t code = srv_int_at(r, 0);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
        srv_fail_redis(x->call, r, err);
    } else if (code == -1) {
        srv_call_finish(x->call, GRPC_STATUS_NOT_FOUND, "concert_id: no concert '%s' (an admin creates concerts)",
                        x->concert);
    } else if (code == -9) {
        srv_call_finish(x->call, GRPC_STATUS_FAILED_PRECONDITION, "concert_id: concert '%s' has no scheduled sale",
                        x->concert);
    } else if (code != 0 || r->elements < 7) {
        srv_fail_redis(x->call, r, err);
    } else {
        unsigned char commit[32], seed[32];
        Concert__V1__SaleProof pr;
        concert__v1__sale_proof__init(&pr);
        pr.concert_id = x->concert;
        const char *ch = srv_str_at(r, 1), *sh = srv_str_at(r, 2);
        if (strlen(ch) == 64 && srv_sale_unhex(ch, 32, commit) == 0) pr.commitment.data = commit, pr.commitment.len = 32;
        if (strlen(sh) == 64 && srv_sale_unhex(sh, 32, seed) == 0) pr.seed.data = seed, pr.seed.len = 32;
        pr.prequeued = srv_int_at(r, 3);
        pr.opens_at_unix_ms = srv_int_at(r, 4);
        pr.prequeue_opens_at_unix_ms = srv_int_at(r, 5);
        srv_call_reply(x->call, &pr.base);
    }
    free(x);
}

void srv_queue_sale_proof(srv_call *call) {
    const Concert__V1__GetSaleProofRequest *req = (const void *)srv_call_request(call);
    srv_app *app = srv_call_app(call);
    if (!srv_valid_id(req->concert_id)) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "concert_id: must be 1..64 characters of [A-Za-z0-9_-]");
        return;
    }
    if (srv_limit_call(call, NULL, NULL) < 0) return;
    proof_ctx *x = calloc(1, sizeof *x);
    if (!x) abort();
    x->call = call;
    snprintf(x->concert, sizeof x->concert, "%s", req->concert_id);
    /* A seed offered in case the pre-queue is open and none is drawn yet. */
    unsigned char seed[32];
    char seed_hex[65], commit_hex[65];
    if (srv_sale_seed_new(seed, seed_hex, commit_hex) < 0) seed_hex[0] = commit_hex[0] = '\0';
    OPENSSL_cleanse(seed, sizeof seed);
    srv_queue_keys k;
    srv_queue_keys_of(&k, x->concert);
    const char *args[] = {k.slot, k.prefix, x->concert, "proof", seed_hex, commit_hex};
    if (cc_redis_eval(app->redis, &s_sale, on_proof, x, 1, 6, args, NULL) < 0) {
        free(x);
        srv_fail_no_redis(call);
    }
}

/* ---- ExportSaleOrder ----
 * Reads q:plog and q:pleft in chunks (one Redis call at a time), then computes every
 * pre-queued user's HMAC and sorts them on a libuv worker thread (a million records
 * take about a second of CPU: not on the loop), then streams the order. */

typedef struct {
    unsigned char hmac[32];
    unsigned char sha[32];
} drawn;

typedef struct {
    srv_call *call;
    srv_app *app;
    char concert[SRV_MAX_ID + 1];
    int cancelled, working;
    unsigned char seed[32];
    unsigned char *log;
    size_t log_len, log_total;
    unsigned char *left;
    size_t left_len, left_total;
    drawn *out;
    size_t n_out;
    uv_work_t work;
} export_ctx;

static void export_free(export_ctx *x) {
    OPENSSL_cleanse(x->seed, sizeof x->seed);
    free(x->log);
    free(x->left);
    free(x->out);
    free(x);
}

static void export_cancel(srv_call *call) {
    export_ctx *x = srv_call_data(call);
    srv_call_set_data(call, NULL);
    srv_call_finish(call, GRPC_STATUS_CANCELLED, "cancelled");
    if (x) x->cancelled = 1; /* freed by the pending Redis reply or the worker's end */
}

/* 1 and the call finished (or gone) when the export must stop here. */
static int export_stop(export_ctx *x) {
    if (!x->cancelled) return 0;
    export_free(x);
    return 1;
}

static void export_fail(export_ctx *x, grpc_status_code code, const char *msg) {
    srv_call_set_data(x->call, NULL);
    srv_call_finish(x->call, code, "%s", msg);
    export_free(x);
}

static int cmp_drawn(const void *a, const void *b) {
    return memcmp(((const drawn *)a)->hmac, ((const drawn *)b)->hmac, 32);
}

static void export_compute(uv_work_t *w) {
    export_ctx *x = w->data;
    size_t n = x->log_len / REC;
    x->out = calloc(n ? n : 1, sizeof *x->out);
    if (!x->out) abort();
    for (size_t i = 0; i < n; i++) {
        const unsigned char *rec = x->log + i * REC;
        uint64_t num = 0;
        for (int d = 0; d < 16; d++) num = num * 10 + (uint64_t)(rec[32 + d] - '0');
        size_t byte = (size_t)(num / 8);
        if (byte < x->left_len && (x->left[byte] >> (7 - num % 8) & 1)) continue; /* left before the opening */
        drawn *o = &x->out[x->n_out++];
        memcpy(o->sha, rec, 32);
        unsigned int hl = 32;
        HMAC(EVP_sha256(), x->seed, 32, o->sha, 32, o->hmac, &hl);
    }
    qsort(x->out, x->n_out, sizeof *x->out, cmp_drawn);
}

static void export_send(uv_work_t *w, int status) {
    export_ctx *x = w->data;
    x->working = 0;
    if (export_stop(x)) return;
    size_t sent = 0;
    ProtobufCBinaryData *hashes = calloc(PER_MESSAGE, sizeof *hashes);
    if (!hashes) abort();
    do {
        size_t k = x->n_out - sent < PER_MESSAGE ? x->n_out - sent : PER_MESSAGE;
        for (size_t i = 0; i < k; i++) hashes[i].data = x->out[sent + i].sha, hashes[i].len = 32;
        Concert__V1__SaleOrder m;
        concert__v1__sale_order__init(&m);
        m.concert_id = x->concert;
        m.first_place = (int64_t)sent + 1;
        m.n_token_id_sha256 = k;
        m.token_id_sha256 = hashes;
        m.seed.data = x->seed, m.seed.len = 32;
        m.prequeued = (int64_t)x->n_out;
        srv_call_send(x->call, &m.base);
        sent += k;
    } while (sent < x->n_out);
    free(hashes);
    CC_INFO("sale_order_exported", "concert=%s prequeued=%zu", x->concert, x->n_out);
    srv_call_set_data(x->call, NULL);
    srv_call_finish(x->call, GRPC_STATUS_OK, "%s", "");
    export_free(x);
}

static void read_more(export_ctx *x);

/* Appends a reply's chunk (element `at`, of `total` bytes in all, element `at` + 1) to
 * *buf; 1 if more is to be read. */
static int take_chunk(const redisReply *r, size_t at, unsigned char **buf, size_t *len, size_t *total) {
    const redisReply *chunk = r->element[at];
    *total = (size_t)srv_int_at(r, at + 1);
    if (!*buf) {
        *buf = malloc(*total ? *total : 1);
        if (!*buf) abort();
    }
    if (chunk->type == REDIS_REPLY_STRING && *len + chunk->len <= *total) {
        memcpy(*buf + *len, chunk->str, chunk->len);
        *len += chunk->len;
    }
    return *len < *total && chunk->len > 0;
}

/* The Redis failure of a reply: the export ends with its status. */
static void fail_reply(export_ctx *x, const redisReply *r, const char *err) {
    char msg[256];
    grpc_status_code code = srv_redis_status(r, err, msg, sizeof msg);
    export_fail(x, code == GRPC_STATUS_OK ? GRPC_STATUS_INTERNAL : code, msg);
}

static void on_left(redisReply *r, const char *err, void *p) {
    export_ctx *x = p;
    if (export_stop(x)) return;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 3 || srv_int_at(r, 0) != 0) {
        fail_reply(x, r, err);
        return;
    }
    if (take_chunk(r, 1, &x->left, &x->left_len, &x->left_total)) {
        read_more(x);
        return;
    }
    x->working = 1;
    x->work.data = x;
    uv_queue_work(x->app->loop, &x->work, export_compute, export_send);
}

static void on_log(redisReply *r, const char *err, void *p) {
    export_ctx *x = p;
    if (export_stop(x)) return;
    int64_t code = srv_int_at(r, 0);
    if (r && r->type == REDIS_REPLY_ARRAY && code == -1) {
        char msg[160];
        snprintf(msg, sizeof msg, "concert_id: no concert '%s'", x->concert);
        export_fail(x, GRPC_STATUS_NOT_FOUND, msg);
        return;
    }
    if (r && r->type == REDIS_REPLY_ARRAY && code == -9) {
        export_fail(x, GRPC_STATUS_FAILED_PRECONDITION, "concert_id: the concert has no scheduled sale");
        return;
    }
    if (r && r->type == REDIS_REPLY_ARRAY && code == -8) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "concert_id: the sale opens at %" PRId64 " ms (Unix); the order is drawn and exported from then on",
                 srv_int_at(r, 1));
        export_fail(x, GRPC_STATUS_FAILED_PRECONDITION, msg);
        return;
    }
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 6 || code != 0 ||
        srv_sale_unhex(srv_str_at(r, 3), 32, x->seed) < 0) {
        fail_reply(x, r, err);
        return;
    }
    if (take_chunk(r, 4, &x->log, &x->log_len, &x->log_total)) {
        read_more(x);
        return;
    }
    x->log_len -= x->log_len % REC;
    read_more(x); /* then the left bitmap */
}

static void read_more(export_ctx *x) {
    srv_queue_keys k;
    srv_queue_keys_of(&k, x->concert);
    char off[24], len[24];
    int logging = !x->log || x->log_len < x->log_total;
    snprintf(off, sizeof off, "%zu", logging ? x->log_len : x->left_len);
    snprintf(len, sizeof len, "%d", logging ? LOG_CHUNK : LEFT_CHUNK);
    const char *args[] = {k.slot, k.prefix, x->concert, logging ? "log" : "left", off, len};
    /* Chunks of the sale's log and bitmap: the bulk lane. */
    if (cc_redis_eval_bulk(x->app->redis, &s_sale, logging ? on_log : on_left, x, 1, 6, args, NULL) < 0)
        export_fail(x, GRPC_STATUS_UNAVAILABLE, "redis unavailable");
}

void srv_admin_export_sale(srv_call *call) {
    const Concert__V1__ExportSaleOrderRequest *req = (const void *)srv_call_request(call);
    if (srv_auth_admin(call) < 0) return;
    if (!srv_valid_id(req->concert_id)) {
        srv_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "concert_id: must be 1..64 characters of [A-Za-z0-9_-]");
        return;
    }
    export_ctx *x = calloc(1, sizeof *x);
    if (!x) abort();
    x->call = call;
    x->app = srv_call_app(call);
    snprintf(x->concert, sizeof x->concert, "%s", req->concert_id);
    srv_call_set_data(call, x);
    srv_call_on_cancel(call, export_cancel);
    read_more(x);
}
