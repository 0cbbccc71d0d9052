/* The event loop. Invariants: a watch is registered with epoll at most once (its fd); a timer
 * with slot != 0 sits at heap[slot - 1]; a task with list set is on exactly one of the two
 * task lists (the batch being run, or the next one). */
#include "loop.h"
#include "netio.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define LOOP_MAX_EVENTS 256

struct task_list {
    struct loop_task *head, *tail;
};

struct loop {
    int epfd;
    int wake_fd;
    struct loop_watch wake_watch;
    void (*wake_fn)(void *arg);
    void *wake_arg;
    struct loop_timer **heap;
    size_t nheap, capheap;
    struct task_list ready; /* scheduled for the next batch */
    struct task_list batch; /* the batch running now */
    struct loop_waiter *waiters;
    int64_t now_ms; /* read once a turn, after the wait: see loop_now_ms() */
};

static void on_wake_fd(struct loop_watch *w, uint32_t events);

struct loop *loop_new(void)
{
    struct loop *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    l->wake_watch.fn = on_wake_fd;
    l->now_ms = netio_now_ms();
    if (l->epfd < 0 || l->wake_fd < 0 ||
        loop_watch_add(l, &l->wake_watch, l->wake_fd, EPOLLIN) != 0) {
        loop_free(l);
        return NULL;
    }
    return l;
}

void loop_free(struct loop *l)
{
    if (!l)
        return;
    if (l->epfd >= 0)
        close(l->epfd);
    if (l->wake_fd >= 0)
        close(l->wake_fd);
    free(l->heap);
    free(l);
}

int loop_watch_add(struct loop *l, struct loop_watch *w, int fd, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = w};
    w->fd = fd;
    return epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) ? -errno : 0;
}

int loop_watch_mod(struct loop *l, struct loop_watch *w, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = w};
    return epoll_ctl(l->epfd, EPOLL_CTL_MOD, w->fd, &ev) ? -errno : 0;
}

void loop_watch_del(struct loop *l, struct loop_watch *w)
{
    if (w->fd >= 0)
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    w->fd = -1;
}

/* ---------- timers: a binary min-heap of pointers ---------- */

static void heap_place(struct loop *l, size_t i, struct loop_timer *t)
{
    l->heap[i] = t;
    t->slot = i + 1;
}

static void sift_up(struct loop *l, size_t i)
{
    struct loop_timer *t = l->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (l->heap[parent]->when_ms <= t->when_ms)
            break;
        heap_place(l, i, l->heap[parent]);
        i = parent;
    }
    heap_place(l, i, t);
}

static void sift_down(struct loop *l, size_t i)
{
    struct loop_timer *t = l->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= l->nheap)
            break;
        if (c + 1 < l->nheap && l->heap[c + 1]->when_ms < l->heap[c]->when_ms)
            c++;
        if (l->heap[c]->when_ms >= t->when_ms)
            break;
        heap_place(l, i, l->heap[c]);
        i = c;
    }
    heap_place(l, i, t);
}

int loop_timer_set(struct loop *l, struct loop_timer *t, int64_t when_ms)
{
    if (t->slot) {
        int64_t old = t->when_ms;
        t->when_ms = when_ms;
        if (when_ms < old)
            sift_up(l, t->slot - 1);
        else if (when_ms > old)
            sift_down(l, t->slot - 1);
        return 0;
    }
    if (l->nheap == l->capheap) {
        size_t cap = l->capheap ? l->capheap * 2 : 64;
        struct loop_timer **n = realloc(l->heap, cap * sizeof(*n));
        if (!n)
            return -ENOMEM;
        l->heap = n;
        l->capheap = cap;
    }
    t->when_ms = when_ms;
    heap_place(l, l->nheap++, t);
    sift_up(l, l->nheap - 1);
    return 0;
}

void loop_timer_cancel(struct loop *l, struct loop_timer *t)
{
    if (!t->slot)
        return;
    size_t i = t->slot - 1;
    t->slot = 0;
    struct loop_timer *last = l->heap[--l->nheap];
    if (i == l->nheap)
        return;
    heap_place(l, i, last);
    sift_up(l, i);
    sift_down(l, last->slot - 1);
}

int loop_next_timeout(const struct loop *l, int cap_ms)
{
    if (l->nheap == 0)
        return cap_ms;
    /* the clock, not the turn's time: work between the turn's wait and this one (a long
     * start-up before the first turn) would make every timer late by as much */
    int64_t d = l->heap[0]->when_ms - netio_now_ms();
    if (d < 0)
        d = 0;
    if (cap_ms >= 0 && d > cap_ms)
        d = cap_ms;
    return (int)d;
}

int64_t loop_now_ms(const struct loop *l)
{
    return l->now_ms;
}

static void run_timers(struct loop *l)
{
    int64_t now = l->now_ms;
    /* a timer re-armed by its callback for "now" waits for the next turn: no livelock */
    for (size_t n = l->nheap; n > 0 && l->nheap > 0 && l->heap[0]->when_ms <= now; n--) {
        struct loop_timer *t = l->heap[0];
        loop_timer_cancel(l, t);
        t->fn(t);
    }
}

/* ---------- tasks ---------- */

static void list_push(struct task_list *q, struct loop_task *t)
{
    t->list = q;
    t->next = NULL;
    t->prev = q->tail;
    if (q->tail)
        q->tail->next = t;
    else
        q->head = t;
    q->tail = t;
}

static void list_unlink(struct task_list *q, struct loop_task *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        q->head = t->next;
    if (t->next)
        t->next->prev = t->prev;
    else
        q->tail = t->prev;
    t->prev = t->next = NULL;
    t->list = NULL;
}

void loop_task_schedule(struct loop *l, struct loop_task *t)
{
    if (!t->list)
        list_push(&l->ready, t);
}

void loop_task_cancel(struct loop *l, struct loop_task *t)
{
    (void)l;
    if (t->list)
        list_unlink(t->list, t);
}

static void run_tasks(struct loop *l)
{
    /* the batch is what was queued before it started; tasks scheduled while it runs (even
     * one that reschedules itself) wait for the next turn */
    l->batch = l->ready;
    l->ready.head = l->ready.tail = NULL;
    for (struct loop_task *t = l->batch.head; t; t = t->next)
        t->list = &l->batch;
    while (l->batch.head) {
        struct loop_task *t = l->batch.head;
        list_unlink(&l->batch, t);
        t->fn(t);
    }
}

/* ---------- wake-ups ---------- */

void loop_wake(struct loop *l)
{
    uint64_t one = 1;
    ssize_t r = write(l->wake_fd, &one, sizeof(one));
    (void)r; /* EAGAIN: the counter is saturated, a wake-up is pending anyway */
}

int loop_wake_fd(const struct loop *l)
{
    return l->wake_fd;
}

void loop_set_wake_handler(struct loop *l, void (*fn)(void *arg), void *arg)
{
    l->wake_fn = fn;
    l->wake_arg = arg;
}

void loop_wait_wake(struct loop *l, struct loop_waiter *w)
{
    if (w->armed)
        return;
    w->armed = true;
    w->prev = NULL;
    w->next = l->waiters;
    if (l->waiters)
        l->waiters->prev = w;
    l->waiters = w;
}

void loop_waiter_cancel(struct loop *l, struct loop_waiter *w)
{
    if (!w->armed)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        l->waiters = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->armed = false;
    w->prev = w->next = NULL;
}

static void on_wake_fd(struct loop_watch *w, uint32_t events)
{
    (void)events;
    struct loop *l = (struct loop *)((char *)w - offsetof(struct loop, wake_watch));
    uint64_t v;
    ssize_t r = read(l->wake_fd, &v, sizeof(v));
    (void)r;
    struct loop_waiter *list = l->waiters;
    l->waiters = NULL;
    while (list) {
        struct loop_waiter *next = list->next;
        list->armed = false;
        list->prev = list->next = NULL;
        loop_task_schedule(l, list->task);
        list = next;
    }
    if (l->wake_fn)
        l->wake_fn(l->wake_arg);
}

int loop_run_once(struct loop *l, int timeout_ms)
{
    struct epoll_event evs[LOOP_MAX_EVENTS];
    if (l->ready.head)
        timeout_ms = 0;
    else
        timeout_ms = loop_next_timeout(l, timeout_ms);
    int n = epoll_wait(l->epfd, evs, LOOP_MAX_EVENTS, timeout_ms);
    if (n < 0) {
        if (errno != EINTR)
            return -errno;
        n = 0;
    }
    netio_turn_begin();
    l->now_ms = netio_turn_ms();
    for (int i = 0; i < n; i++) {
        struct loop_watch *w = evs[i].data.ptr;
        w->fn(w, evs[i].events);
    }
    run_timers(l);
    run_tasks(l);
    return n;
}
