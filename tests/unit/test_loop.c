/* The event loop: timers in order, moved and canceled; tasks after events and timers, one
 * round at a time; wake-ups from another thread; watches added, changed and removed. Timers
 * are set in the past so nothing waits on the clock, but for one that checks the turn's time
 * against the deadline its wait was for. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "loop.h"
#include "netio.h"

#define MAX_EVENTS 512

/* What ran, in order: ids of timers, tasks and watches. */
struct trace {
    int ids[MAX_EVENTS];
    int n;
};

static void note(struct trace *tr, int id)
{
    assert_true(tr->n < MAX_EVENTS);
    tr->ids[tr->n++] = id;
}

struct timer_rec {
    struct loop_timer t;
    struct loop *l;
    struct trace *tr;
    int id;
    bool rearm;
};

struct task_rec {
    struct loop_task t;
    struct loop *l;
    struct trace *tr;
    int id;
    struct loop_task *then;   /* scheduled from inside this task */
    struct loop_task *cancel; /* canceled from inside this task */
};

struct watch_rec {
    struct loop_watch w;
    struct trace *tr;
    int id;
    uint32_t events;
    struct loop *l;
    struct loop_task *then;
};

#define CONTAINER(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static void on_timer(struct loop_timer *t)
{
    struct timer_rec *r = CONTAINER(t, struct timer_rec, t);
    note(r->tr, r->id);
    if (r->rearm)
        loop_timer_set(r->l, t, netio_now_ms() - 1);
}

static void on_task(struct loop_task *t)
{
    struct task_rec *r = CONTAINER(t, struct task_rec, t);
    note(r->tr, r->id);
    if (r->cancel)
        loop_task_cancel(r->l, r->cancel);
    if (r->then)
        loop_task_schedule(r->l, r->then);
}

static void on_watch(struct loop_watch *w, uint32_t events)
{
    struct watch_rec *r = CONTAINER(w, struct watch_rec, w);
    r->events = events;
    note(r->tr, r->id);
    if (r->then)
        loop_task_schedule(r->l, r->then);
}

static int setup(void **state)
{
    *state = loop_new();
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    loop_free(*state);
    return 0;
}

static void assert_trace(const struct trace *tr, const int *want, int n)
{
    assert_int_equal(tr->n, n);
    for (int i = 0; i < n; i++)
        assert_int_equal(tr->ids[i], want[i]);
}

static void timer_init(struct timer_rec *r, struct loop *l, struct trace *tr, int id)
{
    *r = (struct timer_rec){.l = l, .tr = tr, .id = id};
    r->t.fn = on_timer;
}

static void test_timers_fire_in_deadline_order(void **state)
{
    struct loop *l = *state;
    struct trace tr = {0};
    struct timer_rec t[3];
    int64_t now = netio_now_ms();
    int64_t when[3] = {now - 10, now - 30, now - 20};
    for (int i = 0; i < 3; i++) {
        timer_init(&t[i], l, &tr, i);
        assert_int_equal(loop_timer_set(l, &t[i].t, when[i]), 0);
        assert_true(loop_timer_armed(&t[i].t));
    }
    assert_int_equal(loop_next_timeout(l, 1000), 0); /* due already */
    loop_run_once(l, 0);
    assert_trace(&tr, (int[]){1, 2, 0}, 3);
    for (int i = 0; i < 3; i++)
        assert_false(loop_timer_armed(&t[i].t));
    assert_int_equal(loop_next_timeout(l, 1000), 1000); /* none left */
}

/* The turn's time is read after its wait: the timer the wait was for is due by it. */
static void test_turn_time_is_read_after_the_wait(void **state)
{
    struct loop *l = *state;
    struct trace tr = {0};
    struct timer_rec t;
    timer_init(&t, l, &tr, 1);
    int64_t when = netio_now_ms() + 5;
    assert_int_equal(loop_timer_set(l, &t.t, when), 0);
    for (int i = 0; i < 100 && tr.n == 0; i++)
        loop_run_once(l, -1);
    assert_trace(&tr, (int[]){1}, 1);
    assert_true(loop_now_ms(l) >= when);
    assert_true(loop_now_ms(l) <= netio_now_ms());
}

static void *turn_of_a_thread_without_loop(void *arg)
{
    int64_t *out = arg;
    out[0] = netio_now_us();
    out[1] = netio_turn_us();
    return NULL;
}

/* Statements are timed by their turn's time: it stands still within a turn, is the turn's
 * loop_now_ms, and a thread that runs no loop gets the clock itself instead of a zero. */
static void test_turn_time_is_shared_by_the_turn(void **state)
{
    struct loop *l = *state;
    loop_run_once(l, 0);
    int64_t turn = netio_turn_us();
    assert_int_equal(turn / 1000, loop_now_ms(l));
    assert_int_equal(netio_turn_ms(), loop_now_ms(l));
    int64_t spin = netio_now_us() + 2000;
    while (netio_now_us() < spin)
        ;
    assert_int_equal(netio_turn_us(), turn); /* still the same turn */
    loop_run_once(l, 0);
    assert_true(netio_turn_us() >= spin);

    int64_t seen[2];
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, turn_of_a_thread_without_loop, seen), 0);
    pthread_join(th, NULL);
    assert_true(seen[1] >= seen[0]);
    assert_true(seen[1] >= spin);
}

/* The wait for a timer is measured from the clock, not from the last turn's time: work done
 * since that turn (here: before the first one) must not make the timer late. */
static void test_timer_wait_counts_from_the_clock(void **state)
{
    struct loop *l = *state;
    struct trace tr = {0};
    struct timer_rec t;
    timer_init(&t, l, &tr, 1);
    int64_t busy_until = netio_now_ms() + 50;
    while (netio_now_ms() < busy_until)
        ;
    int64_t when = netio_now_ms() + 1200;
    assert_int_equal(loop_timer_set(l, &t.t, when), 0);
    assert_true(loop_next_timeout(l, -1) <= 1200);
    loop_timer_cancel(l, &t.t);
}

static void test_timer_moved_earlier_and_later(void **state)
{
    struct loop *l = *state;
    struct trace tr = {0};
    struct timer_rec a, b;
    int64_t now = netio_now_ms();
    timer_init(&a, l, &tr, 1);
    timer_init(&b, l, &tr, 2);
    loop_timer_set(l, &a.t, now + 3600 * 1000);
    loop_timer_set(l, &b.t, now - 5);
    loop_timer_set(l, &a.t, now - 10);          /* earlier: now first */
    loop_timer_set(l, &b.t, now + 3600 * 1000); /* later: not due */
    loop_run_once(l, 0);
    assert_trace(&tr, (int[]){1}, 1);
    assert_true(loop_timer_armed(&b.t));
    int wait = loop_next_timeout(l, -1);
    assert_true(wait > 3500 * 1000 && wait <= 3600 * 1000);
    loop_timer_cancel(l, &b.t);
}

static void test_timer_cancel(void **state)
{
    struct loop *l = *state;
    struct trace tr = {0};
    struct timer_rec a, b;
    timer_init(&a, l, &tr, 1);
    timer_init(&b, l, &tr, 2);
    loop_timer_set(l, &a.t, netio_now_ms() - 2);
    loop_timer_set(l, &b.t, netio_now_ms() - 1);
    loop_timer_cancel(l, &a.t);
    loop_timer_cancel(l, &a.t); /* twice: harmless */
    assert_false(loop_timer_armed(&a.t));
    loop_run_once(l, 0);
    assert_trace(&tr, (int[]){2}, 1);
}

/* Many timers, a third canceled from the middle of the heap: the rest fire in order. */
static void test_timer_heap_order_with_cancels(void **state)
{
    struct loop *l = *state;
    struct trace tr = {0};
    enum { N = 300 };
    struct timer_rec *t = calloc(N, sizeof(*t));
    int64_t base = netio_now_ms() - 100000;
    for (int i = 0; i < N; i++) {
        timer_init(&t[i], l, &tr, i);
        loop_timer_set(l, &t[i].t, base + (i * 7919) % 1000); /* distinct: 919 is coprime to 1000 */
    }
    for (int i = 0; i < N; i += 3)
        loop_timer_cancel(l, &t[i].t);
    loop_run_once(l, 0);
    assert_int_equal(tr.n, N - N / 3);
    for (int i = 0; i < tr.n; i++) {
        assert_int_not_equal(tr.ids[i] % 3, 0);
        if (i > 0)
            assert_true(t[tr.ids[i - 1]].t.when_ms <= t[tr.ids[i]].t.when_ms);
    }
    free(t);
}

static void test_timer_rearmed_by_callback_waits_for_next_turn(void **state)
{
    struct loop *l = *state;
    struct trace tr = {0};
    struct timer_rec a;
    timer_init(&a, l, &tr, 1);
    a.rearm = true;
    loop_timer_set(l, &a.t, netio_now_ms() - 1);
    loop_run_once(l, 0);
    assert_int_equal(tr.n, 1); /* not a livelock */
    loop_run_once(l, 0);
    assert_int_equal(tr.n, 2);
    loop_timer_cancel(l, &a.t);
}

static void task_init(struct task_rec *r, struct loop *l, struct trace *tr, int id)
{
    *r = (struct task_rec){.l = l, .tr = tr, .id = id};
    r->t.fn = on_task;
}

static void test_tasks_run_after_events_and_timers(void **state)
{
    struct loop *l = *state;
    struct trace tr = {0};
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    struct task_rec task;
    struct timer_rec tm;
    struct watch_rec w = {.tr = &tr, .id = 1, .l = l, .then = &task.t};
    w.w.fn = on_watch;
    task_init(&task, l, &tr, 3);
    timer_init(&tm, l, &tr, 2);
    assert_int_equal(loop_watch_add(l, &w.w, fds[0], EPOLLIN), 0);
    loop_timer_set(l, &tm.t, netio_now_ms() - 1);
    assert_int_equal(write(fds[1], "x", 1), 1);
    assert_int_equal(loop_run_once(l, 1000), 1);
    assert_trace(&tr, (int[]){1, 2, 3}, 3); /* event, timer, then the task it scheduled */
    loop_watch_del(l, &w.w);
    close(fds[0]);
    close(fds[1]);
}

static void test_task_scheduled_by_task_waits_next_round(void **state)
{
    struct loop *l = *state;
    struct trace tr = {0};
    struct task_rec a, b, c;
    task_init(&a, l, &tr, 1);
    task_init(&b, l, &tr, 2);
    task_init(&c, l, &tr, 3);
    a.then = &a.t; /* a busy owner that always has more to do */
    b.then = &c.t;
    loop_task_schedule(l, &a.t);
    loop_task_schedule(l, &b.t);
    loop_task_schedule(l, &b.t); /* already queued: once */
    loop_run_once(l, 0);
    assert_trace(&tr, (int[]){1, 2}, 2);
    loop_run_once(l, 0);
    assert_trace(&tr, (int[]){1, 2, 1, 3}, 4);
    loop_task_cancel(l, &a.t);
    loop_run_once(l, 0);
    assert_int_equal(tr.n, 4);
}

static void test_task_canceled_by_earlier_task_does_not_run(void **state)
{
    struct loop *l = *state;
    struct trace tr = {0};
    struct task_rec a, b;
    task_init(&a, l, &tr, 1);
    task_init(&b, l, &tr, 2);
    a.cancel = &b.t; /* its owner went away while the batch ran */
    loop_task_schedule(l, &a.t);
    loop_task_schedule(l, &b.t);
    loop_run_once(l, 0);
    assert_trace(&tr, (int[]){1}, 1);
    assert_null(b.t.list);
}

static int wake_calls;

static void on_wake(void *arg)
{
    (void)arg;
    wake_calls++;
}

static void *wake_from_thread(void *arg)
{
    loop_wake(arg);
    return NULL;
}

/* Runs turns until the wake handler has run `want` times (bounded). */
static void run_until_woken(struct loop *l, int want)
{
    for (int i = 0; i < 100 && wake_calls < want; i++)
        loop_run_once(l, 100);
    assert_int_equal(wake_calls, want);
}

static void test_wake_from_thread_runs_handler_and_waiters_once(void **state)
{
    struct loop *l = *state;
    struct trace tr = {0};
    struct task_rec a, b, c;
    task_init(&a, l, &tr, 1);
    task_init(&b, l, &tr, 2);
    task_init(&c, l, &tr, 3);
    struct loop_waiter wa = {.task = &a.t}, wb = {.task = &b.t}, wc = {.task = &c.t};
    wake_calls = 0;
    loop_set_wake_handler(l, on_wake, NULL);
    loop_wait_wake(l, &wa);
    loop_wait_wake(l, &wa); /* armed already: once */
    loop_wait_wake(l, &wb);
    loop_wait_wake(l, &wc);
    loop_waiter_cancel(l, &wc);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, wake_from_thread, l), 0);
    run_until_woken(l, 1);
    pthread_join(th, NULL);
    assert_int_equal(tr.n, 2);
    assert_true((tr.ids[0] == 1 && tr.ids[1] == 2) || (tr.ids[0] == 2 && tr.ids[1] == 1));
    assert_false(wa.armed);
    /* one-shot: a second wake runs the handler but schedules nobody */
    assert_int_equal(pthread_create(&th, NULL, wake_from_thread, l), 0);
    run_until_woken(l, 2);
    pthread_join(th, NULL);
    assert_int_equal(tr.n, 2);
}

static void test_watch_add_mod_del_on_pipe(void **state)
{
    struct loop *l = *state;
    struct trace tr = {0};
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    struct watch_rec r = {.tr = &tr, .id = 7};
    r.w.fn = on_watch;
    assert_int_equal(loop_watch_add(l, &r.w, fds[0], EPOLLIN), 0);
    assert_int_equal(loop_watch_add(l, &r.w, fds[0], EPOLLIN), -EEXIST);
    assert_int_equal(loop_run_once(l, 0), 0); /* nothing to read */
    assert_int_equal(write(fds[1], "x", 1), 1);
    assert_int_equal(loop_run_once(l, 1000), 1);
    assert_int_equal(r.events & EPOLLIN, EPOLLIN);
    assert_int_equal(loop_watch_mod(l, &r.w, 0), 0); /* level-triggered, but not interested */
    assert_int_equal(loop_run_once(l, 0), 0);
    assert_int_equal(loop_watch_mod(l, &r.w, EPOLLIN), 0);
    assert_int_equal(loop_run_once(l, 0), 1);
    loop_watch_del(l, &r.w);
    assert_int_equal(r.w.fd, -1);
    assert_int_equal(loop_run_once(l, 0), 0);
    assert_int_equal(loop_watch_mod(l, &r.w, EPOLLIN), -EBADF);
    assert_int_equal(tr.n, 2);
    close(fds[0]);
    close(fds[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_timers_fire_in_deadline_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_turn_time_is_read_after_the_wait, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timer_moved_earlier_and_later, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timer_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timer_heap_order_with_cancels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timer_rearmed_by_callback_waits_for_next_turn, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_tasks_run_after_events_and_timers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_task_scheduled_by_task_waits_next_round, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_task_canceled_by_earlier_task_does_not_run, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_wake_from_thread_runs_handler_and_waiters_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_watch_add_mod_del_on_pipe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_turn_time_is_shared_by_the_turn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timer_wait_counts_from_the_clock, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
