/* Worker threads: each runs one event loop and the sessions handed to it. Sessions never
 * migrate, so a session is only touched by its worker's thread. */
#ifndef PGWP_WORKER_H
#define PGWP_WORKER_H

#include <stddef.h>
#include <sys/socket.h>

struct session_accept;
struct session_env;
struct worker_pool;

/* Starts n workers with stacks of stack_bytes. tmpl is copied into each worker (its host and
 * finished fields are the worker's own); shutdown_efd becomes readable when shutdown starts.
 * NULL on failure with err. */
struct worker_pool *worker_pool_start(int n, const struct session_env *tmpl, int shutdown_efd,
                                      size_t stack_bytes, char *err, size_t errlen);
/* Joins the workers (they exit once shutdown started and their sessions are gone). */
void worker_pool_join(struct worker_pool *p);
/* Hands an accepted socket to the next worker (round robin); it counts in session_counts.live
 * from now on. On failure the fd is closed (and not counted). */
void worker_pool_assign(struct worker_pool *p, int fd, const struct session_accept *acc);

#endif
