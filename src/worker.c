#include "worker.h"
#include "guard.h"
#include "log.h"
#include "netio.h"
#include "server.h"
#include "session_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define MAX_EVENTS 256
#define TICK_MS    100 /* timer scan period: deadlines are checked at this granularity */

/* epoll data: the session pointer with the low bit telling client (0) from upstream (1);
 * the worker's wake-up eventfd and the shutdown eventfd use sentinel values. */
#define TAG_WAKE     ((uint64_t)1 << 62)
#define TAG_SHUTDOWN ((uint64_t)1 << 61)

struct worker {
    struct server *srv;
    pthread_t th;
    int epfd;
    int wake_fd;
    pthread_mutex_t mu;
    struct session *incoming; /* handed over by the acceptor, guarded by mu */
    struct session *sessions; /* owned; touched only by this worker's thread */
    struct session *ready;    /* driven after the current batch of events */
    bool shutdown_seen;
};

int worker_watch(struct worker *w, int fd, struct session *s, int which, uint32_t events, int add)
{
    struct epoll_event ev = {.events =
                                 events ? events : (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET),
                             .data.u64 = (uint64_t)(uintptr_t)s | (uint64_t)which};
    return epoll_ctl(w->epfd, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev) ? -errno : 0;
}

void worker_unwatch(struct worker *w, int fd)
{
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, fd, NULL);
}

int worker_wake_fd(struct worker *w)
{
    return w->wake_fd;
}

static void mark_ready(struct worker *w, struct session *s)
{
    if (s->queued)
        return;
    s->queued = true;
    s->ready_next = w->ready;
    w->ready = s;
}

static void list_add(struct worker *w, struct session *s)
{
    s->prev = NULL;
    s->next = w->sessions;
    if (w->sessions)
        w->sessions->prev = s;
    w->sessions = s;
}

static void list_del(struct worker *w, struct session *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        w->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
}

static void take_incoming(struct worker *w)
{
    uint64_t v;
    ssize_t r = read(w->wake_fd, &v, sizeof(v));
    (void)r;
    pthread_mutex_lock(&w->mu);
    struct session *s = w->incoming;
    w->incoming = NULL;
    pthread_mutex_unlock(&w->mu);
    while (s) {
        struct session *next = s->next;
        s->w = w;
        list_add(w, s);
        if (worker_watch(w, s->cli.fd, s, 0, 0, 1)) {
            LOG_ERROR(s->id, "epoll_failed", "%s", strerror(errno));
            s->phase = PH_DONE;
        }
        if (w->shutdown_seen)
            s->shutdown_seen = true;
        mark_ready(w, s);
        s = next;
    }
}

static void on_event(struct worker *w, struct epoll_event *ev)
{
    struct session *s = (struct session *)(uintptr_t)(ev->data.u64 & ~(uint64_t)1);
    if (s->phase == PH_DONE)
        return;
    uint32_t e = ev->events;
    bool err = e & (EPOLLERR | EPOLLHUP);
    if (ev->data.u64 & 1) {
        s->up_in |= (e & EPOLLIN) || err;
        s->up_out |= (e & EPOLLOUT) || err;
        s->up_hup |= (e & EPOLLRDHUP) || err;
    } else {
        s->cli_in |= (e & EPOLLIN) || err;
        s->cli_out |= (e & EPOLLOUT) || err;
        s->cli_hup |= (e & EPOLLRDHUP) || err;
    }
    mark_ready(w, s);
}

static void reap(struct worker *w)
{
    struct session *s = w->sessions;
    while (s) {
        struct session *next = s->next;
        if (s->phase == PH_DONE) {
            list_del(w, s);
            session_destroy(s);
        }
        s = next;
    }
}

/* A session that stopped with work left (s->requeue) runs again after the other ready ones. */
static void requeue_if_asked(struct worker *w, struct session *s)
{
    if (s->requeue && s->phase != PH_DONE) {
        s->requeue = false;
        mark_ready(w, s);
    }
}

static void scan_timers(struct worker *w, bool shutdown)
{
    int64_t now = netio_now_ms();
    for (struct session *s = w->sessions; s; s = s->next) {
        if (shutdown)
            s->shutdown_seen = true;
        session_timers(s, now);
        requeue_if_asked(w, s);
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct server *srv = w->srv;
    struct epoll_event evs[MAX_EVENTS];
    int64_t last_scan = netio_now_ms();
    bool any_done = false;
    for (;;) {
        int n = epoll_wait(w->epfd, evs, MAX_EVENTS, w->ready ? 0 : TICK_MS);
        if (n < 0 && errno != EINTR) {
            LOG_ERROR(0, "epoll_wait_failed", "%s", strerror(errno));
            break;
        }
        bool shutdown_now = false;
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == TAG_WAKE) {
                take_incoming(w);
                /* a delivered cancel may unblock a session's next statement */
                for (struct session *s = w->sessions; s; s = s->next)
                    if (s->cancel_ticket)
                        mark_ready(w, s);
            } else if (evs[i].data.u64 == TAG_SHUTDOWN)
                shutdown_now = !w->shutdown_seen;
            else
                on_event(w, &evs[i]);
        }
        /* a batch at a time: sessions re-queued while it runs wait for the next turn */
        struct session *batch = w->ready;
        w->ready = NULL;
        while (batch) {
            struct session *s = batch;
            batch = s->ready_next;
            s->queued = false;
            session_drive(s);
            any_done |= s->phase == PH_DONE;
            requeue_if_asked(w, s);
        }
        int64_t now = netio_now_ms();
        if (shutdown_now || now - last_scan >= TICK_MS) {
            w->shutdown_seen |= shutdown_now;
            scan_timers(w, shutdown_now);
            last_scan = now;
            any_done = true;
        }
        if (any_done) {
            reap(w);
            any_done = false;
        }
        if (w->shutdown_seen && !w->sessions && atomic_load(&srv->shutting_down) != SERVER_RUNNING)
            break;
    }
    return NULL;
}

int worker_pool_start(struct server *srv, int n)
{
    srv->workers = calloc((size_t)n, sizeof(struct worker));
    if (!srv->workers)
        return -ENOMEM;
    for (int i = 0; i < n; i++) {
        struct worker *w = &srv->workers[i];
        w->srv = srv;
        pthread_mutex_init(&w->mu, NULL);
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (w->epfd < 0 || w->wake_fd < 0)
            return -errno;
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_WAKE};
        epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wake_fd, &ev);
        /* edge-triggered: the shutdown eventfd stays readable, each worker sees it once */
        struct epoll_event sev = {.events = EPOLLIN | EPOLLET, .data.u64 = TAG_SHUTDOWN};
        epoll_ctl(w->epfd, EPOLL_CTL_ADD, srv->shutdown_efd, &sev);
        /* libpg_query's tree output recurses per nesting level: the stack is sized for the
         * largest text the guard parses (virtual memory; only touched pages count) */
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, guard_parse_stack_bytes(srv->rt->cfg.max_parse_size));
        int rc = pthread_create(&w->th, &attr, worker_main, w);
        pthread_attr_destroy(&attr);
        if (rc)
            return -rc;
        srv->nworkers++;
    }
    return 0;
}

void worker_pool_join(struct server *srv)
{
    for (int i = 0; i < srv->nworkers; i++) {
        pthread_join(srv->workers[i].th, NULL);
        close(srv->workers[i].epfd);
        close(srv->workers[i].wake_fd);
    }
    free(srv->workers);
    srv->workers = NULL;
    srv->nworkers = 0;
}

void worker_assign(struct server *srv, struct session *s)
{
    unsigned i = atomic_fetch_add(&srv->next_worker, 1) % (unsigned)srv->nworkers;
    struct worker *w = &srv->workers[i];
    pthread_mutex_lock(&w->mu);
    s->next = w->incoming;
    w->incoming = s;
    pthread_mutex_unlock(&w->mu);
    uint64_t one = 1;
    ssize_t r = write(w->wake_fd, &one, sizeof(one));
    (void)r;
}
