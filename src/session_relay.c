/* The relay's environment for a live session: its two connections, its cancel, its policy and
 * audit, and one turn of reading both sides while neither pushes back. */
#include "audit.h"
#include "config.h"
#include "guard.h"
#include "log.h"
#include "session_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define READS_PER_TURN 16 /* reads per socket per turn: one busy session cannot pin a loop */

static int to_client(void *ctx, const void *p, size_t n)
{
    struct session *s = ctx;
    if (!s->cli_open)
        return 0; /* the client left: what is still produced for it goes nowhere */
    return conn_send(&s->cli, p, n);
}

static int to_upstream(void *ctx, const void *p, size_t n)
{
    struct session *s = ctx;
    return conn_send(&s->up, p, n);
}

/* The messages of one client read that go on unchanged leave in one write (conn_send_span):
 * process_client() uncorks before it lets go of the input. */
static int to_upstream_input(void *ctx, const void *p, size_t n)
{
    struct session *s = ctx;
    return conn_send_span(&s->up, p, n);
}

static int to_upstream_ref(void *ctx, const void *p, size_t n)
{
    struct session *s = ctx;
    return conn_send_ref(&s->up, p, n);
}

static bool upstream_busy(void *ctx)
{
    struct session *s = ctx;
    return conn_ref_pending(&s->up);
}

static size_t client_backlog(void *ctx)
{
    struct session *s = ctx;
    return conn_send_backlog(&s->cli);
}

static size_t upstream_backlog(void *ctx)
{
    struct session *s = ctx;
    return conn_send_backlog(&s->up);
}

static void cancel(void *ctx)
{
    session_cancel_upstream(ctx);
}

static bool cancel_pending(void *ctx)
{
    return session_cancel_pending(ctx);
}

static int policy(void *ctx, const char *sql, size_t len, struct guard_decision *d)
{
    return session_policy_decide(ctx, sql, len, d);
}

/* Picks up a configuration reloaded by SIGHUP: limits and policy (the user's profile in the
 * new generation) apply from the next statement; a reload that turned --read-only on reaches
 * the upstream before it. The upstream DSN and the per-user ceiling stay what the session
 * started with. */
static void refresh(void *ctx)
{
    struct session *s = ctx;
    if (runtimes_gen(s->env->runtimes) == s->rt_gen)
        return;
    struct runtime *rt = runtimes_acquire(s->env->runtimes);
    bool was_read_only = s->cfg->read_only;
    runtime_release(s->rt);
    s->rt = rt;
    s->prof = runtime_profile(rt, s->user);
    s->cfg = s->prof->cfg;
    s->rt_gen = rt->gen;
    s->relay.cfg = s->cfg;
    s->relay.gen = rt->gen;
    if (!was_read_only && s->cfg->read_only)
        s->relay.read_only_pending = true;
    if (!s->cfg->policy_cache) {
        guard_cache_free(s->gcache);
        s->gcache = NULL;
    }
    session_policy_cache(s);
}

/* A record a full audit queue refused, with its own copies of what it points to: the
 * session holds its next statement until the writer has room (it wakes the loop). */
struct audit_wait {
    struct audit_record rec;
    char *sql; /* one allocation: the text, the names and the parameters */
    char sqlstate[6], upstream_sqlstate[6], rule[96], shadow_rule[96];
};

static size_t str_size(const char *p)
{
    return p ? strlen(p) + 1 : 0;
}

/* Copies what the record points to into one allocation. */
static char *copy_pointees(struct audit_record *r)
{
    size_t n = r->sql_len + 1 + str_size(r->portal) + str_size(r->statement_name) +
               r->nparams * sizeof(struct audit_param);
    for (size_t i = 0; i < r->nparams; i++)
        n += r->params[i].len;
    char *buf = malloc(n), *p = buf;
    if (!buf)
        return NULL;
    struct audit_param *params = (struct audit_param *)p;
    p += r->nparams * sizeof(struct audit_param);
    for (size_t i = 0; i < r->nparams; i++) {
        params[i] = r->params[i];
        params[i].text = memcpy(p, r->params[i].text, r->params[i].len);
        p += r->params[i].len;
    }
    r->params = r->nparams ? params : NULL;
    r->sql = memcpy(p, r->sql, r->sql_len);
    p += r->sql_len;
    *p++ = 0;
    if (r->portal)
        r->portal = strcpy(p, r->portal), p += strlen(p) + 1;
    if (r->statement_name)
        r->statement_name = strcpy(p, r->statement_name);
    return buf;
}

static void keep_record(struct session *s, const struct audit_record *r)
{
    struct audit_wait *w = calloc(1, sizeof(*w));
    if (w) {
        w->rec = *r;
        w->sql = copy_pointees(&w->rec);
    }
    if (!w || !w->sql) {
        free(w);
        LOG_ERROR(s->id, "audit_record_lost", "out of memory keeping an audit record");
        return;
    }
    if (r->sqlstate)
        w->rec.sqlstate = memcpy(w->sqlstate, r->sqlstate, 6);
    if (r->upstream_sqlstate)
        w->rec.upstream_sqlstate = memcpy(w->upstream_sqlstate, r->upstream_sqlstate, 6);
    if (r->rule)
        w->rec.rule = strncpy(w->rule, r->rule, sizeof(w->rule) - 1);
    if (r->shadow_rule) /* the statement's own buffer: the next statement reuses it */
        w->rec.shadow_rule = strncpy(w->shadow_rule, r->shadow_rule, sizeof(w->shadow_rule) - 1);
    s->audit_wait = w;
}

static void free_wait(struct session *s)
{
    free(s->audit_wait->sql);
    free(s->audit_wait);
    s->audit_wait = NULL;
}

/* True while a refused record still waits. */
bool session_audit_waiting(struct session *s)
{
    if (!s->audit_wait)
        return false;
    int rc = audit_submit(s->rt->audit, &s->audit_wait->rec, loop_wake_fd(s->loop));
    if (rc == 0) {
        free_wait(s);
        return false;
    }
    if (rc == -EAGAIN)
        loop_wait_wake(s->loop, &s->waiter);
    else
        session_schedule(s); /* out of memory: no wake-up is registered, try next turn */
    return true;
}

void session_audit_final(struct session *s)
{
    if (s->audit_wait) {
        audit_submit_final(s->rt->audit, &s->audit_wait->rec);
        free_wait(s);
    }
}

static void statement_done(void *ctx, const struct stmt *st, enum stmt_outcome o, uint64_t us,
                           const struct relay_run_info *info)
{
    struct session *s = ctx;
    bool client_left =
        s->end == SE_CLIENT_EOF || s->end == SE_CLIENT_ERROR || s->end == SE_CLIENT_STALLED;
    if (!s->cli_open && client_left)
        o = STMT_CLIENT_GONE; /* whatever the upstream made of it, nobody saw the result */
    session_stats_statement(s, st, o, us);
    if (!s->rt->audit || !st->sql)
        return;
    struct stmt_audit view;
    stmt_audit_view(st, o, &view);
    struct audit_record r = {.session_id = s->id,
                             .client_addr = s->addr,
                             .user = s->user,
                             .auth = s->auth_method,
                             .cert_subject = s->cert_subject[0] ? s->cert_subject : NULL,
                             .database = s->database,
                             .application = s->app,
                             .sql = st->sql,
                             .sql_len = st->sql_len,
                             .duration_us = us,
                             .rows = st->rows,
                             .bytes = st->bytes,
                             .outcome = view.outcome,
                             .sqlstate = st->sqlstate[0] ? st->sqlstate : NULL,
                             .rule = view.rule,
                             .shadow_rule = view.shadow_rule,
                             .upstream_sqlstate =
                                 st->upstream_sqlstate[0] ? st->upstream_sqlstate : NULL,
                             .upstream_status = stmt_upstream_name(st->upstream),
                             .protocol = info       ? info->protocol
                                         : st->copy ? "copy"
                                                    : "simple",
                             .portal = info ? info->portal : NULL,
                             .statement_name = info ? info->statement_name : NULL,
                             .executes = info ? info->executes : 0};
    if (info && info->params) {
        r.params = info->params;
        r.nparams = info->nparams;
    }
    if (s->audit_wait) {
        /* one record already waits: this one must not overtake it */
        audit_submit_final(s->rt->audit, &r);
        return;
    }
    int rc = audit_submit(s->rt->audit, &r, loop_wake_fd(s->loop));
    if (rc == -EAGAIN || rc == -ENOMEM) {
        keep_record(s, &r);
        if (rc == -EAGAIN)
            loop_wait_wake(s->loop, &s->waiter);
        else
            session_schedule(s);
    }
}

static const struct relay_env session_relay_env = {
    .to_client = to_client,
    .to_upstream = to_upstream,
    .to_upstream_ref = to_upstream_ref,
    .to_upstream_input = to_upstream_input,
    .upstream_busy = upstream_busy,
    .client_backlog = client_backlog,
    .upstream_backlog = upstream_backlog,
    .cancel = cancel,
    .cancel_pending = cancel_pending,
    .policy = policy,
    .refresh = refresh,
    .statement_done = statement_done,
};

int session_relay_begin(struct session *s)
{
    relay_init(&s->relay, &session_relay_env, s, s->id, s->addr, s->cfg);
    s->relay.gen = s->rt_gen;
    s->relay.ext_allowed = s->cfg->extended_protocol == CONFIG_ALLOW;
    s->relay.copy_allowed = s->cfg->copy == CONFIG_ALLOW;
    s->relay.audit_params = s->rt->audit && !s->cfg->audit_redact;
    if (conn_reserve(&s->up, SESSION_UPSTREAM_BUF) || conn_reserve(&s->cli, SESSION_CLIENT_BUF))
        return -1;
    session_policy_cache(s);
    return 0;
}

enum session_end session_conn_end(const struct session *s)
{
    const struct conn *sides[2] = {&s->cli, &s->up};
    for (int i = 0; i < 2; i++) {
        const struct conn *c = sides[i];
        if (c->err_dir == CONN_DIR_NONE)
            continue;
        if (c->err == -ENOMEM)
            return SE_INTERNAL;
        if (c->side == CONN_UPSTREAM)
            return SE_UPSTREAM_LOST;
        return c->err_dir == CONN_DIR_READ && c->err == 0 ? SE_CLIENT_EOF : SE_CLIENT_ERROR;
    }
    return SE_NONE;
}

static enum session_end upstream_lost(struct session *s)
{
    const struct conn *u = &s->up;
    if (!s->relay.fatal_forwarded)
        session_fatal(s, "08006",
                      "terminating connection because the upstream server closed the connection",
                      u->err == 0 ? "The upstream server closed the connection unexpectedly."
                                  : strerror(-u->err));
    LOG_WARN(s->id, "upstream_lost", "client=%s %s", s->addr,
             u->err == 0 ? "eof" : strerror(-u->err));
    return SE_UPSTREAM_LOST;
}

/* The end a handler asked for, or a failed side's. */
static enum session_end relay_end(struct session *s)
{
    enum session_end e = session_conn_end(s);
    if (e == SE_UPSTREAM_LOST)
        return upstream_lost(s);
    if (e != SE_NONE)
        return e;
    return s->relay.end;
}

/* Grows the client buffer to `need` bytes, within the bound on all clients' buffers. */
static enum session_end reserve_client(struct session *s, size_t need)
{
    int rc = conn_reserve(&s->cli, need);
    if (rc == -ENOBUFS) {
        LOG_WARN(s->id, "client_memory_exceeded", "client=%s message of %zu bytes", s->addr, need);
        session_fatal(s, "53200", "out of memory: the proxy's buffers for client messages are full",
                      "rule: max-client-memory (pgwire-proxy --max-client-memory)");
        return SE_GUARDRAIL;
    }
    return rc ? SE_INTERNAL : SE_NONE;
}

/* Handles the client's complete messages. An incomplete one's size is remembered: the buffer
 * grows towards it as its bytes arrive, so memory follows what a client sent, not what it
 * announced. */
static enum session_end process_client(struct session *s)
{
    conn_cork(&s->up);
    size_t n = fe_proto_process(&s->relay, s->cli.rbuf, s->cli.rlen, &s->cli_need);
    conn_uncork(&s->up); /* before the input it may point into moves; failures are in err_dir */
    conn_consume(&s->cli, n);
    if (s->relay.end != SE_NONE || s->cli.err_dir || s->up.err_dir)
        return relay_end(s);
    return SE_NONE;
}

/* A full buffer: doubled, but never past the message it holds. */
static enum session_end grow_client(struct session *s)
{
    size_t want = s->cli.rcap * 2;
    if (s->cli_need > s->cli.rcap && s->cli_need < want)
        want = s->cli_need;
    return reserve_client(s, want);
}

/* Drops the Query a statement ran from, once it is over and written. */
static void query_finished(struct session *s)
{
    struct relay *r = &s->relay;
    /* a COPY's text is kept by the relay: the buffer must take the data that follows */
    if (r->query_len && (!relay_busy(r) || r->sql_owned) && !conn_ref_pending(&s->up)) {
        conn_consume(&s->cli, r->query_len);
        r->query_len = 0;
        conn_shrink(&s->cli);
    }
}

/* Reads what the upstream has, while the client keeps up (nothing queued for it). */
static enum session_end read_upstream(struct session *s)
{
    for (int reads = 0; s->up.can_read && !conn_send_pending(&s->cli); reads++) {
        if (reads == READS_PER_TURN) {
            session_schedule(s); /* the loop's other sessions run first */
            break;
        }
        ssize_t n = conn_read(&s->up);
        if (n == -EAGAIN)
            break;
        if (n <= 0)
            return upstream_lost(s);
        size_t need = 0;
        size_t used = be_proto_process(&s->relay, s->up.rbuf, s->up.rlen, s->up.rcap, &need);
        conn_consume(&s->up, used);
        if (s->relay.end != SE_NONE || s->cli.err_dir)
            return relay_end(s);
        if (need && conn_reserve(&s->up, need))
            return SE_INTERNAL;
        if (!need)
            conn_shrink(&s->up);
        query_finished(s);
        if (conn_flush(&s->cli))
            return relay_end(s);
    }
    return SE_NONE;
}

static enum session_end read_client(struct session *s)
{
    for (int reads = 0; s->cli.can_read && fe_proto_ready(&s->relay) && !s->audit_wait; reads++) {
        if (reads == READS_PER_TURN) {
            session_schedule(s);
            break;
        }
        if (s->cli.rlen == s->cli.rcap) {
            enum session_end e = process_client(s);
            if (e == SE_NONE && s->cli.rlen == s->cli.rcap)
                e = grow_client(s);
            if (e != SE_NONE)
                return e;
        }
        ssize_t n = conn_read(&s->cli);
        if (n == -EAGAIN)
            break;
        if (n <= 0)
            return relay_end(s);
        enum session_end e = process_client(s);
        if (e != SE_NONE)
            return e;
    }
    return SE_NONE;
}

enum session_end session_relay_turn(struct session *s)
{
    struct relay *r = &s->relay;
    for (int round = 0; round < 64; round++) {
        if (conn_flush(&s->cli) || conn_flush(&s->up))
            return relay_end(s);
        size_t before_u = s->up.rlen, before_c = s->cli.rlen;
        size_t before_o = conn_send_backlog(&s->cli);
        if (s->parse)
            session_policy_poll(s); /* a decision from the parser pool */
        bool in_u = s->up.can_read, in_c = s->cli.can_read;
        enum relay_state before_st = r->st;
        enum session_end e = read_upstream(s);
        if (e != SE_NONE)
            return e;
        query_finished(s);
        if (session_audit_waiting(s))
            break; /* its next statement waits for room in the audit queue */
        if (s->cli.rlen > 0 && fe_proto_ready(r)) {
            e = process_client(s);
            if (e != SE_NONE)
                return e;
        }
        e = read_client(s);
        if (e != SE_NONE)
            return e;
        if (s->cli.peer_closed && relay_busy(r))
            return SE_CLIENT_EOF; /* gone while its statement runs: stop it upstream */
        bool progressed = s->up.rlen != before_u || s->cli.rlen != before_c ||
                          s->up.can_read != in_u || s->cli.can_read != in_c || r->st != before_st ||
                          conn_send_backlog(&s->cli) != before_o;
        if (!progressed)
            break;
    }
    if (conn_flush(&s->cli) || conn_flush(&s->up))
        return relay_end(s);
    return SE_NONE;
}
