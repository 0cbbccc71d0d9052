/* PROXY protocol v1 and v2 headers (as HAProxy's send-proxy / send-proxy-v2 write them), and
 * the CIDR list of sources allowed to send one. Pure: no sockets, no allocation. */
#ifndef PGWP_PROXY_PROTO_H
#define PGWP_PROXY_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* v1 lines are at most 107 bytes; v2 is 16 bytes plus up to 65535 of addresses and TLVs, of
 * which we accept this much (HAProxy's TLVs fit many times over). */
#define PROXY_PROTO_V1_MAX  107
#define PROXY_PROTO_MAX_LEN 1024

enum proxy_proto_result {
    PROXY_PROTO_INVALID = -1, /* not a valid header: refuse the connection */
    PROXY_PROTO_NEED_MORE = 0,
    PROXY_PROTO_OK = 1,
};

struct proxy_proto_header {
    size_t len;   /* bytes the header takes; the client's own bytes follow */
    int version;  /* 1 or 2 */
    bool has_src; /* false: LOCAL, UNKNOWN or UNSPEC: the socket's own address stands */
    struct sockaddr_storage src;
    struct sockaddr_storage dst;
};

/* Parses the start of a connection's bytes. PROXY_PROTO_NEED_MORE while buf (len bytes) is a
 * valid prefix of a header that may still fit PROXY_PROTO_MAX_LEN. */
enum proxy_proto_result proxy_proto_parse(const uint8_t *buf, size_t len,
                                          struct proxy_proto_header *out);

/* True when buf starts like a v1 or v2 header (at least the first min(len, 5) bytes agree). */
bool proxy_proto_signature(const uint8_t *buf, size_t len);

struct proxy_proto_cidr {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    int prefix;
};

/* "10.0.0.0/8", "::1/128", "127.0.0.1" (a whole address). 0 or -1. */
int proxy_proto_cidr_parse(const char *s, struct proxy_proto_cidr *out);
/* True when addr (AF_INET, AF_INET6; an IPv4-mapped IPv6 address counts as IPv4) is in one
 * of the n ranges. */
bool proxy_proto_cidr_match(const struct proxy_proto_cidr *list, size_t n,
                            const struct sockaddr_storage *addr);

#endif
