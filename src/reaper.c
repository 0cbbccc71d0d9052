#include "reaper.h"
#include "log.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REAPER_QUEUE_MAX 256

struct reap_job {
    struct reap_job *next;
    uint32_t pid;
    char *dsn;
};

struct reaper {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct reap_job *head, *tail;
    size_t n;
    bool stopping;
    pthread_t th;
    bool started;
};

static void terminate(const struct reap_job *j)
{
    const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    const char *vals[] = {j->dsn, "5", "pgwire-proxy reaper", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(c) != CONNECTION_OK) {
        LOG_WARN(0, "reaper_failed", "upstream_pid=%u cannot connect to terminate it", j->pid);
        PQfinish(c);
        return;
    }
    char pid[16];
    snprintf(pid, sizeof(pid), "%u", j->pid);
    const char *params[] = {pid};
    PGresult *res = PQexecParams(c, "SELECT pg_catalog.pg_terminate_backend($1::int)", 1, NULL,
                                 params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        LOG_WARN(0, "reaper_failed", "upstream_pid=%u pg_terminate_backend failed", j->pid);
    PQclear(res);
    PQfinish(c);
}

static void *reaper_main(void *arg)
{
    struct reaper *r = arg;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        while (!r->head && !r->stopping)
            pthread_cond_wait(&r->cv, &r->mu);
        struct reap_job *j = r->stopping ? NULL : r->head;
        if (j) {
            r->head = j->next;
            if (!r->head)
                r->tail = NULL;
            r->n--;
        }
        pthread_mutex_unlock(&r->mu);
        if (!j)
            return NULL;
        terminate(j);
        free(j->dsn);
        free(j);
    }
}

struct reaper *reaper_new(void)
{
    struct reaper *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    if (pthread_create(&r->th, NULL, reaper_main, r) != 0) {
        free(r);
        return NULL;
    }
    r->started = true;
    return r;
}

void reaper_free(struct reaper *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stopping = true;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (r->started)
        pthread_join(r->th, NULL);
    while (r->head) {
        struct reap_job *j = r->head;
        r->head = j->next;
        free(j->dsn);
        free(j);
    }
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

void reaper_terminate(struct reaper *r, const char *dsn, uint32_t pid)
{
    struct reap_job *j = calloc(1, sizeof(*j));
    if (j)
        j->dsn = strdup(dsn ? dsn : "");
    pthread_mutex_lock(&r->mu);
    bool full = r->n >= REAPER_QUEUE_MAX || r->stopping;
    if (j && j->dsn && !full) {
        j->pid = pid;
        if (r->tail)
            r->tail->next = j;
        else
            r->head = j;
        r->tail = j;
        r->n++;
        pthread_cond_signal(&r->cv);
        j = NULL;
    }
    pthread_mutex_unlock(&r->mu);
    if (j) {
        LOG_WARN(0, "reaper_dropped", "upstream_pid=%u: termination not queued", pid);
        free(j->dsn);
        free(j);
    }
}
