/* One side of a proxied connection (the client's, or the upstream's): plain/TLS I/O, a
 * receive buffer, a send queue, readiness, back-pressure, the shrink policy, and errors that
 * say which side and which direction failed. It knows nothing of what a message means.
 *
 * Buffer invariants:
 *  - receive: bytes [0, rlen) of rbuf are unread input, rlen <= rcap. The buffer starts at
 *    rcap_base bytes; conn_reserve() grows it for a message that needs more, and
 *    conn_shrink() gives the growth back once the unread input fits the base size again.
 *    Growth beyond rcap_base is charged to a shared struct conn_mem, whose limit bounds what
 *    all connections together may hold.
 *  - send: bytes [soff, slen) of sbuf are queued, in order, before the referenced span
 *    [ref, ref + nref) (bytes that live in the caller's memory and must stay valid until
 *    conn_ref_pending() is false). Nothing is reordered: new output goes behind both.
 *  - corked span: while corked, [span, span + nspan) is output that follows the queue and
 *    lives in the caller's memory until conn_uncork() (conn_send_span); at most one of
 *    nref and nspan is non-zero. Other output copies the span into the queue first.
 *  - readiness: can_read/can_write are set by the event loop's edge-triggered events and
 *    cleared when an operation would block; peer_closed (EPOLLRDHUP) means EOF is pending
 *    even if no further edge comes. An owner that registers for EPOLLOUT only while
 *    can_write is false (the session does) keeps out_watched in step with it. */
#ifndef PGWP_CONN_H
#define PGWP_CONN_H

#include "netio.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum conn_side { CONN_CLIENT = 0, CONN_UPSTREAM = 1 };
enum conn_dir { CONN_DIR_NONE = 0, CONN_DIR_READ, CONN_DIR_WRITE };

/* Shared bound on receive-buffer growth (bytes above each buffer's base size). */
struct conn_mem {
    atomic_size_t used;
    atomic_size_t limit; /* 0 = unbounded */
};

struct conn {
    struct netio io;
    enum conn_side side;
    bool can_read, can_write, peer_closed;
    bool out_watched; /* EPOLLOUT is in the loop's registration: the owner adds it while
                         can_write is false, and only then */
    bool corked;      /* output is only queued (conn_cork) until conn_uncork writes it at once */

    uint8_t *rbuf;
    size_t rlen, rcap, rcap_base;
    struct conn_mem *mem;

    uint8_t *sbuf;
    size_t soff, slen, scap;
    const uint8_t *ref;
    size_t nref;
    const uint8_t *span; /* see conn_send_span() */
    size_t nspan;
    int64_t last_write_ms; /* last progress writing while output was pending */

    /* the failure that ended this side: direction and -errno (0 with DIR_READ = EOF) */
    enum conn_dir err_dir;
    int err;
};

void conn_init(struct conn *c, enum conn_side side, int fd, size_t rcap_base, struct conn_mem *mem);
/* Frees the buffers; the descriptor and TLS object belong to the caller. */
void conn_release(struct conn *c);

/* Reads what fits into the receive buffer. >0 bytes, 0 EOF, -EAGAIN, or another -errno (the
 * failure is recorded). Clears can_read when the socket is drained. */
ssize_t conn_read(struct conn *c);
/* Makes room for a message of `need` bytes in total. 0, -ENOMEM, or -ENOBUFS when the shared
 * bound would be exceeded (nothing changes then). */
int conn_reserve(struct conn *c, size_t need);
/* Drops the first n bytes of input. */
void conn_consume(struct conn *c, size_t n);
/* Gives back receive growth when the input fits the base size, and an idle send queue. */
void conn_shrink(struct conn *c);

/* Sends bytes: straight to the socket when nothing is queued, the rest copied behind the
 * queue. 0, or -1 on a failure (recorded). */
int conn_send(struct conn *c, const void *p, size_t n);
/* Sends bytes that stay valid in the caller's memory: written from there while nothing else is
 * queued (otherwise, or once later output must follow them, they are copied into the queue).
 * One reference at a time; conn_ref_pending() says when the caller may reuse the memory. */
int conn_send_ref(struct conn *c, const void *p, size_t n);
/* Sends bytes that stay valid in the caller's memory until conn_uncork(): bytes that follow
 * the previous call's directly join them, so the messages one client read forwards unchanged
 * leave in one write from the read buffer, without a copy. Not corked: conn_send(). */
int conn_send_span(struct conn *c, const void *p, size_t n);
/* Writes queued output while the socket takes it. 0 (maybe still pending) or -1. Inline for
 * the common case, nothing queued: a session turn asks several times per statement. */
int conn_flush_queued(struct conn *c);
/* Between cork and uncork, sends are queued, not written: the messages one client read
 * produced (a pipeline's Bind, Execute and Sync) leave in one write instead of one each. */
static inline void conn_cork(struct conn *c)
{
    c->corked = true;
}
/* Writes the corked output; a span it cannot write yet is copied into the queue, so the
 * caller's memory is free again when this returns. */
int conn_uncork(struct conn *c);

static inline bool conn_send_pending(const struct conn *c)
{
    return c->slen > c->soff || c->nref > 0 || c->nspan > 0;
}
static inline int conn_flush(struct conn *c)
{
    return conn_send_pending(c) ? conn_flush_queued(c) : 0;
}
static inline size_t conn_send_backlog(const struct conn *c)
{
    return c->slen - c->soff + c->nref + c->nspan;
}
static inline bool conn_ref_pending(const struct conn *c)
{
    return c->nref > 0;
}

/* Records a failure found above this layer (e.g. a protocol error) for the end reason. */
void conn_fail(struct conn *c, enum conn_dir dir, int err);

#endif
