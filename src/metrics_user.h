/* Metrics with a user label, and authentication outcomes. The label is a user name only for
 * configured users (a [user:NAME] profile or an auth-file entry): every other name is counted
 * as "other", so names a client claims cannot create series. */
#ifndef PGWP_METRICS_USER_H
#define PGWP_METRICS_USER_H

#include <stdbool.h>

#define METRICS_USER_SLOTS 256
#define METRICS_USER_OTHER (-1)

enum metrics_auth_outcome {
    METRICS_AUTH_OK,
    METRICS_AUTH_FAILED,  /* wrong password, unknown user, certificate or peer mismatch */
    METRICS_AUTH_REFUSED, /* pg_hba.conf reject, no matching record, no client certificate */
    METRICS_AUTH_ERROR,   /* malformed exchange */
    METRICS_AUTH_OUTCOME_MAX
};

/* The label slot for name; configured: whether the name is a configured user. */
int metrics_user_slot(const char *name, bool configured);
void metrics_user_session(int slot, int delta); /* sessions_active by user */
void metrics_user_connection(int slot, bool accepted);
/* method: "trust", "scram-sha-256", "cert", "peer", "hba". */
void metrics_auth(const char *method, enum metrics_auth_outcome o);
/* The families above as Prometheus text (malloc'd), or NULL. */
char *metrics_user_render(void);

#endif
