/* Listeners, accept, connection ceiling, signals, shutdown and reload. */
#ifndef PGWP_SERVER_H
#define PGWP_SERVER_H

#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

struct guard_policy;
struct cancel_table;
struct tls_ctx;
struct audit_log;
struct worker;
struct admission;

/* One immutable configuration generation: sessions hold a reference while they use it. */
struct runtime {
    struct config cfg;
    struct guard_policy *policy;
    struct tls_ctx *tls;
    struct audit_log *audit;
    atomic_int refs;
    unsigned gen;
};

enum server_shutdown { SERVER_RUNNING = 0, SERVER_DRAINING = 1, SERVER_IMMEDIATE = 2 };

struct server {
    int argc;
    char **argv;
    pthread_mutex_t rt_mu;
    struct runtime *rt; /* current generation, guarded by rt_mu */
    atomic_uint rt_gen;
    struct cancel_table *cancels;
    struct admission *admission; /* connections in startup, per client address */
    int shutdown_efd;            /* becomes readable when shutdown starts */
    atomic_int shutting_down;    /* enum server_shutdown */
    atomic_llong shutdown_deadline_ms;
    atomic_int admitted; /* sessions counted against --max-connections */
    atomic_int live;     /* all sessions, admitted or not */
    atomic_ullong next_sid;
    pthread_mutex_t mu;
    pthread_cond_t all_gone; /* live dropped to 0 */
    struct worker *workers;
    int nworkers;
    atomic_uint next_worker;
};

struct runtime *server_runtime_acquire(struct server *srv);
void server_runtime_release(struct runtime *rt);

/* Builds a runtime (policy, TLS, audit) from cfg, taking ownership of cfg's contents. */
struct runtime *server_runtime_new(struct config *cfg, char *err, size_t errlen);

/* Runs until shutdown; returns the process exit code. Takes ownership of cfg. */
int server_run(struct config *cfg, int argc, char **argv);

#endif
