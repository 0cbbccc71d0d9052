/* The statement statistics on /metrics: the top ADMIN_METRICS_TOP fingerprints by calls, so the
 * series set stays bounded whatever statements clients send. The metrics thread asks every
 * worker for a copy of its rows and waits (it is no event loop; the workers never wait). */
#include "admin.h"
#include "metrics_text.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ANSWER_WAIT_MS 1000

static const struct family {
    const char *name, *help;
} families[] = {
    {"statement_calls_total", "Statements by fingerprint (the top 20 by calls)."},
    {"statement_seconds_total", "Time statements of a fingerprint took (the top 20 by calls)."},
    {"statement_rows_total", "Rows statements of a fingerprint returned (the top 20 by calls)."},
};

static void put_value(struct metrics_text *t, int family, const struct stmt_stats_row *r)
{
    if (family == 0)
        metrics_text_printf(t, "%" PRIu64 "\n", r->calls);
    else if (family == 1) {
        metrics_text_seconds(t, r->total_us);
        metrics_text_printf(t, "\n");
    } else
        metrics_text_printf(t, "%" PRIu64 "\n", r->rows);
}

char *admin_render_statement_metrics(const struct stmt_stats_row *rows, size_t n)
{
    struct metrics_text t = {0};
    if (n > ADMIN_METRICS_TOP)
        n = ADMIN_METRICS_TOP;
    for (int f = 0; f < 3; f++) {
        metrics_text_family(&t, families[f].name, "counter", families[f].help);
        for (size_t i = 0; i < n; i++) {
            char fp[32];
            /* kinds and fingerprints are the proxy's own words: nothing to escape */
            metrics_text_printf(&t, METRICS_TEXT_PREFIX "%s{fingerprint=\"%s\",kind=\"%s\"} ",
                                families[f].name, stmt_stats_fp_text(rows[i].fp, fp, sizeof(fp)),
                                rows[i].kind);
            put_value(&t, f, &rows[i]);
        }
    }
    return metrics_text_take(&t, NULL);
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
