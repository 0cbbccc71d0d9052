/* The Prometheus text exposition format, built into one growing buffer: shared by the
 * process-wide families (metrics.c), the per-user series (metrics_user.c) and the statement
 * statistics (admin_metrics.c), so that escaping and growth are written once. */
#ifndef PGWP_METRICS_TEXT_H
#define PGWP_METRICS_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define METRICS_TEXT_PREFIX "pgwire_proxy_"

struct metrics_text {
    char *buf;
    size_t len, cap;
    bool failed; /* out of memory once: everything after is dropped, take returns NULL */
};

__attribute__((format(printf, 2, 3))) void metrics_text_printf(struct metrics_text *t,
                                                               const char *fmt, ...);
/* "# HELP" and "# TYPE" of a family; name without the prefix. */
void metrics_text_family(struct metrics_text *t, const char *name, const char *type,
                         const char *help);
/* A label value escaped as the format wants: backslash, double quote and newline. */
void metrics_text_label(struct metrics_text *t, const char *v);
/* Integer microseconds as seconds with a fixed decimal point: exact, no rounding. */
void metrics_text_seconds(struct metrics_text *t, uint64_t us);
/* The NUL-terminated text (the caller frees it), or NULL after a failure; *len if len. */
char *metrics_text_take(struct metrics_text *t, size_t *len);

#endif
