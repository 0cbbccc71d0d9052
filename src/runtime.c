#include "runtime.h"
#include "audit.h"
#include "guard.h"
#include "tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    rt->policy = guard_policy_new((const char *const *)rt->cfg.deny, rt->cfg.ndeny,
                                  (const char *const *)rt->cfg.allow, rt->cfg.nallow,
                                  rt->cfg.read_only, err, errlen);
    if (!rt->policy)
        goto fail;
    if (rt->cfg.copy == CONFIG_ALLOW)
        guard_policy_allow_copy(rt->policy);
    if (rt->cfg.tls_cert) {
        rt->tls = tls_ctx_new(&rt->cfg, err, errlen);
        if (!rt->tls)
            goto fail;
    }
    if (rt->cfg.audit_log) {
        rt->audit = audit_open(rt->cfg.audit_log, rt->cfg.audit_redact, AUDIT_MAX_PARSE_DEFAULT,
                               err, errlen);
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
