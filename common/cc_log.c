/* cc_log: logfmt lines to stderr. See cc_log.h. */
#include "cc_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *log_component = "concert";
static cc_log_level log_min = CC_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void cc_log_init(const char *component, cc_log_level min_level) {
    log_component = component;
    log_min = min_level;
}

int cc_log_level_parse(const char *s) {
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0) return i;
    return -1;
}

void cc_log(cc_log_level level, const char *event, const char *fmt, ...) {
    if (level < log_min) return;
    char buf[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(buf, sizeof buf,
                     "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s comp=%s event=%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, level_names[level], log_component, event);
    if (n < 0) return;
    if (fmt && *fmt && (size_t)n < sizeof buf - 2) {
        buf[n++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
        va_end(ap);
        if (m > 0) n += m;
    }
    if ((size_t)n >= sizeof buf - 1) n = sizeof buf - 2;
    buf[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, buf, (size_t)n);
    (void)w;
}
