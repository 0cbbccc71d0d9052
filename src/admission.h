/* Connections still in startup, counted in all and per client address, so that one address
 * cannot take the room every other client needs to connect. Thread-safe; no sockets. */
#ifndef PGWP_ADMISSION_H
#define PGWP_ADMISSION_H

#include <stdint.h>
#include <sys/socket.h>

/* A client address as counted: IPv4 (an IPv4-mapped IPv6 address too) by its 4 bytes, IPv6 by
 * its /64 (what one host or site is given), anything else as one shared key. */
struct admission_key {
    uint8_t family; /* 4, 6, or 0 */
    uint8_t addr[16];
};

void admission_key_from(const struct sockaddr_storage *ss, struct admission_key *k);

enum admission_result {
    ADMISSION_OK = 0,
    ADMISSION_TOTAL,   /* max_total connections are in startup already */
    ADMISSION_ADDRESS, /* max_per_address of them are from this address */
    ADMISSION_NOMEM,
};

struct admission;

/* seed keys the hash, so that addresses cannot be picked to collide. NULL without memory. */
struct admission *admission_new(uint64_t seed);
void admission_free(struct admission *a);

/* Counts one more connection in startup from k, unless that would pass either limit (limits
 * are taken per call: a reload may change them). */
enum admission_result admission_enter(struct admission *a, const struct admission_key *k,
                                      int max_total, int max_per_address);
/* Undoes one admission_enter() that returned ADMISSION_OK. */
void admission_leave(struct admission *a, const struct admission_key *k);

int admission_total(struct admission *a);
int admission_count(struct admission *a, const struct admission_key *k);
/* Distinct addresses with a connection in startup (the table's size). */
int admission_addresses(struct admission *a);

#endif
