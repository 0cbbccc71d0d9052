/* netio: non-blocking reads/writes and the edge-triggered "drained" decision. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "netio.h"

static void nonblocking_pair(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    for (int i = 0; i < 2; i++)
        fcntl(sv[i], F_SETFL, fcntl(sv[i], F_GETFL) | O_NONBLOCK);
}

static void test_read_write_eagain_eof(void **state)
{
    (void)state;
    int sv[2];
    nonblocking_pair(sv);
    struct netio a, b;
    netio_init_plain(&a, sv[0]);
    netio_init_plain(&b, sv[1]);
    char buf[16];
    assert_int_equal(netio_read(&b, buf, sizeof(buf)), -EAGAIN);
    assert_int_equal(b.want, POLLIN);
    assert_int_equal(netio_write(&a, "hello", 5), 5);
    assert_int_equal(netio_read(&b, buf, sizeof(buf)), 5);
    assert_memory_equal(buf, "hello", 5);
    close(sv[0]);
    assert_int_equal(netio_read(&b, buf, sizeof(buf)), 0);
    assert_true(netio_write(&b, "x", 1) < 0); /* -EPIPE, and no SIGPIPE */
    close(sv[1]);
}

/* The bug this pins: data and the peer's close arrive before one epoll_wait. A short read
 * returns the data; edge-triggered epoll then reports nothing more, so treating the short read
 * as "drained" would never see the EOF (the proxy kept a session whose upstream had died). */
static void test_short_read_with_pending_eof_is_not_drained(void **state)
{
    (void)state;
    int sv[2];
    nonblocking_pair(sv);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET};
    assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, sv[1], &ev), 0);
    assert_int_equal(write(sv[0], "abc", 3), 3);
    shutdown(sv[0], SHUT_WR);

    struct epoll_event out;
    assert_int_equal(epoll_wait(ep, &out, 1, 1000), 1);
    bool peer_closed = out.events & EPOLLRDHUP;
    assert_true(peer_closed);

    struct netio io;
    netio_init_plain(&io, sv[1]);
    char buf[64];
    assert_int_equal(netio_read(&io, buf, sizeof(buf)), 3);
    assert_false(netio_short_read_drained(&io, 3, sizeof(buf), peer_closed));
    /* no further edge arrives for the pending EOF */
    assert_int_equal(epoll_wait(ep, &out, 1, 50), 0);
    assert_int_equal(netio_read(&io, buf, sizeof(buf)), 0);

    /* without a close, a short read does drain the socket */
    assert_true(netio_short_read_drained(&io, 3, sizeof(buf), false));
    assert_false(netio_short_read_drained(&io, 64, 64, false));
    close(ep);
    close(sv[0]);
    close(sv[1]);
}

static int64_t ns_of(const struct timespec *t)
{
    return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec;
}

/* A deadline ms from now: normalized, and between ms after the clock read before the call and
 * ms after the one read after it, for every carry of milliseconds into seconds. */
static void test_time_in_carries_into_seconds(void **state)
{
    (void)state;
    for (int64_t ms = 0; ms <= 3000; ms += 7) {
        struct timespec before, at, after;
        clock_gettime(CLOCK_MONOTONIC, &before);
        netio_time_in(CLOCK_MONOTONIC, ms, &at);
        clock_gettime(CLOCK_MONOTONIC, &after);
        assert_true(at.tv_nsec >= 0 && at.tv_nsec < 1000000000L);
        assert_true(ns_of(&at) >= ns_of(&before) + ms * 1000000);
        assert_true(ns_of(&at) <= ns_of(&after) + ms * 1000000);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_write_eagain_eof),
        cmocka_unit_test(test_short_read_with_pending_eof_is_not_drained),
        cmocka_unit_test(test_time_in_carries_into_seconds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
