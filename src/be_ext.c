/* Answers to extended-protocol requests, matched to the head of the response FIFO: the answer
 * the client's request gets (forwarded, or the guardrail's error in place of the proxy's
 * failing Parse, or dropped for the proxy's own requests); DataRows counted against the head
 * Execute's portal run; an error drops the requests the backend then skips, up to Sync; and a
 * run that trips a limit or its timeout answered as PostgreSQL would have failed there. */
#include "be_int.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "netio.h"
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HOLD_MAX (256 * 1024) /* answers held back until Z after a completed, tripped run */

struct stmt *be_current(struct relay *r)
{
    struct ext_entry *e = relay_ext_head(r->x);
    if (!e)
        return &r->stmt;
    return e->kind == EXT_EXECUTE && e->run ? &e->run->st : NULL;
}

/* An Execute's answer ended (or was skipped): the next Execute, which runs upstream from now,
 * starts its query-timeout clock (its own, not the pipeline's). */
static void arm(struct relay *r)
{
    r->x->exec_deadline_ms = r->x->nexec && r->cfg->query_timeout_ms
                                 ? netio_turn_ms() + (int64_t)r->cfg->query_timeout_ms
                                 : 0;
}

/* The head's answer is complete: the next request becomes the head. */
static void pop_head(struct relay *r, struct ext_refusal *rewrite)
{
    bool execute = relay_ext_head(r->x)->kind == EXT_EXECUTE;
    relay_ext_pop(r->x, rewrite);
    if (execute)
        arm(r);
}

/* An Execute the backend skipped after an error: its portal run ends, discarded. */
static void skipped(void *arg, struct ext_entry *e)
{
    struct relay *r = arg;
    if (e->kind == EXT_EXECUTE)
        relay_run_end(r, e->run, STMT_DISCARDED);
}

static void skip_to_sync(struct relay *r)
{
    relay_ext_skip_to_sync(r->x, skipped, r);
    arm(r);
}

/* While the answer to a tripped run waits for Z, what follows it is kept, in order (a message
 * only partly in the buffer cannot be: then the client gets the error instead). */
static enum be_action hold(struct relay *r, const uint8_t *body, size_t blen, size_t mlen)
{
    if (!body || blen < mlen)
        r->ab.hold_overflow = true;
    const uint8_t *msg = body ? body - 5 : NULL;
    size_t total = mlen + 5;
    if (r->ab.hold_overflow)
        return DROP;
    if (r->hold_len + total > HOLD_MAX) {
        r->ab.hold_overflow = true; /* too much to replay: the client gets the error */
        return DROP;
    }
    uint8_t *n = realloc(r->hold, r->hold_len + total);
    if (!n) {
        r->ab.hold_overflow = true;
        return DROP;
    }
    memcpy(n + r->hold_len, msg, total);
    r->hold = n;
    r->hold_len += total;
    return DROP;
}

/* The tripped Execute's terminator ('C', 's', 'I' completed; 'E' canceled or failed). */
static enum be_action tripped_terminator(struct relay *r, struct fwd *f, size_t at, char type,
                                         const uint8_t *body, size_t len)
{
    struct relay_abort *a = &r->ab;
    struct stmt *st = a->run ? &a->run->st : &r->stmt;
    if (type == 'E') {
        char code[6];
        wire_error_code(body, len, code);
        stmt_upstream_error(st, code);
        a->saw_error = true;
    } else {
        a->completed = true;
        if (type == 'C')
            be_copy_tag(a->tag, sizeof(a->tag), body, len);
        else
            snprintf(a->tag, sizeof(a->tag), "SELECT %llu", (unsigned long long)st->rows);
    }
    if (a->completed && a->sync_sent) {
        a->held = true; /* the segment commits at its Sync unless something fails: wait */
    } else {
        if (be_emit_abort_error(r, f, at, st))
            be_io_failed(r);
        a->delivered = true;
        relay_run_end(r, a->run, a->outcome);
    }
    if (type == 'E')
        skip_to_sync(r);
    else
        pop_head(r, NULL);
    return DROP;
}

/* The run tripped and its answer is settled, or waits: what the rest of the segment sends. */
static enum be_action after_trip(struct relay *r, struct fwd *f, size_t at, char type,
                                 const uint8_t *body, size_t blen, size_t mlen)
{
    (void)f;
    (void)at;
    struct ext_entry *e = relay_ext_head(r->x);
    bool held = r->ab.held;
    if (type == 'E') {
        r->ab.saw_error = true; /* the segment rolls back */
        if (e && e->kind != EXT_SYNC)
            skip_to_sync(r);
        return held ? hold(r, body, blen, mlen) : DROP;
    }
    bool ends = (type == '1' && e && e->kind == EXT_PARSE) ||
                (type == '2' && e && e->kind == EXT_BIND) ||
                (type == '3' && e && e->kind == EXT_CLOSE) ||
                ((type == 'n' || type == 'T') && e && e->kind == EXT_DESCRIBE) ||
                ((type == 'C' || type == 'I' || type == 's') && e && e->kind == EXT_EXECUTE);
    if (type == 'D' && e && e->kind == EXT_EXECUTE && held && e->run &&
        be_charge(r, &e->run->st, mlen + 5, true) == DROP)
        r->ab.hold_overflow = true; /* a later run over its own budget: no replay */
    if (ends) {
        if (e->kind == EXT_EXECUTE && type != 's')
            relay_run_end(r, e->run, r->ab.delivered ? STMT_DISCARDED : STMT_OK);
        pop_head(r, NULL);
    }
    return held ? hold(r, body, blen, mlen) : DROP;
}

/* Z ends the segment: a held answer is decided now (committed write → what happened). */
static enum be_action segment_end(struct relay *r, struct fwd *f, size_t at, char status)
{
    struct relay_abort *a = &r->ab;
    struct stmt *st = a->run ? &a->run->st : &r->stmt;
    bool committed = status == 'I' && !a->saw_error && !a->hold_overflow &&
                     ((be_tag_is_write(a->tag) && !a->copy_out) || r->hold_len > 0);
    int rc = 0;
    if (committed) {
        rc = be_emit_committed_report(r, f, at, st);
        if (!rc && r->hold_len)
            rc = be_emit(r, f, at, r->hold, r->hold_len);
        st->upstream = STMT_UP_COMMITTED;
    } else {
        rc = be_emit_abort_error(r, f, at, st);
    }
    if (rc)
        be_io_failed(r);
    relay_run_end(r, a->run, a->outcome);
    free(r->hold);
    r->hold = NULL;
    r->hold_len = 0;
    relay_abort_done(r);
    if (!committed && status == 'T' && !a->saw_error) {
        /* it completed inside a block: the block must fail as after any error */
        if (relay_start_internal(r, RI_POISON))
            r->end = SE_UPSTREAM_LOST;
        return DROP;
    }
    return FORWARD;
}

static enum be_action sync_answer(struct relay *r, struct fwd *f, size_t at, const uint8_t *body,
                                  size_t len)
{
    char status = wire_rfq_status(body, len);
    if (!status) {
        be_upstream_broken(r, f, at, "malformed ReadyForQuery");
        return DROP;
    }
    r->tx = status;
    pop_head(r, NULL);
    if (r->x->nsync == 0)
        r->x->seg_open = false;
    enum be_action act = FORWARD;
    if (r->ab.active && r->ab.ext) {
        if (r->ab.held)
            act = segment_end(r, f, at, status);
        else
            relay_abort_done(r);
    }
    if (status == 'I') {
        /* portals live until their transaction ends; a suspended run ends with them */
        for (int i = 0; i < r->x->portal_top; i++)
            if (r->x->portals[i])
                relay_run_end(r, r->x->portals[i]->run, STMT_OK);
        relay_ext_portals_clear(r->x);
    }
    return act;
}

/* A run's rows and terminator in truncate mode, once its budget tripped. */
static enum be_action truncated_end(struct relay *r, struct fwd *f, size_t at, struct ext_entry *e,
                                    const uint8_t *body, size_t len, char type)
{
    char tag[64];
    if (type == 'C')
        be_copy_tag(tag, sizeof(tag), body, len);
    else
        snprintf(tag, sizeof(tag), "SELECT 0");
    if (be_emit_truncated_complete(r, f, at, e->run ? &e->run->st : &r->stmt, tag))
        be_io_failed(r);
    r->truncating = false;
    relay_run_end(r, e->run, STMT_LIMITED);
    pop_head(r, NULL);
    return DROP;
}

static enum be_action execute_answer(struct relay *r, struct fwd *f, size_t at, struct ext_entry *e,
                                     char type, const uint8_t *body, size_t len, size_t mlen)
{
    if (type == 'D')
        return be_charge(r, e->run ? &e->run->st : NULL, mlen + 5, true);
    if (r->truncating)
        return truncated_end(r, f, at, e, body, len, type);
    if (type != 's')
        relay_run_end(r, e->run, STMT_OK);
    pop_head(r, NULL);
    return FORWARD;
}

/* COPY from an Execute while --copy reject: the COPY ends upstream (CopyFail for copy-in, a
 * cancel for copy-out), and the error that then answers the Execute becomes the proxy's. */
static enum be_action copy_refused(struct relay *r, struct ext_entry *e, char type)
{
    e->flags |= EXT_COPY_REFUSED;
    metrics_guardrail("copy-protocol");
    if (type == 'G') {
        uint8_t buf[128];
        struct wire_buf b;
        wire_buf_init(&b, buf, sizeof(buf));
        wire_build_copy_fail(&b, "COPY is not supported through pgwire-proxy");
        if (r->env->to_upstream(r->ctx, b.data, b.len))
            r->end = SE_UPSTREAM_LOST;
    } else {
        r->env->cancel(r->ctx);
    }
    return DROP;
}

/* An ErrorResponse answering the head request. */
static enum be_action error_answer(struct relay *r, struct fwd *f, size_t at, struct ext_entry *e,
                                   const uint8_t *body, size_t blen)
{
    char code[6];
    wire_error_code(body, blen, code);
    if (e->kind == EXT_SYNC)
        return FORWARD; /* an error during Sync (a deferred constraint): Z still follows */
    enum ext_action action = (enum ext_action)e->action;
    uint8_t flags = e->flags;
    if (e->kind == EXT_EXECUTE && e->run) {
        stmt_upstream_error(&e->run->st, code);
        memcpy(e->run->st.sqlstate, code, 6);
        relay_run_end(r, e->run, STMT_ERROR);
    }
    struct ext_refusal d;
    relay_ext_pop(r->x, &d);
    skip_to_sync(r);
    if (flags & EXT_COPY_REFUSED) {
        if (be_emit_copy_refused(r, f, at))
            be_io_failed(r);
        return DROP;
    }
    if (action == EXT_SUPPRESS)
        return DROP;
    if (action == EXT_REWRITE && strcmp(code, "42601") == 0) {
        if (be_emit_refusal(r, f, at, &d))
            be_io_failed(r);
        return DROP;
    }
    metrics_error_sqlstate(code);
    return FORWARD;
}

enum be_action be_ext_message(struct relay *r, struct fwd *f, size_t at, char type,
                              const uint8_t *body, size_t blen, size_t mlen, bool *handled)
{
    struct ext_entry *e = r->x ? relay_ext_head(r->x) : NULL;
    *handled = false;
    if (!e || type == 'N' || type == 'A' || type == 'S')
        return FORWARD;
    if (type == 'E') {
        char sev[16];
        wire_error_severity(body, blen, sev, sizeof(sev));
        if (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0)
            return FORWARD;
    }
    *handled = true;
    if (type == 'Z') {
        /* Z answers the first Sync: requests forwarded after the backend had already reported
         * an error were skipped by it, unanswered, and must not stay in the FIFO */
        if (e->kind != EXT_SYNC && r->x->nsync)
            skip_to_sync(r);
        e = relay_ext_head(r->x);
        return e->kind == EXT_SYNC ? sync_answer(r, f, at, body, blen) : FORWARD;
    }
    struct relay_abort *a = &r->ab;
    if (a->active && a->ext && !a->reached && e->kind == EXT_EXECUTE && e->run == a->run)
        a->reached = true; /* the answers owed before the tripped Execute have gone out */
    if (a->active && a->ext && a->reached) {
        bool tripped = e->kind == EXT_EXECUTE && e->run == a->run && !a->delivered && !a->held &&
                       !a->completed && !a->saw_error;
        if (tripped && (type == 'C' || type == 's' || type == 'I' || type == 'E'))
            return tripped_terminator(r, f, at, type, body, blen);
        if (tripped && type == 'D')
            return DROP;
        return after_trip(r, f, at, type, body, blen, mlen);
    }
    if (type == 'E')
        return error_answer(r, f, at, e, body, blen);
    if (type == 'G' || type == 'H' || type == 'W') {
        if (!r->copy_allowed || type == 'W')
            return copy_refused(r, e, type);
        if (type == 'G') {
            /* the backend ignores Sync and Flush during copy-in: the ones it got already are
             * no longer answered, and fe_proto.c drops the rest until the copy ends */
            r->copy_in = true;
            r->copy_tripped = false;
            relay_ext_drop_syncs_after_head(r->x);
        } else {
            r->copy_out = true;
        }
        return FORWARD;
    }
    if (e->flags & EXT_COPY_REFUSED) {
        if (type == 'd' || type == 'c')
            return DROP; /* the refused COPY TO STDOUT's data, until our cancel ends it */
        if (type == 'C') {
            /* It completed before the cancel: PostgreSQL goes on with the pipeline the client
             * would believe failed. Only ending the session keeps the two in step. */
            if (be_flush_span(r, f, at))
                be_io_failed(r);
            relay_send_fatal(r, "0A000", "COPY is not supported through pgwire-proxy",
                             "rule: copy-protocol");
            r->end = SE_GUARDRAIL;
            return DROP;
        }
    }
    if (type == 'd' && e->kind == EXT_EXECUTE)
        return be_charge(r, e->run ? &e->run->st : NULL, mlen + 5, true);
    if (type == 'c')
        return FORWARD;
    if (type == 'C' || type == 'E')
        r->copy_in = r->copy_out = false;
    bool suppress = e->action != EXT_FORWARD;
    switch (e->kind) {
    case EXT_PARSE:
    case EXT_BIND:
        if (type == '1' || type == '2')
            pop_head(r, NULL);
        return suppress ? DROP : FORWARD;
    case EXT_CLOSE:
        if (type == '3') {
            relay_run_end(r, e->run, STMT_OK); /* a suspended run ends with its portal */
            pop_head(r, NULL);
        }
        return FORWARD;
    case EXT_DESCRIBE:
        if (type == 'T' || type == 'n')
            pop_head(r, NULL);
        return FORWARD;
    case EXT_EXECUTE:
        return execute_answer(r, f, at, e, type, body, blen, mlen);
    default:
        return FORWARD;
    }
}
