/* Option table, defaults, flags/env/file precedence and validation. Touches no sockets. */
#ifndef PGWP_CONFIG_H
#define PGWP_CONFIG_H

#include "proxy_proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_MAX_RULES 64

/* --on-limit: what a row/byte budget does when a statement goes past it. WARN is its shadow
 * form: the statement runs to its end unchanged and the audit, log and metrics record it. */
enum config_on_limit { CONFIG_ON_LIMIT_ERROR, CONFIG_ON_LIMIT_TRUNCATE, CONFIG_ON_LIMIT_WARN };
enum config_tls_mode { CONFIG_TLS_ALLOW, CONFIG_TLS_REQUIRE };
enum config_log_format { CONFIG_LOG_TEXT, CONFIG_LOG_JSON };
enum config_protocol { CONFIG_REJECT, CONFIG_ALLOW };
enum config_auth_type { CONFIG_AUTH_TRUST, CONFIG_AUTH_SCRAM, CONFIG_AUTH_CERT, CONFIG_AUTH_HBA };

#define CONFIG_MAX_USERS 1024 /* [user:NAME] sections */
#define CONFIG_USER_MAX  64   /* a user name with its NUL, as a session keeps it */

#define CONFIG_STATEMENT_STATS_DEFAULT 5000 /* --statement-stats */

struct config;

/* A [user:NAME] section: the top-level configuration with the section's keys applied. */
struct config_user {
    char name[CONFIG_USER_MAX];
    struct config *cfg;  /* effective configuration (its own users list is empty) */
    int max_connections; /* a ceiling for this user's sessions; 0 = none */
    int line;            /* where the section starts, for messages */
};

struct config {
    char listen_host[256];
    int listen_port;
    char *unix_socket_dir; /* NULL = no Unix-domain socket */
    int unix_socket_mode;  /* permissions of the socket file */
    char *upstream_dsn;
    int max_connections;
    int workers;                 /* event-loop threads; 0 = one per two CPUs */
    uint64_t query_timeout_ms;   /* 0 = off */
    uint64_t idle_tx_timeout_ms; /* 0 = off (upstream default) */
    uint64_t startup_timeout_ms;
    int max_startup_connections; /* connections not yet admitted, all addresses together */
    int max_startup_per_address; /* of those, from one client address */
    char *proxy_protocol_from[CONFIG_MAX_RULES]; /* CIDRs that send a PROXY header */
    size_t nproxy_protocol_from;
    struct proxy_proto_cidr proxy_from[CONFIG_MAX_RULES]; /* parsed by validation */
    uint64_t shutdown_timeout_ms;
    uint64_t client_write_timeout_ms; /* client accepts no bytes for this long: closed */
    uint64_t cancel_grace_ms;         /* a canceled statement must end this soon */
    uint64_t max_client_memory;       /* all sessions' buffered client messages; 0 = off */
    uint64_t max_rows;                /* 0 = off */
    uint64_t max_bytes;               /* 0 = off */
    uint64_t max_message_bytes;       /* largest client message accepted */
    enum config_on_limit on_limit;
    char *deny[CONFIG_MAX_RULES];
    size_t ndeny;
    char *allow[CONFIG_MAX_RULES];
    size_t nallow;
    char *permit[CONFIG_MAX_RULES]; /* exceptions to the always-refused policy classes */
    size_t npermit;
    uint64_t max_parse_size;       /* largest text the policy parses; not reloadable */
    char *peers[CONFIG_MAX_RULES]; /* "ID=HOST:PORT" of other instances, for cancel routing */
    size_t npeers;
    int peer_id;           /* this instance's id (1..255) encoded in cancel keys; 0 = no peering */
    int cancel_rate_limit; /* CancelRequests per second per client address; 0 = no limit */
    bool read_only;
    bool policy_cache;
    enum config_protocol extended_protocol; /* Parse/Bind/Execute relayed or refused */
    enum config_protocol copy;              /* COPY relayed or refused */
    char *tls_cert;
    char *tls_key;
    char *tls_ca;
    enum config_tls_mode tls_mode;
    bool tls_client_cert_required;
    int tls_min_version;  /* index into "1.2", "1.3": 0 = TLS 1.2, 1 = TLS 1.3 */
    char *metrics_listen; /* NULL = off */
    int log_level;        /* enum log_level */
    enum config_log_format log_format;
    char *audit_log; /* NULL = off, "-" = stderr */
    bool audit_redact;
    bool allow_core_dumps; /* else the process is made non-dumpable: cores hold the DSN */
    char *config_file;
    int auth_type;                  /* enum config_auth_type */
    char *auth_file;                /* userlist.txt */
    char *auth_hba_file;            /* pg_hba.conf subset */
    char *auth_secret_file;         /* mock salts' server secret; NULL = <auth-file>.secret */
    uint64_t auth_failure_delay_ms; /* a failed authentication is answered this much later */
    struct config_user *users;      /* [user:NAME] sections, sorted by name */
    size_t nusers;
    /* the console (config_admin.c) and the statement statistics */
    char *admin_users[CONFIG_MAX_RULES]; /* who may open the console (database pgwire_proxy) */
    size_t nadmin_users;
    bool admin_trust_loopback; /* under trust: the console takes claimed names on loopback */
    int statement_stats;       /* statistics rows per worker; 0 = off */
};

enum config_result {
    CONFIG_OK = 0,
    CONFIG_EXIT_OK = 1, /* --help / --version printed: exit 0 */
    CONFIG_ERROR = 2,   /* err holds one line: exit 2 */
};

void config_defaults(struct config *c);
void config_free(struct config *c);

/* Builds a config from defaults < file < env < flags. envp may be NULL (then environ). Output
 * for --help/--version goes to out. */
enum config_result config_load(struct config *c, int argc, char **argv, char **envp, void *out,
                               char *err, size_t errlen);

/* Loads a fresh config from the original argv/envp (the config file is re-read, precedence
 * kept), exactly like config_load: c's previous contents are neither read nor freed, so pass
 * a new struct and keep the running one until this succeeds. Used by SIGHUP reload. */
enum config_result config_reload(struct config *c, int argc, char **argv, char **envp, char *err,
                                 size_t errlen);

/* The profile of a user (its [user:NAME] section), or NULL. */
const struct config_user *config_find_user(const struct config *c, const char *name);

/* A deep copy of src without its users (for a profile's effective configuration). 0 or -1. */
int config_copy(struct config *dst, const struct config *src);
/* Applies one key = value to c as a profile does: a list value replaces the list (on the first
 * key of that name; later ones add). 0, or -1 with err ("invalid value ..."). */
int config_apply_key(struct config *c, const char *key, const char *value, bool first, char *err,
                     size_t errlen);
/* The guard policy and DSN of c are usable (what validation checks at the top level). */
int config_check_policy(const struct config *c, char *err, size_t errlen);

/* Value parsers, exposed for tests. Return 0 or -EINVAL. */
int config_parse_duration_ms(const char *s, uint64_t *out);
int config_parse_size(const char *s, uint64_t *out);
int config_parse_hostport(const char *s, char *host, size_t hostlen, int *port);
/* "ID=HOST:PORT" with ID 1..255. */
int config_parse_peer(const char *s, int *id, char *host, size_t hostlen, int *port);

/* The policy rules of c (pointers into c). */
struct guard_rules;
void config_guard_rules(const struct config *c, struct guard_rules *r);

/* The DSN as libpq reads it, every password replaced by "********", for logs; a fixed text
 * for a DSN that does not parse (upstream_dsn_redact). Caller frees. */
char *config_redact_dsn(const char *dsn);

/* --- the option table read back, for the console's SHOW CONFIG (config_show.c) --- */
enum config_option_kind {
    CONFIG_KIND_STR,       /* char * (NULL = unset) */
    CONFIG_KIND_INT,       /* int */
    CONFIG_KIND_MS,        /* uint64_t milliseconds */
    CONFIG_KIND_U64,       /* uint64_t (sizes, counts) */
    CONFIG_KIND_BOOL,      /* bool */
    CONFIG_KIND_LIST,      /* char *[count] */
    CONFIG_KIND_ENUM,      /* int index into choices */
    CONFIG_KIND_ENUM_BOOL, /* bool: choices[0] or choices[1] */
    CONFIG_KIND_LISTEN,    /* listen_host and listen_port */
    CONFIG_KIND_MODE,      /* int, octal permissions */
};

struct config_option {
    const char *name; /* as the flag, without "--" */
    enum config_option_kind kind;
    const void *field; /* in the config given */
    const char *const *choices;
    size_t count; /* lists: entries */
};

/* Option i of the table, read in c; false past the last. */
bool config_option_at(const struct config *c, size_t i, struct config_option *out);
/* The option's value as --help spells values ("30s", "on", "a,b"); the DSN with its passwords
 * replaced. Returns buf. */
const char *config_option_text(const struct config *c, const struct config_option *o, char *buf,
                               size_t len);
/* When SIGHUP applies the option: "yes" (new statements), "new connections" or "no" (only a
 * restart). */
const char *config_option_reload(const char *name);

/* --- the console's options (config_admin.c) --- */
/* --admin-users names a user name at most once each, each a user name a session can have. 0, or
 * -1 with err. */
int config_admin_validate(const struct config *c, char *err, size_t errlen);
/* True when user is one of --admin-users. */
bool config_is_admin(const struct config *c, const char *user);

#endif
