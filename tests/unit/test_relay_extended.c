/* The extended query protocol (--extended-protocol allow) and COPY (--copy allow) through the
 * relay fake: requests streamed upstream as they arrive, answers matched to them, each portal
 * run with its own budget and audit record, COPY data counted against --max-bytes. */
#include "relay_asserts.h"

static const char *const no_params[] = {NULL};

/* ---------- extended protocol allowed ---------- */

static void test_extended_request_forwarded_in_one_piece(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fake_allow_extended(f);
    fe_parse(&b, "", "SELECT 1");
    fe_bind(&b, "", "", 0, no_params);
    fe_target(&b, 'D', 'P', "");
    fe_execute(&b, "", 0);
    fe_empty(&b, 'S');
    fake_client_buf(f, &b);
    /* the client's bytes as they came, nothing added: the Sync makes the backend answer */
    assert_int_equal(f->up_out.len, b.len);
    assert_memory_equal(f->up_out.p, b.p, b.len);
    assert_int_equal(f->cli_len, 0);
    assert_int_equal(f->refs, 0);
    assert_int_equal(f->policy_calls, 1);
    assert_int_equal(f->cli_out.len, 0);
    b.len = 0;
    up_empty(&b, '1');
    up_empty(&b, '2');
    up_select(&b, 1);
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "12TDCZ");
    /* a run is recorded at its CommandComplete: whether it commits is its Sync's to say */
    assert_done(f, STMT_OK, "", "", STMT_UP_UNKNOWN);
    assert_string_equal(f->last_protocol, "extended");
    assert_string_equal(f->last_sql, "SELECT 1");
    assert_int_equal(f->last_executes, 1);
    assert_int_equal(f->last.rows, 1);
    assert_true(relay_ext_empty(f->r.x));
    fb_free(&b);
}

/* An Execute with no Sync or Flush behind it: the backend would hold its answer, so the proxy
 * adds a Flush (its clock and budget need the rows as they come). */
static void test_extended_execute_alone_gets_a_flush(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fake_allow_extended(f);
    fe_parse_bind_execute(&b, "SELECT 1");
    fake_client_buf(f, &b);
    assert_up_types(f, "PBEH");
    b.len = 0;
    fe_empty(&b, 'H');
    fake_client_buf(f, &b); /* the client's own Flush goes too */
    assert_up_types(f, "PBEHH");
    fb_free(&b);
}

/* Execute with a row count: PortalSuspended does not end the run, its next Execute goes on
 * with the same budget and clock, and the run is audited once with both Executes. */
static void test_extended_execute_max_rows_suspends_one_run(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fake_allow_extended(f);
    fe_parse(&b, "", "SELECT x FROM t");
    fe_bind(&b, "", "", 0, no_params);
    fe_execute(&b, "", 2);
    fe_empty(&b, 'H');
    fake_client_buf(f, &b);
    assert_up_types(f, "PBEH");
    b.len = 0;
    up_empty(&b, '1');
    up_empty(&b, '2');
    up_rows(&b, 2);
    up_empty(&b, 's');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "12DDs");
    assert_int_equal(f->done, 0); /* suspended: the portal may run on */
    fe_execute(&b, "", 2);
    fe_empty(&b, 'S');
    fake_client_buf(f, &b);
    assert_up_types(f, "PBEHES");
    b.len = 0;
    up_rows(&b, 1);
    up_complete(&b, "SELECT 3");
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "12DDsDCZ");
    assert_done(f, STMT_OK, "", "", STMT_UP_UNKNOWN);
    assert_int_equal(f->last_executes, 2);
    assert_int_equal(f->last.rows, 3);
    fb_free(&b);
}

/* A refused Parse goes upstream as a Parse that fails there, so its error lands where
 * PostgreSQL would put it; the rest of the segment is not sent, the Sync is. */
static void test_extended_denied_parse_answered_in_place(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fake_allow_extended(f);
    fake_verdict(f, GUARD_DENY, "deny:drop", "statement kind drop is not allowed", 0);
    fe_extended_query(&b, "DROP TABLE t");
    fake_client_buf(f, &b);
    assert_up_types(f, "PS");
    struct fmsg p = fake_up_msg(f, 0);
    assert_null(memmem(p.body, p.len, "DROP", 4));
    assert_done(f, STMT_DENIED, "42501", "deny:drop", STMT_UP_NOT_SENT);
    assert_string_equal(f->last_protocol, "extended");
    b.len = 0;
    up_error(&b, "ERROR", "42601", "syntax error at or near \"pgwire_proxy_denied\"");
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "EZ");
    assert_report(f, 0, 'E', "ERROR", "42501", "statement kind drop is not allowed");
    assert_detail(f, 0, "rule: deny:drop");
    assert_ready(f, 1, 'I');
    fb_free(&b);
}

/* --max-rows trips inside a portal run whose Sync is upstream already: the proxy's 54000
 * answers the Execute, the cancel's error is not shown, then the segment's ReadyForQuery. */
static void test_extended_row_limit_54000_at_the_execute(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fake_allow_extended(f);
    f->cfg.max_rows = 2;
    fe_extended_query(&b, "SELECT x FROM t");
    fake_client_buf(f, &b);
    b.len = 0;
    up_empty(&b, '1');
    up_empty(&b, '2');
    up_rows(&b, 3);
    upstream(f, &b);
    assert_int_equal(f->cancels, 1);
    assert_string_equal(fake_types(f), "12DD");
    up_error(&b, "ERROR", "57014", "canceling statement due to user request");
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "12DDEZ");
    assert_report(f, 4, 'E', "ERROR", "54000",
                  "row limit of 2 exceeded; the upstream statement was canceled");
    assert_detail(f, 4, "rule: max-rows (pgwire-proxy --max-rows 2)");
    assert_done(f, STMT_LIMITED, "54000", "max-rows", STMT_UP_ERROR);
    assert_string_equal(f->last.upstream_sqlstate, "57014");
    assert_int_equal(f->last.rows, 2);
    fb_free(&b);
}

/* The session ends while a tripped run's answer is out but its segment's Sync has not come:
 * the abort's reference to the run goes with the relay, like the portal's and the FIFO's. */
static void test_extended_abort_released_with_the_relay(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fake_allow_extended(f);
    f->cfg.max_rows = 1;
    fe_parse_bind_execute(&b, "SELECT x FROM t");
    fake_client_buf(f, &b);
    b.len = 0;
    up_empty(&b, '1');
    up_empty(&b, '2');
    up_rows(&b, 2);
    up_complete(&b, "SELECT 2");
    upstream(f, &b);
    assert_string_equal(fake_types(f), "12DE"); /* answered; the client's Sync is still due */
    assert_true(f->r.ab.active);
    struct ext_run *run = f->r.ab.run;
    assert_non_null(run);
    run->refs++; /* the test's own, to see what the relay lets go of */
    relay_release(&f->r);
    assert_int_equal(run->refs, 1);
    struct ext_state *x = relay_ext_new();
    relay_ext_run_unref(x, run);
    relay_ext_free(x);
    fb_free(&b);
}

/* Each Execute of a pipeline has its own budget: a later one may use all of it. */
static void test_extended_each_execute_has_its_budget(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fake_allow_extended(f);
    f->cfg.max_rows = 2;
    fe_parse(&b, "s", "SELECT x FROM t");
    fe_bind(&b, "p1", "s", 0, no_params);
    fe_execute(&b, "p1", 0);
    fe_bind(&b, "p2", "s", 0, no_params);
    fe_execute(&b, "p2", 0);
    fe_empty(&b, 'S');
    fake_client_buf(f, &b);
    assert_up_types(f, "PBEHBES"); /* p1's rows are wanted as they come: a Flush after it */
    b.len = 0;
    up_empty(&b, '1');
    for (int i = 0; i < 2; i++) {
        up_empty(&b, '2');
        up_rows(&b, 2);
        up_complete(&b, "SELECT 2");
    }
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "12DDC2DDCZ");
    assert_int_equal(f->cancels, 0);
    assert_int_equal(f->done, 2);
    assert_int_equal(f->outcome, STMT_OK);
    assert_string_equal(f->last_portal, "p2");
    fb_free(&b);
}

/* An upstream that breaks the protocol in its answer to a Sync: what it sent before reaches
 * the client, then the FATAL, the last message. */
static void test_extended_malformed_ready_fatal_comes_last(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fake_allow_extended(f);
    fe_extended_query(&b, "SELECT 1");
    fake_client_buf(f, &b);
    b.len = 0;
    up_empty(&b, '1');
    up_empty(&b, '2');
    up_select(&b, 1);
    fb_msg(&b, 'Z', "X", 1);
    upstream(f, &b);
    assert_string_equal(fake_types(f), "12TDCE");
    assert_report(f, 5, 'E', "FATAL", "08P01", "invalid message from the upstream server");
    assert_detail(f, 5, "malformed ReadyForQuery");
    assert_int_equal(f->r.end, SE_UPSTREAM_LOST);
    fb_free(&b);
}

/* --copy reject: a COPY started by an Execute is ended upstream and answered 0A000. */
static void test_extended_copy_rejected_0A000(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fake_allow_extended(f);
    fe_extended_query(&b, "COPY t FROM STDIN");
    fake_client_buf(f, &b);
    b.len = 0;
    up_empty(&b, '1');
    up_empty(&b, '2');
    up_copy(&b, 'G');
    upstream(f, &b);
    struct fmsg cf = fake_up_msg(f, -1);
    assert_int_equal(cf.type, 'f');
    up_error(&b, "ERROR", "57014", "COPY from stdin failed");
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "12EZ");
    assert_report(f, 2, 'E', "ERROR", "0A000", "COPY is not supported through pgwire-proxy");
    assert_detail(f, 2, "rule: copy-protocol");
    fb_free(&b);
}

/* ---------- COPY allowed ---------- */

static void copy_data(struct fbuf *b, size_t n)
{
    size_t at = fb_begin(b, 'd');
    fb_fill(b, 'x', n - 6);
    fb_u8(b, '\n');
    fb_end(b, at);
}

static void test_copy_in_relayed_and_ended_by_copy_done(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fake_allow_copy(f);
    fake_query(f, "COPY t FROM STDIN");
    up_copy(&b, 'G');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "G");
    assert_true(f->r.copy_in);
    assert_int_equal(f->cli_len, 0); /* its text is kept by the relay: the buffer moves on */
    copy_data(&b, 20);
    copy_data(&b, 20);
    fe_empty(&b, 'H'); /* ignored by the backend during copy-in: not sent */
    fe_empty(&b, 'c');
    fe_empty(&b, 'S'); /* after the COPY: an ordinary Sync, answered after the Query's Z */
    fake_client_buf(f, &b);
    assert_up_types(f, "Qddc");
    b.len = 0;
    up_complete(&b, "COPY 2");
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "GCZZ");
    assert_done(f, STMT_OK, "", "", STMT_UP_COMMITTED);
    assert_string_equal(f->last_sql, "COPY t FROM STDIN");
    assert_int_equal(f->last.bytes, 40); /* the client's data counts, the answers do not */
    fb_free(&b);
}

/* The client's CopyData counts against --max-bytes: past it CopyFail ends the COPY upstream,
 * the rest of the data goes nowhere and the client gets the proxy's 54000. */
static void test_copy_in_data_counted_against_max_bytes(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fake_allow_copy(f);
    f->cfg.max_bytes = 50;
    fake_query(f, "COPY t FROM STDIN");
    up_copy(&b, 'G');
    upstream(f, &b);
    for (int i = 0; i < 4; i++)
        copy_data(&b, 20); /* the third one would make 60 bytes */
    fe_empty(&b, 'c');
    fake_client_buf(f, &b);
    assert_up_types(f, "Qddf");
    struct fmsg cf = fake_up_msg(f, -1);
    assert_string_equal(fmsg_str(&cf), "pgwire-proxy: byte limit exceeded");
    assert_int_equal(f->cancels, 0); /* a backend waiting for copy data ignores a cancel */
    b.len = 0;
    up_error(&b, "ERROR", "57014", "COPY from stdin failed: pgwire-proxy: byte limit exceeded");
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "GEZ");
    assert_report(f, 1, 'E', "ERROR", "54000", NULL);
    assert_detail(f, 1, "rule: max-bytes (pgwire-proxy --max-bytes 50)");
    assert_done(f, STMT_LIMITED, "54000", "max-bytes", STMT_UP_ERROR);
    assert_int_equal(f->last.bytes, 40);
    fb_free(&b);
}

/* COPY TO STDOUT streams like rows: each CopyData counts against --max-rows. */
static void test_copy_out_rows_counted_against_max_rows(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fake_allow_copy(f);
    f->cfg.max_rows = 2;
    fake_query(f, "COPY t TO STDOUT");
    up_copy(&b, 'H');
    for (int i = 0; i < 3; i++)
        fb_msg(&b, 'd', "1\n", 2);
    upstream(f, &b);
    assert_string_equal(fake_types(f), "Hdd");
    assert_int_equal(f->cancels, 1);
    up_error(&b, "ERROR", "57014", "canceling statement due to user request");
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "HddEZ");
    assert_report(f, 3, 'E', "ERROR", "54000", NULL);
    assert_done(f, STMT_LIMITED, "54000", "max-rows", STMT_UP_ERROR);
    assert_int_equal(f->last.rows, 2);
    fb_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_extended_request_forwarded_in_one_piece, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_extended_execute_alone_gets_a_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(test_extended_execute_max_rows_suspends_one_run, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_extended_denied_parse_answered_in_place, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_extended_row_limit_54000_at_the_execute, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_extended_abort_released_with_the_relay, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_extended_each_execute_has_its_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_extended_malformed_ready_fatal_comes_last, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_extended_copy_rejected_0A000, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copy_in_relayed_and_ended_by_copy_done, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_copy_in_data_counted_against_max_bytes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_copy_out_rows_counted_against_max_rows, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
