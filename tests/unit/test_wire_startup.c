/* Unit tests for the startup-phase packets of the protocol codec (SSLRequest, GSSENCRequest,
 * CancelRequest, StartupMessage): untyped, length-prefixed, read before any typed message.
 * Expected bytes are written out by hand from the PostgreSQL "Message Formats" chapter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "wire.h"

/* cmocka passes every test a state pointer that most tests do not need */
#pragma GCC diagnostic ignored "-Wunused-parameter"

/* A string literal's bytes without the implicit trailing NUL. */
#define LIT(s) ((const uint8_t *)(s)), (sizeof(s) - 1)

/* Builds an untyped packet: length word, version, then raw body bytes. */
static size_t make_pkt(uint8_t *out, uint32_t version, const void *body, size_t bodylen)
{
    size_t len = 8 + bodylen;
    wire_put_u32(out, (uint32_t)len);
    wire_put_u32(out + 4, version);
    if (bodylen)
        memcpy(out + 8, body, bodylen);
    return len;
}

static void test_startup_len(void **state)
{
    uint32_t len = 0;
    const uint8_t ssl[] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
    for (size_t n = 0; n < 4; n++)
        assert_int_equal(wire_startup_len(ssl, n, &len), WIRE_NEED_MORE);
    assert_int_equal(wire_startup_len(ssl, 4, &len), WIRE_OK);
    assert_int_equal(len, 8);
    assert_int_equal(wire_startup_len(LIT("\x00\x00\x00\x00"), &len), WIRE_BAD_LENGTH);
    assert_int_equal(wire_startup_len(LIT("\x00\x00\x00\x07"), &len), WIRE_BAD_LENGTH);
    assert_int_equal(wire_startup_len(LIT("\x00\x00\x27\x10"), &len), WIRE_OK); /* 10000 */
    assert_int_equal(len, 10000);
    assert_int_equal(wire_startup_len(LIT("\x00\x00\x27\x11"), &len), WIRE_TOO_LONG);
    assert_int_equal(wire_startup_len(LIT("\x80\x00\x00\x00"), &len), WIRE_TOO_LONG);
    assert_int_equal(wire_startup_len(LIT("\xff\xff\xff\xff"), &len), WIRE_TOO_LONG);
}

static void test_parse_ssl_request(void **state)
{
    struct wire_startup s;
    assert_int_equal(wire_parse_startup(LIT("\x00\x00\x00\x08\x04\xd2\x16\x2f"), &s), WIRE_OK);
    assert_int_equal(s.kind, WIRE_PKT_SSL);
    assert_int_equal(s.version, WIRE_SSL_REQUEST_CODE);
    assert_int_equal(s.nparams, 0);
    /* an SSLRequest with trailing bytes is not one */
    assert_int_equal(
        wire_parse_startup(LIT("\x00\x00\x00\x0c\x04\xd2\x16\x2f\x00\x00\x00\x00"), &s),
        WIRE_MALFORMED);
}

static void test_parse_gssenc_request(void **state)
{
    struct wire_startup s;
    assert_int_equal(wire_parse_startup(LIT("\x00\x00\x00\x08\x04\xd2\x16\x30"), &s), WIRE_OK);
    assert_int_equal(s.kind, WIRE_PKT_GSSENC);
    assert_int_equal(s.version, WIRE_GSSENC_REQUEST_CODE);
    assert_int_equal(wire_parse_startup(LIT("\x00\x00\x00\x09\x04\xd2\x16\x30\x00"), &s),
                     WIRE_MALFORMED);
}

static void test_parse_cancel_request(void **state)
{
    struct wire_startup s;
    assert_int_equal(
        wire_parse_startup(LIT("\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x30\x39\xca\xfe\xba\xbe"),
                           &s),
        WIRE_OK);
    assert_int_equal(s.kind, WIRE_PKT_CANCEL);
    assert_int_equal(s.version, WIRE_CANCEL_REQUEST_CODE);
    assert_int_equal(s.cancel_pid, 12345);
    assert_int_equal(s.cancel_secret, 0xcafebabeu);
    assert_false(s.cancel_from_peer);
    /* the same request forwarded by a peer instance (1234.5690): marked, never routed again */
    assert_int_equal(
        wire_parse_startup(LIT("\x00\x00\x00\x10\x04\xd2\x16\x3a\x00\x00\x30\x39\xca\xfe\xba\xbe"),
                           &s),
        WIRE_OK);
    assert_int_equal(s.kind, WIRE_PKT_CANCEL);
    assert_int_equal(s.version, WIRE_PEER_CANCEL_CODE);
    assert_true(s.cancel_from_peer);
    assert_int_equal(s.cancel_pid, 12345);
    assert_int_equal(s.cancel_secret, 0xcafebabeu);
    assert_int_equal(
        wire_parse_startup(LIT("\x00\x00\x00\x0c\x04\xd2\x16\x3a\x00\x00\x30\x39"), &s),
        WIRE_MALFORMED);
    /* short and long cancel keys (3.2 allows longer keys; we speak 3.0) */
    assert_int_equal(
        wire_parse_startup(LIT("\x00\x00\x00\x0c\x04\xd2\x16\x2e\x00\x00\x30\x39"), &s),
        WIRE_MALFORMED);
    assert_int_equal(
        wire_parse_startup(LIT("\x00\x00\x00\x14\x04\xd2\x16\x2e\x00\x00\x30\x39\xca\xfe\xba\xbe"
                               "\x01\x02\x03\x04"),
                           &s),
        WIRE_MALFORMED);
}

static const char startup_body[] = "user\0alice\0database\0app\0options\0-c geqo=off\0"
                                   "application_name\0psql\0";

static void test_parse_startup_params(void **state)
{
    uint8_t pkt[256];
    size_t len = make_pkt(pkt, WIRE_PROTO_3_0, startup_body, sizeof(startup_body));
    /* sizeof includes the literal's NUL: that is the list terminator */
    assert_int_equal(pkt[len - 1], 0);
    assert_int_equal(pkt[len - 2], 0);
    struct wire_startup s;
    assert_int_equal(wire_parse_startup(pkt, (uint32_t)len, &s), WIRE_OK);
    assert_int_equal(s.kind, WIRE_PKT_STARTUP);
    assert_int_equal(s.version, WIRE_PROTO_3_0);
    assert_int_equal(s.nparams, 4);
    assert_string_equal(wire_startup_get(&s, "user"), "alice");
    assert_string_equal(wire_startup_get(&s, "database"), "app");
    assert_string_equal(wire_startup_get(&s, "options"), "-c geqo=off");
    assert_string_equal(wire_startup_get(&s, "application_name"), "psql");
    assert_null(wire_startup_get(&s, "password"));
    assert_null(wire_startup_get(&s, "User")); /* names are case-sensitive */
    assert_string_equal(s.params[0].name, "user");
    assert_string_equal(s.params[3].name, "application_name");
    /* names and values point into the packet, no copies */
    assert_true((const uint8_t *)s.params[0].name == pkt + 8);
    assert_true((const uint8_t *)s.params[0].value == pkt + 13);
}

static void test_parse_startup_other_versions(void **state)
{
    /* 3.2 and the libpq 19 "grease" 3.9999 parse as startup; the session decides */
    const char body[] = "user\0u\0_pq_.test_protocol_negotiation\0\0";
    uint8_t pkt[128];
    struct wire_startup s;
    size_t len = make_pkt(pkt, (3u << 16) | 9999u, body, sizeof(body));
    assert_int_equal(wire_parse_startup(pkt, (uint32_t)len, &s), WIRE_OK);
    assert_int_equal(s.kind, WIRE_PKT_STARTUP);
    assert_int_equal(s.version >> 16, 3);
    assert_int_equal(s.version & 0xffff, 9999);
    assert_int_equal(s.nparams, 2);
    assert_string_equal(wire_startup_get(&s, "_pq_.test_protocol_negotiation"), "");
}

static void test_parse_startup_empty_params(void **state)
{
    uint8_t pkt[16];
    struct wire_startup s;
    size_t len = make_pkt(pkt, WIRE_PROTO_3_0, "", 1);
    assert_int_equal(len, 9);
    assert_int_equal(wire_parse_startup(pkt, (uint32_t)len, &s), WIRE_OK);
    assert_int_equal(s.kind, WIRE_PKT_STARTUP);
    assert_int_equal(s.nparams, 0);
    assert_null(wire_startup_get(&s, "user"));
    /* no terminator at all */
    len = make_pkt(pkt, WIRE_PROTO_3_0, "", 0);
    assert_int_equal(wire_parse_startup(pkt, (uint32_t)len, &s), WIRE_MALFORMED);
}

static void test_parse_startup_malformed(void **state)
{
    static const struct {
        const char *what;
        const char *body;
        size_t len;
    } cases[] = {
        {"missing terminator", "user\0alice\0", 11},
        {"name without value", "user\0alice\0database\0", 20},
        {"name without value, then terminator", "user\0alice\0database\0\0", 21},
        {"name not NUL-terminated", "user", 4},
        {"value not NUL-terminated", "user\0alice", 10},
        {"bytes after terminator", "user\0alice\0\0x", 13},
        {"two terminators", "user\0alice\0\0\0", 13},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t *pkt = malloc(8 + cases[i].len);
        assert_non_null(pkt);
        size_t len = make_pkt(pkt, WIRE_PROTO_3_0, cases[i].body, cases[i].len);
        struct wire_startup s;
        int rc = wire_parse_startup(pkt, (uint32_t)len, &s);
        if (rc != WIRE_MALFORMED)
            fail_msg("%s: got %d", cases[i].what, rc);
        free(pkt);
    }
}

/* "name\0\0" is an empty value, then the list needs its own terminator */
static void test_parse_startup_empty_value(void **state)
{
    const char body[] = "options\0\0user\0u\0";
    uint8_t pkt[64];
    size_t len = make_pkt(pkt, WIRE_PROTO_3_0, body, sizeof(body));
    struct wire_startup s;
    assert_int_equal(wire_parse_startup(pkt, (uint32_t)len, &s), WIRE_OK);
    assert_int_equal(s.nparams, 2);
    assert_string_equal(wire_startup_get(&s, "options"), "");
    assert_string_equal(wire_startup_get(&s, "user"), "u");
}

static void test_parse_startup_length_mismatch(void **state)
{
    uint8_t pkt[256];
    size_t len = make_pkt(pkt, WIRE_PROTO_3_0, startup_body, sizeof(startup_body));
    struct wire_startup s;
    assert_int_equal(wire_parse_startup(pkt, (uint32_t)len - 1, &s), WIRE_MALFORMED);
    pkt[len] = 0;
    assert_int_equal(wire_parse_startup(pkt, (uint32_t)len + 1, &s), WIRE_MALFORMED);
    wire_put_u32(pkt, (uint32_t)len + 1);
    assert_int_equal(wire_parse_startup(pkt, (uint32_t)len, &s), WIRE_MALFORMED);
    for (uint32_t l = 0; l < 8; l++)
        assert_int_equal(wire_parse_startup(pkt, l, &s), WIRE_MALFORMED);
}

static void test_parse_startup_too_long(void **state)
{
    /* one huge options value: the length check refuses it before anything is parsed */
    size_t bodylen = 10001;
    uint8_t *pkt = calloc(1, 8 + bodylen);
    assert_non_null(pkt);
    memcpy(pkt + 8, "options", 8);
    memset(pkt + 16, 'x', bodylen - 8 - 2);
    size_t len = make_pkt(pkt, WIRE_PROTO_3_0, NULL, 0) + bodylen;
    wire_put_u32(pkt, (uint32_t)len);
    uint32_t got = 0;
    assert_int_equal(wire_startup_len(pkt, len, &got), WIRE_TOO_LONG);
    assert_int_equal(got, 0);
    free(pkt);
}

static size_t make_many_params(uint8_t *pkt, int n)
{
    size_t pos = 8;
    for (int i = 0; i < n; i++) {
        pos += (size_t)sprintf((char *)pkt + pos, "p%d", i) + 1;
        pos += (size_t)sprintf((char *)pkt + pos, "v%d", i) + 1;
    }
    pkt[pos++] = 0;
    wire_put_u32(pkt, (uint32_t)pos);
    wire_put_u32(pkt + 4, WIRE_PROTO_3_0);
    return pos;
}

static void test_parse_startup_param_limit(void **state)
{
    uint8_t pkt[2048];
    struct wire_startup s;
    size_t len = make_many_params(pkt, WIRE_MAX_STARTUP_PARAMS);
    assert_int_equal(wire_parse_startup(pkt, (uint32_t)len, &s), WIRE_OK);
    assert_int_equal(s.nparams, WIRE_MAX_STARTUP_PARAMS);
    assert_string_equal(wire_startup_get(&s, "p0"), "v0");
    assert_string_equal(wire_startup_get(&s, "p63"), "v63");

    len = make_many_params(pkt, WIRE_MAX_STARTUP_PARAMS + 1);
    assert_int_equal(wire_parse_startup(pkt, (uint32_t)len, &s), WIRE_MALFORMED);
    len = make_many_params(pkt, 100);
    assert_int_equal(wire_parse_startup(pkt, (uint32_t)len, &s), WIRE_MALFORMED);
}

/* Every strict prefix, both as the raw first bytes of a stream and as a self-consistent packet
 * (length word rewritten), in an exact-size allocation so ASan catches any overread. */
static void check_prefixes(const uint8_t *full, size_t fulllen)
{
    struct wire_startup s;
    assert_int_equal(wire_parse_startup(full, (uint32_t)fulllen, &s), WIRE_OK);
    for (size_t n = 0; n < fulllen; n++) {
        uint8_t *p = malloc(n ? n : 1);
        assert_non_null(p);
        memcpy(p, full, n);
        uint32_t len = 0;
        int rc = wire_startup_len(p, n, &len);
        if (n < 4) {
            assert_int_equal(rc, WIRE_NEED_MORE);
        } else {
            assert_int_equal(rc, WIRE_OK);
            assert_int_equal(len, fulllen); /* caller waits for more */
        }
        assert_int_not_equal(wire_parse_startup(p, (uint32_t)n, &s), WIRE_OK);
        if (n >= 4) {
            wire_put_u32(p, (uint32_t)n);
            rc = wire_parse_startup(p, (uint32_t)n, &s);
            if (rc == WIRE_OK)
                fail_msg("prefix of %zu/%zu bytes parsed as complete", n, fulllen);
        }
        free(p);
    }
}

static void test_parse_startup_prefixes(void **state)
{
    uint8_t pkt[256];
    size_t len = make_pkt(pkt, WIRE_PROTO_3_0, startup_body, sizeof(startup_body));
    check_prefixes(pkt, len);
    const char empties[] = "a\0\0b\0\0";
    len = make_pkt(pkt, WIRE_PROTO_3_0, empties, sizeof(empties));
    check_prefixes(pkt, len);
    check_prefixes(LIT("\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x30\x39\xca\xfe\xba\xbe"));
    check_prefixes(LIT("\x00\x00\x00\x08\x04\xd2\x16\x2f"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_startup_len),
        cmocka_unit_test(test_parse_ssl_request),
        cmocka_unit_test(test_parse_gssenc_request),
        cmocka_unit_test(test_parse_cancel_request),
        cmocka_unit_test(test_parse_startup_params),
        cmocka_unit_test(test_parse_startup_other_versions),
        cmocka_unit_test(test_parse_startup_empty_params),
        cmocka_unit_test(test_parse_startup_malformed),
        cmocka_unit_test(test_parse_startup_empty_value),
        cmocka_unit_test(test_parse_startup_length_mismatch),
        cmocka_unit_test(test_parse_startup_too_long),
        cmocka_unit_test(test_parse_startup_param_limit),
        cmocka_unit_test(test_parse_startup_prefixes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
