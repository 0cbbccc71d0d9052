/* Parser threads: policy decisions off the event loop. pg_query_parse() cannot be paused, and a
 * text near --max-parse-size takes a good part of a second, so a session hands such a text to a
 * pool thread (with a stack sized for it) and serves others while it waits, like the cancel
 * module's tickets. */
#ifndef PGWP_GUARD_POOL_H
#define PGWP_GUARD_POOL_H

#include "guard.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

struct guard_pool;
struct guard_job;

/* threads parser threads with guard_parse_stack_bytes(max_parse) of stack each. NULL on error
 * (err says why). */
struct guard_pool *guard_pool_new(int threads, size_t max_parse, char *err, size_t errlen);
/* Stops the threads (each finishes the job it runs); jobs still queued complete with -ECANCELED
 * (their wake_fd is written). Call it when no other thread uses the pool; jobs held past it may
 * only be released. */
void guard_pool_free(struct guard_pool *pool);

/* Queues guard_decide(p, sql, len): copies the text and takes a reference on p. When decided
 * the job is marked done and 1 is written to the eventfd wake_fd (-1 = none), which must stay
 * open until the job is released. NULL when the queue is full or out of memory (nothing
 * queued: decide inline or refuse). */
struct guard_job *guard_pool_submit(struct guard_pool *pool, struct guard_policy *p,
                                    const char *sql, size_t len, int wake_fd);
bool guard_job_done(const struct guard_job *j);
/* The decision of a done job: guard_decide's return (0 or -ENOMEM), or -ECANCELED when the
 * pool stopped first, or -EAGAIN while not done. */
int guard_job_result(const struct guard_job *j, struct guard_decision *out, bool *cacheable);
/* Queued: removed. Running: abandoned (the pool frees it when the parse ends, waking no one).
 * Done: freed. NULL is ignored. */
void guard_job_release(struct guard_job *j);

/* Test hooks: jobs queued and running right now; hold keeps queued jobs queued; gate stops a
 * thread between taking a job and parsing it (the job is then running). */
size_t guard_pool_queued(struct guard_pool *pool);
size_t guard_pool_running(struct guard_pool *pool);
void guard_pool_hold(struct guard_pool *pool, bool hold);
void guard_pool_gate(struct guard_pool *pool, bool closed);

/* A thread stack of bytes (mmap'd, MAP_NORESERVE: only touched pages count) with a guard page
 * below it, and a thread started on it. */
struct guard_stack {
    void *map;
    size_t map_len, size;
};
int guard_stack_alloc(struct guard_stack *s, size_t bytes);
void guard_stack_free(struct guard_stack *s);
int guard_thread_start(pthread_t *th, const struct guard_stack *s, void *(*fn)(void *), void *arg);

#endif
