/* Why a session ends: one vocabulary for every layer, read by one cleanup path. Each reason
 * names the side that caused it, so logs and metrics blame the right party. */
#ifndef PGWP_END_H
#define PGWP_END_H

enum session_end {
    SE_NONE = 0,
    SE_CLIENT_EXIT,     /* Terminate message */
    SE_CLIENT_EOF,      /* client closed the socket */
    SE_CLIENT_ERROR,    /* client socket error / write failed */
    SE_CLIENT_STALLED,  /* client stopped reading results */
    SE_PROTOCOL,        /* malformed input from the client */
    SE_STARTUP_TIMEOUT, /* no complete startup in time */
    SE_CANCEL_REQUEST,  /* connection only carried a CancelRequest */
    SE_REJECTED,        /* connection limit, TLS required, bad startup */
    SE_AUTH_FAILED,     /* the client did not prove its identity */
    SE_UPSTREAM_CONNECT,
    SE_UPSTREAM_LOST, /* upstream closed, failed, or broke the protocol */
    SE_GUARDRAIL,     /* a guardrail ended the session (read-only lost, idle timeout, ...) */
    SE_SHUTDOWN,
    SE_KILLED,   /* the console's KILL */
    SE_INTERNAL, /* out of memory and other failures of the proxy itself */
};

const char *session_end_name(enum session_end e);

#endif
