/* cc_pbw: see cc_pbw.h. Wire format: each field is a key varint (field << 3 | wire
 * type: 0 varint, 2 length-delimited) followed by the value; a length-delimited value
 * is its length as a varint, then the bytes. */
#include "cc_pbw.h"

#include <stdlib.h>
#include <string.h>

size_t cc_pbw_varint_len(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) v >>= 7, n++;
    return n;
}

size_t cc_pbw_put_varint(uint8_t *p, uint64_t v) {
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

static void reserve(cc_pbw *w, size_t more) {
    if (w->len + more <= w->cap) return;
    size_t cap = w->cap ? w->cap : 64;
    while (cap < w->len + more) cap *= 2;
    w->data = realloc(w->data, cap);
    if (!w->data) abort();
    w->cap = cap;
}

void cc_pbw_varint(cc_pbw *w, uint32_t field, uint64_t v) {
    reserve(w, 20);
    w->len += cc_pbw_put_varint(w->data + w->len, (uint64_t)field << 3);
    w->len += cc_pbw_put_varint(w->data + w->len, v);
}

void cc_pbw_bytes(cc_pbw *w, uint32_t field, const void *data, size_t len) {
    reserve(w, 20 + len);
    w->len += cc_pbw_put_varint(w->data + w->len, (uint64_t)field << 3 | 2);
    w->len += cc_pbw_put_varint(w->data + w->len, len);
    if (len) memcpy(w->data + w->len, data, len);
    w->len += len;
}

void cc_pbw_string(cc_pbw *w, uint32_t field, const char *s) {
    if (s && *s) cc_pbw_bytes(w, field, s, strlen(s));
}

void cc_pbw_message(cc_pbw *w, uint32_t field, const cc_pbw *sub) { cc_pbw_bytes(w, field, sub->data, sub->len); }

void cc_pbw_free(cc_pbw *w) {
    free(w->data);
    memset(w, 0, sizeof *w);
}
