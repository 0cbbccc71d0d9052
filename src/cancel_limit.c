#include "cancel_limit.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* Tokens are counted in thousandths so that refilling at `rate` per second is exact per
 * millisecond: rate tokens/s = rate milli-tokens/ms. */
#define MILLI 1000u

struct bucket {
    struct addr_key key;
    uint64_t milli_tokens;
    int64_t last_ms; /* last refill */
    uint64_t seen;   /* the limiter's tick at the last take; 0 = slot unused */
    bool refusing;   /* the last take was refused (one warning per streak) */
};

struct cancel_limiter {
    pthread_mutex_t mu;
    uint64_t seed;
    uint64_t tick; /* counts takes: recency for eviction, exact even within a millisecond */
    unsigned rate, burst;
    struct bucket sets[CANCEL_LIMIT_SETS][CANCEL_LIMIT_WAYS];
};

struct cancel_limiter *cancel_limiter_new(void)
{
    struct cancel_limiter *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    pthread_mutex_init(&l->mu, NULL);
    if (getrandom(&l->seed, sizeof(l->seed), 0) != (ssize_t)sizeof(l->seed))
        l->seed = (uint64_t)(uintptr_t)l ^ 0x9e3779b97f4a7c15ull; /* weaker, still per process */
    return l;
}

void cancel_limiter_free(struct cancel_limiter *l)
{
    if (!l)
        return;
    pthread_mutex_destroy(&l->mu);
    free(l);
}

void cancel_limiter_configure(struct cancel_limiter *l, unsigned rate, unsigned burst)
{
    pthread_mutex_lock(&l->mu);
    l->rate = rate;
    l->burst = burst < 1 ? 1 : burst;
    /* buckets fuller than the new size are cut down at their next refill */
    pthread_mutex_unlock(&l->mu);
}

/* The address's slot in its set, or the one to give it: unused first, else the least
 * recently seen (it is the one whose bucket is most likely full again anyway). */
static struct bucket *slot_for(struct cancel_limiter *l, const struct addr_key *k, bool *fresh)
{
    struct bucket *set = l->sets[addr_key_hash(k, l->seed) % CANCEL_LIMIT_SETS];
    struct bucket *victim = &set[0];
    for (int i = 0; i < CANCEL_LIMIT_WAYS; i++) {
        if (set[i].seen && addr_key_equal(&set[i].key, k)) {
            *fresh = false;
            return &set[i];
        }
        if (victim->seen && (!set[i].seen || set[i].seen < victim->seen))
            victim = &set[i];
    }
    *fresh = true;
    return victim;
}

enum cancel_limit_verdict cancel_limiter_take(struct cancel_limiter *l, const struct addr_key *k,
                                              int64_t now_ms)
{
    enum cancel_limit_verdict v = CANCEL_LIMIT_ALLOW;
    pthread_mutex_lock(&l->mu);
    if (l->rate == 0)
        goto out;
    uint64_t cap = (uint64_t)l->burst * MILLI;
    bool fresh;
    struct bucket *b = slot_for(l, k, &fresh);
    if (fresh) {
        b->key = *k;
        b->milli_tokens = cap;
        b->last_ms = now_ms;
        b->refusing = false;
    } else if (now_ms > b->last_ms) {
        uint64_t add = (uint64_t)(now_ms - b->last_ms) * l->rate;
        b->milli_tokens = add >= cap || b->milli_tokens + add > cap ? cap : b->milli_tokens + add;
        b->last_ms = now_ms;
    }
    if (b->milli_tokens > cap)
        b->milli_tokens = cap;
    b->seen = ++l->tick;
    if (b->milli_tokens >= MILLI) {
        b->milli_tokens -= MILLI;
        b->refusing = false;
    } else {
        v = b->refusing ? CANCEL_LIMIT_REFUSE : CANCEL_LIMIT_REFUSE_FIRST;
        b->refusing = true;
    }
out:
    pthread_mutex_unlock(&l->mu);
    return v;
}
