/* Plain and TLS socket I/O behind one small interface. Sockets are non-blocking: reads and
 * writes return -EAGAIN and the want field says which poll event to wait for. */
#ifndef PGWP_NETIO_H
#define PGWP_NETIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

typedef struct ssl_st SSL;

struct netio {
    int fd;
    SSL *ssl;   /* NULL: plain socket */
    short want; /* poll events needed after -EAGAIN */
};

void netio_init_plain(struct netio *io, int fd);
void netio_init_tls(struct netio *io, int fd, SSL *ssl);

/* >0 bytes read, 0 on orderly EOF, -EAGAIN, or another -errno (-ECONNRESET, -EPROTO...). */
ssize_t netio_read(struct netio *io, void *buf, size_t len);
/* >0 bytes written, -EAGAIN, or -errno (-EPIPE ...). */
ssize_t netio_write(struct netio *io, const void *buf, size_t len);
/* Bytes already decrypted and buffered inside TLS (poll() cannot see them). */
size_t netio_pending(const struct netio *io);

/* After a read that returned got < asked bytes: may the socket be treated as drained until the
 * next edge-triggered event? Not for TLS (records are read one at a time) and not when the
 * peer has closed (peer_closed: EPOLLRDHUP seen) - the EOF is then pending with no new edge. */
bool netio_short_read_drained(const struct netio *io, size_t got, size_t asked, bool peer_closed);

int64_t netio_now_ms(void);
int64_t netio_now_us(void);
/* The time of this thread's event-loop turn, read once after each wait (netio_turn_begin):
 * statements and deadlines are measured from the moment the loop saw their bytes, without a
 * clock read each. A thread that runs no loop gets the clock itself. */
void netio_turn_begin(void);
int64_t netio_turn_us(void);
int64_t netio_turn_ms(void); /* the same, in milliseconds: what deadlines are kept in */
/* clock's time ms milliseconds from now, as pthread_cond_timedwait and friends take it. */
void netio_time_in(clockid_t clock, int64_t ms, struct timespec *out);

#endif
