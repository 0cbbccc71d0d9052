#include "wire.h"

#include <string.h>

const char *wire_strerror(int err)
{
    switch (err) {
    case WIRE_OK:
        return "ok";
    case WIRE_NEED_MORE:
        return "incomplete message";
    case WIRE_BAD_LENGTH:
        return "invalid message length";
    case WIRE_TOO_LONG:
        return "message length exceeds the maximum";
    case WIRE_MALFORMED:
        return "malformed message";
    case WIRE_NO_SPACE:
        return "no buffer space";
    }
    return "unknown error";
}

int wire_read_hdr(const uint8_t *buf, size_t avail, uint32_t max_len, struct wire_hdr *out)
{
    if (avail < 5)
        return WIRE_NEED_MORE;
    uint32_t len = wire_get_u32(buf + 1);
    if (len < 4)
        return WIRE_BAD_LENGTH;
    if (len > max_len)
        return WIRE_TOO_LONG;
    out->type = (char)buf[0];
    out->len = len;
    out->total = (size_t)len + 1;
    return WIRE_OK;
}

int wire_startup_len(const uint8_t *buf, size_t avail, uint32_t *len)
{
    if (avail < 4)
        return WIRE_NEED_MORE;
    uint32_t l = wire_get_u32(buf);
    if (l < 8)
        return WIRE_BAD_LENGTH;
    if (l > WIRE_MAX_STARTUP_LEN)
        return WIRE_TOO_LONG;
    *len = l;
    return WIRE_OK;
}

/* Reads a NUL-terminated string at *pos within [0, len); advances past the NUL. */
static const char *read_cstr(const uint8_t *pkt, uint32_t len, uint32_t *pos)
{
    const uint8_t *start = pkt + *pos;
    const uint8_t *nul = memchr(start, 0, len - *pos);
    if (!nul)
        return NULL;
    *pos = (uint32_t)(nul - pkt) + 1;
    return (const char *)start;
}

static int parse_params(const uint8_t *pkt, uint32_t len, struct wire_startup *out)
{
    uint32_t pos = 8;
    out->nparams = 0;
    for (;;) {
        if (pos >= len)
            return WIRE_MALFORMED; /* missing final terminator */
        if (pkt[pos] == 0)
            return pos + 1 == len ? WIRE_OK : WIRE_MALFORMED;
        const char *name = read_cstr(pkt, len, &pos);
        if (!name || pos >= len)
            return WIRE_MALFORMED;
        const char *value = read_cstr(pkt, len, &pos);
        if (!value)
            return WIRE_MALFORMED;
        if (out->nparams == WIRE_MAX_STARTUP_PARAMS)
            return WIRE_MALFORMED;
        out->params[out->nparams].name = name;
        out->params[out->nparams].value = value;
        out->nparams++;
    }
}

int wire_parse_startup(const uint8_t *pkt, uint32_t len, struct wire_startup *out)
{
    if (len < 8 || wire_get_u32(pkt) != len)
        return WIRE_MALFORMED;
    memset(out, 0, sizeof(*out));
    out->version = wire_get_u32(pkt + 4);
    switch (out->version) {
    case WIRE_SSL_REQUEST_CODE:
        out->kind = WIRE_PKT_SSL;
        return len == 8 ? WIRE_OK : WIRE_MALFORMED;
    case WIRE_GSSENC_REQUEST_CODE:
        out->kind = WIRE_PKT_GSSENC;
        return len == 8 ? WIRE_OK : WIRE_MALFORMED;
    case WIRE_PEER_CANCEL_CODE:
    case WIRE_CANCEL_REQUEST_CODE:
        out->kind = WIRE_PKT_CANCEL;
        out->cancel_from_peer = out->version == WIRE_PEER_CANCEL_CODE;
        if (len != 16)
            return WIRE_MALFORMED;
        out->cancel_pid = wire_get_u32(pkt + 8);
        out->cancel_secret = wire_get_u32(pkt + 12);
        return WIRE_OK;
    default:
        out->kind = WIRE_PKT_STARTUP;
        return parse_params(pkt, len, out);
    }
}

const char *wire_startup_get(const struct wire_startup *s, const char *name)
{
    for (size_t i = 0; i < s->nparams; i++)
        if (strcmp(s->params[i].name, name) == 0)
            return s->params[i].value;
    return NULL;
}

/* Walks the fields of an ErrorResponse/NoticeResponse body for one field type. */
static const char *error_field(const uint8_t *body, size_t len, char want, size_t *flen)
{
    size_t pos = 0;
    while (pos < len && body[pos] != 0) {
        char t = (char)body[pos++];
        const uint8_t *nul = memchr(body + pos, 0, len - pos);
        if (!nul)
            return NULL;
        if (t == want) {
            *flen = (size_t)(nul - (body + pos));
            return (const char *)body + pos;
        }
        pos = (size_t)(nul - body) + 1;
    }
    return NULL;
}

int wire_error_code(const uint8_t *body, size_t len, char code[6])
{
    size_t flen = 0;
    const char *c = error_field(body, len, 'C', &flen);
    if (!c || flen != 5) {
        memcpy(code, "XX000", 6);
        return WIRE_MALFORMED;
    }
    memcpy(code, c, 5);
    code[5] = 0;
    return WIRE_OK;
}

int wire_error_severity(const uint8_t *body, size_t len, char *sev, size_t sevlen)
{
    size_t flen = 0;
    const char *s = error_field(body, len, 'V', &flen);
    if (!s)
        s = error_field(body, len, 'S', &flen);
    if (sevlen == 0)
        return WIRE_NO_SPACE;
    if (!s) {
        sev[0] = 0;
        return WIRE_MALFORMED;
    }
    if (flen >= sevlen)
        flen = sevlen - 1;
    memcpy(sev, s, flen);
    sev[flen] = 0;
    return WIRE_OK;
}

void wire_buf_init(struct wire_buf *b, uint8_t *storage, size_t cap)
{
    b->data = storage;
    b->len = 0;
    b->cap = cap;
    b->overflow = false;
}

/* Message under construction: remembers where it starts so a failed build can roll back. */
struct msg {
    struct wire_buf *b;
    size_t start;
    size_t pos;
    bool bad;
};

static struct msg msg_begin(struct wire_buf *b, char type)
{
    struct msg m = {b, b->len, b->len, false};
    if (b->cap - b->len < 5) {
        m.bad = true;
        return m;
    }
    b->data[m.pos] = (uint8_t)type;
    m.pos += 5;
    return m;
}

static void msg_put(struct msg *m, const void *p, size_t n)
{
    if (m->bad || m->b->cap - m->pos < n) {
        m->bad = true;
        return;
    }
    memcpy(m->b->data + m->pos, p, n);
    m->pos += n;
}

static void msg_u32(struct msg *m, uint32_t v)
{
    uint8_t tmp[4];
    wire_put_u32(tmp, v);
    msg_put(m, tmp, 4);
}

static void msg_str(struct msg *m, const char *s)
{
    msg_put(m, s, strlen(s) + 1);
}

static void msg_end(struct msg *m)
{
    if (m->bad) {
        m->b->overflow = true;
        return;
    }
    wire_put_u32(m->b->data + m->start + 1, (uint32_t)(m->pos - m->start - 1));
    m->b->len = m->pos;
}

void wire_build_auth_ok(struct wire_buf *b)
{
    struct msg m = msg_begin(b, 'R');
    msg_u32(&m, 0);
    msg_end(&m);
}

void wire_build_auth(struct wire_buf *b, uint32_t code, const void *data, size_t len)
{
    struct msg m = msg_begin(b, 'R');
    msg_u32(&m, code);
    msg_put(&m, data, len);
    msg_end(&m);
}

void wire_build_param_status(struct wire_buf *b, const char *name, const char *value)
{
    struct msg m = msg_begin(b, 'S');
    msg_str(&m, name);
    msg_str(&m, value);
    msg_end(&m);
}

void wire_build_backend_key(struct wire_buf *b, uint32_t pid, uint32_t secret)
{
    struct msg m = msg_begin(b, 'K');
    msg_u32(&m, pid);
    msg_u32(&m, secret);
    msg_end(&m);
}

void wire_build_rfq(struct wire_buf *b, char status)
{
    struct msg m = msg_begin(b, 'Z');
    msg_put(&m, &status, 1);
    msg_end(&m);
}

static void msg_field(struct msg *m, char type, const char *value)
{
    if (!value)
        return;
    msg_put(m, &type, 1);
    msg_str(m, value);
}

void wire_build_error(struct wire_buf *b, char type, const struct wire_error_fields *f)
{
    struct msg m = msg_begin(b, type);
    msg_field(&m, 'S', f->severity);
    msg_field(&m, 'V', f->severity);
    msg_field(&m, 'C', f->code);
    msg_field(&m, 'M', f->message);
    msg_field(&m, 'D', f->detail);
    msg_field(&m, 'H', f->hint);
    if (f->position > 0) {
        char pos[16];
        unsigned v = f->position;
        int n = 0;
        char tmp[16];
        do {
            tmp[n++] = (char)('0' + v % 10);
            v /= 10;
        } while (v && n < 15);
        for (int i = 0; i < n; i++)
            pos[i] = tmp[n - 1 - i];
        pos[n] = 0;
        msg_field(&m, 'P', pos);
    }
    uint8_t zero = 0;
    msg_put(&m, &zero, 1);
    msg_end(&m);
}

void wire_build_negotiate(struct wire_buf *b, uint32_t newest_minor, const char *const *opts,
                          size_t nopts)
{
    struct msg m = msg_begin(b, 'v');
    msg_u32(&m, newest_minor);
    msg_u32(&m, (uint32_t)nopts);
    for (size_t i = 0; i < nopts; i++)
        msg_str(&m, opts[i]);
    msg_end(&m);
}

void wire_build_query(struct wire_buf *b, const char *sql)
{
    struct msg m = msg_begin(b, 'Q');
    msg_str(&m, sql);
    msg_end(&m);
}

void wire_build_copy_fail(struct wire_buf *b, const char *text)
{
    struct msg m = msg_begin(b, 'f');
    msg_str(&m, text);
    msg_end(&m);
}

void wire_build_command_complete(struct wire_buf *b, const char *tag)
{
    struct msg m = msg_begin(b, 'C');
    msg_str(&m, tag);
    msg_end(&m);
}

char wire_rfq_status(const uint8_t *body, size_t len)
{
    if (len != 1)
        return 0;
    char s = (char)body[0];
    return (s == 'I' || s == 'T' || s == 'E') ? s : 0;
}

int wire_parse_param_status(const uint8_t *body, size_t len, const char **name, const char **value)
{
    const uint8_t *nul = body ? memchr(body, 0, len) : NULL;
    if (!nul)
        return WIRE_MALFORMED;
    size_t rest = len - (size_t)(nul + 1 - body);
    const uint8_t *end = rest ? memchr(nul + 1, 0, rest) : NULL;
    if (!end || end != body + len - 1)
        return WIRE_MALFORMED;
    *name = (const char *)body;
    *value = (const char *)nul + 1;
    return WIRE_OK;
}

/* A NUL-terminated string at body[*pos]; advances past the NUL. */
static const char *body_str(const uint8_t *body, size_t len, size_t *pos)
{
    if (*pos >= len)
        return NULL;
    const uint8_t *nul = memchr(body + *pos, 0, len - *pos);
    if (!nul)
        return NULL;
    const char *s = (const char *)body + *pos;
    *pos = (size_t)(nul - body) + 1;
    return s;
}

static bool body_u16(const uint8_t *body, size_t len, size_t *pos, uint16_t *v)
{
    if (len - *pos < 2)
        return false;
    *v = wire_get_u16(body + *pos);
    *pos += 2;
    return true;
}

static int bad(const char **why, const char *text)
{
    *why = text;
    return WIRE_MALFORMED;
}

int wire_parse_parse(const uint8_t *body, size_t len, struct wire_parse_msg *out, const char **why)
{
    size_t pos = 0;
    out->name = body_str(body, len, &pos);
    size_t qstart = pos;
    out->query = out->name ? body_str(body, len, &pos) : NULL;
    if (!out->query)
        return bad(why, "invalid string in message");
    out->query_len = pos - qstart - 1;
    if (!body_u16(body, len, &pos, &out->nparams))
        return bad(why, "insufficient data left in message");
    if ((len - pos) / 4 < out->nparams)
        return bad(why, "insufficient data left in message");
    pos += (size_t)out->nparams * 4;
    return pos == len ? WIRE_OK : bad(why, "invalid message format");
}

int wire_parse_bind(const uint8_t *body, size_t len, struct wire_bind_msg *out, const char **why)
{
    size_t pos = 0;
    memset(out, 0, sizeof(*out));
    out->portal = body_str(body, len, &pos);
    out->stmt = out->portal ? body_str(body, len, &pos) : NULL;
    if (!out->stmt)
        return bad(why, "invalid string in message");
    if (!body_u16(body, len, &pos, &out->nformats) || (len - pos) / 2 < out->nformats)
        return bad(why, "insufficient data left in message");
    out->formats = body + pos;
    pos += (size_t)out->nformats * 2;
    if (!body_u16(body, len, &pos, &out->nparams))
        return bad(why, "insufficient data left in message");
    if (out->nformats > 1 && out->nformats != out->nparams)
        return bad(why, "bind message has a parameter format count that does not match its "
                        "parameter count");
    out->params = body + pos;
    for (uint16_t i = 0; i < out->nparams; i++) {
        if (len - pos < 4)
            return bad(why, "insufficient data left in message");
        int32_t l = (int32_t)wire_get_u32(body + pos);
        pos += 4;
        if (l < -1 || (l > 0 && (size_t)l > len - pos))
            return bad(why, "insufficient data left in message");
        if (l > 0)
            pos += (size_t)l;
    }
    out->params_len = (size_t)(body + pos - out->params);
    uint16_t nres;
    if (!body_u16(body, len, &pos, &nres) || (len - pos) / 2 < nres)
        return bad(why, "insufficient data left in message");
    pos += (size_t)nres * 2;
    return pos == len ? WIRE_OK : bad(why, "invalid message format");
}

int wire_parse_target(const uint8_t *body, size_t len, char *kind, const char **name,
                      const char **why, const char *what)
{
    size_t pos = 1;
    if (len < 1)
        return bad(why, "insufficient data left in message");
    *kind = (char)body[0];
    if (*kind != 'S' && *kind != 'P')
        return bad(why, what);
    *name = body_str(body, len, &pos);
    if (!*name)
        return bad(why, "invalid string in message");
    return pos == len ? WIRE_OK : bad(why, "invalid message format");
}

int wire_parse_execute(const uint8_t *body, size_t len, const char **portal, uint32_t *max_rows,
                       const char **why)
{
    size_t pos = 0;
    *portal = body_str(body, len, &pos);
    if (!*portal)
        return bad(why, "invalid string in message");
    if (len - pos != 4)
        return bad(why,
                   len - pos < 4 ? "insufficient data left in message" : "invalid message format");
    *max_rows = wire_get_u32(body + pos);
    return WIRE_OK;
}

bool wire_bind_param(const struct wire_bind_msg *b, size_t *pos, int32_t *len,
                     const uint8_t **value)
{
    if (*pos + 4 > b->params_len)
        return false;
    *len = (int32_t)wire_get_u32(b->params + *pos);
    *pos += 4;
    *value = b->params + *pos;
    if (*len > 0)
        *pos += (size_t)*len;
    return true;
}

uint16_t wire_bind_format(const struct wire_bind_msg *b, uint16_t i)
{
    if (b->nformats == 0)
        return 0;
    return wire_get_u16(b->formats + 2 * (b->nformats == 1 ? 0 : i));
}

void wire_build_parse(struct wire_buf *b, const char *name, const char *query)
{
    struct msg m = msg_begin(b, 'P');
    msg_str(&m, name);
    msg_str(&m, query);
    uint8_t zero[2] = {0, 0};
    msg_put(&m, zero, 2);
    msg_end(&m);
}

void wire_build_flush(struct wire_buf *b)
{
    struct msg m = msg_begin(b, 'H');
    msg_end(&m);
}
