/* The metrics/health endpoint under slow and hostile clients: a connection that never finishes
 * its request is closed at its deadline, an address gets a bounded share of the slots, and a
 * health check is answered while every slot is held by slow clients (127.0.0.x are all local,
 * so one machine plays many addresses). Every socket wait is bounded by SO_RCVTIMEO. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "http.h"
#include "metrics.h"

#define PARTIAL "GET /healthz HTTP/1.1\r\nHost: x\r\n" /* headers never finished */

static int healthy_cb(void *arg, char *reason, size_t len)
{
    (void)arg;
    (void)reason;
    (void)len;
    return 1;
}

static int64_t closed(const char *reason)
{
    char series[128];
    snprintf(series, sizeof(series), "pgwire_proxy_http_connections_closed_total{reason=\"%s\"}",
             reason);
    return metrics_value(series);
}

/* A connection to 127.0.0.1:port from 127.0.0.<src_last>. */
static int connect_from(int src_last, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct sockaddr_in src = {.sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(0x7f000000u | (uint32_t)src_last)};
    assert_int_equal(bind(fd, (struct sockaddr *)&src, sizeof(src)), 0);
    struct sockaddr_in dst = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&dst, sizeof(dst)), 0);
    return fd;
}

static int slow_client(int src_last, int port)
{
    int fd = connect_from(src_last, port);
    ssize_t n = send(fd, PARTIAL, strlen(PARTIAL), MSG_NOSIGNAL);
    (void)n; /* a connection the server already refused fails here; that is fine */
    return fd;
}

/* True when the server has closed fd (EOF or reset) within SO_RCVTIMEO. */
static int server_closed(int fd)
{
    char buf[512];
    for (int i = 0; i < 100; i++) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK))
            return 1;
        if (n < 0)
            return 0; /* timed out: still open */
    }
    return 0;
}

/* GET /healthz from 127.0.0.<src_last>; returns the status (0: no answer). */
static int check_from(int src_last, int port, char *body, size_t bodylen)
{
    int fd = connect_from(src_last, port);
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    int status = 0;
    if (send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof(req) - 1)) {
        char buf[2048];
        size_t len = 0;
        ssize_t n;
        while (len < sizeof(buf) - 1 && (n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0)) > 0)
            len += (size_t)n;
        buf[len] = 0;
        if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
            status = 0;
        const char *sep = strstr(buf, "\r\n\r\n");
        snprintf(body, bodylen, "%s", sep ? sep + 4 : "");
    }
    close(fd);
    return status;
}

/* 64 slow connections from 4 addresses once kept /healthz unreachable until HAProxy marked
 * the instance DOWN. Now an address holds at most a few slots, and when every slot is taken
 * (here by 18 addresses) a new connection makes room by closing the oldest slow one. */
static void test_slow_clients_cannot_lock_out_checks(void **state)
{
    (void)state;
    enum { ADDRS = 18, EACH = 4 };
    char err[256], body[256];
    struct http_server *s = http_start("127.0.0.1", 0, healthy_cb, NULL, err, sizeof(err));
    if (!s)
        fail_msg("http_start: %s", err);
    int port = http_port(s);
    int64_t evicted = closed("evicted"), limited = closed("address_limit");
    static int fds[ADDRS][EACH];
    for (int k = 0; k < EACH; k++)
        fds[0][k] = slow_client(2, port);
    /* a fifth from an address that has its share is closed at once */
    int extra = slow_client(2, port);
    assert_true(server_closed(extra));
    close(extra);
    assert_int_equal(closed("address_limit") - limited, 1);
    for (int a = 1; a < ADDRS; a++)
        for (int k = 0; k < EACH; k++)
            fds[a][k] = slow_client(2 + a, port);
    /* 72 slow connections for 64 slots: the oldest made room */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(check_from(1, port, body, sizeof(body)), 200);
        assert_string_equal(body, "ok\n");
    }
    assert_true(closed("evicted") - evicted >= ADDRS * EACH - 64);
    assert_true(server_closed(fds[0][0])); /* the very first slow client was evicted */
    for (int a = 0; a < ADDRS; a++)
        for (int k = 0; k < EACH; k++)
            close(fds[a][k]);
    http_stop(s);
}

/* MHD only has an idle timeout: a client that sends a byte now and then kept its connection
 * (and slot) for ever. Every connection now has an absolute deadline for its request. */
static void test_deadline_closes_a_trickling_client(void **state)
{
    (void)state;
    char err[256];
    struct http_server *s = http_start("127.0.0.1", 0, healthy_cb, NULL, err, sizeof(err));
    if (!s)
        fail_msg("http_start: %s", err);
    int64_t deadline = closed("deadline");
    int fd = connect_from(1, http_port(s));
    struct timeval tv = {.tv_usec = 200000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    int gone = 0;
    /* one header byte every 200 ms, far inside the idle timeout; bounded to 20 s */
    for (int i = 0; i < 100 && !gone; i++) {
        if (send(fd, "X", 1, MSG_NOSIGNAL) != 1)
            gone = 1;
        else
            gone = server_closed(fd);
    }
    assert_true(gone);
    assert_int_equal(closed("deadline") - deadline, 1);
    close(fd);
    http_stop(s);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slow_clients_cannot_lock_out_checks),
        cmocka_unit_test(test_deadline_closes_a_trickling_client),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
