/* Ends upstream backends that ignore their cancel: a PL/pgSQL loop that catches
 * query_canceled would otherwise run on after the proxy closed both sides. One thread opens a
 * side connection with the session's DSN and runs pg_terminate_backend(pid) (a role may end
 * its own backends), so no event loop ever blocks on it. */
#ifndef PGWP_REAPER_H
#define PGWP_REAPER_H

#include <stdint.h>

struct reaper;

struct reaper *reaper_new(void);
/* Drops jobs not yet started and joins the thread. */
void reaper_free(struct reaper *r);
/* Queues the termination of backend pid (dsn is copied). Bounded: when the queue is full the
 * job is dropped and logged (the backend's own statement_timeout remains). */
void reaper_terminate(struct reaper *r, const char *dsn, uint32_t pid);

#endif
