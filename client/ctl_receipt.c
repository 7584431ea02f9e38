/* ctl_receipt: concertctl's admission-receipt and sale-proof commands: `receipt verify`
 * (checks a receipt offline against the server's published keys or a given public
 * key), `receipt keys` (QueueService.GetSigningKeys) and `sale proof`
 * (QueueService.GetSaleProof, with the commitment checked against the revealed seed).
 * The receipt format and its check are common/cc_receipt's; argv, metadata, deadlines
 * and exit statuses are ctl_out's and concertctl.c's business. */
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "cc_receipt.h"
#include "concert/v1/queue.pb-c.h"
#include "ctl.h"

#define QS "/concert.v1.QueueService/"

static int64_t now_ms(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void put_hex(FILE *out, const uint8_t *d, size_t n) {
    for (size_t i = 0; i < n; i++) fprintf(out, "%02x", d[i]);
}

static int unhex(const char *s, uint8_t *out, size_t n) {
    if (strlen(s) != 2 * n) return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1) return -1;
        out[i] = (uint8_t)v;
    }
    return 0;
}

/* Standard or URL-safe base64, padding optional; returns the length or -1. */
static long unbase64(const char *s, uint8_t *out, size_t cap) {
    size_t n = 0;
    unsigned acc = 0;
    int bits = 0;
    for (; *s && *s != '='; s++) {
        int v;
        char c = *s;
        if (c >= 'A' && c <= 'Z') v = c - 'A';
        else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
        else if (c >= '0' && c <= '9') v = c - '0' + 52;
        else if (c == '+' || c == '-') v = 62;
        else if (c == '/' || c == '_') v = 63;
        else if (c == '\n' || c == ' ') continue;
        else return -1;
        acc = acc << 6 | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n >= cap) return -1;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    return (long)n;
}

/* ---- receipt keys ---- */

static void human_keys(const ProtobufCMessage *m, FILE *out) {
    const Concert__V1__SigningKeys *k = (const void *)m;
    for (size_t i = 0; i < k->n_keys; i++) {
        char t[48];
        ctl_fmt_time_ms(t, sizeof t, k->keys[i]->not_after_unix_ms);
        fprintf(out, "%s ", k->keys[i]->key_id);
        put_hex(out, k->keys[i]->public_key.data, k->keys[i]->public_key.len);
        fprintf(out, " (until %s)\n", t);
    }
}

static int run_keys(ctl_ctx *ctx) {
    Concert__V1__GetSigningKeysRequest req;
    concert__v1__get_signing_keys_request__init(&req);
    ProtobufCMessage *resp;
    int rc = ctl_unary(ctx, QS "GetSigningKeys", &req.base, &concert__v1__signing_keys__descriptor, &resp);
    if (rc) return rc;
    ctl_print(ctx, resp, human_keys);
    protobuf_c_message_free_unpacked(resp, NULL);
    return CTL_EXIT_OK;
}

/* ---- receipt verify ---- */

static const char *v_receipt, *v_user, *v_pub;

static const cc_opt verify_opts[] = {
    {"receipt", NULL, CC_OPT_STR, &v_receipt, "BASE64",
     "the receipt (QueueStatus.admission_receipt, as --json prints it); without it, --token's is fetched", 0, 0},
    {"user", NULL, CC_OPT_STR, &v_user, "USER", "also check that the receipt names this user", 0, 0},
    {"public-key", NULL, CC_OPT_STR, &v_pub, "HEX",
     "verify with this Ed25519 public key (64 hex digits) instead of the server's GetSigningKeys", 0, 0},
    {0},
};

/* The verdict, as one line of text or a JSON object. */
static int verdict(ctl_ctx *ctx, int ok, const char *why, const Concert__V1__AdmissionReceipt *r) {
    if (ctx->json) {
        fprintf(stdout, "{\"valid\":%s,\"reason\":", ok ? "true" : "false");
        ctl_json_string(stdout, why, strlen(why));
        if (r) {
            fputs(",\"receipt\":", stdout);
            ctl_json(stdout, &r->base);
        }
        fputs("}\n", stdout);
    } else if (ok) {
        char a[48], b[48];
        ctl_fmt_time_ms(a, sizeof a, r->admitted_at_unix_ms);
        ctl_fmt_time_ms(b, sizeof b, r->expires_at_unix_ms);
        fprintf(stdout, "receipt valid: concert %s, admitted %s, expires %s, key %s\n", r->concert_id, a, b, r->key_id);
    } else {
        fprintf(stdout, "receipt NOT valid: %s\n", why);
    }
    fflush(stdout);
    return ok ? CTL_EXIT_OK : CTL_EXIT_NEGATIVE;
}

static int run_verify(ctl_ctx *ctx) {
    uint8_t buf[CC_RECEIPT_MAX + 16];
    long len = -1;
    int rc;
    const char *token = ctx->token && *ctx->token ? ctx->token : NULL;
    if (v_receipt) {
        len = unbase64(v_receipt, buf, sizeof buf);
        if (len < 0) return ctl_usage_error(ctx, "--receipt: not base64 (or longer than a receipt)");
    } else if (token) {
        Concert__V1__GetQueueStatusRequest req;
        concert__v1__get_queue_status_request__init(&req);
        req.token = (char *)token;
        ProtobufCMessage *resp;
        if ((rc = ctl_unary(ctx, QS "GetQueueStatus", &req.base, &concert__v1__queue_status__descriptor, &resp)))
            return rc;
        const Concert__V1__QueueStatus *s = (const void *)resp;
        if (s->admission_receipt.len > CC_RECEIPT_MAX) s = NULL;
        else len = (long)s->admission_receipt.len, memcpy(buf, s->admission_receipt.data, s->admission_receipt.len);
        protobuf_c_message_free_unpacked(resp, NULL);
        if (len <= 0) return verdict(ctx, 0, "the token is not ACTIVE: no receipt", NULL);
    } else {
        return ctl_usage_error(ctx, "give --receipt BASE64 or --token TOKEN");
    }
    Concert__V1__AdmissionReceipt *r = NULL;
    if (cc_receipt_parse(buf, (size_t)len, &r) < 0) return verdict(ctx, 0, "not a receipt", NULL);
    uint8_t pub[32];
    int have = 0;
    if (v_pub) {
        if (unhex(v_pub, pub, 32) < 0) {
            protobuf_c_message_free_unpacked(&r->base, NULL);
            return ctl_usage_error(ctx, "--public-key: expected 64 hex digits");
        }
        have = 1;
    } else {
        Concert__V1__GetSigningKeysRequest req;
        concert__v1__get_signing_keys_request__init(&req);
        ProtobufCMessage *resp;
        if ((rc = ctl_unary(ctx, QS "GetSigningKeys", &req.base, &concert__v1__signing_keys__descriptor, &resp))) {
            protobuf_c_message_free_unpacked(&r->base, NULL);
            return rc;
        }
        const Concert__V1__SigningKeys *k = (const void *)resp;
        for (size_t i = 0; i < k->n_keys; i++)
            if (!strcmp(k->keys[i]->key_id, r->key_id) && k->keys[i]->public_key.len == 32) {
                memcpy(pub, k->keys[i]->public_key.data, 32);
                have = 1;
            }
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    const char *why = "signature valid";
    int ok = 1;
    uint8_t h[32];
    if (!have) ok = 0, why = "no published key has this key id";
    else if (cc_receipt_verify(buf, (size_t)len, pub) < 0) ok = 0, why = "bad signature";
    else if (r->expires_at_unix_ms <= now_ms()) ok = 0, why = "expired";
    if (ok && token) {
        const char *hex = token + strlen(token) - 32;
        uint8_t id[16];
        if (strlen(token) < 32 || unhex(hex, id, 16) < 0) ok = 0, why = "--token: not a token";
        else if (SHA256(id, 16, h), r->token_id_sha256.len != 32 || memcmp(h, r->token_id_sha256.data, 32))
            ok = 0, why = "the receipt is for another token";
    }
    if (ok && v_user) {
        SHA256((const uint8_t *)v_user, strlen(v_user), h);
        if (r->user_id_sha256.len != 32 || memcmp(h, r->user_id_sha256.data, 32))
            ok = 0, why = "the receipt is for another user";
    }
    rc = verdict(ctx, ok, why, r);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return rc;
}

/* ---- sale proof ---- */

static const char *proof_concert;

static const cc_opt proof_opts[] = {
    {"concert", NULL, CC_OPT_STR, &proof_concert, "ID", "the concert", 0, 0},
    {0},
};

static void human_proof(const ProtobufCMessage *m, FILE *out) {
    const Concert__V1__SaleProof *p = (const void *)m;
    char a[48], b[48];
    ctl_fmt_time_ms(a, sizeof a, p->opens_at_unix_ms);
    fprintf(out, "sale of concert %s opens at %s", p->concert_id, a);
    if (p->prequeue_opens_at_unix_ms) {
        ctl_fmt_time_ms(b, sizeof b, p->prequeue_opens_at_unix_ms);
        fprintf(out, " (pre-queue from %s)", b);
    }
    fputc('\n', out);
    fputs("  commitment  ", out);
    if (p->commitment.len) put_hex(out, p->commitment.data, p->commitment.len);
    else fputs("(not drawn yet: the pre-queue has not opened)", out);
    fputs("\n  seed        ", out);
    if (p->seed.len) {
        uint8_t h[32];
        SHA256(p->seed.data, p->seed.len, h);
        put_hex(out, p->seed.data, p->seed.len);
        fprintf(out, "  (SHA-256 matches the commitment: %s)", p->commitment.len == 32 && !memcmp(h, p->commitment.data, 32)
                                                              ? "yes" : "NO");
    } else {
        fputs("(revealed when the sale opens)", out);
    }
    fprintf(out, "\n  prequeued   %lld\n", (long long)p->prequeued);
}

static int run_proof(ctl_ctx *ctx) {
    int rc;
    if ((rc = ctl_require(ctx, "concert", proof_concert))) return rc;
    Concert__V1__GetSaleProofRequest req;
    concert__v1__get_sale_proof_request__init(&req);
    req.concert_id = (char *)proof_concert;
    ProtobufCMessage *resp;
    if ((rc = ctl_unary(ctx, QS "GetSaleProof", &req.base, &concert__v1__sale_proof__descriptor, &resp))) return rc;
    const Concert__V1__SaleProof *p = (const void *)resp;
    int bad = 0;
    if (p->seed.len) {
        uint8_t h[32];
        SHA256(p->seed.data, p->seed.len, h);
        bad = p->commitment.len != 32 || memcmp(h, p->commitment.data, 32) != 0;
    }
    ctl_print(ctx, resp, human_proof);
    protobuf_c_message_free_unpacked(resp, NULL);
    if (bad) {
        fprintf(stderr, "concertctl: sale proof: the revealed seed does not match the commitment\n");
        return CTL_EXIT_NEGATIVE;
    }
    return CTL_EXIT_OK;
}

/* ---- the table ---- */

const ctl_cmd ctl_receipt_cmds[] = {
    {"receipt verify", "check an admission receipt offline: signature, expiry, token and user",
     "[--token TOKEN | --receipt BASE64] [--user USER] [--public-key HEX]",
     "Verifies the Ed25519 signature of an admission receipt (QueueStatus.admission_receipt:\n"
     "the serialized AdmissionReceipt followed by 64 signature bytes) with the key the\n"
     "server publishes under the receipt's key id (QueueService.GetSigningKeys), or with\n"
     "--public-key, then that it has not expired and, with --token / --user, that it is\n"
     "that token's and that user's. Without --receipt, the receipt of --token is fetched\n"
     "(GetQueueStatus; the token must be ACTIVE). Exit 0 valid, 1 not valid (the reason is\n"
     "printed). Byte layout: common/cc_receipt.h, README \"Admission receipts\".\n",
     verify_opts, 0, 0, run_verify},
    {"receipt keys", "list the public keys that sign admission receipts", "",
     "Calls QueueService.GetSigningKeys: key id, raw Ed25519 public key (hex) and the time\n"
     "until which receipts it signed may still be valid. Every server's key is listed,\n"
     "also those of servers stopped or rotated, until their receipts have expired.\n",
     NULL, 0, 0, run_keys},
    {"sale proof", "a scheduled sale's commitment, and its seed once the sale opened", "--concert ID",
     "Calls QueueService.GetSaleProof: the commitment (SHA-256 of the shuffle's seed,\n"
     "published when the pre-queue opens), the seed (revealed when the sale opens; checked\n"
     "against the commitment here: exit 1 if it does not match) and how many users were\n"
     "pre-queued. With `admin sale export`, anyone can recompute the order\n"
     "(client/python/verify_sale.py).\n",
     proof_opts, 0, 0, run_proof},
    {0},
};
