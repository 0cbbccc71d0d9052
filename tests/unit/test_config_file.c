/* Unit tests for the config sources: environment, INI file, [user:NAME] sections, the
 * precedence of flags over env over file, and reload. */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_env),
        cmocka_unit_test(test_env_invalid),
        cmocka_unit_test(test_env_is_only_envp),
        cmocka_unit_test(test_file),
        cmocka_unit_test(test_file_without_section),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_user_sections),
        cmocka_unit_test(test_user_section_errors),
        cmocka_unit_test(test_auth_options),
        cmocka_unit_test(test_file_long_line),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_reload),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
