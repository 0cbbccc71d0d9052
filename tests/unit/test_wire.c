/* Unit tests for the protocol codec. Expected bytes are written out by hand from the
 * PostgreSQL "Message Formats" chapter, not produced by the code under test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cmocka.h>

#include "wire.h"

/* cmocka passes every test a state pointer that most tests do not need */
#pragma GCC diagnostic ignored "-Wunused-parameter"

/* A string literal's bytes without the implicit trailing NUL. */
#define LIT(s) ((const uint8_t *)(s)), (sizeof(s) - 1)

static void assert_bytes(const struct wire_buf *b, const uint8_t *want, size_t wantlen)
{
    assert_false(b->overflow);
    assert_int_equal(b->len, wantlen);
    assert_memory_equal(b->data, want, wantlen);
}

/* --- builders --- */

static void test_build_auth_ok(void **state)
{
    uint8_t st[64];
    struct wire_buf b;
    wire_buf_init(&b, st, sizeof(st));
    wire_build_auth_ok(&b);
    assert_bytes(&b, LIT("R\x00\x00\x00\x08\x00\x00\x00\x00"));
}

static void test_build_param_status(void **state)
{
    uint8_t st[64];
    struct wire_buf b;
    wire_buf_init(&b, st, sizeof(st));
    wire_build_param_status(&b, "client_encoding", "UTF8");
    assert_bytes(&b, LIT("S\x00\x00\x00\x19"
                         "client_encoding\0UTF8\0"));
}

static void test_build_backend_key(void **state)
{
    uint8_t st[64];
    struct wire_buf b;
    wire_buf_init(&b, st, sizeof(st));
    wire_build_backend_key(&b, 1234, 0xdeadbeefu);
    assert_bytes(&b, LIT("K\x00\x00\x00\x0c\x00\x00\x04\xd2\xde\xad\xbe\xef"));
}

static void test_build_rfq(void **state)
{
    uint8_t st[64];
    struct wire_buf b;
    wire_buf_init(&b, st, sizeof(st));
    wire_build_rfq(&b, 'I');
    wire_build_rfq(&b, 'T');
    wire_build_rfq(&b, 'E');
    assert_bytes(&b, LIT("Z\x00\x00\x00\x05I"
                         "Z\x00\x00\x00\x05T"
                         "Z\x00\x00\x00\x05"
                         "E"));
    assert_int_equal(wire_rfq_status(st + 5, 1), 'I');
    assert_int_equal(wire_rfq_status(st + 11, 1), 'T');
    assert_int_equal(wire_rfq_status(st + 17, 1), 'E');
    assert_int_equal(wire_rfq_status((const uint8_t *)"X", 1), 0);
    assert_int_equal(wire_rfq_status((const uint8_t *)"II", 2), 0);
    assert_int_equal(wire_rfq_status((const uint8_t *)"", 0), 0);
}

static void test_build_error_all_fields(void **state)
{
    uint8_t st[128];
    struct wire_buf b;
    wire_buf_init(&b, st, sizeof(st));
    struct wire_error_fields f = {
        .severity = "ERROR",
        .code = "42501",
        .message = "denied",
        .detail = "rule: drop",
        .hint = "ask",
        .position = 17,
    };
    wire_build_error(&b, 'E', &f);
    /* body: 7 + 7 + 7 + 8 + 12 + 5 + 4 + 1 = 51 bytes, length word 55 */
    assert_bytes(&b, LIT("E\x00\x00\x00\x37"
                         "SERROR\0"
                         "VERROR\0"
                         "C42501\0"
                         "Mdenied\0"
                         "Drule: drop\0"
                         "Hask\0"
                         "P17\0"
                         "\0"));

    char code[6];
    char sev[16];
    assert_int_equal(wire_error_code(st + 5, b.len - 5, code), WIRE_OK);
    assert_string_equal(code, "42501");
    assert_int_equal(wire_error_severity(st + 5, b.len - 5, sev, sizeof(sev)), WIRE_OK);
    assert_string_equal(sev, "ERROR");
}

static void test_build_notice_minimal(void **state)
{
    uint8_t st[128];
    struct wire_buf b;
    wire_buf_init(&b, st, sizeof(st));
    struct wire_error_fields f = {.severity = "WARNING", .code = "01000", .message = "m"};
    wire_build_error(&b, 'N', &f);
    /* 9 + 9 + 7 + 3 + 1 = 29, length word 33: absent fields and position 0 are left out */
    assert_bytes(&b, LIT("N\x00\x00\x00\x21"
                         "SWARNING\0"
                         "VWARNING\0"
                         "C01000\0"
                         "Mm\0"
                         "\0"));
}

/* A FATAL whose detail does not fit goes without the detail, never not at all: the client
 * must learn why it is cut off. */
static void test_build_fatal_drops_a_detail_that_does_not_fit(void **state)
{
    (void)state;
    uint8_t st[64];
    struct wire_buf b;
    wire_buf_init(&b, st, sizeof(st));
    wire_build_fatal(&b, "57P01", "bye", "x");
    assert_bytes(&b, LIT("E\x00\x00\x00\x22SFATAL\0VFATAL\0C57P01\0Mbye\0Dx\0\0"));
    char detail[100];
    memset(detail, 'd', sizeof(detail) - 1);
    detail[sizeof(detail) - 1] = 0;
    wire_buf_init(&b, st, sizeof(st));
    wire_build_fatal(&b, "57P01", "bye", detail);
    assert_false(b.overflow);
    assert_bytes(&b, LIT("E\x00\x00\x00\x1fSFATAL\0VFATAL\0C57P01\0Mbye\0\0"));
}

static void test_build_error_position_extremes(void **state)
{
    uint8_t st[128];
    struct wire_buf b;
    wire_buf_init(&b, st, sizeof(st));
    struct wire_error_fields f = {.position = 1};
    wire_build_error(&b, 'E', &f);
    assert_bytes(&b, LIT("E\x00\x00\x00\x08"
                         "P1\0\0"));
    wire_buf_init(&b, st, sizeof(st));
    f.position = UINT32_MAX;
    wire_build_error(&b, 'E', &f);
    assert_bytes(&b, LIT("E\x00\x00\x00\x11"
                         "P4294967295\0\0"));
}

static void test_build_negotiate(void **state)
{
    uint8_t st[128];
    struct wire_buf b;
    wire_buf_init(&b, st, sizeof(st));
    const char *const opts[] = {"_pq_.x", "_pq_.yz"};
    wire_build_negotiate(&b, 0, opts, 2);
    assert_bytes(&b, LIT("v\x00\x00\x00\x1b"
                         "\x00\x00\x00\x00"
                         "\x00\x00\x00\x02"
                         "_pq_.x\0_pq_.yz\0"));

    wire_buf_init(&b, st, sizeof(st));
    wire_build_negotiate(&b, 2, NULL, 0);
    assert_bytes(&b, LIT("v\x00\x00\x00\x0c\x00\x00\x00\x02\x00\x00\x00\x00"));
}

static void test_build_query(void **state)
{
    uint8_t st[64];
    struct wire_buf b;
    wire_buf_init(&b, st, sizeof(st));
    wire_build_query(&b, "SELECT 1");
    assert_bytes(&b, LIT("Q\x00\x00\x00\x0dSELECT 1\0"));
    wire_buf_init(&b, st, sizeof(st));
    wire_build_query(&b, "");
    assert_bytes(&b, LIT("Q\x00\x00\x00\x05\0"));
}

static void test_build_copy_fail(void **state)
{
    uint8_t st[64];
    struct wire_buf b;
    wire_buf_init(&b, st, sizeof(st));
    wire_build_copy_fail(&b, "no");
    assert_bytes(&b, LIT("f\x00\x00\x00\x07no\0"));
}

static void test_build_command_complete(void **state)
{
    uint8_t st[64];
    struct wire_buf b;
    wire_buf_init(&b, st, sizeof(st));
    wire_build_command_complete(&b, "SELECT 1");
    assert_bytes(&b, LIT("C\x00\x00\x00\x0dSELECT 1\0"));
}

/* The startup reply sequence a client sees, appended into one buffer. */
static void test_build_sequence_appends(void **state)
{
    uint8_t st[128];
    struct wire_buf b;
    wire_buf_init(&b, st, sizeof(st));
    wire_build_auth_ok(&b);
    wire_build_param_status(&b, "a", "b");
    wire_build_backend_key(&b, 1, 2);
    wire_build_rfq(&b, 'I');
    assert_bytes(&b, LIT("R\x00\x00\x00\x08\x00\x00\x00\x00"
                         "S\x00\x00\x00\x08"
                         "a\0b\0"
                         "K\x00\x00\x00\x0c\x00\x00\x00\x01\x00\x00\x00\x02"
                         "Z\x00\x00\x00\x05I"));

    /* and the framing reads back message by message */
    size_t pos = 0;
    const char types[] = "RSKZ";
    for (int i = 0; i < 4; i++) {
        struct wire_hdr h;
        assert_int_equal(wire_read_hdr(st + pos, b.len - pos, 1024, &h), WIRE_OK);
        assert_int_equal(h.type, types[i]);
        pos += h.total;
    }
    assert_int_equal(pos, b.len);
}

/* Every builder at every too-small capacity: overflow set, len and earlier bytes untouched. */
static void build_one(struct wire_buf *b, int which)
{
    static const char *const opts[] = {"_pq_.a", "_pq_.b"};
    struct wire_error_fields f = {"ERROR", "54000", "row limit", "d", "h", 12};
    switch (which) {
    case 0:
        wire_build_auth_ok(b);
        break;
    case 1:
        wire_build_param_status(b, "TimeZone", "UTC");
        break;
    case 2:
        wire_build_backend_key(b, 7, 8);
        break;
    case 3:
        wire_build_rfq(b, 'T');
        break;
    case 4:
        wire_build_error(b, 'E', &f);
        break;
    case 5:
        wire_build_negotiate(b, 0, opts, 2);
        break;
    case 6:
        wire_build_query(b, "select 1");
        break;
    case 7:
        wire_build_copy_fail(b, "COPY is not supported");
        break;
    case 8:
        wire_build_command_complete(b, "SELECT 0");
        break;
    }
}

static void test_build_overflow(void **state)
{
    for (int which = 0; which < 9; which++) {
        uint8_t full[256];
        struct wire_buf b;
        wire_buf_init(&b, full, sizeof(full));
        build_one(&b, which);
        assert_false(b.overflow);
        size_t need = b.len;
        assert_true(need >= 5);
        for (size_t prefix = 0; prefix <= 3; prefix += 3) {
            for (size_t cap = prefix; cap < prefix + need; cap++) {
                uint8_t *st = malloc(cap ? cap : 1); /* exact size: ASan sees any overrun */
                assert_non_null(st);
                wire_buf_init(&b, st, cap);
                if (prefix) {
                    memcpy(st, "abc", 3);
                    b.len = 3;
                }
                build_one(&b, which);
                assert_true(b.overflow);
                assert_int_equal(b.len, prefix);
                if (prefix)
                    assert_memory_equal(st, "abc", 3);
                free(st);
            }
            uint8_t *st = malloc(prefix + need);
            assert_non_null(st);
            wire_buf_init(&b, st, prefix + need);
            b.len = prefix;
            build_one(&b, which);
            assert_false(b.overflow);
            assert_int_equal(b.len, prefix + need);
            assert_memory_equal(st + prefix, full, need);
            free(st);
        }
    }
}

/* overflow is sticky: a later message that fits still leaves the flag set */
static void test_build_overflow_sticky(void **state)
{
    uint8_t st[16];
    struct wire_buf b;
    wire_buf_init(&b, st, sizeof(st));
    wire_build_query(&b, "a very long query text");
    assert_true(b.overflow);
    assert_int_equal(b.len, 0);
    wire_build_rfq(&b, 'I');
    assert_true(b.overflow);
    assert_int_equal(b.len, 6);
}

/* --- typed header framing --- */

static void test_read_hdr_need_more(void **state)
{
    const uint8_t msg[] = {'Q', 0, 0, 0, 5, 0};
    for (size_t n = 0; n < 5; n++) {
        struct wire_hdr h = {'?', 99, 99};
        assert_int_equal(wire_read_hdr(msg, n, 1024, &h), WIRE_NEED_MORE);
        assert_int_equal(h.type, '?'); /* out untouched */
    }
    struct wire_hdr h;
    assert_int_equal(wire_read_hdr(msg, 5, 1024, &h), WIRE_OK);
    assert_int_equal(h.type, 'Q');
    assert_int_equal(h.len, 5);
    assert_int_equal(h.total, 6);
}

static void test_read_hdr_bad_length(void **state)
{
    struct wire_hdr h;
    assert_int_equal(wire_read_hdr(LIT("Q\x00\x00\x00\x00"), 1024, &h), WIRE_BAD_LENGTH);
    assert_int_equal(wire_read_hdr(LIT("Q\x00\x00\x00\x03"), 1024, &h), WIRE_BAD_LENGTH);
    assert_int_equal(wire_read_hdr(LIT("Q\x00\x00\x00\x04"), 1024, &h), WIRE_OK);
    assert_int_equal(h.len, 4);
    assert_int_equal(h.total, 5);
}

static void test_read_hdr_too_long(void **state)
{
    struct wire_hdr h;
    /* 2^31: the sign bit of PostgreSQL's int32 length */
    assert_int_equal(wire_read_hdr(LIT("D\x80\x00\x00\x00"), 1u << 30, &h), WIRE_TOO_LONG);
    assert_int_equal(wire_read_hdr(LIT("D\x80\x00\x00\x00"), INT32_MAX, &h), WIRE_TOO_LONG);
    assert_int_equal(wire_read_hdr(LIT("D\xff\xff\xff\xff"), INT32_MAX, &h), WIRE_TOO_LONG);
    /* max + 1 and exact max */
    assert_int_equal(wire_read_hdr(LIT("D\x00\x01\x00\x01"), 0x10000, &h), WIRE_TOO_LONG);
    assert_int_equal(wire_read_hdr(LIT("D\x00\x01\x00\x00"), 0x10000, &h), WIRE_OK);
    assert_int_equal(h.type, 'D');
    assert_int_equal(h.len, 0x10000);
    assert_int_equal(h.total, 0x10001);
    /* the full uint32 range does not wrap total */
    assert_int_equal(wire_read_hdr(LIT("D\xff\xff\xff\xff"), UINT32_MAX, &h), WIRE_OK);
    assert_true(h.total == (size_t)UINT32_MAX + 1);
}

static void test_strerror(void **state)
{
    const int errs[] = {WIRE_OK,       WIRE_NEED_MORE, WIRE_BAD_LENGTH,
                        WIRE_TOO_LONG, WIRE_MALFORMED, WIRE_NO_SPACE};
    for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
        assert_non_null(wire_strerror(errs[i]));
        assert_string_not_equal(wire_strerror(errs[i]), "unknown error");
        for (size_t k = 0; k < i; k++)
            assert_string_not_equal(wire_strerror(errs[i]), wire_strerror(errs[k]));
    }
    assert_string_equal(wire_strerror(-100), "unknown error");
}

/* --- ErrorResponse field readers --- */

static const char err_body[] = "SFEHLER\0VERROR\0C57014\0Mcanceling statement\0";

static void test_error_code_valid(void **state)
{
    char code[6] = "?????";
    char sev[32];
    assert_int_equal(wire_error_code(LIT(err_body), code), WIRE_OK);
    assert_string_equal(code, "57014");
    /* V (never localized) wins over S */
    assert_int_equal(wire_error_severity(LIT(err_body), sev, sizeof(sev)), WIRE_OK);
    assert_string_equal(sev, "ERROR");
    /* pre-9.6 servers send only S */
    assert_int_equal(wire_error_severity(LIT("SFATAL\0C28000\0\0"), sev, sizeof(sev)), WIRE_OK);
    assert_string_equal(sev, "FATAL");
    /* truncated to the caller's buffer */
    assert_int_equal(wire_error_severity(LIT(err_body), sev, 3), WIRE_OK);
    assert_string_equal(sev, "ER");
    assert_int_equal(wire_error_severity(LIT(err_body), sev, 1), WIRE_OK);
    assert_string_equal(sev, "");
    assert_int_equal(wire_error_severity(LIT(err_body), sev, 0), WIRE_NO_SPACE);
}

static void test_error_code_fieldless(void **state)
{
    char code[6];
    char sev[32] = "junk";
    assert_int_equal(wire_error_code(LIT("\0"), code), WIRE_MALFORMED);
    assert_string_equal(code, "XX000");
    assert_int_equal(wire_error_code((const uint8_t *)"", 0, code), WIRE_MALFORMED);
    assert_string_equal(code, "XX000");
    assert_int_equal(wire_error_severity(LIT("\0"), sev, sizeof(sev)), WIRE_MALFORMED);
    assert_string_equal(sev, "");
    /* fields present but not the one asked for */
    assert_int_equal(wire_error_code(LIT("Mhello\0\0"), code), WIRE_MALFORMED);
    assert_string_equal(code, "XX000");
    /* a SQLSTATE that is not five characters */
    assert_int_equal(wire_error_code(LIT("C4250\0\0"), code), WIRE_MALFORMED);
    assert_int_equal(wire_error_code(LIT("C425011\0\0"), code), WIRE_MALFORMED);
    assert_string_equal(code, "XX000");
    /* fields after the terminator are not read */
    assert_int_equal(wire_error_code(LIT("Mx\0\0C42501\0\0"), code), WIRE_MALFORMED);
}

static void test_error_code_truncated(void **state)
{
    size_t full = sizeof(err_body) - 1;
    size_t code_end = strlen("SFEHLER_VERROR_C57014_"); /* first length with the whole C field */
    for (size_t n = 0; n <= full; n++) {
        uint8_t *p = malloc(n ? n : 1);
        assert_non_null(p);
        memcpy(p, err_body, n);
        char code[6];
        char sev[32];
        int rc = wire_error_code(p, n, code);
        if (n >= code_end) {
            assert_int_equal(rc, WIRE_OK);
            assert_string_equal(code, "57014");
        } else {
            assert_int_equal(rc, WIRE_MALFORMED);
            assert_string_equal(code, "XX000");
        }
        rc = wire_error_severity(p, n, sev, sizeof(sev));
        if (rc == WIRE_OK)
            assert_true(strcmp(sev, "ERROR") == 0 || strcmp(sev, "FEHLER") == 0);
        else
            assert_string_equal(sev, "");
        free(p);
    }
}

/* len bytes of body copied to the very end of a page whose next page is PROT_NONE: a parser
 * that reads one byte past the message faults (without ASan too). */
struct guarded {
    uint8_t *map;
    size_t page;
};

static const uint8_t *guarded_copy(struct guarded *g, const void *body, size_t len)
{
    g->page = (size_t)sysconf(_SC_PAGESIZE);
    assert_true(len <= g->page);
    g->map = mmap(NULL, 2 * g->page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(g->map != MAP_FAILED);
    assert_int_equal(mprotect(g->map + g->page, g->page, PROT_NONE), 0);
    uint8_t *p = g->map + g->page - len;
    memcpy(p, body, len);
    return p;
}

static void guarded_free(struct guarded *g)
{
    munmap(g->map, 2 * g->page);
}

static int param_status_at_page_end(const void *body, size_t len, const char **name,
                                    const char **value)
{
    struct guarded g;
    const uint8_t *p = guarded_copy(&g, body, len);
    int rc = wire_parse_param_status(p, len, name, value);
    if (rc == WIRE_OK) { /* both point into the message and end inside it */
        assert_true((const uint8_t *)*name >= p && (const uint8_t *)*value < p + len);
        assert_true((const uint8_t *)*value + strlen(*value) < p + len);
    }
    guarded_free(&g);
    return rc;
}

/* A ParameterStatus body is bounded by its length: a missing NUL is malformed, never found in
 * the bytes after the message (the next message's length word has NULs in it). */
static void test_parse_param_status_bounded(void **state)
{
    const char *name = NULL, *value = NULL;
    static const char ok[] = "TimeZone\0UTC"; /* its own NUL ends the value */
    assert_int_equal(param_status_at_page_end(ok, sizeof(ok), &name, &value), WIRE_OK);
    assert_int_equal(wire_parse_param_status((const uint8_t *)ok, sizeof(ok), &name, &value),
                     WIRE_OK);
    assert_string_equal(name, "TimeZone");
    assert_string_equal(value, "UTC");
    assert_int_equal(param_status_at_page_end("\0", 2, &name, &value), WIRE_OK); /* both empty */

    /* one byte short: the value's NUL is outside the message */
    name = value = NULL;
    assert_int_equal(param_status_at_page_end(ok, sizeof(ok) - 1, &name, &value), WIRE_MALFORMED);
    assert_null(name);
    assert_null(value);
    /* every shorter cut: the name's NUL missing too, down to an empty body */
    for (size_t n = 0; n < sizeof(ok) - 1; n++)
        assert_int_equal(param_status_at_page_end(ok, n, &name, &value), WIRE_MALFORMED);
    assert_int_equal(wire_parse_param_status(NULL, 0, &name, &value), WIRE_MALFORMED);
    /* a name without a value, and bytes after the value */
    assert_int_equal(param_status_at_page_end("TimeZone", 9, &name, &value), WIRE_MALFORMED);
    assert_int_equal(param_status_at_page_end("a\0b\0c", 6, &name, &value), WIRE_MALFORMED);
    assert_int_equal(param_status_at_page_end("a\0b\0\0", 5, &name, &value), WIRE_MALFORMED);
    assert_null(name);
}

/* Exactly the six extended requests: not Sync, not FunctionCall, not Query. */
static void test_is_ext_request(void **state)
{
    int n = 0;
    for (int c = 0; c < 256; c++)
        n += wire_is_ext_request((char)c);
    assert_int_equal(n, 6);
    for (const char *t = "PBDECH"; *t; t++)
        assert_true(wire_is_ext_request(*t));
    assert_false(wire_is_ext_request('S'));
    assert_false(wire_is_ext_request('F'));
    assert_false(wire_is_ext_request('Q'));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_auth_ok),
        cmocka_unit_test(test_build_fatal_drops_a_detail_that_does_not_fit),
        cmocka_unit_test(test_build_param_status),
        cmocka_unit_test(test_parse_param_status_bounded),
        cmocka_unit_test(test_build_backend_key),
        cmocka_unit_test(test_build_rfq),
        cmocka_unit_test(test_build_error_all_fields),
        cmocka_unit_test(test_build_notice_minimal),
        cmocka_unit_test(test_build_error_position_extremes),
        cmocka_unit_test(test_build_negotiate),
        cmocka_unit_test(test_build_query),
        cmocka_unit_test(test_build_copy_fail),
        cmocka_unit_test(test_build_command_complete),
        cmocka_unit_test(test_build_sequence_appends),
        cmocka_unit_test(test_build_overflow),
        cmocka_unit_test(test_build_overflow_sticky),
        cmocka_unit_test(test_is_ext_request),
        cmocka_unit_test(test_read_hdr_need_more),
        cmocka_unit_test(test_read_hdr_bad_length),
        cmocka_unit_test(test_read_hdr_too_long),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_error_code_valid),
        cmocka_unit_test(test_error_code_fieldless),
        cmocka_unit_test(test_error_code_truncated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
