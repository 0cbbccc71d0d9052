/* Helpers shared by the metrics unit tests. */
#ifndef PGWP_METRICS_TEST_H
#define PGWP_METRICS_TEST_H

#include <string.h>

#ifndef PGWP_VERSION
#define PGWP_VERSION "dev"
#endif

#define P "pgwire_proxy_"

/* 1 when text has line as a whole line of its own. */
static inline int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = strstr(text, line); p; p = strstr(p + 1, line))
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
            return 1;
    return 0;
}

#endif
