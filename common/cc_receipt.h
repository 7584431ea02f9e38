/* cc_receipt: signed admission receipts (QueueStatus.admission_receipt), shared by
 * concert-server (signs), concertctl and the tests (verify).
 *
 * A receipt is the bytes of a serialized concert.v1.AdmissionReceipt followed by the
 * 64-byte Ed25519 signature (RFC 8032, pure Ed25519) over exactly those bytes:
 *
 *   [ AdmissionReceipt, protobuf, N bytes ][ signature, 64 bytes ]
 *
 * The message is written with every field present, in field order (so N is fixed by
 * the concert id's length: N = 2 + len(concert_id) + 18 + 34 + 34 + 7 + 7, the two
 * times taking 6 varint bytes each from 1971 to 2109):
 *   0x0a len concert_id    (field 1, string)
 *   0x12 0x10 key_id       (field 2, 16 lowercase hex digits: SHA-256(public key)[0..8))
 *   0x1a 0x20 32 bytes     (field 3, SHA-256 of the token id: the 16 bytes the token's
 *                           last 32 hex digits spell)
 *   0x22 0x20 32 bytes     (field 4, SHA-256 of the user id's UTF-8 bytes)
 *   0x28 varint            (field 5, admitted_at_unix_ms)
 *   0x30 varint            (field 6, expires_at_unix_ms)
 * A verifier takes the last 64 bytes as the signature, checks it over the rest with the
 * key GetSigningKeys lists under key_id, then parses the rest as AdmissionReceipt and
 * checks expires_at, the token and the user. Pure functions over OpenSSL; no state. */
#ifndef CC_RECEIPT_H
#define CC_RECEIPT_H

#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

#include "concert/v1/queue.pb-c.h"

#define CC_RECEIPT_SIG_LEN 64
#define CC_RECEIPT_MAX 512 /* a receipt is at most this long (concert ids are <= 64 bytes) */

/** The key id of an Ed25519 public key: hex of the first 8 bytes of SHA-256(pub), into
 * out[17]. */
void cc_receipt_key_id(const unsigned char pub[32], char out[17]);

/** SHA-256 of `len` bytes into out[32]. */
void cc_receipt_sha256(const void *data, size_t len, unsigned char out[32]);

/** Builds and signs a receipt with `key` (an Ed25519 private key; borrowed) into
 * out[CC_RECEIPT_MAX]. Returns its length, or 0 on failure. */
size_t cc_receipt_sign(EVP_PKEY *key, const char *key_id, const char *concert_id, const unsigned char token_id[16],
                       const char *user_id, int64_t admitted_ms, int64_t expires_ms, uint8_t *out);

/** Parses the statement of a receipt without checking the signature (to find its
 * key_id): 0 and *out (free with protobuf_c_message_free_unpacked), or -1 when it is
 * not a receipt. */
int cc_receipt_parse(const uint8_t *receipt, size_t len, Concert__V1__AdmissionReceipt **out);

/** Checks the signature with the raw 32-byte public key: 0 valid, -1 not. */
int cc_receipt_verify(const uint8_t *receipt, size_t len, const unsigned char pub[32]);

#endif
