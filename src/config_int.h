/* Between config.c (the option table and loader) and config_user.c ([user:NAME] profiles). */
#ifndef PGWP_CONFIG_INT_H
#define PGWP_CONFIG_INT_H

#include "config.h"

#include <stdbool.h>
#include <stddef.h>

/* The keys a [user:NAME] section may set (per-session guardrails, the upstream, a ceiling). */
#define CONFIG_USER_KEYS                                                                           \
    "read-only, deny, allow, max-rows, max-bytes, query-timeout, idle-in-transaction-timeout, "    \
    "on-limit, extended-protocol, copy, max-connections, upstream"

struct config_user_entry {
    char *user, *key, *value;
    int line;
};

/* Keys seen in [user:NAME] sections, in file order. */
struct config_pending {
    struct config_user_entry *e;
    size_t n, cap;
};

/* "user:NAME" -> 0 with *name; -1 when it is no user section; -2 for a bad NAME. */
int config_user_section(const char *section, const char **name);
bool config_user_key_allowed(const char *key);
int config_user_record(struct config_pending *p, const char *user, const char *key,
                       const char *value, int line);
void config_pending_free(struct config_pending *p);
/* Builds c->users from the pending keys, each profile a copy of c with its keys applied and
 * checked. 0, or -1 with err naming the file, line, section and key. */
int config_user_build(struct config *c, const struct config_pending *p, const char *path, char *err,
                      size_t errlen);
void config_users_free(struct config *c);

#endif
