/* cc_opt: table-driven command-line and environment configuration for every binary.
 * Each option may come from an environment variable and be overridden by a flag
 * (`--name value` or `--name=value`); `--help` prints the table and exits 0.
 * Owns nothing: values are written into the caller's variables; string values point
 * into argv or the environment. */
#ifndef CC_OPT_H
#define CC_OPT_H

#include <stdint.h>

typedef enum {
    CC_OPT_STR,   /* const char ** */
    CC_OPT_INT,   /* int64_t *, decimal, range-checked against min/max */
    CC_OPT_FLAG,  /* int *, set to 1 by the bare flag (env: 1/true/yes) */
} cc_opt_type;

typedef struct {
    const char *name;    /* long flag without dashes, e.g. "listen" */
    const char *env;     /* environment variable or NULL */
    cc_opt_type type;
    void *out;
    const char *metavar; /* e.g. "HOST:PORT"; NULL for flags */
    const char *help;
    int64_t min, max;    /* CC_OPT_INT only */
} cc_opt;

/** Parses the environment, then argv. Options may appear anywhere; other words are
 * returned in order in `positional` (at most `max_positional`, count in
 * `*n_positional`; pass NULL/0 when none are allowed). `usage` is printed before
 * the option table by --help. On --help: prints and exits 0. On an error: prints
 * "<prog>: <reason>" to stderr and returns -1. Returns 0 on success. */
int cc_opt_parse(const cc_opt *opts, int argc, char **argv, const char *usage,
                 char **positional, int max_positional, int *n_positional);

/** Prints the usage text and the option table to `fp` (a FILE *). */
void cc_opt_usage(const cc_opt *opts, const char *usage, void *fp);

#endif
