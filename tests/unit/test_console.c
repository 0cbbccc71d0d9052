/* The console at its lowest layers: the command parser, the result sets as protocol bytes (read
 * back by a small decoder), SHOW CONFIG's values, and the merge of the workers' answers through
 * a hub whose "workers" answer at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "admin.h"
#include "config.h"
#include "console.h"
#include "console_rows.h"
#include "metrics.h"
#include "session.h"
#include "stmt_stats.h"
#include "wire.h"

#pragma GCC diagnostic ignored "-Wunused-parameter"

/* ---------- the parser ---------- */

static enum console_cmd_kind kind(const char *text)
{
    struct console_cmd c;
    console_cmd_parse(text, strlen(text), &c);
    return c.kind;
}

static void test_parse_commands(void **state)
{
    assert_int_equal(kind("SHOW SESSIONS"), CONSOLE_SHOW_SESSIONS);
    assert_int_equal(kind("show sessions;"), CONSOLE_SHOW_SESSIONS);
    assert_int_equal(kind("  Show\t\n Statements ;  "), CONSOLE_SHOW_STATEMENTS);
    assert_int_equal(kind("show stats"), CONSOLE_SHOW_STATS);
    assert_int_equal(kind("SHOW CONFIG"), CONSOLE_SHOW_CONFIG);
    assert_int_equal(kind("show policy"), CONSOLE_SHOW_POLICY);
    assert_int_equal(kind("show version;"), CONSOLE_SHOW_VERSION);
    assert_int_equal(kind("reload"), CONSOLE_RELOAD);
    assert_int_equal(kind("SHUTDOWN;"), CONSOLE_SHUTDOWN);
    assert_int_equal(kind("begin"), CONSOLE_BEGIN);
    assert_int_equal(kind("COMMIT"), CONSOLE_COMMIT);
    assert_int_equal(kind("rollback"), CONSOLE_ROLLBACK);
    assert_int_equal(kind(""), CONSOLE_EMPTY);
    assert_int_equal(kind("  ;  "), CONSOLE_EMPTY);
    struct console_cmd c;
    console_cmd_parse("cancel 17", 9, &c);
    assert_int_equal(c.kind, CONSOLE_CANCEL);
    assert_int_equal(c.id, 17);
    console_cmd_parse("KILL  18446744073709551615 ;", 28, &c);
    assert_int_equal(c.kind, CONSOLE_KILL);
    assert_int_equal(c.id, UINT64_MAX);
    /* the length bounds the text: what follows is not read */
    console_cmd_parse("show stats; drop table t", 10, &c);
    assert_int_equal(c.kind, CONSOLE_SHOW_STATS);
    console_cmd_parse("reload\0shutdown", 15, &c);
    assert_int_equal(c.kind, CONSOLE_RELOAD);
}

static void expect_unknown(const char *text, const char *message)
{
    struct console_cmd c;
    console_cmd_parse(text, strlen(text), &c);
    assert_int_equal(c.kind, CONSOLE_UNKNOWN);
    if (!strstr(c.message, message))
        fail_msg("[%s]: message [%s] lacks [%s]", text, c.message, message);
}

static void test_parse_errors(void **state)
{
    expect_unknown("select version()", "unrecognized console command \"select\"");
    expect_unknown("show", "SHOW takes SESSIONS, STATEMENTS");
    expect_unknown("show tables", "SHOW takes SESSIONS");
    expect_unknown("show sessions extra", "SHOW takes no arguments");
    expect_unknown("show sessions; show stats", "one command at a time");
    expect_unknown("reload;;", "one command at a time");
    expect_unknown("cancel", "CANCEL takes one session id");
    expect_unknown("cancel x", "CANCEL takes one session id");
    expect_unknown("cancel 0", "CANCEL takes one session id");
    expect_unknown("cancel -3", "CANCEL takes one session id");
    expect_unknown("kill 1 2", "KILL takes one session id");
    expect_unknown("kill 99999999999999999999", "KILL takes one session id");
    expect_unknown("reload now", "RELOAD takes no arguments");
    expect_unknown("sessions", "\"sessions\"");
    expect_unknown(";;", "one command at a time");
    char long_text[400];
    memset(long_text, 'x', sizeof(long_text) - 1);
    long_text[sizeof(long_text) - 1] = 0;
    expect_unknown(long_text, "unrecognized console command");
    assert_non_null(strstr(console_cmd_hint, "SHOW SESSIONS"));
    assert_non_null(strstr(console_cmd_hint, "KILL <id>"));
    assert_string_equal(console_cmd_tag(CONSOLE_SHOW_STATS), "SHOW");
    assert_string_equal(console_cmd_tag(CONSOLE_CANCEL), "CANCEL");
}

/* ---------- reading the bytes back ---------- */

struct result {
    char cols[16][32];
    int ncols;
    char *vals[64][16]; /* NULL = SQL NULL */
    int nrows;
    char tag[64];
    char types[64]; /* message types in order */
    char code[6], message[256], hint[256];
};

static void result_free(struct result *r)
{
    for (int i = 0; i < r->nrows; i++)
        for (int k = 0; k < r->ncols; k++)
            free(r->vals[i][k]);
}

static void decode_error(const uint8_t *p, size_t n, struct result *r)
{
    for (size_t i = 0; i < n && p[i];) {
        char f = (char)p[i++];
        const char *v = (const char *)p + i;
        if (f == 'C')
            snprintf(r->code, sizeof(r->code), "%s", v);
        if (f == 'M')
            snprintf(r->message, sizeof(r->message), "%s", v);
        if (f == 'H')
            snprintf(r->hint, sizeof(r->hint), "%s", v);
        i += strlen(v) + 1;
    }
}

static void decode_row(const uint8_t *p, struct result *r)
{
    int n = wire_get_u16(p);
    assert_int_equal(n, r->ncols);
    const uint8_t *q = p + 2;
    for (int k = 0; k < n; k++) {
        uint32_t len = wire_get_u32(q);
        q += 4;
        if (len == 0xFFFFFFFFu) {
            r->vals[r->nrows][k] = NULL;
            continue;
        }
        r->vals[r->nrows][k] = strndup((const char *)q, len);
        q += len;
    }
    r->nrows++;
}

static void decode_columns(const uint8_t *p, struct result *r)
{
    r->ncols = wire_get_u16(p);
    const uint8_t *q = p + 2;
    for (int k = 0; k < r->ncols; k++) {
        snprintf(r->cols[k], sizeof(r->cols[k]), "%s", (const char *)q);
        q += strlen((const char *)q) + 1;
        assert_int_equal(wire_get_u32(q + 6), 25); /* text */
        assert_int_equal(wire_get_u16(q + 16), 0); /* text format */
        q += 18;
    }
}

static void decode(const struct console_out *o, struct result *r)
{
    memset(r, 0, sizeof(*r));
    assert_false(o->failed);
    size_t nt = 0;
    for (size_t at = 0; at < o->len;) {
        char type = (char)o->buf[at];
        uint32_t len = wire_get_u32(o->buf + at + 1);
        const uint8_t *body = o->buf + at + 5;
        assert_true(at + 1 + len <= o->len);
        r->types[nt++] = type;
        if (type == 'T')
            decode_columns(body, r);
        else if (type == 'D' && r->nrows < 64)
            decode_row(body, r);
        else if (type == 'C')
            snprintf(r->tag, sizeof(r->tag), "%s", (const char *)body);
        else if (type == 'E' || type == 'N')
            decode_error(body, len - 4, r);
        at += 1 + len;
    }
}

static int col(const struct result *r, const char *name)
{
    for (int k = 0; k < r->ncols; k++)
        if (strcmp(r->cols[k], name) == 0)
            return k;
    fail_msg("no column %s", name);
    return -1;
}

/* ---------- the result sets ---------- */

static void test_sessions_rows(void **state)
{
    struct session_snapshot s[2] = {
        {.id = 7,
         .user = "alice",
         .client = "127.0.0.1:5000",
         .application = "psql",
         .database = "app",
         .auth = "scram-sha-256",
         .state = "active",
         .upstream_pid = 4242,
         .tx = 'T',
         .statement = "select pg_sleep($1)",
         .running_ms = 1500,
         .rows = 10,
         .bytes = 300,
         .statements = 4},
        {.id = 8, .client = "[local]", .state = "startup", .running_ms = -1}};
    struct console_out o = {0};
    console_rows_sessions(&o, s, 2);
    struct result r;
    decode(&o, &r);
    static const char *const want[] = {"id",          "user",      "auth",        "client",
                                       "application", "database",  "state",       "upstream_pid",
                                       "transaction", "statement", "running_for", "rows",
                                       "bytes",       "statements"};
    assert_int_equal(r.ncols, 14);
    for (int k = 0; k < 14; k++)
        assert_string_equal(r.cols[k], want[k]);
    assert_int_equal(r.nrows, 2);
    assert_string_equal(r.tag, "SHOW 2");
    assert_string_equal(r.types, "TDDC");
    const char *row0[] = {
        "7",    "alice", "scram-sha-256",       "127.0.0.1:5000", "psql", "app", "active",
        "4242", "T",     "select pg_sleep($1)", "00:00:01.500",   "10",   "300", "4"};
    for (int k = 0; k < 14; k++)
        assert_string_equal(r.vals[0][k], row0[k]);
    /* what a session in startup does not have yet is NULL, its counters 0 */
    assert_null(r.vals[1][col(&r, "user")]);
    assert_null(r.vals[1][col(&r, "auth")]);
    assert_null(r.vals[1][col(&r, "upstream_pid")]);
    assert_null(r.vals[1][col(&r, "transaction")]);
    assert_null(r.vals[1][col(&r, "statement")]);
    assert_null(r.vals[1][col(&r, "running_for")]);
    assert_string_equal(r.vals[1][col(&r, "statements")], "0");
    result_free(&r);
    console_out_free(&o);
}

static void test_statements_rows(void **state)
{
    struct stmt_stats_row rows[2] = {{.fp = 0x50fde20626009abaULL,
                                      .kind = "select",
                                      .calls = 4,
                                      .errors = 1,
                                      .denied = 2,
                                      .limited = 0,
                                      .shadow = 5,
                                      .total_us = 10001,
                                      .max_us = 7000,
                                      .rows = 3,
                                      .bytes = 99,
                                      .sample = "select $1"},
                                     {.fp = STMT_STATS_FP_LARGE,
                                      .kind = "other",
                                      .calls = 1,
                                      .total_us = 1000000007,
                                      .max_us = 5,
                                      .bytes = UINT64_MAX}};
    struct console_out o = {0};
    console_rows_statements(&o, rows, 2);
    struct result r;
    decode(&o, &r);
    static const char *const want[] = {"fingerprint", "kind",   "calls",    "errors",  "denied",
                                       "limited",     "shadow", "total_ms", "mean_ms", "max_ms",
                                       "rows",        "bytes",  "sample"};
    assert_int_equal(r.ncols, 13);
    for (int k = 0; k < 13; k++)
        assert_string_equal(r.cols[k], want[k]);
    const char *row0[] = {"50fde20626009aba", "select", "4",     "1", "2",  "0",        "5",
                          "10.001",           "2.500",  "7.000", "3", "99", "select $1"};
    for (int k = 0; k < 13; k++)
        assert_string_equal(r.vals[0][k], row0[k]);
    assert_string_equal(r.vals[1][0], "<large statement>");
    assert_string_equal(r.vals[1][col(&r, "calls")], "1");
    assert_string_equal(r.vals[1][col(&r, "errors")], "0");
    assert_string_equal(r.vals[1][col(&r, "total_ms")], "1000000.007");
    assert_string_equal(r.vals[1][col(&r, "max_ms")], "0.005");
    assert_string_equal(r.vals[1][col(&r, "bytes")], "18446744073709551615");
    assert_null(r.vals[1][12]);
    assert_string_equal(r.tag, "SHOW 2");
    result_free(&r);
    console_out_free(&o);
}

static void test_stats_and_version(void **state)
{
    struct metrics_total t[METRICS_TOTALS_MAX];
    size_t n = metrics_totals(t, METRICS_TOTALS_MAX);
    assert_true(n > 10 && n <= METRICS_TOTALS_MAX);
    struct console_out o = {0};
    console_rows_stats(&o, t, n);
    struct result r;
    decode(&o, &r);
    assert_int_equal(r.ncols, 2);
    assert_string_equal(r.cols[0], "name");
    assert_string_equal(r.cols[1], "value");
    bool ok = false, rows = false;
    for (int i = 0; i < r.nrows; i++) {
        ok |= strcmp(r.vals[i][0], "statements_ok") == 0;
        rows |= strcmp(r.vals[i][0], "rows") == 0;
    }
    assert_true(ok && rows);
    result_free(&r);
    console_out_free(&o);
    console_rows_version(&o);
    decode(&o, &r);
    assert_string_equal(r.cols[0], "version");
    assert_string_equal(r.vals[0][0], "pgwire-proxy " PGWP_VERSION);
    assert_string_equal(r.tag, "SHOW 1");
    result_free(&r);
    console_out_free(&o);
}

static void test_errors_and_empty(void **state)
{
    struct console_out o = {0};
    console_out_error(&o, "42601", "unrecognized console command \"x\"", NULL, console_cmd_hint);
    console_out_rfq(&o);
    struct result r;
    decode(&o, &r);
    assert_string_equal(r.types, "EZ");
    assert_string_equal(r.code, "42601");
    assert_string_equal(r.hint, console_cmd_hint);
    console_out_free(&o);
    console_out_empty_query(&o);
    console_out_notice(&o, "hello");
    decode(&o, &r);
    assert_string_equal(r.types, "IN");
    assert_string_equal(r.code, "00000");
    assert_string_equal(r.message, "hello");
    /* EmptyQueryResponse is the type byte and a length of 4, nothing more */
    assert_int_equal(o.buf[0], 'I');
    assert_memory_equal(o.buf + 1, "\0\0\0\4", 4);
    assert_int_equal(o.buf[5], 'N');
    console_out_free(&o);
}

/* ---------- SHOW CONFIG ---------- */

#define ARGC(...) ((int)(sizeof((char *[]){"pgwire-proxy", __VA_ARGS__}) / sizeof(char *)))
#define ARGV(...) ((char *[]){"pgwire-proxy", __VA_ARGS__, NULL})

static const char *value_of(const struct result *r, const char *key, int column)
{
    for (int i = 0; i < r->nrows; i++)
        if (strcmp(r->vals[i][0], key) == 0)
            return r->vals[i][column];
    fail_msg("no row %s", key);
    return NULL;
}

static void test_config_rows(void **state)
{
    struct config c;
    char err[256];
    char *env[] = {NULL};
    assert_int_equal(config_load(&c,
                                 ARGC("--upstream", "host=db user=u password=hunter2",
                                      "--admin-users", "root, ops", "--deny", "drop",
                                      "--query-timeout", "1500ms", "--statement-stats", "7"),
                                 ARGV("--upstream", "host=db user=u password=hunter2",
                                      "--admin-users", "root, ops", "--deny", "drop",
                                      "--query-timeout", "1500ms", "--statement-stats", "7"),
                                 env, NULL, err, sizeof(err)),
                     CONFIG_OK);
    struct console_out o = {0};
    console_rows_config(&o, &c);
    struct result r = {0};
    memset(&r, 0, sizeof(r));
    /* more rows than the decoder keeps: read the ones it keeps, count the tag */
    decode(&o, &r);
    assert_string_equal(r.cols[0], "key");
    assert_string_equal(r.cols[2], "reload");
    assert_string_equal(value_of(&r, "listen", 1), "127.0.0.1:5433");
    assert_string_equal(value_of(&r, "listen", 2), "no");
    assert_string_equal(value_of(&r, "upstream", 2), "new connections");
    assert_null(strstr(value_of(&r, "upstream", 1), "hunter2"));
    assert_non_null(strstr(value_of(&r, "upstream", 1), "********"));
    assert_string_equal(value_of(&r, "max-connections", 1), "100");
    assert_string_equal(value_of(&r, "query-timeout", 1), "1500ms");
    assert_string_equal(value_of(&r, "startup-timeout", 1), "10s");
    assert_string_equal(value_of(&r, "client-write-timeout", 1), "1m");
    assert_string_equal(value_of(&r, "idle-in-transaction-timeout", 1), "0");
    assert_string_equal(value_of(&r, "max-rows", 1), "10000");
    assert_string_equal(value_of(&r, "max-bytes", 1), "100MB");
    assert_string_equal(value_of(&r, "deny", 1), "drop");
    assert_string_equal(value_of(&r, "read-only", 1), "off");
    assert_string_equal(value_of(&r, "unix-socket-mode", 1), "0777");
    char tag[32];
    struct config_option opt;
    size_t n = 0;
    while (config_option_at(&c, n, &opt))
        n++;
    snprintf(tag, sizeof(tag), "SHOW %zu", n);
    assert_string_equal(r.tag, tag);
    result_free(&r);
    console_out_free(&o);
    /* every listed value is accepted back by its flag */
    char buf[4096];
    for (size_t i = 0; config_option_at(&c, i, &opt); i++) {
        const char *v = config_option_text(&c, &opt, buf, sizeof(buf));
        if (strcmp(opt.name, "admin-users") == 0)
            assert_string_equal(v, "root,ops");
        if (strcmp(opt.name, "statement-stats") == 0)
            assert_string_equal(v, "7");
        if (strcmp(opt.name, "tls-client-cert") == 0)
            assert_string_equal(v, "none");
        if (strcmp(opt.name, "admin-trust-loopback") == 0)
            assert_string_equal(v, "off");
    }
    assert_true(config_is_admin(&c, "ops"));
    assert_false(config_is_admin(&c, "op"));
    config_free(&c);
}

static void test_admin_options(void **state)
{
    struct config c;
    char err[256];
    char *env[] = {NULL};
    assert_int_equal(config_load(&c, ARGC("--upstream", "host=db", "--admin-trust-loopback"),
                                 ARGV("--upstream", "host=db", "--admin-trust-loopback"), env, NULL,
                                 err, sizeof(err)),
                     CONFIG_ERROR);
    assert_non_null(strstr(err, "--admin-trust-loopback needs --admin-users"));
    assert_int_equal(config_load(&c, ARGC("--upstream", "host=db", "--admin-users", "a,b,a"),
                                 ARGV("--upstream", "host=db", "--admin-users", "a,b,a"), env, NULL,
                                 err, sizeof(err)),
                     CONFIG_ERROR);
    assert_non_null(strstr(err, "--admin-users names 'a' twice"));
    char long_name[80];
    memset(long_name, 'n', 70);
    long_name[70] = 0;
    assert_int_equal(config_load(&c, ARGC("--upstream", "host=db", "--admin-users", long_name),
                                 ARGV("--upstream", "host=db", "--admin-users", long_name), env,
                                 NULL, err, sizeof(err)),
                     CONFIG_ERROR);
    assert_non_null(strstr(err, "--admin-users"));
    assert_int_equal(config_load(&c, ARGC("--upstream", "host=db", "--statement-stats", "-1"),
                                 ARGV("--upstream", "host=db", "--statement-stats", "-1"), env,
                                 NULL, err, sizeof(err)),
                     CONFIG_ERROR);
    assert_non_null(strstr(err, "--statement-stats"));
    assert_int_equal(config_load(&c, ARGC("--upstream", "host=db"), ARGV("--upstream", "host=db"),
                                 env, NULL, err, sizeof(err)),
                     CONFIG_OK);
    assert_int_equal(c.statement_stats, CONFIG_STATEMENT_STATS_DEFAULT);
    assert_int_equal(c.nadmin_users, 0);
    assert_false(c.admin_trust_loopback);
    config_free(&c);
}

/* ---------- the workers' answers, merged ---------- */

#define NWORKERS 3

struct fake_pool {
    struct session_env env[NWORKERS];
    struct session_link sessions; /* no session: an empty list */
};

static int fake_post(void *pool, struct admin_ask *a)
{
    struct fake_pool *p = pool;
    for (int i = 0; i < NWORKERS; i++) { /* each worker answers at once */
        a->answer(a, i, &p->env[i], &p->sessions);
        admin_ask_answered(a);
    }
    return 0;
}

static void add(struct stmt_stats *t, uint64_t fp, uint64_t calls, int64_t last)
{
    bool created;
    struct stmt_stats_row *r = stmt_stats_touch(t, 100, fp, "select", last, &created);
    for (uint64_t i = 0; i < calls; i++)
        stmt_stats_add(r, STMT_STATS_OK, 1000, 1, 10);
    if (created) {
        char s[32];
        snprintf(s, sizeof(s), "sample %llu", (unsigned long long)fp);
        stmt_stats_set_sample(r, s);
    }
}

static void test_merge_across_workers(void **state)
{
    struct fake_pool p = {0};
    p.sessions.next = p.sessions.prev = &p.sessions;
    for (int i = 0; i < NWORKERS; i++)
        p.env[i].stats = stmt_stats_new();
    add(p.env[0].stats, 100, 3, 10);
    add(p.env[1].stats, 100, 4, 50);
    add(p.env[2].stats, 100, 5, 20);
    add(p.env[0].stats, 200, 20, 5); /* the most called, the least recently used */
    add(p.env[1].stats, 300, 1, 60);
    add(p.env[2].stats, 400, 2, 70);
    struct admin_hub hub = {.nworkers = NWORKERS, .post = fake_post, .pool = &p};
    struct admin_query *q = admin_query_new(ADMIN_STATEMENTS, NWORKERS, 0, "t", true, NULL);
    assert_int_equal(admin_query_post(&hub, q), 0);
    assert_true(admin_query_finished(q));
    assert_true(admin_query_wait(q, 0));
    size_t n;
    bool oom;
    struct stmt_stats_row *rows = admin_query_statements(q, 100, &n, &oom);
    assert_false(oom);
    assert_int_equal(n, 4);
    assert_int_equal(rows[0].fp, 200); /* by calls */
    assert_int_equal(rows[1].fp, 100);
    assert_int_equal(rows[1].calls, 12);
    assert_int_equal(rows[1].rows, 12);
    assert_int_equal(rows[1].last_us, 50);
    assert_string_equal(rows[1].sample, "sample 100");
    stmt_stats_rows_free(rows, n);
    /* a bound of 3 keeps the three most recently used: fingerprint 200 goes */
    rows = admin_query_statements(q, 3, &n, &oom);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++)
        assert_int_not_equal(rows[i].fp, 200);
    assert_int_equal(rows[0].fp, 100);
    stmt_stats_rows_free(rows, n);
    /* /metrics: counters by fingerprint and kind */
    rows = admin_query_statements(q, SIZE_MAX, &n, &oom);
    char *text = admin_render_statement_metrics(rows, n);
    assert_non_null(strstr(text, "# TYPE pgwire_proxy_statement_calls_total counter\n"));
    assert_non_null(strstr(text, "pgwire_proxy_statement_calls_total{fingerprint="
                                 "\"0000000000000064\",kind=\"select\"} 12\n"));
    assert_non_null(strstr(text, "pgwire_proxy_statement_seconds_total{fingerprint="
                                 "\"0000000000000064\",kind=\"select\"} 0.012000\n"));
    assert_non_null(strstr(text, "pgwire_proxy_statement_rows_total{fingerprint="
                                 "\"00000000000000c8\",kind=\"select\"} 20\n"));
    free(text);
    stmt_stats_rows_free(rows, n);
    admin_query_release(q);
    /* CANCEL of a session no worker has */
    q = admin_query_new(ADMIN_CANCEL, NWORKERS, 12345, "t", false, NULL);
    assert_int_equal(admin_query_post(&hub, q), 0);
    bool running = true;
    assert_false(admin_query_found(q, &running));
    assert_false(running);
    admin_query_release(q);
    /* SHOW SESSIONS with none */
    q = admin_query_new(ADMIN_SESSIONS, NWORKERS, 0, "t", false, NULL);
    assert_int_equal(admin_query_post(&hub, q), 0);
    struct session_snapshot *snap = admin_query_sessions(q, &n, &oom);
    assert_int_equal(n, 0);
    assert_null(snap);
    admin_query_release(q);
    /* a hub of another size refuses the question */
    q = admin_query_new(ADMIN_SESSIONS, 2, 0, "t", false, NULL);
    assert_int_not_equal(admin_query_post(&hub, q), 0);
    admin_query_release(q);
    for (int i = 0; i < NWORKERS; i++)
        stmt_stats_free(p.env[i].stats);
}

static void test_metrics_top_is_bounded(void **state)
{
    struct stmt_stats_row rows[ADMIN_METRICS_TOP + 5];
    for (size_t i = 0; i < ADMIN_METRICS_TOP + 5; i++)
        rows[i] = (struct stmt_stats_row){.fp = 1000 + i, .kind = "select", .calls = 100 - i};
    char *text = admin_render_statement_metrics(rows, ADMIN_METRICS_TOP + 5);
    size_t series = 0;
    for (const char *p = text; (p = strstr(p, "pgwire_proxy_statement_calls_total{")); p++)
        series++;
    assert_int_equal(series, ADMIN_METRICS_TOP);
    free(text);
    text = admin_render_statement_metrics(NULL, 0); /* off: the families, no series */
    assert_non_null(strstr(text, "# HELP pgwire_proxy_statement_rows_total"));
    assert_null(strstr(text, "{fingerprint"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_commands),       cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_sessions_rows),        cmocka_unit_test(test_statements_rows),
        cmocka_unit_test(test_stats_and_version),    cmocka_unit_test(test_errors_and_empty),
        cmocka_unit_test(test_config_rows),          cmocka_unit_test(test_admin_options),
        cmocka_unit_test(test_merge_across_workers), cmocka_unit_test(test_metrics_top_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
