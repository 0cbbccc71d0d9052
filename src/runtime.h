/* Configuration generations: each SIGHUP builds a new immutable runtime (config, compiled
 * policy, TLS context, audit log); sessions hold a reference to the one they use and pick up
 * the newest at their next statement. */
#ifndef PGWP_RUNTIME_H
#define PGWP_RUNTIME_H

#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct guard_policy;
struct tls_ctx;
struct audit_log;
struct auth_conf;

/* What a session runs under: the top level, or a [user:NAME] profile. */
struct runtime_profile {
    const char *name; /* NULL: the top level */
    const struct config *cfg;
    struct guard_policy *policy;
    int max_connections; /* per-user ceiling, 0 = none */
};

struct runtime {
    struct config cfg;
    struct guard_policy *policy;
    struct auth_conf *auth;
    struct runtime_profile base;      /* users without a profile */
    struct runtime_profile *profiles; /* sorted by name, as cfg.users */
    size_t nprofiles;
    char auth_warning[320]; /* logged when the generation is installed; "" = none */
    struct tls_ctx *tls;
    struct audit_log *audit;
    atomic_int refs;
    unsigned gen;
    atomic_bool warned_superuser; /* "--read-only on a superuser upstream" logged once */
};

/* The current generation, swapped under a lock, its number readable without one. */
struct runtimes {
    pthread_mutex_t mu;
    struct runtime *cur;
    atomic_uint gen;
};

/* Builds a runtime (policy, TLS, audit) from cfg, taking ownership of cfg's contents. NULL
 * with err when the configuration cannot be used. */
struct runtime *runtime_new(struct config *cfg, char *err, size_t errlen);
void runtime_release(struct runtime *rt);
/* The profile a user's sessions run under. */
const struct runtime_profile *runtime_profile(const struct runtime *rt, const char *user);

void runtimes_init(struct runtimes *h, struct runtime *first);
/* A reference to the current generation (release it with runtime_release). */
struct runtime *runtimes_acquire(struct runtimes *h);
static inline unsigned runtimes_gen(struct runtimes *h)
{
    return atomic_load_explicit(&h->gen, memory_order_relaxed);
}
/* Installs rt (taking the caller's reference) and returns the previous generation, whose
 * reference the caller then releases. */
struct runtime *runtimes_install(struct runtimes *h, struct runtime *rt);

#endif
