/* srv_api: see srv_api.h. */
#include "srv_api.h"

#include <stdio.h>
#include <string.h>

#include "cc_sha1.h"

int srv_page_size(int32_t requested, int dflt, int max) {
    if (requested < 0) return -1;
    if (requested == 0) return dflt;
    return requested > max ? max : (int)requested;
}

#define TOKEN_VERSION 1

/* 16 hex digits of SHA-1("concert.v1 page token" NUL scope NUL payload). */
static void token_check(char out[17], const char *scope, const uint8_t *payload, size_t len) {
    uint8_t buf[64 + 2 * SRV_PAGE_CURSOR_MAX + 256];
    static const char label[] = "concert.v1 page token";
    size_t sl = strlen(scope), n = 0;
    if (sl > 200) sl = 200;
    memcpy(buf, label, sizeof label), n += sizeof label; /* with its NUL */
    memcpy(buf + n, scope, sl), n += sl;
    buf[n++] = 0;
    memcpy(buf + n, payload, len), n += len;
    char hex[41];
    cc_sha1_hex(hex, buf, n);
    memcpy(out, hex, 16);
    out[16] = '\0';
}

void srv_page_token(char *out, srv_page_kind kind, const char *scope, const void *cursor, size_t cursor_len) {
    uint8_t payload[2 + SRV_PAGE_CURSOR_MAX];
    if (cursor_len > SRV_PAGE_CURSOR_MAX) cursor_len = SRV_PAGE_CURSOR_MAX;
    payload[0] = TOKEN_VERSION;
    payload[1] = (uint8_t)kind;
    memcpy(payload + 2, cursor, cursor_len);
    size_t n = 2 + cursor_len;
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) out[2 * i] = digits[payload[i] >> 4], out[2 * i + 1] = digits[payload[i] & 15];
    token_check(out + 2 * n, scope, payload, n);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

int srv_page_token_parse(const char *token, srv_page_kind kind, const char *scope, uint8_t *cursor,
                         size_t *cursor_len) {
    size_t len = strlen(token);
    if (len > SRV_PAGE_TOKEN_MAX || len < 2 * 2 + 16 || len % 2) return -1;
    uint8_t payload[2 + SRV_PAGE_CURSOR_MAX];
    size_t n = (len - 16) / 2;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(token[2 * i]), lo = hexval(token[2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        payload[i] = (uint8_t)(hi << 4 | lo);
    }
    if (payload[0] != TOKEN_VERSION || payload[1] != (uint8_t)kind) return -1;
    char check[17];
    token_check(check, scope, payload, n);
    if (memcmp(check, token + 2 * n, 16) != 0) return -1;
    memcpy(cursor, payload + 2, n - 2);
    *cursor_len = n - 2;
    return 0;
}

int srv_page_read(srv_page *out, int32_t page_size, const char *page_token, srv_page_kind kind, const char *scope,
                  int dflt, int max, char *err, size_t errlen) {
    out->cursor_len = 0;
    if ((out->size = srv_page_size(page_size, dflt, max)) < 0) {
        snprintf(err, errlen, "page_size: must not be negative (0 means %d, at most %d)", dflt, max);
        return -1;
    }
    if (page_token && *page_token &&
        srv_page_token_parse(page_token, kind, scope, out->cursor, &out->cursor_len) < 0) {
        snprintf(err, errlen, "%s", SRV_PAGE_TOKEN_BAD);
        return -1;
    }
    return 0;
}

int srv_field_name_is(const char *name, const char *given) {
    if (!strcmp(name, given)) return 1;
    /* The proto3 JSON name, compared as it is derived (protoc's ToJsonName). */
    const char *p = name, *g = given;
    int upper = 0;
    for (; *p; p++) {
        if (*p == '_') {
            upper = 1;
            continue;
        }
        char want = upper && *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
        upper = 0;
        if (*g++ != want) return 0;
    }
    return *g == '\0';
}
