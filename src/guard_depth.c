/* An upper bound on the parse-tree depth of a SQL text, from a scan of its tokens.
 *
 * PostgreSQL's grammar builds left-deep trees for chains like "1 + 1 + 1 ...", "a || b || ...",
 * "NOT NOT ...", "x::t::t ...", "select ... union select ...". libpg_query's JSON output walks
 * such a tree recursively, so a long enough chain overflows the thread's stack: the proxy must
 * refuse it before parsing. Elements of a comma-separated list are siblings, so a segment's
 * count starts again at each comma; AND/OR chains are flattened by the grammar and not counted.
 * Everything that can nest counts at least one level, so the result only over-estimates. */
#include "guard_internal.h"

#include <ctype.h>
#include <string.h>

#define LEVEL_WEIGHT 3 /* a parenthesised group adds a few nodes (SubLink, FuncCall, ...) */

static bool word_is(const char *w, size_t n, const char *kw)
{
    size_t k = strlen(kw);
    if (n != k)
        return false;
    for (size_t i = 0; i < n; i++)
        if (tolower((unsigned char)w[i]) != kw[i])
            return false;
    return true;
}

/* Levels a keyword can add (0 for the rest). */
static size_t keyword_weight(const char *w, size_t n)
{
    static const char *const nesting[] = {
        "not",    "union",   "intersect", "except",  "is",      "at",     "collate",
        "case",   "like",    "ilike",     "similar", "between", "in",     "overlaps",
        "isnull", "notnull", "exists",    "any",     "some",    "all",    "array",
        "row",    "with",    "when",      "then",    "else",    "escape", "distinct"};
    if (word_is(w, n, "select") || word_is(w, n, "values"))
        return 4;
    for (size_t i = 0; i < sizeof(nesting) / sizeof(nesting[0]); i++)
        if (word_is(w, n, nesting[i]))
            return 1;
    return 0;
}

/* Skips a quoted token starting at s[i] (the opening quote); returns the index after it. */
static size_t skip_quoted(const char *s, size_t len, size_t i, char q, bool backslashes)
{
    for (i++; i < len; i++) {
        if (backslashes && s[i] == '\\') {
            i++;
            continue;
        }
        if (s[i] == q) {
            if (i + 1 < len && s[i + 1] == q) {
                i++;
                continue;
            }
            return i + 1;
        }
    }
    return len;
}

static size_t skip_dollar(const char *s, size_t len, size_t i)
{
    size_t t = i + 1;
    while (t < len && (isalnum((unsigned char)s[t]) || s[t] == '_'))
        t++;
    if (t >= len || s[t] != '$')
        return i + 1; /* a parameter like $1, not a dollar quote */
    size_t taglen = t - i + 1;
    for (size_t k = t + 1; k + taglen <= len; k++)
        if (memcmp(s + k, s + i, taglen) == 0)
            return k + taglen;
    return len;
}

static size_t skip_block_comment(const char *s, size_t len, size_t i)
{
    int nest = 0;
    for (; i + 1 < len; i++) {
        if (s[i] == '/' && s[i + 1] == '*') {
            nest++;
            i++;
        } else if (s[i] == '*' && s[i + 1] == '/') {
            i++;
            if (--nest == 0)
                return i + 1;
        }
    }
    return len;
}

static bool is_op_char(char c)
{
    return strchr("+-*/<>=~!@#%^&|`?:", c) != NULL;
}

size_t guard_depth_estimate(const char *s, size_t len)
{
    size_t saved[GUARD_MAX_DEPTH / LEVEL_WEIGHT + 2];
    size_t level = 0, seg = 0, outer = 0, worst = 0;
    for (size_t i = 0; i < len;) {
        char c = s[i];
        size_t add = 0;
        if (c == '\'') {
            bool esc = i > 0 && (s[i - 1] == 'e' || s[i - 1] == 'E');
            i = skip_quoted(s, len, i, '\'', esc);
            continue;
        } else if (c == '"') {
            i = skip_quoted(s, len, i, '"', false);
            continue;
        } else if (c == '$') {
            i = skip_dollar(s, len, i);
            continue;
        } else if (c == '-' && i + 1 < len && s[i + 1] == '-') {
            while (i < len && s[i] != '\n')
                i++;
            continue;
        } else if (c == '/' && i + 1 < len && s[i + 1] == '*') {
            i = skip_block_comment(s, len, i);
            continue;
        } else if (c == '(' || c == '[') {
            if (level + 1 >= sizeof(saved) / sizeof(saved[0]))
                return GUARD_MAX_DEPTH + 1;
            saved[level++] = seg;
            outer += seg;
            seg = 0;
            i++;
        } else if (c == ')' || c == ']') {
            if (level > 0) {
                seg = saved[--level];
                outer -= seg;
            }
            add = 1; /* the group itself is one node of the enclosing segment */
            i++;
        } else if (c == ',') {
            seg = 0;
            i++;
        } else if (c == ';') {
            level = seg = outer = 0;
            i++;
        } else if (is_op_char(c)) {
            while (i < len && is_op_char(s[i]))
                i++;
            add = 1;
        } else if (isalpha((unsigned char)c) || c == '_' || (unsigned char)c >= 0x80) {
            size_t start = i;
            while (i < len && (isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == '$' ||
                               (unsigned char)s[i] >= 0x80))
                i++;
            add = keyword_weight(s + start, i - start);
        } else {
            i++;
        }
        seg += add;
        size_t depth = outer + seg + level * LEVEL_WEIGHT;
        if (depth > worst)
            worst = depth;
        if (worst > GUARD_MAX_DEPTH)
            return worst;
    }
    return worst;
}
