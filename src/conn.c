#include "conn.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

/* An idle send queue larger than this is freed: a burst of local output (many pipelined
 * errors) must not stay allocated. */
#define SEND_KEEP_MAX (16 * 1024)

void conn_init(struct conn *c, enum conn_side side, int fd, size_t rcap_base, struct conn_mem *mem)
{
    memset(c, 0, sizeof(*c));
    netio_init_plain(&c->io, fd);
    c->side = side;
    c->rcap_base = rcap_base;
    c->mem = mem;
    c->can_read = c->can_write = true;
}

/* Bytes of a buffer of cap bytes that count against the shared bound. */
static size_t over_base(const struct conn *c, size_t cap)
{
    return cap > c->rcap_base ? cap - c->rcap_base : 0;
}

void conn_release(struct conn *c)
{
    if (c->mem)
        atomic_fetch_sub(&c->mem->used, over_base(c, c->rcap));
    free(c->rbuf);
    free(c->sbuf);
    c->rbuf = c->sbuf = NULL;
    c->rlen = c->rcap = c->slen = c->soff = c->scap = 0;
    c->ref = c->span = NULL;
    c->nref = c->nspan = 0;
}

void conn_fail(struct conn *c, enum conn_dir dir, int err)
{
    if (c->err_dir == CONN_DIR_NONE) {
        c->err_dir = dir;
        c->err = err;
    }
}

/* Resizes the receive buffer, charging growth above the base size to the shared bound. */
static int resize(struct conn *c, size_t cap)
{
    size_t before = over_base(c, c->rcap), after = over_base(c, cap);
    if (c->mem && after > before) {
        size_t add = after - before, limit = atomic_load(&c->mem->limit);
        size_t used = atomic_fetch_add(&c->mem->used, add) + add;
        if (limit && used > limit) {
            atomic_fetch_sub(&c->mem->used, add);
            return -ENOBUFS;
        }
    }
    uint8_t *n = realloc(c->rbuf, cap);
    if (!n) {
        if (c->mem && after > before)
            atomic_fetch_sub(&c->mem->used, after - before);
        return -ENOMEM;
    }
    if (c->mem && after < before)
        atomic_fetch_sub(&c->mem->used, before - after);
    c->rbuf = n;
    c->rcap = cap;
    return 0;
}

int conn_reserve(struct conn *c, size_t need)
{
    if (need <= c->rcap)
        return 0;
    size_t cap = c->rcap ? c->rcap : c->rcap_base;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    return resize(c, cap);
}

void conn_consume(struct conn *c, size_t n)
{
    if (n == 0)
        return;
    memmove(c->rbuf, c->rbuf + n, c->rlen - n);
    c->rlen -= n;
}

void conn_shrink(struct conn *c)
{
    if (c->rcap > c->rcap_base && c->rlen <= c->rcap_base)
        resize(c, c->rcap_base);
    if (!conn_send_pending(c) && c->scap > SEND_KEEP_MAX) {
        free(c->sbuf);
        c->sbuf = NULL;
        c->scap = c->slen = c->soff = 0;
    }
}

ssize_t conn_read(struct conn *c)
{
    if (!c->rbuf && conn_reserve(c, c->rcap_base))
        return -ENOMEM;
    size_t room = c->rcap - c->rlen;
    if (room == 0)
        return -ENOBUFS;
    ssize_t n = netio_read(&c->io, c->rbuf + c->rlen, room);
    if (n == -EAGAIN) {
        c->can_read = false;
        if (c->io.want == POLLOUT)
            c->can_write = false; /* TLS must write before it can read on */
        return n;
    }
    if (n <= 0) {
        conn_fail(c, CONN_DIR_READ, (int)n);
        return n;
    }
    c->rlen += (size_t)n;
    if (netio_short_read_drained(&c->io, (size_t)n, room, c->peer_closed))
        c->can_read = false;
    return n;
}

static int queue_append(struct conn *c, const void *p, size_t n)
{
    if (c->soff > 0 && c->soff == c->slen)
        c->soff = c->slen = 0;
    if (c->slen + n > c->scap) {
        if (c->soff > 0) {
            memmove(c->sbuf, c->sbuf + c->soff, c->slen - c->soff);
            c->slen -= c->soff;
            c->soff = 0;
        }
        size_t cap = c->scap ? c->scap : 4096;
        while (cap < c->slen + n)
            cap *= 2;
        if (cap != c->scap) {
            uint8_t *nb = realloc(c->sbuf, cap);
            if (!nb) {
                conn_fail(c, CONN_DIR_WRITE, -ENOMEM);
                return -1;
            }
            c->sbuf = nb;
            c->scap = cap;
        }
    }
    memcpy(c->sbuf + c->slen, p, n);
    c->slen += n;
    return 0;
}

/* Writes from p while the socket takes it; returns bytes written, or -1 on a failure. */
static ssize_t write_some(struct conn *c, const uint8_t *p, size_t n)
{
    size_t done = 0;
    while (done < n && c->can_write) {
        ssize_t w = netio_write(&c->io, p + done, n - done);
        if (w > 0) {
            done += (size_t)w;
            continue;
        }
        if (w == -EAGAIN) {
            c->can_write = false;
            if (c->io.want == POLLIN)
                c->can_read = false; /* TLS needs to read before it can write */
            break;
        }
        conn_fail(c, CONN_DIR_WRITE, (int)w);
        return -1;
    }
    return (ssize_t)done;
}

/* Output other than the span must follow it: the span goes into the queue first. */
static int spill_span(struct conn *c)
{
    if (!c->nspan)
        return 0;
    const uint8_t *p = c->span;
    size_t n = c->nspan;
    c->span = NULL;
    c->nspan = 0;
    return queue_append(c, p, n);
}

int conn_send_span(struct conn *c, const void *p, size_t n)
{
    if (!c->corked || c->nref > 0)
        return conn_send(c, p, n);
    if (c->nspan && c->span + c->nspan == (const uint8_t *)p) {
        c->nspan += n;
        return 0;
    }
    if (spill_span(c))
        return -1;
    c->span = p;
    c->nspan = n;
    return 0;
}

int conn_uncork(struct conn *c)
{
    c->corked = false;
    const uint8_t *p = c->span;
    size_t n = c->nspan;
    c->span = NULL;
    c->nspan = 0;
    /* an ordinary send now: written from p when nothing is queued, copied behind the queue
     * otherwise */
    if (n && conn_send(c, p, n))
        return -1;
    return conn_flush(c);
}

int conn_flush_queued(struct conn *c)
{
    if (spill_span(c))
        return -1;
    if (c->slen > c->soff) {
        ssize_t w = write_some(c, c->sbuf + c->soff, c->slen - c->soff);
        if (w < 0)
            return -1;
        c->soff += (size_t)w;
        if (w > 0)
            c->last_write_ms = netio_turn_ms();
        if (c->soff < c->slen)
            return 0;
        c->soff = c->slen = 0;
    }
    if (c->nref > 0) {
        ssize_t w = write_some(c, c->ref, c->nref);
        if (w < 0)
            return -1;
        c->ref += w;
        c->nref -= (size_t)w;
        if (w > 0)
            c->last_write_ms = netio_turn_ms();
        if (c->nref == 0)
            c->ref = NULL;
    }
    return 0;
}

int conn_send(struct conn *c, const void *p, size_t n)
{
    const uint8_t *b = p;
    if (spill_span(c))
        return -1;
    if (!conn_send_pending(c) && !c->corked) {
        ssize_t w = write_some(c, b, n);
        if (w < 0)
            return -1;
        b += w;
        n -= (size_t)w;
        if (n == 0)
            return 0;
        c->last_write_ms = netio_turn_ms();
    }
    if (c->nref > 0) {
        /* new output must follow the referenced span: copy the span into the queue first */
        if (queue_append(c, c->ref, c->nref))
            return -1;
        c->ref = NULL;
        c->nref = 0;
    }
    return queue_append(c, b, n);
}

int conn_send_ref(struct conn *c, const void *p, size_t n)
{
    if (conn_send_pending(c))
        return conn_send(c, p, n);
    if (c->corked) {
        c->ref = p;
        c->nref = n;
        return 0;
    }
    ssize_t w = write_some(c, p, n);
    if (w < 0)
        return -1;
    if ((size_t)w < n) {
        c->ref = (const uint8_t *)p + w;
        c->nref = n - (size_t)w;
        c->last_write_ms = netio_turn_ms();
    }
    return 0;
}
