/* Client addresses as fixed-size keys, for limits kept per client address (cancel rate, HTTP
 * connection slots). */
#ifndef PGWP_ADDR_H
#define PGWP_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define ADDR_KEY_LEN 16

struct addr_key {
    uint8_t b[ADDR_KEY_LEN];
};

/* IPv4 and IPv4-mapped IPv6 become ::ffff:a.b.c.d; IPv6 becomes its /64 prefix, because one
 * host is routinely given a whole /64 and limiting single addresses would limit nothing; any
 * other family (or NULL) becomes all zeros, one shared key. */
void addr_key_from(const struct sockaddr *sa, socklen_t len, struct addr_key *out);
bool addr_key_equal(const struct addr_key *a, const struct addr_key *b);
/* Same address, ignoring the port (for "is this one of the peers?"). */
bool addr_same_host(const struct sockaddr *a, const struct sockaddr *b);
/* A keyed hash, so a client cannot choose addresses that collide on purpose. */
uint32_t addr_key_hash(const struct addr_key *k, uint64_t seed);
/* "192.0.2.7" or "2001:db8:1:2::/64", for logs. */
void addr_key_format(const struct addr_key *k, char *buf, size_t len);

#endif
