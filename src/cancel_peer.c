/* Forwarding CancelRequests to the peer instance that owns the key: a queue per peer and one
 * thread that drives every forward with non-blocking sockets, so a peer that is down costs
 * its own queue and nothing else, and a stop interrupts forwards in flight at once. */
#include "addr.h"
#include "cancel_int.h"
#include "config.h"
#include "log.h"
#include "netio.h"
#include "wire.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_PEERS       64
#define PEER_ADDRS      4
#define PEER_QUEUE_MAX  16   /* waiting per peer; more are dropped */
#define PEER_INFLIGHT   2    /* forwards in flight per peer */
#define PEER_FLIGHTS    64   /* forwards in flight over all peers */
#define PEER_CONNECT_MS 1000 /* peers are on the same network: a slower connect means down */
#define PEER_TIMEOUT_MS 3000 /* connect, send, and the peer closing once it has canceled */
#define PEER_DOWN_MS    5000 /* after a failure, cancels for that peer fail at once this long */

struct peer_link {
    int id;
    char host[256];
    int port;
    struct sockaddr_storage addrs[PEER_ADDRS];
    socklen_t addrlens[PEER_ADDRS];
    int naddrs;
    struct cancel_job *head, *tail;
    size_t queued;
    int inflight;
    int64_t down_until_ms;
    bool suspect; /* the last forward failed: one at a time until one succeeds */
};

struct flight {
    struct cancel_job *j; /* NULL: slot free */
    int fd;
    int peer_id;
    bool sent;
    int64_t connect_by, done_by;
    struct sockaddr_storage addr;
    socklen_t addrlen;
};

struct cancel_peers {
    pthread_mutex_t mu;
    int self_id;
    struct peer_link links[MAX_PEERS];
    size_t nlinks;
    bool stopping;
    int wake_fd;
    pthread_t thread;
    struct flight fl[PEER_FLIGHTS]; /* the forwarder thread's own */
};

static void *forwarder(void *arg);

struct cancel_peers *cancel_peers_new(void)
{
    struct cancel_peers *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    pthread_mutex_init(&p->mu, NULL);
    p->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->wake_fd < 0 || pthread_create(&p->thread, NULL, forwarder, p) != 0) {
        if (p->wake_fd >= 0)
            close(p->wake_fd);
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    return p;
}

static void wake(struct cancel_peers *p)
{
    uint64_t one = 1;
    ssize_t w = write(p->wake_fd, &one, sizeof(one));
    (void)w;
}

void cancel_peers_free(struct cancel_peers *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_mutex_unlock(&p->mu);
    wake(p);
    pthread_join(p->thread, NULL);
    close(p->wake_fd);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static void finish_all(struct cancel_job *j, enum metrics_cancel_outcome o)
{
    while (j) {
        struct cancel_job *n = j->next;
        cancel_job_finish(j, CANCEL_FAILED, o);
        j = n;
    }
}

/* Takes a link's queue onto *list (under p->mu). */
static void take_queue(struct peer_link *l, struct cancel_job **list)
{
    if (l->tail) {
        l->tail->next = *list;
        *list = l->head;
    }
    l->head = l->tail = NULL;
    l->queued = 0;
}

static struct peer_link *find_link(struct cancel_peers *p, int id)
{
    for (size_t i = 0; i < p->nlinks; i++)
        if (p->links[i].id == id)
            return &p->links[i];
    return NULL;
}

/* Resolved once, at start and on reload: a forward must not wait for DNS. */
static void resolve_link(struct peer_link *l)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", l->port);
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(l->host, port, &hints, &res);
    if (rc) {
        LOG_WARN(0, "cancel_peer_unresolved",
                 "peer %d: cannot resolve '%s' (%s); its cancels fail until a reload", l->id,
                 l->host, gai_strerror(rc));
        return;
    }
    for (struct addrinfo *ai = res; ai && l->naddrs < PEER_ADDRS; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof(l->addrs[0]))
            continue;
        memcpy(&l->addrs[l->naddrs], ai->ai_addr, ai->ai_addrlen);
        l->addrlens[l->naddrs++] = ai->ai_addrlen;
    }
    freeaddrinfo(res);
}

int cancel_peers_set(struct cancel_peers *p, int self_id, char *const *peers, size_t n)
{
    if (n > MAX_PEERS || self_id < 0 || self_id > 255)
        return -EINVAL;
    struct peer_link *next = calloc(n ? n : 1, sizeof(*next));
    if (!next)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (config_parse_peer(peers[i], &next[i].id, next[i].host, sizeof(next[i].host),
                              &next[i].port)) {
            free(next);
            return -EINVAL;
        }
    }
    for (size_t i = 0; i < n; i++)
        resolve_link(&next[i]);
    struct cancel_job *gone = NULL;
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->nlinks; i++) {
        struct peer_link *old = &p->links[i];
        struct peer_link *keep = NULL;
        for (size_t k = 0; k < n && !keep; k++)
            if (next[k].id == old->id && !next[k].head && !next[k].inflight)
                keep = &next[k];
        if (keep) { /* same peer id: its queue and state carry over */
            keep->head = old->head;
            keep->tail = old->tail;
            keep->queued = old->queued;
            keep->inflight = old->inflight;
            keep->down_until_ms = old->down_until_ms;
            keep->suspect = old->suspect;
        } else {
            take_queue(old, &gone);
        }
    }
    memcpy(p->links, next, n * sizeof(*next));
    p->nlinks = n;
    p->self_id = self_id;
    pthread_mutex_unlock(&p->mu);
    free(next);
    finish_all(gone, METRICS_CANCEL_DROPPED);
    return 0;
}

int cancel_peers_self_id(struct cancel_peers *p)
{
    pthread_mutex_lock(&p->mu);
    int id = p->self_id;
    pthread_mutex_unlock(&p->mu);
    return id;
}

int cancel_peers_owner(struct cancel_peers *p, uint32_t secret)
{
    int owner = (int)(secret >> 24), found = 0;
    pthread_mutex_lock(&p->mu);
    if (p->self_id && owner != p->self_id && find_link(p, owner))
        found = owner;
    pthread_mutex_unlock(&p->mu);
    return found;
}

bool cancel_peers_is_peer_addr(struct cancel_peers *p, const struct sockaddr *addr)
{
    bool yes = false;
    if (!addr)
        return false;
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->nlinks && !yes; i++)
        for (int k = 0; k < p->links[i].naddrs && !yes; k++)
            yes = addr_same_host((const struct sockaddr *)&p->links[i].addrs[k], addr);
    pthread_mutex_unlock(&p->mu);
    return yes;
}

enum cancel_peer_submit cancel_peers_submit(struct cancel_peers *p, struct cancel_job *j)
{
    enum cancel_peer_submit s = CANCEL_PEER_QUEUED;
    pthread_mutex_lock(&p->mu);
    struct peer_link *l = find_link(p, j->peer_id);
    if (!l || p->stopping || !l->naddrs || netio_now_ms() < l->down_until_ms) {
        s = CANCEL_PEER_DOWN;
    } else if (l->queued >= PEER_QUEUE_MAX) {
        s = CANCEL_PEER_FULL;
    } else {
        j->next = NULL;
        if (l->tail)
            l->tail->next = j;
        else
            l->head = j;
        l->tail = j;
        l->queued++;
    }
    pthread_mutex_unlock(&p->mu);
    if (s == CANCEL_PEER_QUEUED)
        wake(p);
    return s;
}

/* ---- the forwarder thread ----------------------------------------------------------------- */

static struct flight *free_flight(struct cancel_peers *p)
{
    for (int i = 0; i < PEER_FLIGHTS; i++)
        if (!p->fl[i].j)
            return &p->fl[i];
    return NULL;
}

/* Under p->mu: moves queued jobs into free flight slots (not yet connected), and the queues
 * of peers that are down onto *failed. */
static void assign_flights(struct cancel_peers *p, int64_t now, struct cancel_job **failed)
{
    for (size_t i = 0; i < p->nlinks; i++) {
        struct peer_link *l = &p->links[i];
        if (l->head && now < l->down_until_ms) {
            take_queue(l, failed);
            continue;
        }
        struct flight *f;
        while (l->head && l->inflight < (l->suspect ? 1 : PEER_INFLIGHT) && (f = free_flight(p))) {
            struct cancel_job *j = l->head;
            l->head = j->next;
            if (!l->head)
                l->tail = NULL;
            l->queued--;
            l->inflight++;
            j->next = NULL;
            *f = (struct flight){.j = j, .fd = -1, .peer_id = l->id};
            f->addr = l->addrs[0];
            f->addrlen = l->addrlens[0];
        }
    }
}

static void start_flight(struct flight *f, int64_t now)
{
    f->connect_by = now + PEER_CONNECT_MS;
    f->done_by = now + PEER_TIMEOUT_MS;
    f->fd = socket(f->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (f->fd >= 0 && connect(f->fd, (struct sockaddr *)&f->addr, f->addrlen) != 0 &&
        errno != EINPROGRESS) {
        close(f->fd);
        f->fd = -1;
    }
}

/* Records the end of a forward in its peer's state, and finishes the job. */
static void land_flight(struct cancel_peers *p, struct flight *f, bool ok, const char *why)
{
    struct cancel_job *failed = NULL;
    bool went_down = false;
    char where[300] = "";
    if (f->fd >= 0)
        close(f->fd);
    pthread_mutex_lock(&p->mu);
    struct peer_link *l = find_link(p, f->peer_id);
    if (l) {
        l->inflight--;
        if (ok) {
            l->suspect = false;
        } else {
            went_down = !l->suspect;
            l->suspect = true;
            l->down_until_ms = netio_now_ms() + PEER_DOWN_MS;
            take_queue(l, &failed);
            snprintf(where, sizeof(where), "%s:%d", l->host, l->port);
        }
    }
    pthread_mutex_unlock(&p->mu);
    if (went_down)
        LOG_WARN(0, "cancel_peer_down",
                 "peer %d (%s): %s; cancels for it fail at once for the next %d ms", f->peer_id,
                 where, why, PEER_DOWN_MS);
    cancel_job_finish(f->j, ok ? CANCEL_FORWARDED : CANCEL_FAILED,
                      ok ? METRICS_CANCEL_FORWARDED : METRICS_CANCEL_FAILED);
    finish_all(failed, METRICS_CANCEL_FAILED);
    *f = (struct flight){.fd = -1};
}

/* One poll result for a flight: connected → send the request; readable → the peer closed
 * (it has canceled, as PostgreSQL's cancel protocol has it). */
static void advance_flight(struct cancel_peers *p, struct flight *f, short revents, int64_t now)
{
    if (f->fd < 0) {
        land_flight(p, f, false, "connect failed");
        return;
    }
    if (!f->sent && (revents & (POLLOUT | POLLERR | POLLHUP))) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(f->fd, SOL_SOCKET, SO_ERROR, &err, &len) || err) {
            land_flight(p, f, false, "connect failed");
            return;
        }
        uint8_t pkt[16];
        wire_put_u32(pkt, 16);
        wire_put_u32(pkt + 4, WIRE_PEER_CANCEL_CODE);
        wire_put_u32(pkt + 8, f->j->pid);
        wire_put_u32(pkt + 12, f->j->secret);
        if (send(f->fd, pkt, sizeof(pkt), MSG_NOSIGNAL) != (ssize_t)sizeof(pkt)) {
            land_flight(p, f, false, "send failed");
            return;
        }
        f->sent = true;
        return;
    }
    if (f->sent && (revents & (POLLIN | POLLERR | POLLHUP))) {
        char buf[64];
        ssize_t n = recv(f->fd, buf, sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            land_flight(p, f, true, NULL);
            return;
        }
    }
    if (now >= f->done_by || (!f->sent && now >= f->connect_by))
        land_flight(p, f, false, f->sent ? "no answer in time" : "connect timed out");
}

/* Waits for the wake-up eventfd or any flight, then advances every flight. */
static void poll_flights(struct cancel_peers *p)
{
    struct pollfd pfd[PEER_FLIGHTS + 1];
    struct flight *who[PEER_FLIGHTS + 1];
    int n = 1, timeout = -1;
    int64_t now = netio_now_ms();
    pfd[0] = (struct pollfd){.fd = p->wake_fd, .events = POLLIN};
    for (int i = 0; i < PEER_FLIGHTS; i++) {
        struct flight *f = &p->fl[i];
        if (!f->j)
            continue;
        int64_t by = f->sent || f->done_by < f->connect_by ? f->done_by : f->connect_by;
        int left = by > now ? (int)(by - now) : 0;
        if (f->fd < 0)
            left = 0;
        if (timeout < 0 || left < timeout)
            timeout = left;
        who[n] = f;
        pfd[n++] = (struct pollfd){.fd = f->fd, .events = f->sent ? POLLIN : POLLOUT};
    }
    if (poll(pfd, (nfds_t)n, timeout) < 0 && errno != EINTR)
        return;
    if (pfd[0].revents & POLLIN) {
        uint64_t v;
        ssize_t r = read(p->wake_fd, &v, sizeof(v));
        (void)r;
    }
    now = netio_now_ms();
    for (int i = 1; i < n; i++)
        advance_flight(p, who[i], pfd[i].revents, now);
}

static void *forwarder(void *arg)
{
    struct cancel_peers *p = arg;
    for (;;) {
        struct cancel_job *failed = NULL, *dropped = NULL;
        struct flight *fresh[PEER_FLIGHTS];
        int nfresh = 0;
        pthread_mutex_lock(&p->mu);
        bool stop = p->stopping;
        if (stop) {
            for (size_t i = 0; i < p->nlinks; i++)
                take_queue(&p->links[i], &dropped);
        } else {
            assign_flights(p, netio_now_ms(), &failed);
        }
        pthread_mutex_unlock(&p->mu);
        finish_all(failed, METRICS_CANCEL_FAILED);
        finish_all(dropped, METRICS_CANCEL_DROPPED);
        for (int i = 0; i < PEER_FLIGHTS; i++) {
            struct flight *f = &p->fl[i];
            if (f->j && stop) {
                if (f->fd >= 0)
                    close(f->fd);
                cancel_job_finish(f->j, CANCEL_FAILED, METRICS_CANCEL_DROPPED);
                *f = (struct flight){.fd = -1};
            } else if (f->j && f->fd < 0 && !f->connect_by) {
                fresh[nfresh++] = f;
            }
        }
        if (stop)
            return NULL;
        for (int i = 0; i < nfresh; i++)
            start_flight(fresh[i], netio_now_ms());
        poll_flights(p);
    }
}
