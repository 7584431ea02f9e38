/* srv_ident: see srv_ident.h. */
#include "srv_ident.h"

#include <errno.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "srv_valid.h"

enum { K_EDDSA, K_HS256 };

struct srv_ident {
    int kind;
    EVP_PKEY *pkey;       /* EdDSA */
    unsigned char *secret; /* HS256 */
    size_t secret_len;
};

/* ---- loading ---- */

int srv_ident_from_bytes(srv_ident **out, const void *data, size_t len, char *err, size_t errlen) {
    *out = NULL;
    srv_ident *id = calloc(1, sizeof *id);
    if (!id) abort();
    if (len >= 10 && !memcmp(data, "-----BEGIN", 10)) {
        BIO *bio = BIO_new_mem_buf(data, (int)len);
        EVP_PKEY *k = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
        BIO_free(bio);
        if (!k) {
            snprintf(err, errlen, "not a PEM public key (give the Ed25519 PUBLIC KEY, never the private one)");
            free(id);
            return -1;
        }
        if (EVP_PKEY_id(k) != EVP_PKEY_ED25519) {
            snprintf(err, errlen, "the PEM key is not an Ed25519 key");
            EVP_PKEY_free(k);
            free(id);
            return -1;
        }
        id->kind = K_EDDSA;
        id->pkey = k;
    } else {
        const unsigned char *p = data;
        if (len && p[len - 1] == '\n') len--;
        if (len && p[len - 1] == '\r') len--;
        if (len < 32) {
            snprintf(err, errlen, "an HS256 secret must have at least 32 bytes (has %zu)", len);
            free(id);
            return -1;
        }
        id->kind = K_HS256;
        id->secret = malloc(len);
        if (!id->secret) abort();
        memcpy(id->secret, p, len);
        id->secret_len = len;
    }
    *out = id;
    return 0;
}

int srv_ident_load(srv_ident **out, const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    unsigned char buf[16384];
    size_t n = fread(buf, 1, sizeof buf, f);
    int too_big = n == sizeof buf;
    fclose(f);
    if (too_big || n == 0) {
        snprintf(err, errlen, "%s: %s", path, too_big ? "too big for a key" : "empty");
        return -1;
    }
    char why[200];
    int rc = srv_ident_from_bytes(out, buf, n, why, sizeof why);
    OPENSSL_cleanse(buf, sizeof buf);
    if (rc < 0) snprintf(err, errlen, "%s: %s", path, why);
    return rc;
}

void srv_ident_free(srv_ident *id) {
    if (!id) return;
    EVP_PKEY_free(id->pkey);
    if (id->secret) OPENSSL_cleanse(id->secret, id->secret_len);
    free(id->secret);
    free(id);
}

const char *srv_ident_alg(const srv_ident *id) { return id->kind == K_EDDSA ? "EdDSA" : "HS256"; }

/* ---- base64url (RFC 4648 section 5, no padding) ---- */

static int b64url_val(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

/* Decodes into out[cap]; returns the length or -1. */
static long b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap) {
    if (len % 4 == 1) return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_val((unsigned char)in[i]);
        if (v < 0) return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= cap) return -1;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    if (bits && (acc & ((1u << bits) - 1))) return -1; /* non-canonical trailing bits */
    return (long)o;
}

/* ---- a strict JSON object reader ---- */

typedef enum { J_STRING, J_NUMBER, J_OTHER } jtype;

typedef struct {
    const char *p, *end;
    int depth;
} jreader;

static void skip_ws(jreader *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) r->p++;
}

static int hex4(const char *p, uint32_t *v) {
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        *v = *v << 4 | (uint32_t)d;
    }
    return 0;
}

static int put_utf8(char *out, size_t cap, size_t *o, uint32_t cp) {
    unsigned char b[4];
    size_t n;
    if (cp < 0x80) b[0] = (unsigned char)cp, n = 1;
    else if (cp < 0x800) b[0] = (unsigned char)(0xc0 | cp >> 6), b[1] = (unsigned char)(0x80 | (cp & 0x3f)), n = 2;
    else if (cp < 0x10000)
        b[0] = (unsigned char)(0xe0 | cp >> 12), b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f)),
        b[2] = (unsigned char)(0x80 | (cp & 0x3f)), n = 3;
    else
        b[0] = (unsigned char)(0xf0 | cp >> 18), b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f)),
        b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f)), b[3] = (unsigned char)(0x80 | (cp & 0x3f)), n = 4;
    if (*o + n > cap) return -1;
    memcpy(out + *o, b, n);
    *o += n;
    return 0;
}

/* A string at r->p (the opening quote); decoded into out[cap] (length *olen), or
 * skipped when out is NULL. */
static int read_string(jreader *r, char *out, size_t cap, size_t *olen) {
    if (r->p >= r->end || *r->p != '"') return -1;
    r->p++;
    size_t o = 0;
    while (r->p < r->end) {
        unsigned char c = (unsigned char)*r->p++;
        if (c == '"') {
            if (olen) *olen = o;
            return 0;
        }
        if (c < 0x20) return -1;
        if (c != '\\') {
            if (out) {
                if (o >= cap) return -1;
                out[o] = (char)c;
            }
            o++;
            continue;
        }
        if (r->p >= r->end) return -1;
        char e = *r->p++;
        uint32_t cp;
        switch (e) {
        case '"': cp = '"'; break;
        case '\\': cp = '\\'; break;
        case '/': cp = '/'; break;
        case 'b': cp = 8; break;
        case 'f': cp = 12; break;
        case 'n': cp = 10; break;
        case 'r': cp = 13; break;
        case 't': cp = 9; break;
        case 'u':
            if (r->end - r->p < 4 || hex4(r->p, &cp) < 0) return -1;
            r->p += 4;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                uint32_t lo;
                if (r->end - r->p < 6 || r->p[0] != '\\' || r->p[1] != 'u' || hex4(r->p + 2, &lo) < 0 || lo < 0xdc00 ||
                    lo > 0xdfff)
                    return -1;
                r->p += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                return -1;
            }
            break;
        default: return -1;
        }
        if (out) {
            if (put_utf8(out, cap, &o, cp) < 0) return -1;
        } else {
            o++;
        }
    }
    return -1;
}

static int skip_value(jreader *r);

static int skip_container(jreader *r, char open, char close) {
    if (++r->depth > 16) return -1;
    r->p++; /* open */
    skip_ws(r);
    if (r->p < r->end && *r->p == close) {
        r->p++;
        r->depth--;
        return 0;
    }
    for (;;) {
        skip_ws(r);
        if (open == '{') {
            if (read_string(r, NULL, 0, NULL) < 0) return -1;
            skip_ws(r);
            if (r->p >= r->end || *r->p++ != ':') return -1;
            skip_ws(r);
        }
        if (skip_value(r) < 0) return -1;
        skip_ws(r);
        if (r->p >= r->end) return -1;
        char c = *r->p++;
        if (c == close) break;
        if (c != ',') return -1;
    }
    r->depth--;
    return 0;
}

/* A JSON number: 0 and its value (doubles are exact up to 2^53, plenty for times). */
static int read_number(jreader *r, double *v) {
    const char *s = r->p;
    if (r->p < r->end && *r->p == '-') r->p++;
    if (r->p >= r->end) return -1;
    if (*r->p == '0') r->p++;
    else if (*r->p >= '1' && *r->p <= '9')
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++;
    else return -1;
    if (r->p < r->end && *r->p == '.') {
        r->p++;
        if (r->p >= r->end || *r->p < '0' || *r->p > '9') return -1;
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++;
    }
    if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
        r->p++;
        if (r->p < r->end && (*r->p == '+' || *r->p == '-')) r->p++;
        if (r->p >= r->end || *r->p < '0' || *r->p > '9') return -1;
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++;
    }
    char buf[64];
    size_t n = (size_t)(r->p - s);
    if (n >= sizeof buf) return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    *v = strtod(buf, NULL);
    return isfinite(*v) ? 0 : -1;
}

static int skip_value(jreader *r) {
    if (r->p >= r->end) return -1;
    char c = *r->p;
    if (c == '"') return read_string(r, NULL, 0, NULL);
    if (c == '{') return skip_container(r, '{', '}');
    if (c == '[') return skip_container(r, '[', ']');
    static const char *const words[] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++) {
        size_t wl = strlen(words[i]);
        if ((size_t)(r->end - r->p) >= wl && !memcmp(r->p, words[i], wl)) {
            r->p += wl;
            return 0;
        }
    }
    double d;
    return read_number(r, &d);
}

/* The members we care about. */
typedef struct {
    char alg[16];
    int has_alg, has_crit;
    char sub[SRV_MAX_USER * 4 + 1];
    size_t sub_len;
    int has_sub, sub_bad;
    double exp, nbf;
    int has_exp, has_nbf, exp_bad, nbf_bad;
} claims;

/* Reads a top-level object, refusing duplicates of the members it reads. */
static int read_object(const char *json, size_t len, claims *c) {
    jreader r = {json, json + len, 0};
    skip_ws(&r);
    if (r.p >= r.end || *r.p != '{') return -1;
    r.p++;
    skip_ws(&r);
    if (r.p < r.end && *r.p == '}') {
        r.p++;
    } else {
        for (;;) {
            char key[32];
            size_t kl = 0;
            skip_ws(&r);
            const char *ks = r.p;
            if (read_string(&r, key, sizeof key - 1, &kl) < 0) {
                r.p = ks; /* a long key we do not read: skip it */
                if (read_string(&r, NULL, 0, NULL) < 0) return -1;
                kl = 0;
                key[0] = '\0';
            }
            key[kl] = '\0';
            if (memchr(key, '\0', kl)) return -1;
            skip_ws(&r);
            if (r.p >= r.end || *r.p++ != ':') return -1;
            skip_ws(&r);
            if (!strcmp(key, "alg")) {
                size_t al = 0;
                if (c->has_alg++) return -1;
                if (read_string(&r, c->alg, sizeof c->alg - 1, &al) < 0) return -1;
                c->alg[al] = '\0';
            } else if (!strcmp(key, "sub")) {
                if (c->has_sub++) return -1;
                if (r.p < r.end && *r.p == '"') {
                    if (read_string(&r, c->sub, sizeof c->sub - 1, &c->sub_len) < 0) {
                        c->sub_bad = 1;
                        return -1;
                    }
                    c->sub[c->sub_len] = '\0';
                } else {
                    c->sub_bad = 1;
                    if (skip_value(&r) < 0) return -1;
                }
            } else if (!strcmp(key, "exp") || !strcmp(key, "nbf")) {
                int is_exp = key[0] == 'e';
                if (is_exp ? c->has_exp++ : c->has_nbf++) return -1;
                double v;
                if (r.p < r.end && (*r.p == '-' || (*r.p >= '0' && *r.p <= '9'))) {
                    if (read_number(&r, &v) < 0) return -1;
                    if (is_exp) c->exp = v;
                    else c->nbf = v;
                } else {
                    if (is_exp) c->exp_bad = 1;
                    else c->nbf_bad = 1;
                    if (skip_value(&r) < 0) return -1;
                }
            } else {
                if (!strcmp(key, "crit")) c->has_crit = 1;
                if (skip_value(&r) < 0) return -1;
            }
            skip_ws(&r);
            if (r.p >= r.end) return -1;
            char ch = *r.p++;
            if (ch == '}') break;
            if (ch != ',') return -1;
        }
    }
    skip_ws(&r);
    return r.p == r.end ? 0 : -1;
}

/* ---- verification ---- */

int srv_ident_verify(const srv_ident *id, const char *jwt, size_t len, int64_t now_s, char *sub, size_t sublen,
                     char *err, size_t errlen) {
#define FAIL(...)                              \
    do {                                       \
        snprintf(err, errlen, __VA_ARGS__);    \
        return -1;                             \
    } while (0)
    if (!jwt || len == 0) FAIL("empty assertion");
    if (len > SRV_IDENT_MAX_JWT) FAIL("assertion longer than %d bytes", SRV_IDENT_MAX_JWT);
    const char *d1 = memchr(jwt, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - jwt)) : NULL;
    if (!d1 || !d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - jwt))) FAIL("not a compact JWT (header.payload.signature)");
    size_t hl = (size_t)(d1 - jwt), pl = (size_t)(d2 - d1 - 1), sl = len - (size_t)(d2 + 1 - jwt);
    unsigned char header[SRV_IDENT_MAX_JWT], payload[SRV_IDENT_MAX_JWT];
    unsigned char sig[128];
    long hn = b64url_decode(jwt, hl, header, sizeof header);
    long pn = b64url_decode(d1 + 1, pl, payload, sizeof payload);
    long sn = b64url_decode(d2 + 1, sl, sig, sizeof sig);
    if (hn <= 0 || pn <= 0 || sn < 0) FAIL("not base64url");
    claims hc, pc;
    memset(&hc, 0, sizeof hc);
    memset(&pc, 0, sizeof pc);
    if (read_object((const char *)header, (size_t)hn, &hc) < 0) FAIL("header is not a JSON object");
    if (!hc.has_alg) FAIL("header without alg");
    if (strcmp(hc.alg, srv_ident_alg(id)) != 0) FAIL("alg must be %s", srv_ident_alg(id));
    if (hc.has_crit) FAIL("unsupported crit header");
    /* The signature covers the encoded header and payload, exactly as sent. */
    size_t signed_len = (size_t)(d2 - jwt);
    if (id->kind == K_HS256) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int ml = 0;
        if (!HMAC(EVP_sha256(), id->secret, (int)id->secret_len, (const unsigned char *)jwt, signed_len, mac, &ml))
            FAIL("cannot compute HMAC");
        if (sn != (long)ml || CRYPTO_memcmp(mac, sig, ml) != 0) FAIL("bad signature");
    } else {
        if (sn != 64) FAIL("bad signature");
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        if (!ctx) abort();
        int ok = EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, id->pkey) == 1 &&
                 EVP_DigestVerify(ctx, sig, 64, (const unsigned char *)jwt, signed_len) == 1;
        EVP_MD_CTX_free(ctx);
        if (!ok) FAIL("bad signature");
    }
    if (read_object((const char *)payload, (size_t)pn, &pc) < 0) FAIL("payload is not a JSON object");
    if (!pc.has_exp || pc.exp_bad) FAIL("exp (a NumericDate) is required");
    if (floor(pc.exp) <= (double)now_s) FAIL("expired");
    if (pc.nbf_bad) FAIL("nbf must be a NumericDate");
    if (pc.has_nbf && floor(pc.nbf) > (double)now_s) FAIL("not valid yet (nbf)");
    if (!pc.has_sub || pc.sub_bad) FAIL("sub (the user id, a string) is required");
    if (srv_valid_string(pc.sub, pc.sub_len, SRV_MAX_USER) != SRV_STR_OK || pc.sub_len == 0) FAIL("sub is not a valid user id");
    if (pc.sub_len >= sublen) FAIL("sub too long");
    memcpy(sub, pc.sub, pc.sub_len);
    sub[pc.sub_len] = '\0';
    return 0;
#undef FAIL
}
