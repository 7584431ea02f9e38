/* Unit tests of pure logic: ids and tokens, options, Redis URLs, SHA-1. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "cc_log.h"
#include "cc_opt.h"
#include "cc_redis.h"
#include "cc_sha1.h"
#include "srv_valid.h"

Test(valid, ids) {
    cr_expect(srv_valid_id("c1"));
    cr_expect(srv_valid_id("Concert_2026-Seoul"));
    cr_expect_not(srv_valid_id(""), "empty id must be refused");
    cr_expect_not(srv_valid_id("has space"));
    cr_expect_not(srv_valid_id("a{b}"), "braces would break the Redis hash tag");
    cr_expect_not(srv_valid_id("a:b"));
    char big[66];
    memset(big, 'a', 65);
    big[65] = 0;
    cr_expect_not(srv_valid_id(big), "65 characters is too long");
    big[64] = 0;
    cr_expect(srv_valid_id(big), "64 characters is fine");
}

Test(valid, users) {
    cr_expect(srv_valid_user("alice@example.com"));
    cr_expect(srv_valid_user("유저 1"), "UTF-8 and spaces are allowed");
    cr_expect_not(srv_valid_user(""));
    cr_expect_not(srv_valid_user("a\nb"), "control characters are refused");
    char *big = malloc(10241);
    memset(big, 'u', 10240);
    big[10240] = 0;
    cr_expect_not(srv_valid_user(big), "10 KB user id is refused");
    big[128] = 0;
    cr_expect(srv_valid_user(big));
    big[129 - 1] = 'u', big[129] = 0;
    cr_expect_not(srv_valid_user(big));
    free(big);
}

Test(token, round_trip_and_uniqueness) {
    char a[SRV_TOKEN_MAX + 1], b[SRV_TOKEN_MAX + 1], ha[33], hb[33], concert[SRV_MAX_ID + 1];
    unsigned char ia[16], ib[16];
    cr_assert(srv_token_id_new(ia, ha) == 0);
    cr_assert(srv_token_id_new(ib, hb) == 0);
    cr_expect_str_neq(ha, hb, "two token ids must differ");
    size_t la = srv_token_format(a, "c1", 42, ha);
    srv_token_format(b, "c1", 9007199254740991LL, hb);
    cr_expect_eq(la, strlen(a));
    cr_expect_eq(strlen(a), 3 + 2 + 1 + 2 + 1 + 32, "token %s: concert, n, 128 bits in 32 hex digits", a);
    srv_token_parts p;
    cr_assert(srv_token_split(a, strlen(a), &p) == 0);
    cr_expect_str_eq(p.concert, "c1");
    cr_expect_eq(p.n, 42);
    cr_expect(!memcmp(p.id, ia, 16));
    cr_assert(srv_token_split(b, strlen(b), &p) == 0, "%s", b);
    cr_expect_eq(p.n, 9007199254740991LL);
    cr_assert(srv_token_parse(a, strlen(a), concert) == 0);
    cr_expect_str_eq(concert, "c1");
    /* The layout before (v1) still parses, as a token of its concert with n = 0. */
    const char *v1 = "v1.c-1.0123456789abcdef0123456789abcdef";
    cr_assert(srv_token_split(v1, strlen(v1), &p) == 0);
    cr_expect_str_eq(p.concert, "c-1");
    cr_expect_eq(p.n, 0);
}

Test(token, forged_shapes_are_refused) {
    char concert[SRV_MAX_ID + 1];
    const char *bad[] = {"", "v1.c1", "v2.c1.0123456789abcdef0123456789abcdef",
                         "v1.c1.0123456789abcdef0123456789abcdeF", "v1.c1.0123456789abcdef0123456789abcde",
                         "v1.c 1.0123456789abcdef0123456789abcdef", "v1..0123456789abcdef0123456789abcdef",
                         "v1.c1x0123456789abcdef0123456789abcdef", "v2.c1.0.0123456789abcdef0123456789abcdef",
                         "v2.c1.07.0123456789abcdef0123456789abcdef", "v2.c1.-7.0123456789abcdef0123456789abcdef",
                         "v2.c1.12345678901234567.0123456789abcdef0123456789abcdef",
                         "v2.c1.9007199254740992.0123456789abcdef0123456789abcdef",
                         "v2..7.0123456789abcdef0123456789abcdef", "v2.7.0123456789abcdef0123456789abcdef",
                         "v2.c.1.7.0123456789abcdef0123456789abcdef", "v3.c1.7.0123456789abcdef0123456789abcdef",
                         "v2.c1.7.0123456789abcdef0123456789abcdef0"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_expect(srv_token_parse(bad[i], strlen(bad[i]), concert) < 0, "'%s' must not parse", bad[i]);
}

/* The token id's hex digits are decoded by a table: every byte value in every one of
 * the 32 places is accepted only if it is a lowercase hex digit, and the id comes out
 * right. */
Test(token, hex_id_every_byte_in_every_place) {
    unsigned char id[16];
    char hex[33], tok[SRV_TOKEN_MAX + 1];
    cr_assert_eq(srv_token_id_new(id, hex), 0);
    size_t len = srv_token_format(tok, "show", 42, hex);
    size_t at = len - 32;
    long wrong = 0;
    for (size_t i = 0; i < 32; i++) {
        char keep = tok[at + i];
        for (unsigned b = 0; b < 256; b++) {
            tok[at + i] = (char)b;
            srv_token_parts p;
            int rc = srv_token_split(tok, len, &p);
            int digit = (b >= '0' && b <= '9') || (b >= 'a' && b <= 'f');
            if (rc != (digit ? 0 : -1)) wrong++;
            if (digit && rc == 0) {
                unsigned v = b <= '9' ? b - '0' : b - 'a' + 10;
                unsigned got = i % 2 ? p.id[i / 2] & 15u : (unsigned)p.id[i / 2] >> 4;
                unsigned other = i % 2 ? (unsigned)p.id[i / 2] >> 4 : p.id[i / 2] & 15u;
                unsigned want_other = i % 2 ? (unsigned)id[i / 2] >> 4 : id[i / 2] & 15u;
                int rest = memcmp(p.id, id, i / 2) || memcmp(p.id + i / 2 + 1, id + i / 2 + 1, 15 - i / 2);
                if (got != v || other != want_other || rest || p.n != 42 || strcmp(p.concert, "show"))
                    wrong++;
            }
        }
        tok[at + i] = keep;
    }
    cr_expect_eq(wrong, 0, "%ld of %d cases wrong", wrong, 32 * 256);
}

Test(token, bearer) {
    size_t n = 0;
    const char *v = "Bearer abc ";
    const char *t = srv_bearer(v, strlen(v), &n);
    cr_assert(t);
    cr_expect_eq(n, 3);
    cr_expect(!strncmp(t, "abc", 3));
    cr_expect_null(srv_bearer("Basic abc", 9, &n));
    cr_expect_null(srv_bearer("Bearer ", 7, &n));
    cr_expect_null(srv_bearer(NULL, 0, &n));
}

Test(sha1, known_vectors) {
    char out[41];
    cc_sha1_hex(out, "abc", 3);
    cr_expect_str_eq(out, "a9993e364706816aba3e25717850c26c9cd0d89d");
    cc_sha1_hex(out, "", 0);
    cr_expect_str_eq(out, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    cc_sha1_hex(out, two, strlen(two));
    cr_expect_str_eq(out, "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
}

Test(redis_url, parses) {
    cc_redis_url u;
    char err[256];
    cr_assert(cc_redis_url_parse(&u, "redis://127.0.0.1:6400/3", err, sizeof err) == 0, "%s", err);
    cr_expect_str_eq(u.host[0], "127.0.0.1");
    cr_expect_eq(u.port[0], 6400);
    cr_expect_eq(u.db, 3);
    cr_expect_not(u.sentinel);
    cr_assert(cc_redis_url_parse(&u, "sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster", err, sizeof err) == 0);
    cr_expect(u.sentinel);
    cr_expect_eq(u.n_hosts, 2);
    cr_expect_eq(u.port[1], 26380);
    cr_expect_str_eq(u.master_name, "mymaster");
    const char *bad[] = {"", "http://x:1", "redis://", "redis://host", "redis://host:0", "redis://host:99999",
                         "redis://host:12/x", "sentinel://h:1", "sentinel://h:1/", "sentinel://h/x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_expect(cc_redis_url_parse(&u, bad[i], err, sizeof err) < 0, "'%s' must not parse", bad[i]);
}

Test(opt, env_then_flags) {
    const char *listen = "default";
    int64_t rate = 5;
    int json = 0;
    const cc_opt opts[] = {
        {"listen", "TEST_CC_LISTEN", CC_OPT_STR, &listen, "ADDR", "x", 0, 0},
        {"rate", "TEST_CC_RATE", CC_OPT_INT, &rate, "N", "x", 0, 100},
        {"json", NULL, CC_OPT_FLAG, &json, NULL, "x", 0, 0},
        {0},
    };
    setenv("TEST_CC_LISTEN", "from-env", 1);
    setenv("TEST_CC_RATE", "7", 1);
    char *argv[] = {"prog", "word", "--rate=9", "--json", "two", NULL};
    char *pos[4];
    int npos = 0;
    cr_assert(cc_opt_parse(opts, 5, argv, "usage", pos, 4, &npos) == 0);
    cr_expect_str_eq(listen, "from-env");
    cr_expect_eq(rate, 9, "the flag overrides the environment");
    cr_expect_eq(json, 1);
    cr_expect_eq(npos, 2);
    cr_expect_str_eq(pos[1], "two");
    char *bad1[] = {"prog", "--rate", "101", NULL};
    cr_expect(cc_opt_parse(opts, 3, bad1, "usage", NULL, 0, NULL) < 0, "out of range");
    char *bad2[] = {"prog", "--nope", NULL};
    cr_expect(cc_opt_parse(opts, 2, bad2, "usage", NULL, 0, NULL) < 0, "unknown flag");
    char *bad3[] = {"prog", "--listen", NULL};
    cr_expect(cc_opt_parse(opts, 2, bad3, "usage", NULL, 0, NULL) < 0, "missing value");
    unsetenv("TEST_CC_LISTEN");
    unsetenv("TEST_CC_RATE");
}

Test(log, levels) {
    cr_expect_eq(cc_log_level_parse("debug"), CC_LOG_DEBUG);
    cr_expect_eq(cc_log_level_parse("error"), CC_LOG_ERROR);
    cr_expect_eq(cc_log_level_parse("loud"), -1);
}

Test(valid, users_without_braces) {
    cr_expect_not(srv_valid_user("a{b"), "braces would move the Redis Cluster hash tag");
    cr_expect_not(srv_valid_user("a}b"));
}

Test(valid, idempotency_keys) {
    cr_expect(srv_valid_key("order-17:retry.2_x"));
    cr_expect_not(srv_valid_key(""));
    cr_expect_not(srv_valid_key("has space"));
    cr_expect_not(srv_valid_key("a|b"), "'|' separates fields in Redis values");
    char big[130];
    memset(big, 'k', 129);
    big[129] = 0;
    cr_expect_not(srv_valid_key(big));
}

Test(valid, ids_with_prefixes) {
    char id[SRV_TOKEN_MAX + 1], concert[SRV_MAX_ID + 1];
    cr_assert(srv_id_new(id, "r1", "show") == 0);
    cr_expect(!strncmp(id, "r1.show.", 8), "%s", id);
    cr_expect(srv_id_parse(id, strlen(id), "r1", concert) == 0);
    cr_expect_str_eq(concert, "show");
    cr_expect(srv_id_parse(id, strlen(id), "p1", concert) < 0, "a reservation id is not a payment id");
    cr_expect(srv_token_parse(id, strlen(id), concert) < 0, "nor a token");
}

Test(valid, secret_compare) {
    cr_expect(srv_secret_eq("sekret", "sekret", 6));
    cr_expect_not(srv_secret_eq("sekret", "sekreT", 6));
    cr_expect_not(srv_secret_eq("sekret", "sek", 3));
    cr_expect_not(srv_secret_eq("sekret", "sekrets", 7));
    cr_expect_not(srv_secret_eq("", "", 0), "an empty key never matches");
}

/* ---- issue 9: the string rule, the wire check, rate-limit buckets, JWTs ---- */
#include <signal.h>

#include "concert/v1/admin.pb-c.h"
#include "concert/v1/queue.pb-c.h"
#include "concert/v1/wallet.pb-c.h"
#include "srv_app.h"
#include "srv_ident.h"
#include "srv_limit.h"
#include "th.h"

static srv_str_rc vs(const char *s) { return srv_valid_string(s, strlen(s), 1024); }

Test(string_rule, utf8_and_controls) {
    cr_expect_eq(vs("alice@example.com"), SRV_STR_OK);
    cr_expect_eq(vs("유저 1 \xf0\x9f\x8e\xab caf\xc3\xa9"), SRV_STR_OK, "2-, 3- and 4-byte UTF-8 are fine");
    cr_expect_eq(srv_valid_string("alice\0evil", 10, 128), SRV_STR_NUL, "NUL inside");
    cr_expect_eq(vs("tab\there"), SRV_STR_CONTROL);
    cr_expect_eq(vs("nl\n"), SRV_STR_CONTROL);
    cr_expect_eq(vs("del\x7f"), SRV_STR_CONTROL);
    cr_expect_eq(vs("c1\xc2\x85"), SRV_STR_CONTROL, "U+0085 is a C1 control");
    cr_expect_eq(vs("\xc2\xa0nbsp"), SRV_STR_OK, "U+00A0 is not a control");
    const char *bad[] = {"\xff", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xc3", "\xe2\x82",
                         "\x80", "\xf0\x9f\x8e", "a\xc3(", "\xf8\x88\x80\x80\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_expect_eq(vs(bad[i]), SRV_STR_BAD_UTF8, "case %zu must be invalid UTF-8", i);
    cr_expect_eq(srv_valid_string("abc", 3, 2), SRV_STR_TOO_LONG);
    cr_expect_eq(srv_valid_string("", 0, 2), SRV_STR_OK, "empty is a matter for the handler");
    cr_expect_eq(srv_valid_field_max("user_id"), 128);
    cr_expect_eq(srv_valid_field_max("concert_id"), 64);
    cr_expect_eq(srv_valid_field_max("something_else"), 1024);
}

/* srv_valid_string checks printable ASCII 8 bytes a step and the rest byte by byte:
 * every byte that is not printable ASCII (0x00-0x1f, 0x7f-0xff), alone in every
 * position of strings of 1..40 bytes (every place in a step, in the tail, at any
 * alignment of the buffer) among printable bytes that include the edges ' ' and '~',
 * is refused for the right reason, also through the wire check, which names the
 * field; the same strings without it, and with UTF-8 in every position, pass. */
static srv_str_rc expected_rc(unsigned b) {
    if (b == 0) return SRV_STR_NUL;
    if (b < 0x20 || b == 0x7f) return SRV_STR_CONTROL;
    return SRV_STR_BAD_UTF8; /* alone among ASCII: a lead byte without its continuation, or a stray one */
}

static void fill_printable(char *s, size_t len, size_t seed) {
    static const char pr[] = " ~aZ0{}!\x7e\x20";
    for (size_t i = 0; i < len; i++) s[i] = pr[(i + seed) % (sizeof pr - 1)];
}

/* The wire bytes of a GetQueueStatusRequest whose token is s[0..len). */
static size_t token_wire(uint8_t *buf, const char *s, size_t len) {
    buf[0] = 0x0a; /* field 1 (token), length-delimited */
    buf[1] = (uint8_t)len;
    memcpy(buf + 2, s, len);
    return len + 2;
}

Test(string_rule, every_bad_byte_in_every_position) {
    const ProtobufCMessageDescriptor *d = &concert__v1__get_queue_status_request__descriptor;
    char store[64 + 8];
    uint8_t wire[80];
    char err[200];
    long checked = 0, wrong = 0;
    char first[400] = "";
    for (size_t align = 0; align < 8; align++) {
        char *s = store + align;
        for (size_t len = 1; len <= 40; len++) {
            fill_printable(s, len, len + align);
            if (srv_valid_string(s, len, 256) != SRV_STR_OK && !wrong++)
                snprintf(first, sizeof first, "printable len %zu align %zu refused", len, align);
            for (size_t pos = 0; pos < len; pos++) {
                for (unsigned b = 0; b < 256; b++) {
                    if (b >= 0x20 && b < 0x7f) continue;
                    char keep = s[pos];
                    s[pos] = (char)b;
                    srv_str_rc rc = srv_valid_string(s, len, 256);
                    size_t n = token_wire(wire, s, len);
                    int wrc = srv_valid_wire(d, wire, n, err, sizeof err);
                    s[pos] = keep;
                    checked++;
                    if ((rc != expected_rc(b) || wrc != -1 || strncmp(err, "token: ", 7) ||
                         !strstr(err, srv_valid_string_reason(expected_rc(b)))) &&
                        !wrong++)
                        snprintf(first, sizeof first, "byte 0x%02x at %zu/%zu, align %zu: rc %d wire %d \"%s\"",
                                 b, pos, len, align, (int)rc, wrc, wrc == -1 ? err : "");
                }
            }
            /* Valid UTF-8 (2- and 4-byte) in every position still passes. */
            static const char *const mb[] = {"\xc3\xa9", "\xf0\x9f\x8e\xab"};
            for (size_t k = 0; k < 2; k++) {
                size_t ml = strlen(mb[k]);
                for (size_t pos = 0; pos + ml <= len; pos++) {
                    fill_printable(s, len, len + align);
                    memcpy(s + pos, mb[k], ml);
                    size_t n = token_wire(wire, s, len);
                    int bad = srv_valid_string(s, len, 256) != SRV_STR_OK;
                    bad |= srv_valid_wire(d, wire, n, err, sizeof err) != 0;
                    if (bad && !wrong++)
                        snprintf(first, sizeof first, "UTF-8 %zu at %zu/%zu, align %zu refused", k, pos, len, align);
                }
            }
        }
    }
    cr_expect_eq(wrong, 0, "%ld of %ld cases wrong; the first: %s", wrong, checked, first);
    cr_expect_gt(checked, 8 * 820 * 160, "every case ran");
}

static size_t pack(const ProtobufCMessage *m, uint8_t *buf) { return protobuf_c_message_pack(m, buf); }

Test(string_rule, wire_check_names_the_field) {
    uint8_t buf[512];
    char err[200];
    Concert__V1__ChargeRequest c = CONCERT__V1__CHARGE_REQUEST__INIT;
    c.user_id = "alice";
    c.amount = 5;
    c.idempotency_key = "k";
    size_t n = pack(&c.base, buf);
    cr_expect_eq(srv_valid_wire(&concert__v1__charge_request__descriptor, buf, n, err, sizeof err), 0);
    /* "alice" -> "al\0ce": same length, a NUL on the wire. */
    uint8_t *p = memmem(buf, n, "alice", 5);
    cr_assert(p);
    p[2] = 0;
    cr_expect_eq(srv_valid_wire(&concert__v1__charge_request__descriptor, buf, n, err, sizeof err), -1);
    cr_expect(strstr(err, "user_id") && strstr(err, "NUL"), "%s", err);
    ProtobufCMessage *m = NULL;
    cr_expect_eq(srv_decode_request(&concert__v1__charge_request__descriptor, buf, n, NULL, &m, err, sizeof err), -1);
    cr_expect_null(m);
    /* Nested: SetQueuePolicyRequest.policy.concert_id, and repeated update_fields. */
    Concert__V1__QueuePolicy pol = CONCERT__V1__QUEUE_POLICY__INIT;
    pol.concert_id = "show";
    char *fields[] = {"admit_rate", "max_actve"};
    Concert__V1__SetQueuePolicyRequest sp = CONCERT__V1__SET_QUEUE_POLICY_REQUEST__INIT;
    sp.policy = &pol;
    sp.n_update_fields = 2;
    sp.update_fields = fields;
    n = pack(&sp.base, buf);
    cr_expect_eq(srv_valid_wire(&concert__v1__set_queue_policy_request__descriptor, buf, n, err, sizeof err), 0);
    p = memmem(buf, n, "show", 4);
    p[1] = '\x01';
    cr_expect_eq(srv_valid_wire(&concert__v1__set_queue_policy_request__descriptor, buf, n, err, sizeof err), -1);
    cr_expect(strstr(err, "policy.concert_id"), "%s", err);
    p[1] = 'h';
    p = memmem(buf, n, "max_actve", 9);
    p[0] = '\xff';
    cr_expect_eq(srv_valid_wire(&concert__v1__set_queue_policy_request__descriptor, buf, n, err, sizeof err), -1);
    cr_expect(strstr(err, "update_fields") && strstr(err, "UTF-8"), "%s", err);
    /* Too long, and bytes that are not a message. */
    char big[200];
    memset(big, 'u', sizeof big - 1);
    big[sizeof big - 1] = 0;
    c.user_id = big;
    n = pack(&c.base, buf);
    cr_expect_eq(srv_valid_wire(&concert__v1__charge_request__descriptor, buf, n, err, sizeof err), -1);
    cr_expect(strstr(err, "user_id: longer than 128"), "%s", err);
    const uint8_t junk[] = {0x0a, 0x05, 'a', 'b'};
    cr_expect_eq(srv_valid_wire(&concert__v1__charge_request__descriptor, junk, sizeof junk, err, sizeof err), -2);
    cr_expect_eq(
        srv_decode_request(&concert__v1__charge_request__descriptor, junk, sizeof junk, NULL, &m, err, sizeof err), -1);
    cr_expect(strstr(err, "not a valid concert.v1.ChargeRequest"), "%s", err);
    const uint8_t group[] = {0x0b, 0x0c};
    cr_expect_eq(srv_valid_wire(&concert__v1__charge_request__descriptor, group, sizeof group, err, sizeof err), -2);
    /* Unknown fields are skipped; an empty message decodes. */
    const uint8_t unknown[] = {0xf8, 0x01, 0x05, 0xfa, 0x01, 0x01, 0xff};
    cr_expect_eq(srv_valid_wire(&concert__v1__charge_request__descriptor, unknown, sizeof unknown, err, sizeof err), 0);
    cr_expect_eq(srv_decode_request(&concert__v1__charge_request__descriptor, NULL, 0, NULL, &m, err, sizeof err), 0);
    cr_assert(m);
    protobuf_c_message_free_unpacked(m, NULL);
}

Test(limits, buckets) {
    srv_limit_spec sp;
    cr_expect_eq(srv_limit_parse("10", &sp), 0);
    cr_expect(sp.rate == 10 && sp.burst == 20, "burst defaults to twice the rate");
    cr_expect_eq(srv_limit_parse("5:3", &sp), 0);
    cr_expect(sp.rate == 5 && sp.burst == 3);
    cr_expect_eq(srv_limit_parse("0", &sp), 0);
    cr_expect_eq(sp.rate, 0);
    cr_expect_eq(srv_limit_parse("off", &sp), 0);
    const char *bad[] = {"", "x", "-1", "5:0", "5:", "5:x", "1e9", "3 "};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) cr_expect_eq(srv_limit_parse(bad[i], &sp), -1, "'%s'", bad[i]);
    srv_limit_spec spec = {.rate = 10, .burst = 3};
    srv_limit *l = srv_limit_new(2);
    uint64_t t = 1000;
    for (int i = 0; i < 3; i++) cr_expect_eq(srv_limit_take(l, &spec, "a", 1, t), 0, "burst %d", i);
    int64_t wait = srv_limit_take(l, &spec, "a", 1, t);
    cr_expect(wait >= 99 && wait <= 100, "one token at 10/s: ~100 ms, got %lld", (long long)wait);
    cr_expect_eq(srv_limit_take(l, &spec, "b", 1, t), 0, "another key has its own bucket");
    cr_expect_eq(srv_limit_take(l, &spec, "a", 1, t + 100), 0, "refilled after the wait");
    cr_expect_eq(srv_limit_count(l), 2);
    cr_expect_eq(srv_limit_take(l, &spec, "c", 1, t), 0, "past max_keys: allowed, not tracked");
    cr_expect_eq(srv_limit_count(l), 2);
    srv_limit_sweep(l, &spec, t + 10000);
    cr_expect_eq(srv_limit_count(l), 0, "full buckets are dropped");
    srv_limit_spec off = {0, 0};
    cr_expect_eq(srv_limit_take(l, &off, "a", 1, t), 0);
    srv_limit_free(l);
}

static const char jwt_secret[] = "a-test-secret-of-at-least-32-bytes-long";

static void hs256(const char *header, const char *payload, char *out) {
    th_jwt_hs256(jwt_secret, strlen(jwt_secret), header, payload, out);
}

Test(jwt, hs256_claims) {
    srv_ident *id = NULL;
    char err[200], sub[SRV_MAX_USER + 1], tok[2048];
    cr_expect_eq(srv_ident_from_bytes(&id, "short", 5, err, sizeof err), -1, "a short secret is refused");
    cr_assert_eq(srv_ident_from_bytes(&id, jwt_secret, strlen(jwt_secret), err, sizeof err), 0, "%s", err);
    cr_expect_str_eq(srv_ident_alg(id), "HS256");
    const int64_t now = 1800000000;
    hs256("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", "{\"sub\":\"caf\\u00e9 \\ud83c\\udfab\",\"exp\":1800000060}", tok);
    cr_assert_eq(srv_ident_verify(id, tok, strlen(tok), now, sub, sizeof sub, err, sizeof err), 0, "%s", err);
    cr_expect_str_eq(sub, "caf\xc3\xa9 \xf0\x9f\x8e\xab", "JSON escapes decode to UTF-8");
    cr_expect_eq(srv_ident_verify(id, tok, strlen(tok), 1800000060, sub, sizeof sub, err, sizeof err), -1);
    cr_expect_str_eq(err, "expired");
    struct {
        const char *h, *p, *why;
    } bad[] = {
        {"{\"alg\":\"none\"}", "{\"sub\":\"a\",\"exp\":1900000000}", "alg must be HS256"},
        {"{\"alg\":\"EdDSA\"}", "{\"sub\":\"a\",\"exp\":1900000000}", "alg must be HS256"},
        {"{\"typ\":\"JWT\"}", "{\"sub\":\"a\",\"exp\":1900000000}", "header without alg"},
        {"{\"alg\":\"HS256\",\"crit\":[\"x\"]}", "{\"sub\":\"a\",\"exp\":1900000000}", "unsupported crit header"},
        {"{\"alg\":\"HS256\",\"alg\":\"HS256\"}", "{\"sub\":\"a\",\"exp\":1900000000}", "header is not a JSON object"},
        {"{\"alg\":\"HS256\"}", "{\"sub\":\"a\"}", "exp (a NumericDate) is required"},
        {"{\"alg\":\"HS256\"}", "{\"sub\":\"a\",\"exp\":\"1900000000\"}", "exp (a NumericDate) is required"},
        {"{\"alg\":\"HS256\"}", "{\"exp\":1900000000}", "sub (the user id, a string) is required"},
        {"{\"alg\":\"HS256\"}", "{\"sub\":42,\"exp\":1900000000}", "sub (the user id, a string) is required"},
        {"{\"alg\":\"HS256\"}", "{\"sub\":\"a\\u0000b\",\"exp\":1900000000}", "sub is not a valid user id"},
        {"{\"alg\":\"HS256\"}", "{\"sub\":\"a\",\"exp\":1900000000,\"nbf\":1900000000}", "not valid yet (nbf)"},
        {"{\"alg\":\"HS256\"}", "{\"sub\":\"a\",\"sub\":\"b\",\"exp\":1900000000}", "payload is not a JSON object"},
        {"{\"alg\":\"HS256\"}", "{\"sub\":\"a\",\"exp\":1900000000} x", "payload is not a JSON object"},
        {"{\"alg\":\"HS256\"}", "[1,2]", "payload is not a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        hs256(bad[i].h, bad[i].p, tok);
        cr_expect_eq(srv_ident_verify(id, tok, strlen(tok), now, sub, sizeof sub, err, sizeof err), -1, "case %zu", i);
        cr_expect_str_eq(err, bad[i].why, "case %zu", i);
    }
    /* Extra claims and nested values are fine. */
    hs256("{\"alg\":\"HS256\",\"kid\":\"k1\"}", "{\"sub\":\"a\",\"exp\":1900000000,\"aud\":[\"x\",{\"y\":null}],\"n\":-1.5e3}",
          tok);
    cr_expect_eq(srv_ident_verify(id, tok, strlen(tok), now, sub, sizeof sub, err, sizeof err), 0, "%s", err);
    /* Shape: three parts, base64url, a signature that matches. */
    const char *shapes[] = {"", "a.b", "a.b.c.d", "!!.e30.x", "e30.e30.e30="};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        cr_expect_eq(srv_ident_verify(id, shapes[i], strlen(shapes[i]), now, sub, sizeof sub, err, sizeof err), -1,
                     "'%s'", shapes[i]);
    hs256("{\"alg\":\"HS256\"}", "{\"sub\":\"a\",\"exp\":1900000000}", tok);
    tok[strlen(tok) - 2] ^= 1;
    cr_expect_eq(srv_ident_verify(id, tok, strlen(tok), now, sub, sizeof sub, err, sizeof err), -1);
    srv_ident_free(id);
}

Test(scripts, the_table_has_a_bound, .signal = SIGABRT) {
    static cc_redis_script s[SRV_MAX_SCRIPTS + 1];
    static const unsigned char body[] = "return 1";
    for (int i = 0; i <= SRV_MAX_SCRIPTS; i++) srv_script_add(&s[i], "x", NULL, 0, body, sizeof body - 1);
}

/* ---- the sale's draw and admission receipts (issue 11) ---- */
#include "cc_receipt.h"
#include "srv_sale.h"

Test(sale, draw_matches_the_documented_hmac) {
    unsigned char seed[32], id[16], sha[32], mac[32];
    for (int i = 0; i < 32; i++) seed[i] = (unsigned char)i;
    for (int i = 0; i < 16; i++) id[i] = (unsigned char)(100 + i);
    char score[SRV_SALE_SCORE_MAX];
    srv_sale_draw(seed, id, sha, mac, score);
    /* Python: hmac.new(bytes(range(32)), sha256(bytes(range(100, 116))).digest(), sha256) */
    static const unsigned char want[8] = {0x87, 0xb4, 0x30, 0x75, 0xd4, 0x4b, 0x6d, 0x52};
    cr_expect(!memcmp(mac, want, 8), "HMAC-SHA256(seed, SHA-256(token id))");
    cr_expect_str_eq(score, "-2116271997107018", "the first 52 bits minus 2^52");
    /* The score orders like the HMAC (where the first 52 bits differ). */
    for (int k = 0; k < 200; k++) {
        unsigned char a[16], b[16], ma[32], mb[32], s1[32];
        char sa[SRV_SALE_SCORE_MAX], sb[SRV_SALE_SCORE_MAX];
        for (int i = 0; i < 16; i++) a[i] = (unsigned char)(k * 7 + i), b[i] = (unsigned char)(k * 13 + 3 * i);
        srv_sale_draw(seed, a, s1, ma, sa);
        srv_sale_draw(seed, b, s1, mb, sb);
        long long na = atoll(sa), nb = atoll(sb);
        cr_assert(na < 0 && nb < 0 && na >= -(1LL << 52));
        if (na != nb) cr_expect_eq(na < nb, memcmp(ma, mb, 32) < 0, "score order = HMAC order (%d)", k);
    }
    char h1[65], h2[65];
    unsigned char s2[32];
    cr_assert(srv_sale_seed_new(s2, h1, h2) == 0);
    cr_expect_eq(strlen(h1), 64);
    unsigned char c[32], back[32];
    cr_assert(srv_sale_unhex(h2, 32, c) == 0 && srv_sale_unhex(h1, 32, back) == 0);
    cr_expect(!memcmp(back, s2, 32));
    unsigned char want_c[32];
    cc_receipt_sha256(s2, 32, want_c);
    cr_expect(!memcmp(c, want_c, 32), "the commitment is SHA-256 of the seed");
}

Test(receipt, sign_verify_and_layout) {
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    cr_assert(k);
    unsigned char pub[32], other[32];
    size_t pl = 32;
    cr_assert(EVP_PKEY_get_raw_public_key(k, pub, &pl) == 1);
    char kid[17];
    cc_receipt_key_id(pub, kid);
    unsigned char id[16] = {1, 2, 3};
    uint8_t buf[CC_RECEIPT_MAX];
    size_t n = cc_receipt_sign(k, kid, "show", id, "alice", 1780000000000LL, 1780000600000LL, buf);
    cr_assert_eq(n, 2 + 4 + 18 + 34 + 34 + 7 + 7 + 64, "the documented length (%zu)", n);
    cr_expect_eq(cc_receipt_verify(buf, n, pub), 0);
    Concert__V1__AdmissionReceipt *r = NULL;
    cr_assert(cc_receipt_parse(buf, n, &r) == 0);
    cr_expect_str_eq(r->key_id, kid);
    cr_expect_eq(r->expires_at_unix_ms, 1780000600000LL);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    for (size_t i = 0; i < n; i++) {
        buf[i] ^= 0x80;
        cr_expect_neq(cc_receipt_verify(buf, n, pub), 0, "byte %zu changed", i);
        buf[i] ^= 0x80;
    }
    memcpy(other, pub, 32);
    other[0] ^= 1;
    cr_expect_neq(cc_receipt_verify(buf, n, other), 0, "another key");
    cr_expect_neq(cc_receipt_verify(buf, 64, pub), 0, "too short");
    EVP_PKEY_free(k);
}

/* ---- issue 13: unpacking into a cc_pb_arena, in place (common/cc_pb.c; the server's
 * requests and concert-bench's replies) ---- */
#include <grpc/grpc.h>

#include "cc_pb.h"

static grpc_byte_buffer *status_bb(const char *token, size_t receipt_len, int n_slices) {
    Concert__V1__QueueStatus st;
    concert__v1__queue_status__init(&st);
    st.token = (char *)token;
    st.state = CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING;
    st.position = 1234567;
    st.concert_id = (char *)"show-1";
    uint8_t *rc = calloc(receipt_len ? receipt_len : 1, 1);
    cr_assert(rc);
    for (size_t i = 0; i < receipt_len; i++) rc[i] = (uint8_t)i;
    st.admission_receipt.data = rc;
    st.admission_receipt.len = receipt_len;
    size_t n = protobuf_c_message_get_packed_size(&st.base);
    uint8_t *buf = malloc(n);
    cr_assert(buf);
    protobuf_c_message_pack(&st.base, buf);
    free(rc);
    grpc_slice parts[2];
    size_t cut = n_slices == 2 ? n / 2 : n;
    parts[0] = grpc_slice_from_copied_buffer((const char *)buf, cut);
    parts[1] = grpc_slice_from_copied_buffer((const char *)buf + cut, n - cut);
    free(buf);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(parts, n_slices == 2 ? 2 : 1);
    grpc_slice_unref(parts[0]);
    grpc_slice_unref(parts[1]);
    return bb;
}

enum { ARENA = 1024 };
typedef struct {
    _Alignas(max_align_t) unsigned char bytes[ARENA];
    cc_pb_arena a;
    ProtobufCAllocator alloc;
} test_arena;

static ProtobufCMessage *unpack_in(test_arena *t, grpc_byte_buffer *bb) {
    cc_pb_arena_init(&t->a, t->bytes, sizeof t->bytes, &t->alloc);
    return cc_pb_unpack_in(&concert__v1__queue_status__descriptor, bb, &t->alloc);
}

Test(cc_pb_arena, one_slice_two_slices_and_a_spill) {
    grpc_init();
    const char *token = "v1.0123456789abcdef0123456789abcdef.0123456789abcdef";
    for (int slices = 1; slices <= 2; slices++) {
        for (size_t rlen = 0; rlen <= 4000; rlen += 4000) {
            grpc_byte_buffer *bb = status_bb(token, rlen, slices);
            test_arena t;
            Concert__V1__QueueStatus *st = (void *)unpack_in(&t, bb);
            grpc_byte_buffer_destroy(bb); /* nothing of the message points into the reply */
            cr_assert(st, "slices %d receipt %zu", slices, rlen);
            cr_expect_str_eq(st->token, token);
            cr_expect_str_eq(st->concert_id, "show-1");
            cr_expect_eq(st->state, CONCERT__V1__QUEUE_STATE__QUEUE_STATE_WAITING);
            cr_expect_eq(st->position, 1234567);
            cr_assert_eq(st->admission_receipt.len, rlen);
            for (size_t i = 0; i < rlen; i++) cr_assert_eq(st->admission_receipt.data[i], (uint8_t)i, "receipt byte %zu", i);
            cr_expect(cc_pb_arena_holds(&t.a, st) && cc_pb_arena_holds(&t.a, st->token),
                      "the message and its token are in the arena");
            if (rlen > ARENA) {
                cr_expect_gt(t.a.spilled, 0, "a receipt bigger than the arena is malloc'd");
                cr_expect_not(cc_pb_arena_holds(&t.a, st->admission_receipt.data));
            } else {
                cr_expect_eq(t.a.spilled, 0, "a QueueStatus without receipt needs no malloc");
            }
            protobuf_c_message_free_unpacked(&st->base, &t.alloc); /* ASan: the spilled piece must be freed */
        }
    }
    test_arena t;
    cr_expect_null(unpack_in(&t, NULL));
    grpc_slice junk = grpc_slice_from_static_string("\x0a\xff\xff\xff\xff\x0f");
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&junk, 1);
    cr_expect_null(unpack_in(&t, bb), "a truncated field is refused");
    grpc_byte_buffer_destroy(bb);
    grpc_shutdown();
}

/* A one-slice buffer is read where it is; a split one once copied flat; none is empty. */
Test(cc_pb_span, in_place_for_one_slice_flat_for_two) {
    grpc_init();
    const char *token = "v1.0123456789abcdef0123456789abcdef.0123456789abcdef";
    for (int slices = 1; slices <= 2; slices++) {
        grpc_byte_buffer *bb = status_bb(token, 100, slices);
        size_t total = grpc_byte_buffer_length(bb);
        const uint8_t *first = GRPC_SLICE_START_PTR(bb->data.raw.slice_buffer.slices[0]);
        cc_pb_span sp;
        cr_assert_eq(cc_pb_span_open(&sp, bb), 0);
        cr_expect_eq(sp.len, total, "slices %d", slices);
        if (slices == 1) cr_expect_eq(sp.data, first, "one slice: no copy");
        else cr_expect_neq(sp.data, first, "two slices: one flat copy");
        Concert__V1__QueueStatus *st = (void *)protobuf_c_message_unpack(&concert__v1__queue_status__descriptor, NULL,
                                                                        sp.len, sp.data);
        cr_assert(st, "the span holds the whole message");
        cr_expect_str_eq(st->token, token);
        protobuf_c_message_free_unpacked(&st->base, NULL);
        cc_pb_span_close(&sp);
        grpc_byte_buffer_destroy(bb);
    }
    cc_pb_span sp;
    cr_assert_eq(cc_pb_span_open(&sp, NULL), 0);
    cr_expect(sp.data == NULL && sp.len == 0);
    cc_pb_span_close(&sp);
    grpc_shutdown();
}
