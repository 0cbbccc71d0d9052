/* --auth-file: PgBouncer's userlist.txt format, one `"user" "secret"` per line, `;` comments,
 * `""` for a quote inside quotes. A secret is a SCRAM-SHA-256 verifier as PostgreSQL stores it
 * (pg_authid.rolpassword) or a plain password, derived into a verifier once, at load. Unlike
 * PgBouncer, a bad line rejects the whole file (a reload keeps the old one), and MD5 or empty
 * entries are refused. */
#ifndef PGWP_AUTHFILE_H
#define PGWP_AUTHFILE_H

#include "scram.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUTHFILE_NAME_MAX 64         /* as the session's user name: 63 bytes and a NUL */
#define AUTHFILE_MAX_SIZE (64 << 20) /* a file larger than this is refused */

struct authfile_user {
    char name[AUTHFILE_NAME_MAX];
    struct scram_secret secret;
    bool plain; /* derived from a plain password at load */
};

struct authfile {
    struct authfile_user *users; /* sorted by name */
    size_t n;
    size_t nplain;
    int iterations; /* the most common iteration count: what mock exchanges announce */
    bool group_readable;
};

/* Parses the file's text. key: the server secret plain entries' salts are derived from (so a
 * salt stays the same across reloads and restarts). NULL with err ("FILE line N: ...") on the
 * first bad line. */
struct authfile *authfile_parse(const char *text, size_t len, const char *path,
                                const uint8_t key[SCRAM_KEY_LEN], char *err, size_t errlen);
/* Reads and parses path. A file others can read is refused: its verifiers let anyone who also
 * saw one exchange log in, and pose as this server to clients. */
struct authfile *authfile_load(const char *path, const uint8_t key[SCRAM_KEY_LEN], char *err,
                               size_t errlen);
void authfile_free(struct authfile *a);
const struct authfile_user *authfile_find(const struct authfile *a, const char *user);

/* A verifier for a password, as libpq makes it (SASLprep, random salt, 4096 iterations), for
 * --hash-password. 0 or -1. */
int authfile_hash_password(const char *password, char *out, size_t outlen);

/* --hash-password: reads one password line from in (without echo when it is a terminal),
 * prints its verifier to out. The exit status. */
int authfile_hash_password_cli(void *in, void *out, void *err);

/* The server secret in path: read, or made (32 random bytes, mode 0600) when the file does not
 * exist. 0, or -1 with err. */
int authfile_server_key(const char *path, uint8_t key[SCRAM_KEY_LEN], char *err, size_t errlen);

#endif
