/* The upstream health behind /healthz: one shared probe, run on a thread of its own at most
 * once per HEALTH_INTERVAL_MS however many checks arrive, that opens a full authenticated
 * session with the DSN (so wrong credentials and a full server count as unhealthy, as they
 * would for every client) and closes it again. A check never waits on PostgreSQL for longer
 * than HEALTH_ANSWER_WAIT_MS. */
#ifndef PGWP_HEALTH_H
#define PGWP_HEALTH_H

#include <stddef.h>

#define HEALTH_INTERVAL_MS      2000  /* a result younger than this is served as it is */
#define HEALTH_ANSWER_WAIT_MS   1000  /* a check waits this long for a fresh probe */
#define HEALTH_MAX_AGE_MS       10000 /* an older result is no longer an answer */
#define HEALTH_PROBE_TIMEOUT_MS 3000  /* a probe gives up on the upstream after this */

struct health;

/* Starts the probe thread (idle until asked). NULL on failure. */
struct health *health_start(void);
/* The DSN to probe (start and reload); a changed DSN discards the last result. */
void health_set_upstream(struct health *h, const char *dsn);
/* 1 when the upstream took the last probe's session, else 0 with a short reason ("upstream
 * authentication failed", ...) that never contains the DSN. */
int health_check(struct health *h, char *reason, size_t len);
/* Interrupts a probe in progress, joins the thread, frees. */
void health_stop(struct health *h);

#endif
