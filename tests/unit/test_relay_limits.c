/* The upstream-side handler's budgets fed scripted upstream bytes: row limits in error mode
 * (one cancel, the proxy's 54000 with the statement's fate, the committed-write report, poison
 * in a block), truncate mode, the byte budget over every message a statement sends, what is
 * never withheld, and the query timeout. */
#include "relay_asserts.h"

/* ---------- row limit, error mode ---------- */

static void test_row_limit_cancels_once_drops_rest_canceled(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    f->cfg.max_rows = 2;
    fake_query(f, "SELECT x FROM t");
    up_rowdesc(&b, "c");
    up_rows(&b, 3);
    upstream(f, &b);
    assert_int_equal(f->cancels, 1);
    up_rows(&b, 2);
    upstream(f, &b);
    assert_int_equal(f->cancels, 1);
    assert_string_equal(fake_types(f), "TDD");
    up_error(&b, "ERROR", "57014", "canceling statement due to user request");
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "TDDEZ"); /* the proxy's error replaces the cancel's */
    assert_report(f, 3, 'E', "ERROR", "54000",
                  "row limit of 2 exceeded; the upstream statement was canceled");
    assert_detail(f, 3, "rule: max-rows (pgwire-proxy --max-rows 2)");
    assert_ready(f, 4, 'I');
    /* the client saw the proxy's 54000; the upstream ended it with the cancel's 57014 */
    assert_done(f, STMT_LIMITED, "54000", "max-rows", STMT_UP_ERROR);
    assert_string_equal(f->last.upstream_sqlstate, "57014");
    assert_int_equal(f->last.rows, 2);
    fb_free(&b);
}

static void test_row_limit_select_had_already_completed(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    f->cfg.max_rows = 2;
    fake_query(f, "SELECT x FROM t");
    up_select(&b, 4);
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "TDDEZ");
    assert_report(f, 3, 'E', "ERROR", "54000",
                  "row limit of 2 exceeded; the upstream statement had already completed");
    assert_done(f, STMT_LIMITED, "54000", "max-rows", STMT_UP_COMMITTED);
    fb_free(&b);
}

/* A write whose RETURNING rows tripped the limit after it committed is reported as what
 * happened: a WARNING with the rule and its real tag, not an error that reads as a rollback. */
static void test_row_limit_completed_write_reported_not_error(void **state)
{
    static const char *const tags[] = {"DELETE 200", "INSERT 0 200", "UPDATE 5"};
    for (size_t i = 0; i < sizeof(tags) / sizeof(tags[0]); i++) {
        struct fake *f = fake_new();
        struct fbuf b = {0};
        f->cfg.max_rows = 2;
        fake_query(f, "DELETE FROM t RETURNING x");
        up_rowdesc(&b, "x");
        up_rows(&b, 5);
        up_complete(&b, tags[i]);
        up_ready(&b, 'I');
        upstream(f, &b);
        assert_string_equal(fake_types(f), "TDDNCZ");
        assert_report(f, 3, 'N', "WARNING", "01000",
                      "row limit of 2 exceeded; the upstream statement had already completed and "
                      "committed: 2 rows delivered");
        assert_detail(f, 3, "rule: max-rows (pgwire-proxy --max-rows 2)");
        assert_tag(f, 4, tags[i]);
        assert_done(f, STMT_LIMITED, "", "max-rows", STMT_UP_COMMITTED);
        fb_free(&b);
        fake_free(f);
    }
}

static void test_row_limit_completed_write_in_block_errors_and_poisons(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fake_in_block(f);
    f->cfg.max_rows = 2;
    fake_query(f, "DELETE FROM t RETURNING x");
    up_rowdesc(&b, "x");
    up_rows(&b, 3);
    up_complete(&b, "DELETE 3");
    up_ready(&b, 'T');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "TDDE"); /* not committed yet: it must not stick */
    assert_report(f, 3, 'E', "ERROR", "54000", NULL);
    assert_true(fake_poison_sent(f));
    assert_done(f, STMT_LIMITED, "54000", "max-rows", STMT_UP_IN_BLOCK);
    fake_reply_poison(f);
    assert_string_equal(fake_types(f), "TDDEZ");
    assert_ready(f, 4, 'E');
    fb_free(&b);
}

/* ---------- row limit, truncate mode ---------- */

static void test_truncate_first_rows_warning_and_select_n(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    f->cfg.on_limit = CONFIG_ON_LIMIT_TRUNCATE;
    f->cfg.max_rows = 2;
    fake_query(f, "SELECT x FROM t");
    up_select(&b, 4);
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "TDDNCZ");
    assert_report(f, 3, 'N', "WARNING", "01000", "result truncated to 2 rows by pgwire-proxy");
    assert_tag(f, 4, "SELECT 2");
    assert_int_equal(f->cancels, 0); /* the statement runs to its end */
    assert_int_equal(f->done, 1);
    assert_int_equal(f->last.rows, 2);
    assert_string_equal(f->last_rule, "max-rows");
    fb_free(&b);
}

static void test_truncate_keeps_non_select_tag(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    f->cfg.on_limit = CONFIG_ON_LIMIT_TRUNCATE;
    f->cfg.max_rows = 1;
    fake_query(f, "DELETE FROM t RETURNING x");
    up_rowdesc(&b, "x");
    up_rows(&b, 3);
    up_complete(&b, "DELETE 3");
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "TDNCZ");
    assert_tag(f, 3, "DELETE 3");
    fb_free(&b);
}

static void test_truncate_each_statement_of_a_query_has_its_budget(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    f->cfg.on_limit = CONFIG_ON_LIMIT_TRUNCATE;
    f->cfg.max_rows = 2;
    fake_query(f, "SELECT 1; SELECT 2");
    up_select(&b, 3);
    up_select(&b, 3);
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "TDDNCTDDNCZ");
    assert_tag(f, 9, "SELECT 2");
    assert_int_equal(f->done, 1);
    assert_int_equal(f->last.rows, 4);
    fb_free(&b);
}

/* A notification is delivered once: dropping it with the truncated rows would lose it for good.
 * In error mode notices and notifications pass while the budget allows; truncation too. */
static void test_truncate_keeps_notices_and_notifications(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    f->cfg.on_limit = CONFIG_ON_LIMIT_TRUNCATE;
    f->cfg.max_rows = 1;
    fake_query(f, "SELECT x FROM t");
    up_rowdesc(&b, "c");
    up_rows(&b, 2);
    up_notify(&b, 42, "jobs", "job 7 done");
    up_notice(&b, "while truncating");
    up_rows(&b, 1);
    up_complete(&b, "SELECT 3");
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "TDANNCZ");
    assert_report(f, 3, 'N', "NOTICE", "00000", "while truncating");
    assert_report(f, 4, 'N', "WARNING", "01000", NULL);
    assert_tag(f, 5, "SELECT 1");
    fb_free(&b);
}

/* ---------- row limit, warn mode ---------- */

/* --on-limit warn in a transaction block: every row flows, nothing is canceled or poisoned
 * (the block stays open), and the record names the budget it went past. */
static void test_warn_in_block_rows_flow_no_poison(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    f->cfg.on_limit = CONFIG_ON_LIMIT_WARN;
    f->cfg.max_rows = 2;
    fake_in_block(f);
    fake_query(f, "SELECT x FROM t");
    up_select(&b, 5);
    up_ready(&b, 'T');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "TDDDDDCZ");
    assert_tag(f, 6, "SELECT 5");
    assert_ready(f, 7, 'T');
    assert_int_equal(f->cancels, 0);
    assert_int_equal(fake_up_count(f), 1); /* the Query only: no poison */
    assert_int_equal(f->r.tx, 'T');
    assert_done(f, STMT_OK, "", "", STMT_UP_IN_BLOCK);
    assert_int_equal(f->last.rows, 5);
    assert_string_equal(f->last.shadow_limit, "max-rows");
    fb_free(&b);
}

/* ---------- byte budget ---------- */

static void test_byte_budget_counts_notices_and_notifications(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0}, n = {0};
    up_notice(&n, "hello");
    up_notify(&n, 42, "ch", "payload");
    /* the row fits unless the notice and notification were counted */
    f->cfg.max_bytes = size_of_rowdesc() + n.len + size_of_row() - 1;
    fake_query(f, "SELECT x FROM t");
    up_rowdesc(&b, "c");
    fb_put(&b, n.p, n.len);
    up_rows(&b, 1);
    upstream(f, &b);
    assert_string_equal(fake_types(f), "TNA");
    assert_int_equal(f->cancels, 1);
    up_error(&b, "ERROR", "57014", "canceling statement due to user request");
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "TNAEZ");
    struct fmsg e = fake_msg(f, 3);
    assert_string_equal(fmsg_field(&e, 'C'), "54000");
    assert_non_null(strstr(fmsg_field(&e, 'M'), "byte limit of"));
    assert_done(f, STMT_LIMITED, "54000", "max-bytes", STMT_UP_ERROR);
    assert_string_equal(f->last.upstream_sqlstate, "57014");
    fb_free(&b);
    fb_free(&n);
}

static void test_byte_budget_error_over_what_is_left_replaced_54000(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    f->cfg.max_bytes = size_of_rowdesc() + size_of_row() + 20;
    fake_query(f, "SELECT x::int FROM t");
    up_rowdesc(&b, "c");
    up_rows(&b, 1);
    up_report(&b, 'E', "ERROR", "22P02", "invalid input syntax for type integer: ", 100);
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "TDEZ");
    assert_report(f, 2, 'E', "ERROR", "54000",
                  "byte limit of 59 exceeded by the upstream's error (SQLSTATE 22P02)");
    assert_int_equal(f->cancels, 0); /* the statement failed on its own */
    assert_done(f, STMT_ERROR, "54000", "max-bytes", STMT_UP_ERROR);
    assert_string_equal(f->last.upstream_sqlstate, "22P02"); /* the error the client did not see */
    fb_free(&b);
}

static void test_byte_budget_error_within_budget_forwarded(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fake_query(f, "SELECT x::int FROM t");
    up_error(&b, "ERROR", "22P02", "invalid input syntax for type integer");
    f->cfg.max_bytes = b.len; /* exactly what the error needs */
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "EZ");
    assert_report(f, 0, 'E', "ERROR", "22P02", NULL);
    assert_done(f, STMT_ERROR, "22P02", "", STMT_UP_ERROR);
    assert_string_equal(f->last.upstream_sqlstate, "22P02");
    fb_free(&b);
}

static void test_byte_budget_idle_notices_not_budgeted(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    f->cfg.max_bytes = size_of_rowdesc(); /* the statement uses it all */
    fake_query(f, "SELECT x FROM t");
    up_select(&b, 0);
    up_ready(&b, 'I');
    up_notify(&b, 42, "ch", "after the statement");
    up_notice(&b, "idle notice");
    upstream(f, &b);
    assert_string_equal(fake_types(f), "TCZAN");
    assert_int_equal(f->cancels, 0);
    assert_int_equal(f->done, 1);
    assert_int_equal(f->outcome, STMT_OK);
    fb_free(&b);
}

static void test_byte_budget_never_withholds_z_s(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    f->cfg.max_bytes = size_of_rowdesc();
    fake_query(f, "SELECT x FROM t");
    up_rowdesc(&b, "c");
    up_rows(&b, 1); /* trips the budget */
    up_param(&b, "application_name", "psql");
    up_notice(&b, "over the budget: dropped");
    up_error(&b, "ERROR", "57014", "canceling statement due to user request");
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "TSEZ");
    assert_report(f, 2, 'E', "ERROR", "54000", NULL);
    assert_int_equal(f->settings, 1);
    fb_free(&b);
}

static void test_byte_budget_never_withholds_fatal(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    f->cfg.max_bytes = size_of_rowdesc();
    fake_query(f, "SELECT x FROM t");
    up_rowdesc(&b, "c");
    up_rows(&b, 1);
    up_error(&b, "FATAL", "57P01", "terminating connection due to administrator command");
    upstream(f, &b);
    assert_string_equal(fake_types(f), "TE");
    assert_report(f, 1, 'E', "FATAL", "57P01", NULL);
    assert_true(f->r.fatal_forwarded);
    fb_free(&b);
}

/* ---------- query timeout ---------- */

static void start_timed_query(struct fake *f, const char *sql)
{
    f->cfg.query_timeout_ms = 1000;
    fake_query(f, sql);
    int64_t due = f->r.stmt.deadline_ms;
    assert_true(due > 0);
    relay_check_deadline(&f->r, due - 1);
    assert_int_equal(f->cancels, 0);
    relay_check_deadline(&f->r, due);
    relay_check_deadline(&f->r, due + 1000);
    assert_int_equal(f->cancels, 1);
}

static void test_query_timeout_cancels_and_57014_at_z(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    start_timed_query(f, "SELECT pg_sleep(10)");
    up_rowdesc(&b, "c");
    up_error(&b, "ERROR", "57014", "canceling statement due to user request");
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "EZ");
    assert_report(f, 0, 'E', "ERROR", "57014", "canceling statement due to statement timeout");
    assert_detail(f, 0, "rule: query-timeout (pgwire-proxy --query-timeout 1000ms)");
    assert_done(f, STMT_LIMITED, "57014", "query-timeout", STMT_UP_ERROR);
    assert_string_equal(f->last.upstream_sqlstate, "57014");
    fb_free(&b);
}

static void test_query_timeout_completed_write_reports_commit(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    start_timed_query(f, "UPDATE t SET x = 1");
    up_complete(&b, "UPDATE 5");
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "NCZ");
    assert_report(f, 0, 'N', "WARNING", "01000",
                  "canceling statement due to statement timeout; the upstream statement had "
                  "already completed and committed: 0 rows delivered");
    assert_tag(f, 1, "UPDATE 5");
    assert_done(f, STMT_LIMITED, "", "query-timeout", STMT_UP_COMMITTED);
    fb_free(&b);
}

static void test_query_timeout_not_armed_idle_or_off(void **state)
{
    struct fake *f = *state;
    relay_check_deadline(&f->r, INT64_MAX); /* no statement */
    f->cfg.query_timeout_ms = 0;
    fake_query(f, "SELECT 1");
    relay_check_deadline(&f->r, INT64_MAX);
    assert_int_equal(f->cancels, 0);
    assert_int_equal(f->r.stmt.deadline_ms, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_row_limit_cancels_once_drops_rest_canceled, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_row_limit_select_had_already_completed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_row_limit_completed_write_reported_not_error, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_row_limit_completed_write_in_block_errors_and_poisons,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncate_first_rows_warning_and_select_n, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_truncate_keeps_non_select_tag, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncate_each_statement_of_a_query_has_its_budget,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncate_keeps_notices_and_notifications, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_warn_in_block_rows_flow_no_poison, setup, teardown),
        cmocka_unit_test_setup_teardown(test_byte_budget_counts_notices_and_notifications, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_byte_budget_error_over_what_is_left_replaced_54000,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_byte_budget_error_within_budget_forwarded, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_byte_budget_idle_notices_not_budgeted, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_byte_budget_never_withholds_z_s, setup, teardown),
        cmocka_unit_test_setup_teardown(test_byte_budget_never_withholds_fatal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_query_timeout_cancels_and_57014_at_z, setup, teardown),
        cmocka_unit_test_setup_teardown(test_query_timeout_completed_write_reports_commit, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_query_timeout_not_armed_idle_or_off, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
