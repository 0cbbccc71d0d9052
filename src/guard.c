/* Statement policy: decides a simple-protocol Query string with PostgreSQL's own grammar
 * (libpg_query, JSON output) before the proxy forwards it. Pure logic: no I/O, no logging.
 * docs/policy.md is the user-facing description of the semantics implemented here. */
#include "guard_internal.h"

#include <errno.h>
#include <pg_query.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define GUC_NAME_MAX 256

/* The parser assumes standard_conforming_strings=on; if the session could turn it off, a string
 * we read as one literal could be statements to PostgreSQL. */
static const char *const scs_gucs[] = {"standard_conforming_strings", "backslash_quote"};
/* What --read-only relies on upstream (default_transaction_read_only) and who it runs as. */
static const char *const ro_gucs[] = {"transaction_read_only", "default_transaction_read_only",
                                      "session_authorization", "role"};

/* Copies src into dst (cap bytes) without splitting a UTF-8 sequence: the text ends up in an
 * ErrorResponse, and clients reject invalid UTF-8. */
static void copy_text(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static bool name_in(const char *name, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(name, list[i]) == 0)
            return true;
    return false;
}

/* --- one statement: what its tree contains --- */

struct stmt_scan {
    const struct guard_policy *p; /* may be NULL */
    int top;                      /* enum guard_kind; -1 = a statement node we do not know */
    struct guard_kind_set nested; /* kinds below the top node, plus implied ones */
    bool unknown_nested;
    bool copy_protocol;       /* COPY FROM STDIN / TO STDOUT */
    bool copy_allowed;        /* --copy allow: such a COPY is decided like any statement */
    bool copy_to_client;      /* COPY ... TO STDOUT: it reads, like the SELECT it is */
    bool select_into;         /* SELECT ... INTO: creates a table */
    bool locking;             /* FOR UPDATE/SHARE */
    bool set_config_computed; /* set_config() whose setting name is not a literal */
    bool literal;             /* the decision read a literal: never cache it by shape */
    bool malformed;
    const char *scs;       /* which of scs_gucs the statement changes */
    const char *deny_func; /* matched function deny rule (owned by the policy) */
    char unknown[48];
    char ro_what[96]; /* read-only violation found by inspecting a node */
    char func_not_allowed[FUNC_NAME_MAX];
};

static bool span_is(struct guard_span s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && memcmp(s.p, lit, n) == 0;
}

/* Decoded, lowercased string field of obj; "" when absent or unreadable. */
static void get_text(struct guard_span obj, const char *field, char *buf, size_t cap)
{
    struct guard_span v;
    if (!guard_json_get(obj, field, &v) || !guard_json_text(v, buf, cap, true))
        buf[0] = '\0';
}

static void check_guc(struct stmt_scan *st, const char *name, const char *verb)
{
    for (size_t i = 0; i < sizeof scs_gucs / sizeof scs_gucs[0]; i++)
        if (strcmp(name, scs_gucs[i]) == 0)
            st->scs = scs_gucs[i];
    if (st->p && st->p->read_only && !st->ro_what[0] &&
        name_in(name, ro_gucs, sizeof ro_gucs / sizeof ro_gucs[0]))
        snprintf(st->ro_what, sizeof st->ro_what, "%s %s", verb, name);
}

/* A transaction_read_only DefElem whose value is not clearly true: READ WRITE. The grammar
 * emits an integer constant, and JSON omits zero values, so "absent" means false. */
static bool asks_read_write(struct guard_span list)
{
    struct guard_span elem, de, name, arg, c, iv, num;
    size_t pos = 0;

    while (guard_json_next(list, &pos, &elem)) {
        if (!guard_json_get(elem, "DefElem", &de) || !guard_json_get(de, "defname", &name) ||
            !guard_json_is(name, "transaction_read_only"))
            continue;
        if (!guard_json_get(de, "arg", &arg) || !guard_json_get(arg, "A_Const", &c))
            return true;
        if (guard_json_get(c, "ival", &iv) && guard_json_get(iv, "ival", &num))
            return num.n == 1 && num.p[0] == '0';
        if (guard_json_get(c, "boolval", &iv) && guard_json_get(iv, "boolval", &num))
            return !span_is(num, "true");
        return true;
    }
    return false;
}

static void scan_set(struct stmt_scan *st, struct guard_span v)
{
    char name[GUC_NAME_MAX];
    struct guard_span kind, args;
    bool reset = guard_json_get(v, "kind", &kind) &&
                 (guard_json_is(kind, "VAR_RESET") || guard_json_is(kind, "VAR_RESET_ALL"));

    get_text(v, "name", name, sizeof name);
    check_guc(st, name, reset ? "RESET" : "SET");
    /* SET TRANSACTION / SET SESSION CHARACTERISTICS AS TRANSACTION carry DefElems. */
    if (st->p && st->p->read_only && !st->ro_what[0] && guard_json_get(v, "args", &args) &&
        asks_read_write(args))
        snprintf(st->ro_what, sizeof st->ro_what, "SET TRANSACTION READ WRITE");
}

static void scan_txn(struct stmt_scan *st, struct guard_span v)
{
    struct guard_span kind, opts;

    if (!st->p || !st->p->read_only)
        return;
    /* Two-phase commit can finish another session's writes. */
    if (guard_json_get(v, "kind", &kind) && (guard_json_is(kind, "TRANS_STMT_PREPARE") ||
                                             guard_json_is(kind, "TRANS_STMT_COMMIT_PREPARED") ||
                                             guard_json_is(kind, "TRANS_STMT_ROLLBACK_PREPARED")))
        snprintf(st->ro_what, sizeof st->ro_what, "two-phase commit");
    else if (guard_json_get(v, "options", &opts) && asks_read_write(opts))
        snprintf(st->ro_what, sizeof st->ro_what, "BEGIN READ WRITE");
}

/* set_config(name, ...) is SET by another name. */
static void scan_set_config(struct stmt_scan *st, struct guard_span v)
{
    struct guard_span args, node, key, val, sv, inner;
    size_t pos = 0;
    char name[GUC_NAME_MAX];

    st->literal = true;
    if (!guard_json_get(v, "args", &args) || !guard_json_next(args, &pos, &node))
        return; /* no argument: PostgreSQL rejects the call */
    for (int depth = 0; depth < 8; depth++) {
        if (!guard_json_first(node, &key, &val))
            break;
        if (span_is(key, "TypeCast") && guard_json_get(val, "arg", &node))
            continue;
        if (!span_is(key, "A_Const") || !guard_json_get(val, "sval", &sv))
            break;
        if (!guard_json_get(sv, "sval", &inner))
            name[0] = '\0'; /* '' */
        else if (!guard_json_text(inner, name, sizeof name, true))
            break;
        check_guc(st, name, "set_config");
        return;
    }
    st->set_config_computed = true;
}

static void scan_funccall(struct stmt_scan *st, struct guard_span v)
{
    struct guard_span names, elem, last = {NULL, 0}, str;
    size_t pos = 0;
    char name[2 * FUNC_NAME_MAX];
    const struct guard_policy *p = st->p;

    if (!guard_json_get(v, "funcname", &names)) {
        st->malformed = true;
        return;
    }
    while (guard_json_next(names, &pos, &elem))
        last = elem;
    /* Quoted names keep their case in PostgreSQL; lowercasing can only widen a match. */
    if (!last.p || !guard_json_get(last, "String", &str)) {
        st->malformed = true;
        return;
    }
    get_text(str, "sval", name, sizeof name);
    if (strcmp(name, "set_config") == 0)
        scan_set_config(st, v);
    if (!p)
        return;
    for (size_t i = 0; i < p->ndeny_funcs && !st->deny_func; i++)
        if (strcmp(name, p->deny_funcs[i]) == 0)
            st->deny_func = p->deny_funcs[i];
    if (p->nallow_funcs && !st->func_not_allowed[0]) {
        bool ok = false;
        for (size_t i = 0; i < p->nallow_funcs && !ok; i++)
            ok = strcmp(name, p->allow_funcs[i]) == 0;
        if (!ok)
            copy_text(st->func_not_allowed, sizeof st->func_not_allowed, name);
    }
}

/* Kinds that depend on a field, not just the node type. */
static enum guard_kind refine(enum guard_kind k, enum guard_node special, struct guard_span v)
{
    struct guard_span f;

    switch (special) {
    case GUARD_NODE_VACUUM:
        return guard_json_get(v, "is_vacuumcmd", &f) && span_is(f, "true") ? GUARD_K_VACUUM
                                                                           : GUARD_K_ANALYZE;
    case GUARD_NODE_CTAS:
        return guard_json_get(v, "objtype", &f) && guard_json_is(f, "OBJECT_MATVIEW")
                   ? GUARD_K_CREATE_MATERIALIZED_VIEW
                   : k;
    case GUARD_NODE_DEFINE:
        if (!guard_json_get(v, "kind", &f))
            return k;
        if (guard_json_is(f, "OBJECT_AGGREGATE"))
            return GUARD_K_CREATE_AGGREGATE;
        if (guard_json_is(f, "OBJECT_OPERATOR"))
            return GUARD_K_CREATE_OPERATOR;
        if (guard_json_is(f, "OBJECT_COLLATION"))
            return GUARD_K_CREATE_COLLATION;
        if (f.n > 11 && memcmp(f.p, "\"OBJECT_TS", 10) == 0)
            return GUARD_K_CREATE_TEXT_SEARCH;
        return k;
    default:
        return k;
    }
}

static void scan_copy(struct stmt_scan *st, struct guard_span v)
{
    struct guard_span f;
    /* STDIN/STDOUT is the absence of a file name; PROGRAM keeps its command there. */
    if (guard_json_get(v, "filename", &f))
        return;
    st->copy_protocol = true;
    st->copy_to_client = !(guard_json_get(v, "is_from", &f) && span_is(f, "true"));
}

static void scan_special(struct stmt_scan *st, enum guard_node special, struct guard_span v,
                         bool top)
{
    struct guard_span f;

    switch (special) {
    case GUARD_NODE_COPY:
        scan_copy(st, v);
        break;
    case GUARD_NODE_CALL:
        if (guard_json_get(v, "funccall", &f))
            scan_funccall(st, f);
        else
            st->malformed = true;
        break;
    /* SET and transaction modes only matter at the top: a nested VariableSetStmt is a clause of
     * CREATE FUNCTION ... SET, which changes nothing in this session. */
    case GUARD_NODE_SET:
        if (top)
            scan_set(st, v);
        break;
    case GUARD_NODE_TXN:
        if (top)
            scan_txn(st, v);
        break;
    default:
        break;
    }
}

static void note_unknown(struct stmt_scan *st, struct guard_span key)
{
    if (!st->unknown[0])
        guard_kind_snake(key.p, key.n, st->unknown, sizeof st->unknown);
}

static void scan_key(struct stmt_scan *st, struct guard_span key, struct guard_span v)
{
    enum guard_kind k;
    enum guard_node special;

    if (key.n == 0)
        return;
    if (key.p[0] >= 'A' && key.p[0] <= 'Z') {
        if (span_is(key, "FuncCall")) {
            scan_funccall(st, v);
        } else if (span_is(key, "LockingClause")) {
            st->locking = true;
        } else if (guard_kind_of_node(key.p, key.n, &k, &special)) {
            guard_kind_set_add(&st->nested, refine(k, special, v));
            scan_special(st, special, v, false);
        } else if (key.n > 4 && memcmp(key.p + key.n - 4, "Stmt", 4) == 0) {
            st->unknown_nested = true;
            note_unknown(st, key);
        }
    } else if (span_is(key, "intoClause")) {
        /* SELECT ... INTO is CREATE TABLE AS in another spelling. */
        st->select_into = true;
        guard_kind_set_add(&st->nested, GUARD_K_CREATE_TABLE_AS);
    }
}

/* Visits every key below the top node once, without recursion. Node values are passed as
 * spans open to the end of the statement: lookups stop at the field they need, so nested calls
 * like f(f(f(...))) stay linear. */
static void scan_tree(struct stmt_scan *st, struct guard_span s)
{
    size_t i = 0;

    while (i < s.n && !st->malformed) {
        if (s.p[i] != '"') {
            i++;
            continue;
        }
        size_t e = guard_json_string_end(s, i);
        if (e == 0) {
            st->malformed = true;
            return;
        }
        size_t j = guard_json_ws(s, e);
        if (j < s.n && s.p[j] == ':') {
            struct guard_span key = {s.p + i + 1, e - i - 2};
            size_t v = guard_json_ws(s, j + 1);
            scan_key(st, key, (struct guard_span){s.p + v, s.n - v});
            i = j + 1;
        } else {
            i = e;
        }
    }
}

static void scan_top(struct stmt_scan *st, struct guard_span key, struct guard_span v)
{
    enum guard_kind k;
    enum guard_node special;

    if (!guard_kind_of_node(key.p, key.n, &k, &special)) {
        st->top = -1;
        note_unknown(st, key);
        return;
    }
    st->top = (int)refine(k, special, v);
    scan_special(st, special, v, true);
}

/* --- one statement: the verdict --- */

static void decide(struct guard_decision *out, enum guard_verdict v, const char *rule,
                   const char *message)
{
    out->verdict = v;
    copy_text(out->rule, sizeof out->rule, rule);
    copy_text(out->message, sizeof out->message, message);
    out->cursorpos = 0;
}

/* First kind in both sets, or -1. */
static int first_common(const struct guard_kind_set *a, const struct guard_kind_set *b)
{
    for (int w = 0; w < GUARD_KIND_WORDS; w++) {
        uint64_t x = a->w[w] & b->w[w];
        if (x)
            return w * 64 + __builtin_ctzll(x);
    }
    return -1;
}

static bool eval_deny(const struct stmt_scan *st, struct guard_decision *out)
{
    const struct guard_policy *p = st->p;
    char rule[96], msg[256];
    int k = -1;

    if (st->top >= 0 && guard_kind_set_has(&p->deny, (enum guard_kind)st->top))
        k = st->top;
    else
        k = first_common(&st->nested, &p->deny);
    if (k >= 0) {
        const char *name = guard_kind_name((enum guard_kind)k);
        snprintf(rule, sizeof rule, "deny:%s", p->deny_rule[k]);
        if (strcmp(name, p->deny_rule[k]) == 0)
            snprintf(msg, sizeof msg, "statement denied by pgwire-proxy policy: %s", rule);
        else
            snprintf(msg, sizeof msg, "statement denied by pgwire-proxy policy: %s (%s)", rule,
                     name);
    } else if (st->deny_func) {
        snprintf(rule, sizeof rule, "deny:function:%s", st->deny_func);
        snprintf(msg, sizeof msg, "statement denied by pgwire-proxy policy: %s", rule);
    } else {
        return false;
    }
    decide(out, GUARD_DENY, rule, msg);
    return true;
}

static bool eval_read_only(const struct stmt_scan *st, struct guard_decision *out)
{
    const char *what = NULL;
    char msg[256];

    if (st->top < 0)
        what = st->unknown;
    else if (!(guard_kind_flags((enum guard_kind)st->top) & GUARD_KF_READ) &&
             !st->copy_to_client) /* what it reads is checked as its nested kinds */
        what = guard_kind_name((enum guard_kind)st->top);
    else if (st->select_into)
        what = "SELECT INTO";
    if (!what)
        for (int k = 0; k < GUARD_K_COUNT && !what; k++)
            if (guard_kind_set_has(&st->nested, (enum guard_kind)k) &&
                !(guard_kind_flags((enum guard_kind)k) & GUARD_KF_READ))
                what = guard_kind_name((enum guard_kind)k);
    if (!what && st->unknown_nested)
        what = st->unknown;
    /* Row locks block writers; read-only mode promises not to, like LOCK. */
    if (!what && st->locking)
        what = "SELECT FOR UPDATE/SHARE";
    if (!what && st->ro_what[0])
        what = st->ro_what;
    if (!what)
        return false;
    snprintf(msg, sizeof msg, "cannot execute %s in read-only mode", what);
    decide(out, GUARD_READ_ONLY, "read-only", msg);
    return true;
}

static bool eval_allow(const struct stmt_scan *st, struct guard_decision *out)
{
    const struct guard_policy *p = st->p;
    const char *what = NULL;
    char msg[256];

    if (p->kind_allow_list) {
        if (st->top < 0)
            what = st->unknown;
        else if (!guard_kind_set_has(&p->allow, (enum guard_kind)st->top))
            what = guard_kind_name((enum guard_kind)st->top);
        for (int k = 0; k < GUARD_K_COUNT && !what; k++)
            if (guard_kind_set_has(&st->nested, (enum guard_kind)k) &&
                !(guard_kind_flags((enum guard_kind)k) & GUARD_KF_CLAUSE) &&
                !guard_kind_set_has(&p->allow, (enum guard_kind)k))
                what = guard_kind_name((enum guard_kind)k);
        if (!what && st->unknown_nested)
            what = st->unknown;
    }
    if (what) {
        snprintf(msg, sizeof msg,
                 "statement denied by pgwire-proxy policy: allow (%s is not in the allow list)",
                 what);
    } else if (st->func_not_allowed[0]) {
        snprintf(msg, sizeof msg,
                 "statement denied by pgwire-proxy policy: allow (function %s is not in the "
                 "allow list)",
                 st->func_not_allowed);
    } else {
        return false;
    }
    decide(out, GUARD_DENY, "allow", msg);
    return true;
}

/* Returns true when the statement is not allowed (out filled). */
static bool eval_stmt(const struct stmt_scan *st, bool parses, struct guard_decision *out)
{
    char msg[256];

    if (st->copy_protocol && !st->copy_allowed) {
        decide(out, GUARD_COPY, "copy-protocol", "COPY is not supported through pgwire-proxy");
        return true;
    }
    if (st->scs) {
        snprintf(msg, sizeof msg, "changing %s is not allowed through pgwire-proxy", st->scs);
        decide(out, GUARD_DENY, "standard_conforming_strings", msg);
        return true;
    }
    /* Only a policy that reads later statements has something to protect from a setting
     * whose name we cannot see. */
    if (parses && st->set_config_computed) {
        decide(out, GUARD_DENY, "standard_conforming_strings",
               "set_config() with a computed setting name is not allowed through pgwire-proxy");
        return true;
    }
    if (!st->p)
        return false;
    if (eval_deny(st, out))
        return true;
    if (st->p->read_only && eval_read_only(st, out))
        return true;
    return eval_allow(st, out);
}

/* --- the whole Query --- */

static void malformed(struct guard_decision *out)
{
    decide(out, GUARD_DENY, "internal", "pgwire-proxy could not analyze this statement");
}

static void decide_tree(const struct guard_policy *p, bool parses, const char *json,
                        struct guard_decision *out, bool *cacheable)
{
    struct guard_span root = {json, strlen(json)}, stmts, elem, stmt, key, val;
    size_t pos = 0;
    bool literal = false;

    *cacheable = false;
    if (!guard_json_get(root, "stmts", &stmts)) {
        malformed(out);
        return;
    }
    /* Statements in order; the first one not allowed decides for the whole Query, which
     * PostgreSQL would otherwise run in part. */
    while (guard_json_next(stmts, &pos, &elem)) {
        struct stmt_scan st;
        memset(&st, 0, sizeof st);
        st.p = guard_policy_parses(p) ? p : NULL;
        st.copy_allowed = p && p->copy_allowed;
        if (!guard_json_get(elem, "stmt", &stmt) || !guard_json_first(stmt, &key, &val)) {
            malformed(out);
            return;
        }
        scan_top(&st, key, val);
        scan_tree(&st, val);
        literal = literal || st.literal;
        if (st.malformed) {
            malformed(out);
            return;
        }
        if (eval_stmt(&st, parses, out))
            break;
    }
    *cacheable = !literal;
}

static int parse_and_decide(const struct guard_policy *p, bool parses, const char *sql,
                            struct guard_decision *out, bool *cacheable)
{
    PgQueryParseResult r = pg_query_parse(sql);
    int rc = 0;

    *cacheable = false;
    if (r.error) {
        /* libpg_query turns its own palloc failures into an error result. */
        if (r.error->message && strcmp(r.error->message, "out of memory") == 0) {
            rc = -ENOMEM;
            goto out;
        }
        /* Without rules PostgreSQL reports its own syntax error just as well. Never cached:
         * the message and position belong to this exact text. */
        if (parses) {
            decide(out, GUARD_SYNTAX, "syntax", r.error->message ? r.error->message : "");
            out->cursorpos = r.error->cursorpos;
        }
        goto out;
    }
    if (!r.parse_tree) {
        rc = -ENOMEM;
        goto out;
    }
    decide_tree(p, parses, r.parse_tree, out, cacheable);
out:
    pg_query_free_parse_result(r);
    return rc;
}

static bool has_word_at(const char *s, size_t len, size_t i, const char *w)
{
    for (; *w; w++, i++) {
        if (i >= len)
            return false;
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != *w)
            return false;
    }
    return true;
}

/* Without rules only COPY and the two string-syntax settings matter, so most texts skip the
 * parser. The words are matched anywhere (strings, identifiers) because a false positive only
 * costs a parse; "u&" and set_config cover spellings of the settings that hide the words. */
static bool needs_parse(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        switch ((unsigned char)s[i] | 0x20) {
        case 'b':
            if (has_word_at(s, len, i, "backslash_quote"))
                return true;
            break;
        case 'c':
            if (has_word_at(s, len, i, "copy"))
                return true;
            break;
        case 's':
            if (has_word_at(s, len, i, "standard_conforming") ||
                has_word_at(s, len, i, "set_config"))
                return true;
            break;
        case 'u':
            if (has_word_at(s, len, i, "u&"))
                return true;
            break;
        default:
            break;
        }
    }
    return false;
}

int guard_check(const struct guard_policy *p, struct guard_cache *cache, const char *sql,
                size_t len, struct guard_decision *out)
{
    char key[GUARD_CACHE_KEY_MAX];
    size_t klen = 0;
    bool parses = guard_policy_parses(p);
    bool cacheable = false;
    uint64_t gen = p ? p->gen : 0;
    int rc;

    memset(out, 0, sizeof *out);
    out->verdict = GUARD_ALLOW;
    /* PostgreSQL reads a Query up to its NUL; so do we. */
    len = strnlen(sql, len);
    if (!parses && !needs_parse(sql, len))
        return 0;
    if (cache) {
        klen = guard_cache_key(sql, len, key, sizeof key);
        if (klen && guard_cache_get(cache, gen, key, klen, out))
            return 0;
    }
    if (guard_depth_estimate(sql, len) > GUARD_MAX_DEPTH) {
        /* parsing could overflow the stack; without rules PostgreSQL judges it alone */
        if (parses)
            decide(out, GUARD_TOO_COMPLEX, "parser-depth",
                   "statement too complex for pgwire-proxy's policy parser");
        return 0;
    }
    rc = parse_and_decide(p, parses, sql, out, &cacheable);
    if (rc == 0 && cache && klen && cacheable)
        guard_cache_put(cache, gen, key, klen, out);
    return rc;
}

const char *guard_unsafe_setting(const char *name, const char *value)
{
    /* Client encodings whose multibyte characters may contain the byte 0x5C (backslash): the
     * server reads such a byte as part of a character, the parser as an escape. */
    static const char *const unsafe_encodings[] = {"SJIS",    "SHIFT_JIS_2004", "BIG5", "GBK",
                                                   "GB18030", "JOHAB",          "UHC"};
    if (!name || !value)
        return NULL;
    if (strcmp(name, "standard_conforming_strings") == 0 && strcmp(value, "on") != 0)
        return "pgwire-proxy requires standard_conforming_strings=on";
    if (strcmp(name, "client_encoding") == 0)
        for (size_t i = 0; i < sizeof(unsafe_encodings) / sizeof(unsafe_encodings[0]); i++)
            if (strcasecmp(value, unsafe_encodings[i]) == 0)
                return "client encodings that can hide a backslash inside a character are not "
                       "supported by pgwire-proxy; use UTF8";
    return NULL;
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
        e->hint = "Simplify the expression: PostgreSQL itself refuses expressions this deep "
                  "(stack depth limit exceeded).";
        break;
    case GUARD_READ_ONLY:
        e->code = "25006";
        e->hint = "pgwire-proxy runs in --read-only mode: only reading statements are allowed.";
        break;
    case GUARD_COPY:
        e->code = "0A000";
        e->hint = "Use INSERT ... VALUES to load rows, or SELECT to read them.";
        break;
    case GUARD_DENY:
    case GUARD_ALLOW:
    default:
        e->code = "42501";
        e->hint = "Ask the operator which statements the policy allows (--deny/--allow).";
        break;
    }
    snprintf(e->detail, sizeof(e->detail), "rule: %s", d->rule);
}
