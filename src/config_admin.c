/* The console's options: who may open it (--admin-users), and whether a claimed name on
 * loopback is enough under --auth-type trust (--admin-trust-loopback). */
#include "config.h"

#include <stdio.h>
#include <string.h>

int config_admin_validate(const struct config *c, char *err, size_t errlen)
{
    for (size_t i = 0; i < c->nadmin_users; i++) {
        const char *u = c->admin_users[i];
        if (strlen(u) >= CONFIG_USER_MAX) {
            snprintf(err, errlen,
                     "invalid value '%.80s' for --admin-users: a user name is 1 to %d bytes", u,
                     CONFIG_USER_MAX - 1);
            return -1;
        }
        for (size_t k = 0; k < i; k++)
            if (strcmp(c->admin_users[k], u) == 0) {
                snprintf(err, errlen, "--admin-users names '%s' twice", u);
                return -1;
            }
    }
    if (c->admin_trust_loopback && c->nadmin_users == 0) {
        snprintf(err, errlen,
                 "--admin-trust-loopback needs --admin-users: name who may open "
                 "the console");
        return -1;
    }
    return 0;
}

bool config_is_admin(const struct config *c, const char *user)
{
    for (size_t i = 0; i < c->nadmin_users; i++)
        if (strcmp(c->admin_users[i], user) == 0)
            return true;
    return false;
}
