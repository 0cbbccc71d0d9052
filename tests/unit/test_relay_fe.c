/* The client-side handler (fe_proto.c) fed scripted client bytes through a fake environment:
 * Query forwarding, local answers to the extended protocol and FunctionCall, protocol errors
 * and client framing (policy verdicts and the read-only switch: test_relay_policy.c). */
#include "relay_asserts.h"

static void assert_fatal(struct fake *f, const char *code, enum session_end end)
{
    assert_string_equal(fake_types(f), "E");
    assert_report(f, 0, 'E', "FATAL", code, NULL);
    assert_int_equal(f->r.end, end);
}

static void client_msg(struct fake *f, char type, const void *body, size_t n)
{
    struct fbuf b = {0};
    fb_msg(&b, type, body, n);
    fake_client_buf(f, &b);
    fb_free(&b);
}

/* ---------- Query ---------- */

static void test_query_allowed_forwarded_whole_from_client_buffer(void **state)
{
    struct fake *f = *state;
    fake_query(f, "SELECT 1");
    assert_int_equal(f->refs, 1);
    assert_ptr_equal(f->last_ref, f->cli_in); /* by reference: never copied */
    assert_int_equal(f->last_ref_len, 14);
    assert_int_equal(f->up_out.len, 14);
    assert_memory_equal(f->up_out.p, "Q\0\0\0\015SELECT 1\0", 14);
    assert_int_equal(f->policy_calls, 1);
    assert_int_equal(f->refreshes, 1);
    assert_int_equal(f->cli_out.len, 0);
}

static void test_query_stays_at_front_handled_zero(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fe_query(&b, "SELECT 1");
    fe_empty(&b, 'S');
    size_t need = 99;
    assert_int_equal(fe_proto_process(&f->r, b.p, b.len, &need), 0);
    assert_int_equal(need, 0);
    assert_int_equal(f->r.st, RS_QUERY);
    assert_int_equal(f->r.query_len, 14);
    assert_true(relay_busy(&f->r));
    assert_false(fe_proto_ready(&f->r));
    /* called again while the statement runs: nothing more is handled */
    assert_int_equal(fe_proto_process(&f->r, b.p, b.len, &need), 0);
    assert_int_equal(f->refs, 1);
    fb_free(&b);
}

static void test_query_next_message_waits_for_ready_for_query(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fe_query(&b, "SELECT 1");
    fe_empty(&b, 'S');
    fake_client_buf(f, &b);
    assert_int_equal(f->cli_out.len, 0); /* the Sync is not answered yet */
    assert_int_equal(f->cli_len, b.len);
    fake_reply_select(f, 1, 'I');
    assert_string_equal(fake_types(f), "TDCZZ"); /* the upstream's Z, then the Sync's */
    assert_ready(f, 4, 'I');
    assert_int_equal(f->cli_len, 0);
    assert_int_equal(f->done, 1);
    fb_free(&b);
}

/* The upstream's ReadyForQuery can come while the forwarded Query is still being written from
 * the client buffer: the Query at the front is in flight, not new input to handle again. */
static void test_query_in_flight_not_handled_again_at_early_ready(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fe_query(&b, "SELECT 1");
    fe_empty(&b, 'S');
    fake_client_buf(f, &b);
    f->ref_pending = true; /* the socket has not taken all of it yet */
    fake_reply_select(f, 1, 'I');
    assert_int_equal(f->done, 1);
    assert_int_equal(f->refs, 1);
    assert_int_equal(f->policy_calls, 1);
    assert_int_equal(fake_up_count(f), 1);
    assert_string_equal(fake_types(f), "TDCZ"); /* the Sync waits behind the Query */
    assert_false(fe_proto_ready(&f->r));
    f->ref_pending = false; /* written: the session drops it, and what follows is handled */
    fake_pump_client(f);
    assert_int_equal(f->refs, 1);
    assert_int_equal(f->cli_len, 0);
    assert_string_equal(fake_types(f), "TDCZZ");
    fb_free(&b);
}

/* The same in a COPY FROM STDIN: the client's CopyData waits until its Query is written, and
 * the Query does not go upstream a second time in front of it. */
static void test_copy_in_data_waits_for_query_in_flight(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fake_allow_copy(f);
    fake_query(f, "COPY t FROM STDIN");
    f->ref_pending = true;
    up_copy(&b, 'G');
    upstream(f, &b);
    assert_true(f->r.copy_in);
    fb_msg(&b, 'd', "1\n", 2);
    fe_empty(&b, 'c');
    fake_client_buf(f, &b);
    assert_int_equal(fake_up_count(f), 1);
    f->ref_pending = false;
    fake_pump_client(f);
    assert_int_equal(fake_up_count(f), 3);
    assert_int_equal(fake_up_msg(f, 0).type, 'Q');
    assert_int_equal(fake_up_msg(f, 1).type, 'd');
    assert_int_equal(fake_up_msg(f, 2).type, 'c');
    assert_int_equal(f->refs, 1);
    assert_int_equal(f->cli_len, 0);
    fb_free(&b);
}

static void test_query_ends_once_with_rows_bytes_and_outcome(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fake_query(f, "SELECT x FROM t");
    up_select(&b, 3);
    fake_upstream_buf(f, &b);
    assert_int_equal(f->done, 0); /* not before ReadyForQuery */
    size_t charged = b.len - 14;  /* T and D count, CommandComplete ("SELECT 3") does not */
    b.len = 0;
    up_ready(&b, 'I');
    fake_upstream_buf(f, &b);
    assert_int_equal(f->done, 1);
    assert_int_equal(f->outcome, STMT_OK);
    assert_int_equal(f->last.rows, 3);
    assert_int_equal(f->last.bytes, charged);
    assert_int_equal(f->last.upstream, STMT_UP_COMMITTED);
    assert_string_equal(f->last_sql, "SELECT x FROM t");
    assert_string_equal(f->last.sqlstate, "");
    assert_int_equal(f->r.st, RS_IDLE);
    assert_int_equal(f->r.query_len, 0);
    fb_free(&b);
}

static void test_query_upstream_error_outcome_error(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fake_query(f, "SELECT 1/0");
    up_error(&b, "ERROR", "22012", "division by zero");
    up_ready(&b, 'I');
    fake_upstream_buf(f, &b);
    assert_string_equal(fake_types(f), "EZ");
    assert_int_equal(f->done, 1);
    assert_int_equal(f->outcome, STMT_ERROR);
    assert_string_equal(f->last.sqlstate, "22012");
    /* the audit says the upstream failed it, and with what */
    assert_int_equal(f->last.upstream, STMT_UP_ERROR);
    assert_string_equal(f->last.upstream_sqlstate, "22012");
    fb_free(&b);
}

/* ---------- local answers ---------- */

static void send_extended_batch(struct fake *f)
{
    static const uint8_t parse[] = "\0SELECT 1\0\0\0";
    static const uint8_t bind[] = "\0\0\0\0\0\0\0\0\0\0";
    struct fbuf b = {0};
    fb_msg(&b, 'P', parse, sizeof(parse) - 1);
    fb_msg(&b, 'B', bind, sizeof(bind) - 1);
    fb_msg(&b, 'D', "P", 2);
    fb_msg(&b, 'E', "\0\0\0\0\0", 5);
    fe_query(&b, "SELECT 2"); /* ignored until Sync, as PostgreSQL does */
    fe_empty(&b, 'S');
    fake_client_buf(f, &b);
    fb_free(&b);
}

static void test_extended_0A000_then_discard_until_sync(void **state)
{
    struct fake *f = *state;
    send_extended_batch(f);
    assert_string_equal(fake_types(f), "EZ");
    assert_report(f, 0, 'E', "ERROR", "0A000", NULL);
    struct fmsg e = fake_msg(f, 0);
    assert_string_equal(fmsg_field(&e, 'D'), "rule: simple-protocol-only");
    assert_ready(f, 1, 'I');
    assert_int_equal(f->up_out.len, 0);
    assert_int_equal(f->policy_calls, 0);
    assert_int_equal(f->r.st, RS_IDLE);
    assert_int_equal(f->cli_len, 0);
}

static void test_extended_sync_in_block_poisons(void **state)
{
    struct fake *f = *state;
    fake_in_block(f);
    send_extended_batch(f);
    assert_string_equal(fake_types(f), "E");
    assert_true(fake_poison_sent(f));
    fake_reply_poison(f);
    assert_string_equal(fake_types(f), "EZ");
    assert_ready(f, 1, 'E');
}

static void test_function_call_0A000_with_ready_for_query(void **state)
{
    struct fake *f = *state;
    client_msg(f, 'F', "\0\0\0\1\0\0\0\0\0\0", 10);
    assert_string_equal(fake_types(f), "EZ");
    assert_report(f, 0, 'E', "ERROR", "0A000", NULL);
    assert_ready(f, 1, 'I');
    assert_int_equal(f->up_out.len, 0);
}

static void test_function_call_in_block_poisons(void **state)
{
    struct fake *f = *state;
    fake_in_block(f);
    client_msg(f, 'F', "\0\0\0\1\0\0\0\0\0\0", 10);
    assert_string_equal(fake_types(f), "E");
    assert_true(fake_poison_sent(f));
    fake_reply_poison(f);
    assert_ready(f, 1, 'E');
}

static void test_copy_messages_outside_copy_ignored(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fb_msg(&b, 'd', "1\t2\n", 4);
    fe_empty(&b, 'c');
    fb_msg(&b, 'f', "stop", 5);
    fake_client_buf(f, &b);
    assert_int_equal(f->cli_out.len, 0);
    assert_int_equal(f->up_out.len, 0);
    assert_int_equal(f->r.end, SE_NONE);
    assert_int_equal(f->cli_len, 0);
    fake_query(f, "SELECT 1"); /* and the session goes on */
    assert_int_equal(f->refs, 1);
    fb_free(&b);
}

static void test_terminate_ends_client_exit(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fe_empty(&b, 'X');
    fe_query(&b, "SELECT 1");
    fake_client_buf(f, &b);
    assert_int_equal(f->r.end, SE_CLIENT_EXIT);
    assert_int_equal(f->cli_out.len, 0);
    assert_int_equal(f->policy_calls, 0);
    fb_free(&b);
}

/* ---------- protocol errors ---------- */

static void test_invalid_type_fatal_08P01(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fb_msg(&b, 'x', "abc", 3);
    fe_query(&b, "SELECT 1");
    fake_client_buf(f, &b);
    assert_fatal(f, "08P01", SE_PROTOCOL);
    struct fmsg e = fake_msg(f, 0);
    assert_string_equal(fmsg_field(&e, 'M'), "invalid frontend message type 120");
    assert_int_equal(f->policy_calls, 0); /* nothing after it is handled */
    fb_free(&b);
}

static void test_length_below_four_fatal_08P01(void **state)
{
    struct fake *f = *state;
    fake_client(f, "S\0\0\0\3", 5);
    assert_fatal(f, "08P01", SE_PROTOCOL);
    struct fmsg e = fake_msg(f, 0);
    assert_string_equal(fmsg_field(&e, 'M'), "invalid message length");
}

static void test_length_over_max_message_fatal_on_header(void **state)
{
    struct fake *f = *state;
    f->cfg.max_message_bytes = 100;
    fake_client(f, "Q\0\0\0\151", 5); /* announces 101 bytes of body: over the maximum */
    assert_fatal(f, "08P01", SE_PROTOCOL);
    struct fmsg e = fake_msg(f, 0);
    assert_string_equal(fmsg_field(&e, 'M'),
                        "invalid message length: larger than --max-message-size");
}

static void test_length_at_max_message_accepted(void **state)
{
    struct fake *f = *state;
    f->cfg.max_message_bytes = 100;
    char sql[100];
    memset(sql, ' ', 99);
    memcpy(sql, "SELECT 1", 8);
    sql[99] = 0;
    fake_query(f, sql); /* body: 99 characters and the terminator */
    assert_int_equal(f->r.end, SE_NONE);
    assert_int_equal(f->refs, 1);
    assert_int_equal(f->last_ref_len, 105);
}

static void test_query_embedded_nul_fatal(void **state)
{
    struct fake *f = *state;
    client_msg(f, 'Q', "SELECT\0 1", 10);
    assert_fatal(f, "08P01", SE_PROTOCOL);
    assert_int_equal(f->policy_calls, 0);
    assert_int_equal(f->up_out.len, 0);
}

static void test_query_without_terminator_fatal(void **state)
{
    struct fake *f = *state;
    client_msg(f, 'Q', "SELECT 1", 8);
    assert_fatal(f, "08P01", SE_PROTOCOL);
    assert_int_equal(f->up_out.len, 0);
}

static void test_query_empty_body_fatal(void **state)
{
    struct fake *f = *state;
    client_msg(f, 'Q', NULL, 0);
    assert_fatal(f, "08P01", SE_PROTOCOL);
}

/* ---------- client framing ---------- */

/* Sync, FunctionCall, CopyData, then a Query: three local answers and a forward. */
static void framing_stream(struct fbuf *b)
{
    fe_empty(b, 'S');
    fb_msg(b, 'F', "\0\0\0\1\0\0\0\0\0\0", 10);
    fb_msg(b, 'd', "row\n", 4);
    fe_query(b, "SELECT 1");
}

static void test_client_several_messages_in_one_buffer(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    framing_stream(&b);
    size_t need = 1, before_query = 5 + 15 + 9;
    /* the Query is not handled while earlier messages sit before it in the buffer */
    assert_int_equal(fe_proto_process(&f->r, b.p, b.len, &need), before_query);
    assert_int_equal(need, 0);
    assert_string_equal(fake_types(f), "ZEZ");
    assert_int_equal(f->refs, 0);
    assert_int_equal(fe_proto_process(&f->r, b.p + before_query, 14, &need), 0);
    assert_int_equal(f->refs, 1);
    assert_int_equal(f->r.query_len, 14);
    fb_free(&b);
}

/* What fe_proto_process must ask for when the buffer ends k bytes into a stream. */
static size_t expected_need(const struct fbuf *b, size_t k)
{
    size_t pos = 0;
    while (pos + 5 <= b->len) {
        size_t total = 1 + wire_get_u32(b->p + pos + 1);
        if (k == pos)
            return 0;
        if (k < pos + total)
            return k - pos < 5 ? 5 : total;
        pos += total;
    }
    return 0;
}

static void test_client_split_at_every_boundary_reports_need(void **state)
{
    struct fake *whole = *state;
    struct fbuf b = {0};
    framing_stream(&b);
    fake_client_buf(whole, &b);
    for (size_t k = 1; k < b.len; k++) {
        struct fake *f = fake_new();
        fake_client(f, b.p, k);
        assert_int_equal(f->fe_need, expected_need(&b, k));
        fake_client(f, b.p + k, b.len - k);
        assert_int_equal(f->cli_out.len, whole->cli_out.len);
        assert_memory_equal(f->cli_out.p, whole->cli_out.p, whole->cli_out.len);
        assert_int_equal(f->up_out.len, 14);
        assert_ptr_equal(f->last_ref, f->cli_in);
        fake_free(f);
    }
    fb_free(&b);
}

static void test_client_backlog_stops_local_answers(void **state)
{
    struct fake *f = *state;
    f->backlog = 64 * 1024 + 1;
    fake_client(f, "S\0\0\0\4", 5);
    assert_int_equal(f->cli_out.len, 0);
    assert_int_equal(f->cli_len, 5);
    f->backlog = 0;
    fake_pump_client(f);
    assert_string_equal(fake_types(f), "Z");
}

static void test_cancel_pending_holds_next_query(void **state)
{
    struct fake *f = *state;
    f->cancel_is_pending = true; /* a late cancel would hit the next statement */
    fake_query(f, "SELECT 1");
    assert_int_equal(f->policy_calls, 0);
    assert_int_equal(f->up_out.len, 0);
    f->cancel_is_pending = false;
    fake_pump_client(f);
    assert_int_equal(f->refs, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_query_allowed_forwarded_whole_from_client_buffer,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_query_stays_at_front_handled_zero, setup, teardown),
        cmocka_unit_test_setup_teardown(test_query_next_message_waits_for_ready_for_query, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_query_in_flight_not_handled_again_at_early_ready,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_copy_in_data_waits_for_query_in_flight, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_query_ends_once_with_rows_bytes_and_outcome, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_query_upstream_error_outcome_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_extended_0A000_then_discard_until_sync, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_extended_sync_in_block_poisons, setup, teardown),
        cmocka_unit_test_setup_teardown(test_function_call_0A000_with_ready_for_query, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_function_call_in_block_poisons, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copy_messages_outside_copy_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_terminate_ends_client_exit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_type_fatal_08P01, setup, teardown),
        cmocka_unit_test_setup_teardown(test_length_below_four_fatal_08P01, setup, teardown),
        cmocka_unit_test_setup_teardown(test_length_over_max_message_fatal_on_header, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_length_at_max_message_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_query_embedded_nul_fatal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_query_without_terminator_fatal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_query_empty_body_fatal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_several_messages_in_one_buffer, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_client_split_at_every_boundary_reports_need, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_client_backlog_stops_local_answers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_pending_holds_next_query, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
