/* Startup negotiation on a client connection: SSLRequest / GSSENCRequest / CancelRequest /
 * StartupMessage, the TLS handshake (after SSLRequest, or direct TLS with ALPN), and the
 * protocol version. It reads the untyped packets by exact length, so the bytes of a TLS
 * handshake that follows an SSLRequest stay in the socket for OpenSSL. */
#ifndef PGWP_STARTUP_H
#define PGWP_STARTUP_H

#include "wire.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct conn;
struct tls_ctx;
struct config;
typedef struct ssl_st SSL;

enum startup_status {
    STARTUP_MORE,     /* waiting for the client */
    STARTUP_STARTUP,  /* a StartupMessage arrived: sp holds it */
    STARTUP_CANCEL,   /* a CancelRequest arrived: sp.cancel_pid/secret */
    STARTUP_FAILED,   /* code/message say why (a FATAL for the client), or a silent end */
    STARTUP_IO_ERROR, /* the client's socket failed or closed (the conn records which) */
};

struct startup {
    uint8_t buf[WIRE_MAX_STARTUP_LEN];
    size_t have;
    unsigned negotiated; /* 1: SSLRequest seen, 2: GSSENCRequest seen */
    bool in_tls;         /* handshake running */
    bool tls_direct;     /* TLS started without an SSLRequest */
    SSL *ssl_pending;    /* during the handshake */
    struct wire_startup sp;
    bool proxy_header; /* STARTUP_FAILED: it began with a PROXY header nobody expected */
    char code[6];      /* STARTUP_FAILED: SQLSTATE, "" = close without a message */
    char message[320];
};

void startup_init(struct startup *su);
/* Frees what a handshake left behind. */
void startup_release(struct startup *su);

/* Advances as far as the client's bytes allow. tls may be NULL (TLS off). Replies the client
 * needs (S/N, NegotiateProtocolVersion) are queued on cli. */
enum startup_status startup_step(struct startup *su, struct conn *cli, struct tls_ctx *tls,
                                 const struct config *cfg);

#endif
