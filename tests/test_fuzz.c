/* Fuzzing (issue 9): a seeded mutation loop with a fixed iteration budget, run under
 * ASan+UBSan by ctest (no libFuzzer: Debian's gcc has none, and a deterministic loop
 * makes every failure reproducible). CONCERT_FUZZ_SEED and CONCERT_FUZZ_ITERS change
 * the seed and the budget for longer runs.
 *  - every request decoder in process: each method's request type (and the reflection
 *    request) through srv_decode_request, the one the server uses; whatever decodes
 *    must hold the string rule;
 *  - the JWT verifier (x-user-assertion) and the token, id and bearer parsers;
 *  - every method over real gRPC against a real Redis, with mutated requests and
 *    metadata: no crash, no hang, no INTERNAL/UNKNOWN, a clean exit at the end. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "srv_app.h"
#include "srv_ident.h"
#include "srv_valid.h"
#include "th.h"

/* ---- deterministic randomness ---- */

static uint64_t rng_state;

static void rng_seed(uint64_t s) { rng_state = s ? s : 0x9e3779b97f4a7c15ULL; }

static uint64_t rnd(void) {
    uint64_t x = rng_state;
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return rng_state = x;
}

static uint32_t below(uint32_t n) { return n ? (uint32_t)(rnd() % n) : 0; }

static int iters(int dflt) {
    const char *e = getenv("CONCERT_FUZZ_ITERS");
    return e && atoi(e) > 0 ? atoi(e) : dflt;
}

static void seed_from_env(uint64_t dflt) {
    const char *e = getenv("CONCERT_FUZZ_SEED");
    rng_seed(e ? strtoull(e, NULL, 0) : dflt);
}

/* ---- wire seeds from descriptors ---- */

typedef struct {
    uint8_t b[8192];
    size_t n;
} wire;

static void w_varint(wire *w, uint64_t v) {
    while (v >= 0x80 && w->n < sizeof w->b) {
        w->b[w->n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    if (w->n < sizeof w->b) w->b[w->n++] = (uint8_t)v;
}

static void w_raw(wire *w, const void *p, size_t len) {
    if (w->n + len > sizeof w->b) len = sizeof w->b - w->n;
    memcpy(w->b + w->n, p, len);
    w->n += len;
}

static const char *const sample_strings[] = {
    "fz", "d1", "alice", "k-1", "v1.fz.0123456789abcdef0123456789abcdef", "r1.fz.0123456789abcdef0123456789abcdef",
    "p1.fz.0123456789abcdef0123456789abcdef", "admit_rate", "", "유저", "concert.v1.QueueService",
    "concert/v1/queue.proto", "*", "a{b}", "x:y.z",
};
static const uint64_t sample_ints[] = {0, 1, 2, 5, 100, 127, 128, 100000, 100001, 0x7fffffff, 0xffffffffULL,
                                       (uint64_t)-1, (uint64_t)INT64_MIN, 1798000000000ULL};

static void gen(wire *w, const ProtobufCMessageDescriptor *d, int depth) {
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        int reps = f->label == PROTOBUF_C_LABEL_REPEATED ? (int)below(4) : (int)(below(4) != 0);
        for (int r = 0; r < reps; r++) {
            switch (f->type) {
            case PROTOBUF_C_TYPE_STRING: {
                const char *s = sample_strings[below(sizeof sample_strings / sizeof *sample_strings)];
                w_varint(w, (uint64_t)f->id << 3 | 2);
                w_varint(w, strlen(s));
                w_raw(w, s, strlen(s));
                break;
            }
            case PROTOBUF_C_TYPE_BYTES: {
                uint8_t b[16];
                for (int k = 0; k < 16; k++) b[k] = (uint8_t)rnd();
                w_varint(w, (uint64_t)f->id << 3 | 2);
                w_varint(w, 16);
                w_raw(w, b, 16);
                break;
            }
            case PROTOBUF_C_TYPE_MESSAGE: {
                if (depth > 3) break;
                wire sub = {.n = 0};
                gen(&sub, f->descriptor, depth + 1);
                w_varint(w, (uint64_t)f->id << 3 | 2);
                w_varint(w, sub.n);
                w_raw(w, sub.b, sub.n);
                break;
            }
            case PROTOBUF_C_TYPE_FIXED32:
            case PROTOBUF_C_TYPE_SFIXED32:
            case PROTOBUF_C_TYPE_FLOAT: {
                uint32_t v = (uint32_t)sample_ints[below(sizeof sample_ints / sizeof *sample_ints)];
                w_varint(w, (uint64_t)f->id << 3 | 5);
                w_raw(w, &v, 4);
                break;
            }
            case PROTOBUF_C_TYPE_FIXED64:
            case PROTOBUF_C_TYPE_SFIXED64:
            case PROTOBUF_C_TYPE_DOUBLE: {
                uint64_t v = sample_ints[below(sizeof sample_ints / sizeof *sample_ints)];
                w_varint(w, (uint64_t)f->id << 3 | 1);
                w_raw(w, &v, 8);
                break;
            }
            default: /* varints: ints, enums, bool */
                w_varint(w, (uint64_t)f->id << 3);
                w_varint(w, sample_ints[below(sizeof sample_ints / sizeof *sample_ints)]);
                break;
            }
        }
    }
}

/* One mutation (or a few) of `in` into `out`. */
static void mutate(const wire *in, const wire *other, wire *out) {
    *out = *in;
    int rounds = 1 + (int)below(3);
    static const uint8_t interesting[] = {0x00, 0x01, 0x7f, 0x80, 0xff, 0xc0, 0xc3, 0xed, 0xf4, 0x0a, 0x12, 0x1a};
    for (int r = 0; r < rounds; r++) {
        size_t n = out->n;
        switch (below(9)) {
        case 0: /* flip a bit */
            if (n) out->b[below((uint32_t)n)] ^= (uint8_t)(1u << below(8));
            break;
        case 1: /* an interesting byte */
            if (n) out->b[below((uint32_t)n)] = interesting[below(sizeof interesting)];
            break;
        case 2: /* insert bytes */
            if (n + 8 < sizeof out->b) {
                size_t at = below((uint32_t)n + 1), k = 1 + below(8);
                memmove(out->b + at + k, out->b + at, n - at);
                for (size_t j = 0; j < k; j++) out->b[at + j] = (uint8_t)rnd();
                out->n += k;
            }
            break;
        case 3: /* delete a range */
            if (n) {
                size_t at = below((uint32_t)n), k = 1 + below((uint32_t)(n - at));
                memmove(out->b + at, out->b + at + k, n - at - k);
                out->n -= k;
            }
            break;
        case 4: /* truncate */
            out->n = below((uint32_t)n + 1);
            break;
        case 5: /* duplicate a range */
            if (n && n * 2 < sizeof out->b) {
                size_t at = below((uint32_t)n), k = 1 + below((uint32_t)(n - at));
                memmove(out->b + at + k, out->b + at, n - at);
                out->n += k;
            }
            break;
        case 6: /* splice another seed's tail */
            if (other->n) {
                size_t at = below((uint32_t)n + 1), from = below((uint32_t)other->n);
                size_t k = other->n - from;
                if (at + k > sizeof out->b) k = sizeof out->b - at;
                memcpy(out->b + at, other->b + from, k);
                out->n = at + k;
            }
            break;
        case 7: /* a big length or varint */
            if (n) {
                size_t at = below((uint32_t)n);
                uint8_t big[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
                for (size_t j = 0; j < sizeof big && at + j < n; j++) out->b[at + j] = big[j];
            }
            break;
        default: /* an embedded NUL or control byte in a string-looking spot */
            if (n) out->b[below((uint32_t)n)] = (uint8_t)below(0x20);
            break;
        }
    }
}

/* ---- in-process decoders ---- */

/* Every string that survived decoding holds the rule (strlen sees all of it). */
static void check_strings(const ProtobufCMessage *m, int depth) {
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *base = (const char *)m + f->offset;
        size_t count = 1;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) count = *(const size_t *)((const char *)m + f->quantifier_offset);
        /* A oneof member is there only when the case says so (the members share storage). */
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)((const char *)m + f->quantifier_offset) != f->id)
            continue;
        if (f->type == PROTOBUF_C_TYPE_STRING) {
            for (size_t k = 0; k < count; k++) {
                const char *s = f->label == PROTOBUF_C_LABEL_REPEATED ? (*(char *const *const *)base)[k]
                                                                       : *(const char *const *)base;
                if (!s) continue;
                cr_assert_eq(srv_valid_string(s, strlen(s), srv_valid_field_max(f->name)), SRV_STR_OK,
                             "%s.%s decoded but breaks the string rule", d->name, f->name);
            }
        } else if (f->type == PROTOBUF_C_TYPE_MESSAGE && depth < 8) {
            for (size_t k = 0; k < count; k++) {
                const ProtobufCMessage *sub = f->label == PROTOBUF_C_LABEL_REPEATED
                                                  ? (*(ProtobufCMessage *const *const *)base)[k]
                                                  : *(ProtobufCMessage *const *)base;
                if (sub) check_strings(sub, depth + 1);
            }
        }
    }
}

static void fuzz_decoder(const ProtobufCMessageDescriptor *d, int n_iter, int *accepted, int *refused) {
    enum { SEEDS = 6 };
    static wire seeds[SEEDS], in;
    for (int i = 0; i < SEEDS; i++) {
        seeds[i].n = 0;
        gen(&seeds[i], d, 0);
    }
    for (int it = 0; it < n_iter; it++) {
        mutate(&seeds[below(SEEDS)], &seeds[below(SEEDS)], &in);
        ProtobufCMessage *m = NULL;
        char err[300] = "";
        if (srv_decode_request(d, in.n ? in.b : NULL, in.n, NULL, &m, err, sizeof err) == 0) {
            cr_assert(m);
            check_strings(m, 0);
            protobuf_c_message_free_unpacked(m, NULL);
            ++*accepted;
        } else {
            cr_assert_null(m);
            cr_assert(err[0] && (strchr(err, ':') || strstr(err, "not a valid")), "an error names the field: '%s'", err);
            ++*refused;
        }
    }
}

Test(fuzz, every_request_decoder) {
    seed_from_env(0x5eed);
    int n_iter = iters(2000);
    int total_ok = 0, total_bad = 0, decoders = 0;
    for (int i = 0; i < srv_n_methods; i++) {
        if (!srv_methods[i].request) continue;
        int ok = 0, bad = 0;
        fuzz_decoder(srv_methods[i].request, n_iter, &ok, &bad);
        cr_expect_gt(bad, 0, "%s: no mutation was refused", srv_methods[i].path);
        total_ok += ok, total_bad += bad, decoders++;
    }
    int ok = 0, bad = 0;
    fuzz_decoder(&grpc__reflection__v1alpha__server_reflection_request__descriptor, n_iter, &ok, &bad);
    total_ok += ok, total_bad += bad, decoders++;
    fprintf(stderr, "fuzz: %d decoders x %d inputs: %d decoded, %d refused\n", decoders, n_iter, total_ok, total_bad);
}

/* ---- the JWT verifier and the small parsers ---- */

Test(fuzz, assertions_and_parsers) {
    seed_from_env(0xa55e);
    static const char secret[] = "fuzz-secret-0123456789abcdef-0123456789";
    srv_ident *id = NULL;
    char err[200], sub[SRV_MAX_USER + 1];
    cr_assert_eq(srv_ident_from_bytes(&id, secret, strlen(secret), err, sizeof err), 0);
    const char *headers[] = {"{\"alg\":\"HS256\",\"typ\":\"JWT\"}", "{\"alg\":\"HS256\"}"};
    const char *payloads[] = {"{\"sub\":\"alice\",\"exp\":1900000000}",
                              "{\"sub\":\"b\\u00e9\",\"exp\":1900000000,\"nbf\":1,\"aud\":[1,{\"x\":null}]}"};
    static wire seeds[4], in;
    for (int i = 0; i < 4; i++) {
        th_jwt_hs256(secret, strlen(secret), headers[i % 2], payloads[i / 2], (char *)seeds[i].b);
        seeds[i].n = strlen((char *)seeds[i].b);
        cr_assert_eq(srv_ident_verify(id, (char *)seeds[i].b, seeds[i].n, 1800000000, sub, sizeof sub, err, sizeof err),
                     0, "seed %d: %s", i, err);
    }
    int n_iter = iters(2000) * 10, passed = 0;
    for (int it = 0; it < n_iter; it++) {
        int k = (int)below(4);
        mutate(&seeds[k], &seeds[below(4)], &in);
        int rc = srv_ident_verify(id, (char *)in.b, in.n, 1800000000, sub, sizeof sub, err, sizeof err);
        if (rc == 0) {
            /* Only an unchanged token may pass (a mutation cannot keep the HMAC). */
            int same = 0;
            for (int j = 0; j < 4; j++) same |= in.n == seeds[j].n && !memcmp(in.b, seeds[j].b, in.n);
            cr_assert(same, "a mutated assertion verified: %.*s", (int)in.n, (char *)in.b);
            passed++;
        } else {
            cr_assert(err[0]);
        }
        /* The same bytes through the other parsers. */
        char concert[SRV_MAX_ID + 1];
        size_t tl;
        srv_token_parse((char *)in.b, in.n, concert);
        srv_id_parse((char *)in.b, in.n, "r1", concert);
        srv_bearer((char *)in.b, in.n, &tl);
        srv_valid_string((char *)in.b, in.n, 1024);
    }
    fprintf(stderr, "fuzz: %d mutated assertions, %d unchanged ones verified\n", n_iter, passed);
    srv_ident_free(id);
}

/* ---- every method over gRPC ---- */

#define KEY "fuzz-admin-key"

static th_redis redis;
static th_server server;
static cc_client *cli;

static void start(void) {
    memset(&redis, 0, sizeof redis);
    th_redis_start(&redis);
    const char *flags[] = {"--admin-key", KEY, "--rate-user", "0", "--rate-peer", "0", NULL};
    th_server_start(&server, redis.url, flags);
    cli = cc_client_open(server.addr);
}

static void stop(void) {
    th_server_close(&server, &cli);
    th_redis_stop(&redis);
}

Test(fuzz, every_method_over_grpc, .init = start, .fini = stop, .timeout = 300) {
    seed_from_env(0x9a9c);
    cr_assert_eq(th_admin_catalogue(cli, KEY, "fz", "d1", 50, 100), GRPC_STATUS_OK);
    char token[128], auth[160];
    cr_assert_eq(th_active_token(cli, "alice", "fz", token, sizeof token), 0);
    snprintf(auth, sizeof auth, "Bearer %s", token);
    int per_method = iters(2000) / 25;
    if (per_method < 10) per_method = 10;
    int calls = 0, codes[17] = {0};
    th_raw *t = th_raw_open(server.addr);
    for (int i = 0; i < srv_n_methods; i++) {
        const srv_method *m = &srv_methods[i];
        static wire seeds[4], in;
        const ProtobufCMessageDescriptor *d =
            m->request ? m->request : &grpc__reflection__v1alpha__server_reflection_request__descriptor;
        for (int k = 0; k < 4; k++) {
            seeds[k].n = 0;
            gen(&seeds[k], d, 0);
        }
        for (int it = 0; it < per_method; it++) {
            /* A third fresh, well-formed requests (random field values), to get past the
             * decoder into the handlers; the rest mutated. */
            if (below(3) == 0) {
                in.n = 0;
                gen(&in, d, 0);
            } else {
                mutate(&seeds[below(4)], &seeds[below(4)], &in);
            }
            cc_md md[3];
            int n_md = 0;
            if (below(4)) md[n_md++] = (cc_md){"authorization", below(5) ? auth : "Bearer v1.fz.x"};
            if (below(4)) md[n_md++] = (cc_md){"x-admin-key", below(5) ? KEY : "wrong"};
            cc_status st;
            grpc_status_code code;
            if (m->kind == SRV_UNARY) {
                code = th_raw_unary(t, m->path, in.b, in.n, md, n_md, 5000, &st, NULL, NULL, 0);
                cr_assert_neq(code, GRPC_STATUS_DEADLINE_EXCEEDED, "%s hung: %s", m->path, st.message);
            } else if (m->kind == SRV_SERVER_STREAM) {
                /* Streams need a message the client can build: the decodable mutations. */
                ProtobufCMessage *msg = protobuf_c_message_unpack(d, NULL, in.n, in.n ? in.b : (const uint8_t *)"");
                if (!msg) continue;
                cc_stream *s = cc_client_stream(cli, m->path, msg, md, n_md, 300);
                protobuf_c_message_free_unpacked(msg, NULL);
                cr_assert(s);
                /* Drain whatever comes (any descriptor will do: unknown fields are skipped). */
                ProtobufCMessage *out = NULL;
                while (cc_stream_next(s, &grpc__health__v1__health_check_request__descriptor, &out) == 1)
                    protobuf_c_message_free_unpacked(out, NULL);
                cc_stream_close(s, &st);
                code = st.code; /* a valid watch may simply run into its 300 ms deadline */
            } else {
                grpc_slice sl = grpc_slice_from_copied_buffer((const char *)in.b, in.n);
                grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
                grpc_slice_unref(sl);
                th_raw_bidi(t, m->path, &bb, 1, NULL, 0, 5000, &st);
                grpc_byte_buffer_destroy(bb);
                code = st.code;
                cr_assert_neq(code, GRPC_STATUS_DEADLINE_EXCEEDED, "%s hung", m->path);
            }
            cr_assert(code != GRPC_STATUS_UNKNOWN && code != GRPC_STATUS_INTERNAL && code != GRPC_STATUS_DATA_LOSS,
                      "%s answered %s: %s", m->path, cc_status_name(code), st.message);
            if ((int)code >= 0 && (int)code <= 16) codes[code]++;
            calls++;
        }
    }
    th_raw_close(t);
    fprintf(stderr, "fuzz: %d mutated calls over gRPC: OK %d, INVALID_ARGUMENT %d, NOT_FOUND %d, UNAUTHENTICATED %d, "
                    "PERMISSION_DENIED %d, other %d\n",
            calls, codes[0], codes[3], codes[5], codes[16], codes[7],
            calls - codes[0] - codes[3] - codes[5] - codes[16] - codes[7]);
    cr_expect_eq(th_state(cli, token), CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE, "the server still serves");
    if (cli) cc_client_close(cli);
    cli = NULL;
    cr_assert_eq(th_server_stop(&server), 0, "a clean exit, no sanitizer report (log %s)", server.log);
}
