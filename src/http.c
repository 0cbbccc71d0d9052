#include "http.h"

#include "metrics.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
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

/* A scraper needs one connection; these caps keep a slow or hostile client from holding file
 * descriptors and the endpoint's single thread for long. */
#define HTTP_MAX_CONNS        64
#define HTTP_MAX_CONNS_PER_IP 16
#define HTTP_TIMEOUT_S        10

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define TEXT_CONTENT_TYPE    "text/plain; charset=utf-8"

struct http_server {
    struct MHD_Daemon *daemon;
    int (*health)(void *arg);
    void *arg;
    int port;
};

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

static HTTP_MHD_RESULT handle_request(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **req_cls)
{
    const struct http_server *s = cls;
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)req_cls;

    /* HEAD is GET without a body (MHD drops the body itself); HTTP requires servers to allow
     * both, and some load-balancer health checks only send HEAD. */
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
    if (strcmp(url, "/metrics") == 0)
        return reply_metrics(conn);
    if (strcmp(url, "/healthz") == 0) {
        int healthy = s->health ? s->health(s->arg) : 1;
        return healthy ? reply_text(conn, MHD_HTTP_OK, "ok\n")
                       : reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable\n");
    }
    return reply_text(conn, MHD_HTTP_NOT_FOUND, "not found\n");
}

/* "host:port", with brackets for IPv6 so the port cannot be mistaken for part of the address. */
static void format_endpoint(char *buf, size_t buflen, const char *host, int port)
{
    if (!host || !*host)
        snprintf(buf, buflen, "*:%d", port);
    else if (strchr(host, ':'))
        snprintf(buf, buflen, "[%s]:%d", host, port);
    else
        snprintf(buf, buflen, "%s:%d", host, port);
}

static int bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        return -errno;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static int bind_one(const struct addrinfo *ai)
{
    int one = 1;
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0)
        return -errno;
    /* Lets a restarted proxy rebind while old scrape connections sit in TIME_WAIT. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, HTTP_MAX_CONNS) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

/* We bind the socket ourselves instead of letting MHD do it: MHD reports only "failed", and an
 * operator needs to see "Address already in use" or "Cannot assign requested address". */
static int listen_on(const char *host, int port, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char portstr[16];
    char where[128];
    int fd = -EADDRNOTAVAIL;

    format_endpoint(where, sizeof(where), host, port);
    if (port < 0 || port > 65535) {
        snprintf(err, errlen, "cannot listen on %s: port must be between 0 and 65535", where);
        return -EINVAL;
    }
    snprintf(portstr, sizeof(portstr), "%d", port);
    int rc = getaddrinfo(host && *host ? host : NULL, portstr, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot listen on %s: not a numeric IPv4/IPv6 address (%s)", where,
                 gai_strerror(rc));
        return -EINVAL;
    }
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = bind_one(ai);
        if (fd >= 0)
            break;
    }
    if (fd < 0)
        snprintf(err, errlen, "cannot listen on %s: %s", where, strerror(-fd));
    freeaddrinfo(res);
    return fd;
}

struct http_server *http_start(const char *host, int port, int (*health)(void *arg), void *arg,
                               char *err, size_t errlen)
{
    struct http_server *s = NULL;
    int fd = -1;
    char where[128];

    s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    s->health = health;
    s->arg = arg;
    fd = listen_on(host, port, err, errlen);
    if (fd < 0)
        goto fail;
    s->port = bound_port(fd);
    if (s->port < 0) {
        format_endpoint(where, sizeof(where), host, port);
        snprintf(err, errlen, "cannot listen on %s: %s", where, strerror(-s->port));
        goto fail;
    }

    unsigned int flags = MHD_USE_AUTO_INTERNAL_THREAD;
    if (host && strchr(host, ':'))
        flags |= MHD_USE_IPv6;
    /* MHD owns the socket from here on: it closes it on stop and also when start fails
     * (checked against 0.9.75), so closing it again could hit a descriptor another thread
     * has just been given. */
    int lfd = fd;
    fd = -1;
    s->daemon = MHD_start_daemon(flags, (uint16_t)s->port, NULL, NULL, handle_request, s,
                                 MHD_OPTION_LISTEN_SOCKET, lfd, MHD_OPTION_CONNECTION_LIMIT,
                                 (unsigned int)HTTP_MAX_CONNS, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                                 (unsigned int)HTTP_MAX_CONNS_PER_IP, MHD_OPTION_CONNECTION_TIMEOUT,
                                 (unsigned int)HTTP_TIMEOUT_S, MHD_OPTION_END);
    if (!s->daemon) {
        format_endpoint(where, sizeof(where), host, s->port);
        snprintf(err, errlen, "cannot start HTTP server on %s (libmicrohttpd failed)", where);
        goto fail;
    }
    return s;

fail:
    if (fd >= 0)
        close(fd);
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
    free(s);
}
