/* The gate before a session's startup: connections counted per client address and in all
 * (admission.c), refused at once past --max-startup-*, and the PROXY protocol header that
 * names the client behind a --proxy-protocol-from load balancer (proxy_proto.c). */
#include "startup_gate.h"
#include "admission.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "proxy_proto.h"
#include "server.h"
#include "session_int.h"
#include "wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *startup_refusal(enum admission_result r)
{
    return r == ADMISSION_ADDRESS ? "too many connections in startup from this address"
                                  : "too many connections in startup";
}

void startup_gate_leave(struct session *s)
{
    if (s->su_counted) {
        admission_leave(s->srv->admission, &s->su_key);
        s->su_counted = false;
    }
}

void startup_gate_format_peer(const struct sockaddr_storage *peer, char *out, size_t len)
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

/* Refuses a connection at accept, before a session exists: FATAL 53300 and close. What the
 * client already sent is read first, so the close is a FIN and the FATAL arrives. */
static void startup_refuse_fd(int fd, const char *message)
{
    uint8_t buf[256];
    struct wire_buf b;
    wire_buf_init(&b, buf, sizeof(buf));
    struct wire_error_fields f = {.severity = "FATAL", .code = "53300", .message = message};
    wire_build_error(&b, 'E', &f);
    if (!b.overflow) {
        ssize_t w = send(fd, b.data, b.len, MSG_DONTWAIT | MSG_NOSIGNAL);
        (void)w;
    }
    shutdown(fd, SHUT_WR);
    char sink[2048]; /* up to a whole startup packet */
    for (int i = 0; i < 6 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
        ;
    close(fd);
}

bool startup_gate_accept(struct server *srv, const struct config *cfg, int fd,
                         const struct sockaddr_storage *peer, struct session *s)
{
    admission_key_from(peer, &s->su_key);
    if (proxy_proto_cidr_match(cfg->proxy_from, cfg->nproxy_protocol_from, peer)) {
        s->proxy_pending = true;
        return true;
    }
    enum admission_result r = admission_enter(
        srv->admission, &s->su_key, cfg->max_startup_connections, cfg->max_startup_per_address);
    if (r == ADMISSION_OK) {
        s->su_counted = true;
        return true;
    }
    char addr[64];
    startup_gate_format_peer(peer, addr, sizeof(addr));
    metrics_connection(METRICS_CONN_REJECTED_LIMIT);
    LOG_INFO(0, "startup_refused", "client=%s %s", addr, startup_refusal(r));
    startup_refuse_fd(fd, startup_refusal(r));
    return false;
}

/* Counts the connection by the address in its PROXY header; the header is consumed whole. */
static enum session_end proxy_header_accept(struct session *s, const struct proxy_proto_header *h)
{
    uint8_t sink[PROXY_PROTO_MAX_LEN];
    if (recv(s->cli.fd, sink, h->len, 0) != (ssize_t)h->len)
        return SE_CLIENT_ERROR; /* peeked, so it is there: anything else is a broken socket */
    if (h->has_src) {
        startup_gate_format_peer(&h->src, s->addr, sizeof(s->addr));
        admission_key_from(&h->src, &s->su_key);
    }
    s->proxy_pending = false;
    s->deadline_ms = netio_now_ms() + (int64_t)s->cfg->startup_timeout_ms;
    enum admission_result r =
        admission_enter(s->srv->admission, &s->su_key, s->cfg->max_startup_connections,
                        s->cfg->max_startup_per_address);
    if (r != ADMISSION_OK) {
        metrics_connection(METRICS_CONN_REJECTED_LIMIT);
        LOG_WARN(s->id, "startup_refused", "client=%s %s", s->addr, startup_refusal(r));
        session_send_fatal(s, "53300", startup_refusal(r), NULL);
        return SE_REJECTED;
    }
    s->su_counted = true;
    return SE_NONE;
}

/* Peeked until it is whole, so the bytes after it (SSLRequest, TLS) stay in the socket. */
enum session_end startup_gate_read_proxy_header(struct session *s)
{
    uint8_t buf[PROXY_PROTO_MAX_LEN];
    ssize_t n = recv(s->cli.fd, buf, sizeof(buf), MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        s->cli_in = false;
        return SE_NONE;
    }
    if (n <= 0)
        return n == 0 ? SE_CLIENT_EOF : SE_CLIENT_ERROR;
    struct proxy_proto_header h;
    enum proxy_proto_result r = proxy_proto_parse(buf, (size_t)n, &h);
    if (r == PROXY_PROTO_NEED_MORE) {
        s->cli_in = false;
        return s->cli_hup ? SE_CLIENT_EOF : SE_NONE;
    }
    if (r == PROXY_PROTO_INVALID) {
        /* as HAProxy's accept-proxy: a listed source without a valid header is closed */
        LOG_WARN(s->id, "proxy_header_invalid", "client=%s no valid PROXY protocol header",
                 s->addr);
        metrics_connection(METRICS_CONN_PROTOCOL_ERROR);
        return SE_PROTOCOL;
    }
    return proxy_header_accept(s, &h);
}

/* From a source not in --proxy-protocol-from a header could claim any address. */
enum session_end startup_gate_unexpected_header(struct session *s)
{
    LOG_WARN(s->id, "proxy_header_refused",
             "client=%s sent a PROXY protocol header but is not in --proxy-protocol-from", s->addr);
    metrics_connection(METRICS_CONN_PROTOCOL_ERROR);
    return SE_PROTOCOL;
}
