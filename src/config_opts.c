/* The option table: every flag, config key and environment variable, its type, range and
 * --help line. Data only; config.c reads it. */
#include "config.h"
#include "config_int.h"

#include <stddef.h>

static const char *const on_limit_choices[] = {"error", "truncate", "warn", NULL};
static const char *const tls_mode_choices[] = {"allow", "require", NULL};
static const char *const log_format_choices[] = {"text", "json", NULL};
static const char *const log_level_choices[] = {"error", "warn", "info", "debug", NULL};
static const char *const tls_cc_choices[] = {"none", "require", NULL};
static const char *const tls_ver_choices[] = {"1.2", "1.3", NULL};
static const char *const protocol_choices[] = {"reject", "allow", NULL};
static const char *const auth_type_choices[] = {"trust", "scram-sha-256", "cert", "hba", NULL};

const struct config_opt config_opts[] = {
    {"listen", OPT_LISTEN, CONFIG_OFF(listen_host), NULL, 0, 0, "HOST:PORT",
     "address to accept clients on (default 127.0.0.1:5433)"},
    {"unix-socket-dir", OPT_STR, CONFIG_OFF(unix_socket_dir), NULL, 0, 0, "DIR",
     "also accept clients on the Unix socket DIR/.s.PGSQL.<port>, like PostgreSQL (default off)"},
    {"unix-socket-mode", OPT_MODE, CONFIG_OFF(unix_socket_mode), NULL, 0, 0777, "MODE",
     "permissions of that socket, in octal (default 0777)"},
    {"upstream", OPT_STR, CONFIG_OFF(upstream_dsn), NULL, 0, 0, "DSN",
     "upstream PostgreSQL as a libpq conninfo string or URI (required)"},
    {"max-connections", OPT_INT, CONFIG_OFF(max_connections), NULL, 1, 100000, "N",
     "client sessions at once; more get FATAL 53300 (default 100)"},
    {"workers", OPT_INT, CONFIG_OFF(workers), NULL, 0, 256, "N",
     "event-loop threads; 0 = one per two CPUs (default 0)"},
    {"query-timeout", OPT_DURATION, CONFIG_OFF(query_timeout_ms), NULL, 0, 0, "DURATION",
     "per-statement deadline, also sent upstream as statement_timeout; 0 = off (default 30s)"},
    {"idle-in-transaction-timeout", OPT_DURATION, CONFIG_OFF(idle_tx_timeout_ms), NULL, 0, 0,
     "DURATION", "sent upstream as idle_in_transaction_session_timeout; 0 = server default"},
    {"startup-timeout", OPT_DURATION, CONFIG_OFF(startup_timeout_ms), NULL, 0, 0, "DURATION",
     "a client must finish its startup packet within this (default 10s)"},
    {"max-startup-connections", OPT_INT, CONFIG_OFF(max_startup_connections), NULL, 1, 100000, "N",
     "connections not yet through startup, all addresses; more get FATAL 53300 (default 1000)"},
    {"max-startup-per-address", OPT_INT, CONFIG_OFF(max_startup_per_address), NULL, 1, 100000, "N",
     "of those, from one client address (IPv6: one /64); more get FATAL 53300 (default 64)"},
    {"proxy-protocol-from", OPT_LIST, CONFIG_OFF(proxy_protocol_from), NULL, 0, 0, "CIDR,...",
     "load balancers whose connections must start with a PROXY v1/v2 header (default none)"},
    {"shutdown-timeout", OPT_DURATION, CONFIG_OFF(shutdown_timeout_ms), NULL, 0, 0, "DURATION",
     "on SIGTERM, how long open statements and transactions may finish (default 30s)"},
    {"client-write-timeout", OPT_DURATION, CONFIG_OFF(client_write_timeout_ms), NULL, 0, 0,
     "DURATION",
     "close a client that accepts no result bytes for this long; 0 = off (default 60s)"},
    {"cancel-grace", OPT_DURATION, CONFIG_OFF(cancel_grace_ms), NULL, 0, 0, "DURATION",
     "how long a canceled statement may take to end before its backend is terminated "
     "(default 10s)"},
    {"max-client-memory", OPT_SIZE, CONFIG_OFF(max_client_memory), NULL, 0, 0, "SIZE",
     "memory all sessions together may hold in buffered client messages; 0 = off "
     "(default 256MB)"},
    {"max-rows", OPT_SIZE, CONFIG_OFF(max_rows), NULL, 0, 0, "N",
     "rows one statement may return; 0 = off (default 10000)"},
    {"max-bytes", OPT_SIZE, CONFIG_OFF(max_bytes), NULL, 0, 0, "SIZE",
     "result bytes one statement may return; 0 = off (default 100MB)"},
    {"max-message-size", OPT_SIZE, CONFIG_OFF(max_message_bytes), NULL, 0, 0, "SIZE",
     "largest message a client may send, e.g. a long query (default 64MB)"},
    {"on-limit", OPT_ENUM, CONFIG_OFF(on_limit), on_limit_choices, 0, 0, "error|truncate|warn",
     "what a row/byte limit does: fail the statement, deliver the first rows and warn, or only "
     "record it (audit, log, metrics) and deliver everything"},
    {"deny", OPT_LIST, CONFIG_OFF(deny), NULL, 0, 0, "RULE",
     "deny a statement kind (drop, truncate, ...), function:NAME or group:NAME; shadow:RULE only "
     "records what it would deny; repeatable"},
    {"allow", OPT_LIST, CONFIG_OFF(allow), NULL, 0, 0, "RULE",
     "allow only these statement kinds / functions / group:NAME; shadow:RULE entries form a list "
     "that only records; repeatable"},
    {"permit", OPT_LIST, CONFIG_OFF(permit), NULL, 0, 0, "RULE",
     "function:NAME, group:NAME or do: an exception to the always-refused classes; repeatable"},
    {"max-parse-size", OPT_SIZE, CONFIG_OFF(max_parse_size), NULL, 0, 0, "SIZE",
     "largest statement text the policy parses; larger ones get 54001 (default 1MB)"},
    {"peer-id", OPT_INT, CONFIG_OFF(peer_id), NULL, 0, 255, "N",
     "this instance's id (1-255) in cancel keys, for cancel routing between instances"},
    {"peer", OPT_LIST, CONFIG_OFF(peers), NULL, 0, 0, "ID=HOST:PORT",
     "another instance's id and client address; its cancels are forwarded there; repeatable"},
    {"cancel-rate-limit", OPT_INT, CONFIG_OFF(cancel_rate_limit), NULL, 0, 1000000, "N",
     "CancelRequests per second per client address, bursts of 5 s worth; 0 = off (default 20)"},
    {"read-only", OPT_BOOL, CONFIG_OFF(read_only), NULL, 0, 0, NULL,
     "deny every write (ERROR 25006) and set default_transaction_read_only upstream"},
    {"extended-protocol", OPT_ENUM, CONFIG_OFF(extended_protocol), protocol_choices, 0, 0,
     "reject|allow",
     "relay the extended query protocol (Parse/Bind/Execute) under the same guardrails, or "
     "refuse it with 0A000 (default reject)"},
    {"copy", OPT_ENUM, CONFIG_OFF(copy), protocol_choices, 0, 0, "reject|allow",
     "relay COPY FROM STDIN / TO STDOUT under the same guardrails, or refuse it with 0A000 "
     "(default reject)"},
    {"policy-cache", OPT_BOOL, CONFIG_OFF(policy_cache), NULL, 0, 0, NULL,
     "cache policy decisions per statement shape (default on)"},
    {"tls-cert", OPT_STR, CONFIG_OFF(tls_cert), NULL, 0, 0, "FILE",
     "PEM certificate for client TLS"},
    {"tls-key", OPT_STR, CONFIG_OFF(tls_key), NULL, 0, 0, "FILE", "PEM private key for client TLS"},
    {"tls-ca", OPT_STR, CONFIG_OFF(tls_ca), NULL, 0, 0, "FILE",
     "PEM CA bundle to verify client certs"},
    {"tls-mode", OPT_ENUM, CONFIG_OFF(tls_mode), tls_mode_choices, 0, 0, "allow|require",
     "require refuses plaintext clients with FATAL 28000 (default allow)"},
    {"tls-client-cert", OPT_ENUM, CONFIG_OFF(tls_client_cert_required), tls_cc_choices, 0, 0,
     "none|require", "require a client certificate signed by --tls-ca"},
    {"tls-min-version", OPT_ENUM, CONFIG_OFF(tls_min_version), tls_ver_choices, 0, 0, "1.2|1.3",
     "lowest TLS version accepted (default 1.2)"},
    {"metrics-listen", OPT_STR, CONFIG_OFF(metrics_listen), NULL, 0, 0, "HOST:PORT",
     "serve Prometheus /metrics and /healthz here (default off)"},
    {"log-level", OPT_ENUM, CONFIG_OFF(log_level), log_level_choices, 0, 0, "error|warn|info|debug",
     "log verbosity (default info)"},
    {"log-format", OPT_ENUM, CONFIG_OFF(log_format), log_format_choices, 0, 0, "text|json",
     "log line format (default text)"},
    {"audit-log", OPT_STR, CONFIG_OFF(audit_log), NULL, 0, 0, "FILE|-",
     "append one JSON line per statement to FILE (- = stderr)"},
    {"audit-redact", OPT_BOOL, CONFIG_OFF(audit_redact), NULL, 0, 0, NULL,
     "replace literals in audited statements with $n"},
    {"allow-core-dumps", OPT_BOOL, CONFIG_OFF(allow_core_dumps), NULL, 0, 0, NULL,
     "let the process dump core (off by default: a core would hold the DSN's password)"},
    {"auth-type", OPT_ENUM, CONFIG_OFF(auth_type), auth_type_choices, 0, 0,
     "trust|scram-sha-256|cert|hba",
     "how clients prove who they are: trust (the name they claim, default), SCRAM-SHA-256 "
     "against --auth-file, a client certificate whose CN is the user, or --auth-hba-file"},
    {"auth-file", OPT_STR, CONFIG_OFF(auth_file), NULL, 0, 0, "FILE",
     "users and SCRAM verifiers (or passwords) in PgBouncer's userlist.txt format; reloaded on "
     "SIGHUP"},
    {"auth-hba-file", OPT_STR, CONFIG_OFF(auth_hba_file), NULL, 0, 0, "FILE",
     "pg_hba.conf rules (local/host/hostssl/hostnossl; trust, reject, scram-sha-256, cert, peer) "
     "for --auth-type hba"},
    {"auth-secret-file", OPT_STR, CONFIG_OFF(auth_secret_file), NULL, 0, 0, "FILE",
     "server secret that unknown users' SCRAM salts derive from, made (0600) on first start "
     "(default <auth-file>.secret)"},
    {"auth-failure-delay", OPT_DURATION, CONFIG_OFF(auth_failure_delay_ms), NULL, 0, 0, "DURATION",
     "answer a failed authentication this much later, without blocking others (default 1s)"},
    {"admin-users", OPT_LIST, CONFIG_OFF(admin_users), NULL, 0, 0, "USER,...",
     "users who may open the console, database pgwire_proxy (default none: console off)"},
    {"admin-trust-loopback", OPT_BOOL, CONFIG_OFF(admin_trust_loopback), NULL, 0, 0, NULL,
     "under --auth-type trust, let admin users open the console over loopback TCP by name "
     "alone (weaker: any local process can)"},
    {"statement-stats", OPT_INT, CONFIG_OFF(statement_stats), NULL, 0, 1000000, "N",
     "statement statistics entries kept per fingerprint, least recently used evicted; 0 = off "
     "(default 5000)"},
    {"config", OPT_STR, CONFIG_OFF(config_file), NULL, 0, 0, "FILE",
     "INI file with the same keys as the flags (flags > env > file > defaults)"},
};

const size_t config_nopts = sizeof(config_opts) / sizeof(config_opts[0]);
_Static_assert(sizeof(config_opts) / sizeof(config_opts[0]) <= CONFIG_OPTS_MAX,
               "raise CONFIG_OPTS_MAX: the loader keeps one slot per option");
