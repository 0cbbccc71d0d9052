/* Event loops: one epoll loop per worker thread, each owning a set of sessions. Sessions are
 * handed over by the acceptor and never migrate, so a session is only touched by its worker. */
#ifndef PGWP_WORKER_H
#define PGWP_WORKER_H

#include <stdint.h>

struct server;
struct session;
struct worker;

/* Starts n workers. Returns 0 or -errno. */
int worker_pool_start(struct server *srv, int n);
/* Joins the workers (they exit once shutdown started and their sessions are gone). */
void worker_pool_join(struct server *srv);

/* Hands a new session to the next worker (round robin). */
void worker_assign(struct server *srv, struct session *s);

/* Registers/updates a session fd in its worker's epoll set. edge: the steady-state
 * edge-triggered in+out registration; otherwise level-triggered for `events`. */
int worker_watch(struct worker *w, int fd, struct session *s, int which, uint32_t events, int add);
void worker_unwatch(struct worker *w, int fd);

/* eventfd that wakes the worker (new sessions, delivered cancels). */
int worker_wake_fd(struct worker *w);

#endif
