/* libFuzzer target for the relay's protocol handlers (fe_proto.c, fe_ext.c, be_proto.c,
 * be_ext.c), driven through the unit tests' fake environment the way the session drives them.
 *
 * Input: four knob bytes, then steps.
 *   [0] flags: 1 read-only, 2 small --max-rows, 4 small --max-bytes, 8 --on-limit truncate,
 *       0x30 upstream buffer size (64 kB, 4 kB, 2.5 kB, 8 kB), 0x40 small --max-message-size,
 *       0x80 no query timeout
 *   [1] low 3 bits: --max-rows - 1; the rest: --max-bytes in steps of 24 bytes
 *   [2] policy verdicts, two bits per call (allow, deny, syntax error, pending), cycling
 *   [3] flags: 1 --extended-protocol allow, 2 --copy allow, 4 a deny verdict is the policy's
 *       COPY verdict instead (what the policy says under --copy reject), 8 an allow verdict
 *       carries a shadow rule, 16 --on-limit warn
 *   step byte h: h >> 6 == 0: client bytes (h & 63 of them); 1: upstream bytes (h & 63);
 *   2: upstream bytes ((h & 63) << 8 | next byte); 3: event h & 7: query timeout due, a policy
 *   decision arrives (allowed when h & 8; taken only while a message waits for one), cancel
 *   pending on/off, a reload turns --read-only on, client backlog on/off, client writes fail
 *   from now on, upstream writes fail from now on, client input handled.
 *
 * Each input runs twice, upstream bytes handed over whole and one byte at a time; both runs
 * must give the client and the upstream the same bytes. Invariants are checked after every
 * step and at every statement's end (a shadow rule or a passed budget is recorded only when
 * the knobs allow one; warn mode never limits); a break aborts. */
#include "../unit/relay_fake.h"

#include "log.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

#define MAX_STEPS       4096
#define PEEK_BODY_BYTES (2048 - 5) /* be_proto.c decides a large ErrorResponse on these */

enum step_kind { STEP_CLIENT, STEP_UPSTREAM, STEP_EVENT };

struct step {
    enum step_kind kind;
    const uint8_t *p;
    size_t n;
    uint8_t event;
};

#define KNOB_EXTENDED     1
#define KNOB_COPY         2
#define KNOB_COPY_VERDICT 4
#define KNOB_SHADOW       8
#define KNOB_WARN         16
#define SHADOW_RULE       "deny:truncate"

struct plan {
    uint8_t flags, limits, verdicts, protocols;
    struct step steps[MAX_STEPS];
    size_t nsteps;
    struct fbuf upstream; /* every upstream step's bytes, in order */
};

struct harness {
    struct fake *f;
    const struct plan *plan;
    int calls;        /* policy calls so far */
    int allowed;      /* allow decisions handed to the relay */
    bool interleaved; /* a local answer went out while a streamed message was half forwarded */
};

static void parse_plan(const uint8_t *d, size_t n, struct plan *pl)
{
    pl->flags = d[0];
    pl->limits = d[1];
    pl->verdicts = d[2];
    pl->protocols = d[3];
    for (size_t pos = 4; pos < n && pl->nsteps < MAX_STEPS;) {
        uint8_t h = d[pos++];
        struct step *s = &pl->steps[pl->nsteps++];
        size_t len = h & 63;
        s->kind = h >> 6 == 0 ? STEP_CLIENT : h >> 6 == 3 ? STEP_EVENT : STEP_UPSTREAM;
        if (s->kind == STEP_EVENT) {
            s->event = h & 15;
            continue;
        }
        if (h >> 6 == 2 && pos < n)
            len = len << 8 | d[pos++];
        s->p = d + pos;
        s->n = len < n - pos ? len : n - pos;
        pos += s->n;
        if (s->kind == STEP_UPSTREAM)
            fb_put(&pl->upstream, s->p, s->n);
    }
}

static void verdict(int i, const struct plan *pl, struct guard_decision *d, bool *pending)
{
    int v = (pl->verdicts >> ((i % 4) * 2)) & 3;
    bool copy = v == 1 && (pl->protocols & KNOB_COPY_VERDICT);
    memset(d, 0, sizeof(*d));
    *pending = v == 3;
    d->verdict = copy ? GUARD_COPY : v == 1 ? GUARD_DENY : v == 2 ? GUARD_SYNTAX : GUARD_ALLOW;
    snprintf(d->rule, sizeof(d->rule),
             copy     ? "copy-protocol"
             : v == 1 ? "deny:drop"
             : v == 2 ? ""
                      : "allow");
    snprintf(d->message, sizeof(d->message), v == 2 ? "syntax error at end of input" : "denied");
    d->cursorpos = v == 2 ? i % 5 : 0;
    if (d->verdict == GUARD_ALLOW && (pl->protocols & KNOB_SHADOW))
        snprintf(d->shadow_rule, sizeof(d->shadow_rule), SHADOW_RULE);
}

/* Every statement's end, as the audit sees it. */
static void fuzz_statement_done(void *ctx, const struct stmt *st, enum stmt_outcome o, uint64_t us,
                                const struct relay_run_info *info)
{
    struct fake *f = ctx;
    const struct harness *h = f->user;
    bool warn = h->plan->protocols & KNOB_WARN;
    CHECK(!st->shadow_rule[0] ||
          ((h->plan->protocols & KNOB_SHADOW) && strcmp(st->shadow_rule, SHADOW_RULE) == 0));
    CHECK(!st->shadow_limit || warn);
    if (warn) /* a budget never acts: the statement is only recorded as past it */
        CHECK(!st->rule || (strcmp(st->rule, "max-rows") && strcmp(st->rule, "max-bytes")));
    fake_statement_done(ctx, st, o, us, info);
}

static int fuzz_policy(void *ctx, const char *sql, size_t len, struct guard_decision *d)
{
    struct fake *f = ctx;
    struct harness *h = f->user;
    CHECK(strlen(sql) == len);
    bool pending;
    verdict(h->calls++, h->plan, d, &pending);
    if (pending)
        return 1;
    h->allowed += d->verdict == GUARD_ALLOW;
    return 0;
}

static void configure(struct fake *f, const struct plan *pl)
{
    static const size_t caps[] = {64 * 1024, 4096, 2560, 8192};
    f->auto_client = false; /* client input is handled at client steps only: both runs agree */
    f->cfg.read_only = pl->flags & 1;
    f->cfg.max_rows = pl->flags & 2 ? 1 + (pl->limits & 7) : 10000;
    f->cfg.max_bytes = pl->flags & 4 ? 32 + (uint64_t)(pl->limits >> 3) * 24 : 100000000;
    f->cfg.on_limit = pl->protocols & KNOB_WARN ? CONFIG_ON_LIMIT_WARN
                      : pl->flags & 8           ? CONFIG_ON_LIMIT_TRUNCATE
                                                : CONFIG_ON_LIMIT_ERROR;
    f->cfg.max_message_bytes = pl->flags & 0x40 ? 256 : 64 * 1000 * 1000;
    f->cfg.query_timeout_ms = pl->flags & 0x80 ? 0 : 1000;
    fake_set_up_base(f, caps[(pl->flags >> 4) & 3]);
    if (pl->protocols & KNOB_EXTENDED)
        fake_allow_extended(f);
    if (pl->protocols & KNOB_COPY)
        fake_allow_copy(f);
}

/* Client input is about to be handled: a local answer now could land inside a streamed
 * upstream message the client is receiving. */
static void client_turn(struct harness *h)
{
    struct fake *f = h->f;
    if (f->r.pass_remaining && !f->r.pass_drop)
        h->interleaved = true;
    fake_pump_client(f);
}

static void run_event(struct harness *h, uint8_t ev)
{
    struct fake *f = h->f;
    switch (ev & 7) {
    case 0:
        relay_check_deadline(&f->r, INT64_MAX);
        break;
    case 1: {
        /* at any time: the relay takes it only while a message waits for one */
        struct guard_decision d = {.verdict = ev & 8 ? GUARD_ALLOW : GUARD_DENY};
        snprintf(d.rule, sizeof(d.rule), "deny:drop");
        if (d.verdict == GUARD_ALLOW && (h->plan->protocols & KNOB_SHADOW))
            snprintf(d.shadow_rule, sizeof(d.shadow_rule), SHADOW_RULE);
        bool waited = f->r.st == RS_POLICY && !f->r.decided, before = f->r.decided;
        fe_proto_decided(&f->r, &d);
        CHECK(f->r.decided == (waited || before)); /* ignored unless a message waits */
        h->allowed += waited && d.verdict == GUARD_ALLOW;
        client_turn(h);
        break;
    }
    case 2:
        f->cancel_is_pending = !f->cancel_is_pending;
        client_turn(h);
        break;
    case 3:
        if (!f->cfg.read_only)
            f->reload_read_only = true;
        break;
    case 4:
        f->backlog = f->backlog ? 0 : 64 * 1024 + 1;
        client_turn(h);
        break;
    case 5:
        f->fail_client = true;
        break;
    case 6:
        f->fail_upstream = true;
        break;
    default:
        client_turn(h);
        break;
    }
}

/* What holds after every step. */
static void check_state(const struct harness *h)
{
    const struct relay *r = &h->f->r;
    CHECK(r->tx == 'I' || r->tx == 'T' || r->tx == 'E');
    CHECK(h->f->refs <= h->allowed); /* nothing reaches the upstream unless allowed */
    if (r->end != SE_NONE)
        return;
    if ((r->st == RS_IDLE || r->st == RS_DISCARD) && r->internal == RI_NONE)
        CHECK(!r->stmt.active); /* an idle relay has ended its statement */
    if (r->st == RS_QUERY && r->internal == RI_NONE)
        CHECK(r->stmt.active || r->ab.active);
    if (r->stmt.active && r->stmt.budget.max_rows)
        CHECK(r->stmt.budget.rows <= r->stmt.budget.max_rows);
    if (r->stmt.active && r->stmt.budget.max_bytes)
        CHECK(r->stmt.budget.bytes <= r->stmt.budget.max_bytes);
    if (r->x) { /* every portal run in flight keeps to its own budget */
        for (size_t i = 0; i < r->x->fcount; i++) {
            const struct ext_entry *e = &r->x->fifo[(r->x->fhead + i) % r->x->fcap];
            const struct stmt_budget *b = e->run ? &e->run->st.budget : NULL;
            CHECK(!b || !b->max_rows || b->rows <= b->max_rows);
            CHECK(!b || !b->max_bytes || b->bytes <= b->max_bytes);
        }
        CHECK(r->x->nsync <= r->x->fcount && r->x->nexec <= r->x->fcount);
    }
}

static void run_step(struct harness *h, const struct step *s, bool bytewise)
{
    struct fake *f = h->f;
    switch (s->kind) {
    case STEP_CLIENT:
        if (f->cli_len + s->n > FAKE_CLI_CAP)
            return;
        memcpy(f->cli_in + f->cli_len, s->p, s->n);
        f->cli_len += s->n;
        client_turn(h);
        break;
    case STEP_UPSTREAM:
        if (!bytewise) {
            fake_upstream(f, s->p, s->n);
            break;
        }
        for (size_t i = 0; i < s->n; i++)
            fake_upstream(f, s->p + i, 1);
        break;
    case STEP_EVENT:
        run_event(h, s->event);
        break;
    }
    check_state(h);
}

/* The client stream is whole messages, the last one possibly still streaming (missing
 * exactly what is left of it). */
static void check_client_stream(const struct harness *h)
{
    const struct fake *f = h->f;
    const uint8_t *p = f->cli_out.p;
    size_t n = f->cli_out.len, pos = 0, missing = 0;
    while (pos < n) {
        CHECK(n - pos >= 5);
        uint32_t len = wire_get_u32(p + pos + 1);
        CHECK(len >= 4);
        if ((size_t)len + 1 > n - pos) {
            missing = (size_t)len + 1 - (n - pos);
            break;
        }
        pos += (size_t)len + 1;
    }
    /* client writes that fail drop what the relay goes on streaming */
    CHECK(missing == (f->r.pass_drop ? 0 : f->r.pass_remaining) || f->fail_client);
}

/* What may reach the upstream: Queries (the client's, by reference, and the proxy's own) and
 * CopyFail; the extended protocol's requests when it is allowed; anything the client sends in
 * a copy-in when COPY is allowed (it ends the COPY upstream, as in PostgreSQL). */
static bool upstream_type_ok(const struct fake *f, char type)
{
    if (type == 'Q' || type == 'f' || f->r.copy_allowed)
        return true;
    return f->r.ext_allowed && type && strchr("PBDECHS", type);
}

/* A client's text reaches the upstream only when the policy allowed it: Queries and Parses
 * other than the proxy's own failing one. */
static bool parse_is_the_proxys(const struct fmsg *m)
{
    const uint8_t *nul = memchr(m->body, 0, m->len);
    if (!nul)
        return false;
    size_t at = (size_t)(nul - m->body) + 1;
    return m->len - at > strlen(EXT_DENIED_NAME) &&
           strcmp((const char *)m->body + at, EXT_DENIED_NAME) == 0;
}

/* A session the relay ended for a protocol or guardrail reason got a FATAL as its last
 * message; the upstream got only what upstream_type_ok allows, and no text the policy did
 * not allow. */
static void check_end(const struct harness *h)
{
    const struct fake *f = h->f;
    enum session_end e = f->r.end;
    if (!h->interleaved)
        check_client_stream(h);
    /* (a failed upstream write ends it too: the session then sends its own 08006) */
    if (!h->interleaved && !f->fail_client && !f->fail_upstream &&
        (e == SE_PROTOCOL || e == SE_GUARDRAIL || e == SE_UPSTREAM_LOST)) {
        struct fmsg last = fake_msg(f, -1);
        CHECK(last.type == 'E' && strcmp(fmsg_field(&last, 'V'), "FATAL") == 0);
    }
    struct fmsg m[FAKE_MAX_TYPES];
    int k = fmsg_split(f->up_out.p, f->up_out.len, m, FAKE_MAX_TYPES);
    CHECK(k >= 0);
    int parses = 0;
    for (int i = 0; i < k && i < FAKE_MAX_TYPES; i++) {
        CHECK(upstream_type_ok(f, m[i].type));
        parses += m[i].type == 'P' && !f->r.copy_allowed && !parse_is_the_proxys(&m[i]);
    }
    CHECK(f->refs + parses <= h->allowed);
}

static struct fake *run(const struct plan *pl, bool bytewise)
{
    struct harness h = {.plan = pl};
    h.f = fake_new();
    h.f->user = &h;
    h.f->env.policy = fuzz_policy;
    h.f->env.statement_done = fuzz_statement_done;
    configure(h.f, pl);
    for (size_t i = 0; i < pl->nsteps && h.f->r.end == SE_NONE; i++)
        run_step(&h, &pl->steps[i], bytewise);
    check_end(&h);
    h.f->user = NULL;
    return h.f;
}

/* A large ErrorResponse is decided on its first bytes when it does not fit the buffer, whole
 * otherwise, and which happens depends on the buffer's size at the time. Both give the same
 * answer when severity and SQLSTATE (or the end of the fields) are in the first bytes, as
 * PostgreSQL always sends them. */
static bool decided_early(const uint8_t *body, size_t avail)
{
    size_t n = avail < PEEK_BODY_BYTES ? avail : PEEK_BODY_BYTES, pos = 0;
    bool v = false, c = false;
    if (avail < PEEK_BODY_BYTES)
        return true; /* never decided on a prefix: the relay waits for more */
    while (pos < n && body[pos] != 0) {
        char t = (char)body[pos++];
        const uint8_t *nul = memchr(body + pos, 0, n - pos);
        if (!nul)
            return false;
        v |= t == 'V';
        c |= t == 'C';
        if (v && c)
            return true;
        pos = (size_t)(nul - body) + 1;
    }
    return pos < n;
}

static bool reads_may_differ(const struct fbuf *up)
{
    for (size_t pos = 0; up->len - pos >= 5;) {
        uint32_t len = wire_get_u32(up->p + pos + 1);
        if (len < 4)
            return false;
        size_t avail = up->len - pos - 5;
        if (up->p[pos] == 'E' && !decided_early(up->p + pos + 5, avail))
            return true;
        if ((size_t)len - 4 > avail)
            return false;
        pos += (size_t)len + 1;
    }
    return false;
}

static bool same_bytes(const struct fbuf *a, const struct fbuf *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct plan pl;
    if (size < 4)
        return 0;
    log_setup(-1, 0);
    fb_free(&pl.upstream);
    memset(&pl, 0, sizeof(pl));
    parse_plan(data, size, &pl);
    struct fake *whole = run(&pl, false);
    struct fake *bytes = run(&pl, true);
    if (!reads_may_differ(&pl.upstream)) {
        CHECK(same_bytes(&whole->cli_out, &bytes->cli_out));
        /* once client writes fail, how far a read got before noticing depends on its size (the
         * session ends on the client's recorded error either way) */
        if (!whole->fail_client) {
            CHECK(same_bytes(&whole->up_out, &bytes->up_out));
            CHECK(whole->done == bytes->done && whole->r.end == bytes->r.end);
            CHECK(whole->r.tx == bytes->r.tx && whole->r.st == bytes->r.st);
        }
    }
    fake_free(whole);
    fake_free(bytes);
    fb_free(&pl.upstream);
    return 0;
}
