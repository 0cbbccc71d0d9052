/* PROXY protocol v1/v2 headers and the --proxy-protocol-from ranges. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "proxy_proto.h"

#pragma GCC diagnostic ignored "-Wunused-parameter"

static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *body, size_t n)
{
    memcpy(out, sig, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(n >> 8);
    out[15] = (uint8_t)n;
    if (n)
        memcpy(out + 16, body, n);
    return 16 + n;
}

static void src_str(const struct proxy_proto_header *h, char *buf, size_t len)
{
    int port;
    char host[64];
    if (h->src.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)&h->src;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
    } else {
        const struct sockaddr_in6 *in6 = (const void *)&h->src;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
    }
    snprintf(buf, len, "%s:%d", host, port);
}

/* Every prefix of a valid header needs more; the whole parses; what follows is not taken. */
static void check_prefixes(const uint8_t *hdr, size_t n, const char *want_src)
{
    struct proxy_proto_header h;
    for (size_t i = 0; i < n; i++)
        if (proxy_proto_parse(hdr, i, &h) != PROXY_PROTO_NEED_MORE)
            fail_msg("prefix of %zu/%zu bytes was not NEED_MORE", i, n);
    uint8_t with_tail[2048];
    memcpy(with_tail, hdr, n);
    memcpy(with_tail + n, "\0\0\0\x08\x04\xd2\x16\x2f", 8); /* an SSLRequest follows */
    assert_int_equal(proxy_proto_parse(with_tail, n + 8, &h), PROXY_PROTO_OK);
    assert_int_equal(h.len, n);
    if (want_src) {
        char got[80];
        assert_true(h.has_src);
        src_str(&h, got, sizeof(got));
        assert_string_equal(got, want_src);
    } else {
        assert_false(h.has_src);
    }
}

static void test_v1(void **state)
{
    const char *tcp4 = "PROXY TCP4 192.0.2.7 10.0.0.1 40000 5433\r\n";
    check_prefixes((const uint8_t *)tcp4, strlen(tcp4), "192.0.2.7:40000");
    const char *tcp6 = "PROXY TCP6 2001:db8::9 2001:db8::1 65535 5433\r\n";
    check_prefixes((const uint8_t *)tcp6, strlen(tcp6), "2001:db8::9:65535");
    const char *unknown = "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
    check_prefixes((const uint8_t *)unknown, strlen(unknown), NULL);
    check_prefixes((const uint8_t *)"PROXY UNKNOWN\r\n", 15, NULL);
}

static void test_v1_invalid(void **state)
{
    static const char *const bad[] = {
        "PROXY TCP4 192.0.2.7 10.0.0.1 40000 5433\n",     /* LF alone */
        "PROXY TCP4 192.0.2.7 10.0.0.1 40000\r\n",        /* a field missing */
        "PROXY TCP4 192.0.2.7 10.0.0.1 40000 5433 9\r\n", /* one too many */
        "PROXY TCP4 192.0.2.777 10.0.0.1 40000 5433\r\n", /* not an address */
        "PROXY TCP4 2001:db8::9 10.0.0.1 40000 5433\r\n", /* family mismatch */
        "PROXY TCP4 192.0.2.7 10.0.0.1 65536 5433\r\n",   /* port out of range */
        "PROXY TCP4 192.0.2.7 10.0.0.1 -1 5433\r\n",      /* sign */
        "PROXY TCP4  192.0.2.7 10.0.0.1 1 5433\r\n",      /* double space */
        "PROXY UDP4 192.0.2.7 10.0.0.1 1 5433\r\n",       /* unknown protocol */
        "PROXY TCP4 192.0.2.7\t10.0.0.1 1 5433\r\n",      /* control byte */
        "PROXY\r\n",
        "proxy TCP4 192.0.2.7 10.0.0.1 1 2\r\n", /* case */
    };
    struct proxy_proto_header h;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (proxy_proto_parse((const uint8_t *)bad[i], strlen(bad[i]), &h) != PROXY_PROTO_INVALID)
            fail_msg("accepted: %s", bad[i]);
    /* a line that never ends within 107 bytes */
    char longline[200] = "PROXY TCP4 ";
    memset(longline + 11, '1', sizeof(longline) - 12);
    longline[sizeof(longline) - 1] = 0;
    assert_int_equal(proxy_proto_parse((const uint8_t *)longline, 106, &h), PROXY_PROTO_NEED_MORE);
    assert_int_equal(proxy_proto_parse((const uint8_t *)longline, 107, &h), PROXY_PROTO_INVALID);
}

static void test_v2(void **state)
{
    uint8_t hdr[600], body[512];
    const uint8_t in4[12] = {203, 0, 113, 5, 10, 0, 0, 1, 0x9c, 0x40, 0x15, 0x39};
    size_t n = v2(hdr, 0x21, 0x11, in4, sizeof(in4));
    check_prefixes(hdr, n, "203.0.113.5:40000");

    uint8_t in6[36] = {0x20,        0x01,     0x0d,        0xb8,        [15] = 9,    [16] = 0x20,
                       [17] = 0x01, [31] = 1, [32] = 0x01, [33] = 0xbb, [34] = 0x15, [35] = 0x39};
    n = v2(hdr, 0x21, 0x21, in6, sizeof(in6));
    check_prefixes(hdr, n, "2001:db8::9:443");

    /* TLVs after the addresses are skipped */
    memcpy(body, in4, 12);
    memcpy(body + 12, "\x04\x00\x05hello\x01\x00\x02h2", 13);
    n = v2(hdr, 0x21, 0x11, body, 25);
    check_prefixes(hdr, n, "203.0.113.5:40000");

    /* LOCAL (health checks), UNSPEC and UNIX: the socket's own address stands */
    n = v2(hdr, 0x20, 0x00, NULL, 0);
    check_prefixes(hdr, n, NULL);
    n = v2(hdr, 0x20, 0x11, in4, sizeof(in4));
    check_prefixes(hdr, n, NULL);
    n = v2(hdr, 0x21, 0x00, NULL, 0);
    check_prefixes(hdr, n, NULL);
    memset(body, 0, 216);
    n = v2(hdr, 0x21, 0x31, body, 216);
    check_prefixes(hdr, n, NULL);
}

static void test_v2_invalid(void **state)
{
    uint8_t hdr[2048], body[1500] = {0};
    struct proxy_proto_header h;
    const struct {
        uint8_t ver_cmd, fam;
        size_t len;
    } bad[] = {
        {0x11, 0x11, 12},                  /* version 1 in a v2 header */
        {0x22, 0x11, 12},                  /* command 2 */
        {0x21, 0x41, 12},                  /* family 4 */
        {0x21, 0x13, 12},                  /* protocol 3 */
        {0x21, 0x12, 12},                  /* datagram */
        {0x21, 0x11, 11},                  /* too short for IPv4 */
        {0x21, 0x21, 35},                  /* too short for IPv6 */
        {0x21, 0x11, PROXY_PROTO_MAX_LEN}, /* longer than we take */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t n = v2(hdr, bad[i].ver_cmd, bad[i].fam, body, bad[i].len);
        if (proxy_proto_parse(hdr, n, &h) != PROXY_PROTO_INVALID)
            fail_msg("accepted case %zu", i);
    }
    /* a broken signature is refused as soon as it differs */
    memcpy(hdr, sig, 12);
    hdr[7] = 'X';
    assert_int_equal(proxy_proto_parse(hdr, 8, &h), PROXY_PROTO_INVALID);
    assert_int_equal(proxy_proto_parse(hdr, 7, &h), PROXY_PROTO_NEED_MORE);
    /* a startup packet or SSLRequest is not a header */
    assert_int_equal(proxy_proto_parse((const uint8_t *)"\0\0\0\x08\x04\xd2\x16\x2f", 8, &h),
                     PROXY_PROTO_INVALID);
    assert_false(proxy_proto_signature((const uint8_t *)"\0\0\0\x08", 4));
    assert_true(proxy_proto_signature((const uint8_t *)"PROX", 4));
    assert_true(proxy_proto_signature(sig, 4));
}

static void sockaddr_of(struct sockaddr_storage *ss, const char *s)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *in = (void *)ss;
    struct sockaddr_in6 *in6 = (void *)ss;
    if (inet_pton(AF_INET, s, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
    } else {
        assert_int_equal(inet_pton(AF_INET6, s, &in6->sin6_addr), 1);
        in6->sin6_family = AF_INET6;
    }
}

static void test_cidr(void **state)
{
    struct proxy_proto_cidr list[4];
    assert_int_equal(proxy_proto_cidr_parse("10.0.0.0/8", &list[0]), 0);
    assert_int_equal(proxy_proto_cidr_parse("127.0.0.1", &list[1]), 0);
    assert_int_equal(proxy_proto_cidr_parse("2001:db8::/33", &list[2]), 0);
    assert_int_equal(proxy_proto_cidr_parse("192.168.1.128/25", &list[3]), 0);
    static const struct {
        const char *addr;
        bool in;
    } cases[] = {
        {"10.1.2.3", true},          {"11.0.0.1", false},
        {"127.0.0.1", true},         {"127.0.0.2", false},
        {"::ffff:127.0.0.1", true},  {"2001:db8:7fff::1", true},
        {"2001:db8:8000::1", false}, {"192.168.1.200", true},
        {"192.168.1.100", false},    {"::1", false},
    };
    struct sockaddr_storage ss;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sockaddr_of(&ss, cases[i].addr);
        if (proxy_proto_cidr_match(list, 4, &ss) != cases[i].in)
            fail_msg("%s: expected %d", cases[i].addr, cases[i].in);
    }
    struct proxy_proto_cidr c;
    static const char *const bad[] = {"",           "10.0.0.0/33",  "::/129",      "10.0.0.0/",
                                      "10.0.0/8",   "host.example", "10.0.0.0/8x", "/8",
                                      "10.0.0.0/-1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (proxy_proto_cidr_parse(bad[i], &c) == 0)
            fail_msg("accepted CIDR '%s'", bad[i]);
    assert_int_equal(proxy_proto_cidr_parse("0.0.0.0/0", &c), 0);
    sockaddr_of(&ss, "8.8.8.8");
    assert_true(proxy_proto_cidr_match(&c, 1, &ss));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1),   cmocka_unit_test(test_v1_invalid),
        cmocka_unit_test(test_v2),   cmocka_unit_test(test_v2_invalid),
        cmocka_unit_test(test_cidr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
