/* Log line escaping: one event is one line, whatever a client names itself. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "log.h"

/* A user or application_name with a newline once started a forged log line. */
static void test_text_escape_keeps_one_line(void **state)
{
    (void)state;
    char out[128];
    log_text_escape(out, sizeof(out), "user=x\n2026-01-01T00:00:00Z error fake: injected");
    assert_null(strchr(out, '\n'));
    assert_string_equal(out, "user=x\\n2026-01-01T00:00:00Z error fake: injected");
    log_text_escape(out, sizeof(out), "a\rb\tc\x7f\\d");
    assert_string_equal(out, "a\\x0db\\x09c\\x7f\\\\d");
    log_text_escape(out, sizeof(out), "plain ütf-8");
    assert_string_equal(out, "plain ütf-8");
}

static void test_escapes_truncate_safely(void **state)
{
    (void)state;
    char out[8];
    memset(out, 'Z', sizeof(out));
    size_t n = log_text_escape(out, sizeof(out), "\n\n\n\n\n\n");
    assert_true(n < sizeof(out));
    assert_int_equal(out[n], 0);
    assert_null(strchr(out, '\n'));
    char one[1];
    assert_int_equal(log_text_escape(one, 1, "abc"), 0);
    assert_int_equal(one[0], 0);
}

static void test_json_escape(void **state)
{
    (void)state;
    char out[64];
    log_json_escape(out, sizeof(out), "say \"hi\"\n\\");
    assert_string_equal(out, "say \\\"hi\\\"\\n\\\\");
    log_json_escape(out, sizeof(out), "\x01");
    assert_string_equal(out, "\\u0001");
}

static void test_json_line_fields(void **state)
{
    (void)state;
    char out[512];
    log_json_line(out, sizeof(out), "T", "info", 7, "session_start",
                  "client=127.0.0.1:5 user=al\"ice then free text");
    assert_string_equal(out, "{\"time\":\"T\",\"level\":\"info\",\"session\":7,"
                             "\"event\":\"session_start\",\"client\":\"127.0.0.1:5\","
                             "\"user\":\"al\\\"ice\",\"msg\":\"then free text\"}");
    log_json_line(out, sizeof(out), "T", "warn", 0, "x", "no fields here");
    assert_non_null(strstr(out, "\"msg\":\"no fields here\"}"));
    char tiny[32];
    size_t n = log_json_line(tiny, sizeof(tiny), "T", "info", 1, "e", "k=v k=v k=v k=v");
    assert_true(n < sizeof(tiny));
    assert_int_equal(tiny[n], 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_escape_keeps_one_line),
        cmocka_unit_test(test_escapes_truncate_safely),
        cmocka_unit_test(test_json_escape),
        cmocka_unit_test(test_json_line_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
