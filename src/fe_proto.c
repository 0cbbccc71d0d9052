/* Client → upstream: complete messages only. A Query is checked by the policy and forwarded
 * whole from the client buffer, where it stays until its ReadyForQuery (the statement's audit
 * record reads its text there); everything else is answered locally (extended protocol,
 * FunctionCall, a Sync after a refused extended message) or is a protocol error. */
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "relay.h"
#include "wire.h"

#include <stdio.h>
#include <string.h>

/* A client that pipelines requests answered locally (errors, Sync) without reading them is
 * not served further until it reads: its queued output stays bounded. */
#define FE_OUT_HIGH_WATER (64 * 1024)
#define FE_UP_HIGH_WATER  (256 * 1024) /* requests queued for a slow upstream */

static const char extended_hint[] =
    "Use the simple query protocol: e.g. psycopg ClientCursor, JDBC preferQueryMode=simple, "
    "pgbench -M simple, or disable server-side prepared statements in the driver.";

bool fe_proto_ready(const struct relay *r)
{
    if (r->end != SE_NONE || r->internal != RI_NONE)
        return false;
    /* a forwarded Query is still at the front of the buffer (its ReadyForQuery may come
     * before it is all written): it is in flight, not input, until the caller drops it */
    if (r->query_len)
        return false;
    if (r->st == RS_POLICY && !r->decided)
        return false; /* the message at the front waits for its decision, even in a COPY */
    if (r->copy_in)
        return r->env->upstream_backlog(r->ctx) <= FE_UP_HIGH_WATER;
    if (r->st == RS_QUERY)
        return false;
    if (r->x && !relay_ext_empty(r->x)) {
        if (r->wait_fifo)
            return false;
        /* read-only: the next segment's access mode is known only at the last one's Z */
        if (r->cfg->read_only && r->x->nsync > 0)
            return false;
        if (r->env->upstream_backlog(r->ctx) > FE_UP_HIGH_WATER)
            return false; /* the upstream pushes back: so does the proxy */
    }
    return r->env->client_backlog(r->ctx) <= FE_OUT_HIGH_WATER;
}

static void protocol_fatal(struct relay *r, const char *text)
{
    relay_send_fatal(r, "08P01", text, NULL);
    r->end = SE_PROTOCOL;
}

/* A local answer failed to reach the client's output queue (out of memory). */
static void output_failed(struct relay *r)
{
    if (r->end == SE_NONE)
        r->end = SE_INTERNAL;
}

static void refuse_query(struct relay *r, const struct guard_decision *d)
{
    struct guard_error ge;
    guard_error_for(d, &ge);
    r->stmt.active = false; /* recorded as a refusal: it never ran */
    relay_record_refusal(r, r->stmt.sql, r->stmt.sql_len, d, NULL);
    if (relay_local_error(r, ge.code, ge.message, ge.detail[0] ? ge.detail : NULL, ge.hint,
                          ge.position, true))
        output_failed(r);
}

/* After a reload turned --read-only on, an open transaction block may already have written:
 * it cannot go on (an idle session is switched upstream before its statement runs; a failed
 * block can only roll back). Returns true when the Query was answered. */
static bool read_only_switch(struct relay *r, uint8_t *msg, size_t total)
{
    if (!r->read_only_pending || r->tx != 'T')
        return false;
    stmt_begin(&r->stmt, r->cfg, (const char *)msg + 5, total - 6);
    r->stmt.rule = "read-only";
    memcpy(r->stmt.sqlstate, "25006", 6);
    r->stmt.upstream = STMT_UP_NOT_SENT;
    metrics_guardrail("read-only");
    int rc = relay_local_error(
        r, "25006", "cannot continue this transaction: pgwire-proxy switched to read-only mode",
        "rule: read-only (--read-only was turned on by a configuration reload)",
        "Roll back and retry: only reading statements are allowed now.", 0, true);
    relay_statement_end(r, STMT_DENIED);
    if (rc)
        output_failed(r);
    return true;
}

static enum fe_msg handle_query(struct relay *r, uint8_t *msg, size_t total)
{
    if (total < 6 || msg[total - 1] != 0 || memchr(msg + 5, 0, total - 6)) {
        protocol_fatal(r, "invalid string in message");
        return FE_DONE;
    }
    const char *sql = (const char *)msg + 5;
    size_t len = total - 6;
    if (r->st != RS_POLICY) {
        r->env->refresh(r->ctx);
        if (r->read_only_pending && r->tx == 'I') {
            if (relay_start_internal(r, RI_READ_ONLY))
                r->end = SE_UPSTREAM_LOST;
            return FE_KEEP;
        }
        if (read_only_switch(r, msg, total))
            return FE_DONE;
        stmt_begin(&r->stmt, r->cfg, sql, len);
    }
    struct guard_decision d;
    if (relay_decide(r, sql, len, &d) == 1) {
        r->st = RS_POLICY;
        return FE_KEEP;
    }
    r->st = RS_IDLE;
    if (d.verdict != GUARD_ALLOW) {
        refuse_query(r, &d);
        return FE_DONE;
    }
    if (d.shadow_rule[0]) {
        memcpy(r->stmt.shadow_rule, d.shadow_rule, sizeof(r->stmt.shadow_rule));
        relay_shadow_denied(r, &d);
    }
    if (r->env->to_upstream_ref(r->ctx, msg, total)) {
        r->end = SE_UPSTREAM_LOST;
        return FE_DONE;
    }
    r->st = RS_QUERY;
    r->query_len = total;
    return FE_KEEP;
}

void fe_proto_decided(struct relay *r, const struct guard_decision *d)
{
    /* only the message waiting at the front of the buffer takes a decision: one kept for
     * later would answer for a text it was never asked about */
    if (r->st != RS_POLICY || r->decided)
        return;
    r->decision = *d;
    r->decided = true;
}

/* The message a decision was asked for was handled without it (dropped with a segment
 * discarded while it waited): the decision goes with it. */
static void decision_void(struct relay *r)
{
    if (r->st == RS_POLICY)
        r->st = RS_IDLE;
    r->decided = false;
}

static void reject_extended(struct relay *r)
{
    metrics_query(METRICS_QUERY_REJECTED, 0);
    metrics_guardrail("simple-protocol-only");
    r->st = RS_DISCARD;
    if (relay_local_error(r, "0A000",
                          "extended query protocol is not supported; use the simple query "
                          "protocol",
                          "rule: simple-protocol-only", extended_hint, 0, false))
        output_failed(r);
}

static void handle_sync(struct relay *r)
{
    bool was_discard = r->st == RS_DISCARD;
    r->st = RS_IDLE;
    if (was_discard && r->tx == 'T') {
        if (relay_start_internal(r, RI_POISON))
            output_failed(r);
        return;
    }
    uint8_t buf[8];
    struct wire_buf b;
    wire_buf_init(&b, buf, sizeof(buf));
    wire_build_rfq(&b, r->tx);
    if (r->env->to_client(r->ctx, b.data, b.len))
        output_failed(r);
}

static void handle_function_call(struct relay *r)
{
    metrics_query(METRICS_QUERY_REJECTED, 0);
    if (relay_local_error(r, "0A000",
                          "function call protocol is not supported; use the simple query "
                          "protocol",
                          "rule: simple-protocol-only", "Call the function with SELECT.", 0, true))
        output_failed(r);
}

/* In a pipeline, a Query or FunctionCall comes after the answers before it; after an error
 * (or a refusal) it is ignored until Sync, with no reply, as PostgreSQL does. */
static bool waits_for_pipeline(struct relay *r, enum fe_msg *res)
{
    if (!r->x)
        return false;
    if (r->x->discard) {
        *res = FE_DONE;
        return true;
    }
    if (relay_ext_empty(r->x)) {
        r->wait_fifo = false;
        return false;
    }
    r->wait_fifo = true;
    *res = FE_KEEP;
    return true;
}

/* The statement a COPY FROM STDIN belongs to: the Query, or the head Execute's run. */
static struct stmt *copy_stmt(struct relay *r)
{
    struct ext_entry *e = relay_ext_head(r->x);
    if (!e)
        return &r->stmt;
    return e->kind == EXT_EXECUTE && e->run ? &e->run->st : NULL;
}

/* The client's COPY data went over --max-bytes: CopyFail ends the COPY upstream (a cancel is
 * not acted on while the backend waits for copy data), and its error becomes the proxy's. */
static void copy_in_trip(struct relay *r)
{
    uint8_t buf[160];
    struct wire_buf b;
    char msg[128], det[160];
    snprintf(msg, sizeof(msg), "byte limit of %llu exceeded by COPY data",
             (unsigned long long)r->cfg->max_bytes);
    snprintf(det, sizeof(det), "rule: max-bytes (pgwire-proxy --max-bytes %llu)",
             (unsigned long long)r->cfg->max_bytes);
    wire_buf_init(&b, buf, sizeof(buf));
    wire_build_copy_fail(&b, "pgwire-proxy: byte limit exceeded");
    r->copy_tripped = true;
    relay_start_abort(r, "54000", msg, det,
                      "Load less data per COPY, or ask the operator to raise --max-bytes.",
                      "max-bytes", STMT_LIMITED, false, false);
    if (r->env->to_upstream(r->ctx, b.data, b.len))
        r->end = SE_UPSTREAM_LOST;
}

/* During copy-in: CopyData counts against the statement's byte budget; Sync and Flush are
 * dropped, as the backend ignores them; anything else goes on and ends the COPY upstream. */
static bool copy_in_message(struct relay *r, uint8_t *msg, size_t total, enum fe_msg *res)
{
    char type = (char)msg[0];
    *res = FE_DONE;
    switch (type) {
    case 'd': {
        if (r->copy_tripped)
            return true;
        struct stmt *st = copy_stmt(r);
        enum stmt_limit l = st ? stmt_charge(st, total, false) : STMT_LIMIT_NONE;
        if (l != STMT_LIMIT_NONE && r->cfg->on_limit == CONFIG_ON_LIMIT_WARN) {
            relay_limit_warn(r, st, l, total, false);
        } else if (l != STMT_LIMIT_NONE) {
            copy_in_trip(r);
            return true;
        }
        break;
    }
    case 'c':
    case 'f':
        /* the client's COPY is over: what it sends next (libpq's Sync) is ordinary again */
        r->copy_in = false;
        if (r->copy_tripped)
            return true;
        break;
    case 'H':
    case 'S':
        return true;
    default:
        if (r->ext_allowed && !relay_ext_empty(r->x))
            return false; /* tracked as usual: the backend fails the COPY, then skips it */
        break;
    }
    if (r->env->to_upstream(r->ctx, msg, total))
        r->end = SE_UPSTREAM_LOST;
    return true;
}

static enum fe_msg client_message(struct relay *r, uint8_t *msg, size_t total, int next_type)
{
    char type = (char)msg[0];
    enum fe_msg res;
    if (r->copy_in && copy_in_message(r, msg, total, &res))
        return res;
    if (r->st == RS_DISCARD && type != 'S' && type != 'X')
        return FE_DONE; /* PostgreSQL ignores everything until Sync after an error */
    if (r->ext_allowed && (type == 'S' || wire_is_ext_request(type)))
        return fe_ext_message(r, msg, total, next_type);
    if ((type == 'Q' || type == 'F') && waits_for_pipeline(r, &res))
        return res;
    switch (type) {
    case 'Q':
        return handle_query(r, msg, total);
    case 'X':
        r->end = SE_CLIENT_EXIT;
        return FE_DONE;
    case 'S':
        handle_sync(r);
        return FE_DONE;
    case 'F':
        handle_function_call(r);
        return FE_DONE;
    case 'd':
    case 'c':
    case 'f':
        return FE_DONE; /* CopyData/Done/Fail outside COPY: ignored, as PostgreSQL does */
    default: {
        if (wire_is_ext_request(type)) {
            reject_extended(r);
            return FE_DONE;
        }
        char text[64];
        snprintf(text, sizeof(text), "invalid frontend message type %d", (unsigned char)type);
        protocol_fatal(r, text);
        return FE_DONE;
    }
    }
}

size_t fe_proto_process(struct relay *r, uint8_t *buf, size_t len, size_t *need)
{
    uint64_t max_msg = r->cfg->max_message_bytes;
    uint32_t max = (uint32_t)(max_msg > UINT32_MAX - 8 ? UINT32_MAX - 8 : max_msg + 4);
    size_t off = 0;
    *need = 0;
    while (off < len && fe_proto_ready(r) && !r->env->cancel_pending(r->ctx)) {
        struct wire_hdr h;
        int rc = wire_read_hdr(buf + off, len - off, max, &h);
        if (rc == WIRE_NEED_MORE) {
            *need = 5;
            break;
        }
        if (rc == WIRE_TOO_LONG || rc == WIRE_BAD_LENGTH) {
            protocol_fatal(r, rc == WIRE_TOO_LONG
                                  ? "invalid message length: larger than --max-message-size"
                                  : "invalid message length");
            break;
        }
        if (h.total > len - off) {
            *need = h.total;
            break;
        }
        /* a forwarded Query stays at the front of the buffer until its ReadyForQuery */
        if (buf[off] == 'Q' && off > 0 && !r->copy_in)
            break;
        int next_type = off + h.total < len ? buf[off + h.total] : -1;
        if (client_message(r, buf + off, h.total, next_type) == FE_KEEP)
            break;
        decision_void(r);
        off += h.total;
    }
    return off;
}
