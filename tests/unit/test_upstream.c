/* What the proxy sends upstream on a client's behalf: escaped option values, the audit
 * application_name, failure classification and DSN checks. No sockets. */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "upstream.h"
#include "wire.h"

#pragma GCC diagnostic ignored "-Wunused-parameter"

/* PostgreSQL's option splitting as documented for pg_split_opts(): words end at an unescaped
 * space; a backslash makes the next byte literal. is_space stands for the backend's isspace()
 * in some LC_CTYPE. */
static int split_opts(const char *s, char words[][512], int max, int (*is_space)(int))
{
    int n = 0;
    while (*s) {
        while (*s && is_space((unsigned char)*s))
            s++;
        if (!*s)
            break;
        size_t o = 0;
        bool esc = false;
        for (; *s && (esc || !is_space((unsigned char)*s)); s++) {
            if (!esc && *s == '\\') {
                esc = true;
                continue;
            }
            esc = false;
            if (o < 511)
                words[n][o++] = *s;
        }
        words[n][o] = 0;
        if (++n == max)
            break;
    }
    return n;
}

static int c_space(int c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* a single-byte locale where NEL and NO-BREAK SPACE count as spaces too */
static int latin_space(int c)
{
    return c_space(c) || c == 0x85 || c == 0xA0;
}

/* A TAB in TimeZone once split it and injected -c settings: every byte, alone and before an
 * injection attempt, comes back as exactly one option with the value unchanged. */
static void test_escape_every_byte_is_one_option(void **state)
{
    int (*spaces[])(int) = {c_space, latin_space};
    for (int b = 1; b < 256; b++) {
        char value[64], esc[160], opts[256], words[8][512], expect[80];
        for (size_t sh = 0; sh < 2; sh++) {
            if (sh == 0)
                snprintf(value, sizeof(value), "%c", b);
            else
                snprintf(value, sizeof(value), "UTC%c-c%cdefault_transaction_read_only=off", b, b);
            assert_true(upstream_escape_option(esc, sizeof(esc), value) > 0);
            snprintf(opts, sizeof(opts), "-c statement_timeout=5 -c TimeZone=%s -c x=y", esc);
            snprintf(expect, sizeof(expect), "TimeZone=%s", value);
            for (size_t k = 0; k < 2; k++) {
                int n = split_opts(opts, words, 8, spaces[k]);
                if (n != 6 || strcmp(words[3], expect) != 0 || strcmp(words[5], "x=y") != 0)
                    fail_msg("byte %02x shape %zu: %d words, [3]=%s", b, sh, n, words[3]);
            }
        }
    }
}

static void test_escape_never_truncates(void **state)
{
    char out[8];
    assert_int_equal(upstream_escape_option(out, sizeof(out), "abcdefg"), 7);
    assert_int_equal(upstream_escape_option(out, sizeof(out), "abcdefgh"), -1);
    assert_string_equal(out, "");
    assert_int_equal(upstream_escape_option(out, sizeof(out), "ab\tc"), 5);
    assert_string_equal(out, "ab\\\tc");
    assert_int_equal(upstream_escape_option(out, sizeof(out), "abcd\t\t"), -1);
}

static struct wire_startup startup_with(const char *name, const char *value)
{
    struct wire_startup sp;
    memset(&sp, 0, sizeof(sp));
    sp.kind = WIRE_PKT_STARTUP;
    sp.params[0].name = "user";
    sp.params[0].value = "alice";
    sp.params[1].name = name;
    sp.params[1].value = value;
    sp.nparams = 2;
    return sp;
}

/* A value that cannot be carried whole is refused with 22023, naming the parameter. */
static void test_check_startup_refuses_what_does_not_fit(void **state)
{
    struct config cfg;
    config_defaults(&cfg);
    cfg.upstream_dsn = "host=h";
    static char big[UPSTREAM_OPTIONS_MAX];
    memset(big, '\t', sizeof(big) - 1);
    big[sizeof(big) / 2 + 16] = 0; /* fits unescaped, not escaped */
    struct wire_startup sp = startup_with("TimeZone", big);
    struct upstream_request req = {.cfg = &cfg, .startup = &sp, .client_addr = "1.2.3.4:5"};
    char code[6], err[256];
    assert_int_equal(upstream_check_startup(&req, code, err, sizeof(err)), -1);
    assert_string_equal(code, "22023");
    assert_non_null(strstr(err, "\"TimeZone\""));
    sp = startup_with("TimeZone", "Asia/Tokyo");
    assert_int_equal(upstream_check_startup(&req, code, err, sizeof(err)), 0);
}

/* A user "dba@10.20.30.40:5432]" plus spaces once pushed the real address out of the name. */
static void test_audit_name_keeps_the_address(void **state)
{
    char out[64];
    const char *addr = "127.0.0.1:54321";
    upstream_audit_name(out, sizeof(out), "psql", "dba@10.20.30.40:5432]                    ",
                        addr);
    assert_true(strlen(out) <= 63);
    size_t n = strlen(out), al = strlen(addr);
    assert_true(n > al + 2 && out[n - 1] == ']');
    assert_memory_equal(out + n - 1 - al, addr, al);
    assert_int_equal(out[n - 2 - al], '@');
    /* the user's own @ and ] are encoded: exactly one '@' and one ']' in the suffix */
    const char *open = strrchr(out, '[');
    assert_non_null(open);
    int ats = 0, closes = 0;
    for (const char *p = open; *p; p++)
        ats += *p == '@', closes += *p == ']';
    assert_int_equal(ats, 1);
    assert_int_equal(closes, 1);
    assert_non_null(strstr(open, "dba%4010.20.30.40:5432%5D"));

    /* short names are whole, the app name first */
    upstream_audit_name(out, sizeof(out), "app", "bob", addr);
    assert_string_equal(out, "app [bob@127.0.0.1:54321]");
    /* a long user is cut and marked; the address stays whole even with an IPv6 peer */
    const char *v6 = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255:65535";
    upstream_audit_name(out, sizeof(out), "a-long-application-name", "x[y]z%w@q\xff\xfe", v6);
    n = strlen(out);
    assert_true(n <= 63);
    assert_non_null(strstr(out, v6));
    for (const char *p = strrchr(out, '['); *p; p++)
        assert_true(*p > 0x20 && *p < 0x7f); /* pure printable ASCII */
    upstream_audit_name(out, sizeof(out), NULL, "u\xc3\xa9 x", "1.2.3.4:5");
    assert_string_equal(out, "[u%C3%A9%20x@1.2.3.4:5]");
}

static void test_audit_name_marks_a_cut_user(void **state)
{
    char out[64], user[200];
    memset(user, 'u', sizeof(user) - 1);
    user[sizeof(user) - 1] = 0;
    upstream_audit_name(out, sizeof(out), "app", user, "127.0.0.1:1");
    assert_int_equal(strlen(out), strlen("app [") + 32 + strlen("@127.0.0.1:1]"));
    assert_non_null(strstr(out, "...@127.0.0.1:1]"));
    assert_memory_equal(out, "app [", 5); /* the app name keeps its room */
}

/* libpq's text can quote the DSN (a malformed password): the message is the class's own. */
static void test_classify_never_copies_libpq_text(void **state)
{
    static const struct {
        const char *libpq, *code, *must;
    } cases[] = {
        {"connection to server at \"h\" (1.2.3.4), port 5432 failed: FATAL:  password "
         "authentication failed for user \"u\"",
         "28P01", "password authentication failed"},
        {"invalid percent-encoded token: \"s3cr%et\"", "08001", "could not connect"},
        {"could not translate host name \"s3cr%et@h\" to address: Name or service not known",
         "08001", "host name not found"},
        {"connection to server at \"h\", port 1 failed: Connection refused", "08001",
         "Connection refused"},
        {"FATAL:  remaining connection slots are reserved", "53300", "too many clients"},
        {"FATAL:  database \"s3cr%et\" does not exist", "3D000", "does not exist"},
        {NULL, "53200", "out of memory"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char code[6], err[256];
        upstream_classify_failure(cases[i].libpq, NULL, code, err, sizeof(err));
        assert_string_equal(code, cases[i].code);
        assert_non_null(strstr(err, cases[i].must));
        assert_null(strstr(err, "s3cr"));
        assert_null(strchr(err, '"'));
    }
}

/* PostgreSQL's answer to an invalid value is rebuilt from what the client sent. */
static void test_classify_invalid_client_value(void **state)
{
    struct wire_startup sp = startup_with("TimeZone", "Mars/Olympus");
    char code[6], err[256];
    upstream_classify_failure("connection to server at \"h\" failed: FATAL:  invalid value for "
                              "parameter \"TimeZone\": \"Mars/Olympus\"",
                              &sp, code, err, sizeof(err));
    assert_string_equal(code, "22023");
    assert_string_equal(err, "invalid value for parameter \"TimeZone\": \"Mars/Olympus\"");
    /* a parameter the client did not send (e.g. from the DSN's options) is not named */
    upstream_classify_failure("FATAL:  invalid value for parameter \"DateStyle\": \"x\"", &sp, code,
                              err, sizeof(err));
    assert_string_equal(code, "08001");
}

static void test_dsn_check(void **state)
{
    static const struct {
        const char *dsn;
        int ok;
    } cases[] = {
        {"host=h port=5432 dbname=d user=u password='a b'", 0},
        {"postgresql://u:p%40ss@h:5432/db?sslmode=disable", 0},
        {"postgresql://u@h1:1,h2:2/db", 0},
        {"host=h port=5432,5433", 0},
        {"password=MARKER tail", -1},
        {"password='MARKER", -1},
        {"postgresql://u:MAR%KER@h/db", -1},
        {"postgresql://u:MAR/KER@h/db", -1},
        {"postgresql://u:MAR@KER@h/db", -1},
        {"postgresql://u@h/db?password=MAR=KER", -1},
        {"host=h port=MARKER", -1},
        {"host=h bogus=MARKER", -1},
        {"host=h user= password=MARKER", -1}, /* libpq: user is "password=MARKER" */
        {"host=h user='' password=MARKER", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[256] = "";
        int rc = upstream_dsn_check(cases[i].dsn, err, sizeof(err));
        if (rc != cases[i].ok)
            fail_msg("check(%s) = %d (%s)", cases[i].dsn, rc, err);
        assert_null(strstr(err, "MAR"));
        assert_null(strstr(err, "KER"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_every_byte_is_one_option),
        cmocka_unit_test(test_escape_never_truncates),
        cmocka_unit_test(test_check_startup_refuses_what_does_not_fit),
        cmocka_unit_test(test_audit_name_keeps_the_address),
        cmocka_unit_test(test_audit_name_marks_a_cut_user),
        cmocka_unit_test(test_classify_never_copies_libpq_text),
        cmocka_unit_test(test_classify_invalid_client_value),
        cmocka_unit_test(test_dsn_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
