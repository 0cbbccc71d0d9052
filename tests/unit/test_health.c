/* The shared upstream probe behind /healthz, against a scripted fake PostgreSQL: one probe
 * serves many checks, a refused login or a full server is unhealthy, and a silent upstream
 * never holds a check (or the stop) for long. alarm() bounds the waits that must not hang. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fake_pg.h"
#include "health.h"
#include "metrics.h"
#include "wire.h"

static void dsn_for(const struct fake_pg *f, char *buf, size_t len)
{
    snprintf(buf, len,
             "host=127.0.0.1 port=%d dbname=d user=u sslmode=disable gssencmode=disable "
             "connect_timeout=5",
             f->port);
}

static int64_t probes(const char *result)
{
    char series[128];
    snprintf(series, sizeof(series), "pgwire_proxy_upstream_probes_total{result=\"%s\"}", result);
    return metrics_value(series);
}

/* Accepts the probe's connection and reads its StartupMessage; returns the fd. */
static int take_probe(struct fake_pg *pg)
{
    int fd = fake_pg_accept(pg, 10000);
    assert_true(fd >= 0);
    assert_int_equal(fake_pg_read_startup(fd, NULL, 0), WIRE_PROTO_3_0);
    return fd;
}

static int drain_pending(struct fake_pg *pg)
{
    int n = 0;
    while (fake_pg_pending(pg) && n < 1000) {
        int fd = fake_pg_accept(pg, 0);
        if (fd >= 0)
            close(fd);
        n++;
    }
    return n;
}

/* Every /healthz once opened its own authenticated upstream session (100 checks, 100
 * sessions). Now checks within an interval share one probe. */
static void test_checks_share_one_probe(void **state)
{
    (void)state;
    struct fake_pg pg;
    char dsn[256], reason[128];
    assert_int_equal(fake_pg_listen(&pg, 64), 0);
    dsn_for(&pg, dsn, sizeof(dsn));
    int64_t ok = probes("ok");
    struct health *h = health_start();
    assert_non_null(h);
    health_set_upstream(h, dsn);
    int fd = take_probe(&pg);
    fake_pg_send_ok(fd, 11, 22);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(health_check(h, reason, sizeof(reason)), 1);
        assert_string_equal(reason, "ok");
    }
    close(fd);
    /* one probe for the hundred checks (two if the interval ran out meanwhile) */
    assert_true(drain_pending(&pg) <= 1);
    assert_true(probes("ok") - ok >= 1 && probes("ok") - ok <= 2);
    alarm(10);
    health_stop(h);
    alarm(0);
    fake_pg_close(&pg);
}

/* /healthz once answered 200 while the upstream rejected the DSN's password or was full: a
 * bare ping succeeds against a server that refuses every login. */
static void expect_refusal(const char *code, const char *msg, const char *result, const char *why)
{
    struct fake_pg pg;
    char dsn[256], reason[128];
    assert_int_equal(fake_pg_listen(&pg, 64), 0);
    dsn_for(&pg, dsn, sizeof(dsn));
    int64_t before = probes(result);
    struct health *h = health_start();
    health_set_upstream(h, dsn);
    int fd = take_probe(&pg);
    fake_pg_send_fatal(fd, code, msg);
    close(fd);
    assert_int_equal(health_check(h, reason, sizeof(reason)), 0);
    assert_string_equal(reason, why);
    assert_int_equal(probes(result) - before, 1);
    assert_int_equal(metrics_value("pgwire_proxy_upstream_up"), 0);
    health_stop(h);
    fake_pg_close(&pg);
}

static void test_authentication_failure_is_unhealthy(void **state)
{
    (void)state;
    expect_refusal("28P01", "password authentication failed for user \"u\"", "auth_failed",
                   "upstream authentication failed");
}

static void test_full_upstream_is_unhealthy(void **state)
{
    (void)state;
    expect_refusal("53300", "sorry, too many clients already", "too_many_connections",
                   "upstream has too many connections");
}

/* A role or database at its CONNECTION LIMIT refuses with 53300 as well. */
static void test_role_at_its_connection_limit_is_unhealthy(void **state)
{
    (void)state;
    expect_refusal("53300", "too many connections for role \"u\"", "too_many_connections",
                   "upstream has too many connections");
}

static void test_unreachable_upstream_is_unhealthy(void **state)
{
    (void)state;
    struct fake_pg pg;
    char dsn[256], reason[128];
    assert_int_equal(fake_pg_listen(&pg, 1), 0);
    dsn_for(&pg, dsn, sizeof(dsn));
    fake_pg_close(&pg); /* nothing listens there any more */
    struct health *h = health_start();
    health_set_upstream(h, dsn);
    assert_int_equal(health_check(h, reason, sizeof(reason)), 0);
    assert_string_equal(reason, "upstream unreachable");
    health_stop(h);
}

/* An upstream that takes the connection and never answers: the check returns (unhealthy,
 * nothing known yet) instead of waiting for PostgreSQL, and a stop interrupts the probe. */
static void test_silent_upstream_never_holds_a_check(void **state)
{
    (void)state;
    struct fake_pg pg;
    char dsn[256], reason[128];
    assert_int_equal(fake_pg_listen(&pg, 64), 0);
    dsn_for(&pg, dsn, sizeof(dsn));
    struct health *h = health_start();
    health_set_upstream(h, dsn);
    int fd = take_probe(&pg);
    alarm(10);
    assert_int_equal(health_check(h, reason, sizeof(reason)), 0);
    assert_string_equal(reason, "upstream check pending");
    health_stop(h); /* while the probe is still waiting for an answer */
    alarm(0);
    close(fd);
    fake_pg_close(&pg);
}

/* A reload to another DSN forgets the old answer and probes the new upstream. */
static void test_new_dsn_is_probed_afresh(void **state)
{
    (void)state;
    struct fake_pg a, b;
    char dsn_a[256], dsn_b[256], reason[128];
    assert_int_equal(fake_pg_listen(&a, 8), 0);
    assert_int_equal(fake_pg_listen(&b, 8), 0);
    dsn_for(&a, dsn_a, sizeof(dsn_a));
    dsn_for(&b, dsn_b, sizeof(dsn_b));
    struct health *h = health_start();
    health_set_upstream(h, dsn_a);
    int fd = take_probe(&a);
    fake_pg_send_ok(fd, 1, 2);
    assert_int_equal(health_check(h, reason, sizeof(reason)), 1);
    close(fd);
    health_set_upstream(h, dsn_a); /* unchanged: no new probe */
    health_set_upstream(h, dsn_b);
    fd = take_probe(&b);
    fake_pg_send_fatal(fd, "28P01", "password authentication failed for user \"u\"");
    close(fd);
    assert_int_equal(health_check(h, reason, sizeof(reason)), 0);
    assert_string_equal(reason, "upstream authentication failed");
    assert_int_equal(drain_pending(&a), 0);
    health_stop(h);
    fake_pg_close(&a);
    fake_pg_close(&b);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checks_share_one_probe),
        cmocka_unit_test(test_authentication_failure_is_unhealthy),
        cmocka_unit_test(test_full_upstream_is_unhealthy),
        cmocka_unit_test(test_role_at_its_connection_limit_is_unhealthy),
        cmocka_unit_test(test_unreachable_upstream_is_unhealthy),
        cmocka_unit_test(test_silent_upstream_never_holds_a_check),
        cmocka_unit_test(test_new_dsn_is_probed_afresh),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
