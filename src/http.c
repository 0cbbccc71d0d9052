#include "http.h"

#include "addr.h"
#include "listen.h"
#include "metrics.h"
#include "netio.h"

#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The access handler's return type became an enum in 0.9.71; older distributions still ship
 * the int version. */
#if MHD_VERSION >= 0x00097002
#define HTTP_MHD_RESULT enum MHD_Result
#else
#define HTTP_MHD_RESULT int
#endif

/* A scraper or a health check needs one connection for a few milliseconds. A client that holds
 * connections without finishing a request (slowloris) must not lock the checks out: every
 * connection has HTTP_DEADLINE_MS to deliver a complete request and take its answer, an
 * address (an IPv6 /64) gets HTTP_MAX_CONNS_PER_ADDR of them, and once HTTP_MAX_CONNS are
 * open a new connection makes room by closing the oldest one that is not being answered.
 * MHD's own limit is higher, so a new connection is accepted while evicted ones close. */
#define HTTP_MAX_CONNS          64
#define HTTP_HARD_CONNS         80
#define HTTP_MAX_CONNS_PER_ADDR 4
#define HTTP_DEADLINE_MS        5000
#define HTTP_IDLE_TIMEOUT_S     5
#define HTTP_WATCH_MS           100 /* slack the watchdog allows past a deadline */

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define TEXT_CONTENT_TYPE    "text/plain; charset=utf-8"

/* One open connection, as MHD reported it. fd stays valid while `used`: MHD reports a close
 * (NOTIFY_CLOSED, which clears `used` under mu) before it closes the socket. */
struct http_conn {
    bool used;
    bool answering; /* a complete request is being answered */
    bool shut;      /* shut down by us; MHD closes it on its next turn */
    int fd;
    struct addr_key key;
    int64_t since_ms; /* accepted, or the previous answer completed */
};

struct http_server {
    struct MHD_Daemon *daemon;
    http_health_fn health;
    void *arg;
    int port;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping, watching;
    pthread_t watchdog;
    struct http_conn conns[HTTP_HARD_CONNS];
};

/* ---- connection slots: deadline, per-address share, eviction ------------------------------ */

/* Counted first, so whoever sees the close also sees it counted. */
static void shut_conn(struct http_conn *c, enum metrics_http_close why)
{
    metrics_http_closed(why);
    c->shut = true;
    shutdown(c->fd, SHUT_RDWR);
}

/* Under mu: with more than HTTP_MAX_CONNS open, the oldest one not being answered (a slow or
 * idle client) is closed to make room; a fresh check is answered within milliseconds, so it
 * is never the oldest for long. */
static void evict_if_full(struct http_server *s, const struct http_conn *fresh)
{
    int open = 0;
    struct http_conn *oldest = NULL;
    for (int i = 0; i < HTTP_HARD_CONNS; i++) {
        struct http_conn *c = &s->conns[i];
        if (!c->used || c->shut)
            continue;
        open++;
        if (c != fresh && !c->answering && (!oldest || c->since_ms < oldest->since_ms))
            oldest = c;
    }
    if (open > HTTP_MAX_CONNS && oldest)
        shut_conn(oldest, METRICS_HTTP_EVICTED);
}

/* Under mu: a new connection beyond its address's share is closed at once. */
static bool over_address_share(struct http_server *s, const struct http_conn *fresh)
{
    int same = 0;
    for (int i = 0; i < HTTP_HARD_CONNS; i++) {
        const struct http_conn *c = &s->conns[i];
        if (c != fresh && c->used && !c->shut && addr_key_equal(&c->key, &fresh->key))
            same++;
    }
    return same >= HTTP_MAX_CONNS_PER_ADDR;
}

static void conn_started(struct http_server *s, struct MHD_Connection *conn, void **socket_context)
{
    const union MHD_ConnectionInfo *fdi =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    const union MHD_ConnectionInfo *ai =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!fdi)
        return;
    const struct sockaddr *sa = ai ? ai->client_addr : NULL;
    socklen_t salen = !sa                         ? 0
                      : sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                  : sizeof(struct sockaddr_in);
    pthread_mutex_lock(&s->mu);
    struct http_conn *c = NULL;
    for (int i = 0; i < HTTP_HARD_CONNS && !c; i++)
        if (!s->conns[i].used)
            c = &s->conns[i];
    if (c) {
        *c = (struct http_conn){.used = true, .fd = fdi->connect_fd, .since_ms = netio_now_ms()};
        addr_key_from(sa, salen, &c->key);
        *socket_context = c;
        pthread_cond_signal(&s->cv); /* the watchdog learns of the new deadline */
        if (over_address_share(s, c))
            shut_conn(c, METRICS_HTTP_ADDRESS_LIMIT);
        else
            evict_if_full(s, c);
    }
    pthread_mutex_unlock(&s->mu);
}

static void notify_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                              enum MHD_ConnectionNotificationCode toe)
{
    struct http_server *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        conn_started(s, conn, socket_context);
        return;
    }
    pthread_mutex_lock(&s->mu);
    struct http_conn *c = *socket_context;
    if (c)
        c->used = false;
    *socket_context = NULL;
    pthread_mutex_unlock(&s->mu);
}

static void mark_answering(struct http_server *s, struct MHD_Connection *conn, bool answering)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    pthread_mutex_lock(&s->mu);
    struct http_conn *c = ci ? ci->socket_context : NULL;
    if (c && c->used) {
        c->answering = answering;
        if (!answering) /* a kept-alive connection gets a new deadline for its next request */
            c->since_ms = netio_now_ms();
    }
    pthread_mutex_unlock(&s->mu);
}

static void request_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                              enum MHD_RequestTerminationCode toe)
{
    (void)toe;
    (void)req_cls;
    mark_answering(cls, conn, false);
}

/* MHD has idle timeouts only: a client that sends one byte now and then would hold a
 * connection forever. This thread closes connections past their absolute deadline; it sleeps
 * until the next deadline (a new connection wakes it), so an idle endpoint costs nothing. */
static void *watchdog(void *arg)
{
    struct http_server *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        int64_t now = netio_now_ms(), next = 0;
        for (int i = 0; i < HTTP_HARD_CONNS; i++) {
            struct http_conn *c = &s->conns[i];
            if (!c->used || c->shut)
                continue;
            if (now - c->since_ms >= HTTP_DEADLINE_MS)
                shut_conn(c, METRICS_HTTP_DEADLINE);
            else if (!next || c->since_ms + HTTP_DEADLINE_MS < next)
                next = c->since_ms + HTTP_DEADLINE_MS;
        }
        if (next) {
            struct timespec ts;
            /* a little late rather than early: no second pass for the same deadline */
            netio_time_in(CLOCK_MONOTONIC, next - now + HTTP_WATCH_MS, &ts);
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        } else {
            pthread_cond_wait(&s->cv, &s->mu);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static int watchdog_start(struct http_server *s)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&s->mu, NULL);
    if (pthread_create(&s->watchdog, NULL, watchdog, s) != 0)
        return -1;
    s->watching = true;
    return 0;
}

static void watchdog_stop(struct http_server *s)
{
    if (s->watching) {
        pthread_mutex_lock(&s->mu);
        s->stopping = true;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->watchdog, NULL);
        s->watching = false;
    }
}

static HTTP_MHD_RESULT reply(struct MHD_Connection *conn, unsigned int status,
                             struct MHD_Response *resp, const char *content_type)
{
    HTTP_MHD_RESULT ret = MHD_NO;

    if (!resp)
        return MHD_NO;
    if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) != MHD_YES)
        goto out;
    /* Metrics and health are live values: a cache in between would only lie. */
    if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES)
        goto out;
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED &&
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD") != MHD_YES)
        goto out;
    ret = MHD_queue_response(conn, status, resp);
out:
    MHD_destroy_response(resp);
    return ret;
}

static HTTP_MHD_RESULT reply_text(struct MHD_Connection *conn, unsigned int status,
                                  const char *text)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    return reply(conn, status, resp, TEXT_CONTENT_TYPE);
}

static HTTP_MHD_RESULT reply_metrics(struct MHD_Connection *conn)
{
    size_t len = 0;
    char *text = metrics_render(&len);
    if (!text)
        return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");

    /* The response takes ownership and frees with free(), matching metrics_render's malloc. */
    struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback(len, text, free);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    return reply(conn, MHD_HTTP_OK, resp, METRICS_CONTENT_TYPE);
}

/* "ok", or "unavailable: <reason>" (the reason names the failing part, never a secret). */
static HTTP_MHD_RESULT reply_health(struct MHD_Connection *conn, const struct http_server *s)
{
    char reason[128] = "";
    int healthy = s->health ? s->health(s->arg, reason, sizeof(reason)) : 1;
    if (healthy)
        return reply_text(conn, MHD_HTTP_OK, "ok\n");
    char body[160];
    snprintf(body, sizeof(body), "unavailable%s%s\n", reason[0] ? ": " : "", reason);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_COPY);
    return reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, resp, TEXT_CONTENT_TYPE);
}

static HTTP_MHD_RESULT handle_request(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **req_cls)
{
    struct http_server *s = cls;
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    if (!*req_cls) { /* first call: the request's headers are complete */
        *req_cls = s;
        mark_answering(s, conn, true);
    }

    /* HEAD is GET without a body (MHD drops the body itself); HTTP requires servers to allow
     * both, and some load-balancer health checks only send HEAD. */
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
    if (strcmp(url, "/metrics") == 0)
        return reply_metrics(conn);
    if (strcmp(url, "/healthz") == 0)
        return reply_health(conn, s);
    return reply_text(conn, MHD_HTTP_NOT_FOUND, "not found\n");
}

struct http_server *http_start(const char *host, int port, http_health_fn health, void *arg,
                               char *err, size_t errlen)
{
    struct http_server *s = NULL;
    int fd = -1;
    char where[300];

    s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    s->health = health;
    s->arg = arg;
    if (watchdog_start(s)) {
        snprintf(err, errlen, "cannot start the HTTP watchdog thread");
        goto fail;
    }
    /* We bind the socket ourselves instead of letting MHD do it: MHD reports only "failed",
     * and an operator needs to see "Address already in use" or "Cannot assign requested
     * address". */
    fd = listen_tcp_numeric(host, port, HTTP_MAX_CONNS, &s->port, err, errlen);
    if (fd < 0)
        goto fail;

    unsigned int flags = MHD_USE_AUTO_INTERNAL_THREAD;
    if (host && strchr(host, ':'))
        flags |= MHD_USE_IPv6;
    /* MHD owns the socket from here on: it closes it on stop and also when start fails
     * (checked against 0.9.75), so closing it again could hit a descriptor another thread
     * has just been given. */
    int lfd = fd;
    fd = -1;
    s->daemon = MHD_start_daemon(
        flags, (uint16_t)s->port, NULL, NULL, handle_request, s, MHD_OPTION_LISTEN_SOCKET, lfd,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)HTTP_HARD_CONNS, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)HTTP_IDLE_TIMEOUT_S, MHD_OPTION_NOTIFY_CONNECTION, notify_connection, s,
        MHD_OPTION_NOTIFY_COMPLETED, request_completed, s, MHD_OPTION_END);
    if (!s->daemon) {
        listen_format_endpoint(where, sizeof(where), host, s->port);
        snprintf(err, errlen, "cannot start HTTP server on %s (libmicrohttpd failed)", where);
        goto fail;
    }
    return s;

fail:
    if (fd >= 0)
        close(fd);
    if (s && s->watching) {
        watchdog_stop(s);
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
    }
    free(s);
    return NULL;
}

int http_port(const struct http_server *s)
{
    return s ? s->port : -1;
}

void http_stop(struct http_server *s)
{
    if (!s)
        return;
    /* Waits for the internal thread to finish, so no callback runs after this returns; it
     * also closes the listen socket we handed over. */
    MHD_stop_daemon(s->daemon);
    watchdog_stop(s);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
