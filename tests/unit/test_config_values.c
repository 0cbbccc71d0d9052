/* Unit tests for the value forms options share: durations, sizes, HOST:PORT. */
#include <errno.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <cmocka.h>

#include "config.h"

/* cmocka passes every test a state pointer that most tests do not need */
#pragma GCC diagnostic ignored "-Wunused-parameter"

static void test_duration_valid(void **state)
{
    static const struct {
        const char *in;
        uint64_t ms;
    } cases[] = {
        {"500ms", 500},
        {"30s", 30000},
        {"5m", 300000},
        {"5min", 300000},
        {"1h", 3600000},
        {"10", 10000},
        {"0", 0},
        {"0ms", 0},
        {"0s", 0},
        {"2147483647ms", INT_MAX},
        {"2147483s", 2147483000},
        {"596h", 2145600000},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t v = 12345;
        if (config_parse_duration_ms(cases[i].in, &v) != 0)
            fail_msg("'%s' rejected", cases[i].in);
        if (v != cases[i].ms)
            fail_msg("'%s' gave %llu", cases[i].in, (unsigned long long)v);
    }
}

static void test_duration_invalid(void **state)
{
    static const char *const bad[] = {
        "5x",
        "-1",
        "",
        "ms",
        "s",
        " 5",
        "5 s",
        "5S",
        "1.5s",
        "+5",
        "5sec",
        "5ms ",
        "1d",
        "0x10",
        "2147483648ms",
        "2147484s",
        "35792m",
        "597h",
        "99999999999999999999",
        "18446744073709551615h",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t v = 12345;
        if (config_parse_duration_ms(bad[i], &v) != -EINVAL)
            fail_msg("'%s' accepted", bad[i]);
        assert_int_equal(v, 12345); /* output untouched on error */
    }
    uint64_t v;
    assert_int_equal(config_parse_duration_ms(NULL, &v), -EINVAL);
}

static void test_size_valid(void **state)
{
    static const struct {
        const char *in;
        uint64_t bytes;
    } cases[] = {
        {"64kB", 64000},
        {"100MB", 100000000},
        {"1GiB", 1073741824},
        {"123", 123},
        {"0", 0},
        {"5B", 5},
        {"1KiB", 1024},
        {"2MiB", 2097152},
        {"1GB", 1000000000},
        {"18446744073709551615", UINT64_MAX},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t v = 12345;
        if (config_parse_size(cases[i].in, &v) != 0)
            fail_msg("'%s' rejected", cases[i].in);
        if (v != cases[i].bytes)
            fail_msg("'%s' gave %llu", cases[i].in, (unsigned long long)v);
    }
}

static void test_size_invalid(void **state)
{
    static const char *const bad[] = {
        "10XB",
        "-5",
        "",
        "kB",
        "1.5MB",
        "64 kB",
        " 64",
        "1TB",
        "5 ",
        "18446744073709551615kB",
        "99999999999999999999",
        "20000000000GiB",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t v = 12345;
        if (config_parse_size(bad[i], &v) != -EINVAL)
            fail_msg("'%s' accepted", bad[i]);
        assert_int_equal(v, 12345);
    }
    uint64_t v;
    assert_int_equal(config_parse_size(NULL, &v), -EINVAL);
}

static void test_hostport_valid(void **state)
{
    char host[64];
    int port = 0;
    assert_int_equal(config_parse_hostport("127.0.0.1:5433", host, sizeof(host), &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 5433);
    assert_int_equal(config_parse_hostport("[::1]:6543", host, sizeof(host), &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 6543);
    assert_int_equal(config_parse_hostport("db.internal:65535", host, sizeof(host), &port), 0);
    assert_string_equal(host, "db.internal");
    assert_int_equal(port, 65535);
    assert_int_equal(config_parse_hostport("0.0.0.0:1", host, sizeof(host), &port), 0);
    assert_string_equal(host, "0.0.0.0");
    assert_int_equal(port, 1);
}

static void test_hostport_invalid(void **state)
{
    static const char *const bad[] = {
        "127.0.0.1", "127.0.0.1:", "h:70000", "h:65536", ":5433", "[]:5433",
        "h:-1",      "h:54x",      "",        "h:5 ",    "h: 5",  "[::1]",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char host[64] = "unchanged";
        int port = 42;
        if (config_parse_hostport(bad[i], host, sizeof(host), &port) != -EINVAL)
            fail_msg("'%s' accepted", bad[i]);
        assert_string_equal(host, "unchanged");
        assert_int_equal(port, 42);
    }
    char small[4];
    int port;
    assert_int_equal(config_parse_hostport("abcd:1", small, sizeof(small), &port), -EINVAL);
    assert_int_equal(config_parse_hostport("abc:1", small, sizeof(small), &port), 0);
    assert_int_equal(config_parse_hostport(NULL, small, sizeof(small), &port), -EINVAL);
}

/* --- flags --- */

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration_valid), cmocka_unit_test(test_duration_invalid),
        cmocka_unit_test(test_size_valid),     cmocka_unit_test(test_size_invalid),
        cmocka_unit_test(test_hostport_valid), cmocka_unit_test(test_hostport_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
