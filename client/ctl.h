/* ctl: what concertctl's command files share: the command table row, the per-run
 * context (global options, the lazily opened channel), calls that add the command's
 * metadata and deadline, error printing with the exit-code contract, and output
 * (human lines or one proto3-style JSON object per line).
 *
 * Adding a command: write `int run(ctl_ctx *)` and a ctl_cmd row in the area's
 * ctl_<area>.c (its array ends with {0}), declare the array below, and list it in
 * `areas[]` in concertctl.c. Command files never parse argv themselves and never
 * call exit(): they return an exit status. */
#ifndef CTL_H
#define CTL_H

#include <stdint.h>
#include <stdio.h>

#include "cc_client.h"
#include "cc_opt.h"

/* ---- exit statuses (documented in `concertctl --help`) ---- */
#define CTL_EXIT_OK 0
#define CTL_EXIT_NEGATIVE 1 /* the call worked, the answer is "no" (EXPIRED, NOT_SERVING) */
#define CTL_EXIT_USAGE 2    /* bad command line; gRPC UNKNOWN also exits 2 */
/* Any other failure exits with the numeric gRPC status code (3..16). */

/* ---- what a command needs (ctl_cmd.needs) ---- */
#define CTL_NEED_TOKEN 0x1 /* --token / CONCERT_TOKEN is required (usage error without) */
#define CTL_SEND_AUTH 0x2  /* send `authorization: Bearer <token>` (implies CTL_NEED_TOKEN) */
#define CTL_SEND_ADMIN 0x4 /* --admin-key required, sent as `x-admin-key` */

/* Default deadline of a unary call when --timeout-ms is not given. */
#define CTL_DEFAULT_TIMEOUT_MS 5000

typedef struct ctl_ctx ctl_ctx;

/** One row of the command table. */
typedef struct ctl_cmd {
    const char *name;    /* words separated by single spaces: "queue join", "health" */
    const char *summary; /* one line for `concertctl --help` */
    const char *args;    /* usage after the name: "--user USER --concert ID" */
    const char *help;    /* paragraph(s) for `concertctl <name> --help`; may be NULL */
    const cc_opt *opts;  /* the command's own options, {0}-terminated; NULL = none */
    int needs;           /* CTL_NEED_* / CTL_SEND_* */
    int max_args;        /* positional words accepted after the name (ctx->args) */
    int (*run)(ctl_ctx *ctx); /* returns the exit status */
} ctl_cmd;

/** Global options and state of one concertctl run. Commands read it; only
 * concertctl.c fills it. */
struct ctl_ctx {
    const char *server;    /* --server / CONCERT_SERVER */
    int json;              /* --json */
    int64_t timeout_ms;    /* --timeout-ms; -1 when not given (see ctl_timeout) */
    const char *token;     /* --token / CONCERT_TOKEN, NULL or "" when unset */
    const char *admin_key; /* --admin-key / CONCERT_ADMIN_KEY */
    const ctl_cmd *cmd;    /* the command being run */
    char **args;           /* positional words after the command name */
    int n_args;
    cc_client_tls tls;     /* --tls* options */
    cc_client *client;     /* opened by ctl_client(), closed by concertctl.c */
};

/* ---- the command tables, one per area (ctl_<area>.c) ---- */
extern const ctl_cmd ctl_queue_cmds[];

/* ---- calls ---- */

/** The channel to ctx->server, opened on first use. */
cc_client *ctl_client(ctl_ctx *ctx);

/** The deadline for this call: --timeout-ms if given, else `dflt` (0 = none). */
int ctl_timeout(const ctl_ctx *ctx, int dflt);

/** Unary call with the command's metadata and ctl_timeout(ctx, default). Returns 0
 * with *resp_out set (free with protobuf_c_message_free_unpacked) on OK; otherwise
 * prints the error (ctl_fail) and returns the exit status. */
int ctl_unary(ctl_ctx *ctx, const char *method, const ProtobufCMessage *req,
              const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp_out);

/** Every page of a paginated List call (AIP-158: request fields page_token, response
 * fields next_page_token and the repeated `items` field): the pages as unpacked, and
 * a view while this lives: the first page's message holding every page's items in
 * order, next_page_token "". */
typedef struct {
    ProtobufCMessage *msg; /* the view (the first page), or NULL before the first page */
    ProtobufCMessage **pages;
    size_t n_pages;
    const ProtobufCFieldDescriptor *items; /* the repeated field merged */
    void **own_items;                      /* the first page's own array, put back by ctl_pages_free */
    size_t own_n;
    char *own_token;
} ctl_pages;

/** Calls the List `method` with `req` page after page (setting req's page_token each
 * time; it is "" again on return), until a reply's next_page_token is empty. Each page
 * is one call with its own deadline; a page refused by a rate limit is asked again
 * after its `retry-after-ms` (up to 5 times). Returns 0 with *out filled (free with
 * ctl_pages_free), or prints the error and returns the exit status (*out is freed). */
int ctl_unary_pages(ctl_ctx *ctx, const char *method, ProtobufCMessage *req,
                    const ProtobufCMessageDescriptor *resp_desc, const char *items, ctl_pages *out);
void ctl_pages_free(ctl_pages *p);

/** Starts a server stream with the command's metadata; deadline ctl_timeout(ctx, 0)
 * (streams run until they end unless --timeout-ms is given). NULL on failure, after
 * printing the error; *exit_out is then the exit status. */
cc_stream *ctl_stream(ctl_ctx *ctx, const char *method, const ProtobufCMessage *req, int *exit_out);

/** Closes `s` and returns 0 if it ended OK, else prints the error and returns the
 * exit status. */
int ctl_stream_end(cc_stream *s);

/** Closes `s`, which sent a message that is not a valid `desc`, prints that (INTERNAL)
 * and returns the exit status. */
int ctl_stream_bad(cc_stream *s, const ProtobufCMessageDescriptor *desc);

/* ---- errors and exit statuses ---- */

/** Exit status for a gRPC code: the code itself (UNKNOWN is 2, like a usage error). */
int ctl_exit_code(grpc_status_code code);

/** Prints "concertctl: <CODE_NAME>: <message>" to stderr; returns ctl_exit_code. */
int ctl_fail(const cc_status *st);

/** Prints "concertctl: <command>: <reason>" to stderr; returns CTL_EXIT_USAGE. */
int ctl_usage_error(const ctl_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** Usage error "--<flag> is required" when `value` is NULL (flag not given). An
 * empty value is passed on: the server answers INVALID_ARGUMENT naming the field. */
int ctl_require(const ctl_ctx *ctx, const char *flag, const char *value);

/* ---- output ---- */

/** Prints a response: with --json one JSON object on one line (see ctl_json);
 * otherwise `human(msg, stdout)`, which writes its own line(s). Flushes stdout so
 * streamed lines show up at once. */
void ctl_print(const ctl_ctx *ctx, const ProtobufCMessage *msg,
               void (*human)(const ProtobufCMessage *msg, FILE *out));

/** Writes `msg` as one line of proto3-style JSON: lowerCamelCase field names, every
 * field present (like grpcurl -emit-defaults; unset oneof/optional/message fields are
 * left out), enums by value name, 64-bit integers as JSON numbers, bytes as base64,
 * maps as objects. Works for any protobuf-c message. */
void ctl_json(FILE *out, const ProtobufCMessage *msg);

/** Writes `s` as a JSON string literal (quoted, escaped; invalid UTF-8 bytes become
 * U+FFFD). */
void ctl_json_string(FILE *out, const char *s, size_t len);

/** Human text for seconds: "7 s", "3 min", "2 h". */
void ctl_fmt_duration(char *out, size_t cap, int64_t seconds);

/** Human text for a Unix time in ms: "2026-05-01T12:00:05Z". */
void ctl_fmt_time_ms(char *out, size_t cap, int64_t unix_ms);

/** Prints an option table in cc_opt_usage's layout, without the header. */
void ctl_print_opts(FILE *out, const cc_opt *opts);

#endif
