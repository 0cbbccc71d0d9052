/* [user:NAME] sections: per-user profiles. A profile is the finished top-level configuration
 * (file, environment and flags) with the section's keys applied, checked like the top level:
 * a key it may not set, a bad value or a policy that does not compile names file, line,
 * section and key. */
#include "config_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const user_keys[] = {"read-only",
                                        "deny",
                                        "allow",
                                        "max-rows",
                                        "max-bytes",
                                        "query-timeout",
                                        "idle-in-transaction-timeout",
                                        "on-limit",
                                        "extended-protocol",
                                        "copy",
                                        "max-connections",
                                        "upstream"};

int config_user_section(const char *section, const char **name)
{
    if (strncmp(section, "user:", 5) != 0)
        return -1;
    size_t n = strlen(section + 5);
    if (n == 0 || n >= CONFIG_USER_MAX)
        return -2;
    *name = section + 5;
    return 0;
}

bool config_user_key_allowed(const char *key)
{
    for (size_t i = 0; i < sizeof(user_keys) / sizeof(user_keys[0]); i++)
        if (strcmp(key, user_keys[i]) == 0)
            return true;
    return false;
}

int config_user_record(struct config_pending *p, const char *user, const char *key,
                       const char *value, int line)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        struct config_user_entry *e = realloc(p->e, cap * sizeof(*e));
        if (!e)
            return -1;
        p->e = e;
        p->cap = cap;
    }
    struct config_user_entry *e = &p->e[p->n];
    e->user = strdup(user);
    e->key = strdup(key);
    e->value = strdup(value ? value : "");
    e->line = line;
    if (!e->user || !e->key || !e->value) {
        free(e->user), free(e->key), free(e->value);
        return -1;
    }
    p->n++;
    return 0;
}

void config_pending_free(struct config_pending *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->e[i].user), free(p->e[i].key), free(p->e[i].value);
    free(p->e);
    *p = (struct config_pending){0};
}

void config_users_free(struct config *c)
{
    for (size_t i = 0; i < c->nusers; i++) {
        if (c->users[i].cfg) {
            config_free(c->users[i].cfg);
            free(c->users[i].cfg);
        }
    }
    free(c->users);
    c->users = NULL;
    c->nusers = 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct config_user *)a)->name, ((const struct config_user *)b)->name);
}

const struct config_user *config_find_user(const struct config *c, const char *name)
{
    if (!c->nusers || !name)
        return NULL;
    struct config_user key;
    snprintf(key.name, sizeof(key.name), "%s", name);
    return bsearch(&key, c->users, c->nusers, sizeof(key), by_name);
}

/* The profile for user, made on its first key. */
static struct config_user *profile(struct config *c, const char *user, int line)
{
    for (size_t i = 0; i < c->nusers; i++)
        if (strcmp(c->users[i].name, user) == 0)
            return &c->users[i];
    if (c->nusers == CONFIG_MAX_USERS)
        return NULL;
    struct config_user *u = realloc(c->users, (c->nusers + 1) * sizeof(*u));
    if (!u)
        return NULL;
    c->users = u;
    u = &c->users[c->nusers];
    memset(u, 0, sizeof(*u));
    snprintf(u->name, sizeof(u->name), "%s", user);
    u->line = line;
    u->cfg = malloc(sizeof(*u->cfg));
    if (!u->cfg || config_copy(u->cfg, c) != 0) {
        free(u->cfg);
        return NULL;
    }
    c->nusers++;
    return u;
}

/* True when this is the entry's key's first appearance in its section (a list is replaced). */
static bool first_of_key(const struct config_pending *p, size_t i)
{
    for (size_t k = 0; k < i; k++)
        if (!strcmp(p->e[k].user, p->e[i].user) && !strcmp(p->e[k].key, p->e[i].key))
            return false;
    return true;
}

static int apply_entry(struct config_user *u, const struct config_pending *p, size_t i, char *why,
                       size_t whylen)
{
    const struct config_user_entry *e = &p->e[i];
    if (strcmp(e->key, "max-connections") == 0) {
        char *end = NULL;
        long v = strtol(e->value, &end, 10);
        if (!*e->value || *end || v < 1 || v > 100000) {
            snprintf(why, whylen,
                     "invalid value '%s' for key 'max-connections': expected a whole number "
                     "from 1 to 100000",
                     e->value);
            return -1;
        }
        u->max_connections = (int)v;
        return 0;
    }
    return config_apply_key(u->cfg, e->key, e->value, first_of_key(p, i), why, whylen);
}

int config_user_build(struct config *c, const struct config_pending *p, const char *path, char *err,
                      size_t errlen)
{
    char why[320];
    for (size_t i = 0; i < p->n; i++) {
        const struct config_user_entry *e = &p->e[i];
        struct config_user *u = profile(c, e->user, e->line);
        if (!u) {
            snprintf(err, errlen, "config file '%s' line %d: section [user:%s]: out of memory",
                     path, e->line, e->user);
            return -1;
        }
        if (apply_entry(u, p, i, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "config file '%s' line %d: section [user:%s]: %s", path, e->line,
                     e->user, why);
            return -1;
        }
    }
    for (size_t i = 0; i < c->nusers; i++) {
        if (config_check_policy(c->users[i].cfg, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "config file '%s' line %d: section [user:%s]: %s", path,
                     c->users[i].line, c->users[i].name, why);
            return -1;
        }
    }
    if (c->nusers)
        qsort(c->users, c->nusers, sizeof(c->users[0]), by_name);
    return 0;
}
