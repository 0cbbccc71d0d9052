/* Upstream connection: libpq connect/auth/params, then hand-over of the raw socket (or libpq's
 * TLS session) for byte relaying, plus the cancel handle. libpq never parses a result row. */
#ifndef PGWP_UPSTREAM_H
#define PGWP_UPSTREAM_H

#include "netio.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct wire_startup;

/* Room for the upstream options string: the DSN's options, the proxy's -c settings and the
 * client's escaped values; a client value that does not fit is refused, never cut. */
#define UPSTREAM_OPTIONS_MAX 4096

struct upstream {
    void *conn;   /* PGconn */
    void *cancel; /* PGcancel, handed to the cancel table once connected */
    struct netio io;
    uint32_t pid;
    int64_t deadline_ms;                /* connect must finish by then */
    bool reading;                       /* connect waits for POLLIN (else POLLOUT) */
    const struct wire_startup *startup; /* the client's values, while connecting */
};

struct upstream_request {
    const struct config *cfg;
    const struct wire_startup *startup; /* client's startup params (allowlisted ones applied) */
    const char *client_addr;            /* "ip:port" for the audit application_name */
    const char *user;                   /* the session's user (NULL: the startup packet's) */
    const char *auth_tag;               /* how it was proven, for application_name; NULL: claimed */
};

/* Starts a non-blocking connect. 0, or -1 with sqlstate (6 bytes) and a client-safe message. */
int upstream_start(struct upstream *u, const struct upstream_request *req, char sqlstate[6],
                   char *err, size_t errlen);

/* Advances the connect after socket readiness. Returns 1 when connected (u->io is then the
 * relay socket), 0 while in progress (wait for u->reading ? POLLIN : POLLOUT on
 * upstream_socket()), -1 on failure with sqlstate and a message without the password. */
int upstream_step(struct upstream *u, char sqlstate[6], char *err, size_t errlen);
int upstream_socket(const struct upstream *u);
/* Fills the failure for a connect past its deadline. */
void upstream_timeout(struct upstream *u, char sqlstate[6], char *err, size_t errlen);

/* Value of a ParameterStatus reported by the upstream at connect, or NULL. */
const char *upstream_param(const struct upstream *u, const char *name);

/* Sends a cancel for whatever runs on the upstream now (blocking, thread-safe). 0 or -1. */
int upstream_cancel(void *cancel_handle, char *err, size_t errlen);

void upstream_free_cancel(void *cancel_handle);

/* Closes the connection (Terminate + close) and frees everything. Safe on a zeroed struct. */
void upstream_close(struct upstream *u);

/* Builds the audit application_name "<app> [<user>@<addr>]" within 63 bytes. The suffix is
 * always whole: the address is never shortened; the user is percent-encoded (%, @, [, ], space,
 * control and non-ASCII bytes) and shortened first, marked "...", then the app name. */
void upstream_audit_name(char *out, size_t outlen, const char *app, const char *user,
                         const char *addr);

/* Escapes a value for the options startup parameter ("-c name=value") so that PostgreSQL's
 * pg_split_opts() reads it back as exactly this one value: a backslash before every byte it
 * could split on or consume. Returns the length, or -1 (out = "") when it does not fit. */
long upstream_escape_option(char *out, size_t outlen, const char *value);

/* Checks that the client's values can be carried upstream. 0, or -1 with sqlstate 22023 and
 * a message naming the parameter that is too long (before any connection is made). */
int upstream_check_startup(const struct upstream_request *req, char sqlstate[6], char *err,
                           size_t errlen);

/* Turns libpq's connection error text into a SQLSTATE and a fixed message of its class; the
 * text itself is never copied (it may quote the DSN). An invalid client value (22023) is
 * reported with the value the client sent, taken from startup (may be NULL). */
void upstream_classify_failure(const char *libpq_msg, const struct wire_startup *startup,
                               char sqlstate[6], char *err, size_t errlen);

/* Parses the DSN as libpq will. 0, or -1 with err saying what is wrong in fixed words that
 * never quote the DSN. */
int upstream_dsn_check(const char *dsn, char *err, size_t errlen);

/* The DSN as libpq reads it, in keyword form, every password-type value as "********"; a
 * fixed text when it does not parse. Caller frees. */
char *upstream_dsn_redact(const char *dsn);

#endif
