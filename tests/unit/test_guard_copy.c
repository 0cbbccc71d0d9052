/* The statement policy under --copy allow (guard_policy_allow_copy): COPY FROM STDIN / TO
 * STDOUT is decided like any statement. A COPY verdict that stopped the decision let --deny
 * copy, --read-only and every later statement of the Query through. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "guard.h"

struct copy_case {
    const char *deny; /* one rule, or NULL */
    bool read_only;
    const char *sql;
    enum guard_verdict verdict;
    const char *rule;
};

static const struct copy_case copy_cases[] = {
    {"copy", false, "COPY t FROM STDIN", GUARD_DENY, "deny:copy"},
    {"copy", false, "COPY (SELECT 1) TO STDOUT", GUARD_DENY, "deny:copy"},
    {"drop", false, "COPY t TO STDOUT; DROP TABLE t", GUARD_DENY, "deny:drop"},
    {"drop", false, "COPY t FROM STDIN", GUARD_ALLOW, ""},
    {NULL, true, "COPY t FROM STDIN", GUARD_READ_ONLY, "read-only"},
    {NULL, true, "COPY t TO STDOUT", GUARD_ALLOW, ""},
    {NULL, true, "COPY (SELECT 1) TO STDOUT", GUARD_ALLOW, ""},
    {NULL, true, "COPY (DELETE FROM t RETURNING *) TO STDOUT", GUARD_READ_ONLY, "read-only"},
    {NULL, true, "COPY t TO '/tmp/x'", GUARD_READ_ONLY, "read-only"}, /* a file: not a read */
    {NULL, false, "COPY t FROM STDIN; COPY t TO STDOUT", GUARD_ALLOW, ""},
};

static struct guard_policy *policy_of(const struct copy_case *c)
{
    char err[256] = "";
    const char *deny[] = {c->deny};
    struct guard_policy *p =
        guard_policy_new(deny, c->deny ? 1 : 0, NULL, 0, c->read_only, err, sizeof err);
    if (!p)
        fail_msg("policy %s: %s", c->deny ? c->deny : "-", err);
    return p;
}

static void decide(const struct guard_policy *p, struct guard_cache *cache, const char *sql,
                   struct guard_decision *d)
{
    assert_int_equal(guard_check(p, cache, sql, strlen(sql), d), 0);
}

static void test_copy_allowed_decided_like_any_statement(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof copy_cases / sizeof copy_cases[0]; i++) {
        const struct copy_case *c = &copy_cases[i];
        struct guard_policy *p = policy_of(c);
        struct guard_cache *cache = guard_cache_new();
        struct guard_decision d, cached;
        guard_policy_allow_copy(p);
        decide(p, NULL, c->sql, &d);
        if (d.verdict != c->verdict || strcmp(d.rule, c->rule) != 0)
            fail_msg("case %zu [%s]: verdict %d rule \"%s\", want %d \"%s\"", i, c->sql,
                     (int)d.verdict, d.rule, (int)c->verdict, c->rule);
        decide(p, cache, c->sql, &cached);
        decide(p, cache, c->sql, &cached); /* a cache hit gives the same answer */
        assert_memory_equal(&d, &cached, sizeof d);
        guard_cache_free(cache);
        guard_policy_free(p);
    }
}

/* --copy reject (the default): COPY is refused as a protocol first, whatever the rules. */
static void test_copy_rejected_refused_first(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof copy_cases / sizeof copy_cases[0]; i++) {
        if (!strstr(copy_cases[i].sql, " STD"))
            continue; /* a server-side file is not the COPY sub-protocol */
        struct guard_policy *p = policy_of(&copy_cases[i]);
        struct guard_decision d;
        decide(p, NULL, copy_cases[i].sql, &d);
        assert_int_equal(d.verdict, GUARD_COPY);
        assert_string_equal(d.rule, "copy-protocol");
        guard_policy_free(p);
    }
    struct guard_decision d;
    decide(NULL, NULL, "SELECT 1; COPY t TO STDOUT", &d); /* no policy at all */
    assert_int_equal(d.verdict, GUARD_COPY);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_copy_allowed_decided_like_any_statement),
        cmocka_unit_test(test_copy_rejected_refused_first),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
