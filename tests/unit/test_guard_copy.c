/* The COPY sub-protocol in the policy: refused under --copy reject even without rules (found
 * by its first keyword, then parsed), and under --copy allow decided like any statement:
 * kind copy, and in read-only mode only COPY TO STDOUT, which reads. */
#include "guard_test.h"

static struct guard_policy *copy_policy(const char *deny, const char *allow, bool ro,
                                        bool relay_copy)
{
    size_t nd = 0, na = 0;
    char err[512] = "";
    char **d = gt_split(deny, &nd), **a = gt_split(allow, &na);
    struct guard_rules r = {.deny = (const char *const *)d,
                            .ndeny = nd,
                            .allow = (const char *const *)a,
                            .nallow = na,
                            .read_only = ro,
                            .relay_copy = relay_copy};
    struct guard_policy *p = guard_policy_compile(&r, err, sizeof err);
    if (!p)
        fail_msg("policy: %s", err);
    gt_free(d, nd);
    gt_free(a, na);
    return p;
}

struct copy_case {
    const char *sql;
    enum guard_verdict verdict;
    const char *rule; /* NULL = not checked */
};

static void run(struct guard_policy *p, const struct copy_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct guard_decision d;
        gt_check(p, NULL, cases[i].sql, &d);
        if (d.verdict != cases[i].verdict || (cases[i].rule && strcmp(d.rule, cases[i].rule) != 0))
            fail_msg("[%s]: verdict %d rule \"%s\" (%s), want %d \"%s\"", cases[i].sql,
                     (int)d.verdict, d.rule, d.message, (int)cases[i].verdict,
                     cases[i].rule ? cases[i].rule : "");
    }
    guard_policy_free(p);
}

static void test_reject_without_rules(void **state)
{
    (void)state;
    static const struct copy_case cases[] = {
        {"copy t to stdout", GUARD_COPY, "copy-protocol"},
        {"COPY t FROM STDIN", GUARD_COPY, "copy-protocol"},
        {"  /* a /* nested */ comment */ -- and a line\n copy (select 1) to stdout", GUARD_COPY,
         "copy-protocol"},
        {"\tcopy\"t\" from stdin", GUARD_COPY, "copy-protocol"},
        /* a server-side file is not the sub-protocol: PostgreSQL judges it */
        {"copy t to '/tmp/x'", GUARD_ALLOW, NULL},
        /* not the first keyword: the relay ends it at the upstream's CopyOutResponse */
        {"select 1; copy t to stdout", GUARD_ALLOW, NULL},
        {"copyx", GUARD_ALLOW, NULL},
        {"select 'copy t to stdout'", GUARD_ALLOW, NULL},
        /* PostgreSQL answers its own syntax error */
        {"copy t to", GUARD_ALLOW, NULL},
        {"copy", GUARD_ALLOW, NULL},
    };
    run(copy_policy(NULL, NULL, false, false), cases, sizeof cases / sizeof cases[0]);
}

static void test_allow_without_rules_parses_nothing(void **state)
{
    (void)state;
    static const struct copy_case cases[] = {
        {"copy t to stdout", GUARD_ALLOW, NULL},
        {"copy t from stdin", GUARD_ALLOW, NULL},
    };
    run(copy_policy(NULL, NULL, false, true), cases, sizeof cases / sizeof cases[0]);
}

static void test_allow_in_read_only(void **state)
{
    (void)state;
    static const struct copy_case cases[] = {
        {"copy t to stdout", GUARD_ALLOW, NULL},
        {"copy (select * from t) to stdout", GUARD_ALLOW, NULL},
        {"copy t from stdin", GUARD_READ_ONLY, "read-only"},
        {"copy t to '/tmp/x'", GUARD_READ_ONLY, "read-only"},
        {"copy (delete from t returning *) to stdout", GUARD_READ_ONLY, "read-only"},
        {"copy (select pg_terminate_backend(1)) to stdout", GUARD_READ_ONLY, "read-only"},
    };
    run(copy_policy(NULL, NULL, true, true), cases, sizeof cases / sizeof cases[0]);
}

static void test_allow_under_rules(void **state)
{
    (void)state;
    static const struct copy_case deny_copy[] = {
        {"copy t to stdout", GUARD_DENY, "deny:copy"},
        {"copy t from stdin", GUARD_DENY, "deny:copy"},
        {"copy (select 1) to stdout", GUARD_DENY, "deny:copy"},
    };
    run(copy_policy("copy", NULL, false, true), deny_copy, sizeof deny_copy / sizeof deny_copy[0]);
    /* an allow list admits COPY TO only with what its query does */
    static const struct copy_case allow[] = {
        {"copy t to stdout", GUARD_ALLOW, NULL},
        {"copy t from stdin", GUARD_DENY, "allow"},
        {"copy (delete from t returning *) to stdout", GUARD_DENY, "allow"},
    };
    run(copy_policy(NULL, "select,copy", false, true), allow, sizeof allow / sizeof allow[0]);
    static const struct copy_case reject[] = {
        {"copy t to stdout", GUARD_COPY, "copy-protocol"},
    };
    run(copy_policy(NULL, "select,copy", false, false), reject, 1);
}

/* A COPY's verdict does not decide the whole Query: the statements after it are decided too,
 * and a cached answer is the same. */
static void test_allow_decides_later_statements(void **state)
{
    (void)state;
    static const struct copy_case cases[] = {
        {"copy t to stdout; drop table t", GUARD_DENY, "deny:drop"},
        {"copy (select 1) to stdout; drop table t", GUARD_DENY, "deny:drop"},
        {"copy t from stdin", GUARD_ALLOW, NULL},
        {"copy t from stdin; copy t to stdout", GUARD_ALLOW, NULL},
    };
    struct guard_policy *p = copy_policy("drop", NULL, false, true);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct guard_cache *c = guard_cache_new();
        struct guard_decision d, cached;
        assert_non_null(c);
        gt_check(p, NULL, cases[i].sql, &d);
        gt_check(p, c, cases[i].sql, &cached);
        gt_check(p, c, cases[i].sql, &cached); /* a hit */
        assert_memory_equal(&d, &cached, sizeof d);
        guard_cache_free(c);
    }
    run(p, cases, sizeof cases / sizeof cases[0]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reject_without_rules),
        cmocka_unit_test(test_allow_without_rules_parses_nothing),
        cmocka_unit_test(test_allow_in_read_only),
        cmocka_unit_test(test_allow_under_rules),
        cmocka_unit_test(test_allow_decides_later_statements),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
