#include "session.h"
#include "audit.h"
#include "cancel.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "server.h"
#include "session_int.h"
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SESSION_STACK_SIZE (256 * 1024)

static const char *const end_names[] = {
    [SE_NONE] = "none",
    [SE_CLIENT_EXIT] = "client_terminate",
    [SE_CLIENT_EOF] = "client_eof",
    [SE_CLIENT_ERROR] = "client_error",
    [SE_CLIENT_STALLED] = "client_stalled",
    [SE_PROTOCOL] = "protocol_error",
    [SE_STARTUP_TIMEOUT] = "startup_timeout",
    [SE_CANCEL_REQUEST] = "cancel_request",
    [SE_REJECTED] = "rejected",
    [SE_UPSTREAM_CONNECT] = "upstream_connect_failed",
    [SE_UPSTREAM_LOST] = "upstream_lost",
    [SE_SHUTDOWN] = "shutdown",
    [SE_INTERNAL] = "internal_error",
};

const char *session_end_name(enum session_end e)
{
    return (unsigned)e < sizeof(end_names) / sizeof(end_names[0]) ? end_names[e] : "unknown";
}

void session_send_fatal(struct session *s, const char *code, const char *message,
                        const char *detail)
{
    uint8_t buf[1024];
    struct wire_buf b;
    wire_buf_init(&b, buf, sizeof(buf));
    struct wire_error_fields f = {
        .severity = "FATAL", .code = code, .message = message, .detail = detail};
    wire_build_error(&b, 'E', &f);
    if (b.overflow) {
        f.detail = NULL;
        b.overflow = false;
        wire_build_error(&b, 'E', &f);
    }
    /* best effort: a client that does not read gets a short grace, then the close */
    netio_write_all(&s->cli, b.data, b.len, 1000);
}

/* Reads exactly len bytes before deadline_ms. 0, -ETIMEDOUT, -ECONNRESET (EOF) or -errno. */
static int read_exact(struct session *s, uint8_t *buf, size_t len, int64_t deadline_ms)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = netio_read(&s->cli, buf + got, len - got);
        if (n > 0) {
            got += (size_t)n;
            continue;
        }
        if (n == 0)
            return -ECONNRESET;
        if (n != -EAGAIN)
            return (int)n;
        int64_t left = deadline_ms - netio_now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        short extra = 0;
        int rev = netio_poll1(&s->cli, s->cli.want, s->srv->shutdown_efd, &extra, (int)left);
        if (rev < 0)
            return rev;
        if (extra & POLLIN)
            return -ECANCELED;
    }
    return 0;
}

static int write_byte(struct session *s, char c)
{
    return netio_write_all(&s->cli, &c, 1, 1000);
}

static enum session_end handle_cancel(struct session *s)
{
    enum cancel_result r =
        cancel_forward(s->srv->cancels, s->sp.cancel_pid, s->sp.cancel_secret);
    metrics_cancel(r == CANCEL_FORWARDED     ? METRICS_CANCEL_FORWARDED
                   : r == CANCEL_UNKNOWN_KEY ? METRICS_CANCEL_UNKNOWN_KEY
                                             : METRICS_CANCEL_FAILED);
    LOG_INFO(s->id, "cancel_request", "client=%s pid=%u result=%s", s->addr, s->sp.cancel_pid,
             r == CANCEL_FORWARDED ? "forwarded" : r == CANCEL_UNKNOWN_KEY ? "unknown_key" : "failed");
    return SE_CANCEL_REQUEST;
}

static enum session_end startup_fail(struct session *s, const char *code, const char *msg)
{
    LOG_INFO(s->id, "startup_rejected", "client=%s code=%s %s", s->addr, code, msg);
    session_send_fatal(s, code, msg, NULL);
    metrics_connection(METRICS_CONN_PROTOCOL_ERROR);
    return SE_PROTOCOL;
}

static enum session_end startup_tls(struct session *s, int64_t deadline, bool *tls_done)
{
    struct tls_ctx *tls = s->rt->tls;
    if (!tls || *tls_done)
        return write_byte(s, 'N') ? SE_CLIENT_ERROR : SE_NONE;
    if (write_byte(s, 'S'))
        return SE_CLIENT_ERROR;
    char err[256];
    SSL *ssl = tls_accept(tls, s->cli.fd, deadline, err, sizeof(err));
    if (!ssl) {
        metrics_tls_handshake(0);
        LOG_WARN(s->id, "tls_handshake_failed", "client=%s %s", s->addr, err);
        return SE_PROTOCOL;
    }
    metrics_tls_handshake(1);
    netio_init_tls(&s->cli, s->cli.fd, ssl);
    *tls_done = true;
    return SE_NONE;
}

static enum session_end check_version(struct session *s)
{
    uint32_t major = s->sp.version >> 16, minor = s->sp.version & 0xffff;
    if (major != 3) {
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "unsupported frontend protocol %u.%u: server supports 3.0 to 3.%u", major,
                 minor, WIRE_NEWEST_MINOR);
        return startup_fail(s, "08P01", msg);
    }
    const char *unknown[WIRE_MAX_STARTUP_PARAMS];
    size_t nunknown = 0;
    for (size_t i = 0; i < s->sp.nparams; i++)
        if (strncmp(s->sp.params[i].name, "_pq_.", 5) == 0)
            unknown[nunknown++] = s->sp.params[i].name;
    if (minor > WIRE_NEWEST_MINOR || nunknown > 0) {
        uint8_t buf[WIRE_MAX_STARTUP_LEN + 64];
        struct wire_buf b;
        wire_buf_init(&b, buf, sizeof(buf));
        wire_build_negotiate(&b, WIRE_NEWEST_MINOR, unknown, nunknown);
        if (b.overflow || netio_write_all(&s->cli, b.data, b.len, 1000))
            return SE_CLIENT_ERROR;
    }
    return SE_NONE;
}

static void copy_param(char *dst, size_t len, const char *v)
{
    snprintf(dst, len, "%s", v ? v : "");
}

/* SSLRequest / GSSENCRequest / CancelRequest / StartupMessage, within --startup-timeout. */
static enum session_end startup(struct session *s)
{
    int64_t deadline = netio_now_ms() + (int64_t)s->cfg->startup_timeout_ms;
    bool tls_done = false;
    for (int round = 0; round < 3; round++) {
        uint32_t len = 0;
        int rc = read_exact(s, s->startup, 4, deadline);
        if (rc == 0) {
            rc = wire_startup_len(s->startup, 4, &len);
            if (rc < 0)
                return startup_fail(s, "08P01", "invalid length of startup packet");
            rc = read_exact(s, s->startup + 4, len - 4, deadline);
        }
        if (rc == -ETIMEDOUT) {
            LOG_INFO(s->id, "startup_timeout", "client=%s", s->addr);
            metrics_connection(METRICS_CONN_PROTOCOL_ERROR);
            return SE_STARTUP_TIMEOUT;
        }
        if (rc)
            return rc == -ECANCELED ? SE_SHUTDOWN : SE_CLIENT_EOF;
        if (wire_parse_startup(s->startup, len, &s->sp) != WIRE_OK)
            return startup_fail(s, "08P01", "invalid startup packet layout");
        enum session_end e = SE_NONE;
        switch (s->sp.kind) {
        case WIRE_PKT_SSL:
            e = startup_tls(s, deadline, &tls_done);
            break;
        case WIRE_PKT_GSSENC:
            e = write_byte(s, 'N') ? SE_CLIENT_ERROR : SE_NONE;
            break;
        case WIRE_PKT_CANCEL:
            return handle_cancel(s);
        case WIRE_PKT_STARTUP:
            if (s->cfg->tls_mode == CONFIG_TLS_REQUIRE && !s->cli.ssl)
                return startup_fail(s, "28000", "TLS required: connect with sslmode=require");
            if ((e = check_version(s)) != SE_NONE)
                return e;
            if (!wire_startup_get(&s->sp, "user"))
                return startup_fail(s, "28000",
                                    "no PostgreSQL user name specified in startup packet");
            if (wire_startup_get(&s->sp, "replication"))
                if (strcmp(wire_startup_get(&s->sp, "replication"), "false") &&
                    strcmp(wire_startup_get(&s->sp, "replication"), "0"))
                    return startup_fail(s, "0A000",
                                        "replication connections are not supported by "
                                        "pgwire-proxy");
            copy_param(s->user, sizeof(s->user), wire_startup_get(&s->sp, "user"));
            copy_param(s->database, sizeof(s->database), wire_startup_get(&s->sp, "database"));
            copy_param(s->app, sizeof(s->app), wire_startup_get(&s->sp, "application_name"));
            return SE_NONE;
        }
        if (e != SE_NONE)
            return e;
    }
    return startup_fail(s, "08P01", "too many negotiation requests in startup");
}

static const char *const reported_params[] = {
    "application_name", "client_encoding", "DateStyle", "default_transaction_read_only",
    "in_hot_standby", "integer_datetimes", "IntervalStyle", "is_superuser", "server_encoding",
    "server_version", "session_authorization", "standard_conforming_strings", "TimeZone"};

/* AuthenticationOk, the upstream's ParameterStatus values, BackendKeyData, ReadyForQuery. */
static int send_greeting(struct session *s)
{
    uint8_t buf[4096];
    struct wire_buf b;
    wire_buf_init(&b, buf, sizeof(buf));
    wire_build_auth_ok(&b);
    for (size_t i = 0; i < sizeof(reported_params) / sizeof(reported_params[0]); i++) {
        const char *name = reported_params[i];
        /* the client sees its own application_name; the upstream's carries audit details */
        const char *v = strcmp(name, "application_name") == 0 ? s->app : upstream_param(&s->up, name);
        if (v)
            wire_build_param_status(&b, name, v);
    }
    wire_build_backend_key(&b, s->up.pid, s->secret);
    wire_build_rfq(&b, 'I');
    if (b.overflow)
        return -ENOBUFS;
    return netio_write_all(&s->cli, b.data, b.len, 5000);
}

static enum session_end admit(struct session *s)
{
    int n = atomic_fetch_add(&s->srv->admitted, 1) + 1;
    if (n > s->cfg->max_connections) {
        atomic_fetch_sub(&s->srv->admitted, 1);
        metrics_connection(METRICS_CONN_REJECTED_LIMIT);
        LOG_WARN(s->id, "connection_rejected", "client=%s limit=%d", s->addr,
                 s->cfg->max_connections);
        session_send_fatal(s, "53300", "sorry, too many clients already", NULL);
        return SE_REJECTED;
    }
    return SE_NONE;
}

static enum session_end connect_upstream(struct session *s)
{
    struct upstream_request req = {.cfg = s->cfg,
                                   .startup = &s->sp,
                                   .client_addr = s->addr,
                                   .wake_fd = s->srv->shutdown_efd};
    char code[6], err[512];
    int64_t t0 = netio_now_us();
    if (upstream_connect(&s->up, &req, code, err, sizeof(err)) != 0) {
        metrics_upstream_connect((uint64_t)(netio_now_us() - t0), 0);
        metrics_connection(METRICS_CONN_UPSTREAM_FAILED);
        LOG_WARN(s->id, "upstream_connect_failed", "client=%s code=%s %s", s->addr, code, err);
        session_send_fatal(s, code, err, NULL);
        return SE_UPSTREAM_CONNECT;
    }
    metrics_upstream_connect((uint64_t)(netio_now_us() - t0), 1);
    s->up_open = true;
    if (cancel_new_secret(&s->secret) == 0 &&
        cancel_register(s->srv->cancels, s->up.pid, s->secret, s->up.cancel) == 0)
        s->cancel_registered = true;
    if (send_greeting(s))
        return SE_CLIENT_ERROR;
    metrics_connection(METRICS_CONN_ACCEPTED);
    LOG_INFO(s->id, "session_start", "client=%s user=%s database=%s application=%s upstream_pid=%u",
             s->addr, s->user, s->database, s->app, s->up.pid);
    return SE_NONE;
}

static void session_free(struct session *s)
{
    if (s->cancel_registered)
        cancel_unregister(s->srv->cancels, s->up.pid);
    if (s->up_open) {
        if (s->st == ST_QUERY && s->up.cancel) {
            /* the client left mid-statement: nothing of it may keep running upstream */
            char err[256];
            upstream_cancel(s->up.cancel, err, sizeof(err));
        }
        upstream_close(&s->up);
    }
    if (s->cli.ssl)
        tls_free_ssl(s->cli.ssl);
    close(s->cli.fd);
    guard_cache_free(s->gcache);
    free(s->cbuf);
    free(s->ubuf);
    if (s->rt)
        server_runtime_release(s->rt);
    free(s);
}

static void *session_main(void *arg)
{
    struct session *s = arg;
    struct server *srv = s->srv;
    bool admitted = false;
    enum session_end e = startup(s);
    if (e == SE_NONE) {
        e = admit(s);
        admitted = e == SE_NONE;
    }
    if (e == SE_NONE)
        e = connect_upstream(s);
    if (e == SE_NONE) {
        metrics_session_open();
        e = relay_run(s);
        metrics_session_close();
    }
    s->end = e;
    if (e != SE_CANCEL_REQUEST && admitted)
        LOG_INFO(s->id, "session_end", "client=%s reason=%s", s->addr, session_end_name(e));
    else
        LOG_DEBUG(s->id, "connection_end", "client=%s reason=%s", s->addr, session_end_name(e));
    session_free(s);
    if (admitted)
        atomic_fetch_sub(&srv->admitted, 1);
    pthread_mutex_lock(&srv->mu);
    if (atomic_fetch_sub(&srv->threads, 1) == 1)
        pthread_cond_broadcast(&srv->all_gone);
    pthread_mutex_unlock(&srv->mu);
    return NULL;
}

static void format_peer(const struct sockaddr_storage *peer, char *out, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (peer->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)peer;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
    } else if (peer->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)peer;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
    }
    snprintf(out, len, "%s:%d", host, port);
}

int session_spawn(struct server *srv, int fd, const struct sockaddr_storage *peer)
{
    struct session *s = calloc(1, sizeof(*s));
    if (!s) {
        close(fd);
        return -ENOMEM;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    s->srv = srv;
    s->id = atomic_fetch_add(&srv->next_sid, 1) + 1;
    s->rt = server_runtime_acquire(srv);
    s->cfg = &s->rt->cfg;
    s->rt_gen = s->rt->gen;
    s->tx = 'I';
    s->st = ST_IDLE;
    netio_init_plain(&s->cli, fd);
    format_peer(peer, s->addr, sizeof(s->addr));

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, SESSION_STACK_SIZE);
    atomic_fetch_add(&srv->threads, 1);
    pthread_t th;
    int rc = pthread_create(&th, &attr, session_main, s);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        atomic_fetch_sub(&srv->threads, 1);
        session_free(s);
        return -rc;
    }
    return 0;
}
