/* The metrics HTTP endpoint (http.c): /metrics, /healthz and their errors over IPv4 and IPv6,
 * bind failures, and what a client that sends too much or too slowly gets. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "metrics.h"
#include "metrics_test.h"

struct http_reply {
    int status;
    char *raw;        /* whole response */
    const char *body; /* points into raw */
};

static atomic_int healthy = 1;

static int health_cb(void *arg, char *reason, size_t len)
{
    (void)reason;
    (void)len;
    return atomic_load((atomic_int *)arg);
}

static int health_with_reason(void *arg, char *reason, size_t len)
{
    (void)arg;
    snprintf(reason, len, "upstream authentication failed");
    return 0;
}

static int connect_to(int family, int port)
{
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        a->sin6_addr = in6addr_loopback;
        sl = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sl = sizeof(*a);
    }
    int fd = socket(family, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    /* A hung server must fail the test, not hang it. */
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    assert_int_equal(connect(fd, (struct sockaddr *)&ss, sl), 0);
    return fd;
}

static struct http_reply http_do(int family, int port, const char *method, const char *path)
{
    struct http_reply r = {0};
    char req[256];
    int n =
        snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                 method, path);
    int fd = connect_to(family, port);
    assert_int_equal(send(fd, req, (size_t)n, MSG_NOSIGNAL), n);

    size_t len = 0, cap = 4096;
    r.raw = malloc(cap);
    assert_non_null(r.raw);
    for (;;) {
        if (cap - len < 1024) {
            cap *= 2;
            r.raw = realloc(r.raw, cap);
            assert_non_null(r.raw);
        }
        ssize_t got = recv(fd, r.raw + len, cap - len - 1, 0);
        assert_true(got >= 0);
        if (got == 0)
            break;
        len += (size_t)got;
    }
    close(fd);
    r.raw[len] = '\0';
    assert_int_equal(sscanf(r.raw, "HTTP/1.%*d %d", &r.status), 1);
    char *sep = strstr(r.raw, "\r\n\r\n");
    assert_non_null(sep);
    r.body = sep + 4;
    return r;
}

static int header_has(const struct http_reply *r, const char *needle)
{
    const char *end = strstr(r->raw, "\r\n\r\n");
    const char *p = strstr(r->raw, needle);
    return p && p < end;
}

static void test_http_endpoints(void **state)
{
    (void)state;
    char err[256] = "";
    struct http_server *s = http_start("127.0.0.1", 0, health_cb, &healthy, err, sizeof(err));
    if (!s)
        fail_msg("http_start: %s", err);
    int port = http_port(s);
    assert_true(port > 0);

    metrics_session_open();
    struct http_reply r = http_do(AF_INET, port, "GET", "/metrics");
    assert_int_equal(r.status, 200);
    assert_true(header_has(&r, "text/plain; version=0.0.4"));
    assert_true(has_line(r.body, P "build_info{version=\"" PGWP_VERSION "\"} 1"));
    assert_non_null(strstr(r.body, "# TYPE " P "query_duration_seconds histogram\n"));
    free(r.raw);
    metrics_session_close();

    r = http_do(AF_INET, port, "GET", "/metrics?name[]=x");
    assert_int_equal(r.status, 200);
    free(r.raw);

    r = http_do(AF_INET, port, "HEAD", "/metrics");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "");
    free(r.raw);

    atomic_store(&healthy, 1);
    r = http_do(AF_INET, port, "GET", "/healthz");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok\n");
    free(r.raw);

    atomic_store(&healthy, 0);
    r = http_do(AF_INET, port, "GET", "/healthz");
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "unavailable\n");
    free(r.raw);
    atomic_store(&healthy, 1);

    r = http_do(AF_INET, port, "GET", "/");
    assert_int_equal(r.status, 404);
    free(r.raw);
    r = http_do(AF_INET, port, "GET", "/metrics/extra");
    assert_int_equal(r.status, 404);
    free(r.raw);

    r = http_do(AF_INET, port, "POST", "/metrics");
    assert_int_equal(r.status, 405);
    assert_true(header_has(&r, "Allow: GET, HEAD"));
    free(r.raw);
    r = http_do(AF_INET, port, "DELETE", "/healthz");
    assert_int_equal(r.status, 405);
    free(r.raw);

    http_stop(s);

    /* the reason a check gives is in the body, after "unavailable: " */
    s = http_start("127.0.0.1", 0, health_with_reason, NULL, err, sizeof(err));
    if (!s)
        fail_msg("http_start: %s", err);
    r = http_do(AF_INET, http_port(s), "GET", "/healthz");
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "unavailable: upstream authentication failed\n");
    free(r.raw);
    http_stop(s);
}

static void test_http_bind_errors(void **state)
{
    (void)state;
    char err[256] = "";
    struct http_server *s = http_start("127.0.0.1", 0, NULL, NULL, err, sizeof(err));
    if (!s)
        fail_msg("http_start: %s", err);
    int port = http_port(s);

    /* A NULL health callback means "always healthy". */
    struct http_reply r = http_do(AF_INET, port, "GET", "/healthz");
    assert_int_equal(r.status, 200);
    free(r.raw);

    char want[128];
    snprintf(want, sizeof(want), "cannot listen on 127.0.0.1:%d: Address already in use", port);
    assert_null(http_start("127.0.0.1", port, NULL, NULL, err, sizeof(err)));
    assert_string_equal(err, want);
    http_stop(s);

    assert_null(http_start("localhost", 0, NULL, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot listen on localhost:0: not a numeric"));
    assert_null(http_start("127.0.0.1", 70000, NULL, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "port must be between 0 and 65535"));
    assert_null(http_start("192.0.2.1", 0, NULL, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot listen on 192.0.2.1:0: "));
    http_stop(NULL);
}

static void test_http_ipv6(void **state)
{
    (void)state;
    char err[256] = "";
    struct http_server *s = http_start("::1", 0, health_cb, &healthy, err, sizeof(err));
    if (!s) {
        /* Containers often run without IPv6 on loopback. */
        print_message("skipping IPv6: %s\n", err);
        skip();
    }
    atomic_store(&healthy, 1);
    struct http_reply r = http_do(AF_INET6, http_port(s), "GET", "/healthz");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok\n");
    free(r.raw);

    char want[64];
    snprintf(want, sizeof(want), "cannot listen on [::1]:%d: ", http_port(s));
    assert_null(http_start("::1", http_port(s), NULL, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, want));
    http_stop(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_endpoints),
        cmocka_unit_test(test_http_bind_errors),
        cmocka_unit_test(test_http_ipv6),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
