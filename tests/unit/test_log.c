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

/* An independent check that bytes are well-formed UTF-8 (Unicode Table 3-7), by code point. */
static int check_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!len || i + len > n)
            return 0;
        unsigned cp = len == 1 ? c : c & (0x7F >> len);
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        static const unsigned min[] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

/* A user name with invalid UTF-8 once made every audit record of its session invalid JSON:
 * every 1- and 2-byte input, and sequences cut at any length, escape to valid UTF-8. */
static void test_json_escape_always_valid_utf8(void **state)
{
    (void)state;
    char in[4], out[64];
    for (unsigned a = 1; a < 256; a++) {
        for (unsigned b = 0; b < 256; b++) {
            in[0] = (char)a, in[1] = (char)b, in[2] = 0;
            size_t n = log_json_escape(out, sizeof(out), in);
            if (!check_utf8((unsigned char *)out, n))
                fail_msg("escape of %02x %02x is not UTF-8", a, b);
            assert_int_equal(log_utf8_valid(in, strlen(in)),
                             check_utf8((unsigned char *)in, strlen(in)));
        }
    }
    static const char *const bad[] = {
        "\xC0\xAF", "\xE0\x80\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xF8\x88\x80\x80\x80",
        "\xE2\x82", "\xFF"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(log_utf8_valid(bad[i], strlen(bad[i])));
        size_t n = log_json_escape(out, sizeof(out), bad[i]);
        assert_true(check_utf8((unsigned char *)out, n));
        assert_non_null(strstr(out, "\xEF\xBF\xBD"));
    }
    /* valid text is kept as it is; a small buffer never cuts a character */
    log_json_escape(out, sizeof(out), "caf\xC3\xA9 \xF0\x9F\x98\x80");
    assert_string_equal(out, "caf\xC3\xA9 \xF0\x9F\x98\x80");
    for (size_t cap = 1; cap < 12; cap++) {
        size_t n = log_json_escape(out, cap, "\xF0\x9F\x98\x80\xC3\xA9\xFF");
        assert_true(n < cap && check_utf8((unsigned char *)out, n));
    }
}

static void test_hex_field_only_for_invalid_bytes(void **state)
{
    (void)state;
    char out[128];
    assert_int_equal(log_hex_field(out, sizeof(out), "user", "alice", 5), 0);
    assert_string_equal(out, "");
    assert_int_equal(log_hex_field(out, sizeof(out), "user", "caf\xC3\xA9", 5), 0);
    log_hex_field(out, sizeof(out), "user", "a\xFF]", 3);
    assert_string_equal(out, ",\"user_hex\":\"61ff5d\"");
    assert_int_equal(log_hex_field(out, 8, "user", "a\xFF]", 3), 0); /* does not fit: none */
}

/* The JSON log line of a session with such a user parses, and carries the bytes in hex. */
static void test_json_line_invalid_utf8_user(void **state)
{
    (void)state;
    char out[512];
    log_json_line(out, sizeof(out), "T", "info", 7, "session_start",
                  "client=127.0.0.1:5 user=\xFFroot database=db");
    assert_true(check_utf8((unsigned char *)out, strlen(out)));
    assert_string_equal(out, "{\"time\":\"T\",\"level\":\"info\",\"session\":7,"
                             "\"event\":\"session_start\",\"client\":\"127.0.0.1:5\","
                             "\"user\":\"\xEF\xBF\xBDroot\",\"user_hex\":\"ff726f6f74\","
                             "\"database\":\"db\"}");
}

/* Whatever the message, the line ends as an object: a long field is shortened, never cut. */
static void test_json_line_always_closes(void **state)
{
    (void)state;
    char msg[2048], out[400];
    memset(msg, 1, sizeof(msg) - 1); /* every byte becomes a six-byte escape */
    msg[sizeof(msg) - 1] = 0;
    memcpy(msg, "user=\xff", 6);
    for (size_t cap = 64; cap <= sizeof(out); cap += 17) {
        size_t n = log_json_line(out, cap, "T", "info", 1, "e", msg);
        assert_true(n < cap);
        assert_int_equal(out[n - 1], '}');
        assert_true(check_utf8((unsigned char *)out, n));
        assert_null(strstr(out, "\\u000}")); /* no escape cut in half */
    }
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
        cmocka_unit_test(test_json_escape_always_valid_utf8),
        cmocka_unit_test(test_hex_field_only_for_invalid_bytes),
        cmocka_unit_test(test_json_line_invalid_utf8_user),
        cmocka_unit_test(test_json_line_always_closes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
