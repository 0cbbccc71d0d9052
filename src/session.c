/* Session lifecycle: startup negotiation, admission, upstream connect, and the one cleanup path
 * that reads the end reason. Every step is non-blocking; the worker drives it on readiness. */
#include "session.h"
#include "cancel.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "proxy_proto.h"
#include "server.h"
#include "session_int.h"
#include "startup_gate.h"
#include "tls.h"
#include "worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define CLOSING_GRACE_MS 1000

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
    out_append(s, b.data, b.len);
}

void session_cancel_upstream(struct session *s)
{
    if (!s->cancel_registered)
        return;
    if (s->cancel_ticket) {
        if (!cancel_ticket_done(s->cancel_ticket))
            return; /* one in flight cancels whatever runs now */
        cancel_ticket_release(s->cancel_ticket);
    }
    s->cancel_ticket =
        cancel_forward_tracked(s->srv->cancels, s->up.pid, s->secret, worker_wake_fd(s->w));
}

bool session_cancel_pending(struct session *s)
{
    if (!s->cancel_ticket)
        return false;
    if (!cancel_ticket_done(s->cancel_ticket))
        return true;
    cancel_ticket_release(s->cancel_ticket);
    s->cancel_ticket = NULL;
    return false;
}

/* Moves to PH_CLOSING: what is queued for the client (e.g. a FATAL) gets a short grace. */
static void session_end_with(struct session *s, enum session_end e)
{
    if (s->phase == PH_CLOSING || s->phase == PH_DONE)
        return;
    s->end = e;
    s->phase = PH_CLOSING;
    s->deadline_ms = netio_now_ms() + CLOSING_GRACE_MS;
    if (s->phase == PH_CLOSING && s->st == ST_QUERY && s->up_open)
        session_cancel_upstream(s); /* nothing of it may keep running upstream */
}

static enum session_end startup_fail(struct session *s, const char *code, const char *msg)
{
    LOG_INFO(s->id, "startup_rejected", "client=%s code=%s %s", s->addr, code, msg);
    session_send_fatal(s, code, msg, NULL);
    metrics_connection(METRICS_CONN_PROTOCOL_ERROR);
    return SE_PROTOCOL;
}

static enum session_end check_version(struct session *s)
{
    uint32_t major = s->su->sp.version >> 16, minor = s->su->sp.version & 0xffff;
    if (major != 3) {
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "unsupported frontend protocol %u.%u: server supports 3.0 to 3.%u", major, minor,
                 WIRE_NEWEST_MINOR);
        return startup_fail(s, "08P01", msg);
    }
    const char *unknown[WIRE_MAX_STARTUP_PARAMS];
    size_t nunknown = 0;
    for (size_t i = 0; i < s->su->sp.nparams; i++)
        if (strncmp(s->su->sp.params[i].name, "_pq_.", 5) == 0)
            unknown[nunknown++] = s->su->sp.params[i].name;
    if (minor > WIRE_NEWEST_MINOR || nunknown > 0) {
        uint8_t buf[WIRE_MAX_STARTUP_LEN + 64];
        struct wire_buf b;
        wire_buf_init(&b, buf, sizeof(buf));
        wire_build_negotiate(&b, WIRE_PROTO_3_0 | WIRE_NEWEST_MINOR, unknown, nunknown);
        if (b.overflow || out_append(s, b.data, b.len))
            return SE_INTERNAL;
    }
    return SE_NONE;
}

static void copy_param(char *dst, size_t len, const char *v)
{
    snprintf(dst, len, "%s", v ? v : "");
}

static enum session_end admit(struct session *s)
{
    startup_gate_leave(s);
    int n = atomic_fetch_add(&s->srv->admitted, 1) + 1;
    s->admitted = true;
    if (n > s->cfg->max_connections) {
        metrics_connection(METRICS_CONN_REJECTED_LIMIT);
        LOG_WARN(s->id, "connection_rejected", "client=%s limit=%d", s->addr,
                 s->cfg->max_connections);
        session_send_fatal(s, "53300", "sorry, too many clients already", NULL);
        return SE_REJECTED;
    }
    return SE_NONE;
}

static enum session_end start_connect(struct session *s)
{
    struct upstream_request req = {.cfg = s->cfg, .startup = &s->su->sp, .client_addr = s->addr};
    char code[6], err[512];
    s->q_start_us = netio_now_us();
    if (upstream_start(&s->up, &req, code, err, sizeof(err)) != 0) {
        metrics_connection(METRICS_CONN_UPSTREAM_FAILED);
        LOG_WARN(s->id, "upstream_connect_failed", "client=%s code=%s %s", s->addr, code, err);
        session_send_fatal(s, code, err, NULL);
        return SE_UPSTREAM_CONNECT;
    }
    s->up_open = true;
    s->phase = PH_CONNECT;
    s->deadline_ms = s->up.deadline_ms;
    return SE_NONE;
}

/* Values that cannot be carried upstream whole are refused before any connection is made. */
static enum session_end check_forwarded_values(struct session *s)
{
    struct upstream_request req = {.cfg = s->cfg, .startup = &s->su->sp, .client_addr = s->addr};
    char code[6], err[256];
    if (upstream_check_startup(&req, code, err, sizeof(err)) == 0)
        return SE_NONE;
    return startup_fail(s, code, err);
}

static enum session_end startup_message(struct session *s)
{
    if (s->cfg->tls_mode == CONFIG_TLS_REQUIRE && !s->cli.ssl)
        return startup_fail(s, "28000", "TLS required: connect with sslmode=require");
    /* like PostgreSQL's hostssl + clientcert: no certificate, no session, plaintext included */
    if (s->cfg->tls_client_cert_required && !tls_peer_verified(s->cli.ssl))
        return startup_fail(s, "28000", "connection requires a valid client certificate");
    enum session_end e = check_version(s);
    if (e != SE_NONE)
        return e;
    if (!wire_startup_get(&s->su->sp, "user"))
        return startup_fail(s, "28000", "no PostgreSQL user name specified in startup packet");
    const char *repl = wire_startup_get(&s->su->sp, "replication");
    if (repl && strcmp(repl, "false") && strcmp(repl, "0") && strcmp(repl, "off"))
        return startup_fail(s, "0A000",
                            "replication connections are not supported by pgwire-proxy");
    copy_param(s->user, sizeof(s->user), wire_startup_get(&s->su->sp, "user"));
    copy_param(s->database, sizeof(s->database), wire_startup_get(&s->su->sp, "database"));
    copy_param(s->app, sizeof(s->app), wire_startup_get(&s->su->sp, "application_name"));
    if ((e = check_forwarded_values(s)) != SE_NONE)
        return e;
    if ((e = admit(s)) != SE_NONE)
        return e;
    return start_connect(s);
}

static enum session_end startup_packet(struct session *s, uint32_t len)
{
    if (wire_parse_startup(s->su->buf, len, &s->su->sp) != WIRE_OK)
        return startup_fail(s, "08P01", "invalid startup packet layout");
    s->su_have = 0;
    /* one SSLRequest and one GSSENCRequest at most, as PostgreSQL allows: a client cannot keep
     * a connection in startup by repeating them */
    if (s->su->sp.kind == WIRE_PKT_SSL || s->su->sp.kind == WIRE_PKT_GSSENC) {
        unsigned bit = s->su->sp.kind == WIRE_PKT_SSL ? 1u : 2u;
        if (s->su_negotiated & bit)
            return startup_fail(s, "08P01", "duplicate SSL or GSS encryption request");
        s->su_negotiated |= bit;
    }
    switch (s->su->sp.kind) {
    case WIRE_PKT_SSL:
        if (s->rt->tls && !s->cli.ssl) {
            if (out_append(s, "S", 1))
                return SE_INTERNAL;
            s->phase = PH_TLS;
            return SE_NONE;
        }
        return out_append(s, "N", 1) ? SE_INTERNAL : SE_NONE;
    case WIRE_PKT_GSSENC:
        return out_append(s, "N", 1) ? SE_INTERNAL : SE_NONE;
    case WIRE_PKT_CANCEL: {
        /* the cancel pool closes this socket once the cancel is forwarded */
        int fd = s->cli.fd;
        worker_unwatch(s->w, fd);
        s->cli.fd = -1;
        /* a CancelRequest inside TLS: the SSL object ends here, without a word on the socket
         * that now belongs to the cancel pool */
        tls_drop_ssl(s->cli.ssl);
        s->cli.ssl = NULL;
        if (cancel_forward_async(s->srv->cancels, s->su->sp.cancel_pid, s->su->sp.cancel_secret, fd,
                                 true))
            close(fd);
        return SE_CANCEL_REQUEST;
    }
    case WIRE_PKT_STARTUP:
        return startup_message(s);
    }
    return SE_PROTOCOL;
}

/* Reads the untyped startup packets: exactly their length, so bytes of a TLS handshake that
 * follows an SSLRequest stay in the socket for OpenSSL. */
static enum session_end startup_read(struct session *s)
{
    if (s->proxy_pending) {
        enum session_end e = startup_gate_read_proxy_header(s);
        if (e != SE_NONE || s->proxy_pending)
            return e;
    }
    if (s->su_have == 0 && s->rt->tls && !s->cli.ssl && s->cli_in) {
        /* direct TLS (PostgreSQL 17 sslnegotiation=direct): a handshake record, no SSLRequest */
        uint8_t first;
        if (recv(s->cli.fd, &first, 1, MSG_PEEK) == 1 && first == 0x16) {
            s->phase = PH_TLS;
            s->tls_direct = true;
            return SE_NONE;
        }
    }
    while (s->cli_in && s->phase == PH_STARTUP) {
        size_t need = 4;
        uint32_t len = 0;
        if (s->su_have >= 4) {
            int rc = wire_startup_len(s->su->buf, s->su_have, &len);
            if (rc < 0)
                return startup_fail(s, "08P01", "invalid length of startup packet");
            need = len;
        }
        if (s->su_have == need) {
            enum session_end e = startup_packet(s, len);
            if (e != SE_NONE)
                return e;
            if (out_flush(s))
                return SE_CLIENT_ERROR;
            continue;
        }
        ssize_t n = netio_read(&s->cli, s->su->buf + s->su_have, need - s->su_have);
        if (n == -EAGAIN) {
            s->cli_in = false;
            break;
        }
        if (n <= 0)
            return n == 0 ? SE_CLIENT_EOF : SE_CLIENT_ERROR;
        s->su_have += (size_t)n;
        if (s->su_have == 4 && wire_startup_len(s->su->buf, 4, &len) < 0) {
            if (s->su_negotiated == 0 && !s->cli.ssl && proxy_proto_signature(s->su->buf, 4))
                return startup_gate_unexpected_header(s);
            return startup_fail(s, "08P01", "invalid length of startup packet");
        }
    }
    return SE_NONE;
}

static enum session_end tls_step(struct session *s)
{
    if (out_pending(s)) /* the 'S' must reach the client before the handshake */
        return out_flush(s) ? SE_CLIENT_ERROR : SE_NONE;
    char err[256];
    int rc = tls_accept_step(s->rt->tls, s->cli.fd, (SSL **)&s->ssl_pending, err, sizeof(err));
    if (rc == 0) {
        s->cli_in = s->cli_out = false; /* wait for the next edge */
        return SE_NONE;
    }
    if (rc < 0) {
        metrics_tls_handshake(0);
        LOG_WARN(s->id, "tls_handshake_failed", "client=%s %s", s->addr, err);
        metrics_connection(METRICS_CONN_PROTOCOL_ERROR);
        return SE_PROTOCOL;
    }
    metrics_tls_handshake(1);
    netio_init_tls(&s->cli, s->cli.fd, s->ssl_pending);
    s->ssl_pending = NULL;
    if (s->tls_direct && !tls_alpn_negotiated(s->cli.ssl)) {
        /* like PostgreSQL 17: direct TLS needs ALPN "postgresql" (cross-protocol protection) */
        return startup_fail(s, "08P01",
                            "received direct SSL connection request without ALPN protocol "
                            "negotiation extension");
    }
    s->phase = PH_STARTUP;
    s->cli_in = s->cli_out = true;
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
            strcmp(name, "application_name") == 0 ? s->app : upstream_param(&s->up, name);
        if (v)
            wire_build_param_status(&b, name, v);
    }
    wire_build_backend_key(&b, s->up.pid, s->secret);
    wire_build_rfq(&b, 'I');
    if (b.overflow)
        return -ENOBUFS;
    return out_append(s, b.data, b.len);
}

static enum session_end connected(struct session *s)
{
    const char *names[] = {"client_encoding", "standard_conforming_strings"};
    for (size_t i = 0; i < 2; i++) {
        const char *why = guard_unsafe_setting(names[i], upstream_param(&s->up, names[i]));
        if (why) {
            session_send_fatal(s, "0A000", why, NULL);
            metrics_connection(METRICS_CONN_PROTOCOL_ERROR);
            return SE_REJECTED;
        }
    }
    metrics_upstream_connect((uint64_t)(netio_now_us() - s->q_start_us), 1);
    if (cancel_session_secret(s->srv->cancels, &s->secret) == 0 &&
        cancel_register(s->srv->cancels, s->up.pid, s->secret, s->up.cancel) == 0) {
        s->cancel_registered = true;
        s->up.cancel = NULL; /* owned by the cancel table now */
    }
    if (relay_begin(s) || queue_greeting(s))
        return SE_INTERNAL;
    free(s->su);
    s->su = NULL;
    /* steady state: one edge-triggered registration, never modified again */
    if (worker_watch(s->w, s->up.io.fd, s, 1, 0, s->up_watched_fd < 0))
        return SE_INTERNAL;
    s->up_watched_fd = s->up.io.fd;
    s->up_edge = true;
    s->up_in = s->up_out = true;
    s->phase = PH_RELAY;
    s->deadline_ms = 0;
    metrics_connection(METRICS_CONN_ACCEPTED);
    metrics_session_open();
    LOG_INFO(s->id, "session_start", "client=%s user=%s database=%s application=%s upstream_pid=%u",
             s->addr, s->user, s->database, s->app, s->up.pid);
    return SE_NONE;
}

static enum session_end connect_step(struct session *s)
{
    char code[6], err[512];
    int rc = upstream_step(&s->up, code, err, sizeof(err));
    if (rc == 1)
        return connected(s);
    if (rc < 0) {
        metrics_upstream_connect((uint64_t)(netio_now_us() - s->q_start_us), 0);
        metrics_connection(METRICS_CONN_UPSTREAM_FAILED);
        LOG_WARN(s->id, "upstream_connect_failed", "client=%s code=%s %s", s->addr, code, err);
        session_send_fatal(s, code, err, NULL);
        return SE_UPSTREAM_CONNECT;
    }
    /* libpq may switch sockets between attempts (several hosts, SSL fallback) */
    int fd = upstream_socket(&s->up);
    uint32_t ev = s->up.reading ? EPOLLIN : EPOLLOUT;
    if (fd != s->up_watched_fd) {
        if (s->up_watched_fd >= 0)
            worker_unwatch(s->w, s->up_watched_fd);
        s->up_watched_fd = -1;
        if (worker_watch(s->w, fd, s, 1, ev, 1))
            return SE_INTERNAL;
        s->up_watched_fd = fd;
    } else if (worker_watch(s->w, fd, s, 1, ev, 0)) {
        return SE_INTERNAL;
    }
    s->up_in = s->up_out = false;
    return SE_NONE;
}

static enum session_end step(struct session *s)
{
    switch (s->phase) {
    case PH_STARTUP:
        return startup_read(s);
    case PH_TLS:
        return tls_step(s);
    case PH_CONNECT:
        if (s->up_in || s->up_out || s->up_watched_fd < 0)
            return connect_step(s);
        return SE_NONE;
    case PH_RELAY:
        return relay_drive(s);
    case PH_CLOSING:
        if (out_flush(s) || !out_pending(s))
            s->phase = PH_DONE;
        return SE_NONE;
    case PH_DONE:
        return SE_NONE;
    }
    return SE_NONE;
}

void session_drive(struct session *s)
{
    for (int i = 0; i < 8 && s->phase != PH_DONE; i++) {
        enum session_phase before = s->phase;
        enum session_end e = step(s);
        if (e != SE_NONE) {
            session_end_with(s, e);
            if (e == SE_CANCEL_REQUEST)
                s->phase = PH_DONE;
        }
        if (s->phase == before)
            break;
    }
    if (s->phase == PH_CLOSING && (out_flush(s) || !out_pending(s)))
        s->phase = PH_DONE;
}

void session_timers(struct session *s, int64_t now)
{
    if (s->phase == PH_DONE)
        return;
    if (s->phase == PH_RELAY) {
        enum session_end e = relay_timers(s, now);
        if (e != SE_NONE)
            session_end_with(s, e);
    } else if (s->deadline_ms && now >= s->deadline_ms) {
        switch (s->phase) {
        case PH_STARTUP:
        case PH_TLS:
            LOG_INFO(s->id, "startup_timeout", "client=%s", s->addr);
            metrics_connection(METRICS_CONN_PROTOCOL_ERROR);
            s->end = SE_STARTUP_TIMEOUT;
            s->phase = PH_DONE;
            break;
        case PH_CONNECT: {
            char code[6], err[256];
            upstream_timeout(&s->up, code, err, sizeof(err));
            metrics_connection(METRICS_CONN_UPSTREAM_FAILED);
            LOG_WARN(s->id, "upstream_connect_failed", "client=%s code=%s %s", s->addr, code, err);
            session_send_fatal(s, code, err, NULL);
            session_end_with(s, SE_UPSTREAM_CONNECT);
            break;
        }
        default:
            s->phase = PH_DONE;
            break;
        }
    } else if (s->shutdown_seen && s->phase != PH_CLOSING) {
        /* not yet relaying: nothing to drain */
        if (s->phase == PH_CONNECT)
            session_send_fatal(s, "57P01", "terminating connection due to administrator command",
                               NULL);
        session_end_with(s, SE_SHUTDOWN);
    }
    session_drive(s);
}

void session_destroy(struct session *s)
{
    struct server *srv = s->srv;
    if (s->phase == PH_RELAY || s->end != SE_NONE) {
        if (s->admitted && s->up_open && s->end != SE_UPSTREAM_CONNECT)
            LOG_INFO(s->id, "session_end", "client=%s reason=%s", s->addr,
                     session_end_name(s->end));
    }
    if (s->up_open && s->up.pid && s->up_edge)
        metrics_session_close();
    cancel_ticket_release(s->cancel_ticket);
    if (s->cancel_registered)
        cancel_unregister(srv->cancels, s->up.pid);
    if (s->up_watched_fd >= 0)
        worker_unwatch(s->w, s->up_watched_fd);
    if (s->up_open)
        upstream_close(&s->up);
    if (s->cli.fd >= 0) {
        worker_unwatch(s->w, s->cli.fd);
        if (s->cli.ssl)
            tls_free_ssl(s->cli.ssl);
        close(s->cli.fd);
    } else {
        tls_drop_ssl(s->cli.ssl); /* the socket went elsewhere: free without a word on it */
    }
    startup_gate_leave(s);
    if (s->ssl_pending)
        tls_free_ssl(s->ssl_pending);
    guard_cache_free(s->gcache);
    free(s->su);
    free(s->cbuf);
    free(s->ubuf);
    free(s->obuf);
    if (s->rt)
        server_runtime_release(s->rt);
    if (s->admitted)
        atomic_fetch_sub(&srv->admitted, 1);
    free(s);
    pthread_mutex_lock(&srv->mu);
    if (atomic_fetch_sub(&srv->live, 1) == 1)
        pthread_cond_broadcast(&srv->all_gone);
    pthread_mutex_unlock(&srv->mu);
}

int session_spawn(struct server *srv, int fd, const struct sockaddr_storage *peer)
{
    struct session *s = calloc(1, sizeof(*s));
    if (!s) {
        close(fd);
        return -ENOMEM;
    }
    s->srv = srv;
    s->rt = server_runtime_acquire(srv);
    s->cfg = &s->rt->cfg;
    if (!startup_gate_accept(srv, s->cfg, fd, peer, s)) {
        server_runtime_release(s->rt);
        free(s);
        return 0;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    s->su = malloc(sizeof(*s->su)); /* not calloc: only the bytes read get touched */
    if (!s->su) {
        startup_gate_leave(s);
        server_runtime_release(s->rt);
        free(s);
        close(fd);
        return -ENOMEM;
    }
    s->id = atomic_fetch_add(&srv->next_sid, 1) + 1;
    s->rt_gen = s->rt->gen;
    s->tx = 'I';
    s->st = ST_IDLE;
    s->phase = PH_STARTUP;
    s->up_watched_fd = -1;
    s->up.io.fd = -1;
    s->cli_in = s->cli_out = true;
    int64_t limit = (int64_t)s->cfg->startup_timeout_ms;
    if (s->proxy_pending && (limit == 0 || limit > STARTUP_GATE_HEADER_TIMEOUT_MS))
        limit = STARTUP_GATE_HEADER_TIMEOUT_MS;
    s->deadline_ms = netio_now_ms() + limit;
    netio_init_plain(&s->cli, fd);
    startup_gate_format_peer(peer, s->addr, sizeof(s->addr));
    atomic_fetch_add(&srv->live, 1);
    worker_assign(srv, s);
    return 0;
}
