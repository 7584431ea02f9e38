/* srv_limit: see srv_limit.h. A chained hash table of buckets, resized by doubling. */
#include "srv_limit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cc_log.h"

typedef struct bucket {
    struct bucket *next;
    uint64_t hash;
    uint64_t last_ms;
    double tokens;
    size_t len;
    char key[];
} bucket;

struct srv_limit {
    bucket **slots;
    size_t n_slots, count, max_keys;
    int warned;
};

int srv_limit_parse(const char *s, srv_limit_spec *out) {
    if (!s || !*s) return -1;
    if (!strcmp(s, "off") || !strcmp(s, "0")) {
        out->rate = 0, out->burst = 0;
        return 0;
    }
    char *end;
    double rate = strtod(s, &end);
    if (end == s || !(rate > 0) || rate > 1e7) return -1;
    double burst = rate * 2 < 1 ? 1 : rate * 2;
    if (*end == ':') {
        const char *b = end + 1;
        burst = strtod(b, &end);
        if (end == b || !(burst >= 1) || burst > 1e8) return -1;
    }
    if (*end) return -1;
    out->rate = rate, out->burst = burst;
    return 0;
}

static uint64_t hash_key(const char *k, size_t len) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)k[i]) * 1099511628211ULL;
    return h;
}

srv_limit *srv_limit_new(size_t max_keys) {
    srv_limit *l = calloc(1, sizeof *l);
    if (!l) abort();
    l->n_slots = 1024;
    l->slots = calloc(l->n_slots, sizeof *l->slots);
    if (!l->slots) abort();
    l->max_keys = max_keys ? max_keys : 1;
    return l;
}

void srv_limit_free(srv_limit *l) {
    if (!l) return;
    for (size_t i = 0; i < l->n_slots; i++)
        for (bucket *b = l->slots[i], *n; b; b = n) {
            n = b->next;
            free(b);
        }
    free(l->slots);
    free(l);
}

static void grow(srv_limit *l) {
    size_t n = l->n_slots * 2;
    bucket **slots = calloc(n, sizeof *slots);
    if (!slots) abort();
    for (size_t i = 0; i < l->n_slots; i++)
        for (bucket *b = l->slots[i], *next; b; b = next) {
            next = b->next;
            b->next = slots[b->hash & (n - 1)];
            slots[b->hash & (n - 1)] = b;
        }
    free(l->slots);
    l->slots = slots;
    l->n_slots = n;
}

static double refill(const srv_limit_spec *spec, const bucket *b, uint64_t now_ms) {
    double t = b->tokens;
    if (now_ms > b->last_ms) t += (double)(now_ms - b->last_ms) * spec->rate / 1000.0;
    return t > spec->burst ? spec->burst : t;
}

int64_t srv_limit_take(srv_limit *l, const srv_limit_spec *spec, const char *key, size_t len, uint64_t now_ms) {
    if (!spec || spec->rate <= 0) return 0;
    uint64_t h = hash_key(key, len);
    bucket **slot = &l->slots[h & (l->n_slots - 1)];
    bucket *b = *slot;
    while (b && !(b->hash == h && b->len == len && !memcmp(b->key, key, len))) b = b->next;
    if (!b) {
        if (l->count >= l->max_keys) {
            if (!l->warned) CC_WARN("rate_limit_table_full", "buckets=%zu", l->count);
            l->warned = 1;
            return 0;
        }
        b = malloc(sizeof *b + len);
        if (!b) abort();
        b->hash = h;
        b->len = len;
        memcpy(b->key, key, len);
        b->tokens = spec->burst;
        b->last_ms = now_ms;
        b->next = *slot;
        *slot = b;
        if (++l->count > l->n_slots) grow(l);
    }
    double t = refill(spec, b, now_ms);
    if (now_ms > b->last_ms) b->last_ms = now_ms;
    if (t >= 1.0) {
        b->tokens = t - 1.0;
        return 0;
    }
    b->tokens = t;
    int64_t wait = (int64_t)ceil((1.0 - t) * 1000.0 / spec->rate);
    return wait < 1 ? 1 : wait;
}

void srv_limit_sweep(srv_limit *l, const srv_limit_spec *spec, uint64_t now_ms) {
    if (!spec || spec->rate <= 0) return;
    for (size_t i = 0; i < l->n_slots; i++) {
        bucket **pp = &l->slots[i];
        while (*pp) {
            bucket *b = *pp;
            if (refill(spec, b, now_ms) >= spec->burst) {
                *pp = b->next;
                free(b);
                l->count--;
            } else {
                pp = &b->next;
            }
        }
    }
    if (l->count < l->max_keys) l->warned = 0;
}

size_t srv_limit_count(const srv_limit *l) { return l->count; }
