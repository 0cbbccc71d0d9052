/* PROXY protocol parser. Reads only the bytes it was given and says how many the header took,
 * so that the caller consumes exactly those and leaves the client's own bytes (SSLRequest, a
 * TLS handshake) in the socket. */
#include "proxy_proto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char v1_sig[] = "PROXY ";

bool proxy_proto_signature(const uint8_t *buf, size_t len)
{
    if (len == 0)
        return false;
    size_t n1 = len < 6 ? len : 6, n2 = len < 12 ? len : 12;
    return memcmp(buf, v1_sig, n1) == 0 || memcmp(buf, v2_sig, n2) == 0;
}

static void set_in4(struct sockaddr_storage *ss, const uint8_t *addr, const uint8_t *port)
{
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    memset(ss, 0, sizeof(*ss));
    in->sin_family = AF_INET;
    memcpy(&in->sin_addr, addr, 4);
    memcpy(&in->sin_port, port, 2); /* both in network order on the wire */
}

static void set_in6(struct sockaddr_storage *ss, const uint8_t *addr, const uint8_t *port)
{
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof(*ss));
    in6->sin6_family = AF_INET6;
    memcpy(&in6->sin6_addr, addr, 16);
    memcpy(&in6->sin6_port, port, 2);
}

static enum proxy_proto_result parse_v2(const uint8_t *buf, size_t len,
                                        struct proxy_proto_header *out)
{
    if (len < 16)
        return PROXY_PROTO_NEED_MORE;
    unsigned ver = buf[12] >> 4, cmd = buf[12] & 15, fam = buf[13] >> 4, proto = buf[13] & 15;
    size_t body = ((size_t)buf[14] << 8) | buf[15];
    if (ver != 2 || cmd > 1 || fam > 3 || proto > 2)
        return PROXY_PROTO_INVALID;
    if (16 + body > PROXY_PROTO_MAX_LEN)
        return PROXY_PROTO_INVALID;
    if (len < 16 + body)
        return PROXY_PROTO_NEED_MORE;
    out->len = 16 + body;
    out->version = 2;
    out->has_src = false;
    if (cmd == 0 || fam == 0 || fam == 3)
        return PROXY_PROTO_OK; /* LOCAL (health checks), UNSPEC, UNIX: the socket's address */
    if (proto != 1)
        return PROXY_PROTO_INVALID; /* a datagram address for a stream connection */
    const uint8_t *a = buf + 16;
    if (fam == 1) {
        if (body < 12)
            return PROXY_PROTO_INVALID;
        set_in4(&out->src, a, a + 8);
        set_in4(&out->dst, a + 4, a + 10);
    } else {
        if (body < 36)
            return PROXY_PROTO_INVALID;
        set_in6(&out->src, a, a + 32);
        set_in6(&out->dst, a + 16, a + 34);
    }
    out->has_src = true; /* TLVs after the addresses are skipped */
    return PROXY_PROTO_OK;
}

/* Splits the next space-separated token of [*p, end) into tok (NUL-terminated). */
static bool next_token(const char **p, const char *end, char *tok, size_t cap)
{
    const char *s = *p;
    const char *e = memchr(s, ' ', (size_t)(end - s));
    if (!e)
        e = end;
    size_t n = (size_t)(e - s);
    if (n == 0 || n >= cap)
        return false;
    memcpy(tok, s, n);
    tok[n] = 0;
    *p = e < end ? e + 1 : end;
    return true;
}

static bool parse_port(const char *tok, uint8_t port[2])
{
    unsigned long v = 0;
    size_t n = strlen(tok);
    if (n == 0 || n > 5)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (tok[i] < '0' || tok[i] > '9')
            return false;
        v = v * 10 + (unsigned long)(tok[i] - '0');
    }
    if (v > 65535)
        return false;
    port[0] = (uint8_t)(v >> 8);
    port[1] = (uint8_t)v;
    return true;
}

static enum proxy_proto_result parse_v1(const uint8_t *buf, size_t len,
                                        struct proxy_proto_header *out)
{
    size_t scan = len < PROXY_PROTO_V1_MAX ? len : PROXY_PROTO_V1_MAX;
    const uint8_t *cr = NULL;
    for (size_t i = 0; i < scan && !cr; i++) {
        if (buf[i] == '\r' && i + 1 < scan && buf[i + 1] == '\n')
            cr = buf + i;
        else if (buf[i] == '\r' && i + 1 == len)
            return PROXY_PROTO_NEED_MORE; /* its LF may be on the way */
        else if (buf[i] < 0x20 || buf[i] > 0x7e)
            return PROXY_PROTO_INVALID;
    }
    if (!cr)
        return len < PROXY_PROTO_V1_MAX ? PROXY_PROTO_NEED_MORE : PROXY_PROTO_INVALID;
    const char *p = (const char *)buf + 6, *end = (const char *)cr;
    char fam[8], src[48], dst[48], sport[8], dport[8];
    out->len = (size_t)(cr - buf) + 2;
    out->version = 1;
    out->has_src = false;
    if (!next_token(&p, end, fam, sizeof(fam)))
        return PROXY_PROTO_INVALID;
    if (strcmp(fam, "UNKNOWN") == 0)
        return PROXY_PROTO_OK; /* the rest of the line is to be ignored */
    int af = strcmp(fam, "TCP4") == 0 ? AF_INET : strcmp(fam, "TCP6") == 0 ? AF_INET6 : 0;
    uint8_t a[16], b[16], sp[2], dp[2];
    if (!af || !next_token(&p, end, src, sizeof(src)) || !next_token(&p, end, dst, sizeof(dst)) ||
        !next_token(&p, end, sport, sizeof(sport)) || !next_token(&p, end, dport, sizeof(dport)) ||
        p != end || inet_pton(af, src, a) != 1 || inet_pton(af, dst, b) != 1 ||
        !parse_port(sport, sp) || !parse_port(dport, dp))
        return PROXY_PROTO_INVALID;
    if (af == AF_INET) {
        set_in4(&out->src, a, sp);
        set_in4(&out->dst, b, dp);
    } else {
        set_in6(&out->src, a, sp);
        set_in6(&out->dst, b, dp);
    }
    out->has_src = true;
    return PROXY_PROTO_OK;
}

enum proxy_proto_result proxy_proto_parse(const uint8_t *buf, size_t len,
                                          struct proxy_proto_header *out)
{
    memset(out, 0, sizeof(*out));
    if (len == 0)
        return PROXY_PROTO_NEED_MORE;
    if (!proxy_proto_signature(buf, len))
        return PROXY_PROTO_INVALID;
    if (buf[0] == 'P')
        return len < 6 ? PROXY_PROTO_NEED_MORE : parse_v1(buf, len, out);
    return len < 12 ? PROXY_PROTO_NEED_MORE : parse_v2(buf, len, out);
}

int proxy_proto_cidr_parse(const char *s, struct proxy_proto_cidr *out)
{
    char host[64];
    const char *slash = strchr(s, '/');
    size_t hl = slash ? (size_t)(slash - s) : strlen(s);
    if (hl == 0 || hl >= sizeof(host))
        return -1;
    memcpy(host, s, hl);
    host[hl] = 0;
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, host, out->addr) == 1)
        out->family = AF_INET;
    else if (inet_pton(AF_INET6, host, out->addr) == 1)
        out->family = AF_INET6;
    else
        return -1;
    int max = out->family == AF_INET ? 32 : 128;
    out->prefix = max;
    if (slash) {
        const char *d = slash + 1;
        int v = 0;
        if (!*d || strlen(d) > 3)
            return -1;
        for (; *d; d++) {
            if (*d < '0' || *d > '9')
                return -1;
            v = v * 10 + (*d - '0');
        }
        if (v > max)
            return -1;
        out->prefix = v;
    }
    return 0;
}

static bool prefix_equal(const uint8_t *a, const uint8_t *b, int bits)
{
    int whole = bits / 8, rest = bits % 8;
    if (memcmp(a, b, (size_t)whole) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xFF << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

bool proxy_proto_cidr_match(const struct proxy_proto_cidr *list, size_t n,
                            const struct sockaddr_storage *addr)
{
    uint8_t bytes[16];
    int family = addr->ss_family;
    if (family == AF_INET) {
        memcpy(bytes, &((const struct sockaddr_in *)addr)->sin_addr, 4);
    } else if (family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)addr)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6)) {
            family = AF_INET;
            memcpy(bytes, a6->s6_addr + 12, 4);
        } else {
            memcpy(bytes, a6->s6_addr, 16);
        }
    } else {
        return false;
    }
    for (size_t i = 0; i < n; i++)
        if (list[i].family == family && prefix_equal(list[i].addr, bytes, list[i].prefix))
            return true;
    return false;
}
