/* The floor: a bytes-only relay of the proxy's model (one epoll loop, one upstream connection
 * per client, no parsing, no policy), the physical limit of any user-space relay on this
 * machine. `make bench` compares pgwire-proxy against it.
 *
 *   floor LISTEN_PORT UPSTREAM_HOST_OR_SOCKET_DIR UPSTREAM_PORT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define BUF (64 * 1024)

struct side {
    int fd;
    int dead; /* freed after the current batch of events, which may still name it */
    struct side *peer;
    char buf[BUF]; /* bytes read from this side, waiting for the peer */
    size_t off, len;
    uint32_t watched; /* the events it is registered for */
};

static int ep;
static const char *up_host;
static int up_port;

static void watch(struct side *s, int op)
{
    /* a side reads while its buffer is empty, and waits to write while the peer's is full */
    uint32_t ev = (s->len == 0 ? EPOLLIN : 0) | (s->peer->len > 0 ? EPOLLOUT : 0);
    if (op == EPOLL_CTL_MOD && ev == s->watched)
        return; /* level-triggered: nothing to change, no system call */
    struct epoll_event e = {.events = ev, .data.ptr = s};
    s->watched = ev;
    epoll_ctl(ep, op, s->fd, &e);
}

static struct side *graveyard[512];
static int ndead;

static void drop(struct side *s)
{
    if (s->dead)
        return;
    s->dead = s->peer->dead = 1;
    close(s->fd);
    close(s->peer->fd);
    graveyard[ndead++] = s;
}

static void bury(void)
{
    while (ndead > 0) {
        struct side *s = graveyard[--ndead];
        free(s->peer);
        free(s);
    }
}

static int upstream(void)
{
    int fd;
    if (up_host[0] == '/') {
        struct sockaddr_un un = {.sun_family = AF_UNIX};
        snprintf(un.sun_path, sizeof(un.sun_path), "%s/.s.PGSQL.%d", up_host, up_port);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&un, sizeof(un)) == 0)
            return fd;
    } else {
        struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons((uint16_t)up_port)};
        inet_pton(AF_INET, up_host, &in.sin_addr);
        fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (fd >= 0 && connect(fd, (struct sockaddr *)&in, sizeof(in)) == 0)
            return fd;
    }
    if (fd >= 0)
        close(fd);
    return -1;
}

static void accept_one(int lfd)
{
    int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
    if (c < 0)
        return;
    int u = upstream(), one = 1;
    if (u < 0) {
        close(c);
        return;
    }
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fcntl(u, F_SETFL, O_NONBLOCK);
    struct side *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
    a->fd = c;
    b->fd = u;
    a->peer = b;
    b->peer = a;
    watch(a, EPOLL_CTL_ADD);
    watch(b, EPOLL_CTL_ADD);
}

/* Moves bytes: what s has read goes to its peer; then s reads more if its buffer is free. */
static int pump(struct side *s, uint32_t ev)
{
    struct side *p = s->peer;
    if ((ev & EPOLLOUT) && p->len > 0) {
        ssize_t n = send(s->fd, p->buf + p->off, p->len - p->off, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN)
            return -1;
        if (n > 0 && (p->off += (size_t)n) == p->len)
            p->off = p->len = 0;
    }
    if ((ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) && s->len == 0) {
        ssize_t n = recv(s->fd, s->buf, BUF, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN))
            return -1;
        if (n > 0) {
            ssize_t w = send(p->fd, s->buf, (size_t)n, MSG_NOSIGNAL);
            if (w < 0 && errno != EAGAIN)
                return -1;
            if (w < n) {
                s->off = w > 0 ? (size_t)w : 0;
                s->len = (size_t)n;
            }
        }
    }
    watch(s, EPOLL_CTL_MOD);
    watch(p, EPOLL_CTL_MOD);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: floor LISTEN_PORT UPSTREAM_HOST_OR_SOCKET_DIR UPSTREAM_PORT\n");
        return 2;
    }
    up_host = argv[2];
    up_port = atoi(argv[3]);
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    inet_pton(AF_INET, "127.0.0.1", &in.sin_addr);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(lfd, (struct sockaddr *)&in, sizeof(in)) || listen(lfd, 1024)) {
        perror("floor: listen");
        return 1;
    }
    ep = epoll_create1(0);
    struct epoll_event le = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &le);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            struct side *s = evs[i].data.ptr;
            if (!s)
                accept_one(lfd);
            else if (!s->dead && pump(s, evs[i].events))
                drop(s);
        }
        bury();
    }
}
