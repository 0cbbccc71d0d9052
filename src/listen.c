#include "listen.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

void listen_format_endpoint(char *buf, size_t buflen, const char *host, int port)
{
    if (!host || !*host)
        snprintf(buf, buflen, "*:%d", port);
    else if (strchr(host, ':'))
        snprintf(buf, buflen, "[%s]:%d", host, port);
    else
        snprintf(buf, buflen, "%s:%d", host, port);
}

/* A non-blocking listening socket on one address, or -errno. v6only keeps an IPv6 wildcard
 * off the IPv4 addresses, which get their own socket when every address is bound. */
static int open_listener(const struct addrinfo *ai, int backlog, bool v6only)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0)
        return -errno;
    int one = 1;
    /* a restarted proxy rebinds while old connections sit in TIME_WAIT */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        (v6only && ai->ai_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, backlog) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int listen_tcp(const char *host, int port, int backlog, int *fds, int max, char *err, size_t errlen)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    char portstr[16], where[300];
    snprintf(portstr, sizeof(portstr), "%d", port);
    int rc = getaddrinfo(host && *host ? host : NULL, portstr, &hints, &res);
    if (rc) {
        snprintf(err, errlen, "cannot resolve host '%s': %s", host ? host : "", gai_strerror(rc));
        return -1;
    }
    int n = 0, last = -EADDRNOTAVAIL;
    for (struct addrinfo *ai = res; ai && n < max; ai = ai->ai_next) {
        int fd = open_listener(ai, backlog, true);
        if (fd < 0)
            last = fd;
        else
            fds[n++] = fd;
    }
    freeaddrinfo(res);
    if (n == 0) {
        listen_format_endpoint(where, sizeof(where), host, port);
        snprintf(err, errlen, "cannot listen on %s: %s", where, strerror(-last));
        return -1;
    }
    return n;
}

int listen_tcp_numeric(const char *host, int port, int backlog, int *bound_port, char *err,
                       size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char portstr[16], where[300];
    int fd = -EADDRNOTAVAIL;

    listen_format_endpoint(where, sizeof(where), host, port);
    if (port < 0 || port > 65535) {
        snprintf(err, errlen, "cannot listen on %s: port must be between 0 and 65535", where);
        return -1;
    }
    snprintf(portstr, sizeof(portstr), "%d", port);
    int rc = getaddrinfo(host && *host ? host : NULL, portstr, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot listen on %s: not a numeric IPv4/IPv6 address (%s)", where,
                 gai_strerror(rc));
        return -1;
    }
    /* one socket: an IPv6 wildcard also takes IPv4 unless the system says otherwise */
    for (const struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next)
        fd = open_listener(ai, backlog, false);
    freeaddrinfo(res);
    int bound = fd < 0 ? fd : listen_bound_port(fd);
    if (bound < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", where, strerror(-bound));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *bound_port = bound;
    return fd;
}

/* The pid in a lock file, or 0 when unreadable. */
static long lock_owner(const char *path)
{
    FILE *f = fopen(path, "r");
    long pid = 0;
    if (f) {
        if (fscanf(f, "%ld", &pid) != 1)
            pid = 0;
        fclose(f);
    }
    return pid;
}

static bool alive(long pid)
{
    return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

/* Creates the lock file holding our pid, replacing a stale one. */
static int take_lock(struct listen_unix *u, char *err, size_t errlen)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        int fd = open(u->lock_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
            char buf[32];
            int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
            ssize_t w = write(fd, buf, (size_t)n);
            close(fd);
            if (w == n)
                return 0;
            unlink(u->lock_path);
            snprintf(err, errlen, "cannot write lock file '%s'", u->lock_path);
            return -1;
        }
        if (errno != EEXIST) {
            snprintf(err, errlen, "cannot create lock file '%s': %s", u->lock_path,
                     strerror(errno));
            return -1;
        }
        long pid = lock_owner(u->lock_path);
        if (alive(pid) && pid != (long)getpid()) {
            snprintf(err, errlen,
                     "lock file '%s' is held by process %ld: is another server listening on "
                     "'%s'?",
                     u->lock_path, pid, u->path);
            return -1;
        }
        unlink(u->lock_path); /* stale: its process is gone */
    }
    snprintf(err, errlen, "cannot take lock file '%s'", u->lock_path);
    return -1;
}

int listen_unix(const char *dir, int port, unsigned mode, int backlog, struct listen_unix *out,
                char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->fd = -1;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int n = snprintf(out->path, sizeof(out->path), "%s/.s.PGSQL.%d", dir, port);
    if (n < 0 || (size_t)n >= sizeof(out->path) || (size_t)n >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "--unix-socket-dir '%s' is too long for a socket path", dir);
        return -1;
    }
    snprintf(out->lock_path, sizeof(out->lock_path), "%s.lock", out->path);
    if (take_lock(out, err, errlen))
        return -1;
    unlink(out->path); /* ours now: whatever was there is stale */
    memcpy(sa.sun_path, out->path, (size_t)n + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || chmod(out->path, mode) ||
        listen(fd, backlog)) {
        snprintf(err, errlen, "cannot listen on '%s': %s", out->path, strerror(errno));
        if (fd >= 0)
            close(fd);
        unlink(out->path);
        unlink(out->lock_path);
        return -1;
    }
    out->fd = fd;
    return 0;
}

void listen_unix_close(struct listen_unix *u)
{
    if (u->fd < 0)
        return;
    close(u->fd);
    u->fd = -1;
    unlink(u->path);
    if (lock_owner(u->lock_path) == (long)getpid())
        unlink(u->lock_path);
}

int listen_accept(int lfd, struct sockaddr_storage *peer)
{
    socklen_t plen = sizeof(*peer);
    memset(peer, 0, sizeof(*peer));
    int fd = accept4(lfd, (struct sockaddr *)peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int listen_bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        return -errno;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}
