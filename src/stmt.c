#include "stmt.h"
#include "config.h"
#include "metrics.h"
#include "netio.h"

#include <string.h>

static const char *const audit_names[] = {
    [STMT_OK] = "ok",
    [STMT_ERROR] = "error",
    [STMT_DENIED] = "denied",
    [STMT_LIMITED] = "limit",
    [STMT_REJECTED] = "rejected",
    [STMT_CLIENT_GONE] = "client_gone",
    [STMT_DISCARDED] = "discarded",
};

static const char *const upstream_names[] = {
    [STMT_UP_UNKNOWN] = "unknown",         [STMT_UP_COMMITTED] = "committed",
    [STMT_UP_IN_BLOCK] = "in_transaction", [STMT_UP_ERROR] = "error",
    [STMT_UP_ROLLED_BACK] = "rolled_back", [STMT_UP_NOT_SENT] = "not_sent",
};

/* The metrics keep their public spelling (limited, not limit); a client that left counts as
 * an error of the statement, as does one its pipeline skipped. */
static const enum metrics_query_outcome metric_of[] = {
    [STMT_OK] = METRICS_QUERY_OK,
    [STMT_ERROR] = METRICS_QUERY_ERROR,
    [STMT_DENIED] = METRICS_QUERY_DENIED,
    [STMT_LIMITED] = METRICS_QUERY_LIMITED,
    [STMT_REJECTED] = METRICS_QUERY_REJECTED,
    [STMT_CLIENT_GONE] = METRICS_QUERY_ERROR,
    [STMT_DISCARDED] = METRICS_QUERY_ERROR,
};

_Static_assert(sizeof(audit_names) / sizeof(audit_names[0]) == STMT_OUTCOME_MAX, "outcomes");
_Static_assert(sizeof(metric_of) / sizeof(metric_of[0]) == STMT_OUTCOME_MAX, "outcomes");

const char *stmt_outcome_audit_name(enum stmt_outcome o)
{
    return (unsigned)o < STMT_OUTCOME_MAX ? audit_names[o] : "unknown";
}

const char *stmt_upstream_name(enum stmt_upstream u)
{
    return (unsigned)u <= STMT_UP_NOT_SENT ? upstream_names[u] : "unknown";
}

void stmt_audit_view(const struct stmt *st, enum stmt_outcome o, struct stmt_audit *out)
{
    const char *deny = st->shadow_rule[0] ? st->shadow_rule : NULL;
    out->outcome = stmt_outcome_audit_name(o);
    out->rule = st->rule;
    out->shadow_rule = deny ? deny : st->shadow_limit;
    if (o != STMT_OK || st->rule || !out->shadow_rule)
        return;
    /* a shadow rule would have refused it before it ran: that comes first */
    out->outcome = deny ? "would_deny" : "would_limit";
    out->rule = out->shadow_rule;
    out->shadow_rule = deny ? st->shadow_limit : NULL;
}

void stmt_upstream_error(struct stmt *st, const char code[6])
{
    st->upstream_error = true;
    if (!st->upstream_sqlstate[0])
        memcpy(st->upstream_sqlstate, code, 6);
}

void stmt_part(struct stmt *st, const struct config *cfg)
{
    st->budget.max_rows = cfg->max_rows;
    st->budget.max_bytes = cfg->max_bytes;
    st->budget.rows = st->budget.bytes = 0;
}

void stmt_begin(struct stmt *st, const struct config *cfg, const char *sql, size_t len)
{
    memset(st, 0, sizeof(*st));
    st->active = true;
    st->start_us = netio_turn_us();
    st->deadline_ms =
        cfg->query_timeout_ms ? st->start_us / 1000 + (int64_t)cfg->query_timeout_ms : 0;
    stmt_part(st, cfg);
    st->sql = sql;
    st->sql_len = len;
}

enum stmt_limit stmt_charge(struct stmt *st, uint64_t n, bool row)
{
    struct stmt_budget *b = &st->budget;
    if (row && b->max_rows && b->rows + 1 > b->max_rows)
        return STMT_LIMIT_ROWS;
    if (b->max_bytes && b->bytes + n > b->max_bytes)
        return STMT_LIMIT_BYTES;
    if (row) {
        b->rows++;
        st->rows++;
    }
    b->bytes += n;
    st->bytes += n;
    return STMT_LIMIT_NONE;
}

bool stmt_pass_limit(struct stmt *st, enum stmt_limit l, uint64_t n, bool row)
{
    bool first = !st->shadow_limit;
    if (first)
        st->shadow_limit = l == STMT_LIMIT_ROWS ? "max-rows" : "max-bytes";
    st->budget.max_rows = st->budget.max_bytes = 0;
    stmt_charge(st, n, row);
    return first;
}

uint64_t stmt_end(struct stmt *st, enum stmt_outcome o)
{
    uint64_t us = (uint64_t)(netio_turn_us() - st->start_us);
    metrics_query(metric_of[o], us);
    metrics_rows_bytes(st->rows, st->bytes);
    st->active = false;
    st->deadline_ms = 0;
    return us;
}
