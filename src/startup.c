#include "startup.h"
#include "config.h"
#include "conn.h"
#include "log.h"
#include "metrics.h"
#include "proxy_proto.h"
#include "tls.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

void startup_init(struct startup *su)
{
    su->have = 0;
    su->negotiated = 0;
    su->in_tls = su->tls_direct = false;
    su->ssl_pending = NULL;
    su->code[0] = su->message[0] = 0;
    su->proxy_header = false;
}

void startup_release(struct startup *su)
{
    if (su->ssl_pending)
        tls_free_ssl(su->ssl_pending);
    su->ssl_pending = NULL;
}

static enum startup_status fail(struct startup *su, const char *code, const char *msg)
{
    snprintf(su->code, sizeof(su->code), "%s", code);
    snprintf(su->message, sizeof(su->message), "%s", msg);
    return STARTUP_FAILED;
}

static enum startup_status check_version(struct startup *su, struct conn *cli)
{
    uint32_t major = su->sp.version >> 16, minor = su->sp.version & 0xffff;
    if (major != 3) {
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "unsupported frontend protocol %u.%u: server supports 3.0 to 3.%u", major, minor,
                 WIRE_NEWEST_MINOR);
        return fail(su, "08P01", msg);
    }
    const char *unknown[WIRE_MAX_STARTUP_PARAMS];
    size_t nunknown = 0;
    for (size_t i = 0; i < su->sp.nparams; i++)
        if (strncmp(su->sp.params[i].name, "_pq_.", 5) == 0)
            unknown[nunknown++] = su->sp.params[i].name;
    if (minor > WIRE_NEWEST_MINOR || nunknown > 0) {
        uint8_t buf[WIRE_MAX_STARTUP_LEN + 64];
        struct wire_buf b;
        wire_buf_init(&b, buf, sizeof(buf));
        wire_build_negotiate(&b, WIRE_PROTO_3_0 | WIRE_NEWEST_MINOR, unknown, nunknown);
        if (b.overflow || conn_send(cli, b.data, b.len))
            return STARTUP_IO_ERROR;
    }
    return STARTUP_MORE;
}

static enum startup_status startup_message(struct startup *su, struct conn *cli,
                                           const struct config *cfg)
{
    if (cfg->tls_mode == CONFIG_TLS_REQUIRE && !cli->io.ssl)
        return fail(su, "28000", "TLS required: connect with sslmode=require");
    /* like PostgreSQL's hostssl + clientcert: no certificate, no session, plaintext included */
    if (cfg->tls_client_cert_required && !tls_peer_verified(cli->io.ssl))
        return fail(su, "28000", "connection requires a valid client certificate");
    enum startup_status st = check_version(su, cli);
    if (st != STARTUP_MORE)
        return st;
    if (!wire_startup_get(&su->sp, "user"))
        return fail(su, "28000", "no PostgreSQL user name specified in startup packet");
    const char *repl = wire_startup_get(&su->sp, "replication");
    if (repl && strcmp(repl, "false") && strcmp(repl, "0") && strcmp(repl, "off"))
        return fail(su, "0A000", "replication connections are not supported by pgwire-proxy");
    return STARTUP_STARTUP;
}

static enum startup_status packet(struct startup *su, struct conn *cli, struct tls_ctx *tls,
                                  const struct config *cfg, uint32_t len)
{
    if (wire_parse_startup(su->buf, len, &su->sp) != WIRE_OK)
        return fail(su, "08P01", "invalid startup packet layout");
    su->have = 0;
    /* one SSLRequest and one GSSENCRequest at most, as PostgreSQL allows: a client cannot keep
     * a connection in startup by repeating them */
    if (su->sp.kind == WIRE_PKT_SSL || su->sp.kind == WIRE_PKT_GSSENC) {
        unsigned bit = su->sp.kind == WIRE_PKT_SSL ? 1u : 2u;
        if (su->negotiated & bit)
            return fail(su, "08P01", "duplicate SSL or GSS encryption request");
        su->negotiated |= bit;
    }
    switch (su->sp.kind) {
    case WIRE_PKT_SSL:
        if (tls && !cli->io.ssl) {
            if (conn_send(cli, "S", 1))
                return STARTUP_IO_ERROR;
            su->in_tls = true;
            return STARTUP_MORE;
        }
        return conn_send(cli, "N", 1) ? STARTUP_IO_ERROR : STARTUP_MORE;
    case WIRE_PKT_GSSENC:
        return conn_send(cli, "N", 1) ? STARTUP_IO_ERROR : STARTUP_MORE;
    case WIRE_PKT_CANCEL:
        return STARTUP_CANCEL;
    case WIRE_PKT_STARTUP:
        return startup_message(su, cli, cfg);
    }
    return fail(su, "08P01", "invalid startup packet layout");
}

static enum startup_status tls_step(struct startup *su, struct conn *cli, struct tls_ctx *tls)
{
    if (conn_send_pending(cli)) /* the 'S' must reach the client before the handshake */
        return conn_flush(cli) ? STARTUP_IO_ERROR : STARTUP_MORE;
    char err[256];
    int rc = tls_accept_step(tls, cli->io.fd, &su->ssl_pending, err, sizeof(err));
    if (rc == 0) {
        cli->can_read = cli->can_write = false; /* wait for the next edge */
        return STARTUP_MORE;
    }
    if (rc < 0) {
        metrics_tls_handshake(0);
        su->code[0] = 0; /* no FATAL: the client speaks no protocol we could answer in */
        snprintf(su->message, sizeof(su->message), "TLS handshake failed: %s", err);
        return STARTUP_FAILED;
    }
    metrics_tls_handshake(1);
    netio_init_tls(&cli->io, cli->io.fd, su->ssl_pending);
    su->ssl_pending = NULL;
    su->in_tls = false;
    if (su->tls_direct && !tls_alpn_negotiated(cli->io.ssl)) {
        /* like PostgreSQL 17: direct TLS needs ALPN "postgresql" (cross-protocol protection) */
        return fail(su, "08P01",
                    "received direct SSL connection request without ALPN protocol negotiation "
                    "extension");
    }
    cli->can_read = cli->can_write = true;
    return STARTUP_MORE;
}

/* Reads the untyped packets: exactly their length. */
static enum startup_status read_packets(struct startup *su, struct conn *cli, struct tls_ctx *tls,
                                        const struct config *cfg)
{
    while (cli->can_read && !su->in_tls) {
        size_t need = 4;
        uint32_t len = 0;
        if (su->have >= 4) {
            if (wire_startup_len(su->buf, su->have, &len) < 0)
                return fail(su, "08P01", "invalid length of startup packet");
            need = len;
        }
        if (su->have == need) {
            enum startup_status st = packet(su, cli, tls, cfg, len);
            if (st != STARTUP_MORE)
                return st;
            if (conn_flush(cli))
                return STARTUP_IO_ERROR;
            continue;
        }
        ssize_t n = netio_read(&cli->io, su->buf + su->have, need - su->have);
        if (n == -EAGAIN) {
            cli->can_read = false;
            break;
        }
        if (n <= 0) {
            conn_fail(cli, CONN_DIR_READ, (int)n);
            return STARTUP_IO_ERROR;
        }
        su->have += (size_t)n;
        if (su->have == 4 && wire_startup_len(su->buf, 4, &len) < 0) {
            if (su->negotiated == 0 && !cli->io.ssl && proxy_proto_signature(su->buf, 4)) {
                su->proxy_header = true;
                su->code[0] = 0; /* closed without a word: it speaks no PostgreSQL yet */
                return STARTUP_FAILED;
            }
            return fail(su, "08P01", "invalid length of startup packet");
        }
    }
    return STARTUP_MORE;
}

enum startup_status startup_step(struct startup *su, struct conn *cli, struct tls_ctx *tls,
                                 const struct config *cfg)
{
    for (int i = 0; i < 8; i++) {
        if (su->in_tls) {
            enum startup_status st = tls_step(su, cli, tls);
            if (st != STARTUP_MORE || su->in_tls)
                return st;
            continue;
        }
        if (su->have == 0 && tls && !cli->io.ssl && cli->can_read) {
            /* direct TLS (PostgreSQL 17 sslnegotiation=direct): a handshake record, no
             * SSLRequest */
            uint8_t first;
            if (recv(cli->io.fd, &first, 1, MSG_PEEK) == 1 && first == 0x16) {
                su->in_tls = su->tls_direct = true;
                continue;
            }
        }
        return read_packets(su, cli, tls, cfg);
    }
    return STARTUP_MORE;
}
