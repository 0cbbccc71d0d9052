/* The statement statistics on /metrics: the top ADMIN_METRICS_TOP fingerprints by calls, so the
 * series set stays bounded whatever statements clients send. The metrics thread asks every
 * worker for a copy of its rows and waits (it is no event loop; the workers never wait). */
#include "admin.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ANSWER_WAIT_MS 1000

struct text {
    char *buf;
    size_t len, cap;
    bool failed;
};

__attribute__((format(printf, 2, 3))) static void put(struct text *t, const char *fmt, ...)
{
    for (int tries = 0; tries < 2 && !t->failed; tries++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = true;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = (t->cap + (size_t)n + 1) * 2;
        char *b = realloc(t->buf, cap);
        if (!b) {
            t->failed = true;
            return;
        }
        t->buf = b;
        t->cap = cap;
    }
}

static const struct family {
    const char *name, *help;
} families[] = {
    {"statement_calls_total", "Statements by fingerprint (the top 20 by calls)."},
    {"statement_seconds_total", "Time statements of a fingerprint took (the top 20 by calls)."},
    {"statement_rows_total", "Rows statements of a fingerprint returned (the top 20 by calls)."},
};

static void put_value(struct text *t, int family, const struct stmt_stats_row *r)
{
    if (family == 0)
        put(t, "%" PRIu64 "\n", r->calls);
    else if (family == 1)
        put(t, "%" PRIu64 ".%06" PRIu64 "\n", r->total_us / 1000000, r->total_us % 1000000);
    else
        put(t, "%" PRIu64 "\n", r->rows);
}

char *admin_render_statement_metrics(const struct stmt_stats_row *rows, size_t n)
{
    struct text t = {.buf = malloc(1024), .cap = 1024};
    t.failed = !t.buf;
    if (n > ADMIN_METRICS_TOP)
        n = ADMIN_METRICS_TOP;
    for (int f = 0; f < 3; f++) {
        put(&t, "# HELP pgwire_proxy_%s %s\n# TYPE pgwire_proxy_%s counter\n", families[f].name,
            families[f].help, families[f].name);
        for (size_t i = 0; i < n; i++) {
            char fp[32];
            /* kinds and fingerprints are the proxy's own words: nothing to escape */
            put(&t, "pgwire_proxy_%s{fingerprint=\"%s\",kind=\"%s\"} ", families[f].name,
                stmt_stats_fp_text(rows[i].fp, fp, sizeof(fp)), rows[i].kind);
            put_value(&t, f, &rows[i]);
        }
    }
    if (t.failed) {
        free(t.buf);
        return NULL;
    }
    return t.buf;
}

char *admin_statement_metrics(void *arg)
{
    struct admin_hub *hub = arg;
    struct admin_query *q =
        hub ? admin_query_new(ADMIN_STATEMENTS, hub->nworkers, 0, NULL, false, NULL) : NULL;
    char *text = NULL;
    if (!q || admin_query_post(hub, q) != 0 || !admin_query_wait(q, ANSWER_WAIT_MS))
        goto out;
    size_t n = 0;
    bool oom = false;
    struct stmt_stats_row *rows = admin_query_statements(q, SIZE_MAX, &n, &oom);
    if (!oom)
        text = admin_render_statement_metrics(rows, n);
    stmt_stats_rows_free(rows, n);
out:
    admin_query_release(q);
    return text;
}
