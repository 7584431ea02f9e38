/* cc_opt: see cc_opt.h. */
#include "cc_opt.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *prog_name(const char *argv0) {
    const char *s = strrchr(argv0, '/');
    return s ? s + 1 : argv0;
}

static int set_value(const cc_opt *o, const char *val, const char *from, const char *prog) {
    switch (o->type) {
    case CC_OPT_STR:
        *(const char **)o->out = val;
        return 0;
    case CC_OPT_INT: {
        char *end;
        errno = 0;
        long long v = strtoll(val, &end, 10);
        if (errno || end == val || *end || v < o->min || v > o->max) {
            fprintf(stderr, "%s: %s: expected an integer in [%" PRId64 ", %" PRId64 "], got '%s'\n",
                    prog, from, o->min, o->max, val);
            return -1;
        }
        *(int64_t *)o->out = v;
        return 0;
    }
    case CC_OPT_FLAG:
        *(int *)o->out = (!strcmp(val, "1") || !strcasecmp(val, "true") || !strcasecmp(val, "yes"));
        return 0;
    }
    return -1;
}

void cc_opt_usage(const cc_opt *opts, const char *usage, void *fpv) {
    FILE *fp = fpv;
    fputs(usage, fp);
    fputs("\nOptions:\n", fp);
    for (const cc_opt *o = opts; o->name; o++) {
        char left[96];
        snprintf(left, sizeof left, "--%s%s%s", o->name, o->metavar ? " " : "",
                 o->metavar ? o->metavar : "");
        fprintf(fp, "  %-28s %s", left, o->help);
        if (o->env) fprintf(fp, " [env %s]", o->env);
        fputc('\n', fp);
    }
    fprintf(fp, "  %-28s %s\n", "--help", "show this help and exit");
}

int cc_opt_parse(const cc_opt *opts, int argc, char **argv, const char *usage,
                 char **positional, int max_positional, int *n_positional) {
    const char *prog = prog_name(argv[0]);
    if (n_positional) *n_positional = 0;
    for (const cc_opt *o = opts; o->name; o++) {
        const char *v = o->env ? getenv(o->env) : NULL;
        if (v && *v && set_value(o, v, o->env, prog) < 0) return -1;
    }
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            cc_opt_usage(opts, usage, stdout);
            exit(0);
        }
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            if (!positional || *n_positional >= max_positional) {
                fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", prog, a);
                return -1;
            }
            positional[(*n_positional)++] = a;
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const cc_opt *o = opts;
        for (; o->name; o++)
            if (strlen(o->name) == nlen && !strncmp(o->name, name, nlen)) break;
        if (!o->name) {
            fprintf(stderr, "%s: unknown option '--%.*s' (see --help)\n", prog, (int)nlen, name);
            return -1;
        }
        const char *val;
        if (o->type == CC_OPT_FLAG) {
            val = eq ? eq + 1 : "1";
        } else if (eq) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            fprintf(stderr, "%s: option '--%s' needs a value (%s)\n", prog, o->name,
                    o->metavar ? o->metavar : "VALUE");
            return -1;
        }
        char from[80];
        snprintf(from, sizeof from, "--%s", o->name);
        if (set_value(o, val, from, prog) < 0) return -1;
    }
    return 0;
}
