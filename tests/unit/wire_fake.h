/* Byte buffers, PostgreSQL message builders for both directions, and a reader that splits a
 * recorded stream into messages: what the relay tests script and inspect. No test framework:
 * shared with the fuzz target. */
#ifndef PGWP_TEST_WIRE_FAKE_H
#define PGWP_TEST_WIRE_FAKE_H

#include "wire.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------- byte buffers and message builders ---------- */

struct fbuf {
    uint8_t *p;
    size_t len, cap;
};

static inline void fb_put(struct fbuf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p)
            abort();
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

static inline void fb_free(struct fbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

static inline void fb_consume(struct fbuf *b, size_t n)
{
    if (n > b->len)
        abort();
    if (n == 0)
        return;
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}

static inline void fb_u8(struct fbuf *b, uint8_t v)
{
    fb_put(b, &v, 1);
}

static inline void fb_u16(struct fbuf *b, uint16_t v)
{
    uint8_t t[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    fb_put(b, t, 2);
}

static inline void fb_u32(struct fbuf *b, uint32_t v)
{
    uint8_t t[4];
    wire_put_u32(t, v);
    fb_put(b, t, 4);
}

static inline void fb_str(struct fbuf *b, const char *s)
{
    fb_put(b, s, strlen(s) + 1);
}

static inline void fb_fill(struct fbuf *b, char c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fb_u8(b, (uint8_t)c);
}

/* A typed message is opened with its type and a length word that fb_end() patches. */
static inline size_t fb_begin(struct fbuf *b, char type)
{
    size_t at = b->len;
    fb_u8(b, (uint8_t)type);
    fb_u32(b, 0);
    return at;
}

static inline void fb_end(struct fbuf *b, size_t at)
{
    wire_put_u32(b->p + at + 1, (uint32_t)(b->len - at - 1));
}

static inline void fb_msg(struct fbuf *b, char type, const void *body, size_t n)
{
    size_t at = fb_begin(b, type);
    fb_put(b, body, n);
    fb_end(b, at);
}

/* upstream messages */
static inline void up_rowdesc(struct fbuf *b, const char *col)
{
    size_t at = fb_begin(b, 'T');
    fb_u16(b, 1);
    fb_str(b, col);
    fb_u32(b, 0);
    fb_u16(b, 0);
    fb_u32(b, 25); /* text */
    fb_u16(b, (uint16_t)-1);
    fb_u32(b, (uint32_t)-1);
    fb_u16(b, 0);
    fb_end(b, at);
}

static inline void up_row(struct fbuf *b, const char *val)
{
    size_t at = fb_begin(b, 'D');
    fb_u16(b, 1);
    fb_u32(b, (uint32_t)strlen(val));
    fb_put(b, val, strlen(val));
    fb_end(b, at);
}

/* A one-column DataRow of exactly `total` bytes on the wire (total >= 11). */
static inline void up_row_sized(struct fbuf *b, size_t total)
{
    size_t at = fb_begin(b, 'D');
    fb_u16(b, 1);
    fb_u32(b, (uint32_t)(total - 11));
    fb_fill(b, 'r', total - 11);
    fb_end(b, at);
}

static inline void up_rows(struct fbuf *b, int n)
{
    for (int i = 0; i < n; i++)
        up_row(b, "v");
}

static inline void up_complete(struct fbuf *b, const char *tag)
{
    size_t at = fb_begin(b, 'C');
    fb_str(b, tag);
    fb_end(b, at);
}

/* ErrorResponse ('E') or NoticeResponse ('N'); pad > 0 lengthens the message text by pad bytes. */
static inline void up_report(struct fbuf *b, char type, const char *sev, const char *code,
                             const char *msg, size_t pad)
{
    size_t at = fb_begin(b, type);
    fb_u8(b, 'S');
    fb_str(b, sev);
    fb_u8(b, 'V');
    fb_str(b, sev);
    fb_u8(b, 'C');
    fb_str(b, code);
    fb_u8(b, 'M');
    fb_put(b, msg, strlen(msg));
    fb_fill(b, 'm', pad);
    fb_u8(b, 0);
    fb_u8(b, 0);
    fb_end(b, at);
}

static inline void up_error(struct fbuf *b, const char *sev, const char *code, const char *msg)
{
    up_report(b, 'E', sev, code, msg, 0);
}

static inline void up_notice(struct fbuf *b, const char *msg)
{
    up_report(b, 'N', "NOTICE", "00000", msg, 0);
}

static inline void up_notify(struct fbuf *b, uint32_t pid, const char *channel, const char *payload)
{
    size_t at = fb_begin(b, 'A');
    fb_u32(b, pid);
    fb_str(b, channel);
    fb_str(b, payload);
    fb_end(b, at);
}

static inline void up_param(struct fbuf *b, const char *name, const char *value)
{
    size_t at = fb_begin(b, 'S');
    fb_str(b, name);
    fb_str(b, value);
    fb_end(b, at);
}

/* A message with no body: ParseComplete ('1'), BindComplete ('2'), NoData ('n')... */
static inline void up_empty(struct fbuf *b, char type)
{
    fb_msg(b, type, NULL, 0);
}

static inline void up_ready(struct fbuf *b, char status)
{
    fb_msg(b, 'Z', &status, 1);
}

/* CopyInResponse ('G') / CopyOutResponse ('H'): text format, one column */
static inline void up_copy(struct fbuf *b, char type)
{
    size_t at = fb_begin(b, type);
    fb_u8(b, 0);
    fb_u16(b, 1);
    fb_u16(b, 0);
    fb_end(b, at);
}

/* One SELECT's reply: RowDescription, n rows, CommandComplete */
static inline void up_select(struct fbuf *b, int n)
{
    char tag[32];
    up_rowdesc(b, "c");
    up_rows(b, n);
    snprintf(tag, sizeof(tag), "SELECT %d", n);
    up_complete(b, tag);
}

/* client messages */
static inline void fe_query(struct fbuf *b, const char *sql)
{
    size_t at = fb_begin(b, 'Q');
    fb_str(b, sql);
    fb_end(b, at);
}

static inline void fe_empty(struct fbuf *b, char type)
{
    fb_msg(b, type, NULL, 0);
}

/* extended query protocol */
static inline void fe_parse(struct fbuf *b, const char *name, const char *sql)
{
    size_t at = fb_begin(b, 'P');
    fb_str(b, name);
    fb_str(b, sql);
    fb_u16(b, 0); /* no parameter types */
    fb_end(b, at);
}

/* A Bind with text parameters (NULL for a SQL NULL). */
static inline void fe_bind(struct fbuf *b, const char *portal, const char *stmt, int nparams,
                           const char *const *params)
{
    size_t at = fb_begin(b, 'B');
    fb_str(b, portal);
    fb_str(b, stmt);
    fb_u16(b, 0); /* all parameters text */
    fb_u16(b, (uint16_t)nparams);
    for (int i = 0; i < nparams; i++) {
        if (!params[i]) {
            fb_u32(b, (uint32_t)-1);
            continue;
        }
        fb_u32(b, (uint32_t)strlen(params[i]));
        fb_put(b, params[i], strlen(params[i]));
    }
    fb_u16(b, 0); /* results text */
    fb_end(b, at);
}

static inline void fe_execute(struct fbuf *b, const char *portal, uint32_t max_rows)
{
    size_t at = fb_begin(b, 'E');
    fb_str(b, portal);
    fb_u32(b, max_rows);
    fb_end(b, at);
}

/* Describe ('D') or Close ('C') of a statement ('S') or portal ('P'). */
static inline void fe_target(struct fbuf *b, char type, char kind, const char *name)
{
    size_t at = fb_begin(b, type);
    fb_u8(b, (uint8_t)kind);
    fb_str(b, name);
    fb_end(b, at);
}

/* Parse, Bind and Execute of the unnamed statement and portal, all rows, no parameters: a
 * segment the client has not synced yet. */
static inline void fe_parse_bind_execute(struct fbuf *b, const char *sql)
{
    fe_parse(b, "", sql);
    fe_bind(b, "", "", 0, NULL);
    fe_execute(b, "", 0);
}

/* ... then Sync: one simple request. */
static inline void fe_extended_query(struct fbuf *b, const char *sql)
{
    fe_parse_bind_execute(b, sql);
    fe_empty(b, 'S');
}

/* ---------- reading recorded streams ---------- */

struct fmsg {
    char type;
    const uint8_t *body;
    size_t len;
};

/* Splits a stream into whole messages (at most max); returns how many, or -1 when the bytes
 * are not a sequence of whole messages. */
static inline int fmsg_split(const uint8_t *p, size_t n, struct fmsg *m, int max)
{
    size_t pos = 0;
    int k = 0;
    while (pos < n) {
        if (n - pos < 5)
            return -1;
        uint32_t len = wire_get_u32(p + pos + 1);
        if (len < 4 || len - 4 > n - pos - 5)
            return -1;
        if (m && k < max)
            m[k] = (struct fmsg){(char)p[pos], p + pos + 5, len - 4};
        k++;
        pos += 1 + (size_t)len;
    }
    return k;
}

/* A field of an ErrorResponse/NoticeResponse body ("" when absent). Points into the body. */
static inline const char *fmsg_field(const struct fmsg *m, char field)
{
    size_t pos = 0;
    while (pos < m->len && m->body[pos] != 0) {
        char t = (char)m->body[pos++];
        const uint8_t *nul = memchr(m->body + pos, 0, m->len - pos);
        if (!nul)
            return "";
        if (t == field)
            return (const char *)m->body + pos;
        pos = (size_t)(nul - m->body) + 1;
    }
    return "";
}

/* The string a CommandComplete/Query body holds ("" unless NUL-terminated). */
static inline const char *fmsg_str(const struct fmsg *m)
{
    return m->len && m->body[m->len - 1] == 0 ? (const char *)m->body : "";
}

#endif
