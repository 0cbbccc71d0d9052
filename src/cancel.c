#include "cancel.h"
#include "addr.h"
#include "cancel_int.h"
#include "cancel_limit.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "netio.h"
#include "upstream.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define CANCEL_BUCKETS 1024
#define CANCEL_THREADS 2
/* At stop, how long to wait for a local forward that is inside libpq's PQcancel (which has
 * no timeout of its own) before leaving it to the process exit. */
#define CANCEL_STOP_WAIT_MS 2000

struct cancel_entry {
    struct cancel_entry *next;
    uint32_t pid;
    uint32_t secret;
    void *handle;
    int inflight;       /* cancels being forwarded with this handle right now */
    bool removed;       /* unregistered while in flight: the last forwarder frees it */
    bool client_queued; /* a client's cancel for this key is queued or running */
};

struct cancel_ticket {
    atomic_int refs;
    atomic_int result; /* enum cancel_result, valid once done */
    atomic_bool done;
    int wake_fd;
};

/* Jobs for the local pool: cancels of this instance's own sessions. Peer-bound cancels have
 * queues of their own (cancel_peer.c): a peer that is down must not delay these. */
struct job_queue {
    struct cancel_table *t;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct cancel_job *head, *tail;
    size_t nclient; /* client jobs queued, bounded by CANCEL_LOCAL_QUEUE_MAX */
    bool stopping;
    pthread_t threads[CANCEL_THREADS];
    int nthreads;
};

struct cancel_table {
    pthread_mutex_t mu;
    struct cancel_entry *buckets[CANCEL_BUCKETS];
    struct job_queue local;
    struct cancel_peers *peers;
    struct cancel_limiter *limiter;
    atomic_int held_fds; /* client sockets held by jobs, bounded by CANCEL_MAX_HELD_FDS */
};

static void *cancel_thread(void *arg);

static int queue_start(struct cancel_table *t, struct job_queue *q)
{
    q->t = t;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    for (int i = 0; i < CANCEL_THREADS; i++)
        if (pthread_create(&q->threads[q->nthreads], NULL, cancel_thread, q) == 0)
            q->nthreads++;
    return q->nthreads ? 0 : -EAGAIN;
}

/* Joins the pool; false if a thread is still inside a forward after CANCEL_STOP_WAIT_MS. */
static bool queue_stop(struct job_queue *q)
{
    if (!q->t)
        return true;
    pthread_mutex_lock(&q->mu);
    q->stopping = true;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += CANCEL_STOP_WAIT_MS / 1000;
    bool all = true;
    for (int i = 0; i < q->nthreads; i++) {
        if (pthread_timedjoin_np(q->threads[i], NULL, &until) != 0) {
            pthread_detach(q->threads[i]);
            all = false;
        }
    }
    if (!all)
        return false;
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    return true;
}

struct cancel_table *cancel_table_new(void)
{
    struct cancel_table *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    pthread_mutex_init(&t->mu, NULL);
    atomic_init(&t->held_fds, 0);
    t->limiter = cancel_limiter_new();
    t->peers = cancel_peers_new();
    if (!t->limiter || !t->peers || queue_start(t, &t->local)) {
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
    cancel_peers_free(t->peers);
    if (!queue_stop(&t->local)) {
        /* a thread still uses the table: it goes with the process */
        LOG_WARN(0, "cancel_stop", "an upstream cancel is still in progress; not waiting");
        return;
    }
    for (size_t i = 0; i < CANCEL_BUCKETS; i++) {
        struct cancel_entry *e = t->buckets[i];
        while (e) {
            struct cancel_entry *n = e->next;
            free_entry(e);
            e = n;
        }
    }
    cancel_limiter_free(t->limiter);
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
    return cancel_peers_set(t->peers, self_id, peers, n);
}

void cancel_set_rate_limit(struct cancel_table *t, unsigned per_second)
{
    cancel_limiter_configure(t->limiter, per_second, per_second * CANCEL_RATE_BURST_S);
}

void cancel_apply_config(struct cancel_table *t, const struct config *cfg)
{
    if (cancel_set_peers(t, cfg->peer_id, cfg->peers, cfg->npeers))
        LOG_WARN(0, "cancel_peers", "--peer list not applied");
    cancel_set_rate_limit(t, (unsigned)cfg->cancel_rate_limit);
}

int cancel_session_secret(struct cancel_table *t, uint32_t *out)
{
    int rc = cancel_new_secret(out);
    int id = cancel_peers_self_id(t->peers);
    if (rc == 0 && id)
        *out = ((uint32_t)id << 24) | (*out & 0xffffff);
    return rc;
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

void cancel_unregister(struct cancel_table *t, uint32_t pid, uint32_t secret)
{
    pthread_mutex_lock(&t->mu);
    struct cancel_entry **pp = &t->buckets[pid % CANCEL_BUCKETS];
    while (*pp && ((*pp)->pid != pid || (*pp)->secret != secret || (*pp)->removed))
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

/* Finds the entry for a key and pins it (inflight) so it outlives an unregister. For a
 * client's cancel (client != NULL) an entry that already has one queued or running is not
 * pinned again: *client is set to true, and NULL returned. */
static struct cancel_entry *pin_entry(struct cancel_table *t, uint32_t pid, uint32_t secret,
                                      bool *client)
{
    pthread_mutex_lock(&t->mu);
    /* keyed by (pid, secret): two upstream hosts can hand out the same pid. Every entry with
     * this pid is compared, and the secret compared even when the pid is unknown, so timing
     * says nothing about pids or secrets */
    struct cancel_entry *e = NULL;
    bool same = false;
    for (struct cancel_entry *c = t->buckets[pid % CANCEL_BUCKETS]; c; c = c->next) {
        if (c->pid != pid || c->removed)
            continue;
        bool eq = cancel_secret_equal(c->secret, secret);
        if (eq && !e)
            e = c;
        same |= eq;
    }
    if (!e)
        (void)cancel_secret_equal(~secret, secret);
    if (!e || !same) {
        e = NULL;
    } else if (client && e->client_queued) {
        *client = true;
        e = NULL;
    } else {
        e->inflight++;
        if (client)
            e->client_queued = true;
    }
    pthread_mutex_unlock(&t->mu);
    return e;
}

static void unpin_entry(struct cancel_table *t, struct cancel_entry *e, bool client)
{
    pthread_mutex_lock(&t->mu);
    if (client)
        e->client_queued = false;
    bool free_it = --e->inflight == 0 && e->removed;
    pthread_mutex_unlock(&t->mu);
    if (free_it)
        free_entry(e);
}

/* Sends the cancel with a pinned entry's handle (the caller unpins). */
static enum cancel_result forward_pinned(struct cancel_entry *e)
{
    char err[256];
    int rc = upstream_cancel(e->handle, err, sizeof(err));
    if (rc)
        LOG_WARN(0, "cancel_failed", "pid=%u %s", e->pid, err);
    return rc == 0 ? CANCEL_FORWARDED : CANCEL_FAILED;
}

enum cancel_result cancel_forward(struct cancel_table *t, uint32_t pid, uint32_t secret)
{
    struct cancel_entry *e = pin_entry(t, pid, secret, NULL);
    if (!e)
        return CANCEL_UNKNOWN_KEY;
    enum cancel_result r = forward_pinned(e);
    unpin_entry(t, e, false);
    return r;
}

static enum metrics_cancel_outcome outcome_of(enum cancel_result r)
{
    return r == CANCEL_FORWARDED     ? METRICS_CANCEL_FORWARDED
           : r == CANCEL_UNKNOWN_KEY ? METRICS_CANCEL_UNKNOWN_KEY
                                     : METRICS_CANCEL_FAILED;
}

static const char *outcome_name(enum metrics_cancel_outcome o)
{
    static const char *const names[] = {"forwarded",    "unknown_key", "failed",
                                        "rate_limited", "dropped",     "coalesced"};
    return (unsigned)o < sizeof(names) / sizeof(names[0]) ? names[o] : "?";
}

void cancel_job_finish(struct cancel_job *j, enum cancel_result r, enum metrics_cancel_outcome o)
{
    if (j->from_client) {
        metrics_cancel(o);
        LOG_INFO(0, "cancel_request", "pid=%u result=%s%s", j->pid, outcome_name(o),
                 j->peer_id ? " (to peer)" : "");
    }
    if (j->pinned)
        unpin_entry(j->t, j->pinned, j->from_client);
    if (j->close_fd >= 0)
        close(j->close_fd);
    if (j->holds_slot)
        atomic_fetch_sub(&j->t->held_fds, 1);
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

/* Appends to the local queue; false when it is full of client jobs (or stopping). */
static bool local_enqueue(struct cancel_table *t, struct cancel_job *j)
{
    struct job_queue *q = &t->local;
    pthread_mutex_lock(&q->mu);
    bool ok = !q->stopping && (!j->from_client || q->nclient < CANCEL_LOCAL_QUEUE_MAX);
    if (ok) {
        if (q->tail)
            q->tail->next = j;
        else
            q->head = j;
        q->tail = j;
        q->nclient += j->from_client;
        pthread_cond_signal(&q->cv);
    }
    pthread_mutex_unlock(&q->mu);
    return ok;
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
    j->t = t;
    j->pid = pid;
    j->secret = secret;
    j->close_fd = -1;
    j->ticket = k;
    /* pinned now: the session may end (and unregister) before a thread takes the job, and
     * the cancel must still reach what it was running */
    j->pinned = pin_entry(t, pid, secret, NULL);
    if (!local_enqueue(t, j))
        cancel_job_finish(j, CANCEL_FAILED, METRICS_CANCEL_DROPPED);
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

/* ---- client CancelRequests ---------------------------------------------------------------- */

/* Finishes a request that never became a job: counted, and its connection closed now. */
static void answer_now(const struct cancel_request *r, enum metrics_cancel_outcome o)
{
    metrics_cancel(o);
    if (o != METRICS_CANCEL_RATE_LIMITED && o != METRICS_CANCEL_COALESCED)
        LOG_INFO(0, "cancel_request", "pid=%u result=%s", r->pid, outcome_name(o));
    else
        LOG_DEBUG(0, "cancel_request", "pid=%u result=%s", r->pid, outcome_name(o));
    if (r->fd >= 0)
        close(r->fd);
}

static bool over_rate(struct cancel_table *t, const struct cancel_request *r)
{
    struct addr_key key;
    addr_key_from(r->from, r->fromlen, &key);
    enum cancel_limit_verdict v = cancel_limiter_take(t->limiter, &key, netio_now_ms());
    if (v == CANCEL_LIMIT_REFUSE_FIRST) {
        char who[64];
        addr_key_format(&key, who, sizeof(who));
        LOG_WARN(0, "cancel_rate_limited",
                 "client=%s is over --cancel-rate-limit; its cancels are refused until it "
                 "slows down",
                 who);
    }
    return v != CANCEL_LIMIT_ALLOW;
}

static struct cancel_job *client_job(struct cancel_table *t, const struct cancel_request *r)
{
    if (atomic_fetch_add(&t->held_fds, 1) >= CANCEL_MAX_HELD_FDS) {
        atomic_fetch_sub(&t->held_fds, 1);
        return NULL;
    }
    struct cancel_job *j = calloc(1, sizeof(*j));
    if (!j) {
        atomic_fetch_sub(&t->held_fds, 1);
        return NULL;
    }
    j->t = t;
    j->pid = r->pid;
    j->secret = r->secret;
    j->close_fd = r->fd;
    j->from_client = true;
    j->holds_slot = true;
    return j;
}

static void route_to_peer(struct cancel_table *t, const struct cancel_request *r, int owner)
{
    struct cancel_job *j = client_job(t, r);
    if (!j) {
        answer_now(r, METRICS_CANCEL_DROPPED);
        return;
    }
    j->peer_id = owner;
    enum cancel_peer_submit s = cancel_peers_submit(t->peers, j);
    if (s == CANCEL_PEER_DOWN)
        cancel_job_finish(j, CANCEL_FAILED, METRICS_CANCEL_FAILED);
    else if (s == CANCEL_PEER_FULL)
        cancel_job_finish(j, CANCEL_FAILED, METRICS_CANCEL_DROPPED);
}

static void match_locally(struct cancel_table *t, const struct cancel_request *r)
{
    bool coalesced = false;
    struct cancel_entry *e = pin_entry(t, r->pid, r->secret, &coalesced);
    if (!e) {
        answer_now(r, coalesced ? METRICS_CANCEL_COALESCED : METRICS_CANCEL_UNKNOWN_KEY);
        return;
    }
    struct cancel_job *j = client_job(t, r);
    if (!j) {
        unpin_entry(t, e, true);
        answer_now(r, METRICS_CANCEL_DROPPED);
        return;
    }
    j->pinned = e;
    if (!local_enqueue(t, j))
        cancel_job_finish(j, CANCEL_FAILED, METRICS_CANCEL_DROPPED);
}

void cancel_client_request(struct cancel_table *t, const struct cancel_request *r)
{
    bool from_peer = r->via_peer && cancel_peers_is_peer_addr(t->peers, r->from);
    if (!from_peer && over_rate(t, r)) {
        answer_now(r, METRICS_CANCEL_RATE_LIMITED);
        return;
    }
    /* a forwarded cancel is never routed onward: a wrong --peer address (even this
     * instance's own) must not make it circulate */
    int owner = r->via_peer ? 0 : cancel_peers_owner(t->peers, r->secret);
    if (owner)
        route_to_peer(t, r, owner);
    else
        match_locally(t, r);
}

/* ---- the local pool ----------------------------------------------------------------------- */

/* Next job, or NULL once stopping; jobs still queued at stop are dropped, not run. */
static struct cancel_job *next_job(struct job_queue *q, struct cancel_job **dropped)
{
    pthread_mutex_lock(&q->mu);
    while (!q->head && !q->stopping)
        pthread_cond_wait(&q->cv, &q->mu);
    struct cancel_job *j = NULL;
    if (q->stopping) {
        *dropped = q->head;
        q->head = q->tail = NULL;
        q->nclient = 0;
    } else {
        j = q->head;
        q->head = j->next;
        if (!q->head)
            q->tail = NULL;
        q->nclient -= j->from_client;
        j->next = NULL;
    }
    pthread_mutex_unlock(&q->mu);
    return j;
}

static void *cancel_thread(void *arg)
{
    struct job_queue *q = arg;
    for (;;) {
        struct cancel_job *dropped = NULL;
        struct cancel_job *j = next_job(q, &dropped);
        if (!j) {
            while (dropped) {
                struct cancel_job *n = dropped->next;
                cancel_job_finish(dropped, CANCEL_FAILED, METRICS_CANCEL_DROPPED);
                dropped = n;
            }
            return NULL;
        }
        enum cancel_result r = j->pinned ? forward_pinned(j->pinned) : CANCEL_UNKNOWN_KEY;
        cancel_job_finish(j, r, outcome_of(r));
    }
}
