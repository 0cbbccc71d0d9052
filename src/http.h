/* Metrics/health HTTP endpoint (libmicrohttpd, its own thread: never on the relay path). */
#ifndef PGWP_HTTP_H
#define PGWP_HTTP_H

#include <stddef.h>

struct http_server;

/* health(arg, reason, len) returns 1 when healthy (200 "ok"), 0 otherwise (503 "unavailable:
 * <reason>"); NULL means always healthy. It runs on the HTTP thread, so it must answer quickly
 * and only read state that is safe to read concurrently.
 * host is a numeric IPv4/IPv6 address (NULL or "" = any); port 0 lets the kernel pick. On
 * failure returns NULL with err like "cannot listen on 127.0.0.1:9187: Address already in use". */
typedef int (*http_health_fn)(void *arg, char *reason, size_t len);
struct http_server *http_start(const char *host, int port, http_health_fn health, void *arg,
                               char *err, size_t errlen);
/* The port actually bound: the configured one, or the kernel's choice when started with 0. */
int http_port(const struct http_server *s);
void http_stop(struct http_server *s);

#endif
