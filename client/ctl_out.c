/* ctl_out: concertctl's shared plumbing (see ctl.h): calls with the command's
 * metadata and deadline, the exit-status contract, error lines, and output (human
 * lines via the command's printer, or generic proto3-style JSON from protobuf-c
 * descriptors). Owns the bearer string of a call, nothing longer-lived; never exits. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"

/* ---- calls ---- */

cc_client *ctl_client(ctl_ctx *ctx) {
    char err[8]; /* the TLS files were checked by concertctl.c already */
    if (!ctx->client) ctx->client = cc_client_open_tls(ctx->server, &ctx->tls, err, sizeof err);
    return ctx->client;
}

int ctl_timeout(const ctl_ctx *ctx, int dflt) { return ctx->timeout_ms >= 0 ? (int)ctx->timeout_ms : dflt; }

/* Fills md[0..] from the command's needs; *bearer_out is malloc'd (or NULL). */
static int build_md(const ctl_ctx *ctx, cc_md md[2], char **bearer_out) {
    int n = 0;
    *bearer_out = NULL;
    int needs = ctx->cmd ? ctx->cmd->needs : 0;
    if ((needs & CTL_SEND_AUTH) && ctx->token && *ctx->token) {
        size_t len = strlen(ctx->token) + sizeof "Bearer ";
        char *b = malloc(len);
        if (!b) abort();
        snprintf(b, len, "Bearer %s", ctx->token);
        md[n++] = (cc_md){"authorization", b};
        *bearer_out = b;
    }
    if ((needs & CTL_SEND_ADMIN) && ctx->admin_key && *ctx->admin_key)
        md[n++] = (cc_md){"x-admin-key", ctx->admin_key};
    return n;
}

static grpc_status_code unary(ctl_ctx *ctx, const char *method, const ProtobufCMessage *req,
                              const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp_out, cc_status *st) {
    cc_md md[2];
    char *bearer;
    int n_md = build_md(ctx, md, &bearer);
    grpc_status_code code = cc_client_unary(ctl_client(ctx), method, req, resp_desc, resp_out, md, n_md,
                                            ctl_timeout(ctx, CTL_DEFAULT_TIMEOUT_MS), st);
    free(bearer);
    return code;
}

int ctl_unary(ctl_ctx *ctx, const char *method, const ProtobufCMessage *req,
              const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp_out) {
    cc_status st;
    return unary(ctx, method, req, resp_desc, resp_out, &st) == GRPC_STATUS_OK ? CTL_EXIT_OK : ctl_fail(&st);
}

/* A string field of `msg` by name (NULL if it has none). */
static char **str_field(ProtobufCMessage *msg, const char *name) {
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(msg->descriptor, name);
    return f && f->type == PROTOBUF_C_TYPE_STRING ? (char **)((char *)msg + f->offset) : NULL;
}

void ctl_pages_free(ctl_pages *p) {
    if (p->msg) {
        char *base = (char *)p->msg;
        free(*(void ***)(base + p->items->offset));
        *(void ***)(base + p->items->offset) = p->own_items;
        *(size_t *)(base + p->items->quantifier_offset) = p->own_n;
        *str_field(p->msg, "next_page_token") = p->own_token;
    }
    for (size_t i = 0; i < p->n_pages; i++) protobuf_c_message_free_unpacked(p->pages[i], NULL);
    free(p->pages);
    memset(p, 0, sizeof *p);
}

#define PAGE_RETRIES 5

int ctl_unary_pages(ctl_ctx *ctx, const char *method, ProtobufCMessage *req,
                    const ProtobufCMessageDescriptor *resp_desc, const char *items, ctl_pages *out) {
    memset(out, 0, sizeof *out);
    out->items = protobuf_c_message_descriptor_get_field_by_name(resp_desc, items);
    char **req_token = str_field(req, "page_token");
    if (!out->items || out->items->label != PROTOBUF_C_LABEL_REPEATED || !req_token) abort(); /* a programming error */
    char *empty = *req_token, *token = NULL;
    size_t total = 0;
    int rc = CTL_EXIT_OK;
    for (;;) {
        *req_token = token ? token : empty;
        ProtobufCMessage *resp;
        cc_status st;
        grpc_status_code code;
        /* A rate limit met while following the pages: wait as long as it says (a few
         * times), as a polite client does. */
        for (int tries = 0;; tries++) {
            code = unary(ctx, method, req, resp_desc, &resp, &st);
            if (code != GRPC_STATUS_RESOURCE_EXHAUSTED || st.retry_after_ms <= 0 || st.retry_after_ms > 10000 ||
                tries == PAGE_RETRIES)
                break;
            struct timespec ts = {st.retry_after_ms / 1000, (long)(st.retry_after_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (code != GRPC_STATUS_OK) {
            rc = ctl_fail(&st);
            break;
        }
        out->pages = realloc(out->pages, (out->n_pages + 1) * sizeof *out->pages);
        if (!out->pages) abort();
        out->pages[out->n_pages++] = resp;
        total += *(size_t *)((char *)resp + out->items->quantifier_offset);
        const char *next = *str_field(resp, "next_page_token");
        if (!next || !*next) break;
        if (token && !strcmp(token, next)) {
            fprintf(stderr, "concertctl: %s: the server answered the same page token twice\n", method);
            rc = GRPC_STATUS_INTERNAL;
            break;
        }
        free(token);
        token = strdup(next);
        if (!token) abort();
    }
    *req_token = empty;
    free(token);
    if (rc) {
        ctl_pages_free(out);
        return rc;
    }
    /* The view: every page's items in the first page's message. */
    char *base = (char *)out->pages[0];
    void **all = malloc((total ? total : 1) * sizeof *all);
    if (!all) abort();
    size_t k = 0;
    for (size_t i = 0; i < out->n_pages; i++) {
        char *pb = (char *)out->pages[i];
        size_t n = *(size_t *)(pb + out->items->quantifier_offset);
        memcpy(all + k, *(void ***)(pb + out->items->offset), n * sizeof *all);
        k += n;
    }
    out->msg = out->pages[0];
    out->own_items = *(void ***)(base + out->items->offset);
    out->own_n = *(size_t *)(base + out->items->quantifier_offset);
    *(void ***)(base + out->items->offset) = all;
    *(size_t *)(base + out->items->quantifier_offset) = total;
    char **tok = str_field(out->msg, "next_page_token");
    out->own_token = *tok;
    *tok = (char *)"";
    return CTL_EXIT_OK;
}

cc_stream *ctl_stream(ctl_ctx *ctx, const char *method, const ProtobufCMessage *req, int *exit_out) {
    cc_md md[2];
    char *bearer;
    int n_md = build_md(ctx, md, &bearer);
    cc_stream *s = cc_client_stream(ctl_client(ctx), method, req, md, n_md, ctl_timeout(ctx, 0));
    free(bearer);
    *exit_out = CTL_EXIT_OK;
    if (!s) {
        cc_status st = {.code = GRPC_STATUS_INTERNAL};
        snprintf(st.message, sizeof st.message, "could not start the call %s", method);
        *exit_out = ctl_fail(&st);
    }
    return s;
}

int ctl_stream_end(cc_stream *s) {
    cc_status st;
    cc_stream_close(s, &st);
    return st.code == GRPC_STATUS_OK ? CTL_EXIT_OK : ctl_fail(&st);
}

int ctl_stream_bad(cc_stream *s, const ProtobufCMessageDescriptor *desc) {
    cc_stream_close(s, NULL);
    cc_status st = {.code = GRPC_STATUS_INTERNAL};
    snprintf(st.message, sizeof st.message, "response is not a valid %s", desc->name);
    return ctl_fail(&st);
}

/* ---- errors ---- */

int ctl_exit_code(grpc_status_code code) {
    if ((int)code == 0) return CTL_EXIT_OK;
    if ((int)code < 0 || (int)code > 16) return GRPC_STATUS_UNKNOWN; /* not a known code */
    return (int)code; /* UNKNOWN (2) shares its status with usage errors */
}

int ctl_fail(const cc_status *st) {
    if (st->message[0])
        fprintf(stderr, "concertctl: %s: %s\n", cc_status_name(st->code), st->message);
    else
        fprintf(stderr, "concertctl: %s\n", cc_status_name(st->code));
    return ctl_exit_code(st->code);
}

int ctl_usage_error(const ctl_ctx *ctx, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (ctx && ctx->cmd)
        fprintf(stderr, "concertctl: %s: %s (see concertctl %s --help)\n", ctx->cmd->name, msg, ctx->cmd->name);
    else
        fprintf(stderr, "concertctl: %s (see concertctl --help)\n", msg);
    return CTL_EXIT_USAGE;
}

int ctl_require(const ctl_ctx *ctx, const char *flag, const char *value) {
    if (value) return CTL_EXIT_OK; /* given but empty: the server says what is wrong */
    return ctl_usage_error(ctx, "--%s is required", flag);
}

/* ---- JSON ---- */

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) len = 2, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef) len = 3, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4) len = 4, min = 0x10000;
    else return 0;
    if (len > n) return 0;
    unsigned cp = c & (0x3f >> (len - 1));
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

void ctl_json_string(FILE *out, const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    fputc('"', out);
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        if (c == '"' || c == '\\') {
            fputc('\\', out), fputc(c, out), i++;
        } else if (c < 0x20) {
            switch (c) {
            case '\n': fputs("\\n", out); break;
            case '\r': fputs("\\r", out); break;
            case '\t': fputs("\\t", out); break;
            case '\b': fputs("\\b", out); break;
            case '\f': fputs("\\f", out); break;
            default: fprintf(out, "\\u%04x", c);
            }
            i++;
        } else if (c < 0x80) {
            fputc(c, out), i++;
        } else {
            size_t len = utf8_len(s + i, n - i);
            if (len == 0) {
                fputs("\\ufffd", out);
                i++;
            } else {
                fwrite(s + i, 1, len, out);
                i += len;
            }
        }
    }
    fputc('"', out);
}

/* proto3 JSON name: snake_case -> lowerCamelCase (protoc's ToJsonName). */
static void put_json_name(FILE *out, const char *name) {
    fputc('"', out);
    int up = 0;
    for (const char *p = name; *p; p++) {
        if (*p == '_') {
            up = 1;
            continue;
        }
        fputc(up && *p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p, out);
        up = 0;
    }
    fputc('"', out);
}

static void put_base64(FILE *out, const uint8_t *d, size_t n) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    fputc('"', out);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16;
        if (i + 1 < n) v |= (uint32_t)d[i + 1] << 8;
        if (i + 2 < n) v |= d[i + 2];
        fputc(tab[(v >> 18) & 63], out);
        fputc(tab[(v >> 12) & 63], out);
        fputc(i + 1 < n ? tab[(v >> 6) & 63] : '=', out);
        fputc(i + 2 < n ? tab[v & 63] : '=', out);
    }
    fputc('"', out);
}

static void put_double(FILE *out, double v, int digits) {
    if (isnan(v)) fputs("\"NaN\"", out);
    else if (isinf(v)) fputs(v > 0 ? "\"Infinity\"" : "\"-Infinity\"", out);
    else fprintf(out, "%.*g", digits, v);
}

static size_t elem_size(ProtobufCType t) {
    switch (t) {
    case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32: case PROTOBUF_C_TYPE_ENUM:
        return 4;
    case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
        return 8;
    case PROTOBUF_C_TYPE_FLOAT: return sizeof(float);
    case PROTOBUF_C_TYPE_DOUBLE: return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING: return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE: return sizeof(ProtobufCMessage *);
    }
    return 0;
}

static void put_message(FILE *out, const ProtobufCMessage *msg);

/* Writes the value of field `f` stored at `p`; `as_key` quotes numbers (map keys). */
static void put_value(FILE *out, const ProtobufCFieldDescriptor *f, const void *p, int as_key) {
    const char *q = as_key ? "\"" : "";
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
        fprintf(out, "%s%d%s", q, *(const int32_t *)p, q);
        break;
    case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32:
        fprintf(out, "%s%u%s", q, *(const uint32_t *)p, q);
        break;
    case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
        fprintf(out, "%s%lld%s", q, (long long)*(const int64_t *)p, q);
        break;
    case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
        fprintf(out, "%s%llu%s", q, (unsigned long long)*(const uint64_t *)p, q);
        break;
    case PROTOBUF_C_TYPE_FLOAT: put_double(out, *(const float *)p, 9); break;
    case PROTOBUF_C_TYPE_DOUBLE: put_double(out, *(const double *)p, 17); break;
    case PROTOBUF_C_TYPE_BOOL:
        fprintf(out, "%s%s%s", q, *(const protobuf_c_boolean *)p ? "true" : "false", q);
        break;
    case PROTOBUF_C_TYPE_ENUM: {
        int v = *(const int *)p;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, v);
        if (ev) ctl_json_string(out, ev->name, strlen(ev->name));
        else fprintf(out, "%d", v);
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        ctl_json_string(out, s ? s : "", s ? strlen(s) : 0);
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        put_base64(out, b->data, b->len);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *m = *(ProtobufCMessage *const *)p;
        if (m) put_message(out, m);
        else fputs("null", out);
        break;
    }
    }
}

/* protoc-c turns `map<K, V>` into a repeated XxxEntry message with key = 1, value = 2. */
static int is_map_entry(const ProtobufCMessageDescriptor *d) {
    size_t nl = strlen(d->name);
    return d->n_fields == 2 && nl > 5 && !strcmp(d->name + nl - 5, "Entry") && d->fields[0].id == 1 &&
           !strcmp(d->fields[0].name, "key") && d->fields[1].id == 2 && !strcmp(d->fields[1].name, "value");
}

static void put_repeated(FILE *out, const ProtobufCFieldDescriptor *f, const char *base, size_t n) {
    const char *arr = *(char *const *)base;
    size_t sz = elem_size(f->type);
    const ProtobufCMessageDescriptor *md = f->type == PROTOBUF_C_TYPE_MESSAGE ? f->descriptor : NULL;
    if (md && is_map_entry(md)) {
        fputc('{', out);
        for (size_t i = 0; i < n; i++) {
            const char *e = *(char *const *)(arr + i * sz);
            if (i) fputc(',', out);
            const ProtobufCFieldDescriptor *kf = &md->fields[0], *vf = &md->fields[1];
            put_value(out, kf, e + kf->offset, 1); /* JSON object keys are strings */
            fputc(':', out);
            put_value(out, vf, e + vf->offset, 0);
        }
        fputc('}', out);
        return;
    }
    fputc('[', out);
    for (size_t i = 0; i < n; i++) {
        if (i) fputc(',', out);
        put_value(out, f, arr + i * sz, 0);
    }
    fputc(']', out);
}

static void put_message(FILE *out, const ProtobufCMessage *msg) {
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    const char *base = (const char *)msg;
    int first = 1;
    fputc('{', out);
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *p = base + f->offset;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            if (*(const uint32_t *)(base + f->quantifier_offset) != f->id) continue;
        } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL) {
            if (f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE) {
                if (!*(void *const *)p) continue;
            } else if (!*(const protobuf_c_boolean *)(base + f->quantifier_offset)) {
                continue;
            }
        } else if (f->type == PROTOBUF_C_TYPE_MESSAGE && f->label != PROTOBUF_C_LABEL_REPEATED) {
            if (!*(void *const *)p) continue;
        }
        if (!first) fputc(',', out);
        first = 0;
        put_json_name(out, f->name);
        fputc(':', out);
        if (f->label == PROTOBUF_C_LABEL_REPEATED)
            put_repeated(out, f, p, *(const size_t *)(base + f->quantifier_offset));
        else
            put_value(out, f, p, 0);
    }
    fputc('}', out);
}

void ctl_json(FILE *out, const ProtobufCMessage *msg) {
    put_message(out, msg);
    fputc('\n', out);
}

void ctl_print(const ctl_ctx *ctx, const ProtobufCMessage *msg,
               void (*human)(const ProtobufCMessage *msg, FILE *out)) {
    if (ctx->json || !human) ctl_json(stdout, msg);
    else human(msg, stdout);
    fflush(stdout);
}

/* ---- human text ---- */

void ctl_fmt_duration(char *out, size_t cap, int64_t s) {
    if (s < 0) snprintf(out, cap, "unknown");
    else if (s < 120) snprintf(out, cap, "%lld s", (long long)s);
    else if (s < 2 * 3600) snprintf(out, cap, "%lld min", (long long)((s + 30) / 60));
    else snprintf(out, cap, "%lld h", (long long)((s + 1800) / 3600));
}

void ctl_fmt_time_ms(char *out, size_t cap, int64_t ms) {
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(out, cap, "%lld ms", (long long)ms);
}

void ctl_print_opts(FILE *out, const cc_opt *opts) {
    for (const cc_opt *o = opts; o && o->name; o++) {
        char left[96];
        snprintf(left, sizeof left, "--%s%s%s", o->name, o->metavar ? " " : "", o->metavar ? o->metavar : "");
        fprintf(out, "  %-28s %s", left, o->help);
        if (o->env) fprintf(out, " [env %s]", o->env);
        fputc('\n', out);
    }
}
