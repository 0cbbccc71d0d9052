/* libFuzzer target for the typed-message codec: frames the input the way the relay scans its
 * buffer (whole, and again as it arrives in uneven reads), runs the ErrorResponse/ReadyForQuery
 * readers on every body, and round-trips the error builder. Invariant breaks abort(). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

/* Readers get the body alone, in an exact-size copy, so ASan sees any read past it. */
static void inspect_body(const uint8_t *body, size_t len)
{
    uint8_t *copy = malloc(len ? len : 1);
    CHECK(copy);
    if (len)
        memcpy(copy, body, len);

    char code[6];
    int rc = wire_error_code(copy, len, code);
    CHECK(code[5] == 0 && strlen(code) == 5);
    CHECK(rc == WIRE_OK || (rc == WIRE_MALFORMED && strcmp(code, "XX000") == 0));

    char sev[16];
    size_t sevlen = len % sizeof(sev); /* includes 0: no room at all */
    rc = wire_error_severity(copy, len, sev, sevlen);
    if (sevlen == 0)
        CHECK(rc == WIRE_NO_SPACE);
    else
        CHECK((rc == WIRE_OK || rc == WIRE_MALFORMED) && strlen(sev) < sevlen);

    char st = wire_rfq_status(copy, len);
    CHECK(st == 0 || (len == 1 && st == (char)copy[0] && (st == 'I' || st == 'T' || st == 'E')));
    free(copy);
}

/* Scans complete messages in buf[*pos, avail); returns a wire_err and folds what it saw into
 * *trace so different read boundaries can be compared. */
static int relay_scan(const uint8_t *buf, size_t avail, uint32_t max_len, size_t *pos,
                      uint64_t *trace)
{
    for (;;) {
        struct wire_hdr h;
        int rc = wire_read_hdr(buf + *pos, avail - *pos, max_len, &h);
        if (rc == WIRE_NEED_MORE) {
            CHECK(avail - *pos < 5);
            return WIRE_OK;
        }
        if (rc != WIRE_OK) {
            CHECK(rc == WIRE_BAD_LENGTH || rc == WIRE_TOO_LONG);
            return rc;
        }
        CHECK(h.len >= 4 && h.len <= max_len && h.total == (size_t)h.len + 1);
        CHECK(h.type == (char)buf[*pos]);
        if (h.total > avail - *pos)
            return WIRE_OK; /* the rest of this message has not arrived */
        inspect_body(buf + *pos + 5, h.len - 4);
        *trace = *trace * 1000003u + (uint8_t)h.type + ((uint64_t)h.len << 8);
        *pos += h.total;
    }
}

static void fuzz_framing(const uint8_t *data, size_t size, uint32_t max_len)
{
    size_t pos_all = 0;
    uint64_t trace_all = 0;
    int rc_all = relay_scan(data, size, max_len, &pos_all, &trace_all);

    /* the same bytes in uneven reads must frame identically */
    size_t pos = 0;
    uint64_t trace = 0;
    int rc = WIRE_OK;
    size_t avail = 0;
    while (rc == WIRE_OK && avail < size) {
        avail += 1 + (avail * 7 + size) % 23;
        if (avail > size)
            avail = size;
        rc = relay_scan(data, avail, max_len, &pos, &trace);
    }
    CHECK(rc == rc_all && pos == pos_all && trace == trace_all);
}

/* Splits data at NULs into up to n strings (the rest empty); the copy stays in buf. */
static void split_fields(const uint8_t *data, size_t size, char *buf, const char **out, size_t n)
{
    memcpy(buf, data, size);
    buf[size] = 0;
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        out[i] = buf + (pos < size ? pos : size);
        if (pos < size)
            pos += strlen(buf + pos) + 1;
    }
}

static void fuzz_error_builder(const uint8_t *data, size_t size)
{
    if (size < 2 || size > 4096)
        return;
    size_t cap = data[0] * 4u + data[1] % 4u; /* 0..1023: often too small */
    char *text = malloc(size + 1);
    uint8_t *out = malloc(cap ? cap : 1);
    CHECK(text && out);
    const char *f[5];
    split_fields(data + 2, size - 2, text, f, 5);
    struct wire_error_fields ef = {f[0], f[1], f[2], f[3], f[4], (uint32_t)size * 2654435761u};

    struct wire_buf b;
    wire_buf_init(&b, out, cap);
    wire_build_error(&b, 'E', &ef);
    if (b.overflow) {
        CHECK(b.len == 0);
        goto out;
    }
    struct wire_hdr h;
    CHECK(wire_read_hdr(out, b.len, UINT32_MAX, &h) == WIRE_OK);
    CHECK(h.type == 'E' && h.total == b.len);
    char code[6];
    int rc = wire_error_code(out + 5, h.len - 4, code);
    if (strlen(ef.code) == 5)
        CHECK(rc == WIRE_OK && memcmp(code, ef.code, 5) == 0);
    else
        CHECK(rc == WIRE_MALFORMED);
    char sev[8];
    CHECK(wire_error_severity(out + 5, h.len - 4, sev, sizeof(sev)) == WIRE_OK);
    CHECK(strncmp(sev, ef.severity, sizeof(sev) - 1) == 0);
out:
    free(out);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    /* first byte: odd picks a small maximum so TOO_LONG is reached too */
    uint32_t max_len = (data[0] & 1) ? 4u + data[0] * 4u : 1u << 24;
    fuzz_framing(data + 1, size - 1, max_len);
    fuzz_error_builder(data, size);
    return 0;
}
