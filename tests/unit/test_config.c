/* Unit tests for option parsing: value parsers, flags/env/file precedence, error messages. */
#include <errno.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <limits.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "config.h"
#include "log.h"

/* cmocka passes every test a state pointer that most tests do not need */
#pragma GCC diagnostic ignored "-Wunused-parameter"

static char *no_env[] = {NULL};

#define ARGC(...) ((int)(sizeof((char *[]){"pgwire-proxy", __VA_ARGS__}) / sizeof(char *)))
#define ARGV(...) ((char *[]){"pgwire-proxy", __VA_ARGS__, NULL})
/* config_load with an argv built from the arguments; err must be an array */
#define LOAD(c, envp, err, ...)                                                                    \
    config_load((c), ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), (envp), NULL, (err), sizeof(err))

/* A one-line message that names what was wrong and what is accepted. */
static void assert_err_line(const char *err, const char *name, const char *form)
{
    if (!strstr(err, name))
        fail_msg("error does not name '%s': %s", name, err);
    if (form && !strstr(err, form))
        fail_msg("error does not say '%s': %s", form, err);
    if (strchr(err, '\n') || strchr(err, '\r'))
        fail_msg("error is not one line: %s", err);
}

/* Writes text to a new temporary file; returns its path (caller unlinks and frees). */
static char *write_temp(const char *text)
{
    const char *dir = getenv("TMPDIR");
    char *path = NULL;
    assert_true(asprintf(&path, "%s/pgwp-test-XXXXXX", dir && *dir ? dir : "/tmp") > 0);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
    return path;
}

static void rewrite(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    fclose(f);
}

static void drop_temp(char *path)
{
    unlink(path);
    free(path);
}

/* --- defaults --- */

/* An unknown policy rule is an invalid value like any other: exit 2 with the rule named (it was
 * once only found when the server started, which exited 1). */
static void test_unknown_rule_is_a_config_error(void **state)
{
    (void)state;
    struct config c;
    char err[512];
    assert_int_equal(LOAD(&c, no_env, err, "--upstream", "host=x", "--deny", "nonsense"),
                     CONFIG_ERROR);
    assert_non_null(strstr(err, "nonsense"));
    assert_null(strchr(err, '\n'));
    assert_int_equal(
        LOAD(&c, no_env, err, "--upstream", "host=x", "--deny", "drop", "--allow", "select"),
        CONFIG_OK);
    config_free(&c);
}

/* --max-parse-size takes a size in range; --permit takes exception entries; a shadow: entry's
 * mistakes are one line naming the entry. */
static void test_policy_options(void **state)
{
    (void)state;
    struct config c;
    char err[512];
    assert_int_equal(LOAD(&c, no_env, err, "--upstream", "host=x", "--max-parse-size", "64kB",
                          "--deny", "drop", "--permit", "function:query_to_xml", "--permit",
                          "group:sql_text"),
                     CONFIG_OK);
    assert_int_equal(c.max_parse_size, 64000);
    assert_int_equal(c.npermit, 2);
    assert_string_equal(c.permit[1], "group:sql_text");
    config_free(&c);
    assert_int_equal(LOAD(&c, no_env, err, "--upstream", "host=x", "--max-parse-size", "999"),
                     CONFIG_ERROR);
    assert_non_null(strstr(err, "--max-parse-size"));
    assert_non_null(strstr(err, "1kB to 16MB"));
    assert_int_equal(LOAD(&c, no_env, err, "--upstream", "host=x", "--max-parse-size", "17MB"),
                     CONFIG_ERROR);
    assert_int_equal(LOAD(&c, no_env, err, "--upstream", "host=x", "--max-parse-size", "lots"),
                     CONFIG_ERROR);
    assert_non_null(strstr(err, "--max-parse-size"));
    assert_int_equal(LOAD(&c, no_env, err, "--upstream", "host=x", "--permit", "select"),
                     CONFIG_ERROR);
    assert_non_null(strstr(err, "invalid permit rule"));
    assert_int_equal(LOAD(&c, no_env, err, "--upstream", "host=x", "--deny", "shadow:drop",
                          "--allow", "shadow:select"),
                     CONFIG_OK);
    assert_int_equal(c.ndeny, 1);
    assert_string_equal(c.deny[0], "shadow:drop");
    config_free(&c);
    assert_int_equal(LOAD(&c, no_env, err, "--upstream", "host=x", "--deny", "shadow:shadow:drop"),
                     CONFIG_ERROR);
    assert_non_null(strstr(err, "shadow: is given twice"));
    assert_null(strchr(err, '\n'));
    assert_int_equal(LOAD(&c, no_env, err, "--upstream", "host=x", "--allow", "shadow:nope"),
                     CONFIG_ERROR);
    assert_non_null(strstr(err, "\"shadow:nope\": unknown statement kind \"nope\" in allow list"));
    assert_null(strchr(err, '\n'));
    assert_int_equal(LOAD(&c, no_env, err, "--upstream", "host=x", "--deny", "shadow:"),
                     CONFIG_ERROR);
    assert_non_null(strstr(err, "empty shadow rule"));
    assert_int_equal(LOAD(&c, no_env, err, "--upstream", "host=x", "--deny", "group:nope"),
                     CONFIG_ERROR);
    assert_non_null(strstr(err, "group:nope"));
}

static void test_defaults(void **state)
{
    struct config c;
    config_defaults(&c);
    assert_string_equal(c.listen_host, "127.0.0.1");
    assert_int_equal(c.listen_port, 5433);
    assert_int_equal(c.max_connections, 100);
    assert_int_equal(c.workers, 0);
    assert_int_equal(c.query_timeout_ms, 30000);
    assert_int_equal(c.max_rows, 10000);
    assert_int_equal(c.max_bytes, 100000000);
    assert_int_equal(c.shutdown_timeout_ms, 30000);
    assert_int_equal(c.cancel_rate_limit, 20);
    assert_int_equal(c.startup_timeout_ms, 10000);
    assert_int_equal(c.idle_tx_timeout_ms, 0);
    assert_int_equal(c.on_limit, CONFIG_ON_LIMIT_ERROR);
    assert_int_equal(c.tls_mode, CONFIG_TLS_ALLOW);
    assert_int_equal(c.tls_min_version, 0); /* 1.2 */
    assert_int_equal(c.log_level, LOGL_INFO);
    assert_true(c.policy_cache);
    assert_false(c.read_only);
    assert_null(c.upstream_dsn);
    assert_null(c.metrics_listen);
    assert_int_equal(c.ndeny, 0);
    assert_int_equal(c.nallow, 0);
    assert_int_equal(c.max_startup_connections, 1000);
    assert_int_equal(c.max_startup_per_address, 64);
    assert_int_equal(c.nproxy_protocol_from, 0);
    assert_false(c.allow_core_dumps);
    assert_int_equal(c.npermit, 0);
    assert_int_equal(c.max_parse_size, 1000000);
    config_free(&c);
}

/* The startup caps, the PROXY protocol sources and core dumps, from flags, env and file. */
static void test_startup_options(void **state)
{
    struct config c;
    char err[512];
    assert_int_equal(LOAD(&c, no_env, err, "--upstream=host=x", "--max-startup-connections", "5",
                          "--max-startup-per-address=2", "--proxy-protocol-from", "10.0.0.0/8, ::1",
                          "--allow-core-dumps"),
                     CONFIG_OK);
    assert_int_equal(c.max_startup_connections, 5);
    assert_int_equal(c.max_startup_per_address, 2);
    assert_int_equal(c.nproxy_protocol_from, 2);
    assert_int_equal(c.proxy_from[0].family, AF_INET);
    assert_int_equal(c.proxy_from[0].prefix, 8);
    assert_int_equal(c.proxy_from[1].family, AF_INET6);
    assert_int_equal(c.proxy_from[1].prefix, 128);
    assert_true(c.allow_core_dumps);
    config_free(&c);
    char *env[] = {"PGWIRE_PROXY_UPSTREAM=host=x", "PGWIRE_PROXY_PROXY_PROTOCOL_FROM=127.0.0.1",
                   NULL};
    assert_int_equal(LOAD(&c, env, err, "--max-startup-per-address=7"), CONFIG_OK);
    assert_int_equal(c.nproxy_protocol_from, 1);
    assert_int_equal(c.max_startup_per_address, 7);
    config_free(&c);
    static char *bad[][2] = {{"--max-startup-connections", "0"},
                             {"--max-startup-per-address", "many"},
                             {"--proxy-protocol-from", "10.0.0.0/40"},
                             {"--proxy-protocol-from", "lb.internal"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(LOAD(&c, no_env, err, "--upstream=host=x", bad[i][0], bad[i][1]),
                         CONFIG_ERROR);
        assert_err_line(err, bad[i][0], NULL);
    }
}

/* A malformed DSN is an error naming --upstream that shows nothing of the DSN. */
static void test_upstream_is_validated(void **state)
{
    struct config c;
    char err[512];
    static char *bad[] = {"host=h password=Sec ret", "postgresql://u:Sec%ret@h/db",
                          "postgresql://u:Sec/ret@h/db", "host=h port=Secret"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(LOAD(&c, no_env, err, "--upstream", bad[i]), CONFIG_ERROR);
        assert_err_line(err, "--upstream", "not shown");
        assert_null(strstr(err, "Sec"));
        assert_null(strstr(err, "ret"));
    }
}

static void test_load_minimal_keeps_defaults(void **state)
{
    struct config c;
    char err[256];
    assert_int_equal(LOAD(&c, no_env, err, "--upstream", "host=db"), CONFIG_OK);
    assert_string_equal(err, "");
    assert_string_equal(c.upstream_dsn, "host=db");
    assert_string_equal(c.listen_host, "127.0.0.1");
    assert_int_equal(c.listen_port, 5433);
    assert_int_equal(c.max_connections, 100);
    assert_int_equal(c.query_timeout_ms, 30000);
    assert_int_equal(c.max_rows, 10000);
    assert_int_equal(c.max_bytes, 100000000);
    assert_int_equal(c.shutdown_timeout_ms, 30000);
    assert_int_equal(c.startup_timeout_ms, 10000);
    config_free(&c);
    assert_null(c.upstream_dsn);
}

/* --- value parsers --- */

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

static void test_flags_both_forms(void **state)
{
    struct config c;
    char err[256];
    assert_int_equal(LOAD(&c, no_env, err, "--upstream", "host=a", "--max-rows", "5",
                          "--max-bytes=64kB", "--query-timeout", "500ms", "--listen=[::1]:7000",
                          "--max-connections=7", "--workers", "4", "--on-limit", "truncate",
                          "--log-level=debug", "--tls-min-version", "1.3",
                          "--idle-in-transaction-timeout=1m", "--metrics-listen", "127.0.0.1:9187"),
                     CONFIG_OK);
    assert_string_equal(c.upstream_dsn, "host=a");
    assert_int_equal(c.max_rows, 5);
    assert_int_equal(c.max_bytes, 64000);
    assert_int_equal(c.query_timeout_ms, 500);
    assert_string_equal(c.listen_host, "::1");
    assert_int_equal(c.listen_port, 7000);
    assert_int_equal(c.max_connections, 7);
    assert_int_equal(c.workers, 4);
    assert_int_equal(c.on_limit, CONFIG_ON_LIMIT_TRUNCATE);
    assert_int_equal(c.log_level, LOGL_DEBUG);
    assert_int_equal(c.tls_min_version, 1); /* 1.3 */
    assert_int_equal(c.idle_tx_timeout_ms, 60000);
    assert_string_equal(c.metrics_listen, "127.0.0.1:9187");
    config_free(&c);
}

static void test_flags_bool(void **state)
{
    struct config c;
    char err[256];
    assert_int_equal(LOAD(&c, no_env, err, "--upstream=host=x", "--read-only", "--audit-redact"),
                     CONFIG_OK);
    assert_true(c.read_only);
    assert_true(c.audit_redact);
    assert_true(c.policy_cache);
    config_free(&c);
    assert_int_equal(LOAD(&c, no_env, err, "--upstream=host=x", "--read-only=off",
                          "--policy-cache=false", "--audit-redact=YES"),
                     CONFIG_OK);
    assert_false(c.read_only);
    assert_false(c.policy_cache);
    assert_true(c.audit_redact);
    config_free(&c);
    /* a bool flag does not swallow the next argument */
    assert_int_equal(LOAD(&c, no_env, err, "--read-only", "--upstream", "host=x"), CONFIG_OK);
    assert_true(c.read_only);
    assert_string_equal(c.upstream_dsn, "host=x");
    config_free(&c);
}

static void test_flags_lists(void **state)
{
    struct config c;
    char err[256];
    assert_int_equal(LOAD(&c, no_env, err, "--upstream=host=x", "--deny", "drop", "--deny=truncate",
                          "--allow", "select"),
                     CONFIG_OK);
    assert_int_equal(c.ndeny, 2);
    assert_string_equal(c.deny[0], "drop");
    assert_string_equal(c.deny[1], "truncate");
    assert_int_equal(c.nallow, 1);
    assert_string_equal(c.allow[0], "select");
    config_free(&c);
    assert_int_equal(c.ndeny, 0);
}

static void test_flags_too_many_rules(void **state)
{
    enum { N = CONFIG_MAX_RULES + 1 };
    char *argv[2 * N + 3];
    int argc = 0;
    argv[argc++] = "pgwire-proxy";
    argv[argc++] = "--upstream=host=x";
    for (int i = 0; i < N; i++) {
        argv[argc++] = "--deny";
        argv[argc++] = "drop";
    }
    argv[argc] = NULL;
    struct config c;
    char err[256];
    assert_int_equal(config_load(&c, argc, argv, no_env, NULL, err, sizeof(err)), CONFIG_ERROR);
    assert_err_line(err, "--deny", "64");
    /* exactly the maximum is fine */
    assert_int_equal(config_load(&c, argc - 2, argv, no_env, NULL, err, sizeof(err)), CONFIG_OK);
    assert_int_equal(c.ndeny, CONFIG_MAX_RULES);
    config_free(&c);
}

static const struct {
    const char *flag;
    const char *value;
    const char *form; /* part of the accepted form the error must state */
    bool is_bool;
} bad_values[] = {
    {"listen", "localhost", "HOST:PORT", false},
    {"listen", "127.0.0.1:70000", "HOST:PORT", false},
    {"max-connections", "0", "from 1 to 100000", false},
    {"max-connections", "lots", "from 1 to 100000", false},
    {"workers", "257", "from 0 to 256", false},
    {"workers", "-1", "from 0 to 256", false},
    {"cancel-rate-limit", "-1", "from 0 to 1000000", false},
    {"cancel-rate-limit", "fast", "from 0 to 1000000", false},
    {"query-timeout", "5x", "a duration such as 500ms", false},
    {"query-timeout", "-1", "a duration", false},
    {"query-timeout", "ms", "a duration", false},
    {"startup-timeout", "1d", "a duration", false},
    {"shutdown-timeout", "99999999999", "a duration", false},
    {"client-write-timeout", "2147484s", "a duration", false},
    {"idle-in-transaction-timeout", "soon", "a duration", false},
    {"max-rows", "10kB", "a whole number", false},
    {"max-rows", "-1", "a whole number", false},
    {"max-bytes", "10XB", "a size such as 64kB", false},
    {"max-bytes", "-5", "a size", false},
    {"max-message-size", "1TB", "a size", false},
    {"on-limit", "drop", "one of error, truncate", false},
    {"read-only", "maybe", "on/off", true},
    {"policy-cache", "2", "on/off", true},
    {"tls-mode", "prefer", "one of allow, require", false},
    {"tls-client-cert", "optional", "one of none, require", false},
    {"tls-min-version", "1.1", "one of 1.2, 1.3", false},
    {"log-level", "trace", "one of error, warn, info, debug", false},
    {"log-format", "xml", "one of text, json", false},
};

static void test_flags_invalid_values(void **state)
{
    for (size_t i = 0; i < sizeof(bad_values) / sizeof(bad_values[0]); i++) {
        char flag[64], joined[128], err[512];
        struct config c;
        snprintf(flag, sizeof(flag), "--%s", bad_values[i].flag);
        snprintf(joined, sizeof(joined), "--%s=%s", bad_values[i].flag, bad_values[i].value);

        char *separate[] = {"pgwire-proxy", "--upstream=host=x", flag, (char *)bad_values[i].value,
                            NULL};
        assert_int_equal(config_load(&c, 4, separate, no_env, NULL, err, sizeof(err)),
                         CONFIG_ERROR);
        if (bad_values[i].is_bool) {
            /* a bare bool flag means on; the word after it is not its value */
            assert_err_line(err, bad_values[i].value, "unexpected argument");
        } else {
            assert_err_line(err, flag, bad_values[i].form);
            assert_non_null(strstr(err, bad_values[i].value));
        }

        char *together[] = {"pgwire-proxy", joined, "--upstream=host=x", NULL};
        assert_int_equal(config_load(&c, 3, together, no_env, NULL, err, sizeof(err)),
                         CONFIG_ERROR);
        assert_err_line(err, flag, bad_values[i].form);
    }
}

static void test_flags_empty_and_missing_value(void **state)
{
    struct config c;
    char err[256];
    assert_int_equal(LOAD(&c, no_env, err, "--upstream=host=x", "--max-rows="), CONFIG_ERROR);
    assert_err_line(err, "--max-rows", "a whole number");
    assert_int_equal(LOAD(&c, no_env, err, "--upstream=host=x", "--query-timeout"), CONFIG_ERROR);
    assert_err_line(err, "--query-timeout", "a duration");
    assert_int_equal(LOAD(&c, no_env, err, "--upstream"), CONFIG_ERROR);
    assert_err_line(err, "--upstream", NULL);
}

static void test_flags_value_with_newline(void **state)
{
    struct config c;
    char err[256];
    assert_int_equal(LOAD(&c, no_env, err, "--upstream=host=x", "--max-rows", "1\n2"),
                     CONFIG_ERROR);
    assert_err_line(err, "--max-rows", "a whole number");
}

static void test_flags_unknown(void **state)
{
    struct config c;
    char err[256];
    assert_int_equal(LOAD(&c, no_env, err, "--upstream=host=x", "--max-rowz", "5"), CONFIG_ERROR);
    assert_err_line(err, "--max-rowz", "unknown option");
    assert_int_equal(LOAD(&c, no_env, err, "--upstream=host=x", "--bogus=1"), CONFIG_ERROR);
    assert_err_line(err, "'--bogus'", "unknown option");
    assert_int_equal(LOAD(&c, no_env, err, "--upstream=host=x", "stray"), CONFIG_ERROR);
    assert_err_line(err, "stray", "unexpected argument");
    assert_int_equal(LOAD(&c, no_env, err, "-x"), CONFIG_ERROR);
    assert_err_line(err, "-x", NULL);
}

static void test_missing_upstream(void **state)
{
    struct config c;
    char err[256];
    char *argv[] = {"pgwire-proxy", NULL};
    assert_int_equal(config_load(&c, 1, argv, no_env, NULL, err, sizeof(err)), CONFIG_ERROR);
    assert_err_line(err, "--upstream", "PGWIRE_PROXY_UPSTREAM");
    assert_int_equal(LOAD(&c, no_env, err, "--upstream="), CONFIG_ERROR);
    assert_err_line(err, "--upstream", NULL);
    assert_int_equal(LOAD(&c, no_env, err, "--max-rows", "5"), CONFIG_ERROR);
    assert_err_line(err, "--upstream", NULL);
}

static void test_tls_pairs(void **state)
{
    struct config c;
    char err[256];
    assert_int_equal(LOAD(&c, no_env, err, "--upstream=host=x", "--tls-cert", "c.pem"),
                     CONFIG_ERROR);
    assert_err_line(err, "--tls-key", NULL);
    assert_int_equal(LOAD(&c, no_env, err, "--upstream=host=x", "--tls-key", "k.pem"),
                     CONFIG_ERROR);
    assert_err_line(err, "--tls-cert", NULL);
    assert_int_equal(LOAD(&c, no_env, err, "--upstream=host=x", "--tls-mode", "require"),
                     CONFIG_ERROR);
    assert_err_line(err, "--tls-mode", "--tls-cert");
    assert_int_equal(LOAD(&c, no_env, err, "--upstream=host=x", "--tls-cert=c", "--tls-key=k",
                          "--tls-client-cert", "require"),
                     CONFIG_ERROR);
    assert_err_line(err, "--tls-client-cert", "--tls-ca");
    assert_int_equal(LOAD(&c, no_env, err, "--upstream=host=x", "--tls-cert=c", "--tls-key=k",
                          "--tls-mode=require", "--tls-client-cert=require", "--tls-ca=ca"),
                     CONFIG_OK);
    assert_int_equal(c.tls_mode, CONFIG_TLS_REQUIRE);
    assert_true(c.tls_client_cert_required);
    assert_string_equal(c.tls_cert, "c");
    assert_string_equal(c.tls_key, "k");
    assert_string_equal(c.tls_ca, "ca");
    config_free(&c);
    assert_int_equal(LOAD(&c, no_env, err, "--upstream=host=x", "--metrics-listen", "9187"),
                     CONFIG_ERROR);
    assert_err_line(err, "--metrics-listen", "HOST:PORT");
}

/* --- --help / --version --- */

static char *capture(enum config_result *r, int argc, char **argv)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    assert_non_null(out);
    struct config c;
    char err[256];
    *r = config_load(&c, argc, argv, no_env, out, err, sizeof(err));
    fclose(out);
    return buf;
}

static void test_help_version(void **state)
{
    enum config_result r;
    char *text = capture(&r, ARGC("--help"), ARGV("--help"));
    assert_int_equal(r, CONFIG_EXIT_OK);
    assert_non_null(strstr(text, "Usage: pgwire-proxy"));
    assert_non_null(strstr(text, "--max-rows"));
    assert_non_null(strstr(text, "--upstream DSN"));
    free(text);

    text = capture(&r, ARGC("--version"), ARGV("--version"));
    assert_int_equal(r, CONFIG_EXIT_OK);
    assert_string_equal(text, "pgwire-proxy " PGWP_VERSION "\n");
    free(text);

    /* help wins over a missing --upstream and over values not yet checked */
    text = capture(&r, ARGC("--max-rows", "bad", "-h"), ARGV("--max-rows", "bad", "-h"));
    assert_int_equal(r, CONFIG_EXIT_OK);
    assert_non_null(strstr(text, "Usage: pgwire-proxy"));
    free(text);

    text = capture(&r, ARGC("--listen", "nope", "-V"), ARGV("--listen", "nope", "-V"));
    assert_int_equal(r, CONFIG_EXIT_OK);
    assert_string_equal(text, "pgwire-proxy " PGWP_VERSION "\n");
    free(text);

    /* an unknown flag before --help is still an error, and nothing is printed */
    text = capture(&r, ARGC("--bogus", "--help"), ARGV("--bogus", "--help"));
    assert_int_equal(r, CONFIG_ERROR);
    assert_string_equal(text, "");
    free(text);
}

/* --- environment --- */

static void test_env(void **state)
{
    struct config c;
    char err[256];
    char *env[] = {"HOME=/root",
                   "PGWIRE_PROXY_UPSTREAM=host=envdb",
                   "PGWIRE_PROXY_MAX_ROWS=42",
                   "PGWIRE_PROXY_READ_ONLY=true",
                   "PGWIRE_PROXY_DENY=drop, truncate ,",
                   "PGWIRE_PROXY_NOT_AN_OPTION=1",
                   "PGWIRE_PROXY_NOEQUALS",
                   NULL};
    char *argv[] = {"pgwire-proxy", NULL};
    assert_int_equal(config_load(&c, 1, argv, env, NULL, err, sizeof(err)), CONFIG_OK);
    assert_string_equal(c.upstream_dsn, "host=envdb");
    assert_int_equal(c.max_rows, 42);
    assert_true(c.read_only);
    assert_int_equal(c.ndeny, 2);
    assert_string_equal(c.deny[0], "drop");
    assert_string_equal(c.deny[1], "truncate");
    config_free(&c);
}

static void test_env_invalid(void **state)
{
    struct config c;
    char err[256];
    char *env[] = {"PGWIRE_PROXY_UPSTREAM=host=x", "PGWIRE_PROXY_MAX_ROWS=lots", NULL};
    char *argv[] = {"pgwire-proxy", NULL};
    assert_int_equal(config_load(&c, 1, argv, env, NULL, err, sizeof(err)), CONFIG_ERROR);
    assert_err_line(err, "PGWIRE_PROXY_MAX_ROWS", "a whole number");
    assert_non_null(strstr(err, "lots"));
}

/* A caller-supplied envp is the whole environment: the process environment is not read. */
static void test_env_is_only_envp(void **state)
{
    struct config c;
    char err[256];
    setenv("PGWIRE_PROXY_CONFIG", "/nonexistent/pgwire-proxy.ini", 1);
    setenv("PGWIRE_PROXY_MAX_ROWS", "77", 1);
    enum config_result r = LOAD(&c, no_env, err, "--upstream=host=x");
    unsetenv("PGWIRE_PROXY_CONFIG");
    unsetenv("PGWIRE_PROXY_MAX_ROWS");
    assert_int_equal(r, CONFIG_OK);
    assert_int_equal(c.max_rows, 10000);
    assert_null(c.config_file);
    config_free(&c);
}

/* --- INI file --- */

static const char ini_text[] = "; comment\n"
                               "# another\n"
                               "[pgwire-proxy]\n"
                               "upstream = host=filedb dbname=app\n"
                               "max_rows = 7\n"
                               "max-bytes = 1MB\n"
                               "query_timeout = 5m\n"
                               "deny = drop, truncate\n"
                               "read-only = yes\n"
                               "listen = 0.0.0.0:6000\n";

static void test_file(void **state)
{
    char *path = write_temp(ini_text);
    struct config c;
    char err[512];
    assert_int_equal(LOAD(&c, no_env, err, "--config", path), CONFIG_OK);
    assert_string_equal(c.upstream_dsn, "host=filedb dbname=app");
    assert_int_equal(c.max_rows, 7);
    assert_int_equal(c.max_bytes, 1000000);
    assert_int_equal(c.query_timeout_ms, 300000);
    assert_int_equal(c.ndeny, 2);
    assert_string_equal(c.deny[0], "drop");
    assert_string_equal(c.deny[1], "truncate");
    assert_true(c.read_only);
    assert_string_equal(c.listen_host, "0.0.0.0");
    assert_int_equal(c.listen_port, 6000);
    assert_string_equal(c.config_file, path);
    config_free(&c);

    /* the file can also come from the environment */
    char *envline = NULL;
    assert_true(asprintf(&envline, "PGWIRE_PROXY_CONFIG=%s", path) > 0);
    char *env[] = {envline, NULL};
    char *argv[] = {"pgwire-proxy", NULL};
    assert_int_equal(config_load(&c, 1, argv, env, NULL, err, sizeof(err)), CONFIG_OK);
    assert_int_equal(c.max_rows, 7);
    config_free(&c);
    free(envline);
    drop_temp(path);
}

static void test_file_without_section(void **state)
{
    char *path = write_temp("upstream=host=x\nmax_connections=3\n");
    struct config c;
    char err[512];
    assert_int_equal(LOAD(&c, no_env, err, "--config", path), CONFIG_OK);
    assert_string_equal(c.upstream_dsn, "host=x");
    assert_int_equal(c.max_connections, 3);
    config_free(&c);
    drop_temp(path);
}

static void test_file_errors(void **state)
{
    static const struct {
        const char *text;
        const char *line;
        const char *what;
    } cases[] = {
        {"upstream = host=x\n\nbogus_key = 1\n", "line 3", "unknown config key 'bogus_key'"},
        {"[pgwire-proxy]\nconfig = other.ini\n", "line 2", "unknown config key 'config'"},
        {"max_rows = lots\n", "line 1", "a whole number"},
        {"upstream = host=x\nthis line has no equals sign\n", "line 2", "syntax error"},
        /* the first error is reported, with its own line */
        {"upstream = host=x\nmax_rows = bad\nbogus = 1\n", "line 2", "max-rows"},
        {"upstream = host=x\nno equals\nbogus = 1\n", "line 2", "syntax error"},
        {"upstream = host=x\nbogus = 1\nno equals\n", "line 2", "bogus"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *path = write_temp(cases[i].text);
        struct config c;
        char err[512];
        assert_int_equal(LOAD(&c, no_env, err, "--config", path, "--upstream=host=y"),
                         CONFIG_ERROR);
        assert_err_line(err, path, cases[i].line);
        if (cases[i].what)
            assert_err_line(err, cases[i].what, NULL);
        drop_temp(path);
    }
    struct config c;
    char err[512];
    assert_int_equal(LOAD(&c, no_env, err, "--upstream=host=x", "--config", "/nonexistent/x.ini"),
                     CONFIG_ERROR);
    assert_err_line(err, "/nonexistent/x.ini", "cannot read");
}

static void test_user_sections(void **state)
{
    char *path = write_temp("upstream = host=x\n"
                            "max-rows = 100\n"
                            "deny = drop, truncate\n"
                            "[user:alice]\n"
                            "read-only = on\n"
                            "max-rows = 5\n"
                            "deny = delete\n"
                            "deny = function:pg_sleep\n"
                            "max-connections = 2\n"
                            "upstream = host=x user=ro\n"
                            "[user:bob]\n"
                            "max_rows = 0\n"
                            "[pgwire-proxy]\n"
                            "max-connections = 50\n");
    struct config c;
    char err[512];
    assert_int_equal(LOAD(&c, no_env, err, "--config", path, "--max-bytes", "1MB"), CONFIG_OK);
    assert_int_equal(c.nusers, 2);
    assert_int_equal(c.max_connections, 50);
    const struct config_user *a = config_find_user(&c, "alice"), *b = config_find_user(&c, "bob");
    assert_non_null(a);
    assert_non_null(b);
    assert_null(config_find_user(&c, "carol"));
    assert_null(config_find_user(&c, "Alice"));
    assert_true(a->cfg->read_only);
    assert_int_equal(a->cfg->max_rows, 5);
    assert_int_equal(a->max_connections, 2);
    assert_int_equal(a->cfg->max_connections, 50); /* the global ceiling stays global */
    assert_string_equal(a->cfg->upstream_dsn, "host=x user=ro");
    /* a list set in a profile replaces the top level's */
    assert_int_equal(a->cfg->ndeny, 2);
    assert_string_equal(a->cfg->deny[0], "delete");
    assert_string_equal(a->cfg->deny[1], "function:pg_sleep");
    /* unset keys inherit the top level, flags included */
    assert_int_equal(a->cfg->max_bytes, 1000000);
    assert_false(b->cfg->read_only);
    assert_int_equal(b->cfg->max_rows, 0);
    assert_int_equal(b->max_connections, 0);
    assert_int_equal(b->cfg->ndeny, 2);
    assert_string_equal(b->cfg->upstream_dsn, "host=x");
    assert_int_equal(b->cfg->nusers, 0);
    config_free(&c);
    drop_temp(path);
}

static void test_user_section_errors(void **state)
{
    static const struct {
        const char *text;
        const char *line;
        const char *what;
    } cases[] = {
        {"[usr:alice]\nread-only = on\n", "line 1", "unknown section [usr:alice]"},
        {"max-rows = 1\n[alice]\n", "line 2", "unknown section [alice]"},
        {"[user:]\n", "line 1", "section [user:]: a user name is 1 to 63 bytes"},
        {"[user:alice]\nlisten = 0.0.0.0:1\n", "line 2",
         "section [user:alice]: key 'listen' cannot be set per user (per-user keys: read-only"},
        {"[user:alice]\nbogus = 1\n", "line 2", "section [user:alice]: unknown config key 'bogus'"},
        {"[user:alice]\n\nmax-rows = lots\n", "line 3",
         "section [user:alice]: invalid value 'lots' for config key 'max-rows'"},
        {"[user:alice]\nmax-connections = 0\n", "line 2",
         "section [user:alice]: invalid value '0' for key 'max-connections'"},
        {"[user:alice]\ndeny = dorp\n", "line 2",
         "section [user:alice]: unknown statement kind \"dorp\" in deny"},
        {"[user:alice]\nupstream = host='x\n", "section [user:alice]",
         "invalid value for upstream"},
        {"[user:alice]\nauth-type = trust\n", "line 2", "cannot be set per user"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *path = write_temp(cases[i].text);
        struct config c;
        char err[512];
        assert_int_equal(LOAD(&c, no_env, err, "--config", path, "--upstream=host=y"),
                         CONFIG_ERROR);
        assert_err_line(err, path, cases[i].line);
        assert_err_line(err, cases[i].what, NULL);
        drop_temp(path);
    }
}

static void test_auth_options(void **state)
{
    struct config c;
    char err[512];
    assert_int_equal(LOAD(&c, no_env, err, "--upstream=host=x"), CONFIG_OK);
    assert_int_equal(c.auth_type, CONFIG_AUTH_TRUST);
    assert_int_equal(c.auth_failure_delay_ms, 1000);
    config_free(&c);
    assert_int_equal(LOAD(&c, no_env, err, "--upstream=host=x", "--auth-type", "scram-sha-256",
                          "--auth-file", "/x/users.txt", "--auth-failure-delay", "250ms"),
                     CONFIG_OK);
    assert_int_equal(c.auth_type, CONFIG_AUTH_SCRAM);
    assert_string_equal(c.auth_file, "/x/users.txt");
    assert_int_equal(c.auth_failure_delay_ms, 250);
    config_free(&c);
    assert_int_equal(LOAD(&c, no_env, err, "--upstream=host=x", "--auth-type", "scram-sha-256"),
                     CONFIG_ERROR);
    assert_err_line(err, "--auth-type scram-sha-256 needs --auth-file", NULL);
    assert_int_equal(LOAD(&c, no_env, err, "--upstream=host=x", "--auth-type", "hba"),
                     CONFIG_ERROR);
    assert_err_line(err, "--auth-type hba needs --auth-hba-file", NULL);
    assert_int_equal(LOAD(&c, no_env, err, "--upstream=host=x", "--auth-type", "cert"),
                     CONFIG_ERROR);
    assert_err_line(err, "root certificate store", NULL);
    assert_int_equal(LOAD(&c, no_env, err, "--upstream=host=x", "--auth-hba-file", "/x"),
                     CONFIG_ERROR);
    assert_err_line(err, "--auth-hba-file needs --auth-type hba", NULL);
    assert_int_equal(LOAD(&c, no_env, err, "--upstream=host=x", "--auth-type", "md5"),
                     CONFIG_ERROR);
    assert_err_line(err, "one of trust, scram-sha-256, cert, hba", NULL);
}

/* inih splits lines longer than its buffer; a long DSN must be refused, not misread */
static void test_file_long_line(void **state)
{
    char text[1024];
    char dsn[600];
    memset(dsn, 'a', sizeof(dsn) - 1);
    dsn[sizeof(dsn) - 1] = 0;
    memcpy(dsn + 400, " password=x", 11);
    snprintf(text, sizeof(text), "max_rows = 1\nupstream = host=%s\n", dsn);
    char *path = write_temp(text);
    struct config c;
    char err[512];
    assert_int_equal(LOAD(&c, no_env, err, "--config", path), CONFIG_ERROR);
    assert_err_line(err, path, "line 2");
    assert_null(strstr(err, "password"));
    drop_temp(path);

    /* a long comment is skipped whole */
    char comment[700];
    memset(comment, 'x', 500);
    memcpy(comment, "# ", 2);
    memcpy(comment + 300, " = y", 4); /* its tail must not be read as a key */
    snprintf(comment + 500, 200, "\nupstream = host=h\nmax_rows = 3\n");
    path = write_temp(comment);
    assert_int_equal(LOAD(&c, no_env, err, "--config", path), CONFIG_OK);
    assert_int_equal(c.max_rows, 3);
    config_free(&c);
    drop_temp(path);

    /* a line that fills inih's buffer exactly (199 bytes + newline) is fine */
    char line[256];
    int n = snprintf(line, sizeof(line), "upstream = host=");
    memset(line + n, 'h', (size_t)(199 - n));
    line[199] = '\n';
    line[200] = 0;
    path = write_temp(line);
    assert_int_equal(LOAD(&c, no_env, err, "--config", path), CONFIG_OK);
    assert_int_equal(strlen(c.upstream_dsn), 199 - n + 5);
    config_free(&c);
    drop_temp(path);
}

/* --- precedence --- */

static void test_precedence(void **state)
{
    char *path = write_temp("upstream = host=file\nmax_rows = 1\nmax_bytes = 1kB\n"
                            "query_timeout = 1s\ndeny = drop, truncate\nallow = select\n");
    struct config c;
    char err[512];
    char *env[] = {"PGWIRE_PROXY_MAX_ROWS=2", "PGWIRE_PROXY_MAX_BYTES=2kB",
                   "PGWIRE_PROXY_DENY=vacuum,set", NULL};

    /* file only */
    assert_int_equal(LOAD(&c, no_env, err, "--config", path), CONFIG_OK);
    assert_string_equal(c.upstream_dsn, "host=file");
    assert_int_equal(c.max_rows, 1);
    assert_int_equal(c.ndeny, 2);
    config_free(&c);

    /* env over file; the env list replaces the file list */
    assert_int_equal(LOAD(&c, env, err, "--config", path), CONFIG_OK);
    assert_int_equal(c.max_rows, 2);
    assert_int_equal(c.max_bytes, 2000);
    assert_int_equal(c.query_timeout_ms, 1000); /* file value not overridden */
    assert_int_equal(c.max_connections, 100);   /* default, set nowhere */
    assert_int_equal(c.ndeny, 2);
    assert_string_equal(c.deny[0], "vacuum");
    assert_string_equal(c.deny[1], "set");
    assert_int_equal(c.nallow, 1);
    config_free(&c);

    /* flags over env over file; repeated flags replace the env list */
    assert_int_equal(LOAD(&c, env, err, "--max-rows=3", "--config", path, "--deny", "copy",
                          "--deny", "alter_system", "--upstream", "host=flag"),
                     CONFIG_OK);
    assert_string_equal(c.upstream_dsn, "host=flag");
    assert_int_equal(c.max_rows, 3);
    assert_int_equal(c.max_bytes, 2000);
    assert_int_equal(c.ndeny, 2);
    assert_string_equal(c.deny[0], "copy");
    assert_string_equal(c.deny[1], "alter_system");
    assert_int_equal(c.nallow, 1);
    assert_string_equal(c.allow[0], "select");
    config_free(&c);

    /* a later flag overrides an earlier one */
    assert_int_equal(LOAD(&c, env, err, "--config", path, "--max-rows=3", "--max-rows=4"),
                     CONFIG_OK);
    assert_int_equal(c.max_rows, 4);
    config_free(&c);
    drop_temp(path);
}

/* --- reload, redaction --- */

/* server.c reloads into a fresh, uninitialized struct and keeps the running one on error */
static void test_reload(void **state)
{
    char *path = write_temp("upstream = host=one\nmax_rows = 1\n");
    char *argv[] = {"pgwire-proxy", "--config", path, "--max-bytes=5kB", NULL};
    struct config running, next;
    char err[512];
    assert_int_equal(config_load(&running, 4, argv, no_env, NULL, err, sizeof(err)), CONFIG_OK);
    assert_int_equal(running.max_rows, 1);

    rewrite(path, "upstream = host=two\nmax_rows = 2\nmax_bytes = 1kB\n");
    memset(&next, 0xa5, sizeof(next)); /* garbage, like a stack local: must not be freed */
    assert_int_equal(config_reload(&next, 4, argv, no_env, err, sizeof(err)), CONFIG_OK);
    assert_string_equal(next.upstream_dsn, "host=two");
    assert_int_equal(next.max_rows, 2);
    assert_int_equal(next.max_bytes, 5000); /* the flag still wins */
    assert_string_equal(running.upstream_dsn, "host=one");
    config_free(&running);
    running = next;

    /* a broken file: an error, nothing to free, and the running config is untouched */
    rewrite(path, "upstream = host=three\nmax_rows = broken\n");
    memset(&next, 0xa5, sizeof(next));
    assert_int_equal(config_reload(&next, 4, argv, no_env, err, sizeof(err)), CONFIG_ERROR);
    assert_err_line(err, path, "line 2");
    assert_null(next.upstream_dsn);
    assert_string_equal(running.upstream_dsn, "host=two");
    assert_int_equal(running.max_rows, 2);
    config_free(&running);
    drop_temp(path);
}

static void test_redact_dsn(void **state)
{
    static const struct {
        const char *in;
        const char *out;
        const char *secret; /* must not survive */
    } cases[] = {
        /* libpq's own reading, in its keyword order: however the password was written */
        {"host=h password=x user=u", "user=u password=******** host=h", "=x"},
        {"host=h password = 'a b\\'c' user=u", "user=u password=******** host=h", "b\\'c"},
        {"password=secret", "password=********", "secret"},
        {"host=h\tpassword=tabbed\tuser=u", "user=u password=******** host=h", "tabbed"},
        {"host=h password=a\\ b user=u", "user=u password=******** host=h", "b user"},
        {"password=a&b user=u", "user=u password=********", "&b"},
        {"host=h sslpassword=keypass", "host=h sslpassword=********", "keypass"},
        {"postgresql://u:secret@h/db", "user=u password=******** dbname=db host=h", "secret"},
        {"postgres://u:secret@h:5432", "user=u password=******** host=h port=5432", "secret"},
        {"postgresql://u@h/db?password=secret", "user=u password=******** dbname=db host=h",
         "secret"},
        {"postgresql://u@h/db?sslmode=require&password=secret&application_name=a",
         "user=u password=******** dbname=db host=h application_name=a sslmode=require", "secret"},
        {"postgresql://u:p1@h/db?password=p2", "user=u password=******** dbname=db host=h", "p2"},
        /* a percent-encoded keyword is still the password to libpq */
        {"postgresql://u@h/db?pass%77ord=secret", "user=u password=******** dbname=db host=h",
         "secret"},
        {"postgresql://u:s%65cret@h/db", "user=u password=******** dbname=db host=h", "s%65"},
        {"host=h user=u dbname=d", "user=u dbname=d host=h", NULL},
        {"host=h application_name='a b'", "host=h application_name='a b'", NULL},
        {"postgresql://u@h:5432/db", "user=u dbname=db host=h port=5432", NULL},
        {"postgresql:///db?host=/run/postgresql", "dbname=db host=/run/postgresql", NULL},
        /* what libpq cannot parse is not shown at all: its tokens may be the password */
        {"password=my secret", "(invalid DSN, not shown)", "secret"},
        {"password='unterminated secret", "(invalid DSN, not shown)", "secret"},
        {"postgresql://u:se%zzcret@h/db", "(invalid DSN, not shown)", "cret"},
        {"postgresql://u:se/cret@h/db", "(invalid DSN, not shown)", "cret"},
        {"postgresql://u:se@cret@h/db", "(invalid DSN, not shown)", "cret"},
        {"postgresql://u@h/db?password=se&cret", "(invalid DSN, not shown)", "cret"},
        {"", "", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *r = config_redact_dsn(cases[i].in);
        assert_non_null(r);
        if (strcmp(r, cases[i].out) != 0)
            fail_msg("redact(%s) = %s, want %s", cases[i].in, r, cases[i].out);
        if (cases[i].secret)
            assert_null(strstr(r, cases[i].secret));
        free(r);
    }
    char *r = config_redact_dsn(NULL);
    assert_string_equal(r, "");
    free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unknown_rule_is_a_config_error),
        cmocka_unit_test(test_policy_options),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_user_sections),
        cmocka_unit_test(test_user_section_errors),
        cmocka_unit_test(test_auth_options),
        cmocka_unit_test(test_load_minimal_keeps_defaults),
        cmocka_unit_test(test_duration_valid),
        cmocka_unit_test(test_duration_invalid),
        cmocka_unit_test(test_size_valid),
        cmocka_unit_test(test_size_invalid),
        cmocka_unit_test(test_hostport_valid),
        cmocka_unit_test(test_hostport_invalid),
        cmocka_unit_test(test_flags_both_forms),
        cmocka_unit_test(test_flags_bool),
        cmocka_unit_test(test_flags_lists),
        cmocka_unit_test(test_flags_too_many_rules),
        cmocka_unit_test(test_flags_invalid_values),
        cmocka_unit_test(test_flags_empty_and_missing_value),
        cmocka_unit_test(test_flags_value_with_newline),
        cmocka_unit_test(test_flags_unknown),
        cmocka_unit_test(test_missing_upstream),
        cmocka_unit_test(test_tls_pairs),
        cmocka_unit_test(test_help_version),
        cmocka_unit_test(test_env),
        cmocka_unit_test(test_env_invalid),
        cmocka_unit_test(test_env_is_only_envp),
        cmocka_unit_test(test_file),
        cmocka_unit_test(test_file_without_section),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_file_long_line),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_reload),
        cmocka_unit_test(test_redact_dsn),
        cmocka_unit_test(test_startup_options),
        cmocka_unit_test(test_upstream_is_validated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
