/* cc_smap: a small hash map from NUL-terminated strings to pointers (chained, FNV-1a,
 * grows by doubling). Used where a loop keeps per-id state: payment-consumer (user ->
 * that user's latest payment in flight), concert-server (payment id -> its watchers).
 * Ownership: the map copies keys and owns its nodes; values are the caller's (never
 * freed here). Not thread-safe; no iteration order. */
#ifndef CC_SMAP_H
#define CC_SMAP_H

#include <stddef.h>

typedef struct cc_smap cc_smap;

/** A new empty map (aborts on out of memory). */
cc_smap *cc_smap_new(void);
/** The value of `key`, or NULL. */
void *cc_smap_get(const cc_smap *m, const char *key);
/** Sets `key` to `value` (copying the key); returns the previous value or NULL. */
void *cc_smap_put(cc_smap *m, const char *key, void *value);
/** Removes `key`; returns its value or NULL. */
void *cc_smap_del(cc_smap *m, const char *key);
size_t cc_smap_count(const cc_smap *m);
/** Calls fn for every entry; fn must not change the map. */
void cc_smap_each(const cc_smap *m, void (*fn)(const char *key, void *value, void *payload), void *payload);
/** Frees the map (not the values). NULL is fine. */
void cc_smap_free(cc_smap *m);

#endif
