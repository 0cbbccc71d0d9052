/* Redaction of audited statements (--audit-redact): literal tokens become $n, comments go, and
 * SQL held in a string literal passed to a function that runs SQL given as text (query_to_xml,
 * dblink, ...) is redacted too and shown after the statement, so the audit record says what
 * ran without the values it ran with:
 *
 *     SELECT query_to_xml($1, $2, $3, $4) /+ $1: SELECT pg_terminate_backend($1) +/
 *
 * (with real comment markers). It works on libpg_query's token stream, which has constant
 * stack and no quadratic cost (pg_query_normalize needs ~4,000x a text's size in memory for
 * `SELECT 1,1,1...`); a parse is needed only to find those string arguments. A text with a
 * backslash is also redacted as PostgreSQL reads it with standard_conforming_strings off, and
 * shown that way too when that reading differs. Runs on the audit writer, never on an event
 * loop. */
#include "guard_internal.h"

#include <pg_query.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern __thread bool standard_conforming_strings;

/* Token numbers of libpg_query 15's ScanToken (/usr/include/pg_query/pg_query.proto). */
#define TOK_IDENT       258
#define TOK_FCONST      260
#define TOK_SCONST      261
#define TOK_USCONST     262
#define TOK_BCONST      263
#define TOK_XCONST      264
#define TOK_ICONST      266
#define TOK_PARAM       267
#define TOK_SQL_COMMENT 275
#define TOK_C_COMMENT   276

#define MAX_INNER 4 /* SQL in a string in a string ...: deeper levels stay plain $n */

static const char unparsable[] = "<unparsable statement redacted>";
static const char too_large[] = "<statement larger than --max-parse-size redacted>";

struct token {
    int start, end, tok;
};

struct tokens {
    struct token *v;
    size_t n, cap;
};

/* --- the ScanResult protobuf, read without allocating per token --- */

static bool varint(const uint8_t *p, size_t n, size_t *i, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; *i < n && shift < 64; shift += 7) {
        uint8_t b = p[(*i)++];
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return true;
    }
    return false;
}

static bool read_token(const uint8_t *p, size_t n, struct token *t)
{
    size_t i = 0;
    memset(t, 0, sizeof *t);
    while (i < n) {
        uint64_t key, v;
        if (!varint(p, n, &i, &key) || (key & 7) != 0 || !varint(p, n, &i, &v))
            return false;
        if (key >> 3 == 1)
            t->start = (int)v;
        else if (key >> 3 == 2)
            t->end = (int)v;
        else if (key >> 3 == 4)
            t->tok = (int)v;
    }
    return t->end >= t->start;
}

static bool read_tokens(const uint8_t *p, size_t n, struct tokens *ts)
{
    size_t i = 0;
    while (i < n) {
        uint64_t key, len;
        if (!varint(p, n, &i, &key))
            return false;
        if ((key & 7) == 0) { /* version */
            if (!varint(p, n, &i, &len))
                return false;
            continue;
        }
        if ((key & 7) != 2 || !varint(p, n, &i, &len) || len > n - i)
            return false;
        if (key >> 3 == 2) {
            if (ts->n == ts->cap) {
                size_t cap = ts->cap ? ts->cap * 2 : 64;
                struct token *g = realloc(ts->v, cap * sizeof *g);
                if (!g)
                    return false;
                ts->v = g;
                ts->cap = cap;
            }
            if (!read_token(p + i, (size_t)len, &ts->v[ts->n++]))
                return false;
        }
        i += (size_t)len;
    }
    return true;
}

static bool scan(const char *sql, size_t len, bool scs, struct tokens *ts)
{
    standard_conforming_strings = scs;
    PgQueryScanResult r = pg_query_scan(sql);
    standard_conforming_strings = true;
    bool ok = !r.error && read_tokens((const uint8_t *)r.pbuf.data, r.pbuf.len, ts);
    pg_query_free_scan_result(r);
    for (size_t i = 0; ok && i < ts->n; i++)
        ok = ts->v[i].end <= (int)len;
    return ok;
}

static bool is_literal(int tok)
{
    return tok == TOK_SCONST || tok == TOK_USCONST || tok == TOK_BCONST || tok == TOK_XCONST ||
           tok == TOK_ICONST || tok == TOK_FCONST;
}

/* Does an identifier token name a function that runs SQL given as text? */
static bool names_sql_text(const char *sql, const struct token *t)
{
    char name[FUNC_NAME_MAX];
    size_t o = 0;
    for (int i = t->start; i < t->end && o + 1 < sizeof name; i++) {
        char c = sql[i];
        if (c == '"')
            continue;
        name[o++] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    name[o] = '\0';
    const struct guard_fn *fn = guard_fn_lookup(name);
    return fn && (fn->groups & GUARD_GBIT(SQL_TEXT));
}

/* --- SQL held in string arguments --- */

struct inner {
    int loc;    /* where its literal starts in the outer text */
    char *text; /* decoded value */
};

struct inners {
    struct inner *v;
    size_t n;
};

static void free_inners(struct inners *in)
{
    for (size_t i = 0; i < in->n; i++)
        free(in->v[i].text);
    free(in->v);
    in->v = NULL;
    in->n = 0;
}

static bool collect_stmt(struct guard_scan *sc)
{
    (void)sc;
    return true;
}

/* The string literals passed to SQL-text functions, decoded, from one parse. */
static void find_inners(const char *sql, size_t len, bool scs, struct inners *out)
{
    static const struct guard_policy none; /* no rules: the walk only collects */
    struct guard_sqlargs args = {0};
    struct guard_scan sc;

    standard_conforming_strings = scs;
    PgQueryParseResult r = pg_query_parse(sql);
    standard_conforming_strings = true;
    if (r.error || !r.parse_tree)
        goto out;
    memset(&sc, 0, sizeof sc);
    sc.p = &none;
    sc.sqlargs = &args;
    sc.on_stmt = collect_stmt;
    if (guard_walk(&sc, r.parse_tree, strlen(r.parse_tree)) == 0 && !args.oom && args.n) {
        out->v = calloc(args.n, sizeof *out->v);
        for (size_t i = 0; out->v && i < args.n; i++) {
            struct guard_span v = args.v[i].val;
            if (!v.p || args.v[i].loc < 0 || args.v[i].loc >= (long)len)
                continue;
            char *t = malloc(v.n + 1);
            if (t && guard_json_text(v, t, v.n + 1, false)) {
                out->v[out->n].loc = (int)args.v[i].loc;
                out->v[out->n++].text = t;
            } else {
                free(t);
            }
        }
    }
    guard_scan_done(&sc);
out:
    free(args.v);
    pg_query_free_parse_result(r);
    guard_parse_release(len);
}

/* Is the text SQL (one statement or more)? A connection string or a name is not. */
static bool is_sql(const char *sql)
{
    PgQueryParseResult r = pg_query_parse(sql);
    bool ok = !r.error && r.parse_tree && strstr(r.parse_tree, "\"stmt\"");
    pg_query_free_parse_result(r);
    return ok;
}

/* --- output --- */

static void add_str(struct guard_buf *b, const char *s)
{
    guard_buf_add(b, s, strlen(s));
}

static char *redact_text(const char *sql, size_t len, bool scs, int depth, bool in_comment);

/* Text that goes inside an annotation: an operator or a quoted name may hold the two
 * characters that would close the comment early. (Annotations themselves nest, as PostgreSQL's
 * block comments do.) */
static void add_text(struct guard_buf *b, const char *s, size_t n, bool in_comment)
{
    if (!in_comment) {
        guard_buf_add(b, s, n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        guard_buf_add(b, s + i, 1);
        if (s[i] == '*' && i + 1 < n && s[i + 1] == '/')
            guard_buf_add(b, " ", 1);
    }
}

/* The literal at loc became $num: when it is SQL passed to an SQL-text function, its redacted
 * text goes into the notes shown after the statement. */
static void annotate(struct guard_buf *notes, const struct inners *in, int loc, const char *num,
                     int depth)
{
    for (size_t k = 0; k < in->n; k++) {
        if (in->v[k].loc != loc || !is_sql(in->v[k].text))
            continue;
        char *r = redact_text(in->v[k].text, strlen(in->v[k].text), true, depth + 1, true);
        if (r) {
            add_str(notes, " /* ");
            add_str(notes, num);
            add_str(notes, ": ");
            add_str(notes, r);
            add_str(notes, " */");
        }
        free(r);
        return;
    }
}

/* Redacts sql read with the given standard_conforming_strings; NULL when it does not lex.
 * in_comment: the result goes inside an annotation. */
static char *redact_text(const char *sql, size_t len, bool scs, int depth, bool in_comment)
{
    struct tokens ts = {0};
    struct inners in = {0};
    struct guard_buf b = {0};
    unsigned long param = 0;
    bool want_inner = false;

    if (!scan(sql, len, scs, &ts))
        goto fail;
    for (size_t i = 0; i < ts.n; i++) {
        const struct token *t = &ts.v[i];
        if (t->tok == TOK_PARAM) {
            /* $n beyond an int is an error to PostgreSQL; numbering goes on after the cap */
            unsigned long v = strtoul(sql + t->start + 1, NULL, 10);
            v = v > INT32_MAX ? INT32_MAX : v;
            param = v > param ? v : param;
        }
        want_inner |= t->tok == TOK_IDENT && depth < MAX_INNER && names_sql_text(sql, t);
    }
    if (want_inner)
        find_inners(sql, len, scs, &in);
    /* literals are numbered after the text's own parameters, as pg_query_normalize does */
    struct guard_buf notes = {0};
    int prev = 0;
    for (size_t i = 0; i < ts.n; i++) {
        const struct token *t = &ts.v[i];
        guard_buf_add(&b, sql + prev, (size_t)(t->start - prev));
        prev = t->end;
        if (t->tok == TOK_SQL_COMMENT || t->tok == TOK_C_COMMENT) {
            guard_buf_add(&b, " ", 1);
            continue;
        }
        if (!is_literal(t->tok)) {
            add_text(&b, sql + t->start, (size_t)(t->end - t->start), in_comment);
            continue;
        }
        char num[32];
        snprintf(num, sizeof num, "$%lu", ++param);
        add_str(&b, num);
        annotate(&notes, &in, t->start, num, depth);
    }
    guard_buf_add(&b, sql + prev, len - (size_t)prev);
    if (notes.n)
        guard_buf_add(&b, notes.p, notes.n);
    free(notes.p);
    guard_buf_add(&b, "", 1);
    free(ts.v);
    free_inners(&in);
    if (b.oom || notes.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
fail:
    free(ts.v);
    free(b.p);
    return NULL;
}

char *guard_redact(const char *sql, size_t len, size_t max_parse)
{
    if (!max_parse)
        max_parse = GUARD_DEFAULT_MAX_PARSE;
    char *copy = strndup(sql ? sql : "", sql ? len : 0);
    if (!copy)
        return NULL;
    size_t n = strlen(copy);
    if (n > max_parse) {
        free(copy);
        return strdup(too_large);
    }
    char *on = redact_text(copy, n, true, 0, false);
    char *out = NULL;
    if (!on) {
        out = strdup(unparsable);
        goto done;
    }
    char *off = memchr(copy, '\\', n) ? redact_text(copy, n, false, 0, true) : NULL;
    /* (an operator holding the comment end makes the two differ: shown, harmlessly) */
    if (off && strcmp(on, off) != 0) {
        struct guard_buf b = {0};
        add_str(&b, on);
        add_str(&b, " /* with standard_conforming_strings off: ");
        add_str(&b, off);
        add_str(&b, " */");
        guard_buf_add(&b, "", 1);
        out = b.oom ? NULL : b.p;
        if (b.oom)
            free(b.p);
        free(on);
    } else {
        out = on;
    }
    free(off);
done:
    free(copy);
    guard_parse_release(n);
    return out;
}
