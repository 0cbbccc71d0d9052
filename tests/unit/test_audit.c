/* The audit writer: a bounded queue that refuses instead of dropping and wakes the refused
 * caller's eventfd, records written once each and in order, drops only for a file that cannot
 * be written, and a drained close. (The JSON of one record: test_audit_json.c.)
 *
 * A writer is "blocked" by giving it a FIFO of one page that nobody reads, and a first record
 * longer than that page: once the page is full the writer sits in write() with that record,
 * so the queue's state is exactly what the test submits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit_int.h"
#include "audit_test.h"
#include "metrics.h"

#define BOUND_MS  10000
#define PIPE_PAGE 4096

/* ---------- helpers ---------- */

struct fixture {
    char dir[64];
    char path[96];
    int rfd; /* FIFO read end, or -1 */
    char *out;
    size_t len, cap;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pause_ms(long ms)
{
    struct timespec ts = {.tv_sec = 0, .tv_nsec = ms * 1000000L};
    nanosleep(&ts, NULL);
}

static struct fixture *fixture_new(bool fifo)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/pgwp-audit-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/audit.jsonl", f->dir);
    f->rfd = -1;
    if (fifo) {
        assert_int_equal(mkfifo(f->path, 0600), 0);
        /* opened first and non-blocking, so the writer's blocking open finds a reader */
        f->rfd = open(f->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        assert_true(f->rfd >= 0);
        assert_true(fcntl(f->rfd, F_SETPIPE_SZ, PIPE_PAGE) >= PIPE_PAGE);
    }
    return f;
}

static void fixture_free(struct fixture *f)
{
    if (f->rfd >= 0)
        close(f->rfd);
    unlink(f->path);
    rmdir(f->dir);
    free(f->out);
    free(f);
}

/* Reads what the FIFO holds, waiting up to ms for something; false at EOF. */
static bool pump(struct fixture *f, int ms)
{
    struct pollfd p = {.fd = f->rfd, .events = POLLIN};
    if (poll(&p, 1, ms) <= 0)
        return true;
    if (f->cap - f->len < 65536) {
        f->cap = f->cap ? f->cap * 2 : 1 << 20;
        f->out = realloc(f->out, f->cap + 1);
        assert_non_null(f->out);
    }
    ssize_t n = read(f->rfd, f->out + f->len, f->cap - f->len);
    if (n == 0)
        return false;
    if (n > 0)
        f->len += (size_t)n;
    f->out[f->len] = 0;
    return true;
}

/* Reads the FIFO until the writer closes it (the log was closed and is written out). */
static void pump_to_eof(struct fixture *f)
{
    int64_t until = now_ms() + BOUND_MS;
    while (pump(f, 100))
        assert_true(now_ms() < until);
    assert_int_equal(audit_wait_closed(BOUND_MS), 0);
}

static void read_file(struct fixture *f)
{
    FILE *fp = fopen(f->path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    f->len = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    free(f->out);
    f->out = malloc(f->len + 1);
    assert_non_null(f->out);
    assert_int_equal(fread(f->out, 1, f->len, fp), f->len);
    f->out[f->len] = 0;
    fclose(fp);
}

static size_t pipe_bytes(int fd)
{
    int n = 0;
    assert_int_equal(ioctl(fd, FIONREAD, &n), 0);
    return (size_t)n;
}

static char *filled(size_t n, const char *prefix)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, 'x', n);
    memcpy(s, prefix, strlen(prefix));
    s[n] = 0;
    return s;
}

/* The session ids of the output's lines, in order; every line must end with a newline. */
static size_t sessions(const struct fixture *f, uint64_t *ids, size_t max)
{
    size_t n = 0;
    for (const char *line = f->out; line && *line; n++) {
        const char *eol = strchr(line, '\n');
        assert_non_null(eol);
        const char *k = strstr(line, "\"session\":");
        assert_true(k && k < eol);
        assert_true(n < max);
        ids[n] = strtoull(k + 10, NULL, 10);
        line = eol + 1;
    }
    return n;
}

static void assert_sessions(const struct fixture *f, uint64_t first, uint64_t last)
{
    uint64_t ids[4096];
    size_t n = sessions(f, ids, 4096);
    assert_int_equal(n, last - first + 1);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(ids[i], first + i);
}

static bool readable(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, ms) == 1;
}

static uint64_t eventfd_take(int fd)
{
    uint64_t v = 0;
    assert_int_equal(read(fd, &v, sizeof(v)), sizeof(v));
    return v;
}

/* Opens a log on the fixture's FIFO and blocks its writer inside record 1. */
static struct audit_log *blocked_log(struct fixture *f, const struct audit_limits *lim,
                                     char **first)
{
    char err[256];
    struct audit_log *a = audit_open_limits(f->path, false, 0, lim, err, sizeof(err));
    assert_non_null(a);
    *first = filled(3 * PIPE_PAGE, "select 1 -- ");
    struct audit_record r = audit_test_record(1, *first);
    assert_int_equal(audit_submit(a, &r, -1), 0);
    int64_t until = now_ms() + BOUND_MS;
    while (pipe_bytes(f->rfd) < PIPE_PAGE) {
        assert_true(now_ms() < until);
        pause_ms(1);
    }
    return a;
}

/* ---------- the queue ---------- */

static void test_full_queue_refuses_then_wakes(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(true);
    struct audit_limits lim = {.max_records = 4};
    char *first;
    struct audit_log *a = blocked_log(f, &lim, &first);
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), other = eventfd(0, EFD_NONBLOCK);
    int64_t full_before = metrics_value("pgwire_proxy_audit_queue_full_total");
    for (uint64_t id = 2; id <= 5; id++) {
        struct audit_record r = audit_test_record(id, "select 2");
        assert_int_equal(audit_submit(a, &r, efd), 0);
    }
    struct audit_record sixth = audit_test_record(6, "select 6");
    assert_int_equal(audit_submit(a, &sixth, efd), -EAGAIN);
    assert_int_equal(audit_submit(a, &sixth, efd), -EAGAIN); /* the same loop: one wake-up */
    assert_int_equal(audit_submit(a, &sixth, other), -EAGAIN);
    assert_int_equal(metrics_value("pgwire_proxy_audit_queue_full_total") - full_before, 3);
    assert_false(readable(efd, 0));
    assert_false(readable(other, 0));

    /* reading frees the pipe: the writer finishes record 1, takes record 2, and there is room */
    int64_t until = now_ms() + BOUND_MS;
    while (!readable(efd, 0)) {
        assert_true(pump(f, 10));
        assert_true(now_ms() < until);
    }
    assert_int_equal(eventfd_take(efd), 1);
    assert_true(readable(other, BOUND_MS));
    assert_int_equal(eventfd_take(other), 1);
    assert_int_equal(audit_submit(a, &sixth, efd), 0);
    audit_close(a);
    pump_to_eof(f);
    assert_sessions(f, 1, 6); /* the refused tries queued nothing: record 6 is there once */
    assert_false(readable(efd, 0));
    close(efd);
    close(other);
    free(first);
    fixture_free(f);
}

/* One statement larger than the whole byte bound still goes in when the queue is empty. */
static void test_oversized_record_accepted_alone(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(true);
    struct audit_limits lim = {.max_bytes = 8192};
    char *first, *big = filled(100000, "select 2 -- ");
    struct audit_log *a = blocked_log(f, &lim, &first);
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct audit_record r2 = audit_test_record(2, big), r3 = audit_test_record(3, "select 3");
    assert_int_equal(audit_submit(a, &r2, efd), 0);
    assert_int_equal(audit_submit(a, &r3, efd), -EAGAIN);
    int64_t until = now_ms() + BOUND_MS;
    while (!readable(efd, 0)) {
        assert_true(pump(f, 10));
        assert_true(now_ms() < until);
    }
    assert_int_equal(audit_submit(a, &r3, efd), 0);
    audit_close(a);
    pump_to_eof(f);
    assert_sessions(f, 1, 3);
    assert_non_null(strstr(f->out, big));
    close(efd);
    free(first);
    free(big);
    fixture_free(f);
}

/* A session that ends cannot wait: it may exceed the bounds up to twice, then it is dropped. */
static void test_final_submit_overshoots_then_drops(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(true);
    struct audit_limits lim = {.max_records = 2};
    char *first;
    struct audit_log *a = blocked_log(f, &lim, &first);
    int64_t dropped = metrics_value("pgwire_proxy_audit_records_dropped_total");
    struct audit_record r;
    for (uint64_t id = 2; id <= 3; id++) {
        r = audit_test_record(id, "select");
        assert_int_equal(audit_submit(a, &r, -1), 0);
    }
    r = audit_test_record(4, "select");
    assert_int_equal(audit_submit(a, &r, -1), -EAGAIN);
    for (uint64_t id = 4; id <= 5; id++) {
        r = audit_test_record(id, "select");
        assert_int_equal(audit_submit_final(a, &r), 0);
    }
    r = audit_test_record(6, "select");
    assert_int_equal(audit_submit_final(a, &r), -ENOBUFS);
    assert_int_equal(metrics_value("pgwire_proxy_audit_records_dropped_total") - dropped, 1);
    audit_close(a);
    pump_to_eof(f);
    assert_sessions(f, 1, 5);
    free(first);
    fixture_free(f);
}

/* ---------- writing ---------- */

static void test_close_drains_in_order(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(false);
    char err[256];
    struct audit_log *a = audit_open(f->path, false, 0, err, sizeof(err));
    assert_non_null(a);
    int64_t written = metrics_value("pgwire_proxy_audit_records_total");
    uint64_t id = 1;
    for (; id <= 3000; id++) {
        struct audit_record r = audit_test_record(id, "select 1");
        int rc = audit_submit(a, &r, -1);
        if (rc == -EAGAIN)
            break; /* a full queue: what went in must all come out */
        assert_int_equal(rc, 0);
    }
    audit_close(a);
    assert_int_equal(audit_wait_closed(BOUND_MS), 0);
    read_file(f);
    assert_sessions(f, 1, id - 1);
    assert_int_equal(metrics_value("pgwire_proxy_audit_records_total") - written, id - 1);
    fixture_free(f);
}

/* A non-blocking standard error (inherited from a supervisor) takes a long line in pieces:
 * each short write is completed, and EAGAIN waits instead of counting as a failure. */
static void test_short_writes_completed(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(false);
    int p[2], saved = dup(STDERR_FILENO);
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    assert_true(fcntl(p[0], F_SETPIPE_SZ, PIPE_PAGE) >= PIPE_PAGE);
    assert_int_equal(fcntl(p[1], F_SETFL, O_NONBLOCK), 0);
    assert_true(dup2(p[1], STDERR_FILENO) >= 0);
    close(p[1]);
    f->rfd = p[0];
    int64_t dropped = metrics_value("pgwire_proxy_audit_records_dropped_total");
    char err[256], *big = filled(5 * PIPE_PAGE, "select 1 -- ");
    struct audit_log *a = audit_open("-", false, 0, err, sizeof(err));
    assert_non_null(a);
    struct audit_record r1 = audit_test_record(1, big), r2 = audit_test_record(2, "select 2");
    assert_int_equal(audit_submit(a, &r1, -1), 0);
    assert_int_equal(audit_submit(a, &r2, -1), 0);
    int64_t until = now_ms() + BOUND_MS;
    while (!f->out || !strstr(f->out, "\"session\":2,")) {
        assert_true(pump(f, 10));
        assert_true(now_ms() < until);
    }
    audit_close(a);
    assert_int_equal(audit_wait_closed(BOUND_MS), 0);
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    pump_to_eof(f);
    assert_sessions(f, 1, 2);
    assert_non_null(strstr(f->out, big));
    assert_int_equal(metrics_value("pgwire_proxy_audit_records_dropped_total"), dropped);
    free(big);
    fixture_free(f);
}

/* /dev/full fails every write with ENOSPC: retried for retry_ms, then dropped and counted. */
static void test_write_errors_count_drops(void **state)
{
    (void)state;
    char err[256];
    struct audit_limits lim = {.retry_ms = 50};
    struct audit_log *a = audit_open_limits("/dev/full", false, 0, &lim, err, sizeof(err));
    assert_non_null(a);
    int64_t written = metrics_value("pgwire_proxy_audit_records_total");
    int64_t dropped = metrics_value("pgwire_proxy_audit_records_dropped_total");
    for (uint64_t id = 1; id <= 5; id++) {
        struct audit_record r = audit_test_record(id, "select 1");
        assert_int_equal(audit_submit(a, &r, -1), 0);
    }
    audit_close(a);
    assert_int_equal(audit_wait_closed(BOUND_MS), 0);
    assert_int_equal(metrics_value("pgwire_proxy_audit_records_dropped_total") - dropped, 5);
    assert_int_equal(metrics_value("pgwire_proxy_audit_records_total") - written, 0);
}

/* A statement over AUDIT_STATEMENT_MAX is cut at a character boundary, and says so. */
static void test_long_statement_cut_at_a_character(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(false);
    size_t n = 3 * AUDIT_STATEMENT_MAX + 1;
    char *sql = malloc(n + 1);
    assert_non_null(sql);
    sql[0] = 'x';
    for (size_t i = 1; i + 1 < n + 1; i += 2)
        memcpy(sql + i, "\xC3\xA9", 2); /* é: the cap falls inside one */
    sql[n] = 0;
    char err[256];
    struct audit_log *a = audit_open(f->path, false, 0, err, sizeof(err));
    assert_non_null(a);
    struct audit_record r = audit_test_record(1, sql);
    assert_int_equal(audit_submit(a, &r, -1), 0);
    audit_close(a);
    assert_int_equal(audit_wait_closed(BOUND_MS), 0);
    read_file(f);
    char tail[96];
    snprintf(tail, sizeof(tail), "\",\"statement_truncated\":true,\"statement_bytes\":%zu,", n);
    const char *t = strstr(f->out, tail), *s = strstr(f->out, "\"statement\":\"");
    assert_non_null(t);
    assert_non_null(s);
    assert_int_equal(t - (s + 13), AUDIT_STATEMENT_MAX - 1);
    assert_null(strstr(f->out, "statement_hex"));
    free(sql);
    fixture_free(f);
}

static void test_redaction_runs_on_the_writer(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(false);
    char err[256];
    struct audit_log *a = audit_open(f->path, true, 0, err, sizeof(err));
    assert_non_null(a);
    struct audit_param params[] = {
        {.kind = AUDIT_PARAM_TEXT, .text = "hunter2", .len = 7, .size = 7}};
    struct audit_record r = audit_test_record(1, "select 'sekrit\xff', 4242 from t where a = 'x'");
    r.params = params;
    r.nparams = 1;
    r.protocol = "extended";
    assert_int_equal(audit_submit(a, &r, -1), 0);
    audit_close(a);
    assert_int_equal(audit_wait_closed(BOUND_MS), 0);
    read_file(f);
    assert_non_null(strstr(f->out, "\"statement\":\"select $1, $2 from t where a = $3\""));
    assert_null(strstr(f->out, "sekrit"));
    assert_null(strstr(f->out, "4242"));
    assert_null(strstr(f->out, "hunter2"));
    assert_null(strstr(f->out, "\"params\""));
    assert_null(strstr(f->out, "_hex"));
    fixture_free(f);
}

static void test_metric_families(void **state)
{
    (void)state;
    size_t len = 0;
    char *text = metrics_render(&len);
    assert_non_null(text);
    assert_non_null(strstr(text, "# TYPE pgwire_proxy_audit_records_total counter\n"));
    assert_non_null(strstr(text, "# TYPE pgwire_proxy_audit_records_dropped_total counter\n"));
    assert_non_null(strstr(text, "# TYPE pgwire_proxy_audit_queue_full_total counter\n"));
    int64_t written = metrics_value("pgwire_proxy_audit_records_total");
    int64_t dropped = metrics_value("pgwire_proxy_audit_records_dropped_total");
    metrics_audit(true);
    metrics_audit(false);
    metrics_audit(false);
    assert_int_equal(metrics_value("pgwire_proxy_audit_records_total"), written + 1);
    assert_int_equal(metrics_value("pgwire_proxy_audit_records_dropped_total"), dropped + 2);
    free(text);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_queue_refuses_then_wakes),
        cmocka_unit_test(test_oversized_record_accepted_alone),
        cmocka_unit_test(test_final_submit_overshoots_then_drops),
        cmocka_unit_test(test_close_drains_in_order),
        cmocka_unit_test(test_short_writes_completed),
        cmocka_unit_test(test_write_errors_count_drops),
        cmocka_unit_test(test_long_statement_cut_at_a_character),
        cmocka_unit_test(test_redaction_runs_on_the_writer),
        cmocka_unit_test(test_metric_families),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
