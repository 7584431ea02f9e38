/* bench_hist: see bench_hist.h. */
#include "bench_hist.h"

#include <string.h>

#define MAX_VALUE ((UINT64_C(1) << (BENCH_HIST_MAX_MSB + 1)) - 1)

uint32_t bench_hist_index(uint64_t v) {
    if (v > MAX_VALUE) v = MAX_VALUE;
    if (v < 2 * BENCH_HIST_SUB) return (uint32_t)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - BENCH_HIST_SUB_BITS; /* >= 1 */
    uint64_t mant = (v >> shift) - BENCH_HIST_SUB;  /* [0, SUB) */
    return 2 * BENCH_HIST_SUB + (shift - 1) * BENCH_HIST_SUB + (uint32_t)mant;
}

void bench_hist_bucket_range(uint32_t idx, uint64_t *low, uint64_t *width) {
    if (idx < 2 * BENCH_HIST_SUB) {
        *low = idx;
        *width = 1;
        return;
    }
    uint32_t k = idx - 2 * BENCH_HIST_SUB;
    unsigned shift = k / BENCH_HIST_SUB + 1;
    uint64_t mant = k % BENCH_HIST_SUB + BENCH_HIST_SUB;
    *low = mant << shift;
    *width = UINT64_C(1) << shift;
}

void bench_hist_clear(bench_hist *h) {
    if (h->hi > h->lo && h->hi <= BENCH_HIST_BUCKETS)
        memset(&h->b[h->lo], 0, (h->hi - h->lo) * sizeof h->b[0]);
    else if (h->count)
        memset(h->b, 0, sizeof h->b);
    h->count = h->sum = h->max = 0;
    h->min = UINT64_MAX;
    h->lo = BENCH_HIST_BUCKETS;
    h->hi = 0;
}

void bench_hist_record(bench_hist *h, uint64_t ns) {
    uint32_t i = bench_hist_index(ns);
    h->b[i]++;
    h->count++;
    h->sum += ns;
    if (ns < h->min) h->min = ns;
    if (ns > h->max) h->max = ns;
    if (i < h->lo) h->lo = i;
    if (i + 1 > h->hi) h->hi = i + 1;
}

void bench_hist_merge(bench_hist *into, const bench_hist *from) {
    if (!from->count) return;
    for (uint32_t i = from->lo; i < from->hi; i++) into->b[i] += from->b[i];
    into->count += from->count;
    into->sum += from->sum;
    if (from->min < into->min) into->min = from->min;
    if (from->max > into->max) into->max = from->max;
    if (from->lo < into->lo) into->lo = from->lo;
    if (from->hi > into->hi) into->hi = from->hi;
}

uint64_t bench_hist_percentile(const bench_hist *h, double p) {
    if (!h->count) return 0;
    if (p >= 100.0) return h->max;
    if (p < 0) p = 0;
    uint64_t rank = (uint64_t)(p / 100.0 * (double)h->count + 0.999999999);
    if (rank < 1) rank = 1;
    if (rank > h->count) rank = h->count;
    uint64_t seen = 0;
    for (uint32_t i = h->lo; i < h->hi; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t low, width;
            bench_hist_bucket_range(i, &low, &width);
            uint64_t v = low + width / 2;
            if (v < h->min) v = h->min;
            if (v > h->max) v = h->max;
            return v;
        }
    }
    return h->max;
}

double bench_hist_mean(const bench_hist *h) { return h->count ? (double)h->sum / (double)h->count : 0.0; }
