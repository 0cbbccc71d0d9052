/* A session's policy decisions. A text that needs parsing is parsed on the worker's thread
 * when it is small (microseconds, and the cache makes most of them free), and by a parser
 * pool thread otherwise: pg_query_parse cannot be paused, and a text near --max-parse-size
 * takes a good part of a second, during which every other session of the worker would wait.
 * While a job runs the relay holds the statement (RS_POLICY) and the session keeps serving
 * its upstream; the pool wakes the loop when the decision is in. */
#include "guard.h"
#include "guard_pool.h"
#include "log.h"
#include "metrics.h"
#include "runtime.h"
#include "session_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Holds what guard_cache_store needs when the job is done (the key is 4 KiB: allocated only
 * while a job is pending, so an idle session stays small). */
struct session_parse {
    struct guard_job *job;
    struct guard_cache_key key;
};

void session_policy_cache(struct session *s)
{
    /* the decision cache only pays off when statements are parsed */
    if (!s->gcache && s->cfg->policy_cache && guard_policy_parses(s->prof->policy))
        s->gcache = guard_cache_new();
}

static void decided_locally(struct guard_decision *d, enum guard_verdict v, const char *rule,
                            const char *message)
{
    memset(d, 0, sizeof(*d));
    d->verdict = v;
    snprintf(d->rule, sizeof(d->rule), "%s", rule);
    snprintf(d->message, sizeof(d->message), "%s", message);
}

static void busy(struct guard_decision *d)
{
    decided_locally(d, GUARD_BUSY, "parse-queue",
                    "too many large statements are waiting for pgwire-proxy's policy parser");
}

int session_policy_decide(struct session *s, const char *sql, size_t len, struct guard_decision *d)
{
    struct guard_policy *p = s->prof->policy;
    struct guard_cache_key key;
    if (guard_precheck(p, s->gcache, sql, len, 0, d, &key) == 0)
        return 0;
    if (len <= SESSION_INLINE_PARSE || !s->env->parsers) {
        bool cacheable = false;
        if (guard_decide(p, sql, len, d, &cacheable))
            return -1;
        if (cacheable)
            guard_cache_store(s->gcache, p, &key, d);
        guard_parse_release(len);
        return 0;
    }
    struct session_parse *sp = malloc(sizeof(*sp));
    if (!sp)
        return -1;
    sp->key = key;
    sp->job = guard_pool_submit(s->env->parsers, p, sql, len, loop_wake_fd(s->loop));
    if (!sp->job) {
        free(sp);
        busy(d);
        guard_shadow_only(p, d); /* shadow rules alone never hold a statement back */
        return 0;
    }
    s->parse = sp;
    loop_wait_wake(s->loop, &s->waiter);
    return 1;
}

void session_policy_poll(struct session *s)
{
    struct session_parse *sp = s->parse;
    if (!sp)
        return;
    if (!guard_job_done(sp->job)) {
        loop_wait_wake(s->loop, &s->waiter); /* woken for something else: keep waiting */
        return;
    }
    struct guard_decision d;
    bool cacheable = false;
    int rc = guard_job_result(sp->job, &d, &cacheable);
    if (rc == 0 && cacheable)
        guard_cache_store(s->gcache, s->prof->policy, &sp->key, &d);
    else if (rc == -ECANCELED)
        busy(&d);
    else if (rc != 0)
        decided_locally(&d, GUARD_DENY, "internal",
                        "statement could not be checked: out of memory");
    guard_shadow_only(s->prof->policy, &d);
    session_policy_release(s);
    fe_proto_decided(&s->relay, &d);
}

void session_policy_release(struct session *s)
{
    if (!s->parse)
        return;
    guard_job_release(s->parse->job);
    free(s->parse);
    s->parse = NULL;
}
