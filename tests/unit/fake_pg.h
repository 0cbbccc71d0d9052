/* A scripted stand-in for PostgreSQL (and for peer instances) in unit tests: a listening socket
 * on 127.0.0.1, and helpers to accept a connection and answer its startup with a canned reply.
 * Every wait is bounded, so a server that never answers fails the test instead of hanging it. */
#ifndef PGWP_TEST_FAKE_PG_H
#define PGWP_TEST_FAKE_PG_H

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct fake_pg {
    int lfd;
    int port;
};

/* Listens on 127.0.0.1:<any>. Returns 0 or -1. */
static __attribute__((unused)) int fake_pg_listen(struct fake_pg *f, int backlog)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (f->lfd < 0 || bind(f->lfd, (struct sockaddr *)&a, sizeof(a)) || listen(f->lfd, backlog) ||
        getsockname(f->lfd, (struct sockaddr *)&a, &alen))
        return -1;
    f->port = ntohs(a.sin_port);
    return 0;
}

static __attribute__((unused)) void fake_pg_close(struct fake_pg *f)
{
    if (f->lfd >= 0)
        close(f->lfd);
    f->lfd = -1;
}

/* "ID=127.0.0.1:PORT" for cancel_set_peers. */
static __attribute__((unused)) void fake_pg_peer(const struct fake_pg *f, int id, char *buf,
                                                 size_t len)
{
    snprintf(buf, len, "%d=127.0.0.1:%d", id, f->port);
}

/* A connection waiting in the accept queue, or -1 after timeout_ms. */
static __attribute__((unused)) int fake_pg_accept(struct fake_pg *f, int timeout_ms)
{
    struct pollfd p = {.fd = f->lfd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) != 1)
        return -1;
    return accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
}

/* True when a connection is waiting to be accepted right now. */
static __attribute__((unused)) int fake_pg_pending(struct fake_pg *f)
{
    struct pollfd p = {.fd = f->lfd, .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

/* Reads exactly n bytes within timeout_ms. Returns 0 or -1. */
static __attribute__((unused)) int fake_pg_read(int fd, void *buf, size_t n, int timeout_ms)
{
    size_t got = 0;
    while (got < n) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, timeout_ms) != 1)
            return -1;
        ssize_t r = recv(fd, (char *)buf + got, n - got, 0);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

/* Reads one untyped startup-phase packet; returns its code word (protocol version or request
 * code), or 0. body (optional) receives up to bodylen bytes after the code. */
static __attribute__((unused)) uint32_t fake_pg_read_startup(int fd, uint8_t *body, size_t bodylen)
{
    uint8_t hdr[8], rest[1024];
    if (fake_pg_read(fd, hdr, 8, 5000))
        return 0;
    uint32_t len =
        ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) | ((uint32_t)hdr[2] << 8) | hdr[3];
    if (len < 8 || len - 8 > sizeof(rest) || fake_pg_read(fd, rest, len - 8, 5000))
        return 0;
    if (body)
        memcpy(body, rest, len - 8 < bodylen ? len - 8 : bodylen);
    return ((uint32_t)hdr[4] << 24) | ((uint32_t)hdr[5] << 16) | ((uint32_t)hdr[6] << 8) | hdr[7];
}

static __attribute__((unused)) void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* AuthenticationOk, BackendKeyData(pid, key), ReadyForQuery(I). */
static __attribute__((unused)) void fake_pg_send_ok(int fd, uint32_t pid, uint32_t key)
{
    uint8_t m[9 + 13 + 6];
    m[0] = 'R';
    put32(m + 1, 8);
    put32(m + 5, 0);
    m[9] = 'K';
    put32(m + 10, 12);
    put32(m + 14, pid);
    put32(m + 18, key);
    m[22] = 'Z';
    put32(m + 23, 5);
    m[27] = 'I';
    ssize_t w = send(fd, m, sizeof(m), MSG_NOSIGNAL);
    (void)w;
}

/* ErrorResponse FATAL with a SQLSTATE and message, as PostgreSQL refuses a startup. */
static __attribute__((unused)) void fake_pg_send_fatal(int fd, const char *code, const char *msg)
{
    uint8_t m[512];
    size_t n = 5;
    n += (size_t)snprintf((char *)m + n, sizeof(m) - n, "SFATAL%cVFATAL%cC%s%cM%s%c%c", 0, 0, code,
                          0, msg, 0, 0);
    m[0] = 'E';
    put32(m + 1, (uint32_t)(n - 1));
    ssize_t w = send(fd, m, n, MSG_NOSIGNAL);
    (void)w;
}

/* Makes a libpq connection to the fake server and returns n cancel handles (PGcancel *) that
 * point at it: their PQcancel then connects to f->lfd and waits until the test accepts and
 * closes that connection, which makes "a cancel in flight" something a test controls.
 * Returns 0 or -1. */
static __attribute__((unused)) int fake_pg_cancel_handles(struct fake_pg *f, void **handles, int n)
{
    char conninfo[160];
    snprintf(conninfo, sizeof(conninfo),
             "host=127.0.0.1 port=%d user=u dbname=d sslmode=disable gssencmode=disable", f->port);
    PGconn *c = PQconnectStart(conninfo);
    int sfd = -1, rc = -1, answered = 0;
    for (int i = 0; c && i < 100; i++) {
        PostgresPollingStatusType st = PQconnectPoll(c);
        if (st == PGRES_POLLING_OK) {
            rc = 0;
            break;
        }
        if (st == PGRES_POLLING_FAILED)
            break;
        if (sfd < 0)
            sfd = fake_pg_accept(f, 5000);
        if (st == PGRES_POLLING_READING && sfd >= 0 && !answered &&
            fake_pg_read_startup(sfd, NULL, 0)) {
            fake_pg_send_ok(sfd, 4321, 0x1234);
            answered = 1;
        }
        struct pollfd p = {.fd = PQsocket(c),
                           .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
        poll(&p, 1, 1000);
    }
    for (int i = 0; rc == 0 && i < n; i++) {
        handles[i] = PQgetCancel(c);
        if (!handles[i])
            rc = -1;
    }
    PQfinish(c);
    if (sfd >= 0)
        close(sfd);
    return rc;
}

/* One end of a socketpair stands for a client's cancel connection: the other end sees EOF once
 * the proxy closes it. */
static __attribute__((unused)) int fake_client_pair(int sv[2])
{
    return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
}

/* Whether the proxy closed its end (EOF readable within timeout_ms). */
static __attribute__((unused)) int fake_client_closed(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) != 1)
        return 0;
    char c;
    return recv(fd, &c, 1, MSG_DONTWAIT) == 0;
}

#endif
