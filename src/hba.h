/* --auth-hba-file: a subset of pg_hba.conf. Records `local DATABASE USER METHOD` and
 * `host|hostssl|hostnossl DATABASE USER ADDRESS METHOD [clientcert=verify-full]`; databases
 * and users are `all`, `sameuser` (databases) or comma-separated names, quoted names lose
 * their keyword meaning; addresses are CIDR, `ADDR MASK` or `all`; methods are trust, reject,
 * scram-sha-256, cert and peer. The first matching record decides. Anything else is an error
 * naming file and line, and the whole file is refused (PgBouncer skips bad lines, so a
 * mistyped `reject` would fail open). */
#ifndef PGWP_HBA_H
#define PGWP_HBA_H

#include "proxy_proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define HBA_MAX_FILE (1 << 20)

enum hba_conn { HBA_LOCAL, HBA_HOST, HBA_HOSTSSL, HBA_HOSTNOSSL };
enum hba_method { HBA_TRUST, HBA_REJECT, HBA_SCRAM, HBA_CERT, HBA_PEER };

struct hba_names {
    bool all;
    bool sameuser; /* databases only: the database named like the user */
    char **names;
    size_t n;
};

struct hba_rule {
    int line;
    enum hba_conn conn;
    struct hba_names databases, users;
    bool any_addr;
    struct proxy_proto_cidr addr;
    enum hba_method method;
    bool clientcert; /* clientcert=verify-full: a certificate whose CN is the user, too */
    char *text;      /* the record as written, for the log (never sent to clients) */
};

struct hba {
    struct hba_rule *rules;
    size_t n;
};

struct hba_query {
    bool local; /* Unix-domain socket */
    bool ssl;
    const struct sockaddr_storage *addr; /* TCP clients */
    const char *user;
    const char *database;
};

/* NULL with err ("FILE line N: ...") when a record is invalid. */
struct hba *hba_parse(const char *text, size_t len, const char *path, char *err, size_t errlen);
struct hba *hba_load(const char *path, char *err, size_t errlen);
void hba_free(struct hba *h);
/* The first record that matches, or NULL. */
const struct hba_rule *hba_match(const struct hba *h, const struct hba_query *q);

const char *hba_method_name(enum hba_method m);

#endif
