/* CancelRequest rate limit: a token bucket per client address in a fixed-size table, so a
 * client cannot sweep the secret space of a known pid, and memory stays bounded whatever the
 * number of addresses. */
#ifndef PGWP_CANCEL_LIMIT_H
#define PGWP_CANCEL_LIMIT_H

#include "addr.h"

#include <stdbool.h>
#include <stdint.h>

/* Sets of CANCEL_LIMIT_WAYS entries: an address competes for a slot only with the few others
 * its (keyed) hash maps to, and evicting the least recently seen of them costs O(ways). */
#define CANCEL_LIMIT_SETS 256
#define CANCEL_LIMIT_WAYS 8

struct cancel_limiter;

struct cancel_limiter *cancel_limiter_new(void);
void cancel_limiter_free(struct cancel_limiter *l);

/* rate: cancels per second per address (0 = no limit); burst: the bucket's size. */
void cancel_limiter_configure(struct cancel_limiter *l, unsigned rate, unsigned burst);

enum cancel_limit_verdict {
    CANCEL_LIMIT_ALLOW,
    CANCEL_LIMIT_REFUSE,       /* over the rate */
    CANCEL_LIMIT_REFUSE_FIRST, /* over the rate, the first refusal since it was last allowed */
};

/* Takes one token from the bucket of address k at time now_ms (monotonic). Thread-safe. */
enum cancel_limit_verdict cancel_limiter_take(struct cancel_limiter *l, const struct addr_key *k,
                                              int64_t now_ms);

#endif
