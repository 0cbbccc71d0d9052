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

#include "config_test.h"

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
    assert_int_equal(
        LOAD(&c, no_env, err, "--upstream=host=x", "--metrics-listen", "localhost:9187"),
        CONFIG_ERROR);
    assert_err_line(err, "--metrics-listen", "numeric");
    assert_int_equal(LOAD(&c, no_env, err, "--upstream=host=x", "--metrics-listen", "[::1]:9187"),
                     CONFIG_OK);
    config_free(&c);
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
        cmocka_unit_test(test_load_minimal_keeps_defaults),
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
        cmocka_unit_test(test_redact_dsn),
        cmocka_unit_test(test_startup_options),
        cmocka_unit_test(test_upstream_is_validated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
