/* The console's questions to the workers: posting, the answers each worker gives on its own
 * thread, and merging them once all are in. Each worker writes only its own part of a query;
 * the asker reads the parts only after the last worker's decrement of pending, so the parts
 * need no lock. */
#include "admin.h"
#include "loop.h"
#include "log.h"
#include "netio.h"
#include "session.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int admin_ask_post(struct admin_hub *h, struct admin_ask *a)
{
    if (!h || !h->post || h->nworkers <= 0)
        return -1;
    atomic_store(&a->pending, h->nworkers);
    atomic_fetch_add(&a->refs, h->nworkers);
    if (h->post(h->pool, a) == 0)
        return 0;
    atomic_fetch_sub(&a->refs, h->nworkers); /* posting is all or nothing */
    return -1;
}

void admin_ask_unref(struct admin_ask *a)
{
    if (a && atomic_fetch_sub(&a->refs, 1) == 1)
        a->destroy(a);
}

void admin_ask_answered(struct admin_ask *a)
{
    if (atomic_fetch_sub(&a->pending, 1) == 1 && a->done)
        a->done(a);
    admin_ask_unref(a);
}

/* ---------- the console's questions ---------- */

struct admin_part {
    struct session_snapshot *sess;
    size_t nsess;
    struct stmt_stats_row *rows;
    size_t nrows;
    bool found, running, oom;
};

struct admin_query {
    struct admin_ask ask;
    enum admin_question q;
    uint64_t target;
    char by[64];
    bool samples;
    struct loop *wake;
    pthread_mutex_t mu; /* admin_query_wait's */
    pthread_cond_t cv;
    atomic_bool finished;
    int nparts;
    struct admin_part part[];
};

static void free_snapshots(struct session_snapshot *s, size_t n)
{
    for (size_t i = 0; s && i < n; i++)
        free(s[i].statement);
    free(s);
}

static void query_destroy(struct admin_ask *a)
{
    struct admin_query *q = (struct admin_query *)a;
    for (int i = 0; i < q->nparts; i++) {
        free_snapshots(q->part[i].sess, q->part[i].nsess);
        stmt_stats_rows_free(q->part[i].rows, q->part[i].nrows);
    }
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    free(q);
}

static void query_done(struct admin_ask *a)
{
    struct admin_query *q = (struct admin_query *)a;
    pthread_mutex_lock(&q->mu);
    atomic_store(&q->finished, true);
    if (q->wake)
        loop_wake(q->wake); /* under the lock: the asker's release cannot overtake it */
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

static void answer_sessions(struct admin_part *p, struct session_link *head)
{
    size_t n = 0;
    for (struct session_link *l = head->next; l != head; l = l->next)
        n++;
    if (!n)
        return;
    p->sess = calloc(n, sizeof(*p->sess));
    if (!p->sess) {
        p->oom = true;
        return;
    }
    int64_t now = netio_now_us();
    for (struct session_link *l = head->next; l != head && p->nsess < n; l = l->next)
        session_snapshot(session_from_link(l), now, &p->sess[p->nsess++], &p->oom);
}

static void answer_target(struct admin_query *q, struct admin_part *p, struct session_link *head)
{
    for (struct session_link *l = head->next; l != head; l = l->next) {
        struct session *s = session_from_link(l);
        if (session_id(s) != q->target || session_ending(s))
            continue; /* one that is ending is no longer anyone's to cancel or kill */
        p->found = true;
        if (q->q == ADMIN_CANCEL)
            p->running = session_admin_cancel(s, q->by);
        else
            session_admin_kill(s, q->by);
        return;
    }
}

static void query_answer(struct admin_ask *a, int worker, const struct session_env *env,
                         struct session_link *sessions)
{
    struct admin_query *q = (struct admin_query *)a;
    if (worker < 0 || worker >= q->nparts)
        return;
    struct admin_part *p = &q->part[worker];
    switch (q->q) {
    case ADMIN_SESSIONS:
        answer_sessions(p, sessions);
        break;
    case ADMIN_STATEMENTS:
        p->rows = stmt_stats_export(env->stats, q->samples, &p->nrows);
        p->oom = !p->rows && stmt_stats_count(env->stats) > 0;
        break;
    case ADMIN_CANCEL:
    case ADMIN_KILL:
        answer_target(q, p, sessions);
        break;
    }
}

struct admin_query *admin_query_new(enum admin_question kind, int nworkers, uint64_t target,
                                    const char *by, bool samples, struct loop *wake)
{
    if (nworkers <= 0)
        return NULL;
    struct admin_query *q = calloc(1, sizeof(*q) + (size_t)nworkers * sizeof(struct admin_part));
    if (!q)
        return NULL;
    atomic_init(&q->ask.refs, 1);
    q->ask.answer = query_answer;
    q->ask.done = query_done;
    q->ask.destroy = query_destroy;
    q->q = kind;
    q->target = target;
    snprintf(q->by, sizeof(q->by), "%s", by ? by : "");
    q->samples = samples;
    q->wake = wake;
    q->nparts = nworkers;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    return q;
}

int admin_query_post(struct admin_hub *h, struct admin_query *q)
{
    if (!h || h->nworkers != q->nparts)
        return -1;
    return admin_ask_post(h, &q->ask);
}

bool admin_query_finished(struct admin_query *q)
{
    return atomic_load(&q->finished);
}

bool admin_query_wait(struct admin_query *q, int timeout_ms)
{
    struct timespec until;
    netio_time_in(CLOCK_REALTIME, timeout_ms, &until);
    pthread_mutex_lock(&q->mu);
    int rc = 0;
    while (!atomic_load(&q->finished) && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&q->cv, &q->mu, &until);
    bool done = atomic_load(&q->finished);
    pthread_mutex_unlock(&q->mu);
    return done;
}

void admin_query_release(struct admin_query *q)
{
    if (!q)
        return;
    pthread_mutex_lock(&q->mu);
    q->wake = NULL; /* the asker is gone: a late last answer wakes no one */
    pthread_mutex_unlock(&q->mu);
    admin_ask_unref(&q->ask);
}

static int by_id(const void *a, const void *b)
{
    const struct session_snapshot *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

struct session_snapshot *admin_query_sessions(struct admin_query *q, size_t *n, bool *oom)
{
    size_t total = 0;
    *oom = false;
    for (int i = 0; i < q->nparts; i++) {
        total += q->part[i].nsess;
        *oom |= q->part[i].oom;
    }
    *n = 0;
    struct session_snapshot *out = total ? malloc(total * sizeof(*out)) : NULL;
    if (total && !out) {
        *oom = true;
        return NULL;
    }
    for (int i = 0; i < q->nparts; i++) {
        struct admin_part *p = &q->part[i];
        if (p->nsess)
            memcpy(out + *n, p->sess, p->nsess * sizeof(*out));
        *n += p->nsess;
        free(p->sess); /* the statements now belong to out */
        p->sess = NULL;
        p->nsess = 0;
    }
    if (*n > 1)
        qsort(out, *n, sizeof(*out), by_id);
    return out;
}

struct stmt_stats_row *admin_query_statements(struct admin_query *q, size_t cap, size_t *n,
                                              bool *oom)
{
    struct stmt_stats *merged = stmt_stats_new();
    *n = 0;
    *oom = !merged;
    for (int i = 0; merged && i < q->nparts; i++) {
        struct admin_part *p = &q->part[i];
        *oom |= p->oom;
        for (size_t k = 0; k < p->nrows && !*oom; k++)
            *oom |= stmt_stats_merge(merged, &p->rows[k]) != 0;
    }
    struct stmt_stats_row *rows = *oom ? NULL : stmt_stats_export(merged, true, n);
    stmt_stats_free(merged);
    if (!rows)
        return NULL;
    stmt_stats_sort_recent(rows, *n); /* the bound keeps the most recently used */
    if (*n > cap) {
        for (size_t k = cap; k < *n; k++)
            free(rows[k].sample);
        *n = cap;
    }
    stmt_stats_sort_calls(rows, *n);
    return rows;
}

bool admin_query_found(struct admin_query *q, bool *was_running)
{
    bool found = false;
    *was_running = false;
    for (int i = 0; i < q->nparts; i++) {
        found |= q->part[i].found;
        *was_running |= q->part[i].running;
    }
    return found;
}
