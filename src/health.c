#include "health.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "netio.h"
#include "upstream.h"
#include "wire.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

struct health {
    pthread_mutex_t mu;
    pthread_cond_t wanted; /* to the thread: probe now, or stop */
    pthread_cond_t landed; /* to waiting checks: a probe finished */
    char *dsn;
    bool want, probing, stopping;
    unsigned long generation; /* probes finished */
    int64_t result_ms;        /* when the last probe finished; 0 = none yet */
    enum metrics_probe_result result;
    int stop_fd; /* eventfd: interrupts a probe in progress */
    pthread_t thread;
};

static const char *reason_text(enum metrics_probe_result r)
{
    switch (r) {
    case METRICS_PROBE_OK:
        return "ok";
    case METRICS_PROBE_AUTH_FAILED:
        return "upstream authentication failed";
    case METRICS_PROBE_TOO_MANY_CONNECTIONS:
        return "upstream has too many connections";
    case METRICS_PROBE_UNREACHABLE:
        return "upstream unreachable";
    case METRICS_PROBE_TIMEOUT:
        return "upstream did not answer in time";
    default:
        return "upstream refused the connection";
    }
}

static enum metrics_probe_result classify(const char sqlstate[6])
{
    if (strcmp(sqlstate, "28P01") == 0 || strcmp(sqlstate, "28000") == 0)
        return METRICS_PROBE_AUTH_FAILED;
    if (strcmp(sqlstate, "53300") == 0)
        return METRICS_PROBE_TOO_MANY_CONNECTIONS;
    if (strcmp(sqlstate, "08001") == 0)
        return METRICS_PROBE_UNREACHABLE;
    return METRICS_PROBE_REJECTED;
}

/* Drives a non-blocking connect to completion, the deadline, or a stop. */
static enum metrics_probe_result connect_until(struct upstream *u, int stop_fd, int64_t deadline)
{
    char code[6], err[256];
    for (;;) {
        int64_t left = deadline - netio_now_ms();
        if (left <= 0)
            return METRICS_PROBE_TIMEOUT;
        struct pollfd pfd[2] = {
            {.fd = upstream_socket(u), .events = u->reading ? POLLIN : POLLOUT},
            {.fd = stop_fd, .events = POLLIN},
        };
        int n = poll(pfd, 2, (int)left);
        if (n < 0 && errno != EINTR)
            return METRICS_PROBE_UNREACHABLE;
        if (pfd[1].revents)
            return METRICS_PROBE_TIMEOUT; /* stopping: no answer */
        if (n <= 0 || !pfd[0].revents)
            continue;
        int rc = upstream_step(u, code, err, sizeof(err));
        if (rc == 1)
            return METRICS_PROBE_OK;
        if (rc < 0)
            return classify(code);
    }
}

/* One full session with the DSN, as a client's would be, closed at once. */
static enum metrics_probe_result probe(const char *dsn, int stop_fd)
{
    struct config cfg;
    config_defaults(&cfg);
    cfg.upstream_dsn = (char *)dsn; /* only read */
    struct wire_startup sp = {.kind = WIRE_PKT_STARTUP, .version = WIRE_PROTO_3_0};
    sp.params[0] = (struct wire_param){"user", "probe"};
    sp.params[1] = (struct wire_param){"application_name", "pgwire-proxy healthz"};
    sp.nparams = 2;
    struct upstream_request req = {.cfg = &cfg, .startup = &sp, .client_addr = "local"};
    struct upstream u;
    char code[6], err[256];
    if (upstream_start(&u, &req, code, err, sizeof(err)))
        return classify(code);
    int64_t deadline = netio_now_ms() + HEALTH_PROBE_TIMEOUT_MS;
    if (u.deadline_ms && u.deadline_ms < deadline)
        deadline = u.deadline_ms;
    enum metrics_probe_result r = connect_until(&u, stop_fd, deadline);
    upstream_close(&u);
    return r;
}

static void report(enum metrics_probe_result before, bool had, enum metrics_probe_result now)
{
    if (had && before == now)
        return;
    if (now == METRICS_PROBE_OK)
        LOG_INFO(0, "health_ok", "upstream probe succeeded: /healthz answers 200");
    else
        LOG_WARN(0, "health_failed", "upstream probe: %s; /healthz answers 503", reason_text(now));
}

static void *probe_thread(void *arg)
{
    struct health *h = arg;
    pthread_mutex_lock(&h->mu);
    for (;;) {
        while (!h->want && !h->stopping)
            pthread_cond_wait(&h->wanted, &h->mu);
        if (h->stopping)
            break;
        h->want = false;
        h->probing = true;
        char *dsn = h->dsn ? strdup(h->dsn) : NULL;
        unsigned long gen = h->generation;
        pthread_mutex_unlock(&h->mu);
        enum metrics_probe_result r = dsn ? probe(dsn, h->stop_fd) : METRICS_PROBE_REJECTED;
        free(dsn);
        metrics_upstream_probe(r); /* counted before a waiting check can see the result */
        pthread_mutex_lock(&h->mu);
        h->probing = false;
        if (h->stopping)
            break;
        bool had = h->result_ms != 0;
        enum metrics_probe_result before = h->result;
        h->result = r;
        h->result_ms = netio_now_ms();
        h->generation = gen + 1;
        pthread_cond_broadcast(&h->landed);
        pthread_mutex_unlock(&h->mu);
        report(before, had, r);
        pthread_mutex_lock(&h->mu);
    }
    pthread_cond_broadcast(&h->landed);
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

struct health *health_start(void)
{
    struct health *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->wanted, NULL);
    pthread_cond_init(&h->landed, &ca);
    pthread_condattr_destroy(&ca);
    h->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (h->stop_fd < 0 || pthread_create(&h->thread, NULL, probe_thread, h) != 0) {
        if (h->stop_fd >= 0)
            close(h->stop_fd);
        pthread_cond_destroy(&h->wanted);
        pthread_cond_destroy(&h->landed);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return NULL;
    }
    return h;
}

void health_set_upstream(struct health *h, const char *dsn)
{
    if (!h)
        return;
    char *copy = dsn ? strdup(dsn) : NULL;
    pthread_mutex_lock(&h->mu);
    if (!h->dsn || !copy || strcmp(h->dsn, copy) != 0) {
        free(h->dsn);
        h->dsn = copy;
        copy = NULL;
        h->result_ms = 0; /* the last answer was about another upstream */
        h->want = true;   /* have an answer before the first check asks */
        pthread_cond_signal(&h->wanted);
    }
    pthread_mutex_unlock(&h->mu);
    free(copy);
}

static void deadline_in(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

int health_check(struct health *h, char *reason, size_t len)
{
    pthread_mutex_lock(&h->mu);
    int64_t now = netio_now_ms();
    if (!h->result_ms || now - h->result_ms >= HEALTH_INTERVAL_MS) {
        if (!h->probing && !h->want) {
            h->want = true;
            pthread_cond_signal(&h->wanted);
        }
        unsigned long gen = h->generation;
        struct timespec until;
        deadline_in(&until, HEALTH_ANSWER_WAIT_MS);
        while (h->generation == gen && !h->stopping)
            if (pthread_cond_timedwait(&h->landed, &h->mu, &until) == ETIMEDOUT)
                break;
        now = netio_now_ms();
    }
    bool known = h->result_ms && now - h->result_ms < HEALTH_MAX_AGE_MS;
    int ok = known && h->result == METRICS_PROBE_OK;
    snprintf(reason, len, "%s", known ? reason_text(h->result) : "upstream check pending");
    pthread_mutex_unlock(&h->mu);
    return ok;
}

void health_stop(struct health *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    h->stopping = true;
    pthread_cond_broadcast(&h->wanted);
    pthread_mutex_unlock(&h->mu);
    uint64_t one = 1;
    ssize_t w = write(h->stop_fd, &one, sizeof(one));
    (void)w;
    pthread_join(h->thread, NULL);
    close(h->stop_fd);
    pthread_cond_destroy(&h->wanted);
    pthread_cond_destroy(&h->landed);
    pthread_mutex_destroy(&h->mu);
    free(h->dsn);
    free(h);
}
