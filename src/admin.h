/* What the console and /metrics ask of every worker: a question each worker answers on its own
 * thread, with its own sessions and statement statistics, so nothing on the relay path takes a
 * lock and no worker ever waits for another. The asker is told when the last answer is in (a
 * console session through its loop, the metrics thread through a condition variable). */
#ifndef PGWP_ADMIN_H
#define PGWP_ADMIN_H

#include "stmt_stats.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;
struct session_env;
struct session_link;
struct session_snapshot;

/* One question to every worker. Reference counted: the asker holds one, and each worker holds
 * one until it has answered. */
struct admin_ask {
    atomic_int refs;
    atomic_int pending; /* answers still due */
    /* on the worker's thread: worker is its index, env its environment, sessions its list */
    void (*answer)(struct admin_ask *a, int worker, const struct session_env *env,
                   struct session_link *sessions);
    void (*done)(struct admin_ask *a); /* after the last answer, on that worker's thread */
    void (*destroy)(struct admin_ask *a);
};

/* The process's side of the questions; worker_pool_start fills post, pool and nworkers. */
struct admin_hub {
    atomic_int consoles; /* console sessions open */
    int nworkers;
    /* queues a on every worker and wakes them; 0, or -1 when not every worker could take it */
    int (*post)(void *pool, struct admin_ask *a);
    void *pool;
};

/* Sets the counts and posts a: 0, or -1 (nothing answers; the caller still holds its ref). */
int admin_ask_post(struct admin_hub *h, struct admin_ask *a);
/* A worker's answer is in (or it will never come: the worker has stopped). */
void admin_ask_answered(struct admin_ask *a);
void admin_ask_unref(struct admin_ask *a);

/* The console's questions, with each worker's answer kept apart until all are in. */
enum admin_question {
    ADMIN_SESSIONS,   /* a snapshot of every session */
    ADMIN_STATEMENTS, /* a copy of every statement statistics row */
    ADMIN_CANCEL,     /* cancel the statement of session target */
    ADMIN_KILL,       /* end session target with FATAL 57P01 */
};

struct admin_query;

/* A question; for ADMIN_STATEMENTS, samples says whether rows carry their samples. wake: the
 * loop woken when the answers are in (NULL: admin_query_wait). NULL when out of memory. */
struct admin_query *admin_query_new(enum admin_question q, int nworkers, uint64_t target,
                                    const char *by, bool samples, struct loop *wake);
int admin_query_post(struct admin_hub *h, struct admin_query *q);
bool admin_query_finished(struct admin_query *q);
/* Waits up to timeout_ms for every answer (not on a worker: it blocks). True when all came. */
bool admin_query_wait(struct admin_query *q, int timeout_ms);
void admin_query_release(struct admin_query *q);

/* After finished: the answers merged. Ownership of the arrays passes to the caller; *oom when a
 * worker could not copy all it had. */
struct session_snapshot *admin_query_sessions(struct admin_query *q, size_t *n, bool *oom);
/* Rows merged across workers, the cap most recently used kept, ordered by calls. */
struct stmt_stats_row *admin_query_statements(struct admin_query *q, size_t cap, size_t *n,
                                              bool *oom);
/* CANCEL/KILL: whether a worker found the session, and whether it had a statement running. */
bool admin_query_found(struct admin_query *q, bool *was_running);

/* The /metrics families of the statement statistics: the top entries by calls (bounded
 * labels), gathered from every worker (the metrics thread waits up to a second). Returns
 * malloc'd text, "" when statistics are off, NULL when the workers did not answer in time. */
#define ADMIN_METRICS_TOP 20
char *admin_statement_metrics(void *hub);
/* The same text from rows already merged and ordered (for tests). */
char *admin_render_statement_metrics(const struct stmt_stats_row *rows, size_t n);

#endif
