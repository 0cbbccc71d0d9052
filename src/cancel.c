#include "cancel.h"
#include "upstream.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/random.h>

#define CANCEL_BUCKETS 1024

struct cancel_entry {
    struct cancel_entry *next;
    uint32_t pid;
    uint32_t secret;
    void *handle;
    int inflight; /* cancels being forwarded with this handle right now */
};

struct cancel_table {
    pthread_mutex_t mu;
    pthread_cond_t idle; /* signalled when an entry's inflight drops to 0 */
    struct cancel_entry *buckets[CANCEL_BUCKETS];
};

struct cancel_table *cancel_table_new(void)
{
    struct cancel_table *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->idle, NULL);
    return t;
}

void cancel_table_free(struct cancel_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < CANCEL_BUCKETS; i++) {
        struct cancel_entry *e = t->buckets[i];
        while (e) {
            struct cancel_entry *n = e->next;
            free(e);
            e = n;
        }
    }
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->idle);
    free(t);
}

bool cancel_secret_equal(uint32_t a, uint32_t b)
{
    volatile uint32_t diff = a ^ b;
    return diff == 0;
}

int cancel_new_secret(uint32_t *out)
{
    for (;;) {
        ssize_t n = getrandom(out, sizeof(*out), 0);
        if (n == (ssize_t)sizeof(*out))
            return 0;
        if (n < 0 && errno != EINTR)
            return -errno;
    }
}

int cancel_register(struct cancel_table *t, uint32_t pid, uint32_t secret, void *handle)
{
    struct cancel_entry *e = calloc(1, sizeof(*e));
    if (!e)
        return -ENOMEM;
    e->pid = pid;
    e->secret = secret;
    e->handle = handle;
    pthread_mutex_lock(&t->mu);
    struct cancel_entry **b = &t->buckets[pid % CANCEL_BUCKETS];
    e->next = *b;
    *b = e;
    pthread_mutex_unlock(&t->mu);
    return 0;
}

void cancel_unregister(struct cancel_table *t, uint32_t pid)
{
    pthread_mutex_lock(&t->mu);
    struct cancel_entry **pp = &t->buckets[pid % CANCEL_BUCKETS];
    while (*pp && (*pp)->pid != pid)
        pp = &(*pp)->next;
    struct cancel_entry *e = *pp;
    if (e) {
        *pp = e->next;
        while (e->inflight > 0)
            pthread_cond_wait(&t->idle, &t->mu);
    }
    pthread_mutex_unlock(&t->mu);
    free(e);
}

enum cancel_result cancel_forward(struct cancel_table *t, uint32_t pid, uint32_t secret)
{
    pthread_mutex_lock(&t->mu);
    struct cancel_entry *e = t->buckets[pid % CANCEL_BUCKETS];
    while (e && e->pid != pid)
        e = e->next;
    /* compare the secret even when the pid is unknown, so timing says nothing about pids */
    bool ok = cancel_secret_equal(e ? e->secret : ~secret, secret) && e;
    if (!ok) {
        pthread_mutex_unlock(&t->mu);
        return CANCEL_UNKNOWN_KEY;
    }
    e->inflight++;
    void *handle = e->handle;
    pthread_mutex_unlock(&t->mu);

    char err[256];
    int rc = upstream_cancel(handle, err, sizeof(err));

    pthread_mutex_lock(&t->mu);
    if (--e->inflight == 0)
        pthread_cond_broadcast(&t->idle);
    pthread_mutex_unlock(&t->mu);
    return rc == 0 ? CANCEL_FORWARDED : CANCEL_FAILED;
}
