/* libFuzzer target for the SCRAM message parsers: the SASLInitialResponse layout, secrets,
 * and a whole exchange. Input: a mode byte (bit 0: -PLUS offered, bit 1: -PLUS selected,
 * bit 2: mock), a big-endian 16-bit length, client-first, then client-final. Each message is
 * an exact-size copy, so ASan sees any read past it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "scram.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static const char secret[] =
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

static void initial(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return;
    memcpy(buf, data, size);
    const char *mech = NULL, *why = NULL;
    const uint8_t *d = NULL;
    int32_t len = 0;
    if (scram_parse_initial(buf, size, &mech, &d, &len, &why) == 0) {
        CHECK(len >= -1);
        CHECK(len == -1 || (d >= buf && d + len == buf + size));
        CHECK(strlen(mech) < size);
    } else {
        CHECK(why != NULL);
    }
    free(buf);
}

static void as_secret(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return;
    memcpy(s, data, size);
    s[size] = 0;
    struct scram_secret sec;
    if (scram_parse_secret(s, &sec) == 0) {
        CHECK(sec.iterations >= 1 && sec.salt_len > 0 && sec.salt_len <= SCRAM_SALT_MAX);
        char again[SCRAM_SECRET_MAX * 2];
        CHECK(scram_format_secret(&sec, again, sizeof(again)) > 0);
    }
    free(s);
}

static enum scram_status feed(struct scram_state *st, const uint8_t *msg, size_t n, char *out,
                              size_t cap)
{
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return SCRAM_ERROR;
    memcpy(buf, msg, n);
    size_t outlen = 0;
    enum scram_status r = scram_exchange(st, buf, n, "snonce+/=", out, cap, &outlen);
    free(buf);
    CHECK(outlen < cap && strlen(out) == outlen);
    if (r == SCRAM_ERROR)
        CHECK(strlen(st->code) == 5 && st->message[0]);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    initial(data, size);
    as_secret(data, size);
    if (size < 3)
        return 0;
    struct scram_secret sec;
    CHECK(scram_parse_secret(secret, &sec) == 0);
    static const uint8_t hash[32] = {7};
    struct scram_state st;
    scram_init(&st, &sec, data[0] & 4, data[0] & 1, data[0] & 2, hash, sizeof(hash));
    size_t n1 = (size_t)data[1] << 8 | data[2];
    const uint8_t *m1 = data + 3;
    size_t rest = size - 3;
    if (n1 > rest)
        n1 = rest;
    char out[2 * SCRAM_MAX_MESSAGE + 256];
    out[0] = 0;
    if (feed(&st, m1, n1, out, sizeof(out)) != SCRAM_CONTINUE)
        return 0;
    CHECK(strncmp(out, "r=", 2) == 0 && st.stage == SCRAM_STAGE_FINAL);
    enum scram_status r = feed(&st, m1 + n1, rest - n1, out, sizeof(out));
    /* without the password, a proof can only match by a SHA-256 collision */
    CHECK(r != SCRAM_OK);
    return 0;
}
