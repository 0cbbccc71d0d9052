#include "cancel.h"
#include "log.h"
#include "metrics.h"
#include "upstream.h"
#include "wire.h"

#include "config.h"
#include "netio.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <sys/random.h>
#include <unistd.h>

#define CANCEL_BUCKETS  1024
#define CANCEL_THREADS  2
#define MAX_PEERS       64
#define PEER_TIMEOUT_MS 5000

struct peer {
    int id;
    char host[256];
    int port;
};

struct cancel_entry {
    struct cancel_entry *next;
    uint32_t pid;
    uint32_t secret;
    void *handle;
    int inflight; /* cancels being forwarded with this handle right now */
    bool removed; /* unregistered while in flight: the last forwarder frees it */
};

struct cancel_ticket {
    atomic_int refs;
    atomic_bool done;
    int wake_fd;
};

struct cancel_job {
    struct cancel_job *next;
    uint32_t pid, secret;
    int close_fd;
    bool from_client;
    struct cancel_ticket *ticket;
};

struct cancel_table {
    pthread_mutex_t mu;
    struct cancel_entry *buckets[CANCEL_BUCKETS];
    pthread_mutex_t qmu;
    pthread_cond_t qcv;
    struct cancel_job *head, *tail;
    bool stopping;
    pthread_t threads[CANCEL_THREADS];
    int nthreads;
    int self_id; /* guarded by mu, with peers */
    struct peer peers[MAX_PEERS];
    size_t npeers;
};

static void *cancel_thread(void *arg);

struct cancel_table *cancel_table_new(void)
{
    struct cancel_table *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    pthread_mutex_init(&t->mu, NULL);
    pthread_mutex_init(&t->qmu, NULL);
    pthread_cond_init(&t->qcv, NULL);
    for (int i = 0; i < CANCEL_THREADS; i++)
        if (pthread_create(&t->threads[t->nthreads], NULL, cancel_thread, t) == 0)
            t->nthreads++;
    if (t->nthreads == 0) {
        cancel_table_free(t);
        return NULL;
    }
    return t;
}

static void free_entry(struct cancel_entry *e)
{
    upstream_free_cancel(e->handle);
    free(e);
}

void cancel_table_free(struct cancel_table *t)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->qmu);
    t->stopping = true;
    pthread_cond_broadcast(&t->qcv);
    pthread_mutex_unlock(&t->qmu);
    for (int i = 0; i < t->nthreads; i++)
        pthread_join(t->threads[i], NULL);
    for (size_t i = 0; i < CANCEL_BUCKETS; i++) {
        struct cancel_entry *e = t->buckets[i];
        while (e) {
            struct cancel_entry *n = e->next;
            free_entry(e);
            e = n;
        }
    }
    pthread_mutex_destroy(&t->mu);
    pthread_mutex_destroy(&t->qmu);
    pthread_cond_destroy(&t->qcv);
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

int cancel_set_peers(struct cancel_table *t, int self_id, char *const *peers, size_t n)
{
    struct peer parsed[MAX_PEERS];
    if (n > MAX_PEERS || self_id < 0 || self_id > 255)
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (config_parse_peer(peers[i], &parsed[i].id, parsed[i].host, sizeof(parsed[i].host),
                              &parsed[i].port))
            return -EINVAL;
    pthread_mutex_lock(&t->mu);
    t->self_id = self_id;
    memcpy(t->peers, parsed, n * sizeof(parsed[0]));
    t->npeers = n;
    pthread_mutex_unlock(&t->mu);
    return 0;
}

int cancel_session_secret(struct cancel_table *t, uint32_t *out)
{
    int rc = cancel_new_secret(out);
    pthread_mutex_lock(&t->mu);
    int id = t->self_id;
    pthread_mutex_unlock(&t->mu);
    if (rc == 0 && id)
        *out = ((uint32_t)id << 24) | (*out & 0xffffff);
    return rc;
}

/* Sends the CancelRequest on to the instance that owns the key and waits for it to close the
 * connection, as PostgreSQL's cancel protocol does. */
static enum cancel_result forward_to_peer(const struct peer *p, uint32_t pid, uint32_t secret)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", p->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    if (getaddrinfo(p->host, port, &hints, &res) || !res)
        return CANCEL_FAILED;
    enum cancel_result r = CANCEL_FAILED;
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        goto out;
    int64_t deadline = netio_now_ms() + PEER_TIMEOUT_MS;
    if (connect(fd, res->ai_addr, res->ai_addrlen) && errno != EINPROGRESS)
        goto out;
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    if (poll(&pfd, 1, PEER_TIMEOUT_MS) != 1 || !(pfd.revents & POLLOUT))
        goto out;
    uint8_t pkt[16];
    wire_put_u32(pkt, 16);
    wire_put_u32(pkt + 4, WIRE_CANCEL_REQUEST_CODE);
    wire_put_u32(pkt + 8, pid);
    wire_put_u32(pkt + 12, secret);
    if (send(fd, pkt, sizeof(pkt), MSG_NOSIGNAL) != (ssize_t)sizeof(pkt))
        goto out;
    for (;;) {
        int64_t left = deadline - netio_now_ms();
        pfd.events = POLLIN;
        if (left <= 0 || poll(&pfd, 1, (int)left) != 1)
            goto out;
        char buf[64];
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            r = CANCEL_FORWARDED;
            break;
        }
    }
out:
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    return r;
}

/* A client's CancelRequest: local key, or a peer's (by the id in the secret's top byte). */
static enum cancel_result route_client_cancel(struct cancel_table *t, uint32_t pid, uint32_t secret,
                                              bool *to_peer)
{
    struct peer target;
    bool found = false;
    pthread_mutex_lock(&t->mu);
    int owner = (int)(secret >> 24);
    if (t->self_id && owner != t->self_id) {
        for (size_t i = 0; i < t->npeers; i++) {
            if (t->peers[i].id == owner) {
                target = t->peers[i];
                found = true;
            }
        }
    }
    pthread_mutex_unlock(&t->mu);
    *to_peer = found;
    if (found)
        return forward_to_peer(&target, pid, secret);
    return cancel_forward(t, pid, secret);
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
    while (*pp && ((*pp)->pid != pid || (*pp)->removed))
        pp = &(*pp)->next;
    struct cancel_entry *e = *pp;
    if (e) {
        *pp = e->next;
        if (e->inflight > 0) {
            e->removed = true; /* the forwarder frees it */
            e = NULL;
        }
    }
    pthread_mutex_unlock(&t->mu);
    if (e)
        free_entry(e);
}

enum cancel_result cancel_forward(struct cancel_table *t, uint32_t pid, uint32_t secret)
{
    pthread_mutex_lock(&t->mu);
    struct cancel_entry *e = t->buckets[pid % CANCEL_BUCKETS];
    while (e && e->pid != pid)
        e = e->next;
    /* compare the secret even when the pid is unknown, so timing says nothing about pids */
    bool same = cancel_secret_equal(e ? e->secret : ~secret, secret);
    if (!e || !same) {
        pthread_mutex_unlock(&t->mu);
        return CANCEL_UNKNOWN_KEY;
    }
    e->inflight++;
    void *handle = e->handle;
    pthread_mutex_unlock(&t->mu);

    char err[256];
    int rc = upstream_cancel(handle, err, sizeof(err));
    if (rc)
        LOG_WARN(0, "cancel_failed", "pid=%u %s", pid, err);

    pthread_mutex_lock(&t->mu);
    bool free_it = --e->inflight == 0 && e->removed;
    pthread_mutex_unlock(&t->mu);
    if (free_it)
        free_entry(e);
    return rc == 0 ? CANCEL_FORWARDED : CANCEL_FAILED;
}

static void queue_job(struct cancel_table *t, struct cancel_job *j);

int cancel_forward_async(struct cancel_table *t, uint32_t pid, uint32_t secret, int close_fd,
                         bool from_client)
{
    struct cancel_job *j = calloc(1, sizeof(*j));
    if (!j)
        return -ENOMEM;
    j->pid = pid;
    j->secret = secret;
    j->close_fd = close_fd;
    j->from_client = from_client;
    queue_job(t, j);
    return 0;
}

struct cancel_ticket *cancel_forward_tracked(struct cancel_table *t, uint32_t pid, uint32_t secret,
                                             int wake_fd)
{
    struct cancel_job *j = calloc(1, sizeof(*j));
    struct cancel_ticket *k = calloc(1, sizeof(*k));
    if (!j || !k) {
        free(j);
        free(k);
        return NULL;
    }
    atomic_init(&k->refs, 2); /* the caller's and the job's */
    atomic_init(&k->done, false);
    k->wake_fd = wake_fd;
    j->pid = pid;
    j->secret = secret;
    j->close_fd = -1;
    j->ticket = k;
    queue_job(t, j);
    return k;
}

bool cancel_ticket_done(struct cancel_ticket *k)
{
    return atomic_load(&k->done);
}

void cancel_ticket_release(struct cancel_ticket *k)
{
    if (k && atomic_fetch_sub(&k->refs, 1) == 1)
        free(k);
}

static void queue_job(struct cancel_table *t, struct cancel_job *j)
{
    pthread_mutex_lock(&t->qmu);
    if (t->tail)
        t->tail->next = j;
    else
        t->head = j;
    t->tail = j;
    pthread_cond_signal(&t->qcv);
    pthread_mutex_unlock(&t->qmu);
}

static void *cancel_thread(void *arg)
{
    struct cancel_table *t = arg;
    for (;;) {
        pthread_mutex_lock(&t->qmu);
        while (!t->head && !t->stopping)
            pthread_cond_wait(&t->qcv, &t->qmu);
        struct cancel_job *j = t->head;
        if (j) {
            t->head = j->next;
            if (!t->head)
                t->tail = NULL;
        }
        pthread_mutex_unlock(&t->qmu);
        if (!j)
            return NULL;
        bool to_peer = false;
        enum cancel_result r = j->from_client ? route_client_cancel(t, j->pid, j->secret, &to_peer)
                                              : cancel_forward(t, j->pid, j->secret);
        if (j->from_client) {
            metrics_cancel(r == CANCEL_FORWARDED     ? METRICS_CANCEL_FORWARDED
                           : r == CANCEL_UNKNOWN_KEY ? METRICS_CANCEL_UNKNOWN_KEY
                                                     : METRICS_CANCEL_FAILED);
            LOG_INFO(0, "cancel_request", "pid=%u result=%s%s", j->pid,
                     r == CANCEL_FORWARDED     ? "forwarded"
                     : r == CANCEL_UNKNOWN_KEY ? "unknown_key"
                                               : "failed",
                     to_peer ? " (to peer)" : "");
        }
        if (j->close_fd >= 0)
            close(j->close_fd);
        if (j->ticket) {
            atomic_store(&j->ticket->done, true);
            if (j->ticket->wake_fd >= 0) {
                uint64_t one = 1;
                ssize_t w = write(j->ticket->wake_fd, &one, sizeof(one));
                (void)w;
            }
            cancel_ticket_release(j->ticket);
        }
        free(j);
    }
}
