#include "log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int log_level_cur = LOGL_INFO;
static atomic_int log_json = 0;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_setup(int level, int json)
{
    atomic_store(&log_level_cur, level);
    atomic_store(&log_json, json);
}

int log_enabled(int level)
{
    return level <= atomic_load_explicit(&log_level_cur, memory_order_relaxed);
}

/* Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlong forms, surrogates or
 * code points past U+10FFFF), or 0 when the bytes there are not one. */
static size_t utf8_seq(const unsigned char *p, size_t avail)
{
    unsigned char c = p[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else
        return 0;
    if (avail < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    return n;
}

bool log_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq(p + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

size_t log_json_escape(char *dst, size_t dstlen, const char *src)
{
    size_t o = 0;
    if (dstlen == 0)
        return 0;
    const unsigned char *p = (const unsigned char *)src;
    size_t avail = strlen(src);
    while (*p) {
        char unit[8];
        size_t ul, take = 1;
        if (*p == '"' || *p == '\\') {
            unit[0] = '\\', unit[1] = (char)*p, ul = 2;
        } else if (*p == '\n') {
            unit[0] = '\\', unit[1] = 'n', ul = 2;
        } else if (*p < 0x20) {
            ul = (size_t)snprintf(unit, sizeof(unit), "\\u%04x", *p);
        } else if ((take = utf8_seq(p, avail)) == 0) {
            /* not UTF-8: U+FFFD, so the line stays valid JSON (callers keep the bytes in hex) */
            memcpy(unit, "\xEF\xBF\xBD", 3), ul = 3, take = 1;
        } else {
            memcpy(unit, p, take), ul = take;
        }
        if (o + ul >= dstlen)
            break; /* whole units only: a cut sequence would be invalid UTF-8 */
        memcpy(dst + o, unit, ul);
        o += ul;
        p += take;
        avail -= take;
    }
    dst[o] = 0;
    return o;
}

size_t log_hex_field(char *dst, size_t dstlen, const char *key, const char *val, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    if (dstlen == 0)
        return 0;
    dst[0] = 0;
    if (!val || log_utf8_valid(val, len))
        return 0;
    int head = snprintf(dst, dstlen, ",\"%s_hex\":\"", key);
    if (head < 0 || (size_t)head + 2 * len + 2 >= dstlen) {
        dst[0] = 0;
        return 0;
    }
    size_t o = (size_t)head;
    for (size_t i = 0; i < len; i++) {
        dst[o++] = hex[(unsigned char)val[i] >> 4];
        dst[o++] = hex[(unsigned char)val[i] & 15];
    }
    dst[o++] = '"';
    dst[o] = 0;
    return o;
}

size_t log_text_escape(char *dst, size_t dstlen, const char *src)
{
    size_t o = 0;
    if (dstlen == 0)
        return 0;
    for (const unsigned char *p = (const unsigned char *)src; *p && o + 5 < dstlen; p++) {
        if (*p == '\n') {
            dst[o++] = '\\';
            dst[o++] = 'n';
        } else if (*p == '\\') {
            dst[o++] = '\\';
            dst[o++] = '\\';
        } else if (*p < 0x20 || *p == 0x7f) {
            o += (size_t)snprintf(dst + o, dstlen - o, "\\x%02x", *p);
        } else {
            dst[o++] = (char)*p;
        }
    }
    dst[o] = 0;
    return o;
}

/* Appends `,"key":"escaped value"` (and `,"key_hex":"..."` for bytes that are not UTF-8),
 * always whole: a field that does not fit is shortened, never cut mid-escape, and room for
 * the closing brace is kept, so every line is valid JSON. */
static size_t json_field(char *out, size_t cap, size_t o, const char *key, size_t klen,
                         const char *val, size_t vlen)
{
    char v[1024], esc[6200], k[64], hexf[2200];
    if (vlen >= sizeof(v)) {
        vlen = sizeof(v) - 1;
        while (vlen > 0 && ((unsigned char)val[vlen] & 0xC0) == 0x80)
            vlen--; /* a whole character, or the cut alone would look like invalid bytes */
    }
    memcpy(v, val, vlen);
    v[vlen] = 0;
    snprintf(k, sizeof(k), "%.*s", (int)klen, key);
    size_t overhead = strlen(k) + 6; /* ,"k":"" */
    if (o + overhead + 2 >= cap)
        return o;
    size_t room = cap - o - overhead - 2; /* 2: the closing brace and the NUL */
    size_t el = log_json_escape(esc, room + 1 < sizeof(esc) ? room + 1 : sizeof(esc), v);
    /* the client's bytes, when they are not UTF-8: nothing lost for forensics */
    size_t hl = log_hex_field(hexf, sizeof(hexf), k, v, vlen);
    if (el + hl > room)
        hexf[0] = 0;
    o += (size_t)snprintf(out + o, cap - o, ",\"%s\":\"%s\"%s", k, esc, hexf);
    return o;
}

size_t log_json_line(char *out, size_t cap, const char *when, const char *level, uint64_t sid,
                     const char *event, const char *msg)
{
    size_t o = (size_t)snprintf(out, cap,
                                "{\"time\":\"%s\",\"level\":\"%s\",\"session\":%llu,"
                                "\"event\":\"%s\"",
                                when, level, (unsigned long long)sid, event);
    if (o >= cap)
        o = cap - 1;
    /* leading key=value words become fields; whatever follows is the message */
    const char *p = msg;
    for (;;) {
        const char *k = p;
        while ((*k >= 'a' && *k <= 'z') || *k == '_')
            k++;
        if (k == p || *k != '=')
            break;
        const char *v = k + 1, *e = v;
        while (*e && *e != ' ')
            e++;
        o = json_field(out, cap, o, p, (size_t)(k - p), v, (size_t)(e - v));
        p = *e ? e + 1 : e;
    }
    if (*p)
        o = json_field(out, cap, o, "msg", 3, p, strlen(p));
    if (o + 1 < cap)
        out[o++] = '}';
    out[o] = 0;
    return o;
}

void log_timestamp(char *out, size_t len)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t wl = strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + wl, len - wl, ".%03ldZ", ts.tv_nsec / 1000000);
}

void log_emit(int level, uint64_t sid, const char *event, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    char when[40];
    log_timestamp(when, sizeof(when));

    char line[4608];
    int n;
    const char *lvl = level_names[level < 0 ? 0 : level > 3 ? 3 : level];
    if (atomic_load(&log_json)) {
        size_t len = log_json_line(line, sizeof(line) - 1, when, lvl, sid, event, msg);
        line[len] = '\n';
        n = (int)len + 1;
    } else {
        /* client-supplied names end up in messages: a newline must not start a forged line */
        char esc[4200];
        log_text_escape(esc, sizeof(esc), msg);
        if (sid)
            n = snprintf(line, sizeof(line), "%s %-5s [%llu] %s: %s\n", when, lvl,
                         (unsigned long long)sid, event, esc);
        else
            n = snprintf(line, sizeof(line), "%s %-5s %s: %s\n", when, lvl, event, esc);
    }
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line)) {
        n = sizeof(line) - 1;
        line[n - 1] = '\n';
    }
    /* one write per line keeps lines whole across threads */
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
