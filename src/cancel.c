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
#define PEER_TIMEOUT_MS 3000
#define PEER_QUEUE_MAX  64 /* beyond this, cancels for peers are dropped (and counted failed) */

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
    atomic_int result; /* enum cancel_result, valid once done */
    atomic_bool done;
    int wake_fd;
};

struct cancel_job {
    struct cancel_job *next;
    uint32_t pid, secret;
    int close_fd;
    bool from_client;
    struct cancel_ticket *ticket;
    struct cancel_entry *pinned; /* proxy's own cancel: entry pinned when queued */
    bool to_peer;                /* a client's cancel for a key a peer owns (decided when */
    struct peer peer;            /* queued), and that peer */
};

/* Jobs for a few threads. Cancels bound for a peer instance have their own queue: a peer that
 * is down must not delay the cancels of this instance's own sessions. */
struct job_queue {
    struct cancel_table *t;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct cancel_job *head, *tail;
    size_t n, max; /* max 0 = unbounded */
    bool stopping;
    pthread_t threads[CANCEL_THREADS];
    int nthreads;
};

struct cancel_table {
    pthread_mutex_t mu;
    struct cancel_entry *buckets[CANCEL_BUCKETS];
    struct job_queue local, peer;
    int self_id; /* guarded by mu, with peers */
    struct peer peers[MAX_PEERS];
    size_t npeers;
};

static void *cancel_thread(void *arg);

static int queue_start(struct cancel_table *t, struct job_queue *q, size_t max)
{
    q->t = t;
    q->max = max;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    for (int i = 0; i < CANCEL_THREADS; i++)
        if (pthread_create(&q->threads[q->nthreads], NULL, cancel_thread, q) == 0)
            q->nthreads++;
    return q->nthreads ? 0 : -EAGAIN;
}

static void queue_stop(struct job_queue *q)
{
    if (!q->t)
        return;
    pthread_mutex_lock(&q->mu);
    q->stopping = true;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    for (int i = 0; i < q->nthreads; i++)
        pthread_join(q->threads[i], NULL);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
}

struct cancel_table *cancel_table_new(void)
{
    struct cancel_table *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    pthread_mutex_init(&t->mu, NULL);
    if (queue_start(t, &t->local, 0) || queue_start(t, &t->peer, PEER_QUEUE_MAX)) {
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
    queue_stop(&t->local);
    queue_stop(&t->peer);
    for (size_t i = 0; i < CANCEL_BUCKETS; i++) {
        struct cancel_entry *e = t->buckets[i];
        while (e) {
            struct cancel_entry *n = e->next;
            free_entry(e);
            e = n;
        }
    }
    pthread_mutex_destroy(&t->mu);
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

/* The peer that owns a key (by the id in the secret's top byte), if it is not this instance. */
static bool peer_of(struct cancel_table *t, uint32_t secret, struct peer *out)
{
    bool found = false;
    pthread_mutex_lock(&t->mu);
    int owner = (int)(secret >> 24);
    if (t->self_id && owner != t->self_id) {
        for (size_t i = 0; i < t->npeers && !found; i++) {
            if (t->peers[i].id == owner) {
                *out = t->peers[i];
                found = true;
            }
        }
    }
    pthread_mutex_unlock(&t->mu);
    return found;
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

/* Finds the entry for a key and pins it (inflight) so it outlives an unregister. */
static struct cancel_entry *pin_entry(struct cancel_table *t, uint32_t pid, uint32_t secret)
{
    pthread_mutex_lock(&t->mu);
    struct cancel_entry *e = t->buckets[pid % CANCEL_BUCKETS];
    while (e && e->pid != pid)
        e = e->next;
    /* compare the secret even when the pid is unknown, so timing says nothing about pids */
    bool same = cancel_secret_equal(e ? e->secret : ~secret, secret);
    if (e && same)
        e->inflight++;
    pthread_mutex_unlock(&t->mu);
    return e && same ? e : NULL;
}

/* Sends the cancel with a pinned entry's handle, then unpins it. */
static enum cancel_result forward_pinned(struct cancel_table *t, struct cancel_entry *e)
{
    char err[256];
    int rc = upstream_cancel(e->handle, err, sizeof(err));
    if (rc)
        LOG_WARN(0, "cancel_failed", "pid=%u %s", e->pid, err);
    pthread_mutex_lock(&t->mu);
    bool free_it = --e->inflight == 0 && e->removed;
    pthread_mutex_unlock(&t->mu);
    if (free_it)
        free_entry(e);
    return rc == 0 ? CANCEL_FORWARDED : CANCEL_FAILED;
}

enum cancel_result cancel_forward(struct cancel_table *t, uint32_t pid, uint32_t secret)
{
    struct cancel_entry *e = pin_entry(t, pid, secret);
    return e ? forward_pinned(t, e) : CANCEL_UNKNOWN_KEY;
}

static void queue_job(struct cancel_table *t, struct cancel_job *j);
static void finish_job(struct cancel_job *j, enum cancel_result r);

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
    /* pinned now: the session may end (and unregister) before a thread takes the job, and
     * the cancel must still reach what it was running */
    j->pinned = pin_entry(t, pid, secret);
    queue_job(t, j);
    return k;
}

bool cancel_ticket_done(struct cancel_ticket *k)
{
    return atomic_load(&k->done);
}

enum cancel_result cancel_ticket_result(struct cancel_ticket *k)
{
    return (enum cancel_result)atomic_load(&k->result);
}

void cancel_ticket_release(struct cancel_ticket *k)
{
    if (k && atomic_fetch_sub(&k->refs, 1) == 1)
        free(k);
}

static void queue_job(struct cancel_table *t, struct cancel_job *j)
{
    j->to_peer = j->from_client && peer_of(t, j->secret, &j->peer);
    struct job_queue *q = j->to_peer ? &t->peer : &t->local;
    pthread_mutex_lock(&q->mu);
    if (q->max && q->n >= q->max) {
        pthread_mutex_unlock(&q->mu);
        LOG_WARN(0, "cancel_dropped", "pid=%u: %zu cancels for peers already queued", j->pid,
                 q->max);
        finish_job(j, CANCEL_FAILED);
        return;
    }
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
    q->n++;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

/* Counts, closes the client's cancel socket, and signals the ticket of a finished job. */
static void finish_job(struct cancel_job *j, enum cancel_result r)
{
    if (j->from_client) {
        metrics_cancel(r == CANCEL_FORWARDED     ? METRICS_CANCEL_FORWARDED
                       : r == CANCEL_UNKNOWN_KEY ? METRICS_CANCEL_UNKNOWN_KEY
                                                 : METRICS_CANCEL_FAILED);
        LOG_INFO(0, "cancel_request", "pid=%u result=%s%s", j->pid,
                 r == CANCEL_FORWARDED     ? "forwarded"
                 : r == CANCEL_UNKNOWN_KEY ? "unknown_key"
                                           : "failed",
                 j->to_peer ? " (to peer)" : "");
    }
    if (j->close_fd >= 0)
        close(j->close_fd);
    if (j->ticket) {
        atomic_store(&j->ticket->result, (int)r);
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

static void *cancel_thread(void *arg)
{
    struct job_queue *q = arg;
    struct cancel_table *t = q->t;
    for (;;) {
        pthread_mutex_lock(&q->mu);
        while (!q->head && !q->stopping)
            pthread_cond_wait(&q->cv, &q->mu);
        struct cancel_job *j = q->head;
        if (j) {
            q->head = j->next;
            if (!q->head)
                q->tail = NULL;
            q->n--;
        }
        pthread_mutex_unlock(&q->mu);
        if (!j)
            return NULL;
        enum cancel_result r = j->to_peer  ? forward_to_peer(&j->peer, j->pid, j->secret)
                               : j->pinned ? forward_pinned(t, j->pinned)
                                           : cancel_forward(t, j->pid, j->secret);
        finish_job(j, r);
    }
}
