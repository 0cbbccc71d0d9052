/* The relay loop: client messages checked and forwarded whole, upstream messages scanned by
 * header and forwarded as spans, with the proxy's own errors spliced in where a guardrail or an
 * unsupported feature ends a statement. */
#include "audit.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "server.h"
#include "session_int.h"
#include "worker.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CBUF_INITIAL     8192
#define UBUF_SIZE        (64 * 1024)
#define UPSTREAM_MAX_MSG (1u << 30)
#define INSPECT_MAX      (16u << 20) /* largest ErrorResponse etc. we buffer whole */
#define DRAIN_GRACE_MS   10000       /* upstream must reach ReadyForQuery this soon after cancel */
#define DRIVE_READS_MAX  16 /* reads per socket per turn: one busy session cannot pin a worker */

/* Fails the client's transaction block upstream after a locally generated error, so a later
 * COMMIT cannot commit: the proxy's error must behave like any PostgreSQL error. */
static const char poison_sql[] =
    "DO $pgwire_proxy$BEGIN RAISE EXCEPTION 'pgwire-proxy: transaction aborted after a "
    "guardrail error'; END$pgwire_proxy$";

static const char extended_hint[] =
    "Use the simple query protocol: e.g. psycopg ClientCursor, JDBC preferQueryMode=simple, "
    "pgbench -M simple, or disable server-side prepared statements in the driver.";

/* ---------- output ---------- */

/* A client that pipelines requests answered locally (errors, Sync) without reading them is
 * not served further until it reads: its queued output stays bounded. */
#define OUT_HIGH_WATER (64 * 1024)

static bool out_backlogged(const struct session *s)
{
    return s->olen - s->ooff > OUT_HIGH_WATER;
}

static void start_abort(struct session *s, const char *code, const char *message,
                        const char *detail, const char *hint, const char *rule,
                        enum metrics_query_outcome outcome, bool cancel, bool append_fate);

int out_append(struct session *s, const void *buf, size_t len)
{
    if (s->ooff > 0 && s->ooff == s->olen)
        s->ooff = s->olen = 0;
    if (s->olen + len > s->ocap) {
        if (s->ooff > 0) {
            memmove(s->obuf, s->obuf + s->ooff, s->olen - s->ooff);
            s->olen -= s->ooff;
            s->ooff = 0;
        }
        size_t cap = s->ocap ? s->ocap : 4096;
        while (cap < s->olen + len)
            cap *= 2;
        if (cap != s->ocap) {
            uint8_t *n = realloc(s->obuf, cap);
            if (!n)
                return -1;
            s->obuf = n;
            s->ocap = cap;
        }
    }
    if (!out_pending(s))
        s->last_write_ms = netio_now_ms();
    memcpy(s->obuf + s->olen, buf, len);
    s->olen += len;
    return 0;
}

int out_flush(struct session *s)
{
    while (out_pending(s) && s->cli_out) {
        ssize_t n = netio_write(&s->cli, s->obuf + s->ooff, s->olen - s->ooff);
        if (n > 0) {
            s->ooff += (size_t)n;
            s->last_write_ms = netio_now_ms();
            continue;
        }
        if (n == -EAGAIN) {
            s->cli_out = false;
            if (s->cli.want == POLLIN)
                s->cli_in = false; /* TLS needs to read before it can write */
            break;
        }
        return -1;
    }
    if (!out_pending(s))
        s->ooff = s->olen = 0;
    return 0;
}

/* Sends bytes that live in a session buffer: straight to the socket when nothing is queued,
 * otherwise (or for what the socket does not take) copied behind the queue. */
int out_span(struct session *s, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    if (!out_pending(s) && s->cli_out) {
        while (len > 0) {
            ssize_t n = netio_write(&s->cli, p, len);
            if (n > 0) {
                p += n;
                len -= (size_t)n;
                continue;
            }
            if (n == -EAGAIN) {
                s->cli_out = false;
                break;
            }
            return -1;
        }
    }
    return len ? out_append(s, p, len) : 0;
}

static int upstream_send(struct session *s)
{
    while (s->up_pend_len > 0 && s->up_out) {
        ssize_t n = netio_write(&s->up.io, s->up_pend, s->up_pend_len);
        if (n > 0) {
            s->up_pend += n;
            s->up_pend_len -= (size_t)n;
            continue;
        }
        if (n == -EAGAIN) {
            s->up_out = false;
            break;
        }
        return -1;
    }
    return 0;
}

/* Queues bytes for the upstream; buf must stay valid until written (cbuf or up_small). */
static int upstream_write(struct session *s, const void *buf, size_t len)
{
    s->up_pend = buf;
    s->up_pend_len = len;
    return upstream_send(s);
}

static int send_error_rfq(struct session *s, const char *severity, const char *code,
                          const char *message, const char *detail, const char *hint,
                          uint32_t position, char rfq)
{
    uint8_t buf[2048];
    struct wire_buf b;
    wire_buf_init(&b, buf, sizeof(buf));
    struct wire_error_fields f = {.severity = severity,
                                  .code = code,
                                  .message = message,
                                  .detail = detail,
                                  .hint = hint,
                                  .position = position};
    wire_build_error(&b, 'E', &f);
    if (rfq)
        wire_build_rfq(&b, rfq);
    return b.overflow ? -ENOBUFS : out_append(s, b.data, b.len);
}

/* ---------- statement bookkeeping ---------- */

static void compact_client(struct session *s);
static void consume_client(struct session *s, size_t n);

static void statement_begin(struct session *s, char *sql, size_t len)
{
    s->q_start_us = netio_now_us();
    s->q_deadline_ms =
        s->cfg->query_timeout_ms ? s->q_start_us / 1000 + (int64_t)s->cfg->query_timeout_ms : 0;
    guard_budget_start(&s->budget, s->cfg->max_rows, s->cfg->max_bytes);
    s->q_rows = s->q_bytes = 0;
    s->truncating = false;
    s->q_sqlstate[0] = 0;
    s->q_rule = NULL;
    s->q_sql = sql;
    s->q_sql_len = len;
}

/* ---------- audit ---------- */

/* Hands the statement's record to the audit queue. A full queue refuses it: the session keeps
 * it (the Query text stays at the front of cbuf, the strings that would not are copied) and
 * holds its next statement until the writer wakes the worker and the record goes in. */
static void statement_audit(struct session *s, enum metrics_query_outcome outcome, uint64_t us)
{
    static const char *const names[] = {"ok", "error", "denied", "limit", "rejected"};
    memcpy(s->audit_sqlstate, s->q_sqlstate, sizeof(s->audit_sqlstate));
    snprintf(s->audit_rule, sizeof(s->audit_rule), "%s", s->q_rule ? s->q_rule : "");
    s->audit_rec = (struct audit_record){.session_id = s->id,
                                         .client_addr = s->addr,
                                         .user = s->user,
                                         .database = s->database,
                                         .application = s->app,
                                         .sql = s->q_sql,
                                         .sql_len = s->q_sql_len,
                                         .duration_us = us,
                                         .rows = s->q_rows,
                                         .bytes = s->q_bytes,
                                         .outcome = names[outcome],
                                         .sqlstate = s->q_sqlstate[0] ? s->audit_sqlstate : NULL,
                                         .rule = s->q_rule ? s->audit_rule : NULL,
                                         .protocol = "simple"};
    s->audit_pending = true;
    relay_audit_pending_flush(s);
}

bool relay_audit_pending_flush(struct session *s)
{
    if (!s->audit_pending)
        return false;
    int rc = audit_submit(s->rt->audit, &s->audit_rec, worker_wake_fd(s->w));
    if (rc == -ENOMEM)
        s->requeue = true; /* no wake-up was registered: try again next turn */
    if (rc)
        return true;
    s->audit_pending = false;
    compact_client(s);
    return false;
}

void relay_audit_pending_final(struct session *s)
{
    if (s->audit_pending)
        audit_submit_final(s->rt->audit, &s->audit_rec);
    s->audit_pending = false;
}

static void statement_end(struct session *s, enum metrics_query_outcome outcome)
{
    uint64_t us = (uint64_t)(netio_now_us() - s->q_start_us);
    if (outcome == METRICS_QUERY_OK && s->q_sqlstate[0])
        outcome = METRICS_QUERY_ERROR;
    metrics_query(outcome, us);
    metrics_rows_bytes(s->q_rows, s->q_bytes);
    if (s->rt->audit && s->q_sql)
        statement_audit(s, outcome, us); /* drops the Query from cbuf once the record is in */
    else
        compact_client(s);
    s->q_sql = NULL;
    s->q_deadline_ms = 0;
}

/* Ends the client's request with a locally generated error. rfq: whether ReadyForQuery is due
 * now (Query, FunctionCall, Sync) or later (extended-protocol error, RFQ at Sync). */
static int local_error(struct session *s, const char *code, const char *message, const char *detail,
                       const char *hint, uint32_t position, bool rfq)
{
    metrics_error_sqlstate(code);
    if (!rfq || s->tx != 'T')
        return send_error_rfq(s, "ERROR", code, message, detail, hint, position, rfq ? s->tx : 0);
    if (send_error_rfq(s, "ERROR", code, message, detail, hint, position, 0))
        return -1;
    return 1; /* caller must poison the transaction before ReadyForQuery */
}

static int start_poison(struct session *s)
{
    struct wire_buf b;
    wire_buf_init(&b, s->up_small, sizeof(s->up_small));
    wire_build_query(&b, poison_sql);
    if (upstream_write(s, b.data, b.len))
        return -1;
    s->poisoning = true;
    s->st = ST_QUERY;
    return 0;
}

/* RFQ for a request answered locally, failing the upstream transaction first if one is open. */
static int finish_local(struct session *s, int rc)
{
    if (rc < 0)
        return -1;
    if (rc == 1)
        return start_poison(s);
    return 0;
}

static void start_abort(struct session *s, const char *code, const char *message,
                        const char *detail, const char *hint, const char *rule,
                        enum metrics_query_outcome outcome, bool cancel, bool append_fate)
{
    struct abort_state *a = &s->ab;
    if (a->active)
        return;
    memset(a, 0, sizeof(*a));
    a->active = true;
    memcpy(a->code, code, 6);
    snprintf(a->message, sizeof(a->message), "%s", message);
    snprintf(a->detail, sizeof(a->detail), "%s", detail ? detail : "");
    snprintf(a->hint, sizeof(a->hint), "%s", hint ? hint : "");
    a->rule = rule;
    a->outcome = outcome;
    a->append_fate = append_fate;
    a->drain_deadline_ms = netio_now_ms() + DRAIN_GRACE_MS;
    if (rule)
        metrics_guardrail(rule);
    if (cancel)
        session_cancel_upstream(s);
    LOG_INFO(s->id, "statement_aborted", "client=%s rule=%s code=%s", s->addr, rule ? rule : "-",
             code);
}

static void limit_abort(struct session *s, enum guard_limit which)
{
    char msg[128], det[160];
    bool rows = which == GUARD_LIMIT_ROWS;
    unsigned long long n = rows ? s->cfg->max_rows : s->cfg->max_bytes;
    snprintf(msg, sizeof(msg), "%s limit of %llu exceeded", rows ? "row" : "byte", n);
    snprintf(det, sizeof(det), "rule: %s (pgwire-proxy %s %llu)", rows ? "max-rows" : "max-bytes",
             rows ? "--max-rows" : "--max-bytes", n);
    start_abort(s, "54000", msg, det,
                rows ? "Add a LIMIT clause or a narrower WHERE, or ask the operator to raise "
                       "--max-rows."
                     : "Select fewer or narrower columns or rows, or ask the operator to raise "
                       "--max-bytes.",
                rows ? "max-rows" : "max-bytes", METRICS_QUERY_LIMITED, true, true);
}

/* ---------- client input ---------- */

static int ensure_cbuf(struct session *s, size_t need)
{
    if (need <= s->ccap)
        return 0;
    size_t cap = s->ccap ? s->ccap : CBUF_INITIAL;
    while (cap < need)
        cap *= 2;
    uint8_t *n = realloc(s->cbuf, cap);
    if (!n)
        return -ENOMEM;
    s->cbuf = n;
    s->ccap = cap;
    return 0;
}

/* Picks up a configuration reloaded by SIGHUP: limits and policy apply from the next statement. */
/* The decision cache only pays off when statements are parsed. */
static void ensure_guard_cache(struct session *s)
{
    if (!s->gcache && s->cfg->policy_cache && guard_policy_parses(s->rt->policy))
        s->gcache = guard_cache_new();
}

static void refresh_runtime(struct session *s)
{
    if (atomic_load_explicit(&s->srv->rt_gen, memory_order_relaxed) == s->rt_gen)
        return;
    struct runtime *rt = server_runtime_acquire(s->srv);
    server_runtime_release(s->rt);
    s->rt = rt;
    s->cfg = &rt->cfg;
    s->rt_gen = rt->gen;
    if (!s->cfg->policy_cache) {
        guard_cache_free(s->gcache);
        s->gcache = NULL;
    }
    ensure_guard_cache(s);
}

static int handle_query(struct session *s, uint8_t *msg, size_t total)
{
    refresh_runtime(s);
    char *sql = (char *)msg + 5;
    size_t len = total - 6; /* body minus the terminating NUL */
    statement_begin(s, sql, len);
    struct guard_decision d;
    if (guard_check(s->rt->policy, s->gcache, sql, len, &d) != 0) {
        d.verdict = GUARD_DENY;
        snprintf(d.rule, sizeof(d.rule), "internal");
        snprintf(d.message, sizeof(d.message), "statement could not be checked: out of memory");
    }
    if (d.verdict == GUARD_ALLOW) {
        if (upstream_write(s, msg, total))
            return -1;
        s->st = ST_QUERY;
        return 0;
    }
    struct guard_error ge;
    guard_error_for(&d, &ge);
    enum metrics_query_outcome outcome = d.verdict == GUARD_COPY     ? METRICS_QUERY_REJECTED
                                         : d.verdict == GUARD_SYNTAX ? METRICS_QUERY_ERROR
                                                                     : METRICS_QUERY_DENIED;
    if (d.verdict != GUARD_SYNTAX) {
        metrics_guardrail(d.rule);
        LOG_INFO(s->id, "statement_denied", "client=%s rule=%s", s->addr, d.rule);
        s->q_rule = d.rule;
    }
    memcpy(s->q_sqlstate, ge.code, 6);
    int rc = local_error(s, ge.code, ge.message, ge.detail[0] ? ge.detail : NULL, ge.hint,
                         ge.position, true);
    statement_end(s, outcome);
    return finish_local(s, rc);
}

static int reject_extended(struct session *s)
{
    metrics_query(METRICS_QUERY_REJECTED, 0);
    metrics_guardrail("simple-protocol-only");
    s->st = ST_DISCARD;
    int rc = local_error(s, "0A000",
                         "extended query protocol is not supported; use the simple query "
                         "protocol",
                         "rule: simple-protocol-only", extended_hint, 0, false);
    return rc < 0 ? -1 : 0;
}

/* Dispatches one complete client message. Returns 0 to continue, or a session end reason. */
static enum session_end client_message(struct session *s, uint8_t *msg, size_t total)
{
    char type = (char)msg[0];
    if (s->st == ST_DISCARD && type != 'S' && type != 'X')
        return SE_NONE; /* PostgreSQL ignores everything until Sync after an error */
    switch (type) {
    case 'Q':
        if (total < 6 || msg[total - 1] != 0 || memchr(msg + 5, 0, total - 6)) {
            session_send_fatal(s, "08P01", "invalid string in message", NULL);
            return SE_PROTOCOL;
        }
        return handle_query(s, msg, total) ? SE_CLIENT_ERROR : SE_NONE;
    case 'X':
        return SE_CLIENT_EXIT;
    case 'S': {
        bool was_discard = s->st == ST_DISCARD;
        s->st = ST_IDLE;
        if (was_discard && s->tx == 'T')
            return start_poison(s) ? SE_UPSTREAM_LOST : SE_NONE;
        uint8_t buf[8];
        struct wire_buf b;
        wire_buf_init(&b, buf, sizeof(buf));
        wire_build_rfq(&b, s->tx);
        return out_append(s, b.data, b.len) ? SE_INTERNAL : SE_NONE;
    }
    case 'P':
    case 'B':
    case 'D':
    case 'E':
    case 'C':
    case 'H':
        return reject_extended(s) ? SE_CLIENT_ERROR : SE_NONE;
    case 'F': {
        metrics_query(METRICS_QUERY_REJECTED, 0);
        int rc =
            local_error(s, "0A000",
                        "function call protocol is not supported; use the simple query "
                        "protocol",
                        "rule: simple-protocol-only", "Call the function with SELECT.", 0, true);
        return finish_local(s, rc) ? SE_CLIENT_ERROR : SE_NONE;
    }
    case 'd':
    case 'c':
    case 'f':
        return SE_NONE; /* CopyData/Done/Fail outside COPY: ignored, as PostgreSQL does */
    default: {
        char text[64];
        snprintf(text, sizeof(text), "invalid frontend message type %d", (unsigned char)type);
        session_send_fatal(s, "08P01", text, NULL);
        return SE_PROTOCOL;
    }
    }
}

/* Removes the first n bytes of cbuf, and gives back a buffer grown for a huge message. */
static void consume_client(struct session *s, size_t n)
{
    if (n) {
        memmove(s->cbuf, s->cbuf + n, s->clen - n);
        s->clen -= n;
    }
    if (s->ccap > 16 * CBUF_INITIAL && s->clen <= CBUF_INITIAL && !s->q_in_cbuf) {
        uint8_t *nb = realloc(s->cbuf, CBUF_INITIAL);
        if (nb) {
            s->cbuf = nb;
            s->ccap = CBUF_INITIAL;
        }
    }
}

/* Handles every complete message buffered from the client while no statement runs. The message
 * at the front of cbuf is handled, then removed - except a forwarded Query, which stays until its
 * ReadyForQuery (the audit record reads its text). */
static enum session_end process_client(struct session *s)
{
    uint32_t max =
        (uint32_t)(s->cfg->max_message_bytes > UINT32_MAX - 8 ? UINT32_MAX - 8
                                                              : s->cfg->max_message_bytes + 4);
    size_t off = 0; /* consumed messages are dropped once, at the end: no quadratic moves */
    enum session_end e = SE_NONE;
    while (s->st != ST_QUERY && !s->audit_pending && off < s->clen && !out_backlogged(s) &&
           !session_cancel_pending(s)) {
        struct wire_hdr h;
        int rc = wire_read_hdr(s->cbuf + off, s->clen - off, max, &h);
        if (rc == WIRE_NEED_MORE)
            break;
        if (rc == WIRE_TOO_LONG || rc == WIRE_BAD_LENGTH) {
            char text[160];
            snprintf(text, sizeof(text), "invalid message length%s",
                     rc == WIRE_TOO_LONG ? ": larger than --max-message-size" : "");
            session_send_fatal(s, "08P01", text, NULL);
            return SE_PROTOCOL;
        }
        if (h.total > s->clen - off) {
            consume_client(s, off);
            off = 0;
            if (ensure_cbuf(s, h.total))
                return SE_INTERNAL;
            break;
        }
        if (s->cbuf[off] == 'Q' && off > 0) {
            /* a forwarded Query stays at the front of cbuf until its ReadyForQuery */
            consume_client(s, off);
            off = 0;
        }
        e = client_message(s, s->cbuf + off, h.total);
        if (e != SE_NONE)
            break;
        if (s->q_sql || s->audit_pending) {
            s->q_in_cbuf = h.total;
            break;
        }
        off += h.total;
    }
    consume_client(s, off);
    return e;
}

/* Drops the forwarded Query message from cbuf once its statement is over; a buffer grown for a
 * huge query goes back to its small size, so a long-lived session does not keep it. */
static void compact_client(struct session *s)
{
    size_t off = s->q_in_cbuf;
    s->q_in_cbuf = 0;
    consume_client(s, off);
}

/* ---------- upstream input ---------- */

/* Output cursor over ubuf: bytes [span, pos) are pending forwarding. */
struct fwd {
    size_t span;
};

static int flush_span(struct session *s, struct fwd *f, size_t upto)
{
    if (upto > f->span) {
        if (out_span(s, s->ubuf + f->span, upto - f->span))
            return -1;
    }
    f->span = upto;
    return 0;
}

static int emit(struct session *s, struct fwd *f, size_t at, const void *buf, size_t len)
{
    if (flush_span(s, f, at))
        return -1;
    return out_append(s, buf, len);
}

static int emit_abort_error(struct session *s, struct fwd *f, size_t at)
{
    struct abort_state *a = &s->ab;
    char msg[400];
    snprintf(msg, sizeof(msg), "%s%s", a->message,
             !a->append_fate ? ""
             : a->saw_error  ? "; the upstream statement was canceled"
                             : "; the upstream statement had already completed");
    uint8_t buf[2048];
    struct wire_buf b;
    wire_buf_init(&b, buf, sizeof(buf));
    struct wire_error_fields ef = {.severity = "ERROR",
                                   .code = a->code,
                                   .message = msg,
                                   .detail = a->detail[0] ? a->detail : NULL,
                                   .hint = a->hint[0] ? a->hint : NULL};
    wire_build_error(&b, 'E', &ef);
    metrics_error_sqlstate(a->code);
    memcpy(s->q_sqlstate, a->code, 6);
    s->q_rule = a->rule;
    return emit(s, f, at, b.data, b.len);
}

/* Truncate mode: the statement ran to completion upstream; the client gets N rows, a WARNING
 * and a CommandComplete that counts what it received. */
static int emit_truncated_complete(struct session *s, struct fwd *f, size_t at, const char *tag)
{
    uint8_t buf[1024];
    struct wire_buf b;
    wire_buf_init(&b, buf, sizeof(buf));
    char msg[200];
    snprintf(msg, sizeof(msg), "result truncated to %llu rows by pgwire-proxy",
             (unsigned long long)s->budget.rows);
    struct wire_error_fields nf = {.severity = "WARNING",
                                   .code = "01000",
                                   .message = msg,
                                   .detail = "rule: max-rows/max-bytes (--on-limit truncate)",
                                   .hint = "Add a LIMIT clause to see a complete result."};
    wire_build_error(&b, 'N', &nf);
    char newtag[64];
    if (strncmp(tag, "SELECT ", 7) == 0)
        snprintf(newtag, sizeof(newtag), "SELECT %llu", (unsigned long long)s->budget.rows);
    else
        snprintf(newtag, sizeof(newtag), "%s", tag);
    wire_build_command_complete(&b, newtag);
    return emit(s, f, at, b.data, b.len);
}

static void statement_part_done(struct session *s)
{
    /* each statement of a multi-statement Query has its own budget */
    guard_budget_start(&s->budget, s->cfg->max_rows, s->cfg->max_bytes);
    s->truncating = false;
}

/* Accounts a DataRow and decides whether it reaches the client. */
static bool data_row(struct session *s, size_t total)
{
    if (s->ab.active || s->poisoning || s->truncating)
        return false;
    enum guard_limit l = guard_budget_row(&s->budget, total);
    if (l == GUARD_LIMIT_NONE) {
        s->q_rows++;
        s->q_bytes += total;
        return true;
    }
    if (s->cfg->on_limit == CONFIG_ON_LIMIT_TRUNCATE) {
        s->truncating = true;
        metrics_guardrail(l == GUARD_LIMIT_ROWS ? "max-rows" : "max-bytes");
        s->q_rule = l == GUARD_LIMIT_ROWS ? "max-rows" : "max-bytes";
    } else {
        limit_abort(s, l);
    }
    return false;
}

enum up_action { FORWARD, DROP };

static enum up_action ready_for_query(struct session *s, struct fwd *f, size_t at,
                                      const uint8_t *body, size_t len, int *err)
{
    char st = wire_rfq_status(body, len);
    if (!st) {
        *err = -1;
        return DROP;
    }
    s->tx = st;
    if (s->poisoning) {
        s->poisoning = false;
        s->st = ST_IDLE;
        s->ab.active = false;
        return FORWARD;
    }
    if (s->ab.active) {
        if (emit_abort_error(s, f, at)) {
            *err = -1;
            return DROP;
        }
        enum metrics_query_outcome o = s->ab.outcome;
        bool poison = !s->ab.saw_error && st == 'T';
        s->ab.active = false;
        statement_end(s, o);
        if (poison) {
            *err = start_poison(s);
            return DROP;
        }
        s->st = ST_IDLE;
        return FORWARD;
    }
    if (s->st == ST_QUERY) {
        s->st = ST_IDLE;
        statement_end(s, METRICS_QUERY_OK);
    }
    return FORWARD;
}

static enum up_action upstream_message(struct session *s, struct fwd *f, size_t at, char type,
                                       const uint8_t *body, size_t len, int *err)
{
    bool aborting = s->ab.active || s->poisoning;
    if (s->unsafe_setting)
        return DROP; /* the FATAL is the last message, as in PostgreSQL: nothing follows it */
    switch (type) {
    case 'D':
        return data_row(s, len + 5) ? FORWARD : DROP;
    case 'C':
        if (aborting)
            return DROP;
        if (s->truncating) {
            char tag[64];
            snprintf(tag, sizeof(tag), "%.*s", (int)(len ? len - 1 : 0), (const char *)body);
            *err = emit_truncated_complete(s, f, at, tag);
            statement_part_done(s);
            return DROP;
        }
        statement_part_done(s);
        return FORWARD;
    case 'E': {
        char code[6], sev[16];
        wire_error_code(body, len, code);
        wire_error_severity(body, len, sev, sizeof(sev));
        bool fatal = strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0;
        if (aborting && !fatal) {
            s->ab.saw_error = true;
            return DROP;
        }
        if (fatal)
            s->fatal_forwarded = true;
        metrics_error_sqlstate(code);
        memcpy(s->q_sqlstate, code, 6);
        statement_part_done(s);
        return FORWARD;
    }
    case 'Z':
        return ready_for_query(s, f, at, body, len, err);
    case 'G': { /* CopyInResponse: end the COPY upstream; the client never sees it */
        struct wire_buf b;
        wire_buf_init(&b, s->up_small, sizeof(s->up_small));
        wire_build_copy_fail(&b, "COPY is not supported through pgwire-proxy");
        start_abort(s, "0A000", "COPY is not supported through pgwire-proxy", "rule: copy-protocol",
                    "Use INSERT ... VALUES to load rows.", "copy-protocol", METRICS_QUERY_REJECTED,
                    false, false);
        *err = upstream_write(s, b.data, b.len);
        return DROP;
    }
    case 'H':
    case 'W':
        start_abort(s, "0A000", "COPY is not supported through pgwire-proxy", "rule: copy-protocol",
                    "Use SELECT to read rows.", "copy-protocol", METRICS_QUERY_REJECTED, true,
                    false);
        return DROP;
    case 'S': {
        const char *name = (const char *)body;
        const char *nul = body ? memchr(body, 0, len) : NULL;
        const char *why = nul ? guard_unsafe_setting(name, nul + 1) : NULL;
        if (why && !s->unsafe_setting) {
            if (flush_span(s, f, at)) {
                *err = -1;
                return DROP;
            }
            session_send_fatal(s, "0A000", why, NULL);
            s->unsafe_setting = true;
            return DROP;
        }
        return FORWARD;
    }
    case 'N':
    case 'A':
        return FORWARD; /* notices, notifications and parameter changes always reach the client */
    default:
        return aborting ? DROP : FORWARD;
    }
}

/* Types whose body the proxy reads; others may be streamed through in pieces. */
static bool inspected(char type)
{
    return type == 'E' || type == 'Z' || type == 'C' || type == 'G' || type == 'H' || type == 'W' ||
           type == 'S';
}

static enum session_end upstream_protocol_error(struct session *s, const char *what)
{
    LOG_ERROR(s->id, "upstream_protocol_error", "%s", what);
    session_send_fatal(s, "08P01", "invalid message from the upstream server", what);
    return SE_UPSTREAM_LOST;
}

static enum session_end process_upstream(struct session *s)
{
    struct fwd f = {0};
    size_t pos = 0;
    if (s->pass_remaining) {
        size_t take = s->pass_remaining < s->ulen ? s->pass_remaining : s->ulen;
        pos = take;
        s->pass_remaining -= take;
        if (s->pass_drop)
            f.span = pos;
    }
    while (pos < s->ulen && !s->pass_remaining) {
        struct wire_hdr h;
        int rc = wire_read_hdr(s->ubuf + pos, s->ulen - pos, UPSTREAM_MAX_MSG, &h);
        if (rc == WIRE_NEED_MORE)
            break;
        if (rc != WIRE_OK)
            return upstream_protocol_error(s, wire_strerror(rc));
        size_t avail = s->ulen - pos;
        int err = 0;
        if (h.total > avail) {
            if (inspected(h.type)) {
                if (h.total > INSPECT_MAX)
                    return upstream_protocol_error(s, "oversized control message");
                if (h.total > s->ucap) {
                    uint8_t *n = realloc(s->ubuf, h.total);
                    if (!n)
                        return SE_INTERNAL;
                    s->ubuf = n;
                    s->ucap = h.total;
                }
                break;
            }
            if (h.total <= s->ucap && pos > 0)
                break; /* fits once compacted */
            if (h.total <= s->ucap && pos == 0 && s->ulen < s->ucap)
                break;
            /* larger than the buffer: decide now on the header, stream the rest */
            enum up_action act = upstream_message(s, &f, pos, h.type, NULL, h.len - 4, &err);
            if (err)
                return SE_CLIENT_ERROR;
            if (act == DROP) {
                if (flush_span(s, &f, pos))
                    return SE_CLIENT_ERROR;
                f.span = s->ulen;
            }
            s->pass_drop = act == DROP;
            s->pass_remaining = h.total - avail;
            pos = s->ulen;
            break;
        }
        enum up_action act =
            upstream_message(s, &f, pos, h.type, s->ubuf + pos + 5, h.len - 4, &err);
        if (err)
            return SE_CLIENT_ERROR;
        if (act == DROP) {
            if (flush_span(s, &f, pos))
                return SE_CLIENT_ERROR;
            f.span = pos + h.total;
        }
        pos += h.total;
    }
    if (flush_span(s, &f, pos))
        return SE_CLIENT_ERROR;
    if (pos > 0) {
        memmove(s->ubuf, s->ubuf + pos, s->ulen - pos);
        s->ulen -= pos;
    }
    if (s->unsafe_setting)
        return SE_PROTOCOL;
    if (s->fatal_forwarded && s->st == ST_IDLE)
        return SE_UPSTREAM_LOST;
    return SE_NONE;
}

static enum session_end upstream_lost(struct session *s, ssize_t n)
{
    if (!s->fatal_forwarded)
        session_send_fatal(s, "08006",
                           "terminating connection because the upstream server closed the "
                           "connection",
                           n == 0 ? "The upstream server closed the connection unexpectedly."
                                  : strerror((int)-n));
    LOG_WARN(s->id, "upstream_lost", "client=%s %s", s->addr, n == 0 ? "eof" : strerror((int)-n));
    return SE_UPSTREAM_LOST;
}

/* Reads what the upstream has, while the client keeps up (nothing queued for it). */
static enum session_end read_upstream(struct session *s)
{
    for (int reads = 0; s->up_in && !out_pending(s); reads++) {
        if (reads == DRIVE_READS_MAX) {
            s->requeue = true; /* let the worker's other sessions run first */
            break;
        }
        size_t room = s->ucap - s->ulen;
        ssize_t n = netio_read(&s->up.io, s->ubuf + s->ulen, room);
        if (n == -EAGAIN) {
            s->up_in = false;
            if (s->up.io.want == POLLOUT)
                s->up_out = false;
            break;
        }
        if (n <= 0)
            return upstream_lost(s, n);
        s->ulen += (size_t)n;
        /* a short plain read drained the socket; edge-triggered epoll reports new data */
        if (netio_short_read_drained(&s->up.io, (size_t)n, room, s->up_hup))
            s->up_in = false;
        enum session_end e = process_upstream(s);
        if (e != SE_NONE)
            return e;
        if (out_flush(s))
            return SE_CLIENT_ERROR;
    }
    return SE_NONE;
}

static enum session_end read_client(struct session *s)
{
    for (int reads = 0; s->cli_in && s->st != ST_QUERY && !s->audit_pending && !out_backlogged(s);
         reads++) {
        if (reads == DRIVE_READS_MAX) {
            s->requeue = true;
            break;
        }
        if (s->clen == s->ccap && ensure_cbuf(s, s->ccap * 2))
            return SE_INTERNAL;
        size_t room = s->ccap - s->clen;
        ssize_t n = netio_read(&s->cli, s->cbuf + s->clen, room);
        if (n == -EAGAIN) {
            s->cli_in = false;
            if (s->cli.want == POLLOUT)
                s->cli_out = false;
            break;
        }
        if (n <= 0)
            return n == 0 ? SE_CLIENT_EOF : SE_CLIENT_ERROR;
        s->clen += (size_t)n;
        if (netio_short_read_drained(&s->cli, (size_t)n, room, s->cli_hup))
            s->cli_in = false;
        enum session_end e = process_client(s);
        if (e != SE_NONE)
            return e;
    }
    return SE_NONE;
}

/* ---------- driving ---------- */

int relay_begin(struct session *s)
{
    s->ubuf = malloc(UBUF_SIZE);
    s->ucap = UBUF_SIZE;
    if (!s->ubuf || ensure_cbuf(s, CBUF_INITIAL))
        return -1;
    ensure_guard_cache(s);
    return 0;
}

static bool shutdown_now(struct session *s, int64_t now)
{
    if (!s->shutdown_seen)
        return false;
    bool idle = s->st == ST_IDLE && s->tx == 'I' && !s->poisoning;
    return idle || atomic_load(&s->srv->shutting_down) == SERVER_IMMEDIATE ||
           now >= atomic_load(&s->srv->shutdown_deadline_ms);
}

enum session_end relay_drive(struct session *s)
{
    for (int round = 0; round < 64; round++) {
        enum session_end e;
        if (out_flush(s))
            return SE_CLIENT_ERROR;
        if (upstream_send(s))
            return upstream_lost(s, -EPIPE);
        relay_audit_pending_flush(s);
        size_t before_u = s->ulen, before_c = s->clen, before_o = s->olen - s->ooff;
        bool in_u = s->up_in, in_c = s->cli_in;
        enum relay_state before_st = s->st;
        e = read_upstream(s);
        if (e != SE_NONE)
            return e;
        if (s->st != ST_QUERY && s->clen > 0) {
            e = process_client(s);
            if (e != SE_NONE)
                return e;
        }
        e = read_client(s);
        if (e != SE_NONE)
            return e;
        if (s->cli_hup && s->st == ST_QUERY)
            return SE_CLIENT_EOF; /* gone while its statement runs: stop it upstream */
        if (shutdown_now(s, netio_now_ms())) {
            session_send_fatal(s, "57P01", "terminating connection due to administrator command",
                               NULL);
            return SE_SHUTDOWN;
        }
        bool progressed = s->ulen != before_u || s->clen != before_c || s->up_in != in_u ||
                          s->cli_in != in_c || s->st != before_st || s->olen - s->ooff != before_o;
        if (!progressed)
            break;
    }
    if (out_flush(s))
        return SE_CLIENT_ERROR;
    return SE_NONE;
}

enum session_end relay_timers(struct session *s, int64_t now)
{
    if (s->st == ST_QUERY && s->q_deadline_ms && now >= s->q_deadline_ms && !s->ab.active &&
        !s->poisoning) {
        char det[128];
        snprintf(det, sizeof(det), "rule: query-timeout (pgwire-proxy --query-timeout %llums)",
                 (unsigned long long)s->cfg->query_timeout_ms);
        start_abort(s, "57014", "canceling statement due to statement timeout", det,
                    "Make the statement faster, add a LIMIT, or ask the operator to raise "
                    "--query-timeout.",
                    "query-timeout", METRICS_QUERY_LIMITED, true, false);
    }
    if (s->ab.active && now >= s->ab.drain_deadline_ms) {
        session_send_fatal(s, "08006",
                           "terminating connection: the upstream server did not end the "
                           "canceled statement",
                           NULL);
        return SE_UPSTREAM_LOST;
    }
    uint64_t wt = s->cfg->client_write_timeout_ms;
    if (wt && out_pending(s) && now - s->last_write_ms >= (int64_t)wt) {
        LOG_WARN(s->id, "client_stalled", "client=%s accepted no data for %llums", s->addr,
                 (unsigned long long)wt);
        return SE_CLIENT_STALLED;
    }
    if (shutdown_now(s, now)) {
        session_send_fatal(s, "57P01", "terminating connection due to administrator command", NULL);
        return SE_SHUTDOWN;
    }
    return SE_NONE;
}
