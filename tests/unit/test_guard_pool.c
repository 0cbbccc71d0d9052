/* The parser pool: a job's life (queued, running, done), its eventfd, release in every state,
 * a full queue, and stopping with jobs queued. Run under ASan: a job freed twice or never is a
 * failure there. */
#include <errno.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "guard_pool.h"
#include "guard_test.h"

#define BOUND_MS 20000

static void sleep_ms(int ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits (bounded) until the eventfd is readable; returns its counter, 0 on timeout. */
static uint64_t wait_wake(int fd)
{
    struct pollfd pfd = {fd, POLLIN, 0};
    if (poll(&pfd, 1, BOUND_MS) != 1)
        return 0;
    uint64_t v = 0;
    if (read(fd, &v, sizeof v) != (ssize_t)sizeof v)
        return 0;
    return v;
}

static uint64_t counter_now(int fd)
{
    uint64_t v = 0;
    return read(fd, &v, sizeof v) == (ssize_t)sizeof v ? v : 0;
}

static void wait_running(struct guard_pool *pool, size_t n)
{
    for (int i = 0; i < BOUND_MS && guard_pool_running(pool) != n; i++)
        sleep_ms(1);
    assert_int_equal(guard_pool_running(pool), n);
}

static struct guard_pool *new_pool(int threads, size_t max_parse)
{
    char err[256];
    struct guard_pool *pool = guard_pool_new(threads, max_parse, err, sizeof err);
    if (!pool)
        fail_msg("guard_pool_new: %s", err);
    return pool;
}

static void test_submit_done_wake(void **state)
{
    (void)state;
    struct guard_pool *pool = new_pool(2, 0);
    struct guard_policy *p = gt_policy("drop", NULL, NULL, false);
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct guard_decision d;
    bool cacheable = false;

    assert_true(efd >= 0);
    struct guard_job *j = guard_pool_submit(pool, p, "DROP TABLE t", 12, efd);
    assert_non_null(j);
    assert_int_equal(wait_wake(efd), 1);
    assert_true(guard_job_done(j));
    assert_int_equal(guard_job_result(j, &d, &cacheable), 0);
    assert_int_equal(d.verdict, GUARD_DENY);
    assert_string_equal(d.rule, "deny:drop");
    assert_true(cacheable);
    guard_job_release(j); /* done: freed */

    /* the text is copied at submit: the caller's buffer may change right after */
    char buf[] = "SELECT 1";
    j = guard_pool_submit(pool, p, buf, sizeof buf - 1, -1);
    memcpy(buf, "DROP  t!", 8);
    for (int i = 0; i < BOUND_MS && !guard_job_done(j); i++)
        sleep_ms(1);
    assert_int_equal(guard_job_result(j, &d, &cacheable), 0);
    assert_int_equal(d.verdict, GUARD_ALLOW);
    guard_job_release(j);
    guard_policy_free(p);
    guard_pool_free(pool);
    close(efd);
}

/* The job keeps the policy alive after its creator (a reload) dropped it. */
static void test_job_holds_policy(void **state)
{
    (void)state;
    struct guard_pool *pool = new_pool(1, 0);
    struct guard_policy *p = gt_policy("delete", NULL, NULL, false);
    int efd = eventfd(0, EFD_NONBLOCK);
    struct guard_decision d;
    bool c;

    guard_pool_hold(pool, true);
    struct guard_job *j = guard_pool_submit(pool, p, "DELETE FROM t", 13, efd);
    assert_non_null(j);
    guard_policy_free(p);
    guard_pool_hold(pool, false);
    assert_int_equal(wait_wake(efd), 1);
    assert_int_equal(guard_job_result(j, &d, &c), 0);
    assert_int_equal(d.verdict, GUARD_DENY);
    guard_job_release(j);
    guard_pool_free(pool);
    close(efd);
}

static void test_release_queued_and_running(void **state)
{
    (void)state;
    struct guard_pool *pool = new_pool(1, 0);
    struct guard_policy *p = gt_policy("drop", NULL, NULL, false);
    int efd = eventfd(0, EFD_NONBLOCK);
    struct guard_decision d;
    bool c;

    /* queued: removed, never runs, never wakes */
    guard_pool_hold(pool, true);
    struct guard_job *a = guard_pool_submit(pool, p, "SELECT 1", 8, efd);
    struct guard_job *b = guard_pool_submit(pool, p, "SELECT 2", 8, efd);
    assert_int_equal(guard_pool_queued(pool), 2);
    assert_int_equal(guard_job_result(a, &d, &c), -EAGAIN);
    guard_job_release(a);
    assert_int_equal(guard_pool_queued(pool), 1);
    guard_pool_hold(pool, false);
    assert_int_equal(wait_wake(efd), 1); /* b's, and only b's */
    guard_job_release(b);

    /* running: abandoned, freed by the pool when the parse ends, without a wake */
    guard_pool_gate(pool, true);
    struct guard_job *r = guard_pool_submit(pool, p, "DROP TABLE t", 12, efd);
    wait_running(pool, 1);
    assert_false(guard_job_done(r));
    guard_job_release(r);
    guard_pool_gate(pool, false);
    wait_running(pool, 0);
    /* one more job through the same thread proves the abandoned one is finished with */
    struct guard_job *last = guard_pool_submit(pool, p, "SELECT 3", 8, efd);
    assert_int_equal(wait_wake(efd), 1);
    assert_int_equal(counter_now(efd), 0);
    guard_job_release(last);
    guard_job_release(NULL);
    guard_policy_free(p);
    guard_pool_free(pool);
    close(efd);
}

static void test_queue_full(void **state)
{
    (void)state;
    struct guard_pool *pool = new_pool(1, 1000); /* queued text: at most 8 ceilings */
    struct guard_policy *p = gt_policy("drop", NULL, NULL, false);
    struct guard_job *jobs[300];
    size_t n = 0;
    char text[1001];

    memset(text, ' ', 1000);
    memcpy(text, "SELECT 1", 8);
    text[1000] = '\0';
    guard_pool_hold(pool, true);
    while (n < 300 && (jobs[n] = guard_pool_submit(pool, p, text, 1000, -1)) != NULL)
        n++;
    assert_int_equal(n, 8);
    /* small texts fill the job count instead */
    while (n < 300 && (jobs[n] = guard_pool_submit(pool, p, "", 0, -1)) != NULL)
        n++;
    assert_int_equal(n, 256);
    assert_null(guard_pool_submit(pool, p, "", 0, -1));
    for (size_t i = 0; i < n; i++)
        guard_job_release(jobs[i]);
    assert_int_equal(guard_pool_queued(pool), 0);
    guard_pool_hold(pool, false);
    guard_policy_free(p);
    guard_pool_free(pool);
}

static void test_stop_with_jobs_queued(void **state)
{
    (void)state;
    struct guard_pool *pool = new_pool(2, 0);
    struct guard_policy *p = gt_policy("drop", NULL, NULL, false);
    int efd = eventfd(0, EFD_NONBLOCK);
    struct guard_job *j[3];
    struct guard_decision d;
    bool c;

    guard_pool_hold(pool, true);
    for (int i = 0; i < 3; i++)
        assert_non_null(j[i] = guard_pool_submit(pool, p, "DROP TABLE t", 12, efd));
    guard_policy_free(p); /* the jobs hold it */
    guard_pool_free(pool);
    assert_int_equal(counter_now(efd), 3);
    for (int i = 0; i < 3; i++) {
        assert_true(guard_job_done(j[i]));
        assert_int_equal(guard_job_result(j[i], &d, &c), -ECANCELED);
        guard_job_release(j[i]);
    }
    close(efd);

    /* a job released while running when the pool stops is freed once */
    pool = new_pool(1, 0);
    p = gt_policy("drop", NULL, NULL, false);
    guard_pool_gate(pool, true);
    struct guard_job *r = guard_pool_submit(pool, p, "SELECT 1", 8, -1);
    wait_running(pool, 1);
    guard_job_release(r);
    guard_pool_free(pool); /* stop opens the gate: the thread finishes and frees r */
    guard_policy_free(p);
}

/* A thread on a stack of exactly guard_parse_stack_bytes() with a guard page below. */
static void *touch(void *arg)
{
    volatile char buf[64 << 10];
    buf[0] = 1;
    buf[sizeof buf - 1] = 2;
    *(int *)arg = buf[0] + buf[sizeof buf - 1];
    return NULL;
}

static void test_stack_thread(void **state)
{
    (void)state;
    struct guard_stack s;
    pthread_t th;
    int out = 0;
    assert_int_equal(guard_stack_alloc(&s, guard_parse_stack_bytes(64000)), 0);
    assert_true(s.size >= guard_parse_stack_bytes(64000));
    assert_int_equal(guard_thread_start(&th, &s, touch, &out), 0);
    pthread_join(th, NULL);
    assert_int_equal(out, 3);
    guard_stack_free(&s);
    assert_int_equal(guard_stack_alloc(&s, SIZE_MAX), -ENOMEM);
    char err[128];
    assert_null(guard_pool_new(0, 0, err, sizeof err));
    assert_non_null(strstr(err, "parser threads"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_submit_done_wake),           cmocka_unit_test(test_job_holds_policy),
        cmocka_unit_test(test_release_queued_and_running), cmocka_unit_test(test_queue_full),
        cmocka_unit_test(test_stop_with_jobs_queued),      cmocka_unit_test(test_stack_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
