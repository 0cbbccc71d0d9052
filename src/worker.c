#include "worker.h"
#include "admin.h"
#include "guard_fingerprint.h"
#include "log.h"
#include "loop.h"
#include "session.h"
#include "startup_gate.h"
#include "stmt_stats.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define IDLE_WAIT_MS 1000 /* a loop with nothing due still checks for its end this often */

struct incoming {
    struct incoming *next;
    int fd;
    struct session_accept acc;
};

/* A question of the console's (admin.h), queued on one worker. */
struct asked {
    struct asked *next;
    struct admin_ask *ask;
};

struct worker {
    struct worker_pool *pool;
    pthread_t th;
    struct loop *loop;
    struct session_env env;
    struct loop_watch shutdown_watch;
    pthread_mutex_t mu;
    struct incoming *incoming; /* handed over by the acceptor, guarded by mu */
    struct asked *asked;       /* questions to answer, guarded by mu */
    int index;
    struct session_link sessions; /* circular list with a sentinel */
    struct session_link dead;     /* finished, freed after the current turn */
    size_t nsessions;
    bool shutdown_seen;
};

struct worker_pool {
    struct worker *w;
    int n;
    int started;
    atomic_uint next;
};

static void link_init(struct session_link *l)
{
    l->prev = l->next = l;
}

static void link_add(struct session_link *head, struct session_link *l)
{
    l->next = head->next;
    l->prev = head;
    head->next->prev = l;
    head->next = l;
}

static void link_del(struct session_link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    l->prev = l->next = l;
}

static void on_finished(void *host, struct session *s)
{
    struct worker *w = host;
    struct session_link *l = session_link(s);
    link_del(l);
    link_add(&w->dead, l);
    w->nsessions--;
}

static void free_dead(struct worker *w)
{
    while (w->dead.next != &w->dead) {
        struct session_link *l = w->dead.next;
        link_del(l);
        session_free(session_from_link(l));
    }
}

/* Answers the questions queued so far, oldest first, on this worker's thread. */
static void answer_asked(struct worker *w, struct asked *list, bool answer)
{
    struct asked *rev = NULL;
    while (list) {
        struct asked *next = list->next;
        list->next = rev;
        rev = list;
        list = next;
    }
    while (rev) {
        struct asked *next = rev->next;
        if (answer)
            rev->ask->answer(rev->ask, w->index, &w->env, &w->sessions);
        admin_ask_answered(rev->ask);
        free(rev);
        rev = next;
    }
}

/* The acceptor pushes newest first; sessions start in arrival order, so a burst accepted in
 * one batch is not served backwards (the --max-startup-* caps would count the newest first
 * and refuse the earliest). */
static struct incoming *take_in_order(struct worker *w)
{
    pthread_mutex_lock(&w->mu);
    struct incoming *newest = w->incoming, *in = NULL;
    w->incoming = NULL;
    pthread_mutex_unlock(&w->mu);
    while (newest) {
        struct incoming *next = newest->next;
        newest->next = in;
        in = newest;
        newest = next;
    }
    return in;
}

static void take_incoming(void *arg)
{
    struct worker *w = arg;
    pthread_mutex_lock(&w->mu);
    struct asked *asked = w->asked;
    w->asked = NULL;
    pthread_mutex_unlock(&w->mu);
    answer_asked(w, asked, true);
    struct incoming *in = take_in_order(w);
    while (in) {
        struct incoming *next = in->next;
        struct session *s = session_new(&w->env, w->loop, in->fd, &in->acc);
        if (s) {
            link_add(&w->sessions, session_link(s));
            w->nsessions++;
            if (w->shutdown_seen)
                session_notify_shutdown(s);
        }
        free(in);
        in = next;
    }
}

static void on_shutdown(struct loop_watch *lw, uint32_t events)
{
    (void)events;
    struct worker *w = (struct worker *)((char *)lw - offsetof(struct worker, shutdown_watch));
    w->shutdown_seen = true;
    for (struct session_link *l = w->sessions.next; l != &w->sessions; l = l->next)
        session_notify_shutdown(session_from_link(l));
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (;;) {
        int rc = loop_run_once(w->loop, IDLE_WAIT_MS);
        if (rc < 0) {
            LOG_ERROR(0, "epoll_wait_failed", "%s", strerror(-rc));
            break;
        }
        free_dead(w);
        if (w->shutdown_seen && w->nsessions == 0 &&
            atomic_load(&w->env.shutdown->mode) != SHUTDOWN_NONE) {
            pthread_mutex_lock(&w->mu);
            bool more = w->incoming != NULL || w->asked != NULL;
            pthread_mutex_unlock(&w->mu);
            if (!more)
                break;
        }
    }
    return NULL;
}

static int worker_init(struct worker *w, struct worker_pool *p, const struct session_env *tmpl,
                       int shutdown_efd, int index)
{
    w->pool = p;
    w->index = index;
    w->env = *tmpl;
    w->env.host = w;
    w->env.finished = on_finished;
    pthread_mutex_init(&w->mu, NULL);
    link_init(&w->sessions);
    link_init(&w->dead);
    w->loop = loop_new();
    w->env.stats = stmt_stats_new();
    w->env.fp_cache = guard_fp_cache_new();
    if (!w->loop || !w->env.stats || !w->env.fp_cache)
        return -ENOMEM;
    loop_set_wake_handler(w->loop, take_incoming, w);
    w->shutdown_watch.fn = on_shutdown;
    /* edge-triggered: the shutdown eventfd stays readable, each worker sees it once */
    return loop_watch_add(w->loop, &w->shutdown_watch, shutdown_efd, EPOLLIN | EPOLLET);
}

static void worker_release(struct worker *w)
{
    loop_free(w->loop);
    w->loop = NULL;
    stmt_stats_free(w->env.stats);
    w->env.stats = NULL;
    guard_fp_cache_free(w->env.fp_cache);
    w->env.fp_cache = NULL;
    pthread_mutex_destroy(&w->mu);
}

/* Queues a question on every worker, all or nothing. */
static int post_ask(void *pool, struct admin_ask *a)
{
    struct worker_pool *p = pool;
    struct asked **nodes = calloc((size_t)p->n, sizeof(*nodes));
    int i = 0;
    for (; nodes && i < p->n; i++)
        if (!(nodes[i] = malloc(sizeof(**nodes))))
            break;
    if (!nodes || i < p->n) {
        for (int k = 0; nodes && k < i; k++)
            free(nodes[k]);
        free(nodes);
        return -1;
    }
    for (i = 0; i < p->n; i++) {
        struct worker *w = &p->w[i];
        nodes[i]->ask = a;
        pthread_mutex_lock(&w->mu);
        nodes[i]->next = w->asked;
        w->asked = nodes[i];
        pthread_mutex_unlock(&w->mu);
        loop_wake(w->loop);
    }
    free(nodes);
    return 0;
}

struct worker_pool *worker_pool_start(int n, const struct session_env *tmpl, int shutdown_efd,
                                      size_t stack_bytes, char *err, size_t errlen)
{
    struct worker_pool *p = calloc(1, sizeof(*p));
    if (p)
        p->w = calloc((size_t)n, sizeof(struct worker));
    if (!p || !p->w) {
        snprintf(err, errlen, "cannot start workers: out of memory");
        free(p);
        return NULL;
    }
    p->n = n;
    for (int i = 0; i < n; i++) {
        struct worker *w = &p->w[i];
        int rc = worker_init(w, p, tmpl, shutdown_efd, i);
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, stack_bytes);
        if (rc == 0)
            rc = -pthread_create(&w->th, &attr, worker_main, w);
        pthread_attr_destroy(&attr);
        if (rc) {
            snprintf(err, errlen, "cannot start workers: %s", strerror(-rc));
            worker_release(w);
            break;
        }
        p->started++;
    }
    if (p->started == 0) {
        free(p->w);
        free(p);
        return NULL;
    }
    p->n = p->started;
    if (tmpl->admin) { /* before any session exists: the acceptor's hand-over orders it */
        tmpl->admin->post = post_ask;
        tmpl->admin->pool = p;
        tmpl->admin->nworkers = p->n;
    }
    return p;
}

void worker_pool_join(struct worker_pool *p)
{
    if (!p)
        return;
    /* every thread first: a late answer of one worker may still wake another's loop */
    for (int i = 0; i < p->started; i++)
        pthread_join(p->w[i].th, NULL);
    for (int i = 0; i < p->started; i++) {
        struct worker *w = &p->w[i];
        /* none can arrive now: close what was never served */
        for (struct incoming *in = w->incoming, *next; in; in = next) {
            next = in->next;
            startup_gate_leave(w->env.admission, &in->acc);
            atomic_fetch_sub(&w->env.counts->live, 1);
            close(in->fd);
            free(in);
        }
        w->incoming = NULL;
        answer_asked(w, w->asked, false); /* never answered: their askers stop waiting */
        w->asked = NULL;
        for (struct session_link *l = w->sessions.next; l != &w->sessions;) {
            struct session_link *next = l->next;
            link_del(l);
            session_free(session_from_link(l));
            l = next;
        }
        free_dead(w);
        worker_release(w);
    }
    free(p->w);
    free(p);
}

void worker_pool_assign(struct worker_pool *p, int fd, const struct session_accept *acc)
{
    struct incoming *in = malloc(sizeof(*in));
    if (!in) {
        struct session_accept left = *acc;
        startup_gate_leave(p->w[0].env.admission, &left);
        close(fd);
        return;
    }
    in->fd = fd;
    in->acc = *acc;
    unsigned i = atomic_fetch_add(&p->next, 1) % (unsigned)p->n;
    struct worker *w = &p->w[i];
    atomic_fetch_add(&w->env.counts->live, 1); /* counted from here: see session_counts */
    pthread_mutex_lock(&w->mu);
    in->next = w->incoming;
    w->incoming = in;
    pthread_mutex_unlock(&w->mu);
    loop_wake(w->loop);
}
