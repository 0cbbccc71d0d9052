/* What the client-side and upstream-side handlers share: the proxy's own errors, its own
 * statements (poison, read-only switch), aborts, and the end of a statement. */
#include "relay.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "netio.h"
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Fails the client's transaction block upstream after a locally generated error, so a later
 * COMMIT cannot commit: the proxy's error must behave like any PostgreSQL error. */
static const char poison_sql[] =
    "DO $pgwire_proxy$BEGIN RAISE EXCEPTION 'pgwire-proxy: transaction aborted after a "
    "guardrail error'; END$pgwire_proxy$";

/* A reload turned --read-only on: what the session's connect options would have set. */
static const char read_only_sql[] = "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY";

void relay_init(struct relay *r, const struct relay_env *env, void *ctx, uint64_t sid,
                const char *client_addr, const struct config *cfg)
{
    memset(r, 0, sizeof(*r));
    r->env = env;
    r->ctx = ctx;
    r->sid = sid;
    r->client_addr = client_addr;
    r->cfg = cfg;
    r->st = RS_IDLE;
    r->tx = 'I';
}

void relay_release(struct relay *r)
{
    free(r->sql_owned);
    r->sql_owned = NULL;
    relay_abort_done(r); /* a session can end while its tripped portal run is still held */
    relay_ext_free(r->x);
    r->x = NULL;
    free(r->hold);
    r->hold = NULL;
}

int relay_decide(struct relay *r, const char *sql, size_t len, struct guard_decision *d)
{
    if (r->decided) {
        *d = r->decision;
        r->decided = false;
        return 0;
    }
    int rc = r->env->policy(r->ctx, sql, len, d);
    if (rc < 0) {
        memset(d, 0, sizeof(*d));
        d->verdict = GUARD_DENY;
        snprintf(d->rule, sizeof(d->rule), "internal");
        snprintf(d->message, sizeof(d->message), "statement could not be checked: out of memory");
        return 0;
    }
    return rc;
}

static enum stmt_outcome refusal_outcome(const struct guard_decision *d)
{
    return d->verdict == GUARD_COPY     ? STMT_REJECTED
           : d->verdict == GUARD_SYNTAX ? STMT_ERROR
           : d->verdict == GUARD_BUSY   ? STMT_LIMITED
                                        : STMT_DENIED;
}

void relay_record_refusal(struct relay *r, const char *sql, size_t len,
                          const struct guard_decision *d, const struct relay_run_info *info)
{
    struct stmt st;
    struct guard_error ge;
    guard_error_for(d, &ge);
    stmt_begin(&st, r->cfg, sql, len);
    if (d->verdict != GUARD_SYNTAX) {
        metrics_guardrail(d->rule);
        LOG_INFO(r->sid, "statement_denied", "client=%s rule=%s", r->client_addr, d->rule);
        st.rule = d->rule;
    }
    memcpy(st.sqlstate, ge.code, 6); /* counted when the error goes out */
    st.upstream = STMT_UP_NOT_SENT;
    enum stmt_outcome o = refusal_outcome(d);
    uint64_t us = stmt_end(&st, o);
    if (r->env->statement_done)
        r->env->statement_done(r->ctx, &st, o, us, info);
}

void relay_run_end(struct relay *r, struct ext_run *run, enum stmt_outcome o)
{
    if (!run || run->done)
        return;
    run->done = true;
    if (o == STMT_OK && run->st.sqlstate[0])
        o = STMT_ERROR;
    if (run->st.upstream == STMT_UP_UNKNOWN && run->st.upstream_sqlstate[0])
        run->st.upstream = STMT_UP_ERROR;
    uint64_t us = stmt_end(&run->st, o);
    struct relay_run_info info = {.protocol = "extended",
                                  .portal = run->portal,
                                  .params = run->params,
                                  .nparams = run->nparams,
                                  .executes = run->executes};
    if (r->env->statement_done)
        r->env->statement_done(r->ctx, &run->st, o, us, &info);
}

void relay_abort_done(struct relay *r)
{
    r->ab.active = false;
    if (r->ab.run && r->x)
        relay_ext_run_unref(r->x, r->ab.run);
    r->ab.run = NULL;
}

void relay_refusal_of(const struct guard_decision *d, struct ext_refusal *out)
{
    struct guard_error ge;
    guard_error_for(d, &ge);
    memcpy(out->code, ge.code, 6);
    snprintf(out->message, sizeof(out->message), "%s", ge.message);
    snprintf(out->detail, sizeof(out->detail), "%s", ge.detail);
    out->hint = ge.hint;
    out->position = ge.position;
}

void relay_send_fatal(struct relay *r, const char *code, const char *message, const char *detail)
{
    uint8_t buf[1024];
    struct wire_buf b;
    wire_buf_init(&b, buf, sizeof(buf));
    struct wire_error_fields f = {
        .severity = "FATAL", .code = code, .message = message, .detail = detail};
    wire_build_error(&b, 'E', &f);
    if (b.overflow) {
        f.detail = NULL;
        b.overflow = false;
        wire_build_error(&b, 'E', &f);
    }
    r->env->to_client(r->ctx, b.data, b.len);
}

static int send_error(struct relay *r, const char *code, const char *message, const char *detail,
                      const char *hint, uint32_t position, char rfq)
{
    uint8_t buf[2048];
    struct wire_buf b;
    wire_buf_init(&b, buf, sizeof(buf));
    struct wire_error_fields f = {.severity = "ERROR",
                                  .code = code,
                                  .message = message,
                                  .detail = detail,
                                  .hint = hint,
                                  .position = position};
    wire_build_error(&b, 'E', &f);
    if (rfq)
        wire_build_rfq(&b, rfq);
    if (b.overflow)
        return -1;
    return r->env->to_client(r->ctx, b.data, b.len);
}

/* Answers the client's request with a locally generated error. rfq: ReadyForQuery is due now
 * (Query, FunctionCall) rather than at a later Sync. Inside a transaction block the upstream
 * transaction is failed first, and its ReadyForQuery ('E') then answers the client. */
int relay_local_error(struct relay *r, const char *code, const char *message, const char *detail,
                      const char *hint, uint32_t position, bool rfq)
{
    metrics_error_sqlstate(code);
    if (!rfq || r->tx != 'T')
        return send_error(r, code, message, detail, hint, position, rfq ? r->tx : 0);
    if (send_error(r, code, message, detail, hint, position, 0))
        return -1;
    return relay_start_internal(r, RI_POISON);
}

int relay_start_internal(struct relay *r, enum relay_internal what)
{
    uint8_t buf[256];
    struct wire_buf b;
    wire_buf_init(&b, buf, sizeof(buf));
    wire_build_query(&b, what == RI_POISON ? poison_sql : read_only_sql);
    if (r->env->to_upstream(r->ctx, b.data, b.len))
        return -1;
    r->internal = what;
    r->st = RS_QUERY;
    return 0;
}

void relay_start_abort(struct relay *r, const char *code, const char *message, const char *detail,
                       const char *hint, const char *rule, enum stmt_outcome outcome, bool cancel,
                       bool append_fate)
{
    struct relay_abort *a = &r->ab;
    if (a->active)
        return;
    relay_abort_done(r);
    memset(a, 0, sizeof(*a));
    a->active = true;
    memcpy(a->code, code, 6);
    snprintf(a->message, sizeof(a->message), "%s", message);
    snprintf(a->detail, sizeof(a->detail), "%s", detail ? detail : "");
    a->hint = hint;
    a->rule = rule;
    a->outcome = outcome;
    a->append_fate = append_fate;
    a->started_ms = netio_now_ms();
    a->copy_out = r->copy_out;
    if (rule)
        metrics_guardrail(rule);
    /* the Execute running upstream: the first in the FIFO, answers before it still owed */
    struct ext_entry *head = r->x ? relay_ext_first_execute(r->x) : NULL;
    if (head) {
        /* a portal run: answered where it tripped; the client's messages of this segment are
         * dropped until its Sync, before which a failing Parse rolls the segment back — unless
         * the Sync is upstream already, and the answer then waits for its ReadyForQuery */
        a->ext = true;
        a->reached = head == relay_ext_head(r->x);
        a->run = head->run;
        if (a->run)
            a->run->refs++;
        a->sync_sent = r->x->nsync > 0;
        if (!a->sync_sent)
            r->x->discard = true;
        uint8_t buf[8];
        struct wire_buf b;
        wire_buf_init(&b, buf, sizeof(buf));
        wire_build_flush(&b); /* its terminator must come now, not at the client's Sync */
        if (r->env->to_upstream(r->ctx, b.data, b.len))
            r->end = SE_UPSTREAM_LOST;
    }
    if (cancel)
        r->env->cancel(r->ctx);
    LOG_INFO(r->sid, "statement_aborted", "client=%s rule=%s code=%s", r->client_addr,
             rule ? rule : "-", code);
}

void relay_limit_abort(struct relay *r, enum stmt_limit which)
{
    char msg[128], det[160];
    bool rows = which == STMT_LIMIT_ROWS;
    unsigned long long n = rows ? r->cfg->max_rows : r->cfg->max_bytes;
    snprintf(msg, sizeof(msg), "%s limit of %llu exceeded", rows ? "row" : "byte", n);
    snprintf(det, sizeof(det), "rule: %s (pgwire-proxy %s %llu)", rows ? "max-rows" : "max-bytes",
             rows ? "--max-rows" : "--max-bytes", n);
    relay_start_abort(r, "54000", msg, det,
                      rows ? "Add a LIMIT clause or a narrower WHERE, or ask the operator to raise "
                             "--max-rows."
                           : "Select fewer or narrower columns or rows, or ask the operator to "
                             "raise --max-bytes.",
                      rows ? "max-rows" : "max-bytes", STMT_LIMITED, true, true);
    r->ab.report_commit = true;
}

void relay_shadow_denied(struct relay *r, const struct guard_decision *d)
{
    if (!d->shadow_rule[0])
        return;
    metrics_guardrail_shadow(d->shadow_rule);
    LOG_INFO(r->sid, "statement_would_deny", "client=%s rule=%s", r->client_addr, d->shadow_rule);
}

void relay_limit_warn(struct relay *r, struct stmt *st, enum stmt_limit l, uint64_t n, bool row)
{
    if (!stmt_pass_limit(st, l, n, row))
        return;
    bool rows = l == STMT_LIMIT_ROWS;
    metrics_guardrail_shadow(st->shadow_limit);
    LOG_INFO(r->sid, "statement_would_limit", "client=%s rule=%s limit=%llu", r->client_addr,
             st->shadow_limit, (unsigned long long)(rows ? r->cfg->max_rows : r->cfg->max_bytes));
}

void relay_statement_end(struct relay *r, enum stmt_outcome o)
{
    if (!r->stmt.active)
        return;
    if (o == STMT_OK && r->stmt.sqlstate[0])
        o = STMT_ERROR;
    uint64_t us = stmt_end(&r->stmt, o);
    if (r->env->statement_done)
        r->env->statement_done(r->ctx, &r->stmt, o, us, NULL);
    r->stmt.sql = NULL;
    free(r->sql_owned);
    r->sql_owned = NULL;
}

void relay_check_deadline(struct relay *r, int64_t now)
{
    if (r->ab.active || r->internal != RI_NONE)
        return;
    bool ext_due = r->x && r->x->exec_deadline_ms && now >= r->x->exec_deadline_ms;
    bool simple_due =
        r->st == RS_QUERY && r->stmt.active && r->stmt.deadline_ms && now >= r->stmt.deadline_ms;
    if (!ext_due && !simple_due)
        return;
    char det[128];
    snprintf(det, sizeof(det), "rule: query-timeout (pgwire-proxy --query-timeout %llums)",
             (unsigned long long)r->cfg->query_timeout_ms);
    relay_start_abort(r, "57014", "canceling statement due to statement timeout", det,
                      "Make the statement faster, add a LIMIT, or ask the operator to raise "
                      "--query-timeout.",
                      "query-timeout", STMT_LIMITED, true, false);
    r->ab.report_commit = true;
}
