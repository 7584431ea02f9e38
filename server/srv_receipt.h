/* srv_receipt: the server's admission-receipt signing key and its publication.
 *
 * The key is an Ed25519 private key from --signing-key FILE (PEM, e.g. `openssl genpkey
 * -algorithm ed25519`), or one generated in memory at start-up (logged as a warning:
 * its receipts stop verifying once the server is gone and its key has aged out).
 * Every server publishes its public key in the global hash `cc:keys` (key id ->
 * "<64 hex digits of the public key>|<not_after ms>") when Redis comes up and every
 * minute after, with not_after = now + the longest a receipt can live (an ACTIVE
 * token's TTL is at most a day) + two minutes; GetSigningKeys lists every key whose
 * not_after has not passed, so a rotated or stopped server's receipts keep verifying
 * until they have expired. The receipt format is in common/cc_receipt.h.
 * Must not: log or publish the private key. */
#ifndef SRV_RECEIPT_H
#define SRV_RECEIPT_H

#include <stddef.h>
#include <stdint.h>

#include "srv_app.h"

/** Loads or generates the key and starts publishing it. 0, or -1 with the reason
 * (naming --signing-key) in err. */
int srv_receipts_init(srv_app *app, char *err, size_t errlen);
void srv_receipts_shutdown(srv_app *app);
/** Frees the key once the loop has stopped. */
void srv_receipts_free(srv_app *app);

/** Signs a receipt for an ACTIVE token into out[CC_RECEIPT_MAX]; its length, or 0. */
size_t srv_receipt_make(srv_app *app, const char *concert, const unsigned char token_id[16], const char *user,
                        int64_t admitted_ms, int64_t expires_ms, uint8_t *out);

/** This server's key id (16 hex digits). */
const char *srv_receipt_key_id(const srv_app *app);

#endif
