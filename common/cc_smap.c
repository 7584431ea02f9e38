/* cc_smap: see cc_smap.h. Chains of nodes holding the key inline; the bucket array
 * doubles when the map holds more entries than buckets. */
#include "cc_smap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct node {
    struct node *next;
    void *value;
    uint64_t hash;
    char key[];
} node;

struct cc_smap {
    node **b;
    size_t n_buckets, n;
};

static uint64_t fnv(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

cc_smap *cc_smap_new(void) {
    cc_smap *m = calloc(1, sizeof *m);
    if (!m) abort();
    m->n_buckets = 64;
    m->b = calloc(m->n_buckets, sizeof *m->b);
    if (!m->b) abort();
    return m;
}

static node **slot(const cc_smap *m, const char *key, uint64_t h) {
    node **s = &m->b[h & (m->n_buckets - 1)];
    while (*s && ((*s)->hash != h || strcmp((*s)->key, key)))
        s = &(*s)->next;
    return s;
}

void *cc_smap_get(const cc_smap *m, const char *key) {
    node *n = *slot(m, key, fnv(key));
    return n ? n->value : NULL;
}

static void grow(cc_smap *m) {
    size_t nb = m->n_buckets * 2;
    node **b = calloc(nb, sizeof *b);
    if (!b) abort();
    for (size_t i = 0; i < m->n_buckets; i++)
        for (node *n = m->b[i], *next; n; n = next) {
            next = n->next;
            n->next = b[n->hash & (nb - 1)];
            b[n->hash & (nb - 1)] = n;
        }
    free(m->b);
    m->b = b;
    m->n_buckets = nb;
}

void *cc_smap_put(cc_smap *m, const char *key, void *value) {
    uint64_t h = fnv(key);
    node **s = slot(m, key, h);
    if (*s) {
        void *old = (*s)->value;
        (*s)->value = value;
        return old;
    }
    size_t len = strlen(key);
    node *n = malloc(sizeof *n + len + 1);
    if (!n) abort();
    memcpy(n->key, key, len + 1);
    n->hash = h;
    n->value = value;
    n->next = NULL;
    *s = n;
    if (++m->n > m->n_buckets) grow(m);
    return NULL;
}

void *cc_smap_del(cc_smap *m, const char *key) {
    node **s = slot(m, key, fnv(key));
    node *n = *s;
    if (!n) return NULL;
    *s = n->next;
    void *v = n->value;
    free(n);
    m->n--;
    return v;
}

size_t cc_smap_count(const cc_smap *m) { return m->n; }

void cc_smap_each(const cc_smap *m, void (*fn)(const char *key, void *value, void *payload), void *payload) {
    for (size_t i = 0; i < m->n_buckets; i++)
        for (node *n = m->b[i]; n; n = n->next)
            fn(n->key, n->value, payload);
}

void cc_smap_free(cc_smap *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n_buckets; i++)
        for (node *n = m->b[i], *next; n; n = next) {
            next = n->next;
            free(n);
        }
    free(m->b);
    free(m);
}
