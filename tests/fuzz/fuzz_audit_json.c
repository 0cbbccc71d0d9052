/* libFuzzer target for the audit trail's JSON text: whatever bytes a client sends, the string
 * written is valid UTF-8 without a raw control character or an unescaped quote, invalid input
 * is reported as such, and its hex sibling holds exactly the input. Invariant breaks abort(). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "audit_int.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The JSON string at s (after its opening quote) is well formed; returns its end (the quote). */
static const char *check_string(const char *s, const char *end)
{
    CHECK(audit_utf8_valid_prefix(s, (size_t)(end - s)) == (size_t)(end - s));
    for (; s < end && *s != '"'; s++) {
        CHECK((unsigned char)*s >= 0x20);
        if (*s == '\\') {
            s++;
            CHECK(s < end && strchr("\"\\nrtu", *s));
            if (*s == 'u')
                for (int i = 0; i < 4; i++)
                    CHECK(++s < end && hexval(*s) >= 0);
        }
    }
    CHECK(s < end);
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy, so ASan sees any read past the input */
    char *in = malloc(size ? size : 1);
    CHECK(in);
    if (size)
        memcpy(in, data, size);
    struct audit_text t = {0};
    audit_json_text_field(&t, "k", in, size);
    CHECK(!t.failed && t.buf);
    const char *end = t.buf + t.len;
    CHECK(strncmp(t.buf, ",\"k\":\"", 6) == 0);
    const char *q = check_string(t.buf + 6, end);
    bool valid = audit_utf8_valid_prefix(in, size) == size;
    if (valid) {
        CHECK(q + 1 == end);
    } else {
        CHECK(strncmp(q + 1, ",\"k_hex\":\"", 10) == 0);
        const char *h = q + 11;
        CHECK((size_t)(end - h) == 2 * size + 1 && end[-1] == '"');
        for (size_t i = 0; i < size; i++)
            CHECK(hexval(h[2 * i]) * 16 + hexval(h[2 * i + 1]) == (unsigned char)in[i]);
    }
    audit_text_free(&t);
    free(in);
    return 0;
}
