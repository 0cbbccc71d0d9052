#include "addr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

void addr_key_from(const struct sockaddr *sa, socklen_t len, struct addr_key *out)
{
    memset(out, 0, sizeof(*out));
    if (sa && sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        memcpy(out->b, v4_mapped, sizeof(v4_mapped));
        memcpy(out->b + 12, &in->sin_addr, 4);
    } else if (sa && sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        const uint8_t *a = in6->sin6_addr.s6_addr;
        if (memcmp(a, v4_mapped, sizeof(v4_mapped)) == 0)
            memcpy(out->b, a, 16); /* an IPv4 client on a dual-stack socket */
        else
            memcpy(out->b, a, 8);
    }
}

bool addr_key_equal(const struct addr_key *a, const struct addr_key *b)
{
    return memcmp(a->b, b->b, ADDR_KEY_LEN) == 0;
}

/* Both sides as 16 bytes: IPv4 mapped, so 127.0.0.1 equals ::ffff:127.0.0.1. */
static bool host_bytes(const struct sockaddr *sa, uint8_t out[16])
{
    if (sa->sa_family == AF_INET) {
        memcpy(out, v4_mapped, sizeof(v4_mapped));
        memcpy(out + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(out, ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr, 16);
        return true;
    }
    return false;
}

bool addr_same_host(const struct sockaddr *a, const struct sockaddr *b)
{
    uint8_t x[16], y[16];
    return a && b && host_bytes(a, x) && host_bytes(b, y) && memcmp(x, y, 16) == 0;
}

/* 64-bit mixing (the splitmix64 finaliser) over the two halves of the key. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint32_t addr_key_hash(const struct addr_key *k, uint64_t seed)
{
    uint64_t lo, hi;
    memcpy(&lo, k->b, 8);
    memcpy(&hi, k->b + 8, 8);
    return (uint32_t)(mix64(mix64(lo ^ seed) ^ hi) >> 16);
}

void addr_key_format(const struct addr_key *k, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (memcmp(k->b, v4_mapped, sizeof(v4_mapped)) == 0) {
        inet_ntop(AF_INET, k->b + 12, host, sizeof(host));
        snprintf(buf, len, "%s", host);
        return;
    }
    inet_ntop(AF_INET6, k->b, host, sizeof(host));
    snprintf(buf, len, "%s/64", host);
}
