/* srv_sale: scheduled sales with a verifiable shuffle (QueuePolicy.sale_opens_at /
 * prequeue_opens_at): the draw's arithmetic, QueueService.GetSaleProof and
 * AdminService.ExportSaleOrder. Redis keys (q:sale, q:plog, q:pleft) and the join
 * logic are the queue's (server/lua/queue_sale.lua, queue_issue.lua; docs/DATA.md).
 *
 * The draw: when the pre-queue opens a 32-byte seed is drawn from the CSPRNG and its
 * commitment SHA-256(seed) published; a pre-queued token's place is the rank of
 * HMAC-SHA256(key = seed, message = SHA-256(token id)) among all of them, smallest
 * first (the token id: the 16 bytes the token's last 32 hex digits spell). The server
 * computes it when the user joins the pre-queue and files the user under its first 52
 * bits (a join whose 52 bits tie another's gets a fresh token id, so the order in Redis
 * is the order of the full HMACs); the seed is revealed once the sale opens, and
 * ExportSaleOrder lists every pre-queued SHA-256(token id) in drawn order for anyone to
 * recompute. Must not: reveal the seed before the sale opens. */
#ifndef SRV_SALE_H
#define SRV_SALE_H

#include <stddef.h>
#include <stdint.h>

#include "srv_app.h"

#define SRV_SALE_SCORE_MAX 24

/** A fresh seed from the CSPRNG into seed[32] with its hex (65) and commitment hex
 * (SHA-256 of the 32 bytes, 65); 0 or -1 (no randomness). */
int srv_sale_seed_new(unsigned char seed[32], char seed_hex[65], char commit_hex[65]);

/** The draw of token id `id` under `seed`: SHA-256(id) into id_sha[32], the HMAC into
 * hmac[32] (NULL: not wanted) and the Redis score (the HMAC's first 52 bits minus 2^52,
 * so pre-queued users sort before every later join) into score[SRV_SALE_SCORE_MAX]. */
void srv_sale_draw(const unsigned char seed[32], const unsigned char id[16], unsigned char id_sha[32],
                   unsigned char hmac[32], char score[SRV_SALE_SCORE_MAX]);

/** Decodes 2n lowercase hex digits into out[n]; 0 or -1. */
int srv_sale_unhex(const char *hex, size_t n, unsigned char *out);

/** Registers the sale script. */
void srv_sale_init(srv_app *app);

#endif
