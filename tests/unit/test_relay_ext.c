/* The relay's protocol handlers (fe_proto.c, be_proto.c and the extended protocol's fe_ext.c,
 * be_ext.c) driven with scripted bytes through the relay fake, under a compiled policy that
 * denies drop: what goes upstream, what reaches the client, without sockets. */
#include "relay_asserts.h"

static struct guard_policy *deny_policy(const char *kind)
{
    char err[256];
    const char *deny[] = {kind};
    struct guard_policy *p = guard_policy_new(deny, 1, NULL, 0, false, err, sizeof(err));
    assert_non_null(p);
    return p;
}

/* --extended-protocol allow and a policy that denies drop */
static int setup_ext(void **state)
{
    setup(state);
    struct fake *f = *state;
    fake_allow_extended(f);
    fake_set_policy(f, deny_policy("drop"));
    return 0;
}

/* The client reads the error after a Flush, then sends more of the segment and its Sync: the
 * backend skips all of it and answers the Sync alone. Nothing may stay queued: the next
 * Query goes upstream at once. */
static void test_requests_after_a_reported_error_leave_no_entries(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fe_parse_bind_execute(&b, "select 1/0");
    fe_empty(&b, 'H');
    assert_client_taken(f, &b);
    b.len = 0;
    up_empty(&b, '1');
    up_error(&b, "ERROR", "22012", "x");
    assert_upstream_taken(f, &b);
    b.len = 0;
    fe_parse_bind_execute(&b,
                          "drop table t"); /* refused: a failing Parse goes up, and is skipped */
    fe_parse_bind_execute(&b, "select 2");
    fe_empty(&b, 'S');
    assert_client_taken(f, &b);
    b.len = 0;
    up_ready(&b, 'I');
    assert_upstream_taken(f, &b);
    assert_string_equal(fake_types(f), "1EZ");
    assert_true(relay_ext_empty(f->r.x));
    f->up_out.len = 0;
    fake_query(f, "select 3"); /* a forwarded Query stays in the buffer */
    assert_up_types(f, "Q");
    fb_free(&b);
}

/* A malformed Parse gets its FATAL with the reason in the message field. */
static void test_malformed_parse_fatal_has_its_message(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fb_msg(&b, 'P', "\0select 1", 9); /* the query's NUL is missing */
    assert_client_taken(f, &b);
    assert_int_equal(f->r.end, SE_PROTOCOL);
    assert_string_equal(fake_types(f), "E");
    const char *m = memmem(f->cli_out.p, f->cli_out.len, "Minvalid string in message", 26);
    assert_non_null(m);
    fb_free(&b);
}

/* A limit tripped in a segment without Sync: once the run's terminator has arrived nothing
 * runs upstream, and the cancel grace must not end a client that syncs later. */
static void test_tripped_run_over_upstream_waits_only_for_the_client(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    f->cfg.max_rows = 2;
    fe_parse_bind_execute(&b, "select g from generate_series(1, 5) g");
    fe_empty(&b, 'H');
    assert_client_taken(f, &b);
    b.len = 0;
    up_empty(&b, '1');
    up_empty(&b, '2');
    for (int i = 0; i < 3; i++)
        up_row(&b, "1");
    assert_upstream_taken(f, &b);
    assert_true(relay_abort_waits_upstream(&f->r)); /* tripped, the statement still runs */
    b.len = 0;
    up_complete(&b, "SELECT 5");
    assert_upstream_taken(f, &b);
    assert_true(f->r.ab.active);                     /* the rest of the segment is dropped */
    assert_false(relay_abort_waits_upstream(&f->r)); /* but nothing runs upstream */
    assert_string_equal(fake_types(f), "12DDE");
    fb_free(&b);
}

/* A statement prepared before a reload and refused at its next Bind is audited with the
 * parameters of that Bind. */
static void test_bind_refused_after_reload_audits_its_params(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    f->r.audit_params = true;
    fe_parse(&b, "S_1", "delete from t where id = $1");
    assert_client_taken(f, &b);
    fake_set_policy(f, deny_policy("delete"));
    f->r.gen++; /* a reload */
    static const char *const seven[] = {"7"};
    f->last_nparams = 0;
    b.len = 0;
    fe_bind(&b, "", "S_1", 1, seven);
    assert_client_taken(f, &b);
    assert_true(f->r.x->discard); /* refused */
    assert_int_equal(f->last_nparams, 1);
    fb_free(&b);
}

/* A ParameterStatus whose value lacks its NUL, followed in the buffer by a ReadyForQuery (its
 * length word holds NULs): read within its own length it is malformed, the session ends with
 * FATAL 08P01, and neither message reaches the client as the upstream sent it. */
static void test_parameter_status_is_read_within_its_length(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fb_msg(&b, 'S', "TimeZone\0UTC", 12);
    up_ready(&b, 'I');
    fake_upstream_buf(f, &b);
    assert_int_equal(f->r.end, SE_UPSTREAM_LOST);
    assert_string_equal(fake_types(f), "E");
    assert_non_null(memmem(f->cli_out.p, f->cli_out.len, "C08P01", 6));
    assert_non_null(memmem(f->cli_out.p, f->cli_out.len, "Dmalformed ParameterStatus", 26));
    assert_null(memmem(f->cli_out.p, f->cli_out.len, "UTC", 3));
    fb_free(&b);
}

/* The portal table keeps a high-water mark so that a Bind, an Execute and the clear at
 * ReadyForQuery look at the slots in use, not all 256: slots below it are reused, it falls
 * when its top slot closes, and the table still holds exactly EXT_MAX_PORTALS. */
static void test_portal_table_high_water(void **state)
{
    (void)state;
    struct ext_state *x = relay_ext_new();
    assert_non_null(x);
    assert_int_equal(relay_ext_portal_open(x, "a", NULL), 0);
    assert_int_equal(relay_ext_portal_open(x, "b", NULL), 1);
    assert_int_equal(relay_ext_portal_open(x, "c", NULL), 2);
    assert_int_equal(x->portal_top, 3);
    relay_ext_portal_close(x, 1);
    assert_int_equal(x->portal_top, 3);
    assert_int_equal(relay_ext_portal_find(x, "b"), -1);
    assert_int_equal(relay_ext_portal_open(x, "d", NULL), 1); /* the hole is reused */
    assert_int_equal(relay_ext_portal_open(x, "a", NULL), 0); /* a rebind replaces in place */
    assert_int_equal(relay_ext_portal_find(x, "c"), 2);
    relay_ext_portal_close(x, 2);
    assert_int_equal(x->portal_top, 2);
    relay_ext_portals_clear(x);
    assert_int_equal(x->portal_top, 0);
    assert_int_equal(relay_ext_portal_find(x, "a"), -1);
    char name[16];
    for (int i = 0; i < EXT_MAX_PORTALS; i++) {
        snprintf(name, sizeof(name), "p%d", i);
        assert_int_equal(relay_ext_portal_open(x, name, NULL), i);
    }
    assert_int_equal(relay_ext_portal_open(x, "one too many", NULL), -1);
    assert_int_equal(relay_ext_portal_find(x, "p255"), 255);
    relay_ext_free(x);
}

/* The unnamed portal and its run are opened and given back at every statement: the objects
 * are reused, names of any length are kept whole, and a Parse of the text a statement already
 * has keeps its text (and takes the new policy generation) while another text replaces it. */
static void test_portals_runs_and_texts_are_reused(void **state)
{
    (void)state;
    struct ext_state *x = relay_ext_new();
    struct config cfg = {0};
    assert_int_equal(relay_ext_stmt_put(x, "", "SELECT $1", 9, 1), 0);
    struct ext_text *t = relay_ext_stmt_get(x, "")->text;
    assert_int_equal(relay_ext_stmt_put(x, "", "SELECT $1", 9, 2), 0);
    assert_ptr_equal(relay_ext_stmt_get(x, "")->text, t);
    assert_int_equal(relay_ext_stmt_get(x, "")->policy_gen, 2);
    assert_int_equal(relay_ext_stmt_put(x, "", "SELECT $2", 9, 2), 0);
    assert_string_equal(relay_ext_stmt_get(x, "")->text->data, "SELECT $2");
    size_t bytes = x->bytes;
    assert_int_equal(relay_ext_stmt_put(x, "", "SELECT $2", 9, 3), 0);
    assert_int_equal(x->bytes, bytes);

    char long_name[EXT_NAME_INLINE * 3];
    memset(long_name, 'p', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    const char *names[] = {"", long_name, "c_1", long_name + EXT_NAME_INLINE * 2 - 1};
    for (int round = 0; round < 8; round++) {
        const char *name = names[round % 4];
        int i = relay_ext_portal_open(x, name, relay_ext_stmt_get(x, "")->text);
        assert_int_equal(i, 0);
        struct ext_run *run = relay_ext_portal_run(x, i, &cfg);
        assert_non_null(run);
        assert_string_equal(run->portal, name);
        assert_string_equal(x->portals[i]->name, name);
        assert_string_equal(run->text->data, "SELECT $2");
        assert_int_equal(relay_ext_push(x, EXT_EXECUTE, EXT_FORWARD, run), 0);
        relay_ext_portals_clear(x); /* at ReadyForQuery: the FIFO entry still holds the run */
        assert_string_equal(run->portal, name);
        relay_ext_pop(x, NULL);
        assert_non_null(x->spare_portal);
        assert_non_null(x->spare_run);
    }
    relay_ext_free(x);
}

/* A run's statement keeps its fingerprint where its text lives: a prepared statement run
 * again, or the unnamed one parsed again with the same text, is not fingerprinted again; a
 * new text starts unknown. */
static void test_runs_share_their_texts_fingerprint(void **state)
{
    (void)state;
    struct ext_state *x = relay_ext_new();
    struct config cfg = {0};
    assert_int_equal(relay_ext_stmt_put(x, "", "SELECT $1", 9, 1), 0);
    struct ext_text *t = relay_ext_stmt_get(x, "")->text;
    assert_null(t->fp.kind);
    int i = relay_ext_portal_open(x, "", t);
    struct ext_run *run = relay_ext_portal_run(x, i, &cfg);
    assert_ptr_equal(run->st.fp_memo, &t->fp);
    run->st.fp_memo->kind = "select"; /* what the statistics leave there */
    run->st.fp_memo->fp = 42;
    relay_ext_portals_clear(x);
    assert_int_equal(relay_ext_stmt_put(x, "", "SELECT $1", 9, 1), 0);
    i = relay_ext_portal_open(x, "", relay_ext_stmt_get(x, "")->text);
    run = relay_ext_portal_run(x, i, &cfg);
    assert_string_equal(run->st.fp_memo->kind, "select");
    assert_true(run->st.fp_memo->fp == 42);
    relay_ext_portals_clear(x);
    assert_int_equal(relay_ext_stmt_put(x, "", "SELECT $1 + 1", 13, 1), 0);
    i = relay_ext_portal_open(x, "", relay_ext_stmt_get(x, "")->text);
    run = relay_ext_portal_run(x, i, &cfg);
    assert_null(run->st.fp_memo->kind);
    relay_ext_portals_clear(x);
    i = relay_ext_portal_open(x, "c", NULL); /* a cursor: no text, nowhere to keep one */
    assert_null(relay_ext_portal_run(x, i, &cfg)->st.fp_memo);
    relay_ext_free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_portal_table_high_water),
        cmocka_unit_test(test_portals_runs_and_texts_are_reused),
        cmocka_unit_test(test_runs_share_their_texts_fingerprint),
        cmocka_unit_test_setup_teardown(test_requests_after_a_reported_error_leave_no_entries,
                                        setup_ext, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_parse_fatal_has_its_message, setup_ext,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_tripped_run_over_upstream_waits_only_for_the_client,
                                        setup_ext, teardown),
        cmocka_unit_test_setup_teardown(test_bind_refused_after_reload_audits_its_params, setup_ext,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_parameter_status_is_read_within_its_length, setup_ext,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
