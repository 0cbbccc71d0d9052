/* Leveled text/JSON logging to stderr. One line per event, written with one write(). */
#ifndef PGWP_LOG_H
#define PGWP_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum log_level { LOGL_ERROR = 0, LOGL_WARN = 1, LOGL_INFO = 2, LOGL_DEBUG = 3 };

void log_setup(int level, int json);
int log_enabled(int level);

/* event: short machine-readable name ("session_start"); sid: session id or 0; fmt: a
 * human-readable message. Extra key/value fields can be passed as "k=v" text in fmt for text
 * logs; JSON logs put the message in "msg". */
void log_emit(int level, uint64_t sid, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Text-log escaping: control characters as \n / \xHH and backslashes doubled, so one event
 * is always one line. Always NUL-terminates; returns bytes written. */
size_t log_text_escape(char *dst, size_t dstlen, const char *src);

/* One JSON log object (no newline): time, level, session, event, then the message's leading
 * key=value words as fields (client=..., code=...) and the rest as "msg". Returns its length. */
size_t log_json_line(char *out, size_t cap, const char *when, const char *level, uint64_t sid,
                     const char *event, const char *msg);

/* UTC time as 2026-01-31T12:00:00.123Z (len >= 25). */
void log_timestamp(char *out, size_t len);

/* JSON string escaping into dst (always NUL-terminated, whole characters only). The output
 * is valid UTF-8 whatever src holds: bytes that are not well-formed UTF-8 become U+FFFD.
 * Returns bytes written. */
size_t log_json_escape(char *dst, size_t dstlen, const char *src);

/* True when len bytes of s are well-formed UTF-8. */
bool log_utf8_valid(const char *s, size_t len);

/* `,"<key>_hex":"<hex of val>"` when val is not valid UTF-8 (so the replaced bytes are kept),
 * else "" (also when it does not fit). Returns its length. */
size_t log_hex_field(char *dst, size_t dstlen, const char *key, const char *val, size_t len);

#define LOG_ERROR(sid, ev, ...) log_emit(LOGL_ERROR, sid, ev, __VA_ARGS__)
#define LOG_WARN(sid, ev, ...)  log_emit(LOGL_WARN, sid, ev, __VA_ARGS__)
#define LOG_INFO(sid, ev, ...)                                                                     \
    do {                                                                                           \
        if (log_enabled(LOGL_INFO))                                                                \
            log_emit(LOGL_INFO, sid, ev, __VA_ARGS__);                                             \
    } while (0)
#define LOG_DEBUG(sid, ev, ...)                                                                    \
    do {                                                                                           \
        if (log_enabled(LOGL_DEBUG))                                                               \
            log_emit(LOGL_DEBUG, sid, ev, __VA_ARGS__);                                            \
    } while (0)

#endif
