/* cc_slot: see cc_slot.h. The table-free bitwise CRC is fast enough: keys are short
 * and a slot is computed once per command. */
#include "cc_slot.h"

#include <string.h>

uint16_t cc_crc16(const void *buf, size_t len) {
    const unsigned char *p = buf;
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)(p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = crc & 0x8000 ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

int cc_key_slot(const char *key, size_t len) {
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t rest = len - (size_t)(open - key) - 1;
        const char *close = memchr(open + 1, '}', rest);
        if (close && close > open + 1) return cc_crc16(open + 1, (size_t)(close - open - 1)) & (CC_SLOTS - 1);
    }
    return cc_crc16(key, len) & (CC_SLOTS - 1);
}
