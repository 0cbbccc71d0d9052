/* SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 5802, RFC 7677, channel binding
 * tls-server-end-point from RFC 5929), the server side, on OpenSSL primitives. Pure: no
 * sockets and no randomness (the caller passes the server nonce), so every message can be fed
 * from tests and fuzzers. Errors carry PostgreSQL's SQLSTATEs and texts, so a client sees what
 * it would see from PostgreSQL. */
#ifndef PGWP_SCRAM_H
#define PGWP_SCRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SCRAM_KEY_LEN            32
#define SCRAM_SALT_LEN           16   /* what this proxy generates; stored salts may differ */
#define SCRAM_SALT_MAX           64   /* longest stored salt accepted */
#define SCRAM_DEFAULT_ITERATIONS 4096 /* PostgreSQL's default; RFC 7677 says at least this */
#define SCRAM_MAX_MESSAGE        1024 /* PostgreSQL's PG_MAX_SASL_MESSAGE_LENGTH */
#define SCRAM_NONCE_RAW_LEN      18   /* server nonce: base64 of this many random bytes */
#define SCRAM_CBIND_MAX          64   /* a certificate hash: SHA-512 at most */
#define SCRAM_SECRET_MAX         256  /* formatted "SCRAM-SHA-256$..." */

#define SCRAM_MECH       "SCRAM-SHA-256"
#define SCRAM_MECH_PLUS  "SCRAM-SHA-256-PLUS"
#define SCRAM_CBIND_TYPE "tls-server-end-point"

/* pg_authid.rolpassword's format: SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>. */
struct scram_secret {
    int iterations;
    uint8_t salt[SCRAM_SALT_MAX];
    size_t salt_len;
    uint8_t stored_key[SCRAM_KEY_LEN];
    uint8_t server_key[SCRAM_KEY_LEN];
};

/* 0, or -1 when s is not a SCRAM-SHA-256 secret (PostgreSQL then runs a mock exchange). */
int scram_parse_secret(const char *s, struct scram_secret *out);
/* "SCRAM-SHA-256$..." into out; its length, or -1 when it does not fit. */
int scram_format_secret(const struct scram_secret *sec, char *out, size_t outlen);
/* Derives a secret from a password (PBKDF2-HMAC-SHA-256): the password is used as given, the
 * caller prepares it. 0, or -1 on an OpenSSL failure. */
int scram_make_secret(const char *password, size_t pwlen, const uint8_t *salt, size_t salt_len,
                      int iterations, struct scram_secret *out);
/* Salt (and keys nobody can match) for a user that has no usable secret, derived from a
 * server-wide key: stable across attempts and restarts, like a real user's, and unknowable
 * without the key. */
void scram_mock_secret(const uint8_t key[SCRAM_KEY_LEN], const char *user, int iterations,
                       struct scram_secret *out);
/* HMAC-SHA-256(key, "<label>\0<user>"), for the deterministic salts above. */
void scram_derive(const uint8_t key[SCRAM_KEY_LEN], const char *label, const char *user,
                  uint8_t out[SCRAM_KEY_LEN]);

/* Base64 (RFC 4648, padded). encode: NUL-terminated, returns its length or -1 when it does not
 * fit. decode: strict as PostgreSQL's (no whitespace, '=' only at the end); the decoded
 * length or -1. */
int scram_b64_encode(const uint8_t *in, size_t len, char *out, size_t outlen);
int scram_b64_decode(const char *in, size_t len, uint8_t *out, size_t outlen);

/* The SASLInitialResponse payload: mechanism, then int32 length (-1 = no data) and the data.
 * 0, or -1 with *why (08P01) when the layout is wrong. */
int scram_parse_initial(const uint8_t *payload, size_t len, const char **mech, const uint8_t **data,
                        int32_t *datalen, const char **why);

enum scram_status {
    SCRAM_CONTINUE, /* out holds the next server message */
    SCRAM_OK,       /* authenticated: out holds server-final ("v=...") */
    SCRAM_FAILED,   /* wrong proof (or a mock secret): 28P01, like a wrong password */
    SCRAM_ERROR,    /* malformed or refused message: code, message, detail say why */
};

enum scram_stage { SCRAM_STAGE_FIRST, SCRAM_STAGE_FINAL, SCRAM_STAGE_DONE };

struct scram_state {
    enum scram_stage stage;
    bool plus_offered; /* -PLUS was advertised on this connection */
    bool plus;         /* the client selected -PLUS */
    bool mock;         /* no usable secret: the exchange runs, then fails */
    char flag;         /* gs2 flag: 'n', 'y' or 'p' */
    struct scram_secret secret;
    uint8_t cbind[SCRAM_CBIND_MAX]; /* the server certificate's hash (-PLUS) */
    size_t cbind_len;
    char first_bare[SCRAM_MAX_MESSAGE + 1]; /* client-first-message-bare, as sent */
    size_t first_bare_len;
    char server_first[SCRAM_MAX_MESSAGE + 128];
    size_t server_first_len;
    size_t client_nonce_len; /* the combined nonce starts server_first after "r=" */
    size_t nonce_len;        /* client + server nonce */
    char code[6];
    char message[160];
    char detail[200];
};

/* plus_offered: -PLUS was advertised; plus: the client chose it (needs plus_offered and
 * cbind). secret NULL = mock (the caller passes the mock secret in mock_secret). */
void scram_init(struct scram_state *st, const struct scram_secret *secret, bool mock,
                bool plus_offered, bool plus, const uint8_t *cbind, size_t cbind_len);

/* Feeds one client message (client-first, then client-final). server_nonce: printable, used
 * for client-first only. The server's answer goes to out (NUL-terminated), its length to
 * *outlen. */
enum scram_status scram_exchange(struct scram_state *st, const uint8_t *msg, size_t len,
                                 const char *server_nonce, char *out, size_t outcap,
                                 size_t *outlen);

/* The client side, for tests and the benchmark: builds client-final with the proof for a
 * password, from the messages so far. 0 or -1. */
int scram_client_final(const char *password, const char *client_first_bare,
                       const char *server_first, const char *cbind_b64, char *out, size_t outlen);

#endif
