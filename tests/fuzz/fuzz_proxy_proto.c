/* libFuzzer target for the PROXY protocol parser: on an exact-size copy (ASan sees any read
 * past the input), with the invariants the session relies on. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "proxy_proto.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    struct proxy_proto_header h;
    enum proxy_proto_result r = proxy_proto_parse(buf, size, &h);
    if (r == PROXY_PROTO_OK) {
        /* the header is within what was given, and parses the same on its own */
        CHECK(h.len > 0 && h.len <= size && h.len <= PROXY_PROTO_MAX_LEN);
        CHECK(h.version == 1 || h.version == 2);
        CHECK(!h.has_src || h.src.ss_family == AF_INET || h.src.ss_family == AF_INET6);
        struct proxy_proto_header again;
        CHECK(proxy_proto_parse(buf, h.len, &again) == PROXY_PROTO_OK && again.len == h.len);
        /* every shorter prefix is incomplete, never a different header */
        for (size_t i = 0; i < h.len; i += 1 + h.len / 16)
            CHECK(proxy_proto_parse(buf, i, &again) == PROXY_PROTO_NEED_MORE);
    } else if (r == PROXY_PROTO_NEED_MORE) {
        CHECK(size < PROXY_PROTO_MAX_LEN);
        CHECK(size == 0 || proxy_proto_signature(buf, size));
    }
    /* the same bytes as a --proxy-protocol-from entry */
    char text[80];
    size_t n = size < sizeof(text) - 1 ? size : sizeof(text) - 1;
    memcpy(text, data, n);
    text[n] = 0;
    struct proxy_proto_cidr c;
    if (proxy_proto_cidr_parse(text, &c) == 0)
        CHECK((c.family == AF_INET && c.prefix <= 32) || (c.family == AF_INET6 && c.prefix <= 128));
    free(buf);
    return 0;
}
