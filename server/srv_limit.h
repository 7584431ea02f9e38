/* srv_limit: in-process token buckets keyed by a string (a user, a token, a peer
 * address), for the per-user and per-peer rate limits of IssueToken, GetQueueStatus,
 * ListSeats and Charge. Each server instance limits on its own (N servers admit N
 * times the rate; the limits protect a server and Redis from one caller, they are not
 * a quota). Memory is bounded: a bucket that has refilled is indistinguishable from
 * no bucket and is dropped by srv_limit_sweep; past `max_keys` live buckets new keys
 * are not tracked (fail open, logged once) rather than growing without bound.
 * Pure and single-threaded (the loop thread); unit tested. Must not do I/O. */
#ifndef SRV_LIMIT_H
#define SRV_LIMIT_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    double rate;  /* tokens per second; 0 = no limit */
    double burst; /* bucket size (calls allowed at once) */
} srv_limit_spec;

/** Parses "RATE[:BURST]" (BURST defaults to 2 x RATE, at least 1) or "0"/"off" (no
 * limit) into *out; 0 or -1 when malformed. */
int srv_limit_parse(const char *s, srv_limit_spec *out);

typedef struct srv_limit srv_limit;

/** A new, empty table of at most `max_keys` live buckets. The caller owns it. */
srv_limit *srv_limit_new(size_t max_keys);
void srv_limit_free(srv_limit *l);

/** Takes one token from the bucket of `key` (len bytes) under `spec` at `now_ms`.
 * Returns 0 when the call may go ahead, or the milliseconds until a token is
 * available (>= 1) when it must be refused. */
int64_t srv_limit_take(srv_limit *l, const srv_limit_spec *spec, const char *key, size_t len, uint64_t now_ms);

/** Drops buckets that have refilled by `now_ms` (spec: the one they were used with). */
void srv_limit_sweep(srv_limit *l, const srv_limit_spec *spec, uint64_t now_ms);

/** Live buckets. */
size_t srv_limit_count(const srv_limit *l);

#endif
