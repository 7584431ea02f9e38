/* cc_sha1: SHA-1 of a buffer as 40 lowercase hex digits, for Redis EVALSHA names.
 * Not used for anything secret. */
#ifndef CC_SHA1_H
#define CC_SHA1_H
#include <stddef.h>

/** Writes the hex digest of data[0..len) and a NUL into out[41]. */
void cc_sha1_hex(char out[41], const void *data, size_t len);

#endif
