/* srv_valid: see srv_valid.h. */
#include "srv_valid.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

static int id_char(unsigned char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
           ch == '-';
}

int srv_valid_id(const char *s) {
    size_t n = 0;
    if (!s) return 0;
    for (; s[n]; n++)
        if (n >= SRV_MAX_ID || !id_char((unsigned char)s[n])) return 0;
    return n > 0;
}

int srv_valid_user(const char *s) {
    size_t n = 0;
    if (!s) return 0;
    for (; s[n]; n++)
        if (n >= SRV_MAX_USER || (unsigned char)s[n] < 0x20 || s[n] == 0x7f || s[n] == '{' || s[n] == '}')
            return 0;
    return n > 0;
}

static const char hexd[] = "0123456789abcdef";

int srv_token_id_new(unsigned char id[16], char hex[33]) {
    if (getrandom(id, 16, 0) != 16) return -1;
    for (int i = 0; i < 16; i++) hex[2 * i] = hexd[id[i] >> 4], hex[2 * i + 1] = hexd[id[i] & 15];
    hex[32] = '\0';
    return 0;
}

size_t srv_token_format(char *out, const char *concert_id, int64_t n, const char *hex) {
    size_t cl = strnlen(concert_id, SRV_MAX_ID);
    char digits[24];
    int dl = 0;
    uint64_t v = n > 0 ? (uint64_t)n : 0;
    do digits[dl++] = (char)('0' + v % 10), v /= 10;
    while (v && dl < 20);
    char *p = out;
    memcpy(p, "v2.", 3), p += 3;
    memcpy(p, concert_id, cl), p += cl;
    *p++ = '.';
    while (dl) *p++ = digits[--dl];
    *p++ = '.';
    memcpy(p, hex, 32), p += 32;
    *p = '\0';
    return (size_t)(p - out);
}

/* A lowercase hex digit's value + 1, 0 for any other byte: the token id's 32 digits
 * decoded by lookup instead of two range tests each (GetQueueStatus parses one per
 * call). */
static const unsigned char hex1[256] = {
    ['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,  ['6'] = 7,  ['7'] = 8,
    ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
};

int srv_token_split(const char *tok, size_t len, srv_token_parts *out) {
    if (len < 3 + 1 + 1 + 32 || len > SRV_TOKEN_MAX || tok[0] != 'v' || tok[2] != '.') return -1;
    if (tok[1] != '1' && tok[1] != '2') return -1;
    const char *hex = tok + len - 32;
    if (hex[-1] != '.') return -1;
    unsigned bad = 0;
    for (int i = 0; i < 16; i++) {
        unsigned hi = hex1[(unsigned char)hex[2 * i]] - 1u, lo = hex1[(unsigned char)hex[2 * i + 1]] - 1u;
        bad |= hi | lo; /* a non-digit is 0 - 1: every bit set */
        out->id[i] = (unsigned char)(hi << 4 | (lo & 15));
    }
    if (bad > 15) return -1;
    const char *c = tok + 3, *end = hex - 1; /* the concert (and n) lie in [c, end) */
    out->n = 0;
    if (tok[1] == '2') {
        const char *d = end;
        while (d > c && d[-1] >= '0' && d[-1] <= '9') d--;
        size_t nd = (size_t)(end - d);
        if (nd == 0 || nd > 16 || *d == '0' || d - 1 <= c || d[-1] != '.') return -1;
        int64_t n = 0;
        for (const char *q = d; q < end; q++) n = n * 10 + (*q - '0');
        if (n > SRV_TOKEN_N_MAX) return -1;
        out->n = n;
        end = d - 1;
    }
    size_t cl = (size_t)(end - c);
    if (cl == 0 || cl > SRV_MAX_ID) return -1;
    for (size_t i = 0; i < cl; i++)
        if (!id_char((unsigned char)c[i])) return -1;
    memcpy(out->concert, c, cl);
    out->concert[cl] = '\0';
    return 0;
}

int srv_token_parse(const char *tok, size_t len, char *concert) {
    srv_token_parts p;
    if (srv_token_split(tok, len, &p) < 0) return -1;
    memcpy(concert, p.concert, strlen(p.concert) + 1);
    return 0;
}

int srv_id_new(char *out, const char *prefix, const char *concert_id) {
    unsigned char r[16];
    const char *hex = hexd;
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) return -1;
    size_t cl = strlen(concert_id);
    memcpy(out, prefix, 2);
    out[2] = '.';
    memcpy(out + 3, concert_id, cl);
    char *p = out + 3 + cl;
    *p++ = '.';
    for (int i = 0; i < 16; i++) {
        *p++ = hex[r[i] >> 4];
        *p++ = hex[r[i] & 15];
    }
    *p = '\0';
    return 0;
}

int srv_id_parse(const char *tok, size_t len, const char *prefix, char *concert) {
    if (len < 3 + 1 + 1 + 32 || len > SRV_TOKEN_MAX || memcmp(tok, prefix, 2) || tok[2] != '.') return -1;
    size_t cl = len - 3 - 1 - 32;
    if (tok[3 + cl] != '.') return -1;
    for (size_t i = 0; i < cl; i++)
        if (!id_char((unsigned char)tok[3 + i])) return -1;
    for (size_t i = 4 + cl; i < len; i++) {
        char ch = tok[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return -1;
    }
    memcpy(concert, tok + 3, cl);
    concert[cl] = '\0';
    return 0;
}

int srv_valid_key(const char *s) {
    size_t n = 0;
    if (!s) return 0;
    for (; s[n]; n++) {
        char ch = s[n];
        if (n >= 128 || !(id_char((unsigned char)ch) || ch == '.' || ch == ':')) return 0;
    }
    return n > 0;
}

int srv_secret_eq(const char *a, const char *b, size_t blen) {
    size_t alen = strlen(a);
    unsigned char d = alen != blen;
    for (size_t i = 0; i < blen; i++) d |= (unsigned char)(a[i % (alen ? alen : 1)] ^ b[i]);
    return alen > 0 && d == 0;
}

const char *srv_bearer(const char *v, size_t len, size_t *tok_len) {
    if (!v || len < 7 || strncasecmp(v, "Bearer ", 7)) return NULL;
    v += 7, len -= 7;
    while (len && *v == ' ') v++, len--;
    while (len && v[len - 1] == ' ') len--;
    if (!len) return NULL;
    *tok_len = len;
    return v;
}

/* ---- the string rule ---- */

/* Non-zero if any of the 8 bytes of w is not printable ASCII (< 0x20 or >= 0x7f):
 * a byte < 0x20 borrows in w - 0x20.., a byte 0x7f carries into bit 7 in w + 0x01..,
 * a byte >= 0x80 has bit 7 already. Exact for the word as a whole: the lowest bad
 * byte gets no borrow or carry from the good bytes below it, which produce none. */
static inline uint64_t word_unprintable(uint64_t w) {
    const uint64_t ones = 0x0101010101010101ULL;
    return ((w - 0x20 * ones) | (w + ones) | w) & (0x80 * ones);
}

srv_str_rc srv_valid_string(const char *str, size_t len, size_t max) {
    const unsigned char *s = (const unsigned char *)str;
    if (len > max) return SRV_STR_TOO_LONG;
    size_t i = 0;
    while (i < len) {
        /* Printable ASCII (ids, tokens, most names) 8 bytes a step; a word with anything
         * else, and the tail, byte by byte below. */
        if (len - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!word_unprintable(w)) {
                i += 8;
                continue;
            }
        }
        unsigned char c = s[i];
        if (c < 0x80) {
            if (c == 0) return SRV_STR_NUL;
            if (c < 0x20 || c == 0x7f) return SRV_STR_CONTROL;
            i++;
            continue;
        }
        uint32_t cp;
        size_t n;
        if (c >= 0xc2 && c <= 0xdf) n = 2, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef) n = 3, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4) n = 4, cp = c & 0x07;
        else return SRV_STR_BAD_UTF8; /* continuation byte, overlong lead (c0, c1) or > f4 */
        if (i + n > len) return SRV_STR_BAD_UTF8;
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return SRV_STR_BAD_UTF8;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff))) return SRV_STR_BAD_UTF8;
        if (cp >= 0xd800 && cp <= 0xdfff) return SRV_STR_BAD_UTF8; /* surrogates */
        if (cp >= 0x80 && cp <= 0x9f) return SRV_STR_CONTROL;      /* C1 controls */
        i += n;
    }
    return SRV_STR_OK;
}

const char *srv_valid_string_reason(srv_str_rc rc) {
    switch (rc) {
    case SRV_STR_OK: return "ok";
    case SRV_STR_TOO_LONG: return "too long";
    case SRV_STR_BAD_UTF8: return "must be valid UTF-8";
    case SRV_STR_CONTROL: return "must not contain control characters";
    case SRV_STR_NUL: return "must not contain NUL";
    }
    return "invalid";
}

static const struct {
    const char *name;
    size_t max;
} field_max[] = {
    {"user_id", SRV_MAX_USER},  {"concert_id", SRV_MAX_ID},  {"schedule_id", SRV_MAX_ID},
    {"token", 256},             {"reservation_id", 256},     {"payment_id", 256},
    {"idempotency_key", 128},   {"name", 200},               {"update_fields", 64},
    {"service", 256},           {"host", 256},               {"add_tokens", 256},
    {"remove_tokens", 256},
};

size_t srv_valid_field_max(const char *name) {
    for (size_t i = 0; i < sizeof field_max / sizeof *field_max; i++)
        if (!strcmp(field_max[i].name, name)) return field_max[i].max;
    return 1024;
}

/* ---- wire walk ---- */

static int rd_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
    uint64_t x = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

static int walk(const ProtobufCMessageDescriptor *desc, const uint8_t *p, const uint8_t *end, char *path,
                size_t plen, int depth, char *err, size_t errlen) {
    if (depth > 32) return -2;
    while (p < end) {
        uint64_t key, v;
        if (rd_varint(&p, end, &key) < 0) return -2;
        uint32_t num = (uint32_t)(key >> 3);
        int wt = (int)(key & 7);
        if (num == 0 || key >> 3 > 0x1fffffff) return -2;
        const uint8_t *val = NULL;
        size_t vlen = 0;
        switch (wt) {
        case 0:
            if (rd_varint(&p, end, &v) < 0) return -2;
            break;
        case 1:
            if (end - p < 8) return -2;
            p += 8;
            break;
        case 5:
            if (end - p < 4) return -2;
            p += 4;
            break;
        case 2:
            if (rd_varint(&p, end, &v) < 0 || v > (uint64_t)(end - p)) return -2;
            val = p, vlen = (size_t)v;
            p += v;
            break;
        default:
            return -2; /* groups are not proto3 */
        }
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(desc, num);
        if (!f) continue; /* unknown fields are kept by protobuf-c and never read by us */
        if (f->type == PROTOBUF_C_TYPE_STRING) {
            if (wt != 2) return -2;
            srv_str_rc rc = srv_valid_string((const char *)val, vlen, srv_valid_field_max(f->name));
            if (rc != SRV_STR_OK) {
                if (rc == SRV_STR_TOO_LONG)
                    snprintf(err, errlen, "%s%s: longer than %zu bytes", path, f->name, srv_valid_field_max(f->name));
                else snprintf(err, errlen, "%s%s: %s", path, f->name, srv_valid_string_reason(rc));
                return -1;
            }
        } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
            if (wt != 2) return -2;
            size_t used = strlen(path);
            int w = snprintf(path + used, plen - used, "%s.", f->name);
            if (w < 0 || (size_t)w >= plen - used) return -2;
            int rc = walk(f->descriptor, val, val + vlen, path, plen, depth + 1, err, errlen);
            path[used] = '\0';
            if (rc) return rc;
        }
    }
    return 0;
}

int srv_valid_wire(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len, char *err,
                   size_t errlen) {
    char path[256] = "";
    if (!data && len) return -2;
    return walk(desc, data, data + len, path, sizeof path, 0, err, errlen);
}

int srv_decode_request(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                       ProtobufCAllocator *alloc, ProtobufCMessage **out, char *err, size_t errlen) {
    *out = NULL;
    int rc = srv_valid_wire(desc, data, len, err, errlen);
    if (rc == 0) {
        static const uint8_t empty[1];
        *out = protobuf_c_message_unpack(desc, alloc, len, data ? data : empty);
        if (*out) return 0;
    }
    if (rc != -1) snprintf(err, errlen, "request is not a valid %s message", desc->name);
    return -1;
}
