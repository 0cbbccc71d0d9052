/* Shadow rules: "shadow:ENTRY" in a deny or allow list is decided as a policy of its own
 * alongside the enforced one, and never refuses: its verdict rides in shadow_rule. Every row is
 * decided uncached and twice through a cache, which must agree byte for byte. */
#include "guard_test.h"

struct shadow_case {
    const char *deny;
    const char *allow;
    bool read_only;
    const char *sql;
    enum guard_verdict verdict;
    const char *rule;   /* enforced rule; NULL = not checked */
    const char *shadow; /* expected shadow_rule ("" = none) */
};

static void run_shadow_table(const char *name, const struct shadow_case *cases, size_t n,
                             const char *permit)
{
    for (size_t i = 0; i < n; i++) {
        const struct shadow_case *t = &cases[i];
        struct guard_policy *p = gt_policy(t->deny, t->allow, permit, t->read_only);
        struct guard_cache *c = guard_cache_new();
        struct guard_decision d, d1, d2;

        assert_non_null(c);
        gt_check(p, NULL, t->sql, &d);
        if (d.verdict != t->verdict || (t->rule && strcmp(d.rule, t->rule) != 0) ||
            strcmp(d.shadow_rule, t->shadow) != 0)
            fail_msg("%s row %zu [%s]: verdict %d rule \"%s\" shadow \"%s\", want %d \"%s\" "
                     "\"%s\"",
                     name, i, t->sql, (int)d.verdict, d.rule, d.shadow_rule, (int)t->verdict,
                     t->rule ? t->rule : "", t->shadow);
        gt_check(p, c, t->sql, &d1);
        gt_check(p, c, t->sql, &d2);
        if (memcmp(&d, &d1, sizeof d) != 0 || memcmp(&d, &d2, sizeof d) != 0)
            fail_msg("%s row %zu [%s]: cached decision differs", name, i, t->sql);
        guard_cache_free(c);
        guard_policy_free(p);
    }
}

static const struct shadow_case deny_cases[] = {
    {"shadow:truncate", NULL, false, "TRUNCATE t", NONE, NULL, "deny:truncate"},
    {"shadow:truncate", NULL, false, "select 1", NONE, NULL, ""},
    {"Shadow:TRUNCATE", NULL, false, "truncate t", NONE, NULL, "deny:truncate"},
    {"shadow: truncate", NULL, false, "truncate t", NONE, NULL, "deny:truncate"},
    {"shadow:drop", NULL, false, "DROP ROLE r", NONE, NULL, "deny:drop"},
    {"shadow:delete", NULL, false, "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", NONE,
     NULL, "deny:delete"},
    {"shadow:function:pg_sleep", NULL, false, "select pg_catalog.pg_sleep(1)", NONE, NULL,
     "deny:function:pg_sleep"},
    {"shadow:group:file_access", NULL, false, "select pg_read_file('/etc/passwd')", NONE, NULL,
     "deny:group:file_access"},
    /* enforced rules win, on the same statement and on a later one of the Query */
    {"truncate,shadow:truncate", NULL, false, "truncate t", DENY, "deny:truncate", ""},
    {"drop,shadow:truncate", NULL, false, "truncate t; drop table x", DENY, "deny:drop", ""},
    {"drop,shadow:truncate", NULL, false, "drop table x", DENY, "deny:drop", ""},
    {"drop,shadow:truncate", NULL, false, "truncate t", NONE, NULL, "deny:truncate"},
    /* the first shadow refusal of the Query is the one kept */
    {"shadow:truncate,shadow:delete", NULL, false, "select 1; delete from t; truncate t", NONE,
     NULL, "deny:delete"},
    {"shadow:function:pg_sleep", NULL, false, "select 'C:\\temp', pg_sleep(1)", NONE, NULL,
     "deny:function:pg_sleep"},
    /* the always-refused classes are enforced with any enforced rule... */
    {"drop,shadow:truncate", NULL, false, "select query_to_xml('select 1', true, true, '')", DENY,
     "sql-text", ""},
    {"drop,shadow:truncate", NULL, false, "select set_config(current_user, 'x', false)", DENY,
     "set-config", ""},
    /* ... and only shadowed by a policy of shadow rules alone */
    {"shadow:truncate", NULL, false, "select query_to_xml('select 1', true, true, '')", NONE, NULL,
     "sql-text"},
    {"shadow:truncate", NULL, false, "do $$begin end$$", NONE, NULL, "sql-text"},
    {"shadow:truncate", NULL, false, "select set_config(current_user, 'x', false)", NONE, NULL,
     "set-config"},
    {"shadow:function:pg_sleep", NULL, false, "select 'x\\'' , pg_sleep(1) --'", NONE, NULL,
     "standard_conforming_strings"},
    {"drop,shadow:function:pg_sleep", NULL, false, "select 'x\\'' , pg_sleep(1) --'", DENY,
     "standard_conforming_strings", ""},
    /* a syntax error is PostgreSQL's to report when nothing is enforced */
    {"shadow:truncate", NULL, false, "selec 1", NONE, NULL, ""},
    {"drop,shadow:truncate", NULL, false, "selec 1", SYNTX, "syntax", ""},
    /* read-only mode has no shadow form and stays enforced */
    {"shadow:truncate", NULL, true, "truncate t", RO, "read-only", ""},
    {"shadow:function:pg_sleep", NULL, true, "select pg_sleep(1)", NONE, NULL,
     "deny:function:pg_sleep"},
};

static void test_shadow_deny(void **state)
{
    (void)state;
    run_shadow_table("deny", deny_cases, sizeof deny_cases / sizeof deny_cases[0], NULL);
}

static const struct shadow_case allow_cases[] = {
    /* a shadow allow list is a list of its own: outside it, a statement "would be denied" */
    {NULL, "shadow:select", false, "select 1", NONE, NULL, ""},
    {NULL, "shadow:select", false, "delete from t", NONE, NULL, "allow"},
    {NULL, "shadow:select", false, "select 1 into x", NONE, NULL, "allow"},
    {NULL, "select,insert,shadow:select", false, "insert into t values (1)", NONE, NULL, "allow"},
    {NULL, "select,shadow:select,shadow:insert", false, "insert into t values (1)", DENY, "allow",
     ""},
    {NULL, "select,shadow:select,shadow:insert", false, "select 1", NONE, NULL, ""},
    /* a function allow list in the shadow list limits calls in the shadow only */
    {NULL, "shadow:select,shadow:function:count", false, "select now()", NONE, NULL, "allow"},
    {NULL, "shadow:select,shadow:function:count", false, "select count(*) from t", NONE, NULL, ""},
    {NULL, "select,function:now,shadow:select,shadow:function:count", false, "select now()", NONE,
     NULL, "allow"},
    {NULL, "select,function:now,shadow:select,shadow:function:count", false,
     "select count(*) from t", DENY, "allow", ""},
    /* deny beats allow in the shadow policy too */
    {"shadow:function:pg_sleep", "shadow:select", false, "select pg_sleep(1)", NONE, NULL,
     "deny:function:pg_sleep"},
    {"shadow:truncate", "select", false, "truncate t", DENY, "allow", ""},
    /* read-only mode and a shadow allow list */
    {NULL, "shadow:select", true, "show all", NONE, NULL, "allow"},
    {NULL, "shadow:select", true, "delete from t", RO, "read-only", ""},
};

static void test_shadow_allow(void **state)
{
    (void)state;
    run_shadow_table("allow", allow_cases, sizeof allow_cases / sizeof allow_cases[0], NULL);
}

/* The shadow policy takes the enforced one's permit entries. */
static const struct shadow_case permit_cases[] = {
    {"shadow:truncate", NULL, false, "select query_to_xml('select 1', true, true, '')", NONE, NULL,
     ""},
    {"shadow:function:query_to_xml", NULL, false, "select query_to_xml('select 1', true, true, '')",
     NONE, NULL, "deny:function:query_to_xml"},
    {NULL, "shadow:select", false, "do $$begin end$$", NONE, NULL, "allow"},
};

static void test_shadow_permit(void **state)
{
    (void)state;
    run_shadow_table("permit", permit_cases, sizeof permit_cases / sizeof permit_cases[0],
                     "function:query_to_xml,do");
}

/* What compiles, and what a policy of shadow rules only asks of the relay. */
static void test_shadow_compile(void **state)
{
    (void)state;
    struct guard_policy *p = gt_policy("shadow:truncate", NULL, NULL, false);
    assert_true(guard_policy_parses(p)); /* it must parse every statement to decide its shadow */
    assert_false(guard_policy_enforces(p));
    assert_false(p->has_rules);
    assert_non_null(p->shadow);
    assert_true(p->shadow->has_rules);
    assert_null(p->shadow->shadow);
    guard_policy_free(p);

    p = gt_policy(NULL, "shadow:select", "function:query_to_xml", false);
    assert_true(guard_policy_parses(p));
    assert_false(guard_policy_enforces(p));
    assert_true(p->shadow->kind_allow_list);
    assert_false(p->kind_allow_list);
    assert_true(guard_name_in(&p->shadow->permit_funcs, "query_to_xml"));
    guard_policy_free(p);

    p = gt_policy("drop", "shadow:select", NULL, false);
    assert_true(guard_policy_enforces(p));
    guard_policy_free(p);
    p = gt_policy(NULL, NULL, NULL, true);
    assert_true(guard_policy_enforces(p));
    assert_null(p->shadow);
    guard_policy_free(p);
    p = gt_policy(NULL, NULL, "do", false);
    assert_false(guard_policy_parses(p));
    assert_false(guard_policy_enforces(p));
    guard_policy_free(p);
    assert_false(guard_policy_enforces(NULL));
}

static void expect_error(const char *deny, const char *allow, const char *permit,
                         const char *needle)
{
    const char *d[] = {deny}, *a[] = {allow}, *pm[] = {permit};
    struct guard_rules r = {.deny = d,
                            .ndeny = deny ? 1 : 0,
                            .allow = a,
                            .nallow = allow ? 1 : 0,
                            .permit = pm,
                            .npermit = permit ? 1 : 0};
    char err[512] = "";
    struct guard_policy *p = guard_policy_compile(&r, err, sizeof err);
    if (p || !strstr(err, needle))
        fail_msg("deny=%s allow=%s permit=%s: %s, want an error with \"%s\"", deny, allow, permit,
                 p ? "compiled" : err, needle);
}

/* The shadow: grammar's errors name the entry. */
static void test_shadow_grammar_errors(void **state)
{
    (void)state;
    expect_error("shadow:", NULL, NULL, "empty shadow rule \"shadow:\" in deny list");
    expect_error(NULL, "shadow:  ", NULL, "empty shadow rule");
    expect_error("shadow:shadow:drop", NULL, NULL,
                 "invalid rule \"shadow:shadow:drop\" in deny list: shadow: is given twice");
    expect_error(NULL, "shadow:nope", NULL, "\"shadow:nope\": unknown statement kind \"nope\"");
    expect_error("shadow:group:nope", NULL, NULL, "\"shadow:group:nope\": unknown function group");
    expect_error("shadow:function:a b", NULL, NULL, "unexpected character");
    expect_error(NULL, NULL, "shadow:do", "invalid permit rule \"shadow:do\"");
}

/* A decision cached by shape keeps its shadow verdict for every text of that shape, and a
 * cache filled under one policy never answers for another. */
static void test_shadow_cache(void **state)
{
    (void)state;
    struct guard_policy *p = gt_policy("shadow:function:pg_sleep", NULL, NULL, false);
    struct guard_cache *c = guard_cache_new();
    struct guard_decision d;

    gt_check(p, c, "select pg_sleep(1)", &d);
    assert_string_equal(d.shadow_rule, "deny:function:pg_sleep");
    uint64_t hits = guard_cache_hits(c);
    gt_check(p, c, "select pg_sleep(2)", &d);
    assert_int_equal(guard_cache_hits(c), hits + 1);
    assert_int_equal(d.verdict, GUARD_ALLOW);
    assert_string_equal(d.shadow_rule, "deny:function:pg_sleep");
    gt_check(p, c, "select abs(1)", &d);
    gt_check(p, c, "select abs(2)", &d);
    assert_int_equal(guard_cache_hits(c), hits + 2);
    assert_string_equal(d.shadow_rule, "");

    struct guard_policy *q = gt_policy("function:pg_sleep", NULL, NULL, false);
    gt_check(q, c, "select pg_sleep(3)", &d);
    assert_int_equal(d.verdict, GUARD_DENY);
    assert_string_equal(d.shadow_rule, "");
    gt_check(p, c, "select pg_sleep(4)", &d);
    assert_int_equal(d.verdict, GUARD_ALLOW);
    assert_string_equal(d.shadow_rule, "deny:function:pg_sleep");
    guard_cache_free(c);
    guard_policy_free(q);
    guard_policy_free(p);
}

/* Over --max-parse-size, and refusals made outside the guard (a full parser queue), under a
 * policy that enforces nothing: the statement runs and the shadow says what would have been. */
static void test_shadow_only_refuses_nothing(void **state)
{
    (void)state;
    const char *deny[] = {"shadow:truncate"};
    struct guard_rules r = {.deny = deny, .ndeny = 1, .max_parse = 1000};
    char err[256];
    struct guard_policy *p = guard_policy_compile(&r, err, sizeof err);
    assert_non_null(p);
    char *big = gt_repeat("select 1", " + 1", 400, "");
    struct guard_decision d;
    struct guard_cache_key key;
    assert_int_equal(guard_precheck(p, NULL, big, strlen(big), 0, &d, &key), 0);
    assert_int_equal(d.verdict, GUARD_ALLOW);
    assert_string_equal(d.shadow_rule, "max-parse-size");
    gt_check(p, NULL, big, &d);
    assert_int_equal(d.verdict, GUARD_ALLOW);
    assert_string_equal(d.shadow_rule, "max-parse-size");
    free(big);

    memset(&d, 0, sizeof d);
    guard_decide_fill(&d, GUARD_BUSY, "parse-queue", "busy");
    guard_shadow_only(p, &d);
    assert_int_equal(d.verdict, GUARD_ALLOW);
    assert_string_equal(d.shadow_rule, "parse-queue");
    assert_string_equal(d.rule, "");
    memset(&d, 0, sizeof d);
    guard_decide_fill(&d, GUARD_COPY, "copy-protocol", "COPY");
    guard_shadow_only(p, &d);
    assert_int_equal(d.verdict, GUARD_COPY);
    guard_policy_free(p);

    /* COPY through the protocol is --copy reject, not a rule: still refused */
    p = gt_policy("shadow:truncate", NULL, NULL, false);
    gt_check(p, NULL, "copy t from stdin", &d);
    assert_int_equal(d.verdict, GUARD_COPY);
    guard_policy_free(p);

    p = gt_policy("drop", NULL, NULL, false);
    memset(&d, 0, sizeof d);
    guard_decide_fill(&d, GUARD_BUSY, "parse-queue", "busy");
    guard_shadow_only(p, &d);
    assert_int_equal(d.verdict, GUARD_BUSY);
    assert_string_equal(d.shadow_rule, "");
    guard_policy_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shadow_deny),
        cmocka_unit_test(test_shadow_allow),
        cmocka_unit_test(test_shadow_permit),
        cmocka_unit_test(test_shadow_compile),
        cmocka_unit_test(test_shadow_grammar_errors),
        cmocka_unit_test(test_shadow_cache),
        cmocka_unit_test(test_shadow_only_refuses_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
