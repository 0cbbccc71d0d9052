/* The client-side handler's policy path fed scripted client bytes through a fake environment:
 * verdicts (denied, syntax error, COPY, out of memory, shadow), decisions that arrive later and
 * which message they answer, and the read-only switch after a reload turned --read-only on. */
#include "relay_asserts.h"

/* ---------- verdicts and decisions ---------- */

static void test_query_denied_idle_42501_rule_in_detail(void **state)
{
    struct fake *f = *state;
    fake_verdict(f, GUARD_DENY, "deny:drop", "statement kind drop is not allowed", 0);
    fake_query(f, "DROP TABLE t");
    assert_string_equal(fake_types(f), "EZ");
    assert_report(f, 0, 'E', "ERROR", "42501", NULL);
    struct fmsg e = fake_msg(f, 0);
    assert_string_equal(fmsg_field(&e, 'M'), "statement kind drop is not allowed");
    assert_string_equal(fmsg_field(&e, 'D'), "rule: deny:drop");
    assert_true(strlen(fmsg_field(&e, 'H')) > 0);
    assert_ready(f, 1, 'I');
    assert_int_equal(f->up_out.len, 0);
    assert_int_equal(f->done, 1);
    assert_int_equal(f->outcome, STMT_DENIED);
    assert_int_equal(f->last.upstream, STMT_UP_NOT_SENT);
    assert_string_equal(f->last_rule, "deny:drop");
    assert_int_equal(f->cli_len, 0); /* the refused Query was dropped */
    /* recorded on a statement of its own: nothing on the relay's points at the decision */
    assert_false(f->r.stmt.active);
    assert_null(f->r.stmt.rule);
}

static void test_query_denied_in_block_poisons_transaction(void **state)
{
    struct fake *f = *state;
    fake_in_block(f);
    fake_verdict(f, GUARD_DENY, "deny:drop", "statement kind drop is not allowed", 0);
    fake_query(f, "DROP TABLE t");
    assert_string_equal(fake_types(f), "E"); /* its ReadyForQuery comes from the poison */
    assert_report(f, 0, 'E', "ERROR", "42501", NULL);
    assert_int_equal(fake_up_count(f), 1);
    assert_true(fake_poison_sent(f));
    assert_int_equal(f->r.internal, RI_POISON);
    assert_false(fe_proto_ready(&f->r));
    fake_reply_poison(f);
    assert_string_equal(fake_types(f), "EZ"); /* the poison's error is not shown */
    assert_ready(f, 1, 'E');
    assert_int_equal(f->r.tx, 'E');
    assert_int_equal(f->done, 1);
    assert_true(fe_proto_ready(&f->r));
}

static void test_query_syntax_error_42601_with_position(void **state)
{
    struct fake *f = *state;
    fake_verdict(f, GUARD_SYNTAX, "", "syntax error at or near \"SELEC\"", 1);
    fake_query(f, "SELEC 1");
    assert_string_equal(fake_types(f), "EZ");
    assert_report(f, 0, 'E', "ERROR", "42601", NULL);
    struct fmsg e = fake_msg(f, 0);
    assert_string_equal(fmsg_field(&e, 'P'), "1");
    assert_string_equal(fmsg_field(&e, 'D'), ""); /* no rule: PostgreSQL's own error */
    assert_int_equal(f->outcome, STMT_ERROR);
    assert_string_equal(f->last.sqlstate, "42601");
    assert_string_equal(f->last_rule, "");
}

/* The policy's COPY verdict (--copy reject) is answered 0A000 with its rule and nothing goes
 * upstream; the relay does not override it when the session started under --copy allow (a
 * reload turned it off: the policy in force decides). */
static void test_copy_verdict_0A000_rule_copy_protocol(void **state)
{
    struct fake *f = *state;
    fake_verdict(f, GUARD_COPY, "copy-protocol", "COPY is not supported through pgwire-proxy", 0);
    fake_query(f, "COPY t FROM STDIN");
    assert_string_equal(fake_types(f), "EZ");
    assert_report(f, 0, 'E', "ERROR", "0A000", "COPY is not supported through pgwire-proxy");
    assert_detail(f, 0, "rule: copy-protocol");
    assert_int_equal(f->up_out.len, 0);
    assert_done(f, STMT_REJECTED, "0A000", "copy-protocol", STMT_UP_NOT_SENT);
    fake_reset_out(f);
    fake_allow_copy(f);
    fake_query(f, "COPY t FROM STDIN");
    assert_string_equal(fake_types(f), "EZ");
    assert_report(f, 0, 'E', "ERROR", "0A000", NULL);
    assert_int_equal(f->up_out.len, 0);
    fake_reset_out(f);
    f->verdict.verdict = GUARD_ALLOW; /* --copy allow in force: the policy allows it */
    fake_query(f, "COPY t FROM STDIN");
    assert_int_equal(f->refs, 1);
    assert_int_equal(f->cli_out.len, 0);
}

static void test_query_pending_decision_then_allowed(void **state)
{
    struct fake *f = *state;
    f->policy_rc = 1;
    fake_query(f, "SELECT 1");
    assert_int_equal(f->r.st, RS_POLICY);
    assert_int_equal(f->up_out.len, 0);
    assert_false(fe_proto_ready(&f->r));
    struct fbuf b = {0};
    fe_empty(&b, 'S');
    fake_client_buf(f, &b); /* not handled while the decision is pending */
    assert_int_equal(f->cli_out.len, 0);
    struct guard_decision d = {.verdict = GUARD_ALLOW};
    fe_proto_decided(&f->r, &d);
    assert_true(fe_proto_ready(&f->r));
    fake_pump_client(f);
    assert_int_equal(f->refs, 1);
    assert_int_equal(f->policy_calls, 1); /* not asked twice */
    assert_int_equal(f->refreshes, 1);
    fake_reply_select(f, 0, 'I');
    assert_string_equal(fake_types(f), "TCZZ");
    fb_free(&b);
}

static void test_query_pending_decision_then_denied(void **state)
{
    struct fake *f = *state;
    f->policy_rc = 1;
    fake_query(f, "DROP TABLE t");
    struct guard_decision d = {.verdict = GUARD_DENY};
    snprintf(d.rule, sizeof(d.rule), "deny:drop");
    snprintf(d.message, sizeof(d.message), "statement kind drop is not allowed");
    fe_proto_decided(&f->r, &d);
    fake_pump_client(f);
    assert_string_equal(fake_types(f), "EZ");
    assert_report(f, 0, 'E', "ERROR", "42501", NULL);
    assert_int_equal(f->up_out.len, 0);
    assert_int_equal(f->outcome, STMT_DENIED);
    assert_int_equal(f->r.st, RS_IDLE);
}

/* A shadow verdict that arrives later: the Query runs once it comes, and its record names the
 * rule the shadow policy would have refused it by; the next statement's record does not. */
static void test_query_pending_shadow_decision_runs_recorded(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    f->policy_rc = 1;
    fake_query(f, "TRUNCATE t");
    assert_int_equal(f->up_out.len, 0);
    struct guard_decision d = {.verdict = GUARD_ALLOW};
    snprintf(d.shadow_rule, sizeof(d.shadow_rule), "deny:truncate");
    fe_proto_decided(&f->r, &d);
    fake_pump_client(f);
    assert_int_equal(f->refs, 1);
    up_complete(&b, "TRUNCATE TABLE");
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "CZ");
    assert_done(f, STMT_OK, "", "", STMT_UP_COMMITTED);
    assert_string_equal(f->last.shadow_rule, "deny:truncate");
    f->policy_rc = 0;
    fake_query(f, "SELECT 1");
    fake_reply_select(f, 1, 'I');
    assert_int_equal(f->done, 2);
    assert_string_equal(f->last.shadow_rule, "");
    fb_free(&b);
}

/* A shadow verdict on a statement that fails upstream: the error is PostgreSQL's, unchanged,
 * and the record keeps both. */
static void test_query_shadow_verdict_error_keeps_outcome(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fake_shadow_verdict(f, "allow");
    fake_query(f, "DELETE FROM missing");
    up_error(&b, "ERROR", "42P01", "relation \"missing\" does not exist");
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "EZ");
    assert_report(f, 0, 'E', "ERROR", "42P01", "relation \"missing\" does not exist");
    assert_done(f, STMT_ERROR, "42P01", "", STMT_UP_ERROR);
    assert_string_equal(f->last.shadow_rule, "allow");
    fb_free(&b);
}

/* A decision nothing waits for is not kept for the next Query: that one asks the policy. */
static void test_decision_without_waiting_query_ignored(void **state)
{
    struct fake *f = *state;
    struct guard_decision d = {.verdict = GUARD_DENY};
    snprintf(d.rule, sizeof(d.rule), "deny:drop");
    fe_proto_decided(&f->r, &d);
    assert_true(fe_proto_ready(&f->r));
    fake_query(f, "SELECT 1");
    assert_int_equal(f->policy_calls, 1);
    assert_int_equal(f->refs, 1);
    assert_int_equal(f->cli_out.len, 0);
    fe_proto_decided(&f->r, &d); /* while the Query runs: nothing waits either */
    fake_reply_select(f, 1, 'I');
    fake_query(f, "SELECT 2");
    assert_int_equal(f->policy_calls, 2);
    assert_int_equal(f->refs, 2);
    assert_string_equal(fake_types(f), "TDCZ");
}

/* A decision belongs to the message it was asked for: when that message is dropped (its
 * segment is discarded after a limit tripped), the decision goes with it, and the next Parse
 * is decided on its own text. */
static void test_decision_of_a_dropped_parse_not_reused(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fake_allow_extended(f);
    f->cfg.max_rows = 1;
    fe_parse_bind_execute(&b, "SELECT x FROM t");
    fake_client_buf(f, &b);
    b.len = 0;
    f->policy_rc = 1;
    fe_parse(&b, "s2", "SELECT 2");
    fake_client_buf(f, &b); /* waits for its decision */
    b.len = 0;
    assert_int_equal(f->r.st, RS_POLICY);
    fb_msg(&b, '1', NULL, 0);
    fb_msg(&b, '2', NULL, 0);
    up_rows(&b, 2); /* the second row trips --max-rows: the segment is discarded */
    upstream(f, &b);
    assert_int_equal(f->cancels, 1);
    struct guard_decision allow = {.verdict = GUARD_ALLOW};
    fe_proto_decided(&f->r, &allow);
    fake_pump_client(f); /* the waiting Parse is dropped with its segment */
    fe_empty(&b, 'S');
    f->policy_rc = 0;
    fake_verdict(f, GUARD_DENY, "deny:drop", "statement kind drop is not allowed", 0);
    fe_parse(&b, "s3", "DROP TABLE t");
    fake_client_buf(f, &b);
    assert_int_equal(f->policy_calls, 3);
    struct fmsg p = fake_up_msg(f, -1); /* the proxy's failing Parse, not the client's */
    assert_int_equal(p.type, 'P');
    assert_null(memmem(p.body, p.len, "DROP", 4));
    assert_int_equal(f->outcome, STMT_DENIED);
    fb_free(&b);
}

/* A Parse waits with its decision when the proxy's own statement takes over (the poison of a
 * block whose tripped run had completed): afterwards the Parse is decided again, and when
 * that decision is pending it waits for it instead of taking the old one. */
static void test_decision_interrupted_by_poison_asked_again(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fake_allow_extended(f);
    fake_in_block(f);
    f->cfg.max_rows = 1;
    fe_extended_query(&b, "SELECT x FROM t");
    fake_client_buf(f, &b);
    b.len = 0;
    f->policy_rc = 1;
    fe_parse(&b, "s2", "SELECT 2");
    fake_client_buf(f, &b); /* waits for its decision */
    b.len = 0;
    f->cancel_is_pending = true; /* the decision arrives, the Parse is not handled yet */
    struct guard_decision allow = {.verdict = GUARD_ALLOW};
    fe_proto_decided(&f->r, &allow);
    fb_msg(&b, '1', NULL, 0);
    fb_msg(&b, '2', NULL, 0);
    up_rows(&b, 2);
    up_complete(&b, "SELECT 2");
    up_ready(&b, 'T'); /* completed inside the block: the proxy fails the block */
    upstream(f, &b);
    assert_true(fake_poison_sent(f));
    fake_reply_poison(f);
    assert_string_equal(fake_types(f), "12DEZ");
    int calls = f->policy_calls, sent = fake_up_count(f);
    f->cancel_is_pending = false;
    fake_pump_client(f);
    fake_pump_client(f);
    assert_int_equal(f->policy_calls, calls + 1); /* decided again */
    assert_int_equal(fake_up_count(f), sent);     /* and waiting for it */
    assert_int_equal(f->r.st, RS_POLICY);
    struct guard_decision deny = {.verdict = GUARD_DENY};
    snprintf(deny.rule, sizeof(deny.rule), "deny:select");
    fe_proto_decided(&f->r, &deny);
    fake_pump_client(f);
    struct fmsg p = fake_up_msg(f, -1); /* refused: the proxy's failing Parse */
    assert_int_equal(p.type, 'P');
    assert_null(memmem(p.body, p.len, "SELECT 2", 8));
    fb_free(&b);
}

static void test_query_policy_out_of_memory_refused(void **state)
{
    struct fake *f = *state;
    f->policy_rc = -1;
    fake_query(f, "SELECT 1");
    assert_string_equal(fake_types(f), "EZ");
    struct fmsg e = fake_msg(f, 0);
    assert_string_equal(fmsg_field(&e, 'C'), "42501");
    assert_string_equal(fmsg_field(&e, 'D'), "rule: internal");
    assert_int_equal(f->up_out.len, 0);
}

/* ---------- read-only switch after a reload ---------- */

static void test_read_only_reload_idle_switches_upstream_first(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    f->reload_read_only = true;
    fake_query(f, "SELECT 1");
    assert_int_equal(fake_up_count(f), 1);
    struct fmsg q = fake_up_msg(f, 0);
    assert_string_equal(fmsg_str(&q), "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY");
    assert_int_equal(f->refs, 0); /* the client's Query waits */
    assert_int_equal(f->policy_calls, 0);
    up_param(&b, "default_transaction_read_only", "on");
    up_complete(&b, "SET");
    up_ready(&b, 'I');
    fake_upstream_buf(f, &b);
    assert_string_equal(fake_types(f), "S"); /* the SET's C and Z are dropped */
    assert_false(f->r.read_only_pending);
    assert_int_equal(f->refs, 1); /* then the client's Query runs */
    q = fake_up_msg(f, 1);
    assert_string_equal(fmsg_str(&q), "SELECT 1");
    fake_reply_select(f, 1, 'I');
    assert_string_equal(fake_types(f), "STDCZ");
    assert_int_equal(f->done, 1);
    fb_free(&b);
}

/* The switch failed upstream: the session cannot be made read-only, so it ends before the
 * client's statement runs, rather than going on as if it were. */
static void test_read_only_switch_refused_upstream_ends_session(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    f->reload_read_only = true;
    fake_query(f, "UPDATE t SET x = 1");
    up_notice(&b, "before the error");
    up_error(&b, "ERROR", "XX000", "could not change the session");
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "NE");
    assert_report(f, 1, 'E', "FATAL", "25006", NULL);
    assert_detail(f, 1, "rule: read-only (--read-only was turned on by a configuration reload)");
    assert_int_equal(f->r.end, SE_GUARDRAIL);
    assert_int_equal(f->refs, 0); /* the UPDATE never reached the upstream */
    assert_int_equal(f->policy_calls, 0);
    assert_int_equal(fake_up_count(f), 1);
    fb_free(&b);
}

static void test_read_only_reload_in_block_25006_and_poison(void **state)
{
    struct fake *f = *state;
    fake_in_block(f);
    f->reload_read_only = true;
    fake_query(f, "UPDATE t SET x = 1");
    assert_string_equal(fake_types(f), "E");
    assert_report(f, 0, 'E', "ERROR", "25006", NULL);
    struct fmsg e = fake_msg(f, 0);
    assert_string_equal(fmsg_field(&e, 'D'),
                        "rule: read-only (--read-only was turned on by a configuration reload)");
    assert_true(fake_poison_sent(f));
    assert_int_equal(f->refs, 0);
    assert_int_equal(f->outcome, STMT_DENIED);
    assert_string_equal(f->last_rule, "read-only");
    fake_reply_poison(f);
    assert_ready(f, 1, 'E');
    assert_true(f->r.read_only_pending); /* switched once the block is over */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_query_denied_idle_42501_rule_in_detail, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_query_denied_in_block_poisons_transaction, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_query_syntax_error_42601_with_position, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_copy_verdict_0A000_rule_copy_protocol, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_query_pending_decision_then_allowed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_query_pending_decision_then_denied, setup, teardown),
        cmocka_unit_test_setup_teardown(test_query_pending_shadow_decision_runs_recorded, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_query_shadow_verdict_error_keeps_outcome, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_decision_without_waiting_query_ignored, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_decision_of_a_dropped_parse_not_reused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_decision_interrupted_by_poison_asked_again, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_query_policy_out_of_memory_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_only_reload_idle_switches_upstream_first, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_read_only_switch_refused_upstream_ends_session, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_read_only_reload_in_block_25006_and_poison, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
