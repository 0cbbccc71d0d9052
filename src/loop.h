/* An epoll event loop that knows nothing of sessions or protocols: file descriptors mapped to
 * (callback, argument) through an embedded watch, a timer heap, tasks that run after the
 * current batch of events, and wake-ups from other threads. One loop per thread; only
 * loop_wake() and loop_wake_fd() may be used from other threads. */
#ifndef PGWP_LOOP_H
#define PGWP_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;

/* Embedded in its owner (container_of through offsetof). fn runs on readiness with the
 * epoll events. */
struct loop_watch {
    int fd;
    void (*fn)(struct loop_watch *w, uint32_t events);
};

/* A one-shot deadline, embedded in its owner. when_ms is CLOCK_MONOTONIC milliseconds. */
struct loop_timer {
    int64_t when_ms;
    size_t slot; /* index in the heap + 1; 0 = not armed */
    void (*fn)(struct loop_timer *t);
};

/* Deferred work: runs once after the current batch of events. Scheduling a task from inside a
 * task defers it to the next round, after the other ready tasks: one busy owner cannot starve
 * the rest. */
struct loop_task {
    struct loop_task *prev, *next;
    void *list; /* the loop's list it is queued on; NULL = not queued */
    void (*fn)(struct loop_task *t);
};

/* Waits for the next wake-up: its task is scheduled when any thread calls loop_wake() or
 * writes loop_wake_fd() (a cancel delivered, a parse job done, room in the audit queue).
 * One-shot: re-arm to keep waiting. */
struct loop_waiter {
    struct loop_waiter *prev, *next;
    bool armed;
    struct loop_task *task;
};

struct loop *loop_new(void);
void loop_free(struct loop *l);

/* events: EPOLLIN/EPOLLOUT/EPOLLET/... as for epoll_ctl. Return 0 or -errno. */
int loop_watch_add(struct loop *l, struct loop_watch *w, int fd, uint32_t events);
int loop_watch_mod(struct loop *l, struct loop_watch *w, uint32_t events);
void loop_watch_del(struct loop *l, struct loop_watch *w);

/* Arms (or moves) a timer. Returns 0 or -ENOMEM. */
int loop_timer_set(struct loop *l, struct loop_timer *t, int64_t when_ms);
void loop_timer_cancel(struct loop *l, struct loop_timer *t);
static inline bool loop_timer_armed(const struct loop_timer *t)
{
    return t->slot != 0;
}

void loop_task_schedule(struct loop *l, struct loop_task *t);
/* Removes a queued task (its owner is going away). */
void loop_task_cancel(struct loop *l, struct loop_task *t);

void loop_wait_wake(struct loop *l, struct loop_waiter *w);
void loop_waiter_cancel(struct loop *l, struct loop_waiter *w);

/* Thread-safe: makes the loop run its wake handler and schedule its waiters soon. */
void loop_wake(struct loop *l);
/* An eventfd that wakes the loop when written (for modules that signal with write(2)). */
int loop_wake_fd(const struct loop *l);
/* Runs on the loop's thread after a wake-up (any number of wakes may fold into one call). */
void loop_set_wake_handler(struct loop *l, void (*fn)(void *arg), void *arg);

/* One turn: waits up to timeout_ms (-1 = until something happens; 0 when tasks are queued),
 * dispatches events, runs due timers, then the tasks queued so far. Returns the number of
 * events, or -errno on a failure of epoll itself. */
int loop_run_once(struct loop *l, int timeout_ms);
/* CLOCK_MONOTONIC milliseconds as read once in this turn, after its wait: what its events,
 * timers and tasks measure deadlines by. A turn is short next to any timeout, and reading the
 * clock in each of them cost more than a statement's own bookkeeping. */
int64_t loop_now_ms(const struct loop *l);

/* Milliseconds until the next timer (-1 = none), capped at cap_ms when cap_ms >= 0. */
int loop_next_timeout(const struct loop *l, int cap_ms);

#endif
