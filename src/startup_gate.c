#include "startup_gate.h"
#include "admission.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "proxy_proto.h"
#include "session_int.h"
#include "wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *refusal(enum admission_result r)
{
    return r == ADMISSION_ADDRESS ? "too many connections in startup from this address"
                                  : "too many connections in startup";
}

void startup_gate_leave(struct admission *adm, struct session_accept *acc)
{
    if (acc->counted) {
        admission_leave(adm, &acc->key);
        acc->counted = false;
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
    } else if (peer->ss_family == AF_UNIX) {
        snprintf(out, len, "[local]");
        return;
    }
    snprintf(out, len, "%s:%d", host, port);
}

/* Refuses a connection at accept, before a session exists: FATAL 53300 and close. What the
 * client already sent is read first, so the close is a FIN and the FATAL arrives. */
static void refuse_fd(int fd, const char *message)
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

bool startup_gate_accept(struct admission *adm, const struct config *cfg, int fd,
                         struct session_accept *acc)
{
    admission_key_from(&acc->peer, &acc->key); /* local clients share one key */
    if (proxy_proto_cidr_match(cfg->proxy_from, cfg->nproxy_protocol_from, &acc->peer)) {
        acc->proxy_pending = true;
        return true;
    }
    enum admission_result r =
        admission_enter(adm, &acc->key, cfg->max_startup_connections, cfg->max_startup_per_address);
    if (r == ADMISSION_OK) {
        acc->counted = true;
        return true;
    }
    char addr[64];
    startup_gate_format_peer(&acc->peer, addr, sizeof(addr));
    metrics_connection(METRICS_CONN_REJECTED_LIMIT);
    LOG_INFO(0, "startup_refused", "client=%s %s", addr, refusal(r));
    refuse_fd(fd, refusal(r));
    return false;
}

/* Counts the connection by the address in its PROXY header; the header is consumed whole. */
static enum session_end header_accept(struct session *s, const struct proxy_proto_header *h)
{
    uint8_t sink[PROXY_PROTO_MAX_LEN];
    if (recv(s->cli.io.fd, sink, h->len, 0) != (ssize_t)h->len)
        return SE_CLIENT_ERROR; /* peeked, so it is there: anything else is a broken socket */
    if (h->has_src) {
        startup_gate_format_peer(&h->src, s->addr, sizeof(s->addr));
        s->client = h->src; /* what pg_hba.conf rules match */
        admission_key_from(&h->src, &s->acc.key);
    }
    s->acc.proxy_pending = false;
    s->deadline_ms = netio_now_ms() + (int64_t)s->cfg->startup_timeout_ms;
    enum admission_result r =
        admission_enter(s->env->admission, &s->acc.key, s->cfg->max_startup_connections,
                        s->cfg->max_startup_per_address);
    if (r != ADMISSION_OK) {
        metrics_connection(METRICS_CONN_REJECTED_LIMIT);
        LOG_WARN(s->id, "startup_refused", "client=%s %s", s->addr, refusal(r));
        session_fatal(s, "53300", refusal(r), NULL);
        return SE_REJECTED;
    }
    s->acc.counted = true;
    return SE_NONE;
}

/* Peeked until it is whole, so the bytes after it (SSLRequest, TLS) stay in the socket. */
enum session_end startup_gate_read_proxy_header(struct session *s)
{
    uint8_t buf[PROXY_PROTO_MAX_LEN];
    if (!s->cli.can_read)
        return SE_NONE;
    ssize_t n = recv(s->cli.io.fd, buf, sizeof(buf), MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        s->cli.can_read = false;
        return SE_NONE;
    }
    if (n <= 0)
        return n == 0 ? SE_CLIENT_EOF : SE_CLIENT_ERROR;
    struct proxy_proto_header h;
    enum proxy_proto_result r = proxy_proto_parse(buf, (size_t)n, &h);
    if (r == PROXY_PROTO_NEED_MORE) {
        s->cli.can_read = false;
        return s->cli.peer_closed ? SE_CLIENT_EOF : SE_NONE;
    }
    if (r == PROXY_PROTO_INVALID) {
        /* as HAProxy's accept-proxy: a listed source without a valid header is closed */
        LOG_WARN(s->id, "proxy_header_invalid", "client=%s no valid PROXY protocol header",
                 s->addr);
        metrics_connection(METRICS_CONN_PROTOCOL_ERROR);
        return SE_PROTOCOL;
    }
    return header_accept(s, &h);
}
