/* Metrics are process-wide and never reset, so every check is a delta against a value read
 * before acting. Test order matters once: the rule-table overflow test fills the table, so it
 * runs after everything that needs to intern a new rule. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "metrics.h"
#include "metrics_test.h"

static int64_t val(const char *series)
{
    int64_t v = metrics_value(series);
    if (v < 0)
        fail_msg("series %s not found", series);
    return v;
}

static char *render(void)
{
    size_t len = 0;
    char *text = metrics_render(&len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    return text;
}

/* True when the text has this exact line (not merely a prefix of a longer one). */
static size_t count_prefix(const char *text, const char *prefix)
{
    size_t n = 0, len = strlen(prefix);
    for (const char *line = text; *line;) {
        if (strncmp(line, prefix, len) == 0)
            n++;
        const char *eol = strchr(line, '\n');
        if (!eol)
            break;
        line = eol + 1;
    }
    return n;
}

/* Values that metrics_value() truncates (seconds with a fraction) are parsed here. */
static double sample_double(const char *series)
{
    char *text = render();
    size_t n = strlen(series);
    const char *p = text;
    while ((p = strstr(p, series)) && !((p == text || p[-1] == '\n') && p[n] == ' '))
        p++;
    assert_non_null(p);
    double v = strtod(p + n + 1, NULL);
    free(text);
    return v;
}

static void test_build_info_and_families(void **state)
{
    (void)state;
    char *text = render();

    assert_true(has_line(text, P "build_info{version=\"" PGWP_VERSION "\"} 1"));
    assert_true(has_line(text, "# TYPE " P "build_info gauge"));
    assert_true(has_line(text, "# TYPE " P "sessions_active gauge"));
    assert_true(has_line(text, "# TYPE " P "queries_total counter"));
    assert_true(has_line(text, "# TYPE " P "query_duration_seconds histogram"));
    assert_true(has_line(text, "# TYPE " P "upstream_connect_seconds histogram"));
    assert_true(has_line(text, "# TYPE " P "errors_total counter"));
    assert_true(has_line(text, "# TYPE " P "guardrail_violations_total counter"));
    assert_true(strstr(text, "# HELP " P "rows_sent_total ") != NULL);
    /* Every family has HELP and TYPE together. */
    assert_int_equal(count_prefix(text, "# HELP "), count_prefix(text, "# TYPE "));
    assert_int_equal(text[strlen(text) - 1], '\n');
    free(text);

    double start = sample_double(P "process_start_time_seconds");
    assert_true(start > 1.6e9);
    /* Read on the clock the proxy reads, with a minute's slack: a machine whose clock is
     * stepped while the test runs (NTP at boot) must not turn a sane start time into a
     * failure. The point is an epoch value in seconds, not microseconds or a future date. */
    struct timespec now;
    assert_int_equal(clock_gettime(CLOCK_REALTIME, &now), 0);
    assert_true(start <= (double)now.tv_sec + 60);
    assert_int_equal(metrics_value(P "no_such_metric"), -1);
    assert_int_equal(metrics_value(P "queries_total{outcome=\"nope\"}"), -1);
}

static void test_counters(void **state)
{
    (void)state;
    int64_t active = val(P "sessions_active");
    metrics_session_open();
    metrics_session_open();
    metrics_session_close();
    assert_int_equal(val(P "sessions_active"), active + 1);
    metrics_session_close();
    assert_int_equal(val(P "sessions_active"), active);

    static const char *const conns[] = {"accepted", "rejected_limit", "upstream_failed",
                                        "protocol_error"};
    for (int o = 0; o < METRICS_CONN_OUTCOME_MAX; o++) {
        char series[128];
        snprintf(series, sizeof(series), P "connections_total{outcome=\"%s\"}", conns[o]);
        int64_t before = val(series);
        for (int i = 0; i <= o; i++)
            metrics_connection((enum metrics_conn_outcome)o);
        assert_int_equal(val(series), before + o + 1);
    }

    static const char *const queries[] = {"ok", "error", "denied", "limited", "rejected"};
    int64_t count = val(P "query_duration_seconds_count");
    for (int o = 0; o < METRICS_QUERY_OUTCOME_MAX; o++) {
        char series[128];
        snprintf(series, sizeof(series), P "queries_total{outcome=\"%s\"}", queries[o]);
        int64_t before = val(series);
        metrics_query((enum metrics_query_outcome)o, 100);
        assert_int_equal(val(series), before + 1);
    }
    assert_int_equal(val(P "query_duration_seconds_count"), count + METRICS_QUERY_OUTCOME_MAX);

    static const char *const cancels[] = {"forwarded",    "unknown_key", "failed",
                                          "rate_limited", "dropped",     "coalesced"};
    _Static_assert(sizeof(cancels) / sizeof(cancels[0]) == METRICS_CANCEL_OUTCOME_MAX, "names");
    for (int o = 0; o < METRICS_CANCEL_OUTCOME_MAX; o++) {
        char series[128];
        snprintf(series, sizeof(series), P "cancel_requests_total{outcome=\"%s\"}", cancels[o]);
        int64_t before = val(series);
        metrics_cancel((enum metrics_cancel_outcome)o);
        assert_int_equal(val(series), before + 1);
    }

    int64_t rows = val(P "rows_sent_total"), bytes = val(P "bytes_sent_total");
    metrics_rows_bytes(10, 1000);
    metrics_rows_bytes(0, 5);
    assert_int_equal(val(P "rows_sent_total"), rows + 10);
    assert_int_equal(val(P "bytes_sent_total"), bytes + 1005);

    int64_t tls_ok = val(P "tls_handshakes_total{outcome=\"ok\"}");
    int64_t tls_failed = val(P "tls_handshakes_total{outcome=\"failed\"}");
    metrics_tls_handshake(1);
    metrics_tls_handshake(0);
    metrics_tls_handshake(0);
    assert_int_equal(val(P "tls_handshakes_total{outcome=\"ok\"}"), tls_ok + 1);
    assert_int_equal(val(P "tls_handshakes_total{outcome=\"failed\"}"), tls_failed + 2);

    int64_t connects = val(P "upstream_connect_seconds_count");
    int64_t failures = val(P "upstream_connect_failures_total");
    metrics_upstream_connect(3000, 1);
    metrics_upstream_connect(10000000, 0);
    assert_int_equal(val(P "upstream_connect_seconds_count"), connects + 1);
    assert_int_equal(val(P "upstream_connect_failures_total"), failures + 1);
}

/* Checks that rendered buckets never decrease and that +Inf equals _count. */
static void assert_histogram_consistent(const char *name)
{
    char *text = render();
    char prefix[128];
    snprintf(prefix, sizeof(prefix), "%s_bucket{le=\"", name);
    uint64_t prev = 0, inf = 0;
    size_t buckets = 0;
    for (const char *p = strstr(text, prefix); p; p = strstr(p + 1, prefix)) {
        const char *sp = strchr(p, ' ');
        uint64_t v = strtoull(sp + 1, NULL, 10);
        assert_true(v >= prev);
        prev = v;
        buckets++;
        if (strncmp(p + strlen(prefix), "+Inf\"", 5) == 0)
            inf = v;
    }
    assert_true(buckets > 10);
    char count[128];
    snprintf(count, sizeof(count), "%s_count ", name);
    const char *c = strstr(text, count);
    assert_non_null(c);
    assert_int_equal(strtoull(c + strlen(count), NULL, 10), inf);
    free(text);
}

static void test_histogram_buckets(void **state)
{
    (void)state;
    static const char *const les[] = {"0.0005", "0.001", "30", "+Inf"};
    int64_t before[4];
    char series[4][128];
    for (int i = 0; i < 4; i++) {
        snprintf(series[i], sizeof(series[i]), P "query_duration_seconds_bucket{le=\"%s\"}",
                 les[i]);
        before[i] = val(series[i]);
    }
    double sum = sample_double(P "query_duration_seconds_sum");

    metrics_query(METRICS_QUERY_OK, 500);      /* on the bound: le is inclusive */
    metrics_query(METRICS_QUERY_OK, 501);      /* just over: next bucket */
    metrics_query(METRICS_QUERY_OK, 30000000); /* largest finite bound */
    metrics_query(METRICS_QUERY_OK, 30000001); /* only +Inf */

    /* Cumulative: every bucket counts all observations at or below its bound. */
    assert_int_equal(val(series[0]) - before[0], 1);
    assert_int_equal(val(series[1]) - before[1], 2);
    assert_int_equal(val(series[2]) - before[2], 3);
    assert_int_equal(val(series[3]) - before[3], 4);
    double added = sample_double(P "query_duration_seconds_sum") - sum;
    assert_true(added > 60.001002 - 1e-6 && added < 60.001002 + 1e-6);

    int64_t c001 = val(P "upstream_connect_seconds_bucket{le=\"0.001\"}");
    int64_t c10 = val(P "upstream_connect_seconds_bucket{le=\"10\"}");
    metrics_upstream_connect(1000, 1);
    metrics_upstream_connect(11000000, 1);
    assert_int_equal(val(P "upstream_connect_seconds_bucket{le=\"0.001\"}"), c001 + 1);
    assert_int_equal(val(P "upstream_connect_seconds_bucket{le=\"10\"}"), c10 + 1);

    assert_histogram_consistent(P "query_duration_seconds");
    assert_histogram_consistent(P "upstream_connect_seconds");
}

static void test_sqlstate_classes(void **state)
{
    (void)state;
    int64_t c22 = val(P "errors_total{class=\"22\"}");
    int64_t c42 = val(P "errors_total{class=\"42\"}");
    int64_t c0a = val(P "errors_total{class=\"0A\"}");
    int64_t other = val(P "errors_total{class=\"other\"}");

    metrics_error_sqlstate("22012");
    metrics_error_sqlstate("22003");
    metrics_error_sqlstate("42601");
    metrics_error_sqlstate("0a000"); /* lower case is the same class */
    metrics_error_sqlstate("!x000");
    metrics_error_sqlstate("2");
    metrics_error_sqlstate(NULL);

    assert_int_equal(val(P "errors_total{class=\"22\"}"), c22 + 2);
    assert_int_equal(val(P "errors_total{class=\"42\"}"), c42 + 1);
    assert_int_equal(val(P "errors_total{class=\"0A\"}"), c0a + 1);
    assert_int_equal(val(P "errors_total{class=\"other\"}"), other + 3);

    /* Zero classes are not rendered, yet still read as 0. */
    char *text = render();
    assert_null(strstr(text, "class=\"ZZ\""));
    assert_int_equal(count_prefix(text, P "errors_total{class=\"22\"} "), 1);
    free(text);
    assert_int_equal(metrics_value(P "errors_total{class=\"Z\"}"), -1);
    /* not one of PostgreSQL's classes: no such series */
    assert_int_equal(metrics_value(P "errors_total{class=\"ZZ\"}"), -1);
}

/* RAISE ... USING ERRCODE lets a client make the server send any five characters: every
 * two-character class once became its own series (1,296 of them in 0.3 s), and a client could
 * invent classes. Only PostgreSQL's defined classes are labels; the rest is "other". */
static void test_client_chosen_classes_are_other(void **state)
{
    (void)state;
    static const char alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    int64_t other = val(P "errors_total{class=\"other\"}");
    int64_t xx = val(P "errors_total{class=\"XX\"}");
    int64_t defined = 0, undefined = 0;
    for (int i = 0; i < 36; i++) {
        for (int k = 0; k < 36; k++) {
            char code[6] = {alphabet[i], alphabet[k], '0', '0', '1', 0};
            char series[96];
            snprintf(series, sizeof(series), P "errors_total{class=\"%c%c\"}", code[0], code[1]);
            if (metrics_value(series) >= 0)
                defined++;
            else
                undefined++;
            metrics_error_sqlstate(code);
        }
    }
    assert_int_equal(defined, 44);
    assert_int_equal(val(P "errors_total{class=\"other\"}"), other + undefined);
    assert_int_equal(val(P "errors_total{class=\"XX\"}"), xx + 1);
    char *text = render();
    /* at most the defined classes plus "other" */
    assert_true(count_prefix(text, P "errors_total{") <= 45);
    assert_null(strstr(text, "class=\"ZZ\""));
    assert_null(strstr(text, "class=\"QQ\""));
    free(text);
}

static void test_probe_and_http_series(void **state)
{
    (void)state;
    char *text = render();
    assert_true(has_line(text, "# TYPE " P "upstream_probes_total counter"));
    assert_true(has_line(text, "# TYPE " P "http_connections_closed_total counter"));
    free(text);
    int64_t auth = val(P "upstream_probes_total{result=\"auth_failed\"}");
    metrics_upstream_probe(METRICS_PROBE_AUTH_FAILED);
    assert_int_equal(val(P "upstream_probes_total{result=\"auth_failed\"}"), auth + 1);
    assert_int_equal(val(P "upstream_up"), 0);
    metrics_upstream_probe(METRICS_PROBE_OK);
    assert_int_equal(val(P "upstream_up"), 1);
    int64_t dl = val(P "http_connections_closed_total{reason=\"deadline\"}");
    metrics_http_closed(METRICS_HTTP_DEADLINE);
    assert_int_equal(val(P "http_connections_closed_total{reason=\"deadline\"}"), dl + 1);
    assert_true(val(P "http_connections_closed_total{reason=\"evicted\"}") >= 0);
    assert_true(val(P "http_connections_closed_total{reason=\"address_limit\"}") >= 0);
}

static void test_guardrail_labels(void **state)
{
    (void)state;
    assert_int_equal(
        metrics_value(P "guardrail_violations_total{rule=\"deny:drop\",mode=\"enforce\"}"), 0);
    int64_t other = val(P "guardrail_violations_total{rule=\"other\",mode=\"enforce\"}");

    metrics_guardrail("deny:drop");
    metrics_guardrail("deny:drop");
    metrics_guardrail("max-rows");
    assert_int_equal(val(P "guardrail_violations_total{rule=\"deny:drop\",mode=\"enforce\"}"), 2);
    assert_int_equal(val(P "guardrail_violations_total{rule=\"max-rows\",mode=\"enforce\"}"), 1);

    /* Label values are escaped, and non-ASCII never reaches the scrape. */
    metrics_guardrail("pattern:\"x\"\\y\nz");
    metrics_guardrail("caf\xc3\xa9");
    char *text = render();
    assert_true(has_line(
        text,
        P "guardrail_violations_total{rule=\"pattern:\\\"x\\\"\\\\y_z\",mode=\"enforce\"} 1"));
    assert_true(has_line(text, P "guardrail_violations_total{rule=\"caf__\",mode=\"enforce\"} 1"));
    assert_int_equal(
        count_prefix(text, P "guardrail_violations_total{rule=\"deny:drop\",mode=\"enforce\"}"), 1);
    free(text);

    /* Names that cannot be a label of their own land in "other", never in a second series. */
    char long_name[200];
    memset(long_name, 'a', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    metrics_guardrail(long_name);
    metrics_guardrail("");
    metrics_guardrail(NULL);
    metrics_guardrail("other");
    assert_int_equal(val(P "guardrail_violations_total{rule=\"other\",mode=\"enforce\"}"),
                     other + 4);
    text = render();
    assert_int_equal(
        count_prefix(text, P "guardrail_violations_total{rule=\"other\",mode=\"enforce\"}"), 1);
    free(text);
}

/* A shadow rule's hit is its own series, mode="shadow": an alert on enforced violations by
 * rule is not set off by a rule that only records. */
static void test_guardrail_modes(void **state)
{
    (void)state;
    int64_t enforced = val(P "guardrail_violations_total{rule=\"deny:truncate\",mode=\"enforce\"}");
    assert_int_equal(
        metrics_value(P "guardrail_violations_total{rule=\"deny:truncate\",mode=\"shadow\"}"), 0);
    int64_t other = val(P "guardrail_violations_total{rule=\"other\",mode=\"shadow\"}");
    metrics_guardrail_shadow("deny:truncate");
    metrics_guardrail_shadow("deny:truncate");
    metrics_guardrail_shadow(NULL);
    assert_int_equal(val(P "guardrail_violations_total{rule=\"deny:truncate\",mode=\"shadow\"}"),
                     2);
    assert_int_equal(val(P "guardrail_violations_total{rule=\"deny:truncate\",mode=\"enforce\"}"),
                     enforced);
    assert_int_equal(val(P "guardrail_violations_total{rule=\"other\",mode=\"shadow\"}"),
                     other + 1);
    metrics_guardrail("deny:truncate");
    assert_int_equal(val(P "guardrail_violations_total{rule=\"deny:truncate\",mode=\"enforce\"}"),
                     enforced + 1);
    char *text = render();
    assert_true(
        has_line(text, P "guardrail_violations_total{rule=\"deny:truncate\",mode=\"shadow\"} 2"));
    assert_int_equal(count_prefix(text, P "guardrail_violations_total{rule=\"deny:truncate\","), 2);
    free(text);
}

#define THREADS    8
#define ITERATIONS 100000

static void *hammer(void *arg)
{
    (void)arg;
    for (int i = 0; i < ITERATIONS; i++) {
        metrics_query(METRICS_QUERY_LIMITED, 1);
        metrics_rows_bytes(1, 3);
        metrics_error_sqlstate("57014");
        /* Every thread races to intern the same new label on its first call. */
        metrics_guardrail("concurrent-rule");
    }
    return NULL;
}

static void test_concurrency(void **state)
{
    (void)state;
    pthread_t t[THREADS];
    int64_t limited = val(P "queries_total{outcome=\"limited\"}");
    int64_t count = val(P "query_duration_seconds_count");
    int64_t rows = val(P "rows_sent_total"), bytes = val(P "bytes_sent_total");
    int64_t c57 = val(P "errors_total{class=\"57\"}");
    int64_t total = (int64_t)THREADS * ITERATIONS;

    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, NULL), 0);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);

    assert_int_equal(val(P "queries_total{outcome=\"limited\"}"), limited + total);
    assert_int_equal(val(P "query_duration_seconds_count"), count + total);
    assert_int_equal(val(P "rows_sent_total"), rows + total);
    assert_int_equal(val(P "bytes_sent_total"), bytes + 3 * total);
    assert_int_equal(val(P "errors_total{class=\"57\"}"), c57 + total);
    assert_int_equal(val(P "guardrail_violations_total{rule=\"concurrent-rule\",mode=\"enforce\"}"),
                     total);
    char *text = render();
    assert_int_equal(
        count_prefix(text,
                     P "guardrail_violations_total{rule=\"concurrent-rule\",mode=\"enforce\"}"),
        1);
    free(text);
}

static void test_guardrail_overflow(void **state)
{
    (void)state;
    int64_t other = val(P "guardrail_violations_total{rule=\"other\",mode=\"enforce\"}");
    int64_t drop = val(P "guardrail_violations_total{rule=\"deny:drop\",mode=\"enforce\"}");
    int interned = 0;

    for (int i = 0; i < 100; i++) {
        char name[32];
        snprintf(name, sizeof(name), "overflow-%d", i);
        metrics_guardrail(name);
        char series[96];
        snprintf(series, sizeof(series),
                 P "guardrail_violations_total{rule=\"%s\",mode=\"enforce\"}", name);
        if (val(series) == 1)
            interned++;
    }
    int64_t spilled = val(P "guardrail_violations_total{rule=\"other\",mode=\"enforce\"}") - other;
    assert_int_equal(interned + spilled, 100);
    assert_true(spilled >= 100 - 64);

    char *text = render();
    /* At most 64 interned rules plus the two "other" series (enforce, shadow). */
    assert_true(count_prefix(text, P "guardrail_violations_total{") <= 66);
    assert_null(strstr(text, "rule=\"overflow-99\""));
    free(text);

    /* A full table still counts the rules it already holds under their own names. */
    metrics_guardrail("deny:drop");
    assert_int_equal(val(P "guardrail_violations_total{rule=\"deny:drop\",mode=\"enforce\"}"),
                     drop + 1);
    metrics_guardrail("never-seen-before");
    assert_int_equal(val(P "guardrail_violations_total{rule=\"other\",mode=\"enforce\"}"),
                     other + spilled + 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_info_and_families),
        cmocka_unit_test(test_counters),
        cmocka_unit_test(test_histogram_buckets),
        cmocka_unit_test(test_sqlstate_classes),
        cmocka_unit_test(test_client_chosen_classes_are_other),
        cmocka_unit_test(test_probe_and_http_series),
        cmocka_unit_test(test_guardrail_labels),
        cmocka_unit_test(test_guardrail_modes),
        cmocka_unit_test(test_concurrency),
        cmocka_unit_test(test_guardrail_overflow), /* fills the rule table: keep after the above */
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
