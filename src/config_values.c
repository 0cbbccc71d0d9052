/* The value forms options share (durations, sizes, HOST:PORT, booleans) and the one-line
 * error text every loader failure ends in; apart from the option table so that both the loader
 * and the checks after it can use them. */
#include "config.h"
#include "config_int.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int config_vfail(char *err, size_t errlen, const char *fmt, va_list ap)
{
    vsnprintf(err, errlen, fmt, ap);
    for (char *p = err; *p; p++)
        if (iscntrl((unsigned char)*p))
            *p = ' '; /* err is one line: values may hold newlines */
    return -EINVAL;
}

/* The leading decimal number of s (no sign, no space); *end points at its unit. */
static int parse_number(const char *s, unsigned long long *v, char **end)
{
    if (!s || !isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    *v = strtoull(s, end, 10);
    return errno ? -EINVAL : 0;
}

int config_parse_duration_ms(const char *s, uint64_t *out)
{
    char *end = NULL;
    unsigned long long v;
    if (parse_number(s, &v, &end))
        return -EINVAL;
    uint64_t mul;
    if (*end == 0 || strcmp(end, "s") == 0)
        mul = 1000;
    else if (strcmp(end, "ms") == 0)
        mul = 1;
    else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
        mul = 60000;
    else if (strcmp(end, "h") == 0)
        mul = 3600000;
    else
        return -EINVAL;
    if (v > UINT64_MAX / mul || v * mul > (uint64_t)INT_MAX)
        return -EINVAL; /* upstream statement_timeout is an int of milliseconds */
    *out = v * mul;
    return 0;
}

int config_parse_size(const char *s, uint64_t *out)
{
    char *end = NULL;
    unsigned long long v;
    if (parse_number(s, &v, &end))
        return -EINVAL;
    static const struct {
        const char *suffix;
        uint64_t mul;
    } units[] = {{"", 1},
                 {"B", 1},
                 {"kB", 1000},
                 {"KB", 1000},
                 {"MB", 1000000},
                 {"GB", 1000000000ull},
                 {"KiB", 1024},
                 {"MiB", 1024ull * 1024},
                 {"GiB", 1024ull * 1024 * 1024}};
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(end, units[i].suffix) == 0) {
            if (v > UINT64_MAX / units[i].mul)
                return -EINVAL;
            *out = v * units[i].mul;
            return 0;
        }
    }
    return -EINVAL;
}

int config_parse_peer(const char *s, int *id, char *host, size_t hostlen, int *port)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '=' || v < 1 || v > 255)
        return -EINVAL;
    *id = (int)v;
    return config_parse_hostport(end + 1, host, hostlen, port);
}

int config_parse_hostport(const char *s, char *host, size_t hostlen, int *port)
{
    if (!s || !*s)
        return -EINVAL;
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || colon[1] == 0)
        return -EINVAL;
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl >= hostlen)
        return -EINVAL;
    if (!isdigit((unsigned char)colon[1]))
        return -EINVAL;
    char *end = NULL;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || *end || p < 0 || p > 65535)
        return -EINVAL;
    memcpy(host, h, hl);
    host[hl] = 0;
    *port = (int)p;
    return 0;
}

int config_parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"1", "true", "on", "yes"};
    static const char *const no[] = {"0", "false", "off", "no"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}
