/* Client authentication between the StartupMessage and the upstream connection: which method
 * applies (--auth-type, or the first matching --auth-hba-file record), the SASL exchange as
 * messages in and messages out, and PostgreSQL's texts for every outcome. Pure: the session
 * moves the bytes, arms its timer for --auth-failure-delay, and never sleeps. */
#ifndef PGWP_AUTH_H
#define PGWP_AUTH_H

#include "hba.h"
#include "scram.h"
#include "wire.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct authfile;
struct config;

/* What one configuration generation authenticates with. */
struct auth_conf {
    int type; /* enum config_auth_type */
    struct authfile *users;
    struct hba *hba;
    uint8_t key[SCRAM_KEY_LEN]; /* the server secret: mock and plain-entry salts */
    bool scram;                 /* some path runs SCRAM (users and key loaded) */
};

/* Loads the auth file, hba file and server secret the configuration needs. NULL with err when
 * they are unusable (a bad line names file:line); at start that exits 2, on reload the
 * running generation stays. *warn (may be NULL) gets a warning for the log, or "". */
struct auth_conf *auth_conf_new(const struct config *cfg, char *warn, size_t warnlen, char *err,
                                size_t errlen);
void auth_conf_free(struct auth_conf *a);
/* True when user has an entry in the auth file. */
bool auth_conf_knows(const struct auth_conf *a, const char *user);

enum auth_method { AUTH_TRUST, AUTH_REJECT, AUTH_SCRAM, AUTH_CERT, AUTH_PEER, AUTH_NO_MATCH };

struct auth_query {
    bool local; /* Unix-domain socket */
    bool ssl;
    const struct sockaddr_storage *addr;
    const char *user, *database;
};

struct auth_decision {
    enum auth_method method;
    bool clientcert; /* also a certificate whose CN is the user (clientcert=verify-full) */
    int line;        /* the hba record that decided, 0 without --auth-hba-file */
    const char *record;
};

void auth_decide(const struct auth_conf *a, const struct auth_query *q, struct auth_decision *d);
const char *auth_method_name(enum auth_method m);

/* The FATAL a refused client gets (SQLSTATE, message), for the outcomes that do not run an
 * exchange: reject and no matching record. host: "127.0.0.1" or "[local]". */
void auth_hba_refusal(const struct auth_decision *d, const char *host, const char *user,
                      const char *database, bool ssl, char *msg, size_t len);

/* ---------- SASL (SCRAM-SHA-256 / -PLUS) ---------- */

struct auth_sasl {
    struct scram_state scram;
    bool plus_offered;
    bool started; /* the SASLInitialResponse arrived */
    bool mock;
    struct scram_secret secret;
    uint8_t cbind[SCRAM_CBIND_MAX];
    size_t cbind_len;
    char code[6];
    char message[200];
    char detail[200];
};

enum auth_step {
    AUTH_STEP_CONTINUE, /* out holds AuthenticationSASLContinue */
    AUTH_STEP_OK,       /* out holds AuthenticationSASLFinal */
    AUTH_STEP_FAILED,   /* wrong password, unknown user: 28P01 after the delay */
    AUTH_STEP_ERROR,    /* code/message/detail: a protocol error, answered at once */
};

/* Starts an exchange: the user's secret (or a mock one), the certificate hash for -PLUS
 * (cbind_len 0: not offered). Writes AuthenticationSASL to out. */
void auth_sasl_begin(struct auth_sasl *a, const struct auth_conf *conf, const char *user,
                     const uint8_t *cbind, size_t cbind_len, struct wire_buf *out);
/* One client message (type byte, payload). server_nonce: printable, for the first round. */
enum auth_step auth_sasl_message(struct auth_sasl *a, uint8_t type, const uint8_t *payload,
                                 size_t len, const char *server_nonce, struct wire_buf *out);
/* The largest client message accepted during the exchange (type and length word excluded). */
#define AUTH_SASL_MAX_MESSAGE (SCRAM_MAX_MESSAGE + 64)

#endif
