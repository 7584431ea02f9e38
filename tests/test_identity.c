/* Identity mode (--identity-key): IssueToken and every WalletService call need
 * x-user-assertion, a JWT whose sub is the user_id. Assertions are minted by the
 * Python snippet of docs/RUNBOOK.md (run as is, so the documentation stays true) and,
 * for the hostile cases (expired, alg none, key confusion, tampering), in C with
 * OpenSSL. Without the flag the server says at start-up that it trusts user_id. */
#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "concert/v1/wallet.pb-c.h"
#include "th.h"

#define KEY "identity-admin-key"

static th_redis redis;
static th_server server;
static cc_client *cli;
static char dir[128], priv_pem[200], pub_pem[200], secret_file[200], snippet[200];
static const char secret[] = "0123456789abcdef0123456789abcdef-identity-secret";

static void write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    cr_assert(f, "write %s", path);
    cr_assert_eq(fwrite(data, 1, len, f), len);
    fclose(f);
}

/* The ```python block of docs/RUNBOOK.md that starts with "# mint_assertion.py". */
static void extract_snippet(void) {
    FILE *f = fopen(TH_SOURCE_DIR "/docs/RUNBOOK.md", "r");
    cr_assert(f, "docs/RUNBOOK.md");
    static char doc[65536];
    size_t n = fread(doc, 1, sizeof doc - 1, f);
    fclose(f);
    doc[n] = '\0';
    char *start = strstr(doc, "```python\n# mint_assertion.py");
    cr_assert(start, "docs/RUNBOOK.md has no mint_assertion.py snippet");
    start += strlen("```python\n");
    char *end = strstr(start, "\n```");
    cr_assert(end);
    write_file(snippet, start, (size_t)(end - start) + 1);
}

static void make_keys(void) {
    snprintf(dir, sizeof dir, "/tmp/concert-test-identity-XXXXXX");
    cr_assert(mkdtemp(dir));
    snprintf(priv_pem, sizeof priv_pem, "%s/ed25519.pem", dir);
    snprintf(pub_pem, sizeof pub_pem, "%s/ed25519.pub", dir);
    snprintf(secret_file, sizeof secret_file, "%s/hs256.secret", dir);
    snprintf(snippet, sizeof snippet, "%s/mint_assertion.py", dir);
    EVP_PKEY *k = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
    cr_assert(ctx && EVP_PKEY_keygen_init(ctx) == 1 && EVP_PKEY_keygen(ctx, &k) == 1);
    EVP_PKEY_CTX_free(ctx);
    FILE *f = fopen(priv_pem, "w");
    PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    f = fopen(pub_pem, "w");
    PEM_write_PUBKEY(f, k);
    fclose(f);
    EVP_PKEY_free(k);
    char line[sizeof secret + 1];
    snprintf(line, sizeof line, "%s\n", secret);
    write_file(secret_file, line, strlen(line));
    extract_snippet();
}

static void start_with_key(const char *keyfile) {
    make_keys();
    memset(&redis, 0, sizeof redis);
    th_redis_start(&redis);
    const char *flags[] = {"--admin-key", KEY, "--identity-key", keyfile, NULL};
    th_server_start(&server, redis.url, keyfile ? flags : (const char *const[]){"--admin-key", KEY, NULL});
    cli = cc_client_open(server.addr);
    cr_assert_eq(th_admin_concert(cli, KEY, "ident"), GRPC_STATUS_OK);
}

static void start_eddsa(void) { start_with_key(pub_pem); }
static void start_hs256(void) { start_with_key(secret_file); }
static void start_trusting(void) { start_with_key(NULL); }

static void stop(void) {
    th_server_close(&server, &cli);
    th_redis_stop(&redis);
    th_rmrf(dir);
}

static void end_test(void) {
    int rc = th_server_close(&server, &cli);
    cr_assert_eq(rc, 0, "concert-server exit status (log %s)", server.log);
}

/* Runs the documentation's snippet. */
static void mint_py(const char *keyfile, const char *sub, int ttl, char *out, size_t len) {
    char cmd[800];
    snprintf(cmd, sizeof cmd, "python3 '%s' --key '%s' --sub '%s' --ttl %d", snippet, keyfile, sub, ttl);
    FILE *p = popen(cmd, "r");
    cr_assert(p, "%s", cmd);
    cr_assert(fgets(out, (int)len, p), "the snippet printed nothing: %s", cmd);
    cr_assert_eq(pclose(p), 0, "the snippet failed: %s", cmd);
    out[strcspn(out, "\n")] = '\0';
}

/* A JWT from raw header and payload JSON, signed "EdDSA" (Ed25519 private key),
 * "HS256" (key bytes) or not at all ("none"). */
static void mint_c(const char *how, const void *key, size_t keylen, const char *header, const char *payload, char *out) {
    char h[512], p[1024];
    th_b64url((const unsigned char *)header, strlen(header), h);
    th_b64url((const unsigned char *)payload, strlen(payload), p);
    char input[1600];
    snprintf(input, sizeof input, "%s.%s", h, p);
    unsigned char sig[128];
    size_t sl = 0;
    if (!strcmp(how, "HS256")) {
        unsigned int ml = 0;
        HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)input, strlen(input), sig, &ml);
        sl = ml;
    } else if (!strcmp(how, "EdDSA")) {
        FILE *f = fopen(priv_pem, "r");
        EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        sl = sizeof sig;
        cr_assert(EVP_DigestSignInit(ctx, NULL, NULL, NULL, k) == 1 &&
                  EVP_DigestSign(ctx, sig, &sl, (const unsigned char *)input, strlen(input)) == 1);
        EVP_MD_CTX_free(ctx);
        EVP_PKEY_free(k);
    }
    char s64[200];
    th_b64url(sig, sl, s64);
    sprintf(out, "%s.%s", input, s64);
}

static grpc_status_code issue_as(const char *user, const char *assertion, cc_status *st) {
    Concert__V1__IssueTokenRequest req = CONCERT__V1__ISSUE_TOKEN_REQUEST__INIT;
    req.user_id = (char *)user;
    req.concert_id = "ident";
    cc_md md[] = {{"x-user-assertion", assertion}};
    return cc_client_unary(cli, "/concert.v1.QueueService/IssueToken", &req.base, NULL, NULL, md, assertion ? 1 : 0,
                           5000, st);
}

static grpc_status_code balance_as(const char *user, const char *assertion, cc_status *st) {
    Concert__V1__GetBalanceRequest req = CONCERT__V1__GET_BALANCE_REQUEST__INIT;
    req.user_id = (char *)user;
    cc_md md[] = {{"x-user-assertion", assertion}};
    return cc_client_unary(cli, "/concert.v1.WalletService/GetBalance", &req.base, NULL, NULL, md, assertion ? 1 : 0,
                           5000, st);
}

static grpc_status_code charge_as(const char *user, const char *assertion, cc_status *st) {
    Concert__V1__ChargeRequest req = CONCERT__V1__CHARGE_REQUEST__INIT;
    req.user_id = (char *)user;
    req.amount = 100;
    req.idempotency_key = "id-1";
    cc_md md[] = {{"x-user-assertion", assertion}};
    return cc_client_unary(cli, "/concert.v1.WalletService/Charge", &req.base, NULL, NULL, md, assertion ? 1 : 0, 5000,
                           st);
}

static void expect(grpc_status_code got, const cc_status *st, grpc_status_code want, const char *needle,
                   const char *what) {
    cr_expect_eq(got, want, "%s: want %s, got %s %s", what, cc_status_name(want), cc_status_name(got), st->message);
    if (needle) cr_expect(strstr(st->message, needle), "%s: '%s' must mention '%s'", what, st->message, needle);
}

Test(identity, eddsa_assertions, .init = start_eddsa, .fini = stop, .timeout = 60) {
    cc_status st;
    char jwt[2048], bad[2048];
    mint_py(priv_pem, "alice", 60, jwt, sizeof jwt);
    expect(issue_as("alice", jwt, &st), &st, GRPC_STATUS_OK, NULL, "IssueToken with alice's assertion");
    expect(balance_as("alice", jwt, &st), &st, GRPC_STATUS_OK, NULL, "GetBalance");
    expect(charge_as("alice", jwt, &st), &st, GRPC_STATUS_OK, NULL, "Charge");
    /* Missing, another user's. */
    expect(issue_as("alice", NULL, &st), &st, GRPC_STATUS_UNAUTHENTICATED, "x-user-assertion", "no assertion");
    expect(balance_as("alice", NULL, &st), &st, GRPC_STATUS_UNAUTHENTICATED, "x-user-assertion", "GetBalance without");
    expect(charge_as("alice", NULL, &st), &st, GRPC_STATUS_UNAUTHENTICATED, "x-user-assertion", "Charge without");
    expect(issue_as("bob", jwt, &st), &st, GRPC_STATUS_PERMISSION_DENIED, "user_id", "alice's assertion for bob");
    expect(charge_as("bob", jwt, &st), &st, GRPC_STATUS_PERMISSION_DENIED, "user_id", "Charge for bob");
    /* Expired; not valid yet; no exp. */
    char payload[256];
    long now = (long)time(NULL);
    snprintf(payload, sizeof payload, "{\"sub\":\"alice\",\"exp\":%ld}", now - 5);
    mint_c("EdDSA", NULL, 0, "{\"alg\":\"EdDSA\"}", payload, bad);
    expect(issue_as("alice", bad, &st), &st, GRPC_STATUS_UNAUTHENTICATED, "expired", "expired");
    snprintf(payload, sizeof payload, "{\"sub\":\"alice\",\"exp\":%ld,\"nbf\":%ld}", now + 60, now + 30);
    mint_c("EdDSA", NULL, 0, "{\"alg\":\"EdDSA\"}", payload, bad);
    expect(issue_as("alice", bad, &st), &st, GRPC_STATUS_UNAUTHENTICATED, "nbf", "not yet valid");
    mint_c("EdDSA", NULL, 0, "{\"alg\":\"EdDSA\"}", "{\"sub\":\"alice\"}", bad);
    expect(issue_as("alice", bad, &st), &st, GRPC_STATUS_UNAUTHENTICATED, "exp", "no exp");
    /* alg none; the public key used as an HMAC secret (key confusion). */
    snprintf(payload, sizeof payload, "{\"sub\":\"alice\",\"exp\":%ld}", now + 60);
    mint_c("none", NULL, 0, "{\"alg\":\"none\"}", payload, bad);
    expect(issue_as("alice", bad, &st), &st, GRPC_STATUS_UNAUTHENTICATED, "alg", "alg none");
    FILE *f = fopen(pub_pem, "rb");
    char pub[512];
    size_t pl = fread(pub, 1, sizeof pub, f);
    fclose(f);
    mint_c("HS256", pub, pl, "{\"alg\":\"HS256\"}", payload, bad);
    expect(issue_as("alice", bad, &st), &st, GRPC_STATUS_UNAUTHENTICATED, "alg", "key confusion");
    /* Tampered: alice's signature on bob's claims. */
    char bob[2048];
    mint_py(priv_pem, "bob", 60, bob, sizeof bob);
    char *a2 = strchr(jwt, '.'), *b1 = strchr(bob, '.'), *b2 = strchr(b1 + 1, '.');
    *b2 = '\0';
    snprintf(bad, sizeof bad, "%s%s", bob, strrchr(a2, '.'));
    expect(issue_as("bob", bad, &st), &st, GRPC_STATUS_UNAUTHENTICATED, "signature", "tampered");
    /* Garbage. */
    expect(issue_as("alice", "not.a.jwt", &st), &st, GRPC_STATUS_UNAUTHENTICATED, "x-user-assertion", "garbage");
    /* From admission on, the token is the identity: GetQueueStatus needs no assertion. */
    Concert__V1__QueueStatus *s = NULL;
    cc_md md[] = {{"x-user-assertion", jwt}};
    Concert__V1__IssueTokenRequest req = CONCERT__V1__ISSUE_TOKEN_REQUEST__INIT;
    req.user_id = "alice";
    req.concert_id = "ident";
    cr_assert_eq(cc_client_unary(cli, "/concert.v1.QueueService/IssueToken", &req.base, &concert__v1__queue_status__descriptor,
                                 (ProtobufCMessage **)&s, md, 1, 5000, &st),
                 GRPC_STATUS_OK);
    cr_expect_gt(th_state(cli, s->token), 0, "GetQueueStatus works with the token alone");
    protobuf_c_message_free_unpacked(&s->base, NULL);
    cr_expect(th_server_log_has(&server, "event=identity_mode alg=EdDSA"), "log %s", server.log);
    end_test();
}

Test(identity, hs256_assertions, .init = start_hs256, .fini = stop, .timeout = 60) {
    cc_status st;
    char jwt[2048], bad[2048];
    mint_py(secret_file, "carol", 60, jwt, sizeof jwt);
    expect(issue_as("carol", jwt, &st), &st, GRPC_STATUS_OK, NULL, "HS256 from the snippet");
    expect(charge_as("carol", jwt, &st), &st, GRPC_STATUS_OK, NULL, "Charge");
    char payload[128];
    snprintf(payload, sizeof payload, "{\"sub\":\"carol\",\"exp\":%ld}", (long)time(NULL) + 60);
    mint_c("HS256", "another-secret-of-at-least-32-bytes!!", 37, "{\"alg\":\"HS256\"}", payload, bad);
    expect(issue_as("carol", bad, &st), &st, GRPC_STATUS_UNAUTHENTICATED, "signature", "wrong secret");
    mint_c("EdDSA", NULL, 0, "{\"alg\":\"EdDSA\"}", payload, bad);
    expect(issue_as("carol", bad, &st), &st, GRPC_STATUS_UNAUTHENTICATED, "alg", "EdDSA to an HS256 server");
    /* Duplicate claims are ambiguous: refused. */
    snprintf(payload, sizeof payload, "{\"sub\":\"mallory\",\"sub\":\"carol\",\"exp\":%ld}", (long)time(NULL) + 60);
    mint_c("HS256", secret, strlen(secret), "{\"alg\":\"HS256\"}", payload, bad);
    expect(issue_as("carol", bad, &st), &st, GRPC_STATUS_UNAUTHENTICATED, "x-user-assertion", "duplicate sub");
    end_test();
}

Test(identity, without_a_key_user_id_is_trusted_and_said_so, .init = start_trusting, .fini = stop, .timeout = 60) {
    cc_status st;
    expect(issue_as("dave", NULL, &st), &st, GRPC_STATUS_OK, NULL, "gateway mode");
    cr_expect(th_server_log_has(&server, "event=identity_trusted"), "the start-up log says user_id is trusted (%s)",
              server.log);
    end_test();
}

Test(identity, bad_key_files_are_a_usage_error, .init = start_trusting, .fini = stop, .timeout = 60) {
    char short_secret[220];
    snprintf(short_secret, sizeof short_secret, "%s/short", dir);
    write_file(short_secret, "too-short\n", 10);
    const char *files[] = {short_secret, "/nonexistent/key.pem", priv_pem};
    for (int i = 0; i < 3; i++) {
        th_server b;
        memset(&b, 0, sizeof b);
        const char *flags[] = {"--identity-key", files[i], NULL};
        th_server_spawn(&b, "127.0.0.1:0", redis.url, flags);
        cr_expect_eq(th_server_wait_exit(&b, 10000), 2, "--identity-key %s must be refused (log %s)", files[i], b.log);
        cr_expect(th_server_log_has(&b, "identity-key"), "the reason names the flag (log %s)", b.log);
    }
    end_test();
}
