/* Per-user session counts for a [user:NAME] profile's max-connections: process-wide (a
 * session of an older configuration generation still counts), one atomic counter per name,
 * looked up once per session. Only profiles with a ceiling get a counter, so the table is
 * bounded by configured names. */
#ifndef PGWP_USER_LIMITS_H
#define PGWP_USER_LIMITS_H

#include <stdatomic.h>

#define USER_LIMITS_MAX 4096

struct user_limits;

struct user_limits *user_limits_new(void);
void user_limits_free(struct user_limits *u);
/* The counter of name (made on first use; it lives as long as the table). NULL when the table
 * is full or out of memory: the caller refuses the session rather than count nothing. */
atomic_int *user_limits_counter(struct user_limits *u, const char *name);

#endif
