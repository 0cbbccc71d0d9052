#include "netio.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* recv(2) and send(2) without libc's wrappers: in a threaded process those are cancellation
 * points, and the bookkeeping around each call (enabling, then disabling asynchronous
 * cancellation) cost more than the rest of a statement's forwarding. The proxy never cancels a
 * thread. */
static ssize_t plain_recv(int fd, void *buf, size_t len)
{
    return (ssize_t)syscall(SYS_recvfrom, fd, buf, len, 0, NULL, NULL);
}

static ssize_t plain_send(int fd, const void *buf, size_t len)
{
    return (ssize_t)syscall(SYS_sendto, fd, buf, len, MSG_NOSIGNAL, NULL, 0);
}

void netio_init_plain(struct netio *io, int fd)
{
    io->fd = fd;
    io->ssl = NULL;
    io->want = POLLIN;
}

void netio_init_tls(struct netio *io, int fd, SSL *ssl)
{
    io->fd = fd;
    io->ssl = ssl;
    io->want = POLLIN;
}

bool netio_short_read_drained(const struct netio *io, size_t got, size_t asked, bool peer_closed)
{
    return got < asked && !io->ssl && !peer_closed;
}

int64_t netio_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static _Thread_local int64_t turn_us; /* 0: this thread runs no loop */

void netio_turn_begin(void)
{
    turn_us = netio_now_us();
}

int64_t netio_turn_us(void)
{
    return turn_us ? turn_us : netio_now_us();
}

int64_t netio_turn_ms(void)
{
    return netio_turn_us() / 1000;
}

void netio_time_in(clockid_t clock, int64_t ms, struct timespec *out)
{
    clock_gettime(clock, out);
    out->tv_sec += ms / 1000;
    out->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (out->tv_nsec >= 1000000000L) {
        out->tv_sec++;
        out->tv_nsec -= 1000000000L;
    }
}

int64_t netio_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static ssize_t ssl_result(struct netio *io, int rc)
{
    int e = SSL_get_error(io->ssl, rc);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        io->want = POLLIN;
        return -EAGAIN;
    case SSL_ERROR_WANT_WRITE:
        io->want = POLLOUT;
        return -EAGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        return errno ? -errno : -ECONNRESET;
    default:
        ERR_clear_error();
        return -EPROTO;
    }
}

ssize_t netio_read(struct netio *io, void *buf, size_t len)
{
    if (io->ssl) {
        ERR_clear_error();
        errno = 0;
        int rc = SSL_read(io->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
        if (rc > 0)
            return rc;
        return ssl_result(io, rc);
    }
    for (;;) {
        ssize_t n = plain_recv(io->fd, buf, len);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            io->want = POLLIN;
            return -EAGAIN;
        }
        return -errno;
    }
}

ssize_t netio_write(struct netio *io, const void *buf, size_t len)
{
    if (io->ssl) {
        ERR_clear_error();
        errno = 0;
        int rc = SSL_write(io->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
        if (rc > 0)
            return rc;
        ssize_t r = ssl_result(io, rc);
        return r == 0 ? -EPIPE : r;
    }
    for (;;) {
        ssize_t n = plain_send(io->fd, buf, len);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            io->want = POLLOUT;
            return -EAGAIN;
        }
        return -errno;
    }
}

size_t netio_pending(const struct netio *io)
{
    return io->ssl ? (size_t)SSL_pending(io->ssl) : 0;
}
