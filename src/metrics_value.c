/* Reading one series back out of the rendered exposition text: what the tests check, so they
 * see exactly what a scraper sees. */
#include "metrics.h"
#include "metrics_text.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define METRIC_PREFIX METRICS_TEXT_PREFIX

/* Series that exist but are not rendered while zero (error classes, rules never hit) still
 * read as 0, so a test can take a "before" value. */
static bool series_is_sparse(const char *series)
{
    static const char err[] = METRIC_PREFIX "errors_total{class=\"";
    static const char rule[] = METRIC_PREFIX "guardrail_violations_total{rule=\"";
    size_t n = strlen(series);

    if (strncmp(series, err, sizeof(err) - 1) == 0) {
        const char *c = series + sizeof(err) - 1;
        if (strcmp(c, "other\"}") == 0)
            return true;
        const char *cls = strlen(c) == 4 ? metrics_sqlstate_class(c) : NULL;
        return cls && memcmp(c, cls, 2) == 0 && strcmp(c + 2, "\"}") == 0;
    }
    if (strncmp(series, rule, sizeof(rule) - 1) == 0)
        return n > sizeof(rule) - 1 + 2 && strcmp(series + n - 2, "\"}") == 0;
    return false;
}

/* Reads the value back out of the rendered text, so tests check exactly what a scraper sees. */
int64_t metrics_value(const char *series)
{
    int64_t ret = -1;
    size_t n = series ? strlen(series) : 0;
    char *text = NULL;

    if (n == 0)
        goto out;
    text = metrics_render(NULL);
    if (!text)
        goto out;
    for (const char *line = text; *line;) {
        const char *eol = strchr(line, '\n');
        if (strncmp(line, series, n) == 0 && line[n] == ' ') {
            ret = strtoll(line + n + 1, NULL, 10);
            goto out;
        }
        if (!eol)
            break;
        line = eol + 1;
    }
    if (series_is_sparse(series))
        ret = 0;
out:
    free(text);
    return ret;
}
