#include "runtime.h"
#include "audit.h"
#include "auth.h"
#include "guard.h"
#include "tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Each [user:NAME] profile with its own compiled policy. */
static int build_profiles(struct runtime *rt, char *err, size_t errlen)
{
    if (!rt->cfg.nusers)
        return 0;
    rt->profiles = calloc(rt->cfg.nusers, sizeof(*rt->profiles));
    if (!rt->profiles) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < rt->cfg.nusers; i++) {
        const struct config_user *u = &rt->cfg.users[i];
        struct runtime_profile *p = &rt->profiles[rt->nprofiles];
        p->name = u->name;
        p->cfg = u->cfg;
        p->max_connections = u->max_connections;
        struct guard_rules rules;
        config_guard_rules(u->cfg, &rules);
        p->policy = guard_policy_compile(&rules, err, errlen);
        if (!p->policy)
            return -1;
        rt->nprofiles++;
    }
    return 0;
}

static int profile_cmp(const void *key, const void *elem)
{
    return strcmp(key, ((const struct runtime_profile *)elem)->name);
}

const struct runtime_profile *runtime_profile(const struct runtime *rt, const char *user)
{
    const struct runtime_profile *p =
        user && rt->nprofiles ? bsearch(user, rt->profiles, rt->nprofiles, sizeof(*p), profile_cmp)
                              : NULL;
    return p ? p : &rt->base;
}

struct runtime *runtime_new(struct config *cfg, char *err, size_t errlen)
{
    struct runtime *rt = calloc(1, sizeof(*rt));
    if (!rt) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    rt->cfg = *cfg;
    memset(cfg, 0, sizeof(*cfg)); /* ownership moved */
    atomic_init(&rt->refs, 1);
    struct guard_rules rules;
    config_guard_rules(&rt->cfg, &rules);
    rt->policy = guard_policy_compile(&rules, err, errlen);
    if (!rt->policy)
        goto fail;
    rt->base = (struct runtime_profile){.cfg = &rt->cfg, .policy = rt->policy};
    if (build_profiles(rt, err, errlen))
        goto fail;
    rt->auth = auth_conf_new(&rt->cfg, rt->auth_warning, sizeof(rt->auth_warning), err, errlen);
    if (!rt->auth)
        goto fail;
    if (rt->cfg.tls_cert) {
        rt->tls = tls_ctx_new(&rt->cfg, err, errlen);
        if (!rt->tls)
            goto fail;
    }
    if (rt->cfg.audit_log) {
        rt->audit = audit_open(rt->cfg.audit_log, rt->cfg.audit_redact,
                               (size_t)rt->cfg.max_parse_size, err, errlen);
        if (!rt->audit)
            goto fail;
    }
    return rt;
fail:
    runtime_release(rt);
    return NULL;
}

void runtime_release(struct runtime *rt)
{
    if (!rt || atomic_fetch_sub(&rt->refs, 1) != 1)
        return;
    guard_policy_free(rt->policy);
    for (size_t i = 0; i < rt->nprofiles; i++)
        guard_policy_free(rt->profiles[i].policy);
    free(rt->profiles);
    auth_conf_free(rt->auth);
    tls_ctx_free(rt->tls);
    audit_close(rt->audit);
    config_free(&rt->cfg);
    free(rt);
}

void runtimes_init(struct runtimes *h, struct runtime *first)
{
    pthread_mutex_init(&h->mu, NULL);
    h->cur = first;
    atomic_init(&h->gen, first ? first->gen : 0);
}

struct runtime *runtimes_acquire(struct runtimes *h)
{
    pthread_mutex_lock(&h->mu);
    struct runtime *rt = h->cur;
    atomic_fetch_add(&rt->refs, 1);
    pthread_mutex_unlock(&h->mu);
    return rt;
}

struct runtime *runtimes_install(struct runtimes *h, struct runtime *rt)
{
    pthread_mutex_lock(&h->mu);
    struct runtime *old = h->cur;
    rt->gen = old ? old->gen + 1 : 1;
    h->cur = rt;
    atomic_store(&h->gen, rt->gen);
    pthread_mutex_unlock(&h->mu);
    return old;
}
