/* cc_slot: Redis Cluster key slots: CRC16 (XMODEM, as Redis' crc16.c) of the key, or
 * of its hash tag (the part between the first '{' and the next '}', when not empty),
 * modulo 16384. Pure functions; owns nothing. */
#ifndef CC_SLOT_H
#define CC_SLOT_H

#include <stddef.h>
#include <stdint.h>

#define CC_SLOTS 16384

/** CRC16-XMODEM of buf[0..len). */
uint16_t cc_crc16(const void *buf, size_t len);

/** The cluster slot of `key` (len bytes, may hold NULs), hash tags honoured. */
int cc_key_slot(const char *key, size_t len);

#endif
