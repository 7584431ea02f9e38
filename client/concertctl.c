/* concertctl: the command-line client. Thin main: global options, the command table
 * (rows come from the ctl_<area>.c files, listed in areas[] below), help, and
 * dispatch. Commands do the calls and printing; see ctl.h for how to add one.
 * Also home of the one server-wide command, `health`. */
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "grpc/health/v1/health.pb-c.h"

static ctl_ctx ctx = {.server = "127.0.0.1:50051", .timeout_ms = -1};

static const cc_opt global_opts[] = {
    {"server", "CONCERT_SERVER", CC_OPT_STR, &ctx.server, "HOST:PORT", "server address (default 127.0.0.1:50051)", 0,
     0},
    {"json", NULL, CC_OPT_FLAG, &ctx.json, NULL, "print one JSON object per line (proto3 JSON names)", 0, 0},
    {"timeout-ms", NULL, CC_OPT_INT, &ctx.timeout_ms, "MS",
     "deadline of each call (default 5000; streams: none; 0 = none)", 0, 86400000},
    {"token", "CONCERT_TOKEN", CC_OPT_STR, &ctx.token, "TOKEN",
     "queue token (queue and booking commands; booking sends it as a Bearer token)",
     0, 0},
    {"admin-key", "CONCERT_ADMIN_KEY", CC_OPT_STR, &ctx.admin_key, "KEY",
     "admin key for admin and seed commands (sent as x-admin-key)", 0, 0},
    CC_CLIENT_TLS_OPTS(ctx.tls),
    {0},
};

/* ---- health (grpc.health.v1.Health/Check) ---- */

static const char *health_service = "";

static const cc_opt health_opts[] = {
    {"service", NULL, CC_OPT_STR, &health_service, "NAME",
     "service to ask about, e.g. concert.v1.QueueService (default: the whole server)", 0, 0},
    {0},
};

static const char *serving_name(int st) {
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&grpc__health__v1__health_check_response__serving_status__descriptor, st);
    return v ? v->name : "UNKNOWN";
}

static void human_health(const ProtobufCMessage *m, FILE *out) {
    const Grpc__Health__V1__HealthCheckResponse *r = (const void *)m;
    if (*health_service) fprintf(out, "%s %s\n", health_service, serving_name(r->status));
    else fprintf(out, "%s\n", serving_name(r->status));
}

static int run_health(ctl_ctx *c) {
    Grpc__Health__V1__HealthCheckRequest req;
    grpc__health__v1__health_check_request__init(&req);
    req.service = (char *)health_service;
    ProtobufCMessage *resp;
    int rc = ctl_unary(c, "/grpc.health.v1.Health/Check", &req.base,
                       &grpc__health__v1__health_check_response__descriptor, &resp);
    if (rc) return rc;
    ctl_print(c, resp, human_health);
    int st = ((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
    protobuf_c_message_free_unpacked(resp, NULL);
    if (st == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING) return CTL_EXIT_OK;
    fprintf(stderr, "concertctl: health: %s\n", serving_name(st));
    return CTL_EXIT_NEGATIVE;
}

static const ctl_cmd server_cmds[] = {
    {"health", "ask the server's health service whether it is SERVING (exit 0) or not (exit 1)",
     "[--service NAME]",
     "Calls grpc.health.v1.Health/Check. The server is SERVING while it can reach Redis.\n"
     "Handy in scripts: `until concertctl health; do sleep 0.1; done`.\n",
     health_opts, 0, 0, run_health},
    {0},
};

/* ---- the command table: one array per area; add a ctl_<area>.c array here ---- */

/* The issue-3 areas (ctl.h lists the others; these belong there too). */
extern const ctl_cmd ctl_admin_cmds[], ctl_booking_cmds[], ctl_wallet_cmds[], ctl_seed_cmds[], ctl_audit_cmds[], ctl_pay_cmds[];
extern const ctl_cmd ctl_receipt_cmds[];

static const ctl_cmd *const areas[] = {
    ctl_queue_cmds,
    ctl_receipt_cmds,
    ctl_booking_cmds,
    ctl_wallet_cmds,
    ctl_admin_cmds,
    ctl_seed_cmds,
    ctl_pay_cmds,
    ctl_audit_cmds,
    server_cmds,
    NULL,
};

#define FOR_EACH_CMD(c)                                                                                         \
    for (const ctl_cmd *const *area_ = areas; *area_; area_++)                                                  \
        for (const ctl_cmd *c = *area_; c->name; c++)

/* Width of the command-name column in the listings: the longest name. */
static int name_width(void) {
    int w = 0;
    FOR_EACH_CMD(c) {
        int l = (int)strlen(c->name);
        if (l > w) w = l;
    }
    return w;
}

/* ---- help ---- */

static const char exit_help[] =
    "Exit status:\n"
    "  0     success\n"
    "  1     the call worked but the answer is no: health not SERVING, a watched token\n"
    "        ended EXPIRED (also gRPC CANCELLED)\n"
    "  2     usage error: unknown command or option, missing argument (also gRPC UNKNOWN)\n"
    "  3-16  the call failed with that gRPC status code, e.g. 3 INVALID_ARGUMENT,\n"
    "        4 DEADLINE_EXCEEDED, 5 NOT_FOUND, 7 PERMISSION_DENIED, 8 RESOURCE_EXHAUSTED,\n"
    "        9 FAILED_PRECONDITION, 14 UNAVAILABLE (retry), 16 UNAUTHENTICATED; stderr\n"
    "        says \"concertctl: CODE_NAME: message\"\n";

static void global_help(FILE *out) {
    fputs("Usage: concertctl [global options] <command> [options]\n"
          "\n"
          "Command-line client for the concert waiting room and booking service (gRPC,\n"
          "package concert.v1). Prints short human-readable lines; with --json, one JSON\n"
          "object per line (lowerCamelCase field names, enums by name, int64 as numbers).\n"
          "Global options may appear anywhere on the line.\n"
          "\n"
          "Commands:\n",
          out);
    int w = name_width();
    for (const ctl_cmd *const *area = areas; *area; area++) {
        if (area != areas) fputc('\n', out);
        for (const ctl_cmd *c = *area; c->name; c++) fprintf(out, "  %-*s  %s\n", w, c->name, c->summary);
    }
    fputs("\nTypical session: queue join -> queue watch (until ACTIVE) -> booking schedules ->\n"
          "booking seats -> booking reserve; wallet charge tops up the balance. An operator\n"
          "loads concerts with admin ... or seed (both need --admin-key).\n",
          out);
    fputs("\nGlobal options:\n", out);
    ctl_print_opts(out, global_opts);
    fprintf(out, "  %-28s %s\n", "--help", "show help (after a command: that command's help)");
    fputs("\nRun 'concertctl <command> --help' for a command's options.\n\n", out);
    fputs(exit_help, out);
}

static void cmd_help(const ctl_cmd *c, FILE *out) {
    fprintf(out, "Usage: concertctl [global options] %s%s%s\n\n%s: %s\n", c->name, *c->args ? " " : "", c->args,
            c->name, c->summary);
    if (c->help) fprintf(out, "\n%s", c->help);
    if (c->opts && c->opts->name) {
        fputs("\nOptions:\n", out);
        ctl_print_opts(out, c->opts);
    }
    fputs("\nGlobal options (anywhere on the line):\n", out);
    ctl_print_opts(out, global_opts);
    fprintf(out, "  %-28s %s\n", "--help", "show this help and exit");
    fputs("\nExit status: 0 success, 1 negative answer, 2 usage error, else the gRPC status\n"
          "code of the failed call (see concertctl --help).\n",
          out);
}

/* Lists the commands under `prefix` ("queue"); 0 if there are none. */
static int group_help(const char *prefix, FILE *out) {
    size_t pl = strlen(prefix);
    int n = 0, w = name_width();
    FOR_EACH_CMD(c) {
        if (strncmp(c->name, prefix, pl) || c->name[pl] != ' ') continue;
        if (!n++) fprintf(out, "Usage: concertctl [global options] %s <command> [options]\n\nCommands:\n", prefix);
        fprintf(out, "  %-*s  %s\n", w, c->name, c->summary);
    }
    if (n) fprintf(out, "\nRun 'concertctl %s <command> --help' for a command's options.\n", prefix);
    return n;
}

/* ---- dispatch ---- */

static const ctl_cmd *find_cmd(const char *name, int *is_prefix) {
    size_t nl = strlen(name);
    *is_prefix = 0;
    FOR_EACH_CMD(c) {
        if (!strcmp(c->name, name)) return c;
        if (!strncmp(c->name, name, nl) && c->name[nl] == ' ') *is_prefix = 1;
    }
    return NULL;
}

static const cc_opt *find_opt(const cc_opt *opts, const char *arg) {
    const char *name = arg + 2, *eq = strchr(name, '=');
    size_t nl = eq ? (size_t)(eq - name) : strlen(name);
    for (const cc_opt *o = opts; o && o->name; o++)
        if (strlen(o->name) == nl && !strncmp(o->name, name, nl)) return o;
    return NULL;
}

/* The command's options followed by the global ones, {0}-terminated (malloc'd). */
static cc_opt *merge_opts(const ctl_cmd *c) {
    size_t n = 0, g = sizeof global_opts / sizeof global_opts[0];
    for (const cc_opt *o = c->opts; o && o->name; o++) n++;
    cc_opt *m = calloc(n + g, sizeof *m);
    if (!m) abort();
    if (n) memcpy(m, c->opts, n * sizeof *m);
    memcpy(m + n, global_opts, g * sizeof *m);
    return m;
}

int main(int argc, char **argv) {
    char name[128] = "";
    const ctl_cmd *cmd = NULL;
    int help = 0, is_prefix = 0, n_words = 0, n_rest = 0;
    cc_opt *merged = NULL;
    char **pos = NULL;
    int rc = CTL_EXIT_OK;
    /* Everything but the command words, for cc_opt_parse (which wants argv[0] first). */
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    if (!rest) abort();
    rest[n_rest++] = "concertctl";

    /* Find the command words, skipping options and their values: before the command
     * only global options can appear, after it the command's too. */
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            help = 1;
            continue;
        }
        if (!strncmp(a, "--", 2) && a[2]) {
            const cc_opt *o = cmd ? find_opt(merged, a) : find_opt(global_opts, a);
            if (!o && !cmd) {
                fprintf(stderr, "concertctl: unknown option '%s' (see concertctl --help)\n", a);
                rc = CTL_EXIT_USAGE;
                goto out;
            }
            rest[n_rest++] = a;
            if (o && o->type != CC_OPT_FLAG && !strchr(a, '=') && i + 1 < argc) rest[n_rest++] = argv[++i];
            continue;
        }
        if (cmd) {
            rest[n_rest++] = a; /* a positional argument of the command */
            continue;
        }
        if (n_words == 0 && !strcmp(a, "help")) {
            help = 1;
            continue;
        }
        if (strlen(name) + strlen(a) + 2 > sizeof name) {
            fprintf(stderr, "concertctl: unknown command '%s %s' (see concertctl --help)\n", name, a);
            rc = CTL_EXIT_USAGE;
            goto out;
        }
        if (n_words++) strcat(name, " ");
        strcat(name, a);
        cmd = find_cmd(name, &is_prefix);
        if (cmd) {
            merged = merge_opts(cmd);
        } else if (!is_prefix) {
            fprintf(stderr, "concertctl: unknown command '%s' (see concertctl --help)\n", name);
            rc = CTL_EXIT_USAGE;
            goto out;
        }
    }

    if (help) {
        if (cmd) cmd_help(cmd, stdout);
        else if (!n_words || !group_help(name, stdout)) global_help(stdout);
        goto out;
    }
    if (!cmd) {
        if (!n_words) {
            fputs("concertctl: no command given (see concertctl --help)\n", stderr);
        } else {
            fprintf(stderr, "concertctl: '%s' needs a subcommand:\n", name);
            group_help(name, stderr);
        }
        rc = CTL_EXIT_USAGE;
        goto out;
    }

    pos = calloc((size_t)cmd->max_args + 1, sizeof *pos);
    if (!pos) abort();
    if (cc_opt_parse(merged, n_rest, rest, "", cmd->max_args ? pos : NULL, cmd->max_args, &ctx.n_args) < 0) {
        rc = CTL_EXIT_USAGE;
        goto out;
    }
    ctx.args = pos;
    ctx.cmd = cmd;
    if ((cmd->needs & (CTL_NEED_TOKEN | CTL_SEND_AUTH)) && !ctx.token)
        rc = ctl_usage_error(&ctx, "--token is required (or set CONCERT_TOKEN)");
    else if ((cmd->needs & CTL_SEND_ADMIN) && !ctx.admin_key)
        rc = ctl_usage_error(&ctx, "--admin-key is required (or set CONCERT_ADMIN_KEY)");
    if (rc == CTL_EXIT_OK) { /* bad TLS files are a usage error, before any call */
        char err[512];
        grpc_init();
        grpc_channel_credentials *creds = cc_client_credentials(&ctx.tls, err, sizeof err);
        if (creds) grpc_channel_credentials_release(creds);
        else rc = ctl_usage_error(&ctx, "%s", err);
        grpc_shutdown();
    }
    if (rc == CTL_EXIT_OK) rc = cmd->run(&ctx);
    cc_client_close(ctx.client);
out: /* every path frees what main allocated (clean exits under LeakSanitizer) */
    free(pos);
    free(merged);
    free(rest);
    return rc;
}
