/* Between config.c (the loader), config_opts.c (the option table), config_values.c (value forms),
 * config_validate.c (checks after loading) and config_user.c ([user:NAME] profiles). */
#ifndef PGWP_CONFIG_INT_H
#define PGWP_CONFIG_INT_H

#include "config.h"

#include <stdarg.h>
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

/* One option of the table in config_opts.c. */
enum opt_type {
    OPT_STR,
    OPT_INT,
    OPT_DURATION,
    OPT_SIZE,
    OPT_BOOL,
    OPT_LIST,
    OPT_ENUM,
    OPT_LISTEN,
    OPT_MODE
};

struct config_opt {
    const char *name; /* flag without "--"; file key; env PGWIRE_PROXY_<NAME upper, '-'→'_'> */
    enum opt_type type;
    size_t off;
    const char *const *choices; /* OPT_ENUM: NULL-terminated; index stored as int */
    long min, max;              /* OPT_INT range */
    const char *arg;            /* shown in --help */
    const char *help;
};

#define CONFIG_OFF(f)   offsetof(struct config, f)
#define CONFIG_OPTS_MAX 96
extern const struct config_opt config_opts[];
extern const size_t config_nopts;

/* Formats err as one line (control characters become spaces); returns -EINVAL. */
__attribute__((format(printf, 3, 0))) int config_vfail(char *err, size_t errlen, const char *fmt,
                                                       va_list ap);
/* on/off, true/false, yes/no, 1/0 in any case; -EINVAL for anything else. */
int config_parse_bool(const char *v, bool *out);
/* The cross-option checks of a loaded configuration: 0, or -1 with err one line. */
int config_validate(struct config *c, char *err, size_t errlen);

#endif
