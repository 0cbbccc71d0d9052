#include "user_limits.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct user_count {
    char name[64];
    atomic_int n;
};

struct user_limits {
    pthread_mutex_t mu;
    struct user_count **slots; /* each allocated once: counters never move */
    size_t n, cap;
};

struct user_limits *user_limits_new(void)
{
    struct user_limits *u = calloc(1, sizeof(*u));
    if (u)
        pthread_mutex_init(&u->mu, NULL);
    return u;
}

void user_limits_free(struct user_limits *u)
{
    if (!u)
        return;
    for (size_t i = 0; i < u->n; i++)
        free(u->slots[i]);
    free(u->slots);
    pthread_mutex_destroy(&u->mu);
    free(u);
}

static atomic_int *add(struct user_limits *u, const char *name)
{
    if (u->n == USER_LIMITS_MAX)
        return NULL;
    if (u->n == u->cap) {
        size_t cap = u->cap ? u->cap * 2 : 16;
        struct user_count **s = realloc(u->slots, cap * sizeof(*s));
        if (!s)
            return NULL;
        u->slots = s;
        u->cap = cap;
    }
    struct user_count *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    strncpy(c->name, name, sizeof(c->name) - 1);
    atomic_init(&c->n, 0);
    u->slots[u->n++] = c;
    return &c->n;
}

atomic_int *user_limits_counter(struct user_limits *u, const char *name)
{
    atomic_int *found = NULL;
    if (!u)
        return NULL;
    pthread_mutex_lock(&u->mu);
    for (size_t i = 0; i < u->n && !found; i++)
        if (strncmp(u->slots[i]->name, name, sizeof(u->slots[i]->name) - 1) == 0)
            found = &u->slots[i]->n;
    if (!found)
        found = add(u, name);
    pthread_mutex_unlock(&u->mu);
    return found;
}
