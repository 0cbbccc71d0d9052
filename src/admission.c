/* A chained hash table of client address -> connections in startup. An entry exists only
 * while its count is above zero, so the table never holds more entries than connections in
 * startup, which max_total bounds. */
#include "admission.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define ADMISSION_BUCKETS 1024 /* a power of two */

struct admission_entry {
    struct admission_entry *next;
    struct admission_key key;
    int count;
};

struct admission {
    pthread_mutex_t mu;
    uint64_t seed;
    int total;
    int entries;
    struct admission_entry *buckets[ADMISSION_BUCKETS];
};

void admission_key_from(const struct sockaddr_storage *ss, struct admission_key *k)
{
    memset(k, 0, sizeof(*k));
    if (ss->ss_family == AF_INET) {
        k->family = 4;
        memcpy(k->addr, &((const struct sockaddr_in *)ss)->sin_addr, 4);
    } else if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6)) {
            k->family = 4;
            memcpy(k->addr, a6->s6_addr + 12, 4);
        } else {
            k->family = 6;
            memcpy(k->addr, a6->s6_addr, 8);
        }
    }
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static size_t bucket_of(const struct admission *a, const struct admission_key *k)
{
    uint64_t w0, w1;
    memcpy(&w0, k->addr, 8);
    memcpy(&w1, k->addr + 8, 8);
    uint64_t h = mix(a->seed ^ k->family);
    h = mix(h ^ w0);
    h = mix(h ^ w1);
    return (size_t)(h & (ADMISSION_BUCKETS - 1));
}

static struct admission_entry **find(struct admission *a, const struct admission_key *k)
{
    struct admission_entry **pp = &a->buckets[bucket_of(a, k)];
    while (*pp && memcmp(&(*pp)->key, k, sizeof(*k)) != 0)
        pp = &(*pp)->next;
    return pp;
}

struct admission *admission_new(uint64_t seed)
{
    struct admission *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->seed = seed;
    pthread_mutex_init(&a->mu, NULL);
    return a;
}

void admission_free(struct admission *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < ADMISSION_BUCKETS; i++) {
        for (struct admission_entry *e = a->buckets[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    pthread_mutex_destroy(&a->mu);
    free(a);
}

enum admission_result admission_enter(struct admission *a, const struct admission_key *k,
                                      int max_total, int max_per_address)
{
    enum admission_result r = ADMISSION_OK;
    pthread_mutex_lock(&a->mu);
    struct admission_entry **pp = find(a, k);
    if (a->total >= max_total) {
        r = ADMISSION_TOTAL;
    } else if (*pp && (*pp)->count >= max_per_address) {
        r = ADMISSION_ADDRESS;
    } else if (!*pp && max_per_address < 1) {
        r = ADMISSION_ADDRESS;
    } else if (!*pp) {
        struct admission_entry *e = calloc(1, sizeof(*e));
        if (!e) {
            r = ADMISSION_NOMEM;
        } else {
            e->key = *k;
            e->count = 1;
            *pp = e;
            a->entries++;
            a->total++;
        }
    } else {
        (*pp)->count++;
        a->total++;
    }
    pthread_mutex_unlock(&a->mu);
    return r;
}

void admission_leave(struct admission *a, const struct admission_key *k)
{
    pthread_mutex_lock(&a->mu);
    struct admission_entry **pp = find(a, k);
    struct admission_entry *e = *pp;
    if (e) {
        a->total--;
        if (--e->count == 0) {
            *pp = e->next;
            free(e);
            a->entries--;
        }
    }
    pthread_mutex_unlock(&a->mu);
}

int admission_total(struct admission *a)
{
    pthread_mutex_lock(&a->mu);
    int n = a->total;
    pthread_mutex_unlock(&a->mu);
    return n;
}

int admission_count(struct admission *a, const struct admission_key *k)
{
    pthread_mutex_lock(&a->mu);
    struct admission_entry **pp = find(a, k);
    int n = *pp ? (*pp)->count : 0;
    pthread_mutex_unlock(&a->mu);
    return n;
}

int admission_addresses(struct admission *a)
{
    pthread_mutex_lock(&a->mu);
    int n = a->entries;
    pthread_mutex_unlock(&a->mu);
    return n;
}
