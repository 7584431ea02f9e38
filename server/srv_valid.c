/* srv_valid: see srv_valid.h. */
#include "srv_valid.h"

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

int srv_token_new(char *out, const char *concert_id) { return srv_id_new(out, "v1", concert_id); }

int srv_token_parse(const char *tok, size_t len, char *concert) { return srv_id_parse(tok, len, "v1", concert); }

int srv_id_new(char *out, const char *prefix, const char *concert_id) {
    unsigned char r[16];
    static const char hex[] = "0123456789abcdef";
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
