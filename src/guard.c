/* Statement policy: decides a simple-protocol Query string with PostgreSQL's own grammar
 * (libpg_query, JSON output) before the proxy forwards it. Pure logic: no I/O, no logging.
 * docs/policy.md is the user-facing description of the semantics implemented here.
 *
 * A decision is precheck (session thread: ceiling, cache) -> decide (any thread with a parser
 * stack: parse, walk, verdict) -> store (session thread: cache). Texts with a backslash are
 * read twice, as PostgreSQL reads them with standard_conforming_strings on and off: the guard
 * cannot know the session's setting in time (it is reported at ReadyForQuery, and pipelined
 * queries run ahead of it). */
#include "guard_internal.h"
#include "text_len.h"

#include <errno.h>
#include <pg_query.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* libpg_query's lexer setting: thread-local, so each parsing thread picks its own reading. */
extern __thread bool standard_conforming_strings;

/* One reading of the text. */
struct reading {
    bool parsed; /* false: a syntax error (d holds PostgreSQL's message) */
    bool refused;
    bool cacheable;
    struct guard_decision d;
    struct guard_buf sum;
    size_t visits;
};

struct query_state {
    const struct guard_policy *p;
    struct guard_decision *out;
    bool refused;
    bool after_end; /* an earlier statement ended a transaction */
};

/* Statements in order; the first one not allowed decides for the whole Query, which
 * PostgreSQL would otherwise run in part. The shadow policy is decided on every statement the
 * enforced one allows, and its first refusal is kept: an enforced refusal later in the Query
 * still wins. */
static bool on_stmt(struct guard_scan *sc)
{
    struct query_state *q = sc->arg;
    if (guard_eval_stmt(q->p, &sc->st, &sc->st.fn, q->after_end, q->out)) {
        q->out->shadow_rule[0] = '\0';
        q->refused = true;
        return false;
    }
    const struct guard_policy *sp = q->p->shadow;
    struct guard_decision sd;
    if (sp && !q->out->shadow_rule[0] &&
        guard_eval_stmt(sp, &sc->st, &sc->st.shadow_fn, q->after_end, &sd))
        guard_copy_text(q->out->shadow_rule, sizeof q->out->shadow_rule, sd.rule);
    q->after_end = q->after_end || sc->st.txn_end;
    return true;
}

static int walk_tree(const struct guard_policy *p, const char *json, struct reading *r,
                     bool keep_summary)
{
    struct query_state q = {p, &r->d, false, false};
    struct guard_scan sc;
    memset(&sc, 0, sizeof sc);
    sc.p = p;
    sc.on_stmt = on_stmt;
    sc.arg = &q;
    sc.sum = keep_summary ? &r->sum : NULL;
    int rc = guard_walk(&sc, json, strlen(json));
    r->visits += sc.visits;
    if (rc == 0 && (sc.malformed || r->sum.oom)) {
        guard_decide_fill(&r->d, GUARD_DENY, "internal",
                          "pgwire-proxy could not analyze this statement");
        r->d.shadow_rule[0] = '\0';
        q.refused = true;
    }
    r->refused = q.refused;
    r->cacheable = !sc.literal;
    guard_scan_done(&sc);
    return rc;
}

static int read_once(const struct guard_policy *p, const char *sql, size_t len, bool scs,
                     bool keep_summary, struct reading *r)
{
    int rc = 0;

    r->d.verdict = GUARD_ALLOW;
    standard_conforming_strings = scs;
    PgQueryParseResult res = pg_query_parse(sql);
    standard_conforming_strings = true;
    if (res.error) {
        /* libpg_query turns its own palloc failures into an error result */
        if (res.error->message && strcmp(res.error->message, "out of memory") == 0) {
            rc = -ENOMEM;
            goto out;
        }
        guard_decide_fill(&r->d, GUARD_SYNTAX, "syntax",
                          res.error->message ? res.error->message : "");
        r->d.cursorpos = res.error->cursorpos;
        goto out;
    }
    if (!res.parse_tree) {
        rc = -ENOMEM;
        goto out;
    }
    r->parsed = true;
    rc = walk_tree(p, res.parse_tree, r, keep_summary);
out:
    pg_query_free_parse_result(res);
    guard_parse_release(len);
    return rc;
}

static bool same_summary(const struct reading *a, const struct reading *b)
{
    return a->sum.n == b->sum.n && (a->sum.n == 0 || memcmp(a->sum.p, b->sum.p, a->sum.n) == 0);
}

/* Both readings into one answer. A reading PostgreSQL cannot parse runs nothing in that mode,
 * so it only matters that the other one is allowed. */
static void combine(const struct reading *on, const struct reading *off, struct guard_decision *out,
                    bool *cacheable)
{
    *cacheable = on->parsed && off->parsed && on->cacheable && off->cacheable;
    if (on->parsed && on->refused) {
        *out = on->d;
    } else if (off->parsed && off->refused) {
        *out = off->d;
    } else if (on->parsed && off->parsed && !same_summary(on, off)) {
        guard_decide_fill(out, GUARD_DENY, "standard_conforming_strings",
                          "statement denied by pgwire-proxy policy: standard_conforming_strings "
                          "(the text holds other statements, kinds or functions when "
                          "standard_conforming_strings is off)");
    } else if (!on->parsed && !off->parsed) {
        *out = on->d;
    } else {
        out->verdict = GUARD_ALLOW;
        /* the shadow verdict of whichever reading PostgreSQL may apply */
        const struct reading *sh = on->parsed && on->d.shadow_rule[0] ? on : off;
        if (sh->parsed)
            guard_copy_text(out->shadow_rule, sizeof out->shadow_rule, sh->d.shadow_rule);
    }
}

static bool ident_char(unsigned char c)
{
    return c == '_' || c == '$' || c >= 0x80 || (c >= '0' && c <= '9') ||
           ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
}

/* True when the text's first keyword is COPY (after blanks and comments, as the lexer skips
 * them). COPY is only ever a statement of its own, so an extended-protocol Parse holding the
 * COPY sub-protocol always starts so; a multi-statement Query is caught by the relay when the
 * upstream answers with CopyInResponse or CopyOutResponse. */
static bool starts_with_copy(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ' || (c >= '\t' && c <= '\r')) {
            i++;
        } else if (c == '-' && i + 1 < len && s[i + 1] == '-') {
            while (i < len && s[i] != '\n')
                i++;
        } else if (c == '/' && i + 1 < len && s[i + 1] == '*') {
            size_t depth = 0; /* comments nest in PostgreSQL */
            do {
                if (s[i] == '/' && i + 1 < len && s[i + 1] == '*') {
                    depth++;
                    i += 2;
                } else if (s[i] == '*' && i + 1 < len && s[i + 1] == '/') {
                    depth--;
                    i += 2;
                } else {
                    i++;
                }
            } while (depth > 0 && i < len);
        } else {
            break;
        }
    }
    return len - i >= 4 && (s[i] | 0x20) == 'c' && strncasecmp(s + i, "copy", 4) == 0 &&
           (len - i == 4 || !ident_char((unsigned char)s[i + 4]));
}

/* Without rules a text is parsed only to refuse the COPY sub-protocol under --copy reject. */
static bool needs_parse(const struct guard_policy *p, const char *sql, size_t len)
{
    return guard_policy_parses(p) || (p && !p->relay_copy && starts_with_copy(sql, len));
}

static void too_big(struct guard_decision *out, size_t len, size_t ceiling)
{
    char msg[256];
    snprintf(msg, sizeof msg,
             "statement of %zu bytes is larger than pgwire-proxy's --max-parse-size of %zu "
             "bytes",
             len, ceiling);
    guard_decide_fill(out, GUARD_TOO_COMPLEX, "max-parse-size", msg);
}

static int decide_impl(const struct guard_policy *p, const char *sql, size_t len,
                       struct guard_decision *out, bool *cacheable, size_t *visits)
{
    struct reading on, off;
    char *copy = NULL;
    int rc = 0;

    memset(out, 0, sizeof *out);
    out->verdict = GUARD_ALLOW;
    *cacheable = false;
    /* PostgreSQL reads a Query up to its NUL; so do we */
    len = text_len(sql, len);
    if (!needs_parse(p, sql, len))
        return 0;
    if (len > p->max_parse) {
        too_big(out, len, p->max_parse);
        guard_shadow_only(p, out);
        return 0;
    }
    if (sql[len] != '\0') {
        copy = strndup(sql, len);
        if (!copy)
            return -ENOMEM;
        sql = copy;
    }
    memset(&on, 0, sizeof on);
    memset(&off, 0, sizeof off);
    bool both = memchr(sql, '\\', len) != NULL;
    rc = read_once(p, sql, len, true, both, &on);
    if (rc)
        goto out;
    if (!both) {
        *out = on.d;
        *cacheable = on.parsed && on.cacheable;
        goto out;
    }
    rc = read_once(p, sql, len, false, true, &off);
    if (rc)
        goto out;
    combine(&on, &off, out, cacheable);
out:
    if (rc == 0 && !guard_policy_parses(p) && out->verdict != GUARD_COPY) {
        /* parsed only to find COPY: anything else (a syntax error too) is PostgreSQL's */
        memset(out, 0, sizeof *out);
        out->verdict = GUARD_ALLOW;
    } else if (rc == 0) {
        guard_shadow_only(p, out);
    }
    *visits = on.visits + off.visits;
    free(on.sum.p);
    free(off.sum.p);
    free(copy);
    return rc;
}

int guard_decide(const struct guard_policy *p, const char *sql, size_t len,
                 struct guard_decision *out, bool *cacheable)
{
    size_t visits;
    return decide_impl(p, sql, len, out, cacheable, &visits);
}

size_t guard_decide_visits(const struct guard_policy *p, const char *sql, size_t len)
{
    struct guard_decision d;
    size_t visits = 0;
    bool c;
    decide_impl(p, sql, len, &d, &c, &visits);
    return visits;
}

int guard_precheck(const struct guard_policy *p, struct guard_cache *c, const char *sql, size_t len,
                   size_t max_parse, struct guard_decision *out, struct guard_cache_key *key)
{
    memset(out, 0, sizeof *out);
    out->verdict = GUARD_ALLOW;
    key->gen = p ? p->gen : 0;
    key->len = 0;
    if (!needs_parse(p, sql, len))
        return 0; /* no rule reads the text: PostgreSQL judges it alone */
    size_t ceiling = max_parse && max_parse < p->max_parse ? max_parse : p->max_parse;
    if (len > ceiling) {
        too_big(out, len, ceiling);
        guard_shadow_only(p, out);
        return 0;
    }
    if (c) {
        key->len = guard_cache_key_hashed(sql, len, key->text, sizeof key->text, &key->hash);
        if (key->len && guard_cache_get(c, key->gen, key->text, key->len, key->hash, out))
            return 0;
    }
    return 1;
}

void guard_cache_store(struct guard_cache *c, const struct guard_policy *p,
                       const struct guard_cache_key *key, const struct guard_decision *d)
{
    if (!c || !key || !key->len || key->gen != (p ? p->gen : 0))
        return;
    guard_cache_put(c, key->gen, key->text, key->len, key->hash, d);
}

int guard_check(const struct guard_policy *p, struct guard_cache *cache, const char *sql,
                size_t len, struct guard_decision *out)
{
    struct guard_cache_key key;
    bool cacheable = false;

    len = text_len(sql, len);
    if (guard_precheck(p, cache, sql, len, 0, out, &key) == 0)
        return 0;
    int rc = guard_decide(p, sql, len, out, &cacheable);
    if (rc == 0 && cacheable)
        guard_cache_store(cache, p, &key, out);
    return rc;
}

const char *guard_unsafe_setting(const char *name, const char *value)
{
    /* Client encodings whose multibyte characters may contain the byte 0x5C (backslash):
     * PostgreSQL converts the text to the server encoding before it lexes it, so such a byte is
     * part of a character to it and an escape to the guard, which lexes the bytes as sent. */
    static const char *const unsafe_encodings[] = {"SJIS",    "SHIFT_JIS_2004", "BIG5", "GBK",
                                                   "GB18030", "JOHAB",          "UHC"};
    if (!name || !value)
        return NULL;
    if (strcmp(name, "client_encoding") == 0)
        for (size_t i = 0; i < sizeof(unsafe_encodings) / sizeof(unsafe_encodings[0]); i++)
            if (strcasecmp(value, unsafe_encodings[i]) == 0)
                return "client encodings that can hide a backslash inside a character are not "
                       "supported by pgwire-proxy; use UTF8";
    return NULL;
}

static const char *deny_hint(const struct guard_decision *d)
{
    if (strcmp(d->rule, "sql-text") == 0)
        return "The policy cannot read SQL held in a string. If it must run, ask the operator "
               "to --permit function:NAME (or --permit do).";
    if (strcmp(d->rule, "set-config") == 0)
        return "Name the setting with a string literal: set_config('name', value, is_local).";
    if (strcmp(d->rule, "standard_conforming_strings") == 0)
        return "Write backslash escapes in E'...' strings, or keep backslashes out of '...' "
               "strings.";
    return "Ask the operator which statements the policy allows (--deny/--allow).";
}

void guard_error_for(const struct guard_decision *d, struct guard_error *e)
{
    memset(e, 0, sizeof(*e));
    e->message = d->message;
    switch (d->verdict) {
    case GUARD_SYNTAX:
        e->code = "42601";
        e->position = d->cursorpos > 0 ? (uint32_t)d->cursorpos : 0;
        return; /* exactly what PostgreSQL would say: no rule involved */
    case GUARD_TOO_COMPLEX:
        e->code = "54001";
        e->hint = "Split the statement into smaller ones, or ask the operator to raise "
                  "--max-parse-size.";
        break;
    case GUARD_READ_ONLY:
        e->code = "25006";
        e->hint = "pgwire-proxy runs in --read-only mode: only reading statements are allowed.";
        break;
    case GUARD_BUSY:
        e->code = "53000";
        e->hint = "Retry the statement: pgwire-proxy's policy parser is busy with large texts.";
        break;
    case GUARD_COPY:
        e->code = "0A000";
        e->hint = "Use INSERT ... VALUES to load rows, or SELECT to read them.";
        break;
    case GUARD_DENY:
    case GUARD_ALLOW:
    default:
        e->code = "42501";
        e->hint = deny_hint(d);
        break;
    }
    snprintf(e->detail, sizeof(e->detail), "rule: %s", d->rule);
}
