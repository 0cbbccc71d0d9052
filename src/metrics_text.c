#include "metrics_text.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void metrics_text_printf(struct metrics_text *t, const char *fmt, ...)
{
    if (t->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = t->buf ? vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap) : -2;
        va_end(ap);
        if (n == -1) {
            t->failed = true;
            return;
        }
        if (n >= 0 && (size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        /* grow to twice the size or to what this line needs, whichever is more */
        size_t need = t->len + (n > 0 ? (size_t)n : 0) + 1;
        size_t want = t->cap ? t->cap * 2 : 4096;
        while (want < need)
            want *= 2;
        char *p = realloc(t->buf, want);
        if (!p) {
            t->failed = true;
            return;
        }
        t->buf = p;
        t->cap = want;
    }
}

void metrics_text_family(struct metrics_text *t, const char *name, const char *type,
                         const char *help)
{
    metrics_text_printf(
        t, "# HELP " METRICS_TEXT_PREFIX "%s %s\n# TYPE " METRICS_TEXT_PREFIX "%s %s\n", name, help,
        name, type);
}

void metrics_text_label(struct metrics_text *t, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\')
            metrics_text_printf(t, "\\\\");
        else if (*v == '"')
            metrics_text_printf(t, "\\\"");
        else if (*v == '\n')
            metrics_text_printf(t, "\\n");
        else
            metrics_text_printf(t, "%c", *v);
    }
}

void metrics_text_seconds(struct metrics_text *t, uint64_t us)
{
    metrics_text_printf(t, "%" PRIu64 ".%06" PRIu64, us / 1000000u, us % 1000000u);
}

char *metrics_text_take(struct metrics_text *t, size_t *len)
{
    if (!t->failed && !t->buf)
        metrics_text_printf(t, "%s", ""); /* an empty text is "", not NULL */
    char *ret = t->failed ? NULL : t->buf;
    if (!ret)
        free(t->buf);
    if (len)
        *len = ret ? t->len : 0;
    t->buf = NULL;
    t->len = t->cap = 0;
    return ret;
}
