/* libFuzzer target for the untyped startup-phase packets: the length check, then the parser on
 * an exact-size copy (so ASan sees any read past the packet), then lookups. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static const char *const lookups[] = {"user",
                                      "database",
                                      "options",
                                      "application_name",
                                      "client_encoding",
                                      "_pq_.test_protocol_negotiation",
                                      ""};

static void check_startup(const uint8_t *pkt, uint32_t len, const struct wire_startup *s)
{
    switch (s->kind) {
    case WIRE_PKT_SSL:
    case WIRE_PKT_GSSENC:
        CHECK(len == 8 && s->nparams == 0);
        return;
    case WIRE_PKT_CANCEL:
        CHECK(len == 16 && s->cancel_pid == wire_get_u32(pkt + 8) &&
              s->cancel_secret == wire_get_u32(pkt + 12));
        return;
    case WIRE_PKT_STARTUP:
        break;
    default:
        abort();
    }
    CHECK(s->nparams <= WIRE_MAX_STARTUP_PARAMS);
    CHECK(pkt[len - 1] == 0);
    const char *end = (const char *)pkt + len;
    for (size_t i = 0; i < s->nparams; i++) {
        const char *n = s->params[i].name, *v = s->params[i].value;
        CHECK(n > (const char *)pkt + 7 && n < end && v > n && v < end);
        CHECK(*n != 0 && n + strlen(n) < end && v + strlen(v) < end);
    }
    if (s->nparams > 0) /* the first match wins */
        CHECK(wire_startup_get(s, s->params[0].name) == s->params[0].value);
    for (size_t i = 0; i < sizeof(lookups) / sizeof(lookups[0]); i++) {
        const char *v = wire_startup_get(s, lookups[i]);
        CHECK(!v || (v >= (const char *)pkt && v < end));
    }
}

static void parse_exact(const uint8_t *data, uint32_t len)
{
    uint8_t *pkt = malloc(len ? len : 1);
    CHECK(pkt);
    if (len)
        memcpy(pkt, data, len);
    struct wire_startup s;
    int rc = wire_parse_startup(pkt, len, &s);
    CHECK(rc == WIRE_OK || rc == WIRE_MALFORMED);
    if (rc == WIRE_OK) {
        CHECK(len >= 8 && wire_get_u32(pkt) == len);
        check_startup(pkt, len, &s);
    }
    free(pkt);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t len = 0;
    int rc = wire_startup_len(data, size, &len);
    if (rc == WIRE_OK) {
        CHECK(len >= 8 && len <= WIRE_MAX_STARTUP_LEN && len == wire_get_u32(data));
        if (len <= size)
            parse_exact(data, len);
    } else {
        CHECK(rc == WIRE_NEED_MORE || rc == WIRE_BAD_LENGTH || rc == WIRE_TOO_LONG);
        CHECK(rc != WIRE_NEED_MORE || size < 4);
    }
    /* the parser must also hold up when handed a length the packet does not agree with */
    if (size <= WIRE_MAX_STARTUP_LEN + 16)
        parse_exact(data, (uint32_t)size);
    return 0;
}
