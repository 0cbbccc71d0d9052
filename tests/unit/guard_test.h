/* Helpers shared by the guard unit tests: policies from comma-separated rule lists, and
 * table rows decided with and without the cache. */
#ifndef PGWP_GUARD_TEST_H
#define PGWP_GUARD_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "guard.h"
#include "guard_internal.h"

#define NONE  GUARD_ALLOW
#define DENY  GUARD_DENY
#define RO    GUARD_READ_ONLY
#define COPY  GUARD_COPY
#define SYNTX GUARD_SYNTAX
#define BIG   GUARD_TOO_COMPLEX

/* deny/allow: comma-separated rules; deny "-" = pass a NULL policy. */
struct policy_case {
    const char *deny;
    const char *allow;
    bool read_only;
    const char *sql;
    enum guard_verdict verdict;
    const char *rule; /* expected rule; NULL = not checked */
};

static inline char **gt_split(const char *list, size_t *n)
{
    char **out = calloc(32, sizeof *out);
    *n = 0;
    if (!list || !*list)
        return out;
    char *copy = strdup(list), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && *n < 32; tok = strtok_r(NULL, ",", &save))
        out[(*n)++] = strdup(tok);
    free(copy);
    return out;
}

static inline void gt_free(char **r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(r[i]);
    free(r);
}

static inline struct guard_policy *gt_policy(const char *deny, const char *allow,
                                             const char *permit, bool ro)
{
    size_t nd, na, np;
    char err[512] = "";
    char **d = gt_split(deny, &nd), **a = gt_split(allow, &na), **pm = gt_split(permit, &np);
    struct guard_rules r = {.deny = (const char *const *)d,
                            .ndeny = nd,
                            .allow = (const char *const *)a,
                            .nallow = na,
                            .permit = (const char *const *)pm,
                            .npermit = np,
                            .read_only = ro};
    struct guard_policy *p = guard_policy_compile(&r, err, sizeof err);
    if (!p)
        fail_msg("policy deny=%s allow=%s permit=%s: %s", deny ? deny : "", allow ? allow : "",
                 permit ? permit : "", err);
    gt_free(d, nd);
    gt_free(a, na);
    gt_free(pm, np);
    return p;
}

static inline void gt_check(const struct guard_policy *p, struct guard_cache *c, const char *sql,
                            struct guard_decision *d)
{
    assert_int_equal(guard_check(p, c, sql, strlen(sql), d), 0);
}

/* Decides every row uncached, then twice through a cache: all three must agree. permit:
 * --permit rules for every row of the table (NULL = none). */
static inline void gt_run_table_permit(const char *name, const struct policy_case *cases, size_t n,
                                       const char *permit)
{
    for (size_t i = 0; i < n; i++) {
        const struct policy_case *t = &cases[i];
        bool null_policy = t->deny && strcmp(t->deny, "-") == 0;
        struct guard_policy *p =
            null_policy ? NULL : gt_policy(t->deny, t->allow, permit, t->read_only);
        struct guard_cache *c = guard_cache_new();
        struct guard_decision d, d1, d2;

        assert_non_null(c);
        gt_check(p, NULL, t->sql, &d);
        if (d.verdict != t->verdict || (t->rule && strcmp(d.rule, t->rule) != 0))
            fail_msg("%s row %zu [%s]: verdict %d rule \"%s\" (%s), want %d \"%s\"", name, i,
                     t->sql, (int)d.verdict, d.rule, d.message, (int)t->verdict,
                     t->rule ? t->rule : "");
        if (d.verdict != GUARD_ALLOW && d.message[0] == '\0')
            fail_msg("%s row %zu [%s]: empty message", name, i, t->sql);
        gt_check(p, c, t->sql, &d1);
        gt_check(p, c, t->sql, &d2);
        if (memcmp(&d, &d1, sizeof d) != 0 || memcmp(&d, &d2, sizeof d) != 0)
            fail_msg("%s row %zu [%s]: cached decision differs", name, i, t->sql);
        guard_cache_free(c);
        guard_policy_free(p);
    }
}

#define gt_run_table(name, cases, n) gt_run_table_permit(name, cases, n, NULL)

static inline char *gt_repeat(const char *head, const char *unit, size_t n, const char *tail)
{
    size_t hl = strlen(head), ul = strlen(unit), tl = strlen(tail);
    char *q = malloc(hl + n * ul + tl + 1);
    memcpy(q, head, hl);
    for (size_t i = 0; i < n; i++)
        memcpy(q + hl + i * ul, unit, ul);
    memcpy(q + hl + n * ul, tail, tl);
    q[hl + n * ul + tl] = 0;
    return q;
}

#endif
