/* A scripted environment for the relay's protocol handlers, with no sockets: what they send
 * to the client and to the upstream is recorded, the policy's verdict is set by the test, and
 * the two receive buffers are driven the way session_relay.c drives them (handled bytes are
 * dropped, a forwarded Query stays at the front of the client buffer until its ReadyForQuery,
 * the upstream buffer reads what fits, grows to `need` and shrinks back). Shared by the unit
 * tests and the fuzz target, so it uses no test framework: misuse aborts. */
#ifndef PGWP_TEST_RELAY_FAKE_H
#define PGWP_TEST_RELAY_FAKE_H

#include "config.h"
#include "relay.h"
#include "wire.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAKE_UP_BASE   (64 * 1024)  /* the session's upstream buffer */
#define FAKE_CLI_CAP   (512 * 1024) /* fixed: a kept Query must not move */
#define FAKE_PUMP_MAX  100000       /* bound on handler calls per pump */
#define FAKE_MAX_TYPES 4096

/* ---------- byte buffers and message builders ---------- */

struct fbuf {
    uint8_t *p;
    size_t len, cap;
};

static inline void fb_put(struct fbuf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p)
            abort();
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

static inline void fb_free(struct fbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

static inline void fb_consume(struct fbuf *b, size_t n)
{
    if (n > b->len)
        abort();
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}

static inline void fb_u8(struct fbuf *b, uint8_t v)
{
    fb_put(b, &v, 1);
}

static inline void fb_u16(struct fbuf *b, uint16_t v)
{
    uint8_t t[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    fb_put(b, t, 2);
}

static inline void fb_u32(struct fbuf *b, uint32_t v)
{
    uint8_t t[4];
    wire_put_u32(t, v);
    fb_put(b, t, 4);
}

static inline void fb_str(struct fbuf *b, const char *s)
{
    fb_put(b, s, strlen(s) + 1);
}

static inline void fb_fill(struct fbuf *b, char c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fb_u8(b, (uint8_t)c);
}

/* A typed message is opened with its type and a length word that fb_end() patches. */
static inline size_t fb_begin(struct fbuf *b, char type)
{
    size_t at = b->len;
    fb_u8(b, (uint8_t)type);
    fb_u32(b, 0);
    return at;
}

static inline void fb_end(struct fbuf *b, size_t at)
{
    wire_put_u32(b->p + at + 1, (uint32_t)(b->len - at - 1));
}

static inline void fb_msg(struct fbuf *b, char type, const void *body, size_t n)
{
    size_t at = fb_begin(b, type);
    fb_put(b, body, n);
    fb_end(b, at);
}

/* upstream messages */
static inline void up_rowdesc(struct fbuf *b, const char *col)
{
    size_t at = fb_begin(b, 'T');
    fb_u16(b, 1);
    fb_str(b, col);
    fb_u32(b, 0);
    fb_u16(b, 0);
    fb_u32(b, 25); /* text */
    fb_u16(b, (uint16_t)-1);
    fb_u32(b, (uint32_t)-1);
    fb_u16(b, 0);
    fb_end(b, at);
}

static inline void up_row(struct fbuf *b, const char *val)
{
    size_t at = fb_begin(b, 'D');
    fb_u16(b, 1);
    fb_u32(b, (uint32_t)strlen(val));
    fb_put(b, val, strlen(val));
    fb_end(b, at);
}

/* A one-column DataRow of exactly `total` bytes on the wire (total >= 11). */
static inline void up_row_sized(struct fbuf *b, size_t total)
{
    size_t at = fb_begin(b, 'D');
    fb_u16(b, 1);
    fb_u32(b, (uint32_t)(total - 11));
    fb_fill(b, 'r', total - 11);
    fb_end(b, at);
}

static inline void up_rows(struct fbuf *b, int n)
{
    for (int i = 0; i < n; i++)
        up_row(b, "v");
}

static inline void up_complete(struct fbuf *b, const char *tag)
{
    size_t at = fb_begin(b, 'C');
    fb_str(b, tag);
    fb_end(b, at);
}

/* ErrorResponse ('E') or NoticeResponse ('N'); pad > 0 lengthens the message text by pad bytes. */
static inline void up_report(struct fbuf *b, char type, const char *sev, const char *code,
                             const char *msg, size_t pad)
{
    size_t at = fb_begin(b, type);
    fb_u8(b, 'S');
    fb_str(b, sev);
    fb_u8(b, 'V');
    fb_str(b, sev);
    fb_u8(b, 'C');
    fb_str(b, code);
    fb_u8(b, 'M');
    fb_put(b, msg, strlen(msg));
    fb_fill(b, 'm', pad);
    fb_u8(b, 0);
    fb_u8(b, 0);
    fb_end(b, at);
}

static inline void up_error(struct fbuf *b, const char *sev, const char *code, const char *msg)
{
    up_report(b, 'E', sev, code, msg, 0);
}

static inline void up_notice(struct fbuf *b, const char *msg)
{
    up_report(b, 'N', "NOTICE", "00000", msg, 0);
}

static inline void up_notify(struct fbuf *b, uint32_t pid, const char *channel, const char *payload)
{
    size_t at = fb_begin(b, 'A');
    fb_u32(b, pid);
    fb_str(b, channel);
    fb_str(b, payload);
    fb_end(b, at);
}

static inline void up_param(struct fbuf *b, const char *name, const char *value)
{
    size_t at = fb_begin(b, 'S');
    fb_str(b, name);
    fb_str(b, value);
    fb_end(b, at);
}

static inline void up_ready(struct fbuf *b, char status)
{
    fb_msg(b, 'Z', &status, 1);
}

/* CopyInResponse ('G') / CopyOutResponse ('H'): text format, one column */
static inline void up_copy(struct fbuf *b, char type)
{
    size_t at = fb_begin(b, type);
    fb_u8(b, 0);
    fb_u16(b, 1);
    fb_u16(b, 0);
    fb_end(b, at);
}

/* One SELECT's reply: RowDescription, n rows, CommandComplete */
static inline void up_select(struct fbuf *b, int n)
{
    char tag[32];
    up_rowdesc(b, "c");
    up_rows(b, n);
    snprintf(tag, sizeof(tag), "SELECT %d", n);
    up_complete(b, tag);
}

/* client messages */
static inline void fe_query(struct fbuf *b, const char *sql)
{
    size_t at = fb_begin(b, 'Q');
    fb_str(b, sql);
    fb_end(b, at);
}

static inline void fe_empty(struct fbuf *b, char type)
{
    fb_msg(b, type, NULL, 0);
}

/* ---------- reading recorded streams ---------- */

struct fmsg {
    char type;
    const uint8_t *body;
    size_t len;
};

/* Splits a stream into whole messages (at most max); returns how many, or -1 when the bytes
 * are not a sequence of whole messages. */
static inline int fmsg_split(const uint8_t *p, size_t n, struct fmsg *m, int max)
{
    size_t pos = 0;
    int k = 0;
    while (pos < n) {
        if (n - pos < 5)
            return -1;
        uint32_t len = wire_get_u32(p + pos + 1);
        if (len < 4 || len - 4 > n - pos - 5)
            return -1;
        if (m && k < max)
            m[k] = (struct fmsg){(char)p[pos], p + pos + 5, len - 4};
        k++;
        pos += 1 + (size_t)len;
    }
    return k;
}

/* A field of an ErrorResponse/NoticeResponse body ("" when absent). Points into the body. */
static inline const char *fmsg_field(const struct fmsg *m, char field)
{
    size_t pos = 0;
    while (pos < m->len && m->body[pos] != 0) {
        char t = (char)m->body[pos++];
        const uint8_t *nul = memchr(m->body + pos, 0, m->len - pos);
        if (!nul)
            return "";
        if (t == field)
            return (const char *)m->body + pos;
        pos = (size_t)(nul - m->body) + 1;
    }
    return "";
}

/* The string a CommandComplete/Query body holds ("" unless NUL-terminated). */
static inline const char *fmsg_str(const struct fmsg *m)
{
    return m->len && m->body[m->len - 1] == 0 ? (const char *)m->body : "";
}

/* ---------- the fake environment ---------- */

struct fake {
    struct relay r;
    struct config cfg;
    struct relay_env env;
    bool auto_client; /* handle client input after each upstream read, as the session does */

    struct fbuf cli_out, up_out; /* what the handlers sent */
    uint8_t *cli_in;             /* the client's receive buffer (FAKE_CLI_CAP bytes) */
    size_t cli_len;
    struct fbuf up_wire; /* upstream bytes not read yet */
    uint8_t *up_in;      /* the upstream's receive buffer */
    size_t up_len, up_cap;
    size_t fe_need, be_need, max_up_cap;

    /* scripted behaviour */
    int policy_rc; /* 0 decided, 1 pending, -1 out of memory */
    struct guard_decision verdict;
    bool reload_read_only; /* the next refresh turns --read-only on, like a reload */
    bool cancel_is_pending, ref_pending, fail_client;
    size_t backlog;

    /* what happened */
    int policy_calls, refreshes, cancels, refs, settings, done;
    const uint8_t *last_ref;
    size_t last_ref_len;
    enum stmt_outcome outcome;
    struct stmt last; /* the statement as statement_done saw it (pointers not kept) */
    char last_sql[256], last_rule[96];
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
    fb_put(&f->up_out, p, n);
    return 0;
}

static inline int fake_to_upstream_ref(void *ctx, const void *p, size_t n)
{
    struct fake *f = ctx;
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

static inline void fake_statement_done(void *ctx, const struct stmt *st, enum stmt_outcome o,
                                       uint64_t us)
{
    struct fake *f = ctx;
    (void)us;
    if (st != &f->r.stmt || st->active || !st->sql)
        abort(); /* one end per begun statement, after it stopped */
    f->done++;
    f->outcome = o;
    f->last = *st;
    snprintf(f->last_sql, sizeof(f->last_sql), "%.*s", (int)st->sql_len, st->sql);
    snprintf(f->last_rule, sizeof(f->last_rule), "%s", st->rule ? st->rule : "");
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
                                .to_upstream_ref = fake_to_upstream_ref,
                                .upstream_busy = fake_upstream_busy,
                                .client_backlog = fake_client_backlog,
                                .cancel = fake_cancel,
                                .cancel_pending = fake_cancel_pending,
                                .policy = fake_policy,
                                .refresh = fake_refresh,
                                .statement_done = fake_statement_done,
                                .setting = fake_setting};
    relay_init(&f->r, &f->env, f, 1, "test-client", &f->cfg);
    f->auto_client = true;
    f->cli_in = malloc(FAKE_CLI_CAP);
    f->up_cap = f->max_up_cap = FAKE_UP_BASE;
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
    fb_free(&f->cli_out);
    fb_free(&f->up_out);
    fb_free(&f->up_wire);
    free(f->cli_in);
    free(f->up_in);
    free(f);
}

/* Drops the Query a statement ran from once it is over and written (query_finished). */
static inline void fake_query_finished(struct fake *f)
{
    struct relay *r = &f->r;
    if (r->query_len && !relay_busy(r) && !f->ref_pending) {
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
        memmove(f->cli_in, f->cli_in + n, f->cli_len - n);
        f->cli_len -= n;
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
    } else if (!f->be_need && f->up_len <= FAKE_UP_BASE) {
        cap = FAKE_UP_BASE;
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
        memcpy(f->up_in + f->up_len, f->up_wire.p, k);
        fb_consume(&f->up_wire, k);
        f->up_len += k;
        if (f->r.end != SE_NONE || f->up_len == 0)
            return;
        size_t used = be_proto_process(&f->r, f->up_in, f->up_len, f->up_cap, &f->be_need);
        if (used > f->up_len)
            abort();
        memmove(f->up_in, f->up_in + used, f->up_len - used);
        f->up_len -= used;
        if (f->r.end != SE_NONE)
            return;
        fake_resize_up(f);
        if (f->auto_client)
            fake_pump_client(f);
        if (k == 0 && used == 0 && !f->be_need)
            return;
    }
    abort();
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

/* scripted verdicts */
static inline void fake_verdict(struct fake *f, enum guard_verdict v, const char *rule,
                                const char *message, int cursorpos)
{
    f->verdict.verdict = v;
    snprintf(f->verdict.rule, sizeof(f->verdict.rule), "%s", rule);
    snprintf(f->verdict.message, sizeof(f->verdict.message), "%s", message);
    f->verdict.cursorpos = cursorpos;
}

#endif
