/* Client → upstream, extended query protocol (--extended-protocol allow): each message is
 * checked as it arrives and streamed on at once, with an entry in the response FIFO. A Parse
 * is decided by the policy like a Query; a refused request is replaced by a Parse that fails
 * in every transaction state, whose error becomes the guardrail's, and the client's messages
 * are then dropped until Sync: exactly what PostgreSQL does after an error at that point. */
#include "config.h"
#include "log.h"
#include "netio.h"
#include "relay.h"
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PARAM_AUDIT_MAX  256 /* bytes of one parameter value kept for the audit */
#define PARAMS_AUDIT_MAX 4096

static void fatal(struct relay *r, const char *code, const char *message, enum session_end e)
{
    relay_send_fatal(r, code, message, NULL);
    r->end = e;
}

static int push(struct relay *r, enum ext_kind kind, enum ext_action action, struct ext_run *run)
{
    if (relay_ext_push(r->x, kind, action, run) == 0)
        return 0;
    fatal(r, "54000", "too many requests awaiting their answers (at most 65536 in a pipeline)",
          SE_GUARDRAIL);
    return -1;
}

static int send_up(struct relay *r, const void *p, size_t n)
{
    if (r->env->to_upstream(r->ctx, p, n) == 0)
        return 0;
    r->end = SE_UPSTREAM_LOST;
    return -1;
}

static void forward(struct relay *r, const uint8_t *msg, size_t total, enum ext_kind kind,
                    struct ext_run *run)
{
    struct ext_state *x = r->x;
    if (push(r, kind, EXT_FORWARD, run))
        return;
    if (r->env->to_upstream_input(r->ctx, msg, total)) {
        r->end = SE_UPSTREAM_LOST;
        return;
    }
    x->seg_open = true;
    /* the first Execute in flight runs upstream from now on: its query timeout starts */
    if (kind == EXT_EXECUTE && x->nexec == 1 && r->cfg->query_timeout_ms)
        x->exec_deadline_ms = netio_turn_ms() + (int64_t)r->cfg->query_timeout_ms;
}

static void send_failing_parse(struct relay *r, const char *target, enum ext_action action,
                               const struct ext_refusal *why)
{
    uint8_t buf[512];
    struct wire_buf b;
    wire_buf_init(&b, buf, sizeof(buf));
    wire_build_parse(&b, strlen(target) < 256 ? target : EXT_DENIED_NAME, EXT_DENIED_NAME);
    if (push(r, EXT_PARSE, action, NULL))
        return;
    if (why && relay_ext_rewrite_push(r->x, why)) {
        fatal(r, "53200", "out of memory", SE_INTERNAL);
        return;
    }
    if (send_up(r, b.data, b.len) == 0)
        r->x->seg_open = true;
}

/* Answers the request at this point of the pipeline with the refusal's error. */
static void refuse(struct relay *r, const char *target, const struct ext_refusal *why)
{
    send_failing_parse(r, target, EXT_REWRITE, why);
    r->x->discard = true;
}

static struct audit_param *params_of(const struct wire_bind_msg *b, size_t *bytes);

/* bind: the Bind refused when its statement was decided again after a reload (its parameters
 * go into the audit record), NULL for a Parse */
static void refuse_decision(struct relay *r, const char *target, const char *sql, size_t len,
                            const struct guard_decision *d, const char *stmt_name,
                            const struct wire_bind_msg *bind)
{
    struct relay_run_info info = {.protocol = "extended", .statement_name = stmt_name};
    struct ext_refusal why;
    size_t bytes = 0;
    struct audit_param *params = NULL;
    if (bind && r->audit_params && bind->nparams && (params = params_of(bind, &bytes))) {
        info.params = params;
        info.nparams = bind->nparams;
    }
    relay_record_refusal(r, sql, len, d, &info);
    free(params);
    relay_refusal_of(d, &why);
    refuse(r, target, &why);
}

static void refuse_limit(struct relay *r, const char *target, const char *what)
{
    struct ext_refusal why = {.code = "53200",
                              .hint = "Close prepared statements and portals the client no "
                                      "longer needs."};
    snprintf(why.message, sizeof(why.message), "out of memory: too many %s", what);
    snprintf(why.detail, sizeof(why.detail),
             "rule: session-tables (pgwire-proxy keeps at most %d prepared statements, %d "
             "portals and %u bytes of their texts per session)",
             EXT_MAX_STATEMENTS, EXT_MAX_PORTALS, EXT_TABLE_BYTES);
    refuse(r, target, &why);
}

/* rc and why come from a parse call made before this one: the order in which a call's
 * arguments are evaluated is unspecified, so `why` must not be read in the same call. */
static bool malformed(struct relay *r, int rc, const char *why)
{
    if (rc == WIRE_OK)
        return false;
    fatal(r, "08P01", why, SE_PROTOCOL);
    return true;
}

static enum fe_msg ext_parse(struct relay *r, uint8_t *msg, size_t total)
{
    struct wire_parse_msg p;
    const char *why = NULL;
    int rc = wire_parse_parse(msg + 5, total - 5, &p, &why);
    if (malformed(r, rc, why) || r->x->discard)
        return FE_DONE;
    if (r->st != RS_POLICY)
        r->env->refresh(r->ctx);
    struct guard_decision d;
    if (relay_decide(r, p.query, p.query_len, &d) == 1) {
        r->st = RS_POLICY;
        return FE_KEEP;
    }
    r->st = RS_IDLE;
    if (d.verdict != GUARD_ALLOW) {
        refuse_decision(r, p.name, p.query, p.query_len, &d, p.name, NULL);
        return FE_DONE;
    }
    if (relay_ext_stmt_put(r->x, p.name, p.query, p.query_len, r->gen) ||
        relay_ext_text_set_shadow(relay_ext_stmt_get(r->x, p.name)->text, d.shadow_rule)) {
        refuse_limit(r, p.name, "prepared statements");
        return FE_DONE;
    }
    relay_shadow_denied(r, &d);
    forward(r, msg, total, EXT_PARSE, NULL);
    return FE_DONE;
}

/* The Bind parameters as the audit shows them: text values cut at PARAM_AUDIT_MAX bytes, NULL,
 * binary as its size; one allocation holds the array and the text. */
static struct audit_param *params_of(const struct wire_bind_msg *b, size_t *bytes)
{
    size_t pos = 0, text = 0;
    int32_t len;
    const uint8_t *v;
    for (uint16_t i = 0; wire_bind_param(b, &pos, &len, &v); i++)
        if (len > 0 && wire_bind_format(b, i) == 0)
            text += len > PARAM_AUDIT_MAX ? PARAM_AUDIT_MAX : (size_t)len;
    size_t head = (size_t)b->nparams * sizeof(struct audit_param);
    *bytes = head + text;
    struct audit_param *out = malloc(head + text + 1);
    if (!out)
        return NULL;
    char *t = (char *)out + head;
    pos = 0;
    for (uint16_t i = 0; wire_bind_param(b, &pos, &len, &v); i++) {
        struct audit_param *a = &out[i];
        a->size = len > 0 ? (uint64_t)len : 0;
        a->kind = len < 0                       ? AUDIT_PARAM_NULL
                  : wire_bind_format(b, i) == 0 ? AUDIT_PARAM_TEXT
                                                : AUDIT_PARAM_BINARY;
        a->len = a->kind == AUDIT_PARAM_TEXT
                     ? (a->size > PARAM_AUDIT_MAX ? PARAM_AUDIT_MAX : (size_t)a->size)
                     : 0;
        a->text = t;
        memcpy(t, v, a->len);
        t += a->len;
    }
    return out;
}

static enum fe_msg ext_bind(struct relay *r, uint8_t *msg, size_t total)
{
    struct wire_bind_msg b;
    const char *why = NULL;
    int rc = wire_parse_bind(msg + 5, total - 5, &b, &why);
    if (malformed(r, rc, why) || r->x->discard)
        return FE_DONE;
    if (r->st != RS_POLICY)
        r->env->refresh(r->ctx);
    struct ext_stmt *st = relay_ext_stmt_get(r->x, b.stmt);
    if (st && st->policy_gen != r->gen) {
        /* prepared under another configuration: decided again on the policy in force */
        struct guard_decision d;
        if (relay_decide(r, st->text->data, st->text->len, &d) == 1) {
            r->st = RS_POLICY;
            return FE_KEEP;
        }
        r->st = RS_IDLE;
        if (d.verdict != GUARD_ALLOW) {
            refuse_decision(r, EXT_DENIED_NAME, st->text->data, st->text->len, &d, b.stmt, &b);
            return FE_DONE;
        }
        if (relay_ext_text_set_shadow(st->text, d.shadow_rule)) {
            refuse_limit(r, EXT_DENIED_NAME, "prepared statements");
            return FE_DONE;
        }
        relay_shadow_denied(r, &d);
        st->policy_gen = r->gen;
    }
    int portal = relay_ext_portal_open(r->x, b.portal, st ? st->text : NULL);
    if (portal < 0) {
        refuse_limit(r, EXT_DENIED_NAME, "portals");
        return FE_DONE;
    }
    if (r->audit_params && b.nparams && r->x->param_bytes < EXT_PARAM_BYTES) {
        struct ext_portal *p = r->x->portals[portal];
        size_t bytes = 0;
        if ((p->params = params_of(&b, &bytes))) {
            p->nparams = b.nparams;
            p->params_bytes = bytes;
            r->x->param_bytes += bytes;
        }
    }
    forward(r, msg, total, EXT_BIND, NULL);
    return FE_DONE;
}

static enum fe_msg ext_execute(struct relay *r, uint8_t *msg, size_t total, int next_type)
{
    const char *name;
    uint32_t max_rows;
    const char *why = NULL;
    int rc = wire_parse_execute(msg + 5, total - 5, &name, &max_rows, &why);
    if (malformed(r, rc, why) || r->x->discard)
        return FE_DONE;
    int portal = relay_ext_portal_find(r->x, name);
    if (portal < 0) /* a cursor from DECLARE, or a portal that does not exist */
        portal = relay_ext_portal_open(r->x, name, NULL);
    struct ext_run *run = portal >= 0 ? relay_ext_portal_run(r->x, portal, r->cfg) : NULL;
    if (!run) {
        refuse_limit(r, EXT_DENIED_NAME, "portals");
        return FE_DONE;
    }
    run->executes++;
    forward(r, msg, total, EXT_EXECUTE, run);
    if (r->end == SE_NONE && next_type != 'H' && next_type != 'S') {
        /* the backend holds an Execute's answer until Flush or Sync: the proxy's clock and
         * budget need it as it happens */
        uint8_t buf[8];
        struct wire_buf fb;
        wire_buf_init(&fb, buf, sizeof(buf));
        wire_build_flush(&fb);
        send_up(r, fb.data, fb.len);
    }
    return FE_DONE;
}

static enum fe_msg ext_target(struct relay *r, uint8_t *msg, size_t total, char type)
{
    char kind;
    const char *name, *why = NULL;
    int rc = wire_parse_target(msg + 5, total - 5, &kind, &name, &why,
                               type == 'D' ? "invalid DESCRIBE message subtype"
                                           : "invalid CLOSE message subtype");
    if (malformed(r, rc, why) || r->x->discard)
        return FE_DONE;
    if (type == 'D') {
        forward(r, msg, total, EXT_DESCRIBE, NULL);
        return FE_DONE;
    }
    struct ext_run *run = NULL;
    int portal = kind == 'P' ? relay_ext_portal_find(r->x, name) : -1;
    if (kind == 'S')
        relay_ext_stmt_drop(r->x, name);
    else if (portal >= 0)
        run = r->x->portals[portal]->run; /* a suspended run ends at the CloseComplete */
    forward(r, msg, total, EXT_CLOSE, run);
    relay_ext_portal_close(r->x, portal);
    return FE_DONE;
}

static enum fe_msg ext_sync(struct relay *r, uint8_t *msg, size_t total)
{
    if (total != 5) {
        fatal(r, "08P01", "invalid message format", SE_PROTOCOL);
        return FE_DONE;
    }
    struct relay_abort *a = &r->ab;
    if (a->active && a->ext && !a->sync_sent && !a->parse_injected) {
        /* the tripped run's segment must not commit: fail it before its Sync */
        a->parse_injected = true;
        send_failing_parse(r, EXT_DENIED_NAME, EXT_SUPPRESS, NULL);
    }
    r->x->discard = false;
    forward(r, msg, total, EXT_SYNC, NULL);
    return FE_DONE;
}

enum fe_msg fe_ext_message(struct relay *r, uint8_t *msg, size_t total, int next_type)
{
    if (!r->x && !(r->x = relay_ext_new())) {
        fatal(r, "53200", "out of memory", SE_INTERNAL);
        return FE_DONE;
    }
    switch (msg[0]) {
    case 'P':
        return ext_parse(r, msg, total);
    case 'B':
        return ext_bind(r, msg, total);
    case 'E':
        return ext_execute(r, msg, total, next_type);
    case 'D':
    case 'C':
        return ext_target(r, msg, total, (char)msg[0]);
    case 'H':
        if (total != 5)
            fatal(r, "08P01", "invalid message format", SE_PROTOCOL);
        else if (!r->x->discard && send_up(r, msg, total) == 0)
            r->x->seg_open = true;
        return FE_DONE;
    case 'S':
        return ext_sync(r, msg, total);
    }
    return FE_DONE;
}
