/* The gate before a session's startup: --max-startup-* counting per client address and the
 * PROXY protocol header from --proxy-protocol-from sources. Small, carried over as a unit. */
#ifndef PGWP_STARTUP_GATE_H
#define PGWP_STARTUP_GATE_H

#include "session.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct server;
struct config;
struct session;

/* A load balancer sends its PROXY header at once: a listed source that does not is closed. */
#define STARTUP_GATE_HEADER_TIMEOUT_MS 3000

/* At accept: counts the connection against --max-startup-* by its address, or marks it to
 * send a PROXY header first (s->proxy_pending; counted once the header names the client).
 * False: refused with FATAL 53300 and fd closed (the session is not started). */
bool startup_gate_accept(struct server *srv, const struct config *cfg, int fd,
                         const struct sockaddr_storage *peer, struct session *s);

/* Leaves the --max-startup-* count: at admission, or when the connection ends before it. */
void startup_gate_leave(struct session *s);

/* Reads and consumes the PROXY header of a --proxy-protocol-from connection, then counts the
 * connection by the address it names. SE_NONE while it waits (s->proxy_pending stays set). */
enum session_end startup_gate_read_proxy_header(struct session *s);

/* A PROXY header from a source not in --proxy-protocol-from: logged, the connection ends. */
enum session_end startup_gate_unexpected_header(struct session *s);

void startup_gate_format_peer(const struct sockaddr_storage *peer, char *out, size_t len);

#endif
