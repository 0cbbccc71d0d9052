/* Listening sockets, for the client port and the metrics endpoint: TCP on every address a
 * host name resolves to, and a PostgreSQL-style Unix socket DIR/.s.PGSQL.<port> guarded by a
 * lock file, so a second instance never steals a live socket and a stale one is replaced. */
#ifndef PGWP_LISTEN_H
#define PGWP_LISTEN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define LISTEN_MAX_TCP 8

struct listen_unix {
    int fd;              /* -1 = none */
    char path[108];      /* the socket */
    char lock_path[120]; /* its lock file, holding our pid */
};

/* "host:port", with brackets for IPv6 so the port cannot be read as part of the address;
 * "*:port" for no host. */
void listen_format_endpoint(char *buf, size_t buflen, const char *host, int port);

/* Non-blocking listening sockets on host:port (every address it resolves to, at most max).
 * Returns how many, or -1 with err ("cannot resolve host ..." or "cannot listen on
 * host:port: <why>"). */
int listen_tcp(const char *host, int port, int backlog, int *fds, int max, char *err,
               size_t errlen);

/* One non-blocking listening socket on a numeric IPv4/IPv6 address (NULL or "" = any), for an
 * endpoint given as HOST:PORT; port 0 lets the kernel pick, *bound_port says which. Returns
 * the fd, or -1 with err "cannot listen on host:port: <why>" (the port's range, a host that
 * is not numeric, or the system's reason such as "Address already in use"). */
int listen_tcp_numeric(const char *host, int port, int backlog, int *bound_port, char *err,
                       size_t errlen);

/* DIR/.s.PGSQL.<port> with permissions mode. A lock file held by a live process refuses the
 * socket; a stale one (and its socket) is replaced. Returns 0 or -1 with err. */
int listen_unix(const char *dir, int port, unsigned mode, int backlog, struct listen_unix *out,
                char *err, size_t errlen);
/* Closes the socket and removes it and its lock file. */
void listen_unix_close(struct listen_unix *u);

/* accept4 non-blocking + close-on-exec. The fd, or -errno. */
int listen_accept(int lfd, struct sockaddr_storage *peer);

/* The port a listening socket is bound to, or -errno. */
int listen_bound_port(int fd);

#endif
