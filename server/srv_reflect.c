/* srv_reflect: gRPC server reflection (v1alpha and v1 share messages) over the
 * descriptor set protoc wrote at build time and the build embedded. Enough for
 * `grpcurl list`, `describe` and calls without proto files: list_services,
 * file_by_filename and file_containing_symbol (answered with the file and its
 * transitive imports). Parsed once, lazily; read-only afterwards. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cc_log.h"
#include "cc_pb.h"

#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "srv_app.h"
#include "srv_valid.h"

extern const unsigned char concert_descriptor_set[];
extern const size_t concert_descriptor_set_len;

typedef struct {
    const uint8_t *p;
    size_t len;
} span;

typedef struct {
    span data;
    char name[256];
    int deps[16];
    int n_deps;
} rfile;

typedef struct {
    char *name;
    int file;
} rsym;

static rfile *files;
static int n_files;
static rsym *syms;
static int n_syms, cap_syms;
static char **services;
static int n_services;
static int parsed;

/* ---- minimal protobuf wire reading ---- */

static int rd_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
    uint64_t x = 0;
    for (int s = 0; s < 64 && *p < end; s += 7) {
        uint8_t b = *(*p)++;
        x |= (uint64_t)(b & 0x7f) << s;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* Next field: its number, wire type and (for LEN) its span. Returns -1 at the end. */
static int rd_field(const uint8_t **p, const uint8_t *end, int *num, span *val) {
    uint64_t key, v;
    if (*p >= end || rd_varint(p, end, &key) < 0) return -1;
    *num = (int)(key >> 3);
    switch (key & 7) {
    case 0: return rd_varint(p, end, &v) < 0 ? -1 : 0;
    case 1: *p += 8; return *p <= end ? 0 : -1;
    case 5: *p += 4; return *p <= end ? 0 : -1;
    case 2:
        if (rd_varint(p, end, &v) < 0 || v > (uint64_t)(end - *p)) return -1;
        val->p = *p, val->len = (size_t)v;
        *p += v;
        return 0;
    default: return -1;
    }
}

static void add_sym(const char *prefix, span name, int file) {
    if (n_syms == cap_syms) {
        cap_syms = cap_syms ? cap_syms * 2 : 64;
        syms = realloc(syms, (size_t)cap_syms * sizeof *syms);
        if (!syms) abort();
    }
    size_t pl = strlen(prefix);
    char *s = malloc(pl + 1 + name.len + 1);
    if (!s) abort();
    memcpy(s, prefix, pl);
    size_t o = pl;
    if (pl) s[o++] = '.';
    memcpy(s + o, name.p, name.len);
    s[o + name.len] = '\0';
    syms[n_syms].name = s;
    syms[n_syms].file = file;
    n_syms++;
}

static span name_of(span msg) {
    const uint8_t *p = msg.p, *end = msg.p + msg.len;
    int num;
    span v = {0};
    while (rd_field(&p, end, &num, &v) == 0)
        if (num == 1) return v;
    return (span){0};
}

/* Adds a message (field 1 name, 3 nested, 4 enums) and what it nests. */
static void add_message(const char *prefix, span msg, int file) {
    span nm = name_of(msg);
    add_sym(prefix, nm, file);
    char *full = syms[n_syms - 1].name;
    const uint8_t *p = msg.p, *end = msg.p + msg.len;
    int num;
    span v;
    while (rd_field(&p, end, &num, &v) == 0) {
        if (num == 3) add_message(full, v, file);
        else if (num == 4) add_sym(full, name_of(v), file);
    }
}

static void parse_set(void) {
    parsed = 1;
    const uint8_t *p = concert_descriptor_set, *end = p + concert_descriptor_set_len;
    int num;
    span f;
    while (rd_field(&p, end, &num, &f) == 0) {
        if (num != 1) continue;
        files = realloc(files, (size_t)(n_files + 1) * sizeof *files);
        if (!files) abort();
        rfile *rf = &files[n_files];
        memset(rf, 0, sizeof *rf);
        rf->data = f;
        char pkg[256] = "";
        const uint8_t *q = f.p, *qe = f.p + f.len;
        span v;
        while (rd_field(&q, qe, &num, &v) == 0) {
            if (num == 1 && v.len < sizeof rf->name) memcpy(rf->name, v.p, v.len), rf->name[v.len] = '\0';
            if (num == 2 && v.len < sizeof pkg) memcpy(pkg, v.p, v.len), pkg[v.len] = '\0';
        }
        q = f.p;
        while (rd_field(&q, qe, &num, &v) == 0) {
            if (num == 3 && rf->n_deps < 16) {
                for (int i = 0; i < n_files; i++)
                    if (strlen(files[i].name) == v.len && !memcmp(files[i].name, v.p, v.len))
                        rf->deps[rf->n_deps++] = i;
            } else if (num == 4) {
                add_message(pkg, v, n_files);
            } else if (num == 5) {
                add_sym(pkg, name_of(v), n_files);
            } else if (num == 6) {
                add_sym(pkg, name_of(v), n_files);
                services = realloc(services, (size_t)(n_services + 1) * sizeof *services);
                if (!services) abort();
                services[n_services++] = syms[n_syms - 1].name;
            }
        }
        n_files++;
    }
    CC_DEBUG("reflection_loaded", "files=%d symbols=%d services=%d", n_files, n_syms, n_services);
}

static int find_file_by_name(const char *name) {
    for (int i = 0; i < n_files; i++)
        if (!strcmp(files[i].name, name)) return i;
    return -1;
}

static int find_file_by_symbol(const char *sym) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", sym);
    for (;;) {
        for (int i = 0; i < n_syms; i++)
            if (!strcmp(syms[i].name, buf)) return syms[i].file;
        char *dot = strrchr(buf, '.');
        if (!dot) return -1;
        *dot = '\0'; /* a method or field: try its parent */
    }
}

/* The file and its transitive imports, dependencies first. */
static void collect(int f, int *seen, int *order, int *n) {
    if (seen[f]) return;
    seen[f] = 1;
    for (int i = 0; i < files[f].n_deps; i++) collect(files[f].deps[i], seen, order, n);
    order[(*n)++] = f;
}

static void on_request(srv_call *c, grpc_byte_buffer *bb);

static void answer(srv_call *c, Grpc__Reflection__V1alpha__ServerReflectionRequest *req) {
    Grpc__Reflection__V1alpha__ServerReflectionResponse resp;
    grpc__reflection__v1alpha__server_reflection_response__init(&resp);
    resp.valid_host = req->host;
    resp.original_request = req;
    Grpc__Reflection__V1alpha__ListServiceResponse list;
    Grpc__Reflection__V1alpha__ServiceResponse svc[64], *svcp[64];
    Grpc__Reflection__V1alpha__FileDescriptorResponse fdr;
    Grpc__Reflection__V1alpha__ErrorResponse er;
    ProtobufCBinaryData blobs[64];
    int seen[256] = {0}, order[256], n = 0, f = -1;
    switch (req->message_request_case) {
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        grpc__reflection__v1alpha__list_service_response__init(&list);
        for (int i = 0; i < n_services && i < 64; i++) {
            grpc__reflection__v1alpha__service_response__init(&svc[i]);
            svc[i].name = services[i];
            svcp[i] = &svc[i];
        }
        list.n_service = (size_t)(n_services < 64 ? n_services : 64);
        list.service = svcp;
        resp.message_response_case =
            GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
        resp.list_services_response = &list;
        break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        f = find_file_by_name(req->file_by_filename);
        break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        f = find_file_by_symbol(req->file_containing_symbol);
        break;
    default:
        break;
    }
    if (resp.message_response_case == 0) {
        if (f >= 0 && n_files <= 256) {
            collect(f, seen, order, &n);
            grpc__reflection__v1alpha__file_descriptor_response__init(&fdr);
            for (int i = 0; i < n && i < 64; i++) {
                /* The requested file first, as clients expect. */
                int idx = order[n - 1 - i];
                blobs[i].data = (uint8_t *)files[idx].data.p;
                blobs[i].len = files[idx].data.len;
            }
            fdr.n_file_descriptor_proto = (size_t)(n < 64 ? n : 64);
            fdr.file_descriptor_proto = blobs;
            resp.message_response_case =
                GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
            resp.file_descriptor_response = &fdr;
        } else {
            grpc__reflection__v1alpha__error_response__init(&er);
            er.error_code = f < 0 && req->message_request_case ? GRPC_STATUS_NOT_FOUND : GRPC_STATUS_UNIMPLEMENTED;
            er.error_message = er.error_code == GRPC_STATUS_NOT_FOUND ? "not found" : "not supported";
            resp.message_response_case =
                GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
            resp.error_response = &er;
        }
    }
    srv_call_send(c, &resp.base);
}

static void on_request(srv_call *c, grpc_byte_buffer *bb) {
    if (!bb) {
        srv_call_finish(c, GRPC_STATUS_OK, NULL);
        return;
    }
    /* The same decoding as every other request: strings checked on the wire first. */
    ProtobufCMessage *msg = NULL;
    char err[300];
    cc_pb_span sp;
    int opened = cc_pb_span_open(&sp, bb) == 0; /* unreadable: decoded as no bytes, as before */
    int rc = srv_decode_request(&grpc__reflection__v1alpha__server_reflection_request__descriptor,
                                opened ? sp.data : NULL, opened ? sp.len : 0, NULL, &msg, err, sizeof err);
    if (opened) cc_pb_span_close(&sp);
    if (rc < 0) {
        srv_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "%s", err);
        return;
    }
    Grpc__Reflection__V1alpha__ServerReflectionRequest *req = (void *)msg;
    answer(c, req);
    protobuf_c_message_free_unpacked(&req->base, NULL);
    srv_call_recv(c, on_request);
}

static void on_cancel(srv_call *c) { srv_call_finish(c, GRPC_STATUS_CANCELLED, "cancelled"); }

void srv_reflection_info(srv_call *c) {
    if (!parsed) parse_set();
    srv_call_on_cancel(c, on_cancel);
    srv_call_recv(c, on_request);
}
