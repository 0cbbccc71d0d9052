/* Per-client session: startup, admission, upstream hand-over and the relay loop. */
#ifndef PGWP_SESSION_H
#define PGWP_SESSION_H

#include <stdint.h>
#include <sys/socket.h>

struct server;

/* Why a session ended; one cleanup path reads it. */
enum session_end {
    SE_NONE = 0,
    SE_CLIENT_EXIT,     /* Terminate message */
    SE_CLIENT_EOF,      /* client closed the socket */
    SE_CLIENT_ERROR,    /* socket error / write failed */
    SE_CLIENT_STALLED,  /* client stopped reading results */
    SE_PROTOCOL,        /* malformed input from the client */
    SE_STARTUP_TIMEOUT, /* no complete startup in time */
    SE_CANCEL_REQUEST,  /* connection only carried a CancelRequest */
    SE_REJECTED,        /* connection limit, TLS required, bad startup */
    SE_UPSTREAM_CONNECT,
    SE_UPSTREAM_LOST,
    SE_SHUTDOWN,
    SE_INTERNAL,
};

const char *session_end_name(enum session_end e);

/* Starts a detached thread serving the accepted socket fd. Returns 0 or -errno (then the fd
 * has been closed). */
int session_spawn(struct server *srv, int fd, const struct sockaddr_storage *peer);

#endif
