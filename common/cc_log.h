/* cc_log: one structured (logfmt) line per notable event, written to stderr with a
 * single write(2) so lines from several threads never interleave.
 *   ts=2026-11-29T07:50:00.123Z level=info comp=concert-server event=listening addr=...
 * Owns nothing but the component name and level threshold. */
#ifndef CC_LOG_H
#define CC_LOG_H

typedef enum { CC_LOG_DEBUG = 0, CC_LOG_INFO, CC_LOG_WARN, CC_LOG_ERROR } cc_log_level;

/** Sets the component name printed on every line and the lowest level printed. */
void cc_log_init(const char *component, cc_log_level min_level);

/** Parses "debug", "info", "warn" or "error"; returns -1 for anything else. */
int cc_log_level_parse(const char *s);

/** Logs `event` with extra `key=value` pairs formatted by printf-style `fmt`
 * (may be NULL). Values that may hold spaces are quoted by the caller ("%s"). */
void cc_log(cc_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define CC_DEBUG(ev, ...) cc_log(CC_LOG_DEBUG, ev, __VA_ARGS__)
#define CC_INFO(ev, ...) cc_log(CC_LOG_INFO, ev, __VA_ARGS__)
#define CC_WARN(ev, ...) cc_log(CC_LOG_WARN, ev, __VA_ARGS__)
#define CC_ERROR(ev, ...) cc_log(CC_LOG_ERROR, ev, __VA_ARGS__)

#endif
