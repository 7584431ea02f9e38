/* srv_ident: identity mode (--identity-key FILE). Verifies the compact JWT (RFC 7519)
 * a caller sends in `x-user-assertion`: signed with the configured key (an Ed25519
 * public key in PEM: alg EdDSA; or an HMAC secret of at least 32 bytes: alg HS256),
 * `alg` pinned to that key type (anything else, "none" included, is refused), `exp`
 * required and in the future, `nbf` (if any) in the past, `sub` the user id. Built on
 * OpenSSL's primitives (HMAC, EVP_DigestVerify) and a small strict JSON reader; pure
 * apart from reading the key file, unit tested and fuzzed. Must not: log assertions
 * or keys, or accept a token whose header it does not fully understand (`crit`). */
#ifndef SRV_IDENT_H
#define SRV_IDENT_H

#include <stddef.h>
#include <stdint.h>

typedef struct srv_ident srv_ident;

#define SRV_IDENT_MAX_JWT 8192

/** Loads the key from `path`: a PEM "PUBLIC KEY" holding an Ed25519 key, or else the
 * file's bytes as an HS256 secret (one trailing newline dropped; at least 32 bytes).
 * Returns 0 and a new verifier (free with srv_ident_free), or -1 with err. */
int srv_ident_load(srv_ident **out, const char *path, char *err, size_t errlen);
/** The same from bytes in memory (tests). */
int srv_ident_from_bytes(srv_ident **out, const void *data, size_t len, char *err, size_t errlen);
void srv_ident_free(srv_ident *id);

/** "EdDSA" or "HS256": the one `alg` this key accepts. */
const char *srv_ident_alg(const srv_ident *id);

/** Verifies `jwt` (len bytes) at unix time now_s. Returns 0 and the `sub` claim in
 * sub[sublen], or -1 with a short reason in err ("bad signature", "expired", ...). */
int srv_ident_verify(const srv_ident *id, const char *jwt, size_t len, int64_t now_s, char *sub, size_t sublen,
                     char *err, size_t errlen);

#endif
