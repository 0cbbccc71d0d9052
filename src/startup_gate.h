/* The gate before a session's startup: --max-startup-* counting per client address (on the
 * accepting thread, before a session exists) and the PROXY protocol header that names the
 * client behind a --proxy-protocol-from load balancer. */
#ifndef PGWP_STARTUP_GATE_H
#define PGWP_STARTUP_GATE_H

#include "end.h"
#include "session.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct admission;
struct config;

/* A load balancer sends its PROXY header at once: a listed source that does not is closed. */
#define STARTUP_GATE_HEADER_TIMEOUT_MS 3000

/* At accept: counts the connection by its address (acc->counted), or marks it to send a
 * PROXY header first (acc->proxy_pending; counted once the header names the client). False:
 * refused with FATAL 53300 and fd closed. */
bool startup_gate_accept(struct admission *adm, const struct config *cfg, int fd,
                         struct session_accept *acc);
/* Leaves the --max-startup-* count: at admission, or when the connection ends before it. */
void startup_gate_leave(struct admission *adm, struct session_accept *acc);

/* "ip:port", or [local] for a Unix-domain socket. */
void startup_gate_format_peer(const struct sockaddr_storage *peer, char *out, size_t len);

struct session;
/* Reads and consumes the PROXY header of a --proxy-protocol-from connection, then counts it by
 * the address the header names. SE_NONE while it waits (acc.proxy_pending stays set). */
enum session_end startup_gate_read_proxy_header(struct session *s);

#endif
