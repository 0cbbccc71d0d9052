/* Pure PostgreSQL protocol 3.0 codec: framing, bounds-checked readers, builders.
 * No I/O and no allocation: builders write into a caller-owned struct wire_buf. */
#ifndef PGWP_WIRE_H
#define PGWP_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WIRE_PROTO_3_0           196608u   /* 3 << 16 */
#define WIRE_SSL_REQUEST_CODE    80877103u /* 1234 << 16 | 5679 */
#define WIRE_GSSENC_REQUEST_CODE 80877104u /* 1234 << 16 | 5680 */
#define WIRE_CANCEL_REQUEST_CODE 80877102u /* 1234 << 16 | 5678 */
/* A CancelRequest one pgwire-proxy instance forwards to the peer that owns the key: the same
 * packet under a code of its own, so the receiver knows not to route it onward again. */
#define WIRE_PEER_CANCEL_CODE   80877114u /* 1234 << 16 | 5690 */
#define WIRE_MAX_STARTUP_LEN    10000u    /* PostgreSQL's MAX_STARTUP_PACKET_LENGTH */
#define WIRE_MAX_STARTUP_PARAMS 64
#define WIRE_NEWEST_MINOR       0u /* newest 3.x minor version we speak */

/* Errors are negative; 0 or positive means success. */
enum wire_err {
    WIRE_OK = 0,
    WIRE_NEED_MORE = -1, /* not enough bytes yet */
    WIRE_BAD_LENGTH = -2,
    WIRE_TOO_LONG = -3,
    WIRE_MALFORMED = -4,
    WIRE_NO_SPACE = -5,
};

const char *wire_strerror(int err);

static inline uint32_t wire_get_u32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint16_t wire_get_u16(const uint8_t *p)
{
    return (uint16_t)(((unsigned)p[0] << 8) | p[1]);
}
static inline void wire_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Parse, Bind, Describe, Execute, Close, Flush: the extended protocol's requests (Sync means
 * something with the simple protocol too, and FunctionCall is a protocol of its own). */
static inline bool wire_is_ext_request(char type)
{
    switch (type) {
    case 'P':
    case 'B':
    case 'D':
    case 'E':
    case 'C':
    case 'H':
        return true;
    }
    return false;
}

/* A typed message header: type byte plus the length word (which counts itself). */
struct wire_hdr {
    char type;
    uint32_t len; /* length word as sent: body length + 4 */
    size_t total; /* bytes on the wire: 1 + len */
};

/* Reads one typed header from buf. Returns WIRE_OK, WIRE_NEED_MORE (fewer than 5 bytes),
 * WIRE_BAD_LENGTH (len < 4) or WIRE_TOO_LONG (len > max_len). */
int wire_read_hdr(const uint8_t *buf, size_t avail, uint32_t max_len, struct wire_hdr *out);

/* --- untyped startup-phase packets --- */
enum wire_startup_kind {
    WIRE_PKT_STARTUP = 1,
    WIRE_PKT_SSL,
    WIRE_PKT_GSSENC,
    WIRE_PKT_CANCEL,
};

struct wire_param {
    const char *name;  /* points into the packet */
    const char *value; /* points into the packet */
};

struct wire_startup {
    enum wire_startup_kind kind;
    uint32_t version; /* protocol version or request code */
    /* CancelRequest */
    uint32_t cancel_pid;
    uint32_t cancel_secret;
    bool cancel_from_peer; /* sent with WIRE_PEER_CANCEL_CODE */
    /* StartupMessage */
    struct wire_param params[WIRE_MAX_STARTUP_PARAMS];
    size_t nparams;
};

/* Length of the untyped packet at buf (from its length word): WIRE_NEED_MORE when fewer than 4
 * bytes, WIRE_BAD_LENGTH when < 8, WIRE_TOO_LONG when > WIRE_MAX_STARTUP_LEN. */
int wire_startup_len(const uint8_t *buf, size_t avail, uint32_t *len);

/* Parses a complete untyped packet of exactly len bytes (length word included). The packet
 * must be writable-stable: names/values point into it. Returns WIRE_OK or WIRE_MALFORMED. */
int wire_parse_startup(const uint8_t *pkt, uint32_t len, struct wire_startup *out);

const char *wire_startup_get(const struct wire_startup *s, const char *name);

/* --- ErrorResponse / NoticeResponse fields --- */
struct wire_error_fields {
    const char *severity; /* 'S' and 'V' */
    const char *code;     /* 'C' */
    const char *message;  /* 'M' */
    const char *detail;   /* 'D' */
    const char *hint;     /* 'H' */
    uint32_t position;    /* 'P', 0 = absent */
};

/* Extracts the SQLSTATE ('C' field) of an ErrorResponse body into code[6]. */
int wire_error_code(const uint8_t *body, size_t len, char code[6]);
/* Extracts severity ('V', else 'S') into sev (NUL-terminated, truncated to sevlen). */
int wire_error_severity(const uint8_t *body, size_t len, char *sev, size_t sevlen);

/* --- builders --- */
struct wire_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
    bool overflow; /* set when a write did not fit; len is then unchanged by that write */
};

void wire_buf_init(struct wire_buf *b, uint8_t *storage, size_t cap);
void wire_build_auth_ok(struct wire_buf *b);
/* An Authentication message: code (10 SASL, 11 SASLContinue, 12 SASLFinal) and its data. */
void wire_build_auth(struct wire_buf *b, uint32_t code, const void *data, size_t len);
void wire_build_param_status(struct wire_buf *b, const char *name, const char *value);
void wire_build_backend_key(struct wire_buf *b, uint32_t pid, uint32_t secret);
void wire_build_rfq(struct wire_buf *b, char status);
void wire_build_error(struct wire_buf *b, char type, const struct wire_error_fields *f);
/* A FATAL ErrorResponse the proxy sends before it closes a session; when the detail does not
 * fit, the message goes without it rather than not at all. */
void wire_build_fatal(struct wire_buf *b, const char *code, const char *message,
                      const char *detail);
void wire_build_negotiate(struct wire_buf *b, uint32_t newest_minor, const char *const *opts,
                          size_t nopts);
void wire_build_query(struct wire_buf *b, const char *sql);
void wire_build_copy_fail(struct wire_buf *b, const char *msg);
void wire_build_command_complete(struct wire_buf *b, const char *tag);

/* ParameterStatus body: name NUL value NUL, nothing after. Returns WIRE_OK or WIRE_MALFORMED;
 * name and value point into body. */
int wire_parse_param_status(const uint8_t *body, size_t len, const char **name, const char **value);

/* --- extended-protocol client messages: strict parsers (as PostgreSQL reads them) ---
 * Each takes the message body (after type and length) and returns WIRE_OK, or WIRE_MALFORMED
 * with *why set to PostgreSQL's own complaint. Strings point into the body. */
struct wire_parse_msg {
    const char *name;
    const char *query;
    size_t query_len;
    uint16_t nparams;
};
struct wire_bind_msg {
    const char *portal;
    const char *stmt;
    uint16_t nformats;      /* parameter format codes */
    const uint8_t *formats; /* nformats int16s */
    uint16_t nparams;
    const uint8_t *params; /* nparams × (int32 length, bytes); length -1 = NULL */
    size_t params_len;
};
int wire_parse_parse(const uint8_t *body, size_t len, struct wire_parse_msg *out, const char **why);
int wire_parse_bind(const uint8_t *body, size_t len, struct wire_bind_msg *out, const char **why);
/* Describe and Close: 'S' or 'P', then a name. */
int wire_parse_target(const uint8_t *body, size_t len, char *kind, const char **name,
                      const char **why, const char *what);
int wire_parse_execute(const uint8_t *body, size_t len, const char **portal, uint32_t *max_rows,
                       const char **why);
/* Walks the parameters of a parsed Bind: *pos starts at 0. Returns false at the end. */
bool wire_bind_param(const struct wire_bind_msg *b, size_t *pos, int32_t *len,
                     const uint8_t **value);
/* Format code of parameter i (0 text, 1 binary). */
uint16_t wire_bind_format(const struct wire_bind_msg *b, uint16_t i);

void wire_build_parse(struct wire_buf *b, const char *name, const char *query);
void wire_build_flush(struct wire_buf *b);

/* Parses the tx status from a ReadyForQuery body; returns 0 if invalid. */
char wire_rfq_status(const uint8_t *body, size_t len);

#endif
