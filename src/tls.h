/* OpenSSL server context for client-side TLS: cert/key load, handshake. */
#ifndef PGWP_TLS_H
#define PGWP_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct tls_ctx;
typedef struct ssl_st SSL;

/* NULL with err when cert/key cannot be used (unreadable, world-readable key, mismatch). */
struct tls_ctx *tls_ctx_new(const struct config *cfg, char *err, size_t errlen);
void tls_ctx_free(struct tls_ctx *t);

/* One non-blocking handshake step on fd (*ssl created on the first call). Returns 1 when done,
 * 0 when it waits for the socket, -1 on failure with err. */
int tls_accept_step(struct tls_ctx *t, int fd, SSL **ssl, char *err, size_t errlen);
void tls_free_ssl(SSL *ssl);
/* Frees without writing to the socket (it is gone, or belongs to someone else now). NULL ok. */
void tls_drop_ssl(SSL *ssl);
/* True when ssl (NULL: plaintext) carries a client certificate that verified against --tls-ca. */
bool tls_peer_verified(SSL *ssl);
/* The client certificate's first CN into out. 0; -1 no verified certificate or no CN; -2 a CN
 * with an embedded NUL (CVE-2009-4034) or longer than out. */
int tls_peer_cn(SSL *ssl, char *out, size_t outlen);
/* The verified client certificate's subject DN in RFC 2253 form, or "" (always terminated). */
void tls_peer_subject(SSL *ssl, char *out, size_t outlen);
/* tls-server-end-point channel binding data (RFC 5929): the hash of this connection's server
 * certificate, computed when the certificate was loaded. 0 with *len; -1 when it is undefined
 * (a signature without one hash, e.g. Ed25519): then -PLUS is not offered. */
int tls_server_end_point(SSL *ssl, const uint8_t **data, size_t *len);
/* True when the handshake agreed on ALPN "postgresql". */
bool tls_alpn_negotiated(SSL *ssl);

#endif
