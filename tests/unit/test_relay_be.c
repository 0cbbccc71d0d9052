/* The upstream-side handler's control messages fed scripted upstream bytes: ParameterStatus
 * checks (read-only backstop, malformed, unsafe settings), upstream FATALs, the COPY
 * refusals and upstream protocol errors. */
#include "relay_asserts.h"

/* ---------- ParameterStatus ---------- */

static void test_read_only_lost_fatal_25006_nothing_after(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    f->cfg.read_only = true;
    fake_query(f, "SET default_transaction_read_only = off");
    up_notice(&b, "before");
    up_param(&b, "default_transaction_read_only", "off");
    up_complete(&b, "SET");
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "NE");
    assert_report(f, 1, 'E', "FATAL", "25006", NULL);
    assert_detail(f, 1, "rule: read-only (default_transaction_read_only was turned off)");
    assert_int_equal(f->r.end, SE_GUARDRAIL);
    assert_int_equal(f->settings, 0);
    fb_free(&b);
}

/* The message ends the buffer exactly (an allocation of its size), so a read past it is an
 * ASan error: the ParameterStatus parser used to read one byte past the message. */
static size_t feed_exact(struct fake *f, char type, const void *body, size_t n)
{
    struct fbuf b = {0};
    fb_msg(&b, type, body, n);
    uint8_t *p = malloc(b.len);
    memcpy(p, b.p, b.len);
    size_t need = 0, used = be_proto_process(&f->r, p, b.len, b.len, &need);
    free(p);
    fb_free(&b);
    return used;
}

static void test_malformed_parameter_status_fatal_08P01(void **state)
{
    static const struct {
        const char *body;
        size_t n;
    } bad[] = {
        {"application_name\0psql", 21},     /* no second NUL */
        {"application_name\0psql\0x", 23},  /* trailing bytes */
        {"application_name\0psql\0\0", 23}, /* trailing NUL */
        {"application_name", 16},           /* no NUL at all */
        {"", 0},                            /* empty */
    };
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct fake *f = fake_new();
        feed_exact(f, 'S', bad[i].body, bad[i].n);
        assert_string_equal(fake_types(f), "E");
        assert_report(f, 0, 'E', "FATAL", "08P01", "invalid message from the upstream server");
        assert_detail(f, 0, "malformed ParameterStatus");
        assert_int_equal(f->r.end, SE_UPSTREAM_LOST);
        assert_int_equal(f->settings, 0);
        fake_free(f);
    }
}

static void test_parameter_status_well_formed_exact_buffer(void **state)
{
    struct fake *f = *state;
    assert_int_equal(feed_exact(f, 'S', "application_name\0psql", 22), 27);
    assert_string_equal(fake_types(f), "S");
    assert_int_equal(f->settings, 1);
    assert_string_equal(f->last_setting, "application_name=psql");
}

/* A client encoding that hides backslashes from the parser ends the session. */
static void test_unsafe_settings_fatal_0A000(void **state)
{
    static const char *const bad[][2] = {{"client_encoding", "SJIS"}, {"client_encoding", "big5"}};
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct fake *f = fake_new();
        struct fbuf b = {0};
        up_param(&b, bad[i][0], bad[i][1]);
        up_ready(&b, 'I');
        upstream(f, &b);
        assert_string_equal(fake_types(f), "E");
        assert_report(f, 0, 'E', "FATAL", "0A000", NULL);
        assert_int_equal(f->r.end, SE_PROTOCOL);
        fb_free(&b);
        fake_free(f);
    }
}

/* standard_conforming_strings=off is a setting like any other: the policy decides texts with a
 * backslash under both readings, so the session goes on. */
static void test_standard_conforming_strings_off_forwarded(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    up_param(&b, "standard_conforming_strings", "off");
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "SZ");
    assert_int_equal(f->r.end, SE_NONE);
    assert_int_equal(f->settings, 1);
    assert_string_equal(f->last_setting, "standard_conforming_strings=off");
    fb_free(&b);
}

/* ---------- upstream FATAL, COPY, protocol errors ---------- */

static void test_upstream_fatal_forwarded_marks_fatal_forwarded(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fake_query(f, "SELECT 1");
    up_error(&b, "FATAL", "57P01", "terminating connection due to administrator command");
    upstream(f, &b);
    assert_string_equal(fake_types(f), "E");
    assert_report(f, 0, 'E', "FATAL", "57P01",
                  "terminating connection due to administrator command");
    assert_true(f->r.fatal_forwarded);
    assert_int_equal(f->r.end, SE_NONE); /* the upstream's close ends the session */
    fb_free(&b);
}

static void test_copy_in_copy_fail_upstream_0A000_client(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fake_query(f, "COPY t FROM STDIN");
    up_copy(&b, 'G');
    upstream(f, &b);
    assert_int_equal(f->cli_out.len, 0); /* the client never sees the COPY */
    struct fmsg cf = fake_up_msg(f, -1);
    assert_int_equal(cf.type, 'f');
    assert_string_equal(fmsg_str(&cf), "COPY is not supported through pgwire-proxy");
    up_error(&b, "ERROR", "57014", "COPY from stdin failed: COPY is not supported");
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "EZ");
    assert_report(f, 0, 'E', "ERROR", "0A000", "COPY is not supported through pgwire-proxy");
    assert_detail(f, 0, "rule: copy-protocol");
    assert_int_equal(f->cancels, 0);
    assert_int_equal(f->outcome, STMT_REJECTED);
    fb_free(&b);
}

static void test_copy_out_cancel_0A000(void **state)
{
    struct fake *f = *state;
    struct fbuf b = {0};
    fake_query(f, "COPY t TO STDOUT");
    up_copy(&b, 'H');
    fb_msg(&b, 'd', "1\n", 2);
    fb_msg(&b, 'd', "2\n", 2);
    upstream(f, &b);
    assert_int_equal(f->cancels, 1);
    assert_int_equal(f->cli_out.len, 0);
    fe_empty(&b, 'c');
    up_complete(&b, "COPY 2"); /* completed before the cancel: still refused, not reported */
    up_ready(&b, 'I');
    upstream(f, &b);
    assert_string_equal(fake_types(f), "EZ");
    assert_report(f, 0, 'E', "ERROR", "0A000", NULL);
    assert_int_equal(f->outcome, STMT_REJECTED);
    fb_free(&b);
}

static void test_malformed_ready_for_query_fatal_08P01(void **state)
{
    struct fake *f = *state;
    feed_exact(f, 'Z', "X", 1);
    assert_string_equal(fake_types(f), "E");
    assert_detail(f, 0, "malformed ReadyForQuery");
    assert_int_equal(f->r.end, SE_UPSTREAM_LOST);
}

/* A broken upstream message ends the session with a FATAL that comes after everything the
 * upstream sent before it, in whatever read it arrived: the FATAL is the last message. */
static void test_upstream_broken_message_fatal_comes_last(void **state)
{
    static const uint8_t bad_param[] = "S\0\0\0\6ab";
    static const uint8_t bad_ready[] = "Z\0\0\0\5X";
    static const uint8_t bad_length[] = "D\0\0\0\3";
    static const uint8_t huge_control[] = "C\0\x20\0\0";
    static const struct {
        const uint8_t *p;
        size_t n;
    } bad[] = {{bad_param, 7}, {bad_ready, 6}, {bad_length, 5}, {huge_control, 5}};
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct fake *f = fake_new();
        struct fbuf b = {0};
        fake_query(f, "SELECT x FROM t");
        up_rowdesc(&b, "c");
        up_rows(&b, 1);
        fb_put(&b, bad[i].p, bad[i].n);
        upstream(f, &b);
        assert_string_equal(fake_types(f), "TDE");
        assert_report(f, 2, 'E', "FATAL", "08P01", "invalid message from the upstream server");
        assert_int_equal(f->r.end, SE_UPSTREAM_LOST);
        fb_free(&b);
        fake_free(f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_read_only_lost_fatal_25006_nothing_after, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_malformed_parameter_status_fatal_08P01, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_parameter_status_well_formed_exact_buffer, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unsafe_settings_fatal_0A000, setup, teardown),
        cmocka_unit_test_setup_teardown(test_standard_conforming_strings_off_forwarded, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_upstream_fatal_forwarded_marks_fatal_forwarded, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_copy_in_copy_fail_upstream_0A000_client, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_copy_out_cancel_0A000, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_ready_for_query_fatal_08P01, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_upstream_broken_message_fatal_comes_last, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
