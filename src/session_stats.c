/* A statement ended: the session's own totals (SHOW SESSIONS), and the worker's statement
 * statistics by fingerprint (SHOW STATEMENTS, /metrics). The fingerprint of a shape seen before
 * comes from the worker's cache; a new shape is parsed here, on the worker's thread, only up to
 * SESSION_INLINE_PARSE bytes (longer texts count under "<large statement>"), and only a new row
 * parses once more for its redacted sample. */
#include "config.h"
#include "guard.h"
#include "guard_fingerprint.h"
#include "log.h"
#include "session_int.h"
#include "stmt_stats.h"

#include <stdlib.h>

static enum stmt_stats_class class_of(enum stmt_outcome o)
{
    switch (o) {
    case STMT_OK:
        return STMT_STATS_OK;
    case STMT_DENIED:
        return STMT_STATS_DENIED;
    case STMT_LIMITED:
        return STMT_STATS_LIMITED;
    case STMT_ERROR:
    case STMT_REJECTED:
    case STMT_CLIENT_GONE:
    case STMT_DISCARDED:
        return STMT_STATS_ERROR;
    default:
        return STMT_STATS_OK; /* an outcome this table does not know: counted as a call */
    }
}

static size_t parse_bound(const struct session *s)
{
    size_t max = (size_t)s->cfg->max_parse_size;
    return max < SESSION_INLINE_PARSE ? max : SESSION_INLINE_PARSE;
}

static void new_row(struct session *s, struct stmt_stats_row *r, const struct stmt *st,
                    const struct guard_fp *f)
{
    if (f->large)
        return; /* its name says what it is; no text is kept */
    char *red = guard_redact(st->sql, st->sql_len, parse_bound(s));
    if (red)
        stmt_stats_set_sample(r, red);
    free(red);
}

static void record(struct session *s, const struct stmt *st, enum stmt_outcome o, uint64_t us)
{
    size_t cap = (size_t)s->rt->cfg.statement_stats;
    if (!cap || !s->env->stats || !st->sql)
        return;
    struct guard_fp f;
    if (st->fp_memo && st->fp_memo->kind) {
        f = *st->fp_memo; /* a prepared statement run again */
    } else if (guard_fingerprint(s->env->fp_cache, st->sql, st->sql_len, parse_bound(s),
                                 s->gcache != NULL, &f) != 0) {
        LOG_DEBUG(s->id, "statement_stats", "out of memory fingerprinting a statement");
        return;
    } else if (st->fp_memo && !f.large) {
        /* a large text is counted without a parse: nothing to keep, and a reload may change
         * what is large */
        *st->fp_memo = f;
        st->fp_memo->parsed = false;
    }
    uint64_t fp = f.large ? STMT_STATS_FP_LARGE : f.syntax ? STMT_STATS_FP_SYNTAX : f.fp;
    bool created = false;
    struct stmt_stats_row *r =
        stmt_stats_touch(s->env->stats, cap, fp, f.kind, st->start_us + (int64_t)us, &created);
    if (!r)
        return;
    if (created)
        new_row(s, r, st, &f);
    stmt_stats_add(r, class_of(o), us, st->rows, st->bytes);
    r->shadow += st->shadow_rule[0] || st->shadow_limit; /* what the rollout of a rule reads */
}

void session_stats_statement(struct session *s, const struct stmt *st, enum stmt_outcome o,
                             uint64_t us)
{
    s->nstatements++;
    s->rows_total += st->rows;
    s->bytes_total += st->bytes;
    record(s, st, o, us);
}
