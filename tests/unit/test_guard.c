/* Statement policy and budgets (the decision cache is test_guard_cache.c). The policy table is
 * the contract: each row is a SQL text, a policy and the verdict a client must see. */
#include "guard_test.h"

static const struct policy_case cases[] = {
    /* no policy: nothing is parsed, PostgreSQL judges every text alone (the relay refuses
     * COPY when the upstream starts it) */
    {"-", NULL, false, "SELECT 1", NONE, ""},
    {"-", NULL, false, "COPY t FROM STDIN", NONE, ""},
    {"-", NULL, false, "SELECT 1; CoPy t FROM stdin", NONE, ""},
    {"-", NULL, false, "SET standard_conforming_strings = off", NONE, ""},
    {"-", NULL, false, "SET LOCAL backslash_quote = on", NONE, ""},
    {"-", NULL, false, "SELECT set_config('standard_conforming_strings', 'off', false)", NONE, ""},
    {"-", NULL, false, "SELECT set_config(name, 'x', false) FROM t", NONE, ""},
    {"-", NULL, false, "selec 1", NONE, ""},
    /* no rules, --copy reject: a text whose first keyword is COPY is parsed to refuse the
     * sub-protocol before it starts */
    {"", NULL, false, "COPY t FROM STDIN", COPY, "copy-protocol"},
    {"", NULL, false, "DROP TABLE t", NONE, ""},
    {"", NULL, false, "SELECT query_to_xml('select 1', true, false, '')", NONE, ""},
    /* with a policy: COPY through the protocol, and the string settings are plain SETs */
    {"drop", NULL, false, "COPY t FROM STDIN", COPY, "copy-protocol"},
    {"drop", NULL, false, "copy t to stdout", COPY, "copy-protocol"},
    {"drop", NULL, false, "COPY (SELECT 1) TO STDOUT WITH (FORMAT csv)", COPY, "copy-protocol"},
    {"drop", NULL, false, "SELECT 1; CoPy t FROM stdin", COPY, "copy-protocol"},
    {"drop", NULL, false, "COPY t FROM '/tmp/x'", NONE, ""},
    {"drop", NULL, false, "COPY t TO PROGRAM 'cat'", NONE, ""},
    {"drop", NULL, false, "SELECT * FROM copy_log", NONE, ""},
    {"drop", NULL, false, "SET standard_conforming_strings = off", NONE, ""},
    {"drop", NULL, false, "reset standard_conforming_strings", NONE, ""},
    {"drop", NULL, false, "SET U&\"\\0073tandard_conforming_strings\" = off", NONE, ""},
    {"drop", NULL, false, "SELECT set_config('standard_conforming_strings', 'off', false)", NONE,
     ""},
    {"set", NULL, false, "SET standard_conforming_strings = off", DENY, "deny:set"},
    {"drop", NULL, false, "SELECT set_config(name, 'x', false) FROM t", DENY, "set-config"},

    /* deny by kind: spelling games */
    {"drop", NULL, false, "DrOp TaBlE t", DENY, "deny:drop"},
    {"drop", NULL, false, "DROP /*x*/ TABLE t", DENY, "deny:drop"},
    {"drop", NULL, false, "DROP/**/TABLE/**/t", DENY, "deny:drop"},
    {"drop", NULL, false, "select 1; drop table t", DENY, "deny:drop"},
    {"drop", NULL, false, "\n\t  DROP\n  TABLE\r\n\"T\"  ;", DENY, "deny:drop"},
    {"drop", NULL, false, "DROP TABLE \"drop\"", DENY, "deny:drop"},
    {"drop", NULL, false, "SELECT \"drop table t\" FROM x", NONE, ""},
    {"drop", NULL, false, "SELECT 'drop table t'", NONE, ""},
    {"drop", NULL, false, "SELECT 1 -- ; DROP TABLE t", NONE, ""},
    {"drop", NULL, false, "SELECT $$; DROP TABLE t; $$", NONE, ""},
    {"drop", NULL, false, "SELECT $x$'$x$; DROP TABLE t; --'", DENY, "deny:drop"},
    {"drop", NULL, false, "SELECT 1 /* ; DROP TABLE t */", NONE, ""},
    {"DROP ", NULL, false, "DROP INDEX i", DENY, "deny:drop"},
    {"truncate", NULL, false, "TRUNCATE t", DENY, "deny:truncate"},
    {"alter_system", NULL, false, "ALTER SYSTEM SET work_mem = '1MB'", DENY, "deny:alter_system"},

    /* families */
    {"drop", NULL, false, "DROP ROLE r", DENY, "deny:drop"},
    {"drop", NULL, false, "DROP DATABASE d", DENY, "deny:drop"},
    {"drop", NULL, false, "DROP OWNED BY r", DENY, "deny:drop"},
    {"drop_role", NULL, false, "DROP USER u", DENY, "deny:drop_role"},
    {"drop_role", NULL, false, "DROP TABLE t", NONE, ""},
    {"create", NULL, false, "CREATE ROLE r", DENY, "deny:create"},
    {"create", NULL, false, "CREATE TABLE t (a int)", DENY, "deny:create"},
    {"create", NULL, false, "CREATE AGGREGATE a (sfunc = f, stype = int)", DENY, "deny:create"},
    {"alter", NULL, false, "ALTER SYSTEM SET work_mem = '1MB'", DENY, "deny:alter"},
    {"alter", NULL, false, "ALTER TABLE t RENAME TO u", DENY, "deny:alter"},
    {"alter", NULL, false, "SELECT 1", NONE, ""},

    /* nested statements */
    {"delete", NULL, false, "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", DENY,
     "deny:delete"},
    {"delete", NULL, false, "EXPLAIN ANALYZE DELETE FROM t", DENY, "deny:delete"},
    {"delete", NULL, false, "EXPLAIN SELECT 1", NONE, ""},
    {"delete", NULL, false, "PREPARE p AS DELETE FROM t", DENY, "deny:delete"},
    {"delete", NULL, false, "EXECUTE p", NONE, ""},
    {"delete", NULL, false,
     "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC DELETE FROM t; SELECT 1; END", DENY,
     "deny:delete"},
    {"delete", NULL, false, "CREATE RULE r AS ON INSERT TO t DO INSTEAD DELETE FROM u", DENY,
     "deny:delete"},
    {"create_table_as", NULL, false, "CREATE TABLE x AS SELECT 1", DENY, "deny:create_table_as"},
    {"create", NULL, false, "CREATE TABLE x AS SELECT 1", DENY, "deny:create"},
    {"create_table_as", NULL, false, "SELECT 1 INTO x", DENY, "deny:create_table_as"},
    {"create", NULL, false, "select * into x from t", DENY, "deny:create"},
    {"create_materialized_view", NULL, false, "CREATE MATERIALIZED VIEW v AS SELECT 1", DENY,
     "deny:create_materialized_view"},
    {"create_table_as", NULL, false, "CREATE MATERIALIZED VIEW v AS SELECT 1", NONE, ""},
    {"vacuum", NULL, false, "VACUUM t", DENY, "deny:vacuum"},
    {"vacuum", NULL, false, "ANALYZE t", NONE, ""},
    {"analyze", NULL, false, "analyze", DENY, "deny:analyze"},
    {"select", NULL, false, "INSERT INTO t SELECT * FROM u", DENY, "deny:select"},
    {"copy", NULL, false, "COPY t TO '/tmp/x'", DENY, "deny:copy"},

    /* functions */
    {"function:pg_terminate_backend", NULL, false, "SELECT pg_terminate_backend(1)", DENY,
     "deny:function:pg_terminate_backend"},
    {"function:pg_read_file", NULL, false, "SELECT pg_catalog.pg_read_file('x')", DENY,
     "deny:function:pg_read_file"},
    {"function:dblink", NULL, false, "select * from dblink('host=x', 'select 1') as t(a int)", DENY,
     "deny:function:dblink"},
    {"function:pg_sleep", NULL, false, "SELECT PG_SLEEP(1)", DENY, "deny:function:pg_sleep"},
    {"Function:PG_CATALOG.PG_SLEEP", NULL, false, "SELECT \"pg_sleep\"(1)", DENY,
     "deny:function:pg_sleep"},
    {"function:pg_sleep", NULL, false, "SELECT U&\"pg_sl\\0065ep\"(1)", DENY,
     "deny:function:pg_sleep"},
    {"function:pg_sleep", NULL, false, "SELECT * FROM ROWS FROM (pg_sleep(1))", DENY,
     "deny:function:pg_sleep"},
    {"function:pg_sleep", NULL, false,
     "SELECT count(*) FROM t WHERE x IN (SELECT abs(pg_sleep(1)))", DENY, "deny:function:pg_sleep"},
    {"function:pg_sleep", NULL, false, "SELECT pg_sleep_for('1s')", NONE, ""},
    {"function:pg_sleep", NULL, false, "SELECT now()", NONE, ""},
    {"function:p", NULL, false, "CALL p()", DENY, "deny:function:p"},
    {"function:pg_sleep", NULL, false, "SELECT set_config(name, 'x', false) FROM t", DENY,
     "set-config"},

    /* read-only */
    {NULL, NULL, true, "SELECT * FROM t", NONE, ""},
    {NULL, NULL, true, "INSERT INTO t VALUES (1)", RO, "read-only"},
    {NULL, NULL, true, "UPDATE t SET a = 1", RO, "read-only"},
    {NULL, NULL, true, "DELETE FROM t", RO, "read-only"},
    {NULL, NULL, true, "MERGE INTO t USING u ON t.a = u.a WHEN MATCHED THEN DELETE", RO,
     "read-only"},
    {NULL, NULL, true, "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", RO, "read-only"},
    {NULL, NULL, true, "SELECT 1 INTO x", RO, "read-only"},
    {NULL, NULL, true, "EXPLAIN SELECT 1", NONE, ""},
    {NULL, NULL, true, "EXPLAIN ANALYZE DELETE FROM t", RO, "read-only"},
    {NULL, NULL, true, "CREATE TEMP TABLE x (a int)", RO, "read-only"},
    {NULL, NULL, true, "COPY t FROM '/tmp/f'", RO, "read-only"},
    {NULL, NULL, true, "COPY t TO STDOUT", COPY, "copy-protocol"},
    {NULL, NULL, true, "DO $$BEGIN END$$", RO, "read-only"},
    {NULL, NULL, true, "CALL p()", RO, "read-only"},
    {NULL, NULL, true, "SET transaction_read_only = off", RO, "read-only"},
    {NULL, NULL, true, "SET default_transaction_read_only TO off", RO, "read-only"},
    {NULL, NULL, true, "RESET default_transaction_read_only", NONE, ""},
    {NULL, NULL, true, "SET SESSION AUTHORIZATION bob", RO, "read-only"},
    {NULL, NULL, true, "SET ROLE bob", RO, "read-only"},
    {NULL, NULL, true, "RESET ROLE", RO, "read-only"},
    {NULL, NULL, true, "SELECT set_config('role', 'bob', false)", RO, "read-only"},
    {NULL, NULL, true, "SELECT set_config('work_mem', '1MB', false)", NONE, ""},
    {NULL, NULL, true, "BEGIN READ WRITE", RO, "read-only"},
    {NULL, NULL, true, "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE", RO,
     "read-only"},
    {NULL, NULL, true, "SET TRANSACTION READ WRITE", RO, "read-only"},
    {NULL, NULL, true, "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", RO, "read-only"},
    {NULL, NULL, true, "BEGIN READ ONLY; SELECT 1; COMMIT", NONE, ""},
    {NULL, NULL, true, "BEGIN; SAVEPOINT s; RELEASE s; ROLLBACK", NONE, ""},
    {NULL, NULL, true, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", NONE, ""},
    {NULL, NULL, true, "SET work_mem = '64MB'; SHOW work_mem; RESET ALL", NONE, ""},
    {NULL, NULL, true, "DECLARE c CURSOR FOR SELECT 1; FETCH 1 FROM c; MOVE c; CLOSE c", NONE, ""},
    {NULL, NULL, true, "DISCARD ALL; LISTEN x; UNLISTEN *", NONE, ""},
    {NULL, NULL, true, "NOTIFY x", RO, "read-only"},
    {NULL, NULL, true, "PREPARE p AS SELECT 1; EXECUTE p; DEALLOCATE p", NONE, ""},
    {NULL, NULL, true, "PREPARE p AS INSERT INTO t VALUES (1)", RO, "read-only"},
    {NULL, NULL, true, "SELECT * FROM t FOR UPDATE", RO, "read-only"},
    {NULL, NULL, true, "LOCK TABLE t", RO, "read-only"},
    {NULL, NULL, true, "VACUUM", RO, "read-only"},
    {NULL, NULL, true, "GRANT SELECT ON t TO r", RO, "read-only"},
    {NULL, NULL, true, "COMMENT ON TABLE t IS 'x'", RO, "read-only"},
    {NULL, NULL, true, "REFRESH MATERIALIZED VIEW v", RO, "read-only"},
    {NULL, NULL, true, "COMMIT PREPARED 'x'", RO, "read-only"},
    {"function:pg_sleep", NULL, true, "DELETE FROM t WHERE pg_sleep(1) IS NULL", DENY,
     "deny:function:pg_sleep"},

    /* allow lists */
    {NULL, "select", false, "SELECT 1", NONE, ""},
    {NULL, "select", false, "DELETE FROM t", DENY, "allow"},
    {NULL, "select", false, "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", DENY, "allow"},
    {NULL, "select", false, "SELECT 1 INTO x", DENY, "allow"},
    {NULL, "select", false, "EXPLAIN SELECT 1", DENY, "allow"},
    {NULL, "select", false, "SELECT 1; UPDATE t SET a = 1", DENY, "allow"},
    {NULL, "select,explain", false, "EXPLAIN SELECT 1", NONE, ""},
    {NULL, "select,explain", false, "EXPLAIN ANALYZE DELETE FROM t", DENY, "allow"},
    {NULL, "insert", false, "INSERT INTO t SELECT * FROM u", NONE, ""},
    {NULL, "insert", false, "INSERT INTO t VALUES (1)", NONE, ""},
    {NULL, "select,transaction", false, "BEGIN; SELECT 1; COMMIT", NONE, ""},
    {NULL, "select,transaction", false, "BEGIN; UPDATE t SET a = 1; COMMIT", DENY, "allow"},
    {NULL, "create", false, "CREATE SCHEMA s CREATE TABLE t (a int)", NONE, ""},
    {NULL, "create_schema", false, "CREATE SCHEMA s CREATE TABLE t (a int)", DENY, "allow"},
    {NULL, "alter_table", false, "ALTER TABLE t REPLICA IDENTITY FULL", NONE, ""},
    {NULL, "create_function", false, "CREATE FUNCTION f() RETURNS int RETURN 1", NONE, ""},
    {NULL, "select,function:count", false, "SELECT count(*) FROM t", NONE, ""},
    {NULL, "select,function:count", false, "SELECT now()", DENY, "allow"},
    {"function:pg_sleep", "select", false, "SELECT pg_sleep(1)", DENY, "deny:function:pg_sleep"},
    {"drop", "drop", false, "DROP TABLE t", DENY, "deny:drop"},
    {NULL, "select", true, "SELECT 1", NONE, ""},
    {NULL, "select", true, "SELECT * FROM t FOR UPDATE", RO, "read-only"},

    /* parse errors, empty texts */
    {"drop", NULL, false, "selec 1", SYNTX, "syntax"},
    {"drop", NULL, false, "SELECT 1; DROP TABLE", SYNTX, "syntax"},
    {"drop", NULL, false, "SELECT 'unterminated", SYNTX, "syntax"},
    {"drop", NULL, false, "", NONE, ""},
    {"drop", NULL, false, ";;", NONE, ""},
    {"drop", NULL, false, "-- only a comment", NONE, ""},
    {"drop", NULL, false, "/* only a comment */ ; ", NONE, ""},
    {NULL, NULL, true, "", NONE, ""},
};

static void test_policy_table(void **state)
{
    (void)state;
    assert_true(sizeof cases / sizeof cases[0] >= 60);
    gt_run_table("policy", cases, sizeof cases / sizeof cases[0]);
}

static struct guard_policy *gt_make(const char *deny, const char *allow, bool ro)
{
    return gt_policy(deny, allow, NULL, ro);
}

static void test_messages(void **state)
{
    (void)state;
    struct guard_policy *p = gt_make("drop,function:pg_sleep", NULL, false);
    struct guard_decision d;

    gt_check(p, NULL, "selec 1", &d);
    assert_int_equal(d.verdict, GUARD_SYNTAX);
    assert_string_equal(d.message, "syntax error at or near \"selec\"");
    assert_int_equal(d.cursorpos, 1);
    gt_check(p, NULL, "SELECT 1; DROP TABLE", &d);
    assert_string_equal(d.message, "syntax error at end of input");
    assert_int_equal(d.cursorpos, 21);
    gt_check(p, NULL, "SELECT 1 FROM t WHERE", &d);
    assert_int_equal(d.cursorpos, 22);

    gt_check(p, NULL, "DROP TABLE t", &d);
    assert_string_equal(d.message, "statement denied by pgwire-proxy policy: deny:drop");
    assert_int_equal(d.cursorpos, 0);
    gt_check(p, NULL, "DROP ROLE r", &d);
    assert_string_equal(d.message,
                        "statement denied by pgwire-proxy policy: deny:drop (drop_role)");
    gt_check(p, NULL, "SELECT pg_sleep(1)", &d);
    assert_string_equal(d.message,
                        "statement denied by pgwire-proxy policy: deny:function:pg_sleep");
    gt_check(p, NULL, "COPY t FROM STDIN", &d);
    assert_int_equal(d.verdict, GUARD_COPY);
    assert_string_equal(d.message, "COPY is not supported through pgwire-proxy");
    guard_policy_free(p);

    p = gt_make(NULL, "select", true);
    gt_check(p, NULL, "DELETE FROM t", &d);
    assert_int_equal(d.verdict, GUARD_READ_ONLY);
    assert_string_equal(d.message, "cannot execute delete in read-only mode");
    gt_check(p, NULL, "SET ROLE bob", &d);
    assert_string_equal(d.message, "cannot execute SET role in read-only mode");
    gt_check(p, NULL, "SHOW x", &d);
    assert_int_equal(d.verdict, GUARD_DENY);
    assert_string_equal(d.message,
                        "statement denied by pgwire-proxy policy: allow (show is not in the allow "
                        "list)");
    guard_policy_free(p);
}

static void test_policy_errors(void **state)
{
    (void)state;
    char err[2048];
    const char *bad_deny[] = {"dorp"};
    const char *bad_allow[] = {"select", "selekt"};
    const char *bad_fn[] = {"function:"};
    const char *bad_fn2[] = {"function:pg sleep"};
    const char *empty[] = {"  "};
    const char *null_rule[] = {NULL};
    const char *fine[] = {" Create ", "ALTER", "drop", "function:public.f"};

    assert_null(guard_policy_new(bad_deny, 1, NULL, 0, false, err, sizeof err));
    assert_non_null(strstr(err, "\"dorp\""));
    assert_non_null(strstr(err, "deny"));
    assert_non_null(strstr(err, "drop_role")); /* the kinds are listed */
    assert_null(guard_policy_new(NULL, 0, bad_allow, 2, false, err, sizeof err));
    assert_non_null(strstr(err, "\"selekt\" in allow list"));
    /* A short buffer still gets a terminated, truncated message. */
    assert_null(guard_policy_new(bad_deny, 1, NULL, 0, false, err, 40));
    assert_true(strlen(err) < 40);
    assert_null(guard_policy_new(bad_deny, 1, NULL, 0, false, NULL, 0));
    assert_null(guard_policy_new(bad_fn, 1, NULL, 0, false, err, sizeof err));
    assert_null(guard_policy_new(bad_fn2, 1, NULL, 0, false, err, sizeof err));
    assert_null(guard_policy_new(empty, 1, NULL, 0, false, err, sizeof err));
    assert_null(guard_policy_new(null_rule, 1, NULL, 0, false, err, sizeof err));

    struct guard_policy *p = guard_policy_new(fine, 4, NULL, 0, false, err, sizeof err);
    assert_non_null(p);
    assert_true(guard_policy_parses(p));
    guard_policy_free(p);
    p = guard_policy_new(NULL, 0, NULL, 0, false, err, sizeof err);
    assert_non_null(p);
    assert_false(guard_policy_parses(p));
    guard_policy_free(p);
    p = guard_policy_new(NULL, 0, NULL, 0, true, err, sizeof err);
    assert_true(guard_policy_parses(p));
    guard_policy_free(p);
    assert_false(guard_policy_parses(NULL));
    guard_policy_free(NULL);
}

static void test_kind_names(void **state)
{
    (void)state;
    const char *const *k = guard_kind_names();
    size_t n = 0;
    bool seen_drop = false, seen_analyze = false, seen_ctas = false;
    char err[256];

    assert_true(guard_kinds_self_check());
    for (; k[n]; n++) {
        const char *one[] = {k[n]};
        struct guard_policy *p = guard_policy_new(one, 1, one, 1, false, err, sizeof err);
        if (!p)
            fail_msg("kind %s is not accepted as a rule: %s", k[n], err);
        guard_policy_free(p);
        seen_drop |= strcmp(k[n], "drop") == 0;
        seen_analyze |= strcmp(k[n], "analyze") == 0;
        seen_ctas |= strcmp(k[n], "create_table_as") == 0;
        if (n > 0)
            assert_true(strcmp(k[n - 1], k[n]) < 0);
    }
    assert_int_equal(n, GUARD_K_COUNT);
    assert_true(seen_drop && seen_analyze && seen_ctas);
}

static void test_budget(void **state)
{
    (void)state;
    struct guard_budget b;

    guard_budget_start(&b, 2, 0);
    assert_int_equal(guard_budget_row(&b, 100), GUARD_LIMIT_NONE);
    assert_int_equal(guard_budget_row(&b, 100), GUARD_LIMIT_NONE);
    assert_int_equal(guard_budget_row(&b, 100), GUARD_LIMIT_ROWS);
    assert_int_equal(b.rows, 2);
    assert_int_equal(b.bytes, 200);

    guard_budget_start(&b, 0, 250);
    assert_int_equal(guard_budget_row(&b, 100), GUARD_LIMIT_NONE);
    assert_int_equal(guard_budget_row(&b, 150), GUARD_LIMIT_NONE);
    assert_int_equal(guard_budget_row(&b, 1), GUARD_LIMIT_BYTES);
    assert_int_equal(b.rows, 2); /* the refused row is not counted */
    assert_int_equal(b.bytes, 250);

    guard_budget_start(&b, 0, 0);
    for (int i = 0; i < 100000; i++)
        assert_int_equal(guard_budget_row(&b, UINT32_MAX), GUARD_LIMIT_NONE);
    assert_int_equal(b.rows, 100000);

    /* Rows are checked before bytes, and a restart clears the counters. */
    guard_budget_start(&b, 1, 10);
    assert_int_equal(guard_budget_row(&b, 5), GUARD_LIMIT_NONE);
    assert_int_equal(guard_budget_row(&b, 50), GUARD_LIMIT_ROWS);
    guard_budget_start(&b, 1, 10);
    assert_int_equal(b.rows, 0);
    assert_int_equal(guard_budget_row(&b, 50), GUARD_LIMIT_BYTES);
}

/* The client-facing error of a refusal: one prefix, the rule in DETAIL (a relay once added the
 * prefix a second time), PostgreSQL's own shape for syntax errors. */
static void test_error_for_decisions(void **state)
{
    (void)state;
    char err[256];
    const char *deny[] = {"drop"};
    struct guard_policy *p = guard_policy_new(deny, 1, NULL, 0, false, err, sizeof(err));
    assert_non_null(p);
    struct guard_decision d;
    struct guard_error e;
    const char *sql = "DROP TABLE t";
    assert_int_equal(guard_check(p, NULL, sql, strlen(sql), &d), 0);
    guard_error_for(&d, &e);
    assert_string_equal(e.code, "42501");
    assert_string_equal(e.message, "statement denied by pgwire-proxy policy: deny:drop");
    assert_string_equal(e.detail, "rule: deny:drop");
    assert_non_null(e.hint);
    sql = "selec 1";
    assert_int_equal(guard_check(p, NULL, sql, strlen(sql), &d), 0);
    guard_error_for(&d, &e);
    assert_string_equal(e.code, "42601");
    assert_string_equal(e.message, "syntax error at or near \"selec\"");
    assert_string_equal(e.detail, "");
    assert_null(e.hint);
    assert_int_equal(e.position, 1);
    sql = "copy t from stdin";
    assert_int_equal(guard_check(p, NULL, sql, strlen(sql), &d), 0);
    guard_error_for(&d, &e);
    assert_string_equal(e.code, "0A000");
    assert_string_equal(e.detail, "rule: copy-protocol");
    guard_policy_free(p);
}

/* Over --max-parse-size a policy refuses with 54001 before parsing; without rules the text is
 * not looked at (PostgreSQL judges it). The ceiling comes from the policy, or the caller. */
static void test_parse_ceiling(void **state)
{
    (void)state;
    const char *deny[] = {"drop"};
    struct guard_rules r = {.deny = deny, .ndeny = 1, .max_parse = 2000};
    char err[256];
    struct guard_policy *p = guard_policy_compile(&r, err, sizeof err);
    struct guard_decision d;
    struct guard_error e;
    struct guard_cache_key key;
    assert_non_null(p);
    assert_int_equal(guard_policy_max_parse(p), 2000);

    char *q = gt_repeat("select 1", "+1", 996, ""); /* 2000 bytes: at the ceiling */
    assert_int_equal(strlen(q), 2000);
    gt_check(p, NULL, q, &d);
    assert_int_equal(d.verdict, GUARD_ALLOW);
    free(q);
    q = gt_repeat("select 1", "+1", 997, ""); /* 2002 bytes */
    gt_check(p, NULL, q, &d);
    assert_int_equal(d.verdict, GUARD_TOO_COMPLEX);
    guard_error_for(&d, &e);
    assert_string_equal(e.code, "54001");
    assert_string_equal(e.detail, "rule: max-parse-size");
    assert_non_null(strstr(e.message, "--max-parse-size of 2000 bytes"));
    assert_non_null(e.hint);
    /* guard_decide enforces it too: a caller cannot make it parse more */
    bool cacheable = true;
    assert_int_equal(guard_decide(p, q, strlen(q), &d, &cacheable), 0);
    assert_int_equal(d.verdict, GUARD_TOO_COMPLEX);
    assert_false(cacheable);
    /* a caller's lower ceiling wins */
    assert_int_equal(guard_precheck(p, NULL, "select 1, 2, 3", 14, 10, &d, &key), 0);
    assert_int_equal(d.verdict, GUARD_TOO_COMPLEX);
    assert_int_equal(guard_precheck(p, NULL, "select 1, 2, 3", 14, 0, &d, &key), 1);
    /* no rules: never parsed, whatever its size */
    assert_int_equal(guard_check(NULL, NULL, q, strlen(q), &d), 0);
    assert_int_equal(d.verdict, GUARD_ALLOW);
    free(q);
    guard_policy_free(p);
    /* the default */
    p = gt_policy("drop", NULL, NULL, false);
    assert_int_equal(guard_policy_max_parse(p), GUARD_DEFAULT_MAX_PARSE);
    guard_policy_free(p);
}

/* The three steps give what guard_check gives, and the cache is fed by the third. */
static void test_precheck_decide_store(void **state)
{
    (void)state;
    struct guard_policy *p = gt_policy("delete", NULL, NULL, false);
    struct guard_cache *c = guard_cache_new();
    struct guard_cache_key key;
    struct guard_decision d;
    bool cacheable = false;

    const char *sql = "DELETE FROM t WHERE a = 1";
    assert_int_equal(guard_precheck(p, c, sql, strlen(sql), 0, &d, &key), 1);
    assert_true(key.len > 0);
    assert_int_equal(guard_decide(p, sql, strlen(sql), &d, &cacheable), 0);
    assert_int_equal(d.verdict, GUARD_DENY);
    assert_true(cacheable);
    guard_cache_store(c, p, &key, &d);
    sql = "DELETE FROM t WHERE a = 2";
    assert_int_equal(guard_precheck(p, c, sql, strlen(sql), 0, &d, &key), 0);
    assert_int_equal(d.verdict, GUARD_DENY);
    assert_int_equal(guard_cache_hits(c), 1);
    /* a key made under another policy is not stored */
    struct guard_policy *q = gt_policy("drop", NULL, NULL, false);
    sql = "SELECT 7";
    assert_int_equal(guard_precheck(p, c, sql, strlen(sql), 0, &d, &key), 1);
    guard_cache_store(c, q, &key, &d);
    assert_int_equal(guard_precheck(p, c, sql, strlen(sql), 0, &d, &key), 1);
    /* no rules: decided at once, nothing to store */
    assert_int_equal(guard_precheck(NULL, c, sql, strlen(sql), 0, &d, &key), 0);
    assert_int_equal(key.len, 0);
    assert_int_equal(guard_decide(NULL, sql, strlen(sql), &d, &cacheable), 0);
    assert_int_equal(d.verdict, GUARD_ALLOW);
    guard_policy_free(q);
    guard_policy_free(p);
    guard_cache_free(c);
}

/* A policy outlives its creator's reference while a job holds one. */
static void test_policy_refcount(void **state)
{
    (void)state;
    struct guard_policy *p = gt_policy("drop", NULL, NULL, false);
    struct guard_decision d;
    assert_ptr_equal(guard_policy_ref(p), p);
    guard_policy_free(p); /* the creator's */
    gt_check(p, NULL, "DROP TABLE t", &d);
    assert_int_equal(d.verdict, GUARD_DENY);
    guard_policy_unref(p); /* the job's: freed now (ASan checks) */
    assert_null(guard_policy_ref(NULL));
    guard_policy_unref(NULL);
}

static void test_unsafe_settings(void **state)
{
    (void)state;
    /* texts that read differently with it off are decided under both readings */
    assert_null(guard_unsafe_setting("standard_conforming_strings", "on"));
    assert_null(guard_unsafe_setting("standard_conforming_strings", "off"));
    assert_null(guard_unsafe_setting("client_encoding", "UTF8"));
    assert_null(guard_unsafe_setting("client_encoding", "LATIN1"));
    assert_non_null(guard_unsafe_setting("client_encoding", "SJIS"));
    assert_non_null(guard_unsafe_setting("client_encoding", "big5"));
    assert_null(guard_unsafe_setting("TimeZone", "off"));
    assert_null(guard_unsafe_setting(NULL, "x"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy_table),
        cmocka_unit_test(test_messages),
        cmocka_unit_test(test_policy_errors),
        cmocka_unit_test(test_kind_names),
        cmocka_unit_test(test_budget),
        cmocka_unit_test(test_unsafe_settings),
        cmocka_unit_test(test_error_for_decisions),
        cmocka_unit_test(test_parse_ceiling),
        cmocka_unit_test(test_precheck_decide_store),
        cmocka_unit_test(test_policy_refcount),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
