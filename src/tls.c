#include "tls.h"
#include "config.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct tls_ctx {
    SSL_CTX *ctx;
    uint8_t cert_hash[EVP_MAX_MD_SIZE]; /* tls-server-end-point */
    unsigned cert_hash_len;             /* 0: undefined for this certificate */
};

static void ssl_err(char *err, size_t errlen, const char *what, const char *file)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "";
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    snprintf(err, errlen, "%s '%s': %s", what, file ? file : "", buf[0] ? buf : strerror(errno));
    ERR_clear_error();
}

/* Like PostgreSQL: a private key others can read is refused, with the reason. */
static int check_key_perms(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "cannot read TLS key file '%s': %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "TLS key file '%s' is not a regular file", path);
        return -1;
    }
    if (st.st_mode & (S_IRWXO | S_IWGRP | S_IXGRP)) {
        snprintf(err, errlen,
                 "TLS key file '%s' must not be world-accessible (mode %04o); run chmod 600 on it",
                 path, (unsigned)(st.st_mode & 07777));
        return -1;
    }
    return 0;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char pg[] = "\x0apostgresql";
    if (SSL_select_next_proto((unsigned char **)out, outlen, pg, sizeof(pg) - 1, in, inlen) ==
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_OK;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* RFC 5929 §4.1: the certificate's signature hash, MD5 and SHA-1 raised to SHA-256; none for
 * a signature without a single hash (Ed25519, Ed448), as PostgreSQL decides. */
static void cert_hash(struct tls_ctx *t)
{
    X509 *cert = SSL_CTX_get0_certificate(t->ctx);
    int md_nid = NID_undef;
    t->cert_hash_len = 0;
    if (!cert || !X509_get_signature_info(cert, &md_nid, NULL, NULL, NULL))
        return;
    const EVP_MD *md = NULL;
    if (md_nid == NID_md5 || md_nid == NID_sha1)
        md = EVP_sha256();
    else if (md_nid != NID_undef)
        md = EVP_get_digestbynid(md_nid);
    if (md && X509_digest(cert, md, t->cert_hash, &t->cert_hash_len) != 1)
        t->cert_hash_len = 0;
}

struct tls_ctx *tls_ctx_new(const struct config *cfg, char *err, size_t errlen)
{
    struct tls_ctx *t = calloc(1, sizeof(*t));
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (check_key_perms(cfg->tls_key, err, errlen))
        goto fail;
    t->ctx = SSL_CTX_new(TLS_server_method());
    if (!t->ctx) {
        ssl_err(err, errlen, "cannot create TLS context", NULL);
        goto fail;
    }
    SSL_CTX_set_min_proto_version(t->ctx,
                                  cfg->tls_min_version == 1 ? TLS1_3_VERSION : TLS1_2_VERSION);
    SSL_CTX_set_options(t->ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(t->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (SSL_CTX_use_certificate_chain_file(t->ctx, cfg->tls_cert) != 1) {
        ssl_err(err, errlen, "cannot load TLS certificate", cfg->tls_cert);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(t->ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1) {
        ssl_err(err, errlen, "cannot load TLS key", cfg->tls_key);
        goto fail;
    }
    if (SSL_CTX_check_private_key(t->ctx) != 1) {
        ssl_err(err, errlen, "TLS key does not match the certificate", cfg->tls_cert);
        goto fail;
    }
    if (cfg->tls_ca) {
        if (SSL_CTX_load_verify_locations(t->ctx, cfg->tls_ca, NULL) != 1) {
            ssl_err(err, errlen, "cannot load TLS CA", cfg->tls_ca);
            goto fail;
        }
        SSL_CTX_set_verify(
            t->ctx,
            SSL_VERIFY_PEER | (cfg->tls_client_cert_required ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
            NULL);
    }
    SSL_CTX_set_alpn_select_cb(t->ctx, alpn_select, NULL);
    cert_hash(t);
    SSL_CTX_set_app_data(t->ctx, t);
    return t;
fail:
    tls_ctx_free(t);
    return NULL;
}

void tls_ctx_free(struct tls_ctx *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    free(t);
}

int tls_accept_step(struct tls_ctx *t, int fd, SSL **sslp, char *err, size_t errlen)
{
    if (!*sslp) {
        *sslp = SSL_new(t->ctx);
        if (!*sslp || SSL_set_fd(*sslp, fd) != 1) {
            ssl_err(err, errlen, "cannot start TLS", NULL);
            return -1;
        }
    }
    ERR_clear_error();
    int rc = SSL_accept(*sslp);
    if (rc == 1)
        return 1;
    int e = SSL_get_error(*sslp, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    ssl_err(err, errlen, "TLS handshake failed", NULL);
    return -1;
}

bool tls_alpn_negotiated(SSL *ssl)
{
    const unsigned char *proto = NULL;
    unsigned int len = 0;
    SSL_get0_alpn_selected(ssl, &proto, &len);
    return len == 10 && memcmp(proto, "postgresql", 10) == 0;
}

void tls_free_ssl(SSL *ssl)
{
    if (ssl) {
        SSL_shutdown(ssl);
        SSL_free(ssl);
    }
}

void tls_drop_ssl(SSL *ssl)
{
    SSL_free(ssl); /* no close_notify: the socket is closed or owned elsewhere */
}

bool tls_peer_verified(SSL *ssl)
{
    if (!ssl)
        return false;
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    X509 *cert = SSL_get1_peer_certificate(ssl);
#else
    X509 *cert = SSL_get_peer_certificate(ssl);
#endif
    bool ok = cert && SSL_get_verify_result(ssl) == X509_V_OK;
    X509_free(cert);
    return ok;
}

int tls_server_end_point(SSL *ssl, const uint8_t **data, size_t *len)
{
    const struct tls_ctx *t = ssl ? SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)) : NULL;
    if (!t || !t->cert_hash_len)
        return -1;
    *data = t->cert_hash;
    *len = t->cert_hash_len;
    return 0;
}

static X509 *verified_peer(SSL *ssl)
{
    if (!ssl)
        return NULL;
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    X509 *cert = SSL_get1_peer_certificate(ssl);
#else
    X509 *cert = SSL_get_peer_certificate(ssl);
#endif
    if (cert && SSL_get_verify_result(ssl) != X509_V_OK) {
        X509_free(cert);
        cert = NULL;
    }
    return cert;
}

int tls_peer_cn(SSL *ssl, char *out, size_t outlen)
{
    X509 *cert = verified_peer(ssl);
    int rc = -1;
    out[0] = 0;
    X509_NAME *name = cert ? X509_get_subject_name(cert) : NULL;
    int at = name ? X509_NAME_get_index_by_NID(name, NID_commonName, -1) : -1;
    const ASN1_STRING *v = at >= 0 ? X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, at)) : NULL;
    unsigned char *utf8 = NULL;
    int n = v ? ASN1_STRING_to_UTF8(&utf8, v) : -1;
    if (n >= 0) {
        /* a NUL inside the CN would let "alice\0.evil" pass as "alice" */
        rc = memchr(utf8, 0, (size_t)n) || (size_t)n >= outlen ? -2 : 0;
        if (rc == 0) {
            memcpy(out, utf8, (size_t)n);
            out[n] = 0;
        }
    }
    OPENSSL_free(utf8);
    X509_free(cert);
    return rc;
}

void tls_peer_subject(SSL *ssl, char *out, size_t outlen)
{
    X509 *cert = verified_peer(ssl);
    out[0] = 0;
    BIO *bio = cert ? BIO_new(BIO_s_mem()) : NULL;
    if (bio && X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) >= 0) {
        int n = BIO_read(bio, out, (int)outlen - 1);
        out[n > 0 ? n : 0] = 0;
    }
    BIO_free(bio);
    X509_free(cert);
}
