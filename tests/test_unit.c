/* Unit tests of pure logic: ids and tokens, options, Redis URLs, SHA-1. */
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
    char a[SRV_TOKEN_MAX + 1], b[SRV_TOKEN_MAX + 1], concert[SRV_MAX_ID + 1];
    cr_assert(srv_token_new(a, "c1") == 0);
    cr_assert(srv_token_new(b, "c1") == 0);
    cr_expect_str_neq(a, b, "two tokens must differ");
    cr_expect_eq(strlen(a), 3 + 2 + 1 + 32, "token %s has 128 bits in 32 hex digits", a);
    cr_assert(srv_token_parse(a, strlen(a), concert) == 0);
    cr_expect_str_eq(concert, "c1");
}

Test(token, forged_shapes_are_refused) {
    char concert[SRV_MAX_ID + 1];
    const char *bad[] = {"", "v1.c1", "v2.c1.0123456789abcdef0123456789abcdef",
                         "v1.c1.0123456789abcdef0123456789abcdeF", "v1.c1.0123456789abcdef0123456789abcde",
                         "v1.c 1.0123456789abcdef0123456789abcdef", "v1..0123456789abcdef0123456789abcdef",
                         "v1.c1x0123456789abcdef0123456789abcdef"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_expect(srv_token_parse(bad[i], strlen(bad[i]), concert) < 0, "'%s' must not parse", bad[i]);
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
