/* conn over a socketpair: direct writes and the copied send queue, referenced spans that are
 * never copied and keep their order, corked spans that join into one write, reads and readiness,
 * errors with side and direction, and receive-buffer growth charged to a shared bound. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"

#define BIG (1024 * 1024) /* far more than a small socket buffer holds */

struct pair {
    int sv[2]; /* sv[0] under the conn, sv[1] the peer */
    struct conn c;
    struct conn_mem mem;
};

static int setup(void **state)
{
    struct pair *p = calloc(1, sizeof(*p));
    if (!p || socketpair(AF_UNIX, SOCK_STREAM, 0, p->sv))
        return -1;
    int small = 4096;
    setsockopt(p->sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    setsockopt(p->sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    for (int i = 0; i < 2; i++)
        fcntl(p->sv[i], F_SETFL, fcntl(p->sv[i], F_GETFL) | O_NONBLOCK);
    conn_init(&p->c, CONN_UPSTREAM, p->sv[0], 1024, &p->mem);
    *state = p;
    return 0;
}

static int teardown(void **state)
{
    struct pair *p = *state;
    conn_release(&p->c);
    for (int i = 0; i < 2; i++)
        if (p->sv[i] >= 0)
            close(p->sv[i]);
    free(p);
    return 0;
}

static uint8_t *pattern(size_t n, uint8_t seed)
{
    uint8_t *b = malloc(n);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(seed + i * 7 + i / 251);
    return b;
}

/* Reads everything the conn sends until `want` bytes arrived, flushing as the socket takes
 * it (what the loop does on EPOLLOUT). Returns the bytes received. */
static uint8_t *drain(struct pair *p, size_t want)
{
    uint8_t *got = malloc(want + 1);
    size_t have = 0;
    assert_non_null(got);
    for (int rounds = 0; have < want && rounds < 100000; rounds++) {
        ssize_t n = read(p->sv[1], got + have, want + 1 - have);
        if (n > 0)
            have += (size_t)n;
        p->c.can_write = true;
        assert_int_equal(conn_flush(&p->c), 0);
        if (n <= 0)
            poll(&(struct pollfd){.fd = p->sv[1], .events = POLLIN}, 1, 100);
    }
    assert_int_equal(have, want);
    return got;
}

static void test_send_writes_directly_when_nothing_queued(void **state)
{
    struct pair *p = *state;
    assert_int_equal(conn_send(&p->c, "hello", 5), 0);
    assert_false(conn_send_pending(&p->c));
    assert_null(p->c.sbuf); /* nothing copied, nothing allocated */
    char buf[8];
    assert_int_equal(read(p->sv[1], buf, sizeof(buf)), 5);
    assert_memory_equal(buf, "hello", 5);
}

static void test_send_copies_the_rest_when_socket_full(void **state)
{
    struct pair *p = *state;
    uint8_t *src = pattern(BIG, 1), *want = pattern(BIG, 1);
    assert_int_equal(conn_send(&p->c, src, BIG), 0);
    assert_true(conn_send_pending(&p->c));
    assert_false(p->c.can_write);
    size_t queued = conn_send_backlog(&p->c);
    assert_true(queued > 0 && queued < BIG);
    memset(src, 'X', BIG); /* the queue holds its own copy */
    uint8_t *got = drain(p, BIG);
    assert_memory_equal(got, want, BIG);
    assert_false(conn_send_pending(&p->c));
    assert_int_equal(conn_send_backlog(&p->c), 0);
    free(src);
    free(want);
    free(got);
}

static void test_send_ref_never_copies(void **state)
{
    struct pair *p = *state;
    uint8_t *src = pattern(BIG, 2);
    assert_int_equal(conn_send_ref(&p->c, src, BIG), 0);
    assert_true(conn_ref_pending(&p->c));
    size_t written = BIG - p->c.nref;
    assert_ptr_equal(p->c.ref, src + written);
    assert_int_equal(p->c.scap, 0); /* no queue was allocated */
    /* written from the caller's memory: a change to the unsent part is what the peer gets */
    memset(src + written, 'R', BIG - written);
    uint8_t *got = drain(p, BIG);
    assert_false(conn_ref_pending(&p->c));
    assert_null(p->c.ref);
    for (size_t i = written; i < BIG; i++)
        if (got[i] != 'R')
            fail_msg("byte %zu was sent from a copy", i);
    free(src);
    free(got);
}

static void test_send_after_ref_keeps_order(void **state)
{
    struct pair *p = *state;
    uint8_t *src = pattern(BIG, 3), *want = pattern(BIG, 3);
    assert_int_equal(conn_send_ref(&p->c, src, BIG), 0);
    assert_true(conn_ref_pending(&p->c));
    assert_int_equal(conn_send(&p->c, "tail", 4), 0);
    /* the span went into the queue ahead of the new bytes: the caller may reuse its memory */
    assert_false(conn_ref_pending(&p->c));
    memset(src, 'X', BIG);
    assert_int_equal(conn_send_ref(&p->c, "more", 4), 0); /* queued behind, copied too */
    assert_false(conn_ref_pending(&p->c));
    uint8_t *got = drain(p, BIG + 8);
    assert_memory_equal(got, want, BIG);
    assert_memory_equal(got + BIG, "tailmore", 8);
    free(src);
    free(want);
    free(got);
}

static bool peer_has_nothing(struct pair *p)
{
    char b;
    return recv(p->sv[1], &b, 1, MSG_DONTWAIT | MSG_PEEK) < 0 && errno == EAGAIN;
}

static void test_corked_spans_join_into_one_write(void **state)
{
    struct pair *p = *state;
    char in[] = "PPPPBBBBEEEESSSS";
    conn_cork(&p->c);
    for (int i = 0; i < 4; i++)
        assert_int_equal(conn_send_span(&p->c, in + 4 * i, 4), 0);
    assert_ptr_equal(p->c.span, in);
    assert_int_equal(p->c.nspan, 16);
    assert_int_equal(conn_send_backlog(&p->c), 16);
    assert_true(conn_send_pending(&p->c));
    assert_null(p->c.sbuf); /* nothing copied */
    assert_true(peer_has_nothing(p));
    assert_int_equal(conn_uncork(&p->c), 0);
    assert_false(conn_send_pending(&p->c));
    assert_null(p->c.sbuf);
    char got[32];
    assert_int_equal(read(p->sv[1], got, sizeof(got)), 16); /* one write */
    assert_memory_equal(got, in, 16);
}

static void test_span_keeps_its_place_among_other_output(void **state)
{
    struct pair *p = *state;
    char in[] = "aaaabbbbcccc";
    conn_cork(&p->c);
    assert_int_equal(conn_send_span(&p->c, in, 4), 0);
    assert_int_equal(conn_send(&p->c, "XY", 2), 0); /* the span goes into the queue first */
    assert_int_equal(p->c.nspan, 0);
    assert_int_equal(conn_send_span(&p->c, in + 4, 4), 0);
    assert_int_equal(conn_send_ref(&p->c, "R", 1), 0); /* behind the span as well */
    assert_int_equal(conn_send_span(&p->c, in + 8, 4), 0);
    assert_true(peer_has_nothing(p));
    assert_int_equal(conn_uncork(&p->c), 0);
    memset(in, '-', sizeof(in) - 1); /* the caller's memory is free after uncork */
    uint8_t *got = drain(p, 15);
    assert_memory_equal(got, "aaaaXYbbbbRcccc", 15);
    free(got);
}

static void test_uncork_copies_the_span_the_socket_cannot_take(void **state)
{
    struct pair *p = *state;
    uint8_t *src = pattern(BIG, 4), *want = pattern(BIG, 4);
    conn_cork(&p->c);
    assert_int_equal(conn_send_span(&p->c, src, BIG / 2), 0);
    assert_int_equal(conn_send_span(&p->c, src + BIG / 2, BIG / 2), 0);
    assert_int_equal(p->c.nspan, BIG);
    assert_int_equal(conn_uncork(&p->c), 0);
    assert_int_equal(p->c.nspan, 0);
    size_t queued = conn_send_backlog(&p->c);
    assert_true(queued > 0 && queued < BIG);
    memset(src, 'X', BIG);
    uint8_t *got = drain(p, BIG);
    assert_memory_equal(got, want, BIG);
    free(src);
    free(want);
    free(got);
}

static void test_span_uncorked_is_a_plain_send(void **state)
{
    struct pair *p = *state;
    char in[] = "plain";
    assert_int_equal(conn_send_span(&p->c, in, 5), 0);
    assert_false(conn_send_pending(&p->c));
    char got[8];
    assert_int_equal(read(p->sv[1], got, sizeof(got)), 5);
    assert_memory_equal(got, "plain", 5);
}

static void test_read_eagain_data_and_eof(void **state)
{
    struct pair *p = *state;
    assert_int_equal(conn_read(&p->c), -EAGAIN);
    assert_false(p->c.can_read);
    assert_int_equal(p->c.err_dir, CONN_DIR_NONE);
    assert_int_equal(write(p->sv[1], "abc", 3), 3);
    p->c.can_read = true; /* the loop's edge */
    assert_int_equal(conn_read(&p->c), 3);
    assert_int_equal(p->c.rlen, 3);
    assert_memory_equal(p->c.rbuf, "abc", 3);
    assert_false(p->c.can_read); /* a short read of a plain socket: drained */
    conn_consume(&p->c, 2);
    assert_int_equal(p->c.rlen, 1);
    assert_int_equal(p->c.rbuf[0], 'c');
    close(p->sv[1]);
    p->sv[1] = -1;
    p->c.can_read = true;
    assert_int_equal(conn_read(&p->c), 0);
    assert_int_equal(p->c.err_dir, CONN_DIR_READ);
    assert_int_equal(p->c.err, 0); /* EOF */
}

static void test_read_with_peer_closed_keeps_can_read(void **state)
{
    struct pair *p = *state;
    assert_int_equal(write(p->sv[1], "abc", 3), 3);
    p->c.peer_closed = true; /* EPOLLRDHUP: the EOF comes with no further edge */
    assert_int_equal(conn_read(&p->c), 3);
    assert_true(p->c.can_read);
}

static void test_write_error_records_side_and_direction(void **state)
{
    struct pair *p = *state;
    close(p->sv[1]);
    p->sv[1] = -1;
    assert_int_equal(conn_send(&p->c, "x", 1), -1);
    assert_int_equal(p->c.side, CONN_UPSTREAM);
    assert_int_equal(p->c.err_dir, CONN_DIR_WRITE);
    assert_int_equal(p->c.err, -EPIPE);
    conn_fail(&p->c, CONN_DIR_READ, -EIO); /* the first failure is the one that counts */
    assert_int_equal(p->c.err_dir, CONN_DIR_WRITE);
    assert_int_equal(p->c.err, -EPIPE);
}

static void test_conn_fail_records_above_layer_error(void **state)
{
    struct pair *p = *state;
    conn_fail(&p->c, CONN_DIR_READ, -EPROTO);
    assert_int_equal(p->c.err_dir, CONN_DIR_READ);
    assert_int_equal(p->c.err, -EPROTO);
}

static void test_reserve_grows_charges_and_refuses_past_limit(void **state)
{
    struct pair *p = *state;
    atomic_store(&p->mem.limit, 10000);
    assert_int_equal(conn_reserve(&p->c, 1024), 0);
    assert_int_equal(p->c.rcap, 1024);
    assert_int_equal(atomic_load(&p->mem.used), 0); /* the base size is free */
    assert_int_equal(conn_reserve(&p->c, 3000), 0);
    assert_int_equal(p->c.rcap, 4096);
    assert_int_equal(atomic_load(&p->mem.used), 3072);
    memcpy(p->c.rbuf, "kept", 4);
    p->c.rlen = 4;
    uint8_t *before = p->c.rbuf;
    assert_int_equal(conn_reserve(&p->c, 20000), -ENOBUFS);
    assert_ptr_equal(p->c.rbuf, before);
    assert_int_equal(p->c.rcap, 4096);
    assert_int_equal(p->c.rlen, 4);
    assert_memory_equal(p->c.rbuf, "kept", 4);
    assert_int_equal(atomic_load(&p->mem.used), 3072);
    assert_int_equal(conn_reserve(&p->c, 2000), 0); /* fits already: nothing changes */
    assert_int_equal(p->c.rcap, 4096);
}

static void test_shrink_gives_growth_back(void **state)
{
    struct pair *p = *state;
    assert_int_equal(conn_reserve(&p->c, 5000), 0);
    assert_int_equal(atomic_load(&p->mem.used), 8192 - 1024);
    p->c.rlen = 2000; /* more than the base holds: kept */
    conn_shrink(&p->c);
    assert_int_equal(p->c.rcap, 8192);
    memcpy(p->c.rbuf, "front", 5);
    p->c.rlen = 5;
    conn_shrink(&p->c);
    assert_int_equal(p->c.rcap, 1024);
    assert_memory_equal(p->c.rbuf, "front", 5);
    assert_int_equal(atomic_load(&p->mem.used), 0);
}

static void test_shrink_frees_idle_large_send_queue(void **state)
{
    struct pair *p = *state;
    uint8_t *src = pattern(BIG, 4);
    assert_int_equal(conn_send(&p->c, src, BIG), 0);
    conn_shrink(&p->c); /* still pending: kept */
    assert_non_null(p->c.sbuf);
    free(drain(p, BIG));
    conn_shrink(&p->c);
    assert_null(p->c.sbuf);
    assert_int_equal(p->c.scap, 0);
    free(src);
}

static void test_release_frees_and_uncharges(void **state)
{
    struct pair *p = *state;
    assert_int_equal(conn_reserve(&p->c, 4000), 0);
    assert_int_equal(atomic_load(&p->mem.used), 3072);
    conn_release(&p->c);
    assert_null(p->c.rbuf);
    assert_int_equal(p->c.rcap, 0);
    assert_int_equal(atomic_load(&p->mem.used), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_send_writes_directly_when_nothing_queued, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_send_copies_the_rest_when_socket_full, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_send_ref_never_copies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_after_ref_keeps_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corked_spans_join_into_one_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_span_keeps_its_place_among_other_output, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_uncork_copies_the_span_the_socket_cannot_take, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_span_uncorked_is_a_plain_send, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_eagain_data_and_eof, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_with_peer_closed_keeps_can_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_error_records_side_and_direction, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_conn_fail_records_above_layer_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reserve_grows_charges_and_refuses_past_limit, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_shrink_gives_growth_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shrink_frees_idle_large_send_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_frees_and_uncharges, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
