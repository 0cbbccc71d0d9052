/* Audit redaction: no literal value survives, comments go, SQL held in a string argument of a
 * function that runs SQL given as text is shown redacted, and a text that reads differently
 * with standard_conforming_strings off is shown both ways. */
#include "guard_test.h"

static void expect_redacted(const char *sql, const char *want)
{
    char *r = guard_redact(sql, strlen(sql), 0);
    assert_non_null(r);
    if (strcmp(r, want) != 0)
        fail_msg("redact [%s]\n   got [%s]\n  want [%s]", sql, r, want);
    free(r);
}

static void test_literals_and_comments(void **state)
{
    (void)state;
    expect_redacted("select 'secret-literal' as x, 4242", "select $1 as x, $2");
    expect_redacted("select E'a\\'b', 1.5, x'ff', b'01', -7, $$dollar$$",
                    "select $1, $2, $3, $4, -$5, $6");
    expect_redacted("select 1 /* secret */ + 2 -- more secret", "select $1   + $2  ");
    expect_redacted("select $1, 'x', $3", "select $1, $4, $3"); /* after the text's own */
    /* a huge parameter number (found by fuzz_guard: the count overflowed) */
    expect_redacted("select $9223372036854775807, 1", "select $9223372036854775807, $2147483648");
    expect_redacted("selec 'secret'", "selec $1"); /* a syntax error still lexes */
    expect_redacted("select 'unterminated", "<unparsable statement redacted>");
    expect_redacted("", "");
    char *big = gt_repeat("select 1", "+1", 600000, "");
    expect_redacted(big, "<statement larger than --max-parse-size redacted>");
    char *r = guard_redact(big, strlen(big), 2000000);
    assert_non_null(r);
    assert_null(strstr(r, "+1")); /* every literal went: the digits left are $n numbers */
    free(r);
    free(big);
    r = guard_redact("select 1\0 'hidden'", 18, 0); /* read up to the NUL, as PostgreSQL does */
    assert_string_equal(r, "select $1");
    free(r);
}

static void test_sql_in_strings(void **state)
{
    (void)state;
    expect_redacted("SELECT query_to_xml('select pg_terminate_backend(4242)', true, false, '')",
                    "SELECT query_to_xml($1, true, false, $2) /* $1: select "
                    "pg_terminate_backend($1) */");
    /* a connection string is not SQL: it stays a plain $n, its password unseen */
    expect_redacted("select dblink('host=x password=hunter2', 'select secret_col from t')",
                    "select dblink($1, $2) /* $2: select secret_col from t */");
    expect_redacted("select dblink('c', 'select query_to_xml(''select 42'', true, false, '''')')",
                    "select dblink($1, $2) /* $2: select query_to_xml($1, true, false, $2) /* $1: "
                    "select $1 */ */");
    expect_redacted("select ts_rewrite('a'::tsquery, 'select a, b from aliases')",
                    "select ts_rewrite($1::tsquery, $2) /* $2: select a, b from aliases */");
    /* an operator holding the comment's end cannot close the annotation */
    expect_redacted("select query_to_xml('select 2 */ 3', true, false, '')",
                    "select query_to_xml($1, true, false, $2) /* $1: select $1 * / $2 */");
    /* only literals of those functions: another function's string is just a value */
    expect_redacted("select upper('select 1')", "select upper($1)");
}

static void test_both_readings(void **state)
{
    (void)state;
    expect_redacted("select 'a\\'' , pg_terminate_backend(1) --'",
                    "select $1 /* with standard_conforming_strings off: select $1 , "
                    "pg_terminate_backend($2)   */");
    expect_redacted("select 'C:\\dir', 2", "select $1, $2");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literals_and_comments),
        cmocka_unit_test(test_sql_in_strings),
        cmocka_unit_test(test_both_readings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
