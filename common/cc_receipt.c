/* cc_receipt: see cc_receipt.h. */
#include "cc_receipt.h"

#include <openssl/sha.h>
#include <string.h>

void cc_receipt_sha256(const void *data, size_t len, unsigned char out[32]) { SHA256(data, len, out); }

void cc_receipt_key_id(const unsigned char pub[32], char out[17]) {
    static const char hex[] = "0123456789abcdef";
    unsigned char h[32];
    SHA256(pub, 32, h);
    for (int i = 0; i < 8; i++) out[2 * i] = hex[h[i] >> 4], out[2 * i + 1] = hex[h[i] & 15];
    out[16] = '\0';
}

size_t cc_receipt_sign(EVP_PKEY *key, const char *key_id, const char *concert_id, const unsigned char token_id[16],
                       const char *user_id, int64_t admitted_ms, int64_t expires_ms, uint8_t *out) {
    unsigned char th[32], uh[32];
    SHA256(token_id, 16, th);
    SHA256((const unsigned char *)user_id, strlen(user_id), uh);
    Concert__V1__AdmissionReceipt r;
    concert__v1__admission_receipt__init(&r);
    r.concert_id = (char *)concert_id;
    r.key_id = (char *)key_id;
    r.token_id_sha256.data = th, r.token_id_sha256.len = 32;
    r.user_id_sha256.data = uh, r.user_id_sha256.len = 32;
    r.admitted_at_unix_ms = admitted_ms;
    r.expires_at_unix_ms = expires_ms;
    size_t n = concert__v1__admission_receipt__get_packed_size(&r);
    if (n + CC_RECEIPT_SIG_LEN > CC_RECEIPT_MAX) return 0;
    concert__v1__admission_receipt__pack(&r, out);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t sl = CC_RECEIPT_SIG_LEN;
    int ok = ctx && EVP_DigestSignInit(ctx, NULL, NULL, NULL, key) == 1 &&
             EVP_DigestSign(ctx, out + n, &sl, out, n) == 1 && sl == CC_RECEIPT_SIG_LEN;
    EVP_MD_CTX_free(ctx);
    return ok ? n + CC_RECEIPT_SIG_LEN : 0;
}

int cc_receipt_parse(const uint8_t *receipt, size_t len, Concert__V1__AdmissionReceipt **out) {
    *out = NULL;
    if (len <= CC_RECEIPT_SIG_LEN) return -1;
    *out = concert__v1__admission_receipt__unpack(NULL, len - CC_RECEIPT_SIG_LEN, receipt);
    return *out ? 0 : -1;
}

int cc_receipt_verify(const uint8_t *receipt, size_t len, const unsigned char pub[32]) {
    if (len <= CC_RECEIPT_SIG_LEN) return -1;
    EVP_PKEY *k = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, 32);
    if (!k) return -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t n = len - CC_RECEIPT_SIG_LEN;
    int ok = ctx && EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, k) == 1 &&
             EVP_DigestVerify(ctx, receipt + n, CC_RECEIPT_SIG_LEN, receipt, n) == 1;
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(k);
    return ok ? 0 : -1;
}
