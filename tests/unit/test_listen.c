/* listen: the listening sockets of the client port and the metrics endpoint. The error texts
 * are what an operator sees when the proxy refuses to start, so they are compared whole. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "listen.h"

/* A blocking connection to 127.0.0.1:port; accepted (the listener is non-blocking, and the
 * handshake is done by the kernel before connect returns) and closed again. */
static void connect_and_accept(int lfd, int port)
{
    int c = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(c, (struct sockaddr *)&sa, sizeof(sa)), 0);
    struct sockaddr_storage peer;
    int fd = listen_accept(lfd, &peer);
    assert_true(fd >= 0);
    assert_int_equal(peer.ss_family, AF_INET);
    assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    assert_int_equal(listen_accept(lfd, &peer), -EAGAIN); /* nothing else waits */
    close(fd);
    close(c);
}

static void test_format_endpoint(void **state)
{
    (void)state;
    char buf[64];
    listen_format_endpoint(buf, sizeof(buf), "127.0.0.1", 9187);
    assert_string_equal(buf, "127.0.0.1:9187");
    listen_format_endpoint(buf, sizeof(buf), "::1", 9187);
    assert_string_equal(buf, "[::1]:9187");
    listen_format_endpoint(buf, sizeof(buf), "", 5432);
    assert_string_equal(buf, "*:5432");
    listen_format_endpoint(buf, sizeof(buf), NULL, 0);
    assert_string_equal(buf, "*:0");
}

static void test_numeric_port_0_gets_a_port(void **state)
{
    (void)state;
    char err[256] = "";
    int port = -1;
    int fd = listen_tcp_numeric("127.0.0.1", 0, 16, &port, err, sizeof(err));
    if (fd < 0)
        fail_msg("listen_tcp_numeric: %s", err);
    assert_true(port > 0 && port <= 65535);
    assert_int_equal(listen_bound_port(fd), port);
    assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
    connect_and_accept(fd, port);

    /* the same port again: the system's reason, with the endpoint it was asked for */
    char want[128];
    snprintf(want, sizeof(want), "cannot listen on 127.0.0.1:%d: Address already in use", port);
    int again = -1;
    assert_int_equal(listen_tcp_numeric("127.0.0.1", port, 16, &again, err, sizeof(err)), -1);
    assert_string_equal(err, want);
    assert_int_equal(again, -1); /* untouched on failure */
    close(fd);
}

static void test_numeric_bad_addresses(void **state)
{
    (void)state;
    char err[256] = "";
    int port = -1;
    /* a name is refused without asking a resolver */
    assert_int_equal(listen_tcp_numeric("localhost", 0, 16, &port, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "cannot listen on localhost:0: not a numeric IPv4/IPv6 address ("));
    assert_int_equal(listen_tcp_numeric("10.0.0.256", 9187, 16, &port, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "cannot listen on 10.0.0.256:9187: not a numeric IPv4/IPv6"));
    assert_int_equal(listen_tcp_numeric("127.0.0.1", 70000, 16, &port, err, sizeof(err)), -1);
    assert_string_equal(err, "cannot listen on 127.0.0.1:70000: port must be between 0 and 65535");
    assert_int_equal(listen_tcp_numeric("::1", -1, 16, &port, err, sizeof(err)), -1);
    assert_string_equal(err, "cannot listen on [::1]:-1: port must be between 0 and 65535");
    /* TEST-NET-1 is on no interface of this machine */
    assert_int_equal(listen_tcp_numeric("192.0.2.1", 0, 16, &port, err, sizeof(err)), -1);
    assert_string_equal(err, "cannot listen on 192.0.2.1:0: Cannot assign requested address");
    assert_int_equal(port, -1);
}

static void test_tcp_port_0_and_address_in_use(void **state)
{
    (void)state;
    char err[256] = "";
    int fds[LISTEN_MAX_TCP];
    int n = listen_tcp("127.0.0.1", 0, 16, fds, LISTEN_MAX_TCP, err, sizeof(err));
    if (n < 0)
        fail_msg("listen_tcp: %s", err);
    assert_int_equal(n, 1);
    int port = listen_bound_port(fds[0]);
    assert_true(port > 0);
    connect_and_accept(fds[0], port);

    char want[128];
    snprintf(want, sizeof(want), "cannot listen on 127.0.0.1:%d: Address already in use", port);
    int more[LISTEN_MAX_TCP];
    assert_int_equal(listen_tcp("127.0.0.1", port, 16, more, LISTEN_MAX_TCP, err, sizeof(err)), -1);
    assert_string_equal(err, want);
    close(fds[0]);
}

static void test_unix_lock_refuses_a_live_owner_and_replaces_a_stale_one(void **state)
{
    (void)state;
    char dir[] = "/tmp/pgwp-listen-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char err[512] = "";
    struct listen_unix a, b;
    if (listen_unix(dir, 6543, 0700, 16, &a, err, sizeof(err)))
        fail_msg("listen_unix: %s", err);
    struct stat st;
    assert_int_equal(stat(a.path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    /* a lock held by a live process (pid 1 always is) refuses the socket */
    FILE *f = fopen(a.lock_path, "w");
    assert_non_null(f);
    fprintf(f, "1\n");
    fclose(f);
    assert_int_equal(listen_unix(dir, 6543, 0700, 16, &b, err, sizeof(err)), -1);
    char want[512];
    snprintf(want, sizeof(want),
             "lock file '%s' is held by process 1: is another server listening on '%s'?",
             a.lock_path, a.path);
    assert_string_equal(err, want);
    assert_int_equal(b.fd, -1);

    /* a lock whose process is gone is stale: replaced, with its socket */
    f = fopen(a.lock_path, "w");
    assert_non_null(f);
    fprintf(f, "%d\n", 0x3fffffff); /* above any pid_max */
    fclose(f);
    close(a.fd); /* the old socket file stays behind, as after a crash */
    if (listen_unix(dir, 6543, 0700, 16, &b, err, sizeof(err)))
        fail_msg("listen_unix over a stale lock: %s", err);
    listen_unix_close(&b);
    assert_int_equal(access(b.path, F_OK), -1);
    assert_int_equal(access(b.lock_path, F_OK), -1);
    assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_endpoint),
        cmocka_unit_test(test_numeric_port_0_gets_a_port),
        cmocka_unit_test(test_numeric_bad_addresses),
        cmocka_unit_test(test_tcp_port_0_and_address_in_use),
        cmocka_unit_test(test_unix_lock_refuses_a_live_owner_and_replaces_a_stale_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
