/* srv_receipt: see srv_receipt.h. Also QueueService.GetSigningKeys. */
#include "srv_receipt.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "cc_log.h"
#include "cc_receipt.h"

#define KEYS_KEY "cc:keys"
#define PUBLISH_EVERY_MS (60 * 1000)
#define RECEIPT_MAX_LIFE_MS ((int64_t)86400 * 1000) /* the longest active_ttl_ms a policy may set */
#define KEY_MARGIN_MS (2 * PUBLISH_EVERY_MS)
#define MAX_KEYS 256

struct srv_receipts {
    EVP_PKEY *key;
    unsigned char pub[32];
    char kid[17];
    uv_timer_t timer;
    int timer_live;
    uint64_t published_at; /* loop ms of the last successful publication, 0 = never */
    int publishing;
};

static int64_t wall_ms(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static EVP_PKEY *load_key(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "--signing-key %s: %s", path, strerror(errno));
        return NULL;
    }
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (!k) {
        snprintf(err, errlen, "--signing-key %s: not a PEM private key (make one: openssl genpkey -algorithm ed25519)",
                 path);
        return NULL;
    }
    if (EVP_PKEY_id(k) != EVP_PKEY_ED25519) {
        snprintf(err, errlen, "--signing-key %s: not an Ed25519 key", path);
        EVP_PKEY_free(k);
        return NULL;
    }
    return k;
}

static void on_published(redisReply *r, const char *err, void *p) {
    srv_app *app = p;
    srv_receipts *rc = app->receipts;
    if (!rc) return;
    rc->publishing = 0;
    if (r && r->type != REDIS_REPLY_ERROR) {
        if (!rc->published_at) CC_INFO("signing_key_published", "key_id=%s", rc->kid);
        rc->published_at = uv_now(app->loop);
    } else {
        CC_WARN("signing_key_publish_failed", "key_id=%s error=\"%s\"", rc->kid, r ? r->str : err);
    }
}

static void on_timer(uv_timer_t *t) {
    srv_app *app = t->data;
    srv_receipts *rc = app->receipts;
    uint64_t now = uv_now(app->loop);
    if (rc->publishing || !cc_redis_is_up(app->redis)) return;
    if (rc->published_at && now - rc->published_at < PUBLISH_EVERY_MS) return;
    char val[96];
    char hex[65];
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", rc->pub[i]);
    snprintf(val, sizeof val, "%s|%" PRId64, hex, (int64_t)(wall_ms() + RECEIPT_MAX_LIFE_MS + KEY_MARGIN_MS));
    if (cc_redis_command(app->redis, on_published, app, "HSET " KEYS_KEY " %s %s", rc->kid, val) == 0)
        rc->publishing = 1;
}

int srv_receipts_init(srv_app *app, char *err, size_t errlen) {
    srv_receipts *rc = calloc(1, sizeof *rc);
    if (!rc) abort();
    const char *path = app->cfg.signing_key;
    if (path && *path) {
        rc->key = load_key(path, err, errlen);
        if (!rc->key) {
            free(rc);
            return -1;
        }
    } else {
        rc->key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
        if (!rc->key) {
            snprintf(err, errlen, "cannot generate an Ed25519 signing key");
            free(rc);
            return -1;
        }
    }
    size_t pl = 32;
    if (EVP_PKEY_get_raw_public_key(rc->key, rc->pub, &pl) != 1 || pl != 32) {
        snprintf(err, errlen, "--signing-key: cannot read the public half of the key");
        EVP_PKEY_free(rc->key);
        free(rc);
        return -1;
    }
    cc_receipt_key_id(rc->pub, rc->kid);
    if (path && *path)
        CC_INFO("signing_key", "key_id=%s file=%s", rc->kid, path);
    else
        CC_WARN("signing_key_generated",
                "key_id=%s note=\"no --signing-key: receipts are signed with a key made now, lost when this "
                "server stops (they verify until they expire)\"", rc->kid);
    app->receipts = rc;
    uv_timer_init(app->loop, &rc->timer);
    rc->timer.data = app;
    rc->timer_live = 1;
    uv_timer_start(&rc->timer, on_timer, 0, 1000);
    return 0;
}

static void on_closed(uv_handle_t *h) {}

void srv_receipts_shutdown(srv_app *app) {
    srv_receipts *rc = app->receipts;
    if (rc && rc->timer_live) {
        uv_close((uv_handle_t *)&rc->timer, on_closed);
        rc->timer_live = 0;
    }
}

void srv_receipts_free(srv_app *app) {
    srv_receipts *rc = app->receipts;
    if (!rc) return;
    EVP_PKEY_free(rc->key);
    free(rc);
    app->receipts = NULL;
}

size_t srv_receipt_make(srv_app *app, const char *concert, const unsigned char token_id[16], const char *user,
                        int64_t admitted_ms, int64_t expires_ms, uint8_t *out) {
    srv_receipts *rc = app->receipts;
    if (!rc) return 0;
    return cc_receipt_sign(rc->key, rc->kid, concert, token_id, user, admitted_ms, expires_ms, out);
}

const char *srv_receipt_key_id(const srv_app *app) { return app->receipts ? app->receipts->kid : ""; }

/* ---- GetSigningKeys ---- */

static int unhex32(const char *s, unsigned char out[32]) {
    for (int i = 0; i < 32; i++) {
        unsigned v = 0;
        for (int k = 0; k < 2; k++) {
            char c = s[2 * i + k];
            int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
            if (d < 0) return -1;
            v = v * 16 + (unsigned)d;
        }
        out[i] = (unsigned char)v;
    }
    return 0;
}

static void ignore(redisReply *r, const char *err, void *p) {}

static void on_keys(redisReply *r, const char *err, void *p) {
    srv_call *call = p;
    srv_app *app = srv_call_app(call);
    srv_receipts *rc = app->receipts;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        srv_fail_redis(call, r, err);
        return;
    }
    size_t n = r->elements / 2;
    if (n > MAX_KEYS) n = MAX_KEYS;
    Concert__V1__SigningKey *items = calloc(n + 1, sizeof *items);
    Concert__V1__SigningKey **ptrs = calloc(n + 1, sizeof *ptrs);
    unsigned char(*pubs)[32] = calloc(n + 1, 32);
    if (!items || !ptrs || !pubs) abort();
    int64_t now = wall_ms();
    size_t k = 0;
    int have_own = 0;
    for (size_t i = 0; i < n; i++) {
        const char *kid = srv_str_at(r, 2 * i), *v = srv_str_at(r, 2 * i + 1);
        const char *bar = strchr(v, '|');
        int64_t not_after = bar ? strtoll(bar + 1, NULL, 10) : 0;
        if (strlen(kid) != 16 || !bar || bar - v != 64 || unhex32(v, pubs[k]) < 0) continue;
        if (not_after < now) {
            cc_redis_command(app->redis, ignore, NULL, "HDEL " KEYS_KEY " %s", kid); /* aged out */
            continue;
        }
        concert__v1__signing_key__init(&items[k]);
        items[k].key_id = (char *)kid;
        items[k].public_key.data = pubs[k], items[k].public_key.len = 32;
        items[k].not_after_unix_ms = not_after;
        if (rc && !strcmp(kid, rc->kid)) have_own = 1;
        ptrs[k] = &items[k];
        k++;
    }
    if (rc && !have_own) { /* not published yet (Redis just came up): ours all the same */
        concert__v1__signing_key__init(&items[k]);
        items[k].key_id = rc->kid;
        items[k].public_key.data = rc->pub, items[k].public_key.len = 32;
        items[k].not_after_unix_ms = now + RECEIPT_MAX_LIFE_MS + KEY_MARGIN_MS;
        ptrs[k] = &items[k];
        k++;
    }
    Concert__V1__SigningKeys resp;
    concert__v1__signing_keys__init(&resp);
    resp.n_keys = k;
    resp.keys = ptrs;
    srv_call_reply(call, &resp.base);
    free(items);
    free(ptrs);
    free(pubs);
}

void srv_receipt_keys(srv_call *call) {
    srv_app *app = srv_call_app(call);
    if (srv_limit_call(call, NULL, NULL) < 0) return;
    if (cc_redis_command(app->redis, on_keys, call, "HGETALL " KEYS_KEY) < 0) srv_fail_no_redis(call);
}
