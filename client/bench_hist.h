/* bench_hist: a latency histogram with bounded relative error, log-linear like HDR
 * Histogram. Values are nanoseconds. Below 256 ns every value has its own bucket;
 * above, each power of two is split into 128 equal buckets, so a bucket is never
 * wider than 1/128 of its lower bound: a percentile read from its bucket's midpoint is
 * within 0.4 % of the true value. Values above 2^41 ns (about 36 minutes) are clamped.
 * Fixed size (4480 buckets, 35 KB), no allocation; min, max, count and sum are exact.
 * Not thread-safe: one writer, or a lock around it. */
#ifndef BENCH_HIST_H
#define BENCH_HIST_H

#include <stdint.h>

#define BENCH_HIST_SUB_BITS 7
#define BENCH_HIST_SUB (1u << BENCH_HIST_SUB_BITS)
#define BENCH_HIST_MAX_MSB 40
#define BENCH_HIST_BUCKETS (2 * BENCH_HIST_SUB + (BENCH_HIST_MAX_MSB - BENCH_HIST_SUB_BITS) * BENCH_HIST_SUB)

typedef struct {
    uint64_t count;
    uint64_t sum;      /* ns; 2^64 ns is 584 years of latency, no overflow in practice */
    uint64_t min, max; /* exact; min is UINT64_MAX while empty */
    uint32_t lo, hi;   /* used bucket range [lo, hi) to keep merge and clear cheap */
    uint64_t b[BENCH_HIST_BUCKETS];
} bench_hist;

/** Empties `h` (also a valid initialiser for zeroed or fresh memory). */
void bench_hist_clear(bench_hist *h);

/** Adds one value (ns). */
void bench_hist_record(bench_hist *h, uint64_t ns);

/** Adds every value of `from` to `into`. */
void bench_hist_merge(bench_hist *into, const bench_hist *from);

/** The value at percentile `p` (0..100): the midpoint of the bucket holding the
 * ceil(p/100 * count)-th smallest value, clamped to [min, max]. 0 when empty.
 * p = 100 returns the exact max. */
uint64_t bench_hist_percentile(const bench_hist *h, double p);

/** Mean in ns (exact), 0 when empty. */
double bench_hist_mean(const bench_hist *h);

/** Bucket index of a value and the [low, low + width) range of a bucket; exposed for
 * the unit tests that check the error bound. */
uint32_t bench_hist_index(uint64_t ns);
void bench_hist_bucket_range(uint32_t idx, uint64_t *low, uint64_t *width);

#endif
