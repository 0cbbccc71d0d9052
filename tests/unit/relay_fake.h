/* A scripted environment for the relay's protocol handlers, with no sockets: what they send
 * to the client and to the upstream is recorded, the policy's verdict is set by the test (a shadow
 * verdict too) or comes from a real compiled policy, and the two receive buffers are driven the way
 * session_relay.c drives them (handled bytes are dropped, a forwarded Query stays at the front of
 * the client buffer until its ReadyForQuery, the upstream buffer reads what fits, grows to `need`
 * and shrinks back). Shared by the unit tests and the fuzz target, so it uses no test framework:
 * misuse aborts. */
#ifndef PGWP_TEST_RELAY_FAKE_H
#define PGWP_TEST_RELAY_FAKE_H

#include "config.h"
#include "guard.h"
#include "relay.h"
#include "stmt.h"
#include "wire.h"
#include "wire_fake.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAKE_UP_BASE   (64 * 1024)  /* the session's upstream buffer */
#define FAKE_CLI_CAP   (512 * 1024) /* fixed: a kept Query must not move */
#define FAKE_PUMP_MAX  100000       /* bound on handler calls per pump */
#define FAKE_MAX_TYPES 4096

/* ---------- the fake environment ---------- */

struct fake {
    struct relay r;
    struct config cfg;
    struct relay_env env;
    bool auto_client; /* handle client input after each upstream read, as the session does */
    void *user;       /* for a harness that replaces env callbacks */

    struct fbuf cli_out, up_out; /* what the handlers sent */
    uint8_t *cli_in;             /* the client's receive buffer (FAKE_CLI_CAP bytes) */
    size_t cli_len;
    struct fbuf up_wire; /* upstream bytes not read yet */
    uint8_t *up_in;      /* the upstream's receive buffer */
    size_t up_len, up_cap;
    size_t up_base; /* its size when idle: the session's SESSION_UPSTREAM_BUF */
    size_t fe_need, be_need, max_up_cap;

    /* scripted behaviour */
    int policy_rc; /* 0 decided, 1 pending, -1 out of memory */
    struct guard_decision verdict;
    struct guard_policy *policy; /* when set, it decides instead of verdict (fake_set_policy) */
    bool reload_read_only;       /* the next refresh turns --read-only on, like a reload */
    bool cancel_is_pending, ref_pending, fail_client, fail_upstream;
    size_t backlog, up_backlog; /* bytes queued for the client / for the upstream */

    /* what happened */
    int policy_calls, refreshes, cancels, refs, settings, done;
    const uint8_t *last_ref;
    size_t last_ref_len;
    enum stmt_outcome outcome;
    struct stmt last; /* the statement as statement_done saw it (pointers not kept) */
    char last_sql[256], last_rule[96];
    /* its run info: "" protocol for a simple Query (no info) */
    char last_protocol[16], last_portal[64];
    uint32_t last_executes;
    uint16_t last_nparams;
    /* the last record as the audit shows it (stmt_audit_view; "" for NULL) */
    char audit_outcome[32], audit_rule[96], audit_shadow[96];
    char last_setting[128];

    char types[FAKE_MAX_TYPES + 1];
};

static inline int fake_to_client(void *ctx, const void *p, size_t n)
{
    struct fake *f = ctx;
    if (f->fail_client)
        return -1;
    fb_put(&f->cli_out, p, n);
    return 0;
}

static inline int fake_to_upstream(void *ctx, const void *p, size_t n)
{
    struct fake *f = ctx;
    if (f->fail_upstream)
        return -1;
    fb_put(&f->up_out, p, n);
    return 0;
}

static inline int fake_to_upstream_ref(void *ctx, const void *p, size_t n)
{
    struct fake *f = ctx;
    if (f->fail_upstream)
        return -1;
    f->refs++;
    f->last_ref = p;
    f->last_ref_len = n;
    fb_put(&f->up_out, p, n);
    return 0;
}

static inline bool fake_upstream_busy(void *ctx)
{
    return ((struct fake *)ctx)->ref_pending;
}

static inline size_t fake_client_backlog(void *ctx)
{
    return ((struct fake *)ctx)->backlog;
}

static inline size_t fake_upstream_backlog(void *ctx)
{
    return ((struct fake *)ctx)->up_backlog;
}

static inline void fake_cancel(void *ctx)
{
    ((struct fake *)ctx)->cancels++;
}

static inline bool fake_cancel_pending(void *ctx)
{
    return ((struct fake *)ctx)->cancel_is_pending;
}

static inline int fake_policy(void *ctx, const char *sql, size_t len, struct guard_decision *d)
{
    struct fake *f = ctx;
    f->policy_calls++;
    if (strlen(sql) != len)
        abort(); /* the relay promises a NUL-terminated text of len bytes */
    if (f->policy)
        return guard_check(f->policy, NULL, sql, len, d) ? -1 : 0;
    if (f->policy_rc == 0)
        *d = f->verdict;
    return f->policy_rc;
}

static inline void fake_refresh(void *ctx)
{
    struct fake *f = ctx;
    f->refreshes++;
    if (f->reload_read_only) { /* what session_relay.c's refresh does after such a reload */
        f->reload_read_only = false;
        f->cfg.read_only = true;
        f->r.read_only_pending = true;
    }
}

/* A statement ended: a simple Query's (the relay's own stmt), a refusal's (nothing ran) or an
 * extended portal run's (info names it). */
static inline void fake_statement_done(void *ctx, const struct stmt *st, enum stmt_outcome o,
                                       uint64_t us, const struct relay_run_info *info)
{
    struct fake *f = ctx;
    (void)us;
    bool known = st == &f->r.stmt || st->upstream == STMT_UP_NOT_SENT || info;
    if (!known || st->active || !st->sql)
        abort(); /* one end per begun statement, after it stopped */
    f->done++;
    f->outcome = o;
    f->last = *st;
    snprintf(f->last_sql, sizeof(f->last_sql), "%.*s", (int)st->sql_len, st->sql);
    snprintf(f->last_rule, sizeof(f->last_rule), "%s", st->rule ? st->rule : "");
    snprintf(f->last_protocol, sizeof(f->last_protocol), "%s",
             info && info->protocol ? info->protocol : "");
    snprintf(f->last_portal, sizeof(f->last_portal), "%s",
             info && info->portal ? info->portal : "");
    f->last_executes = info ? info->executes : 0;
    f->last_nparams = info ? info->nparams : 0;
    struct stmt_audit v;
    stmt_audit_view(st, o, &v);
    snprintf(f->audit_outcome, sizeof(f->audit_outcome), "%s", v.outcome);
    snprintf(f->audit_rule, sizeof(f->audit_rule), "%s", v.rule ? v.rule : "");
    snprintf(f->audit_shadow, sizeof(f->audit_shadow), "%s", v.shadow_rule ? v.shadow_rule : "");
    f->last.sql = NULL;
    f->last.rule = NULL;
}

static inline void fake_setting(void *ctx, const char *name, const char *value)
{
    struct fake *f = ctx;
    f->settings++;
    snprintf(f->last_setting, sizeof(f->last_setting), "%s=%s", name, value);
}

static inline struct fake *fake_new(void)
{
    struct fake *f = calloc(1, sizeof(*f));
    if (!f)
        abort();
    config_defaults(&f->cfg);
    f->env = (struct relay_env){.to_client = fake_to_client,
                                .to_upstream = fake_to_upstream,
                                .to_upstream_input = fake_to_upstream,
                                .to_upstream_ref = fake_to_upstream_ref,
                                .upstream_busy = fake_upstream_busy,
                                .client_backlog = fake_client_backlog,
                                .upstream_backlog = fake_upstream_backlog,
                                .cancel = fake_cancel,
                                .cancel_pending = fake_cancel_pending,
                                .policy = fake_policy,
                                .refresh = fake_refresh,
                                .statement_done = fake_statement_done,
                                .setting = fake_setting};
    relay_init(&f->r, &f->env, f, 1, "test-client", &f->cfg);
    f->auto_client = true;
    f->cli_in = malloc(FAKE_CLI_CAP);
    f->up_cap = f->max_up_cap = f->up_base = FAKE_UP_BASE;
    f->up_in = malloc(f->up_cap);
    if (!f->cli_in || !f->up_in)
        abort();
    f->verdict.verdict = GUARD_ALLOW;
    snprintf(f->verdict.rule, sizeof(f->verdict.rule), "allow");
    return f;
}

static inline void fake_free(struct fake *f)
{
    if (!f)
        return;
    relay_release(&f->r);
    if (f->policy)
        guard_policy_free(f->policy);
    config_free(&f->cfg);
    fb_free(&f->cli_out);
    fb_free(&f->up_out);
    fb_free(&f->up_wire);
    free(f->cli_in);
    free(f->up_in);
    free(f);
}

/* Lets a compiled policy decide every statement from now on (a reload when one was set); the
 * fake owns it. */
static inline void fake_set_policy(struct fake *f, struct guard_policy *p)
{
    if (!p)
        abort();
    if (f->policy)
        guard_policy_free(f->policy);
    f->policy = p;
}

/* Drops the Query a statement ran from once it is over and written, or once a COPY's text is
 * kept by the relay (query_finished). */
static inline void fake_query_finished(struct fake *f)
{
    struct relay *r = &f->r;
    if (r->query_len && (!relay_busy(r) || r->sql_owned) && !f->ref_pending) {
        memmove(f->cli_in, f->cli_in + r->query_len, f->cli_len - r->query_len);
        f->cli_len -= r->query_len;
        r->query_len = 0;
    }
}

/* Handles the client's buffered messages while the relay takes them. */
static inline void fake_pump_client(struct fake *f)
{
    for (int i = 0; i < FAKE_PUMP_MAX; i++) {
        fake_query_finished(f);
        if (f->r.end != SE_NONE || f->cli_len == 0 || !fe_proto_ready(&f->r))
            return;
        size_t n = fe_proto_process(&f->r, f->cli_in, f->cli_len, &f->fe_need);
        if (n > f->cli_len)
            abort();
        if (n) {
            memmove(f->cli_in, f->cli_in + n, f->cli_len - n);
            f->cli_len -= n;
        }
        if (n == 0 && (f->r.query_len == 0 || relay_busy(&f->r)))
            return;
    }
    abort();
}

/* The client sends bytes; the relay handles what it can. */
static inline void fake_client(struct fake *f, const void *p, size_t n)
{
    if (f->cli_len + n > FAKE_CLI_CAP)
        abort();
    memcpy(f->cli_in + f->cli_len, p, n);
    f->cli_len += n;
    fake_pump_client(f);
}

static inline void fake_client_buf(struct fake *f, const struct fbuf *b)
{
    fake_client(f, b->p, b->len);
}

static inline void fake_query(struct fake *f, const char *sql)
{
    struct fbuf b = {0};
    fe_query(&b, sql);
    fake_client_buf(f, &b);
    fb_free(&b);
}

/* The upstream buffer grows like conn_reserve (doubling) and shrinks back like conn_shrink. */
static inline void fake_resize_up(struct fake *f)
{
    size_t cap = f->up_cap;
    if (f->be_need > cap) {
        while (cap < f->be_need)
            cap *= 2;
    } else if (!f->be_need && f->up_len <= f->up_base) {
        cap = f->up_base;
    }
    if (cap == f->up_cap)
        return;
    f->up_in = realloc(f->up_in, cap);
    if (!f->up_in)
        abort();
    f->up_cap = cap;
    if (cap > f->max_up_cap)
        f->max_up_cap = cap;
}

/* Reads what the upstream sent, as much as fits at a time, until nothing moves. */
static inline void fake_pump_upstream(struct fake *f)
{
    for (int i = 0; i < FAKE_PUMP_MAX; i++) {
        size_t room = f->up_cap - f->up_len;
        size_t k = f->up_wire.len < room ? f->up_wire.len : room;
        if (k) {
            memcpy(f->up_in + f->up_len, f->up_wire.p, k);
            fb_consume(&f->up_wire, k);
            f->up_len += k;
        }
        if (f->r.end != SE_NONE || f->up_len == 0)
            return;
        size_t used = be_proto_process(&f->r, f->up_in, f->up_len, f->up_cap, &f->be_need);
        if (used > f->up_len)
            abort();
        if (used) {
            memmove(f->up_in, f->up_in + used, f->up_len - used);
            f->up_len -= used;
        }
        if (f->r.end != SE_NONE)
            return;
        if (used == 0 && !f->be_need && f->up_len == f->up_cap)
            abort(); /* a full buffer the relay neither handles nor asks to grow: stalled */
        fake_resize_up(f);
        if (f->auto_client)
            fake_pump_client(f);
        if (k == 0 && used == 0 && !(f->be_need && f->up_wire.len))
            return;
    }
    abort();
}

/* Gives the upstream receive buffer another idle size (at least PEEK_BYTES + 5 of be_proto.c:
 * a large ErrorResponse is decided on its first 2048 bytes). */
static inline void fake_set_up_base(struct fake *f, size_t base)
{
    f->up_base = base;
    fake_resize_up(f);
}

static inline void fake_upstream(struct fake *f, const void *p, size_t n)
{
    fb_put(&f->up_wire, p, n);
    fake_pump_upstream(f);
}

static inline void fake_upstream_buf(struct fake *f, const struct fbuf *b)
{
    fake_upstream(f, b->p, b->len);
}

/* The types of the messages the client received, as a string ("TDCZ"); "!" when its bytes are
 * not whole messages. */
static inline const char *fake_types(struct fake *f)
{
    struct fmsg m[FAKE_MAX_TYPES];
    int n = fmsg_split(f->cli_out.p, f->cli_out.len, m, FAKE_MAX_TYPES);
    if (n < 0 || n > FAKE_MAX_TYPES)
        return "!";
    for (int i = 0; i < n; i++)
        f->types[i] = m[i].type;
    f->types[n] = 0;
    return f->types;
}

/* The i-th message the client received (type 0 when there is none); negative i counts from
 * the end. */
static inline struct fmsg fake_msg(const struct fake *f, int i)
{
    static struct fmsg m[FAKE_MAX_TYPES];
    int n = fmsg_split(f->cli_out.p, f->cli_out.len, m, FAKE_MAX_TYPES);
    if (i < 0)
        i += n;
    if (n < 0 || i < 0 || i >= n || i >= FAKE_MAX_TYPES)
        return (struct fmsg){0};
    return m[i];
}

/* The i-th message the upstream received. */
static inline struct fmsg fake_up_msg(const struct fake *f, int i)
{
    static struct fmsg m[FAKE_MAX_TYPES];
    int n = fmsg_split(f->up_out.p, f->up_out.len, m, FAKE_MAX_TYPES);
    if (i < 0)
        i += n;
    if (n < 0 || i < 0 || i >= n || i >= FAKE_MAX_TYPES)
        return (struct fmsg){0};
    return m[i];
}

static inline int fake_up_count(const struct fake *f)
{
    return fmsg_split(f->up_out.p, f->up_out.len, NULL, 0);
}

/* Forgets what was recorded so far; the relay's state is kept. */
static inline void fake_reset_out(struct fake *f)
{
    f->cli_out.len = f->up_out.len = 0;
    f->done = f->cancels = f->refs = f->policy_calls = f->refreshes = f->settings = 0;
}

/* The upstream answers the running statement with n rows and ReadyForQuery(status). */
static inline void fake_reply_select(struct fake *f, int n, char status)
{
    struct fbuf b = {0};
    up_select(&b, n);
    up_ready(&b, status);
    fake_upstream_buf(f, &b);
    fb_free(&b);
}

/* Opens a transaction block upstream (BEGIN and its answer), then forgets the output. */
static inline void fake_in_block(struct fake *f)
{
    struct fbuf b = {0};
    fake_query(f, "BEGIN");
    up_complete(&b, "BEGIN");
    up_ready(&b, 'T');
    fake_upstream_buf(f, &b);
    fb_free(&b);
    if (f->r.tx != 'T' || f->r.st != RS_IDLE)
        abort();
    fake_reset_out(f);
}

/* The upstream's answer to the proxy's poison statement: its error, then ReadyForQuery('E'). */
static inline void fake_reply_poison(struct fake *f)
{
    struct fbuf b = {0};
    up_error(&b, "ERROR", "P0001", "pgwire-proxy: transaction aborted after a guardrail error");
    up_ready(&b, 'E');
    fake_upstream_buf(f, &b);
    fb_free(&b);
}

/* True when the last message the upstream received is the proxy's poison statement. */
static inline bool fake_poison_sent(const struct fake *f)
{
    struct fmsg m = fake_up_msg(f, -1);
    return m.type == 'Q' && strncmp(fmsg_str(&m), "DO $pgwire_proxy$", 17) == 0;
}

/* --extended-protocol allow / --copy allow, as session_relay.c sets them at the start */
static inline void fake_allow_extended(struct fake *f)
{
    f->cfg.extended_protocol = CONFIG_ALLOW;
    f->r.ext_allowed = true;
}

static inline void fake_allow_copy(struct fake *f)
{
    f->cfg.copy = CONFIG_ALLOW;
    f->r.copy_allowed = true;
}

/* scripted verdicts */
static inline void fake_verdict(struct fake *f, enum guard_verdict v, const char *rule,
                                const char *message, int cursorpos)
{
    f->verdict.verdict = v;
    snprintf(f->verdict.rule, sizeof(f->verdict.rule), "%s", rule);
    snprintf(f->verdict.message, sizeof(f->verdict.message), "%s", message);
    f->verdict.cursorpos = cursorpos;
}

/* An allow that the shadow rules would have refused by rule (guard_decision.shadow_rule). */
static inline void fake_shadow_verdict(struct fake *f, const char *rule)
{
    fake_verdict(f, GUARD_ALLOW, "allow", "", 0);
    snprintf(f->verdict.shadow_rule, sizeof(f->verdict.shadow_rule), "%s", rule);
}

#endif
