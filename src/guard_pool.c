/* Parser threads with their own large stacks and a bounded job queue (guard_pool.h). Job state
 * changes happen under the pool's mutex; the done flag is also atomic so a session can poll it
 * without the lock, and the eventfd is written under the lock, so a job is never written for
 * after its owner released it. */
#include "guard_pool.h"
#include "text_len.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define POOL_MAX_THREADS 64
#define QUEUE_MAX_JOBS   256
#define QUEUE_MAX_PARSES 8 /* queued text at most this many ceilings: bounds its memory */

enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_DONE };

struct guard_job {
    struct guard_pool *pool; /* NULL once the pool is gone */
    struct guard_job *next;
    struct guard_policy *policy;
    char *sql;
    size_t len;
    int wake_fd;
    enum job_state state;
    bool abandoned;
    atomic_bool done;
    int rc;
    bool cacheable;
    struct guard_decision d;
};

struct guard_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct guard_job *head, *tail;
    size_t queued, queued_bytes, max_bytes, running;
    bool stop;
    bool hold, gate; /* test hooks */
    size_t max_parse;
    int nthreads;
    pthread_t th[POOL_MAX_THREADS];
    struct guard_stack stacks[POOL_MAX_THREADS];
};

int guard_stack_alloc(struct guard_stack *s, size_t bytes)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    memset(s, 0, sizeof *s);
    if (bytes == SIZE_MAX || bytes > SIZE_MAX - 2 * page)
        return -ENOMEM;
    bytes = (bytes + page - 1) / page * page;
    void *m = mmap(NULL, bytes + page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (m == MAP_FAILED)
        return -errno;
    /* the stack grows down into the guard page: an overflow faults instead of writing on */
    if (mprotect(m, page, PROT_NONE) != 0) {
        int e = errno;
        munmap(m, bytes + page);
        return -e;
    }
    s->map = m;
    s->map_len = bytes + page;
    s->size = bytes;
    return 0;
}

void guard_stack_free(struct guard_stack *s)
{
    if (s->map)
        munmap(s->map, s->map_len);
    memset(s, 0, sizeof *s);
}

int guard_thread_start(pthread_t *th, const struct guard_stack *s, void *(*fn)(void *), void *arg)
{
    pthread_attr_t attr;
    int rc = pthread_attr_init(&attr);
    if (rc)
        return -rc;
    rc = pthread_attr_setstack(&attr, (char *)s->map + (s->map_len - s->size), s->size);
    if (!rc)
        rc = pthread_create(th, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    return -rc;
}

static void job_free(struct guard_job *j)
{
    guard_policy_unref(j->policy);
    free(j->sql);
    free(j);
}

/* Under mu: the job is decided (or canceled); its owner may now read it. */
static void job_finish(struct guard_job *j, int rc, const struct guard_decision *d, bool cacheable)
{
    j->rc = rc;
    j->d = *d;
    j->cacheable = cacheable;
    j->state = JOB_DONE;
    /* nothing more to parse: give back the text and the policy now, not at release */
    free(j->sql);
    j->sql = NULL;
    guard_policy_unref(j->policy);
    j->policy = NULL;
    atomic_store_explicit(&j->done, true, memory_order_release);
    if (j->wake_fd >= 0) {
        uint64_t one = 1;
        ssize_t w = write(j->wake_fd, &one, sizeof one);
        (void)w; /* a full eventfd counter is still readable: the owner wakes anyway */
    }
}

static struct guard_job *pop(struct guard_pool *pool)
{
    struct guard_job *j = pool->head;
    pool->head = j->next;
    if (!pool->head)
        pool->tail = NULL;
    j->next = NULL;
    pool->queued--;
    pool->queued_bytes -= j->len;
    return j;
}

static void *pool_thread(void *arg)
{
    struct guard_pool *pool = arg;

    pthread_setname_np(pthread_self(), "pgwp-parse");
    pthread_mutex_lock(&pool->mu);
    for (;;) {
        while (!pool->stop && (!pool->head || pool->hold))
            pthread_cond_wait(&pool->cv, &pool->mu);
        if (pool->stop)
            break; /* what is still queued, guard_pool_free() cancels */
        struct guard_job *j = pop(pool);
        j->state = JOB_RUNNING;
        pool->running++;
        while (pool->gate && !pool->stop)
            pthread_cond_wait(&pool->cv, &pool->mu);
        pthread_mutex_unlock(&pool->mu);

        struct guard_decision d;
        bool cacheable = false;
        int rc = guard_decide(j->policy, j->sql, j->len, &d, &cacheable);

        pthread_mutex_lock(&pool->mu);
        pool->running--;
        if (j->abandoned) {
            pthread_mutex_unlock(&pool->mu);
            job_free(j);
            pthread_mutex_lock(&pool->mu);
            continue;
        }
        job_finish(j, rc, &d, cacheable);
    }
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

struct guard_pool *guard_pool_new(int threads, size_t max_parse, char *err, size_t errlen)
{
    if (threads < 1 || threads > POOL_MAX_THREADS) {
        snprintf(err, errlen, "parser threads: expected 1 to %d, got %d", POOL_MAX_THREADS,
                 threads);
        return NULL;
    }
    struct guard_pool *pool = calloc(1, sizeof *pool);
    if (!pool) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->cv, NULL);
    pool->max_parse = max_parse ? max_parse : GUARD_DEFAULT_MAX_PARSE;
    pool->max_bytes = QUEUE_MAX_PARSES * pool->max_parse;
    size_t stack = guard_parse_stack_bytes(pool->max_parse);
    for (int i = 0; i < threads; i++) {
        int rc = guard_stack_alloc(&pool->stacks[i], stack);
        if (rc == 0)
            rc = guard_thread_start(&pool->th[i], &pool->stacks[i], pool_thread, pool);
        if (rc) {
            snprintf(err, errlen, "cannot start a parser thread with a %zu MB stack: %s",
                     stack >> 20, strerror(-rc));
            guard_stack_free(&pool->stacks[i]);
            guard_pool_free(pool);
            return NULL;
        }
        pool->nthreads++;
    }
    return pool;
}

void guard_pool_free(struct guard_pool *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->mu);
    pool->stop = true;
    pthread_cond_broadcast(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
    for (int i = 0; i < pool->nthreads; i++) {
        pthread_join(pool->th[i], NULL);
        guard_stack_free(&pool->stacks[i]);
    }
    struct guard_decision none;
    memset(&none, 0, sizeof none);
    pthread_mutex_lock(&pool->mu);
    while (pool->head) {
        struct guard_job *j = pop(pool);
        j->pool = NULL;
        job_finish(j, -ECANCELED, &none, false);
    }
    pthread_mutex_unlock(&pool->mu);
    pthread_mutex_destroy(&pool->mu);
    pthread_cond_destroy(&pool->cv);
    free(pool);
}

struct guard_job *guard_pool_submit(struct guard_pool *pool, struct guard_policy *p,
                                    const char *sql, size_t len, int wake_fd)
{
    len = text_len(sql, len);
    struct guard_job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->sql = strndup(sql, len);
    if (!j->sql) {
        free(j);
        return NULL;
    }
    j->len = len;
    j->pool = pool;
    j->wake_fd = wake_fd;
    j->state = JOB_QUEUED;
    atomic_init(&j->done, false);
    pthread_mutex_lock(&pool->mu);
    if (pool->stop || pool->queued >= QUEUE_MAX_JOBS ||
        pool->queued_bytes + len > pool->max_bytes) {
        pthread_mutex_unlock(&pool->mu);
        free(j->sql);
        free(j);
        return NULL;
    }
    j->policy = guard_policy_ref(p);
    if (pool->tail)
        pool->tail->next = j;
    else
        pool->head = j;
    pool->tail = j;
    pool->queued++;
    pool->queued_bytes += len;
    pthread_cond_signal(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
    return j;
}

bool guard_job_done(const struct guard_job *j)
{
    return atomic_load_explicit(&j->done, memory_order_acquire);
}

int guard_job_result(const struct guard_job *j, struct guard_decision *out, bool *cacheable)
{
    if (!guard_job_done(j))
        return -EAGAIN;
    *out = j->d;
    *cacheable = j->cacheable;
    return j->rc;
}

void guard_job_release(struct guard_job *j)
{
    if (!j)
        return;
    struct guard_pool *pool = j->pool;
    if (!pool) { /* the pool is gone: the job was finished then */
        job_free(j);
        return;
    }
    pthread_mutex_lock(&pool->mu);
    if (j->state == JOB_RUNNING) {
        j->abandoned = true; /* the parser thread frees it */
        pthread_mutex_unlock(&pool->mu);
        return;
    }
    if (j->state == JOB_QUEUED) {
        struct guard_job **pp = &pool->head, *prev = NULL;
        while (*pp && *pp != j) {
            prev = *pp;
            pp = &(*pp)->next;
        }
        if (*pp) {
            *pp = j->next;
            if (pool->tail == j)
                pool->tail = prev;
            pool->queued--;
            pool->queued_bytes -= j->len;
        }
    }
    pthread_mutex_unlock(&pool->mu);
    job_free(j);
}

size_t guard_pool_queued(struct guard_pool *pool)
{
    pthread_mutex_lock(&pool->mu);
    size_t n = pool->queued;
    pthread_mutex_unlock(&pool->mu);
    return n;
}

size_t guard_pool_running(struct guard_pool *pool)
{
    pthread_mutex_lock(&pool->mu);
    size_t n = pool->running;
    pthread_mutex_unlock(&pool->mu);
    return n;
}

static void set_flag(struct guard_pool *pool, bool *flag, bool v)
{
    pthread_mutex_lock(&pool->mu);
    *flag = v;
    pthread_cond_broadcast(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
}

void guard_pool_hold(struct guard_pool *pool, bool hold)
{
    set_flag(pool, &pool->hold, hold);
}

void guard_pool_gate(struct guard_pool *pool, bool closed)
{
    set_flag(pool, &pool->gate, closed);
}
