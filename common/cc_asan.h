/* cc_asan: poisoning of memory that a pool or arena keeps for reuse, so that the ASan
 * build still reports a use after "free" of a recycled object (a pooled srv_call,
 * rreq or reply). No-ops in other builds. Header only: there is nothing to link. */
#ifndef CC_ASAN_H
#define CC_ASAN_H

#include <stddef.h>

#if defined(__SANITIZE_ADDRESS__)
#define CC_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CC_ASAN 1
#endif
#endif

#ifdef CC_ASAN
#include <sanitizer/asan_interface.h>
/** Marks [p, p+n) unusable until unpoisoned (an access is reported as use-after-poison). */
#define CC_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define CC_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define CC_POISON(p, n) ((void)(p), (void)(n))
#define CC_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#endif
