/* Upstream → client: message headers are walked and whole messages forwarded as spans of the
 * receive buffer. A message larger than the buffer is decided on its header (ErrorResponse and
 * NoticeResponse on their first bytes, which carry severity and SQLSTATE) and streamed through.
 * While a statement runs every message it sends the client counts against its byte budget,
 * DataRows also against its row budget; ReadyForQuery, ParameterStatus and FATAL errors are
 * never withheld. */
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "be_int.h"
#include "relay.h"
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UPSTREAM_MAX_MSG (1u << 30)
#define INSPECT_MAX      (1u << 20) /* largest control message (Z, C, S, ...) buffered whole */
#define PEEK_BYTES       2048       /* of a large E/N: enough for severity and SQLSTATE */

int be_flush_span(struct relay *r, struct fwd *f, size_t upto)
{
    if (upto > f->span && r->env->to_client(r->ctx, f->buf + f->span, upto - f->span))
        return -1;
    f->span = upto;
    return 0;
}

/* Puts locally built bytes into the output at position `at` of the input. */
int be_emit(struct relay *r, struct fwd *f, size_t at, const void *p, size_t n)
{
    if (be_flush_span(r, f, at))
        return -1;
    return r->env->to_client(r->ctx, p, n);
}

void be_io_failed(struct relay *r)
{
    if (r->end == SE_NONE)
        r->end = SE_CLIENT_ERROR;
}

int be_emit_error(struct relay *r, struct fwd *f, size_t at, const char *severity, const char *code,
                  const char *message, const char *detail, const char *hint)
{
    uint8_t buf[2048];
    struct wire_buf b;
    wire_buf_init(&b, buf, sizeof(buf));
    struct wire_error_fields ef = {.severity = severity,
                                   .code = code,
                                   .message = message,
                                   .detail = detail && *detail ? detail : NULL,
                                   .hint = hint};
    wire_build_error(&b, severity[0] == 'W' ? 'N' : 'E', &ef);
    return b.overflow ? -1 : be_emit(r, f, at, b.data, b.len);
}

int be_emit_refusal(struct relay *r, struct fwd *f, size_t at, const struct ext_refusal *e)
{
    uint8_t buf[2048];
    struct wire_buf b;
    wire_buf_init(&b, buf, sizeof(buf));
    struct wire_error_fields ef = {.severity = "ERROR",
                                   .code = e->code,
                                   .message = e->message,
                                   .detail = e->detail[0] ? e->detail : NULL,
                                   .hint = e->hint,
                                   .position = e->position};
    wire_build_error(&b, 'E', &ef);
    metrics_error_sqlstate(e->code);
    return b.overflow ? -1 : be_emit(r, f, at, b.data, b.len);
}

int be_emit_copy_refused(struct relay *r, struct fwd *f, size_t at)
{
    metrics_error_sqlstate("0A000");
    return be_emit_error(r, f, at, "ERROR", "0A000", "COPY is not supported through pgwire-proxy",
                         "rule: copy-protocol",
                         "Use INSERT ... VALUES to load rows, or SELECT to read them.");
}

/* CommandComplete tags of statements that change data: when one of them tripped a limit after
 * it had committed, the client is told what happened, not an error that reads as a rollback. */
bool be_tag_is_write(const char *tag)
{
    static const char *const writes[] = {"INSERT ", "UPDATE ", "DELETE ", "MERGE ", "COPY "};
    for (size_t i = 0; i < sizeof(writes) / sizeof(writes[0]); i++)
        if (strncmp(tag, writes[i], strlen(writes[i])) == 0)
            return true;
    return false;
}

void be_copy_tag(char *dst, size_t cap, const uint8_t *body, size_t len)
{
    size_t n = len ? len - 1 : 0;
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, body, n);
    dst[n] = 0;
}

/* --on-limit truncate: the statement ran to completion upstream; the client gets N rows, a
 * WARNING and a CommandComplete that counts what it received. */
int be_emit_truncated_complete(struct relay *r, struct fwd *f, size_t at, const struct stmt *st,
                               const char *tag)
{
    char msg[200], newtag[64];
    snprintf(msg, sizeof(msg), "result truncated to %llu rows by pgwire-proxy",
             (unsigned long long)st->budget.rows);
    if (be_emit_error(r, f, at, "WARNING", "01000", msg,
                      "rule: max-rows/max-bytes (--on-limit truncate)",
                      "Add a LIMIT clause to see a complete result."))
        return -1;
    /* a truncated COPY is a COPY TO STDOUT: COPY FROM sends the client no rows */
    if (strncmp(tag, "SELECT ", 7) == 0 || strncmp(tag, "COPY ", 5) == 0)
        snprintf(newtag, sizeof(newtag), "%.*s %llu", tag[0] == 'S' ? 6 : 4, tag,
                 (unsigned long long)st->budget.rows);
    else
        snprintf(newtag, sizeof(newtag), "%s", tag);
    uint8_t buf[128];
    struct wire_buf b;
    wire_buf_init(&b, buf, sizeof(buf));
    wire_build_command_complete(&b, newtag);
    return be_emit(r, f, at, b.data, b.len);
}

/* A write that tripped a limit but had committed: its first rows went out, then a WARNING
 * with the rule and its real CommandComplete. */
int be_emit_committed_report(struct relay *r, struct fwd *f, size_t at, struct stmt *st)
{
    struct relay_abort *a = &r->ab;
    char msg[400];
    snprintf(msg, sizeof(msg),
             "%s; the upstream statement had already completed and committed: %llu rows "
             "delivered",
             a->message, (unsigned long long)st->rows);
    if (be_emit_error(r, f, at, "WARNING", "01000", msg, a->detail, a->hint))
        return -1;
    if (a->later_results &&
        be_emit_error(r, f, at, "WARNING", "01000",
                      "later statements of this query ran; their results were not delivered",
                      a->detail, NULL))
        return -1;
    uint8_t buf[128];
    struct wire_buf b;
    wire_buf_init(&b, buf, sizeof(buf));
    wire_build_command_complete(&b, a->tag);
    st->rule = a->rule;
    return be_emit(r, f, at, b.data, b.len);
}

int be_emit_abort_error(struct relay *r, struct fwd *f, size_t at, struct stmt *st)
{
    struct relay_abort *a = &r->ab;
    char msg[400];
    snprintf(msg, sizeof(msg), "%s%s", a->message,
             !a->append_fate ? ""
             : a->saw_error  ? "; the upstream statement was canceled"
                             : "; the upstream statement had already completed");
    metrics_error_sqlstate(a->code);
    memcpy(st->sqlstate, a->code, 6);
    st->rule = a->rule;
    return be_emit_error(r, f, at, "ERROR", a->code, msg, a->detail, a->hint);
}

enum stmt_upstream be_fate(const struct stmt *st, char status, bool failed)
{
    if (st->upstream_sqlstate[0])
        return STMT_UP_ERROR;
    if (failed || status == 'E')
        return STMT_UP_ROLLED_BACK;
    return status == 'I' ? STMT_UP_COMMITTED : STMT_UP_IN_BLOCK;
}

static enum be_action ready_for_query(struct relay *r, struct fwd *f, size_t at,
                                      const uint8_t *body, size_t len)
{
    char st = wire_rfq_status(body, len);
    if (!st) {
        relay_send_fatal(r, "08P01", "invalid message from the upstream server",
                         "malformed ReadyForQuery");
        r->end = SE_UPSTREAM_LOST;
        return DROP;
    }
    r->tx = st;
    if (r->internal == RI_READ_ONLY) {
        r->internal = RI_NONE;
        r->read_only_pending = false;
        r->st = RS_IDLE;
        return DROP; /* the client's Query runs next */
    }
    if (r->internal == RI_POISON) {
        r->internal = RI_NONE;
        r->st = RS_IDLE;
        r->ab.active = false;
        return FORWARD;
    }
    if (r->ab.active) {
        struct relay_abort *a = &r->ab;
        bool committed = a->report_commit && a->completed && !a->saw_error && st == 'I' &&
                         !a->copy_out && be_tag_is_write(a->tag);
        int rc = committed ? be_emit_committed_report(r, f, at, &r->stmt)
                           : be_emit_abort_error(r, f, at, &r->stmt);
        if (rc) {
            be_io_failed(r);
            return DROP;
        }
        bool poison = !committed && !a->saw_error && st == 'T';
        r->stmt.upstream = be_fate(&r->stmt, st, !committed && a->saw_error);
        a->active = false;
        relay_statement_end(r, a->outcome);
        if (poison) {
            if (relay_start_internal(r, RI_POISON))
                r->end = SE_UPSTREAM_LOST;
            return DROP;
        }
        r->st = RS_IDLE;
        return FORWARD;
    }
    if (r->st == RS_QUERY) {
        r->st = RS_IDLE;
        r->stmt.upstream = be_fate(&r->stmt, st, r->stmt.upstream_error);
        relay_statement_end(r, STMT_OK);
    }
    return FORWARD;
}

enum be_action be_charge(struct relay *r, struct stmt *st, size_t total, bool row)
{
    if (!st || !st->active || r->internal != RI_NONE)
        return FORWARD; /* idle: notifications between statements belong to none */
    if (r->truncating)
        return DROP;
    enum stmt_limit l = stmt_charge(st, total, row);
    if (l == STMT_LIMIT_NONE)
        return FORWARD;
    if (r->ab.active)
        return DROP;
    if (r->cfg->on_limit == CONFIG_ON_LIMIT_WARN) {
        relay_limit_warn(r, st, l, total, row);
        return FORWARD;
    }
    if (r->cfg->on_limit == CONFIG_ON_LIMIT_TRUNCATE) {
        r->truncating = true;
        st->rule = l == STMT_LIMIT_ROWS ? "max-rows" : "max-bytes";
        metrics_guardrail(st->rule);
    } else {
        relay_limit_abort(r, l);
    }
    return DROP;
}

static enum be_action command_complete(struct relay *r, struct fwd *f, size_t at,
                                       const uint8_t *body, size_t len)
{
    if (r->internal != RI_NONE)
        return DROP;
    if (r->ab.active) {
        if (!r->ab.completed) {
            r->ab.completed = true;
            be_copy_tag(r->ab.tag, sizeof(r->ab.tag), body, len);
        } else {
            r->ab.later_results = true;
        }
        return DROP;
    }
    if (r->truncating) {
        char tag[64];
        be_copy_tag(tag, sizeof(tag), body, len);
        if (be_emit_truncated_complete(r, f, at, &r->stmt, tag))
            be_io_failed(r);
        r->truncating = false;
        stmt_part(&r->stmt, r->cfg);
        return DROP;
    }
    stmt_part(&r->stmt, r->cfg);
    return FORWARD;
}

/* An error bigger than what is left of the byte budget is replaced by the proxy's 54000: the
 * statement failed either way, and a failing cast can carry megabytes of data. */
static void error_over_budget(struct relay *r, struct fwd *f, size_t at, const char code[6])
{
    char msg[160], det[160];
    snprintf(msg, sizeof(msg), "byte limit of %llu exceeded by the upstream's error (SQLSTATE %s)",
             (unsigned long long)r->cfg->max_bytes, code);
    snprintf(det, sizeof(det), "rule: max-bytes (pgwire-proxy --max-bytes %llu)",
             (unsigned long long)r->cfg->max_bytes);
    metrics_guardrail("max-bytes");
    metrics_error_sqlstate("54000");
    memcpy(r->stmt.sqlstate, "54000", 6);
    r->stmt.rule = "max-bytes";
    if (be_emit_error(r, f, at, "ERROR", "54000", msg, det,
                      "The statement failed; ask the operator to raise --max-bytes to see its "
                      "full error."))
        be_io_failed(r);
}

/* Upstream errors reach the client as they are (--on-limit warn: even past the budget). */
static enum be_action error_response(struct relay *r, struct fwd *f, size_t at, const uint8_t *body,
                                     size_t blen, size_t total)
{
    char code[6], sev[16];
    wire_error_code(body, blen, code);
    wire_error_severity(body, blen, sev, sizeof(sev));
    bool fatal = strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0;
    if (fatal) {
        r->fatal_forwarded = true;
        metrics_error_sqlstate(code);
        return FORWARD;
    }
    if (r->internal != RI_NONE || r->ab.active) {
        if (r->ab.active && r->stmt.active)
            stmt_upstream_error(&r->stmt, code);
        r->ab.saw_error = true;
        if (r->ab.active && r->ab.completed)
            r->ab.later_results = true;
        return DROP;
    }
    if (r->stmt.active)
        stmt_upstream_error(&r->stmt, code);
    r->truncating = false;
    enum stmt_limit l = r->stmt.active ? stmt_charge(&r->stmt, total, false) : STMT_LIMIT_NONE;
    if (l != STMT_LIMIT_NONE && r->cfg->on_limit == CONFIG_ON_LIMIT_WARN) {
        relay_limit_warn(r, &r->stmt, l, total, false);
    } else if (l != STMT_LIMIT_NONE) {
        error_over_budget(r, f, at, code);
        stmt_part(&r->stmt, r->cfg);
        return DROP;
    }
    metrics_error_sqlstate(code);
    memcpy(r->stmt.sqlstate, code, 6);
    stmt_part(&r->stmt, r->cfg);
    return FORWARD;
}

static enum be_action parameter_status(struct relay *r, struct fwd *f, size_t at,
                                       const uint8_t *body, size_t len)
{
    const char *name, *value;
    if (wire_parse_param_status(body, len, &name, &value) != WIRE_OK) {
        relay_send_fatal(r, "08P01", "invalid message from the upstream server",
                         "malformed ParameterStatus");
        r->end = SE_UPSTREAM_LOST;
        return DROP;
    }
    const char *why = guard_unsafe_setting(name, value);
    if (why) {
        if (be_flush_span(r, f, at))
            be_io_failed(r);
        relay_send_fatal(r, "0A000", why, NULL);
        r->end = SE_PROTOCOL;
        return DROP;
    }
    /* the backstop of --read-only: whatever path turned it off, nothing else runs */
    if (r->cfg->read_only && strcmp(name, "default_transaction_read_only") == 0 &&
        strcmp(value, "on") != 0) {
        if (be_flush_span(r, f, at))
            be_io_failed(r);
        LOG_WARN(r->sid, "read_only_lost",
                 "client=%s the upstream session reported "
                 "default_transaction_read_only=%s: ending it",
                 r->client_addr, value);
        metrics_guardrail("read-only");
        relay_send_fatal(r, "25006",
                         "terminating connection because the upstream session is no longer "
                         "read-only",
                         "rule: read-only (default_transaction_read_only was turned off)");
        r->end = SE_GUARDRAIL;
        return DROP;
    }
    if (r->env->setting)
        r->env->setting(r->ctx, name, value);
    return FORWARD;
}

/* --copy allow: the COPY sub-protocol goes through. In copy-in the client's CopyData flows
 * upstream (fe_proto.c counts it); a simple Query's text is kept by the relay, so the client
 * buffer can take the data that follows it. */
static enum be_action copy_start(struct relay *r, char type)
{
    r->stmt.copy = true;
    if (type == 'H') {
        r->copy_out = true;
        return FORWARD;
    }
    r->copy_in = true;
    r->copy_tripped = false;
    if (r->query_len && r->stmt.sql && !r->sql_owned) {
        r->sql_owned = malloc(r->stmt.sql_len + 1);
        if (r->sql_owned) {
            memcpy(r->sql_owned, r->stmt.sql, r->stmt.sql_len);
            r->sql_owned[r->stmt.sql_len] = 0;
        }
        r->stmt.sql = r->sql_owned;
    }
    return FORWARD;
}

static enum be_action copy_response(struct relay *r, char type)
{
    static const char text[] = "COPY is not supported through pgwire-proxy";
    if (r->copy_allowed && type != 'W' && !r->ab.active && r->internal == RI_NONE)
        return copy_start(r, type);
    if (type == 'G') { /* CopyInResponse: end the COPY upstream; the client never sees it */
        uint8_t buf[128];
        struct wire_buf b;
        wire_buf_init(&b, buf, sizeof(buf));
        wire_build_copy_fail(&b, text);
        relay_start_abort(r, "0A000", text, "rule: copy-protocol",
                          "Use INSERT ... VALUES to load rows.", "copy-protocol", STMT_REJECTED,
                          false, false);
        if (r->env->to_upstream(r->ctx, b.data, b.len))
            r->end = SE_UPSTREAM_LOST;
        return DROP;
    }
    relay_start_abort(r, "0A000", text, "rule: copy-protocol", "Use SELECT to read rows.",
                      "copy-protocol", STMT_REJECTED, true, false);
    return DROP;
}

/* One upstream message. body holds blen bytes of its mlen-byte body (blen < mlen when a large
 * message is decided on its first bytes; body NULL when decided on its header alone). */
static enum be_action upstream_message(struct relay *r, struct fwd *f, size_t at, char type,
                                       const uint8_t *body, size_t blen, size_t mlen)
{
    size_t total = mlen + 5;
    bool dropping = r->ab.active || r->internal != RI_NONE;
    if (r->end != SE_NONE)
        return DROP; /* a FATAL is the last message, as in PostgreSQL: nothing follows it */
    if (!relay_ext_empty(r->x)) {
        bool handled;
        enum be_action act = be_ext_message(r, f, at, type, body, blen, mlen, &handled);
        if (handled)
            return act;
    }
    if (type == 'C' || type == 'E')
        r->copy_in = r->copy_out = false;
    switch (type) {
    case 'D':
        return dropping ? DROP : be_charge(r, &r->stmt, total, true);
    case 'd': /* COPY TO STDOUT: one CopyData per row */
        return dropping ? DROP : be_charge(r, &r->stmt, total, true);
    case 'c':
        return dropping ? DROP : FORWARD;
    case 'C':
        return command_complete(r, f, at, body, blen);
    case 'E':
        return error_response(r, f, at, body, blen, total);
    case 'Z':
        return ready_for_query(r, f, at, body, blen);
    case 'S':
        return parameter_status(r, f, at, body, blen);
    case 'G':
    case 'H':
    case 'W':
        return copy_response(r, type);
    case 'N':
    case 'A':
        /* notices and notifications reach the client while the budget allows, even while the
         * rest of an aborted statement is dropped */
        return be_charge(r, be_current(r), total, false);
    default:
        return dropping ? DROP : be_charge(r, be_current(r), total, false);
    }
}

/* Control messages the relay reads whole; the rest may be streamed in pieces. */
static bool read_whole(char type)
{
    return type == 'Z' || type == 'C' || type == 'S' || type == 'G' || type == 'H' || type == 'W';
}

static void upstream_protocol_error(struct relay *r, const char *what)
{
    LOG_ERROR(r->sid, "upstream_protocol_error", "%s", what);
    relay_send_fatal(r, "08P01", "invalid message from the upstream server", what);
    r->end = SE_UPSTREAM_LOST;
}

/* Decides a message that is not all in the buffer yet. Returns false when it must wait for
 * more bytes (or for a bigger buffer: *need). */
static bool partial_message(struct relay *r, struct fwd *f, const uint8_t *buf, size_t pos,
                            size_t len, size_t cap, const struct wire_hdr *h, size_t *need)
{
    size_t avail = len - pos;
    if (read_whole(h->type)) {
        if (h->total > INSPECT_MAX)
            upstream_protocol_error(r, "oversized control message");
        else if (h->total > cap)
            *need = h->total;
        return false;
    }
    if (h->total <= cap)
        return false; /* fits once the buffer is compacted: decide on the whole message */
    bool peek = h->type == 'E' || h->type == 'N';
    if (peek && avail < PEEK_BYTES)
        return false;
    enum be_action act = upstream_message(r, f, pos, h->type, peek ? buf + pos + 5 : NULL,
                                          peek ? avail - 5 : 0, h->len - 4);
    if (act == DROP) {
        if (be_flush_span(r, f, pos))
            be_io_failed(r);
        f->span = len;
    }
    r->pass_drop = act == DROP;
    r->pass_remaining = h->total - avail;
    return true;
}

size_t be_proto_process(struct relay *r, uint8_t *buf, size_t len, size_t cap, size_t *need)
{
    struct fwd f = {.buf = buf};
    size_t pos = 0;
    *need = 0;
    if (r->pass_remaining) {
        size_t take = r->pass_remaining < len ? r->pass_remaining : len;
        pos = take;
        r->pass_remaining -= take;
        if (r->pass_drop)
            f.span = pos;
    }
    while (pos < len && !r->pass_remaining && r->end == SE_NONE) {
        struct wire_hdr h;
        int rc = wire_read_hdr(buf + pos, len - pos, UPSTREAM_MAX_MSG, &h);
        if (rc == WIRE_NEED_MORE)
            break;
        if (rc != WIRE_OK) {
            upstream_protocol_error(r, wire_strerror(rc));
            break;
        }
        if (h.total > len - pos) {
            if (partial_message(r, &f, buf, pos, len, cap, &h, need))
                pos = len;
            break;
        }
        enum be_action act =
            upstream_message(r, &f, pos, h.type, buf + pos + 5, h.len - 4, h.len - 4);
        if (act == DROP) {
            if (be_flush_span(r, &f, pos))
                be_io_failed(r);
            f.span = pos + h.total;
        }
        pos += h.total;
    }
    if (f.span < pos && r->end == SE_NONE && be_flush_span(r, &f, pos))
        be_io_failed(r);
    return pos;
}
