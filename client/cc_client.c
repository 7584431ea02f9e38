/* cc_client: see cc_client.h. */
#include "cc_client.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cc_pb.h"

struct cc_client {
    grpc_channel *ch;
};

/* One unary call's ops and outputs. */
typedef struct {
    grpc_call *call;
    grpc_metadata_array init_md, trail_md;
    grpc_byte_buffer *resp;
    grpc_status_code code;
    grpc_slice details;
    grpc_metadata md[8];
    int done;
} ucall;

static const char *const code_names[] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
};

const char *cc_status_name(grpc_status_code code) {
    if ((int)code >= 0 && (int)code <= 16) return code_names[code];
    return "UNKNOWN";
}

/* TLS is on with --tls or any of the other TLS options. */
static int tls_on(const cc_client_tls *t) {
    return t && (t->enabled || cc_tls_given(t->files.ca_file) || cc_tls_given(t->files.cert_file) ||
                 cc_tls_given(t->files.key_file) || cc_tls_given(t->server_name));
}

grpc_channel_credentials *cc_client_credentials(const cc_client_tls *tls, char *err, size_t errlen) {
    if (!tls_on(tls)) return grpc_insecure_credentials_create();
    static const char *const flags[3] = {"--tls-ca", "--tls-cert", "--tls-key"};
    cc_tls_pem pem;
    if (cc_tls_load(&pem, &tls->files, flags, err, errlen) < 0) return NULL;
    grpc_ssl_pem_key_cert_pair pair = {.private_key = pem.key, .cert_chain = pem.cert};
    /* gRPC copies the strings; a NULL CA means the default roots. */
    grpc_channel_credentials *creds = grpc_ssl_credentials_create(pem.ca, pem.cert ? &pair : NULL, NULL, NULL);
    cc_tls_pem_free(&pem);
    if (!creds) snprintf(err, errlen, "--tls-ca: gRPC refused the TLS files");
    return creds;
}

cc_client *cc_client_open_tls(const char *target, const cc_client_tls *tls, char *err, size_t errlen) {
    grpc_init();
    grpc_channel_credentials *creds = cc_client_credentials(tls, err, errlen);
    if (!creds) {
        grpc_shutdown();
        return NULL;
    }
    cc_client *c = calloc(1, sizeof *c);
    if (!c) abort();
    grpc_arg args[2] = {{.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                         .value.integer = 64 << 20}};
    size_t n = 1;
    if (tls_on(tls) && cc_tls_given(tls->server_name))
        args[n++] = (grpc_arg){.type = GRPC_ARG_STRING, .key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
                               .value.string = (char *)tls->server_name};
    grpc_channel_args ca = {n, args};
    c->ch = grpc_channel_create(target, creds, &ca);
    grpc_channel_credentials_release(creds);
    return c;
}

cc_client *cc_client_open(const char *target) {
    char err[8];
    return cc_client_open_tls(target, NULL, err, sizeof err);
}

void cc_client_close(cc_client *c) {
    if (!c) return;
    grpc_channel_destroy(c->ch);
    free(c);
    grpc_shutdown();
}

size_t cc_ops_request(grpc_op *ops, grpc_metadata *md, size_t n_md, grpc_byte_buffer *req,
                      grpc_metadata_array *init_md) {
    memset(ops, 0, 4 * sizeof *ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = n_md;
    ops[0].data.send_initial_metadata.metadata = n_md ? md : NULL;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = req;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = init_md;
    return 4;
}

size_t cc_ops_unary_reply(grpc_op *ops, grpc_byte_buffer **resp, grpc_metadata_array *trail, grpc_status_code *code,
                          grpc_slice *details) {
    memset(ops, 0, 2 * sizeof *ops);
    ops[0].op = GRPC_OP_RECV_MESSAGE;
    ops[0].data.recv_message.recv_message = resp;
    ops[1].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[1].data.recv_status_on_client.trailing_metadata = trail;
    ops[1].data.recv_status_on_client.status = code;
    ops[1].data.recv_status_on_client.status_details = details;
    return 2;
}

static gpr_timespec deadline_in(int timeout_ms) {
    if (timeout_ms <= 0) return gpr_inf_future(GPR_CLOCK_REALTIME);
    return gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
}

static void fill_md(grpc_metadata *out, const cc_md *md, int n) {
    for (int i = 0; i < n && i < 8; i++) {
        memset(&out[i], 0, sizeof out[i]);
        out[i].key = grpc_slice_from_copied_string(md[i].key);
        out[i].value = grpc_slice_from_copied_string(md[i].value);
    }
}

static void free_md(grpc_metadata *m, int n) {
    for (int i = 0; i < n && i < 8; i++) {
        grpc_slice_unref(m[i].key);
        grpc_slice_unref(m[i].value);
    }
}

/* Starts a unary call with all six ops in one batch, tagged `tag` on `cq`. */
static int ucall_start(cc_client *c, ucall *u, grpc_completion_queue *cq, const char *method,
                       grpc_byte_buffer *req, const cc_md *md, int n_md, int timeout_ms, void *tag) {
    grpc_slice m = grpc_slice_from_copied_string(method);
    u->call = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL, deadline_in(timeout_ms),
                                       NULL);
    grpc_slice_unref(m);
    grpc_metadata_array_init(&u->init_md);
    grpc_metadata_array_init(&u->trail_md);
    if (n_md > 8) n_md = 8;
    fill_md(u->md, md, n_md);
    grpc_op ops[6];
    size_t n = cc_ops_request(ops, u->md, (size_t)n_md, req, &u->init_md);
    n += cc_ops_unary_reply(ops + n, &u->resp, &u->trail_md, &u->code, &u->details);
    grpc_call_error e = grpc_call_start_batch(u->call, ops, n, tag, NULL);
    free_md(u->md, n_md);
    return e == GRPC_CALL_OK ? 0 : -1;
}

static grpc_status_code ucall_finish(ucall *u, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp_out,
                                     cc_status *st) {
    grpc_status_code code = u->code;
    cc_status tmp;
    if (!st) st = &tmp;
    st->code = code;
    size_t dl = GRPC_SLICE_LENGTH(u->details);
    if (dl >= sizeof st->message) dl = sizeof st->message - 1;
    memcpy(st->message, GRPC_SLICE_START_PTR(u->details), dl);
    st->message[dl] = '\0';
    st->retry_after_ms = 0;
    for (size_t i = 0; i < u->trail_md.count; i++) {
        const grpc_metadata *m = &u->trail_md.metadata[i];
        size_t vl = GRPC_SLICE_LENGTH(m->value);
        if (grpc_slice_str_cmp(m->key, "retry-after-ms") == 0 && vl > 0 && vl < 20) {
            char v[20];
            memcpy(v, GRPC_SLICE_START_PTR(m->value), vl);
            v[vl] = '\0';
            st->retry_after_ms = strtoll(v, NULL, 10);
        }
    }
    if (resp_out) *resp_out = NULL;
    if (code == GRPC_STATUS_OK && desc && resp_out) {
        *resp_out = cc_pb_unpack(desc, u->resp);
        if (!*resp_out) {
            st->code = code = GRPC_STATUS_INTERNAL;
            snprintf(st->message, sizeof st->message, "client: response is not a valid %s", desc->name);
        }
    }
    if (u->resp) grpc_byte_buffer_destroy(u->resp);
    grpc_slice_unref(u->details);
    grpc_metadata_array_destroy(&u->init_md);
    grpc_metadata_array_destroy(&u->trail_md);
    grpc_call_unref(u->call);
    return code;
}

static grpc_status_code unary_bb(cc_client *c, const char *method, grpc_byte_buffer *req,
                                 const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp_out,
                                 const cc_md *md, int n_md, int timeout_ms, cc_status *st) {
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    ucall u;
    memset(&u, 0, sizeof u);
    int rc = ucall_start(c, &u, cq, method, req, md, n_md, timeout_ms, &u);
    grpc_byte_buffer_destroy(req);
    if (rc == 0) grpc_completion_queue_pluck(cq, &u, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_status_code code = ucall_finish(&u, desc, resp_out, st);
    if (rc != 0 && st) {
        st->code = code = GRPC_STATUS_INTERNAL;
        snprintf(st->message, sizeof st->message, "client: could not start the call");
    }
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_destroy(cq);
    return code;
}

grpc_status_code cc_client_unary(cc_client *c, const char *method, const ProtobufCMessage *req,
                                 const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp_out,
                                 const cc_md *md, int n_md, int timeout_ms, cc_status *st) {
    return unary_bb(c, method, cc_pb_pack(req), resp_desc, resp_out, md, n_md, timeout_ms, st);
}

grpc_status_code cc_client_unary_raw(cc_client *c, const char *method, const void *data, size_t len,
                                     const cc_md *md, int n_md, int timeout_ms, cc_status *st) {
    return unary_bb(c, method, cc_pb_pack_raw(data, len), NULL, NULL, md, n_md, timeout_ms, st);
}

/* ---- server streams ---- */

struct cc_stream {
    grpc_completion_queue *cq;
    grpc_call *call;
    grpc_metadata_array init_md, trail_md;
    grpc_status_code code;
    grpc_slice details;
    int status_tag, msg_tag, start_tag;
    int status_done;
    int need_init_md; /* bidi: the first cc_stream_next also receives the initial metadata */
};

/* A stream's call on its own pluck queue, nothing started yet. */
static cc_stream *stream_new(cc_client *c, const char *method, int timeout_ms) {
    cc_stream *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_slice m = grpc_slice_from_copied_string(method);
    s->call = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, s->cq, m, NULL, deadline_in(timeout_ms),
                                       NULL);
    grpc_slice_unref(m);
    grpc_metadata_array_init(&s->init_md);
    grpc_metadata_array_init(&s->trail_md);
    return s;
}

/* Arms the receipt of the final status (collected by cc_stream_status). */
static grpc_call_error stream_recv_status(cc_stream *s) {
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &s->trail_md;
    op.data.recv_status_on_client.status = &s->code;
    op.data.recv_status_on_client.status_details = &s->details;
    return grpc_call_start_batch(s->call, &op, 1, &s->status_tag, NULL);
}

/* Frees a stream whose first batch could not start (nothing is pending on its queue). */
static void stream_discard(cc_stream *s) {
    grpc_call_unref(s->call);
    grpc_completion_queue_shutdown(s->cq);
    grpc_completion_queue_destroy(s->cq);
    grpc_metadata_array_destroy(&s->init_md);
    grpc_metadata_array_destroy(&s->trail_md);
    free(s);
}

cc_stream *cc_client_stream(cc_client *c, const char *method, const ProtobufCMessage *req, const cc_md *md,
                            int n_md, int timeout_ms) {
    cc_stream *s = stream_new(c, method, timeout_ms);
    grpc_metadata mds[8];
    if (n_md > 8) n_md = 8;
    fill_md(mds, md, n_md);
    grpc_byte_buffer *bb = cc_pb_pack(req);
    grpc_op ops[4];
    cc_ops_request(ops, mds, (size_t)n_md, bb, &s->init_md);
    grpc_call_error e = grpc_call_start_batch(s->call, ops, 4, &s->start_tag, NULL);
    free_md(mds, n_md);
    grpc_byte_buffer_destroy(bb);
    if (e == GRPC_CALL_OK) e = stream_recv_status(s);
    if (e != GRPC_CALL_OK) {
        stream_discard(s);
        return NULL;
    }
    grpc_completion_queue_pluck(s->cq, &s->start_tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    return s;
}

cc_stream *cc_client_bidi(cc_client *c, const char *method, const cc_md *md, int n_md, int timeout_ms) {
    cc_stream *s = stream_new(c, method, timeout_ms);
    grpc_metadata mds[8];
    if (n_md > 8) n_md = 8;
    fill_md(mds, md, n_md);
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = (size_t)n_md;
    ops[0].data.send_initial_metadata.metadata = n_md ? mds : NULL;
    grpc_call_error e = grpc_call_start_batch(s->call, ops, 1, &s->start_tag, NULL);
    if (e == GRPC_CALL_OK) e = stream_recv_status(s);
    if (e != GRPC_CALL_OK) {
        free_md(mds, n_md);
        stream_discard(s);
        return NULL;
    }
    grpc_completion_queue_pluck(s->cq, &s->start_tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    free_md(mds, n_md);
    s->need_init_md = 1;
    return s;
}

int cc_stream_send(cc_stream *s, const ProtobufCMessage *msg) {
    grpc_byte_buffer *bb = cc_pb_pack(msg);
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = bb;
    grpc_call_error e = grpc_call_start_batch(s->call, &op, 1, &s->start_tag, NULL);
    grpc_byte_buffer_destroy(bb);
    if (e != GRPC_CALL_OK) return -1;
    grpc_event ev = grpc_completion_queue_pluck(s->cq, &s->start_tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    return ev.success ? 0 : -1;
}

int cc_stream_close_send(cc_stream *s) {
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    if (grpc_call_start_batch(s->call, &op, 1, &s->start_tag, NULL) != GRPC_CALL_OK) return -1;
    grpc_event ev = grpc_completion_queue_pluck(s->cq, &s->start_tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    return ev.success ? 0 : -1;
}

int cc_stream_next(cc_stream *s, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **msg_out) {
    grpc_byte_buffer *bb = NULL;
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (s->need_init_md) {
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n++].data.recv_initial_metadata.recv_initial_metadata = &s->init_md;
        s->need_init_md = 0;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &bb;
    if (grpc_call_start_batch(s->call, ops, n, &s->msg_tag, NULL) != GRPC_CALL_OK) return -1;
    grpc_completion_queue_pluck(s->cq, &s->msg_tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (!bb) return 0;
    *msg_out = cc_pb_unpack(desc, bb);
    grpc_byte_buffer_destroy(bb);
    return *msg_out ? 1 : -1;
}

void cc_stream_close(cc_stream *s, cc_status *st) {
    grpc_event ev = grpc_completion_queue_pluck(s->cq, &s->status_tag, gpr_time_0(GPR_CLOCK_REALTIME), NULL);
    if (ev.type != GRPC_OP_COMPLETE) {
        grpc_call_cancel(s->call, NULL);
        grpc_completion_queue_pluck(s->cq, &s->status_tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    }
    if (st) {
        st->code = s->code;
        size_t dl = GRPC_SLICE_LENGTH(s->details);
        if (dl >= sizeof st->message) dl = sizeof st->message - 1;
        memcpy(st->message, GRPC_SLICE_START_PTR(s->details), dl);
        st->message[dl] = '\0';
    }
    grpc_slice_unref(s->details);
    grpc_metadata_array_destroy(&s->init_md);
    grpc_metadata_array_destroy(&s->trail_md);
    grpc_call_unref(s->call);
    grpc_completion_queue_shutdown(s->cq);
    grpc_completion_queue_destroy(s->cq);
    free(s);
}

/* ---- batches ---- */

struct cc_batch {
    cc_client *c;
    grpc_completion_queue *cq;
    ucall **calls;
    int n, cap, pending;
};

cc_batch *cc_batch_new(cc_client *c) {
    cc_batch *b = calloc(1, sizeof *b);
    if (!b) abort();
    b->c = c;
    b->cq = grpc_completion_queue_create_for_next(NULL);
    return b;
}

int cc_batch_add(cc_batch *b, const char *method, const ProtobufCMessage *req, const cc_md *md, int n_md,
                 int timeout_ms) {
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->calls = realloc(b->calls, (size_t)b->cap * sizeof *b->calls);
        if (!b->calls) abort();
    }
    ucall *u = calloc(1, sizeof *u);
    if (!u) abort();
    grpc_byte_buffer *bb = cc_pb_pack(req);
    if (ucall_start(b->c, u, b->cq, method, bb, md, n_md, timeout_ms, u) == 0) {
        b->pending++;
    } else {
        u->done = 1;
        u->code = GRPC_STATUS_INTERNAL;
    }
    grpc_byte_buffer_destroy(bb);
    b->calls[b->n] = u;
    return b->n++;
}

void cc_batch_wait(cc_batch *b) {
    while (b->pending > 0) {
        grpc_event ev = grpc_completion_queue_next(b->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type != GRPC_OP_COMPLETE) break;
        ((ucall *)ev.tag)->done = 1;
        b->pending--;
    }
}

int cc_batch_count(const cc_batch *b) { return b->n; }

grpc_status_code cc_batch_result(cc_batch *b, int i, const ProtobufCMessageDescriptor *desc,
                                 ProtobufCMessage **resp_out, cc_status *st) {
    ucall *u = b->calls[i];
    if (!u->call) {
        if (st) st->code = u->code, snprintf(st->message, sizeof st->message, "not started");
        return u->code;
    }
    grpc_status_code code = ucall_finish(u, desc, resp_out, st);
    u->call = NULL;
    u->code = code;
    return code;
}

void cc_batch_free(cc_batch *b) {
    cc_batch_wait(b);
    for (int i = 0; i < b->n; i++) {
        if (b->calls[i]->call) ucall_finish(b->calls[i], NULL, NULL, NULL);
        free(b->calls[i]);
    }
    free(b->calls);
    grpc_completion_queue_shutdown(b->cq);
    while (grpc_completion_queue_next(b->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(b->cq);
    free(b);
}
