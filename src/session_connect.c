/* From a complete startup to relaying: admission against --max-connections, the libpq
 * connect upstream (non-blocking, driven by socket readiness), the cancel key, and the greeting
 * the client gets (the upstream's reported settings, our BackendKeyData). */
#include "auth.h"
#include "cancel.h"
#include "console.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "metrics_user.h"
#include "session_int.h"
#include "startup_gate.h"
#include "user_limits.h"
#include "wire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

/* Cut like PostgreSQL cuts a name: never inside a UTF-8 sequence, so the audit trail does not
 * report a valid name as invalid bytes. */
static void copy_param(char *dst, size_t len, const char *v)
{
    size_t n = v ? strlen(v) : 0, take = n < len ? n : len - 1;
    for (int back = 0; back < 3 && take > 0 && take < n && ((unsigned char)v[take] & 0xC0) == 0x80;
         back++)
        take--; /* at most a sequence's length: invalid bytes are kept, not cut away */
    snprintf(dst, len, "%.*s", (int)take, v ? v : "");
}

/* A profile's max-connections: counted per user name across the process, before the upstream
 * connection, with PostgreSQL's text for a role's connection limit. */
static enum session_end admit_user(struct session *s)
{
    int max = s->prof->max_connections;
    if (!max)
        return SE_NONE;
    s->user_count = user_limits_counter(s->env->user_limits, s->user);
    int n = s->user_count ? atomic_fetch_add(s->user_count, 1) + 1 : max + 1;
    if (n <= max)
        return SE_NONE;
    char msg[128];
    snprintf(msg, sizeof(msg), "too many connections for role \"%s\"", s->user);
    metrics_connection(METRICS_CONN_REJECTED_LIMIT);
    metrics_user_connection(s->metrics_user, false);
    LOG_WARN(s->id, "connection_rejected", "client=%s user=%s user_limit=%d", s->addr, s->user,
             max);
    session_fatal(s, "53300", msg, NULL);
    return SE_REJECTED;
}

static enum session_end admit(struct session *s)
{
    startup_gate_leave(s->env->admission, &s->acc); /* out of startup, into the ceiling */
    int n = atomic_fetch_add(&s->env->counts->admitted, 1) + 1;
    int max = s->rt->cfg.max_connections; /* the process's ceiling, whatever the profile */
    s->admitted = true;
    if (n > max) {
        metrics_connection(METRICS_CONN_REJECTED_LIMIT);
        metrics_user_connection(s->metrics_user, false);
        LOG_WARN(s->id, "connection_rejected", "client=%s limit=%d", s->addr, max);
        session_fatal(s, "53300", "sorry, too many clients already", NULL);
        return SE_REJECTED;
    }
    return admit_user(s);
}

static enum session_end connect_failed(struct session *s, const char *code, const char *err)
{
    metrics_connection(METRICS_CONN_UPSTREAM_FAILED);
    LOG_WARN(s->id, "upstream_connect_failed", "client=%s code=%s %s", s->addr, code, err);
    session_fatal(s, code, err, NULL);
    return SE_UPSTREAM_CONNECT;
}

/* The short form of the method in application_name; none for a claimed (trust) name. */
static const char *audit_tag(const char *method)
{
    if (strcmp(method, "scram-sha-256") == 0)
        return "scram";
    return strcmp(method, "trust") == 0 ? NULL : method;
}

static struct upstream_request request(struct session *s)
{
    return (struct upstream_request){.cfg = s->cfg,
                                     .startup = &s->su->sp,
                                     .client_addr = s->addr,
                                     .user = s->user,
                                     .auth_tag = audit_tag(s->auth_method)};
}

enum session_end session_startup_done(struct session *s)
{
    const struct wire_startup *sp = &s->su->sp;
    copy_param(s->user, sizeof(s->user), wire_startup_get(sp, "user"));
    copy_param(s->database, sizeof(s->database), wire_startup_get(sp, "database"));
    copy_param(s->app, sizeof(s->app), wire_startup_get(sp, "application_name"));
    /* the profile decides nothing about authentication: it applies once the name is proven */
    s->prof = runtime_profile(s->rt, s->user);
    s->cfg = s->prof->cfg;
    s->metrics_user =
        metrics_user_slot(s->user, s->prof->name || auth_conf_knows(s->rt->auth, s->user));
    struct upstream_request req = request(s);
    char code[6], err[512];
    /* values that cannot be carried upstream whole are refused before any connection */
    if (upstream_check_startup(&req, code, err, sizeof(err)) != 0) {
        LOG_INFO(s->id, "startup_rejected", "client=%s code=%s %s", s->addr, code, err);
        metrics_connection(METRICS_CONN_PROTOCOL_ERROR);
        session_fatal(s, code, err, NULL);
        return SE_PROTOCOL;
    }
    return session_auth_begin(s);
}

enum session_end session_authenticated(struct session *s)
{
    if (strcmp(s->database, CONSOLE_DATABASE) == 0)
        return console_begin(s); /* the console: never an upstream connection */
    enum session_end e = admit(s);
    if (e != SE_NONE)
        return e;
    struct upstream_request req = request(s);
    char code[6], err[512];
    s->upstream_dsn = strdup(s->cfg->upstream_dsn);
    if (!s->upstream_dsn)
        return SE_INTERNAL;
    s->up_connect_start_us = netio_now_us();
    if (upstream_start(&s->upc, &req, code, err, sizeof(err)) != 0)
        return connect_failed(s, code, err);
    s->up_open = true;
    s->phase = PH_CONNECT;
    s->deadline_ms = s->upc.deadline_ms;
    return SE_NONE;
}

static const char *const reported_params[] = {"application_name",
                                              "client_encoding",
                                              "DateStyle",
                                              "default_transaction_read_only",
                                              "in_hot_standby",
                                              "integer_datetimes",
                                              "IntervalStyle",
                                              "is_superuser",
                                              "server_encoding",
                                              "server_version",
                                              "session_authorization",
                                              "standard_conforming_strings",
                                              "TimeZone"};

/* AuthenticationOk, the upstream's ParameterStatus values, BackendKeyData, ReadyForQuery. */
static int queue_greeting(struct session *s)
{
    uint8_t buf[4096];
    struct wire_buf b;
    wire_buf_init(&b, buf, sizeof(buf));
    wire_build_auth_ok(&b);
    for (size_t i = 0; i < sizeof(reported_params) / sizeof(reported_params[0]); i++) {
        const char *name = reported_params[i];
        /* the client sees its own application_name; the upstream's carries audit details */
        const char *v =
            strcmp(name, "application_name") == 0 ? s->app : upstream_param(&s->upc, name);
        if (v)
            wire_build_param_status(&b, name, v);
    }
    wire_build_backend_key(&b, s->upc.pid, s->secret);
    wire_build_rfq(&b, 'I');
    if (b.overflow)
        return -ENOBUFS;
    return conn_send(&s->cli, b.data, b.len);
}

/* A read-only proxy on a superuser upstream rests on parsing alone: PostgreSQL lets a
 * superuser undo every read-only setting. Said once per configuration generation. */
static void warn_superuser(struct session *s)
{
    const char *su = upstream_param(&s->upc, "is_superuser");
    if (!s->cfg->read_only || !su || strcmp(su, "on") != 0)
        return;
    if (atomic_exchange(&s->rt->warned_superuser, true))
        return;
    LOG_WARN(s->id, "read_only_superuser",
             "--read-only runs on a superuser upstream role: PostgreSQL lets a superuser leave "
             "read-only mode; give --upstream a role without write privileges");
}

static enum session_end connected(struct session *s)
{
    const char *why =
        guard_unsafe_setting("client_encoding", upstream_param(&s->upc, "client_encoding"));
    if (why) {
        session_fatal(s, "0A000", why, NULL);
        metrics_connection(METRICS_CONN_PROTOCOL_ERROR);
        return SE_REJECTED;
    }
    metrics_upstream_connect((uint64_t)(netio_now_us() - s->up_connect_start_us), 1);
    if (cancel_session_secret(s->env->cancels, &s->secret) == 0 &&
        cancel_register(s->env->cancels, s->upc.pid, s->secret, s->upc.cancel) == 0) {
        s->cancel_registered = true;
        s->upc.cancel = NULL; /* owned by the cancel table now */
    }
    conn_init(&s->up, CONN_UPSTREAM, s->upc.io.fd, SESSION_UPSTREAM_BUF, NULL);
    s->up.io = s->upc.io;
    /* counted before the greeting: once a client holds its ReadyForQuery, a scrape of
     * /metrics must see its session (conn_send may write the greeting at once) */
    metrics_connection(METRICS_CONN_ACCEPTED);
    metrics_session_open();
    metrics_user_connection(s->metrics_user, true);
    metrics_user_session(s->metrics_user, 1);
    s->counted_open = true;
    if (session_relay_begin(s) || queue_greeting(s))
        return SE_INTERNAL;
    startup_release(s->su);
    free(s->su);
    s->su = NULL;
    /* steady state: one edge-triggered registration, EPOLLOUT added only while output waits */
    int rc = s->up_watched_fd == s->up.io.fd
                 ? loop_watch_mod(s->loop, &s->up_watch, SESSION_WATCH_EVENTS)
                 : loop_watch_add(s->loop, &s->up_watch, s->up.io.fd, SESSION_WATCH_EVENTS);
    if (rc)
        return SE_INTERNAL;
    s->up_watched_fd = s->up.io.fd;
    s->up_connected = true;
    s->phase = PH_RELAY;
    s->deadline_ms = 0;
    warn_superuser(s);
    LOG_INFO(s->id, "session_start",
             "client=%s user=%s auth=%s database=%s application=%s upstream_pid=%u", s->addr,
             s->user, s->auth_method, s->database, s->app, s->upc.pid);
    return SE_NONE;
}

enum session_end session_connect_step(struct session *s)
{
    char code[6], err[512];
    int rc = upstream_step(&s->upc, code, err, sizeof(err));
    if (rc == 1)
        return connected(s);
    if (rc < 0) {
        metrics_upstream_connect((uint64_t)(netio_now_us() - s->up_connect_start_us), 0);
        return connect_failed(s, code, err);
    }
    /* libpq may switch sockets between attempts (several hosts, SSL fallback): level-triggered
     * for what it waits for */
    int fd = upstream_socket(&s->upc);
    uint32_t ev = s->upc.reading ? EPOLLIN : EPOLLOUT;
    if (fd != s->up_watched_fd) {
        if (s->up_watched_fd >= 0)
            loop_watch_del(s->loop, &s->up_watch);
        s->up_watched_fd = -1;
        if (loop_watch_add(s->loop, &s->up_watch, fd, ev))
            return SE_INTERNAL;
        s->up_watched_fd = fd;
    } else if (loop_watch_mod(s->loop, &s->up_watch, ev)) {
        return SE_INTERNAL;
    }
    return SE_NONE;
}
