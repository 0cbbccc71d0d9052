#include "authfile.h"

#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

struct parser {
    const char *p, *end, *path;
    int line;
    char *err;
    size_t errlen;
};

static int fail(struct parser *ps, const char *what)
{
    snprintf(ps->err, ps->errlen, "auth file '%s' line %d: %s", ps->path, ps->line, what);
    return -1;
}

/* A quoted field; "" inside is one quote. 0, or -1 (err set). */
static int quoted(struct parser *ps, char *out, size_t outlen, const char *what)
{
    if (ps->p == ps->end || *ps->p != '"') {
        char msg[96];
        snprintf(msg, sizeof(msg), "expected %s in double quotes (\"user\" \"secret\")", what);
        return fail(ps, msg);
    }
    size_t n = 0;
    for (ps->p++;; ps->p++) {
        if (ps->p == ps->end || *ps->p == '\n')
            return fail(ps, "unterminated quoted field");
        if (*ps->p == '"') {
            if (ps->p + 1 < ps->end && ps->p[1] == '"') {
                ps->p++;
            } else {
                ps->p++;
                break;
            }
        }
        if (*ps->p == 0)
            return fail(ps, "NUL byte in a quoted field");
        if (n + 1 >= outlen) {
            char msg[96];
            snprintf(msg, sizeof(msg), "%s longer than %zu bytes", what, outlen - 1);
            return fail(ps, msg);
        }
        out[n++] = *ps->p;
    }
    out[n] = 0;
    return 0;
}

static bool ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            return false;
    return true;
}

/* A plain password into a verifier, salted from the server key and the user: the same salt
 * on every load, as a stored verifier's. Non-ASCII passwords go through SASLprep in libpq;
 * when that changes the bytes, libpq's verifier (random salt) is used as it is. */
static int derive_plain(const char *user, const char *pw, const uint8_t key[SCRAM_KEY_LEN],
                        struct scram_secret *out)
{
    uint8_t salt[SCRAM_KEY_LEN];
    scram_derive(key, "plain-salt", user, salt);
    if (scram_make_secret(pw, strlen(pw), salt, SCRAM_SALT_LEN, SCRAM_DEFAULT_ITERATIONS, out))
        return -1;
    if (ascii(pw))
        return 0;
    char v[SCRAM_SECRET_MAX];
    struct scram_secret prepared, raw;
    if (authfile_hash_password(pw, v, sizeof(v)) || scram_parse_secret(v, &prepared) ||
        scram_make_secret(pw, strlen(pw), prepared.salt, prepared.salt_len, prepared.iterations,
                          &raw))
        return -1;
    if (CRYPTO_memcmp(raw.stored_key, prepared.stored_key, SCRAM_KEY_LEN) != 0)
        *out = prepared; /* SASLprep changed the password: libpq's bytes are what clients hash */
    return 0;
}

static int add_user(struct parser *ps, struct authfile *a, size_t *cap, const char *user,
                    const char *secret, const uint8_t key[SCRAM_KEY_LEN])
{
    if (!*user)
        return fail(ps, "empty user name");
    if (!*secret)
        return fail(ps, "empty password: give the user a SCRAM verifier or a password");
    if (strncmp(secret, "md5", 3) == 0 && strlen(secret) == 35)
        return fail(ps, "MD5 secrets are not supported: store a SCRAM-SHA-256 verifier "
                        "(pgwire-proxy --hash-password makes one)");
    if (a->n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        struct authfile_user *u = realloc(a->users, ncap * sizeof(*u));
        if (!u)
            return fail(ps, "out of memory");
        a->users = u;
        *cap = ncap;
    }
    struct authfile_user *u = &a->users[a->n];
    memset(u, 0, sizeof(*u));
    snprintf(u->name, sizeof(u->name), "%s", user);
    if (strncmp(secret, "SCRAM-SHA-256$", 14) == 0) {
        if (scram_parse_secret(secret, &u->secret))
            return fail(ps, "invalid SCRAM-SHA-256 verifier (expected "
                            "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)");
    } else {
        if (derive_plain(user, secret, key, &u->secret))
            return fail(ps, "cannot derive a verifier from the password");
        u->plain = true;
        a->nplain++;
    }
    a->n++;
    return 0;
}

static int line(struct parser *ps, struct authfile *a, size_t *cap, const uint8_t key[32])
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\r'))
        ps->p++;
    if (ps->p < ps->end && *ps->p != '\n' && *ps->p != ';') {
        char user[AUTHFILE_NAME_MAX], secret[1024];
        if (quoted(ps, user, sizeof(user), "user name"))
            return -1;
        while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t'))
            ps->p++;
        int rc = quoted(ps, secret, sizeof(secret), "password");
        rc = rc ? rc : add_user(ps, a, cap, user, secret, key);
        OPENSSL_cleanse(secret, sizeof(secret));
        if (rc)
            return -1;
    }
    const char *nl = memchr(ps->p, '\n', (size_t)(ps->end - ps->p));
    ps->p = nl ? nl + 1 : ps->end; /* the rest of the line is ignored, as by PgBouncer */
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct authfile_user *)a)->name, ((const struct authfile_user *)b)->name);
}

static void finish(struct authfile *a)
{
    if (a->n)
        qsort(a->users, a->n, sizeof(a->users[0]), by_name);
    int best = SCRAM_DEFAULT_ITERATIONS;
    size_t best_n = 0;
    for (size_t i = 0; i < a->n; i++) {
        size_t n = 0;
        for (size_t k = 0; k < a->n; k++)
            n += a->users[k].secret.iterations == a->users[i].secret.iterations;
        if (n > best_n)
            best = a->users[i].secret.iterations, best_n = n;
    }
    a->iterations = best;
}

struct authfile *authfile_parse(const char *text, size_t len, const char *path,
                                const uint8_t key[SCRAM_KEY_LEN], char *err, size_t errlen)
{
    struct parser ps = {.p = text, .end = text + len, .path = path, .err = err, .errlen = errlen};
    struct authfile *a = calloc(1, sizeof(*a));
    size_t cap = 0;
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    while (ps.p < ps.end) {
        ps.line++;
        if (line(&ps, a, &cap, key)) {
            authfile_free(a);
            return NULL;
        }
    }
    finish(a);
    for (size_t i = 1; i < a->n; i++) {
        if (strcmp(a->users[i].name, a->users[i - 1].name) == 0) {
            snprintf(err, errlen, "auth file '%s': user \"%s\" is listed twice", path,
                     a->users[i].name);
            authfile_free(a);
            return NULL;
        }
    }
    return a;
}

void authfile_free(struct authfile *a)
{
    if (!a)
        return;
    if (a->users)
        OPENSSL_cleanse(a->users, a->n * sizeof(a->users[0]));
    free(a->users);
    free(a);
}

const struct authfile_user *authfile_find(const struct authfile *a, const char *user)
{
    if (!a || !a->n)
        return NULL;
    struct authfile_user key;
    snprintf(key.name, sizeof(key.name), "%s", user);
    return bsearch(&key, a->users, a->n, sizeof(a->users[0]), by_name);
}

/* Refuses a file others may read, or that is not a regular file. */
static int check_private(const char *what, const char *path, int fd, bool *group, char *err,
                         size_t errlen)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s '%s' is not a regular file", what, path);
        return -1;
    }
    if (st.st_mode & S_IRWXO) {
        snprintf(err, errlen,
                 "%s '%s' must not be world-accessible (mode %04o); run chmod 600 (or 640) on it",
                 what, path, (unsigned)(st.st_mode & 07777));
        return -1;
    }
    if (group)
        *group = (st.st_mode & S_IRGRP) != 0;
    return 0;
}

struct authfile *authfile_load(const char *path, const uint8_t key[SCRAM_KEY_LEN], char *err,
                               size_t errlen)
{
    struct authfile *a = NULL;
    char *buf = NULL;
    bool group = false;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot read auth file '%s': %s", path, strerror(errno));
        goto out;
    }
    if (check_private("auth file", path, fd, &group, err, errlen))
        goto out;
    size_t cap = 65536, len = 0;
    buf = malloc(cap);
    for (ssize_t n = 1; buf && n > 0;) {
        if (len == cap) {
            char *nb = cap < AUTHFILE_MAX_SIZE ? realloc(buf, cap * 2) : NULL;
            if (!nb) {
                snprintf(err, errlen, "auth file '%s' is larger than %d bytes", path,
                         AUTHFILE_MAX_SIZE);
                goto out;
            }
            buf = nb;
            cap *= 2;
        }
        n = read(fd, buf + len, cap - len);
        if (n < 0) {
            snprintf(err, errlen, "cannot read auth file '%s': %s", path, strerror(errno));
            goto out;
        }
        len += (size_t)n;
    }
    if (buf)
        a = authfile_parse(buf, len, path, key, err, errlen);
    if (a)
        a->group_readable = group;
out:
    if (buf)
        OPENSSL_cleanse(buf, len);
    free(buf);
    if (fd >= 0)
        close(fd);
    return a;
}

int authfile_hash_password(const char *password, char *out, size_t outlen)
{
    /* a connection object that never connects: libpq needs one for its error text only */
    PGconn *conn = PQconnectStart("no-such-conninfo");
    char *v = conn ? PQencryptPasswordConn(conn, password, "", "scram-sha-256") : NULL;
    int rc = v && strlen(v) < outlen ? 0 : -1;
    if (rc == 0)
        snprintf(out, outlen, "%s", v);
    if (v) {
        OPENSSL_cleanse(v, strlen(v));
        PQfreemem(v);
    }
    PQfinish(conn);
    return rc;
}

int authfile_server_key(const char *path, uint8_t key[SCRAM_KEY_LEN], char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        uint8_t k[SCRAM_KEY_LEN];
        if (getrandom(k, sizeof(k), 0) != (ssize_t)sizeof(k)) {
            snprintf(err, errlen, "cannot make a server secret: %s", strerror(errno));
            return -1;
        }
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
            bool ok = write(fd, k, sizeof(k)) == (ssize_t)sizeof(k) && fsync(fd) == 0;
            close(fd);
            if (!ok) {
                unlink(path);
                snprintf(err, errlen, "cannot write the server secret '%s'", path);
                return -1;
            }
        }
        /* made here or by a racing start: read what is on disk */
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0) {
        snprintf(err, errlen,
                 "cannot read or create the server secret '%s': %s (set --auth-secret-file to a "
                 "writable place)",
                 path, strerror(errno));
        return -1;
    }
    int rc = check_private("server secret", path, fd, NULL, err, errlen);
    if (rc == 0 && read(fd, key, SCRAM_KEY_LEN) != SCRAM_KEY_LEN) {
        snprintf(err, errlen, "server secret '%s' is not %d bytes long", path, SCRAM_KEY_LEN);
        rc = -1;
    }
    close(fd);
    return rc;
}

int authfile_hash_password_cli(void *in_, void *out_, void *err_)
{
    FILE *in = in_, *out = out_, *err = err_;
    int fd = fileno(in);
    struct termios old, quiet;
    bool tty = isatty(fd) && tcgetattr(fd, &old) == 0;
    if (tty) {
        fprintf(err, "Password: ");
        fflush(err);
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(fd, TCSAFLUSH, &quiet);
    }
    char pw[1024], v[SCRAM_SECRET_MAX];
    bool got = fgets(pw, sizeof(pw), in) != NULL;
    if (tty) {
        tcsetattr(fd, TCSAFLUSH, &old);
        fprintf(err, "\n");
    }
    pw[got ? strcspn(pw, "\r\n") : 0] = 0;
    int rc = 1;
    if (!pw[0])
        fprintf(err, "pgwire-proxy: --hash-password: no password on standard input\n");
    else if (authfile_hash_password(pw, v, sizeof(v)) != 0)
        fprintf(err, "pgwire-proxy: --hash-password: cannot make a verifier\n");
    else
        rc = fprintf(out, "%s\n", v) < 0 ? 1 : 0;
    OPENSSL_cleanse(pw, sizeof(pw));
    return rc;
}
